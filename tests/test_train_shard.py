"""The run axis split over devices and over processes gives the numbers of one device / one
process (issue 4, part 4). Both run in subprocesses: four CPU devices forced with XLA_FLAGS, and
two processes joined by ``jax.distributed`` on 127.0.0.1 (gloo collectives)."""

import os
import socket
import subprocess
import sys
import textwrap

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# the settings of tests/test_train.py (same compiled program when run in the test process)
SETUP = textwrap.dedent("""
    import jax, numpy as np
    from grle_jax.agent import AgentConfig
    from grle_jax.config import Config
    from train.sweep import Executor, build_runs, run_batched
    CFG = Config(devices=3, servers=2)
    AGENT = AgentConfig(policy="grle", variant="paper", k=4, adaptive_k=True, k_delta=8, train_every=5, batch=8, memory=32)
""")


def _env(**extra):
    """This process's environment for a subprocess: XLA_FLAGS only the emitter choice (conftest.py)
    and what ``extra`` adds."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    keep = [f for f in env.pop("XLA_FLAGS", "").split() if f.startswith("--xla_cpu_use_fusion_emitters")]
    flags = " ".join(keep + [extra.pop("XLA_FLAGS")] if "XLA_FLAGS" in extra else keep)
    if flags:
        env["XLA_FLAGS"] = flags
    env.update(extra)
    return env


def test_sharded_equals_unsharded(tmp_path):
    """5 runs (padded to 8) over 4 devices: the same records and final states as on one device.
    DROO here (its programs compile in half GRLE's time); GRLE's sharded path, with its initial
    variables from the program shared by every N, runs in the two-process test below."""
    script = SETUP + textwrap.dedent("""
        assert jax.device_count() == 4
        DROO = AgentConfig(policy="droo", k=4, adaptive_k=True, k_delta=8, train_every=5, batch=8, memory=32)
        rs = build_runs(CFG, DROO, seeds=5, seed=10)
        a_state, a = run_batched(Executor(rs, shard=True), 40, chunk=40)
        b_state, b = run_batched(Executor(rs, shard=False), 40, chunk=40)
        for k in a:  # the loss may move by an ulp: the dense matmuls sum per batch size
            if k == "loss":
                np.testing.assert_allclose(a[k], b[k], rtol=1e-6, err_msg=k)
            else:
                np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        assert a["reward"].shape == (5, 40)
        sharding = jax.tree_util.tree_leaves(a_state)[0].sharding
        assert len(sharding.device_set) == 4, sharding
        print("SHARDED-OK")
    """)
    p = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=4"))
    assert p.returncode == 0 and "SHARDED-OK" in p.stdout, p.stdout + p.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(tmp_path):
    """Two processes split four runs (two each) and gather the records; they equal the same four
    runs computed in this one process (tests/test_train.py's runs: no new compile here)."""
    port = _free_port()
    out = tmp_path / "gathered.npz"
    worker = SETUP + textwrap.dedent(f"""
        import sys
        from train.sweep import distributed_init
        pid = int(sys.argv[1])
        distributed_init("127.0.0.1:{port}", 2, pid)
        assert jax.process_count() == 2 and jax.device_count() == 2
        rs = build_runs(CFG, AGENT, seeds=4, seed=0)
        _, rec = run_batched(Executor(rs), 100, chunk=50)
        if pid == 0:
            np.savez({str(out)!r}, **rec)
        print("WORKER-OK", pid)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", worker, str(i)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=_env()) for i in range(2)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=600)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)

    from grle_jax.agent import AgentConfig
    from grle_jax.config import Config
    from train.sweep import Executor, build_runs, run_batched

    rs = build_runs(Config(devices=3, servers=2),
                    AgentConfig(policy="grle", variant="paper", k=4, adaptive_k=True, k_delta=8, train_every=5, batch=8, memory=32),
                    seeds=4, seed=0)
    _, ref = run_batched(Executor(rs, shard=False), 100, chunk=50)
    got = np.load(out)
    assert set(got.files) == set(ref)
    for k in ref:  # decisions and rewards exact; the loss within an ulp (dense matmuls, other batch size)
        if k == "loss":
            np.testing.assert_allclose(got[k], ref[k], rtol=1e-6, err_msg=k)
        else:
            np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
