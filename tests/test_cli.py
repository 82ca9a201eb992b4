"""The kmeans-gpu command, run as a user would: in a subprocess."""

from __future__ import annotations

import re
import subprocess
import sys


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "kmeans_gpu", *args], capture_output=True, text=True, timeout=120
    )


def test_demo_clusters_the_seed_scene():
    out = run("demo", "--seed", "3", "--backend", "numpy")
    assert out.returncode == 0, out.stderr
    assert "clustered 1200 points of the seed's scene" in out.stdout
    assert "backend: numpy" in out.stdout
    assert re.search(r"iterations: \d+", out.stdout)
    assert re.search(r"inertia: [\d.]+", out.stdout)
    rows = re.findall(r"^\s+-?\d+\.\d{4}\s+-?\d+\.\d{4}\s+(\d+)$", out.stdout, re.M)
    assert len(rows) == 12 and sum(map(int, rows)) == 1200


def test_demo_is_reproducible_and_takes_options():
    a = run(
        "demo",
        "--seed",
        "5",
        "--k",
        "4",
        "--clusters",
        "3",
        "--points-per-cluster",
        "20",
        "--init",
        "k-means++",
    )
    b = run(
        "demo",
        "--seed",
        "5",
        "--k",
        "4",
        "--clusters",
        "3",
        "--points-per-cluster",
        "20",
        "--init",
        "k-means++",
    )
    assert a.returncode == 0, a.stderr
    strip = lambda text: re.sub(r"time: .*\n", "", text)  # noqa: E731
    assert strip(a.stdout) == strip(b.stdout)
    assert "into k=4" in a.stdout


def test_errors_are_one_line_exit_2():
    out = run("demo", "--k", "5000")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "k must be an integer in [1, 1200]" in out.stderr
    assert "Traceback" not in out.stderr
    bad = run("demo", "--backend", "tpu")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_help_everywhere():
    assert run("--help").returncode == 0
    assert "--points-per-cluster" in run("demo", "--help").stdout
    assert run().returncode == 2
