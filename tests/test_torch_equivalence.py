"""The PyTorch reference (benchmarks/torch_reference.py) does the same work as grle_jax.

Both implementations get the same slot inputs and decisions over several slots, each carrying its
own queues, under both overdue rules, with links down, inactive devices, failing decisions (-1 or
an unreachable ES) and rho > 0; they must give the same outcomes (A, S, F, latency, ok, achieved
accuracy), rewards and queues within 1e-3 ms, and the same scores for K candidate decisions.
Checked for both torch forms: the one-environment Python loop and the batched tensors (both of
its FCFS variants, sort-based and pairwise). Skipped when torch is absent.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks import torch_reference as tr  # noqa: E402
from grle_jax.config import Config  # noqa: E402
from grle_jax.dynamics import score, step  # noqa: E402
from grle_jax.profile import DEFAULT_PROFILE  # noqa: E402
from grle_jax.types import EnvState, Observation, SlotInputs  # noqa: E402

TOL = 1e-3  # ms, and reward units
B, SLOTS, K = 12, 8, 16


def make_cfg(overdue: str, rho: float, slot_ms: float) -> Config:
    return Config.for_scenario("csi", overdue=overdue, rho=rho, slot_ms=slot_ms, p_link=0.7, p_active=0.8)


def torch_params(cfg: Config) -> tr.MECParams:
    return tr.MECParams.from_config_dict(cfg.to_dict(), DEFAULT_PROFILE.acc_array().tolist(),
                                         DEFAULT_PROFILE.c_matrix(cfg.servers).tolist())


def draw_slots(cfg: Config, seed: int):
    """SLOTS slots of inputs for B environments (float32-exact), and decisions that include
    unreachable ES and -1 (those tasks fail)."""
    rng = np.random.default_rng(seed)
    N, M, E = cfg.devices, cfg.servers, DEFAULT_PROFILE.n_exits
    f32 = np.float32
    out = []
    for _ in range(SLOTS):
        r = rng.uniform(*cfg.rate_mbps, (B, N, M)).astype(f32)
        x = {
            "s": rng.uniform(*cfg.size_kb, (B, N)).astype(f32),
            "r": r,
            "r_hat": (r * rng.uniform(*cfg.csi_range, (B, N, M))).astype(f32),
            "phi": rng.uniform(*cfg.phi_range, (B, M)).astype(f32),
            "eps": rng.uniform(*cfg.eps_range, (B, N)).astype(f32),
            "L": rng.random((B, N, M)) < cfg.p_link,
            "active": rng.random((B, N)) < cfg.p_active,
        }
        option = rng.integers(0, M * E, (B, N))
        option[rng.random((B, N)) < 0.05] = -1
        x["option"] = option.astype(np.int32)
        x["cands"] = rng.integers(-1, M * E, (B, K, N)).astype(np.int32)
        out.append(x)
    return out


_JAX_RUNS: dict = {}


def _jax_runner(static):
    """One compiled program per static shape / overdue rule: a scan over the slots, vmapped over
    the environments; the params (rho, slot length, ...) are an argument, so cases share it."""
    if static not in _JAX_RUNS:
        def run(params, xs):
            def body(state, x):
                inp = SlotInputs(s=x["s"], r=x["r"], r_hat=x["r_hat"], phi=x["phi"], eps=x["eps"], L=x["L"],
                                 active=x["active"])
                obs = Observation(s=x["s"], r_hat=x["r_hat"], phi=x["phi"], L=x["L"], active=x["active"],
                                  radio=state.radio, es=state.es)
                cand = score(static, params, obs, x["cands"])
                state, out = step(static, params, state, inp, x["option"])
                return state, (out, cand)

            N, M = static.n, static.m
            state0 = EnvState(t=jnp.zeros((), jnp.int32), radio=jnp.zeros((N,)), es=jnp.zeros((M,)),
                              L=jnp.ones((N, M), bool), active=jnp.ones((N,), bool))
            return jax.lax.scan(body, state0, xs)[1]

        _JAX_RUNS[static] = jax.jit(jax.vmap(run, in_axes=(None, 1), out_axes=1))
    return _JAX_RUNS[static]


def jax_run(cfg: Config, slots):
    keys = ("s", "r", "r_hat", "phi", "eps", "L", "active", "option", "cands")
    xs = {k: jnp.asarray(np.stack([x[k] for x in slots])) for k in keys}  # (SLOTS, B, ...)
    out, cand = _jax_runner(cfg.static())(cfg.params(), xs)
    fields = ("A", "S", "F", "latency", "ok", "acc", "served", "reward", "radio_after", "es_after")
    arrs = {k: np.asarray(getattr(out, k)) for k in fields}
    cand = np.asarray(cand)
    return [{k: v[t] for k, v in arrs.items()} | {"cand": cand[t]} for t in range(len(slots))]


def torch_batched_run(p: tr.MECParams, slots, fcfs: str):
    env = tr.BatchedEnv(p, B, 0, fcfs=fcfs)
    res = []
    with torch.no_grad():
        for x in slots:
            for k in ("s", "r", "r_hat", "phi", "eps", "L", "active"):
                getattr(env, k).copy_(torch.from_numpy(np.asarray(x[k])))
            cand = tr.batched_score(p, env.obs(), torch.from_numpy(x["cands"]).long(), fcfs)
            out = env.step(torch.from_numpy(x["option"]).long())
            r = {k: v.numpy().copy() for k, v in out.items()}
            srv = r["served"]
            for k in ("A", "S", "F", "latency"):
                r[k] = np.where(srv, r[k], np.nan)
            r["cand"] = cand.numpy()
            res.append(r)
    return res


def torch_loop_run(p: tr.MECParams, slots):
    res = []
    envs = [tr.LoopEnv(p, i) for i in range(B)]
    for x in slots:
        per = []
        for b, env in enumerate(envs):
            xb = {k: np.asarray(x[k][b]).astype(np.float64) if x[k].dtype == np.float32 else np.asarray(x[k][b])
                  for k in ("s", "r", "r_hat", "phi", "eps", "L", "active")}
            obs = env.observe(xb)
            cand = [tr.loop_score(p, obs, c.tolist()) for c in x["cands"][b]]
            out = env.step(xb, x["option"][b].tolist())
            per.append((out, cand))
        r = {}
        for k in ("A", "S", "F", "latency"):
            r[k] = np.array([[np.nan if v is None else v for v in o[k]] for o, _ in per])
        for k in ("ok", "served"):
            r[k] = np.array([o[k] for o, _ in per])
        for k in ("acc", "radio_after", "es_after"):
            r[k] = np.array([o[k] for o, _ in per], np.float64)
        r["reward"] = np.array([o["reward"] for o, _ in per])
        r["cand"] = np.array([c for _, c in per])
        res.append(r)
    return res


def assert_same(ref, got, D: float, what: str):
    for t, (a, b) in enumerate(zip(ref, got)):
        where = f"{what}, slot {t}"
        np.testing.assert_array_equal(a["served"], b["served"], err_msg=where)
        for k in ("A", "S", "F", "latency"):
            np.testing.assert_allclose(b[k], a[k], atol=TOL, rtol=0, equal_nan=True, err_msg=f"{where}: {k}")
        # ok may legitimately differ only for a task finishing within float noise of the deadline
        near = np.abs(np.nan_to_num(a["F"], nan=-1e9) - D) < TOL
        np.testing.assert_array_equal(np.where(near, False, a["ok"]), np.where(near, False, b["ok"]),
                                      err_msg=f"{where}: ok")
        assert not near.any(), f"{where}: a finish time within {TOL} ms of the deadline; pick another seed"
        for k in ("acc", "reward", "radio_after", "es_after", "cand"):
            np.testing.assert_allclose(b[k], a[k], atol=TOL, rtol=0, err_msg=f"{where}: {k}")


CASES = [
    ("abort", 0.0, 20.0),
    ("abort", 0.5, 10.0),
    ("keep", 0.5, 20.0),
    ("keep", 0.0, 10.0),
]


@pytest.mark.parametrize("overdue,rho,slot_ms", CASES)
def test_torch_matches_jax(overdue, rho, slot_ms):
    cfg = make_cfg(overdue, rho, slot_ms)
    p = torch_params(cfg)
    slots = draw_slots(cfg, seed=CASES.index((overdue, rho, slot_ms)))
    ref = jax_run(cfg, slots)
    # the case exercises what it claims to: failures, drops / overload and carried queues
    served = np.concatenate([r["served"] for r in ref])
    assert served.any() and not served.all()
    assert any((r["es_after"] > slot_ms).any() for r in ref), "no ES backlog carried to the next slot"
    assert any((r["radio_after"] > slot_ms).any() for r in ref), "no radio backlog carried"
    late = np.concatenate([r["served"] & ~r["ok"] for r in ref])
    assert late.any(), "no late task"
    for fcfs in ("sort", "pairwise"):
        assert_same(ref, torch_batched_run(p, slots, fcfs), cfg.deadline_ms, f"batched/{fcfs}")
    assert_same(ref, torch_loop_run(p, slots), cfg.deadline_ms, "loop")


@pytest.mark.parametrize("with_logits", [False, True])
def test_quantizer_matches(with_logits):
    """The batched and the loop quantiser give grle_jax.quantize's candidates, ties included."""
    from grle_jax.quantize import quantize

    rng = np.random.default_rng(3)
    Bq, N, P, k = 8, 14, 10, 20
    logits = rng.normal(0, 3, (Bq, N, P)).astype(np.float32)
    logits[0, :3, :] = 40.0  # saturated sigmoid: equal scores, different logits
    logits[0, :3, 1] = 45.0
    logits[3, 0, :] = 0.0  # exact ties everywhere
    scores = np.array(jax.nn.sigmoid(jnp.asarray(logits)))
    live = rng.random((Bq, N, P)) < 0.7
    live[1, 2, :] = False  # a device with no live option
    lg = logits if with_logits else None
    cands, valid = tr.quantize_batched(torch.from_numpy(scores), torch.from_numpy(live), k,
                                       None if lg is None else torch.from_numpy(lg))
    for b in range(Bq):
        loop = tr.loop_quantize(scores[b], live[b], k, None if lg is None else lg[b])
        assert cands[b, :int(valid[b].sum())].tolist() == loop
    jc, jv = jax.vmap(lambda s, l, g: quantize(s, l, k, g if with_logits else None))(
        jnp.asarray(scores), jnp.asarray(live), jnp.asarray(logits))
    np.testing.assert_array_equal(np.asarray(jv), valid.numpy())
    np.testing.assert_array_equal(np.where(np.asarray(jv)[..., None], np.asarray(jc), 0),
                                  np.where(valid.numpy()[..., None], cands.numpy(), 0))


@pytest.mark.parametrize("policy", ["droo", "grle"])
def test_networks_match(policy):
    """Same weights, same observation -> the same logits from grle_jax's flax actor, the loop
    form's nn.Module and the batched form's stacked tensors (features included)."""
    from grle_jax.agent import AgentConfig
    from grle_jax.policies import make_actor

    cfg = make_cfg("abort", 0.0, 20.0)
    static, params = cfg.static(), cfg.params()
    p = torch_params(cfg)
    G = 4
    x = draw_slots(cfg, seed=7)[0]
    rng = np.random.default_rng(8)
    radio = rng.uniform(0, 12, (B, cfg.devices)).astype(np.float32)
    es = rng.uniform(0, 12, (B, cfg.servers)).astype(np.float32)
    obs = Observation(s=x["s"][:G], r_hat=x["r_hat"][:G], phi=x["phi"][:G], L=x["L"][:G],
                      active=x["active"][:G], radio=radio[:G], es=es[:G])
    actor = make_actor(static, AgentConfig(policy=policy).static(static))
    variables = jax.jit(actor.init)(jax.random.key(0), jax.tree_util.tree_map(lambda a: a[0], obs), params)
    want = np.asarray(jax.jit(jax.vmap(actor.apply, in_axes=(None, 0, None)))(variables, obs, params))  # (G, N, P)
    flax_params = jax.tree_util.tree_map(np.asarray, variables["params"])

    batched = tr.BatchedAgent(p, policy, batch=G, seed=0)
    for b in range(G):
        batched.load_flax(flax_params, b)
    env = batched.env
    for name in ("s", "r_hat", "phi", "L", "active", "radio", "es"):
        getattr(env, name).copy_(torch.from_numpy(np.asarray(getattr(obs, name))))
    feats, _ = batched.features()
    with torch.no_grad():
        got = batched.forward([f.unsqueeze(1) for f in feats]).squeeze(1).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)

    loop = tr.LoopAgent(p, policy, seed=0)
    loop.net.load_flax(flax_params)
    for b in range(G):
        ob = {k: np.asarray(getattr(obs, k))[b].tolist() for k in ("s", "r_hat", "phi", "L", "active", "radio", "es")}
        f, _ = tr._loop_features(policy, p, ob, loop.option_idx)
        with torch.no_grad():
            got_b = loop.net(*(torch.from_numpy(np.asarray(a))[None] for a in f))[0].numpy()
        np.testing.assert_allclose(got_b, want[b], atol=1e-4, rtol=1e-4)


def test_agents_run():
    """Both torch forms of DROO and GRLE play and learn a few slots without error."""
    p = tr.MECParams(p_link=0.8)
    for policy in ("droo", "grle"):
        a = tr.LoopAgent(p, policy, seed=0, k=4, train_every=2, batch=4)
        assert math.isfinite(a.run(2))
        b = tr.BatchedAgent(p, policy, batch=3, seed=0, k=4, train_every=2, minibatch=4)
        before = [t.detach().clone() for t in b.params]
        assert torch.isfinite(b.run(2)).all()
        assert any(not torch.equal(x, y) for x, y in zip(before, b.params)), "no learning step happened"
