"""`dfworld play`: the world model in a pygame window, driven from the keyboard (the `play` extra).

Arrow keys or WASD move the agent (a held key repeats its action every step); `/` or Tab opens the
text line, where any sentence can be typed and Enter sends it as an event (Escape cancels); `R`
shows or hides the real EventWorld beside the world model, on the same seed and inputs; Escape
or closing the window quits. The world advances at its step rate (4 steps, 16 frames, a second)
whether or not a key is held. The screen shows frames/s and the last event; `--record out.mp4`
writes every generated frame at 16 frames/s.

The episode starts from the real first frame and initial prompt of EventWorld's episode for the
seed, so both panels start from the same scene. `Player` holds the session and takes pygame events,
so a test can drive it headless (SDL's dummy video driver) with posted key and text events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ACTION_KEYS = {"up": 1, "w": 1, "down": 2, "s": 2, "left": 3, "a": 3, "right": 4, "d": 4}  # pygame key names -> actions


@dataclass(frozen=True)
class PlayConfig:
    """`dfworld play`."""

    checkpoint: str | None = None  # a generator checkpoint or a shipped name (None: the shipped default)
    backend: str = "torch"  # torch or onnx
    seed: int = 0  # EventWorld's episode seed, and the world model's
    scale: int = 8  # screen pixels per frame pixel
    record: str | None = None  # an mp4 of every generated frame
    real: bool = True  # show the real EventWorld beside the world model at the start
    threads: int | None = 1  # CPU threads of the world model
    max_steps: int = 0  # stop after this many steps (0: until the window closes)

    def __post_init__(self) -> None:
        from dfworld.world.config import check_seed

        check_seed(self.seed)
        if not 1 <= self.scale <= 32:
            raise ValueError(f"scale must be an int in [1, 32] screen pixels per frame pixel, got {self.scale}")
        if self.max_steps < 0:
            raise ValueError(f"max_steps must be 0 (until the window closes) or more, got {self.max_steps}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be at least 1 (or None), got {self.threads}")


def import_pygame():
    try:
        import pygame
    except ImportError as e:  # pragma: no cover - the play extra is missing
        raise ImportError("dfworld play needs pygame: pip install 'dfworld[play]'") from e
    return pygame


class Player:
    """One play session: both envs, the window, the held keys and the text line."""

    def __init__(self, cfg: PlayConfig):
        import gymnasium as gym

        import dfworld  # noqa: F401  (registers the envs)

        self.pg = pg = import_pygame()
        self.cfg = cfg
        self.env = gym.make("dfworld/WorldModel-v0", checkpoint=cfg.checkpoint, backend=cfg.backend, threads=cfg.threads).unwrapped
        size = self.env.core.world.height
        self.real = gym.make("dfworld/EventWorld-v0", world={"height": size, "width": size},
                             frames_per_step=self.env.core.chunk).unwrapped
        self.frame, self.real_frame = self._start(cfg.seed)
        self.show_real = cfg.real
        self.held: list[int] = []  # actions of the keys held, the latest last
        self.typing: str | None = None  # the text line while open
        self.pending: str | None = None  # a sentence to send at the next step
        self.last_event = "none"
        self.steps, self.fps = 0, 0.0
        self.recorded: list[np.ndarray] = [self.frame] if cfg.record else []
        self.running = True
        pg.init()
        self.font = pg.font.Font(None, 22)
        self.screen = pg.display.set_mode(self._size())
        pg.display.set_caption("dfworld play")
        pg.key.start_text_input()

    def _start(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Both worlds at the start of EventWorld's episode `seed`: its first frame and initial prompt."""
        first, info = self.real.reset(seed=seed)
        obs, _ = self.env.reset(seed=seed, options={"image": first, "prompt": info["prompt"]})
        return obs, first

    def _size(self) -> tuple[int, int]:
        s = self.env.core.world.height * self.cfg.scale
        return (2 * s + 8 if self.show_real else s), s + 56

    # -- input -----------------------------------------------------------------------------------
    def handle(self, event) -> None:
        pg = self.pg
        if event.type == pg.QUIT:
            self.running = False
        elif event.type == pg.TEXTINPUT and self.typing is not None:
            self.typing += event.text
        elif event.type == pg.KEYDOWN:
            name = pg.key.name(event.key)
            if self.typing is not None:
                if name in ("return", "enter"):
                    if self.typing.strip():
                        self.pending = self.typing.strip()
                    self.typing = None
                elif name == "escape":
                    self.typing = None
                elif name == "backspace":
                    self.typing = self.typing[:-1]
            elif name == "escape":
                self.running = False
            elif name in ("/", "tab"):
                self.typing = ""
            elif name == "r":
                self.show_real = not self.show_real
                self.screen = pg.display.set_mode(self._size())
            elif name in ACTION_KEYS:
                self.held.append(ACTION_KEYS[name])
        elif event.type == pg.KEYUP:
            name = pg.key.name(event.key)
            if name in ACTION_KEYS and ACTION_KEYS[name] in self.held:
                self.held.remove(ACTION_KEYS[name])

    # -- one step ----------------------------------------------------------------------------------
    def step(self) -> None:
        """Advance both worlds by one step: the pending event, else the held key's action, else noop."""
        t0 = time.perf_counter()
        action = self.pending if self.pending is not None else (self.held[-1] if self.held else 0)
        self.pending = None
        try:
            obs, _, terminated, truncated, info = self.env.step(action)
        except ValueError as e:  # a sentence the model cannot read: say so, keep playing
            self.last_event = f"refused: {e}"[:80]
            return
        if isinstance(action, str):
            self.last_event = action
        self.frame = obs
        if self.cfg.record:
            self.recorded.extend(info["frames"])
        try:
            self.real_frame = self.real.step(action)[0]
        except ValueError:  # free text the simulator does not know: the real world ignores it
            self.real_frame = self.real.step(0)[0]
        self.steps += 1
        if terminated or truncated:  # a new episode on the next seed
            self.frame, self.real_frame = self._start(self.cfg.seed + self.steps)
        dt = time.perf_counter() - t0
        self.fps = len(info["frames"]) / dt if dt > 0 else 0.0

    def draw(self) -> None:
        pg, s = self.pg, self.cfg.scale
        self.screen.fill((16, 16, 20))
        panels = [("world model", self.frame)] + ([("EventWorld (real)", self.real_frame)] if self.show_real else [])
        for i, (title, frame) in enumerate(panels):
            img = np.repeat(np.repeat(frame, s, 0), s, 1)
            surf = pg.surfarray.make_surface(np.ascontiguousarray(img.transpose(1, 0, 2)))
            x = i * (img.shape[1] + 8)
            self.screen.blit(surf, (x, 0))
            self.screen.blit(self.font.render(title, True, (230, 230, 230)), (x + 4, 4))
        y = self.env.core.world.height * s
        status = f"{self.fps:5.1f} frames/s   step {self.steps}   last event: {self.last_event}"
        self.screen.blit(self.font.render(status, True, (200, 200, 120)), (6, y + 6))
        line = f"> {self.typing}_" if self.typing is not None else "arrows/WASD move   / type an event   R real world   Esc quit"
        self.screen.blit(self.font.render(line, True, (170, 210, 250)), (6, y + 30))
        pg.display.flip()

    def screenshot(self, path: str | Path) -> Path:
        self.draw()
        self.pg.image.save(self.screen, str(path))
        return Path(path)

    def close(self) -> Path | None:
        out = None
        if self.cfg.record and self.recorded:
            from dfworld.video import write_mp4

            out = write_mp4(self.cfg.record, np.stack(self.recorded), fps=self.env.core.world.fps)
        self.env.close()
        self.pg.quit()
        return out


def run_play(cfg: PlayConfig) -> int:
    """The interactive loop at the world's step rate; returns the steps played."""
    player = Player(cfg)
    period = player.env.core.chunk / player.env.core.world.fps  # seconds per step in real time
    try:
        while player.running and (cfg.max_steps <= 0 or player.steps < cfg.max_steps):
            start = time.perf_counter()
            for event in player.pg.event.get():
                player.handle(event)
            if not player.running:
                break
            player.step()
            player.draw()
            time.sleep(max(0.0, period - (time.perf_counter() - start)))
    finally:
        out = player.close()
    if out is not None:
        print(f"recorded {out}")
    return player.steps


__all__ = ["ACTION_KEYS", "PlayConfig", "Player", "run_play"]
