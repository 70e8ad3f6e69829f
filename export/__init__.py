"""edgezoo.export."""
