"""MiniBatchKMeans: scikit-learn's algorithm and random draws, so from the same initial
centres it follows scikit-learn's run to rounding; exact labels for every batch;
``partial_fit`` on every backend; no working copy of the data."""

from __future__ import annotations

import re
import tracemalloc
import warnings

import numpy as np
import pytest
from scipy import sparse
from sklearn.base import clone
from sklearn.cluster import MiniBatchKMeans as SKMiniBatchKMeans
from sklearn.datasets import make_blobs

from kmeans_gpu import MiniBatchKMeans

from .checks import nearest_exactly


@pytest.fixture
def blobs():
    X, _ = make_blobs(3000, n_features=5, centers=10, cluster_std=2.0, random_state=0)
    return X


PARAMS = [
    {},
    {"tol": 1e-3},
    {"max_no_improvement": None, "max_iter": 4},
    {"compute_labels": False},
    {"reassignment_ratio": 0.3, "batch_size": 40},
    {"init_size": 50, "batch_size": 300},
]


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("weighted", [False, True])
def test_fit_follows_sklearns_run(blobs, params, weighted, rng):
    """The same batches (drawn from the same RandomState in scikit-learn's order), the
    same steps, centres and labels, whatever stops the run."""
    init = blobs[:10].copy()
    w = rng.uniform(0.1, 2.0, size=blobs.shape[0]) if weighted else None
    options = {"batch_size": 200, **params}
    ours = MiniBatchKMeans(10, init=init, random_state=3, **options).fit(blobs, sample_weight=w)
    ref = SKMiniBatchKMeans(10, init=init, random_state=3, **options).fit(blobs, sample_weight=w)
    assert ours.n_steps_ == ref.n_steps_ and ours.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=1e-10)
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-10)
    if options.get("compute_labels", True):
        np.testing.assert_array_equal(ours.labels_, ref.labels_)
        np.testing.assert_array_equal(ours.labels_, nearest_exactly(blobs, ours.cluster_centers_))


def test_reassignment_happens_and_matches(blobs):
    """Centres started on one point get moved onto batch rows, as scikit-learn moves
    them (its RandomState draws the same rows)."""
    init = np.repeat(blobs[:1], 10, axis=0) + np.arange(10)[:, None] * 1e-9
    options = {"batch_size": 64, "random_state": 1, "max_iter": 3}
    ours = MiniBatchKMeans(10, init=init, **options).fit(blobs)
    ref = SKMiniBatchKMeans(10, init=init, **options).fit(blobs)
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=1e-10)
    assert len(np.unique(ours.labels_)) == 10


def test_sparse_fit_follows_sklearns_run(blobs):
    X = sparse.csr_matrix(np.where(blobs > 0, blobs, 0.0))
    init = X[:10].toarray()
    ours = MiniBatchKMeans(10, init=init, random_state=0, batch_size=100).fit(X)
    ref = SKMiniBatchKMeans(10, init=init, random_state=0, batch_size=100).fit(X)
    assert ours.n_steps_ == ref.n_steps_
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=1e-10)
    np.testing.assert_array_equal(ours.labels_, ref.labels_)


def test_partial_fit_follows_sklearn(blobs, rng):
    init = blobs[:10].copy()
    w = rng.uniform(0.1, 2.0, size=blobs.shape[0])
    ours = clone(MiniBatchKMeans(10, init=init, random_state=0, reassignment_ratio=0.05))
    ref = SKMiniBatchKMeans(10, init=init, random_state=0, reassignment_ratio=0.05)
    for start in range(0, blobs.shape[0], 250):
        part = slice(start, start + 250)
        ours.partial_fit(blobs[part], sample_weight=w[part])
        ref.partial_fit(blobs[part], sample_weight=w[part])
        np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=1e-10)
        np.testing.assert_array_equal(ours.labels_, ref.labels_)
        assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-10)
    assert ours.n_steps_ == ref.n_steps_ == 12


def test_every_backend(backend, blobs):
    """fit and partial_fit on each backend: outputs of its array type, labels exact for
    the centres, and the NumPy run's centres (the same batches)."""
    X = blobs.astype(np.float64)
    init = X[:10].copy()
    want = MiniBatchKMeans(10, init=init, random_state=0, batch_size=256).fit(X)
    est = MiniBatchKMeans(10, init=backend.asarray(init), random_state=0, batch_size=256)
    est.fit(backend.asarray(X))
    assert backend.owns(est.cluster_centers_) and backend.owns(est.labels_)
    centers = backend.to_numpy(est.cluster_centers_)
    np.testing.assert_allclose(centers, want.cluster_centers_, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(backend.to_numpy(est.labels_), nearest_exactly(X, centers))
    assert est.n_steps_ == want.n_steps_
    streamed = MiniBatchKMeans(10, init=backend.asarray(init), random_state=0)
    reference = MiniBatchKMeans(10, init=init, random_state=0)
    for start in range(0, 3000, 500):
        streamed.partial_fit(backend.asarray(X[start : start + 500]))
        reference.partial_fit(X[start : start + 500])
    assert backend.owns(streamed.cluster_centers_)
    np.testing.assert_allclose(
        backend.to_numpy(streamed.cluster_centers_), reference.cluster_centers_, rtol=1e-9
    )
    labels = backend.to_numpy(streamed.predict(backend.asarray(X)))
    np.testing.assert_array_equal(labels, nearest_exactly(X, reference.cluster_centers_))


def test_batches_of_several_libraries(blobs):
    """partial_fit takes the next batch from another array library: the centres move
    to it and come back as its type."""
    xp = pytest.importorskip("array_api_strict")
    est = MiniBatchKMeans(10, random_state=0).partial_fit(blobs[:1000])
    est.partial_fit(xp.asarray(blobs[1000:2000]))
    assert type(est.cluster_centers_).__module__.startswith("array_api_strict")
    est.partial_fit(sparse.csr_matrix(blobs[2000:]))
    assert isinstance(est.cluster_centers_, np.ndarray) and est.n_steps_ == 3


def test_float32(blobs):
    X = blobs.astype(np.float32)
    ours = MiniBatchKMeans(10, init=X[:10], random_state=0, batch_size=200).fit(X)
    ref = SKMiniBatchKMeans(10, init=X[:10], random_state=0, batch_size=200).fit(X)
    assert ours.cluster_centers_.dtype == np.float32
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, atol=1e-3)
    np.testing.assert_array_equal(ours.labels_, nearest_exactly(X, ours.cluster_centers_))


def test_fit_keeps_no_working_copy_of_the_data():
    """Only batches are gathered: a fit allocates a small fraction of X's size (the
    solver would otherwise keep a centred copy of all of it on NumPy)."""
    X = np.random.default_rng(0).normal(size=(200_000, 32)) + 5
    MiniBatchKMeans(16, random_state=0, max_iter=1).fit(X[:5000])  # imports and compiles
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        MiniBatchKMeans(
            16, random_state=0, max_iter=1, compute_labels=False, working_memory=1 << 22
        ).fit(X)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 0.15 * X.nbytes


def test_verbose_prints_sklearns_lines(blobs, capsys):
    MiniBatchKMeans(10, random_state=0, verbose=1, n_init=2, init="random").fit(blobs)
    out = capsys.readouterr().out
    assert "Init 1/2 with method random" in out and "Inertia for init 2/2" in out
    assert re.search(r"Minibatch step 2/\d+: mean batch inertia: \S+, ewa inertia: ", out)
    assert "Converged (lack of improvement in inertia)" in out


def test_inputs_are_never_modified(blobs, rng):
    X, w, init = blobs.copy(), rng.uniform(size=3000), blobs[:10].copy()
    copies = [X.copy(), w.copy(), init.copy()]
    est = MiniBatchKMeans(10, init=init, random_state=0).fit(X, sample_weight=w)
    est.partial_fit(X, sample_weight=w)
    for original, now in zip(copies, (X, w, init), strict=True):
        np.testing.assert_array_equal(now, original)


def test_init_size_warning_and_explicit_init_runs_once(blobs):
    with pytest.warns(RuntimeWarning, match="init_size=5 should be larger than n_clusters"):
        MiniBatchKMeans(10, init_size=5, random_state=0).fit(blobs)
    with pytest.warns(RuntimeWarning, match="performing only one init"):
        MiniBatchKMeans(10, init=blobs[:10], n_init=3).fit(blobs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MiniBatchKMeans(10, init=blobs[:10], n_init=1, random_state=0).fit(blobs)
