r"""User association for 000 (Li et al.): sub-problem (P2), eq. (28), and its baselines.

With the beams held fixed, the UA step of 000's Algorithm 3 sees a K x N matrix of linear SINRs
:math:`\gamma_{k,i}\ge 0` (BS k, CU i; eq. (8), :func:`isac.metrics.network.sinr_matrix`) and solves

.. math::

    (P2):\ \max_{\mathbf U}\ F(\mathbf U)=B\sum_{k}\frac{1}{n_k}\sum_{i:\,u_{k,i}=1}\log_2(1+\gamma_{k,i}),
    \qquad n_k=\|\tilde{\mathbf u}_k\|_0,

    \text{s.t.}\ \textstyle\sum_i u_{k,i}\ge 1\ \forall k\ \text{(27d)},\quad
    \sum_k u_{k,i}=1\ \forall i\ \text{(27e)},\quad u_{k,i}\in\{0,1\}\ \text{(27f)},

i.e. the sum over BSs of the mean rate of each BS's CUs (bandwidth B is shared equally among a
BS's CUs, eq. (24)). Every objective reported here is
:func:`isac.metrics.network.association_objective_bps_hz` evaluated on the returned association;
the methods' own arithmetic only steers their search.

Methods (:func:`association_methods`):

* ``exact`` -- provably optimal; Lagrangian branch-and-bound over BS loads (:class:`ExactAssociation`).
* ``milp`` -- the textbook MILP through HiGHS (:class:`MilpAssociation`), a reference.
* ``brute-force`` -- enumeration of all :math:`K^N` maps (000's "Convex plus BF" upper bound).
* ``gale-shapley`` -- 000's "Convex method only": Gale-Shapley matching + coalition-game switches.
* ``fixed`` -- 000's "Beamforming only": keep the given (or the initial Gale-Shapley) matching.
* ``llm`` -- 000's LLM optimiser (Algorithm 1), in :mod:`isac.solvers.li_llm`.

Shapes: ``sinr [K, N]`` float64 (linear, >= 0, K <= N); an association is ``[N]`` int64 (0-based
BS index of each CU) or, via :meth:`AssociationResult.matrix`, ``[K, N]`` 0/1. ``bandwidth`` B
is 1 for bit/s/Hz, or in Hz for bit/s.
"""

from __future__ import annotations

import dataclasses
import math
import time
import typing
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from isac.metrics.network import association_objective_bps_hz
from isac.scenario.io import InstanceError
from isac.solvers.base import OptionError, _parse_option


class AssociationError(InstanceError):
    """A malformed SINR matrix, bandwidth or association, or a method refusing an instance; one line."""


# --- validation --------------------------------------------------------------


def validate_sinr_matrix(sinr: Any) -> np.ndarray:
    """Check a SINR matrix and return it as float64 ``[K, N]``.

    Accepts nested lists, NumPy arrays and torch tensors. Refuses, naming the problem: a ragged
    or non-2-D input, an empty matrix, non-numeric (strings, booleans, complex) entries, NaN,
    +-Inf, negative entries, and K > N ((27d) needs every BS to serve at least one CU).
    """
    if isinstance(sinr, torch.Tensor):
        sinr = sinr.detach().cpu().numpy()
    try:
        raw = np.asarray(sinr)
    except (TypeError, ValueError):
        raise AssociationError("sinr: expected a rectangular K x N matrix of numbers (rows of different lengths?)") from None
    if raw.dtype.kind == "O":
        raise AssociationError("sinr: expected a rectangular K x N matrix of numbers (ragged rows or non-numeric entries)")
    if raw.dtype.kind == "c":
        raise AssociationError("sinr: entries must be real linear SINRs, got complex numbers")
    if raw.dtype.kind not in "iuf":
        raise AssociationError(f"sinr: entries must be numbers, got {raw.dtype.name} values")
    if raw.ndim != 2:
        raise AssociationError(f"sinr: expected a 2-D K x N matrix, got {raw.ndim} dimension(s) with shape {list(raw.shape)}")
    if raw.size == 0:
        raise AssociationError(f"sinr: the matrix is empty (shape {list(raw.shape)}); need K >= 1 BSs and N >= K CUs")
    g = raw.astype(np.float64)
    bad = ~np.isfinite(g)
    if bad.any():
        k, i = np.argwhere(bad)[0]
        raise AssociationError(f"sinr[{k}][{i}]: must be finite, got {g[k, i]}")
    if (g < 0).any():
        k, i = np.argwhere(g < 0)[0]
        raise AssociationError(f"sinr[{k}][{i}]: linear SINRs must be >= 0, got {g[k, i]:g}")
    K, N = g.shape
    if K > N:
        raise AssociationError(f"sinr: (27d) needs every BS to serve one CU: K={K} > N={N}")
    return g


def _validate_bandwidth(bandwidth: Any) -> float:
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float, np.integer, np.floating)):
        raise AssociationError(f"bandwidth: expected a number, got {type(bandwidth).__name__}")
    b = float(bandwidth)
    if not math.isfinite(b) or b <= 0:
        raise AssociationError(f"bandwidth: must be finite and > 0, got {b:g}")
    return b


def validate_association(association: Any, num_bs: int, num_users: int, what: str = "initial") -> np.ndarray:
    """An association as int64 ``[N]`` (BS index per CU), checked against (27d)-(27f).

    Accepts ``[N]`` integer BS indices in ``0..K-1`` or a ``[K, N]`` 0/1 matrix with one 1 per
    column. Refuses a wrong shape, non-integer or out-of-range indices and a BS serving nobody.
    """
    if isinstance(association, torch.Tensor):
        association = association.detach().cpu().numpy()
    try:
        a = np.asarray(association)
    except (TypeError, ValueError):
        raise AssociationError(f"{what}: expected {num_users} BS indices") from None
    if a.dtype.kind not in "iuf" or a.dtype.kind == "b":
        raise AssociationError(f"{what}: expected integer BS indices, got {a.dtype.name} values")
    if a.shape == (num_bs, num_users) and a.ndim == 2:
        af = a.astype(np.float64)
        if not np.isin(af, (0.0, 1.0)).all() or not (af.sum(0) == 1).all():
            raise AssociationError(f"{what}: a K x N association needs 0/1 entries and exactly one 1 per CU column (27e)")
        a = af.argmax(0)
    elif a.shape != (num_users,):
        raise AssociationError(f"{what}: expected {num_users} BS indices (one per CU), got shape {list(a.shape)}")
    af = a.astype(np.float64)
    if not np.isfinite(af).all() or not (af == np.round(af)).all():
        raise AssociationError(f"{what}: BS indices must be integers")
    out = af.astype(np.int64)
    if out.size and (out.min() < 0 or out.max() >= num_bs):
        bad = int(out[(out < 0) | (out >= num_bs)][0])
        raise AssociationError(f"{what}: BS index {bad} is out of range 0..{num_bs - 1}")
    empty = np.flatnonzero(np.bincount(out, minlength=num_bs) == 0)
    if empty.size:
        raise AssociationError(f"{what}: BS {int(empty[0])} serves no CU; (27d) needs every BS to serve at least one")
    return out


def _rates(sinr: np.ndarray, bandwidth: float) -> np.ndarray:
    r"""``[K, N]`` :math:`B\log_2(1+\gamma_{k,i})` (log1p keeps tiny SINRs accurate)."""
    return bandwidth * np.log1p(sinr) / math.log(2.0)


def _objective(sinr: np.ndarray, association: np.ndarray, bandwidth: float) -> float:
    """The one metric implementation, as a Python float."""
    return float(association_objective_bps_hz(torch.as_tensor(sinr), torch.as_tensor(association), bandwidth))


def _value(r: np.ndarray, association: np.ndarray) -> float:
    """Internal (P2) value used only to steer searches; reports use :func:`_objective`."""
    K = r.shape[0]
    load = np.bincount(association, minlength=K)
    s = np.bincount(association, weights=r[association, np.arange(r.shape[1])], minlength=K)
    return float((s / np.maximum(load, 1)).sum())


# --- result and registry -----------------------------------------------------


@dataclass
class AssociationResult:
    """Outcome of one association call.

    Attributes:
        association: ``[N]`` int64, 0-based BS index of each CU.
        objective: (P2)'s objective (eq. (28)) of ``association``, from
            :func:`isac.metrics.network.association_objective_bps_hz` (bit/s/Hz for B = 1).
        method: registered name of the method.
        time_s: wall time of the call, validation included.
        info: facts about the run (JSON-ready), e.g. ``proven_optimal``, nodes, rounds, switches.
    """

    association: np.ndarray
    objective: float
    method: str
    time_s: float
    info: dict[str, Any] = field(default_factory=dict)

    def matrix(self) -> np.ndarray:
        """``[K, N]`` int 0/1: ``matrix()[k, i] = 1`` iff BS k serves CU i (the family's file format)."""
        K = int(self.info.get("num_bs", int(self.association.max()) + 1))
        out = np.zeros((K, self.association.size), dtype=np.int64)
        out[self.association, np.arange(self.association.size)] = 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"association": [int(x) for x in self.association], "objective": float(self.objective),
                "method": self.method, "time_s": float(self.time_s), "info": _plain(self.info)}


def _plain(x: Any) -> Any:
    """NumPy scalars/arrays inside ``info`` -> Python numbers/lists (JSON-ready)."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    return x


class AssociationMethod:
    """Base of the method dataclasses: validation, timing and the reported objective live here.

    A subclass is a ``@dataclass`` of typed options with ``name``, ``description`` and
    ``_associate(rates [K, N], initial [N] or None) -> (association [N], info)``, where
    ``rates`` is :math:`B\\log_2(1+\\gamma)`.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def _associate(self, rates: np.ndarray, initial: np.ndarray | None) -> tuple[np.ndarray, dict[str, Any]]:
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def associate(self, sinr: Any, *, bandwidth: float = 1.0, initial: Any = None) -> AssociationResult:
        """Solve (P2) for ``sinr [K, N]`` (linear); ``initial [N]`` is an optional current association."""
        t0 = time.perf_counter()
        g = validate_sinr_matrix(sinr)
        b = _validate_bandwidth(bandwidth)
        init = None if initial is None else validate_association(initial, *g.shape)
        assoc, info = self._associate(_rates(g, b), init)
        assoc = np.asarray(assoc, dtype=np.int64)
        objective = _objective(g, assoc, b)
        info = {"num_bs": g.shape[0], "num_users": g.shape[1], **info}
        return AssociationResult(assoc, objective, self.name, time.perf_counter() - t0, _plain(info))


_METHODS: dict[str, type[AssociationMethod]] = {}


def register_association(cls: type[AssociationMethod]) -> type[AssociationMethod]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in _METHODS and _METHODS[cls.name] is not cls:
        raise ValueError(f"association method {cls.name!r} registered twice")
    _METHODS[cls.name] = cls
    return cls


def association_methods() -> dict[str, type[AssociationMethod]]:
    """Registered methods by name."""
    return dict(_METHODS)


def get_association_method(name: str, options: Mapping[str, Any] | None = None) -> AssociationMethod:
    """Instantiate method ``name``; string option values (from the CLI) are parsed by field type."""
    if name not in _METHODS:
        raise OptionError(f"unknown association method {name!r} (available: {', '.join(sorted(_METHODS))})")
    cls = _METHODS[name]
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in (options or {}).items():
        if key not in fields:
            raise OptionError(
                f"association method {name!r} has no option {key!r} (options: {', '.join(sorted(fields)) or 'none'})")
        kwargs[key] = _parse_option(name, key, value, hints[key])
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise OptionError(f"association method {name!r}: {e}") from None


def associate(sinr: Any, method: str = "exact", *, bandwidth: float = 1.0, initial: Any = None,
              **options: Any) -> AssociationResult:
    """Solve (P2) with ``method`` (default ``exact``); see :func:`association_methods`.

    >>> associate([[1.0, 3.0], [1.0, 0.0]]).association.tolist()
    [1, 0]
    """
    return get_association_method(method, options).associate(sinr, bandwidth=bandwidth, initial=initial)


# --- Gale-Shapley + coalition game ("Convex method only"), and "Beamforming only" -------------


def _gale_shapley(sinr_like: np.ndarray) -> np.ndarray:
    """Users-proposing deferred acceptance with quota ceil(N/K) per BS; ``[N]`` BS per CU.

    Users rank BSs by descending value (ties: lower BS index first); a BS keeps the
    ``quota`` best proposers by descending value (ties: lower CU index kept). K*quota >= N, so
    nobody exhausts their list: a CU is rejected by a BS only when it is full, and all K full
    would hold K*quota >= N CUs besides the rejected one.
    """
    K, N = sinr_like.shape
    quota = -(-N // K)
    prefs = np.argsort(-sinr_like, axis=0, kind="stable")  # [K, N]: column i is CU i's BS order
    nxt = np.zeros(N, dtype=np.int64)
    held: list[list[int]] = [[] for _ in range(K)]
    free = deque(range(N))
    while free:
        i = free.popleft()
        k = int(prefs[nxt[i], i])
        nxt[i] += 1
        held[k].append(i)
        if len(held[k]) > quota:
            # The BS's least preferred holder: lowest value, and among equals the highest index.
            worst = min(held[k], key=lambda u: (sinr_like[k, u], -u))
            held[k].remove(worst)
            free.append(worst)
    out = np.empty(N, dtype=np.int64)
    for k, users in enumerate(held):
        out[users] = k
    return out


def _fill_empty_bs(sinr_like: np.ndarray, association: np.ndarray) -> tuple[np.ndarray, int]:
    """Enforce (27d): while a BS is empty (lowest index first), give it the CU with the largest
    value at it among CUs of BSs serving >= 2 (ties: lowest CU index). Returns (U, moves)."""
    K, _ = sinr_like.shape
    a = association.copy()
    moves = 0
    while True:
        load = np.bincount(a, minlength=K)
        empty = np.flatnonzero(load == 0)
        if empty.size == 0:
            return a, moves
        b = int(empty[0])
        donors = np.flatnonzero(load[a] >= 2)  # K <= N guarantees one exists while a BS is empty
        i = int(donors[np.argmax(sinr_like[b, donors])])
        a[i] = b
        moves += 1


def _coalition_switches(r: np.ndarray, association: np.ndarray, max_rounds: int,
                        tolerance: float) -> tuple[np.ndarray, dict[str, Any]]:
    """Single-CU switches a -> b (n_a >= 2) that raise F by more than ``tolerance * |F|``.

    Each round scans CUs in index order; CU i takes the destination with the largest gain (ties:
    lowest BS index). Every accepted switch strictly raises F and keeps (27d), so F never drops;
    the loop stops after a round without a switch (switch-stable) or ``max_rounds`` rounds.
    """
    K, N = r.shape
    a = association.copy()
    load = np.bincount(a, minlength=K).astype(np.float64)
    s = np.bincount(a, weights=r[a, np.arange(N)], minlength=K)
    F = float((s / load).sum())
    switches = rounds = 0
    stable = False
    trace = [F]
    while rounds < max_rounds:
        rounds += 1
        moved = 0
        for i in range(N):
            src = int(a[i])
            if load[src] < 2:
                continue
            # F change of moving i to every BS b (the b = src entry is masked below).
            leave = (s[src] - r[src, i]) / (load[src] - 1) - s[src] / load[src]
            join = (s + r[:, i]) / (load + 1) - s / load
            gain = leave + join
            gain[src] = -np.inf
            dst = int(np.argmax(gain))
            if gain[dst] > tolerance * abs(F) and gain[dst] > 0:
                s[src] -= r[src, i]
                load[src] -= 1
                s[dst] += r[dst, i]
                load[dst] += 1
                a[i] = dst
                F = float((s / load).sum())  # recomputed, not accumulated, so rounding cannot drift
                moved += 1
        switches += moved
        trace.append(F)
        if moved == 0:
            stable = True
            break
    return a, {"switches": switches, "rounds": rounds, "switch_stable": stable, "round_values": trace}


@register_association
@dataclass
class GaleShapleyAssociation(AssociationMethod):
    r"""000's "Convex method only" UA (Sec. VI): Gale-Shapley matching, then coalition-game switches.

    000 cites Dubins-Freedman [62] and [63] without giving the rules; ours:

    1. users-proposing deferred acceptance: CU i ranks BSs by :math:`\gamma_{k,i}` (descending),
       BS k ranks CUs by :math:`\gamma_{k,i}` (descending), each BS accepts at most
       :math:`\lceil N/K\rceil` CUs; ties go to the lower index;
    2. (27d): while a BS is empty (lowest index first), it takes the CU with the largest SINR at
       it among the CUs of BSs serving >= 2;
    3. coalition game: CU i leaves BS a (only if :math:`n_a\ge 2`) for the BS b with the largest
       gain in F, accepted only if F rises by more than ``switch_tolerance`` relative; CUs are
       scanned in index order, round after round, until a round makes no switch (the partition is
       then switch-stable: no single CU can raise F by moving) or ``max_rounds`` is reached.

    F never decreases in step 3, and the result always satisfies (27d)-(27f). ``initial`` is
    validated and ignored. ``info``: ``gs_objective`` (after step 2, by the metric), ``gs_fix_moves``,
    ``switches``, ``rounds``, ``switch_stable``, ``round_values`` (internal F after each round).
    """

    name: ClassVar[str] = "gale-shapley"
    description: ClassVar[str] = "000's 'Convex method only': Gale-Shapley matching + coalition-game switches"

    max_rounds: int = 100
    switch_tolerance: float = 1e-12

    def __post_init__(self) -> None:
        if self.max_rounds < 0:
            raise ValueError(f"max_rounds must be >= 0, got {self.max_rounds}")
        if not (self.switch_tolerance >= 0 and math.isfinite(self.switch_tolerance)):
            raise ValueError(f"switch_tolerance must be finite and >= 0, got {self.switch_tolerance}")

    def _associate(self, rates, initial):
        # Rates are a monotone map of the SINRs, so ranking by them is ranking by gamma.
        gs, fix = _fill_empty_bs(rates, _gale_shapley(rates))
        out, info = _coalition_switches(rates, gs, self.max_rounds, self.switch_tolerance)
        info = {"gs_association": gs.tolist(), "gs_fix_moves": fix, **info}
        return out, info

    def associate(self, sinr, *, bandwidth=1.0, initial=None):
        res = super().associate(sinr, bandwidth=bandwidth, initial=initial)
        g = validate_sinr_matrix(sinr)
        res.info["gs_objective"] = _objective(g, np.asarray(res.info["gs_association"]), _validate_bandwidth(bandwidth))
        return res


@register_association
@dataclass
class FixedAssociation(AssociationMethod):
    """000's "Beamforming only" UA: keep ``initial`` if given, else the Gale-Shapley matching
    after the (27d) fix (steps 1-2 of :class:`GaleShapleyAssociation`) without switches."""

    name: ClassVar[str] = "fixed"
    description: ClassVar[str] = "000's 'Beamforming only': the given association, or the initial Gale-Shapley matching"

    def _associate(self, rates, initial):
        if initial is not None:
            return initial.copy(), {"source": "initial"}
        a, fix = _fill_empty_bs(rates, _gale_shapley(rates))
        return a, {"source": "gale-shapley", "gs_fix_moves": fix}


# --- brute force ("Convex plus BF") ----------------------------------------------


@register_association
@dataclass
class BruteForceAssociation(AssociationMethod):
    r"""Exact (P2) by enumerating all :math:`K^N` maps CU -> BS (000's "Convex plus BF").

    Maps violating (27d) are skipped. Enumeration is lexicographic with CU 0 the most
    significant digit, and ties keep the first map, so the result is the lexicographically
    smallest optimal association. Vectorised in chunks of ``chunk`` maps; refuses when
    :math:`K^N` > ``max_assignments``. ``initial`` is validated and ignored.
    """

    name: ClassVar[str] = "brute-force"
    description: ClassVar[str] = "000's 'Convex plus BF': enumerate all K^N associations (small K, N only)"

    max_assignments: int = 2_000_000
    chunk: int = 65_536

    def __post_init__(self) -> None:
        if self.max_assignments < 1 or self.chunk < 1:
            raise ValueError("max_assignments and chunk must be >= 1")

    def _associate(self, rates, initial):
        K, N = rates.shape
        total = K**N
        if total > self.max_assignments:
            raise AssociationError(
                f"brute-force: K^N = {K}^{N} = {total:.3g} maps exceed max_assignments={self.max_assignments}; "
                "use method exact")
        powers = K ** np.arange(N - 1, -1, -1, dtype=np.int64)  # CU 0 is the most significant digit
        best_val, best_idx, feasible = -np.inf, -1, 0
        cols = np.arange(N)
        for start in range(0, total, self.chunk):
            idx = np.arange(start, min(total, start + self.chunk), dtype=np.int64)
            a = (idx[:, None] // powers[None, :]) % K  # [chunk, N]
            val = np.zeros(idx.size)
            ok = np.ones(idx.size, dtype=bool)
            picked = rates[a, cols[None, :]]  # [chunk, N]: rate of each CU on its BS
            for k in range(K):
                on_k = a == k
                load = on_k.sum(1)
                ok &= load > 0
                val += np.where(load > 0, (picked * on_k).sum(1) / np.maximum(load, 1), 0.0)
            feasible += int(ok.sum())
            val[~ok] = -np.inf
            j = int(np.argmax(val))
            if val[j] > best_val:  # strict: an earlier chunk's tie wins
                best_val, best_idx = float(val[j]), int(idx[j])
        out = (best_idx // powers) % K
        return out.astype(np.int64), {"proven_optimal": True, "assignments": total, "feasible_assignments": feasible}


# --- MILP reference ----------------------------------------------------------


@register_association
@dataclass
class MilpAssociation(AssociationMethod):
    r"""(P2) as a plain MILP solved by HiGHS (:func:`scipy.optimize.milp`); a reference for ``exact``.

    Binaries :math:`x_{k,i}` (CU i on BS k), one-hot loads :math:`y_{k,n}`
    (:math:`n=1..N-K+1`) and :math:`z_{k,n,i}=x_{k,i}y_{k,n}`:

    .. math::

        \max\sum_{k,n,i}\frac{r_{k,i}}{n}z_{k,n,i}\ \text{s.t.}\ \sum_k x_{k,i}=1,\
        \sum_n y_{k,n}=1,\ \sum_i x_{k,i}=\sum_n n\,y_{k,n},\ z_{k,n,i}\le x_{k,i},\ z_{k,n,i}\le y_{k,n},

    with :math:`r_{k,i}=B\log_2(1+\gamma_{k,i})\ge 0`. Because every objective coefficient is
    >= 0, maximisation drives z to :math:`\min(x,y)=xy`; the lower linearisation rows
    :math:`z\ge x+y-1` are redundant and left out. (27d) is :math:`n\ge 1`. HiGHS stops at an
    absolute gap of 1e-6 that scipy does not expose, so the objective is scaled to ~1e6 per BS
    first (``mip_rel_gap`` 1e-10). ``time_limit_s`` (None: none): on a timeout the best point found
    is returned with ``proven_optimal=False``. ``initial`` is validated and ignored.
    """

    name: ClassVar[str] = "milp"
    description: ClassVar[str] = "(P2) as a MILP through HiGHS (scipy.optimize.milp); reference timings"

    time_limit_s: float | None = None
    mip_rel_gap: float = 1e-10

    def __post_init__(self) -> None:
        if self.time_limit_s is not None and not self.time_limit_s > 0:
            raise ValueError(f"time_limit_s must be > 0, got {self.time_limit_s}")
        if not self.mip_rel_gap >= 0:
            raise ValueError(f"mip_rel_gap must be >= 0, got {self.mip_rel_gap}")

    def _associate(self, rates, initial):
        import scipy.sparse as sp
        from scipy.optimize import Bounds, LinearConstraint, milp

        K, N = rates.shape
        L = N - K + 1
        scale = 1e6 / max(float(rates.max()), 1e-300)
        nx, ny, nz = K * N, K * L, K * L * N
        X = np.arange(nx).reshape(K, N)
        Y = nx + np.arange(ny).reshape(K, L)
        Z = nx + ny + np.arange(nz).reshape(K, L, N)
        ns = np.arange(1, L + 1, dtype=np.float64)
        c = np.zeros(nx + ny + nz)
        c[Z.ravel()] = -(scale * rates[:, None, :] / ns[None, :, None]).ravel()
        rows, cols, vals, lo, hi = [], [], [], [], []

        def add(r_cols, r_vals, lb, ub):
            rows.append(np.full(len(r_cols), len(lo)))
            cols.append(np.asarray(r_cols))
            vals.append(np.asarray(r_vals, dtype=np.float64))
            lo.append(lb)
            hi.append(ub)

        for i in range(N):
            add(X[:, i], np.ones(K), 1.0, 1.0)
        for k in range(K):
            add(Y[k], np.ones(L), 1.0, 1.0)
            add(np.concatenate([X[k], Y[k]]), np.concatenate([np.ones(N), -ns]), 0.0, 0.0)
        A_eq = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(len(lo), nx + ny + nz))
        # z <= x and z <= y, one row each per z.
        zr = np.arange(nz)
        zx = np.broadcast_to(X[:, None, :], (K, L, N)).ravel()
        zy = np.broadcast_to(Y[:, :, None], (K, L, N)).ravel()
        A_le = sp.csr_matrix((np.concatenate([np.ones(2 * nz), -np.ones(2 * nz)]),
                              (np.concatenate([zr, nz + zr, zr, nz + zr]),
                               np.concatenate([Z.ravel(), Z.ravel(), zx, zy]))), shape=(2 * nz, nx + ny + nz))
        integrality = np.concatenate([np.ones(nx + ny), np.zeros(nz)])
        opts: dict[str, Any] = {"mip_rel_gap": self.mip_rel_gap}
        if self.time_limit_s is not None:
            opts["time_limit"] = self.time_limit_s
        res = milp(c, constraints=[LinearConstraint(A_eq, np.array(lo), np.array(hi)),
                                   LinearConstraint(A_le, -np.inf, 0.0)],
                   integrality=integrality, bounds=Bounds(0, 1), options=opts)
        if res.x is None:
            raise AssociationError(f"milp: HiGHS returned no solution ({res.message.splitlines()[0]})")
        x = res.x[:nx].reshape(K, N)
        out = x.argmax(0).astype(np.int64)
        info = {"proven_optimal": bool(res.status == 0), "highs_status": int(res.status),
                "highs_message": str(res.message).splitlines()[0],
                "mip_gap": None if getattr(res, "mip_gap", None) is None else float(res.mip_gap),
                "mip_nodes": None if getattr(res, "mip_node_count", None) is None else int(res.mip_node_count)}
        return out, info


# --- exact: Lagrangian branch-and-bound over loads -----------------------------


def _assignment_for_loads(r: np.ndarray, loads: np.ndarray) -> tuple[float, np.ndarray]:
    """V(n) exactly: the best association with loads ``n``, as a linear assignment.

    Slot rows repeat BS k n_k times with entries r[k, i]/n_k; an assignment of the N CUs to the N
    slots is exactly an association with those loads, with the same value.
    """
    from scipy.optimize import linear_sum_assignment

    K, N = r.shape
    bs_of_slot = np.repeat(np.arange(K), loads)
    cost = r[bs_of_slot, :] / loads[bs_of_slot][:, None]
    rows, cols = linear_sum_assignment(cost, maximize=True)
    a = np.empty(N, dtype=np.int64)
    a[cols] = bs_of_slot[rows]
    return float(cost[rows, cols].sum()), a


def _lp_multipliers(r: np.ndarray, max_load: int) -> np.ndarray:
    r"""Starting multipliers :math:`\lambda`: duals of the CU rows (27e) of a cheap LP relaxation.

    The LP is the relaxation of the load-indexed formulation without the rows
    :math:`x_{k,n,i}\le y_{k,n}`; it takes ~0.15 s at K = 10, N = 40. Any :math:`\lambda` gives a
    valid bound, so this only affects speed, never correctness.
    """
    import scipy.sparse as sp
    from scipy.optimize import linprog

    K, N = r.shape
    L = max_load
    ns = np.arange(1, L + 1, dtype=np.float64)
    nx, ny = K * L * N, K * L
    X = np.arange(nx).reshape(K, L, N)
    Y = nx + np.arange(ny).reshape(K, L)
    c = np.concatenate([-(r[:, None, :] / ns[None, :, None]).ravel(), np.zeros(ny)])
    user_rows = np.broadcast_to(np.arange(N)[None, None, :], (K, L, N)).ravel()
    load_rows = N + np.broadcast_to(np.arange(ny).reshape(K, L)[:, :, None], (K, L, N)).ravel()
    rows = np.concatenate([user_rows, load_rows, N + np.arange(ny), N + ny + np.repeat(np.arange(K), L)])
    cols = np.concatenate([X.ravel(), X.ravel(), Y.ravel(), Y.ravel()])
    vals = np.concatenate([np.ones(2 * nx), -np.tile(ns, K), np.ones(ny)])
    A = sp.csr_matrix((vals, (rows, cols)), shape=(N + ny + K, nx + ny))
    b = np.concatenate([np.ones(N), np.zeros(ny), np.ones(K)])
    res = linprog(c, A_eq=A, b_eq=b, bounds=(0, 1), method="highs")
    if res.status != 0 or getattr(res, "eqlin", None) is None:
        return np.zeros(N)
    lam = -np.asarray(res.eqlin.marginals[:N], dtype=np.float64)
    return lam if np.isfinite(lam).all() else np.zeros(N)


_STALL_WINDOW = 25
"""Polyak steps per progress check in :meth:`_LoadSearch.node`."""
_STALL_RATIO = 0.7
"""Refinement of a node stops when a window shrinks its bound gap by less than 30 %."""


class _LoadSearch:
    r"""Depth-first branch-and-bound over load vectors, BS 0 first (see :class:`ExactAssociation`)."""

    def __init__(self, r: np.ndarray, incumbent: np.ndarray, *, refine_iterations: int, tolerance: float,
                 max_nodes: int, refine_min_bs: int = 2) -> None:
        self.r = r
        self.K, self.N = r.shape
        self.max_load = self.N - self.K + 1
        self.best_assoc = incumbent
        self.best = _value(r, incumbent)
        self.refine_iterations = refine_iterations
        self.refine_min_bs = refine_min_bs
        self.tolerance = tolerance
        self.max_nodes = max_nodes
        self.nodes = self.leaves = self.evaluations = self.refined = 0
        self.exhausted = False
        self.root_bound = math.inf

    def tol(self) -> float:
        return self.tolerance * max(1.0, abs(self.best))

    def _offer(self, value: float, assoc: np.ndarray) -> None:
        if value > self.best + self.tol():
            self.best, self.best_assoc = value, assoc

    def bound(self, lam: np.ndarray, j: int, m: int, prefix: np.ndarray):
        r"""Bound of the subtree where BSs < j have loads ``prefix`` and BSs j..K-1 share m CUs.

        Returns (bound, p, D, arg, order, pre, pre_sets): ``p[t, n-1]`` = :math:`p_{j+t}(n;\lambda)`;
        ``D[t, mm]`` the best sum of p over BSs j+t.. with total load mm (-inf if impossible);
        ``arg`` its argmax loads; ``order`` the sort behind p; ``pre`` the prefix's p-sum and
        ``pre_sets`` its top-n sets.
        """
        self.evaluations += 1
        r, K = self.r, self.K
        hi = m - (K - 1 - j)  # every later BS needs one CU
        ns = np.arange(1, hi + 1, dtype=np.float64)
        vals = r[j:, None, :] / ns[None, :, None] - lam[None, None, :]  # [K-j, hi, N]
        order = np.argsort(-vals, axis=2, kind="stable")
        csum = np.cumsum(np.take_along_axis(vals, order, axis=2), axis=2)
        p = csum[:, np.arange(hi), np.arange(hi)]  # sum of the n largest, for n = 1..hi
        pre, pre_sets = 0.0, []
        if j:
            pv = r[:j] / prefix[:, None] - lam[None, :]
            po = np.argsort(-pv, axis=1, kind="stable")
            for k in range(j):
                top = po[k, :prefix[k]]
                pre += float(pv[k, top].sum())
                pre_sets.append(top)
        nk = K - j
        D = np.full((nk + 1, m + 1), -np.inf)
        D[nk, 0] = 0.0
        arg = np.zeros((nk, m + 1), dtype=np.int64)
        mm = np.arange(m + 1)[:, None]
        nn = np.arange(1, hi + 1)[None, :]
        rest = mm - nn
        valid = rest >= 0
        rest = np.where(valid, rest, 0)
        for t in range(nk - 1, -1, -1):
            cand = np.where(valid, p[t][None, :] + D[t + 1][rest], -np.inf)
            a = np.argmax(cand, axis=1)
            D[t] = cand[np.arange(m + 1), a]
            arg[t] = a + 1
        return float(lam.sum()) + pre + float(D[0, m]), p, D, arg, order, pre, pre_sets

    def _relaxed_cover(self, j, m, arg, order, pre_sets):
        """How often each CU is picked by the Lagrangian maximiser (its loads and top-n sets)."""
        count = np.zeros(self.N)
        chosen = np.zeros(self.N, dtype=np.int64)
        loads = []
        for k, top in enumerate(pre_sets):
            count[top] += 1
            chosen[top] = k
        left = m
        for t in range(self.K - j):
            n = int(arg[t, left])
            top = order[t, n - 1, :n]
            count[top] += 1
            chosen[top] = j + t
            loads.append(n)
            left -= n
        return count, chosen

    def refine(self, lam: np.ndarray, j: int, m: int, prefix: np.ndarray):
        """The node's bound, with multipliers tuned to it; None when the node is pruned or solved.

        Polyak steps aim the bound at the incumbent: the multipliers are tuned to this subtree,
        which is what lets whole subtrees go (the bound is valid for any lam). On these
        polyhedral duals the steps converge linearly when the subtree's dual optimum is <= the
        incumbent (ties included) and stall when it is above: refinement stops once a window of
        steps no longer shrinks the gap.
        """
        state = self.bound(lam, j, m, prefix)
        b = state[0]
        if j == 0:
            self.root_bound = min(self.root_bound, b)
        if b <= self.best + self.tol():
            return None
        if not self.refine_iterations or self.K - j < self.refine_min_bs:
            return lam, state
        self.refined += 1
        best_b, best_lam, best_state, cur = b, lam, state, lam
        window_gap = b - self.best
        for it in range(1, self.refine_iterations + 1):
            _, _, _, arg, order, _, pre_sets = state
            count, chosen = self._relaxed_cover(j, m, arg, order, pre_sets)
            g = 1.0 - count
            gg = float(g @ g)
            if gg == 0.0:
                # The relaxed maximiser covers every CU once: it is an association of this
                # subtree whose value equals the bound, so the subtree is solved.
                self._offer(_value(self.r, chosen), chosen)
                return None
            cur = cur - (state[0] - self.best) / gg * g
            state = self.bound(cur, j, m, prefix)
            if state[0] < best_b:
                best_b, best_lam, best_state = state[0], cur, state
                if j == 0:
                    self.root_bound = min(self.root_bound, best_b)
            if best_b <= self.best + self.tol():
                return None
            if it % _STALL_WINDOW == 0:
                if best_b - self.best > _STALL_RATIO * window_gap:
                    break
                window_gap = best_b - self.best
        return best_lam, best_state

    def node(self, lam: np.ndarray, j: int, m: int, prefix: np.ndarray) -> None:
        """Search the subtree: BSs < j have loads ``prefix``, BSs j..K-1 share m CUs."""
        if self.nodes >= self.max_nodes:
            self.exhausted = True
            return
        self.nodes += 1
        K = self.K
        if j == K - 1:
            self.leaves += 1
            value, assoc = _assignment_for_loads(self.r, np.append(prefix, m))
            self._offer(value, assoc)
            return
        hi = m - (K - 1 - j)
        visited = np.zeros(hi + 1, dtype=bool)
        while True:
            target = self.best
            tuned = self.refine(lam, j, m, prefix)
            if tuned is None:
                return
            lam, (_, p, D, _, _, pre, _) = tuned
            child = float(lam.sum()) + pre + p[0, :hi] + D[1, m - np.arange(1, hi + 1)]
            improved = False
            for n in np.argsort(-child, kind="stable") + 1:  # most promising load first
                if child[n - 1] <= self.best + self.tol():
                    break
                if visited[n]:
                    continue
                visited[n] = True
                self.node(lam, j + 1, m - int(n), np.append(prefix, int(n)).astype(np.int64))
                if self.exhausted:
                    return
                if self.best > target + self.tol():
                    # A better incumbent is a lower target: re-tune this node's multipliers,
                    # which may now prune all its remaining children at once.
                    improved = True
                    break
            if not improved:
                return


def _polish_loads(r: np.ndarray, association: np.ndarray, max_steps: int = 100) -> np.ndarray:
    """Local search on load vectors: re-solve the current loads exactly, then move one unit of
    load between two BSs while the best such move helps (each move re-solved exactly)."""
    K, N = r.shape
    loads = np.bincount(association, minlength=K)
    value, assoc = _assignment_for_loads(r, loads)
    for _ in range(max_steps):
        best = (value, None, None)
        for a in range(K):
            if loads[a] < 2:
                continue
            for b in range(K):
                if b == a:
                    continue
                trial = loads.copy()
                trial[a] -= 1
                trial[b] += 1
                v, u = _assignment_for_loads(r, trial)
                if v > best[0] + 1e-12 * max(1.0, abs(best[0])):
                    best = (v, trial, u)
        if best[1] is None:
            break
        value, loads, assoc = best
    return assoc


@register_association
@dataclass
class ExactAssociation(AssociationMethod):
    r"""Provably optimal (P2): Lagrangian branch-and-bound over the BS loads.

    Write :math:`r_{k,i}=B\log_2(1+\gamma_{k,i})\ge 0`, :math:`S_k` the CUs of BS k and
    :math:`\mathbf n\in\mathcal C=\{\mathbf n\in\mathbb Z^K: n_k\ge 1,\ \sum_k n_k=N\}` the load
    vector ((27d), (27e)); :math:`F(\mathbf U)=\sum_k\frac{1}{n_k}\sum_{i\in S_k}r_{k,i}`.

    *Fixed loads are easy.* For fixed :math:`\mathbf n`, (P2) is a transportation problem:
    repeat BS k's row :math:`r_{k,\cdot}/n_k` :math:`n_k` times to an N x N matrix; assignments of
    CUs to these slots are exactly the associations with loads :math:`\mathbf n`, with equal value.
    So :math:`V(\mathbf n)` is solved exactly by ``scipy.optimize.linear_sum_assignment``.

    *A bound separable over BSs.* For any :math:`\lambda\in\mathbb R^N` and any U with loads
    :math:`\mathbf n`, since every CU is in exactly one :math:`S_k`,

    .. math::

        F(\mathbf U)=\sum_i\lambda_i+\sum_k\sum_{i\in S_k}\Big(\frac{r_{k,i}}{n_k}-\lambda_i\Big)
        \le\sum_i\lambda_i+\sum_k p_k(n_k;\lambda),\qquad
        p_k(n;\lambda)=\max_{|S|=n}\sum_{i\in S}\Big(\frac{r_{k,i}}{n}-\lambda_i\Big),

    and :math:`p_k(n;\lambda)` is the sum of the n largest entries of
    :math:`r_{k,\cdot}/n-\lambda` (one sort per (k, n)). This is the Lagrangian relaxation of
    (27e); it holds for every :math:`\lambda`, so how :math:`\lambda` is chosen affects speed only.

    *Search.* Loads are fixed BS by BS. At a node where BSs :math:`<j` have loads
    :math:`n_0..n_{j-1}` and BSs :math:`j..K-1` share the remaining m CUs, every U below it obeys
    :math:`F\le\sum_i\lambda_i+\sum_{k<j}p_k(n_k;\lambda)+D_j(m;\lambda)` with
    :math:`D_j(m)=\max\{\sum_{k\ge j}p_k(n_k): n_k\ge1,\sum_{k\ge j}n_k=m\}` (a DP over BSs, which
    keeps the coupling :math:`\sum_k n_k=N` that a per-BS max would drop). A node whose bound is
    <= incumbent + ``tolerance`` * ``max(1, |incumbent|)`` is pruned; children are visited in
    decreasing bound; a leaf (all loads fixed) is solved exactly as above. Every load vector is
    therefore either solved or shown unable to beat the incumbent by more than the tolerance:
    the result is optimal up to that (relative 1e-10 by default, i.e. floating-point) tolerance.

    *Choosing* :math:`\lambda`. The root starts from the duals of an LP relaxation
    (:func:`_lp_multipliers`); at each node with >= 3 BSs left, up to ``refine_iterations``
    Polyak subgradient steps :math:`\lambda\leftarrow\lambda-\frac{\phi(\lambda)-F^\star}{\|g\|^2}g`
    (:math:`g_i=1-\#\{k:i\in S_k^{\text{relaxed}}\}`, :math:`F^\star` the incumbent) aim the
    bound :math:`\phi` of that subtree at the incumbent, and the children inherit the tuned
    multipliers. If :math:`g=0` the relaxed maximiser is itself an association of the subtree
    whose value equals the bound, so the subtree is solved. The incumbent starts from
    ``gale-shapley`` (with switches), re-solved for its own loads, or ``initial`` if better.

    ``max_nodes`` caps the search; if it is hit the best association found is returned with
    ``proven_optimal=False`` (never silently). ``info``: ``proven_optimal``, ``nodes``,
    ``load_vectors_solved`` (leaves), ``bound_evaluations``, ``root_bound`` (after the root's
    refinement), ``root_gap`` (root_bound - value, internal units), ``warm_start_value``.
    """

    name: ClassVar[str] = "exact"
    description: ClassVar[str] = "provably optimal (P2): Lagrangian branch-and-bound over BS loads"

    refine_iterations: int = 2000
    tolerance: float = 1e-10
    max_nodes: int = 1_000_000
    lp_start: bool = True

    def __post_init__(self) -> None:
        if self.refine_iterations < 0:
            raise ValueError(f"refine_iterations must be >= 0, got {self.refine_iterations}")
        if not (self.tolerance >= 0 and math.isfinite(self.tolerance)):
            raise ValueError(f"tolerance must be finite and >= 0, got {self.tolerance}")
        if self.max_nodes < 1:
            raise ValueError(f"max_nodes must be >= 1, got {self.max_nodes}")

    def _associate(self, rates, initial):
        K, N = rates.shape
        gs, _ = _fill_empty_bs(rates, _gale_shapley(rates))
        warm, _ = _coalition_switches(rates, gs, 100, 1e-12)
        candidates = [warm, _polish_loads(rates, warm)]
        if initial is not None:
            candidates += [initial, _polish_loads(rates, initial)]
        incumbent = max(candidates, key=lambda a: _value(rates, a))
        warm_value = _value(rates, incumbent)
        if K == 1 or K == N:  # a single load vector: (N) or (1, ..., 1)
            value, assoc = _assignment_for_loads(rates, np.full(K, N // K))
            return assoc, {"proven_optimal": True, "nodes": 1, "load_vectors_solved": 1, "bound_evaluations": 0,
                           "root_bound": value, "root_gap": 0.0, "warm_start_value": warm_value}
        lam = _lp_multipliers(rates, N - K + 1) if self.lp_start else np.zeros(N)
        search = _LoadSearch(rates, incumbent, refine_iterations=self.refine_iterations,
                             tolerance=self.tolerance, max_nodes=self.max_nodes)
        search.node(lam, 0, N, np.zeros(0, dtype=np.int64))
        root = min(search.root_bound, math.inf)
        info = {"proven_optimal": not search.exhausted, "nodes": search.nodes,
                "load_vectors_solved": search.leaves, "bound_evaluations": search.evaluations,
                "refined_nodes": search.refined,
                "root_bound": root if math.isfinite(root) else None,
                "root_gap": (root - search.best) if math.isfinite(root) else None,
                "warm_start_value": warm_value}
        if search.exhausted:
            info["stopped"] = f"max_nodes={self.max_nodes} reached; the association is the best found, not proven optimal"
        return search.best_assoc, info


# 000's LLM optimiser (method "llm") lives in its own module; importing it registers it.
from isac.solvers import li_llm as _li_llm  # noqa: E402,F401
