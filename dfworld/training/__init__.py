"""Training: the loop shared by every stage, checkpoints, and the stage entry points."""
