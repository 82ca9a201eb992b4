"""Greedy k-means++ does not wait for the device, checked with
``cupyx.allow_synchronize(False)``, under which CuPy raises ``DeviceSynchronized`` at a
blocking copy to the host (a value read into Python, a boolean mask's count, a
``nonzero``). On a GPU where CuPy still has it (deprecated since CuPy 10), and on the
host stand-in, which raises at every read it counts, so CI runs the same test.

A wait costs more than its copy: the host stops queueing work until the device has
drained, so the device idles while Python catches up.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from kmeans_gpu._api import prepare
from kmeans_gpu._init import kmeans_plusplus_working

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
def test_k_means_plus_plus_does_not_wait_for_the_device(backend):
    """Greedy k-means++: every centre drawn on the device (1,023 steps on G1), the rows
    in several blocks (array_api_compat's ``clip``, which indexes by boolean masks, made
    four waits a step)."""
    problem = prepare(_data(backend.xp), None, "cupy", working_memory=1 << 20)[0]
    kmeans_plusplus_working(problem, 16, np.random.RandomState(0))  # warm
    with no_waits():
        indices = kmeans_plusplus_working(problem, 16, np.random.RandomState(0))
    assert len(set(backend.to_numpy(indices).tolist())) == 16
