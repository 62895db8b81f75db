"""Time per slot of the exact oracle (grle_jax/oracle.py).

    python -m benchmarks.oracle_speed [--sizes 6x2,10x2,14x2,20x2,6x3,10x3,13x3] [--reps 7] [--batch 32]
                                     [--rollout 1000] [--json PATH]

For every N x M (E = 5, the default exit table, scenario csi, observations drawn by the
scenario sampler with random radio and ES backlogs):
- single: ``jit(oracle)`` on one observation;
- vmap:   ``jit(vmap(oracle))`` on a batch of ``--batch`` observations, time / batch;
- scan:   ``jit(lax.scan(oracle))`` over ``--batch`` observations one after another (as in the
          simulator's scan), time / batch.
(Batches of 4 where M^N or 2^N exceeds 65,536, to bound memory.)
Then, at N = 14, M = 2, what ``--normalise`` costs inside the real runner: ``train.loop.Trainer``
with the random policy for ``--rollout`` slots, with and without the oracle as reference.

Brax recipe: the first call compiles and is reported apart, then ``--reps`` timed calls with
``block_until_ready``; the median is reported. The device kind, the CPU model and the load
average at the start are printed (the machine may be shared).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time

import jax
import numpy as np

from grle_jax import cli
from grle_jax.config import Config
from grle_jax.oracle import MAX_ASSIGNMENTS, MAX_MULTISETS, MAX_SUBSETS, oracle_decision, oracle_sizes
from grle_jax.scenario import observe, reset, sample


def timed(fn, *args, reps: int):
    """(seconds of the first call, compilation included; median seconds of ``reps`` further calls)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return compile_s, float(np.median(times))


def observations(static, params, count: int, seed: int = 0):
    """``count`` observed slot states (leading axis), with random radio and ES backlogs."""
    def one(key):
        kb, kr, ke = jax.random.split(key, 3)
        st = reset(static)
        st = st.replace(radio=jax.random.uniform(kr, st.radio.shape, minval=-10.0, maxval=15.0).clip(0.0),
                        es=jax.random.uniform(ke, st.es.shape, minval=-5.0, maxval=15.0).clip(0.0))
        return observe(st, sample(kb, params, st, static))

    return jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(seed), count))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def bench_size(n: int, m: int, reps: int, batch: int) -> dict:
    cfg = Config.for_scenario("csi", devices=n, servers=m)
    static, params = cfg.static(), cfg.params()
    obs = observations(static, params, batch)
    first = jax.tree_util.tree_map(lambda x: x[0], obs)
    single = jax.jit(lambda o: oracle_decision(static, params, o))
    vm = jax.jit(jax.vmap(lambda o: oracle_decision(static, params, o)))
    sc = jax.jit(lambda os_: jax.lax.scan(lambda c, o: (c, oracle_decision(static, params, o)), 0, os_)[1])
    row = {"N": n, "M": m, **oracle_sizes(n, m, static.e)}
    row["compile_s"], t = timed(single, first, reps=reps)
    row["single_ms"] = 1e3 * t
    c, t = timed(vm, obs, reps=max(3, reps // 2))
    row["vmap_compile_s"], row["vmap_ms_per_slot"] = c, 1e3 * t / batch
    c, t = timed(sc, obs, reps=max(3, reps // 2))
    row["scan_compile_s"], row["scan_ms_per_slot"] = c, 1e3 * t / batch
    return row


def bench_rollout(slots: int, reps: int) -> dict:
    from grle_jax.agent import AgentConfig
    from train.loop import make_hyper, make_trainer

    cfg = Config.for_scenario("csi")
    agent = AgentConfig(policy="random")
    hyper = make_hyper(cfg, agent)
    key = jax.random.key(0)
    out = {"N": 14, "M": 2, "slots": slots}
    for name, normalise in (("plain", False), ("normalise", True)):
        trainer = make_trainer(cfg, agent, normalise=normalise)  # the one runner of every policy
        run = jax.jit(trainer.train, static_argnums=(2,))

        def go():
            return run(key, hyper, slots)[1]["reward_observed"]

        c, t = timed(go, reps=max(2, reps // 3))
        out[f"{name}_compile_s"], out[f"{name}_ms_per_slot"] = c, 1e3 * t / slots
    out["oracle_ms_per_slot"] = out["normalise_ms_per_slot"] - out["plain_ms_per_slot"]
    out["projected_10k_slot_normalise_s"] = 10_000 * out["normalise_ms_per_slot"] / 1e3 + out["normalise_compile_s"]
    return out


def main(argv=None) -> int:
    p = cli.Parser(prog="python -m benchmarks.oracle_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="6x2,10x2,14x2,20x2,6x3,10x3,13x3", help="comma list of NxM")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--batch", type=int, default=32, help="slots per vmap / scan call")
    p.add_argument("--rollout", type=int, default=1000, help="slots of the --normalise rollout check (0: skip)")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)

    d = jax.devices()[0]
    info = {"device": f"{d.platform}:{d.device_kind}", "cpu": cpu_model(), "cores": os.cpu_count(),
            "jax": jax.__version__, "loadavg_at_start": os.getloadavg()}
    print(f"device {info['device']}  cpu {info['cpu']} ({info['cores']} cores)  jax {info['jax']}  "
          f"load average {info['loadavg_at_start'][0]:.1f}")
    print(f"limits: M^N <= {MAX_ASSIGNMENTS}, 2^N <= {MAX_SUBSETS}, multisets C(N+E,E) - 1 <= {MAX_MULTISETS}")
    print(f"{'N':>3} {'M':>2} {'M^N':>9} {'multisets':>9} {'compile s':>9} {'single ms':>9} "
          f"{'vmap ms/slot':>12} {'scan ms/slot':>12}")
    rows = []
    for size in args.sizes.split(","):
        n, m = (int(v) for v in size.lower().split("x"))
        sz = oracle_sizes(n, m, 5)
        if sz["assignments"] > MAX_ASSIGNMENTS or sz["multisets"] > MAX_MULTISETS:
            print(f"{n:>3} {m:>2} {sz['assignments']:>9} {sz['multisets']:>9}   beyond the oracle's limits, skipped")
            continue
        batch = args.batch if max(sz["assignments"], sz["subsets"]) <= 1 << 16 else min(args.batch, 4)
        r = bench_size(n, m, args.reps, batch)
        rows.append(r)
        print(f"{n:>3} {m:>2} {r['assignments']:>9} {r['multisets']:>9} {r['compile_s']:>9.1f} {r['single_ms']:>9.2f} "
              f"{r['vmap_ms_per_slot']:>12.2f} {r['scan_ms_per_slot']:>12.2f}", flush=True)
    res = {"info": info, "sizes": rows}
    if args.rollout:
        ro = bench_rollout(args.rollout, args.reps)
        res["rollout"] = ro
        print(f"rollout N=14 M=2, random policy, {ro['slots']} slots: {ro['plain_ms_per_slot']:.2f} ms/slot plain, "
              f"{ro['normalise_ms_per_slot']:.2f} ms/slot with --normalise (oracle {ro['oracle_ms_per_slot']:.2f} ms/slot); "
              f"a 10,000-slot --normalise run: about {ro['projected_10k_slot_normalise_s']:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))  # bad input: one line, exit 2
