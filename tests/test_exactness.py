"""Exact labels, bitwise reproducibility, overflow safety and bounded memory, on the
cases adversarial testing found (each one a reproducer that used to give a silently
wrong result)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest

import kmeans_gpu as kg
from kmeans_gpu import KMeans, iter_frames, kmeans

from .checks import nearest_exactly

ROOT = Path(__file__).resolve().parents[1]


def test_a_far_outlier_does_not_blur_the_other_labels(backend):
    X = backend.asarray(np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [1e10]]))
    init = backend.asarray(np.array([[0.0], [10.0], [1e10]]))
    est = KMeans(3, init=init, n_init=1).fit(X)
    np.testing.assert_array_equal(backend.to_numpy(est.labels_), [0, 0, 0, 1, 1, 2])
    np.testing.assert_array_equal(backend.to_numpy(est.predict(X)), [0, 0, 0, 1, 1, 2])
    np.testing.assert_array_equal(backend.to_numpy(est.cluster_centers_), [[1.0], [10.5], [1e10]])
    assert est.inertia_ == 2.5 and est.score(X) == -2.5


def test_float32_follows_the_float64_trajectory():
    """Labels exact for centres that round alike: every frame of the float32 run has
    the float64 run's labels (the fast float32 scores alone left it at iteration 8)."""
    r = np.random.default_rng(7)
    n = 20_000
    X = r.normal(size=(n, 16)) + r.integers(0, 30, (n, 1))
    init = X[:32]
    double = list(iter_frames(X, init, max_iter=60, empty_cluster="relocate"))
    single = list(
        iter_frames(
            X.astype(np.float32), init.astype(np.float32), max_iter=60, empty_cluster="relocate"
        )
    )
    assert len(single) == len(double) > 20
    for a, b in zip(double, single, strict=True):
        np.testing.assert_array_equal(b.labels, a.labels)


@pytest.mark.parametrize("offset", [1e7, -3e5])
def test_float32_far_from_the_origin_labels_match_the_centres(backend, offset):
    X = (np.random.default_rng(0).normal(size=(5000, 3)) + offset).astype(np.float32)
    est = KMeans(5, random_state=0).fit(backend.asarray(X))
    centers = backend.to_numpy(est.cluster_centers_)
    labels = backend.to_numpy(est.labels_)
    np.testing.assert_array_equal(labels, nearest_exactly(X, centers))
    np.testing.assert_array_equal(backend.to_numpy(est.predict(backend.asarray(X))), labels)
    objective = ((X.astype(np.float64) - centers.astype(np.float64)[labels]) ** 2).sum()
    assert est.inertia_ == pytest.approx(objective, rel=1e-6)


def test_values_near_the_float32_limit_give_finite_results_without_warnings(backend):
    X = backend.asarray(np.array([[-3e38], [3e38], [2.9e38]], np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "overflow encountered"
        centers, labels, inertia, _ = kmeans(X, 2, random_state=0)
        est = KMeans(2, random_state=0).fit(X)
        np.testing.assert_array_equal(backend.to_numpy(est.predict(X)), backend.to_numpy(labels))
        with pytest.raises(ValueError, match="distances exceed the range of X's dtype"):
            est.transform(X)  # 6e38 apart: no float32 can say it
    centers = backend.to_numpy(centers)
    assert np.isfinite(centers).all() and np.isfinite(inertia)
    assert sorted(centers.ravel().tolist()) == [np.float32(-3e38), np.float32(2.95e38)]
    assert inertia == pytest.approx(2 * (0.05e38) ** 2, rel=1e-5)
    np.testing.assert_array_equal(
        backend.to_numpy(labels), nearest_exactly(backend.to_numpy(X), centers)
    )


def test_data_whose_spread_float64_cannot_hold_is_refused():
    X = np.array([[-1.7e308], [1.7e308], [1.6e308]])
    with pytest.raises(ValueError, match="exceeds float64's range"):
        kmeans(X, 2, random_state=0)
    with pytest.raises(ValueError, match="overflow float64"):
        kg.generate_clusters(2, 3, 1e308, ((-1, 1),))


def test_exact_ties_go_to_the_lowest_index(backend):
    """Every point of this grid is equidistant from two centres."""
    X = backend.asarray(np.array([[0.0, 0.0], [2.0, 0.0], [1.0, 1.0], [1.0, -1.0]] * 5))
    init = backend.asarray(np.array([[1.0, 0.0], [1.0, 0.0], [5.0, 5.0]]))
    labels = backend.to_numpy(KMeans(3, init=init, n_init=1, empty_cluster="keep").fit(X).labels_)
    assert set(labels.tolist()) == {0}


def test_a_scalar_weight_weighs_every_sample():
    X = np.array([[0.0, 0.0], [0.0, 1.0], [10.0, 10.0], [10.0, 11.0]])
    est = KMeans(2, init=[[0, 0], [10, 10]], n_init=1).fit(X, sample_weight=3.0)
    assert est.inertia_ == 3.0 and est.score(X, sample_weight=3.0) == -3.0
    assert (
        est.inertia_
        == KMeans(2, init=[[0, 0], [10, 10]], n_init=1)
        .fit(X, sample_weight=np.full(4, 3.0))
        .inertia_
    )


def test_float32_transform_is_accurate_near_a_centre():
    """``‖x‖² + ‖c‖² − 2x·c`` loses everything near a centre in float32; the distances
    there are the exact ones, rounded to float32."""
    rng = np.random.default_rng(58)
    X = (rng.normal(size=(300, 5)) * 10 + 100).astype(np.float32)
    est = KMeans(4, random_state=58).fit(X)
    near = est.cluster_centers_[None, 0] + np.float32(1e-5)  # a point by the first centre
    points = np.vstack([X, near, est.cluster_centers_]).astype(np.float32)
    got = est.transform(points).astype(np.float64)
    diff = points.astype(np.float64)[:, None, :] - est.cluster_centers_.astype(np.float64)[None]
    want = np.sqrt((diff**2).sum(axis=2))
    np.testing.assert_allclose(got, want, rtol=np.finfo(np.float32).eps, atol=1e-30)
    assert (got[-4:].diagonal() == 0).all()


# -- the same bits ----------------------------------------------------------------------
_FIT = """
import json, sys
import numpy as np
from kmeans_gpu import KMeans
r = np.random.default_rng(2)
X = (r.normal(size=(24000, 24)) + r.integers(0, 6, (24000, 1))).astype(np.float32)
est = KMeans(96, random_state=2).fit(X)  # chunks of 2 blocks on 1 thread, 1 on more; bounds
json.dump({"centers": est.cluster_centers_.tobytes().hex(), "labels":
           est.labels_.tobytes().hex(), "inertia": est.inertia_.hex(), "n_iter": est.n_iter_},
          sys.stdout)
"""


def _fit_in(env: dict[str, str]) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _FIT],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, **env},
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_same_bits_on_any_number_of_threads():
    """In fresh processes: one thread, two, three without numba."""
    one = _fit_in({"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    assert _fit_in({"OMP_NUM_THREADS": "2"}) == one
    assert _fit_in({"OMP_NUM_THREADS": "3", "KMEANS_GPU_NUMBA": "0"}) == one


def test_the_same_bits_whatever_the_chunks_and_kernels(monkeypatch):
    from kmeans_gpu.backends import _numba, _numpy

    pytest.importorskip("numba")
    monkeypatch.setattr(_numba, "SMALL_WORK", 0)  # the compiled kernels for every size
    r = np.random.default_rng(3)
    X = (r.normal(size=(6000, 8)) + r.integers(0, 5, (6000, 1))).astype(np.float32)
    w = r.uniform(0.5, 2.0, size=6000)

    def fit(**params):
        est = KMeans(12, random_state=1, **params).fit(X, sample_weight=w)
        return est.cluster_centers_.tobytes(), est.labels_.tobytes(), est.inertia_, est.n_iter_

    want = fit(backend=_numpy.make_backend(numba=True))
    assert fit(backend=_numpy.make_backend(numba=True), working_memory=1 << 16) == want
    assert fit(backend=_numpy.make_backend(numba=False)) == want
    assert fit(backend=_numpy.make_backend(numba=False), working_memory=1 << 17) == want


def test_concurrent_fits_give_the_same_bits_as_alone():
    r = np.random.default_rng(4)
    data = [(r.normal(size=(8000, 12)) + r.integers(0, 4, (8000, 1))) for _ in range(3)]

    def fit(X):
        est = KMeans(10, random_state=0).fit(X)
        return est.cluster_centers_.tobytes(), est.labels_.tobytes(), est.n_iter_

    alone = [fit(X) for X in data]
    together: list[object] = [None] * 3

    def run(i):
        together[i] = fit(data[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone


@pytest.mark.gpu
def test_cupy_labels_are_numpys_and_deterministic_fits_repeat_bit_for_bit():
    """On CuPy: the labels of given centres are NumPy's (near ties included: float32
    far from the origin), and ``deterministic=True`` repeats a fit bit for bit."""
    from kmeans_gpu.backends import _cupy_has_device

    if not _cupy_has_device():
        pytest.skip("CuPy with a CUDA device is not available")
    import cupy

    r = np.random.default_rng(5)
    X = (r.normal(size=(200_000, 16)) + r.integers(0, 30, (200_000, 1)) + 1e4).astype(np.float32)
    fitted = KMeans(64, random_state=0, n_init=1, max_iter=20).fit(X)
    on_gpu = cupy.asnumpy(fitted.predict(cupy.asarray(X)))
    np.testing.assert_array_equal(on_gpu, fitted.predict(X))

    def fit():
        est = KMeans(64, random_state=0, n_init=1, deterministic=True).fit(cupy.asarray(X))
        centers, labels = (cupy.asnumpy(a) for a in (est.cluster_centers_, est.labels_))
        return centers.tobytes(), labels.tobytes(), est.inertia_, est.n_iter_

    assert fit() == fit()


# -- memory -------------------------------------------------------------------------
def _peak(run) -> int:
    """Bytes allocated at the peak of ``run()`` beyond what was held before (after a
    first run, so that imports and compilation are not counted)."""
    run()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        run()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_many_clusters_keep_their_sums_within_the_workspace():
    """k = 5,000: the chunks' partial sums are added as they come, not all kept."""
    r = np.random.default_rng(5)
    X = r.normal(size=(50_000, 16)).astype(np.float32)
    init = X[:5000]
    workspace = 8 << 20
    peak = _peak(
        lambda: kmeans(X, 5000, init=init, max_iter=2, working_memory=workspace, backend="numpy")
    )
    per_cluster = 5000 * 16 * 8
    assert peak < X.nbytes + 2 * workspace + 12 * per_cluster


def test_relocating_thousands_of_empty_clusters_stays_small():
    X = np.repeat(np.arange(40, dtype=np.float64)[:, None], 100, axis=0)  # 40 distinct points
    init = np.vstack([X[::100], np.full((3000 - 40, 1), 1e6)])  # 2,960 clusters to relocate
    workspace = 4 << 20
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peak = _peak(lambda: kmeans(X, 3000, init=init, max_iter=3, working_memory=workspace))
    # the workspace, cache-sized blocks of scores and every row's candidates (all tied):
    # a one-hot of 2,960 × 3,000 would be 71 MB
    assert peak < workspace + (20 << 20)


def test_kmeans_plusplus_holds_at_most_four_times_the_data():
    X = np.random.default_rng(6).normal(size=(2_000_000, 2)).astype(np.float32)
    peak = _peak(lambda: kg.kmeans_plusplus(X, 12, random_state=0))
    assert peak < 3 * X.nbytes, peak / X.nbytes  # with the data itself: under 4x


def test_initialize_centroids_takes_linear_time():
    points = np.zeros((40_000, 2))
    began = time.perf_counter()
    chosen = kg.initialize_centroids(40_000, points, random_state=0)
    assert time.perf_counter() - began < 5.0 and chosen.shape == (40_000, 2)
