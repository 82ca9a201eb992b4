"""The renderer: artists made once, updated in place from :class:`kmeans_gpu.Frame`."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import numpy as np
from matplotlib.animation import FuncAnimation
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.colors import hsv_to_rgb, to_rgb
from matplotlib.patheffects import Normal, Stroke
from matplotlib.ticker import FuncFormatter, MaxNLocator

from kmeans_gpu import Frame
from kmeans_gpu.display import Projection, Scene

FrameSource = Sequence[Frame] | Callable[[], Iterator[Frame]]


#: the palettes :func:`cluster_colors` knows
PALETTES = ("hsv", "colorblind")
#: Okabe and Ito's eight colours, told apart with every common colour-vision deficiency
OKABE_ITO = (
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#009E73",  # bluish green
    "#F0E442",  # yellow
    "#0072B2",  # blue
    "#D55E00",  # vermilion
    "#CC79A7",  # reddish purple
    "#000000",  # black
)
#: (point, centre) markers of each round of the colour-blind palette's colours:
#: clusters k and k + 8 share a colour and differ in shape
COLORBLIND_MARKERS = (("x", "o"), ("+", "s"), (".", "D"), ("1", "^"))
#: centre marker size, black edge width and white halo width, in points (the blog
#: post's centres were matplotlib's default 6-point 'o' with a 1-point edge)
CENTRE_SIZE, CENTRE_EDGE, CENTRE_HALO = 11.0, 1.5, 2.0
#: drawing order: points (matplotlib's 2), trails, the inertia inset (an inset's 5),
#: centres above it all, then the text
TRAIL_Z, CENTRE_Z, TEXT_Z = 2.5, 6.0, 7.0
#: opacity of the inertia inset's background: points beneath it still show
INSET_ALPHA = 0.75


def check_palette(palette: str) -> str:
    """``palette`` if it is one of :data:`PALETTES`, else a ValueError naming them."""
    if palette not in PALETTES:
        raise ValueError(
            f"palette must be one of {', '.join(map(repr, PALETTES))}, got {palette!r}"
        )
    return palette


def cluster_colors(n_clusters: int, palette: str = "hsv") -> list[tuple[float, float, float]]:
    """The colour of each cluster.

    Parameters
    ----------
    n_clusters : int
    palette : {"hsv", "colorblind"}, default="hsv"
        ``"hsv"`` is the blog post's ``hsv_to_rgb(k / K, 0.8, 0.8)`` for cluster k:
        evenly spaced hues, whose neighbours grow hard to tell apart beyond 10 or so
        clusters. ``"colorblind"`` is Okabe and Ito's eight colours, distinct with
        every common colour-vision deficiency, repeated every 8 clusters (with another
        marker shape each round, see :func:`cluster_markers`).
    """
    if check_palette(palette) == "hsv":
        return [tuple(hsv_to_rgb((k / n_clusters, 0.8, 0.8))) for k in range(n_clusters)]
    return [to_rgb(OKABE_ITO[k % len(OKABE_ITO)]) for k in range(n_clusters)]


def cluster_markers(n_clusters: int, palette: str = "hsv") -> list[tuple[str, str]]:
    """The (point, centre) markers of each cluster: the blog post's ``("x", "o")`` for
    every cluster with ``"hsv"``; with ``"colorblind"``, another pair for each round of
    8 colours, ``x``/``o``, ``+``/square, ``.``/diamond, tri/triangle (beyond 32
    clusters the pairs repeat)."""
    if check_palette(palette) == "hsv":
        return [("x", "o")] * n_clusters
    rounds = len(COLORBLIND_MARKERS)
    return [COLORBLIND_MARKERS[(k // len(OKABE_ITO)) % rounds] for k in range(n_clusters)]


def scene_title(
    n_clusters: int,
    n_points: int,
    *,
    backend: str | None = None,
    n_drawn: int | None = None,
    projection: Projection | None = None,
) -> str:
    """The plot's title: ``K-means: k = 12, n = 1,200 (numpy)``, with a second line
    when only a sample is drawn or the view is a PCA projection."""
    title = f"K-means: k = {n_clusters:,}, n = {n_points:,}"
    if backend:
        title += f" ({backend})"
    notes = []
    if n_drawn is not None and n_drawn < n_points:
        notes.append(f"{n_drawn:,} drawn")
    if projection is not None and projection.is_pca:
        notes.append(f"2-D PCA projection of {projection.mean.shape[0]} features")
    return title + ("\n" + ", ".join(notes) if notes else "")


def _short_number(value: float, position: int | None = None) -> str:
    """A short tick label: ``1200``, ``0.05``, ``1.2e10``."""
    if value == 0 or 1e-2 <= abs(value) < 1e4:
        return f"{value:.4g}"
    return f"{value:.3g}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")


def set_axis_limits(ax: Axes, points: np.ndarray, pad: float = 0.05) -> None:
    """Limits from the data's span with 5 % padding each side, as the blog post's
    ``setAxisLimits``."""
    low, high = points.min(axis=0), points.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    ax.set_xlim(low[0] - pad * span[0], high[0] + pad * span[0])
    ax.set_ylim(low[1] - pad * span[1], high[1] + pad * span[1])


class Renderer:
    """Draws frames of a K-means run in the blog post's style, made legible.

    One ``Line2D`` of 'x' markers per cluster and one 'o' centroid per cluster in the
    cluster's colour, as the blog post drew them; the centroids larger, with a black
    edge and a white halo, above the points, the trails and the inertia inset, so a
    centre stands out even inside a dense cluster of its own colour. The ``i = N``
    text sits inside the axes; the title says k, n (and the backend, when given) and
    the axes are labelled. Every artist is created here and only its data change per
    frame, so blitting works.

    Parameters
    ----------
    ax : matplotlib Axes
    points : ndarray of shape (n_display, 2)
        The displayed points, already projected (see :class:`kmeans_gpu.display.Scene`).
    n_clusters : int
    projection : Projection, default=None
        Maps centroids into the plot; None takes their first two coordinates.
    trails : bool, default=False
        Draw the path of each centroid so far.
    inertia_inset : bool, default=False
        An inset plotting inertia per iteration; needs ``n_frames`` and
        ``inertia_range`` to fix its limits.
    n_frames : int, default=None
        Number of frames (the inset's x range).
    inertia_range : (float, float), default=None
        Smallest and largest inertia of the frames (the inset's y range).
    palette : {"hsv", "colorblind"}, default="hsv"
        Cluster colours (and, for "colorblind", marker shapes); see
        :func:`cluster_colors`.
    title : str, default=None
        The axes' title; None is :func:`scene_title` of the clusters and the points
        drawn, "" none.
    """

    def __init__(
        self,
        ax: Axes,
        points: np.ndarray,
        n_clusters: int,
        *,
        projection: Projection | None = None,
        trails: bool = False,
        inertia_inset: bool = False,
        n_frames: int | None = None,
        inertia_range: tuple[float, float] | None = None,
        palette: str = "hsv",
        title: str | None = None,
    ) -> None:
        self.ax = ax
        self.points = np.asarray(points, dtype=np.float64)
        if self.points.ndim != 2 or self.points.shape[1] != 2:
            raise ValueError(f"points must have shape (n, 2), got {self.points.shape}")
        self.n_clusters = int(n_clusters)
        self.projection = projection
        colors = cluster_colors(self.n_clusters, palette)
        markers = cluster_markers(self.n_clusters, palette)
        self.cluster_lines = [
            ax.plot([], [], ls="None", marker=point, color=c)[0]
            for c, (point, _) in zip(colors, markers, strict=True)
        ]
        self.trail_lines = (
            [
                ax.plot([], [], ls="-", lw=1.0, alpha=0.6, color=c, zorder=TRAIL_Z)[0]
                for c in colors
            ]
            if trails
            else []
        )
        halo = [Stroke(linewidth=CENTRE_EDGE + 2 * CENTRE_HALO, foreground="w"), Normal()]
        self.centroid_lines = [
            ax.plot(
                [],
                [],
                ls="None",
                marker=centre,
                markersize=CENTRE_SIZE,
                markeredgewidth=CENTRE_EDGE,
                markeredgecolor="k",
                color=c,
                zorder=CENTRE_Z,
                path_effects=halo,
            )[0]
            for c, (_, centre) in zip(colors, markers, strict=True)
        ]
        self.text = ax.text(0.01, 0.01, "", transform=ax.transAxes, zorder=TEXT_Z)
        self._trail: list[np.ndarray] = []
        self._inertia: list[tuple[int, float]] = []
        self.inertia_line = None
        if inertia_inset:
            if n_frames is None or inertia_range is None:
                raise ValueError("inertia_inset needs the frames as a list (to fix its limits)")
            inset = ax.inset_axes((0.66, 0.7, 0.32, 0.27))
            inset.patch.set_alpha(INSET_ALPHA)
            inset.set_xlim(0, max(1, n_frames - 1))
            low, high = inertia_range
            inset.set_ylim(low - 0.05 * (high - low + 1e-300), high + 0.05 * (high - low + 1e-300))
            inset.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
            inset.yaxis.set_major_locator(MaxNLocator(nbins=3))
            # "1.2e10" on each tick: an offset text above the inset would leave the axes
            inset.yaxis.set_major_formatter(FuncFormatter(_short_number))
            inset.tick_params(labelsize="x-small")
            # the name inside the inset: a title above it would leave the axes
            inset.text(
                0.97,
                0.93,
                "inertia",
                transform=inset.transAxes,
                ha="right",
                va="top",
                fontsize="small",
            )
            self.inertia_line = inset.plot([], [], color="k", lw=1.0)[0]
        set_axis_limits(ax, self.points)
        x_label, y_label = ("x", "y") if projection is None else projection.axis_labels
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        if title is None:
            title = scene_title(self.n_clusters, len(self.points), projection=projection)
        ax.set_title(title)

    @property
    def artists(self) -> list[Artist]:
        extra = [] if self.inertia_line is None else [self.inertia_line]
        return [*self.cluster_lines, *self.trail_lines, *self.centroid_lines, self.text, *extra]

    def clear(self) -> list[Artist]:
        """Empty every artist (the ``init_func`` of an animation)."""
        for line in self.cluster_lines + self.trail_lines + self.centroid_lines:
            line.set_data([], [])
        if self.inertia_line is not None:
            self.inertia_line.set_data([], [])
        self.text.set_text("")
        self._trail, self._inertia = [], []
        return self.artists

    def centroid_positions(self, frame: Frame) -> np.ndarray:
        centroids = np.asarray(frame.centroids, dtype=np.float64)
        if self.projection is not None:
            return self.projection(centroids)
        return centroids[:, :2]

    def draw(self, frame: Frame) -> list[Artist]:
        """Show one frame; returns the artists that changed."""
        labels = np.asarray(frame.labels)
        if labels.shape != (self.points.shape[0],):
            raise ValueError(
                f"frame {frame.iteration} has {labels.shape[0]} labels for "
                f"{self.points.shape[0]} displayed points"
            )
        order = np.argsort(labels, kind="stable")
        bounds = np.searchsorted(labels[order], np.arange(self.n_clusters + 1))
        for k, line in enumerate(self.cluster_lines):
            members = self.points[order[bounds[k] : bounds[k + 1]]]
            line.set_data(members[:, 0], members[:, 1])
        centroids = self.centroid_positions(frame)
        for k, line in enumerate(self.centroid_lines):
            line.set_data([centroids[k, 0]], [centroids[k, 1]])
        if frame.iteration == 0:
            self._trail, self._inertia = [], []
        if self.trail_lines:
            self._trail.append(centroids)
            path = np.stack(self._trail)
            for k, line in enumerate(self.trail_lines):
                line.set_data(path[:, k, 0], path[:, k, 1])
        if self.inertia_line is not None:
            self._inertia.append((frame.iteration, frame.inertia))
            its, values = zip(*self._inertia, strict=True)
            self.inertia_line.set_data(its, values)
        self.text.set_text(f"i = {frame.iteration:d}")
        return self.artists


def renderer_for(
    ax: Axes,
    frames: FrameSource,
    scene: Scene,
    *,
    trails: bool,
    inertia_inset: bool,
    palette: str = "hsv",
    title: str | None = None,
) -> Renderer:
    """A renderer sized for these frames: the number of clusters from the first frame,
    the inset's limits from all of them (a list only)."""
    if callable(frames):
        first = next(iter(frames()))
        n_frames = inertia_range = None
    else:
        if not frames:
            raise ValueError("frames is empty")
        first = frames[0]
        n_frames = len(frames)
        values = [f.inertia for f in frames]
        inertia_range = (min(values), max(values))
    return Renderer(
        ax,
        scene.points,
        int(first.centroids.shape[0]),
        projection=scene.projection,
        trails=trails,
        inertia_inset=inertia_inset,
        n_frames=n_frames,
        inertia_range=inertia_range,
        palette=palette,
        title=title,
    )


class ClusterAnimation(FuncAnimation):
    """A ``FuncAnimation`` of K-means frames that remembers how it was made, so
    :func:`viz.save` can render it again, headless, at any frame rate."""

    frames_source: FrameSource
    scene: Scene
    options: dict[str, Any]
    renderer: Renderer


def check_frames(frames: Any) -> FrameSource:
    """A list (or tuple) of frames or a generator function; never a generator."""
    if inspect.isgenerator(frames) or isinstance(frames, Iterator):
        raise TypeError(
            "frames must be a list of frames or a generator function, not a generator "
            "object: matplotlib replays an animation's frames, and a consumed generator "
            "silently drops or breaks them (pass `list(frames)` or the function itself)"
        )
    if callable(frames) or isinstance(frames, Sequence):
        return frames
    raise TypeError(f"frames must be a list of Frame or a generator function, got {frames!r}")


def as_scene(points: Any) -> Scene:
    """A :class:`Scene` from a Scene, or from host points (projected when d > 2)."""
    if isinstance(points, Scene):
        return points
    from kmeans_gpu.display import pca_2d

    host = np.asarray(points, dtype=np.float64)
    if host.ndim != 2:
        raise ValueError(f"points must be 2-D (n_points, n_features), got shape {host.shape}")
    projection = pca_2d(host, backend="numpy")
    return Scene(projection(host), None, projection)


def animate(
    frames: FrameSource,
    points: Any,
    *,
    interval: int = 500,
    repeat: bool = True,
    blit: bool = True,
    trails: bool = False,
    inertia_inset: bool = False,
    palette: str = "hsv",
    title: str | None = None,
    fig: Any = None,
    ax: Axes | None = None,
) -> ClusterAnimation:
    """Animate a K-means run.

    Parameters
    ----------
    frames : list of Frame, or a generator function returning an iterator of Frame
        A generator function is called again each time the animation restarts.
    points : Scene or array of shape (n_display, n_features)
        The points drawn (the sample the frames' labels refer to). More than two
        features are shown through a PCA projection.
    interval : int, default=500
        Milliseconds between frames.
    repeat : bool, default=True
    blit : bool, default=True
    trails : bool, default=False
        Draw each centroid's path.
    inertia_inset : bool, default=False
        Inset of inertia per iteration (frames must be a list).
    palette : {"hsv", "colorblind"}, default="hsv"
        The blog post's hues, or colours (and marker shapes) told apart with colour-vision
        deficiencies; see :func:`cluster_colors`.
    title : str, default=None
        The axes' title; None is ``K-means: k = …, n = …`` (see :func:`scene_title`),
        "" none.
    fig, ax : matplotlib Figure and Axes, default=None
        Where to draw; a new figure by default.

    Returns
    -------
    ClusterAnimation
        A ``matplotlib.animation.FuncAnimation``; keep a reference to it while it plays.
    """
    import matplotlib.pyplot as plt

    source = check_frames(frames)
    check_palette(palette)
    scene = as_scene(points)
    if ax is None:
        if fig is None:
            fig, ax = plt.subplots()
        else:
            ax = fig.subplots()
    fig = ax.figure
    renderer = renderer_for(
        ax,
        source,
        scene,
        trails=trails,
        inertia_inset=inertia_inset,
        palette=palette,
        title=title,
    )
    anim = ClusterAnimation(
        fig,
        renderer.draw,
        frames=cast(Any, source),
        init_func=renderer.clear,
        interval=interval,
        repeat=repeat,
        blit=blit,
        cache_frame_data=False,
    )
    anim.frames_source = source
    anim.scene = scene
    anim.renderer = renderer
    anim.options = {
        "interval": interval,
        "trails": trails,
        "inertia_inset": inertia_inset,
        "palette": palette,
        "title": renderer.ax.get_title(),
    }
    return anim
