"""The public API: estimator methods, functional API, initialisation, numerics."""

from __future__ import annotations

import itertools
import logging
import re
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.estimator_checks import check_estimator

from kmeans_gpu import KMeans, MiniBatchKMeans, kmeans, kmeans_plusplus
from kmeans_gpu._lloyd import lloyd, run_to_end
from kmeans_gpu._problem import make_problem
from kmeans_gpu.backends import get_backend

EXPECTED_FAILURES = {
    # The same two scikit-learn declares for its own KMeans and MiniBatchKMeans: weights
    # of k are not equivalent to k repeated samples, because the random draws (the
    # initialisation, the batches) see a different sample.
    "check_sample_weight_equivalence_on_dense_data": "random draws see a different sample",
    "check_sample_weight_equivalence_on_sparse_data": "random draws see a different sample",
}


@pytest.mark.parametrize("estimator", [KMeans, MiniBatchKMeans])
def test_check_estimator(estimator):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_estimator(
            estimator(n_clusters=2, n_init=2, max_iter=5),
            expected_failed_checks=EXPECTED_FAILURES,
        )


@pytest.mark.parametrize("estimator", [KMeans, MiniBatchKMeans])
def test_check_param_validation(estimator):
    """Every parameter has a constraint, and a bad one gets scikit-learn's message from
    every fit method."""
    from sklearn.utils.estimator_checks import check_param_validation

    check_param_validation(estimator.__name__, estimator(n_clusters=2))


def test_dtypes(backend, rng):
    X = rng.normal(size=(80, 3))
    for dtype in (np.float32, np.float64):
        est = KMeans(3, random_state=0).fit(backend.asarray(X, dtype=dtype))
        assert backend.to_numpy(est.cluster_centers_).dtype == dtype
        assert backend.to_numpy(est.transform(backend.asarray(X, dtype=dtype))).dtype == dtype
        assert backend.to_numpy(est.labels_).dtype == np.int32
    ints = backend.asarray((X * 10).astype(np.int64))
    assert (
        backend.to_numpy(KMeans(3, random_state=0).fit(ints).cluster_centers_).dtype == np.float64
    )


def test_estimator_methods_agree(backend, rng):
    X = backend.asarray(rng.normal(size=(200, 4)))
    est = KMeans(5, random_state=1, n_init=3)
    labels = est.fit_predict(X)
    np.testing.assert_array_equal(backend.to_numpy(labels), backend.to_numpy(est.predict(X)))
    dist = backend.to_numpy(est.transform(X))
    assert dist.shape == (200, 5)
    np.testing.assert_array_equal(dist.argmin(axis=1), backend.to_numpy(labels))
    assert est.score(X) == pytest.approx(-est.inertia_, rel=1e-12)
    np.testing.assert_allclose(backend.to_numpy(clone(est).fit_transform(X)), dist)
    assert est.n_features_in_ == 4 and est.n_iter_ >= 1
    assert list(est.get_feature_names_out()) == [f"kmeans{i}" for i in range(5)]


def test_random_state_reproducible(backend, rng):
    X = backend.asarray(rng.normal(size=(300, 3)))
    for init in ("k-means++", "random"):
        a = KMeans(6, init=init, random_state=42).fit(X)
        b = KMeans(6, init=init, random_state=42).fit(X)
        backend.assert_same_run(a.cluster_centers_, b.cluster_centers_)
        assert a.n_iter_ == b.n_iter_


def test_n_init_keeps_the_best_run(rng):
    X = rng.normal(size=(300, 2))
    single = [KMeans(8, init="random", n_init=1, random_state=s).fit(X).inertia_ for s in range(5)]
    best = KMeans(8, init="random", n_init=10, random_state=0).fit(X).inertia_
    assert best <= min(single) + 1e-9 or best <= np.median(single)
    with pytest.warns(RuntimeWarning, match="performing only one init"):
        KMeans(2, init=X[:2], n_init=3).fit(X)


def test_kmeans_plusplus(backend, rng):
    X = rng.normal(size=(500, 3))
    w = np.ones(500)
    w[100:] = 0.0  # only the first 100 rows can be chosen
    centers, indices = kmeans_plusplus(
        backend.asarray(X), 8, sample_weight=backend.asarray(w), random_state=0
    )
    idx = backend.to_numpy(indices)
    assert len(set(idx.tolist())) == 8 and (idx < 100).all()
    np.testing.assert_array_equal(backend.to_numpy(centers), X[idx])
    _again, idx2 = kmeans_plusplus(
        backend.asarray(X), 8, sample_weight=backend.asarray(w), random_state=0
    )
    np.testing.assert_array_equal(backend.to_numpy(idx2), idx)


def test_kmeans_plusplus_is_the_same_in_any_blocks_and_within_them():
    """k-means++ runs block by block: the same centres whatever the workspace, and a
    peak memory within the workspace and a few n-vectors (tracemalloc)."""
    import tracemalloc

    from kmeans_gpu._init import kmeans_plusplus_working

    xp = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(3)
    n, d, k = 20_000, 16, 6
    data = xp.asarray((rng.normal(size=(n, d)) + 100).astype(np.float32))

    def seeds(workspace):
        problem = make_problem(get_backend(data), data, None, working_memory=workspace)
        problem.squared_row_norms  # noqa: B018 (made before the peak)
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            indices = kmeans_plusplus_working(problem, k, np.random.RandomState(0))
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        return np.asarray(indices), peak

    every, _ = seeds(1 << 30)  # one block
    for workspace in (100_000, 1_000_000):
        indices, peak = seeds(workspace)
        np.testing.assert_array_equal(indices, every)
        assert peak < workspace + 6 * n * 8


def test_kmeans_plusplus_spreads_centres(rng):
    """On well-separated blobs greedy k-means++ picks one seed per blob."""
    centres = np.array([[0, 0], [100, 0], [0, 100], [100, 100], [50, 50]], dtype=float)
    X = np.concatenate([c + rng.normal(size=(50, 2)) for c in centres])
    for seed in range(10):
        _, idx = kmeans_plusplus(X, 5, random_state=seed)
        assert sorted(np.asarray(idx) // 50) == [0, 1, 2, 3, 4]


def test_callable_init_sees_the_callers_data(rng):
    X = rng.normal(size=(100, 2)) + 1000.0
    seen = {}

    def init(data, n_clusters, random_state):
        seen["data"] = data
        return data[:n_clusters]

    est = KMeans(3, init=init, n_init=1).fit(X)
    np.testing.assert_array_equal(seen["data"], X)
    np.testing.assert_array_equal(est.labels_, KMeans(3, init=X[:3]).fit(X).labels_)


def test_empty_cluster_keep_vs_relocate(rng):
    X = rng.normal(size=(200, 2))
    init = np.vstack([X[:3], [[50.0, 50.0]]])
    with pytest.warns(ConvergenceWarning, match=r"distinct clusters \(3\)"):
        keep = KMeans(4, init=init, empty_cluster="keep", tol=0).fit(X)
    np.testing.assert_array_equal(keep.cluster_centers_[3], [50.0, 50.0])
    relocate = KMeans(4, init=init).fit(X)
    assert np.abs(relocate.cluster_centers_[3]).max() < 10
    assert relocate.inertia_ < keep.inertia_


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("magnitude", ["huge", "tiny"])
def test_extreme_magnitudes_stay_finite(backend, rng, dtype, magnitude):
    # far beyond the range where squares (float32) or squared norms of unscaled data
    # would be safe, yet with an inertia that float64 can represent
    exponent = {np.float32: 30, np.float64: 152}[dtype]
    factor = 10.0**exponent if magnitude == "huge" else 10.0**-exponent
    base = rng.normal(size=(120, 3))
    X = backend.asarray(base * factor, dtype=dtype)
    est = KMeans(4, random_state=0).fit(X)
    centers = backend.to_numpy(est.cluster_centers_)
    assert np.isfinite(centers).all() and np.isfinite(est.inertia_) and est.inertia_ > 0
    # the same partition as the data at unit scale, and inertia scaled by factor²
    unit = KMeans(4, random_state=0).fit(backend.asarray(base, dtype=dtype))
    np.testing.assert_array_equal(backend.to_numpy(est.labels_), backend.to_numpy(unit.labels_))
    assert est.inertia_ == pytest.approx(unit.inertia_ * factor**2, rel=1e-4)


def test_inertia_does_not_overflow_float32(rng):
    X = (rng.normal(size=(1000, 2)) * 1e19).astype(np.float32)  # squares exceed float32
    _, _, inertia, _ = kmeans(X, 2, random_state=0)
    assert np.isfinite(inertia) and inertia > float(np.finfo(np.float32).max)


def test_identical_points_warn_and_stay_finite(backend):
    X = backend.asarray(np.full((20, 3), 7.0))
    with pytest.warns(
        ConvergenceWarning, match=r"Number of distinct clusters \(1\) found smaller"
    ):
        est = KMeans(3, random_state=0).fit(X)
    np.testing.assert_array_equal(backend.to_numpy(est.cluster_centers_)[0], [7.0, 7.0, 7.0])
    assert est.inertia_ == 0.0


def test_verbose_logs_iterations(rng, caplog):
    with caplog.at_level(logging.INFO, logger="kmeans_gpu"):
        KMeans(3, verbose=1, random_state=0).fit(rng.normal(size=(50, 2)))
    assert "iteration 1:" in caplog.text and "labels changed" in caplog.text


@pytest.mark.parametrize("threads", [1, 2, 8])
def test_chunks_are_aligned_runs_of_blocks_about_two_per_thread(threads, monkeypatch):
    """On NumPy: about two chunks per thread (at most max_chunk_rows), each a power-of-two
    run of the fixed sum blocks starting at a multiple of its size (a node of fold's
    tree), together covering the rows once."""
    backend = get_backend("numpy")
    monkeypatch.setattr(type(backend), "concurrency", lambda self: threads)
    n, block = 1_000_003, backend.sum_block_rows
    problem = make_problem(backend, np.zeros((n, 2), dtype=np.float32), None)
    chunks = problem.chunks(12)
    size = chunks[0][1] - chunks[0][0]
    blocks = size // block
    assert size % block == 0 and blocks & (blocks - 1) == 0
    assert [a for a, _ in chunks] == list(range(0, n, size)) and chunks[-1][1] == n
    assert size <= backend.max_chunk_rows
    if size < backend.max_chunk_rows:
        assert 2 * threads <= len(chunks) <= 4 * threads + 1


def test_memory_is_bounded_by_chunks(rng, monkeypatch):
    """No block of n × k: every product of rows and centres fits the working memory
    (the generic path) or the NumPy backend's cache-sized blocks."""
    from kmeans_gpu.backends import _numpy

    xp = pytest.importorskip("array_api_strict")
    seen: list[int] = []
    matmul = np.matmul

    def recording(a, b, *args, **kwargs):
        seen.append(a.shape[0] * b.shape[-1] * a.itemsize)
        return matmul(a, b, *args, **kwargs)

    X = rng.normal(size=(5000, 4))
    budget = 64 * 1024
    generic = get_backend(xp.asarray(X))
    original = type(generic).nearest_two

    def recorded(self, rows, centers, centers_sq):
        seen.append(rows.shape[0] * centers.shape[0] * 8)
        return original(self, rows, centers, centers_sq)

    monkeypatch.setattr(type(generic), "nearest_two", recorded)
    capped = KMeans(16, random_state=0, working_memory=budget).fit(xp.asarray(X))
    assert max(seen) <= budget and len(seen) > 5000 * 16 * 8 // budget
    monkeypatch.undo()
    whole = KMeans(16, random_state=0, backend="numpy").fit(X)
    np.testing.assert_array_equal(np.asarray(capped.labels_), whole.labels_)
    seen.clear()
    monkeypatch.setattr(_numpy.np, "matmul", recording)
    KMeans(300, init="random", n_init=1, backend="numpy", max_iter=3).fit(np.vstack([X] * 8))
    assert seen and max(seen) <= _numpy.BLOCK_BYTES


def test_inertia_never_increases_across_iterations(backend, rng):
    X = backend.asarray(rng.normal(size=(400, 3)))
    problem = make_problem(get_backend(X), X, None)
    xp = problem.backend.xp
    start = xp.take(X, xp.asarray(np.arange(10), device=problem.device), axis=0)
    from kmeans_gpu._assign import inertia

    values = []

    def record():
        steps = lloyd(problem, start, max_iter=100, tol=0.0)
        while True:
            step = next(steps)  # new centres with the labels they were computed from
            values.append(inertia(problem, step.centers, step.labels))
            if step.converged:
                return run_to_end(steps)

    result = record()
    assert len(values) > 2
    assert all(b <= a * (1 + 1e-12) for a, b in itertools.pairwise(values))
    assert result.inertia <= values[-1] * (1 + 1e-12)


def test_only_a_host_backend_keeps_a_second_copy_of_the_data():
    """Without a working copy (CuPy, array API libraries) the data exist once: a fit
    from given centres allocates a small fraction of the data's size (chunks, labels),
    not a centred copy; rows made per chunk are bitwise those of the copy."""
    import tracemalloc

    xp = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(60_000, 64)) + 5).astype(np.float32)
    init = X[:8].copy()

    def peak_fraction(data, start):
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            kmeans(data, 8, init=start, max_iter=3, working_memory=1 << 20)
            return (tracemalloc.get_traced_memory()[1] - base) / X.nbytes
        finally:
            tracemalloc.stop()

    assert (fraction := peak_fraction(xp.asarray(X), xp.asarray(init))) < 0.25, fraction
    assert peak_fraction(X, init) > 1.0  # NumPy keeps its centred copy (the test can fail)
    kept = make_problem(get_backend("numpy"), X, None)
    lazy = make_problem(
        get_backend(xp.asarray(X)), xp.asarray(X), None, center=xp.asarray(kept.mean)
    )
    assert lazy.X_working is None and kept.X_working is not None
    for a, b in ((0, 7), (1000, 5000), (59_990, 60_000)):
        np.testing.assert_array_equal(np.asarray(lazy.rows(a, b)), kept.rows(a, b))
    assert lazy.variance == pytest.approx(kept.variance, rel=1e-6)


@pytest.mark.gpu
def test_on_several_gpus_the_work_runs_where_the_data_are():
    """Data on GPU 1 while GPU 0 is current: the fit, predict and the frame stream run
    on GPU 1 (CuPy launches on the current device) and give the NumPy fit's labels."""
    from kmeans_gpu.backends import _cupy_has_device

    if not _cupy_has_device():
        pytest.skip("CuPy with a CUDA device is not available")
    import cupy as cp

    if cp.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two CUDA devices")
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(5_000, 8)) + rng.integers(0, 4, size=(5_000, 1))).astype(np.float32)
    want = KMeans(6, random_state=0, backend="numpy").fit(X)
    with cp.cuda.Device(1):
        X1 = cp.asarray(X)
    with cp.cuda.Device(0):
        est = KMeans(6, random_state=0).fit(X1)
        assert est.cluster_centers_.device.id == 1 and est.labels_.device.id == 1
        np.testing.assert_array_equal(cp.asnumpy(est.labels_), want.labels_)
        np.testing.assert_array_equal(cp.asnumpy(est.predict(X1)), want.labels_)
        frames = list(est.iter_frames(X1))
        np.testing.assert_array_equal(frames[-1].labels, want.labels_)


@pytest.mark.gpu
def test_cupy_fit_holds_at_most_a_quarter_of_the_data_or_the_workspace():
    """The memory budget on the device: extra GPU memory during a fit at most 25 %
    of the data's size or the configured workspace, whichever is larger."""
    from kmeans_gpu.backends import _cupy_has_device

    if not _cupy_has_device():
        pytest.skip("CuPy with a CUDA device is not available")
    import cupy as cp

    from benchmarks.harness import device_peak_bytes

    X = cp.random.default_rng(0).standard_normal((2_000_000, 64), dtype=cp.float32) + 3
    init = X[:: 2_000_000 // 256][:256].copy()
    for workspace in (16 << 20, 256 << 20):
        (centers, labels, *_), peak = device_peak_bytes(
            lambda w=workspace: kmeans(X, 256, init=init, max_iter=3, working_memory=w)
        )
        assert 0 < peak <= max(X.nbytes // 4, workspace), (workspace, peak)
        assert labels.shape == (2_000_000,) and centers.shape == (256, 64)


@pytest.mark.parametrize("tol", [0.0, 1e-2])
def test_verbose_prints_sklearns_lines(rng, capsys, tol):
    X = rng.normal(size=(500, 3))
    KMeans(4, init="random", n_init=1, random_state=0, tol=tol, verbose=1).fit(X)
    out = capsys.readouterr().out
    assert out.startswith("Initialization complete\nIteration 0, inertia ")
    if tol == 0:
        assert re.search(r"Converged at iteration \d+: strict convergence\.", out)
    else:
        assert re.search(r"Converged at iteration \d+: center shift \S+ within tolerance", out)
    *_, n_iter = kmeans(X, 4, init="random", n_init=1, random_state=0, tol=tol)
    assert out.count("Iteration ") == n_iter
    assert KMeans(4, random_state=0).fit(X) and capsys.readouterr().out == ""


def test_elkan_and_copy_x_give_the_lloyd_result(rng):
    X = rng.normal(size=(300, 4))
    lloyd = KMeans(5, random_state=0).fit(X)
    for params in ({"algorithm": "elkan"}, {"copy_x": False}):
        other = KMeans(5, random_state=0, **params).fit(X)
        np.testing.assert_array_equal(other.cluster_centers_, lloyd.cluster_centers_)
        np.testing.assert_array_equal(other.labels_, lloyd.labels_)
    centers, *_ = kmeans(X, 5, random_state=0, algorithm="elkan", copy_x=False)
    np.testing.assert_array_equal(centers, lloyd.cluster_centers_)
    with pytest.warns(RuntimeWarning, match="algorithm='elkan' doesn't make sense"):
        KMeans(1, algorithm="elkan").fit(X)


def test_kmeans_plusplus_checks_x_squared_norms(rng):
    X = rng.normal(size=(50, 3))
    norms = (X * X).sum(axis=1)
    _, with_norms = kmeans_plusplus(X, 4, x_squared_norms=norms, random_state=0)
    _, without = kmeans_plusplus(X, 4, random_state=0)
    np.testing.assert_array_equal(with_norms, without)
    with pytest.raises(ValueError, match="The length of x_squared_norms 49 should be equal"):
        kmeans_plusplus(X, 4, x_squared_norms=norms[:-1])


@pytest.mark.parametrize("estimator", [KMeans, MiniBatchKMeans])
def test_feature_names_of_a_data_frame(estimator, rng):
    """Fitted on a data frame, the estimator knows its column names and refuses a frame
    whose columns differ, where it would otherwise give wrong labels silently."""
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"a": [0.0, 0.1, 10.0, 10.1], "b": [5.0, 5.1, 5.0, 5.1]})
    est = estimator(2, random_state=0).fit(df)
    assert list(est.feature_names_in_) == ["a", "b"]
    np.testing.assert_array_equal(est.predict(df), est.labels_)
    with pytest.raises(ValueError, match="The feature names should match"):
        est.predict(df[["b", "a"]])
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        est.predict(df.to_numpy())
    assert not hasattr(estimator(2, random_state=0).fit(df.to_numpy()), "feature_names_in_")


@pytest.mark.parametrize("shape", [(5000, 40), (4096, 20), (3000, 3), (700, 64)])
def test_set_up_reductions_match_the_plain_ones(backend, shape, rng):
    """The column extremes taken over groups of rows, and the column sums taken as a
    product where the backend has no fixed blocks, are the plain reductions' (the
    extremes exactly; the sums to rounding)."""
    from kmeans_gpu._problem import Problem, _column_extremes
    from kmeans_gpu.backends import Backend

    X = backend.asarray(rng.normal(size=shape) * 10.0 ** rng.randint(-3, 4, size=shape))
    xp = get_backend(X).xp
    high, low = _column_extremes(xp, X)
    np.testing.assert_array_equal(backend.to_numpy(high), backend.to_numpy(xp.max(X, axis=0)))
    np.testing.assert_array_equal(backend.to_numpy(low), backend.to_numpy(xp.min(X, axis=0)))
    plain = Backend(xp, "plain")  # no fixed blocks: one product per range
    problem = Problem(plain, X, None, xp.zeros(shape[1], dtype=xp.float64), 0, 0.0, 1 << 20)
    sums = problem.block_sums(0, shape[0], X)
    np.testing.assert_allclose(
        backend.to_numpy(sums), backend.to_numpy(xp.sum(X, axis=0)), rtol=1e-12, atol=1e-9
    )
