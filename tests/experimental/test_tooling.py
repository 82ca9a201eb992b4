"""The tools that run where a GPU is: the benchmark's experimental rows and the phase
profile (on the CuPy stand-in: their Python must not be what fails on a GPU), and the
shell scripts (their syntax, usage text and exit status; the dry run of
``scripts/gpu-check`` without a GPU is ``tests/test_benchmark.py``'s)."""

from __future__ import annotations

import contextlib
import importlib.util
import math
import re
import subprocess
import types
from pathlib import Path

import pytest

from tests import fake_cupy

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ("scripts/gpu-check", "scripts/gpu-wheels")
#: Wording of a development log, which no tracked text uses (character classes, so that
#: the list does not match itself).
WORK_LOG = re.compile(r"\bsess[i]on|\ble[n]t\b|\biss[u]e \d|\bst[o]p \d|\bthe se[e]d\b", re.I)


def _phases():
    """``benchmarks/gpu_phases.py`` (a script, not a package module)."""
    spec = importlib.util.spec_from_file_location(
        "gpu_phases", ROOT / "benchmarks" / "gpu_phases.py"
    )
    assert spec is not None and spec.loader is not None
    phases = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(phases)
    return phases


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_scripts_parse_and_say_how_to_use_them(script):
    assert subprocess.run(["bash", "-n", script], cwd=ROOT).returncode == 0
    text = (ROOT / script).read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "Usage: scripts/" in text
    assert "Exit status:" in text
    assert not WORK_LOG.search(text), WORK_LOG.search(text)


def test_gpu_check_prints_its_usage_and_refuses_unknown_modes():
    shown = subprocess.run(
        ["bash", "scripts/gpu-check", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert shown.returncode == 0 and "Usage: scripts/gpu-check [full|quick]" in shown.stdout
    assert "Output goes to $OUT" in shown.stdout and "set -uo" not in shown.stdout
    wrong = subprocess.run(
        ["bash", "scripts/gpu-check", "everything"], cwd=ROOT, capture_output=True, text=True
    )
    assert wrong.returncode == 2 and "usage:" in wrong.stderr


def test_the_benchmark_runs_the_experimental_rows(cupy):
    """Every experimental contender, built from a backend object (no environment, no
    patched globals), runs on the stand-in and ends at the core's inertia."""
    from benchmarks.harness import LAB, LAB_VARIANTS, run_benchmark

    hooks = fake_cupy.memory_hooks[0]
    doc = run_benchmark(["blog"], iterations=2, repeats=1, include=("cupy]", LAB))
    names = [r["contender"] for r in doc["results"]]
    assert names[0] == "kmeans-gpu[cupy]"
    assert names[3:] == [f"{LAB} {suffix}" for suffix in LAB_VARIANTS]
    assert fake_cupy.memory_hooks[0] - hooks == len(names)  # each peak measured once
    for row in doc["results"]:
        assert row["inertia_rel_diff"] < 1e-6, row
    assert cupy[1]["triton_steps"] > 0


def test_the_phase_profile_runs_through_on_the_stand_in(cupy, monkeypatch):
    """Every row, the Triton ones included, on a small G1: finite values (an
    iteration's cost is a difference of two fits' times, which the host's noise can
    make negative here), the lap-by-lap fit's laps in order."""
    from benchmarks import harness

    phases = _phases()
    monkeypatch.setitem(harness.WORKLOADS, "G1", (3000, 16, 24, True))
    rows = phases.profile("G1", repeats=1, iterations=2, rows=None)
    values = {r["step"]: next(r[u] for u in ("ms", "MiB", "of 1") if u in r) for r in rows}
    assert not {step: v for step, v in values.items() if not math.isfinite(v)}
    assert [s for s in values if s.startswith("fit lap by lap: ")] == [
        "fit lap by lap: set-up",
        "fit lap by lap: initial centres",
        "fit lap by lap: iteration 1",
        "fit lap by lap: iterations 2-3, median",
        "fit lap by lap: end: final assignment and inertia",
        "fit lap by lap: result: distinct clusters",
        "fit lap by lap: the whole fit",
    ]
    for step in (
        "kmeans(), lab tf32x3 (Triton step): one Lloyd iteration",
        "a pass's share, Triton tf32x3, one kernel (step mode) (all rows)",
        "cluster sums, 64-bit fixed point (deterministic) (all rows)",
        "final inertia, SQ_DIST kernel (all rows)",
        "tf32x3 nearest two, Triton kernel (all rows)",
    ):
        assert step in values, step
    assert cupy[1]["triton_steps"] > 0


def test_the_fit_trace_ranks_device_time_and_the_host_time_of_cuda_calls(cupy, monkeypatch):
    """The phase profile's traced fit, with torch's profiler replaced by one that
    reports what CUPTI would on a GPU: kernels and copies by device time, CUDA calls by
    the host time they took, and the device's busy time in all."""
    torch = pytest.importorskip("torch")
    import numpy as np

    cp, _ = cupy
    phases = _phases()

    def event(key, device_us, cpu_us, count):
        return types.SimpleNamespace(
            key=key, self_device_time_total=device_us, self_cpu_time_total=cpu_us, count=count
        )

    events = [
        event("kmeans_gpu_nearest_two_f32", 8_000.0, 0.0, 90),
        event("Memcpy DtoH (Device -> Pageable)", 50.0, 0.0, 12),
        event("cudaStreamSynchronize", 0.0, 30_000.0, 12),
        event("cudaLaunchKernel", 0.0, 2_000.0, 900),
        event("aten::empty", 0.0, 10.0, 3),
    ]

    @contextlib.contextmanager
    def profile(activities):
        assert len(activities) == 2  # CPU and CUDA
        yield types.SimpleNamespace(key_averages=lambda: events)

    monkeypatch.setattr(torch.profiler, "profile", profile)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    X = cp.asarray(np.random.default_rng(0).normal(size=(500, 4)).astype(np.float32))
    on_device, on_host, busy, wall = phases.fit_trace(cp, X, 6, X[:6].copy(), 3, rows=1)
    assert on_device == [("kmeans_gpu_nearest_two_f32", 8.0, 90)]
    assert on_host == [("cudaStreamSynchronize", 30.0, 12)]
    assert busy == pytest.approx(8.05) and wall > 0


def test_the_experimental_page_shows_working_names_and_no_log_wording():
    """docs/experimental.md: its Python parses and names what the package has; it says
    what the engines are, not how they came about."""
    import ast
    import re

    from kmeans_gpu import experimental

    text = (ROOT / "docs" / "experimental.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    for block in blocks:
        tree = ast.parse(block)
        for node in ast.walk(tree):
            is_ours = isinstance(node, ast.Attribute) and getattr(node.value, "id", "") == (
                "experimental"
            )
            if is_ours:
                assert hasattr(experimental, node.attr), node.attr
    assert not WORK_LOG.search(text), WORK_LOG.search(text)
