import json

import numpy as np
import pytest

from dfworld.cli import main
from dfworld.video import read_mp4, side_by_side, write_mp4


def test_mp4_round_trip(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (10, 32, 48, 3), dtype=np.uint8)
    frames[:] = frames[:1]  # a still image survives lossy coding well enough to compare means
    path = write_mp4(tmp_path / "v.mp4", frames, fps=16, scale=2, captions=[str(i) for i in range(10)])
    back = read_mp4(path)
    assert back.shape == (10, 64 + 18, 96, 3)


def test_video_errors(tmp_path):
    with pytest.raises(ValueError, match="no frames"):
        write_mp4(tmp_path / "a.mp4", np.zeros((0, 8, 8, 3), np.uint8), 16)
    with pytest.raises(ValueError, match="captions"):
        write_mp4(tmp_path / "a.mp4", np.zeros((2, 8, 8, 3), np.uint8), 16, captions=["x"])
    with pytest.raises(ValueError, match="uint8 HWC"):
        write_mp4(tmp_path / "a.mp4", np.zeros((2, 8, 8, 3), np.float32), 16)
    with pytest.raises(ValueError, match="equal heights"):
        side_by_side([np.zeros((8, 8, 3), np.uint8), np.zeros((9, 8, 3), np.uint8)])


def test_demo_writes_video_and_report(tmp_path, tiny_generator):
    out = tmp_path / "demo"
    assert main(["demo", "--checkpoint", str(tiny_generator), "--out", str(out), "--episode", "core-03", "--frames", "112",
                 "--scale", "1"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["episode"] == "core-03" and report["frames"] == 112 and report["frames_per_second"] > 0
    assert len(report["events"]) >= 1 and all(e["real"]["reaction_delay"] == 0 for e in report["events"])
    assert all(e["real"]["consistency"] == 1.0 for e in report["events"] if e["real"]["consistency"] is not None)
    assert read_mp4(out / "core-03.mp4").shape[0] == 112
    assert (out / "report.md").read_text().startswith("# dfworld demo")
    fid = report["fidelity"]  # a random generator is faithful nowhere; the strip shows generated above real
    assert fid["faithful"] == 0.0 and set(fid) >= {"faithful_0_15", "faithful_16_63", "pickup_precision"}
    import cv2
    strip = cv2.imread(report["strip"])
    assert strip is not None and strip.shape[0] > 2 * 32 and strip.shape[1] > 8 * 32


def test_demo_errors(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--episode", "nope"]) == 2
    assert "episode 'nope' is not in" in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path), "--script", str(tmp_path / "missing.jsonl")]) == 2
    assert "neither a shipped suite" in capsys.readouterr().err


def test_script_validate_command(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format": "dfworld-events", "version": 1}\n{"episode": "a", "seed": 1, "frames": 8}\n{"t": 3, "event": "meteor strike"}\n')
    assert main(["script", "validate", str(bad)]) == 2
    assert f"{bad}:3: unknown event" in capsys.readouterr().err
