"""The experimental CuPy backend: the core's :class:`~kmeans_gpu.backends._cupy.
CupyBackend` with TF32 products for :class:`~kmeans_gpu.experimental.ReducedPrecision`,
the split and Triton kernels, two more ways to sum deterministically, and the
``SQ_DIST`` kernel; each chosen when the backend is made."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

from .._assign import Centers
from .._problem import Problem
from ..backends import Array
from ..backends import _cupy as core
from ..backends._base import centred64
from ._engine import Share, TensorCores
from ._precision import Margin, Precision

#: how ``deterministic=True`` sums on this backend: the core's one-hot product, the
#: sorted-segments kernel, or 64-bit fixed point
DETERMINISTIC_SUMS = ("one-hot", "sorted", "fixed-point")
#: the oldest compute capability with TF32 tensor cores (Ampere)
TENSOR_CORES = 80


class CupyBackend(core.CupyBackend, TensorCores):
    """The CuPy backend with the experimental kernels.

    Parameters
    ----------
    kernels : bool, default=True
        As the core's: this package's CUDA kernels for the two nearest centres of a
        product (exact or reduced) and for splitting inputs into TF32 parts; False
        uses CuPy's own operations for both.
    triton : bool, default=False
        Find the nearest centres of reduced-precision products with the Triton kernel,
        which never writes the scores; a pass's chunks (unless ``deterministic``) go
        through its step mode, which also centres the rows, marks the near ties and
        sums the other rows with float32 atomics (converted to float64: the sums then
        carry float32's rounding). Needs ``triton`` and ``torch``.
    deterministic_sums : {"one-hot", "sorted", "fixed-point"}, default="one-hot"
        How ``deterministic=True`` sums: the core's one-hot product, the sorted-segments
        kernel (each cluster's rows added in a fixed order), or 64-bit fixed point
        (integer atomics, the same bits in any order).
    sq_dist_kernel : bool, default=False
        The float64 distances of rows to given centres (the exact settling, the inertia,
        the frame stream's per-iteration inertia) from the ``SQ_DIST`` kernel, in one
        read of the rows.

    Raises
    ------
    ValueError
        For an unknown ``deterministic_sums``, or ``triton`` without triton and torch.
    """

    def __init__(
        self,
        kernels: bool = True,
        *,
        triton: bool = False,
        deterministic_sums: str = "one-hot",
        sq_dist_kernel: bool = False,
    ) -> None:
        if deterministic_sums not in DETERMINISTIC_SUMS:
            raise ValueError(
                f"deterministic_sums must be one of {DETERMINISTIC_SUMS}, "
                f"got {deterministic_sums!r}"
            )
        if triton:
            from . import _triton

            if not _triton.available():
                raise ValueError("triton=True needs the triton and torch packages")
        super().__init__(kernels)
        self.triton = bool(triton)
        self.deterministic_sums = deterministic_sums
        self.sq_dist_kernel = bool(sq_dist_kernel)
        sums: dict[str, Callable[..., tuple[Array, Array]]] = {
            "one-hot": super().cluster_sums,
            "sorted": self._sorted_sums,
            "fixed-point": self._fixed_point_sums,
        }
        self._deterministic: Callable[..., tuple[Array, Array]] = sums[deterministic_sums]

    def __repr__(self) -> str:
        return (
            f"<experimental CupyBackend kernels={self.kernels} triton={self.triton} "
            f"deterministic_sums={self.deterministic_sums!r} "
            f"sq_dist_kernel={self.sq_dist_kernel}>"
        )

    # -- reduced-precision products ---------------------------------------------------
    def computes(self, precision: Precision) -> bool:
        """TF32 (and split TF32) need tensor cores: compute capability 8.0 or later."""
        return _compute_capability(self._cupy.cuda.Device().id) >= TENSOR_CORES

    def tf32_products(self, dtype: Any) -> contextlib.AbstractContextManager[None]:
        """cuBLAS products of ``dtype`` with TF32 inputs inside the block, the previous
        setting restored."""
        return self.compute_type(dtype, "COMPUTE_TYPE_TF32")

    def reduced_product(self, X: Array, scaled: Array, precision: Precision) -> Array:
        with self.tf32_products(X.dtype):  # inputs converted to TF32, float32 sums
            return X @ scaled.T

    def exact_scores(self, rows: Array, centers: Centers) -> Array:
        with self.exact_products(rows.dtype):
            return super().exact_scores(rows, centers)

    def split_columns(self, x: Array, pieces: tuple[bool, bool, bool]) -> Array:
        if not self.kernels:
            return super().split_columns(x, pieces)
        from ._cuda import split_tf32_columns

        return split_tf32_columns(x, pieces)  # one pass instead of eight

    def nearest_two_of(self, product: Array, centers_sq: Array) -> tuple[Array, Array, Array]:
        if not self.kernels:
            return super().nearest_two_of(product, centers_sq)
        from ..backends._cuda import nearest_two

        return nearest_two(product, centers_sq)  # one read of the product

    def reduced_nearest_two(
        self, rows: Array, centers: Centers, precision: Precision
    ) -> tuple[Array, Array, Array]:
        if not self.triton:
            return super().reduced_nearest_two(rows, centers, precision)
        from . import _triton

        return _triton.nearest_two(rows, -2.0 * centers.working, centers.sq, precision)

    def reduced_step(
        self,
        problem: Problem,
        centers: Centers,
        start: int,
        stop: int,
        precision: Precision,
        margin: Margin,
    ) -> Share:
        if not self.triton or problem.deterministic:  # deterministic: no atomics
            return super().reduced_step(problem, centers, start, stop, precision, margin)
        from . import _triton

        w = None if problem.weights is None else problem.weights[start:stop]
        labels, near, sums, weights = _triton.lloyd_step(
            problem.X[start:stop, ...],
            problem.origin,
            centers,
            problem.squared_row_norms[start:stop],
            w,
            precision,
            margin,
        )
        cp = self._cupy
        return labels, near, sums.astype(cp.float64), weights.astype(cp.float64)

    def step_columns(self, n_clusters: int, n_features: int, precision: Precision) -> int:
        if self.triton:  # no scores, no split rows: a block of them at a time
            return 0
        return super().step_columns(n_clusters, n_features, precision)

    # -- sums and distances -----------------------------------------------------------
    def cluster_sums(
        self,
        X: Array,
        origin: tuple[Array, int],
        labels: Array,
        weights: Array | None,
        n_clusters: int,
        deterministic: bool = False,
    ) -> tuple[Array, Array]:
        if deterministic:
            return self._deterministic(X, origin, labels, weights, n_clusters, True)
        return super().cluster_sums(X, origin, labels, weights, n_clusters)

    def _sorted_sums(
        self,
        X: Array,
        origin: tuple[Array, int],
        labels: Array,
        weights: Array | None,
        n_clusters: int,
        deterministic: bool = True,
    ) -> tuple[Array, Array]:
        from ._cuda import sorted_sums

        return sorted_sums(centred64(self.xp, X, origin), labels, weights, n_clusters)

    def _fixed_point_sums(
        self,
        X: Array,
        origin: tuple[Array, int],
        labels: Array,
        weights: Array | None,
        n_clusters: int,
        deterministic: bool = True,
    ) -> tuple[Array, Array]:
        rows = centred64(self.xp, X, origin)
        return fixed_point_sums(self._cupy, rows, labels, weights, n_clusters)

    def sq_distances(self, X: Array, centers: Array, labels: Array, exponent: int) -> Array:
        if not self.sq_dist_kernel:
            return super().sq_distances(X, centers, labels, exponent)
        from ._cuda import sq_distances

        return sq_distances(X, centers, labels, exponent)


@functools.cache
def _compute_capability(device: int) -> int:
    """The compute capability of CUDA device ``device``, as 10·major + minor."""
    import cupy

    return int(cupy.cuda.Device(device).compute_capability)


@functools.cache
def make_backend(
    kernels: bool = True,
    triton: bool = False,
    deterministic_sums: str = "one-hot",
    sq_dist_kernel: bool = False,
) -> CupyBackend:
    """The experimental CuPy backend of this process for these options (one per
    choice)."""
    return CupyBackend(
        kernels,
        triton=triton,
        deterministic_sums=deterministic_sums,
        sq_dist_kernel=sq_dist_kernel,
    )


def fixed_point_sums(
    cp: Any, rows: Array, labels: Array, weights: Array | None, n_clusters: int
) -> tuple[Array, Array]:
    """Per-cluster sums of float64 ``rows`` (times ``weights``) ``(k, d)`` and their
    weights ``(k,)``, float64, bitwise the same in any order of the rows.

    Each value ``w·x`` is rounded once to an integer multiple of ``2⁻ˢ`` and the
    integers are added with CuPy's atomics on unsigned 64-bit integers (two's
    complement: the wrapping additions of negative values are exact). Integer addition
    is associative, so the atomics' varying order changes no bit. ``2ˢ`` is the largest
    power of two with ``rows · max|x| · max w · 2ˢ ≤ 2⁶²``, so no partial sum overflows,
    and each value is off by at most ``2⁻ˢ⁻¹``, far below float32's own rounding. Rows
    go in pieces whose temporaries (16 bytes per value) take no more room than a one-hot
    matrix of the rows would; the scale is the whole call's, so the pieces add as
    integers too."""
    m, d = int(rows.shape[0]), int(rows.shape[1])
    top = cp.maximum(cp.max(rows), -cp.min(rows))  # on the device: no sync
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
        part = rows[a : a + step] if w is None else rows[a : a + step] * w[a : a + step, None]
        cp.add.at(sums, labels[a : a + step], _fixed(cp, part * scale))
    sums_out = sums.view(cp.int64).astype(cp.float64) / scale
    totals_out = totals.view(cp.int64).astype(cp.float64)
    if w is not None:
        totals_out /= weight_scale
    return sums_out, totals_out


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
