"""The data as the solver sees it.

The distance products run on *working rows*: ``(x − mean)·2**s`` rounded to the data's
dtype, where ``mean`` is the column mean (a value of the data's dtype) and ``2**s`` a
power of two that keeps squares away from overflow and underflow (``s = 0`` for all
but extreme magnitudes). Everything that must be exact (the re-checked labels, the
per-cluster sums, the inertia) is computed from the rows as given, in float64.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backends import Array, Backend
from .backends._base import centred64, fold, rescale

#: On backends that compute a chunk's scores in smaller blocks: about this many chunks
#: per thread (each chunk costs a dispatch), of at least this many rows.
CHUNKS_PER_WORKER, MIN_CHUNK_ROWS = 2, 4096
#: up to this many columns, column extremes are taken a column at a time; above, over
#: groups of this many rows first
FEW_COLUMNS, EXTREMES_GROUP = 16, 1024


@dataclass(frozen=True)
class Problem:
    """Validated X and its weights, with the origin of the working rows.

    ``mean`` is a float64 array holding a value of X's dtype; ``scale_exponent`` the
    ``s`` of ``2**s``; ``X_working`` the whole working copy when the backend keeps one
    (NumPy), else None (the working rows of a chunk are made when it is used).
    """

    backend: Backend
    X: Array
    weights: Array | None
    mean: Array
    scale_exponent: int
    variance: float
    workspace: int
    deterministic: bool = False
    X_working: Array | None = None

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def dtype(self) -> Any:
        return self.X.dtype

    @property
    def device(self) -> Any:
        return self.backend.device(self.X)

    @property
    def itemsize(self) -> int:
        return 8 if self.dtype == self.backend.xp.float64 else 4

    @property
    def origin(self) -> tuple[Array, int]:
        """``(mean, scale_exponent)``: what makes rows working rows."""
        return self.mean, self.scale_exponent

    @property
    def unit_roundoff(self) -> float:
        return 2.0**-53 if self.itemsize == 8 else 2.0**-24

    def rows(self, start: int, stop: int) -> Array:
        """Working rows ``start:stop``."""
        if self.X_working is not None:
            return self.X_working[start:stop, ...]
        return self.working(self.X[start:stop, ...])

    def take(self, indices: Array) -> Array:
        """Working rows at ``indices``, as a dense array (a few rows)."""
        backend = self.backend
        if self.X_working is not None:
            return backend.dense(backend.take_rows(self.X_working, indices))
        return self.working(backend.dense(backend.take_rows(self.X, indices)))

    def given_rows(self, indices: Array) -> Array:
        """Rows of X at ``indices``, as given (sparse rows stay sparse)."""
        return self.backend.take_rows(self.X, indices)

    def dense_rows(self, indices: Array) -> Array:
        """Rows of X at ``indices`` as a dense array of X's dtype (a few rows)."""
        return self.backend.dense(self.given_rows(indices))

    def subset(self, indices: Array, weighted: bool = True) -> Problem:
        """The problem of the rows at ``indices`` (repeats allowed), with this one's
        origin, scale and variance; their weights unless not ``weighted`` (then every
        row weighs 1)."""
        backend = self.backend
        weights = None
        if weighted and self.weights is not None:
            weights = backend.xp.take(self.weights, indices)
        working = None
        if self.X_working is not None:
            working = backend.take_rows(self.X_working, indices)
        X = backend.take_rows(self.X, indices)
        return dataclasses.replace(self, X=X, weights=weights, X_working=working)

    def part(self, start: int, stop: int) -> Problem:
        """The rows ``start:stop`` as a problem of their own, with the same origin."""

        def rows(x: Array | None) -> Array | None:
            return None if x is None else x[start:stop, ...]

        return dataclasses.replace(
            self, X=self.X[start:stop, ...], weights=rows(self.weights),
            X_working=rows(self.X_working),
        )  # fmt: skip

    def working(self, x: Array) -> Array:
        """Rows or centres of X's units and dtype in working units and X's dtype."""
        return self.backend.xp.astype(centred64(self.backend.xp, x, self.origin), self.dtype)

    def from_working(self, centers: Array) -> Array:
        """Float64 centres in working units, back in X's units and dtype."""
        xp, s = self.backend.xp, self.scale_exponent
        return xp.astype(rescale(rescale(self.mean, s) + centers, -s), self.dtype)

    @functools.cached_property
    def squared_row_norms(self) -> Array:
        """``‖x‖²`` of every working row ``(n_samples,)``, in X's dtype: computed block by
        block the first time it is asked for (the near-tie margins, k-means++), and kept
        for the fit."""
        backend = self.backend

        def block(start: int, stop: int) -> Array:
            return backend.row_norms(self.rows(start, stop))

        parts = list(backend.map_chunks(block, self.row_blocks(self.n_features)))
        return backend.xp.concat(parts)

    def tolerance(self, tol: float) -> float:
        """scikit-learn's rule: ``tol`` times the mean per-feature variance."""
        return 0.0 if tol == 0 else self.variance * tol

    def inertia_from_working(self, inertia: float) -> float:
        """A sum of squared working distances in X's units.

        Raises
        ------
        ValueError
            When it exceeds float64's range (float64 data of extreme spread).
        """
        try:
            return math.ldexp(inertia, -2 * self.scale_exponent)
        except OverflowError:
            raise ValueError(
                "the sum of squared distances exceeds float64's range: X is too spread "
                "out (rescale it)"
            ) from None

    def chunks(self, n_clusters: int) -> list[tuple[int, int]]:
        """The row ranges a pass over the data works on, one at a time per thread: as
        many rows as their temporaries fit half the working memory (the scores, unless
        the backend computes them in smaller blocks; the working rows; their float64
        sums), and on a threaded backend about two chunks per thread. No result depends
        on them: sums are added over the backend's fixed blocks of rows."""
        row_bytes = 8 * (self.n_features + 4) + self.itemsize * 2 * self.n_features
        if self.backend.max_chunk_rows is None:  # a chunk's scores are written at once
            row_bytes += self.itemsize * n_clusters
        return self.ranges(row_bytes)

    def row_blocks(self, columns: int) -> list[tuple[int, int]]:
        """Row ranges whose ``columns`` float64 temporaries per row fit half the working
        memory."""
        return self.ranges(8 * max(1, columns))

    def ranges(self, row_bytes: int) -> list[tuple[int, int]]:
        """Consecutive row ranges of at most as many rows as ``row_bytes`` per row fit
        half the working memory (and, on backends with ``max_chunk_rows``, at most that
        and about ``1 / (CHUNKS_PER_WORKER · concurrency)`` of the rows). Where the
        backend adds its sums over fixed blocks of rows, each range is a power-of-two
        number of blocks, aligned: a node of the tree :func:`fold` adds them in."""
        backend, n = self.backend, self.n_samples
        rows = max(1, self.workspace // (2 * row_bytes))
        if backend.max_chunk_rows is not None:
            share = max(MIN_CHUNK_ROWS, -(-n // (CHUNKS_PER_WORKER * backend.concurrency())))
            rows = min(rows, backend.max_chunk_rows, share)
        block = backend.sum_block_rows
        if block:
            rows = block << max(0, (rows // block).bit_length() - 1)
        return [(start, min(start + rows, n)) for start in range(0, n, rows)]

    def pieces(self, count: int, row_bytes: int) -> list[tuple[int, int]]:
        """Ranges over ``count`` items (rows gathered from anywhere) whose temporaries,
        ``row_bytes`` an item, fit half the working memory."""
        step = max(1, self.workspace // (2 * row_bytes))
        return [(start, min(start + step, count)) for start in range(0, count, step)]

    def blocks(self, start: int, stop: int) -> list[tuple[int, int]]:
        """The backend's fixed blocks of rows within a range of :meth:`ranges` (the
        range itself where the backend has none)."""
        block = self.backend.sum_block_rows
        if not block:
            return [(start, stop)]
        return [(a, min(a + block, stop)) for a in range(start, stop, block)]

    def reduce(
        self, terms: Callable[[int, int], Array | Iterator[Array]], ranges: list[tuple[int, int]]
    ) -> Array:
        """The column sums of ``terms(a, b)`` (float64, one row of terms per row of X)
        over ``ranges`` (each range run on one of the backend's threads), as
        :meth:`block_sums` adds them: the same bits whatever the ranges and threads."""

        def chunk(start: int, stop: int) -> tuple[int, int, Array]:
            return start, stop, self.block_sums(start, stop, terms(start, stop))

        return fold(self.backend.map_chunks(chunk, ranges), self.backend.sum_block_rows)

    def block_sums(self, start: int, stop: int, values: Array | Iterator[Array]) -> Array:
        """The column sums of ``values`` (float64, the terms of rows ``start:stop``, a
        range of :meth:`ranges`; or an iterator of such arrays, their sums concatenated,
        each array taken once the one before it is summed): summed within the backend's
        fixed blocks, the blocks added as :func:`fold` adds them."""
        xp, block = self.backend.xp, self.backend.sum_block_rows
        if isinstance(values, Iterator):  # (narrow columns side by side are slow to copy)
            return xp.concat([self.block_sums(start, stop, v) for v in values])
        if not block:  # a product too: a reduction down a tall array is slow on a GPU
            ones = xp.ones(
                (1, stop - start), dtype=values.dtype, device=self.backend.device(values)
            )
            return xp.reshape(ones @ values, (-1,))
        # a product with ones: for a fixed shape, the same sums every time, fast at any d
        full = (stop - start) // block * block
        device = self.backend.device(values)
        sums = []
        if full:
            shaped = xp.reshape(values[:full, ...], (full // block, block, -1))
            ones = xp.ones((1, block), dtype=values.dtype, device=device)
            sums.append(xp.reshape(ones @ shaped, (full // block, -1)))
        if full < stop - start:
            ones = xp.ones((1, stop - start - full), dtype=values.dtype, device=device)
            sums.append(ones @ values[full:, ...])
        per_block = xp.concat(sums, axis=0)
        blocks = self.blocks(start, stop)
        return fold([(a, b, per_block[i, ...]) for i, (a, b) in enumerate(blocks)], block)


def _scale_exponent(exponent: int | None, finfo: Any) -> int:
    """The power of two that brings values of binary exponent ``exponent`` (``x =
    f·2**exponent``, 0.5 <= f < 1) into [0.5, 1) when their squares could overflow or
    underflow in the dtype; 0 (no scaling) otherwise, and for all zeros (None)."""
    if exponent is None:
        return 0
    high = math.frexp(float(finfo.max))[1] // 4
    low = math.frexp(float(finfo.smallest_normal))[1] // 4
    return 0 if low < exponent < high else -exponent


def make_problem(
    backend: Backend,
    X: Array,
    weights: Array | None,
    *,
    working_memory: int | None = None,
    center: Array | None = None,
    deterministic: bool = False,
    working_copy: bool = True,
) -> Problem:
    """Centre (and if needed rescale) a validated X; X itself is not modified.

    ``center`` (float64) replaces X's mean as the origin: a point fixed by a fitted
    model (the mean of its centres) makes each row's answer independent of the other
    rows of X. Every pass over X here runs block by block, in a fixed order. Without
    ``working_copy`` no working copy of X is kept, even on a backend that would (the
    rows are made when used: for data read a batch at a time).

    Raises
    ------
    ValueError
        When X's sum of squared distances to its mean exceeds float64's range.
    """
    xp = backend.xp
    n, d = int(X.shape[0]), int(X.shape[1])
    workspace = working_memory or backend.default_working_memory()
    problem = Problem(backend, X, weights, xp.zeros(d, dtype=xp.float64), 0, 0.0, workspace)
    if backend.sparse:
        return _sparse_problem(dataclasses.replace(problem, deterministic=deterministic))
    ranges = problem.row_blocks(4 * d)
    fold_rows = backend.sum_block_rows

    # one pass: the column sums (for the mean) and every column's extremes
    def extremes(a: int, b: int) -> tuple[int, int, Array | None, Array, Array]:
        rows = X[a:b, ...]
        sums = None if center is not None else problem.block_sums(a, b, _scaled64(xp, rows, 0))
        return a, b, sums, *_column_extremes(xp, rows)

    found = list(backend.map_chunks(extremes, ranges))
    high = backend.to_numpy(_fold_with(xp.maximum, [part[3] for part in found])).astype(float)
    low = backend.to_numpy(_fold_with(xp.minimum, [part[4] for part in found])).astype(float)
    top = math.frexp(float(max(np.max(np.abs(high)), np.max(np.abs(low)))))[1]
    if center is None:
        total: Array = fold(((a, b, sums) for a, b, sums, _, _ in found), fold_rows)
        center = total / n
        if not bool(xp.all(xp.isfinite(center))):  # the float64 sum overflowed: scale
            scaled = problem.reduce(lambda a, b: _scaled64(xp, X[a:b, ...], -top), ranges)
            center = rescale(scaled / n, top)
    mean = xp.astype(xp.astype(center, X.dtype), xp.float64)  # a value of X's dtype

    # max |x − mean| from the extremes, scaled by a power of two so that nothing overflows
    host_mean = np.ldexp(backend.to_numpy(mean), -top)
    above, below = np.ldexp(high, -top) - host_mean, host_mean - np.ldexp(low, -top)
    spread = float(np.max(np.maximum(above, below)))
    exponent = _scale_exponent(math.frexp(spread)[1] + top if spread else None, xp.finfo(X.dtype))
    problem = dataclasses.replace(
        problem, mean=mean, scale_exponent=exponent, deterministic=deterministic
    )

    keep = backend.keeps_working_copy and working_copy and not maps_a_file(X)

    # one more pass: the working copy (where the backend keeps one) and mean(var(X)) as
    # E[w²] − E[w]² per feature of the working rows, in float64
    def moments(a: int, b: int) -> tuple[int, int, Array, Array | None]:
        terms = _moments(backend, X[a:b, ...], problem.origin)
        rows = next(terms)
        kept = xp.astype(rows, X.dtype) if keep else None
        return a, b, problem.block_sums(a, b, itertools.chain([rows], terms)), kept

    passed = list(backend.map_chunks(moments, ranges))
    if keep:
        working = xp.concat([kept for *_, kept in passed], axis=0)
        problem = dataclasses.replace(problem, X_working=working)
    sums = backend.to_numpy(fold(((a, b, terms) for a, b, terms, _ in passed), fold_rows))
    variance = _variance(sums, n, d)
    problem = dataclasses.replace(problem, variance=variance)
    problem.inertia_from_working(variance * n * d)  # X's own spread must be representable
    return problem


def _fold_with(combine: Callable[[Array, Array], Array], parts: list[Array]) -> Array:
    total = parts[0]
    for part in parts[1:]:
        total = combine(total, part)
    return total


def _sparse_problem(problem: Problem) -> Problem:
    """The problem of a CSR matrix: origin 0 (centring would fill it), rows scaled by a
    power of two only when their magnitudes need it, and mean(var(X)) from the stored
    values, ``Σ (x − μ)²`` per feature adding ``μ²`` once for each implicit zero."""
    from .backends._sparse import scaled

    X, n, d = problem.X, problem.n_samples, problem.n_features
    top = float(np.max(np.abs(X.data))) if X.nnz else 0.0
    exponent = _scale_exponent(math.frexp(top)[1] if top else None, np.finfo(X.dtype))
    values = rescale(X.data.astype(np.float64), exponent)
    means = np.bincount(X.indices, weights=values, minlength=d) / n
    spread = values - means[X.indices]
    stored = np.bincount(X.indices, minlength=d)
    squares = np.bincount(X.indices, weights=spread * spread, minlength=d)
    variance = float(np.mean((squares + (n - stored) * means * means) / n))
    problem = dataclasses.replace(
        problem,
        scale_exponent=exponent,
        variance=variance,
        X_working=scaled(X, exponent, X.dtype),
    )
    problem.inertia_from_working(variance * n * d)  # X's own spread must be representable
    return problem


def _scaled64(xp: Any, X: Array, exponent: int) -> Array:
    return rescale(xp.astype(X, xp.float64), exponent)


def _moments(backend: Backend, X: Array, origin: tuple[Array, int]) -> Iterator[Array]:
    """The terms of the variance: the float64 working rows, then their squares in the
    same memory (a second temporary of the rows' size costs more than squaring them)."""
    rows = backend.rows64(X, origin)
    yield rows
    rows *= rows
    yield rows


def _variance(sums: Any, n: int, d: int) -> float:
    """``mean(var(X))`` from the column sums of :func:`_moments` over ``n`` rows."""
    column_means = sums[:d] / n
    return max(float(np.sum(sums[d:])) / (n * d) - float(column_means @ column_means) / d, 0.0)


def _column_extremes(xp: Any, rows: Array) -> tuple[Array, Array]:
    """The largest and smallest value of each column. A reduction down a tall array is
    slow: in NumPy for few columns (taken one at a time here), on a GPU for any number
    (few outputs leave it idle: groups of rows are reduced first)."""
    m, d = int(rows.shape[0]), int(rows.shape[1])
    if d <= FEW_COLUMNS:
        columns = [rows[:, j] for j in range(d)]
        return xp.stack([xp.max(c) for c in columns]), xp.stack([xp.min(c) for c in columns])
    full = m // EXTREMES_GROUP * EXTREMES_GROUP
    if full <= EXTREMES_GROUP:
        return xp.max(rows, axis=0), xp.min(rows, axis=0)
    groups = xp.reshape(rows[:full, ...], (full // EXTREMES_GROUP, EXTREMES_GROUP, d))
    high, low = xp.max(groups, axis=1), xp.min(groups, axis=1)
    if full < m:
        high, low = (xp.concat([part, rows[full:, ...]], axis=0) for part in (high, low))
    return xp.max(high, axis=0), xp.min(low, axis=0)


def maps_a_file(X: Array) -> bool:
    """Whether X is (a view of) a memory-mapped file: its rows are read from the file
    as they are used, and no working copy of all of them is made."""
    import mmap

    base = X
    while base is not None:
        if isinstance(base, np.memmap | mmap.mmap):
            return True
        base = getattr(base, "base", None)
    return False


def _largest(backend: Backend, work: Callable[[int, int], Array], blocks: list[Any]) -> float:
    """The largest of ``work(a, b)`` over the blocks (compared on the device, read once)."""
    found: Any = None
    for part in backend.map_chunks(work, blocks):
        found = part if found is None else backend.xp.maximum(found, part)
    return float(found)
