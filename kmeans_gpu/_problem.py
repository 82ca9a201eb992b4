"""The data as the solver sees it: centred on its mean and, for extreme magnitudes,
scaled by a power of two (exact in floating point) so that squared distances neither
overflow nor underflow."""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any

from .backends import Array, Backend
from .backends._base import rescale as _rescale


@dataclass(frozen=True)
class Problem:
    """Validated X with its weights, as the solver sees it: centred (and possibly
    rescaled).

    Working rows are ``(X_input - mean) * 2**scale_exponent``. A backend that keeps a
    working copy (NumPy: memory is cheap, one subtraction per iteration is not) has it
    in ``X_working``; the others (CuPy, array API libraries) make each chunk's working
    rows when they are used, so the data exist once in device memory. :meth:`rows` and
    :meth:`take` give working rows either way, bitwise the same. Centres move between
    the caller's units and the working units with :meth:`to_working` and
    :meth:`from_working`.
    """

    backend: Backend
    X_input: Array
    weights: Array | None
    mean: Array
    scale_exponent: int
    variance: float
    working_memory: int | None = None
    #: precision of the distance products ("exact", "tf32", "bf16"; see _precision)
    precision: str = "exact"
    #: per-cluster sums bitwise reproducible from run to run (see Backend.cluster_sums)
    deterministic: bool = False
    #: the whole working copy, when the backend keeps one
    X_working: Array | None = None

    @property
    def n_samples(self) -> int:
        return int(self.X_input.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X_input.shape[1])

    @property
    def dtype(self) -> Any:
        return self.X_input.dtype

    @property
    def device(self) -> Any:
        return self.backend.device(self.X_input)

    def rows(self, start: int, stop: int) -> Array:
        """Working rows ``start:stop``."""
        if self.X_working is not None:
            return self.X_working[start:stop, ...]
        return self._working(self.X_input[start:stop, ...])

    def source_rows(self, start: int, stop: int) -> tuple[Array, tuple[Array, int] | None]:
        """Rows ``start:stop`` as they are stored, and the origin ``(mean,
        scale_exponent)`` that makes them working rows (``Backend.working_rows``), or
        None when they already are (the working copy): for a backend that centres them
        inside its own kernels."""
        if self.X_working is not None:
            return self.X_working[start:stop, ...], None
        return self.X_input[start:stop, ...], (self.mean, self.scale_exponent)

    def take(self, indices: Array) -> Array:
        """Working rows at ``indices``."""
        take = self.backend.xp.take
        if self.X_working is not None:
            return take(self.X_working, indices, axis=0)
        return self._working(take(self.X_input, indices, axis=0))

    def _working(self, x: Array) -> Array:
        return self.backend.working_rows(x, self.mean, self.scale_exponent)

    @functools.cached_property
    def squared_row_norms(self) -> Array:
        """``‖x‖²`` of every working row, ``(n_samples,)``: computed the first time it is
        asked for (k-means++, the near-tie margins of reduced precisions), block by
        block, and kept for the fit (``n_samples`` values: the data's size / d)."""
        xp = self.backend.xp

        def block(start: int, stop: int) -> Array:
            rows = self.rows(start, stop)
            return xp.sum(rows * rows, axis=1)

        return xp.concat([block(a, b) for a, b in self.row_blocks(self.n_features)])

    def tolerance(self, tol: float) -> float:
        """scikit-learn's rule: ``tol`` times the mean per-feature variance."""
        return 0.0 if tol == 0 else self.variance * tol

    def to_working(self, centers: Array) -> Array:
        return _rescale(centers - self.mean, self.scale_exponent)

    def from_working(self, centers: Array) -> Array:
        return _rescale(centers, -self.scale_exponent) + self.mean

    def distances_from_working(self, distances: Array) -> Array:
        return _rescale(distances, -self.scale_exponent)

    def inertia_from_working(self, inertia: float) -> float:
        """Back to the caller's units (inf if the true value exceeds float64's range)."""
        try:
            return math.ldexp(inertia, -2 * self.scale_exponent)
        except OverflowError:
            return math.inf

    def chunks(self, n_clusters: int) -> list[tuple[int, int]]:
        """Row ranges whose ``rows × n_clusters`` blocks fit the working memory (and
        that the backend can share among its threads)."""
        return self.row_blocks(n_clusters + self.n_features)

    def assignment_chunks(
        self, n_clusters: int, precision: str | None = None, n_rows: int | None = None
    ) -> list[tuple[int, int]]:
        """Ranges of ``n_rows`` rows (default: all the samples) for an assignment at
        ``precision`` (default: the problem's): as many rows as the backend's temporaries
        for it fit the working memory."""
        columns = self.backend.assignment_columns(
            n_clusters, self.n_features, precision or self.precision, self.deterministic
        )
        return self.row_blocks(columns, self.n_samples if n_rows is None else n_rows)

    def row_blocks(self, columns: int, n_rows: int | None = None) -> list[tuple[int, int]]:
        """Ranges of ``n_rows`` rows (default: all the samples) whose ``rows × columns``
        temporaries fit the working memory."""
        n = self.n_samples if n_rows is None else n_rows
        rows = self.backend.chunk_rows(n, max(1, self.workspace // (2 * self.itemsize * columns)))
        return [(start, min(start + rows, n)) for start in range(0, n, rows)]

    @property
    def itemsize(self) -> int:
        return 8 if self.dtype == self.backend.xp.float64 else 4

    @property
    def workspace(self) -> int:
        """Bytes for temporaries: ``working_memory`` (:func:`make_problem` decides it
        once), or the backend's default."""
        return self.working_memory or self.backend.default_working_memory()


def _max_abs(xp: Any, x: Array) -> float:
    """``max |x|`` in two reductions, without an ``abs(x)`` temporary."""
    return max(float(xp.max(x)), -float(xp.min(x)))


def _scale_exponent(max_abs: float, finfo: Any) -> int:
    """The power of two that brings ``max_abs`` into [0.5, 1) when squares of values of
    that size could overflow or underflow; 0 (no scaling) otherwise."""
    if max_abs == 0.0:
        return 0
    high = math.frexp(float(finfo.max))[1] // 4
    low = math.frexp(float(finfo.smallest_normal))[1] // 4
    exponent = math.frexp(max_abs)[1]
    return 0 if low < exponent < high else -exponent


def make_problem(
    backend: Backend,
    X: Array,
    weights: Array | None,
    *,
    working_memory: int | None = None,
    center: Array | None = None,
) -> Problem:
    """Centre (and if needed rescale) a validated X; X itself is not modified.

    ``center`` replaces X's mean as the origin: a point fixed by a fitted model (the mean
    of its centres) makes each row's result independent of the other rows of X.
    """
    xp = backend.xp
    finfo = xp.finfo(X.dtype)
    n, d = int(X.shape[0]), int(X.shape[1])
    # the workspace, decided once for the whole fit (on CuPy from the free device
    # memory now, one query of the device instead of one per pass)
    working_memory = working_memory or backend.default_working_memory()
    # passes over the data a block of rows at a time: no second copy of X unless the
    # backend keeps one (its working copy); a block's temporaries (its centred rows and
    # one product of them) take at most half the working memory, even in float64
    step = max(1, working_memory // (32 * d))
    blocks = [(a, min(a + step, n)) for a in range(0, n, step)]
    mean = backend.column_mean(X) if center is None else center
    if not bool(xp.all(xp.isfinite(mean))):  # the sum overflowed: average scaled data
        pre = _scale_exponent(_max_abs(xp, X), finfo)
        mean = _rescale(xp.mean(_rescale(X, pre), axis=0), -pre)
    keep = backend.keeps_working_copy
    centred = X - mean if keep else None
    # max |x - mean| kept on the device block to block, read once
    largest: Array | None = None
    for a, b in blocks:
        x = centred[a:b, ...] if centred is not None else X[a:b, ...] - mean
        block = xp.maximum(xp.max(x), -xp.min(x))
        largest = block if largest is None else xp.maximum(largest, block)
    assert largest is not None  # n >= 1: at least one block
    exponent = _scale_exponent(float(largest), finfo)
    problem = Problem(
        backend=backend,
        X_input=X,
        weights=weights,
        mean=mean,
        scale_exponent=exponent,
        variance=0.0,
        working_memory=working_memory,
        X_working=None if centred is None else _rescale(centred, exponent),
    )
    # mean(var(X)) as E[x²] − E[x]² per feature, summed block by block on the device
    # (each block's sum of squares in X's dtype, added up in float64) and read once
    squares = xp.zeros((), dtype=xp.float64, device=backend.device(X))
    column_sums = xp.zeros(d, dtype=X.dtype, device=backend.device(X))
    for a, b in blocks:
        rows = problem.rows(a, b)
        flat = xp.reshape(rows, ((b - a) * d,))
        squares = squares + xp.astype(xp.vecdot(flat, flat), xp.float64)
        column_sums = column_sums + backend.column_mean(rows) * (b - a)
    column_means = column_sums / n
    variance = float(squares) / (n * d) - float(xp.vecdot(column_means, column_means)) / d
    return dataclasses.replace(problem, variance=max(variance, 0.0))
