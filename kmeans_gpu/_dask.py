"""K-means on a ``dask.array.Array``: the exact in-process fit, with the rows in shards.

Imported only when a dask array comes in. With a ``distributed`` client (the one
holding X's persisted blocks, else the default client), the rows are rebalanced once
per fit into one shard per worker (contiguous row ranges aligned to the backend's fixed
blocks of sums, built from X's blocks and kept on the worker), and every pass over the
data is one task per shard, pinned to its worker, that returns k × d-sized results;
without one, Dask's local scheduler reads X's blocks into one shard in this process.
Nothing here starts a cluster. The blocks compute with the backend ``backend=`` names
(the blocks' own library by default: NumPy, or CuPy on GPU workers); the small k × d
arithmetic and the convergence test run on the client in NumPy, and the fitted
centres are host arrays.
"""

from __future__ import annotations

import dataclasses
import numbers
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np

from ._api import Setup
from ._assign import EXACT, Pass, centers_for, distances
from ._init import check_centers, random_rows
from ._kmeans_parallel import kmeans_parallel_shards
from ._lloyd import Rows
from ._sharded import (
    Config,
    Labels,
    LocalShards,
    ShardedRows,
    Shards,
    check_shown,
    fetch_rows,
    final_labels,
    is_dask_array,
    make_shard,
    plan_shards,
    sharded_problem,
    weights_of,
)
from ._validation import (
    DimensionMismatchError,
    Placement,
    check_n_clusters,
    check_random_state,
)
from .backends import Array, Backend, backend_for_array, get_backend

#: Shards made in this process when there is no client (one: the backend's threads run
#: its chunks; more give the same results).
LOCAL_SHARDS = 1


def client_for(X: Any) -> Any | None:
    """The ``distributed`` client that holds X's persisted blocks, else the default
    client, else None (Dask's local scheduler runs)."""
    if "distributed" not in sys.modules:  # no client can exist without it
        return None
    from distributed import default_client, futures_of

    held = futures_of(X)
    if held:
        return held[0].client
    try:
        return default_client()
    except ValueError:
        return None


@dataclass(frozen=True)
class Compute:
    """The backend the shards compute with: ``spec`` (a name, resolved on each worker,
    or a backend object, which travels by name), its fixed block of sums and name."""

    spec: str | Backend
    block: int | None
    name: str

    def resolve(self) -> Backend:
        return get_backend(self.spec) if isinstance(self.spec, str) else self.spec


def compute_backend(X: Any, backend: str | Backend) -> Compute:
    """What ``backend=`` means for a dask array: the blocks' own library for
    ``"auto"``, else the backend named (NumPy blocks move to CuPy, or back)."""
    if isinstance(backend, Backend):
        return Compute(backend, backend.sum_block_rows, backend.name)
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string or a Backend, got {type(backend).__name__}")
    if backend == "auto":
        library = type(X._meta).__module__.partition(".")[0]
        if library not in ("numpy", "cupy"):
            found = backend_for_array(X._meta)
            if found is None:
                raise TypeError(f"cannot compute on dask blocks of {type(X._meta).__name__!r}")
            return Compute(found, found.sum_block_rows, found.name)
        backend = library
    if backend == "numpy":
        from .backends._numpy import NumpyBackend

        return Compute("numpy", NumpyBackend.sum_block_rows, "numpy")
    if backend == "cupy":
        from .backends._cupy import CupyBackend

        return Compute("cupy", CupyBackend.sum_block_rows, "cupy")
    get_backend(backend)  # raises the registry's error for an unknown name
    raise AssertionError(backend)  # pragma: no cover


def check_dask_array(X: Any, name: str = "X") -> tuple[Any, np.dtype]:
    """Validate a dask array's shape and dtype (lazily: the values are checked by the
    shards); returns X with its columns in one block and the dtype the solver uses."""
    ndim = len(X.shape)
    if ndim != 2:
        raise ValueError(
            f"Expected a 2-D array for {name} of shape (n_samples, n_features), got a "
            f"{ndim}-D array of shape {tuple(X.shape)}"
        )
    if any(np.isnan(c) for c in X.chunks[0]) or any(np.isnan(c) for c in X.chunks[1]):
        raise ValueError(
            f"{name} has unknown chunk sizes: call {name}.compute_chunk_sizes() first"
        )
    n, d = (int(v) for v in X.shape)
    if n == 0:
        raise ValueError(
            f"Found array with 0 sample(s) (shape={tuple(X.shape)}) while a minimum of 1 "
            f"is required: {name} is empty"
        )
    if d == 0:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={tuple(X.shape)}) while a minimum of 1 "
            f"is required: {name} has no features"
        )
    dtype = np.dtype(X.dtype)
    if dtype.kind in "USVO":
        raise TypeError(f"{name} must be numeric, got an array of dtype {dtype}")
    if dtype.kind == "c":
        raise ValueError(f"Complex data not supported: {name} has dtype {dtype}")
    target = dtype if dtype in (np.float32, np.float64) else np.dtype(np.float64)
    if X.numblocks[1] != 1:
        X = X.rechunk({1: -1})
    return X, target


def check_weights(sample_weight: Any, X: Any) -> tuple[Any, float | None]:
    """Weights for dask X: ``(a dask array of X's row count, None)``, ``(None, value)``
    for a scalar, or ``(None, None)``; their values are checked by the shards."""
    if sample_weight is None:
        return None, None
    n = int(X.shape[0])
    if isinstance(sample_weight, numbers.Real) and not isinstance(sample_weight, bool):
        value = float(sample_weight)
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"a scalar sample_weight must be finite and > 0, got {value}")
        return None, value
    if not is_dask_array(sample_weight):
        host = np.asarray(backend_host(sample_weight))
        if host.dtype.kind == "c":
            raise ValueError("sample_weight must be real, got complex values")
        try:
            host = host.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"sample_weight must be numeric: {exc}") from exc
        sample_weight = da.from_array(host) if host.ndim == 1 else host
    if np.dtype(sample_weight.dtype).kind == "c":
        raise ValueError("sample_weight must be real, got complex values")
    if tuple(sample_weight.shape) != (n,):
        raise ValueError(
            f"sample_weight.shape == {tuple(sample_weight.shape)}, expected ({n},): "
            "one weight per sample"
        )
    return sample_weight, None


class DistributedShards:
    """Shards held by the workers of a ``distributed`` client (futures of
    :class:`~kmeans_gpu._sharded.Shard`): every call is one task per shard, pinned to
    the worker it was built on (it follows the shard if that worker leaves)."""

    def __init__(
        self, client: Any, futures: list[Any], workers: list[str], ranges: list[tuple[int, int]]
    ) -> None:
        self.client, self.futures, self.workers = client, futures, workers
        self._ranges = ranges

    @property
    def ranges(self) -> list[tuple[int, int]]:
        return self._ranges

    def submit(self, i: int, function: Any, *args: Any) -> Any:
        return self.client.submit(
            function, self.futures[i], *args, workers=[self.workers[i]],
            allow_other_workers=True, pure=False,
        )  # fmt: skip

    def map(
        self, function: Any, *args: Any, each: Sequence[tuple[Any, ...]] | None = None
    ) -> list[Any]:
        futures = [
            self.submit(i, function, *args, *(() if each is None else each[i]))
            for i in range(len(self.futures))
        ]
        return list(self.client.gather(futures))

    def place(self, values: Sequence[Any]) -> list[Any]:
        return [
            self.client.submit(
                _same, value, workers=[worker], allow_other_workers=True, pure=False
            )
            for value, worker in zip(values, self.workers, strict=True)
        ]


def _same(value: Any) -> Any:
    return value


def build_shards(
    X: Any,
    weights: Any,
    weight: float | None,
    compute: Compute,
    dtype: np.dtype,
    n_shards: int | None = None,
) -> Shards:
    """X's rows (and weights) as shards: one per worker of X's client
    (:func:`client_for`), made on it from X's blocks; else ``n_shards`` (default
    :data:`LOCAL_SHARDS`) in this process."""
    n = int(X.shape[0])
    client = client_for(X)
    if client is None:
        ranges = plan_shards(n, compute.block, n_shards or LOCAL_SHARDS)
        parts = [X[a:b] for a, b in ranges]
        wparts = [] if weights is None else [weights[a:b] for a, b in ranges]
        found = dask.compute(*parts, *wparts)
        backend = compute.resolve()
        shards = [
            make_shard(backend, a, dtype, [found[i]],
                       None if weights is None else [found[len(ranges) + i]], weight)
            for i, (a, _) in enumerate(ranges)
        ]  # fmt: skip
        return LocalShards(shards)
    workers = sorted(client.ncores())
    ranges = plan_shards(n, compute.block, n_shards or len(workers))
    pieces = [list(X[a:b].to_delayed().ravel()) for a, b in ranges]
    wpieces = [
        [] if weights is None else list(weights[a:b].to_delayed().ravel()) for a, b in ranges
    ]
    flat = client.compute([p for group in pieces + wpieces for p in group])
    futures, at = [], 0
    groups = []
    for group in pieces + wpieces:
        groups.append(flat[at : at + len(group)])
        at += len(group)
    chosen = [workers[i % len(workers)] for i in range(len(ranges))]
    for i, (a, _) in enumerate(ranges):
        xs, ws = groups[i], groups[len(ranges) + i]
        futures.append(
            client.submit(
                make_shard,
                compute.spec,
                a,
                dtype,
                xs,
                ws if weights is not None else None,
                weight,
                workers=[chosen[i]],
                allow_other_workers=True,
                pure=False,
            )
        )
    return DistributedShards(client, futures, chosen, ranges)


def labels_array(
    shards: Shards, config: Config, labels: Labels, chunks: tuple[int, ...], meta: Any
) -> Any:
    """The labels ``labels`` names as a lazy dask array with ``chunks`` (X's row
    chunks), in X's row order; on a cluster, the shards' labels stay on the workers."""
    if isinstance(shards, LocalShards):
        found = shards.map(final_labels, config, labels.ref)
        xp = shards.shards[0].backend.xp
        whole = xp.concat(found)  # a copy: the shard's labels are never handed out
        return da.from_array(whole, chunks=(chunks,), asarray=False)
    assert isinstance(shards, DistributedShards)
    futures = [
        shards.submit(i, final_labels, config, labels.ref) for i in range(len(shards.ranges))
    ]
    from dask.highlevelgraph import HighLevelGraph
    from dask.tokenize import tokenize

    blocks, start = [], 0
    for size in chunks:
        stop = start + size
        parts = [
            (futures[i], max(start, a) - a, min(stop, b) - a)
            for i, (a, b) in enumerate(shards.ranges)
            if a < stop and start < b
        ]
        blocks.append(dask.delayed(_labels_block, pure=True)(parts, meta))
        start = stop
    # one chunk per delayed block, zero-row ones included (concatenate would drop them)
    name = "kmeans-gpu-labels-" + tokenize(*(b.key for b in blocks))
    layer: dict[Any, Any] = {(name, i): block.key for i, block in enumerate(blocks)}  # aliases
    graph = HighLevelGraph.from_collections(name, layer, dependencies=blocks)
    return da.Array(graph, name, chunks=(chunks,), dtype=np.int32, meta=meta)


def _labels_block(parts: list[tuple[Any, int, int]], meta: Any) -> Any:
    """Rows ``a:b`` of each shard's labels, joined (``meta``'s library when empty)."""
    pieces = [labels[a:b] for labels, a, b in parts]
    if not pieces:
        return meta[:0]
    if len(pieces) == 1:
        return pieces[0]
    from array_api_compat import array_namespace

    return array_namespace(pieces[0]).concat(pieces)


def _label_meta(X: Any) -> Any:
    return da.utils.meta_from_array(X._meta, ndim=1, dtype=np.int32)


@dataclass(frozen=True)
class DaskPlacement(Placement):
    """Where a Dask fit's results go: centres to the host, labels to a lazy dask array
    in X's chunks."""

    shards: Any = None
    config: Any = None
    chunks: tuple[int, ...] = ()
    meta: Any = None

    def to_output(self, x: Array) -> Array:
        if isinstance(x, Labels):
            return labels_array(self.shards, self.config, x, self.chunks, self.meta)
        return _host(x)


def _host(x: Any) -> np.ndarray:
    return np.asarray(backend_host(x))


def backend_host(x: Any) -> Any:
    """An array of any backend as a host array (anything else as it is)."""
    owner = backend_for_array(x)
    return x if owner is None else owner.to_numpy(x)


class _Named(Backend):
    """Names the backend the workers compute with (``backend_``); the client's
    arithmetic runs on NumPy."""


@dataclass(frozen=True)
class DaskSetup(Setup):
    """A fit's set-up on dask X: the shards and the client's view of the problem."""

    data: ShardedRows | None = None
    source: Any = None
    block: int | None = None
    #: every row's weight, on the host, for ``init="random"`` with weights
    weights: np.ndarray | None = None

    def rows(self) -> Rows:
        assert self.data is not None
        return self.data

    @property
    def shards(self) -> Shards:
        assert self.data is not None
        return self.data.shards

    def initial_centers(self) -> Array:
        """k-means‖ for ``"k-means++"`` and ``"k-means||"``; the same rows as in-process
        for ``"random"``; a callable gets the dask array."""
        assert self.data is not None
        problem, init, k = self.problem, self.init, self.n_clusters
        if isinstance(init, str) and init in ("k-means++", "k-means||"):
            return kmeans_parallel_shards(
                self.shards, problem, self.data.config, self.block, k, self.rng
            )
        if isinstance(init, str) and init == "random":
            chosen = random_rows(dataclasses.replace(problem, weights=self.weights), k, self.rng)
            return fetch_rows(self.shards, np.asarray(chosen))[0]
        if callable(init):
            centers = init(self.source, k, random_state=self.rng)
            if is_dask_array(centers):
                centers = centers.compute()
            return check_centers(_host(centers), problem, k, "the centers returned by init")
        return check_centers(_host(init), problem, k, "init")

    def same_clustering(self, a: Array, b: Array) -> bool:
        assert self.data is not None
        return self.data.same_clustering(a, b, self.n_clusters)

    def distinct(self, labels: Array) -> int:
        return len(labels.distinct)

    def showing(self, display_indices: np.ndarray | None) -> Setup:
        assert self.data is not None
        check_shown(self.source, display_indices)
        display = Ellipsis if display_indices is None else display_indices
        return dataclasses.replace(self, data=self.data.showing(display))

    def shown(self, labels: Array, rows: Array | None) -> Array:
        return labels.shown


def dask_setup(
    X: Any,
    n_clusters: Any,
    *,
    sample_weight: Any,
    init: Any,
    runs: int,
    max_iter: int,
    tol: float,
    random_state: Any,
    backend: str | Backend,
    empty_cluster: str,
    verbose: bool,
    working_memory: int | None,
    deterministic: bool,
    engine: Pass = EXACT,
    n_shards: int | None = None,
) -> DaskSetup:
    """``_api.setup`` for dask X (parameters already validated there)."""
    if engine is not EXACT:
        raise ValueError("the experimental engines run in-process: compute X first")
    X, dtype = check_dask_array(X)
    k = check_n_clusters(n_clusters, int(X.shape[0]))
    rng = check_random_state(random_state)
    weights, weight = check_weights(sample_weight, X)
    compute = compute_backend(X, backend)
    shards = build_shards(X, weights, weight, compute, dtype, n_shards)
    client = get_backend("numpy")
    problem, config = sharded_problem(
        shards, client, n_features=int(X.shape[1]), dtype=dtype, block=compute.block,
        working_memory=working_memory, deterministic=deterministic,
    )  # fmt: skip
    weighed = None
    if sample_weight is not None and isinstance(init, str) and init == "random":
        weighed = np.concatenate(shards.map(weights_of))  # the in-process draw needs them all
    placement = DaskPlacement(
        client, "cpu", _Named(client.xp, compute.name), shards=shards, config=config,
        chunks=tuple(int(c) for c in X.chunks[0]), meta=_label_meta(X),
    )  # fmt: skip
    return DaskSetup(
        problem=problem,
        placement=placement,
        n_clusters=k,
        init=init,
        runs=runs,
        max_iter=max_iter,
        tol=tol,
        empty_cluster=empty_cluster,
        rng=rng,
        verbose=verbose,
        data=ShardedRows(shards, problem, config, compute.block),
        source=X,
        block=compute.block,
        weights=weighed,
    )


# -- a fitted model on dask X --------------------------------------------------------------
def _fitted_centers(estimator: Any, X: Any) -> np.ndarray:
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator)
    centers = _host(estimator.cluster_centers_)
    if int(X.shape[1]) != int(centers.shape[1]):
        raise DimensionMismatchError(
            f"Dimension mismatch: X has {X.shape[1]} features, but {type(estimator).__name__} "
            f"is expecting {centers.shape[1]} features as input"
        )
    return centers


def predict(estimator: Any, X: Any) -> Any:
    """``KMeans.predict`` of dask X: a lazy dask array of int32 labels in X's chunks,
    each block's labels as the in-process ``predict`` finds them."""
    X, _ = check_dask_array(X)
    centers = _fitted_centers(estimator, X)
    return X.map_blocks(
        _predict_block, centers, estimator.backend, estimator.working_memory,
        dtype=np.int32, drop_axis=1, meta=_label_meta(X),
    )  # fmt: skip


def transform(estimator: Any, X: Any) -> Any:
    """``KMeans.transform`` of dask X: lazy distances, ``(n_samples, n_clusters)``."""
    X, dtype = check_dask_array(X)
    centers = _fitted_centers(estimator, X)
    k = int(centers.shape[0])
    return X.map_blocks(
        _transform_block, centers, estimator.backend, estimator.working_memory,
        dtype=dtype, chunks=(X.chunks[0], (k,)),
        meta=da.utils.meta_from_array(X._meta, ndim=2, dtype=dtype),
    )  # fmt: skip


def _block_problem(block: Any, centers: np.ndarray, backend: Any, working_memory: Any) -> Any:
    from ._api import prepare

    problem, placement, C = prepare(
        block, None, backend, working_memory, centers=centers, owner="KMeans"
    )
    return problem, placement, centers_for(problem, C)


def _predict_block(block: Any, centers: np.ndarray, backend: Any, working_memory: Any) -> Any:
    if block.shape[0] == 0:
        return da.utils.meta_from_array(block, ndim=1, dtype=np.int32)
    from ._assign import assign

    problem, placement, current = _block_problem(block, centers, backend, working_memory)
    xp = problem.backend.xp
    labels = xp.empty(problem.n_samples, dtype=xp.int32, device=problem.device)
    assign(problem, current, labels, statistics=False)
    return placement.to_output(labels)


def _transform_block(block: Any, centers: np.ndarray, backend: Any, working_memory: Any) -> Any:
    if block.shape[0] == 0:
        dtype = block.dtype if block.dtype in (np.float32, np.float64) else np.float64
        return np.zeros_like(block, shape=(0, centers.shape[0]), dtype=dtype)
    problem, placement, current = _block_problem(block, centers, backend, working_memory)
    return placement.to_output(distances(problem, current))


def score(estimator: Any, X: Any, sample_weight: Any = None) -> float:
    """``KMeans.score`` of dask X: the same bits as in-process (the rows in shards,
    the origin at the centres' mean, the inertia folded over the fixed blocks)."""
    X, dtype = check_dask_array(X)
    centers = _fitted_centers(estimator, X).astype(dtype)
    weights, weight = check_weights(sample_weight, X)
    compute = compute_backend(X, estimator.backend)
    shards = build_shards(X, weights, weight, compute, dtype)
    client = get_backend("numpy")
    problem, config = sharded_problem(
        shards, client, n_features=int(X.shape[1]), dtype=dtype, block=compute.block,
        working_memory=estimator.working_memory,
        center=np.mean(centers.astype(np.float64), axis=0),
    )  # fmt: skip
    rows = ShardedRows(shards, problem, config, compute.block)
    current = centers_for(problem, centers)
    start = Labels()
    start.centers = centers
    _, value = rows.finish(current, start, again=True)
    return -value


# -- plotting and files --------------------------------------------------------------------
def make_scene(X: Any, *, max_points: int | None, random_state: Any) -> Any:
    """``display.make_scene`` of dask X: the sample's rows come to the host, the
    projection's mean and covariance from one pass of dask reductions over X."""
    from .display import Scene, display_sample, projection

    X, _ = check_dask_array(X)
    n, d = (int(v) for v in X.shape)
    indices = display_sample(n, max_points, random_state)
    rows = X if indices is None else X[indices]
    if d <= 2:
        host = dask.compute(rows)[0]
        shown = projection(np.zeros(d), None)
    else:
        values = X.astype(np.float64)
        mean = values.mean(axis=0)
        centred = values - mean
        host, mean_host, scatter = dask.compute(rows, mean, centred.T @ centred)
        shown = projection(_host(mean_host), _host(scatter) / n)
    return Scene(shown(_host(host)), indices, shown)


def load_stack(path: Any) -> Any:
    """A dask array of the rows stored at ``path``: a ``.zarr`` store, or a folder of
    numbered ``.npy`` files (``0.npy``, ``1.npy``, … as ``dask.array.to_npy_stack``
    writes), each memory-mapped (read without pickle) and stacked along the rows."""
    from pathlib import Path

    folder = Path(path)
    if folder.suffix.lower() == ".zarr":
        return da.from_zarr(str(folder))
    files = sorted(
        (f for f in folder.glob("*.npy") if f.stem.isdigit()), key=lambda f: int(f.stem)
    )
    if not files:
        raise ValueError(f"{folder}: no numbered .npy files (0.npy, 1.npy, …)")
    blocks = []
    for file in files:  # the graph names the files: each worker maps them itself
        head = np.load(file, mmap_mode="r", allow_pickle=False)
        value = dask.delayed(_mapped, pure=True)(str(file))
        blocks.append(da.from_delayed(value, shape=head.shape, dtype=head.dtype))
    return da.concatenate(blocks, axis=0)


def _mapped(path: str) -> np.ndarray:
    return np.load(path, mmap_mode="r", allow_pickle=False)
