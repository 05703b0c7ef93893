r"""000's alternating optimisation (Algorithm 3) for ``multibs-association``: association, then per-BS beams, repeated.

Each outer iteration j:

1. **Association (P2)** on a K x N SINR matrix :math:`\mathbf S^{(j)}` built from the current beams
   (:func:`association_sinr_matrix`), by the method named in ``association``
   (:mod:`isac.solvers.li_association`: ``exact``, ``gale-shapley``, ``fixed``, ``brute-force``, ``llm``);
2. **Beamforming (P3)**: for each BS, the per-BS beamformer named in ``beamformer``
   (:mod:`isac.solvers.li_beamforming`: ``fast`` (ours, default), ``admm`` (000's Algorithm 2),
   ``zf-ns``), started from the current beams;
3. the true objective (27) -- the network sum rate of eq. (26), B = 1, bit/s/Hz -- of the new
   point, from the metrics package, goes into the trace.

**The SINR matrix handed to the association step.** After a beamforming step, BS k's columns of
the CUs it does not serve are zero, so their SINR at k is 0 and no association method could ever
move them (000 Sec. V-A leaves this open). We use

* :math:`S_{k,i}=\gamma_{k,i}` (eq. (8), the actual SINR) where BS k serves CU i, and
* a *what-if* SINR elsewhere: CU i served by BS k with an MRT beam at the power CU i's beam has now,
  :math:`S_{k,i}=p_i\|\mathbf h_{k,i}\|^2/(\sum_n|\mathbf h_{k,i}^H\mathbf w_{k,n}|^2+\sigma_i^2)`, against
  BS k's current beams.

So (P2)'s objective of :math:`\mathbf S^{(j)}` at the current U **equals** the true objective (27) at
the current point. An association the method finds better on :math:`\mathbf S^{(j)}` is only a
proposal (the what-if entries ignore what the newcomer does to BS k's other CUs): it is kept
only if, after the beamforming step, the true objective is not lower than the current one;
otherwise the current point stays and the loop stops. A method that returns something worse on
:math:`\mathbf S^{(j)}` than the current U is overruled (the current U is kept, counted in
``info.association_kept``). Hence the objective trace never decreases.

**Start.** :math:`\mathbf W^{(0)}` of 000 (:func:`isac.solvers.li_beamforming.initial_beams` with every
CU, i.e. rank one) makes every SINR about :math:`1/(N-1)`, which says nothing about who should go
where; by default (``initial_sinr = "mrt"``) the first association therefore sees the
single-user SNRs :math:`P_t\|\mathbf h_{k,i}\|^2/\sigma_i^2` (CU i alone on BS k with an MRT beam at
full power). ``initial_sinr = "paper"`` uses the SINRs of :math:`\mathbf W^{(0)}` instead. The first
beamforming step starts each BS from its own initialisation (``W0`` of the instance if given).

**Stopping rule.** Stop when the objective rises by less than ``tolerance`` (relative) in an outer
iteration, when the association does not change (the beams were already optimised for it), or
after ``max_iterations`` outer iterations (status MAX_ITERATIONS). The sensing constraints are
re-checked by the metrics package after every beamforming step (the per-BS contract refuses to call
an infeasible point CONVERGED); an infeasible BS ends the solve INFEASIBLE naming the BS and the
constraint (e.g. Gamma_t or epsilon unreachable with P_t).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch

import isac.metrics.problems.multibs_association  # noqa: F401  (registers the evaluator finalize() needs)
from isac.metrics.network import association_objective_bps_hz, sinr_matrix
from isac.scenario.instances.multibs_association import PROBLEM, MultibsAssociationInstance
from isac.solvers.base import OptionError, Solver, Status
from isac.solvers.li_beamforming import BsProblem, get_beamformer, initial_beams
from isac.solvers.registry import register_solver, set_default_solver
from isac.tensors import COMPLEX


def association_sinr_matrix(inst: MultibsAssociationInstance, W: torch.Tensor, assoc: np.ndarray) -> np.ndarray:
    """The K x N matrix handed to the association step (module docstring): actual SINRs where served, what-if elsewhere.

    Args:
        W: ``[K, M, N+Ns]`` current beams. assoc: ``[N]`` current BS index per CU.
    """
    g = sinr_matrix(inst.H, W, inst.noise_comm_w).numpy()  # [K, N] actual (eq. (8))
    H = inst.H.numpy()
    Wn = W.numpy()
    n = inst.num_users
    p = np.array([float((np.abs(Wn[assoc[i], :, i]) ** 2).sum()) for i in range(n)])  # current power per CU
    hw = np.abs(np.einsum("kmi,kms->kis", H.conj(), Wn)) ** 2  # [K, N, S]
    received = hw.sum(axis=-1) + inst.noise_comm_w
    what_if = p[None, :] * (np.abs(H) ** 2).sum(axis=1) / received
    served = np.zeros_like(g, dtype=bool)
    served[assoc, np.arange(n)] = True
    return np.where(served, g, what_if)


def _mrt_snr(inst: MultibsAssociationInstance) -> np.ndarray:
    return inst.p_max_w.numpy()[:, None] * (np.abs(inst.H.numpy()) ** 2).sum(axis=1) / inst.noise_comm_w


@register_solver
@dataclass
class LiAlternatingOptimisation(Solver):
    r"""000's Algorithm 3: alternate (P2) (association) and (P3.k) (per-BS beams) until the sum rate stops rising.

    See the module docstring for the SINR matrix of the association step, the start and the
    stopping rule. ``association = "fixed"`` with the default start is 000's "beamforming only"
    baseline, ``gale-shapley`` its "convex method only", ``brute-force`` (or ``exact``, the same
    optimum of (P2) at any size) its "convex plus BF" upper bound, ``llm`` its proposal.
    """

    name: ClassVar[str] = "ao"
    problems: ClassVar[tuple[str, ...]] = (PROBLEM,)
    description: ClassVar[str] = ("000 Algorithm 3: association (-o association=exact|gale-shapley|fixed|brute-force|llm) "
                                  "+ per-BS beams (-o beamformer=fast|admm|zf-ns)")

    association: str = "exact"
    """Association method of (P2) (see :mod:`isac.solvers.li_association`)."""
    beamformer: str = "fast"
    """Per-BS beamformer of (P3.k) (see :mod:`isac.solvers.li_beamforming`)."""
    max_iterations: int = 20
    """Outer iterations at most."""
    tolerance: float = 1e-4
    """Stop when the sum rate rises by less than this, relative, in one outer iteration."""
    initial_sinr: Literal["mrt", "paper"] = "mrt"
    """SINR matrix of the first association step (module docstring)."""
    beamformer_max_iterations: int = 0
    """Iteration cap handed to the beamformer (0: its default)."""
    llm_base_url: str = ""
    """``association = "llm"``: the endpoint ("": $ISAC_LLM_BASE_URL)."""
    llm_model: str = ""
    """``association = "llm"``: the model ("": $ISAC_LLM_MODEL)."""
    llm_options: str = ""
    """``association = "llm"``: further options of the llm method, ``key=value`` pairs separated by ``;``
    (e.g. ``"json_schema=true;max_rounds=3"``; see :mod:`isac.solvers.li_llm`)."""

    def __post_init__(self) -> None:
        if self.max_iterations < 1 or not self.tolerance >= 0 or self.beamformer_max_iterations < 0:
            raise ValueError("max_iterations >= 1, tolerance >= 0 and beamformer_max_iterations >= 0 are required")
        from isac.solvers.li_association import association_methods
        from isac.solvers.li_beamforming import beamformers

        if self.association not in association_methods():
            raise OptionError(f"unknown association method {self.association!r} (available: "
                              f"{', '.join(sorted(association_methods()))})")
        if self.beamformer not in beamformers():
            raise OptionError(f"unknown beamformer {self.beamformer!r} (available: {', '.join(sorted(beamformers()))})")
        if self.association != "llm" and (self.llm_base_url or self.llm_model or self.llm_options):
            raise OptionError("llm_base_url, llm_model and llm_options apply to association=llm only")
        self._method()  # option errors surface here, not mid-solve

    def _method(self):
        """The association method with its options (the llm method gets the llm_* options)."""
        from isac.solvers.li_association import get_association_method

        if self.association != "llm":
            return get_association_method(self.association)
        opts: dict[str, str] = {}
        for item in filter(None, (p.strip() for p in self.llm_options.split(";"))):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise OptionError(f"llm_options: {item!r} is not key=value")
            opts[key.strip()] = value.strip()
        if self.llm_base_url:
            opts["base_url"] = self.llm_base_url
        if self.llm_model:
            opts["model"] = self.llm_model
        return get_association_method("llm", opts)

    def _beamform(self, inst: MultibsAssociationInstance, assoc: np.ndarray, W: torch.Tensor | None):
        """Beams of every BS for ``assoc``; ``(W [K, M, N+Ns], None)`` or ``(None, (status, message))``."""
        opts = {"max_iterations": self.beamformer_max_iterations} if self.beamformer_max_iterations else {}
        bf = get_beamformer(self.beamformer, opts)
        out = torch.zeros(inst.num_bs, inst.num_antennas, inst.num_streams, dtype=COMPLEX)
        iters = 0
        for k in range(inst.num_bs):
            problem = BsProblem.from_instance(inst, k, assoc)
            start = W[k] if W is not None else (inst.W0[k] if inst.W0 is not None else None)
            res = bf.solve(problem, start)
            iters += res.iterations
            if res.W is None or res.status in (Status.INFEASIBLE, Status.NUMERICAL_ERROR):
                return None, (res.status, res.message), iters
            out[k] = res.W
        return out, None, iters

    def _objective(self, inst: MultibsAssociationInstance, W: torch.Tensor, assoc: np.ndarray) -> float:
        g = sinr_matrix(inst.H, W, inst.noise_comm_w)
        return float(association_objective_bps_hz(g, torch.as_tensor(assoc)))

    def _solve(self, inst: MultibsAssociationInstance):
        method = self._method()
        if self.association == "llm":
            method.endpoint()  # no endpoint: a one-line OptionError before any work
        llm = {"replies": 0, "valid_replies": 0, "repaired_replies": 0, "tokens": 0, "requests": 0, "fallbacks": 0,
               "steps": 0}

        def associate(S, initial=None):
            from isac.solvers.li_llm import NoAssociationError

            try:
                res = method.associate(S, initial=initial)
            except NoAssociationError as e:
                res = e  # counted below; the caller sees a result without an association
            if self.association == "llm":
                llm["steps"] += 1
                llm["fallbacks"] += res.info.get("provenance") == "fallback"
                for k in ("replies", "valid_replies", "repaired_replies", "tokens", "requests"):
                    llm[k] += int(res.info.get(k, 0))
            return None if isinstance(res, Exception) else res

        def llm_info():
            return {**{f"llm_{k}": v for k, v in llm.items()},
                    "llm_valid_reply_rate": llm["valid_replies"] / llm["replies"] if llm["replies"] else 0.0}

        for k in range(inst.num_bs):
            reason = BsProblem.from_instance(inst, k, np.zeros(inst.num_users, dtype=np.int64)).sensing_unreachable()
            if reason is not None:
                return Status.INFEASIBLE, reason, {}, [], 0
        if inst.num_bs > inst.num_users:
            return (Status.INFEASIBLE, f"(27d) needs every BS to serve a CU: K = {inst.num_bs} > N = {inst.num_users}",
                    {}, [], 0)
        t0 = time.perf_counter()
        if self.initial_sinr == "mrt":
            S = _mrt_snr(inst)
        else:
            W0 = torch.stack([initial_beams(BsProblem.from_instance(inst, k, np.full(inst.num_users, k)))
                              for k in range(inst.num_bs)])
            S = sinr_matrix(inst.H, W0, inst.noise_comm_w).numpy()
        first = associate(S)
        if first is None:
            self.record(info={**llm_info(), "llm_provenance": "none", "llm_sum_rate_bps_hz": None})
            return (Status.NUMERICAL_ERROR, "the LLM gave no usable association in the first step (N/A; "
                    "llm fallback = none)", {}, [], 0)
        assoc = first.association
        source = first.info.get("provenance", self.association)
        t_assoc = time.perf_counter() - t0
        t1 = time.perf_counter()
        W, fail, bf_iters = self._beamform(inst, assoc, None)
        t_beam = time.perf_counter() - t1
        if fail is not None:
            return fail[0], f"first beamforming step: {fail[1]}", {}, [], 0
        obj = self._objective(inst, W, assoc)
        trace = [{"objective": obj, "association_objective": float(first.objective), "changed": 1.0,
                  "beamformer_iterations": float(bf_iters)}]
        kept = 0
        status, message = Status.MAX_ITERATIONS, f"{self.max_iterations} outer iterations"
        for it in range(2, self.max_iterations + 1):
            t0 = time.perf_counter()
            S = association_sinr_matrix(inst, W, assoc)
            current = float(association_objective_bps_hz(torch.as_tensor(S), torch.as_tensor(assoc)))
            prop = associate(S, initial=assoc)
            if prop is None:
                status, message = (Status.CONVERGED, f"the LLM gave no usable association at outer iteration "
                                   f"{it}; the current one is kept")
                break
            new = prop.association
            if prop.objective < current:
                kept += 1
                new = assoc
            t_assoc += time.perf_counter() - t0
            if np.array_equal(new, assoc):
                status, message = Status.CONVERGED, f"association unchanged after {it - 1} outer iterations"
                break
            t1 = time.perf_counter()
            W_new, fail, bf_iters = self._beamform(inst, new, W)
            t_beam += time.perf_counter() - t1
            obj_new = self._objective(inst, W_new, new) if fail is None else -np.inf
            if obj_new < obj:
                reason = fail[1] if fail is not None else f"its beams reach {obj_new:.6g} < {obj:.6g} bit/s/Hz"
                status, message = Status.CONVERGED, f"proposed association rejected at outer iteration {it} ({reason})"
                break
            rise = obj_new - obj
            W, assoc, obj = W_new, new, obj_new
            source = prop.info.get("provenance", self.association)
            trace.append({"objective": obj, "association_objective": float(prop.objective), "changed": 1.0,
                          "beamformer_iterations": float(bf_iters)})
            if rise <= self.tolerance * max(abs(obj), 1e-12):
                status, message = Status.CONVERGED, f"sum rate rose by < {self.tolerance:g} (relative)"
                break
        A = np.zeros((inst.num_bs, inst.num_users))
        A[assoc, np.arange(inst.num_users)] = 1.0
        info = {"association_kept": kept, "outer_iterations": len(trace)}
        if self.association == "llm":
            # The LLM's own result: N/A (NaN) when the association in use came from the fallback.
            info.update(llm_info())
            info["llm_provenance"] = source
            info["llm_sum_rate_bps_hz"] = obj if source in ("llm", "repaired") else None
        self.record(timings={"association_s": t_assoc, "beamforming_s": t_beam}, info=info)
        return status, message, {"W": W, "association": torch.as_tensor(A)}, trace, len(trace)


set_default_solver(PROBLEM, "ao")
