"""The blog post's API behaves as the blog post's own code (tests/blog_post_reference.py)
does."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import kmeans_gpu as kg
from kmeans_gpu.kmeans_nd import DimensionMismatchError

from . import blog_post_reference as ref


@pytest.fixture
def scene():
    np.random.seed(7)
    points = ref.generateClusters(6, 40, 0.01, (-4, 4), (-4, 4))
    centroids = ref.initializeCentroids(6, points)
    return points, centroids


def test_generate_clusters_is_the_blog_posts(scene):
    np.random.seed(11)
    expected = ref.generateClusters(12, 100, 0.01, (-4, 4), (-4, 4))
    np.random.seed(11)
    ours = kg.generate_clusters()  # the blog post's defaults, drawn from NumPy's global RNG
    np.testing.assert_array_equal(ours, expected)
    again = kg.generate_clusters(3, 10, 0.05, ((0, 1), (0, 2), (5, 9)), random_state=2)
    assert again.shape == (30, 3)
    assert np.array_equal(
        again, kg.generate_clusters(3, 10, 0.05, ((0, 1), (0, 2), (5, 9)), random_state=2)
    )


def test_initialize_centroids_is_the_blog_posts(scene, backend):
    points, _ = scene
    np.random.seed(5)
    expected = ref.initializeCentroids(10, points)
    np.random.seed(5)
    ours = kg.initialize_centroids(10, backend.asarray(points))
    assert backend.owns(ours)
    np.testing.assert_array_equal(backend.to_numpy(ours), expected)
    np.testing.assert_array_equal(
        kg.initialize_centroids(10, points, random_state=3),
        kg.initialize_centroids(10, points, random_state=np.random.RandomState(3)),
    )
    with pytest.raises(ValueError, match="k must be an integer in"):
        kg.initialize_centroids(points.shape[0] + 1, points)


def test_assign_and_recalc_are_the_blog_posts(scene, backend):
    points, centroids = scene
    expected = ref.assignPointsToCentroids(centroids, points)
    labels = kg.assign_points_to_centroids(backend.asarray(centroids), backend.asarray(points))
    np.testing.assert_array_equal(backend.to_numpy(labels), expected)
    # cluster 3 left empty: it keeps its centroid, as in the blog post
    expected_labels = np.where(expected == 3, 0, expected)
    want = ref.recalcCentroids(centroids, points, expected_labels)
    got = kg.recalc_centroids(
        backend.asarray(centroids), backend.asarray(points), backend.asarray(expected_labels)
    )
    np.testing.assert_allclose(backend.to_numpy(got), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(backend.to_numpy(got)[3], centroids[3])


def test_kmeansnd_get_centroids_is_the_blog_posts(scene, backend):
    points, centroids = scene
    want_c, want_l, want_it = ref.KMeansND(centroids, points).getCentroids()
    got_c, got_l, got_it = kg.KMeansND(
        backend.asarray(centroids), backend.asarray(points)
    ).get_centroids()
    assert got_it == want_it
    np.testing.assert_array_equal(backend.to_numpy(got_l), want_l)
    np.testing.assert_allclose(backend.to_numpy(got_c), want_c, rtol=1e-12, atol=1e-12)


def test_kmeansnd_generator_is_the_blog_posts(scene):
    points, centroids = scene
    want = list(ref.KMeansND(centroids, points).getGeneratorFunc()())
    gen_func = kg.KMeansND(centroids, points).get_generator_func()
    assert inspect.isgeneratorfunction(gen_func)
    for _ in range(2):  # a fresh generator per call
        got = list(gen_func())
        assert len(got) == len(want)
        for (gc, gl, gi), (wc, wl, wi) in zip(got, want, strict=True):
            assert gi == wi
            np.testing.assert_array_equal(gl, wl)
            np.testing.assert_allclose(gc, wc, rtol=1e-12, atol=1e-12)
    first_centroids, _, first_iteration = got[0]
    assert first_iteration == 0
    np.testing.assert_array_equal(first_centroids, centroids)


def test_kmeansnd_with_empty_cluster_keeps_centroid():
    points = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    start = np.array([[0.0, 0.0], [5.0, 5.0], [100.0, 100.0]])
    want = ref.KMeansND(start, points).getCentroids()
    got = kg.KMeansND(start, points).get_centroids()
    assert got[2] == want[2]
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[0], want[0])
    np.testing.assert_array_equal(got[0][2], [100.0, 100.0])


def test_dimension_mismatch_is_clear(scene):
    points, _centroids = scene
    message = "Dimension mismatch: points has 2 features, but the centroids is expecting 3"
    with pytest.raises(DimensionMismatchError, match=message):
        kg.KMeansND(np.zeros((2, 3)), points)
    assert issubclass(DimensionMismatchError, ValueError)
    assert issubclass(DimensionMismatchError, RuntimeError)  # what the blog post raised
    with pytest.raises(ValueError, match="Dimension mismatch"):
        kg.assign_points_to_centroids(np.zeros((2, 3)), points)


def test_recalc_refuses_bad_labels(scene):
    points, centroids = scene
    with pytest.raises(ValueError, match="labels must lie in"):
        kg.recalc_centroids(centroids, points, np.full(points.shape[0], 6))
    with pytest.raises(ValueError, match="labels must be integers of shape"):
        kg.recalc_centroids(centroids, points, np.zeros(3, dtype=int))
