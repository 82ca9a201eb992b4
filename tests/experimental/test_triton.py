"""The Triton kernel (``CupyBackend(triton=True)``).

Without a GPU it runs in Triton's interpreter on torch CPU tensors (skipped unless
``triton`` and ``torch`` are installed): its tiling, masks, ties, the merge of the tiles'
best and second-best scores, and its step mode (rows centred in the kernel, near ties
marked, the other rows summed with atomics) are checked against the array API path on
small-integer data, where every product is exact. The interpreter computes the products
in float32, so what TF32 does to them is the ``gpu`` tests' part; Triton's own compiler
checks here that every launch shape fits the GPUs it is meant for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import array_api_compat.numpy as compat_np
import numpy as np
import pytest

from kmeans_gpu import kmeans
from kmeans_gpu._api import prepare
from kmeans_gpu._assign import centers_for
from kmeans_gpu.backends import Backend
from kmeans_gpu.experimental import TensorCores, _triton
from kmeans_gpu.experimental import kmeans as experimental_kmeans
from kmeans_gpu.experimental._cuda import rescale_factors
from kmeans_gpu.experimental._precision import PRECISIONS, TF32, Margin
from tests.checks import assert_same_up_to_order


def run_kernel(X, scaled, centers_sq, precision, hopper=True):
    """``_triton.launch`` on torch CPU tensors, shaped as on a device of compute
    capability 9.0 (``hopper``) or 8.x; NumPy results."""
    import torch

    n, d = X.shape
    labels = torch.empty(n, dtype=torch.int32)
    best, second = torch.empty(n), torch.empty(n)
    x, s, c = (torch.from_numpy(np.ascontiguousarray(a)) for a in (X, scaled, centers_sq))
    config = _triton.config_for(precision, d, hopper)
    _triton.launch(x, s, c, labels, best, second, n, scaled.shape[0], d, precision, config)
    return labels.numpy(), best.numpy(), second.numpy()


def run_step(problem, centers, start, stop, precision, margin, hopper=True):
    """``_triton.launch`` of a pass's share on torch CPU tensors, as ``lloyd_step``
    launches it on CuPy: labels, near ties, float32 sums and weights, NumPy."""
    import torch

    def tensor(a):
        return torch.from_numpy(np.ascontiguousarray(a))

    X = problem.X[start:stop]
    n, d = X.shape
    k = centers.n_clusters
    w = None if problem.weights is None else problem.weights[start:stop]
    labels, near = torch.empty(n, dtype=torch.int32), torch.empty(n, dtype=torch.int8)
    sums, weight_sums = torch.zeros(k, d), torch.zeros(k)
    step = _triton.Step(
        mean=tensor(problem.mean.astype(np.float32)),
        factors=rescale_factors(problem.scale_exponent),
        rows_sq=tensor(problem.squared_row_norms[start:stop]),
        max_center_norm=tensor(np.reshape(centers.largest_norm, (1,))),
        margin=margin,
        weights=None if w is None else tensor(w),
        near=near,
        sums=sums,
        weight_sums=weight_sums,
    )
    x = tensor(X)
    scaled = tensor(-2.0 * centers.working)
    config = _triton.config_for(precision, d, hopper)
    _triton.launch(x, scaled, tensor(centers.sq), labels, x, x, n, k, d, precision, config, step)
    return labels.numpy(), near.numpy().astype(bool), sums.numpy(), weight_sums.numpy()


def plain_nearest_two(X, scaled, centers_sq):
    return TensorCores(compat_np, "plain").nearest_two_of(X @ scaled.T, centers_sq)


#: (n, d, k): one centre; partial tiles; rows kept (d ≤ 128) or sliced (d = 300); 16 tiles
SHAPES = ((1000, 3, 1), (700, 16, 130), (129, 128, 64), (300, 300, 70), (130, 128, 1000))


@pytest.mark.parametrize("name", ["tf32", "tf32x3"])
@pytest.mark.parametrize(("n", "d", "k"), SHAPES)
def test_kernel_matches_the_plain_path_exactly_on_exact_data(interpreter, name, n, d, k):
    """Every launch shape (kept rows or slices; 64 or 128 rows a block: sm_90's shape
    for TF32, sm_80's for split TF32)."""
    rng = np.random.default_rng(d)
    X = rng.integers(-3, 4, size=(n, d)).astype(np.float32)
    C = rng.integers(-3, 4, size=(k, d)).astype(np.float32)
    C[k // 2] = C[0]  # an exact tie between centres of different tiles (k > 64)
    C[min(k - 1, 5)] = C[0]  # and within the first tile
    centers_sq = (C * C).sum(axis=1)
    got = run_kernel(X, -2.0 * C, centers_sq, PRECISIONS[name], hopper=name == "tf32")
    want = plain_nearest_two(X, -2.0 * C, centers_sq)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    assert got[0].dtype == np.int32
    if k == 1:
        assert np.all(np.isinf(got[2]))
    else:
        assert np.all(got[0] != k // 2) and np.all(got[0] != min(k - 1, 5))  # first wins


def test_launch_shapes():
    assert _triton.config_for(TF32, 128, True).resident
    assert not _triton.config_for(TF32, 129, True).resident  # padded to 256: too wide
    assert _triton.config_for(PRECISIONS["tf32x3"], 3, False) == _triton.CONFIGS["tf32x3", False]
    with pytest.raises(ValueError, match="too wide to keep"):
        _triton.launch(*[None] * 6, 10, 10, 300, TF32, _triton.CONFIGS["tf32", True])


class TritonNumpy(TensorCores):
    """NumPy with its reduced products through the Triton kernel in the interpreter:
    the nearest two (``step=False``), or each chunk's whole share (``step=True``), as
    ``CupyBackend(triton=True)`` uses them."""

    def __init__(self, step: bool = False) -> None:
        super().__init__(compat_np, "triton-numpy")
        self.step = step
        self.kernel_calls = self.step_calls = 0

    def computes(self, precision):
        return True

    def reduced_nearest_two(self, rows, centers, precision):
        self.kernel_calls += 1
        return run_kernel(rows, -2.0 * centers.working, centers.sq, precision)

    def reduced_step(self, problem, centers, start, stop, precision, margin):
        if not self.step:
            return super().reduced_step(problem, centers, start, stop, precision, margin)
        self.step_calls += 1
        labels, near, sums, weights = run_step(problem, centers, start, stop, precision, margin)
        return labels, near, sums.astype(np.float64), weights.astype(np.float64)


#: (n, d, k, scale): kept rows, slices, one centre; data the solver rescales, or not
STEP_SHAPES = (
    (700, 16, 130, 1.0),
    (300, 300, 70, 2.0**66),
    (500, 8, 1, 1.0),
    (129, 128, 64, 2.0**-68),
)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize(("n", "d", "k", "scale"), STEP_SHAPES)
def test_step_mode_is_the_generic_step_in_one_pass(interpreter, n, d, k, scale, weighted):
    """The kernel's step mode (stored rows centred and rescaled in the kernel, near ties
    marked, the other rows summed with atomics) gives what the array API step gives
    from the same kernel's nearest two: the same labels and near ties, bitwise, and the
    same sums up to float32 rounding."""
    precision = PRECISIONS["tf32x3" if weighted else "tf32"]
    rng = np.random.default_rng(d + k)
    X = ((rng.normal(size=(n, d)) + 40.0) * scale).astype(np.float32)  # off-centre
    w = rng.uniform(0.5, 2, size=n).astype(np.float32) if weighted else None
    generic = TritonNumpy()
    problem, _, _ = prepare(X, w, generic)
    assert (problem.scale_exponent != 0) == (scale != 1.0)
    C = X[rng.choice(n, k, replace=False)] + np.float32(0.01 * scale)
    C[k // 2] = C[0]  # tied centres: near ties for every row near them
    centers = centers_for(problem, C)
    margin = Margin.of(problem, precision)
    want = generic.reduced_step(problem, centers, 0, n, precision, margin)
    got = run_step(problem, centers, 0, n, precision, margin, hopper=not weighted)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert k == 1 or got[1].any()  # near ties happened
    scale_of_sums = np.abs(want[2]).max()
    np.testing.assert_allclose(got[2], want[2], rtol=1e-5, atol=1e-5 * scale_of_sums)
    np.testing.assert_allclose(got[3], want[3], rtol=1e-6)


@pytest.mark.parametrize(
    ("step", "name"), [(False, "tf32"), (True, "tf32x3")], ids=["nearest two", "step mode"]
)
def test_a_fit_through_the_kernel_equals_the_exact_fit(interpreter, step, name):
    """TF32 through the nearest-two kernel (its near ties through the kernel's split
    TF32 too), split TF32 through the step mode: the exact fit's labels, its centres up
    to the order of the sums (the step's float32 atomics: to float32 rounding)."""
    rng = np.random.default_rng(2)
    X = np.vstack([rng.normal(loc=m, size=(200, 4)) for m in range(4)]).astype(np.float32)
    backend = TritonNumpy(step)
    options = {"random_state": 0, "backend": backend, "max_iter": 8, "tol": 0.0}
    exact = kmeans(X, 8, **options)
    got = experimental_kmeans(X, 8, precision=name, **options)
    np.testing.assert_array_equal(got[1], exact[1])
    if step:
        np.testing.assert_allclose(got[0], exact[0], rtol=1e-5, atol=1e-5)
    else:
        assert_same_up_to_order(got[0], exact[0])
    assert (backend.step_calls if step else backend.kernel_calls) >= 8 and got[3] == exact[3]


#: Compiles the kernel (not interpreted) for one device, each launch shape the library
#: uses there, in both modes (nearest two; a pass's share, weighted), and prints what
#: each takes: shared memory, registers, stack (spills).
COMPILE = """
import json, re, subprocess, sys, tempfile
from pathlib import Path
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from kmeans_gpu.experimental import _triton
from kmeans_gpu.experimental._precision import PRECISIONS
from kmeans_gpu.experimental._triton_kernel import kmeans_gpu_triton_assign as kernel

capability, hopper = int(sys.argv[1]), sys.argv[1] >= "90"
tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
pointers = ("X", "S", "CENTERS_SQ", "LABELS", "BEST", "SECOND", "MEAN", "ROWS_SQ",
            "MAX_CENTER_NORM", "W", "NEAR", "SUMS", "WEIGHT_SUMS")
kinds = {"LABELS": "*i32", "NEAR": "*i8"}
signature = {name: kinds.get(name, "*fp32") for name in pointers}
signature |= {name: "i32" for name in ("n", "k", "d")}
signature |= {name: "fp32" for name in ("f1", "f2", "margin_squares", "margin_product")}
report = []
for precision in PRECISIONS.values():
    for d in (128, 300):
        for step in (False, True):
            config = _triton.config_for(precision, d, hopper)
            constexprs = dict(BLOCK_M=config.block_m, BLOCK_N=config.block_n,
                              D_PAD=_triton._padded(d), RESIDENT=config.resident,
                              BLOCK_K=_triton.FEATURE_SLICE, PRECISION=precision.name,
                              STEP=step, WEIGHTED=step)
            source = ASTSource(fn=kernel, signature=signature | dict.fromkeys(constexprs,
                               "constexpr"), constexprs=constexprs)
            compiled = triton.compile(source, target=GPUTarget("cuda", capability, 32),
                                      options=dict(num_warps=config.num_warps,
                                                   num_stages=config.num_stages))
            with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
                cubin.write(compiled.asm["cubin"]); cubin.flush()
                usage = subprocess.run([str(tool), "--dump-resource-usage", cubin.name],
                                       capture_output=True, text=True, check=True).stdout
            fields = dict(f.split(":") for f in usage.split() if f.count(":") == 1)
            report.append(dict(precision=precision.name, d=d, step=step,
                               resident=config.resident, shared=compiled.metadata.shared,
                               registers=int(fields["REG"]), stack=int(fields["STACK"]),
                               wgmma="wgmma" in compiled.asm["ptx"],
                               atomics=sorted(set(re.findall(
                                   r"(?:atom|red)[.a-z_]*\\.add\\.f32", compiled.asm["ptx"])))))
print(json.dumps(report))
"""
#: the most shared memory one block may have: A100 (sm_80), H100/H200 (sm_90)
SHARED_LIMIT = {"80": 166_912, "90": 232_448}


@pytest.mark.parametrize("capability", ["80", "90"])
def test_kernel_compiles_for_the_gpus_and_fits_them(capability):
    """Triton compiles the kernel for sm_80 and sm_90 without a GPU (its own ptxas):
    every launch shape the library picks there fits the device's shared memory, takes
    tensor cores (wgmma on sm_90), and on sm_90 spills no register."""
    pytest.importorskip("triton")
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    out = subprocess.run(
        [sys.executable, "-c", COMPILE, capability],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.splitlines()[-1])
    print(json.dumps(report, indent=1))
    assert len(report) == 8
    for shape in report:
        assert shape["shared"] <= SHARED_LIMIT[capability], shape
        # the step's sums: float atomics, relaxed (no ordering needed, no fence)
        assert bool(shape["atomics"]) == shape["step"], shape
        assert all("acq" not in op and "rel." not in op for op in shape["atomics"]), shape
        if capability == "90":
            assert shape["wgmma"] and shape["stack"] == 0, shape


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["tf32", "tf32x3"])
def test_cupy_triton_kernel_matches_the_plain_path(name, rng):
    """Compiled for the device: on exact data (small integers, every TF32 product
    exact) the nearest two are the plain path's, bitwise; the step mode marks the
    generic step's near ties (their margins may round apart where the compiler fuses
    a multiply and an add) and sums the rows it settles as the plain sums do."""
    from kmeans_gpu.backends import _cupy_has_device
    from kmeans_gpu.experimental import CupyBackend

    if not (_cupy_has_device() and _triton.available()):
        pytest.skip("needs CuPy with a CUDA device, triton and torch")
    import cupy

    backend = CupyBackend(triton=True)
    precision = PRECISIONS[name]
    if not backend.computes(precision):
        pytest.skip("this GPU has no TF32 tensor cores")
    for n, d, k in ((700, 16, 130), (300, 300, 70), (5000, 64, 1000)):
        X = cupy.asarray(rng.randint(-3, 4, size=(n, d)).astype(np.float32))
        C = cupy.asarray(rng.randint(-3, 4, size=(k, d)).astype(np.float32))
        C[k // 2] = C[0]
        centers_sq = (C * C).sum(axis=1)
        got = _triton.nearest_two(X, -2.0 * C, centers_sq, precision)
        want = TensorCores.nearest_two_of(backend, X @ (-2.0 * C).T, centers_sq)
        for a, b in zip(got, want, strict=True):
            cupy.testing.assert_array_equal(a, b)
    X = cupy.asarray(((rng.normal(size=(20_000, 64)) + 5.0) * 2.0**40).astype(np.float32))
    problem, _, _ = prepare(X, None, backend)
    centers = centers_for(problem, X[cupy.asarray(rng.choice(20_000, 300, replace=False))])
    margin = Margin.of(problem, precision)
    generic = TensorCores.reduced_step(backend, problem, centers, 0, 20_000, precision, margin)
    got = backend.reduced_step(problem, centers, 0, 20_000, precision, margin)
    both = ~(got[1] | generic[1])
    assert float(cupy.mean((got[1] != generic[1]).astype(cupy.float32))) < 1e-3
    cupy.testing.assert_array_equal(got[0][both], generic[0][both])
    labels = cupy.where(got[1], centers.n_clusters, got[0])  # the rows it settles
    sums, weights = Backend.cluster_sums(backend, X, problem.origin, labels, None, 301)
    cupy.testing.assert_allclose(got[2], sums[:-1], rtol=1e-4, atol=1e-3 * float(abs(sums).max()))
    cupy.testing.assert_allclose(got[3], weights[:-1])
