"""``MiniBatchKMeans``: scikit-learn's mini-batch K-means on every backend.

Each step assigns one batch of rows to the exact nearest of the current centres (the
same pass as a Lloyd iteration, ``_assign.assign``), then moves each centre that got
rows to the weighted mean of everything it has seen, ``c ← (c·W + Σ w·x) / (W + Σ w)``
with ``W`` its running weight (the per-centre learning rate ``Σ w / (W + Σ w)``), and
now and then moves the centres of little weight onto rows of the batch. The random
draws (the validation and init samples, the batches, the reassigned rows) are
scikit-learn's, drawn in its order from the same ``RandomState``: from the same
initial centres a fit takes the same batches, so it follows scikit-learn's run to
rounding. Only a batch's rows are gathered at a time, and no working copy of X is
kept; each step reads back one small vector (the batch's inertia, its centre shift
and its per-centre weights), and a step that reassigns centres reads one more.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import _check_feature_names

from . import _assign
from ._api import prepare, resolve_n_init, say
from ._init import check_init, initial_centers
from ._problem import Problem
from ._validation import Placement, check_n_clusters, check_random_state
from .backends import Array, Backend, on_device_of
from .backends._base import clamp, rescale
from .estimator import COMMON_CONSTRAINTS, ClusteringBase


@dataclasses.dataclass
class _Progress:
    """scikit-learn's early stopping state: the exponentially weighted average of the
    mean batch inertia, its lowest value, and the steps since it last improved."""

    ewa_inertia: float | None = None
    ewa_inertia_min: float | None = None
    no_improvement: int = 0


class MiniBatchKMeans(ClusteringBase):
    """Mini-batch K-means (Sculley 2010) as scikit-learn computes it, on CuPy, NumPy
    (dense or SciPy sparse) or any array API library.

    Every batch's labels are the exact nearest centres; the updates, the reassignment of
    centres of little weight and the early stopping are scikit-learn's
    (``sklearn.cluster.MiniBatchKMeans``), and so are its random draws: from the same
    initial centres and ``random_state`` a fit takes the same batches and follows
    scikit-learn's run to rounding. ``partial_fit`` takes batches of any backend's
    arrays (the centres follow the data), so data that do not fit in memory can be
    streamed.

    Parameters
    ----------
    n_clusters : int, default=8
        The number of clusters.
    init : {"k-means++", "random"}, array of shape (n_clusters, n_features) or callable, \
default="k-means++"
        How to choose the initial centres, from ``init_size`` random rows of X.
    max_iter : int, default=100
        Most passes over the data (in batches) before stopping.
    batch_size : int, default=1024
        Rows per batch (at most ``n_samples``).
    verbose : int, default=0
        Print scikit-learn's progress lines on standard output.
    compute_labels : bool, default=True
        Compute ``labels_`` and ``inertia_`` on all of X after the last step (in
        ``partial_fit``: on its batch).
    random_state : int, RandomState, Generator or None, default=None
        Seeds the initialisation, the batches and the reassignments.
    tol : float, default=0.0
        Stop when the squared centre shift of a step is at most ``tol`` times the mean
        per-feature variance of X; 0 switches this off.
    max_no_improvement : int or None, default=10
        Stop after this many steps without improvement of the smoothed batch inertia;
        None switches this off.
    init_size : int or None, default=None
        Rows drawn (with replacement) for each initialisation and for the sample that
        picks the best one; None: ``3 * batch_size``, raised to ``3 * n_clusters`` when
        that is smaller.
    n_init : int or "auto", default="auto"
        Initialisations tried (the one of lowest inertia on the sample is kept); "auto":
        1 for k-means++ and explicit centres, 3 otherwise.
    reassignment_ratio : float, default=0.01
        A centre whose running weight is below this fraction of the largest is moved
        onto a random row of the batch, every ``10 * n_clusters`` rows seen (at once
        while a centre has no weight).
    backend : {"auto", "numpy", "cupy"} or Backend, default="auto"
        Where to compute, as in :class:`KMeans`.
    working_memory : int, default=None
        Bytes for one chunk's distance block, as in :class:`KMeans`.

    Attributes
    ----------
    cluster_centers_ : array of shape (n_clusters, n_features)
        The centres, of the training data's array type.
    labels_ : array of shape (n_samples,)
        The nearest centre of each row (when ``compute_labels``), int32.
    inertia_ : float
        Sum of weighted squared distances to the nearest centre (when
        ``compute_labels``; otherwise scikit-learn's estimate from the smoothed batch
        inertia).
    n_iter_ : int
        Passes over the data started.
    n_steps_ : int
        Batches processed.
    n_features_in_ : int
        Number of features seen in ``fit`` (or the first ``partial_fit``).
    feature_names_in_ : ndarray of shape (n_features_in_,)
        The string column names of a data frame X, when it had them.
    backend_ : str
        The backend that computed the last step.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **COMMON_CONSTRAINTS,
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "compute_labels": ["boolean"],
        "max_no_improvement": [Interval(Integral, 0, None, closed="left"), None],
        "init_size": [Interval(Integral, 1, None, closed="left"), None],
        "reassignment_ratio": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: Any = "k-means++",
        max_iter: int = 100,
        batch_size: int = 1024,
        verbose: int = 0,
        compute_labels: bool = True,
        random_state: Any = None,
        tol: float = 0.0,
        max_no_improvement: int | None = 10,
        init_size: int | None = None,
        n_init: int | str = "auto",
        reassignment_ratio: float = 0.01,
        backend: str | Backend = "auto",
        working_memory: int | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.verbose = verbose
        self.compute_labels = compute_labels
        self.random_state = random_state
        self.tol = tol
        self.max_no_improvement = max_no_improvement
        self.init_size = init_size
        self.n_init = n_init
        self.reassignment_ratio = reassignment_ratio
        self.backend = backend
        self.working_memory = working_memory

    # -- fit --------------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> MiniBatchKMeans:
        """Compute the centres from batches of X.

        Parameters
        ----------
        X : array or sparse matrix of shape (n_samples, n_features)
            Training data; it is not modified, and only a batch of its rows is
            gathered at a time.
        y : Ignored
        sample_weight : array of shape (n_samples,), default=None
            Non-negative weights: batches are drawn with probability proportional to
            them (each batch row then weighs 1), and the initialisation uses them.

        Returns
        -------
        self : MiniBatchKMeans
        """
        _check_feature_names(self, X, reset=True)
        with on_device_of(X):
            problem, placement, _ = prepare(
                X, sample_weight, self.backend, self.working_memory, working_copy=False
            )
            self._fit(problem, placement)
        return self

    def _fit(self, problem: Problem, placement: Placement) -> None:
        n = problem.n_samples
        rng = check_random_state(self.random_state)
        self._check_params_vs_input(n)
        init = self._check_init(problem)
        runs = resolve_n_init(self.n_init, init, default=3)
        validation = problem.subset(self._indices(problem, rng.randint(0, n, self._init_size)))
        best, best_inertia = None, math.inf
        for run in range(runs):
            if self.verbose:
                say(f"Init {run + 1}/{runs} with method {init}")
            centers = self._initial_centers(problem, init, rng)
            inertia = _inertia_of(validation, centers)
            if self.verbose:
                say(f"Inertia for init {run + 1}/{runs}: {inertia}")
            if best is None or inertia < best_inertia:
                best, best_inertia = centers, inertia
        assert best is not None
        centers = best
        self._counts = np.zeros(self.n_clusters)
        self._n_since_last_reassign = 0
        progress = _Progress()
        weights = _host_weights(problem)
        total_weight = float(np.sum(weights))
        cdf = np.cumsum((weights / weights.dtype.type(total_weight)).astype(np.float64))
        cdf /= cdf[-1]
        tolerance = problem.inertia_from_working(problem.tolerance(self.tol))
        n_steps = (self.max_iter * n) // self._batch_size
        for i in range(n_steps):
            # RandomState.choice(n, batch_size, p=weights / Σ weights), drawn as it draws
            picked = cdf.searchsorted(rng.random_sample(self._batch_size), side="right")
            batch = problem.subset(self._indices(problem, picked), weighted=False)
            centers, batch_inertia, shift = self._step(batch, centers, rng, self.tol > 0)
            if self._converged(i, n_steps, n, shift, batch_inertia, tolerance, progress):
                break
        self.n_steps_ = i + 1
        self.n_iter_ = math.ceil(((i + 1) * self._batch_size) / n)
        if self.compute_labels:
            self.labels_, self.inertia_ = _labels_inertia(problem, placement, centers)
        else:  # scikit-learn's estimate (the first step's mean when it is the only one)
            ewa = progress.ewa_inertia
            self.inertia_ = (
                batch_inertia / self._batch_size if ewa is None else ewa
            ) * total_weight
        self._set_centers(centers, placement)

    def _check_params_vs_input(self, n_samples: int) -> None:
        """scikit-learn's batch size and init size for ``n_samples`` rows."""
        check_n_clusters(self.n_clusters, n_samples)
        self._batch_size = min(self.batch_size, n_samples)
        init_size = self.init_size
        if init_size is None:
            init_size = 3 * self._batch_size
            if init_size < self.n_clusters:
                init_size = 3 * self.n_clusters
        elif init_size < self.n_clusters:
            warnings.warn(
                f"init_size={init_size} should be larger than n_clusters="
                f"{self.n_clusters}. Setting it to min(3*n_clusters, n_samples)",
                RuntimeWarning,
                stacklevel=4,
            )
            init_size = 3 * self.n_clusters
        self._init_size = min(init_size, n_samples)

    def _check_init(self, problem: Problem) -> Any:
        """The init, with explicit centres checked against X before any work."""
        from ._init import check_centers

        init = check_init(self.init)
        if not isinstance(init, str) and not callable(init):
            check_centers(init, problem, self.n_clusters, "init")
        return init

    def _initial_centers(self, problem: Problem, init: Any, rng: np.random.RandomState) -> Array:
        """Initial centres from ``init_size`` rows drawn with replacement (drawn
        whatever the init, as scikit-learn draws them)."""
        n = problem.n_samples
        sample = problem
        if self._init_size < n:
            sample = problem.subset(self._indices(problem, rng.randint(0, n, self._init_size)))
        return initial_centers(sample, init, self.n_clusters, rng)

    @staticmethod
    def _indices(problem: Problem, host: np.ndarray) -> Array:
        return problem.backend.asarray(host.astype(np.int64), device=problem.device)

    # -- partial_fit ------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> MiniBatchKMeans:
        """Update the centres with one batch.

        The first call draws the initial centres from this batch (``init``, from at
        most ``init_size`` of its rows). A batch may be of another array library than
        the previous ones: the centres move to it, and come back as its type.

        Parameters
        ----------
        X : array or sparse matrix of shape (n_samples, n_features)
            The batch; it is not modified.
        y : Ignored
        sample_weight : array of shape (n_samples,), default=None
            Non-negative weights of the batch's rows.

        Returns
        -------
        self : MiniBatchKMeans
        """
        has_centers = hasattr(self, "cluster_centers_")
        _check_feature_names(self, X, reset=not has_centers)
        if not hasattr(self, "_random_state"):  # kept from call to call (not by fit)
            self._random_state = check_random_state(self.random_state)
        rng = self._random_state
        with on_device_of(X):
            if has_centers:
                problem, placement, centers = prepare(
                    X,
                    sample_weight,
                    self.backend,
                    self.working_memory,
                    centers=self.cluster_centers_,
                    owner=type(self).__name__,
                )
            else:
                problem, placement, _ = prepare(
                    X, sample_weight, self.backend, self.working_memory
                )
                self._check_params_vs_input(problem.n_samples)
                centers = self._initial_centers(problem, self._check_init(problem), rng)
                self._counts = np.zeros(self.n_clusters)
                self._n_since_last_reassign = 0
            assert centers is not None
            centers, _, _ = self._step(problem, centers, rng, False)
            if self.compute_labels:
                self.labels_, self.inertia_ = _labels_inertia(problem, placement, centers)
            self._set_centers(centers, placement)
        self.n_steps_ = getattr(self, "n_steps_", 0) + 1
        return self

    # -- one step ---------------------------------------------------------------------
    def _step(
        self, batch: Problem, centers: Array, rng: np.random.RandomState, with_shift: bool
    ) -> tuple[Array, float, float]:
        """One mini-batch step from ``centers`` (X's units and dtype): the new centres,
        the batch's inertia against the old ones, and the squared centre shift (0 unless
        ``with_shift``). Updates the running weights."""
        backend = batch.backend
        xp = backend.xp
        dev = batch.device
        reassign = self._random_reassign()
        current = _assign.centers_for(batch, centers)
        labels = xp.empty(batch.n_samples, dtype=xp.int32, device=dev)
        stats = _assign.assign(batch, current, labels, with_inertia=True)
        assert stats is not None and stats.inertia is not None
        old = xp.astype(centers, xp.float64)
        counts = backend.asarray(self._counts, device=dev)
        new = _moved(batch, old, counts, stats)
        shift = xp.sum((new - old) ** 2) if with_shift else xp.zeros((), device=dev)
        read = backend.to_numpy(
            xp.concat([xp.stack([stats.inertia, shift]), xp.astype(stats.weights, xp.float64)])
        )
        inertia, moved = batch.inertia_from_working(float(read[0])), float(read[1])
        self._counts = self._counts + read[2:]
        if reassign and self.reassignment_ratio > 0:
            new = self._reassign(batch, new, rng)
            if with_shift:
                moved = float(xp.sum((new - old) ** 2))
        return xp.astype(new, batch.dtype), inertia, moved

    def _random_reassign(self) -> bool:
        """scikit-learn's rule: reassign every ``10 * n_clusters`` rows seen, and at
        once while a centre has no weight."""
        self._n_since_last_reassign += self._batch_size
        if (self._counts == 0).any() or self._n_since_last_reassign >= 10 * self.n_clusters:
            self._n_since_last_reassign = 0
            return True
        return False

    def _reassign(self, batch: Problem, centers: Array, rng: np.random.RandomState) -> Array:
        """Move the centres of too little weight onto random rows of the batch (at most
        half the batch), and give them the least weight of the others."""
        counts, m = self._counts, batch.n_samples
        to_reassign = counts < self.reassignment_ratio * counts.max()
        if to_reassign.sum() > 0.5 * m:
            to_reassign[np.argsort(counts)[int(0.5 * m) :]] = False
        n_reassigns = int(to_reassign.sum())
        if n_reassigns:
            rows = rng.choice(m, replace=False, size=n_reassigns)
            if self.verbose:
                say(f"[MiniBatchKMeans] Reassigning {n_reassigns} cluster centers.")
            centers = _replace_rows(batch, centers, to_reassign, rows)
        if (~to_reassign).any():
            counts[to_reassign] = np.min(counts[~to_reassign])
        return centers

    def _converged(
        self,
        step: int,
        n_steps: int,
        n_samples: int,
        shift: float,
        batch_inertia: float,
        tolerance: float,
        progress: _Progress,
    ) -> bool:
        """scikit-learn's early stopping on the smoothed mean batch inertia and on the
        centre shift, with its progress lines."""
        batch_inertia /= self._batch_size
        step += 1
        if step == 1:  # the inertia of the initial centres
            if self.verbose:
                say(f"Minibatch step {step}/{n_steps}: mean batch inertia: {batch_inertia}")
            return False
        if progress.ewa_inertia is None:
            progress.ewa_inertia = batch_inertia
        else:
            alpha = min(self._batch_size * 2.0 / (n_samples + 1), 1.0)
            progress.ewa_inertia = progress.ewa_inertia * (1 - alpha) + batch_inertia * alpha
        if self.verbose:
            say(
                f"Minibatch step {step}/{n_steps}: mean batch inertia: {batch_inertia}, "
                f"ewa inertia: {progress.ewa_inertia}"
            )
        if tolerance > 0.0 and shift <= tolerance:
            if self.verbose:
                say(f"Converged (small centers change) at step {step}/{n_steps}")
            return True
        if progress.ewa_inertia_min is None or progress.ewa_inertia < progress.ewa_inertia_min:
            progress.no_improvement = 0
            progress.ewa_inertia_min = progress.ewa_inertia
        else:
            progress.no_improvement += 1
        if (
            self.max_no_improvement is not None
            and progress.no_improvement >= self.max_no_improvement
        ):
            if self.verbose:
                say(f"Converged (lack of improvement in inertia) at step {step}/{n_steps}")
            return True
        return False

    def _set_centers(self, centers: Array, placement: Placement) -> None:
        self.cluster_centers_ = placement.to_output(centers)
        self.n_features_in_ = int(centers.shape[1])
        self.backend_ = placement.compute.name
        self._n_features_out = int(centers.shape[0])


def _moved(batch: Problem, old: Array, counts: Array, stats: _assign.Statistics) -> Array:
    """Each centre that got rows moved to the weighted mean of its running weight at its
    old place and the batch's rows, ``(c·W + Σ w·x) / (W + Σ w)`` (float64, X's units)."""
    xp = batch.backend.xp
    w = stats.weights
    got = w > 0
    safe = xp.where(got, w, xp.ones_like(w))
    mean, s = batch.origin
    means = rescale(rescale(mean, s)[None, :] + stats.sums / safe[:, None], -s)
    moved = (old * counts[:, None] + means * w[:, None]) / (counts + safe)[:, None]
    return xp.where(got[:, None], moved, old)


def _replace_rows(batch: Problem, centers: Array, which: np.ndarray, rows: np.ndarray) -> Array:
    """``centers`` (float64) with the rows marked ``which``, in order, replaced by the
    batch's rows ``rows``: no scatter, which the array API lacks."""
    backend = batch.backend
    xp = backend.xp
    dev = batch.device
    new_rows = batch.dense_rows(backend.asarray(rows.astype(np.int64), device=dev))
    new_rows = xp.astype(new_rows, xp.float64)
    mask = backend.asarray(which, device=dev)
    position = clamp(xp, xp.cumulative_sum(xp.astype(mask, xp.int64)) - 1, 0, len(rows) - 1)
    return xp.where(mask[:, None], xp.take(new_rows, position, axis=0), centers)


def _inertia_of(problem: Problem, centers: Array) -> float:
    """The weighted inertia of ``problem``'s rows against ``centers``, each row with its
    exact nearest centre."""
    xp = problem.backend.xp
    current = _assign.centers_for(problem, centers)
    labels = xp.empty(problem.n_samples, dtype=xp.int32, device=problem.device)
    _assign.assign(problem, current, labels, statistics=False)
    return _assign.inertia(problem, centers, labels)


def _labels_inertia(problem: Problem, placement: Placement, centers: Array) -> tuple[Any, float]:
    """The exact labels of every row (of the caller's array type) and their inertia."""
    xp = problem.backend.xp
    current = _assign.centers_for(problem, centers)
    labels = xp.empty(problem.n_samples, dtype=xp.int32, device=problem.device)
    _assign.assign(problem, current, labels, statistics=False)
    return placement.to_output(labels), _assign.inertia(problem, centers, labels)


def _host_weights(problem: Problem) -> np.ndarray:
    """The sample weights on the host in X's dtype (ones without weights), as
    scikit-learn holds them to draw the batches."""
    dtype = np.float32 if problem.itemsize == 4 else np.float64
    if problem.weights is None:
        return np.ones(problem.n_samples, dtype=dtype)
    return problem.backend.to_numpy(problem.weights).astype(dtype)
