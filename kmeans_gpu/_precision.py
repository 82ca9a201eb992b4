"""Reduced-precision distance products (``precision="tf32"`` or ``"bf16"``), re-checked.

Tensor cores multiply float32 matrices much faster when the inputs are rounded to
TF32 (11 significant bits) or bfloat16 (8 bits) and the products summed in float32. The
nearest centre is then taken from those scores, and every row whose nearest and
second-nearest centre are closer than the worst-case rounding error could separate is
assigned again with the exact float32 product. So the labels are those of the exact
path; only the products of rows with a clear winner are cheaper.

The bound. With inputs rounded to nearest with unit roundoff ``u`` and the ``d``
products summed in float32 (unit roundoff ``e = 2⁻²⁴``), the product of row ``x`` with
the scaled centre ``−2c`` is off the exact product by at most
``2‖x‖‖c‖·(2u + u² + γ)``, ``γ = d·e / (1 − d·e)`` (Cauchy–Schwarz on the per-term
errors). The exact path's own float32 product is off by at most ``2‖x‖‖c‖·γ``, and
adding ``‖c‖²`` rounds each score by at most ``e·(‖x‖ + ‖c‖)²`` in both. A row whose
smallest reduced score is below every other by more than twice the sum of these (with
``‖c‖`` the largest centre norm) has the same nearest centre in both (the error can
move both scores); the bound is doubled again for margin.
"""

from __future__ import annotations

from typing import Any

from .backends import Array, Backend

PRECISIONS = ("exact", "tf32", "bf16")
#: unit roundoff of each reduced input format (round to nearest)
UNIT_ROUNDOFF = {"tf32": 2.0**-11, "bf16": 2.0**-8}
_FLOAT32_ROUNDOFF = 2.0**-24


def check_precision(precision: Any, dtype: Any = None, xp: Any = None) -> str:
    """Validate ``precision``, and when ``dtype`` (of namespace ``xp``) is given, that
    it suits data of that dtype."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if dtype is not None and precision != "exact" and dtype != xp.float32:
        raise ValueError(
            f"precision={precision!r} rounds float32 inputs; the data are {dtype}: pass "
            "float32 data or precision='exact'"
        )
    return str(precision)


def error_bound(row_norms: Array, max_center_norm: Any, n_features: int, u: float) -> Array:
    """How far, at most, each row's reduced scores can be from the exact path's scores
    (see the module docstring), with a safety factor of two."""
    e = _FLOAT32_ROUNDOFF
    gamma = n_features * e / (1.0 - n_features * e)
    product = 2.0 * row_norms * max_center_norm * (2.0 * u + u * u + 2.0 * gamma)
    squares = 2.0 * e * (row_norms + max_center_norm) ** 2
    return 2.0 * (product + squares)


def near_ties(
    xp: Any, X: Array, centers_sq: Array, best: Array, second: Array, precision: str
) -> tuple[Array, Array]:
    """Which rows of ``X`` have another centre within the margin of the best at
    ``precision`` (their two smallest reduced scores ``best`` and ``second`` closer than
    the two scores' worst-case errors together), and that margin per row."""
    row_norms = xp.sqrt(xp.sum(X * X, axis=1))
    max_center_norm = xp.max(xp.sqrt(centers_sq))
    margin = 2.0 * error_bound(
        row_norms, max_center_norm, int(X.shape[1]), UNIT_ROUNDOFF[precision]
    )
    return second <= best + margin, margin


def assign_reduced(
    backend: Backend, X: Array, centers: Array, centers_sq: Array, precision: str
) -> Array:
    """Nearest centre of each row of ``X`` from a ``precision`` product, the rows with
    a near tie assigned again exactly (same result as ``backend.assign``)."""
    xp = backend.xp
    scaled = -2.0 * centers
    product = backend.reduced_product(X, scaled, precision)
    labels, best, second = backend.nearest_two(product, centers_sq)
    del product
    near, _ = near_ties(xp, X, centers_sq, best, second, precision)
    # the rows to redo, gathered, assigned exactly, and put back without a scatter:
    # row i's exact label sits at position (number of near rows before it)
    redo = xp.nonzero(near)[0]
    if int(redo.shape[0]) == 0:
        return labels
    exact = backend.assign(xp.take(X, redo, axis=0), centers, centers_sq)
    position = xp.cumulative_sum(xp.astype(near, xp.int64)) - 1
    position = xp.clip(position, min=0)
    return xp.where(near, xp.take(exact, position), labels)
