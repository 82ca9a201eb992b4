"""The reduced-precision pass, :class:`ReducedPrecision`: a :class:`~kmeans_gpu._assign.
Pass` whose products run on tensor cores, with the core's exact labels.

Each chunk's rows get the nearest centre of a reduced-precision product computed by the
backend (a :class:`TensorCores`); the rows with a near tie (``_precision``) are only
marked, left out of the chunk's statistics, and settled once after the last chunk, so
a pass reads the device once, for their count, however many chunks it takes. They are
settled as the core settles its own near ties: scores from an exact product of the
data's dtype, the core's margin, float64 differences among the candidates, ties to the
lowest index; so the labels are the core's. TF32's near ties are checked with split
TF32 first where the backend computes it, and only those it cannot settle go on.

Split TF32 needs one exact step after its product, so after its first pass it reads
nothing: it settles the first ``capacity`` of its near ties (1.25 times the last
pass's count, at least 1,024) in as many slots, found by a search of their running
count (no read, no scatter; unused slots weigh nothing), each slot's label the
float64-nearest of its :data:`CANDIDATES` best exact-dtype candidates. The count comes
back as the statistics' ``feedback`` in the iteration's one read; a pass whose near
ties outgrew the capacity, or that had a row with more candidates than it compared,
is not accepted (:meth:`ReducedPrecision.accepts`) and the loop runs it again, reading
the count.

Every row enters the statistics once, with its final label, so the centres are the
exact pass's up to the order of their float64 sums (the settled rows come last).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .._assign import EXACT, Centers, Pass, Statistics, _closest, score_margin
from .._problem import Problem
from ..backends import Array, Backend
from ..backends._base import clamp
from ._precision import (
    CENTER_PIECES,
    ROW_PIECES,
    TF32,
    TF32X3,
    Margin,
    Precision,
    check_float32,
    check_precision,
    split_columns,
)

#: the near ties a split TF32 pass may settle without reading their count: the last
#: pass's count times this, and at least SETTLE_MINIMUM
SETTLE_HEADROOM = 1.25
SETTLE_MINIMUM = 1024
#: the exact-dtype candidates a slot compares by float64 differences (a row with more
#: within the core's margin makes the pass run again, reading its count)
CANDIDATES = 4

#: a chunk's share of a pass: provisional labels (int32), near ties (bool), and the
#: float64 sums ``(k, d)`` and weights ``(k,)`` of the other rows
Share = tuple[Array, Array, Array, Array]


class TensorCores(Backend):
    """A backend that computes reduced-precision products, for :class:`ReducedPrecision`
    (a mixin over :class:`~kmeans_gpu.backends.Backend`): every operation the pass asks
    for, on the array API, over :meth:`reduced_product`. A backend that is not one
    computes every precision exactly."""

    def computes(self, precision: Precision) -> bool:
        """Whether ``precision`` products run at reduced precision here (tensor cores);
        when not, the pass is the exact one."""
        return False

    def reduced_product(self, X: Array, scaled: Array, precision: Precision) -> Array:
        """``X @ scaled.T`` with the inputs converted to TF32 and float32 sums
        (``precision`` is never split: split inputs come in as three column blocks)."""
        raise NotImplementedError(f"{self.name} computes no reduced products")

    def split_columns(self, x: Array, pieces: tuple[bool, bool, bool]) -> Array:
        """``x`` (float32, ``(m, d)``) as ``(m, 3d)`` column blocks of its TF32 parts:
        the high part, or the low part where ``pieces`` is true."""
        return split_columns(self.xp, x, pieces)

    def nearest_two_of(self, product: Array, centers_sq: Array) -> tuple[Array, Array, Array]:
        """For the scores ``product + centers_sq`` ``(m, k)``: each row's smallest score's
        index (int32, the first on ties), that score and the second-smallest (+inf
        when k == 1)."""
        xp = self.xp
        scores = product + centers_sq[None, :]
        labels = xp.astype(xp.argmin(scores, axis=1), xp.int32)
        k = int(scores.shape[1])
        columns = xp.arange(k, dtype=labels.dtype, device=self.device(scores))
        others = xp.where(columns[None, :] == labels[:, None], xp.inf, scores)
        return labels, xp.min(scores, axis=1), xp.min(others, axis=1)

    def exact_scores(self, rows: Array, centers: Centers) -> Array:
        """``‖c‖² − 2x·c`` of working rows ``(m, k)`` from an exact product of their
        dtype, as the core's settling computes them."""
        return centers.sq[None, :] + rows @ (-2.0 * centers.working).T

    def reduced_nearest_two(
        self, rows: Array, centers: Centers, precision: Precision
    ) -> tuple[Array, Array, Array]:
        """:meth:`nearest_two_of` the ``precision`` scores of working rows ``rows``:
        split TF32 as one TF32 product of the split inputs (inner size 3d)."""
        scaled = -2.0 * centers.working
        if precision.split:
            product = self.reduced_product(
                self.split_columns(rows, ROW_PIECES),
                self.split_columns(scaled, CENTER_PIECES),
                TF32,
            )
        else:
            product = self.reduced_product(rows, scaled, precision)
        return self.nearest_two_of(product, centers.sq)

    def reduced_step(
        self,
        problem: Problem,
        centers: Centers,
        start: int,
        stop: int,
        precision: Precision,
        margin: Margin,
    ) -> Share:
        """Rows ``start:stop``'s share of a pass at ``precision``: their provisional
        labels, which have a near tie (the two best scores within ``margin``), and the
        per-cluster sums (as ``cluster_sums``) and weights of the others. A backend may
        do it in one kernel."""
        xp = self.xp
        rows = problem.rows(start, stop)
        labels, best, second = self.reduced_nearest_two(rows, centers, precision)
        rows_sq = problem.squared_row_norms[start:stop]
        near = (second - best) <= margin(xp, rows_sq, centers.largest_norm)
        k = centers.n_clusters
        # the near ties' rows are summed into an extra cluster k, dropped: no copy
        bucketed = xp.where(near, xp.full_like(labels, k), labels)
        w = None if problem.weights is None else problem.weights[start:stop]
        X = problem.X[start:stop, ...]
        sums, weights = self.cluster_sums(
            X, problem.origin, bucketed, w, k + 1, problem.deterministic
        )
        return labels, near, sums[:k, ...], weights[:k]

    def step_columns(self, n_clusters: int, n_features: int, precision: Precision) -> int:
        """Temporaries per row of :meth:`reduced_step` beyond those the core counts for
        a chunk, in values of the data's dtype: the scores, and the split rows."""
        return n_clusters + (3 * n_features if precision.split else 0)


class ReducedPrecision:
    """The pass over the data at a reduced precision: an ``engine`` for
    ``kmeans_gpu._api.fit`` (what :func:`kmeans_gpu.experimental.kmeans` passes).

    Parameters
    ----------
    precision : {"tf32x3", "tf32"}, default="tf32x3"
        Split TF32 (three TF32 products' work, an error near float32's) or TF32.

    Notes
    -----
    On a backend that is not a :class:`TensorCores` computing ``precision`` (NumPy,
    CuPy without tensor cores), the pass is the core's exact pass. The labels are the
    core's exact labels either way. An instance keeps split TF32's capacity from one
    pass to the next: one fit at a time per instance.
    """

    def __init__(self, precision: str | Precision = "tf32x3") -> None:
        checked = check_precision(precision)
        if checked is None:
            raise ValueError("precision='exact' is the core's pass: kmeans_gpu._assign.EXACT")
        self.precision = checked
        #: the capacity the next pass settles its near ties in (None: it reads the count)
        self._capacity: int | None = None
        #: the capacity the last pass used (None: it read its count, or was exact)
        self._used: int | None = None

    def __repr__(self) -> str:
        return f"ReducedPrecision({self.precision.name!r})"

    def __call__(
        self,
        problem: Problem,
        centers: Centers,
        labels: Array,
        *,
        previous: Array | None = None,
        with_inertia: bool = False,
    ) -> Statistics:
        """Write every row's exact nearest centre into ``labels`` and return the pass's
        statistics, with the count of its near ties as ``feedback``.

        Raises
        ------
        ValueError
            When the data are not float32.
        """
        check_float32(problem.dtype, self.precision)
        backend = problem.backend
        if not (isinstance(backend, TensorCores) and backend.computes(self.precision)):
            self._used = None
            return EXACT(problem, centers, labels, previous=previous, with_inertia=with_inertia)
        capacity = None
        if self.precision.split and self._capacity is not None:
            capacity = min(self._capacity, problem.n_samples)
        self._used = capacity
        return _reduced_pass(
            problem, centers, labels, self.precision, previous, with_inertia, capacity
        )

    def accepts(self, feedback: float) -> bool:
        """Whether the last pass stands: False when its near ties (``feedback``)
        outgrew the capacity it settled them in; sets the next pass's capacity."""
        if self._used is not None and feedback > self._used:
            self._capacity = None
            return False
        self._capacity = max(SETTLE_MINIMUM, math.ceil(feedback * SETTLE_HEADROOM))
        return True


def _chunks(problem: Problem, n_clusters: int, precision: Precision) -> list[tuple[int, int]]:
    """The row ranges of a pass: the core's, sized by the backend's step temporaries."""
    backend = problem.backend
    assert isinstance(backend, TensorCores)
    if backend.max_chunk_rows is not None:
        return problem.chunks(n_clusters)
    d, size = problem.n_features, problem.itemsize
    extra = backend.step_columns(n_clusters, d, precision)
    return problem.ranges(8 * (d + 4) + size * (2 * d + extra))


def _reduced_pass(
    problem: Problem,
    centers: Centers,
    labels: Array,
    precision: Precision,
    previous: Array | None,
    with_inertia: bool,
    capacity: int | None,
) -> Statistics:
    """The pass (module docstring): chunks, then the near ties settled."""
    backend = problem.backend
    assert isinstance(backend, TensorCores)
    xp = backend.xp
    margin = Margin.of(problem, precision)
    pending = xp.zeros(problem.n_samples, dtype=xp.bool, device=problem.device)
    problem.squared_row_norms  # noqa: B018 (made once per fit, before the chunks' threads)

    def chunk(start: int, stop: int) -> Statistics:
        own, near, sums, weights = backend.reduced_step(
            problem, centers, start, stop, precision, margin
        )
        labels[start:stop] = own
        pending[start:stop] = near
        moved = xp.logical_not(near)  # the near ties count when they are settled
        if previous is not None:
            moved = moved & (own != previous[start:stop])
        changed = xp.astype(xp.count_nonzero(moved), xp.int64)
        inertia = None
        if with_inertia:  # the near ties' share is added when they are settled
            share = xp.astype(xp.logical_not(near), problem.dtype)
            if problem.weights is not None:
                share = share * problem.weights[start:stop]
            X = problem.X[start:stop, ...]
            inertia = backend.inertia_of(X, centers.caller, own, share, problem.scale_exponent)
        return Statistics(sums, weights, changed, inertia)

    total: Statistics | None = None
    for part in backend.map_chunks(chunk, _chunks(problem, centers.n_clusters, precision)):
        total = part if total is None else total + part
    assert total is not None
    parts, feedback = _settle(
        problem, centers, labels, pending, precision, previous, with_inertia, capacity
    )
    for part in parts:
        total = total + part
    return dataclasses.replace(total, feedback=feedback)


def _settle(
    problem: Problem,
    centers: Centers,
    labels: Array,
    pending: Array,
    precision: Precision,
    previous: Array | None,
    with_inertia: bool,
    capacity: int | None,
) -> tuple[list[Statistics], Array]:
    """Settle the rows marked ``pending``: write their labels into ``labels`` and return
    their statistics (in pieces that fit the working memory) and the feedback, their
    count (0-d int64), or, within a ``capacity``, one more than the rows when a slot
    had more candidates than it compared."""
    backend = problem.backend
    assert isinstance(backend, TensorCores)
    xp = backend.xp
    n, k, device = problem.n_samples, centers.n_clusters, problem.device
    used = None
    if capacity is None:
        rows_at = xp.nonzero(pending)[0]  # the pass's one read of the device
        count = int(rows_at.shape[0])
        feedback = xp.full((), count, dtype=xp.int64, device=device)
        if count == 0:
            return [], feedback
    else:
        running = xp.cumulative_sum(xp.astype(pending, xp.int64))
        feedback = running[-1]
        slots = xp.arange(1, capacity + 1, dtype=xp.int64, device=device)
        rows_at = clamp(xp, xp.searchsorted(running, slots), high=n - 1)
        used = slots <= feedback
    recheck = not precision.split and backend.computes(TF32X3)
    columns = 2 * k + 2 * problem.n_features + CANDIDATES
    parts, settled, overflows = [], [], []
    for a, b in problem.pieces(int(rows_at.shape[0]), 8 * columns):
        which = rows_at[a:b]
        kept = None if used is None else used[a:b]
        if kept is not None:
            again, over = _settle_in_slots(problem, centers, which)
            overflows.append(xp.any(over & kept))
        elif recheck:
            again = _recheck_split(problem, centers, which)
        else:
            again = _settle_exactly(problem, centers, which)
        settled.append(again)
        parts.append(_statistics(problem, centers, which, again, kept, previous, with_inertia))
    _write_settled(problem, labels, pending, xp.concat(settled))
    if overflows:
        overflowed = xp.any(xp.stack(overflows))
        feedback = xp.where(overflowed, xp.full_like(feedback, n + 1), feedback)
    return parts, feedback


def _settle_exactly(problem: Problem, centers: Centers, which: Array) -> Array:
    """Exact labels of the rows at ``which`` (int32), as the core's pass finds them:
    its fast scores, its margin, float64 differences among the candidates. Reads the
    device for the count of the near ties among them."""
    backend = problem.backend
    assert isinstance(backend, TensorCores)
    xp = backend.xp
    rows = problem.take(which)
    labels, best, second = backend.nearest_two(rows, centers.working, centers.sq)
    margin = score_margin(problem, xp.sum(rows * rows, axis=1), centers)
    near = (second - best) <= margin
    at = xp.nonzero(near)[0]
    if int(at.shape[0]) == 0:
        return xp.asarray(labels, copy=True)
    scores = backend.exact_scores(xp.take(rows, at, axis=0), centers)
    within = xp.min(scores, axis=1) + xp.take(margin, at)
    row, column = xp.nonzero(scores <= within[:, None])
    exact = _closest(problem, centers, xp.take(which, at), row, column)
    return merge_labels(xp, labels, near, exact)


def _recheck_split(problem: Problem, centers: Centers, which: Array) -> Array:
    """Exact labels of TF32's near ties at ``which``: split TF32's, its own near ties
    settled exactly (reads the device for their count)."""
    backend = problem.backend
    assert isinstance(backend, TensorCores)
    xp = backend.xp
    rows = problem.take(which)
    labels, best, second = backend.reduced_nearest_two(rows, centers, TF32X3)
    rows_sq = xp.take(problem.squared_row_norms, which)
    margin = Margin.of(problem, TF32X3)(xp, rows_sq, centers.largest_norm)
    near = (second - best) <= margin
    at = xp.nonzero(near)[0]
    if int(at.shape[0]) == 0:
        return xp.asarray(labels, copy=True)
    return merge_labels(xp, labels, near, _settle_exactly(problem, centers, xp.take(which, at)))


def _settle_in_slots(problem: Problem, centers: Centers, which: Array) -> tuple[Array, Array]:
    """Exact labels of the rows at ``which`` without reading the device: each row's
    candidates (the core's margin on exact-dtype scores) in order of score, the
    float64-nearest of the first :data:`CANDIDATES` (the lowest index on ties); and
    which rows had more candidates than that (their labels are not to be trusted)."""
    backend = problem.backend
    assert isinstance(backend, TensorCores)
    xp = backend.xp
    k = centers.n_clusters
    rows = problem.take(which)
    scores = backend.exact_scores(rows, centers)
    margin = score_margin(problem, xp.sum(rows * rows, axis=1), centers)
    within = xp.min(scores, axis=1) + margin
    candidate = scores <= within[:, None]
    found = xp.sum(xp.astype(candidate, xp.int32), axis=1)
    remaining = xp.where(candidate, scores, xp.inf)
    X = xp.take(problem.X, which, axis=0)
    columns = xp.arange(k, device=problem.device)
    picks, distances = [], []
    for m in range(min(CANDIDATES, k)):
        pick = xp.argmin(remaining, axis=1)
        d2 = backend.sq_distances(X, centers.caller, pick, problem.scale_exponent)
        distances.append(xp.where(found > m, d2, xp.inf))
        picks.append(pick)
        remaining = xp.where(columns[None, :] == pick[:, None], xp.inf, remaining)
    D, J = xp.stack(distances, axis=1), xp.stack(picks, axis=1)
    nearest = xp.min(D, axis=1)
    label = xp.min(xp.where(D == nearest[:, None], J, xp.full_like(J, k)), axis=1)
    return xp.astype(label, xp.int32), found > CANDIDATES


def _statistics(
    problem: Problem,
    centers: Centers,
    which: Array,
    again: Array,
    kept: Array | None,
    previous: Array | None,
    with_inertia: bool,
) -> Statistics:
    """The statistics of the settled rows at ``which`` (labels ``again``); where
    ``kept`` is false, slots that weigh nothing."""
    backend = problem.backend
    xp = backend.xp
    X = xp.take(problem.X, which, axis=0)
    w = None if problem.weights is None else xp.take(problem.weights, which)
    if kept is not None:  # the unused slots weigh nothing
        share = xp.astype(kept, problem.dtype)
        w = share if w is None else share * w
    sums, weights = backend.cluster_sums(
        X, problem.origin, again, w, centers.n_clusters, problem.deterministic
    )
    if previous is not None:
        moved = again != xp.take(previous, which)
        changed = xp.count_nonzero(moved if kept is None else moved & kept)
    elif kept is not None:
        changed = xp.count_nonzero(kept)
    else:
        changed = xp.full((), int(which.shape[0]), dtype=xp.int64, device=problem.device)
    inertia = None
    if with_inertia:
        inertia = backend.inertia_of(X, centers.caller, again, w, problem.scale_exponent)
    return Statistics(sums, weights, xp.astype(changed, xp.int64), inertia)


def _write_settled(problem: Problem, labels: Array, pending: Array, settled: Array) -> None:
    """Put the ``settled`` labels of the ``pending`` rows, in row order, into ``labels``,
    in blocks of rows whose temporaries fit the working memory; no read of the
    device, no scatter."""
    xp = problem.backend.xp
    before = xp.zeros((), dtype=xp.int64, device=problem.device)  # pending rows so far
    last = int(settled.shape[0]) - 1
    for start, stop in problem.row_blocks(3):
        near = pending[start:stop]
        position = xp.cumulative_sum(xp.astype(near, xp.int64)) + before - 1
        picked = xp.take(settled, clamp(xp, position, 0, last))
        labels[start:stop] = xp.where(near, picked, labels[start:stop])
        before = before + xp.sum(xp.astype(near, xp.int64))


def merge_labels(xp: Any, labels: Array, near: Array, settled: Array) -> Array:
    """``labels`` with the rows marked ``near`` taking, in order, the labels ``settled``:
    no scatter, which the array API lacks."""
    position = xp.cumulative_sum(xp.astype(near, xp.int64)) - 1
    picked = xp.take(settled, clamp(xp, position, 0, int(settled.shape[0]) - 1))
    return xp.where(near, picked, labels)


def reduced_engine(precision: str | Precision) -> Pass:
    """The pass for ``precision``: the core's exact pass for ``"exact"``, else a new
    :class:`ReducedPrecision` (one per fit: it keeps a capacity between passes)."""
    checked = check_precision(precision)
    return EXACT if checked is None else ReducedPrecision(checked)
