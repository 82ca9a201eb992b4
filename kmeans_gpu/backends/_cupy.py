"""CuPy: the generic backend on a CUDA device, with scatter-add sums."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import Array, Backend


class CupyBackend(Backend):
    def __init__(self) -> None:
        import array_api_compat.cupy as xp
        import cupy

        super().__init__(xp, "cupy")
        self._cupy = cupy

    def owns(self, x: object) -> bool:
        return isinstance(x, self._cupy.ndarray)

    def asarray(self, x: Any, *, dtype: Any = None, device: Any = None) -> Array:
        if device is None:
            return self._cupy.asarray(x, dtype=dtype)
        with device:
            return self._cupy.asarray(x, dtype=dtype)

    def to_numpy(self, x: Array) -> np.ndarray:
        return self._cupy.asnumpy(x)

    def cluster_sums(
        self, X: Array, labels: Array, weights: Array | None, n_clusters: int
    ) -> tuple[Array, Array]:
        import cupyx

        cp = self._cupy
        weight_sums = cp.bincount(labels, weights=weights, minlength=n_clusters)
        rows = X if weights is None else X * weights[:, None]
        sums = cp.zeros((n_clusters, X.shape[1]), dtype=X.dtype)
        cupyx.scatter_add(sums, labels, rows)
        return sums, weight_sums.astype(X.dtype, copy=False)
