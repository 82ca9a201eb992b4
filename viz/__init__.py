"""Animate K-means runs with matplotlib, and export them to mp4 or GIF.

Consumes :class:`kmeans_gpu.Frame` streams; imports matplotlib, never CuPy.
"""

from __future__ import annotations

try:
    import matplotlib  # noqa: F401
except ImportError as exc:  # say which extra brings it
    raise ImportError(
        'viz needs matplotlib: pip install "kmeans-gpu[viz]" (matplotlib, Pillow, '
        "imageio-ffmpeg, tqdm)"
    ) from exc

from ._export import (
    FFMPEG_TIMEOUT,
    WRITERS,
    FFmpegError,
    Saved,
    WriterUnavailableError,
    check_target,
    default_filename,
    find_ffmpeg,
    save,
)
from ._interactive import InteractiveSession, run_menu
from ._render import (
    PALETTES,
    ClusterAnimation,
    Renderer,
    animate,
    cluster_colors,
    cluster_markers,
    scene_title,
    set_axis_limits,
)

__all__ = [
    "FFMPEG_TIMEOUT",
    "PALETTES",
    "WRITERS",
    "ClusterAnimation",
    "FFmpegError",
    "InteractiveSession",
    "Renderer",
    "Saved",
    "WriterUnavailableError",
    "animate",
    "check_target",
    "cluster_colors",
    "cluster_markers",
    "default_filename",
    "find_ffmpeg",
    "run_menu",
    "save",
    "scene_title",
    "set_axis_limits",
]
