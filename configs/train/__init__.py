"""Hydra config group: train."""
