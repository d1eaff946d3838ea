"""The action space shared by EventWorld-v0 and WorldModel-v0, and parsing of step() input.

A step is either a discrete action or a text event. The space is a Dict:

- `kind`: Discrete(2), 0 = action, 1 = text event;
- `action`: Discrete(5), noop, up, down, left, right (used when kind is 0);
- `prompt`: EventText, an event sentence (used when kind is 1).

`step()` also takes a plain int (an action) or a plain str (a text event).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from gymnasium import spaces

from dfworld.world.config import ACTIONS
from dfworld.world.events import EVENT_CHARSET, MAX_EVENT_CHARS, all_event_texts, validate_text
from dfworld.world.simulator import action_index

KIND_ACTION, KIND_TEXT = 0, 1


class EventText(spaces.Text):
    """A Text space for event sentences whose random samples are real event paraphrases.

    `contains` accepts any sentence in the charset and length bounds (a world model can be
    prompted with any wording); `sample` draws from `texts`, so random agents and env checkers
    send meaningful events instead of random characters.
    """

    def __init__(self, texts: Sequence[str] | None = None, max_length: int = MAX_EVENT_CHARS, seed=None):
        super().__init__(max_length, min_length=1, charset=EVENT_CHARSET, seed=seed)
        self.texts = tuple(texts if texts is not None else all_event_texts("train"))
        if not self.texts or not all(self.contains(t) for t in self.texts):
            raise ValueError("EventText needs a non-empty list of texts that fit its charset and length")

    def sample(self, mask=None, probability=None) -> str:
        if mask is not None or probability is not None:
            return super().sample(mask=mask, probability=probability)
        return self.texts[int(self.np_random.integers(len(self.texts)))]

    def __eq__(self, other) -> bool:
        return isinstance(other, EventText) and super().__eq__(other) and self.texts == other.texts

    def __repr__(self) -> str:
        return f"EventText({len(self.texts)} texts, max_length={self.max_length})"


def keys_to_action() -> dict[tuple, dict]:
    """Keyboard keys -> Dict actions (kind 0) for `gymnasium.utils.play.play(env, noop=0)`: WASD, and the arrows with pygame."""
    moves = {("w",): 1, ("s",): 2, ("a",): 3, ("d",): 4}
    try:
        import pygame
    except ImportError:  # the play extra is not installed: WASD alone
        pass
    else:
        moves.update({(pygame.K_UP,): 1, (pygame.K_DOWN,): 2, (pygame.K_LEFT,): 3, (pygame.K_RIGHT,): 4})
    # the Dict space's own form (play() checks every action against the space); the prompt is unused with kind 0
    return {k: {"kind": KIND_ACTION, "action": a, "prompt": "night falls"} for k, a in moves.items()}


def make_action_space(seed=None) -> spaces.Dict:
    return spaces.Dict(
        {
            "kind": spaces.Discrete(2),
            "action": spaces.Discrete(len(ACTIONS)),
            "prompt": EventText(),
        },
        seed=seed,
    )


def _is_move(action: object) -> bool:
    """An int (or 0-d integer array) that names a move; bools are not moves."""
    if isinstance(action, np.ndarray) and action.ndim == 0:
        action = action[()]
    return isinstance(action, (int, np.integer)) and not isinstance(action, (bool, np.bool_))


def parse_step_input(action: object) -> tuple[int, str | None]:
    """(agent action, event text or None) for one step() input; raises a clear error otherwise.

    A text event step moves the agent with noop.
    """
    if isinstance(action, str):
        return 0, validate_text(action)
    if _is_move(action):
        return action_index(int(action)), None
    if isinstance(action, Mapping):
        missing = {"kind"} - set(action)
        if missing:
            raise ValueError(f"a Dict action needs the key 'kind' (0 = action, 1 = text); got keys {sorted(action)}")
        kind = action["kind"]
        if isinstance(kind, np.ndarray) and kind.ndim == 0:
            kind = kind.item()
        if isinstance(kind, (bool, np.bool_)) or not isinstance(kind, (int, np.integer)):
            raise ValueError(f"Dict action 'kind' must be the int 0 (action) or 1 (text), got {kind!r}")
        if kind == KIND_ACTION:
            if "action" not in action:
                raise ValueError("a Dict action with kind 0 needs the key 'action'")
            if not _is_move(action["action"]):
                raise ValueError(f"a Dict action with kind 0 needs an int 'action' in [0, {len(ACTIONS)}), got {action['action']!r:.40}")
            return action_index(int(action["action"])), None
        if kind == KIND_TEXT:
            if "prompt" not in action:
                raise ValueError("a Dict action with kind 1 needs the key 'prompt'")
            return 0, validate_text(action["prompt"])
        raise ValueError(f"Dict action 'kind' must be 0 (action) or 1 (text), got {kind!r}")
    raise TypeError(
        f"step() takes an int action in [0, {len(ACTIONS)}), an event str, or a Dict with kind/action/prompt; "
        f"got {type(action).__name__}"
    )


def parse_batch_input(actions, n: int) -> tuple[np.ndarray, list[str | None]]:
    """Per-row (move, text) from a batched Dict action, a sequence of per-row inputs, or an int array."""
    if isinstance(actions, dict):
        kinds = np.asarray(actions.get("kind"))
        if kinds.shape != (n,) or not np.issubdtype(kinds.dtype, np.integer):
            raise ValueError(f"batched Dict action needs int 'kind' of shape ({n},), got {kinds.dtype} {kinds.shape}")
        moves = np.asarray(actions.get("action", np.zeros(n, np.int64)))
        if moves.shape != (n,) or not np.issubdtype(moves.dtype, np.integer):
            raise ValueError(f"batched Dict action needs int 'action' of shape ({n},), got {moves.dtype} {moves.shape}")
        prompts = actions.get("prompt", [""] * n)
        if isinstance(prompts, (str, bytes)) or not hasattr(prompts, "__len__") or len(prompts) != n:
            raise ValueError(f"batched Dict action needs 'prompt' as {n} strings (one per row), got {prompts!r:.60}")
        rows = [{"kind": int(kinds[i]), "action": moves[i], "prompt": prompts[i]} for i in range(n)]
    elif isinstance(actions, np.ndarray) and actions.ndim == 1:
        rows = [actions[i] for i in range(len(actions))]
    elif isinstance(actions, (list, tuple)):
        rows = list(actions)
    else:
        raise TypeError(f"vector step() takes a batched Dict, an int array or a list of per-row actions; got {type(actions).__name__}")
    if len(rows) != n:
        raise ValueError(f"vector step() needs {n} actions, got {len(rows)}")
    parsed = [parse_step_input(a) for a in rows]
    return np.array([m for m, _ in parsed], np.int64), [t for _, t in parsed]


def parse_schedule(events, what: str = "reset option 'events'") -> dict[int, str]:
    """An event schedule, step -> text, from [(step, text), ...] or [{"step": k, "event": text}, ...]; raises naming the entry."""
    if isinstance(events, (str, bytes, dict)) or not isinstance(events, (list, tuple)):
        raise TypeError(f"{what} must be a list of (step, text) pairs or {{'step', 'event'}} dicts, got {events!r:.60}")
    out: dict[int, str] = {}
    for i, e in enumerate(events):
        if isinstance(e, dict):
            if set(e) != {"step", "event"}:
                raise ValueError(f"event schedule entry {i}: a dict needs exactly the keys 'step' and 'event', got {sorted(e)}")
            step, text = e["step"], e["event"]
        elif isinstance(e, (list, tuple)) and len(e) == 2:
            step, text = e
        else:
            raise ValueError(f"event schedule entry {i}: expected a (step, text) pair or a {{'step', 'event'}} dict, got {e!r:.60}")
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"event schedule entry {i}: step must be a non-negative int, got {step!r}")
        if int(step) in out:
            raise ValueError(f"event schedule entry {i}: two events at step {step}")
        out[int(step)] = validate_text(text)
    return out
