"""The Triton kernel of the experimental CuPy backend (``CupyBackend(triton=True)``;
``triton`` and ``torch`` installed: Triton's CUDA driver asks torch for the device and
stream).

It finds each row's two nearest centres at a reduced precision without writing the
scores: a block of rows is multiplied with one tile of centres after another on tensor
cores (``tl.dot`` with TF32 inputs, or Triton's own split TF32; float32 sums) and each
tile's scores ``x·(−2c) + ‖c‖²`` are folded at once into the rows' running best score,
its index (the first on ties) and the second-best score. In its step mode it is a
chunk's whole share of a pass (``ReducedPrecision``): the stored rows centred, the
near ties marked, the other rows summed with float32 atomics. The near ties are then
settled exactly as after cuBLAS's product: the labels are the exact ones.

Up to 128 features a block may keep its rows for all centre tiles; beyond, it reads
them again per tile in slices of 32 features (:data:`CONFIGS`). The kernel is tested
with Triton's interpreter (on torch CPU tensors) against the array API path, compiled
for sm_80 and sm_90 by Triton's own ptxas, and run by ``gpu`` tests on CuPy.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .._assign import Centers
from ._cuda import rescale_factors
from ._precision import Margin, Precision


@dataclass(frozen=True)
class Config:
    """A launch shape: rows per block, centres per tile, warps, pipeline stages, and
    whether the block keeps its rows for every centre tile (else it reads them again per
    tile, :data:`FEATURE_SLICE` features at a time)."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    resident: bool


#: the widest rows (padded to a power of two) a block keeps for every centre tile
RESIDENT_FEATURES = 128
FEATURE_SLICE = 32

#: The launch shapes by (precision, compute capability 9.0 or later) for rows of up to
#: RESIDENT_FEATURES, from Triton 3.6's compilation for sm_80 and sm_90 (on sm_90
#: ``tl.dot`` is a wgmma; tests/experimental/test_triton.py checks that each fits its
#: device's shared memory). Which shape is fastest is what the phase profile measures.
CONFIGS = {
    ("tf32", True): Config(128, 64, 8, 2, True),  # 128 KiB shared, 80 registers
    ("tf32", False): Config(64, 64, 4, 2, True),  # 65 KiB, 128 registers
    ("tf32x3", True): Config(64, 64, 4, 3, True),  # 192 KiB, 213 registers
    ("tf32x3", False): Config(64, 64, 4, 3, False),  # 32 KiB (kept rows spill on sm_80)
}
#: rows wider than RESIDENT_FEATURES, any precision and device
WIDE = Config(64, 64, 4, 3, False)


def config_for(precision: Precision, n_features: int, hopper: bool) -> Config:
    """The launch shape for ``precision`` and rows of ``n_features``, on a device of
    compute capability 9.0 or later (``hopper``) or not."""
    if _padded(n_features) > RESIDENT_FEATURES:
        return WIDE
    return CONFIGS[precision.name, hopper]


def _padded(n_features: int) -> int:
    return max(16, 1 << (n_features - 1).bit_length())


def available() -> bool:
    """Whether Triton (and the torch it needs for CUDA) can be imported."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("triton", "torch"))


@functools.cache
def _kernel() -> Any:
    """The jitted kernel (imported on first use: it imports Triton). Whether it runs on
    the GPU or in Triton's interpreter is ``TRITON_INTERPRET`` as it was when triton was
    first imported."""
    from ._triton_kernel import kmeans_gpu_triton_assign

    return kmeans_gpu_triton_assign


@dataclass(frozen=True)
class Step:
    """What the kernel needs, beyond :func:`launch`'s arguments, for a pass's share
    (arrays as Triton takes them): the stored rows' origin (``mean`` ``(d,)`` float32 and
    the powers of two ``factors`` of ``rescale``), the working rows' squared norms
    ``rows_sq`` ``(n,)``, the largest centre norm (one value, on the device), the
    near-tie ``margin``, the rows' ``weights`` (or None), and its outputs: ``near``
    (int8, ``(n,)``), ``sums`` ``(k, d)`` and ``weight_sums`` ``(k,)`` (float32, added
    to)."""

    mean: Any
    factors: tuple[float, float]
    rows_sq: Any
    max_center_norm: Any
    margin: Margin
    weights: Any
    near: Any
    sums: Any
    weight_sums: Any


def launch(
    X: Any,
    scaled: Any,
    centers_sq: Any,
    labels: Any,
    best: Any,
    second: Any,
    n: int,
    k: int,
    d: int,
    precision: Precision,
    config: Config,
    step: Step | None = None,
) -> None:
    """Run the kernel on arrays Triton takes as pointers (torch tensors, or
    :class:`_Pointer`), all C-contiguous: X ``(n, d)`` and ``scaled = −2·centres``
    ``(k, d)`` float32, ``centers_sq`` ``(k,)``; it writes ``labels`` (int32), and
    ``best`` and ``second`` ``(n,)`` or, with a ``step``, that step's outputs (``best``
    and ``second`` unused), launched as ``config`` says."""
    padded = _padded(d)
    if config.resident and padded > RESIDENT_FEATURES:
        raise ValueError(f"rows of {d} features are too wide to keep: {config}")
    unused = X  # a pointer the kernel does not touch in this mode
    extra = (
        (unused,) * 7
        if step is None
        else (
            step.mean,
            step.rows_sq,
            step.max_center_norm,
            unused if step.weights is None else step.weights,
            step.near,
            step.sums,
            step.weight_sums,
        )
    )
    f1, f2 = (1.0, 1.0) if step is None else step.factors
    margin = Margin(0.0, 0.0) if step is None else step.margin
    _kernel()[((n + config.block_m - 1) // config.block_m,)](
        X,
        scaled,
        centers_sq,
        labels,
        best,
        second,
        *extra,
        n,
        k,
        d,
        f1,
        f2,
        margin.squares,
        margin.product,
        BLOCK_M=config.block_m,
        BLOCK_N=config.block_n,
        D_PAD=padded,
        RESIDENT=config.resident,
        BLOCK_K=FEATURE_SLICE,
        PRECISION=precision.name,
        STEP=step is not None,
        WEIGHTED=step is not None and step.weights is not None,
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )


class _Pointer:
    """A CuPy array as Triton takes its arguments: ``data_ptr()`` and ``dtype``."""

    __slots__ = ("dtype", "ptr")

    def __init__(self, array: Any) -> None:
        self.ptr = int(array.data.ptr)
        self.dtype = array.dtype

    def data_ptr(self) -> int:
        return self.ptr


def _config(precision: Precision, n_features: int, config: Config | None) -> Config:
    """``config``, or the launch shape for this device."""
    if config is not None:
        return config
    import cupy

    hopper = int(cupy.cuda.Device().compute_capability) >= 90
    return config_for(precision, n_features, hopper)


def nearest_two(
    X: Any, scaled: Any, centers_sq: Any, precision: Precision, config: Config | None = None
) -> tuple[Any, Any, Any]:
    """For CuPy float32 ``X`` ``(n, d)`` and ``scaled = −2·centres`` ``(k, d)``: each
    row's nearest centre (int32, first on ties), its score and the second-best score
    (``x·s + ‖c‖²`` from a ``precision`` product), as ``nearest_two_of`` that product
    gives them, without writing the product. ``config``: the launch shape (default:
    :func:`config_for` this device)."""
    import cupy

    n, d = (int(v) for v in X.shape)
    config = _config(precision, d, config)
    k = int(scaled.shape[0])
    squares = centers_sq.astype(cupy.float32, copy=False)
    arrays = [cupy.ascontiguousarray(a) for a in (X, scaled, squares)]
    labels = cupy.empty(n, dtype=cupy.int32)
    best = cupy.empty(n, dtype=cupy.float32)
    second = cupy.empty(n, dtype=cupy.float32)
    x, s, squares_at = (_Pointer(a) for a in arrays)
    with _on_cupy_device_and_stream():
        launch(
            x,
            s,
            squares_at,
            _Pointer(labels),
            _Pointer(best),
            _Pointer(second),
            n,
            k,
            d,
            precision,
            config,
        )
    return labels, best, second


def lloyd_step(
    X: Any,
    origin: tuple[Any, int],
    centers: Centers,
    rows_sq: Any,
    weights: Any,
    precision: Precision,
    margin: Margin,
    config: Config | None = None,
) -> tuple[Any, Any, Any, Any]:
    """``TensorCores.reduced_step`` in one pass over CuPy float32 stored rows ``X``
    ``(n, d)`` with their ``origin`` (``(mean, exponent)``, mean float64 holding float32
    values): the provisional labels, the near ties (bool), and the float32 atomic sums
    ``(k, d)`` and weights ``(k,)`` of the other rows. No working rows, scores or best
    scores are written."""
    import cupy

    n, d = (int(v) for v in X.shape)
    k = centers.n_clusters
    config = _config(precision, d, config)
    # every array the kernel reads stays referenced here until it is launched
    contiguous = cupy.ascontiguousarray
    X, scaled = contiguous(X), contiguous(-2.0 * centers.working)
    squares = contiguous(centers.sq.astype(cupy.float32, copy=False))
    rows_sq = contiguous(rows_sq.astype(cupy.float32, copy=False))
    weights = None if weights is None else contiguous(weights.astype(cupy.float32, copy=False))
    mean = contiguous(origin[0].astype(cupy.float32))  # exact: it holds a float32 value
    largest = centers.largest_norm.astype(cupy.float32).reshape(1)
    labels = cupy.empty(n, dtype=cupy.int32)
    near = cupy.empty(n, dtype=cupy.int8)
    sums = cupy.zeros((k, d), dtype=cupy.float32)
    weight_sums = cupy.zeros(k, dtype=cupy.float32)
    step = Step(
        mean=_Pointer(mean),
        factors=rescale_factors(origin[1]),
        rows_sq=_Pointer(rows_sq),
        max_center_norm=_Pointer(largest),
        margin=margin,
        weights=None if weights is None else _Pointer(weights),
        near=_Pointer(near),
        sums=_Pointer(sums),
        weight_sums=_Pointer(weight_sums),
    )
    x = _Pointer(X)
    with _on_cupy_device_and_stream():
        launch(
            x,
            _Pointer(scaled),
            _Pointer(squares),
            _Pointer(labels),
            x,
            x,
            n,
            k,
            d,
            precision,
            config,
            step,
        )
    return labels, near.astype(cupy.bool_), sums, weight_sums


@contextlib.contextmanager
def _on_cupy_device_and_stream() -> Iterator[None]:
    """Triton launches on torch's current device and stream: make them CuPy's for the
    block (the same device and stream, so that CuPy's stream-ordered memory pool cannot
    hand the kernel's inputs out before it has read them)."""
    import cupy
    import torch

    ptr = cupy.cuda.get_current_stream().ptr
    with torch.cuda.device(cupy.cuda.Device().id):
        if ptr == torch.cuda.current_stream().cuda_stream:
            yield
            return
        with torch.cuda.stream(torch.cuda.ExternalStream(ptr)):
            yield
