"""edgezoo.train."""
