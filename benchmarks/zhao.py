"""Benchmark of the 004 solvers against the grid size N; same as `isac bench zhao`.

    .venv/bin/python benchmarks/zhao.py [--quick]
"""

import sys
from pathlib import Path

from isac.experiments.bench import ZHAO_COLUMNS, bench_zhao, write_report

if __name__ == "__main__":
    quick = "--quick" in sys.argv
    rows = bench_zhao(grid_points=(180, 30) if quick else (180, 60, 30, 10), instances=2 if quick else 10,
                      batch=50 if quick else 1000)
    print(write_report(rows, Path("bench-zhao"), "004 solvers: time per instance against the grid size N",
                       ZHAO_COLUMNS))
