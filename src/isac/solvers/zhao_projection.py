r"""A solver of our own for 004's projection problem (29), without CVXPY: ADMM over PSD blocks.

Problem (29) (module docstring of :mod:`isac.solvers.zhao_sdr`, in units of :math:`P_0` and with
unit channel directions :math:`\mathbf u_l`):

.. math::

    \min\ \tfrac12\sum_l\|\hat{\mathbf C}_l-\mathbf C_l\|_F^2+\tfrac12\|\hat{\mathbf R}-\mathbf R\|_F^2
    \quad\text{s.t.}\quad \hat{\mathbf C}_l\succeq0,\ \hat{\mathbf R}-\textstyle\sum_l\hat{\mathbf C}_l\succeq0,\
    \mathrm{tr}\,\hat{\mathbf R}=1,\ (1+\Gamma^{-1})\mathbf u_l^H\hat{\mathbf C}_l\mathbf u_l
    \ge\mathbf u_l^H\hat{\mathbf R}\mathbf u_l+\nu_l .

With :math:`\mathbf X_0=\hat{\mathbf R}-\sum_l\hat{\mathbf C}_l` and :math:`\mathbf X_l=\hat{\mathbf C}_l`
the cone is a product of :math:`L+1` PSD cones, :math:`\hat{\mathbf R}=\sum_{i=0}^L\mathbf X_i`, and the
:math:`L+1` linear constraints read :math:`\langle\mathbf G_k,\mathbf X\rangle\ \ge/=\ b_k` with every block of
:math:`\mathbf G_k` a multiple of one matrix :math:`\mathbf P_k` (:math:`\mathbf I` for the trace,
:math:`\mathbf u_k\mathbf u_k^H` for user k). ADMM (Boyd et al. 2011, scaled form, over-relaxation 1.6,
residual balancing of :math:`\rho`) alternates

* an **x-step**: the quadratic objective plus :math:`\frac\rho2\|\mathbf X-\mathbf Y+\mathbf W\|^2` under
  the linear constraints only. Its Hessian acts on the block index alone (an :math:`(L+1)\times(L+1)`
  matrix :math:`\mathbf N+\rho\mathbf I`, :math:`\mathbf N=\mathrm{diag}(0,1,\dots,1)+\mathbf 1\mathbf 1^T`), and the
  constraint normals are rank-one or identity per block, so the step is a closed form plus a
  small linear complementarity problem in :math:`L+1` multipliers (solved by an active-set loop);
* a **y-step**: each block projected onto the PSD cone (one :math:`M\times M` eigen-decomposition per block).

The PSD iterate is returned (exactly PSD), and the beams are extracted as in
:mod:`isac.solvers.zhao_sdr` (eqs. (30)-(31), then the SINR rebalance). :math:`\Gamma_0` is tightened by
``sinr_margin`` as there. Cost at M = 10, L = 2: ~50-100 us per iteration (NumPy), a few hundred
iterations. Checked against the CVXPY program (``tests/test_zhao_projection.py``): same optimal distance.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from isac.scenario.instances.beampattern_sinr import BeampatternSinrInstance
from isac.solvers.base import Status
from isac.tensors import COMPLEX, as_complex, hermitian

DEFAULT_EPS = 1e-9
"""ADMM stopping tolerance (primal and dual residuals, absolute + relative, units of P0)."""
DEFAULT_MAX_ITERS = 20_000
"""ADMM iteration cap."""
DEFAULT_SINR_MARGIN = 1e-5
"""Default relative tightening of Gamma0 inside the convex programs (see :mod:`isac.solvers.zhao_sdr`)."""
OVER_RELAXATION = 1.6
RHO_START = 3.0
"""Initial ADMM penalty (units of P0)."""
RHO_EVERY = 100
"""Iterations between residual-balancing updates of rho (they reset the Anderson memory, so rarely).
Start, period and memory measured on 14 infeasible GNN outputs (zhao-fixed-a seeds 1000-1029): rho 3,
memory 10 and no updates took 374 iterations in all, against 627 for rho 1, updates every 20, memory 6."""
ANDERSON_MEMORY = 10
"""Differences kept by the Anderson acceleration of the ADMM iteration."""
ANDERSON_SAFEGUARD = 2.0
"""An accelerated step whose fixed-point residual exceeds this times the previous one is undone."""
"""Iterations between residual-balancing updates of rho."""


class _Structure:
    """The constraint normals of (29) in the X-blocks and the small matrices of the x-step."""

    def __init__(self, U: np.ndarray, gamma: float, nu: np.ndarray):
        m, n_users = U.shape[1], U.shape[0]
        self.m, self.L = m, n_users
        nb = n_users + 1
        # coefficient of block i in constraint k: k = 0 trace (all ones), k = 1..L user k-1
        coef = np.ones((nb, nb))
        coef[1:, :] = -1.0
        for l in range(n_users):
            coef[1 + l, 1 + l] = 1.0 / gamma
        self.coef = coef  # [K, blocks]
        self.b = np.concatenate([[1.0], nu])
        P = np.empty((nb, m, m), dtype=np.complex128)
        P[0] = np.eye(m)
        P[1:] = np.einsum("li,lj->lij", U, U.conj())
        self.P = P
        gram = np.abs(U.conj() @ U.T) ** 2  # |u_k^H u_j|^2
        inner = np.empty((nb, nb))
        inner[0, 0] = m
        inner[0, 1:] = inner[1:, 0] = 1.0
        inner[1:, 1:] = gram
        self.inner = inner  # <P_k, P_j>
        self.N = np.diag(np.r_[0.0, np.ones(n_users)]) + np.ones((nb, nb))
        self.U = U
        self.set_rho(RHO_START)

    def set_rho(self, rho: float) -> None:
        self.rho = rho
        self.Minv = np.linalg.inv(self.N + rho * np.eye(self.L + 1))
        mc = self.Minv @ self.coef.T  # [blocks, K]: column k = Minv c_k
        self.mc = mc
        self.K = (self.coef @ mc) * self.inner  # <G_k, Q^-1 G_j>

    def measure(self, X: np.ndarray) -> np.ndarray:
        """``<G_k, X>`` for every constraint k."""
        tr = np.trace(X, axis1=1, axis2=2).real  # tr X_i
        quad = np.sum(self.U.conj().T[None] * (X @ self.U.T), axis=1).real.T  # [l, b] = u_l^H X_b u_l
        vals = np.empty(self.L + 1)
        vals[0] = self.coef[0] @ tr
        vals[1:] = np.sum(self.coef[1:] * quad, axis=1)
        return vals


def _lcp(K: np.ndarray, r: np.ndarray, active: np.ndarray | None = None, max_iter: int = 100):
    r"""Multipliers :math:`\mu` with :math:`\mu_0` free, :math:`\mu_{k\ge1}\ge0`, :math:`w=K\mu-r`,
    :math:`w_0=0`, :math:`w_k\ge0`, :math:`\mu_kw_k=0` (K symmetric positive definite); active-set loop
    started from ``active`` (the previous ADMM iteration's set, usually already the answer).
    Returns ``(mu, active)``."""
    n = len(r)
    if active is None:
        active = np.zeros(n, dtype=bool)
        active[1:] = r[1:] > 0
    active = active.copy()
    active[0] = True
    mu = np.zeros(n)
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        mu = np.zeros(n)
        mu[idx] = np.linalg.solve(K[np.ix_(idx, idx)], r[idx])
        neg = [k for k in idx if k > 0 and mu[k] < 0]
        if neg:
            active[min(neg, key=lambda k: mu[k])] = False
            continue
        w = K @ mu - r
        viol = [k for k in range(1, n) if not active[k] and w[k] < -1e-15 * (1 + abs(r[k]))]
        if not viol:
            return mu, active
        active[min(viol, key=lambda k: w[k])] = True
    return mu, active


def _psd_part(X: np.ndarray) -> np.ndarray:
    lam, V = np.linalg.eigh(X)
    return (V * np.clip(lam, 0.0, None)[:, None, :]) @ V.conj().transpose(0, 2, 1)


def project_lifted(U: np.ndarray, gamma: float, nu: np.ndarray, C0: np.ndarray, R0: np.ndarray, *,
                   eps: float = DEFAULT_EPS, max_iters: int = DEFAULT_MAX_ITERS):
    r"""ADMM for (29) in units of P0: ``U [L, M]`` unit channel rows, :math:`\Gamma` (already tightened), ``nu [L]``,
    targets ``C0 [L, M, M]``, ``R0 [M, M]`` (Hermitian). Returns ``(C_hat [L, M, M], R_hat [M, M], iterations,
    converged)``; the returned blocks are exactly PSD."""
    st = _Structure(U, gamma, nu)
    n_users, m = U.shape
    # T^T z0: block 0 gets R0, block l gets C_l + R0
    tz = np.empty((n_users + 1, m, m), dtype=np.complex128)
    tz[0] = R0
    tz[1:] = C0 + R0[None]
    V = np.empty_like(tz)  # ADMM state V = Y + W (Y = PSD part of V, W = V - Y); start at the target's blocks
    V[1:] = C0
    V[0] = R0 - C0.sum(0)
    V = 0.5 * (V + V.conj().transpose(0, 2, 1))
    scale = math.sqrt(np.sum(np.abs(tz) ** 2)) + 1.0
    tol = eps * scale
    nb = n_users + 1
    P_flat = st.P.reshape(nb, -1)

    state: dict[str, np.ndarray | None] = {"active": None}

    def step(V):
        Y = _psd_part(V)
        W = V - Y
        Xu = (st.Minv @ (tz + st.rho * (Y - W)).reshape(nb, -1)).reshape(tz.shape)
        mu, state["active"] = _lcp(st.K, st.b - st.measure(Xu), state["active"])
        X = Xu + ((st.mc * mu) @ P_flat).reshape(tz.shape)
        V_new = OVER_RELAXATION * X + (1.0 - OVER_RELAXATION) * Y + W
        return 0.5 * (V_new + V_new.conj().transpose(0, 2, 1)), X, Y

    # Anderson acceleration (type II, memory ANDERSON_MEMORY) of the fixed-point map V -> step(V),
    # safeguarded: a step whose residual grows by more than ANDERSON_SAFEGUARD is undone.
    S_hist: list[np.ndarray] = []
    G_hist: list[np.ndarray] = []
    converged = False
    it = 0
    Y_prev = None
    last_plain, last_norm = None, math.inf
    for it in range(1, max_iters + 1):
        F, X, Y = step(V)
        g = (F - V).ravel()
        g_norm = float(np.linalg.norm(g))
        if last_plain is not None and g_norm > ANDERSON_SAFEGUARD * last_norm:
            V, S_hist, G_hist = last_plain, [], []  # undo the extrapolation
            F, X, Y = step(V)
            g = (F - V).ravel()
            g_norm = float(np.linalg.norm(g))
        r_p = math.sqrt(np.sum(np.abs(X - Y) ** 2))
        r_d = math.inf if Y_prev is None else st.rho * math.sqrt(np.sum(np.abs(Y - Y_prev) ** 2))
        Y_prev = Y
        if r_p <= tol and r_d <= tol:
            converged = True
            break
        if it % RHO_EVERY == 0 and (r_p > 10 * r_d or r_d > 10 * r_p):
            f = 2.0 if r_p > 10 * r_d else 0.5
            st.set_rho(st.rho * f)
            V = Y + (V - Y) / f  # W scales with 1 / rho
            S_hist, G_hist, last_plain, last_norm = [], [], None, math.inf
            continue
        S_hist.append(V.ravel().copy())
        G_hist.append(g.copy())
        if len(S_hist) > ANDERSON_MEMORY + 1:
            S_hist.pop(0)
            G_hist.pop(0)
        last_plain, last_norm = F, g_norm
        if len(S_hist) >= 2:
            dS = np.diff(np.stack(S_hist), axis=0)  # [mem, n]
            dG = np.diff(np.stack(G_hist), axis=0)
            # real least squares (Hermitian blocks form a real vector space): normal equations, tiny ridge
            gram = (dG.conj() @ dG.T).real
            gram[np.diag_indices_from(gram)] += 1e-14 * (np.trace(gram) + 1e-300)
            try:
                coef = np.linalg.solve(gram, (dG.conj() @ g).real)
            except np.linalg.LinAlgError:
                coef = np.zeros(len(dG))
            V = (F.ravel() - coef @ (dS + dG)).reshape(F.shape)
            V = 0.5 * (V + V.conj().transpose(0, 2, 1))
        else:
            V = F
    Y = _psd_part(V) if not converged else Y
    return Y[1:], Y.sum(0), it, converged


def project_feasible_fast(
    inst: BeampatternSinrInstance,
    C: torch.Tensor,
    S: torch.Tensor,
    *,
    eps: float = DEFAULT_EPS,
    max_iters: int = DEFAULT_MAX_ITERS,
    sinr_margin: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, Status, str]:
    r"""004's projection module (problem (29), eqs. (30)-(31)) with :func:`project_lifted` instead of CVXPY.

    Same contract as :func:`isac.solvers.zhao_sdr.project_feasible`: ``(C_tilde [M, L], S_tilde [M, M],
    status, message)``; CONVERGED when ADMM met its tolerance and the extracted point meets every
    constraint (checked by the metrics package), INFEASIBLE only with the exact SNR-bound certificate,
    NUMERICAL_ERROR otherwise (the input is then returned unchanged when there is no point).
    """
    from isac.metrics.evaluate import evaluate
    margin = DEFAULT_SINR_MARGIN if sinr_margin is None else float(sinr_margin)
    C = as_complex(C, "C")
    S = as_complex(S, "S")
    m, k = inst.num_antennas, inst.num_users
    if C.shape != (m, k) or S.ndim != 2 or S.shape[0] != m:
        raise ValueError(f"project_feasible: need C [{m}, {k}] and S [{m}, Ns], got {list(C.shape)} and {list(S.shape)}")
    if not (bool(torch.isfinite(torch.view_as_real(C)).all()) and bool(torch.isfinite(torch.view_as_real(S)).all())):
        return C, S, Status.NUMERICAL_ERROR, "project_feasible: input contains NaN or Inf"
    reason = snr_bound_violation(inst)
    if reason is not None:
        return C, S, Status.INFEASIBLE, reason
    p0 = inst.power_w
    H = inst.H.numpy()
    norms2 = np.sum(np.abs(H) ** 2, axis=0)
    U = (H / np.sqrt(norms2)).T
    Cn = C.numpy() / math.sqrt(p0)
    Sn = S.numpy() / math.sqrt(p0)
    C0 = np.einsum("il,jl->lij", Cn, Cn.conj())
    R0 = C0.sum(0) + Sn @ Sn.conj().T
    C_hat, R_hat, iters, converged = project_lifted(U, inst.sinr_target * (1.0 + margin), inst.noise_w / (p0 * norms2),
                                                    C0, R0, eps=eps, max_iters=max_iters)
    if not (np.all(np.isfinite(C_hat)) and np.all(np.isfinite(R_hat))):
        return C, S, Status.NUMERICAL_ERROR, f"ADMM projection: non-finite iterate after {iters} iterations"
    C_t, S_t = extract_beams(inst, torch.as_tensor(R_hat * p0, dtype=COMPLEX), torch.as_tensor(C_hat * p0, dtype=COMPLEX))
    C_t, S_t, moved = rebalance_for_sinr(inst, C_t, S_t)
    message = f"ADMM projection: {'converged' if converged else 'iteration cap reached'} in {iters} iterations"
    if moved > 0:
        message += f"; {moved:.3g} W moved between beams to meet Gamma0 (solver accuracy)"
    feasible = bool(evaluate(inst, {"C": C_t, "S": S_t})["feasible"])
    if feasible and converged:
        return C_t, S_t, Status.CONVERGED, message
    if feasible:
        return C_t, S_t, Status.CONVERGED, message + "; the point meets every constraint (checked), though not provably the nearest"
    return C_t, S_t, Status.NUMERICAL_ERROR, message + "; the extracted point violates a constraint"


# --- shared with the CVXPY programs of isac.solvers.zhao_sdr ------------------------------------------


def snr_bound_violation(inst: BeampatternSinrInstance) -> str | None:
    r"""A one-line reason when :math:`\Gamma_0` exceeds a user's interference-free SNR bound, else None.

    :math:`\Gamma_l\le P_0\|\mathbf h_l\|^2/\sigma^2` for every feasible point (all power on
    :math:`\mathbf h_l/\|\mathbf h_l\|`, no interference), so a larger :math:`\Gamma_0` is an exact
    certificate of infeasibility that needs no conic solver (Clarabel does not always
    certify such problems infeasible).
    """
    snr = inst.power_w * (inst.H.abs() ** 2).sum(0) / inst.noise_w  # [L]
    worst = int(torch.argmin(snr))
    if inst.sinr_target > float(snr[worst]):
        return (f"Gamma0 = {inst.sinr_db:g} dB exceeds user {worst}'s interference-free SNR bound "
                f"P0 |h|^2 / sigma^2 = {10 * math.log10(float(snr[worst])):.4g} dB")
    return None


def extract_beams(inst: BeampatternSinrInstance, R_hat: torch.Tensor, C_hats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Rank-one user beams and a sensing factor from a lifted point, 004 eqs. (30)-(31).

    :math:`\tilde{\mathbf c}_l=\hat{\mathbf C}_l\mathbf h_l/\sqrt{\mathbf h_l^H\hat{\mathbf C}_l\mathbf h_l}`
    (zero when :math:`\mathbf h_l^H\hat{\mathbf C}_l\mathbf h_l\le 0`);
    :math:`\tilde{\mathbf S}=\mathbf V\boldsymbol\Lambda_+^{1/2}` from the eigen-decomposition of
    :math:`\hat{\mathbf R}-\sum_l\tilde{\mathbf c}_l\tilde{\mathbf c}_l^H` with negative
    (round-off) eigenvalues clipped to 0; finally both are scaled by one factor so that
    :math:`\|\tilde{\mathbf C}\|_F^2+\|\tilde{\mathbf S}\|_F^2=P_0` exactly (module docstring:
    effect on the SINRs).

    Args:
        inst: the instance (``H``, ``power_w``).
        R_hat: ``[M, M]`` complex128 Hermitian (watts).
        C_hats: ``[L, M, M]`` complex128 Hermitian PSD (watts).
    Returns:
        ``C [M, L]`` and ``S [M, M]`` complex128 (column i of S is :math:`\sqrt{\lambda_i}\mathbf v_i`).
    """
    R_hat = as_complex(R_hat, "R_hat")
    C_hats = as_complex(C_hats, "C_hats")
    m, k = inst.num_antennas, inst.num_users
    if R_hat.shape != (m, m) or C_hats.shape != (k, m, m):
        raise ValueError(f"extract_beams: need R_hat [{m}, {m}] and C_hats [{k}, {m}, {m}], "
                         f"got {list(R_hat.shape)} and {list(C_hats.shape)}")
    R_hat = 0.5 * (R_hat + hermitian(R_hat))
    C_hats = 0.5 * (C_hats + hermitian(C_hats))
    H = inst.H  # [M, L]
    v = (C_hats @ H.T.unsqueeze(-1)).squeeze(-1)  # [L, M], row l = C_l h_l
    s = (H.conj().T * v).sum(-1).real  # [L], h_l^H C_l h_l
    safe = torch.where(s > 0, s, torch.ones_like(s))
    C = torch.where((s > 0)[:, None], v / safe.sqrt()[:, None], torch.zeros_like(v)).T.contiguous()  # [M, L]
    residual = R_hat - C @ hermitian(C)
    residual = 0.5 * (residual + hermitian(residual))
    lam, V = torch.linalg.eigh(residual)
    S = V * lam.clamp_min(0.0).sqrt().to(COMPLEX)
    power = float((C.abs() ** 2).sum() + (S.abs() ** 2).sum())
    if power > 0:
        scale = math.sqrt(inst.power_w / power)
        C, S = C * scale, S * scale
    return C, S


REBALANCE_TARGET_RTOL = 1e-8
r""":func:`rebalance_for_sinr` aims at :math:`\Gamma_0(1+\text{this})` so that the LP's own tolerance stays invisible."""


def rebalance_for_sinr(inst: BeampatternSinrInstance, C: torch.Tensor, S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    r"""Safeguard: rescale the beams' powers, directions fixed, until every SINR is at least :math:`\Gamma_0`.

    A no-op (returns moved power 0) when every SINR already meets :math:`\Gamma_0`. Otherwise,
    with per-user factors :math:`x_l\ge0` and a sensing factor :math:`y\ge0`, the new point is
    :math:`(\mathbf C\,\mathrm{diag}(\sqrt{\mathbf x}),\ \sqrt y\,\mathbf S)` and the factors solve
    the linear program

    .. math::

        \min\ \sum_l P_l|x_l-1|+P_s|y-1|\quad\text{s.t.}\quad
        x_l g_{ll}\ \ge\ \Gamma\Big(\sum_{j\ne l}x_jg_{lj}+y\,q_l+\sigma^2\Big),\quad
        \sum_l x_lP_l+yP_s=P_0,

    with :math:`g_{lj}=|\mathbf h_l^H\mathbf c_j|^2`, :math:`q_l=\|\mathbf h_l^H\mathbf S\|^2`,
    :math:`P_l=\|\mathbf c_l\|^2`, :math:`P_s=\|\mathbf S\|_F^2` and
    :math:`\Gamma=\Gamma_0(1+\text{REBALANCE\_TARGET\_RTOL})`: the least power (in watts) moved
    between beams that restores the SINR constraints of eq. (11e) at power :math:`P_0` (11c).
    The convex programs' solutions violate :math:`\Gamma_0` only by the solver's tolerance
    (module docstring), so the move is of that order. Returns the input unchanged when the LP
    is infeasible (the evaluator then reports the violation).

    Args:
        C: ``[M, L]``, S: ``[M, Ns]`` complex128.
    Returns:
        ``(C, S, moved_w)``: the (possibly) rebalanced beams and the power moved (watts, 0 if none).
    """
    from scipy.optimize import linprog  # local: only needed on the rare repair path

    H = inst.H
    gamma0 = inst.sinr_target
    G = ((hermitian(H) @ C).abs() ** 2).numpy()  # [L, L], (l, j) = |h_l^H c_j|^2
    q = ((hermitian(H) @ S).abs() ** 2).sum(-1).numpy()
    sig = np.diag(G)
    if bool(np.all(sig >= gamma0 * (G.sum(-1) - sig + q + inst.noise_w))):
        return C, S, 0.0
    k = G.shape[0]
    p_l = (C.abs() ** 2).sum(0).numpy()
    p_s = float((S.abs() ** 2).sum())
    gamma = gamma0 * (1.0 + REBALANCE_TARGET_RTOL)
    # variables [x (L), y, t (L+1) = |factor - 1|], SINR rows divided by sigma^2
    n = 2 * (k + 1)
    A_ub, b_ub = [], []
    for j in range(k):
        row = np.zeros(n)
        row[:k] = gamma * G[j] / inst.noise_w
        row[j] = -G[j, j] / inst.noise_w
        row[k] = gamma * q[j] / inst.noise_w
        A_ub.append(row)
        b_ub.append(-gamma)
    for i in range(k + 1):  # t_i >= |v_i - 1|
        for sign in (1.0, -1.0):
            row = np.zeros(n)
            row[i], row[k + 1 + i] = sign, -1.0
            A_ub.append(row)
            b_ub.append(sign)
    A_eq = np.zeros((1, n))
    A_eq[0, :k] = p_l / inst.power_w
    A_eq[0, k] = p_s / inst.power_w
    cost = np.concatenate([np.zeros(k + 1), p_l / inst.power_w, [p_s / inst.power_w]])
    res = linprog(cost, A_ub=np.array(A_ub), b_ub=np.array(b_ub), A_eq=A_eq, b_eq=[1.0],
                  bounds=[(0, None)] * n, method="highs")
    if res.status != 0:
        return C, S, 0.0
    x, y = np.clip(res.x[:k], 0.0, None), max(float(res.x[k]), 0.0)
    C_new = C * torch.as_tensor(np.sqrt(x), dtype=torch.float64).to(COMPLEX)
    S_new = S * math.sqrt(y)
    power = float((C_new.abs() ** 2).sum() + (S_new.abs() ** 2).sum())
    if power > 0:  # the LP meets the power equality to its tolerance; make it exact
        f = math.sqrt(inst.power_w / power)
        C_new, S_new = C_new * f, S_new * f
    return C_new, S_new, float(np.dot(p_l, np.abs(x - 1.0)) + p_s * abs(y - 1.0))
