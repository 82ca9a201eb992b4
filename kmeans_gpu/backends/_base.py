"""The generic backend: every operation the solver needs, written against the array API.

A backend is a thin object around an array namespace ``xp``. The solver calls only the
methods below, so a library that follows the Python array API standard runs through this
class unchanged; NumPy and CuPy subclass it to swap in faster versions of single
operations. Each override is tested against the method it replaces.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

Array = Any
T = TypeVar("T")

#: Buffers a series of host copies may reuse, by shape and dtype (``Backend.host_copy``).
Staging = dict[Any, list[Any]]

#: Default bound, in bytes, on the distance block of one chunk of rows.
DEFAULT_WORKING_MEMORY = 32 * 2**20


def rescale(x: Array, exponent: int) -> Array:
    """``x * 2**exponent`` (exact), in two halves so each factor fits x's dtype."""
    if exponent == 0:
        return x
    first, second = rescale_factors(exponent)
    return (x * first) * second


def rescale_factors(exponent: int) -> tuple[float, float]:
    """The two powers of two :func:`rescale` multiplies by, in order (1, 1 when it does
    not multiply)."""
    if exponent == 0:
        return 1.0, 1.0
    half = exponent // 2
    return 2.0**half, 2.0 ** (exponent - half)


def clamp(xp: Any, x: Array, low: float | None = None, high: float | None = None) -> Array:
    """``x`` limited to ``[low, high]`` (either may be None): elementwise maximum and
    minimum with 0-d arrays made on ``x``'s device.

    Not ``xp.clip``: array_api_compat's CuPy namespace clips by indexing with boolean
    masks, and CuPy reads a mask's count back from the device, so each bound would wait
    for the device twice (in k-means++, four times a step). Not Python scalars as the
    bounds either: ``maximum`` takes them only from the array API's 2024.12 version on.
    """
    import array_api_compat

    device = array_api_compat.device(x)
    for bound, limit in ((low, xp.maximum), (high, xp.minimum)):
        if bound is not None:
            x = limit(x, xp.full((), bound, dtype=x.dtype, device=device))
    return x


class Backend:
    """Array operations of one array library, as the K-means solver needs them.

    Parameters
    ----------
    xp : module
        An array namespace that follows the Python array API standard.
    name : str
        The name the backend is known by (``backend_`` of a fitted estimator).
    """

    def __init__(self, xp: Any, name: str) -> None:
        self.xp = xp
        self.name = name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

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
        it again, so where it already is a host array it is handed over, not copied.
        ``staging``: a dict the caller keeps for a series of copies, in which a backend
        that copies through buffers of its own (CuPy's pinned memory) keeps them to
        reuse; the results never share memory with it."""
        value = self.to_numpy(x)
        if not owned:
            value = np.array(value, copy=True)
        return lambda: value

    def working_rows(self, x: Array, mean: Array, exponent: int) -> Array:
        """The solver's working rows of ``x``: ``(x − mean)·2**exponent``, each step one
        rounded (or exact) operation in x's dtype, as a kernel that centres rows itself
        must repeat them."""
        return rescale(x - mean, exponent)

    #: Whether the solver keeps a centred working copy of the whole data (fast on the
    #: host) rather than centring each chunk when it is used (the data exist once: the
    #: right choice for device memory). Both give bitwise the same rows.
    keeps_working_copy = False

    def accumulator_dtype(self, dtype: Any) -> Any:
        """The dtype for sums that must not lose precision or overflow."""
        return getattr(self.xp, "float64", dtype)

    # -- how chunks of rows run --------------------------------------------------------
    def default_working_memory(self) -> int:
        """Bytes for one chunk's distance block when the caller sets none."""
        return DEFAULT_WORKING_MEMORY

    def chunk_rows(self, n_samples: int, rows: int) -> int:
        """Rows per chunk, given ``rows`` that fit the working memory."""
        return max(1, min(rows, n_samples))

    def assignment_columns(
        self, n_clusters: int, n_features: int, precision: str, deterministic: bool = False
    ) -> int:
        """Temporaries per row of the Lloyd step's assignment, in elements: its
        ``n_clusters`` scores and its working row, plus the row's three TF32 parts where
        a reduced precision computes (or re-checks with) split TF32. (Here the sums,
        deterministic or not, take no more than the scores.)"""
        split = precision != "exact" and self.computes_reduced("tf32x3")
        return n_clusters + n_features + (3 * n_features if split else 0)

    def map_chunks(
        self, work: Callable[[int, int], T], ranges: Sequence[tuple[int, int]]
    ) -> list[T]:
        """``work(start, stop)`` for every row range, in order; one after another here."""
        return [work(start, stop) for start, stop in ranges]

    # -- the Lloyd step ---------------------------------------------------------------
    #: precisions other than "exact" whose products this backend computes faster
    #: (tensor cores); it ignores the others, which is always allowed
    reduced_products: frozenset[str] = frozenset()

    def reduced_product(self, X: Array, scaled: Array, precision: str) -> Array:
        """``X @ scaled.T`` with the inputs rounded to ``precision`` (one of
        :attr:`reduced_products`) and the products summed in float32."""
        raise NotImplementedError(f"{self.name} computes no {precision} products")

    def computes_reduced(self, precision: str) -> bool:
        """Whether ``precision`` runs on this backend's reduced products (tensor
        cores); when it does not, the backend computes exactly, which is always
        allowed."""
        from .._precision import PRODUCT

        return PRODUCT.get(precision) in self.reduced_products

    def engine_for(self, precision: str, dtype: Any) -> str:
        """The precision a fit asking for ``precision`` on data of ``dtype`` computes
        with: the same, here. A backend may answer another that gives the same labels
        (``"tf32x3"`` for ``"exact"``: its near ties are re-checked exactly)."""
        return precision

    def reduced_nearest_two(
        self, X: Array, scaled: Array, centers_sq: Array, precision: str
    ) -> tuple[Array, Array, Array]:
        """:meth:`nearest_two` of the ``precision`` product of ``X`` ``(m, d)`` and
        ``scaled = −2·centres`` ``(k, d)``: labels, best and second-best scores, for the
        near-tie re-check. Here from :meth:`reduced_product`; a backend may find them
        without writing the product."""
        from .._precision import reduced_nearest_two

        return reduced_nearest_two(self, X, scaled, centers_sq, precision)

    def reduced_step(
        self,
        X: Array,
        origin: tuple[Array, int] | None,
        centers: Array,
        centers_sq: Array,
        rows_sq: Array,
        weights: Array | None,
        precision: str,
        statistics: bool = True,
        deterministic: bool = False,
    ) -> tuple[Array, Array, Array | None, Array | None]:
        """One chunk's share of a Lloyd pass at a reduced ``precision`` this backend
        computes: the rows' provisional labels (int32), which rows have a near tie
        (bool; see ``kmeans_gpu/_precision.py``), and, when ``statistics``, the
        per-cluster weighted sums ``(k, d)`` and weights ``(k,)`` of the other rows
        (else None, None). ``X`` are the rows as stored and ``origin`` the ``(mean,
        exponent)`` of :meth:`working_rows` (None: X are working rows already);
        ``rows_sq`` the working rows' squared norms. Here: the working rows made, their
        labels, their sums with the near ties' rows left out. A backend may do it in one
        pass without writing the working rows."""
        from .._precision import reduced_labels

        xp = self.xp
        rows = X if origin is None else self.working_rows(X, *origin)
        labels, near = reduced_labels(self, rows, centers, centers_sq, precision, rows_sq)
        if not statistics:
            return labels, near, None, None
        k = int(centers.shape[0])
        # the near ties' rows are summed into an extra cluster k, dropped: no copy
        bucketed = xp.where(near, xp.full_like(labels, k), labels)
        sums, weight_sums = self.cluster_sums(rows, bucketed, weights, k + 1, deterministic)
        return labels, near, sums[:k, ...], weight_sums[:k]

    def split_columns(self, x: Array, pieces: tuple[bool, bool, bool]) -> Array:
        """``x`` (float32, ``(m, d)``) split into TF32 parts, as ``(m, 3d)`` column
        blocks: the high part, or the low part where ``pieces`` is true (see
        ``kmeans_gpu/_precision.py``, split TF32)."""
        from .._precision import split_columns

        return split_columns(self.xp, x, pieces)

    def assign(
        self, X: Array, centers: Array, centers_sq: Array, precision: str = "exact"
    ) -> Array:
        """Index of the nearest centre of each row of ``X`` (first one on ties).

        Uses ``‖c‖² − 2 x·c``, which orders centres as ``‖x − c‖²`` does; the block is
        ``X.shape[0] × k``, so callers pass row chunks. The result may be a buffer the
        backend reuses on its next call from the same thread: copy it before that (the
        Lloyd loop copies each chunk's labels into its own array at once). With a
        ``precision`` this backend :meth:`computes_reduced`, the product is computed at that
        precision and near ties re-checked exactly (the same labels; see
        ``kmeans_gpu/_precision.py``).
        """
        if self.computes_reduced(precision):
            from .._precision import assign_reduced

            return assign_reduced(self, X, centers, centers_sq, precision)
        xp = self.xp
        scores = centers_sq[None, :] - 2.0 * (X @ centers.T)
        return xp.astype(xp.argmin(scores, axis=1), xp.int32)

    def nearest_two(self, product: Array, centers_sq: Array) -> tuple[Array, Array, Array]:
        """For the scores ``s = product + centers_sq`` of shape (rows, k): the index of
        each row's smallest score (int32, first on ties), that score, and the
        second-smallest score (equal to the smallest on a tie; +inf when k == 1)."""
        xp = self.xp
        scores = product + centers_sq[None, :]
        labels = xp.astype(xp.argmin(scores, axis=1), xp.int32)
        best = xp.min(scores, axis=1)
        k = int(scores.shape[1])
        columns = xp.arange(k, dtype=labels.dtype, device=self.device(scores))
        others = xp.where(columns[None, :] == labels[:, None], xp.inf, scores)
        return labels, best, xp.min(others, axis=1)

    def assign_and_sum(
        self,
        X: Array,
        centers: Array,
        centers_sq: Array,
        weights: Array | None,
        previous: Array | None,
        precision: str = "exact",
        deterministic: bool = False,
        with_inertia: bool = False,
    ) -> tuple[Array, Array, Array, Array, Array | None]:
        """One chunk's share of a Lloyd iteration: the labels of the rows of ``X`` (as
        :meth:`assign`), their per-cluster weighted sums ``(k, d)`` and weights ``(k,)``
        (as :meth:`cluster_sums`), how many labels differ from ``previous`` (0-d array;
        all of them when ``previous`` is None), and with ``with_inertia`` their
        :meth:`inertia_of` against their centres (else None). A backend that can do all
        of it in one pass over the rows overrides this."""
        xp = self.xp
        labels = self.assign(X, centers, centers_sq, precision)
        k = int(centers.shape[0])
        sums, weight_sums = self.cluster_sums(X, labels, weights, k, deterministic)
        if previous is None:
            # filled on the device: a host value copied in would wait for the device
            changed = xp.full((), X.shape[0], device=self.device(X))
        else:
            changed = xp.count_nonzero(labels != previous)
        inertia = self.inertia_of(X, centers, labels, weights) if with_inertia else None
        return labels, sums, weight_sums, changed, inertia

    def column_mean(self, X: Array) -> Array:
        """The mean of each column of X."""
        return self.xp.mean(X, axis=0)

    def cluster_sums(
        self,
        X: Array,
        labels: Array,
        weights: Array | None,
        n_clusters: int,
        deterministic: bool = False,
    ) -> tuple[Array, Array]:
        """Per-cluster weighted sums of rows ``(k, d)`` and total weights ``(k,)``.

        ``deterministic`` asks for bitwise the same sums on every run (a backend whose
        fast sums use atomics of varying order falls back to this one-hot product);
        this implementation always is."""
        xp = self.xp
        clusters = xp.arange(n_clusters, dtype=labels.dtype, device=self.device(X))
        onehot = xp.astype(labels[:, None] == clusters[None, :], X.dtype)
        if weights is not None:
            onehot = onehot * weights[:, None]
        return onehot.T @ X, xp.sum(onehot, axis=0)

    def count_labels(self, labels: Array, n_clusters: int) -> Array:
        """How many rows carry each label, ``(n_clusters,)``."""
        xp = self.xp
        clusters = xp.arange(n_clusters, dtype=labels.dtype, device=self.device(labels))
        step = max(1, (1 << 20) // n_clusters)  # 8 MiB of int64 flags at most
        counts = xp.zeros(n_clusters, dtype=xp.int64, device=self.device(labels))
        n = labels.shape[0]
        for start in range(0, n, step):
            chunk = labels[start : min(start + step, n)]
            counts += xp.sum(xp.astype(chunk[:, None] == clusters[None, :], xp.int64), axis=0)
        return counts

    def sq_dist_to_assigned(self, X: Array, centers: Array, labels: Array) -> Array:
        """Exact ``‖x − c_label‖²`` of each row, in the accumulator dtype."""
        xp = self.xp
        diff = X - xp.take(centers, labels, axis=0)
        diff = xp.astype(diff, self.accumulator_dtype(X.dtype), copy=False)
        return xp.sum(diff * diff, axis=1)

    def inertia_of(self, X: Array, centers: Array, labels: Array, weights: Array | None) -> Array:
        """Exact ``Σ w ‖x − c_label‖²`` of the rows ``X`` (0-d, in the accumulator
        dtype; ``w`` = 1 when ``weights`` is None)."""
        d2 = self.sq_dist_to_assigned(X, centers, labels)
        if weights is not None:
            d2 = d2 * self.xp.astype(weights, d2.dtype)
        return self.xp.sum(d2)

    def farthest(self, distances: Array, n: int) -> Array:
        """Indices of the ``n`` largest ``distances``, largest first."""
        order = self.xp.argsort(distances, descending=True, stable=True)
        return order[:n]
