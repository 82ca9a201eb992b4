"""kmeans-gpu on Dask against itself in-process and against dask-ml.

``python benchmarks/dask_bench.py [W1 W2 ...] [--workers 2] [--iterations 10]
[--repeats 5] [--chunks 8] [--json out.json]`` starts a ``distributed.LocalCluster``
of single-threaded worker processes (or joins ``--scheduler ADDRESS``) and prints
Markdown tables:

* each workload (the harness's seeded data and initial centres, float32) fitted for a
  fixed number of iterations from the same centres by kmeans-gpu in this process
  (NumPy), by kmeans-gpu on the cluster and by dask-ml's ``KMeans`` on the same
  persisted dask array, repetitions alternated; medians of whole fits, the final
  inertia recomputed in float64 from each one's centres (and the one it reports), and
  the most memory each worker allocated at once during a fit, beyond what it held
  (X's persisted blocks), traced by tracemalloc in a separate run;
* what Dask adds to an iteration: a bare round trip of one no-op task per worker
  (pinned, gathered), against kmeans-gpu's iterations on data too small to cost
  anything (so an iteration is its round trip), with few and with many chunks; wall
  time and the client's CPU time, medians.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import WORKLOADS, _progress, final_inertia, machine_info, make_data


def _noop(*args: Any) -> None:
    return None


def _trace() -> int:
    """On a worker: start tracing allocations (NumPy's included); the bytes held now."""
    import tracemalloc

    tracemalloc.start()
    tracemalloc.reset_peak()
    return tracemalloc.get_traced_memory()[0]


def _traced_peak() -> int:
    """On a worker: the most bytes held at once since :func:`_trace`; stop tracing."""
    import tracemalloc

    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def _worker_peaks(client: Any, run: Callable[[], Any]) -> tuple[Any, dict[str, int]]:
    """``run()`` and the most memory each worker allocated at once during it, beyond
    what it held before (tracemalloc: a slow run, not timed)."""
    before = client.run(_trace)
    out = run()
    after = client.run(_traced_peak)
    return out, {w: max(0, after[w] - before[w]) for w in before}


def _timed(run: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall and this process's CPU seconds of ``run()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = run()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def round_trips(client: Any, repeats: int = 60) -> tuple[float, float]:
    """Median wall and client CPU ms of one no-op task per worker, pinned and gathered,
    each taking a small array already on its worker."""
    workers = sorted(client.ncores())
    held = [client.submit(np.zeros, 16, workers=[w], pure=False) for w in workers]
    client.gather(held)
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu, _ = _timed(
            lambda: client.gather(
                [
                    client.submit(_noop, h, workers=[w], allow_other_workers=True, pure=False)
                    for h, w in zip(held, workers, strict=True)
                ]
            )
        )
        walls.append(wall)
        cpus.append(cpu)
    return statistics.median(walls) * 1e3, statistics.median(cpus) * 1e3


def iteration_costs(client: Any, chunks: int, iterations: int = 30) -> tuple[float, float]:
    """Median wall and client CPU ms between frames of kmeans-gpu on Dask for 8,192 × 2
    points in ``chunks`` chunks (an iteration's work is a fraction of a millisecond)."""
    import dask.array as da

    from kmeans_gpu import iter_frames

    X = np.random.default_rng(0).normal(size=(8192, 2)).astype(np.float32)
    Xd = client.persist(da.from_array(X, chunks=-(-len(X) // chunks)))
    walls, cpus = [], []
    wall, cpu = time.perf_counter(), time.process_time()
    for frame in iter_frames(Xd, X[:3], max_iter=iterations, display_indices=np.arange(4)):
        now, now_cpu = time.perf_counter(), time.process_time()
        if frame.iteration >= 2:  # the first frames include the set-up
            walls.append(now - wall)
            cpus.append(now_cpu - cpu)
        wall, cpu = now, now_cpu
    return statistics.median(walls) * 1e3, statistics.median(cpus) * 1e3


def contenders(client: Any, peers: bool = True) -> dict[str, Callable[..., Any]]:
    """name -> fit(X, X on the cluster, init, iterations) -> (host centres, the
    inertia the contender reports); dask-ml's too, when ``peers`` and installed."""
    from kmeans_gpu import kmeans

    def in_process(X: Any, Xd: Any, init: np.ndarray, iterations: int) -> Any:
        out = kmeans(X, len(init), init=init, max_iter=iterations, tol=0.0, backend="numpy")
        return out[0], out[2]

    def on_dask(X: Any, Xd: Any, init: np.ndarray, iterations: int) -> Any:
        with client.as_current():
            out = kmeans(Xd, len(init), init=init, max_iter=iterations, tol=0.0)
        return out[0], out[2]

    found: dict[str, Callable[..., Any]] = {
        "kmeans-gpu in-process": in_process,
        "kmeans-gpu on Dask": on_dask,
    }
    if not peers:
        return found
    try:
        from dask_ml.cluster import KMeans as DaskMLKMeans
    except ImportError:
        return found

    def dask_ml(X: Any, Xd: Any, init: np.ndarray, iterations: int) -> Any:
        with client.as_current():
            model = DaskMLKMeans(len(init), init=init, max_iter=iterations, tol=0.0, n_init=1)
            model.fit(Xd)
        return np.asarray(model.cluster_centers_), float(model.inertia_)

    found["dask-ml"] = dask_ml
    return found


def run(
    client: Any,
    workloads: list[str],
    *,
    iterations: int = 10,
    repeats: int = 5,
    chunks: int = 8,
    trips: int = 60,
    peers: bool = True,
    progress: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """The benchmark on ``client``'s cluster: a dict of rows (see the module)."""
    import dask.array as da

    fits: list[dict[str, Any]] = []
    for name in workloads:
        X, init = make_data(name)
        Xd = client.persist(da.from_array(X, chunks=(-(-len(X) // chunks), -1)))
        runs = contenders(client, peers)
        times: dict[str, list[float]] = {c: [] for c in runs}
        peaks: dict[str, int] = {}
        centers: dict[str, Any] = {}
        reported: dict[str, float] = {}
        for c, fit in runs.items():  # warm-up (imports, numba), then each one's peak memory
            fit(X, Xd, init, iterations)
            (centers[c], reported[c]), worker_peaks = _worker_peaks(
                client, functools.partial(fit, X, Xd, init, iterations)
            )
            peaks[c] = max(worker_peaks.values())
        for r in range(repeats):
            for c, fit in runs.items():
                wall, _, _ = _timed(functools.partial(fit, X, Xd, init, iterations))
                times[c].append(wall)
            progress(f"{name}: repetition {r + 1}/{repeats}")
        for c in runs:
            fits.append(
                {
                    "workload": name,
                    "shape": f"{X.shape[0]} × {X.shape[1]}, k = {len(init)}",
                    "contender": c,
                    "fit_ms": statistics.median(times[c]) * 1e3,
                    "ms_per_iter": statistics.median(times[c]) * 1e3 / iterations,
                    "inertia": final_inertia(X, np.asarray(centers[c], dtype=X.dtype)),
                    "reported_inertia": reported[c],
                    "peak_worker_mib": peaks[c] / 2**20 if c != "kmeans-gpu in-process" else None,
                    "data_per_worker_mib": X.nbytes / len(client.ncores()) / 2**20,
                }
            )
    bare_wall, bare_cpu = round_trips(client, trips)
    overhead = [
        {
            "what": "bare round trip, one no-op task per worker",
            "wall_ms": bare_wall,
            "cpu_ms": bare_cpu,
        }
    ]
    for count in (2, 128):
        wall, cpu = iteration_costs(client, count, max(4, trips // 2))
        overhead.append(
            {
                "what": f"kmeans-gpu iteration, 8,192 × 2 in {count} chunks",
                "wall_ms": wall,
                "cpu_ms": cpu,
            }
        )
    return {
        "workers": len(client.ncores()),
        "iterations": iterations,
        "fits": fits,
        "overhead": overhead,
    }


def markdown(doc: dict[str, Any]) -> str:
    trim: dict[Any, str] = {
        True: "Dask's MALLOC_TRIM_THRESHOLD_=65536",
        False: "no MALLOC_TRIM_THRESHOLD_",
        None: "workers as started",
    }
    lines = [
        f"{doc['workers']} worker processes of one thread ({trim[doc.get('malloc_trim')]}); "
        f"{doc['iterations']} iterations from the same centres; medians of alternated "
        "repetitions.",
        "",
        "| workload | shape | contender | fit (ms) | ms / iteration | final inertia | "
        "its inertia_ | peak per worker (MiB) | data per worker (MiB) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in doc["fits"]:
        peak = "" if row["peak_worker_mib"] is None else f"{row['peak_worker_mib']:.1f}"
        lines.append(
            f"| {row['workload']} | {row['shape']} | {row['contender']} | {row['fit_ms']:.0f} | "
            f"{row['ms_per_iter']:.1f} | {row['inertia']:.7g} | "
            f"{row['reported_inertia']:.7g} | {peak} | "
            f"{row['data_per_worker_mib']:.1f} |"
        )
    lines += ["", "| per iteration | wall (ms) | client CPU (ms) |", "|---|---:|---:|"]
    for row in doc["overhead"]:
        lines.append(f"| {row['what']} | {row['wall_ms']:.1f} | {row['cpu_ms']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", default=["W1", "W2"], choices=sorted(WORKLOADS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scheduler", default=None, help="join this scheduler instead")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chunks", type=int, default=8, help="chunks of X (8)")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument(
        "--no-malloc-trim",
        action="store_true",
        help="start the workers without Dask's MALLOC_TRIM_THRESHOLD_=65536 (glibc then "
        "keeps freed memory for reuse instead of mapping every large temporary afresh)",
    )
    args = parser.parse_args(argv)
    import logging
    import warnings

    import dask
    from distributed import Client, LocalCluster

    # the benchmark's own persist of X sends it in the graph, once
    warnings.filterwarnings("ignore", message="Sending large graph")

    if args.scheduler:
        client, cluster = Client(args.scheduler, set_as_default=False), None
    else:
        environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
        if args.no_malloc_trim:
            environ.pop("MALLOC_TRIM_THRESHOLD_", None)
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
            cluster = LocalCluster(
                n_workers=args.workers, threads_per_worker=1, processes=True,
                dashboard_address=None, silence_logs=logging.ERROR,
            )  # fmt: skip
        client = Client(cluster, set_as_default=False)
    try:
        doc = run(
            client, args.workloads, iterations=args.iterations, repeats=args.repeats,
            chunks=args.chunks, progress=_progress,
        )  # fmt: skip
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    doc["machine"] = machine_info()
    doc["malloc_trim"] = not args.no_malloc_trim
    for module in ("dask", "distributed", "dask_ml"):
        with contextlib.suppress(ImportError):
            doc["machine"]["versions"][module] = importlib.import_module(module).__version__
    sys.stdout.write(markdown(doc) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
