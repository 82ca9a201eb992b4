"""The frame stream against fit(): same run, host snapshots, on every backend."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import kmeans_gpu as kg
from kmeans_gpu import Frame, KMeans, iter_frames


@pytest.fixture
def scene():
    points = kg.generate_clusters(8, 50, 0.02, random_state=3)
    return points, kg.initialize_centroids(8, points, random_state=4)


def test_frames_follow_fit(backend, scene):
    points, init = scene
    X, C = backend.asarray(points), backend.asarray(init)
    frames = list(iter_frames(X, C))
    centers, labels, inertia, n_iter = kg.kmeans(X, 8, init=C, tol=0.0, empty_cluster="keep")
    assert len(frames) == n_iter + 1
    assert [f.iteration for f in frames] == list(range(n_iter + 1))
    for f in frames:
        assert isinstance(f, Frame)
        assert isinstance(f.centroids, np.ndarray) and isinstance(f.labels, np.ndarray)
        assert not f.centroids.flags.writeable and not f.labels.flags.writeable
    first, last = frames[0], frames[-1]
    np.testing.assert_array_equal(first.centroids, init)
    np.testing.assert_array_equal(first.labels, kg.assign_points_to_centroids(init, points))
    assert first.center_shift == 0.0
    backend.assert_same_run(last.centroids, centers)
    np.testing.assert_array_equal(last.labels, backend.to_numpy(labels))
    backend.assert_same_run(last.inertia, inertia)
    assert last.converged
    inertias = [f.inertia for f in frames]
    assert all(b <= a * (1 + 1e-12) for a, b in itertools.pairwise(inertias))
    assert all(f.center_shift > 0 for f in frames[1:-1])


def test_frames_through_relocations(backend, rng):
    """A far initial centre empties at once and is relocated: every frame still has
    the inertia of its labels against its centroids, and the last one is the fit's."""
    X = rng.normal(size=(300, 2))
    init = np.vstack([X[:3], [[1e3, 1e3]]])
    frames = list(iter_frames(backend.asarray(X), backend.asarray(init), empty_cluster="relocate"))
    fit = kg.KMeans(4, init=backend.asarray(init), n_init=1, tol=0.0).fit(backend.asarray(X))
    for f in frames:
        d2 = ((X - f.centroids[f.labels]) ** 2).sum()
        assert f.inertia == pytest.approx(d2, rel=1e-9)
    assert frames[-1].inertia == pytest.approx(fit.inertia_, rel=1e-12)


def test_estimator_frames_equal_its_fit(backend, rng):
    X = backend.asarray(rng.normal(size=(500, 3)))
    est = KMeans(6, random_state=2, tol=1e-3)  # k-means++, relocation, tolerance stop
    frames = list(est.iter_frames(X))
    assert not hasattr(est, "labels_")
    est.fit(X)
    assert len(frames) == est.n_iter_ + 1
    np.testing.assert_array_equal(frames[-1].labels, backend.to_numpy(est.labels_))
    backend.assert_same_run(frames[-1].centroids, est.cluster_centers_)
    backend.assert_same_run(frames[-1].inertia, est.inertia_)


def test_max_iter_stops_unconverged(scene):
    points, init = scene
    frames = list(iter_frames(points, init, max_iter=2))
    assert len(frames) == 3 and not frames[-1].converged


def test_display_indices_copy_only_a_sample(backend, scene):
    points, init = scene
    idx = np.array([5, 0, 399, 17])
    X = backend.asarray(points)
    full = list(iter_frames(X, backend.asarray(init)))
    some = list(iter_frames(X, backend.asarray(init), display_indices=idx))
    assert len(full) == len(some)
    for a, b in zip(full, some, strict=True):
        np.testing.assert_array_equal(b.labels, a.labels[idx])
        np.testing.assert_array_equal(b.indices, idx)
        backend.assert_same_run(b.inertia, a.inertia)
    with pytest.raises(ValueError, match="display_indices must lie in"):
        list(iter_frames(X, backend.asarray(init), display_indices=[400]))


def test_frames_need_n_clusters_or_centroids(scene):
    points, _ = scene
    with pytest.raises(ValueError, match="n_clusters is required"):
        iter_frames(points, "k-means++")
    frames = list(iter_frames(points, "k-means++", n_clusters=3, random_state=0))
    assert frames[0].centroids.shape == (3, 2)
    with pytest.raises(ValueError, match="set n_init=1"):
        KMeans(3, init="random").iter_frames(points)


def test_fit_makes_no_host_copies(monkeypatch, rng):
    from kmeans_gpu.backends import Backend

    def forbidden(self, x, owned=False, staging=None):
        raise AssertionError("fit must not copy frames to the host")

    monkeypatch.setattr(Backend, "host_copy", forbidden)
    KMeans(4, random_state=0).fit(rng.normal(size=(100, 2)))
    with pytest.raises(AssertionError, match="must not copy"):
        list(KMeans(4, random_state=0).iter_frames(rng.normal(size=(100, 2))))


def test_frame_labels_are_handed_over_on_the_host_not_copied(monkeypatch, scene):
    """The loop's labels are fresh arrays it never writes again: on the host a frame
    takes them as they are (a 4 MB copy a frame for a million points, otherwise); the
    centroids, which may be the caller's initial array, are still copied."""
    from kmeans_gpu.backends import Backend, get_backend

    backend = get_backend("numpy")
    x = np.arange(5)
    assert backend.host_copy(x, owned=True)() is x
    copied = backend.host_copy(x)()
    assert copied is not x and not np.shares_memory(copied, x)
    owned = []
    real = Backend.host_copy

    def spy(self, x, owned_=False, **kwargs):
        flag = kwargs.get("owned", owned_)
        owned.append((x.shape, flag))
        return real(self, x, flag)

    monkeypatch.setattr(Backend, "host_copy", spy)
    points, init = scene
    before = init.copy()
    frames = list(iter_frames(points, init))
    n = points.shape[0]
    assert {o for shape, o in owned if shape == (n,)} == {True}  # labels
    assert {o for shape, o in owned if shape == init.shape} == {False}  # centroids
    np.testing.assert_array_equal(init, before)
    assert init.flags.writeable and all(not f.labels.flags.writeable for f in frames)
    assert len({id(f.labels) for f in frames[:-1]}) == len(frames) - 1


def test_frames_are_a_generator_of_fresh_snapshots(scene):
    points, init = scene
    frames = iter_frames(points, init)
    first = next(frames)
    second = next(frames)
    assert first.labels is not second.labels
    assert first.iteration == 0 and second.iteration == 1


@pytest.mark.gpu
def test_cupy_async_host_copy_matches_plain_copy(rng):
    """The pinned, side-stream copy gives what a plain device-to-host copy gives."""
    from kmeans_gpu.backends import _cupy_has_device, get_backend

    if not _cupy_has_device():
        pytest.skip("CuPy with a CUDA device is not available")
    import cupy as cp

    backend = get_backend("cupy")
    x = cp.asarray(rng.normal(size=(100_000, 3)))
    view = x[::2, 1]  # not contiguous
    before = view.copy()  # queued before the copy and the change
    finish = backend.host_copy(view)
    x += 1.0  # queued after the copy on the current stream: must not be seen
    np.testing.assert_array_equal(finish(), cp.asnumpy(before))


@pytest.mark.parametrize(
    "backend", [pytest.param("cupy", marks=pytest.mark.gpu), "cupy-host"], indirect=True
)
def test_cupy_host_copies_through_reused_staging_buffers(backend, rng):
    """With a staging dict, the second copy of a shape reuses the first one's pinned
    buffer once the first is finished (each finished once: a buffer given back twice
    would be shared), and the results are ordinary host arrays that later copies do
    not touch. On a GPU and on the CuPy stand-in."""
    from kmeans_gpu.backends import get_backend

    cupy_backend = get_backend("cupy")
    staging = {}
    x = backend.asarray(rng.normal(size=(50_000, 3)))
    want = [backend.to_numpy(x + i) for i in range(4)]
    got = []
    for i in range(4):
        finish = cupy_backend.host_copy(x + i, staging=staging)
        got.append(finish())
        assert finish() is got[-1]  # finished once
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    (buffers,) = staging.values()
    assert len(buffers) == 1  # one pinned buffer, reused
    assert not any(np.shares_memory(g, buffers[0]) for g in got)
