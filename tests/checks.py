"""Assertions shared by the tests and ``conftest.py``."""

from __future__ import annotations

from typing import Any

import numpy as np


def assert_same_up_to_order(actual: Any, desired: Any) -> None:
    """Results of the same sums added in another order (float atomics, or rows summed
    after the others) agree within a few roundings of the largest value."""
    actual, desired = np.asarray(actual), np.asarray(desired)
    eps = 64 * np.finfo(np.result_type(desired.dtype, np.float32)).eps
    scale = float(np.max(np.abs(desired), initial=0.0))
    np.testing.assert_allclose(actual, desired, rtol=eps, atol=eps * scale)


def nearest_exactly(X: Any, centers: Any) -> np.ndarray:
    """The nearest centre of each row by float64 differences, the lowest index on ties
    (a brute force for small data)."""
    X64, C64 = np.asarray(X, np.float64), np.asarray(centers, np.float64)
    diff = X64[:, None, :] - C64[None, :, :]
    # each row's differences scaled by a power of two, so that no square underflows
    largest = np.abs(diff).max(axis=(1, 2), keepdims=True)
    diff = np.ldexp(diff, -np.frexp(np.where(largest > 0, largest, 1.0))[1])
    return np.argmin((diff**2).sum(axis=2), axis=1)
