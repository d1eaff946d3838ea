"""Hydra config group: codec."""
