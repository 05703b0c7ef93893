r"""``sca-sdr``: a covariance-domain SCA reference for 002's problem (32) (``coop-localization``).

Problem (32), rates in bit/s/Hz, joint transmission over the stacked channels
:math:`\mathbf h_k\in\mathbb C^{NL}`:

.. math::

    \max_{\mathbf P}\ \sum_k\log_2\!\Big(1+\frac{|\mathbf h_k^H\mathbf p_k|^2}
        {\sum_{j\ne k}|\mathbf h_k^H\mathbf p_j|^2+\mathbf h_k^H\mathbf R_s\mathbf h_k+\sigma_c^2}\Big)
    \quad\text{s.t.}\quad \mathrm{tr}\,\mathbf R_{nn}\le P_n\ (32b),\qquad
    \mathrm{SPEB}(\mathbf R)\le\gamma\ (32c),

with :math:`\mathbf R=\sum_k\mathbf p_k\mathbf p_k^H+\mathbf R_s` the transmit covariance
(:math:`\mathbf R_s=\mathbf P_s\mathbf P_s^H`, :math:`N_s` sensing streams). 002's "SRW" baseline is
an SCA method from a paper we do not have; this is our faithful covariance-domain stand-in.

**Lifting.** :math:`\mathbf R_k=\mathbf p_k\mathbf p_k^H` and :math:`\mathbf R_s` become Hermitian PSD
matrices (ranks dropped). With :math:`T_k=\sigma_c^2+\mathbf h_k^H\mathbf R\mathbf h_k` and
:math:`I_k=T_k-\mathbf h_k^H\mathbf R_k\mathbf h_k` (both affine), :math:`R_k=\log T_k-\log I_k`, a
difference of concave functions.

**SCA step.** At the current point :math:`I_k^{(t)}`, :math:`-\log I_k` (convex) is replaced by its
tangent :math:`-\log I_k^{(t)}-(I_k-I_k^{(t)})/I_k^{(t)}`, a global minoriser, so every step solves

.. math::

    \max_{\{\mathbf R_k\},\mathbf R_s,\mathbf M,\mathbf U}\ \sum_k\Big(\log T_k-\frac{I_k}{I_k^{(t)}}\Big)
    \ \text{s.t.}\ \mathrm{tr}\,\mathbf R_{nn}\le P_n,\ \mathbf R_k,\mathbf R_s\succeq0,\
    \begin{bmatrix}\mathbf J_{\omega\omega}-\mathbf M&\mathbf J_{\omega\alpha}\\
    \mathbf J_{\alpha\omega}&\mathbf J_{\alpha\alpha}\end{bmatrix}(\mathbf R)\succeq0,\
    \begin{bmatrix}\mathbf U&\mathbf I\\\mathbf I&\mathbf Q^T\mathbf M\mathbf Q\end{bmatrix}\succeq0,\
    \mathrm{tr}\,\mathbf U\le\gamma(1-\texttt{margin}),

(the SPEB constraint as LMIs on the FIM, which is linear in :math:`\mathbf R`, and on the 3 x 3
position block, :func:`isac.metrics.bounds.lian_floor.speb_lmis`, scaled there) and the relaxed
sum rate never decreases. The feasible set does not depend on the iterate, so no feasible start
is needed: the first linearisation point is the isotropic covariance. Stop when the relaxed sum
rate gains less than ``tolerance`` (relative) or after ``max_iterations`` SDPs.

**Extraction.** :math:`\mathbf p_k=\mathbf R_k\mathbf h_k/\sqrt{\mathbf h_k^H\mathbf R_k\mathbf h_k}`
keeps every :math:`\mathbf h_k^H\mathbf R_k\mathbf h_k`, and
:math:`\mathbf R_s'=\mathbf R-\sum_k\mathbf p_k\mathbf p_k^H\succeq0` keeps :math:`\mathbf R` (hence
the FIM and every :math:`T_k`): exact when :math:`\mathrm{rank}\,\mathbf R_s'\le N_s`. Otherwise the
sensing beams are the top :math:`N_s` eigenvectors of :math:`\mathbf R_s'`; ``info.rank_gap`` is the
share of the transmit power this drops (0 = the SDR was tight). If the dropped part breaks the SPEB
constraint, a short projected-gradient restoration on the beams (SPEB hinge only) brings the point
back; ``info.restored_steps`` says how many steps that took (0: none needed).

**Scaling.** Covariances are in units of the largest budget, channels in units of
:math:`\sigma_c/\sqrt{p_{\mathrm{ref}}}`, and the FIM enters through the scaled 3N-dimensional model
of :func:`isac.metrics.bounds.lian_floor.speb_sdp_model`. A conic failure is NUMERICAL_ERROR; a
threshold below the SPEB floor is INFEASIBLE before any SDP.

The solver plans with ``inst.solver_view()`` (estimated channels and target when the instance has
them); the Result's metrics are computed on the truth.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch

import isac.metrics.problems.coop_localization  # noqa: F401  (registers the evaluator finalize() needs)
from isac.scenario.instances.coop_localization import PROBLEM, CoopLocalizationInstance
from isac.solvers.base import Solver, Status
from isac.solvers.registry import register_solver


def planning_instance(inst: CoopLocalizationInstance) -> CoopLocalizationInstance:
    """The instance a solver may look at: estimates (when present) in place of the true channels and target."""
    H, t = inst.solver_view()
    if H is inst.H and t is inst.target_position_m:
        return inst
    return inst.with_params(H=H, target_position_m=t, H_estimate=None, target_position_estimate_m=None)


def infeasible_threshold(inst: CoopLocalizationInstance) -> str | None:
    """A one-line reason when the instance's gamma is below its SPEB floor (checked on the instance itself)."""
    from isac.metrics.bounds.lian_floor import gamma_below_floor

    return gamma_below_floor(inst)


def restore_speb(inst: CoopLocalizationInstance, W: torch.Tensor, target_m2: float, max_steps: int = 500,
                 lr: float = 0.01) -> tuple[torch.Tensor, int]:
    r"""Projected gradient (Adam) on :math:`\max(0,\mathrm{SPEB}/\gamma-1)` from ``W`` until SPEB ≤ ``target_m2``.

    Beams are scaled by :math:`\sqrt{P_n}` per BS (steps are scale-free) and projected on the
    budgets after each step. Returns (beams, steps taken); the beams are the input when it already
    meets the target, and the last iterate when ``max_steps`` runs out (the caller checks).
    """
    from isac.metrics.problems.coop_localization import objective_terms

    def speb_of(w):
        return float(objective_terms(inst, w)["speb_m2"])

    if speb_of(W) <= target_m2:
        return W, 0
    scale = torch.sqrt(inst.p_max_w)[:, None, None]
    V = (W / scale).clone().requires_grad_(True)
    opt = torch.optim.Adam([V], lr=lr)
    for step in range(1, max_steps + 1):
        opt.zero_grad()
        speb = objective_terms(inst, V * scale)["speb_m2"]
        torch.relu(speb / target_m2 - 1.0).backward()
        opt.step()
        with torch.no_grad():
            norms = torch.sqrt((V.abs() ** 2).sum(dim=(-2, -1), keepdim=True))
            V.div_(torch.clamp(norms, min=1.0))
        out = (V * scale).detach()
        if speb_of(out) <= target_m2:
            return out, step
    return (V * scale).detach(), max_steps


@register_solver
@dataclass
class ScaSdr(Solver):
    """SCA on the SDR of (32); see the module docstring.

    Options:
        max_iterations: SDPs at most.
        tolerance: stop when the relaxed sum rate improves by less than this (relative).
        margin: the SDPs use gamma (1 - margin) so that solver round-off stays feasible.
        solver: conic solver chain of :mod:`isac.conic` (``CLARABEL`` default: 20-100x faster than SCS at 1e-9 here, same optima).
    """

    name: ClassVar[str] = "sca-sdr"
    problems: ClassVar[tuple[str, ...]] = (PROBLEM,)
    description: ClassVar[str] = ("002 reference: SCA on the SDR (difference-of-logs rates, SPEB as LMIs), rank-one "
                                  "extraction; slow")

    max_iterations: int = 30
    tolerance: float = 1e-4
    margin: float = 1e-3
    solver: Literal["CLARABEL", "SCS"] = "CLARABEL"

    def __post_init__(self) -> None:
        if self.max_iterations < 1:
            raise ValueError(f"max_iterations must be >= 1, got {self.max_iterations}")
        if not 0 < self.tolerance < 1:
            raise ValueError(f"tolerance must lie in (0, 1), got {self.tolerance}")
        if not 0 <= self.margin < 0.5:
            raise ValueError(f"margin must lie in [0, 0.5), got {self.margin}")

    def _solve(self, inst: CoopLocalizationInstance):
        return self._run(inst)

    def _run(self, inst: CoopLocalizationInstance):
        import cvxpy as cp

        from isac.conic import solve_chain
        from isac.metrics.bounds.lian_floor import FloorError, speb_lmis, speb_sdp_model

        try:
            why = infeasible_threshold(inst)
        except FloorError as e:
            return Status.NUMERICAL_ERROR, str(e), {}, [], 0
        if why:
            return Status.INFEASIBLE, why, {}, [], 0
        view = planning_instance(inst)
        t0 = time.perf_counter()
        model = speb_sdp_model(view)
        n, length, k, ns = view.num_bs, view.num_antennas, view.num_users, view.num_sensing_streams
        p_ref = model.p_ref
        G_full = (view.H_stacked * math.sqrt(p_ref / view.noise_comm_w)).numpy()  # [NL, K], SNR units
        E, blocks = lossless_subspace(view)  # [NL, d]
        G = E.conj().T @ G_full  # [d, K]
        d = E.shape[1]
        Xk = [cp.Variable((d, d), hermitian=True) for _ in range(k)]
        Xs = cp.Variable((d, d), hermitian=True)
        total = sum(Xk) + Xs
        cons = [x >> 0 for x in Xk] + [Xs >> 0]
        for i, blk in enumerate(blocks):
            cons.append(cp.real(cp.trace(total[blk, blk])) <= float(model.p_ratio[i]))
        Cb = model.B.numpy().conj().T @ E  # [3N, d]: B^H R B = Cb X Cb^H
        # vec(Cb X Cb^H) = kron(conj(Cb), Cb) vec(X) (column-major): one constant map, not two dense products
        compress = np.kron(Cb.conj(), Cb)
        nx = Cb.shape[0]
        lmis, U = speb_lmis(model, cp.reshape(compress @ cp.vec(total, order="F"), (nx, nx), order="F"))
        cons += lmis
        cons.append(cp.trace(U) <= model.speb_units(inst.speb_max_m2 * (1.0 - self.margin)))
        # h^H X h = sum_ij conj(h_i) h_j X_ij: elementwise products (a dense matrix product with a CVXPY
        # variable expands to a d^2 x d^2 coefficient matrix)
        gg = [np.outer(G[:, j].conj(), G[:, j]) for j in range(k)]
        T = [1.0 + cp.real(cp.sum(cp.multiply(gg[j], total))) for j in range(k)]
        S = [cp.real(cp.sum(cp.multiply(gg[j], Xk[j]))) for j in range(k)]
        inv_i = cp.Parameter(k, nonneg=True)
        prob = cp.Problem(cp.Maximize(sum(cp.log(T[j]) - inv_i[j] * (T[j] - S[j]) for j in range(k))), cons)
        # first linearisation point: the isotropic covariance, power split evenly over the K+1 covariances
        iso = np.concatenate([np.full(length, float(model.p_ratio[i]) / length) for i in range(n)])
        i_now = np.array([1.0 + (np.abs(G_full[:, j]) ** 2 @ iso) * k / (k + 1) for j in range(k)])
        trace: list[dict[str, float]] = []
        relaxed_prev = -math.inf
        status = Status.MAX_ITERATIONS
        message = f"{self.max_iterations} SCA steps"
        solver_used = ""
        it = 0
        for it in range(1, self.max_iterations + 1):
            inv_i.value = 1.0 / i_now
            st, solver_used, _ = solve_chain(prob, self.solver)
            if st not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or Xs.value is None:
                if it == 1:
                    return Status.NUMERICAL_ERROR, f"SCA step 1: conic solver failed ({st}, {solver_used})", {}, trace, it
                it -= 1
                status, message = Status.MAX_ITERATIONS, f"SCA step {it + 1}: conic solver failed ({st}); kept step {it}"
                break
            xk = [0.5 * (x.value + x.value.conj().T) for x in Xk]
            xs = 0.5 * (Xs.value + Xs.value.conj().T)
            tot = sum(xk) + xs
            t_val = np.array([1.0 + float(np.real(G[:, j].conj() @ tot @ G[:, j])) for j in range(k)])
            s_val = np.array([float(np.real(G[:, j].conj() @ xk[j] @ G[:, j])) for j in range(k)])
            i_val = np.maximum(t_val - s_val, 1.0)
            relaxed = float(np.sum(np.log2(t_val / i_val)))
            trace.append({"relaxed_sum_rate_bps_hz": relaxed})
            i_now = i_val
            if relaxed - relaxed_prev <= self.tolerance * max(abs(relaxed), 1.0):
                status, message = Status.CONVERGED, f"relaxed sum rate changed by < {self.tolerance:g} (relative)"
                relaxed_prev = relaxed
                break
            relaxed_prev = relaxed
        sdp_time = time.perf_counter() - t0
        beams, rank_gap = extract_beams(xk, xs, G, ns)  # [d, K+Ns]
        W = torch.as_tensor((E @ beams).reshape(n, length, k + ns) * math.sqrt(p_ref), dtype=torch.complex128)
        from isac.metrics.problems.coop_localization import objective_terms

        W, steps = restore_speb(view, W, inst.speb_max_m2 * (1.0 - 1e-6))
        view_terms = objective_terms(view, W)
        self.record(
            timings={"sdp_s": sdp_time},
            info={"sdps": it, "rank_gap": rank_gap, "restored_steps": steps, "conic_solver": solver_used,
                  "relaxed_sum_rate_bps_hz": relaxed_prev,
                  "speb_over_gamma": float(view_terms["speb_m2"]) / inst.speb_max_m2},
        )
        if float(view_terms["speb_m2"]) > inst.speb_max_m2:
            return (Status.INFEASIBLE, f"extracted beams miss the SPEB threshold after {steps} restoration steps "
                    f"(rank gap {rank_gap:.3g})", {"W": W}, trace, it)
        return status, message, {"W": W}, trace, it


def lossless_subspace(inst: CoopLocalizationInstance) -> tuple[np.ndarray, list[slice]]:
    r"""``E [NL, d]`` block-diagonal with orthonormal columns, and each BS's column range.

    BS n's block spans its K channels and :math:`\mathbf a_n,\dot{\mathbf a}_{\theta,n},\dot{\mathbf a}_{\beta,n}`
    (at the planning target). Every rate depends on a covariance only through :math:`\mathbf h_j^H\mathbf R\mathbf h_j`
    and the FIM only through :math:`\mathbf B^H\mathbf R\mathbf B`, both unchanged by
    :math:`\mathbf R\to\boldsymbol\Pi\mathbf R\boldsymbol\Pi` (:math:`\boldsymbol\Pi=\mathbf E\mathbf E^H`), which
    lowers no BS's power: the SDP over :math:`\mathbf E^H\mathbf R\mathbf E` loses nothing and has
    :math:`d\le N\min(L, K+3)` instead of NL rows (24 instead of 48 on ``lian``; an interior-point
    method's memory grows as the fourth power of it).
    """
    from isac.metrics.bounds.lian import target_angles

    theta, beta = target_angles(inst.bs_positions_m, inst.target_position_m)
    a, da_t, da_b = inst.array.steering_and_derivatives(theta, beta)  # [N, L]
    cols, blocks, start = [], [], 0
    for i in range(inst.num_bs):
        span = torch.cat([inst.H[i], torch.stack([a[i], da_t[i], da_b[i]], dim=-1)], dim=-1).numpy()  # [L, K+3]
        span = span / np.linalg.norm(span, axis=0, keepdims=True)
        u, sv, _ = np.linalg.svd(span, full_matrices=False)
        basis = u[:, sv > 1e-10 * sv[0]]
        cols.append(basis)
        blocks.append(slice(start, start + basis.shape[1]))
        start += basis.shape[1]
    length = inst.num_antennas
    E = np.zeros((inst.num_bs * length, start), dtype=np.complex128)
    for i, (basis, blk) in enumerate(zip(cols, blocks)):
        E[i * length:(i + 1) * length, blk] = basis
    return E, blocks


def extract_beams(xk: list[np.ndarray], xs: np.ndarray, G: np.ndarray, ns: int) -> tuple[np.ndarray, float]:
    r"""Beams ``[d, K+Ns]`` (units and coordinates of the covariances) and the rank gap, see the module docstring.

    ``xk``: K covariances, ``xs`` the sensing covariance (``[d, d]``), ``G [d, K]`` the channels.
    """
    k = len(xk)
    total = sum(xk) + xs
    cols = []
    for j in range(k):
        s = float(np.real(G[:, j].conj() @ xk[j] @ G[:, j]))
        cols.append(xk[j] @ G[:, j] / math.sqrt(s) if s > 0 else np.zeros(total.shape[0], dtype=complex))
    P = np.stack(cols, axis=1) if cols else np.zeros((total.shape[0], 0), dtype=complex)
    rest = total - P @ P.conj().T
    lam, vec = np.linalg.eigh(0.5 * (rest + rest.conj().T))
    lam = np.clip(lam, 0.0, None)[::-1]
    vec = vec[:, ::-1]
    sens = vec[:, :ns] * np.sqrt(lam[:ns]) if ns else np.zeros((total.shape[0], 0), dtype=complex)
    power = float(np.real(np.trace(total)))
    gap = float(lam[ns:].sum()) / power if power > 0 else 0.0
    return np.concatenate([P, sens], axis=1), gap
