"""precision="tf32"/"tf32x3"/"bf16": reduced-precision products, near ties re-checked.

Tensor cores are not available here, so a test backend emulates them exactly as they
compute: float32 inputs rounded to nearest-even to 11 (TF32) or 8 (bfloat16)
significant bits, products summed in float32 (split TF32 is a TF32 product of split
inputs, so it runs on the same emulation). The re-check logic itself is the
library's generic code, the same that runs on CuPy.
"""

from __future__ import annotations

import functools
from dataclasses import replace

import array_api_compat.numpy as compat_np
import numpy as np
import pytest

from kmeans_gpu import KMeans, kmeans
from kmeans_gpu._api import prepare
from kmeans_gpu._precision import (
    CENTER_PIECES,
    ROW_PIECES,
    assign_reduced,
    error_bound,
    near_ties,
    relative_product_error,
    split_tf32,
)
from kmeans_gpu._problem import Problem
from kmeans_gpu.backends import Backend, get_backend

from .checks import assert_same_up_to_order
from .fake_cupy import DROPPED_BITS, round_significand, truncate_significand


class EmulatedTensorCores(Backend):
    """The generic NumPy backend with TF32/bf16 products as tensor cores make them:
    inputs rounded to nearest, or (``truncate``) handed over as float32, whose low bits
    the tensor cores ignore."""

    reduced_products = frozenset({"tf32", "bf16"})

    def __init__(self, truncate: bool = False) -> None:
        super().__init__(compat_np, "emulated-tensor-cores")
        self.reduced_calls = 0
        self.convert = truncate_significand if truncate else round_significand

    def reduced_product(self, X, scaled, precision):
        self.reduced_calls += 1
        return self.convert(X, precision) @ self.convert(scaled, precision).T  # f32 sums


def exact_scores(X, C):
    return (C * C).sum(axis=1)[None, :] + X @ (-2.0 * C).T


def test_rounding_helper_rounds_to_nearest():
    x = np.array([1.0, 1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11, 1.0 + 2.0**-12], np.float32)
    assert round_significand(x, "tf32").tolist() == [1.0, 1.0, 1.0 + 2.0**-9, 1.0]
    y = np.array([1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8, -(1.0 + 2.0**-6)], np.float32)
    assert round_significand(y, "bf16").tolist() == [1.0, 1.0 + 2.0**-6, -(1.0 + 2.0**-6)]


def reduced_scores(X, C, precision, backend=None):
    """``‖c‖² − 2x·c`` from the emulated tensor cores, as ``assign_reduced`` makes them."""
    backend = backend or EmulatedTensorCores()
    scaled = -2.0 * C
    if precision == "tf32x3":
        X, scaled, precision = (
            backend.split_columns(X, ROW_PIECES),
            backend.split_columns(scaled, CENTER_PIECES),
            "tf32",
        )
    return (C * C).sum(axis=1)[None, :] + backend.reduced_product(X, scaled, precision)


def test_split_tf32_parts_are_tf32_numbers_rounded_to_nearest():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=200_000) * np.exp(rng.normal(scale=5, size=200_000))).astype(np.float32)
    ties = (1.0 + np.arange(1, 500) * 2.0**-11).astype(np.float32)  # halfway at 11 bits
    x = np.concatenate([x, ties, -ties, [0.0, 1.0, -3.0]]).astype(np.float32)
    high, low = split_tf32(x)
    assert high.dtype == low.dtype == np.float32
    np.testing.assert_array_equal(high, round_significand(x, "tf32"))  # nearest, ties even
    np.testing.assert_array_equal(low, round_significand(x - high, "tf32"))
    u = 2.0**-11
    rest = x.astype(np.float64) - high - low
    assert np.all(np.abs(rest) <= u * u * np.abs(x))
    blocks = split_columns_of(x.reshape(-1, 1), ROW_PIECES)
    np.testing.assert_array_equal(blocks, np.stack([high, high, low], axis=1))


def split_columns_of(x, pieces):
    return EmulatedTensorCores().split_columns(x, pieces)


def test_every_backend_splits_bitwise_alike(backend):
    """The split is plain float32 arithmetic rounded to nearest: the array API path
    (array_api_strict, on its devices) gives NumPy's bits."""

    x = np.random.default_rng(1).normal(scale=100, size=(300, 7)).astype(np.float32)
    want = split_columns_of(x, CENTER_PIECES)
    solver = get_backend(backend.asarray(x))
    got = backend.to_numpy(solver.split_columns(backend.asarray(x), CENTER_PIECES))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("precision", ["tf32", "tf32x3", "bf16"])
@pytest.mark.parametrize(("d", "scale"), [(2, 1.0), (64, 1e3), (300, 1e-3)])
def test_reduced_scores_stay_within_the_error_bound(precision, d, scale):
    rng = np.random.default_rng(d)
    X = (rng.normal(size=(2000, d)) * scale).astype(np.float32)
    C = (rng.normal(size=(50, d)) * scale).astype(np.float32)
    csq = (C * C).sum(axis=1)
    reduced = reduced_scores(X, C, precision)
    bound = error_bound(np.sqrt((X * X).sum(axis=1)), np.sqrt(csq.max()), d, precision)
    # the bound carries a safety factor of two; the errors must fit without it
    worst = np.abs(reduced - exact_scores(X, C)).max(axis=1)
    assert np.all(worst <= bound / 2)
    assert worst.max() > bound.max() / 2**12  # and it is not absurdly loose


def test_split_tf32_is_nearly_as_accurate_as_float32():
    """Its bound is the exact path's own rounding plus a little: about 30 times below
    TF32's at d = 128, and the scores it computes are as close to the float64 truth as
    the float32 scores are."""
    d = 128
    assert relative_product_error("tf32", d) > 25 * relative_product_error("tf32x3", d)
    assert relative_product_error("tf32x3", d) < 5 * relative_product_error("tf32x3", 1) * d
    rng = np.random.default_rng(3)
    X = rng.normal(size=(3000, d)).astype(np.float32)
    C = rng.normal(size=(64, d)).astype(np.float32)
    truth = (C.astype(np.float64) ** 2).sum(axis=1) - 2.0 * (
        X.astype(np.float64) @ C.T.astype(np.float64)
    )
    split_error = np.abs(reduced_scores(X, C, "tf32x3") - truth).max()
    float32_error = np.abs(exact_scores(X, C) - truth).max()
    tf32_error = np.abs(reduced_scores(X, C, "tf32") - truth).max()
    assert split_error < 4 * float32_error < tf32_error / 8


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_the_bound_holds_when_tensor_cores_truncate(precision):
    """The worst case of truncation: every input loses almost a whole unit in the last
    place, all in the same direction, so the product loses almost two. That is past the
    half-unit bound of rounding to nearest, and within the library's."""
    d = 128
    dropped = (1 << DROPPED_BITS[precision]) - 1  # 1.00…011…1: every dropped bit set
    x = np.full(d, np.uint32(0x3F800000 | dropped), np.uint32).view(np.float32)
    exact = float(np.dot(x.astype(np.float64), x.astype(np.float64)))
    truncated = truncate_significand(x, precision).astype(np.float64)
    error = abs(exact - float(np.dot(truncated, truncated))) / exact  # ‖x‖‖c‖ = x·x here
    half_unit = {"tf32": 2.0**-11, "bf16": 2.0**-8}[precision]
    assert error > 2 * half_unit + half_unit**2  # the old bound, without the float32 sums
    assert error <= relative_product_error(precision, d)


def test_split_tf32_bound_covers_a_truncated_low_part():
    """Triton's own split TF32 rounds the high part to nearest and hands the remainder to
    the tensor cores as float32 (truncated): the library's bound still holds."""
    rng = np.random.default_rng(12)
    d = 128
    for _ in range(20):
        x = (rng.uniform(1, 2, size=(64, d)) * rng.choice([-1, 1], size=(64, d))).astype(
            np.float32
        )
        c = np.abs(x[::-1]) * np.sign(x)  # products of one sign: errors add up
        high_x, high_c = split_tf32(x)[0], split_tf32(c)[0]
        low_x = truncate_significand(x - high_x, "tf32")
        low_c = truncate_significand(c - high_c, "tf32")
        got = (
            (high_x * high_c).astype(np.float64)
            + (high_x * low_c).astype(np.float64)
            + (low_x * high_c).astype(np.float64)
        ).sum(axis=1)  # the kept terms, exactly: the float32 sums are bounded apart
        exact = (x.astype(np.float64) * c.astype(np.float64)).sum(axis=1)
        norms = np.linalg.norm(x.astype(np.float64), axis=1) * np.linalg.norm(
            c.astype(np.float64), axis=1
        )
        u = 2.0**-11
        assert np.all(np.abs(got - exact) <= (5 * u**2 + 9 * u**3) * norms)


@pytest.mark.parametrize("truncate", [False, True], ids=["rounded", "truncated"])
@pytest.mark.parametrize("precision", ["tf32", "tf32x3", "bf16"])
def test_near_ties_are_rechecked_so_labels_are_exact(precision, truncate):
    rng = np.random.default_rng(1)
    X = rng.uniform(size=(20_000, 16)).astype(np.float32)  # crowded: many near ties
    C = rng.uniform(size=(300, 16)).astype(np.float32)
    if precision == "tf32x3":  # near ties in float32 itself: rows halfway between two
        middle = (C[0::2] + C[1::2]) / 2
        X[:150], X[150:300] = middle, middle + rng.normal(scale=1e-6, size=middle.shape)
    csq = (C * C).sum(axis=1)
    backend = EmulatedTensorCores(truncate)
    want = np.argmin(exact_scores(X, C), axis=1)
    raw = np.argmin(reduced_scores(X, C, precision, backend), axis=1)
    assert np.count_nonzero(raw != want) > 0  # without the re-check, labels would differ
    got = assign_reduced(backend, X, C, csq, precision)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.int32


def test_the_recheck_runs_in_pieces_no_larger_than_the_rows():
    """Many near ties, few features, many centres: the exact re-check's scores come in
    pieces of at most rows × d values, and the labels are still the exact ones."""
    rng = np.random.default_rng(6)
    X = rng.uniform(size=(3000, 2)).astype(np.float32)
    C = rng.uniform(size=(400, 2)).astype(np.float32)
    centers_sq = (C * C).sum(axis=1)
    calls = []

    class Counting(EmulatedTensorCores):
        def assign(self, X, centers, centers_sq, precision="exact"):
            if precision == "exact":
                calls.append(int(X.shape[0]))
            return super().assign(X, centers, centers_sq, precision)

    got = assign_reduced(Counting(), X, C, centers_sq, "bf16")
    np.testing.assert_array_equal(got, np.argmin(exact_scores(X, C), axis=1))
    piece = 3000 * 2 // 400
    assert len(calls) > 1 and max(calls) <= piece


def crowded(precision, weighted, n=3000, d=6, k=40, seed=8):
    """Rows with many near ties (and, for split TF32, rows tied in float32 itself,
    halfway between two close centres), centres, weights or None, previous labels."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(size=(n, d)).astype(np.float32)
    C = rng.uniform(size=(k, d)).astype(np.float32)
    w = rng.uniform(0.5, 2.0, size=n).astype(np.float32) if weighted else None
    if precision == "tf32x3":
        C[1::2] = C[0::2] + 0.01
        X[:k] = np.tile((C[0::2] + C[1::2]) / 2, (2, 1))
    return X, C, w, rng.integers(0, k, size=n).astype(np.int32)


def check_a_pass_settles_near_ties(backend, X, C, w, previous, precision, working_memory):
    """The pass at ``precision`` gives the exact pass's labels, and its statistics up
    to the order of the sums, against ``previous`` labels or none, and labels alone.
    Returns how many chunks the pass took."""
    from kmeans_gpu._assign import assign, settle_capacity

    xp = backend.xp
    problem, _, centers = prepare(X, w, backend, working_memory=working_memory, centers=C)
    n = problem.n_samples

    def run(precision, **options):
        labels = xp.empty(n, dtype=xp.int32, device=problem.device)
        stats = assign(replace(problem, precision=precision), centers, labels, **options)
        return backend.to_numpy(labels), stats

    for before in (None, previous):
        want, exact = run("exact", with_inertia=True, previous=before)
        got, stats = run(precision, with_inertia=True, previous=before)
        # and, where a capacity applies (split TF32), settled within one, unread
        count = int(stats.near_ties)
        capacity = settle_capacity(replace(problem, precision=precision), count)
        within = (
            []
            if capacity is None
            else [run(precision, with_inertia=True, previous=before, capacity=count)]
        )
        for labels, reduced in [(got, stats), *within]:
            np.testing.assert_array_equal(labels, want)
            for name in ("sums", "weights", "inertia"):
                assert_same_up_to_order(
                    backend.to_numpy(getattr(reduced, name)),
                    backend.to_numpy(getattr(exact, name)),
                )
            assert int(reduced.changed) == int(exact.changed)
            assert int(reduced.near_ties) == count
    labels, none = run(precision, statistics=False)
    np.testing.assert_array_equal(labels, want)
    assert none is None
    return len(problem.assignment_chunks(int(C.shape[0]), precision))


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("precision", ["tf32", "tf32x3", "bf16"])
def test_a_pass_settles_its_near_ties_after_its_chunks(precision, weighted):
    """The Lloyd pass at a reduced precision marks near ties per chunk and settles them
    after the last one, in pieces: the labels, sums, weights, changed count and
    inertia of the exact pass (the settled rows summed last), with many chunks and
    pieces of near ties."""
    X, C, w, previous = crowded(precision, weighted)
    settled = []

    class Recording(EmulatedTensorCores):
        def assign(self, X, centers, centers_sq, precision="exact"):
            settled.append(int(X.shape[0]))  # the deferred pass calls it to settle only
            return super().assign(X, centers, centers_sq, precision)

    backend = Recording()
    chunks = check_a_pass_settles_near_ties(backend, X, C, w, previous, precision, 4_000)
    assert chunks > 50
    assert settled.count(max(settled)) > 1 and sum(settled) > 100  # pieces of near ties


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_a_pass_settles_its_near_ties_within_a_capacity_without_reading_their_count(weighted):
    """Split TF32's near ties settled in a capacity set from the last pass's count (no
    read of the count, no scatter): the labels, statistics (up to order) and counts of
    the pass that reads it, for a capacity of exactly the count or more; below the
    count the pass says so (its near ties above the capacity)."""
    from kmeans_gpu._assign import assign, settle_capacity

    X, C, w, previous = crowded("tf32x3", weighted)
    problem, _, centers = prepare(X, w, EmulatedTensorCores(), working_memory=4_000, centers=C)
    problem = replace(problem, precision="tf32x3")

    def run(capacity):
        labels = np.empty(problem.n_samples, dtype=np.int32)
        stats = assign(
            problem, centers, labels, with_inertia=True, previous=previous, capacity=capacity
        )
        return labels, stats

    want, read = run(None)
    count = int(read.near_ties)
    assert count > 10 and settle_capacity(problem, count) >= count
    assert settle_capacity(replace(problem, precision="tf32"), count) is None  # steps
    for capacity in (count, count + 37, settle_capacity(problem, count)):
        got, stats = run(capacity)
        np.testing.assert_array_equal(got, want)
        for name in ("sums", "weights", "inertia"):
            assert_same_up_to_order(getattr(stats, name), getattr(read, name))
        assert int(stats.changed) == int(read.changed) and int(stats.near_ties) == count
    assert int(run(count - 1)[1].near_ties) == count  # the caller sees rows left out


def test_a_fit_runs_a_pass_again_when_its_near_ties_outgrow_the_capacity(monkeypatch):
    """When a pass has more near ties than its capacity (set from the last pass's
    count), the iteration runs the pass again, reading the count: the exact fit. Two
    rows lie exactly halfway between the two centres, which move onto their clusters'
    means and stay, so every pass has two near ties; the capacity is held at one."""
    from kmeans_gpu import _lloyd

    X = np.array(
        [[-2, 1], [-2, -1], [2, 1], [2, -1], [4, 2], [4, -2], [4, 1], [4, -1]], np.float32
    )
    C = np.array([[0, 0.5], [4, 0.5]], np.float32)  # the means: (0, 0) and (4, 0)
    backend = EmulatedTensorCores()
    exact = kmeans(X, 2, init=C, backend=backend, max_iter=5, tol=0.0)
    capacities = []
    real = _lloyd.assign

    def spy(*args, capacity=None, **kwargs):
        capacities.append(capacity)
        return real(*args, capacity=capacity, **kwargs)

    monkeypatch.setattr(_lloyd, "assign", spy)
    monkeypatch.setattr(_lloyd, "settle_capacity", lambda problem, near_ties: 1)
    got = kmeans(X, 2, init=C, backend=backend, max_iter=5, tol=0.0, precision="tf32x3")
    np.testing.assert_array_equal(got[1], exact[1])
    np.testing.assert_array_equal(got[1], [0, 0, 0, 0, 1, 1, 1, 1])  # ties: the first
    assert_same_up_to_order(got[0], exact[0])
    assert got[3] == exact[3] == 2
    assert capacities == [None, 1, None]  # the first pass, the second, run again


@pytest.mark.parametrize("precision", ["tf32", "tf32x3"])
def test_frames_at_reduced_precision_are_the_exact_frames(precision):
    """The frame stream takes each iteration's inertia in the same pass: the settled
    near ties' share is added after the chunks, so frames match the exact ones."""
    from kmeans_gpu import iter_frames

    X, C, _, _ = crowded(precision, False)
    backend = EmulatedTensorCores()

    def frames(precision):
        return list(
            iter_frames(
                X, C, max_iter=6, backend=backend, working_memory=20_000, precision=precision
            )
        )

    exact, got = frames("exact"), frames(precision)
    assert len(got) == len(exact) > 2
    for a, b in zip(got, exact, strict=True):
        np.testing.assert_array_equal(a.labels, b.labels)
        assert_same_up_to_order(a.centroids, b.centroids)
        assert a.inertia == pytest.approx(b.inertia, rel=1e-6)


@pytest.mark.parametrize("case", ["every row tied", "one centre", "zero weights"])
def test_a_pass_settles_the_edge_cases(case):
    """Every row a near tie (each chunk's own statistics empty), one centre (no second
    score: no near ties), and near ties of zero weight."""
    rng = np.random.default_rng(9)
    C = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]], np.float32)
    X = rng.normal(size=(500, 3)).astype(np.float32)
    w = None
    if case == "every row tied":
        X[:, 0] = 1.0  # each row halfway between the two centres
    elif case == "one centre":
        C = C[:1]
    else:
        w = rng.uniform(0, 1, size=500).astype(np.float32)
        w[::2] = 0.0
    previous = rng.integers(0, len(C), size=500).astype(np.int32)
    check_a_pass_settles_near_ties(EmulatedTensorCores(), X, C, w, previous, "tf32", 2_000)


def test_the_margins_use_the_row_norms_computed_once_per_fit(monkeypatch):
    """The near ties' margins need each row's norm: the pass takes them from the
    problem, which computes them once (k-means++ shares them), not every iteration."""
    from kmeans_gpu import _precision

    X = crowded("tf32", False)[0]
    given = []
    original = _precision.near_ties

    def spy(xp, X, centers_sq, best, second, precision, rows_sq=None):
        given.append(rows_sq is not None)
        return original(xp, X, centers_sq, best, second, precision, rows_sq)

    monkeypatch.setattr(_precision, "near_ties", spy)
    computed = []
    original_norms = Problem.squared_row_norms.func

    def counted(problem):
        computed.append(1)
        return original_norms(problem)

    monkeypatch.setattr(Problem, "squared_row_norms", functools.cached_property(counted))
    Problem.squared_row_norms.__set_name__(Problem, "squared_row_norms")
    backend = EmulatedTensorCores()
    exact = kmeans(X, 40, backend=backend, random_state=0, max_iter=5, working_memory=20_000)
    got = kmeans(
        X, 40, backend=backend, random_state=0, max_iter=5, working_memory=20_000, precision="tf32"
    )
    np.testing.assert_array_equal(got[1], exact[1])
    # the chunks' margins use them (the split TF32 re-check of a few gathered rows
    # computes its own); computed once per fit, shared with k-means++
    assert given.count(True) >= 5 and len(computed) == 2
    problem = prepare(X, None, backend)[0]
    np.testing.assert_array_equal(
        problem.squared_row_norms, (problem.rows(0, 3000) ** 2).sum(axis=1)
    )


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_tf32_and_bf16_near_ties_go_through_split_tf32_first(precision):
    """The rows TF32 (bfloat16) cannot settle are re-checked with split TF32, and only
    the few that cannot settle either with the exact product; the labels are exact."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(4000, 32)).astype(np.float32)
    C = X[rng.choice(4000, 200, replace=False)] + 0.01
    centers_sq = (C * C).sum(axis=1)
    steps = []

    class Recording(EmulatedTensorCores):
        def reduced_nearest_two(self, X, scaled, centers_sq, precision):
            steps.append((precision, int(X.shape[0])))
            return super().reduced_nearest_two(X, scaled, centers_sq, precision)

        def assign(self, X, centers, centers_sq, precision="exact"):
            if precision == "exact":
                steps.append(("exact", int(X.shape[0])))
            return super().assign(X, centers, centers_sq, precision)

    got = assign_reduced(Recording(), X, C, centers_sq, precision)
    np.testing.assert_array_equal(got, np.argmin(exact_scores(X, C), axis=1))
    names = [name for name, _ in steps]
    assert names[:2] == [precision, "tf32x3"] and set(names[2:]) <= {"exact"}
    rows = dict(steps[:2])
    assert rows[precision] == 4000 and 0 < rows["tf32x3"] < 4000
    assert sum(n for name, n in steps if name == "exact") < rows["tf32x3"] / 4


def test_split_tf32_sends_far_fewer_rows_back_than_tf32():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(20_000, 128)).astype(np.float32)
    C = X[rng.choice(20_000, 256, replace=False)]
    csq = (C * C).sum(axis=1)
    share = {}
    for precision in ("tf32", "tf32x3"):
        ordered = np.sort(reduced_scores(X, C, precision), axis=1)
        near, _ = near_ties(compat_np, X, csq, ordered[:, 0], ordered[:, 1], precision)
        share[precision] = np.mean(near)
    assert share["tf32"] > 0.01 and share["tf32x3"] < share["tf32"] / 20


def test_a_fit_at_reduced_precision_equals_the_exact_fit():
    rng = np.random.default_rng(2)
    X = np.vstack([rng.normal(loc=m, size=(3000, 8)) for m in range(6)]).astype(np.float32)
    backend = EmulatedTensorCores()
    exact = kmeans(X, 12, random_state=0, backend=backend, max_iter=50)
    for precision in ("tf32", "tf32x3", "bf16"):
        calls = backend.reduced_calls
        got = kmeans(X, 12, random_state=0, backend=backend, max_iter=50, precision=precision)
        assert backend.reduced_calls > calls  # the reduced path really ran
        np.testing.assert_array_equal(got[1], exact[1])
        # the near ties' rows are added to the sums after the others (the pass settles
        # them once, after its chunks): the same centres up to float32 rounding
        assert_same_up_to_order(got[0], exact[0])
        assert got[2] == pytest.approx(exact[2], rel=1e-6) and got[3] == exact[3]


def test_backends_without_tensor_cores_compute_exactly(backend):
    X = np.random.default_rng(3).normal(size=(500, 4)).astype(np.float32)
    a = KMeans(5, random_state=0).fit(backend.asarray(X))
    b = KMeans(5, random_state=0, precision="tf32").fit(backend.asarray(X))
    np.testing.assert_array_equal(backend.to_numpy(a.labels_), backend.to_numpy(b.labels_))
    if get_backend(a.cluster_centers_).computes_reduced("tf32"):  # the CuPy stand-in: it has them
        # near ties settled after the other rows: their rows summed last
        backend.assert_same_up_to_order(b.cluster_centers_, a.cluster_centers_)
    else:
        backend.assert_same_run(b.cluster_centers_, a.cluster_centers_)


def test_bad_precision_is_refused_clearly():
    X = np.zeros((10, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="precision must be one of"):
        kmeans(X, 2, precision="fp16")
    with pytest.raises(ValueError, match="precision='tf32' rounds float32 inputs"):
        kmeans(X.astype(np.float64), 2, precision="tf32")
    with pytest.raises(ValueError, match="precision must be one of"):
        KMeans(2, precision="half").fit(X)
    assert KMeans(2, precision="bf16").get_params()["precision"] == "bf16"


def cupy_with_tensor_cores(precision):
    """CuPy and its backend, or a skip: no CUDA device, or none that computes
    ``precision`` on tensor cores."""
    from kmeans_gpu.backends import _cupy_has_device

    if not _cupy_has_device():
        pytest.skip("CuPy with a CUDA device is not available")
    import cupy

    backend = get_backend("cupy")
    if not backend.computes_reduced(precision):
        pytest.skip(f"this GPU has no tensor cores for {precision}")
    return cupy, backend


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["tf32", "tf32x3", "bf16"])
def test_cupy_reduced_precision_gives_the_exact_labels(precision):
    cupy, backend = cupy_with_tensor_cores(precision)
    rng = np.random.default_rng(4)
    X = cupy.asarray(rng.uniform(size=(50_000, 32)).astype(np.float32))
    C = cupy.asarray(rng.uniform(size=(500, 32)).astype(np.float32))
    csq = (C * C).sum(axis=1)
    want = backend.assign(X, C, csq)
    got = backend.assign(X, C, csq, precision)
    np.testing.assert_array_equal(cupy.asnumpy(got), cupy.asnumpy(want))
    # TF32 really was used: the product differs from the exact one somewhere. (cuBLAS
    # takes the bf16 compute type as a permission; on an H200 with CUDA 13 it computed
    # the float32 product exactly, which the re-check allows.)
    if precision == "tf32":
        reduced = backend.reduced_product(X, -2.0 * C, precision)
        assert float(cupy.abs(reduced - X @ (-2.0 * C).T).max()) > 0


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["tf32", "tf32x3"])
def test_cupy_pass_settles_its_near_ties_after_its_chunks(precision):
    cupy, backend = cupy_with_tensor_cores(precision)
    X, C, w, previous = crowded(precision, True, n=200_000, d=32, k=256)
    X, C, w, previous = (cupy.asarray(a) for a in (X, C, w, previous))
    chunks = check_a_pass_settles_near_ties(backend, X, C, w, previous, precision, 8 << 20)
    assert chunks > 4


def test_deterministic_sums_change_nothing_where_sums_are_ordered(backend):
    X = np.random.default_rng(5).normal(size=(3000, 5)).astype(np.float32)
    w = np.random.default_rng(6).uniform(0.5, 2, size=3000).astype(np.float32)
    a = KMeans(6, random_state=0).fit(backend.asarray(X), sample_weight=backend.asarray(w))
    b = KMeans(6, random_state=0, deterministic=True).fit(
        backend.asarray(X), sample_weight=backend.asarray(w)
    )
    np.testing.assert_array_equal(backend.to_numpy(a.labels_), backend.to_numpy(b.labels_))
    # CuPy sums differently with the option (a product instead of atomics): to rounding
    same = np.testing.assert_array_equal
    if backend.name == "cupy":
        same = functools.partial(np.testing.assert_allclose, rtol=1e-5)
    same(backend.to_numpy(a.cluster_centers_), backend.to_numpy(b.cluster_centers_))


def test_deterministic_must_be_a_bool():
    with pytest.raises(TypeError, match="deterministic must be True or False"):
        kmeans(np.zeros((4, 2)), 2, deterministic="yes")


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["one-hot", "sorted", "fixed-point"])
@pytest.mark.parametrize("k", [5, 64, 3000])
def test_cupy_deterministic_sums_repeat_bitwise_and_match_atomics(mode, k):
    from kmeans_gpu.backends import _cupy_has_device, get_backend

    if not _cupy_has_device():
        pytest.skip("CuPy with a CUDA device is not available")
    import cupy

    backend = get_backend("cupy")
    rng = np.random.default_rng(7)
    X = cupy.asarray(rng.normal(size=(200_000, 16)).astype(np.float32))
    w = cupy.asarray(rng.uniform(0.5, 2.0, size=200_000).astype(np.float32))
    labels = cupy.asarray(rng.integers(0, k, size=200_000).astype(np.int32))
    old = backend.deterministic_sums
    backend.deterministic_sums = mode
    try:
        for weights in (None, w):
            first = backend.cluster_sums(X, labels, weights, k, deterministic=True)
            again = backend.cluster_sums(X, labels, weights, k, deterministic=True)
            atomics = backend.cluster_sums(X, labels, weights, k)
            for got, other in zip(first, again, strict=True):
                cupy.testing.assert_array_equal(got, other)
            for got, other in zip(first, atomics, strict=True):
                cupy.testing.assert_allclose(got, other, rtol=1e-4, atol=1e-3)
        if mode == "fixed-point":  # in any order of the rows, bitwise
            order = cupy.asarray(rng.permutation(200_000))
            shuffled = backend.cluster_sums(X[order], labels[order], w[order], k, True)
            for got, other in zip(shuffled, first, strict=True):
                cupy.testing.assert_array_equal(got, other)
    finally:
        backend.deterministic_sums = old


def test_nearest_two_scores(backend):
    """Each row's smallest score, its index (the first on ties) and the second-smallest
    score (the smallest again on a tie), on every backend."""

    rng = np.random.default_rng(5)
    product = rng.integers(-6, 6, size=(300, 7)).astype(np.float64)  # many exact ties
    centers_sq = rng.integers(0, 3, size=7).astype(np.float64)
    solver = get_backend(backend.asarray(product))
    labels, best, second = solver.nearest_two(
        backend.asarray(product), backend.asarray(centers_sq)
    )
    scores = product + centers_sq
    np.testing.assert_array_equal(backend.to_numpy(labels), np.argmin(scores, axis=1))
    ordered = np.sort(scores, axis=1)
    np.testing.assert_array_equal(backend.to_numpy(best), ordered[:, 0])
    np.testing.assert_array_equal(backend.to_numpy(second), ordered[:, 1])
    _, _, alone = solver.nearest_two(
        backend.asarray(product[:, :1]), backend.asarray(centers_sq[:1])
    )
    assert np.all(np.isinf(backend.to_numpy(alone)))  # k = 1: no second centre
