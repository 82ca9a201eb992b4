"""Given the same initial centres, the solver gives scikit-learn's Lloyd result: the same
labels and n_iter_, centres and inertia equal to rounding, on every backend, wherever
scikit-learn's own labels are the nearest centres (its float32 distances on data far
from the origin are not; ours always are)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.cluster import KMeans as SKKMeans
from sklearn.datasets import make_blobs

from kmeans_gpu import KMeans, kmeans

from .checks import nearest_exactly

TOL = {np.float64: 1e-9, np.float32: 2e-4}


def _datasets(rng):
    blobs, _ = make_blobs(2000, n_features=6, centers=10, cluster_std=2.5, random_state=1)
    yield "blobs", blobs, 10
    yield "uniform", rng.uniform(-1, 1, size=(1500, 3)), 7
    yield "d=1", rng.normal(size=(400, 1)), 5
    yield "far from origin", rng.normal(size=(600, 4)) + 1e6, 6
    dup = np.repeat(rng.normal(size=(40, 2)), 5, axis=0)
    yield "duplicates", dup, 12
    yield "k=1", rng.normal(size=(300, 5)), 1
    small = rng.normal(size=(9, 3))
    yield "k=n", small, 9


def _compare(X, init, dtype, backend, **params):
    X = X.astype(dtype)
    init = init.astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = SKKMeans(init.shape[0], init=init, n_init=1, algorithm="lloyd", **params).fit(X)
        ours = KMeans(init.shape[0], init=backend.asarray(init), **params).fit(backend.asarray(X))
    assert backend.owns(ours.labels_) and backend.owns(ours.cluster_centers_)
    labels = backend.to_numpy(ours.labels_)
    centers = backend.to_numpy(ours.cluster_centers_)
    np.testing.assert_array_equal(labels, nearest_exactly(X, centers))
    if not np.array_equal(ref.labels_, nearest_exactly(X, ref.cluster_centers_)):
        return  # scikit-learn's rounding took another path: nothing to compare
    np.testing.assert_array_equal(labels, ref.labels_)
    assert ours.n_iter_ == ref.n_iter_
    scale = max(1.0, float(np.abs(X).max()))
    np.testing.assert_allclose(
        centers, ref.cluster_centers_, rtol=TOL[dtype], atol=TOL[dtype] * scale
    )
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=TOL[dtype] * 10, abs=1e-9)
    assert centers.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_sklearn_lloyd(backend, dtype, rng):
    for name, X, k in _datasets(rng):
        init = X[rng.choice(X.shape[0], k, replace=False)]
        if name == "duplicates":
            init = X[:k]  # several identical starting centres: empty clusters
        _compare(X, init, dtype, backend)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_sklearn_with_relocation(backend, dtype, rng):
    X = rng.normal(size=(500, 3))
    init = np.vstack([X[:5], [[100, 100, 100], [200, 200, 200], [-100, 0, 0]]])
    _compare(X, init, dtype, backend)


def test_matches_sklearn_with_weights_and_tol(backend, rng):
    X, _ = make_blobs(1200, n_features=3, centers=6, cluster_std=3.0, random_state=4)
    w = rng.uniform(0, 3, size=X.shape[0])
    w[::7] = 0.0
    init = X[rng.choice(X.shape[0], 6, replace=False)]
    for tol, max_iter in ((1e-4, 300), (1e-2, 300), (0.0, 300), (1e-4, 3)):
        ref = SKKMeans(6, init=init, n_init=1, tol=tol, max_iter=max_iter).fit(X, sample_weight=w)
        ours = KMeans(6, init=backend.asarray(init), tol=tol, max_iter=max_iter).fit(
            backend.asarray(X), sample_weight=backend.asarray(w)
        )
        np.testing.assert_array_equal(backend.to_numpy(ours.labels_), ref.labels_)
        assert ours.n_iter_ == ref.n_iter_
        np.testing.assert_allclose(backend.to_numpy(ours.cluster_centers_), ref.cluster_centers_)
        assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-10)


def test_fewer_distinct_points_than_clusters_matches_sklearn(backend):
    X = np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 5.0], [5.0, 5.0], [5.0, 5.0]])
    for init in ([[0, 0], [0, 0], [5, 5]], [[5, 5], [5, 5], [0, 0]], [[0, 0], [5, 5], [5, 5]]):
        init = np.asarray(init, dtype=np.float64)
        with pytest.warns(Warning, match="distinct clusters"):
            ours = KMeans(3, init=backend.asarray(init)).fit(backend.asarray(X))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = SKKMeans(3, init=init, n_init=1).fit(X)
        np.testing.assert_array_equal(backend.to_numpy(ours.labels_), ref.labels_)
        np.testing.assert_allclose(backend.to_numpy(ours.cluster_centers_), ref.cluster_centers_)
        assert ours.n_iter_ == ref.n_iter_ and ours.inertia_ == ref.inertia_ == 0.0


def test_transform_and_score_match_sklearn(backend, rng):
    X = rng.normal(size=(300, 4))
    init = X[:5]
    ref = SKKMeans(5, init=init, n_init=1).fit(X)
    ours = KMeans(5, init=backend.asarray(init)).fit(backend.asarray(X))
    Y = rng.normal(size=(50, 4))
    np.testing.assert_allclose(
        backend.to_numpy(ours.transform(backend.asarray(Y))),
        ref.transform(Y),
        rtol=1e-10,
        atol=1e-12,
    )
    np.testing.assert_array_equal(
        backend.to_numpy(ours.predict(backend.asarray(Y))), ref.predict(Y)
    )
    assert ours.score(backend.asarray(Y)) == pytest.approx(ref.score(Y), rel=1e-12)


def test_functional_api_matches_estimator(backend, rng):
    X = backend.asarray(rng.normal(size=(400, 3)))
    est = KMeans(4, random_state=3).fit(X)
    centers, labels, inertia, n_iter = kmeans(X, 4, random_state=3)
    np.testing.assert_array_equal(backend.to_numpy(labels), backend.to_numpy(est.labels_))
    backend.assert_same_run(centers, est.cluster_centers_)
    backend.assert_same_run(inertia, est.inertia_)
    assert n_iter == est.n_iter_


def test_labels_match_centres_where_sklearn_leaves_them_stale(backend):
    """Labels stand still while an empty cluster moves: scikit-learn stops with labels_
    that disagree with its own predict(X); ours are the nearest centres."""
    X = np.array([[0.0]] * 3 + [[3.0]] * 22)
    init = np.array([[3.0], [0.0], [0.0], [0.0], [0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = SKKMeans(5, init=init, n_init=1).fit(X)
        ours = KMeans(5, init=backend.asarray(init)).fit(backend.asarray(X))
    assert not np.array_equal(ref.labels_, ref.predict(X))  # scikit-learn's stale labels
    centers = backend.to_numpy(ours.cluster_centers_)
    np.testing.assert_array_equal(backend.to_numpy(ours.labels_), nearest_exactly(X, centers))
    assert ours.inertia_ == 0.0
