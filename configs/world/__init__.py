"""Hydra config group: world."""
