"""NumPy with compiled kernels: labels, per-cluster sums and changed labels in one pass.

Used for ``backend="numpy"`` when numba is installed (``pip install "kmeans-gpu[numba]"``)
and ``KMEANS_GPU_NUMBA`` is not ``0``. It runs the same chunks on the same threads as
:class:`~kmeans_gpu.backends._numpy.NumpyBackend` and replaces only what happens inside
a chunk:

* few clusters and features: the scores are computed in the kernel, a block of rows
  at a time, with no matrix product at all;
* otherwise: BLAS computes ``−2 C·Xᵀ`` for a cache-sized block of rows, and one
  compiled pass adds ``‖c‖²`` and keeps a running minimum over the clusters,
  vectorised over the rows.

Each labelled block's rows are then added into the per-cluster sums (float64) while
they are still in cache, and the changed labels are counted in the same chunk.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _numba_kernels as kernels
from ._base import Array
from ._numpy import NumpyBackend

#: Scores are computed inside the kernel for up to this many features...
DIRECT_FEATURES = 8
#: ... and up to this many clusters × features.
DIRECT_WORK = 512
#: Bytes of one block of BLAS scores (4 MiB measured best on W2 and W3, by a few %).
SCAN_BLOCK_BYTES = 1 << 22
_EMPTY_LABELS = np.empty(0, dtype=np.int32)


class NumbaBackend(NumpyBackend):
    """The NumPy backend with the chunk's work compiled by numba."""

    def _labels(self, X: Array, centers: Array, centers_sq: Array, sums: Any) -> Array:
        """Labels of the rows of ``X`` (this thread's buffer); ``sums(start, stop,
        labels)`` is called on every block of rows as soon as it is labelled."""
        k, d = centers.shape
        labels = self._scratch("labels", X.shape[0], np.int32)
        if d <= DIRECT_FEATURES and k * d <= DIRECT_WORK:
            kernels.direct_labels(X, -2.0 * centers, centers_sq, labels)
            sums(0, X.shape[0], labels)
            return labels
        for start, stop, scores in self._score_blocks(
            X, centers, centers_sq, transposed=True, add_squares=False,
            block_bytes=SCAN_BLOCK_BYTES,
        ):  # fmt: skip
            kernels.scan_labels(scores, centers_sq, labels[start:stop])
            sums(start, stop, labels[start:stop])
        return labels

    def assign(
        self, X: Array, centers: Array, centers_sq: Array, precision: str = "exact"
    ) -> Array:
        return self._labels(X, centers, centers_sq, lambda *_: None)

    def assign_and_sum(
        self,
        X: Array,
        centers: Array,
        centers_sq: Array,
        weights: Array | None,
        previous: Array | None,
        precision: str = "exact",
        deterministic: bool = False,  # always: rows are summed in order
        with_inertia: bool = False,
    ) -> tuple[Array, Array, Array, Array, Array | None]:
        k, d = centers.shape
        sums = np.zeros((k, d), dtype=np.float64)
        weight_sums = np.zeros(k, dtype=np.float64)
        w = np.empty(0, dtype=X.dtype) if weights is None else weights
        # the inertia of each block is taken while its rows are in cache
        against = centers if with_inertia else centers[:0]
        inertia = [0.0]

        def add(start: int, stop: int, labels: np.ndarray) -> None:
            block = X[start:stop]
            inertia[0] += kernels.accumulate(
                block, labels, w[start:stop], sums, weight_sums, against
            )

        labels = self._labels(X, centers, centers_sq, add)
        changed = kernels.count_changed(labels, _EMPTY_LABELS if previous is None else previous)
        return (
            labels,
            sums.astype(X.dtype, copy=False),
            weight_sums.astype(X.dtype, copy=False),
            np.asarray(changed),
            np.asarray(inertia[0]) if with_inertia else None,
        )

    def sq_dist_to_assigned(self, X: Array, centers: Array, labels: Array) -> Array:
        out = np.empty(X.shape[0], dtype=np.float64)
        kernels.sq_distances(X, centers, labels, out)
        return out

    def inertia_of(self, X: Array, centers: Array, labels: Array, weights: Array | None) -> Array:
        w = np.empty(0, dtype=X.dtype) if weights is None else weights
        return np.asarray(kernels.sq_distance_sum(X, centers, labels, w))
