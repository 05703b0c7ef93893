"""Tensor conventions shared by every layer.

Optimisation runs in float64/complex128. Inputs of another floating dtype are
refused loudly instead of cast silently (a complex64 beamformer fed into a CRB
would lose most of its digits); plain Python numbers and NumPy arrays are
converted.
"""

from __future__ import annotations

import numpy as np
import torch

REAL = torch.float64
COMPLEX = torch.complex128


class DTypeError(TypeError):
    """A tensor of the wrong precision was handed to a float64/complex128 routine."""


def as_real(x, name: str = "input") -> torch.Tensor:
    """Return ``x`` as a float64 tensor; refuse float32/complex tensors."""
    if isinstance(x, torch.Tensor):
        if x.dtype == REAL:
            return x
        if x.is_complex() or x.is_floating_point():
            raise DTypeError(f"{name}: expected float64, got {x.dtype}")
        return x.to(REAL)
    arr = np.asarray(x)
    if np.iscomplexobj(arr):
        raise DTypeError(f"{name}: expected real values, got complex")
    return torch.as_tensor(arr, dtype=REAL)


def as_complex(x, name: str = "input") -> torch.Tensor:
    """Return ``x`` as a complex128 tensor; refuse complex64/float32 tensors."""
    if isinstance(x, torch.Tensor):
        if x.dtype == COMPLEX:
            return x
        if x.dtype == REAL:
            return x.to(COMPLEX)
        if x.is_complex() or x.is_floating_point():
            raise DTypeError(f"{name}: expected complex128 or float64, got {x.dtype}")
        return x.to(COMPLEX)
    return torch.as_tensor(np.asarray(x), dtype=COMPLEX)


def hermitian(x: torch.Tensor) -> torch.Tensor:
    """Conjugate transpose of the last two dimensions."""
    return x.conj().transpose(-2, -1)


def real_inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``Re tr(a^H b)`` over the last two dimensions, i.e. the real inner product."""
    return (a.conj() * b).real.sum(dim=(-2, -1))


def is_finite(x: torch.Tensor) -> bool:
    return bool(torch.isfinite(torch.view_as_real(x) if x.is_complex() else x).all())
