"""The scikit-learn compatible estimators' common part, and ``KMeans``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_feature_names, check_is_fitted

from . import _assign
from ._api import check_algorithm, fit, prepare, setup
from ._problem import Problem
from ._sharded import check_shown, is_dask_array
from ._validation import Placement
from .backends import BACKEND_NAMES as _BACKEND_NAMES
from .backends import Array, Backend, on_device_of
from .frames import Frame, check_display_indices, stream

#: The parameters both estimators share, as scikit-learn's validation reads them.
COMMON_CONSTRAINTS: dict[str, list[Any]] = {
    "n_clusters": [Interval(Integral, 1, None, closed="left")],
    "init": [StrOptions({"k-means++", "random"}), callable, "array-like"],
    "n_init": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
    "max_iter": [Interval(Integral, 1, None, closed="left")],
    "tol": [Interval(Real, 0, None, closed="left")],
    "verbose": ["verbose"],
    "random_state": ["random_state", np.random.Generator],
    "backend": [StrOptions(set(_BACKEND_NAMES)), Backend],
    "working_memory": [Interval(Integral, 1, None, closed="left"), None],
}


class ClusteringBase(
    ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin, BaseEstimator, ABC
):
    """What ``KMeans`` and ``MiniBatchKMeans`` share once fitted: ``predict``,
    ``transform`` and ``score`` against ``cluster_centers_`` with exact labels, and
    scikit-learn's checks of the features (their number and, for data frames, their
    names)."""

    backend: str | Backend
    working_memory: int | None

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.array_api_support = True
        tags.input_tags.sparse = True
        return tags

    def _problem(
        self, X: Any, method: str, sample_weight: Any = None
    ) -> tuple[Problem, Placement, _assign.Centers]:
        """X as a problem, its placement, and the fitted centres for it.

        X of another array library than the fit is accepted (the centres move to it),
        unless scikit-learn's ``array_api_dispatch`` is on, where scikit-learn's rule
        applies: the same namespace and device as the fit.
        """
        check_is_fitted(self)
        _check_feature_names(self, X, reset=False)
        _check_same_namespace(X, self, method)
        problem, placement, centers = prepare(
            X,
            sample_weight,
            self.backend,
            self.working_memory,
            centers=self.cluster_centers_,
            owner=type(self).__name__,
        )
        return problem, placement, _assign.centers_for(problem, centers)

    def _labels(self, problem: Problem, centers: _assign.Centers) -> Array:
        xp = problem.backend.xp
        labels = xp.empty(problem.n_samples, dtype=xp.int32, device=problem.device)
        _assign.assign(problem, centers, labels, statistics=False)
        return labels

    def predict(self, X: Any) -> Array:
        """Index of the nearest centre of each sample (exact; the lowest index on ties).

        Parameters
        ----------
        X : array or sparse matrix of shape (n_samples, n_features)

        Returns
        -------
        labels : array of shape (n_samples,), int32, of X's array type (NumPy for
            sparse matrices; a lazy dask array in X's chunks for a dask array)
        """
        if is_dask_array(X):
            from ._dask import predict

            return predict(self, X)
        with on_device_of(X):
            problem, placement, centers = self._problem(X, "predict")
            labels = self._labels(problem, centers)
        return placement.to_output(labels)

    def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None) -> Array:
        """Fit and return ``labels_``."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def transform(self, X: Any) -> Array:
        """Euclidean distance of each sample to each centre.

        Parameters
        ----------
        X : array or sparse matrix of shape (n_samples, n_features)

        Returns
        -------
        distances : array of shape (n_samples, n_clusters), of X's array type
            Within the dtype's rounding of the exact distances, near a centre too
            (dense, for a sparse X; a lazy dask array in X's row chunks for a dask
            array).
        """
        if is_dask_array(X):
            from ._dask import transform

            return transform(self, X)
        with on_device_of(X):
            problem, placement, centers = self._problem(X, "transform")
            distances = _assign.distances(problem, centers)
        return placement.to_output(distances)

    def fit_transform(self, X: Any, y: Any = None, sample_weight: Any = None) -> Array:
        """Fit, then return ``transform(X)``."""
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Opposite of the inertia of X against the fitted centres.

        Parameters
        ----------
        X : array or sparse matrix of shape (n_samples, n_features)
        y : Ignored
        sample_weight : array of shape (n_samples,), default=None

        Returns
        -------
        score : float
            ``-Σ w ‖x − c‖²`` over the samples, each with its nearest centre.
        """
        if is_dask_array(X):
            from ._dask import score

            return score(self, X, sample_weight)
        with on_device_of(X):
            problem, _, centers = self._problem(X, "score", sample_weight)
            labels = self._labels(problem, centers)
            return -_assign.inertia(problem, centers.caller, labels)

    @abstractmethod
    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> Any:
        """Compute the clustering (each estimator's own)."""


class KMeans(ClusteringBase):
    """K-means clustering by Lloyd's algorithm, on CuPy, NumPy or any array API library,
    in this process or on Dask (a ``dask.array.Array``: see docs/dask.md).

    Given the same initial centres it gives scikit-learn's
    ``KMeans(algorithm="lloyd")`` result: the same labels and iteration count, centres
    and inertia equal to rounding. X may be a SciPy sparse matrix (CSR, CSC, ...),
    computed sparse on the NumPy backend.

    Parameters
    ----------
    n_clusters : int, default=8
        The number of clusters.
    init : {"k-means++", "k-means||", "random"}, array of shape (n_clusters, n_features) \
or callable, default="k-means++"
        How to choose the initial centres: greedy k-means++ (k-means‖ on a dask array),
        k-means‖, ``n_clusters`` distinct random samples, explicit centres, or
        ``init(X, n_clusters, random_state)``.
    n_init : int or "auto", default="auto"
        Number of runs from different initial centres; the one of lowest inertia is kept.
        ``"auto"`` is 1 for k-means++, k-means‖ and explicit centres, 10 otherwise.
    max_iter : int, default=300
        Most Lloyd iterations in one run.
    tol : float, default=1e-4
        Relative tolerance: a run converges when the squared shift of the centres is at
        most ``tol`` times the mean per-feature variance of X.
    verbose : int, default=0
        Print scikit-learn's progress lines on standard output ("Initialization
        complete", "Iteration i, inertia ...", how each run converged), and log each
        iteration at INFO level on the ``kmeans_gpu`` logger.
    random_state : int, RandomState, Generator or None, default=None
        Seeds the initialisation.
    copy_x : bool, default=True
        Accepted for scikit-learn compatibility. X is never modified, whatever its
        value (scikit-learn centres X in place when it is False).
    algorithm : {"lloyd", "elkan"}, default="lloyd"
        Accepted for scikit-learn compatibility. Both run the same exact Lloyd
        iterations: Elkan's algorithm skips distance computations by triangle-inequality
        bounds but reaches the same result, which is what is returned either way.
    empty_cluster : {"relocate", "keep"}, default="relocate"
        An empty cluster moves to the points farthest from their centres (as in
        scikit-learn) or keeps its centre (as in the blog post's ``KMeansND``).
    backend : {"auto", "numpy", "cupy"} or Backend, default="auto"
        Where to compute. ``"auto"`` keeps arrays on their own library (NumPy, CuPy or
        another array API library) and sends other input (lists...) to CuPy when a CUDA
        device is present, else to NumPy.
    working_memory : int, default=None
        Bytes for one chunk's distance block (default: the backend's, 32 MiB on the
        CPU, a quarter of the free device memory up to 1 GiB on CuPy).
    deterministic : bool, default=False
        Bitwise the same result on every run with the same input and machine. Only
        CuPy needs it: its per-cluster sums use float atomics, whose order varies; with
        ``True`` they come from a one-hot matrix product per chunk, which costs far
        more (on an H200, 1M × 128 rows, k = 1,024: 38.6 ms against 1.1 ms per
        iteration). NumPy is always deterministic.

    Attributes
    ----------
    cluster_centers_ : array of shape (n_clusters, n_features)
        The centres, of the training data's array type (a host NumPy array for a dask
        array).
    labels_ : array of shape (n_samples,)
        The nearest centre of each training sample (int32); for a dask array, a lazy
        dask array in its row chunks.
    inertia_ : float
        Sum of weighted squared distances of the samples to their nearest centre.
    n_iter_ : int
        Lloyd iterations of the best run.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features seen in ``fit``, when X has string column names (a data
        frame); ``predict``, ``transform`` and ``score`` then refuse a frame whose
        columns differ, as scikit-learn does.
    backend_ : str
        The backend that computed the fit (``"numpy"``, ``"cupy"``, or the name of an
        array API namespace such as ``"array_api_strict"``).
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: Any = "k-means++",
        n_init: int | str = "auto",
        max_iter: int = 300,
        tol: float = 1e-4,
        verbose: int = 0,
        random_state: Any = None,
        copy_x: bool = True,
        algorithm: str = "lloyd",
        empty_cluster: str = "relocate",
        backend: str | Backend = "auto",
        working_memory: int | None = None,
        deterministic: bool = False,
    ) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.verbose = verbose
        self.random_state = random_state
        self.copy_x = copy_x
        self.algorithm = algorithm
        self.empty_cluster = empty_cluster
        self.backend = backend
        self.working_memory = working_memory
        self.deterministic = deterministic

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **COMMON_CONSTRAINTS,
        "init": [StrOptions({"k-means++", "k-means||", "random"}), callable, "array-like"],
        "copy_x": ["boolean"],
        "algorithm": [StrOptions({"lloyd", "elkan"})],
        "empty_cluster": [StrOptions({"relocate", "keep"})],
        "deterministic": ["boolean"],
    }

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> KMeans:
        """Compute the clustering.

        Parameters
        ----------
        X : array or sparse matrix of shape (n_samples, n_features)
            Training data; it is not modified.
        y : Ignored
        sample_weight : array of shape (n_samples,), default=None
            Non-negative weights, not all zero. Used by k-means++, ``"random"`` and
            every Lloyd iteration; not by a callable or array ``init``.

        Returns
        -------
        self : KMeans
        """
        _check_feature_names(self, X, reset=True)
        check_algorithm(self.algorithm, self.n_clusters)
        fitted = fit(X, self.n_clusters, sample_weight=sample_weight, **self._solver_params())
        out = fitted.placement.to_output
        self.cluster_centers_ = out(fitted.centers)
        self.labels_ = out(fitted.labels)
        self.inertia_ = fitted.inertia
        self.n_iter_ = fitted.n_iter
        self.n_features_in_ = int(fitted.centers.shape[1])
        self.backend_ = fitted.backend.name
        self._n_features_out = int(fitted.centers.shape[0])
        return self

    def _solver_params(self) -> dict[str, Any]:
        return {
            "init": self.init,
            "n_init": self.n_init,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "random_state": self.random_state,
            "backend": self.backend,
            "empty_cluster": self.empty_cluster,
            "verbose": bool(self.verbose),
            "working_memory": self.working_memory,
            "deterministic": self.deterministic,
        }

    def iter_frames(
        self, X: Any, *, sample_weight: Any = None, display_indices: Any = None
    ) -> Iterator[Frame]:
        """Run the fit's Lloyd iterations on X and yield a host :class:`Frame` for each.

        The same run as ``fit(X)`` with these parameters (which needs ``n_init`` to
        resolve to one run): the last frame's centroids, labels and inertia are what
        ``fit`` would set, and there are ``n_iter_ + 1`` frames. The estimator itself is
        not changed. See :func:`kmeans_gpu.iter_frames` for ``display_indices`` and what
        is synchronous.

        Parameters
        ----------
        X : array of shape (n_samples, n_features)
        sample_weight : array of shape (n_samples,), default=None
        display_indices : array of shape (n_display,), default=None
            Rows whose labels are copied to the host; None copies all.

        Yields
        ------
        Frame
        """
        check_shown(X, display_indices)
        with on_device_of(X):
            job = setup(X, self.n_clusters, sample_weight=sample_weight, **self._solver_params())
        if job.runs != 1:
            raise ValueError(
                f"iter_frames streams a single run, but n_init={self.n_init!r} with "
                f"init={self.init!r} means {job.runs} runs: set n_init=1"
            )
        return stream(job, check_display_indices(display_indices, job.problem.n_samples))


def _check_same_namespace(X: Any, estimator: ClusteringBase, method: str) -> None:
    try:
        from sklearn.utils._array_api import check_same_namespace
    except ImportError:  # scikit-learn before 1.8 has no such rule
        return
    check_same_namespace(X, estimator, attribute="cluster_centers_", method=method)
