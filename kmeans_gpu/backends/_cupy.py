"""CuPy: the generic backend on a CUDA device, with exact float32 cuBLAS products, a
CUDA kernel for the two nearest centres (``_cuda``) and float-atomic sums."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ._base import Array, Backend, Staging, centred64


class CupyBackend(Backend):
    """The CuPy backend.

    Parameters
    ----------
    kernels : bool, default=True
        Take the two nearest centres of cuBLAS's product with this package's CUDA
        kernel (one read of the scores); False uses CuPy's own operations only.
    """

    prunes = False  # (unmeasured on a GPU: each chunk would wait for a count)

    def __init__(self, kernels: bool = True) -> None:
        import array_api_compat.cupy as xp
        import cupy

        super().__init__(xp, "cupy")
        self._cupy = cupy
        self.kernels = bool(kernels)
        self._copy_stream: Any = None

    def owns(self, x: object) -> bool:
        return isinstance(x, self._cupy.ndarray)

    def __reduce__(self) -> tuple[Any, ...]:
        if type(self) is not CupyBackend:
            raise TypeError(f"a {type(self).__name__} cannot be sent to another process")
        return (make_backend, (self.kernels,))

    def asarray(self, x: Any, *, dtype: Any = None, device: Any = None) -> Array:
        if device is None:
            return self._cupy.asarray(x, dtype=dtype)
        with device:
            return self._cupy.asarray(x, dtype=dtype)

    def to_numpy(self, x: Array) -> np.ndarray:
        return self._cupy.asnumpy(x)

    def write_at(self, x: Array, index: Array, values: Array) -> None:
        x[index] = values

    def default_working_memory(self) -> int:
        """A quarter of the free device memory, at most 1 GiB: big matrix products for
        cuBLAS, few chunks per iteration, room for the data."""
        free, _ = self._cupy.cuda.runtime.memGetInfo()
        return int(max(32 << 20, min(free // 4, 1 << 30)))

    def exact_products(self, dtype: Any) -> contextlib.AbstractContextManager[None]:
        """cuBLAS products of ``dtype`` computed exactly inside the block (so that
        ``CUPY_TF32=1`` cannot bring TF32 into them), the previous setting restored."""
        return self.compute_type(dtype, "COMPUTE_TYPE_DEFAULT")

    @contextlib.contextmanager
    def compute_type(self, dtype: Any, name: str) -> Iterator[None]:
        """cuBLAS products of ``dtype`` with CuPy's compute type ``name`` (of
        ``cupy._core._routines_linalg``) inside the block, the previous one restored."""
        from cupy._core import _routines_linalg as linalg

        core = self._cupy._core
        previous = core.get_compute_type(dtype)
        core.set_compute_type(dtype, getattr(linalg, name))
        try:
            yield
        finally:
            core.set_compute_type(dtype, previous)

    def scores(self, X: Array, centers: Array, centers_sq: Array) -> Array:
        with self.exact_products(X.dtype):
            return super().scores(X, centers, centers_sq)

    def nearest_two(
        self, X: Array, centers: Array, centers_sq: Array
    ) -> tuple[Array, Array, Array]:
        if not self.kernels:
            return super().nearest_two(X, centers, centers_sq)
        from ._cuda import nearest_two

        with self.exact_products(X.dtype):
            product = X @ (-2.0 * centers).T  # (-2c)·x is exactly -2(c·x)
        return nearest_two(product, centers_sq)  # reads the product once

    def cluster_sums(
        self,
        X: Array,
        origin: tuple[Array, int],
        labels: Array,
        weights: Array | None,
        n_clusters: int,
        deterministic: bool = False,
    ) -> tuple[Array, Array]:
        if deterministic:  # the generic one-hot product: no atomics
            with self.exact_products(self._cupy.float64):
                return super().cluster_sums(X, origin, labels, weights, n_clusters)
        # one float atomic per element (not bincount: it reads labels.max() back)
        cp = self._cupy
        rows = centred64(self.xp, X, origin)
        w = cp.ones(labels.shape[0]) if weights is None else weights.astype(cp.float64)
        if weights is not None:
            rows *= w[:, None]
        sums = cp.zeros((n_clusters, X.shape[1]), dtype=cp.float64)
        cp.add.at(sums, labels, rows)
        weight_sums = cp.zeros(n_clusters, dtype=cp.float64)
        cp.add.at(weight_sums, labels, w)
        return sums, weight_sums

    def host_copy(
        self, x: Array, owned: bool = False, staging: Staging | None = None
    ) -> Callable[[], np.ndarray]:
        """Copy ``x`` into pinned host memory on a separate stream, without blocking.

        The copy waits (on the device) for the work queued so far on the current
        stream, then runs beside whatever is queued next; the returned callable waits
        for the copy alone. ``x`` stays referenced until then, so the memory pool cannot
        hand its memory out while it is read. Without ``staging`` the result is the
        pinned buffer itself; with it, pinned buffers are reused (two per shape in
        flight) and the callable copies the values out into ordinary host memory, so a
        caller who keeps every result holds no page-locked memory for them.
        """
        import cupyx

        cp = self._cupy
        if self._copy_stream is None:
            self._copy_stream = cp.cuda.Stream(non_blocking=True)
        stream = self._copy_stream
        shape = x.shape
        x = cp.ascontiguousarray(x)  # (NumPy's version of it makes 0-d arrays 1-d)
        ready = cp.cuda.Event(disable_timing=True)
        ready.record()
        stream.wait_event(ready)
        spare = None if staging is None else staging.setdefault((x.shape, x.dtype.str), [])
        out = spare.pop() if spare else cupyx.empty_pinned(x.shape, dtype=x.dtype)
        x.get(stream=stream, out=out, blocking=False)
        done = cp.cuda.Event(disable_timing=True)
        done.record(stream)

        @functools.cache  # once: a buffer given back twice would be shared
        def finish(source: Array = x) -> np.ndarray:
            done.synchronize()
            if spare is None:
                return out.reshape(shape)
            values = np.array(out, copy=True).reshape(shape)
            spare.append(out)
            return values

        return finish


@functools.cache
def make_backend(kernels: bool = True) -> CupyBackend:
    """The CuPy backend of this process (one per choice of ``kernels``)."""
    return CupyBackend(kernels)
