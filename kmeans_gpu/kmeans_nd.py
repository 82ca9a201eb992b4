"""The API of the blog post "Animating K-means clustering in 2D with matplotlib" (its
``KMeansND.py`` and ``animKMeans2D.py``), in PEP 8 names, as thin layers over the one
solver.

Each function behaves as the blog post's code does on the same inputs: an empty
cluster keeps its centroid, ``KMeansND`` iterates until the centroids stop changing,
and its generator yields ``(centroids, labels, iteration)`` from the initial centroids
at iteration 0.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any

import numpy as np

from . import _assign, _lloyd
from ._api import prepare
from ._problem import Problem
from ._validation import DimensionMismatchError, check_array, check_random_state
from .backends import Array, Backend, backend_for_array, on_device_of, steps_on_device_of

Frame = tuple[Array, Array, int]

__all__ = [
    "DimensionMismatchError",
    "KMeansND",
    "assign_points_to_centroids",
    "generate_clusters",
    "initialize_centroids",
    "recalc_centroids",
]


def _problem_and_centroids(
    centroids: Any, points: Any, backend: str | Backend, fixed_origin: bool
) -> tuple[Problem, Array, Any]:
    """The points as a problem and the validated centroids.

    ``fixed_origin`` centres on the centroids' mean (so one point's answer does not
    depend on the others); otherwise on the points' mean, as a fit does.
    """
    with on_device_of(points):
        problem, placement, centers = prepare(
            points,
            None,
            backend,
            centers=centroids,
            owner="the centroids",
            what="points",
            origin_at_centers=fixed_origin,
        )
    assert centers is not None
    return problem, centers, placement


def assign_points_to_centroids(
    centroids: Any, points: Any, *, backend: str | Backend = "auto"
) -> Array:
    """Index of the nearest centroid of each point (the first one on ties).

    Parameters
    ----------
    centroids : array of shape (k, n_features)
    points : array of shape (n_points, n_features)

    Returns
    -------
    labels : array of shape (n_points,), int64, of the points' array type
    """
    problem, centers, placement = _problem_and_centroids(centroids, points, backend, True)
    xp = problem.backend.xp
    with on_device_of(problem.X):
        labels = xp.empty(problem.n_samples, dtype=xp.int32, device=problem.device)
        _assign.assign(problem, _assign.centers_for(problem, centers), labels, statistics=False)
        labels = xp.astype(labels, xp.int64)
    return placement.to_output(labels)


def recalc_centroids(
    centroids: Any, points: Any, labels: Any, *, backend: str | Backend = "auto"
) -> Array:
    """The mean of each cluster's points; a cluster with no points keeps its centroid.

    Parameters
    ----------
    centroids : array of shape (k, n_features)
    points : array of shape (n_points, n_features)
    labels : array of shape (n_points,)
        Integers in ``[0, k)``.

    Returns
    -------
    centroids : array of shape (k, n_features), of the points' array type
    """
    problem, centers, placement = _problem_and_centroids(centroids, points, backend, False)
    backend_, xp = problem.backend, problem.backend.xp
    k = int(centers.shape[0])
    labels_np = _to_host(labels)
    if labels_np.shape != (problem.n_samples,) or labels_np.dtype.kind not in "iu":
        raise ValueError(
            f"labels must be integers of shape ({problem.n_samples},), got "
            f"{labels_np.dtype} of shape {labels_np.shape}"
        )
    if labels_np.size and (labels_np.min() < 0 or labels_np.max() >= k):
        raise ValueError(f"labels must lie in [0, {k}), got values outside it")
    with on_device_of(problem.X):
        labels_dev = backend_.asarray(labels_np.astype(np.int32), device=problem.device)
        sums, weights = backend_.cluster_sums(problem.X, problem.origin, labels_dev, None, k)
        has_points = (weights > 0)[:, None]
        means = sums / xp.where(has_points, weights[:, None], xp.ones_like(sums))
        new = xp.where(has_points, problem.from_working(means), centers)
    return placement.to_output(new)


def _to_host(x: Any) -> np.ndarray:
    """A host NumPy view or copy of any array or array-like."""
    backend = backend_for_array(x)
    return np.asarray(x) if backend is None else backend.to_numpy(x)


class KMeansND:
    """``KMeansND(initial_centroids, points)``: the blog post's K-means in any dimension.

    Parameters
    ----------
    initial_centroids : array of shape (k, n_features)
    points : array of shape (n_points, n_features)
    backend : {"auto", "numpy", "cupy"} or Backend, default="auto"
    max_iter : int, default=None
        None iterates until the centroids stop changing, as the blog post does.

    Raises
    ------
    DimensionMismatchError
        A ``ValueError`` (and ``RuntimeError``, as in the blog post) when the centroids and
        points have different numbers of features.
    """

    def __init__(
        self,
        initial_centroids: Any,
        points: Any,
        *,
        backend: str | Backend = "auto",
        max_iter: int | None = None,
    ) -> None:
        self._problem, self._start, self._placement = _problem_and_centroids(
            initial_centroids, points, backend, False
        )
        self.initial_centroids = initial_centroids
        self.points = points
        if max_iter is None:
            self.max_iter = sys.maxsize
        elif isinstance(max_iter, bool) or not isinstance(max_iter, int | np.integer):
            raise TypeError(f"max_iter must be an integer or None, got {max_iter!r}")
        elif max_iter < 0:
            raise ValueError(f"max_iter must be >= 0 or None, got {max_iter}")
        else:
            self.max_iter = int(max_iter)

    def _steps(self) -> Generator[_lloyd.Step, None, _lloyd.Result]:
        return _lloyd.lloyd(
            self._problem, self._start, max_iter=self.max_iter, tol=0.0, empty_cluster="keep"
        )

    def _frame(self, centers: Array, labels: Array, iteration: int) -> Frame:
        out = self._placement.to_output
        xp = self._problem.backend.xp
        return out(centers), out(xp.astype(labels, xp.int64)), iteration

    def get_centroids(self) -> Frame:
        """Run to convergence: ``(centroids, labels, iterations)``."""
        with on_device_of(self._problem.X):
            result = _lloyd.run_to_end(self._steps())
            return self._frame(result.centers, result.labels, result.n_iter)

    def _frames(self) -> Generator[Frame, None, None]:
        steps = self._steps()
        for step in steps:
            if step.iteration == 1:
                yield self._frame(self._start, step.labels, 0)
            yield self._frame(step.centers, step.labels, step.iteration)
        if self.max_iter == 0:  # no iteration: the initial centroids alone
            result = _lloyd.run_to_end(self._steps())
            yield self._frame(result.centers, result.labels, 0)

    def _generator_func(self) -> Iterator[Frame]:
        """The frames, each made on the device that holds the points."""
        yield from steps_on_device_of(self._problem.X, self._frames())

    def get_generator_func(self) -> Callable[[], Iterator[Frame]]:
        """A generator function; each call returns a fresh generator of
        ``(centroids, labels, iteration)``, the first being the initial centroids with
        their assignment at iteration 0."""
        return self._generator_func


def generate_clusters(
    num_clusters: int = 12,
    pts_per_cluster: int = 100,
    variance_coeff: float = 0.01,
    bounds: Sequence[Sequence[float]] = ((-4, 4), (-4, 4)),
    *,
    random_state: Any = None,
) -> np.ndarray:
    """Random clustered points, as the blog post's ``generateClusters``.

    Cluster centres are uniform within ``bounds`` (one ``(low, high)`` pair per
    dimension); each cluster's points are normal around its centre with diagonal
    covariance ``variance_coeff × (high − low)``.

    Returns
    -------
    points : ndarray of shape (num_clusters * pts_per_cluster, len(bounds)), float64
    """
    bounds_arr = np.asarray(bounds, dtype=np.float64)
    if bounds_arr.ndim != 2 or bounds_arr.shape[1] != 2 or bounds_arr.shape[0] < 1:
        raise ValueError(f"bounds must be a sequence of (low, high) pairs, got {bounds!r}")
    if not np.all(bounds_arr[:, 1] > bounds_arr[:, 0]):
        raise ValueError(f"each bound must have low < high, got {bounds!r}")
    for name, value in (("num_clusters", num_clusters), ("pts_per_cluster", pts_per_cluster)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not np.isfinite(variance_coeff) or variance_coeff < 0:
        raise ValueError(f"variance_coeff must be finite and >= 0, got {variance_coeff!r}")
    low, span = bounds_arr[:, 0], bounds_arr[:, 1] - bounds_arr[:, 0]
    with np.errstate(over="ignore"):
        spread = variance_coeff * span
    if not (np.all(np.isfinite(span)) and np.all(np.isfinite(spread))):
        raise ValueError(
            f"bounds {bounds!r} with variance_coeff={variance_coeff!r} overflow float64: "
            "choose smaller bounds or variance"
        )
    rng = check_random_state(random_state)
    centers = rng.random_sample((num_clusters, len(span))) * span + low
    covariance = np.diag(spread)
    return np.concatenate(
        [rng.multivariate_normal(c, covariance, pts_per_cluster) for c in centers]
    )


def initialize_centroids(k: int, points: Any, *, random_state: Any = None) -> Array:
    """``k`` distinct points drawn at random, as the blog post's ``initializeCentroids``.

    Returns
    -------
    centroids : array of shape (k, n_features), of the points' array type
    """
    from ._sharded import is_dask_array

    if is_dask_array(points):  # the same draws; the rows come to the host
        from ._dask import check_dask_array

        X, placement = check_dask_array(points, "points")[0], None
    else:
        X, placement = check_array(points, name="points")
    n = int(X.shape[0])
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= n:
        raise ValueError(f"k must be an integer in [1, {n}] (the number of points), got {k!r}")
    rng = check_random_state(random_state)
    # the blog post's draws, one distinct index at a time, in batches of at most the
    # number still missing (so no draw is made that it would not make)
    indices: dict[int, None] = {}
    while len(indices) < k:
        for index in rng.randint(0, n, size=k - len(indices)).tolist():
            indices.setdefault(index)
            if len(indices) == k:
                break
    if placement is None:
        return np.asarray(X[list(indices)].compute())
    xp = placement.compute.xp
    chosen = xp.take(X, xp.asarray(list(indices), device=placement.compute.device(X)), axis=0)
    return placement.to_output(chosen)
