"""Bad input gets a ValueError/TypeError naming the problem, and the caller's arrays are
never modified."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from kmeans_gpu import (
    KMeans,
    KMeansND,
    MiniBatchKMeans,
    assign_points_to_centroids,
    generate_clusters,
    kmeans,
    kmeans_plusplus,
)
from kmeans_gpu.backends import Backend, BackendUnavailableError


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


SHAPE = r"The shape of the initial centers \(\d+, \d+\) does not match the number of"


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        ({"n_clusters": 0}, ValueError, "n_clusters must be >= 1"),
        ({"n_clusters": 41}, ValueError, "n_samples=40 should be >= n_clusters=41"),
        ({"n_clusters": 2.5}, TypeError, "n_clusters must be an integer"),
        ({"init": "kmeans++"}, ValueError, "unknown init 'kmeans\\+\\+'"),
        ({"init": 3}, TypeError, "init must be"),
        ({"init": np.zeros((3, 3))}, ValueError, SHAPE + " clusters 2 .init."),
        ({"init": np.zeros((2, 4))}, ValueError, SHAPE + " features of the data 3 .init."),
        ({"init": np.zeros(2)}, ValueError, "2-D"),
        ({"init": lambda X, k, random_state: X[:1]}, ValueError, "centers returned by init"),
        ({"max_iter": 0}, ValueError, "max_iter must be >= 1"),
        ({"n_init": 0}, ValueError, "n_init must be >= 1"),
        ({"n_init": "many"}, ValueError, "n_init must be 'auto'"),
        ({"tol": -1.0}, ValueError, "tol must be >= 0"),
        ({"backend": "tpu"}, ValueError, "unknown backend 'tpu'; valid backends are"),
        ({"empty_cluster": "drop"}, ValueError, "empty_cluster must be one of"),
        ({"random_state": "seed"}, ValueError, "random_state"),
        ({"algorithm": "full"}, ValueError, "algorithm must be 'lloyd' or 'elkan'"),
    ],
)
def test_bad_parameters_of_the_functional_api(X, params, error, match):
    params = {"n_clusters": 2, **params}
    with pytest.raises(error, match=match):
        kmeans(X, **params)


@pytest.mark.parametrize("estimator", [KMeans, MiniBatchKMeans])
@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"n_clusters": 0}, "The 'n_clusters' parameter of {} must be an int in the range"),
        ({"n_clusters": 2.5}, "The 'n_clusters' parameter of {} must be an int"),
        ({"n_clusters": 41}, "n_samples=40 should be >= n_clusters=41"),
        ({"init": "kmeans++"}, "The 'init' parameter of {} must be a str among"),
        ({"init": 3}, "The 'init' parameter of {} must be"),
        ({"init": np.zeros((3, 3))}, SHAPE + " clusters 2"),
        ({"init": np.zeros((2, 4))}, SHAPE + " features of the data 3"),
        ({"init": np.zeros(2)}, "2-D"),
        ({"init": lambda X, k, random_state: X[:1]}, SHAPE + " clusters 2"),
        ({"max_iter": 0}, "The 'max_iter' parameter of {} must be an int in the range"),
        ({"n_init": 0}, "The 'n_init' parameter of {} must be"),
        ({"n_init": "many"}, "The 'n_init' parameter of {} must be"),
        ({"tol": -1.0}, "The 'tol' parameter of {} must be a float in the range"),
        ({"backend": "tpu"}, "The 'backend' parameter of {} must be a str among"),
        ({"random_state": "seed"}, "The 'random_state' parameter of {} must be"),
        ({"working_memory": 0}, "The 'working_memory' parameter of {} must be"),
    ],
)
def test_bad_parameters_in_scikit_learns_words(X, estimator, params, match):
    """The estimators validate their parameters as scikit-learn's do (its messages)."""
    params = {"n_clusters": 2, **params}
    with pytest.raises((ValueError, TypeError), match=match.format(estimator.__name__)):
        estimator(**params).fit(X)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"empty_cluster": "drop"}, "The 'empty_cluster' parameter of KMeans must be"),
        ({"algorithm": "full"}, "The 'algorithm' parameter of KMeans must be a str among"),
        ({"copy_x": "yes"}, "The 'copy_x' parameter of KMeans must be"),
        ({"deterministic": 2}, "The 'deterministic' parameter of KMeans must be"),
    ],
)
def test_bad_kmeans_only_parameters(X, params, match):
    with pytest.raises(ValueError, match=match):
        KMeans(2, **params).fit(X)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"batch_size": 0}, "The 'batch_size' parameter of MiniBatchKMeans must be"),
        ({"reassignment_ratio": -1.0}, "The 'reassignment_ratio' parameter of MiniBatchKMeans"),
        ({"max_no_improvement": -1}, "The 'max_no_improvement' parameter of MiniBatchKMeans"),
        ({"init_size": 0}, "The 'init_size' parameter of MiniBatchKMeans must be"),
        ({"compute_labels": "no"}, "The 'compute_labels' parameter of MiniBatchKMeans must"),
    ],
)
def test_bad_minibatch_parameters(X, params, match):
    with pytest.raises(ValueError, match=match):
        MiniBatchKMeans(2, **params).fit(X)
    with pytest.raises(ValueError, match=match):
        MiniBatchKMeans(2, **params).partial_fit(X)


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


def test_sparse_input_off_numpy_is_refused(X):
    """SciPy sparse matrices run on the NumPy backend only; CuPy's sparse matrices are
    not supported (refused by their module, without CuPy)."""
    from scipy import sparse

    for backend in ("cupy", Backend(np, "array_api_strict")):
        with pytest.raises(ValueError, match="sparse input is computed on the NumPy backend"):
            kmeans(sparse.csr_matrix(X), 2, backend=backend)
    with pytest.raises(ValueError, match="sparse input is computed on the NumPy backend"):
        KMeans(2, backend="cupy").fit(sparse.csr_matrix(X))
    cupyx_like = type("csr_matrix", (), {"__module__": "cupyx.scipy.sparse._csr"})()
    with pytest.raises(TypeError, match=r"CuPy sparse matrices \(cupyx.scipy.sparse\) are"):
        kmeans(cupyx_like, 2)
    with pytest.raises(TypeError, match="init must be a dense array"):
        kmeans(X, 2, init=sparse.csr_matrix(X[:2]))


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        (lambda X: X.astype(np.complex128), ValueError, "Complex data not supported"),
        (lambda X: X.multiply(np.nan), ValueError, "NaN or infinity"),
        (lambda X: X[:0], ValueError, "0 sample"),
        (lambda X: X[:, :0], ValueError, "0 feature"),
    ],
)
def test_bad_sparse_data(X, data, error, match):
    from scipy import sparse

    with pytest.raises(error, match=match):
        KMeans(1).fit(data(sparse.csr_array(X)))


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


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        ({"working_memory": -1}, ValueError, "working_memory must be at least"),
        ({"working_memory": 1.5}, TypeError, "working_memory must be a number of bytes"),
        ({"working_memory": "32MiB"}, TypeError, "working_memory must be a number of bytes"),
        ({"random_state": -1}, ValueError, r"random_state must be in \[0, 2\*\*32 - 1\]"),
        ({"sample_weight": np.array(["a"] * 50)}, TypeError, "sample_weight must be numeric"),
    ],
)
def test_bad_options_name_themselves(params, error, message):
    X = np.random.default_rng(0).normal(size=(50, 2))
    with pytest.raises(error, match=message):
        kmeans(X, 2, **params)


def test_host_weights_with_array_api_data():
    xp = pytest.importorskip("array_api_strict")
    X = np.random.default_rng(0).normal(size=(50, 2))
    w = np.linspace(0.5, 2.0, 50)
    got = kmeans(xp.asarray(X), 2, sample_weight=w, random_state=0)
    want = kmeans(X, 2, sample_weight=w, random_state=0)
    np.testing.assert_array_equal(np.asarray(got[1]), want[1])


def test_kmeansnd_with_no_iteration_gives_the_initial_centroids():
    points = generate_clusters(3, 20, random_state=0)
    start = points[:3]
    centroids, labels, iterations = KMeansND(start, points, max_iter=0).get_centroids()
    np.testing.assert_array_equal(centroids, start)
    np.testing.assert_array_equal(labels, assign_points_to_centroids(start, points))
    assert iterations == 0
    frames = list(KMeansND(start, points, max_iter=0).get_generator_func()())
    assert [f[2] for f in frames] == [0]
    with pytest.raises(ValueError, match="max_iter must be >= 0"):
        KMeansND(start, points, max_iter=-1)
