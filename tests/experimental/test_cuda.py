"""The CUDA kernels: compiled with nvcc here (no GPU needed), compared with the plain
path on a GPU."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from kmeans_gpu.backends import _cuda


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_kernels_compile_with_nvcc(tmp_path, arch):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    source = tmp_path / "kmeans_gpu_kernels.cu"
    source.write_text(_cuda.SOURCE)
    ptx = tmp_path / "kmeans_gpu_kernels.ptx"
    out = subprocess.run(
        [nvcc, "-ptx", f"-arch={arch}", "--std=c++14", str(source), "-o", str(ptx)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    entries = set(re.findall(r"\.entry (\w+)\(", ptx.read_text()))
    assert entries == {
        *_cuda.ARGMIN_KERNELS.values(),
        *_cuda.FUSED_KERNELS.values(),
        *_cuda.NEAREST_TWO_KERNELS.values(),
        *_cuda.SPLIT_KERNELS.values(),
        *_cuda.SORTED_SUMS_KERNELS.values(),
        *_cuda.SQ_DIST_KERNELS.values(),
    }


def test_kernel_choice_from_the_environment(monkeypatch):
    monkeypatch.delenv(_cuda.ENV_FLAG, raising=False)
    assert _cuda.kernel_mode() == "argmin" and _cuda.kernels_enabled()  # the default
    for value, expected in (
        ("1", "argmin"),
        ("yes", "argmin"),
        ("argmin", "argmin"),
        ("", "argmin"),
        ("fused", "fused"),
        ("FUSED", "fused"),
        ("0", None),
        ("plain", None),
        ("off", None),
    ):
        monkeypatch.setenv(_cuda.ENV_FLAG, value)
        assert _cuda.kernel_mode() == expected
    monkeypatch.setenv(_cuda.ENV_FLAG, "fast")
    with pytest.raises(ValueError, match="KMEANS_GPU_CUDA_KERNELS='fast'"):
        _cuda.kernel_mode()


def test_pending_kernels_choice_from_the_environment(monkeypatch):
    monkeypatch.delenv(_cuda.ENV_PENDING, raising=False)
    assert not _cuda.pending_kernels_enabled()  # off until a GPU run has checked them
    for value, expected in (("1", True), ("on", True), ("0", False), ("off", False)):
        monkeypatch.setenv(_cuda.ENV_PENDING, value)
        assert _cuda.pending_kernels_enabled() is expected
    monkeypatch.setenv(_cuda.ENV_PENDING, "maybe")
    with pytest.raises(ValueError, match="KMEANS_GPU_PENDING_KERNELS='maybe'"):
        _cuda.pending_kernels_enabled()


def test_deterministic_sums_choice_from_the_environment(monkeypatch):
    monkeypatch.delenv(_cuda.ENV_DETERMINISTIC, raising=False)
    assert _cuda.deterministic_sums_mode() == "one-hot"  # the one checked on a GPU
    for value in ("sorted", "Fixed-Point ", "one-hot"):
        monkeypatch.setenv(_cuda.ENV_DETERMINISTIC, value)
        assert _cuda.deterministic_sums_mode() == value.strip().lower()
    monkeypatch.setenv(_cuda.ENV_DETERMINISTIC, "atomic")
    with pytest.raises(ValueError, match="KMEANS_GPU_DETERMINISTIC_SUMS='atomic'"):
        _cuda.deterministic_sums_mode()


SHAPES = ((1000, 3, 1), (5000, 16, 33), (4099, 64, 1000))


def _cupy_backend():
    """CuPy and its backend (the test is skipped without a CUDA device)."""
    from kmeans_gpu.backends import _cupy_has_device, get_backend

    if not _cupy_has_device():
        pytest.skip("CuPy with a CUDA device is not available")
    import cupy

    return cupy, get_backend("cupy")


def _with_a_tie(cp, rng, dtype, shapes=SHAPES):
    """``(X, C, ‖c‖²)`` of normal data for each ``(n, d, k)``, centre k // 2 a copy of
    centre 0 (an exact tie the first index must win)."""
    for n, d, k in shapes:
        X = cp.asarray(rng.normal(size=(n, d)).astype(dtype))
        C = cp.asarray(rng.normal(size=(k, d)).astype(dtype))
        C[k // 2] = C[0]
        yield X, C, (C * C).sum(axis=1)


def _integer_grid(cp, rng, dtype):
    """``(X, C, ‖c‖²)`` of small integers: exact arithmetic, many real ties."""
    X = cp.asarray(rng.randint(0, 3, size=(4000, 5)).astype(dtype))
    C = cp.asarray(rng.randint(0, 3, size=(90, 5)).astype(dtype))
    return X, C, (C * C).sum(axis=1)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_argmin_kernel_matches_plain_path(dtype, rng):
    cp, backend = _cupy_backend()
    for X, C, csq in _with_a_tie(cp, rng, dtype):
        plain = cp.argmin(csq[None, :] - 2.0 * (X @ C.T), axis=1)
        labels = _cuda.argmin_scores(X @ (-2.0 * C).T, csq)
        cp.testing.assert_array_equal(labels, plain.astype(cp.int32))
        backend.custom_kernel = "argmin"
        try:
            cp.testing.assert_array_equal(backend.assign(X, C, csq), labels)
        finally:
            backend.custom_kernel = _cuda.kernel_mode()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_kernel_matches_plain_path(dtype, rng):
    """The fused kernel sums each product in its own order, so a near tie may go the
    other way than with cuBLAS's product: every row must agree, or be such a tie."""
    cp, backend = _cupy_backend()
    eps = np.finfo(dtype).eps
    for X, C, csq in _with_a_tie(cp, rng, dtype, (*SHAPES, (3000, 130, 70))):
        (n, d), k = X.shape, C.shape[0]
        scores = csq[None, :] + X @ (-2.0 * C).T
        plain = cp.argmin(scores, axis=1).astype(cp.int32)
        labels = _cuda.fused_argmin(X, -2.0 * C, csq)
        assert labels.dtype == cp.int32 and int(labels.max()) < k
        rows = cp.arange(n)
        gap = scores[rows, labels] - scores[rows, plain]
        scale = (X * X).sum(axis=1) + csq.max()
        assert bool(cp.all((labels == plain) | (cp.abs(gap) <= 8 * d * eps * scale)))
        assert float(cp.mean((labels == plain).astype(cp.float64))) > 0.999
        assert not bool(cp.any(labels == k // 2)) or k == 1  # the tie went to index 0
        backend.custom_kernel = "fused"
        try:
            cp.testing.assert_array_equal(backend.assign(X, C, csq), labels)
        finally:
            backend.custom_kernel = _cuda.kernel_mode()
    # exact arithmetic (small integers): every tie is real and goes to the first index
    X, C, csq = _integer_grid(cp, rng, dtype)
    plain = cp.argmin(csq[None, :] + X @ (-2.0 * C).T, axis=1).astype(cp.int32)
    cp.testing.assert_array_equal(_cuda.fused_argmin(X, -2.0 * C, csq), plain)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nearest_two_kernel_matches_plain_path(dtype, rng):
    from kmeans_gpu.backends import Backend

    cp, backend = _cupy_backend()
    problems = [*_with_a_tie(cp, rng, dtype), _integer_grid(cp, rng, dtype)]
    for X, C, csq in problems:  # the tie: the second score equals the best
        product = X @ (-2.0 * C).T
        got = _cuda.nearest_two(product, csq)
        want = Backend.nearest_two(backend, product, csq)  # the generic array-API path
        for a, b in zip(got, want, strict=True):
            cp.testing.assert_array_equal(a, b)
        assert got[0].dtype == cp.int32 and got[1].dtype == dtype


@pytest.mark.gpu
def test_split_kernel_matches_the_array_api_split(rng):
    """Bitwise: both round every float32 operation to nearest, and the kernel's are
    never contracted into FMAs."""
    from kmeans_gpu._precision import CENTER_PIECES, ROW_PIECES, split_columns

    cp, backend = _cupy_backend()
    x = rng.normal(size=(3001, 37)) * np.exp(rng.normal(scale=4, size=(3001, 37)))
    x = cp.asarray(x.astype(np.float32))
    x[0, :3] = cp.asarray([1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11, 0.0], dtype=cp.float32)  # ties
    for pieces in (ROW_PIECES, CENTER_PIECES):
        got = _cuda.split_tf32_columns(x, pieces)
        cp.testing.assert_array_equal(got, split_columns(backend.xp, x, pieces))
        assert got.shape == (3001, 3 * 37) and got.dtype == cp.float32


@pytest.mark.gpu
def test_column_mean_is_accurate_to_its_dtype(rng):
    """The product sums in X's dtype: within a float32 (float64) sum's typical rounding
    of the float64 mean, ``√n`` roundoffs of the largest value, with room of 8."""
    cp, backend = _cupy_backend()
    n = 300_001
    for dtype, eps in ((np.float32, 2.0**-24), (np.float64, 2.0**-53)):
        X = cp.asarray((rng.normal(size=(n, 37)) + 100.0).astype(dtype))
        truth = X.astype(cp.float64).mean(axis=0)
        for columns in (slice(None), slice(None, None, 3)):  # contiguous, strided
            got = backend.column_mean(X[:, columns])
            error = float(cp.abs(got - truth[columns]).max())
            assert got.dtype == dtype
            assert error <= 8 * n**0.5 * eps * float(cp.abs(X).max())


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sq_dist_kernel_matches_plain_path(dtype, rng):
    from kmeans_gpu.backends import Backend

    cp, backend = _cupy_backend()
    for n, d, k in SHAPES:
        X = cp.asarray(rng.normal(size=(n, d)).astype(dtype))
        C = cp.asarray(rng.normal(size=(k, d)).astype(dtype))
        labels = cp.asarray(rng.randint(0, k, size=n).astype(np.int32))
        got = _cuda.sq_dist_to_assigned(X, C, labels)
        want = Backend.sq_dist_to_assigned(backend, X, C, labels)
        assert got.dtype == cp.float64
        cp.testing.assert_allclose(got, want, rtol=1e-12)
        old = backend.pending_kernels
        backend.pending_kernels = True
        try:
            cp.testing.assert_array_equal(backend.sq_dist_to_assigned(X, C, labels), got)
        finally:
            backend.pending_kernels = old
