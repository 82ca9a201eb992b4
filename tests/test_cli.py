"""The kmeans-gpu command, run as a user would: in a subprocess."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

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


def test_demo_clusters_the_blog_post_scene():
    out = run("demo", "--seed", "3", "--backend", "numpy")
    assert out.returncode == 0, out.stderr
    assert "clustered 1200 points of the blog post's scene" in out.stdout
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
    assert (
        out.stderr == "kmeans-gpu demo: error: --k 5000 is more than the 1,200 generated points\n"
    )
    assert "Traceback" not in out.stderr
    bad = run("demo", "--backend", "tpu")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_help_everywhere():
    assert run("--help").returncode == 0
    assert "--iterations" in run("bench", "--help").stdout
    assert "--points-per-cluster" in run("demo", "--help").stdout
    assert run().returncode == 2


def test_animate_saves_the_blog_post_scene(tmp_path):
    import imageio_ffmpeg

    out = run("animate", "--seed", "1", "--save", str(tmp_path / "scene.mp4"))
    assert out.returncode == 0, out.stderr
    n = int(re.fullmatch(r"Saved (\d+) frames to (.+)\n", out.stdout).group(1))
    assert imageio_ffmpeg.count_frames_and_secs(str(tmp_path / "scene.mp4"))[0] == n > 2
    assert sorted(os.listdir(tmp_path)) == ["scene.mp4"]


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
    assert out.stdout == f"Saved {out.stdout.split()[1]} frames to {tmp_path / 'd.gif'}\n"


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
        "bad.csv, line 2: 'oops' is not a number": ["fit", str(tmp_path / "bad.csv"), "--k", "2"],
        "expected a 2-D array": ["fit", str(tmp_path / "cube.npy"), "--k", "2"],
        "objects.npy": ["fit", str(tmp_path / "objects.npy"), "--k", "2"],
        "must be .npy or .csv": ["fit", str(tmp_path / "x.txt"), "--k", "2"],
        "required: --k": ["fit", str(tmp_path / "cube.npy")],
        "argument --k: expected a positive integer": ["animate", "--k", "many"],
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


# -- the command line itself ------------------------------------------------------------


def test_version_and_verbose_anywhere():
    import kmeans_gpu

    out = run("--version")
    assert out.returncode == 0 and out.stdout == f"kmeans-gpu {kmeans_gpu.__version__}\n"
    args = ("--seed", "1", "--k", "3", "--clusters", "3", "--backend", "numpy")
    for argv in (("-v", "demo", *args), ("demo", *args, "-v"), ("demo", "--verbose", *args)):
        out = run(*argv)
        assert out.returncode == 0, out.stderr
        assert "INFO kmeans_gpu" in out.stderr, argv
    assert "INFO" not in run("demo", *args).stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("animate", "--fps", "0"), "argument --fps: expected a positive integer, got '0'"),
        (("animate", "--fps", "-1"), "argument --fps: expected a positive integer, got '-1'"),
        (("animate", "--dpi", "0"), "argument --dpi: expected a positive integer, got '0'"),
        (("animate", "--interval", "0"), "argument --interval: expected a positive integer"),
        (("animate", "--max-iter", "0"), "argument --max-iter: expected a positive integer"),
        (("animate", "--max-points", "-5"), "argument --max-points: expected a positive"),
        (("animate", "--ffmpeg-timeout", "0"), "argument --ffmpeg-timeout: expected a positive"),
        (("animate", "--palette", "rainbow"), "argument --palette: invalid choice: 'rainbow'"),
        (("animate", "--bounds", "0", "inf"), "argument --bounds: expected a finite number"),
        (("demo", "--k", "0"), "argument --k: expected a positive integer, got '0'"),
        (("demo", "--k", "many"), "argument --k: expected a positive integer, got 'many'"),
        (("demo", "--seed", "-1"), "argument --seed: expected an integer in [0, 4294967295]"),
        (("demo", "--seed", str(2**32)), "argument --seed: expected an integer in [0, "),
        (("demo", "--variance", "-0.1"), "argument --variance: expected a number >= 0"),
        (("demo", "--clusters", "0"), "argument --clusters: expected a positive integer"),
        (("fit", "x.npy", "--k", "2", "--tol", "nan"), "argument --tol: expected a number >= 0"),
        (("fit", "x.npy", "--k", "2", "--n-init", "0"), "argument --n-init: expected 'auto' or"),
        (("fit", "x.npy", "--k", "2", "--max-iter", "0"), "argument --max-iter: expected a"),
    ],
)
def test_values_are_checked_before_anything_runs(argv, message, tmp_path, monkeypatch, capsys):
    """Each bad value is one line naming its option, exit 2, in the parser."""
    from kmeans_gpu import cli

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        cli.main(list(argv))
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert message in err and err.count("\n") == 1, err
    assert os.listdir(tmp_path) == []


def _main(monkeypatch, tmp_path, *argv):
    """The command in this process, from ``tmp_path``; its exit code."""
    from kmeans_gpu import cli

    monkeypatch.chdir(tmp_path)
    return cli.main(list(argv))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("demo", "--bounds", "4", "-4"), "--bounds: LOW must be below HIGH, got 4 -4"),
        (("demo", "--k", "7", "--clusters", "2", "--points-per-cluster", "3"), "--k 7 is more"),
        (("animate", "--k", "9", "--data", "two.csv", "--save"), "--k 9 is more than the 2"),
        (("fit", "two.csv", "--k", "3"), "--k 3 is more than the 2 points in two.csv"),
    ],
)
def test_values_that_depend_on_others_are_one_line(argv, message, tmp_path, monkeypatch, capsys):
    (tmp_path / "two.csv").write_text("1,2\n3,4\n")
    assert _main(monkeypatch, tmp_path, *argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert sorted(os.listdir(tmp_path)) == ["two.csv"]


# -- reading data files -----------------------------------------------------------------

CSV_FILES = {
    # a UTF-8 byte-order mark is no header: all three rows are points
    "bom.csv": (b"\xef\xbb\xbf1,2\n3,4\n5,6\n", [[1, 2], [3, 4], [5, 6]]),
    "header.csv": (b"x,y\n1,2\n3,4\n", [[1, 2], [3, 4]]),
    "bom-header.csv": (b"\xef\xbb\xbfx,y\r\n1,2\r\n3,4\r\n", [[1, 2], [3, 4]]),
    "spaced.csv": (b"# made by hand\n\n 1 , 2\n3,4e0\n\n", [[1, 2], [3, 4]]),
    "one-column.csv": (b"1\n2\n3\n", [[1], [2], [3]]),
    "one-row.csv": (b"1.5,-2\n", [[1.5, -2]]),
}


@pytest.mark.parametrize("name", sorted(CSV_FILES))
def test_csv_rows_that_are_numbers_are_never_dropped(name, tmp_path):
    from kmeans_gpu.cli import load_points

    content, expected = CSV_FILES[name]
    (tmp_path / name).write_bytes(content)
    np.testing.assert_array_equal(load_points(tmp_path / name), expected)


BAD_FILES = {
    "bad.csv": (b"1,2\n3,oops\n", "bad.csv, line 2: 'oops' is not a number"),
    "late.csv": (b"x,y\n1,2\n\n5,six\n", "late.csv, line 4: 'six' is not a number"),
    "width.csv": (b"1,2\n3,4,5\n", "width.csv, line 2: 3 fields where the rows before have 2"),
    "empty-field.csv": (b"1,2\n3,\n", "empty-field.csv, line 2: an empty field"),
    "semicolons.csv": (
        b"1;2\n3;4\n",
        "semicolons.csv, line 1: '1;2' is not a number (fields are separated by commas)",
    ),
    "two-headers.csv": (b"x,y\nu,v\n1,2\n", "two-headers.csv, line 1: 'x' is not a number"),
    "only-header.csv": (b"x,y\n", "only-header.csv: no rows of numbers after the header"),
    "blank.csv": (b"\n\n", "blank.csv: no rows of numbers"),
    "latin1.csv": (b"x\xe9,y\n1,2\n", "latin1.csv: not UTF-8 text (byte 1 is 0xe9)"),
    "inf.csv": (b"1,2\n3,inf\n", "inf.csv: row 2, column 2 is inf; K-means needs finite"),
    "empty.npy": (b"", "empty.npy: the file is empty"),
    "text.npy": (b"1,2\n", "text.npy: not an .npy file"),
    "notes.txt": (b"1,2\n", "notes.txt: data files must be .npy or .csv"),
}


def _npy_bytes(array, **options):
    buffer = io.BytesIO()
    np.save(buffer, array, **options)
    return buffer.getvalue()


def _npz_bytes():
    buffer = io.BytesIO()
    np.savez(buffer, a=np.zeros((3, 2)))
    return buffer.getvalue()


BAD_FILES.update(
    {
        "archive.npy": (_npz_bytes(), "archive.npy: this is an .npz archive (several arrays)"),
        "objects.npy": (
            _npy_bytes(np.array([{"a": 1}], dtype=object), allow_pickle=True),
            "objects.npy: holds Python objects (a pickled object array), not numbers",
        ),
        "short.npy": (_npy_bytes(np.ones((4, 2)))[:-8], "short.npy: truncated or damaged"),
        "flat.npy": (_npy_bytes(np.ones(4)), "for one feature, save x.reshape(-1, 1)"),
        "cube.npy": (_npy_bytes(np.ones((2, 2, 2))), "expected a 2-D array of shape"),
        "strings.npy": (_npy_bytes(np.array([["a", "b"]])), "expected numbers, got dtype <U1"),
        "nan.npy": (_npy_bytes(np.array([[1.0, 2.0], [np.nan, 3.0]])), "row 2, column 1 is nan"),
    }
)


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_data_files_are_one_line_exit_2(name, tmp_path, monkeypatch, capsys):
    content, message = BAD_FILES[name]
    (tmp_path / name).write_bytes(content)
    assert _main(monkeypatch, tmp_path, "fit", name, "--k", "1") == 2
    err = capsys.readouterr().err
    assert err.startswith("kmeans-gpu fit: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert sorted(os.listdir(tmp_path)) == [name]


def test_float32_overflow_is_named(tmp_path, monkeypatch, capsys):
    np.save(tmp_path / "big.npy", np.array([[1e39, 1.0], [2.0, 3.0], [4.0, 5.0]]))
    argv = ("fit", "big.npy", "--k", "1", "--dtype", "float32")
    assert _main(monkeypatch, tmp_path, *argv) == 2
    assert capsys.readouterr().err == (
        "kmeans-gpu fit: error: big.npy: the data overflow float32 (max |x| = 1e+39); use "
        "--dtype float64\n"
    )
    assert _main(monkeypatch, tmp_path, "fit", "big.npy", "--k", "1", "--backend", "numpy") == 0


# -- fit's outputs ----------------------------------------------------------------------


@pytest.fixture
def blobs(tmp_path):
    rng = np.random.RandomState(0)
    X = np.concatenate([rng.normal(size=(30, 2)), rng.normal(size=(30, 2)) + 10])
    np.save(tmp_path / "x.npy", X)
    return tmp_path / "x.npy"


FIT = ("fit", "x.npy", "--k", "2", "--seed", "0", "--backend", "numpy")


def _old_outputs(directory):
    """Outputs of an earlier run, to see that a failed run leaves them as they were."""
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / "centroids.npy", np.full((2, 2), 7.0))
    np.save(directory / "labels.npy", np.full(60, 7))


def _unchanged(directory):
    return (np.load(directory / "centroids.npy") == 7).all() and (
        np.load(directory / "labels.npy") == 7
    ).all()


def test_fit_creates_out_and_never_follows_a_symlink(blobs, tmp_path, monkeypatch, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "new" / "deeper"
    out.mkdir(parents=True)
    (out / "labels.npy").symlink_to(victim)
    assert _main(monkeypatch, tmp_path, *FIT, "--out", "new/deeper") == 0
    assert victim.read_text() == "keep me"
    assert not (out / "labels.npy").is_symlink() and np.load(out / "labels.npy").shape == (60,)
    assert sorted(os.listdir(out)) == ["centroids.npy", "labels.npy"]
    assert capsys.readouterr().out.endswith(
        "Saved centroids to new/deeper/centroids.npy and labels to new/deeper/labels.npy\n"
    )
    assert _main(monkeypatch, tmp_path, *FIT, "--out", "fresh/a/b") == 0
    assert sorted(os.listdir(tmp_path / "fresh" / "a" / "b")) == ["centroids.npy", "labels.npy"]
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "labels.npy").stat().st_mode & 0o777 == 0o666 & ~umask


def test_fit_refuses_an_out_that_is_a_file(blobs, tmp_path, monkeypatch, capsys):
    (tmp_path / "taken").write_text("")
    for out in ("taken", "taken/sub", "x.npy"):
        assert _main(monkeypatch, tmp_path, *FIT, "--out", out) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "kmeans-gpu fit: error: --out taken: taken exists and is not a directory"
    assert err[1].endswith("--out taken/sub: taken exists and is not a directory")
    assert len(err) == 3 and sorted(os.listdir(tmp_path)) == ["taken", "x.npy"]


@pytest.mark.parametrize("failing", ["centroids", "labels"])
@pytest.mark.parametrize("how", ["errno", "numpy"])
def test_a_full_disk_leaves_the_old_outputs(blobs, tmp_path, monkeypatch, capsys, failing, how):
    """The write fails half-way, with ENOSPC or as NumPy's short write (no errno, a
    disk with less room than the array): exit 1, one line naming the file, the earlier
    outputs as they were and no temporary file; the directories it made are removed."""
    import errno
    import shutil

    _old_outputs(tmp_path / "out")
    real_save = np.save
    calls = []

    def full_disk(file, array, **options):
        calls.append(array.shape)
        if len(calls) == (1 if failing == "centroids" else 2):
            file.write(b"\x93NUMPY half")
            if how == "errno":
                raise OSError(errno.ENOSPC, "No space left on device")
            raise OSError("480 requested and 112 written")
        real_save(file, array, **options)

    monkeypatch.setattr(np, "save", full_disk)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=0))
    assert _main(monkeypatch, tmp_path, *FIT, "--out", "out") == 1
    assert capsys.readouterr().err == (
        f"kmeans-gpu fit: error: [Errno 28] cannot write out/{failing}.npy: No space left "
        "on device\n"
    )
    assert sorted(os.listdir(tmp_path / "out")) == ["centroids.npy", "labels.npy"]
    assert _unchanged(tmp_path / "out")
    calls.clear()
    assert _main(monkeypatch, tmp_path, *FIT, "--out", "made/here") == 1
    assert sorted(os.listdir(tmp_path)) == ["out", "x.npy"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_during_the_write_leaves_the_old_outputs(
    blobs, tmp_path, monkeypatch, capsys, signum
):
    if signal.getsignal(signum) is signal.SIG_IGN:
        pytest.skip(f"{signum.name} is ignored here (nohup), as the command then leaves it")
    before = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGHUP)}
    _old_outputs(tmp_path)
    real_save = np.save

    def interrupted(file, array, **options):
        file.write(b"\x93NUMPY half")
        os.kill(os.getpid(), signum)  # what `kill` or Ctrl-C does mid-write
        real_save(file, array, **options)

    monkeypatch.setattr(np, "save", interrupted)
    code = _main(monkeypatch, tmp_path, *FIT)
    err = capsys.readouterr().err
    expected = {
        signal.SIGTERM: (143, "kmeans-gpu fit: terminated (SIGTERM)\n"),
        signal.SIGHUP: (129, "kmeans-gpu fit: terminated (SIGHUP)\n"),
        signal.SIGINT: (130, "kmeans-gpu fit: interrupted\n"),
    }
    assert (code, err) == expected[signum]
    assert sorted(os.listdir(tmp_path)) == ["centroids.npy", "labels.npy", "x.npy"]
    assert _unchanged(tmp_path)
    assert {number: signal.getsignal(number) for number in before} == before


def test_a_signal_between_the_renames_waits_for_both(blobs, tmp_path, monkeypatch, capsys):
    """Both outputs are replaced or neither: SIGTERM during the renames is held."""
    from kmeans_gpu import cli

    _old_outputs(tmp_path)
    real_replace = os.replace

    def replace(source, target):
        if Path(target).name == "centroids.npy":
            os.kill(os.getpid(), signal.SIGTERM)
        real_replace(source, target)

    monkeypatch.setattr(cli.os, "replace", replace)
    assert _main(monkeypatch, tmp_path, *FIT) == 143
    assert np.load(tmp_path / "centroids.npy").shape == (2, 2)
    assert not (np.load(tmp_path / "labels.npy") == 7).any()
    assert sorted(os.listdir(tmp_path)) == ["centroids.npy", "labels.npy", "x.npy"]


def test_ctrl_c_during_a_fit_exits_130(tmp_path):
    """SIGINT to the process group (a terminal's Ctrl-C) while the solver runs."""
    rng = np.random.RandomState(1)
    np.save(tmp_path / "x.npy", rng.normal(size=(20_000, 2)))
    argv = ["fit", "x.npy", "--k", "64", "--tol", "0", "--max-iter", "100000"]
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kmeans_gpu", "-v", *argv, "--backend", "numpy"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        for line in proc.stderr:
            if "iteration 3:" in line:  # the solver is running
                break
        os.killpg(proc.pid, signal.SIGINT)
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    assert err.splitlines()[-1] == "kmeans-gpu fit: interrupted" and "Traceback" not in err
    assert os.listdir(tmp_path) == ["x.npy"]


class _Bar:
    """A stand-in for a tqdm bar: what the command asked of it."""

    def __init__(self):
        self.n, self.descriptions, self.closed = 0, [], False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.closed = True

    def update(self, n):
        self.n += n

    def set_postfix_str(self, text, refresh=True):
        self.postfix = text

    def set_description_str(self, text, refresh=True):
        self.descriptions.append(text)


def test_a_long_fit_shows_progress_on_a_terminal(blobs, tmp_path, monkeypatch, capsys):
    """On a terminal, the solver's per-iteration records move a bar (and are not
    printed); the logger is left as it was."""
    import logging

    from kmeans_gpu import cli

    bars = []

    def progress_bar(description, unit, total=None):
        bars.append(_Bar())
        bars[-1].descriptions.append(description)
        return bars[-1]

    monkeypatch.setattr(cli, "_progress_bar", progress_bar)
    solver = logging.getLogger("kmeans_gpu")
    level, filters = solver.level, list(solver.filters)
    argv = (*FIT, "--init", "random", "--n-init", "3", "--max-iter", "5", "--tol", "0")
    assert _main(monkeypatch, tmp_path, *argv) == 0
    out, err = capsys.readouterr()
    (bar,) = bars
    assert bar.closed and 3 <= bar.n <= 15
    assert bar.descriptions == ["fitting (run 1/3)", "fitting (run 2/3)", "fitting (run 3/3)"]
    assert "iteration 1:" not in err and "iteration 1:" not in out
    assert (solver.level, solver.filters) == (level, filters)


def test_iteration_progress_counts_the_solver_records():
    import logging

    from kmeans_gpu.cli import IterationProgress

    bar = _Bar()
    progress = IterationProgress(bar, show=False)
    record = logging.LogRecord(
        "kmeans_gpu",
        logging.INFO,
        __file__,
        1,
        "iteration %d: %d labels changed, centre shift %.6g (tolerance %.6g)",
        (1, 10, 0.5, 1e-4),
        None,
    )
    assert progress.filter(record) is False and bar.n == 1 and bar.postfix == "centre shift 0.5"
    other = logging.LogRecord("kmeans_gpu", logging.WARNING, __file__, 1, "other", (), None)
    assert progress.filter(other) is True and bar.n == 1
    assert IterationProgress(None, show=True).filter(record) is True


@pytest.mark.parametrize("palette", ["hsv", "colorblind"])
def test_animate_draws_in_the_palette_asked_for(palette, tmp_path, monkeypatch, capsys):
    """The file's pixels hold the palette's colours; the title names k, n and the
    backend."""
    from PIL import Image

    import viz

    saves = []
    real_save = viz.save

    def spy(*args, **options):
        saves.append(options)
        return real_save(*args, **options)

    monkeypatch.setattr(viz, "save", spy)
    argv = ("animate", "--seed", "1", "--k", "8", "--clusters", "8", "--points-per-cluster")
    argv += ("30", "--max-iter", "2", "--dpi", "40", "--backend", "numpy")
    assert _main(monkeypatch, tmp_path, *argv, "--palette", palette, "--save", "p.gif") == 0
    assert saves[0]["title"] == "K-means: k = 8, n = 240 (numpy)"
    pixels = np.asarray(Image.open(tmp_path / "p.gif").convert("RGB")).reshape(-1, 3)

    def count(rgb):
        return int((np.abs(pixels.astype(int) - rgb).sum(axis=1) < 30).sum())

    okabe_orange, hsv_red = (230, 159, 0), (204, 41, 41)  # the first colour of each
    if palette == "hsv":
        assert count(hsv_red) > 20 and count(okabe_orange) == 0
    else:
        assert count(okabe_orange) > 20 and count(hsv_red) == 0


def test_every_command_runs_on_the_cupy_backend(tmp_path, monkeypatch, capsys):
    """demo, fit and animate --save with --backend cupy, on the host stand-in for CuPy
    (tests/fake_cupy.py): results come to the host through the backend, and the
    animation is computed (and titled) on CuPy."""
    import viz
    from tests import fake_cupy

    titles = []
    real_save = viz.save

    def spy(*args, **options):
        titles.append(options["title"])
        return real_save(*args, **options)

    monkeypatch.setattr(viz, "save", spy)
    with fake_cupy.stand_in(monkeypatch):
        np.save(tmp_path / "x.npy", np.random.RandomState(0).normal(size=(100, 2)))
        scene = ("--seed", "1", "--k", "3", "--clusters", "3", "--backend", "cupy")
        assert _main(monkeypatch, tmp_path, "demo", *scene) == 0
        assert _main(monkeypatch, tmp_path, "fit", "x.npy", "--k", "3", "--backend", "cupy") == 0
        argv = ("animate", *scene, "--init", "k-means++", "--dpi", "30", "--save", "a.gif")
        assert _main(monkeypatch, tmp_path, *argv) == 0
    out = capsys.readouterr().out
    assert out.count("backend: cupy") == 2 and re.search(r"Saved \d+ frames to a\.gif\n$", out)
    assert titles == ["K-means: k = 3, n = 300 (cupy)"]
    assert np.load(tmp_path / "labels.npy").shape == (100,)
