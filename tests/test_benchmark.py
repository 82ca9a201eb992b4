"""The benchmark harness runs end to end (briefly) and reports what it promises."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.harness import WORKLOADS, make_data, markdown, run_benchmark

ROOT = Path(__file__).resolve().parents[1]
#: kmeans-gpu's rows on NumPy (a pure NumPy variant too, when numba serves by default)
OURS_NUMPY = ["kmeans-gpu[numpy]", "kmeans-gpu[numpy] frames"] + (
    ["kmeans-gpu[numpy] without numba"] if importlib.util.find_spec("numba") else []
)


def test_workloads_are_seeded_and_share_initial_centroids():
    X1, init1 = make_data("blog")
    X2, init2 = make_data("blog")
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(init1, init2)
    assert X1.shape == (1200, 2) and init1.shape == (12, 2) and X1.dtype == np.float32
    assert len({tuple(row) for row in init1}) == 12
    assert set(WORKLOADS) >= {"blog", "W1", "W2", "W3", "G1", "G2"}


def test_run_reports_times_ratios_inertia_and_machine():
    doc = run_benchmark(["blog"], iterations=3, repeats=2)
    rows = {r["contender"]: r for r in doc["results"]}
    assert {"kmeans-gpu[numpy]", "kmeans-gpu[numpy] frames", "scikit-learn lloyd"} <= set(rows)
    ours = rows["kmeans-gpu[numpy]"]
    assert ours["ratio"] == 1.0 and len(ours["samples_ms"]) == 2 and ours["n_iter"] == 3
    assert set(OURS_NUMPY) <= set(rows)
    assert rows["scikit-learn lloyd"]["inertia_rel_diff"] < 1e-5  # same start, same run
    assert "the blog post's per-point loop" in rows
    assert doc["machine"]["cores"] >= 1 and doc["machine"]["versions"]["numpy"]
    table = markdown(doc)
    assert "| blog | 1,200 × 2, k = 12 | kmeans-gpu[numpy] |" in table
    assert "Not run:" in table and "needs a GPU" not in table


def test_command_line_writes_json_and_markdown(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "kmeans_gpu",
            "bench",
            "blog",
            "--repeats",
            "1",
            "--iterations",
            "2",
            "--only",
            "numpy]",
            "--quiet",
            "--json",
            str(tmp_path / "b.json"),
            "--markdown",
            str(tmp_path / "b.md"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads((tmp_path / "b.json").read_text())
    assert [r["contender"] for r in doc["results"]] == OURS_NUMPY
    assert (tmp_path / "b.md").read_text() == out.stdout
    skipped = subprocess.run(
        [sys.executable, "benchmarks/run.py", "G1", "--repeats", "1", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert skipped.returncode == 0 and "G1: needs a GPU" in skipped.stdout


def test_a_failing_contender_is_reported_not_fatal(monkeypatch):
    from benchmarks import harness as benchmark

    real = benchmark.contenders

    def with_a_broken_one(include_gpu):
        chosen, skipped = real(include_gpu)

        def broken(X, init, iterations):
            raise RuntimeError("no such kernel")

        return [*chosen, benchmark.Contender("broken peer", broken)], skipped

    monkeypatch.setattr(benchmark, "contenders", with_a_broken_one)
    doc = run_benchmark(["blog"], iterations=2, repeats=1, include=("numpy]", "broken"))
    assert [r["contender"] for r in doc["results"]] == OURS_NUMPY
    assert any(
        "broken peer on blog: failed (RuntimeError: no such kernel)" in s for s in doc["skipped"]
    )


def test_a_whole_name_selects_that_contender_alone():
    """``--only kmeans-gpu[numpy]`` is that contender, not every name containing it."""
    doc = run_benchmark(["blog"], iterations=2, repeats=1, include=("kmeans-gpu[numpy]", "elkan"))
    assert [r["contender"] for r in doc["results"]] == ["kmeans-gpu[numpy]", "scikit-learn elkan"]


def test_kmeans_gpu_bench_needs_a_checkout(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "kmeans_gpu", "bench", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "clone of the repository" in out.stderr
