"""Reduced-precision passes (``precision="tf32"``, ``"tf32x3"``): products on emulated
tensor cores (``emulation.py``), near ties settled so that the labels are the core's
exact labels, the statistics the exact pass's up to the order of their sums."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from kmeans_gpu import kmeans
from kmeans_gpu._api import prepare
from kmeans_gpu._assign import EXACT, centers_for, score_margin
from kmeans_gpu.backends import get_backend
from kmeans_gpu.experimental import ReducedPrecision, _engine
from kmeans_gpu.experimental import iter_frames as experimental_frames
from kmeans_gpu.experimental import kmeans as experimental_kmeans
from kmeans_gpu.experimental._precision import (
    CENTER_PIECES,
    ROW_PIECES,
    TF32,
    TF32X3,
    Margin,
    split_columns,
    split_tf32,
)
from tests.checks import assert_same_up_to_order, nearest_exactly

from .emulation import EmulatedTensorCores, round_significand, truncate_significand

PRECISIONS = {"tf32": TF32, "tf32x3": TF32X3}


def test_rounding_helpers_round_to_nearest_even_and_truncate():
    x = np.array([1.0, 1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11, 1.0 + 2.0**-12], np.float32)
    assert round_significand(x).tolist() == [1.0, 1.0, 1.0 + 2.0**-9, 1.0]
    assert truncate_significand(-x).tolist() == [-1.0, -1.0, -(1.0 + 2.0**-10), -1.0]


def test_split_tf32_parts_are_tf32_numbers_rounded_to_nearest():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=50_000) * np.exp(rng.normal(scale=5, size=50_000))).astype(np.float32)
    ties = (1.0 + np.arange(1, 500) * 2.0**-11).astype(np.float32)  # halfway at 11 bits
    x = np.concatenate([x, ties, -ties, [0.0, 1.0, -3.0]]).astype(np.float32)
    high, low = split_tf32(x)
    assert high.dtype == low.dtype == np.float32
    np.testing.assert_array_equal(high, round_significand(x))  # nearest, ties even
    np.testing.assert_array_equal(low, round_significand(x - high))
    u = 2.0**-11
    rest = x.astype(np.float64) - high - low
    assert np.all(np.abs(rest) <= u * u * np.abs(x))
    import array_api_compat.numpy as xp

    blocks = split_columns(xp, x.reshape(-1, 1), ROW_PIECES)
    np.testing.assert_array_equal(blocks, np.stack([high, high, low], axis=1))


def test_every_backend_splits_bitwise_alike(backend):
    """The split is plain float32 arithmetic rounded to nearest: every array library
    (and the CuPy kernel, or its stand-in's rounding of bits) gives NumPy's bits."""
    import array_api_compat.numpy as xp

    x = np.random.default_rng(1).normal(scale=100, size=(300, 7)).astype(np.float32)
    want = split_columns(xp, x, CENTER_PIECES)
    solver = get_backend(backend.asarray(x))
    got = split_columns(solver.xp, backend.asarray(x), CENTER_PIECES)
    np.testing.assert_array_equal(backend.to_numpy(got), want)


def reduced_scores(X, C, precision, backend=None):
    """``‖c‖² − 2x·c`` from the emulated tensor cores, as the pass makes them."""
    backend = backend or EmulatedTensorCores()
    scaled = -2.0 * C
    if precision.split:
        X, scaled = (
            split_columns(backend.xp, X, ROW_PIECES),
            split_columns(backend.xp, scaled, CENTER_PIECES),
        )
    return (C * C).sum(axis=1)[None, :] + backend.reduced_product(X, scaled, TF32)


def true_scores(X, C):
    """The scores of float32 values in float64: exact products, float64's rounding."""
    X64, C64 = X.astype(np.float64), C.astype(np.float64)
    return (C64 * C64).sum(axis=1)[None, :] - 2.0 * X64 @ C64.T


@pytest.mark.parametrize("truncate", [False, True], ids=["rounded", "truncated"])
@pytest.mark.parametrize("name", ["tf32", "tf32x3"])
@pytest.mark.parametrize(("d", "scale"), [(2, 1.0), (64, 1e3), (300, 1e-3)])
def test_reduced_scores_stay_within_the_bound(name, d, scale, truncate):
    """Each reduced score is within ``E = 2ρ‖x‖C + δ(‖x‖ + C)²`` of the true score: the
    margin is 4E, the core's margin plus ``8ρ‖x‖C``."""
    precision = PRECISIONS[name]
    rng = np.random.default_rng(d)
    X = (rng.normal(size=(1000, d)) * scale).astype(np.float32)
    C = (rng.normal(size=(40, d)) * scale).astype(np.float32)
    problem, _, _ = prepare(X, None, "numpy", centers=C, origin_at_centers=False)
    rows = problem.rows(0, 1000)
    centers = centers_for(problem, C)
    working = np.asarray(centers.working)
    reduced = reduced_scores(rows, working, precision, EmulatedTensorCores(truncate))
    rows_sq = (rows * rows).sum(axis=1)
    margin = Margin.of(problem, precision)(np, rows_sq, centers.largest_norm)
    worst = np.abs(reduced - true_scores(rows, working)).max(axis=1)
    assert np.all(worst <= margin / 4)  # E, without the factor of two for safety
    assert worst.max() > margin.max() / 2**14  # and not absurdly loose


def test_the_margin_is_the_cores_plus_the_products_share():
    X = np.random.default_rng(3).normal(size=(500, 16)).astype(np.float32)
    problem, _, C = prepare(X, None, "numpy", centers=X[:10])
    centers = centers_for(problem, C)
    rows_sq = problem.squared_row_norms
    core = score_margin(problem, rows_sq, centers)
    none = Margin(Margin.of(problem, TF32).squares, 0.0)(np, rows_sq, centers.largest_norm)
    np.testing.assert_array_equal(none, core)  # bitwise: the same operations
    for precision in (TF32, TF32X3):
        margin = Margin.of(problem, precision)(np, rows_sq, centers.largest_norm)
        assert margin.dtype == np.float32 and np.all(margin > core)


def test_split_tf32_is_nearly_as_accurate_as_float32():
    """Its bound is about 60 times below TF32's at d = 128, and its scores are within
    a float32 product's own worst-case error of the truth, far closer than TF32's."""
    d = 128
    assert TF32.relative_error(d) > 60 * TF32X3.relative_error(d)
    rng = np.random.default_rng(3)
    X = rng.normal(size=(2000, d)).astype(np.float32)
    C = rng.normal(size=(64, d)).astype(np.float32)
    truth = true_scores(X, C)
    norms = np.linalg.norm(X, axis=1)[:, None] * np.linalg.norm(C, axis=1)[None, :]
    float32_bound = 2 * d * 2.0**-24 / (1 - d * 2.0**-24) * 2 * norms  # γ(d)·2‖x‖‖c‖
    split_error = np.abs(reduced_scores(X, C, TF32X3) - truth)
    tf32_error = np.abs(reduced_scores(X, C, TF32) - truth)
    assert np.all(split_error <= float32_bound)
    assert split_error.max() * 30 < tf32_error.max()


def test_the_bound_holds_when_tensor_cores_truncate():
    """The worst case of truncation: every input loses almost a whole unit in the last
    place, all in the same direction, so the product loses almost two: past the
    half-unit bound of rounding to nearest, within the library's."""
    d = 128
    dropped = (1 << 13) - 1  # 1.00…011…1: every dropped bit set
    x = np.full(d, np.uint32(0x3F800000 | dropped), np.uint32).view(np.float32)
    exact = float(np.dot(x.astype(np.float64), x.astype(np.float64)))
    truncated = truncate_significand(x).astype(np.float64)
    error = abs(exact - float(np.dot(truncated, truncated))) / exact  # ‖x‖‖c‖ = x·x here
    half_unit = 2.0**-11
    assert error > 2 * half_unit + half_unit**2
    assert error <= TF32.relative_error(d)


def test_split_tf32_bound_covers_a_truncated_low_part():
    """Triton's own split TF32 rounds the high part to nearest and hands the remainder to
    the tensor cores as float32 (truncated): the bound still holds."""
    rng = np.random.default_rng(12)
    d = 128
    x = (rng.uniform(1, 2, size=(256, d)) * rng.choice([-1, 1], size=(256, d))).astype(np.float32)
    c = np.abs(x[::-1]) * np.sign(x)  # products of one sign: errors add up
    high_x, high_c = split_tf32(x)[0], split_tf32(c)[0]
    low_x, low_c = truncate_significand(x - high_x), truncate_significand(c - high_c)
    kept = [(high_x, high_c), (high_x, low_c), (low_x, high_c)]
    got = sum((a * b).astype(np.float64) for a, b in kept).sum(axis=1)
    exact = (x.astype(np.float64) * c.astype(np.float64)).sum(axis=1)
    norms = np.linalg.norm(x.astype(np.float64), axis=1) * np.linalg.norm(c, axis=1)
    u = 2.0**-11
    assert np.all(np.abs(got - exact) <= (5 * u**2 + 9 * u**3) * norms)


def crowded(name, weighted, n=3000, d=6, k=40, seed=8):
    """Rows with many near ties (and, for split TF32, rows tied in float32 itself,
    halfway between two close centres), centres, weights or None, previous labels."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(size=(n, d)).astype(np.float32)
    C = rng.uniform(size=(k, d)).astype(np.float32)
    w = rng.uniform(0.5, 2.0, size=n).astype(np.float32) if weighted else None
    if name == "tf32x3":
        C[1::2] = C[0::2] + np.float32(0.01)
        X[:k] = np.tile((C[0::2] + C[1::2]) / 2, (2, 1))
    return X, C, w, rng.integers(0, k, size=n).astype(np.int32)


def run_pass(engine, problem, C, previous, capacity=None):
    """One pass of ``engine`` (a reduced one settles its near ties within
    ``capacity``, or reads their count): labels and statistics."""
    labels = np.empty(problem.n_samples, dtype=np.int32)
    if capacity is not None:
        engine._capacity = capacity
    stats = engine(problem, centers_for(problem, C), labels, previous=previous, with_inertia=True)
    return labels, stats


def assert_same_statistics(got, want):
    for name in ("sums", "weights", "inertia"):
        assert_same_up_to_order(getattr(got, name), getattr(want, name))
    assert int(got.changed) == int(want.changed)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("name", ["tf32", "tf32x3"])
def test_a_pass_settles_its_near_ties_after_its_chunks(name, weighted):
    """Near ties marked per chunk (many chunks) and settled after the last one: the
    labels, sums, weights, changed count and inertia of the exact pass, against no
    previous labels and against some; split TF32 also within a capacity of exactly
    the count or more, without reading it."""
    X, C, w, previous = crowded(name, weighted)
    backend = EmulatedTensorCores()
    problem, _, C = prepare(X, w, backend, working_memory=4_000, centers=C)
    assert len(_engine._chunks(problem, 40, PRECISIONS[name])) > 50
    for before in (None, previous):
        want, exact = run_pass(EXACT, problem, C, before)
        engine = ReducedPrecision(name)
        got, stats = run_pass(engine, problem, C, before)
        count = int(stats.feedback)
        assert count > 10 and backend.rows_by_precision[name] >= problem.n_samples
        np.testing.assert_array_equal(got, want)
        assert_same_statistics(stats, exact)
        if name == "tf32x3":
            for capacity in (count, count + 100, problem.n_samples):
                again, within = run_pass(engine, problem, C, before, capacity)
                np.testing.assert_array_equal(again, want)
                assert_same_statistics(within, exact)
                assert int(within.feedback) == count and engine.accepts(count)
            _, short = run_pass(engine, problem, C, before, count - 1)
            assert int(short.feedback) == count and not engine.accepts(count)


def test_a_fit_runs_a_pass_again_when_its_near_ties_outgrow_the_capacity(monkeypatch):
    """Two rows lie exactly halfway between the two centres, which move onto their
    clusters' means and stay, so every pass has two near ties; the capacity is held at
    one: each pass after the first is run again, reading the count, and the fit is the
    exact fit."""
    X = np.array(
        [[-2, 1], [-2, -1], [2, 1], [2, -1], [4, 2], [4, -2], [4, 1], [4, -1]], np.float32
    )
    C = np.array([[0, 0.5], [4, 0.5]], np.float32)  # the means: (0, 0) and (4, 0)
    backend = EmulatedTensorCores()
    exact = kmeans(X, 2, init=C, backend=backend, max_iter=5, tol=0.0)
    monkeypatch.setattr(_engine, "SETTLE_MINIMUM", 1)
    monkeypatch.setattr(_engine, "SETTLE_HEADROOM", 0.5)
    capacities = []
    real = _engine._reduced_pass

    def spy(*args):
        capacities.append(args[-1])
        return real(*args)

    monkeypatch.setattr(_engine, "_reduced_pass", spy)
    got = experimental_kmeans(X, 2, init=C, backend=backend, max_iter=5, tol=0.0)
    np.testing.assert_array_equal(got[1], exact[1])
    np.testing.assert_array_equal(got[1], [0, 0, 0, 0, 1, 1, 1, 1])  # ties: the first
    assert_same_up_to_order(got[0], exact[0])
    assert got[3] == exact[3] == 2
    assert capacities == [None, 1, None]  # the first pass, the second, run again


def test_a_pass_within_a_capacity_says_when_a_row_had_too_many_candidates():
    """Six copies of one centre: the rows near it have six candidates, more than a slot
    compares, so the pass within a capacity is not accepted (its feedback is past any
    capacity); the pass that reads the count settles them exactly."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(400, 3)).astype(np.float32)
    C = np.vstack([np.zeros((6, 3)), rng.normal(size=(4, 3)) + 5]).astype(np.float32)
    problem, _, C = prepare(X, None, EmulatedTensorCores(), centers=C)
    want, _ = run_pass(EXACT, problem, C, None)
    engine = ReducedPrecision("tf32x3")
    got, read = run_pass(engine, problem, C, None)
    np.testing.assert_array_equal(got, want)
    assert 0 < int(read.feedback) <= problem.n_samples
    _, within = run_pass(engine, problem, C, None, problem.n_samples)
    assert int(within.feedback) == problem.n_samples + 1 and not engine.accepts(
        float(within.feedback)
    )
    assert np.all(want[np.abs(X).sum(axis=1) < 3] == 0)  # the copies' rows: the first


@pytest.mark.parametrize("truncate", [False, True], ids=["rounded", "truncated"])
@pytest.mark.parametrize("name", ["tf32", "tf32x3"])
def test_near_ties_are_settled_so_labels_are_exact(name, truncate):
    """Crowded data, and rows exactly or nearly halfway between two centres: the labels
    are the exact ones (by float64 differences, the lowest index on exact ties),
    where the reduced products alone would get some wrong."""
    rng = np.random.default_rng(1)
    X = rng.uniform(size=(6000, 16)).astype(np.float32)
    C = rng.uniform(size=(200, 16)).astype(np.float32)
    middle = (C[0::2] + C[1::2]) / 2
    X[:100], X[100:200] = middle, middle + rng.normal(scale=1e-6, size=middle.shape)
    backend = EmulatedTensorCores(truncate)
    problem, _, C = prepare(X, None, backend, centers=C)
    rows, working = problem.rows(0, 6000), np.asarray(centers_for(problem, C).working)
    raw = np.argmin(reduced_scores(rows, working, PRECISIONS[name], backend), axis=1)
    want = nearest_exactly(X, C)
    assert np.count_nonzero(raw != want) > 0  # the products alone get some wrong
    got, _ = run_pass(ReducedPrecision(name), problem, C, None)
    np.testing.assert_array_equal(got, want)


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
    problem, _, C = prepare(X, w, EmulatedTensorCores(), working_memory=2_000, centers=C)
    for name in ("tf32", "tf32x3"):
        want, exact = run_pass(EXACT, problem, C, previous)
        got, stats = run_pass(ReducedPrecision(name), problem, C, previous)
        np.testing.assert_array_equal(got, want)
        assert_same_statistics(stats, exact)
        assert (int(stats.feedback) == 500) == (case == "every row tied")


def test_tf32_near_ties_go_through_split_tf32_first():
    """The rows TF32 cannot settle are checked with split TF32, which settles most of
    them; the labels are exact."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(4000, 32)).astype(np.float32)
    C = X[rng.choice(4000, 200, replace=False)] + np.float32(0.01)
    backend = EmulatedTensorCores()
    problem, _, C = prepare(X, None, backend, centers=C)
    got, stats = run_pass(ReducedPrecision("tf32"), problem, C, None)
    np.testing.assert_array_equal(got, nearest_exactly(X, C))
    rows = backend.rows_by_precision
    assert rows["tf32"] == 4000 and rows["tf32x3"] == int(stats.feedback) > 100


def test_split_tf32_has_far_fewer_near_ties_than_tf32():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(10_000, 128)).astype(np.float32)
    C = X[rng.choice(10_000, 128, replace=False)]
    problem, _, C = prepare(X, None, EmulatedTensorCores(), centers=C)
    share = {}
    for name in ("tf32", "tf32x3"):
        _, stats = run_pass(ReducedPrecision(name), problem, C, None)
        share[name] = int(stats.feedback) / 10_000
    assert share["tf32"] > 0.01 and share["tf32x3"] < share["tf32"] / 20


def test_a_fit_at_reduced_precision_equals_the_exact_fit():
    rng = np.random.default_rng(2)
    X = np.vstack([rng.normal(loc=m, size=(1500, 8)) for m in range(6)]).astype(np.float32)
    backend = EmulatedTensorCores()
    exact = kmeans(X, 12, random_state=0, backend=backend, max_iter=30)
    for name in ("tf32", "tf32x3"):
        calls = backend.reduced_calls
        got = experimental_kmeans(
            X, 12, random_state=0, backend=backend, max_iter=30, precision=name
        )
        assert backend.reduced_calls > calls  # the reduced path really ran
        np.testing.assert_array_equal(got[1], exact[1])
        assert_same_up_to_order(got[0], exact[0])  # the settled rows summed last
        assert got[2] == pytest.approx(exact[2], rel=1e-9) and got[3] == exact[3]


@pytest.mark.parametrize("name", ["tf32", "tf32x3"])
def test_frames_at_reduced_precision_are_the_exact_frames(name):
    """The frame stream takes each iteration's inertia in the same pass: the settled
    near ties' share is added after the chunks."""
    from kmeans_gpu import iter_frames

    X, C, _, _ = crowded(name, False)
    backend = EmulatedTensorCores()
    options = {"max_iter": 6, "backend": backend, "working_memory": 20_000}
    exact = list(iter_frames(X, C, **options))
    got = list(experimental_frames(X, C, precision=name, **options))
    assert len(got) == len(exact) > 2
    for a, b in zip(got, exact, strict=True):
        np.testing.assert_array_equal(a.labels, b.labels)
        assert_same_up_to_order(a.centroids, b.centroids)
        assert a.inertia == pytest.approx(b.inertia, rel=1e-9)


def test_backends_without_tensor_cores_compute_exactly(backend):
    """NumPy, array_api_strict and the core's CuPy backend make no reduced products:
    the experimental entry is the exact fit there (on CuPy it takes the experimental
    backend, whose tensor cores compute: the same labels, centres up to order)."""
    X = np.random.default_rng(3).normal(size=(500, 4)).astype(np.float32)
    a = kmeans(backend.asarray(X), 5, random_state=0)
    b = experimental_kmeans(backend.asarray(X), 5, random_state=0, precision="tf32")
    np.testing.assert_array_equal(backend.to_numpy(a[1]), backend.to_numpy(b[1]))
    if backend.name == "cupy":
        backend.assert_same_up_to_order(b[0], a[0])
    else:
        np.testing.assert_array_equal(backend.to_numpy(b[0]), backend.to_numpy(a[0]))


def test_bad_precisions_and_data_are_refused_clearly():
    X = np.random.default_rng(0).normal(size=(10, 2)).astype(np.float32)
    with pytest.raises(ValueError, match="precision must be one of"):
        experimental_kmeans(X, 2, precision="bf16")
    with pytest.raises(ValueError, match="precision='tf32' rounds float32 inputs"):
        experimental_kmeans(X.astype(np.float64), 2, precision="tf32")
    with pytest.raises(ValueError, match="rounds float32 inputs"):  # found at the pass
        experimental_kmeans(X.tolist(), 2, precision="tf32x3")
    with pytest.raises(ValueError, match="the core's pass"):
        ReducedPrecision("exact")
    with pytest.raises(ValueError, match="triton=True runs on CuPy"):
        experimental_kmeans(X, 2, backend="numpy", triton=True)
    with pytest.raises(ValueError, match="n_clusters is required"):
        experimental_frames(X)
    exact = experimental_kmeans(X.astype(np.float64), 2, precision="exact", init=X[:2])
    np.testing.assert_array_equal(exact[1], kmeans(X.astype(np.float64), 2, init=X[:2])[1])


def test_importing_kmeans_gpu_never_imports_the_experimental_package():
    code = (
        "import sys, kmeans_gpu, kmeans_gpu.backends, kmeans_gpu.estimator, kmeans_gpu.cli\n"
        "import kmeans_gpu.frames, kmeans_gpu.display\n"
        "assert not [m for m in sys.modules if m.startswith('kmeans_gpu.experimental')]\n"
        "import kmeans_gpu.experimental\n"
        "assert 'triton' not in sys.modules and 'cupy' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
