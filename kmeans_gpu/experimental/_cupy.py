"""CuPy: the generic backend on a CUDA device, with CUDA kernels for the argmin of
cuBLAS's product (``_cuda``) and float-atomic per-cluster sums."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ._base import Array, Backend, Staging


class CupyBackend(Backend):
    def __init__(self) -> None:
        import array_api_compat.cupy as xp
        import cupy

        from ._cuda import deterministic_sums_mode, kernel_mode, pending_kernels_enabled

        super().__init__(xp, "cupy")
        self._cupy = cupy
        self._copy_stream: Any = None
        #: the custom CUDA kernels in use: "argmin" (default), "fused", "triton" or None
        #: (plain CuPy); see ``_cuda``
        self.custom_kernel = kernel_mode()
        if self.custom_kernel == "triton":
            from . import _triton

            if not _triton.available():
                raise ValueError(
                    "KMEANS_GPU_CUDA_KERNELS=triton needs the triton and torch packages"
                )
        #: the kernel written since the last GPU run, pending its check (the inertia's
        #: terms in one read): ``KMEANS_GPU_PENDING_KERNELS``
        self.pending_kernels = pending_kernels_enabled()
        #: how ``deterministic=True`` sums: "one-hot", "sorted" or "fixed-point"
        #: (``KMEANS_GPU_DETERMINISTIC_SUMS``; the last two pending a GPU run)
        self.deterministic_sums = deterministic_sums_mode()

    @property
    def _pending_on(self) -> bool:
        """Whether the pending kernels run: asked for, and custom kernels not off."""
        return self.pending_kernels and self.custom_kernel is not None

    def owns(self, x: object) -> bool:
        return isinstance(x, self._cupy.ndarray)

    def asarray(self, x: Any, *, dtype: Any = None, device: Any = None) -> Array:
        if device is None:
            return self._cupy.asarray(x, dtype=dtype)
        with device:
            return self._cupy.asarray(x, dtype=dtype)

    def to_numpy(self, x: Array) -> np.ndarray:
        return self._cupy.asnumpy(x)

    def default_working_memory(self) -> int:
        """A quarter of the free device memory, at most 1 GiB, for one chunk's scores:
        big matrix products for cuBLAS, few chunks per iteration, room for the data."""
        free, _ = self._cupy.cuda.runtime.memGetInfo()
        return int(max(32 << 20, min(free // 4, 1 << 30)))

    @functools.cached_property
    def reduced_products(self) -> frozenset[str]:  # type: ignore[override]
        """TF32 and bfloat16 products need tensor cores (compute capability 8.0+)."""
        major = int(self._cupy.cuda.Device().compute_capability) // 10
        return frozenset({"tf32", "bf16"}) if major >= 8 else frozenset()

    @contextlib.contextmanager
    def _compute_type(self, dtype: Any, precision: str) -> Iterator[None]:
        """cuBLAS products of ``dtype`` at ``precision`` inside the block: exact float32
        unless asked (so ``CUPY_TF32=1`` cannot sneak TF32 into the exact path)."""
        from cupy._core import _routines_linalg as linalg

        code = {
            "exact": linalg.COMPUTE_TYPE_DEFAULT,
            "tf32": linalg.COMPUTE_TYPE_TF32,
            "bf16": linalg.COMPUTE_TYPE_BF16,
        }[precision]
        core = self._cupy._core
        previous = core.get_compute_type(dtype)
        core.set_compute_type(dtype, code)
        try:
            yield
        finally:
            core.set_compute_type(dtype, previous)

    def reduced_product(self, X: Array, scaled: Array, precision: str) -> Array:
        with self._compute_type(X.dtype, precision):  # inputs rounded, float32 sums
            return X @ scaled.T

    def assign(
        self, X: Array, centers: Array, centers_sq: Array, precision: str = "exact"
    ) -> Array:
        if self.computes_reduced(precision):  # reduced product, near ties re-checked
            return super().assign(X, centers, centers_sq, precision)
        if self.custom_kernel == "fused":  # the scores are never written
            from ._cuda import fused_argmin

            return fused_argmin(X, -2.0 * centers, centers_sq)
        with self._compute_type(X.dtype, "exact"):
            # (-2c)·x is exactly -2(c·x): the generic scores with one pass over the
            # (rows × k) block fewer; the sum with ‖c‖² in place, one more fewer
            product = X @ (-2.0 * centers).T
            if self.custom_kernel is not None:  # "argmin" or "triton"
                from ._cuda import argmin_scores

                return argmin_scores(product, centers_sq)  # reads the product once
            product += centers_sq
            return self._cupy.argmin(product, axis=1).astype(self._cupy.int32)

    def assignment_columns(
        self, n_clusters: int, n_features: int, precision: str, deterministic: bool = False
    ) -> int:
        # the Triton kernel writes no scores; deterministic sums still take the parts'
        # temporaries (a one-hot matrix, or fixed point's 16 bytes a value)
        if self.triton_assigns(precision) and not deterministic:
            from . import _triton

            return _triton.assignment_columns(n_features)
        return super().assignment_columns(n_clusters, n_features, precision)

    def engine_for(self, precision: str, dtype: Any) -> str:
        """With the Triton kernel on, exact float32 fits run as split TF32: the same
        labels (near ties re-checked with the exact product), on tensor cores."""
        if precision == "exact" and dtype == self._cupy.float32 and self.triton_assigns("tf32x3"):
            return "tf32x3"
        return precision

    def triton_assigns(self, precision: str) -> bool:
        """Whether the Triton kernel finds the nearest centres at ``precision``."""
        from . import _triton

        return (
            self.custom_kernel == "triton"
            and precision in _triton.INPUT_PRECISION
            and self.computes_reduced(precision)
        )

    def reduced_nearest_two(
        self, X: Array, scaled: Array, centers_sq: Array, precision: str
    ) -> tuple[Array, Array, Array]:
        if self.triton_assigns(precision):
            from . import _triton

            return _triton.nearest_two(X, scaled, centers_sq, precision)  # no product
        return super().reduced_nearest_two(X, scaled, centers_sq, precision)

    def reduced_step(
        self,
        X: Array,
        origin: tuple[Array, int] | None,
        centers: Array,
        centers_sq: Array,
        rows_sq: Array,
        weights: Array | None,
        precision: str,
        statistics: bool = True,
        deterministic: bool = False,
    ) -> tuple[Array, Array, Array | None, Array | None]:
        """With the Triton kernel, one pass over the stored rows: centred, assigned,
        near ties marked and the other rows summed (float atomics) in one kernel, with
        no working rows, scores or score pairs written (deterministic sums: as before)."""
        if self.triton_assigns(precision) and not (statistics and deterministic):
            from . import _triton

            return _triton.lloyd_step(
                X, origin, -2.0 * centers, centers_sq, rows_sq, weights, precision, statistics
            )
        return super().reduced_step(
            X, origin, centers, centers_sq, rows_sq, weights, precision, statistics, deterministic
        )

    def split_columns(self, x: Array, pieces: tuple[bool, bool, bool]) -> Array:
        if self.custom_kernel is None:
            return super().split_columns(x, pieces)
        from ._cuda import split_tf32_columns

        return split_tf32_columns(x, pieces)  # one pass instead of eight

    def nearest_two(self, product: Array, centers_sq: Array) -> tuple[Array, Array, Array]:
        if self.custom_kernel is None:
            return super().nearest_two(product, centers_sq)
        from ._cuda import nearest_two

        return nearest_two(product, centers_sq)

    def host_copy(
        self, x: Array, owned: bool = False, staging: Staging | None = None
    ) -> Callable[[], np.ndarray]:
        """Copy ``x`` into pinned host memory on a separate stream, without blocking.

        The copy waits (on the device) for the work queued so far on the current
        stream, then runs beside whatever is queued next; the returned callable waits
        for the copy alone. ``x`` stays referenced until then, so the memory pool cannot
        hand its memory out while it is read. (``owned`` changes nothing here: the data
        are on the device, so there is always a copy.)

        Without ``staging`` the result is the pinned buffer itself. With it (the frame
        stream's), the pinned buffers are reused: the callable copies the values out
        into ordinary host memory and gives the buffer back to ``staging`` for the next
        copy of that shape. So a caller who keeps every result (``list(iter_frames(...))``)
        holds no page-locked memory for them (it was one label array per frame: 40 MB a
        frame for ten million points), and after the first two copies of each shape no
        pinned memory is allocated (page-locking is slow, and may wait for the device).
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

    def column_mean(self, X: Array) -> Array:
        """A cuBLAS vector-matrix product: CuPy's own reduction down the columns of a
        tall array runs on ``d / 32`` thread blocks (4 for 128 features), so it reads X
        on a few SMs; the product reads it at full bandwidth. No TF32."""
        ones = self._cupy.ones(X.shape[0], dtype=X.dtype)
        with self._compute_type(X.dtype, "exact"):
            return (ones @ X) / X.shape[0]

    def sq_dist_to_assigned(self, X: Array, centers: Array, labels: Array) -> Array:
        if not self._pending_on:
            return super().sq_dist_to_assigned(X, centers, labels)
        from ._cuda import sq_dist_to_assigned

        return sq_dist_to_assigned(X, centers, labels)  # one read of X, no temporaries

    def count_labels(self, labels: Array, n_clusters: int) -> Array:
        return self._cupy.bincount(labels, minlength=n_clusters)

    def cluster_sums(
        self,
        X: Array,
        labels: Array,
        weights: Array | None,
        n_clusters: int,
        deterministic: bool = False,
    ) -> tuple[Array, Array]:
        if deterministic:  # float atomics add in a varying order
            if self.deterministic_sums == "fixed-point":  # integers add in any order
                return fixed_point_sums(self._cupy, X, labels, weights, n_clusters)
            if self.deterministic_sums == "sorted" and self.custom_kernel is not None:
                from ._cuda import sorted_sums  # each cluster's rows in a fixed order

                return sorted_sums(X, labels, weights, n_clusters)
            with self._compute_type(X.dtype, "exact"):  # the one-hot product
                return super().cluster_sums(X, labels, weights, n_clusters)
        # One float atomic per element: on an H200 this beat sorting the rows by label
        # and adding runs of equal labels (G1: 2.36 against 2.56 ms; BENCHMARKS.md).
        # Not cupy.bincount for the weights: it reads labels.max() back to the host,
        # a sync per chunk.
        cp = self._cupy
        rows = X if weights is None else X * weights[:, None]
        sums = cp.zeros((n_clusters, X.shape[1]), dtype=X.dtype)
        cp.add.at(sums, labels, rows)
        weight_sums = cp.zeros(n_clusters, dtype=X.dtype)
        ones = cp.ones(labels.shape[0], dtype=X.dtype) if weights is None else weights
        cp.add.at(weight_sums, labels, ones)
        return sums, weight_sums


def fixed_point_sums(
    cp: Any, X: Array, labels: Array, weights: Array | None, n_clusters: int
) -> tuple[Array, Array]:
    """Per-cluster sums of the rows of ``X`` (times ``weights``) ``(k, d)`` and their
    weights ``(k,)``, in ``X``'s dtype, bitwise the same in any order of the rows.

    Each value ``w·x`` (exact in float64) is rounded once to an integer multiple of
    ``2⁻ˢ`` and the integers are added with CuPy's atomics on unsigned 64-bit integers
    (two's complement: the wrapping additions of negative values are exact). Integer
    addition is associative, so the atomics' varying order changes no bit. ``2ˢ`` is the
    largest power of two with ``rows · max|x| · max w · 2ˢ ≤ 2⁶²``, so no partial sum
    overflows, and each value is off by at most ``2⁻ˢ⁻¹``, far below float32's own
    rounding. Rows go in pieces whose temporaries (16 bytes per value) take no more than
    the chunk's share of the workspace (one piece when ``k ≥ d``); the scale is the
    chunk's, so the pieces add as integers too."""
    m, d = int(X.shape[0]), int(X.shape[1])
    top = cp.maximum(cp.max(X), -cp.min(X)).astype(cp.float64)  # on the device: no sync
    w = None if weights is None else weights.astype(cp.float64)
    totals = cp.zeros(n_clusters, dtype=cp.uint64)
    if w is None:
        scale = _fixed_point_scale(cp, top * m)
        cp.add.at(totals, labels, cp.ones(m, dtype=cp.uint64))
    else:
        heaviest = cp.max(w)
        scale = _fixed_point_scale(cp, top * heaviest * m)
        weight_scale = _fixed_point_scale(cp, heaviest * m)
        cp.add.at(totals, labels, _fixed(cp, w * weight_scale))
    sums = cp.zeros((n_clusters, d), dtype=cp.uint64)
    step = max(1, m * (n_clusters + d) // (2 * d))
    for a in range(0, m, step):
        rows = X[a : a + step].astype(cp.float64)  # exact, and the products below too
        if w is not None:
            rows *= w[a : a + step, None]
        rows *= scale
        cp.add.at(sums, labels[a : a + step], _fixed(cp, rows))
    sums_out = sums.view(cp.int64).astype(cp.float64) / scale
    totals_out = totals.view(cp.int64).astype(cp.float64)
    if w is not None:
        totals_out /= weight_scale
    return sums_out.astype(X.dtype), totals_out.astype(X.dtype)


def _fixed_point_scale(cp: Any, bound: Array) -> Array:
    """The largest power of two ``2ˢ`` (a 0-d float64 array) with ``bound · 2ˢ ≤ 2⁶²``
    (any finite scale when ``bound`` is 0)."""
    exponent = 62 - cp.ceil(cp.log2(cp.maximum(bound, 2.0**-900)))
    return cp.ldexp(1.0, exponent.astype(cp.int32))


def _fixed(cp: Any, scaled: Array) -> Array:
    """``scaled`` (float64, overwritten) rounded to the nearest integers, as unsigned
    64-bit integers (two's complement)."""
    cp.rint(scaled, out=scaled)
    return scaled.astype(cp.int64).view(cp.uint64)


@functools.cache
def make_backend() -> CupyBackend:
    """The one CuPy backend of this process."""
    return CupyBackend()
