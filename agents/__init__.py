"""dfworld agents (installed as dfworld.agents)."""
