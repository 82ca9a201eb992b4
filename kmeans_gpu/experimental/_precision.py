"""Reduced-precision distance products (``precision="tf32"``, ``"tf32x3"`` or
``"bf16"``), re-checked.

Tensor cores multiply float32 matrices much faster when the inputs are rounded to
TF32 (11 significant bits) or bfloat16 (8 bits) and the products summed in float32. The
nearest centre is then taken from those scores, and every row whose nearest and
second-nearest centre are closer than the worst-case rounding error could separate is
assigned again with the exact float32 product. So the labels are those of the exact
path; only the products of rows with a clear winner are cheaper.

The bound. With each input converted with relative error at most ``u`` and the ``d``
products summed in float32 (unit roundoff ``e = 2⁻²⁴``), the product of row ``x`` with
the scaled centre ``−2c`` is off the exact product by at most
``2‖x‖‖c‖·(2u + u² + γ)``, ``γ = d·e / (1 − d·e)`` (Cauchy–Schwarz on the per-term
errors). ``u`` is a whole unit in the last place of the format (``2⁻¹⁰`` for TF32,
``2⁻⁷`` for bfloat16), not the half of rounding to nearest: tensor cores given float32
operands ignore their low bits, which truncates (Triton's TF32 ``tl.dot`` does this,
and a library kernel may), and the bound must hold either way. The exact path's own
float32 product is off by at most ``2‖x‖‖c‖·γ``, and adding ``‖c‖²`` rounds each
score by at most ``e·(‖x‖ + ‖c‖)²`` in both. A row whose smallest reduced score is
below every other by more than twice the sum of these (with ``‖c‖`` the largest
centre norm) has the same nearest centre in both (the error can move both scores); the
bound is doubled again for margin.

Split TF32 (``"tf32x3"``). Each float32 input is split into two TF32 numbers, ``x =
xₕ + xₗ + ε`` (Veltkamp's splitting, twice: ``xₕ`` is ``x`` rounded to nearest at 11
bits, ``u = 2⁻¹¹``, ``xₗ`` the remainder rounded again, ``|ε| <= u²|x|``), and the
product is ``xₕ·cₕ + xₕ·cₗ + xₗ·cₕ``: one TF32 product of inner dimension ``3d`` on
tensor cores, whose inputs TF32 represents exactly and whose products float32
represents exactly. The terms left out add up to at most ``(3u² + 7u³)·Σ|xᵢcᵢ|``;
where the remainder is truncated instead (Triton's own split TF32 rounds ``xₕ`` to
nearest and hands the remainder to the tensor cores as float32), ``|ε| < 2u²|x|`` and
they add up to at most ``(5u² + 9u³)·Σ|xᵢcᵢ|``, which the bound takes. Summing the
``3d`` terms in float32 adds ``γ₃d·(1 + 5u)·Σ|xᵢcᵢ|``: a bound about 60 times tighter
than TF32's for ``d = 128`` (comparable to the exact path's own rounding), so only rows
that are nearly tied in float32 itself are re-checked, for three times TF32's work.
Where a backend computes it, the rows TF32 or bfloat16 cannot settle are re-checked
with split TF32 first, and only those it cannot settle either with the exact product.
"""

from __future__ import annotations

from typing import Any

from .backends import Array, Backend
from .backends._base import clamp

PRECISIONS = ("exact", "tf32", "tf32x3", "bf16")
#: the tensor-core product each reduced precision is computed with
PRODUCT = {"tf32": "tf32", "tf32x3": "tf32", "bf16": "bf16"}
#: the cheaper re-check of a precision's near ties, before the exact one: split TF32's
#: error is near float32's, so it sends on only the rows tied in float32 itself
RECHECK = {"tf32": "tf32x3", "bf16": "tf32x3"}
#: the relative error of converting a float32 input to each reduced format, by rounding
#: to nearest or by truncation: one unit in the last place (module docstring)
CONVERSION_ERROR = {"tf32": 2.0**-10, "bf16": 2.0**-7}
#: TF32's unit roundoff, for split TF32 (its high parts are rounded to nearest)
_TF32_ROUNDOFF = 2.0**-11
_FLOAT32_ROUNDOFF = 2.0**-24
#: Veltkamp's splitting constant 2¹³ + 1: float32's 24 bits rounded to TF32's 11
_SPLITTER = 8193.0
#: which of the three column blocks of the split rows (centres) are the low parts:
#: rows [xₕ, xₕ, xₗ] against centres [cₕ, cₗ, cₕ] multiply to xₕcₕ + xₕcₗ + xₗcₕ
ROW_PIECES, CENTER_PIECES = (False, False, True), (False, True, False)


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


def _gamma(terms: int) -> float:
    """The relative error bound of a float32 sum of ``terms`` terms."""
    e = _FLOAT32_ROUNDOFF
    return terms * e / (1.0 - terms * e)


def relative_product_error(precision: str, n_features: int) -> float:
    """``δ`` such that the reduced product of ``x`` and ``c`` and the exact path's
    differ by at most ``δ·‖x‖‖c‖`` (both products' errors; module docstring)."""
    gamma = _gamma(n_features)
    if precision == "tf32x3":  # remainders rounded or truncated: the larger bound
        u = _TF32_ROUNDOFF
        return 5.0 * u**2 + 9.0 * u**3 + _gamma(3 * n_features) * (1.0 + 5.0 * u) + gamma
    u = CONVERSION_ERROR[precision]
    return 2.0 * u + u * u + 2.0 * gamma


def error_bound(row_norms: Array, max_center_norm: Any, n_features: int, precision: str) -> Array:
    """How far, at most, each row's ``precision`` scores can be from the exact path's
    scores (see the module docstring), with a safety factor of two."""
    delta = relative_product_error(precision, n_features)
    product = 2.0 * row_norms * max_center_norm * delta
    squares = 2.0 * _FLOAT32_ROUNDOFF * (row_norms + max_center_norm) ** 2
    return 2.0 * (product + squares)


def split_tf32(x: Array) -> tuple[Array, Array]:
    """``x`` (float32) as two TF32 numbers ``(high, low)``: ``high`` is ``x`` rounded to
    nearest at 11 significant bits, ``low`` the remainder ``x − high`` (exact in float32)
    rounded the same way (Veltkamp's splitting, twice). Each step is one float32
    operation rounded to nearest, so every backend splits bitwise alike; ``|x|`` must be
    below ``float32 max / 8193`` (the solver's working units always are)."""
    high = _veltkamp_high(x)
    return high, _veltkamp_high(x - high)


def _veltkamp_high(x: Array) -> Array:
    scaled = x * _SPLITTER
    return scaled - (scaled - x)


def split_columns(xp: Any, x: Array, pieces: tuple[bool, bool, bool]) -> Array:
    """The ``(m, 3d)`` matrix of three column blocks, each the high (False) or the low
    (True) TF32 part of ``x`` of shape ``(m, d)``: :data:`ROW_PIECES` for the rows,
    :data:`CENTER_PIECES` for the centres of a split TF32 product."""
    high, low = split_tf32(x)
    return xp.concat([low if is_low else high for is_low in pieces], axis=1)


def near_ties(
    xp: Any,
    X: Array,
    centers_sq: Array,
    best: Array,
    second: Array,
    precision: str,
    rows_sq: Array | None = None,
) -> tuple[Array, Array]:
    """Which rows of ``X`` have another centre within the margin of the best at
    ``precision`` (their two smallest reduced scores ``best`` and ``second`` closer than
    the two scores' worst-case errors together), and that margin per row. ``rows_sq``:
    the rows' squared norms when known (else computed from ``X``)."""
    row_norms = xp.sqrt(xp.sum(X * X, axis=1) if rows_sq is None else rows_sq)
    max_center_norm = xp.max(xp.sqrt(centers_sq))
    margin = 2.0 * error_bound(row_norms, max_center_norm, int(X.shape[1]), precision)
    return second <= best + margin, margin


def reduced_nearest_two(
    backend: Backend, X: Array, scaled: Array, centers_sq: Array, precision: str
) -> tuple[Array, Array, Array]:
    """``backend.nearest_two`` of the ``precision`` product ``X·scaledᵀ``: for split TF32
    one TF32 product of the split inputs (inner size 3d), else the backend's reduced
    product."""
    if precision == "tf32x3":
        product = backend.reduced_product(
            backend.split_columns(X, ROW_PIECES),
            backend.split_columns(scaled, CENTER_PIECES),
            "tf32",
        )
    else:
        product = backend.reduced_product(X, scaled, precision)
    return backend.nearest_two(product, centers_sq)


def reduced_labels(
    backend: Backend,
    X: Array,
    centers: Array,
    centers_sq: Array,
    precision: str,
    rows_sq: Array | None = None,
) -> tuple[Array, Array]:
    """Nearest centre of each row of ``X`` from a ``precision`` product, and which rows
    have a near tie (their labels are provisional); no read of the device. ``rows_sq``:
    the rows' squared norms when known."""
    labels, best, second = backend.reduced_nearest_two(X, -2.0 * centers, centers_sq, precision)
    near, _ = near_ties(backend.xp, X, centers_sq, best, second, precision, rows_sq)
    return labels, near


def recheck_precision(backend: Backend, precision: str) -> str:
    """The precision the near ties of a ``precision`` product are assigned again with:
    split TF32 where the backend computes it and it is cheaper, else exact."""
    follow = RECHECK.get(precision)
    return follow if follow is not None and backend.computes_reduced(follow) else "exact"


def assign_reduced(
    backend: Backend, X: Array, centers: Array, centers_sq: Array, precision: str
) -> Array:
    """Nearest centre of each row of ``X`` from a ``precision`` product, the rows with
    a near tie assigned again, at last exactly (same result as ``backend.assign``).
    Reads the device once for the number of near ties (the Lloyd pass defers them
    instead: ``kmeans_gpu/_assign.py``)."""
    xp = backend.xp
    labels, near = reduced_labels(backend, X, centers, centers_sq, precision)
    redo = xp.nonzero(near)[0]
    count = int(redo.shape[0])
    if count == 0:
        return labels
    follow = recheck_precision(backend, precision)
    if follow != "exact":  # it settles all but the rows tied in float32 itself
        again = assign_reduced(backend, xp.take(X, redo, axis=0), centers, centers_sq, follow)
    else:
        again = _assign_exactly(backend, X, redo, centers, centers_sq)
    return merge_labels(xp, labels, near, again)


def merge_labels(xp: Any, labels: Array, near: Array, again: Array, before: Any = 0) -> Array:
    """``labels`` with the rows marked ``near`` taking, in order, the labels ``again``
    (row i's at the number of near rows before it, plus ``before``): no scatter, which
    the array API lacks."""
    position = xp.cumulative_sum(xp.astype(near, xp.int64)) + before
    # (clipped at the end of ``again`` too: a pass that settled only the first rows
    # marked, up to a capacity, is run again when there were more)
    last = int(again.shape[0]) - 1
    return xp.where(near, xp.take(again, clamp(xp, position - 1, 0, last)), labels)


def _assign_exactly(
    backend: Backend, X: Array, redo: Array, centers: Array, centers_sq: Array
) -> Array:
    """Exact labels of the rows ``redo`` of ``X``, in pieces whose scores take no more
    memory than the rows of X (a backend that writes no scores for the reduced product
    may have been given many rows)."""
    xp = backend.xp
    count = int(redo.shape[0])
    piece = max(1, int(X.shape[0]) * int(X.shape[1]) // int(centers.shape[0]))
    if count <= piece:
        return backend.assign(xp.take(X, redo, axis=0), centers, centers_sq)
    # each piece's labels copied: backend.assign may reuse its buffer
    return xp.concat(
        [
            xp.asarray(
                backend.assign(xp.take(X, redo[a : a + piece], axis=0), centers, centers_sq),
                copy=True,
            )
            for a in range(0, count, piece)
        ]
    )
