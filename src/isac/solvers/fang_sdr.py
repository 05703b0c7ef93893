r"""WMMSE-SDR baseline for ``crlb-sumrate`` (003 Sec. V, after its reference [26], Zhu et al. 2023).

Problem (003 eq. (11)), rates in nats, :math:`\mathbf F` of Lemma 1 over the 4M parameters
:math:`[\boldsymbol\theta,\boldsymbol\phi,\Re\boldsymbol\alpha,\Im\boldsymbol\alpha]`:

.. math::

    \max_{\mathbf W}\ \delta_c\sum_k R_k(\mathbf W)-\delta_s\,\mathrm{tr}\,\mathbf F^{-1}(\mathbf R_x)
    \quad\text{s.t.}\quad \mathrm{tr}(\mathbf R_x)\le P_t,\qquad
    \mathbf R_x=\sum_k\mathbf w_k\mathbf w_k^H+\mathbf W_s\mathbf W_s^H .

**Lifting.** :math:`\mathbf W_k=\mathbf w_k\mathbf w_k^H` is relaxed to a Hermitian PSD matrix
and :math:`\mathbf R_s=\mathbf W_s\mathbf W_s^H` to any Hermitian PSD matrix (its rank bound
:math:`N_s` is dropped, as in every covariance-domain method; 003 Sec. V notes the resulting
loss when :math:`N_s` is small). :math:`\mathbf R_x=\sum_k\mathbf W_k+\mathbf R_s`.

**Sensing term.** F is *linear* in :math:`\mathbf R_x` (eq. (10)):
:math:`F_{pq}=\frac{2L}{\sigma_s^2}\Re\,\mathrm{tr}(\mathbf E_{pq}\mathbf R_x)` with
:math:`\mathbf E_{pq}=\partial_q\mathbf G^H\partial_p\mathbf G` (:func:`fim_expression`), and
:math:`\mathrm{tr}\,\mathbf F^{-1}=\min\{\mathrm{tr}\,\mathbf T:
\left[\begin{smallmatrix}\mathbf F&\mathbf I\\\mathbf I&\mathbf T\end{smallmatrix}\right]\succeq 0\}`
(Schur complement; :func:`crlb_lmi`).

**Rate term (WMMSE).** With signal :math:`S_k=\mathbf h_k^H\mathbf W_k\mathbf h_k` and total
received power :math:`T_k=\mathbf h_k^H\mathbf R_x\mathbf h_k+\sigma_c^2`,
:math:`R_k=\ln\frac{T_k}{T_k-S_k}`. For a receiver :math:`u_k` phase-aligned with the
desired signal the MSE is
:math:`e_k=|u_k|^2T_k-2|u_k|\sqrt{S_k}+1`, and for every :math:`|u_k|\ge0,\ \varpi_k>0`

.. math::

    R_k\ \ge\ \ln\varpi_k-\varpi_k e_k+1,\qquad\text{tight at}\quad
    |u_k|=\sqrt{S_k}/T_k,\ \ \varpi_k=T_k/(T_k-S_k).

(The classic beam-domain WMMSE has :math:`-2\Re(u_k^*\mathbf h_k^H\mathbf w_k)`; on rank-one
:math:`\mathbf W_k` its best phase gives :math:`-2|u_k|\sqrt{S_k}`, which is the form that lives in
the covariance domain.) :math:`e_k` is affine in the covariance matrices except
:math:`-\sqrt{S_k}`, which is convex (a second-order cone), so each step is a convex SDP and the
bound holds for *any* PSD :math:`\mathbf W_k` -- the relaxed objective never decreases over the
alternating optimisation (up to the conic solver's accuracy).

**One AO iteration.** (i) :math:`u_k,\varpi_k` from the current covariance point; (ii) solve

.. math::

    \max_{\{\mathbf W_k\},\mathbf R_s,\mathbf T}\ \delta_c\sum_k(\ln\varpi_k-\varpi_k e_k+1)
    -\delta_s\,\mathrm{tr}\,\mathbf T\quad\text{s.t.}\quad
    \left[\begin{smallmatrix}\mathbf F(\mathbf R_x)&\mathbf I\\\mathbf I&\mathbf T\end{smallmatrix}\right]\succeq0,\
    \mathrm{tr}\,\mathbf R_x\le P_t,\ \mathbf W_k,\mathbf R_s\succeq 0 ;

(iii) extract beams (:func:`extract_beams`) and score them with the *true* objective
(:func:`isac.metrics.problems.crlb_sumrate.objective_terms`). The solver returns the best extracted
point over all iterations.

**Initial point.** ``W0`` of the instance when given; otherwise half the power on equal-power
zero-forcing beams (MRT when K > N_t) and half spread isotropically (``R_s = P_t/(2N_t) I``; all
power to users when N_s = 0). Only its :math:`S_k,T_k` are used.

**Numerical scaling.** Variables are in units of :math:`P_t`, and the LMI is applied to
:math:`\mathbf D\mathbf F\mathbf D` with :math:`\mathbf D=\mathrm{diag}(F^{(0)}_{pp})^{-1/2}`,
:math:`\mathbf F^{(0)}` the FIM of the isotropic full-power covariance; then
:math:`\mathrm{tr}\,\mathbf F^{-1}=\min\sum_p d_p^2\tilde T_{pp}` -- a congruence, exact, but the
conic solver sees O(1) numbers (angle and gain entries of F differ by orders of magnitude).

Decisions where the paper (and [26], whose problem is a sum-rate-constrained CRB minimisation,
not 003's weighted objective) leaves a choice: the sqrt form of the MSE above; the relaxed
rank of :math:`\mathbf R_s`; the stopping rule (relative change of the relaxed objective
between AO iterations); extraction with the comm-beam residuals moved into the sensing
covariance as an extra candidate (it leaves :math:`\mathbf R_x` and hence F unchanged when
:math:`N_s` is large enough); rescaling to exactly :math:`P_t` (003 Prop. 1).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import cvxpy as cp
import numpy as np
import torch

from isac.metrics.bounds.fang import fang_derivatives
from isac.metrics.fim import crb_trace, fisher_information
from isac.metrics.problems.crlb_sumrate import objective_terms
from isac.scenario.instances.crlb_sumrate import PROBLEM as CRLB_SUMRATE
from isac.scenario.instances.crlb_sumrate import CrlbSumrateInstance
from isac.scenario.random import make_rng
from isac.solvers.baselines import mrt_directions, zf_directions
from isac.solvers.base import Solver, Status
from isac.solvers.registry import register_solver

_SOLVER_NAMES = ("SCS", "CLARABEL")
_ACCEPTED = (cp.OPTIMAL, cp.OPTIMAL_INACCURATE)


# --- the convex building blocks ------------------------------------------------------------------


def fim_coefficients(dG: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    r"""Real matrices ``(A_re, A_im)`` ``[P*P, Nt*Nt]`` with ``vec(F) = A_re vec(Re R) + A_im vec(Im R)``.

    From eq. (10) of 003, :math:`F_{pq}=c\,\Re\,\mathrm{tr}(\mathbf E_{pq}\mathbf R)` with
    :math:`\mathbf E_{pq}=\partial_q\mathbf G^H\partial_p\mathbf G` and, for Hermitian R,
    :math:`\Re\,\mathrm{tr}(\mathbf E\mathbf R)=\sum_{ij}\Re E_{ij}\Re R_{ij}+\Im E_{ij}\Im R_{ij}`.
    E is replaced by its Hermitian part, so rows (p, q) and (q, p) coincide and the map is
    exactly symmetric. ``vec`` is row-major.

    Args:
        dG: dense derivatives ``[P, Nr, Nt]`` complex (numpy).
        scale: :math:`c = 2L/\sigma_s^2` (1/W).
    """
    p = dG.shape[0]
    # E[p, q] = dG_q^H dG_p, entry (i, j) = sum_r conj(dG_q[r, i]) dG_p[r, j]
    E = np.einsum("qri,prj->pqij", dG.conj(), dG)
    # For Hermitian R, Re tr(E R) = Re tr(E^H R), and E_qp = E_pq^H: using the Hermitian part
    # (E_pq + E_qp)/2 makes rows (p, q) and (q, p) bit-identical.
    E = 0.5 * (E + E.transpose(1, 0, 2, 3))
    flat = scale * E.reshape(p * p, -1)
    return np.ascontiguousarray(flat.real), np.ascontiguousarray(flat.imag)


def fim_expression(dG: np.ndarray, R: cp.Expression, scale: float) -> cp.Expression:
    r"""The FIM of 003 eq. (10) as a CVXPY expression ``[P, P]`` (real, symmetric) affine in ``R``.

    Args:
        dG: dense derivatives ``[P, Nr, Nt]`` complex (numpy), e.g. ``fang_derivatives(...).dense()``.
        R: Hermitian ``[Nt, Nt]`` CVXPY expression (the transmit covariance, in the unit that
            ``scale`` expects).
        scale: :math:`2L/\sigma_s^2`, times any unit change of ``R``.
    """
    p = dG.shape[0]
    a_re, a_im = fim_coefficients(dG, scale)
    vec = a_re @ cp.vec(cp.real(R), order="C") + a_im @ cp.vec(cp.imag(R), order="C")
    return cp.reshape(vec, (p, p), order="C")


def crlb_lmi(F: cp.Expression, d: np.ndarray | None = None) -> tuple[cp.Variable, list[cp.Constraint], cp.Expression]:
    r"""Epigraph of :math:`\mathrm{tr}\,\mathbf F^{-1}` by the Schur-complement LMI.

    Returns ``(T, constraints, value)`` where minimising ``value`` subject to ``constraints``
    gives :math:`\mathrm{tr}\,\mathbf F^{-1}`: the LMI is
    :math:`\left[\begin{smallmatrix}\mathbf D\mathbf F\mathbf D&\mathbf I\\\mathbf I&\tilde{\mathbf T}\end{smallmatrix}\right]\succeq0`
    and ``value`` :math:`=\sum_p d_p^2\tilde T_{pp}` (:math:`\tilde{\mathbf T}=\mathbf D^{-1}\mathbf T\mathbf D^{-1}`).

    Args:
        F: real ``[P, P]`` affine CVXPY expression.
        d: positive diagonal scaling ``[P]`` (default ones).
    """
    p = F.shape[0]
    d = np.ones(p) if d is None else np.asarray(d, dtype=np.float64)
    D = np.diag(d)
    T = cp.Variable((p, p), symmetric=True)
    FD = D @ F @ D
    M = cp.bmat([[0.5 * (FD + FD.T), np.eye(p)], [np.eye(p), T]])
    return T, [M >> 0], cp.sum(cp.multiply(d**2, cp.diag(T)))


def _diag_scaling(a_re: np.ndarray, p: int, nt: int) -> np.ndarray:
    """``d = diag(F0)^{-1/2}`` for F0 the FIM of R = I/Nt (unit power)."""
    f0 = (a_re @ (np.eye(nt) / nt).reshape(-1)).reshape(p, p)
    diag = np.clip(np.diag(f0), np.finfo(float).tiny, None)
    return 1.0 / np.sqrt(diag)


@dataclass
class _Point:
    """A covariance-domain point in watts: ``Wk [K, Nt, Nt]``, ``Rs [Nt, Nt]`` (numpy complex)."""

    Wk: np.ndarray
    Rs: np.ndarray

    @property
    def Rx(self) -> np.ndarray:
        return self.Wk.sum(0) + self.Rs


class _SdrStep:
    """The SDP of one AO iteration, compiled once; the WMMSE weights are CVXPY parameters."""

    def __init__(self, inst: CrlbSumrateInstance, dG: np.ndarray, *, include_rates: bool, include_crlb: bool):
        nt, k = inst.num_tx, inst.num_users
        self.p_w = inst.p_max_w
        self.H = inst.H.numpy()
        self.noise_comm_w = inst.noise_comm_w
        self.scale = 2.0 * inst.snapshots / inst.noise_sense_w
        self.include_rates = include_rates
        # variables in units of P_t
        self.Wk = [cp.Variable((nt, nt), hermitian=True) for _ in range(k)]
        self.Rs = cp.Variable((nt, nt), hermitian=True) if inst.num_sensing_streams > 0 else None
        Rx = cp.sum(self.Wk) if k > 1 else self.Wk[0]
        if self.Rs is not None:
            Rx = Rx + self.Rs
        cons: list[cp.Constraint] = [W >> 0 for W in self.Wk]
        if self.Rs is not None:
            cons.append(self.Rs >> 0)
        cons.append(cp.real(cp.trace(Rx)) <= 1.0)
        objective = 0.0
        self.crlb_value = None
        if include_crlb:
            p = dG.shape[0]
            F = fim_expression(dG, Rx, self.scale * self.p_w)
            d = _diag_scaling(fim_coefficients(dG, self.scale * self.p_w)[0], p, nt)
            self.T, lmi, self.crlb_value = crlb_lmi(F, d)
            cons += lmi
            objective = objective - inst.delta_s * self.crlb_value
        # WMMSE surrogate: sum_k ln(w_k) - w_k (|u_k|^2 T_k - 2|u_k| sqrt(S_k) + 1) + 1
        self.c_total = cp.Parameter(k, nonneg=True)  # w_k |u_k|^2 P_t
        self.c_signal = cp.Parameter(k, nonneg=True)  # 2 w_k |u_k| sqrt(P_t)
        self.c_const = cp.Parameter(k)  # ln w_k - w_k (|u_k|^2 sigma^2 + 1) + 1
        if include_rates:
            terms = []
            for j in range(k):
                h = self.H[:, j]
                total = cp.real(h.conj() @ Rx @ h)
                signal = cp.real(h.conj() @ self.Wk[j] @ h)
                terms.append(self.c_const[j] - self.c_total[j] * total + self.c_signal[j] * cp.sqrt(signal))
            objective = objective + inst.delta_c * cp.sum(cp.hstack(terms))
        self.problem = cp.Problem(cp.Maximize(objective), cons)

    def set_weights(self, point: _Point) -> None:
        """Per-user MMSE receiver magnitude and MSE weight from ``point`` (closed forms above)."""
        S, T = _signal_total(self.H, point, self.noise_comm_w)
        u = np.sqrt(S) / T
        w = T / np.maximum(T - S, np.finfo(float).tiny)
        self.c_total.value = w * u**2 * self.p_w
        self.c_signal.value = 2.0 * w * u * math.sqrt(self.p_w)
        self.c_const.value = np.log(w) - w * (u**2 * self.noise_comm_w + 1.0) + 1.0

    def solve(self, solver: str, warm: bool) -> tuple[str, float, _Point | None]:
        kwargs: dict[str, Any] = {"solver": solver, "warm_start": warm}
        if solver == "SCS":
            kwargs.update(eps_abs=1e-6, eps_rel=1e-6, max_iters=20000)
        else:
            kwargs.update(equilibrate_enable=False)
        try:
            with warnings.catch_warnings():
                # "Solution may be inaccurate": reported through the status instead.
                warnings.simplefilter("ignore", UserWarning)
                # cvxpy's numeric re-evaluation of the sqrt term on slightly negative round-off.
                warnings.simplefilter("ignore", RuntimeWarning)
                self.problem.solve(**kwargs)
        except (cp.error.SolverError, ValueError, ArithmeticError) as e:
            return f"solver error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", math.nan, None
        status = self.problem.status
        if status not in _ACCEPTED or any(W.value is None for W in self.Wk):
            return str(status), math.nan, None
        Wk = np.stack([_psd_part(W.value) for W in self.Wk])
        Rs = _psd_part(self.Rs.value) if self.Rs is not None else np.zeros_like(Wk[0])
        # The conic solver meets tr(R_x) <= 1 only to its tolerance, and the objective increases
        # with a common scaling (003 Prop. 1): put the point at exactly full power.
        power = float(np.real(np.trace(Wk.sum(0) + Rs)))
        if not power > 0:
            return "zero transmit covariance", math.nan, None
        return str(status), float(self.problem.value), _Point(Wk * (self.p_w / power), Rs * (self.p_w / power))


def _psd_part(X: np.ndarray) -> np.ndarray:
    """Nearest Hermitian PSD matrix (the conic solver's answer is PSD only to its tolerance)."""
    X = 0.5 * (X + X.conj().T)
    lam, V = np.linalg.eigh(X)
    return (V * np.clip(lam, 0.0, None)) @ V.conj().T


def _signal_total(H: np.ndarray, point: _Point, noise_w: float) -> tuple[np.ndarray, np.ndarray]:
    """``S_k = h_k^H W_k h_k`` and ``T_k = h_k^H R_x h_k + sigma^2`` ``[K]`` (watts)."""
    S = np.real(np.einsum("ik,kij,jk->k", H.conj(), point.Wk, H))
    T = np.real(np.einsum("ik,ij,jk->k", H.conj(), point.Rx, H)) + noise_w
    return np.clip(S, 0.0, None), T


def relaxed_objective(inst: CrlbSumrateInstance, dG: np.ndarray, point: _Point) -> float:
    r"""003's objective at a covariance-domain point: :math:`\delta_c\sum_k\ln\frac{T_k}{T_k-S_k}-\delta_s\mathrm{tr}\,\mathbf F^{-1}(\mathbf R_x)`.

    F comes from the engine (:func:`isac.metrics.fim.fisher_information` with ``covariance=``).
    """
    S, T = _signal_total(inst.H.numpy(), point, inst.noise_comm_w)
    rate = float(np.sum(np.log(T / np.maximum(T - S, np.finfo(float).tiny))))
    F = fisher_information(torch.as_tensor(dG), covariance=torch.as_tensor(point.Rx),
                           snapshots=inst.snapshots, noise_power_w=inst.noise_sense_w)
    crlb = float(crb_trace(F)) if inst.delta_s > 0 else 0.0  # +inf where F is singular
    return inst.delta_c * rate - inst.delta_s * crlb


def _top_beams(R: np.ndarray, n: int) -> np.ndarray:
    """``[Nt, n]`` columns sqrt(lambda_i) v_i of the n largest eigenpairs of PSD R (zero-padded)."""
    nt = R.shape[0]
    out = np.zeros((nt, n), dtype=np.complex128)
    if n == 0:
        return out
    lam, V = np.linalg.eigh(0.5 * (R + R.conj().T))
    order = np.argsort(lam)[::-1][: min(n, nt)]
    out[:, : order.size] = V[:, order] * np.sqrt(np.clip(lam[order], 0.0, None))
    return out


def extract_beams(point: _Point, num_sensing_streams: int, p_max_w: float,
                  rng: np.random.Generator | None = None, randomizations: int = 0) -> np.ndarray:
    r"""Candidate beamformers ``[C, Nt, K+Ns]`` from a covariance-domain point, each at power exactly ``p_max_w``.

    Candidate 0: :math:`\mathbf w_k=\sqrt{\lambda_1}\mathbf v_1` of each :math:`\mathbf W_k` and
    :math:`\mathbf W_s` from the top :math:`N_s` eigenpairs of :math:`\mathbf R_s` (zero-padded when
    :math:`N_s>N_t`). Candidate 1 (when N_s > 0): the same with the residuals
    :math:`\mathbf W_k-\lambda_1\mathbf v_1\mathbf v_1^H` added to :math:`\mathbf R_s` first.
    Then ``randomizations`` Gaussian candidates :math:`\mathbf w_k=\mathbf W_k^{1/2}\mathbf z_k`,
    :math:`\mathbf z_k\sim\mathcal{CN}(0,\mathbf I)`, rescaled to :math:`\|\mathbf w_k\|^2=\mathrm{tr}\mathbf W_k`,
    with the candidate-0 sensing block. All are rescaled to full power (003 Prop. 1).
    """
    k, nt = point.Wk.shape[0], point.Wk.shape[1]
    principal = np.concatenate([_top_beams(W, 1) for W in point.Wk], axis=1)  # [Nt, K]
    Ws = _top_beams(point.Rs, num_sensing_streams)
    cands = [np.concatenate([principal, Ws], axis=1)]
    if num_sensing_streams > 0:
        residual = sum(W - np.outer(c, c.conj()) for W, c in zip(point.Wk, principal.T))
        cands.append(np.concatenate([principal, _top_beams(point.Rs + residual, num_sensing_streams)], axis=1))
    if randomizations > 0:
        if rng is None:
            raise ValueError("extract_beams: randomizations > 0 needs an rng")
        roots = []
        for W in point.Wk:
            lam, V = np.linalg.eigh(0.5 * (W + W.conj().T))
            roots.append(V * np.sqrt(np.clip(lam, 0.0, None)))
        for _ in range(randomizations):
            z = (rng.standard_normal((k, nt)) + 1j * rng.standard_normal((k, nt))) / math.sqrt(2.0)
            cols = []
            for j in range(k):
                v = roots[j] @ z[j]
                nv = np.linalg.norm(v)
                target = math.sqrt(max(float(np.real(np.trace(point.Wk[j]))), 0.0))
                cols.append(v * (target / nv) if nv > 0 else v)
            cands.append(np.concatenate([np.stack(cols, axis=1), Ws], axis=1))
    W = np.stack(cands)
    power = np.sum(np.abs(W) ** 2, axis=(1, 2), keepdims=True)
    return W * np.sqrt(p_max_w / np.where(power > 0, power, 1.0))


def _initial_point(inst: CrlbSumrateInstance) -> _Point:
    nt, k = inst.num_tx, inst.num_users
    p = inst.p_max_w
    if inst.W0 is not None:
        W0 = inst.W0.numpy()
        Wk = np.einsum("ik,jk->kij", W0[:, :k], W0[:, :k].conj())
        Ws = W0[:, k:]
        return _Point(Wk, Ws @ Ws.conj().T)
    try:
        D = zf_directions(inst.H).numpy()
    except torch.linalg.LinAlgError:
        D = mrt_directions(inst.H).numpy()
    rho = 0.5 if inst.num_sensing_streams > 0 else 1.0
    Wk = np.einsum("ik,jk->kij", D, D.conj()) * (rho * p / k)
    Rs = np.eye(nt, dtype=np.complex128) * ((1.0 - rho) * p / nt)
    return _Point(Wk, Rs)


# --- the solver ----------------------------------------------------------------------------------


@register_solver
@dataclass
class WmmseSdr(Solver):
    """WMMSE-SDR (003 Sec. V baseline, ref. [26]): AO of WMMSE weights and a covariance-domain SDP.

    See the module docstring for the problem, the surrogate and the extraction.
    """

    max_iterations: int = 20
    """Outer AO iterations (one SDP each)."""
    tolerance: float = 1e-4
    """Stop when the relaxed objective changes by at most ``tolerance * max(|previous|, 1e-12)``."""
    solver: str = "SCS"
    """Conic solver: ``"SCS"`` (eps_abs = eps_rel = 1e-6) or ``"CLARABEL"`` (with ``equilibrate_enable=False``)."""
    randomizations: int = 16
    """Gaussian randomisation candidates per iteration (0: eigen-extraction only)."""
    seed: int = 0
    """Seed of the randomisation draws."""

    name: ClassVar[str] = "wmmse-sdr"
    problems: ClassVar[tuple[str, ...]] = (CRLB_SUMRATE,)
    description: ClassVar[str] = "WMMSE + semidefinite relaxation with the Schur-complement CRLB LMI (003 baseline)"

    def __post_init__(self) -> None:
        if self.max_iterations < 1:
            raise ValueError(f"max_iterations must be >= 1, got {self.max_iterations}")
        if not self.tolerance >= 0:
            raise ValueError(f"tolerance must be >= 0, got {self.tolerance}")
        if self.solver not in _SOLVER_NAMES:
            raise ValueError(f"solver must be one of {', '.join(_SOLVER_NAMES)}, got {self.solver!r}")
        if self.randomizations < 0:
            raise ValueError(f"randomizations must be >= 0, got {self.randomizations}")
        make_rng(self.seed)  # validates the seed

    def _solve(self, inst: CrlbSumrateInstance):
        rng = make_rng(self.seed)
        dG = fang_derivatives(inst.tx_array, inst.rx_array, inst.theta_rad, inst.phi_rad, inst.alpha).dense().numpy()
        step = _SdrStep(inst, dG, include_rates=inst.delta_c > 0, include_crlb=inst.delta_s > 0)
        point = _initial_point(inst)
        previous = relaxed_objective(inst, dG, point)
        trace: list[dict[str, float]] = []
        best_W, best_obj = None, -math.inf
        inaccurate = 0
        for it in range(1, self.max_iterations + 1):
            step.set_weights(point)
            t0 = time.perf_counter()
            status, sdp_value, new_point = step.solve(self.solver, warm=it > 1)
            sdp_time = time.perf_counter() - t0
            if new_point is None:
                msg = f"{self.solver} returned {status} at AO iteration {it}"
                sol = {"W": best_W} if best_W is not None else {}
                return Status.NUMERICAL_ERROR, msg, sol, trace, it
            point = new_point
            inaccurate += status == cp.OPTIMAL_INACCURATE
            cands = torch.as_tensor(extract_beams(point, inst.num_sensing_streams, inst.p_max_w, rng,
                                                  self.randomizations))
            terms = objective_terms(inst, cands)
            obj = terms["objective"]
            obj = torch.where(torch.isfinite(obj), obj, torch.full_like(obj, -math.inf))
            i = int(torch.argmax(obj))
            current = relaxed_objective(inst, dG, point)
            trace.append({
                "iteration": float(it),
                "objective": float(obj[i]),
                "sum_rate_nats": float(terms["rates_nats"][i].sum()),
                "crlb_trace": float(terms["crlb_trace"][i]),
                "sdp_value": sdp_value,
                "relaxed_objective": current,
                "sdp_time_s": sdp_time,
                "sdp_inaccurate": float(status == cp.OPTIMAL_INACCURATE),
            })
            if float(obj[i]) > best_obj:
                best_obj, best_W = float(obj[i]), cands[i].clone()
            if not math.isfinite(current):
                return Status.NUMERICAL_ERROR, f"non-finite relaxed objective at AO iteration {it}", \
                    ({"W": best_W} if best_W is not None else {}), trace, it
            if abs(current - previous) <= self.tolerance * max(abs(previous), 1e-12):
                if best_W is None:
                    return Status.NUMERICAL_ERROR, "no extracted point has a finite objective", {}, trace, it
                return Status.CONVERGED, f"relative change of relaxed objective <= {self.tolerance:g}" + \
                    _inaccurate_note(inaccurate), {"W": best_W}, trace, it
            previous = current
        if best_W is None:
            return Status.NUMERICAL_ERROR, "no extracted point has a finite objective", {}, trace, self.max_iterations
        return Status.MAX_ITERATIONS, f"{self.max_iterations} AO iterations" + _inaccurate_note(inaccurate), \
            {"W": best_W}, trace, self.max_iterations


def _inaccurate_note(count: int) -> str:
    return f"; {count} SDP(s) solved to reduced accuracy (optimal_inaccurate)" if count else ""


def min_crlb_sdp(inst: CrlbSumrateInstance, solver: str = "SCS") -> tuple[float, np.ndarray]:
    r"""Pure sensing SDP: :math:`\min\mathrm{tr}\,\mathbf F^{-1}(\mathbf R)` s.t. :math:`\mathrm{tr}\mathbf R\le P_t,\ \mathbf R\succeq0`.

    Returns ``(value, R [Nt, Nt] in watts)``, R rescaled to exactly :math:`\mathrm{tr}\,\mathbf R=P_t`
    (the optimum uses full power, 003 Prop. 1). ``value`` is the SDP's: a lower bound on tr(F^-1) of every beamformer
    within the budget (the covariance of any W is feasible). Raises ``cp.error.SolverError``
    when the conic solver does not return an optimal status.
    """
    dG = fang_derivatives(inst.tx_array, inst.rx_array, inst.theta_rad, inst.phi_rad, inst.alpha).dense().numpy()
    step = _SdrStep(inst.with_params(delta_c=0.0, delta_s=1.0), dG, include_rates=False, include_crlb=True)
    status, value, point = step.solve(solver, warm=False)
    if point is None:
        raise cp.error.SolverError(f"min_crlb_sdp: {solver} returned {status}")
    return -value, point.Rx
