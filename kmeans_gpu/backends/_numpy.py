"""NumPy: the generic backend with a few faster single operations."""

from __future__ import annotations

import numpy as np

from ._base import Array, Backend


class NumpyBackend(Backend):
    def __init__(self) -> None:
        import array_api_compat.numpy as xp

        super().__init__(xp, "numpy")

    def owns(self, x: object) -> bool:
        return isinstance(x, np.ndarray)

    def device(self, x: Array) -> str:
        return "cpu"

    def to_numpy(self, x: Array) -> np.ndarray:
        return np.asarray(x)

    def assign(self, X: Array, centers: Array, centers_sq: Array) -> Array:
        scores = X @ centers.T
        scores *= -2.0
        scores += centers_sq
        return scores.argmin(axis=1).astype(np.int32, copy=False)

    def cluster_sums(
        self, X: Array, labels: Array, weights: Array | None, n_clusters: int
    ) -> tuple[Array, Array]:
        weight_sums = np.bincount(labels, weights=weights, minlength=n_clusters)
        rows = X if weights is None else X * weights[:, None]
        if X.shape[1] <= 8:
            sums = np.stack(
                [np.bincount(labels, weights=col, minlength=n_clusters) for col in rows.T],
                axis=1,
            )
        else:
            from scipy import sparse

            n = labels.shape[0]
            onehot = sparse.csr_array(
                (np.ones(n, dtype=X.dtype), (labels, np.arange(n))), shape=(n_clusters, n)
            )
            sums = onehot @ rows
        return sums.astype(X.dtype, copy=False), weight_sums.astype(X.dtype, copy=False)

    def sq_dist_to_assigned(self, X: Array, centers: Array, labels: Array) -> Array:
        diff = (X - centers[labels]).astype(np.float64, copy=False)
        return np.einsum("ij,ij->i", diff, diff)

    def farthest(self, distances: Array, n: int) -> Array:
        # scikit-learn's choice, so that relocations (and therefore labels) agree with it.
        return np.argpartition(distances, -n)[: -n - 1 : -1]
