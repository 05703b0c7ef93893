r"""One Fisher-information engine for every sensing bound in the library.

Model: :math:`L` snapshots of :math:`\mathbf y = \mathbf G(\boldsymbol\eta)\mathbf x + \mathbf n`,
:math:`\mathbf n\sim\mathcal{CN}(0,\sigma^2\mathbf I)`, with transmit sample covariance
:math:`\mathbf R_x = \frac1L\sum_l \mathbf x_l\mathbf x_l^H` (:math:`=\mathbf W\mathbf W^H`
for unit-power independent streams). The real parameter vector
:math:`\boldsymbol\eta\in\mathbb R^P` has Fisher information

.. math::

    F_{pq} = \frac{2L}{\sigma^2}\,\Re\,\mathrm{tr}\!\left(
        \partial_p\mathbf G\;\mathbf R_x\;\partial_q\mathbf G^H\right).

Derivatives are given either densely, ``dG [..., P, Nr, Nt]``, or factored as a
sum of rank-one terms, :math:`\partial_p\mathbf G = \sum_r \mathbf u_{pr}\mathbf v_{pr}^H`
(:class:`FactoredDerivatives`), which is how every steering-vector model in the
papers is built and costs :math:`O((PR)^2(N_r+N_t))` instead of
:math:`O(P^2 N_r N_t^2)`. The transmit side is either the covariance ``R_x
[..., Nt, Nt]`` or the beamformers ``W [..., Nt, S]``.

Then :func:`schur_complement` removes nuisance parameters (path gains, RCS),
:func:`change_of_variables` maps e.g. angles to a position via the Jacobian
:math:`\mathbf T = \partial\boldsymbol\omega/\partial\mathbf p`
(:math:`\mathbf J_{\mathbf p} = \mathbf T^T\mathbf J_{\boldsymbol\omega}\mathbf T`),
and :func:`crb_trace` gives :math:`\mathrm{tr}(\mathbf J^{-1})`.

Everything is differentiable in torch (autograd through ``W`` or ``R_x``) and
batched over leading dimensions.
"""

from __future__ import annotations

import functools

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from isac.tensors import COMPLEX, DTypeError, hermitian


@dataclass(frozen=True)
class FactoredDerivatives:
    r""":math:`\partial_p\mathbf G = \sum_r` ``left[..., p, r, :]`` ``right[..., p, r, :]``:math:`^H`.

    Shapes: ``left [..., P, R, Nr]``, ``right [..., P, R, Nt]``, complex128.
    Unused terms are zero vectors.
    """

    left: torch.Tensor
    right: torch.Tensor

    def __post_init__(self) -> None:
        for name, t in (("left", self.left), ("right", self.right)):
            if t.dtype != COMPLEX:
                raise DTypeError(f"FactoredDerivatives.{name}: expected complex128, got {t.dtype}")
        if self.left.shape[-3:-1] != self.right.shape[-3:-1]:
            raise ValueError(
                f"FactoredDerivatives: left {tuple(self.left.shape)} and right "
                f"{tuple(self.right.shape)} disagree on (P, R)"
            )

    @property
    def num_parameters(self) -> int:
        return self.left.shape[-3]

    def flattened(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(U [..., PR, Nr], V [..., PR, Nt], gram_U [..., PR, PR])`` with ``gram_U[i, j] = u_i^H u_j``.

        Row ``p * R + r`` holds term r of parameter p. ``gram_U`` does not depend on the
        transmit signal, so it is computed once per object: iterative solvers that evaluate
        the FIM for many W reuse it.
        """
        return self._flat

    @functools.cached_property
    def _flat(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        u, v = self.left, self.right
        pr = u.shape[-3] * u.shape[-2]
        uf = u.reshape(*u.shape[:-3], pr, u.shape[-1])
        vf = v.reshape(*v.shape[:-3], pr, v.shape[-1])
        return uf, vf, uf.conj() @ uf.transpose(-2, -1)

    @functools.cached_property
    def gram_terms(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(Re, Im)`` of ``gram_U`` transposed, contiguous ``[..., PR, PR]``, and the 0/1 matrix ``E [PR, P]``
        that sums the R terms of each parameter: cached for :func:`fisher_information` with beams."""
        g = self.flattened()[2].transpose(-2, -1)
        p, r = self.left.shape[-3], self.left.shape[-2]
        e = torch.kron(torch.eye(p, dtype=torch.float64, device=g.device),
                       torch.ones(r, 1, dtype=torch.float64, device=g.device))
        return g.real.contiguous(), g.imag.contiguous(), e

    def dense(self) -> torch.Tensor:
        """``dG [..., P, Nr, Nt]``."""
        return torch.einsum("...pri,...prj->...pij", self.left, self.right.conj())


def _check_transmit(covariance, beams):
    if (covariance is None) == (beams is None):
        raise ValueError("give exactly one of covariance (R_x) or beams (W)")
    x = covariance if covariance is not None else beams
    if x.dtype != COMPLEX:
        raise DTypeError(f"transmit {'covariance' if covariance is not None else 'beams'}: expected complex128, got {x.dtype}")
    return x


def _scale(snapshots: int | float | torch.Tensor, noise_power_w: float | torch.Tensor) -> torch.Tensor:
    r"""The factor :math:`2L/\sigma^2` of every FIM here."""
    return 2.0 * torch.as_tensor(snapshots, dtype=torch.float64) / torch.as_tensor(noise_power_w, dtype=torch.float64)


def fisher_information(
    derivatives: torch.Tensor | FactoredDerivatives,
    *,
    covariance: torch.Tensor | None = None,
    beams: torch.Tensor | None = None,
    snapshots: int | float | torch.Tensor,
    noise_power_w: float | torch.Tensor,
) -> torch.Tensor:
    r"""FIM ``[..., P, P]`` (float64) of the linear Gaussian model.

    Args:
        derivatives: ``dG [..., P, Nr, Nt]`` or :class:`FactoredDerivatives`.
        covariance: ``R_x [..., Nt, Nt]`` (give this or ``beams``).
        beams: ``W [..., Nt, S]`` with :math:`\mathbf R_x=\mathbf W\mathbf W^H`.
        snapshots: L.
        noise_power_w: :math:`\sigma^2` in watts, scalar or ``[...]``.
    """
    x = _check_transmit(covariance, beams)
    scale = _scale(snapshots, noise_power_w)
    if isinstance(derivatives, FactoredDerivatives):
        _, vf, _ = derivatives.flattened()
        if beams is not None:
            vw = vf.conj() @ x  # [..., PR, S]: v_i^H W
            gram_v = vw @ hermitian(vw)  # (i, j) = v_i^H R v_j
        else:
            gram_v = vf.conj() @ x @ vf.transpose(-2, -1)
        # F_(pr),(qs) = Re (v_pr^H R v_qs)(u_qs^H u_pr), summed over r, s (E^T prod E: contiguous
        # real arithmetic and two small products, ~3x faster than a strided complex reduction)
        gu_re, gu_im, e = derivatives.gram_terms
        gv = torch.view_as_real(gram_v)
        prod = gv[..., 0] * gu_re - gv[..., 1] * gu_im
        fim = e.transpose(0, 1) @ prod @ e
    else:
        dg = derivatives
        if dg.dtype != COMPLEX:
            raise DTypeError(f"derivatives: expected complex128, got {dg.dtype}")
        if beams is not None:
            y = dg @ x.unsqueeze(-3)  # [..., P, Nr, S]
            yf = y.reshape(*y.shape[:-2], -1)
            fim = (yf @ hermitian(yf)).real
        else:
            y = dg @ x.unsqueeze(-3)  # dG R
            yf = y.reshape(*y.shape[:-2], -1)
            gf = dg.reshape(*dg.shape[:-2], -1)
            fim = (yf @ hermitian(gf)).real
    fim = 0.5 * (fim + fim.transpose(-2, -1))
    return scale.reshape(scale.shape + (1, 1)) * fim


@dataclass(frozen=True)
class BeamFisherMap:
    r"""The FIM of :func:`fisher_information` with beams, as a linear map of one small real Gram matrix.

    For iterative solvers that evaluate :math:`\mathrm{tr}(\mathbf F^{-1}(\mathbf W))` and its gradient
    thousands of times. :math:`\mathbf F` depends on :math:`\mathbf W` only through
    :math:`\mathbf v_i^H\mathbf W`, and the :math:`PR` transmit vectors :math:`\mathbf v_i` span an
    :math:`r`-dimensional subspace (:math:`r = 3M` for point targets: :math:`\mathbf a`,
    :math:`\dot{\mathbf a}_\theta`, :math:`\dot{\mathbf a}_\phi`). With an orthonormal basis
    :math:`\mathbf B` ``[..., r, Nt]`` of the span of the :math:`\mathbf v_i^*` (rows),
    :math:`\mathbf Y = [\Re(\mathbf B\mathbf W); \Im(\mathbf B\mathbf W)]` ``[..., 2r, S]`` and its Gram matrix
    :math:`\mathbf\Gamma = \mathbf Y\mathbf Y^T`,

    .. math::

        \mathrm{vec}(\mathbf F) = \mathbf K\,\mathrm{vec}(\mathbf\Gamma),\qquad
        \frac{\partial(-\mathrm{tr}\,\mathbf F^{-1})}{\partial\mathbf Y} = 2\,\mathbf G\mathbf Y,\quad
        \mathbf G = \mathrm{mat}\big(\mathbf K^T\mathrm{vec}(\mathbf F^{-2})\big),

    with ``K`` ``[..., P*P, 4*r*r]`` (float64, scale :math:`2L/\sigma^2` included) symmetrised so that
    G is symmetric. Everything is real arithmetic: :math:`\mathbf Y` is ``real_rows`` applied to
    :math:`[\Re\mathbf W; \Im\mathbf W]`. :meth:`crb_trace_and_gradient` gives the same in terms of a
    complex W (the gradient :math:`\partial/\partial\Re\mathbf W + j\,\partial/\partial\Im\mathbf W`
    is :math:`2\mathbf Q\mathbf W` with :math:`\mathbf Q` of :func:`crb_trace_covariance_gradient`).
    Build with :meth:`from_derivatives`.
    """

    basis: torch.Tensor  # B [..., r, Nt] complex
    real_rows: torch.Tensor  # [[Re B, -Im B], [Im B, Re B]] [..., 2r, 2Nt]
    kmat: torch.Tensor  # K [..., P*P, 4*r*r]
    num_parameters: int
    eye: torch.Tensor  # I [P, P] float64

    @classmethod
    def from_derivatives(
        cls,
        derivatives: FactoredDerivatives,
        *,
        snapshots: int | float | torch.Tensor,
        noise_power_w: float | torch.Tensor,
        rank_tol: float = 1e-12,
    ) -> BeamFisherMap:
        r"""Basis from an SVD of the stacked :math:`\mathbf v_i^*`; ``rank_tol`` relative to the largest
        singular value (one rank for a whole batch: the largest, which stays exact for every instance)."""
        p, r = derivatives.left.shape[-3], derivatives.left.shape[-2]
        _, vf, _ = derivatives.flattened()
        u, s, vh = torch.linalg.svd(vf.conj(), full_matrices=False)
        rank = max(1, int((s > rank_tol * s[..., :1]).sum(-1).max()))
        basis = vh[..., :rank, :]
        coef = (u[..., :rank] * s[..., None, :rank].to(u.dtype)).reshape(*u.shape[:-2], p, r, rank)
        gt = derivatives.gram_terms
        g = torch.complex(gt[0], gt[1]).reshape(*gt[0].shape[:-2], p, r, p, r)
        # With Z = BW and M = Z Z^H: F_pq = Re sum_ab T_pq,ab M_ab, T_pq,ab = sum_rs C_pr,a conj(C_qs,b) gram_u[qs, pr].
        t = torch.einsum("...pra,...qsb,...prqs->...pqab", coef, coef.conj(), g)
        # Re M = G11 + G22, Im M = G21 - G12 in terms of the real Gram G = [[G11, G12], [G21, G22]].
        k = torch.cat([torch.cat([t.real, t.imag], -1), torch.cat([-t.imag, t.real], -1)], -2)
        k = 0.5 * (k + k.transpose(-2, -1))  # acts on the symmetric part of the Gram matrix
        scale = _scale(snapshots, noise_power_w)
        kmat = scale.reshape(scale.shape + (1, 1)) * k.reshape(*k.shape[:-4], p * p, 4 * rank * rank)
        rows = torch.cat([torch.cat([basis.real, -basis.imag], -1), torch.cat([basis.imag, basis.real], -1)], -2)
        return cls(basis, rows.contiguous(), kmat.contiguous(), p, torch.eye(p, dtype=torch.float64, device=kmat.device))

    @property
    def rank(self) -> int:
        return self.basis.shape[-2]

    def fim_from_gram(self, gram: torch.Tensor) -> torch.Tensor:
        """F ``[..., P, P]`` from the Gram matrix ``[..., 2r, 2r]`` of Y."""
        vec = self.kmat @ gram.reshape(*gram.shape[:-2], -1, 1)
        return vec.reshape(*vec.shape[:-2], self.num_parameters, self.num_parameters)

    def crb_trace_and_gram_gradient(self, gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r""":math:`\mathrm{tr}(\mathbf F^{-1})` ``[...]`` and G ``[..., 2r, 2r]`` (see the class docstring).

        F is inverted through its Cholesky factor, whose accuracy does not depend on the
        scaling of F's rows (they differ by 1e10 and more in 003). Where F is not numerically
        positive definite the trace is +inf and G is zero.
        """
        fim = self.fim_from_gram(gram)
        chol, info = torch.linalg.cholesky_ex(fim)
        linv = torch.linalg.solve_triangular(chol, self.eye, upper=False)
        inv = linv.mT @ linv
        phi = inv @ inv
        bad = info != 0  # no host sync: a singular F gives +inf, whatever the partial factor holds
        tr = (linv * linv).sum((-2, -1)).masked_fill_(bad, torch.inf)
        g = (self.kmat.mT @ phi.reshape(*phi.shape[:-2], -1, 1)).reshape(gram.shape)
        return tr, g.masked_fill_(bad[..., None, None], 0.0)

    def squeeze(self) -> BeamFisherMap:
        """The map of a batch of one, without the batch dimension."""
        return BeamFisherMap(self.basis[0], self.real_rows[0], self.kmat[0], self.num_parameters, self.eye)

    def select(self, idx: torch.Tensor) -> BeamFisherMap:
        return BeamFisherMap(self.basis[idx], self.real_rows[idx], self.kmat[idx], self.num_parameters, self.eye)

    def _rows(self, beams: torch.Tensor) -> torch.Tensor:
        return self.real_rows @ torch.cat([beams.real, beams.imag], -2)

    def fim(self, beams: torch.Tensor) -> torch.Tensor:
        """F ``[..., P, P]`` at ``W [..., Nt, S]`` complex (equal to :func:`fisher_information`)."""
        y = self._rows(beams)
        return self.fim_from_gram(y @ y.mT)

    def crb_trace_and_gradient(self, beams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r""":math:`\mathrm{tr}(\mathbf F^{-1})` ``[...]`` and :math:`\nabla_{\mathbf W}(-\mathrm{tr}\,\mathbf F^{-1})`
        ``[..., Nt, S]`` complex at ``W [..., Nt, S]``."""
        y = self._rows(beams)
        tr, g = self.crb_trace_and_gram_gradient(y @ y.mT)
        grad = self.real_rows.mT @ (2.0 * g @ y)  # [d/dRe W; d/dIm W]
        n = beams.shape[-2]
        return tr, torch.complex(grad[..., :n, :], grad[..., n:, :])


def _index(idx: Sequence[int] | torch.Tensor, device) -> torch.Tensor:
    return torch.as_tensor(list(idx) if not isinstance(idx, torch.Tensor) else idx, dtype=torch.long, device=device)


def schur_complement(
    fim: torch.Tensor, keep: Sequence[int] | torch.Tensor, nuisance: Sequence[int] | torch.Tensor
) -> torch.Tensor:
    r"""Equivalent FIM of the ``keep`` parameters: :math:`F_{kk}-F_{kn}F_{nn}^{-1}F_{nk}`.

    This is the information left about the parameters of interest once the
    nuisance parameters (e.g. unknown complex gains) are estimated jointly.
    """
    k = _index(keep, fim.device)
    n = _index(nuisance, fim.device)
    fkk = fim.index_select(-2, k).index_select(-1, k)
    if n.numel() == 0:
        return fkk
    fkn = fim.index_select(-2, k).index_select(-1, n)
    fnn = fim.index_select(-2, n).index_select(-1, n)
    out = fkk - fkn @ torch.linalg.solve(fnn, fkn.transpose(-2, -1))
    return 0.5 * (out + out.transpose(-2, -1))


def change_of_variables(fim: torch.Tensor, jacobian: torch.Tensor) -> torch.Tensor:
    r"""FIM of new parameters :math:`\mathbf p`: :math:`\mathbf T^T\mathbf F\mathbf T`.

    Args:
        fim: ``[..., P, P]`` FIM of the old parameters :math:`\boldsymbol\omega`.
        jacobian: ``T [..., P, Q]`` with :math:`T_{ij}=\partial\omega_i/\partial p_j`.
    """
    out = jacobian.transpose(-2, -1) @ fim @ jacobian
    return 0.5 * (out + out.transpose(-2, -1))


def crb_matrix(fim: torch.Tensor) -> torch.Tensor:
    """Cramér-Rao bound matrix :math:`\\mathbf F^{-1}` ``[..., P, P]``."""
    return torch.linalg.inv(fim)


def crb_trace(fim: torch.Tensor) -> torch.Tensor:
    r""":math:`\mathrm{tr}(\mathbf F^{-1})` ``[...]``; +inf where F is singular."""
    eye = torch.eye(fim.shape[-1], dtype=fim.dtype, device=fim.device)
    sol, info = torch.linalg.solve_ex(fim, eye.expand_as(fim))
    tr = sol.diagonal(dim1=-2, dim2=-1).sum(-1)
    bad = (info != 0) | ~torch.isfinite(tr) | (tr <= 0)
    return torch.where(bad, torch.full_like(tr, float("inf")), tr)


def crb_trace_covariance_gradient(
    derivatives: torch.Tensor | FactoredDerivatives,
    fim: torch.Tensor,
    *,
    snapshots: int | float | torch.Tensor,
    noise_power_w: float | torch.Tensor,
    inverse: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Hermitian :math:`\mathbf Q` ``[..., Nt, Nt]`` with :math:`d\,\mathrm{tr}(\mathbf F^{-1}) = -\Re\,\mathrm{tr}(\mathbf Q\,d\mathbf R_x)`.

    From :math:`d\,\mathrm{tr}(\mathbf F^{-1}) = -\mathrm{tr}(\mathbf\Phi\,d\mathbf F)`,
    :math:`\mathbf\Phi=\mathbf F^{-2}`, and :math:`dF_{pq}=c\,\Re\,\mathrm{tr}(\partial_q\mathbf G^H\partial_p\mathbf G\,d\mathbf R_x)`:

    .. math::

        \mathbf Q = c\sum_{p,q}\Phi_{pq}\,\partial_q\mathbf G^H\partial_p\mathbf G,\qquad c = 2L/\sigma^2 .

    With :math:`\mathbf R_x=\mathbf W\mathbf W^H` the gradient of :math:`-\mathrm{tr}(\mathbf F^{-1})`
    in the convention :math:`\partial f/\partial\Re\mathbf W + j\,\partial f/\partial\Im\mathbf W`
    (= :math:`2\,\partial f/\partial\mathbf W^*`, torch's) is :math:`2\mathbf Q\mathbf W`
    (003 Prop. 3 writes it :math:`(\mathbf Q+\mathbf Q^H)\mathbf W`; its printed blocks (24) are
    garbled, this is the derivation it stands for).

    ``inverse``: :math:`\mathbf F^{-1}` when the caller already has it (then ``fim`` is not inverted again).
    """
    scale = _scale(snapshots, noise_power_w)
    inv = torch.linalg.inv(fim) if inverse is None else inverse
    phi = inv @ inv
    phi = 0.5 * (phi + phi.transpose(-2, -1))
    if isinstance(derivatives, FactoredDerivatives):
        p, r = derivatives.left.shape[-3], derivatives.left.shape[-2]
        _, vf, gram_u = derivatives.flattened()
        # (Phi expanded to the PR x PR term grid) * gram_U, via broadcasting over the term indices.
        grid = gram_u.reshape(*gram_u.shape[:-2], p, r, p, r) * phi.to(gram_u.dtype)[..., :, None, :, None]
        q = vf.transpose(-2, -1) @ grid.reshape(gram_u.shape) @ vf.conj()
    else:
        dg = derivatives
        q = torch.einsum("...pq,...qai,...paj->...ij", phi.to(dg.dtype), dg.conj(), dg)
    q = 0.5 * (q + hermitian(q))
    return scale.to(q.dtype).reshape(scale.shape + (1, 1)) * q


def covariance_coefficients(
    derivatives: torch.Tensor | FactoredDerivatives,
    *,
    snapshots: int | float | torch.Tensor,
    noise_power_w: float | torch.Tensor,
) -> torch.Tensor:
    r"""``C [..., P, P, Nt, Nt]`` with :math:`F_{pq}(\mathbf R_x) = \Re\,\mathrm{tr}(\mathbf C_{pq}\mathbf R_x)`.

    The FIM is linear in the transmit covariance; :math:`\mathbf C_{pq} = c\,\partial_q\mathbf G^H\partial_p\mathbf G`
    with :math:`c = 2L/\sigma^2` (the same expression :func:`fisher_information` evaluates at one
    :math:`\mathbf R_x`). Conic programs over :math:`\mathbf R_x` (an SPEB floor, SDR solvers) take
    these coefficients as constants. Memory :math:`P^2N_t^2`: meant for tens of parameters and antennas.
    """
    dg = derivatives.dense() if isinstance(derivatives, FactoredDerivatives) else derivatives
    if dg.dtype != COMPLEX:
        raise DTypeError(f"derivatives: expected complex128, got {dg.dtype}")
    scale = _scale(snapshots, noise_power_w)
    c = torch.einsum("...qai,...paj->...pqij", dg.conj(), dg)
    return scale.to(c.dtype).reshape(scale.shape + (1, 1, 1, 1)) * c
