"""Experimental engines for kmeans-gpu, kept apart from the core until a GPU run shows
they win: reduced-precision products on tensor cores (TF32 and split TF32) with the
core's exact labels, the Triton kernel, deterministic sums by sorting or in 64-bit
fixed point, and the ``SQ_DIST`` kernel.

``import kmeans_gpu`` never imports this package. What each engine is, its error
bounds, and what has been measured of it: ``docs/experimental.md``.

>>> from kmeans_gpu import experimental
>>> centers, labels, inertia, n_iter = experimental.kmeans(X, 8, precision="tf32x3")
... # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .. import _api
from .._assign import EXACT, Pass
from ..backends import (
    Array,
    Backend,
    available_backends,
    backend_for_array,
    get_backend,
    on_device_of,
)
from ..frames import Frame, check_display_indices, clusters_of, stream
from ._cupy import DETERMINISTIC_SUMS, CupyBackend, make_backend
from ._engine import ReducedPrecision, TensorCores
from ._precision import PRECISIONS, Precision, check_float32, check_precision

__all__ = [
    "DETERMINISTIC_SUMS",
    "PRECISIONS",
    "CupyBackend",
    "Precision",
    "ReducedPrecision",
    "TensorCores",
    "iter_frames",
    "kmeans",
    "make_engine",
]


def make_engine(precision: str, X: Any = None) -> Pass:
    """The pass over the data for ``precision``: the core's exact pass for
    ``"exact"``, else a new :class:`ReducedPrecision` (one per fit: it keeps split
    TF32's capacity between passes).

    Raises
    ------
    ValueError
        For an unknown precision, or a reduced one for data ``X`` that are not float32.
    """
    checked = check_precision(precision)
    if checked is None:
        return EXACT
    dtype = getattr(X, "dtype", None)
    if dtype is not None:  # (other input is checked at the first pass)
        check_float32(dtype, checked)
    return ReducedPrecision(checked)


def _backend_for(X: Any, backend: str | Backend, triton: bool) -> str | Backend:
    """The backend a fit runs on: the experimental :class:`CupyBackend` (with the
    Triton kernel when ``triton``) wherever the core would compute on CuPy, else
    ``backend`` as given."""
    if isinstance(backend, Backend):
        if triton and not (isinstance(backend, CupyBackend) and backend.triton):
            raise ValueError(
                "triton=True with a backend object needs experimental.CupyBackend(triton=True)"
            )
        return backend
    if backend == "cupy" or (backend == "auto" and _lands_on_cupy(X)):
        if "cupy" not in available_backends():
            get_backend("cupy")  # raises the core's install hint
        return make_backend(triton=triton)
    if triton:
        raise ValueError(f"triton=True runs on CuPy; this fit runs on backend={backend!r}")
    return backend


def _lands_on_cupy(X: Any) -> bool:
    """Whether ``backend="auto"`` computes ``X`` on CuPy."""
    found = backend_for_array(X)
    if found is not None:
        return found.name == "cupy"
    return "cupy" in available_backends()


def kmeans(
    X: Any,
    n_clusters: int,
    *,
    precision: str = "tf32x3",
    triton: bool = False,
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
) -> tuple[Array, Array, float, int]:
    """Cluster X with Lloyd's K-means, its products at a reduced precision.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
        float32 data for a reduced ``precision`` (any data for ``"exact"``).
    n_clusters : int
    precision : {"tf32x3", "tf32", "exact"}, default="tf32x3"
        The distance products: split TF32 (three TF32 products' work, an error near
        float32's), TF32, or the core's exact pass. The labels are the core's exact
        labels at every precision; only CuPy on a GPU with tensor cores (compute
        capability 8.0+) computes reduced products, every other backend computes
        exactly.
    triton : bool, default=False
        On CuPy, the Triton kernel for the reduced products (and each chunk's whole
        share of a pass); needs ``triton`` and ``torch``.
    sample_weight, init, n_init, max_iter, tol, random_state, empty_cluster, verbose, \
working_memory, deterministic
        As in :func:`kmeans_gpu.kmeans`.
    backend : {"auto", "numpy", "cupy"} or Backend, default="auto"
        As in :func:`kmeans_gpu.kmeans`; where the fit runs on CuPy it runs on the
        experimental :class:`CupyBackend`. Pass ``CupyBackend(...)`` for its other
        options (deterministic sums, the ``SQ_DIST`` kernel).

    Returns
    -------
    centers : array of shape (n_clusters, n_features)
        Equal to the exact fit's up to the order of their float64 sums (with the
        Triton kernel's step: up to float32 rounding of the sums).
    labels : array of shape (n_samples,), int32
        The exact labels for ``centers``.
    inertia : float
    n_iter : int

    Raises
    ------
    ValueError
        For an unknown precision, a reduced one on data that are not float32, or
        ``triton`` where the fit does not run on CuPy.
    """
    engine = make_engine(precision, X)
    fitted = _api.fit(
        X,
        n_clusters,
        sample_weight=sample_weight,
        init=init,
        n_init=n_init,
        max_iter=max_iter,
        tol=tol,
        random_state=random_state,
        backend=_backend_for(X, backend, triton),
        empty_cluster=empty_cluster,
        verbose=verbose,
        working_memory=working_memory,
        deterministic=deterministic,
        engine=engine,
    )
    out = fitted.placement.to_output
    return out(fitted.centers), out(fitted.labels), fitted.inertia, fitted.n_iter


def iter_frames(
    X: Any,
    init: Any = "k-means++",
    *,
    precision: str = "tf32x3",
    triton: bool = False,
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
    """:func:`kmeans_gpu.iter_frames` with the products at a reduced precision.

    Parameters
    ----------
    precision, triton
        As in :func:`kmeans`.
    X, init, n_clusters, max_iter, tol, sample_weight, empty_cluster, backend, \
display_indices, random_state, working_memory, deterministic
        As in :func:`kmeans_gpu.iter_frames` (``backend`` as in :func:`kmeans`).

    Yields
    ------
    Frame
        The frames of the exact run (labels exact, centroids up to the order of
        their sums).

    Raises
    ------
    ValueError
        As :func:`kmeans`, and when ``n_clusters`` is missing for a drawn ``init``.
    """
    engine = make_engine(precision, X)
    with on_device_of(X):
        job = _api.setup(
            X,
            clusters_of(init, n_clusters),
            sample_weight=sample_weight,
            init=init,
            n_init=1,
            max_iter=max_iter,
            tol=tol,
            random_state=random_state,
            backend=_backend_for(X, backend, triton),
            empty_cluster=empty_cluster,
            working_memory=working_memory,
            deterministic=deterministic,
            engine=engine,
        )
    indices = check_display_indices(display_indices, job.problem.n_samples)
    return stream(job, indices)
