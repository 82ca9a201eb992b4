"""Fixtures of the experimental engines' tests: the CuPy stand-in (``tests/fake_cupy.py``)
extended with models of the experimental kernels and of the Triton kernel's launchers,
and Triton's interpreter."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tests import fake_cupy

from .emulation import round_significand

#: the ``backend`` fixture's CuPy parameters only: the real one (``gpu``), the stand-in
ON_CUPY = pytest.mark.parametrize(
    "backend", [pytest.param("cupy", marks=pytest.mark.gpu), "cupy-host"], indirect=True
)


def _split_model(grid: tuple[int], block: tuple[int], args: tuple[Any, ...]) -> None:
    """``kmeans_gpu_split_tf32_f32``: TF32 parts by rounding bits (not Veltkamp's
    splitting, so the two are checked against each other)."""
    x, elements, d, low_blocks, out = args
    assert grid[0] * block[0] >= int(elements) == x.size and x.flags.c_contiguous
    assert out.shape == (x.shape[0], 3 * int(d)) and x.dtype == np.float32
    high = round_significand(x)
    low = round_significand(x - high)
    for j in range(3):
        out[:, j * int(d) : (j + 1) * int(d)] = low if int(low_blocks) >> j & 1 else high


def _sorted_sums_model(grid: tuple[int, ...], block: tuple[int], args: tuple[Any, ...]) -> None:
    """``kmeans_gpu_sorted_sums_f64``: each part of each cluster summed in position
    order, as a block does."""
    X, order, offsets, weights, has_weights, k, d, partial_sums, partial_weights = args
    parts = grid[1]
    assert grid[0] == int(k) and partial_sums.shape == (parts, int(k), int(d))
    assert block[0] % 32 == 0 and partial_weights.shape == (parts, int(k))
    assert X.dtype == np.float64 and X.flags.c_contiguous
    assert order.dtype == offsets.dtype == np.int64 and offsets.shape == (int(k) + 1,)
    # position i is part (i − its cluster's offset) % P's; np.add.at adds in order, as a block
    labels = np.searchsorted(offsets, np.arange(order.size), side="right") - 1
    part = (np.arange(order.size) - offsets[labels]) % parts
    w = weights[order] if int(has_weights) else 1.0
    partial_sums[...] = 0.0
    partial_weights[...] = 0.0
    rows = X[order]
    np.add.at(partial_sums, (part, labels), rows * w[:, None] if int(has_weights) else rows)
    np.add.at(partial_weights, (part, labels), w)


def _sq_dist_model(grid: tuple[int], block: tuple[int], args: tuple[Any, ...]) -> None:
    """``kmeans_gpu_sq_dist_*``: float64 differences of the rescaled values."""
    X, centers, labels, rows, d, f1, f2, out = args
    assert block[0] % 32 == 0 and grid[0] * block[0] // 32 >= int(rows)  # a warp a row
    assert X.shape == (int(rows), int(d)) and labels.dtype == np.int32
    assert out.dtype == np.float64 and X.flags.c_contiguous
    f1, f2 = float(f1), float(f2)
    x = (X.astype(np.float64) * f1) * f2
    c = (centers[labels].astype(np.float64) * f1) * f2
    out[...] = ((x - c) ** 2).sum(axis=1)


def _triton_stand_ins(record: dict[str, Any]) -> dict[str, Any]:
    """What ``_triton.nearest_two`` and ``_triton.lloyd_step`` are specified to return,
    from float32 products (the kernel itself runs in Triton's interpreter in
    test_triton.py)."""
    from kmeans_gpu.backends._base import centred64

    def scores_of(rows: Any, scaled: Any, centers_sq: Any) -> tuple[Any, Any, Any]:
        scores = np.asarray(rows) @ np.asarray(scaled).T + np.asarray(centers_sq)[None, :]
        labels = np.argmin(scores, axis=1).astype(np.int32)
        two = np.sort(scores, axis=1)[:, :2]
        second = two[:, 1] if scores.shape[1] > 1 else np.full(len(scores), np.inf, np.float32)
        return labels, two[:, 0].astype(np.float32), second.astype(np.float32)

    def nearest_two(X: Any, scaled: Any, centers_sq: Any, precision: Any, config: Any = None):
        record["triton"] += 1
        assert X.dtype == np.float32 and precision.name in ("tf32", "tf32x3")
        return fake_cupy._as_cupy(scores_of(X, scaled, centers_sq))

    def lloyd_step(X, origin, centers, rows_sq, weights, precision, margin, config=None):
        record["triton_steps"] += 1
        assert X.dtype == np.float32 and origin[0].dtype == np.float64
        rows = centred64(np, np.asarray(X), (np.asarray(origin[0]), origin[1]))
        rows = rows.astype(np.float32)
        labels, best, second = scores_of(rows, -2.0 * centers.working, centers.sq)
        near = second - best <= margin(np, np.asarray(rows_sq), np.asarray(centers.largest_norm))
        k, d = centers.n_clusters, rows.shape[1]
        w = np.ones(len(rows), np.float32) if weights is None else np.asarray(weights)
        w = np.where(near, np.float32(0), w).astype(np.float32)
        sums, weight_sums = np.zeros((k, d), np.float32), np.zeros(k, np.float32)
        np.add.at(sums, labels, rows * w[:, None])  # float32 atomics
        np.add.at(weight_sums, labels, w)
        return fake_cupy._as_cupy((labels, near, sums, weight_sums))

    return {"nearest_two": nearest_two, "lloyd_step": lloyd_step, "available": lambda: True}


def _clear_caches() -> None:
    from kmeans_gpu.experimental import _cuda, _cupy

    _cupy.make_backend.cache_clear()
    _cupy._compute_capability.cache_clear()
    _cuda._module.cache_clear()


def _extend(monkeypatch: pytest.MonkeyPatch, cp: Any, record: dict[str, Any]) -> None:
    """Add the experimental kernels' models and the Triton stand-ins to the installed
    CuPy stand-in ``cp``; ``record`` counts the Triton calls."""
    from kmeans_gpu.experimental import _triton

    for key, model in (
        ("split_tf32", _split_model),
        ("sorted_sums", _sorted_sums_model),
        ("sq_dist", _sq_dist_model),
    ):
        monkeypatch.setitem(fake_cupy.KERNEL_MODELS, key, model)
    for name in ("uint64", "bool_"):
        monkeypatch.setattr(cp, name, getattr(np, name), raising=False)
    for name in ("ceil", "log2", "ldexp", "rint", "sqrt"):
        monkeypatch.setattr(cp, name, fake_cupy._device_results(getattr(np, name)), False)
    record["triton"] = record["triton_steps"] = 0
    for name, stand_in in _triton_stand_ins(record).items():
        monkeypatch.setattr(_triton, name, stand_in)
    _clear_caches()


@pytest.fixture
def cupy(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, dict[str, Any]]]:
    """The CuPy stand-in with the experimental kernels' models and the Triton kernel's
    stand-ins (``record["triton"]``, ``record["triton_steps"]`` count their calls);
    yields the stand-in module and the record of calls."""
    with fake_cupy.stand_in(monkeypatch) as record:
        cp = sys.modules["cupy"]
        _extend(monkeypatch, cp, record)
        try:
            yield cp, record
        finally:
            _clear_caches()


@pytest.fixture
def backend(backend: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The shared ``backend`` fixture; its CuPy stand-in with the experimental models."""
    stand_in = backend.name == "cupy" and getattr(backend.xp, "__version__", "").endswith(
        "host-stand-in"
    )
    if stand_in:
        _extend(monkeypatch, backend.xp, {})
    try:
        yield backend
    finally:
        if stand_in:
            _clear_caches()


@pytest.fixture
def interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Triton's interpreter (chosen by the root conftest.py before triton is imported,
    on a machine without a CUDA device; the ``gpu`` tests run the compiled kernel
    where there is one)."""
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("a CUDA device is here: the gpu tests run the compiled kernel")
    from triton.runtime import interpreter as triton_interpreter

    # Triton 3.6's interpreter takes int() of one-element arrays, which NumPy 2.4 refuses
    patch = getattr(triton_interpreter, "_patch_lang_tensor", None)
    if patch is not None:

        def patched(tensor: Any, scope: Any) -> None:
            patch(tensor, scope)
            scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

        monkeypatch.setattr(triton_interpreter, "_patch_lang_tensor", patched)
