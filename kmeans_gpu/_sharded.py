"""Sharded rows: the data held in contiguous row ranges (shards), each where it is
computed, and the data-sized work of a fit done shard by shard with the in-process code.

A shard holds rows ``start:stop`` of X (and their weights) as one array of its compute
backend. Where the backend adds its float64 sums over fixed blocks of rows
(``sum_block_rows``), every shard starts on a block boundary and works in *nodes*: the
maximal aligned power-of-two runs of blocks in its range, which are nodes of the binary
tree :func:`~kmeans_gpu.backends._base.fold` adds the blocks in. A node's statistics are
the in-process pass's over its rows (:func:`~kmeans_gpu._assign.assign` on the node as a
problem of its own, whose chunks are aligned runs of blocks again), so the client,
folding every shard's nodes in row order, gets the bits the in-process fit gets over all
rows, whatever the shards. The set-up's sums (mean, variance) are made the same way.

Shards are driven through a :class:`Shards` object, whose ``map(function, *args)`` runs
a function of this module on every shard and returns the results in shard order: here
in this process (:class:`LocalShards`), or as one task per shard on the worker that
holds it (``kmeans_gpu._dask``). What comes back is k × d-sized. A shard keeps the
labels of the last pass and the final labels of runs (by token); a shard rebuilt from
scratch (a lost worker) recomputes labels it lacks from the centres they were assigned
to, which every request names.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ._assign import Centers, Statistics, assign, centers_for, working_inertia
from ._lloyd import Farthest, farthest_rows
from ._problem import (
    Problem,
    _largest,
    _moments,
    _scale_exponent,
    _scaled64,
    _variance,
    maps_a_file,
)
from .backends import Array, Backend
from .backends._base import centred64, fold, rescale

#: Most rows whose labels a frame stream copies to the client each iteration when no
#: ``display_indices`` are given.
MAX_SHOWN_ROWS = 10_000_000

_tokens = itertools.count(1)


def is_dask_array(x: Any) -> bool:
    """Whether ``x`` is a ``dask.array.Array`` (told without importing Dask)."""
    kind = type(x)
    return kind.__module__.partition(".")[0] == "dask" and kind.__name__ == "Array"


def check_shown(X: Any, display_indices: Any) -> None:
    """Refuse a frame stream of dask X that would copy more than
    :data:`MAX_SHOWN_ROWS` labels to the client per iteration (before any work)."""
    if display_indices is None and is_dask_array(X) and X.shape[0] > MAX_SHOWN_ROWS:
        raise ValueError(
            f"X has {X.shape[0]} rows: a frame stream on Dask copies the labels of at most "
            f"{MAX_SHOWN_ROWS} rows each iteration; pass display_indices, a sample of rows "
            "to show (kmeans_gpu.display.display_sample draws one)"
        )


def node_ranges(start: int, stop: int, block: int | None) -> list[tuple[int, int]]:
    """The maximal aligned power-of-two runs of ``block``-row blocks that make up rows
    ``start:stop`` (``start`` on a block boundary; the last block may be short), in
    order; the whole range when there are no blocks."""
    if not block:
        return [(start, stop)] if stop > start else []
    out = []
    at = start
    while at < stop:
        first, left = at // block, -(-(stop - at) // block)
        size = 1
        while first % (2 * size) == 0 and 2 * size <= left:
            size *= 2
        out.append((at, min(at + size * block, stop)))
        at = out[-1][1]
    return out


def plan_shards(n: int, block: int | None, count: int) -> list[tuple[int, int]]:
    """Row ranges of about ``n / count`` rows for ``count`` shards, each starting on a
    block boundary, and on a boundary of a larger aligned run where that keeps them
    within an eighth of even (fewer nodes per shard)."""
    unit = block or 1
    blocks = -(-n // unit)
    count = max(1, min(count, blocks))
    step = 1 << max(0, int(math.log2(max(1.0, blocks / (8 * count)))))
    cuts = sorted({min(blocks, round(i * blocks / count / step) * step) for i in range(count)})
    cuts = [c for c in cuts if c < blocks] + [blocks]
    if cuts[0] != 0:
        cuts.insert(0, 0)
    return [(min(a * unit, n), min(b * unit, n)) for a, b in itertools.pairwise(cuts)]


@dataclass(frozen=True, eq=False)
class Config:
    """The origin of the working rows and the settings of a fit, as shards need them:
    ``mean`` (float64, host) and ``exponent``, the working memory (None: each shard's
    backend default), ``deterministic``; ``token`` tells configurations apart."""

    mean: np.ndarray
    exponent: int
    working_memory: int | None
    deterministic: bool
    token: int = dataclasses.field(default_factory=lambda: next(_tokens))


@dataclass(frozen=True)
class LabelRef:
    """Names the labels of one pass or run on the shards: ``token``, and the centres
    (X's units and dtype, host) they are exact for, from which a shard that lost them
    computes them again."""

    token: int
    centers: Any


class Labels:
    """A run's labels as the client holds them: they stay on the shards. ``shown``:
    the labels of the rows a frame stream shows (host); ``distinct``: the clusters used
    (final labels only)."""

    def __init__(self) -> None:
        self.token = next(_tokens)
        self.centers: Any = None
        self.shown: np.ndarray | None = None
        self.distinct: np.ndarray | None = None

    @property
    def ref(self) -> LabelRef:
        return LabelRef(self.token, self.centers)


class Shard:
    """Rows ``start:stop`` of X (``X``, ``weights``: arrays of ``backend``) and what a
    fit keeps with them. Pickled with its arrays and labels (the backend by name)."""

    def __init__(self, backend: Backend, X: Array, weights: Array | None, start: int) -> None:
        self.backend = backend
        self.X = X
        self.weights = weights
        self.start = int(start)
        self.stop = self.start + int(X.shape[0])
        self.labels: Array | None = None
        self.token: int | None = None
        self.kept: dict[int, Array] = {}
        #: per-row state of an initialisation (k-means‖)
        self.state: dict[str, Any] = {}
        self._config: Config | None = None
        self._problem: Problem | None = None
        self._nodes: list[tuple[int, int, Problem]] = []

    @classmethod
    def wrapping(cls, problem: Problem, config: Config) -> Shard:
        """All the rows of an in-process problem as one shard set up as ``config``."""
        shard = cls(problem.backend, problem.X, problem.weights, 0)
        shard._problem, shard._nodes, shard._config = problem, shard._parts(problem), config
        return shard

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (self.backend, self.X, self.weights, self.start, self.token,
                           self.labels, self.kept))  # fmt: skip

    def __sizeof__(self) -> int:
        arrays = [self.X, self.weights, self.labels, *self.kept.values(), *self.state.values()]
        if self._problem is not None:
            arrays.append(self._problem.X_working)
            arrays += [node.__dict__.get("squared_row_norms") for _, _, node in self._nodes]
        return 256 + sum(int(getattr(a, "nbytes", 0)) for a in arrays if a is not None)

    def __repr__(self) -> str:
        return f"<Shard rows {self.start}:{self.stop} on {self.backend.name!r}>"

    @property
    def device(self) -> Any:
        return self.backend.device(self.X)

    def plain(self, working_memory: int | None) -> list[tuple[int, int, Problem]]:
        """The nodes as problems with the origin at zero (for the set-up's sums)."""
        xp = self.backend.xp
        d = int(self.X.shape[1])
        problem = Problem(
            self.backend, self.X, self.weights,
            xp.zeros(d, dtype=xp.float64, device=self.device), 0, 0.0,
            working_memory or self.backend.default_working_memory(),
        )  # fmt: skip
        return self._parts(problem)

    def _parts(self, problem: Problem) -> list[tuple[int, int, Problem]]:
        block = self.backend.sum_block_rows
        s = self.start
        return [(a, b, problem.part(a - s, b - s)) for a, b in node_ranges(s, self.stop, block)]

    def configured(self, config: Config) -> Problem:
        """The shard as a problem of ``config``'s origin (made once per fit: the
        working copy where the backend keeps one, the nodes)."""
        if self._config is None or self._config.token != config.token:
            backend, xp = self.backend, self.backend.xp
            mean = backend.asarray(config.mean, dtype=xp.float64, device=self.device)
            problem = Problem(
                backend, self.X, self.weights, mean, config.exponent, 0.0,
                config.working_memory or backend.default_working_memory(), config.deterministic,
            )  # fmt: skip
            if backend.keeps_working_copy and not maps_a_file(self.X):
                blocks = problem.row_blocks(int(self.X.shape[1]))
                working = list(backend.map_chunks(lambda a, b: problem.rows(a, b), blocks))
                problem = dataclasses.replace(problem, X_working=xp.concat(working, axis=0))
            self._problem, self._nodes, self._config = problem, self._parts(problem), config
        assert self._problem is not None
        return self._problem

    def nodes(self, config: Config) -> list[tuple[int, int, Problem]]:
        self.configured(config)
        return self._nodes

    def centers(self, config: Config, centers: Any) -> Centers:
        """Host centres (X's units and dtype) as the shard's :class:`Centers`."""
        problem = self.configured(config)
        caller = self.backend.asarray(centers, dtype=self.X.dtype, device=self.device)
        return centers_for(problem, caller)

    def labels_for(self, config: Config, ref: LabelRef | None) -> Array | None:
        """The labels ``ref`` names: held, or computed again from their centres."""
        if ref is None:
            return None
        if ref.token == self.token:
            return self.labels
        if ref.token in self.kept:
            return self.kept[ref.token]
        return self.assign(config, self.centers(config, ref.centers))

    def assign(self, config: Config, centers: Centers) -> Array:
        """The exact labels of the shard's rows for ``centers``."""
        xp, problem = self.backend.xp, self.configured(config)
        labels = xp.empty(problem.n_samples, dtype=xp.int32, device=self.device)
        assign(problem, centers, labels, statistics=False)
        return labels

    def host(self, x: Array | None) -> Any:
        return None if x is None else self.backend.to_numpy(x)

    def show(self, labels: Array, display: Any) -> np.ndarray | None:
        """The labels of the shown rows: ``display`` is None (none), ``...`` (all) or
        local row indices (host)."""
        if display is None:
            return None
        if display is Ellipsis:
            return np.array(self.host(labels), copy=True)
        at = self.backend.asarray(np.asarray(display), device=self.device)
        return self.host(self.backend.xp.take(labels, at))


def _restore(
    backend: Backend,
    X: Array,
    weights: Array | None,
    start: int,
    token: int | None,
    labels: Array | None,
    kept: dict[int, Array],
) -> Shard:
    shard = Shard(backend, X, weights, start)
    shard.token, shard.labels, shard.kept = token, labels, dict(kept)
    return shard


def make_shard(
    backend: Backend | str,
    start: int,
    dtype: Any,
    pieces: Sequence[Any],
    weights: Sequence[Any] | None = None,
    weight: float | None = None,
) -> Shard:
    """A shard from consecutive pieces of X (and of its weights, or one ``weight`` for
    every row), made arrays of ``backend`` (or the backend of that name) and ``dtype``
    (a NumPy dtype)."""
    if isinstance(backend, str):
        from .backends import get_backend

        backend = get_backend(backend)
    xp = backend.xp
    target = xp.float32 if np.dtype(dtype) == np.float32 else xp.float64
    X = _joined(backend, pieces, target)
    w = None
    if weights is not None:
        w = _joined(backend, weights, xp.float64)
    elif weight is not None:
        w = xp.full(int(X.shape[0]), weight, dtype=xp.float64, device=backend.device(X))
    return Shard(backend, X, w, start)


def _joined(backend: Backend, pieces: Sequence[Any], dtype: Any) -> Array:
    """``pieces`` (arrays of any library) as one array of ``backend``."""
    xp = backend.xp
    parts = []
    for piece in pieces:
        if not backend.owns(piece):
            owner = _owner(piece)
            piece = backend.asarray(owner.to_numpy(piece) if owner is not None else piece)
        parts.append(xp.astype(piece, dtype, copy=False))
    # one piece is kept as it is (a block already in memory, or a memory-mapped file)
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)


def _owner(x: Any) -> Backend | None:
    from .backends import backend_for_array

    return backend_for_array(x)


# -- what runs on a shard ----------------------------------------------------------------
@dataclass(frozen=True)
class Scan:
    """A shard's first look at its rows: their count, whether all are finite, the
    largest magnitude, the column sums of its nodes (float64), and of its weights
    whether all are finite, any negative, any positive (None: no weights)."""

    rows: int
    finite: bool
    top: float
    sums: list[tuple[int, int, np.ndarray]]
    weights: tuple[bool, bool, bool] | None


def scan(shard: Shard, working_memory: int | None, with_sums: bool) -> Scan:
    backend, xp, X = shard.backend, shard.backend.xp, shard.X
    nodes = shard.plain(working_memory)
    from ._validation import _all_finite

    finite = _all_finite(xp, X)
    top = _largest(backend, lambda a, b: xp.max(xp.abs(X[a:b, ...])), _blocks(shard, nodes))
    sums = _node_sums(shard, nodes, lambda x: _scaled64(xp, x, 0)) if finite and with_sums else []
    weights = None
    if shard.weights is not None:
        w = shard.weights
        checks = backend.to_numpy(
            xp.stack(
                [xp.astype(xp.all(xp.isfinite(w)), xp.float64),
                 xp.astype(xp.any(w < 0), xp.float64),
                 xp.astype(xp.any(w > 0), xp.float64)]
            )
        )  # fmt: skip
        weights = (bool(checks[0]), bool(checks[1]), bool(checks[2]))
    return Scan(shard.stop - shard.start, finite, top, sums, weights)


def _blocks(shard: Shard, nodes: list[tuple[int, int, Problem]]) -> list[tuple[int, int]]:
    d = int(shard.X.shape[1])
    return [(a - shard.start + i, a - shard.start + j) for a, _, p in nodes
            for i, j in p.row_blocks(d)]  # fmt: skip


def _node_sums(
    shard: Shard,
    nodes: list[tuple[int, int, Problem]],
    terms: Callable[[Array], Array | Iterator[Array]],
) -> list[tuple[int, int, np.ndarray]]:
    """Per node, the column sums of ``terms`` of its rows, as ``Problem.reduce`` adds
    them (over the backend's fixed blocks, then the tree)."""
    d = int(shard.X.shape[1])
    out = []
    for a, b, node in nodes:
        rows = node.X

        def of(i: int, j: int, rows: Array = rows) -> Array | Iterator[Array]:
            return terms(rows[i:j, ...])

        out.append((a, b, shard.backend.to_numpy(node.reduce(of, node.row_blocks(d)))))
    return out


def rescaled_sums(
    shard: Shard, working_memory: int | None, shift: int
) -> list[tuple[int, int, np.ndarray]]:
    xp = shard.backend.xp
    return _node_sums(shard, shard.plain(working_memory), lambda x: _scaled64(xp, x, -shift))


def spread_and_moments(
    shard: Shard, working_memory: int | None, mean: np.ndarray, top: int, exponent: int | None
) -> tuple[float, list[tuple[int, int, np.ndarray]]]:
    """The largest ``|x − mean|`` (from values scaled by ``2**-top``) and, unless
    ``exponent`` is None, the node sums of the variance's terms for that exponent."""
    backend, xp, X = shard.backend, shard.backend.xp, shard.X
    nodes = shard.plain(working_memory)
    m = backend.asarray(mean, dtype=xp.float64, device=shard.device)
    spread = _largest(
        backend,
        lambda a, b: xp.max(xp.abs(centred64(xp, X[a:b, ...], (m, -top)))),
        _blocks(shard, nodes),
    )
    if exponent is None:
        return spread, []
    return spread, _node_sums(shard, nodes, lambda x: _moments(backend, x, (m, exponent)))


def _host_statistics(shard: Shard, stats: Statistics) -> Statistics:
    host = shard.host
    return Statistics(
        host(stats.sums), host(stats.weights), host(stats.changed), host(stats.inertia)
    )


def lloyd_pass(
    shard: Shard,
    config: Config,
    centers: Any,
    token: int,
    previous: LabelRef | None,
    with_inertia: bool,
    display: Any = None,
) -> tuple[list[tuple[int, int, Statistics]], np.ndarray | None]:
    """The in-process pass on each node: its labels (kept as ``token``) and statistics;
    and the labels of the shown rows."""
    xp = shard.backend.xp
    current = shard.centers(config, centers)
    before = shard.labels_for(config, previous)
    labels = xp.empty(shard.stop - shard.start, dtype=xp.int32, device=shard.device)
    parts = []
    for a, b, node in shard.nodes(config):
        i, j = a - shard.start, b - shard.start
        stats = assign(
            node, current, labels[i:j],
            previous=None if before is None else before[i:j], with_inertia=with_inertia,
        )  # fmt: skip
        assert stats is not None
        parts.append((a, b, _host_statistics(shard, stats)))
    shard.labels, shard.token = labels, token
    return parts, shard.show(labels, display)


def farthest(shard: Shard, config: Config, centers: Any, labels: LabelRef, n: int) -> Farthest:
    """The shard's ``n`` rows farthest from their centres (host arrays)."""
    problem = shard.configured(config)
    own = shard.labels_for(config, labels)
    found = farthest_rows(problem, shard.centers(config, centers), own, n)
    host = shard.host
    return Farthest(
        host(found.distances), host(found.rows), host(found.weights), host(found.labels)
    )


def finish(
    shard: Shard,
    config: Config,
    centers: Any,
    labels: LabelRef,
    token: int,
    again: bool,
    keep: Sequence[int],
    display: Any = None,
) -> tuple[list[tuple[int, int, np.ndarray]], np.ndarray | None, np.ndarray]:
    """A run's final labels (those of ``labels``, or computed ``again``), kept as
    ``token`` (with ``keep``; other kept labels are dropped): the node sums of their
    inertia (working units), the shown labels, the clusters used."""
    current = shard.centers(config, centers)
    own = None if again else shard.labels_for(config, labels)
    if own is None:
        own = shard.assign(config, current)
    shard.kept = {t: v for t, v in shard.kept.items() if t in keep}
    shard.kept[token] = own
    parts = []
    for a, b, node in shard.nodes(config):
        i, j = a - shard.start, b - shard.start
        parts.append((a, b, shard.host(working_inertia(node, current.caller, own[i:j]))))
    distinct = shard.host(shard.backend.xp.unique_values(own))
    return parts, shard.show(own, display), distinct


def final_labels(shard: Shard, config: Config, labels: LabelRef) -> Array:
    """The labels ``labels`` names, as an array of their own."""
    own = shard.labels_for(config, labels)
    assert own is not None
    return own


def pairs(
    shard: Shard, config: Config, a: LabelRef, b: LabelRef, n_clusters: int
) -> tuple[np.ndarray, np.ndarray]:
    """The distinct label pairs of two runs on the shard, and the first run's labels."""
    xp = shard.backend.xp
    first, second = shard.labels_for(config, a), shard.labels_for(config, b)
    assert first is not None and second is not None
    codes = xp.astype(first, xp.int64) * n_clusters + xp.astype(second, xp.int64)
    return shard.host(xp.unique_values(codes)), shard.host(xp.unique_values(first))


def rows_at(shard: Shard, local: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows (and weights) at local indices, host arrays."""
    xp = shard.backend.xp
    at = shard.backend.asarray(np.asarray(local, dtype=np.int64), device=shard.device)
    w = None if shard.weights is None else shard.host(xp.take(shard.weights, at))
    return shard.host(xp.take(shard.X, at, axis=0)), w


def weights_of(shard: Shard) -> np.ndarray | None:
    return shard.host(shard.weights)


# -- the client's side --------------------------------------------------------------------
class Shards(Protocol):
    """Shards in row order, and a way to run a function of this module on each."""

    @property
    def ranges(self) -> list[tuple[int, int]]:
        """The shards' row ranges, in order."""
        ...

    def map(
        self,
        function: Callable[..., Any],
        *args: Any,
        each: Sequence[tuple[Any, ...]] | None = None,
    ) -> list[Any]:
        """``function(shard, *args, *each[i])`` for every shard ``i``, results in order."""
        ...

    def place(self, values: Sequence[Any]) -> list[Any]:
        """One value per shard, kept where the shard is, for later ``each`` arguments."""
        ...


class LocalShards:
    """Shards held in this process; functions run on them one after another (each
    runs its chunks on the backend's threads)."""

    def __init__(self, shards: Sequence[Shard]) -> None:
        self.shards = list(shards)

    @property
    def ranges(self) -> list[tuple[int, int]]:
        return [(s.start, s.stop) for s in self.shards]

    def map(
        self,
        function: Callable[..., Any],
        *args: Any,
        each: Sequence[tuple[Any, ...]] | None = None,
    ) -> list[Any]:
        return [
            function(shard, *args, *(() if each is None else each[i]))
            for i, shard in enumerate(self.shards)
        ]

    def place(self, values: Sequence[Any]) -> list[Any]:
        return list(values)


@dataclass(frozen=True)
class ClientProblem(Problem):
    """The problem as the client of shards sees it: the origin, scale and variance of
    all the rows, their shape and dtype. Its ``X`` holds no rows: every data-sized step
    runs on the shards."""

    n_rows: int = 0

    @property
    def n_samples(self) -> int:
        return self.n_rows


def _folded(parts: Sequence[list[tuple[int, int, Any]]], block: int | None) -> Any:
    """Every shard's node values added in row order as :func:`fold` adds them."""
    return fold(sorted((p for part in parts for p in part), key=lambda p: p[0]), block)


def sharded_problem(
    shards: Shards,
    client: Backend,
    *,
    n_features: int,
    dtype: Any,
    block: int | None,
    working_memory: int | None = None,
    deterministic: bool = False,
    center: np.ndarray | None = None,
) -> tuple[ClientProblem, Config]:
    """What ``make_problem`` finds for X, from its shards, in its order of steps: the
    sums that reach a result are node sums folded here, so they are the same bits.

    Raises
    ------
    ValueError
        For NaN or infinite values in X, invalid weights, or a spread beyond float64.
    """
    xp = client.xp
    scans: list[Scan] = shards.map(scan, working_memory, center is None)
    if not all(s.finite for s in scans):
        raise ValueError("Input X contains NaN or infinity")
    marks = [s.weights for s in scans if s.weights is not None]
    if marks:
        if not all(m[0] for m in marks):
            raise ValueError("sample_weight contains NaN or infinity")
        if any(m[1] for m in marks):
            raise ValueError("sample_weight must be non-negative; negative weights were given")
        if not any(m[2] for m in marks):
            raise ValueError("sample_weight sums to zero: at least one weight must be positive")
    n = sum(s.rows for s in scans)
    largest = max(s.top for s in scans)
    if center is None:
        center = _folded([s.sums for s in scans], block) / n
        if not bool(np.all(np.isfinite(center))):  # the float64 sum overflowed: scale
            shift = math.frexp(largest)[1]
            scaled = _folded(shards.map(rescaled_sums, working_memory, shift), block)
            center = rescale(scaled / n, shift)
    mean = xp.astype(xp.astype(xp.asarray(center), dtype), xp.float64)
    top = math.frexp(largest)[1]
    found = shards.map(spread_and_moments, working_memory, mean, top, 0)
    spread = max(f[0] for f in found)
    exponent = _scale_exponent(math.frexp(spread)[1] + top if spread else None, xp.finfo(dtype))
    if exponent == 0:
        sums = _folded([f[1] for f in found], block)
    else:
        again = shards.map(spread_and_moments, working_memory, mean, top, exponent)
        sums = _folded([f[1] for f in again], block)
    d = n_features
    problem = ClientProblem(
        client, xp.empty((0, d), dtype=dtype), None, mean, exponent, _variance(sums, n, d),
        working_memory or client.default_working_memory(), deterministic, n_rows=n,
    )  # fmt: skip
    problem.inertia_from_working(problem.variance * n * d)  # X's own spread must be representable
    return problem, Config(np.asarray(mean), exponent, working_memory, deterministic)


def fetch_rows(shards: Shards, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows of X (and their weights) at global ``indices``, in that order."""
    indices = np.asarray(indices, dtype=np.int64)
    each, where = [], []
    for a, b in shards.ranges:
        at = np.flatnonzero((indices >= a) & (indices < b))
        each.append((indices[at] - a,))
        where.append(at)
    found = shards.map(rows_at, each=each)
    rows = np.concatenate([f[0] for f in found])
    order = np.argsort(np.concatenate(where), kind="stable")
    weights = None if found[0][1] is None else np.concatenate([f[1] for f in found])[order]
    return rows[order], weights


class ShardedRows:
    """The :class:`~kmeans_gpu._lloyd.Rows` of a run on shards: every pass is one
    request to each shard; the client folds what comes back.

    ``display``: None (frames show nothing), ``...`` (every row) or host row indices.
    """

    def __init__(
        self, shards: Shards, problem: ClientProblem, config: Config, block: int | None,
        display: Any = None,
    ) -> None:  # fmt: skip
        self.shards, self.problem, self.config, self.block = shards, problem, config, block
        self.display = display
        self._each: list[tuple[Any, ...]] | None = None
        self._where: list[np.ndarray] = []
        #: the final labels still referred to (their tokens): the shards keep these
        self._live: dict[int, Any] = {}
        if display is Ellipsis:
            self._each = [(Ellipsis,) for _ in shards.ranges]
        elif display is not None:
            indices = np.asarray(display, dtype=np.int64)
            local = []
            for a, b in shards.ranges:
                at = np.flatnonzero((indices >= a) & (indices < b))
                self._where.append(at)
                local.append(indices[at] - a)
            self._each = [(v,) for v in shards.place(local)]

    def showing(self, display: Any) -> ShardedRows:
        return ShardedRows(self.shards, self.problem, self.config, self.block, display)

    def _shown(self, parts: Sequence[np.ndarray | None]) -> np.ndarray | None:
        if self.display is None:
            return None
        if self.display is Ellipsis:
            return np.concatenate([np.asarray(p) for p in parts]).astype(np.int32, copy=False)
        shown = np.empty(len(self.display), dtype=np.int32)
        for at, part in zip(self._where, parts, strict=True):
            shown[at] = np.asarray(part)
        return shown

    def new_labels(self) -> Labels:
        return Labels()

    def run(
        self, centers: Centers, labels: Labels, *, previous: Labels | None, with_inertia: bool
    ) -> Statistics:
        before = None if previous is None else previous.ref
        found = self.shards.map(
            lloyd_pass, self.config, centers.caller, labels.token, before, with_inertia,
            each=self._each,
        )  # fmt: skip
        labels.centers = centers.caller
        labels.shown = self._shown([f[1] for f in found])
        stats: Statistics = _folded([f[0] for f in found], self.block)
        return stats

    def accepts(self, feedback: float) -> bool:
        return True

    def farthest(self, centers: Centers, labels: Labels, n: int) -> Farthest:
        found = self.shards.map(farthest, self.config, centers.caller, labels.ref, n)
        distances = np.concatenate([f.distances for f in found])
        pick = self.problem.backend.farthest(distances, min(n, int(distances.shape[0])))
        weights = None
        if found[0].weights is not None:
            weights = np.concatenate([f.weights for f in found])[pick]
        return Farthest(
            distances[pick],
            np.concatenate([f.rows for f in found])[pick],
            weights,
            np.concatenate([f.labels for f in found])[pick],
        )

    def finish(self, centers: Centers, labels: Labels, *, again: bool) -> tuple[Labels, float]:
        final = Labels()
        self._live = {t: ref for t, ref in self._live.items() if ref() is not None}
        keep = list(self._live)
        found = self.shards.map(
            finish, self.config, centers.caller, labels.ref, final.token, again, keep,
            each=self._each,
        )  # fmt: skip
        final.centers = centers.caller
        final.shown = self._shown([f[1] for f in found])
        final.distinct = np.unique(np.concatenate([f[2] for f in found]))
        self._live[final.token] = weakref.ref(final)
        total = _folded([f[0] for f in found], self.block)
        return final, self.problem.inertia_from_working(float(total))

    def same_clustering(self, a: Labels, b: Labels, n_clusters: int) -> bool:
        found = self.shards.map(pairs, self.config, a.ref, b.ref, n_clusters)
        codes = np.unique(np.concatenate([f[0] for f in found]))
        return len(codes) == len(np.unique(np.concatenate([f[1] for f in found])))
