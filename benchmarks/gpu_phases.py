"""Where a Lloyd iteration's time goes on a CUDA GPU: ``python benchmarks/gpu_phases.py``.

For each GPU workload (data drawn on the device, so no host generation time), times with
CUDA events, median of ``--repeats`` after a warm-up:

* the two ceilings: a device-to-device copy of X (bytes read + written per second) and
  cuBLAS's float32 product of one chunk with the centres, exact and TF32 (TFLOP/s);
* each step of one iteration, over all rows (timed on one or two chunks, scaled):
  centring the rows (what ``Problem.rows`` does per chunk), the assignment for each
  kernel choice and precision, the argsort the sorted sums need, the per-cluster sums
  (plain CuPy's atomic per element, the sorted-sums kernel, the deterministic one-hot
  product), and the whole iteration as ``kmeans(..., max_iter=iterations)`` runs it.

It prints one table per workload and, with ``--json``, writes every number. A script to
learn from, not a test: it asserts nothing, and reports which share of the labels each
kernel gives as the first (cuBLAS + argmin, exact) does.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kmeans_gpu import kmeans
from kmeans_gpu._api import prepare
from kmeans_gpu.benchmark import WORKLOADS


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def gpu_ms(cp: Any, fn: Callable[[], Any], repeats: int) -> float:
    """Median milliseconds of ``fn`` between two CUDA events, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start, stop = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, stop))
    return statistics.median(times)


def profile(name: str, repeats: int, iterations: int, rows: int | None) -> list[dict[str, Any]]:
    import cupy as cp

    n, d, k, _ = WORKLOADS[name]
    n = rows or n
    rng = cp.random.default_rng(0)
    X = rng.standard_normal((n, d), dtype=cp.float32)
    X += rng.integers(0, 8, size=(n, 1)).astype(cp.float32)  # some structure
    init = X[:: n // k][:k].copy()  # k distinct rows
    problem, _, centers = prepare(X, None, "cupy", centers=init)
    backend = problem.backend
    chunks = problem.chunks(k)
    chunk = chunks[0][1] - chunks[0][0]
    Xc = problem.rows(0, chunk)
    csq = cp.sum(centers * centers, axis=1)
    results: list[dict[str, Any]] = []

    def add(step: str, ms: float, note: str = "") -> None:
        results.append({"workload": name, "step": step, "ms": ms, "note": note})
        say(f"{name:3} {step:52} {ms:10.3f} ms  {note}")

    say(f"{name}: {n:,} x {d}, k = {k:,}; {len(chunks)} chunks of {chunk:,} rows")
    ms = gpu_ms(cp, lambda: X.copy(), repeats)
    add("copy X (device to device)", ms, f"{2 * X.nbytes / ms / 1e9:.0f} GB/s")
    flop = 2.0 * chunk * k * d
    for precision in ("exact", "tf32"):
        with backend._compute_type(X.dtype, precision):
            ms = gpu_ms(cp, lambda: Xc @ centers.T, repeats)
        scale = n / chunk
        add(
            f"cuBLAS chunk product, {precision} (all rows)",
            ms * scale,
            f"{flop / ms / 1e9:.1f} TFLOP/s",
        )
    add(
        "centre every chunk (Problem.rows)",
        sum(gpu_ms(cp, lambda a=a, b=b: problem.rows(a, b), repeats) for a, b in chunks[:1])
        * n
        / chunk,
    )
    reference = None
    kernels = {None: "plain CuPy", "argmin": "argmin kernel", "fused": "fused kernel"}
    for mode, precision in (
        (None, "exact"),
        ("argmin", "exact"),
        ("fused", "exact"),
        (None, "tf32"),
        ("argmin", "tf32"),
    ):
        backend.custom_kernel = mode
        labels = backend.assign(Xc, centers, csq, precision)
        if reference is None:
            reference = labels
        agree = float(cp.mean((labels == reference).astype(cp.float32)))
        ms = gpu_ms(cp, lambda p=precision: backend.assign(Xc, centers, csq, p), repeats)
        add(
            f"assign, {kernels[mode]}, {precision} (all rows)",
            ms * n / chunk,
            f"labels agree with the first: {agree:.5f}",
        )
    backend.custom_kernel = "argmin"
    some = chunks[:2]
    rows = [problem.rows(a, b) for a, b in some]
    labels = [backend.assign(r, centers, csq) for r in rows]
    share = n / sum(b - a for a, b in some)
    ms = sum(gpu_ms(cp, lambda lab=lab: cp.argsort(lab), repeats) for lab in labels)
    add("argsort of the labels (all rows)", ms * share)
    sums = {None: "plain CuPy (an atomic per element)", "argmin": "sorted-sums kernel"}
    for mode, deterministic in ((None, False), ("argmin", False), ("argmin", True)):
        backend.custom_kernel = mode
        ms = sum(
            gpu_ms(
                cp,
                lambda r=r, lab=lab, det=deterministic: backend.cluster_sums(r, lab, None, k, det),
                repeats,
            )
            for r, lab in zip(rows, labels, strict=True)
        )
        what = "one-hot product (deterministic)" if deterministic else sums[mode]
        add(f"cluster sums, {what} (all rows)", ms * share)
    del rows, labels
    for mode, precision in (
        (None, "exact"),
        ("argmin", "exact"),
        ("fused", "exact"),
        ("argmin", "tf32"),
    ):
        backend.custom_kernel = mode
        ms = gpu_ms(
            cp,
            lambda p=precision: kmeans(
                X, k, init=init, max_iter=iterations, tol=0.0, backend="cupy", precision=p
            ),
            max(1, repeats // 2),
        )
        add(f"kmeans() per iteration, {kernels[mode]}, {precision}", ms / iterations)
    backend.custom_kernel = "argmin"
    pool = cp.get_default_memory_pool()
    add(
        "memory pool total after the runs (MiB)",
        pool.total_bytes() / 2**20,
        f"X: {X.nbytes / 2**20:.0f} MiB",
    )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", default=["G1", "G2"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--rows", type=int, help="use this many rows instead")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    try:
        import cupy

        cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no CuPy, or no device
        say(f"gpu_phases: needs CuPy and a CUDA device ({type(exc).__name__}: {exc})")
        return 1
    results = []
    for name in args.workloads:
        results += profile(name, args.repeats, args.iterations, args.rows)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
