r"""000's ADMM beamformer for one BS (Sec. V-B, eqs. (30)-(60), Algorithm 2; Appendix A), registered as ``admm``.

Problem (P3.k) of :mod:`isac.solvers.li_beamforming`: maximise the mean rate (30) of the served CUs s.t.
the radar SNR (30a), the DoA CRB (30b) and the budget (30c). Algorithm 2 (one BS):

.. math::

    \min_{\mathbf w,\mathbf v,\mathbf b,C,\mathbf q}\ -\Phi(\mathbf w,\mathbf v,\mathbf b)
    +\frac1{2\rho}\sum_{j=1}^3|Q_j(\mathbf W)-q_j+\rho\Upsilon_j|^2
    \quad\text{s.t. (38), } C\ge1/\epsilon,\ \text{LMI (43d)},\ \|\mathbf w\|^2\le P_t \qquad (44)\text{-}(46)

with :math:`Q_j(\mathbf W)=\mathrm{tr}(\boldsymbol\Theta_j\mathbf W\mathbf W^H)` (67)-(70)
(:meth:`BsProblem.fim_weights`). Each outer iteration runs ``inner_iterations`` BCD passes of

1. :math:`\mathbf v` then :math:`\mathbf b` in closed form, (47) and (48), squares restored in both
   denominators, and the interference sum of (31) over :math:`|\mathbf h_{k,i}^H\mathbf w_{k,n}|^2` (the
   printed :math:`\mathbf h_{k,n}` is a slip): :func:`fp_auxiliaries`;
2. :math:`(C,\mathbf q)` of (49): :func:`project_crb_set` (closed form, below);
3. :math:`\mathbf w` from the MM QCQP (59), through CVXPY (:class:`WStep`, :func:`wstep_data`),

then the dual update (60) :math:`\Upsilon\leftarrow\Upsilon+(\mathbf Q(\mathbf W)-\mathbf q)/\rho` and
:math:`\rho\leftarrow0.9\rho` (Step 5, option ``rho_decay``).

**Units.** Everything runs on :class:`ScaledBs`: :math:`\mathbf X=\mathbf W_{:,\mathcal A}/\sqrt{P_t}` (only the
served CUs' columns and the radar columns are variables; the other columns stay exactly zero), channels
:math:`\mathbf h\sqrt{P_t}/\sigma_i`, and each constraint row :math:`Q_j=q_j` divided by
:math:`d_1=P_t\lambda_{\max}(\boldsymbol\Theta_1)`, :math:`d_3=P_t\lambda_{\max}(\boldsymbol\Theta_3)`,
:math:`d_2=\sqrt{d_1d_3/2}` (FIM entries are 1e3-1e16 in SI units; scaled, :math:`|Q_j'|\lesssim1`). The
augmented Lagrangian is that of the scaled equalities :math:`Q_j/d_j=q_j/d_j` (equivalent constraints;
unscaled, the penalty would weigh the three rows by factors up to :math:`10^{13}` apart). The choice of
:math:`d_2` makes step 2 a plain projection (below). (30a) is kept as
:math:`\|\mathbf g^H\mathbf X\|^2\ge1` with :math:`\mathbf g=\mathbf a_d\sqrt{P_t/(q_d(1+10^{-6}))}`
(:attr:`BsProblem.snr_beam_power_min`, margin :data:`~isac.solvers.li_beamforming.SENSING_MARGIN`) and (38)
is divided by its right-hand side, so every coefficient of (59) is O(1).

**FP, (31)-(34).** (31) writes :math:`\log_2(1+v_i)` next to the linear terms; :math:`v_i^*=\gamma_i` of
(47) is the maximiser only of the natural-log version :math:`\sum_i\omega_i[\ln(1+v_i)-v_i+(1+v_i)\gamma_i/(1+\gamma_i)]`,
which is what we use (it is (30) times :math:`\ln2`; the constant factor only rescales :math:`\rho`). In
scaled units :math:`\|\mathbf F\mathbf w\|^2=\sum_i|b_i|^2\|\mathbf h_i^H\mathbf X\|^2` and
:math:`\Re\{\mathbf f^H\mathbf w\}=\sum_i2\sqrt{\omega_i(1+v_i)}\Re\{\bar b_i\mathbf h_i^H\mathbf x_i\}` (:func:`comm_part`).

**Step 2 in closed form.** C enters (49) only through (49b) and the LMI, and lowering C only enlarges the
LMI's feasible set, so :math:`C^*=1/\epsilon`. The LMI
:math:`\begin{bmatrix}q_1-C&\Re q_2&-\Im q_2\\\cdot&q_3&0\\\cdot&0&q_3\end{bmatrix}\succeq0` holds iff
:math:`q_1-C\ge0`, :math:`q_3\ge0`, :math:`(q_1-C)q_3\ge|q_2|^2` (Schur complement; principal minors).
In scaled units this reads :math:`2xy\ge|q_2'|^2`, :math:`x=q_1'-c_{\min}\ge0`, :math:`y=q_3'\ge0`, a
rotated second-order cone, and :math:`(x,y,q_2')\mapsto((x+y)/\sqrt2,(x-y)/\sqrt2,\Re q_2',\Im q_2')` is an
isometry onto the Lorentz cone :math:`u\ge\|\mathbf s\|`. (49a) is the squared distance of
:math:`\mathbf q'` to :math:`\mathbf z=\mathbf Q'(\mathbf X)+\rho\Upsilon'`, so :math:`\mathbf q'^*` is the
Euclidean projection onto that cone: :math:`\mathbf z` itself if :math:`\|\mathbf s\|\le u`, the apex if
:math:`\|\mathbf s\|\le-u`, else :math:`\frac{u+\|\mathbf s\|}2(1,\mathbf s/\|\mathbf s\|)` (checked against
the SDP through CVXPY in the tests).

**Step 3, the MM step in M x M terms.** With :math:`c_j=-q_j+\rho\Upsilon_j`, (50a) has the penalty
:math:`|Q_j+c_j|^2=2\Re\{\bar c_jQ_j\}+|Q_j|^2+|c_j|^2` (51). Write :math:`\langle\mathbf A,\mathbf B\rangle=\mathrm{tr}(\mathbf A^H\mathbf B)`,
:math:`\mathbf K=\mathbf I_S\otimes\boldsymbol\Theta` (so :math:`\mathbf K\,\mathrm{vec}\mathbf X=\mathrm{vec}(\boldsymbol\Theta\mathbf X)`).

* (52)-(54): :math:`\tilde{\boldsymbol\Theta}=\mathbf I_S\otimes\mathbf T`, :math:`\mathbf T=\bar c\boldsymbol\Theta+c\boldsymbol\Theta^H`
  (Hermitian M x M). The eigenvalues of :math:`\mathbf I\otimes\mathbf T` are those of :math:`\mathbf T`,
  so :math:`\lambda=\lambda_{\max}(\mathbf T)` from an M x M ``eigvalsh``; we use :math:`\lambda^+=\max(\lambda,0)`
  (with :math:`\lambda<0` the form is concave, :math:`\mathbf V=0` is the valid choice, and (54)'s
  :math:`\lambda\|\mathbf w\|^2\le\lambda P_t` needs :math:`\lambda\ge0`). Then (53) reads
  :math:`\mathrm{tr}(\mathbf X^H\mathbf T\mathbf X)\le\lambda\|\mathbf X\|^2+2\Re\langle(\mathbf T-\lambda\mathbf I)\mathbf X_j,\mathbf X\rangle-\langle\mathbf X_j,(\mathbf T-\lambda\mathbf I)\mathbf X_j\rangle`.
* (55)-(56): :math:`|Q|^2=\hat{\mathbf w}^H\hat{\boldsymbol\Theta}\hat{\mathbf w}`,
  :math:`\hat{\boldsymbol\Theta}=\bar{\mathbf K}\otimes\mathbf K` (:math:`M^2S^2` square; never formed). The key
  identity is :math:`\hat{\mathbf w}_a^H\hat{\boldsymbol\Theta}\hat{\mathbf w}_b=|\mathbf w_a^H\mathbf K\mathbf w_b|^2`
  for :math:`\hat{\mathbf w}=\mathrm{vec}(\mathbf w\mathbf w^H)` (from :math:`\mathrm{tr}(\mathbf{ABCD})=\mathrm{vec}^H(\mathbf D^H)(\mathbf C^T\otimes\mathbf A)\mathrm{vec}\mathbf B`),
  so the two convex terms of (57) are :math:`|\langle\boldsymbol\Theta^H\mathbf X_j,\mathbf X\rangle|^2` and
  :math:`|\langle\boldsymbol\Theta\mathbf X_j,\mathbf X\rangle|^2`, and :math:`\hat{\mathbf w}_j^H\hat{\mathbf w}=|\langle\mathbf X_j,\mathbf X\rangle|^2`,
  :math:`\|\hat{\mathbf w}\|^2=\|\mathbf X\|_F^4`. :math:`\hat{\boldsymbol\Theta}_2` is not Hermitian, and
  [61, Lemma 12] needs :math:`\hat{\mathbf V}\succeq` its Hermitian part (which is all the quadratic form sees on
  :math:`\mathrm{vec}` of Hermitian matrices), so :math:`\hat\lambda=\lambda_{\max}(\tfrac12(\hat{\boldsymbol\Theta}+\hat{\boldsymbol\Theta}^H))`;
  a perfect shuffle makes that matrix :math:`\mathbf I_{S^2}\otimes\tfrac12(\bar{\boldsymbol\Theta}\otimes\boldsymbol\Theta+\boldsymbol\Theta^T\otimes\boldsymbol\Theta^H)`,
  whose top eigenvalue :func:`kron_hermitian_max_eig` gets from the SVD factors of :math:`\boldsymbol\Theta`
  (a :math:`2r^2` square eigenproblem, r = rank Θ ≤ 2 here; :math:`\lambda_{\max}(\boldsymbol\Theta)^2` for PSD Θ,
  :math:`(|\mathbf y^H\mathbf x|^2+\|\mathbf x\|^2\|\mathbf y\|^2)/2` for the rank-one :math:`\boldsymbol\Theta_2=\mathbf x\mathbf y^H`).
* (58): :math:`-2\hat\lambda|\langle\mathbf X_j,\mathbf X\rangle|^2\le-2\hat\lambda(2\|\mathbf X_j\|^2\Re\langle\mathbf X_j,\mathbf X\rangle-\|\mathbf X_j\|^4)`.

Altogether (:func:`penalty_surrogate`)

.. math::

    |Q+c|^2\le|\langle\boldsymbol\Theta^H\mathbf X_j,\mathbf X\rangle|^2+|\langle\boldsymbol\Theta\mathbf X_j,\mathbf X\rangle|^2
    +\Re\langle2(\mathbf T-\lambda\mathbf I)\mathbf X_j-4\hat\lambda\|\mathbf X_j\|^2\mathbf X_j,\mathbf X\rangle
    +\lambda\pi_1+\hat\lambda\pi_2+\text{const},

with :math:`(\pi_1,\pi_2)=(P_t,P_t^2)` in the paper's (54)/(56) (``surrogate="paper"``, default; a QCQP)
or :math:`(\|\mathbf X\|^2,\|\mathbf X\|^4)` (``surrogate="tight"``; an SOCP). Both majorise on
:math:`\|\mathbf X\|^2\le P_t`; the tight one touches at every :math:`\mathbf X_j`, the paper's only where
:math:`\|\mathbf X_j\|^2=P_t` (it overestimates by :math:`\lambda(P_t-\|\mathbf X_j\|^2)+\hat\lambda(P_t^2-\|\mathbf X_j\|^4)`
elsewhere). The iterates sit at full power (the rate grows with a common scaling of W), and the two variants
gave the same objectives to 4 digits in our runs. The tests check this surrogate, term by term, against
(51)-(58) built with explicit Kronecker matrices on tiny sizes. Work per iteration: M x M products and
three M x M ``eigvalsh``; the QCQP has 2MS real variables (S = n_k + Ns).

**Monotonicity.** Within one outer iteration (ρ, Υ fixed) every step lowers (44): steps 1 and 2 are exact
block minimisers, and step 3 minimises a majoriser that touches at :math:`\mathbf X_j` (which is feasible for
(59), because (38) is tight at :math:`\mathbf X_j` and :math:`\mathbf X_j` meets (30a)). The trace records the
largest increase over the steps (``lagrangian_max_step_increase``; solver round-off only). This is the claim
of Sec. V-B-4; the rate (30) itself is *not* monotone (the dual update and the shrinking ρ trade rate for the
CRB, e.g. the rate rises past the CRB limit and falls back as the penalty stiffens).

**What the text leaves open, and what we chose.**

* Start: ``W0`` if given and feasible, else :func:`~isac.solvers.li_beamforming.feasible_start`. The paper's
  rank-one start (:func:`~isac.solvers.li_beamforming.initial_beams`) violates (30a) on most BSs; (38)
  linearised there need not even be feasible, and the descent argument above needs :math:`\mathbf X_j` to meet
  (30a). ``info["start"]`` says which was used.
* :math:`\rho^{(0)}`, :math:`\Upsilon^{(0)}`: [15]'s code (RangLiu0706/SNR-CRB-constrained-beamforming-for-RIS-ISAC)
  starts from :math:`\Upsilon=0`, :math:`\mathbf q=\mathbf Q(\mathbf W_0)` and
  :math:`\rho^{(0)}=\rho_0\|\mathbf f\|^2/(2|\phi_c(\mathbf W_0)|)` with :math:`\mathbf f` the FIM entries at the
  start and :math:`\phi_c` the communication part of (50a), :math:`\rho_0\in\{1,\dots,16\}` in its scripts.
  We keep the form but replace :math:`\|\mathbf Q'(\mathbf X_0)\|^2` by its bound under the budget,
  :math:`\sum_j\hat\lambda_j` (:math:`|Q_j|^2\le\hat\lambda_j\|\mathbf X\|^4`): with row scaling,
  :math:`\|\mathbf Q'(\mathbf X_0)\|^2` is 1e-3..1e-2 and depends on how much the start beam lights the
  target, and that rule with :math:`\rho_0=1` left the MM step so conservative at M = 24 that the
  stopping rule fired after rate gains of 0.01-0.04 bit/s/Hz (from ~3). ``rho0 = 1`` with our rule reaches the same
  rates as much larger values in a few iterations and still restores a binding CRB (measured; tests).
* Inner loop: one BCD pass per outer iteration (``inner_iterations = 1``, as [15]'s code).
* Dual update (60): with the W just computed, :math:`\mathbf Q(\mathbf W^{(j)})-\mathbf q^{(j)}` (standard
  scaled-form ADMM; [15]'s code uses :math:`\mathbf Q` at the previous W).
* Stopping rule (Step 7, "increase of the objective"): stop at a feasible iterate when
  :math:`|R_j-R_{j-1}|\le\text{tolerance}\cdot R_j`, R = (30), tolerance 1e-4 and at most 100 outer
  iterations ([15]'s code: the same relative rule on the sum rate, 1e-4, 100). [15]'s code also shrinks ρ by
  a further 0.7 when the CRB exceeds 0.8ε and stops as soon as it exceeds ε; we keep the paper's plain 0.9.
* The CRB is enforced only through the penalty, so iterates may violate it. Every iterate is re-checked by
  :meth:`BsProblem.violations` (trace ``feasible``), and the best feasible iterate (objective (30)) is
  returned, never an infeasible one (the start is feasible). A solver failure of (59) is NUMERICAL_ERROR
  (with the best feasible iterate so far); a start point that cannot be built is INFEASIBLE.
* An iterate whose norm exceeds :math:`\sqrt{P_t}` by solver round-off is scaled back onto the ball.

Trace (one dict per outer iteration): ``objective`` ((30), :meth:`BsProblem.objective`), ``rho``,
``constraint_residual`` (:math:`\max_j|Q_j'-q_j'|`, scaled units), ``feasible`` (0/1), ``crb_rad2`` (from the scaled Q, equal to the metrics package's CRB to round-off; tested),
``radar_snr`` (linear), ``power_w``, ``lagrangian`` ((44) after step 3, scaled), ``lagrangian_max_step_increase``,
``lagrangian_scale`` (largest :math:`|\mathcal L|` seen in the iteration, to make the increase relative).
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from dataclasses import dataclass
from typing import ClassVar, Literal

import cvxpy as cp
import numpy as np
import torch

from isac.solvers.base import Status
from isac.solvers.li_beamforming import SENSING_MARGIN, Beamformer, BsProblem, feasible_start, register_beamformer
from isac.tensors import COMPLEX

Backend = Literal["SCS", "CLARABEL"]
Surrogate = Literal["paper", "tight"]
BACKENDS = ("SCS", "CLARABEL")
SURROGATES = ("paper", "tight")
DEFAULT_EPS = {"SCS": 1e-7, "CLARABEL": 1e-8}
"""Default conic-solver tolerance of the w-subproblem (59) per backend (SCS ``eps_abs = eps_rel``;
Clarabel gap and feasibility tolerances)."""


# --- the problem in O(1) units ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ScaledBs:
    r"""BS k's (P3.k) in the units the ADMM works in (all O(1)).

    The variable is :math:`\mathbf X=\mathbf W_{:,\mathcal A}/\sqrt{P_t}` ``[M, S]``, the columns
    :math:`\mathcal A` = served CUs (ascending) then the Ns radar columns, so (30c) is
    :math:`\|\mathbf X\|_F\le1`; the other columns of W stay zero.

    Attributes:
        cols: ``[S]`` indices of the variable columns in the full ``[M, N+Ns]`` W.
        num_served: n (the first n columns of X are the served CUs' beams).
        h: ``[M, n]`` :math:`\mathbf h_{k,i}\sqrt{P_t}/\sigma_i` (SINR = :math:`|\mathbf h^H\mathbf x_i|^2/(\sum_j|\mathbf h^H\mathbf x_j|^2-|\mathbf h^H\mathbf x_i|^2+1)`).
        omega: :math:`\omega_i=1/n` (eq. (31)).
        g: ``[M]`` :math:`\mathbf a_d\sqrt{P_t/(q_d(1+\text{margin}))}`: (30a) with margin is :math:`\|\mathbf g^H\mathbf X\|^2\ge1`
            (zero when :math:`\Gamma_t=0`).
        theta: ``[3, M, M]`` :math:`\boldsymbol\Theta_j'=P_t\boldsymbol\Theta_j/d_j` (eqs. (68)-(70)), so :math:`Q_j'=\mathrm{tr}(\boldsymbol\Theta_j'\mathbf X\mathbf X^H)=Q_j/d_j`.
        scale: ``[3]`` :math:`d_1=P_t\lambda_{\max}(\boldsymbol\Theta_1)`, :math:`d_3=P_t\lambda_{\max}(\boldsymbol\Theta_3)`, :math:`d_2=\sqrt{d_1d_3/2}`.
        c_min: :math:`1/(\epsilon d_1)`, the least scaled C of (43c).
        lam_hat: ``[3]`` :math:`\hat\lambda_j` of (56) for :math:`\boldsymbol\Theta_j'` (:func:`kron_hermitian_max_eig`).
        p_max_w: :math:`P_t`.
    """

    cols: np.ndarray
    num_served: int
    h: np.ndarray
    omega: float
    g: np.ndarray
    theta: np.ndarray
    scale: np.ndarray
    c_min: float
    lam_hat: np.ndarray
    p_max_w: float
    num_antennas: int
    num_streams: int

    def to_full(self, X: np.ndarray) -> np.ndarray:
        """``[M, N+Ns]`` W in watts^(1/2) from the scaled variable ``X [M, S]``."""
        W = np.zeros((self.num_antennas, self.num_streams), dtype=np.complex128)
        W[:, self.cols] = X * math.sqrt(self.p_max_w)
        return W

    def from_full(self, W) -> np.ndarray:
        W = W.numpy() if isinstance(W, torch.Tensor) else np.asarray(W)
        return W[:, self.cols] / math.sqrt(self.p_max_w)


def kron_hermitian_max_eig(theta: np.ndarray, rtol: float = 1e-13) -> float:
    r""":math:`\hat\lambda=\lambda_{\max}\big(\tfrac12(\bar{\boldsymbol\Theta}\otimes\boldsymbol\Theta+\boldsymbol\Theta^T\otimes\boldsymbol\Theta^H)\big)` from M x r factors.

    This is the largest eigenvalue of the Hermitian part of the paper's
    :math:`\hat{\boldsymbol\Theta}=\overline{(\mathbf I\otimes\boldsymbol\Theta)}\otimes(\mathbf I\otimes\boldsymbol\Theta)`
    (a perfect-shuffle permutation makes it :math:`\mathbf I_{S^2}\otimes\bar{\boldsymbol\Theta}\otimes\boldsymbol\Theta`).
    With the SVD :math:`\boldsymbol\Theta=\mathbf U\mathbf V^H` (rank r), :math:`\bar{\boldsymbol\Theta}\otimes\boldsymbol\Theta=\mathbf P\mathbf Q^H`,
    :math:`\mathbf P=\bar{\mathbf U}\otimes\mathbf U`, :math:`\mathbf Q=\bar{\mathbf V}\otimes\mathbf V`, so the Hermitian part is
    :math:`\mathbf Y\mathbf J\mathbf Y^H` with :math:`\mathbf Y=[\mathbf P,\mathbf Q]`, :math:`\mathbf J=\frac12\begin{bmatrix}0&\mathbf I\\\mathbf I&0\end{bmatrix}`;
    its nonzero eigenvalues are those of :math:`\mathbf G^{1/2}\mathbf J\mathbf G^{1/2}`, :math:`\mathbf G=\mathbf Y^H\mathbf Y`
    (``2r^2`` square), whose blocks are Kronecker products of r x r Gram matrices,
    e.g. :math:`\mathbf P^H\mathbf Q=\overline{\mathbf U^H\mathbf V}\otimes\mathbf U^H\mathbf V`. For a Hermitian PSD
    :math:`\boldsymbol\Theta` this is :math:`\lambda_{\max}(\boldsymbol\Theta)^2`; for a rank-one
    :math:`\mathbf x\mathbf y^H` it is :math:`(|\mathbf y^H\mathbf x|^2+\|\mathbf x\|^2\|\mathbf y\|^2)/2`.
    Singular values below ``rtol`` times the largest are dropped; the result is enlarged by
    ``1e-10`` relative so that round-off never makes it smaller than the true value.
    """
    U, s, Vh = np.linalg.svd(theta)
    if s.size == 0 or s[0] == 0:
        return 0.0
    r = int(np.sum(s > rtol * s[0]))
    Uf = U[:, :r] * s[:r]
    Vf = Vh[:r].conj().T
    guu, guv, gvv = Uf.conj().T @ Uf, Uf.conj().T @ Vf, Vf.conj().T @ Vf
    pp, pq, qq = np.kron(guu.conj(), guu), np.kron(guv.conj(), guv), np.kron(gvv.conj(), gvv)
    G = np.block([[pp, pq], [pq.conj().T, qq]])
    ev, vec = np.linalg.eigh(0.5 * (G + G.conj().T))
    half = (vec * np.sqrt(np.clip(ev, 0.0, None))) @ vec.conj().T
    r2 = r * r
    J = np.zeros((2 * r2, 2 * r2))
    J[:r2, r2:] = J[r2:, :r2] = 0.5 * np.eye(r2)
    top = float(np.linalg.eigvalsh(half @ J @ half)[-1])
    return max(top, 0.0) * (1.0 + 1e-10)


def scale_problem(problem: BsProblem, margin: float = SENSING_MARGIN) -> ScaledBs:
    """The O(1) form of ``problem`` (see :class:`ScaledBs`)."""
    served = problem.served_index
    n, m = served.size, problem.num_antennas
    cols = np.concatenate([served, problem.num_users + np.arange(problem.num_sensing_streams)]).astype(np.int64)
    p = problem.p_max_w
    h = problem.H.numpy()[:, served] * math.sqrt(p / problem.noise_comm_w)
    qd = problem.snr_beam_power_min
    g = problem.a_det.numpy() * math.sqrt(p / (qd * (1 + margin))) if qd > 0 else np.zeros(m, dtype=np.complex128)
    th = problem.fim_weights()
    d1 = p * float(np.linalg.eigvalsh(th[0])[-1])
    d3 = p * float(np.linalg.eigvalsh(th[2])[-1])
    d1 = d1 if d1 > 0 else 1.0
    d3 = d3 if d3 > 0 else 1.0
    scale = np.array([d1, math.sqrt(d1 * d3 / 2.0), d3])
    theta = np.stack([p * t / d for t, d in zip(th, scale)])
    eps = problem.crb_max_rad2
    c_min = 1.0 / (eps * d1) if eps > 0 else math.inf
    lam_hat = np.array([kron_hermitian_max_eig(t) for t in theta])
    return ScaledBs(cols=cols, num_served=int(n), h=h, omega=1.0 / n if n else 0.0, g=g, theta=theta, scale=scale,
                    c_min=c_min, lam_hat=lam_hat, p_max_w=p, num_antennas=m, num_streams=problem.num_streams)


# --- the pieces of Algorithm 2 --------------------------------------------------------------------------


def fim_values(theta: np.ndarray, X: np.ndarray) -> np.ndarray:
    r""":math:`Q_j(\mathbf X)=\mathrm{tr}(\boldsymbol\Theta_j\mathbf X\mathbf X^H)=\langle\mathbf X,\boldsymbol\Theta_j\mathbf X\rangle`, ``[3]`` complex (eq. (67))."""
    return np.einsum("ms,jms->j", X.conj(), theta @ X)


def crb_from_fim(Q: np.ndarray) -> float:
    r"""DoA CRB (rad^2) from SI-unit :math:`(t_1,t_2,t_3)`: :math:`1/(t_1-|t_2|^2/t_3)` (:meth:`BsProblem.fim_weights`; +inf if singular)."""
    t1, t3 = float(np.real(Q[0])), float(np.real(Q[2]))
    info = t1 - abs(Q[1]) ** 2 / t3 if t3 > 0 else 0.0
    return 1.0 / info if info > 0 else math.inf


def fp_auxiliaries(h: np.ndarray, omega: float, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Step 1: :math:`v_i^*` of (47) then :math:`b_i^*` of (48) (squares restored), ``[n]`` each.

    :math:`v_i=|\mathbf h_i^H\mathbf x_i|^2/(\sum_{j\ne i}|\mathbf h_i^H\mathbf x_j|^2+1)` (the SINR) and
    :math:`b_i=\sqrt{\omega_i(1+v_i)}\,\mathbf h_i^H\mathbf x_i/(\sum_j|\mathbf h_i^H\mathbf x_j|^2+1)` (scaled units).
    """
    n = h.shape[1]
    y = h.conj().T @ X  # [n, S]: h_i^H x_j
    sig = y[np.arange(n), np.arange(n)]
    total = np.sum(np.abs(y) ** 2, axis=1) + 1.0
    v = np.abs(sig) ** 2 / (total - np.abs(sig) ** 2)
    b = np.sqrt(omega * (1.0 + v)) * sig / total
    return v, b


def fp_value(h: np.ndarray, omega: float, X: np.ndarray, v: np.ndarray, b: np.ndarray) -> float:
    r""":math:`\Phi(\mathbf X,\mathbf v,\mathbf b)` of (32) in nats (the log of (31) read as :math:`\ln`, see the module docstring)."""
    n = h.shape[1]
    y = h.conj().T @ X
    sig = y[np.arange(n), np.arange(n)]
    total = np.sum(np.abs(y) ** 2, axis=1) + 1.0
    lin = 2.0 * np.sqrt(omega * (1.0 + v)) * np.real(b.conj() * sig)
    return float(np.sum(omega * (np.log1p(v) - v) + lin - np.abs(b) ** 2 * total))


def comm_part(h: np.ndarray, X: np.ndarray, v: np.ndarray, b: np.ndarray, omega: float) -> float:
    r""":math:`\|\mathbf F\mathbf w\|^2-\Re\{\mathbf f^H\mathbf w\}` of (33)/(50a): the communication part of the w-subproblem (scaled)."""
    n = h.shape[1]
    y = h.conj().T @ X
    sig = y[np.arange(n), np.arange(n)]
    quad = float(np.sum(np.abs(b) ** 2 * np.sum(np.abs(y) ** 2, axis=1)))
    return quad - float(np.sum(2.0 * np.sqrt(omega * (1.0 + v)) * np.real(b.conj() * sig)))


def project_crb_set(z: np.ndarray, c_min: float) -> np.ndarray:
    r"""Step 2, sub-problem (49) in closed form: the point of the (scaled) feasible set nearest to ``z``.

    ``z = Q'(X) + rho * Upsilon'`` ``[3]`` complex; returns q ``[3]`` complex (q1, q3 real). The
    feasible set of (49) in scaled units is :math:`\{q: q_1\ge c_{\min},\ q_3\ge0,\ 2(q_1-c_{\min})q_3\ge|q_2|^2\}`
    (C at its least value, module docstring); with :math:`u=(x+y)/\sqrt2`,
    :math:`\mathbf s=((x-y)/\sqrt2,\Re q_2,\Im q_2)`, :math:`x=q_1-c_{\min}`, :math:`y=q_3`, an isometry,
    it is the second-order cone :math:`u\ge\|\mathbf s\|`, whose projection is explicit.
    """
    x0, y0 = float(np.real(z[0])) - c_min, float(np.real(z[2]))
    u = (x0 + y0) / math.sqrt(2.0)
    s = np.array([(x0 - y0) / math.sqrt(2.0), float(np.real(z[1])), float(np.imag(z[1]))])
    ns = float(np.linalg.norm(s))
    if ns <= u:
        pu, ps = u, s
    elif ns <= -u:
        pu, ps = 0.0, np.zeros(3)
    else:
        pu = 0.5 * (u + ns)
        ps = pu * s / ns
    x, y = (pu + ps[0]) / math.sqrt(2.0), (pu - ps[0]) / math.sqrt(2.0)
    return np.array([x + c_min, ps[1] + 1j * ps[2], y], dtype=np.complex128)


@dataclass(frozen=True)
class PenaltySurrogate:
    r"""The MM upper bound of :math:`|Q(\mathbf X)+c|^2` built at :math:`\mathbf X_j`, eqs. (51)-(58) in M x S terms.

    Value at X: :math:`\sum_m|\langle\mathbf A_m,\mathbf X\rangle|^2+\Re\langle\mathbf L,\mathbf X\rangle
    +\lambda\,\pi_1+\hat\lambda\,\pi_2+\text{const}`, with :math:`(\pi_1,\pi_2)=(P,P^2)` for the paper's
    (54)/(56) and :math:`(\|\mathbf X\|_F^2,\|\mathbf X\|_F^4)` for the ``tight`` variant
    (:math:`\langle\mathbf A,\mathbf X\rangle=\mathrm{tr}(\mathbf A^H\mathbf X)`).
    """

    quad: np.ndarray  # [2, M, S]: Theta^H X_j, Theta X_j
    lin: np.ndarray  # [M, S]
    lam: float
    lam_hat: float
    const: float
    power: float

    def value(self, X: np.ndarray, tight: bool = False) -> float:
        quad = float(np.sum(np.abs(np.einsum("kms,ms->k", self.quad.conj(), X)) ** 2))
        lin = float(np.real(np.vdot(self.lin, X)))
        p2 = float(np.vdot(X, X).real) if tight else self.power
        return quad + lin + self.lam * p2 + self.lam_hat * p2 * p2 + self.const


def penalty_surrogate(theta: np.ndarray, c: complex, Xj: np.ndarray, lam_hat: float, power: float = 1.0) -> PenaltySurrogate:
    r"""Coefficients of the MM surrogate of :math:`|\mathrm{tr}(\boldsymbol\Theta\mathbf X\mathbf X^H)+c|^2` at :math:`\mathbf X_j` (module docstring).

    ``theta [M, M]``, ``Xj [M, S]``, ``lam_hat`` from :func:`kron_hermitian_max_eig`, ``power`` the
    bound on :math:`\|\mathbf X\|_F^2` used by (54)/(56).
    """
    T = np.conj(c) * theta + c * theta.conj().T  # (52): Theta-tilde = I (x) T
    T = 0.5 * (T + T.conj().T)
    lam = max(float(np.linalg.eigvalsh(T)[-1]), 0.0)
    TX = T @ Xj - lam * Xj
    nj2 = float(np.vdot(Xj, Xj).real)
    qj = complex(np.vdot(Xj, theta @ Xj))
    quad = np.stack([theta.conj().T @ Xj, theta @ Xj])
    lin = 2.0 * TX - 4.0 * lam_hat * nj2 * Xj
    const = (-float(np.vdot(Xj, TX).real) + 3.0 * lam_hat * nj2 * nj2 - abs(qj) ** 2 + abs(c) ** 2)
    return PenaltySurrogate(quad=quad, lin=lin, lam=lam, lam_hat=float(lam_hat), const=const, power=power)


# --- the w-subproblem (59) as a parametrised CVXPY problem -------------------------------------------------


@dataclass(frozen=True)
class WStepData:
    r"""Coefficients of (59) at :math:`\mathbf X_j` (scaled units).

    Objective :math:`\|\mathbf P\mathbf X\|_F^2+\|\mathbf A\,\mathrm{vec}\mathbf X\|^2+\Re\langle\mathbf L,\mathbf X\rangle
    +[\kappa_1\|\mathbf X\|_F^2+\kappa_2\|\mathbf X\|_F^4]_{\text{tight}}` + offset, which equals
    :func:`comm_part` :math:`+\frac1{2\rho}\sum_j` :meth:`PenaltySurrogate.value`; constraint
    :math:`\Re\langle\mathbf G,\mathbf X\rangle\ge g_0` is (38) at :math:`\mathbf X_j`, divided by its right-hand side.
    """

    P: np.ndarray  # [n, M]: diag(|b|) h^H
    A: np.ndarray  # [6, M*S]: rows conj(vec_F A_m) / sqrt(2 rho)
    L: np.ndarray  # [M, S]
    G: np.ndarray  # [M, S]
    g0: float
    k1: float
    k2: float
    offset_paper: float
    offset_tight: float

    def value(self, X: np.ndarray, tight: bool = False) -> float:
        val = float(np.sum(np.abs(self.P @ X) ** 2)) + float(np.sum(np.abs(self.A @ X.reshape(-1, order="F")) ** 2))
        val += float(np.real(np.vdot(self.L, X)))
        if tight:
            p2 = float(np.vdot(X, X).real)
            return val + self.k1 * p2 + self.k2 * p2 * p2 + self.offset_tight
        return val + self.offset_paper


def wstep_data(sc: ScaledBs, Xj: np.ndarray, v: np.ndarray, b: np.ndarray, q: np.ndarray, ups: np.ndarray,
               rho: float) -> WStepData:
    """Assemble (59) from the FP terms (33)/(34), the MM surrogates (51)-(58) with c = -q + rho*Upsilon, and (38)."""
    m, s = Xj.shape
    n = sc.num_served
    c = -q + rho * ups
    surs = [penalty_surrogate(sc.theta[i], c[i], Xj, sc.lam_hat[i]) for i in range(3)]
    P = np.abs(b)[:, None] * sc.h.conj().T
    A = np.concatenate([su.quad.reshape(2, -1, order="F").conj() for su in surs]) / math.sqrt(2.0 * rho)
    L_fp = np.zeros((m, s), dtype=np.complex128)
    L_fp[:, :n] = 2.0 * np.sqrt(sc.omega * (1.0 + v)) * b * sc.h
    L = -L_fp + sum(su.lin for su in surs) / (2.0 * rho)
    k1 = sum(su.lam for su in surs) / (2.0 * rho)
    k2 = sum(su.lam_hat for su in surs) / (2.0 * rho)
    const = sum(su.const for su in surs) / (2.0 * rho)
    gx = sc.g.conj() @ Xj  # [S]: g^H x_s
    g0 = 1.0 + float(np.sum(np.abs(gx) ** 2))
    G = 2.0 * np.outer(sc.g, gx) / g0
    return WStepData(P=P, A=A, L=L, G=G, g0=1.0 if np.any(sc.g) else 0.0, k1=float(k1), k2=float(k2),
                     offset_paper=const + k1 * 1.0 + k2 * 1.0, offset_tight=const)



class WStep:
    r"""(59) for one shape: minimise :math:`\|\mathbf P\mathbf X\|_F^2+\|\mathbf A\,\mathrm{vec}\mathbf X\|^2+\Re\langle\mathbf L,\mathbf X\rangle`
    (+ :math:`\kappa_1\|\mathbf X\|_F^2+\kappa_2\|\mathbf X\|_F^4` when ``tight``) s.t. :math:`\|\mathbf X\|_F\le1`,
    :math:`\Re\langle\mathbf G,\mathbf X\rangle\ge g_0` (the linearised (38)). DPP: compiled once, re-solved with new parameters.
    """

    def __init__(self, m: int, n: int, s: int, tight: bool):
        self.X = cp.Variable((m, s), complex=True)
        self.P = cp.Parameter((n, m), complex=True)
        self.A = cp.Parameter((6, m * s), complex=True)  # rows conj(vec A_m)
        self.Lc = cp.Parameter((m, s), complex=True)  # conj(L)
        self.Gc = cp.Parameter((m, s), complex=True)  # conj(G)
        self.g0 = cp.Parameter()
        obj = (cp.sum_squares(self.P @ self.X) + cp.sum_squares(self.A @ cp.vec(self.X, order="F"))
               + cp.real(cp.sum(cp.multiply(self.Lc, self.X))))
        self.tight = tight
        if tight:
            self.k1 = cp.Parameter(nonneg=True)
            self.k2 = cp.Parameter(nonneg=True)
            obj = obj + self.k1 * cp.sum_squares(self.X) + self.k2 * cp.square(cp.sum_squares(self.X))
        cons = [cp.norm(self.X, "fro") <= 1.0, cp.real(cp.sum(cp.multiply(self.Gc, self.X))) >= self.g0]
        self.problem = cp.Problem(cp.Minimize(obj), cons)

    def set(self, data: WStepData) -> None:
        self.P.value, self.A.value = data.P, data.A
        self.Lc.value, self.Gc.value, self.g0.value = data.L.conj(), data.G.conj(), data.g0
        if self.tight:
            self.k1.value, self.k2.value = data.k1, data.k2

    def solve(self, backend: str, eps: float, max_iters: int) -> tuple[np.ndarray | None, str, str]:
        """``(X, cvxpy status, message)``; X None on a solver failure."""
        if backend == "SCS":
            kw = {"solver": "SCS", "eps_abs": eps, "eps_rel": eps, "max_iters": int(max_iters)}
        else:
            kw = {"solver": "CLARABEL", "equilibrate_enable": False, "tol_gap_abs": eps, "tol_gap_rel": eps,
                  "tol_feas": eps, "max_iter": int(max_iters)}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.problem.solve(**kw)
        except (cp.error.SolverError, ValueError, ArithmeticError) as e:
            text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return None, "error", f"{backend} failed: {text}"
        status = self.problem.status
        X = self.X.value
        if status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or X is None or not np.all(np.isfinite(X)):
            return None, str(status), f"{backend}: {status}"
        return np.asarray(X, dtype=np.complex128), str(status), f"{backend}: {status}"


_CACHE = threading.local()


def _wstep(m: int, n: int, s: int, tight: bool) -> WStep:
    """The compiled (59) for this shape, one per thread (parameters are shared state)."""
    store = getattr(_CACHE, "store", None)
    if store is None:
        store = _CACHE.store = {}
    key = (m, n, s, tight)
    if key not in store:
        store[key] = WStep(m, n, s, tight)
    return store[key]


# --- the beamformer -------------------------------------------------------------------------------------


@register_beamformer
@dataclass
class AdmmBeamformer(Beamformer):
    """000's Algorithm 2 (FP + MM + ADMM) for one BS; see the module docstring."""

    name: ClassVar[str] = "admm"
    description: ClassVar[str] = ("000 Algorithm 2: FP (31)-(34), linearised radar SNR (38), CRB via C, q and the LMI (43d) "
                                  "in an augmented Lagrangian (44)-(46); MM QCQP (59) through CVXPY, rho <- 0.9 rho")

    max_iterations: int = 100
    """Outer iterations (dual update + rho decay each), N_iter of Algorithm 2 ([15]'s code: 100)."""
    tolerance: float = 1e-4
    """Stop when ``|R_j - R_{j-1}| <= tolerance * R_j`` at a feasible iterate, R = objective (30) ([15]'s code: 1e-4)."""
    inner_iterations: int = 1
    """BCD passes of Steps 1-3 per outer iteration (Algorithm 2 leaves it open; [15]'s code: 1)."""
    rho0: float = 1.0
    r"""Initial penalty relative to the data: :math:`\rho^{(0)}=\rho_0\sum_j\hat\lambda_j/(2|\phi_c(\mathbf X_0)|)`
    ([15]'s rule with :math:`\|\mathbf f\|^2` replaced by its bound under the budget; module docstring)."""
    rho_decay: float = 0.9
    """rho <- rho_decay * rho after every outer iteration (Algorithm 2 Step 5)."""
    surrogate: Surrogate = "paper"
    r"""``paper``: (54)/(56) bound :math:`\lambda\|\mathbf w\|^2`, :math:`\hat\lambda\|\mathbf w\|^4` by
    :math:`\lambda P_t`, :math:`\hat\lambda P_t^2` (a QCQP); ``tight``: keeps them (a majoriser that touches at every expansion point; an SOCP)."""
    backend: Backend = "SCS"
    """Conic solver of (59): SCS or CLARABEL (run without equilibration)."""
    eps: float | None = None
    """Conic solver tolerance; None: :data:`DEFAULT_EPS` of the backend."""
    max_solver_iters: int = 100_000
    """Iteration cap of the conic solver per (59)."""

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.surrogate not in SURROGATES:
            raise ValueError(f"surrogate must be one of {', '.join(SURROGATES)}, got {self.surrogate!r}")
        if not (isinstance(self.max_iterations, int) and self.max_iterations >= 1):
            raise ValueError(f"max_iterations must be an integer >= 1, got {self.max_iterations!r}")
        if not (isinstance(self.inner_iterations, int) and self.inner_iterations >= 1):
            raise ValueError(f"inner_iterations must be an integer >= 1, got {self.inner_iterations!r}")
        if not (self.tolerance >= 0):
            raise ValueError(f"tolerance must be >= 0, got {self.tolerance!r}")
        if not (self.rho0 > 0):
            raise ValueError(f"rho0 must be > 0, got {self.rho0!r}")
        if not (0 < self.rho_decay <= 1):
            raise ValueError(f"rho_decay must be in (0, 1], got {self.rho_decay!r}")
        if self.eps is not None and not (0 < self.eps < 1):
            raise ValueError(f"eps must be in (0, 1), got {self.eps!r}")
        if not (isinstance(self.max_solver_iters, int) and self.max_solver_iters >= 1):
            raise ValueError(f"max_solver_iters must be an integer >= 1, got {self.max_solver_iters!r}")

    # -- helpers --
    def _start(self, problem: BsProblem, W0) -> tuple[torch.Tensor | None, str]:
        if W0 is not None:
            W0 = problem._full(W0)
            if not problem.violations(W0):
                return W0, "W0"
        W = feasible_start(problem)
        return W, ("feasible_start (W0 infeasible)" if W0 is not None else "feasible_start")

    @staticmethod
    def lagrangian(sc: ScaledBs, X, v, b, q, ups, rho) -> float:
        """The objective of (44) (minimised) in scaled units: -Phi(X, v, b) + P_rho."""
        r = fim_values(sc.theta, X) - q + rho * ups
        return -fp_value(sc.h, sc.omega, X, v, b) + float(np.sum(np.abs(r) ** 2)) / (2.0 * rho)

    def _solve(self, problem: BsProblem, W0):
        eps = DEFAULT_EPS[self.backend] if self.eps is None else self.eps
        tight = self.surrogate == "tight"
        start, how = self._start(problem, W0)
        self._info.update({"start": how})
        if start is None:
            return (Status.INFEASIBLE, f"BS {problem.bs_index}: no feasible start point (feasible_start found no sensing beam "
                    "within P_t that meets (30a) and (30b) together)", None, [], 0)
        f0 = problem.objective(start)
        self._info["start_objective"] = f0
        if problem.num_served == 0:
            return (Status.CONVERGED, f"BS {problem.bs_index} serves no CU: (30) is 0 at every point; feasible start returned",
                    start, [], 0)
        sc = scale_problem(problem)
        m, n, s = sc.num_antennas, sc.num_served, sc.cols.size
        step = _wstep(m, n, s, tight)
        X = sc.from_full(start)
        # rho^(0): the penalty weight 1/(2 rho) is |comm part| / (rho0 * max |Q|^2 under the budget) at the start
        v, b = fp_auxiliaries(sc.h, sc.omega, X)
        phi_c = comm_part(sc.h, X, v, b, sc.omega)
        Q = fim_values(sc.theta, X)
        rho = self.rho0 * float(np.sum(sc.lam_hat)) / (2.0 * max(abs(phi_c), 1e-12))
        self._info["q_norm2_start"] = float(np.sum(np.abs(Q) ** 2))
        self._info["rho_initial"] = rho
        ups = np.zeros(3, dtype=np.complex128)
        q = Q.copy()
        best_W, best_f, best_j = start, f0, 0
        trace: list[dict[str, float]] = []
        f_prev = f0
        solver_time, inaccurate = 0.0, 0
        status, message = Status.MAX_ITERATIONS, ""
        for j in range(1, self.max_iterations + 1):
            worst_increase, L_ref = 0.0, 0.0
            for _ in range(self.inner_iterations):
                L_in = self.lagrangian(sc, X, v, b, q, ups, rho)
                # Step 1: v then b, (47) and (48)
                v, b = fp_auxiliaries(sc.h, sc.omega, X)
                L_vb = self.lagrangian(sc, X, v, b, q, ups, rho)
                # Step 2: (C, q) of (49), in closed form
                q = project_crb_set(fim_values(sc.theta, X) + rho * ups, sc.c_min)
                L_cq = self.lagrangian(sc, X, v, b, q, ups, rho)
                # Step 3: X from the MM QCQP (59)
                data = wstep_data(sc, X, v, b, q, ups, rho)
                step.set(data)
                t0 = time.perf_counter()
                Xn, cv_status, cv_msg = step.solve(self.backend, eps, self.max_solver_iters)
                solver_time += time.perf_counter() - t0
                if Xn is None:
                    self._info.update({"solver_time_s": solver_time, "inaccurate_solves": inaccurate,
                                       "best_iteration": best_j})
                    return (Status.NUMERICAL_ERROR, f"BS {problem.bs_index}: w-subproblem (59) at outer iteration {j}: "
                            f"{cv_msg}; best feasible iterate ({best_j}) returned", best_W, trace, j)
                inaccurate += cv_status == cp.OPTIMAL_INACCURATE
                nx = float(np.linalg.norm(Xn))
                if nx > 1.0:  # solver round-off on (30c)
                    Xn = Xn / nx
                X = Xn
                L_w = self.lagrangian(sc, X, v, b, q, ups, rho)
                L_ref = max(L_ref, abs(L_in), abs(L_vb), abs(L_cq), abs(L_w))
                worst_increase = max(worst_increase, L_vb - L_in, L_cq - L_vb, L_w - L_cq)
            # Step 4: dual update (60); Step 5: rho decay
            resid = fim_values(sc.theta, X) - q
            ups = ups + resid / rho
            W = torch.as_tensor(sc.to_full(X), dtype=COMPLEX)
            f = problem.objective(W)
            bad = problem.violations(W)
            trace.append({"objective": f, "rho": rho, "constraint_residual": float(np.max(np.abs(resid))),
                          "feasible": float(not bad), "crb_rad2": crb_from_fim(fim_values(sc.theta, X) * sc.scale),
                          "radar_snr": problem.radar_snr(W), "power_w": problem.power(W), "lagrangian": L_w,
                          "lagrangian_max_step_increase": worst_increase, "lagrangian_scale": L_ref})
            rho *= self.rho_decay
            if not bad and f > best_f:
                best_W, best_f, best_j = W, f, j
            # Step 7: stopping rule
            change = abs(f - f_prev)
            f_prev = f
            if not bad and change <= self.tolerance * max(abs(f), 1e-12):
                status = Status.CONVERGED
                message = (f"BS {problem.bs_index}: ADMM converged after {j} outer iterations (objective change "
                           f"{change:.2e} <= {self.tolerance:g} relative); best feasible iterate {best_j}")
                break
        else:
            j = self.max_iterations
            message = (f"BS {problem.bs_index}: ADMM stopped at max_iterations = {j} (last objective change "
                       f"{change:.2e}); best feasible iterate {best_j}")
        self._info.update({"solver_time_s": solver_time, "inaccurate_solves": inaccurate, "best_iteration": best_j,
                           "outer_iterations": j})
        return status, message, best_W, trace, j
