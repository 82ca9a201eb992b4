"""Interactive mode: the blog post's window and terminal menu.

The window animates a K-means run and has buttons and keys for what the blog post's
terminal menu did (1 new data, 2 new centroids, 3 save, 4 exit), plus pause and
single-step. :meth:`InteractiveSession.run` shows it and runs its events; with
``menu=True`` it also reads the blog post's menu from the terminal while the window
keeps animating. :func:`run_menu` is that menu on its own, without a window loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

import kmeans_gpu as kg
from kmeans_gpu.display import Scene, make_scene

from ._export import FFMPEG_TIMEOUT, Saved, save
from ._render import TEXT_Z, Renderer, check_palette, renderer_for, scene_title

logger = logging.getLogger("viz")


@dataclass(frozen=True)
class Control:
    """One action of the window: its button label, its key and its method."""

    label: str
    key: str
    action: str

    def text(self, *, paused: bool = False, two_lines: bool = False) -> str:
        """The button's label: its name and key, on one line or two."""
        name = "Resume" if paused and self.action == "toggle_pause" else self.label
        key = "space" if self.key == " " else self.key
        separator = "\n" if two_lines else " "
        return f"{name}{separator}({key})"


CONTROLS = (
    Control("New data", "1", "new_data"),
    Control("New centroids", "2", "new_centroids"),
    Control("Save", "3", "save"),
    Control("Pause", " ", "toggle_pause"),
    Control("Step", "n", "step"),
    Control("Exit", "4", "close"),
)
KEYS = {control.key: control.action for control in CONTROLS}
TITLES = {control.action: control.label for control in CONTROLS}
TITLES["toggle_pause"] = "Pause/resume"

#: what an action may fail with without a bug: the machine, the disk, ffmpeg; a save
#: also with ValueError (a directory that went away)
RUNTIME_FAILURES: tuple[type[BaseException], ...] = (
    OSError,
    RuntimeError,
    MemoryError,
    subprocess.SubprocessError,
)

#: seconds of each slice of the GUI event loop between looks at the menu and Ctrl-C
POLL_S = 0.05
#: pixels (at 100 dpi) around the axes and the buttons, and between buttons
PAD_PX, GAP_PX, BUTTON_PX = 8.0, 6.0, 30.0
#: font size of the button labels, and the smallest they shrink to in a narrow window
BUTTON_FONT_PT, BUTTON_FONT_MIN_PT = 10.0, 6.0
#: below this size on one line, the labels go on two lines (name, then key)
TWO_LINES_BELOW_PT = 8.5
PAUSED_TEXT = "paused: space resumes, n steps"


def _random_state(seed: Any) -> np.random.RandomState:
    """A ``RandomState`` from None, an int, a ``RandomState`` (used as is, so the caller
    and the session share one stream) or a ``Generator``."""
    if isinstance(seed, np.random.RandomState):
        return seed
    if isinstance(seed, np.random.Generator):
        return np.random.RandomState(seed.bit_generator)
    return np.random.RandomState(seed)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class InteractiveSession:
    """A window that does what the blog post's terminal menu did, and a little more.

    (1) new random clusters and centroids, (2) new random centroids for the same points,
    (3) save the animation, (4) exit, plus pause/resume (space) and single-step (n): as
    buttons and as keys. Every action is a method, so a script (or a test) can drive it
    too; :meth:`perform` runs one as the window does. :meth:`run` shows the window.

    Parameters
    ----------
    k : int, default=12
        Clusters to find.
    data : array of shape (n_samples, n_features), default=None
        Points to cluster; None generates the blog post's scene (then "new data" draws a
        new one, and with data it draws new centroids only).
    scene : dict, default=None
        ``generate_clusters`` arguments for the generated scene.
    init : {"random", "k-means++"}, default="random"
        "random" is the blog post's ``initializeCentroids``.
    backend : str or Backend, default="auto"
        Where to compute (as for :func:`kmeans_gpu.iter_frames`); its name is in the
        plot's title.
    max_points : int or None, default=100_000
        Most points drawn.
    max_iter : int, default=300
        Iteration cap.
    interval : int, default=500
        Milliseconds per frame.
    hold : float, default=2.0
        Seconds the last frame of a run stays on screen before the loop restarts.
    fps, dpi : int, default=1 and 100
        Frames per second and resolution of saved files.
    ffmpeg_timeout : float, default=60
        Seconds ffmpeg may take to accept a frame of a save, or to finish it, before it
        is stopped and the save fails (see :func:`viz.save`).
    save_dir : str, default="."
        Where saved files go, named ``YYYYMMDDHHMMSS_KMeans2D.mp4`` (``_1``, ``_2``, …
        when taken).
    random_state : None, int, RandomState or Generator, default=None
        The random stream; a ``RandomState`` is used as is.
    trails, inertia_inset : bool, default=False
        Renderer options.
    palette : {"hsv", "colorblind"}, default="hsv"
        Cluster colours (see :func:`viz.cluster_colors`).
    fig : matplotlib Figure, default=None
        Where to draw; a new 800×700 pyplot figure by default.
    title : str, default=None
        The window's title; None is ``kmeans-gpu: K-means, k = <k>``.
    out, err : text streams, default=None
        Where "Saved N frames to PATH" and failures are written (stdout and stderr).
    """

    def __init__(
        self,
        *,
        k: int = 12,
        data: Any = None,
        scene: dict[str, Any] | None = None,
        init: str = "random",
        backend: Any = "auto",
        max_points: int | None = 100_000,
        max_iter: int = 300,
        interval: int = 500,
        hold: float = 2.0,
        fps: int = 1,
        dpi: int = 100,
        ffmpeg_timeout: float = FFMPEG_TIMEOUT,
        save_dir: str = ".",
        random_state: Any = None,
        trails: bool = False,
        inertia_inset: bool = False,
        palette: str = "hsv",
        fig: Any = None,
        title: str | None = None,
        out: TextIO | None = None,
        err: TextIO | None = None,
    ) -> None:
        import matplotlib.pyplot as plt

        if init not in ("random", "k-means++"):
            raise ValueError(f"init must be 'random' or 'k-means++', got {init!r}")
        self.k = k
        self.data = data
        self.scene_options = scene or {}
        self.init = init
        self.backend = backend
        self.max_points = max_points
        self.max_iter = max_iter
        self.interval = int(interval)
        self.hold = float(hold)
        self.fps = fps
        self.dpi = dpi
        self.ffmpeg_timeout = ffmpeg_timeout
        self.save_dir = save_dir
        self.rng = _random_state(random_state)
        self.trails = trails
        self.inertia_inset = inertia_inset
        self.palette = check_palette(palette)
        self.out = out
        self.err = err
        self.figure = fig if fig is not None else plt.figure(figsize=(8, 7))
        self.title = title or f"kmeans-gpu: K-means, k = {k}"
        manager = self.figure.canvas.manager
        #: pyplot's number of the figure, to see it closed (None outside pyplot)
        self.number = None if manager is None else manager.num
        if manager is not None:
            manager.set_window_title(self.title)
        self.ax = self.figure.add_axes((0.1, 0.15, 0.85, 0.8))
        self.buttons = self._make_buttons()
        self.figure.canvas.mpl_connect("key_press_event", self._on_key)
        self.figure.canvas.mpl_connect("close_event", self._on_close)
        self.figure.canvas.mpl_connect("resize_event", lambda event: self.layout())
        self.animation: Any = None
        self.paused = False
        self.closed = False
        #: Ctrl-C arrived while :meth:`run` ran
        self.interrupted = False
        #: an unexpected error in an action or a frame (a bug), raised again by :meth:`run`
        self.failure: BaseException | None = None
        self.index = -1
        self.frames: list[kg.Frame] = []
        self.points: Any = None
        self.display: Scene | None = None
        self.renderer: Renderer | None = None
        self.status: Any = None
        self._acting = False
        self._running = False
        self._held = 0  # ticks the last frame has stayed
        self._two_lines = False
        self.new_data()

    # -- the menu's actions -----------------------------------------------------------
    def new_data(self) -> None:
        """(1) New random clusters (unless data were given) and new centroids."""
        if self.data is not None:
            self.points = self.data
        else:
            self.points = kg.generate_clusters(**self.scene_options, random_state=self.rng)
        self.display = None
        self.new_centroids()

    def new_centroids(self) -> None:
        """(2) New random centroids for the same points; restarts the animation."""
        if self.init == "random":
            start = kg.initialize_centroids(self.k, self.points, random_state=self.rng)
        else:
            start, _ = kg.kmeans_plusplus(
                self.points, self.k, random_state=self.rng, backend=self.backend
            )
        if self.display is None:  # after the start, in the order `animate --save` draws
            self.display = make_scene(
                self.points,
                max_points=self.max_points,
                random_state=self.rng,
                backend=self.backend,
            )
        self.frames = list(
            kg.iter_frames(
                self.points,
                start,
                max_iter=self.max_iter,
                backend=self.backend,
                display_indices=self.display.indices,
            )
        )
        last = self.frames[-1]
        logger.info(
            "new run: %d frames, %s",
            len(self.frames),
            "converged" if last.converged else f"stopped at max_iter = {self.max_iter}",
        )
        self._restart()

    def save(self, path: str | os.PathLike[str] | None = None) -> Saved:
        """(3) Save the current run's animation at the session's ``fps`` and ``dpi``.

        Parameters
        ----------
        path : path, default=None
            The file (.mp4 or .gif); None is a new timestamped .mp4 in ``save_dir``.

        Returns
        -------
        Saved
            The path written and its number of frames.
        """
        assert self.display is not None
        return save(
            self.frames,
            self.save_dir if path is None else path,
            points=self.display,
            fps=self.fps,
            dpi=self.dpi,
            timeout=self.ffmpeg_timeout,
            trails=self.trails,
            inertia_inset=self.inertia_inset,
            palette=self.palette,
            title=self.renderer.ax.get_title() if self.renderer is not None else None,
        )

    def close(self) -> None:
        """(4) Stop the animation and close the window."""
        import matplotlib.pyplot as plt

        self._stop()
        self.closed = True
        plt.close(self.figure)

    def toggle_pause(self) -> None:
        """Pause or resume."""
        if self.closed:
            return
        self.paused = not self.paused
        timer = self._timer()
        if timer is not None:
            if self.paused:
                timer.stop()
            else:
                timer.start()
        self._show_state()
        logger.info("%s at i = %d", "paused" if self.paused else "resumed", self.frame.iteration)
        self.figure.canvas.draw_idle()

    def step(self) -> None:
        """Pause (if playing) and show the next frame."""
        if self.closed:
            return
        if not self.paused:
            self.toggle_pause()
        self._show_next()
        logger.info("step to i = %d", self.frame.iteration)
        self.figure.canvas.draw_idle()

    # -- running it -------------------------------------------------------------------
    def perform(self, action: str, out: TextIO | None = None) -> Any:
        """Run one action by name, as a key or a button does.

        A save says ``Saved N frames to PATH`` on ``out`` (the session's ``out`` by
        default). A failure the machine can cause (a full disk, ffmpeg failing, a save
        directory gone) is one line on ``err`` and the window carries on. Anything else
        is a bug: it is kept in :attr:`failure`, and :meth:`run` closes the window and
        raises it. Within :meth:`run`, Ctrl-C during an action ends the action and sets
        :attr:`interrupted` (then :meth:`run` raises it); elsewhere it propagates.

        Returns
        -------
        The action's result, or None when it failed.
        """
        if self.closed or self.failure is not None:
            return None
        expected = RUNTIME_FAILURES + ((ValueError,) if action == "save" else ())
        self._acting = True
        try:
            result = getattr(self, action)()
        except KeyboardInterrupt:
            if not self._running:
                raise
            self.interrupted = True  # raised by run() once out of the GUI callback
            return None
        except expected as exc:
            self._write(self.err or sys.stderr, f"{TITLES[action]} failed: {_one_line(exc)}")
            return None
        except Exception as exc:  # a bug: surfaced by run(), not lost in the GUI loop
            self._fail(exc)
            return None
        finally:
            self._acting = False
        if isinstance(result, Saved):
            self._write(out or self.out or sys.stdout, result.message)
        return result

    def choose(self, selection: str, out: TextIO | None = None) -> None:
        """Do what the blog post's menu does with one typed line: 1, 2, 3 or 4."""
        out = out or self.out or sys.stdout
        selection = selection.strip()
        if selection == "1":
            self._write(out, "\nRandomizing clusters and centroids...")
            self.perform("new_data", out)
        elif selection == "2":
            self._write(out, "\nRandomizing centroids...")
            self.perform("new_centroids", out)
        elif selection == "3":
            self._write(out, "\nSaving...")
            self.perform("save", out)
        elif selection == "4":
            self.perform("close", out)
        else:
            self._write(out, "\nInvalid selection.")

    def run(self, *, menu: bool = False, stdin: TextIO | None = None) -> None:
        """Show the window and run it until it closes: Exit (4), the window's close
        button, or (with ``menu``) 4 typed or the end of the input.

        With ``menu``, the blog post's terminal menu is read from ``stdin`` (the
        process's by default) while the window keeps animating; closing the window ends
        the menu too. The first Ctrl-C ends it all, even in the middle of a save.

        Raises
        ------
        KeyboardInterrupt
            On Ctrl-C (SIGINT), after closing the window.
        Exception
            An unexpected error of an action or a frame (a bug), after closing it.
        """
        out = self.out or sys.stdout
        reader = _LineReader(sys.stdin if stdin is None else stdin) if menu else None
        self._running = True
        try:
            with self._ctrl_c_ends_run():
                menu_exit = self._loop(reader, out)
        finally:
            self._running = False
        if self.failure is not None or self.interrupted:
            if not self.closed:
                self.close()
            if self.failure is not None:
                raise self.failure
            raise KeyboardInterrupt
        if reader is not None and not menu_exit:
            self._write(out, "\nThe window was closed: exiting.")

    def _loop(self, reader: _LineReader | None, out: TextIO) -> bool:
        """Run the window's events, and the menu's lines if ``reader``, until the window
        closes, Ctrl-C or a bug; returns whether the menu ended it (4 or end of input)."""
        self._show_window()
        if reader is None:
            keys = ", ".join(f"{c.key.strip() or 'space'} {c.label.lower()}" for c in CONTROLS)
            self._write(out, f"Keys (or the buttons): {keys}")
        else:
            out.write(MENU)
            out.flush()
        menu_exit = False
        while not self._finished():
            self.figure.canvas.start_event_loop(POLL_S)
            if reader is None or self._finished():
                continue
            for line in reader.lines():
                line = "4" if line is None else line  # the end of the input: exit
                menu_exit = menu_exit or line.strip() == "4"
                self.choose(line, out)
                if self._finished():
                    break
                out.write(MENU)
                out.flush()
        return menu_exit

    def _finished(self) -> bool:
        if self.closed or self.failure is not None or self.interrupted:
            return True
        if self.number is not None:
            import matplotlib.pyplot as plt

            if not plt.fignum_exists(self.number):  # closed without a close_event
                self._on_close(None)
        return self.closed

    def _show_window(self) -> None:
        from matplotlib.animation import FuncAnimation
        from matplotlib.backend_bases import NonGuiException

        if self.animation is None:
            # made when shown, so a window only driven by a script never leaves an
            # animation that matplotlib warns was never drawn; one for the session, as
            # a new run only swaps the frames it draws
            self.animation = FuncAnimation(
                self.figure,
                self._tick,
                init_func=lambda: [],
                frames=None,
                interval=self.interval,
                blit=False,
                cache_frame_data=False,
            )
        manager = self.figure.canvas.manager
        if manager is not None:
            # a figure without a GUI (Agg) runs the same loop, as tests and scripts do
            with contextlib.suppress(NonGuiException):
                manager.show()
        self.layout()
        self.figure.canvas.draw_idle()  # the first draw starts the animation's timer

    @contextlib.contextmanager
    def _ctrl_c_ends_run(self) -> Iterator[None]:
        """Ctrl-C sets :attr:`interrupted` (the loop then ends) instead of raising in
        whatever GUI callback runs, which Tk would print and ignore; during an action
        it raises, so a long save stops at once (and :meth:`perform` catches it)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_sigint(signum: int, frame: Any) -> None:
            self.interrupted = True
            if self._acting:
                raise KeyboardInterrupt

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    # -- machinery --------------------------------------------------------------------
    @property
    def frame(self) -> kg.Frame:
        """The frame on screen."""
        return self.frames[self.index]

    def _timer(self) -> Any:
        # None before the first run and after the window closed (matplotlib drops it)
        return None if self.animation is None else self.animation.event_source

    def _tick(self, _: Any) -> list[Any]:
        if self.closed or self.failure is not None:
            return []
        if self.paused:  # matplotlib starts the timer at the first draw, paused or not
            self._stop()
            return []
        last = self.index == len(self.frames) - 1
        # the last frame stays for `hold` seconds: ticks counted, as matplotlib resets the
        # timer's interval after every frame
        if last and self._held + 1 < max(1, round(1000 * self.hold / self.interval)):
            self._held += 1
            return []
        self._held = 0
        try:
            return self._show_next()
        except Exception as exc:  # a bug: surfaced by run(), not printed every frame
            self._fail(exc)
            return []

    def _show_next(self) -> list[Any]:
        assert self.renderer is not None
        self.index = (self.index + 1) % len(self.frames)
        artists = self.renderer.draw(self.frame)
        self._show_state()
        return [*artists, self.status]

    def _show_state(self) -> None:
        if self.status is None:
            return
        if self.paused:
            text = PAUSED_TEXT
        elif self.index == len(self.frames) - 1:
            text = "converged" if self.frame.converged else f"max_iter = {self.max_iter} reached"
        else:
            text = ""
        self.status.set_text(text)
        for button, control in zip(self.buttons, CONTROLS, strict=True):
            button.label.set_text(control.text(paused=self.paused, two_lines=self._two_lines))
        manager = self.figure.canvas.manager
        title = f"{self.title} (paused)" if self.paused else self.title
        if manager is not None and manager.get_window_title() != title:
            manager.set_window_title(title)

    def _stop(self) -> None:
        timer = self._timer()
        if timer is not None:
            timer.stop()

    def _restart(self) -> None:
        assert self.display is not None
        self.ax.clear()
        self.renderer = renderer_for(
            self.ax,
            self.frames,
            self.display,
            trails=self.trails,
            inertia_inset=self.inertia_inset,
            palette=self.palette,
            title=scene_title(
                self.k,
                int(self.points.shape[0]),
                backend=self._backend_name(),
                n_drawn=int(self.display.points.shape[0]),
                projection=self.display.projection,
            ),
        )
        self.status = self.ax.text(
            0.99, 0.01, "", transform=self.ax.transAxes, ha="right", zorder=TEXT_Z
        )
        self.index = -1
        self.paused = False
        self._held = 0
        self._show_next()
        timer = self._timer()
        if timer is not None:
            timer.start()
        self._show_state()
        self.layout()
        self.figure.canvas.draw_idle()

    def _backend_name(self) -> str:
        """The backend the frames are computed on: the one given, or for "auto" the
        points' own library (as :func:`kmeans_gpu.iter_frames` does)."""
        if not isinstance(self.backend, str):
            return str(self.backend.name)
        try:
            return kg.get_backend(self.points if self.backend == "auto" else self.backend).name
        except TypeError:  # points of no array library: "auto" chooses by the machine
            return kg.get_backend(self.backend).name

    def _fail(self, exc: BaseException) -> None:
        self.failure = exc
        self._stop()

    def _on_key(self, event: Any) -> None:
        action = KEYS.get(event.key)
        if action is not None:
            self.perform(action)

    def _on_close(self, event: Any) -> None:
        self.closed = True
        self._stop()

    @staticmethod
    def _write(stream: TextIO, line: str) -> None:
        stream.write(f"{line}\n")
        stream.flush()

    def _make_buttons(self) -> list[Any]:
        from matplotlib.widgets import Button

        buttons = []
        for control in CONTROLS:
            button = Button(self.figure.add_axes((0, 0, 0.1, 0.05)), control.text())
            button.label.set_fontsize(BUTTON_FONT_PT)
            button.on_clicked(self._callback(control.action))
            buttons.append(button)
        return buttons

    def _callback(self, action: str) -> Callable[[Any], None]:
        return lambda event: self.perform(action)

    def layout(self) -> None:
        """Place the buttons and the axes in pixels for the figure's current size: a row
        of buttons at the bottom, their labels on one line, or on two in a narrow window,
        shrunk to fit if need be; the axes above, with room for their tick labels, axis
        labels and title."""
        fig = self.figure
        width, height = fig.bbox.width, fig.bbox.height
        scale = fig.dpi / 100
        pad, gap = PAD_PX * scale, GAP_PX * scale
        button_width = (width - 2 * pad - gap * (len(self.buttons) - 1)) / len(self.buttons)
        renderer = getattr(fig.canvas, "get_renderer", lambda: None)()
        lines, size = 1, BUTTON_FONT_PT
        if renderer is not None:
            room = button_width - 8 * scale
            size = self._label_size(renderer, room, two_lines=False)
            if size < TWO_LINES_BELOW_PT:  # two short lines read better than one tiny one
                two = self._label_size(renderer, room, two_lines=True)
                if two > size:
                    lines, size = 2, two
            size = max(BUTTON_FONT_MIN_PT, size)
        self._two_lines = lines == 2
        line_px = 1.3 * size * fig.dpi / 72
        row = max(BUTTON_PX * scale, lines * line_px + 8 * scale)
        for i, button in enumerate(self.buttons):
            left = pad + i * (button_width + gap)
            button.ax.set_position(
                (left / width, pad / height, button_width / width, row / height)
            )
            button.label.set_fontsize(size)
        self._show_state()
        if renderer is None:
            return
        x0, y0, x1, y1 = pad, pad + row + gap, width - pad, height - pad
        left, bottom, right, top = x0, y0, x1, y1
        for _ in range(2):  # the second pass sees the tick labels of the final size
            if right - left < 10 or top - bottom < 10:
                return  # too small a window to lay out; leave it as it is
            self.ax.set_position(
                (left / width, bottom / height, (right - left) / width, (top - bottom) / height)
            )
            box = self.ax.get_window_extent(renderer)
            tight = self.ax.get_tightbbox(renderer)
            if tight is None:  # nothing visible to make room for
                break
            left = x0 + max(0.0, box.x0 - tight.x0)
            bottom = y0 + max(0.0, box.y0 - tight.y0)
            right = x1 - max(0.0, tight.x1 - box.x1)
            top = y1 - max(0.0, tight.y1 - box.y1)
        if right - left >= 10 and top - bottom >= 10:
            self.ax.set_position(
                (left / width, bottom / height, (right - left) / width, (top - bottom) / height)
            )

    def _label_size(self, renderer: Any, room: float, *, two_lines: bool) -> float:
        """The largest font size, at most ``BUTTON_FONT_PT``, at which every label
        (paused or not) fits in ``room`` pixels (below ``BUTTON_FONT_MIN_PT`` too)."""
        probe = self.buttons[0].label
        text, fontsize = probe.get_text(), probe.get_fontsize()
        probe.set_fontsize(BUTTON_FONT_PT)
        size = BUTTON_FONT_PT
        for control in CONTROLS:
            for paused in (False, True):
                probe.set_text(control.text(paused=paused, two_lines=two_lines))
                needed = probe.get_window_extent(renderer).width
                if needed > room > 0:
                    size = min(size, BUTTON_FONT_PT * room / needed)
        probe.set_text(text)
        probe.set_fontsize(fontsize)
        return size


class _LineReader:
    """Lines from a stream, read on a daemon thread so the window keeps running while
    the menu waits; ``None`` marks the end of the input.

    A stream with a file descriptor (a terminal or a pipe) is read with ``os.read``,
    which takes no Python-level lock a daemon thread could hold at exit.
    """

    def __init__(self, stream: TextIO) -> None:
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        try:
            fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None
        if fd is not None:
            target: Callable[[], None] = lambda: self._read_fd(fd)  # noqa: E731
        else:
            target = lambda: self._read_stream(stream)  # noqa: E731
        threading.Thread(target=target, name="kmeans-gpu menu", daemon=True).start()

    def _read_fd(self, fd: int) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                if pending:
                    self._queue.put(pending.decode(errors="replace"))
                self._queue.put(None)
                return
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                self._queue.put(line.decode(errors="replace"))

    def _read_stream(self, stream: TextIO) -> None:
        for line in iter(stream.readline, ""):
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def lines(self) -> list[str | None]:
        """The lines read since the last call."""
        found = []
        while True:
            try:
                found.append(self._queue.get_nowait())
            except queue.Empty:
                return found


MENU = (
    "\nMake a selection:\n"
    "(1) Randomize clusters and centroids\n"
    "(2) Randomize centroids only\n"
    "(3) Save animation to mp4\n"
    "(4) Exit\n"
)


def run_menu(
    session: InteractiveSession,
    *,
    read: Callable[[str], str] = input,
    out: TextIO | None = None,
) -> None:
    """The blog post's terminal menu on its own, driving ``session`` with no window
    loop: 1 new data, 2 new centroids, 3 save an mp4, 4 exit (also at the end of input).

    ``read`` gets a line (``input`` by default). For the window and the menu together,
    use ``session.run(menu=True)``.

    Raises
    ------
    KeyboardInterrupt
        On Ctrl-C.
    Exception
        An unexpected error of an action (a bug).
    """
    out = out or session.out or sys.stdout
    while not session.closed and session.failure is None:
        try:
            selection = read(MENU)
        except EOFError:
            selection = "4"
        session.choose(selection, out)
    if session.failure is not None:
        raise session.failure
