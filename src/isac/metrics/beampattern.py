r"""Transmit beampattern metrics: desired pattern, beampattern, matching MSE (004).

One BS with an M-antenna array transmits :math:`\mathbf x = \mathbf C\mathbf d + \mathbf S\mathbf w`
with unit-power, mutually uncorrelated symbols (004 eqs. (1)-(3)), so the transmit
covariance is (004 eq. (4))

.. math::

    \mathbf R = \mathbf C\mathbf C^H + \mathbf S\mathbf S^H .

The beampattern (004 eq. (6)) and the pattern-matching MSE (004 eq. (7)) on a grid
:math:`\{\theta_n\}_{n=1}^N` are

.. math::

    P(\theta;\mathbf R) = \mathbf a^H(\theta)\,\mathbf R\,\mathbf a(\theta), \qquad
    L(\mathbf R) = \frac1N\sum_{n=1}^N\big|\beta\, b(\theta_n) - P(\theta_n;\mathbf R)\big|^2 ,

where :math:`b` is the desired pattern (004 eq. (34)) and :math:`\beta` multiplies the
*desired* pattern. As in 004 Sec. IV-B (":math:`\beta\mathbf b = \mathbf p` solved as a
linear equation"), :math:`\beta` is the least-squares solution

.. math::

    \beta^\star = \frac{\mathbf b^T\mathbf p}{\mathbf b^T\mathbf b}
    = \frac{\sum_n b(\theta_n) P(\theta_n)}{\sum_n b(\theta_n)^2},

i.e. the mean of the pattern over the grid points inside the target windows
(:math:`b\in\{0,1\}`). It is never negative because :math:`P\ge 0`. When no grid point
lies in a window (:math:`\mathbf b = \mathbf 0`) every :math:`\beta` is optimal; we take
:math:`\beta^\star = 0`, so :math:`L = \frac1N\|\mathbf p\|^2`.

Note that :math:`L(t\mathbf R) = t^2 L(\mathbf R)`: the MSE is only meaningful at a fixed
transmit power, which is why 004 imposes :math:`\mathrm{tr}(\mathbf R) = P_0` with equality
(eq. (11c)).

All functions are batched (leading dimensions first), complex128/float64, and
differentiable in ``C`` and ``S`` (the gradient of :math:`L` through :math:`\beta^\star`
equals the gradient at fixed :math:`\beta=\beta^\star` by the envelope theorem).
Angles are in **degrees** at this module's interface because the desired pattern's
window edges (eq. (34)) are defined in degrees in 004 and must be compared exactly.
"""

from __future__ import annotations

import math

import torch

from isac.scenario.arrays import ULA
from isac.tensors import COMPLEX, REAL, DTypeError, as_real, hermitian

WINDOW_TOL_DEG = 1e-9
"""Grid points within this distance (degrees) outside a window edge still count as inside:
eq. (34) has closed windows, and float round-off must not drop an edge point."""


def angle_grid_deg(start_deg: float, stop_deg: float, step_deg: float) -> torch.Tensor:
    r"""Sampling grid ``[N]`` float64 in degrees, half-open like ``numpy.arange``.

    :math:`\theta_n = \text{start} + n\cdot\text{step}`, :math:`n = 0,\dots,N-1`, with
    :math:`N = \lceil(\text{stop}-\text{start})/\text{step}\rceil`. 004 Sec. IV-A samples
    "-90 deg to 90 deg with a resolution of 1 deg, i.e. N = 180": 180 points means one
    end is excluded, and we exclude ``stop``. (For half-wavelength spacing a(-90 deg) and
    a(90 deg) coincide anyway.) This also reproduces Table II's N = 180, 60, 30, 10 with
    steps 1, 3, 6, 18 deg.
    """
    start, stop, step = float(start_deg), float(stop_deg), float(step_deg)
    if not (math.isfinite(start) and math.isfinite(stop) and math.isfinite(step)):
        raise ValueError("grid: start, stop and step must be finite")
    if step <= 0 or stop <= start:
        raise ValueError(f"grid: need step > 0 and stop > start, got [{start:g}, {stop:g}, {step:g}]")
    n = math.ceil((stop - start) / step - 1e-9)
    return start + step * torch.arange(n, dtype=REAL)


def desired_beampattern(grid_deg, target_angles_deg, beam_width_deg: float) -> torch.Tensor:
    r"""Desired pattern :math:`b(\theta_n)` of 004 eq. (34), ``[..., N]`` float64 in {0, 1}.

    :math:`b(\theta)=1` if :math:`|\theta-\hat\theta_p|\le\Delta/2` for some target p, else 0.

    Args:
        grid_deg: ``[N]`` grid angles (degrees).
        target_angles_deg: ``[..., K]`` target directions :math:`\hat\theta_p` (degrees).
        beam_width_deg: :math:`\Delta` (degrees), > 0.
    """
    grid = as_real(grid_deg, "grid_deg")
    targets = as_real(target_angles_deg, "target_angles_deg")
    if not beam_width_deg > 0:
        raise ValueError(f"beam_width_deg must be > 0, got {beam_width_deg}")
    dist = (grid[..., None, :] - targets[..., :, None]).abs()  # [..., K, N]
    inside = (dist <= 0.5 * float(beam_width_deg) + WINDOW_TOL_DEG).any(dim=-2)
    return inside.to(REAL)


def steering_matrix(array: ULA, grid_deg) -> torch.Tensor:
    r"""Steering vectors on the grid as rows, ``A [N, M]`` complex128, :math:`A_{n,:} = \mathbf a(\theta_n)^T`."""
    return array.steering(torch.deg2rad(as_real(grid_deg, "grid_deg")))


def _check_complex(name: str, t: torch.Tensor) -> None:
    if not isinstance(t, torch.Tensor) or t.dtype != COMPLEX:
        raise DTypeError(f"{name}: expected a complex128 tensor, got {getattr(t, 'dtype', type(t))}")


def covariance(C: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    r"""Transmit covariance :math:`\mathbf R = \mathbf C\mathbf C^H + \mathbf S\mathbf S^H` (004 eq. (4)).

    Args:
        C: ``[..., M, L]`` complex128 communication beams (column l is :math:`\mathbf c_l`).
        S: ``[..., M, Ns]`` complex128 sensing beams (004: Ns = M).
    Returns:
        ``[..., M, M]`` complex128, Hermitian PSD, in watts (trace = transmit power).
    """
    _check_complex("C", C)
    _check_complex("S", S)
    return C @ hermitian(C) + S @ hermitian(S)


def transmit_power_w(C: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    r""":math:`\mathrm{tr}(\mathbf R) = \|\mathbf C\|_F^2 + \|\mathbf S\|_F^2` in watts, ``[...]`` float64."""
    _check_complex("C", C)
    _check_complex("S", S)
    return (C.real**2 + C.imag**2).sum(dim=(-2, -1)) + (S.real**2 + S.imag**2).sum(dim=(-2, -1))


def beampattern(steering: torch.Tensor, C: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    r"""Beampattern :math:`P(\theta_n) = \mathbf a_n^H\mathbf R\mathbf a_n` (004 eq. (6)), ``[..., N]`` float64.

    Computed as :math:`\|\mathbf a_n^H\mathbf C\|^2 + \|\mathbf a_n^H\mathbf S\|^2`, which equals
    :math:`\mathbf a_n^H(\mathbf C\mathbf C^H+\mathbf S\mathbf S^H)\mathbf a_n` and is non-negative by
    construction.

    Args:
        steering: ``[N, M]`` (or ``[..., N, M]``) complex128, rows :math:`\mathbf a(\theta_n)^T`.
        C: ``[..., M, L]``, S: ``[..., M, Ns]`` complex128.
    """
    _check_complex("steering", steering)
    _check_complex("C", C)
    _check_complex("S", S)
    ac = steering.conj() @ C  # [..., N, L]: entry (n, l) = a_n^H c_l
    as_ = steering.conj() @ S
    return (ac.real**2 + ac.imag**2).sum(-1) + (as_.real**2 + as_.imag**2).sum(-1)


def beampattern_from_covariance(steering: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    r""":math:`\Re\{\mathbf a_n^H\mathbf R\mathbf a_n\}` ``[..., N]`` for a given covariance ``R [..., M, M]``."""
    _check_complex("steering", steering)
    _check_complex("R", R)
    ra = R @ steering.transpose(-2, -1)  # [..., M, N], column n = R a_n
    return (steering.conj().transpose(-2, -1) * ra).sum(-2).real


def optimal_beta(desired: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    r"""Least-squares scale :math:`\beta^\star = \mathbf b^T\mathbf p / \mathbf b^T\mathbf b` ``[...]`` (0 if b = 0).

    Args:
        desired: ``[..., N]`` (or ``[N]``) float64 desired pattern :math:`\mathbf b`.
        pattern: ``[..., N]`` float64 beampattern :math:`\mathbf p` (watts per unit gain).
    """
    b = as_real(desired, "desired")
    p = as_real(pattern, "pattern")
    bb = (b * b).sum(-1)
    bp = (b * p).sum(-1)
    safe = torch.where(bb > 0, bb, torch.ones_like(bb))
    return torch.where(bb > 0, bp / safe, torch.zeros_like(bp))


def beampattern_mse(desired: torch.Tensor, pattern: torch.Tensor, beta=None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Pattern-matching MSE of 004 eq. (7) and the :math:`\beta` used, each ``[...]`` float64.

    :math:`L = \frac1N\sum_n(\beta b_n - P_n)^2`; with ``beta=None`` the least-squares
    :math:`\beta^\star` of :func:`optimal_beta` is used (004 Sec. IV-B).
    """
    b = as_real(desired, "desired")
    p = as_real(pattern, "pattern")
    if beta is None:
        beta = optimal_beta(b, p)
    else:
        beta = as_real(beta, "beta")
    err = beta[..., None] * b - p
    return (err * err).mean(-1), beta
