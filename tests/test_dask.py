"""kmeans-gpu on dask arrays: the same fit as in-process, on a two-worker
``distributed.LocalCluster`` (worker processes, so every shard, backend and result is
pickled) and on Dask's local scheduler; k-means‖; file-backed data."""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from kmeans_gpu import (
    KMeans,
    _kmeans_parallel,
    _sharded,
    iter_frames,
    kmeans,
    kmeans_parallel,
    kmeans_plusplus,
)
from kmeans_gpu._problem import make_problem
from kmeans_gpu.backends import get_backend
from kmeans_gpu.backends._base import fold

from . import fake_cupy
from .test_cli import run as run_cli

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
_dask = pytest.importorskip("kmeans_gpu._dask")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes, shared by the module's tests."""
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as local,
        distributed.Client(local, set_as_default=False) as client,
    ):  # fmt: skip
        yield client


@pytest.fixture
def client(cluster):
    """The cluster's client as the default client of the test."""
    with cluster.as_current():
        yield cluster


def blobs(n=20_000, d=4, k=6, dtype=np.float64, seed=7):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4, size=(k, d))
    return (centres[rng.integers(0, k, n)] + rng.normal(size=(n, d))).astype(dtype)


def assert_same_fit(got, want):
    """Bitwise the in-process fit; labels a lazy dask array in X's row order."""
    assert isinstance(got.labels_, da.Array)
    np.testing.assert_array_equal(got.labels_.compute(), want.labels_)
    assert got.n_iter_ == want.n_iter_
    assert isinstance(got.cluster_centers_, np.ndarray)
    np.testing.assert_array_equal(got.cluster_centers_, want.cluster_centers_)
    assert got.inertia_ == want.inertia_


CASES = {
    "uneven chunks and a zero-row chunk": ({"init": "given", "tol": 0.0}, (7000, 0, 5000, 8000)),
    "weights, tol, more chunks than workers": ({"init": "given", "tol": 1e-3, "w": True}, 3000),
    "empty clusters relocated": ({"init": "twice", "tol": 0.0, "max_iter": 12}, 6000),
    "empty clusters kept": ({"init": "twice", "empty_cluster": "keep", "max_iter": 12}, 6000),
    "init random, two runs": ({"init": "random", "n_init": 2, "random_state": 3}, 4096),
}


def _case(name, dtype):
    params, chunks = CASES[name]
    params = dict(params)
    X = blobs(dtype=dtype)
    init = params.pop("init")
    if init == "given":
        init = X[np.random.default_rng(1).choice(len(X), 6, replace=False)]
    elif init == "twice":  # two copies of some rows: empty clusters
        init = np.vstack([X[:4], X[:2]])
    w = None
    if params.pop("w", False):
        w = np.random.default_rng(2).uniform(0, 3, len(X))
        w[::5] = 0.0
    return X, init, w, params, chunks


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CASES))
def test_a_fit_on_the_cluster_is_the_in_process_fit(client, name, dtype):
    X, init, w, params, chunks = _case(name, dtype)
    want = KMeans(6, init=init, backend="numpy", **params).fit(X, sample_weight=w)
    Xd = da.from_array(X, chunks=(chunks, -1))
    wd = None if w is None else da.from_array(w, chunks=5000)  # other chunks than X's
    got = KMeans(6, init=init, **params).fit(Xd, sample_weight=wd)
    assert_same_fit(got, want)
    assert got.labels_.chunks == Xd.chunks[:1] and got.backend_ == "numpy"


def test_a_fit_of_data_on_one_worker_spreads_its_shards(client):
    X = blobs(20_000, dtype=np.float32)
    init = X[np.random.default_rng(1).choice(len(X), 6, replace=False)]
    first = sorted(client.ncores())[0]
    Xd = client.persist(da.from_array(X, chunks=2000), workers=[first])
    want = KMeans(6, init=init, tol=0, backend="numpy").fit(X)
    assert_same_fit(KMeans(6, init=init, tol=0).fit(Xd), want)
    # each shard computes where it was built, one per worker
    shards = _dask.build_shards(Xd, None, None, _dask.compute_backend(Xd, "auto"), X.dtype)
    where = shards.map(_worker_address)
    assert where == shards.workers and sorted(where) == sorted(client.ncores())


def _worker_address(shard):
    return distributed.get_worker().address


def test_one_task_per_shard_per_iteration_whatever_the_chunks(client):
    X = blobs(20_000, d=2, dtype=np.float32)
    Xd = da.from_array(X, chunks=300)  # 67 chunks
    with distributed.get_task_stream(client) as stream:
        km = KMeans(6, init=X[:6], tol=0, max_iter=8).fit(Xd)
    passes = [t for t in stream.data if str(t["key"]).startswith("lloyd_pass")]
    assert len(passes) == 2 * km.n_iter_
    assert {t["worker"] for t in passes} == set(client.ncores())


def test_frames_on_the_cluster_are_the_in_process_frames(client):
    X = blobs(12_000, d=3, dtype=np.float32)
    init = X[:6]
    show = np.arange(5, 12_000, 37)[::-1]  # any order
    want = list(iter_frames(X, init, display_indices=show))
    got = list(iter_frames(da.from_array(X, chunks=2500), init, display_indices=show))
    assert len(got) == len(want) > 3
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.centroids, b.centroids)
        assert (a.inertia, a.center_shift, a.converged) == (b.inertia, b.center_shift, b.converged)
        np.testing.assert_array_equal(a.indices, show)
    every = list(KMeans(6, init=init, n_init=1).iter_frames(da.from_array(X, chunks=5000)))
    np.testing.assert_array_equal(every[-1].labels, KMeans(6, init=init).fit(X).labels_)


def test_predict_transform_score_of_dask_input(client):
    X = blobs(9000, d=3, dtype=np.float32)
    Y = blobs(7000, d=3, dtype=np.float32, seed=8)
    Yd = da.from_array(Y, chunks=((3000, 0, 4000), -1))
    fitted = KMeans(6, init=X[:6]).fit(X)
    labels = fitted.predict(Yd)
    assert isinstance(labels, da.Array) and labels.chunks == Yd.chunks[:1]
    np.testing.assert_array_equal(labels.compute(), fitted.predict(Y))
    distances = fitted.transform(Yd)
    assert distances.chunks == (Yd.chunks[0], (6,))
    np.testing.assert_array_equal(distances.compute(), fitted.transform(Y))
    assert fitted.score(Yd) == fitted.score(Y)
    w = np.linspace(0, 2, len(Y))
    assert fitted.score(Yd, sample_weight=w) == fitted.score(Y, sample_weight=w)
    on_dask = KMeans(6, init=X[:6]).fit(da.from_array(X, chunks=4000))
    np.testing.assert_array_equal(on_dask.fit_predict(da.from_array(X)).compute(), fitted.labels_)
    np.testing.assert_array_equal(on_dask.predict(Y), fitted.predict(Y))
    centers, labels, inertia, n_iter = kmeans(da.from_array(X, chunks=4000), 6, init=X[:6])
    np.testing.assert_array_equal(centers, fitted.cluster_centers_)
    assert (inertia, n_iter) == (fitted.inertia_, fitted.n_iter_)
    np.testing.assert_array_equal(labels.compute(), fitted.labels_)


def test_a_fit_survives_a_worker_leaving_or_dying(client):
    """A worker retired mid-fit hands its shards on; one killed mid-fit loses them and
    they are built again from X (the tasks' lineage): the same frames either way."""
    client.cluster.scale(3)
    client.wait_for_workers(3)
    X = blobs(30_000, d=3, dtype=np.float32)
    init = X[:6]
    want = list(iter_frames(X, init, display_indices=np.arange(0, 30_000, 11)))
    got = []
    stream = iter_frames(
        da.from_array(X, chunks=5000), init, display_indices=np.arange(0, 30_000, 11)
    )
    for i, frame in enumerate(stream):
        got.append(frame)
        if i == 2:
            client.retire_workers([sorted(client.ncores())[0]])
        if i == 5:
            with pytest.raises(Exception):  # noqa: B017 (the connection dies with it)
                client.run(os._exit, 1, workers=[sorted(client.ncores())[-1]])
    assert len(got) == len(want) > 6
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.centroids, b.centroids)
        assert a.inertia == b.inertia
    client.wait_for_workers(2)


def test_shards_and_backends_pickle_by_name_and_report_their_size():
    numpy = get_backend("numpy")
    assert pickle.loads(pickle.dumps(numpy)) is numpy
    X = blobs(5000, d=3)
    shard = _sharded.make_shard(numpy, 4096, np.float32, [X[:2000], X[2000:2000], X[2000:]])
    assert (shard.start, shard.stop, shard.X.dtype) == (4096, 9096, np.float32)
    assert dask.sizeof.sizeof(shard) >= shard.X.nbytes
    back = pickle.loads(pickle.dumps(shard))
    assert back.backend is numpy and back.start == 4096
    np.testing.assert_array_equal(back.X, shard.X)
    strict = pytest.importorskip("array_api_strict")
    generic = get_backend(strict.asarray([1.0]))
    assert pickle.loads(pickle.dumps(generic)) is generic


# -- Dask's local scheduler ------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_local_shards_give_the_in_process_fit(dtype, monkeypatch):
    """Without a client: the rows in one shard, or several (how a cluster divides
    them), give the same bits; here with weights and uneven chunks."""
    X = blobs(45_000, d=3, dtype=dtype)
    w = np.random.default_rng(0).uniform(0.5, 2, len(X))
    init = X[np.random.default_rng(1).choice(len(X), 6, replace=False)]
    want = KMeans(6, init=init, tol=0, backend="numpy").fit(X, sample_weight=w)
    Xd = da.from_array(X, chunks=((10_000, 1, 0, 20_000, 14_999), -1))
    for shards in (1, 3, 5):
        monkeypatch.setattr(_dask, "LOCAL_SHARDS", shards)
        assert_same_fit(KMeans(6, init=init, tol=0).fit(Xd, sample_weight=w), want)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_the_set_up_matches_make_problem_at_extreme_magnitudes(monkeypatch):
    """The mean, scale and variance found from shards are make_problem's, where the
    float64 sums overflow and where the rows are rescaled."""
    monkeypatch.setattr(_dask, "LOCAL_SHARDS", 3)
    numpy = get_backend("numpy")
    base = blobs(13_000, d=3, seed=4)
    overflowing = np.full((13_000, 3), 1e306)  # the float64 column sums overflow
    for X in (overflowing, base * 1e-300, (base * 1e36).astype(np.float32), base + 1e8):
        want = make_problem(numpy, X, None)
        compute = _dask.compute_backend(da.from_array(X), "auto")
        shards = _dask.build_shards(da.from_array(X, chunks=4000), None, None, compute, X.dtype)
        got, _ = _sharded.sharded_problem(
            shards, numpy, n_features=3, dtype=X.dtype, block=compute.block
        )
        np.testing.assert_array_equal(got.mean, want.mean)
        assert (got.scale_exponent, got.variance) == (want.scale_exponent, want.variance)


def test_cupy_blocks_compute_on_the_cupy_backend(monkeypatch):
    """Dask blocks of CuPy arrays (the host stand-in, on the local scheduler): the
    CuPy backend computes, the centres come to the host, the labels stay CuPy blocks."""
    monkeypatch.setattr(_dask, "LOCAL_SHARDS", 2)
    with fake_cupy.stand_in(monkeypatch) as record:
        cp = sys.modules["cupy"]
        X = blobs(9000, d=3, dtype=np.float32)
        want = KMeans(6, init=cp.asarray(X[:6]), tol=0).fit(cp.asarray(X))
        Xd = da.from_array(cp.asarray(X), chunks=2000, asarray=False)
        with dask.config.set(scheduler="sync"):
            got = KMeans(6, init=X[:6], tol=0).fit(Xd)
            labels = got.labels_.compute()
            predicted = got.predict(Xd).compute()
        assert got.backend_ == "cupy" and record["atomic_sums"] > 0
        assert isinstance(labels, cp.ndarray) and isinstance(predicted, cp.ndarray)
        assert isinstance(got.cluster_centers_, np.ndarray)
        np.testing.assert_array_equal(np.asarray(labels), np.asarray(want.labels_))
        np.testing.assert_array_equal(np.asarray(predicted), np.asarray(labels))
        assert got.n_iter_ == want.n_iter_
        np.testing.assert_allclose(
            got.cluster_centers_, np.asarray(want.cluster_centers_), rtol=1e-6
        )
        # NumPy blocks computed on "cupy"
        on_cupy = KMeans(6, init=X[:6], tol=0, backend="cupy").fit(da.from_array(X, chunks=4000))
        assert on_cupy.backend_ == "cupy" and on_cupy.n_iter_ == want.n_iter_


# -- k-means‖ ----------------------------------------------------------------------------------
class Counted:
    """Shards that count the functions run on them."""

    def __init__(self, shards):
        self.inner, self.calls = shards, []

    @property
    def ranges(self):
        return self.inner.ranges

    def map(self, function, *args, each=None):
        self.calls.append(function.__name__)
        return self.inner.map(function, *args, each=each)

    def place(self, values):
        return self.inner.place(values)


def test_kmeans_parallel_makes_rounds_plus_two_passes():
    X = blobs(30_000, d=3)
    numpy = get_backend("numpy")
    problem = make_problem(numpy, X, None)
    config = _sharded.Config(problem.mean, problem.scale_exponent, None, False)
    shards = Counted(_sharded.LocalShards([_sharded.Shard.wrapping(problem, config)]))
    centers = _kmeans_parallel.kmeans_parallel_shards(
        shards, problem, config, numpy.sum_block_rows, 6, np.random.RandomState(0), n_rounds=4
    )
    assert centers.shape == (6, 3)
    assert shards.calls == ["first_row"] + ["sample_round"] * 4 + ["candidate_weights"]


def test_kmeans_parallel_picks_the_same_rows_in_process_and_on_dask(client):
    X = blobs(25_000, d=3, dtype=np.float32)
    w = np.random.default_rng(5).uniform(0, 2, len(X))
    want = kmeans_parallel(X, 6, sample_weight=w, random_state=11)
    assert isinstance(want, np.ndarray) and want.dtype == np.float32
    got = kmeans_parallel(da.from_array(X, chunks=3000), 6, sample_weight=w, random_state=11)
    np.testing.assert_array_equal(got, want)
    fit = KMeans(6, init="k-means||", random_state=2).fit(X)
    on_dask = KMeans(6, random_state=2).fit(da.from_array(X, chunks=7000))  # k-means++ is k-means‖
    assert_same_fit(on_dask, fit)


def test_kmeans_parallel_is_as_good_as_greedy_kmeans_plusplus():
    """Blobs, 20 Lloyd iterations from each: within a few % of k-means++'s inertia."""
    rng = np.random.default_rng(3)
    centres = rng.uniform(-10, 10, size=(40, 8))
    X = centres[rng.integers(0, 40, 30_000)] + rng.normal(size=(30_000, 8))
    fast, greedy = [], []
    for seed in range(3):
        fast.append(KMeans(40, init="k-means||", random_state=seed, max_iter=20, tol=0).fit(X))
        greedy.append(KMeans(40, init="k-means++", random_state=seed, max_iter=20, tol=0).fit(X))
    assert np.mean([f.inertia_ for f in fast]) <= 1.03 * np.mean([g.inertia_ for g in greedy])


def test_kmeans_parallel_in_process_on_every_backend(backend):
    """The same candidates and weights on every backend (the draws are the rows'), so
    the same centres up to the recluster's backend arithmetic."""
    X = blobs(6000, d=3, k=5)
    want = kmeans_parallel(X, 5, random_state=4, backend="numpy")
    got = kmeans_parallel(backend.asarray(X), 5, random_state=4)
    assert backend.owns(got)
    np.testing.assert_allclose(backend.to_numpy(got), want, rtol=1e-10)
    fit = KMeans(5, init="k-means||", random_state=4).fit(backend.asarray(X))
    assert fit.inertia_ == pytest.approx(KMeans(5, init=want).fit(X).inertia_, rel=1e-10)


def test_kmeans_parallel_with_fewer_candidates_than_clusters():
    X = np.repeat(np.arange(12.0)[:, None], 3, axis=1)  # 12 rows
    centers = kmeans_parallel(X, 10, n_rounds=1, oversampling_factor=0.1, random_state=0)
    assert centers.shape == (10, 3)
    with pytest.raises(ValueError, match="n_rounds must be >= 1"):
        kmeans_parallel(X, 3, n_rounds=0)
    with pytest.raises(ValueError, match="oversampling_factor must be > 0"):
        kmeans_parallel(X, 3, oversampling_factor=0.0)


# -- files --------------------------------------------------------------------------------------
def test_a_memory_mapped_x_is_not_copied_whole(tmp_path):
    """No working copy of a memory-mapped X: the fit holds chunks and a few numbers per
    row (tracemalloc sees NumPy's allocations), and gives the same bits."""
    X = blobs(100_000, d=32, dtype=np.float32)
    np.save(tmp_path / "x.npy", X)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    problem = make_problem(get_backend("numpy"), np.asarray(mapped), None)
    assert problem.X_working is None
    params = {"init": X[:: len(X) // 6][:6], "max_iter": 4, "working_memory": 1 << 20}
    want = KMeans(6, **params).fit(X)
    KMeans(6, **params).fit(mapped)  # (imports and compilation are not counted)
    tracemalloc.start()
    try:
        got = KMeans(6, **params).fit(mapped)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < X.nbytes / 2  # a working copy alone is X.nbytes
    np.testing.assert_array_equal(got.labels_, want.labels_)
    np.testing.assert_array_equal(got.cluster_centers_, want.cluster_centers_)


def test_a_folder_of_npy_files_and_a_zarr_store(tmp_path):
    X = blobs(12_000, d=3, dtype=np.float32)
    da.to_npy_stack(tmp_path / "stack", da.from_array(X, chunks=5000))
    stack = _dask.load_stack(tmp_path / "stack")
    assert stack.chunks[0] == (5000, 5000, 2000)
    want = KMeans(6, init=X[:6]).fit(X)
    assert_same_fit(KMeans(6, init=X[:6]).fit(stack), want)
    pytest.importorskip("zarr")
    da.to_zarr(da.from_array(X, chunks=4000), str(tmp_path / "x.zarr"))
    out = run_cli(
        "animate", "--data", str(tmp_path / "x.zarr"), "--k", "4", "--seed", "1",
        "--init", "k-means++", "--max-points", "500", "--max-iter", "4",
        "--save", str(tmp_path / "run.gif"),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "run.gif").stat().st_size > 0


# -- the rules -----------------------------------------------------------------------------------
def test_importing_kmeans_gpu_imports_no_dask():
    code = "import sys, kmeans_gpu; kmeans_gpu.KMeans; print('dask' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "False"


def test_clear_errors_for_dask_input():
    X = da.from_array(blobs(1000, d=2), chunks=300)
    with pytest.raises(ValueError, match="Expected a 2-D array"):
        KMeans(3).fit(X[:, 0])
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        KMeans(3).fit(X[X[:, 0] > 0])
    with pytest.raises(ValueError, match="Complex data not supported"):
        KMeans(3).fit(X.astype(np.complex128))
    with pytest.raises(ValueError, match="n_samples=1000 should be >= n_clusters=2000"):
        KMeans(2000).fit(X)
    with pytest.raises(TypeError, match="kmeans_parallel"):
        kmeans_plusplus(X, 3)
    with pytest.raises(ValueError, match="NaN or infinity"):
        KMeans(3).fit(da.where(X > 2, np.nan, X))
    with pytest.raises(ValueError, match="non-negative"):
        KMeans(3).fit(X, sample_weight=-np.ones(1000))
    with pytest.raises(ValueError, match=r"sample_weight\.shape"):
        KMeans(3).fit(X, sample_weight=np.ones(999))
    with pytest.raises(ValueError, match="pass display_indices"):  # before any work
        next(iter_frames(da.zeros((10**7 + 1, 2), chunks=10**6), "random", n_clusters=3))
    with pytest.raises(ValueError, match="pass display_indices"):
        KMeans(3, n_init=1).iter_frames(da.zeros((10**7 + 1, 2), chunks=10**6))


def test_nodes_tile_a_range_as_the_tree_adds_it():
    """Every shard's nodes, folded in row order, add the blocks as the in-process
    chunks do, whatever the shard boundaries."""
    rng = np.random.default_rng(0)
    block = 4
    for n in (1, 4, 5, 37, 64, 65, 130):
        values = rng.normal(size=n) * 10.0 ** rng.integers(-8, 8, n)
        per_block = [
            (a, min(a + block, n), values[a : a + block].sum()) for a in range(0, n, block)
        ]
        want = fold(iter(per_block), block)
        for count in (1, 2, 3, 7):
            parts = []
            for a, b in _sharded.plan_shards(n, block, count):
                for c, e in _sharded.node_ranges(a, b, block):
                    assert c % block == 0 and (e == n or (e - c) // block in (1, 2, 4, 8, 16, 32))
                    inner = [p for p in per_block if c <= p[0] < e]
                    parts.append((c, e, fold(iter(inner), block)))
            assert fold(iter(parts), block) == want
            assert [p[0] for p in parts] == sorted(p[0] for p in parts)


def test_numpy_farthest_takes_ties_in_row_order():
    numpy = get_backend("numpy")
    d = np.array([1.0, 3.0, 2.0, 3.0, 0.0, 3.0, 2.0])
    for n in range(1, 8):
        np.testing.assert_array_equal(numpy.farthest(d, n), np.argsort(-d, kind="stable")[:n])


def test_the_dask_benchmark_runs(client):
    sys.path.insert(0, str(ROOT))
    from benchmarks import dask_bench

    doc = dask_bench.run(client, ["blog"], iterations=2, repeats=1, chunks=3, trips=6, peers=False)
    rows = {r["contender"]: r for r in doc["fits"]}
    assert rows["kmeans-gpu on Dask"]["inertia"] == rows["kmeans-gpu in-process"]["inertia"]
    assert [r["wall_ms"] > 0 for r in doc["overhead"]] == [True] * 3
    assert "| blog |" in dask_bench.markdown(doc)


@pytest.mark.gpu
def test_cupy_blocks_on_gpu_workers():
    """CuPy blocks on ``dask_cuda.LocalCUDACluster`` (one worker per GPU), else on the
    local scheduler: the in-process CuPy fit, as float atomics allow."""
    from kmeans_gpu.backends import _cupy_has_device

    if not _cupy_has_device():
        pytest.skip("CuPy with a CUDA device is not available")
    import contextlib

    import cupy as cp

    X = blobs(400_000, d=16, k=8, dtype=np.float32)
    init = X[np.random.default_rng(1).choice(len(X), 8, replace=False)]
    want = KMeans(8, init=cp.asarray(init), tol=0, max_iter=10).fit(cp.asarray(X))
    blocks = da.from_array(X, chunks=(60_000, -1)).map_blocks(cp.asarray)
    with contextlib.ExitStack() as stack:
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            stack.enter_context(dask.config.set(scheduler="threads"))
        else:
            cuda = stack.enter_context(LocalCUDACluster(silence_logs=logging.ERROR))
            client = stack.enter_context(distributed.Client(cuda, set_as_default=False))
            stack.enter_context(client.as_current())
            blocks = client.persist(blocks)
        got = KMeans(8, init=init, tol=0, max_iter=10).fit(blocks)
        labels = got.labels_.compute()
    assert got.backend_ == "cupy" and isinstance(labels, cp.ndarray)
    # centres a few roundings apart may put a row on the other side of a bisector
    assert np.mean(cp.asnumpy(labels) == cp.asnumpy(want.labels_)) > 0.9999
    assert got.n_iter_ == want.n_iter_
    np.testing.assert_allclose(got.cluster_centers_, cp.asnumpy(want.cluster_centers_), rtol=1e-5)
    assert got.inertia_ == pytest.approx(want.inertia_, rel=1e-9)
