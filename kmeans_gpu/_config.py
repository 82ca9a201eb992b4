"""Every environment variable the package reads, read here.

=====================  ================================================================
``KMEANS_GPU_NUMBA``   ``0`` runs the pure NumPy path even where numba is installed
                       (read when the NumPy backend is asked for).
``KMEANS_GPU_FFMPEG``  the ffmpeg executable ``viz`` writes mp4 files with.
=====================  ================================================================
"""

from __future__ import annotations

import os

NUMBA = "KMEANS_GPU_NUMBA"
FFMPEG = "KMEANS_GPU_FFMPEG"


def numba_enabled() -> bool:
    """Whether the NumPy backend may use numba's kernels (``KMEANS_GPU_NUMBA`` != 0)."""
    return os.environ.get(NUMBA, "").strip() != "0"


def ffmpeg_path() -> str | None:
    """The ffmpeg ``KMEANS_GPU_FFMPEG`` names, or None."""
    return os.environ.get(FFMPEG) or None
