"""k-means‖ (Bahmani et al., "Scalable K-Means++", 2012), written once over shards.

The scalable initialisation: instead of k passes over the data (greedy k-means++), a
few rounds each pick about ``ℓ = oversampling_factor · k`` candidate rows at once.

1. The first candidate is one random row (probability proportional to its weight).
2. Each round is one pass: every row's squared distance ``D²`` to the nearest candidate
   is updated with the candidates the previous round added (only those), the cost
   ``φ = Σ w·D²`` is summed, and every row is picked on its own with probability
   ``min(1, ℓ·w·D²/φ)``.
3. One more pass assigns every row to its nearest candidate: the candidates' weights.
4. Weighted greedy k-means++ then weighted Lloyd on the candidates (kmeans-gpu itself,
   in this process) give the k initial centres.

That is ``n_rounds + 1`` passes over X, and a draw of the first row that reads only the
weights. The random draws are a function of a key (drawn from the caller's
``random_state``), the round and the row's index alone, so the same rows are picked
however the rows are divided: in-process (one shard of all the rows) and on Dask (one
shard per worker) give the same candidates, the same weights and the same centres.
Distances are exact (each row's nearest candidate as the Lloyd pass finds it, then its
float64 distance) and the costs are folded over the fixed blocks of rows, as every sum
of a fit. A shard returns a bounded number of its most likely rows with its cost; the
client, once it knows ``φ``, keeps those under the threshold (and asks a shard again in
the rare case it might have more).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from ._assign import assign
from ._problem import Problem
from ._sharded import Config, LocalShards, Shard, Shards, _folded
from .backends import Array, Backend

DEFAULT_ROUNDS = 5
DEFAULT_OVERSAMPLING = 2.0
_MASK = (1 << 64) - 1


def _mix_int(z: int) -> int:
    """splitmix64's finaliser on a Python int."""
    z &= _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def uniforms(key: int, stream: int, start: int, stop: int) -> np.ndarray:
    """Uniform draws in (0, 1), float64, for the rows ``start:stop`` of ``stream``: a
    function of ``key``, ``stream`` and the row index alone (splitmix64)."""
    offset = np.uint64(_mix_int(key * 0x9E3779B97F4A7C15 + stream))
    z = np.arange(start, stop, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + offset
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


# -- on a shard ---------------------------------------------------------------------------
def first_row(shard: Shard, key: int) -> tuple[float, int, np.ndarray]:
    """The shard's entry in the draw of the first candidate (exponential race: the row
    of the smallest ``−log(u)/w``): that value, the row's index and the row."""
    u = uniforms(key, 0, shard.start, shard.stop)
    w = np.ones_like(u) if shard.weights is None else np.asarray(shard.host(shard.weights))
    race = np.full(u.shape, np.inf)
    np.divide(-np.log(u), w, out=race, where=w > 0)
    at = int(np.argmin(race))
    row = shard.host(shard.X[at : at + 1, ...])
    return float(race[at]), shard.start + at, np.asarray(row)


def _draws(shard: Shard, key: int, stream: int) -> Array:
    u = uniforms(key, stream, shard.start, shard.stop)
    return shard.backend.asarray(u, device=shard.device)


def _keys(shard: Shard, key: int, stream: int) -> Array:
    """Per row ``u / (w·D²)`` (+inf where ``w·D²`` is 0): a row is picked when this is
    below ``ℓ/φ``."""
    xp = shard.backend.xp
    d2 = shard.state["closest"]
    wd = d2 if shard.weights is None else d2 * shard.weights
    positive = wd > 0
    safe = xp.where(positive, wd, xp.ones_like(wd))
    return xp.where(positive, _draws(shard, key, stream) / safe, xp.full_like(wd, xp.inf))


def _picked(shard: Shard, keys: Array, order: Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xp = shard.backend.xp
    host = shard.host
    return (
        np.asarray(host(xp.take(keys, order))),
        np.asarray(host(order)).astype(np.int64) + shard.start,
        np.asarray(host(xp.take(shard.X, order, axis=0))),
    )


def sample_round(
    shard: Shard,
    config: Config,
    key: int,
    round_no: int,
    cap: int,
    added: Any,
    fresh: bool,
) -> Any:
    """One round on the shard: ``D²`` updated with the candidates ``added`` (all of them
    so far when ``fresh``), the node sums of ``w·D²``, and the ``cap`` rows of the
    smallest keys (keys, indices, rows). None when the shard lacks the previous round's
    distances (rebuilt): the client asks again with ``fresh``."""
    backend, xp = shard.backend, shard.backend.xp
    problem = shard.configured(config)
    if fresh:
        shard.state.clear()
        shard.state.update(round=round_no - 1, key=key)
    if shard.state.get("round") != round_no - 1 or shard.state.get("key") != key:
        return None
    n = shard.stop - shard.start
    before = shard.state.get("closest")
    if before is None:
        before = xp.full(n, xp.inf, dtype=xp.float64, device=shard.device)
    current = shard.centers(config, added)
    labels = xp.empty(n, dtype=xp.int32, device=shard.device)
    assign(problem, current, labels, statistics=False)

    def update(a: int, b: int) -> Array:
        d2 = backend.sq_distances(
            shard.X[a:b, ...], current.caller, labels[a:b], problem.scale_exponent
        )
        return xp.minimum(before[a:b], d2)

    closest = xp.concat(list(backend.map_chunks(update, problem.chunks(current.n_clusters))))
    shard.state.update(closest=closest, round=round_no, key=key)

    def cost(node: Problem, a: int) -> Array:
        def terms(i: int, j: int) -> Array:
            d2 = closest[a + i : a + j]
            w = None if node.weights is None else node.weights[i:j]
            return (d2 if w is None else d2 * w)[:, None]

        return node.reduce(terms, node.row_blocks(1))

    costs = [(a, b, shard.host(cost(node, a - shard.start))) for a, b, node in shard.nodes(config)]
    keys = _keys(shard, key, round_no)
    order = backend.farthest(-keys, min(cap, n))
    return costs, _picked(shard, keys, order)


def sample_more(
    shard: Shard, key: int, round_no: int, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Every row of the shard whose key is below ``threshold`` in ``round_no`` (None
    when the shard's distances are not that round's)."""
    xp = shard.backend.xp
    if shard.state.get("round") != round_no or shard.state.get("key") != key:
        return None
    keys = _keys(shard, key, round_no)
    at = xp.astype(xp.nonzero(keys < threshold)[0], xp.int64)
    return _picked(shard, keys, at)


def any_rows(
    shard: Shard, key: int, count: int, exclude: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``count`` rows of smallest draws that are not at ``exclude`` (global)."""
    u = uniforms(key, 1 << 20, shard.start, shard.stop)
    local = exclude[(exclude >= shard.start) & (exclude < shard.stop)] - shard.start
    u[local] = np.inf
    keys = shard.backend.asarray(u, device=shard.device)
    order = shard.backend.farthest(-keys, min(count, int(u.shape[0])))
    return _picked(shard, keys, order)


def candidate_weights(
    shard: Shard, config: Config, candidates: Any
) -> list[tuple[int, int, np.ndarray]]:
    """The node sums of the weights of the rows nearest each candidate (the Lloyd
    pass's statistics); the round's distances are dropped."""
    xp = shard.backend.xp
    shard.state.clear()
    current = shard.centers(config, candidates)
    labels = xp.empty(shard.stop - shard.start, dtype=xp.int32, device=shard.device)
    parts = []
    for a, b, node in shard.nodes(config):
        stats = assign(node, current, labels[a - shard.start : b - shard.start])
        assert stats is not None
        parts.append((a, b, shard.host(stats.weights)))
    return parts


# -- the driver ---------------------------------------------------------------------------
def kmeans_parallel_shards(
    shards: Shards,
    problem: Problem,
    config: Config,
    block: int | None,
    n_clusters: int,
    random_state: np.random.RandomState,
    *,
    n_rounds: int = DEFAULT_ROUNDS,
    oversampling_factor: float = DEFAULT_OVERSAMPLING,
    recluster: Backend | None = None,
    device: Any = None,
) -> Any:
    """k-means‖ over ``shards`` (rows of ``problem``, set up as ``config``): the initial
    centres, of X's dtype, on ``recluster``, the backend (and ``device``) the candidates
    are clustered on (None: NumPy)."""
    key = int(random_state.randint(0, 2**31)) << 31 | int(random_state.randint(0, 2**31))
    ell = oversampling_factor * n_clusters
    cap = int(2 * ell) + 64
    entries = shards.map(first_row, key)
    _, _, row = min(entries, key=lambda e: (e[0], e[1]))
    candidates = [np.asarray(row)]
    added = candidates[0]
    for round_no in range(1, n_rounds + 1):
        found = shards.map(sample_round, config, key, round_no, cap, added, round_no == 1)
        if any(f is None for f in found):  # a shard lost its distances: start it afresh
            everything = np.concatenate(candidates)
            each = [((f is None, (everything, True)),) for f in found]
            again = shards.map(_gated, sample_round, config, key, round_no, cap, each=each)
            found = [a if f is None else f for f, a in zip(found, again, strict=True)]
        phi = float(_folded([f[0] for f in found], block)[0])
        if phi <= 0:  # every row is a candidate, or sits on one
            break
        threshold = ell / phi
        picked = []
        for i, f in enumerate(found):
            keys, index, rows = f[1]
            if len(keys) == cap and keys[-1] < threshold:  # the shard may have more
                more = _only(shards, i, sample_more, key, round_no, threshold)
                if more is not None:
                    keys, index, rows = more
            take = np.flatnonzero(keys < threshold)
            take = take[np.argsort(index[take], kind="stable")]
            picked.append(rows[take])
        added = np.concatenate(picked).astype(candidates[0].dtype, copy=False)
        if not len(added):
            continue
        candidates.append(added)
    chosen = np.concatenate(candidates)
    if len(chosen) < n_clusters:  # few rows: add random others
        chosen = _filled(shards, key, chosen, n_clusters, problem.n_samples)
    weights = _folded(shards.map(candidate_weights, config, chosen), block)
    return _recluster(chosen, weights, n_clusters, random_state, recluster, device)


def _only(shards: Shards, i: int, function: Any, *args: Any) -> Any:
    """``function`` on shard ``i`` alone (the others run nothing)."""
    each = [((j == i, ()),) for j in range(len(shards.ranges))]
    return shards.map(_gated, function, *args, each=each)[i]


def _gated(shard: Shard, function: Any, *args: Any) -> Any:
    """``function(shard, *common, *extra)`` where the last argument, ``(run, extra)``,
    says to run it; else None."""
    run, extra = args[-1]
    return function(shard, *args[:-1], *extra) if run else None


def _filled(shards: Shards, key: int, chosen: np.ndarray, n_clusters: int, n: int) -> np.ndarray:
    """``chosen`` with rows drawn at random among the others, to ``n_clusters`` rows."""
    need = n_clusters - len(chosen)
    found = shards.map(any_rows, key, need, np.empty(0, dtype=np.int64))
    keys = np.concatenate([f[0] for f in found])
    index = np.concatenate([f[1] for f in found])
    rows = np.concatenate([f[2] for f in found])
    order = np.lexsort((index, keys))
    return np.concatenate([chosen, rows[order[: max(need, 0)]]])


def _recluster(
    candidates: np.ndarray,
    weights: Any,
    n_clusters: int,
    random_state: np.random.RandomState,
    backend: Backend | None,
    device: Any = None,
) -> Any:
    """Weighted greedy k-means++ then weighted Lloyd on the candidates, on ``backend``
    (None: NumPy) and ``device``."""
    from sklearn.exceptions import ConvergenceWarning

    from ._api import fit
    from .backends import get_backend

    where = get_backend("numpy") if backend is None else backend
    rows = where.asarray(candidates, device=device)
    w = where.asarray(np.asarray(weights, dtype=np.float64), device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted = fit(
            rows, n_clusters, sample_weight=w, init="k-means++", n_init=1,
            random_state=random_state, backend=where,
        )  # fmt: skip
    return fitted.centers


def kmeans_parallel_problem(
    problem: Problem,
    n_clusters: int,
    random_state: np.random.RandomState,
    *,
    n_rounds: int = DEFAULT_ROUNDS,
    oversampling_factor: float = DEFAULT_OVERSAMPLING,
) -> Array:
    """k-means‖ on an in-process problem: the centres on its backend (X's dtype)."""
    config = Config(problem.backend.to_numpy(problem.mean), problem.scale_exponent,
                    problem.workspace, problem.deterministic)  # fmt: skip
    shard = Shard.wrapping(problem, config)
    return kmeans_parallel_shards(
        LocalShards([shard]), problem, config, problem.backend.sum_block_rows, n_clusters,
        random_state, n_rounds=n_rounds, oversampling_factor=oversampling_factor,
        recluster=problem.backend, device=problem.device,
    )  # fmt: skip


def check_rounds(n_rounds: Any, oversampling_factor: Any) -> tuple[int, float]:
    """Validate k-means‖'s parameters."""
    from ._validation import check_positive_int

    rounds = check_positive_int(n_rounds, "n_rounds")
    if isinstance(oversampling_factor, bool) or not isinstance(oversampling_factor, int | float):
        raise TypeError(f"oversampling_factor must be a number, got {oversampling_factor!r}")
    if not (math.isfinite(oversampling_factor) and oversampling_factor > 0):
        raise ValueError(f"oversampling_factor must be > 0, got {oversampling_factor}")
    return rounds, float(oversampling_factor)


def kmeans_parallel(
    X: Any,
    n_clusters: int,
    *,
    sample_weight: Any = None,
    random_state: Any = None,
    n_rounds: int = DEFAULT_ROUNDS,
    oversampling_factor: float = DEFAULT_OVERSAMPLING,
    backend: str | Backend = "auto",
) -> Array:
    """k-means‖ seeding (Bahmani et al., 2012): the scalable alternative to greedy
    k-means++, in this process or on Dask.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
        NumPy, CuPy or array API data, or a ``dask.array.Array`` (then on the default
        ``distributed`` client's workers, or Dask's local scheduler).
    n_clusters : int
    sample_weight : array of shape (n_samples,), default=None
        Rows are drawn with probability proportional to ``weight · D(x)²``.
    random_state : int, RandomState, Generator or None, default=None
        The same seed picks the same rows in this process and on Dask.
    n_rounds : int, default=5
        Sampling rounds, one pass over X each; one more pass weighs the candidates.
    oversampling_factor : float, default=2.0
        Candidates drawn per round, in expectation, per cluster (``ℓ = factor · k``).
    backend : {"auto", "numpy", "cupy"} or Backend, default="auto"

    Returns
    -------
    centers : array of shape (n_clusters, n_features)
        Weighted greedy k-means++ then weighted Lloyd on the candidates: not rows of X.
        Of X's array type (a host NumPy array for dask input).
    """
    from ._sharded import is_dask_array
    from ._validation import check_n_clusters, check_random_state

    rounds, factor = check_rounds(n_rounds, oversampling_factor)
    rng = check_random_state(random_state)
    if is_dask_array(X):
        from ._dask import dask_setup

        job = dask_setup(
            X, n_clusters, sample_weight=sample_weight, init="k-means||", runs=1, max_iter=1,
            tol=0.0, random_state=rng, backend=backend, empty_cluster="relocate",
            verbose=False, working_memory=None, deterministic=False,
        )  # fmt: skip
        assert job.data is not None
        return kmeans_parallel_shards(
            job.shards, job.problem, job.data.config, job.block, job.n_clusters, rng,
            n_rounds=rounds, oversampling_factor=factor,
        )  # fmt: skip
    from ._api import prepare
    from .backends import on_device_of

    with on_device_of(X):
        problem, placement, _ = prepare(X, sample_weight, backend)
        k = check_n_clusters(n_clusters, problem.n_samples)
        centers = kmeans_parallel_problem(
            problem, k, rng, n_rounds=rounds, oversampling_factor=factor
        )
    return placement.to_output(centers)
