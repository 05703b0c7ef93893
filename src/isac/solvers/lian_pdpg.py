r"""``pdpg``: primal-dual projected gradient on the beams for 002's problem (32) (``coop-localization``).

Problem (32), rates in bit/s/Hz, joint transmission over the stacked channels
:math:`\mathbf h_k\in\mathbb C^{NL}`, beams :math:`\mathbf P_n\in\mathbb C^{L\times(K+N_s)}` per BS:

.. math::

    \max_{\mathbf P}\ f(\mathbf P)=\sum_{k=1}^K\log_2(1+\mathrm{SINR}_k)
    \quad\text{s.t.}\quad \|\mathbf P_n\|_F^2\le P_n\ \forall n\ \text{(32b)},\qquad
    \mathrm{SPEB}(\mathbf P)\le\gamma\ \text{(32c)}.

**Scaled variables.** :math:`\mathbf P_n=\sqrt{P_n}\,\mathbf V_n`, so (32b) is the unit ball
:math:`\|\mathbf V_n\|_F\le1` of every BS; the rates see the channels
:math:`\mathbf g_{k,n}=\sqrt{P_n}\,\mathbf h_{k,n}/\sigma_c` (unit noise). The SPEB constraint is
used in the relative, logarithmic form

.. math::

    g(\mathbf V)=\ln\frac{\mathrm{SPEB}(\mathbf V)}{\gamma'}\le 0,\qquad \gamma'=\gamma(1-\texttt{margin}),

which is scale-free (the SPEB in m² spans orders of magnitude with the power and the geometry) and
equals :math:`\mathrm{SPEB}/\gamma'-1` to first order at the boundary. ``margin`` (default 1e-3)
puts the point the iteration settles on slightly inside the feasible set.

**Full power.** The iterates keep every BS block on its unit sphere :math:`\|\mathbf V_n\|_F=1`
(the boundary of (32b)): the FIM grows with the transmit covariance, and power added at a BS in a
direction orthogonal to all users' channels there changes no rate, so full power loses nothing in
practice (every start is at full power; a step moves in the tangent space of the spheres and is
then normalised back onto them, which also satisfies (32b) exactly).

**One iteration** (every start of every instance at once, one batched tensor program), from the
accepted point :math:`\mathbf V` with Lagrangian :math:`\mathcal L=f-\lambda g` (maximised):

1. *Primal direction*: quasi-Newton (L-BFGS, ``memory`` pairs) on the tangent gradients
   :math:`\nabla f`, :math:`\nabla g` (radial parts removed): :math:`\mathbf d_f=T\mathbf H\nabla f`,
   :math:`\mathbf d_g=T\mathbf H\nabla g`, with :math:`\mathbf H` the L-BFGS inverse-Hessian estimate of
   :math:`-\mathcal L` from the pairs :math:`(\mathbf s,\mathbf y)=(\mathbf V^+-\mathbf V,
   -\nabla\mathcal L(\mathbf V^+)+\nabla\mathcal L(\mathbf V))` of accepted moves (pairs without positive
   curvature are skipped), :math:`T` the tangent projection; the first step is a normalised gradient step,
   :math:`\mathbf H=(\texttt{step_size}/\mathrm{RMS}(\nabla f))\,\mathbf I`: every complex entry moves by
   about ``step_size`` whatever the units.
2. *Dual step*: :math:`\lambda\ge0` is the dual ascent step whose length makes the linearised
   constraint meet its target after the primal step
   :math:`\alpha(\mathbf d_f-\lambda\mathbf d_g)`:
   :math:`\lambda=\max\big(0,(g-g^\star+\alpha\langle\nabla g,\mathbf d_f\rangle)/(\alpha\langle\nabla g,\mathbf d_g\rangle)\big)`
   with :math:`g^\star=\max(0, g-1/2)` (an infeasible start approaches the boundary by at most a factor
   :math:`e^{1/2}` of SPEB per step). Plain gradient steps on the Lagrangian with a fixed dual step
   oscillate around the boundary; this one follows it.
3. *Trial and step length*: :math:`\mathbf V^+` = the blocks of :math:`\mathbf V+\alpha(\mathbf d_f-\lambda\mathbf d_g)`
   normalised. It is accepted when it does not lower the merit :math:`f-(2\lambda+1)\max(0,g)`; then
   :math:`\alpha` grows by 1.5 (at most 1), else the trial is dropped and :math:`\alpha` halved.

(Tried first and dropped: Adam on the augmented Lagrangian with a fixed dual step. Its per-entry
scaling stalls far from the stationary points here, 0.5-1 % below this method on ``lian`` at the
same budget, and the plain projected gradient converges slowly on the ill-conditioned high-SNR
instances.) The gradients are autograd through the formulas of
:func:`isac.metrics.problems.coop_localization.batch_terms`, computed faster: the FIM of 002
depends on the beams only through :math:`\mathbf X=\mathbf B^H\mathbf P\mathbf P^H\mathbf B`
(:math:`\mathbf B` per-BS orthonormal bases of :math:`\{\mathbf a_n,\partial_\theta\mathbf a_n,
\partial_\beta\mathbf a_n\}`, the span every transmit-side derivative lies in, see
:mod:`isac.metrics.bounds.lian_floor`), and linearly, so it is one real matrix product
(:func:`reduced_fim_map`, built once per solve from :func:`isac.metrics.bounds.lian.lian_derivatives`),
then the Schur complement, the Jacobian of eq. (29)-(31) and the trace of the inverse, as the engine
does (instances with ``speb_model="eq20"`` use :func:`isac.metrics.bounds.lian.lian_speb` itself).

**Starts** (option ``starts``, per instance, in this order; the instance's ``W0`` when it has one
replaces the first): regularised zero-forcing (RZF, regulariser :math:`K/N` in the scaled units)
or MRT user beams on the (estimated) channels, and the sensing beam(s) steered at the (estimated)
target taking a share :math:`\rho_s` of every BS's power, :data:`STRUCTURED_STARTS`; then random
beams (complex Gaussian from a ``torch.Generator`` seeded with ``seed`` and the start's index, the
same for every instance, so that an instance's result does not depend on the batch it is solved
in). Every start begins at full power (``W0`` is scaled into the budgets where it exceeds them).

**Returned point.** The best *feasible* point evaluated over all starts and iterations: SPEB on the
solver's view at most :math:`\gamma(1-10^{-4})` (:data:`ACCEPT_RTOL`), power within the budgets
(always: the blocks have unit norm). None: INFEASIBLE, no point.

**Stopping rule** (checked every ``window`` iterations, per instance; a stopped instance is frozen
and leaves the batch): CONVERGED when a feasible point exists, the best feasible sum rate improved
by at most ``tolerance`` x max(1, f) over the last window, and the start holding it is stationary:
the Lagrangian :math:`-f+\lambda g` of its accepted point changed by at most ``tolerance`` x
``max(1, |L|)`` over the window, with :math:`g\le` ``tolerance``. Otherwise MAX_ITERATIONS after
``max_iterations`` (the point is still the best feasible one).

A threshold below the SPEB floor (:func:`isac.metrics.bounds.lian_floor.gamma_below_floor`) is
INFEASIBLE before any iteration. The solver plans with ``inst.solver_view()`` (estimated channels
and target when present); the Result's metrics are computed on the truth.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

import isac.metrics.problems.coop_localization  # noqa: F401  (registers the evaluator finalize() needs)
from isac.metrics.bounds.lian import angle_jacobian, lian_derivatives, lian_speb, target_angles
from isac.metrics.fim import FactoredDerivatives
from isac.scenario.instances.coop_localization import PROBLEM, CoopLocalizationInstance
from isac.solvers.base import OptionError, Result, Solver, Status, finalize
from isac.solvers.registry import register_solver, set_default_solver

ACCEPT_RTOL = 1e-4
"""A point counts as feasible when its SPEB (solver's view) is at most gamma (1 - ACCEPT_RTOL)."""

STRUCTURED_STARTS = (("rzf", 0.05), ("rzf", 0.2), ("mrt", 0.2), ("rzf", 0.5), ("mrt", 0.05), ("rzf", 0.8))
"""(user beams, sensing power share) of the structured starts, in order; further starts are random."""

_MAX_DECREASE = 0.5  # the linearised step lowers g by at most this much
_GROW, _SHRINK = 1.5, 0.5  # step length after an accepted / a rejected trial point
_ETA_MIN = 1e-30


@dataclass
class _Plan:
    """Batched planning data (solver's view) of B instances; tensors carry a start dimension of size 1."""

    G: torch.Tensor  # [B, 1, N*L, K] scaled channels sqrt(P_n) h / sigma_c
    sqrt_p: torch.Tensor  # [B, 1, N, 1, 1] sqrt of the budgets (W = sqrt_p * V)
    basis_h: torch.Tensor | None  # [B, 1, N, 3, L]: B_n^H, B_n orthonormal basis of span{a_n, da_n/dtheta, da_n/dbeta}
    fim_map: torch.Tensor | None  # [B, cols, P(P+1)/2]: vech(F) = x(X) @ fim_map (transpose of reduced_fim_map)
    fim_map_t: torch.Tensor | None  # [B, P(P+1)/2, cols] contiguous
    jac: torch.Tensor  # [B, 1, 2N, 3]
    jac_t: torch.Tensor  # [B, 1, 3, 2N]
    gamma_plan: torch.Tensor  # [B, 1] gamma (1 - margin)
    gamma_accept: torch.Tensor  # [B, 1] gamma (1 - ACCEPT_RTOL)
    num_bs: int
    speb_model: str
    # eq20 model: the engine's own inputs
    engine: tuple | None = None
    num_params: int = 0
    x_index: torch.Tensor | None = None
    unvech_index: torch.Tensor | None = None

    def select(self, idx: torch.Tensor) -> _Plan:
        pick = (lambda t: None if t is None else t[idx])
        engine = None if self.engine is None else (self.engine[0], *(t[idx] for t in self.engine[1:4]),
                                                   *self.engine[4:])
        return _Plan(self.G[idx], self.sqrt_p[idx], pick(self.basis_h), pick(self.fim_map), pick(self.fim_map_t),
                     self.jac[idx], self.jac_t[idx], self.gamma_plan[idx], self.gamma_accept[idx], self.num_bs,
                     self.speb_model, engine, self.num_params, self.x_index, self.unvech_index)


def _sym_pairs(n: int, strict: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Index pairs (i, j) with i < j (strict) or i <= j, in row-major order."""
    i, j = torch.triu_indices(n, n, offset=1 if strict else 0)
    return i, j


def reduced_fim_map(derivs: FactoredDerivatives, basis: torch.Tensor, scale: float) -> torch.Tensor:
    r"""Real matrix ``A [..., P(P+1)/2, m(m+1)/2 + m(m-1)/2]`` with ``vech(F) = A @ x(X)``, ``m = 3N``.

    The FIM of 002 sees the transmit covariance only through :math:`\mathbf X=\mathbf B^H\mathbf R\mathbf B`
    (``basis`` ``B [..., N, L, 3]`` block-diagonal, orthonormal; every transmit-side derivative vector
    lies in its span, see :mod:`isac.metrics.bounds.lian_floor`):
    :math:`F_{pq}=c\,\Re\sum_{r,s}(\mathbf u_{qs}^H\mathbf u_{pr})\,\tilde{\mathbf v}_{pr}^H\mathbf X\tilde{\mathbf v}_{qs}`
    with :math:`\tilde{\mathbf v}=\mathbf B^H\mathbf v`. ``x(X)`` stacks :math:`\Re X_{ij}` (i <= j) and
    :math:`\Im X_{ij}` (i < j); ``vech`` takes :math:`F_{pq}`, p <= q (both row-major).
    """
    left, right = derivs.left, derivs.right  # [..., P, R, NL]
    *batch, p, r, nl = right.shape
    n = basis.shape[-3]
    length = basis.shape[-2]
    rv = right.reshape(*batch, p, r, n, length)
    vt = torch.einsum("...nlk,...prnl->...prnk", basis.conj(), rv).reshape(*batch, p, r, 3 * n)  # B^H v
    gu = torch.einsum("...pri,...qsi->...prqs", left.conj(), left)  # u_pr^H u_qs
    # C[p, q, i, j] with F_pq = Re sum_ij C[p,q,i,j] X[j,i]: C = c sum_rs conj(gu[pr,qs]) vt_qs[i] conj(vt_pr[j])
    C = scale * torch.einsum("...prqs,...qsi,...prj->...pqij", gu.conj(), vt, vt.conj())
    m = 3 * n
    ii, jj = _sym_pairs(m, strict=False)
    si, sj = _sym_pairs(m, strict=True)
    Cr, Ci = C.real, C.imag
    diag = (ii == jj).to(Cr.dtype)
    # Re X symmetric: sum_ij Cr[i,j] Xr[j,i] = sum_{i<=j} (Cr[i,j] + Cr[j,i]) (1 - [i=j]/2) Xr[i,j]
    a_re = (Cr[..., ii, jj] + Cr[..., jj, ii]) * (1.0 - 0.5 * diag)
    # Im X antisymmetric: -sum_ij Ci[i,j] Xi[j,i] = sum_{i<j} (Ci[i,j] - Ci[j,i]) Xi[i,j]
    a_im = Ci[..., si, sj] - Ci[..., sj, si]
    pi, pj = _sym_pairs(p, strict=False)
    A = torch.cat([a_re, a_im], dim=-1)[..., pi, pj, :]  # [..., P(P+1)/2, columns]
    return A


class _ConstBmm(torch.autograd.Function):
    """``x @ A`` (``x [B, S, c]``) for a constant ``A`` whose transpose is given contiguous, computed so that an
    instance's rows have the same bits in a batch of any size B.

    MKL's batched gemm (CPU, float64) rounds differently with the batch count when the row count S is
    odd (seen for these shapes; even S is batch-invariant), and autograd's own backward multiplies by a
    transposed view. Here both passes are plain ``bmm`` calls on contiguous operands with S padded to an
    even count by a zero row, which keeps :meth:`PrimalDualPG.solve_batch` equal to ``solve`` to the bit.
    """

    @staticmethod
    def forward(ctx, x, A, A_t):  # noqa: D102
        ctx.save_for_backward(A_t)
        return _even_rows_bmm(x, A)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        (A_t,) = ctx.saved_tensors
        return _even_rows_bmm(grad, A_t), None, None


def _even_rows_bmm(x: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    rows = x.shape[1]
    if rows % 2:
        x = torch.cat([x, x.new_zeros(x.shape[0], 1, x.shape[2])], dim=1)
    return torch.bmm(x.contiguous(), A)[:, :rows]


def _fast_speb(plan: _Plan, W: torch.Tensor) -> torch.Tensor:
    """SPEB ``[B, S]`` (m², exact model) of beams ``W [B, S, N, L, St]`` through the reduced FIM map."""
    b, s = W.shape[:2]
    n = plan.num_bs
    # B_n^H W_n per BS as one broadcast matmul (the same gemm per instance whatever the batch: batched and
    # single solves agree to the last bit)
    Z = (plan.basis_h @ W).reshape(b, s, 3 * n, W.shape[-1])  # [B, S, 3N, St]
    X = Z @ Z.conj().transpose(-2, -1)  # [B, S, 3N, 3N] = B^H W W^H B
    x = torch.view_as_real(X).reshape(b, s, -1)[..., plan.x_index]  # [B, S, cols]
    vech = _ConstBmm.apply(x, plan.fim_map, plan.fim_map_t)  # [B, S, P(P+1)/2]
    F = vech[..., plan.unvech_index].reshape(b, s, plan.num_params, plan.num_params)
    k = 2 * n
    fkk, fkn, fnn = F[..., :k, :k], F[..., :k, k:], F[..., k:, k:]
    sol, info = torch.linalg.solve_ex(fnn, fkn.transpose(-2, -1))
    je = fkk - fkn @ sol
    J = plan.jac_t @ je @ plan.jac  # [B, S, 3, 3]
    inv, info3 = torch.linalg.inv_ex(0.5 * (J + J.transpose(-2, -1)))
    speb = torch.diagonal(inv, dim1=-2, dim2=-1).sum(-1)
    bad = (info != 0) | (info3 != 0) | ~(speb > 0)
    return torch.where(bad, torch.full_like(speb, math.inf), speb)


def _index_maps(num_bs: int, num_params: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_index, unvech_index): the entries of ``view_as_real(X)`` flattened that form x(X) of
    :func:`reduced_fim_map`, and the entries of vech(F) that fill F row-major."""
    m = 3 * num_bs
    ii, jj = _sym_pairs(m, strict=False)
    si, sj = _sym_pairs(m, strict=True)
    x_index = torch.cat([(ii * m + jj) * 2, (si * m + sj) * 2 + 1])
    pi, pj = _sym_pairs(num_params, strict=False)
    idx = torch.zeros(num_params, num_params, dtype=torch.long)
    pos = torch.arange(pi.numel())
    idx[pi, pj] = pos
    idx[pj, pi] = pos
    return x_index, idx.reshape(-1)


def _plan(insts: Sequence[CoopLocalizationInstance], margin: float) -> _Plan:
    first = insts[0]
    shared = ("upa_shape", "spacing_wavelengths", "snapshots", "noise_sense_dbm", "speb_model", "num_sensing_streams")
    for i, inst in enumerate(insts):
        if inst.problem != PROBLEM:
            raise OptionError(f"solve_batch: instance {i} is {inst.problem!r}, not {PROBLEM!r}")
        if inst.H.shape != first.H.shape or any(getattr(inst, k) != getattr(first, k) for k in shared):
            raise OptionError(f"solve_batch: instance {i} differs from instance 0 in N, L, K, Ns, the array, "
                              "snapshots, sensing noise or SPEB model")
    views = [inst.solver_view() for inst in insts]
    n, length, k = first.H.shape
    sqrt_p = torch.stack([torch.sqrt(inst.p_max_w) for inst in insts])  # [B, N]
    sig = torch.tensor([math.sqrt(inst.noise_comm_w) for inst in insts], dtype=torch.float64)
    H = torch.stack([v[0] for v in views])  # [B, N, L, K]
    G = (H * (sqrt_p / sig[:, None])[:, :, None, None]).reshape(len(insts), 1, n * length, k)
    bs = torch.stack([inst.bs_positions_m for inst in insts])
    target = torch.stack([v[1] for v in views])
    alpha = torch.stack([inst.alpha for inst in insts])
    gamma = torch.tensor([inst.speb_max_m2 for inst in insts], dtype=torch.float64)[:, None]
    basis_h = fim_map = fim_map_t = engine = None
    if first.speb_model == "exact":
        from isac.metrics.bounds.lian_floor import fim_transmit_basis

        basis = fim_transmit_basis(first.array, bs, target)  # [B, N, L, 3]
        d = lian_derivatives(first.array, bs, target, alpha)
        fim_map_t = reduced_fim_map(d, basis, 2.0 * first.snapshots / first.noise_sense_w).contiguous()
        fim_map = fim_map_t.transpose(-2, -1).contiguous()
        basis_h = basis.conj().transpose(-2, -1)[:, None].contiguous()
    else:
        engine = (first.array, bs[:, None], target[:, None], alpha[:, None], float(first.snapshots),
                  first.noise_sense_w, first.speb_model)
    num_params = 2 * n + 2 * n * n
    x_index, unvech_index = _index_maps(n, num_params)
    jac = angle_jacobian(bs, target)[:, None]
    return _Plan(G=G, sqrt_p=sqrt_p[:, None, :, None, None], basis_h=basis_h, fim_map=fim_map, fim_map_t=fim_map_t,
                 jac=jac,
                 jac_t=jac.transpose(-2, -1).contiguous(), gamma_plan=gamma * (1.0 - margin),
                 gamma_accept=gamma * (1.0 - ACCEPT_RTOL), num_bs=n, speb_model=first.speb_model, engine=engine,
                 num_params=num_params, x_index=x_index, unvech_index=unvech_index)


def _rates(plan: _Plan, V: torch.Tensor) -> torch.Tensor:
    """Sum rate (bit/s/Hz) ``[B, S]`` of scaled beams ``V [B, S, N, L, K+Ns]`` (the formula of rates_nats)."""
    b, s, n, length, streams = V.shape
    k = plan.G.shape[-1]
    hw = plan.G.conj().transpose(-2, -1) @ V.reshape(b, s, n * length, streams)  # [B, S, K, streams]
    gains = hw.real**2 + hw.imag**2
    signal = torch.diagonal(gains[..., :k], dim1=-2, dim2=-1)
    interference = gains.sum(-1) - signal + 1.0
    return torch.log1p(signal / interference).sum(-1) / math.log(2.0)


def _speb(plan: _Plan, V: torch.Tensor) -> torch.Tensor:
    """SPEB (m²) ``[B, S]`` of scaled beams ``V [B, S, N, L, K+Ns]``."""
    W = V * plan.sqrt_p
    if plan.engine is None:
        return _fast_speb(plan, W)
    array, bs, target, alpha, snapshots, noise, model = plan.engine
    return lian_speb(array, bs, target, alpha, W, snapshots, noise, model=model)


def _terms(plan: _Plan, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum rate (bit/s/Hz) and SPEB (m²), each ``[B, S]``, of scaled beams ``V [B, S, N, L, K+Ns]``."""
    return _rates(plan, V), _speb(plan, V)


def _project(V: torch.Tensor) -> torch.Tensor:
    """Every BS block onto its unit ball (scaled budget)."""
    norms = torch.sqrt((V.real**2 + V.imag**2).sum(dim=(-2, -1), keepdim=True))
    return V / torch.clamp(norms, min=1.0)


def _sphere_tangent(V: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
    """``U`` without its radial part on every BS block of ``V`` (the tangent space of the unit spheres)."""
    norm2 = (V.real**2 + V.imag**2).sum(dim=(-2, -1), keepdim=True)
    r = (V.conj() * U).real.sum(dim=(-2, -1), keepdim=True)
    return U - (r / torch.where(norm2 > 0, norm2, torch.ones_like(norm2))) * V


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Real inner product over the last three dimensions, Re sum conj(a) b."""
    return (a.conj() * b).real.sum(dim=(-3, -2, -1))


def _flat(X: torch.Tensor) -> torch.Tensor:
    """Complex beams ``[B, S, N, L, St]`` as real vectors ``[B, S, 2 N L St]``."""
    return torch.view_as_real(X).reshape(*X.shape[:2], -1)


def _unflat(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_flat` (leading dimensions kept)."""
    return torch.view_as_complex(x.reshape(*x.shape[:-1], *like.shape[2:], 2).contiguous())


def _unit_blocks(X: torch.Tensor) -> torch.Tensor:
    """Scale every BS block ``[..., N, L, c]`` to unit Frobenius norm (zero blocks stay zero)."""
    norms = torch.sqrt((X.real**2 + X.imag**2).sum(dim=(-2, -1), keepdim=True))
    return X / torch.where(norms > 0, norms, torch.ones_like(norms))


def initial_points(inst: CoopLocalizationInstance, starts: int, seed: int) -> torch.Tensor:
    """Scaled starting beams ``V [starts, N, L, K+Ns]`` (every BS at full power), see the module docstring."""
    H, target = inst.solver_view()
    n, length, k = H.shape
    ns = inst.num_sensing_streams
    sqrt_p = torch.sqrt(inst.p_max_w)
    G = (H * (sqrt_p / math.sqrt(inst.noise_comm_w))[:, None, None]).reshape(n * length, k)
    mrt = G / torch.linalg.vector_norm(G, dim=0, keepdim=True)
    gram = G.conj().T @ G + (k / n) * torch.eye(k, dtype=G.dtype)
    rzf = G @ torch.linalg.solve(gram, torch.eye(k, dtype=G.dtype))
    rzf = rzf / torch.linalg.vector_norm(rzf, dim=0, keepdim=True)
    theta, beta = target_angles(inst.bs_positions_m, target)
    a, da_t, da_b = inst.array.steering_and_derivatives(theta, beta)  # [N, L] each
    dirs = torch.linalg.qr(torch.stack([a, da_t, da_b], dim=-1)).Q  # [N, L, 3] orthonormal per BS
    sens = torch.stack([dirs[:, :, j % 3] for j in range(ns)], dim=-1) if ns else dirs[:, :, :0]
    out = []
    for i in range(starts):
        if i == 0 and inst.W0 is not None:
            V0 = inst.W0 / sqrt_p[:, None, None]
            out.append(_project(V0))
            continue
        if i < len(STRUCTURED_STARTS):
            kind, rho = STRUCTURED_STARTS[i]
            users = _unit_blocks((mrt if kind == "mrt" else rzf).reshape(n, length, k))
            if ns == 0:
                rho = 0.0
            V = torch.cat([math.sqrt(1.0 - rho) * users, math.sqrt(rho) * _unit_blocks(sens)], dim=-1)
        else:
            g = torch.Generator().manual_seed(int(seed) * 1000003 + i)
            re = torch.randn(n, length, k + ns, generator=g, dtype=torch.float64)
            im = torch.randn(n, length, k + ns, generator=g, dtype=torch.float64)
            V = _unit_blocks(torch.complex(re, im))
        out.append(V)
    return torch.stack(out)


@dataclass
class _State:
    """Per-start iteration state ``[B, S, ...]``: the trial point, the accepted point with its values and
    tangent gradients, the L-BFGS pairs, the step length, multiplier and merit weight."""

    V: torch.Tensor
    V_acc: torch.Tensor
    f_acc: torch.Tensor
    g_acc: torch.Tensor
    gf_acc: torch.Tensor
    gg_acc: torch.Tensor
    S_mem: torch.Tensor  # [B, S, m, D] real (D = 2 N L St: the beams as real vectors)
    Y_mem: torch.Tensor
    rho: torch.Tensor  # [B, S, m]; 0 marks an empty or skipped pair
    h0: torch.Tensor  # [B, S] initial inverse-Hessian scale
    alpha: torch.Tensor  # [B, S] step length along the quasi-Newton direction
    lam: torch.Tensor
    weight: torch.Tensor

    @classmethod
    def initial(cls, V: torch.Tensor, memory: int) -> _State:
        nb, ns = V.shape[:2]
        zeros = torch.zeros(nb, ns, dtype=torch.float64)
        mem = torch.zeros(nb, ns, memory, 2 * V[0, 0].numel(), dtype=torch.float64)
        return cls(V=V, V_acc=V.clone(), f_acc=zeros.clone(), g_acc=zeros.clone(), gf_acc=torch.zeros_like(V),
                   gg_acc=torch.zeros_like(V), S_mem=mem, Y_mem=mem.clone(),
                   rho=torch.zeros(nb, ns, memory, dtype=torch.float64), h0=zeros.clone(),
                   alpha=torch.ones_like(zeros), lam=zeros.clone(), weight=torch.ones_like(zeros))

    def accept(self, ok, V, f, g, gf, gg, slot: int, first: bool) -> None:
        """Starts ``ok`` take the evaluated point, store the pair (s, y) of the move in ``slot`` (when its
        curvature is positive) and lengthen their step; the others halve it."""
        ok5 = ok[..., None, None, None]
        if not first:
            lam = self.lam[..., None, None, None]
            step = _flat(V - self.V_acc)
            y = -_flat((gf - lam * gg) - (self.gf_acc - lam * self.gg_acc))
            sy = (step * y).sum(-1)
            yy = (y * y).sum(-1)
            valid = ok & (sy > 1e-12 * torch.sqrt((step * step).sum(-1) * yy))
            v1 = valid[..., None]
            self.S_mem[:, :, slot] = torch.where(v1, step, torch.zeros_like(step))
            self.Y_mem[:, :, slot] = torch.where(v1, y, torch.zeros_like(y))
            self.rho[:, :, slot] = torch.where(valid, 1.0 / torch.where(valid, sy, torch.ones_like(sy)),
                                               torch.zeros_like(sy))
            self.h0 = torch.where(valid, sy / torch.where(valid, yy, torch.ones_like(sy)), self.h0)
            self.alpha = torch.where(ok, torch.clamp(self.alpha * _GROW, max=1.0),
                                     torch.clamp(self.alpha * _SHRINK, min=_ETA_MIN))
        self.V_acc = torch.where(ok5, V, self.V_acc)
        self.gf_acc = torch.where(ok5, gf, self.gf_acc)
        self.gg_acc = torch.where(ok5, gg, self.gg_acc)
        self.f_acc = torch.where(ok, f, self.f_acc)
        self.g_acc = torch.where(ok, g, self.g_acc)

    def select(self, keep: torch.Tensor) -> _State:
        """The state of the instances ``keep`` (a mask over the batch) only."""
        return _State(**{k: getattr(self, k)[keep] for k in self.__dataclass_fields__})

    def inverse_hessian(self, q: torch.Tensor, newest: int, count: int) -> torch.Tensor:
        """L-BFGS two-loop recursion: ``H q`` for real ``q [..., B, S, D]`` (leading dims broadcast)."""
        m = self.S_mem.shape[2]
        order = [(newest - j) % m for j in range(count)]
        S, Y, rho = self.S_mem.unbind(2), self.Y_mem.unbind(2), self.rho.unbind(2)
        coeffs = []
        for i in order:
            a = rho[i] * (S[i] * q).sum(-1)
            q = q - a[..., None] * Y[i]
            coeffs.append(a)
        r = self.h0[..., None] * q
        for i, a in zip(reversed(order), reversed(coeffs)):
            r = r + (a - rho[i] * (Y[i] * r).sum(-1))[..., None] * S[i]
        return r


@dataclass
class _Best:
    """Best feasible iterate per instance, and the values the stopping rule compares with."""

    f: torch.Tensor
    V: torch.Tensor
    start: torch.Tensor
    speb: torch.Tensor
    mark_lagr: torch.Tensor
    mark_f: torch.Tensor

    def update(self, rows, V, f, speb, feasible) -> None:
        cand = torch.where(feasible, f, torch.full_like(f, -math.inf))
        cmax, carg = cand.max(dim=1)
        better = cmax > self.f[rows]
        if bool(better.any()):
            r = rows[better]
            self.f[r] = cmax[better]
            self.start[r] = carg[better]
            self.V[r] = V[better, carg[better]]
            self.speb[r] = speb[better, carg[better]]


@register_solver
@dataclass
class PrimalDualPG(Solver):
    """Primal-dual projected (quasi-Newton) gradient on the scaled beams from several starts; see the module docstring.

    Options:
        starts: starting points per instance (structured ones first, then random).
        max_iterations: iteration budget per instance (one evaluation of every start each).
        step_size: first step of every start, per complex entry of the scaled beams (every BS block has norm 1).
        memory: L-BFGS pairs kept per start.
        margin: the iteration aims at gamma' = gamma (1 - margin).
        tolerance: stopping rule (relative changes over a window, and g <= tolerance).
        window: iterations between two checks of the stopping rule.
        seed: seed of the random starts.
    """

    name: ClassVar[str] = "pdpg"
    problems: ClassVar[tuple[str, ...]] = (PROBLEM,)
    description: ClassVar[str] = ("primal-dual projected gradient (L-BFGS directions on the per-BS power spheres, "
                                  "log-SPEB constraint followed by a curvature-adapted dual step), several starts, "
                                  "batched; fast")

    starts: int = 8
    max_iterations: int = 400
    step_size: float = 0.02
    memory: int = 6
    margin: float = 1e-3
    tolerance: float = 1e-5
    window: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if self.starts < 1:
            raise ValueError(f"starts must be >= 1, got {self.starts}")
        if self.max_iterations < 1:
            raise ValueError(f"max_iterations must be >= 1, got {self.max_iterations}")
        if not (self.step_size > 0 and math.isfinite(self.step_size)):
            raise ValueError(f"step_size must be positive and finite, got {self.step_size}")
        if self.memory < 1:
            raise ValueError(f"memory must be >= 1, got {self.memory}")
        if not 0 <= self.margin < 0.5:
            raise ValueError(f"margin must lie in [0, 0.5), got {self.margin}")
        if not 0 < self.tolerance < 1:
            raise ValueError(f"tolerance must lie in (0, 1), got {self.tolerance}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")

    # --- entry points ------------------------------------------------------------
    def _solve(self, inst: CoopLocalizationInstance):
        out = self._run([inst])[0]
        self.record(timings=out["timings"], info=out["info"])
        return out["status"], out["message"], out["solution"], out["trace"], out["iterations"]

    def solve_batch(self, instances: Sequence[CoopLocalizationInstance]) -> list[Result]:
        """Solve instances sharing N, L, K (and Ns, array, snapshots, sensing noise, SPEB model) in one batched
        computation: all instances and starts are one tensor program, no per-instance loop inside the iteration.

        Every instance follows the iteration it would follow alone (its own starts, multipliers, step
        lengths and stopping test; stopped instances are frozen), and every per-instance product is
        batch-invariant (see :class:`_ConstBmm`), so each Result equals :meth:`solve`'s to the bit (exact
        SPEB model; the ``eq20`` engine path up to round-off). ``time_s`` is the batch's wall time / B.
        """
        insts = list(instances)
        if not insts:
            return []
        for inst in insts:
            if inst.problem not in self.problems:
                raise OptionError(f"solver {self.name!r} does not solve {inst.problem!r} (it solves: {PROBLEM})")
        t0 = time.perf_counter()
        try:
            outs = self._run(insts)
        except (torch.linalg.LinAlgError, FloatingPointError) as e:
            why = f"{type(e).__name__}: {e}".splitlines()[0]
            outs = [{"status": Status.NUMERICAL_ERROR, "message": why, "solution": {}, "trace": [], "iterations": 0,
                     "timings": {}, "info": {}} for _ in insts]
        per = (time.perf_counter() - t0) / len(insts)
        results = []
        for inst, o in zip(insts, outs):
            res = Result(problem=inst.problem, solver=self.name, status=o["status"], message=o["message"],
                         solution=o["solution"], trace=o["trace"], iterations=o["iterations"], time_s=per,
                         timings={"solve_s": per, "batched": 1.0, **o["timings"]}, options=self.options(),
                         seed=self.seed, info=o["info"])
            results.append(finalize(res, inst))
        return results

    # --- the iteration -------------------------------------------------------------
    def _run(self, insts: list[CoopLocalizationInstance]) -> list[dict[str, Any]]:
        t0 = time.perf_counter()
        reasons = [_below_floor(inst) for inst in insts]
        floor_s = (time.perf_counter() - t0) / len(insts)
        outs: list[dict[str, Any] | None] = [None] * len(insts)
        for i, why in enumerate(reasons):
            if why:
                outs[i] = {"status": Status.INFEASIBLE, "message": why, "solution": {}, "trace": [],
                           "iterations": 0, "timings": {}, "info": {"starts": self.starts}}
        todo = [i for i in range(len(insts)) if outs[i] is None]
        if todo:
            for i, o in zip(todo, self._descend([insts[i] for i in todo])):
                outs[i] = o
        for o in outs:
            o["timings"]["floor_s"] = floor_s  # type: ignore[index]
        return outs  # type: ignore[return-value]

    def _descend(self, insts: list[CoopLocalizationInstance]) -> list[dict[str, Any]]:
        t0 = time.perf_counter()
        plan = _plan(insts, self.margin)
        V = torch.stack([initial_points(inst, self.starts, self.seed) for inst in insts])  # [B, S, N, L, St]
        nb, ns = V.shape[:2]
        f64 = dict(dtype=torch.float64)
        st = _State.initial(V, self.memory)
        best = _Best(f=torch.full((nb,), -math.inf, **f64), V=torch.zeros_like(V[:, 0]),
                     start=torch.full((nb,), -1, dtype=torch.long), speb=torch.full((nb,), math.inf, **f64),
                     mark_lagr=torch.full((nb, ns), math.nan, **f64), mark_f=torch.full((nb,), -math.inf, **f64))
        status = [Status.MAX_ITERATIONS] * nb
        message = [f"{self.max_iterations} iterations without meeting the stopping rule"] * nb
        iters = [self.max_iterations] * nb
        numerical = torch.zeros(nb, dtype=torch.bool)
        history: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (rows, f, SPEB, lambda)
        prep_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        active = torch.arange(nb)
        sub = plan
        lam_final = torch.zeros(nb, ns, **f64)
        for it in range(1, self.max_iterations + 1):
            # two leaves of the same point: one backward pass gives grad f and grad g apart
            Va = st.V.requires_grad_(True)
            Vb = st.V.detach().clone().requires_grad_(True)
            f = _rates(sub, Va)
            speb = _speb(sub, Vb)
            g = torch.log(speb / sub.gamma_plan)
            finite = torch.isfinite(f) & torch.isfinite(g)
            zero = torch.zeros_like(f)
            gf, gg = torch.autograd.grad(torch.where(finite, f, zero).sum() + torch.where(finite, g, zero).sum(),
                                         [Va, Vb])
            with torch.no_grad():
                Va, f, speb, g = Va.detach(), f.detach(), speb.detach(), g.detach()
                st.V = Va
                fin = finite[..., None, None, None]
                gf = _sphere_tangent(Va, torch.where(fin, gf, torch.zeros_like(gf)))
                gg = _sphere_tangent(Va, torch.where(fin, gg, torch.zeros_like(gg)))
                history.append((active, f, speb, st.lam))
                numerical[active] |= ~finite.any(dim=1)
                best.update(active, Va, f, speb, finite & (speb <= sub.gamma_accept))
                if it == 1:
                    rms = torch.sqrt((gf.real**2 + gf.imag**2).mean(dim=(-3, -2, -1)))
                    st.h0 = self.step_size / torch.clamp(rms, min=1e-12)
                    ok = finite
                else:
                    phi = f - st.weight * torch.clamp(g, min=0.0)
                    phi_acc = st.f_acc - st.weight * torch.clamp(st.g_acc, min=0.0)
                    ok = finite & (phi >= phi_acc - 1e-12 * phi_acc.abs())
                st.accept(ok, Va, f, g, gf, gg, (it - 2) % self.memory, it == 1)
                if it % self.window == 0:
                    lagr = -st.f_acc + st.lam * st.g_acc
                    conv = self._converged(it, active, lagr, st.g_acc, best, status, message, iters)
                    if bool(conv.any()):
                        lam_final[active[conv]] = st.lam[conv]
                        keep = ~conv
                        active, st, sub = active[keep], st.select(keep), sub.select(keep)
                        if active.numel() == 0:
                            break
                if it == self.max_iterations:
                    break
                st.V, st.lam = self._step(st, (it - 2) % self.memory, min(it - 1, self.memory))
                st.weight = 2.0 * st.lam + 1.0
        lam_final[active] = st.lam
        loop_s = time.perf_counter() - t0
        return self._outputs(insts, plan, history, best, lam_final, numerical, status, message, iters,
                             {"prepare_s": prep_s / nb, "iterate_s": loop_s / nb})

    def _step(self, st: _State, newest: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The trial point from the accepted one: quasi-Newton directions for f and g, the curvature-adapted
        multiplier, then back onto the unit spheres."""
        V, gf, gg, g = st.V_acc, st.gf_acc, st.gg_acc, st.g_acc
        d = _unflat(st.inverse_hessian(torch.stack([_flat(gf), _flat(gg)]), newest, count), V)
        df, dg = _sphere_tangent(V, d[0]), _sphere_tangent(V, d[1])
        alpha = st.alpha
        a = alpha * _dot(gg, df)
        c = alpha * _dot(gg, dg)
        need = g - torch.clamp(g - _MAX_DECREASE, min=0.0) + a
        pos = c > 0
        lam = torch.where(pos, torch.clamp(need / torch.where(pos, c, torch.ones_like(c)), min=0.0),
                          torch.zeros_like(c)).nan_to_num(0.0, posinf=0.0)
        step = alpha[..., None, None, None] * (df - lam[..., None, None, None] * dg)
        return _unit_blocks(V + step), lam

    def _converged(self, it, active, lagr, g, best: _Best, status, message, iters) -> torch.Tensor:
        """The stopping rule at iteration ``it`` for the running instances ``active``; updates the marks."""
        rows = torch.arange(active.numel())
        bf = best.f[active]
        col = best.start[active].clamp(min=0)
        l_now = lagr[rows, col]
        l_then = best.mark_lagr[active][rows, col]
        improved = bf - best.mark_f[active]
        conv = (torch.isfinite(bf) & (improved <= self.tolerance * torch.clamp(bf.abs(), min=1.0))
                & ((l_now - l_then).abs() <= self.tolerance * torch.clamp(l_now.abs(), min=1.0))
                & (g[rows, col] <= self.tolerance))
        for j in conv.nonzero().flatten().tolist():
            idx = int(active[j])
            status[idx] = Status.CONVERGED
            message[idx] = (f"best feasible sum rate and its start's Lagrangian changed by <= {self.tolerance:g} "
                            f"(relative) over {self.window} iterations (iteration {it})")
            iters[idx] = it
        best.mark_lagr[active] = lagr
        best.mark_f[active] = bf
        return conv

    def _outputs(self, insts, plan, history, best: _Best, lam, numerical, status, message, iters,
                 timings) -> list[dict[str, Any]]:
        nb, ns = lam.shape
        steps = len(history)
        hist = torch.full((3, steps, nb, ns), math.nan, dtype=torch.float64)  # f, SPEB, lambda
        for t, (rows, f, speb, la) in enumerate(history):
            hist[0, t, rows] = f
            hist[1, t, rows] = speb
            hist[2, t, rows] = la
        outs = []
        for i, inst in enumerate(insts):
            start = int(best.start[i])
            col = max(start, 0)
            seq = hist[:, : iters[i], i, col].tolist()
            trace = [{"iteration": t + 1, "objective": seq[0][t], "speb_m2": seq[1][t],
                      "speb_over_gamma": seq[1][t] / inst.speb_max_m2, "lambda": seq[2][t]}
                     for t in range(len(seq[0]))]
            info: dict[str, Any] = {"starts": self.starts, "best_start": start if start >= 0 else None,
                                    "lambda": float(lam[i, col]), "speb_over_gamma": None}
            out = {"trace": trace, "iterations": iters[i], "timings": dict(timings), "info": info}
            if start < 0:
                if bool(numerical[i]):
                    out.update(status=Status.NUMERICAL_ERROR, solution={},
                               message="non-finite sum rate or SPEB at every start")
                else:
                    out.update(status=Status.INFEASIBLE, solution={},
                               message=f"no iterate of {self.starts} starts met SPEB <= gamma (1 - {ACCEPT_RTOL:g}) "
                                       f"in {iters[i]} iterations")
            else:
                info["speb_over_gamma"] = float(best.speb[i]) / inst.speb_max_m2
                W = (best.V[i] * plan.sqrt_p[i, 0]).clone()
                out.update(status=status[i], message=message[i], solution={"W": W})
            outs.append(out)
        return outs


def _below_floor(inst: CoopLocalizationInstance) -> str | None:
    """A one-line reason when gamma is below the instance's SPEB floor (then (32) is infeasible), else None."""
    from isac.metrics.bounds.lian_floor import FloorError, gamma_below_floor

    try:
        return gamma_below_floor(inst)
    except FloorError:  # the floor only screens out impossible thresholds: without it, just iterate
        return None


set_default_solver(PROBLEM, "pdpg")
