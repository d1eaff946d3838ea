"""README's Python snippets run as written (on the shipped default), in the order they appear."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_snippets():
    assert len(snippets()) >= 3


@pytest.mark.parametrize("index", range(len(snippets())))
def test_the_readme_snippet_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # whatever a snippet writes stays in the test's folder
    monkeypatch.setenv("DFWORLD_ONNX_CACHE", str(tmp_path / "onnx"))
    code = snippets()[index]
    exec(compile(code, f"README.md python snippet {index}", "exec"), {"__name__": "__readme__"})
