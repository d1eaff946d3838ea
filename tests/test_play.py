"""`dfworld play` headless (SDL's dummy video driver): scripted keys and text drive a session."""

import os

import numpy as np
import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
pg = pytest.importorskip("pygame")  # the play extra

from dfworld.play import PlayConfig, Player  # noqa: E402
from dfworld.video import read_mp4  # noqa: E402


def send(player, *events):
    for e in events:
        pg.event.post(e)
    for e in pg.event.get():
        player.handle(e)


def key(kind, k):
    return pg.event.Event(kind, key=k, mod=0, unicode="", scancode=0)


def test_keys_and_a_typed_event_drive_the_world_model_and_the_real_world(tiny_generator, tmp_path):
    cfg = PlayConfig(checkpoint=str(tiny_generator), seed=3, scale=4, record=str(tmp_path / "play.mp4"))
    player = Player(cfg)
    start_agent = player.real.world.state.agent
    send(player, key(pg.KEYDOWN, pg.K_RIGHT))
    for _ in range(3):  # a held key repeats its action every step
        player.step()
    assert player.held == [4]
    send(player, key(pg.KEYUP, pg.K_RIGHT), key(pg.KEYDOWN, pg.K_SLASH))
    assert player.typing == "" and player.held == []
    send(player, pg.event.Event(pg.TEXTINPUT, text="night falls"), key(pg.KEYDOWN, pg.K_RETURN))
    assert player.typing is None and player.pending == "night falls"
    player.step()
    assert player.last_event == "night falls" and player.env.core.rollout.prompts[0] == "night falls"
    assert player.real.world.state.time == "night"  # the real world took the event too
    assert player.real.world.state.agent != start_agent  # and the moves
    shot = player.screenshot(tmp_path / "shot.png")
    image = pg.surfarray.array3d(pg.image.load(str(shot))).transpose(1, 0, 2)
    size = 32 * cfg.scale
    assert image.shape == (size + 56, 2 * size + 8, 3)
    frame = np.repeat(np.repeat(player.frame, cfg.scale, 0), cfg.scale, 1)
    assert np.array_equal(image[20:size, 100:size], frame[20:size, 100:size])  # the world model's frame, below its title
    send(player, key(pg.KEYDOWN, pg.K_r))
    assert not player.show_real and player.screen.get_size() == (size, size + 56)
    send(player, pg.event.Event(pg.QUIT))
    assert not player.running
    sent = np.stack(player.recorded).astype(int)
    out = player.close()
    video = read_mp4(out).astype(int)
    assert len(video) == len(sent) == 1 + 4 * 4  # the first frame and 4 frames for each of the 4 steps sent
    assert np.array_equal(sent[-1], player.frame)
    # mp4 is lossy: each video frame is nearer the frame sent at its place than the one half a clip away
    assert np.abs(video - sent).mean() < np.abs(video - np.roll(sent, 8, axis=0)).mean()


def test_a_sentence_the_model_cannot_read_is_reported_and_play_goes_on(tiny_generator):
    player = Player(PlayConfig(checkpoint=str(tiny_generator), scale=2))
    player.pending = " ".join(["go"] * 20)  # over the tiny model's 16 tokens
    player.step()
    assert player.last_event.startswith("refused") and player.steps == 0
    player.step()
    assert player.steps == 1
    player.close()


def test_the_envs_name_their_keys_for_gymnasium_play(tiny_generator):
    import gymnasium as gym

    import dfworld  # noqa: F401

    for env in (gym.make("dfworld/EventWorld-v0").unwrapped, gym.make("dfworld/WorldModel-v0", checkpoint=tiny_generator).unwrapped):
        keys = env.get_keys_to_action()
        assert keys[("w",)] == keys[(pg.K_UP,)] and keys[("w",)]["action"] == 1 and keys[(pg.K_RIGHT,)]["action"] == 4
        assert {a["action"] for a in keys.values()} == {1, 2, 3, 4} and all(env.action_space.contains(a) for a in keys.values())
        env.reset(seed=0)
        assert env.step(keys[("d",)])[0].shape[-1] == 3  # a key's action steps the env


def test_gymnasium_play_runs_the_world_model(tiny_generator):
    import gymnasium as gym
    from gymnasium.utils.play import play

    import dfworld  # noqa: F401

    steps = []

    def callback(obs_t, obs_tp1, action, reward, terminated, truncated, info):
        steps.append(action)
        if len(steps) == 3:
            pg.event.post(pg.event.Event(pg.QUIT))

    play(gym.make("dfworld/WorldModel-v0", checkpoint=tiny_generator, render_mode="rgb_array"), noop=0, fps=100, callback=callback)
    assert steps == [0, 0, 0]


@pytest.mark.parametrize("kw, match", [({"scale": -3}, "scale"), ({"scale": 0}, "scale"), ({"max_steps": -1}, "max_steps"),
                                       ({"seed": -1}, "seed must be an int")])
def test_bad_play_settings_are_named(kw, match):
    with pytest.raises(ValueError, match=match):
        PlayConfig(**kw)
