"""Where a Lloyd iteration's time goes on a CUDA GPU: ``python benchmarks/gpu_phases.py``.

For each GPU workload, times with CUDA events, median of ``--repeats`` after a warm-up:

* first, where a fit's fixed cost falls: one fit lap by lap (set-up, initial centres,
  each iteration, the end of the run), and one fit under torch's profiler, whose CUPTI
  tracing sees every kernel and CUDA call of the process: the kernels and copies that
  took the device's time, the CUDA calls that took the host's (waits, copies, pinned
  allocations, launches), and how busy the device was;
* the ceilings: a device-to-device copy of X and cuBLAS's float32 product of one chunk
  with the centres, exact and TF32, and the TF32 product of split TF32's split inputs
  (TFLOP/s), with the split itself;
* each step of one iteration, over all rows (timed on one or two chunks, scaled):
  centring the rows, the core's exact nearest centres (its CUDA kernel, and CuPy's own
  operations), the reduced-precision nearest two (cuBLAS and, where triton is
  installed, the Triton kernel), the share of rows each precision leaves to the exact
  settling, the per-cluster sums (float atomics; deterministic: the one-hot product,
  the sorted-segments kernel, 64-bit fixed point), the final assignment and inertia
  (CuPy's operations and the ``SQ_DIST`` kernel);
* from fits of 1 and ``1 + iterations`` iterations, the cost of one Lloyd iteration
  and the fixed cost of a fit, for the core's pass and each experimental engine, and
  for workspaces of 256 MiB, 1 GiB (the default's cap) and 4 GiB; a fit's wall clock
  with CuPy's memory pool warm and emptied first, the device memory a fit holds beyond
  X (a CuPy memory hook), greedy k-means++ (the default init) for all k centres;
* last, where triton is installed, a chunk's share of a pass through the Triton
  kernel's step mode against the same share in parts, and the Triton kernel's launch
  shapes for TF32 and split TF32 (the default and :data:`TRITON_SHAPES`).

It prints one table per workload and, with ``--json``, writes every number. A script to
learn from, not a test: it asserts nothing, and reports which share of the labels each
way of finding them gives as the core's exact pass does.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import WORKLOADS, device_peak_bytes, make_data
from kmeans_gpu import experimental as lab
from kmeans_gpu import kmeans, kmeans_plusplus
from kmeans_gpu._api import _warn_if_collapsed, prepare, setup
from kmeans_gpu._assign import assign, centers_for, inertia, nearest, score_margin
from kmeans_gpu._validation import check_array
from kmeans_gpu.backends import _cupy
from kmeans_gpu.experimental import TensorCores, _triton
from kmeans_gpu.experimental._precision import (
    CENTER_PIECES,
    PRECISIONS,
    ROW_PIECES,
    TF32,
    Margin,
)

#: launch shapes of the Triton kernel timed besides the default (tests/experimental/
#: test_triton.py compiles the defaults for sm_80 and sm_90)
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
    distinct-cluster check; and the whole fit's milliseconds."""
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
    steps = job.start()[1]
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
    lap("result: distinct clusters")
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


#: the fits whose Lloyd iteration is timed: name -> keyword arguments of ``lab.kmeans``
#: (a backend object made once; ``precision="exact"`` is the core's pass)
def _fits(triton: bool) -> dict[str, dict[str, Any]]:
    fits = {
        "core, CUDA kernel": {"backend": _cupy.make_backend(), "precision": "exact"},
        "core, CuPy operations": {
            "backend": _cupy.CupyBackend(kernels=False),
            "precision": "exact",
        },
        "lab tf32 (cuBLAS)": {"backend": lab.CupyBackend(), "precision": "tf32"},
        "lab tf32x3 (cuBLAS)": {"backend": lab.CupyBackend(), "precision": "tf32x3"},
    }
    if triton:
        step = lab.CupyBackend(triton=True)
        fits["lab tf32 (Triton step)"] = {"backend": step, "precision": "tf32"}
        fits["lab tf32x3 (Triton step)"] = {"backend": step, "precision": "tf32x3"}
    return fits


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
    solver = lab.CupyBackend()
    plain = lab.CupyBackend(kernels=False)
    with_triton = _triton.available()
    problem, _, valid = prepare(X, None, solver, centers=init)
    centers = centers_for(problem, valid)
    chunks = problem.chunks(k)
    chunk = chunks[0][1] - chunks[0][0]
    Xc = problem.rows(0, chunk)
    working = centers.working
    results: list[dict[str, Any]] = []

    def add(step: str, value: float, note: str = "", unit: str = "ms") -> None:
        results.append({"workload": name, "step": step, unit: value, "note": note})
        say(f"{name:3} {step:66} {value:10.3f} {unit:4}  {note}")

    say(f"{name}: {n:,} x {d}, k = {k:,}; {len(chunks)} chunks of {chunk:,} rows")
    # first, the fixed cost of a fit: lap by lap, then under CUPTI's tracing
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
    # the ceilings
    ms = gpu_ms(cp, lambda: X.copy(), repeats)
    add("copy X (device to device)", ms, f"{2 * X.nbytes / ms / 1e6:.0f} GB/s read + written")
    flop = 2.0 * chunk * k * d
    products = {"X·Cᵀ": lambda: Xc @ working.T, "C·Xᵀ": lambda: working @ Xc.T}
    for precision, pinned in (("exact", solver.exact_products), ("tf32", solver.tf32_products)):
        for layout, product in products.items():
            with pinned(X.dtype):
                ms = gpu_ms(cp, product, repeats)
            add(
                f"cuBLAS chunk product {layout}, {precision} (all rows)",
                ms * n / chunk,
                f"{flop / ms / 1e9:.1f} TFLOP/s",
            )
    split_rows = solver.split_columns(Xc, ROW_PIECES)
    split_centers = solver.split_columns(-2.0 * working, CENTER_PIECES)
    ms = gpu_ms(
        cp, lambda a=split_rows, b=split_centers: solver.reduced_product(a, b, TF32), repeats
    )
    add(
        "cuBLAS chunk product X·Cᵀ, tf32x3 (3d inner; all rows)",
        ms * n / chunk,
        f"{3 * flop / ms / 1e9:.1f} TFLOP/s",
    )
    ms = gpu_ms(cp, lambda: solver.split_columns(Xc, ROW_PIECES), repeats)
    add("split every chunk into TF32 parts (kernel, all rows)", ms * n / chunk)
    del split_rows, split_centers
    try:  # the same float32 product through PyTorch (its own cuBLAS/cuBLASLt choice)
        import torch

        tX, tC = torch.from_dlpack(Xc), torch.from_dlpack(working)
        torch.backends.cuda.matmul.allow_tf32 = False
        ms = gpu_ms(cp, lambda: tX @ tC.T, repeats)
        add(
            "torch.matmul chunk product, exact (all rows)",
            ms * n / chunk,
            f"{flop / ms / 1e9:.1f} TFLOP/s",
        )
    except Exception as exc:  # no torch, or no CUDA torch
        say(f"(torch.matmul not timed: {type(exc).__name__}: {exc})")
    ms = gpu_ms(cp, lambda: problem.rows(0, chunk), repeats)
    add("centre every chunk (Problem.rows)", ms * n / chunk)
    # the nearest centres: the core's exact pass, then the reduced products
    reference = nearest(problem, centers, 0, chunk)
    for how, backend in (("CUDA kernel", solver), ("CuPy operations", plain)):
        on = dataclasses.replace(problem, backend=backend)
        labels = nearest(on, centers, 0, chunk)
        agree = float(cp.mean((labels == reference).astype(cp.float32)))
        ms = gpu_ms(cp, lambda p=on: nearest(p, centers, 0, chunk), repeats)
        add(f"exact nearest centres, {how} (all rows)", ms * n / chunk, f"agree: {agree:.5f}")
    rows_sq = problem.squared_row_norms[:chunk]
    core_margin = score_margin(problem, rows_sq, centers)
    _, best, second = solver.nearest_two(Xc, working, centers.sq)
    share = float(cp.mean(((second - best) <= core_margin).astype(cp.float32)))
    add("exact: rows the core settles by float64 differences", share, "", unit="of 1")
    ways: list[tuple[str, TensorCores]] = [("cuBLAS", solver)]
    if with_triton:
        ways.append(("Triton kernel", lab.CupyBackend(triton=True)))
    for precision in PRECISIONS.values():
        margin = Margin.of(problem, precision)(cp, rows_sq, centers.largest_norm)
        for how, backend in ways:
            labels, best, second = backend.reduced_nearest_two(Xc, centers, precision)
            near = (second - best) <= margin
            share = float(cp.mean(near.astype(cp.float32)))
            agree = float(cp.mean(((labels == reference) | near).astype(cp.float32)))
            ms = gpu_ms(
                cp,
                lambda b=backend, p=precision: b.reduced_nearest_two(Xc, centers, p),
                repeats,
            )
            add(
                f"{precision.name} nearest two, {how} (all rows)",
                ms * n / chunk,
                f"near ties {share:.4f} of the rows; the others agree: {agree:.5f}",
            )
    # the per-cluster sums
    some = chunks[:2]
    stored = [problem.X[a:b] for a, b in some]
    labels = [reference[: b - a] if a == 0 else nearest(problem, centers, a, b) for a, b in some]
    scale = n / sum(b - a for a, b in some)
    sorted_sums = lab.CupyBackend(deterministic_sums="sorted")
    fixed_point = lab.CupyBackend(deterministic_sums="fixed-point")
    for what, backend, deterministic in (
        ("float atomics", solver, False),
        ("one-hot product (deterministic)", solver, True),
        ("sorted segments kernel (deterministic)", sorted_sums, True),
        ("64-bit fixed point (deterministic)", fixed_point, True),
    ):
        ms = sum(
            gpu_ms(
                cp,
                lambda x=x, lb=lb, b=backend, det=deterministic: b.cluster_sums(
                    x, problem.origin, lb, None, k, det
                ),
                repeats,
            )
            for x, lb in zip(stored, labels, strict=True)
        )
        add(f"cluster sums, {what} (all rows)", ms * scale)
    del stored, labels
    # the fixed cost of a fit, part by part
    ms = gpu_ms(cp, lambda: prepare(X, None, "cupy", centers=init), max(1, repeats // 2))
    add("fit set-up: validation, centring, scale, variance", ms)
    ms = gpu_ms(cp, lambda: check_array(X, backend="cupy"), repeats)
    add("  of which validation (check_array: finite, dtype, layout)", ms)
    final = cp.empty(n, dtype=cp.int32)
    ms = gpu_ms(cp, lambda: assign(problem, centers, final, statistics=False), repeats)
    add("final assignment (all rows, no sums)", ms)
    for how, backend in (
        ("CuPy operations", solver),
        ("SQ_DIST kernel", lab.CupyBackend(sq_dist_kernel=True)),
    ):
        on = dataclasses.replace(problem, backend=backend)
        ms = gpu_ms(cp, lambda p=on: inertia(p, centers.caller, final), repeats)
        add(f"final inertia, {how} (all rows)", ms, "the frame stream's per iteration")

    def iteration_cost(**params: Any) -> tuple[float, float]:
        """A fit of m iterations costs F + m·P: the fixed cost F (validation, centring,
        the final assignment and inertia) and the cost P of one Lloyd iteration."""

        def fit(iterations: int) -> Any:
            return lab.kmeans(X, k, init=init, max_iter=iterations, tol=0.0, **params)

        once = gpu_ms(cp, lambda: fit(1), max(1, repeats // 2))
        more = gpu_ms(cp, lambda: fit(1 + iterations), max(1, repeats // 2))
        per_iteration = (more - once) / iterations
        return per_iteration, once - per_iteration

    for what, params in _fits(with_triton).items():
        per_iteration, fixed = iteration_cost(**params)
        add(f"kmeans(), {what}: one Lloyd iteration", per_iteration, f"fixed cost {fixed:.1f} ms")
    for mib in (256, 1024, 4096):  # the default workspace is 1 GiB at most
        per_iteration, fixed = iteration_cost(
            backend="cupy", precision="exact", working_memory=mib << 20
        )
        add(
            f"kmeans(), working_memory={mib} MiB: one Lloyd iteration",
            per_iteration,
            f"fixed cost {fixed:.1f} ms; "
            f"{len(dataclasses.replace(problem, workspace=mib << 20).chunks(k))} chunks",
        )
    pool = cp.get_default_memory_pool()
    for cold in (False, True):
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
        )
    for policy in ("relocate", "keep"):  # relocating empty clusters: its cost per fit
        ms = gpu_ms(
            cp,
            lambda e=policy: kmeans(X, k, init=init, max_iter=1, tol=0.0, empty_cluster=e),
            max(1, repeats // 2),
        )
        add(f"a fit of one iteration, empty_cluster={policy!r}", ms)
    _, peak = device_peak_bytes(lambda: kmeans(X, k, init=init, max_iter=2, tol=0.0))
    add(
        "device memory held beyond X during a fit (memory hook)",
        peak / 2**20,
        f"{peak / X.nbytes:.2f} of X; workspace {problem.workspace / 2**20:.0f} MiB",
        unit="MiB",
    )
    add(
        "memory pool total after the runs",
        pool.total_bytes() / 2**20,
        f"X: {X.nbytes / 2**20:.0f} MiB",
        unit="MiB",
    )
    # k-means++, the default init: the benchmark starts every contender from given centres
    ms = gpu_ms(cp, lambda: kmeans_plusplus(X, k, random_state=0), 1)
    add("k-means++ (greedy, the default init), all k centres", ms, f"{ms / k:.3f} ms per centre")
    if with_triton:  # last: each launch shape is a compilation of a few seconds
        # a chunk's share of a pass: the Triton step against the same share in parts
        step = lab.CupyBackend(triton=True)
        for precision in PRECISIONS.values():
            margin = Margin.of(problem, precision)
            on = dataclasses.replace(problem, backend=step)
            for how, share in (
                ("one kernel (step mode)", step.reduced_step),
                ("in parts", lambda *a, b=step: TensorCores.reduced_step(b, *a)),
            ):
                ms = gpu_ms(
                    cp,
                    lambda f=share, p=precision, m=margin, o=on: f(o, centers, 0, chunk, p, m),
                    repeats,
                )
                add(f"a pass's share, Triton {precision.name}, {how} (all rows)", ms * n / chunk)
        scaled = -2.0 * working
        hopper = int(cp.cuda.Device().compute_capability) >= 90
        for key, shapes in TRITON_SHAPES.items():
            precision = PRECISIONS[key]
            default = _triton.config_for(precision, d, hopper)
            for config in (default, *(c for c in shapes if c != default)):
                ms = gpu_ms(
                    cp,
                    lambda p=precision, c=config: _triton.nearest_two(
                        Xc, scaled, centers.sq, p, c
                    ),
                    repeats,
                )
                shape = (  # rows x centres a block / warps / stages / rows kept or sliced
                    f"{config.block_m}x{config.block_n}/{config.num_warps}w/"
                    f"{config.num_stages}s/{'kept' if config.resident else 'sliced'}"
                )
                add(
                    f"Triton nearest two, {key}, {shape} (all rows)",
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
