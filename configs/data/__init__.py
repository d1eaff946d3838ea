"""Hydra config group: data."""
