"""The CUDA kernel of the CuPy backend, compiled once per process by NVRTC and cached.

``NEAREST_TWO`` reads each row of cuBLAS's product once for the nearest and the
second-nearest centre (CuPy's own operations would write ``P + ‖c‖²`` and read it
twice more). The source is compiled with ``nvcc -ptx`` in the test suite, and a ``gpu``
test compares the kernel with the generic path.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

WARPS_PER_BLOCK = 8

#: The two smallest scores of each row of a chunk's product ``P = X·(−2C)ᵀ``:
#: ``argmin_j s_ij`` (the first index on ties), its score and the second-smallest score
#: (equal to it on a tie), ``s_ij = P[i, j] + ‖c_j‖²``, in one read of P. One warp per
#: row.
SOURCE = r"""
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
    module: Callable[[], Any] | None = None,
) -> tuple[Any, ...]:
    """Launch the ``kernels`` entry for the arrays' dtype over ``rows`` rows, with the
    (C-contiguous) ``arrays``, then the ``sizes``, then the ``outputs`` it writes; the
    kernel is taken from ``module()`` (default: this module's compiled source)."""
    import cupy

    kernel = (module or _module)().get_function(kernels[arrays[0].dtype.name])
    blocks = (rows + rows_per_block - 1) // rows_per_block
    contiguous = tuple(cupy.ascontiguousarray(a) for a in arrays)
    kernel((blocks,), (threads,), (*contiguous, *sizes, *outputs))
    return outputs


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
