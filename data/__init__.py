"""Data that training and export share: datasets (digits, ImageFolder, WebDataset, Hugging Face) and
calibration images. Above the models, below ``train`` and ``export``, which never import each other."""
