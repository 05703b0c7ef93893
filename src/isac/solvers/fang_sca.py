r"""003 (Fang et al.), Algorithm 1: two-layer SCA = projected gradient ascent, and its low-dimensional variant.

The default step of both solvers is ours, not the paper's: a Riemannian L-BFGS ascent on the same
full-power sphere (:mod:`isac.solvers.sphere_lbfgs`), on exact reduced variables
(:class:`_Reduction`) and from the initial point with its sensing block damped (option
``start_sensing_scale``). Algorithm 1 as printed is ``step="paper"``, the authors' script
``rule="authors"``.

Problem (11): :math:`\max_{\mathbf W}\ f(\mathbf W)=\delta_c\sum_k R_k-\delta_s\,\mathrm{tr}(\mathbf F^{-1})`
s.t. :math:`\mathrm{tr}(\mathbf W\mathbf W^H)\le P_t`, :math:`\mathbf W=[\mathbf W_c,\mathbf W_s]`.

One iteration (eqs. (16), (25), (29)-(30)):

.. math::

    \mathbf W^{[t+1]} = \Pi_{\mathcal B}\big(\mathbf C_1^{[t]}+\mathbf C_2^{[t]}\mathbf W^{[t]}\big)
    = \Pi_{\mathcal B}\big(\lambda^{[t]}\mathbf W^{[t]} + \tfrac12\nabla f(\mathbf W^{[t]})\big),

with :math:`\nabla f = 2\mathbf C_1 + (2\delta_s\mathbf Q - 2\delta_c\mathbf H\mathbf\Sigma_2\mathbf H^H)\mathbf W`
(Prop. 3, eq. (32); :math:`\mathbf Q` from :func:`isac.metrics.fim.crb_trace_covariance_gradient`,
Hermitian, so :math:`\tfrac12(\mathbf Q+\mathbf Q^H)=\mathbf Q`), :math:`\lambda^{[t]}` the absolute value
of the dominant eigenvalue of :math:`\delta_c\mathbf H\mathbf\Sigma_2\mathbf H^H-\delta_s\mathbf Q`
(so that :math:`\mathbf C_2\succeq 0`), and :math:`\Pi_{\mathcal B}(\mathbf X)=\sqrt{P_t/\|\mathbf X\|_F^2}\,\mathbf X`.
With ``power_constraint="per-antenna"`` (Remark 2) the projection normalises each row of
:math:`\mathbf X` to power :math:`P_t/N_t`; eq. (31) prints :math:`(\mathbf I\odot\mathbf X\mathbf X^H)^{-1}`
where the power :math:`-1/2` is meant.

Stopping rule: stop when the objective (11) changes by at most
``tolerance * max(|f|, 1e-12)`` from one iteration to the next (the test of Algorithm 1's
"until the objective value converges"); otherwise ``MAX_ITERATIONS``.

``sca-lowdim`` (Prop. 5, eqs. (38)-(40)): :math:`\mathbf W=\mathbf U\mathbf P` with
:math:`\mathbf U` an orthonormal basis of the range of
:math:`\mathbf N=[\mathbf H,\mathbf A,\dot{\mathbf A}_\theta,\dot{\mathbf A}_\phi]` (:math:`N_t\times(K+3M)`).
The paper writes :math:`\mathbf W=\mathbf N\mathbf P` and steps in the metric of
:math:`\mathbf N^H\mathbf N` (eq. (40)); an orthonormal basis of the same range gives the same
feasible set without inverting :math:`\mathbf N^H\mathbf N` (ill-conditioned when targets are
close in angle), and turns the problem in P into problem (11) with the effective channels
:math:`\mathbf U^H\mathbf H`, :math:`\mathbf U^H\mathbf a`, ... and :math:`N_t` replaced by
:math:`\min(N_t, K+3M)`: Algorithm 1 runs unchanged on it, at a per-iteration cost independent of
:math:`N_t`. The shift :math:`\lambda` is then that of the reduced problem (never larger than the
full one's, so the steps are at least as long).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from isac.metrics.bounds.fang import fang_derivatives
from isac.metrics.fim import BeamFisherMap, FactoredDerivatives, crb_trace_covariance_gradient, fisher_information
from isac.scenario.instances.crlb_sumrate import PROBLEM, CrlbSumrateInstance
from isac.scenario.random import complex_normal, make_rng
from isac.solvers.base import OptionError, Result, Solver, Status, finalize, torch_threads
from isac.solvers.baselines import mrt_directions
from isac.solvers.registry import register_solver, set_default_solver
from isac.solvers.sphere_lbfgs import PowerSphere, lbfgs_ascent
from isac.tensors import hermitian


@dataclass
class _Batch:
    """Instances of one shape stacked along a leading batch dimension."""

    H: torch.Tensor  # [B, Nt, K]
    noise_c: torch.Tensor  # [B]
    derivs: FactoredDerivatives  # [B, 4M, 2, Nr] / [B, 4M, 2, Nt]
    snapshots: torch.Tensor  # [B]
    noise_s: torch.Tensor  # [B]
    delta_c: torch.Tensor  # [B]
    delta_s: torch.Tensor  # [B]
    p_max: torch.Tensor  # [B]
    basis: torch.Tensor | None = None  # sca-lowdim: orthonormal basis U [B, Nt, r] of range(N)

    @classmethod
    def stack(cls, insts: list[CrlbSumrateInstance], device: torch.device | None = None) -> _Batch:
        first = insts[0]
        for i, inst in enumerate(insts):
            same = (inst.tx_shape, inst.rx_shape, inst.num_users, inst.num_targets, inst.num_sensing_streams,
                    inst.element_order) == (first.tx_shape, first.rx_shape, first.num_users, first.num_targets,
                                            first.num_sensing_streams, first.element_order)
            if not same:
                raise OptionError(f"solve_batch: instance {i} has other dimensions than instance 0")
        f64 = dict(dtype=torch.float64, device=device)
        derivs = fang_derivatives(first.tx_array, first.rx_array, torch.stack([i.theta_rad for i in insts]),
                                  torch.stack([i.phi_rad for i in insts]), torch.stack([i.alpha for i in insts]))
        derivs = FactoredDerivatives(derivs.left.to(device), derivs.right.to(device))
        return cls(
            H=torch.stack([i.H for i in insts]).to(device),
            noise_c=torch.tensor([i.noise_comm_w for i in insts], **f64),
            derivs=derivs,
            snapshots=torch.tensor([float(i.snapshots) for i in insts], **f64),
            noise_s=torch.tensor([i.noise_sense_w for i in insts], **f64),
            delta_c=torch.tensor([i.delta_c for i in insts], **f64),
            delta_s=torch.tensor([i.delta_s for i in insts], **f64),
            p_max=torch.tensor([i.p_max_w for i in insts], **f64),
        )

    def select(self, idx: torch.Tensor) -> _Batch:
        return _Batch(self.H[idx], self.noise_c[idx],
                      FactoredDerivatives(self.derivs.left[idx], self.derivs.right[idx]),
                      self.snapshots[idx], self.noise_s[idx], self.delta_c[idx], self.delta_s[idx], self.p_max[idx],
                      None if self.basis is None else self.basis[idx])


def objective_and_gradient(b: _Batch, W: torch.Tensor) -> dict[str, torch.Tensor]:
    r"""Objective (11) ``[B]`` and its closed-form gradient ``[B, Nt, K+Ns]`` (Prop. 3, eq. (32)).

    The gradient is :math:`\partial f/\partial\Re\mathbf W + j\,\partial f/\partial\Im\mathbf W`.
    Also returns ``sigma2`` (:math:`\beta_k`, eq. (16c)) and ``Q`` for the shift :math:`\lambda`.
    The FIM and Q come from the engine; its W-independent Gram matrix is computed once per
    batch (cached on ``b.derivs``).
    """
    k = b.H.shape[-1]
    hw = hermitian(b.H) @ W  # [B, K, S]: h_k^H w_j
    gains = hw.real**2 + hw.imag**2
    total = gains.sum(-1) + b.noise_c[:, None]  # T_k
    signal = torch.diagonal(gains[..., :k], dim1=-2, dim2=-1)
    interf = total - signal  # I_k
    rates = torch.log1p(signal / interf)
    # d/dW of sum_k log T_k - log I_k, column j of user k's term: h_k h_k^H w_j (1/T_k - [j != k]/I_k).
    coef = (1.0 / total - 1.0 / interf)[..., None].repeat(1, 1, W.shape[-1])
    torch.diagonal(coef[..., :k], dim1=-2, dim2=-1).add_(1.0 / interf)
    grad_c = 2.0 * b.H @ (coef * hw)
    fim = fisher_information(b.derivs, beams=W, snapshots=b.snapshots, noise_power_w=b.noise_s)
    inv, info = torch.linalg.inv_ex(fim)
    crlb = torch.diagonal(inv, dim1=-2, dim2=-1).sum(-1)
    singular = (info != 0) | ~torch.isfinite(crlb) | (crlb <= 0)
    crlb = torch.where(singular, torch.full_like(crlb, math.inf), crlb)
    inv = torch.where(singular[:, None, None], torch.zeros_like(inv), inv)
    Q = crb_trace_covariance_gradient(b.derivs, fim, snapshots=b.snapshots, noise_power_w=b.noise_s, inverse=inv)
    grad_s = 2.0 * Q @ W
    dc = b.delta_c[:, None, None]
    ds = b.delta_s[:, None, None]
    obj = b.delta_c * rates.sum(-1) - b.delta_s * crlb
    return {"objective": obj, "grad": dc * grad_c + ds * grad_s, "sigma2": signal / (interf * total),
            "Q": Q, "rates": rates, "crlb": crlb, "singular": singular}


@dataclass
class _RealProblem:
    r"""Objective (11) and its gradient in real arithmetic, for the L-BFGS step (the same formulas as
    :func:`objective_and_gradient`, which checks it, at a few dozen tensor operations per evaluation).

    The point is ``x = vec([Re W; Im W])`` ``[..., 2n*S]``. One product with ``A = [H^H; B]`` (real
    form ``[..., 2K+2r, 2n]``, B the FIM's transmit basis, :class:`isac.metrics.fim.BeamFisherMap`)
    gives every :math:`\mathbf h_k^H\mathbf w_j` and the rows the FIM depends on; one product with
    ``back`` (:math:`\mathbf A^T` with :math:`2\delta_c`, :math:`2\delta_s` folded in) gives the gradient.
    Leading batch dimension optional (:meth:`squeeze`).
    """

    a: torch.Tensor  # [..., 2K+2r, 2n]
    back: torch.Tensor  # [..., 2n, 2K+2r]
    fim_map: BeamFisherMap
    noise: torch.Tensor  # [..., 1]
    delta_c: torch.Tensor  # [...]
    delta_s: torch.Tensor  # [...]
    num_users: int
    num_streams: int
    diag_mask: torch.Tensor  # [K, S]: 1 at (k, k)

    @classmethod
    def from_batch(cls, b: _Batch, num_streams: int) -> _RealProblem:
        k = b.H.shape[-1]
        fmap = BeamFisherMap.from_derivatives(b.derivs, snapshots=b.snapshots, noise_power_w=b.noise_s)
        hh = b.H.mH
        a = torch.cat([torch.cat([hh.real, -hh.imag], -1), torch.cat([hh.imag, hh.real], -1), fmap.real_rows], -2)
        scale = torch.cat([(2.0 * b.delta_c)[:, None].expand(-1, 2 * k), (2.0 * b.delta_s)[:, None].expand(-1, a.shape[-2] - 2 * k)], -1)
        mask = torch.eye(k, num_streams, dtype=torch.float64, device=a.device)
        return cls(a.contiguous(), (a.mT * scale[:, None, :]).contiguous(), fmap, b.noise_c[:, None], b.delta_c,
                   b.delta_s, k, num_streams, mask)

    def squeeze(self) -> _RealProblem:
        return _RealProblem(self.a[0], self.back[0], self.fim_map.squeeze(), self.noise[0], self.delta_c[0],
                            self.delta_s[0], self.num_users, self.num_streams, self.diag_mask)

    def select(self, idx: torch.Tensor) -> _RealProblem:
        return _RealProblem(self.a[idx], self.back[idx], self.fim_map.select(idx), self.noise[idx], self.delta_c[idx],
                            self.delta_s[idx], self.num_users, self.num_streams, self.diag_mask)

    value_names: ClassVar[tuple[str, ...]] = ("objective", "sum_rate_nats", "crlb_trace")

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``values [..., 3]`` (objective (11), sum rate in nats, tr(F^-1)) and the gradient ``[..., 2n*S]``."""
        k, s = self.num_users, self.num_streams
        y = self.a @ x.unflatten(-1, (-1, s))
        yc = y[..., : 2 * k, :].unflatten(-2, (2, k))  # Re, Im of h_k^H w_j
        yb = y[..., 2 * k:, :]
        gains = (yc * yc).sum(-3)
        total = gains.sum(-1) + self.noise  # T_k
        r_interf = (total - gains.diagonal(dim1=-2, dim2=-1)).reciprocal()  # 1 / I_k
        sum_rate = torch.log(total * r_interf).sum(-1)
        # d/dw_j of log T_k - log I_k is 2 h_k h_k^H w_j (1/T_k - [j != k]/I_k)
        coef = (total.reciprocal() - r_interf)[..., None] + self.diag_mask * r_interf[..., None]
        crlb, gram_grad = self.fim_map.crb_trace_and_gram_gradient(yb @ yb.mT)
        grad = self.back @ torch.cat([(yc * coef.unsqueeze(-3)).flatten(-3, -2), gram_grad @ yb], -2)
        values = torch.stack([self.delta_c * sum_rate - self.delta_s * crlb, sum_rate, crlb], -1)
        return values, grad.flatten(-2)


@dataclass
class _Reduction:
    r"""An exact change of variables for the L-BFGS step with total power (ours; option ``reduce``).

    Everything in (11) depends on W only through :math:`\mathbf U^H\mathbf W`, U an orthonormal basis of
    the range of :math:`[\mathbf H, \mathbf v_1, \dots]` (users' channels and the FIM's transmit
    vectors; rank q <= K + 3M). The gradient therefore lies in range(U), and every L-BFGS
    direction is a combination of gradients and past steps: the part of the start outside
    range(U), :math:`\mathbf W_\perp`, is only ever rescaled, so it is one real coordinate z
    (:math:`\mathbf W = \mathbf U\mathbf P + (z/z_0)\mathbf W_\perp`). Likewise the sensing block enters
    only through :math:`\mathbf P_s\mathbf P_s^H`, and every update and inner product of the iteration is
    that of :math:`\mathbf P_s = \mathbf L\mathbf Q^H` with :math:`\mathbf Q^H\mathbf Q=\mathbf I`: with
    more sensing streams than q, the iteration runs on L (q x q). The iterates are those of the
    full problem (in exact arithmetic), with 2q(K+q)+1 real unknowns instead of 2 N_t (K+N_s).
    """

    basis: torch.Tensor | None  # U [B, n, q]; None when q = n
    perp: torch.Tensor | None  # W_perp [B, n, S]; None when it is zero
    perp_norm: torch.Tensor | None  # z_0 [B]
    sensing_rows: torch.Tensor | None  # Q^H [B, q, N_s]; None without compression
    num_users: int

    @classmethod
    def build(cls, b: _Batch, W0: torch.Tensor, rank_tol: float = 1e-12) -> tuple[_Reduction, torch.Tensor]:
        """The reduction of the start W0 ``[B, n, S]``; changes ``b`` into the reduced problem; returns X0."""
        k, n = b.H.shape[-1], b.H.shape[-2]
        span = torch.cat([b.H, b.derivs.flattened()[1].mT], -1)
        u, sv, _ = torch.linalg.svd(span, full_matrices=False)
        q = max(1, int((sv > rank_tol * sv[..., :1]).sum(-1).max()))
        basis = perp = z0 = None
        X = W0
        if q < n:
            basis = u[..., :q]
            X = basis.mH @ W0
            rest = W0 - basis @ X
            norm = torch.linalg.matrix_norm(rest)
            if bool((norm > 1e-12 * torch.linalg.matrix_norm(W0)).any()):
                perp, z0 = rest, norm
            b.H = basis.mH @ b.H
            b.derivs = FactoredDerivatives(b.derivs.left, b.derivs.right @ basis.conj()[:, None])
        rows = None
        if X.shape[-1] - k > X.shape[-2]:
            qf, rf = torch.linalg.qr(X[..., k:].mH)  # P_s^H = Q R: P_s = R^H Q^H
            rows = qf.mH
            X = torch.cat([X[..., :k], rf.mH], -1)
        return cls(basis, perp, z0, rows, k), X

    def lift(self, X: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """W ``[B, n, S]`` from the reduced X ``[B, q, S']`` and z ``[B]``."""
        if self.sensing_rows is not None:
            X = torch.cat([X[..., : self.num_users], X[..., self.num_users:] @ self.sensing_rows], -1)
        W = X if self.basis is None else self.basis @ X
        if self.perp is not None:
            W = W + (z / self.perp_norm).to(W.dtype)[:, None, None] * self.perp
        return W


@dataclass
class _WithScalar:
    """An evaluator whose point carries one more coordinate (z of :class:`_Reduction`) it does not depend on."""

    inner: _RealProblem

    @property
    def value_names(self) -> tuple[str, ...]:
        return self.inner.value_names

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values, grad = self.inner(x[..., :-1])
        return values, torch.cat([grad, torch.zeros_like(grad[..., :1])], -1)

    def select(self, idx: torch.Tensor) -> _WithScalar:
        return _WithScalar(self.inner.select(idx))

    def squeeze(self) -> _WithScalar:
        return _WithScalar(self.inner.squeeze())


_ASCENT_STATUS = {"converged": Status.CONVERGED, "stalled": Status.CONVERGED, "max_iterations": Status.MAX_ITERATIONS,
                  "non-finite start": Status.NUMERICAL_ERROR}
"""The solver status of each way :func:`isac.solvers.sphere_lbfgs.lbfgs_ascent` stops."""


def shift(b: _Batch, parts: dict[str, torch.Tensor]) -> torch.Tensor:
    r""":math:`\lambda` ``[B]``: absolute value of the dominant eigenvalue of :math:`\delta_c\mathbf H\mathbf\Sigma_2\mathbf H^H-\delta_s\mathbf Q`."""
    hs = b.H * parts["sigma2"].to(b.H.dtype)[:, None, :]
    m = b.delta_c[:, None, None] * (hs @ hermitian(b.H)) - b.delta_s[:, None, None] * parts["Q"]
    m = 0.5 * (m + hermitian(m))
    return torch.linalg.eigvalsh(m).abs().amax(-1)


def authors_direction(b: _Batch, X: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    r"""The authors' update before projection, :math:`\mathbf C_1+(\mu\mathbf I-\mathbf C_2)\mathbf X` (``rule="authors"``).

    As the paper's step, but the auxiliary variables (16) use the communication columns only:
    :math:`T_k=\sum_{j\le K}|\mathbf h_k^H\mathbf w_j|^2+\sigma_c^2`, :math:`I_k=T_k-|\mathbf h_k^H\mathbf w_k|^2`,
    :math:`\mathbf\Sigma_1=\mathrm{diag}(\mathbf h_k^H\mathbf w_k/I_k)`, :math:`\mathbf\Sigma_2=\mathrm{diag}(|\mathbf h_k^H\mathbf w_k|^2/(I_kT_k))`,
    :math:`\mathbf C_1=[\delta_c\mathbf H\mathbf\Sigma_1,\mathbf 0]`, :math:`\mathbf C_2=\delta_c\mathbf H\mathbf\Sigma_2\mathbf H^H-\delta_s\mathbf Q`
    and :math:`\mu=\|\mathbf C_2\|_2` (Q Hermitian, so :math:`\tfrac12(\mathbf Q+\mathbf Q^H)=\mathbf Q`)."""
    k = b.H.shape[-1]
    hw = hermitian(b.H) @ X[..., :k]  # [B, K, K]
    gains = hw.real**2 + hw.imag**2
    total = gains.sum(-1) + b.noise_c[:, None]
    desired = torch.diagonal(hw, dim1=-2, dim2=-1)
    signal = desired.real**2 + desired.imag**2
    interf = total - signal
    hs = b.H * (signal / (interf * total)).to(b.H.dtype)[:, None, :]
    C2 = b.delta_c[:, None, None] * (hs @ hermitian(b.H)) - b.delta_s[:, None, None] * Q
    C2 = 0.5 * (C2 + hermitian(C2))
    mu = torch.linalg.eigvalsh(C2).abs().amax(-1)
    D = mu[:, None, None] * X - C2 @ X
    D[..., :k] += b.delta_c[:, None, None] * b.H * (desired / interf)[:, None, :]
    return D


def project(X: torch.Tensor, p_max: torch.Tensor, per_antenna: bool) -> torch.Tensor:
    """Projection (30) onto tr(XX^H) = P_t, or per-antenna (Remark 2): each row to power P_t/N_t."""
    if per_antenna:
        rows = torch.linalg.vector_norm(X, dim=-1, keepdim=True)
        return X * torch.sqrt(p_max / X.shape[-2])[:, None, None] / rows
    norm = torch.linalg.matrix_norm(X)
    return X * (torch.sqrt(p_max) / norm)[:, None, None]


def initial_point(inst: CrlbSumrateInstance, seed: int, per_antenna: bool) -> torch.Tensor:
    """``W0`` of the instance, else MRT beams plus a seeded random sensing block, scaled to P_t."""
    if inst.W0 is not None:
        W = inst.W0.clone()
    else:
        W = torch.zeros(inst.num_tx, inst.num_streams, dtype=torch.complex128)
        W[:, : inst.num_users] = mrt_directions(inst.H)
        if inst.num_sensing_streams:
            W[:, inst.num_users:] = complex_normal(make_rng(seed), (inst.num_tx, inst.num_sensing_streams))
    return project(W[None], torch.tensor([inst.p_max_w], dtype=torch.float64), per_antenna)[0]


@register_solver
@dataclass
class SCA(Solver):
    """Problem (11) of 003 on the full-power sphere: Algorithm 1 (projected gradient ascent) or, by default,
    a Riemannian L-BFGS ascent on the same sphere (ours).

    Options:
        max_iterations: iteration budget (None: 5000 with step "lbfgs", 20000 with "paper" and
            "adaptive", 2000 with rule "authors").
        tolerance: stop when ``|f(t+1) - f(t)| <= tolerance * max(|f(t)|, 1e-12)`` (None: 1e-10 with
            "lbfgs", 1e-8 with "paper"/"adaptive"; rule "authors": see below).
        power_constraint: "total" (eq. (30)) or "per-antenna" (Remark 2, eq. (31)).
        step: "lbfgs" (default with rule "paper"; ours, not in the paper): L-BFGS with Armijo steps on
            the power sphere(s), :func:`isac.solvers.sphere_lbfgs.lbfgs_ascent`, monotone, ~10x fewer
            iterations than the paper's step at a fraction of its per-iteration cost (the objective
            and gradient of :class:`_RealProblem`, through the engine's low-rank FIM map).
            "paper" uses the shift lambda of eq. (25) (step 1/(2 lambda), monotone by Sec. III-D;
            the default with rule "authors").
            "adaptive" (ours, not in the paper) uses s * lambda with s in [1e-4, 1] shrunk by 0.7 after
            every ascent step and reset towards 1 (x4) after a step that would decrease the objective,
            which is then rejected: monotone by construction, usually far fewer iterations.
        memory: pairs kept by "lbfgs".
        start_sensing_scale: the iteration starts from the initial point with its sensing block
            scaled by this factor and the whole rescaled to full power (None: 1e-2 with "lbfgs", 1
            otherwise). Why: from a start whose random sensing block holds most of the power
            (N_s = N_t streams), the paper's objective sees that block as interference and its
            ascent drops some users to zero power early, a stationary point below the one the
            authors' script reaches, whose step (16) leaves the sensing streams out of T_k. Damping
            the block lets the communication beams form first, as theirs do; the sensing streams
            grow back as the CRB asks. Measured on fang seeds 0-79: the undamped start ends below
            ``rule="authors"`` on 9 of 80 (by up to 0.2), the damped one on none.
        threads: torch threads of :meth:`solve_batch` (single solves always run on one); batches of
            hundreds of instances gain from 2.
        reduce: with "lbfgs" and total power, iterate on the exact reduced variables of
            :class:`_Reduction` (same iterates, 2.3x fewer unknowns at the default size, N_t-independent
            cost); False iterates on W itself.
        seed: seed of the random sensing block of the default initial point.
        rule: "paper" (the text of 003) or "authors" (the authors' published script; see below).
        device: torch device the iteration runs on ("cpu", "cuda", "cuda:1", ...); instances and
            returned beams stay on the CPU. Useful with :meth:`solve_batch` on a GPU.

    ``rule="authors"`` follows the authors' script (``proposed_SCA_main.m`` of their public
    repository) where it differs from the paper's text: the auxiliary step (16) computes T_k and the
    SINR over the communication columns only (:func:`authors_direction`; the objective reported still
    counts the sensing streams' interference, as theirs does); the iteration stops when the spectral
    norm of W_t - W_{t-1} is below ``tolerance`` (absolute; default 1e-5 in this mode) and runs at most
    ``max_iterations`` (default 2000 in this mode); the step is the paper's (``step`` must be "paper").
    Their initial point (MRT beams, a Gaussian sensing block, full power) is used through the
    instance's ``W0``. ``tolerance`` / ``max_iterations`` None select the rule's default.
    """

    name: ClassVar[str] = "sca"
    problems: ClassVar[tuple[str, ...]] = (PROBLEM,)
    description: ClassVar[str] = ("003 problem (11): L-BFGS on the power sphere (default, ours); Alg. 1 two-layer SCA "
                                  "with -o step=paper (eqs. 25-30); the authors' script with -o rule=authors")

    max_iterations: int | None = None
    tolerance: float | None = None
    power_constraint: Literal["total", "per-antenna"] = "total"
    step: Literal["lbfgs", "paper", "adaptive"] | None = None
    memory: int = 8
    start_sensing_scale: float | None = None
    seed: int = 0
    rule: Literal["paper", "authors"] = "paper"
    device: str = "cpu"
    threads: int = 1
    reduce: bool = True

    DEFAULTS: ClassVar[dict[tuple[str, str], tuple[int, float]]] = {
        ("paper", "lbfgs"): (5000, 1e-10), ("paper", "paper"): (20000, 1e-8), ("paper", "adaptive"): (20000, 1e-8),
        ("authors", "paper"): (2000, 1e-5)}
    """(max_iterations, tolerance) of each (rule, step) when the option is None."""
    DAMPED_START: ClassVar[float] = 1e-2
    """``start_sensing_scale`` of the L-BFGS step when the option is None."""

    def __post_init__(self) -> None:
        try:
            torch.device(self.device)
        except (RuntimeError, ValueError):
            raise ValueError(f"device {self.device!r} is not a torch device name") from None
        if self.rule not in ("paper", "authors"):
            raise ValueError("rule must be 'paper' or 'authors'")
        if self.step is None:
            self.step = "paper" if self.rule == "authors" else "lbfgs"
        if self.step not in ("lbfgs", "paper", "adaptive"):
            raise ValueError("step must be 'lbfgs', 'paper' or 'adaptive'")
        if self.rule == "authors" and self.step != "paper":
            raise ValueError("rule='authors' uses the paper's step; step must be 'paper'")
        its, tol = self.DEFAULTS[(self.rule, self.step)]
        self.max_iterations = its if self.max_iterations is None else self.max_iterations
        self.tolerance = tol if self.tolerance is None else self.tolerance
        if self.max_iterations < 1:
            raise ValueError("max_iterations must be >= 1")
        if not self.tolerance > 0:
            raise ValueError("tolerance must be > 0")
        if self.memory < 1:
            raise ValueError("memory must be >= 1")
        if self.threads < 1:
            raise ValueError("threads must be >= 1")
        if self.start_sensing_scale is None:
            self.start_sensing_scale = self.DAMPED_START if self.step == "lbfgs" else 1.0
        if not (math.isfinite(self.start_sensing_scale) and self.start_sensing_scale > 0):
            raise ValueError("start_sensing_scale must be a finite number > 0")
        if self.power_constraint not in ("total", "per-antenna"):
            raise ValueError("power_constraint must be 'total' or 'per-antenna'")

    def _solve(self, inst):
        statuses, messages, Ws, traces, iters, infos = self._run([inst])
        self.record(info=infos[0])
        return statuses[0], messages[0], {"W": Ws[0]}, traces[0], iters[0]

    def solve_batch(self, instances: list[CrlbSumrateInstance]) -> list[Result]:
        """Solve instances of equal dimensions in one batched tensor program.

        Each instance follows exactly the iteration it would follow alone (its own
        stopping test; converged instances are frozen), so the results equal those of
        :meth:`solve` up to floating-point summation order.
        """
        import time

        if not instances:
            return []
        t0 = time.perf_counter()
        with torch_threads(self.threads):
            statuses, messages, Ws, traces, iters, infos = self._run(instances)
        elapsed = (time.perf_counter() - t0) / len(instances)
        out = []
        for inst, st, msg, W, tr, it, info in zip(instances, statuses, messages, Ws, traces, iters, infos):
            res = Result(problem=inst.problem, solver=self.name, status=st, message=msg, solution={"W": W},
                         trace=tr, iterations=it, time_s=elapsed, timings={"solve_s": elapsed, "batched": 1.0},
                         options=self.options(), seed=self.seed, info=info)
            out.append(finalize(res, inst))
        return out

    # --- the iteration; sca-lowdim overrides the three hooks _prepare, _initial, _finish ----
    def _prepare(self, b: _Batch, insts) -> None:
        """Change the batch into the problem the iteration runs on (identity here)."""

    def _initial(self, b: _Batch, insts) -> torch.Tensor:
        per_antenna = self.power_constraint == "per-antenna"
        return torch.stack([initial_point(i, self.seed, per_antenna) for i in insts])

    def _finish(self, b: _Batch, X: torch.Tensor) -> torch.Tensor:
        """The beamformers W ``[B, Nt, K+Ns]`` from the final iterate."""
        return X

    def _step(self, b: _Batch, X: torch.Tensor, parts: dict[str, torch.Tensor], scale: torch.Tensor) -> torch.Tensor:
        """Eq. (29): projection of (s * lambda) X + grad / 2 (``rule="authors"``: :func:`authors_direction`)."""
        if self.rule == "authors":
            return project(authors_direction(b, X, parts["Q"]), b.p_max, self.power_constraint == "per-antenna")
        direction = (scale * shift(b, parts))[:, None, None] * X + 0.5 * parts["grad"]
        return project(direction, b.p_max, self.power_constraint == "per-antenna")

    def _device(self) -> torch.device:
        dev = torch.device(self.device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise OptionError(f"device {self.device!r} requested but CUDA is not available on this machine")
        return dev

    def _run(self, insts):
        # inference_mode skips autograd bookkeeping (about 25 % of the per-iteration time);
        # the returned beams are cloned into ordinary tensors.
        with torch.inference_mode():
            statuses, messages, Ws, traces, iters, infos = self._iterate(insts)
        return statuses, messages, [w.to("cpu", copy=True) for w in Ws], traces, iters, infos

    def _iterate_lbfgs(self, insts):
        dev = self._device()
        b = _Batch.stack(insts, dev)
        self._prepare(b, insts)
        W0 = self._initial(b, insts).to(dev)
        per_antenna = self.power_constraint == "per-antenna"
        if self.start_sensing_scale != 1.0:
            W0 = W0.clone()
            W0[..., b.H.shape[-1]:] *= self.start_sensing_scale
            W0 = project(W0, b.p_max, per_antenna)
        reduction = None
        if self.reduce and not per_antenna:
            reduction, W0 = _Reduction.build(b, W0)
        q, s_red = W0.shape[-2:]
        problem = _RealProblem.from_batch(b, s_red)
        x0 = torch.cat([W0.real, W0.imag], -2).flatten(-2)
        if reduction is not None and reduction.perp is not None:
            problem, x0 = _WithScalar(problem), torch.cat([x0, reduction.perp_norm[:, None]], -1)
        sphere = PowerSphere(b.p_max, q, s_red, per_antenna=per_antenna)
        res = lbfgs_ascent(problem, x0, sphere, memory=self.memory, max_iterations=self.max_iterations,
                           tolerance=self.tolerance)
        x = torch.stack(res.x)
        X = x[:, : 2 * q * s_red].unflatten(-1, (2 * q, s_red))
        W = torch.complex(X[:, :q], X[:, q:])
        if reduction is not None:
            W = reduction.lift(W, x[:, -1] if reduction.perp is not None else None)
        W = self._finish(b, W)
        statuses = [_ASCENT_STATUS[stop] for stop in res.stops]
        infos = [{"evaluations": ev} for ev in res.evaluations]
        return statuses, res.messages, [W[i] for i in range(len(insts))], res.traces, res.iterations, infos

    def _iterate(self, insts):
        if self.step == "lbfgs":
            return self._iterate_lbfgs(insts)
        dev = self._device()
        b = _Batch.stack(insts, dev)
        self._prepare(b, insts)
        X = self._initial(b, insts).to(dev)
        n = len(insts)
        traces: list[list[dict[str, float]]] = [[] for _ in range(n)]
        iters = [0] * n
        statuses = [Status.MAX_ITERATIONS] * n
        messages = [f"{self.max_iterations} iterations without meeting the tolerance"] * n
        parts = objective_and_gradient(b, X)
        f = parts["objective"].clone()
        for i in range(n):
            traces[i].append({"iteration": 0, "objective": float(f[i])})
            if not bool(torch.isfinite(f[i])):
                statuses[i] = Status.NUMERICAL_ERROR
                messages[i] = "the initial point gives a singular FIM (tr(F^-1) = inf)"
        active = torch.tensor([i for i in range(n) if statuses[i] is not Status.NUMERICAL_ERROR], dtype=torch.long,
                              device=dev)
        scale = torch.ones(n, dtype=torch.float64, device=dev)
        last_size = n
        for it in range(1, self.max_iterations + 1):
            if active.numel() == 0:
                break
            full = active.numel() == n
            if not full and active.numel() != last_size:
                sub = b.select(active)  # shrink the batch only when an instance finishes
                last_size = active.numel()
            elif full:
                sub = b
            pa = parts if full else {k: v[active] for k, v in parts.items()}
            X_new = self._step(sub, X[active], pa, scale[active])
            new_parts = objective_and_gradient(sub, X_new)
            f_new = new_parts["objective"]
            finite = torch.isfinite(f_new) & torch.isfinite(torch.view_as_real(X_new)).flatten(1).all(-1)
            f_old = f[active]
            if self.rule == "authors":
                conv = torch.linalg.matrix_norm(X_new - X[active], ord=2) < self.tolerance
            else:
                conv = (f_new - f_old).abs() <= self.tolerance * torch.clamp(f_old.abs(), min=1e-12)
            if self.step == "adaptive":
                # Reject a step that lowers the objective (beyond round-off) and retry with a larger shift.
                up = f_new >= f_old - 1e-12 * f_old.abs()
                rejected = finite & ~up
                s_act = scale[active]
                scale[active] = torch.where(rejected, torch.clamp(s_act * 4.0, max=1.0),
                                            torch.clamp(s_act * 0.7, min=1e-4))
                finite = finite & ~rejected  # rejected steps leave the point unchanged...
                conv = conv & ~rejected
            else:
                rejected = torch.zeros_like(finite)
            ok = finite.nonzero().squeeze(-1)
            dest = active[ok]
            X[dest] = X_new[ok]
            f[dest] = f_new[ok]
            for key in parts:
                parts[key][dest] = new_parts[key][ok]
            fin, cv = finite.tolist(), conv.tolist()
            f_list = f_new.tolist()
            sr_list = new_parts["rates"].sum(-1).tolist()
            crlb_list = new_parts["crlb"].tolist()
            keep = []
            rej = rejected.tolist()
            for j, idx in enumerate(active.tolist()):
                iters[idx] = it
                if rej[j]:  # ...and are not failures
                    keep.append(idx)
                    continue
                if not fin[j]:
                    statuses[idx] = Status.NUMERICAL_ERROR
                    messages[idx] = f"non-finite objective or beams at iteration {it}; last finite point returned"
                    continue
                traces[idx].append({"iteration": it, "objective": f_list[j], "sum_rate_nats": sr_list[j],
                                    "crlb_trace": crlb_list[j]})
                if cv[j]:
                    statuses[idx] = Status.CONVERGED
                    messages[idx] = (f"||W_t - W_t-1||_2 < {self.tolerance:g} after {it} iterations"
                                     if self.rule == "authors" else
                                     f"objective change <= {self.tolerance:g} (relative) after {it} iterations")
                else:
                    keep.append(idx)
            active = torch.tensor(keep, dtype=torch.long, device=dev)
        W = self._finish(b, X)
        return statuses, messages, [W[i] for i in range(n)], traces, iters, [{} for _ in range(n)]


@register_solver
@dataclass
class SCALowDim(SCA):
    """Prop. 5 of 003: Algorithm 1 on the low-dimensional variable, W = U P.

    U ``[Nt, r]`` is an orthonormal basis of the range of N = [H, A, dA/dtheta, dA/dphi]
    (r = min(Nt, K + 3M), from the SVD of N). Every quantity of problem (11) depends on W only
    through h_k^H W and v^H W with v in {a, da/dtheta, da/dphi}, all in range(N), so the problem
    in P is problem (11) itself with the effective channels U^H H and U^H v and N_t replaced by r
    (the paper's "transformed counterparts"); the per-iteration cost no longer grows with N_t.
    Options as ``sca`` (``power_constraint`` must be "total", as the change of basis does not
    preserve per-antenna powers).
    """

    name: ClassVar[str] = "sca-lowdim"
    DEFAULTS: ClassVar[dict[tuple[str, str], tuple[int, float]]] = {**SCA.DEFAULTS, ("paper", "lbfgs"): (5000, 1e-12)}
    """As ``sca``'s, with the L-BFGS tolerance at 1e-12: from its projected start it otherwise stops on a
    plateau a few 1e-6 below ``sca`` on some large arrays (N_t = 128)."""
    description: ClassVar[str] = "003 Prop. 5: Algorithm 1 on P with W = U P, U a basis of range[H, A, dA] (eqs. 38-40)"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.power_constraint != "total":
            raise ValueError("sca-lowdim supports power_constraint='total' only")

    @staticmethod
    def basis(inst: CrlbSumrateInstance) -> torch.Tensor:
        """N = [H, A, dA/dtheta, dA/dphi] ``[Nt, K+3M]``."""
        a, da_t, da_p = inst.tx_array.steering_and_derivatives(inst.theta_rad, inst.phi_rad)
        return torch.cat([inst.H, a.T, da_t.T, da_p.T], dim=1)

    def _prepare(self, b: _Batch, insts) -> None:
        N = torch.stack([self.basis(i) for i in insts]).to(b.H.device)
        r = min(N.shape[-2], N.shape[-1])
        U = torch.linalg.svd(N, full_matrices=False)[0][..., :r]  # [B, Nt, r], orthonormal columns
        b.basis = U
        # The reduced problem: effective channels and right derivative factors U^H h, U^H v.
        b.H = hermitian(U) @ b.H
        b.derivs = FactoredDerivatives(b.derivs.left, b.derivs.right @ U.conj()[:, None])

    def _initial(self, b: _Batch, insts) -> torch.Tensor:
        # Coordinates of the full-dimensional initial point in the basis, rescaled to full power.
        W0 = super()._initial(b, insts).to(b.basis.device)
        return project(hermitian(b.basis) @ W0, b.p_max, False)

    def _finish(self, b: _Batch, X: torch.Tensor) -> torch.Tensor:
        return b.basis @ X


set_default_solver(PROBLEM, "sca")
