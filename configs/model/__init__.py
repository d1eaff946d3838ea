"""Hydra config group: model."""
