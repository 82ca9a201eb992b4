"""SciPy sparse data on the NumPy backend: the same solver, with the data's rows as a CSR
matrix that is never made dense as a whole.

The origin of the working rows is 0 (centring would fill the matrix), so working rows
are the rows as given, times ``2**s`` when their magnitudes need it. What changes is
how single operations meet a sparse row:

* the scores ``‖c‖² − 2x·c``: a sparse·dense product per cache-sized block of rows;
* the per-cluster sums: ``bincount`` over the stored values, each (cluster, feature)
  sum added in row order, as the dense path adds it (the zeros it adds change no bit),
  so a sparse matrix's sums are bitwise those of its dense form with the origin at 0;
* ``‖x − c‖²`` in float64: the differences over the stored entries plus the rest of
  ``‖c‖²`` (``‖c‖² − Σ c_f²`` over the stored features). Where that subtraction could
  lose more than a few roundings of the result (a row close to its centre compared
  with the centre's norm), the row is made dense, a piece of rows at a time, and
  computed from float64 differences as on dense data.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import scipy.sparse as sp

from ._base import Array, rescale
from ._numpy import NumpyBackend

#: Bytes of the dense rows a piece of the float64 re-computation makes at once.
DENSE_PIECE_BYTES = 1 << 23
#: A row's ``‖x − c‖²`` is taken from the stored entries when ``‖c‖²`` is at most this
#: many times it (the subtraction then costs at most a few roundings of the result).
NORM_RATIO = 4.0


def as_csr(X: Any) -> sp.csr_array:
    """X as a CSR array in canonical format (sorted indices, no duplicates); X itself is
    never modified (a copy is made where X must change)."""
    csr = sp.csr_array(X if X.format == "csr" else X.tocsr())
    if not csr.has_canonical_format:
        csr = csr.copy()
        csr.sum_duplicates()
    return csr


def scaled(X: sp.csr_array, exponent: int, dtype: Any) -> sp.csr_array:
    """``X · 2**exponent`` in ``dtype`` (X itself when nothing changes)."""
    if exponent == 0 and X.dtype == dtype:
        return X
    data = rescale(X.data.astype(np.float64), exponent).astype(dtype)
    return sp.csr_array((data, X.indices, X.indptr), shape=X.shape)


class SparseBackend(NumpyBackend):
    """The NumPy backend for data given as a SciPy sparse matrix (CSR inside)."""

    sparse = True

    def __init__(self) -> None:
        super().__init__()
        self.name = "numpy"

    def owns(self, x: object) -> bool:
        return isinstance(x, np.ndarray) or sp.issparse(x)

    # -- rows of the data -------------------------------------------------------------
    def take_rows(self, X: Array, indices: Array) -> Array:
        if not sp.issparse(X):
            return super().take_rows(X, indices)
        return X[np.asarray(indices, dtype=np.intp)]

    def dense(self, X: Array) -> Array:
        return X.toarray() if sp.issparse(X) else X

    def row_norms(self, rows: Array) -> Array:
        if not sp.issparse(rows):
            return super().row_norms(rows)
        return self.row_sq64(self.rows64(rows, (None, 0))).astype(rows.dtype)

    def rows64(self, X: Array, origin: tuple[Array, int]) -> Array:
        if not sp.issparse(X):
            return super().rows64(X, origin)
        return scaled(X, origin[1], np.float64)

    def row_sq64(self, rows: Array) -> Array:
        if not sp.issparse(rows):
            return super().row_sq64(rows)
        squares = rows.data * rows.data
        return np.bincount(_row_of_entries(rows), weights=squares, minlength=rows.shape[0])

    def cross(self, a: Array, rows: Array) -> Array:
        if not sp.issparse(rows):
            return super().cross(a, rows)
        return np.ascontiguousarray((rows @ np.ascontiguousarray(a.T)).T)

    # -- the pass over the data -------------------------------------------------------
    def _operand(self, centers: Array) -> Array:
        # transposed, C-ordered once: SciPy would copy a transposed view on every block
        return np.ascontiguousarray(centers.T)

    def _product(self, rows: Array, centers: Array, out: np.ndarray, transposed: bool) -> None:
        product = rows @ centers  # sparse · dense (d, k): a dense (m, k) array
        out[...] = product.T if transposed else product

    def cluster_sums(
        self,
        X: Array,
        origin: tuple[Array, int],
        labels: Array,
        weights: Array | None,
        n_clusters: int,
        deterministic: bool = False,  # always: each cluster's rows added in row order
    ) -> tuple[Array, Array]:
        if not sp.issparse(X):
            return super().cluster_sums(X, origin, labels, weights, n_clusters)
        d = X.shape[1]
        values = rescale(X.data.astype(np.float64), origin[1])
        w = None if weights is None else weights.astype(np.float64)
        rows = _row_of_entries(X)
        if w is not None:
            values *= w[rows]
        # bincount adds each bin's values in the order given: CSR order is row order
        bins = labels.astype(np.int64)[rows] * d + X.indices
        sums = np.bincount(bins, weights=values, minlength=n_clusters * d)
        weight_sums = np.bincount(labels, weights=w, minlength=n_clusters).astype(np.float64)
        return sums.reshape(n_clusters, d), weight_sums

    def sq_distances(self, X: Array, centers: Array, labels: Array, exponent: int) -> Array:
        if not sp.issparse(X):
            return super().sq_distances(X, centers, labels, exponent)
        m = X.shape[0]
        C = rescale(centers.astype(np.float64), exponent)
        norms = np.cumsum(C * C, axis=1)[:, -1]  # features added one after another
        rows = _row_of_entries(X)
        at = C[labels[rows], X.indices]
        diff = rescale(X.data.astype(np.float64), exponent) - at
        stored = np.bincount(rows, weights=diff * diff, minlength=m)
        covered = np.bincount(rows, weights=at * at, minlength=m)
        total = norms[labels]
        found = stored + np.maximum(total - covered, 0.0)
        loose = np.nonzero(total > NORM_RATIO * found)[0]
        step = max(1, DENSE_PIECE_BYTES // (8 * X.shape[1]))
        for a in range(0, loose.shape[0], step):
            which = loose[a : a + step]
            found[which] = super().sq_distances(
                X[which].toarray(), centers, labels[which], exponent
            )
        return found


def _row_of_entries(X: sp.csr_array) -> np.ndarray:
    """The row of every stored entry of a CSR matrix."""
    return np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))


@functools.cache
def make_backend() -> SparseBackend:
    """The sparse NumPy backend of this process."""
    return SparseBackend()
