r"""Positions, distances and angles in 2-D and 3-D (metres, radians).

Shapes: positions ``[..., D]`` with D = 2 or 3, broadcast against each other.
"""

from __future__ import annotations

import torch

from isac.tensors import as_real


def distance(a, b) -> torch.Tensor:
    """Euclidean distance ``[...]`` between positions ``a [..., D]`` and ``b [..., D]``."""
    a, b = as_real(a, "a"), as_real(b, "b")
    return torch.linalg.vector_norm(b - a, dim=-1)


def azimuth(origin, point) -> torch.Tensor:
    r"""Angle of ``point`` seen from ``origin`` in the x-y plane, :math:`\mathrm{atan2}(\Delta y,\Delta x)\in(-\pi,\pi]`."""
    d = as_real(point, "point") - as_real(origin, "origin")
    return torch.atan2(d[..., 1], d[..., 0])


def elevation(origin, point) -> torch.Tensor:
    r"""Elevation :math:`\arcsin(\Delta z/d)\in[-\pi/2,\pi/2]` of ``point`` seen from ``origin`` (3-D), 002 eq. (5)."""
    d = as_real(point, "point") - as_real(origin, "origin")
    return torch.asin(d[..., 2] / torch.linalg.vector_norm(d, dim=-1))


def angle_from_axis(origin, point, axis) -> torch.Tensor:
    r"""Angle between the array axis ``axis [..., D]`` and the direction to ``point``, in :math:`[0,\pi]`.

    This is the ``cos`` convention of a ULA (000): :math:`\cos\theta = \hat{\mathbf u}\cdot\hat{\mathbf d}`.
    """
    d = as_real(point, "point") - as_real(origin, "origin")
    u = as_real(axis, "axis")
    c = (d * u).sum(-1) / (torch.linalg.vector_norm(d, dim=-1) * torch.linalg.vector_norm(u, dim=-1))
    return torch.acos(c.clamp(-1.0, 1.0))


def angle_from_broadside(origin, point, axis) -> torch.Tensor:
    r"""Angle from the array broadside in :math:`[-\pi/2,\pi/2]`: :math:`\sin\theta = \hat{\mathbf u}\cdot\hat{\mathbf d}`.

    This is the ``sin`` convention of a ULA (001, 004).
    """
    d = as_real(point, "point") - as_real(origin, "origin")
    u = as_real(axis, "axis")
    s = (d * u).sum(-1) / (torch.linalg.vector_norm(d, dim=-1) * torch.linalg.vector_norm(u, dim=-1))
    return torch.asin(s.clamp(-1.0, 1.0))
