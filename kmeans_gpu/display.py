"""What a plot of a run needs, computed where the data live: a fixed random sample of
rows to draw and a 2-D projection (PCA for more than two features). No matplotlib."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._validation import check_array, check_positive_int, check_random_state
from .backends import Backend, on_device_of

#: Most points a plot draws by default; the solver always uses every point.
DEFAULT_MAX_POINTS = 100_000
_PCA_CHUNK_ROWS = 1 << 16


@dataclass(frozen=True)
class Projection:
    """The linear map ``(x − mean) @ components`` of d features onto the plot's 2 axes.

    Attributes
    ----------
    mean : ndarray of shape (n_features,)
    components : ndarray of shape (n_features, 2)
    axis_labels : tuple of str
        Labels for the plot's x and y axes.
    is_pca : bool
        True when the axes are principal components rather than the data's own.
    """

    mean: np.ndarray
    components: np.ndarray
    axis_labels: tuple[str, str]
    is_pca: bool

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Project host points of shape (m, n_features) to shape (m, 2)."""
        points = np.asarray(points, dtype=np.float64)
        if not self.is_pca:
            out = np.zeros((points.shape[0], 2))
            out[:, : points.shape[1]] = points
            return out
        return (points - self.mean) @ self.components


def pca_2d(X: Any, *, backend: str | Backend = "auto") -> Projection:
    """The projection onto the two principal components of X.

    The mean and the ``d × d`` covariance are computed on X's backend; only those small
    arrays come to the host. Data with one or two features is shown as it is.
    """
    X, placement = check_array(X, backend=backend)
    return _pca_2d(X, placement.compute)


def _pca_2d(X: Any, compute: Backend) -> Projection:
    """:func:`pca_2d` of an X already validated on ``compute``."""
    d = int(X.shape[1])
    if d <= 2:
        return projection(np.zeros(d), None)
    xp = compute.xp
    acc = xp.float64
    n = int(X.shape[0])
    chunks = [(a, min(a + _PCA_CHUNK_ROWS, n)) for a in range(0, n, _PCA_CHUNK_ROWS)]
    mean = sum(xp.sum(xp.astype(X[a:b, ...], acc), axis=0) for a, b in chunks) / n
    scatter = None
    for a, b in chunks:  # float64 one chunk at a time: no full-size copy
        rows = xp.astype(X[a:b, ...], acc) - mean
        part = rows.T @ rows
        scatter = part if scatter is None else scatter + part
    covariance = compute.to_numpy(scatter) / n
    return projection(compute.to_numpy(mean).astype(np.float64), covariance)


def projection(mean: np.ndarray, covariance: np.ndarray | None) -> Projection:
    """The projection onto the two leading eigenvectors of a ``d × d`` covariance,
    signs fixed so that each axis's largest component is positive; data of one or two
    features (``d`` of ``mean``) are shown as they are."""
    d = int(mean.shape[0])
    if d <= 2 or covariance is None:
        return Projection(np.zeros(d), np.eye(d, 2), ("x", "y" if d == 2 else ""), False)
    values, vectors = np.linalg.eigh(covariance)
    order = np.argsort(values)[::-1][:2]
    components = vectors[:, order]
    signs = np.sign(components[np.abs(components).argmax(axis=0), [0, 1]])
    components = components * np.where(signs == 0, 1.0, signs)
    share = values[order] / max(values.sum(), np.finfo(float).tiny)
    labels = (f"PC 1 ({share[0]:.0%} of variance)", f"PC 2 ({share[1]:.0%} of variance)")
    return Projection(mean, components, labels, True)


def display_sample(
    n_samples: int, max_points: int | None = DEFAULT_MAX_POINTS, random_state: Any = None
) -> np.ndarray | None:
    """Sorted indices of at most ``max_points`` random rows, or None for all rows."""
    if max_points is None or n_samples <= max_points:
        return None
    max_points = check_positive_int(max_points, "max_points")
    rng = check_random_state(random_state)
    return np.sort(rng.choice(n_samples, size=max_points, replace=False))


@dataclass(frozen=True)
class Scene:
    """The points a plot draws, as host 2-D coordinates.

    Attributes
    ----------
    points : ndarray of shape (n_display, 2)
        The projected sample.
    indices : ndarray of shape (n_display,) or None
        Their rows in X (None: every row, in order); pass as ``display_indices``.
    projection : Projection
        Maps centroids (and any other points of X's space) into the plot.
    """

    points: np.ndarray
    indices: np.ndarray | None
    projection: Projection


def make_scene(
    X: Any,
    *,
    max_points: int | None = DEFAULT_MAX_POINTS,
    random_state: Any = None,
    backend: str | Backend = "auto",
) -> Scene:
    """Sample and project X for plotting, on the device that holds X (on Dask: where
    its blocks are); only the sample travels to the host."""
    from ._sharded import is_dask_array

    if is_dask_array(X):
        from ._dask import make_scene as on_dask

        return on_dask(X, max_points=max_points, random_state=random_state)
    with on_device_of(X):
        X, placement = check_array(X, backend=backend)
        compute = placement.compute
        indices = display_sample(int(X.shape[0]), max_points, random_state)
        rows = X
        if indices is not None:
            rows = compute.xp.take(X, compute.asarray(indices, device=compute.device(X)), axis=0)
        projection = _pca_2d(X, compute)  # X is validated: no second pass over it
        return Scene(projection(compute.to_numpy(rows)), indices, projection)
