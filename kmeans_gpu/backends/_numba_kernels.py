"""Compiled (numba) kernels of the NumPy backend: labels and per-cluster sums in one pass.

Imported only when numba is installed and the NumPy backend is first used. Every kernel
releases the GIL (the backend runs chunks on its own threads) and is compiled once per
dtype, then cached on disk. Scores are ``‖c‖² − 2x·c`` in the data's dtype, summed in
the order a BLAS product sums them, and the first centre wins ties, as in the plain path;
sums are accumulated in float64.

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


#: Sums up to this many values (k·d) over at least LANED_ROWS rows are kept in several
#: interleaved copies, so that consecutive rows of one cluster do not wait on each
#: other's additions. (Below that, one copy: then a cluster of identical rows sums to
#: the same value whatever the order of the rows, as it does in the plain path.)
LANED_SUMS = 4096
LANED_ROWS = 4096
LANES = 4  # a power of two


@_jit
def accumulate(X, labels, weights, sums, weight_sums, centers):
    """``sums[l] += w·x`` and ``weight_sums[l] += w`` for every row (float64; ``w`` = 1
    when ``weights`` is empty); returns the rows' ``Σ w·‖x − c_l‖²`` against
    ``centers`` while they are at hand (as :func:`sq_distance_sum`), or 0 when
    ``centers`` is empty."""
    n, d = X.shape
    k = sums.shape[0]
    weighted = weights.shape[0] > 0
    with_inertia = centers.shape[0] > 0
    inertia = 0.0
    lanes = LANES if k * d <= LANED_SUMS and n >= LANED_ROWS else 1
    if lanes == 1:
        lane_sums = sums.reshape((1, k, d))
        lane_weights = weight_sums.reshape((1, k))
    else:
        lane_sums = np.zeros((lanes, k, d))
        lane_weights = np.zeros((lanes, k))
    for i in range(n):
        lane = i & (lanes - 1)  # lanes is a power of two
        label = labels[i]
        w = weights[i] if weighted else 1.0
        for f in range(d):
            lane_sums[lane, label, f] += w * X[i, f]
        lane_weights[lane, label] += w
        if with_inertia:
            inertia += np.float64(w) * _sq_distance(X, centers, labels, i)
    if lanes > 1:
        for lane in range(lanes):
            for label in range(k):
                for f in range(d):
                    sums[label, f] += lane_sums[lane, label, f]
                weight_sums[label] += lane_weights[lane, label]
    return inertia


@_jit
def count_changed(labels, previous):
    """How many ``labels`` differ from ``previous`` (all, when it is empty)."""
    if previous.shape[0] == 0:
        return labels.shape[0]
    changed = 0
    for i in range(labels.shape[0]):
        changed += labels[i] != previous[i]
    return changed


@_jit
def direct_labels(X, scaled, centers_sq, labels):
    """Nearest centre of each row of ``X`` (m, d) into ``labels`` (m,), the scores
    computed here a block of rows at a time (for few clusters and features, where a
    matrix product is all overhead). ``scaled`` is ``−2·centres``."""
    m, d = X.shape
    k = scaled.shape[0]
    rows = ROWS_PER_BLOCK
    transposed = np.empty((d, rows), dtype=X.dtype)
    dot = np.empty(rows, dtype=X.dtype)
    best = np.empty(rows, dtype=X.dtype)
    for start in range(0, m, rows):
        b = min(rows, m - start)
        for i in range(b):
            for f in range(d):
                transposed[f, i] = X[start + i, f]
        block = labels[start : start + b]
        for j in range(k):
            a = scaled[j, 0]
            for i in range(b):
                dot[i] = transposed[0, i] * a
            for f in range(1, d):
                a = scaled[j, f]
                for i in range(b):
                    dot[i] += transposed[f, i] * a
            _running_min(dot[:b], centers_sq[j], j, best, block)


@_jit
def scan_labels(scores, centers_sq, labels):
    """Nearest centre of each column of ``scores`` (k, m) = ``−2 c·x`` into ``labels``
    (m,): a running minimum over the clusters, each step vectorised over the rows."""
    best = np.empty(scores.shape[1], dtype=scores.dtype)
    for j in range(scores.shape[0]):
        _running_min(scores[j], centers_sq[j], j, best, labels)


@_jit
def _running_min(dot, square, j, best, labels):
    """Fold cluster ``j``'s scores ``dot + square`` into the running minimum; the
    earlier cluster keeps a tie."""
    if j == 0:
        for i in range(dot.shape[0]):
            best[i] = dot[i] + square
            labels[i] = 0
        return
    label = np.int32(j)
    for i in range(dot.shape[0]):
        s = dot[i] + square
        lower = s < best[i]
        best[i] = s if lower else best[i]
        labels[i] = label if lower else labels[i]


@_inlined
def _sq_distance(X, centers, labels, i):
    """``‖x_i − c_label‖²``: differences in the data's dtype, as the plain path takes
    them, squared and summed in float64."""
    label = labels[i]
    total = 0.0
    for f in range(X.shape[1]):
        diff = np.float64(X[i, f] - centers[label, f])
        total += diff * diff
    return total


@_jit
def sq_distances(X, centers, labels, out):
    """``out[i] = ‖x_i − c_label‖²`` for every row."""
    for i in range(X.shape[0]):
        out[i] = _sq_distance(X, centers, labels, i)


@_jit
def sq_distance_sum(X, centers, labels, weights):
    """``Σ w·‖x_i − c_label‖²`` in one pass, with no per-row output: each row's term
    times its weight in float64 (``w`` = 1 when ``weights`` is empty), added in row
    order."""
    weighted = weights.shape[0] > 0
    total = 0.0
    for i in range(X.shape[0]):
        row = _sq_distance(X, centers, labels, i)
        total += row * np.float64(weights[i]) if weighted else row
    return total
