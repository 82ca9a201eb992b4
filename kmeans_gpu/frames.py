"""The frame stream: one frozen host snapshot of the centroids and labels per Lloyd
iteration, for animating a run of any size on any backend.

Frames come from the same Lloyd loop that ``fit`` runs (``fit`` itself makes no host
copies). Frame ``t`` holds the centroids after ``t`` iterations and the assignment of
the points to those centroids, so its inertia is the K-means objective at that state
and never increases from one frame to the next. The stream runs one iteration ahead of
what it yields: the host copy of a frame is started as soon as its data exist and is
finished one iteration later, so on CuPy it overlaps that iteration's work.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _lloyd
from ._api import Setup, setup
from ._sharded import check_shown
from .backends import Array, Backend, on_device_of, steps_on_device_of
from .backends._base import Staging


@dataclass(frozen=True, eq=False)
class Frame:
    """One state of a K-means run; every array is a read-only host NumPy array.

    Attributes
    ----------
    iteration : int
        0 for the initial centroids, then the number of Lloyd iterations done.
    centroids : ndarray of shape (n_clusters, n_features)
    labels : ndarray of shape (n_samples,) or (len(indices),), int32
        Index of the nearest centroid of each point (of each displayed point when
        ``indices`` is set).
    inertia : float
        ``Σ w ‖x − c‖²`` of all points against these centroids.
    center_shift : float
        ``Σ ‖Δc‖²`` since the previous frame (0 at iteration 0).
    converged : bool
        True on the last frame of a run that converged (False if it hit ``max_iter``).
    indices : ndarray of shape (n_display,) or None
        The rows ``labels`` belongs to; None when it covers every row.
    """

    iteration: int
    centroids: np.ndarray
    labels: np.ndarray
    inertia: float
    center_shift: float
    converged: bool = False
    indices: np.ndarray | None = None


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def check_display_indices(indices: Any, n_samples: int) -> np.ndarray | None:
    """Validate row indices for display: 1-D integers in ``[0, n_samples)``."""
    if indices is None:
        return None
    host = np.asarray(indices)
    if host.ndim != 1 or host.dtype.kind not in "iu":
        raise ValueError(
            f"display_indices must be a 1-D array of integers, got {host.dtype} of shape "
            f"{host.shape}"
        )
    if host.size and (host.min() < 0 or host.max() >= n_samples):
        raise ValueError(f"display_indices must lie in [0, {n_samples})")
    return host.astype(np.int64)


def stream(job: Setup, display_indices: np.ndarray | None = None) -> Iterator[Frame]:
    """Frames of one Lloyd run of ``job`` (see :func:`iter_frames`), each made on the
    device that holds the data."""
    job = job.showing(display_indices)
    return steps_on_device_of(job.problem.X, _frames(job, display_indices))


def _frames(job: Setup, display_indices: np.ndarray | None) -> Generator[Frame, None, None]:
    problem = job.problem
    backend: Backend = problem.backend
    device = problem.device
    rows = None if display_indices is None else backend.asarray(display_indices, device=device)
    indices = None if display_indices is None else _frozen(display_indices.copy())
    # the stream's copies reuse their staging buffers (CuPy: pinned memory, two per
    # array in flight), whatever the caller keeps of the frames
    staging: Staging = {}

    def snapshot(
        iteration: int,
        centers: Array,
        labels: Array,
        inertia_value: Array | float,
        shift: float,
        converged: bool,
    ) -> Callable[[], Frame]:
        """Queue the host copies of one frame; the callable finishes them (a float
        ``inertia_value`` is the final one, in X's units)."""
        shown = job.shown(labels, rows)
        centroids = backend.host_copy(centers, staging=staging)
        # the step's labels are fresh and the loop never writes them again (nor the
        # rows taken from them): on the host they are handed over, not copied
        label_copy = backend.host_copy(shown, owned=True, staging=staging)
        if isinstance(inertia_value, float):  # the final one, already on the host
            inertia: Callable[[], Any] = lambda: inertia_value  # noqa: E731
        else:
            working = backend.host_copy(inertia_value, staging=staging)
            inertia = lambda: problem.inertia_from_working(float(working()))  # noqa: E731
        unscaled_shift = problem.inertia_from_working(shift)

        def finish() -> Frame:
            return Frame(
                iteration=iteration,
                centroids=_frozen(centroids()),
                labels=_frozen(label_copy()),
                inertia=float(inertia()),
                center_shift=unscaled_shift,
                converged=converged,
                indices=indices,
            )

        return finish

    centers, steps = job.start(track_inertia=True)
    shift = 0.0
    pending: Callable[[], Frame] | None = None
    while True:
        try:
            step = next(steps)
        except StopIteration as stop:
            result: _lloyd.Result = stop.value
            break
        # step.labels assign the points to `centers`, the state of the previous frame
        ready = snapshot(step.iteration - 1, centers, step.labels, step.inertia, shift, False)
        if pending is not None:
            yield pending()
        pending = ready
        centers, shift = step.centers, step.center_shift
    last = snapshot(
        result.n_iter, result.centers, result.labels, result.inertia, shift, result.converged
    )
    if pending is not None:
        yield pending()
    yield last()


def clusters_of(init: Any, n_clusters: int | None) -> int:
    """``n_clusters``, or the number of rows of ``init`` when it is an array of initial
    centroids (a ``ValueError`` when it is not)."""
    if n_clusters is not None:
        return n_clusters
    shape = getattr(init, "shape", None) or np.shape(init)
    if isinstance(init, str) or callable(init) or len(shape) != 2:
        raise ValueError("n_clusters is required when init is not an array of initial centroids")
    return int(shape[0])


def iter_frames(
    X: Any,
    init: Any = "k-means++",
    *,
    n_clusters: int | None = None,
    max_iter: int = 300,
    tol: float = 0.0,
    sample_weight: Any = None,
    empty_cluster: str = "keep",
    backend: str | Backend = "auto",
    display_indices: Any = None,
    random_state: Any = None,
    working_memory: int | None = None,
    deterministic: bool = False,
) -> Iterator[Frame]:
    """Run Lloyd's K-means on X and yield a :class:`Frame` per iteration.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
        A dask array too (docs/dask.md).
    init : array of shape (n_clusters, n_features), "k-means++", "k-means||", "random" \
or callable, default="k-means++"
        Initial centroids, or how to draw them (then ``n_clusters`` is required).
    n_clusters : int, default=None
        Number of clusters; taken from ``init`` when it is an array.
    max_iter : int, default=300
    tol : float, default=0.0
        0 runs until the labels (or centroids) stop changing, as the blog post's ``KMeansND`` does.
    sample_weight : array of shape (n_samples,), default=None
    empty_cluster : {"keep", "relocate"}, default="keep"
        "keep" leaves an empty cluster's centroid in place (the blog post's behaviour).
    backend : {"auto", "numpy", "cupy"} or Backend, default="auto"
    display_indices : array of shape (n_display,), default=None
        Rows whose labels each frame copies to the host (say, the sample a plot draws);
        None copies every label (on Dask, refused above 10⁷ rows). The solver always
        uses every row.
    random_state : int, RandomState, Generator or None, default=None
    working_memory : int, default=None
    deterministic : bool, default=False
        As in :func:`kmeans_gpu.kmeans`.

    Yields
    ------
    Frame
        ``iteration`` 0 is the initial centroids with their assignment; the last frame
        is the converged (or ``max_iter``) state and equals what ``fit`` returns for the
        same inputs. There are ``n_iter + 1`` frames.

    Notes
    -----
    What is synchronous: each iteration reads back one small vector (to test
    convergence), as ``fit`` does. The frame's host copies (centroids, the displayed
    labels, the inertia) are queued behind the iteration that produced them and, on
    CuPy, run on a separate stream into pinned memory while the next iteration
    computes; a frame is handed out once its copy is complete. On NumPy and other
    backends the copies are plain synchronous copies.
    """
    check_shown(X, display_indices)
    with on_device_of(X):
        job = setup(
            X,
            clusters_of(init, n_clusters),
            sample_weight=sample_weight,
            init=init,
            n_init=1,
            max_iter=max_iter,
            tol=tol,
            random_state=random_state,
            backend=backend,
            empty_cluster=empty_cluster,
            working_memory=working_memory,
            deterministic=deterministic,
        )
    indices = check_display_indices(display_indices, job.problem.n_samples)
    return stream(job, indices)
