"""The functional API, and the fit that the estimator shares with it."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._assign import EXACT, Pass
from ._bounds import pass_for
from ._init import check_init, initial_centers, kmeans_plusplus_working
from ._lloyd import EMPTY_CLUSTER_POLICIES, InProcess, Result, Rows, Step, lloyd, run_to_end
from ._problem import Problem, make_problem
from ._sharded import is_dask_array
from ._validation import (
    DimensionMismatchError,
    Placement,
    check_array,
    check_n_clusters,
    check_positive_int,
    check_random_state,
    check_sample_weight,
    check_tol,
    check_working_memory,
)
from .backends import Array, Backend, on_device_of

logger = logging.getLogger("kmeans_gpu")


def resolve_n_init(n_init: Any, init: Any, default: int = 10) -> int:
    """scikit-learn's rule: ``"auto"`` is 1 run for k-means++ and explicit centres,
    ``default`` (10 for K-means, 3 for mini-batches) for ``"random"`` and callables;
    explicit centres always run once."""
    explicit = not isinstance(init, str) and not callable(init)
    if isinstance(n_init, str):
        if n_init != "auto":
            raise ValueError(f"n_init must be 'auto' or an integer >= 1, got {n_init!r}")
        return 1 if explicit or init in ("k-means++", "k-means||") else default
    n_init = check_positive_int(n_init, "n_init")
    if explicit and n_init != 1:
        warnings.warn(
            "Explicit initial center position passed: performing only one init instead "
            f"of n_init={n_init}.",
            RuntimeWarning,
            stacklevel=3,
        )
        return 1
    return n_init


ALGORITHMS = ("lloyd", "elkan")


def check_algorithm(algorithm: Any, n_clusters: Any) -> str:
    """scikit-learn's ``algorithm`` values; both run the same exact Lloyd iterations."""
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be 'lloyd' or 'elkan', got {algorithm!r}")
    if algorithm == "elkan" and n_clusters == 1:
        warnings.warn(
            "algorithm='elkan' doesn't make sense for a single cluster. Using 'lloyd' instead.",
            RuntimeWarning,
            stacklevel=3,
        )
    return "lloyd"


def check_empty_cluster(empty_cluster: Any) -> str:
    if empty_cluster not in EMPTY_CLUSTER_POLICIES:
        raise ValueError(
            f"empty_cluster must be one of {EMPTY_CLUSTER_POLICIES}, got {empty_cluster!r}"
        )
    return str(empty_cluster)


def _same_clustering(problem: Problem, a: Array, b: Array, n_clusters: int) -> bool:
    """Whether labels ``a`` map onto labels ``b`` (the same partition, relabelled)."""
    xp = problem.backend.xp
    pairs = xp.astype(a, xp.int64) * n_clusters + xp.astype(b, xp.int64)
    n_pairs = xp.unique_values(pairs).shape[0]
    return n_pairs == xp.unique_values(a).shape[0]


@dataclass(frozen=True)
class Fitted:
    """A fit in the caller's units, still on the compute backend."""

    centers: Array
    labels: Array
    inertia: float
    n_iter: int
    placement: Placement

    @property
    def backend(self) -> Backend:
        return self.placement.compute


def prepare(
    X: Any,
    sample_weight: Any,
    backend: str | Backend,
    working_memory: int | None = None,
    centers: Any = None,
    owner: str = "the centers",
    what: str = "X",
    origin_at_centers: bool = True,
    deterministic: bool = False,
    working_copy: bool = True,
) -> tuple[Problem, Placement, Array | None]:
    """Validate X and its weights and build the solver's view of them.

    With ``centers`` they come back validated (X's dtype, on its device). Then by
    default the origin is their mean rather than X's (for predict, transform, score):
    each row's answer does not depend on the other rows. ``owner`` and ``what`` name the
    centres' holder and the data in the error for a feature-count mismatch.
    ``working_copy``: as :func:`make_problem`.
    """
    working_memory = check_working_memory(working_memory)
    X, placement = check_array(X, backend=backend)
    weights = check_sample_weight(sample_weight, int(X.shape[0]), X, placement)
    compute = placement.compute
    options: dict[str, Any] = {
        "working_memory": working_memory,
        "deterministic": deterministic,
        "working_copy": working_copy,
    }
    if centers is None:
        return make_problem(compute, X, weights, **options), placement, None
    C, _ = check_array(
        centers,
        backend=compute,
        name="centers",
        dtype=X.dtype,
        device=compute.device(X),
        accept_sparse=False,
    )
    if int(C.shape[1]) != int(X.shape[1]):
        raise DimensionMismatchError(
            f"Dimension mismatch: {what} has {X.shape[1]} features, but {owner} is "
            f"expecting {C.shape[1]} features as input"
        )
    xp = compute.xp
    origin = xp.mean(xp.astype(C, xp.float64), axis=0) if origin_at_centers else None
    return make_problem(compute, X, weights, center=origin, **options), placement, C


@dataclass(frozen=True)
class Setup:
    """Everything validated for one call: the problem and the run parameters."""

    problem: Problem
    placement: Placement
    n_clusters: int
    init: Any
    runs: int
    max_iter: int
    tol: float
    empty_cluster: str
    rng: Any
    verbose: bool
    engine: Pass = EXACT

    def rows(self) -> Rows:
        """Where a run's data-sized work happens (each run its own pass: a bounded
        pass keeps the run's bounds)."""
        return InProcess(self.problem, pass_for(self.problem, self.n_clusters, self.engine))

    def initial_centers(self) -> Array:
        """Initial centres in X's units and dtype."""
        return initial_centers(self.problem, self.init, self.n_clusters, self.rng)

    def start(self, *, track_inertia: bool = False) -> tuple[Array, Generator[Step, None, Result]]:
        """Draw initial centres: ``(centres, the Lloyd run from them)``."""
        centers = self.initial_centers()
        steps = lloyd(
            self.problem,
            centers,
            max_iter=self.max_iter,
            tol=self.tol,
            empty_cluster=self.empty_cluster,
            verbose=self.verbose,
            track_inertia=track_inertia,
            engine=self.engine,
            rows=self.rows(),
        )
        return centers, steps

    def same_clustering(self, a: Array, b: Array) -> bool:
        """Whether two runs' labels are the same partition, relabelled."""
        return _same_clustering(self.problem, a, b, self.n_clusters)

    def distinct(self, labels: Array) -> int:
        """How many clusters ``labels`` uses."""
        return self.problem.backend.distinct(labels, self.n_clusters)

    def showing(self, display_indices: np.ndarray | None) -> Setup:
        """This set-up for a frame stream that shows the rows ``display_indices``."""
        return self

    def shown(self, labels: Array, rows: Array | None) -> Array:
        """The labels of the shown rows (``rows``, on the device; None: all)."""
        return labels if rows is None else self.problem.backend.xp.take(labels, rows)


def setup(
    X: Any,
    n_clusters: Any,
    *,
    sample_weight: Any = None,
    init: Any = "k-means++",
    n_init: Any = "auto",
    max_iter: Any = 300,
    tol: Any = 1e-4,
    random_state: Any = None,
    backend: str | Backend = "auto",
    empty_cluster: str = "relocate",
    verbose: bool = False,
    working_memory: int | None = None,
    deterministic: bool = False,
    engine: Pass = EXACT,
) -> Setup:
    """Validate every argument and build the problem; ``engine`` is the pass over the
    data (``kmeans_gpu.experimental`` passes its own)."""
    if not isinstance(deterministic, bool | np.bool_):
        raise TypeError(f"deterministic must be True or False, got {deterministic!r}")
    init = check_init(init)
    runs = resolve_n_init(n_init, init)
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_tol(tol)
    empty_cluster = check_empty_cluster(empty_cluster)
    if is_dask_array(X):
        from ._dask import dask_setup

        return dask_setup(
            X, n_clusters, sample_weight=sample_weight, init=init, runs=runs,
            max_iter=max_iter, tol=tol, random_state=random_state, backend=backend,
            empty_cluster=empty_cluster, verbose=bool(verbose), working_memory=working_memory,
            deterministic=bool(deterministic), engine=engine,
        )  # fmt: skip
    problem, placement, _ = prepare(
        X, sample_weight, backend, working_memory, deterministic=bool(deterministic)
    )
    return Setup(
        problem=problem,
        placement=placement,
        n_clusters=check_n_clusters(n_clusters, problem.n_samples),
        init=init,
        runs=runs,
        max_iter=max_iter,
        tol=tol,
        empty_cluster=empty_cluster,
        rng=check_random_state(random_state),
        verbose=bool(verbose),
        engine=engine,
    )


def say(message: str) -> None:
    """One line of progress on standard output, where scikit-learn's ``verbose`` prints."""
    print(message)  # noqa: T201


def _run(job: Setup) -> Result:
    """One Lloyd run of ``job``; with ``verbose``, printing scikit-learn's progress lines
    (its wording and 0-based iteration numbers)."""
    _, steps = job.start(track_inertia=job.verbose)
    if not job.verbose:
        return run_to_end(steps)
    problem = job.problem
    say("Initialization complete")
    tolerance = problem.inertia_from_working(problem.tolerance(job.tol))
    while True:
        try:
            step = next(steps)
        except StopIteration as stop:
            result: Result = stop.value
            return result
        i = step.iteration - 1
        assert step.inertia is not None
        say(f"Iteration {i}, inertia {problem.inertia_from_working(float(step.inertia))}.")
        if step.n_changed == 0:
            say(f"Converged at iteration {i}: strict convergence.")
        elif step.converged:
            shift = problem.inertia_from_working(step.center_shift)
            say(f"Converged at iteration {i}: center shift {shift} within tolerance {tolerance}.")


def fit(X: Any, n_clusters: Any, **params: Any) -> Fitted:
    """Run ``n_init`` Lloyd runs (parameters as :func:`setup`) and keep the best, on
    the device that holds X (where there are several)."""
    with on_device_of(X):
        job = setup(X, n_clusters, **params)
        best: Result | None = None
        for run in range(job.runs):
            result = _run(job)
            if job.verbose:
                logger.info(
                    "init %d/%d: inertia %.6g after %d iterations",
                    run + 1,
                    job.runs,
                    result.inertia,
                    result.n_iter,
                )
            if best is None or (
                result.inertia < best.inertia
                and not job.same_clustering(result.labels, best.labels)
            ):
                best = result
        assert best is not None
        _warn_if_fewer(job.distinct(best.labels), job.n_clusters)
        return Fitted(
            centers=best.centers,
            labels=best.labels,
            inertia=best.inertia,
            n_iter=best.n_iter,
            placement=job.placement,
        )


def _warn_if_collapsed(problem: Problem, labels: Array, n_clusters: int) -> None:
    _warn_if_fewer(problem.backend.distinct(labels, n_clusters), n_clusters)


def _warn_if_fewer(distinct: int, n_clusters: int) -> None:
    if distinct < n_clusters:
        from sklearn.exceptions import ConvergenceWarning

        warnings.warn(
            f"Number of distinct clusters ({distinct}) found smaller than n_clusters "
            f"({n_clusters}). Possibly due to duplicate points in X.",
            ConvergenceWarning,
            stacklevel=4,
        )


def kmeans(
    X: Any,
    n_clusters: int,
    *,
    sample_weight: Any = None,
    init: Any = "k-means++",
    n_init: int | str = "auto",
    max_iter: int = 300,
    tol: float = 1e-4,
    random_state: Any = None,
    backend: str | Backend = "auto",
    empty_cluster: str = "relocate",
    verbose: bool = False,
    working_memory: int | None = None,
    deterministic: bool = False,
    copy_x: bool = True,
    algorithm: str = "lloyd",
) -> tuple[Array, Array, float, int]:
    """Cluster X with Lloyd's K-means.

    Parameters
    ----------
    X : array or sparse matrix of shape (n_samples, n_features)
        The data: a NumPy or CuPy array, any array that follows the Python array API
        standard, a SciPy sparse matrix (computed sparse, on the NumPy backend), a
        ``dask.array.Array`` (docs/dask.md), or anything ``numpy.asarray`` accepts.
        float32 and float64 are kept; other real types become float64.
    n_clusters : int
        The number of clusters, ``1 <= n_clusters <= n_samples``.
    sample_weight : array of shape (n_samples,), default=None
        Non-negative weights (not all zero). None weighs every sample 1.
    init : {"k-means++", "k-means||", "random"}, array of shape (n_clusters, n_features) \
or callable, default="k-means++"
        Greedy k-means++ (k-means‖ on a dask array), k-means‖ (:func:`kmeans_parallel`),
        ``n_clusters`` distinct random samples, explicit centres, or
        ``init(X, n_clusters, random_state=RandomState)`` returning centres.
    n_init : int or "auto", default="auto"
        Runs from different initial centres; the lowest inertia wins. ``"auto"``: 1 for
        k-means++, k-means‖ and explicit centres, 10 otherwise.
    max_iter : int, default=300
        Most Lloyd iterations per run.
    tol : float, default=1e-4
        Convergence when the squared centre shift is at most ``tol`` times the mean
        per-feature variance of X (scikit-learn's rule).
    random_state : int, RandomState, Generator or None, default=None
        Seeds the initialisation; the same seed gives the same result on one backend.
    backend : {"auto", "numpy", "cupy"} or Backend, default="auto"
        Where to compute. ``"auto"``: arrays stay on their own library; other input goes
        to CuPy when a CUDA device is present, else NumPy.
    empty_cluster : {"relocate", "keep"}, default="relocate"
        What an empty cluster does: move to the points farthest from their centres
        (scikit-learn), or keep its centre (the blog post's behaviour).
    verbose : bool, default=False
        Print scikit-learn's progress lines ("Initialization complete", "Iteration i,
        inertia ...", how the run converged) on standard output, and log every
        iteration at INFO level on the ``kmeans_gpu`` logger.
    working_memory : int, default=None
        Bytes for one chunk's distance block (default: the backend's, 32 MiB on the
        CPU, a quarter of free device memory up to 1 GiB on CuPy); the solver never holds
        an ``n_samples × n_clusters`` matrix.
    deterministic : bool, default=False
        Bitwise the same result on every run with the same input and machine. Only
        CuPy needs it: its per-cluster sums use float atomics, whose order varies; with
        ``True`` they come from a one-hot matrix product per chunk, which costs far
        more (on an H200, 1M × 128 rows, k = 1,024: 38.6 ms against 1.1 ms per
        iteration). NumPy is always deterministic.
    copy_x : bool, default=True
        Accepted for scikit-learn compatibility; X is never modified either way.
    algorithm : {"lloyd", "elkan"}, default="lloyd"
        Accepted for scikit-learn compatibility: both run the same exact Lloyd
        iterations (Elkan's bounds would give the same result).

    Returns
    -------
    centers : array of shape (n_clusters, n_features)
    labels : array of shape (n_samples,), int32
    inertia : float
        Sum of weighted squared distances to the nearest centre.
    n_iter : int
        Lloyd iterations of the best run.

    Outputs are of X's array type (NumPy for lists and sparse matrices); for a dask
    array, the centres are a host NumPy array and the labels a lazy dask array in X's
    row chunks. Unlike scikit-learn's ``k_means``, which returns 3 values unless
    ``return_n_iter=True``, this always returns 4.
    """
    check_algorithm(algorithm, n_clusters)
    if not isinstance(copy_x, bool | np.bool_):
        raise TypeError(f"copy_x must be True or False, got {copy_x!r}")
    fitted = fit(
        X,
        n_clusters,
        sample_weight=sample_weight,
        init=init,
        n_init=n_init,
        max_iter=max_iter,
        tol=tol,
        random_state=random_state,
        backend=backend,
        empty_cluster=empty_cluster,
        verbose=verbose,
        working_memory=working_memory,
        deterministic=deterministic,
    )
    out = fitted.placement.to_output
    return out(fitted.centers), out(fitted.labels), fitted.inertia, fitted.n_iter


def kmeans_plusplus(
    X: Any,
    n_clusters: int,
    *,
    sample_weight: Any = None,
    x_squared_norms: Any = None,
    random_state: Any = None,
    n_local_trials: int | None = None,
    backend: str | Backend = "auto",
) -> tuple[Array, Array]:
    """Greedy k-means++ seeding.

    Parameters
    ----------
    X : array or sparse matrix of shape (n_samples, n_features)
    n_clusters : int
    sample_weight : array of shape (n_samples,), default=None
        Points are drawn with probability proportional to ``weight · D(x)²``.
    x_squared_norms : array of shape (n_samples,), default=None
        Accepted for scikit-learn compatibility and checked for its length; its values
        are not used: the distances come from the norms of the rows as the solver
        holds them (centred on their mean, for accuracy), computed once per call.
    random_state : int, RandomState, Generator or None, default=None
    n_local_trials : int, default=None
        Candidates tried per centre; ``2 + floor(ln n_clusters)`` when None.
    backend : {"auto", "numpy", "cupy"} or Backend, default="auto"

    Returns
    -------
    centers : array of shape (n_clusters, n_features)
        Rows of X (dense, for a sparse X).
    indices : array of shape (n_clusters,)
        Their row numbers in X.
    """
    if is_dask_array(X):
        raise TypeError(
            "greedy k-means++ makes a pass over the data per centre: for a dask array use "
            "kmeans_parallel (k-means‖, what init='k-means++' runs on Dask)"
        )
    with on_device_of(X):
        problem, placement, _ = prepare(X, sample_weight, backend)
        n_clusters = check_n_clusters(n_clusters, problem.n_samples)
        if x_squared_norms is not None:
            length = int(np.shape(x_squared_norms)[0]) if np.ndim(x_squared_norms) else 0
            if length != problem.n_samples:
                raise ValueError(
                    f"The length of x_squared_norms {length} should be equal to the "
                    f"length of n_samples {problem.n_samples}."
                )
        if n_local_trials is not None:
            n_local_trials = check_positive_int(n_local_trials, "n_local_trials")
        indices = kmeans_plusplus_working(
            problem, n_clusters, check_random_state(random_state), n_local_trials
        )
        centers = problem.dense_rows(indices)
    return placement.to_output(centers), placement.to_output(indices)
