"""NumPy: the generic backend with faster single operations and chunks run on threads.

Chunks of rows run on a thread pool (NumPy and BLAS release the GIL) no larger than the
cores this process may use, ``OMP_NUM_THREADS`` and the BLAS limit in force; BLAS runs
one thread inside them, so the cores are not oversubscribed. Inside a chunk, scores
are computed in blocks that stay in the core's cache. Every sum that reaches a result
(per-cluster sums, distances, the inertia) is a float64 sum in row order, so the
results do not depend on the number of threads, nor on whether numba's kernels run.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from ._base import Array, Backend, T, centred64, fold, rescale

#: Bytes of one block of scores: large enough that the GIL is rarely in the way of two
#: threads, small enough for the cache.
BLOCK_BYTES = 1 << 23
#: Up to this many clusters, the two nearest centres are running minima over clusters.
FEW_CLUSTERS = 32
#: Up to this many features, row-wise operations run a column at a time.
FEW_FEATURES = 8
#: Bytes of a memory page, for buffers placed apart within their pages.
PAGE = 4096
_WORKER_PREFIX = "kmeans-gpu-worker"
logger = logging.getLogger("kmeans_gpu")


@functools.cache
def _blas_controller() -> Any:
    """threadpoolctl's view of the loaded BLAS libraries (found once)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return None
    return ThreadpoolController().select(user_api="blas")


class _OneBlasThread:
    """BLAS held to one thread while any pass over the data runs in this process (a
    count of them: the last one out restores the limit the first one found)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._limit: Any = None
        #: the fewest threads of the BLAS libraries before the limit (None: none held)
        self.found: int | None = None

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            controller = _blas_controller()
            if self._users == 0 and controller is not None and controller.lib_controllers:
                self.found = min(lib.num_threads for lib in controller.lib_controllers)
                self._limit = controller.limit(limits=1)
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0 and self._limit is not None:
                    self._limit.restore_original_limits()
                    self._limit = self.found = None


one_blas_thread = _OneBlasThread()


def effective_threads() -> int:
    """Threads the user allows: usable cores, ``OMP_NUM_THREADS``, the BLAS limit."""
    if hasattr(os, "sched_getaffinity"):
        n = len(os.sched_getaffinity(0))
    else:  # pragma: no cover - macOS, Windows
        n = os.cpu_count() or 1
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.strip().isdigit() and int(env) > 0:
        n = min(n, int(env))
    blas = one_blas_thread.found  # while held, the limit it found
    controller = _blas_controller()
    if blas is None and controller is not None and controller.lib_controllers:
        blas = min(lib.num_threads for lib in controller.lib_controllers)
    return max(1, n if blas is None else min(n, blas))


class NumpyBackend(Backend):
    """The NumPy backend (pure NumPy; see ``_numba`` for the compiled kernels)."""

    keeps_working_copy = True
    max_chunk_rows = 1 << 17
    sum_block_rows = 4096

    def __init__(self) -> None:
        import array_api_compat.numpy as xp

        super().__init__(xp, "numpy")
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        self._lock = threading.Lock()

    def owns(self, x: object) -> bool:
        return isinstance(x, np.ndarray)

    def device(self, x: Array) -> str:
        return "cpu"

    def to_numpy(self, x: Array) -> np.ndarray:
        return np.asarray(x)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_numpy_backend, (False,))

    # -- threads ----------------------------------------------------------------------
    def concurrency(self) -> int:
        return effective_threads()

    def map_chunks(
        self, work: Callable[[int, int], T], ranges: Sequence[tuple[int, int]]
    ) -> Iterator[T]:
        """Results in order, at most two chunks per thread ahead of the one awaited."""
        threads = 1 if len(ranges) < 2 else min(effective_threads(), len(ranges))
        # inside one of our own workers (a nested call) run in place: never wait on the
        # pool from the pool
        nested = threading.current_thread().name.startswith(_WORKER_PREFIX)
        with one_blas_thread():
            if threads <= 1 or nested:
                for start, stop in ranges:
                    yield work(start, stop)
                return
            pool = self._executor(threads)
            pending: deque[Future[T]] = deque()
            todo = iter(ranges)
            try:
                for start, stop in todo:
                    pending.append(pool.submit(work, start, stop))
                    if len(pending) >= 2 * threads:
                        break
                while pending:
                    done = pending.popleft().result()
                    for start, stop in todo:
                        pending.append(pool.submit(work, start, stop))
                        break
                    yield done
            finally:
                for future in pending:
                    future.cancel()

    def _executor(self, threads: int) -> ThreadPoolExecutor:
        with self._lock:
            # exactly as many threads as allowed now; a pass still holding the old pool
            # finishes on it, and its threads end once nothing refers to it
            if self._pool is None or self._pool_size != threads:
                self._pool = ThreadPoolExecutor(threads, thread_name_prefix=_WORKER_PREFIX)
                self._pool_size = threads
            return self._pool

    def write_at(self, x: Array, index: Array, values: Array) -> None:
        x[index] = values

    # -- rows of the data: a column at a time for few features, where NumPy's loops
    # over rows of two or three values cost several times more (the same values)
    def row_norms(self, rows: Array) -> Array:
        d = rows.shape[1]
        if d > FEW_FEATURES or not d:
            return super().row_norms(rows)
        total = rows[:, 0] * rows[:, 0]
        for j in range(1, d):
            total += rows[:, j] * rows[:, j]
        return total

    def rows64(self, X: Array, origin: tuple[Array, int]) -> Array:
        mean, exponent = origin
        d = X.shape[1]
        if d > FEW_FEATURES or exponent < 0:
            return centred64(np, X, origin)
        rows = X.astype(np.float64)
        for j in range(d):
            rows[:, j] -= mean[j]
        return rescale(rows, exponent)

    def _scratch(self, name: str, size: int, dtype: Any) -> np.ndarray:
        """A reusable buffer of this thread (no page faults on every block)."""
        buffers = self._local.__dict__.setdefault("buffers", {})
        buffer = buffers.get(name)
        if buffer is None or buffer.size < size or buffer.dtype != dtype:
            buffer = buffers[name] = np.empty(size, dtype=dtype)
        return buffer[:size]

    # -- the pass over the data -------------------------------------------------------
    def _score_blocks(
        self,
        X: Array,
        centers: Array,
        centers_sq: Array,
        *,
        transposed: bool,
        add_squares: bool = True,
        block_bytes: int = BLOCK_BYTES,
    ) -> Iterator[tuple[int, int, np.ndarray]]:
        """Cache-sized blocks of ``‖c‖² − 2x·c`` (of ``−2x·c`` unless ``add_squares``):
        ``(start, stop, scores)``, the scores ``(k, m)`` when ``transposed`` else
        ``(m, k)``, in a reused buffer. ``(−2c)·x`` is exactly ``−2(c·x)``."""
        n, k = X.shape[0], centers.shape[0]
        scaled = self._operand(-2.0 * centers)
        block = max(16, block_bytes // (k * X.dtype.itemsize))
        for start in range(0, n, block):
            stop = min(start + block, n)
            rows = X[start:stop]
            scores = self._scratch("scores", (stop - start) * k, X.dtype)
            if transposed:
                scores = scores.reshape(k, stop - start)
                self._product(rows, scaled, scores, transposed=True)
                if add_squares:
                    scores += centers_sq[:, None]
            else:
                scores = scores.reshape(stop - start, k)
                self._product(rows, scaled, scores, transposed=False)
                if add_squares:
                    scores += centers_sq
            yield start, stop, scores

    def _operand(self, centers: Array) -> Array:
        """The centres as :meth:`_product` takes them (made once per pass)."""
        return centers

    def _product(self, rows: Array, centers: Array, out: np.ndarray, transposed: bool) -> None:
        """``out = centers · rowsᵀ`` (``transposed``) or ``rows · centersᵀ``."""
        if transposed:
            np.matmul(centers, rows.T, out=out)
        else:
            np.matmul(rows, centers.T, out=out)

    def _nearest_two_buffers(
        self, m: int, dtype: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Reused labels, best and second buffers of ``m`` rows, their starts a quarter
        of a page apart: at one offset in their pages, the loads and stores of the
        running minima alias one another (4K aliasing) and take several times longer."""
        dtypes = (np.dtype(np.int32), np.dtype(dtype), np.dtype(dtype))
        size = m * max(d.itemsize for d in dtypes)
        stride = -(-size // PAGE) * PAGE + PAGE // 4
        raw = self._scratch("nearest_two", 3 * stride + PAGE, np.uint8)
        start = -raw.ctypes.data % PAGE
        labels, best, second = (
            raw[start + i * stride : start + i * stride + m * d.itemsize].view(d)
            for i, d in enumerate(dtypes)
        )
        return labels, best, second

    def nearest_two(
        self, X: Array, centers: Array, centers_sq: Array
    ) -> tuple[Array, Array, Array]:
        labels, best, second = self._nearest_two_buffers(X.shape[0], X.dtype)
        few = centers.shape[0] <= FEW_CLUSTERS
        for start, stop, scores in self._score_blocks(X, centers, centers_sq, transposed=few):
            out = labels[start:stop], best[start:stop], second[start:stop]
            if few:  # clusters along the first axis, each one contiguous
                _running_two(scores, *out)
            elif scores.shape[1] == 1:
                out[0][:], out[1][:], out[2][:] = 0, scores[:, 0], np.inf
            else:
                out[0][:] = scores.argmin(axis=1)
                two = np.partition(scores, 1, axis=1)
                out[1][:], out[2][:] = two[:, 0], two[:, 1]
        return labels, best, second

    def cluster_sums(
        self,
        X: Array,
        origin: tuple[Array, int],
        labels: Array,
        weights: Array | None,
        n_clusters: int,
        deterministic: bool = False,  # always: the same order every time
    ) -> tuple[Array, Array]:
        """Each cluster's rows added in row order within fixed blocks of rows, the
        blocks added as :func:`fold`'s binary tree."""
        parts = [
            (a, b, self._block_sums(X[a:b], origin, labels[a:b], _rows(weights, a, b), n_clusters))
            for a, b in self._blocks(X.shape[0])
        ]
        return (
            fold(((a, b, part[0]) for a, b, part in parts), self.sum_block_rows),
            fold(((a, b, part[1]) for a, b, part in parts), self.sum_block_rows),
        )

    def _blocks(self, n: int) -> list[tuple[int, int]]:
        block = self.sum_block_rows or max(1, n)
        return [(a, min(a + block, n)) for a in range(0, n, block)] or [(0, 0)]

    def _block_sums(
        self,
        X: Array,
        origin: tuple[Array, int],
        labels: Array,
        weights: Array | None,
        n_clusters: int,
    ) -> tuple[Array, Array]:
        rows = self.rows64(X, origin)
        w = None if weights is None else weights.astype(np.float64)
        if w is not None:
            rows *= w[:, None]
        weight_sums = np.bincount(labels, weights=w, minlength=n_clusters).astype(np.float64)
        # bincount adds each bin's values in order: each cluster's rows in row order
        sums = np.empty((n_clusters, X.shape[1]))
        column = np.empty(X.shape[0])
        for j in range(X.shape[1]):
            column[:] = rows[:, j]
            sums[:, j] = np.bincount(labels, weights=column, minlength=n_clusters)
        return sums, weight_sums

    def sq_distances(self, X: Array, centers: Array, labels: Array, exponent: int) -> Array:
        # features added one after another: as numba's kernel adds them
        diff = rescale(X.astype(np.float64), exponent)
        diff -= rescale(np.take(centers, labels, axis=0).astype(np.float64), exponent)
        np.multiply(diff, diff, out=diff)
        total = diff[:, 0].copy()
        for j in range(1, diff.shape[1]):
            total += diff[:, j]
        return total

    def inertia_of(
        self, X: Array, centers: Array, labels: Array, weights: Array | None, exponent: int
    ) -> Array:
        d2 = self.sq_distances(X, centers, labels, exponent)
        if weights is not None:
            d2 *= weights.astype(np.float64)
        # rows added one after another within blocks (np.sum would pair them), the
        # blocks as the binary tree
        parts = (
            (a, b, np.cumsum(d2[a:b])[-1] if b > a else np.float64(0.0))
            for a, b in self._blocks(X.shape[0])
        )
        return np.asarray(fold(parts, self.sum_block_rows))

    def distinct(self, labels: Array, n_clusters: int) -> int:
        return int(np.count_nonzero(np.bincount(labels, minlength=n_clusters)))

    def farthest(self, distances: Array, n: int) -> Array:
        # ties to the lowest index (the generic rule): shards' candidates merge exactly
        if n >= distances.shape[0]:
            return np.argsort(-distances, kind="stable")[:n]
        threshold = distances[np.argpartition(distances, -n)[-n]]
        candidates = np.flatnonzero(distances >= threshold)
        return candidates[np.argsort(-distances[candidates], kind="stable")[:n]]


def _rows(values: Array | None, start: int, stop: int) -> Array | None:
    return None if values is None else values[start:stop]


def _running_two(
    scores: np.ndarray, labels: np.ndarray, best: np.ndarray, second: np.ndarray
) -> None:
    """Per column of ``scores`` (k, m): the index of the smallest (the first on ties),
    the smallest and the second-smallest value, folding in one cluster at a time."""
    best[:] = scores[0]
    labels[:] = 0
    second[:] = np.inf
    for j in range(1, scores.shape[0]):
        lower = scores[j] < best
        np.minimum(second, np.where(lower, best, scores[j]), out=second)
        np.minimum(best, scores[j], out=best)
        labels[lower] = j


def make_backend(numba: bool | None = None) -> NumpyBackend:
    """The NumPy backend: with numba's compiled kernels when ``numba`` (None: when it
    is installed and ``KMEANS_GPU_NUMBA`` does not say ``0``), else pure NumPy."""
    if numba is None:
        from .._config import numba_enabled

        numba = numba_enabled()
    return _numpy_backend(bool(numba))


@functools.cache
def _numpy_backend(compiled: bool) -> NumpyBackend:
    if compiled and importlib.util.find_spec("numba") is not None:
        from ._numba import NumbaBackend

        return NumbaBackend()
    return NumpyBackend()
