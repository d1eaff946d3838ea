"""Hydra config group: stage."""
