"""The backend registry.

``"numpy"`` and ``"cupy"`` are registered by name and imported only when first asked
for; any other array that follows the Python array API standard (``array_api_strict``,
and the like) gets the generic :class:`Backend` over its own namespace. Telling an
array's library never imports that library.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import logging
from collections.abc import Callable, Generator
from typing import Any, TypeVar

from ._base import Array, Backend

__all__ = [
    "Array",
    "Backend",
    "BackendUnavailableError",
    "available_backends",
    "backend_for_array",
    "get_backend",
    "on_device_of",
    "steps_on_device_of",
]

logger = logging.getLogger("kmeans_gpu")

#: name -> (module, factory), imported on first use; a factory returns the same backend
#: object every time it is asked for the same thing
_REGISTRY: dict[str, tuple[str, str]] = {
    "numpy": ("kmeans_gpu.backends._numpy", "make_backend"),
    "cupy": ("kmeans_gpu.backends._cupy", "make_backend"),
}
BACKEND_NAMES = ("auto", *_REGISTRY)

_INSTALL_HINT = {
    "cupy": (
        "CuPy with a CUDA device is needed for backend='cupy': install the extra that "
        "matches your CUDA driver, `pip install 'kmeans-gpu[cuda12]'` or "
        "`pip install 'kmeans-gpu[cuda13]'`, or use backend='numpy'"
    ),
}


class BackendUnavailableError(ImportError, ValueError):
    """A backend was asked for by name but cannot run on this machine."""


@functools.cache
def _cupy_has_device() -> bool:
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount()) > 0
    except Exception as exc:  # no driver, no device, broken install: all mean "not here"
        logger.debug("CuPy is installed but unusable: %s", exc)
        return False


_AVAILABLE: dict[str, Callable[[], bool]] = {"numpy": lambda: True, "cupy": _cupy_has_device}


def available_backends() -> list[str]:
    """Names of the backends that can run here, ``"numpy"`` first."""
    return [name for name in _REGISTRY if _AVAILABLE[name]()]


@functools.cache
def _factory(name: str) -> Callable[[], Backend]:
    module, factory = _REGISTRY[name]
    make: Callable[[], Backend] = getattr(importlib.import_module(module), factory)
    return make


def _load(name: str) -> Backend:
    """The backend registered as ``name`` (each factory keeps its own instances)."""
    return _factory(name)()


#: DLPack's device types of CUDA memory (``__dlpack_device__``): device and managed
_CUDA_DEVICE_TYPES = (2, 13)


def on_device_of(x: Any) -> contextlib.AbstractContextManager[Any]:
    """The CUDA device that holds ``x``, as CuPy's current device for a block.

    CuPy launches its work on the current device, so on a machine with several GPUs
    the work on ``x`` must run inside this block to run where ``x`` lives. For anything
    not on a CUDA device (or without a usable CuPy) it does nothing. ``x`` is asked
    through DLPack (``__dlpack_device__``): CuPy is imported only for data on a CUDA
    device.
    """
    probe = getattr(x, "__dlpack_device__", None)
    if probe is None:
        return contextlib.nullcontext()
    try:
        kind, index = probe()
    except Exception:  # a library that cannot say: nothing to switch
        return contextlib.nullcontext()
    if int(kind) not in _CUDA_DEVICE_TYPES or not _cupy_has_device():
        return contextlib.nullcontext()
    import cupy

    return cupy.cuda.Device(int(index))  # type: ignore[no-any-return]


Y = TypeVar("Y")
R = TypeVar("R")


def steps_on_device_of(x: Any, steps: Generator[Y, None, R]) -> Generator[Y, None, R]:
    """``steps``, each run on the device of ``x`` (:func:`on_device_of`); between
    steps, where the caller's code runs, the current device is the caller's own. A
    caller that stops early (closing this generator) closes ``steps`` too."""
    try:
        while True:
            with on_device_of(x):
                try:
                    item = next(steps)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
            yield item
    finally:
        with on_device_of(x):
            steps.close()


def _library_of(x: Any) -> str:
    return type(x).__module__.partition(".")[0]


def backend_for_array(x: Any) -> Backend | None:
    """The backend that owns array ``x``, or None for non-array input (lists...)."""
    library = _library_of(x)
    if library == "numpy":
        import numpy as np

        return _load("numpy") if isinstance(x, np.ndarray) else None
    if library == "cupy":
        return _load("cupy")
    import array_api_compat

    if array_api_compat.is_array_api_obj(x):
        return _generic(array_api_compat.array_namespace(x))
    return None


@functools.cache
def _generic(xp: Any) -> Backend:
    return Backend(xp, xp.__name__.removeprefix("array_api_compat."))


def get_backend(name_or_array: Any = "auto") -> Backend:
    """Look up a backend by name (``"auto"``, ``"numpy"``, ``"cupy"``) or by an array.

    ``"auto"`` is CuPy when it imports and sees a CUDA device, NumPy otherwise. An array
    gives the backend of its own library.

    Raises
    ------
    ValueError
        For an unknown name.
    BackendUnavailableError
        For a known backend that cannot run here (the message says how to install it).
    """
    if not isinstance(name_or_array, str):
        backend = backend_for_array(name_or_array)
        if backend is None:
            raise TypeError(
                f"cannot tell the array library of {type(name_or_array).__name__!r}; "
                "pass a backend name or an array that follows the array API standard"
            )
        return backend
    name = name_or_array
    if name not in BACKEND_NAMES:
        raise ValueError(
            f"unknown backend {name!r}; valid backends are {', '.join(map(repr, BACKEND_NAMES))}"
        )
    if name == "auto":
        name = "cupy" if _cupy_has_device() else "numpy"
        logger.info("backend='auto' chose %r", name)
    elif not _AVAILABLE[name]():
        raise BackendUnavailableError(_INSTALL_HINT[name])
    return _load(name)
