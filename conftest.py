"""Shared fixtures: the ``backend`` fixture runs a test on NumPy (with numba's kernels,
when numba is installed, and without them), on array_api_strict
(its default device and its second device, so host/device mixing fails loudly) and on
CuPy (marked ``gpu``; skipped without a CUDA device)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest


def _choose_triton_interpreter() -> None:
    """Without a CUDA device, the Triton kernel's tests run in Triton's interpreter,
    which must be chosen before anything imports triton (tests/test_triton.py)."""
    from kmeans_gpu.backends import _cupy_has_device

    if "TRITON_INTERPRET" not in os.environ and not _cupy_has_device():
        os.environ["TRITON_INTERPRET"] = "1"


_choose_triton_interpreter()


@dataclass(frozen=True)
class ArrayFactory:
    """Makes test arrays of one backend and reads them back."""

    name: str
    xp: Any
    device: Any = None
    #: whether the backend's per-cluster sums use float atomics, whose order (and so
    #: the last bits of a result) varies from run to run: CuPy on a GPU
    atomic_sums: bool = False

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        x = np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)
        if self.device is None:
            return self.xp.asarray(x)
        return self.xp.asarray(x, device=self.device)

    def to_numpy(self, x: Any) -> np.ndarray:
        if isinstance(x, (np.ndarray, np.generic, float, int)):
            return np.asarray(x)
        if self.name == "cupy":
            return x.get()
        return np.from_dlpack(x)

    def assert_same_run(self, actual: Any, desired: Any) -> None:
        """Two runs of one computation agree: bitwise, or within a few roundings on a
        backend with :attr:`atomic_sums`."""
        if not self.atomic_sums:
            np.testing.assert_array_equal(self.to_numpy(actual), self.to_numpy(desired))
            return
        self.assert_same_up_to_order(actual, desired)

    def assert_same_up_to_order(self, actual: Any, desired: Any) -> None:
        """Results of the same sums added in another order agree within a few
        roundings (of the largest value)."""
        from tests.checks import assert_same_up_to_order

        assert_same_up_to_order(self.to_numpy(actual), self.to_numpy(desired))

    def owns(self, x: Any) -> bool:
        if self.name == "numpy":
            return isinstance(x, np.ndarray)
        return type(x).__module__.startswith(self.xp.__name__) and (
            self.device is None or x.device == self.device
        )


def _cupy_factory() -> ArrayFactory:
    from kmeans_gpu.backends import _cupy_has_device

    if not _cupy_has_device():
        pytest.skip("CuPy with a CUDA device is not available")
    import cupy

    return ArrayFactory("cupy", cupy, atomic_sums=True)


def _strict_factory(device: str | None) -> ArrayFactory:
    xp = pytest.importorskip("array_api_strict")
    return ArrayFactory(
        f"array_api_strict[{device or 'default'}]", xp, xp.Device(device) if device else None
    )


@pytest.fixture(
    params=[
        "numpy",
        "numpy-plain",
        "array_api_strict",
        "array_api_strict-device1",
        pytest.param("cupy", marks=pytest.mark.gpu),
        "cupy-host",
    ]
)
def backend(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ArrayFactory]:
    if request.param == "numpy":  # with numba's kernels (when installed), whatever the size
        if importlib.util.find_spec("numba") is not None:
            from kmeans_gpu.backends import _numba

            monkeypatch.setattr(_numba, "SMALL_WORK", 0)
        yield ArrayFactory("numpy", np)
    elif request.param == "numpy-plain":  # pure NumPy, as without numba
        monkeypatch.setenv("KMEANS_GPU_NUMBA", "0")
        yield ArrayFactory("numpy", np)
    elif request.param == "cupy":
        yield _cupy_factory()
    elif request.param == "cupy-host":  # the CuPy backend on a host stand-in for CuPy
        from tests import fake_cupy

        with fake_cupy.stand_in(monkeypatch):
            import cupy  # the stand-in

            yield ArrayFactory("cupy", cupy)
    else:
        yield _strict_factory("device1" if request.param.endswith("device1") else None)


@pytest.fixture
def rng() -> np.random.RandomState:
    return np.random.RandomState(20261127)
