"""Where a Lloyd iteration's time goes on a CUDA GPU: ``python benchmarks/gpu_phases.py``.

For each GPU workload (data drawn on the device, so no host generation time), times with
CUDA events, median of ``--repeats`` after a warm-up:

* first, where a fit's fixed cost falls: one fit lap by lap (set-up, initial centres,
  each iteration, the end of the run), and one fit under torch's profiler, whose CUPTI
  tracing sees every kernel and CUDA call of the process: the kernels and copies that
  took the device's time, the CUDA calls that took the host's (waits, copies, pinned
  allocations, launches), and how busy the device was;
* the ceilings: a device-to-device copy of X (bytes read + written per second) and
  cuBLAS's float32 product of one chunk with the centres, exact and TF32, and the TF32
  product of the split inputs of ``precision="tf32x3"`` (TFLOP/s), with the split;
* each step of one iteration, over all rows (timed on one or two chunks, scaled):
  centring the rows (what ``Problem.rows`` does per chunk), the assignment for each
  kernel choice and precision (the Triton kernel's too, where triton is installed),
  the share of rows the tf32 and tf32x3 paths re-check, the per-cluster sums (float
  atomics; deterministic: the sorted-segments kernel, 64-bit fixed point and the
  one-hot product), and, from fits of 1 and ``1 + iterations`` iterations, the cost of
  one Lloyd iteration
  inside ``kmeans`` and the fixed cost of a fit, for each kernel choice and precision
  and for workspaces of 256 MiB, 1 GiB (the default's cap) and 4 GiB;
* the fixed cost's parts (set-up, with its validation, column mean and sum of
  squares; final assignment, final inertia, relocating empty clusters), a whole fit's
  wall clock with CuPy's memory pool warm and emptied first, and the device memory a
  fit holds beyond X (a CuPy memory hook); greedy k-means++ (the default init) for all
  k centres;
* last, where triton is installed, a chunk's share of a Lloyd pass through the Triton
  kernel's step mode against the same share in parts, and the Triton kernel's launch
  shapes for TF32 and split TF32 (the default and :data:`TRITON_SHAPES`).

It prints one table per workload and, with ``--json``, writes every number. A script to
learn from, not a test: it asserts nothing, and reports which share of the labels each
kernel gives as the first (cuBLAS + argmin, exact) does.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kmeans_gpu._precision import CENTER_PIECES, ROW_PIECES, near_ties
from kmeans_gpu.benchmark import WORKLOADS, device_peak_bytes, make_data

from kmeans_gpu import kmeans, kmeans_plusplus
from kmeans_gpu._api import _warn_if_collapsed, prepare, setup
from kmeans_gpu._assign import assign, inertia
from kmeans_gpu._validation import check_array
from kmeans_gpu.backends import Backend, _triton

#: launch shapes of the Triton kernel timed besides the default (tests/test_triton.py
#: compiled them for sm_90: all fit its shared memory)
TRITON_SHAPES = {
    "tf32": (_triton.Config(64, 64, 4, 2, True), _triton.Config(64, 64, 4, 3, False)),
    "tf32x3": (_triton.Config(128, 64, 8, 2, True), _triton.Config(64, 64, 4, 3, False)),
}


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


def fit_timeline(
    cp: Any, X: Any, k: int, init: Any, iterations: int
) -> tuple[list[tuple[str, float]], float]:
    """Wall-clock milliseconds of each part of one fit of ``iterations`` Lloyd iterations
    from ``init`` (tol = 0), as ``kmeans`` runs it, the device synchronised after each:
    set-up, initial centres, the first iteration (which relocates empty clusters), the
    median of the others, the end of the run (final assignment and inertia), and the
    result (the distinct-cluster check, centres back to the caller's units); and the
    whole fit's milliseconds."""
    laps: list[tuple[str, float]] = []
    clock = time.perf_counter()

    def lap(what: str) -> None:
        nonlocal clock
        cp.cuda.Device().synchronize()
        now = time.perf_counter()
        laps.append((what, (now - clock) * 1e3))
        clock = now

    cp.cuda.Device().synchronize()
    began = clock = time.perf_counter()
    job = setup(X, k, init=init, max_iter=iterations, tol=0.0)
    lap("set-up")  # validation, centring, scale, variance
    steps = job.start()[2]
    lap("initial centres")
    later: list[float] = []
    while True:
        try:
            step = next(steps)
        except StopIteration as stop:
            result = stop.value
            break
        lap(f"iteration {step.iteration}")
        if step.iteration > 1:
            later.append(laps.pop()[1])
    if later:
        laps.append((f"iterations 2-{1 + len(later)}, median", statistics.median(later)))
    lap("end: final assignment and inertia")
    _warn_if_collapsed(job.problem, result.labels, k)
    job.problem.from_working(result.centers)
    lap("result: distinct clusters, centres back")
    return laps, (clock - began) * 1e3


def fit_trace(
    cp: Any, X: Any, k: int, init: Any, iterations: int, rows: int = 16
) -> tuple[list[tuple[str, float, int]], list[tuple[str, float, int]], float, float]:
    """One fit of ``iterations`` iterations under torch's profiler, whose CUPTI tracing
    sees every kernel, copy and CUDA runtime call of the process (CuPy's, cuBLAS's and
    Triton's included): the ``rows`` names that took most device time and the ``rows``
    CUDA runtime or driver calls that took most host time (waits, copies, allocations
    of pinned memory, launches), each as ``(name, ms, calls)``; and the device's busy
    milliseconds against the fit's wall clock under the profiler. Empty lists where
    torch cannot trace the device."""
    try:
        import torch
        from torch.profiler import ProfilerActivity, profile
    except ImportError:
        return [], [], 0.0, 0.0
    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    cp.cuda.Device().synchronize()
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        kmeans(X, k, init=init, max_iter=iterations, tol=0.0)
        cp.cuda.Device().synchronize()
        wall = (time.perf_counter() - start) * 1e3
    events = list(prof.key_averages())

    def device_ms(e: Any) -> float:
        return float(getattr(e, "self_device_time_total", 0.0)) / 1e3

    busy = sum(device_ms(e) for e in events)
    on_device = sorted((e for e in events if device_ms(e) > 0), key=device_ms, reverse=True)
    calls = [e for e in events if e.key.startswith("cu") and device_ms(e) == 0]
    on_host = sorted(calls, key=lambda e: e.self_cpu_time_total, reverse=True)
    return (
        [(e.key, device_ms(e), e.count) for e in on_device[:rows]],
        [(e.key, e.self_cpu_time_total / 1e3, e.count) for e in on_host[:rows]],
        busy,
        wall,
    )


def profile(name: str, repeats: int, iterations: int, rows: int | None) -> list[dict[str, Any]]:
    import cupy as cp

    n, d, k, _ = WORKLOADS[name]
    n = rows or n
    if rows is None:  # the benchmark's data
        host_X, host_init = make_data(name)
        X, init = cp.asarray(host_X), cp.asarray(host_init)
        del host_X
    else:  # drawn on the device: random rows around 8 offsets
        rng = cp.random.default_rng(0)
        X = rng.standard_normal((n, d), dtype=cp.float32)
        X += rng.integers(0, 8, size=(n, 1)).astype(cp.float32)
        init = X[:: n // k][:k].copy()  # k distinct rows
    problem, _, centers = prepare(X, None, "cupy", centers=init)
    backend = problem.backend
    default_kernels = backend.custom_kernel
    chunks = problem.chunks(k)
    chunk = chunks[0][1] - chunks[0][0]
    Xc = problem.rows(0, chunk)
    csq = cp.sum(centers * centers, axis=1)
    results: list[dict[str, Any]] = []

    def add(step: str, value: float, note: str = "", unit: str = "ms") -> None:
        results.append({"workload": name, "step": step, unit: value, "note": note})
        say(f"{name:3} {step:66} {value:10.3f} {unit:3}  {note}")

    say(f"{name}: {n:,} x {d}, k = {k:,}; {len(chunks)} chunks of {chunk:,} rows")
    # first, where the fixed cost of a fit falls (the largest unexplained item): one fit
    # lap by lap (the device synchronised at each), then one under CUPTI's tracing
    fit_timeline(cp, X, k, init, 1 + iterations)  # warm-up
    laps, whole = fit_timeline(cp, X, k, init, 1 + iterations)
    for what, ms in laps:
        add(f"fit lap by lap: {what}", ms)
    add(
        "fit lap by lap: the whole fit",
        whole,
        f"{1 + iterations} iterations; wall clock, device synchronised at every lap",
    )
    on_device, on_host, busy, wall = fit_trace(cp, X, k, init, 1 + iterations)
    for what, ms, count in on_device:
        add(f"fit trace, device time: {what[:60]}", ms, f"{count} calls")
    for what, ms, count in on_host:
        add(f"fit trace, host time in CUDA calls: {what[:48]}", ms, f"{count} calls")
    if on_device:
        add("fit trace: the device busy", busy, f"of {wall:.1f} ms wall clock under the profiler")
    else:
        say("(no fit trace: torch cannot trace the device here)")
    ms = gpu_ms(cp, lambda: X.copy(), repeats)
    add("copy X (device to device)", ms, f"{2 * X.nbytes / ms / 1e6:.0f} GB/s read + written")
    flop = 2.0 * chunk * k * d
    products = {  # the layout the solver uses, and the transposed one
        "X·Cᵀ": lambda: Xc @ centers.T,
        "C·Xᵀ": lambda: centers @ Xc.T,
    }
    for precision in ("exact", "tf32"):
        for layout, product in products.items():
            with backend._compute_type(X.dtype, precision):
                ms = gpu_ms(cp, product, repeats)
            add(
                f"cuBLAS chunk product {layout}, {precision} (all rows)",
                ms * n / chunk,
                f"{flop / ms / 1e9:.1f} TFLOP/s",
            )
    split_rows = backend.split_columns(Xc, ROW_PIECES)
    split_centers = backend.split_columns(-2.0 * centers, CENTER_PIECES)
    with backend._compute_type(X.dtype, "tf32"):
        ms = gpu_ms(cp, lambda a=split_rows, b=split_centers: a @ b.T, repeats)
    add(
        "cuBLAS chunk product X·Cᵀ, tf32x3 (3d inner; all rows)",
        ms * n / chunk,
        f"{3 * flop / ms / 1e9:.1f} TFLOP/s",
    )
    ms = gpu_ms(cp, lambda: backend.split_columns(Xc, ROW_PIECES), repeats)
    add("split every chunk into TF32 parts (kernel, all rows)", ms * n / chunk)
    del split_rows, split_centers
    try:  # the same float32 product through PyTorch (its own cuBLAS/cuBLASLt choice)
        import torch

        tX, tC = torch.from_dlpack(Xc), torch.from_dlpack(centers)
        torch.backends.cuda.matmul.allow_tf32 = False
        ms = gpu_ms(cp, lambda: tX @ tC.T, repeats)
        add(
            "torch.matmul chunk product, exact (all rows)",
            ms * n / chunk,
            f"{flop / ms / 1e9:.1f} TFLOP/s",
        )
    except Exception as exc:  # no torch, or no CUDA torch
        say(f"(torch.matmul not timed: {type(exc).__name__}: {exc})")
    add(
        "centre every chunk (Problem.rows)",
        sum(gpu_ms(cp, lambda a=a, b=b: problem.rows(a, b), repeats) for a, b in chunks[:1])
        * n
        / chunk,
    )
    reference = None
    kernels = {
        None: "plain CuPy",
        "argmin": "argmin kernel",
        "fused": "fused kernel",
        "triton": "Triton kernel",
    }
    with_triton = (("triton", "tf32"), ("triton", "tf32x3")) if _triton.available() else ()
    for mode, precision in (
        (None, "exact"),
        ("argmin", "exact"),
        ("fused", "exact"),
        (None, "tf32"),
        ("argmin", "tf32"),
        ("argmin", "tf32x3"),
        *with_triton,
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
    # how many rows the tf32 and split-tf32 paths assign again exactly (their near ties)
    backend.custom_kernel = "argmin"
    for precision in ("tf32", "tf32x3"):
        _, best, second = backend.reduced_nearest_two(Xc, -2.0 * centers, csq, precision)
        near, margin = near_ties(backend.xp, Xc, csq, best, second, precision)
        share = float(cp.mean(near.astype(cp.float32)))
        gap = float(cp.median((second - best) / margin))
        add(
            f"{precision}: rows re-checked exactly",
            share,
            f"median gap / margin {gap:.3g}",
            unit="of 1",
        )
    some = chunks[:2]
    rows = [problem.rows(a, b) for a, b in some]
    labels = [backend.assign(r, centers, csq) for r in rows]
    share = n / sum(b - a for a, b in some)
    default_sums = backend.deterministic_sums
    for what, deterministic, mode in (
        ("float atomics", False, default_sums),
        ("sorted segments kernel (deterministic)", True, "sorted"),
        ("64-bit fixed point (deterministic)", True, "fixed-point"),
        ("one-hot product (deterministic)", True, "one-hot"),
    ):
        backend.deterministic_sums = mode
        ms = sum(
            gpu_ms(
                cp,
                lambda r=r, lab=lab, det=deterministic: backend.cluster_sums(r, lab, None, k, det),
                repeats,
            )
            for r, lab in zip(rows, labels, strict=True)
        )
        add(f"cluster sums, {what} (all rows)", ms * share)
    backend.deterministic_sums = default_sums
    del rows, labels
    # the fixed cost of a fit, part by part
    ms = gpu_ms(cp, lambda: prepare(X, None, "cupy", centers=init), max(1, repeats // 2))
    add("fit set-up: validation, centring, scale, variance", ms)
    ms = gpu_ms(cp, lambda: check_array(X, backend="cupy"), repeats)
    add("  of which validation (check_array: finite, dtype, layout)", ms)
    ms = gpu_ms(cp, lambda: backend.column_mean(X), repeats)
    add("  of which the column mean (cuBLAS ones·X)", ms, "set-up takes it twice")
    ms = gpu_ms(cp, lambda: cp.mean(X, axis=0), repeats)
    add("  (the column mean by CuPy's reduction over axis 0)", ms, "the path it replaced")
    xp = backend.xp
    flat = X.reshape((n * d,))
    ms = gpu_ms(cp, lambda f=flat: xp.vecdot(f, f), repeats)
    add(
        "  of which the sum of squares (xp.vecdot of all rows, flat)",
        ms,
        f"{X.nbytes / ms / 1e6:.0f} GB/s; array_api_compat may make it a 1×N·N×1 product",
    )
    del flat
    final = cp.empty(n, dtype=cp.int32)
    ms = gpu_ms(cp, lambda: assign(problem, centers, final, statistics=False), repeats)
    add("final assignment (all rows, no sums)", ms)
    default_pending = backend.pending_kernels
    for pending in (False, True):  # the plain path, then the SQ_DIST kernel
        backend.pending_kernels = pending
        ms = gpu_ms(cp, lambda: inertia(problem, centers, final), repeats)
        how = "SQ_DIST kernel" if pending else "plain CuPy"
        add(f"final inertia, {how} (all rows)", ms, "the frame stream's per iteration")
    backend.pending_kernels = default_pending

    def iteration_cost(**params: Any) -> tuple[float, float]:
        """A fit of m iterations costs F + m·P: the fixed cost F (validation, centring,
        the final assignment and inertia) and the cost P of one Lloyd iteration."""

        def fit(iterations: int) -> Any:
            return kmeans(X, k, init=init, max_iter=iterations, tol=0.0, **params)

        once = gpu_ms(cp, lambda: fit(1), max(1, repeats // 2))
        more = gpu_ms(cp, lambda: fit(1 + iterations), max(1, repeats // 2))
        per_iteration = (more - once) / iterations
        return per_iteration, once - per_iteration

    for mode, precision in (
        (None, "exact"),
        ("argmin", "exact"),
        ("fused", "exact"),
        ("argmin", "tf32"),
        ("argmin", "tf32x3"),
        *with_triton,
        *((("triton", "exact"),) if with_triton else ()),  # exact labels by split TF32
    ):
        backend.custom_kernel = mode
        per_iteration, fixed = iteration_cost(precision=precision)
        add(
            f"kmeans(), {kernels[mode]}, {precision}: one Lloyd iteration",
            per_iteration,
            f"fixed cost of a fit: {fixed:.1f} ms",
        )
    backend.custom_kernel = "argmin"
    for mib in (256, 1024, 4096):  # the default workspace is 1 GiB at most
        per_iteration, fixed = iteration_cost(working_memory=mib << 20)
        add(
            f"kmeans(), working_memory={mib} MiB: one Lloyd iteration",
            per_iteration,
            f"fixed cost of a fit: {fixed:.1f} ms; "
            f"{len(replace(problem, working_memory=mib << 20).chunks(k))} chunks",
        )
    pool = cp.get_default_memory_pool()
    for cold in (False, True):  # the benchmark emptied the pool before each fit until stop 10
        times = []
        for _ in range(max(1, repeats // 2)):
            if cold:
                pool.free_all_blocks()
            cp.cuda.Device().synchronize()
            start = time.perf_counter()
            kmeans(X, k, init=init, max_iter=iterations, tol=0.0)
            cp.cuda.Device().synchronize()
            times.append((time.perf_counter() - start) * 1e3)
        add(
            f"a fit of {iterations} iterations, wall clock, memory pool "
            + ("emptied first" if cold else "warm"),
            statistics.median(times),
            "the benchmark's timed fits found it emptied until stop 10",
        )
    for policy in ("relocate", "keep"):  # relocating empty clusters: its cost per fit
        ms = gpu_ms(
            cp,
            lambda e=policy: kmeans(X, k, init=init, max_iter=1, tol=0.0, empty_cluster=e),
            max(1, repeats // 2),
        )
        add(f"a fit of one iteration, empty_cluster={policy!r}", ms)
    backend.custom_kernel = default_kernels
    _, peak = device_peak_bytes(lambda: kmeans(X, k, init=init, max_iter=2, tol=0.0))
    add(
        "device memory held beyond X during a fit (memory hook)",
        peak / 2**20,
        f"{peak / X.nbytes:.2f} of X; workspace "
        f"{backend.default_working_memory() / 2**20:.0f} MiB",
        unit="MiB",
    )
    add(
        "memory pool total after the runs",
        pool.total_bytes() / 2**20,
        f"X: {X.nbytes / 2**20:.0f} MiB",
        unit="MiB",
    )
    # greedy k-means++, the default init (the benchmark starts every contender from the
    # same given centres, so no table times it): k - 1 sequential steps, each a pass
    # over the data for its candidates
    ms = gpu_ms(cp, lambda: kmeans_plusplus(X, k, random_state=0), 1)
    add("k-means++ (greedy, the default init), all k centres", ms, f"{ms / k:.3f} ms per centre")
    if _triton.available():  # last: each launch shape is a compilation of a few seconds
        # a chunk's share of a Lloyd pass: the Triton kernel's step (one pass over the
        # stored rows: centred, assigned, near ties marked, the others summed) against
        # the same share made of parts (working rows, Triton nearest two, the near-tie
        # margins, float-atomic sums)
        stored, origin = problem.source_rows(0, chunk)
        rows_sq = problem.squared_row_norms[:chunk]
        backend.custom_kernel = "triton"
        for precision in ("tf32", "tf32x3"):
            for fused in (True, False):
                step = backend.reduced_step if fused else partial(Backend.reduced_step, backend)
                ms = gpu_ms(
                    cp,
                    lambda p=precision, f=step: f(stored, origin, centers, csq, rows_sq, None, p),
                    repeats,
                )
                how = "one kernel (step mode)" if fused else "in parts"
                add(f"a pass's share, Triton {precision}, {how} (all rows)", ms * n / chunk)
        backend.custom_kernel = default_kernels
        scaled = -2.0 * centers
        hopper = int(cp.cuda.Device().compute_capability) >= 90
        for precision, shapes in TRITON_SHAPES.items():
            default = _triton.config_for(precision, d, hopper)
            for config in (default, *(c for c in shapes if c != default)):
                ms = gpu_ms(
                    cp,
                    lambda p=precision, c=config: _triton.nearest_two(Xc, scaled, csq, p, c),
                    repeats,
                )
                shape = (  # rows x centres a block / warps / stages / rows kept or sliced
                    f"{config.block_m}x{config.block_n}/{config.num_warps}w/"
                    f"{config.num_stages}s/{'kept' if config.resident else 'sliced'}"
                )
                add(
                    f"Triton nearest two, {precision}, {shape} (all rows)",
                    ms * n / chunk,
                    "the default" if config == default else "",
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
