"""Simulator throughput: env-slots per second and candidate evaluations per second.

    python -m benchmarks.sim_throughput [--devices 14] [--servers 2] [--reps 5] [--slots 200]

- env-slots/s: ``jit(vmap(scan(sample -> random decision -> step)))`` over B environments for
  ``--slots`` slots, B in 1, 64, 1024, 8192.
- candidate evaluations/s: K candidate decisions of one observed state scored in one vmapped call
  (``dynamics.score``), for K = 1, 16, 64, over a batch of 1024 states (one call scores
  1024 * K decisions).
Brax recipe: the first call compiles and is timed apart, then ``--reps`` timed calls with
``block_until_ready``; the median is reported. The device kind is printed.
"""

from __future__ import annotations

import json
import sys

import jax

from grle_jax.baselines import random_policy
from benchmarks.oracle_speed import timed
from grle_jax import cli as toolkit
from grle_jax.config import Config, check_int
from grle_jax.errors import ConfigError
from grle_jax.dynamics import score, step
from grle_jax.scenario import observe, reset, sample


def make_sim(static, params, slots: int):
    def one_env(key):
        def body(state, _):
            k = jax.random.fold_in(key, state.t)
            ks, kp = jax.random.split(k)
            inp = sample(ks, params, state, static)
            opt = random_policy(kp, static, params, observe(state, inp))
            state, out = step(static, params, state, inp, opt)
            return state, out.reward

        _, rewards = jax.lax.scan(body, reset(static), None, length=slots)
        return rewards.sum()

    return jax.jit(jax.vmap(one_env))


def make_candidates(static, params, k: int):
    def one_state(key):
        ks, kd = jax.random.split(key)
        state = reset(static)
        obs = observe(state, sample(ks, params, state, static))
        opts = jax.random.randint(kd, (k, static.n), 0, static.options)
        return score(static, params, obs, opts)

    return jax.jit(jax.vmap(one_state))


def _ints(field: str, text: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(field, f"must be comma-separated integers, got {text!r}") from None
    if not vals:
        raise ConfigError(field, "is empty")
    for v in vals:
        check_int(field, v, 1)
    return vals


def parse(argv=None):
    """The checked arguments: (namespace, config, env-batch sizes, K values); ConfigError if bad."""
    p = toolkit.Parser(prog="python -m benchmarks.sim_throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=14)
    p.add_argument("--servers", type=int, default=2)
    p.add_argument("--scenario", default="csi")
    p.add_argument("--slots", type=int, default=200, help="slots per timed call")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--batches", default="1,64,1024,8192")
    p.add_argument("--ks", default="1,16,64")
    p.add_argument("--states", type=int, default=1024, help="states per candidate-scoring call")
    p.add_argument("--json", default=None, help="also write the figures here")
    a = p.parse_args(argv)
    cfg = Config.for_scenario(a.scenario, devices=a.devices, servers=a.servers)
    for name in ("slots", "reps", "states"):
        check_int(name, getattr(a, name), 1)
    batches, ks = _ints("batches", a.batches), _ints("ks", a.ks)
    if a.json is not None:
        from train.rundir import check_out_file

        check_out_file("json", a.json, overwrite=True)
    return a, cfg, batches, ks


def main(argv=None) -> dict:
    a, cfg, batches, ks = parse(argv)
    static, params = cfg.static(), cfg.params()
    dev = jax.devices()[0]
    print(f"device: {dev.platform} {dev.device_kind}; jax {jax.__version__}; N={a.devices} M={a.servers} "
          f"E={static.e} scenario={a.scenario}; median of {a.reps} reps")
    res = {"device": f"{dev.platform}:{dev.device_kind}", "sim": [], "candidates": []}
    sim = make_sim(static, params, a.slots)
    print(f"{'envs':>8} {'compile s':>10} {'call s':>10} {'env-slots/s':>14}")
    for b in batches:
        keys = jax.random.split(jax.random.key(0), b)
        c, t = timed(sim, keys, reps=a.reps)
        rate = b * a.slots / t
        res["sim"].append({"envs": b, "compile_s": c, "call_s": t, "env_slots_per_s": rate})
        print(f"{b:>8} {c:>10.2f} {t:>10.4f} {rate:>14,.0f}")
    print(f"{'K':>8} {'compile s':>10} {'call s':>10} {'cand. evals/s':>14}   ({a.states} states per call)")
    for k in ks:
        fn = make_candidates(static, params, k)
        keys = jax.random.split(jax.random.key(1), a.states)
        c, t = timed(fn, keys, reps=a.reps)
        rate = a.states * k / t
        res["candidates"].append({"k": k, "states": a.states, "compile_s": c, "call_s": t, "evals_per_s": rate})
        print(f"{k:>8} {c:>10.2f} {t:>10.4f} {rate:>14,.0f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


def cli(argv=None) -> int:
    """``main`` with bad input as one ``error: <field>: <why>`` line and exit status 2."""
    if toolkit.run(lambda: parse(argv)):
        return 2
    main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
