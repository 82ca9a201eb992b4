"""The kmeans-gpu command, run as a user would: in a subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])


def run(*args, cwd=None, path=()):
    """The command in a subprocess with no display (Agg), from this checkout (after the
    folders ``path``, first on the module search path)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    return subprocess.run(
        [sys.executable, "-m", "kmeans_gpu", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "MPLBACKEND": "Agg", "PYTHONPATH": os.pathsep.join([*path, ROOT])},
        cwd=cwd,
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
    args = ("demo", "--seed", "5", "--k", "4", "--clusters", "3")
    args += ("--points-per-cluster", "20", "--init", "k-means++")
    a, b = run(*args), run(*args)
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
    assert "--iterations" in run("bench", "--help").stdout
    assert "--points-per-cluster" in run("demo", "--help").stdout
    assert run().returncode == 2


def test_animate_saves_the_seed_scene(tmp_path):
    import imageio_ffmpeg

    out = run("animate", "--seed", "1", "--save", str(tmp_path / "seed.mp4"))
    assert out.returncode == 0, out.stderr
    n = int(re.fullmatch(r"wrote (\d+) frames to (.+)\n", out.stdout).group(1))
    assert imageio_ffmpeg.count_frames_and_secs(str(tmp_path / "seed.mp4"))[0] == n > 2
    assert sorted(os.listdir(tmp_path)) == ["seed.mp4"]


def test_animate_default_name_gif_and_data(tmp_path):
    out = run("animate", "--seed", "2", "--save", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    (name,) = os.listdir(tmp_path)
    assert re.fullmatch(r"\d{14}_KMeans2D\.mp4", name) and name in out.stdout
    data = tmp_path / "points.csv"
    data.write_text("x,y,z\n" + "\n".join(f"{i % 7},{i % 5},{i % 3}" for i in range(200)))
    out = run(
        "animate",
        "--data",
        str(data),
        "--k",
        "3",
        "--seed",
        "0",
        "--max-points",
        "50",
        "--save",
        str(tmp_path / "d.gif"),
    )
    assert out.returncode == 0, out.stderr
    from PIL import Image

    assert Image.open(tmp_path / "d.gif").n_frames == int(out.stdout.split()[1])


def test_animate_without_display_says_use_save(tmp_path):
    out = run("animate", cwd=tmp_path)
    assert out.returncode == 2 and "--save" in out.stderr and out.stderr.count("\n") == 1
    assert os.listdir(tmp_path) == []


def test_fit_writes_centroids_and_labels(tmp_path):
    import numpy as np

    rng = np.random.RandomState(0)
    X = np.concatenate([rng.normal(size=(50, 3)), rng.normal(size=(50, 3)) + 10])
    np.save(tmp_path / "x.npy", X)
    out = run(
        "fit",
        str(tmp_path / "x.npy"),
        "--k",
        "2",
        "--out",
        str(tmp_path),
        "--seed",
        "0",
        "--backend",
        "numpy",
    )
    assert out.returncode == 0, out.stderr
    for field in ("iterations:", "inertia:", "backend: numpy", "time:"):
        assert field in out.stdout
    centroids = np.load(tmp_path / "centroids.npy")
    labels = np.load(tmp_path / "labels.npy")
    assert centroids.shape == (2, 3) and labels.shape == (100,)
    assert len(set(labels[:50])) == 1 and len(set(labels[50:])) == 1
    np.savetxt(tmp_path / "x.csv", X, delimiter=",")
    out = run("fit", str(tmp_path / "x.csv"), "--k", "2", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr


def test_fit_takes_dtype_and_deterministic(tmp_path):
    """--dtype float32 computes in float32; --deterministic is accepted everywhere."""
    import numpy as np

    rng = np.random.RandomState(1)
    X = np.concatenate([rng.normal(size=(40, 2)), rng.normal(size=(40, 2)) + 8])
    np.savetxt(tmp_path / "x.csv", X, delimiter=",")
    args = ("fit", str(tmp_path / "x.csv"), "--k", "2", "--out", str(tmp_path), "--seed", "0")
    out = run(*args, "--dtype", "float32", "--deterministic")
    assert out.returncode == 0, out.stderr
    labels = np.load(tmp_path / "labels.npy")
    assert len(set(labels[:40])) == 1 and len(set(labels[40:])) == 1
    assert np.load(tmp_path / "centroids.npy").dtype == np.float32
    out = run(*args, "--dtype", "float16")
    assert out.returncode == 2 and "invalid choice: 'float16'" in out.stderr


def test_fit_errors_are_one_line(tmp_path):
    import numpy as np

    (tmp_path / "bad.csv").write_text("1,2\n3,oops\n")
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2)))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "x.txt").write_text("1,2\n")
    cases = {
        "no such data file": ["fit", str(tmp_path / "missing.npy"), "--k", "2"],
        "cannot read it": ["fit", str(tmp_path / "bad.csv"), "--k", "2"],
        "expected a 2-D array": ["fit", str(tmp_path / "cube.npy"), "--k", "2"],
        "objects.npy": ["fit", str(tmp_path / "objects.npy"), "--k", "2"],
        "must be .npy or .csv": ["fit", str(tmp_path / "x.txt"), "--k", "2"],
        "required: --k": ["fit", str(tmp_path / "cube.npy")],
        "invalid int value": ["animate", "--k", "many"],
    }
    for expected, args in cases.items():
        out = run(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert expected in out.stderr and out.stderr.count("\n") == 1, out.stderr
        assert "Traceback" not in out.stderr


def test_without_matplotlib_animate_says_which_extra_to_install(tmp_path):
    """A plain ``pip install .`` has no matplotlib: ``viz`` and ``animate`` say to
    install the ``viz`` extra (matplotlib hidden from the subprocess)."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\n"
        "class _Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'matplotlib':\n"
        "            raise ImportError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, _Hide())\n"
    )
    out = run("animate", "--save", str(tmp_path / "a.mp4"), path=[str(tmp_path)])
    assert out.returncode == 2
    assert 'pip install "kmeans-gpu[viz]"' in out.stderr
    assert not (tmp_path / "a.mp4").exists()
    demo = run("demo", "--backend", "numpy", path=[str(tmp_path)])
    assert demo.returncode == 0, demo.stderr  # the solver needs no matplotlib
