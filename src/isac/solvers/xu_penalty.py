r"""001 (Xu et al.), Algorithm 1: penalty method + big-M + SDR inside alternating optimisation (``penalty-sdr``).

Problem (13) of 001 (problem (8) after the SDR lifting (9) and the CRLB LMIs (10)-(12)):

.. math::

    \min_{a,b,\widetilde{\mathbf W},\mathbf W,\mathbf R,\mathbf J}\ f=\sum_{s,k}\mathrm{tr}\,\widetilde{\mathbf W}_{s,k}
        +\sum_s b_s\,\mathrm{tr}\,\mathbf R_s
    \quad\text{s.t.}\quad
    \begin{aligned}[t]
    &\text{C1: }\textstyle\sum_k\mathrm{tr}\,\widetilde{\mathbf W}_{s,k}+b_s\,\mathrm{tr}\,\mathbf R_s\le P,\\
    &\text{C2a, C2b (10): }\mathrm{tr}\,\mathbf J^{-1}\le\epsilon,\ \mathbf J\succeq\mathbf 0,\\
    &\overline{\text{C2c}}\text{ (12): }\textstyle\sum_s(1-b_s)\begin{bmatrix}\mathbf F^{(s)}_{\mathbf{pp}}-\mathbf J&\mathbf F^{(s)}_{\mathbf p\alpha}\\
        \mathbf F^{(s)T}_{\mathbf p\alpha}&\mathbf F^{(s)}_{\alpha\alpha}\end{bmatrix}\succeq\mathbf 0,\\
    &\overline{\text{C3}}\text{ (9): }\tfrac1{\Gamma_k}\textstyle\sum_s\mathrm{tr}(\mathbf H_{s,k}\widetilde{\mathbf W}_{s,k})
        -\sum_s b_s\mathrm{tr}(\mathbf H_{s,k}\mathbf R_s)-\sum_s\sum_{k'\ne k}\mathrm{tr}(\mathbf H_{s,k}\widetilde{\mathbf W}_{s,k'})\ge\sigma_c^2,\\
    &\text{C4-C6: }\textstyle\sum_s a_{s,k}=1,\ \sum_s(1-b_s)=1,\ b_s\ge a_{s,k},\qquad
    \text{C10a-d (18)-(21): big-M link }\widetilde{\mathbf W}_{s,k}=a_{s,k}\mathbf W_{s,k},
    \end{aligned}

with the binaries C7, C8 written as (14)-(15) and moved into the objective by the penalty (16),
linearised by MM (17) at the previous iterate :math:`(a^{(t)},b^{(t)})`. Algorithm 1 then alternates

* **(22), the b-step**: :math:`\min_b\sum_s b_s\mathrm{tr}\,\mathbf R_s+\mu\sum_s(1-2b_s^{(t)})b_s` s.t.
  C1, :math:`\overline{\text{C2c}}`, :math:`\overline{\text{C3}}`, C5, C6 and C8b (:math:`0\le b\le 1`),
  every other variable fixed: a small LMI in S scalars;
* **(23), the W-step**: :math:`\min\ f+\mu\sum_{s,k}(1-2a_{s,k}^{(t)})a_{s,k}` over
  :math:`(a,\widetilde{\mathbf W},\mathbf W,\mathbf R,\mathbf J)` with b fixed, rank constraint C9 dropped
  (SDR), C7 as C7b (:math:`0\le a\le 1`): one SDP;

until :math:`|\bar f^{(t)}-\bar f^{(t-1)}|/\bar f^{(t)}\le\varepsilon` (step 6). Then **the final
step** (ours; 001 stops at step 6): round :math:`b` (receiver :math:`=\arg\min_s b_s`) and :math:`a` (user k
to :math:`\arg\max_{s\ne r}a_{s,k}`), re-solve the SDP of that fixed choice
(:class:`isac.solvers.xu_sdp.XuSdp`), whose rank-one extraction is Theorem 1 of 001 (see below),
and return its beams. Every returned point is re-checked by the metrics package.

**Reading of the paper where it is ambiguous** (decisions, each a one-line change):

* **The variable receiver in the CRLB** is handled exactly as printed in (11)-(12): one LMI, the
  :math:`(1-b_s)`-weighted sum over the candidate receivers s of their Schur-complement blocks, all of
  size :math:`2S\times2S` (position, then the gains :math:`\alpha_{s,t}` of the links into s, in
  increasing t). For binary b it is the receiver's own LMI. For fractional b it is a convex
  combination (C5), which is what makes both (22) and (23) convex. The gain blocks of different
  receivers are different parameters that (12) adds up anyway; that only matters off the binary
  points.
* **Which covariance enters** :math:`\mathbf F^{(s)}`: :math:`\sum_k\widetilde{\mathbf W}_{t,k}+\mathbf R_t`,
  i.e. :math:`\mathbf R_t` without the factor :math:`b_t`, as printed in (34), (36), (37), (39). With
  :math:`b_t` the b-step would be bilinear; for binary b both readings agree, since the receiver's
  own covariance never enters its FIM. The same :math:`\mathbf F^{(s)}` gives the receiver's sensing
  covariance no use at all, so we bound :math:`\mathrm{tr}\,\mathbf R_s\le P` (C1 of a transmitter
  for binary b, vacuous for the receiver). Without the bound the near-receiver's cheap
  :math:`b_s\mathbf R_s` drifts to huge values in (23).
* **The weight of the b-penalty**: (16) puts :math:`-b_s^2+b_s` under the double sum over
  :math:`s,k` (weight K). (15), (17) and (22) weight it once per BS. We follow (15)/(22).
* **(22) lists C8** (binary b) but calls the problem convex: we use C8b, :math:`0\le b\le 1`.
* :math:`\mathbf J\in\mathbb C^{2\times2}` in (10) is a real symmetric matrix here (the FIM is real).
* **C10a-d and the auxiliary** :math:`\mathbf W_{s,k}`. :math:`\mathbf W_{s,k}` appears only in C10b-d.
  Given any feasible :math:`(a,\widetilde{\mathbf W})`, the choice :math:`\mathbf W=\widetilde{\mathbf W}` meets
  C10b (:math:`a\le1`), C10c and C10d. So eliminating :math:`\mathbf W` leaves exactly
  :math:`\mathbf 0\preceq\widetilde{\mathbf W}_{s,k}\preceq a_{s,k}P\mathbf I` with the same optimum.
  That is the default (``explicit_w = False``, half the PSD cones). ``explicit_w = True`` carries
  :math:`\mathbf W` and all four constraints, as printed.
* **What step 6 compares.** :math:`\bar f^{(t)}` is read as the surrogate (17) built at iterate t and
  evaluated there. That is the penalised objective (16),
  :math:`f+\mu[\sum_{s,k}(a_{s,k}-a_{s,k}^2)+\sum_s(b_s-b_s^2)]`; footnote 2's "constant terms" are what
  make them equal. The other reading, the surrogate at the previous point evaluated at the new
  iterate, is about :math:`\mu\times` that constant. It changes by less than 1e-3 relative in the first
  iteration, while a and b are far from binary (measured: the AO stopped after one iteration). We
  also stop at a **binary fixed point**: a and b binary and the rounded choice unchanged. The next
  subproblems are then the same SDPs, and :math:`\bar f=f` moves only by the conic solver's accuracy
  (below), which can exceed :math:`\varepsilon`.

**The start** (001 leaves it open), and why the default runs S of them. ``start =
"each-receiver"`` (default) runs Algorithm 1 S times, from :math:`b^{(1)}=\mathbf 1-\mathbf e_r` for each
candidate receiver r. It keeps the run whose rounded choice has the least fixed-choice SDP power
(ties: the lowest r). ``start = "uniform"`` runs it once, from :math:`b^{(1)}=(1-1/S)\mathbf 1` (every BS
equally the receiver; C5 holds). In both cases the MM point of the first W-step is a uniform a
over the allowed transmitters. By C4 the MM term of (23) is then a constant, so the first W-step
is the penalty-free relaxation (23) at :math:`b^{(1)}`; it gives
:math:`\{\widetilde{\mathbf W}^{(1)},\mathbf R^{(1)},\mathbf J^{(1)}\}`. For :math:`\mathbf A^{(1)}` we take the
**signal shares** :math:`a_{s,k}\propto\mathbf h_{s,k}^H\widetilde{\mathbf W}^{(1)}_{s,k}\mathbf h_{s,k}`, not the
solver's a. That a is not unique: the big-M bound :math:`a_{s,k}P\succeq\lambda_{\max}` is slack by a factor
~1e3, so any a between it and C6 is optimal, and the interior-point solver returns a near-uniform
one. Measured on ``small`` seeds 0-5 and ``xu-fig2`` seeds 0-1 (best over the receiver starts), the shares were
never worse than the solver's a. They were better on two of the eight instances: ``small`` seed 2,
2.675 W against 2.848 W, and ``xu-fig2`` seed 0, 0.436 W against 0.800 W. Start by start, they were
worse on 2 of 32.

*Why not the uniform start alone.* From a fractional b the AO freezes. The W-step optimises the
covariances for the mixture of receivers in (12); at its optimum no single receiver's block is PSD
(measured on ``xu-fig2`` seed 0: every receiver's own block has :math:`\lambda_{\min}<0`). So (22) cannot
move b towards a vertex, and C6 (:math:`a\le b`) holds a at b. Measured on ``xu-fig2`` seed 0: step 6
is met with b still fractional (distance 0.25 from binary), and rounding gives 0.818 W, against
0.436 W from the receiver starts. With the solver's a as :math:`\mathbf A^{(1)}`, b was still
fractional after 7-8 iterations (e.g. (0.75, 0.73, 1, 0.51)), and rounding gave 1.0-3.9 W. From a binary start, the b-penalty :math:`\mu(1-2b^{(t)}_s)` pins b. The association is then
decided in the second W-step, and the AO reaches a binary fixed point in 2-3 outer iterations.
Each run is Algorithm 1 as printed; the outer loop over receivers is ours.

If the first W-step is infeasible for every binary start, the relaxation of (8) is infeasible for
every receiver (any binary (a, b) point of (8) is feasible for it). The message says so: the
solver's certificate, with the margin. From the uniform start it is only "no point found"; that
relaxation is not a relaxation of (8).

**Units and the size of** :math:`\mu`. Powers are in units of P (the per-BS budget), so :math:`f\le S`
(here :math:`f\approx10^{-2}`). Beam covariances are in units of each user's interference-free MRT
power, so the variables are ~1. The FIM is congruence-scaled by
:math:`\mathbf D=\mathrm{diag}(\sum_s(1-b_s)\mathbf J_0^{(s)})^{-1/2}` (:meth:`PenaltyModel.scaling`), with
:math:`\mathbf J_0^{(s)}` receiver s's FIM at :math:`\mathbf C_t=(P/N)\mathbf I`, rescaled to CRLB :math:`=\epsilon`; for
binary b this is :class:`~isac.solvers.xu_sdp.XuSdp`'s scaling. The default :math:`\mu=3\times10^4`
(Table I) is in these units. In any unit it dominates f: once :math:`a^{(t)}` is not uniform, the next
W-step moves every :math:`a_{s,k}` to its bounds in the order of :math:`a^{(t)}`. The MM terms are written in
the increments :math:`a-a^{(t)}`, :math:`b-b^{(t)}` (the same problems up to constants), so near a fixed point
the conic solver's objective is on the scale of f. The b-step's objective is divided by
:math:`\max(1,\mu)` for the solver.

**Numerics** (each found on these instances):

* Channel rows are built from :math:`\sqrt{g}\,\mathbf h` (:math:`g=P/\sigma_c^2`~1e13, |h|~1e-5). Written as
  :math:`g\cdot\mathbf h^H\mathbf X\mathbf h`, Clarabel returned "optimal" at a point that violated a SINR row by
  1.5 % (cvxpy's own check of the same point), on ``xu-fig2`` seed 0.
* A BS with :math:`b_s=0` contributes no variables: its :math:`\widetilde{\mathbf W}_{s,k}` would be squeezed
  to 0 by C6 + C10a. Such cones have no interior, and Clarabel failed on them. A b within 1e-6 of 0 or 1
  after the b-step is snapped (:func:`snap`).
* The b-step keeps the W-step's point feasible: each row gets the slack that point needs (~1e-9).
  Without it, Clarabel called (22) infeasible at its own start point.
* Every conic attempt is a cold start (:func:`_conic`).
* f of a W-step is accurate to a few per cent only (see :meth:`PenaltyModel.w_step`). It steers the
  AO; the returned point and its power come from the final fixed-choice SDP.

**Theorem 1** (in a form a test checks). For the rounded choice, :func:`rank_one_extraction`
(the construction :class:`~isac.solvers.xu_sdp.XuSdp` uses) maps any SDR solution to beams
:math:`\mathbf w_{s,k}=\widetilde{\mathbf W}_{s,k}\mathbf h_{s,k}/\sqrt{\mathbf h_{s,k}^H\widetilde{\mathbf W}_{s,k}\mathbf h_{s,k}}`
and moves :math:`\widetilde{\mathbf W}_{s,k}-\mathbf w_{s,k}\mathbf w_{s,k}^H\succeq\mathbf 0` into
:math:`\mathbf R_s`. Every covariance (hence power and CRLB) and every :math:`\mathbf h^H(\cdot)\mathbf h` (hence
every SINR) is unchanged. ``info`` reports the raw SDR's rank gaps (``rank_gap_ao``: last W-step of
the chosen run, ``rank_gap_sdr``: the final SDP) and ``extraction_power_rel_change`` (power of the
returned beams, by the metrics package, against the SDP optimum).

Statuses: CONVERGED (the chosen run met step 6 or reached a binary fixed point; point feasible),
MAX_ITERATIONS (it ran ``max_iterations`` outer iterations, or a conic failure stopped it and the
last iterate was rounded; point feasible), INFEASIBLE (no point found; the message says whether
that also shows (8) infeasible), NUMERICAL_ERROR (a conic solver failure with no point).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch

import isac.metrics.problems.bs_selection  # noqa: F401  (registers the evaluator finalize() needs)
from isac.scenario.instances.bs_selection import PROBLEM, BsSelectionInstance
from isac.solvers.base import Solver, Status
from isac.solvers.registry import register_solver
from isac.solvers.xu_sdp import DEFAULT_MARGIN, XuSdp, _herm, _solve_chain, fim_map, rank_gap, rank_one_extraction

MU_DEFAULT = 3e4
"""Penalty factor of (16), Table I of 001 (objective in units of P)."""
EPS_TOL_DEFAULT = 1e-3
"""Relative tolerance of step 6 of Algorithm 1, Table I of 001."""


# --- the scaled data shared by both subproblems ------------------------------------------


class PenaltyModel:
    r"""Scaled data of problem (13) for one instance, and the two subproblems (22), (23).

    Units: powers and covariances in units of P; channel terms :math:`g\,\mathbf h^H\mathbf X\mathbf h`
    with :math:`g=P/\sigma_c^2`; the beam of user k is ``sig[k]`` times a variable of order one. ``A``
    holds each receiver's FIM map in physical units; every LMI is congruence-scaled by
    :meth:`scaling` at its b (module docstring).
    """

    def __init__(self, inst: BsSelectionInstance, *, margin: float = DEFAULT_MARGIN, solver: str = "CLARABEL",
                 explicit_w: bool = False) -> None:
        self.inst = inst
        self.margin = margin
        self.solver = solver
        self.explicit_w = explicit_w
        S, N, K = inst.num_bs, inst.num_antennas, inst.num_users
        self.S, self.N, self.K = S, N, K
        P = inst.p_max_w
        self.g = P / inst.noise_comm_w
        self.H = inst.H.numpy()  # [S, N, K]
        self.gamma = inst.sinr_min.numpy()
        chan = (np.abs(self.H) ** 2).sum(1)  # [S, K]
        self.sig = self.gamma / (self.g * chan.max(0))  # [K] interference-free MRT power (units of P)
        maps = {s: fim_map(inst, s) for s in range(S)}
        self.J0diag = np.zeros((S, 2 * S))  # diag of each receiver's reference FIM (scaled to CRLB = epsilon)
        for s in range(S):
            fm = maps[s]
            J0 = fm.evaluate({t: (P / N) * np.eye(N, dtype=complex) for t in fm.transmitters})
            try:
                crlb0 = float(np.trace(np.linalg.inv(J0)[:2, :2]))
            except np.linalg.LinAlgError:
                crlb0 = math.nan
            if math.isfinite(crlb0) and crlb0 > 0:
                J0 = J0 * (crlb0 / inst.crb_max_m2)
            self.J0diag[s] = np.diag(J0)
        n2 = 2 * S
        # A[s][t] = (re, im): [n2 * n2, N * N] maps vec(Re C_t), vec(Im C_t) (units of P) to vec(F^(s)) (physical).
        self.A: dict[int, dict[int, tuple[np.ndarray, np.ndarray]]] = {
            s: {t: ((maps[s].re[t] * P).reshape(n2 * n2, N * N), (maps[s].im[t] * P).reshape(n2 * n2, N * N))
                for t in maps[s].transmitters} for s in range(S)}
        self.E = np.zeros((n2, 2))
        self.E[0, 0] = self.E[1, 1] = 1.0
        self.solves = 0

    # --- numeric helpers --------------------------------------------------------------

    def scaling(self, b: np.ndarray) -> np.ndarray:
        r""":math:`\mathbf D=\mathrm{diag}(\sum_s(1-b_s)\mathbf J_0^{(s)})^{-1/2}` ``[2S]`` for the LMI (12) at ``b``.

        For binary b it is the scaling :class:`~isac.solvers.xu_sdp.XuSdp` uses for that receiver.
        """
        w = np.clip(1.0 - b, 0.0, None)
        return 1.0 / np.sqrt(np.maximum(w @ self.J0diag / max(w.sum(), 1e-300), 1e-300))

    def fim(self, s: int, C: np.ndarray) -> np.ndarray:
        r""":math:`\mathbf F^{(s)}` ``[2S, 2S]`` (physical units) for covariances ``C [S, N, N]`` (units of P)."""
        n2 = 2 * self.S
        out = np.zeros(n2 * n2)
        for t, (Ar, Ai) in self.A[s].items():
            out += Ar @ C[t].real.reshape(-1) + Ai @ C[t].imag.reshape(-1)
        J = out.reshape(n2, n2)
        return 0.5 * (J + J.T)

    def objective(self, blk: WBlock, b: np.ndarray) -> float:
        """f of (13) (units of P)."""
        return float(sum(np.trace(w).real for w in blk.W.reshape(-1, self.N, self.N))
                     + sum(b[s] * np.trace(blk.R[s]).real for s in range(self.S)))

    # --- (23): the W-step -------------------------------------------------------------

    def w_step(self, b: np.ndarray, a_lin: np.ndarray, mu: float) -> tuple[str, WBlock | None, str]:
        r"""Rank-relaxed (23) for fixed ``b [S]``, MM point ``a_lin [S, K]``; ``(status, block, detail)``.

        ``status``: ``"optimal"``, ``"infeasible"`` or ``"error"``. The a of the solution is a vertex and
        accurate. f is accurate to a few per cent only: near-rank-one covariances make the CRLB LMI
        ill-conditioned. On ``small`` seed 3 at a fixed binary a, equivalent forms of this SDP
        (non-binding rows dropped, other Clarabel settings) end between 1.56 and 1.65 W. The AO's f
        only steers; the returned point comes from the final fixed-choice SDP.
        """
        import cvxpy as cp

        S, N, K = self.S, self.N, self.K
        mg, g, H = self.margin, self.g, self.H
        I = np.eye(N)
        # A BS with b_s = 0 (the receiver, for binary b) has a_{s,k} = 0 by C6, hence W~_{s,k} = 0 by
        # C10a/d, and R_s enters nothing: those are constants, not variables (as variables their PSD
        # cones would have no interior, and interior-point solvers fail there).
        on = [s for s in range(S) if b[s] > 0]
        pairs = [(s, k) for s in on for k in range(K)]
        V = {(s, k): cp.Variable((N, N), hermitian=True, name=f"Wt_{s}_{k}") for s, k in pairs}
        R = [cp.Variable((N, N), hermitian=True, name=f"R_{s}") if s in on else np.zeros((N, N)) for s in range(S)]
        Wt = {key: self.sig[key[1]] * v for key, v in V.items()}  # units of P
        zero = np.zeros((N, N))
        cons = [v >> 0 for v in V.values()] + [R[s] >> 0 for s in on]  # C10d, R >= 0
        da = cp.Variable((S, K), name="delta_a")
        a = a_lin + da
        cons += [a >= 0, a <= 1, cp.sum(a, axis=0) == 1]  # C7b, C4
        cons += [a[s, :] <= b[s] if s in on else a[s, :] == 0 for s in range(S)]  # C6
        for (s, k), w in Wt.items():  # C10a: W~ <= a P I
            cons.append(a[s, k] * I - w >> 0)
        if self.explicit_w:  # C10b, C10c with the auxiliary W (units of P), C10d for W
            for (s, k), w in Wt.items():
                X = self.sig[k] * cp.Variable((N, N), hermitian=True, name=f"W_{s}_{k}")
                cons += [X >> 0, X - w >> 0, w - X + (1 - a[s, k]) * I >> 0]
        for s in range(S):
            for k in range(K):
                Wt.setdefault((s, k), zero)
        tr = {key: cp.real(cp.trace(Wt[key])) if key in V else 0.0 for key in Wt}
        trR = [cp.real(cp.trace(R[s])) if s in on else 0.0 for s in range(S)]
        for s in on:  # C1, and the bound on tr R_s (module docstring)
            cons.append(sum(tr[(s, k)] for k in range(K)) + b[s] * trR[s] <= 1.0)
            cons.append(trR[s] <= 1.0)

        Hg = H * math.sqrt(g)  # scaled before cvxpy sees it: products like 1e13 * 1e-10 lost rows' accuracy

        def quad(s: int, k: int, X) -> Any:
            h = Hg[s, :, k]
            return cp.real(h.conj() @ X @ h)

        for k in range(K):  # (9), divided by sigma_c^2
            signal = sum(quad(s, k, Wt[(s, k)]) for s in on if (s, k) in V)
            interf = sum(quad(s, k, Wt[(s, kk)]) for s in on for kk in range(K) if kk != k and (s, kk) in V)
            interf = interf + sum(b[s] * quad(s, k, R[s]) for s in on)
            cons.append(signal / (self.gamma[k] * (1 + mg)) >= interf + 1.0)
        C = [R[t] + sum(Wt[(t, k)] for k in range(K)) for t in range(S)]
        Jv = cp.Variable((2, 2), symmetric=True, name="J")
        U = cp.Variable((2, 2), symmetric=True, name="U")
        cons += self._crlb_constraints(b, C, Jv, U)
        dp = self.scaling(b)[:2]
        f = sum(tr.values()) + sum(b[s] * trR[s] for s in range(S))
        penalty = mu * cp.sum(cp.multiply(1 - 2 * a_lin, da))  # (17) in the increments
        prob = cp.Problem(cp.Minimize(f + penalty), cons)
        st, used = _conic(prob, self.solver)
        self.solves += 1
        if st == cp.INFEASIBLE:
            return "infeasible", None, f"(23) infeasible ({used})"
        if st not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or Jv.value is None or da.value is None:
            return "error", None, f"(23): conic solver {st} ({used})"
        Wn = np.zeros((S, K, N, N), dtype=complex)
        Rn = np.zeros((S, N, N), dtype=complex)
        for (s, k), v in V.items():
            Wn[s, k] = self.sig[k] * _herm(v.value)
        for s in on:
            Rn[s] = _herm(R[s].value)
        blk = WBlock(a=np.clip(a_lin + da.value, 0.0, 1.0), W=Wn, R=Rn,
                     J=(0.5 * (Jv.value + Jv.value.T)) / np.outer(dp, dp),
                     info={"solver_status": st, "conic_solver": used})
        return "optimal", blk, used

    def _crlb_constraints(self, b: np.ndarray, C: Sequence[Any], Jv, U) -> list:
        r"""(10) and (12) for fixed b, congruence-scaled by :math:`\mathbf D` (:meth:`scaling`):
        :math:`\sum_s(1-b_s)(\mathbf D\mathbf F^{(s)}\mathbf D-\mathbf E\tilde{\mathbf J}\mathbf E^T)\succeq0`,
        :math:`[\mathbf U,\mathbf I;\mathbf I,\tilde{\mathbf J}]\succeq0` and
        :math:`\sum_i D_i^2U_{ii}\le\epsilon(1-\text{margin})`, with
        :math:`\tilde{\mathbf J}=\mathbf D_{\mathbf p}\mathbf J\mathbf D_{\mathbf p}` (``Jv``)."""
        import cvxpy as cp

        S = self.S
        n2 = 2 * S
        d = self.scaling(b)
        dd = np.outer(d, d).reshape(-1, 1)
        w = 1.0 - b
        terms = 0
        for t in range(S):
            if b[t] <= 0:  # C_t = 0 (see w_step)
                continue
            Ar = dd * sum(w[s] * self.A[s][t][0] for s in range(S) if s != t)
            Ai = dd * sum(w[s] * self.A[s][t][1] for s in range(S) if s != t)
            terms = terms + Ar @ cp.vec(cp.real(C[t]), order="C") + Ai @ cp.vec(cp.imag(C[t]), order="C")
        M = cp.reshape(terms, (n2, n2), order="C") - float(w.sum()) * (self.E @ Jv @ self.E.T)
        T = cp.bmat([[U, np.eye(2)], [np.eye(2), Jv]])
        eps = self.inst.crb_max_m2
        return [0.5 * (M + M.T) >> 0, 0.5 * (T + T.T) >> 0,
                (d[0] ** 2 * U[0, 0] + d[1] ** 2 * U[1, 1]) / eps <= 1.0 - self.margin]

    # --- (22): the b-step -------------------------------------------------------------

    def b_step(self, blk: WBlock, b_lin: np.ndarray, mu: float) -> tuple[str, np.ndarray | None, str]:
        """(22) for the fixed block ``blk``, MM point ``b_lin [S]``; ``(status, b, detail)``."""
        import cvxpy as cp

        S, K = self.S, self.K
        mg, g, H = self.margin, self.g, self.H
        db = cp.Variable(S, name="delta_b")
        b = b_lin + db
        # The block solved (23) at b_lin, so b_lin is feasible here in exact arithmetic; the conic
        # solver met (23) only to its tolerance, so each row gets the slack b_lin needs (~1e-9),
        # else the solver may call (22) infeasible at its own start point.
        cons = [b >= 0, b <= 1, cp.sum(1 - b) == 1]  # C8b, C5
        cons += [b[s] >= min(float(blk.a[s].max()), float(b_lin[s])) for s in range(S)]  # C6
        trW = np.array([sum(np.trace(blk.W[s, k]).real for k in range(K)) for s in range(S)])
        trR = np.array([np.trace(blk.R[s]).real for s in range(S)])
        slack1 = np.maximum(trW + b_lin * trR - 1.0, 0.0)
        cons += [trW[s] + b[s] * trR[s] <= 1.0 + slack1[s] for s in range(S)]  # C1

        def q(s: int, k: int, X: np.ndarray) -> float:
            h = H[s, :, k]
            return float(g * np.real(h.conj() @ X @ h))

        for k in range(K):  # (9)
            signal = sum(q(s, k, blk.W[s, k]) for s in range(S)) / (self.gamma[k] * (1 + mg))
            interf = sum(q(s, k, blk.W[s, kk]) for s in range(S) for kk in range(K) if kk != k)
            qR = np.array([q(s, k, blk.R[s]) for s in range(S)])
            slack = max(interf + qR @ b_lin + 1.0 - signal, 0.0)
            cons.append(signal + slack >= interf + qR @ b + 1.0)
        C = blk.covariances()
        D = np.diag(self.scaling(b_lin))
        blocks = [D @ (self.fim(s, C) - self.E @ blk.J @ self.E.T) @ D for s in range(S)]  # (12) at (C, J) fixed
        at_lin = sum((1 - b_lin[s]) * blocks[s] for s in range(S))
        tau = max(-float(np.linalg.eigvalsh(at_lin)[0]), 0.0)
        M = sum((1 - b[s]) * blocks[s] for s in range(S)) + tau * np.eye(2 * S)
        cons.append(0.5 * (M + M.T) >> 0)
        # Divided by max(1, mu) for the solver (same minimiser): the b-step is an LP-like problem
        # whose optimum is a vertex, and mu * ... ~ 1e4 against tr R ~ 1e-2 cost it its accuracy.
        prob = cp.Problem(cp.Minimize((trR @ b + mu * (1 - 2 * b_lin) @ db) / max(1.0, mu)), cons)
        st, used = _conic(prob, self.solver)
        self.solves += 1
        if st == cp.INFEASIBLE:
            return "infeasible", None, f"(22) infeasible ({used})"
        if st not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or db.value is None:
            return "error", None, f"(22): conic solver {st} ({used})"
        return "optimal", np.clip(b_lin + db.value, 0.0, 1.0), used


@dataclass
class WBlock:
    r"""The block :math:`\{\widetilde{\mathbf W},\mathbf R,\mathbf J,\mathbf A\}` of Algorithm 1 (units of P).

    ``a [S, K]``; ``W [S, K, N, N]`` (:math:`\widetilde{\mathbf W}_{s,k}`); ``R [S, N, N]``;
    ``J [2, 2]`` (position information, m^-2).
    """

    a: np.ndarray
    W: np.ndarray
    R: np.ndarray
    J: np.ndarray
    info: dict[str, Any]

    def signal_share(self, H: np.ndarray) -> np.ndarray:
        r"""``[S, K]``: :math:`\mathbf h_{s,k}^H\widetilde{\mathbf W}_{s,k}\mathbf h_{s,k}` over its sum over s (C4 holds)."""
        S, K = self.a.shape
        q = np.array([[max(float(np.real(H[s, :, k].conj() @ self.W[s, k] @ H[s, :, k])), 0.0) for k in range(K)]
                      for s in range(S)])
        tot = q.sum(0, keepdims=True)
        return np.where(tot > 0, q / np.where(tot > 0, tot, 1.0), 1.0 / S)

    def covariances(self) -> np.ndarray:
        r""":math:`\sum_k\widetilde{\mathbf W}_{t,k}+\mathbf R_t` ``[S, N, N]``: the covariance in :math:`\mathbf F^{(s)}` (eq. (34))."""
        return self.W.sum(1) + self.R


def _conic(prob, solver: str) -> tuple[str, str]:
    """Solve with the attempts of :data:`isac.solvers.xu_sdp._CHAIN` in turn (cold starts; see
    :func:`isac.solvers.xu_sdp._solve_chain`) until one gives a definite status; ``(status, attempt)``."""
    st, used, _ = _solve_chain(prob, solver)
    return st, used


SNAP_TOL = 1e-6
"""A b_s within this of 0 or 1 after the b-step is set to it (the conic solver ends ~1e-9 inside the box)."""


def snap(b: np.ndarray) -> np.ndarray:
    """``b`` with entries within :data:`SNAP_TOL` of 0 or 1 set to 0 or 1."""
    out = b.copy()
    out[out < SNAP_TOL] = 0.0
    out[out > 1.0 - SNAP_TOL] = 1.0
    return out


def round_choice(a: np.ndarray, b: np.ndarray) -> tuple[int, tuple[int, ...]]:
    """Receiver ``argmin b`` (C5), user k to ``argmax_{s != receiver} a[s, k]`` (C4, C6); ties to the lowest index."""
    r = int(np.argmin(b))
    masked = a.copy()
    masked[r] = -np.inf
    return r, tuple(int(s) for s in np.argmax(masked, axis=0))


def penalty_value(a: np.ndarray, b: np.ndarray) -> float:
    r""":math:`\sum_{s,k}(a-a^2)+\sum_s(b-b^2)` (C7a + C8a of (14)-(15)): zero iff a and b are binary."""
    return float((a - a**2).sum() + (b - b**2).sum())


# --- the solver ----------------------------------------------------------------------------


@register_solver
@dataclass
class XuPenaltySdr(Solver):
    r"""001's Algorithm 1 for ``bs-selection``: penalty (16)-(17) + big-M (C10) + SDR in an AO of (22) and (23).

    After step 6, the receiver and the association are rounded from b and a, and the SDP of that
    choice is re-solved with rank-one beams (Theorem 1). See the module docstring for the
    initialisation, the units of :math:`\mu` and the reading of (12).
    """

    name: ClassVar[str] = "penalty-sdr"
    problems: ClassVar[tuple[str, ...]] = (PROBLEM,)
    description: ClassVar[str] = ("001 Algorithm 1: penalty + big-M + SDR, AO of the b-step (22) and the SDP (23); "
                                  "rounds b, a and re-solves the fixed-choice SDP")

    mu: float = MU_DEFAULT
    """Penalty factor :math:`\\mu` of (16) (Table I: 3e4), against the objective in units of P."""
    eps_tol: float = EPS_TOL_DEFAULT
    """Step 6: stop when :math:`|\\bar f^{(t)}-\\bar f^{(t-1)}|/\\bar f^{(t)}\\le` ``eps_tol`` (Table I: 1e-3)."""
    max_iterations: int = 20
    """Outer AO iterations (one b-step and one W-step each) per start at most; then MAX_ITERATIONS
    (0: round the penalty-free relaxation's signal shares)."""
    solver: Literal["CLARABEL", "SCS"] = "CLARABEL"
    """Conic solver chain of :mod:`isac.solvers.xu_sdp` (``CLARABEL``: Clarabel, then SCS as fallback)."""
    margin: float = DEFAULT_MARGIN
    """Relative margin on the SINR and CRLB rows of every SDP (so extracted points meet them)."""
    explicit_w: bool = False
    """Carry 001's auxiliary :math:`\\mathbf W_{s,k}` with all of C10a-d (default: eliminated, same optimum)."""
    start: Literal["each-receiver", "uniform"] = "each-receiver"
    """``each-receiver``: one AO from each binary :math:`b^{(1)}=\\mathbf 1-\\mathbf e_r`, the best rounded point
    kept; ``uniform``: one AO from :math:`b^{(1)}=(1-1/S)\\mathbf 1` (module docstring)."""

    def __post_init__(self) -> None:
        if not self.mu >= 0 or not self.eps_tol >= 0 or self.max_iterations < 0:
            raise ValueError("mu >= 0, eps_tol >= 0 and max_iterations >= 0 are required")
        if not 0 <= self.margin < 1:
            raise ValueError("margin must be in [0, 1)")

    def run_ao(self, inst: BsSelectionInstance, model: PenaltyModel | None = None,
               receiver: int | None = None) -> dict[str, Any]:
        r"""Algorithm 1 up to step 6 (no rounding) from one start: the iterates, the trace, why it stopped.

        ``receiver``: start from the binary :math:`b^{(1)}=\mathbf 1-\mathbf e_r`; None: from
        :math:`b^{(1)}=(1-1/S)\mathbf 1` (module docstring). Returns ``{"status": "converged" |
        "max_iterations" | "stalled" | "infeasible" | "error", "detail", "b", "block", "trace",
        "iterations"}``; ``block`` and ``b`` are the last iterate (None when the first W-step failed).
        """
        model = model or PenaltyModel(inst, margin=self.margin, solver=self.solver, explicit_w=self.explicit_w)
        S, K = inst.num_bs, inst.num_users
        P = inst.p_max_w
        if receiver is None:
            b = np.full(S, 1.0 - 1.0 / S)
            a_lin = np.full((S, K), 1.0 / S)
        else:
            b = np.ones(S)
            b[receiver] = 0.0
            a_lin = np.full((S, K), 1.0 / (S - 1))
            a_lin[receiver] = 0.0
        st, blk, detail = model.w_step(b, a_lin, self.mu)
        if st != "optimal":
            return {"status": st, "detail": f"initial W-step: {detail}", "b": None, "block": None, "trace": [],
                    "iterations": 0}
        blk.a = blk.signal_share(model.H)  # A^(1) (module docstring)
        fbar = model.objective(blk, b) + self.mu * penalty_value(blk.a, b)
        start = -1.0 if receiver is None else float(receiver)

        def entry(t: int, blk: WBlock, b: np.ndarray, fbar: float) -> dict[str, float]:
            r, _ = round_choice(blk.a, b)
            return {"start": start, "iteration": float(t), "f_bar": fbar, "power_w": model.objective(blk, b) * P,
                    "penalty": penalty_value(blk.a, b), "receiver": float(r), "b_min": float(b.min()),
                    "binary_gap": binary_gap(blk.a, b)}

        trace = [entry(0, blk, b, fbar)]
        status, detail = "max_iterations", f"{self.max_iterations} outer iterations without meeting step 6"
        t = 0
        for t in range(1, self.max_iterations + 1):
            st, b_new, d1 = model.b_step(blk, b, self.mu)
            if st == "optimal":
                b_new = snap(b_new)
                st, blk_new, d2 = model.w_step(b_new, blk.a, self.mu)
            else:
                blk_new, d2 = None, d1
            if st != "optimal":
                # Both subproblems are feasible in exact arithmetic (module docstring): a failure here
                # is the conic solver's, so stop and keep the last iterate.
                status, detail = "stalled", f"outer iteration {t}: {d2}; the last iterate is kept"
                t -= 1
                break
            fbar_new = model.objective(blk_new, b_new) + self.mu * penalty_value(blk_new.a, b_new)
            fixed = (binary_gap(blk_new.a, b_new) <= SNAP_TOL and binary_gap(blk.a, b) <= SNAP_TOL
                     and round_choice(blk_new.a, b_new) == round_choice(blk.a, b))
            blk, b = blk_new, b_new
            trace.append(entry(t, blk, b, fbar_new))
            change = abs(fbar_new - fbar) / max(abs(fbar_new), 1e-300)
            fbar = fbar_new
            if change <= self.eps_tol:
                status, detail = "converged", f"step 6 met after {t} outer iterations (relative change {change:.2g})"
                break
            if fixed:
                status, detail = "converged", (f"binary fixed point after {t} outer iterations (a and b binary and "
                                               "unchanged: the next subproblems repeat)")
                break
        return {"status": status, "detail": detail, "b": b, "block": blk, "trace": trace, "iterations": t}

    def _solve(self, inst: BsSelectionInstance):
        return self._solve_impl(inst)

    def _solve_impl(self, inst: BsSelectionInstance):
        from isac.metrics.evaluate import evaluate

        S, K = inst.num_bs, inst.num_users
        model = PenaltyModel(inst, margin=self.margin, solver=self.solver, explicit_w=self.explicit_w)
        sdp = XuSdp(inst, margin=self.margin, solver=self.solver)
        starts: list[int | None] = list(range(S)) if self.start == "each-receiver" else [None]
        t_ao = t_sdp = 0.0
        trace: list[dict[str, float]] = []
        runs: list[dict[str, Any]] = []
        solved: dict[tuple[int, tuple[int, ...]], Any] = {}
        for r0 in starts:
            t0 = time.perf_counter()
            ao = self.run_ao(inst, model, receiver=r0)
            t_ao += time.perf_counter() - t0
            trace += ao["trace"]
            run: dict[str, Any] = {"start": r0, "ao": ao}
            runs.append(run)
            if ao["block"] is None:
                continue
            run["choice"] = round_choice(ao["block"].a, ao["b"])
            if run["choice"] not in solved:  # two starts may round to the same choice
                t1 = time.perf_counter()
                solved[run["choice"]] = sdp.solve(*run["choice"])
                t_sdp += time.perf_counter() - t1
            run["sdp"] = solved[run["choice"]]
        iters = sum(run["ao"]["iterations"] for run in runs)
        info: dict[str, Any] = {"subproblem_solves": model.solves, "fixed_choice_sdps": sdp.solves,
                                "start_powers_w": [run["sdp"].power_w if "sdp" in run and run["sdp"].status == "optimal"
                                                   else None for run in runs]}
        self.record(timings={"ao_s": t_ao, "final_sdp_s": t_sdp}, info=info)
        good = [run for run in runs if "sdp" in run and run["sdp"].status == "optimal" and run["sdp"].W is not None]
        if not good:
            errors = [run["ao"]["detail"] for run in runs
                      if run["ao"]["block"] is None and run["ao"]["status"] != "infeasible"]
            errors += [f"fixed-choice SDP: {run['sdp'].message}" for run in runs if "sdp" in run
                       and run["sdp"].status != "infeasible"]
            if errors:  # a conic failure may hide a point: not INFEASIBLE
                return Status.NUMERICAL_ERROR, "; ".join(errors), {}, trace, iters
            if all(run["ao"]["block"] is None for run in runs) and self.start == "each-receiver":
                why = ("the relaxation (23) at every binary b is infeasible (the conic solver's certificate, with the "
                       f"relative margin {self.margin:g} on the SINR and CRLB rows), so (8) has no point with that "
                       "margin")
            else:
                parts = [run["ao"]["detail"] if run["ao"]["block"] is None else
                         f"the SDP of the rounded choice (receiver {run['choice'][0]}, association "
                         f"{list(run['choice'][1])}) is infeasible" for run in runs]
                why = "; ".join(parts) + "; this is not a proof that the instance is infeasible"
            return Status.INFEASIBLE, f"no point found: {why}", {}, trace, iters
        best = min(good, key=lambda run: run["sdp"].power_w)  # ties: the first start (lowest receiver)
        res, ao = best["sdp"], best["ao"]
        receiver, assoc = best["choice"]
        blk = ao["block"]
        solution = {"receiver": torch.tensor(receiver, dtype=torch.long), "W": res.W, "Rs": res.Rs}
        m = evaluate(inst, solution)
        info.update({
            "receiver": receiver, "association": list(assoc), "start": -1 if best["start"] is None else best["start"],
            "ao_status": ao["status"], "ao_power_w": model.objective(blk, ao["b"]) * inst.p_max_w,
            "ao_binary_gap": binary_gap(blk.a, ao["b"]),
            "rank_gap_ao": max(rank_gap(blk.W[assoc[k], k]) for k in range(K)),
            "sdp_power_w": res.power_w, "rank_gap_sdr": res.rank_gap,
            "final_sdp_conic_solver": res.info.get("conic_solver", ""),
            "extraction_power_rel_change": m["total_power_w"] / res.power_w - 1.0,
        })
        self.record(info=info)
        status = Status.CONVERGED if ao["status"] == "converged" else Status.MAX_ITERATIONS
        start = "uniform start" if best["start"] is None else f"start receiver {best['start']}"
        message = (f"{start}: {ao['detail']}; rounded to receiver {receiver}, association {list(assoc)}; "
                   f"fixed-choice SDP {res.power_w:.6g} W")
        return status, message, solution, trace, iters


def binary_gap(a: np.ndarray, b: np.ndarray) -> float:
    """Largest distance of an entry of a or b from {0, 1} (0 iff both are binary)."""
    return float(max(np.minimum(a, 1 - a).max(), np.minimum(b, 1 - b).max()))


__all__ = ["EPS_TOL_DEFAULT", "MU_DEFAULT", "PenaltyModel", "WBlock", "XuPenaltySdr", "binary_gap", "penalty_value",
           "rank_gap", "rank_one_extraction", "round_choice", "snap"]
