"""The blog post's code (its KMeansND.py and animKMeans2D.py), kept as the reference
the blog post's API is tested against. Only ``np.int`` (gone from NumPy) became
``int`` and the scene parameters became arguments."""

import numpy as np


def assignPointsToCentroids(centroids, points):
    M = points.shape[0]
    K = centroids.shape[0]
    classifications = np.zeros((M,), dtype=int)
    for i in range(M):
        smallestDistance = 0
        for k in range(K):
            distance = np.linalg.norm(points[i, :] - centroids[k, :])
            if k == 0:
                smallestDistance = distance
                classifications[i] = k
            elif distance < smallestDistance:
                smallestDistance = distance
                classifications[i] = k
    return classifications


def recalcCentroids(centroids, points, classifications):
    K = centroids.shape[0]
    N = points.shape[1]
    newCentroids = np.zeros((K, N))
    for k in range(K):
        if sum(classifications == k) > 0:
            newCentroids[k, :] = np.sum(points[classifications == k, :], axis=0) / sum(
                classifications == k
            )
        else:
            newCentroids[k, :] = centroids[k, :]
    return newCentroids


class KMeansND:
    def __init__(self, initialCentroids, points):
        if initialCentroids.shape[1] != points.shape[1]:
            raise RuntimeError("Dimension mismatch.")
        self.initialCentroids = initialCentroids
        self.points = points

    def getCentroids(self):
        centroids = np.copy(self.initialCentroids)
        lastCentroids = centroids + 1
        iteration = 0
        while not np.array_equal(centroids, lastCentroids):
            lastCentroids = np.copy(centroids)
            classifications = assignPointsToCentroids(centroids, self.points)
            centroids = recalcCentroids(centroids, self.points, classifications)
            iteration += 1
        return (centroids, classifications, iteration)

    def _generatorFunc(self):
        centroids = np.copy(self.initialCentroids)
        lastCentroids = centroids + 1
        iteration = 0
        initialIteration = True
        while not np.array_equal(centroids, lastCentroids):
            if initialIteration:
                classifications = assignPointsToCentroids(centroids, self.points)
                initialIteration = False
            else:
                lastCentroids = np.copy(centroids)
                classifications = assignPointsToCentroids(centroids, self.points)
                centroids = recalcCentroids(centroids, self.points, classifications)
                iteration += 1
            yield (centroids, classifications, iteration)

    def getGeneratorFunc(self):
        return self._generatorFunc


def generateClusters(numClusters, ptsPerCluster, varianceCoeff, xCenterBounds, yCenterBounds):
    covariance = np.array(
        [
            [varianceCoeff * (xCenterBounds[1] - xCenterBounds[0]), 0],
            [0, varianceCoeff * (yCenterBounds[1] - yCenterBounds[0])],
        ]
    )
    centers = np.random.random_sample((numClusters, 2))
    centers[:, 0] = centers[:, 0] * (xCenterBounds[1] - xCenterBounds[0]) + xCenterBounds[0]
    centers[:, 1] = centers[:, 1] * (yCenterBounds[1] - yCenterBounds[0]) + yCenterBounds[0]
    points = np.zeros((numClusters * ptsPerCluster, 2))
    for i in range(numClusters):
        points[i * ptsPerCluster : (i + 1) * ptsPerCluster, :] = np.random.multivariate_normal(
            centers[i, :], covariance, ptsPerCluster
        )
    return points


def initializeCentroids(K, points):
    M = points.shape[0]
    indices = []
    while len(indices) < K:
        index = np.random.randint(0, M)
        if index not in indices:
            indices.append(index)
    return points[indices, :]
