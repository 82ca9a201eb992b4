"""The exact pass with distance bounds (``kmeans_gpu._bounds``) gives the plain exact
pass's results bit for bit, and skips rows once the centres settle."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kmeans_gpu._bounds as bounds
from kmeans_gpu import KMeans, iter_frames
from kmeans_gpu._assign import EXACT
from kmeans_gpu._problem import make_problem
from kmeans_gpu.backends import get_backend


def _bounded_and_plain(monkeypatch, run):
    """``run()`` with bounds on whatever the size, then with bounds off."""
    with monkeypatch.context() as patch:
        patch.setattr(bounds, "BOUNDED_WORK", 0)
        bounded = run()
    with monkeypatch.context() as patch:
        patch.setattr(bounds, "BOUNDED_WORK", 1 << 62)
        plain = run()
    return bounded, plain


def _fit(backend, X, weights=None, **params):
    def run():
        est = KMeans(**params).fit(backend.asarray(X), sample_weight=weights)
        return (
            backend.to_numpy(est.cluster_centers_).tobytes(),
            backend.to_numpy(est.labels_).tobytes(),
            est.inertia_,
            est.n_iter_,
        )

    return run


def _blobs(seed, n, d, offset, dtype):
    r = np.random.default_rng(seed)
    X = r.normal(size=(n, d)) + r.integers(0, 12, (n, 1)) + offset
    return X.astype(dtype)


@pytest.mark.parametrize(
    ("offset", "dtype"), [(0.0, np.float64), (0.0, np.float32), (1e4, np.float32)]
)
def test_bounds_give_the_plain_results(backend, monkeypatch, offset, dtype):
    X = _blobs(1, 3000, 5, offset, dtype)
    w = np.random.default_rng(2).uniform(0.5, 2.0, size=3000)
    run = _fit(backend, X, w, n_clusters=14, init="random", n_init=1, random_state=3, tol=0.0)
    bounded, plain = _bounded_and_plain(monkeypatch, run)
    assert bounded == plain
    assert bounded[3] > 5  # enough iterations for the bounds to skip rows
    small = _fit(backend, X, w, n_clusters=14, init="random", n_init=1, random_state=3,
                 tol=0.0, working_memory=1 << 15)  # fmt: skip
    if backend.name == "numpy":  # (only NumPy's sums are the same over any chunks)
        assert _bounded_and_plain(monkeypatch, small)[0] == plain


@pytest.mark.parametrize("empty_cluster", ["relocate", "keep"])
def test_bounds_give_the_plain_results_with_ties_and_empty_clusters(
    backend, monkeypatch, empty_cluster
):
    """An integer grid (exact ties between centres) with repeated points and more
    clusters than distinct points early on, so that clusters empty and move."""
    r = np.random.default_rng(4)
    X = r.integers(0, 4, size=(600, 2)).astype(np.float64)
    init = np.vstack([X[:6], [[1.5, 1.5], [9.0, 9.0]]])

    def run():
        frames = list(
            iter_frames(backend.asarray(X), backend.asarray(init), max_iter=20,
                        empty_cluster=empty_cluster)
        )  # fmt: skip
        return [
            (backend.to_numpy(f.centroids).tobytes(), backend.to_numpy(f.labels).tobytes(),
             f.inertia)
            for f in frames
        ]  # fmt: skip

    bounded, plain = _bounded_and_plain(monkeypatch, run)
    assert bounded == plain


def test_bounds_give_the_plain_labels_after_a_tolerance_stop(backend, monkeypatch):
    """The last labels are made for the returned centres from the bounds too."""
    X = _blobs(5, 4000, 3, 0.0, np.float64)
    run = _fit(backend, X, n_clusters=20, init="random", n_init=1, random_state=1, tol=1e-2)
    bounded, plain = _bounded_and_plain(monkeypatch, run)
    assert bounded == plain


def test_bounds_skip_the_rows_whose_centre_cannot_change(monkeypatch):
    """Once the centres settle, most rows of blobs skip the distance products."""
    monkeypatch.setattr(bounds, "BOUNDED_WORK", 0)
    X = _blobs(6, 5000, 4, 0.0, np.float64)
    backend = get_backend("numpy")
    scored: list[int] = []
    original = type(backend).nearest_two

    def counted(self, rows, centers, centers_sq):
        scored.append(int(rows.shape[0]))
        return original(self, rows, centers, centers_sq)

    monkeypatch.setattr(type(backend), "nearest_two", counted)
    est = KMeans(12, init="random", n_init=1, random_state=0, tol=0.0, max_iter=15).fit(X)
    assert est.n_iter_ == 15 and sum(scored) < 15 * 5000 / 2


def test_only_the_default_pass_on_backends_that_prune_gets_bounds():
    X = np.zeros((10, 40))
    numpy = make_problem(get_backend("numpy"), X, None)
    assert isinstance(bounds.pass_for(numpy, 60, EXACT), bounds.BoundedPass)
    assert bounds.pass_for(numpy, 40, EXACT) is EXACT  # 40 × 40 < BOUNDED_WORK
    other = object()
    assert bounds.pass_for(numpy, 60, other) is other  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    k=st.integers(1, 9),
    scale=st.sampled_from([1e-30, 1.0, 1e6, 1e30]),
    offset=st.sampled_from([0.0, 1.0, 1e5]),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_bounds_give_the_plain_results_on_any_data(seed, k, scale, offset, dtype):
    r = np.random.default_rng(seed)
    n = int(r.integers(k, 200))
    X = ((r.normal(size=(n, 3)) + r.integers(0, 3, (n, 1))) * scale + offset * scale).astype(dtype)
    numpy = get_backend("numpy")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bounds, "BOUNDED_WORK", 0)
        bounded = KMeans(k, init="random", n_init=1, random_state=seed, tol=0.0,
                         backend=numpy).fit(X)  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bounds, "BOUNDED_WORK", 1 << 62)
        plain = KMeans(k, init="random", n_init=1, random_state=seed, tol=0.0,
                       backend=numpy).fit(X)  # fmt: skip
    np.testing.assert_array_equal(bounded.labels_, plain.labels_)
    assert bounded.cluster_centers_.tobytes() == plain.cluster_centers_.tobytes()
    assert bounded.n_iter_ == plain.n_iter_


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("offset", [0.0, 3e3])
def test_bounds_hold_the_exact_distances(dtype, offset):
    """From a pass's fast scores: every row's exact distance to its centre is at most
    its upper bound, and to every other centre at least its lower bound."""
    from kmeans_gpu._assign import centers_for, margin_factor

    r = np.random.default_rng(7)
    X = (r.normal(size=(4000, 16)) + r.integers(0, 3, (4000, 1)) + offset).astype(dtype)
    C = X[r.choice(4000, 40, replace=False)]
    problem = make_problem(get_backend("numpy"), X, None)
    centers = centers_for(problem, C)
    labels, best, second = problem.backend.nearest_two(
        problem.rows(0, 4000), centers.working, centers.sq
    )
    upper, lower, near = bounds._bounds(
        np, problem.squared_row_norms, best, second, margin_factor(problem), centers
    )
    exact = np.sqrt(((X.astype(np.float64)[:, None] - C.astype(np.float64)) ** 2).sum(axis=2))
    exact *= 2.0**problem.scale_exponent
    own = exact[np.arange(4000), labels]
    others = np.where(np.arange(40) == labels[:, None], np.inf, exact).min(axis=1)
    assert np.all(own <= upper) and np.all(others >= lower)
    assert not np.all(near) and np.median(upper - own) < 0.01 * np.median(own)
