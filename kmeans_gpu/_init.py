"""Initial centres: greedy k-means++, k random samples, an array, or a callable.

Random draws come from a host ``numpy.random.RandomState`` and only the few numbers
drawn travel to the device: the data never leaves it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ._problem import Problem
from .backends import Array
from .backends._base import clamp

INIT_NAMES = ("k-means++", "k-means||", "random")


def kmeans_plusplus_working(
    problem: Problem,
    n_clusters: int,
    random_state: np.random.RandomState,
    n_local_trials: int | None = None,
) -> Array:
    """Greedy k-means++ on the working rows: the indices of the chosen rows.

    Each new centre is the best (lowest weighted potential) of ``n_local_trials``
    candidates drawn with probability proportional to ``w · D(x)²``. Every pass runs
    block by block with temporaries of one block, its sums added as
    :meth:`Problem.reduce` adds them (the same bits whatever the working memory): a
    step takes three passes (the draw, the candidates' potentials, the new distances)
    and keeps one distance per row. No value is read back from the device.
    """
    backend = problem.backend
    xp = backend.xp
    n, dev, dtype = problem.n_samples, problem.device, problem.dtype
    trials = n_local_trials or 2 + int(math.log(n_clusters))
    weights = problem.weights
    x_sq = problem.squared_row_norms
    ranges = problem.row_blocks(trials + problem.n_features)
    blocks = [block for r in ranges for block in problem.blocks(*r)]  # the fixed sum blocks
    # every uniform draw at once: one copy to the device instead of one per step
    uniforms = random_state.uniform(size=1 + (n_clusters - 1) * trials)
    uniforms_dev = xp.asarray(uniforms, dtype=xp.float64, device=dev)
    closest = xp.full(n, xp.inf, dtype=dtype, device=dev)

    def weighted(values: Array, start: int, stop: int) -> Array:
        values = xp.astype(values, xp.float64)
        return values if weights is None else values * xp.astype(weights[start:stop], xp.float64)

    def draw(values: Callable[[int, int], Array], totals: Array, start: int, count: int) -> Array:
        """Rows drawn with probability proportional to ``values``, by the draws
        ``start:start + count``: the first row whose running sum reaches each target."""
        ends = xp.cumulative_sum(totals)
        targets = uniforms_dev[start : start + count] * ends[-1]
        block_of = clamp(xp, xp.searchsorted(ends, targets), high=len(blocks) - 1)
        found = xp.zeros(count, dtype=xp.int64, device=dev)
        for index, (a, b) in enumerate(blocks):
            running = xp.cumulative_sum(values(a, b)) + (ends[index] - totals[index])
            at = clamp(xp, xp.searchsorted(running, targets), high=b - a - 1)
            found = xp.where(block_of == index, xp.astype(at, xp.int64) + a, found)
        return found

    def distances(centers: Array, centers_sq: Array, a: int, b: int) -> Array:
        """Squared distances of the rows ``a:b`` to working rows ``centers``, ``(m, b - a)``."""
        d2 = (
            centers_sq[:, None]
            + x_sq[None, a:b]
            - 2.0 * backend.cross(centers, problem.rows(a, b))
        )
        return clamp(xp, d2, low=0.0)

    def update(index: Array) -> Array:
        """``closest`` with the row ``index`` as one more centre; the weighted sums of
        it over :data:`blocks`."""
        center, center_sq = problem.take(index), xp.take(x_sq, index)

        def chunk(start: int, stop: int) -> Array:
            d2 = distances(center, center_sq, start, stop)[0, :]
            closest[start:stop] = xp.minimum(closest[start:stop], d2)
            parts = problem.blocks(start, stop)
            return xp.stack([xp.sum(weighted(closest[a:b], a, b)) for a, b in parts])

        return xp.concat(list(backend.map_chunks(chunk, ranges)))

    def weight(a: int, b: int) -> Array:
        return weighted(xp.ones(b - a, dtype=xp.float64, device=dev), a, b)

    totals = xp.stack([xp.sum(weight(a, b)) for a, b in blocks])
    chosen = [draw(weight, totals, 0, 1)]
    totals = update(chosen[0])
    for step in range(1, n_clusters):
        first = 1 + (step - 1) * trials
        candidates = draw(lambda a, b: weighted(closest[a:b], a, b), totals, first, trials)
        potential = functools.partial(
            _potentials, distances, closest, weighted,
            problem.take(candidates), xp.take(x_sq, candidates),
        )  # fmt: skip
        best = xp.reshape(xp.argmin(problem.reduce(potential, ranges)), (1,))
        chosen.append(xp.take(candidates, best))
        totals = update(chosen[-1])
    return xp.concat(chosen)


def _potentials(
    distances: Any, closest: Array, weighted: Any, rows: Array, rows_sq: Array, a: int, b: int
) -> Array:
    """The weighted terms of the potentials of adding each of ``rows`` as a centre, for
    the rows ``a:b``: ``(b - a, len(rows))``."""
    import array_api_compat

    xp = array_api_compat.array_namespace(closest)
    d2 = xp.minimum(closest[None, a:b], distances(rows, rows_sq, a, b))
    return xp.permute_dims(weighted(d2, a, b), (1, 0))


def random_rows(problem: Problem, n_clusters: int, random_state: np.random.RandomState) -> Array:
    """Indices of k distinct samples, drawn with probability proportional to weight."""
    backend = problem.backend
    p = None
    if problem.weights is not None:
        w = backend.to_numpy(problem.weights).astype(np.float64)
        if np.count_nonzero(w) < n_clusters:
            raise ValueError(
                f"init='random' needs at least n_clusters={n_clusters} samples of positive "
                f"weight, got {np.count_nonzero(w)}"
            )
        p = w / w.sum()
    seeds = random_state.choice(problem.n_samples, size=n_clusters, replace=False, p=p)
    return backend.asarray(seeds, device=problem.device)


def check_init(init: Any) -> str | Callable[..., Any] | Any:
    """Refuse an unknown init name or an init of the wrong kind (before any work)."""
    if isinstance(init, str):
        if init not in INIT_NAMES:
            raise ValueError(
                f"unknown init {init!r}; use 'k-means++', 'k-means||', 'random', an array of "
                "shape (n_clusters, n_features) or a callable"
            )
        return init
    if callable(init):
        return init
    if hasattr(init, "shape") or isinstance(init, list | tuple):
        return init
    raise TypeError(
        "init must be 'k-means++', 'k-means||', 'random', an array or a callable, got "
        f"{type(init).__name__}"
    )


def check_centers(centers: Any, problem: Problem, n_clusters: int, what: str) -> Array:
    """Validate initial centres of shape (n_clusters, n_features), as an array of the
    problem's backend, device and dtype (the caller's array is untouched)."""
    from ._validation import check_array

    backend = problem.backend
    C, _ = check_array(
        centers,
        backend=backend,
        name=what,
        dtype=problem.dtype,
        device=problem.device,
        accept_sparse=False,
    )
    shape = tuple(C.shape)
    if shape[0] != n_clusters:
        raise ValueError(
            f"The shape of the initial centers {shape} does not match the number of "
            f"clusters {n_clusters} ({what})."
        )
    if shape[1] != problem.n_features:
        raise ValueError(
            f"The shape of the initial centers {shape} does not match the number of "
            f"features of the data {problem.n_features} ({what})."
        )
    return C


def initial_centers(
    problem: Problem, init: Any, n_clusters: int, random_state: np.random.RandomState
) -> Array:
    """Initial centres in the caller's units (rows of X for the random methods)."""
    if isinstance(init, str) and init == "k-means++":
        return problem.dense_rows(kmeans_plusplus_working(problem, n_clusters, random_state))
    if isinstance(init, str) and init == "random":
        return problem.dense_rows(random_rows(problem, n_clusters, random_state))
    if isinstance(init, str) and init == "k-means||":
        from ._kmeans_parallel import kmeans_parallel_problem

        return kmeans_parallel_problem(problem, n_clusters, random_state)
    if callable(init):
        centers = init(problem.X, n_clusters, random_state=random_state)
        return check_centers(centers, problem, n_clusters, "the centers returned by init")
    return check_centers(init, problem, n_clusters, "init")
