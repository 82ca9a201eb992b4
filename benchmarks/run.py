"""Run the benchmark suite from a checkout: ``python benchmarks/run.py [workloads...]``.

The same as ``kmeans-gpu bench``, plus the seed's per-point loop (its code lives in the
tests). ``--help`` lists the options.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kmeans_gpu.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
