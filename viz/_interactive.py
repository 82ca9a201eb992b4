"""Interactive mode: the seed's terminal menu as a window with buttons and keys, and
the plain terminal menu itself."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, TextIO

import numpy as np

import kmeans_gpu as kg
from kmeans_gpu.display import Scene, make_scene

from ._export import Saved, save
from ._render import Renderer, renderer_for

logger = logging.getLogger("viz")

KEYS = {
    "1": "new_data",
    "2": "new_centroids",
    "3": "save",
    "4": "close",
    " ": "toggle_pause",
    "n": "step",
}
BUTTONS = (
    ("New data (1)", "new_data"),
    ("New centroids (2)", "new_centroids"),
    ("Save (3)", "save"),
    ("Pause (space)", "toggle_pause"),
    ("Step (n)", "step"),
    ("Exit (4)", "close"),
)


class InteractiveSession:
    """A window that does what the seed's terminal menu did, and a little more.

    (1) new random clusters and centroids, (2) new random centroids for the same points,
    (3) save the animation, (4) exit, plus pause/resume and single-step: as buttons and
    as keys. Every action is a method, so a script (or a test) can drive it too.

    Parameters
    ----------
    k : int, default=12
        Clusters to find.
    data : array of shape (n_samples, n_features), default=None
        Points to cluster; None generates the seed's scene (then "new data" draws a new
        one, and with data it draws new centroids only).
    scene : dict, default=None
        ``generate_clusters`` arguments for the generated scene.
    init : {"random", "k-means++"}, default="random"
        "random" is the seed's ``initialize_centroids``.
    backend, max_points, max_iter, interval, fps, save_dir, random_state
        Where to compute, how many points to draw, the iteration cap, milliseconds per
        frame, frames per second of saved files, where saved files go, and the seed.
    trails, inertia_inset : bool, default=False
        Renderer options.
    """

    def __init__(
        self,
        *,
        k: int = 12,
        data: Any = None,
        scene: dict[str, Any] | None = None,
        init: str = "random",
        backend: str = "auto",
        max_points: int | None = 100_000,
        max_iter: int = 300,
        interval: int = 500,
        fps: int = 1,
        save_dir: str = ".",
        random_state: Any = None,
        trails: bool = False,
        inertia_inset: bool = False,
        fig: Any = None,
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
        self.interval = interval
        self.fps = fps
        self.save_dir = save_dir
        self.rng = np.random.RandomState(random_state)
        self.trails = trails
        self.inertia_inset = inertia_inset
        self.figure = fig if fig is not None else plt.figure(figsize=(8, 7))
        self.ax = self.figure.add_axes((0.08, 0.16, 0.88, 0.8))
        self.buttons = self._make_buttons()
        self.figure.canvas.mpl_connect("key_press_event", self._on_key)
        self.animation: Any = None
        self.paused = False
        self.closed = False
        self.index = -1
        self.frames: list[kg.Frame] = []
        self.points: Any = None
        self.display: Scene | None = None
        self.renderer: Renderer | None = None
        self.new_data()

    # -- the menu's actions -----------------------------------------------------------
    def new_data(self) -> None:
        """(1) New random clusters (unless data were given) and new centroids."""
        if self.data is not None:
            self.points = self.data
        else:
            self.points = kg.generate_clusters(**self.scene_options, random_state=self.rng)
        self.display = make_scene(
            self.points, max_points=self.max_points, random_state=self.rng, backend=self.backend
        )
        self.new_centroids()

    def new_centroids(self) -> None:
        """(2) New random centroids for the same points; restarts the animation."""
        if self.init == "random":
            start = kg.initialize_centroids(self.k, self.points, random_state=self.rng)
        else:
            start, _ = kg.kmeans_plusplus(
                self.points, self.k, random_state=self.rng, backend=self.backend
            )
        assert self.display is not None
        self.frames = list(
            kg.iter_frames(
                self.points,
                start,
                max_iter=self.max_iter,
                backend=self.backend,
                display_indices=self.display.indices,
            )
        )
        self._restart()

    def save(self, path: str | None = None) -> Saved:
        """(3) Save the current run's animation (default: a timestamped .mp4)."""
        import os

        from ._export import default_filename

        target = path or os.path.join(self.save_dir, default_filename())
        saved = save(
            self.frames,
            target,
            points=self.display,
            fps=self.fps,
            trails=self.trails,
            inertia_inset=self.inertia_inset,
        )
        logger.info("saved %d frames to %s", saved.n_frames, saved.path)
        return saved

    def close(self) -> None:
        """(4) Stop the animation and close the window."""
        import matplotlib.pyplot as plt

        self._stop()
        self.closed = True
        plt.close(self.figure)

    def toggle_pause(self) -> None:
        """Pause or resume."""
        if self.animation is None:
            return
        if self.paused:
            self.animation.resume()
        else:
            self.animation.pause()
        self.paused = not self.paused

    def step(self) -> None:
        """Pause (if playing) and show the next frame."""
        if not self.paused:
            self.toggle_pause()
        self._show_next()
        self.figure.canvas.draw_idle()

    # -- machinery --------------------------------------------------------------------
    @property
    def frame(self) -> kg.Frame:
        """The frame on screen."""
        return self.frames[self.index]

    def _show_next(self) -> list[Any]:
        assert self.renderer is not None
        self.index = (self.index + 1) % len(self.frames)
        return self.renderer.draw(self.frames[self.index])

    def _stop(self) -> None:
        if self.animation is not None:
            self.animation.pause()
            self.animation = None

    def _restart(self) -> None:
        from matplotlib.animation import FuncAnimation

        self._stop()
        assert self.display is not None
        self.ax.clear()
        self.renderer = renderer_for(
            self.ax,
            self.frames,
            self.display,
            trails=self.trails,
            inertia_inset=self.inertia_inset,
        )
        self.index = -1
        self._show_next()
        self.paused = False
        renderer = self.renderer
        self.animation = FuncAnimation(
            self.figure,
            lambda _: self._show_next(),
            init_func=lambda: renderer.draw(self.frame),
            frames=None,
            interval=self.interval,
            blit=False,
            cache_frame_data=False,
        )
        self.figure.canvas.draw_idle()

    def _make_buttons(self) -> list[Any]:
        from matplotlib.widgets import Button

        buttons = []
        width = 0.88 / len(BUTTONS)
        for i, (label, action) in enumerate(BUTTONS):
            axes = self.figure.add_axes((0.08 + i * width, 0.02, width - 0.01, 0.06))
            button = Button(axes, label)
            button.label.set_fontsize("small")
            button.on_clicked(self._callback(action))
            buttons.append(button)
        return buttons

    def _callback(self, action: str) -> Callable[[Any], None]:
        return lambda event: self.perform(action)

    def _on_key(self, event: Any) -> None:
        action = KEYS.get(event.key)
        if action is not None:
            self.perform(action)

    def perform(self, action: str) -> None:
        """Run one action by name (a key or button), logging what fails instead of
        raising into the GUI loop."""
        try:
            getattr(self, action)()
        except Exception as exc:  # a failed save must not kill the window
            logger.error("%s failed: %s", action, exc)


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
    pause: Callable[[float], None] | None = None,
) -> None:
    """The seed's terminal menu, driving ``session``: 1 new data, 2 new centroids, 3
    save an mp4, 4 exit. ``read`` gets a line (``input`` by default); ``pause`` lets the
    GUI run between prompts (``plt.pause`` on an interactive backend)."""
    out = out or sys.stdout
    actions = {"1": "Randomizing clusters and centroids...", "2": "Randomizing centroids..."}
    while not session.closed:
        if pause is not None:
            pause(0.05)
        try:
            selection = read(MENU).strip()
        except EOFError:
            selection = "4"
        if selection == "1":
            out.write(f"\n{actions['1']}\n")
            session.new_data()
        elif selection == "2":
            out.write(f"\n{actions['2']}\n")
            session.new_centroids()
        elif selection == "3":
            try:
                saved = session.save()
            except Exception as exc:
                out.write(f"\nCould not save: {exc}\n")
            else:
                out.write(f"\nSaved {saved.n_frames} frames to ./{saved.path}\n")
        elif selection == "4":
            session.close()
        else:
            out.write("\nInvalid selection.\n")
        out.flush()
