r"""SDR baseline and implicit projection module for ``beampattern-sinr`` (004, Zhao et al.).

Both are convex programs over the same lifted feasible set, written once in
:class:`_LiftedProgram`: a transmit covariance :math:`\hat{\mathbf R}` and one lifted user
covariance :math:`\hat{\mathbf C}_l\approx\mathbf c_l\mathbf c_l^H` per user (``M x M``
Hermitian), with (004 eqs. (11b)-(11e) without the rank-one constraint (11d), and (29b)-(29e))

.. math::

    \hat{\mathbf C}_l\succeq\mathbf 0,\quad
    \hat{\mathbf R}-\sum_l\hat{\mathbf C}_l\succeq\mathbf 0,\quad
    \mathrm{tr}\,\hat{\mathbf R}=P_0,\quad
    (1+\Gamma_0^{-1})\,\mathbf h_l^H\hat{\mathbf C}_l\mathbf h_l\ \ge\
    \mathbf h_l^H\hat{\mathbf R}\mathbf h_l+\sigma^2 .

The last line is the SINR constraint (9)-(10) rearranged (004 eq. (29e)):
:math:`\Gamma_l\ge\Gamma_0\iff\mathbf h_l^H\mathbf C_l\mathbf h_l\ge
\Gamma_0(\mathbf h_l^H(\mathbf R-\mathbf C_l)\mathbf h_l+\sigma^2)`.
:math:`\hat{\mathbf R}\succeq 0` (29b) is implied by the first two constraints and not
imposed separately.

**SDR (Benchmark 1 of 004, its ref. [33], Liu et al.)** -- :func:`solve_relaxation`:

.. math::

    \min_{\hat{\mathbf R},\{\hat{\mathbf C}_l\},\beta}\ \frac1N\sum_{n=1}^N
    \big(\beta\,b(\theta_n)-\mathbf a^H(\theta_n)\hat{\mathbf R}\,\mathbf a(\theta_n)\big)^2
    \quad\text{s.t. the lifted constraints above.}

:math:`\beta` is a free real variable; at the optimum it equals the least-squares
:math:`\beta^\star` the evaluator uses (:func:`isac.metrics.beampattern.optimal_beta`), so
the SDP value is the evaluator's MSE at :math:`\hat{\mathbf R}`.

**Projection (004 Sec. III-C, eq. (29))** -- :func:`project_feasible`: for a given point
:math:`(\mathbf C,\mathbf S)` with :math:`\mathbf C_l=\mathbf c_l\mathbf c_l^H` and
:math:`\mathbf R=\mathbf C\mathbf C^H+\mathbf S\mathbf S^H`,

.. math::

    \min\ \sum_l\|\hat{\mathbf C}_l-\mathbf C_l\|_F^2+\|\hat{\mathbf R}-\mathbf R\|_F^2
    \quad\text{s.t. the lifted constraints above.}

**Beam extraction (eqs. (30)-(31))** -- :func:`extract_beams`:
:math:`\tilde{\mathbf c}_l=\hat{\mathbf C}_l\mathbf h_l/\sqrt{\mathbf h_l^H\hat{\mathbf C}_l\mathbf h_l}`
keeps :math:`\mathbf h_l^H\tilde{\mathbf c}_l\tilde{\mathbf c}_l^H\mathbf h_l=
\mathbf h_l^H\hat{\mathbf C}_l\mathbf h_l` and :math:`\hat{\mathbf C}_l-\tilde{\mathbf c}_l
\tilde{\mathbf c}_l^H\succeq 0` (eq. (32)), and :math:`\tilde{\mathbf S}` is any factor of
:math:`\hat{\mathbf R}-\sum_l\tilde{\mathbf c}_l\tilde{\mathbf c}_l^H\succeq 0` (eq. (33)), so
:math:`\tilde{\mathbf C}\tilde{\mathbf C}^H+\tilde{\mathbf S}\tilde{\mathbf S}^H=\hat{\mathbf R}`:
the beampattern, the MSE and every SINR of the lifted point are kept exactly
(Proposition 1), i.e. **the relaxation is tight** for this problem.

Decisions where 004 leaves a choice or has a slip:

* (29) does not state :math:`\hat{\mathbf C}_l\succeq 0`, but Prop. 1's Cauchy-Schwarz step
  (32) needs it; we impose it (as in the SDR of ref. [33]).
* Eq. (31) says "Cholesky": a Cholesky factor does not exist for the (typically singular)
  residual, so :math:`\tilde{\mathbf S}=\mathbf V\boldsymbol\Lambda_+^{1/2}` from its
  eigen-decomposition, negative round-off eigenvalues clipped to 0.
* Finite solver accuracy: the conic solver meets :math:`\mathrm{tr}\hat{\mathbf R}=P_0` and
  (29e) only to its tolerance, and clipping adds a PSD round-off term to
  :math:`\hat{\mathbf R}`. :func:`extract_beams` therefore rescales
  :math:`(\tilde{\mathbf C},\tilde{\mathbf S})` to power exactly :math:`P_0` (eq. (11c)); a
  factor :math:`t=P_0/\mathrm{tr}` changes each SINR to
  :math:`t s/(t i+\sigma^2)`, i.e. by a relative :math:`O(|t-1|)` (downwards when
  :math:`t<1`). Both programs tighten :math:`\Gamma_0` to :math:`\Gamma_0(1+\text{sinr\_margin})`
  (default :data:`DEFAULT_SINR_MARGIN`) so these round-off effects never push a returned SINR
  below the evaluator's :math:`\Gamma_0(1-\text{SINR\_RTOL})`. The margin costs a relative
  :math:`O(\text{sinr\_margin})` in MSE. At high SNR (:math:`P_0\|\mathbf h_l\|^2/\sigma^2\sim500`
  in the preset) a PSD residual :math:`\epsilon` of the solver moves an SINR by a relative
  :math:`\sim500\,\epsilon`, more than the margin at SCS's 1e-8; so after extraction
  :func:`rebalance_for_sinr` (a tiny LP over the beams' power factors, directions fixed) restores
  any SINR that fell below :math:`\Gamma_0`, moving the least power. It is a no-op on most
  instances; the solver reports the power moved in ``Result.info["rebalanced_power_w"]``.
  Near the feasibility limit (all power needed by the users) it can fail; the evaluator then
  flags the point and the status becomes INFEASIBLE. The margin is 1e-5 since we measured
  that case with 1e-6: on `zhao-fixed-b` with N = 60 and N = 30 grid points (Table II), 5 of 12
  SDR points had S ~ 0, binding SINRs and a user ~3e-6 (relative) short of Gamma0; with 1e-5
  none did, and the mean MSE was unchanged to 5 digits.
* Numerical scaling (the preset has :math:`\|\mathbf h_l\|^2\sim10^{-8}` and
  :math:`\sigma^2=10^{-10}`): covariances are in units of :math:`P_0`, and each SINR
  constraint is divided by :math:`P_0\|\mathbf h_l\|^2`, i.e. written with the unit vector
  :math:`\mathbf u_l=\mathbf h_l/\|\mathbf h_l\|` and the noise term
  :math:`\sigma^2/(P_0\|\mathbf h_l\|^2)` -- exact rescalings, the solver sees O(1) numbers.

The CVXPY problems are parametrised (DPP) and compiled once per shape; later calls with the same
(M, L, N) only load new parameter values (no warm start: results do not depend on the call history). They are module state: not thread-safe.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

import cvxpy as cp
import numpy as np
import torch

import isac.metrics.problems.beampattern_sinr  # noqa: F401  (registers the evaluator finalize() needs)
from isac.scenario.instances.beampattern_sinr import PROBLEM as BEAMPATTERN_SINR
from isac.scenario.instances.beampattern_sinr import BeampatternSinrInstance
from isac.solvers.base import Solver, Status
from isac.solvers.registry import register_solver
from isac.solvers.zhao_projection import (DEFAULT_SINR_MARGIN, REBALANCE_TARGET_RTOL, extract_beams,  # noqa: F401
                                          rebalance_for_sinr, snr_bound_violation)
from isac.tensors import COMPLEX, as_complex

Backend = Literal["SCS", "CLARABEL"]
_BACKENDS = ("SCS", "CLARABEL")

DEFAULT_EPS = {"SCS": 1e-8, "CLARABEL": 1e-7}
"""Default conic-solver tolerance per backend (SCS ``eps_abs = eps_rel``; Clarabel gap and feasibility
tolerances). Clarabel without equilibration often stops at "almost solved" when asked for 1e-8."""
DEFAULT_MAX_ITERS = 100_000
"""Default iteration cap (SCS ADMM iterations; Clarabel interior-point iterations)."""

# --- real-coefficient forms of Hermitian quadratic forms ----------------------------------------


def quadratic_form_coefficients(U: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Real ``(A_re, A_im)`` ``[K, M*M]`` with :math:`\mathbf u_k^H\mathbf X\mathbf u_k = A_{re,k}\cdot\mathrm{vec}\Re\mathbf X + A_{im,k}\cdot\mathrm{vec}\Im\mathbf X`.

    Valid for Hermitian :math:`\mathbf X`: :math:`\mathbf u^H\mathbf X\mathbf u=\sum_{ij}\bar u_iu_jX_{ij}`
    and its imaginary part vanishes. ``vec`` is row-major.

    Args:
        U: ``[K, M]`` complex (numpy), row k is :math:`\mathbf u_k` (e.g. steering rows
            :math:`\mathbf a(\theta_n)^T` or channels :math:`\mathbf h_l^T`).
    """
    outer = U.conj()[:, :, None] * U[:, None, :]  # [K, M, M], (i, j) = conj(u_i) u_j
    k = U.shape[0]
    return np.ascontiguousarray(outer.real.reshape(k, -1)), np.ascontiguousarray(-outer.imag.reshape(k, -1))


def _real_parts(X: cp.Expression) -> cp.Expression:
    """``[vec Re X, vec Im X]`` (row-major), length 2 M^2."""
    return cp.hstack([cp.vec(cp.real(X), order="C"), cp.vec(cp.imag(X), order="C")])


class _LiftedProgram:
    r"""Variables and constraints of the lifted feasible set (module docstring), in units of P0.

    Parameters (set by :meth:`load_instance`): ``signal [L, 2M^2]`` = :math:`(1+1/\Gamma)` times
    the coefficients of :math:`\mathbf u_l^H\mathbf X\mathbf u_l`, ``total [L, 2M^2]`` those
    coefficients, ``noise [L]`` = :math:`\sigma^2/(P_0\|\mathbf h_l\|^2)`.
    """

    def __init__(self, num_antennas: int, num_users: int):
        m, k = num_antennas, num_users
        self.shape = (m, k)
        self.R = cp.Variable((m, m), hermitian=True)
        self.C = [cp.Variable((m, m), hermitian=True) for _ in range(k)]
        self.signal = cp.Parameter((k, 2 * m * m))
        self.total = cp.Parameter((k, 2 * m * m))
        self.noise = cp.Parameter(k, nonneg=True)
        r_parts = _real_parts(self.R)
        self.constraints: list[cp.Constraint] = [Cl >> 0 for Cl in self.C]
        self.constraints.append(self.R - cp.sum(self.C) >> 0 if k > 1 else self.R - self.C[0] >> 0)
        self.constraints.append(cp.real(cp.trace(self.R)) == 1.0)
        for j, Cl in enumerate(self.C):
            self.constraints.append(self.signal[j] @ _real_parts(Cl) >= self.total[j] @ r_parts + self.noise[j])

    def load_instance(self, inst: BeampatternSinrInstance, sinr_margin: float) -> None:
        H = inst.H.numpy()  # [M, L]
        norms2 = np.sum(np.abs(H) ** 2, axis=0)
        U = (H / np.sqrt(norms2)).T  # [L, M] unit rows
        a_re, a_im = quadratic_form_coefficients(U)
        coeff = np.concatenate([a_re, a_im], axis=1)
        gamma = inst.sinr_target * (1.0 + sinr_margin)
        self.total.value = coeff
        self.signal.value = (1.0 + 1.0 / gamma) * coeff
        self.noise.value = inst.noise_w / (inst.power_w * norms2)

    def covariances(self, power_w: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``R_hat [M, M]``, ``C_hats [L, M, M]`` complex128 in watts (Hermitian parts of the solver's values)."""
        R = _herm(self.R.value) * power_w
        Cs = np.stack([_herm(Cl.value) for Cl in self.C]) * power_w
        return torch.as_tensor(R, dtype=COMPLEX), torch.as_tensor(Cs, dtype=COMPLEX)


def _herm(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.complex128)
    return 0.5 * (X + X.conj().T)


class _RelaxationProgram(_LiftedProgram):
    """The SDR of (11): ``min ||F z||^2``, ``z = [beta, vec Re R, vec Im R]`` (units of P0)."""

    def __init__(self, num_antennas: int, num_users: int, rows: int):
        super().__init__(num_antennas, num_users)
        self.beta = cp.Variable()
        self.F = cp.Parameter((rows, 1 + 2 * num_antennas**2))
        z = cp.hstack([cp.reshape(self.beta, (1,), order="C"), _real_parts(self.R)])
        self.problem = cp.Problem(cp.Minimize(cp.sum_squares(self.F @ z)), self.constraints)


class _ProjectionProgram(_LiftedProgram):
    r"""Problem (29): ``min sqrt(sum_l ||w C_l - T_l||^2 + ||w R - T_R||^2)`` with targets ``T = X0 / s``, ``w = 1/s``.

    Dividing the distance by a constant ``s`` >= 1 (the input's power in units of P0, at least 1)
    leaves the minimiser unchanged and keeps the solver's data O(1) for inputs of huge power.
    """

    def __init__(self, num_antennas: int, num_users: int):
        super().__init__(num_antennas, num_users)
        m = num_antennas
        self.weight = cp.Parameter(nonneg=True)
        self.targets_re = [cp.Parameter((m, m)) for _ in range(num_users + 1)]
        self.targets_im = [cp.Parameter((m, m)) for _ in range(num_users + 1)]
        parts = []
        for X, t_re, t_im in zip([*self.C, self.R], self.targets_re, self.targets_im):
            parts.append(cp.vec(self.weight * cp.real(X) - t_re, order="C"))
            parts.append(cp.vec(self.weight * cp.imag(X) - t_im, order="C"))
        # The distance itself (a second-order cone), not its square: same minimiser, but a
        # solver tolerance eps then bounds the distance error by ~eps instead of ~sqrt(eps).
        self.problem = cp.Problem(cp.Minimize(cp.norm(cp.hstack(parts), 2)), self.constraints)


_CACHE: dict[tuple, _LiftedProgram] = {}


def _relaxation_program(m: int, k: int, rows: int) -> _RelaxationProgram:
    key = ("sdr", m, k, rows)
    if key not in _CACHE:
        _CACHE[key] = _RelaxationProgram(m, k, rows)
    return _CACHE[key]  # type: ignore[return-value]


def _projection_program(m: int, k: int) -> _ProjectionProgram:
    key = ("projection", m, k)
    if key not in _CACHE:
        _CACHE[key] = _ProjectionProgram(m, k)
    return _CACHE[key]  # type: ignore[return-value]


def mse_matrix(inst: BeampatternSinrInstance) -> np.ndarray:
    r"""Real ``F [N, 1 + 2M^2]`` with :math:`\frac1N\sum_n(\beta b_n-\mathbf a_n^H\mathbf R\mathbf a_n)^2=\|\mathbf F\mathbf z\|^2`.

    :math:`\mathbf z=[\beta,\mathrm{vec}\Re\mathbf R,\mathrm{vec}\Im\mathbf R]` (row-major, any unit
    shared by :math:`\beta` and R); row n is :math:`[b_n,-A_{re,n},-A_{im,n}]/\sqrt N` with the
    steering coefficients of :func:`quadratic_form_coefficients` (004 eqs. (6)-(7)).
    """
    b = inst.desired.numpy()
    a_re, a_im = quadratic_form_coefficients(inst.steering.numpy())
    return np.concatenate([b[:, None], -a_re, -a_im], axis=1) / math.sqrt(b.shape[0])


# --- solving ---------------------------------------------------------------------------------------


def _solve_kwargs(backend: str, eps: float, max_iters: int) -> dict[str, Any]:
    """Keyword arguments of ``Problem.solve`` for ``backend``."""
    if backend == "SCS":
        return {"solver": "SCS", "eps_abs": eps, "eps_rel": eps, "max_iters": int(max_iters), "warm_start": False}
    if backend == "CLARABEL":
        return {"solver": "CLARABEL", "warm_start": False, "equilibrate_enable": False, "tol_gap_abs": eps, "tol_gap_rel": eps,
                "tol_feas": eps, "max_iter": int(max_iters)}
    raise ValueError(f"backend must be one of {', '.join(_BACKENDS)}, got {backend!r}")


def _run(problem: cp.Problem, backend: str, eps: float | None, max_iters: int) -> tuple[Status, str]:
    """Solve; map the CVXPY status to (Status, one-line message). CONVERGED only for ``optimal``."""
    eps = DEFAULT_EPS[backend] if eps is None else eps
    kwargs = _solve_kwargs(backend, eps, max_iters)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "solution may be inaccurate": reported via status
            problem.solve(**kwargs)
    except (cp.error.SolverError, ValueError, ArithmeticError) as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return Status.NUMERICAL_ERROR, f"{backend} failed: {text}"
    status = problem.status
    if status == cp.OPTIMAL:
        return Status.CONVERGED, f"{backend}: optimal"
    if status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
        return Status.INFEASIBLE, f"{backend}: {status}"
    if status == cp.OPTIMAL_INACCURATE:
        return Status.NUMERICAL_ERROR, f"{backend}: optimal_inaccurate (tolerance {eps:g} not reached in {max_iters} iterations)"
    return Status.NUMERICAL_ERROR, f"{backend}: {status}"


def _check_options(backend: str, eps: float | None, max_iters: int, sinr_margin: float) -> None:
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(_BACKENDS)}, got {backend!r}")
    if eps is not None and not (isinstance(eps, (int, float)) and 0 < eps < 1):
        raise ValueError(f"eps must be in (0, 1), got {eps!r}")
    if not (isinstance(max_iters, int) and max_iters >= 1):
        raise ValueError(f"max_iters must be an integer >= 1, got {max_iters!r}")
    if not (isinstance(sinr_margin, (int, float)) and 0 <= sinr_margin < 1):
        raise ValueError(f"sinr_margin must be in [0, 1), got {sinr_margin!r}")


def _infeasible_message(inst: BeampatternSinrInstance, backend: str) -> str:
    return (f"Gamma0 = {inst.sinr_db:g} dB cannot be met by all {inst.num_users} users with "
            f"P0 = {inst.power_w:g} W ({backend} certified the lifted problem infeasible)")


class Relaxation(NamedTuple):
    """Outcome of :func:`solve_relaxation`.

    Attributes:
        R: ``[M, M]`` complex128 :math:`\\hat{\\mathbf R}` (watts); None when the solver gave no point.
        C: ``[L, M, M]`` complex128 :math:`\\hat{\\mathbf C}_l` (watts); None likewise.
        status: CONVERGED (solver optimal), INFEASIBLE or NUMERICAL_ERROR.
        message: one line.
        objective: the SDP's optimal value (MSE, W^2), NaN when there is no point.
    """

    R: torch.Tensor | None
    C: torch.Tensor | None
    status: Status
    message: str
    objective: float


def solve_relaxation(
    inst: BeampatternSinrInstance,
    *,
    backend: Backend = "SCS",
    eps: float | None = None,
    max_iters: int = DEFAULT_MAX_ITERS,
    sinr_margin: float = DEFAULT_SINR_MARGIN,
) -> Relaxation:
    r"""The SDR of 004 problem (11) (Benchmark 1, ref. [33]); see the module docstring.

    Args:
        inst: the instance.
        backend: ``"SCS"`` or ``"CLARABEL"`` (the latter with ``equilibrate_enable=False``).
        eps: solver tolerance (None: :data:`DEFAULT_EPS` of the backend). max_iters: solver iteration cap.
        sinr_margin: :math:`\Gamma_0` is tightened to :math:`\Gamma_0(1+\text{sinr\_margin})`.
    Returns:
        :class:`Relaxation` (``R [M, M]``, ``C [L, M, M]`` complex128 in watts, status, message, objective in W^2).
        The point is returned whenever the solver produced one (also when inaccurate).
    """
    _check_options(backend, eps, max_iters, sinr_margin)
    reason = snr_bound_violation(inst)
    if reason is not None:
        return Relaxation(None, None, Status.INFEASIBLE, reason, math.nan)
    F = mse_matrix(inst)
    prog = _relaxation_program(inst.num_antennas, inst.num_users, F.shape[0])
    prog.load_instance(inst, sinr_margin)
    prog.F.value = F
    status, message = _run(prog.problem, backend, eps, max_iters)
    if status == Status.INFEASIBLE:
        return Relaxation(None, None, status, _infeasible_message(inst, backend), math.nan)
    if prog.R.value is None or any(Cl.value is None for Cl in prog.C):
        return Relaxation(None, None, status, message, math.nan)
    R, Cs = prog.covariances(inst.power_w)
    value = prog.problem.value
    objective = float(value) * inst.power_w**2 if value is not None and np.isfinite(value) else math.nan
    return Relaxation(R, Cs, status, message, objective)


def project_feasible(
    inst: BeampatternSinrInstance,
    C: torch.Tensor,
    S: torch.Tensor,
    *,
    backend: Backend = "CLARABEL",
    eps: float | None = None,
    max_iters: int = DEFAULT_MAX_ITERS,
    sinr_margin: float = DEFAULT_SINR_MARGIN,
) -> tuple[torch.Tensor, torch.Tensor, Status, str]:
    r"""The implicit projection module of 004 Sec. III-C: problem (29), then eqs. (30)-(31).

    Finds the lifted point nearest (Frobenius, eq. (29a)) to
    :math:`(\{\mathbf c_l\mathbf c_l^H\},\mathbf C\mathbf C^H+\mathbf S\mathbf S^H)` in the lifted
    feasible set and extracts beams from it with :func:`extract_beams`. By Proposition 1 the
    output meets tr R = P0 and every SINR >= Gamma0 (to the solver's tolerance, covered by
    ``sinr_margin``). Any input of the right shape is accepted (zero or huge power included;
    the distance is divided by a constant for conditioning, which does not move the minimiser).
    The program is compiled once per (M, L) and reused.

    Args:
        inst: the instance.
        C: ``[M, L]`` complex128 user beams; S: ``[M, Ns]`` complex128 sensing beams (any Ns).
        backend: ``"CLARABEL"`` (default) or ``"SCS"``. Clarabel (interior point) is the default
            here because SCS (first order) needs thousands of iterations, seconds, when the input
            is already (nearly) feasible -- a degenerate projection -- and can stop short of 1e-8
            accuracy; Clarabel takes ~10 iterations on every input we tried.
        eps, max_iters, sinr_margin: as :func:`solve_relaxation`.
    Returns:
        ``(C_tilde [M, L], S_tilde [M, M], status, message)``. status is CONVERGED when the solver
        reports optimal, INFEASIBLE when no feasible point exists (Gamma0 too high), NUMERICAL_ERROR
        otherwise (non-finite input, solver failure or inaccurate solve). Without a solver point the
        input ``(C, S)`` is returned unchanged (S zero-padded/truncated to ``[M, M]`` only if its
        shape allows; otherwise as given).
    """
    _check_options(backend, eps, max_iters, sinr_margin)
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
    Cn = (C / math.sqrt(p0)).numpy()
    Sn = (S / math.sqrt(p0)).numpy()
    Cl = np.einsum("il,jl->lij", Cn, Cn.conj())  # [L, M, M], c_l c_l^H / P0
    R0 = Cl.sum(0) + Sn @ Sn.conj().T
    scale = max(1.0, float(np.real(np.trace(R0))))
    prog = _projection_program(m, k)
    prog.load_instance(inst, sinr_margin)
    prog.weight.value = 1.0 / scale
    for X, t_re, t_im in zip([*Cl, R0], prog.targets_re, prog.targets_im):
        t_re.value = np.ascontiguousarray(X.real) / scale
        t_im.value = np.ascontiguousarray(X.imag) / scale
    status, message = _run(prog.problem, backend, eps, max_iters)
    if status == Status.INFEASIBLE:
        return C, S, status, _infeasible_message(inst, backend)
    if prog.R.value is None or any(X.value is None for X in prog.C):
        return C, S, status, message
    R_hat, C_hats = prog.covariances(p0)
    C_t, S_t = extract_beams(inst, R_hat, C_hats)
    C_t, S_t, moved = rebalance_for_sinr(inst, C_t, S_t)
    if moved > 0:
        message += f"; {moved:.3g} W moved between beams to meet Gamma0 (solver accuracy)"
    if status == Status.NUMERICAL_ERROR:
        # The conic solver stopped short of its tolerance ("optimal_inaccurate"), but the
        # projection's job is feasibility, which the metrics package can confirm directly:
        # a feasible point is a valid projection output, just not exactly the nearest one.
        from isac.metrics.evaluate import evaluate

        if evaluate(inst, {"C": C_t, "S": S_t})["feasible"]:
            status = Status.CONVERGED
            message += "; the point meets every constraint (checked), though not provably the nearest"
    return C_t, S_t, status, message


# --- the solver ------------------------------------------------------------------------------------


@register_solver
@dataclass
class ZhaoSdr(Solver):
    """SDR of 004 problem (11) (Benchmark 1, ref. [33]) with the rank-one extraction of eqs. (30)-(31).

    See the module docstring. The extracted (C, S) reproduce the SDP's covariance, so the
    reported MSE is the relaxation's optimum (the relaxation is tight).
    """

    backend: Backend = "SCS"
    """Conic solver: "SCS" or "CLARABEL" (with ``equilibrate_enable=False``)."""
    eps: float | None = None
    """Solver tolerance (SCS eps_abs = eps_rel; Clarabel gap and feasibility tolerances); None: :data:`DEFAULT_EPS` of the backend."""
    max_iters: int = DEFAULT_MAX_ITERS
    """Solver iteration cap (SCS: ADMM iterations; Clarabel: interior-point iterations)."""
    sinr_margin: float = DEFAULT_SINR_MARGIN
    """Relative tightening of Gamma0 inside the SDP, covering the solver's tolerance."""

    name: ClassVar[str] = "sdr"
    problems: ClassVar[tuple[str, ...]] = (BEAMPATTERN_SINR,)
    description: ClassVar[str] = ("SDR of the beampattern-MSE problem (004 Benchmark 1, ref. [33] Liu et al.) "
                                  "+ rank-one beam extraction of 004 eqs. (30)-(31) (tight)")

    def __post_init__(self) -> None:
        _check_options(self.backend, self.eps, self.max_iters, self.sinr_margin)

    def _solve(self, inst: BeampatternSinrInstance):
        t0 = time.perf_counter()
        rel = solve_relaxation(inst, backend=self.backend, eps=self.eps, max_iters=self.max_iters,
                               sinr_margin=self.sinr_margin)
        self.record(timings={"sdp_s": time.perf_counter() - t0})
        if rel.R is None or rel.C is None:
            return rel.status, rel.message, {}, [], 1
        t1 = time.perf_counter()
        C, S = extract_beams(inst, rel.R, rel.C)
        C, S, moved = rebalance_for_sinr(inst, C, S)
        self.record(timings={"extraction_s": time.perf_counter() - t1}, info={"rebalanced_power_w": moved})
        message = rel.message
        if moved > 0:
            message += f"; {moved:.3g} W moved between beams to meet Gamma0 (solver accuracy)"
        trace = [{"sdp_objective": rel.objective}]
        return rel.status, message, {"C": C, "S": S}, trace, 1
