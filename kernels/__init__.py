"""edgezoo.kernels."""
