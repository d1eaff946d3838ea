"""Are the world model's rewards the real game's? Coin pick-ups of agents playing inside it, checked in EventWorld.

    python benchmarks/bench_pickups.py --checkpoint default=dfworld/checkpoints/default --checkpoint other=runs/x/checkpoint

Each agent (the scripted coin seeker, which reads the generated frames with the probes, and the random
one) plays `--episodes` world-model episodes of `--horizon` steps from the real start frames of seeds
`--seed`, `--seed` + 1, ...; the moves are replayed in EventWorld from the same seeds, and a generated
pick-up counts when the simulator collected a coin within `episodes.PICKUP_STEPS` steps of it
(`dfworld.agents.pickups.check_pickups`). The scripted bench suites hold few pick-ups (2 in core's 12 x 240
frames); an agent that seeks the coin meets them as PPO does. Prints a table and writes `--out` (JSON).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from dfworld.agents.baselines import RandomAgent, ScriptedAgent
from dfworld.agents.pickups import check_pickups
from dfworld.agents.worlds import AgentEnvConfig, make_env
from dfworld.checkpoint import checkpoint_digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", action="append", required=True, help="name=path of a generator checkpoint (repeatable)")
    parser.add_argument("--episodes", type=int, default=48, help="world-model episodes per agent and checkpoint")
    parser.add_argument("--horizon", type=int, default=16, help="steps per episode (the transfer test's world horizon)")
    parser.add_argument("--num-envs", type=int, default=16, help="rows stepped together")
    parser.add_argument("--seed", type=int, default=2000000, help="first episode seed")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    parser.add_argument("--out", default="outputs/bench-pickups.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for spec in args.checkpoint:
        name, _, path = spec.partition("=")
        if not path:
            parser.error(f"--checkpoint {spec!r}: expected name=path")
        env = make_env(AgentEnvConfig(env="world", checkpoint=path, num_envs=args.num_envs, horizon=args.horizon, backend=args.backend))
        for agent_name, agent in (("scripted", ScriptedAgent(env.observation_spec["pixels"].shape[-3])), ("random", RandomAgent())):
            t0 = time.perf_counter()
            r = check_pickups(agent, env, args.episodes, args.seed)
            rows.append({"checkpoint": name, "digest": checkpoint_digest(path)[:12], "agent": agent_name,
                         **{k: r[k] for k in ("precision", "recall", "matched", "generated", "real", "return_mean")},
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(rows[-1], flush=True)
        env.close()
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    print("| checkpoint | digest | agent | precision | recall | matched / generated / real | world return |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['checkpoint']} | {r['digest']} | {r['agent']} | {fmt(r['precision'])} | {fmt(r['recall'])} | "
              f"{r['matched']} / {r['generated']} / {r['real']} | {r['return_mean']:.2f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
