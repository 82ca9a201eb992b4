"""The Triton nearest-two kernel (``KMEANS_GPU_CUDA_KERNELS=triton``).

Without a GPU it runs in Triton's interpreter on torch CPU tensors (skipped unless
``triton`` and ``torch`` are installed; CI installs both): its tiling, masks, ties and
the merge of the tiles' best and second-best scores are checked against the plain path
on small-integer data, where every product is exact. The interpreter computes the
products in float32, so what TF32 does to them is the ``gpu`` tests' part, with the
kernel compiled by Triton for the device.
"""

from __future__ import annotations

import dataclasses
import os

import array_api_compat.numpy as compat_np
import numpy as np
import pytest

from kmeans_gpu import kmeans
from kmeans_gpu._precision import relative_product_error
from kmeans_gpu.backends import Backend, _triton
from kmeans_gpu.backends._base import rescale, rescale_factors

from .checks import assert_same_up_to_order


@pytest.fixture
def interpreter(monkeypatch):
    """Triton's interpreter (chosen by conftest.py before triton is imported, on a
    machine without a CUDA device; the ``gpu`` tests run the kernel where there is one)."""
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("a CUDA device is here: the gpu tests run the compiled kernel")
    from triton.runtime import interpreter as triton_interpreter

    # Triton 3.6's interpreter reads a loop bound with int() of a one-element array,
    # which NumPy 2.4 refuses; read its one element instead
    patch = getattr(triton_interpreter, "_patch_lang_tensor", None)
    if patch is not None:

        def patched(tensor, scope):
            patch(tensor, scope)
            scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

        monkeypatch.setattr(triton_interpreter, "_patch_lang_tensor", patched)


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


def run_step(
    X, origin, scaled, centers_sq, rows_sq, weights, precision, statistics=True, hopper=True
):
    """``_triton.launch`` of a Lloyd step's share on torch CPU tensors (as
    ``_triton.lloyd_step`` launches it on CuPy): labels, near ties, sums and weights
    (None without ``statistics``), NumPy."""
    import torch

    n, d = X.shape
    k = scaled.shape[0]

    def tensor(a):
        return torch.from_numpy(np.ascontiguousarray(a))

    mean, exponent = (np.zeros(d, np.float32), 0) if origin is None else origin
    largest = np.sqrt(centers_sq).max().reshape(1).astype(np.float32)
    labels, near = torch.empty(n, dtype=torch.int32), torch.empty(n, dtype=torch.int8)
    sums = torch.zeros(k, d) if statistics else None
    weight_sums = torch.zeros(k) if statistics else None
    step = _triton.Step(
        mean=tensor(mean),
        factors=rescale_factors(exponent),
        rows_sq=tensor(rows_sq),
        max_center_norm=tensor(largest),
        delta=relative_product_error(precision, d),
        weights=None if weights is None else tensor(weights),
        near=near,
        sums=sums,
        weight_sums=weight_sums,
    )
    x = tensor(X)
    config = _triton.config_for(precision, d, hopper)
    _triton.launch(
        x, tensor(scaled), tensor(centers_sq), labels, x, x, n, k, d, precision, config, step
    )
    out = (sums, weight_sums)
    return labels.numpy(), near.numpy().astype(bool), *(o if o is None else o.numpy() for o in out)


def plain_nearest_two(X, scaled, centers_sq):
    return Backend(compat_np, "plain").nearest_two(X @ scaled.T, centers_sq)


# (n, d, k): one centre; tiles not full in rows, centres or features; rows kept for
# every centre tile (d up to 128) and read per 32-feature slice (d = 300); G1's d with
# 16 centre tiles
SHAPES = ((1000, 3, 1), (700, 16, 130), (129, 128, 64), (300, 300, 70), (130, 128, 1000))


@pytest.mark.parametrize("hopper", [True, False], ids=["sm90", "sm80"])
@pytest.mark.parametrize("precision", ["tf32", "tf32x3"])
@pytest.mark.parametrize(("n", "d", "k"), SHAPES)
def test_kernel_matches_the_plain_path_exactly_on_exact_data(
    interpreter, precision, n, d, k, hopper
):
    """Every launch shape (kept rows or slices; 64 or 128 rows a block)."""
    rng = np.random.default_rng(d)
    X = rng.integers(-3, 4, size=(n, d)).astype(np.float32)
    C = rng.integers(-3, 4, size=(k, d)).astype(np.float32)
    C[k // 2] = C[0]  # an exact tie between centres of different tiles (k > 64)
    C[min(k - 1, 5)] = C[0]  # and within the first tile
    centers_sq = (C * C).sum(axis=1)
    got = run_kernel(X, -2.0 * C, centers_sq, precision, hopper)
    want = plain_nearest_two(X, -2.0 * C, centers_sq)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    assert got[0].dtype == np.int32
    if k == 1:
        assert np.all(np.isinf(got[2]))
    else:
        assert np.all(got[0] != k // 2) and np.all(got[0] != min(k - 1, 5))  # first wins


def test_kernel_on_real_valued_data(interpreter):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 40)).astype(np.float32)
    C = rng.normal(size=(200, 40)).astype(np.float32)
    centers_sq = (C * C).sum(axis=1)
    labels, best, second = run_kernel(X, -2.0 * C, centers_sq, "tf32x3")
    want_labels, want_best, want_second = plain_nearest_two(X, -2.0 * C, centers_sq)
    np.testing.assert_allclose(best, want_best, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(second, want_second, rtol=1e-5, atol=1e-4)
    agree = labels == want_labels
    assert np.all(agree | (want_second - want_best < 1e-4))  # only float32-level ties


def test_launch_shapes():
    assert _triton.config_for("tf32", 128, True).resident
    assert not _triton.config_for("tf32", 129, True).resident  # padded to 256: too wide
    assert _triton.config_for("tf32x3", 3, False) == _triton.CONFIGS["tf32x3", False]
    with pytest.raises(ValueError, match="too wide to keep"):
        _triton.launch(*[None] * 6, 10, 10, 300, "tf32", _triton.CONFIGS["tf32", True])


#: Compiles the kernel (not interpreted) for one device, each launch shape the library
#: uses there, in both modes (nearest two; a Lloyd step's share, weighted, with sums),
#: and prints what each takes: shared memory, registers, stack (spills).
COMPILE = """
import json, re, subprocess, sys, tempfile
from pathlib import Path
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from kmeans_gpu.backends import _triton
from kmeans_gpu.backends._triton_kernel import kmeans_gpu_triton_assign as kernel

capability, hopper = int(sys.argv[1]), sys.argv[1] >= "90"
tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
pointers = ("X", "S", "CENTERS_SQ", "LABELS", "BEST", "SECOND", "MEAN", "ROWS_SQ",
            "MAX_CENTER_NORM", "W", "NEAR", "SUMS", "WEIGHT_SUMS")
kinds = {"LABELS": "*i32", "NEAR": "*i8"}
signature = {name: kinds.get(name, "*fp32") for name in pointers}
signature |= {name: "i32" for name in ("n", "k", "d")}
signature |= {name: "fp32" for name in ("f1", "f2", "delta")}
report = []
for precision in _triton.INPUT_PRECISION:
    for d in (128, 300):
        for step in (False, True):
            config = _triton.config_for(precision, d, hopper)
            constexprs = dict(BLOCK_M=config.block_m, BLOCK_N=config.block_n,
                              D_PAD=_triton._padded(d), RESIDENT=config.resident,
                              BLOCK_K=_triton.FEATURE_SLICE,
                              PRECISION=_triton.INPUT_PRECISION[precision],
                              STEP=step, SUMS_TOO=step, WEIGHTED=step)
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
            report.append(dict(precision=precision, d=d, step=step,
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
    import json
    import subprocess
    import sys

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


class TritonNumpy(Backend):
    """NumPy with its reduced-precision assignment through the Triton kernel (in the
    interpreter): the kernel's outputs feeding the library's near-tie re-check; with
    ``fused``, a Lloyd pass's chunks go through the kernel's step mode, as on CuPy."""

    reduced_products = frozenset({"tf32"})

    def __init__(self, fused: bool = False) -> None:
        super().__init__(compat_np, "triton-numpy")
        self.kernel_calls = self.step_calls = 0
        self.fused = fused

    def reduced_nearest_two(self, X, scaled, centers_sq, precision):
        self.kernel_calls += 1
        return run_kernel(X, scaled, centers_sq, precision)

    def reduced_step(
        self,
        X,
        origin,
        centers,
        centers_sq,
        rows_sq,
        weights,
        precision,
        statistics=True,
        deterministic=False,
    ):
        if not self.fused:
            return super().reduced_step(
                X,
                origin,
                centers,
                centers_sq,
                rows_sq,
                weights,
                precision,
                statistics,
                deterministic,
            )
        self.step_calls += 1
        return run_step(
            X, origin, -2.0 * centers, centers_sq, rows_sq, weights, precision, statistics
        )


# (n, d, k, origin exponent): kept rows and 32-feature slices, one centre, rows rescaled
# up and down by powers of two, or no rescaling
STEP_SHAPES = ((700, 16, 130, 0), (300, 300, 70, -3), (500, 8, 1, 2), (129, 128, 64, 5))


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("precision", ["tf32", "tf32x3"])
@pytest.mark.parametrize(("n", "d", "k", "exponent"), STEP_SHAPES)
def test_step_mode_is_the_generic_step_in_one_pass(
    interpreter, precision, n, d, k, exponent, weighted
):
    """The kernel's step mode (stored rows centred and rescaled in the kernel, near ties
    marked, the other rows summed with atomics) gives what ``Backend.reduced_step``
    gives from the same kernel's nearest two: the same labels and near ties, bitwise,
    and the same sums up to their order."""
    rng = np.random.default_rng(d + k)
    X = (rng.normal(size=(n, d)) + 40.0).astype(np.float32)  # stored rows, off-centre
    mean = X.mean(axis=0).astype(np.float32)
    rows = rescale(X - mean, exponent)
    C = rows[rng.choice(n, k, replace=False)] + np.float32(0.01)
    C[k // 2] = C[0]  # tied centres: near ties for every row near them
    centers_sq = (C * C).sum(axis=1)
    rows_sq = (rows * rows).sum(axis=1)
    w = rng.uniform(0.5, 2, size=n).astype(np.float32) if weighted else None
    generic = TritonNumpy().reduced_step(X, (mean, exponent), C, centers_sq, rows_sq, w, precision)
    got = run_step(X, (mean, exponent), -2.0 * C, centers_sq, rows_sq, w, precision)
    np.testing.assert_array_equal(got[0], generic[0])
    np.testing.assert_array_equal(got[1], generic[1])
    assert k == 1 or got[1].any()  # near ties happened
    for a, b in zip(got[2:], generic[2:], strict=True):
        assert_same_up_to_order(a, b)
    labels_only = run_step(
        X, (mean, exponent), -2.0 * C, centers_sq, rows_sq, w, precision, statistics=False
    )
    np.testing.assert_array_equal(labels_only[0], got[0])
    assert labels_only[2] is None and labels_only[3] is None


@pytest.mark.parametrize("fused", [False, True], ids=["nearest two", "step mode"])
@pytest.mark.parametrize("precision", ["tf32", "tf32x3"])
def test_a_fit_through_the_kernel_equals_the_exact_fit(interpreter, precision, fused):
    rng = np.random.default_rng(2)
    X = np.vstack([rng.normal(loc=m, size=(300, 8)) for m in range(5)]).astype(np.float32)
    backend = TritonNumpy(fused)
    exact = kmeans(X, 10, random_state=0, backend=backend, max_iter=30)
    got = kmeans(X, 10, random_state=0, backend=backend, max_iter=30, precision=precision)
    assert (backend.step_calls if fused else backend.kernel_calls) > 0
    np.testing.assert_array_equal(got[1], exact[1])
    assert_same_up_to_order(got[0], exact[0])  # near ties' rows summed after the others


@pytest.mark.parametrize("precision", ["exact", "tf32", "tf32x3"])
def test_triton_mode_on_the_cupy_stand_in(monkeypatch, precision):
    """KMEANS_GPU_CUDA_KERNELS=triton: the CuPy backend's float32 fits go through
    ``_triton.lloyd_step`` and ``_triton.nearest_two`` (their stand-ins), exact ones as
    split TF32 re-checked exactly; the fit is the one the argmin kernels give, float64
    data stay exact, and deterministic sums do not come from the step's atomics."""
    from . import fake_cupy

    with fake_cupy.stand_in(monkeypatch) as record:
        import cupy

        rng = np.random.default_rng(4)
        X = cupy.asarray(rng.normal(size=(3000, 6)).astype(np.float32))
        monkeypatch.setenv("KMEANS_GPU_CUDA_KERNELS", "argmin")
        want = kmeans(X, 8, random_state=0)
        assert record["triton"] == 0
        monkeypatch.setenv("KMEANS_GPU_CUDA_KERNELS", "triton")
        fake_cupy.clear_backend_caches()
        got = kmeans(X, 8, random_state=0, precision=precision)
        assert record["triton"] > 0 and record["triton_steps"] > 0
        np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]))
        assert_same_up_to_order(got[0], want[0])  # near ties' rows summed last
        calls = record["triton"]
        kmeans(cupy.asarray(np.asarray(X).astype(np.float64)), 8, random_state=0)
        assert record["triton"] == calls  # float64: the exact product
        steps = record["triton_steps"]
        again = kmeans(X, 8, random_state=0, precision=precision, deterministic=True)
        np.testing.assert_array_equal(np.asarray(again[1]), np.asarray(want[1]))
        # only the final labelling (no sums) took the step; the Lloyd passes did not
        assert record["triton_steps"] == steps + 1


def test_triton_mode_takes_larger_chunks(monkeypatch):
    """No scores are written, so a chunk holds as many rows as its rows' own
    temporaries allow (G2's d and k, 64 MiB: 3 chunks where cuBLAS's path takes 52)."""
    from kmeans_gpu._api import prepare

    from . import fake_cupy

    with fake_cupy.stand_in(monkeypatch):
        import cupy

        X = cupy.asarray(np.zeros((100_000, 64), dtype=np.float32))
        counts = {}
        for mode in ("argmin", "triton"):
            monkeypatch.setenv("KMEANS_GPU_CUDA_KERNELS", mode)
            fake_cupy.clear_backend_caches()
            problem, _, _ = prepare(X, None, "cupy", working_memory=64 << 20)
            for precision in ("exact", "tf32x3"):
                tuned = dataclasses.replace(problem, precision=precision)
                counts[mode, precision] = len(tuned.assignment_chunks(4096))
        assert counts["argmin", "exact"] == counts["triton", "exact"] == 50
        assert counts["argmin", "tf32x3"] == 52  # and the split rows' room
        assert counts["triton", "tf32x3"] == 3
        # deterministic sums come from the parts, whose temporaries include k columns
        exact_sums = dataclasses.replace(problem, precision="tf32x3", deterministic=True)
        assert len(exact_sums.assignment_chunks(4096)) == 52


def test_triton_mode_needs_triton_and_torch(monkeypatch):
    from kmeans_gpu.backends import _cuda

    from . import fake_cupy

    with fake_cupy.stand_in(monkeypatch):
        from kmeans_gpu.backends import get_backend

        monkeypatch.setenv(_cuda.ENV_FLAG, "triton")
        assert _cuda.kernel_mode() == "triton"
        monkeypatch.setattr(_triton, "available", lambda: False)
        with pytest.raises(ValueError, match="needs the triton and torch packages"):
            get_backend("cupy")


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["tf32", "tf32x3"])
def test_cupy_triton_kernel_matches_the_plain_path(precision, rng):
    from kmeans_gpu.backends import _cupy_has_device, get_backend

    if not (_cupy_has_device() and _triton.available()):
        pytest.skip("needs CuPy with a CUDA device, triton and torch")
    import cupy

    backend = get_backend("cupy")
    if not backend.computes_reduced(precision):
        pytest.skip("this GPU has no TF32 tensor cores")
    # exact data: every product is exact in TF32, so every output is the plain one
    # (few shapes: each feature count is a compilation of a few seconds)
    for n, d, k in ((700, 16, 130), (300, 300, 70), (5000, 64, 1000)):
        X = cupy.asarray(rng.randint(-3, 4, size=(n, d)).astype(np.float32))
        C = cupy.asarray(rng.randint(-3, 4, size=(k, d)).astype(np.float32))
        C[k // 2] = C[0]
        centers_sq = (C * C).sum(axis=1)
        got = _triton.nearest_two(X, -2.0 * C, centers_sq, precision)
        want = Backend.nearest_two(backend, X @ (-2.0 * C).T, centers_sq)
        for a, b in zip(got, want, strict=True):
            cupy.testing.assert_array_equal(a, b)
    # the step mode against the generic step from the same kernel's nearest two: the
    # same labels where neither marks a near tie (their margins may round apart on a GPU,
    # where Triton may fuse a multiply and an add), and the sums of the rows it settles
    Xs = cupy.asarray((rng.normal(size=(20_000, 64)) + 5.0).astype(np.float32))
    mean = Xs.mean(axis=0)
    rows = rescale(Xs - mean, -3)
    C = rows[cupy.asarray(rng.choice(20_000, 300, replace=False))]
    centers_sq, rows_sq = (C * C).sum(axis=1), (rows * rows).sum(axis=1)
    old = backend.custom_kernel
    backend.custom_kernel = "triton"
    try:
        generic = Backend.reduced_step(
            backend, Xs, (mean, -3), C, centers_sq, rows_sq, None, precision
        )
    finally:
        backend.custom_kernel = old
    got = _triton.lloyd_step(Xs, (mean, -3), -2.0 * C, centers_sq, rows_sq, None, precision)
    both = ~(got[1] | generic[1])
    assert float(cupy.mean((got[1] != generic[1]).astype(cupy.float32))) < 1e-3
    cupy.testing.assert_array_equal(got[0][both], generic[0][both])
    labels = cupy.where(got[1], C.shape[0], got[0])  # the rows it settles, summed plainly
    sums, weights = Backend.cluster_sums(backend, rows, labels, None, C.shape[0] + 1)
    cupy.testing.assert_allclose(got[2], sums[:-1], rtol=1e-4, atol=1e-3)
    cupy.testing.assert_allclose(got[3], weights[:-1])
    # real data through the backend: the re-check makes the labels the exact ones
    X = cupy.asarray(rng.uniform(size=(50_000, 32)).astype(np.float32))
    C = cupy.asarray(rng.uniform(size=(500, 32)).astype(np.float32))
    centers_sq = (C * C).sum(axis=1)
    want = backend.assign(X, C, centers_sq)
    old = backend.custom_kernel
    backend.custom_kernel = "triton"
    try:
        got = backend.assign(X, C, centers_sq, precision)
    finally:
        backend.custom_kernel = old
    cupy.testing.assert_array_equal(got, want)
