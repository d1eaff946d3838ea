import json

import numpy as np
import pytest
import torch

from dfworld.cli import main
from dfworld.world.config import COLOR_NAMES, TIMES, WEATHERS
from dfworld.world.datasets import ClipsConfig, EpisodesConfig, EventWorldDataset, write_clips, write_episodes
from dfworld.world.events import Event, parse_event
from dfworld.world.probes import read_frames
from dfworld.world.suite import shipped_suite


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "clips"
    write_clips(ClipsConfig(out=str(root), n=40, frames=12, shard_size=16), progress=False)
    return EventWorldDataset(root)


def _holds(event: Event, item) -> np.ndarray:
    """Per frame: does the true state show the event's effect?"""
    if event.target == "time":
        return item["state_time"].numpy() == TIMES.index(event.kind.removeprefix("time_"))
    if event.target == "weather":
        return item["state_weather"].numpy() == WEATHERS.index(event.kind.removeprefix("weather_"))
    colors = item["state_obj_color"].numpy()
    present = item["state_obj_present"].numpy()
    has = lambda c: ((colors == COLOR_NAMES.index(c)) & present).any(1)  # noqa: E731
    if event.kind == "object_appear":
        return has(event.color)
    if event.kind == "object_vanish":
        return ~has(event.color)
    return has(event.to_color) & ~has(event.color)


def test_clips_have_one_event_at_frame_zero_and_show_it_throughout(clips):
    assert len(clips) == 40 and len(clips.manifest["shards"]) == 3
    kinds = set()
    for i in range(len(clips)):
        item = clips[i]
        assert item["frames"].shape == (12, 64, 64, 3) and item["frames"].dtype == torch.uint8
        assert item["actions"].shape == (12,) and item["actions"].dtype == torch.int64
        assert [(t, ok) for t, _, ok in item["events"]] == [(0, True)], "a clip holds exactly one event, at its start"
        assert item["events"][0][1] == item["prompt"]
        event = parse_event(item["prompt"])
        kinds.add(event.kind)
        assert _holds(event, item).all(), "the prompt's effect holds in every frame: no switch inside a clip"
        # the scene state is constant inside a clip (nothing switches)
        assert len(set(item["state_time"].tolist())) == 1 and len(set(item["state_weather"].tolist())) == 1
    assert len(kinds) >= 6


def test_stored_frames_match_their_stored_state(clips):
    item = clips[3]
    readings = read_frames(item["frames"].numpy())
    assert [r.time for r in readings] == [TIMES[t] for t in item["state_time"].tolist()]
    assert item["state_agent_pos"].shape == (12, 2)


def test_clips_are_deterministic_per_seed(tmp_path):
    a = write_clips(ClipsConfig(out=str(tmp_path / "a"), n=5, frames=8, seed=3), progress=False).parent
    b = write_clips(ClipsConfig(out=str(tmp_path / "b"), n=5, frames=8, seed=3), progress=False).parent
    da, db = EventWorldDataset(a), EventWorldDataset(b)
    for i in range(5):
        assert torch.equal(da[i]["frames"], db[i]["frames"]) and da[i]["prompt"] == db[i]["prompt"]


def test_clips_can_hold_the_scene_before_their_event(tmp_path):
    root = write_clips(ClipsConfig(out=str(tmp_path / "e"), n=12, frames=8, event_at=4), progress=False).parent
    ds = EventWorldDataset(root)
    for i in range(12):
        item = ds[i]
        assert item["frames"].shape[0] == 8 and [t for t, _, ok in item["events"] if ok] == [4]  # one event, at frame 4
        assert item["prompt"] == item["events"][0][1]  # the clip is conditioned on its event
    with pytest.raises(ValueError, match="event_at=8"):
        write_clips(ClipsConfig(out=str(tmp_path / "x"), n=1, frames=8, event_at=8), progress=False)


def test_heldout_clips_use_heldout_words(tmp_path):
    from dfworld.world.events import paraphrase_split

    root = write_clips(ClipsConfig(out=str(tmp_path / "h"), n=10, frames=4, split="heldout"), progress=False).parent
    assert {paraphrase_split(EventWorldDataset(root)[i]["prompt"]) for i in range(10)} == {"heldout"}


def test_episodes_from_the_shipped_suite(tmp_path):
    root = write_episodes(EpisodesConfig(out=str(tmp_path / "e"), script="core", shard_size=10), progress=False).parent
    ds = EventWorldDataset(root)
    suite = shipped_suite("core")
    assert len(ds) == len(suite.episodes) and ds.kind == "episodes"
    item = ds[0]
    assert item["frames"].shape[0] == suite.episodes[0].frames
    assert [t for t, _, _ in item["events"]] == [e.t for e in suite.episodes[0].events()]
    assert np.array_equal(item["actions"].numpy(), suite.episodes[0].actions())


def test_planned_episodes(tmp_path):
    cfg = EpisodesConfig(out=str(tmp_path / "p"), script=None, n=3, frames=256, max_events=4)
    ds = EventWorldDataset(write_episodes(cfg, progress=False).parent)
    assert len(ds) == 3 and all(len(ds[i]["events"]) == 4 for i in range(3))


def test_bad_data_sets(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a dfworld data set"):
        EventWorldDataset(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "dfworld-data", "version": 99}))
    with pytest.raises(ValueError, match="version 99"):
        EventWorldDataset(tmp_path)
    with pytest.raises(FileExistsError, match="already holds a data set"):
        write_clips(ClipsConfig(out=str(tmp_path), n=1), progress=False)
    with pytest.raises(ValueError, match="needs script"):
        write_episodes(EpisodesConfig(out=str(tmp_path / "x"), script=None, n=0), progress=False)


def test_data_command_with_overrides(tmp_path, capsys):
    assert main(["data", "clips", f"out={tmp_path / 'c'}", "n=3", "frames=4", "world.height=32", "world.width=48"]) == 0
    ds = EventWorldDataset(tmp_path / "c")
    assert ds[0]["frames"].shape == (4, 32, 48, 3)
    assert main(["data", "clips", "n=abc"]) == 2
    assert "config.n: expected an integer" in capsys.readouterr().err
