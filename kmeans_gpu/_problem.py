"""The data as the solver sees it: centred on its mean and, for extreme magnitudes,
scaled by a power of two (exact in floating point) so that squared distances neither
overflow nor underflow."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .backends import Array, Backend


@dataclass(frozen=True)
class Problem:
    """A validated, centred (and possibly rescaled) copy of X with its weights.

    ``X = (X_input - mean) * 2**scale_exponent``; centres move between the caller's
    units and the working units with :meth:`to_working` and :meth:`from_working`.
    """

    backend: Backend
    X_input: Array
    X: Array
    weights: Array | None
    mean: Array
    scale_exponent: int
    variance: float
    working_memory: int | None = None
    #: precision of the distance products ("exact", "tf32", "bf16"; see _precision)
    precision: str = "exact"

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

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
        itemsize = 8 if self.X.dtype == self.backend.xp.float64 else 4
        budget = self.working_memory or self.backend.default_working_memory()
        rows = max(1, budget // (2 * itemsize * (n_clusters + self.n_features)))
        rows = self.backend.chunk_rows(self.n_samples, rows)
        return [
            (start, min(start + rows, self.n_samples)) for start in range(0, self.n_samples, rows)
        ]


def _rescale(x: Array, exponent: int) -> Array:
    """``x * 2**exponent`` (exact), in two halves so each factor fits x's dtype."""
    if exponent == 0:
        return x
    half = exponent // 2
    return (x * 2.0**half) * 2.0 ** (exponent - half)


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
    mean = backend.column_mean(X) if center is None else center
    if not bool(xp.all(xp.isfinite(mean))):  # the sum overflowed: average scaled data
        pre = _scale_exponent(_max_abs(xp, X), finfo)
        mean = _rescale(xp.mean(_rescale(X, pre), axis=0), -pre)
    centred = X - mean
    exponent = _scale_exponent(_max_abs(xp, centred), finfo)
    centred = _rescale(centred, exponent)
    # mean(var(X, axis=0)) as E[x²] − E[x]² per feature, without an n × d temporary
    n, d = int(X.shape[0]), int(X.shape[1])
    flat = xp.reshape(centred, (n * d,))
    column_means = backend.column_mean(centred)
    variance = (
        float(xp.vecdot(flat, flat)) / (n * d) - float(xp.vecdot(column_means, column_means)) / d
    )
    variance = max(variance, 0.0)
    return Problem(
        backend=backend,
        X_input=X,
        X=centred,
        weights=weights,
        mean=mean,
        scale_exponent=exponent,
        variance=variance,
        working_memory=working_memory,
    )
