"""Compiled (numba) kernels of the NumPy backend.

Imported only when numba is installed and the NumPy backend is first used. Every kernel
releases the GIL (the backend runs chunks on its own threads) and is compiled once per
dtype, then cached on disk. Scores are ``‖c‖² − 2x·c`` in the data's dtype, the first
centre winning ties. Every float64 result is computed with the same operations, in the
same order, as the pure NumPy path: rows scaled by ``f1`` then ``f2`` (the two halves of
``2**s``), features and rows added one after another.

Absent optional inputs are empty arrays (not None), so each kernel has one compiled
version per dtype.
"""

from __future__ import annotations

import numba
import numpy as np

_jit = numba.njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
#: a helper inlined into its callers at numba's IR level (a plain call costs up to 2×
#: on rows of few features)
_inlined = numba.njit(
    nogil=True, cache=True, boundscheck=False, error_model="numpy", inline="always"
)
#: Rows per register-and-L1-sized block of the direct kernel.
ROWS_PER_BLOCK = 256


@_jit
def cluster_sums(X, labels, weights, origin, f1, f2, before, block_rows, sums, weight_sums):
    """``sums[l] += w·(x − mean)·2**s`` and ``weight_sums[l] += w`` (float64; ``w`` = 1
    when ``weights`` is empty): rows added in order within blocks of ``block_rows``,
    blocks added as ``_base.fold``'s binary tree. ``before``: scale before subtracting,
    ``origin`` then being the scaled mean (as ``_base.centred64``)."""
    n, d = X.shape
    k = sums.shape[0]
    blocks = max(1, (n + block_rows - 1) // block_rows)
    depth = 2
    while (1 << (depth - 2)) < blocks:
        depth += 1
    # each block's sums, then the weights' in column d
    parts = np.zeros((depth, k, d + 1))
    first = np.empty(depth, np.int64)
    size = np.empty(depth, np.int64)
    top = 0
    for block in range(blocks):
        start, stop = block * block_rows, min((block + 1) * block_rows, n)
        _block_sums(X, labels, weights, origin, f1, f2, before, start, stop, parts[top])
        first[top], size[top] = block, 1
        top += 1
        while top >= 2 and _siblings(first, size, top):
            parts[top - 2] += parts[top - 1]
            size[top - 2] *= 2
            top -= 1
    total = parts[top - 1].copy()
    for slot in range(top - 2, -1, -1):  # the last runs, from the right
        total[:] = parts[slot] + total
    sums[:] = total[:, :d]
    weight_sums[:] = total[:, d]


@_inlined
def _block_sums(X, labels, weights, origin, f1, f2, before, start, stop, out):
    """One block's sums into ``out`` ``(k, d + 1)``, by a loop compiled for its case:
    with a constant number of features (for few) and no weights, it runs ~2× faster."""
    d = X.shape[1]
    out[:] = 0.0
    if weights.shape[0] > 0:
        _add_rows(X, labels, weights, origin, f1, f2, before, start, stop, out, d, True)
    elif d == 1:
        _add_rows(X, labels, weights, origin, f1, f2, before, start, stop, out, 1, False)
    elif d == 2:
        _add_rows(X, labels, weights, origin, f1, f2, before, start, stop, out, 2, False)
    elif d == 3:
        _add_rows(X, labels, weights, origin, f1, f2, before, start, stop, out, 3, False)
    else:
        _add_rows(X, labels, weights, origin, f1, f2, before, start, stop, out, d, False)


@_inlined
def _add_rows(X, labels, weights, origin, f1, f2, before, start, stop, out, d, weighted):
    """``out[l, :d] += w·v`` and ``out[l, d] += w`` for rows ``start:stop`` in order,
    ``v`` the working row (``w·v`` is ``v`` exactly when ``w`` = 1)."""
    if before:
        for i in range(start, stop):
            row = out[labels[i]]
            w = np.float64(weights[i]) if weighted else 1.0
            for f in range(d):
                row[f] += ((np.float64(X[i, f]) * f1) * f2 - origin[f]) * w
            row[d] += w
    else:
        for i in range(start, stop):
            row = out[labels[i]]
            w = np.float64(weights[i]) if weighted else 1.0
            for f in range(d):
                row[f] += (((np.float64(X[i, f]) - origin[f]) * f1) * f2) * w
            row[d] += w


@_inlined
def _siblings(first, size, top):
    """Whether the two runs of blocks on top of the stack are siblings in the tree."""
    return size[top - 2] == size[top - 1] and first[top - 2] % (2 * size[top - 2]) == 0


@_jit
def direct_labels(X, scaled, centers_sq, rows_sq, factor, largest, labels, near):
    """Each row's nearest centre by its scores and whether it is a near tie
    (:func:`near_ties`), the scores computed here a block of rows at a time (for few
    clusters and features, where a matrix product is all overhead; only the labels and
    flags reach memory). ``scaled`` is ``−2·centres``."""
    m, d = X.shape
    k = scaled.shape[0]
    rows = ROWS_PER_BLOCK
    transposed = np.empty((d, rows), dtype=X.dtype)
    dot = np.empty(rows, dtype=X.dtype)
    here, there = _running(rows, X.dtype), _running(rows, X.dtype)
    for start in range(0, m, rows):
        b = min(rows, m - start)
        for i in range(b):
            for f in range(d):
                transposed[f, i] = X[start + i, f]
        for j in range(k):
            a = scaled[j, 0]
            for i in range(b):
                dot[i] = transposed[0, i] * a
            for f in range(1, d):
                a = scaled[j, f]
                for i in range(b):
                    dot[i] += transposed[f, i] * a
            _fold(b, dot, centers_sq[j], j, here, there)
            here, there = there, here
        stop = start + b
        labels[start:stop] = here[0][:b]
        near_ties(here[1][:b], here[2][:b], rows_sq[start:stop], factor, largest, near[start:stop])


@_jit
def scan_two(scores, centers_sq, labels, best, second):
    """The two nearest centres of each column of ``scores`` (k, m) = ``−2 c·x``: running
    minima over the clusters, four clusters in each sweep over the rows (the running
    values stay in registers between them: 2.5× faster than one), vectorised over rows."""
    k, m = scores.shape
    for i in range(m):
        best[i] = scores[0, i] + centers_sq[0]
        second[i] = np.inf
        labels[i] = 0
    fours = (k - 1) // 4
    for j in range(1, 1 + 4 * fours, 4):
        s0, s1, s2, s3 = scores[j], scores[j + 1], scores[j + 2], scores[j + 3]
        q0, q1, q2, q3 = centers_sq[j], centers_sq[j + 1], centers_sq[j + 2], centers_sq[j + 3]
        first = np.int32(j)
        for i in range(m):
            label, b, c = _step(s0[i] + q0, first, labels[i], best[i], second[i])
            label, b, c = _step(s1[i] + q1, first + 1, label, b, c)
            label, b, c = _step(s2[i] + q2, first + 2, label, b, c)
            label, b, c = _step(s3[i] + q3, first + 3, label, b, c)
            labels[i], best[i], second[i] = label, b, c
    for j in range(1 + 4 * fours, k):
        row, square, label_j = scores[j], centers_sq[j], np.int32(j)
        for i in range(m):
            labels[i], best[i], second[i] = _step(
                row[i] + square, label_j, labels[i], best[i], second[i]
            )


@_inlined
def _step(score, j, label, best, second):
    """One cluster's ``score`` folded into a row's running label, best and second-best,
    branch-free so that it vectorises; the earlier cluster keeps a tie (which leaves the
    second equal to the best)."""
    lower = score < best
    return (j if lower else label), (score if lower else best), min(second, max(score, best))


@_inlined
def _running(rows, dtype):
    """Buffers of the running labels, best and second-best scores of ``rows`` rows."""
    return np.empty(rows, np.int32), np.empty(rows, dtype), np.empty(rows, dtype)


@_jit
def _fold(count, dot, square, j, running, to):
    """Fold cluster ``j``'s scores ``dot + square`` of the first ``count`` rows into the
    running two smallest, read from ``running`` and written to ``to`` (a step that wrote
    where it reads would compile to masked stores, slow on AMD CPUs), as :func:`_step`."""
    labels, best, second = running
    labels_to, best_to, second_to = to
    if j == 0:
        for i in range(count):
            best_to[i] = dot[i] + square
            second_to[i] = np.inf
            labels_to[i] = 0
        return
    label = np.int32(j)
    for i in range(count):
        labels_to[i], best_to[i], second_to[i] = _step(
            dot[i] + square, label, labels[i], best[i], second[i]
        )


@_jit
def near_ties(best, second, rows_sq, factor, largest, near):
    """``near[i] = second[i] − best[i] <= factor·(√rows_sq[i] + largest)²``, in the
    scores' dtype with the operations of ``_base.tie_margin``, in its order."""
    for i in range(best.shape[0]):
        reach = np.sqrt(rows_sq[i]) + largest
        near[i] = second[i] - best[i] <= factor * reach * reach


@_inlined
def _sq_distance(X, centers, labels, i, f1, f2):
    """``‖(x_i − c_label)·2**s‖²``: float64 differences of the scaled values, squared
    and added feature after feature."""
    label = labels[i]
    total = 0.0
    for f in range(X.shape[1]):
        diff = (np.float64(X[i, f]) * f1) * f2 - (np.float64(centers[label, f]) * f1) * f2
        total += diff * diff
    return total


@_jit
def sq_distances(X, centers, labels, f1, f2, out):
    """``out[i] = ‖(x_i − c_label)·2**s‖²`` for every row."""
    for i in range(X.shape[0]):
        out[i] = _sq_distance(X, centers, labels, i, f1, f2)


@_jit
def sq_distance_sum(X, centers, labels, weights, f1, f2, block_rows):
    """``Σ w·‖(x_i − c_label)·2**s‖²`` (``w`` = 1 when ``weights`` is empty): rows added
    in order within blocks of ``block_rows``, blocks added as ``_base.fold``'s tree."""
    n = X.shape[0]
    weighted = weights.shape[0] > 0
    blocks = max(1, (n + block_rows - 1) // block_rows)
    parts = np.zeros(blocks + 1)
    first = np.empty(blocks + 1, np.int64)
    size = np.empty(blocks + 1, np.int64)
    top = 0
    for block in range(blocks):
        total = 0.0
        for i in range(block * block_rows, min((block + 1) * block_rows, n)):
            row = _sq_distance(X, centers, labels, i, f1, f2)
            total += row * np.float64(weights[i]) if weighted else row
        parts[top], first[top], size[top] = total, block, 1
        top += 1
        while top >= 2 and _siblings(first, size, top):
            parts[top - 2] += parts[top - 1]
            size[top - 2] *= 2
            top -= 1
    result = parts[top - 1]
    for slot in range(top - 2, -1, -1):
        result = parts[slot] + result
    return result
