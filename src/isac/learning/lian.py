r"""Learned beamformers of 002 (Lian et al.): the link-heterogeneous graph, LHGNN and its baselines.

Problem (32) (``coop-localization``): N BSs with L-antenna UPAs jointly serve K users and localise
Z targets. Every network here maps the (estimated) CSI :math:`\hat{\mathbf h}_{k,n}` and the
steering vectors :math:`\mathbf a_t(\hat\theta_{n,z},\hat\beta_{n,z})` at the (estimated) targets to
beams ``W [B, N, L, K+Z]`` (per BS: the K user beams, then the Z sensing beams -- the library's order
"users, then sensing"), meeting every per-BS budget (32b) by construction (eq. (50)); the SPEB
constraint (32c) is only encouraged by the loss (:mod:`isac.learning.lian_train`).

**Graph** (Sec. III-A, :func:`lian_graph`). One node per communication link (n, k) (type
:math:`o_c`, index ``n*K + k`` among the comm nodes) and per sensing link (n, z) (type :math:`o_s`,
index ``n*Z + z`` among the sensing nodes; ``N*K + n*Z + z`` globally). Edge types, named by the
centre node: comm centre -- ``bs-cc`` (same BS, other user, K-1 neighbours, eq. (34)), ``ue`` (same
user, other BS, N-1, eq. (35)), ``bs-cs`` (same BS, every target, Z, eq. (36)); sensing centre --
``bs-ss`` (same BS, other target, Z-1, eq. (38)), ``tgt`` (same target, other BS, N-1, eq. (39)),
``bs-sc`` (same BS, every user, K, eq. (40)). Every node has K+N+Z-2 neighbours, so there are
N(K+Z)(K+N+Z-2) directed edges. Each edge type has the same number of neighbours at every centre,
so it is stored as one dense index matrix ``[centres, degree]`` built once per (N, K, Z) and applied
to batched features ``[B, nodes, F]`` by one gather. An edge type with no neighbours (``bs-ss`` for
Z = 1, ``bs-cc`` for K = 1, ``ue``/``tgt`` for N = 1) is left out, also from the mean over edge types
in (45)/(48). Networks for all six types always exist (a model trained with Z = 1 runs on Z = 2;
its ``bs-ss`` networks are then untrained).

**Input features** (43)-(44) and their scaling (002 silent; raw :math:`|h|\approx10^{-5}`):
comm node :math:`[\Re\mathbf g;\Im\mathbf g]`, :math:`\mathbf g=\hat{\mathbf h}_{k,n}\sqrt{P_n}/\sigma_c`
(the per-antenna amplitude SNR at full power; entries ~0.5-20 at 20 dBm in the ``lian`` preset); sensing
node :math:`[\Re;\Im]\,\sqrt L\,\mathbf a_t` (unit-modulus entries; :math:`\mathbf a_t` of eq. (8) has
entries of modulus :math:`1/\sqrt L`). :func:`node_features`.

**LHGNN layer** (45)-(47) for edge type r at centre i (comm or sensing alike)::

    F_r = f1_r(x_i) + 1/|N_r(i)| * sum_j lambda_r(i, j) f2_r(x_j)
    lambda_r(i, j) = exp(f3_r(x_i)^T f4_r(x_j) / l) / sum_j' exp(f3_r(x_i)^T f4_r(x_j') / l),  l = L^{u+1}
    x_i^{u+1} = ReLU( mean_r LayerNorm_r(F_r) )

taken literally: the attention weights sum to one and the sum is still divided by :math:`|N_r(i)|`;
the divisor inside the exponential is the output width :math:`l = L^{u+1}` (not :math:`\sqrt l`).
``lhgnn-noatt`` (Sec. IV-D) replaces the weighted sum by the plain mean :math:`1/|N_r|\sum_j f2_r(x_j)`.

Choices where 002 is silent (also in the weights README):

* **Width list** [2L, 128, 128, 128, 256, 512, 256, 128, 2L] (9 entries, U = 9 GNN layers): read as
  the *output* widths :math:`L^1..L^9` of the nine layers, the input being the 2L-dim features (so the
  first layer maps 2L -> 2L). The other reading (input width + 8 outputs) contradicts U = 9.
* f1..f4 are single linear layers (with bias), one set **per layer and per edge type** (f3/f4 printed
  without the layer index in (47) and f1/f2 without it in (49); we read both as per layer, like f1/f2
  in (46)); f3, f4 output :math:`L^{u+1}` features, the ``l`` of (47).
* Norm: LayerNorm over the feature vector of each node (one per edge type and layer, with affine);
  unlike batch norm it keeps a sample's output independent of the batch. Activation: ReLU after
  the mean over edge types (002 gives none; without one a GNN layer would be affine up to the norm).
* U' = 2 fully connected layers per node type, ``Linear(L^U, H), ReLU, Linear(H, 2L)`` (H = 128 in
  the paper's protocol, 002 gives no width), no activation on the output.
* Output scale: the network output o is read in units of :math:`\sqrt{P_n}`,
  :math:`\hat{\mathbf p}=\sqrt{P_n}\,(o_{\Re}+jo_{\Im})`, so that at initialisation (entries ~0.2) a
  BS's beams hold a few times its budget and (50) scales them to full power (with units
  :math:`\sqrt{P_n/(L(K+Z))}` the untrained model used 5 % of the budget); then eq. (50),
  :math:`\mathbf p=\sqrt{P_n}\,\hat{\mathbf p}/\max(\sqrt{P_n},\sqrt{\hat P_n})` per BS
  (:func:`power_normalise`), i.e. scaled down to the budget only when above it.
* Float32 network, float64 from the raw outputs on (the loss uses the float64 metrics).
* Sizes (widths, U', epochs, ...) of the paper's protocol and of the reduced one the shipped weights
  use: :mod:`isac.learning.lian_train`. :meth:`HetLayer.forward` fuses the linear maps that read the
  same node type into one matrix product (equal to :meth:`HetLayer.forward_reference`, the equations
  edge type by edge type).

**Homo GNN** (Benchmark 2): the same nodes, adjacency (the union of the six edge types) and input
features, but one node type and one edge type: per layer one f1..f4 and one LayerNorm shared by all
nodes (attention over all K+N+Z-2 neighbours), one shared FC head for comm and sensing nodes.

**LHGNN with an RZF output layer** (``lhgnn-rzf``, ours, :class:`LHGNNRZF`): the LHGNN's graph,
layers and heads, with the output (50) replaced by a model-based layer -- a skip term along each
user's own channel, a regularised projection of every beam away from the users it must not reach
(:func:`interference_projection`) and one power factor common to all BSs
(:func:`uniform_power_scale`). Not 002's method; added because at our training budget 002's output
layer learns matched-filter-like beams (see the weights README).

**Naive CNN** (Benchmark 3), :class:`LianCNN`: the same node features laid out as an image with
2L channels on the N x (K+Z) grid of links (row n = BS, columns = users then targets);
``Conv2d(3x3, padding 1) + ReLU`` layers, flatten, fully connected ``ReLU`` hidden layers and a
linear output of all N(K+Z) beams (2L reals each), then the same scaling and eq. (50). It is tied to
its training (N, K, Z) and, because of the flatten + FC, is not equivariant to permuting users or BSs
(the GNNs are, exactly: their features carry no BS or user identity).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from isac.learning.zhao import reset_parameters  # noqa: F401  (Linear and Conv2d, seeded generator)
from isac.tensors import COMPLEX, REAL

COMM_EDGE_TYPES = ("bs-cc", "ue", "bs-cs")
"""Edge types whose centre is a communication-link node (eqs. (34)-(36))."""
SENSE_EDGE_TYPES = ("bs-ss", "tgt", "bs-sc")
"""Edge types whose centre is a sensing-link node (eqs. (38)-(40))."""
EDGE_TYPES = COMM_EDGE_TYPES + SENSE_EDGE_TYPES
KINDS = ("lhgnn", "lhgnn-noatt", "homognn", "cnn", "lhgnn-rzf")


def paper_widths(num_antennas: int) -> list[int]:
    """002 Sec. IV-A output widths of the U = 9 GNN layers, [2L, 128, 128, 128, 256, 512, 256, 128, 2L]."""
    two_l = 2 * num_antennas
    return [two_l, 128, 128, 128, 256, 512, 256, 128, two_l]


# --- graph ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EdgeSet:
    """One edge type: centre nodes of type ``center`` ("c"/"s"), neighbours of type ``neighbor``.

    ``index [centres, degree]`` (long): row i lists the neighbours of centre i, as indices into the
    neighbour type's own node list (comm: ``n*K + k``; sensing: ``n*Z + z``)."""

    name: str
    center: str
    neighbor: str
    index: torch.Tensor

    @property
    def degree(self) -> int:
        return int(self.index.shape[1])


@dataclass(frozen=True)
class LianGraph:
    """The link-heterogeneous graph of N BSs, K users and Z targets (Sec. III-A, eqs. (33)-(42))."""

    num_bs: int
    num_users: int
    num_targets: int
    edges: dict[str, EdgeSet]
    """All six edge types, empty ones (degree 0) included."""
    homogeneous: torch.Tensor
    """``[N(K+Z), K+N+Z-2]`` global neighbour indices of every node (the union of the six types), for the Homo GNN."""

    @property
    def num_comm(self) -> int:
        return self.num_bs * self.num_users

    @property
    def num_sense(self) -> int:
        return self.num_bs * self.num_targets

    def edge_types_of(self, center: str) -> list[EdgeSet]:
        """The non-empty edge types whose centre is of type ``center`` ("c" or "s")."""
        names = COMM_EDGE_TYPES if center == "c" else SENSE_EDGE_TYPES
        return [self.edges[r] for r in names if self.edges[r].degree > 0]

    def global_index(self, node_type: str, local: torch.Tensor) -> torch.Tensor:
        """Global node index (comm nodes first, then sensing nodes) of type-local indices."""
        return local if node_type == "c" else local + self.num_comm

    def edge_list(self, name: str) -> torch.Tensor:
        """``[2, E]`` long: (centre, neighbour) global indices of every directed edge of type ``name``."""
        e = self.edges[name]
        centres = torch.arange(e.index.shape[0]).repeat_interleave(e.degree)
        return torch.stack([self.global_index(e.center, centres), self.global_index(e.neighbor, e.index.reshape(-1))])

    @property
    def num_edges(self) -> int:
        """Directed edges of all types: N(K+Z)(K+N+Z-2)."""
        return sum(int(e.index.numel()) for e in self.edges.values())


@lru_cache(maxsize=64)
def lian_graph(num_bs: int, num_users: int, num_targets: int) -> LianGraph:
    """The graph of (N, K, Z) (cached; index tensors on the CPU)."""
    n_, k_, z_ = int(num_bs), int(num_users), int(num_targets)
    if n_ < 1 or k_ < 1 or z_ < 1:
        raise ValueError(f"the graph needs N, K, Z >= 1, got N={n_}, K={k_}, Z={z_}")

    def c(n: int, k: int) -> int:
        return n * k_ + k

    def s(n: int, z: int) -> int:
        return n * z_ + z

    rows: dict[str, list[list[int]]] = {r: [] for r in EDGE_TYPES}
    for n in range(n_):
        for k in range(k_):
            rows["bs-cc"].append([c(n, kk) for kk in range(k_) if kk != k])
            rows["ue"].append([c(nn, k) for nn in range(n_) if nn != n])
            rows["bs-cs"].append([s(n, z) for z in range(z_)])
    for n in range(n_):
        for z in range(z_):
            rows["bs-ss"].append([s(n, zz) for zz in range(z_) if zz != z])
            rows["tgt"].append([s(nn, z) for nn in range(n_) if nn != n])
            rows["bs-sc"].append([c(n, k) for k in range(k_)])
    types = {"bs-cc": ("c", "c"), "ue": ("c", "c"), "bs-cs": ("c", "s"),
             "bs-ss": ("s", "s"), "tgt": ("s", "s"), "bs-sc": ("s", "c")}
    edges = {}
    for r, (ct, nt) in types.items():
        centres = n_ * (k_ if ct == "c" else z_)
        idx = torch.tensor(rows[r], dtype=torch.long).reshape(centres, -1)
        edges[r] = EdgeSet(r, ct, nt, idx)
    off = n_ * k_
    homo = []
    for names, ct in ((COMM_EDGE_TYPES, "c"), (SENSE_EDGE_TYPES, "s")):
        parts = [edges[r].index + (off if edges[r].neighbor == "s" else 0) for r in names]
        homo.append(torch.cat(parts, dim=1))
    return LianGraph(n_, k_, z_, edges, torch.cat(homo, dim=0))


# --- features and output ----------------------------------------------------------------------------


def _per_bs(x, batch: int, num_bs: int, name: str) -> torch.Tensor:
    """A positive scalar, ``[B]`` or ``[B, N]`` value as float64 ``[B, N]``."""
    t = torch.as_tensor(x, dtype=REAL)
    if t.dim() == 0:
        t = t.expand(batch, num_bs)
    elif t.dim() == 1 and t.shape[0] == batch:
        t = t[:, None].expand(batch, num_bs)
    if tuple(t.shape) != (batch, num_bs):
        raise ValueError(f"{name}: expected a scalar, [B] or [B, N] = [{batch}, {num_bs}] values, got {list(t.shape)}")
    if not bool((t > 0).all()):
        raise ValueError(f"{name}: must be > 0")
    return t


def node_features(H: torch.Tensor, A: torch.Tensor, p_max_w, noise_w) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Initial node features (43)-(44), scaled (module docstring): ``c0 [B, N*K, 2L]``, ``s0 [B, N*Z, 2L]`` float32.

    Args:
        H: ``[B, N, L, K]`` complex, ``H[b, n, :, k]`` = :math:`\hat{\mathbf h}_{k,n}` (what the solver sees).
        A: ``[B, N, L, Z]`` complex, column z of BS n = :math:`\mathbf a_t(\hat\theta_{n,z},\hat\beta_{n,z})` (eq. (8)).
        p_max_w: per-BS budgets, scalar, ``[B]`` or ``[B, N]`` (W). noise_w: comm noise power, scalar or ``[B]`` (W).
    """
    b, n, length, _ = H.shape
    p = _per_bs(p_max_w, b, n, "p_max_w").to(H.device)
    sig2 = torch.as_tensor(noise_w, dtype=REAL, device=H.device).reshape(-1)
    if sig2.numel() not in (1, b) or not bool((sig2 > 0).all()):
        raise ValueError("noise_w: expected a positive scalar or [B] values")
    sig2 = sig2.expand(b) if sig2.numel() == 1 else sig2
    g = H.to(COMPLEX) * (p / sig2[:, None]).sqrt()[:, :, None, None]
    g = g.transpose(-2, -1).reshape(b, -1, length)  # [B, N*K, L], node n*K + k
    a = (A.to(COMPLEX) * math.sqrt(length)).transpose(-2, -1).reshape(b, -1, length)  # [B, N*Z, L]
    c0 = torch.cat([g.real, g.imag], dim=-1).to(torch.float32)
    s0 = torch.cat([a.real, a.imag], dim=-1).to(torch.float32)
    return c0, s0


def power_normalise(W_hat: torch.Tensor, p_max_w: torch.Tensor) -> torch.Tensor:
    r"""Eq. (50): ``W_hat [B, N, L, S]`` -> :math:`\sqrt{P_n}\,\hat{\mathbf P}_n/\max(\sqrt{P_n},\sqrt{\hat P_n})` per BS."""
    p_hat = (W_hat.real**2 + W_hat.imag**2).sum(dim=(-2, -1))  # [B, N]
    sp = p_max_w.sqrt()
    return W_hat * (sp / torch.maximum(sp, p_hat.sqrt()))[:, :, None, None]


def assemble_beams(comm: torch.Tensor, sense: torch.Tensor, num_bs: int, p_max_w: torch.Tensor) -> torch.Tensor:
    """Raw outputs ``comm [B, N*K, 2L]``, ``sense [B, N*Z, 2L]`` (float32) -> ``W [B, N, L, K+Z]`` complex128 meeting (32b)."""
    b, _, two_l = comm.shape
    length = two_l // 2

    def to_complex(o: torch.Tensor) -> torch.Tensor:
        o = o.to(REAL)
        z = torch.complex(o[..., :length], o[..., length:])  # [B, N*X, L]
        return z.reshape(b, num_bs, -1, length).transpose(-2, -1)  # [B, N, L, X]

    W_hat = torch.cat([to_complex(comm), to_complex(sense)], dim=-1) * p_max_w.sqrt()[:, :, None, None]
    return power_normalise(W_hat, p_max_w)


# --- layers -----------------------------------------------------------------------------------------


def _aggregate(q: torch.Tensor | None, k: torch.Tensor | None, v: torch.Tensor, index: torch.Tensor,
               width: int) -> torch.Tensor:
    """``1/|N(i)| sum_j lambda(i, j) v_j`` (attention, (46)-(47)) or the plain mean when ``q`` is None.

    q: ``[B, M_c, l]`` f3 of the centres; k, v: ``[B, M_n, l]``, ``[B, M_n, F]`` f4, f2 of all neighbour-type
    nodes; index ``[M_c, d]``."""
    vg = v[:, index]  # [B, M_c, d, F]
    if q is None:
        return vg.mean(dim=2)
    scores = (q.unsqueeze(2) * k[:, index]).sum(-1) / width  # [B, M_c, d]
    lam = torch.softmax(scores, dim=-1)
    return (lam.unsqueeze(-1) * vg).sum(dim=2) / index.shape[1]


class HetLayer(nn.Module):
    """One LHGNN hidden layer (eqs. (45)-(49)): f1..f4 and a LayerNorm per edge type."""

    def __init__(self, fin: int, fout: int, attention: bool = True):
        super().__init__()
        self.fout = fout
        self.attention = attention
        self.f1 = nn.ModuleDict({r: nn.Linear(fin, fout) for r in EDGE_TYPES})
        self.f2 = nn.ModuleDict({r: nn.Linear(fin, fout) for r in EDGE_TYPES})
        if attention:
            self.f3 = nn.ModuleDict({r: nn.Linear(fin, fout) for r in EDGE_TYPES})
            self.f4 = nn.ModuleDict({r: nn.Linear(fin, fout) for r in EDGE_TYPES})
        self.norm = nn.ModuleDict({r: nn.LayerNorm(fout) for r in EDGE_TYPES})

    def forward(self, x: dict[str, torch.Tensor], graph: LianGraph, index: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The same as applying f1..f4 edge type by edge type (:meth:`forward_reference`), but with all linear
        maps that read one node type's features fused into one matrix product (2 per layer instead of up to 20)."""
        used = [e for t in ("c", "s") for e in graph.edge_types_of(t)]
        blocks: dict[str, list[tuple[str, str]]] = {"c": [], "s": []}  # node type -> [(network, edge type)] it feeds
        for e in used:
            blocks[e.center].append(("f1", e.name))
            blocks[e.neighbor].append(("f2", e.name))
            if self.attention:
                blocks[e.center].append(("f3", e.name))
                blocks[e.neighbor].append(("f4", e.name))
        y: dict[tuple[str, str], torch.Tensor] = {}
        for t, items in blocks.items():
            if not items:
                continue
            mods = [getattr(self, f)[r] for f, r in items]
            z = nn.functional.linear(x[t], torch.cat([m.weight for m in mods]), torch.cat([m.bias for m in mods]))
            for key, part in zip(items, z.split(self.fout, dim=-1)):
                y[key] = part
        out = {}
        for t in ("c", "s"):
            terms = []
            for e in graph.edge_types_of(t):
                r = e.name
                q = y["f3", r] if self.attention else None
                k = y["f4", r] if self.attention else None
                agg = _aggregate(q, k, y["f2", r], index[r], self.fout)
                terms.append(self.norm[r](y["f1", r] + agg))
            out[t] = torch.relu(torch.stack(terms).mean(0))
        return out

    def forward_reference(self, x: dict[str, torch.Tensor], graph: LianGraph,
                          index: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Eqs. (45)-(49) written edge type by edge type (what :meth:`forward` computes, for tests)."""
        out = {}
        for t in ("c", "s"):
            terms = []
            for e in graph.edge_types_of(t):
                r = e.name
                xc, xn = x[t], x[e.neighbor]
                q = self.f3[r](xc) if self.attention else None
                k = self.f4[r](xn) if self.attention else None
                agg = _aggregate(q, k, self.f2[r](xn), index[r], self.fout)
                terms.append(self.norm[r](self.f1[r](xc) + agg))
            out[t] = torch.relu(torch.stack(terms).mean(0))
        return out


class HomoLayer(nn.Module):
    """One Homo GNN layer: a single edge type (all neighbours), one f1..f4 and one LayerNorm."""

    def __init__(self, fin: int, fout: int):
        super().__init__()
        self.fout = fout
        self.f1, self.f2, self.f3, self.f4 = (nn.Linear(fin, fout) for _ in range(4))
        self.norm = nn.LayerNorm(fout)

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        agg = _aggregate(self.f3(x), self.f4(x), self.f2(x), index, self.fout)
        return torch.relu(self.norm(self.f1(x) + agg))


def _head(fin: int, hidden: int, fout: int) -> nn.Sequential:
    """U' = 2 fully connected layers: ``Linear(fin, hidden), ReLU, Linear(hidden, fout)``."""
    return nn.Sequential(nn.Linear(fin, hidden), nn.ReLU(), nn.Linear(hidden, fout))


class _LianNet(nn.Module):
    """Common interface: ``model(H, A, p_max_w, noise_w) -> W [B, N, L, K+Z]`` complex128 (see :func:`node_features`)."""

    num_antennas: int

    def forward(self, H: torch.Tensor, A: torch.Tensor, p_max_w, noise_w) -> torch.Tensor:
        return self.output_layer(*self.prepare(H, A, p_max_w, noise_w))

    def prepare(self, H: torch.Tensor, A: torch.Tensor, p_max_w, noise_w) -> tuple[torch.Tensor, ...]:
        """Everything before the output layer: ``(comm, sense, c0, s0, p_max_w [B, N])``."""
        if H.dim() != 4 or A.dim() != 4 or A.shape[:3] != H.shape[:3]:
            raise ValueError(f"expected H [B, N, L, K] and A [B, N, L, Z], got {list(H.shape)} and {list(A.shape)}")
        b, n, length, k = H.shape
        if length != self.num_antennas:
            raise ValueError(f"this model was built for L={self.num_antennas} antennas per BS, got L={length}")
        c0, s0 = node_features(H, A, p_max_w, noise_w)
        comm, sense = self.node_outputs(c0, s0, lian_graph(n, k, A.shape[-1]))
        return comm, sense, c0, s0, _per_bs(p_max_w, b, n, "p_max_w").to(H.device)

    def output_layer(self, comm: torch.Tensor, sense: torch.Tensor, c0: torch.Tensor, s0: torch.Tensor,
                     p_max_w: torch.Tensor) -> torch.Tensor:
        """Node outputs -> beams meeting (32b): 002's eq. (50) (:func:`assemble_beams`)."""
        return assemble_beams(comm, sense, p_max_w.shape[1], p_max_w)

    def node_outputs(self, c0: torch.Tensor, s0: torch.Tensor, graph: LianGraph) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


_INDEX_CACHE: dict[tuple, dict[str, torch.Tensor]] = {}


def _device_index(graph: LianGraph, device: torch.device) -> dict[str, torch.Tensor]:
    """The graph's index matrices on ``device`` (cached per graph and device)."""
    key = (graph.num_bs, graph.num_users, graph.num_targets, str(device))
    if key not in _INDEX_CACHE:
        d = {r: e.index.to(device) for r, e in graph.edges.items()}
        d["homogeneous"] = graph.homogeneous.to(device)
        _INDEX_CACHE[key] = d
    return _INDEX_CACHE[key]


class LHGNN(_LianNet):
    """002's LHGNN (``attention=True``) or "LHGNN w/o attention" (``attention=False``, Sec. IV-D)."""

    def __init__(self, num_antennas: int, widths: list[int], fc_hidden: int, attention: bool = True):
        super().__init__()
        self.num_antennas = int(num_antennas)
        sizes = [2 * self.num_antennas, *[int(w) for w in widths]]
        self.layers = nn.ModuleList(HetLayer(a, b, attention) for a, b in zip(sizes[:-1], sizes[1:]))
        self.head_c = _head(sizes[-1], fc_hidden, 2 * self.num_antennas)
        self.head_s = _head(sizes[-1], fc_hidden, 2 * self.num_antennas)

    def node_outputs(self, c0, s0, graph):
        index = _device_index(graph, c0.device)
        x = {"c": c0, "s": s0}
        for layer in self.layers:
            x = layer(x, graph, index)
        return self.head_c(x["c"]), self.head_s(x["s"])


class HomoGNN(_LianNet):
    """Benchmark 2 (Homo GNN): one node type, one edge type with attention, one shared head."""

    def __init__(self, num_antennas: int, widths: list[int], fc_hidden: int):
        super().__init__()
        self.num_antennas = int(num_antennas)
        sizes = [2 * self.num_antennas, *[int(w) for w in widths]]
        self.layers = nn.ModuleList(HomoLayer(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.head = _head(sizes[-1], fc_hidden, 2 * self.num_antennas)

    def node_outputs(self, c0, s0, graph):
        index = _device_index(graph, c0.device)["homogeneous"]
        x = torch.cat([c0, s0], dim=1)
        for layer in self.layers:
            x = layer(x, index)
        out = self.head(x)
        return out[:, :graph.num_comm], out[:, graph.num_comm:]


class LianCNN(_LianNet):
    """Benchmark 3 (Naive CNN): conv layers over the N x (K+Z) link grid (2L channels), then FC layers."""

    def __init__(self, num_antennas: int, num_bs: int, num_users: int, num_targets: int,
                 channels: list[int], fc_hidden: list[int]):
        super().__init__()
        self.num_antennas = int(num_antennas)
        self.shape = (int(num_bs), int(num_users), int(num_targets))
        convs: list[nn.Module] = []
        cin = 2 * self.num_antennas
        for ch in channels:
            convs += [nn.Conv2d(cin, int(ch), kernel_size=3, padding=1), nn.ReLU()]
            cin = int(ch)
        self.convs = nn.Sequential(*convs)
        n, k, z = self.shape
        fc: list[nn.Module] = []
        fin = cin * n * (k + z)
        for h in fc_hidden:
            fc += [nn.Linear(fin, int(h)), nn.ReLU()]
            fin = int(h)
        fc.append(nn.Linear(fin, n * (k + z) * 2 * self.num_antennas))
        self.fc = nn.Sequential(*fc)

    def node_outputs(self, c0, s0, graph):
        n, k, z = self.shape
        if (graph.num_bs, graph.num_users, graph.num_targets) != self.shape:
            raise ValueError(f"this CNN was built for N={n}, K={k}, Z={z}; got N={graph.num_bs}, "
                             f"K={graph.num_users}, Z={graph.num_targets} (a CNN only runs on its training sizes)")
        b, two_l = c0.shape[0], c0.shape[-1]
        grid = torch.cat([c0.reshape(b, n, k, two_l), s0.reshape(b, n, z, two_l)], dim=2)  # [B, N, K+Z, 2L]
        y = self.convs(grid.permute(0, 3, 1, 2))  # [B, C, N, K+Z]
        out = self.fc(y.flatten(1)).reshape(b, n, k + z, two_l)
        return out[:, :, :k].reshape(b, n * k, two_l), out[:, :, k:].reshape(b, n * z, two_l)


def _complex_nodes(o: torch.Tensor, num_bs: int) -> torch.Tensor:
    """``[B, N*X, 2L]`` real node vectors (node n*X + x) -> ``[B, N, L, X]`` complex128."""
    b, _, two_l = o.shape
    o = o.to(REAL)
    z = torch.complex(o[..., :two_l // 2], o[..., two_l // 2:])
    return z.reshape(b, num_bs, -1, two_l // 2).transpose(-2, -1)


def interference_projection(W: torch.Tensor, G: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    r"""Regularised projection of every beam away from the users it must not reach (joint over the N BSs).

    ``W [B, N, L, K+Z]`` raw beams, ``G [B, N, L, K]`` the (scaled) channels, ``mu`` a positive scalar
    tensor. With :math:`\mathbf g_j\in\mathbb C^{NL}` the stacked channel of user j and
    :math:`\mathbf G_{\mathcal S}` the columns in :math:`\mathcal S`, beam s becomes
    :math:`\mathbf w_s-\mathbf G_{\mathcal S}(\mathbf G_{\mathcal S}^H\mathbf G_{\mathcal S}+\mu\mathbf I)^{-1}
    \mathbf G_{\mathcal S}^H\mathbf w_s` with :math:`\mathcal S` = every user but k for user beam k and
    every user for a sensing beam. As :math:`\mu\to0` this is the orthogonal projection onto the null
    space of those users (zero forcing); one masked K x K solve per beam, all beams and samples batched."""
    b, n, length, k = G.shape
    s = W.shape[-1]
    Gs = G.reshape(b, n * length, k)
    Ws = W.reshape(b, n * length, s)
    mask = torch.ones(s, k, dtype=REAL, device=W.device)
    mask[torch.arange(k), torch.arange(k)] = 0.0  # user beam k keeps its own user
    gram = Gs.mH @ Gs  # [B, K, K]
    M = gram[:, None] * (mask[:, :, None] * mask[:, None, :]) + mu * torch.eye(k, dtype=REAL, device=W.device)
    c = (Gs.mH @ Ws).transpose(1, 2) * mask  # [B, S, K]
    y = torch.linalg.solve(M, c.unsqueeze(-1)).squeeze(-1) * mask
    return (Ws - Gs @ y.transpose(1, 2)).reshape(b, n, length, s)


def uniform_power_scale(W: torch.Tensor, p_max_w: torch.Tensor) -> torch.Tensor:
    """One common factor for all BSs so that the most loaded BS is exactly at its budget (keeps every null)."""
    p_hat = (W.real**2 + W.imag**2).sum(dim=(-2, -1))  # [B, N]
    return W * (p_max_w / p_hat.clamp_min(1e-300)).amin(dim=1).sqrt()[:, None, None, None]


class LHGNNRZF(LHGNN):
    r"""``lhgnn-rzf``: 002's LHGNN (same graph, layers and heads) with a model-based output layer (ours).

    002's output (50) leaves interference suppression to the network; the reduced-protocol LHGNN learns
    beams close to matched filtering and reaches ~0.4-0.6x the optimised sum rate. Here the head's beam
    of link (n, k) is added to a learned multiple of the user's own normalised joint channel
    (:math:`\beta\,\mathbf g_{k,n}/\|\mathbf g_k\|`, the sensing beam likewise to
    :math:`\beta_s\mathbf a_n/\sqrt N`), the joint beams are passed through
    :func:`interference_projection` (regularisation :math:`\mu=e^{\theta}` in units of the scaled
    features, learned), user k's beam is multiplied by a learned gain :math:`e^{\ell_k}` (one more output
    of the comm head, :math:`\ell_k` = its mean over the N links of user k: power allocation, which the
    projection alone does not learn easily at low SNR) and all beams are scaled by one common factor so
    that the most loaded BS uses its full budget
    (:func:`uniform_power_scale`; a per-BS factor as in (50) would undo the nulls). At initialisation
    this is regularised zero forcing with equal per-user norms; training then moves the beams within the
    users' null spaces to meet the SPEB. Still exactly user- and BS-permutation equivariant."""

    def __init__(self, num_antennas: int, widths: list[int], fc_hidden: int):
        super().__init__(num_antennas, widths, fc_hidden, attention=True)
        self.log_mu = nn.Parameter(torch.zeros(()))
        self.skip = nn.Parameter(torch.ones(2))
        # the comm head's extra output is the log power gain of the link; user k's gain = mean over its N links
        self.head_c = _head(self.head_c[0].in_features, fc_hidden, 2 * self.num_antennas + 1)

    def beams_at(self, prepared: tuple[torch.Tensor, ...], t: torch.Tensor) -> torch.Tensor:
        """Beams with the heads' beam outputs scaled by ``t [B]`` (0: plain RZF, 1: :meth:`forward`).

        The solver's SPEB guard (:mod:`isac.solvers.lian_learned`) searches ``t`` per instance."""
        comm, sense, c0, s0, p = prepared
        return self.output_layer(comm, sense, c0, s0, p, t)

    def output_layer(self, comm, sense, c0, s0, p_max_w, t: torch.Tensor | None = None):
        if t is not None:
            tt = t.to(comm.dtype).reshape(-1, 1, 1)
            comm = torch.cat([comm[..., :-1] * tt, comm[..., -1:]], dim=-1)
            sense = sense * tt
        n = p_max_w.shape[1]
        g = _complex_nodes(c0, n)  # [B, N, L, K] = h sqrt(P_n) / sigma
        a = _complex_nodes(s0, n)  # [B, N, L, Z], unit-modulus entries
        g_norm = (g.real**2 + g.imag**2).sum(dim=(1, 2), keepdim=True).sqrt()
        a_norm = (a.real**2 + a.imag**2).sum(dim=(1, 2), keepdim=True).sqrt()
        b, k = g.shape[0], g.shape[-1]
        log_gain = comm[..., -1].to(REAL).reshape(b, n, k).mean(1)  # [B, K]
        raw_c = _complex_nodes(comm[..., :-1], n) + self.skip[0].to(REAL) * g / g_norm
        raw_s = _complex_nodes(sense, n) + self.skip[1].to(REAL) * a / a_norm
        W = interference_projection(torch.cat([raw_c, raw_s], dim=-1), g, self.log_mu.to(REAL).exp())
        gain = torch.cat([log_gain.exp(), torch.ones(b, W.shape[-1] - k, dtype=REAL, device=W.device)], -1)
        return uniform_power_scale(W * gain[:, None, None, :], p_max_w)


__all__ = [
    "COMM_EDGE_TYPES", "EDGE_TYPES", "KINDS", "SENSE_EDGE_TYPES", "EdgeSet", "HetLayer", "HomoGNN", "HomoLayer",
    "LHGNN", "LHGNNRZF", "LianCNN", "LianGraph", "assemble_beams", "interference_projection", "lian_graph",
    "node_features", "paper_widths", "power_normalise", "reset_parameters", "uniform_power_scale",
]
