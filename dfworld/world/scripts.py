"""Event scripts: a versioned JSONL format for timed events and actions.

A script file holds one or more episodes::

    {"format": "dfworld-events", "version": 1, "name": "core", "description": "..."}
    {"episode": "core-00", "seed": 1000, "frames": 320}
    {"t": 0, "action": "right"}
    {"t": 48, "event": "night falls"}
    {"t": 64, "action": 3}

- Line 1 is the header: `format` and `version` are required; `name`, `description` and
  `world` (WorldConfig fields) are optional.
- An `episode` line starts an episode: its id, the world seed and its length in frames, and
  optionally the paraphrase `split` its texts were drawn from.
- Item lines belong to the episode above them. `t` is a frame index in [0, frames); items are
  in time order. An event applies before frame t is drawn; an action holds from frame t until
  the next action (episodes start with noop).

Every problem is reported as `file:line: problem`, and loading stops at the first one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dfworld.configuration import ConfigError, build, to_dict
from dfworld.world.config import ACTIONS, WorldConfig
from dfworld.world.events import EventParseError, parse_event, validate_text
from dfworld.world.simulator import action_index

SCRIPT_FORMAT = "dfworld-events"
SCRIPT_VERSION = 1
_HEADER_KEYS = {"format", "version", "name", "description", "world"}
_EPISODE_KEYS = {"episode", "seed", "frames", "split"}
_ITEM_KEYS = {"t", "action", "event"}


class ScriptError(ValueError):
    """A malformed event script; the message names the file, the line and the problem."""


@dataclass(frozen=True)
class ScriptItem:
    """One timed entry: an action (index) or an event (text), at frame `t`."""

    t: int
    action: int | None = None
    event: str | None = None
    line: int = 0  # line number in the source file, for messages


@dataclass
class Episode:
    """One scripted episode: the world seed, its length, and its timed items."""

    id: str
    seed: int
    frames: int
    split: str = "train"
    items: list[ScriptItem] = field(default_factory=list)

    def events(self) -> list[ScriptItem]:
        return [it for it in self.items if it.event is not None]

    def actions(self) -> np.ndarray:
        """The action of every frame, [frames] int64, holding each scripted action until the next."""
        out = np.zeros(self.frames, np.int64)
        for it in self.items:
            if it.action is not None:
                out[it.t :] = it.action
        return out


@dataclass
class Script:
    """A parsed script file."""

    name: str
    episodes: list[Episode]
    description: str = ""
    world: WorldConfig = field(default_factory=WorldConfig)
    version: int = SCRIPT_VERSION
    source: str = "<script>"

    def dumps(self) -> str:
        """The script as JSONL text (what `load_script` reads back)."""
        header: dict = {"format": SCRIPT_FORMAT, "version": self.version, "name": self.name}
        if self.description:
            header["description"] = self.description
        world, default = to_dict(self.world), to_dict(WorldConfig())
        if world != default:
            header["world"] = {k: v for k, v in world.items() if v != default[k]}
        lines = [header]
        for ep in self.episodes:
            lines.append({"episode": ep.id, "seed": ep.seed, "frames": ep.frames, "split": ep.split})
            for it in ep.items:
                lines.append({"t": it.t, "action": ACTIONS[it.action]} if it.action is not None else {"t": it.t, "event": it.event})
        return "".join(json.dumps(line) + "\n" for line in lines)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.dumps())


MAX_EPISODE_FRAMES = 1_000_000  # longest scripted episode: its frames must fit in memory when it is played


def _int(value: object, what: str, fail, high: int = 2**63) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        fail(f"{what} must be an integer, got {value!r:.40}")
    if not -high < value < high:  # type: ignore[operator]
        fail(f"{what} is out of range: {value:.3e}")
    return value  # type: ignore[return-value]


def loads_script(text: str, source: str = "<script>") -> Script:
    """Parse and validate script text; raise ScriptError naming the first bad line."""
    script: Script | None = None
    episode: Episode | None = None
    ids: set[str] = set()
    lineno = 0

    def fail(problem: str):
        raise ScriptError(f"{source}:{lineno}: {problem}")

    for lineno, raw in enumerate(text.split("\n"), start=1):  # JSON lines end at \n only (a U+2028 inside a string is text)
        raw = raw.removesuffix("\r")
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            fail(f"not valid JSON ({e.msg} at column {e.colno})")
        except RecursionError:
            fail("not valid JSON: nested too deeply")
        except ValueError as e:  # e.g. an integer of thousands of digits
            fail(f"not valid JSON: {e}")
        if not isinstance(obj, dict):
            fail(f"each line must be a JSON object, got {type(obj).__name__}")
        if script is None:  # header
            if "format" not in obj or "version" not in obj:
                fail(f"the first line must be the header with 'format': {SCRIPT_FORMAT!r} and 'version'")
            if obj["format"] != SCRIPT_FORMAT:
                fail(f"unknown format {obj['format']!r}; expected {SCRIPT_FORMAT!r}")
            if obj["version"] != SCRIPT_VERSION:
                fail(f"unsupported script version {obj['version']!r}; this dfworld reads version {SCRIPT_VERSION}")
            if extra := set(obj) - _HEADER_KEYS:
                fail(f"unknown header key(s) {sorted(extra)}; allowed: {sorted(_HEADER_KEYS)}")
            world = obj.get("world", {})
            try:
                wc = build(WorldConfig, world, "world")
            except ConfigError as e:
                fail(str(e))
            script = Script(str(obj.get("name", Path(source).stem)), [], str(obj.get("description", "")), wc, source=source)
            continue
        if "episode" in obj:
            if extra := set(obj) - _EPISODE_KEYS:
                fail(f"unknown episode key(s) {sorted(extra)}; allowed: {sorted(_EPISODE_KEYS)}")
            for key in ("seed", "frames"):
                if key not in obj:
                    fail(f"episode line needs {key!r}")
            eid = obj["episode"]
            if not isinstance(eid, str) or not eid:
                fail(f"episode id must be a non-empty string, got {eid!r}")
            if eid in ids:
                fail(f"duplicate episode id {eid!r}")
            frames = _int(obj["frames"], "'frames'", fail)
            if not 1 <= frames <= MAX_EPISODE_FRAMES:
                fail(f"'frames' must be in [1, {MAX_EPISODE_FRAMES:,}] (17 hours at 16 frames/s), got {frames:,}")
            split = obj.get("split", "train")
            if split not in ("train", "heldout"):
                fail(f"'split' must be 'train' or 'heldout', got {split!r}")
            seed = _int(obj["seed"], "'seed'", fail)
            if seed < 0:
                fail(f"'seed' must be a non-negative integer, got {seed}")
            episode = Episode(eid, seed, frames, split)
            ids.add(eid)
            script.episodes.append(episode)
            continue
        # item line
        if episode is None:
            fail("an action or event line must follow an episode line")
        if extra := set(obj) - _ITEM_KEYS:
            fail(f"unknown key(s) {sorted(extra)}; an item line has 't' and one of 'action' or 'event'")
        if "t" not in obj:
            fail("item line needs 't' (the frame index)")
        t = _int(obj["t"], "'t'", fail)
        if not 0 <= t < episode.frames:
            fail(f"t={t} is outside the episode's frames [0, {episode.frames})")
        if episode.items and t < episode.items[-1].t:
            fail(f"times out of order: t={t} comes after t={episode.items[-1].t}")
        if ("action" in obj) == ("event" in obj):
            fail("an item line needs exactly one of 'action' or 'event'")
        if "action" in obj:
            try:
                item = ScriptItem(t, action=action_index(obj["action"]), line=lineno)
            except (TypeError, ValueError) as e:
                fail(str(e))
        else:
            try:
                parse_event(validate_text(obj["event"]))
            except (TypeError, ValueError) as e:  # EventParseError is a ValueError
                fail(f"unknown event: {e}" if isinstance(e, EventParseError) else str(e))
            item = ScriptItem(t, event=obj["event"], line=lineno)
        episode.items.append(item)
    if script is None:
        raise ScriptError(f"{source}: empty script; the first line must be the header")
    if not script.episodes:
        raise ScriptError(f"{source}: the script has no episode lines")
    return script


def load_script(path: str | Path) -> Script:
    """Read and validate a script file."""
    path = Path(path)
    if path.is_dir():
        raise ScriptError(f"{str(path)}: is a directory, not an event script file")
    if not path.is_file():
        raise FileNotFoundError(f"event script {str(path)!r} does not exist")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # a UTF-8 byte-order mark is allowed
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ScriptError(f"{str(path)}:{line}: not UTF-8 text (a binary file?): {e.reason} at byte {e.start}") from e
    if "\x00" in text:
        raise ScriptError(f"{str(path)}:{text[: text.index(chr(0))].count(chr(10)) + 1}: holds a NUL byte (a binary file?)")
    return loads_script(text, source=str(path))
