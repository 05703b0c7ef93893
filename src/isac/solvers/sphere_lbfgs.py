r"""Batched Riemannian L-BFGS ascent on a power sphere (ours; the default step of 003's ``sca``).

Maximises a smooth :math:`f(\mathbf X)` over :math:`\{\mathbf X:\|\mathbf X\|_F^2=P\}` (total power) or
over the product of spheres :math:`\{\|\mathbf x_i\|^2=P/N\ \forall i\}` (per-antenna power), where
:math:`\mathbf X` ``[..., 2N, S]`` stacks the real and imaginary parts of :math:`N` antennas' rows.

One iteration: the direction :math:`\mathbf d = \mathbf H_k\,\mathrm{grad}f` with
:math:`\mathbf H_k` the L-BFGS inverse-Hessian estimate from the last ``memory`` pairs
(:math:`\mathbf s=\mathbf X_{k+1}-\mathbf X_k`, :math:`\mathbf y=\mathrm{grad}f_k-\mathrm{grad}f_{k+1}`) in
its compact form (Byrd, Nocedal and Schnabel, 1994: two small triangular solves instead of
the two-loop recursion), projected onto the tangent space; the trial point
:math:`R(\mathbf X+t\mathbf d)` (retraction: rescale to the sphere) is accepted when it raises f by
at least :math:`10^{-4}\,t\,\langle\mathrm{grad}f,\mathbf d\rangle` (Armijo), otherwise t shrinks by a
safeguarded quadratic interpolation. The Riemannian gradient is the tangent projection of the
Euclidean one; the pairs are kept in the ambient space (no vector transport), which the tangent
projection of the direction makes harmless on a sphere. Every accepted step raises f.

Every instance of a batch follows exactly the iteration it would follow alone (each has its own
step, memory and stopping test; finished instances leave the batch), so batched results equal
one-by-one results up to floating-point summation order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import torch

ARMIJO = 1e-4
INITIAL_STEP = 0.1
"""The first step (and the step after a memory reset) moves X by this fraction of its norm."""


class Evaluator(Protocol):
    """At ``x [..., n]``: ``values [..., 1+E]`` (the objective, then E numbers for the trace, named
    by ``value_names``) and the Euclidean gradient ``[..., n]``."""

    value_names: tuple[str, ...]

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def select(self, idx: torch.Tensor) -> Evaluator: ...

    def squeeze(self) -> Evaluator: ...


@dataclass
class PowerSphere:
    """The feasible set: ``p_max [...]`` total power, or per antenna ``p_max / num_antennas``."""

    p_max: torch.Tensor
    num_antennas: int
    num_streams: int
    per_antenna: bool = False

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (2, self.num_antennas, self.num_streams))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.per_antenna:
            r = self._rows(x)
            power = (r * r).sum((-3, -1), keepdim=True)
            return (r * torch.sqrt((self.p_max / self.num_antennas)[..., None, None, None] / power)).flatten(-3)
        return x * (torch.sqrt(self.p_max) / torch.linalg.vector_norm(x, dim=-1))[..., None]

    def tangent(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Projection of v onto the tangent space at the feasible point x."""
        if self.per_antenna:
            r, w = self._rows(x), self._rows(v)
            c = (r * w).sum((-3, -1), keepdim=True) / (r * r).sum((-3, -1), keepdim=True)
            return (w - c * r).flatten(-3)
        if x.dim() == 1:
            return torch.addcmul(v, x, torch.dot(x, v), value=-1.0 / float(self.p_max))
        return v - ((x * v).sum(-1) / self.p_max)[..., None] * x

    def select(self, idx: torch.Tensor) -> PowerSphere:
        return PowerSphere(self.p_max[idx], self.num_antennas, self.num_streams, self.per_antenna)

    def squeeze(self) -> PowerSphere:
        """The sphere of a batch of one, without the batch dimension."""
        return PowerSphere(self.p_max[0], self.num_antennas, self.num_streams, self.per_antenna)


STOPS = ("converged", "stalled", "max_iterations", "non-finite start")
"""Why an instance stopped: tolerance met; no step above round-off from a fresh memory; budget; f(x0) not finite."""


@dataclass
class AscentResult:
    """Per instance: final point, why it stopped (one of :data:`STOPS`, and a message), accepted iterations,
    evaluations, trace."""

    x: list[torch.Tensor]
    stops: list[str]
    messages: list[str]
    iterations: list[int]
    evaluations: list[int]
    traces: list[list[dict[str, float]]] = field(default_factory=list)


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a`` where ``mask [B]`` else ``b`` (broadcast over trailing dimensions)."""
    return torch.where(mask.reshape(mask.shape + (1,) * (a.dim() - mask.dim())), a, b)


def _direction(buf: torch.Tensor, g: torch.Tensor, gamma: torch.Tensor | float, pad: torch.Tensor | None = None,
               gram: torch.Tensor | None = None, order: torch.Tensor | None = None) -> torch.Tensor:
    r""":math:`\mathbf H_k\mathbf g` in compact form (Byrd, Nocedal and Schnabel 1994, eq. (2.6)).

    ``buf [..., 2m, n]`` holds s (rows < m) then y, unused rows zero (they then contribute
    nothing); ``gamma`` :math:`=\mathbf s^T\mathbf y/\mathbf y^T\mathbf y` of the newest pair
    (:math:`\mathbf H_0=\gamma\mathbf I`). The pairs are oldest first, or, with ``order [B, m]``
    (the slot of the i-th oldest pair of a circular buffer), in that order. ``gram`` is
    ``buf buf^T`` when the caller keeps it; ``pad [m, m]`` a diagonal with ones on the unused
    rows (else found from the buffer) to keep the triangular factor invertible.
    """
    m = buf.shape[-2] // 2
    if gram is None:
        gram = buf @ buf.mT
    v = buf @ g[..., None]
    if order is not None:  # to chronological order
        idx = torch.cat([order, order + m], -1)
        gram = gram.gather(-2, idx[..., :, None].expand_as(gram)).gather(-1, idx[..., None, :].expand_as(gram))
        v = v.gather(-2, idx[..., None])
    sy, yy = gram[..., :m, m:], gram[..., m:, m:]
    dsy = sy.diagonal(dim1=-2, dim2=-1)
    r = sy.triu() + (torch.diag_embed((dsy <= 0).to(sy.dtype)) if pad is None else pad)
    if isinstance(gamma, torch.Tensor):
        gamma = gamma[..., None, None]
    u = torch.linalg.solve_triangular(r, v[..., :m, :], upper=True)
    w = dsy[..., None] * u + gamma * (yy @ u - v[..., m:, :])
    w1 = torch.linalg.solve_triangular(r.mT, w, upper=False)
    coef = torch.cat([w1, -gamma * u], -2)
    if order is not None:  # back to the slots
        coef = torch.zeros_like(coef).scatter(-2, idx[..., None], coef)
    return (buf.mT @ coef)[..., 0] + (gamma[..., 0] if isinstance(gamma, torch.Tensor) else gamma) * g


def _shrink(t: torch.Tensor, slope: torch.Tensor, f: torch.Tensor, f_trial: torch.Tensor) -> torch.Tensor:
    """Step after a rejected trial: minimiser of the quadratic through f, the slope and f_trial, kept in [0.1 t, 0.5 t]."""
    t_q = slope * t * t / (2.0 * (f + slope * t - f_trial))
    return torch.where(torch.isfinite(t_q) & (t_q > 0), torch.minimum(torch.maximum(t_q, 0.1 * t), 0.5 * t), 0.5 * t)


def _push(buf: torch.Tensor, s: torch.Tensor, y: torch.Tensor, m: int) -> torch.Tensor:
    """The memory with the oldest pair dropped and (s, y) appended."""
    return torch.cat([buf[..., 1:m, :], s[..., None, :], buf[..., m + 1:, :], y[..., None, :]], -2)


_NON_FINITE_START = "the initial point gives a non-finite objective"


def _budget_message(max_iterations: int) -> str:
    return f"{max_iterations} iterations without meeting the tolerance"


def _converged_message(tolerance: float, its: int) -> str:
    return f"objective change <= {tolerance:g} (relative) after {its} iterations"


def _stalled_message(its: int) -> str:
    return f"no step raises the objective beyond round-off after {its} iterations"


def lbfgs_ascent(
    evaluate: Evaluator,
    x0: torch.Tensor,
    sphere: PowerSphere,
    *,
    memory: int = 10,
    max_iterations: int = 5000,
    tolerance: float = 1e-10,
) -> AscentResult:
    r"""Maximise ``evaluate`` from the feasible ``x0 [B, n]`` on ``sphere``.

    An instance stops (converged) when an accepted step changes f by at most
    ``tolerance * max(|f|, 1e-12)``, or when no step down to round-off raises f from a fresh
    memory; otherwise after ``max_iterations`` accepted steps. ``B == 1`` runs without the batch
    dimension and with Python control flow (a single solve is bound by per-operation overhead).
    """
    if x0.shape[0] == 1:
        return _single(evaluate, x0[0], sphere, memory, max_iterations, tolerance)
    return _batch(evaluate, x0, sphere, memory, max_iterations, tolerance)


def _start(evaluate, x, sphere):
    values, grad = evaluate(x)
    g = sphere.tangent(x, grad)
    radius = torch.linalg.vector_norm(x, dim=-1)
    gamma0 = INITIAL_STEP * radius / torch.linalg.vector_norm(g, dim=-1).clamp(min=1e-300)
    return values, g, radius, gamma0


def _trace_row(names: tuple[str, ...], its: int, vals: list[float]) -> dict[str, float]:
    row = {"iteration": its}
    row.update(zip(names, vals))
    return row


def _single(evaluate, x, sphere, m, max_iterations, tolerance) -> AscentResult:
    sphere, evaluate = sphere.squeeze(), evaluate.squeeze()
    values, g, radius, gamma0 = _start(evaluate, x, sphere)
    fv = float(values[0])
    out = AscentResult([x], ["max_iterations"], [_budget_message(max_iterations)], [0], [1],
                       [[{"iteration": 0, "objective": fv}]])
    if not math.isfinite(fv):
        out.stops[0], out.messages[0] = "non-finite start", _NON_FINITE_START
        return out
    g0, radius = float(gamma0), float(radius)
    pads = [torch.diag_embed((torch.arange(m, device=x.device) < m - c).to(x.dtype)) for c in range(m + 1)]
    buf = torch.zeros(2 * m, x.shape[-1], dtype=x.dtype, device=x.device)
    count, gamma = 0, g0  # pairs in the memory; H_0 = gamma I
    d = g0 * g
    slope = float(torch.dot(g, d))
    t = 1.0
    its = 0
    while its < max_iterations:
        trial = sphere.normalize(torch.add(x, d, alpha=t))
        values, grad = evaluate(trial)
        out.evaluations[0] += 1
        vals = values.tolist()
        fnv = vals[0]
        if fnv >= fv + ARMIJO * t * slope and math.isfinite(fnv):
            gn = sphere.tangent(trial, grad)
            s, y = trial - x, g - gn
            sy = float(torch.dot(s, y))
            if sy > 0:
                buf = _push(buf, s, y, m)
                count, gamma = min(count + 1, m), sy / float(torch.dot(y, y))
            x, g = trial, gn
            its += 1
            out.traces[0].append(_trace_row(evaluate.value_names, its, vals))
            done = abs(fnv - fv) <= tolerance * max(abs(fv), 1e-12)
            fv = fnv
            if done:
                out.stops[0], out.messages[0] = "converged", _converged_message(tolerance, its)
                break
            d = sphere.tangent(x, _direction(buf, g, gamma, pads[count]) if count else gamma * g)
            slope = float(torch.dot(g, d))
            if slope <= 0:  # not an ascent direction: drop the memory
                buf.zero_()
                count, gamma = 0, g0
                d = g0 * g
                slope = float(torch.dot(g, d))
            t = 1.0
            continue
        t_q = slope * t * t / (2.0 * (fv + slope * t - fnv)) if math.isfinite(fnv) else 0.0
        t = min(max(t_q, 0.1 * t), 0.5 * t) if t_q > 0 else 0.5 * t
        if t * float(torch.linalg.vector_norm(d)) < 1e-13 * radius:
            if count == 0:
                out.stops[0], out.messages[0] = "stalled", _stalled_message(its)
                break
            buf.zero_()  # restart from the gradient
            count, gamma = 0, g0
            d = g0 * g
            slope = float(torch.dot(g, d))
            t = 1.0
    out.x[0], out.iterations[0] = x, its
    return out


def _batch(evaluate, x, sphere, m, max_iterations, tolerance) -> AscentResult:
    n_inst = x.shape[0]
    values, g, radius, gamma0 = _start(evaluate, x, sphere)
    f = values[:, 0]
    f_list = f.tolist()
    out = AscentResult(list(x), ["max_iterations"] * n_inst, [_budget_message(max_iterations)] * n_inst,
                       [0] * n_inst, [1] * n_inst, [[{"iteration": 0, "objective": v}] for v in f_list])
    for i, v in enumerate(f_list):
        if not math.isfinite(v):
            out.stops[i], out.messages[i] = "non-finite start", _NON_FINITE_START
    # row j of the batch is instance row_inst[j]; finished rows (live False) are still computed until compaction.
    # Circular memory: the pair of slot j is (buf[:, j], buf[:, m + j]); pos = the next slot to write;
    # gram = buf buf^T kept up to date (recomputing it would cost as much as the objective).
    live = torch.isfinite(f)
    row_inst = torch.arange(n_inst, device=x.device)
    buf = torch.zeros(x.shape[:-1] + (2 * m, x.shape[-1]), dtype=x.dtype, device=x.device)
    gram = torch.zeros(n_inst, 2 * m, 2 * m, dtype=x.dtype, device=x.device)
    pos = torch.zeros(n_inst, dtype=torch.long, device=x.device)
    count = torch.zeros(n_inst, dtype=torch.long, device=x.device)
    slots = torch.arange(m, device=x.device)
    its_row = torch.zeros(n_inst, dtype=torch.long, device=x.device)
    evals_row = torch.zeros(n_inst, dtype=torch.long, device=x.device)
    gamma = gamma0.clone()
    d = gamma0[:, None] * g
    slope = (g * d).sum(-1)
    t = torch.ones_like(f)
    while bool(live.any()):
        if int(live.sum()) < 0.75 * live.numel():  # compact: finished instances leave the batch
            sel = live.nonzero().squeeze(-1)
            x, f, g, d, slope, t, buf, gram, pos, count, gamma, gamma0, radius, live, row_inst, its_row, evals_row = (
                v[sel] for v in (x, f, g, d, slope, t, buf, gram, pos, count, gamma, gamma0, radius, live, row_inst,
                                 its_row, evals_row))
            evaluate, sphere = evaluate.select(sel), sphere.select(sel)
        trial = sphere.normalize(x + t[:, None] * d)
        values, grad = evaluate(trial)
        fn = values[:, 0]
        gn = sphere.tangent(trial, grad)
        ok = (fn >= f + ARMIJO * t * slope) & torch.isfinite(fn)
        s, y = trial - x, g - gn
        sy = (s * y).sum(-1)
        push = ok & (sy > 0)
        pr = push.nonzero().squeeze(-1)
        if pr.numel():
            j = pos[pr]
            buf[pr, j], buf[pr, m + j] = s[pr], y[pr]
            c = (buf @ torch.stack([s, y], -1))[pr]
            gram[pr, :, j] = gram[pr, j, :] = c[..., 0]
            gram[pr, :, m + j] = gram[pr, m + j, :] = c[..., 1]
            pos = torch.where(push, (pos + 1) % m, pos)
            count = torch.where(push, (count + 1).clamp(max=m), count)
            gamma = torch.where(push, sy / (y * y).sum(-1), gamma)
        f_old = f
        x, f, g = _where(ok, trial, x), _where(ok, fn, f), _where(ok, gn, g)
        order = (pos[:, None] + slots) % m
        d_new = sphere.tangent(x, _direction(buf, g, gamma, gram=gram, order=order))
        slope_new = (g * d_new).sum(-1)
        reset = ok & (slope_new <= 0)  # not an ascent direction: drop the memory
        d = _where(ok, _where(reset, gamma0[:, None] * g, d_new), d)
        t = _where(ok, torch.ones_like(t), _shrink(t, slope, f_old, fn))
        tiny = ~ok & (t * torch.linalg.vector_norm(d, dim=-1) < 1e-13 * radius)
        stalled = tiny & (count == 0)
        reset = reset | (tiny & (count > 0))  # a step below round-off: restart from the gradient
        rr = reset.nonzero().squeeze(-1)
        if rr.numel():
            buf[rr], gram[rr], pos[rr], count[rr] = 0.0, 0.0, 0, 0
            gamma = torch.where(reset, gamma0, gamma)
            d = _where(reset, gamma0[:, None] * g, d)
            t = torch.where(reset, 1.0, t)
        slope = (g * d).sum(-1)
        done = ok & ((fn - f_old).abs() <= tolerance * f_old.abs().clamp(min=1e-12))
        acc = ok & live
        its_row += acc
        evals_row += live
        finished = live & (done | stalled | (its_row >= max_iterations))
        a = acc.nonzero().squeeze(-1)
        if a.numel():  # trace rows of the accepted steps
            for i, it, v in zip(row_inst[a].tolist(), its_row[a].tolist(), values[a].tolist()):
                out.traces[i].append(_trace_row(evaluate.value_names, it, v))
        fin = finished.nonzero().squeeze(-1).tolist()
        if fin:
            flags = torch.stack([row_inst, its_row, evals_row, done, stalled], -1)[fin].tolist()
            for j, (i, its, evals, cv, st) in zip(fin, flags):
                out.iterations[i], out.evaluations[i] = its, evals + 1
                if cv:
                    out.stops[i], out.messages[i] = "converged", _converged_message(tolerance, its)
                elif st:
                    out.stops[i], out.messages[i] = "stalled", _stalled_message(its)
                out.x[i] = x[j].clone()
            live = live & ~finished
    return out
