"""Plans that compose the layers below: the demo, the mixer sweep, the export matrix and the tables."""
