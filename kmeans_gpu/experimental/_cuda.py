"""The experimental CuPy backend's CUDA kernels, compiled once per process by NVRTC.

``SPLIT`` splits float32 inputs into their TF32 parts for split TF32 in one pass;
``SORTED_SUMS`` sums each cluster's rows in a fixed order (deterministic sums without a
one-hot matrix); ``SQ_DIST`` computes the core's ``sq_distances`` (float64 differences
of rescaled values) in one read of the rows. The sources are compiled with ``nvcc
-ptx`` in the test suite (no GPU needed), and ``gpu`` tests compare each kernel with
the array API path it replaces.
"""

from __future__ import annotations

import functools
from typing import Any

from ..backends._cuda import _launch as core_launch

#: The split TF32 inputs of split TF32 in one pass: each float32 ``x`` of a (rows, d)
#: matrix becomes TF32 ``high`` (x rounded to nearest at 11 bits) and ``low`` (the
#: remainder rounded the same way) by Veltkamp's splitting, with the float32 operations
#: rounded to nearest and never contracted into FMAs (``__fmul_rn``, ``__fsub_rn``), so
#: the parts are bitwise those of ``_precision.split_tf32``. They are written as three
#: column blocks (rows, 3d); bit j of ``low_blocks`` makes block j the low part. One
#: thread per element.
SPLIT_SOURCE = r"""
__device__ __forceinline__ float kmeans_gpu_veltkamp_high(float x)
{
    const float scaled = __fmul_rn(8193.0f, x);  // 2^13 + 1: 24 bits down to 11
    return __fsub_rn(scaled, __fsub_rn(scaled, x));
}

extern "C" __global__ void kmeans_gpu_split_tf32_f32(
    const float* __restrict__ x, long long elements, int d, int low_blocks,
    float* __restrict__ out)
{
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= elements) {
        return;
    }
    const long long row = i / d;
    const long long col = i - row * d;
    const float value = x[i];
    const float high = kmeans_gpu_veltkamp_high(value);
    const float low = kmeans_gpu_veltkamp_high(__fsub_rn(value, high));
    float* written = out + row * 3LL * d + col;
    written[0] = (low_blocks & 1) ? low : high;
    written[d] = (low_blocks & 2) ? low : high;
    written[2LL * d] = (low_blocks & 4) ? low : high;
}
"""
SPLIT_KERNELS = {"float32": "kmeans_gpu_split_tf32_f32"}
SPLIT_THREADS = 256

#: Deterministic per-cluster sums of float64 rows without a one-hot matrix and without
#: atomics: ``order`` lists the rows sorted (stably) by label, cluster j's at positions
#: ``offsets[j]`` to ``offsets[j + 1]``. Block (j, p) of a (k, P) grid takes positions
#: ``offsets[j] + p``, ``+ p + P``, … in that order and sums their (weighted) rows, one
#: thread per feature, into ``partial_sums[p, j]``, and their weights into
#: ``partial_weights[p, j]``; the P partials are added in order afterwards. Every sum
#: has a fixed order, so the result is bitwise the same on every run.
SORTED_SUMS_SOURCE = r"""
extern "C" __global__ void kmeans_gpu_sorted_sums_f64(
    const double* __restrict__ X, const long long* __restrict__ order,
    const long long* __restrict__ offsets, const double* __restrict__ weights,
    int has_weights, int k, int d, double* __restrict__ partial_sums,
    double* __restrict__ partial_weights)
{
    const int cluster = blockIdx.x;
    const int part = blockIdx.y;
    const int parts = gridDim.y;
    const long long first = offsets[cluster] + part, stop = offsets[cluster + 1];
    const long long out = (long long)part * k + cluster;
    for (int feature = threadIdx.x; feature < d; feature += blockDim.x) {
        double total = 0.0;
        for (long long at = first; at < stop; at += parts) {
            const long long row = order[at];
            const double value = X[row * d + feature];
            total += has_weights ? value * weights[row] : value;
        }
        partial_sums[out * d + feature] = total;
    }
    if (threadIdx.x == 0) {
        double total = 0.0;
        for (long long at = first; at < stop; at += parts) {
            total += has_weights ? weights[order[at]] : 1.0;
        }
        partial_weights[out] = total;
    }
}
"""
SORTED_SUMS_KERNELS = {"float64": "kmeans_gpu_sorted_sums_f64"}
#: threads per (cluster, part) block: one per feature, up to this many
SORTED_SUMS_THREADS = 128
#: blocks per cluster: enough blocks in all for a GPU's SMs when k is small
SORTED_SUMS_BLOCKS = 2048

#: ``‖(x − c_label)·2**e‖²`` of each row, as ``Backend.sq_distances`` computes it: the
#: values made float64 and rescaled by the two powers of two ``f1``, ``f2`` of
#: ``rescale`` (exact), their differences squared and summed in float64, in one read of
#: the rows (the array API path writes the gathered centres and two float64 copies as
#: large as the rows). One warp per row; the warp's sum runs in another order than
#: CuPy's, so the results agree to float64 rounding.
SQ_DIST_SOURCE = r"""
template <typename T>
__device__ __forceinline__ void kmeans_gpu_sq_dist_row(
    const T* __restrict__ X, const T* __restrict__ centers, const int* __restrict__ labels,
    long long rows, int d, double f1, double f2, double* __restrict__ out)
{
    const long long row = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= rows) {
        return;  // the whole warp leaves together: one warp, one row
    }
    const T* x = X + row * (long long)d;
    const T* c = centers + (long long)labels[row] * d;
    double total = 0.0;
    for (int j = lane; j < d; j += 32) {
        const double difference = ((double)x[j] * f1) * f2 - ((double)c[j] * f1) * f2;
        total += difference * difference;
    }
    for (int offset = 16; offset > 0; offset >>= 1) {
        total += __shfl_down_sync(0xffffffffu, total, offset);
    }
    if (lane == 0) {
        out[row] = total;
    }
}

extern "C" __global__ void kmeans_gpu_sq_dist_f32(
    const float* __restrict__ X, const float* __restrict__ centers,
    const int* __restrict__ labels, long long rows, int d, double f1, double f2,
    double* __restrict__ out)
{
    kmeans_gpu_sq_dist_row<float>(X, centers, labels, rows, d, f1, f2, out);
}

extern "C" __global__ void kmeans_gpu_sq_dist_f64(
    const double* __restrict__ X, const double* __restrict__ centers,
    const int* __restrict__ labels, long long rows, int d, double f1, double f2,
    double* __restrict__ out)
{
    kmeans_gpu_sq_dist_row<double>(X, centers, labels, rows, d, f1, f2, out);
}
"""
SQ_DIST_KERNELS = {"float32": "kmeans_gpu_sq_dist_f32", "float64": "kmeans_gpu_sq_dist_f64"}
WARPS_PER_BLOCK = 8

#: Every kernel, in one compilation unit.
SOURCE = SPLIT_SOURCE + SORTED_SUMS_SOURCE + SQ_DIST_SOURCE
#: Every kernel's entry point.
ENTRIES = (
    *SPLIT_KERNELS.values(),
    *SORTED_SUMS_KERNELS.values(),
    *SQ_DIST_KERNELS.values(),
)


@functools.cache
def _module() -> Any:
    import cupy

    return cupy.RawModule(code=SOURCE, options=("--std=c++14",))


def _launch(
    kernels: dict[str, str],
    rows: int,
    rows_per_block: int,
    threads: int,
    arrays: tuple[Any, ...],
    sizes: tuple[Any, ...],
    outputs: tuple[Any, ...],
) -> tuple[Any, ...]:
    """The core's launcher (``backends/_cuda._launch``) on this module's source."""
    return core_launch(kernels, rows, rows_per_block, threads, arrays, sizes, outputs, _module)


def split_tf32_columns(x: Any, pieces: tuple[bool, bool, bool]) -> Any:
    """``x`` (float32, (rows, d)) as the (rows, 3d) column blocks of its TF32 parts:
    the high part, or the low part where ``pieces`` is true; bitwise
    ``_precision.split_columns``, in one pass."""
    import cupy

    rows, d = x.shape
    low_blocks = sum(1 << j for j, is_low in enumerate(pieces) if is_low)
    return _launch(
        SPLIT_KERNELS,
        rows * d,
        SPLIT_THREADS,
        SPLIT_THREADS,
        (x,),
        (cupy.int64(rows * d), cupy.int32(d), cupy.int32(low_blocks)),
        (cupy.empty((rows, 3 * d), dtype=x.dtype),),
    )[0]


def sorted_sums(rows: Any, labels: Any, weights: Any, n_clusters: int) -> tuple[Any, Any]:
    """Per-cluster (weighted) sums of float64 ``rows`` ``(k, d)`` and their weights
    ``(k,)``, float64, bitwise the same on every run: the rows sorted stably by label,
    each cluster's summed in that order (see ``SORTED_SUMS_SOURCE``)."""
    import cupy

    d = rows.shape[1]
    order = cupy.argsort(labels)  # stable
    offsets = cupy.searchsorted(
        labels[order], cupy.arange(n_clusters + 1, dtype=labels.dtype)
    ).astype(cupy.int64)
    parts = max(1, min(64, SORTED_SUMS_BLOCKS // n_clusters))
    partial_sums = cupy.empty((parts, n_clusters, d), dtype=cupy.float64)
    partial_weights = cupy.empty((parts, n_clusters), dtype=cupy.float64)
    kernel = _module().get_function(SORTED_SUMS_KERNELS["float64"])
    has_weights = weights is not None
    contiguous = cupy.ascontiguousarray(rows)
    kernel(
        (n_clusters, parts),
        (min(SORTED_SUMS_THREADS, 32 * ((d + 31) // 32)),),
        (
            contiguous,
            order.astype(cupy.int64, copy=False),
            offsets,
            weights.astype(cupy.float64) if has_weights else contiguous,  # (unread)
            cupy.int32(has_weights),
            cupy.int32(n_clusters),
            cupy.int32(d),
            partial_sums,
            partial_weights,
        ),
    )
    return partial_sums.sum(axis=0), partial_weights.sum(axis=0)


def sq_distances(X: Any, centers: Any, labels: Any, exponent: int) -> Any:
    """``‖(x − c_label)·2**exponent‖²`` (float64) of each row of ``X`` ``(rows, d)``
    from float64 differences, as ``Backend.sq_distances``; one warp per row, one read of
    ``X``."""
    import cupy

    rows, d = X.shape
    f1, f2 = rescale_factors(exponent)
    return _launch(
        SQ_DIST_KERNELS,
        rows,
        WARPS_PER_BLOCK,
        32 * WARPS_PER_BLOCK,
        (X, centers, labels.astype(cupy.int32, copy=False)),
        (cupy.int64(rows), cupy.int32(d), cupy.float64(f1), cupy.float64(f2)),
        (cupy.empty(rows, dtype=cupy.float64),),
    )[0]


def rescale_factors(exponent: int) -> tuple[float, float]:
    """The two powers of two :func:`~kmeans_gpu.backends._base.rescale` multiplies by,
    in order (1, 1 when it does not multiply): for kernels that rescale as it does."""
    if exponent == 0:
        return 1.0, 1.0
    half = exponent // 2
    return 2.0**half, 2.0 ** (exponent - half)
