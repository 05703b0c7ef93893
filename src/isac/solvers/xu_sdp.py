r"""001 (Xu et al.): the convex core. For a fixed receiver and association, problem (8) after SDR is an SDP.

With the receiving BS :math:`r` and the association :math:`a(k)` fixed, lift every user beam to
:math:`\mathbf W_k=\mathbf w_k\mathbf w_k^H\succeq\mathbf 0` (eq. (9)) and drop the rank constraints:

.. math::

    \min\ \sum_k\mathrm{tr}\,\mathbf W_k+\sum_{t\ne r}\mathrm{tr}\,\mathbf R_t
    \quad\text{s.t.}\quad
    \mathrm{tr}\,\mathbf C_t\le P\ (t\ne r),\qquad
    \mathbf h_{a(k),k}^H\mathbf W_k\mathbf h_{a(k),k}\ge\Gamma_k\Big(\sum_{k'\ne k}\mathbf h_{a(k'),k}^H\mathbf W_{k'}\mathbf h_{a(k'),k}
        +\sum_{t\ne r}\mathbf h_{t,k}^H\mathbf R_t\mathbf h_{t,k}+\sigma_c^2\Big),

    \begin{bmatrix}\mathbf U & \mathbf E^T\\ \mathbf E & \mathbf J(\mathbf C)\end{bmatrix}\succeq\mathbf 0,\quad
    \mathrm{tr}\,\mathbf U\le\epsilon,

with :math:`\mathbf C_t=\sum_{k:a(k)=t}\mathbf W_k+\mathbf R_t` (eq. (2)). :math:`\mathbf J(\mathbf C)` is the FIM
of the position and the receiver's link gains, :math:`[\mathbf p,\Re\alpha_{r,t},\Im\alpha_{r,t}]_{t\ne r}`
(:math:`2S\times 2S`), and :math:`\mathbf E=[\mathbf I_2;\mathbf 0]`. The LMI with the trace is
:math:`\mathrm{tr}[\mathbf J^{-1}]_{\mathbf{pp}}\le\epsilon`: 001's (10)-(12), the Schur complement over
the gains (eq. (7)) written as one LMI.

**The FIM map comes from the one Fisher engine.** :math:`\mathbf J` is real-linear in the Hermitian
covariances. :func:`fim_map` evaluates :func:`isac.metrics.bounds.xu.xu_fim` (then the change of
variables to the position) on a Hermitian basis of every transmitter's covariance. That gives
the coefficients of :math:`\mathbf J` in :math:`\Re C_{t,ij}` and :math:`\Im C_{t,ij}`. No second
formula for the FIM exists; a test checks the map against the engine on random covariances.

**Scaling** (the FIM's position and gain entries differ by ~1e13). Covariances are in units of P.
SINR rows are divided by :math:`\sigma_c^2`. :math:`\mathbf J` is replaced by :math:`\mathbf D\mathbf J\mathbf D`, with
:math:`\mathbf D=\mathrm{diag}(\mathbf J_0)^{-1/2}` for the reference :math:`\mathbf C_t=(P/N)\mathbf I`
at every transmitter. Then :math:`\mathrm{tr}[\mathbf J^{-1}]_{\mathbf{pp}}=\sum_i D_i^2\tilde U_{ii}`
and the row is divided by :math:`\epsilon`. SINR and CRLB rows carry a relative ``margin``
(default 1e-5), so the extracted point meets them after solver tolerances.

**Tight SDR, and rank-one beams** (Theorem 1 of 001, in a form a test can check). From any
optimum, :math:`\mathbf w_k=\mathbf W_k\mathbf h/\sqrt{\mathbf h^H\mathbf W_k\mathbf h}` with
:math:`\mathbf h=\mathbf h_{a(k),k}`, and :math:`\mathbf R_{a(k)}\mathrel{+}=\mathbf W_k-\mathbf w_k\mathbf w_k^H\succeq\mathbf 0`.
This leaves every covariance :math:`\mathbf C_t` unchanged, so power and CRLB stay the same, and
every :math:`\mathbf h^H(\cdot)\mathbf h` term of every SINR stays the same. The moved part is
invisible to user k itself, since :math:`\mathbf h^H(\mathbf W_k-\mathbf w_k\mathbf w_k^H)\mathbf h=0`.
So the SDP optimum is attained by beams, and it is the global optimum of (8) for that choice.
``rank_gap`` reports :math:`\max_k 1-\lambda_{\max}(\mathbf W_k)/\mathrm{tr}\,\mathbf W_k` of the raw solution.

**Relaxed users** (the branch and bound of :mod:`isac.solvers.xu`). A user with no transmitter
(``None``) gets a beam covariance :math:`\mathbf W_{t,k}` at every transmitter. Its SINR row counts
:math:`\sum_t\mathbf h_{t,k}^H\mathbf W_{t,k}\mathbf h_{t,k}` as signal, and its own beams do not
interfere with it. Any assignment of that user is feasible for this relaxation at the same power,
so the optimum is a lower bound.

Conic solver: Clarabel with ``equilibrate_enable=False`` and ``chordal_decomposition_enable=False``.
Without them, Clarabel failed at iteration 1 on these SDPs or reported "optimal" at a point with
negative traces. A solver failure is ``"error"`` (the caller's NUMERICAL_ERROR), never "infeasible".
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from isac.metrics.bounds.xu import angle_jacobian, bs_angles, xu_fim
from isac.scenario.instances.bs_selection import BsSelectionInstance
from isac.conic import CHAIN as _CHAIN
from isac.conic import solve_chain as _solve_chain
from isac.tensors import COMPLEX

DEFAULT_MARGIN = 1e-5
POINT_RTOL = 1e-3
"""An extracted point may need at most this much more power (relative) than the SDP value; more
means the conic solver's point was not feasible and the next solver of the chain is tried."""


# --- the FIM as a linear map of the covariances -----------------------------------------


@dataclass(frozen=True)
class FimMap:
    r"""Coefficients of :math:`\mathbf J(\mathbf C)` for one receiver (see the module docstring).

    ``re[t], im[t]``: ``[2S, 2S, N, N]`` (float64) with
    :math:`\mathbf J=\sum_t\sum_{ij}(\mathrm{re}[t]_{..ij}\Re C_{t,ij}+\mathrm{im}[t]_{..ij}\Im C_{t,ij})`
    (C in watts), for each transmitter ``t`` in ``transmitters``. ``keep`` lists the FIM rows kept
    (position, then the gains of links t -> r).
    """

    receiver: int
    transmitters: tuple[int, ...]
    re: dict[int, np.ndarray]
    im: dict[int, np.ndarray]

    def evaluate(self, covariances: dict[int, np.ndarray]) -> np.ndarray:
        """:math:`\\mathbf J` ``[2S, 2S]`` for per-transmitter covariances (watts)."""
        out = 0.0
        for t in self.transmitters:
            c = covariances[t]
            out = out + np.einsum("abij,ij->ab", self.re[t], c.real) + np.einsum("abij,ij->ab", self.im[t], c.imag)
        return np.asarray(out)


def _position_gain_fim(inst: BsSelectionInstance, receiver: int, cov: torch.Tensor) -> torch.Tensor:
    """FIM ``[..., 2S, 2S]`` of ``[p, Re a_{r,t}, Im a_{r,t}]_{t != r}`` for stacked covariances ``[..., S, N, N]``."""
    S = inst.num_bs
    theta = bs_angles(inst.bs_positions_m, inst.array_axes, inst.target_position_m)
    F = xu_fim(inst.array, theta, inst.alpha, receiver, covariance=cov, snapshots=inst.snapshots,
               noise_power_w=inst.noise_sense_w)  # [..., 3S, 3S] over [theta_1..S, Re a_r., Im a_r.]
    T = angle_jacobian(inst.bs_positions_m, inst.array_axes, inst.target_position_m)  # [S, 2]
    keep = [t for t in range(S) if t != receiver]
    big = torch.zeros(3 * S, 2 + 2 * len(keep), dtype=torch.float64)
    big[:S, :2] = T
    for j, t in enumerate(keep):
        big[S + t, 2 + j] = 1.0
        big[2 * S + t, 2 + len(keep) + j] = 1.0
    return big.T @ F @ big


def fim_map(inst: BsSelectionInstance, receiver: int) -> FimMap:
    """The coefficients of the position/gain FIM in every transmitter's covariance, from the engine."""
    S, N = inst.num_bs, inst.num_antennas
    tx = tuple(t for t in range(S) if t != receiver)
    basis = []  # Hermitian basis: E_ii, S_ij = E_ij + E_ji, K_ij = j(E_ij - E_ji) (i < j)
    labels = []
    for i in range(N):
        e = torch.zeros(N, N, dtype=COMPLEX)
        e[i, i] = 1.0
        basis.append(e)
        labels.append(("d", i, i))
    for i in range(N):
        for j in range(i + 1, N):
            s = torch.zeros(N, N, dtype=COMPLEX)
            s[i, j] = s[j, i] = 1.0
            k = torch.zeros(N, N, dtype=COMPLEX)
            k[i, j], k[j, i] = 1j, -1j
            basis += [s, k]
            labels += [("s", i, j), ("k", i, j)]
    B = torch.stack(basis)  # [N^2, N, N]
    re, im = {}, {}
    for t in tx:
        cov = torch.zeros(B.shape[0], S, N, N, dtype=COMPLEX)
        cov[:, t] = B
        J = _position_gain_fim(inst, receiver, cov).numpy()  # [N^2, 2S, 2S]
        r = np.zeros((*J.shape[1:], N, N))
        m = np.zeros((*J.shape[1:], N, N))
        for b, (kind, i, j) in enumerate(labels):
            if kind == "d":
                r[..., i, i] = J[b]
            elif kind == "s":  # Re C_ij = Re C_ji: split the coefficient over both entries
                r[..., i, j] = r[..., j, i] = 0.5 * J[b]
            else:  # Im C_ij = -Im C_ji
                m[..., i, j], m[..., j, i] = 0.5 * J[b], -0.5 * J[b]
        re[t], im[t] = r, m
    return FimMap(receiver, tx, re, im)


# --- one SDP -------------------------------------------------------------------------------


@dataclass
class ChoiceResult:
    """The SDP of one (receiver, association) choice.

    ``status``: ``"optimal"``, ``"infeasible"`` (the solver's certificate) or ``"error"`` (no
    trustworthy answer). For an optimal full association, ``W [S, N, K]`` and ``Rs [S, N, N]`` are
    the rank-one beams and sensing covariances (watts); ``power_w`` is the SDP optimum. With relaxed
    users, ``W`` is None and ``signal_share [S, K]`` says how each relaxed user's signal splits
    over the transmitters.
    """

    status: str
    receiver: int
    association: tuple[int | None, ...]
    power_w: float = math.inf
    W: torch.Tensor | None = None
    Rs: torch.Tensor | None = None
    rank_gap: float = math.nan
    signal_share: np.ndarray | None = None
    message: str = ""
    time_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


class XuSdp:
    """Per-instance cache of FIM maps and scalings; :meth:`solve` solves one choice's SDP."""

    def __init__(self, inst: BsSelectionInstance, *, margin: float = DEFAULT_MARGIN, solver: str = "CLARABEL") -> None:
        self.inst = inst
        self.margin = margin
        self.solver = solver
        self._maps: dict[int, tuple[FimMap, np.ndarray]] = {}
        self.solves = 0

    def _map(self, receiver: int) -> tuple[FimMap, np.ndarray]:
        if receiver not in self._maps:
            fm = fim_map(self.inst, receiver)
            P, N = self.inst.p_max_w, self.inst.num_antennas
            J0 = fm.evaluate({t: (P / N) * np.eye(N, dtype=complex) for t in fm.transmitters})
            # Scale the reference to the power level at which the CRLB would be epsilon, so that the
            # scaled FIM is ~1 at the optimum (the CRLB scales as 1 / power).
            try:
                crlb0 = float(np.trace(np.linalg.inv(J0)[:2, :2]))
            except np.linalg.LinAlgError:
                crlb0 = float("nan")
            if math.isfinite(crlb0) and crlb0 > 0:
                J0 = J0 * (crlb0 / self.inst.crb_max_m2)
            d = 1.0 / np.sqrt(np.maximum(np.diag(J0), 1e-300))
            self._maps[receiver] = (fm, d)
        return self._maps[receiver]

    def solve(self, receiver: int, association: Sequence[int | None], *, crlb: bool = True, sinr: bool = True,
              transmitters: Sequence[int] | None = None) -> ChoiceResult:
        """Solve the SDP for ``receiver`` and ``association[k]`` (a transmitter, or None = relaxed).

        ``transmitters``: the BSs allowed to radiate (default: all but the receiver; the others are
        silent, e.g. 001's bistatic Scheme 3). ``crlb=False`` drops C2 and ``sinr=False`` drops C3
        (used to name the constraint that makes an instance infeasible).
        """
        import cvxpy as cp

        t0 = time.perf_counter()
        inst = self.inst
        S, N, K = inst.num_bs, inst.num_antennas, inst.num_users
        assoc = tuple(None if a is None else int(a) for a in association)
        if len(assoc) != K:
            raise ValueError(f"association: expected {K} entries, got {len(assoc)}")
        tx = [t for t in range(S) if t != receiver] if transmitters is None else sorted({int(t) for t in transmitters})
        if receiver in tx or not tx or not all(0 <= t < S for t in tx):
            raise ValueError(f"transmitters {tx}: need at least one BS in 0..{S - 1}, not the receiver {receiver}")
        for k, a in enumerate(assoc):
            if a is not None and a not in tx:
                raise ValueError(f"association[{k}] = {a}: must be a transmitting BS {tx} (receiver {receiver})")
        P = inst.p_max_w
        g = P / inst.noise_comm_w  # channel terms in units of P / sigma_c^2
        H = inst.H.numpy()  # [S, N, K]
        gamma = inst.sinr_min.numpy()
        mg = self.margin
        # Beam covariances: one per (transmitter, user) that may carry the user, in units of the
        # user's interference-free MRT power s_k = Gamma_k / (g max_t |h_tk|^2) (so every variable is ~1).
        chan = (np.abs(H) ** 2).sum(1)  # [S, K]
        s = {k: gamma[k] / (g * max(chan[t, k] for t in ([a] if a is not None else tx))) for k, a in enumerate(assoc)}
        Wv: dict[tuple[int, int], Any] = {}
        for k, a in enumerate(assoc):
            for t in ([a] if a is not None else tx):
                Wv[(t, k)] = cp.Variable((N, N), hermitian=True, name=f"W_{t}_{k}")
        R = {t: cp.Variable((N, N), hermitian=True, name=f"R_{t}") for t in tx}
        Wp = {(t, k): s[k] * v for (t, k), v in Wv.items()}  # in units of P
        C = {t: R[t] + sum((v for (u, _), v in Wp.items() if u == t), start=0) for t in tx}
        cons = [v >> 0 for v in Wv.values()] + [R[t] >> 0 for t in tx]
        cons += [cp.real(cp.trace(C[t])) <= 1.0 for t in tx]

        def quad(t: int, k: int, X) -> Any:
            # h^H X h as the trace inner product <X, h h^H>: the form CVXPY canonicalises correctly
            # for complex data (with h.conj() @ X @ h, a solved SDP violated a SINR row by 7x).
            h = math.sqrt(g) * H[t, :, k]  # scaled before the product: entries ~1, not g ~ 1e13 times |h|^2 ~ 1e-13
            return cp.real(cp.trace(np.outer(h, h.conj()) @ X))

        for k in range(K):  # each row divided by Gamma_k (1 + margin): signal terms are ~1
            signal = sum((quad(t, k, v) for (t, kk), v in Wp.items() if kk == k), start=0)
            interf = sum((quad(t, k, v) for (t, kk), v in Wp.items() if kk != k), start=0)
            interf = interf + sum((quad(t, k, R[t]) for t in tx), start=0)
            if sinr:
                cons.append(signal / (gamma[k] * (1 + mg)) >= interf + 1.0)
        if crlb:
            fm, d = self._map(receiver)
            n2 = 2 * S
            Jt = 0
            for t in tx:  # silent BSs radiate nothing: no FIM terms
                scale = P * np.outer(d, d)[..., None, None]  # covariance in units of P, rows scaled by D
                Ar = (fm.re[t] * scale).reshape(n2 * n2, N * N)
                Ai = (fm.im[t] * scale).reshape(n2 * n2, N * N)
                Jt = Jt + Ar @ cp.vec(cp.real(C[t]), order="C") + Ai @ cp.vec(cp.imag(C[t]), order="C")
            Jm = cp.reshape(Jt, (n2, n2), order="C")
            U = cp.Variable((2, 2), symmetric=True, name="U")
            E = np.zeros((n2, 2))
            E[0, 0] = E[1, 1] = 1.0
            M = cp.bmat([[U, E.T], [E, Jm]])
            cons.append(0.5 * (M + M.T) >> 0)
            cons.append((d[0] ** 2 * U[0, 0] + d[1] ** 2 * U[1, 1]) / inst.crb_max_m2 <= 1.0 - mg)
        objective = sum((cp.real(cp.trace(C[t])) for t in tx), start=0)
        prob = cp.Problem(cp.Minimize(objective), cons)

        def process(st: str, used: str) -> ChoiceResult:
            dt = time.perf_counter() - t0
            if st == cp.INFEASIBLE:
                return ChoiceResult("infeasible", receiver, assoc, message=f"SDP infeasible ({used})", time_s=dt)
            if st not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or prob.value is None or not math.isfinite(prob.value):
                return ChoiceResult("error", receiver, assoc, message=f"conic solver: {st}", time_s=dt)
            res = ChoiceResult("optimal", receiver, assoc, power_w=float(prob.value) * P, time_s=dt,
                               info={"solver_status": st, "conic_solver": used})
            Wn = {key: None if v.value is None else s[key[1]] * _herm(v.value) for key, v in Wv.items()}
            Rn = {t: _herm(R[t].value) for t in tx}
            if any(v is None for v in (*Wn.values(), *Rn.values())):
                return ChoiceResult("error", receiver, assoc, message="conic solver returned no values", time_s=dt)
            res.rank_gap = max((rank_gap(w) for w in Wn.values()), default=0.0)
            if any(a is None for a in assoc):
                share = np.zeros((S, K))
                for (t, k), w in Wn.items():
                    h = H[t, :, k]
                    share[t, k] = max(float(np.real(h.conj() @ w @ h)), 0.0)
                res.signal_share = share / np.maximum(share.sum(0, keepdims=True), 1e-300)
                return res
            Wm = np.zeros((S, K, N, N), dtype=complex)
            for (t, k), w in Wn.items():
                Wm[t, k] = w
            R0 = np.zeros((S, N, N), dtype=complex)
            for t in tx:
                R0[t] = Rn[t]
            try:
                W, Rs = rank_one_extraction(H, Wm, R0, assoc)
            except ValueError as e:
                return ChoiceResult("error", receiver, assoc, message=f"{e} in the SDP solution", time_s=dt)
            for t in tx:
                Rs[t] = _psd(Rs[t])
            W, raised = _polish_powers(W, Rs, H, assoc, gamma * (1 + mg), 1.0 / g)
            res.info["polish_power_rise"] = raised
            if crlb:
                W, Rs, added = self._repair_crlb(receiver, tx, W, Rs, H, assoc, gamma * (1 + mg), 1.0 / g)
                res.info["crlb_repair_power_w"] = added * P
            res.W = torch.as_tensor(W * math.sqrt(P), dtype=COMPLEX)
            res.Rs = torch.as_tensor(Rs * P, dtype=COMPLEX)
            # The metrics package has the last word: a point it rejects is not an SDP optimum we can use.
            from isac.metrics.evaluate import evaluate

            m = evaluate(inst, {"receiver": torch.tensor(receiver), "W": res.W, "Rs": res.Rs})
            checks = ("power_ok", "sinr_ok", "association_ok", "receiver_silent", "rs_psd") + (("crb_ok",) if crlb else ())
            failed = [c for c in checks if not m.get(c, False)]
            if sinr is False:
                failed = [c for c in failed if c != "sinr_ok"]
            point = float(m["total_power_w"])
            if point > res.power_w * (1 + POINT_RTOL) + 1e-12 * P:
                # Polish and repair only add power; a large rise means the SDP's own point was far from
                # feasible, so its value is no optimum (seen: 0.234 W "optimal", 1.18 W after polishing).
                failed.append(f"power {point:.6g} W vs the SDP's {res.power_w:.6g} W")
            if failed:
                return ChoiceResult("error", receiver, assoc, power_w=res.power_w, message=(
                    f"the extracted point fails {', '.join(failed)} (conic solver accuracy)"), time_s=dt, info=res.info)
            return res

        # A definite answer whose extracted point the metrics package rejects (Clarabel has reported
        # "optimal" below the true optimum, at a point violating C1/C3) goes to the next attempt.
        start, res = 0, None
        while True:
            st, used, index = _solve_chain(prob, self.solver, start)
            self.solves += 1
            res = process(st, used)
            if res.status != "error" or index < 0 or index + 1 >= len(_CHAIN.get(self.solver, ())):
                return res
            start = index + 1

    def crlb_of(self, receiver: int, tx: Sequence[int], W: np.ndarray, Rs: np.ndarray) -> float:
        """CRLB (m^2) of beams ``W [S, N, K]`` and ``Rs`` in units of P (through the FIM map)."""
        fm, _ = self._map(receiver)
        P = self.inst.p_max_w
        J = fm.evaluate({t: P * (W[t] @ W[t].conj().T + Rs[t]) if t in tx else np.zeros_like(Rs[t])
                         for t in fm.transmitters})
        try:
            v = float(np.trace(np.linalg.inv(J)[:2, :2]))
        except np.linalg.LinAlgError:
            return math.inf
        return v if v > 0 else math.inf

    def _repair_crlb(self, receiver, tx, W, Rs, H, assoc, gamma, noise):
        r"""If the extracted point misses C2 (the SDP met it only up to the solver's tolerance), add
        :math:`\delta\,\mathbf I/N` (units of P) to every transmitter's sensing covariance, with the
        least :math:`\delta` found by bisection, then re-polish the beam powers (which only adds
        information). Near-optimal covariances are often nearly rank one, where the CRLB hangs
        on eigenvalues at the solver's tolerance (seen: +2.4e-4 relative CRLB on ``small`` seed 0,
        repaired at +5e-4 of the power). Returns
        (W, Rs, delta * number of transmitters)."""
        eps = self.inst.crb_max_m2 * (1 - 1e-7)
        if self.crlb_of(receiver, tx, W, Rs) <= eps:
            return W, Rs, 0.0
        N = W.shape[1]
        eye = np.eye(N) / N

        def with_delta(delta):
            R2 = Rs.copy()
            for t in tx:
                R2[t] = R2[t] + delta * eye
            return R2

        hi = 1e-9
        while self.crlb_of(receiver, tx, W, with_delta(hi)) > eps:
            hi *= 4
            if hi > 1e-2:
                return W, Rs, 0.0  # not a tolerance effect: leave it to the check
        lo = 0.0
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            if self.crlb_of(receiver, tx, W, with_delta(mid)) > eps:
                lo = mid
            else:
                hi = mid
        R2 = with_delta(hi)
        W2, _ = _polish_powers(W, R2, H, assoc, gamma, noise)
        return W2, R2, hi * len(tx)


def rank_gap(W: np.ndarray) -> float:
    r""":math:`1-\lambda_{\max}/\mathrm{tr}` of a PSD matrix (0 for rank one)."""
    lam = np.linalg.eigvalsh(_herm(W))
    return 1.0 - float(lam[-1]) / max(float(lam.sum()), 1e-300)


def rank_one_extraction(H: np.ndarray, W: np.ndarray, R: np.ndarray, association: Sequence[int]) -> tuple[
        np.ndarray, np.ndarray]:
    r"""Theorem 1 of 001 as a construction: beams ``[S, N, K]`` and sensing covariances ``[S, N, N]``.

    ``H [S, N, K]``; ``W [S, K, N, N]`` relaxed beam covariances (only ``W[association[k], k]`` is
    used); ``R [S, N, N]``. :math:`\mathbf w_k=\mathbf W_k\mathbf h/\sqrt{\mathbf h^H\mathbf W_k\mathbf h}`
    with :math:`\mathbf h=\mathbf h_{a(k),k}`, and :math:`\mathbf W_k-\mathbf w_k\mathbf w_k^H` (PSD, and invisible
    to user k) goes into :math:`\mathbf R_{a(k)}`. Every covariance and every :math:`\mathbf h^H(\cdot)\mathbf h`
    term is unchanged. ValueError when a user has no signal.
    """
    S, N, K = H.shape
    beams = np.zeros((S, N, K), dtype=complex)
    Rs = R.astype(complex).copy()
    for k, s in enumerate(association):
        h = H[s, :, k]
        Wk = W[s, k]
        q = float(np.real(h.conj() @ Wk @ h))
        if q <= 0:
            raise ValueError(f"user {k}: zero signal from BS {s}")
        w = Wk @ h / math.sqrt(q)
        beams[s, :, k] = w
        Rs[s] = Rs[s] + Wk - np.outer(w, w.conj())
    return beams, Rs


def _polish_powers(W: np.ndarray, Rs: np.ndarray, H: np.ndarray, assoc, gamma: np.ndarray, noise: float,
                   iterations: int = 200) -> tuple[np.ndarray, float]:
    r"""Raise the beam powers (directions fixed) until every SINR meets ``gamma`` exactly.

    The SDP meets the SINRs up to the solver's tolerance; with channel terms up to ~1e5 times the
    noise, an eigenvalue error of 1e-8 P in :math:`\mathbf R_t` costs 0.1 % of SINR. The standard
    interference map :math:`T(\mathbf p)_k=\gamma_k(\sum_j G_{kj}p_j+I_k+\sigma^2)/g_k` is monotone, so
    :math:`\mathbf p\leftarrow\max(\mathbf p_0, T(\mathbf p))` from the SDP's powers :math:`\mathbf p_0` rises
    monotonically to the least point above :math:`\mathbf p_0` that meets every SINR. Powers never drop,
    so the covariances only grow and the CRLB can only improve (the FIM is monotone in them).
    Returns the beams and the relative rise of the total beam power.
    """
    S, N, K = W.shape
    a = [int(x) for x in assoc]
    u = np.stack([W[a[k], :, k] for k in range(K)], axis=-1)  # [N, K]
    p0 = (np.abs(u) ** 2).sum(0)
    u = u / np.sqrt(np.maximum(p0, 1e-300))
    G = np.empty((K, K))
    for k in range(K):
        for j in range(K):
            G[k, j] = abs(H[a[j], :, k].conj() @ u[:, j]) ** 2
    own = np.diag(G).copy()
    np.fill_diagonal(G, 0.0)
    sense = np.array([sum(float(np.real(H[t, :, k].conj() @ Rs[t] @ H[t, :, k])) for t in range(S)) for k in range(K)])
    p = p0.copy()
    for _ in range(iterations):
        new = np.maximum(p0, gamma * (G @ p + sense + noise) / np.maximum(own, 1e-300))
        if np.all(np.abs(new - p) <= 1e-13 * np.maximum(new, 1e-300)):
            p = new
            break
        p = new
    out = W.copy()
    for k in range(K):
        out[a[k], :, k] = u[:, k] * math.sqrt(p[k])
    return out, float(p.sum() / max(p0.sum(), 1e-300) - 1.0)


def _herm(x: np.ndarray | None) -> np.ndarray | None:
    return None if x is None else 0.5 * (x + x.conj().T)


def _psd(x: np.ndarray) -> np.ndarray:
    """Nearest PSD matrix (negative eigenvalues of the Hermitian part set to zero)."""
    lam, v = np.linalg.eigh(0.5 * (x + x.conj().T))
    return (v * np.maximum(lam, 0.0)) @ v.conj().T
