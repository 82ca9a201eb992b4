"""The Triton kernel of ``_triton``, in a module of its own: importing it imports Triton,
which happens only when the kernel is used. Triton decides at import whether the kernel
runs on the GPU or in its interpreter (``TRITON_INTERPRET=1``, which tests set first).
"""

import triton
import triton.language as tl


@triton.jit
def _rows(X, MEAN, rows64, row_ok, features, d, f1, f2, STEP: tl.constexpr):
    """Rows ``rows64`` of X, features ``features`` (0 outside); with ``STEP`` they are
    stored rows made working rows here, ``((x − mean)·f1)·f2`` in float32 operations
    (f1, f2: the powers of two of ``rescale``): the core's working rows, which round
    the same difference once."""
    ok = row_ok[:, None] & (features[None, :] < d)
    x = tl.load(X + rows64[:, None] * d + features[None, :], mask=ok, other=0.0)
    if STEP:
        mean = tl.load(MEAN + features, mask=features < d, other=0.0)
        x = tl.where(ok, ((x - mean[None, :]) * f1) * f2, 0.0)
    return x


@triton.jit(do_not_specialize=["n", "k"])  # one compilation for every n and k
def kmeans_gpu_triton_assign(
    X,
    S,
    CENTERS_SQ,
    LABELS,
    BEST,
    SECOND,
    MEAN,
    ROWS_SQ,
    MAX_CENTER_NORM,
    W,
    NEAR,
    SUMS,
    WEIGHT_SUMS,
    n,
    k,
    d,
    f1,
    f2,
    margin_squares,
    margin_product,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    D_PAD: tl.constexpr,
    RESIDENT: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
    STEP: tl.constexpr,
    WEIGHTED: tl.constexpr,
):
    """Each row's nearest centre, its score and the second-best score (``BEST``,
    ``SECOND``). With ``STEP``, a Lloyd pass's share instead: X holds stored rows, made
    working rows here (``MEAN``, f1, f2), and the kernel marks the rows with a near tie
    (``NEAR``: ``second − best <= margin``, ``_precision.Margin`` from ``ROWS_SQ``,
    ``MAX_CENTER_NORM``, ``margin_squares`` and ``margin_product``) and adds every other
    row (times its weight ``W``) to ``SUMS[label]`` and its weight to
    ``WEIGHT_SUMS[label]`` with float atomics, in the same pass over the rows."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n
    rows64 = rows.to(tl.int64)
    if RESIDENT:  # the block's rows, read once for all centre tiles
        features = tl.arange(0, D_PAD)
        x = _rows(X, MEAN, rows64, row_ok, features, d, f1, f2, STEP)
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
                xk = _rows(X, MEAN, rows64, row_ok, part, d, f1, f2, STEP)
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
    if not STEP:
        tl.store(BEST + rows64, best, mask=row_ok)
        tl.store(SECOND + rows64, second, mask=row_ok)
    else:
        # the near-tie margin, in the order of operations of _precision.Margin
        norm = tl.sqrt_rn(tl.load(ROWS_SQ + rows64, mask=row_ok, other=0.0))
        largest = tl.load(MAX_CENTER_NORM)
        reach = norm + largest
        margin = margin_squares * reach * reach + margin_product * norm * largest
        near = second - best <= margin
        tl.store(NEAR + rows64, near.to(tl.int8), mask=row_ok)
        keep = row_ok & (second - best > margin)
        if WEIGHTED:
            w = tl.load(W + rows64, mask=keep, other=0.0)
        else:
            w = tl.where(keep, 1.0, 0.0)
        # the rows read again from L2, a slice at a time: kept ones would spill registers
        index64 = index.to(tl.int64)
        for f0 in range(0, d, BLOCK_K):
            part = f0 + tl.arange(0, BLOCK_K)
            xk = _rows(X, MEAN, rows64, keep, part, d, f1, f2, STEP)
            add = keep[:, None] & (part[None, :] < d)
            target = SUMS + index64[:, None] * d + part[None, :]
            tl.atomic_add(target, xk * w[:, None], mask=add, sem="relaxed")
        tl.atomic_add(WEIGHT_SUMS + index64, w, mask=keep, sem="relaxed")
