"""002 held-out check: every method on the same held-out `lian` instances, re-checked by an independent implementation.

    .venv/bin/python benchmarks/lian_heldout.py [INSTANCES] [FIRST_SEED]

For P in {10, 20, 30} dBm and gamma in {2, 5} x the SPEB floor: `pdpg` (batched), its unconstrained
sum rate (gamma = 1e6 x floor), and the learned solvers (batched; their models are trained at 2x).
Every returned point is re-evaluated with NumPy (rates from the stacked channels, SPEB from a
central-difference Jacobian of the echo model in the target position and the gains, not the
library's angle chain rule): power <= budget, SPEB <= gamma, and the sum rate reported. Prints a
markdown table; one thread.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from isac.scenario.instances.coop_localization import lian_preset
from isac.solvers.registry import get_solver, solvers_for

LEARNED = ("lhgnn", "lhgnn-rzf", "lhgnn-noatt", "homognn", "cnn")


def independent(inst, W: np.ndarray) -> tuple[float, float, bool]:
    """(sum rate bit/s/Hz, SPEB m^2, power within budgets) by an implementation that shares no code with isac's metrics."""
    n, length, s = W.shape
    H = inst.H.numpy().reshape(n * length, -1)
    Ws = W.reshape(n * length, s)
    g = np.abs(H.conj().T @ Ws) ** 2
    k = H.shape[1]
    sig = np.diag(g[:, :k])
    rate = float(np.sum(np.log2(1 + sig / (g.sum(1) - sig + inst.noise_comm_w))))
    power_ok = bool(((np.abs(W) ** 2).sum(axis=(1, 2)) <= inst.p_max_w.numpy() * (1 + 1e-6)).all())
    bs = inst.bs_positions_m.numpy()

    def array_vectors(t):  # eq. (5)-(6) written out; the steering vector (8) is the library's (test_arrays checks it)
        d = t[None, :] - bs
        dist = np.linalg.norm(d, axis=1)
        th, be = np.arcsin(d[:, 2] / dist), np.arctan2(d[:, 1], d[:, 0])
        return inst.array.steering(torch.as_tensor(th), torch.as_tensor(be)).numpy()

    def echo(eta):
        t = eta[:3]
        alpha = (eta[3:3 + n * n] + 1j * eta[3 + n * n:]).reshape(n, n)
        a = array_vectors(t)
        G = np.zeros((n * length, n * length), dtype=complex)
        for m in range(n):
            for r in range(n):
                G[r * length:(r + 1) * length, m * length:(m + 1) * length] = alpha[m, r] * np.outer(a[r], a[m].conj())
        return (G @ Ws).ravel()

    a0 = inst.alpha.numpy()
    eta0 = np.concatenate([inst.target_position_m.numpy(), a0.real.ravel(), a0.imag.ravel()])
    cols = []
    for i in range(eta0.size):
        h = 1e-4 if i < 3 else 1e-6 * np.abs(a0).max()
        e = np.zeros_like(eta0)
        e[i] = h
        cols.append((echo(eta0 + e) - echo(eta0 - e)) / (2 * h))
    D = np.stack(cols, axis=1)
    F = 2 * inst.snapshots / inst.noise_sense_w * np.real(D.conj().T @ D)
    J = F[:3, :3] - F[:3, 3:] @ np.linalg.solve(F[3:, 3:], F[3:, :3])
    return rate, float(np.trace(np.linalg.inv(J))), power_ok


def main(count: int = 30, first: int = 900_000) -> None:
    torch.set_num_threads(1)
    available = solvers_for("coop-localization")
    print("| P [dBm] | gamma/floor | method | mean sum rate | meets gamma (independent) | power ok | time/instance [s] |")
    print("|---|---|---|---|---|---|---|")
    for p in (10.0, 20.0, 30.0):
        for g in (2.0, 5.0, 1e6):
            insts = [lian_preset(first + i, p_max_dbm=p, gamma_over_floor=g) for i in range(count)]
            methods = ["pdpg"] + ([m for m in LEARNED if m in available] if g == 2.0 else [])
            for m in methods:
                solver = get_solver("coop-localization", m)
                t0 = time.perf_counter()
                results = solver.solve_batch(insts)
                dt = (time.perf_counter() - t0) / count
                rates, meets, power = [], 0, 0
                for inst, r in zip(insts, results):
                    if not r.solution:
                        continue
                    rate, speb, pw = independent(inst, r.solution["W"].numpy())
                    rates.append(rate)
                    meets += speb <= inst.speb_max_m2 * (1 + 1e-4)
                    power += pw
                    if r.feasible and not (speb <= inst.speb_max_m2 * (1 + 1e-4) and pw):
                        print(f"  !! {m}: feasible by isac, not by the independent check")
                label = "unconstrained" if g > 100 else f"{g:g}"
                print(f"| {p:g} | {label} | {m} | {np.mean(rates):.3f} | {meets}/{count} | {power}/{count} | {dt:.4g} |",
                      flush=True)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
