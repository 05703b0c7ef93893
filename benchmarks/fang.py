"""Benchmark of the 003 solvers against N_t; same as `isac bench fang`.

    .venv/bin/python benchmarks/fang.py [--quick]
"""

import sys
from pathlib import Path

from isac.experiments.bench import bench_fang, write_report

if __name__ == "__main__":
    quick = "--quick" in sys.argv
    rows = bench_fang(num_tx=(8, 16) if quick else (8, 16, 32, 64, 128), instances=2 if quick else 5,
                      batch=64 if quick else 1000)
    print(write_report(rows, Path("bench-fang"), "003 solvers against N_t and batched throughput"))
