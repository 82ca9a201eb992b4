"""kmeans-gpu: K-means written once against the Python array API.

It runs on CuPy (CUDA GPUs), on NumPy (dense, or SciPy sparse), on any array that
follows the array API standard, and on Dask arrays of those. Importing this package
imports neither CuPy, Dask, matplotlib nor scikit-learn; ``KMeans`` and
``MiniBatchKMeans`` (which build on scikit-learn's estimator base classes) are imported
on first use.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from ._api import kmeans, kmeans_plusplus
from ._kmeans_parallel import kmeans_parallel
from .backends import available_backends, get_backend
from .frames import Frame, iter_frames
from .kmeans_nd import (
    DimensionMismatchError,
    KMeansND,
    assign_points_to_centroids,
    generate_clusters,
    initialize_centroids,
    recalc_centroids,
)

if TYPE_CHECKING:
    from .estimator import KMeans
    from .minibatch import MiniBatchKMeans

__version__ = "0.1.0"

__all__ = [
    "DimensionMismatchError",
    "Frame",
    "KMeans",
    "KMeansND",
    "MiniBatchKMeans",
    "assign_points_to_centroids",
    "available_backends",
    "generate_clusters",
    "get_backend",
    "initialize_centroids",
    "iter_frames",
    "kmeans",
    "kmeans_parallel",
    "kmeans_plusplus",
    "recalc_centroids",
]

logging.getLogger("kmeans_gpu").addHandler(logging.NullHandler())

_LAZY = {"KMeans": "kmeans_gpu.estimator", "MiniBatchKMeans": "kmeans_gpu.minibatch"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kmeans_gpu' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
