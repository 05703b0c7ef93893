r"""Learned beamformers of 004 (Zhao et al.): the GNN module, the DNN benchmark, features and loss.

Both networks map the CSI :math:`\{\mathbf h_l\}` and the target steering vectors
:math:`\{\mathbf a(\theta^k)\}` to beamformers :math:`(\mathbf C, \mathbf S)` of the
``beampattern-sinr`` problem (004 eq. (11)), meeting :math:`\mathrm{tr}(\mathbf R) = P_0`
by construction (normalisation layer, eq. (23)); the SINR constraints are only encouraged by
the loss (eq. (25)), so an output may be infeasible (the ``gnn-ip`` solver then projects it).

Precision: the network weights and activations are float32 (what the checkpoints store); the
raw outputs are cast to float64 *before* the normalisation (23), so ``C`` and ``S`` are
complex128 and the loss is computed by the one metrics implementation
(:mod:`isac.metrics.beampattern`, :func:`isac.metrics.comm.sinr`), which accepts only
float64/complex128. Gradients flow through the cast.

Features (eqs. (13)-(14)). The paper stacks real and imaginary parts but does not say how the
inputs are scaled. Raw channels are ~1e-5 in the ``zhao`` preset, far below the range a
sigmoid network can use, so we feed the dimensionless
:math:`\mathbf h_l\sqrt{P_0}/\sigma` (the per-antenna amplitude SNR at full power; its
entries are O(1-10) in the preset) -- :func:`channel_features`. Steering vectors have
unit-modulus entries and are fed as they are -- :func:`steering_features`.

Decisions where 004 is silent or has a typo (each also stated where it is implemented):

* Combining FCNNs (16), (18): Table I gives ``f_Comb`` an input size of 128 although it
  combines three (user) or two (radar) 128-vectors. We **sum** them element-wise, which keeps
  every size of Table I (concatenation would need 384/256 inputs).
* Max-pooling over the other users (17) is over an empty set when L = 1: it is defined as the
  zero vector.
* Activations: Table I lists each two-layer FCNN (``a x b x c``) with "Sigmoid". We put the
  sigmoid on the hidden layer only (``Linear, Sigmoid, Linear``); the output layers
  ``f_c^(3)``, ``f_s^(3)`` have none. With a sigmoid after both layers the user path stacks 8
  sigmoids and the GNN output did not depend on its input at initialisation (measured spread
  across samples 4e-8 of its size; training stalled at loss 2.87, 0 % feasible).
* Initialisation (004 silent): PyTorch's uniform range drawn from a seeded generator
  (:func:`reset_parameters`), then the data-dependent centring/scaling of :func:`calibrate_`
  on training samples (needed for the same reason).
* Normalisation (23) prints :math:`\sqrt{P_0}/\mathrm{Tr}(\cdot)`, which gives
  :math:`\mathrm{tr}(\mathbf R) = P_0/\mathrm{Tr}(\cdot)` and not :math:`P_0`. We use
  :math:`\sqrt{P_0/\mathrm{Tr}(\dot{\mathbf C}\dot{\mathbf C}^H+\dot{\mathbf S}\dot{\mathbf S}^H)}`,
  which meets (11c) exactly.
* Loss (25): 004 gives neither :math:`\mu` nor the scale of the SINR term. :func:`zhao_loss`
  offers the SINR normalised by the target, :math:`\sum_l\mathrm{ReLU}(\Gamma_0 m - \Gamma_l)/\Gamma_0`
  with a training margin :math:`m = 10^{\text{margin\_db}/10}`, or the same shortfall in dB
  divided by 10. We train with the dB form (margin 1 dB; mu in :mod:`isac.learning.train`): with the linear
  form the GNN never produced a feasible output (0 % of the validation set after 200 epochs),
  with the dB form it did within 20 epochs (the barrier's gradient grows as 1/Gamma_l when an
  SINR is far below target instead of vanishing with it).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from isac.metrics.beampattern import beampattern, beampattern_mse
from isac.metrics.comm import sinr
from isac.tensors import COMPLEX, REAL

HIDDEN = 128
"""Width of the node representation vectors (004 Table I)."""
UPDATE_HIDDEN = 64
"""Hidden width of the updating-layer FCNNs (004 Table I: 128 x 64 x 128)."""
NUM_UPDATING_LAYERS = 2
"""T of 004 Sec. III-A ("a 2-layer GNN", Sec. IV-B)."""
DNN_HIDDEN = 512
"""Hidden width of the DNN benchmark (004 Sec. IV-B, Benchmark 3)."""


# --- features -----------------------------------------------------------------------------------


def _scalar_or_batch(x, batch: int, name: str) -> torch.Tensor:
    """A positive scalar or ``[B]`` value as a float64 ``[B]`` tensor."""
    t = torch.as_tensor(x, dtype=REAL).reshape(-1)
    if t.numel() == 1:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"{name}: expected a scalar or [{batch}] values, got shape {list(t.shape)}")
    if not bool((t > 0).all()):
        raise ValueError(f"{name}: must be > 0")
    return t


def _stack_real_imag(x: torch.Tensor) -> torch.Tensor:
    """``[B, M, n]`` complex -> ``[B, n, 2M]`` float32: column j becomes ``[Re x_j; Im x_j]`` (eq. (13))."""
    x = x.transpose(-2, -1)
    return torch.cat([x.real, x.imag], dim=-1).to(torch.float32)


def channel_features(H: torch.Tensor, power_w, noise_w) -> torch.Tensor:
    r"""User-node inputs ``[B, L, 2M]`` float32: :math:`[\Re\,\mathbf g_l; \Im\,\mathbf g_l]`,
    :math:`\mathbf g_l = \mathbf h_l\sqrt{P_0}/\sigma` (dimensionless; our normalisation, 004 is silent).

    Args:
        H: ``[B, M, L]`` complex128, column l is :math:`\mathbf h_l` (amplitude, sqrt(W) gain).
        power_w: :math:`P_0` in watts, scalar or ``[B]``. noise_w: :math:`\sigma^2` in watts, scalar or ``[B]``.
    """
    b = H.shape[0]
    scale = (_scalar_or_batch(power_w, b, "power_w") / _scalar_or_batch(noise_w, b, "noise_w")).sqrt()
    return _stack_real_imag(H * scale[:, None, None].to(H.dtype))


def steering_features(A: torch.Tensor) -> torch.Tensor:
    r"""Target-node inputs ``[B, K, 2M]`` float32 from ``A [B, M, K]`` complex (column k = :math:`\mathbf a(\theta^k)`).

    An ``A`` broadcast over the batch (stride 0: one fixed target set) gives features broadcast the same
    way, which the trunk then encodes once."""
    if A.shape[0] > 1 and A.stride(0) == 0:
        return _stack_real_imag(A[:1]).expand(A.shape[0], -1, -1)
    return _stack_real_imag(A)


# --- building blocks ----------------------------------------------------------------------------


def fcnn(sizes: list[int], final_activation: bool = True) -> nn.Sequential:
    """Fully connected network with sigmoid activations (004 Table I); ``sizes = [in, hidden..., out]``."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if final_activation or i < len(sizes) - 2:
            layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


def reset_parameters(model: nn.Module, generator: torch.Generator) -> None:
    r"""Re-draw every ``nn.Linear`` and ``nn.Conv2d`` from ``generator``: weight and bias
    :math:`\sim\mathcal U(-1/\sqrt{n_\text{in}}, 1/\sqrt{n_\text{in}})` (:math:`n_\text{in}` = fan-in: input
    features, or input channels x kernel size), the range of PyTorch's default initialisation, but
    reproducible without touching the global random state. Other modules (e.g. LayerNorm) keep theirs."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (nn.Linear, nn.Conv2d)):
                bound = 1.0 / math.sqrt(mod.weight[0].numel())
                mod.weight.copy_(torch.rand(mod.weight.shape, generator=generator) * (2 * bound) - bound)
                if mod.bias is not None:
                    mod.bias.copy_(torch.rand(mod.bias.shape, generator=generator) * (2 * bound) - bound)


@torch.no_grad()
def calibrate_(model: nn.Module, h_feat: torch.Tensor, a_feat: torch.Tensor) -> None:
    r"""Data-dependent initialisation (in place): every hidden ``nn.Linear`` is rescaled so that, on the
    calibration batch, each of its outputs has mean 0 and standard deviation 1.

    004 gives no initialisation. With PyTorch's default one the deep sigmoid stacks of the GNN
    shrink the signal by ~1e-7 from input to output (measured: the GNN output does not depend on
    its input and training stalls at a constant output), so we centre and scale the
    pre-activations layer by layer in forward order (the mean/variance part of LSUV, Mishkin &
    Matas 2016). The output layers (``model.output_layers()``) keep their random initialisation.

    Args:
        h_feat: ``[B, L, 2M]``, a_feat: ``[B, K, 2M]`` float32 features of training samples.
    """
    skip = {id(m) for m in model.output_layers()}  # type: ignore[operator]

    def hook(mod: nn.Linear, inp, out: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(out.ndim - 1))
        mean, std = out.mean(dims), out.std(dims).clamp_min(1e-6)
        mod.weight.div_(std[:, None])
        mod.bias.sub_(mean).div_(std)
        return (out - mean) / std

    hooks = [m.register_forward_hook(hook) for m in model.modules()
             if isinstance(m, nn.Linear) and id(m) not in skip]
    try:
        model.raw(h_feat, a_feat)  # type: ignore[operator]
    finally:
        for h in hooks:
            h.remove()


def normalize_power(C_raw: torch.Tensor, S_raw: torch.Tensor, power_w) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Normalisation layer (004 eq. (23), typo fixed): scale so that :math:`\mathrm{tr}(\mathbf R) = P_0`.

    :math:`\mathbf C = \sqrt{P_0/t}\,\dot{\mathbf C}`, :math:`\mathbf S = \sqrt{P_0/t}\,\dot{\mathbf S}`,
    :math:`t = \mathrm{Tr}(\dot{\mathbf C}\dot{\mathbf C}^H + \dot{\mathbf S}\dot{\mathbf S}^H)`. (The paper's
    :math:`\sqrt{P_0}/t` gives power :math:`P_0/t`.)

    Args:
        C_raw: ``[B, M, L]`` complex128; S_raw: ``[B, M, M]`` complex128; power_w: scalar or ``[B]`` watts.
    Returns:
        ``(C, S)`` complex128 with ``||C||_F^2 + ||S||_F^2 = P0`` per sample.
    """
    p0 = _scalar_or_batch(power_w, C_raw.shape[0], "power_w").to(C_raw.device)
    t = (C_raw.real**2 + C_raw.imag**2).sum((-2, -1)) + (S_raw.real**2 + S_raw.imag**2).sum((-2, -1))
    g = (p0 / t.clamp_min(torch.finfo(REAL).tiny)).sqrt()[:, None, None]
    return C_raw * g, S_raw * g


def _to_complex(x: torch.Tensor, m: int) -> torch.Tensor:
    """``[..., 2M, n]`` real -> ``[..., M, n]`` complex128: rows 1..M real part, M+1..2M imaginary (eqs. (20)-(22))."""
    x = x.to(REAL)
    return torch.complex(x[..., :m, :], x[..., m:, :])


# --- the GNN module -------------------------------------------------------------------------------


class _UpdatingLayer(nn.Module):
    r"""One updating layer of 004 (eqs. (16)-(19)), acting on user nodes ``[B, L, D]`` and the radar node ``[B, D]``.

    User l: :math:`\mathbf z_l \leftarrow f_{\rm Comb,1}(\mathbf z_l + f_2(\mathbf z_{L+1}) +
    \max_{j\ne l} f_1(\mathbf z_j))` (element-wise max; zeros when L = 1).
    Radar: :math:`\mathbf z_{L+1} \leftarrow f_{\rm Comb,2}(f_2(\mathbf z_{L+1}) + \frac1L\sum_l f_1(\mathbf z_l))`.
    The arguments of the combining FCNNs are summed (Table I gives them input size 128).
    The aggregation uses the layer-t representations on both sides (the superscript t+1 on
    z_Agg in (17), (19) is read as a typo for t).
    """

    def __init__(self, width: int = HIDDEN, hidden: int = UPDATE_HIDDEN):
        super().__init__()
        self.f1 = fcnn([width, hidden, width], final_activation=False)
        self.f2 = fcnn([width, hidden, width], final_activation=False)
        self.comb_user = fcnn([width, hidden, width], final_activation=False)
        self.comb_radar = fcnn([width, hidden, width], final_activation=False)

    def forward(self, users: torch.Tensor, radar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        msg = self.f1(users)  # [B, L, D]
        radar_msg = self.f2(radar)  # [B, D]
        n_users = users.shape[1]
        if n_users == 2:
            pooled = msg.flip(1)  # the other user's message
        elif n_users > 2:
            # max over j != l: the largest message, or the second largest for the user holding the largest
            top = msg.topk(2, dim=1).values  # [B, 2, D]
            pooled = torch.where(msg == top[:, :1], top[:, 1:], top[:, :1])
        else:
            pooled = torch.zeros_like(msg)
        new_users = self.comb_user(users + radar_msg[:, None, :] + pooled)
        new_radar = self.comb_radar(radar_msg + msg.mean(dim=1))
        return new_users, new_radar


class ZhaoGNN(nn.Module):
    r"""GNN module of 004 Sec. III-A (Fig. 2-4, Table I): L user nodes + 1 radar node.

    Initialisation layer (eqs. (13)-(14)) with shared encoders :math:`f_c^{(0)}` (channels) and
    :math:`f_s^{(0)}` (steering vectors, averaged over the K targets):

    .. math::

        \mathbf z_l = f_{ct}(f_c(\mathbf g_l) + \tfrac1K\textstyle\sum_k f_s(\mathbf a_k)),\qquad
        \mathbf z_{L+1} = f_{st}(\tfrac1L\textstyle\sum_l f_c(\mathbf g_l) + \tfrac1K\sum_k f_s(\mathbf a_k)),

    then T = 2 updating layers (:class:`_UpdatingLayer`) and the normalisation layer
    (eqs. (20)-(23)): :math:`\dot{\mathbf c}_l` from :math:`f_c^{(3)}(\mathbf z_l)\in\mathbb R^{2M}`,
    :math:`\dot{\mathbf S}` from :math:`f_s^{(3)}(\mathbf z_{L+1})\in\mathbb R^{2M^2}` reshaped
    ``[2M, M]`` (row-major), scaled by :func:`normalize_power`.

    The same weights run for any L (users are nodes sharing encoders) and any K (targets are
    averaged); only M is fixed. User permutations permute the columns of C and leave S unchanged.

    Shapes:
        input ``H [B, M, L]`` complex128, ``A [B, M, K]`` complex128, ``power_w``/``noise_w``
        scalars or ``[B]`` (watts); output ``C [B, M, L]``, ``S [B, M, M]`` complex128.
    """

    def __init__(self, num_antennas: int, width: int = HIDDEN, update_hidden: int = UPDATE_HIDDEN,
                 num_layers: int = NUM_UPDATING_LAYERS):
        super().__init__()
        m = int(num_antennas)
        self.num_antennas = m
        self.f_c = fcnn([2 * m, width, width], final_activation=False)
        self.f_s = fcnn([2 * m, width, width], final_activation=False)
        self.f_ct = fcnn([width, width, width], final_activation=False)
        self.f_st = fcnn([width, width, width], final_activation=False)
        self.layers = nn.ModuleList(_UpdatingLayer(width, update_hidden) for _ in range(num_layers))
        self.out_c = nn.Linear(width, 2 * m)
        self.out_s = nn.Linear(width, 2 * m * m)

    def output_layers(self) -> list[nn.Module]:
        return [self.out_c, self.out_s]

    def trunk(self, h_feat: torch.Tensor, a_feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Initialisation and updating layers: features -> user nodes ``[B, L, D]``, radar node ``[B, D]``."""
        hc = self.f_c(h_feat)  # [B, L, D]
        if a_feat.shape[0] > 1 and a_feat.stride(0) == 0:  # one target set for the whole batch: encode it once
            sa = self.f_s(a_feat[:1]).mean(dim=1).expand(a_feat.shape[0], -1)
        else:
            sa = self.f_s(a_feat).mean(dim=1)  # [B, D]
        users = self.f_ct(hc + sa[:, None, :])
        radar = self.f_st(hc.mean(dim=1) + sa)
        for layer in self.layers:
            users, radar = layer(users, radar)
        return users, radar

    def raw(self, h_feat: torch.Tensor, a_feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unnormalised outputs from features: ``h_feat [B, L, 2M]``, ``a_feat [B, K, 2M]`` float32
        -> ``C_raw [B, M, L]``, ``S_raw [B, M, M]`` complex128."""
        m = self.num_antennas
        users, radar = self.trunk(h_feat, a_feat)
        c = self.out_c(users)[..., : 2 * m].transpose(-2, -1)  # [B, 2M, L]
        s = self.out_s(radar)[..., : 2 * m * m].reshape(-1, 2 * m, m)  # [B, 2M, M]
        return _to_complex(c, m), _to_complex(s, m)

    def forward(self, H: torch.Tensor, A: torch.Tensor, power_w, noise_w) -> tuple[torch.Tensor, torch.Tensor]:
        _check_inputs(H, A, self.num_antennas)
        C_raw, S_raw = self.raw(channel_features(H, power_w, noise_w), steering_features(A))
        return normalize_power(C_raw, S_raw, power_w)


FL_SINR_MARGIN = 1e-6
r"""Relative tightening of :math:`\Gamma_0` inside the feasibility layer (:func:`feasible_powers`): its SINRs are
met with equality up to round-off, so the layer aims at :math:`\Gamma_0(1+10^{-6})`, far inside the evaluator's
tolerance and invisible in the MSE."""


def feasible_powers(
    H: torch.Tensor,
    C_dir: torch.Tensor,
    S_dir: torch.Tensor,
    user_logits: torch.Tensor,
    sense_logit: torch.Tensor,
    power_w,
    noise_w,
    sinr_target,
    margin: float = FL_SINR_MARGIN,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Feasibility layer (ours, not in 004): beam powers that meet every SINR target for given beam directions.

    With unit user directions :math:`\mathbf u_l` (columns of ``C_dir``), a sensing direction
    :math:`\hat{\mathbf S}` (``S_dir`` scaled to unit Frobenius norm), user powers :math:`p_l` and
    sensing power :math:`q`, i.e. :math:`\mathbf c_l=\sqrt{p_l}\mathbf u_l`,
    :math:`\mathbf S=\sqrt q\hat{\mathbf S}`, the SINR constraint (11e) of user l is *linear* in
    :math:`(\mathbf p,q)`:

    .. math::

        p_l g_{ll}\ \ge\ \Gamma\Big(\sum_{j\ne l}p_jg_{lj}+q s_l+\sigma^2\Big),\qquad
        g_{lj}=|\mathbf h_l^H\mathbf u_j|^2,\ s_l=\|\mathbf h_l^H\hat{\mathbf S}\|^2,

    i.e. :math:`\mathbf A\mathbf p\ge\mathbf b_0+q\mathbf b_s` with
    :math:`\mathbf A=\mathbf I-\mathbf X`, :math:`X_{lj}=\Gamma g_{lj}/g_{ll}` (:math:`j\ne l`),
    :math:`b_{0,l}=\Gamma\sigma^2/g_{ll}`, :math:`b_{s,l}=\Gamma s_l/g_{ll}`. When the spectral radius of
    :math:`\mathbf X\ge 0` is below 1, :math:`\mathbf A^{-1}=\sum_k\mathbf X^k\ge 0` and *every* feasible
    allocation is :math:`\mathbf p=\mathbf A^{-1}(\mathbf b_0+q\mathbf b_s+\mathbf e)` with a slack
    :math:`\mathbf e\ge 0`. The power left after the least allocation,
    :math:`P_{\rm spare}=P_0-\mathbf 1^T\mathbf A^{-1}\mathbf b_0`, is split by the network:
    a share :math:`\alpha=\mathrm{sigmoid}(\texttt{sense\_logit})` to sensing,
    :math:`q=\alpha P_{\rm spare}/(1+\mathbf 1^T\mathbf A^{-1}\mathbf b_s)`, the rest to the slack in the
    direction :math:`\hat{\mathbf e}=\mathrm{softmax}(\texttt{user\_logits})`,
    :math:`\mathbf e=(1-\alpha)P_{\rm spare}\hat{\mathbf e}/\mathbf 1^T\mathbf A^{-1}\hat{\mathbf e}`.
    Then :math:`\mathbf 1^T\mathbf p+q=P_0` exactly (11c) and every SINR is at least :math:`\Gamma`
    (equality for the users with no slack). The map is differentiable in the directions and the logits,
    and its range is the whole feasible set of those directions.

    It fails -- ``valid`` False -- exactly when the directions cannot meet the targets at power
    :math:`P_0`: a beam orthogonal to its user, spectral radius :math:`\ge 1` (detected as a
    non-positive pivot when :math:`\mathbf A` is eliminated, :func:`_solve_z_matrix`, or a non-positive entry
    of :math:`\mathbf A^{-1}\mathbf b_0`), or :math:`P_{\rm spare}\le 0`.

    Args:
        H: ``[B, M, L]`` complex128 channels. C_dir: ``[B, M, L]`` and S_dir ``[B, M, Ns]`` complex128
            (any scale; only directions are used). user_logits: ``[B, L]``, sense_logit: ``[B]`` float64.
        power_w, noise_w: :math:`P_0`, :math:`\sigma^2` (W), scalars or ``[B]``. sinr_target: :math:`\Gamma_0`
            (linear), scalar or ``[B]``. margin: :math:`\Gamma=\Gamma_0(1+\text{margin})`.
    Returns:
        ``(C [B, M, L], S [B, M, Ns], valid [B] bool)``; rows with ``valid`` False hold zeros (callers
        substitute their own fallback).
    """
    b, m, n_users = C_dir.shape
    p0 = _scalar_or_batch(power_w, b, "power_w").to(C_dir.device)
    sig2 = _scalar_or_batch(noise_w, b, "noise_w").to(C_dir.device)
    gam = _scalar_or_batch(sinr_target, b, "sinr_target").to(C_dir.device) * (1.0 + margin)
    tiny = torch.finfo(REAL).tiny
    u = C_dir / (C_dir.abs() ** 2).sum(-2, keepdim=True).clamp_min(tiny).sqrt()
    s_hat = S_dir / (S_dir.abs() ** 2).sum((-2, -1), keepdim=True).clamp_min(tiny).sqrt()
    Hh = H.conj().transpose(-2, -1)
    G = (Hh @ u).abs() ** 2  # [B, L, L], (l, j) = |h_l^H u_j|^2
    s = ((Hh @ s_hat).abs() ** 2).sum(-1)  # [B, L]
    d = torch.diagonal(G, dim1=-2, dim2=-1)
    ok = (d > 0).all(-1)
    d_safe = torch.where(d > 0, d, torch.ones_like(d))
    eye = torch.eye(n_users, dtype=REAL, device=C_dir.device)
    X = gam[:, None, None] * G / d_safe[:, :, None] * (1.0 - eye)
    A = eye - X
    e_hat = torch.softmax(user_logits.to(REAL), dim=-1)
    rhs = torch.stack([gam[:, None] * sig2[:, None] / d_safe, gam[:, None] * s / d_safe, e_hat], dim=-1)  # [B, L, 3]
    sol, pivots_ok = _solve_z_matrix(A, rhs)
    sums = sol.sum(-2)  # [B, 3]: 1^T A^-1 b0, 1^T A^-1 bs, 1^T A^-1 e_hat
    spare = p0 - sums[:, 0]
    valid = (ok & pivots_ok & (sol[..., 0] > 0).all(-1) & (spare > 0)
             & torch.isfinite(sol).all(-1).all(-1))
    alpha = torch.sigmoid(sense_logit.to(REAL))
    safe = lambda x: torch.where(valid, x, torch.ones_like(x))  # noqa: E731  (keeps NaN out of the gradients)
    q = alpha * torch.where(valid, spare, torch.zeros_like(spare)) / safe(1.0 + sums[:, 1])
    k = (1.0 - alpha) * torch.where(valid, spare, torch.zeros_like(spare)) / safe(sums[:, 2])
    sol = torch.where(valid[:, None, None], sol, torch.ones_like(sol))
    p = sol[..., 0] + q[:, None] * sol[..., 1] + k[:, None] * sol[..., 2]  # [B, L]
    # sqrt has an infinite derivative at 0: keep invalid rows (and a sensing power of exactly 0) off it
    p = torch.where(valid[:, None] & (p > 0), p, torch.ones_like(p))
    q_pos = valid & (q > 0)
    q_root = torch.where(q_pos, torch.where(q_pos, q, torch.ones_like(q)).sqrt(), torch.zeros_like(q))
    C = u * p.sqrt()[:, None, :].to(u.dtype)
    S = s_hat * q_root[:, None, None].to(s_hat.dtype)
    if bool(valid.all()):
        return C, S, valid
    zero = ~valid[:, None, None]
    return C.masked_fill(zero, 0.0), S.masked_fill(zero, 0.0), valid


def _solve_z_matrix(A: torch.Tensor, rhs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``A [B, L, L]`` with unit diagonal and non-positive off-diagonal entries (a Z-matrix), ``rhs [B, L, R]``
    -> ``(A^{-1} rhs, ok [B])`` by Gaussian elimination without pivoting, vectorised over the batch.

    Such an ``A`` is a nonsingular M-matrix (:math:`\mathbf A^{-1}\ge 0`, i.e. spectral radius of
    :math:`\mathbf X=\mathbf I-\mathbf A` below 1) exactly when every pivot of this elimination is positive, and
    elimination without pivoting is then stable; ``ok`` is that test. Rows with ``ok`` False hold
    garbage (finite where the pivots are non-zero). For the few users of 004 this is ~L^2 batched
    element-wise operations instead of one LAPACK call per instance (``torch.linalg.solve``).
    """
    n = A.shape[-1]
    A = A.clone()
    rhs = rhs.clone()
    ok = torch.ones(A.shape[0], dtype=torch.bool, device=A.device)
    for k in range(n):
        piv = A[:, k, k]
        ok = ok & (piv > 0)
        piv = torch.where(piv > 0, piv, torch.ones_like(piv))
        if k + 1 < n:
            f = A[:, k + 1:, k] / piv[:, None]  # [B, n-k-1]
            A = torch.cat([A[:, : k + 1], A[:, k + 1:] - f[:, :, None] * A[:, k: k + 1]], dim=1)
            rhs = torch.cat([rhs[:, : k + 1], rhs[:, k + 1:] - f[:, :, None] * rhs[:, k: k + 1]], dim=1)
    rows = [None] * n
    for k in range(n - 1, -1, -1):
        acc = rhs[:, k]
        for j in range(k + 1, n):
            acc = acc - A[:, k, j, None] * rows[j]
        piv = A[:, k, k]
        rows[k] = acc / torch.where(piv > 0, piv, torch.ones_like(piv))[:, None]
    return torch.stack(rows, dim=1), ok


def null_others(H: torch.Tensor, C: torch.Tensor, share: torch.Tensor) -> torch.Tensor:
    r"""Remove a share :math:`\kappa_l` of each beam's component in the span of the *other* users' channels.

    :math:`\mathbf c_l\leftarrow\mathbf c_l-\kappa_l\boldsymbol\Pi_{-l}\mathbf c_l`,
    :math:`\boldsymbol\Pi_{-l}` the orthogonal projector onto :math:`\mathrm{span}\{\mathbf h_j\}_{j\ne l}`:
    the interference :math:`\mathbf h_j^H\mathbf c_l` is multiplied by :math:`1-\kappa_l` (0 at
    :math:`\kappa_l=1`, zero forcing). ``H``, ``C`` ``[B, M, L]`` complex128, ``share`` ``[B, L]`` float64.
    """
    n_users = C.shape[-1]
    if n_users == 1:
        return C
    if n_users == 2:  # the span of one channel: Pi c = h (h^H c) / ||h||^2, without a linear solve
        other = H.flip(-1)  # column l holds the other user's channel
        coef = (other.conj() * C).sum(-2, keepdim=True) / (other.abs() ** 2).sum(-2, keepdim=True)
        return C - share[:, None, :].to(C.dtype) * coef * other
    cols = []
    for l in range(n_users):
        others = torch.cat([H[..., :l], H[..., l + 1:]], dim=-1)  # [B, M, L-1]
        oh = others.conj().transpose(-2, -1)
        y = torch.linalg.solve(oh @ others, oh @ C[..., l:l + 1])
        cols.append(C[..., l:l + 1] - share[:, l, None, None].to(C.dtype) * (others @ y))
    return torch.cat(cols, dim=-1)


def _scaled_channels(H: torch.Tensor, power_w, noise_w) -> torch.Tensor:
    r""":math:`\mathbf h_l\sqrt{P_0}/\sigma` ``[B, M, L]`` complex128 (the complex form of :func:`channel_features`)."""
    b = H.shape[0]
    scale = (_scalar_or_batch(power_w, b, "power_w") / _scalar_or_batch(noise_w, b, "noise_w")).sqrt()
    return H * scale.to(H.device)[:, None, None].to(H.dtype)


ZF_SHARE_BIAS = 4.0
r"""Added to the zero-forcing logit of :class:`ZhaoGNNFL` (:math:`\kappa=\mathrm{sigmoid}(\cdot+4)\approx 0.98`
at initialisation, where the outputs are unrelated to the channels)."""


class ZhaoGNNFL(ZhaoGNN):
    r"""The GNN of 004 with our feasibility layer (:func:`feasible_powers`) in place of the normalisation (23).

    Same trunk (initialisation and updating layers) as :class:`ZhaoGNN`; the output layers give one
    more number per node: ``f_c^(3)`` gives :math:`2M+1` per user (direction of :math:`\mathbf c_l`, slack
    logit), ``f_s^(3)`` :math:`2M^2+1` (direction of :math:`\mathbf S`, sensing-share logit). The layer
    turns directions and logits into beams that meet every SINR target and the power exactly
    whenever those directions can (``valid``); otherwise the output falls back to the plain
    normalisation (23) of the raw outputs, which is then (almost surely) infeasible and is left to the
    projection of ``gnn-ip``.

    ``sinr_db`` is the :math:`\Gamma_0` the layer enforces unless ``forward`` is given one.
    """

    def __init__(self, num_antennas: int, sinr_db: float, width: int = HIDDEN, update_hidden: int = UPDATE_HIDDEN,
                 num_layers: int = NUM_UPDATING_LAYERS):
        super().__init__(num_antennas, width, update_hidden, num_layers)
        m = self.num_antennas
        self.sinr_db = float(sinr_db)
        self.out_c = nn.Linear(width, 2 * m + 2)
        self.out_s = nn.Linear(width, 2 * m * m + 1)

    def raw_with_logits(self, h_feat: torch.Tensor, a_feat: torch.Tensor):
        """``(C_raw [B, M, L], S_raw [B, M, M], user_logits [B, L], zf_logits [B, L], sense_logit [B])``;
        the logits float64."""
        m = self.num_antennas
        users, radar = self.trunk(h_feat, a_feat)
        oc, os_ = self.out_c(users), self.out_s(radar)
        c = oc[..., : 2 * m].transpose(-2, -1)
        s = os_[..., : 2 * m * m].reshape(-1, 2 * m, m)
        return (_to_complex(c, m), _to_complex(s, m), oc[..., 2 * m].to(REAL), oc[..., 2 * m + 1].to(REAL),
                os_[..., 2 * m * m].to(REAL))

    def forward_valid(self, H: torch.Tensor, A: torch.Tensor, power_w, noise_w, sinr_target=None):
        """``(C, S, valid)``: the feasibility layer's beams where ``valid``, the normalisation (23) elsewhere."""
        _check_inputs(H, A, self.num_antennas)
        gamma = 10.0 ** (self.sinr_db / 10.0) if sinr_target is None else sinr_target
        C_raw, S_raw, lu, lz, ls = self.raw_with_logits(channel_features(H, power_w, noise_w), steering_features(A))
        C_dir = null_others(H, C_raw + _scaled_channels(H, power_w, noise_w), torch.sigmoid(lz + ZF_SHARE_BIAS))
        C_fl, S_fl, valid = feasible_powers(H, C_dir, S_raw, lu, ls, power_w, noise_w, gamma)
        if not torch.is_grad_enabled() and bool(valid.all()):
            return C_fl, S_fl, valid  # inference: no fallback needed
        C_n, S_n = normalize_power(C_dir, S_raw, power_w)
        keep = valid[:, None, None]
        return torch.where(keep, C_fl, C_n), torch.where(keep, S_fl, S_n), valid

    def forward(self, H: torch.Tensor, A: torch.Tensor, power_w, noise_w, sinr_target=None):
        C, S, _ = self.forward_valid(H, A, power_w, noise_w, sinr_target)
        return C, S


class ZhaoDNN(nn.Module):
    r"""DNN benchmark of 004 (Sec. IV-B, Benchmark 3): 4 fully connected layers, hidden width 512, sigmoid.

    Input: the concatenation of the user features (:func:`channel_features`, flattened
    user-major) and the target features (:func:`steering_features`), size ``2ML + 2MK``;
    three hidden layers of 512 with sigmoid; a linear output of size ``2ML + 2M^2``: the first
    ``2ML`` entries give :math:`\dot{\mathbf c}_l` (``[Re; Im]`` per user), the rest
    :math:`\dot{\mathbf S}` as in eq. (21); then the normalisation (23) of :func:`normalize_power`.
    Fixed L and K (the training ones).
    """

    def __init__(self, num_antennas: int, num_users: int, num_targets: int, hidden: int = DNN_HIDDEN):
        super().__init__()
        m, l, k = int(num_antennas), int(num_users), int(num_targets)
        self.num_antennas, self.num_users, self.num_targets = m, l, k
        self.net = fcnn([2 * m * (l + k), hidden, hidden, hidden, 2 * m * l + 2 * m * m], final_activation=False)

    def output_layers(self) -> list[nn.Module]:
        return [self.net[-1]]

    def raw(self, h_feat: torch.Tensor, a_feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m, l = self.num_antennas, self.num_users
        if h_feat.shape[1] != l or a_feat.shape[1] != self.num_targets:
            raise ValueError(
                f"this DNN was built for L={l} users and K={self.num_targets} targets, "
                f"got L={h_feat.shape[1]}, K={a_feat.shape[1]} (a DNN only runs on its training sizes)")
        x = torch.cat([h_feat.flatten(1), a_feat.flatten(1)], dim=-1)
        y = self.net(x)
        c = y[:, : 2 * m * l].reshape(-1, l, 2 * m).transpose(-2, -1)  # [B, 2M, L]
        s = y[:, 2 * m * l:].reshape(-1, 2 * m, m)
        return _to_complex(c, m), _to_complex(s, m)

    def forward(self, H: torch.Tensor, A: torch.Tensor, power_w, noise_w) -> tuple[torch.Tensor, torch.Tensor]:
        _check_inputs(H, A, self.num_antennas)
        C_raw, S_raw = self.raw(channel_features(H, power_w, noise_w), steering_features(A))
        return normalize_power(C_raw, S_raw, power_w)


def _check_inputs(H: torch.Tensor, A: torch.Tensor, m: int) -> None:
    for name, t in (("H", H), ("A", A)):
        if not isinstance(t, torch.Tensor) or t.dtype != COMPLEX or t.ndim != 3:
            raise ValueError(f"{name}: expected a [B, M, n] complex128 tensor, got "
                             f"{getattr(t, 'dtype', type(t))} of shape {list(getattr(t, 'shape', []))}")
        if t.shape[1] != m:
            raise ValueError(f"{name}: the model was built for M={m} antennas, got M={t.shape[1]}")
    if H.shape[0] != A.shape[0]:
        raise ValueError(f"H and A have different batch sizes ({H.shape[0]} vs {A.shape[0]})")


# --- loss -----------------------------------------------------------------------------------------


def zhao_loss(
    C: torch.Tensor,
    S: torch.Tensor,
    H: torch.Tensor,
    steering: torch.Tensor,
    desired: torch.Tensor,
    noise_w,
    sinr_target: float,
    mu: float,
    margin_db: float = 0.0,
    sinr_scale: str = "linear",
) -> dict[str, torch.Tensor]:
    r"""Per-sample training loss of 004 eq. (25), built from the metrics package.

    .. math::

        \ell = L(\mathbf R) + \mu\sum_{l=1}^L \mathrm{ReLU}\!\Big(m - \frac{\Gamma_l}{\Gamma_0}\Big),
        \qquad m = 10^{\text{margin\_db}/10},

    :math:`L(\mathbf R)` the beampattern MSE of eq. (7) with the least-squares :math:`\beta^\star`
    (:func:`isac.metrics.beampattern.beampattern_mse`), :math:`\Gamma_l` eq. (9)
    (:func:`isac.metrics.comm.sinr` with beams ``[C, S]``). The SINR is divided by
    :math:`\Gamma_0` (our choice; 004 gives no scale) so that :math:`\mu` is dimensionless and
    does not depend on :math:`\Gamma_0`; ``margin_db > 0`` asks for a little more than
    :math:`\Gamma_0` during training so that outputs near the boundary stay feasible.

    Args:
        C: ``[B, M, L]``, S: ``[B, M, M]``, H: ``[B, M, L]`` complex128.
        steering: ``[N, M]`` (or ``[B, N, M]``) complex128 grid steering rows.
        desired: ``[B, N]`` float64 desired pattern (eq. (34)).
        noise_w: :math:`\sigma^2` (W), scalar or ``[B]``. sinr_target: :math:`\Gamma_0` (linear).
        mu: penalty weight :math:`\mu`. margin_db: training margin (dB) on :math:`\Gamma_0`.
        sinr_scale: "linear" (the formula above) or "db": the barrier is
            :math:`\sum_l\mathrm{ReLU}(\Gamma_0^{\rm dB} + \text{margin\_db} - \Gamma_l^{\rm dB})/10`
            (a shortfall of 10 dB costs 1, like a linear shortfall of :math:`\Gamma_0`).
    Returns:
        dict of ``[B]`` float64 tensors: ``loss``, ``mse``, ``barrier`` (the sum over users) and
        ``sinr [B, L]`` (linear).
    """
    pattern = beampattern(steering, C, S)
    mse, _ = beampattern_mse(desired, pattern)
    g = sinr(H, torch.cat([C, S], dim=-1), noise_w)
    if sinr_scale == "linear":
        barrier = torch.relu(10.0 ** (margin_db / 10.0) - g / sinr_target).sum(-1)
    elif sinr_scale == "db":
        gap_db = margin_db + 10.0 * math.log10(sinr_target) - 10.0 * torch.log10(g.clamp_min(1e-30))
        barrier = torch.relu(gap_db / 10.0).sum(-1)
    else:
        raise ValueError(f"sinr_scale must be 'linear' or 'db', got {sinr_scale!r}")
    return {"loss": mse + mu * barrier, "mse": mse, "barrier": barrier, "sinr": g}


# --- one-instance inference without torch's per-operation overhead -----------------------------------


class CompiledForward:
    r"""The forward pass of a trained :class:`ZhaoGNN` or :class:`ZhaoGNNFL` for ONE instance, compiled.

    The same arithmetic as the torch modules (weights copied once; float32 network, float64 feasibility
    layer), for the single-instance
    path of the learned solvers: a torch operation costs ~3-7 us of dispatch on a small CPU tensor and
    the module runs ~100 of them; :mod:`isac.learning.zhao_kernels` runs the whole pass, feasibility
    layer included, as one Numba-compiled call. Batches go through the torch module. Tested against it
    (``tests/test_zhao_fl.py``).

    ``__call__(H [M, L], A [M, K] complex128 arrays, power_w, noise_w, sinr_target)`` ->
    ``(C [M, L], S [M, M] complex128 arrays, valid)``; ``valid`` is the feasibility layer's flag
    (always True for a plain GNN, whose output is only normalised).
    """

    def __init__(self, model: nn.Module):
        import numpy as np

        from isac.learning import zhao_kernels  # lazy: Numba only on the single-instance path

        if not isinstance(model, ZhaoGNN):
            raise TypeError(f"CompiledForward runs a ZhaoGNN or ZhaoGNNFL, got {type(model).__name__}")
        self.m = model.num_antennas
        self.fl = isinstance(model, ZhaoGNNFL)
        self.sinr_db = getattr(model, "sinr_db", None)

        tensors: list[torch.Tensor] = []
        for seq in (model.f_c, model.f_s, model.f_ct, model.f_st,
                    *(f for u in model.layers for f in (u.f1, u.f2, u.comb_user, u.comb_radar))):
            tensors += [seq[0].weight.T, seq[0].bias[None], seq[2].weight.T, seq[2].bias[None]]
        tensors += [model.out_c.weight.T, model.out_c.bias[None], model.out_s.weight.T, model.out_s.bias[None]]
        flat = [t.detach().to(torch.float32).contiguous().reshape(-1).numpy() for t in tensors]
        offsets = np.cumsum([0] + [f.size for f in flat])[:-1]
        self._weights = (np.ascontiguousarray(np.concatenate(flat)),
                         np.array([[o, *t.shape] for o, t in zip(offsets, tensors)], dtype=np.int64))
        self._kernel = zhao_kernels.forward
        self._np = np
        m = self.m
        probe_H = np.ones((m, 2), dtype=np.complex128) + 1j * np.eye(m, 2)  # compile (or load) now, not when timed
        self(probe_H, np.ones((m, 1), dtype=np.complex128), 1.0, 1e-10, 1.0)

    def __call__(self, H, A, power_w: float, noise_w: float, sinr_target: float | None = None):
        if not self.fl:
            gamma = 1.0  # unused
        elif sinr_target is None:
            gamma = 10.0 ** (self.sinr_db / 10.0)
        else:
            gamma = float(sinr_target)
        np = self._np
        H = np.ascontiguousarray(H, dtype=np.complex128)
        A = np.ascontiguousarray(A, dtype=np.complex128)
        return self._kernel(H, A, float(power_w), float(noise_w), gamma * (1.0 + FL_SINR_MARGIN), ZF_SHARE_BIAS,
                            self.fl, *self._weights)
