r"""Per-BS transmit beamforming of ``multibs-association`` (000, problem (P3.k), eq. (30)).

For a fixed association, (P3) splits into one problem per BS (000 Sec. V-B). BS :math:`k` with
beams :math:`\mathbf W_k=[\mathbf w_{k,1},\dots,\mathbf w_{k,N},\mathbf W_k^r]` (``[M, N+Ns]``)
and served set :math:`\mathcal S_k` of size :math:`n_k` solves

.. math::

    \max_{\mathbf W_k}\ \sum_{i\in\mathcal S_k}\frac1{n_k}\log_2(1+\gamma_{k,i})
    \quad\text{s.t.}\quad \Gamma_k\ge\Gamma_t\ (30a),\quad \mathrm{CRB}(\phi_k)\le\epsilon\ (30b),
    \quad \|\mathbf W_k\|_F^2\le P_t\ (30c),

with :math:`\gamma_{k,i}` of eq. (8) (every column of :math:`\mathbf W_k` interferes), the radar
SNR of eq. (18) and the DoA CRB of eq. (22), all from the metrics package. Columns of CUs that
BS k does not serve are zero ("beams of users a BS does not serve get zero weight", Sec. V-A);
every beamformer here returns them as zeros.

The contract: :class:`BsProblem` holds one BS's data (built from an instance and an association
by :meth:`BsProblem.from_instance`); a beamformer is a dataclass of typed options, registered with
:func:`register_beamformer`, with ``solve(problem, W0=None) -> BeamformerResult``. Metrics and
feasibility of a returned point are computed by :mod:`isac.metrics` (never by the beamformer's own
bookkeeping), and a point that violates a constraint is never CONVERGED.

Sensing facts used by the beamformers (checked in ``tests/test_li_beamforming.py``):

* (30a) is :math:`\|\mathbf a_d^H\mathbf W\|^2\ge q_d`, :math:`q_d=\Gamma_t M\sigma_r^2/(\sigma_t^2\rho_d)`
  (:mod:`isac.metrics.radar`), a convex quadratic in W bounded from below;
* with :math:`\mathbf r=\mathbf a^H\mathbf W` and the derivative direction
  :math:`\dot{\mathbf a}_\perp=(\mathbf I-\mathbf a\mathbf a^H/M)\dot{\mathbf a}`, the Schur complement of
  the FIM of :mod:`isac.metrics.bounds.li` is
  :math:`1/\mathrm{CRB}=\kappa\big(\|\dot{\mathbf a}_\perp\|^2\|\mathbf r\|^2+M\,\|\mathbf s_\perp\|^2\big)`,
  :math:`\kappa=2L|\alpha_t|^2\rho/(M^2\sigma_r^2)`, where :math:`\mathbf s_\perp\ge0` is the part of
  :math:`(\dot{\mathbf a}+\frac{\mathbf a^H\dot{\mathbf a}}{M}\mathbf a)^H\mathbf W` orthogonal to
  :math:`\mathbf r`. Hence :math:`\mathrm{CRB}\le1/(\kappa\|\dot{\mathbf a}_\perp\|^2\,\mathbf a_e^H\mathbf R\mathbf a_e)`
  with equality for rank-one beams, and (30b) is *implied* by the linear-in-R condition
  :math:`\|\mathbf a_e^H\mathbf W\|^2\ge q_e=1/(\epsilon\kappa\|\dot{\mathbf a}_\perp\|^2)`
  (:attr:`BsProblem.crb_beam_power_min`): an inner approximation, exact for rank-one sensing;
* the largest :math:`\|\mathbf a^H\mathbf W\|^2` under (30c) is :math:`MP_t` (all power along
  :math:`\mathbf a`), so (30a) alone is reachable iff :math:`q_d\le MP_t`, and (30b) alone iff
  :math:`q_e\le MP_t` (the bound above is tight at that beam).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from isac.metrics.bounds.li import li_doa_crb, li_fim
from isac.metrics.comm import sinr as comm_sinr
from isac.metrics.evaluate import POWER_RTOL, SINR_RTOL
from isac.metrics.radar import radar_snr
from isac.scenario.arrays import ULA
from isac.scenario.instances.multibs_association import MultibsAssociationInstance
from isac.solvers.base import OptionError, Status, _parse_option
from isac.tensors import COMPLEX

SENSING_MARGIN = 1e-6
"""Relative tightening of the two sensing targets inside the beamformers, so that round-off never
puts a returned point below the evaluator's tolerance (:data:`isac.metrics.evaluate.SINR_RTOL`)."""


@dataclass(frozen=True)
class BsProblem:
    r"""(P3.k) for one BS: its channels, served CUs, targets and budget.

    Attributes:
        H: ``[M, N]`` complex128 channels of every CU from this BS (column i is :math:`\mathbf h_{k,i}`).
        served: ``[N]`` bool, CUs this BS serves (:math:`u_{k,i}=1`).
        num_sensing_streams: Ns (radar columns after the N CU columns).
        array: the BS ULA (000 eq. (5)).
        p_max_w: :math:`P_t` (W). noise_comm_w: :math:`\sigma_i^2` (W). noise_radar_w: :math:`\sigma_r^2` (W).
        snr_min: :math:`\Gamma_t` (linear). crb_max_rad2: :math:`\epsilon` (rad^2).
        rcs_variance: :math:`\sigma_t^2`. snapshots: L.
        det_angle_rad, det_echo_power_gain: detection target DoA and round-trip power gain :math:`\rho_d`.
        est_angle_rad, est_echo_power_gain, est_rcs: estimation target DoA, :math:`\rho_e`, :math:`\alpha_t`.
        bs_index: k (for messages).
    """

    H: torch.Tensor
    served: torch.Tensor
    num_sensing_streams: int
    array: ULA
    p_max_w: float
    noise_comm_w: float
    noise_radar_w: float
    snr_min: float
    crb_max_rad2: float
    rcs_variance: float
    snapshots: int
    det_angle_rad: float
    det_echo_power_gain: float
    est_angle_rad: float
    est_echo_power_gain: float
    est_rcs: complex
    bs_index: int = 0

    @classmethod
    def from_instance(cls, inst: MultibsAssociationInstance, k: int, association) -> BsProblem:
        """BS ``k``'s problem; ``association`` is ``[K, N]`` 0/1 or ``[N]`` BS index per CU."""
        u = torch.as_tensor(np.asarray(association))
        served = (u[k] == 1) if u.ndim == 2 else (u == k)
        return cls(
            H=inst.H[k], served=served.to(torch.bool), num_sensing_streams=inst.num_sensing_streams,
            array=inst.array, p_max_w=float(inst.p_max_w[k]), noise_comm_w=inst.noise_comm_w,
            noise_radar_w=inst.noise_radar_w, snr_min=inst.snr_min, crb_max_rad2=float(inst.crb_max_rad2),
            rcs_variance=float(inst.rcs_variance), snapshots=int(inst.snapshots),
            det_angle_rad=float(inst.det_angle_rad[k]), det_echo_power_gain=float(inst.det_echo_power_gain[k]),
            est_angle_rad=float(inst.est_angle_rad[k]), est_echo_power_gain=float(inst.est_echo_power_gain[k]),
            est_rcs=complex(inst.est_rcs[k]), bs_index=int(k),
        )

    # --- sizes -------------------------------------------------------------------------------
    @property
    def num_antennas(self) -> int:
        return int(self.H.shape[0])

    @property
    def num_users(self) -> int:
        return int(self.H.shape[1])

    @property
    def num_streams(self) -> int:
        return self.num_users + self.num_sensing_streams

    @property
    def num_served(self) -> int:
        return int(self.served.sum())

    @property
    def served_index(self) -> np.ndarray:
        return np.flatnonzero(self.served.numpy())

    # --- geometry ------------------------------------------------------------------------------
    @property
    def a_det(self) -> torch.Tensor:
        """Steering vector ``[M]`` of the detection target (unnormalised, norm sqrt(M))."""
        return self.array.steering(torch.tensor(self.det_angle_rad, dtype=torch.float64))

    @property
    def a_est(self) -> torch.Tensor:
        """Steering vector ``[M]`` of the estimation target."""
        return self.array.steering(torch.tensor(self.est_angle_rad, dtype=torch.float64))

    @property
    def snr_beam_power_min(self) -> float:
        r""":math:`q_d`: (30a) holds iff :math:`\|\mathbf a_d^H\mathbf W\|^2\ge q_d`."""
        return self.snr_min * self.num_antennas * self.noise_radar_w / (self.rcs_variance * self.det_echo_power_gain)

    @property
    def crb_beam_power_min(self) -> float:
        r""":math:`q_e`: :math:`\|\mathbf a_e^H\mathbf W\|^2\ge q_e` implies (30b) (module docstring)."""
        m = self.num_antennas
        a, da = self.array.steering_and_derivative(torch.tensor(self.est_angle_rad, dtype=torch.float64))
        da_perp = da - a * (a.conj() @ da) / m
        kappa = 2.0 * self.snapshots * abs(self.est_rcs) ** 2 * self.est_echo_power_gain / (m**2 * self.noise_radar_w)
        return 1.0 / (self.crb_max_rad2 * kappa * float((da_perp.abs() ** 2).sum()))

    def fim_weights(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r""":math:`(\boldsymbol\Theta_1,\boldsymbol\Theta_2,\boldsymbol\Theta_3)` of 000 eqs. (67)-(70), ``[M, M]`` complex.

        With :math:`\mathbf R=\mathbf W\mathbf W^H` and :math:`t_j=\mathrm{tr}(\boldsymbol\Theta_j\mathbf R)`, the FIM of
        :func:`isac.metrics.bounds.li.li_fim` is
        :math:`\begin{bmatrix}t_1&\Re t_2&-\Im t_2\\\cdot&t_3&0\\\cdot&0&t_3\end{bmatrix}`, so
        :math:`1/\mathrm{CRB}=t_1-|t_2|^2/t_3` (checked against the engine in the tests).
        """
        m = self.num_antennas
        a, da = self.array.steering_and_derivative(torch.tensor(self.est_angle_rad, dtype=torch.float64))
        a, da = a.numpy(), da.numpy()
        c = math.sqrt(self.est_echo_power_gain) / m
        G = c * np.outer(a, a.conj())
        dG = c * (np.outer(da, a.conj()) + np.outer(a, da.conj()))
        s = 2.0 * self.snapshots / self.noise_radar_w
        alpha = self.est_rcs
        theta1 = s * abs(alpha) ** 2 * dG.conj().T @ dG
        theta2 = s * np.conj(alpha) * dG.conj().T @ G
        theta3 = s * G.conj().T @ G
        return theta1, theta2, theta3

    # --- metrics (all through the metrics package) ------------------------------------------------
    def _full(self, W) -> torch.Tensor:
        W = torch.as_tensor(W)
        if W.dtype != COMPLEX:
            W = W.to(COMPLEX)
        if tuple(W.shape) != (self.num_antennas, self.num_streams):
            raise ValueError(f"W: expected shape ({self.num_antennas}, {self.num_streams}), got {tuple(W.shape)}")
        return W

    def sinr(self, W) -> torch.Tensor:
        """Eq. (8) for every CU ``[N]`` (linear)."""
        return comm_sinr(self.H, self._full(W), self.noise_comm_w)

    def objective(self, W) -> float:
        """(30): mean of :math:`\\log_2(1+\\gamma_{k,i})` over the served CUs (bit/s/Hz, B = 1)."""
        n = self.num_served
        if n == 0:
            return 0.0
        g = self.sinr(W)[self.served]
        return float(torch.log2(1.0 + g).sum()) / n

    def power(self, W) -> float:
        W = self._full(W)
        return float((W.real**2 + W.imag**2).sum())

    def radar_snr(self, W) -> float:
        """Eq. (18), linear."""
        return float(radar_snr(self.a_det, self._full(W), echo_power_gain=self.det_echo_power_gain,
                               rcs_variance=self.rcs_variance, noise_power_w=self.noise_radar_w))

    def crb(self, W) -> float:
        """Eq. (22) in rad^2 (+inf where the FIM is singular)."""
        return float(li_doa_crb(self.array, torch.tensor(self.est_angle_rad, dtype=torch.float64),
                                torch.tensor(self.est_rcs, dtype=COMPLEX),
                                torch.tensor(self.est_echo_power_gain, dtype=torch.float64),
                                self._full(W), self.snapshots, self.noise_radar_w))

    def fim(self, W) -> torch.Tensor:
        return li_fim(self.array, torch.tensor(self.est_angle_rad, dtype=torch.float64),
                      torch.tensor(self.est_rcs, dtype=COMPLEX),
                      torch.tensor(self.est_echo_power_gain, dtype=torch.float64),
                      self._full(W), self.snapshots, self.noise_radar_w)

    def violations(self, W) -> list[str]:
        """Constraints (30a)-(30c) and the zero-column rule that ``W`` violates, with the evaluator's tolerances."""
        W = self._full(W)
        out = []
        if not bool(torch.isfinite(torch.view_as_real(W)).all()):
            return ["W has NaN/Inf entries"]
        p = self.power(W)
        if p > self.p_max_w * (1 + POWER_RTOL):
            out.append(f"power {p:.6g} W > P_t = {self.p_max_w:.6g} W (30c)")
        snr = self.radar_snr(W)
        if snr < self.snr_min * (1 - SINR_RTOL):
            out.append(f"radar SNR {10 * math.log10(max(snr, 1e-300)):.4f} dB < Gamma_t (30a)")
        crb = self.crb(W)
        if not crb <= self.crb_max_rad2 * (1 + SINR_RTOL):
            out.append(f"CRB {crb:.4g} rad^2 > epsilon = {self.crb_max_rad2:.4g} (30b)")
        unserved = ~self.served
        if bool(unserved.any()) and float(W[:, : self.num_users][:, unserved].abs().max()) > 0:
            out.append("beams of CUs this BS does not serve must be zero")
        return out

    def is_feasible(self, W) -> bool:
        return not self.violations(W)

    # --- reachability of the sensing constraints ----------------------------------------------------
    def sensing_unreachable(self) -> str | None:
        """A one-line reason if (30a) or (30b) cannot hold under (30c) whatever the beams, else None.

        Exact for each constraint alone (module docstring); the joint case is left to the beamformers.
        """
        reach = self.num_antennas * self.p_max_w
        qd, qe = self.snr_beam_power_min, self.crb_beam_power_min
        if qd > reach * (1 + 1e-12):
            best = 10 * math.log10(self.snr_min * reach / qd)
            return (f"BS {self.bs_index}: radar SNR target Gamma_t = {10 * math.log10(self.snr_min):.2f} dB is unreachable "
                    f"with P_t = {self.p_max_w:.4g} W (at most {best:.2f} dB) (27a)")
        if qe > reach * (1 + 1e-12):
            return (f"BS {self.bs_index}: DoA CRB target epsilon = {self.crb_max_rad2:.4g} rad^2 is unreachable with "
                    f"P_t = {self.p_max_w:.4g} W (at least {self.crb_max_rad2 * qe / reach:.4g} rad^2) (27b)")
        return None


@dataclass
class BeamformerResult:
    """Outcome of one per-BS solve. ``W [M, N+Ns]`` complex128 (zero columns for unserved CUs)."""

    W: torch.Tensor | None
    status: Status
    message: str
    objective: float = float("nan")
    """(30) at ``W`` (bit/s/Hz, B = 1), from :meth:`BsProblem.objective`."""
    iterations: int = 0
    trace: list[dict[str, float]] = field(default_factory=list)
    time_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


class Beamformer:
    """Base of per-BS beamformers: a dataclass of typed options with ``_solve(problem, W0)``.

    ``_solve`` returns ``(status, message, W, trace, iterations)``; :meth:`solve` times it, recomputes
    the objective with the metrics package and downgrades an infeasible CONVERGED/MAX_ITERATIONS
    point to INFEASIBLE.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def _solve(self, problem: BsProblem, W0: torch.Tensor | None):
        raise NotImplementedError

    def solve(self, problem: BsProblem, W0: torch.Tensor | None = None) -> BeamformerResult:
        t0 = time.perf_counter()
        reason = problem.sensing_unreachable()
        if reason is not None:
            return BeamformerResult(None, Status.INFEASIBLE, reason, time_s=time.perf_counter() - t0)
        self._info: dict[str, Any] = {}
        try:
            status, message, W, trace, iterations = self._solve(problem, W0)
        except (np.linalg.LinAlgError, torch.linalg.LinAlgError, FloatingPointError) as e:
            status, message, W, trace, iterations = (Status.NUMERICAL_ERROR, f"{type(e).__name__}: {e}".splitlines()[0],
                                                     None, [], 0)
        res = BeamformerResult(W, status, message, iterations=iterations, trace=trace, info=dict(self._info))
        if W is not None:
            W = problem._full(W)
            res.W = W
            res.objective = problem.objective(W)
            bad = problem.violations(W)
            if bad and status in (Status.CONVERGED, Status.MAX_ITERATIONS):
                res.status = Status.INFEASIBLE
                res.message = f"{message}; BS {problem.bs_index}: returned point violates " + "; ".join(bad)
        res.time_s = time.perf_counter() - t0
        return res

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Beamformer:
        import dataclasses
        import typing

        fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for key, value in options.items():
            if key not in fields:
                raise OptionError(f"beamformer {cls.name!r} has no option {key!r} (options: {', '.join(sorted(fields)) or 'none'})")
            kwargs[key] = _parse_option(cls.name, key, value, hints[key])
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as e:
            raise OptionError(f"beamformer {cls.name!r}: {e}") from None


_BEAMFORMERS: dict[str, type[Beamformer]] = {}
_BEAMFORMER_MODULES = ("isac.solvers.li_beamforming", "isac.solvers.li_admm")


def register_beamformer(cls: type[Beamformer]) -> type[Beamformer]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _BEAMFORMERS[cls.name] = cls
    return cls


def beamformers() -> dict[str, type[Beamformer]]:
    """Every registered per-BS beamformer, by name."""
    import importlib

    for m in _BEAMFORMER_MODULES:
        importlib.import_module(m)
    return dict(_BEAMFORMERS)


def get_beamformer(name: str, options: Mapping[str, Any] | None = None) -> Beamformer:
    avail = beamformers()
    if name not in avail:
        raise OptionError(f"unknown beamformer {name!r} (available: {', '.join(sorted(avail))})")
    return avail[name].from_options(options or {})


# --- initial point (000 Sec. VI-A via its ref. [15]) ------------------------------------------------


def initial_beams(problem: BsProblem) -> torch.Tensor:
    r"""000's initialisation: maximise the summed received power :math:`\|\mathbf C\mathbf W\|_F^2` on :math:`\|\mathbf W\|_F^2=P_t`.

    :math:`\mathbf C` stacks the two targets' one-way channels :math:`\mathbf g^H=\rho^{1/4}\mathbf a^H/\sqrt M`
    and the served CUs' channels :math:`\mathbf h_{k,i}^H`; the radar block is zero. The paper
    runs a Riemannian conjugate gradient; the optimum is explicit: every optimal point is
    :math:`\mathbf W=\mathbf v\mathbf x^T` with :math:`\mathbf v` the dominant right singular vector of
    :math:`\mathbf C` and :math:`\|\mathbf x\|^2=P_t`, i.e. **rank one**, so the choice of
    :math:`\mathbf x` is free. We split the power equally over the served CUs' columns
    (:math:`\mathbf w_{k,i}=\sqrt{P_t/n_k}\,\mathbf v`; all power in the first radar column if the BS
    serves nobody). Deterministic: :math:`\mathbf v` from ``numpy.linalg.eigh`` of
    :math:`\mathbf C^H\mathbf C`, its phase fixed so that its largest-magnitude entry is real positive.
    Every CU beam then points the same way, so the SINRs start below :math:`1/(n_k-1)`;
    the beamformers move away from it at once.
    """
    m = problem.num_antennas
    H = problem.H.numpy()
    idx = problem.served_index
    rows = [problem.det_echo_power_gain**0.25 * problem.a_det.numpy().conj() / math.sqrt(m),
            problem.est_echo_power_gain**0.25 * problem.a_est.numpy().conj() / math.sqrt(m)]
    rows += [H[:, i].conj() for i in idx]
    C = np.stack(rows)
    # The raw rows, as the paper's objective is the raw summed power (CU gains dominate).
    _, vecs = np.linalg.eigh(C.conj().T @ C)
    v = vecs[:, -1]
    j = int(np.argmax(np.abs(v)))
    v = v * (abs(v[j]) / v[j])
    W = np.zeros((m, problem.num_streams), dtype=np.complex128)
    cols = idx if idx.size else np.array([problem.num_users])
    W[:, cols] = math.sqrt(problem.p_max_w / cols.size) * v[:, None]
    return torch.as_tensor(W, dtype=COMPLEX)


def sensing_beam(problem: BsProblem, margin: float = SENSING_MARGIN) -> np.ndarray | None:
    r"""One beam ``[M]`` meeting (30a) and the (30b) surrogate alone, with the least power this construction needs.

    :math:`\mathbf s=\sqrt{p_d}\,\mathbf a_d/\sqrt M+e^{j\theta}\sqrt{p_e}\,\mathbf a_e/\sqrt M` with
    :math:`e^{j\theta}` aligning the cross term :math:`\mathbf a_d^H\mathbf a_e` so that it adds to both
    targets' received power; :math:`p_d=q_d(1+\text{margin})/M`, :math:`p_e=q_e(1+\text{margin})/M` each
    suffices on its own, and a bisection on a common scale of the two lowers them where the cross
    term already helps. None if even that needs more than :math:`P_t`.
    """
    m = problem.num_antennas
    ad, ae = problem.a_det.numpy(), problem.a_est.numpy()
    x = np.vdot(ad, ae)
    phase = np.conj(x) / abs(x) if abs(x) > 1e-12 * m else 1.0
    qd, qe = problem.snr_beam_power_min * (1 + margin), problem.crb_beam_power_min * (1 + margin)

    def beam(t: float) -> np.ndarray:
        return math.sqrt(t * qd / m) * ad / math.sqrt(m) + phase * math.sqrt(t * qe / m) * ae / math.sqrt(m)

    def meets(s: np.ndarray) -> bool:
        return abs(np.vdot(ad, s)) ** 2 >= qd and abs(np.vdot(ae, s)) ** 2 >= qe

    lo, hi = 0.0, 1.0
    if not meets(beam(hi)):  # cannot happen: each part alone meets its target
        return None
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if meets(beam(mid)) else (mid, hi)
    s = beam(hi)
    return s if float(np.vdot(s, s).real) <= problem.p_max_w else None


def feasible_start(problem: BsProblem) -> torch.Tensor | None:
    r"""A feasible point of (P3.k) built from :func:`sensing_beam` plus MRT beams for the served CUs.

    The sensing beam goes into the first radar column (into the first served CU's column when
    Ns = 0); the remaining power is split equally over MRT beams
    :math:`\mathbf h_{k,i}/\|\mathbf h_{k,i}\|` of the served CUs. Adding beams only adds
    :math:`\|\mathbf a^H\mathbf W\|^2` and Fisher information, so the sensing targets stay met.
    None when :func:`sensing_beam` finds no beam within :math:`P_t` (or Ns = 0 and nobody is served).
    """
    s = sensing_beam(problem)
    idx = problem.served_index
    if s is None or (problem.num_sensing_streams == 0 and idx.size == 0):
        return None
    m, n = problem.num_antennas, problem.num_users
    W = np.zeros((m, problem.num_streams), dtype=np.complex128)
    H = problem.H.numpy()
    left = max(problem.p_max_w - float(np.vdot(s, s).real), 0.0) * (1 - 1e-9)
    for i in idx:
        W[:, i] = math.sqrt(left / idx.size) * H[:, i] / np.linalg.norm(H[:, i])
    W[:, n if problem.num_sensing_streams else idx[0]] += s
    return torch.as_tensor(W, dtype=COMPLEX)


# --- beamformers -------------------------------------------------------------------------------


def _null_space_projector(Hs: np.ndarray) -> np.ndarray:
    """``[M, M]`` projector onto the orthogonal complement of the columns of ``Hs`` (``[M, n]``)."""
    m = Hs.shape[0]
    if Hs.shape[1] == 0:
        return np.eye(m, dtype=np.complex128)
    q, _ = np.linalg.qr(Hs)
    return np.eye(m, dtype=np.complex128) - q @ q.conj().T


def _target_rows(problem: BsProblem) -> tuple[tuple[np.ndarray, float], tuple[np.ndarray, float]]:
    """``((a_d, q_d), (a_e, q_e))``: the two received-power conditions of the sensing targets."""
    return ((problem.a_det.numpy(), problem.snr_beam_power_min), (problem.a_est.numpy(), problem.crb_beam_power_min))


def _zf_directions(problem: BsProblem) -> tuple[np.ndarray, np.ndarray] | str:
    """Unit ZF directions ``[M, n]`` of the served CUs and unit null-space radar directions ``[M, 2]``, or why not."""
    m = problem.num_antennas
    idx = problem.served_index
    if idx.size >= m:
        return f"BS {problem.bs_index}: ZF + null space needs fewer served CUs ({idx.size}) than antennas ({m})"
    if problem.num_sensing_streams < 2:
        return "ZF + null space needs Ns >= 2 radar columns"
    Hs = problem.H.numpy()[:, idx]
    proj = _null_space_projector(Hs)
    radar = []
    for a, _ in _target_rows(problem):
        u = proj @ a
        norm = np.linalg.norm(u)
        if norm < 1e-9 * math.sqrt(m):
            return f"BS {problem.bs_index}: a target lies in the served CUs' channel span"
        radar.append(u / norm)
    Z = np.zeros((m, 0), dtype=np.complex128)
    if idx.size:
        Z = Hs @ np.linalg.inv(Hs.conj().T @ Hs)
        Z = Z / np.linalg.norm(Z, axis=0, keepdims=True)
    return Z, np.stack(radar, axis=1)


def _assemble(problem: BsProblem, Z: np.ndarray, U: np.ndarray, p_users: np.ndarray, p_radar: np.ndarray) -> torch.Tensor:
    W = np.zeros((problem.num_antennas, problem.num_streams), dtype=np.complex128)
    W[:, problem.served_index] = Z * np.sqrt(p_users)
    n = problem.num_users
    W[:, n:n + U.shape[1]] = U * np.sqrt(p_radar)
    return torch.as_tensor(W, dtype=COMPLEX)


@register_beamformer
@dataclass
class ZfNullSpaceBeamformer(Beamformer):
    r"""Plain construction: ZF beams for the served CUs, radar beams in their channels' null space.

    CU beams: the columns of :math:`\mathbf H_S(\mathbf H_S^H\mathbf H_S)^{-1}` normalised, equal power.
    Radar: :math:`\mathbf u_j=\mathbf P_\perp\mathbf a_j/\|\mathbf P_\perp\mathbf a_j\|` for the detection and
    the estimation target in two radar columns, with the least powers
    :math:`p_j=q_j(1+\text{margin})/|\mathbf a_j^H\mathbf u_j|^2` that meet (30a) and the (30b) surrogate on
    their own (the beams do not interfere with the served CUs, and whatever else reaches the
    targets only helps). What is left of :math:`P_t` goes to the CU beams. Needs
    :math:`n_k<M` and Ns >= 2; the sensing powers must fit in :math:`P_t`.
    """

    name: ClassVar[str] = "zf-ns"
    description: ClassVar[str] = "ZF CU beams + null-space radar beams, least sensing power (baseline)"

    def _solve(self, problem: BsProblem, W0):
        dirs = _zf_directions(problem)
        if isinstance(dirs, str):
            return Status.INFEASIBLE, dirs, None, [], 0
        Z, U = dirs
        p_radar = np.array([q * (1 + SENSING_MARGIN) / abs(np.vdot(a, U[:, j])) ** 2
                            for j, (a, q) in enumerate(_target_rows(problem))])
        left = problem.p_max_w * (1 - 1e-9) - p_radar.sum()
        if left < 0:
            return (Status.INFEASIBLE, f"BS {problem.bs_index}: null-space sensing beams need {p_radar.sum():.4g} W > P_t = "
                    f"{problem.p_max_w:.4g} W", None, [], 0)
        n = Z.shape[1]
        p_users = np.full(n, left / max(n, 1))
        return Status.CONVERGED, "closed form", _assemble(problem, Z, U, p_users, p_radar), [], 1


def zf_power_allocation(problem: BsProblem) -> torch.Tensor | None:
    r"""ZF + null-space directions with the optimal powers: a concave program solved exactly (SLSQP).

    With ZF CU directions :math:`\mathbf z_i` (no inter-CU interference) and null-space radar
    directions :math:`\mathbf u_d,\mathbf u_e` (none at the CUs), :math:`\gamma_i=p_ig_i`,
    :math:`g_i=|\mathbf h_i^H\mathbf z_i|^2/\sigma_i^2`, and each target's received power is linear in
    all the powers, CU beams included:

    .. math::

        \max_{\mathbf p\ge0}\ \frac1{n}\sum_i\log(1+p_ig_i)\quad\text{s.t.}\quad \mathbf 1^T\mathbf p\le P_t,
        \quad \sum_c p_c|\mathbf a_j^H\mathbf d_c|^2\ge q_j(1+2\,\text{margin})\ (j=d,e).

    None where the ZF construction does not exist or the solver does not return a feasible point.
    """
    from scipy.optimize import minimize

    dirs = _zf_directions(problem)
    if isinstance(dirs, str):
        return None
    Z, U = dirs
    n = Z.shape[1]
    P = problem.p_max_w
    H = problem.H.numpy()[:, problem.served_index]
    g = (np.abs(np.einsum("mi,mi->i", H.conj(), Z)) ** 2) / problem.noise_comm_w * P  # powers in units of P
    D = np.concatenate([Z, U], axis=1)
    rows = [(np.abs(a.conj() @ D) ** 2) * P / (q * (1 + 2 * SENSING_MARGIN)) for a, q in _target_rows(problem)]
    w = 1.0 / max(n, 1)

    def f(x):
        return -w * float(np.log1p(g * x[:n]).sum()), -np.concatenate([w * g / (1 + g * x[:n]), np.zeros(2)])

    cons = [{"type": "ineq", "fun": lambda x: 1.0 - x.sum(), "jac": lambda x: -np.ones_like(x)}]
    cons += [{"type": "ineq", "fun": (lambda x, r=r: float(r @ x) - 1.0), "jac": (lambda x, r=r: r)} for r in rows]
    zf = ZfNullSpaceBeamformer()._solve(problem, None)[2]
    x0 = np.full(n + 2, 1.0 / (n + 2))
    if zf is not None:  # start from the equal-power point (feasible)
        x0 = np.concatenate([np.abs(zf.numpy()[:, problem.served_index]).__pow__(2).sum(0),
                             np.abs(zf.numpy()[:, problem.num_users:problem.num_users + 2]).__pow__(2).sum(0)]) / P
    res = minimize(f, x0, jac=True, bounds=[(0.0, 1.0)] * (n + 2), constraints=cons, method="SLSQP",
                   options={"ftol": 1e-15, "maxiter": 500})
    x = np.clip(res.x, 0.0, None)
    x = x / max(x.sum(), 1.0) * (1 - 1e-9)
    return _assemble(problem, Z, U, x[:n] * P, x[n:] * P)


class _WStep:
    r"""The W-update of :class:`FastBeamformer`: a concave QCQP with three constraints, solved through its dual.

    .. math::

        \max_{\mathbf X}\ 2\Re\,\mathrm{tr}(\mathbf C^H\mathbf X)-\mathrm{tr}(\mathbf X^H\mathbf A\mathbf X)
        \quad\text{s.t.}\quad \|\mathbf X\|_F^2\le 1,\quad 2\Re\,\mathrm{tr}(\mathbf B_j^H\mathbf X)\ge 1\ (j=1,2),

    (scaled so the data are O(1)). For multipliers :math:`z=(\mu,\nu_1,\nu_2)\ge0` the Lagrangian
    is maximised by :math:`\mathbf X(z)=(\mathbf A+\mu\mathbf I)^{-1}\mathbf D`,
    :math:`\mathbf D=\mathbf C+\sum_j\nu_j\mathbf B_j`, and the dual function is
    :math:`g(z)=\mathrm{tr}\,\mathbf D^H(\mathbf A+\mu\mathbf I)^{-1}\mathbf D+\mu-\nu_1-\nu_2`, convex and
    smooth; with :math:`\mathbf A=\mathbf U\boldsymbol\Lambda\mathbf U^H` its gradient and Hessian are sums
    over M eigen-directions. A projected Newton method (box :math:`z\ge0`, Armijo backtracking)
    minimises g. Strong duality holds when the linearised set has an interior point (Slater); the
    caller checks every returned point anyway.
    """

    MU_MIN = 1e-13

    def __init__(self, A: np.ndarray, C: np.ndarray, Bs: list[np.ndarray]):
        lam, U = np.linalg.eigh(A)
        self.lam = np.clip(lam, 0.0, None)
        Uh = U.conj().T
        self.U = U
        self.Ct = Uh @ C
        self.Bt = [Uh @ B for B in Bs]
        k = len(self.Bt)
        # Re <B_i, B_j> per eigen-direction, for the nu-nu block of the Hessian
        self.bb = np.array([[np.real((self.Bt[i].conj() * self.Bt[j]).sum(axis=1)) for j in range(k)] for i in range(k)])

    def _terms(self, z: np.ndarray):
        D = self.Ct + sum(v * B for v, B in zip(z[1:], self.Bt))
        return D, 1.0 / (self.lam + z[0])

    def value_grad_hess(self, z: np.ndarray):
        D, inv = self._terms(z)
        rowsq = (np.abs(D) ** 2).sum(axis=1)  # [M]
        k = len(self.Bt)
        cross = np.array([np.real((B.conj() * D).sum(axis=1)) for B in self.Bt])  # [k, M]
        g = float((rowsq * inv).sum()) + z[0] - z[1:].sum()
        grad = np.concatenate([[1.0 - float((rowsq * inv**2).sum())], 2.0 * cross @ inv - 1.0])
        hess = np.empty((1 + k, 1 + k))
        hess[0, 0] = 2.0 * float((rowsq * inv**3).sum())
        hess[0, 1:] = hess[1:, 0] = -2.0 * cross @ inv**2
        hess[1:, 1:] = 2.0 * self.bb @ inv
        return g, grad, hess

    def solve(self, max_iterations: int = 100, tol: float = 1e-13) -> np.ndarray:
        k = len(self.Bt)
        z = np.array([1.0] + [0.0] * k)
        lower = np.array([self.MU_MIN] + [0.0] * k)
        g, grad, hess = self.value_grad_hess(z)
        for _ in range(max_iterations):
            free = ~((z <= lower) & (grad > 0))
            pg = np.where(free, grad, 0.0)
            if np.abs(pg).max() <= tol * (1.0 + abs(g)):
                break
            step = np.zeros_like(z)
            try:
                step[free] = -np.linalg.solve(hess[np.ix_(free, free)], grad[free])
            except np.linalg.LinAlgError:
                step[free] = -grad[free]
            if float(grad @ step) >= 0:  # not a descent direction (ill-conditioned): the projected gradient
                step = -pg
            t = 1.0
            for _ in range(60):
                zn = np.maximum(z + t * step, lower)
                gn, gradn, hessn = self.value_grad_hess(zn)
                if gn <= g + 1e-4 * float(grad @ (zn - z)):
                    break
                t *= 0.5
            else:
                break
            moved = np.abs(zn - z).max()
            z, g, grad, hess = zn, gn, gradn, hessn
            if moved <= 1e-15 * (1.0 + np.abs(z).max()):
                break
        D, inv = self._terms(z)
        return self.U @ (inv[:, None] * D)


def _power_step(Hs: np.ndarray, X: np.ndarray, sig2: float, P: float, targets, omega: float) -> np.ndarray | None:
    r"""Re-optimise the column powers of ``X`` (served CU columns, then radar) with the directions fixed.

    FP moves power between CUs very slowly at high SINR; this step does it in one go. With unit
    directions :math:`\mathbf d_c` and powers :math:`p_c`,
    :math:`\gamma_i=G_{ii}p_i/(\sum_{c
e i}G_{ic}p_c+\sigma^2)`, :math:`G_{ic}=|\mathbf h_i^H\mathbf d_c|^2`, and
    both sensing conditions are *linear* in p: :math:`\|\mathbf a_j^H\mathbf W\|^2=\sum_cp_c|\mathbf a_j^H\mathbf d_c|^2`.
    So the step is the small smooth program :math:`\max_{\mathbf p\ge0}\omega\sum_i\log(1+\gamma_i(\mathbf p))`
    s.t. :math:`\mathbf 1^T\mathbf p\le P_t` and the two linear sensing rows (with the margin), solved by
    SLSQP from the current powers (feasible). It is not concave in general (near ZF it nearly
    is), so the caller keeps the result only if the true objective rose. Columns without power stay
    off. None if SLSQP returns no finite point.
    """
    from scipy.optimize import minimize

    n = Hs.shape[1]
    p0 = (np.abs(X) ** 2).sum(axis=0)
    act = p0 > 1e-14 * P
    if not act[:n].all():
        return None
    D = X[:, act] / np.sqrt(p0[act])
    G = np.abs(Hs.conj().T @ D) ** 2 * P / sig2  # [n, C], powers in units of P_t, noise 1
    diag = np.arange(n)
    x0 = p0[act] / P

    def f(x):
        tot = G @ x + 1.0
        s = G[diag, diag] * x[:n]
        val = np.log(tot) - np.log(tot - s)
        grad = (G / tot[:, None]).sum(axis=0)
        Gi = G.copy()
        Gi[diag, diag] = 0.0
        grad -= (Gi / (tot - s)[:, None]).sum(axis=0)
        return -omega * float(val.sum()), -omega * grad

    cons = [{"type": "ineq", "fun": lambda x: 1.0 - x.sum(), "jac": lambda x: -np.ones_like(x)}]
    for a, q in targets:
        r = (np.abs(a.conj() @ D) ** 2) * P / (q * (1 + SENSING_MARGIN))
        cons.append({"type": "ineq", "fun": (lambda x, r=r: float(r @ x) - 1.0), "jac": (lambda x, r=r: r)})
    with np.errstate(all="ignore"):
        res = minimize(f, x0, jac=True, bounds=[(0.0, 1.0)] * x0.size, constraints=cons, method="SLSQP",
                       options={"ftol": 1e-13, "maxiter": 100})
    x = np.clip(res.x, 0.0, None)
    if not np.all(np.isfinite(x)) or not x[:n].any():
        return None
    Xn = X.copy()
    Xn[:, act] = D * np.sqrt(x * P)
    return Xn


@register_beamformer
@dataclass
class FastBeamformer(Beamformer):
    r"""Our solver for (P3.k): fractional programming with an exact QCQP W-step and an extrapolated line search.

    Each iteration is a minorise-maximise step, so the objective (30) never decreases:

    1. FP/quadratic transform of 000 eqs. (31)-(32) at the current W (the SINRs :math:`v_i` of (47)
       and :math:`b_i` of (48), squares restored), giving the concave quadratic surrogate
       :math:`2\Re\,\mathrm{tr}(\mathbf C^H\mathbf W)-\mathrm{tr}(\mathbf W^H\mathbf A\mathbf W)`,
       :math:`\mathbf A=\sum_{i\in\mathcal S}|b_i|^2\mathbf h_i\mathbf h_i^H`,
       :math:`\mathbf c_i=\sqrt{\omega_i(1+v_i)}\,b_i\mathbf h_i`;
    2. sensing as two received-power constraints :math:`\|\mathbf a_d^H\mathbf W\|^2\ge q_d` ((30a), exact)
       and :math:`\|\mathbf a_e^H\mathbf W\|^2\ge q_e` (implies (30b); module docstring), each linearised at
       the current W as 000 does for (30a) in (37)-(38) -- a convex quadratic lies above its tangent,
       so the linearised set lies inside the true one;
    3. the resulting QCQP (concave objective, power ball, two half-spaces) is solved exactly through
       its three-variable dual (:class:`_WStep`), with no conic solver;
    4. at high SINR (the default preset has ~45 dB at the CUs) the FP surrogate is very flat and
       the steps are short but point the right way, so the step :math:`\Delta` is extrapolated:
       :math:`\mathbf W+t\Delta` for :math:`t=2^{j}`, ``j = 0..max_extrapolation`` (pulled back onto the
       power ball), keeping the best point that passes the checks.

    A candidate is kept only if it meets the power budget and both received-power conditions
    (with half the margin) and raises the true objective (30); if no candidate does, the step is
    halved towards the current point (at most ``max_backtracks`` times), then the method stops.
    Start: the best feasible point among ``W0`` (unserved columns zeroed), the ZF + null-space
    construction (:class:`ZfNullSpaceBeamformer`), the same directions with optimal powers
    (:func:`zf_power_allocation`) and :func:`feasible_start`; so ``fast`` is never below the
    ZF + null-space construction. Stop when the objective rises by less than ``tolerance``
    (relative) in an iteration.

    Where (30b) binds, the surrogate keeps all estimation power along :math:`\mathbf a_e`, although
    power along :math:`\dot{\mathbf a}_\perp` is as informative; the method is then conservative (still
    feasible). At the paper's epsilon = 0.01 rad^2 the surrogate never binds.
    """

    name: ClassVar[str] = "fast"
    description: ClassVar[str] = "FP with an exact dual QCQP step, linearised sensing and extrapolation (ours)"

    max_iterations: int = 200
    """Iteration cap."""
    tolerance: float = 1e-7
    """Stop when the objective (30) rises by less than this, relative, in one iteration."""
    max_extrapolation: int = 6
    """Try steps up to 2**max_extrapolation times the FP step."""
    max_backtracks: int = 8
    """Halvings of a rejected step before stopping."""
    power_steps: bool = True
    """After each FP step, re-optimise the column powers with the directions fixed (:func:`_power_step`)."""

    def __post_init__(self) -> None:
        if self.max_iterations < 1 or not self.tolerance > 0 or self.max_backtracks < 0 or self.max_extrapolation < 0:
            raise ValueError("max_iterations >= 1, tolerance > 0, max_backtracks >= 0 and max_extrapolation >= 0 are required")

    def _starts(self, problem: BsProblem, W0):
        out = []
        if W0 is not None:
            W = problem._full(W0).clone()
            W[:, : problem.num_users][:, ~problem.served] = 0
            out.append(("W0", W))
        zf = ZfNullSpaceBeamformer()._solve(problem, None)[2]
        if zf is not None:
            out.append(("zf-ns", zf))
        pa = zf_power_allocation(problem)
        if pa is not None:
            out.append(("zf-power-allocation", pa))
        fs = feasible_start(problem)
        if fs is not None:
            out.append(("feasible_start", fs))
        return out

    def _solve(self, problem: BsProblem, W0):
        idx = problem.served_index
        n_served = idx.size
        n = problem.num_users
        cols = np.concatenate([idx, np.arange(n, problem.num_streams)])
        Hs = problem.H.numpy()[:, idx]
        sig2 = problem.noise_comm_w
        P = problem.p_max_w
        targets = _target_rows(problem)
        diag = np.arange(n_served)

        def objective(X: np.ndarray) -> float:  # (30) on the served columns; the metrics package re-checks the result
            hw = np.abs(Hs.conj().T @ X) ** 2
            s = hw[diag, diag]
            return float(np.log2(1.0 + s / (hw.sum(axis=1) - s + sig2)).sum()) / max(n_served, 1)

        def passes(X: np.ndarray) -> bool:
            if float((np.abs(X) ** 2).sum()) > P:
                return False
            return all(float((np.abs(a.conj() @ X) ** 2).sum()) >= q * (1 + 0.5 * SENSING_MARGIN) for a, q in targets)

        starts = [(name, W.numpy()[:, cols]) for name, W in self._starts(problem, W0) if problem.is_feasible(W)]
        starts = [(name, X) for name, X in starts if passes(X)]
        if not starts:
            return (Status.INFEASIBLE, f"BS {problem.bs_index}: no feasible start (the two sensing targets together need "
                    f"more than P_t = {problem.p_max_w:.4g} W with the constructions tried)", None, [], 0)
        name, X = max(starts, key=lambda s: objective(s[1]))
        self._info["start"] = name
        obj = objective(X)
        trace = [{"objective": obj}]

        def full(X: np.ndarray) -> torch.Tensor:
            W = np.zeros((problem.num_antennas, problem.num_streams), dtype=np.complex128)
            W[:, cols] = X
            return torch.as_tensor(W, dtype=COMPLEX)

        if n_served == 0:
            return Status.CONVERGED, "no served CU: any feasible point is optimal", full(X), trace, 0
        omega = 1.0 / n_served
        status, message = Status.MAX_ITERATIONS, f"{self.max_iterations} iterations"
        it = 0
        for it in range(1, self.max_iterations + 1):
            hw = Hs.conj().T @ X  # [n, S']
            total = (np.abs(hw) ** 2).sum(axis=1) + sig2
            sig = np.abs(hw[diag, diag]) ** 2
            v = sig / (total - sig)
            b = np.sqrt(omega * (1 + v)) * hw[diag, diag] / total
            A = (Hs * (np.abs(b) ** 2)) @ Hs.conj().T
            C = np.zeros_like(X)
            C[:, :n_served] = Hs * (np.sqrt(omega * (1 + v)) * b)
            s = max(float(np.linalg.eigvalsh(A)[-1]), 1e-300)
            Bs = []
            for a, q in targets:
                ax = a.conj() @ X
                d = q * (1 + SENSING_MARGIN) + float((np.abs(ax) ** 2).sum())
                Bs.append(np.outer(a, ax) * math.sqrt(P) / d)
            step = math.sqrt(P) * _WStep(A / s, C / (math.sqrt(P) * s), Bs).solve() - X
            best = None
            for _ in range(self.max_backtracks + 1):
                for j in range(self.max_extrapolation + 1):
                    Xt = X + (2.0**j) * step
                    power = float((np.abs(Xt) ** 2).sum())
                    if power > P:
                        Xt = Xt * math.sqrt(P / power) * (1 - 1e-12)
                    if not passes(Xt):
                        break
                    ot = objective(Xt)
                    if best is None or ot > best[0]:
                        best = (ot, Xt)
                    elif ot < best[0]:
                        break
                if best is not None and best[0] >= obj:
                    break
                best = None
                step = 0.5 * step
            if best is None:
                status, message = Status.CONVERGED, f"no improving step after {it - 1} iterations"
                break
            if self.power_steps:
                Xp = _power_step(Hs, best[1], sig2, P, targets, omega)
                if Xp is not None and passes(Xp):
                    op = objective(Xp)
                    if op > best[0]:
                        best = (op, Xp)
            rise = best[0] - obj
            obj, X = best
            trace.append({"objective": obj})
            if rise <= self.tolerance * max(abs(obj), 1e-12):
                status, message = Status.CONVERGED, f"objective rose by < {self.tolerance:g} (relative)"
                break
        return status, message, full(X), trace, it
