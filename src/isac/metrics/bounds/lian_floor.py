r"""002: the SPEB floor, :math:`\min_{\mathbf R\succeq 0,\ \mathrm{tr}\mathbf R_{nn}\le P_n}\mathrm{SPEB}(\mathbf R)`, by one SDP.

The FIM of 002 is linear in the joint transmit covariance :math:`\mathbf R = \mathbf P\mathbf P^H`
(:func:`isac.metrics.fim.covariance_coefficients`), the angle EFIM
:math:`\mathbf J_e = \mathbf J_{\omega\omega}-\mathbf J_{\omega\alpha}\mathbf J_{\alpha\alpha}^{-1}\mathbf J_{\alpha\omega}`
is operator-concave in it, and :math:`\mathrm{tr}((\mathbf Q^T\mathbf J_e\mathbf Q)^{-1})` is
convex and decreasing in :math:`\mathbf J_e`, so the SPEB is convex in :math:`\mathbf R` and its
minimum under the per-BS budgets (32b) is the SDP

.. math::

    \min_{\mathbf R,\mathbf M,\mathbf U}\ \mathrm{tr}\,\mathbf U\quad\text{s.t.}\quad
    \begin{bmatrix}\mathbf J_{\omega\omega}(\mathbf R)-\mathbf M & \mathbf J_{\omega\alpha}(\mathbf R)\\
        \mathbf J_{\alpha\omega}(\mathbf R) & \mathbf J_{\alpha\alpha}(\mathbf R)\end{bmatrix}\succeq 0,\quad
    \begin{bmatrix}\mathbf U & \mathbf I\\ \mathbf I & \mathbf Q^T\mathbf M\mathbf Q\end{bmatrix}\succeq 0,\quad
    \mathbf R\succeq 0,\ \mathrm{tr}\,\mathbf R_{nn}\le P_n .

No beam of any problem (32) instance reaches a lower SPEB, so :math:`\gamma` below the floor
makes (32) infeasible, and :math:`\gamma/\text{floor}` says how hard the sensing constraint is
(the ``lian`` preset sets :math:`\gamma` = ``gamma_over_floor`` x floor). The floor needs rank
:math:`\mathbf R^\star` streams; :func:`speb_floor` reports the rank it found.

Scaling (the FIM's angle and gain blocks differ by ~1e10): the SDP sees :math:`\mathbf D\mathbf J\mathbf D`
with :math:`D_{pp} = 1/\sqrt{J_{pp}(\mathbf R_0)}` at the isotropic covariance
:math:`\mathbf R_0 = \mathrm{blkdiag}(P_n/L\,\mathbf I)`, :math:`\mathbf R` in units of the largest
budget, and :math:`\mathbf U` in units of the SPEB at :math:`\mathbf R_0`. The extracted
:math:`\mathbf R^\star` is re-evaluated by the engine (:func:`isac.metrics.bounds.lian.lian_speb`,
exact model): that value is the floor. For ``speb_model="eq20"`` the same number is a lower bound
(eq. (20)'s SPEB is never below the exact one and equals it at rank one).

Invariances used by the cache: the SPEB scales as :math:`\sigma^2/(T P)` when every budget scales by
:math:`P` (the FIM is linear in :math:`\mathbf R`), and a common phase of all :math:`\alpha_{m,n}`
is absorbed by the gain parameters, while scaling all of them by :math:`a` scales the SPEB by
:math:`a^{-2}`. So one SDP serves every draw of the ``lian`` preset (its :math:`|\alpha|` and
relative phases are fixed by the geometry) and every power: the key is the array, the positions,
:math:`\alpha/\alpha_{\max}` and the budget ratios :math:`P_n/\max P`. Results are kept in memory and, unless ``ISAC_NO_DISK_CACHE``
is set, as one small JSON file per key under ``$ISAC_CACHE_DIR/speb-floor`` (default
``~/.cache/isac``); a broken cache file is ignored and rewritten.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from isac.metrics.bounds.lian import angle_jacobian, lian_derivatives, lian_speb, target_angles
from isac.metrics.fim import covariance_coefficients

FLOOR_RTOL = 1e-4
r"""A threshold :math:`\gamma < \text{floor}\,(1-\texttt{FLOOR_RTOL})` is infeasible for sure; within the
tolerance the conic solver's accuracy cannot tell."""

_VERSION = 2  # bump when the SDP or its extraction changes: old cache files are then ignored


class FloorError(RuntimeError):
    """The floor SDP failed in every solver of the chain (a numerical failure, not infeasibility)."""


@dataclass(frozen=True)
class SpebFloor:
    """Result of :func:`speb_floor`.

    Attributes:
        speb_m2: the floor (engine SPEB of the extracted covariance), m².
        sdp_value_m2: the SDP optimum (a lower bound up to the solver's tolerance), m².
        rank: numerical rank of the optimal covariance (eigenvalues above 1e-6 of the largest).
        solver: the attempt of :data:`isac.conic.CHAIN` that solved it.
        time_s: wall time of the SDP (0 when read from the cache).
        cached: ``"memory"``, ``"disk"`` or ``""`` (computed now).
        covariance: optimal ``R [N*L, N*L]`` complex128 in watts (None when read from disk).
    """

    speb_m2: float
    sdp_value_m2: float
    rank: int
    solver: str
    time_s: float
    cached: str = ""
    covariance: torch.Tensor | None = None


_MEMORY: dict[str, dict[str, Any]] = {}


def _cache_dir() -> Path | None:
    if os.environ.get("ISAC_NO_DISK_CACHE"):
        return None
    base = os.environ.get("ISAC_CACHE_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "isac") / "speb-floor"


def _key(array, bs_positions_m, target_position_m, alpha, p_ratio) -> str:
    a = alpha.detach().cpu().numpy().astype(np.complex128)
    # common phase and scale removed (the floor scales as max|alpha|^-2, see speb_floor); phase taken from
    # alpha[0, 0] and the product written out so that draws that differ by e^{j psi} give the same bits
    rel = (a * np.conj(a.flat[0])) / (np.abs(a.flat[0]) * np.abs(a).max())
    def digits(x) -> str:  # rounded; + 0.0 turns -0.0 into 0.0
        x = np.asarray(x)
        x = np.stack([x.real, x.imag]) if np.iscomplexobj(x) else x.astype(np.float64)
        return (np.round(x, 9) + 0.0).tobytes().hex()

    parts = [f"v{_VERSION}", repr(array), digits(bs_positions_m.detach().cpu().numpy()),
             digits(target_position_m.detach().cpu().numpy()), digits(rel), digits(p_ratio)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def speb_floor(inst, *, solver: str = "SCS", cache: bool = True) -> SpebFloor:
    """The SPEB floor of a ``coop-localization`` instance (true target, exact model); see the module doc.

    Raises:
        FloorError: every conic attempt failed (one line).
    """
    p = inst.p_max_w
    p_ref = float(p.max())
    factor = speb_scale(inst)  # the floor of inst = its unit problem's floor x factor
    key = _key(inst.array, inst.bs_positions_m, inst.target_position_m, inst.alpha, (p / p_ref).tolist())
    hit, where = None, ""
    if cache:
        if key in _MEMORY:
            hit, where = _MEMORY[key], "memory"
        else:
            hit = _read_disk(key)
            if hit is not None:
                _MEMORY[key] = hit
                where = "disk"
    if hit is None:
        t0 = time.perf_counter()
        hit = _unit_floor(inst, solver)
        hit["time_s"] = time.perf_counter() - t0
        if cache:
            _MEMORY[key] = hit
            _write_disk(key, hit)
    cov = hit.get("covariance")
    return SpebFloor(
        speb_m2=hit["speb"] * factor,
        sdp_value_m2=hit["sdp_value"] * factor,
        rank=int(hit["rank"]),
        solver=str(hit["solver"]),
        time_s=float(hit["time_s"]) if not where else 0.0,
        cached=where,
        covariance=None if cov is None else cov * p_ref,
    )


def speb_floor_m2(inst, **kwargs) -> float:
    """:func:`speb_floor`'s ``speb_m2``."""
    return speb_floor(inst, **kwargs).speb_m2


def gamma_below_floor(inst) -> str | None:
    """A one-line reason when ``inst.speb_max_m2`` is below the floor (problem (32) infeasible), else None."""
    floor = speb_floor(inst)
    if inst.speb_max_m2 < floor.speb_m2 * (1.0 - FLOOR_RTOL):
        return (f"gamma = {inst.speb_max_m2:.6g} m^2 is below the SPEB floor {floor.speb_m2:.6g} m^2 "
                f"(the least SPEB any beam reaches under the power budgets): problem (32) is infeasible")
    return None


def fim_transmit_basis(array, bs_positions_m, target_position_m) -> torch.Tensor:
    r"""Per-BS orthonormal bases ``[..., N, L, 3]`` of :math:`\{\mathbf a_n,\partial_\theta\mathbf a_n,\partial_\beta\mathbf a_n\}`.

    Every transmit-side vector of 002's FIM derivatives lies in the span of their block-diagonal
    stack, so the FIM sees a covariance only through its compression onto it (module docstring).
    """
    theta, beta = target_angles(bs_positions_m, target_position_m)
    a, da_t, da_b = array.steering_and_derivatives(theta, beta)  # [..., N, L] each
    return torch.linalg.qr(torch.stack([a, da_t, da_b], dim=-1)).Q


def speb_scale(inst) -> float:
    """SPEB of ``inst`` / SPEB of its unit problem (largest budget 1, max ``|alpha|`` 1, one snapshot, unit noise)."""
    return inst.noise_sense_w / (inst.snapshots * float(inst.p_max_w.max()) * float(inst.alpha.abs().max()) ** 2)


@dataclass(frozen=True)
class SpebSdpModel:
    r"""The SPEB of one instance as data for a conic program, in scaled units (see the module doc).

    With :math:`\mathbf X = \mathbf B^H(\mathbf R/p_{\mathrm{ref}})\mathbf B` (``B [NL, 3N]``
    block-diagonal with orthonormal columns, ``p_ref`` the largest budget) the scaled FIM is
    ``A_re @ vec(Re X) - A_im @ vec(Im X)`` (column-major vec, ``[P*P]``, row-major P x P), the
    angle-to-position Jacobian is ``Q`` (``[2N, 3]``, scaled), and
    :math:`\mathrm{SPEB}(\mathbf R) = \texttt{factor}\cdot\texttt{s_ref}\cdot\mathrm{tr}\,\mathbf U`
    at the optimum of :func:`speb_lmis`. ``p_ratio [N]``: budgets over ``p_ref``.
    """

    B: torch.Tensor
    A_re: np.ndarray
    A_im: np.ndarray
    Q: np.ndarray
    s_ref: float
    factor: float
    p_ref: float
    p_ratio: torch.Tensor
    num_bs: int
    alpha_unit: torch.Tensor

    @property
    def size(self) -> int:
        """3N, the side of X."""
        return int(self.B.shape[1])

    def speb_units(self, speb_m2: float) -> float:
        """An SPEB in m² as a bound on ``tr U`` of :func:`speb_lmis`."""
        return speb_m2 / (self.factor * self.s_ref)


def speb_sdp_model(inst) -> SpebSdpModel:
    """Scaled FIM coefficients of ``inst`` (true target, exact model) on the 3N-dimensional subspace the FIM sees."""
    p = inst.p_max_w
    p_ref = float(p.max())
    amp = float(inst.alpha.abs().max())
    alpha_unit = inst.alpha / amp
    p_ratio = p / p_ref
    array = inst.array
    n = inst.num_bs
    bs, target = inst.bs_positions_m, inst.target_position_m
    d = lian_derivatives(array, bs, target, alpha_unit)
    # snapshots / noise = 1: the true FIM is this one times snapshots * p_ref * amp^2 / noise
    C = covariance_coefficients(d, snapshots=1.0, noise_power_w=1.0)  # [P, P, NL, NL]
    # Every derivative's transmit side lies in span{e_n kron (a_n, da_n/dtheta, da_n/dbeta)}: the FIM sees
    # R only through B^H R B (B block-diagonal, orthonormal), and projecting R onto that span keeps the
    # FIM and lowers no BS's power. So R = B X B^H with X of size 3N (N x 3 per BS) loses nothing.
    B = torch.block_diag(*fim_transmit_basis(array, bs, target))  # [NL, 3N]
    Cx = B.conj().T @ C @ B  # [P, P, 3N, 3N]
    nx = Cx.shape[-1]
    per_bs = nx // n
    num_p = C.shape[0]
    num_w = 2 * n
    x0 = torch.block_diag(*[float(p_ratio[i]) / per_bs * torch.eye(per_bs, dtype=torch.complex128) for i in range(n)])
    F0 = torch.einsum("pqij,ji->pq", Cx, x0).real
    dscale = 1.0 / torch.sqrt(torch.diagonal(F0))
    Cs = Cx * (dscale[:, None] * dscale[None, :])[..., None, None]
    Q = angle_jacobian(bs, target) / dscale[:num_w, None]  # [2N, 3]: J = Q^T M_scaled Q
    je0 = _efim(F0 * dscale[:, None] * dscale[None, :], num_w)
    s_ref = float(torch.trace(torch.linalg.inv(Q.T @ je0 @ Q)))  # SPEB of the isotropic X0 in these units
    if not (math.isfinite(s_ref) and s_ref > 0):
        raise FloorError("SPEB floor: the isotropic reference covariance gives no finite SPEB (check the geometry)")
    return SpebSdpModel(
        B=B, A_re=Cs.real.reshape(num_p * num_p, nx * nx).numpy(), A_im=Cs.imag.reshape(num_p * num_p, nx * nx).numpy(),
        Q=Q.numpy(), s_ref=s_ref, factor=speb_scale(inst), p_ref=p_ref,
        p_ratio=p_ratio, num_bs=n, alpha_unit=alpha_unit,
    )


def speb_lmis(model: SpebSdpModel, X):
    r"""CVXPY constraints and the 3 x 3 variable ``U`` with :math:`\mathrm{tr}\,\mathbf U\ge\mathrm{SPEB}/(\texttt{factor}\,\texttt{s_ref})`.

    ``X``: a Hermitian CVXPY expression ``[3N, 3N]`` (:math:`\mathbf B^H\mathbf R\mathbf B/p_{\mathrm{ref}}`).
    The SPEB (convex in X) is at most ``factor * s_ref * tr U`` on the feasible set, with equality at
    the least feasible ``tr U``: bound ``tr U`` to constrain the SPEB, or minimise it.
    """
    import cvxpy as cp

    num_w = 2 * model.num_bs
    num_p = int(round(math.sqrt(model.A_re.shape[0])))
    M = cp.Variable((num_w, num_w), symmetric=True)
    U = cp.Variable((3, 3), symmetric=True)
    # F_pq = Re tr(C_pq X) = sum_ij Re C_pq[i,j] Re X[j,i] - Im C_pq[i,j] Im X[j,i]; row-major C matches vec(X, "F")
    F = cp.reshape(model.A_re @ cp.vec(cp.real(X), order="F") - model.A_im @ cp.vec(cp.imag(X), order="F"),
                   (num_p, num_p), order="C")
    F = 0.5 * (F + F.T)
    sel = np.zeros((num_w, num_p))
    sel[np.arange(num_w), np.arange(num_w)] = 1.0
    J = model.Q.T @ M @ model.Q
    J = 0.5 * (J + J.T)
    cons = [F - sel.T @ M @ sel >> 0, cp.bmat([[U, np.eye(3)], [np.eye(3), model.s_ref * J]]) >> 0]
    return cons, U


def _unit_floor(inst, solver: str) -> dict[str, Any]:
    """Floor at unit largest budget, max |alpha| = 1, one snapshot and unit noise (see ``factor`` in speb_floor)."""
    import cvxpy as cp

    from isac.conic import solve_chain

    model = speb_sdp_model(inst)
    n, length = inst.num_bs, inst.num_antennas
    nx, per_bs = model.size, model.size // n
    X = cp.Variable((nx, nx), hermitian=True)
    cons, U = speb_lmis(model, X)
    cons.append(X >> 0)
    for i in range(n):
        blk = slice(i * per_bs, (i + 1) * per_bs)
        cons.append(cp.real(cp.trace(X[blk, blk])) <= float(model.p_ratio[i]))
    prob = cp.Problem(cp.Minimize(cp.trace(U)), cons)
    status, used, _ = solve_chain(prob, solver)
    if status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) and solver != "CLARABEL":
        status, used, _ = solve_chain(prob, "CLARABEL")
    if status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or X.value is None:
        raise FloorError(f"SPEB floor SDP failed ({status}, last attempt {used})")
    Xv = torch.as_tensor(0.5 * (X.value + X.value.conj().T), dtype=torch.complex128)
    lam, vx = torch.linalg.eigh(Xv)
    lam = lam.clamp_min(0.0)
    vec = model.B @ vx  # [NL, 3N]: eigenvectors of R = B X B^H
    # the engine's value at the extracted covariance (scaled back into the budgets if round-off exceeds them)
    blocks = (vx.abs() ** 2 @ lam).reshape(n, per_bs).sum(-1)  # tr R_nn of the PSD part
    shrink = float(torch.clamp(blocks / model.p_ratio, min=1.0).max())
    W = (vec * torch.sqrt(lam / shrink)).reshape(n, length, nx)
    speb = float(lian_speb(inst.array, inst.bs_positions_m, inst.target_position_m, model.alpha_unit, W, 1.0, 1.0))
    rank = int((lam > 1e-6 * lam.max()).sum())
    return {"speb": speb, "sdp_value": float(prob.value) * model.s_ref, "rank": rank, "solver": used,
            "covariance": (vec * (lam / shrink)) @ vec.conj().T}


def _efim(F: torch.Tensor, num_keep: int) -> torch.Tensor:
    fkk, fkn, fnn = F[:num_keep, :num_keep], F[:num_keep, num_keep:], F[num_keep:, num_keep:]
    return fkk - fkn @ torch.linalg.solve(fnn, fkn.T)


def _read_disk(key: str) -> dict[str, Any] | None:
    d = _cache_dir()
    if d is None:
        return None
    try:
        obj = json.loads((d / f"{key}.json").read_text())
        if obj.get("version") != _VERSION:
            return None
        return {k: obj[k] for k in ("speb", "sdp_value", "rank", "solver", "time_s")}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write_disk(key: str, hit: dict[str, Any]) -> None:
    d = _cache_dir()
    if d is None:
        return
    try:
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"version": _VERSION, **{k: hit[k] for k in ("speb", "sdp_value", "rank", "solver",
                                                                              "time_s")}}))
        os.replace(tmp, d / f"{key}.json")
    except OSError:
        pass  # a read-only home: the memory cache still serves this process


__all__ = ["FLOOR_RTOL", "FloorError", "SpebFloor", "SpebSdpModel", "fim_transmit_basis", "gamma_below_floor",
           "speb_floor", "speb_floor_m2", "speb_lmis", "speb_scale", "speb_sdp_model"]
