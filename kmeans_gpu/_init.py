"""Initial centres: greedy k-means++, k random samples, an array, or a callable.

Random draws come from a host ``numpy.random.RandomState`` and only the few numbers
drawn travel to the device: the data never leaves it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ._problem import Problem
from .backends import Array
from .backends._base import clamp

INIT_NAMES = ("k-means++", "random")


def kmeans_plusplus_working(
    problem: Problem,
    n_clusters: int,
    random_state: np.random.RandomState,
    n_local_trials: int | None = None,
) -> tuple[Array, Array]:
    """Greedy k-means++ on the working data: ``(centers, indices)``, both on the device.

    Each new centre is the best (lowest weighted potential) of ``n_local_trials``
    candidates drawn with probability proportional to ``w · D(x)²``.
    """
    backend, w = problem.backend, problem.weights
    xp = backend.xp
    n = problem.n_samples
    dev = problem.device
    acc = backend.accumulator_dtype(problem.dtype)
    if n_local_trials is None:
        n_local_trials = 2 + int(math.log(n_clusters))
    weights = xp.ones(n, dtype=problem.dtype, device=dev) if w is None else w
    weights_acc = xp.astype(weights, acc)
    # Every step multiplies its candidates with every working row. Working rows made
    # once are kept for the whole init: all of them with a working copy (one BLAS call
    # a step); without one, the first rows whose working copy fits half the workspace
    # (all of G1's 1M x 128 with CuPy's 1 GiB), the others made again each step in
    # blocks that fit it. The same rows either way, bitwise.
    if problem.X_working is not None:
        kept, blocks = problem.X_working, []
    else:
        n_kept = min(n, problem.workspace // (2 * problem.itemsize * problem.n_features))
        kept = problem.rows(0, n_kept) if n_kept else None
        rest = problem.row_blocks(n_local_trials + problem.n_features, n - n_kept)
        blocks = [(n_kept + a, n_kept + b) for a, b in rest] if n_kept < n else []
    x_sq = problem.squared_row_norms

    # every uniform draw of the run at once, in the order the steps take them: one copy
    # to the device instead of one per step (each would wait for the device)
    uniforms = random_state.uniform(size=1 + (n_clusters - 1) * n_local_trials)
    uniforms_dev = xp.asarray(uniforms, dtype=acc, device=dev)

    def draw(values: Array, start: int, count: int) -> Array:
        """Indices sampled with probability proportional to ``values``, by the draws
        ``start:start + count``."""
        cdf = xp.cumulative_sum(xp.astype(values, acc))
        found = xp.searchsorted(cdf, uniforms_dev[start : start + count] * cdf[-1])
        return clamp(xp, found, high=n - 1)

    def sq_dist_to_rows(idx: Array) -> Array:
        """Squared distances of every row to the rows ``idx``: ``(len(idx), n)``."""
        chosen = problem.take(idx)
        chosen_sq = xp.take(x_sq, idx)[:, None]

        def block(rows: Array, a: int, b: int) -> Array:
            d2 = chosen_sq + x_sq[None, a:b] - 2.0 * (chosen @ rows.T)
            return clamp(xp, d2, low=0.0)

        parts = [] if kept is None else [block(kept, 0, int(kept.shape[0]))]
        parts += [block(problem.rows(a, b), a, b) for a, b in blocks]
        return parts[0] if len(parts) == 1 else xp.concat(parts, axis=1)

    first = draw(weights, 0, 1)
    chosen = [first]
    closest = sq_dist_to_rows(first)[0, :]
    for step in range(1, n_clusters):
        candidates = draw(weights * closest, 1 + (step - 1) * n_local_trials, n_local_trials)
        d2 = xp.minimum(closest[None, :], sq_dist_to_rows(candidates))
        potentials = xp.astype(d2, acc) @ weights_acc
        best = xp.reshape(xp.argmin(potentials), (1,))
        chosen.append(xp.take(candidates, best))
        closest = xp.take(d2, best, axis=0)[0, :]
    indices = xp.concat(chosen)
    return problem.take(indices), indices


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
                f"unknown init {init!r}; use 'k-means++', 'random', an array of shape "
                "(n_clusters, n_features) or a callable"
            )
        return init
    if callable(init):
        return init
    if hasattr(init, "shape") or isinstance(init, list | tuple):
        return init
    raise TypeError(
        f"init must be 'k-means++', 'random', an array or a callable, got {type(init).__name__}"
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
    )
    if tuple(C.shape) != (n_clusters, problem.n_features):
        raise ValueError(
            f"The shape of {what} {tuple(C.shape)} does not match "
            f"(n_clusters, n_features) = ({n_clusters}, {problem.n_features})"
        )
    return C


def initial_centers(
    problem: Problem, init: Any, n_clusters: int, random_state: np.random.RandomState
) -> Array:
    """Initial centres in the caller's units (rows of X for the random methods)."""
    take = problem.backend.xp.take
    if isinstance(init, str) and init == "k-means++":
        rows = kmeans_plusplus_working(problem, n_clusters, random_state)[1]
        return take(problem.X_input, rows, axis=0)
    if isinstance(init, str) and init == "random":
        return take(problem.X_input, random_rows(problem, n_clusters, random_state), axis=0)
    if callable(init):
        centers = init(problem.X_input, n_clusters, random_state=random_state)
        return check_centers(centers, problem, n_clusters, "the centers returned by init")
    return check_centers(init, problem, n_clusters, "init")
