"""dfworld agents (installed as dfworld.agents): agents that act in the world model or in EventWorld.

- `worlds`: the two environments an agent acts in (TorchRL, the same keys) and their config;
- `baselines`: a random agent and a scripted agent that reads the frame with the probes;
- `policy`, `ppo`: the PPO agent's CNN and its TorchRL training loop (resumable checkpoints);
- `evaluate`: returns over a fixed, seeded list of episodes; `transfer`: the DIAMOND-style test;
- `cli`: `dfworld agent train|eval|transfer`.

Nothing is imported here, so `import dfworld` stays light.
"""
