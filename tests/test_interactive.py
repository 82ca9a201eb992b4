"""The interactive window and the blog post's terminal menu.

Headless (Agg): the session's loop, menu, Ctrl-C, failures, saving, layout, and the
command's exit codes. Under a virtual X display (Xvfb; skipped without it, xdotool or
tkinter): ``kmeans-gpu animate`` itself on TkAgg, driven as a person would, with keys
and clicks through XTEST and the window manager's close message.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

import viz
from kmeans_gpu import cli
from viz import _interactive

imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")

ROOT = str(Path(__file__).resolve().parents[1])
SMALL_SCENE = {"num_clusters": 4, "pts_per_cluster": 25}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _session(tmp_path, **options):
    options = {
        "k": 4,
        "random_state": 0,
        "save_dir": str(tmp_path),
        "scene": SMALL_SCENE,
        "out": io.StringIO(),
        "err": io.StringIO(),
        **options,
    }
    return viz.InteractiveSession(**options)


def _mp4s(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.mp4"))


# -- the session, headless --------------------------------------------------------------


def test_a_random_state_is_used_as_given(tmp_path):
    """The command passes its RandomState; it was wrapped again, which raised."""
    rng = np.random.RandomState(3)
    session = _session(tmp_path, random_state=rng)
    assert session.rng is rng
    again = _session(tmp_path, random_state=np.random.RandomState(3))
    np.testing.assert_array_equal(again.points, session.points)
    generator = _session(tmp_path, random_state=np.random.default_rng(1))
    assert len(generator.frames) > 1


def test_the_window_holds_the_last_frame(tmp_path, monkeypatch):
    session = _session(tmp_path, interval=100, hold=2.5)
    n = len(session.frames)
    shown = []

    def on_call(call):  # one timer tick per slice of the event loop
        if call <= n + 30:
            session._tick(None)
            shown.append((session.frame.iteration, session.status.get_text()))
        else:
            session.perform("close")

    _loop_calls(session, monkeypatch, on_call)
    session.run()
    assert session.frames[-1].converged
    # frames 1 … n-1 a tick each, the converged one 25 ticks (2.5 s), then 0 again
    assert shown[: n - 2] == [(i, "") for i in range(1, n - 1)]
    assert shown[n - 2 : n + 23] == [(n - 1, "converged")] * 25
    assert shown[n + 23 : n + 25] == [(0, ""), (1, "")]


def test_the_paused_state_shows(tmp_path):
    session = _session(tmp_path)
    title = session.figure.canvas.manager.get_window_title()
    assert title == "kmeans-gpu: K-means, k = 4"
    session.toggle_pause()
    assert session.status.get_text() == "paused: space resumes, n steps"
    labels = [b.label.get_text() for b in session.buttons]
    assert "Resume (space)" in labels and "Pause (space)" not in labels
    assert session.figure.canvas.manager.get_window_title() == f"{title} (paused)"
    session._tick(None)  # a timer tick while paused moves nothing
    assert session.frame.iteration == 0
    session.step()
    assert session.frame.iteration == 1 and session.paused
    session.toggle_pause()
    assert session.status.get_text() == ""
    assert "Pause (space)" in [b.label.get_text() for b in session.buttons]
    assert session.figure.canvas.manager.get_window_title() == title


def _inside(inner, outer, slack=0.5):
    return (
        inner.x0 >= outer.x0 - slack
        and inner.y0 >= outer.y0 - slack
        and inner.x1 <= outer.x1 + slack
        and inner.y1 <= outer.y1 + slack
    )


@pytest.mark.parametrize("size", [(8, 7), (6, 5.2), (4, 3.5)])
@pytest.mark.parametrize("view", ["2-D", "PCA with inertia"])
def test_nothing_is_cut_at_any_window_size(tmp_path, rng, size, view):
    """Button labels inside their buttons, the axes' labels and title inside the
    window, at the default size, at 600×520 and at a small one."""
    options = {"inertia_inset": True, "data": rng.normal(size=(200, 4)) * [4, 2, 1, 1]}
    session = _session(tmp_path, **(options if view != "2-D" else {}))
    fig = session.figure
    fig.set_size_inches(*size)
    session.layout()
    for paused in (False, True):
        if session.paused != paused:
            session.toggle_pause()
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for button in session.buttons:
            label = button.label.get_window_extent(renderer)
            assert _inside(label, button.ax.get_window_extent(renderer)), button.label.get_text()
            assert button.label.get_fontsize() >= _interactive.BUTTON_FONT_MIN_PT
        assert _inside(session.ax.get_tightbbox(renderer), fig.bbox)
        assert session.ax.get_window_extent(renderer).y0 > max(
            b.ax.get_window_extent(renderer).y1 for b in session.buttons
        )
    if view != "2-D":
        assert session.ax.yaxis.label.get_text().startswith("PC 2")
        (inset,) = session.ax.child_axes
        assert inset.get_title() == ""
        ticks = [t for t in inset.get_xticks() if 0 <= t <= len(session.frames)]
        assert ticks and all(float(t).is_integer() for t in ticks)
        assert _inside(inset.get_tightbbox(renderer), session.ax.get_window_extent(renderer))


def test_labels_go_on_two_lines_in_a_narrow_window(tmp_path):
    session = _session(tmp_path)
    session.figure.set_size_inches(8, 7)
    session.layout()
    assert all("\n" not in b.label.get_text() for b in session.buttons)
    session.figure.set_size_inches(6, 5.2)
    session.layout()
    assert session.buttons[1].label.get_text() == "New centroids\n(2)"
    assert session.buttons[1].label.get_fontsize() >= 8  # on one line: 7.4


def test_saves_in_one_second_get_numbered_names(tmp_path, monkeypatch):
    class FrozenClock(datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 1, 2, 3, 4, 5)

    monkeypatch.setattr(viz._export, "datetime", FrozenClock)
    session = _session(tmp_path)
    for _ in range(7):
        session.perform("save")
    stem = "20260102030405_KMeans2D"
    names = [p.name for p in _mp4s(tmp_path)]
    assert names == sorted([f"{stem}.mp4"] + [f"{stem}_{i}.mp4" for i in range(1, 7)])
    lines = session.out.getvalue().splitlines()
    assert lines[0] == f"Saved {len(session.frames)} frames to {tmp_path / (stem + '.mp4')}"
    assert lines[6].endswith(f"{stem}_6.mp4") and len(lines) == 7


def test_names_are_reserved_atomically_across_threads(tmp_path):
    now = datetime(2026, 5, 6, 7, 8, 9)
    barrier = threading.Barrier(8)
    taken = []

    def reserve():
        barrier.wait()
        taken.append(viz._export.reserve_default_path(tmp_path, now))

    threads = [threading.Thread(target=reserve) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(taken)) == 8 and len(_mp4s(tmp_path)) == 8


def test_a_failed_save_leaves_no_file_and_keeps_the_window(tmp_path, monkeypatch):
    monkeypatch.setenv("KMEANS_GPU_FFMPEG", "/bin/false")
    session = _session(tmp_path)
    assert session.perform("save") is None
    message = session.err.getvalue()
    assert message.startswith("Save failed: ffmpeg (/bin/false) failed with exit status 1")
    assert message.count("\n") == 1 and session.out.getvalue() == ""
    assert not session.closed and session.failure is None
    assert sorted(os.listdir(tmp_path)) == []


def test_the_plot_says_what_it_shows(tmp_path, monkeypatch):
    """The title names k, n and the backend; the palette reaches the plot and the
    saved file (through the same title and palette)."""
    session = _session(tmp_path, palette="colorblind", backend="numpy", ffmpeg_timeout=5)
    assert session.ax.get_title() == "K-means: k = 4, n = 100 (numpy)"
    assert (session.ax.get_xlabel(), session.ax.get_ylabel()) == ("x", "y")
    colour = matplotlib.colors.to_rgb(session.renderer.cluster_lines[0].get_color())
    assert colour == matplotlib.colors.to_rgb(viz._render.OKABE_ITO[0])
    asked = []
    monkeypatch.setattr(_interactive, "save", lambda *args, **options: asked.append(options))
    session.save()
    assert asked[0]["palette"] == "colorblind" and asked[0]["timeout"] == 5
    assert asked[0]["title"] == "K-means: k = 4, n = 100 (numpy)"
    with pytest.raises(ValueError, match="palette must be one of"):
        _session(tmp_path, palette="jet")


def test_window_saves_honour_dpi_and_fps(tmp_path):
    session = _session(tmp_path, dpi=50, fps=4)
    saved = session.perform("save")
    reader = imageio_ffmpeg.read_frames(str(saved.path))
    meta = next(reader)
    assert meta["size"] == (320, 240) and meta["fps"] == 4
    assert imageio_ffmpeg.count_frames_and_secs(str(saved.path))[0] == len(session.frames)


def test_a_bug_in_an_action_is_kept_and_raised_by_run(tmp_path, monkeypatch):
    session = _session(tmp_path)

    def broken():
        raise AttributeError("'NoneType' object has no attribute 'stop'")

    monkeypatch.setattr(session, "new_centroids", broken)
    viz_key = matplotlib.backend_bases.KeyEvent("key_press_event", session.figure.canvas, "2")
    viz_key._process()  # what the window does on the key: nothing raised into the GUI
    assert isinstance(session.failure, AttributeError)
    with pytest.raises(AttributeError, match="no attribute 'stop'"):
        session.run()
    assert session.closed


def _loop_calls(session, monkeypatch, on_call):
    """Run ``on_call(n)`` at each slice of the event loop (as the GUI would run
    callbacks); returns the call count."""
    calls = []

    def start_event_loop(timeout=0):
        calls.append(timeout)
        assert len(calls) < 200, "the loop did not end"
        on_call(len(calls))

    monkeypatch.setattr(session.figure.canvas, "start_event_loop", start_event_loop)
    return calls


def test_menu_and_window_together(tmp_path, monkeypatch):
    session = _session(tmp_path)
    first = session.frames
    _loop_calls(session, monkeypatch, lambda n: None)
    out = io.StringIO()
    session.out = out
    session.run(menu=True, stdin=io.StringIO("2\nx\n3\n1\n4\n"))
    text = out.getvalue()
    assert text.startswith(_interactive.MENU)
    assert "Randomizing centroids..." in text and "Invalid selection." in text
    assert "Randomizing clusters and centroids..." in text
    assert re.search(r"^Saved \d+ frames to .+_KMeans2D\.mp4$", text, re.M)
    assert text.count("(4) Exit") == 5 and "window was closed" not in text
    assert session.closed and session.frames is not first and len(_mp4s(tmp_path)) == 1


def test_the_end_of_the_input_ends_the_menu(tmp_path, monkeypatch):
    session = _session(tmp_path)
    _loop_calls(session, monkeypatch, lambda n: None)
    session.run(menu=True, stdin=io.StringIO("2\n"))
    assert session.closed


def test_closing_the_window_ends_the_menu(tmp_path, monkeypatch):
    session = _session(tmp_path)
    read, write = os.pipe()  # a terminal on which nothing is typed
    calls = _loop_calls(session, monkeypatch, lambda n: n == 3 and plt.close(session.figure))
    try:
        with os.fdopen(read) as stdin:
            session.run(menu=True, stdin=stdin)
    finally:
        os.close(write)
    assert session.closed and len(calls) == 3
    assert session.out.getvalue().endswith("\nThe window was closed: exiting.\n")


def test_the_exit_button_ends_the_menu(tmp_path, monkeypatch):
    session = _session(tmp_path)
    read, write = os.pipe()
    _loop_calls(session, monkeypatch, lambda n: n == 2 and session.perform("close"))
    try:
        with os.fdopen(read) as stdin:
            session.run(menu=True, stdin=stdin)
    finally:
        os.close(write)
    assert session.closed and "window was closed" in session.out.getvalue()


def test_the_first_ctrl_c_ends_the_run(tmp_path, monkeypatch):
    """SIGINT during a GUI callback sets a flag instead of raising in it; the loop then
    ends, closes the window and raises KeyboardInterrupt once."""
    session = _session(tmp_path)
    before = signal.getsignal(signal.SIGINT)
    in_callback = []

    def callback(n):
        os.kill(os.getpid(), signal.SIGINT)
        in_callback.append(n)  # still running: nothing was raised into the callback

    _loop_calls(session, monkeypatch, callback)
    with pytest.raises(KeyboardInterrupt):
        session.run(menu=True, stdin=io.StringIO(""))
    assert in_callback == [1] and session.interrupted and session.closed
    assert signal.getsignal(signal.SIGINT) is before


def test_ctrl_c_stops_a_save_at_once(tmp_path, monkeypatch):
    session = _session(tmp_path)
    original = matplotlib.animation.FFMpegWriter.grab_frame
    frames = []

    def grab_frame(self, **kwargs):
        frames.append(1)
        if len(frames) == 2:  # Ctrl-C in the middle of the file
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, **kwargs)

    monkeypatch.setattr(matplotlib.animation.FFMpegWriter, "grab_frame", grab_frame)
    _loop_calls(session, monkeypatch, lambda n: n == 1 and session.perform("save"))
    with pytest.raises(KeyboardInterrupt):
        session.run()
    assert len(frames) == 2 < len(session.frames)  # it stopped at once
    assert os.listdir(tmp_path) == []
    assert (
        session.out.getvalue() == "Keys (or the buttons): 1 new data, 2 new centroids, "
        "3 save, space pause, n step, 4 exit\n"
    )


def test_ctrl_c_outside_run_propagates(tmp_path, monkeypatch):
    session = _session(tmp_path)

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(session, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        session.perform("save")
    with pytest.raises(KeyboardInterrupt):
        viz.run_menu(session, read=lambda prompt: "3", out=io.StringIO())


def test_run_menu_alone(tmp_path):
    session = _session(tmp_path)
    answers = iter(["3", "2"])

    def read(prompt):
        try:
            return next(answers)
        except StopIteration:
            raise EOFError from None

    out = io.StringIO()
    viz.run_menu(session, read=read, out=out)
    assert session.closed and "Saved" in out.getvalue() and len(_mp4s(tmp_path)) == 1


# -- the command's interactive path and exit codes, in this process ---------------------


def _main(monkeypatch, tmp_path, *argv):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "has_display", lambda: True)
    return cli.main(list(argv))


def test_the_command_runs_the_window_and_menu(tmp_path, monkeypatch, capsys):
    """``animate --menu`` end to end on Agg, with the menu typed on stdin: the session
    is built from the options (the RandomState, --dpi, --fps) and runs."""
    monkeypatch.setattr(cli, "_has_window", lambda fig: True)
    monkeypatch.setattr(sys, "stdin", io.StringIO("2\n3\n4\n"))
    argv = ("animate", "--menu", "--seed", "4", "--k", "3", "--clusters", "3")
    code = _main(monkeypatch, tmp_path, *argv, "--dpi", "40", "--fps", "3")
    out, err = capsys.readouterr()
    assert code == 0, err
    (saved,) = _mp4s(tmp_path)
    n = int(re.search(r"^Saved (\d+) frames to (.+)$", out, re.M).group(1))
    assert imageio_ffmpeg.count_frames_and_secs(str(saved))[0] == n
    meta = next(imageio_ffmpeg.read_frames(str(saved)))
    assert meta["size"] == (256, 192) and meta["fps"] == 3


def test_without_an_interactive_backend_the_command_says_so(tmp_path, monkeypatch, capsys):
    assert _main(monkeypatch, tmp_path, "animate", "--seed", "1") == 2
    err = capsys.readouterr().err
    assert "no interactive backend" in err and "--save" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "error", [TypeError, AttributeError, KeyError, NotImplementedError, RecursionError]
)
def test_an_internal_error_is_not_a_usage_error(tmp_path, monkeypatch, capsys, error):
    def broken(*args, **kwargs):
        raise error("Cannot cast scalar from dtype('O') to dtype('int64')")

    monkeypatch.setattr(cli, "_scene", broken)
    code = _main(monkeypatch, tmp_path, "animate", "--seed", "1", "--save", "x.mp4")
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback (most recent call last)" in err and "in broken\n    raise error" in err
    assert err.splitlines()[-1].startswith(f"kmeans-gpu animate: internal error: {error.__name__}")


def test_a_failing_ffmpeg_is_a_runtime_failure(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KMEANS_GPU_FFMPEG", "/bin/false")
    code = _main(monkeypatch, tmp_path, "animate", "--seed", "1", "--save")
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith("kmeans-gpu animate: error: ffmpeg (/bin/false) failed")
    assert os.listdir(tmp_path) == []


def test_a_full_disk_is_a_runtime_failure(tmp_path, monkeypatch, capsys):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(viz._export, "atomic_path", full)
    code = _main(monkeypatch, tmp_path, "animate", "--seed", "1", "--save", "a.gif")
    err = capsys.readouterr().err
    assert code == 1 and err == "kmeans-gpu animate: error: [Errno 28] No space left on device\n"


def test_usage_errors_stay_exit_2(tmp_path, monkeypatch, capsys):
    assert _main(monkeypatch, tmp_path, "animate", "--save", "x.avi") == 2
    assert _main(monkeypatch, tmp_path, "animate", "--data", "missing.csv", "--save") == 2
    assert _main(monkeypatch, tmp_path, "demo", "--k", "5000") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 3 and "Traceback" not in err


def test_ctrl_c_is_exit_130(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_scene", interrupted)
    assert _main(monkeypatch, tmp_path, "animate", "--save") == 130
    assert capsys.readouterr().err == "kmeans-gpu animate: interrupted\n"


# -- the real window: kmeans-gpu animate on TkAgg under Xvfb ----------------------------


@pytest.fixture(scope="module")
def xdisplay():
    """A virtual X display (Xvfb), its name; skips without Xvfb, xdotool or tkinter."""
    import shutil

    missing = [tool for tool in ("Xvfb", "xdotool") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {' and '.join(missing)} (apt-get install xvfb xdotool)")
    try:
        import tkinter  # noqa: F401
    except ImportError:
        pytest.skip("needs tkinter (the python3-tk package) for matplotlib's TkAgg")
    read, write = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    with os.fdopen(read) as ready:
        number = ready.readline().strip()  # written once the server accepts clients
    if not number:
        server.kill()
        pytest.skip("Xvfb did not start")
    yield f":{number}"
    server.terminate()
    server.wait(timeout=10)


class Window:
    """``kmeans-gpu -v animate ...`` on TkAgg, its output read as it comes."""

    def __init__(self, display: str, cwd: Path, *args: str, stdin: int | None = None):
        self.display = display
        self.env = {
            **os.environ,
            "DISPLAY": display,
            "MPLBACKEND": "TkAgg",
            "PYTHONPATH": ROOT,
            "PYTHONUNBUFFERED": "1",
        }
        before = self._windows()  # the new window is the one not there before
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kmeans_gpu", "-v", "animate", *args],
            cwd=cwd,
            env=self.env,
            stdin=subprocess.DEVNULL if stdin is None else stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._changed = threading.Condition()
        for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._collect, args=(stream, lines), daemon=True).start()
        try:
            # printed once the window is shown: the keys, or the menu
            self.wait_for(self.out, r"^Keys \(or the buttons\)|^\(4\) Exit$")
            self.id = self._new_window(before)
        except BaseException:
            self.proc.kill()
            raise

    def _windows(self) -> set[str]:
        found = subprocess.run(
            ["xdotool", "search", "--onlyvisible", "--name", "^kmeans-gpu: "],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return set(found.stdout.split())

    def _new_window(self, before: set[str]) -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            new = self._windows() - before
            if new:
                return new.pop()
            time.sleep(0.1)
        raise AssertionError(("no window", self.out, self.err))

    def _collect(self, stream, lines):
        for line in stream:
            with self._changed:
                lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def xdotool(self, *args: str) -> str:
        done = subprocess.run(
            ["xdotool", *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, (args, done.stderr, self.err)
        return done.stdout.strip()

    def wait_for(self, lines: list[str], pattern: str, after: int = 0, timeout: float = 60):
        """The first match of ``pattern`` in ``lines`` from index ``after`` on."""
        deadline = time.monotonic() + timeout
        exited = None
        with self._changed:
            while True:
                for line in lines[after:]:
                    if match := re.search(pattern, line):
                        return match
                now = time.monotonic()
                if exited is None and self.proc.poll() is not None:
                    exited = now  # what it wrote last may still be on its way
                late = now > deadline or (exited is not None and now - exited > 2)
                assert not late, (pattern, self.proc.poll(), self.out, self.err)
                self._changed.wait(0.2)

    def settle(self) -> int:
        """Focus the window (no window manager does it here) and press n until the
        window answers: Tk on a bare X server drops the input of its first moments (a
        click 0.1 s after the window maps was lost, one 2 s after was not). Returns the
        iteration it stepped to; the run is then paused."""
        for _ in range(40):
            seen = len(self.err)
            self.xdotool("windowfocus", "--sync", self.id)
            self.key("n")
            with contextlib.suppress(AssertionError):
                step = self.wait_for(self.err, r"step to i = (\d+)", seen, timeout=0.5)
                return int(step.group(1))
        raise AssertionError(("the window does not answer", self.out, self.err))

    def key(self, key: str) -> None:
        self.xdotool("key", "--clearmodifiers", key)

    def title(self, expected: str, timeout: float = 30) -> None:
        """Wait for the window's title (Tk sends it to the X server when idle)."""
        deadline = time.monotonic() + timeout
        while (title := self.xdotool("getwindowname", self.id)) != expected:
            assert time.monotonic() < deadline, (title, expected)
            time.sleep(0.05)

    def click(self, action: str) -> None:
        """Click the middle of a button's lower part: its place follows from the
        window's width, whatever the labels' size (see ``InteractiveSession.layout``)."""
        geometry = self.xdotool("getwindowgeometry", self.id)
        width = int(re.search(r"Geometry: (\d+)x", geometry).group(1))
        scale = width / 800  # the figure is 8 inches wide at 100 dpi
        pad, gap = _interactive.PAD_PX * scale, _interactive.GAP_PX * scale
        n = len(_interactive.CONTROLS)
        index = [c.action for c in _interactive.CONTROLS].index(action)
        button = (width - 2 * pad - gap * (n - 1)) / n
        x = pad + index * (button + gap) + button / 2
        y = width * 7 / 8 - pad - 10 * scale  # the canvas's height, less the margin
        self.xdotool("mousemove", "--window", self.id, str(round(x)), str(round(y)))
        self.xdotool("click", "1")

    def close_from_title_bar(self) -> None:
        """What a window manager's close button does: WM_DELETE_WINDOW."""
        _send_wm_delete(self.display, int(self.id))

    def finish(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()

    def stderr_problems(self) -> list[str]:
        return [
            line
            for line in self.err
            if "Traceback" in line or "Exception in Tkinter" in line or "Error" in line
        ]


def _send_wm_delete(display: str, window: int) -> None:
    import ctypes
    import ctypes.util

    library = ctypes.util.find_library("X11")
    if library is None:
        pytest.skip("needs libX11 to send the window manager's close message")

    class ClientMessage(ctypes.Structure):
        _fields_ = [
            ("type", ctypes.c_int),
            ("serial", ctypes.c_ulong),
            ("send_event", ctypes.c_int),
            ("display", ctypes.c_void_p),
            ("window", ctypes.c_ulong),
            ("message_type", ctypes.c_ulong),
            ("format", ctypes.c_int),
            ("data", ctypes.c_long * 5),
        ]

    class XEvent(ctypes.Union):
        _fields_ = [("client", ClientMessage), ("pad", ctypes.c_long * 24)]

    x11 = ctypes.cdll.LoadLibrary(library)
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XInternAtom.restype = ctypes.c_ulong
    x11.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    x11.XSendEvent.argtypes = [
        ctypes.c_void_p,
        ctypes.c_ulong,
        ctypes.c_int,
        ctypes.c_long,
        ctypes.POINTER(XEvent),
    ]
    x11.XFlush.argtypes = x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    connection = x11.XOpenDisplay(display.encode())
    assert connection, f"cannot open display {display}"
    event = XEvent()
    event.client.type = 33  # ClientMessage
    event.client.window = window
    event.client.message_type = x11.XInternAtom(connection, b"WM_PROTOCOLS", 0)
    event.client.format = 32
    event.client.data[0] = x11.XInternAtom(connection, b"WM_DELETE_WINDOW", 0)
    assert x11.XSendEvent(connection, window, 0, 0, ctypes.byref(event))
    x11.XFlush(connection)
    x11.XCloseDisplay(connection)


@pytest.fixture
def launch(xdisplay, tmp_path):
    """Start ``kmeans-gpu -v animate ARGS`` in a window; ended after the test, so a
    failed test leaves no window over the next one's."""
    windows = []

    def start(*args, stdin=None):
        windows.append(Window(xdisplay, tmp_path, *args, stdin=stdin))
        return windows[-1]

    yield start
    for window in windows:
        if window.proc.poll() is None:
            window.proc.kill()
            window.proc.wait(timeout=30)


SCENE_ARGS = ("--seed", "1", "--k", "5", "--clusters", "5", "--points-per-cluster", "40")


@pytest.mark.xvfb
def test_the_window_with_keys_and_buttons(launch, tmp_path):
    window = launch(*SCENE_ARGS, "--interval", "100", "--dpi", "50")
    window.title("kmeans-gpu: K-means, k = 5")
    assert window.out[0].startswith("Keys (or the buttons): 1 new data, 2 new centroids")
    runs = [int(window.wait_for(window.err, r"new run: (\d+) frames").group(1))]

    stepped = window.settle()  # n pauses, then steps
    window.wait_for(window.err, r"paused at i = ")
    window.title("kmeans-gpu: K-means, k = 5 (paused)")
    seen = len(window.err)
    window.key("n")
    again = int(window.wait_for(window.err, r"step to i = (\d+)", seen).group(1))
    assert again == (stepped + 1) % runs[-1]
    for state in ("resumed", "paused", "resumed"):
        seen = len(window.err)
        window.key("space")
        window.wait_for(window.err, rf"{state} at i = ", seen)
    window.title("kmeans-gpu: K-means, k = 5")

    for key in ("2", "1"):
        seen = len(window.err)
        window.key(key)
        runs.append(int(window.wait_for(window.err, r"new run: (\d+) frames", seen).group(1)))

    window.key("3")
    saved = window.wait_for(window.out, r"^Saved (\d+) frames to (\S+)$")
    path = tmp_path / saved.group(2)
    assert int(saved.group(1)) == runs[-1] == imageio_ffmpeg.count_frames_and_secs(str(path))[0]
    assert next(imageio_ffmpeg.read_frames(str(path)))["size"] == (320, 240)  # --dpi 50

    seen = len(window.err)
    window.click("step")
    window.wait_for(window.err, r"paused at i = ", seen)
    window.wait_for(window.err, r"step to i = ", seen)
    window.click("toggle_pause")
    window.wait_for(window.err, r"resumed at i = ", seen)
    window.click("new_centroids")
    window.wait_for(window.err, r"new run: ", seen)
    seen_out = len(window.out)
    window.click("save")
    window.wait_for(window.out, r"^Saved \d+ frames to ", seen_out)
    assert len(_mp4s(tmp_path)) == 2

    window.key("4")
    assert window.finish() == 0
    assert window.stderr_problems() == []


@pytest.mark.xvfb
def test_the_menu_with_the_window(launch, tmp_path):
    window = launch(*SCENE_ARGS, "--menu", stdin=subprocess.PIPE)
    window.wait_for(window.out, r"^\(4\) Exit$")
    window.proc.stdin.write("2\n")
    window.proc.stdin.flush()
    window.wait_for(window.out, r"^Randomizing centroids\.\.\.$")
    window.proc.stdin.write("3\n")
    window.proc.stdin.flush()
    saved = window.wait_for(window.out, r"^Saved (\d+) frames to (\S+)$")
    n = imageio_ffmpeg.count_frames_and_secs(str(tmp_path / saved.group(2)))[0]
    assert n == int(saved.group(1))
    window.settle()
    window.click("close")  # Exit in the window ends the menu too
    assert window.finish() == 0
    assert window.out[-1] == "The window was closed: exiting."
    assert window.stderr_problems() == []


@pytest.mark.xvfb
def test_the_menu_ends_when_the_window_is_closed(launch):
    window = launch(*SCENE_ARGS, "--menu", stdin=subprocess.PIPE)
    window.wait_for(window.out, r"^\(4\) Exit$")
    window.close_from_title_bar()
    assert window.finish() == 0
    assert window.out[-1] == "The window was closed: exiting."
    assert window.stderr_problems() == []


@pytest.mark.xvfb
def test_the_menu_exits_on_4(launch):
    window = launch(*SCENE_ARGS, "--menu", stdin=subprocess.PIPE)
    window.wait_for(window.out, r"^\(4\) Exit$")
    window.proc.stdin.write("4\n")
    window.proc.stdin.flush()
    assert window.finish() == 0
    assert "The window was closed: exiting." not in window.out


@pytest.mark.xvfb
@pytest.mark.parametrize(
    ("menu", "signum"),
    [(False, signal.SIGINT), (True, signal.SIGINT), (False, signal.SIGTERM)],
    ids=["window", "menu", "window-sigterm"],
)
def test_the_first_ctrl_c_exits_130(launch, menu, signum):
    """Ctrl-C exits 130; SIGTERM ends the window the same way and exits 143."""
    args = (*SCENE_ARGS, "--interval", "20") + (("--menu",) if menu else ())
    window = launch(*args, stdin=subprocess.PIPE if menu else None)
    time.sleep(0.5)  # frames being drawn: the signal lands in a Tk callback
    window.proc.send_signal(signum)
    expected = {
        signal.SIGINT: (130, "kmeans-gpu animate: interrupted"),
        signal.SIGTERM: (143, "kmeans-gpu animate: terminated (SIGTERM)"),
    }[signum]
    assert window.finish(timeout=15) == expected[0]
    problems = [line for line in window.err if not line.startswith("INFO ")]
    assert problems == [expected[1]]
