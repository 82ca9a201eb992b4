"""One pass over the data: every row's nearest centre, chunk by chunk, with the
per-cluster statistics a Lloyd step needs.

At a reduced precision (``kmeans_gpu/_precision.py``) a chunk's labels are provisional:
the rows with a near tie are only marked, left out of the chunk's statistics, and
settled once after the last chunk (:func:`_settle`), so a pass reads the device once
for their count, not once per chunk; where one exact re-check settles them (split
TF32), a pass given a capacity from the last pass's count reads nothing at all. Each
row enters the statistics exactly once, with its final label; the labels are those of
the exact path. A chunk's share comes from ``Backend.reduced_step``, which a backend
may compute in one kernel (CuPy with Triton).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
from dataclasses import dataclass

from ._precision import merge_labels, recheck_precision
from ._problem import Problem
from .backends import Array
from .backends._base import clamp


@dataclass(frozen=True)
class Statistics:
    """Per-cluster weighted sums ``(k, d)`` and weights ``(k,)`` of some rows, how many
    of their labels changed (0-d array), and, when asked for, their inertia (0-d float64
    array) against the centres they were assigned to. A whole pass at a reduced
    precision also says how many of its rows had a near tie (0-d; see :func:`assign`)."""

    sums: Array
    weights: Array
    changed: Array
    inertia: Array | None = None
    near_ties: Array | None = None

    def __add__(self, other: Statistics) -> Statistics:
        inertia = None if self.inertia is None else self.inertia + other.inertia
        return Statistics(
            self.sums + other.sums,
            self.weights + other.weights,
            self.changed + other.changed,
            inertia,
        )


def assign(
    problem: Problem,
    centers: Array,
    labels: Array,
    *,
    statistics: bool = True,
    with_inertia: bool = False,
    previous: Array | None = None,
    capacity: int | None = None,
) -> Statistics | None:
    """Write the nearest centre of every row into ``labels``, chunk by chunk, and return
    the reduced statistics (None when ``statistics`` is false), with the inertia when
    ``with_inertia`` (computed while each chunk is at hand) and the number of labels that
    differ from ``previous`` (all of them when it is None).

    The backend decides how the chunks run (one after another, or on several threads);
    each chunk writes its own slice of ``labels`` and returns its partial statistics.

    At a reduced precision the near ties are settled after the last chunk: by default
    after one read of their count; with a ``capacity`` (from :func:`settle_capacity`)
    without any read, the first ``capacity`` of them in that many slots. The statistics
    then hold the pass's count of near ties (``near_ties``): a caller who finds it above
    the capacity must run the pass again without one (rows past it were left out).
    """
    backend = problem.backend
    xp = backend.xp
    k = int(centers.shape[0])
    centers_sq = xp.sum(centers * centers, axis=1)
    # at a reduced precision, near ties are marked per chunk and settled after the last,
    # their margins from the rows' norms (computed once per fit)
    reduced = backend.computes_reduced(problem.precision)
    n, device = problem.n_samples, problem.device
    pending = xp.zeros(n, dtype=xp.bool, device=device) if reduced else None
    rows_sq: Array = problem.squared_row_norms if reduced else None

    def chunk(start: int, stop: int) -> Statistics | None:
        if pending is not None:
            return _reduced_chunk(
                problem,
                centers,
                centers_sq,
                rows_sq,
                labels,
                pending,
                start,
                stop,
                statistics,
                with_inertia,
                previous,
            )
        rows = problem.rows(start, stop)
        if not statistics:
            labels[start:stop] = backend.assign(rows, centers, centers_sq)
            return None
        w = problem.weights
        wc = None if w is None else w[start:stop]
        before = None if previous is None else previous[start:stop]
        labels[start:stop], sums, weights, changed, inertia = backend.assign_and_sum(
            rows,
            centers,
            centers_sq,
            wc,
            before,
            problem.precision,
            problem.deterministic,
            with_inertia,
        )
        return Statistics(sums, weights, changed, inertia)

    parts = backend.map_chunks(chunk, problem.assignment_chunks(k))
    near_ties = None
    if pending is not None:
        settled, near_ties = _settle(
            problem, centers, centers_sq, labels, pending, statistics, with_inertia, previous,
            capacity,
        )  # fmt: skip
        parts += settled
    if not statistics:
        return None
    total = functools.reduce(operator.add, parts)
    assert total is not None
    return total if near_ties is None else dataclasses.replace(total, near_ties=near_ties)


#: the near ties a pass may settle without reading their count: the last pass's count
#: times this, and at least SETTLE_MINIMUM
SETTLE_HEADROOM = 1.25
SETTLE_MINIMUM = 1024


def settle_capacity(problem: Problem, near_ties: int) -> int | None:
    """The ``capacity`` for the next pass's near ties after a pass that had
    ``near_ties``, where one exact re-check settles them (split TF32's); None where the
    re-check goes on in steps (TF32's and bfloat16's, through split TF32: those read
    their counts) or nothing is reduced."""
    backend = problem.backend
    if not backend.computes_reduced(problem.precision):
        return None
    if recheck_precision(backend, problem.precision) != "exact":
        return None
    wanted = max(SETTLE_MINIMUM, math.ceil(near_ties * SETTLE_HEADROOM))
    return min(problem.n_samples, wanted)


def inertia(problem: Problem, centers: Array, labels: Array) -> float:
    """Exact ``Σ w ‖x − c_label‖²`` (working units), accumulated in float64."""
    backend, w = problem.backend, problem.weights

    def chunk(start: int, stop: int) -> Array:
        wc = None if w is None else w[start:stop]
        return backend.inertia_of(problem.rows(start, stop), centers, labels[start:stop], wc)

    parts = backend.map_chunks(chunk, problem.chunks(int(centers.shape[0])))
    return float(functools.reduce(operator.add, parts))


def _reduced_chunk(
    problem: Problem,
    centers: Array,
    centers_sq: Array,
    rows_sq: Array,
    labels: Array,
    pending: Array,
    start: int,
    stop: int,
    statistics: bool,
    with_inertia: bool,
    previous: Array | None,
) -> Statistics | None:
    """Rows ``start:stop`` at a reduced precision: their provisional labels, their near
    ties marked in ``pending``, and the statistics of the others (:func:`_settle` adds
    the near ties')."""
    backend = problem.backend
    xp = backend.xp
    w = None if problem.weights is None else problem.weights[start:stop]
    X, origin = problem.source_rows(start, stop)
    own, near, sums, weights = backend.reduced_step(
        X,
        origin,
        centers,
        centers_sq,
        rows_sq[start:stop],
        w,
        problem.precision,
        statistics,
        problem.deterministic,
    )
    labels[start:stop], pending[start:stop] = own, near
    if not statistics:
        return None
    settled = ~near
    if previous is None:
        changed = xp.count_nonzero(settled)
    else:
        changed = xp.count_nonzero((own != previous[start:stop]) & settled)
    inertia = None
    if with_inertia:  # the frame stream's: the working rows made again
        kept = xp.astype(settled, problem.dtype)
        rows = problem.rows(start, stop)
        inertia = backend.inertia_of(rows, centers, own, kept if w is None else kept * w)
    return Statistics(sums, weights, changed, inertia)


def _settle(
    problem: Problem,
    centers: Array,
    centers_sq: Array,
    labels: Array,
    pending: Array,
    statistics: bool,
    with_inertia: bool,
    previous: Array | None,
    capacity: int | None,
) -> tuple[list[Statistics], Array]:
    """Assign the rows marked ``pending`` again, write their labels into ``labels`` and
    return their statistics (in pieces no larger than the pass's chunks) and their
    count (0-d).

    Without a ``capacity``: all of them, found after one read of their count, with split
    TF32 where the backend computes it (its own near ties exactly; each piece reads
    once more) else exactly. With one: no read, the first ``capacity`` of them, found by
    a search of their running count (no scatter), assigned exactly in ``capacity``
    slots; the slots past the count hold a repeated row of weight 0, which adds
    nothing, and the rows past the capacity are left out, which the caller sees from
    the count."""
    backend = problem.backend
    xp = backend.xp
    used = None
    if capacity is None:
        rows_at = xp.nonzero(pending)[0]
        count = int(rows_at.shape[0])
        near_ties = xp.full((), count, dtype=xp.int64, device=problem.device)
        if count == 0:
            return [], near_ties
        level = recheck_precision(backend, problem.precision)
    else:
        running = xp.cumulative_sum(xp.astype(pending, xp.int64))
        near_ties = running[-1]
        slots = xp.arange(1, capacity + 1, dtype=xp.int64, device=problem.device)
        rows_at = clamp(xp, xp.searchsorted(running, slots), high=problem.n_samples - 1)
        used, level = slots <= near_ties, "exact"
    again = _assign_again(
        problem, centers, centers_sq, labels, pending, rows_at, used, level, statistics,
        with_inertia, previous,
    )  # fmt: skip
    return again, near_ties


def _assign_again(
    problem: Problem,
    centers: Array,
    centers_sq: Array,
    labels: Array,
    pending: Array,
    rows_at: Array,
    used: Array | None,
    level: str,
    statistics: bool,
    with_inertia: bool,
    previous: Array | None,
) -> list[Statistics]:
    """Assign the rows ``rows_at`` (the rows marked ``pending``, in order; or the first
    of them and, where ``used`` is false, slots of weight 0) again at ``level``, in
    pieces no larger than the pass's chunks; write their labels into ``labels`` and
    return their statistics."""
    backend = problem.backend
    xp = backend.xp
    k = int(centers.shape[0])
    settled, parts = [], []
    for a, b in problem.assignment_chunks(k, level, int(rows_at.shape[0])):
        which = rows_at[a:b]
        kept = None if used is None else used[a:b]
        rows = problem.take(which)
        again = xp.asarray(backend.assign(rows, centers, centers_sq, level), copy=True)
        settled.append(again)
        if not statistics:
            continue
        w = None if problem.weights is None else xp.take(problem.weights, which)
        if kept is not None:  # the unused slots weigh nothing
            used_weight = xp.astype(kept, problem.dtype)
            w = used_weight if w is None else used_weight * w
        sums, weights = backend.cluster_sums(rows, again, w, k, problem.deterministic)
        if previous is not None:
            moved = again != xp.take(previous, which)
            changed = xp.count_nonzero(moved if kept is None else moved & kept)
        elif kept is not None:
            changed = xp.count_nonzero(kept)
        else:
            changed = xp.full((), b - a, device=problem.device)
        inertia = backend.inertia_of(rows, centers, again, w) if with_inertia else None
        parts.append(Statistics(sums, weights, changed, inertia))
    _write_settled(problem, labels, pending, xp.concat(settled))
    return parts


def _write_settled(problem: Problem, labels: Array, pending: Array, settled: Array) -> None:
    """Put the ``settled`` labels of the ``pending`` rows, in row order, into ``labels``,
    in blocks of rows whose temporaries (a position and a label per row) fit the
    working memory: few blocks, no read of the device."""
    xp = problem.backend.xp
    before = xp.zeros((), dtype=xp.int64, device=problem.device)  # pending rows so far
    for start, stop in problem.row_blocks(3):
        near = pending[start:stop]
        labels[start:stop] = merge_labels(xp, labels[start:stop], near, settled, before)
        before = before + xp.sum(xp.astype(near, xp.int64))
