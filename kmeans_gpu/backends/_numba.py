"""NumPy with compiled kernels for the work inside a chunk.

Used for ``backend="numpy"`` when numba is installed (``pip install "kmeans-gpu[numba]"``)
and ``KMEANS_GPU_NUMBA`` is not ``0``. It runs the same chunks on the same threads as
:class:`~kmeans_gpu.backends._numpy.NumpyBackend` and replaces what happens inside one:

* few clusters and features: the scores are computed in the kernel, a block of rows
  at a time, with no matrix product at all, and only the labels and near-tie flags
  reach memory;
* otherwise: BLAS computes ``−2 C·Xᵀ`` for a cache-sized block of rows, and one
  compiled pass adds ``‖c‖²`` and keeps the two smallest scores, vectorised over rows;
* per-cluster sums, distances and the inertia in one compiled pass each, with the same
  float64 operations in the same order as the pure NumPy path (the same bits).

numba itself is imported once the process has done enough work to be worth it
(loading it takes about half a second): small problems run the pure NumPy path, which
gives the same results.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np

from ._base import Array, rescale
from ._numpy import NumpyBackend

#: Scores are computed inside the kernel for up to this many features...
DIRECT_FEATURES = 8
#: ... and up to this many clusters × features.
DIRECT_WORK = 512
#: Bytes of one block of BLAS scores.
SCAN_BLOCK_BYTES = 1 << 22
_EMPTY = np.empty(0, dtype=np.float32)
logger = logging.getLogger("kmeans_gpu")
#: Work (rows × columns, summed over calls) after which numba is loaded.
SMALL_WORK = 1 << 23
_work_done = [0]


@functools.cache
def _load() -> ModuleType | None:
    """The kernels' module, or None where numba cannot load (the pure path runs)."""
    try:
        from . import _numba_kernels
    except Exception as exc:  # a broken numba or llvmlite, an unusable cache...
        logger.warning("numba kernels unavailable (%s): the pure NumPy path runs", exc)
        return None
    return _numba_kernels


def _kernels(work: int) -> ModuleType | None:
    """The compiled kernels, once the work done so far (with ``work``, this call's) is
    worth loading them."""
    if "kmeans_gpu.backends._numba_kernels" in sys.modules:
        return _load()
    _work_done[0] += work  # (a race may miss a count: no matter)
    return _load() if _work_done[0] >= SMALL_WORK else None


def _factors(exponent: int) -> tuple[float, float]:
    """The two powers of two ``rescale`` multiplies by, in order."""
    half = exponent // 2
    return 2.0**half, 2.0 ** (exponent - half)


class NumbaBackend(NumpyBackend):
    """The NumPy backend with the chunk's work compiled by numba."""

    def __reduce__(self) -> tuple[Any, ...]:
        from ._numpy import _numpy_backend

        return (_numpy_backend, (True,))

    def labels_and_ties(
        self,
        X: Array,
        centers: Array,
        centers_sq: Array,
        rows_sq: Array,
        factor: float,
        largest: Array,
    ) -> tuple[Array, Array]:
        k, d = centers.shape
        kernels = _kernels(X.shape[0] * k * d)
        if kernels is None:
            return super().labels_and_ties(X, centers, centers_sq, rows_sq, factor, largest)
        m, scalar = X.shape[0], X.dtype.type
        margin = (scalar(factor), scalar(largest))
        labels, best, second = self._nearest_two_buffers(m, X.dtype)
        near = self._scratch("near", m, np.bool_)
        if d <= DIRECT_FEATURES and k * d <= DIRECT_WORK:
            kernels.direct_labels(X, -2.0 * centers, centers_sq, rows_sq, *margin, labels, near)
            return labels, near
        for start, stop in self._scan(kernels, X, centers, centers_sq, labels, best, second):
            out = best[start:stop], second[start:stop], rows_sq[start:stop]
            kernels.near_ties(*out, *margin, near[start:stop])
        return labels, near

    def nearest_two(
        self, X: Array, centers: Array, centers_sq: Array
    ) -> tuple[Array, Array, Array]:
        k, d = centers.shape
        kernels = _kernels(X.shape[0] * k * d)
        if kernels is None:
            return super().nearest_two(X, centers, centers_sq)
        labels, best, second = self._nearest_two_buffers(X.shape[0], X.dtype)
        for _ in self._scan(kernels, X, centers, centers_sq, labels, best, second):
            pass
        return labels, best, second

    def _scan(
        self,
        kernels: ModuleType,
        X: Array,
        centers: Array,
        centers_sq: Array,
        labels: Array,
        best: Array,
        second: Array,
    ) -> Iterator[tuple[int, int]]:
        """BLAS scores a cache-sized block of rows at a time, each block's labels, best
        and second scores written by the compiled scan; yields each block's rows."""
        for start, stop, scores in self._score_blocks(
            X, centers, centers_sq, transposed=True, add_squares=False,
            block_bytes=SCAN_BLOCK_BYTES,
        ):  # fmt: skip
            kernels.scan_two(scores, centers_sq, labels[start:stop], best[start:stop],
                             second[start:stop])  # fmt: skip
            yield start, stop

    def cluster_sums(
        self,
        X: Array,
        origin: tuple[Array, int],
        labels: Array,
        weights: Array | None,
        n_clusters: int,
        deterministic: bool = False,  # always: each cluster's rows added in row order
    ) -> tuple[Array, Array]:
        kernels = _kernels(X.shape[0] * X.shape[1])
        if kernels is None:
            return super().cluster_sums(X, origin, labels, weights, n_clusters)
        mean, exponent = origin
        before = exponent < 0
        shifted = rescale(mean, exponent) if before else mean
        sums = np.zeros((n_clusters, X.shape[1]))
        weight_sums = np.zeros(n_clusters)
        w = _EMPTY if weights is None else weights
        factors = _factors(exponent)
        block = self.sum_block_rows
        kernels.cluster_sums(X, labels, w, shifted, *factors, before, block, sums, weight_sums)
        return sums, weight_sums

    def sq_distances(self, X: Array, centers: Array, labels: Array, exponent: int) -> Array:
        kernels = _kernels(X.shape[0] * X.shape[1])
        if kernels is None:
            return super().sq_distances(X, centers, labels, exponent)
        out = np.empty(X.shape[0], dtype=np.float64)
        kernels.sq_distances(X, centers, labels, *_factors(exponent), out)
        return out

    def inertia_of(
        self, X: Array, centers: Array, labels: Array, weights: Array | None, exponent: int
    ) -> Array:
        kernels = _kernels(X.shape[0] * X.shape[1])
        if kernels is None:
            return super().inertia_of(X, centers, labels, weights, exponent)
        w = _EMPTY if weights is None else weights
        total = kernels.sq_distance_sum(
            X, centers, labels, w, *_factors(exponent), self.sum_block_rows
        )
        return np.asarray(total)
