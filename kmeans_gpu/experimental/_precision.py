"""Reduced-precision distance products and how far they can be from the exact scores.

Tensor cores multiply float32 matrices several times faster when the inputs are cut to
TF32 (11 significant bits) and the products summed in float32. A reduced-precision
pass takes each row's nearest centre from such a product, and settles exactly, as the
core's pass does, every row whose two best reduced scores are closer than their
worst-case errors could separate: its labels are the core's.

The bound. The core's fast score ``s = ‖c‖² − 2x·c`` of a working row ``x`` is within
``δ·(‖x‖ + C)²`` of the exact score of the row and centre as given (``δ = γ(d + 8)``,
``C`` the largest centre norm; ``kmeans_gpu/_assign.py``). That budget covers the
float32 product (``γ(d)·2‖x‖‖c‖``), ``‖c‖²``, the final addition and the rounding of
the working rows and centres. A reduced product of ``x`` and ``−2c`` is off the exact
product of the same float32 values by at most ``2‖x‖‖c‖·ρ`` (:meth:`Precision.
relative_error`); everything else in the score is computed as in the core. So a
reduced score is within ``E = 2ρ‖x‖C + δ(‖x‖ + C)²`` of the exact score (counting a
float32 product's error twice, which is safe). A row whose two smallest reduced scores
are more than ``2E`` apart has the exact nearest centre as its smallest; the margin is
``4E`` (doubled for safety), which is the core's margin plus ``8ρ‖x‖C``.

TF32 (``"tf32"``). Each float32 input is converted with a relative error of at most
``u = 2⁻¹⁰``: a whole unit in the last place, not the half of rounding to nearest,
because tensor cores given float32 operands ignore their low bits (truncation; Triton's
TF32 ``tl.dot`` does this and a library kernel may), and the bound must hold either
way. The products of converted inputs are exact and summed in float32, so
``ρ = 2u + u² + 2γ(d)``, ``γ(m) = m·e/(1 − m·e)``, ``e = 2⁻²⁴`` (one ``γ(d)`` for the
sum, one to spare for a tensor core that accumulates with truncation).

Split TF32 (``"tf32x3"``). Each float32 input is split into two TF32 numbers, ``x =
xₕ + xₗ + ε`` (Veltkamp's splitting, twice: ``xₕ`` is ``x`` rounded to nearest at 11
bits, ``u = 2⁻¹¹``, ``xₗ`` the remainder rounded again, ``|ε| ≤ u²|x|``), and the
product is ``xₕ·cₕ + xₕ·cₗ + xₗ·cₕ``: one TF32 product of inner dimension ``3d``, whose
inputs TF32 represents exactly and whose products float32 represents exactly. The terms
left out add up to at most ``(3u² + 7u³)·Σ|xᵢcᵢ|``; where the remainder is truncated
instead (Triton's own split TF32 rounds ``xₕ`` to nearest and hands the remainder to
the tensor cores as float32), ``|ε| < 2u²|x|`` and they add up to at most
``(5u² + 9u³)·Σ|xᵢcᵢ|``, which the bound takes. Summing the ``3d`` terms in float32 adds
``γ(3d)·(1 + 5u)·Σ|xᵢcᵢ|``; one more ``γ(d)`` to spare. At ``d = 128`` that is about 60
times tighter than TF32's bound and near float32's own rounding, so only rows nearly
tied in float32 itself are settled exactly, for three times TF32's tensor-core work.
Where a backend computes it, TF32's near ties are checked with split TF32 first, and
only those it cannot settle either go to the exact settling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._problem import Problem
from ..backends import Array

#: TF32's unit roundoff (split TF32's high parts are rounded to nearest)
_TF32_ROUNDOFF = 2.0**-11
#: the relative error of converting a float32 input to TF32, rounded or truncated
_TF32_CONVERSION = 2.0**-10
_FLOAT32_ROUNDOFF = 2.0**-24
#: Veltkamp's splitting constant 2¹³ + 1: float32's 24 bits rounded to TF32's 11
_SPLITTER = 8193.0
#: which of the three column blocks of the split rows (centres) are the low parts:
#: rows [xₕ, xₕ, xₗ] against centres [cₕ, cₗ, cₕ] multiply to xₕcₕ + xₕcₗ + xₗcₕ
ROW_PIECES, CENTER_PIECES = (False, False, True), (False, True, False)


def _gamma(terms: int) -> float:
    """The relative error bound of a float32 sum of ``terms`` terms."""
    e = _FLOAT32_ROUNDOFF
    return terms * e / (1.0 - terms * e)


@dataclass(frozen=True)
class Precision:
    """A reduced-precision product: ``name`` (also Triton's ``input_precision``), and
    whether it is a TF32 product of split inputs (``split``)."""

    name: str
    split: bool

    def relative_error(self, n_features: int) -> float:
        """``ρ`` such that this product of ``x`` and ``c`` (float32, ``n_features``
        each) is within ``ρ·‖x‖‖c‖`` of their exact product (module docstring)."""
        gamma = _gamma(n_features)
        if self.split:
            u = _TF32_ROUNDOFF
            return 5.0 * u**2 + 9.0 * u**3 + _gamma(3 * n_features) * (1.0 + 5.0 * u) + gamma
        u = _TF32_CONVERSION
        return 2.0 * u + u * u + 2.0 * gamma


TF32 = Precision("tf32", split=False)
TF32X3 = Precision("tf32x3", split=True)
#: the reduced precisions by name
PRECISIONS = {p.name: p for p in (TF32, TF32X3)}


def check_precision(precision: Any) -> Precision | None:
    """The :class:`Precision` named ``precision`` (or given), None for ``"exact"``.

    Raises
    ------
    ValueError
        For any other value.
    """
    if isinstance(precision, Precision):
        return precision
    if precision == "exact":
        return None
    if precision not in PRECISIONS:
        choices = ("exact", *PRECISIONS)
        raise ValueError(f"precision must be one of {choices}, got {precision!r}")
    return PRECISIONS[precision]


def check_float32(dtype: Any, precision: Precision) -> None:
    """Refuse data that are not float32: a reduced product rounds float32 inputs.

    Raises
    ------
    ValueError
        When ``dtype`` is not float32.
    """
    if str(dtype).rpartition(".")[2] != "float32":  # (numpy, cupy, array_api_strict, torch)
        raise ValueError(
            f"precision={precision.name!r} rounds float32 inputs; the data are {dtype}: "
            "pass float32 data or precision='exact'"
        )


@dataclass(frozen=True)
class Margin:
    """A row's near-tie margin at a reduced precision, ``squares·(‖x‖ + C)² +
    product·‖x‖·C``: the core's margin (``squares = 4δ``, computed as
    :func:`~kmeans_gpu._assign.score_margin` computes it) plus ``8ρ‖x‖C``. The array
    API path and the Triton kernel compute it in this order of operations."""

    squares: float
    product: float

    @classmethod
    def of(cls, problem: Problem, precision: Precision) -> Margin:
        """The margin of ``precision`` products of the rows of ``problem``."""
        terms = problem.n_features + 8
        u = problem.unit_roundoff
        delta = terms * u / (1.0 - terms * u)
        return cls(4.0 * delta, 8.0 * precision.relative_error(problem.n_features))

    def __call__(self, xp: Any, rows_sq: Array, largest_norm: Array) -> Array:
        """The margin of rows of squared norms ``rows_sq`` against centres whose
        largest norm is ``largest_norm``."""
        norm = xp.sqrt(rows_sq)
        reach = norm + largest_norm
        return self.squares * reach * reach + self.product * norm * largest_norm


def split_tf32(x: Array) -> tuple[Array, Array]:
    """``x`` (float32) as two TF32 numbers ``(high, low)``: ``high`` is ``x`` rounded to
    nearest at 11 significant bits, ``low`` the remainder ``x − high`` (exact in float32)
    rounded the same way (Veltkamp's splitting, twice). Each step is one float32
    operation rounded to nearest, so every backend splits bitwise alike; ``|x|`` must be
    below ``float32 max / 8193`` (working units always are)."""
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
