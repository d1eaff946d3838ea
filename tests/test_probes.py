import numpy as np
import pytest

from dfworld.world.config import WorldConfig
from dfworld.world.episodes import sample_episodes, stack_states
from dfworld.world.probes import degrade, read_frame, read_frames, score_readings
from dfworld.world.simulator import EventWorld


@pytest.fixture(scope="module")
def frames64():
    return sample_episodes(WorldConfig(), 30)


def assert_meets_targets(score):
    assert score["time_acc"] >= 0.99 and score["weather_acc"] >= 0.99 and score["presence_acc"] >= 0.99, score
    assert score["pos_err_max"] <= 1.5, score


def test_probes_on_clean_frames(frames64):
    frames, states = frames64
    assert_meets_targets(score_readings(read_frames(frames), states))


def test_probes_on_blurred_noisy_frames(frames64):
    frames, states = frames64
    assert_meets_targets(score_readings(read_frames(degrade(frames, 1.0, 8.0)), states))


def test_probes_at_another_resolution():
    config = WorldConfig(height=128, width=96)
    frames, states = sample_episodes(config, 4)
    score = score_readings(read_frames(frames, config), states)
    assert score["time_acc"] >= 0.99 and score["presence_acc"] >= 0.99 and score["pos_err_max"] <= 1.5


def test_probes_find_nothing_on_a_blank_frame():
    reading = read_frame(np.zeros((64, 64, 3), np.uint8))
    assert reading.objects == {} and reading.agent is None and reading.coin is None


def test_probes_reject_wrong_frames():
    with pytest.raises(ValueError, match="uint8 HWC"):
        read_frame(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="world is"):
        read_frame(np.zeros((32, 32, 3), np.uint8), WorldConfig())


def test_score_counts_a_missed_object():
    world = EventWorld()
    frame = world.reset(1)
    states = stack_states([world.state_arrays()])
    r = read_frame(frame)
    r.objects.pop(next(iter(r.objects)))
    assert score_readings([r], states)["presence_acc"] < 1.0


def test_clip_scores_count_the_clutter_that_detection_misses():
    from dfworld.bench.teacher_quality import clip_scores
    from dfworld.world.render import Renderer

    cfg = WorldConfig()
    r = Renderer(cfg)
    scene = [("red", "circle", 20, 30), ("blue", "square", 40, 50)]
    blobs = [("yellow", "circle", 10, 55), ("cyan", "circle", 30, 43), ("pink", "square", 50, 25), ("purple", "circle", 55, 58)]

    def clip(objects):
        return np.stack([r.draw("day", "clear", f, objects, (60, 20), (20, 50)) for f in range(8)])

    clean, cluttered = clip_scores(clip(scene), "the sun comes up", cfg), clip_scores(clip(scene + blobs), "the sun comes up", cfg)
    assert clean["prompt_ok"] == cluttered["prompt_ok"] == 1.0
    assert clean["objects"] == cluttered["objects"] == 1.0  # detection cannot tell them apart
    assert clean["object_count"] == 2 and cluttered["object_count"] == 6


def test_the_agent_and_coin_read_alone_are_the_full_readings(frames64):
    frames, _ = frames64
    frames = np.concatenate([frames[:200], degrade(frames[:200], 1.5, 12.0)])  # blurred edges: the labels' close calls
    for f in frames:
        full, alone = read_frame(f), read_frame(f, entities=("agent", "coin"))
        assert (alone.agent, alone.coin, alone.time, alone.weather) == (full.agent, full.coin, full.time, full.weather)
        assert alone.objects == {}
    with pytest.raises(ValueError, match=r"unknown entities \['dog'\]"):
        read_frame(frames[0], entities=("agent", "dog"))
