r"""001 (Xu et al.) solvers for ``bs-selection``: the certified optimum and the paper's three baselines.

All of them are built on the per-choice SDP of :mod:`isac.solvers.xu_sdp`. For a fixed receiving
BS and association it is convex, and its SDR is tight, so its optimum is the best power for that
choice.

* ``exhaustive``: the global optimum of (8), by branch and bound over (receiver, association).
  Each node is the SDP with the unassigned users *relaxed*: such a user may take signal from
  every transmitter, which is a valid lower bound for all its completions. A leaf is the
  fixed-choice SDP. Nodes are expanded best-first (lowest bound first). The branching user is
  the relaxed one whose signal is most split over transmitters; children are tried in order of
  that user's signal share. Each root's relaxed solution is rounded (every user to the
  transmitter carrying most of its signal) to an incumbent. The search stops when the lowest
  open bound is within ``gap_tolerance`` (relative) of the incumbent: CONVERGED, with the gap in
  ``info``. ``max_sdps`` caps it: MAX_ITERATIONS, with the remaining gap. When every branch of
  every receiver is infeasible, the instance is INFEASIBLE with that proof. The message names
  the constraint: the SINRs cannot be met within the per-BS power even without C2, or C2 cannot
  be met even without C3, or only the two together fail. An SDP that the conic solver cannot
  settle is never pruned as infeasible. It counts in ``info.unsettled_sdps``, and the status is
  then NUMERICAL_ERROR unless a feasible point was proved optimal anyway.
* ``scheme1`` (001's Scheme 1): the receiver is the BS nearest the target; association and beams
  are then optimal for it (the branch and bound restricted to that receiver), so the gap to
  ``exhaustive`` is the price of the receiver rule alone.
* ``scheme2`` (001's Scheme 2): a random receiver and a random association, then the optimal
  beams. The draw uses ``seed`` combined with a hash of the instance, so every instance of a
  sweep gets its own draw, the same one every run.
* ``scheme3`` (001's Scheme 3, bistatic). The text says both "one transmitting BS and one
  receiving BS (pre-selected as BS1 and BS2)" and "the BS selection, BS-CU association, and
  beamforming are jointly optimized". Our reading: exactly one BS transmits (it serves every user
  and senses) and one receives; the other BSs stay silent. ``pair = "best"`` (default) optimises
  the ordered pair over all S(S-1) choices, as "jointly optimized" says. ``pair = "fixed"`` is
  the pre-selected pair, BS 1 transmitting and BS 2 receiving (indices 0 and 1).

Points returned are the rank-one beams of the SDP (see :mod:`isac.solvers.xu_sdp`), re-checked by
the metrics package (:func:`isac.solvers.base.finalize`).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch

import isac.metrics.problems.bs_selection  # noqa: F401  (registers the evaluator finalize() needs)
from isac.metrics.problems.bs_selection import bs_power_w
from isac.scenario.instances.bs_selection import PROBLEM, BsSelectionInstance
from isac.scenario.random import make_rng
from isac.solvers.base import Solver, Status
from isac.solvers.registry import register_solver, set_default_solver
from isac.solvers.xu_sdp import ChoiceResult, XuSdp


def _solution(inst: BsSelectionInstance, res: ChoiceResult) -> dict[str, torch.Tensor]:
    return {"receiver": torch.tensor(res.receiver, dtype=torch.long), "W": res.W, "Rs": res.Rs}


# --- branch and bound -------------------------------------------------------------------


@dataclass
class SearchOutcome:
    best: ChoiceResult | None
    lower_bound: float
    sdps: int
    unsettled: int
    exhausted: bool
    infeasible_roots: list[int]
    nodes: int


def branch_and_bound(sdp: XuSdp, receivers: list[int], *, gap_tolerance: float, max_sdps: int,
                     deadline: float | None = None) -> SearchOutcome:
    """Best-first branch and bound over the associations of each receiver in ``receivers`` (module docstring)."""
    inst = sdp.inst
    K, S = inst.num_users, inst.num_bs
    best: ChoiceResult | None = None
    sdps = unsettled = nodes = 0
    heap: list[tuple[float, int, int, tuple, np.ndarray | None]] = []
    tie = itertools.count()
    infeasible_roots: list[int] = []
    leaves: dict[tuple[int, tuple], ChoiceResult] = {}

    def offer(res: ChoiceResult) -> None:
        nonlocal best
        if res.status == "optimal" and res.W is not None and (best is None or res.power_w < best.power_w):
            best = res

    def leaf(r: int, assoc: tuple) -> ChoiceResult:
        nonlocal sdps, unsettled
        key = (r, assoc)
        if key not in leaves:
            leaves[key] = sdp.solve(r, assoc)
            sdps += 1
            unsettled += leaves[key].status == "error"
            offer(leaves[key])
        return leaves[key]

    def budget_left() -> bool:
        return sdps < max_sdps and (deadline is None or time.monotonic() < deadline)

    unrooted = 0
    for r in receivers:
        if not budget_left():
            unrooted += 1  # never looked at: its bound is 0, the search cannot be certified
            continue
        root = sdp.solve(r, (None,) * K)
        sdps += 1
        nodes += 1
        if root.status == "infeasible":
            infeasible_roots.append(r)
            continue
        if root.status == "error":
            unsettled += 1
            heapq.heappush(heap, (0.0, next(tie), r, (None,) * K, None))
            continue
        heapq.heappush(heap, (root.power_w, next(tie), r, (None,) * K, root.signal_share))
        if budget_left():  # incumbent: round every user to its main transmitter
            leaf(r, tuple(int(root.signal_share[:, k].argmax()) for k in range(K)))
    exhausted = unrooted > 0
    while heap and not exhausted:
        lb, _, r, assoc, share = heap[0]
        if best is not None and lb >= best.power_w * (1 - gap_tolerance):
            break
        if not budget_left():
            exhausted = True
            break
        heapq.heappop(heap)
        nodes += 1
        free = [k for k in range(K) if assoc[k] is None]
        tx = [t for t in range(S) if t != r]
        if share is None:
            k = free[0]
            order = tx
        else:
            k = max(free, key=lambda u: (1.0 - share[:, u].max(), -u))
            order = sorted(tx, key=lambda t: -share[t, k])
        for t in order:
            child = tuple(t if u == k else assoc[u] for u in range(K))
            if not budget_left():
                exhausted = True
                heapq.heappush(heap, (lb, next(tie), r, assoc, share))  # reopen: not fully expanded
                break
            if all(a is not None for a in child):
                leaf(r, child)
                continue
            res = sdp.solve(r, child)
            sdps += 1
            if res.status == "infeasible":
                continue
            if res.status == "error":
                unsettled += 1
                heapq.heappush(heap, (lb, next(tie), r, child, None))  # parent's bound still holds
                continue
            child_lb = max(lb, res.power_w)
            if best is None or child_lb < best.power_w * (1 - gap_tolerance):
                heapq.heappush(heap, (child_lb, next(tie), r, child, res.signal_share))
        if exhausted:
            break
    # Unsettled leaves have no bound: they keep the search from a certificate.
    open_lb = min((h[0] for h in heap), default=math.inf)
    err_leaves = [v for v in leaves.values() if v.status == "error"]
    lower = min(open_lb, best.power_w if best is not None else math.inf,
                *(0.0 for _ in err_leaves), *((0.0,) if unrooted else ()))
    return SearchOutcome(best, lower, sdps, unsettled, exhausted, infeasible_roots, nodes)


def _why_infeasible(sdp: XuSdp, receivers: list[int]) -> str:
    """Which constraint makes every receiver's relaxed SDP infeasible (module docstring)."""
    K = sdp.inst.num_users
    which = "any receiver" if len(receivers) == sdp.inst.num_bs else f"receiver {', '.join(map(str, receivers))}"
    no_crlb = [sdp.solve(r, (None,) * K, crlb=False).status for r in receivers]
    if all(s == "infeasible" for s in no_crlb):
        return f"the SINR targets cannot be met within the per-BS power for {which}, even without the CRLB (C3 with C1)"
    no_sinr = [sdp.solve(r, (None,) * K, sinr=False).status for r in receivers]
    if all(s == "infeasible" for s in no_sinr):
        return (f"CRLB <= {sdp.inst.crb_max_m2:g} m^2 cannot be met within the per-BS power for {which}, "
                "even without the SINR targets (C2 with C1)")
    return f"the SINR targets and the CRLB can each be met, but not together within the per-BS power for {which} (C1-C3)"


class _XuSolver(Solver):
    problems: ClassVar[tuple[str, ...]] = (PROBLEM,)

    def _search(self, inst: BsSelectionInstance, receivers: list[int], gap_tolerance: float, max_sdps: int,
                conic_solver: str, margin: float):
        sdp = XuSdp(inst, margin=margin, solver=conic_solver)
        out = branch_and_bound(sdp, receivers, gap_tolerance=gap_tolerance, max_sdps=max_sdps)
        info: dict[str, Any] = {"sdps": out.sdps, "nodes": out.nodes, "unsettled_sdps": out.unsettled,
                                "lower_bound_w": out.lower_bound if math.isfinite(out.lower_bound) else None}
        if out.best is None:
            if len(out.infeasible_roots) == len(receivers) and out.unsettled == 0:
                why = _why_infeasible(sdp, receivers)
                info["sdps"] = sdp.solves
                self.record(info=info)
                scope = ("every receiver's relaxed SDP is infeasible" if len(receivers) == inst.num_bs else
                         f"the relaxed SDP of receiver {', '.join(map(str, receivers))} is infeasible")
                return Status.INFEASIBLE, f"proved infeasible: {scope}; {why}", {}, [], 0
            self.record(info=info)
            if out.exhausted:
                return Status.MAX_ITERATIONS, f"no feasible point within max_sdps={max_sdps}", {}, [], out.sdps
            return (Status.NUMERICAL_ERROR, f"no feasible point found; {out.unsettled} SDPs unsettled by the conic solver",
                    {}, [], out.sdps)
        best = out.best
        power = float(bs_power_w(best.W, best.Rs).sum())  # the returned point's power (>= its SDP optimum)
        gap = (power - out.lower_bound) / power if math.isfinite(out.lower_bound) else math.inf
        info.update({"receiver": best.receiver, "association": list(best.association), "sdp_power_w": best.power_w,
                     "gap": max(gap, 0.0), "rank_gap": best.rank_gap,
                     "polish_power_rise": best.info.get("polish_power_rise", 0.0),
                     "crlb_repair_power_w": best.info.get("crlb_repair_power_w", 0.0)})
        self.record(info=info)
        trace = [{"objective": best.power_w}]
        if out.exhausted:
            return (Status.MAX_ITERATIONS, f"max_sdps={max_sdps} reached: best {best.power_w:.6g} W, gap {gap:.3g}",
                    _solution(inst, best), trace, out.sdps)
        if out.unsettled:
            return (Status.NUMERICAL_ERROR, f"best {best.power_w:.6g} W, but {out.unsettled} SDPs were unsettled by the "
                    "conic solver: optimality not certified", _solution(inst, best), trace, out.sdps)
        what = "global optimum" if len(receivers) == inst.num_bs else f"optimal for receiver(s) {receivers}"
        return (Status.CONVERGED, f"{what}, gap {max(gap, 0.0):.2g} to the lower bound ({out.sdps} SDPs)",
                _solution(inst, best), trace, out.sdps)


@register_solver
@dataclass
class Exhaustive(_XuSolver):
    """Certified global optimum of 001's (8): branch and bound over (receiver, association); see the module docstring."""

    name: ClassVar[str] = "exhaustive"
    description: ClassVar[str] = "001: certified global optimum, branch and bound over receiver and association (SDP per node)"

    max_sdps: int = 5000
    """Cap on SDPs solved; reaching it gives MAX_ITERATIONS with the best point and the remaining gap."""
    gap_tolerance: float = 1e-4
    """Stop when the lowest open bound is within this (relative) of the best point."""
    conic_solver: Literal["CLARABEL", "SCS"] = "CLARABEL"
    margin: float = 1e-5
    """Relative margin on the SINR and CRLB rows of every SDP."""

    def __post_init__(self) -> None:
        if self.max_sdps < 1 or not 0 <= self.gap_tolerance < 1 or not 0 <= self.margin < 0.01:
            raise ValueError("max_sdps >= 1, 0 <= gap_tolerance < 1 and 0 <= margin < 0.01 are required")

    def receivers(self, inst: BsSelectionInstance) -> list[int]:
        """The receiving BSs searched (all of them)."""
        return list(range(inst.num_bs))

    def _solve(self, inst: BsSelectionInstance):
        return self._search(inst, self.receivers(inst), self.gap_tolerance, self.max_sdps,
                            self.conic_solver, self.margin)


def nearest_bs_to_target(inst: BsSelectionInstance) -> int:
    return int(torch.linalg.vector_norm(inst.bs_positions_m - inst.target_position_m, dim=-1).argmin())


@register_solver
@dataclass
class Scheme1(Exhaustive):
    """001's Scheme 1: the BS nearest the target receives; association and beams optimal for it (same options)."""

    name: ClassVar[str] = "scheme1"
    description: ClassVar[str] = "001 Scheme 1: receiver = BS nearest the target, then optimal association and beams"

    def receivers(self, inst: BsSelectionInstance) -> list[int]:
        return [nearest_bs_to_target(inst)]


def instance_seed(inst: BsSelectionInstance, seed: int) -> int:
    """A 63-bit seed from ``seed`` and the instance's channels and geometry (same instance, same draw)."""
    h = hashlib.sha256()
    for t in (inst.H, inst.alpha, inst.bs_positions_m, inst.target_position_m):
        h.update(t.detach().cpu().numpy().tobytes())
    h.update(str(int(seed)).encode())
    return int.from_bytes(h.digest()[:8], "little") >> 1


@register_solver
@dataclass
class Scheme2(_XuSolver):
    """001's Scheme 2: a random receiver and a random association (from ``seed`` and the instance), then optimal beams."""

    name: ClassVar[str] = "scheme2"
    description: ClassVar[str] = "001 Scheme 2: random receiver and association (seeded per instance), then optimal beams"

    seed: int = 0
    conic_solver: Literal["CLARABEL", "SCS"] = "CLARABEL"
    margin: float = 1e-5

    def _solve(self, inst: BsSelectionInstance):
        rng = make_rng(instance_seed(inst, self.seed))
        S, K = inst.num_bs, inst.num_users
        r = int(rng.integers(S))
        tx = [t for t in range(S) if t != r]
        assoc = tuple(int(tx[i]) for i in rng.integers(len(tx), size=K))
        res = XuSdp(inst, margin=self.margin, solver=self.conic_solver).solve(r, assoc)
        self.record(info={"receiver": r, "association": list(assoc), "sdps": 1, "rank_gap": res.rank_gap})
        return _single(inst, res)


def _single(inst: BsSelectionInstance, res: ChoiceResult):
    if res.status == "infeasible":
        return Status.INFEASIBLE, f"the chosen receiver and association admit no feasible beams ({res.message})", {}, [], 1
    if res.status != "optimal":
        return Status.NUMERICAL_ERROR, res.message, {}, [], 1
    return (Status.CONVERGED, f"optimal beams for receiver {res.receiver}, association {list(res.association)}",
            _solution(inst, res), [{"objective": res.power_w}], 1)


@register_solver
@dataclass
class Scheme3(_XuSolver):
    """001's Scheme 3 (bistatic): one BS transmits to every user and senses, one receives; see the module docstring."""

    name: ClassVar[str] = "scheme3"
    description: ClassVar[str] = "001 Scheme 3: bistatic, one transmitting and one receiving BS (pair=best|fixed)"

    pair: Literal["best", "fixed"] = "best"
    conic_solver: Literal["CLARABEL", "SCS"] = "CLARABEL"
    margin: float = 1e-5

    def _solve(self, inst: BsSelectionInstance):
        S, K = inst.num_bs, inst.num_users
        pairs = [(0, 1)] if self.pair == "fixed" else [(t, r) for t in range(S) for r in range(S) if t != r]
        sdp = XuSdp(inst, margin=self.margin, solver=self.conic_solver)
        best, errors, results = None, 0, []
        for t, r in pairs:
            res = sdp.solve(r, (t,) * K, transmitters=[t])
            results.append(res)
            errors += res.status == "error"
            if res.status == "optimal" and (best is None or res.power_w < best.power_w):
                best = res
        self.record(info={"sdps": len(pairs), "unsettled_sdps": errors,
                          "pair": None if best is None else [best.association[0], best.receiver]})
        if best is None:
            if errors:
                return Status.NUMERICAL_ERROR, f"no feasible pair found; {errors} SDPs unsettled", {}, [], len(pairs)
            return Status.INFEASIBLE, f"no bistatic pair admits feasible beams ({len(pairs)} SDPs infeasible)", {}, [], len(pairs)
        status, msg, sol, trace, _ = _single(inst, best)
        if errors and status == Status.CONVERGED:
            return Status.NUMERICAL_ERROR, f"{msg}; {errors} pairs unsettled by the conic solver", sol, trace, len(pairs)
        return status, f"BS {best.association[0]} -> BS {best.receiver}: {msg}", sol, trace, len(pairs)


set_default_solver(PROBLEM, "exhaustive")
