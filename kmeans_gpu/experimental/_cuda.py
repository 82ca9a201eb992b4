"""CUDA kernels for the CuPy backend, compiled once per process by NVRTC and cached.

By default the CuPy backend takes the argmin of cuBLAS's product with ``ARGMIN`` (one
read of the scores instead of CuPy's add-then-argmin passes), and the two smallest
scores for the reduced-precision re-check with ``NEAREST_TWO``, and splits float32
inputs into TF32 parts for ``precision="tf32x3"`` with ``SPLIT``;
``KMEANS_GPU_CUDA_KERNELS=plain`` turns them off (plain CuPy operations), ``=fused``
uses the fused product-and-argmin kernel for exact assignment (slower than cuBLAS +
argmin on an H200: BENCHMARKS.md), ``=triton`` adds a Triton kernel for the TF32 and
split-TF32 assignment (``_triton``; off by default until timed on a GPU).
``KMEANS_GPU_PENDING_KERNELS=1`` turns on ``SQ_DIST`` for the inertia's terms, written
since the last GPU run and pending its check; ``KMEANS_GPU_DETERMINISTIC_SUMS`` chooses
how ``deterministic=True`` sums: a one-hot product (the default), ``SORTED_SUMS``
(``sorted``, pending too) or 64-bit fixed point (``fixed-point``, CuPy operations,
pending too). The sources are
compiled with ``nvcc -ptx`` in the test suite, so a syntax or type error cannot land
unnoticed, and a ``gpu`` test compares each kernel with the plain path.
"""

from __future__ import annotations

import functools
import os
from typing import Any

ENV_FLAG = "KMEANS_GPU_CUDA_KERNELS"

#: Nearest centre of each row from the matrix product ``P = X (−2C)ᵀ`` of one chunk:
#: ``argmin_j (P[i, j] + ‖c_j‖²)``, the first index on ties, in one read of P (the
#: plain path writes ``P + ‖c‖²`` and reads it again for ``argmin``). One warp per row.
ARGMIN_SOURCE = r"""
template <typename T>
__device__ __forceinline__ void kmeans_gpu_argmin_row(
    const T* __restrict__ product, const T* __restrict__ centers_sq,
    long long rows, int k, int* __restrict__ labels, T infinity)
{
    const long long row = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= rows) {
        return;  // the whole warp leaves together: one warp, one row
    }
    const T* scores = product + row * (long long)k;
    T best = infinity;
    int index = k;
    for (int j = lane; j < k; j += 32) {
        const T value = scores[j] + centers_sq[j];
        if (value < best) {  // j grows: strict < keeps the first index of this lane
            best = value;
            index = j;
        }
    }
    for (int offset = 16; offset > 0; offset >>= 1) {
        const T other = __shfl_down_sync(0xffffffffu, best, offset);
        const int other_index = __shfl_down_sync(0xffffffffu, index, offset);
        if (other < best || (other == best && other_index < index)) {
            best = other;
            index = other_index;
        }
    }
    if (lane == 0) {
        labels[row] = index;
    }
}

extern "C" __global__ void kmeans_gpu_argmin_f32(
    const float* __restrict__ product, const float* __restrict__ centers_sq,
    long long rows, int k, int* __restrict__ labels)
{
    kmeans_gpu_argmin_row<float>(product, centers_sq, rows, k, labels,
                                 __int_as_float(0x7f800000));
}

extern "C" __global__ void kmeans_gpu_argmin_f64(
    const double* __restrict__ product, const double* __restrict__ centers_sq,
    long long rows, int k, int* __restrict__ labels)
{
    kmeans_gpu_argmin_row<double>(product, centers_sq, rows, k, labels,
                                  __longlong_as_double(0x7ff0000000000000LL));
}
"""

ARGMIN_KERNELS = {"float32": "kmeans_gpu_argmin_f32", "float64": "kmeans_gpu_argmin_f64"}
WARPS_PER_BLOCK = 8

#: Nearest centre of each row of X, the scores never written: a tiled product of X and
#: S = −2C (64 rows × 64 centres per block of 16 × 16 threads, each thread a 4 × 4
#: register tile, 16 features at a time through shared memory), each tile's scores
#: ``acc + ‖c‖²`` folded at once into a running (value, index) minimum per row: first
#: within a thread, then across the 16 threads of a row by shuffles; ties go to the
#: lower index. FP32 (or FP64) arithmetic, no tensor cores: the product is summed over
#: features in order, so near ties may resolve differently from cuBLAS's product.
FUSED_TILE_ROWS = 64
FUSED_THREADS = 256
FUSED_SOURCE = r"""
#define KG_TM 64
#define KG_TN 64
#define KG_TK 16

template <typename T>
__device__ __forceinline__ void kmeans_gpu_better(T& best, int& index, T value, int at)
{
    if (value < best || (value == best && at < index)) {
        best = value;
        index = at;
    }
}

template <typename T>
__device__ __forceinline__ void kmeans_gpu_fused_tile(
    const T* __restrict__ X, const T* __restrict__ S, const T* __restrict__ centers_sq,
    long long n, int k, int d, int* __restrict__ labels, T infinity)
{
    __shared__ T xs[KG_TK][KG_TM + 1];  // xs[f][r]: 16 features of 64 rows (+1: no bank
    __shared__ T cs[KG_TK][KG_TN + 1];  // cs[f][c]: 16 features of 64 centres  conflicts)
    const int tx = threadIdx.x % 16;  // centre lane: columns tx, tx + 16, tx + 32, tx + 48
    const int ty = threadIdx.x / 16;  // row lane: rows ty, ty + 16, ty + 32, ty + 48
    const long long row0 = (long long)blockIdx.x * KG_TM;
    T best[4];
    int index[4];
    for (int a = 0; a < 4; ++a) {
        best[a] = infinity;
        index[a] = k;
    }
    for (int col0 = 0; col0 < k; col0 += KG_TN) {
        T acc[4][4];
        for (int a = 0; a < 4; ++a) {
            for (int b = 0; b < 4; ++b) {
                acc[a][b] = 0;
            }
        }
        for (int f0 = 0; f0 < d; f0 += KG_TK) {
            for (int e = threadIdx.x; e < KG_TM * KG_TK; e += blockDim.x) {
                const int r = e / KG_TK, f = e % KG_TK;  // neighbours read neighbours
                const long long row = row0 + r;
                xs[f][r] = (row < n && f0 + f < d) ? X[row * d + f0 + f] : T(0);
                const int col = col0 + r;
                cs[f][r] = (col < k && f0 + f < d) ? S[(long long)col * d + f0 + f] : T(0);
            }
            __syncthreads();
            for (int f = 0; f < KG_TK; ++f) {
                T xr[4], cr[4];
                for (int a = 0; a < 4; ++a) {
                    xr[a] = xs[f][ty + 16 * a];
                    cr[a] = cs[f][tx + 16 * a];
                }
                for (int a = 0; a < 4; ++a) {
                    for (int b = 0; b < 4; ++b) {
                        acc[a][b] += xr[a] * cr[b];
                    }
                }
            }
            __syncthreads();
        }
        for (int a = 0; a < 4; ++a) {
            T tile_best = infinity;
            int tile_index = k;
            for (int b = 0; b < 4; ++b) {  // columns grow with b
                const int col = col0 + tx + 16 * b;
                if (col < k) {
                    kmeans_gpu_better(tile_best, tile_index, acc[a][b] + centers_sq[col], col);
                }
            }
            for (int offset = 8; offset > 0; offset >>= 1) {  // the 16 lanes of this row
                const T other = __shfl_down_sync(0xffffffffu, tile_best, offset, 16);
                const int other_index = __shfl_down_sync(0xffffffffu, tile_index, offset, 16);
                kmeans_gpu_better(tile_best, tile_index, other, other_index);
            }
            kmeans_gpu_better(best[a], index[a], tile_best, tile_index);
        }
    }
    if (tx == 0) {
        for (int a = 0; a < 4; ++a) {
            const long long row = row0 + ty + 16 * a;
            if (row < n) {
                labels[row] = index[a];
            }
        }
    }
}

extern "C" __global__ void kmeans_gpu_fused_argmin_f32(
    const float* __restrict__ X, const float* __restrict__ S,
    const float* __restrict__ centers_sq, long long n, int k, int d,
    int* __restrict__ labels)
{
    kmeans_gpu_fused_tile<float>(X, S, centers_sq, n, k, d, labels,
                                 __int_as_float(0x7f800000));
}

extern "C" __global__ void kmeans_gpu_fused_argmin_f64(
    const double* __restrict__ X, const double* __restrict__ S,
    const double* __restrict__ centers_sq, long long n, int k, int d,
    int* __restrict__ labels)
{
    kmeans_gpu_fused_tile<double>(X, S, centers_sq, n, k, d, labels,
                                  __longlong_as_double(0x7ff0000000000000LL));
}
"""
FUSED_KERNELS = {
    "float32": "kmeans_gpu_fused_argmin_f32",
    "float64": "kmeans_gpu_fused_argmin_f64",
}
#: The two smallest scores of each row of a reduced-precision product, for the near-tie
#: re-check of ``precision="tf32"|"bf16"``: ``argmin_j s_ij``, its score and the
#: second-smallest score (equal to it on a tie), ``s_ij = P[i, j] + ‖c_j‖²``, in one
#: read of P. One warp per row.
NEAREST_TWO_SOURCE = r"""
template <typename T>
__device__ __forceinline__ void kmeans_gpu_nearest_two_row(
    const T* __restrict__ product, const T* __restrict__ centers_sq,
    long long rows, int k, int* __restrict__ labels, T* __restrict__ best_out,
    T* __restrict__ second_out, T infinity)
{
    const long long row = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= rows) {
        return;
    }
    const T* scores = product + row * (long long)k;
    T best = infinity, second = infinity;
    int index = k;
    for (int j = lane; j < k; j += 32) {
        const T value = scores[j] + centers_sq[j];
        if (value < best) {
            second = best;
            best = value;
            index = j;
        } else if (value < second) {
            second = value;
        }
    }
    for (int offset = 16; offset > 0; offset >>= 1) {
        const T other = __shfl_down_sync(0xffffffffu, best, offset);
        const T other_second = __shfl_down_sync(0xffffffffu, second, offset);
        const int other_index = __shfl_down_sync(0xffffffffu, index, offset);
        if (other < best || (other == best && other_index < index)) {
            second = best < other_second ? best : other_second;
            best = other;
            index = other_index;
        } else {
            second = other < second ? other : second;
        }
    }
    if (lane == 0) {
        labels[row] = index;
        best_out[row] = best;
        second_out[row] = second;
    }
}

extern "C" __global__ void kmeans_gpu_nearest_two_f32(
    const float* __restrict__ product, const float* __restrict__ centers_sq,
    long long rows, int k, int* __restrict__ labels, float* __restrict__ best,
    float* __restrict__ second)
{
    kmeans_gpu_nearest_two_row<float>(product, centers_sq, rows, k, labels, best, second,
                                      __int_as_float(0x7f800000));
}

extern "C" __global__ void kmeans_gpu_nearest_two_f64(
    const double* __restrict__ product, const double* __restrict__ centers_sq,
    long long rows, int k, int* __restrict__ labels, double* __restrict__ best,
    double* __restrict__ second)
{
    kmeans_gpu_nearest_two_row<double>(product, centers_sq, rows, k, labels, best, second,
                                       __longlong_as_double(0x7ff0000000000000LL));
}
"""
NEAREST_TWO_KERNELS = {
    "float32": "kmeans_gpu_nearest_two_f32",
    "float64": "kmeans_gpu_nearest_two_f64",
}

#: The split TF32 inputs of ``precision="tf32x3"`` in one pass: each float32 ``x`` of a
#: (rows, d) matrix becomes TF32 ``high`` (x rounded to nearest at 11 bits) and ``low``
#: (the remainder rounded the same way) by Veltkamp's splitting, with the float32
#: operations rounded to nearest and never contracted into FMAs (``__fmul_rn``,
#: ``__fsub_rn``), so the parts are bitwise those of ``_precision.split_tf32``. They
#: are written as three column blocks (rows, 3d); bit j of ``low_blocks`` makes block
#: j the low part. One thread per element.
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

#: Deterministic per-cluster sums, for ``deterministic=True``, without a one-hot matrix
#: and without atomics: ``order`` lists the rows sorted (stably) by label, cluster j's
#: at positions ``offsets[j]`` to ``offsets[j + 1]``. Block (j, p) of a (k, P) grid
#: takes positions ``offsets[j] + p``, ``+ p + P``, … in that order and sums their
#: (weighted) rows in float64, one thread per feature, into ``partial_sums[p, j]``, and
#: their weights into ``partial_weights[p, j]``; the P partials are added in order
#: afterwards. Every sum has a fixed order, so the result is bitwise the same on every
#: run.
SORTED_SUMS_SOURCE = r"""
template <typename T>
__device__ __forceinline__ void kmeans_gpu_sorted_sums(
    const T* __restrict__ X, const long long* __restrict__ order,
    const long long* __restrict__ offsets, const T* __restrict__ weights,
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
            const double value = (double)X[row * d + feature];
            total += has_weights ? value * (double)weights[row] : value;
        }
        partial_sums[out * d + feature] = total;
    }
    if (threadIdx.x == 0) {
        double total = 0.0;
        for (long long at = first; at < stop; at += parts) {
            total += has_weights ? (double)weights[order[at]] : 1.0;
        }
        partial_weights[out] = total;
    }
}

extern "C" __global__ void kmeans_gpu_sorted_sums_f32(
    const float* __restrict__ X, const long long* __restrict__ order,
    const long long* __restrict__ offsets, const float* __restrict__ weights,
    int has_weights, int k, int d, double* __restrict__ partial_sums,
    double* __restrict__ partial_weights)
{
    kmeans_gpu_sorted_sums<float>(X, order, offsets, weights, has_weights, k, d,
                                  partial_sums, partial_weights);
}

extern "C" __global__ void kmeans_gpu_sorted_sums_f64(
    const double* __restrict__ X, const long long* __restrict__ order,
    const long long* __restrict__ offsets, const double* __restrict__ weights,
    int has_weights, int k, int d, double* __restrict__ partial_sums,
    double* __restrict__ partial_weights)
{
    kmeans_gpu_sorted_sums<double>(X, order, offsets, weights, has_weights, k, d,
                                   partial_sums, partial_weights);
}
"""
SORTED_SUMS_KERNELS = {
    "float32": "kmeans_gpu_sorted_sums_f32",
    "float64": "kmeans_gpu_sorted_sums_f64",
}
#: threads per (cluster, part) block: one per feature, up to this many
SORTED_SUMS_THREADS = 128
#: blocks per cluster: enough blocks in all for a GPU's SMs when k is small
SORTED_SUMS_BLOCKS = 2048
ENV_PENDING = "KMEANS_GPU_PENDING_KERNELS"
ENV_DETERMINISTIC = "KMEANS_GPU_DETERMINISTIC_SUMS"
#: how the CuPy backend computes ``deterministic=True`` sums (the first is the default)
DETERMINISTIC_SUMS = ("one-hot", "sorted", "fixed-point")

#: ``‖x − c_label‖²`` of each row in float64, the inertia's terms (per chunk for the
#: frame stream, once at the end of a fit), in one read of the rows: the difference in
#: X's dtype, as the plain path rounds it, its square summed in float64. One warp per
#: row (the plain path writes the gathered centres, the differences and their float64
#: copy, each as large as the rows).
SQ_DIST_SOURCE = r"""
template <typename T>
__device__ __forceinline__ void kmeans_gpu_sq_dist_row(
    const T* __restrict__ X, const T* __restrict__ centers, const int* __restrict__ labels,
    long long rows, int d, double* __restrict__ out)
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
        const double difference = (double)(x[j] - c[j]);
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
    const int* __restrict__ labels, long long rows, int d, double* __restrict__ out)
{
    kmeans_gpu_sq_dist_row<float>(X, centers, labels, rows, d, out);
}

extern "C" __global__ void kmeans_gpu_sq_dist_f64(
    const double* __restrict__ X, const double* __restrict__ centers,
    const int* __restrict__ labels, long long rows, int d, double* __restrict__ out)
{
    kmeans_gpu_sq_dist_row<double>(X, centers, labels, rows, d, out);
}
"""
SQ_DIST_KERNELS = {"float32": "kmeans_gpu_sq_dist_f32", "float64": "kmeans_gpu_sq_dist_f64"}

#: Every kernel, in one compilation unit.
SOURCE = (
    ARGMIN_SOURCE
    + FUSED_SOURCE
    + NEAREST_TWO_SOURCE
    + SPLIT_SOURCE
    + SORTED_SUMS_SOURCE
    + SQ_DIST_SOURCE
)


def kernel_mode() -> str | None:
    """Which custom kernels the CuPy backend uses, from ``KMEANS_GPU_CUDA_KERNELS``:
    ``"argmin"`` (the default; also ``1``/``on``/``argmin``) for the argmin and
    nearest-two kernels over cuBLAS's product; ``"fused"`` for the same with the fused
    product-and-argmin kernel for exact assignment; ``"triton"`` for the argmin kernels
    and the Triton kernel for TF32 and split-TF32 assignments (``_triton``); None
    (``0``/``off``/``plain``) for plain CuPy operations only."""
    value = os.environ.get(ENV_FLAG, "").strip().lower()
    if value in ("", "1", "true", "yes", "on", "argmin"):
        return "argmin"
    if value in ("0", "false", "no", "off", "none", "plain"):
        return None
    if value in ("fused", "triton"):
        return value
    raise ValueError(
        f"{ENV_FLAG}={value!r} is not one of 'argmin' (the default), 'fused', 'triton' or 'plain'"
    )


def pending_kernels_enabled() -> bool:
    """Whether the kernel written since the last GPU run is on
    (``KMEANS_GPU_PENDING_KERNELS=1``): ``SQ_DIST``, off until a GPU run has checked
    it."""
    value = os.environ.get(ENV_PENDING, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{ENV_PENDING}={value!r} is not one of '1' or '0'")


def deterministic_sums_mode() -> str:
    """How ``deterministic=True`` sums, from ``KMEANS_GPU_DETERMINISTIC_SUMS``: one of
    :data:`DETERMINISTIC_SUMS`, ``"one-hot"`` when unset."""
    value = os.environ.get(ENV_DETERMINISTIC, "").strip().lower() or DETERMINISTIC_SUMS[0]
    if value not in DETERMINISTIC_SUMS:
        raise ValueError(f"{ENV_DETERMINISTIC}={value!r} is not one of {DETERMINISTIC_SUMS}")
    return value


def kernels_enabled() -> bool:
    """Whether custom kernels are switched on."""
    return kernel_mode() is not None


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
    """Launch the ``kernels`` entry for the arrays' dtype over ``rows`` rows, with the
    (C-contiguous) ``arrays``, then the ``sizes``, then the ``outputs`` it writes."""
    import cupy

    kernel = _module().get_function(kernels[arrays[0].dtype.name])
    blocks = (rows + rows_per_block - 1) // rows_per_block
    contiguous = tuple(cupy.ascontiguousarray(a) for a in arrays)
    kernel((blocks,), (threads,), (*contiguous, *sizes, *outputs))
    return outputs


def argmin_scores(product: Any, centers_sq: Any) -> Any:
    """Labels ``argmin_j (product[i, j] + centers_sq[j])`` (int32) of a product of
    shape (rows, k); one warp per row."""
    import cupy

    rows, k = product.shape
    return _launch(
        ARGMIN_KERNELS,
        rows,
        WARPS_PER_BLOCK,
        32 * WARPS_PER_BLOCK,
        (product, centers_sq),
        (cupy.int64(rows), cupy.int32(k)),
        (cupy.empty(rows, dtype=cupy.int32),),
    )[0]


def fused_argmin(X: Any, scaled: Any, centers_sq: Any) -> Any:
    """Labels ``argmin_j (X[i]·scaled[j] + centers_sq[j])`` (int32) without writing the
    scores; ``scaled`` is ``−2·centres``."""
    import cupy

    n, d = X.shape
    return _launch(
        FUSED_KERNELS,
        n,
        FUSED_TILE_ROWS,
        FUSED_THREADS,
        (X, scaled, centers_sq),
        (cupy.int64(n), cupy.int32(scaled.shape[0]), cupy.int32(d)),
        (cupy.empty(n, dtype=cupy.int32),),
    )[0]


def nearest_two(product: Any, centers_sq: Any) -> tuple[Any, Any, Any]:
    """For the scores ``s = product + centers_sq`` of shape (rows, k): the index of each
    row's smallest score (int32, first on ties), that score, and the second-smallest
    (equal to the smallest on a tie); one warp per row, one read of ``product``."""
    import cupy

    rows, k = product.shape
    labels, best, second = _launch(
        NEAREST_TWO_KERNELS,
        rows,
        WARPS_PER_BLOCK,
        32 * WARPS_PER_BLOCK,
        (product, centers_sq),
        (cupy.int64(rows), cupy.int32(k)),
        (
            cupy.empty(rows, dtype=cupy.int32),
            cupy.empty(rows, dtype=product.dtype),
            cupy.empty(rows, dtype=product.dtype),
        ),
    )
    return labels, best, second


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


def sorted_sums(X: Any, labels: Any, weights: Any, n_clusters: int) -> tuple[Any, Any]:
    """Per-cluster (weighted) sums of the rows of ``X`` ``(k, d)`` and their weights
    ``(k,)``, in ``X``'s dtype, bitwise the same on every run: the rows sorted stably by
    label, each cluster's summed in that order in float64 (see ``SORTED_SUMS_SOURCE``)."""
    import cupy

    d = X.shape[1]
    order = cupy.argsort(labels)  # stable
    offsets = cupy.searchsorted(
        labels[order], cupy.arange(n_clusters + 1, dtype=labels.dtype)
    ).astype(cupy.int64)
    parts = max(1, min(64, SORTED_SUMS_BLOCKS // n_clusters))
    partial_sums = cupy.empty((parts, n_clusters, d), dtype=cupy.float64)
    partial_weights = cupy.empty((parts, n_clusters), dtype=cupy.float64)
    kernel = _module().get_function(SORTED_SUMS_KERNELS[X.dtype.name])
    has_weights = weights is not None
    kernel(
        (n_clusters, parts),
        (min(SORTED_SUMS_THREADS, 32 * ((d + 31) // 32)),),
        (
            cupy.ascontiguousarray(X),
            order.astype(cupy.int64, copy=False),
            offsets,
            cupy.ascontiguousarray(weights) if has_weights else X,  # (unread)
            cupy.int32(has_weights),
            cupy.int32(n_clusters),
            cupy.int32(d),
            partial_sums,
            partial_weights,
        ),
    )
    sums, weight_sums = partial_sums.sum(axis=0), partial_weights.sum(axis=0)
    return sums.astype(X.dtype), weight_sums.astype(X.dtype)


def sq_dist_to_assigned(X: Any, centers: Any, labels: Any) -> Any:
    """``‖x − c_label‖²`` (float64) of each row of ``X`` ``(rows, d)``, ``labels``
    int32; one warp per row, one read of ``X``."""
    import cupy

    rows, d = X.shape
    return _launch(
        SQ_DIST_KERNELS,
        rows,
        WARPS_PER_BLOCK,
        32 * WARPS_PER_BLOCK,
        (X, centers, labels.astype(cupy.int32, copy=False)),
        (cupy.int64(rows), cupy.int32(d)),
        (cupy.empty(rows, dtype=cupy.float64),),
    )[0]
