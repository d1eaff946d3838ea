"""The package's structure: imports point one way, files stay small, configs run their dataclass defaults."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from dfworld.configuration import to_dict

ROOT = Path(__file__).resolve().parent.parent
# the installed package's folders (pyproject.toml maps envs/, agents/ and configs/ into dfworld.*)
FOLDERS = {"dfworld": ROOT / "dfworld", "dfworld.envs": ROOT / "envs", "dfworld.agents": ROOT / "agents"}

# Layers, lowest first: a module may import its own layer's modules and any lower layer's, never a higher one.
LAYERS = [
    ["dfworld.configuration", "dfworld.checkpoint", "dfworld.schedule", "dfworld.shipped", "dfworld.video", "dfworld.world"],
    ["dfworld.model"],
    ["dfworld.sampling", "dfworld.rollout"],
    ["dfworld.losses", "dfworld.runtime"],
    ["dfworld.envs", "dfworld.training"],
    ["dfworld.bench", "dfworld.agents"],
    ["dfworld.demo", "dfworld.cli", "dfworld"],
]
# folders at one layer that must not import each other
APART = [("dfworld.training", "dfworld.bench"), ("dfworld.training", "dfworld.envs"), ("dfworld.bench", "dfworld.agents")]


def modules() -> dict[str, Path]:
    out = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def imports(path: Path, name: str) -> set[str]:
    """Every dfworld module a file imports, at any depth of the file (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m == "dfworld" or m.startswith("dfworld.")} - {name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: {m for m in imports(path, name) if m in mods} for name, path in mods.items()}


def unit(module: str) -> tuple[int, str]:
    """(layer index, layer entry) of a module: the longest entry it falls under."""
    best = None
    for i, layer in enumerate(LAYERS):
        for entry in layer:
            if (module == entry or module.startswith(entry + ".")) and (best is None or len(entry) > len(best[1])):
                best = (i, entry)
    assert best is not None, f"{module} is in no layer of tests/test_structure.py"
    return best


def test_no_module_imports_a_higher_layer_or_a_folder_kept_apart():
    bad = []
    for src, targets in graph().items():
        for dst in targets:
            (ls, es), (ld, ed) = unit(src), unit(dst)
            if ld > ls or any({es, ed} == {a, b} for a, b in APART):
                bad.append(f"{src} -> {dst}")
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(bad))


def test_the_import_graph_has_no_cycle():
    g = graph()
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [node])):
                return cycle
        state[node] = 2
        return None

    for node in sorted(g):
        if node not in state and (cycle := visit(node, [])):
            pytest.fail("import cycle: " + " -> ".join(cycle[cycle.index(cycle[-1]) :]))


def test_no_source_file_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in ROOT.glob("*/**/*.py") if not {".venv", "build"} & set(p.parts)
            and (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"files over 400 lines: {long}"


def test_every_stage_yaml_and_the_pipeline_run_the_dataclass_defaults():
    from dfworld.training.pipeline import PipelineConfig, stage_config
    from dfworld.training.stages import STAGES, stage_classes
    from dfworld.training.stages import stage_config as standalone

    for name in STAGES:
        default = to_dict(stage_classes(name)[0]())
        assert to_dict(standalone(name)) == default, f"configs/stage/{name}.yaml changes its dataclass's defaults"
        assert to_dict(stage_config(PipelineConfig(), name)) == default, f"dfworld pipeline runs stage {name} off its defaults"


def test_the_shared_config_groups_are_their_dataclasses_defaults():
    from dfworld.configuration import compose_group
    from dfworld.schedule import SamplerConfig
    from dfworld.training.stages.base import CriticConfig

    assert compose_group("sampler", "default") == to_dict(SamplerConfig())
    assert compose_group("critic", "default") == to_dict(CriticConfig())


def test_a_stage_override_may_name_any_field_and_an_unknown_one_is_refused():
    from dfworld.configuration import ConfigError
    from dfworld.training.stages import stage_config

    cfg = stage_config("delta", ["train.steps=3", "trust_region.rho=2.0", "switch_gaps=[8,12]"])
    assert cfg.train.steps == 3 and cfg.trust_region.rho == 2.0 and cfg.switch_gaps == (8, 12)
    assert cfg.train.lr == 3e-5  # the rest stays the default
    with pytest.raises(ConfigError, match="unknown key"):
        stage_config("stream", ["trust_region.rho=2.0"])  # the trust region is delta's


def test_ruff_is_clean():
    import shutil
    import subprocess
    import sys

    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).is_file():
        pytest.skip("ruff is not installed (the dev extra installs it)")
    out = subprocess.run([ruff, "check", "--output-format", "concise", str(ROOT)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:]
