"""The ``kmeans-gpu`` command (also ``python -m kmeans_gpu``).

``animate`` renders the seed's scene (or a data file), live or to a file; ``fit``
clusters a data file; ``demo`` prints a clustering of the seed's scene. Errors print one
line and exit with code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

EXIT_USAGE = 2


class CommandError(Exception):
    """A problem to report in one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def load_points(path: str | os.PathLike[str]) -> Any:
    """A 2-D float array from a ``.npy`` file (read without pickle) or a ``.csv`` file
    (comma-separated numbers, an optional header line); a dask array from a ``.zarr``
    store or a folder of numbered ``.npy`` files (needs ``kmeans-gpu[dask]``)."""
    file = Path(path)
    if file.is_dir():
        return _load_stack(file)
    if not file.is_file():
        raise CommandError(f"no such data file: {os.fspath(file)}")
    suffix = file.suffix.lower()
    try:
        if suffix == ".npy":
            data = np.load(file, allow_pickle=False)
        elif suffix == ".csv":
            data = _load_csv(file)
        else:
            raise CommandError(f"{file.name}: data files must be .npy or .csv")
    except ValueError as exc:
        raise CommandError(f"{file.name}: cannot read it: {exc}") from None
    if data.ndim == 1 and suffix == ".csv":
        data = data[:, None]
    if data.ndim != 2 or data.shape[0] == 0 or data.shape[1] == 0:
        raise CommandError(
            f"{file.name}: expected a 2-D array of shape (n_points, n_features), got "
            f"shape {data.shape}"
        )
    if data.dtype.kind not in "biuf":
        raise CommandError(f"{file.name}: expected numbers, got dtype {data.dtype}")
    return data


def _load_stack(folder: Path) -> Any:
    try:
        from ._dask import load_stack
    except ImportError as exc:
        raise CommandError(
            f"{folder.name}: a folder of data needs Dask: pip install 'kmeans-gpu[dask]' ({exc})"
        ) from None
    try:
        data = load_stack(folder)
    except (ImportError, ValueError, OSError) as exc:
        raise CommandError(f"{folder.name}: cannot read it: {exc}") from None
    if data.ndim != 2 or data.shape[0] == 0 or data.shape[1] == 0:
        raise CommandError(
            f"{folder.name}: expected a 2-D array of shape (n_points, n_features), got "
            f"shape {data.shape}"
        )
    return data


def _load_csv(file: Path) -> np.ndarray:
    try:
        return np.loadtxt(file, delimiter=",", ndmin=2)
    except ValueError:
        return np.loadtxt(file, delimiter=",", ndmin=2, skiprows=1)  # a header line


def _add_scene_options(parser: argparse.ArgumentParser, *, data: bool) -> None:
    scene = parser.add_argument_group("the scene (the seed's, unless --data is given)")
    scene.add_argument("--k", type=int, default=12, help="clusters to find (default 12)")
    scene.add_argument(
        "--clusters", type=int, default=12, help="clusters to generate (default 12)"
    )
    scene.add_argument(
        "--points-per-cluster",
        type=int,
        default=100,
        help="points in each generated cluster (default 100)",
    )
    scene.add_argument(
        "--variance",
        type=float,
        default=0.01,
        help="spread of each cluster, times the bounds' span (default 0.01)",
    )
    scene.add_argument(
        "--bounds",
        type=float,
        nargs=2,
        default=(-4.0, 4.0),
        metavar=("LOW", "HIGH"),
        help="range of the cluster centres in x and y (default -4 4)",
    )
    if data:
        scene.add_argument(
            "--data",
            metavar="FILE",
            help="cluster this .npy or .csv file (or, with Dask, a .zarr store or a folder "
            "of numbered .npy files)",
        )
    scene.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    scene.add_argument(
        "--init",
        choices=("random", "k-means++"),
        default="random",
        help="random distinct points, as the seed (default), or k-means++",
    )
    scene.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "numpy", "cupy"),
        help="where to compute (default auto: CuPy if a GPU is present)",
    )


def _scene(args: argparse.Namespace, rng: np.random.RandomState) -> np.ndarray:
    from . import generate_clusters

    if getattr(args, "data", None):
        return load_points(args.data)
    low, high = args.bounds
    return generate_clusters(
        args.clusters,
        args.points_per_cluster,
        args.variance,
        ((low, high), (low, high)),
        random_state=rng,
    )


def _start(args: argparse.Namespace, points: Any, rng: np.random.RandomState) -> Any:
    from . import initialize_centroids, kmeans_plusplus

    if args.init == "random":
        return initialize_centroids(args.k, points, random_state=rng)
    from ._sharded import is_dask_array

    if is_dask_array(points):  # k-means‖, what init="k-means++" means on Dask
        from . import kmeans_parallel

        return kmeans_parallel(points, args.k, random_state=rng, backend=args.backend)
    return kmeans_plusplus(points, args.k, random_state=rng, backend=args.backend)[0]


def _demo(args: argparse.Namespace) -> int:
    from . import get_backend, kmeans

    rng = np.random.RandomState(args.seed)
    points = _scene(args, rng)
    start = _start(args, points, rng)
    backend = get_backend(args.backend)
    began = time.perf_counter()
    centers, labels, inertia, n_iter = kmeans(
        points, args.k, init=start, tol=0.0, max_iter=10_000, empty_cluster="keep", backend=backend
    )
    elapsed = time.perf_counter() - began
    sizes = np.bincount(np.asarray(labels), minlength=args.k)
    out = sys.stdout
    out.write(
        f"clustered {points.shape[0]} points of the seed's scene "
        f"({args.clusters} clusters x {args.points_per_cluster} points) into k={args.k}\n"
    )
    out.write(f"backend: {backend.name}\niterations: {n_iter}\ninertia: {inertia:.6g}\n")
    out.write(f"time: {elapsed * 1e3:.1f} ms\ncentres (x, y, points):\n")
    for (x, y), size in zip(np.asarray(centers), sizes, strict=True):
        out.write(f"  {x:9.4f} {y:9.4f} {size:6d}\n")
    return 0


def has_display() -> bool:
    """Whether a window can be shown: a display server (on Linux and BSDs) and an
    interactive matplotlib backend."""
    if sys.platform.startswith(("linux", "freebsd", "openbsd")) and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return False
    requested = os.environ.get("MPLBACKEND", "").lower()
    return requested not in ("agg", "pdf", "ps", "svg", "cairo", "template", "module://")


def _animate(args: argparse.Namespace) -> int:
    if args.save is None and not has_display():
        raise CommandError(
            "no display to show the animation on; render it to a file instead with "
            "--save [PATH] (.mp4 or .gif)"
        )
    import viz  # first: without matplotlib it says which extra to install

    if args.save is not None:
        import matplotlib

        matplotlib.use("Agg")

    from . import iter_frames
    from .display import make_scene

    rng = np.random.RandomState(args.seed)
    if args.save is None:
        return _interactive(args, rng)
    target, _, _ = viz.check_target(args.save)
    points = _scene(args, rng)
    start = _start(args, points, rng)
    scene = make_scene(points, max_points=args.max_points, random_state=rng, backend=args.backend)
    frames = list(
        iter_frames(
            points,
            start,
            max_iter=args.max_iter,
            backend=args.backend,
            display_indices=scene.indices,
        )
    )
    saved = viz.save(
        frames,
        target,
        points=scene,
        fps=args.fps,
        dpi=args.dpi,
        trails=args.trails,
        inertia_inset=args.inertia,
    )
    sys.stdout.write(f"wrote {saved.n_frames} frames to {saved.path}\n")
    return 0


def _interactive(args: argparse.Namespace, rng: np.random.RandomState) -> int:
    import matplotlib.pyplot as plt

    import viz

    low, high = args.bounds
    session = viz.InteractiveSession(
        k=args.k,
        data=load_points(args.data) if args.data else None,
        scene={
            "num_clusters": args.clusters,
            "pts_per_cluster": args.points_per_cluster,
            "variance_coeff": args.variance,
            "bounds": ((low, high), (low, high)),
        },
        init=args.init,
        backend=args.backend,
        max_points=args.max_points,
        max_iter=args.max_iter,
        interval=args.interval,
        fps=args.fps,
        random_state=rng,
        trails=args.trails,
        inertia_inset=args.inertia,
    )
    if args.menu:
        plt.ion()
        plt.show(block=False)
        viz.run_menu(session, pause=plt.pause)
    else:
        plt.show()
    return 0


def _fit(args: argparse.Namespace) -> int:
    from . import get_backend, kmeans

    points = load_points(args.data)
    if args.dtype != "auto":
        points = points.astype(args.dtype, copy=False)
    out = Path(args.out)
    if not out.is_dir():
        raise CommandError(f"output directory {os.fspath(out)} does not exist")
    backend = get_backend(args.backend)
    began = time.perf_counter()
    centers, labels, inertia, n_iter = kmeans(
        points,
        args.k,
        init=args.init,
        n_init=args.n_init if args.n_init == "auto" else int(args.n_init),
        max_iter=args.max_iter,
        tol=args.tol,
        random_state=args.seed,
        backend=backend,
        deterministic=args.deterministic,
    )
    elapsed = time.perf_counter() - began
    np.save(out / "centroids.npy", np.asarray(centers))
    np.save(out / "labels.npy", np.asarray(labels))
    sys.stdout.write(
        f"points: {points.shape[0]} x {points.shape[1]}\nk: {args.k}\n"
        f"iterations: {n_iter}\ninertia: {inertia:.6g}\nbackend: {backend.name}\n"
        f"time: {elapsed:.3f} s\nwrote {out / 'centroids.npy'} and {out / 'labels.npy'}\n"
    )
    return 0


def _bench(options: Sequence[str]) -> int:
    """Run the benchmark harness of the source checkout in (or above) the current
    directory: it compares kmeans-gpu with its peers and is not part of the package."""
    for folder in (Path.cwd(), *Path.cwd().parents):
        if (folder / "benchmarks" / "harness.py").is_file() and (folder / "kmeans_gpu").is_dir():
            sys.path.insert(0, os.fspath(folder))
            from benchmarks.harness import main as harness

            return int(harness(options))
    sys.stderr.write(
        "kmeans-gpu bench: error: the benchmark harness is the benchmarks/ folder of a "
        "source checkout; run this command inside a clone of the repository\n"
    )
    return EXIT_USAGE


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kmeans-gpu", description="K-means on CuPy (CUDA GPUs) or NumPy.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    animate = commands.add_parser(
        "animate",
        help="animate K-means on the seed's scene (or --data), live or to an mp4/gif",
        description="Animate Lloyd's K-means, as the seed's animKMeans2D.py does: in a "
        "window with buttons and keys (1 new data, 2 new centroids, 3 save, 4 exit, "
        "space pause, n step), in the seed's terminal menu (--menu), or rendered to a "
        "file (--save).",
    )
    _add_scene_options(animate, data=True)
    show = animate.add_argument_group("animation")
    show.add_argument(
        "--save",
        nargs="?",
        const="",
        metavar="PATH",
        help="render to PATH (.mp4 or .gif) without a window; PATH defaults to "
        "YYYYMMDDHHMMSS_KMeans2D.mp4",
    )
    show.add_argument("--interval", type=int, default=500, help="ms between frames (500)")
    show.add_argument("--fps", type=int, default=1, help="frames per second when saved (1)")
    show.add_argument("--dpi", type=int, default=100, help="resolution when saved (100)")
    show.add_argument("--max-iter", type=int, default=300, help="iteration cap (300)")
    show.add_argument("--max-points", type=int, default=100_000, help="most points drawn (100000)")
    show.add_argument("--trails", action="store_true", help="draw each centroid's path")
    show.add_argument("--inertia", action="store_true", help="inset of inertia per iteration")
    show.add_argument("--menu", action="store_true", help="the seed's terminal menu")
    animate.set_defaults(run=_animate)

    fit = commands.add_parser(
        "fit",
        help="cluster a .npy or .csv file; write centroids.npy and labels.npy",
        description="Cluster the rows of DATA and write centroids.npy and labels.npy.",
    )
    fit.add_argument(
        "data",
        metavar="DATA",
        help="a .npy or .csv file of shape (n, d), or a .zarr store or folder of numbered "
        ".npy files (clustered with Dask)",
    )
    fit.add_argument("--k", type=int, required=True, help="number of clusters")
    fit.add_argument("--out", default=".", help="directory for the .npy files (.)")
    fit.add_argument("--backend", default="auto", choices=("auto", "numpy", "cupy"))
    fit.add_argument("--seed", type=int, default=None, help="random seed")
    fit.add_argument("--init", choices=("k-means++", "k-means||", "random"), default="k-means++")
    fit.add_argument("--n-init", default="auto", help="runs from different starts (auto)")
    fit.add_argument("--max-iter", type=int, default=300)
    fit.add_argument("--tol", type=float, default=1e-4)
    fit.add_argument(
        "--dtype",
        choices=("auto", "float32", "float64"),
        default="auto",
        help="compute in this dtype (auto: the file's; .csv files read as float64)",
    )
    fit.add_argument(
        "--deterministic", action="store_true", help="bitwise-repeatable sums on CuPy"
    )
    fit.set_defaults(run=_fit)

    bench = commands.add_parser(
        "bench",
        help="benchmark against scikit-learn and other peers, from a source checkout "
        "(see 'bench --help')",
        add_help=False,
        description="Run the benchmark suite; every option goes to it.",
    )
    bench.add_argument("options", nargs=argparse.REMAINDER)  # handled in main()

    demo = commands.add_parser(
        "demo",
        help="cluster the seed's scene and print centres, iterations, inertia and backend",
        description="Generate the seed's scene (random 2-D clusters), cluster it until "
        "the centroids stop changing, and print the result.",
    )
    _add_scene_options(demo, data=False)
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # every option belongs to the benchmark's own parser
        return _bench(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        sys.stderr.write(f"kmeans-gpu {args.command}: interrupted\n")
        return 130
    except (CommandError, ValueError, TypeError, ImportError, OSError, RuntimeError) as exc:
        message = " ".join(str(exc).split())
        sys.stderr.write(f"kmeans-gpu {args.command}: error: {message}\n")
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
