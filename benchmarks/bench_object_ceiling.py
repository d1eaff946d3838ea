"""How well can any predictor place EventWorld's objects from the start frames alone? `python benchmarks/bench_object_ceiling.py [K]`

Per core episode: true object centres for the K start frames and the 240 frames after. Predictors:
hold (last start position), fit (velocity from the start frames, snapped to the world's speeds on one
axis, bounced at the walls), true-v (the true velocity at the start, bounced at the walls).
"""

import sys

import numpy as np

from dfworld.world.episodes import real_start
from dfworld.world.simulator import EventWorld
from dfworld.world.suite import shipped_suite

K = int(sys.argv[1]) if len(sys.argv) > 1 else 4
script = shipped_suite("core")
world = EventWorld(script.world)
speeds = [0.0] + [s * world.config.scale for s in world.config.object_speeds]
bins = [(0, 16), (16, 64), (64, 240)]
res = {p: {b: [] for b in bins} for p in ("hold", "fit", "true-v")}
allin = {p: {b: [] for b in bins} for p in res}


def centres(w):
    return {o.color: o.center for o in w.state.objects if o is not None}


def roll(p0, v, n, r):
    x, y = map(float, p0)
    vx, vy = v
    out = []
    for _ in range(n):
        nx, ny = x + vx, y + vy
        if not world._inside((int(round(nx)), int(round(ny))), r):
            vx, vy = -vx, -vy
        else:
            x, y = nx, ny
        out.append((int(round(x)), int(round(y))))
    return out


for ep in script.episodes[:12]:
    start = real_start(world, ep.seed, K)
    # replay the start to read the centres frame by frame
    world.reset(ep.seed)
    ctx = [centres(world)]
    v0 = {o.color: (o.vx, o.vy) for o in world.state.objects if o}
    for _ in range(K - 1):
        world.step(0)
        ctx.append(centres(world))
    v0 = {o.color: (o.vx, o.vy) for o in world.state.objects if o}
    acts = ep.actions()
    evs = {it.t: it.event for it in ep.events()}
    truth = []
    for f in range(240):
        if f in evs:
            world.apply_event(evs[f])
        world.step(int(acts[f]))
        truth.append(centres(world))
    r = world._r_obj
    preds = {}
    for c, p in ctx[-1].items():
        P = np.array([ctx[k][c] for k in range(K)], float)
        t = np.arange(K)
        slope = np.polyfit(t, P, 1)[0] if K > 1 else np.zeros(2)
        ax = int(np.argmax(np.abs(slope)))
        s = min(speeds, key=lambda s: abs(s - abs(slope[ax])))
        v = [0.0, 0.0]
        v[ax] = s * np.sign(slope[ax])
        preds[c] = {"hold": [p] * 240, "fit": roll(p, v, 240, r), "true-v": roll(p, v0[c], 240, r)}
    for a, b in bins:
        for f in range(a, b):
            for name in res:
                ok = [np.hypot(*np.subtract(preds[c][name][f], truth[f][c])) <= 3 for c in preds if c in truth[f]]
                res[name][(a, b)] += ok
                if ok:
                    allin[name][(a, b)].append(all(ok))
print(f"start frames K={K}")
for name in res:
    print(
        f"{name:7s} object within 3 px: "
        + "  ".join(f"{a}-{b - 1} {np.mean(res[name][(a, b)]):.2f}" for a, b in bins)
        + "   | all start objects: "
        + "  ".join(f"{np.mean(allin[name][(a, b)]):.2f}" for a, b in bins)
    )
