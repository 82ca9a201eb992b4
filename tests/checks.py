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
