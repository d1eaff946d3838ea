"""EventWorld data sets: sharded files on disk, and a torch Dataset that reads them back.

Two products (DESIGN.md section 2):
- `clips`: short single-event clips. Each clip's event is applied before its first frame, so no
  clip contains a switch; its text is the clip's prompt. A short random history of other events
  before the clip varies the time, weather and objects the clip starts from. The teacher is
  trained only on these.
- `episodes`: long scripted episodes with several events (evaluation, and the event schedules
  for streaming training), from a script file or freshly planned.

A data set is a directory with `manifest.json` and `shard-NNNNN.npz` files (compressed numpy,
read with allow_pickle=False): frames, actions, rewards, prompts, event times and texts, and the
true state of every frame.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dfworld.configuration import build, to_dict
from dfworld.world.config import WorldConfig
from dfworld.world.episodes import EpisodeRecord, play_episode
from dfworld.world.events import MAX_EVENT_CHARS
from dfworld.world.scripts import Episode, ScriptItem
from dfworld.world.simulator import EventWorld
from dfworld.world.suite import plan_episode, resolve_script, suite_event_times

DATA_FORMAT = "dfworld-data"
DATA_VERSION = 1
MAX_EVENTS = 8  # event slots stored per item (padded with t = -1)
TEXT_DTYPE = f"<U{MAX_EVENT_CHARS}"


def record_arrays(rec: EpisodeRecord, start: int = 0) -> dict[str, np.ndarray]:
    """The fixed-shape arrays stored for one item, from frame `start` of a played episode."""
    events = [e for e in rec.events if e.t >= start][:MAX_EVENTS]
    ev_t = np.full(MAX_EVENTS, -1, np.int32)
    ev_text = np.full(MAX_EVENTS, "", TEXT_DTYPE)
    ev_applied = np.zeros(MAX_EVENTS, bool)
    for i, e in enumerate(events):
        ev_t[i], ev_text[i], ev_applied[i] = e.t - start, e.text, e.applied
    prompts = rec.prompts()
    out = {
        "frames": rec.frames[start:],
        "actions": rec.actions[start:].astype(np.int8),
        "rewards": rec.rewards[start:],
        "prompt": np.array(prompts[start], TEXT_DTYPE),  # the condition at the first frame
        "event_t": ev_t,
        "event_text": ev_text,
        "event_applied": ev_applied,
    }
    out.update({f"state_{k}": v[start:] for k, v in rec.states.items()})
    return out


class ShardWriter:
    """Collects fixed-shape items and writes them in compressed shards plus a manifest."""

    def __init__(self, root: str | Path, kind: str, world: WorldConfig, shard_size: int, meta: dict):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        if (self.root / "manifest.json").exists():
            raise FileExistsError(f"{str(self.root)!r} already holds a data set; choose a new directory")
        self.kind, self.world, self.shard_size, self.meta = kind, world, shard_size, meta
        self._items: list[dict[str, np.ndarray]] = []
        self._shards: list[dict] = []

    def add(self, item: dict[str, np.ndarray]) -> None:
        self._items.append(item)
        if len(self._items) == self.shard_size:
            self._flush()

    def _flush(self) -> None:
        if not self._items:
            return
        name = f"shard-{len(self._shards):05d}.npz"
        arrays = {k: np.stack([it[k] for it in self._items]) for k in self._items[0]}
        np.savez_compressed(self.root / name, **arrays)
        self._shards.append({"file": name, "items": len(self._items)})
        self._items = []

    def close(self) -> Path:
        self._flush()
        manifest = {
            "format": DATA_FORMAT,
            "version": DATA_VERSION,
            "kind": self.kind,
            "world": to_dict(self.world),
            "shards": self._shards,
            "items": sum(s["items"] for s in self._shards),
            **self.meta,
        }
        path = self.root / "manifest.json"
        path.write_text(json.dumps(manifest, indent=1))
        return path


@dataclass(frozen=True)
class ClipsConfig:
    """`dfworld data clips`: short single-event clips for the teacher."""

    out: str = "data/clips"  # output directory; must not hold a data set yet
    n: int = 2048  # number of clips
    frames: int = 16  # frames per clip
    split: str = "train"  # paraphrase split of the clip prompts: train or heldout
    seed: int = 0  # seed of the clip plans
    max_history: int = 2  # most events applied before a clip starts
    # the clip's event at this frame of the clip: 0, its first frame (single-event clips, the paper's premise); k > 0,
    # the first k frames show the scene before the event, the context a world model continues when an event arrives
    event_at: int = 0
    shard_size: int = 256  # clips per shard file
    world: WorldConfig = field(default_factory=WorldConfig)  # the simulator


@dataclass(frozen=True)
class EpisodesConfig:
    """`dfworld data episodes`: long scripted episodes."""

    out: str = "data/episodes"  # output directory; must not hold a data set yet
    script: str | None = "core"  # a shipped suite name or a script path; null plans `n` new episodes
    n: int = 0  # episodes to plan when script is null
    frames: int = 320  # frames per planned episode
    max_events: int = 5  # most events per planned episode
    seed: int = 0  # seed of the planned episodes
    shard_size: int = 16  # episodes per shard file


def write_clips(config: ClipsConfig, progress: bool = True) -> Path:
    """Write `config.n` single-event clips; return the manifest path."""
    if config.split not in ("train", "heldout"):
        raise ValueError(f"clips split must be 'train' or 'heldout', got {config.split!r}")
    if not 0 <= config.event_at < min(config.frames, 16):
        raise ValueError(f"event_at={config.event_at}: the event must fall inside the clip, before frame {min(config.frames, 16)}")
    sim = EventWorld(config.world)
    lead = config.event_at
    rng = np.random.default_rng(config.seed)
    writer = ShardWriter(config.out, "clips", config.world, config.shard_size, {"config": to_dict(config)})
    for i in tqdm(range(config.n), desc="clips", disable=not progress):
        # 1. a short history: a few events at random times before the clip starts
        start = 16 * int(rng.integers(1, 4))
        history = sorted(rng.choice(start - lead, size=int(rng.integers(0, config.max_history + 1)), replace=False).tolist())
        # 2. the clip's event at its frame `event_at`; planning guarantees every event applies
        plan, events = plan_episode(f"clip-{i}", int(rng.integers(2**31)), start - lead + config.frames, history + [start], rng, sim)
        text = events[-1].sample_text(rng, config.split)
        items = [it for it in plan.items if it.event is None or it.t != start]
        items.append(ScriptItem(start, event=text))
        items.sort(key=lambda it: (it.t, it.event is not None))
        ep = Episode(plan.id, plan.seed, plan.frames, config.split, items)
        arrays = record_arrays(play_episode(ep, sim), start - lead)
        if lead:  # the clip's condition is its event, the frames before it included
            arrays["prompt"] = np.array(text, arrays["prompt"].dtype)
        writer.add(arrays)
    return writer.close()


def write_episodes(config: EpisodesConfig, progress: bool = True) -> Path:
    """Write long episodes: the script's, or `config.n` freshly planned ones; return the manifest path."""
    if config.script is not None:
        script = resolve_script(config.script)
        world, episodes = script.world, script.episodes
    elif config.n > 0:
        world = WorldConfig()
        sim = EventWorld(world)
        rng = np.random.default_rng(config.seed)
        episodes = [
            plan_episode(
                f"ep-{i:05d}", int(rng.integers(2**31)), config.frames,
                suite_event_times(config.frames, config.max_events, rng), rng, sim,
            )[0]
            for i in range(config.n)
        ]
    else:
        raise ValueError("data episodes needs script=<suite or path> or script=null with n > 0")
    lengths = {ep.frames for ep in episodes}
    if len(lengths) != 1:
        raise ValueError(f"episodes in one data set must have one length, got {sorted(lengths)}")
    if max(len(ep.events()) for ep in episodes) > MAX_EVENTS:
        raise ValueError(f"an episode has more than {MAX_EVENTS} events, the most a data set stores")
    sim = EventWorld(world)
    writer = ShardWriter(config.out, "episodes", world, config.shard_size, {"frames": lengths.pop(), "config": to_dict(config)})
    for ep in tqdm(episodes, desc="episodes", disable=not progress):
        writer.add(record_arrays(play_episode(ep, sim)))
    return writer.close()


class EventWorldDataset(torch.utils.data.Dataset):
    """Reads a data set written by `write_clips` or `write_episodes`.

    An item is a dict: `frames` uint8 [F, H, W, 3], `actions` int64 [F], `rewards` float32 [F],
    `prompt` str (the condition at the first frame), `events` a list of (t, text, applied), and
    `state_*` tensors of the true state per frame.
    """

    def __init__(self, root: str | Path, cache_shards: int = 2):
        self.root = Path(root)
        path = self.root / "manifest.json"
        if not path.is_file():
            raise FileNotFoundError(f"{str(self.root)!r} is not a dfworld data set (no manifest.json)")
        try:
            self.manifest = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{str(path)!r} is not valid JSON: {e}") from e
        if self.manifest.get("format") != DATA_FORMAT or self.manifest.get("version") != DATA_VERSION:
            raise ValueError(
                f"{str(path)!r} is format {self.manifest.get('format')!r} version {self.manifest.get('version')!r}; "
                f"this dfworld reads {DATA_FORMAT!r} version {DATA_VERSION}"
            )
        self.kind: str = self.manifest["kind"]
        self.world = build(WorldConfig, self.manifest["world"], f"{path}: world")
        self._starts = np.cumsum([0] + [s["items"] for s in self.manifest["shards"]])
        self._cache: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._cache_shards = cache_shards

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _shard(self, s: int) -> dict[str, np.ndarray]:
        if s in self._cache:
            self._cache.move_to_end(s)
            return self._cache[s]
        file = self.root / self.manifest["shards"][s]["file"]
        with np.load(file, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        self._cache[s] = arrays
        if len(self._cache) > self._cache_shards:
            self._cache.popitem(last=False)
        return arrays

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a data set of {len(self)} items")
        index %= len(self)
        s = int(np.searchsorted(self._starts, index, side="right") - 1)
        a = self._shard(s)
        i = index - self._starts[s]
        item = {
            "frames": torch.from_numpy(a["frames"][i]),
            "actions": torch.from_numpy(a["actions"][i].astype(np.int64)),
            "rewards": torch.from_numpy(a["rewards"][i]),
            "prompt": str(a["prompt"][i]),
            "events": [
                (int(t), str(x), bool(ok))
                for t, x, ok in zip(a["event_t"][i], a["event_text"][i], a["event_applied"][i])
                if t >= 0
            ],
        }
        item.update({k: torch.from_numpy(np.asarray(a[k][i])) for k in a if k.startswith("state_")})
        return item


@dataclass
class ClipTensors:
    """A whole clips data set as tensors."""

    frames: torch.Tensor  # [N, F, H, W, 3] uint8
    actions: torch.Tensor  # [N, F] int64
    prompts: list[str]  # [N]
    dataset: EventWorldDataset
    states: dict[str, torch.Tensor] = field(default_factory=dict)  # true state per frame, each [N, F, ...]


def load_clips(path: str | Path) -> ClipTensors:
    """All clips of a data set written by `dfworld data clips`."""
    path = Path(path)
    if not (path / "manifest.json").is_file():
        raise FileNotFoundError(f"no clips data set at {str(path)!r}; make one with: dfworld data clips out={path}")
    ds = EventWorldDataset(path)
    if ds.kind != "clips":
        raise ValueError(f"{str(path)!r} holds {ds.kind!r}; the teacher and codec train on clips")
    items = [ds[i] for i in tqdm(range(len(ds)), desc="load clips", leave=False)]
    return ClipTensors(
        frames=torch.stack([it["frames"] for it in items]),
        actions=torch.stack([it["actions"] for it in items]),
        prompts=[it["prompt"] for it in items],
        dataset=ds,
        states={k.removeprefix("state_"): torch.stack([it[k] for it in items]) for k in items[0] if k.startswith("state_")},
    )


def load_clip_conditions(path: str | Path) -> tuple[torch.Tensor, list[str]]:
    """The actions [N, F] and prompts of a clips data set, without reading its frames."""
    path = Path(path)
    if not (path / "manifest.json").is_file():
        raise FileNotFoundError(f"no clips data set at {str(path)!r}; make one with: dfworld data clips out={path}")
    ds = EventWorldDataset(path)
    if ds.kind != "clips":
        raise ValueError(f"{str(path)!r} holds {ds.kind!r}, not clips")
    actions, prompts = [], []
    for shard in ds.manifest["shards"]:
        with np.load(ds.root / shard["file"], allow_pickle=False) as z:
            actions.append(torch.from_numpy(z["actions"].astype(np.int64)))
            prompts.extend(str(p) for p in z["prompt"])
    return torch.cat(actions), prompts
