"""The CuPy backend's Python code, run on a host stand-in for CuPy (tests/fake_cupy.py).

On a machine with a GPU the ``gpu`` tests run the real thing; here these catch what can
go wrong above CUDA: a wrong call, a result in the wrong library, a compute type not
restored, a frame copy not waited for.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from kmeans_gpu import KMeans, iter_frames, kmeans

from . import fake_cupy
from .checks import assert_same_up_to_order


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
    record["compute_types"].clear()
    exact = kmeans(X, 6, random_state=0)
    reduced = kmeans(X, 6, random_state=0, precision="tf32")
    assert fake_cupy.COMPUTE_TYPE_TF32 in record["compute_types"]
    assert cp._core.get_compute_type(np.float32) == fake_cupy.COMPUTE_TYPE_DEFAULT  # restored
    np.testing.assert_array_equal(np.asarray(reduced[1]), np.asarray(exact[1]))


@pytest.mark.parametrize("kernels", ["argmin", "plain"])
def test_split_tf32_on_cupy_gives_the_exact_fit(cupy, monkeypatch, kernels):
    """The split runs in the kernel (by default; its stand-in rounds bits, where the
    library uses Veltkamp's splitting) or in CuPy operations; one TF32 product of inner
    size 3d either way, and the labels of the exact fit."""
    from kmeans_gpu._precision import ROW_PIECES, split_columns
    from kmeans_gpu.backends import get_backend

    cp, record = cupy
    monkeypatch.setenv("KMEANS_GPU_CUDA_KERNELS", kernels)
    X = cp.asarray(_data())
    backend = get_backend("cupy")
    np.testing.assert_array_equal(
        backend.split_columns(X, ROW_PIECES), split_columns(backend.xp, X, ROW_PIECES)
    )
    exact = kmeans(X, 6, random_state=0)
    record["compute_types"].clear()
    split = kmeans(X, 6, random_state=0, precision="tf32x3")
    assert fake_cupy.COMPUTE_TYPE_TF32 in record["compute_types"]
    np.testing.assert_array_equal(np.asarray(split[1]), np.asarray(exact[1]))
    assert_same_up_to_order(split[0], exact[0])  # near ties' rows are summed last


def test_column_mean_is_a_product_pinned_to_exact_float32(cupy):
    cp, record = cupy
    from kmeans_gpu.backends import Backend, get_backend

    backend = get_backend("cupy")
    X = cp.asarray(_data())
    record["compute_types"].clear()
    got = backend.column_mean(X)
    assert record["compute_types"][0] == fake_cupy.COMPUTE_TYPE_DEFAULT
    np.testing.assert_allclose(got, Backend.column_mean(backend, X), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        backend.column_mean(X[:, ::2]), _data()[:, ::2].mean(axis=0), rtol=1e-5, atol=1e-6
    )


def test_deterministic_sums_use_no_atomics(cupy):
    cp, record = cupy
    X = cp.asarray(_data())
    before = record["atomic_sums"]
    fitted = kmeans(X, 6, random_state=0, deterministic=True)
    assert record["atomic_sums"] == before
    np.testing.assert_array_equal(
        np.asarray(fitted[1]), np.asarray(kmeans(X, 6, random_state=0)[1])
    )


def test_a_deterministic_fit_in_fixed_point(cupy, monkeypatch):
    cp, _ = cupy
    from kmeans_gpu.backends import _cupy

    monkeypatch.setenv("KMEANS_GPU_DETERMINISTIC_SUMS", "fixed-point")
    calls = []
    original = _cupy.fixed_point_sums
    monkeypatch.setattr(
        _cupy, "fixed_point_sums", lambda *args: calls.append(1) or original(*args)
    )
    X = cp.asarray(_data())
    w = cp.asarray(np.random.default_rng(2).uniform(0.5, 2, size=4000).astype(np.float32))
    want = kmeans(X, 6, random_state=0, sample_weight=w)
    assert not calls
    got = kmeans(X, 6, random_state=0, sample_weight=w, deterministic=True)
    assert calls
    np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]))
    assert_same_up_to_order(got[0], want[0])


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("mode", ["sorted", "fixed-point"])
def test_deterministic_sums_as_chosen(cupy, monkeypatch, mode, weighted):
    """KMEANS_GPU_DETERMINISTIC_SUMS: the deterministic sums from the sorted-segments
    kernel (its stand-in sums each part in position order, as a block does; no atomics)
    or in 64-bit fixed point (integer atomics), equal to the one-hot product to rounding;
    k from 1 to many parts, empty clusters, and rows wider than k (fixed point: in
    pieces)."""
    cp, record = cupy
    from kmeans_gpu.backends import Backend, get_backend

    monkeypatch.setenv("KMEANS_GPU_DETERMINISTIC_SUMS", mode)
    backend = get_backend("cupy")
    assert backend.deterministic_sums == mode
    rng = np.random.default_rng(3)
    X = cp.asarray(_data())
    w = cp.asarray(rng.uniform(0.5, 2, size=X.shape[0]).astype(np.float32)) if weighted else None
    for k in (1, 7, 300, 5000):  # 64, 64, 6 and 1 parts per cluster; empty clusters
        labels = cp.asarray(rng.integers(0, k, size=X.shape[0]).astype(np.int32))
        before = record["atomic_sums"]
        sums, weights = backend.cluster_sums(X, labels, w, k, deterministic=True)
        assert (record["atomic_sums"] == before) == (mode == "sorted")
        assert sums.shape == (k, 8) and sums.dtype == np.float32 and weights.dtype == np.float32
        want = Backend.cluster_sums(backend, X, labels, w, k)  # the one-hot product
        np.testing.assert_allclose(sums, want[0], rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(weights, want[1], rtol=1e-5)


@pytest.mark.parametrize("weighted", [False, True])
def test_fixed_point_sums_are_correctly_rounded_in_any_order(cupy, weighted):
    """The fixed-point sums do not depend on the order of the rows (bitwise), and are
    the float64 sums rounded to float32 (within one unit in the last place), where
    float32 atomics lose digits: values of mixed signs and sizes, rows wider than k
    (summed in pieces), all-zero rows."""
    cp, _ = cupy
    from kmeans_gpu.backends._cupy import fixed_point_sums

    rng = np.random.default_rng(11)
    n, d, k = 5000, 16, 5
    X = (rng.normal(size=(n, d)) * np.exp(rng.normal(scale=3, size=(n, 1)))).astype(np.float32)
    X[:100] = 0.0
    labels = rng.integers(0, k, size=n).astype(np.int32)
    w = rng.uniform(0, 3, size=n).astype(np.float32) if weighted else None
    weights = np.ones(n) if w is None else w.astype(np.float64)
    truth = np.zeros((k, d))
    np.add.at(truth, labels, X.astype(np.float64) * weights[:, None])
    truth_w = np.bincount(labels, weights, minlength=k)
    order = rng.permutation(n)
    results = [
        fixed_point_sums(
            cp, cp.asarray(X[p]), cp.asarray(labels[p]), None if w is None else cp.asarray(w[p]), k
        )
        for p in (np.arange(n), order)
    ]
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)  # bitwise, in any order
    sums, totals = (np.asarray(r, np.float64) for r in results[0])
    assert np.all(np.abs(sums - truth) <= np.spacing(np.abs(truth).astype(np.float32)))
    assert np.all(np.abs(totals - truth_w) <= np.spacing(truth_w.astype(np.float32)))
    zero, _ = fixed_point_sums(cp, cp.asarray(X[:100]), cp.asarray(labels[:100]), None, k)
    assert not np.any(np.asarray(zero))


def test_pending_sq_dist_kernel_gives_the_inertia_terms(cupy, monkeypatch):
    """KMEANS_GPU_PENDING_KERNELS=1: the inertia's terms from the SQ_DIST kernel (its
    stand-in), equal to the plain path's; a fit and its frames agree with NumPy."""
    cp, _ = cupy
    from kmeans_gpu.backends import Backend, get_backend

    monkeypatch.setenv("KMEANS_GPU_PENDING_KERNELS", "1")
    backend = get_backend("cupy")
    X = _data()
    C = X[:6].copy()
    labels = np.random.default_rng(2).integers(0, 6, size=len(X)).astype(np.int32)
    got = backend.sq_dist_to_assigned(cp.asarray(X), cp.asarray(C), cp.asarray(labels))
    want = Backend.sq_dist_to_assigned(backend, cp.asarray(X), cp.asarray(C), cp.asarray(labels))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-12)
    frames = list(iter_frames(cp.asarray(X), X[:6], max_iter=5))
    ref = list(iter_frames(X, X[:6], max_iter=5, backend="numpy"))
    for a, b in zip(frames, ref, strict=True):
        assert a.inertia == pytest.approx(b.inertia, rel=1e-6)


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


def test_the_fit_trace_ranks_device_time_and_the_host_time_of_cuda_calls(cupy, monkeypatch):
    """The phase profile's traced fit, with torch's profiler replaced by one that
    reports what CUPTI would on a GPU: kernels and copies by device time, CUDA calls by
    the host time they took, and the device's busy time in all."""
    import contextlib
    import types

    torch = pytest.importorskip("torch")
    cp, _ = cupy
    phases = _phases_module()

    def event(key, device_us, cpu_us, count):
        return types.SimpleNamespace(
            key=key, self_device_time_total=device_us, self_cpu_time_total=cpu_us, count=count
        )

    events = [
        event("argmin_scores", 8_000.0, 0.0, 90),
        event("Memcpy DtoH (Device -> Pageable)", 50.0, 0.0, 12),
        event("cudaStreamSynchronize", 0.0, 30_000.0, 12),
        event("cudaLaunchKernel", 0.0, 2_000.0, 900),
        event("aten::empty", 0.0, 10.0, 3),
    ]

    @contextlib.contextmanager
    def profile(activities):
        assert len(activities) == 2  # CPU and CUDA
        yield types.SimpleNamespace(key_averages=lambda: events)

    monkeypatch.setattr(torch.profiler, "profile", profile)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    X = cp.asarray(_data())
    on_device, on_host, busy, wall = phases.fit_trace(cp, X, 6, X[:6].copy(), 3, rows=1)
    assert on_device == [("argmin_scores", 8.0, 90)]
    assert on_host == [("cudaStreamSynchronize", 30.0, 12)]
    assert busy == pytest.approx(8.05) and wall > 0


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
    from kmeans_gpu.benchmark import machine_info, run_benchmark

    assert machine_info()["gpu"] == "host stand-in"
    hooks, emptied = fake_cupy.memory_hooks[0], fake_cupy.pools_emptied[0]
    doc = run_benchmark(["seed"], iterations=2, repeats=1, include=("cupy]", "CUDA"))
    names = [r["contender"] for r in doc["results"]]
    # each contender's peak measured once, in its warm-up; its timed runs find CuPy's
    # memory pool warm (the stand-in's hook sees no allocations: the peak is X's size)
    assert fake_cupy.memory_hooks[0] - hooks == len(names)
    assert fake_cupy.pools_emptied[0] == emptied
    X_mib = 1200 * 2 * 4 / 2**20
    assert all(r["peak_gpu_mib"] == pytest.approx(X_mib) for r in doc["results"])
    assert names[:2] == ["kmeans-gpu[cupy]", "kmeans-gpu[cupy] frames"]
    assert {
        "kmeans-gpu[cupy] plain CuPy",
        "kmeans-gpu[cupy] CUDA fused",
        "kmeans-gpu[cupy] frames, pending kernels",
    } <= set(names)


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


def _phases_module():
    """``benchmarks/gpu_phases.py`` (a script, not a package module)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_phases.py"
    spec = importlib.util.spec_from_file_location("gpu_phases", path)
    assert spec is not None and spec.loader is not None
    phases = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(phases)
    return phases


def test_the_phase_profile_runs_through_on_the_stand_in(cupy, monkeypatch):
    """``benchmarks/gpu_phases.py`` only runs where a GPU is lent: its Python must not
    be what fails there (every row, the Triton ones included, on a small G1)."""
    import math

    from kmeans_gpu import benchmark

    record = cupy[1]
    phases = _phases_module()
    monkeypatch.setitem(benchmark.WORKLOADS, "G1", (3000, 16, 24, True))
    rows = phases.profile("G1", repeats=2, iterations=2, rows=3000)
    values = {r["step"]: next(r[u] for u in ("ms", "MiB", "of 1") if u in r) for r in rows}
    # (finite; not all positive: an iteration's cost is a difference of two fits' times,
    # which the host's noise can make negative here)
    assert not {step: v for step, v in values.items() if not math.isfinite(v)}
    laps = [v for step, v in values.items() if step.startswith("fit lap by lap: ")]
    assert [s for s in values if s.startswith("fit lap by lap: ")] == [
        "fit lap by lap: set-up",
        "fit lap by lap: initial centres",
        "fit lap by lap: iteration 1",
        "fit lap by lap: iterations 2-3, median",
        "fit lap by lap: end: final assignment and inertia",
        "fit lap by lap: result: distinct clusters, centres back",
        "fit lap by lap: the whole fit",
    ]
    assert laps[-1] >= sum(laps[:-1]) - laps[3]  # the median is no lap
    assert record["triton_steps"] > 0 and any("step mode" in s for s in values)


@pytest.mark.parametrize("mode", ["argmin", "fused", None])
def test_the_kernel_paths_when_switched_on(cupy, monkeypatch, mode):
    cp, _ = cupy
    from kmeans_gpu.backends import get_backend

    monkeypatch.setenv("KMEANS_GPU_CUDA_KERNELS", {"argmin": "1", None: "plain"}.get(mode, mode))
    backend = get_backend("cupy")
    assert backend.custom_kernel == mode
    X = _data()
    C = X[:40].copy()
    C[20] = C[3]  # an exact tie
    csq = (C * C).sum(axis=1)
    want = np.argmin(csq[None, :] - 2.0 * (X @ C.T), axis=1)
    got = backend.assign(cp.asarray(X), cp.asarray(C), cp.asarray(csq))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(
        np.asarray(kmeans(cp.asarray(X), 6, random_state=0)[1]),
        kmeans(X, 6, random_state=0, backend="numpy")[1],
    )


def test_a_fit_asks_for_the_free_device_memory_once(cupy):
    """The workspace comes from the free device memory, decided once per fit (one
    query of the driver), not again for every pass over the data."""
    cp, record = cupy
    X = cp.asarray(_data())
    before = record["free_memory_queries"]
    kmeans(X, 6, init=X[:6].copy(), max_iter=5, tol=0.0)
    assert record["free_memory_queries"] - before == 1


def test_a_fit_waits_for_the_device_once_per_iteration_not_per_chunk(cupy):
    """Issue 5: one small device→host read per iteration, none per chunk or per set-up
    block (the stand-in counts every read of device values into Python, and the CuPy
    functions that make one, like ``bincount``)."""
    cp, _ = cupy
    X = cp.asarray(_data())
    init = X[:6].copy()

    def reads(working_memory, max_iter):
        before = fake_cupy.host_reads[0]
        kmeans(X, 6, init=init, max_iter=max_iter, tol=0.0, working_memory=working_memory)
        return fake_cupy.host_reads[0] - before

    one_chunk = reads(1 << 30, 2)
    assert reads(4_000, 2) == one_chunk  # 90 chunks, 500 set-up blocks: no more reads
    assert reads(4_000, 5) - reads(4_000, 2) == 3  # one per iteration
    assert one_chunk <= 12


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


@pytest.mark.parametrize("precision", ["tf32x3", "tf32"])
def test_near_ties_are_settled_once_per_pass_not_per_chunk(cupy, precision):
    """At a reduced precision a pass reads the count of its near ties once, after its
    chunks (the code before this read it in every chunk: 117 reads for these three
    iterations of tf32 against 7 now); TF32's split-TF32 step reads once more per piece
    of them. Split TF32's passes after the first read nothing but the iteration's one
    vector: they settle their near ties in a capacity set by the last pass's count."""
    cp, _ = cupy
    X = cp.asarray(_data())
    init = X[:6].copy()

    def reads(working_memory, max_iter):
        before = fake_cupy.host_reads[0]
        kmeans(
            X,
            6,
            init=init,
            max_iter=max_iter,
            tol=0.0,
            working_memory=working_memory,
            precision=precision,
        )
        return fake_cupy.host_reads[0] - before

    from kmeans_gpu._api import prepare

    problem = prepare(X, None, "cupy", working_memory=40_000)[0]
    assert len(dataclasses.replace(problem, precision=precision).assignment_chunks(6)) > 30
    per_three_iterations = reads(40_000, 5) - reads(40_000, 2)
    if precision == "tf32x3":
        assert per_three_iterations == 3  # the checks, with the near ties' count in them
        assert reads(40_000, 2) == reads(1 << 30, 2)
    else:
        assert 6 < per_three_iterations <= 9


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
