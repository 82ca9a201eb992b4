"""The CUDA kernel of the CuPy backend: compiled with nvcc here (no GPU needed),
compared with the generic path on a GPU."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from kmeans_gpu.backends import _cuda


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_kernel_compiles_with_nvcc(tmp_path, arch):
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
    assert set(re.findall(r"\.entry (\w+)\(", ptx.read_text())) == {
        *_cuda.NEAREST_TWO_KERNELS.values()
    }


def _problems(cp, rng, dtype):
    """``(X, C, ‖c‖²)``: normal data with centre k // 2 a copy of centre 0 (an exact
    tie the first index must win), and small integers (exact arithmetic, many ties)."""
    for n, d, k in ((1000, 2, 1), (3000, 16, 300), (2000, 130, 33)):
        X = cp.asarray(rng.normal(size=(n, d)).astype(dtype))
        C = cp.asarray(rng.normal(size=(k, d)).astype(dtype))
        C[k // 2] = C[0]
        yield X, C, (C * C).sum(axis=1)
    X = cp.asarray(rng.randint(0, 3, size=(4000, 5)).astype(dtype))
    C = cp.asarray(rng.randint(0, 3, size=(90, 5)).astype(dtype))
    yield X, C, (C * C).sum(axis=1)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nearest_two_kernel_matches_the_generic_path(dtype, rng):
    from kmeans_gpu.backends import Backend, _cupy, _cupy_has_device, get_backend

    if not _cupy_has_device():
        pytest.skip("CuPy with a CUDA device is not available")
    backend = get_backend("cupy")
    cp = backend._cupy
    plain = _cupy.CupyBackend(kernels=False)
    for X, C, csq in _problems(cp, rng, dtype):  # the tie: the second score equals the best
        got = backend.nearest_two(X, C, csq)
        want = Backend.nearest_two(plain, X, C, csq)
        for a, b in zip(got, want, strict=True):
            cp.testing.assert_array_equal(a, b)
        assert got[0].dtype == cp.int32 and got[1].dtype == dtype
