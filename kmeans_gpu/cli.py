"""The ``kmeans-gpu`` command (also ``python -m kmeans_gpu``)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

import numpy as np


class _CommandError(Exception):
    """A problem to report in one line, exit code 2."""


def _add_scene_options(parser: argparse.ArgumentParser) -> None:
    scene = parser.add_argument_group("the seed's scene")
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


def _demo(args: argparse.Namespace) -> int:
    from . import generate_clusters, get_backend, initialize_centroids, kmeans, kmeans_plusplus

    low, high = args.bounds
    rng = np.random.RandomState(args.seed)
    points = generate_clusters(
        args.clusters,
        args.points_per_cluster,
        args.variance,
        ((low, high), (low, high)),
        random_state=rng,
    )
    if args.init == "random":
        start = initialize_centroids(args.k, points, random_state=rng)
    else:
        start, _ = kmeans_plusplus(points, args.k, random_state=rng)
    backend = get_backend(args.backend)
    began = time.perf_counter()
    centers, labels, inertia, n_iter = kmeans(
        points,
        args.k,
        init=start,
        tol=0.0,
        max_iter=10_000,
        empty_cluster="keep",
        backend=backend,
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kmeans-gpu",
        description="K-means on CuPy (CUDA GPUs) or NumPy.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="cluster the seed's scene and print centres, iterations, inertia and backend",
        description="Generate the seed's scene (random 2-D clusters), cluster it until "
        "the centroids stop changing, and print the result.",
    )
    _add_scene_options(demo)
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.run(args))
    except (_CommandError, ValueError, TypeError, ImportError, OSError) as exc:
        sys.stderr.write(f"kmeans-gpu {args.command}: error: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
