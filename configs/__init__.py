"""Hydra configuration groups (installed as dfworld.configs; YAML files are package data)."""
