r"""Antenna arrays: steering vectors and their analytic angle derivatives.

Every paper's convention is a set of parameters of one array class, not a copy
of the function. With element position indices :math:`n` (ULA) or
:math:`(n_1, n_2)` (UPA), spacing :math:`d` in wavelengths and phase sign
:math:`s = \pm 1`,

.. math::

    [\mathbf a]_n = c\, e^{\,j s 2\pi d\, n\, u(\theta)}, \qquad
    [\mathbf a]_{n_1 n_2} = c\, e^{\,j s 2\pi d\,(n_1 u_1 + n_2 u_2)},

with :math:`c = 1/\sqrt N` when ``normalized`` else 1, and the direction
functions :math:`u` chosen by the convention:

========  =======================================================================  ================
paper     steering vector                                                          constructor
========  =======================================================================  ================
000 li    ULA :math:`e^{j2\pi (d/\lambda) m\cos\theta}`                            :func:`li_ula`
001 xu    ULA :math:`e^{-j\pi m\sin\theta}`                                        :func:`xu_ula`
002 lian  UPA on x-z, :math:`u_x=\cos\beta\cos\theta,u_z=\sin\theta`               :func:`lian_upa`
003 fang  UPA :math:`a_h\otimes a_v`, :math:`u_h=\sin\theta\sin\phi,u_v=\cos\phi`  :func:`fang_upa`
004 zhao  ULA :math:`e^{-j2\pi\Delta m\sin\theta}`                                 :func:`zhao_ula`
========  =======================================================================  ================

Shapes: angles ``[...]`` (float64 tensors, radians) -> steering ``[..., N]``
(complex128). Derivatives are exact (no finite differences) and are checked
against autograd in the tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from isac.tensors import as_real

_TWO_PI = 2.0 * math.pi


def _phase_to_vector(phase: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.polar(torch.full_like(phase, scale), phase)


@dataclass(frozen=True)
class ULA:
    r"""Uniform linear array with elements at :math:`n = 0, \dots, N-1`.

    Attributes:
        num_elements: N.
        spacing_wavelengths: element spacing :math:`d/\lambda`.
        phase_sign: +1 for :math:`e^{+j\cdot}`, -1 for :math:`e^{-j\cdot}`.
        angle_function: ``"sin"`` (broadside reference) or ``"cos"``
            (end-fire reference) for :math:`u(\theta)`.
        normalized: scale by :math:`1/\sqrt N` (unit-norm steering vector).
    """

    num_elements: int
    spacing_wavelengths: float = 0.5
    phase_sign: Literal[1, -1] = 1
    angle_function: Literal["sin", "cos"] = "sin"
    normalized: bool = False

    def __post_init__(self) -> None:
        if int(self.num_elements) < 1:
            raise ValueError(f"num_elements must be >= 1, got {self.num_elements}")
        if self.phase_sign not in (1, -1):
            raise ValueError(f"phase_sign must be +1 or -1, got {self.phase_sign}")
        if self.angle_function not in ("sin", "cos"):
            raise ValueError(f"angle_function must be 'sin' or 'cos', got {self.angle_function!r}")

    @property
    def size(self) -> int:
        return int(self.num_elements)

    def _scale(self) -> float:
        return 1.0 / math.sqrt(self.size) if self.normalized else 1.0

    def _u(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.angle_function == "sin":
            return torch.sin(theta), torch.cos(theta)
        return torch.cos(theta), -torch.sin(theta)

    def steering_and_derivative(self, theta_rad) -> tuple[torch.Tensor, torch.Tensor]:
        """Steering vector ``a(theta)`` and ``da/dtheta``, each ``[..., N]`` complex128."""
        theta = as_real(theta_rad, "theta_rad")
        n = torch.arange(self.size, dtype=torch.float64, device=theta.device)
        k = self.phase_sign * _TWO_PI * self.spacing_wavelengths
        u, du = self._u(theta)
        a = _phase_to_vector(k * u[..., None] * n, self._scale())
        da = (1j * k) * (du[..., None] * n) * a
        return a, da

    def steering(self, theta_rad) -> torch.Tensor:
        """Steering vector ``[..., N]`` complex128."""
        return self.steering_and_derivative(theta_rad)[0]


@dataclass(frozen=True)
class UPA:
    r"""Uniform planar array of ``shape = (N1, N2)`` elements.

    ``angle_model`` maps the two angles to the direction functions
    :math:`(u_1, u_2)` along the two array axes:

    * ``"fang"`` (003): angles :math:`(\theta, \phi)`,
      :math:`u_1=\sin\theta\sin\phi` (horizontal), :math:`u_2=\cos\phi` (vertical).
    * ``"xz"`` (002): array on the x-z plane, elevation :math:`\theta` and
      azimuth :math:`\beta`, :math:`u_1=\cos\beta\cos\theta` (x),
      :math:`u_2=\sin\theta` (z).

    ``element_order`` fixes how the two indices flatten into one:
    ``"first-major"`` puts element :math:`(n_1,n_2)` at index
    :math:`n_1 N_2 + n_2`, i.e. :math:`\mathbf a = \mathbf a_1\otimes\mathbf a_2`;
    ``"second-major"`` at :math:`n_2 N_1 + n_1` (:math:`\mathbf a_2\otimes\mathbf a_1`,
    the order of 003's published MATLAB code).
    """

    shape: tuple[int, int]
    spacing_wavelengths: float = 0.5
    phase_sign: Literal[1, -1] = 1
    angle_model: Literal["fang", "xz"] = "fang"
    normalized: bool = True
    element_order: Literal["first-major", "second-major"] = "first-major"

    def __post_init__(self) -> None:
        if len(self.shape) != 2 or min(int(s) for s in self.shape) < 1:
            raise ValueError(f"UPA shape must be two positive integers, got {self.shape}")
        object.__setattr__(self, "shape", (int(self.shape[0]), int(self.shape[1])))
        if self.phase_sign not in (1, -1):
            raise ValueError(f"phase_sign must be +1 or -1, got {self.phase_sign}")
        if self.angle_model not in ("fang", "xz"):
            raise ValueError(f"angle_model must be 'fang' or 'xz', got {self.angle_model!r}")
        if self.element_order not in ("first-major", "second-major"):
            raise ValueError(f"element_order must be 'first-major' or 'second-major', got {self.element_order!r}")

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    def element_indices(self, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Flattened index vectors ``(n1, n2)``, each ``[N]`` float64."""
        n1, n2 = self.shape
        i1 = torch.arange(n1, dtype=torch.float64, device=device)
        i2 = torch.arange(n2, dtype=torch.float64, device=device)
        if self.element_order == "first-major":
            g1, g2 = torch.meshgrid(i1, i2, indexing="ij")
        else:
            g2, g1 = torch.meshgrid(i2, i1, indexing="ij")
        return g1.reshape(-1), g2.reshape(-1)

    def _directions(self, t1: torch.Tensor, t2: torch.Tensor):
        """``(u1, u2)`` and their partial derivatives w.r.t. the two angles."""
        if self.angle_model == "fang":
            theta, phi = t1, t2
            u1 = torch.sin(theta) * torch.sin(phi)
            u2 = torch.cos(phi)
            du1 = (torch.cos(theta) * torch.sin(phi), torch.sin(theta) * torch.cos(phi))
            du2 = (torch.zeros_like(phi), -torch.sin(phi))
        else:
            theta, beta = t1, t2
            u1 = torch.cos(beta) * torch.cos(theta)
            u2 = torch.sin(theta)
            du1 = (-torch.cos(beta) * torch.sin(theta), -torch.sin(beta) * torch.cos(theta))
            du2 = (torch.cos(theta), torch.zeros_like(beta))
        return u1, u2, du1, du2

    def steering_and_derivatives(self, angle1_rad, angle2_rad):
        """``a``, ``da/dangle1``, ``da/dangle2``, each ``[..., N]`` complex128.

        For ``"fang"`` the angles are ``(theta, phi)``; for ``"xz"`` they are
        (elevation ``theta``, azimuth ``beta``).
        """
        t1 = as_real(angle1_rad, "angle1_rad")
        t2 = as_real(angle2_rad, "angle2_rad")
        t1, t2 = torch.broadcast_tensors(t1, t2)
        n1, n2 = self.element_indices(t1.device)
        k = self.phase_sign * _TWO_PI * self.spacing_wavelengths
        u1, u2, du1, du2 = self._directions(t1, t2)
        scale = 1.0 / math.sqrt(self.size) if self.normalized else 1.0
        a = _phase_to_vector(k * (u1[..., None] * n1 + u2[..., None] * n2), scale)
        da1 = (1j * k) * (du1[0][..., None] * n1 + du2[0][..., None] * n2) * a
        da2 = (1j * k) * (du1[1][..., None] * n1 + du2[1][..., None] * n2) * a
        return a, da1, da2

    def steering(self, angle1_rad, angle2_rad) -> torch.Tensor:
        """Steering vector ``[..., N]`` complex128."""
        return self.steering_and_derivatives(angle1_rad, angle2_rad)[0]


# --- paper conventions -------------------------------------------------------


def li_ula(num_elements: int, spacing_wavelengths: float = 0.5) -> ULA:
    """000 (Li et al.): ``exp(j 2 pi d/lambda m cos(theta))``, not normalised."""
    return ULA(num_elements, spacing_wavelengths, phase_sign=1, angle_function="cos", normalized=False)


def xu_ula(num_elements: int) -> ULA:
    """001 (Xu et al.): ``exp(-j pi m sin(theta))``, not normalised."""
    return ULA(num_elements, 0.5, phase_sign=-1, angle_function="sin", normalized=False)


def zhao_ula(num_elements: int, spacing_wavelengths: float = 0.5) -> ULA:
    """004 (Zhao et al.): ``exp(-j 2 pi Delta m sin(theta))``, not normalised."""
    return ULA(num_elements, spacing_wavelengths, phase_sign=-1, angle_function="sin", normalized=False)


def fang_upa(
    num_horizontal: int,
    num_vertical: int,
    element_order: Literal["first-major", "second-major"] = "first-major",
) -> UPA:
    """003 (Fang et al.): ``a_h(theta, phi) kron a_v(phi)``, each factor unit norm.

    ``element_order="first-major"`` is the paper's text (index ``n_h*N_v + n_v``);
    ``"second-major"`` reproduces the authors' MATLAB ``kron(a_v, a_h)``.
    """
    return UPA((num_horizontal, num_vertical), 0.5, phase_sign=1, angle_model="fang",
               normalized=True, element_order=element_order)


def lian_upa(num_x: int, num_z: int, spacing_wavelengths: float = 0.5) -> UPA:
    """002 (Lian et al.): UPA on the x-z plane, eq. (8), normalised by 1/sqrt(L)."""
    return UPA((num_x, num_z), spacing_wavelengths, phase_sign=1, angle_model="xz", normalized=True)
