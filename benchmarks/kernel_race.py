"""Assignment kernels on G1 (1M x 128, k = 1,024, float32) side by side, checked against
float64 labels. On a machine with a CUDA GPU, CuPy, torch and triton, from the
repository root:

    python3 benchmarks/kernel_race.py [G1|G2]

Rows: the core's pass (cuBLAS's exact product and the nearest-two kernel), the product
alone through torch (FP32, TF32, bf16), the experimental Triton kernel (TF32, split
TF32), a register-resident prototype kernel where ``proto_nearest_two.py`` is importable
(it is not part of the package), flash-kmeans' assign kernel and sorted update where it
is installed, the core's float64 sums, and column means four ways.

Each row: median ms of 7 (CUDA events, after a warm-up), effective TFLOP/s (2nkd), the
share of labels equal to the float64 ones, and for reduced precisions: rho (the
product's relative error bound, |x.c - fl(x.c)| <= rho |x||c|), the share of rows whose
two best exact scores are within 4 rho |x| max|c| (rows an exact engine re-checks), and
the rows whose label is worse than the best by more than that (must be 0).
"""

import os
import sys
import time

sys.path.insert(0, os.getcwd())
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cupy as cp
import torch

from benchmarks.gpu_phases import gpu_ms, say
from benchmarks.harness import WORKLOADS, make_data


def ms(fn, reps=7):
    torch.cuda.synchronize()
    return gpu_ms(cp, fn, reps)


name = sys.argv[1] if len(sys.argv) > 1 else "G1"
t0 = time.perf_counter()
if name == "G1":
    hX, hinit = make_data("G1")
    X = cp.asarray(hX)
    C = cp.asarray(hinit)
else:  # drawn on the device (10M host rows take a minute)
    n, d, k, _ = WORKLOADS[name]
    g = cp.random.default_rng(0)
    blobs = g.uniform(-10, 10, size=(k, d), dtype=cp.float32)
    X = blobs[g.integers(0, k, size=n)] + g.standard_normal((n, d), dtype=cp.float32)
    C = X[:: n // k][:k].copy()
n, d = X.shape
k = C.shape[0]
mean = X.mean(axis=0, dtype=cp.float64).astype(cp.float32)
Xw = X - mean
Cw = C - mean
csq = (Cw * Cw).sum(axis=1)
S = -2.0 * Cw
flop = 2.0 * n * k * d
say(f"{name}: {n:,} x {d}, k = {k:,}  (data {time.perf_counter() - t0:.1f} s)")

# float64 reference labels and exact distances
C64 = Cw.astype(cp.float64)
c64sq = (C64 * C64).sum(axis=1)
norms = cp.sqrt((Xw.astype(cp.float64) ** 2).sum(axis=1))
cmax = float(cp.sqrt(c64sq.max()))
ref = cp.empty(n, dtype=cp.int32)
gap12 = cp.empty(n, dtype=cp.float64)  # second best - best exact score
step = 1 << 17
for a in range(0, n, step):
    s64 = c64sq[None, :] - 2.0 * (Xw[a : a + step].astype(cp.float64) @ C64.T)
    part = cp.argpartition(s64, 1, axis=1)[:, :2]
    two = cp.take_along_axis(s64, part, axis=1)
    ref[a : a + step] = cp.argmin(s64, axis=1)
    gap12[a : a + step] = cp.abs(two[:, 1] - two[:, 0])
    del s64


def exact_score(labels):
    out = cp.empty(n, dtype=cp.float64)
    for a in range(0, n, step):
        x = Xw[a : a + step].astype(cp.float64)
        c = C64[labels[a : a + step]]
        out[a : a + step] = ((x - c) ** 2).sum(axis=1) - (x * x).sum(axis=1)
    return out


best_exact = exact_score(ref)
say(f"float64 reference ready ({time.perf_counter() - t0:.1f} s)")


def report(label, t, labels, rho=None):
    labels = cp.asarray(labels).astype(cp.int32)
    agree = float((labels == ref).mean())
    extra = ""
    if rho is not None:
        bound = 4.0 * rho * norms * cmax
        near = float((gap12 <= bound).mean())
        worse = exact_score(labels) - best_exact
        beyond = int((worse > bound * 1.0000001).sum())
        extra = f"  rho {rho:.2e}  near {near:.4f}  beyond bound {beyond}"
    else:
        wrong = labels != ref
        if bool(wrong.any()):
            worse = exact_score(labels) - best_exact
            extra = (
                f"  worst excess/(|x|max|c|) {float((worse / (norms * cmax))[wrong].max()):.2e}"
            )
    say(f"{label:50} {t:8.2f} ms {flop / t / 1e9:7.1f} TFLOP/s  exact {agree:.6f}{extra}")


def guarded(label, fn):
    try:
        fn()
    except Exception as e:  # a row that fails must not cost the others
        say(f"{label}: {type(e).__name__}: {str(e)[:300]}")


# 1. the core's pass: cuBLAS FP32 product + the nearest-two kernel, in solver-sized chunks
from kmeans_gpu.backends import get_backend  # noqa: E402

backend = get_backend("cupy")
chunk = 1 << 16


def core():
    out = cp.empty(n, dtype=cp.int32)
    for a in range(0, n, chunk):
        out[a : a + chunk] = backend.nearest_two(Xw[a : a + chunk], Cw, csq)[0]
    return out


guarded("core", lambda: report("core: cuBLAS FP32 + nearest-two kernel", ms(core), core()))

# 2. product floors through torch (the product alone, n x k written)
tX, tS = torch.from_dlpack(Xw), torch.from_dlpack(S)


def floors():
    for label, tf32, dtype in (
        ("FP32", False, None),
        ("TF32", True, None),
        ("bf16", False, torch.bfloat16),
    ):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a, b = (tX, tS) if dtype is None else (tX.to(dtype), tS.to(dtype))
        t = ms(lambda a=a, b=b: a @ b.T)
        say(f"{'torch product alone, ' + label:50} {t:8.2f} ms {flop / t / 1e9:7.1f} TFLOP/s")
    torch.backends.cuda.matmul.allow_tf32 = False


guarded("floors", floors)

# 3. the experimental Triton kernel
from kmeans_gpu.experimental import _precision, _triton  # noqa: E402

for p in (_precision.TF32, _precision.TF32X3):

    def run(p=p):
        lab = _triton.nearest_two(Xw, S, csq, p)[0]
        t = ms(lambda: _triton.nearest_two(Xw, S, csq, p))
        report(f"lab Triton nearest two, {p.name}", t, lab, p.relative_error(d))

    guarded(f"lab Triton {p.name}", run)

# 4. the prototype (register-resident running top two)
u8 = 2.0**-8
gamma = _precision._gamma
rho_bf16x3 = 3 * u8**2 + 7 * u8**3 + gamma(3 * d) * (1 + 3 * u8) + gamma(d)
rhos = {
    "tf32": _precision.TF32.relative_error(d),
    "tf32x3": _precision.TF32X3.relative_error(d),
    "bf16x3": rho_bf16x3,
}
tcsq = torch.from_dlpack(csq)
try:
    from proto_nearest_two import nearest_two as proto
except Exception as e:
    proto = None
    say(f"prototype: {type(e).__name__}: {e}")
if proto is not None:
    for prec in ("tf32", "bf16x3", "tf32x3"):
        for bm, bn, w, s in ((128, 64, 8, 2), (128, 128, 8, 3)):

            def run(prec=prec, bm=bm, bn=bn, w=w, s=s):
                lab = proto(tX, tS, tcsq, prec, bm, bn, w, s)[0]
                t = ms(lambda: proto(tX, tS, tcsq, prec, bm, bn, w, s))
                report(f"prototype {prec} {bm}x{bn}/{w}w/{s}s", t, cp.from_dlpack(lab), rhos[prec])

            guarded(f"prototype {prec}", run)


# 5. flash-kmeans: its assign kernel and its sorted update
def flash():
    from flash_kmeans.assign_euclid_triton import euclid_assign_triton
    from flash_kmeans.centroid_update_triton import triton_centroid_update_sorted_euclid

    xb, cb = tX[None], torch.from_dlpack(Cw)[None]
    xsq = (xb * xb).sum(-1)
    lab = euclid_assign_triton(xb, cb, xsq)
    report(
        "flash-kmeans assign (its heuristic; TF32)",
        ms(lambda: euclid_assign_triton(xb, cb, xsq)),
        cp.from_dlpack(lab[0]),
        rhos["tf32"],
    )
    order = torch.sort(lab.long(), dim=1)
    xs = torch.gather(xb, 1, order.indices[..., None].expand(-1, -1, d))
    t = ms(lambda: triton_centroid_update_sorted_euclid(xs, order.values, cb))
    say(f"{'flash-kmeans sorted update (rows pre-sorted)':50} {t:8.2f} ms")
    t = ms(lambda: torch.sort(lab.long(), dim=1))
    say(f"{'torch.sort of the labels':50} {t:8.2f} ms")


guarded("flash-kmeans", flash)

# 6. the core's sums: atomics and the deterministic one-hot product
origin = (mean.astype(cp.float64), 0)
for det in (False, True):
    guarded(
        "sums",
        lambda det=det: say(
            f"{'core cluster_sums, deterministic=' + str(det):50} "
            f"{ms(lambda: backend.cluster_sums(X, origin, ref, None, k, det), reps=3):8.2f} ms"
        ),
    )

# 7. column means three ways (a set-up suspect)
ones = cp.ones(n, dtype=cp.float32)
for label, f in (
    ("cupy.mean(X, axis=0)", lambda: cp.mean(X, axis=0)),
    ("cupy.mean(X, axis=0, dtype=float64)", lambda: X.mean(axis=0, dtype=cp.float64)),
    ("ones @ X", lambda: ones @ X),
    ("backend.column_mean", lambda: backend.column_mean(X)),
):
    guarded(
        label,
        lambda label=label, f=f: say(
            f"{'column means: ' + label:50} {ms(f):8.3f} ms  {X.nbytes / ms(f) / 1e6:7.0f} GB/s"
        ),
    )
say(f"race done in {time.perf_counter() - t0:.0f} s")
