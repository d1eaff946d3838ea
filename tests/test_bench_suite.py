"""dfworld bench: the suite metrics, a tiny end-to-end run, resuming, and bad input."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import short_script

from dfworld.bench.metrics import consistency_curve, reaction_delay
from dfworld.bench.suite_report import REFERENCE, episode_stats, headline, probe, reading_from_dict
from dfworld.bench.suite_runner import BenchConfig, BenchError, run_bench
from dfworld.cli import main
from dfworld.video import read_mp4
from dfworld.world.config import WorldConfig
from dfworld.world.episodes import play_episode
from dfworld.world.events import Event, parse_event
from dfworld.world.probes import Blob, FrameReading
from dfworld.world.scripts import ScriptError
from dfworld.world.simulator import EventWorld
from dfworld.world.suite import make_suite


def _reading(time="day", weather="clear", objects=("red", "blue"), agent=True) -> FrameReading:
    return FrameReading(time, weather, {c: Blob(10.0, 30.0, 40) for c in objects}, Blob(20.0, 40.0, 49) if agent else None)


def test_event_metrics_on_hand_made_readings():
    before = [_reading()] * 8
    vanish = Event("object_vanish", "red")
    # untouched: blue, the agent, the time and the weather; blue lost from d=2 on
    after = [_reading(objects=("blue",))] * 2 + [_reading(objects=())] * 2
    assert consistency_curve(vanish, before, after).tolist() == [1.0, 1.0, 0.75, 0.75]
    # the time event does not count time as untouched; the weather changing does
    night = Event("time_night")
    after = [_reading("night"), _reading("night", "rain")]
    assert consistency_curve(night, before, after).tolist() == [1.0, 0.75]
    assert consistency_curve(night, [], after) is None
    assert reaction_delay(night, [_reading()] * 3 + [_reading("night")] * 10) == 3
    assert reaction_delay(night, [_reading("night")] + [_reading()] * 10) is None  # a flicker is not an effect
    assert reaction_delay(night, [_reading()] * 5) is None


def _scores(readings_per_episode, records):
    stats = []
    for readings, rec in zip(readings_per_episode, records):
        r, fits = zip(*map(reading_from_dict, readings))
        events = [(e.t, parse_event(e.text)) for e in rec.events if e.applied]
        real = [reading_from_dict(d)[0] for d in probe(rec.frames, WorldConfig())]
        stats.append(episode_stats(list(r), list(fits), events, real))
    return headline(stats)


def test_the_simulator_scores_perfectly_and_broken_readings_do_not():
    script, _ = make_suite(n_episodes=2, frames=96, max_events=2)
    records = [play_episode(ep, EventWorld(script.world)) for ep in script.episodes]
    assert sum(len(r.events) for r in records) >= 2
    readings = [probe(r.frames, script.world) for r in records]
    h = _scores(readings, records)
    assert h["consistency"] == 1.0 and h["reactivity@16"] == 1.0 and h["median_delay"] == 0.0
    assert h["validity"] == 1.0 and h["agent_error_px"] == 0.0 and h["drift_per_100"] == 0.0
    assert h["untouched_objects"] >= 1.0

    # a source that loses every object and the agent 4 frames after each event, and never reacts
    broken = json.loads(json.dumps(readings))
    for rd, rec in zip(broken, records):
        first = rec.events[0].t
        for f in range(first, len(rd)):
            rd[f] = dict(readings[0][0], objects={}, agent=None) if f >= first + 4 else dict(rd[first - 1])
    h = _scores(broken, records)
    assert h["consistency"] < 0.8 and h["drift_per_100"] < 0 and h["reactivity@16"] < 1.0 and h["validity"] < 1.0


def _part_times(parts: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(parts.glob("*--*.json"))}


def test_bench_writes_its_report_and_resumes(tiny_generator, tmp_path, monkeypatch):
    script = short_script(tmp_path / "short.jsonl")
    out = tmp_path / "bench"
    cfg = BenchConfig(script=str(script), checkpoints=(f"tiny={tiny_generator}",), frames=48, batch=2, out=str(out), video_episodes=1)
    report = run_bench(cfg, progress=False)

    for name in ("bench.json", "bench.md", "consistency_vs_frames.png", "reactivity_vs_frames.png", "video_short-0.mp4"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "bench.json").read_text())
    ref, tiny = saved["summary"]["reference"], saved["summary"]["tiny"]
    assert ref["consistency"]["value"] == 1.0 and ref["reactivity@16"]["value"] == 1.0
    assert ref["consistency"]["ci95"] == [1.0, 1.0] and tiny["events"] == ref["events"] == 6
    assert 0.0 <= tiny["validity"]["value"] <= 1.0 and tiny["fps"] > 0
    assert tiny["event_step_ms"] is not None and tiny["action_step_ms"] is not None
    assert len(saved["episodes"]["tiny"]) == 3 and len(tiny["curves"]["reactivity"]) == 16  # the longest event window
    md = (out / "bench.md").read_text()
    assert "| tiny |" in md and "| reference (EventWorld) |" in md
    video = read_mp4(out / "video_short-0.mp4")
    assert video.shape[0] == 48 and video.shape[2] == 2 * 32 * 4 + 2  # real | tiny, upscaled 4x

    # a rerun with the same config touches no finished part and builds no generator
    times = _part_times(out / "parts")
    assert len(times) == 6

    def no_generator(*args, **kwargs):
        raise AssertionError("a finished run must not build a generator")

    monkeypatch.setattr("dfworld.envs.core.WorldModelCore", no_generator)
    assert run_bench(cfg, progress=False)["summary"] == report["summary"]
    assert _part_times(out / "parts") == times
    monkeypatch.undo()

    # a lost part is generated again, the same as before (seeded), and nothing else is
    lost = out / "parts" / "tiny--002.json"
    before = json.loads(lost.read_text())["readings"]
    lost.unlink()
    run_bench(cfg, progress=False)
    after = _part_times(out / "parts")
    assert {k: v for k, v in after.items() if k != lost.name} == {k: v for k, v in times.items() if k != lost.name}
    assert json.loads(lost.read_text())["readings"] == before

    with pytest.raises(BenchError, match="another config.*seed.*--restart"):
        run_bench(replace(cfg, seed=1), progress=False)
    run_bench(replace(cfg, seed=1, restart=True, episodes=1, video_episodes=0), progress=False)
    assert json.loads((out / "bench.json").read_text())["config"]["seed"] == 1


@pytest.fixture
def one_episode_script(tmp_path):
    return short_script(tmp_path / "short.jsonl", n=1)


def _narrow_text(tiny_generator, tmp_path) -> Path:
    """The tiny generator with a text conditioner that accepts at most 4 tokens."""
    path = tmp_path / "narrow"
    shutil.copytree(tiny_generator, path)
    config = json.loads((path / "config.json").read_text())
    config["text"]["max_tokens"] = 4
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_bad_input_is_named(tiny_generator, one_episode_script, tmp_path):
    def run(script=one_episode_script, checkpoints=(f"tiny={tiny_generator}",), **kw):
        run_bench(BenchConfig(script=str(script), checkpoints=checkpoints, out=str(tmp_path / "out"), **kw), progress=False)

    with pytest.raises(BenchError, match="expected NAME=PATH"):
        run(checkpoints=(str(tiny_generator),))
    with pytest.raises(BenchError, match="given twice"):
        run(checkpoints=(f"a={tiny_generator}", f"a={tiny_generator}"))
    with pytest.raises(FileNotFoundError, match="missing=.*no such checkpoint"):
        run(checkpoints=(f"missing={tmp_path / 'nope'}",))
    with pytest.raises(BenchError, match="--episodes 5: .* has 1 episodes"):
        run(episodes=5)

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format": "dfworld-events", "version": 1}\n{"episode": "e", "seed": 1, "frames": 32}\n{"t": 4, "event": "it rains frogs"}\n')
    with pytest.raises(ScriptError, match=f"{bad}:3: unknown event"):
        run(script=bad)

    off = tmp_path / "off.jsonl"
    off.write_text('{"format": "dfworld-events", "version": 1}\n{"episode": "e", "seed": 1, "frames": 32}\n{"t": 6, "event": "night falls"}\n')
    with pytest.raises(BenchError, match=f"{off}:3: .*not on a chunk boundary.*multiples of 4"):
        run(script=off)

    long = tmp_path / "long.jsonl"
    long.write_text('{"format": "dfworld-events", "version": 1}\n{"episode": "e", "seed": 1, "frames": 32}\n'
                    '{"t": 8, "event": "out of nowhere a red object emerges"}\n')
    with pytest.raises(BenchError, match="'narrow' cannot encode the text 'out of nowhere a red object emerges'.*at most 4"):
        run(script=long, checkpoints=(f"narrow={_narrow_text(tiny_generator, tmp_path)}",))
    assert not (tmp_path / "out").exists()  # nothing ran


def test_cli_bench_reports_errors_and_runs(tiny_generator, one_episode_script, tmp_path, capsys):
    assert main(["bench", "--script", str(one_episode_script), "--checkpoint", "no-equals-sign"]) == 2
    assert "dfworld bench: error: --checkpoint 'no-equals-sign': expected NAME=PATH" in capsys.readouterr().err
    out = tmp_path / "cli"
    argv = ["bench", "--script", str(one_episode_script), "--checkpoint", f"tiny={tiny_generator}", "--frames", "32",
            "--batch", "1", "--video-episodes", "0", "--out", str(out)]
    assert main(argv) == 0
    assert "| tiny |" in capsys.readouterr().out
    assert json.loads((out / "bench.json").read_text())["config"]["frames"] == 32
    assert sorted(p.name for p in (out / "parts").glob("*.json")) == ["config.json", f"{REFERENCE}--000.json", "tiny--000.json"]
