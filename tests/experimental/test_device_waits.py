"""The work that should not wait for the device does not: a Lloyd pass (exact, and
split TF32 settling its near ties in a capacity) and greedy k-means++, checked with
``cupyx.allow_synchronize(False)``, under which CuPy raises ``DeviceSynchronized`` at a
blocking copy to the host (a value read into Python, a boolean mask's count, a
``nonzero``). On a GPU where CuPy still has it (deprecated since CuPy 10), and on the
host stand-in, which raises at every read it counts, so CI runs the same test.

A wait costs more than its copy: the host stops queueing work until the device has
drained, so the device idles while Python catches up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from kmeans_gpu._api import prepare
from kmeans_gpu._assign import assign
from kmeans_gpu._init import kmeans_plusplus_working

from . import fake_cupy

#: the ``backend`` fixture's CuPy parameters only: the real one (``gpu``), the stand-in
ON_CUPY = pytest.mark.parametrize(
    "backend", [pytest.param("cupy", marks=pytest.mark.gpu), "cupy-host"], indirect=True
)


@contextlib.contextmanager
def no_waits() -> Iterator[None]:
    """Any wait for the device inside the block raises."""
    import cupyx

    if not hasattr(cupyx, "allow_synchronize"):
        pytest.skip("this CuPy cannot forbid synchronisation (cupyx.allow_synchronize)")
    with contextlib.ExitStack() as stack:
        with warnings.catch_warnings():  # (its deprecation is said on entering)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            stack.enter_context(cupyx.allow_synchronize(False))
        yield


def _data(cp: Any) -> Any:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, 16)) + rng.integers(0, 8, size=(20_000, 1))
    return cp.asarray(X.astype(np.float32))


@ON_CUPY
def test_no_wait_in_the_forbidding_block_is_missed(backend):
    """The check itself: a read of a device value inside the block raises."""
    import cupyx

    x = backend.asarray(np.ones(3, dtype=np.float32))
    with pytest.raises(cupyx.DeviceSynchronized), no_waits():
        float(x.sum())


@ON_CUPY
@pytest.mark.parametrize(
    "kernels,precision,capacity",
    [("argmin", "exact", None), ("argmin", "tf32x3", 20_000), ("triton", "tf32x3", 20_000)],
)
def test_a_pass_over_the_data_does_not_wait_for_the_device(
    backend, monkeypatch, request, kernels, precision, capacity
):
    """An exact pass, and a split-TF32 pass that settles its near ties in a capacity
    (through cuBLAS, and through the Triton kernel's step mode), in several chunks:
    labels, sums, weights and counts stay on the device."""
    from kmeans_gpu.backends import _triton

    if kernels == "triton" and not _triton.available():
        pytest.skip("the Triton kernel needs triton and torch")
    monkeypatch.setenv("KMEANS_GPU_CUDA_KERNELS", kernels)
    # the kernels are chosen when the backend is made: made again now, and after
    fake_cupy.clear_backend_caches()
    request.addfinalizer(fake_cupy.clear_backend_caches)
    cp = backend.xp
    problem = prepare(_data(cp), None, "cupy", working_memory=1 << 20)[0]
    if not problem.backend.computes_reduced(precision) and precision != "exact":
        pytest.skip("this GPU has no TF32 tensor cores")
    problem = dataclasses.replace(problem, precision=precision)
    assert len(problem.assignment_chunks(64)) > 1
    centers = problem.take(cp.arange(0, 20_000, 20_000 // 64)[:64])
    labels = cp.empty(problem.n_samples, dtype=cp.int32)
    problem.squared_row_norms  # noqa: B018 (computed once per fit, before the passes)
    assign(problem, centers, labels, capacity=capacity)  # kernels built, memory pooled
    with no_waits():
        stats = assign(problem, centers, labels, capacity=capacity)
    assert int(stats.changed) == problem.n_samples


@ON_CUPY
def test_k_means_plus_plus_does_not_wait_for_the_device(backend):
    """Greedy k-means++: every centre drawn on the device (1,023 steps on G1), the rows
    in several blocks (array_api_compat's ``clip``, which indexes by boolean masks, made
    four waits a step)."""
    problem = prepare(_data(backend.xp), None, "cupy", working_memory=1 << 20)[0]
    kmeans_plusplus_working(problem, 16, np.random.RandomState(0))  # warm
    with no_waits():
        _, indices = kmeans_plusplus_working(problem, 16, np.random.RandomState(0))
    assert len(set(backend.to_numpy(indices).tolist())) == 16
