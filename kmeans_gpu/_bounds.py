"""The exact pass with distance bounds: rows whose nearest centre cannot have changed
skip the distance products (Hamerly's bounds, kept conservative for exact labels).

Each row keeps an upper bound ``u`` of its distance to its centre and a lower bound
``l`` of its distance to every other centre (float64, working units). A pass that
computes a row's scores sets them from its two best fast scores ``b ≤ s`` and the
near-tie margin ``m`` (four times a score's error bound, which also bounds the error
of the row's squared norm ``r``): ``u = √(r + b + m)``, ``l = √(r + s − m)``; a near
tie, settled exactly, gets ``l = −∞``. When the centres move by ``δ_j`` (exact
differences of the centres as returned), ``u += δ_label`` and ``l −= max δ``; a row
with ``u < l`` keeps its label, which is then the strict nearest centre of the new
centres: the labels are those of :func:`~kmeans_gpu._assign.assign`, bit for bit, and
so are the centres and every statistic. Updates round outwards by a relative
:data:`SLACK`, far above float64's rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._assign import EXACT, Centers, Pass, Statistics, margin_factor, pass_statistics, settle
from ._problem import Problem
from .backends import Array
from .backends._base import rescale, tie_margin

#: Relative outward rounding of every bound update.
SLACK = 1e-9
#: Bounds pay once a row's scores cost more than their upkeep: at least this many
#: clusters × features.
BOUNDED_WORK = 2048


def pass_for(problem: Problem, n_clusters: int, engine: Pass) -> Pass:
    """``engine``, or, for the default exact pass where bounds pay (enough clusters ×
    features, a backend whose reads are free, dense rows), a new :class:`BoundedPass`
    for one run."""
    backend = problem.backend
    if (
        engine is EXACT
        and backend.prunes
        and not backend.sparse
        and n_clusters * problem.n_features >= BOUNDED_WORK
    ):
        return BoundedPass()
    return engine


@dataclass(frozen=True)
class _Last:
    """A pass's centres, the labels it wrote and its bounds (float64, per row)."""

    centers: Centers
    labels: Array
    upper: Array
    lower: Array


@dataclass
class BoundedPass:
    """The exact pass of one run, skipping rows whose label the bounds prove; its
    state is the last pass's centres, labels and bounds."""

    last: _Last | None = field(default=None, repr=False)

    def __call__(
        self,
        problem: Problem,
        centers: Centers,
        labels: Array,
        *,
        previous: Array | None = None,
        with_inertia: bool = False,
    ) -> Statistics:
        self.relabel(problem, centers, labels, previous)
        return pass_statistics(problem, centers, labels, previous, with_inertia)

    def accepts(self, feedback: float) -> bool:
        return True

    def relabel(
        self, problem: Problem, centers: Centers, labels: Array, previous: Array | None
    ) -> None:
        """Write the exact nearest centre of every row into ``labels``: from the bounds
        where ``previous`` are this pass's last labels, else from every row's scores."""
        backend = problem.backend
        xp = backend.xp
        last = self.last
        known = last is not None and previous is last.labels
        if last is not None and known:
            moved = _moves(problem, last.centers.caller, centers.caller)
            furthest = xp.max(moved)
            upper, lower = last.upper, last.lower
        else:
            upper, lower = (
                xp.empty(problem.n_samples, dtype=xp.float64, device=problem.device)
                for _ in range(2)
            )
        rows_sq = problem.squared_row_norms
        factor = margin_factor(problem)

        def chunk(start: int, stop: int) -> Array:
            if known:
                assert previous is not None
                kept = previous[start:stop]
                up = (upper[start:stop] + xp.take(moved, kept)) * (1.0 + SLACK)
                low = (lower[start:stop] - furthest) * (1.0 - SLACK)
                labels[start:stop] = kept
                upper[start:stop], lower[start:stop] = up, low
                todo = xp.nonzero(~(up < low))[0]
                if not int(todo.shape[0]):
                    return todo
                at = xp.astype(todo, xp.int64) + start
                rows, squares = problem.take(at), xp.take(rows_sq, at)
            else:
                at = None
                rows, squares = problem.rows(start, stop), rows_sq[start:stop]
            own, best, second = backend.nearest_two(rows, centers.working, centers.sq)
            up, low, near = _bounds(xp, squares, best, second, factor, centers)
            if at is None:
                labels[start:stop] = own
                upper[start:stop], lower[start:stop] = up, low
                return xp.astype(xp.nonzero(near)[0], xp.int64) + start
            backend.write_at(labels, at, own)
            backend.write_at(upper, at, up)
            backend.write_at(lower, at, low)
            return at[near]

        found = list(backend.map_chunks(chunk, problem.chunks(centers.n_clusters)))
        ties = found[0] if len(found) == 1 else xp.concat(found)
        if int(ties.shape[0]):
            backend.write_at(labels, ties, settle(problem, centers, ties))
        self.last = _Last(centers, labels, upper, lower)


def _bounds(
    xp: Any, rows_sq: Array, best: Array, second: Array, factor: float, centers: Centers
) -> tuple[Array, Array, Array]:
    """Upper and lower bounds (float64) from a row's two best fast scores, and whether
    it is a near tie (its lower bound then −∞)."""
    margin = tie_margin(xp, rows_sq, factor, centers.largest_norm)
    near = (second - best) <= margin
    r, b, s, m = (xp.astype(v, xp.float64) for v in (rows_sq, best, second, margin))
    upper = xp.sqrt(xp.maximum(r + b + m, 0.0)) * (1.0 + SLACK)
    low = xp.sqrt(xp.maximum(r + s - m, 0.0)) * (1.0 - SLACK)
    lower = xp.where(near, -xp.inf, low)
    return upper, lower, near


def _moves(problem: Problem, old: Array, new: Array) -> Array:
    """How far each centre moved (float64, working units, rounded up): the exact
    difference of the centres as returned, scaled as the working rows are."""
    xp = problem.backend.xp
    diff = rescale(xp.astype(new, xp.float64) - xp.astype(old, xp.float64), problem.scale_exponent)
    return xp.sqrt(xp.sum(diff * diff, axis=1)) * (1.0 + SLACK)
