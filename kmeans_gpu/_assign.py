"""One pass over the data: every row's nearest centre, chunk by chunk, with the
per-cluster statistics a Lloyd step needs.

At a reduced precision (``kmeans_gpu/_precision.py``) a chunk's labels are provisional:
the rows with a near tie are only marked, left out of the chunk's statistics, and
settled once after the last chunk (:func:`_settle`), so a pass reads the device once
for their count, not once per chunk. Each row enters the statistics exactly once, with
its final label; the labels are those of the exact path. A chunk's share comes from
``Backend.reduced_step``, which a backend may compute in one kernel (CuPy with Triton).
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass

from ._precision import merge_labels, recheck_precision
from ._problem import Problem
from .backends import Array


@dataclass(frozen=True)
class Statistics:
    """Per-cluster weighted sums ``(k, d)`` and weights ``(k,)`` of some rows, how many
    of their labels changed (0-d array), and, when asked for, their inertia (0-d float64
    array) against the centres they were assigned to."""

    sums: Array
    weights: Array
    changed: Array
    inertia: Array | None = None

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
) -> Statistics | None:
    """Write the nearest centre of every row into ``labels``, chunk by chunk, and return
    the reduced statistics (None when ``statistics`` is false), with the inertia when
    ``with_inertia`` (computed while each chunk is at hand) and the number of labels that
    differ from ``previous`` (all of them when it is None).

    The backend decides how the chunks run (one after another, or on several threads);
    each chunk writes its own slice of ``labels`` and returns its partial statistics.
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
    if pending is not None:
        parts += _settle(
            problem, centers, centers_sq, labels, pending, statistics, with_inertia, previous
        )
    return functools.reduce(operator.add, parts) if statistics else None


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
) -> list[Statistics]:
    """Assign the rows marked ``pending`` again (with split TF32 where the backend
    computes it, its own near ties exactly; else exactly), write their labels into
    ``labels`` and return their statistics, in pieces no larger than the pass's chunks.
    Reads the device once for their count (and, with split TF32, once per piece)."""
    backend = problem.backend
    xp = backend.xp
    k = int(centers.shape[0])
    redo = xp.nonzero(pending)[0]
    count = int(redo.shape[0])
    if count == 0:
        return []
    level = recheck_precision(backend, problem.precision)
    settled, parts = [], []
    for a, b in problem.assignment_chunks(k, level, count):
        which = redo[a:b]
        rows = problem.take(which)
        again = xp.asarray(backend.assign(rows, centers, centers_sq, level), copy=True)
        settled.append(again)
        if not statistics:
            continue
        w = None if problem.weights is None else xp.take(problem.weights, which)
        sums, weights = backend.cluster_sums(rows, again, w, k, problem.deterministic)
        if previous is None:
            changed = xp.full((), b - a, device=problem.device)
        else:
            changed = xp.count_nonzero(again != xp.take(previous, which))
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
