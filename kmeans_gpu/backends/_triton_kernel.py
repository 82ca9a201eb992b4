"""The Triton kernel of ``_triton``, in a module of its own: importing it imports Triton,
which happens only when the kernel is used. Triton decides at import whether the kernel
runs on the GPU or in its interpreter (``TRITON_INTERPRET=1``, which tests set first).
"""

import triton
import triton.language as tl


@triton.jit(do_not_specialize=["n", "k"])  # one compilation for every n and k
def kmeans_gpu_triton_nearest_two(
    X,
    S,
    CENTERS_SQ,
    LABELS,
    BEST,
    SECOND,
    n,
    k,
    d,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    D_PAD: tl.constexpr,
    RESIDENT: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n
    rows64 = rows.to(tl.int64)
    if RESIDENT:  # the block's rows, read once for all centre tiles
        features = tl.arange(0, D_PAD)
        x = tl.load(
            X + rows64[:, None] * d + features[None, :],
            mask=row_ok[:, None] & (features[None, :] < d),
            other=0.0,
        )
    best = tl.full((BLOCK_M,), float("inf"), tl.float32)
    second = tl.full((BLOCK_M,), float("inf"), tl.float32)
    index = tl.zeros((BLOCK_M,), tl.int32)
    for start in range(0, k, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < k
        cols64 = cols.to(tl.int64)
        if RESIDENT:
            s = tl.load(
                S + cols64[:, None] * d + features[None, :],
                mask=col_ok[:, None] & (features[None, :] < d),
                other=0.0,
            )
            acc = tl.dot(x, tl.trans(s), input_precision=PRECISION)
        else:
            acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
            for f0 in range(0, d, BLOCK_K):
                part = f0 + tl.arange(0, BLOCK_K)
                xk = tl.load(
                    X + rows64[:, None] * d + part[None, :],
                    mask=row_ok[:, None] & (part[None, :] < d),
                    other=0.0,
                )
                sk = tl.load(
                    S + cols64[:, None] * d + part[None, :],
                    mask=col_ok[:, None] & (part[None, :] < d),
                    other=0.0,
                )
                acc = tl.dot(xk, tl.trans(sk), acc, input_precision=PRECISION)
        # centres past k score +inf: never the best, never the second
        centers_sq = tl.load(CENTERS_SQ + cols, mask=col_ok, other=float("inf"))
        scores = acc + centers_sq[None, :]
        # the smallest score and its first index in one reduction, then the second
        tile_best, tile_index = tl.min(
            scores, axis=1, return_indices=True, return_indices_tie_break_left=True
        )
        is_best = tl.arange(0, BLOCK_N)[None, :] == tile_index[:, None]
        tile_second = tl.min(tl.where(is_best, float("inf"), scores), axis=1)
        # tiles come in index order: a tie with an earlier tile keeps its index
        better = tile_best < best
        second = tl.where(better, tl.minimum(best, tile_second), tl.minimum(second, tile_best))
        index = tl.where(better, tile_index + start, index)
        best = tl.where(better, tile_best, best)
    tl.store(LABELS + rows64, index, mask=row_ok)
    tl.store(BEST + rows64, best, mask=row_ok)
    tl.store(SECOND + rows64, second, mask=row_ok)
