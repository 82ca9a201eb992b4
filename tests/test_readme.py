"""The README's Python examples run as written.

Its ```` ```python ```` blocks are run in order in one namespace, as a reader pasting
them into one session would: the CPU ones here (they write their files into a
temporary directory), the CuPy ones (those that import CuPy or say they need a GPU)
only where a CUDA device is, in a ``gpu`` test.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks() -> list[tuple[int, str]]:
    """``(line number, code)`` of every Python block of the README."""
    text = README.read_text(encoding="utf-8")
    found = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
        found.append((text.count("\n", 0, match.start()) + 2, match.group(1)))
    return found


def _on_gpu(code: str) -> bool:
    return "import cupy" in code or "on the GPU" in code


def _run(blocks: list[tuple[int, str]]) -> dict:
    namespace: dict = {"__name__": "readme"}
    for line, code in blocks:
        exec(compile("\n" * (line - 1) + code, str(README), "exec"), namespace)
    return namespace


def test_the_readme_has_examples_for_both():
    blocks = _blocks()
    assert sum(_on_gpu(code) for _, code in blocks) >= 2
    assert sum(not _on_gpu(code) for _, code in blocks) >= 4


def test_the_cpu_examples_run(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    namespace = _run([b for b in _blocks() if not _on_gpu(b[1])])
    assert namespace["est"].cluster_centers_.shape == (16, 8)
    assert namespace["saved"].path.name == "run.mp4" and Path("run.mp4").stat().st_size > 0
    frames = namespace["frames"]
    assert frames[-1].centroids.shape == (12, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.mp4"]


@pytest.mark.gpu
def test_the_gpu_examples_run(tmp_path, monkeypatch):
    from kmeans_gpu.backends import available_backends

    if "cupy" not in available_backends():
        pytest.skip("needs CuPy and a CUDA device")
    monkeypatch.chdir(tmp_path)
    namespace = _run([b for b in _blocks() if _on_gpu(b[1])])
    assert namespace["est"].backend_ == "cupy"
    assert namespace["est"].cluster_centers_.shape == (1024, 64)
