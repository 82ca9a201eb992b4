"""Lloyd's algorithm, written once for every backend.

One iteration is one pass over the data (``_assign``): the exact nearest centre of
every row and the per-cluster sums, from which the new centres follow. Centres are
kept as the caller gets them (X's units and dtype), so the labels of every iteration
are exact for centres that could be returned. Convergence follows scikit-learn's Lloyd:

* strict convergence when the labels did not change from the previous iteration;
* otherwise convergence when ``Σ‖Δc‖² <= tol · mean(var(X))``, after which one more
  assignment makes the labels match the returned centres (as it does after a strict
  stop in which empty clusters moved, where scikit-learn would return stale labels);
* ``n_iter`` counts the iterations run, as ``KMeans.n_iter_`` does.

Empty clusters are relocated to the points farthest from their centres, as in
scikit-learn (``"relocate"``), or keep their previous centre (``"keep"``, as in the
blog post's ``KMeansND``). Each iteration reads back one small vector from the device
(labels changed, centre shift, empty clusters, the pass's feedback); an iteration that
relocates reads three more (the largest distance, which clusters are empty, the new
shift).
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ._assign import EXACT, Centers, Pass, Statistics, assign, centers_for, inertia
from ._bounds import BoundedPass, pass_for
from ._problem import Problem
from .backends import Array
from .backends._base import rescale

logger = logging.getLogger("kmeans_gpu")

EMPTY_CLUSTER_POLICIES = ("relocate", "keep")


@dataclass(frozen=True)
class Step:
    """What one Lloyd iteration did: ``labels`` assign the rows to the centres the
    iteration started from, ``centers`` (X's units and dtype) are where it moved them."""

    iteration: int
    centers: Array
    labels: Array
    center_shift: float
    #: the inertia of ``labels`` against the centres they were assigned to (0-d array
    #: on the device, working units), when the run tracks it; else None
    inertia: Array | None
    n_changed: int
    converged: bool


@dataclass(frozen=True)
class Result:
    """A finished run: centres of X's units and dtype, labels exact for them, their
    inertia (X's units)."""

    centers: Array
    labels: Array
    inertia: float
    n_iter: int
    converged: bool


def _new_centers(
    problem: Problem, stats: Statistics, current: Centers, empty_cluster: str
) -> Array:
    """The weighted means of the clusters, in X's units and dtype; a cluster of zero
    weight keeps its centre ("keep"), or, when relocation found no point for it, goes
    where scikit-learn's Lloyd puts it: onto the heaviest cluster's mean when that
    cluster comes earlier in order, else onto its weighted sum."""
    xp = problem.backend.xp
    w = stats.weights[:, None]
    has_weight = w > 0
    means = stats.sums / xp.where(has_weight, w, xp.ones_like(w))
    if empty_cluster == "relocate":
        heaviest = xp.reshape(xp.argmax(stats.weights), (1,))
        order = xp.arange(current.n_clusters, device=problem.device)
        later = (order > xp.astype(heaviest, order.dtype))[:, None]
        means = xp.where(
            has_weight,
            means,
            xp.where(
                later, xp.take(means, heaviest, axis=0), xp.take(stats.sums, heaviest, axis=0)
            ),
        )
        return problem.from_working(means)
    return xp.where(has_weight, problem.from_working(means), current.caller)


def center_shift(problem: Problem, new: Array, old: Array) -> Array:
    """``Σ‖Δc‖²`` in working units (0-d float64)."""
    xp, s = problem.backend.xp, problem.scale_exponent
    diff = rescale(xp.astype(new, xp.float64), s) - rescale(xp.astype(old, xp.float64), s)
    return xp.sum(diff * diff)


@dataclass(frozen=True)
class Farthest:
    """Rows farthest from their centres, the farthest first (ties: the lowest row):
    their squared distances (float64, working units), the rows (X's units and dtype),
    their weights (None: all one) and labels."""

    distances: Array
    rows: Array
    weights: Array | None
    labels: Array


def farthest_rows(problem: Problem, current: Centers, labels: Array, n: int) -> Farthest:
    """The ``n`` rows of ``problem`` farthest from their centres under ``labels``."""
    backend = problem.backend
    xp = backend.xp
    k, s = current.n_clusters, problem.scale_exponent

    def distances(start: int, stop: int) -> Array:
        X = problem.X[start:stop, ...]
        return backend.sq_distances(X, current.caller, labels[start:stop], s)

    found = xp.concat(list(backend.map_chunks(distances, problem.chunks(k))))
    far = backend.farthest(found, min(n, int(found.shape[0])))
    weights = None if problem.weights is None else xp.take(problem.weights, far)
    return Farthest(xp.take(found, far), problem.given_rows(far), weights, xp.take(labels, far))


def _relocate(problem: Problem, current: Centers, stats: Statistics, far: Farthest) -> Statistics:
    """Move each empty cluster onto one of the rows ``far``, in order."""
    backend = problem.backend
    xp = backend.xp
    k = current.n_clusters
    if float(xp.max(far.distances)) == 0.0:  # fewer distinct points than clusters
        return stats
    is_empty = stats.weights == 0
    empty = xp.astype(xp.nonzero(is_empty)[0], xp.int32)
    into, into_w = backend.cluster_sums(far.rows, problem.origin, empty, far.weights, k)
    out, out_w = backend.cluster_sums(far.rows, problem.origin, far.labels, far.weights, k)
    sums = xp.where(is_empty[:, None], into, stats.sums - out)
    weights = xp.where(is_empty, into_w, stats.weights - out_w)
    return Statistics(sums, weights, stats.changed, stats.inertia)  # the same labels


class Rows(Protocol):
    """Where the data-sized work of a run happens: :class:`InProcess` on the rows of a
    problem in this process; ``kmeans_gpu._sharded`` on shards held by Dask workers.
    Everything else of a run (centres, convergence) is the loop's, on its problem."""

    def new_labels(self) -> Array:
        """Where a pass writes its labels."""
        ...

    def run(
        self, centers: Centers, labels: Array, *, previous: Array | None, with_inertia: bool
    ) -> Statistics:
        """One pass: the labels of every row into ``labels``, and the statistics."""
        ...

    def accepts(self, feedback: float) -> bool:
        """Whether the pass whose statistics carried ``feedback`` stands."""
        ...

    def farthest(self, centers: Centers, labels: Array, n: int) -> Farthest:
        """The ``n`` rows farthest from their centres, as :func:`farthest_rows`."""
        ...

    def finish(self, centers: Centers, labels: Array, *, again: bool) -> tuple[Array, float]:
        """Labels exact for ``centers`` (``labels`` itself unless ``again``) and their
        inertia in X's units."""
        ...


@dataclass(frozen=True)
class InProcess:
    """The rows of ``problem``, in this process; ``engine`` is the pass over them."""

    problem: Problem
    engine: Pass = EXACT

    def new_labels(self) -> Array:
        xp = self.problem.backend.xp
        return xp.empty(self.problem.n_samples, dtype=xp.int32, device=self.problem.device)

    def run(
        self, centers: Centers, labels: Array, *, previous: Array | None, with_inertia: bool
    ) -> Statistics:
        return self.engine(
            self.problem, centers, labels, previous=previous, with_inertia=with_inertia
        )

    def accepts(self, feedback: float) -> bool:
        return self.engine.accepts(feedback)

    def farthest(self, centers: Centers, labels: Array, n: int) -> Farthest:
        return farthest_rows(self.problem, centers, labels, n)

    def finish(self, centers: Centers, labels: Array, *, again: bool) -> tuple[Array, float]:
        if again:
            previous, labels = labels, self.new_labels()
            if isinstance(self.engine, BoundedPass):
                self.engine.relabel(self.problem, centers, labels, previous)
            else:
                assign(self.problem, centers, labels, statistics=False)
        return labels, inertia(self.problem, centers.caller, labels)


def lloyd(
    problem: Problem,
    centers: Array,
    *,
    max_iter: int,
    tol: float,
    empty_cluster: str = "relocate",
    verbose: bool = False,
    track_inertia: bool = False,
    engine: Pass = EXACT,
    rows: Rows | None = None,
) -> Generator[Step, None, Result]:
    """Run Lloyd's algorithm from ``centers`` (X's units and dtype), yielding every
    iteration; the generator's return value is the :class:`Result`.

    Arrays in a :class:`Step` are fresh arrays the loop does not write to again.
    ``track_inertia`` adds each step's inertia to the pass that computes its labels
    (for the frame stream); ``engine`` is the pass over the data (the default exact
    pass runs with distance bounds where they pay, ``_bounds``: the same results);
    ``rows`` where the data-sized work runs (default: in this process).
    """
    xp = problem.backend.xp
    current = centers_for(problem, centers)
    if rows is None:
        data: Rows = InProcess(problem, pass_for(problem, current.n_clusters, engine))
    else:
        data = rows
    tolerance = problem.tolerance(tol)
    previous: Array | None = None
    strict = converged = False
    shift, done = 0.0, 0
    labels: Any = None  # (no iteration at all: ``finish`` assigns them)
    for i in range(max_iter):
        done = i + 1
        while True:
            labels = data.new_labels()
            stats = data.run(current, labels, previous=previous, with_inertia=track_inertia)
            new = _new_centers(problem, stats, current, empty_cluster)
            feedback = (
                xp.zeros((), device=problem.device) if stats.feedback is None else stats.feedback
            )
            checks = xp.stack(
                [
                    xp.astype(stats.changed, xp.float64),
                    center_shift(problem, new, current.caller),
                    xp.sum(xp.astype(stats.weights == 0, xp.float64)),
                    xp.astype(feedback, xp.float64),
                ]
            )
            n_changed, shift, n_empty, said = (float(v) for v in problem.backend.to_numpy(checks))
            if data.accepts(said):
                break
        if n_empty and empty_cluster == "relocate":
            far = data.farthest(current, labels, int(n_empty))
            stats = _relocate(problem, current, stats, far)
            new = _new_centers(problem, stats, current, empty_cluster)
            shift = float(center_shift(problem, new, current.caller))
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
        current, previous = centers_for(problem, new), labels
        if converged:
            break
    # labels exact for the returned centres: after a tolerance or max_iter stop, and
    # also when the labels stood still but empty clusters moved
    labels, value = data.finish(current, labels, again=not strict or shift > 0)
    return Result(current.caller, labels, value, done, converged)


T = TypeVar("T")


def run_to_end(steps: Generator[Any, None, T]) -> T:
    """Drain a generator and return its return value."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value
