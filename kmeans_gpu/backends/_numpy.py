"""NumPy: the generic backend with faster single operations and chunks run on threads.

Chunks of rows run on a thread pool (NumPy and BLAS release the GIL), with BLAS held to
one thread inside the workers so the cores are not oversubscribed; the pool is no larger
than the cores this process may use, ``OMP_NUM_THREADS`` and the BLAS limit in force
(``threadpoolctl``). Inside a chunk, distances are computed in blocks that stay in the
core's cache; for a handful of clusters the nearest centre is found by a running minimum
over clusters rather than ``argmin`` along short rows.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ._base import Array, Backend, T

#: Bytes of one block of distances: large enough that the GIL is rarely in the way of
#: two threads, small enough for the cache (scores are read back one cluster at a time).
BLOCK_BYTES = 1 << 23
#: Up to this many clusters, the nearest centre is a running minimum over clusters.
FEW_CLUSTERS = 32
#: Up to this many features, the per-cluster sums use bincount, column by column.
FEW_FEATURES = 8
_WORKER_PREFIX = "kmeans-gpu-worker"
logger = logging.getLogger("kmeans_gpu")
#: Chunks smaller than this are not worth a thread.
MIN_CHUNK_ROWS = 2048


@functools.cache
def _blas_controller() -> Any:
    """threadpoolctl's view of the loaded BLAS libraries (found once: a scan of the
    process's libraries takes about a millisecond)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return None
    return ThreadpoolController().select(user_api="blas")


def effective_threads() -> int:
    """Threads the user allows: usable cores, ``OMP_NUM_THREADS``, the BLAS limit."""
    if hasattr(os, "sched_getaffinity"):
        n = len(os.sched_getaffinity(0))
    else:  # pragma: no cover - macOS, Windows
        n = os.cpu_count() or 1
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.strip().isdigit() and int(env) > 0:
        n = min(n, int(env))
    controller = _blas_controller()
    if controller is not None and controller.lib_controllers:
        n = min(n, *(lib.num_threads for lib in controller.lib_controllers))
    return max(1, n)


class NumpyBackend(Backend):
    keeps_working_copy = True

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

    # -- threads ----------------------------------------------------------------------
    def chunk_rows(self, n_samples: int, rows: int) -> int:
        threads = effective_threads() if n_samples >= 2 * MIN_CHUNK_ROWS else 1
        if threads > 1:  # at least two chunks per thread, to balance the load
            rows = min(rows, max(MIN_CHUNK_ROWS, -(-n_samples // (2 * threads))))
        return max(1, min(rows, n_samples))

    def map_chunks(
        self, work: Callable[[int, int], T], ranges: Sequence[tuple[int, int]]
    ) -> list[T]:
        threads = 1 if len(ranges) < 2 else min(effective_threads(), len(ranges))
        # inside one of our own workers (a nested call) run in place: never wait on the
        # pool from the pool
        nested = threading.current_thread().name.startswith(_WORKER_PREFIX)
        if threads <= 1 or nested:
            return super().map_chunks(work, ranges)
        pool = self._executor(threads)
        controller = _blas_controller()
        with contextlib.nullcontext() if controller is None else controller.limit(limits=1):
            return list(pool.map(lambda r: work(*r), ranges))

    def _executor(self, threads: int) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None or self._pool_size != threads:
                if self._pool is not None:
                    self._pool.shutdown(wait=False)
                self._pool = ThreadPoolExecutor(threads, thread_name_prefix=_WORKER_PREFIX)
                self._pool_size = threads
            return self._pool

    def _scratch(self, name: str, size: int, dtype: Any) -> np.ndarray:
        """A reusable buffer of this thread (no page faults on every block)."""
        buffers = self._local.__dict__.setdefault("buffers", {})
        buffer = buffers.get(name)
        if buffer is None or buffer.size < size or buffer.dtype != dtype:
            buffer = buffers[name] = np.empty(size, dtype=dtype)
        return buffer[:size]

    # -- the Lloyd step ---------------------------------------------------------------
    def column_mean(self, X: Array) -> Array:
        # a reduction down the columns of a tall array is slow in NumPy; a BLAS
        # vector-matrix product is not
        return (np.ones(X.shape[0], dtype=X.dtype) @ X) / X.shape[0]

    def _score_blocks(
        self,
        X: Array,
        centers: Array,
        centers_sq: Array,
        *,
        transposed: bool,
        add_squares: bool = True,
        block_bytes: int | None = None,
    ) -> Any:
        """Cache-sized blocks of ``‖c‖² − 2x·c`` (of ``−2x·c`` unless ``add_squares``):
        ``(start, stop, scores)``, the scores ``(k, m)`` when ``transposed`` else
        ``(m, k)``, in a reused buffer.

        (-2c)·x is exactly -2(c·x): scaling by a power of two rounds nothing, so these
        are the generic scores, with one pass over each block fewer.
        """
        n, k = X.shape[0], centers.shape[0]
        scaled = -2.0 * centers
        block = max(16, (block_bytes or BLOCK_BYTES) // (k * X.itemsize))
        for start in range(0, n, block):
            stop = min(start + block, n)
            rows = X[start:stop]
            scores = self._scratch("scores", (stop - start) * k, X.dtype)
            if transposed:
                scores = scores.reshape(k, stop - start)
                np.matmul(scaled, rows.T, out=scores)
                if add_squares:
                    scores += centers_sq[:, None]
            else:
                scores = scores.reshape(stop - start, k)
                np.matmul(rows, scaled.T, out=scores)
                if add_squares:
                    scores += centers_sq
            yield start, stop, scores

    def assign(
        self, X: Array, centers: Array, centers_sq: Array, precision: str = "exact"
    ) -> Array:
        # this thread's buffer: no fresh pages to fault in on every chunk (see the
        # contract in Backend.assign)
        labels = self._scratch("labels", X.shape[0], np.int32)
        few = centers.shape[0] <= FEW_CLUSTERS
        for start, stop, scores in self._score_blocks(X, centers, centers_sq, transposed=few):
            if few:  # clusters along the first axis, each one contiguous
                self._running_argmin(scores, labels[start:stop])
            else:
                labels[start:stop] = scores.argmin(axis=1)
        return labels

    def _running_argmin(self, scores: np.ndarray, out: np.ndarray) -> None:
        """``out[i] = argmin(scores[:, i])``, the first index on ties (k < 256).

        Branch-free: as j only grows, "set the label to j where scores[j] is lower" is
        ``label = max(label, j * lower)``, in uint8.
        """
        m = scores.shape[1]
        best = self._scratch("best", m, scores.dtype)
        lower = self._scratch("lower", m, np.bool_)
        candidate = self._scratch("candidate", m, np.uint8)
        label = self._scratch("label", m, np.uint8)
        best[:] = scores[0]
        label[:] = 0
        for j in range(1, scores.shape[0]):
            np.less(scores[j], best, out=lower)
            np.minimum(best, scores[j], out=best)
            np.multiply(lower.view(np.uint8), j, out=candidate)
            np.maximum(label, candidate, out=label)
        out[:] = label

    def cluster_sums(
        self,
        X: Array,
        labels: Array,
        weights: Array | None,
        n_clusters: int,
        deterministic: bool = False,  # always: chunks are reduced in order
    ) -> tuple[Array, Array]:
        rows = X if weights is None else X * weights[:, None]
        if X.shape[1] <= FEW_FEATURES:
            # bincount wants intp labels and contiguous float64 weights: convert into
            # this thread's buffers once, rather than into fresh memory per call
            n = labels.shape[0]
            index = self._scratch("index", n, np.intp)
            index[:] = labels
            column = self._scratch("column", n, np.float64)
            sums = np.empty((n_clusters, X.shape[1]), dtype=np.float64)
            for j in range(X.shape[1]):
                column[:] = rows[:, j]
                sums[:, j] = np.bincount(index, weights=column, minlength=n_clusters)
            if weights is not None:
                column[:] = weights
            weight_sums = np.bincount(
                index, weights=None if weights is None else column, minlength=n_clusters
            )
        else:
            weight_sums = np.bincount(labels, weights=weights, minlength=n_clusters)
            from scipy import sparse

            # the one-hot (k × n) matrix in CSC form needs no sorting: column i holds a
            # single 1 in row labels[i]
            n = labels.shape[0]
            onehot = sparse.csc_array(
                (np.ones(n, dtype=X.dtype), labels, np.arange(n + 1)), shape=(n_clusters, n)
            )
            sums = onehot @ rows
        return sums.astype(X.dtype, copy=False), weight_sums.astype(X.dtype, copy=False)

    def count_labels(self, labels: Array, n_clusters: int) -> Array:
        return np.bincount(labels, minlength=n_clusters)

    def sq_dist_to_assigned(self, X: Array, centers: Array, labels: Array) -> Array:
        diff = np.take(centers, labels, axis=0)  # far faster than centers[labels]
        np.subtract(X, diff, out=diff)
        diff = diff.astype(np.float64, copy=False)
        return np.einsum("ij,ij->i", diff, diff)

    def farthest(self, distances: Array, n: int) -> Array:
        # scikit-learn's choice, so that relocations (and therefore labels) agree with it.
        return np.argpartition(distances, -n)[: -n - 1 : -1]


def make_backend() -> NumpyBackend:
    """The NumPy backend: with compiled kernels when numba is installed and
    ``KMEANS_GPU_NUMBA`` is not ``0`` (read on every call), else pure NumPy."""
    return _numpy_backend(os.environ.get("KMEANS_GPU_NUMBA", "").strip() != "0")


@functools.cache
def _numpy_backend(compiled: bool) -> NumpyBackend:
    if compiled:
        try:
            from ._numba import NumbaBackend
        except ImportError as exc:
            logger.debug("numba is not installed (%s): the pure NumPy path runs", exc)
        except Exception as exc:  # a broken numba or llvmlite, an unusable cache...
            logger.warning("numba kernels unavailable (%s): the pure NumPy path runs", exc)
        else:
            return NumbaBackend()
    return NumpyBackend()
