"""The text-event grammar of EventWorld: event kinds, their paraphrases, and parsing.

An event is a kind plus up to two colour arguments ("the red object turns blue"). Each kind has
several paraphrase templates; the last ones of each kind are held out of training so that
generalisation to unseen wording can be measured (`split="heldout"`).

Besides the five primary training wordings per kind (what data sets, episodes and suites draw
from), each kind has extra training wordings (`EXTRA_WORDINGS`): more ways of saying the same
thing for the teacher to learn from (`resample_wording` with `extra_wordings`), so that it keys
on the meaning and not on five sentences. They parse as training wordings. None of them uses a
content word that only the held-out wordings use (a test checks it): a held-out wording stays
unseen in every word that sets it apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from dfworld.world.config import COLOR_NAMES, TIMES

MAX_EVENT_CHARS = 96  # longest event text accepted anywhere in dfworld
EVENT_CHARSET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:'!?-"

# kind -> (train templates, held-out templates). {a} and {b} are colour names.
PARAPHRASES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "time_day": (
        ("the sun comes up", "morning arrives", "it becomes day", "daylight returns", "the day breaks"),
        ("dawn lights up the field", "the sky brightens into day"),
    ),
    "time_dusk": (
        ("the sun sets", "evening comes", "dusk falls", "the light turns golden", "it is getting late"),
        ("twilight settles in", "the sky glows orange at sundown"),
    ),
    "time_night": (
        ("night falls", "it gets dark", "darkness comes", "the night begins", "the sun goes down for the night"),
        ("the stars come out", "everything goes dark for the night"),
    ),
    "weather_rain": (
        ("it starts to rain", "rain begins to fall", "a rain shower starts", "the rain comes", "it is raining now"),
        ("a storm rolls in", "drops of rain pour down"),
    ),
    "weather_snow": (
        ("it starts to snow", "snow begins to fall", "snowflakes drift down", "the snow comes", "it is snowing now"),
        ("a blizzard sets in", "the ground turns white with snow"),
    ),
    "weather_clear": (
        ("the sky clears", "the weather clears up", "the rain and snow stop", "it turns fair", "the clouds go away"),
        ("the storm passes", "calm weather returns"),
    ),
    "object_appear": (
        ("a {a} object appears", "a {a} shape shows up", "a new {a} object arrives", "something {a} appears",
         "a {a} thing pops up"),
        ("a {a} item materialises", "out of nowhere a {a} object emerges"),
    ),
    "object_vanish": (
        ("the {a} object vanishes", "the {a} shape disappears", "the {a} object is gone", "the {a} thing goes away",
         "remove the {a} object"),
        ("the {a} item fades out of sight", "the {a} object leaves the scene"),
    ),
    "object_recolor": (
        ("the {a} object turns {b}", "the {a} shape becomes {b}", "the {a} object changes to {b}",
         "paint the {a} object {b}", "the {a} thing is now {b}"),
        ("the {a} item takes on a {b} colour", "the {a} object is recoloured {b}"),
    ),
}
# kind -> extra training wordings (see the module docstring); as many per kind, so every event
# is drawn among as many wordings in training
EXTRA_WORDINGS: dict[str, tuple[str, ...]] = {
    "time_day": ("the morning sun rises", "daytime begins", "the sun is up", "a new day starts",
                 "sunrise comes", "it is bright daytime", "the night ends and day begins", "the morning is here"),
    "time_dusk": ("sunset arrives", "the evening begins", "the day is ending", "the sun sinks low",
                  "it becomes evening", "the sun is setting", "nightfall is near", "the late evening light comes"),
    "time_night": ("it is night now", "nighttime comes", "the moon rises", "the sky turns black",
                   "the sun has gone down", "it becomes night", "midnight arrives", "the world is dark"),
    "weather_rain": ("a downpour begins", "showers fall", "thunder rumbles and it rains", "heavy rain starts",
                     "the clouds open up with rain", "it gets wet and rainy", "it drizzles", "rainfall begins"),
    "weather_snow": ("snow falls from the sky", "a snowfall begins", "it gets snowy", "big flakes of snow fall",
                     "heavy snow starts", "snow is falling", "the winter snow arrives", "snow flurries begin"),
    "weather_clear": ("the rain stops", "the snow stops", "the weather turns fine", "the clouds clear away",
                      "the sky becomes clear", "fair weather comes back", "the weather gets nice", "no more rain or snow"),
    "object_appear": ("a {a} object is added", "add a {a} object", "a {a} block appears", "a {a} object comes into view",
                      "a {a} shape is placed", "there is now a {a} object", "a fresh {a} shape appears",
                      "a {a} object shows up"),
    "object_vanish": ("delete the {a} object", "the {a} shape is removed", "the {a} thing vanishes",
                      "get rid of the {a} object", "the {a} block goes away", "the {a} object is taken away",
                      "there is no {a} object anymore", "the {a} shape is gone"),
    "object_recolor": ("make the {a} object {b}", "the {a} object gets painted {b}", "change the {a} shape to {b}",
                       "the {a} object switches to {b}", "turn the {a} thing {b}", "the {a} block is now {b}",
                       "the {a} shape turns {b}", "dye the {a} object {b}"),
}
EVENT_KINDS: tuple[str, ...] = tuple(PARAPHRASES)
SPLITS = ("train", "heldout", "all")


class EventParseError(ValueError):
    """A text that is not an EventWorld event."""


@dataclass(frozen=True)
class Event:
    """A canonical event: its kind and colour arguments (`color`, then `to_color` for recolour)."""

    kind: str
    color: str | None = None
    to_color: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in PARAPHRASES:
            raise EventParseError(f"unknown event kind {self.kind!r}; known kinds: {', '.join(EVENT_KINDS)}")
        n = n_color_args(self.kind)
        args = [c for c in (self.color, self.to_color) if c is not None]
        if len(args) != n:
            raise EventParseError(f"event kind {self.kind!r} takes {n} colour argument(s), got {args}")
        for c in args:
            if c not in COLOR_NAMES:
                raise EventParseError(f"unknown colour {c!r}; known colours: {', '.join(COLOR_NAMES)}")
        if n == 2 and self.color == self.to_color:
            raise EventParseError(f"recolour from {self.color!r} to itself is not a change")

    def templates(self, split: str = "train") -> tuple[str, ...]:
        return templates(self.kind, split)

    def text(self, index: int = 0, split: str = "train") -> str:
        """The event's wording with paraphrase `index` of `split` (0 is the canonical wording)."""
        tpls = self.templates(split)
        return tpls[index % len(tpls)].format(a=self.color, b=self.to_color)

    def sample_text(self, rng: np.random.Generator, split: str = "train") -> str:
        return self.text(int(rng.integers(len(self.templates(split)))), split)

    @property
    def target(self) -> str:
        """The attribute the event changes: 'time', 'weather' or 'object:<colour>'."""
        if self.kind.startswith("time_"):
            return "time"
        if self.kind.startswith("weather_"):
            return "weather"
        return f"object:{self.color}"


def n_color_args(kind: str) -> int:
    return sum("{" + k + "}" in PARAPHRASES[kind][0][0] for k in ("a", "b"))


def templates(kind: str, split: str = "train") -> tuple[str, ...]:
    """The primary wordings of a split ("all": every wording, the extra training ones too)."""
    if split not in SPLITS:
        raise ValueError(f"unknown paraphrase split {split!r}; expected one of {SPLITS}")
    train, heldout = PARAPHRASES[kind]
    return {"train": train, "heldout": heldout, "all": train + EXTRA_WORDINGS[kind] + heldout}[split]


def training_wordings(kind: str, extra: bool = True) -> tuple[str, ...]:
    """Every wording a model may be trained on: the primary training ones, then (with `extra`) the extra ones."""
    return templates(kind, "train") + (EXTRA_WORDINGS[kind] if extra else ())


def normalize(text: str) -> str:
    """Lower-case, collapse whitespace and drop trailing punctuation."""
    return re.sub(r"\s+", " ", text.strip().lower()).rstrip(".!?;:, ")


def validate_text(text: object) -> str:
    """Check that `text` can be an event at all (type, emptiness, length, charset); return it."""
    if not isinstance(text, str):
        raise TypeError(f"an event text must be a str, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("an event text must not be empty")
    if len(text) > MAX_EVENT_CHARS:
        raise ValueError(f"event text is {len(text)} characters; the limit is {MAX_EVENT_CHARS}: {text[:40]!r}...")
    bad = sorted(set(text) - set(EVENT_CHARSET))
    if bad:
        raise ValueError(f"event text {text!r} has characters outside the event charset: {bad}")
    return text


@lru_cache(maxsize=1)
def _patterns() -> list[tuple[re.Pattern[str], str, str]]:
    colors = "|".join(COLOR_NAMES)
    out = []
    for kind in EVENT_KINDS:
        for split, tpls in (("train", training_wordings(kind)), ("heldout", templates(kind, "heldout"))):
            for tpl in tpls:
                rx = re.escape(tpl).replace(r"\{a\}", f"(?P<a>{colors})").replace(r"\{b\}", f"(?P<b>{colors})")
                out.append((re.compile(f"^{rx}$"), kind, split))
    return out


def parse_event(text: str) -> Event:
    """Parse an event text (any paraphrase, either split) into its canonical Event."""
    validate_text(text)
    norm = normalize(text)
    for rx, kind, _ in _patterns():
        m = rx.match(norm)
        if m:
            groups = m.groupdict()
            return Event(kind, groups.get("a"), groups.get("b"))
    examples = "; ".join(repr(Event(*e).text()) for e in _EXAMPLES)
    raise EventParseError(f"{text!r} is not an EventWorld event; examples: {examples}")


def paraphrase_split(text: str) -> str:
    """'train' or 'heldout': which paraphrase split a parseable event text belongs to."""
    norm = normalize(validate_text(text))
    for rx, _, split in _patterns():
        if rx.match(norm):
            return split
    raise EventParseError(f"{text!r} is not an EventWorld event")


_EXAMPLES = (("time_night",), ("weather_rain",), ("object_appear", "red"), ("object_recolor", "blue", "yellow"))


def initial_prompt(time: str, index: int = 0, split: str = "train") -> str:
    """The prompt that describes an episode's start: the time-of-day event matching it."""
    if time not in TIMES:
        raise ValueError(f"unknown time of day {time!r}; expected one of {TIMES}")
    return Event(f"time_{time}").text(index, split)


def all_event_texts(split: str = "train") -> list[str]:
    """Every wording of every event (colour slots filled), for encoders and vocabularies."""
    out = []
    for kind in EVENT_KINDS:
        n = n_color_args(kind)
        for tpl in templates(kind, split):
            if n == 0:
                out.append(tpl)
            elif n == 1:
                out.extend(tpl.format(a=a) for a in COLOR_NAMES)
            else:
                out.extend(tpl.format(a=a, b=b) for a in COLOR_NAMES for b in COLOR_NAMES if a != b)
    return out

