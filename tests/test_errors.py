"""Bad input gets a ValueError/TypeError naming the problem, and the caller's arrays are
never modified."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from kmeans_gpu import KMeans, kmeans, kmeans_plusplus
from kmeans_gpu.backends import BackendUnavailableError


@pytest.fixture
def X(rng):
    return rng.normal(size=(40, 3))


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        (np.array([[1.0, np.nan], [0.0, 1.0]]), ValueError, "NaN"),
        (np.array([[1.0, np.inf], [0.0, 1.0]]), ValueError, "infinity"),
        (np.array([[1 + 2j, 0], [0, 1]]), ValueError, "Complex data not supported"),
        (np.array([["a", "b"], ["c", "d"]]), TypeError, "numeric"),
        (np.array([[{"a": 1}, 1.0], [2.0, 3.0]], dtype=object), TypeError, "numeric"),
        (np.empty((0, 3)), ValueError, "0 sample"),
        (np.empty((3, 0)), ValueError, "0 feature"),
        (np.arange(5.0), ValueError, "2-D"),
        (np.zeros((2, 2, 2)), ValueError, "2-D"),
        ([[1.0, 2.0], [3.0]], ValueError, "2-D array"),
    ],
)
def test_bad_data(data, error, match):
    with pytest.raises(error, match=match):
        KMeans(1).fit(data)
    with pytest.raises(error, match=match):
        kmeans(data, 1)


def test_bad_data_on_array_api_backend(backend):
    bad = backend.asarray(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="NaN"):
        KMeans(1).fit(bad)
    complex_ = backend.asarray(np.array([[1 + 1j, 0j]]))
    with pytest.raises(ValueError, match="Complex"):
        KMeans(1).fit(complex_)


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        ({"n_clusters": 0}, ValueError, "n_clusters must be >= 1"),
        ({"n_clusters": 41}, ValueError, "n_samples=40 should be >= n_clusters=41"),
        ({"n_clusters": 2.5}, TypeError, "n_clusters must be an integer"),
        ({"init": "kmeans++"}, ValueError, "unknown init 'kmeans\\+\\+'"),
        ({"init": 3}, TypeError, "init must be"),
        ({"init": np.zeros((3, 3))}, ValueError, "shape of init"),
        ({"init": np.zeros((2, 4))}, ValueError, "shape of init"),
        ({"init": np.zeros(2)}, ValueError, "2-D"),
        ({"init": lambda X, k, random_state: X[:1]}, ValueError, "centers returned by init"),
        ({"max_iter": 0}, ValueError, "max_iter must be >= 1"),
        ({"n_init": 0}, ValueError, "n_init must be >= 1"),
        ({"n_init": "many"}, ValueError, "n_init must be 'auto'"),
        ({"tol": -1.0}, ValueError, "tol must be >= 0"),
        ({"backend": "tpu"}, ValueError, "unknown backend 'tpu'; valid backends are"),
        ({"empty_cluster": "drop"}, ValueError, "empty_cluster must be one of"),
        ({"random_state": "seed"}, ValueError, "random_state"),
    ],
)
def test_bad_parameters(X, params, error, match):
    params = {"n_clusters": 2, **params}
    with pytest.raises(error, match=match):
        KMeans(**params).fit(X)


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        (lambda n: -np.ones(n), "non-negative"),
        (lambda n: np.ones(n - 1), "expected \\(40,\\)"),
        (lambda n: np.zeros(n), "sums to zero"),
        (lambda n: np.full(n, np.nan), "NaN"),
        (lambda n: np.ones((n, 1)), "expected \\(40,\\)"),
    ],
)
def test_bad_sample_weight(X, weights, match):
    with pytest.raises(ValueError, match=match):
        KMeans(2).fit(X, sample_weight=weights(X.shape[0]))
    with pytest.raises(ValueError, match=match):
        kmeans_plusplus(X, 2, sample_weight=weights(X.shape[0]))


def test_predict_errors(X):
    with pytest.raises(NotFittedError):
        KMeans(2).predict(X)
    est = KMeans(2, random_state=0).fit(X)
    with pytest.raises(ValueError, match="X has 2 features, but KMeans is expecting 3"):
        est.predict(X[:, :2])
    with pytest.raises(ValueError, match="X has 2 features"):
        est.transform(X[:, :2])
    with pytest.raises(ValueError, match="NaN"):
        est.predict(np.full((2, 3), np.nan))


def test_sparse_refused(X):
    sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match="Sparse input is not supported"):
        KMeans(2).fit(sparse.csr_matrix(X))


def test_cupy_unavailable_says_how_to_install(monkeypatch, X):
    from kmeans_gpu import backends

    monkeypatch.setitem(backends._AVAILABLE, "cupy", lambda: False)
    with pytest.raises(
        BackendUnavailableError, match=r"kmeans-gpu\[cuda12\].*kmeans-gpu\[cuda13\]"
    ):
        KMeans(2, backend="cupy").fit(X)
    assert issubclass(BackendUnavailableError, ValueError)


def test_inputs_are_never_modified(backend, rng):
    X = rng.normal(size=(60, 3)) * 1e3 + 5e3
    init = X[:4].copy()
    w = rng.uniform(0.5, 2, size=60)
    copies = [X.copy(), init.copy(), w.copy()]
    Xb, initb, wb = backend.asarray(X), backend.asarray(init), backend.asarray(w)
    est = KMeans(4, init=initb).fit(Xb, sample_weight=wb)
    est.predict(Xb), est.transform(Xb), est.score(Xb, sample_weight=wb)
    kmeans(Xb, 4, init=initb, sample_weight=wb)
    kmeans_plusplus(Xb, 4, sample_weight=wb, random_state=0)
    for original, arr in zip(copies, (Xb, initb, wb), strict=True):
        np.testing.assert_array_equal(backend.to_numpy(arr), original)
    for original, arr in zip(copies, (X, init, w), strict=True):
        np.testing.assert_array_equal(arr, original)
