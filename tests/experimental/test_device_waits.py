"""A split-TF32 pass that settles its near ties within a capacity does not wait for the
device, checked with ``cupyx.allow_synchronize(False)``, under which CuPy raises
``DeviceSynchronized`` at a blocking copy to the host (a value read into Python, a
boolean mask's count, a ``nonzero``): on a GPU where CuPy still has it (deprecated since
CuPy 10), and on the host stand-in, which raises at every read it counts."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import numpy as np
import pytest

from kmeans_gpu._api import prepare
from kmeans_gpu._assign import centers_for
from kmeans_gpu.experimental import CupyBackend, ReducedPrecision, _engine
from kmeans_gpu.experimental._precision import TF32X3

from .conftest import ON_CUPY


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


@ON_CUPY
@pytest.mark.parametrize("triton", [False, True], ids=["cuBLAS", "Triton step"])
def test_a_split_tf32_pass_within_a_capacity_does_not_wait(backend, triton):
    """Several chunks, near ties settled in a capacity: labels, sums, weights, counts
    and the feedback stay on the device; the pass that reads its count reads it once."""
    from kmeans_gpu.experimental import _triton

    if triton and not _triton.available():
        pytest.skip("the Triton kernel needs triton and torch")
    cp = backend.xp
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, 16)) + rng.integers(0, 8, size=(20_000, 1))
    solver = CupyBackend(triton=triton)
    problem = prepare(cp.asarray(X.astype(np.float32)), None, solver, working_memory=1 << 20)[0]
    if not solver.computes(TF32X3):
        pytest.skip("this GPU has no TF32 tensor cores")
    assert len(_engine._chunks(problem, 64, TF32X3)) > 1
    centers = centers_for(problem, problem.X[:: 20_000 // 64][:64])
    labels = cp.empty(problem.n_samples, dtype=cp.int32)
    engine = ReducedPrecision("tf32x3")
    problem.squared_row_norms  # noqa: B018 (made once per fit, before the passes)
    read = engine(problem, centers, labels)  # kernels built, memory pooled; reads once
    assert engine.accepts(float(read.feedback))
    with no_waits():
        stats = engine(problem, centers, labels)
    assert engine.accepts(float(stats.feedback)) and int(stats.changed) == problem.n_samples
    assert int(stats.feedback) == int(read.feedback)
