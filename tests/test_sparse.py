"""SciPy sparse input: computed sparse on the NumPy backend (never densified), with the
guarantees of dense input (exact labels, float64 inertia, the same bits whatever the
threads and working memory), and scikit-learn's sparse Lloyd result from the same
initial centres."""

from __future__ import annotations

import math
import tracemalloc
import warnings

import numpy as np
import pytest
from scipy import sparse
from sklearn.cluster import KMeans as SKKMeans
from sklearn.feature_extraction.text import TfidfTransformer

from kmeans_gpu import KMeans, MiniBatchKMeans, kmeans, kmeans_plusplus
from kmeans_gpu.backends import _numpy
from kmeans_gpu.backends._numpy import NumpyBackend
from kmeans_gpu.backends._sparse import SparseBackend

from .checks import nearest_exactly

FORMATS = [sparse.csr_matrix, sparse.csr_array, sparse.csc_matrix, sparse.coo_array]


def tfidf(n_docs: int, n_terms: int, seed: int) -> sparse.csr_matrix:
    """A TF-IDF matrix of documents drawn from a few topics, each favouring its own
    words over a Zipf-like vocabulary (as text clustering sees)."""
    rng = np.random.RandomState(seed)
    topics = 8
    zipf = 1.0 / np.arange(1, n_terms + 1)
    favoured = np.stack([rng.permutation(zipf) for _ in range(topics)]) + zipf
    favoured /= favoured.sum(axis=1, keepdims=True)
    rows, cols = [], []
    for doc in range(n_docs):
        words = rng.choice(n_terms, size=rng.randint(20, 80), p=favoured[doc % topics])
        rows += [doc] * len(words)
        cols += list(words)
    counts = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_docs, n_terms))
    return TfidfTransformer().fit_transform(counts)


def _exact_objective(dense: np.ndarray, centers: np.ndarray, labels: np.ndarray) -> float:
    diff = dense.astype(np.float64) - centers.astype(np.float64)[labels]
    return math.fsum((diff * diff).ravel())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("fmt", FORMATS)
def test_matches_sklearn_sparse_lloyd(dtype, fmt, rng):
    X = tfidf(600, 400, 0).astype(dtype)
    init = X[rng.choice(600, 8, replace=False)].toarray()
    w = rng.uniform(0.5, 2.0, size=600)
    for weights in (None, w):
        ref = SKKMeans(8, init=init, n_init=1).fit(X, sample_weight=weights)
        ours = KMeans(8, init=init).fit(fmt(X), sample_weight=weights)
        np.testing.assert_array_equal(ours.labels_, ref.labels_)
        assert ours.n_iter_ == ref.n_iter_ and ours.backend_ == "numpy"
        tol = 1e-10 if dtype == np.float64 else 1e-5
        np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, atol=tol)
        assert ours.inertia_ == pytest.approx(ref.inertia_, rel=tol)
        assert ours.cluster_centers_.dtype == dtype and isinstance(ours.labels_, np.ndarray)
        dense = X.toarray()
        np.testing.assert_array_equal(ours.labels_, nearest_exactly(dense, ours.cluster_centers_))
        objective = _exact_objective(dense, ours.cluster_centers_, ours.labels_)
        if weights is None:
            assert ours.inertia_ == pytest.approx(objective, rel=1e-12)


def test_sparse_and_dense_fits_agree(rng):
    """The same data dense or sparse: the same labels and iterations, centres equal to
    rounding (the dense fit centres the data, the sparse one cannot); predict gives the
    training labels whichever form the model was fitted on and is asked about."""
    X = tfidf(500, 300, 1)
    init = X[:6].toarray()
    dense = KMeans(6, init=init).fit(X.toarray())
    sparse_fit = KMeans(6, init=init).fit(X)
    np.testing.assert_array_equal(sparse_fit.labels_, dense.labels_)
    assert sparse_fit.n_iter_ == dense.n_iter_
    np.testing.assert_allclose(sparse_fit.cluster_centers_, dense.cluster_centers_, atol=1e-14)
    for model in (dense, sparse_fit):
        np.testing.assert_array_equal(model.predict(X), model.labels_)
        np.testing.assert_array_equal(model.predict(X.toarray()), model.labels_)
        np.testing.assert_allclose(model.transform(X), model.transform(X.toarray()), rtol=1e-12)
        assert model.score(X) == pytest.approx(model.score(X.toarray()), rel=1e-12)
    ref = SKKMeans(6, init=init, n_init=1).fit(X)
    np.testing.assert_allclose(sparse_fit.transform(X), ref.transform(X), rtol=1e-10)
    assert sparse_fit.score(X) == pytest.approx(ref.score(X), rel=1e-10)


def test_sums_are_the_dense_sums_bit_for_bit(rng):
    """Per-cluster sums of a sparse block are bitwise the dense path's with the origin
    at 0 (each cluster's rows in row order; stored zeros and implicit ones add
    nothing), weighted and scaled too."""
    X = sparse.random(3000, 40, density=0.1, format="csr", random_state=3, dtype=np.float32)
    labels = rng.randint(0, 7, size=3000).astype(np.int32)
    w = rng.uniform(0, 3, size=3000)
    origin = (np.zeros(40), 0)
    for weights, exponent in ((None, 0), (w, 0), (w, -5), (None, 9)):
        got = SparseBackend().cluster_sums(X, (origin[0], exponent), labels, weights, 7)
        want = NumpyBackend().cluster_sums(X.toarray(), (origin[0], exponent), labels, weights, 7)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)


def test_distances_of_rows_near_their_centre_are_computed_dense(rng):
    """‖x − c‖² from the stored entries and the rest of ‖c‖², except where that
    subtraction could cost more than a few roundings (rows close to a centre of large
    norm): those rows are made dense and give the dense path's bits."""
    base = rng.normal(size=(200, 30)) + 50.0
    X = sparse.csr_array(np.where(rng.uniform(size=base.shape) < 0.3, 0.0, base))
    centers = X[:5].toarray() + rng.normal(scale=1e-3, size=(5, 30))
    labels = rng.randint(0, 5, size=200)
    labels[:5] = np.arange(5)  # rows a hair from their centre
    got = SparseBackend().sq_distances(X, centers, labels, 0)
    want = NumpyBackend().sq_distances(X.toarray(), centers, labels, 0)
    np.testing.assert_array_equal(got[:5], want[:5])
    np.testing.assert_allclose(got, want, rtol=1e-13)
    exact = np.array(
        [_exact_objective(X[[i]].toarray(), centers[[j]], [0]) for i, j in enumerate(labels)]
    )
    np.testing.assert_allclose(got, exact, rtol=1e-14)


def test_far_from_the_origin_and_tight_clusters(rng):
    """Sparse rows far from the origin around tight centres (where ‖x‖² + ‖c‖² − 2x·c
    cancels): labels exact, inertia the exact objective."""
    dense = rng.normal(scale=1e-3, size=(400, 6)) + np.repeat(
        rng.uniform(1e3, 2e3, (4, 6)), 100, 0
    )
    dense[:, 3] = 0.0
    X = sparse.csr_matrix(dense)
    est = KMeans(4, random_state=0).fit(X)
    np.testing.assert_array_equal(est.labels_, nearest_exactly(dense, est.cluster_centers_))
    objective = _exact_objective(dense, est.cluster_centers_, est.labels_)
    assert est.inertia_ == pytest.approx(objective, rel=1e-12)


@pytest.mark.parametrize("magnitude", [1e150, 1e-150])
def test_extreme_magnitudes(rng, magnitude):
    X = tfidf(300, 100, 2)
    unit = KMeans(5, random_state=0).fit(X)
    scaled = KMeans(5, random_state=0).fit(X * magnitude)
    np.testing.assert_array_equal(scaled.labels_, unit.labels_)
    assert scaled.inertia_ == pytest.approx(unit.inertia_ * magnitude**2, rel=1e-12)
    assert np.isfinite(scaled.cluster_centers_).all()


def test_the_same_bits_whatever_the_threads_and_working_memory(rng, monkeypatch):
    X = tfidf(9000, 500, 3)  # several sum blocks and chunks
    first = KMeans(12, random_state=0, n_init=2).fit(X)
    small = KMeans(12, random_state=0, n_init=2, working_memory=1 << 16).fit(X)
    monkeypatch.setattr(_numpy, "effective_threads", lambda: 1)
    alone = KMeans(12, random_state=0, n_init=2).fit(X)
    for other in (small, alone):
        np.testing.assert_array_equal(other.cluster_centers_, first.cluster_centers_)
        np.testing.assert_array_equal(other.labels_, first.labels_)
        assert other.inertia_ == first.inertia_


def test_data_is_never_densified():
    """A matrix whose dense form would take 16 GB fits in a small fraction of that:
    sparse products, sparse sums, no n × d array."""
    n, d, per_row = 20_000, 100_000, 20
    rng = np.random.RandomState(0)
    columns = rng.randint(0, d, size=n * per_row)
    indptr = np.arange(0, n * per_row + 1, per_row)
    X = sparse.csr_array((rng.uniform(size=n * per_row), columns, indptr), shape=(n, d))
    tracemalloc.start()
    try:
        est = KMeans(8, random_state=0, max_iter=4).fit(X)
        est.predict(X), est.score(X), kmeans_plusplus(X, 8, random_state=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 400 * 2**20  # the dense matrix: 16 GB
    assert est.cluster_centers_.shape == (8, d)


def test_callers_matrix_is_never_modified(rng):
    """A CSR matrix with unsorted and duplicate entries (not canonical) is left exactly
    as it was; its duplicates count as their sum, as scikit-learn counts them."""
    data = rng.uniform(size=50)
    rows = rng.randint(0, 20, size=50)
    cols = rng.randint(0, 6, size=50)
    X = sparse.csr_matrix((data, cols, np.searchsorted(np.sort(rows), np.arange(21))), (20, 6))
    X.has_sorted_indices = False
    before = (X.data.copy(), X.indices.copy(), X.indptr.copy())
    w = rng.uniform(0.5, 1.5, size=20)
    est = KMeans(3, random_state=0).fit(X, sample_weight=w)
    est.predict(X), est.transform(X), est.score(X, sample_weight=w)
    kmeans(X, 3, random_state=0), kmeans_plusplus(X, 3, random_state=0)
    MiniBatchKMeans(3, random_state=0, batch_size=8).fit(X).partial_fit(X)
    for original, now in zip(before, (X.data, X.indices, X.indptr), strict=True):
        np.testing.assert_array_equal(now, original)
    canonical = X.copy()
    canonical.sum_duplicates()
    again = KMeans(3, random_state=0).fit(canonical, sample_weight=w)
    np.testing.assert_array_equal(again.cluster_centers_, est.cluster_centers_)


def test_kmeans_plusplus_and_random_init_on_sparse_data(rng):
    X = tfidf(400, 200, 4)
    centers, indices = kmeans_plusplus(X, 6, random_state=0)
    assert isinstance(centers, np.ndarray) and centers.shape == (6, 200)
    np.testing.assert_array_equal(centers, X[indices].toarray())
    _, dense_indices = kmeans_plusplus(X.toarray(), 6, random_state=0)
    assert len(set(indices.tolist())) == 6 and len(set(dense_indices.tolist())) == 6
    for init in ("random", "k-means++", lambda data, k, random_state: data[:k].toarray()):
        est = KMeans(6, init=init, n_init=2, random_state=0).fit(X)
        np.testing.assert_array_equal(
            est.labels_, nearest_exactly(X.toarray(), est.cluster_centers_)
        )


def test_integer_and_boolean_sparse_become_float64(rng):
    X = sparse.random(100, 10, density=0.3, format="csr", random_state=1)
    for data in ((X * 10).astype(np.int64), (X > 0.5).astype(bool)):
        est = KMeans(3, random_state=0).fit(data)
        assert est.cluster_centers_.dtype == np.float64
        ref = KMeans(3, random_state=0).fit(data.astype(np.float64))
        np.testing.assert_array_equal(est.labels_, ref.labels_)


def test_text_clustering_speed_and_result_against_sklearn():
    """TF-IDF of 3,000 documents: the same clustering as scikit-learn from the same
    initial centres, in at most its time (generous bound: CI machines vary)."""
    import time

    X = tfidf(3000, 5000, 5)
    init = X[:20].toarray()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        ref = SKKMeans(20, init=init, n_init=1, max_iter=30).fit(X)
        theirs = time.perf_counter() - start
        start = time.perf_counter()
        ours = KMeans(20, init=init, max_iter=30).fit(X)
        mine = time.perf_counter() - start
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    assert ours.n_iter_ == ref.n_iter_
    assert mine < 3 * theirs + 0.5
