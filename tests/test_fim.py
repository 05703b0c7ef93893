"""The Fisher-information engine against independent formulations."""

import math

import pytest
import torch

from helpers import assert_close, autograd_grad, central_difference_grad, crandn
from isac.metrics.bounds.fang import fang_derivatives, fang_fim
from isac.metrics.fim import (
    BeamFisherMap, FactoredDerivatives, change_of_variables, crb_matrix, crb_trace, fisher_information, schur_complement,
)
from isac.scenario.arrays import fang_upa, li_ula


def _fim_by_autograd(mean_fn, omega, W, snapshots, noise):
    """F = (2L/s2) Re sum_s J_s^H J_s with J_s = d(G(omega) w_s)/d omega, via autograd.

    Independent of the engine and of the arrays' analytic derivatives.
    """
    def real_imag(om):
        v = mean_fn(om)  # [Nr, S]
        return torch.cat([v.real.reshape(-1), v.imag.reshape(-1)])
    jac = torch.autograd.functional.jacobian(real_imag, omega)  # [2 Nr S, P]
    return (2.0 * snapshots / noise) * (jac.T @ jac)


def test_factored_dense_and_covariance_forms_agree():
    g = torch.Generator().manual_seed(1)
    P, R, Nr, Nt, S = 5, 3, 4, 6, 3
    d = FactoredDerivatives(crandn(g, 2, P, R, Nr), crandn(g, 2, P, R, Nt))
    W = crandn(g, 2, Nt, S)
    Rx = W @ W.conj().transpose(-2, -1)
    kw = dict(snapshots=7, noise_power_w=0.3)
    f1 = fisher_information(d, beams=W, **kw)
    f2 = fisher_information(d, covariance=Rx, **kw)
    f3 = fisher_information(d.dense(), beams=W, **kw)
    f4 = fisher_information(d.dense(), covariance=Rx, **kw)
    # Direct definition F_pq = (2L/s2) Re tr(dG_p R dG_q^H).
    dg = d.dense()
    direct = torch.einsum("bpij,bjk,bqlk->bpqil", dg, Rx, dg.conj()).diagonal(dim1=-2, dim2=-1).sum(-1).real
    direct = 2 * 7 / 0.3 * direct
    for f in (f1, f2, f3, f4):
        assert_close(f, direct, rtol=1e-10, what="FIM forms")


def _fang_mean(tx_n, rx_n, W, m):
    """Noise-free echo G(omega) W written from 003 eqs. (3)-(7) with explicit Kronecker products."""
    (nth, ntv), (nrh, nrv) = tx_n, rx_n

    def steer(nh, nv, th, ph):
        ih = torch.arange(nh, dtype=torch.float64)
        iv = torch.arange(nv, dtype=torch.float64)
        ah = torch.exp(1j * math.pi * ih * torch.sin(th) * torch.sin(ph)) / math.sqrt(nh)
        av = torch.exp(1j * math.pi * iv * torch.cos(ph)) / math.sqrt(nv)
        return torch.kron(ah, av)

    def mean(omega):
        th, ph, ar, ai = omega[:m], omega[m:2 * m], omega[2 * m:3 * m], omega[3 * m:]
        G = 0
        for i in range(m):
            b = steer(nrh, nrv, th[i], ph[i])
            a = steer(nth, ntv, th[i], ph[i])
            G = G + torch.complex(ar[i], ai[i]) * torch.outer(b, a.conj())
        return G @ W
    return mean


@pytest.mark.parametrize("m", [1, 3])
def test_fang_fim_equals_autograd_fim_of_the_echo(m):
    g = torch.Generator().manual_seed(2 + m)
    tx, rx = (2, 3), (3, 2)
    W = crandn(g, 6, 4)
    theta = torch.rand(m, generator=g, dtype=torch.float64) - 0.5
    phi = torch.rand(m, generator=g, dtype=torch.float64) + 0.3
    alpha = crandn(g, m)
    F = fang_fim(fang_upa(*tx), fang_upa(*rx), theta, phi, alpha, W, 30, 0.5)
    omega = torch.cat([theta, phi, alpha.real, alpha.imag])
    ref = _fim_by_autograd(_fang_mean(tx, rx, W, m), omega, W, 30, 0.5)
    assert_close(F, ref, rtol=1e-9, atol=1e-12 * float(ref.abs().max()), what="003 FIM")


def test_fang_theta_block_equals_hadamard_form():
    """theta-theta block of 003 eq. (8)-(9), re-derived in Hadamard form from eq. (10)."""
    g = torch.Generator().manual_seed(9)
    m = 3
    tx, rx = fang_upa(3, 2), fang_upa(2, 2)
    W = crandn(g, 6, 5)
    theta = torch.tensor([0.1, -0.4, 0.7], dtype=torch.float64)
    phi = torch.tensor([0.5, 1.0, -0.6], dtype=torch.float64)
    alpha = crandn(g, m)
    Rx = W @ W.conj().T
    A, At, _ = tx.steering_and_derivatives(theta, phi)
    B, Bt, _ = rx.steering_and_derivatives(theta, phi)
    A, At, B, Bt = A.T, At.T, B.T, Bt.T  # columns per target
    U = torch.diag(alpha)
    H = lambda x: x.conj().T  # noqa: E731
    # d(v)/d theta_i = alpha_i (Bt e_i a_i^H + b_i At_i^H) x:
    # F_ij = Re[ (U A^H R A U^H)_ji (Bt^H Bt)_ij + (U At^H R A U^H)_ji (Bt^H B)_ij
    #          + (U A^H R At U^H)_ji (B^H Bt)_ij + (U At^H R At U^H)_ji (B^H B)_ij ]
    F11 = ((U @ H(A) @ Rx @ A @ H(U)).T * (H(Bt) @ Bt) + (U @ H(At) @ Rx @ A @ H(U)).T * (H(Bt) @ B)
           + (U @ H(A) @ Rx @ At @ H(U)).T * (H(B) @ Bt) + (U @ H(At) @ Rx @ At @ H(U)).T * (H(B) @ B))
    ref = 2 * 30 / 0.7 * F11.real
    F = fang_fim(tx, rx, theta, phi, alpha, W, 30, 0.7)
    assert_close(F[:m, :m], ref, rtol=1e-10, what="F_theta_theta")


def test_single_target_ula_doa_crb_textbook():
    """Colocated MIMO radar, one target, G = beta b(theta) a(theta)^H, unknown complex beta.

    Textbook CRB (Li & Stoica's MIMO radar CRB with a complex amplitude nuisance):
    CRB(theta) = s2 / (2 L |beta|^2 [tr(dA R dA^H) - |tr(A R dA^H)|^2 / tr(A R A^H)]).
    """
    g = torch.Generator().manual_seed(4)
    n, L, s2 = 6, 16, 0.2
    arr = li_ula(n)
    theta = torch.tensor(1.1, dtype=torch.float64)
    beta = torch.tensor(0.3 - 0.4j, dtype=torch.complex128)
    W = crandn(g, n, n)
    Rx = W @ W.conj().T
    a, da = arr.steering_and_derivative(theta)
    A = torch.outer(a, a.conj())
    dA = torch.outer(da, a.conj()) + torch.outer(a, da.conj())
    tr = lambda x: torch.trace(x)  # noqa: E731
    denom = tr(dA @ Rx @ dA.conj().T).real - tr(A @ Rx @ dA.conj().T).abs() ** 2 / tr(A @ Rx @ A.conj().T).real
    textbook = s2 / (2 * L * beta.abs() ** 2 * denom)
    d = FactoredDerivatives(
        torch.stack([torch.stack([beta * da, beta * a]), torch.stack([a, 0 * a]), torch.stack([1j * a, 0 * a])]),
        torch.stack([torch.stack([a, da]), torch.stack([a, 0 * a]), torch.stack([a, 0 * a])]),
    )
    F = fisher_information(d, covariance=Rx, snapshots=L, noise_power_w=s2)
    J = schur_complement(F, [0], [1, 2])
    assert_close(1.0 / J[0, 0], textbook, rtol=1e-10, what="DoA CRB")
    assert_close(crb_matrix(F)[0, 0], textbook, rtol=1e-8, what="DoA CRB via inverse")


def test_fim_symmetric_psd_and_crb_trace_inf_when_singular():
    g = torch.Generator().manual_seed(5)
    tx, rx = fang_upa(2, 2), fang_upa(2, 2)
    theta = torch.tensor([0.2, -0.3], dtype=torch.float64)
    phi = torch.tensor([0.4, 0.9], dtype=torch.float64)
    alpha = crandn(g, 2)
    for s in (1, 4):
        F = fang_fim(tx, rx, theta, phi, alpha, crandn(g, 4, s), 10, 1.0)
        assert torch.equal(F, F.T)
        assert float(torch.linalg.eigvalsh(F).min()) >= -1e-10 * float(F.abs().max())
    # W = 0 carries no information: the bound is +inf, never a finite number.
    F0 = fang_fim(tx, rx, theta, phi, alpha, torch.zeros(4, 2, dtype=torch.complex128), 10, 1.0)
    assert math.isinf(float(crb_trace(F0)))
    zero = torch.zeros(8, 8, dtype=torch.float64)
    assert math.isinf(float(crb_trace(zero)))


def test_change_of_variables_matches_chain_rule():
    """FIM of p where omega = f(p): T^T F T equals the FIM computed directly in p."""
    g = torch.Generator().manual_seed(6)
    n, L, s2 = 5, 8, 1.0
    arr = li_ula(n)
    W = crandn(g, n, 3)
    beta = torch.tensor(0.7 + 0.1j, dtype=torch.complex128)

    def mean_in_position(p):  # target at (x, y); ULA along x at the origin; theta measured from x axis
        th = torch.atan2(p[1], p[0])
        a = arr.steering(th)
        return beta * torch.outer(a, a.conj()) @ W

    p0 = torch.tensor([3.0, 4.0], dtype=torch.float64)
    direct = _fim_by_autograd(mean_in_position, p0, W, L, s2)
    th0 = torch.atan2(p0[1], p0[0])
    a, da = arr.steering_and_derivative(th0)
    dG = (beta * (torch.outer(da, a.conj()) + torch.outer(a, da.conj())))[None]
    F_theta = fisher_information(dG, beams=W, snapshots=L, noise_power_w=s2)
    T = torch.stack([-p0[1], p0[0]]).reshape(1, 2) / (p0 @ p0)  # d theta / d (x, y)
    assert_close(change_of_variables(F_theta, T), direct, rtol=1e-10, atol=1e-12, what="T^T F T")


def test_crlb_gradient_matches_central_differences():
    g = torch.Generator().manual_seed(7)
    tx, rx = fang_upa(2, 2), fang_upa(2, 1)
    theta = torch.tensor([0.3], dtype=torch.float64)
    phi = torch.tensor([0.8], dtype=torch.float64)
    alpha = torch.tensor([0.5 + 0.2j], dtype=torch.complex128)
    W = crandn(g, 4, 3)
    f = lambda w: crb_trace(fang_fim(tx, rx, theta, phi, alpha, w, 10, 1.0))  # noqa: E731
    assert_close(autograd_grad(f, W), central_difference_grad(f, W), rtol=1e-5, what="grad tr(F^-1)")


def test_batched_fim_equals_looped():
    g = torch.Generator().manual_seed(8)
    tx, rx = fang_upa(2, 2), fang_upa(2, 2)
    theta = torch.rand(3, 2, generator=g, dtype=torch.float64)
    phi = torch.rand(3, 2, generator=g, dtype=torch.float64)
    alpha = crandn(g, 3, 2)
    W = crandn(g, 3, 4, 5)
    Fb = fang_fim(tx, rx, theta, phi, alpha, W, 12, 0.5)
    for b in range(3):
        assert_close(Fb[b], fang_fim(tx, rx, theta[b], phi[b], alpha[b], W[b], 12, 0.5), rtol=1e-13, what="batch")


def test_schur_complement_equals_inverse_block():
    g = torch.Generator().manual_seed(10)
    X = torch.randn(6, 6, generator=g, dtype=torch.float64)
    F = X @ X.T + 0.1 * torch.eye(6, dtype=torch.float64)
    J = schur_complement(F, [0, 2], [1, 3, 4, 5])
    inv = torch.linalg.inv(F)[[0, 2]][:, [0, 2]]
    assert_close(torch.linalg.inv(J), inv, rtol=1e-10, what="Schur")


def test_derivative_shapes_are_checked():
    g = torch.Generator().manual_seed(11)
    with pytest.raises(ValueError):
        FactoredDerivatives(crandn(g, 2, 3, 4), crandn(g, 3, 3, 4))
    d = fang_derivatives(fang_upa(2, 2), fang_upa(2, 2), torch.zeros(2, dtype=torch.float64),
                         torch.zeros(2, dtype=torch.float64), crandn(g, 2))
    assert d.num_parameters == 8


@pytest.mark.parametrize("shape", [(1, 3), (2, 4)])
def test_beam_fisher_map_equals_the_engine_and_autograd(shape):
    """The low-rank map gives the engine's F and tr(F^-1), and the gradient of -tr(F^-1) equals autograd's.

    N_t = 3 < 3M: the transmit vectors span all of C^Nt; N_t = 8: rank 3M = 6 < N_t."""
    g = torch.Generator().manual_seed(11)
    nt = shape[0] * shape[1]
    tx, rx = fang_upa(*shape), fang_upa(2, 2)
    theta = torch.tensor([[0.2, -0.4], [0.5, 0.1]], dtype=torch.float64)
    phi = torch.tensor([[0.7, 1.1], [0.9, 1.3]], dtype=torch.float64)
    alpha = crandn(g, 2, 2)
    d = fang_derivatives(tx, rx, theta, phi, alpha)
    kw = dict(snapshots=9, noise_power_w=0.4)
    fmap = BeamFisherMap.from_derivatives(d, **kw)
    assert fmap.rank == min(nt, 6)
    W = crandn(g, 2, nt, 5)
    F = fisher_information(d, beams=W, **kw)
    assert_close(fmap.fim(W), F, rtol=1e-12, atol=1e-12 * float(F.abs().max()), what="F")
    tr, grad = fmap.crb_trace_and_gradient(W)
    assert_close(tr, crb_trace(F), rtol=1e-10, what="tr(F^-1)")
    for b in range(2):
        db = FactoredDerivatives(d.left[b], d.right[b])
        ref = autograd_grad(lambda w: -crb_trace(fisher_information(db, beams=w, **kw)), W[b])
        assert_close(grad[b], ref, rtol=1e-8, atol=1e-10 * float(ref.abs().max()), what="grad -tr(F^-1)")
    one = BeamFisherMap.from_derivatives(FactoredDerivatives(d.left[1], d.right[1]), **kw)
    assert_close(one.fim(W[1]), fmap.select(torch.tensor([1])).squeeze().fim(W[1]), rtol=1e-12, what="select/squeeze")


def test_beam_fisher_map_singular_fim_is_inf_with_zero_gradient():
    g = torch.Generator().manual_seed(12)
    tx, rx = fang_upa(2, 2), fang_upa(2, 2)
    d = fang_derivatives(tx, rx, torch.tensor([0.2, -0.3], dtype=torch.float64),
                         torch.tensor([0.4, 0.9], dtype=torch.float64), crandn(g, 2))
    fmap = BeamFisherMap.from_derivatives(d, snapshots=10, noise_power_w=1.0)
    tr, grad = fmap.crb_trace_and_gradient(torch.zeros(4, 3, dtype=torch.complex128))
    assert math.isinf(float(tr)) and float(tr) > 0 and not bool(grad.any())
