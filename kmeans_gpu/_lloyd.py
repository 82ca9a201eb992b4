"""Lloyd's algorithm, written once for every backend.

One iteration is: for each chunk of rows, the nearest centre of every row and the
chunk's partial statistics (per-cluster weighted sums and weights); the partials are
reduced by addition; the reduced statistics give the new centres. Any source of row
chunks (in-memory slices here; host-streamed or Dask blocks later) can feed the same
reduction. Convergence follows scikit-learn's Lloyd exactly:

* strict convergence when the labels did not change from the previous iteration;
* otherwise convergence when ``Σ‖Δc‖² <= tol · mean(var(X))``, after which one more
  assignment makes the labels match the returned centres (as it does after a strict
  stop in which empty clusters moved, where scikit-learn would return stale labels);
* ``n_iter`` counts the iterations run, as ``KMeans.n_iter_`` does.

Empty clusters are relocated to the points farthest from their centres, as in
scikit-learn (``"relocate"``), or keep their previous centre (``"keep"``, the seed's
behaviour). Each iteration reads back one small vector from the device (labels
changed, centre shift, empty clusters, near ties); an iteration that relocates reads
three more (the largest distance, which clusters are empty, the new shift). At a
reduced precision the first iteration reads the count of its near ties before settling
them; the later ones settle them in a capacity set from the last count, without a read,
where one exact re-check settles them (split TF32), and run the pass again, reading the
count, in the rare iteration that outgrows it (``_assign.settle_capacity``); TF32 and
bfloat16 read their counts in every pass.
The pass over the data that labels the rows and sums them is ``_assign.assign``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from ._assign import Statistics, assign, inertia, settle_capacity
from ._problem import Problem
from .backends import Array

logger = logging.getLogger("kmeans_gpu")

EMPTY_CLUSTER_POLICIES = ("relocate", "keep")


@dataclass(frozen=True)
class Step:
    """What one Lloyd iteration did, in working units.

    ``labels`` is the assignment to the centres the iteration started from, ``centers``
    the centres it moved to.
    """

    iteration: int
    centers: Array
    labels: Array
    center_shift: float
    #: inertia of ``labels`` against the centres they were assigned to (0-d array on
    #: the device, no synchronisation), when the run tracks it; else None
    inertia: Array | None
    n_changed: int
    converged: bool


@dataclass(frozen=True)
class Result:
    """A finished run, in working units; ``labels`` match ``centers``."""

    centers: Array
    labels: Array
    inertia: float
    n_iter: int
    converged: bool


def weighted_means(sums: Array, weights: Array, fallback: Array, xp: Any) -> Array:
    """``sums / weights`` per cluster; clusters of zero weight take ``fallback``'s row
    (the seed's rule when ``fallback`` is the previous centres)."""
    w = weights[:, None]
    has_weight = w > 0
    inverse = 1.0 / xp.where(has_weight, w, xp.ones_like(w))
    return xp.where(has_weight, sums * inverse, fallback)


def _new_centers(stats: Statistics, centers: Array, empty_cluster: str, xp: Any) -> Array:
    means = weighted_means(stats.sums, stats.weights, centers, xp)
    if empty_cluster == "keep":
        return means
    # An empty cluster that could not be relocated (every point sits on its centre) goes
    # where scikit-learn's Lloyd puts it, so that labels keep agreeing with it: onto the
    # heaviest cluster's mean when that cluster comes earlier in order, else onto its
    # weighted sum (scikit-learn copies the row before averaging it).
    heaviest = xp.reshape(xp.argmax(stats.weights), (1,))
    order = xp.arange(int(centers.shape[0]), device=centers.device)
    later = (order > xp.astype(heaviest, order.dtype))[:, None]
    fallback = xp.where(
        later, xp.take(means, heaviest, axis=0), xp.take(stats.sums, heaviest, axis=0)
    )
    return xp.where(stats.weights[:, None] > 0, means, fallback)


def _relocate(
    problem: Problem, centers: Array, labels: Array, stats: Statistics, n_empty: int
) -> Statistics:
    """Move each empty cluster onto one of the points farthest from their centre."""
    backend = problem.backend
    xp = backend.xp
    k = int(centers.shape[0])
    distances = xp.concat(
        backend.map_chunks(
            lambda a, b: backend.sq_dist_to_assigned(problem.rows(a, b), centers, labels[a:b]),
            problem.chunks(k),
        )
    )
    if float(xp.max(distances)) == 0.0:  # fewer distinct points than clusters
        return stats
    far = backend.farthest(distances, n_empty)
    weights = problem.weights
    far_w = xp.ones(n_empty, dtype=problem.dtype, device=problem.device)
    if weights is not None:
        far_w = xp.take(weights, far)
    far_rows = problem.take(far) * far_w[:, None]
    ids = xp.arange(k, dtype=labels.dtype, device=problem.device)
    empty = xp.nonzero(stats.weights == 0)[0]
    into = xp.astype(xp.astype(empty, labels.dtype)[:, None] == ids[None, :], problem.dtype)
    out_of = xp.astype(xp.take(labels, far)[:, None] == ids[None, :], problem.dtype)
    is_empty = (stats.weights == 0)[:, None]
    sums = xp.where(is_empty, into.T @ far_rows, stats.sums - out_of.T @ far_rows)
    moved = xp.where(is_empty[:, 0], into.T @ far_w, stats.weights - out_of.T @ far_w)
    return Statistics(sums, moved, stats.changed, stats.inertia)


def _iterate(
    problem: Problem,
    centers: Array,
    previous: Array | None,
    empty_cluster: str,
    track_inertia: bool,
    capacity: int | None,
) -> tuple[Array, Statistics, Array, tuple[float, ...]]:
    """One pass over the data from ``centers`` and the centres it gives: ``(labels,
    statistics, new centres, (labels changed, centre shift, empty clusters, near
    ties))``, the four numbers in the iteration's one read of the device."""
    backend = problem.backend
    xp = backend.xp
    acc = backend.accumulator_dtype(problem.dtype)
    labels = xp.empty(problem.n_samples, dtype=xp.int32, device=problem.device)
    stats = assign(
        problem, centers, labels, with_inertia=track_inertia, previous=previous, capacity=capacity
    )
    assert stats is not None
    new = _new_centers(stats, centers, empty_cluster, xp)
    near = stats.near_ties
    if near is None:  # nothing reduced: no near ties
        near = xp.zeros((), dtype=acc, device=problem.device)
    checks = xp.stack(
        [
            xp.astype(stats.changed, acc),
            xp.astype(xp.sum((new - centers) ** 2), acc),
            xp.sum(xp.astype(stats.weights == 0, acc)),
            xp.astype(near, acc),
        ]
    )
    return labels, stats, new, tuple(float(v) for v in backend.to_numpy(checks))


def lloyd(
    problem: Problem,
    centers: Array,
    *,
    max_iter: int,
    tol: float,
    empty_cluster: str = "relocate",
    verbose: bool = False,
    track_inertia: bool = False,
) -> Generator[Step, None, Result]:
    """Run Lloyd's algorithm from ``centers`` (working units), yielding every iteration.

    The generator's return value is the :class:`Result`. Arrays in a :class:`Step` are
    fresh arrays the loop does not write to again. ``track_inertia`` adds each step's
    inertia (of its labels against the centres it started from) to the pass over the
    data that computes the labels, for the frame stream; ``fit`` does not pay for it.
    """
    backend = problem.backend
    xp = backend.xp
    n, dev = problem.n_samples, problem.device
    tolerance = problem.tolerance(tol)
    labels_old = None
    strict = converged = False
    shift = 0.0
    # at a reduced precision, how many near ties the next pass may settle without
    # reading their count (None: read it; see _assign.settle_capacity)
    capacity: int | None = None
    for i in range(max_iter):
        step = functools.partial(
            _iterate, problem, centers, labels_old, empty_cluster, track_inertia
        )
        labels, stats, new, (n_changed, shift, n_empty, near_ties) = step(capacity)
        if capacity is not None and near_ties > capacity:  # rows were left out: again
            labels, stats, new, (n_changed, shift, n_empty, near_ties) = step(None)
        capacity = settle_capacity(problem, int(near_ties))
        if n_empty and empty_cluster == "relocate":
            stats = _relocate(problem, centers, labels, stats, int(n_empty))
            new = _new_centers(stats, centers, empty_cluster, xp)
            shift = float(xp.sum((new - centers) ** 2))
        strict = n_changed == 0
        converged = strict or shift <= tolerance
        if verbose:
            logger.info(
                "iteration %d: %d labels changed, centre shift %.6g (tolerance %.6g)",
                i + 1,
                n_changed,
                shift,
                tolerance,
            )
        yield Step(i + 1, new, labels, shift, stats.inertia, int(n_changed), converged)
        centers, labels_old = new, labels
        if converged:
            break
    if not strict or shift > 0:
        # Labels match the returned centres: after a tolerance or max_iter stop, and
        # also when the labels stood still but empty clusters moved (scikit-learn
        # returns stale labels then).
        labels = xp.empty(n, dtype=xp.int32, device=dev)
        assign(problem, centers, labels, statistics=False)
    return Result(centers, labels, inertia(problem, centers, labels), i + 1, converged)


T = TypeVar("T")


def run_to_end(steps: Generator[object, None, T]) -> T:
    """Drain a generator and return its return value."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value
