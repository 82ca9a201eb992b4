"""One pass over the data: the exact nearest centre of every row, chunk by chunk, and the
per-cluster statistics a Lloyd step needs.

Labels are exact. The fast scores ``s_j = ‖c_j‖² − 2 x·c_j`` of the working rows,
computed in the data's dtype by one matrix product, name each row's nearest and
second-nearest centre. Each score is within ``δ·(‖x‖ + max‖c‖)²`` of the exact one,
``δ = γ(d + 8)`` with ``γ(m) = m·u / (1 − m·u)`` and ``u`` the dtype's unit roundoff:
the product and ``‖c‖²`` (``γ(d)`` each), the final addition, and the rounding of the
working rows and centres to the dtype (``u`` each, twice) together stay within it.
A row whose two best scores are closer than twice that, doubled for safety, is
settled exactly: its candidates (the centres within that margin of its best score,
the true nearest always among them) are compared by float64 differences of the rows
and centres as given, ties to the lowest index. Per-cluster sums, distances and the
inertia come from the rows as given too, in float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ._problem import Problem
from .backends import Array
from .backends._base import centred64, clamp, fold, rescale, tie_margin


@dataclass(frozen=True)
class Centers:
    """One set of centres as a pass uses them.

    ``caller``: of X's units and dtype, what the labels are exact for; ``working``:
    the same in working units and X's dtype, for the fast products; ``sq``: their
    squared norms; ``largest_norm``: the largest of their norms (0-d).
    """

    caller: Array
    working: Array
    sq: Array
    largest_norm: Array

    @property
    def n_clusters(self) -> int:
        return int(self.caller.shape[0])


def centers_for(problem: Problem, caller: Array) -> Centers:
    """The :class:`Centers` of centres ``caller`` (X's units and dtype)."""
    xp = problem.backend.xp
    working = problem.working(caller)
    sq = xp.sum(working * working, axis=1)
    return Centers(caller, working, sq, xp.sqrt(xp.max(sq)))


@dataclass(frozen=True)
class Statistics:
    """Per-cluster sums of ``w·(working row)`` ``(k, d)`` and of the weights ``(k,)``,
    float64; how many labels changed (0-d); the inertia (0-d float64, working units)
    against the centres the rows were assigned to, when asked for; and ``feedback``
    (0-d, or None), a value a :class:`Pass` reads back with the iteration's checks."""

    sums: Array
    weights: Array
    changed: Array
    inertia: Array | None = None
    feedback: Array | None = None

    def __add__(self, other: Statistics) -> Statistics:
        inertia = None if self.inertia is None else self.inertia + other.inertia
        return Statistics(
            self.sums + other.sums,
            self.weights + other.weights,
            self.changed + other.changed,
            inertia,
        )


class Pass(Protocol):
    """The extension point of a fit: one pass over the data that writes every row's
    label into ``labels`` and returns the :class:`Statistics`. :data:`EXACT` is the
    default; ``kmeans_gpu.experimental`` supplies others."""

    def __call__(
        self,
        problem: Problem,
        centers: Centers,
        labels: Array,
        *,
        previous: Array | None = None,
        with_inertia: bool = False,
    ) -> Statistics: ...

    def accepts(self, feedback: float) -> bool:
        """Whether the pass whose statistics carried ``feedback`` stands (False: the
        loop runs it again)."""
        ...


class ExactPass:
    """The exact pass: :func:`assign` with statistics."""

    def __call__(
        self,
        problem: Problem,
        centers: Centers,
        labels: Array,
        *,
        previous: Array | None = None,
        with_inertia: bool = False,
    ) -> Statistics:
        stats = assign(problem, centers, labels, previous=previous, with_inertia=with_inertia)
        assert stats is not None
        return stats

    def accepts(self, feedback: float) -> bool:
        return True


EXACT = ExactPass()


def assign(
    problem: Problem,
    centers: Centers,
    labels: Array,
    *,
    statistics: bool = True,
    previous: Array | None = None,
    with_inertia: bool = False,
) -> Statistics | None:
    """Write the exact nearest centre of every row into ``labels`` and return the
    statistics (None when ``statistics`` is false), with the inertia when
    ``with_inertia`` and the number of labels that differ from ``previous`` (all of
    them when it is None).

    Three steps: every chunk's fast labels and near ties; the near ties of all chunks
    settled together (one read of their count); every chunk's statistics, added as
    :func:`fold` adds them. Chunks may run on several threads, each on its own rows.
    """
    backend = problem.backend
    xp = backend.xp
    k, n = centers.n_clusters, problem.n_samples
    rows_sq = problem.squared_row_norms
    factor, largest = margin_factor(problem), centers.largest_norm
    near = xp.empty(n, dtype=xp.bool, device=problem.device)

    def fast(start: int, stop: int) -> None:
        rows = problem.rows(start, stop)
        own, ties = backend.labels_and_ties(
            rows, centers.working, centers.sq, rows_sq[start:stop], factor, largest
        )
        labels[start:stop] = own
        near[start:stop] = ties

    chunks = problem.chunks(k)
    for _ in backend.map_chunks(fast, chunks):
        pass
    at = xp.nonzero(near)[0]
    if int(at.shape[0]):
        backend.write_at(labels, at, settle(problem, centers, at))
    if not statistics:
        return None
    return pass_statistics(problem, centers, labels, previous, with_inertia)


def pass_statistics(
    problem: Problem,
    centers: Centers,
    labels: Array,
    previous: Array | None,
    with_inertia: bool,
) -> Statistics:
    """The statistics of a pass whose ``labels`` are written: every chunk's, added as
    :func:`fold` adds them (:func:`assign`'s third step)."""
    backend = problem.backend
    xp = backend.xp
    k = centers.n_clusters

    def chunk(start: int, stop: int) -> tuple[int, int, Statistics]:
        X, own = problem.X[start:stop, ...], labels[start:stop]
        w = None if problem.weights is None else problem.weights[start:stop]
        sums, weights = backend.cluster_sums(X, problem.origin, own, w, k, problem.deterministic)
        if previous is None:
            changed = xp.full((), stop - start, dtype=xp.int64, device=problem.device)
        else:
            changed = xp.astype(xp.count_nonzero(own != previous[start:stop]), xp.int64)
        inertia = None
        if with_inertia:
            inertia = backend.inertia_of(X, centers.caller, own, w, problem.scale_exponent)
        return start, stop, Statistics(sums, weights, changed, inertia)

    return fold(backend.map_chunks(chunk, problem.chunks(k)), backend.sum_block_rows)


def nearest(problem: Problem, centers: Centers, start: int, stop: int) -> Array:
    """The exact nearest centre (int32, the lowest index on ties) of rows
    ``start:stop``."""
    xp = problem.backend.xp
    labels = xp.empty(stop - start, dtype=xp.int32, device=problem.device)
    assign(problem.part(start, stop), centers, labels, statistics=False)
    return labels


def margin_factor(problem: Problem) -> float:
    """The factor of the near-tie margin (:func:`score_margin`): twice the error bound
    of a score (module docstring), doubled for safety."""
    terms = problem.n_features + 8
    u = problem.unit_roundoff
    return 4.0 * terms * u / (1.0 - terms * u)


def score_margin(problem: Problem, rows_sq: Array, centers: Centers) -> Array:
    """Per row, how far apart two fast scores must be for their order to be the exact
    one."""
    factor = margin_factor(problem)
    return tie_margin(problem.backend.xp, rows_sq, factor, centers.largest_norm)


def settle(problem: Problem, centers: Centers, at: Array) -> Array:
    """Exact labels of the rows ``at``, in pieces whose scores and candidates fit the
    working memory."""
    backend = problem.backend
    xp = backend.xp

    def piece(a: int, b: int) -> Array:
        which = at[a:b]
        margin = score_margin(problem, xp.take(problem.squared_row_norms, which), centers)
        scores = backend.scores(problem.take(which), centers.working, centers.sq)
        within = xp.min(scores, axis=1) + margin
        row, column = xp.nonzero(scores <= within[:, None])
        return _closest(problem, centers, which, row, column)

    # on the backend's threads, as every pass: a product in the caller's thread would
    # wake BLAS's own threads, which then spin on the cores the next pass needs
    pieces = problem.pieces(int(at.shape[0]), 16 * (centers.n_clusters + problem.n_features))
    settled = list(backend.map_chunks(piece, pieces))
    return settled[0] if len(settled) == 1 else xp.concat(settled)


def _closest(problem: Problem, centers: Centers, at: Array, row: Array, column: Array) -> Array:
    """For candidate pairs ``(row, column)`` (rows ``at[row]`` of X, ordered by row then
    column), each row's candidate of the smallest exact distance, the lowest column on
    ties."""
    backend = problem.backend
    xp = backend.xp
    rows_of_pairs = xp.take(at, row)
    distances = xp.concat(
        [
            backend.sq_distances(
                problem.given_rows(rows_of_pairs[a:b]),
                centers.caller,
                column[a:b],
                problem.scale_exponent,
            )
            for a, b in problem.pieces(int(row.shape[0]), 16 * problem.n_features)
        ]
    )
    by_distance = xp.argsort(distances, stable=True)  # keeps columns in order on ties
    order = xp.take(by_distance, xp.argsort(xp.take(row, by_distance), stable=True))
    firsts = xp.searchsorted(
        xp.take(row, order), xp.arange(int(at.shape[0]), dtype=row.dtype, device=row.device)
    )
    return xp.astype(xp.take(xp.take(column, order), firsts), xp.int32)


def inertia(problem: Problem, centers: Array, labels: Array) -> float:
    """Exact ``Σ w ‖x − c_label‖²`` of X against centres of X's units, in X's units,
    accumulated in float64 (each chunk's by the backend, chunks as :func:`fold` adds)."""
    return problem.inertia_from_working(float(working_inertia(problem, centers, labels)))


def working_inertia(problem: Problem, centers: Array, labels: Array) -> Array:
    """:func:`inertia` in working units, as a 0-d float64 array."""
    backend, w, s = problem.backend, problem.weights, problem.scale_exponent

    def chunk(start: int, stop: int) -> tuple[int, int, Array]:
        wc = None if w is None else w[start:stop]
        X = problem.X[start:stop, ...]
        return start, stop, backend.inertia_of(X, centers, labels[start:stop], wc, s)

    parts = backend.map_chunks(chunk, problem.chunks(int(centers.shape[0])))
    return fold(parts, backend.sum_block_rows)


def distances(problem: Problem, centers: Centers) -> Array:
    """Euclidean distances of every row to every centre ``(n_samples, k)``, in X's
    dtype and units, to the dtype's rounding: ``‖x‖² + ‖c‖² − 2x·c`` in float64 on
    working rows, and float64 differences wherever that expression's error could show
    in the result (near a centre).

    Raises
    ------
    ValueError
        When a distance exceeds the range of X's dtype.
    """
    backend = problem.backend
    xp = backend.xp
    d, s = problem.n_features, problem.scale_exponent
    finfo = xp.finfo(problem.dtype)
    shown = 24 if problem.itemsize == 4 else 20  # significant bits the result must keep
    delta = (d + 8) * 2.0**-53 / (1.0 - (d + 8) * 2.0**-53)
    center_rows = centred64(xp, centers.caller, problem.origin)
    center_sq = xp.sum(center_rows * center_rows, axis=1)
    largest = xp.sqrt(xp.max(center_sq))

    def chunk(start: int, stop: int) -> Array:
        X = problem.X[start:stop, ...]
        rows = backend.rows64(X, problem.origin)
        rows_sq = backend.row_sq64(rows)
        d2 = rows_sq[:, None] + center_sq[None, :] - 2.0 * (rows @ center_rows.T)
        reach = xp.sqrt(rows_sq) + largest
        close = d2 <= (delta * 2.0 ** (shown + 1)) * (reach * reach)[:, None]
        row, column = xp.nonzero(close)
        if int(row.shape[0]):
            exact = backend.sq_distances(backend.take_rows(X, row), centers.caller, column, s)
            flat = xp.reshape(d2, (-1,))
            index = xp.astype(row, xp.int64) * centers.n_clusters + xp.astype(column, xp.int64)
            backend.write_at(flat, index, exact)
            d2 = xp.reshape(flat, d2.shape)
        return rescale(xp.sqrt(clamp(xp, d2, low=0.0)), -s)

    parts = list(backend.map_chunks(chunk, problem.row_blocks(centers.n_clusters + 2 * d)))
    found = xp.concat(parts, axis=0)
    if float(xp.max(found)) > float(finfo.max):
        raise ValueError(
            f"distances exceed the range of X's dtype ({problem.dtype}): pass float64 data"
        )
    return xp.astype(found, problem.dtype)
