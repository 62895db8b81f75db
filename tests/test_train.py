"""Online training in one scan (issue 4, parts 2-4, 6): determinism, chunk boundaries that leave
no trace, checkpoints and resume, learning that beats ``random``, the critic's bookkeeping.

Everything runs on a small network (N = 3, M = 2) and shares compiled programs through the
trainer's cache, so the whole file compiles a handful of programs."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grle_jax.agent import AgentConfig, k_max
from grle_jax.config import Config
from train import checkpoint
from train.loop import make_train
from train.sweep import Executor, build_runs, chunk_plan, concat_records, run_batched, run_keys

CFG = Config(devices=3, servers=2)
# adaptive K (k_cap = K_max), so one compiled program serves every test here and in test_train_cli
AGENT = AgentConfig(policy="grle", variant="paper", k=4, adaptive_k=True, k_delta=8, train_every=5, batch=8, memory=32)


@pytest.fixture(scope="module")
def grle_runs():
    # four seeds: a batch of one run compiles differently (float rounding), and the multi-process
    # test splits these four runs two per process
    rs = build_runs(CFG, AGENT, seeds=4, seed=0)
    return rs, Executor(rs, shard=False)


def _equal(a: dict, b: dict):
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def test_chunks_leave_no_trace_and_runs_are_deterministic(grle_runs):
    rs, ex = grle_runs
    # the whole run as ONE scan (vmapped over the seeds), twice
    whole = rs.trainer.batched("train", rs.axes)
    st1, rec1 = whole(rs.keys, rs.hyper, 100)
    st2, rec2 = whole(rs.keys, rs.hyper, 100)
    _equal(rec1, rec2)
    # the same runs in chunks of 50
    st3, rec3 = run_batched(ex, 100, chunk=50)
    _equal({k: np.asarray(v) for k, v in rec1.items()}, rec3)
    for a, b in zip(jax.tree_util.tree_leaves(st1), jax.tree_util.tree_leaves(st3)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # make_train's train(key): one run, one jitted scan; seed 1 of the four-seed run is that run
    # (equal up to float rounding: a lone run and a batch of runs compile differently)
    _, rec_lone = make_train(CFG, AGENT, 100)(jax.random.key(1))
    for k in ("tasks", "on_time", "k", "k_pos"):
        np.testing.assert_array_equal(np.asarray(rec_lone[k]), rec3[k][1], err_msg=k)
    for k in ("reward", "reward_observed", "loss"):
        np.testing.assert_allclose(np.asarray(rec_lone[k]), rec3[k][1], rtol=1e-5, atol=1e-5, err_msg=k)
    # bookkeeping: positions within K, the loss appears at the first training slot (t = 4)
    assert (rec3["k_pos"] >= 1).all() and (rec3["k_pos"] <= rec3["k"]).all()
    assert np.isnan(rec3["loss"][:, :4]).all() and np.isfinite(rec3["loss"][:, 4:]).all()
    assert (rec3["reward_observed"] <= rec3["tasks"] * 0.935 + 1e-4).all()


def test_groups_side_by_side(monkeypatch):
    """On a CPU a graph actor's runs go in groups of one width, side by side
    (``Executor.groups``; here in threads, ``GRLE_JAX_GROUP_PROCS=0``; in processes:
    ``test_groups_in_processes``): each run's records and final state are those of its group run
    as its own batch (the last group padded with the last run, dropped), through chunks, whatever
    the number of Python threads; the plan depends on the run count and the group size only."""
    from train.sweep import group_plan

    monkeypatch.setenv("GRLE_JAX_GROUP_PROCS", "0")  # this process's programs are the reference

    assert group_plan(4, 8) is None and group_plan(9, 8) == (2, 5) and group_plan(64, 8) == (8, 8)
    assert group_plan(1024, 8) == (128, 8) and group_plan(20, 8) == (4, 5) and group_plan(64, 0) is None
    # an even count where it costs no group of padding only; at most ``above`` runs: one batch
    assert group_plan(12, 4) == (4, 3) and group_plan(9, 4) == (3, 3) and group_plan(5, 2) == (3, 2)
    assert group_plan(8, 4, above=8) is None and group_plan(64, 4, above=8) == (16, 4)
    assert group_plan(64, 128, above=32) == (2, 32) and group_plan(1024, 128, above=32) == (8, 128)
    for runs in range(1, 300):
        for per in (2, 3, 4, 8):
            plan = group_plan(runs, per)
            if plan is not None:
                groups, width = plan
                assert 0 <= groups * width - runs < width and width <= per, (runs, per, plan)
    assert Executor(build_runs(CFG, AGENT, seeds=9), shard=False).groups == (2, 5)
    assert Executor(build_runs(CFG, AGENT, seeds=64), shard=False).groups == (2, 32)
    assert Executor(build_runs(CFG, AGENT, seeds=9), shard=False).learn_chunk == 2  # graph learners' groups
    assert Executor(build_runs(CFG, AGENT, seeds=8), shard=False).groups is None
    assert Executor(build_runs(CFG, AGENT, seeds=8), shard=False).learn_chunk == 0  # one batch, as before
    assert Executor(build_runs(CFG, AgentConfig(policy="droo"), seeds=64), shard=False).learn_chunk == 0
    assert Executor(build_runs(CFG, AgentConfig(policy="droo"), seeds=64), shard=False).groups == (2, 32)
    assert Executor(build_runs(CFG, AgentConfig(policy="droo"), seeds=32), shard=False).groups is None
    assert Executor(build_runs(CFG, AgentConfig(policy="greedy"), seeds=64), shard=False).groups == (2, 32)
    assert Executor(build_runs(CFG, AgentConfig(policy="greedy"), seeds=8), shard=False).groups is None
    assert Executor(build_runs(CFG, AgentConfig(policy="random"), seeds=128), shard=False).groups is None
    assert Executor(build_runs(CFG, AgentConfig(policy="random"), seeds=256), shard=False).groups == (2, 128)
    assert Executor(build_runs(CFG, AGENT, seeds=9), shard=False, group_runs=0).groups is None
    monkeypatch.setenv("GRLE_JAX_GROUP_RUNS", "0")
    assert Executor(build_runs(CFG, AGENT, seeds=9), shard=False).groups is None
    monkeypatch.delenv("GRLE_JAX_GROUP_RUNS")

    for agent in (AgentConfig(policy="greedy"), AgentConfig(policy="droo"), AGENT):  # fixed, MLP, graph
        rs = build_runs(CFG, agent, seeds=5, seed=0)
        ex = Executor(rs, shard=False, group_runs=2)
        assert ex.groups == (3, 2)  # runs (0, 1), (2, 3), (4, 4 padded)
        st, rec = run_batched(ex, 40, chunk=20)
        # (the graph learner's groups learn in chunks of 2: here, the whole group)
        whole = rs.trainer.batched("train", rs.axes, learn_chunk=ex.learn_chunk)
        for runs in ([0, 1], [2, 3], [4, 4]):
            ref_st, ref = whole(rs.keys[np.asarray(runs)], rs.hyper, 40)
            for r, run in enumerate(runs):
                for k in rec:
                    np.testing.assert_array_equal(rec[k][run], np.asarray(ref[k])[r], err_msg=f"{k} run {run}")
                for a, b in zip(jax.tree_util.tree_leaves(st), jax.tree_util.tree_leaves(ref_st)):
                    np.testing.assert_array_equal(np.asarray(a)[run], np.asarray(b)[r])
    monkeypatch.setattr(os, "cpu_count", lambda: 1)  # one thread: the groups one after another
    one = Executor(rs, shard=False, group_runs=2)
    _, rec1 = run_batched(one, 40, chunk=40)
    assert one._pool._max_workers == 1
    _equal(rec, rec1)


_GROUPS_ELSEWHERE = """
import os, sys
if sys.argv[2] == "pinned":  # the groups in threads of a process of one core, before jax sizes its pool
    os.sched_setaffinity(0, {int(sys.argv[3])})
    os.environ["GRLE_JAX_GROUP_PROCS"] = "0"
import jax, numpy as np
from grle_jax.agent import AgentConfig
from grle_jax.config import Config
from train import procs
from train.sweep import Executor, build_runs, run_batched
rs = build_runs(Config.for_scenario("base", devices=10, slot_ms=20.0), AgentConfig(policy="grle"), seeds=5, seed=0)
ex = Executor(rs, shard=False, group_runs=2)
assert ex.groups == (3, 2) and (ex.proc_cores == []) == (sys.argv[2] == "pinned")
assert not procs.persistent_cache_on()  # in processes: the executables compiled here are sent
st, rec = run_batched(ex, 40, chunk=20)
np.savez(sys.argv[1], **rec, **{f"state{i}": np.asarray(x) for i, x in enumerate(jax.tree_util.tree_leaves(st))})
"""


def test_groups_in_processes(tmp_path):
    """On a CPU of two cores or more, the groups run in worker processes, each pinned to its share
    of the cores (``train.procs``): every run's records and final state are, bit for bit, those of
    its group's program run in a process of one core (the independent reference: the groups in
    threads of a process pinned to one core), whether the workers compiled the program (with a
    persistent compile cache) or were sent the executable (without one); the state stays in the workers between calls, comes
    back with ``to_host`` (a checkpoint) and resumes; a stale handle and a dead worker are clear
    errors."""
    import subprocess
    import sys

    from train import procs

    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("one core: the groups run in threads")
    # N = 10 and the default agent: learning steps large enough that XLA:CPU splits their sums by
    # the threads of its pool (a pool of two gives other last bits of the loss than a pool of one)
    rs = build_runs(Config.for_scenario("base", devices=10, slot_ms=20.0), AgentConfig(policy="grle"), seeds=5, seed=0)
    ex = Executor(rs, shard=False, group_runs=2)
    assert ex.groups == (3, 2) and len(ex.proc_cores) == 2  # three groups on two workers
    mid = {}

    def keep(state, t_end, parts, trace, length):
        assert isinstance(state, procs.Remote)  # the state stayed in the workers
        if t_end == 20:
            mid["state"], mid["recs"] = ex.to_host(state), concat_records(parts)

    assert procs.persistent_cache_on()  # (tests/conftest.py): the workers compile the programs sent
    st, rec = run_batched(ex, 40, chunk=20, on_chunk=keep)
    # the same in a process without a compile cache (executables compiled there, sent), and the
    # reference: the groups in threads of a process pinned to one core
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    got = {}
    for mode in ("pinned", "procs"):
        subprocess.run([sys.executable, "-c", _GROUPS_ELSEWHERE, str(tmp_path / mode), mode, str(cores[0])], env=env,
                       check=True)
        got[mode] = np.load(tmp_path / f"{mode}.npz")
    ref = got["pinned"]
    leaves = jax.tree_util.tree_leaves(st)
    assert all(isinstance(x, np.ndarray) and x.shape[0] == 5 for x in leaves)  # fetched from the workers
    for k in rec:
        np.testing.assert_array_equal(rec[k], ref[k], err_msg=k)
        np.testing.assert_array_equal(got["procs"][k], ref[k], err_msg=f"{k}, executables sent")
    for i, x in enumerate(leaves):
        np.testing.assert_array_equal(x, ref[f"state{i}"], err_msg=f"state leaf {i}")
        np.testing.assert_array_equal(got["procs"][f"state{i}"], ref[f"state{i}"], err_msg=f"state leaf {i}, sent")
    assert np.isfinite(rec["loss"][:, -1]).all()  # it learned
    # resumed from the state fetched at slot 20 (sent back to the workers): the same slots 20-40
    _, resumed = run_batched(ex, 40, chunk=20, state=mid["state"], start=20, records=mid["recs"])
    _equal(resumed, rec)
    # a handle the next call consumed is refused; a killed worker is one clear error
    s1, _ = ex.run(ex.init(), 0, 20)
    ex.run(s1, 20, 20)
    with pytest.raises(ValueError, match="consumed"):
        ex.run(s1, 20, 20)
    pool = procs.workers_for(ex.proc_cores)
    pool.procs[1].kill()
    pool.procs[1].wait()
    with pytest.raises(procs.WorkerError, match="exited"):
        ex.run(ex.init(), 0, 20)
    assert procs.workers_for(ex.proc_cores) is not pool  # a new executor starts new workers

def test_learning_in_chunks():
    """``in_run_chunks``: under vmap, a function over chunks of runs (the last one filled with
    copies of the last run, dropped) gives the plain vmap's values, shared arguments included; a
    graph learner's groups learn two runs at a time and give each run the numbers of its group's
    program (a group padded to a multiple of the chunk as well), whatever the other groups hold,
    and the same decisions and rewards as the whole group learning at once, its loss within float
    rounding (XLA compiles a chunk inside its loop its own way)."""
    from train.loop import in_run_chunks

    os.environ["GRLE_JAX_GROUP_PROCS"] = "0"  # in threads: this process's programs are the reference
    try:
        _learning_in_chunks(in_run_chunks)
    finally:
        del os.environ["GRLE_JAX_GROUP_PROCS"]


def _learning_in_chunks(in_run_chunks):
    def f(x, tree, shared):
        return {"a": x * 3 + shared, "b": jnp.sum(tree["m"] * x[0], axis=0) + tree["s"]}

    xs = jnp.arange(7 * 3, dtype=jnp.int32).reshape(7, 3)
    trees = {"m": jnp.arange(7 * 4 * 2, dtype=jnp.int32).reshape(7, 4, 2), "s": jnp.int32(5)}
    for chunk in (0, 1, 2, 3, 7, 8):
        for axes in ((0, {"m": 0, "s": None}, None), (0, {"m": 0, "s": None}, 0)):
            shared = jnp.arange(7, dtype=jnp.int32) if axes[2] == 0 else jnp.int32(2)
            got = jax.jit(jax.vmap(in_run_chunks(f, chunk), in_axes=axes))(xs, trees, shared)
            ref = jax.vmap(f, in_axes=axes)(xs, trees, shared)
            for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(ref)):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"chunk {chunk}")

    rs = build_runs(CFG, AGENT, seeds=5, seed=0)
    ex = Executor(rs, shard=False, group_runs=3)
    assert ex.groups == (2, 3) and ex.learn_chunk == 2  # runs (0, 1, 2), (3, 4, 4 padded); chunks of 2
    st, rec = run_batched(ex, 40, chunk=20)
    chunked = rs.trainer.batched("train", rs.axes, learn_chunk=2)
    for runs in ([0, 1, 2], [3, 4, 4]):
        _, ref = chunked(rs.keys[np.asarray(runs)], rs.hyper, 40)
        for r, run in enumerate(runs):
            for k in rec:
                np.testing.assert_array_equal(rec[k][run], np.asarray(ref[k])[r], err_msg=f"{k} run {run}")
    _, at_once = rs.trainer.batched("train", rs.axes)(rs.keys[:3], rs.hyper, 40)
    for k in rec:
        if k == "loss":
            np.testing.assert_allclose(rec[k][:3], np.asarray(at_once[k]), rtol=1e-4, atol=1e-6)
        else:
            np.testing.assert_array_equal(rec[k][:3], np.asarray(at_once[k]), err_msg=k)
    assert np.isfinite(rec["loss"][:, 4::5]).all()  # the chunks did learn (an Adam step every 5 slots)


def test_one_init_program_for_every_n_of_the_graph_policies(grle_runs):
    """GRL/GRLE variables do not depend on N: every executor of a graph policy draws them with ONE
    shared program (most of an init's compile time). The split init gives the single-program
    init's numbers (the test above compares ``batched("train")`` with this executor, bit for bit)."""
    rs, ex = grle_runs
    other = Executor(build_runs(Config(devices=5, servers=2), AgentConfig(policy="grl"), seeds=4), shard=False)
    assert ex._vars is other._vars
    assert Executor(build_runs(CFG, AgentConfig(policy="droo"), seeds=4), shard=False)._vars is None
    a = ex.init().variables
    programs = ex._vars._cache_size()  # (other tests in this process may have drawn other run counts)
    b = other.init().variables  # same seeds: the same network at N = 3 and 5, from the same program
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert ex._vars._cache_size() == programs


def test_resume_is_bit_identical(grle_runs, tmp_path):
    rs, ex = grle_runs
    ck = str(tmp_path / "ck")
    _, full = run_batched(ex, 150, chunk=50)
    compiled = ex._run._cache_size()

    def save(state, t_end, parts, trace, length):
        checkpoint.save(ck, t_end, ex.to_host(state), concat_records(parts), {"runs": rs.runs})

    _, part = run_batched(ex, 150, chunk=50, on_chunk=save, checkpoint_every=50, stop_after=100)
    assert part["reward"].shape[1] == 100
    assert [os.path.basename(p) for p in checkpoint.complete(ck)] == ["slot_50", "slot_100"]
    # a write killed half way leaves a temp folder that is never taken for a checkpoint
    os.makedirs(os.path.join(ck, ".tmp-slot_150-123", "tree"))
    assert checkpoint.latest(ck).endswith("slot_100")
    t, state, recs = checkpoint.restore(ck, jax.eval_shape(ex.init))
    assert t == 100
    _, resumed = run_batched(ex, 150, chunk=50, state=state, start=t, records=recs)
    _equal(full, resumed)
    assert ex._run._cache_size() == compiled  # chunks, stops and resumes retrace nothing


def test_adaptive_k(grle_runs):
    rs, ex = grle_runs
    assert rs.trainer.agent.k_cap == k_max("grle", CFG.static()) == 1 + 3 * 9
    _, rec = run_batched(ex, 100, chunk=50)
    for r in range(rs.runs):
        k, pos = rec["k"][r], rec["k_pos"][r]
        assert k[0] == 4 and (k >= 1).all() and (k <= rs.trainer.agent.k_cap).all()
        # K changes only at multiples of Delta = 8, to 1 + the largest position of the last 8 slots
        for t in range(1, 100):
            if t % 8:
                assert k[t] == k[t - 1]
            else:
                assert k[t] == min(1 + pos[t - 8:t].max(), rs.trainer.agent.k_cap)


def test_learning_beats_random(grle_runs):
    """GRLE learns online: over slots 200-400 of a small instance it beats the uniformly random
    policy on the same draws, and it improves on its own start."""
    rs, ex = grle_runs
    _, rec = run_batched(ex, 400, chunk=50)
    rnd = build_runs(CFG, AgentConfig(policy="random"), seeds=4)
    _, rec_rnd = run_batched(Executor(rnd, shard=False), 400, chunk=400)
    late = slice(200, 400)
    assert rec["reward"][:, late].mean() > rec_rnd["reward"][:, late].mean() + 0.1
    assert rec["reward"][:, late].mean() > rec["reward"][:, :50].mean()


def test_run_keys():
    """The stacked run keys are jax.random.key(seed) of each run's seed, on both paths (one vmapped
    call for int32 seeds, key by key beyond), and building 8,192 runs stays cheap (it compiled a
    program with one operand per key before: 239 s)."""
    seeds = [0, 1, 7, 12345, 2 ** 31 - 1]
    for ss in (seeds, seeds + [2 ** 31, 2 ** 32 + 5]):
        keys = run_keys(ss)
        assert keys.shape == (len(ss),)
        for i, s in enumerate(ss):
            np.testing.assert_array_equal(jax.random.key_data(keys[i]), jax.random.key_data(jax.random.key(s)))
    rs = build_runs(Config(devices=4, servers=2), AgentConfig(policy="droo"), seeds=8192, seed=3)
    assert rs.keys.shape == (8192,)
    np.testing.assert_array_equal(jax.random.key_data(rs.keys[8191]), jax.random.key_data(jax.random.key(3 + 8191)))


def test_chunk_plan():
    assert chunk_plan(0, 250, 100, None) == [(0, 100), (100, 100), (200, 50)]
    assert chunk_plan(0, 250, 100, 60) == [(0, 60), (60, 60), (120, 60), (180, 60), (240, 10)]
    assert chunk_plan(120, 200, 1000, 50) == [(120, 30), (150, 50)]


def test_oracle_in_the_final_window_only():
    """--normalise's oracle every slot, or (benchmarks) from a given slot on; the oracle's observed
    reward bounds the executed decision's."""
    rs = build_runs(CFG, AgentConfig(policy="random"), seeds=2, normalise=True, normalise_from=30)
    _, rec = run_batched(Executor(rs, shard=False), 40, chunk=40)
    assert np.isnan(rec["reward_oracle"][:, :30]).all()
    late = rec["reward_oracle"][:, 30:]
    assert np.isfinite(late).all() and (late >= rec["reward_observed"][:, 30:] - 1e-4).all()


@pytest.mark.parametrize("policy,grid", [("droo", None), ("drooe", {"train_every": [3, 4]})])
def test_acting_ahead_is_acting_slot_by_slot(policy, grid):
    """DROO and DROOE act ahead (``Trainer._block``): the slots' inputs drawn first, the MLP run on
    a block of slots at once. Bit for bit what slot-by-slot acting gives, also where an Adam step
    falls inside a block (train_every 3 or 4 against blocks of 5, chunks that start mid-block),
    with train_every shared by the runs or different per run, whichever emitter XLA:CPU compiles
    with (the suite's elemental one, or the default with ``GRLE_JAX_TEST_EMITTERS=default``). The
    11-slot call ends with a block of 6 (5 + 6, not 5 + 5 + 1): compiled the elemental way, a lone
    last slot holding an Adam step (slot 17 here) moved the last bit of DROOE's Adam moments
    (docs/model.md, acting ahead)."""
    from train.loop import Trainer

    agent = AgentConfig(policy=policy, k=3, train_every=3, batch=8, memory=32)
    rs = build_runs(CFG, agent, seeds=2, seed=5, grid=grid)
    ahead = Trainer(rs.trainer.env, rs.trainer.agent, act_ahead=5)
    slot_by_slot = Trainer(rs.trainer.env, rs.trainer.agent, act_ahead=1)
    assert ahead.act_ahead == 5 and slot_by_slot.act_ahead == 1
    init = slot_by_slot.batched("init", rs.axes)
    ref_state, ref = slot_by_slot.batched("run", rs.axes)(init(rs.keys, rs.hyper), rs.hyper, 0, 25)
    run = ahead.batched("run", rs.axes)
    state, parts, t = init(rs.keys, rs.hyper), [], 0
    for length in (7, 11, 7):  # blocks 5 + 2, 5 + 6 from slot 7 (no lone last slot), 5 + 2 from slot 18
        state, rec = run(state, rs.hyper, t, length)
        parts.append({k: np.asarray(v) for k, v in rec.items()})
        t += length
    _equal({k: np.asarray(v) for k, v in ref.items()}, concat_records(parts))
    for a, b in zip(jax.tree_util.tree_leaves(ref_state), jax.tree_util.tree_leaves(state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.isfinite(ref["loss"][:, 3:]).all()  # Adam steps happened inside the blocks


def test_overdue_rule_sweeps_in_one_program():
    """``overdue`` is a dynamic value (EnvParams.abort): a sweep over both rules runs in one
    program, and each rule's runs give what the rule's own runs give (DROOE learns: its Adam steps
    see the rule through the rewards)."""
    cfg = Config.for_scenario("capacity", devices=6, servers=2, slot_ms=20.0, deadline_ms=30.0)
    agent = AgentConfig(policy="drooe", k=3, train_every=3, batch=8, memory=32)
    rs = build_runs(cfg, agent, seeds=2, seed=1, grid={"overdue": ["abort", "keep"]})
    assert [r["overdue"] for r in rs.table] == ["abort", "abort", "keep", "keep"]
    _, rec = run_batched(Executor(rs, shard=False), 40, chunk=40)
    for i, od in enumerate(("abort", "keep")):
        alone = build_runs(cfg.replace(overdue=od), agent, seeds=2, seed=1)
        _, ref = run_batched(Executor(alone, shard=False), 40, chunk=40)
        for k in ("reward", "on_time", "loss"):
            np.testing.assert_allclose(rec[k][2 * i:2 * i + 2], ref[k], rtol=1e-6, atol=1e-7, err_msg=f"{od} {k}")
    assert not np.array_equal(rec["reward"][:2], rec["reward"][2:])  # the rules differ on these slots


@pytest.mark.parametrize("policy,n,seeds", [("grle", 4, 5), ("drooe", 6, 3)])
def test_fast_compile_gives_the_same_numbers(policy, n, seeds, default_emitters):
    """train.compiling: a run program compiled the fast way (XLA:CPU's elemental emitter) gives
    the numbers of the default one bit for bit, the final states (weights, Adam moments, replay
    memory) and every record. GRLE at N = 4 with 5 runs is the shape where the two ways summed the
    loss in different orders before the loss was summed in a fixed order (grle_jax.policies.fixed_order_sum)."""
    from train.compiling import options

    if options(True) is None:
        pytest.skip("this jaxlib has no fast way to compile")
    cfg = Config.for_scenario("base", devices=n, servers=2, slot_ms=20.0)
    agent = AgentConfig(policy=policy, train_every=5)
    out = []
    for fast in (False, True):
        ex = Executor(build_runs(cfg, agent, seeds=seeds, seed=3), shard=False, group_runs=0, fast_compile=fast)
        out.append(jax.device_get(run_batched(ex, 30, chunk=30)))
    (sa, ra), (sb, rb) = out
    assert set(ra) == set(rb)
    for k in ra:
        assert ra[k].tobytes() == rb[k].tobytes(), k
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(sa), jax.tree_util.tree_leaves(sb)):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), jax.tree_util.keystr(path)
    assert np.isfinite(ra["loss"][:, -1]).all()


def test_compile_mode_rule():
    from grle_jax.errors import ConfigError
    from train import compiling

    assert compiling.choose("auto", compiling.FAST_UP_TO) and not compiling.choose("auto", compiling.FAST_UP_TO + 1)
    assert compiling.choose("fast", 10 ** 9) and not compiling.choose("full", 1)
    with pytest.raises(ConfigError, match="compile: must be one of auto, fast, full, got 'never'"):
        compiling.choose("never", 1)
    # jax takes compiler options on a top-level jit only: inside another trace the plain jit runs
    f = compiling.jit(lambda x: x * 2.0 + 1.0, True)
    x = jax.numpy.arange(4.0)
    assert np.array_equal(jax.jit(lambda y: f(y) - 1.0)(x), x * 2.0)
    assert jax.eval_shape(f, x).shape == (4,) and np.array_equal(f(x), x * 2.0 + 1.0)


def test_compile_modes_benchmark(tmp_path, capsys):
    """benchmarks.compile_modes: both ways timed, their numbers compared, JSON written; bad input one line."""
    import json

    from benchmarks import compile_modes
    from train.compiling import options

    if options(True) is None:
        pytest.skip("this jaxlib has no fast way to compile")
    out = tmp_path / "modes.json"
    assert compile_modes.main(["--policies", "droo", "--n-values", "3", "--runs", "2", "--slots", "20", "--reps", "2",
                               "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["same_numbers"] and row["policy"] == "droo" and row["compile_s"]["fast"] > 0
    assert "same numbers" in capsys.readouterr().out
