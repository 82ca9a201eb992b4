"""A host stand-in for CuPy, so the CuPy backend's Python code runs in CI.

NumPy computes underneath; the stand-in has the parts of CuPy's API that kmeans-gpu
calls (arrays with ``.get``, ``asnumpy``, ``cupy.add.at``, streams, events and pinned
memory, cuBLAS compute types, device queries). What it earns its keep with: it counts
every time the host waits for the device (``host_reads``), fails where waiting is
forbidden (``allow_synchronize``), and records on which device work was launched. Its
one kernel model is the core's nearest-two kernel. It cannot prove that CuPy behaves
like this on a GPU: the ``gpu`` tests and ``scripts/gpu-check`` do.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import sys
import time
import types
from collections.abc import Iterator
from typing import Any

import numpy as np

COMPUTE_TYPE_DEFAULT, COMPUTE_TYPE_TF32 = 1, 7


#: the stand-in's current device (a stack: ``with Device(i)`` pushes), the device its
#: arrays say they live on, and the current device of every kernel launch and
#: atomic sum (what the tests of device placement read)
current_device = [0]
home_device = [0]
launched_on: list[int] = []


class _Device:
    compute_capability = "90"

    def __init__(self, index: int | None = None) -> None:
        self.index = current_device[-1] if index is None else index

    @property
    def id(self) -> int:
        return self.index

    def __enter__(self) -> _Device:
        current_device.append(self.index)
        return self

    def __exit__(self, *exc: object) -> None:
        current_device.pop()

    def synchronize(self) -> None:
        return None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Device) and other.index == self.index

    def __hash__(self) -> int:
        return self.index


#: how many times the host has waited for a device value: every read of an array's
#: values into Python (``float(x)``, ``bool(x)``, ``x.item()``, a blocking ``get``,
#: ``asnumpy``) and the CuPy operations that read one internally (``bincount`` reads
#: the labels' maximum, ``nonzero`` the count, and indexing by a boolean mask, to read
#: or to write, the mask's count: CuPy's ``_prepare_mask_indexing_single``)
host_reads = [0]
#: how many times host data were copied to the device (``asarray`` of a host value): a
#: copy from pageable memory waits for the device too
host_writes = [0]


def _written(value: Any) -> None:
    if not isinstance(value, ndarray):
        host_writes[0] += 1


class DeviceSynchronized(RuntimeError):
    """``cupyx.DeviceSynchronized``: a read of the device where it was forbidden."""


#: whether reads of the device are allowed now (``cupyx.allow_synchronize``)
_reads_allowed = [True]


@contextlib.contextmanager
def allow_synchronize(allow: bool) -> Iterator[None]:
    """``cupyx.allow_synchronize``: inside ``allow_synchronize(False)`` every read the
    stand-in counts raises :class:`DeviceSynchronized`."""
    _reads_allowed.append(allow)
    try:
        yield
    finally:
        _reads_allowed.pop()


def _read(value: Any) -> Any:
    if not _reads_allowed[-1]:
        raise DeviceSynchronized("the device was read where synchronisation was forbidden")
    host_reads[0] += 1
    return value


def _masks(key: Any) -> bool:
    """Whether an index holds a non-empty boolean mask (CuPy reads its count)."""
    keys = key if isinstance(key, tuple) else (key,)
    return any(
        isinstance(k, np.ndarray) and k.dtype == np.bool_ and k.ndim > 0 and k.size > 0
        for k in keys
    )


class ndarray(np.ndarray):
    """A NumPy array that calls itself CuPy's (and counts reads of its values)."""

    @property
    def device(self) -> _Device:  # type: ignore[override]
        return _Device(home_device[0])

    def __dlpack_device__(self) -> tuple[int, int]:
        return (2, home_device[0])  # kDLCUDA

    def __float__(self) -> float:
        return _read(float(self.view(np.ndarray)))

    def __int__(self) -> int:
        return _read(int(self.view(np.ndarray)))

    def __bool__(self) -> bool:
        return _read(bool(self.view(np.ndarray)))

    def __index__(self) -> int:
        return _read(self.view(np.ndarray).__index__())

    def item(self, *args: Any) -> Any:
        return _read(self.view(np.ndarray).item(*args))

    def tolist(self) -> Any:
        return _read(self.view(np.ndarray).tolist())

    def __getitem__(self, key: Any) -> Any:
        if _masks(key):
            _read(None)
        item = super().__getitem__(key)
        return np.asarray(item).view(ndarray) if isinstance(item, np.generic) else item

    def __setitem__(self, key: Any, value: Any) -> None:
        if _masks(key):
            _read(None)
        super().__setitem__(key, value)

    def get(self, stream: Any = None, out: Any = None, blocking: bool = True) -> np.ndarray:
        if blocking:
            _read(None)
        host = np.array(self.view(np.ndarray), copy=True)
        if out is None:
            return host
        out[...] = host
        return out


ndarray.__module__ = "cupy"


class _Event:
    def __init__(self, disable_timing: bool = False) -> None:
        self.recorded = False
        self.time = 0.0

    def record(self, stream: Any = None) -> None:
        self.recorded = True
        self.time = time.perf_counter()

    def synchronize(self) -> None:
        assert self.recorded, "an event was waited on before it was recorded"


def _elapsed_ms(start: _Event, stop: _Event) -> float:
    assert start.recorded and stop.recorded, "elapsed time between unrecorded events"
    return (stop.time - start.time) * 1e3


class _Stream:
    def __init__(self, non_blocking: bool = False) -> None:
        self.waited: list[_Event] = []

    def wait_event(self, event: _Event) -> None:
        assert event.recorded
        self.waited.append(event)


#: memory hooks entered, and memory pools emptied (the benchmark's warm-up and timing)
memory_hooks = [0]
pools_emptied = [0]


class _MemoryHook:
    """CuPy's memory hook base class; host arrays allocate nothing it could see."""

    def __enter__(self) -> _MemoryHook:
        memory_hooks[0] += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


class _Pool:
    def free_all_blocks(self) -> None:
        pools_emptied[0] += 1

    def total_bytes(self) -> int:
        return 0


#: kernel models by a part of the kernel's name: ``launch(grid, block, args)``; tests of
#: other kernels register theirs
KERNEL_MODELS: dict[str, Any] = {}


def _nearest_two_model(grid: tuple[int], block: tuple[int], args: tuple[Any, ...]) -> None:
    """``kmeans_gpu_nearest_two_*``: the two smallest ``P + ‖c‖²`` of each row."""
    product, centers_sq, rows, k, labels, best, second = args
    assert block[0] % 32 == 0 and grid[0] * block[0] // 32 >= int(rows)  # a warp a row
    scores = np.asarray(product) + np.asarray(centers_sq)[None, :]
    labels[...] = np.argmin(scores, axis=1)
    two = np.sort(scores, axis=1)
    best[...] = two[:, 0]
    second[...] = two[:, 1] if int(k) > 1 else np.inf


KERNEL_MODELS["nearest_two"] = _nearest_two_model


class _RawModule:
    """Compiles nothing: a kernel is replaced by its model in :data:`KERNEL_MODELS`,
    which checks how it is launched; each launch records the current device."""

    def __init__(self, code: str, options: Any = ()) -> None:
        self.code = code

    def get_function(self, name: str) -> Any:
        assert name in self.code, f"no kernel {name} in the source"
        model = next(v for key, v in KERNEL_MODELS.items() if key in name)

        def launch(grid: Any, block: Any, args: Any) -> None:
            launched_on.append(current_device[-1])
            model(grid, block, args)

        return launch


def _device_results(function: Any) -> Any:
    return lambda *args, **kwargs: _as_cupy(function(*args, **kwargs))


def _as_cupy(value: Any) -> Any:
    if isinstance(value, np.generic):  # CuPy gives 0-d arrays: reading one is a wait
        return np.asarray(value).view(ndarray)
    if type(value) is np.ndarray:
        return value.view(ndarray)
    if isinstance(value, tuple):
        return tuple(_as_cupy(v) for v in value)
    return value


def _generic_clip(x: Any, /, min: Any = None, max: Any = None) -> Any:
    """``clip`` as array_api_compat's CuPy namespace has it (array_api_compat's generic
    version, up to 1.16 at least): for each bound given, the elements past it are found
    and replaced by indexing with a boolean mask, to read and to write (two reads)."""
    for bound in (min, max):
        if bound is not None:
            _read(_read(None))
    return _as_cupy(np.clip(np.asarray(x), min, max))


class _Namespace(types.ModuleType):
    """``array_api_compat.cupy`` on the stand-in: array_api_compat's NumPy namespace,
    taking (and ignoring) CuPy devices and returning stand-in arrays, except where the
    CuPy namespace's version of a function reads the device and NumPy's does not
    (``clip``)."""

    def __getattr__(self, name: str) -> Any:
        import array_api_compat.numpy as compat_numpy

        if name == "clip":
            return _generic_clip
        value = getattr(compat_numpy, name)
        if not callable(value) or isinstance(value, type):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            kwargs.pop("device", None)
            if name in ("nonzero", "unique_values", "unique_counts", "unique_all"):
                _read(None)  # the output's size is read from the device
            if name == "asarray":
                _written(args[0])
            return _as_cupy(value(*args, **kwargs))

        return call


def install(monkeypatch: Any) -> dict[str, Any]:
    """Put the stand-in in ``sys.modules`` as ``cupy`` and ``cupyx`` (and
    ``array_api_compat.cupy`` as the NumPy namespace); returns the record of calls."""
    record: dict[str, Any] = {
        "compute_types": [],
        "atomic_sums": 0,
        "pinned": 0,
        "free_memory_queries": 0,
    }
    compute = {"float32": COMPUTE_TYPE_DEFAULT, "float64": COMPUTE_TYPE_DEFAULT}

    def asarray(x: Any, dtype: Any = None) -> ndarray:
        _written(x)
        return np.asarray(x, dtype=dtype).view(ndarray)

    def get_compute_type(dtype: Any) -> int:
        return compute[np.dtype(dtype).name]

    def set_compute_type(dtype: Any, code: int) -> None:
        record["compute_types"].append(code)
        compute[np.dtype(dtype).name] = code

    def add_at(a: np.ndarray, indices: Any, b: Any) -> None:
        record["atomic_sums"] += 1
        launched_on.append(current_device[-1])
        np.add.at(a, np.asarray(indices), np.asarray(b))

    def mem_info() -> tuple[int, int]:
        record["free_memory_queries"] += 1
        return 8 << 30, 16 << 30

    def empty_pinned(shape: Any, dtype: Any = np.float64) -> np.ndarray:
        record["pinned"] += 1
        return np.empty(shape, dtype=dtype)

    cupy = types.ModuleType("cupy")

    def bincount(x: Any, *args: Any, **kwargs: Any) -> Any:
        _read(None)  # CuPy's bincount reads max(x) to size its output
        return np.bincount(np.asarray(x), *args, **kwargs).view(ndarray)

    cupy.bincount = bincount
    for name in ("int32", "int64", "float32", "float64"):
        setattr(cupy, name, getattr(np, name))
    for name in (
        "argmin",
        "argsort",
        "searchsorted",
        "arange",
        "zeros",
        "ones",
        "empty",
        "maximum",
        "max",
        "min",
        "mean",
        "sum",
        "concatenate",  # these four: what Dask registers for CuPy blocks
        "take",
        "tensordot",
        "einsum",
    ):  # device arrays out
        setattr(cupy, name, _device_results(getattr(np, name)))
    cupy.ndarray = ndarray
    cupy.add = types.SimpleNamespace(at=add_at)
    cupy.asarray = asarray
    cupy.ascontiguousarray = lambda x: np.ascontiguousarray(x).view(ndarray)
    cupy.asnumpy = lambda x: _read(np.array(np.asarray(x), copy=True))
    cupy.from_dlpack = lambda x: np.from_dlpack(x).view(ndarray)
    cupy.get_default_memory_pool = _Pool
    cupy.RawModule = _RawModule
    cupy.__version__ = "0.0-host-stand-in"
    cupy.__spec__ = importlib.machinery.ModuleSpec("cupy", None)
    runtime = types.SimpleNamespace(
        getDeviceCount=lambda: 1,
        memGetInfo=mem_info,
        getDeviceProperties=lambda index: {"name": b"host stand-in", "totalGlobalMem": 16 << 30},
    )
    memory_hook = types.ModuleType("cupy.cuda.memory_hook")
    memory_hook.MemoryHook = _MemoryHook
    cupy.cuda = types.SimpleNamespace(
        runtime=runtime,
        Device=_Device,
        Stream=_Stream,
        Event=_Event,
        memory_hook=memory_hook,
        get_elapsed_time=_elapsed_ms,
    )
    linalg = types.ModuleType("cupy._core._routines_linalg")
    linalg.COMPUTE_TYPE_DEFAULT = COMPUTE_TYPE_DEFAULT
    linalg.COMPUTE_TYPE_TF32 = COMPUTE_TYPE_TF32
    core = types.ModuleType("cupy._core")
    core.get_compute_type = get_compute_type
    core.set_compute_type = set_compute_type
    core._routines_linalg = linalg
    cupy._core = core
    cupyx = types.ModuleType("cupyx")
    cupyx.empty_pinned = empty_pinned
    cupyx.allow_synchronize = allow_synchronize
    cupyx.DeviceSynchronized = DeviceSynchronized
    for name, module in (
        ("cupy", cupy),
        ("cupy._core", core),
        ("cupy.cuda", cupy.cuda),
        ("cupy.cuda.memory_hook", memory_hook),
        ("cupy._core._routines_linalg", linalg),
        ("cupyx", cupyx),
        ("array_api_compat.cupy", _Namespace("array_api_compat.cupy")),
    ):
        monkeypatch.setitem(sys.modules, name, module)
    return record


def clear_backend_caches() -> None:
    """Forget what kmeans-gpu found out about CuPy (device, backend, compiled kernels)."""
    from kmeans_gpu import backends
    from kmeans_gpu.backends import _cuda, _cupy

    backends._cupy_has_device.cache_clear()
    backends._factory.cache_clear()
    _cupy.make_backend.cache_clear()
    _cuda._module.cache_clear()


@contextlib.contextmanager
def stand_in(monkeypatch: Any) -> Iterator[dict[str, Any]]:
    """The stand-in installed for a block (skipped where the real CuPy is installed:
    the ``gpu`` tests run that); yields the record of calls."""
    import pytest

    if "cupy" in sys.modules or importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed: the real one is tested instead")
    clear_backend_caches()
    current_device[:], home_device[:] = [0], [0]
    launched_on.clear()
    try:
        yield install(monkeypatch)
    finally:
        clear_backend_caches()
        assert current_device == [0], "a device scope was left open"
