"""Input checks: every public entry point turns what it is given into a float matrix on
the compute backend, or raises a ``TypeError``/``ValueError`` that names the problem.

Nothing here writes to the caller's arrays.
"""

from __future__ import annotations

import logging
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backends import Array, Backend, backend_for_array, get_backend

logger = logging.getLogger("kmeans_gpu")


class DimensionMismatchError(ValueError, RuntimeError):
    """Centres and points have different numbers of features.

    A ``ValueError``; also a ``RuntimeError``, which is what the blog post's ``KMeansND``
    raised.
    """


@dataclass(frozen=True)
class Placement:
    """Where the computation runs and where its results go back to.

    ``source`` is the backend of the caller's array (NumPy for lists and other
    array-likes) and ``device`` the caller's device; ``compute`` runs the solver.
    ``dlpack``: the caller's arrays are on a CUDA device and the computation is on CuPy,
    so arrays cross by DLPack, without a copy, both ways (tested with torch on an H200).
    """

    source: Backend
    device: Any
    compute: Backend
    compute_device: Any = None
    dlpack: bool = False

    def to_compute(self, x: Any, dtype: Any = None) -> Array:
        if self.compute is not self.source and self.source.owns(x):
            x = self.compute.xp.from_dlpack(x) if self.dlpack else self.source.to_numpy(x)
        return self.compute.asarray(x, dtype=dtype, device=self.compute_device)

    def to_output(self, x: Array) -> Array:
        if self.compute is self.source:
            return x
        if self.dlpack:
            return self.source.xp.from_dlpack(x)
        return self.source.asarray(self.compute.to_numpy(x), device=self.device)


def _on_cuda(x: Any) -> bool:
    """Whether an array says (through DLPack) that it lives on a CUDA device."""
    try:
        return int(x.__dlpack_device__()[0]) == 2  # kDLCUDA
    except (AttributeError, TypeError, ValueError, RuntimeError):
        return False


def _is_sparse(x: Any) -> bool:
    module = type(x).__module__
    return module.startswith(("scipy.sparse", "cupyx.scipy.sparse"))


def resolve_backend(X: Any, backend: str | Backend, device: Any = None) -> tuple[Any, Placement]:
    """Find the caller's array library and the backend that will compute.

    ``backend="auto"`` keeps NumPy, CuPy and other array API arrays on their own library;
    other input (lists, data frames, ...) goes to CuPy when it has a device, else NumPy.
    ``device`` is the compute backend's device to use (default: X's own device when X
    already belongs to the compute backend). Returns X as an array of its source library
    and the placement.
    """
    if _is_sparse(X):
        return X, _sparse_placement(X, backend)
    found = backend_for_array(X)
    is_array = found is not None
    if found is None:
        X = _host_array(X)
    source = found if found is not None else get_backend("numpy")
    if isinstance(backend, Backend):
        compute = backend
    elif not isinstance(backend, str):
        raise TypeError(f"backend must be a string or a Backend, got {type(backend).__name__}")
    elif backend == "auto" and is_array:
        compute = source
    else:
        compute = get_backend(backend)
    if backend == "auto":
        logger.info("backend='auto': computing on %r", compute.name)
    if device is None and compute is source:
        device = source.device(X)
    dlpack = compute is not source and compute.name == "cupy" and _on_cuda(X)
    return X, Placement(source, source.device(X), compute, device, dlpack)


def _sparse_placement(X: Any, backend: str | Backend) -> Placement:
    """Where a sparse matrix is computed: SciPy's on the NumPy backend; CuPy's are
    refused (not supported yet)."""
    if type(X).__module__.startswith("cupyx"):
        raise TypeError(
            "CuPy sparse matrices (cupyx.scipy.sparse) are not supported: pass a dense "
            "CuPy array, or a SciPy sparse matrix (computed on the NumPy backend)"
        )
    name = backend.name if isinstance(backend, Backend) else backend
    if not isinstance(name, str):
        raise TypeError(f"backend must be a string or a Backend, got {type(backend).__name__}")
    if name not in ("auto", "numpy"):
        raise ValueError(
            f"sparse input is computed on the NumPy backend, not backend={name!r}: pass "
            "backend='numpy' (or 'auto'), or a dense array"
        )
    from .backends._sparse import make_backend

    return Placement(get_backend("numpy"), "cpu", make_backend(), "cpu")


def _check_sparse(X: Any, name: str) -> Any:
    """A validated copy or view of a SciPy sparse X as a canonical CSR array of float32
    or float64 (other real types become float64)."""
    from .backends._sparse import as_csr

    if len(X.shape) != 2:
        raise ValueError(f"Expected a 2-D sparse matrix for {name}, got shape {X.shape}")
    _check_shape(X.shape, name)
    kind = np.dtype(X.dtype).kind
    if kind == "c":
        raise ValueError(f"Complex data not supported: {name} has dtype {X.dtype}")
    if kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got a sparse matrix of dtype {X.dtype}")
    X = as_csr(X)
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    if not np.isfinite(X.data).all():
        raise ValueError(f"Input {name} contains NaN or infinity")
    return X


def _host_array(X: Any) -> np.ndarray:
    try:
        return np.asarray(X)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"X cannot be read as a 2-D array: {exc}") from exc


def _float_dtype_of(X: Any, xp: Any, name: str) -> Any:
    """The float dtype the solver uses for X: float32 and float64 stay, the rest is
    float64. Complex, string and object data are refused."""
    dtype = X.dtype
    if isinstance(X, np.ndarray):
        if dtype.kind in "USV":
            raise TypeError(f"{name} must be numeric, got an array of dtype {dtype}")
        if dtype.kind == "O":
            return np.float64  # converted (or refused) element by element below
    if xp.isdtype(dtype, "complex floating"):
        raise ValueError(f"Complex data not supported: {name} has dtype {dtype}")
    if dtype == xp.float32 or dtype == xp.float64:
        return dtype
    if xp.isdtype(dtype, ("bool", "integral", "real floating")):
        return xp.float64
    raise TypeError(f"{name} must be numeric, got an array of dtype {dtype}")


def check_array(
    X: Any,
    *,
    backend: str | Backend = "auto",
    name: str = "X",
    dtype: Any = None,
    device: Any = None,
    accept_sparse: bool = True,
) -> tuple[Array, Placement]:
    """Validate X and put a float copy of it (or X itself) on the compute backend.

    Returns ``(X, placement)``; X is 2-D, finite, float32 or float64 (or ``dtype``, a
    dtype of the compute backend), and has at least one row and one column. A SciPy
    sparse X (when ``accept_sparse``) comes back as a canonical CSR array for the
    sparse NumPy backend.
    """
    if _is_sparse(X) and not accept_sparse:
        raise TypeError(f"{name} must be a dense array, got a sparse matrix")
    X, placement = resolve_backend(X, backend, device)
    if placement.compute.sparse and _is_sparse(X):
        return _check_sparse(X, name), placement
    source = placement.source
    xp = source.xp
    target = _float_dtype_of(X, xp, name)
    if isinstance(X, np.ndarray) and X.dtype.kind == "O":
        try:
            X = X.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be numeric: {exc}") from exc
        if np.iscomplexobj(X):
            raise ValueError(f"Complex data not supported in {name}")
    ndim = len(X.shape)
    if ndim != 2:
        raise ValueError(
            f"Expected a 2-D array for {name} of shape (n_samples, n_features), got a "
            f"{ndim}-D array of shape {tuple(X.shape)}"
            + (
                ". Reshape your data either using X.reshape(-1, 1) if it has a single "
                "feature or X.reshape(1, -1) if it has a single sample"
                if ndim == 1
                else ""
            )
        )
    _check_shape(X.shape, name)
    if dtype is None and X.dtype != target:
        X = xp.astype(X, target)
    X = placement.to_compute(X)
    if dtype is not None and X.dtype != dtype:
        X = placement.compute.xp.astype(X, dtype)
    if not _all_finite(placement.compute.xp, X):
        raise ValueError(f"Input {name} contains NaN or infinity")
    return X, placement


def _check_shape(shape: Any, name: str) -> None:
    n, d = shape
    if n == 0:
        raise ValueError(
            f"Found array with 0 sample(s) (shape={tuple(shape)}) while a minimum of 1 "
            f"is required: {name} is empty"
        )
    if d == 0:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={tuple(shape)}) while a minimum of 1 "
            f"is required: {name} has no features"
        )


def _all_finite(xp: Any, X: Array) -> bool:
    """Whether every value of the 2-D ``X`` is finite: block by block (temporaries of a
    million values), combined on the device and read once."""
    n, d = int(X.shape[0]), int(X.shape[1])
    step = max(1, (1 << 20) // d)
    finite = None
    for start in range(0, n, step):
        block = xp.all(xp.isfinite(X[start : min(start + step, n), ...]))
        finite = block if finite is None else finite & block
    return bool(finite)


def check_sample_weight(
    sample_weight: Any, n_samples: int, like: Array, placement: Placement
) -> Array | None:
    """Validate weights: a scalar or 1-D, length n_samples, finite, >= 0, sum > 0.

    Returns None for ``None`` (every weight is one), else a float64 array on the
    compute backend (a scalar weighs every sample alike).
    """
    if sample_weight is None:
        return None
    xp = placement.compute.xp
    device = placement.compute.device(like)
    if isinstance(sample_weight, numbers.Real) and not isinstance(sample_weight, bool):
        value = float(sample_weight)
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"a scalar sample_weight must be finite and > 0, got {value}")
        return xp.full(n_samples, value, dtype=xp.float64, device=device)
    if _is_sparse(sample_weight):
        raise TypeError("sample_weight must be dense")
    source = backend_for_array(sample_weight)
    if source is None:
        try:
            sample_weight = np.asarray(sample_weight, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"sample_weight must be numeric: {exc}") from exc
        source = get_backend("numpy")
    own = source.xp  # the weights' own namespace tells their dtype's kind
    if own.isdtype(sample_weight.dtype, "complex floating"):
        raise ValueError("sample_weight must be real, got complex values")
    if not own.isdtype(sample_weight.dtype, ("bool", "integral", "real floating")):
        raise TypeError(
            f"sample_weight must be numeric, got an array of dtype {sample_weight.dtype}"
        )
    if tuple(sample_weight.shape) != (n_samples,):
        raise ValueError(
            f"sample_weight.shape == {tuple(sample_weight.shape)}, expected ({n_samples},): "
            "one weight per sample"
        )
    if source is not placement.compute:
        sample_weight = source.to_numpy(sample_weight)
    w = xp.astype(placement.compute.asarray(sample_weight, device=device), xp.float64)
    finite, negative, total = placement.compute.to_numpy(
        xp.stack(
            [
                xp.astype(xp.all(xp.isfinite(w)), xp.float64),
                xp.astype(xp.any(w < 0), xp.float64),
                xp.astype(xp.sum(w), xp.float64),
            ]
        )
    )
    if not finite:
        raise ValueError("sample_weight contains NaN or infinity")
    if negative:
        raise ValueError("sample_weight must be non-negative; negative weights were given")
    if not total > 0:
        raise ValueError("sample_weight sums to zero: at least one weight must be positive")
    return w


def check_n_clusters(n_clusters: Any, n_samples: int) -> int:
    n_clusters = check_positive_int(n_clusters, "n_clusters")
    if n_clusters > n_samples:
        raise ValueError(
            f"n_samples={n_samples} should be >= n_clusters={n_clusters}: cannot form more "
            "clusters than there are samples"
        )
    return n_clusters


def check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if int(value) < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def check_tol(tol: Any) -> float:
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
        raise TypeError(f"tol must be a real number, got {tol!r}")
    if not float(tol) >= 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    return float(tol)


def check_random_state(seed: Any) -> np.random.RandomState:
    """A RandomState from None, an int, a RandomState or a Generator."""
    if seed is None:
        return np.random.mtrand._rand
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        if not 0 <= int(seed) < 2**32:
            raise ValueError(f"random_state must be in [0, 2**32 - 1], got {int(seed)}")
        return np.random.RandomState(int(seed))
    if isinstance(seed, np.random.RandomState):
        return seed
    if isinstance(seed, np.random.Generator):
        return np.random.RandomState(seed.bit_generator)
    raise ValueError(f"random_state must be None, an int or a RandomState, got {seed!r}")


#: The smallest working memory accepted, in bytes.
MIN_WORKING_MEMORY = 1024


def check_working_memory(value: Any) -> int | None:
    """``working_memory``: None (the backend's default) or a number of bytes."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"working_memory must be a number of bytes (an integer) or None, got {value!r}"
        )
    if int(value) < MIN_WORKING_MEMORY:
        raise ValueError(
            f"working_memory must be at least {MIN_WORKING_MEMORY} bytes, got {value}"
        )
    return int(value)
