"""Under load, a solve with the caller's torch thread count at 2 is not slower than at 1.

    .venv/bin/python benchmarks/threads_under_load.py [REPEATS]

Starts one busy process per core (the "load"), then times, interleaved, `sca` on the `fang` preset
(seed 0, 300 iterations) after `torch.set_num_threads(2)` and after `torch.set_num_threads(1)`; the
library runs every solve on one thread, so both should take the same time. For contrast it also times
the bare 16x20 complex products of one instance with torch's pool at 2 threads and at 1. Prints medians
and the ratios.
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import sys
import time

import torch


def _burn(stop) -> None:
    x = 0
    while not stop.is_set():
        x += 1


def main(repeats: int = 5) -> None:
    from isac.scenario.problems import make_preset
    from isac.solvers.registry import get_solver

    inst = make_preset("crlb-sumrate", "fang", 0)
    solver = get_solver("crlb-sumrate", "sca", {"max_iterations": 300, "tolerance": 1e-300})
    A = torch.randn(16, 20, dtype=torch.complex128)
    B = torch.randn(20, 16, dtype=torch.complex128)
    stop = mp.Event()
    procs = [mp.Process(target=_burn, args=(stop,), daemon=True) for _ in range(mp.cpu_count())]
    for p in procs:
        p.start()
    times: dict[str, list[float]] = {"solve@2": [], "solve@1": [], "matmul@2": [], "matmul@1": []}
    try:
        time.sleep(0.5)
        for _ in range(repeats):
            for threads in (2, 1):
                torch.set_num_threads(threads)
                t0 = time.perf_counter()
                solver.solve(inst)
                times[f"solve@{threads}"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                for _ in range(2000):
                    A @ B
                times[f"matmul@{threads}"].append((time.perf_counter() - t0) / 2000)
    finally:
        stop.set()
        for p in procs:
            p.join(timeout=5)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"load: {len(procs)} busy processes; {repeats} interleaved repeats; medians")
    print(f"sca solve (300 iterations): caller at 2 threads {med['solve@2']:.3f} s, at 1 thread "
          f"{med['solve@1']:.3f} s, ratio {med['solve@2'] / med['solve@1']:.2f}")
    print(f"bare 16x20 @ 20x16 complex product: 2 threads {med['matmul@2'] * 1e6:.1f} us, 1 thread "
          f"{med['matmul@1'] * 1e6:.1f} us, ratio {med['matmul@2'] / med['matmul@1']:.1f}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
