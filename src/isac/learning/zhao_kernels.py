"""Compiled (Numba) forward pass of a trained 004 GNN / GNN-FL for ONE instance.

The single-instance path of the learned ``beampattern-sinr`` solvers is dominated by per-operation
overhead, not arithmetic: the network is ~100 operations on vectors of 128, which cost ~3-7 us each in
torch and ~1-2 us each in NumPy. Compiled, the whole pass (trunk, output layers, partial zero forcing
and the least-power solve of the feasibility layer) is one call of a few tens of microseconds.

The arithmetic is that of :class:`isac.learning.zhao.ZhaoGNN` / :class:`~isac.learning.zhao.ZhaoGNNFL`:
the network in float32 like the torch modules, the feasibility layer in float64;
``tests/test_zhao_fl.py`` checks it against the torch modules. Imported lazily (Numba
takes ~0.5 s to import and compiles on first use; ``cache=True`` keeps the machine code on disk).
"""

from __future__ import annotations

import math

import numba
import numpy as np

_JIT = {"cache": True, "nogil": True, "fastmath": False}


@numba.njit(**_JIT)
def _tensor(buf, tab, i):
    """Tensor ``i`` of the packed weights: ``buf[tab[i, 0]:]`` viewed as ``[tab[i, 1], tab[i, 2]]``."""
    start = tab[i, 0]
    return buf[start:start + tab[i, 1] * tab[i, 2]].reshape((tab[i, 1], tab[i, 2]))


@numba.njit(**_JIT)
def _mlp(x, buf, tab, i):
    """``Linear, Sigmoid, Linear`` (packed tensors i..i+3: w1, b1, w2, b2) on the rows of ``x``."""
    b1 = _tensor(buf, tab, i + 1)
    b2 = _tensor(buf, tab, i + 3)
    h = x @ _tensor(buf, tab, i)
    for r in range(h.shape[0]):
        for j in range(h.shape[1]):
            h[r, j] = 1.0 / (1.0 + np.exp(-(h[r, j] + b1[0, j])))
    out = h @ _tensor(buf, tab, i + 2)
    for r in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[r, j] += b2[0, j]
    return out


@numba.njit(**_JIT)
def trunk(h_feat, a_feat, buf, tab, num_layers):
    """Initialisation + updating layers -> user nodes ``[L, D]``, radar node ``[1, D]``.

    Packed tensors (see :func:`forward`): MLPs f_c, f_s, f_ct, f_st (tensors 0-15), then per updating
    layer f1, f2, comb_user, comb_radar (16 tensors each).
    """
    n_users = h_feat.shape[0]
    d = tab[2, 2]
    hc = _mlp(h_feat, buf, tab, 0)
    sa_all = _mlp(a_feat, buf, tab, 4)
    sa = np.zeros(d, dtype=hc.dtype)
    for k in range(sa_all.shape[0]):
        sa += sa_all[k]
    sa /= sa_all.shape[0]
    x = hc + sa
    users = _mlp(x, buf, tab, 8)
    r_in = np.zeros((1, d), dtype=hc.dtype)
    for l in range(n_users):
        r_in[0] += hc[l]
    r_in[0] = r_in[0] / n_users + sa
    radar = _mlp(r_in, buf, tab, 12)
    for t in range(num_layers):
        base = 16 + 16 * t
        msg = _mlp(users, buf, tab, base)
        rmsg = _mlp(radar, buf, tab, base + 4)
        u_in = users + rmsg
        if n_users > 1:
            for l in range(n_users):
                for j in range(d):
                    best = -np.inf
                    for o in range(n_users):
                        if o != l and msg[o, j] > best:
                            best = msg[o, j]
                    u_in[l, j] += best
        r_in = rmsg.copy()
        for l in range(n_users):
            r_in[0] += msg[l] / n_users
        users = _mlp(u_in, buf, tab, base + 8)
        radar = _mlp(r_in, buf, tab, base + 12)
    return users, radar


@numba.njit(**_JIT)
def features(H, A, power_w, noise_w):
    """``H [M, L]``, ``A [M, K]`` complex -> ``g = H sqrt(P/sigma^2)``, ``h_feat [L, 2M]``, ``a_feat [K, 2M]``
    (float32, the precision the network was trained in)."""
    m, n_users = H.shape
    g = H * math.sqrt(power_w / noise_w)
    h_feat = np.empty((n_users, 2 * m), dtype=np.float32)
    for l in range(n_users):
        for i in range(m):
            h_feat[l, i] = g[i, l].real
            h_feat[l, m + i] = g[i, l].imag
    a_feat = np.empty((A.shape[1], 2 * m), dtype=np.float32)
    for k in range(A.shape[1]):
        for i in range(m):
            a_feat[k, i] = A[i, k].real
            a_feat[k, m + i] = A[i, k].imag
    return g, h_feat, a_feat


@numba.njit(**_JIT)
def outputs(users, radar, buf, tab, first, m):
    """Output layers -> raw ``C [M, L]``, ``S [M, M]`` complex128 and the extra logits (float64; empty for a
    plain GNN)."""
    oc = users @ _tensor(buf, tab, first)
    bc = _tensor(buf, tab, first + 1)[0]
    os_ = radar @ _tensor(buf, tab, first + 2)
    bs = _tensor(buf, tab, first + 3)[0]
    n_users = users.shape[0]
    C = np.empty((m, n_users), dtype=np.complex128)
    for l in range(n_users):
        for i in range(m):
            C[i, l] = np.float64(oc[l, i] + bc[i]) + 1j * np.float64(oc[l, m + i] + bc[m + i])
    S = np.empty((m, m), dtype=np.complex128)
    for i in range(m):
        for j in range(m):
            S[i, j] = (np.float64(os_[0, i * m + j] + bs[i * m + j])
                       + 1j * np.float64(os_[0, (m + i) * m + j] + bs[(m + i) * m + j]))
    n_extra = oc.shape[1] - 2 * m
    extra_c = np.empty((n_users, n_extra))
    for l in range(n_users):
        for e in range(n_extra):
            extra_c[l, e] = oc[l, 2 * m + e] + bc[2 * m + e]
    n_extra_s = os_.shape[1] - 2 * m * m
    extra_s = np.empty(n_extra_s)
    for e in range(n_extra_s):
        extra_s[e] = os_[0, 2 * m * m + e] + bs[2 * m * m + e]
    return C, S, extra_c, extra_s


@numba.njit(**_JIT)
def normalise(C, S, power_w):
    """Scale ``C``, ``S`` to total power ``power_w`` (the plain GNN's normalisation layer)."""
    tot = np.sum(np.abs(C) ** 2) + np.sum(np.abs(S) ** 2)
    f = math.sqrt(power_w / tot)
    return C * f, S * f


@numba.njit(**_JIT)
def null_others(H, C, kappa):
    """Column l of ``C`` minus ``kappa[l]`` times its projection onto the other users' channels."""
    m, n_users = H.shape
    if n_users == 1:
        return C.copy()
    out = np.empty_like(C)
    others = np.empty((m, n_users - 1), dtype=np.complex128)
    for l in range(n_users):
        c = 0
        for o in range(n_users):
            if o != l:
                others[:, c] = H[:, o]
                c += 1
        oh = np.conj(others.T).copy()
        y = _solve_hpd(oh @ others, oh @ C[:, l].copy())
        out[:, l] = C[:, l] - kappa[l] * (others @ y)
    return out


@numba.njit(**_JIT)
def _solve_hpd(G, r):
    """``G^{-1} r`` for a small Hermitian positive definite ``G`` (a Gram matrix): elimination without
    pivoting, stable for such matrices (and no LAPACK binding to compile)."""
    n = G.shape[0]
    G = G.copy()
    r = r.copy()
    for k in range(n):
        for i in range(k + 1, n):
            f = G[i, k] / G[k, k]
            for j in range(k, n):
                G[i, j] -= f * G[k, j]
            r[i] -= f * r[k]
    for k in range(n - 1, -1, -1):
        acc = r[k]
        for j in range(k + 1, n):
            acc -= G[k, j] * r[j]
        r[k] = acc / G[k, k]
    return r


@numba.njit(**_JIT)
def least_powers(H, C_dir, S_dir, user_logits, sense_logit, power_w, noise_w, gamma):
    """The feasibility layer (:func:`isac.learning.zhao.feasible_powers`) for one instance
    -> ``(C, S, valid)``; on failure ``valid`` is False and ``C``, ``S`` are the directions as given."""
    m, n_users = H.shape
    u = C_dir.copy()
    for l in range(n_users):
        nrm = math.sqrt(np.sum(np.abs(C_dir[:, l]) ** 2))
        u[:, l] = C_dir[:, l] / nrm
    s_hat = S_dir / math.sqrt(np.sum(np.abs(S_dir) ** 2))
    Hh = np.conj(H.T).copy()
    G = np.abs(Hh @ u) ** 2
    s = np.sum(np.abs(Hh @ s_hat) ** 2, axis=1)
    d = np.empty(n_users)
    for l in range(n_users):
        d[l] = G[l, l]
    if not np.all(d > 0):
        return C_dir, S_dir, False
    A = np.eye(n_users)
    rhs = np.empty((n_users, 3))
    top = np.max(user_logits)
    e = np.exp(user_logits - top)
    e /= np.sum(e)
    for l in range(n_users):
        for j in range(n_users):
            if j != l:
                A[l, j] = -gamma * G[l, j] / d[l]
        rhs[l, 0] = gamma * noise_w / d[l]
        rhs[l, 1] = gamma * s[l] / d[l]
        rhs[l, 2] = e[l]
    sol = rhs
    for k in range(n_users):  # elimination without pivoting: all pivots > 0 <=> A is an M-matrix
        if not A[k, k] > 0:
            return C_dir, S_dir, False
        for r in range(k + 1, n_users):
            f = A[r, k] / A[k, k]
            for c in range(k, n_users):
                A[r, c] -= f * A[k, c]
            for c in range(3):
                sol[r, c] -= f * sol[k, c]
    for k in range(n_users - 1, -1, -1):
        for c in range(3):
            acc = sol[k, c]
            for j in range(k + 1, n_users):
                acc -= A[k, j] * sol[j, c]
            sol[k, c] = acc / A[k, k]
    sums = np.sum(sol, axis=0)
    spare = power_w - sums[0]
    if not (np.all(np.isfinite(sol)) and np.all(sol[:, 0] > 0) and spare > 0):
        return C_dir, S_dir, False
    alpha = 1.0 / (1.0 + math.exp(-sense_logit))
    q = alpha * spare / (1.0 + sums[1])
    k = (1.0 - alpha) * spare / sums[2]
    C = np.empty_like(u)
    for l in range(n_users):
        C[:, l] = u[:, l] * math.sqrt(sol[l, 0] + q * sol[l, 1] + k * sol[l, 2])
    return C, s_hat * math.sqrt(q), True


@numba.njit(**_JIT)
def forward(H, A, power_w, noise_w, gamma, zf_bias, fl, buf, tab):
    """The whole pass: ``H [M, L]``, ``A [M, K]`` -> ``(C [M, L], S [M, M], valid)``.

    ``buf``: every weight and bias of the network in one float32 array, ``tab [n, 3]`` int64: offset,
    rows and columns of each (biases as one row; weights as ``[in, out]``), in the order of
    :func:`trunk`, then out_c (weight, bias) and out_s (weight, bias). Two arrays instead of ~40 keep
    Numba's per-call argument dispatch cheap.
    """
    m = H.shape[0]
    num_layers = (tab.shape[0] - 20) // 16
    g, h_feat, a_feat = features(H, A, power_w, noise_w)
    users, radar = trunk(h_feat, a_feat, buf, tab, num_layers)
    C, S, extra_c, extra_s = outputs(users, radar, buf, tab, tab.shape[0] - 4, m)
    if not fl:
        C, S = normalise(C, S, power_w)
        return C, S, True
    kappa = np.empty(C.shape[1])
    for l in range(C.shape[1]):
        kappa[l] = 1.0 / (1.0 + math.exp(-(extra_c[l, 1] + zf_bias)))
    C = null_others(H, C + g, kappa)
    C, S, valid = least_powers(H, C, S, extra_c[:, 0].copy(), extra_s[0], power_w, noise_w, gamma)
    if not valid:  # the fallback of ZhaoGNNFL.forward_valid: the directions normalised (23)
        C, S = normalise(C, S, power_w)
    return C, S, valid
