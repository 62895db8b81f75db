"""Groups of runs in worker processes, one per share of the cores (issue 14; docs/benchmarks.md,
"Groups in processes, one per core").

On a CPU, ``train.sweep.Executor`` runs many runs in groups of one width (``group_plan``). Run in
threads of one process, the groups' programs share XLA:CPU's one pool of compute threads: on a
2-core machine both cores then take turns at both groups' work, and each core's caches hold both
groups' arrays. In processes, each pinned to its own share of the cores (one core each on 2 cores),
each group's arrays stay in its core's caches: 64 GRLE runs gave about 5,450 agent-slots/s against
4,630-4,950 in threads (docs/benchmarks.md).

The parent traces each group program once, as before, over flat lists of leaves (no pytree types
cross the pipe). Without a persistent compile cache in the parent (``train.grle``'s default) the
parent compiles it, on every core, and sends the executable (``jax.experimental.serialize_executable``):
pinned to one core each, the workers would take twice as long to compile it (GRLE, 64 runs: 12.2
against 6.6 s). With one (``train.experiments``, the tests) it sends the program instead
(``jax.export``), which each worker compiles through the cache: an executable the parent loaded
from that cache serializes without its kernels ("Function ... not found" in the worker). The
executable does not depend on the compiling process's thread count; its numbers depend on the
thread pool that runs it (below). A group's state stays in its worker between calls (``Remote``, a
handle to it), so a call sends nothing but the slot number and brings back the records;
``Executor.to_host`` fetches the states.

Numbers: a worker's pool of compute threads has as many threads as its share of the cores, and
XLA:CPU splits some long sums of a learning step by the number of threads of its pool, so a learner's loss can differ in its last bits from the same program run in threads of
the parent (whose pool has every core; so does a lone run's: docs/training.md, "Many runs"). Every
run's numbers are those of its group's program on a pool of one worker's share of the cores, bit
for bit, whichever worker runs it (tests/test_train.py::test_groups_in_processes checks them
against the groups run in a process pinned to one core). ``GRLE_JAX_GROUP_PROCS=0`` runs the
groups in threads as before.

The worker is this module run as ``python -m train.procs`` (not ``multiprocessing``, whose spawned
children import the parent's main script again); parent and worker talk through pickled messages
on the worker's stdin and stdout.
"""

from __future__ import annotations

import atexit
import itertools
import os
import pickle
import subprocess
import sys
import threading
import traceback

PROCS_ENV = "GRLE_JAX_GROUP_PROCS"  # 0: the groups in threads of this process; N: at most N workers


def worker_cores(groups: int) -> list[tuple[int, ...]]:
    """The cores of each worker for ``groups`` groups: this process's cores (its affinity) split in
    ``min(groups, cores)`` contiguous shares of equal size (the rest to none), or [] (threads) when
    that is fewer than two workers or ``GRLE_JAX_GROUP_PROCS`` says 0 (a number: at most that many)."""
    try:
        cores = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux: threads
        return []
    env = os.environ.get(PROCS_ENV)
    cap = len(cores) if not env else int(env)  # checked by train.sweep.check_env
    n = min(groups, len(cores), cap)
    if n < 2:
        return []
    per = len(cores) // n
    return [tuple(cores[i * per:(i + 1) * per]) for i in range(n)]


def persistent_cache_on() -> bool:
    """Whether this process may load compiled programs from jax's persistent compile cache (then an
    executable cannot be sent to a worker: one loaded from the cache serializes without its kernels)."""
    import jax

    try:
        from jax._src import compilation_cache

        return bool(compilation_cache.is_persistent_cache_enabled())
    except Exception:  # noqa: BLE001 - another jax: judge by the public options
        return bool(jax.config.jax_compilation_cache_dir) and bool(jax.config.jax_enable_compilation_cache)


class WorkerError(RuntimeError):
    pass


class Remote:
    """The state of an executor's runs, kept in its worker processes (``Executor.to_host`` fetches
    it). Valid until the next ``Executor.run`` on it (which, like the in-process program, consumes
    its state)."""

    def __init__(self, owner, version: int):
        self.owner, self.version = owner, version

    def block_until_ready(self):
        return self

    def __repr__(self):
        return f"Remote(state of {self.owner.rs.runs} runs in worker processes)"


class Workers:
    """Worker processes, each pinned to its cores; one lock: one caller at a time."""

    def __init__(self, cores: list[tuple[int, ...]]):
        import train

        root = os.path.dirname(os.path.dirname(os.path.abspath(train.__file__)))
        env = dict(os.environ, JAX_PLATFORMS="cpu",
                   PYTHONPATH=os.pathsep.join([root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        import jax

        if jax.config.jax_compilation_cache_dir:  # this process's persistent compile cache, set in code or not
            env["JAX_COMPILATION_CACHE_DIR"] = str(jax.config.jax_compilation_cache_dir)
            env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = str(jax.config.jax_persistent_cache_min_compile_time_secs)
        self.cores = cores
        self.procs = [subprocess.Popen([sys.executable, "-m", "train.procs", ",".join(map(str, c))],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
                      for c in cores]
        self.lock = threading.RLock()
        self._ids = itertools.count()
        self._drops: list[int] = []  # owners gone (garbage collected): forgotten at the next call
        self.closed = False

    def __len__(self):
        return len(self.procs)

    def new_id(self) -> int:
        return next(self._ids)

    def send(self, w: int, msg) -> None:
        p = self.procs[w]
        try:
            pickle.dump(msg, p.stdin, protocol=5)
            p.stdin.flush()
        except (BrokenPipeError, OSError):
            self._died(w)

    def recv(self, w: int):
        p = self.procs[w]
        try:
            status, payload = pickle.load(p.stdout)
        except (EOFError, OSError, pickle.UnpicklingError):
            self._died(w)
        if status == "err":
            raise WorkerError(f"group worker {w} (cores {self.cores[w]}) failed:\n{payload}")
        return payload

    def _died(self, w: int):
        p = self.procs[w]
        try:
            code = p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        self.kill()
        raise WorkerError(f"group worker {w} (cores {self.cores[w]}) exited (code {code}); "
                          f"set {PROCS_ENV}=0 to run the groups in threads instead")

    def drop(self, owner: int) -> None:
        """An executor is gone: its programs and states are forgotten at the next call (not now: this
        runs from the garbage collector, maybe in the middle of a call)."""
        self._drops.append(owner)

    def ask_all(self, msgs: dict[int, list]) -> dict[int, list]:
        """Send each worker its messages, as one batch, then collect each worker's answers (one
        reply per worker, after all its work: a worker never waits on a full pipe while the parent
        reads another worker's answers)."""
        with self.lock:
            if self.closed:
                raise WorkerError(f"the group workers were closed; set {PROCS_ENV}=0 to run the groups in threads")
            drops, self._drops[:] = list(self._drops), []
            pre = [("drop", o) for o in drops]
            try:
                for w in range(len(self.procs)):
                    self.send(w, ("batch", pre + list(msgs.get(w, []))))
                return {w: self.recv(w)[len(pre):] for w in range(len(self.procs))}
            except BaseException as err:  # Ctrl-C or a worker's error: the workers' answers are out of step
                if not isinstance(err, WorkerError) or not self.closed:
                    self.kill()
                raise

    def kill(self):
        """Stop every worker now (their states are lost; an executor that used them raises)."""
        self.closed = True
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            p.wait()
            for f in (p.stdin, p.stdout):
                try:
                    f.close()
                except Exception:  # noqa: BLE001 - a broken pipe
                    pass

    def close(self):
        if self.closed:
            return
        self.closed = True
        for p in self.procs:
            try:
                pickle.dump(("stop",), p.stdin, protocol=5)
                p.stdin.close()
            except Exception:  # noqa: BLE001 - already gone
                pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            try:
                p.stdout.close()
            except Exception:  # noqa: BLE001
                pass


_POOLS: dict[tuple, Workers] = {}
_POOLS_LOCK = threading.Lock()


def workers_for(cores: list[tuple[int, ...]]) -> Workers:
    """The worker processes for this layout of cores, started once and shared by every executor
    (a sweep's executors do not each pay the start of a process)."""
    key = tuple(cores)
    with _POOLS_LOCK:
        w = _POOLS.get(key)
        if w is None or w.closed:
            w = _POOLS[key] = Workers(cores)
        return w


def cpu_seconds() -> float:
    """CPU seconds of this process and of its live group workers, all threads (benchmarks: the
    groups' work is done in the workers, which ``time.process_time`` does not see; a worker's are
    read from /proc, in clock ticks of 10 ms)."""
    import time

    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for w in list(_POOLS.values()):
        for p in w.procs:
            try:
                with open(f"/proc/{p.pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
            except (OSError, IndexError, ValueError):
                pass
    return total


@atexit.register
def _close_all():
    for w in list(_POOLS.values()):
        w.close()


# --- the worker ---------------------------------------------------------------------------------------
def _serve(inp, out) -> None:
    import jax
    import numpy as np
    from jax.experimental import serialize_executable

    progs, states = {}, {}

    def handle(msg):
        op = msg[0]
        if op == "exec":  # (exec, key, executable, in_tree, out_tree): compiled by the parent
            _, key, blob, in_tree, out_tree = msg
            progs[key] = serialize_executable.deserialize_and_load(blob, in_tree, out_tree)
            return None
        if op == "compile":  # (compile, key, serialized jax.export program, compiler options)
            _, key, blob, options = msg
            exp = jax.export.deserialize(blob)
            specs = jax.tree_util.tree_unflatten(exp.in_tree, [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in exp.in_avals])
            # compiled now, once: a jit would compile again for the program's own (committed) outputs
            progs[key] = jax.jit(exp.call, donate_argnums=(0,), compiler_options=options).lower(*specs[0]).compile()
            return None
        if op == "put":  # (put, key, state leaves, hyper leaves): a group's, host arrays
            _, key, state, hyper = msg
            states[key] = (jax.device_put(state), jax.device_put(hyper))
            return None
        if op == "run":  # (run, program key, group key, t0) -> the group's record leaves
            _, pkey, key, t0 = msg
            state, hyper = states.pop(key)
            new, rec = progs[pkey](state, hyper, np.int32(t0))
            states[key] = (new, hyper)
            return [np.asarray(x) for x in rec]
        if op == "get":
            return [np.asarray(x) for x in states[msg[1]][0]]
        if op == "drop":  # (drop, owner id): forget an executor's programs and states
            for d in (progs, states):
                for k in [k for k in d if k[0] == msg[1]]:
                    del d[k]
            return None
        raise ValueError(f"unknown message {op!r}")

    while True:
        try:
            msg = pickle.load(inp)
        except EOFError:
            return
        if msg[0] == "stop":
            return
        try:  # ("batch", [messages]) -> ("ok", [answers]) or ("err", the traceback)
            reply = ("ok", [handle(m) for m in msg[1]])
        except Exception:  # noqa: BLE001 - the parent raises it with this text
            reply = ("err", traceback.format_exc())
        pickle.dump(reply, out, protocol=5)
        out.flush()


def main() -> None:
    import signal

    # Ctrl-C in a terminal reaches the whole process group: the parent stops (and kills) its workers
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.sched_setaffinity(0, {int(c) for c in sys.argv[1].split(",")})  # before jax sizes its thread pool
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr: stdout carries the messages only
    _serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    main()
