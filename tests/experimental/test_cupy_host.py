"""The experimental CuPy backend's Python code, on the host stand-in for CuPy
(``tests/fake_cupy.py``, with the experimental kernels' models from ``conftest.py``).

On a machine with a GPU the ``gpu`` tests run the real thing; these catch what can go
wrong above CUDA: a wrong call or launch, a compute type not restored, an option that
does not reach its kernel, a read of the device where a pass should not wait."""

from __future__ import annotations

import numpy as np
import pytest

from kmeans_gpu import experimental as lab
from kmeans_gpu import iter_frames, kmeans
from kmeans_gpu._api import prepare
from kmeans_gpu.backends import Backend
from kmeans_gpu.experimental import _cupy, _engine
from kmeans_gpu.experimental._precision import ROW_PIECES, TF32X3, split_columns
from tests import fake_cupy
from tests.checks import assert_same_up_to_order


def _data(n=4000, d=8, scale=1.0):
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=5, size=(6, d))
    X = centres[rng.integers(0, 6, n)] + rng.normal(size=(n, d))
    return (X * scale).astype(np.float32)


def test_reduced_fits_use_tf32_products_and_restore_the_compute_type(cupy):
    """tf32 and tf32x3 fits (through the split kernel's model, and CuPy's own
    operations) compute TF32 products, give the exact fit's labels, and leave the
    compute type as they found it."""
    cp, record = cupy
    X = cp.asarray(_data())
    exact = kmeans(X, 6, random_state=0)
    for kernels in (True, False):
        backend = lab.CupyBackend(kernels)
        for precision in ("tf32", "tf32x3"):
            record["compute_types"].clear()
            got = lab.kmeans(X, 6, random_state=0, precision=precision, backend=backend)
            assert fake_cupy.COMPUTE_TYPE_TF32 in record["compute_types"]
            np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(exact[1]))
            assert_same_up_to_order(got[0], exact[0])  # the settled rows summed last
            assert cp._core.get_compute_type(np.float32) == fake_cupy.COMPUTE_TYPE_DEFAULT
    assert isinstance(got[0], cp.ndarray)


def test_the_split_kernel_gives_the_array_api_split(cupy):
    """The kernel's model rounds bits; the library splits by Veltkamp's method."""
    cp, _ = cupy
    X = cp.asarray(_data() * np.float32(1e3))
    backend = lab.CupyBackend()
    got = backend.split_columns(X, ROW_PIECES)
    np.testing.assert_array_equal(got, split_columns(backend.xp, X, ROW_PIECES))
    assert got.shape == (4000, 24)


def test_the_experimental_backend_is_chosen_where_a_fit_runs_on_cupy(cupy):
    cp, _ = cupy
    X = _data()
    for given in (cp.asarray(X), X.tolist()):  # auto: CuPy data; other input, a device
        assert isinstance(lab._backend_for(given, "auto", False), lab.CupyBackend)
    assert lab._backend_for(X, "auto", False) == "auto"  # NumPy data stay on NumPy
    assert lab._backend_for(X, "cupy", True).triton
    assert lab._backend_for(X, "numpy", False) == "numpy"
    with pytest.raises(ValueError, match=r"needs experimental\.CupyBackend"):
        lab.kmeans(cp.asarray(X), 6, triton=True, backend=lab.CupyBackend())
    with pytest.raises(ValueError, match="deterministic_sums must be one of"):
        lab.CupyBackend(deterministic_sums="atomic")
    assert _cupy.make_backend(triton=True) is _cupy.make_backend(triton=True)


def test_the_triton_kernel_needs_triton_and_torch(cupy, monkeypatch):
    from kmeans_gpu.experimental import _triton

    monkeypatch.setattr(_triton, "available", lambda: False)
    with pytest.raises(ValueError, match="needs the triton and torch packages"):
        lab.CupyBackend(triton=True)
    assert not lab.CupyBackend().triton  # the others stand


def test_without_tensor_cores_a_reduced_fit_is_the_exact_fit(cupy, monkeypatch):
    """A device before Ampere computes no TF32: the pass is the core's, bitwise."""
    cp, record = cupy
    monkeypatch.setattr(fake_cupy._Device, "compute_capability", "75")
    X = cp.asarray(_data())
    exact = kmeans(X, 6, random_state=0)
    record["compute_types"].clear()
    got = lab.kmeans(X, 6, random_state=0, precision="tf32x3")
    assert fake_cupy.COMPUTE_TYPE_TF32 not in record["compute_types"]
    for a, b in zip(got[:2], exact[:2], strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("mode", ["sorted", "fixed-point"])
def test_deterministic_sums_as_constructed(cupy, mode, weighted):
    """``CupyBackend(deterministic_sums=...)``: the sorted-segments kernel's model (no
    atomics) or 64-bit fixed point (integer atomics) give the one-hot product's float64
    sums to rounding, from 1 to many parts per cluster, empty clusters, rows wider than
    k; the same bits again; and a deterministic fit has the default fit's labels."""
    cp, record = cupy
    backend = lab.CupyBackend(deterministic_sums=mode)
    rng = np.random.default_rng(3)
    X = cp.asarray(_data() + np.float32(20))
    problem = prepare(X, None, backend)[0]
    w = cp.asarray(rng.uniform(0.5, 2, size=4000).astype(np.float32)) if weighted else None
    for k in (1, 7, 300, 5000):  # 64, 64, 6 and 1 parts per cluster; empty clusters
        labels = cp.asarray(rng.integers(0, k, size=4000).astype(np.int32))
        before = record["atomic_sums"]
        sums, weights = backend.cluster_sums(X, problem.origin, labels, w, k, True)
        assert (record["atomic_sums"] == before) == (mode == "sorted")
        assert sums.shape == (k, 8) and sums.dtype == weights.dtype == np.float64
        want = Backend.cluster_sums(backend, X, problem.origin, labels, w, k)  # one-hot
        np.testing.assert_allclose(sums, want[0], rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(weights, want[1], rtol=1e-12)
        again = backend.cluster_sums(X, problem.origin, labels, w, k, True)
        np.testing.assert_array_equal(again[0], sums)
    want = lab.kmeans(X, 6, random_state=0, precision="exact", backend=backend)
    got = lab.kmeans(X, 6, random_state=0, precision="tf32x3", deterministic=True, backend=backend)
    np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]))


@pytest.mark.parametrize("weighted", [False, True])
def test_fixed_point_sums_are_correctly_rounded_in_any_order(cupy, weighted):
    """Bitwise the same in any order of the rows, within float32's rounding of the
    exact sums: values of mixed signs and sizes, rows wider than k, all-zero rows."""
    cp, _ = cupy
    rng = np.random.default_rng(11)
    n, d, k = 5000, 16, 5
    X = rng.normal(size=(n, d)) * np.exp(rng.normal(scale=3, size=(n, 1)))
    X[:100] = 0.0
    labels = rng.integers(0, k, size=n).astype(np.int32)
    w = rng.uniform(0, 3, size=n).astype(np.float32) if weighted else None
    weights = np.ones(n) if w is None else w.astype(np.float64)
    truth = np.zeros((k, d))
    np.add.at(truth, labels, X * weights[:, None])
    order = rng.permutation(n)
    results = [
        _cupy.fixed_point_sums(
            cp, cp.asarray(X[p]), cp.asarray(labels[p]), None if w is None else cp.asarray(w[p]), k
        )
        for p in (np.arange(n), order)
    ]
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)  # bitwise, in any order
    sums = np.asarray(results[0][0])
    assert np.all(np.abs(sums - truth) <= np.spacing(np.abs(truth).astype(np.float32)))
    zero, _ = _cupy.fixed_point_sums(cp, cp.asarray(X[:100]), cp.asarray(labels[:100]), None, k)
    assert not np.any(np.asarray(zero))


@pytest.mark.parametrize("scale", [1.0, 2.0**-70], ids=["unscaled", "rescaled"])
def test_the_sq_dist_kernel_gives_the_cores_distances(cupy, scale):
    """``CupyBackend(sq_dist_kernel=True)``: the kernel's model gives the core's float64
    distances (rescaled too: data so small that the solver scales them by a power of
    two), and a fit and its frames agree with NumPy's."""
    cp, _ = cupy
    backend = lab.CupyBackend(sq_dist_kernel=True)
    X = _data(scale=scale)
    problem = prepare(cp.asarray(X), None, backend)[0]
    assert (problem.scale_exponent != 0) == (scale != 1.0)
    labels = cp.asarray(np.random.default_rng(2).integers(0, 6, size=4000).astype(np.int32))
    C = cp.asarray(X[:6].copy())
    got = backend.sq_distances(cp.asarray(X), C, labels, problem.scale_exponent)
    want = Backend.sq_distances(backend, cp.asarray(X), C, labels, problem.scale_exponent)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-12)
    frames = list(lab.iter_frames(cp.asarray(X), X[:6], max_iter=5, backend=backend))
    ref = list(iter_frames(X, X[:6], max_iter=5, backend="numpy"))
    for a, b in zip(frames, ref, strict=True):
        np.testing.assert_array_equal(a.labels, b.labels)
        assert a.inertia == pytest.approx(b.inertia, rel=1e-9)


@pytest.mark.parametrize("precision", ["tf32", "tf32x3"])
def test_triton_fits_go_through_the_kernels_stand_ins(cupy, precision):
    """``triton=True``: each chunk's share of a pass from ``_triton.lloyd_step`` (its
    stand-in: float32 atomic sums), TF32's near ties checked with split TF32 by
    ``_triton.nearest_two``; the labels are the exact fit's, the centres its up to
    float32 rounding of the sums. Deterministic sums do not come from the step's
    atomics."""
    cp, record = cupy
    X = cp.asarray(_data())
    want = kmeans(X, 6, random_state=0)
    got = lab.kmeans(X, 6, random_state=0, precision=precision, triton=True)
    assert record["triton_steps"] > 0 and (record["triton"] > 0) == (precision == "tf32")
    np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]))
    np.testing.assert_allclose(np.asarray(got[0]), np.asarray(want[0]), rtol=1e-5, atol=1e-5)
    steps = record["triton_steps"]
    again = lab.kmeans(X, 6, random_state=0, precision=precision, triton=True, deterministic=True)
    assert record["triton_steps"] == steps
    np.testing.assert_array_equal(np.asarray(again[1]), np.asarray(want[1]))


def test_triton_passes_take_larger_chunks(cupy):
    """No scores are written, so a chunk holds as many rows as its own temporaries
    allow (G2's d and k, 64 MiB: 4 chunks where the core takes 53 and cuBLAS's split
    TF32, with the split rows' room, 55)."""
    cp, _ = cupy
    X = cp.asarray(np.zeros((100_000, 64), dtype=np.float32))
    counts = {}
    for triton in (False, True):
        problem = prepare(X, None, lab.CupyBackend(triton=triton), working_memory=64 << 20)[0]
        counts[triton] = len(_engine._chunks(problem, 4096, TF32X3))
        assert len(problem.chunks(4096)) == 53  # the core's
    assert counts == {False: 55, True: 4}


@pytest.mark.parametrize("precision", ["tf32x3", "tf32"])
def test_a_reduced_fit_reads_the_device_once_per_iteration(cupy, precision):
    """Split TF32's passes after the first read nothing but the iteration's one
    vector, at any number of chunks: they settle their near ties in a capacity set by
    the last pass's count. TF32 reads its count once per pass, and once more for the
    near ties split TF32 leaves."""
    cp, _ = cupy
    X = cp.asarray(_data())
    init = X[:6].copy()

    def reads(working_memory, max_iter):
        before = fake_cupy.host_reads[0]
        lab.kmeans(
            X,
            6,
            init=init,
            max_iter=max_iter,
            tol=0.0,
            working_memory=working_memory,
            precision=precision,
        )
        return fake_cupy.host_reads[0] - before

    problem = prepare(X, None, lab.CupyBackend(), working_memory=40_000)[0]
    assert len(_engine._chunks(problem, 6, TF32X3)) > 30
    for working_memory in (40_000, 1 << 30):  # 31 chunks, and one
        per_three_iterations = reads(working_memory, 5) - reads(working_memory, 2)
        if precision == "tf32x3":
            assert per_three_iterations == 3  # the checks, the near ties' count in them
        else:
            assert 6 <= per_three_iterations <= 9
