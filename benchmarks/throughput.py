"""Throughput of grle_jax against the PyTorch reference, measured side by side in ONE run.

    python -m benchmarks.throughput [--out benchmarks/results] [--quick] [--batches 1,16,64,256,1024,8192]

For each batch size B (independent environments / agents) it measures
- ``sim``: env-slots/s of simulation only (sample a slot, a uniformly random reachable decision,
  execute it), B environments;
- ``cand_k16``, ``cand_k64``: candidate evaluations/s, K decisions per observed state scored with
  the reward on observed values (what the critic does every slot), B states;
- ``train_droo``, ``train_grle``: agent-slots/s of full online training (act, quantise, score K
  candidates, execute, store, one Adam step every ``train_every`` slots), B independent agents;
for three implementations:
- ``jax``: grle_jax, ``jit(vmap(scan(...)))`` (training through ``train.loop``'s ``Trainer``, the
  code behind ``make_train``);
- ``torch_batched``: benchmarks/torch_reference.py form (b), tensors over B, eager;
- ``torch_loop``: form (a), one environment at a time in Python, measured at small B and for
  fewer slots (time capped); its rate is per env-slot and does not grow with B.
Brax recipe: JAX compile time is measured apart (``lower().compile()``) and reported; one warm-up
call of every timed function is not counted; ``block_until_ready`` (``torch.cuda.synchronize`` on
a GPU); several repetitions, the median is reported. JAX and batched torch (each thread count
tried) take turns call by call (``interleaved``), so that a slow spell of a shared machine falls
on both sides of a ratio alike. The same run measures this machine's float32
matmul peak through XLA and, for GRLE, XLA's cost-analysis FLOPs per agent-slot and the GFLOP/s
reached. Writes ``throughput.json`` and ``throughput.png`` (log-log) to ``--out``.
On a GPU it runs the same on cuda (jax's default backend, torch ``cuda`` when available).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

from grle_jax import cli

IMPLS = ("jax", "torch_batched", "torch_loop")
METRICS = {
    "sim": "env-slots/s",
    "cand_k16": "candidate evals/s",
    "cand_k64": "candidate evals/s",
    "train_droo": "agent-slots/s",
    "train_grle": "agent-slots/s",
}


# ================================================================================================
# timing helpers
# ================================================================================================
def _cpu() -> float:
    """CPU seconds of this process and of its group workers (``train.procs``: many runs on a CPU)."""
    from train.procs import cpu_seconds

    return cpu_seconds()


def _median_time(call, reps: int, sync) -> tuple[float, list[float], list[float]]:
    """Median wall time of ``reps`` calls; also each call's process CPU time (all threads)."""
    times, cpu = [], []
    for _ in range(reps):
        c0 = _cpu()
        t0 = time.perf_counter()
        sync(call())
        times.append(time.perf_counter() - t0)
        cpu.append(_cpu() - c0)
    return statistics.median(times), times, cpu


def _jax_sync(x):
    import jax

    return jax.block_until_ready(x)


def _machine() -> dict:
    import jax
    import torch

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    d = jax.devices()[0]
    info = {
        "jax_device": f"{d.platform}:{d.device_kind}", "jax": jax.__version__, "torch": torch.__version__,
        "torch_device": "cuda:" + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(), "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": sys.version.split()[0],
    }
    try:
        info["loadavg_start"] = os.getloadavg()
    except OSError:
        pass
    return info


# ================================================================================================
# JAX side
# ================================================================================================
class JaxSide:
    def __init__(self, cfg, agent_k: int | None):
        import jax

        self.jax = jax
        self.cfg = cfg
        self.static, self.params = cfg.static(), cfg.params()
        self.agent_k = agent_k

    # --- simulate only ------------------------------------------------------------------------
    def sim_fn(self, B: int, slots: int):
        jax = self.jax
        import jax.numpy as jnp

        from grle_jax.baselines import random_policy
        from grle_jax.dynamics import step
        from grle_jax.scenario import observe, reset, sample, slot_keys

        static, params = self.static, self.params

        def one_env(key, state):
            def body(st, _):
                ks, kp = slot_keys(key, st.t)
                inp = sample(ks, params, st, static)
                opt = random_policy(kp, static, params, observe(st, inp))
                st, out = step(static, params, st, inp, opt)
                return st, out.reward

            st, rew = jax.lax.scan(body, state, None, length=slots)
            return st, rew.sum()

        keys = jax.random.split(jax.random.key(0), B)
        state = jax.vmap(lambda _: reset(static))(jnp.arange(B))
        fn = jax.jit(jax.vmap(one_env))
        return fn, (keys, state), lambda out, args: (args[0], out[0])

    # --- candidate scoring ---------------------------------------------------------------------
    def cand_fn(self, B: int, K: int, steps: int, data: dict):
        jax = self.jax
        import jax.numpy as jnp

        from grle_jax.dynamics import score
        from grle_jax.types import Observation

        static, params = self.static, self.params
        obs = Observation(**{k: jnp.asarray(v) for k, v in data["obs"].items()})  # leaves (steps, B, ...)
        cands = jnp.asarray(data["cands"], jnp.int32)  # (B, K, N)
        O = static.options

        def f(obs, cands):
            def body(acc, xs):
                ob, i = xs
                c = (cands + i) % O  # a different decision every step (no loop-invariant hoisting)
                R = jax.vmap(lambda o, cc: score(static, params, o, cc))(ob, c)
                return acc + R[:, 0], None

            return jax.lax.scan(body, jnp.zeros((B,)), (obs, jnp.arange(steps)))[0]

        return jax.jit(f), (obs, cands), None

    # --- online training -----------------------------------------------------------------------
    def trainer(self, policy: str):
        from grle_jax.agent import AgentConfig
        from train.loop import make_hyper, make_trainer

        agent = AgentConfig(policy=policy, k=self.agent_k)
        return make_trainer(self.cfg, agent), make_hyper(self.cfg, agent)

    def jax_online_training_fn(self, policy: str, B: int, slots: int):
        """Full online training through the issue-4 trainer (``train.loop``): B agents,
        ``jit(vmap(Trainer.run))`` for ``slots`` slots; the state carries over between calls."""
        jax = self.jax
        trainer, hyper = self.trainer(policy)
        init = trainer.batched("init", None)
        run = trainer.batched("run", None)
        keys = jax.random.split(jax.random.key(0), B)
        states = jax.block_until_ready(init(keys, hyper))
        t = {"t0": 0}

        def advance(out, args):
            t["t0"] += slots
            return (out[0], hyper, t["t0"])

        return run, (states, hyper, 0), advance, slots

    def executor_training(self, policy: str, B: int, slots: int) -> dict | None:
        """The same B agents through ``train.sweep.Executor``, the way the library runs many runs
        (``train.grle --seeds``, sweeps, experiments): on a CPU many runs of a learner go in groups
        side by side in threads. None where the executor runs them as one batch (the program
        above)."""
        jax = self.jax
        from grle_jax.agent import AgentConfig
        from train.sweep import Executor, build_runs

        ex = Executor(build_runs(self.cfg, AgentConfig(policy=policy, k=self.agent_k), seeds=B, seed=0), shard=False)
        if ex.groups is None:
            return None
        t0 = time.perf_counter()
        st = {"state": jax.block_until_ready(ex.init()), "t": 0}

        def call():
            st["state"], rec = ex.run(st["state"], st["t"], slots)
            st["t"] += slots
            return _jax_sync(rec)

        call()  # compiles the group's program, then runs
        compile_s = time.perf_counter() - t0
        width = ex.groups[1]
        trainer, hyper = self.trainer(policy)
        keys = jax.random.split(jax.random.key(0), width)
        compiled = trainer.batched("run", None).lower(trainer.batched("init", None)(keys, hyper), hyper, 0,
                                                      slots).compile()
        return {"call": call, "compile_s": compile_s, "compiled": compiled, "width": width, "groups": ex.groups[0]}

    def learn_free_fn(self, policy: str, B: int):
        """The same trainer with the learning step removed (for the FLOP split act / learn)."""
        jax = self.jax
        trainer, hyper = self.trainer(policy)
        trainer._learn = lambda rs, *_: rs  # instance attribute shadows the method
        # built here, not through Trainer.batched, whose cache is shared by equal trainers
        init = jax.jit(jax.vmap(trainer.init, in_axes=(0, None)))
        run = jax.jit(jax.vmap(trainer.run, in_axes=(0, None, None, None)), static_argnums=(3,))
        keys = jax.random.split(jax.random.key(0), B)
        return run, (init(keys, hyper), hyper, 0)

    def matmul_peak(self, n: int, reps: int) -> dict:
        jax = self.jax
        import jax.numpy as jnp

        a = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
        b = jax.random.normal(jax.random.key(2), (n, n), jnp.float32)
        f = jax.jit(lambda a, b: a @ b).lower(a, b).compile()
        _jax_sync(f(a, b))
        med, times, _ = _median_time(lambda: f(a, b), reps, _jax_sync)
        return {"n": n, "median_s": med, "gflops": 2 * n ** 3 / med / 1e9, "times": times}


def _flops(compiled) -> float:
    ca = compiled.cost_analysis()
    if isinstance(ca, (list, tuple)):
        ca = ca[0]
    return float(ca.get("flops", float("nan")))


def jax_prepare(fn, args, advance, static_tail=()) -> dict:
    """Brax recipe: compile apart, one warm-up call. Returns ``call`` (one more call, synced,
    the state carried on through ``advance``) for :func:`interleaved`."""
    t0 = time.perf_counter()
    compiled = fn.lower(*args, *static_tail).compile()
    compile_s = time.perf_counter() - t0
    state = {"args": args}

    def call():
        out = compiled(*state["args"])
        if advance is not None:
            state["args"] = advance(out, state["args"])
        return _jax_sync(out)

    call()
    return {"compile_s": compile_s, "call": call, "compiled": compiled}


def interleaved(sides: dict, reps: int) -> dict:
    """Time ``reps`` calls of every side, the sides taking turns call by call (the order rotated
    every round), so that a slow spell of the machine falls on all of them alike instead of on
    whichever side was being measured then. ``sides`` maps a name to a warmed-up synced callable;
    returns name -> {median_s, times, cpu_s}. (On the project's shared 2-core CPU the same
    compiled program runs 3x slower for seconds at a time while the guest shows its cores busy
    and no steal: docs/benchmarks.md, "Slow spells".)"""
    names = list(sides)
    out = {n: {"times": [], "cpu_s": []} for n in names}
    for r in range(reps):
        for n in names[r % len(names):] + names[:r % len(names)]:
            c0, t0 = _cpu(), time.perf_counter()
            sides[n]()
            out[n]["times"].append(time.perf_counter() - t0)
            out[n]["cpu_s"].append(_cpu() - c0)
    for n in names:
        out[n]["median_s"] = statistics.median(out[n]["times"])
    return out


# ================================================================================================
# torch side
# ================================================================================================
def torch_measure(run, reps: int, sync, warm=None) -> dict:
    (warm or run)()
    sync(None)
    med, times, cpu = _median_time(run, reps, sync)
    return {"median_s": med, "times": times, "cpu_s": cpu}


def torch_prepare(make, thread_options, sync) -> tuple[dict, dict]:
    """A careful user picks the intra-op thread count that runs fastest: one side per count tried
    (``make()`` -> (run, units per call, extra), built and warmed up under that count), each call
    setting its count first; :func:`torch_best` keeps the fastest (all are recorded)."""
    import torch

    sides, meta = {}, {}
    for th in thread_options:
        torch.set_num_threads(th)
        run, units, extra = make()
        run()
        sync(None)

        def call(run=run, th=th):
            torch.set_num_threads(th)
            out = run()
            sync(None)
            return out

        sides[f"torch{th}"] = call
        meta[f"torch{th}"] = dict(extra, units=units, threads=th)
    return sides, meta


def torch_best(timed: dict, meta: dict) -> dict:
    tried = [dict(timed[k], **meta[k]) for k in meta]
    best = dict(min(tried, key=lambda m: m["median_s"] / m["units"]))
    best["threads_tried"] = {m["threads"]: m["units"] / m["median_s"] for m in tried}
    return best


def _calibrated_slots(run_slots, target_s: float, lo: int, hi: int, multiple: int = 1) -> int:
    """Slots per timed call so that one call lasts about ``target_s`` (at least ``lo``)."""
    n = max(lo, multiple)
    t0 = time.perf_counter()
    run_slots(n)
    dt = max(time.perf_counter() - t0, 1e-6)
    s = int(n * target_s / dt)
    s = max(lo, min(hi, s))
    return max(multiple, s // multiple * multiple)


# ================================================================================================
# the benchmark
# ================================================================================================
def make_cand_data(p, B: int, K: int, steps: int, seed: int = 0) -> dict:
    """Observed states with non-empty queues and K random decisions per state (some failing)."""
    rng = np.random.default_rng(seed)
    N, M, E = p.n, p.m, p.e
    f32 = np.float32
    r = rng.uniform(*p.rate_mbps, (steps, B, N, M)).astype(f32)
    obs = {
        "s": rng.uniform(*p.size_kb, (steps, B, N)).astype(f32),
        "r_hat": r,
        "phi": rng.uniform(0.25, 1.0, (steps, B, M)).astype(f32),
        "L": rng.random((steps, B, N, M)) < 0.9,
        "active": rng.random((steps, B, N)) < 0.95,
        "radio": np.maximum(rng.uniform(-10, 15, (steps, B, N)), 0).astype(f32),
        "es": np.maximum(rng.uniform(-10, 15, (steps, B, M)), 0).astype(f32),
    }
    cands = rng.integers(0, M * E, (B, K, N)).astype(np.int32)
    return {"obs": obs, "cands": cands}


def run_benchmark(a, checkpoint=None) -> dict:
    import torch

    from benchmarks import torch_reference as tr
    from grle_jax.config import Config
    from grle_jax.profile import DEFAULT_PROFILE

    cores = tr.setup_threads(None)
    thread_options = sorted({1, cores}) if a.threads is None else [a.threads]
    cfg = Config.for_scenario(a.scenario, devices=a.devices, servers=a.servers)
    p = tr.MECParams.from_config_dict(cfg.to_dict(), DEFAULT_PROFILE.acc_array().tolist(),
                                      DEFAULT_PROFILE.c_matrix(cfg.servers).tolist())
    tdev = "cuda" if torch.cuda.is_available() and not a.cpu_torch else "cpu"
    tsync = (lambda _: torch.cuda.synchronize()) if tdev == "cuda" else (lambda _: None)
    J = JaxSide(cfg, a.k)
    machine = _machine()
    machine["torch_threads_tried"] = thread_options
    print(f"# jax on {machine['jax_device']}, torch on {machine['torch_device']} (threads tried: "
          f"{thread_options}), cpu: {machine['cpu']} x{machine['cores']}, load {machine.get('loadavg_start')}; "
          f"N={p.n} M={p.m} E={p.e} scenario={a.scenario}; median of {a.reps} reps", flush=True)
    res: dict = {"machine": machine, "args": vars(a), "results": []}
    rows = res["results"]

    def add(impl, metric, B, m, extra=None):
        rate = m["units"] / m["median_s"]
        row = {"impl": impl, "metric": metric, "batch": B, "units": METRICS[metric], "rate": rate,
               "per_call": m["units"], "median_s": m["median_s"], "times": m["times"],
               "cpu_per_unit_us": 1e6 * statistics.median(m["cpu_s"]) / m["units"]}
        for k in ("compile_s", "threads", "threads_tried"):
            if k in m:
                row[k] = m[k]
        row.update(extra or {})
        rows.append(row)
        cs = f", compile {row['compile_s']:.1f} s" if "compile_s" in row else ""
        th = f", {row['threads']} thr" if "threads" in row else ""
        print(f"{metric:>11} {impl:>14} B={B:<6} {rate:>14,.0f} {METRICS[metric]} "
              f"(cpu {row['cpu_per_unit_us']:.2f} us/unit{cs}{th})", flush=True)
        return row

    batches = [int(x) for x in a.batches.split(",")]
    metrics = [m for m in a.metrics.split(",") if m]
    for m in metrics:
        if m not in METRICS:
            raise SystemExit(f"unknown metric {m!r} (choose from {', '.join(METRICS)})")
    deadline = time.perf_counter() + a.budget_s if a.budget_s else None

    # --- machine peak --------------------------------------------------------------------------
    peaks = [J.matmul_peak(n, a.reps) for n in ([2048] if a.quick else [2048, 4096])]
    res["matmul_peak"] = max(peaks, key=lambda d: d["gflops"])
    res["matmul_peaks"] = peaks
    print(f"# XLA float32 matmul peak: {res['matmul_peak']['gflops']:.0f} GFLOP/s "
          f"({res['matmul_peak']['n']}^2)", flush=True)

    def loop_ok(metric, B):
        return B <= a.loop_max_batch and not (a.quick and metric == "train_grle" and B > 1)

    for metric in metrics:
        for B in batches:
            if deadline is not None and time.perf_counter() > deadline:
                print(f"# time budget spent: skipping {metric} B={B}", flush=True)
                continue
            if metric == "train_grle" and B > a.grle_max_batch:
                continue
            if metric.startswith("train_") and a.train_batches and B not in [int(x) for x in a.train_batches.split(",")]:
                continue
            try:
                if metric == "sim":
                    slots = a.sim_slots
                    fn, args, adv = J.sim_fn(B, slots)
                    jm = jax_prepare(fn, args, adv)

                    def make():
                        env = tr.BatchedEnv(p, B, 0, tdev)
                        n = _calibrated_slots(env.run_random, a.target_s, 5, 2000)
                        return (lambda: env.run_random(n)), B * n, {"slots": n}

                    ts, tmeta = torch_prepare(make, thread_options, tsync)
                    timed = interleaved({"jax": jm["call"], **ts}, a.reps)
                    add("jax", metric, B, dict(timed["jax"], compile_s=jm["compile_s"], units=B * slots),
                        {"slots": slots})
                    tb = torch_best(timed, tmeta)
                    add("torch_batched", metric, B, tb, {"slots": tb["slots"]})
                    if loop_ok(metric, B):
                        torch.set_num_threads(1)
                        envs = [tr.LoopEnv(p, i) for i in range(B)]
                        run = lambda k: [e.run_random(k) for e in envs]  # noqa: E731
                        n = _calibrated_slots(run, a.loop_target_s, 2, 100000)
                        m = torch_measure(lambda: run(n), a.reps, lambda _: None)
                        m["units"] = B * n
                        add("torch_loop", metric, B, m, {"slots": n})
                elif metric.startswith("cand_k"):
                    K = int(metric[len("cand_k"):])
                    steps = a.cand_steps
                    data = make_cand_data(p, B, K, steps)
                    fn, args, _ = J.cand_fn(B, K, steps, data)
                    jm = jax_prepare(fn, args, None)
                    obs_t = [{k: torch.from_numpy(np.ascontiguousarray(v[i])).to(tdev) for k, v in data["obs"].items()}
                             for i in range(steps)]
                    cands_t = torch.from_numpy(data["cands"]).long().to(tdev)

                    @torch.no_grad()
                    def tb_call():
                        acc = None
                        for i in range(steps):
                            R = tr.batched_score(p, obs_t[i], (cands_t + i) % p.options)
                            acc = R[:, 0] if acc is None else acc + R[:, 0]
                        return acc

                    ts, tmeta = torch_prepare(lambda: (tb_call, B * K * steps, {}), thread_options, tsync)
                    timed = interleaved({"jax": jm["call"], **ts}, a.reps)
                    add("jax", metric, B, dict(timed["jax"], compile_s=jm["compile_s"], units=B * K * steps),
                        {"steps": steps})
                    add("torch_batched", metric, B, torch_best(timed, tmeta), {"steps": steps})
                    if loop_ok(metric, B):
                        torch.set_num_threads(1)
                        obs_l = [[{k: v[i, b].tolist() for k, v in data["obs"].items()} for b in range(B)]
                                 for i in range(steps)]
                        cands_l = data["cands"].tolist()
                        O = p.options

                        def tl(n_steps):
                            tot = 0.0
                            for i in range(n_steps):
                                ii = i % steps
                                for b in range(B):
                                    ob = obs_l[ii][b]
                                    for c in cands_l[b]:
                                        tot += tr.loop_score(p, ob, [(x + ii) % O for x in c])
                            return tot

                        n = _calibrated_slots(tl, a.loop_target_s, 1, 100000)
                        m = torch_measure(lambda: tl(n), a.reps, lambda _: None)
                        m["units"] = B * K * n
                        add("torch_loop", metric, B, m, {"steps": n})
                elif metric.startswith("train_"):
                    policy = metric[len("train_"):]
                    slots = a.train_slots if policy == "droo" else a.grle_slots
                    reps = a.reps if policy == "droo" else max(1, min(a.reps, a.grle_reps))
                    jm = J.executor_training(policy, B, slots)
                    fn = args = None
                    if jm is None:
                        fn, args, adv, length = J.jax_online_training_fn(policy, B, slots)
                        jm = jax_prepare(fn, args, adv, static_tail=(length,))
                    ts, tmeta = {}, {}
                    if B <= (a.torch_train_max_batch if policy == "droo" else a.torch_grle_max_batch):
                        def make():
                            agent = tr.BatchedAgent(p, policy, B, 0, tdev, k=a.k)
                            lo = 10  # one Adam step at least (calibrated to about --target-s)
                            n = _calibrated_slots(agent.run, a.target_s, lo, 1000, multiple=10)
                            return (lambda: agent.run(n)), B * n, {"slots": n}

                        ts, tmeta = torch_prepare(make, thread_options, tsync)
                    timed = interleaved({"jax": jm["call"], **ts}, reps)
                    extra = {"slots": slots}
                    if "groups" in jm:
                        extra.update(groups=jm["groups"], group_width=jm["width"])
                    if policy == "grle":
                        extra.update(grle_flops(J, policy, jm.get("width", B), jm["compiled"], a.train_every_default))
                    row = add("jax", metric, B, dict(timed["jax"], compile_s=jm["compile_s"], units=B * slots),
                              extra)
                    if "flops_per_agent_slot" in row:
                        row["gflops_reached"] = row["flops_per_agent_slot"] * row["rate"] / 1e9
                        row["fraction_of_peak"] = row["gflops_reached"] / res["matmul_peak"]["gflops"]
                        print(f"#   GRLE: {row['flops_per_agent_slot'] / 1e6:.1f} MFLOP/agent-slot (XLA cost "
                              f"analysis), {row['gflops_reached']:.1f} GFLOP/s = {100 * row['fraction_of_peak']:.1f}% "
                              f"of the matmul peak", flush=True)
                    if tmeta:
                        tb = torch_best(timed, tmeta)
                        add("torch_batched", metric, B, tb, {"slots": tb["slots"]})
                    del jm, fn, args, ts, timed
                    if loop_ok(metric, B):
                        torch.set_num_threads(1)
                        agents = [tr.LoopAgent(p, policy, i, k=a.k) for i in range(B)]
                        run = lambda k: [ag.run(k) for ag in agents]  # noqa: E731
                        n = _calibrated_slots(run, a.loop_target_s, 10, 100000, multiple=10)
                        m = torch_measure(lambda: run(n), reps, lambda _: None)
                        m["units"] = B * n
                        add("torch_loop", metric, B, m, {"slots": n})
            except Exception as e:  # noqa: BLE001 - one cell failing (out of memory, a missing op) keeps the rest
                msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
                print(f"# {metric} B={B} failed: {msg}", flush=True)
                res.setdefault("errors", []).append({"metric": metric, "batch": B, "error": msg})
            torch.set_num_threads(cores)
            if checkpoint is not None:
                checkpoint(res)  # what is measured so far survives a kill
    try:
        res["machine"]["loadavg_end"] = os.getloadavg()
    except OSError:
        pass
    res["summary"] = summarise(rows, batches)
    return res


def grle_flops(J: JaxSide, policy: str, B: int, compiled, train_every: int) -> dict:
    """XLA cost analysis of the timed program. XLA counts a scan body once (not times its trip
    count) and a ``lax.cond`` branch in full, so the body's count is one slot WITH a training
    step; the same trainer with the training step removed gives the acting part, and per
    agent-slot FLOPs = (act + learn / train_every) / B."""
    body = _flops(compiled)
    run, args = J.learn_free_fn(policy, B)
    act = _flops(run.lower(*args, 1).compile())
    learn = body - act
    return {"flops_body": body, "flops_act": act, "flops_learn": learn,
            "flops_per_agent_slot": (act + learn / train_every) / B}


def summarise(rows: list, batches: list) -> list:
    """One line per (metric, batch): the rates and the ratios JAX / PyTorch. The loop form's rate
    is per env-slot and does not grow with B (it runs the environments one after the other): its
    best measured rate stands for every B where it was not measured."""
    by = {(r["impl"], r["metric"], r["batch"]): r["rate"] for r in rows}
    out = []
    for metric in METRICS:
        loop_rates = [r["rate"] for r in rows if r["impl"] == "torch_loop" and r["metric"] == metric]
        loop = max(loop_rates) if loop_rates else None
        for B in batches:
            j, tb = by.get(("jax", metric, B)), by.get(("torch_batched", metric, B))
            if j is None and tb is None:
                continue
            tl_here = by.get(("torch_loop", metric, B))
            out.append({
                "metric": metric, "batch": B, "units": METRICS[metric], "jax": j,
                "torch_batched": tb, "torch_loop": tl_here if tl_here is not None else loop,
                "torch_loop_measured_here": tl_here is not None,
                "jax_over_batched": j / tb if j and tb else None,
                "jax_over_loop": j / loop if j and loop else None,
            })
    return out


def check_targets(res: dict) -> list[dict]:
    """Issue 14's part-5 targets for this CPU, as far as this run measured them: one entry each,
    ``value`` the figures it rests on, ``met`` True / False, or None where the run did not measure
    what the target needs (ratios are JAX / batched torch within the run)."""
    summ, rows = res.get("summary", []), res.get("results", [])
    out = []

    def add(target, value, met):
        out.append({"target": target, "value": value, "met": met})

    ratios = [(s["metric"], s["batch"], s["jax_over_batched"]) for s in summ
              if s["jax_over_batched"] is not None and 16 <= s["batch"] <= 8192]
    name = "JAX ahead of batched torch, every metric, every B from 16 to 8,192"
    if ratios:
        m, b, r = min(ratios, key=lambda x: x[2])
        behind = [f"{m} B={b} {r:.2f}x" for m, b, r in ratios if r <= 1]
        add(name, "; ".join(behind) if behind else f"lowest {r:.2f}x ({m} B={b})", not behind)
    else:
        add(name, "no B from 16 to 8,192 with both sides", None)
    big = [x for x in ratios if x[1] >= 1024]
    name = "... by at least 1.5x from B = 1,024 up"
    if big:
        under = [f"{m} B={b} {r:.2f}x" for m, b, r in big if r < 1.5]
        add(name, "; ".join(under) if under else f"lowest {min(r for *_, r in big):.2f}x", not under)
    else:
        add(name, "no B >= 1,024 with both sides", None)
    grle = {r["batch"]: r for r in rows if r["impl"] == "jax" and r["metric"] == "train_grle"}
    name = "GRLE: 64 runs side by side >= 4x the agent-slots/s of one run"
    if 1 in grle and 64 in grle:
        x = grle[64]["rate"] / grle[1]["rate"]
        add(name, f"{x:.2f}x ({grle[64]['rate']:,.0f} against {grle[1]['rate']:,.0f})", x >= 4)
    else:
        add(name, "needs JAX GRLE at B = 1 and 64", None)
    fr = [(r["fraction_of_peak"], b) for b, r in grle.items() if r.get("fraction_of_peak") is not None]
    name = "GRLE at its best B >= a third of the matmul peak"
    if fr:
        f, b = max(fr)
        add(name, f"{100 * f:.1f} % at B={b}", f >= 1 / 3)
    else:
        add(name, "no JAX GRLE row with FLOPs", None)
    sim = {r["batch"]: r["rate"] for r in rows if r["impl"] == "jax" and r["metric"] == "sim"}
    name = "sim at B = 8,192 >= 1,000,000 env-slots/s and no lower than at B = 1,024"
    if 8192 in sim and 1024 in sim:
        add(name, f"{sim[8192]:,.0f} (B = 1,024: {sim[1024]:,.0f})", sim[8192] >= 1e6 and sim[8192] >= sim[1024])
    else:
        add(name, "needs sim at B = 1,024 and 8,192", None)
    return out


def targets_text(targets: list[dict]) -> str:
    tag = {True: "met", False: "NOT met", None: "not measured"}
    return "\n".join(["# issue 14's targets (this CPU), as far as this run measured them:"]
                     + [f"#   [{tag[t['met']]}] {t['target']}: {t['value']}" for t in targets])


def markdown_table(res: dict) -> str:
    def f(x):
        if x is None:
            return "-"
        return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"

    def r(x):
        return "-" if x is None else f"{x:.2f}x" if x < 10 else f"{x:,.0f}x"

    lines = ["| metric | B | JAX | torch batched | torch loop | JAX / batched | JAX / loop |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for s in res["summary"]:
        loop = f(s["torch_loop"]) + ("" if s["torch_loop_measured_here"] or s["torch_loop"] is None else "*")
        lines.append(f"| {s['metric']} ({s['units']}) | {s['batch']} | {f(s['jax'])} | {f(s['torch_batched'])} | "
                     f"{loop} | {r(s['jax_over_batched'])} | {r(s['jax_over_loop'])} |")
    lines.append("")
    lines.append("\\* the loop form runs one environment after another, so its rate does not grow with B; the "
                 "best rate measured at small B stands here.")
    return "\n".join(lines)


def plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in METRICS if any(r["metric"] == m for r in res["results"])]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.8), squeeze=False)
    style = {"jax": ("C0", "o-"), "torch_batched": ("C1", "s-"), "torch_loop": ("C2", "^--")}
    for ax, metric in zip(axes[0], metrics):
        for impl in IMPLS:
            pts = sorted((r["batch"], r["rate"]) for r in res["results"] if r["impl"] == impl and r["metric"] == metric)
            if pts:
                c, ls = style[impl]
                ax.plot([x for x, _ in pts], [y for _, y in pts], ls, color=c, label=impl)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(metric)
        ax.set_xlabel("batch (environments / agents)")
        ax.set_ylabel(METRICS[metric])
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    m = res["machine"]
    fig.suptitle(f"jax {m['jax_device']} vs torch {m['torch_device']} ({m['cpu']}, {m['cores']} cores)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser(prog="python -m benchmarks.throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="benchmarks/results", help="folder for throughput.json and throughput.png")
    p.add_argument("--quick", action="store_true", help="a run of under 2 minutes (fewer batches, slots, reps)")
    p.add_argument("--batches", default=None, help="comma list (default 1,16,64,256,1024,8192; on a GPU also 32768,131072)")
    p.add_argument("--metrics", default=",".join(METRICS), help="comma list of " + ", ".join(METRICS))
    p.add_argument("--reps", type=int, default=5, help="timed repetitions (median reported)")
    p.add_argument("--scenario", default="csi")
    p.add_argument("--devices", type=int, default=14)
    p.add_argument("--servers", type=int, default=2)
    p.add_argument("--k", type=int, default=None, help="candidates per slot in training (default N)")
    p.add_argument("--sim-slots", type=int, default=200, help="slots per timed JAX simulation call")
    p.add_argument("--cand-steps", type=int, default=8, help="scoring calls per timed candidate call")
    p.add_argument("--train-slots", type=int, default=50, help="slots per timed JAX DROO training call")
    p.add_argument("--grle-slots", type=int, default=50,
                   help="slots per timed GRLE training call (50: five Adam steps; the trainers run chunks of 1,000)")
    p.add_argument("--train-batches", default=None, help="comma list: batch sizes for the training metrics (default: --batches)")
    p.add_argument("--grle-max-batch", type=int, default=None,
                   help="largest B for JAX GRLE training (memory: ~6 GB at 256 on the CPU; default 256 on a CPU, 1024 on a GPU)")
    p.add_argument("--grle-reps", type=int, default=3, help="timed repetitions for GRLE training")
    p.add_argument("--torch-train-max-batch", type=int, default=1 << 30, help="largest B for batched torch DROO training")
    p.add_argument("--torch-grle-max-batch", type=int, default=256, help="largest B for batched torch GRLE training")
    p.add_argument("--target-s", type=float, default=1.0, help="about how long one timed torch call lasts")
    p.add_argument("--loop-max-batch", type=int, default=16, help="largest B for the Python-loop form")
    p.add_argument("--loop-target-s", type=float, default=1.0, help="about how long one timed loop-form call lasts")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads for the batched form (default: try 1 and all cores, keep the faster)")
    p.add_argument("--cpu-torch", action="store_true", help="keep torch on the CPU even when cuda is available")
    p.add_argument("--budget-s", type=float, default=None, help="skip what is left after this many seconds")
    p.add_argument("--train-every-default", type=int, default=10, help=argparse.SUPPRESS)
    return p


def main(argv=None) -> dict:
    a = build_parser().parse_args(argv)
    import jax

    on_gpu = jax.default_backend() != "cpu"
    if a.batches is None:
        a.batches = "1,16,64,256,1024,8192" + (",32768,131072" if on_gpu else "")
        if a.quick:
            a.batches = "1,16,1024"
    if a.grle_max_batch is None:
        a.grle_max_batch = 1024 if on_gpu else 256
    if a.quick:  # about 2 minutes on an idle 2-core CPU: fewer batches, slots and reps
        a.reps = min(a.reps, 3)
        a.grle_reps = 1
        a.sim_slots = min(a.sim_slots, 50)
        a.cand_steps = min(a.cand_steps, 2)
        a.train_slots = min(a.train_slots, 10)
        a.grle_slots = min(a.grle_slots, 10)
        a.grle_max_batch = min(a.grle_max_batch, 16)
        a.torch_grle_max_batch = min(a.torch_grle_max_batch, 16)
        a.target_s = min(a.target_s, 0.2)
        a.loop_target_s = min(a.loop_target_s, 0.2)
        a.loop_max_batch = min(a.loop_max_batch, 1)
        if a.metrics == ",".join(METRICS):
            a.metrics = "sim,cand_k16,train_droo,train_grle"
        if a.train_batches is None:
            a.train_batches = "16"
    t0 = time.perf_counter()
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "throughput.json")

    def write(res):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(res, f, indent=1, default=float)
        os.replace(tmp, path)

    res = run_benchmark(a, checkpoint=lambda r: write(dict(r, partial=True)))
    res["wall_s"] = time.perf_counter() - t0
    res["targets"] = check_targets(res)
    write(res)
    plot(res, os.path.join(a.out, "throughput.png"))
    print()
    print(markdown_table(res))
    print()
    print(targets_text(res["targets"]))
    print(f"\n# matmul peak {res['matmul_peak']['gflops']:.0f} GFLOP/s; wall {res['wall_s']:.0f} s; "
          f"wrote {a.out}/throughput.json and throughput.png")
    return res


if __name__ == "__main__":
    sys.exit(cli.run(main))  # bad input: one line, exit 2
