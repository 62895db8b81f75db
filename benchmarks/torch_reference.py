"""The MEC model of docs/model.md and one online-learning step of DROO and GRLE, in PyTorch.

This is the reference the JAX code is timed against (``python -m benchmarks.throughput``), so it
is written the way a careful PyTorch user would write it, not as a straw man. It holds NO JAX.
Two forms:

(a) ``Loop*``: one environment at a time in a Python loop, as DROO's published code runs. The
    environment is numpy (sampling) and plain Python floats (the per-task FCFS queue, which is how
    such code is written); the networks are ``torch.nn`` modules called on one sample to act and on
    a minibatch to learn, each agent with its own ``torch.optim.Adam``; the K candidates are scored
    one after the other (DROO calls its per-candidate solver in a loop the same way).
(b) ``Batched*``: B environments (and B independent agents) as tensors, eager. No Python loop over
    environments, devices or candidates: FCFS per ES is a sort of the arrivals per ES then a
    cumulative sum and a cumulative max (the max-plus closed form; ``fcfs='pairwise'`` is the
    N x N "who is ahead of whom" form of ``grle_jax.dynamics``), sampling writes into preallocated
    buffers, the B agents' weights are stacked tensors used with ``baddbmm`` (one ``Adam`` over the
    stacked tensors is exactly B independent Adams: it is element-wise and the loss is a sum of the
    agents' losses), the GCN aggregates with ``index_add``. Simulation runs under
    ``torch.no_grad()``.

Both follow docs/model.md section 2 (times relative to the slot's generation instant g, as
``grle_jax.types`` does), both overdue rules, inactive devices and links that are down. A decision
is one environment option ``m * E + e`` per device (-1 or an unreachable ES: the task fails).
The networks and features are those of ``grle_jax.policies`` / ``grle_jax.graph``:
- DROO: MLP on ``where(L, r_hat / rate_hi, 0)`` (N*M inputs), 120, 80 (ReLU), N*M logits;
  final exit only (policy option m -> environment option m*E + E-1).
- GRLE: the device/option graph (N + M*E nodes, 9 node features; N*M*E directed device -> option
  edges, 3 edge features, masked where the device has no task or no link), two ``EdgeConv``
  layers (128 then 64) that pass messages both ways along live edges (``W_h h`` once per node,
  gathered per edge, plus ``W_x x`` per edge; aggregated with ``index_add``), then the edge head
  relu(W_d h_dev + W_o h_opt + W_x x) -> 64 -> 1.
The quantiser is docs/model.md's one-hot order-preserving one (candidate 1 = best option per device;
candidate k moves one device, pairs by increasing score gap, equal gaps by the gap in logits, then
the lower flat index).
Learning: replay memory (ring of ``memory`` rows), every ``train_every`` slots one Adam step on a
minibatch of ``batch`` rows drawn uniformly from the filled rows, mean binary cross-entropy over
the live options.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

__all__ = [
    "MECParams", "setup_threads",
    "loop_slot_outcome", "loop_score", "LoopEnv", "LoopAgent",
    "batched_slot_outcome", "batched_score", "BatchedEnv", "BatchedAgent", "quantize_batched",
    "DROONet", "GCNNet",
]

DEFAULT_ACC = (0.800, 0.850, 0.885, 0.905, 0.935)
DEFAULT_TIME_MS = ((0.36, 0.46, 0.54, 0.71, 1.26), (0.73, 0.89, 1.06, 1.40, 2.42))

NODE_FEATURES = 9
EDGE_FEATURES = 3


def setup_threads(n: int | None = None) -> int:
    """Use every core the process may run on (intra-op); returns the count."""
    if n is None:
        try:
            n = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover
            n = os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


# ================================================================================================
# Parameters
# ================================================================================================
@dataclass(frozen=True)
class MECParams:
    """Every value of a run (docs/model.md defaults), plain Python numbers."""

    n: int = 14
    m: int = 2
    overdue: str = "abort"
    slot_ms: float = 20.0
    deadline_ms: float = 30.0
    size_kb: tuple = (50.0, 100.0)
    rate_mbps: tuple = (20.0, 100.0)
    phi_range: tuple = (1.0, 1.0)
    eps_range: tuple = (1.0, 1.0)
    csi_range: tuple = (1.0, 1.0)
    p_link: float = 1.0
    p_active: float = 1.0
    topology_every: int = 1
    rho: float = 0.0
    acc: tuple = DEFAULT_ACC
    c: tuple = field(default=None)  # (M, E) ms; None: the paper's table, ES m uses column m mod 2

    def __post_init__(self):
        if self.c is None:
            object.__setattr__(self, "c", tuple(DEFAULT_TIME_MS[i % len(DEFAULT_TIME_MS)] for i in range(self.m)))
        if self.overdue not in ("abort", "keep"):
            raise ValueError(f"overdue must be 'abort' or 'keep', got {self.overdue!r}")

    @property
    def e(self) -> int:
        return len(self.acc)

    @property
    def options(self) -> int:
        return self.m * self.e

    @staticmethod
    def from_config_dict(d: dict, acc, c) -> "MECParams":
        """From ``grle_jax.config.Config.to_dict()`` plus the exit table (plain lists)."""
        return MECParams(
            n=d["devices"], m=d["servers"], overdue=d["overdue"], slot_ms=d["slot_ms"],
            deadline_ms=d["deadline_ms"], size_kb=tuple(d["size_kb"]), rate_mbps=tuple(d["rate_mbps"]),
            phi_range=tuple(d["phi_range"]), eps_range=tuple(d["eps_range"]),
            csi_range=tuple(d["csi_range"]), p_link=d["p_link"], p_active=d["p_active"],
            topology_every=d["topology_every"], rho=d["rho"],
            acc=tuple(float(x) for x in acc), c=tuple(tuple(float(x) for x in row) for row in c),
        )


def policy_option_index(policy: str, p: MECParams) -> list[int]:
    """Environment option of each policy option: all M*E (GRLE, DROOE) or the final exit (DROO, GRL)."""
    if policy in ("grle", "drooe"):
        return list(range(p.options))
    return [m * p.e + p.e - 1 for m in range(p.m)]


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


# ================================================================================================
# (a) One environment at a time: numpy sampling, a plain-Python FCFS queue
# ================================================================================================
def loop_slot_outcome(p: MECParams, radio0, es0, s, rate, phi, eps, L, has_task, option) -> dict:
    """One slot of one environment (docs/model.md 2), times relative to g. Inputs are Python lists
    (``rate`` and ``L`` nested (N, M)). Returns per-device A, S, F (None where not served), ok,
    acc, served, the reward and the queues after the slot."""
    n_dev, E, D, n_opt, rho = p.n, len(p.acc), p.deadline_ms, p.m * len(p.acc), p.rho
    abort = p.overdue == "abort"
    A = [None] * n_dev
    S = [None] * n_dev
    F = [None] * n_dev
    ok = [False] * n_dev
    achieved = [0.0] * n_dev
    served = [False] * n_dev
    radio_after = [r if r > 0.0 else 0.0 for r in radio0]
    queues = [[] for _ in range(p.m)]
    reward = 0.0
    for i in range(n_dev):
        if not has_task[i]:
            continue
        o = option[i]
        if o < 0 or o >= n_opt or not L[i][o // E]:
            reward -= rho  # an active device that cannot offload: fails, costs rho
            continue
        served[i] = True
        m = o // E
        a = radio_after[i] + s[i] * 8.0 / rate[i][m]
        A[i] = a
        radio_after[i] = (a if a < D else D) if abort else a
        queues[m].append((a, i))
    es_after = [x if x > 0.0 else 0.0 for x in es0]
    c, acc = p.c, p.acc
    for m in range(p.m):
        q = queues[m]
        if not q:
            continue
        q.sort()  # arrival order, ties by device index
        cur = es_after[m]
        cm, ph = c[m], phi[m]
        for a, i in q:
            st = a if a > cur else cur
            f = st + cm[option[i] % E] * eps[i] / ph
            S[i] = st
            F[i] = f
            if abort:
                if st < D:  # a task reaching the head at/after the deadline is dropped
                    cur = f if f < D else D
            else:
                cur = f
            if f <= D:
                ok[i] = True
                v = acc[option[i] % E]
                achieved[i] = v
                reward += v
            elif rho:
                reward -= rho * _sigmoid((f - D) / D)
        es_after[m] = cur
    return {"A": A, "S": S, "F": F, "latency": F, "ok": ok, "acc": achieved, "served": served,
            "reward": reward, "radio_after": radio_after, "es_after": es_after}


def loop_score(p: MECParams, obs: dict, option) -> float:
    """R of one decision on observed values (r_hat, eps = 1)."""
    return loop_slot_outcome(p, obs["radio"], obs["es"], obs["s"], obs["r_hat"], obs["phi"],
                             [1.0] * p.n, obs["L"], obs["active"], option)["reward"]


class LoopEnv:
    """One environment: numpy sampling, Python-float queues."""

    def __init__(self, p: MECParams, seed: int):
        self.p = p
        self.rng = np.random.default_rng(seed)
        self.t = 0
        self.radio = [0.0] * p.n
        self.es = [0.0] * p.m
        self.L = np.ones((p.n, p.m), bool)
        self.active = np.ones(p.n, bool)

    def sample(self) -> dict:
        p, u = self.p, self.rng.uniform
        s = u(*p.size_kb, p.n)
        r = u(*p.rate_mbps, (p.n, p.m))
        r_hat = r * u(*p.csi_range, (p.n, p.m))
        phi = u(*p.phi_range, p.m)
        eps = u(*p.eps_range, p.n)
        if self.t % p.topology_every == 0:
            self.L = self.rng.random((p.n, p.m)) < p.p_link
            self.active = self.rng.random(p.n) < p.p_active
        return {"s": s, "r": r, "r_hat": r_hat, "phi": phi, "eps": eps, "L": self.L, "active": self.active}

    def observe(self, x: dict) -> dict:
        """Observed values as Python lists (what the candidate scorer reads)."""
        return {"s": x["s"].tolist(), "r_hat": x["r_hat"].tolist(), "phi": x["phi"].tolist(),
                "L": x["L"].tolist(), "active": x["active"].tolist(), "radio": list(self.radio),
                "es": list(self.es)}

    def step(self, x: dict, option) -> dict:
        p = self.p
        out = loop_slot_outcome(p, self.radio, self.es, x["s"].tolist(), x["r"].tolist(),
                                x["phi"].tolist(), x["eps"].tolist(), x["L"].tolist(),
                                x["active"].tolist(), option)
        T = p.slot_ms
        self.radio = [max(v - T, 0.0) for v in out["radio_after"]]
        self.es = [max(v - T, 0.0) for v in out["es_after"]]
        self.t += 1
        return out

    def random_decision(self, x: dict) -> list:
        """A uniformly random reachable option per active device (-1 where none)."""
        E = self.p.e
        u = self.rng.random(self.p.n).tolist()
        dec = [-1] * self.p.n
        for i, (row, act) in enumerate(zip(x["L"].tolist(), x["active"].tolist())):
            if not act:
                continue
            ms = [m for m, up in enumerate(row) if up]
            if ms:
                j = int(u[i] * len(ms) * E)
                dec[i] = ms[j // E] * E + j % E
        return dec

    def run_random(self, slots: int) -> float:
        tot = 0.0
        for _ in range(slots):
            x = self.sample()
            tot += self.step(x, self.random_decision(x))["reward"]
        return tot


# --- networks (nn.Module, the loop form) --------------------------------------------------------
class DROONet(nn.Module):
    """DROO's MLP: N*M rates -> 120 -> 80 -> N*P logits."""

    def __init__(self, n: int, m: int, options: int, hidden=(120, 80)):
        super().__init__()
        layers, width = [], n * m
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, n * options))
        self.net = nn.Sequential(*layers)
        self.n, self.options = n, options

    def forward(self, x):  # (..., N*M) -> (..., N, P)
        return self.net(x).unflatten(-1, (self.n, self.options))

    def load_flax(self, params: dict) -> None:
        """Copy weights from a ``grle_jax.policies.mlp.DROOActor`` parameter dict (numpy arrays)."""
        lins = [m for m in self.net if isinstance(m, nn.Linear)]
        for i, lin in enumerate(lins):
            lin.weight.data.copy_(torch.as_tensor(np.asarray(params[f"Dense_{i}"]["kernel"])).T)
            lin.bias.data.copy_(torch.as_tensor(np.asarray(params[f"Dense_{i}"]["bias"])))


def _edge_index(n: int, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Device -> option edges, edge i * P + o (same numbering as grle_jax.graph)."""
    snd = torch.arange(n).repeat_interleave(p)
    rcv = torch.arange(p).repeat(n) + n
    return snd, rcv


GCN_LAYERS = ("msg_fwd_node", "msg_bwd_node", "msg_fwd_edge", "msg_bwd_edge", "self")


class EdgeConv(nn.Module):
    """h_i' = relu(W_self h_i + sum_live (W_h h_j + W_x x_ij) / sqrt(deg_i deg_j)), both ways along
    every live edge (grle_jax.policies.gcn.EdgeConv: the node half once per node, then gathered)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.msg_fwd_node = nn.Linear(d_in, d_out, bias=False)
        self.msg_bwd_node = nn.Linear(d_in, d_out, bias=False)
        self.msg_fwd_edge = nn.Linear(EDGE_FEATURES, d_out)
        self.msg_bwd_edge = nn.Linear(EDGE_FEATURES, d_out)
        self.self_ = nn.Linear(d_in, d_out)

    def forward(self, h, x, norm, snd, rcv):  # h (G, V, F), x (G, Ed, 3), norm (G, Ed, 1)
        to_rcv = (self.msg_fwd_node(h)[..., snd, :] + self.msg_fwd_edge(x)) * norm
        to_snd = (self.msg_bwd_node(h)[..., rcv, :] + self.msg_bwd_edge(x)) * norm
        agg = h.new_zeros(h.shape[:-1] + (to_rcv.shape[-1],)).index_add(-2, rcv, to_rcv).index_add(-2, snd, to_snd)
        return torch.relu(self.self_(h) + agg)


def _gcn_norm(mask, V: int, snd, rcv):
    """Edge weights w / sqrt(deg_snd deg_rcv), deg = 1 + live degree (index_add over the edges)."""
    w = mask.to(torch.float32)
    deg = 1.0 + w.new_zeros(w.shape[:-1] + (V,)).index_add(-1, snd, w).index_add(-1, rcv, w)
    return (w * torch.rsqrt(deg[..., snd] * deg[..., rcv])).unsqueeze(-1)


class GCNNet(nn.Module):
    """GRLE's actor: two EdgeConv (128, 64), then the edge head relu(W_d h_dev + W_o h_opt + W_x x)
    -> 1 logit per device -> option edge (grle_jax.policies.gcn.GCNActor)."""

    def __init__(self, n: int, options: int, hidden=(128, 64), head: int = 64):
        super().__init__()
        dims = (NODE_FEATURES,) + tuple(hidden)
        self.convs = nn.ModuleList([EdgeConv(a, b) for a, b in zip(dims[:-1], dims[1:])])
        self.head_device = nn.Linear(dims[-1], head, bias=False)
        self.head_option = nn.Linear(dims[-1], head, bias=False)
        self.head_edge = nn.Linear(EDGE_FEATURES, head)
        self.out = nn.Linear(head, 1)
        snd, rcv = _edge_index(n, options)
        self.register_buffer("snd", snd, persistent=False)
        self.register_buffer("rcv", rcv, persistent=False)
        self.n, self.options = n, options

    def forward(self, nodes, edges, mask):  # (G, V, 9), (G, Ed, 3), (G, Ed) -> (G, N, P)
        snd, rcv = self.snd, self.rcv
        norm = _gcn_norm(mask, nodes.shape[-2], snd, rcv)
        h = nodes
        for conv in self.convs:
            h = conv(h, edges, norm, snd, rcv)
        z = torch.relu(self.head_device(h)[..., snd, :] + self.head_option(h)[..., rcv, :] + self.head_edge(edges))
        return self.out(z).squeeze(-1).unflatten(-1, (self.n, self.options))

    def load_flax(self, params: dict) -> None:
        """Copy weights from a ``grle_jax.policies.gcn.GCNActor`` parameter dict (numpy arrays)."""
        def put(lin, d):
            lin.weight.data.copy_(torch.as_tensor(np.asarray(d["kernel"])).T)
            if lin.bias is not None:
                lin.bias.data.copy_(torch.as_tensor(np.asarray(d["bias"])))
        for i, conv in enumerate(self.convs):
            for name in GCN_LAYERS:
                put(getattr(conv, name if name != "self" else "self_"), params[f"EdgeConv_{i}"][name])
        for name in ("head_device", "head_option", "head_edge"):
            put(getattr(self, name), params[name])
        put(self.out, params["Dense_0"])


def _acc_standardised(acc) -> np.ndarray:
    a = np.asarray(acc, np.float32)
    sd = a.std()
    return (a - a.mean()) / sd if sd > 0 else np.zeros_like(a)


def _loop_features(policy: str, p: MECParams, obs: dict, option_idx: list[int]):
    """numpy features of one observation (grle_jax.graph / policies.mlp): DROO (N*M,);
    GRLE (nodes (V, 9), edges (N*P, 3), edge mask (N*P,))."""
    L = np.asarray(obs["L"], bool)
    active = np.asarray(obs["active"], bool)
    r_hat = np.asarray(obs["r_hat"], np.float32)
    m_of = np.asarray(option_idx) // p.e
    live = L[:, m_of] & active[:, None]  # (N, P)
    if policy in ("droo", "drooe"):
        return (np.where(L, r_hat / p.rate_mbps[1], 0.0).astype(np.float32).reshape(-1),), live
    e_of = np.asarray(option_idx) % p.e
    D = p.deadline_ms
    s = np.asarray(obs["s"], np.float32)
    phi = np.asarray(obs["phi"], np.float32)
    es = np.asarray(obs["es"], np.float32)
    radio = np.asarray(obs["radio"], np.float32)
    n, P = p.n, len(option_idx)
    work = np.asarray(p.c, np.float32)[m_of, e_of] / phi[m_of]  # (P,)
    nodes = np.zeros((n + P, NODE_FEATURES), np.float32)
    nodes[:n, 0] = s / p.size_kb[1]
    nodes[:n, 1] = radio / D
    nodes[:n, 2] = active
    nodes[:n, 7] = 1.0
    nodes[n:, 3] = work / D
    nodes[n:, 4] = _acc_standardised(p.acc)[e_of]
    nodes[n:, 5] = es[m_of] / D
    nodes[n:, 6] = phi[m_of]
    nodes[n:, 8] = 1.0
    rate = r_hat[:, m_of]
    tx = s[:, None] * 8.0 / np.where(live, rate, 1.0)
    alone = np.maximum(radio[:, None] + tx, es[m_of][None, :]) + work[None, :]
    edges = np.stack([np.where(live, rate / p.rate_mbps[1], 0.0), np.where(live, tx / D, 0.0),
                      np.where(live, alone / D, 0.0)], -1).astype(np.float32)
    return (nodes, edges.reshape(n * P, EDGE_FEATURES), live.reshape(-1)), live


def loop_quantize(scores: np.ndarray, live: np.ndarray, k: int, logits: np.ndarray | None = None) -> list[list[int]]:
    """docs/model.md's one-hot order-preserving quantiser on one (N, P) score array -> up to k
    candidates in policy option space (-1 for a device with no live option). Pairs by increasing
    score gap; equal gaps by the gap in logits when given (as grle_jax.quantize), then by index."""
    masked = np.where(live, scores, -np.inf)
    best = masked.argmax(1)
    has = live.any(1)
    base = np.where(has, best, -1)
    cands = [base.tolist()]
    if k > 1:
        eligible = live.copy()
        eligible[np.arange(len(best)), best] = False
        gap = np.where(eligible, masked.max(1)[:, None] - scores, np.inf).reshape(-1)
        if logits is None:
            order = np.argsort(gap, kind="stable")[: k - 1]
        else:
            lgap = np.where(eligible, logits[np.arange(len(best)), best][:, None] - logits, np.inf).reshape(-1)
            order = np.lexsort((np.arange(gap.size), lgap, gap))[: k - 1]
        P = scores.shape[1]
        for flat in order:
            if not np.isfinite(gap[flat]):
                break
            c = list(cands[0])
            c[flat // P] = int(flat % P)
            cands.append(c)
    return cands


class LoopAgent:
    """One environment and its own learner, DROO's published structure: act on one sample, score
    the K candidates one by one, store the best, every ``train_every`` slots one Adam step."""

    def __init__(self, p: MECParams, policy: str, seed: int, k: int | None = None, memory: int = 128,
                 batch: int = 32, train_every: int = 10, lr: float = 1e-3):
        self.p, self.policy = p, policy
        self.env = LoopEnv(p, seed)
        self.option_idx = policy_option_index(policy, p)
        P = len(self.option_idx)
        torch.manual_seed(seed)
        if policy in ("droo", "drooe"):
            self.net = DROONet(p.n, p.m, P)
        else:
            self.net = GCNNet(p.n, P)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.k = k if k is not None else p.n
        self.memory, self.batch, self.train_every = memory, batch, train_every
        self.mem_x: list | None = None
        self.mem_y = np.zeros((memory, p.n, P), np.float32)
        self.mem_live = np.zeros((memory, p.n, P), bool)
        self.count = 0

    def _forward(self, feats):
        return self.net(*feats)

    def slot(self) -> float:
        p, env = self.p, self.env
        x = env.sample()
        obs = env.observe(x)
        feats, live = _loop_features(self.policy, p, obs, self.option_idx)
        with torch.no_grad():
            logits = self._forward(tuple(torch.from_numpy(f)[None] for f in feats))[0]
            scores = torch.sigmoid(logits).numpy()
        cands = loop_quantize(scores, live, self.k, logits.numpy())
        idx = self.option_idx
        best_r, best = -math.inf, None
        for cand in cands:
            dec = [idx[o] if o >= 0 else -1 for o in cand]
            r = loop_score(p, obs, dec)
            if r > best_r:
                best_r, best, best_cand = r, dec, cand
        out = env.step(x, best)
        # replay memory
        if self.mem_x is None:
            self.mem_x = [np.zeros((self.memory,) + f.shape, f.dtype) for f in feats]
        row = self.count % self.memory
        for buf, f in zip(self.mem_x, feats):
            buf[row] = f
        y = self.mem_y[row]
        y[:] = 0.0
        for i, o in enumerate(best_cand):
            if o >= 0:
                y[i, o] = 1.0
        self.mem_live[row] = live
        self.count += 1
        if self.count % self.train_every == 0:
            self.learn()
        return out["reward"]

    def learn(self) -> float:
        filled = min(self.count, self.memory)
        rows = self.env.rng.integers(0, filled, self.batch)
        feats = tuple(torch.from_numpy(buf[rows]) for buf in self.mem_x)
        y = torch.from_numpy(self.mem_y[rows])
        live = torch.from_numpy(self.mem_live[rows]).float()
        logits = self._forward(feats)
        bce = nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
        loss = (bce * live).sum() / live.sum().clamp_min(1.0)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def run(self, slots: int) -> float:
        return sum(self.slot() for _ in range(slots))


# ================================================================================================
# (b) Batched over environments, eager tensors
# ================================================================================================
class _Table:
    """The exit table as tensors on a device (cached per (params, device))."""

    _cache: dict = {}

    def __init__(self, p: MECParams, device):
        self.c_flat = torch.tensor(p.c, dtype=torch.float32, device=device).reshape(-1)  # (M*E,)
        self.acc_opt = torch.tensor(p.acc, dtype=torch.float32, device=device).repeat(p.m)  # (M*E,)
        self.es_ids = torch.arange(p.m, device=device).view(p.m, 1)

    @classmethod
    def get(cls, p: MECParams, device) -> "_Table":
        key = (p, str(device))
        if key not in cls._cache:
            cls._cache[key] = cls(p, device)
        return cls._cache[key]


def batched_slot_outcome(p: MECParams, radio0, es0, s, rate, phi, eps, L, has_task, option,
                         fcfs: str = "sort") -> dict:
    """One slot for a batch: every argument has the same leading dims ``...`` (e.g. (B,) or
    (B, K); use ``expand`` views to share an observation across candidates): radio0 (..., N),
    es0 (..., M), s (..., N), rate (..., N, M), phi (..., M), eps (..., N), L (..., N, M) bool,
    has_task (..., N) bool, option (..., N) int. Returns A, S, F (raw: meaningless where not
    ``served``), ok, acc, served, reward (...,), radio_after (..., N), es_after (..., M)."""
    tab = _Table.get(p, option.device)
    E, D = p.e, p.deadline_ms
    abort = p.overdue == "abort"
    in_range = (option >= 0) & (option < p.options)
    opt = option.clamp(0, p.options - 1)
    m = torch.div(opt, E, rounding_mode="floor")
    mi = m.unsqueeze(-1)
    served = has_task & in_range & L.gather(-1, mi).squeeze(-1)
    start = radio0.clamp_min(0.0)
    A = start + s * 8.0 / rate.gather(-1, mi).squeeze(-1)
    phi_m = phi.gather(-1, m)
    w_full = tab.c_flat[opt] * eps / phi_m
    counts = served & (A < D) if abort else served
    w = torch.where(counts, w_full, 0.0)
    x0 = es0.clamp_min(0.0)

    if fcfs == "sort":
        # per ES (..., M, N): this ES's tasks sorted by arrival (stable: ties by device index),
        # others pushed to the end with A = inf; then the max-plus closed form along the sort.
        on = (m.unsqueeze(-2) == tab.es_ids) & served.unsqueeze(-2)
        key = torch.where(on, A.unsqueeze(-2), math.inf)
        ks, order = torch.sort(key, dim=-1, stable=True)
        cnt = (on & counts.unsqueeze(-2)).gather(-1, order)
        ws = torch.where(cnt, w.unsqueeze(-2).expand_as(key).gather(-1, order), 0.0)
        cum = ws.cumsum(-1)
        cumx = cum - ws
        run = torch.where(cnt, ks - cumx, -math.inf).cummax(-1).values
        x0c = x0.unsqueeze(-1)
        X = cumx + torch.maximum(x0c, run)  # S of a counting task (>= its A)
        Ss = torch.where(cnt, X.clamp_max(D) if abort else X, ks)
        S = torch.empty_like(Ss).scatter_(-1, order, Ss).gather(-2, m.unsqueeze(-2)).squeeze(-2)
        es_after = cum[..., -1] + torch.maximum(x0, run[..., -1])
        if abort:
            es_after = torch.where(cnt.any(-1), es_after.clamp_max(D), x0)
    elif fcfs == "pairwise":
        n = m.shape[-1]
        rows = torch.arange(n, device=m.device)
        same = (m.unsqueeze(-1) == m.unsqueeze(-2)) & served.unsqueeze(-1) & served.unsqueeze(-2)
        Ai, Aj = A.unsqueeze(-1), A.unsqueeze(-2)
        earlier = (Aj < Ai) | ((Aj == Ai) & (rows.view(1, n) < rows.view(n, 1)))
        before = same & earlier
        cumx = (before * w.unsqueeze(-2)).sum(-1)
        lead = torch.where(before & counts.unsqueeze(-2), (A - cumx).unsqueeze(-2), -math.inf).amax(-1)
        free = cumx + torch.maximum(x0.gather(-1, m), lead)
        if abort:
            free = free.clamp_max(D)
        S = torch.maximum(A, free)
        on_es = (m.unsqueeze(-2) == tab.es_ids) & counts.unsqueeze(-2)  # (..., M, N)
        tot = (on_es * w.unsqueeze(-2)).sum(-1)
        lead_es = torch.where(on_es, (A - cumx).unsqueeze(-2), -math.inf).amax(-1)
        es_after = tot + torch.maximum(x0, lead_es)
        if abort:
            es_after = torch.where(on_es.any(-1), es_after.clamp_max(D), x0)
    else:
        raise ValueError(f"fcfs must be 'sort' or 'pairwise', got {fcfs!r}")

    F = S + w_full
    ok = served & (F <= D)
    achieved = torch.where(ok, tab.acc_opt[opt], 0.0)
    reward = achieved.sum(-1)
    if p.rho:
        late = served & ~ok
        reward = reward - torch.where(late, p.rho * torch.sigmoid((F - D) / D), 0.0).sum(-1)
        reward = reward - p.rho * (has_task & ~served).sum(-1)
    if abort:
        radio_after = torch.where(served, A.clamp_max(D), start)
    else:
        radio_after = torch.where(served, A, start)
    return {"A": A, "S": S, "F": F, "latency": F, "ok": ok, "acc": achieved, "served": served,
            "reward": reward, "radio_after": radio_after, "es_after": es_after}


def batched_score(p: MECParams, obs: dict, options: torch.Tensor, fcfs: str = "sort") -> torch.Tensor:
    """R on observed values of K candidate decisions per environment: options (B, K, N) -> (B, K)."""
    B, K, N = options.shape
    M = p.m

    def kx(t, *tail):
        return t.unsqueeze(1).expand(B, K, *tail)

    return batched_slot_outcome(
        p, kx(obs["radio"], N), kx(obs["es"], M), kx(obs["s"], N), kx(obs["r_hat"], N, M),
        kx(obs["phi"], M), torch.ones((), device=options.device).expand(B, K, N), kx(obs["L"], N, M),
        kx(obs["active"], N), options, fcfs,
    )["reward"]


class BatchedEnv:
    """B environments as tensors; sampling writes into preallocated buffers."""

    def __init__(self, p: MECParams, batch: int, seed: int, device="cpu", fcfs: str = "sort"):
        self.p, self.B, self.device, self.fcfs = p, batch, torch.device(device), fcfs
        self.gen = torch.Generator(self.device).manual_seed(seed)
        B, N, M = batch, p.n, p.m
        z = lambda *shape: torch.zeros(shape, device=self.device)  # noqa: E731
        self.s, self.r, self.r_hat, self.csi = z(B, N), z(B, N, M), z(B, N, M), z(B, N, M)
        self.phi, self.eps = z(B, M), z(B, N)
        self.u_link, self.u_act = z(B, N, M), z(B, N)
        self.L = torch.ones((B, N, M), dtype=torch.bool, device=self.device)
        self.active = torch.ones((B, N), dtype=torch.bool, device=self.device)
        self.radio, self.es = z(B, N), z(B, M)
        self.u_dev = z(B, N)
        self.t = 0

    def sample(self) -> None:
        p, g = self.p, self.gen
        self.s.uniform_(*p.size_kb, generator=g)
        self.r.uniform_(*p.rate_mbps, generator=g)
        torch.mul(self.r, self.csi.uniform_(*p.csi_range, generator=g), out=self.r_hat)
        self.phi.uniform_(*p.phi_range, generator=g)
        self.eps.uniform_(*p.eps_range, generator=g)
        if self.t % p.topology_every == 0:
            torch.lt(self.u_link.uniform_(generator=g), p.p_link, out=self.L)
            torch.lt(self.u_act.uniform_(generator=g), p.p_active, out=self.active)

    def obs(self) -> dict:
        return {"s": self.s, "r_hat": self.r_hat, "phi": self.phi, "L": self.L, "active": self.active,
                "radio": self.radio, "es": self.es}

    def step(self, option: torch.Tensor) -> dict:
        out = batched_slot_outcome(self.p, self.radio, self.es, self.s, self.r, self.phi, self.eps,
                                   self.L, self.active, option, self.fcfs)
        T = self.p.slot_ms
        torch.clamp_min(out["radio_after"] - T, 0.0, out=self.radio)
        torch.clamp_min(out["es_after"] - T, 0.0, out=self.es)
        self.t += 1
        return out

    def random_decision(self) -> torch.Tensor:
        """A uniformly random reachable option per active device (-1 where none): with one uniform
        u per device, j = floor(u * count) picks the j-th reachable option; since the reachable
        options are (reachable ES) x (every exit), that is exit j % E of the (j // E)-th
        reachable ES, found over the M links, not over all M*E options."""
        E = self.p.e
        count = self.L.sum(-1)  # (B, N) reachable ES
        j = torch.minimum((self.u_dev.uniform_(generator=self.gen) * (count * E)).long(), (count * E - 1).clamp_min(0))
        k = torch.div(j, E, rounding_mode="floor")
        m = (self.L & (self.L.cumsum(-1) - 1 == k.unsqueeze(-1))).byte().argmax(-1)
        return torch.where(self.active & (count > 0), m * E + j % E, -1)

    @torch.no_grad()
    def run_random(self, slots: int) -> torch.Tensor:
        tot = torch.zeros(self.B, device=self.device)
        for _ in range(slots):
            self.sample()
            tot += self.step(self.random_decision())["reward"]
        return tot


def quantize_batched(scores: torch.Tensor, live: torch.Tensor, k: int,
                     logits: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """scores, live (B, N, P) -> candidates (B, k, N) in policy option space (-1: none), valid (B, k).
    Pairs by increasing score gap; equal gaps by the gap in logits when given, then by index
    (two stable sorts, least significant key first)."""
    B, N, P = scores.shape
    masked = scores.masked_fill(~live, -math.inf)
    best_score, best = masked.max(-1)  # first maximum
    base = torch.where(live.any(-1), best, -1)
    cands = base.unsqueeze(1).repeat(1, k, 1)
    valid = torch.ones((B, k), dtype=torch.bool, device=scores.device)
    if k > 1:
        eligible = live & (torch.arange(P, device=scores.device) != best.unsqueeze(-1))
        gap = torch.where(eligible, best_score.unsqueeze(-1) - scores, math.inf).view(B, N * P)
        if logits is None:
            order = torch.sort(gap, dim=-1, stable=True).indices
        else:
            best_logit = logits.gather(-1, best.unsqueeze(-1))
            lgap = torch.where(eligible, best_logit - logits, math.inf).view(B, N * P)
            first = torch.sort(lgap, dim=-1, stable=True).indices
            order = first.gather(-1, torch.sort(gap.gather(-1, first), dim=-1, stable=True).indices)
        order = order[:, : k - 1]
        dev = torch.div(order, P, rounding_mode="floor")
        cands[:, 1:].scatter_(-1, dev.unsqueeze(-1), (order % P).unsqueeze(-1))
        valid[:, 1:] = eligible.view(B, N * P).gather(-1, order)
    return cands, valid


def _stacked_linear(B: int, d_in: int, d_out: int, gen, device, bias: bool = True) -> list[torch.Tensor]:
    """B independent nn.Linear-initialised layers: W (B, in, out), b (B, 1, out) (or no bias)."""
    bound = 1.0 / math.sqrt(d_in)
    W = ((torch.rand((B, d_in, d_out), generator=gen, device=device) * 2 - 1) * bound).requires_grad_()
    if not bias:
        return [W]
    b = ((torch.rand((B, 1, d_out), generator=gen, device=device) * 2 - 1) * bound).requires_grad_()
    return [W, b]


def _dense(x, layer):  # x (B, ..., in) with B agents' weights -> (B, ..., out)
    B = x.shape[0]
    x2 = x.reshape(B, -1, x.shape[-1])
    y = torch.baddbmm(layer[1], x2, layer[0]) if len(layer) == 2 else torch.bmm(x2, layer[0])
    return y.view(*x.shape[:-1], layer[0].shape[-1])


class BatchedAgent:
    """B environments and B independent learners, all as stacked tensors (no loop over agents)."""

    def __init__(self, p: MECParams, policy: str, batch: int, seed: int, device="cpu", k: int | None = None,
                 memory: int = 128, minibatch: int = 32, train_every: int = 10, lr: float = 1e-3,
                 fcfs: str = "sort"):
        self.p, self.policy, self.B = p, policy, batch
        self.env = BatchedEnv(p, batch, seed, device, fcfs)
        dev = self.env.device
        self.dev, self.fcfs = dev, fcfs
        idx = policy_option_index(policy, p)
        self.P = len(idx)
        self.option_idx = torch.tensor(idx, device=dev)
        self.m_of = torch.div(self.option_idx, p.e, rounding_mode="floor")
        self.e_of = self.option_idx % p.e
        self.k = k if k is not None else p.n
        self.memory, self.minibatch, self.train_every = memory, minibatch, train_every
        g = torch.Generator(dev).manual_seed(seed + 1)
        B, N, M, P = batch, p.n, p.m, self.P
        self.gcn = policy in ("grl", "grle")
        if not self.gcn:
            dims = (N * M, 120, 80, N * P)
            self.layers = [_stacked_linear(B, a, b, g, dev) for a, b in zip(dims[:-1], dims[1:])]
            feat_shapes = [(N * M,)]
        else:
            dims = (NODE_FEATURES, 128, 64)
            lin = lambda a, b_, bias=True: _stacked_linear(B, a, b_, g, dev, bias)  # noqa: E731
            self.convs = [{"msg_fwd_node": lin(a, b_, False), "msg_bwd_node": lin(a, b_, False),
                           "msg_fwd_edge": lin(EDGE_FEATURES, b_), "msg_bwd_edge": lin(EDGE_FEATURES, b_),
                           "self": lin(a, b_)} for a, b_ in zip(dims[:-1], dims[1:])]
            self.head = {"head_device": lin(dims[-1], 64, False), "head_option": lin(dims[-1], 64, False),
                         "head_edge": lin(EDGE_FEATURES, 64), "Dense_0": lin(64, 1)}
            self.layers = [lay for c in self.convs for lay in c.values()] + list(self.head.values())
            snd, rcv = _edge_index(N, P)
            self.snd, self.rcv = snd.to(dev), rcv.to(dev)
            tab = _Table.get(p, dev)
            self.c_opt = tab.c_flat[self.option_idx]  # (P,)
            self.acc_z = torch.as_tensor(_acc_standardised(p.acc), device=dev)[self.e_of]
            feat_shapes = [(N + P, NODE_FEATURES), (N * P, EDGE_FEATURES), (N * P,)]
        self.params = [t for lay in self.layers for t in lay]
        try:
            self.opt = torch.optim.Adam(self.params, lr=lr, fused=True)
        except (RuntimeError, TypeError):  # pragma: no cover - fused Adam unavailable on this device
            self.opt = torch.optim.Adam(self.params, lr=lr, foreach=True)
        self.mem_x = [torch.zeros((B, memory) + s_, device=dev) for s_ in feat_shapes]
        if self.gcn:
            self.mem_x[2] = self.mem_x[2].bool()
        self.mem_y = torch.zeros((B, memory, N, P), device=dev)
        self.mem_live = torch.zeros((B, memory, N, P), dtype=torch.bool, device=dev)
        self.ar = torch.arange(B, device=dev)
        self.count = 0
        self.gen = g

    # --- networks -------------------------------------------------------------------------------
    def features(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        env, p = self.env, self.p
        live = env.L[..., self.m_of] & env.active.unsqueeze(-1)  # (B, N, P)
        if not self.gcn:
            return [torch.where(env.L, env.r_hat / p.rate_mbps[1], 0.0).flatten(1)], live
        B, N, P, D = self.B, p.n, self.P, p.deadline_ms
        phi_o = env.phi[:, self.m_of]  # (B, P)
        es_o = env.es[:, self.m_of]
        work = self.c_opt / phi_o  # (B, P)
        f = env.s.new_zeros((B, N + P, NODE_FEATURES))
        f[:, :N, 0] = env.s / p.size_kb[1]
        f[:, :N, 1] = env.radio / D
        f[:, :N, 2] = env.active
        f[:, :N, 7] = 1.0
        f[:, N:, 3] = work / D
        f[:, N:, 4] = self.acc_z
        f[:, N:, 5] = es_o / D
        f[:, N:, 6] = phi_o
        f[:, N:, 8] = 1.0
        rate = env.r_hat[..., self.m_of]  # (B, N, P)
        tx = env.s.unsqueeze(-1) * 8.0 / torch.where(live, rate, 1.0)
        alone = torch.maximum(env.radio.unsqueeze(-1) + tx, es_o.unsqueeze(1)) + work.unsqueeze(1)
        x = torch.stack([torch.where(live, rate / p.rate_mbps[1], 0.0), torch.where(live, tx / D, 0.0),
                         torch.where(live, alone / D, 0.0)], -1)
        return [f, x.view(B, N * P, EDGE_FEATURES), live.view(B, N * P)], live

    def forward(self, feats) -> torch.Tensor:
        """Stacked features (B, G, ...) -> logits (B, G, N, P)."""
        N, P = self.p.n, self.P
        if not self.gcn:
            (x,) = feats
            for i, lay in enumerate(self.layers):
                x = _dense(x, lay)
                if i < len(self.layers) - 1:
                    x = torch.relu(x)
            return x.unflatten(-1, (N, P))
        h, x, mask = feats
        snd, rcv = self.snd, self.rcv
        norm = _gcn_norm(mask, h.shape[-2], snd, rcv)  # (B, G, Ed, 1)
        for c in self.convs:
            to_rcv = (_dense(h, c["msg_fwd_node"])[..., snd, :] + _dense(x, c["msg_fwd_edge"])) * norm
            to_snd = (_dense(h, c["msg_bwd_node"])[..., rcv, :] + _dense(x, c["msg_bwd_edge"])) * norm
            agg = h.new_zeros(h.shape[:-1] + (to_rcv.shape[-1],)).index_add(-2, rcv, to_rcv).index_add(-2, snd, to_snd)
            h = torch.relu(_dense(h, c["self"]) + agg)
        hd = self.head
        z = torch.relu(_dense(h, hd["head_device"])[..., snd, :] + _dense(h, hd["head_option"])[..., rcv, :]
                       + _dense(x, hd["head_edge"]))
        return _dense(z, hd["Dense_0"]).squeeze(-1).unflatten(-1, (N, P))

    def load_flax(self, params: dict, agent: int = 0) -> None:
        """Copy agent ``agent``'s weights from a flax parameter dict (numpy arrays): GCNActor's
        names for GRLE, DROOActor's Dense_0..2 for DROO."""
        def put(lay, d):
            with torch.no_grad():
                lay[0][agent].copy_(torch.as_tensor(np.asarray(d["kernel"])))
                if len(lay) == 2:
                    lay[1][agent, 0].copy_(torch.as_tensor(np.asarray(d["bias"])))
        if not self.gcn:
            for i, lay in enumerate(self.layers):
                put(lay, params[f"Dense_{i}"])
            return
        for i, c in enumerate(self.convs):
            for name, lay in c.items():
                put(lay, params[f"EdgeConv_{i}"][name])
        for name, lay in self.head.items():
            put(lay, params[name])

    # --- one slot -------------------------------------------------------------------------------
    def slot(self) -> torch.Tensor:
        env, B = self.env, self.B
        with torch.no_grad():
            env.sample()
            feats, live = self.features()
            logits = self.forward([f.unsqueeze(1) for f in feats]).squeeze(1)
            cands, valid = quantize_batched(torch.sigmoid(logits), live, self.k, logits)  # (B, K, N)
            env_opts = torch.where(cands >= 0, self.option_idx[cands.clamp_min(0)], -1)
            R = batched_score(self.p, env.obs(), env_opts, self.fcfs).masked_fill_(~valid, -math.inf)
            k_best = R.argmax(-1)  # first maximum
            decision = env_opts[self.ar, k_best]
            out = env.step(decision)
            row = self.count % self.memory
            for buf, f in zip(self.mem_x, feats):
                buf[:, row] = f
            best_cand = cands[self.ar, k_best]  # (B, N) policy space
            y = self.mem_y[:, row]
            y.zero_()
            y.scatter_(-1, best_cand.clamp_min(0).unsqueeze(-1), (best_cand >= 0).unsqueeze(-1).float())
            self.mem_live[:, row] = live
        self.count += 1
        if self.count % self.train_every == 0:
            self.learn()
        return out["reward"]

    def learn(self) -> torch.Tensor:
        filled = min(self.count, self.memory)
        rows = torch.randint(0, filled, (self.B, self.minibatch), generator=self.gen, device=self.dev)
        ar = self.ar.unsqueeze(-1)
        feats = [buf[ar, rows] for buf in self.mem_x]
        y = self.mem_y[ar, rows]
        live = self.mem_live[ar, rows].float()
        logits = self.forward(feats)  # (B, batch, N, P)
        bce = nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
        per_agent = (bce * live).sum((1, 2, 3)) / live.sum((1, 2, 3)).clamp_min(1.0)
        loss = per_agent.sum()  # agents are independent: each gets the gradient of its own mean
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()

    def run(self, slots: int) -> torch.Tensor:
        tot = torch.zeros(self.B, device=self.dev)
        for _ in range(slots):
            tot += self.slot()
        return tot
