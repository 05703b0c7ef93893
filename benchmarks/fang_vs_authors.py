"""Default ``sca`` against ``sca -o rule=authors`` (the authors' iteration) from the same start, instance by instance.

    .venv/bin/python benchmarks/fang_vs_authors.py [FIRST_SEED] [LAST_SEED] [--plain]

On `fang` preset seeds (N_t = 16, K = 4, M = 2, N_s = 16), one thread, each solver timed on the
same instance in one run: the authors' iteration count and final objective, the default's
objective difference (must be >= -1e-4), its iterations, objective evaluations and the time
ratio. ``--plain`` also runs the default L-BFGS without the damped start (start_sensing_scale=1).
Prints one line per seed, then a summary.
"""

import statistics
import sys
import time

import torch

from isac.scenario.instances.crlb_sumrate import fang_preset
from isac.solvers.registry import get_solver


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    first, last = (int(args[0]), int(args[1])) if len(args) == 2 else (0, 15)
    plain = "--plain" in sys.argv
    torch.set_num_threads(1)
    authors = get_solver("crlb-sumrate", "sca", {"rule": "authors"})
    default = get_solver("crlb-sumrate", "sca")
    undamped = get_solver("crlb-sumrate", "sca", {"start_sensing_scale": 1.0})
    ratios, below, below_plain = [], 0, 0
    for seed in range(first, last + 1):
        inst = fang_preset(seed)
        t0 = time.perf_counter()
        ra = authors.solve(inst)
        ta = time.perf_counter() - t0
        t0 = time.perf_counter()
        rd = default.solve(inst)
        td = time.perf_counter() - t0
        diff = rd.metrics["objective"] - ra.metrics["objective"]
        below += diff < -1e-4
        ratios.append(ta / td)
        line = (f"seed {seed:3d}  authors {ra.metrics['objective']:.8g} ({ra.iterations} it, {ta:.3f} s)  "
                f"default {diff:+.2e} ({rd.iterations} it, {rd.info['evaluations']} evaluations, {td * 1e3:.1f} ms, "
                f"{rd.status.value})  time ratio {ta / td:.1f}")
        if plain:
            rp = undamped.solve(inst)
            dp = rp.metrics["objective"] - ra.metrics["objective"]
            below_plain += dp < -1e-4
            line += f"  undamped {dp:+.2e}"
        print(line, flush=True)
    n = last - first + 1
    print(f"{n} instances: default below the authors' iteration (by > 1e-4) on {below}; time ratio authors/default "
          f"median {statistics.median(ratios):.1f}, min {min(ratios):.1f}"
          + (f"; undamped start below on {below_plain}" if plain else ""))


if __name__ == "__main__":
    main()
