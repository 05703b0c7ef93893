"""SINR and rates against closed forms and numerical derivatives."""

import math

import pytest
import torch

from helpers import assert_close, autograd_grad, central_difference_grad, crandn
from isac.metrics.comm import rates_nats, sinr, sum_rate_nats
from isac.solvers.baselines import mrt_directions, zf_directions
from isac.tensors import DTypeError


def _sinr_loop(H, W, s2):
    k = H.shape[1]
    out = []
    for i in range(k):
        h = H[:, i]
        gains = [abs(complex(h.conj() @ W[:, j])) ** 2 for j in range(W.shape[1])]
        out.append(gains[i] / (sum(gains) - gains[i] + s2))
    return torch.tensor(out, dtype=torch.float64)


def test_single_user_mrt_snr_closed_form():
    g = torch.Generator().manual_seed(0)
    h = crandn(g, 8, 1)
    P, s2 = 2.5, 0.1
    w = mrt_directions(h) * math.sqrt(P)
    expect = P * float(torch.linalg.vector_norm(h)) ** 2 / s2
    assert_close(sinr(h, w, s2), torch.tensor([expect], dtype=torch.float64), rtol=1e-13, what="MRT SNR")
    assert_close(rates_nats(h, w, s2), torch.tensor([math.log1p(expect)], dtype=torch.float64), rtol=1e-13, what="rate")


def test_sinr_matches_loop_with_sensing_streams():
    g = torch.Generator().manual_seed(1)
    H, W = crandn(g, 5, 3), crandn(g, 5, 6)
    assert_close(sinr(H, W, 0.3), _sinr_loop(H, W, 0.3), rtol=1e-12, what="SINR")


def test_zero_forcing_removes_interference():
    g = torch.Generator().manual_seed(2)
    H = crandn(g, 6, 4)
    cross = (H.conj().T @ zf_directions(H)).abs()
    off = cross - torch.diag(torch.diagonal(cross))
    assert float(off.max()) < 1e-12 * float(cross.max())


def test_rate_gradient_matches_central_differences():
    g = torch.Generator().manual_seed(3)
    H, W = crandn(g, 4, 2), crandn(g, 4, 3)
    f = lambda w: sum_rate_nats(H, w, 0.5)  # noqa: E731
    assert_close(autograd_grad(f, W), central_difference_grad(f, W), rtol=1e-6, what="grad sum rate")


def test_common_phase_per_beam_does_not_change_rates():
    g = torch.Generator().manual_seed(4)
    H, W = crandn(g, 4, 2), crandn(g, 4, 4)
    phases = torch.exp(1j * torch.tensor([0.3, -2.0, 1.1, 2.9], dtype=torch.float64))
    assert_close(rates_nats(H, W * phases, 0.2), rates_nats(H, W, 0.2), rtol=1e-12, what="phase invariance")


def test_batched_equals_looped():
    g = torch.Generator().manual_seed(5)
    H, W = crandn(g, 3, 4, 2), crandn(g, 3, 4, 3)
    s2 = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    batch = rates_nats(H, W, s2)
    for b in range(3):
        assert torch.equal(batch[b], rates_nats(H[b], W[b], float(s2[b])))


def test_tiny_sinr_keeps_relative_precision():
    h = torch.ones(2, 1, dtype=torch.complex128)
    w = torch.full((2, 1), 1e-12, dtype=torch.complex128)
    r = float(rates_nats(h, w, 1.0)[0])
    assert math.isclose(r, 4e-24, rel_tol=1e-10)


def test_bad_inputs():
    g = torch.Generator().manual_seed(6)
    with pytest.raises(DTypeError):
        sinr(crandn(g, 3, 2).to(torch.complex64), crandn(g, 3, 2), 1.0)
    with pytest.raises(ValueError, match="antennas"):
        sinr(crandn(g, 3, 2), crandn(g, 4, 2), 1.0)
    with pytest.raises(ValueError, match="columns"):
        sinr(crandn(g, 3, 2), crandn(g, 3, 1), 1.0)
