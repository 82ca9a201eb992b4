"""The experimental CUDA kernels and the reduced products on a GPU: the sources compiled
with nvcc here (no GPU needed); on a GPU (``gpu``), each kernel against the array API
path it replaces, the TF32 products, and the labels of reduced-precision passes."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess

import numpy as np
import pytest

from kmeans_gpu import experimental as lab
from kmeans_gpu import kmeans
from kmeans_gpu._api import prepare
from kmeans_gpu._assign import EXACT, centers_for
from kmeans_gpu.backends import Backend
from kmeans_gpu.experimental import _cuda, _triton
from kmeans_gpu.experimental._precision import CENTER_PIECES, ROW_PIECES, TF32, split_columns
from tests.checks import nearest_exactly


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_kernels_compile_with_nvcc(tmp_path, arch):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    source = tmp_path / "kmeans_gpu_experimental.cu"
    source.write_text(_cuda.SOURCE)
    ptx = tmp_path / "kmeans_gpu_experimental.ptx"
    out = subprocess.run(
        [nvcc, "-ptx", f"-arch={arch}", "--std=c++14", str(source), "-o", str(ptx)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert set(re.findall(r"\.entry (\w+)\(", ptx.read_text())) == set(_cuda.ENTRIES)


def test_rescale_factors_are_those_of_rescale():
    from kmeans_gpu.backends._base import rescale

    x = np.array([1.5, -3.0, 2.0**-140], dtype=np.float64)
    for exponent in (0, 1, -1, 7, -70, 131):
        f1, f2 = _cuda.rescale_factors(exponent)
        np.testing.assert_array_equal((x * f1) * f2, rescale(x, exponent))


def _gpu() -> tuple:
    """CuPy and the experimental backend (the test is skipped without a CUDA device)."""
    from kmeans_gpu.backends import _cupy_has_device

    if not _cupy_has_device():
        pytest.skip("CuPy with a CUDA device is not available")
    import cupy

    return cupy, lab.CupyBackend()


def _tensor_cores(backend):
    if not backend.computes(TF32):
        pytest.skip("this GPU has no TF32 tensor cores")


@pytest.mark.gpu
def test_split_kernel_matches_the_array_api_split(rng):
    """Bitwise: both round every float32 operation to nearest, and the kernel's are
    never contracted into FMAs."""
    cp, backend = _gpu()
    x = rng.normal(size=(3001, 37)) * np.exp(rng.normal(scale=4, size=(3001, 37)))
    x = cp.asarray(x.astype(np.float32))
    x[0, :3] = cp.asarray([1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11, 0.0], dtype=cp.float32)  # ties
    for pieces in (ROW_PIECES, CENTER_PIECES):
        got = _cuda.split_tf32_columns(x, pieces)
        cp.testing.assert_array_equal(got, split_columns(backend.xp, x, pieces))
        assert got.shape == (3001, 3 * 37) and got.dtype == cp.float32


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sq_dist_kernel_matches_the_array_api_path(dtype, rng):
    cp, backend = _gpu()
    for n, d, k, exponent in ((1000, 3, 1, 0), (5000, 16, 33, -40), (4099, 64, 1000, 12)):
        X = cp.asarray(rng.normal(size=(n, d)).astype(dtype))
        C = cp.asarray(rng.normal(size=(k, d)).astype(dtype))
        labels = cp.asarray(rng.randint(0, k, size=n).astype(np.int32))
        got = _cuda.sq_distances(X, C, labels, exponent)
        want = Backend.sq_distances(backend, X, C, labels, exponent)
        assert got.dtype == cp.float64
        cp.testing.assert_allclose(got, want, rtol=1e-13)
        with_kernel = lab.CupyBackend(sq_dist_kernel=True)
        cp.testing.assert_array_equal(with_kernel.sq_distances(X, C, labels, exponent), got)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["one-hot", "sorted", "fixed-point"])
@pytest.mark.parametrize("k", [5, 64, 3000])
def test_deterministic_sums_repeat_bitwise_and_match_atomics(mode, k, rng):
    cp, _ = _gpu()
    backend = lab.CupyBackend(deterministic_sums=mode)
    X = cp.asarray((rng.normal(size=(200_000, 16)) + 3).astype(np.float32))
    origin = (X.astype(cp.float64).mean(axis=0).astype(cp.float32).astype(cp.float64), 0)
    w = cp.asarray(rng.uniform(0.5, 2.0, size=200_000).astype(np.float32))
    labels = cp.asarray(rng.randint(0, k, size=200_000).astype(np.int32))
    for weights in (None, w):
        first = backend.cluster_sums(X, origin, labels, weights, k, deterministic=True)
        again = backend.cluster_sums(X, origin, labels, weights, k, deterministic=True)
        atomics = backend.cluster_sums(X, origin, labels, weights, k)
        for got, other in zip(first, again, strict=True):
            cp.testing.assert_array_equal(got, other)
        for got, other in zip(first, atomics, strict=True):
            cp.testing.assert_allclose(got, other, rtol=1e-9, atol=1e-7)
    if mode == "fixed-point":  # in any order of the rows, bitwise
        order = cp.asarray(rng.permutation(200_000))
        shuffled = backend.cluster_sums(X[order], origin, labels[order], w[order], k, True)
        for got, other in zip(shuffled, first, strict=True):
            cp.testing.assert_array_equal(got, other)


@pytest.mark.gpu
def test_tf32_products_are_reduced_and_the_labels_exact(rng):
    """The TF32 product differs from the exact one (cuBLAS really used TF32); passes at
    both precisions, through cuBLAS and the Triton kernel, give the core's labels on
    crowded data with rows halfway between two close centres."""
    cp, backend = _gpu()
    _tensor_cores(backend)
    X = rng.uniform(size=(50_000, 32)).astype(np.float32)
    C = rng.uniform(size=(500, 32)).astype(np.float32)
    C[1::2] = C[0::2] + np.float32(0.01)
    X[:250] = (C[0::2] + C[1::2]) / 2  # halfway between two close centres
    Xd, Cd = cp.asarray(X), cp.asarray(C)
    reduced = backend.reduced_product(Xd, -2.0 * Cd, TF32)
    with backend.exact_products(cp.float32):
        assert float(cp.abs(reduced - Xd @ (-2.0 * Cd).T).max()) > 0
    problem, _, valid = prepare(Xd, None, backend, centers=Cd)
    centers = centers_for(problem, valid)
    want = cp.empty(50_000, dtype=cp.int32)
    EXACT(problem, centers, want)
    np.testing.assert_array_equal(cp.asnumpy(want)[:2000], nearest_exactly(X[:2000], C))
    for name in ("tf32", "tf32x3"):
        for triton in (False, True):
            if triton and not _triton.available():
                continue
            engine = lab.ReducedPrecision(name)
            solver = lab.CupyBackend(triton=triton)
            labels = cp.empty(50_000, dtype=cp.int32)
            stats = engine(dataclasses.replace(problem, backend=solver), centers, labels)
            cp.testing.assert_array_equal(labels, want)
            assert int(stats.feedback) >= 250


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["tf32", "tf32x3"])
def test_cupy_reduced_fits_follow_the_exact_fit(name, rng):
    """Five iterations through cuBLAS and through the Triton step: labels exact for
    their centres, which differ from the exact fit's by the order of their sums (float
    atomics; the Triton step's in float32), so nearly all labels and the inertia are
    the exact fit's."""
    cp, backend = _gpu()
    _tensor_cores(backend)
    X = rng.normal(size=(100_000, 32)) + rng.randint(0, 20, (100_000, 1))
    X = cp.asarray(X.astype(np.float32))
    options = {"random_state": 0, "max_iter": 5, "tol": 0.0}
    exact = kmeans(X, 64, **options)
    for triton in (False, True):
        if triton and not _triton.available():
            continue
        got = lab.kmeans(X, 64, precision=name, triton=triton, **options)
        assert float(cp.mean((got[1] != exact[1]).astype(cp.float64))) < 1e-3
        assert got[2] == pytest.approx(exact[2], rel=1e-5) and got[3] == 5
