"""The one seed API: every random draw in the library goes through a
``numpy.random.Generator`` created here (PCG64, identical on every platform).
No global random state is touched.
"""

from __future__ import annotations

import numpy as np
import torch


def make_rng(seed: int | np.random.SeedSequence | np.random.Generator) -> np.random.Generator:
    """A fresh generator from an int seed or a SeedSequence; a Generator is passed through."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (bool,)) or (not isinstance(seed, np.random.SeedSequence) and int(seed) != seed):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if not isinstance(seed, np.random.SeedSequence) and int(seed) < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    return np.random.Generator(np.random.PCG64(seed))


def complex_normal(rng: np.random.Generator, shape, variance: float = 1.0) -> torch.Tensor:
    r"""Samples of :math:`\mathcal{CN}(0, \text{variance})`, complex128 tensor of ``shape``."""
    std = np.sqrt(variance / 2.0)
    z = rng.standard_normal(tuple(shape)) + 1j * rng.standard_normal(tuple(shape))
    return torch.as_tensor(std * z, dtype=torch.complex128)


def uniform(rng: np.random.Generator, low, high, shape) -> torch.Tensor:
    """Uniform samples on ``[low, high)``, float64 tensor."""
    return torch.as_tensor(rng.uniform(low, high, size=tuple(shape)), dtype=torch.float64)
