"""The benchmark harness: the same seeded data and the same initial centroids for every
contender, a fixed number of Lloyd iterations, repetitions alternated between
contenders, medians of milliseconds per iteration, the ratio to this project, agreement
of the final inertia, and peak memory. Run it with ``python benchmarks/run.py`` (or
``kmeans-gpu bench`` from a checkout); it prints a Markdown table and can write JSON.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

#: name -> (n_samples, n_features, n_clusters, needs a GPU)
WORKLOADS: dict[str, tuple[int, int, int, bool]] = {
    "blog": (1_200, 2, 12, False),
    "W1": (1_000_000, 2, 12, False),
    "W2": (200_000, 64, 256, False),
    "W3": (100_000, 128, 1_024, False),
    "G1": (1_000_000, 128, 1_024, True),
    "G2": (10_000_000, 64, 4_096, True),
}
OURS = "kmeans-gpu"


def make_data(name: str, dtype: Any = np.float32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded blobs for a workload and its initial centroids (k distinct rows)."""
    n, d, k, _ = WORKLOADS[name]
    rng = np.random.default_rng(seed)
    if name == "blog":
        from kmeans_gpu import generate_clusters

        X = generate_clusters(12, 100, 0.01, random_state=seed)
    else:
        blobs = rng.uniform(-10, 10, size=(k, d)).astype(dtype)
        X = blobs[rng.integers(k, size=n)]
        X += rng.standard_normal(size=(n, d), dtype=np.dtype(dtype).type)
    X = np.ascontiguousarray(X, dtype=dtype)
    init = X[np.sort(rng.choice(n, k, replace=False))].copy()
    return X, init


@dataclass
class Measurement:
    """One timed run."""

    seconds: float
    n_iter: int
    centers: np.ndarray
    peak_host_bytes: int | None = None
    peak_gpu_bytes: int | None = None


@dataclass
class Contender:
    """A K-means implementation under test: ``run(X, init, iterations)`` on data
    already where it computes (``prepare`` moves it there, untimed)."""

    name: str
    run: Callable[[Any, Any, int], Measurement]
    prepare: Callable[[np.ndarray, np.ndarray], tuple[Any, Any]] = lambda X, init: (X, init)
    gpu: bool = False
    note: str = ""
    only: Sequence[str] = ()
    #: ``memory(X, init, iterations)``: a warm-up run that returns its peak device
    #: memory in bytes, the data included (for contenders whose timed runs cannot
    #: measure it without slowing down)
    memory: Callable[[Any, Any, int], int] | None = None


@dataclass
class Row:
    workload: str
    shape: str
    contender: str
    ms_per_iter: float
    samples_ms: list[float]
    n_iter: int
    inertia: float
    inertia_rel_diff: float | None = None
    ratio: float | None = None
    peak_host_mib: float | None = None
    peak_gpu_mib: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# -- memory ---------------------------------------------------------------------------
def _reset_host_peak() -> int | None:
    """Reset the kernel's peak-RSS mark (Linux) and return the RSS now, in bytes."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status("VmRSS")
    except OSError:
        return None


def _status(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@contextlib.contextmanager
def _host_peak() -> Iterator[list[int | None]]:
    out: list[int | None] = [None]
    base = _reset_host_peak()
    yield out
    peak = _status("VmHWM")
    if base is not None and peak is not None:
        out[0] = max(0, peak - base)


def device_peak_bytes(fn: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``fn`` (CuPy work) and return its result and the most device memory it held
    at once beyond what was in use before: the running sum of what CuPy's memory pool
    handed out and took back, seen by a memory hook (exact, unlike the pool's total,
    which keeps freed blocks; the hook costs a little time on every allocation, so
    time runs without it)."""
    import cupy
    from cupy.cuda import memory_hook

    class PeakHook(memory_hook.MemoryHook):  # type: ignore[misc]
        name = "kmeans_gpu_peak_bytes"

        def __init__(self) -> None:
            self.in_use = self.peak = 0

        def malloc_postprocess(self, **kwargs: Any) -> None:
            self.in_use += int(kwargs["mem_size"])
            self.peak = max(self.peak, self.in_use)

        def free_postprocess(self, **kwargs: Any) -> None:
            self.in_use -= int(kwargs["mem_size"])

    hook = PeakHook()
    with hook:
        out = fn()
        cupy.cuda.Device().synchronize()
    return out, hook.peak


# -- contenders -----------------------------------------------------------------------
def _timed(fn: Callable[[], Any], sync: Callable[[], None] = lambda: None) -> tuple[float, Any]:
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - start, out


#: variants of kmeans-gpu: name suffix -> (note, backend factory, workloads (all if empty))
VARIANTS: dict[str, tuple[str, Callable[[], Any], tuple[str, ...]]] = {
    "without numba": (
        "the pure NumPy path (NumpyBackend without numba)",
        lambda: _backends().make_numpy(numba=False),
        (),
    ),
    "plain CuPy": (
        "CupyBackend(kernels=False): CuPy's own operations, no CUDA kernel",
        lambda: _backends().make_cupy(kernels=False),
        (),
    ),
}
#: the name every experimental contender's starts with (never matches "cupy]")
LAB = f"{OURS} lab"


@dataclass(frozen=True)
class LabVariant:
    """An experimental contender on CuPy: ``kmeans_gpu.experimental.kmeans`` (or its
    frame stream) with a backend object and an engine chosen by ``precision``."""

    note: str
    backend: Callable[[], Any]
    precision: str = "exact"
    deterministic: bool = False
    frames: bool = False
    triton: bool = False


def _lab() -> Any:
    from kmeans_gpu import experimental

    return experimental


#: the experimental contenders: name suffix -> variant (on CuPy only)
LAB_VARIANTS: dict[str, LabVariant] = {
    "tf32": LabVariant(
        "TF32 products (cuBLAS), near ties settled exactly",
        lambda: _lab().CupyBackend(),
        "tf32",
    ),
    "tf32x3": LabVariant(
        "split TF32 (one cuBLAS TF32 product of inner size 3d), near ties settled exactly",
        lambda: _lab().CupyBackend(),
        "tf32x3",
    ),
    "tf32x3 Triton": LabVariant(
        "split TF32 in the Triton kernel's step (the exact labels, no scores written)",
        lambda: _lab().CupyBackend(triton=True),
        "tf32x3",
        triton=True,
    ),
    "tf32 Triton": LabVariant(
        "TF32 in the Triton kernel's step",
        lambda: _lab().CupyBackend(triton=True),
        "tf32",
        triton=True,
    ),
    "deterministic one-hot": LabVariant(
        "deterministic=True, the core's one-hot product",
        lambda: _lab().CupyBackend(),
        deterministic=True,
    ),
    "deterministic sorted": LabVariant(
        "deterministic=True, the sorted-segments kernel",
        lambda: _lab().CupyBackend(deterministic_sums="sorted"),
        deterministic=True,
    ),
    "deterministic fixed-point": LabVariant(
        "deterministic=True, 64-bit fixed point",
        lambda: _lab().CupyBackend(deterministic_sums="fixed-point"),
        deterministic=True,
    ),
    "frames, SQ_DIST": LabVariant(
        "frame stream, each iteration's inertia by the SQ_DIST kernel",
        lambda: _lab().CupyBackend(sq_dist_kernel=True),
        frames=True,
    ),
}


def _backends() -> Any:
    import types

    from kmeans_gpu.backends import _cupy, _numpy

    return types.SimpleNamespace(make_numpy=_numpy.make_backend, make_cupy=_cupy.make_backend)


def _ours(backend: str, variant: str | None = None) -> Contender:
    """kmeans-gpu on ``backend`` as a user gets it, or one of its :data:`VARIANTS` (a
    backend object of its own)."""
    from kmeans_gpu import kmeans

    chosen: Any = backend if variant is None else VARIANTS[variant][1]()

    def solve(X: Any, init: Any, iterations: int) -> tuple[Any, int]:
        centers, _, _, n_iter = kmeans(
            X, init.shape[0], init=init, max_iter=iterations, tol=0.0, backend=chosen
        )
        return centers, n_iter

    name = f"{OURS}[{backend}]"
    if variant is None:
        return _our_contender(name, backend, solve)
    note, _, only = VARIANTS[variant]
    return _our_contender(f"{name} {variant}", backend, solve, note=note, only=only)


def _lab_contender(suffix: str) -> Contender:
    """The experimental contender :data:`LAB_VARIANTS` ``[suffix]``, on CuPy: its
    backend object made once, a new engine for each fit."""
    variant = LAB_VARIANTS[suffix]
    lab = _lab()
    chosen = variant.backend()
    options = {"precision": variant.precision, "backend": chosen, "tol": 0.0}

    def solve(X: Any, init: Any, iterations: int) -> tuple[Any, int]:
        if variant.frames:
            steps = lab.iter_frames(
                X, init, max_iter=iterations, empty_cluster="relocate", **options
            )
            frames = list(steps)
            return frames[-1].centroids, frames[-1].iteration
        centers, _, _, n_iter = lab.kmeans(
            X,
            init.shape[0],
            init=init,
            max_iter=iterations,
            deterministic=variant.deterministic,
            **options,
        )
        return centers, n_iter

    return _our_contender(f"{LAB} {suffix}", "cupy", solve, note=variant.note)


def _lab_contenders() -> tuple[list[Contender], list[str]]:
    """The experimental contenders that can run here (CuPy is), and a line for each
    left out."""
    from kmeans_gpu.experimental import _triton

    chosen, skipped = [], []
    for suffix, variant in LAB_VARIANTS.items():
        if variant.triton and not _triton.available():
            skipped.append(f"{LAB} {suffix}: needs triton and torch")
        else:
            chosen.append(_lab_contender(suffix))
    return chosen, skipped


def _our_contender(
    name: str,
    backend: str,
    solve: Callable[[Any, Any, int], tuple[Any, int]],
    note: str = "",
    only: Sequence[str] = (),
) -> Contender:
    """A kmeans-gpu contender from ``solve(X, init, iterations) -> (centres, n_iter)``.

    Timed runs find CuPy's memory pool as the warm-up left it, as a user's second fit
    does (and as the torch peers find their caching allocator); the warm-up measures the
    peak device memory with a memory hook, which costs time on every allocation."""
    sync: Callable[[], None] = lambda: None  # noqa: E731
    memory = None
    if backend == "cupy":

        def sync() -> None:
            import cupy

            cupy.cuda.Device().synchronize()

        def memory(X: Any, init: Any, iterations: int) -> int:
            _, peak = device_peak_bytes(lambda: solve(X, init, iterations))
            return int(X.nbytes) + peak

    def run(X: Any, init: Any, iterations: int) -> Measurement:
        with _host_peak() as host:
            seconds, (centers, n_iter) = _timed(lambda: solve(X, init, iterations), sync)
        return Measurement(seconds, n_iter, _host(centers), host[0])

    return Contender(
        name,
        run,
        _to_backend(backend),
        gpu=backend == "cupy",
        note=note,
        only=only,
        memory=memory,
    )


def _numpy_is_compiled() -> bool:
    from kmeans_gpu.backends import get_backend

    return type(get_backend("numpy")).__name__ == "NumbaBackend"


def _ours_frames(backend: str) -> Contender:
    """The frame stream on ``backend``."""
    from kmeans_gpu import iter_frames

    def solve(X: Any, init: Any, iterations: int) -> tuple[Any, int]:
        steps = iter_frames(
            X, init, max_iter=iterations, tol=0.0, empty_cluster="relocate", backend=backend
        )
        frames = list(steps)
        return frames[-1].centroids, frames[-1].iteration

    note = "frame stream: every iteration's centroids and labels copied to the host"
    return _our_contender(f"{OURS}[{backend}] frames", backend, solve, note=note)


def _to_backend(backend: str) -> Callable[[np.ndarray, np.ndarray], tuple[Any, Any]]:
    if backend != "cupy":
        return lambda X, init: (X, init)

    def prepare(X: np.ndarray, init: np.ndarray) -> tuple[Any, Any]:
        import cupy

        return cupy.asarray(X), cupy.asarray(init)

    return prepare


def _host(x: Any) -> np.ndarray:
    if hasattr(x, "get"):
        return x.get()
    if type(x).__module__.startswith("torch"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _sklearn(algorithm: str) -> Contender:
    def run(X: Any, init: Any, iterations: int) -> Measurement:
        from sklearn.cluster import KMeans as SKKMeans

        model = SKKMeans(
            init.shape[0], init=init, n_init=1, max_iter=iterations, tol=0.0, algorithm=algorithm
        )
        with _host_peak() as host:
            seconds, _ = _timed(lambda: model.fit(X))
        return Measurement(seconds, int(model.n_iter_), model.cluster_centers_, host[0])

    return Contender(f"scikit-learn {algorithm}", run)


def _faiss() -> Contender:
    def run(X: Any, init: Any, iterations: int) -> Measurement:
        import faiss

        model = faiss.Kmeans(
            X.shape[1], init.shape[0], niter=iterations, seed=0, max_points_per_centroid=X.shape[0]
        )
        X32, init32 = np.asarray(X, np.float32), np.asarray(init, np.float32)
        with _host_peak() as host:
            seconds, _ = _timed(lambda: model.train(X32, init_centroids=init32))
        return Measurement(seconds, iterations, model.centroids, host[0])

    return Contender("faiss-cpu", run, note="float32 only")


def _torch_prepare(X: np.ndarray, init: np.ndarray) -> tuple[Any, Any]:
    import torch

    return torch.from_numpy(X).cuda(), torch.from_numpy(init).cuda()


def _torch_measure(fn: Callable[[], Any], iterations: int) -> Measurement:
    import torch

    torch.cuda.reset_peak_memory_stats()
    seconds, centers = _timed(fn, torch.cuda.synchronize)
    return Measurement(
        seconds, iterations, _host(centers), peak_gpu_bytes=int(torch.cuda.max_memory_allocated())
    )


def _flash_kmeans() -> Contender:
    def run(X: Any, init: Any, iterations: int) -> Measurement:
        from flash_kmeans import batch_kmeans_Euclid

        def fit() -> Any:
            _, centers, _ = batch_kmeans_Euclid(
                X[None],
                init.shape[0],
                max_iters=iterations,
                tol=0.0,
                init_centroids=init[None].clone(),
            )
            return centers[0]

        return _torch_measure(fit, iterations)

    return Contender("flash-kmeans", run, _torch_prepare, gpu=True)


def _fast_pytorch_kmeans() -> Contender:
    def run(X: Any, init: Any, iterations: int) -> Measurement:
        from fast_pytorch_kmeans import KMeans as FPKMeans

        model = FPKMeans(
            n_clusters=init.shape[0], max_iter=iterations, tol=-1.0, mode="euclidean", verbose=0
        )

        def fit() -> Any:
            model.fit_predict(X, centroids=init.clone())
            return model.centroids

        return _torch_measure(fit, iterations)

    return Contender("fast-pytorch-kmeans", run, _torch_prepare, gpu=True)


def _fastkmeans() -> Contender:
    def run(X: Any, init: Any, iterations: int) -> Measurement:
        from fastkmeans import FastKMeans

        model = FastKMeans(
            X.shape[1],
            init.shape[0],
            niter=iterations,
            tol=-1.0,
            gpu=True,
            seed=0,
            max_points_per_centroid=1_000_000_000,  # no subsampling: every point, every time
        )
        data = _host(X)
        return _torch_measure(lambda: (model.train(data), model.centroids)[1], iterations)

    return Contender(
        "fastkmeans",
        run,
        _torch_prepare,
        gpu=True,
        note="own random initial centroids (no way to pass them in)",
    )


def _blog_post_loop() -> Contender | None:
    try:
        from tests import blog_post_reference as ref
    except ImportError:
        return None

    def run(X: Any, init: Any, iterations: int) -> Measurement:
        def loop() -> np.ndarray:
            centroids = np.asarray(init, dtype=np.float64)
            for _ in range(iterations):
                labels = ref.assignPointsToCentroids(centroids, X)
                centroids = ref.recalcCentroids(centroids, X, labels)
            return centroids

        with _host_peak() as host:
            seconds, centers = _timed(loop)
        return Measurement(seconds, iterations, centers, host[0])

    return Contender(
        "the blog post's per-point loop",
        run,
        only=("blog",),
        note="the blog post's assignPointsToCentroids / recalcCentroids",
    )


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def contenders(include_gpu: bool) -> tuple[list[Contender], list[str]]:
    """What can run here, and a line for each contender left out."""
    from kmeans_gpu.backends import available_backends

    chosen: list[Contender] = []
    skipped: list[str] = []
    backends = available_backends()
    for backend in backends:
        chosen += [_ours(backend), _ours_frames(backend)]
        if backend == "numpy" and _numpy_is_compiled():
            chosen.append(_ours("numpy", "without numba"))
        if backend == "cupy":
            chosen.append(_ours("cupy", "plain CuPy"))
            lab, left_out = _lab_contenders()
            chosen += lab
            skipped += left_out
    chosen += [_sklearn("lloyd"), _sklearn("elkan")]
    for module, factory in (("faiss", _faiss),):
        (
            chosen.append(factory())
            if _installed(module)
            else skipped.append(f"{module}: not installed")
        )
    gpu_torch = include_gpu and "cupy" in backends and _installed("torch")
    for module, factory in (
        ("flash_kmeans", _flash_kmeans),
        ("fastkmeans", _fastkmeans),
        ("fast_pytorch_kmeans", _fast_pytorch_kmeans),
    ):
        if gpu_torch and _installed(module):
            chosen.append(factory())
        else:
            skipped.append(f"{module}: needs torch, a CUDA device and the package")
    blog = _blog_post_loop()
    if blog is not None:
        chosen.append(blog)
    else:
        skipped.append("the blog post's loop: tests/blog_post_reference.py not importable")
    return chosen, skipped


# -- the run --------------------------------------------------------------------------
def final_inertia(X: Any, centers: Any, backend: str = "numpy") -> float:
    """Σ‖x − nearest centre‖², computed the same way (exactly) for every contender."""
    from kmeans_gpu._api import prepare
    from kmeans_gpu._assign import assign, centers_for, inertia

    problem, _, valid = prepare(X, None, backend, centers=centers)
    xp = problem.backend.xp
    labels = xp.empty(problem.n_samples, dtype=xp.int32, device=problem.device)
    assign(problem, centers_for(problem, valid), labels, statistics=False)
    return inertia(problem, valid, labels)


def _evaluator(X: np.ndarray, on_gpu: bool) -> Callable[[np.ndarray], float]:
    """Final inertia of host centres; on the GPU for the GPU workloads (X moved once)."""
    if not on_gpu:
        return lambda centers: final_inertia(X, np.asarray(centers, X.dtype))
    import cupy

    device_X = cupy.asarray(X)
    return lambda centers: final_inertia(device_X, cupy.asarray(centers, X.dtype), "cupy")


def run_benchmark(
    workloads: Sequence[str],
    *,
    iterations: int = 10,
    repeats: int = 5,
    dtype: Any = np.float32,
    include: Sequence[str] = (),
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Run every available contender on every workload; returns the JSON document."""
    from kmeans_gpu.backends import available_backends

    gpu = "cupy" in available_backends()
    pool, skipped = contenders(include_gpu=gpu)
    if include:  # a contender's whole name selects it alone, other words any name with them
        names = {c.name for c in pool}
        pool = [
            c for c in pool
            if any(word == c.name or (word not in names and word in c.name) for word in include)
        ]  # fmt: skip
    rows: list[Row] = []
    for name in workloads:
        n, d, k, needs_gpu = WORKLOADS[name]
        if needs_gpu and not gpu:
            skipped.append(f"{name}: needs a GPU")
            continue
        X, init = make_data(name, dtype)
        active = [c for c in pool if not c.only or name in c.only]
        if needs_gpu:  # on the CPU only scikit-learn's Lloyd, once and briefly
            active = [c for c in active if c.gpu or c.name == "scikit-learn lloyd"]
        prepared: dict[str, tuple[Any, Any]] = {}
        warm_peaks: dict[str, int] = {}
        for c in list(active):  # prepare and warm up (imports, compilation, thread pools)
            try:
                prepared[c.name] = c.prepare(X, init)
                if c.memory is not None:
                    warm_peaks[c.name] = c.memory(*prepared[c.name], min(2, iterations))
                elif c.gpu or not needs_gpu:
                    c.run(*prepared[c.name], min(2, iterations))
            except Exception as exc:  # a broken peer must not sink the whole run
                active.remove(c)
                prepared.pop(c.name, None)
                skipped.append(f"{c.name} on {name}: failed ({type(exc).__name__}: {exc})")
                log(f"{name}: {c.name} failed: {exc!r}")
        if not active:
            skipped.append(f"{name}: no contender could run")
            continue
        samples: dict[str, list[Measurement]] = {c.name: [] for c in active}
        for rep in range(repeats):
            shift = rep % len(active)
            for c in active[shift:] + active[:shift]:
                brief = needs_gpu and not c.gpu
                if brief and rep:
                    continue
                count = min(3, iterations) if brief else iterations
                m = c.run(*prepared[c.name], count)
                samples[c.name].append(m)
                per_iteration = m.seconds / max(m.n_iter, 1) * 1e3
                log(f"{name} rep {rep + 1}/{repeats}: {c.name}: {per_iteration:.3f} ms/iteration")
        evaluate = _evaluator(X, needs_gpu)
        for c in active:
            runs = samples[c.name]
            per_iter = [m.seconds / max(m.n_iter, 1) * 1e3 for m in runs]
            last = runs[-1]
            inertia = evaluate(last.centers)
            host = [m.peak_host_bytes for m in runs if m.peak_host_bytes is not None]
            gpu_peak = [m.peak_gpu_bytes for m in runs if m.peak_gpu_bytes is not None]
            gpu_peak += [warm_peaks[c.name]] if c.name in warm_peaks else []
            row = Row(
                workload=name,
                shape=f"{n:,} × {d}, k = {k:,}",
                contender=c.name,
                ms_per_iter=statistics.median(per_iter),
                samples_ms=per_iter,
                n_iter=last.n_iter,
                inertia=inertia,
                peak_host_mib=max(host) / 2**20 if host else None,
                peak_gpu_mib=max(gpu_peak) / 2**20 if gpu_peak else None,
                note=c.note,
            )
            rows.append(row)
        best_ours = min(  # kmeans-gpu[backend] as a user gets it (not a variant of it)
            (
                r
                for r in rows
                if r.workload == name and r.contender.startswith(OURS) and r.contender[-1] == "]"
            ),
            key=lambda r: r.ms_per_iter,
            default=None,
        )
        reference = best_ours
        for r in rows:
            if r.workload == name and reference is not None:  # else no ratios to give
                r.ratio = r.ms_per_iter / reference.ms_per_iter
                r.inertia_rel_diff = abs(r.inertia - reference.inertia) / max(
                    reference.inertia, 1e-300
                )
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "settings": {
            "iterations": iterations,
            "repeats": repeats,
            "dtype": np.dtype(dtype).name,
            "data": "seeded blobs (seed 0); identical initial centroids: k distinct rows",
            "timing": "wall clock of the whole fit / Lloyd iterations run, median over "
            "repetitions alternated between contenders, after one warm-up run each",
        },
        "skipped": skipped,
        "results": [asdict(r) for r in rows],
    }


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info: dict[str, Any] = {"cpu": cpu, "cores": cores, "python": platform.python_version()}
    versions = {}
    for module in (
        "numpy",
        "scipy",
        "sklearn",
        "numba",
        "cupy",
        "torch",
        "triton",
        "faiss",
        "flash_kmeans",
        "fastkmeans",
        "fast_pytorch_kmeans",
        "kmeans_gpu",
    ):
        if (
            module in ("cupy", "torch", "triton")
            and module not in sys.modules
            and not _installed(module)
        ):
            continue
        if not _installed(module):
            continue
        with contextlib.suppress(Exception):
            versions[module] = getattr(importlib.import_module(module), "__version__", "?")
    info["versions"] = versions
    from kmeans_gpu.backends import available_backends

    if "cupy" in available_backends():
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        info["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
        info["gpu_memory_gib"] = round(props["totalGlobalMem"] / 2**30, 1)
    else:
        info["gpu"] = None
    from threadpoolctl import threadpool_info

    info["blas"] = sorted(
        {
            f"{m['internal_api']} ({m['num_threads']} threads)"
            for m in threadpool_info()
            if m["user_api"] == "blas"
        }
    )
    return info


def markdown(doc: dict[str, Any]) -> str:
    """The document as a Markdown section for BENCHMARKS.md."""
    m = doc["machine"]
    s = doc["settings"]
    gpu = m.get("gpu") or "none"
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    lines = [
        f"### {doc['date']} — {m['cpu']}, {m['cores']} cores; GPU: {gpu}",
        "",
        f"Python {m['python']}; {versions}; BLAS: {', '.join(m.get('blas', []))}.",
        f"{s['dtype']} data, {s['data']}; {s['iterations']} Lloyd iterations (tol = 0); "
        f"{s['timing']} ({s['repeats']} repetitions).",
        "",
        "| workload | size | contender | ms / iteration (median) | × kmeans-gpu | "
        "inertia vs kmeans-gpu | peak host MiB | peak GPU MiB | note |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in doc["results"]:
        diff = r["inertia_rel_diff"]
        lines.append(
            f"| {r['workload']} | {r['shape']} | {r['contender']} | {r['ms_per_iter']:.3g} | "
            f"{r['ratio']:.2f} | {_agreement(diff)} | "
            f"{_mib(r['peak_host_mib'])} | {_mib(r['peak_gpu_mib'])} | {r['note']} |"
        )
    if doc["skipped"]:
        lines += ["", "Not run: " + "; ".join(doc["skipped"]) + "."]
    return "\n".join(lines) + "\n"


def _agreement(diff: float | None) -> str:
    return "–" if diff is None else "same" if diff < 1e-6 else f"{diff:.1e}"


def _mib(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def _quiet(line: str) -> None:
    pass


def _progress(line: str) -> None:
    sys.stderr.write(line + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py", description="Compare kmeans-gpu with its peers."
    )
    parser.add_argument(
        "workloads",
        nargs="*",
        default=["blog", "W1", "W2", "W3", "G1", "G2"],
        help=f"any of {', '.join(WORKLOADS)} (default: all that can run)",
    )
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument(
        "--only",
        nargs="*",
        default=(),
        help="contenders named so, or whose name has one of these words",
    )
    parser.add_argument("--json", help="also write the results as JSON to this file")
    parser.add_argument("--markdown", help="also write the Markdown table to this file")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown:
        parser.error(
            f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}"
        )
    doc = run_benchmark(
        args.workloads,
        iterations=args.iterations,
        repeats=args.repeats,
        dtype=np.dtype(args.dtype).type,
        include=args.only,
        log=_quiet if args.quiet else _progress,
    )
    table = markdown(doc)
    sys.stdout.write(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table)
    return 0
