"""Run the benchmark harness from a checkout: ``python benchmarks/run.py [workloads...]``
(``--help`` lists the options)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import main

if __name__ == "__main__":
    sys.exit(main())
