"""The CuPy backend's Python code, run on a host stand-in for CuPy (tests/fake_cupy.py).

On a machine with a GPU the ``gpu`` tests run the real thing; here these catch what can
go wrong above CUDA: a wrong call, a result in the wrong library, a compute type not
restored, a frame copy not waited for.
"""

from __future__ import annotations

import numpy as np
import pytest

from kmeans_gpu import KMeans, iter_frames, kmeans

from . import fake_cupy


@pytest.fixture
def cupy(monkeypatch):
    import sys

    with fake_cupy.stand_in(monkeypatch) as record:
        yield sys.modules["cupy"], record


def _data():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=5, size=(6, 8))
    return (centres[rng.integers(0, 6, 4000)] + rng.normal(size=(4000, 8))).astype(np.float32)


def test_a_fit_on_the_cupy_backend_equals_the_numpy_fit(cupy):
    cp, record = cupy
    from kmeans_gpu.backends import available_backends, get_backend

    assert available_backends() == ["numpy", "cupy"]
    X = _data()
    want = KMeans(6, random_state=0, backend="numpy").fit(X)
    got = KMeans(6, random_state=0).fit(cp.asarray(X))  # auto: CuPy arrays stay there
    assert got.backend_ == "cupy" and isinstance(got.cluster_centers_, cp.ndarray)
    np.testing.assert_array_equal(np.asarray(got.labels_), want.labels_)
    np.testing.assert_allclose(np.asarray(got.cluster_centers_), want.cluster_centers_, rtol=1e-5)
    assert got.n_iter_ == want.n_iter_ and got.inertia_ == pytest.approx(want.inertia_)
    assert record["atomic_sums"] > 0  # the CuPy sums ran
    # NumPy in, computed on "cupy", NumPy out
    out = KMeans(6, random_state=0, backend="cupy").fit(X)
    assert type(out.cluster_centers_) is np.ndarray
    np.testing.assert_array_equal(out.labels_, want.labels_)
    assert get_backend("cupy").default_working_memory() == 1 << 30


def test_exact_products_pin_the_compute_type_and_restore_it(cupy):
    cp, record = cupy
    X = cp.asarray(_data())
    kmeans(X, 6, random_state=0)
    assert record["compute_types"] and set(record["compute_types"]) == {
        fake_cupy.COMPUTE_TYPE_DEFAULT
    }
    cp._core.set_compute_type(np.float32, fake_cupy.COMPUTE_TYPE_TF32)  # as CUPY_TF32=1 does
    record["compute_types"].clear()
    kmeans(X, 6, random_state=0)
    assert record["compute_types"][0] == fake_cupy.COMPUTE_TYPE_DEFAULT
    assert cp._core.get_compute_type(np.float32) == fake_cupy.COMPUTE_TYPE_TF32  # restored


def test_deterministic_sums_use_no_atomics(cupy):
    cp, record = cupy
    X = cp.asarray(_data())
    before = record["atomic_sums"]
    fitted = kmeans(X, 6, random_state=0, deterministic=True)
    assert record["atomic_sums"] == before
    np.testing.assert_array_equal(
        np.asarray(fitted[1]), np.asarray(kmeans(X, 6, random_state=0)[1])
    )


def test_frames_on_cupy_copy_into_pinned_memory_after_their_event(cupy):
    cp, record = cupy
    X = _data()
    frames = list(iter_frames(cp.asarray(X), X[:6], max_iter=20))
    want = list(iter_frames(X, X[:6], max_iter=20, backend="numpy"))
    assert len(frames) == len(want) > 4
    # the stream's pinned buffers are reused: two per array (labels, centroids,
    # inertia) in flight, however many frames the caller keeps (it was one per array
    # and frame: 16 here)
    assert 0 < record["pinned"] <= 6
    for got, ref in zip(frames, want, strict=True):
        assert type(got.labels) is np.ndarray and not got.labels.flags.writeable
        np.testing.assert_array_equal(got.labels, ref.labels)
        np.testing.assert_allclose(got.centroids, ref.centroids, rtol=1e-5)
        assert got.inertia == pytest.approx(ref.inertia, rel=1e-6)
    assert not np.shares_memory(frames[0].labels, frames[2].labels)


def test_estimator_methods_weights_and_relocation_on_cupy(cupy):
    cp, _ = cupy
    X = _data()
    w = np.random.default_rng(1).uniform(0.5, 2.0, size=X.shape[0]).astype(np.float32)
    # a far-away initial centre attracts no point: it must be relocated, as on NumPy
    init = np.vstack([X[:5], np.full((1, 8), 1e3, dtype=np.float32)])
    ours = KMeans(6, init=cp.asarray(init), n_init=1).fit(
        cp.asarray(X), sample_weight=cp.asarray(w)
    )
    ref = KMeans(6, init=init, n_init=1, backend="numpy").fit(X, sample_weight=w)
    np.testing.assert_array_equal(np.asarray(ours.labels_), ref.labels_)
    np.testing.assert_allclose(np.asarray(ours.cluster_centers_), ref.cluster_centers_, rtol=1e-5)
    Y = cp.asarray(X[:50])
    np.testing.assert_array_equal(np.asarray(ours.predict(Y)), ref.predict(X[:50]))
    np.testing.assert_allclose(np.asarray(ours.transform(Y)), ref.transform(X[:50]), rtol=1e-4)
    assert ours.score(Y) == pytest.approx(ref.score(X[:50]), rel=1e-5)


def test_benchmark_harness_runs_the_cupy_rows(cupy):
    from benchmarks.harness import machine_info, run_benchmark

    assert machine_info()["gpu"] == "host stand-in"
    hooks, emptied = fake_cupy.memory_hooks[0], fake_cupy.pools_emptied[0]
    doc = run_benchmark(["blog"], iterations=2, repeats=1, include=("cupy]", "CuPy"))
    names = [r["contender"] for r in doc["results"]]
    # each contender's peak measured once, in its warm-up; its timed runs find CuPy's
    # memory pool warm (the stand-in's hook sees no allocations: the peak is X's size)
    assert fake_cupy.memory_hooks[0] - hooks == len(names)
    assert fake_cupy.pools_emptied[0] == emptied
    X_mib = 1200 * 2 * 4 / 2**20
    assert all(r["peak_gpu_mib"] == pytest.approx(X_mib) for r in doc["results"])
    assert names == [
        "kmeans-gpu[cupy]",
        "kmeans-gpu[cupy] frames",
        "kmeans-gpu[cupy] plain CuPy",
    ]


def test_work_runs_on_the_device_that_holds_the_data(cupy):
    """On a machine with several GPUs, CuPy launches on the current device: every
    entry point runs its kernels and atomic sums on the device of the data (here the
    stand-in's GPU 1, while the caller's current device is 0), and the caller finds its
    own device current again, between frames too."""
    cp, _ = cupy
    from kmeans_gpu import (
        KMeansND,
        assign_points_to_centroids,
        kmeans_plusplus,
        recalc_centroids,
    )

    X = cp.asarray(_data())
    fake_cupy.home_device[0] = 1
    launched = fake_cupy.launched_on

    def on_gpu_1(run):
        launched.clear()
        result = run()
        assert launched and set(launched) == {1}, launched
        assert fake_cupy.current_device == [0]
        return result

    est = on_gpu_1(lambda: KMeans(6, random_state=0).fit(X))
    on_gpu_1(lambda: est.predict(X))
    on_gpu_1(lambda: est.score(X))
    on_gpu_1(lambda: kmeans(X, 6, init="random", random_state=1))
    start = X[:6].copy()
    labels = on_gpu_1(lambda: assign_points_to_centroids(start, X))
    launched.clear()
    recalc_centroids(start, X, labels)  # sums by atomics
    assert set(launched) == {1} and fake_cupy.current_device == [0]
    on_gpu_1(lambda: KMeansND(start, X).get_centroids())

    def frames(stream):
        launched.clear()
        for _frame in stream:
            assert fake_cupy.current_device == [0]  # the caller's code runs on its own
        assert launched and set(launched) == {1}

    stream = iter_frames(X, start, max_iter=3)
    next(stream)
    stream.close()  # a caller that stops early
    assert fake_cupy.current_device == [0]
    frames(iter_frames(X, start, max_iter=3))
    frames(est.iter_frames(X))
    frames(KMeansND(start, X).get_generator_func()())
    launched.clear()
    kmeans_plusplus(X, 6, random_state=0)  # no kernel of ours: CuPy's own operations
    assert fake_cupy.current_device == [0]


def test_on_device_of_asks_dlpack_and_switches_only_for_cuda_data(cupy):
    from kmeans_gpu.backends import on_device_of

    class Reports:
        def __init__(self, device):
            self.device = device

        def __dlpack_device__(self):
            if self.device is None:
                raise BufferError("cannot tell")
            return self.device

    for x in (np.zeros(3), [1.0, 2.0], Reports((1, 0)), Reports(None)):
        with on_device_of(x):
            assert fake_cupy.current_device == [0]
    for kind in (2, 13):  # CUDA device and managed memory
        with on_device_of(Reports((kind, 3))):
            assert fake_cupy.current_device == [0, 3]
    assert fake_cupy.current_device == [0]


def test_a_fit_asks_for_the_free_device_memory_once(cupy):
    """The workspace comes from the free device memory, decided once per fit (one
    query of the driver), not again for every pass over the data."""
    cp, record = cupy
    X = cp.asarray(_data())
    before = record["free_memory_queries"]
    kmeans(X, 6, init=X[:6].copy(), max_iter=5, tol=0.0)
    assert record["free_memory_queries"] - before == 1


def test_a_fit_waits_for_the_device_a_few_times_per_iteration_whatever_the_chunks(cupy):
    """Per iteration: the count of the near ties (all chunks' together), the candidates
    of each piece of them when there are any, and the iteration's one vector; none per
    chunk or per set-up block (the stand-in counts every read of device values into
    Python, and the CuPy functions that make one, like ``nonzero``)."""
    cp, _ = cupy
    X = cp.asarray(_data())
    init = X[:6].copy()

    def reads(working_memory, max_iter):
        before = fake_cupy.host_reads[0]
        kmeans(X, 6, init=init, max_iter=max_iter, tol=0.0, working_memory=working_memory)
        return fake_cupy.host_reads[0] - before

    from kmeans_gpu._api import prepare

    assert len(prepare(X, None, "cupy", working_memory=40_000)[0].chunks(6)) > 30
    per_three_iterations = reads(1 << 30, 5) - reads(1 << 30, 2)
    assert reads(40_000, 5) - reads(40_000, 2) == per_three_iterations <= 3 * 3
    assert reads(40_000, 2) == reads(1 << 30, 2) <= 16


def test_an_iteration_that_relocates_empty_clusters_reads_three_more_values(cupy):
    """The largest distance, which clusters are empty and the new centre shift: the
    three reads ``_lloyd`` documents, on top of the iteration's one."""
    cp, _ = cupy
    data = _data()
    X = cp.asarray(data)
    nobody_near = np.full((3, 8), 1e3, dtype=np.float32)  # empty after one assignment

    def reads(init):
        before = fake_cupy.host_reads[0]
        kmeans(X, 6, init=cp.asarray(init), max_iter=1, tol=0.0)
        return fake_cupy.host_reads[0] - before

    assert reads(np.vstack([data[:3], nobody_near])) - reads(data[:6]) == 3


def test_no_host_data_go_to_the_device_per_iteration_chunk_or_centre(cupy):
    """A copy of host data to the device from pageable memory waits for the device:
    none inside the loops (the fit's set-up and k-means++ make a fixed few)."""
    cp, _ = cupy
    X = cp.asarray(_data())
    init = X[:6].copy()

    def writes(**params):
        before = fake_cupy.host_writes[0]
        kmeans(X, tol=0.0, **params)
        return fake_cupy.host_writes[0] - before

    given = writes(n_clusters=6, init=init, max_iter=2, working_memory=1 << 30)
    assert writes(n_clusters=6, init=init, max_iter=6, working_memory=4_000) == given
    seeded = writes(n_clusters=3, max_iter=2, random_state=0)
    assert writes(n_clusters=30, max_iter=2, random_state=0, working_memory=4_000) == seeded
