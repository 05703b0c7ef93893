"""Steering vectors: conventions from the papers' formulas, derivatives against autograd."""

import math

import numpy as np
import pytest
import torch

from helpers import assert_close
from isac.scenario.arrays import ULA, UPA, fang_upa, li_ula, lian_upa, xu_ula, zhao_ula


def _autograd_derivative(fn, *angles, which=0):
    """d steering / d angles[which] by autograd on real and imaginary parts separately."""
    def real_imag(*a):
        v = fn(*a)
        return torch.cat([v.real, v.imag], -1)
    jac = torch.autograd.functional.jacobian(real_imag, tuple(angles))[which]  # [2N] for scalar angle
    n = jac.shape[0] // 2
    return torch.complex(jac[:n], jac[n:])


@pytest.mark.parametrize(
    "array, formula",
    [
        (li_ula(6, 0.5), lambda m, t: np.exp(1j * 2 * np.pi * 0.5 * m * np.cos(t))),
        (xu_ula(5), lambda m, t: np.exp(-1j * np.pi * m * np.sin(t))),
        (zhao_ula(7, 0.5), lambda m, t: np.exp(-1j * 2 * np.pi * 0.5 * m * np.sin(t))),
    ],
)
def test_ula_conventions_match_paper_formulas(array, formula):
    theta = 0.37
    m = np.arange(array.size)
    expect = formula(m, theta)
    if array.normalized:
        expect = expect / np.sqrt(array.size)
    assert_close(array.steering(torch.tensor(theta, dtype=torch.float64)), torch.as_tensor(expect), rtol=1e-13, what="steering")


def test_fang_upa_is_kronecker_of_paper_vectors():
    nh, nv = 3, 4
    theta, phi = 0.4, -0.9
    a_h = np.exp(1j * np.pi * np.arange(nh) * np.sin(theta) * np.sin(phi)) / np.sqrt(nh)
    a_v = np.exp(1j * np.pi * np.arange(nv) * np.cos(phi)) / np.sqrt(nv)
    t = torch.tensor(theta, dtype=torch.float64)
    p = torch.tensor(phi, dtype=torch.float64)
    assert_close(fang_upa(nh, nv).steering(t, p), torch.as_tensor(np.kron(a_h, a_v)), rtol=1e-13, what="a_h kron a_v")
    authors = fang_upa(nh, nv, element_order="second-major").steering(t, p)
    assert_close(authors, torch.as_tensor(np.kron(a_v, a_h)), rtol=1e-13, what="authors' kron(a_v, a_h)")


def test_lian_upa_xz_plane():
    nx, nz = 3, 2
    theta, beta = 0.3, 1.1  # elevation, azimuth
    ix, iz = np.meshgrid(np.arange(nx), np.arange(nz), indexing="ij")
    phase = np.pi * (ix * np.cos(beta) * np.cos(theta) + iz * np.sin(theta))
    expect = np.exp(1j * phase).reshape(-1) / np.sqrt(nx * nz)
    got = lian_upa(nx, nz).steering(torch.tensor(theta, dtype=torch.float64), torch.tensor(beta, dtype=torch.float64))
    assert_close(got, torch.as_tensor(expect), rtol=1e-13, what="lian UPA")


@pytest.mark.parametrize("array", [li_ula(5), xu_ula(4), zhao_ula(6, 0.45), ULA(3, 0.7, -1, "cos", True)])
def test_ula_derivative_matches_autograd(array):
    t = torch.tensor(0.61, dtype=torch.float64)
    _, da = array.steering_and_derivative(t)
    assert_close(da, _autograd_derivative(array.steering, t), rtol=1e-12, what="da/dtheta")


@pytest.mark.parametrize("array", [fang_upa(3, 2), fang_upa(2, 3, element_order="second-major"), lian_upa(2, 3),
                                   UPA((2, 2), 0.4, -1, "xz", False)])
def test_upa_derivatives_match_autograd(array):
    t1 = torch.tensor(0.33, dtype=torch.float64)
    t2 = torch.tensor(-0.71, dtype=torch.float64)
    _, d1, d2 = array.steering_and_derivatives(t1, t2)
    assert_close(d1, _autograd_derivative(array.steering, t1, t2, which=0), rtol=1e-12, what="d/dangle1")
    assert_close(d2, _autograd_derivative(array.steering, t1, t2, which=1), rtol=1e-12, what="d/dangle2")


def test_batched_angles_equal_looped():
    arr = fang_upa(2, 3)
    th = torch.linspace(-1, 1, 6, dtype=torch.float64).reshape(2, 3)
    ph = torch.linspace(0.2, 1.4, 6, dtype=torch.float64).reshape(2, 3)
    batch = arr.steering_and_derivatives(th, ph)
    for i in range(2):
        for j in range(3):
            single = arr.steering_and_derivatives(th[i, j], ph[i, j])
            for b, s in zip(batch, single):
                assert torch.equal(b[i, j], s)


def test_normalised_steering_has_unit_norm():
    a = fang_upa(4, 4).steering(torch.rand(5, dtype=torch.float64), torch.rand(5, dtype=torch.float64))
    assert_close(torch.linalg.vector_norm(a, dim=-1), torch.ones(5, dtype=torch.float64), rtol=1e-14, what="norm")
    assert math.isclose(float(torch.linalg.vector_norm(li_ula(9).steering(torch.tensor(0.2, dtype=torch.float64)))), 3.0)


def test_float32_is_refused():
    from isac.tensors import DTypeError
    with pytest.raises(DTypeError):
        li_ula(3).steering(torch.tensor(0.1, dtype=torch.float32))
