"""Tensor cores emulated on the host, for the reduced-precision tests: float32 inputs cut
to TF32 (rounded to nearest-even, or truncated as tensor cores handed float32 operands
do), products summed in float32. Split TF32 is a TF32 product of split inputs, so it
runs on the same emulation; the pass's own logic is the library's code, the same that
runs on CuPy."""

from __future__ import annotations

from typing import Any

import array_api_compat.numpy as compat_np
import numpy as np

from kmeans_gpu.experimental import TensorCores

#: bits of float32's 24 significant bits that TF32 drops
DROPPED_BITS = 13


def round_significand(x: Any) -> np.ndarray:
    """float32 values rounded to nearest (ties to even) at TF32's 11 bits."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    lowest_kept = (bits >> np.uint32(DROPPED_BITS)) & np.uint32(1)
    bits = bits + np.uint32((1 << (DROPPED_BITS - 1)) - 1) + lowest_kept
    return (bits & ~np.uint32((1 << DROPPED_BITS) - 1)).view(np.float32)


def truncate_significand(x: Any) -> np.ndarray:
    """float32 values truncated (toward zero) at TF32's 11 bits: what tensor cores do
    with the low bits of float32 operands."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return (bits & ~np.uint32((1 << DROPPED_BITS) - 1)).view(np.float32)


class EmulatedTensorCores(TensorCores):
    """The generic NumPy backend with TF32 products as tensor cores make them: inputs
    rounded to nearest or (``truncate``) truncated, float32 sums. Counts its reduced
    products and, by precision name, the rows of its reduced nearest-two calls."""

    def __init__(self, truncate: bool = False) -> None:
        super().__init__(compat_np, "emulated-tensor-cores")
        self.convert = truncate_significand if truncate else round_significand
        self.reduced_calls = 0
        self.rows_by_precision: dict[str, int] = {}

    def computes(self, precision: Any) -> bool:
        return True

    def reduced_product(self, X: Any, scaled: Any, precision: Any) -> Any:
        self.reduced_calls += 1
        return self.convert(X) @ self.convert(scaled).T  # float32 sums

    def reduced_nearest_two(self, rows: Any, centers: Any, precision: Any) -> Any:
        name = precision.name
        self.rows_by_precision[name] = self.rows_by_precision.get(name, 0) + int(rows.shape[0])
        return super().reduced_nearest_two(rows, centers, precision)
