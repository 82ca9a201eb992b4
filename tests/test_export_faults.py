"""Saving an mp4 when ffmpeg misbehaves, and when the command is interrupted.

Each fake ffmpeg is a small shell script given through ``KMEANS_GPU_FFMPEG``: one that
fails, one that takes no frame, one that never finishes, one that writes garbage, one
that is no program at all. The command is also interrupted as a terminal (SIGINT to
the process group) or a service manager (SIGTERM) would. Whatever happens, nothing is
left beside the target, ffmpeg (and what it started) is stopped, and the command says
so in one line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest

import kmeans_gpu as kg
import viz

pytestmark = pytest.mark.skipif(not hasattr(os, "killpg"), reason="POSIX process groups")

ROOT = str(Path(__file__).resolve().parents[1])
SMALL_SCENE = ("--seed", "1", "--k", "4", "--clusters", "4", "--points-per-cluster", "15")
#: frames of 320x240 RGBA (300 KiB) fill a pipe's buffer: a write blocks until read
DPI = 50

FAKES = {
    "fails": 'echo "[out#0/mp4] Error opening output: No space left on device" >&2\nexit 1\n',
    # takes no frame; its child holds the pipe open too, so only the group's end frees it
    "takes-no-frame": 'sleep 600 &\necho $! > "$FAKE_PIDS"\nwait\n',
    "never-finishes": 'cat > /dev/null\nsleep 600 &\necho $! > "$FAKE_PIDS"\nwait\n',
    "garbage": 'cat > /dev/null\nfor last; do :; done\necho "not a video" > "$last"\n',
    "quits-early": "exit 0\n",
}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def fake_ffmpeg(tmp_path, monkeypatch):
    """``fake_ffmpeg(name)``: the path of that fake, made the ffmpeg to use. Fakes that
    start a child write its pid to ``$FAKE_PIDS``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("FAKE_PIDS", str(bin_dir / "pids"))

    def make(name: str) -> Path:
        path = bin_dir / name
        path.write_text("#!/bin/sh\n" + FAKES[name])
        path.chmod(0o755)
        monkeypatch.setenv("KMEANS_GPU_FFMPEG", str(path))
        return path

    return make


@pytest.fixture
def frames():
    points = kg.generate_clusters(4, 15, 0.02, random_state=1)
    return points, list(kg.iter_frames(points, points[:4], max_iter=3))


def _gone(pid: int) -> bool:
    """Whether a process ended (a zombie nobody reaps counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return state in ("Z", "X")


def _wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not _gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _out(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return out


@pytest.mark.parametrize(
    ("fake", "message"),
    [
        ("fails", r"failed with exit status 1: \[out#0/mp4\] Error opening output: No space"),
        ("takes-no-frame", r"took no frame for 1 s: stopped it$"),
        ("never-finishes", r"had not finished 1 s after the last frame: stopped it$"),
        ("garbage", r"exited normally but did not write an mp4 \(12 bytes that are not one\)"),
        ("quits-early", r"exited before it took every frame$"),
    ],
)
def test_a_misbehaving_ffmpeg_is_one_line_and_leaves_nothing(
    fake, message, fake_ffmpeg, frames, tmp_path
):
    points, run = frames
    program = fake_ffmpeg(fake)
    began = time.monotonic()
    with pytest.raises(viz.FFmpegError, match=message) as info:
        viz.save(run, _out(tmp_path) / "x.mp4", points=points, dpi=DPI, timeout=1)
    assert time.monotonic() - began < 20
    assert str(info.value).startswith(f"ffmpeg ({program}) ") and "\n" not in str(info.value)
    assert os.listdir(tmp_path / "out") == []
    pids = tmp_path / "bin" / "pids"
    if pids.exists():  # the fake's child was stopped with it
        assert _wait_gone(int(pids.read_text()))


def test_an_ffmpeg_that_is_no_program(tmp_path, monkeypatch, frames):
    points, run = frames
    broken = tmp_path / "ffmpeg"
    broken.write_bytes(b"\x7fELF not really")
    broken.chmod(0o755)
    monkeypatch.setenv("KMEANS_GPU_FFMPEG", str(broken))
    with pytest.raises(viz.FFmpegError, match=rf"cannot run ffmpeg \({broken}\): Exec format"):
        viz.save(run, _out(tmp_path) / "x.mp4", points=points, dpi=DPI)
    assert os.listdir(tmp_path / "out") == []


def _command(tmp_path: Path, *args: str, env: dict[str, str] | None = None):
    """``kmeans-gpu animate --save`` in its own process session (a terminal's foreground
    job), rendering a few small frames."""
    return subprocess.Popen(
        [sys.executable, "-m", "kmeans_gpu", "animate", *SMALL_SCENE, "--dpi", str(DPI), *args],
        cwd=_out(tmp_path),
        env={**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": ROOT, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the fake ffmpeg did not start"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("signum", "code", "line"),
    [
        (signal.SIGINT, 130, "kmeans-gpu animate: interrupted"),
        (signal.SIGTERM, 143, "kmeans-gpu animate: terminated (SIGTERM)"),
    ],
)
def test_a_signal_during_a_render_stops_ffmpeg_and_leaves_nothing(
    signum, code, line, fake_ffmpeg, tmp_path
):
    """SIGINT to the process group, as Ctrl-C at a terminal sends it, or SIGTERM, while
    ffmpeg takes no frame: one line, the exit code, no partial file, ffmpeg stopped.
    ffmpeg runs in a group of its own, so the terminal's Ctrl-C reaches Python alone."""
    fake_ffmpeg("takes-no-frame")
    proc = _command(tmp_path, "--save", "x.mp4")
    try:
        _wait_for(tmp_path / "bin" / "pids", proc)
        child = int((tmp_path / "bin" / "pids").read_text())
        assert os.getpgid(child) != os.getpgid(proc.pid)
        (partial,) = (tmp_path / "out").iterdir()
        assert partial.name.startswith(".x.") and partial.name.endswith(".partial.mp4")
        os.killpg(proc.pid, signum)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (proc.returncode, err, out) == (code, f"{line}\n", "")
    assert os.listdir(tmp_path / "out") == []
    assert _wait_gone(child)


def test_a_hung_ffmpeg_ends_the_command_with_one_line(fake_ffmpeg, tmp_path):
    program = fake_ffmpeg("takes-no-frame")
    proc = _command(tmp_path, "--save", "--ffmpeg-timeout", "1")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and out == ""
    assert (
        err == f"kmeans-gpu animate: error: ffmpeg ({program}) took no frame for 1 s: stopped it\n"
    )
    assert os.listdir(tmp_path / "out") == []  # nor the default name it had taken
    assert _wait_gone(int((tmp_path / "bin" / "pids").read_text()))
