"""CUDA kernels for the CuPy backend, compiled once per process by NVRTC and cached.

Off by default until they have run on a GPU (set ``KMEANS_GPU_CUDA_KERNELS=1``); the
sources are compiled with ``nvcc -ptx`` in the test suite, so a syntax or type error
cannot land unnoticed, and a ``gpu`` test compares each kernel with the plain path.
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


def kernels_enabled() -> bool:
    """Whether the custom kernels are switched on (``KMEANS_GPU_CUDA_KERNELS=1``)."""
    return os.environ.get(ENV_FLAG, "").strip().lower() in ("1", "true", "yes", "on")


@functools.cache
def _module() -> Any:
    import cupy

    return cupy.RawModule(code=ARGMIN_SOURCE, options=("--std=c++14",))


def argmin_scores(product: Any, centers_sq: Any) -> Any:
    """Labels ``argmin_j (product[i, j] + centers_sq[j])`` (int32) of a C-contiguous
    ``product`` of shape (rows, k)."""
    import cupy

    rows, k = product.shape
    kernel = _module().get_function(ARGMIN_KERNELS[product.dtype.name])
    labels = cupy.empty(rows, dtype=cupy.int32)
    blocks = (rows + WARPS_PER_BLOCK - 1) // WARPS_PER_BLOCK
    kernel(
        (blocks,),
        (32 * WARPS_PER_BLOCK,),
        (
            cupy.ascontiguousarray(product),
            cupy.ascontiguousarray(centers_sq),
            cupy.int64(rows),
            cupy.int32(k),
            labels,
        ),
    )
    return labels
