"""The generic backend: every array operation the solver needs, on the array API.

A backend is a thin object around an array namespace ``xp``. The solver calls only the
members below, so a library that follows the Python array API standard runs through
this class unchanged; NumPy and CuPy subclass it to swap in faster versions of single
operations, each tested against the method it replaces.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

Array = Any
T = TypeVar("T")

#: Buffers a series of host copies may reuse, by shape and dtype (``Backend.host_copy``).
Staging = dict[Any, list[Any]]

#: Default bound, in bytes, on the temporaries of one chunk of rows.
DEFAULT_WORKING_MEMORY = 32 * 2**20


def rescale(x: Array, exponent: int) -> Array:
    """``x * 2**exponent`` (exact), in two halves so each factor fits x's dtype."""
    if exponent == 0:
        return x
    half = exponent // 2
    return (x * 2.0**half) * 2.0 ** (exponent - half)


def clamp(xp: Any, x: Array, low: float | None = None, high: float | None = None) -> Array:
    """``x`` limited to ``[low, high]`` (either may be None), by ``maximum``/``minimum``
    with 0-d bounds on x's device: array_api_compat's CuPy ``clip`` indexes by boolean
    masks, and CuPy reads a mask's count back from the device."""
    import array_api_compat

    device = array_api_compat.device(x)
    for bound, limit in ((low, xp.maximum), (high, xp.minimum)):
        if bound is not None:
            x = limit(x, xp.full((), bound, dtype=x.dtype, device=device))
    return x


def centred64(xp: Any, X: Array, origin: tuple[Array, int]) -> Array:
    """``(x − mean)·2**exponent`` of rows ``X`` in float64 (``mean`` float64), scaled
    before the subtraction when the scale shrinks them, so that nothing overflows."""
    mean, exponent = origin
    rows = xp.astype(X, xp.float64, copy=True)
    if exponent < 0:
        return rescale(rows, exponent) - rescale(mean, exponent)
    rows -= mean  # in place: a second temporary of the rows' size costs more than this
    return rescale(rows, exponent)


def fold(parts: Iterable[tuple[int, int, T]], block_rows: int | None) -> T:
    """The sum of the values of consecutive row ranges ``(start, stop, value)``, in row
    order. With ``block_rows``, as a binary tree over blocks of that many rows (each
    range a node of it: an aligned power-of-two run of blocks, or the last run), so that
    the result does not depend on how the rows were divided into ranges; without, one
    after another."""
    stack: list[tuple[int, int, Any]] = []
    for start, stop, value in parts:
        if not block_rows and stack:
            stack[-1] = (stack[-1][0], stop, stack[-1][2] + value)
            continue
        stack.append((start, stop, value))
        while block_rows and len(stack) >= 2:
            (a, b, x), (c, e, y) = stack[-2], stack[-1]
            size = -(-(b - a) // block_rows)
            if -(-(e - c) // block_rows) != size or (a // block_rows) % (2 * size):
                break
            stack[-2:] = [(a, e, x + y)]
    total = stack.pop()[2]
    while stack:  # the last runs, from the right: their parents in the tree
        total = stack.pop()[2] + total
    return total


def tie_margin(xp: Any, rows_sq: Array, factor: float, largest: Array) -> Array:
    """``factor·(‖x‖ + largest)²`` per row of squared norm ``rows_sq``, in their dtype
    (``largest``: 0-d, the largest norm of the centres)."""
    reach = xp.sqrt(rows_sq) + largest
    return factor * reach * reach


def _by_namespace(name: str) -> Backend:
    """The generic backend of the array namespace module ``name``."""
    import importlib

    from . import _generic

    return _generic(importlib.import_module(name))


class Backend:
    """Array operations of one array library, as the K-means solver needs them.

    Parameters
    ----------
    xp : module
        An array namespace that follows the Python array API standard.
    name : str
        The name the backend is known by (``backend_`` of a fitted estimator).
    """

    #: Whether the solver keeps a centred copy of the whole data for the distance
    #: products (fast on the host) rather than centring each chunk when it is used (the
    #: data exist once: the right choice for device memory). Both give the same rows.
    keeps_working_copy = False
    #: Most rows in one chunk (None: as many as the working memory holds; a chunk's
    #: scores are then written at once).
    max_chunk_rows: int | None = None
    #: Rows of the fixed blocks the float64 sums are added over, in a binary tree over
    #: the blocks, so that they do not depend on the chunks (None: one sum per chunk,
    #: chunks added in order).
    sum_block_rows: int | None = None
    #: Whether the exact pass may skip rows by distance bounds (``_bounds``): each
    #: skipped chunk reads a count back, free on the host.
    prunes = True
    #: Whether the data are a sparse matrix (``_sparse``): the row operations below
    #: then take and return sparse rows, and the origin of the working rows is 0.
    sparse = False

    def __init__(self, xp: Any, name: str) -> None:
        self.xp = xp
        self.name = name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled by name: the process that unpickles a backend uses its own backend of
        that name (thread pools and caches stay in theirs)."""
        if type(self) is not Backend:
            raise TypeError(f"a {type(self).__name__} cannot be sent to another process")
        return (_by_namespace, (self.xp.__name__,))

    # -- arrays in and out ------------------------------------------------------------
    def owns(self, x: Any) -> bool:
        """Whether ``x`` is an array of this backend's library."""
        import array_api_compat

        return array_api_compat.is_array_api_obj(x) and (
            array_api_compat.array_namespace(x) is self.xp
        )

    def device(self, x: Array) -> Any:
        return x.device

    def asarray(self, x: Any, *, dtype: Any = None, device: Any = None) -> Array:
        if device is None:
            return self.xp.asarray(x, dtype=dtype)
        return self.xp.asarray(x, dtype=dtype, device=device)

    def to_numpy(self, x: Array) -> np.ndarray:
        """A host NumPy copy (or view, when the array already lives on the host)."""
        try:
            return np.asarray(x)
        except (TypeError, ValueError, RuntimeError):
            return np.from_dlpack(x)

    def host_copy(
        self, x: Array, owned: bool = False, staging: Staging | None = None
    ) -> Callable[[], np.ndarray]:
        """Start copying ``x`` to a new host array; the returned callable finishes the
        copy and returns the array. Here the copy is synchronous; CuPy overlaps it with
        the work queued after it. ``owned``: nothing else refers to ``x`` or writes to
        it again, so a host array is handed over, not copied. ``staging``: a dict the
        caller keeps for a series of copies, where a backend that copies through
        buffers of its own keeps them to reuse; results never share memory with it."""
        value = self.to_numpy(x)
        if not owned:
            value = np.array(value, copy=True)
        return lambda: value

    def default_working_memory(self) -> int:
        """Bytes for one chunk's temporaries when the caller sets none."""
        return DEFAULT_WORKING_MEMORY

    def concurrency(self) -> int:
        """How many chunks :meth:`map_chunks` runs at once."""
        return 1

    def map_chunks(
        self, work: Callable[[int, int], T], ranges: Sequence[tuple[int, int]]
    ) -> Iterator[T]:
        """``work(start, stop)`` for every row range, results in the ranges' order; here
        one after another, as they are consumed."""
        return (work(start, stop) for start, stop in ranges)

    def write_at(self, x: Array, index: Array, values: Array) -> None:
        """``x[index] = values`` for a 1-D ``x`` and ascending, distinct ``index``; here
        without scatter (which the array API lacks), block by block."""
        xp = self.xp
        n, last = int(x.shape[0]), int(index.shape[0]) - 1
        step = 1 << 20
        for start in range(0, n, step):
            stop = min(start + step, n)
            positions = xp.arange(start, stop, dtype=index.dtype, device=self.device(x))
            found = clamp(xp, xp.searchsorted(index, positions), 0, last)
            hit = xp.take(index, found) == positions
            x[start:stop] = xp.where(
                hit, xp.astype(xp.take(values, found), x.dtype), x[start:stop]
            )

    # -- rows of the data -------------------------------------------------------------
    def take_rows(self, X: Array, indices: Array) -> Array:
        """Rows ``indices`` of ``X`` (of the data's kind: sparse rows stay sparse)."""
        return self.xp.take(X, indices, axis=0)

    def dense(self, X: Array) -> Array:
        """Rows of the data as a dense array (a few rows: centres, candidates)."""
        return X

    def row_norms(self, rows: Array) -> Array:
        """``‖x‖²`` of every row, in the rows' dtype."""
        return self.xp.vecdot(rows, rows)

    def rows64(self, X: Array, origin: tuple[Array, int]) -> Array:
        """Rows of the data as float64 working rows (``centred64``), a new array."""
        return centred64(self.xp, X, origin)

    def row_sq64(self, rows: Array) -> Array:
        """``‖x‖²`` of every float64 row of :meth:`rows64`."""
        return self.xp.sum(rows * rows, axis=1)

    def cross(self, a: Array, rows: Array) -> Array:
        """``a · rowsᵀ`` ``(m, n)`` for dense ``a`` ``(m, d)`` and rows ``(n, d)``."""
        return a @ rows.T

    # -- the pass over the data -------------------------------------------------------
    def scores(self, X: Array, centers: Array, centers_sq: Array) -> Array:
        """``‖c‖² − 2 x·c`` of every row of ``X`` ``(m, d)`` against ``centers`` ``(k,
        d)``, ``(m, k)`` in X's dtype, from a product computed to the dtype's precision
        (``(−2c)·x`` is exactly ``−2(c·x)``)."""
        return centers_sq[None, :] + X @ (-2.0 * centers).T

    def nearest_two(
        self, X: Array, centers: Array, centers_sq: Array
    ) -> tuple[Array, Array, Array]:
        """For the :meth:`scores` of every row of ``X``: the index of each row's
        smallest score (int32, the first on ties), that score, and the second-smallest
        (equal to the smallest on a tie; +inf when k == 1). The scores take ``m × k``
        values: callers pass chunks. The labels may be a buffer the backend reuses on
        its next call from the same thread."""
        xp = self.xp
        scores = self.scores(X, centers, centers_sq)
        labels = xp.astype(xp.argmin(scores, axis=1), xp.int32)
        best = xp.min(scores, axis=1)
        k = int(scores.shape[1])
        columns = xp.arange(k, dtype=labels.dtype, device=self.device(scores))
        others = xp.where(columns[None, :] == labels[:, None], xp.inf, scores)
        return labels, best, xp.min(others, axis=1)

    def labels_and_ties(
        self,
        X: Array,
        centers: Array,
        centers_sq: Array,
        rows_sq: Array,
        factor: float,
        largest: Array,
    ) -> tuple[Array, Array]:
        """Each row's label by :meth:`nearest_two`, and whether it is a near tie: its two
        best scores within its margin :func:`tie_margin` (``rows_sq``: the rows' squared
        norms; all of X's dtype). Either result may be a buffer the backend reuses on
        its next call from the same thread."""
        labels, best, second = self.nearest_two(X, centers, centers_sq)
        return labels, (second - best) <= tie_margin(self.xp, rows_sq, factor, largest)

    def cluster_sums(
        self,
        X: Array,
        origin: tuple[Array, int],
        labels: Array,
        weights: Array | None,
        n_clusters: int,
        deterministic: bool = False,
    ) -> tuple[Array, Array]:
        """Per-cluster sums of ``w·(x − mean)·2**exponent`` ``(k, d)`` and of the
        weights ``(k,)``, float64, for rows ``X`` of the data's dtype and ``origin =
        (mean, exponent)`` (``mean`` float64). ``deterministic`` asks for bitwise the
        same sums on every run (a backend whose fast sums use atomics of varying order
        must then use another way); this one always is."""
        xp = self.xp
        rows = centred64(xp, X, origin)
        w = None if weights is None else xp.astype(weights, xp.float64)
        clusters = xp.arange(n_clusters, dtype=labels.dtype, device=self.device(X))
        onehot = xp.astype(labels[:, None] == clusters[None, :], xp.float64)
        if w is not None:
            onehot = onehot * w[:, None]
        return onehot.T @ rows, xp.sum(onehot, axis=0)

    def sq_distances(self, X: Array, centers: Array, labels: Array, exponent: int) -> Array:
        """``‖(x − c_label)·2**exponent‖²`` of every row, from float64 differences of
        ``X`` and ``centers`` (both of the data's dtype and units)."""
        xp = self.xp
        diff = rescale(xp.astype(X, xp.float64), exponent) - rescale(
            xp.astype(xp.take(centers, labels, axis=0), xp.float64), exponent
        )
        return xp.sum(diff * diff, axis=1)

    def inertia_of(
        self, X: Array, centers: Array, labels: Array, weights: Array | None, exponent: int
    ) -> Array:
        """``Σ w ‖(x − c_label)·2**exponent‖²`` of the rows ``X`` (0-d float64)."""
        d2 = self.sq_distances(X, centers, labels, exponent)
        if weights is not None:
            d2 = d2 * self.xp.astype(weights, d2.dtype)
        return self.xp.sum(d2)

    def distinct(self, labels: Array, n_clusters: int) -> int:
        """How many of the clusters ``0 … n_clusters − 1`` the ``labels`` use."""
        return int(self.xp.unique_values(labels).shape[0])

    def farthest(self, distances: Array, n: int) -> Array:
        """Indices of the ``n`` largest ``distances``, largest first."""
        order = self.xp.argsort(distances, descending=True, stable=True)
        return order[:n]
