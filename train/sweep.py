"""Many runs side by side: seeds x a grid of dynamic hyperparameters, one compiled program.

A sweep file is a JSON object mapping a field to a list of values; the grid is their Cartesian
product (in the file's key order, the last key varying fastest), and every grid point runs with
every seed: run ``r = point * seeds + seed_index``. Fields a sweep may vary are the DYNAMIC ones:

- learning: ``lr``, ``k``, ``adaptive_k``, ``k_delta``, ``train_every``, ``batch``, ``memory``
  (K, batch and memory are masked within capacities sized for the largest value);
- environment: ``slot_ms``, ``deadline_ms``, ``rho``, ``overdue``, ``p_link``, ``p_active``,
  ``topology_every``, the ranges ``size_kb``, ``rate_mbps``, ``phi_range``, ``eps_range``, ``csi_range``, and
  ``scenario`` (a preset: it sets the three scenario ranges).

Static fields (policy, devices, servers, network widths) change array shapes: run them
separately.

Execution (``run_batched``): the run axis is ``vmap``ped; hyper leaves that vary get axis 0, the
others are shared (so e.g. a common ``train_every`` keeps the training ``cond`` a real branch).
With several devices the run axis is split over a 1-D mesh ``('runs',)`` with ``jax.shard_map``
(runs padded to a multiple of the device count, padding dropped after); across processes
(``jax.distributed``) the mesh spans every process's devices and the records are gathered to every
host. The run is cut into chunks for the progress bar and checkpoints; slot keys depend on the
slot index only, so the chunk boundaries leave no trace in the numbers.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from grle_jax.agent import DYNAMIC_FIELDS as AGENT_FIELDS
from grle_jax.agent import AgentConfig
from grle_jax.config import SCENARIOS, Config, check_scenario
from grle_jax.errors import ConfigError
from grle_jax.profile import DEFAULT_PROFILE, Profile

from .loop import Hyper, RunState, Trainer, make_hyper, make_trainer

ENV_FIELDS = ("slot_ms", "deadline_ms", "rho", "overdue", "p_link", "p_active", "topology_every", "size_kb",
              "rate_mbps", "phi_range", "eps_range", "csi_range", "scenario")
STATIC_FIELDS = ("policy", "devices", "servers", "mlp_hidden", "gcn_hidden", "head_hidden")
SWEEP_FIELDS = AGENT_FIELDS + ENV_FIELDS


# --- the grid ----------------------------------------------------------------------------------------
def load_sweep(path: str) -> dict:
    from grle_jax.cli import read_json

    return check_grid(read_json(path, "sweep"))


def check_grid(grid) -> dict:
    if not isinstance(grid, dict) or not grid:
        raise ConfigError("sweep", "must be a non-empty JSON object {field: [values, ...]}")
    for k, v in grid.items():
        if k in STATIC_FIELDS:
            raise ConfigError(f"sweep.{k}", "is static (it changes shapes or the program): run it separately")
        if k not in SWEEP_FIELDS:
            raise ConfigError(f"sweep.{k}", f"unknown field (sweepable: {', '.join(SWEEP_FIELDS)})")
        if not isinstance(v, list) or not v:
            raise ConfigError(f"sweep.{k}", f"must be a non-empty list of values, got {v!r}")
    return grid


def grid_points(grid: dict | None) -> list[dict]:
    if not grid:
        return [{}]
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def apply_point(cfg: Config, agent: AgentConfig, point: dict) -> tuple[Config, AgentConfig]:
    """The configs of one grid point; bad values raise ``ConfigError('sweep.<field>', ...)``."""
    env_changes, agent_changes = {}, {}
    for k, v in point.items():
        if k == "scenario":
            env_changes.update(scenario=v, **SCENARIOS[check_scenario(v, "sweep.scenario")])
        elif k in AGENT_FIELDS:
            agent_changes[k] = v
        else:
            env_changes[k] = v
    try:
        cfg2 = cfg.replace(**env_changes) if env_changes else cfg
        agent2 = agent.replace(**agent_changes) if agent_changes else agent
        agent2.check(cfg2.static())
    except ConfigError as err:
        raise ConfigError(f"sweep.{err.field}", err.why) from None
    return cfg2, agent2


# --- the runs ------------------------------------------------------------------------------------------
@dataclass
class RunSet:
    """Everything needed to execute a set of runs (seeds x grid points)."""

    cfg: Config
    agent: AgentConfig
    profile: Profile
    trainer: Trainer
    keys: jax.Array  # (R,) typed keys
    hyper: Hyper  # leaves with a leading R axis where ``axes`` says 0
    axes: Hyper  # 0 or None per leaf
    table: list = field(default_factory=list)  # per run: {"run", "seed", **point}
    normalise: bool = False

    @property
    def runs(self) -> int:
        return len(self.table)


def build_runs(cfg: Config, agent: AgentConfig, seeds: int = 1, seed: int = 0, grid: dict | None = None,
               profile: Profile = DEFAULT_PROFILE, normalise: bool = False, normalise_from: int = 0,
               record_trace: bool = False) -> RunSet:
    """Runs for every grid point and seed; run ``i`` has the key of seed ``seed + i``
    (``jax.random.key(seed + i)``), so it draws what a lone run with that seed draws (its float
    arithmetic depends on the batch width, so its numbers may part from the lone run's:
    docs/training.md, "Many runs"). With ``normalise`` the exact oracle runs every slot
    from ``normalise_from`` on (its reward is NaN before: a long run can pay for the oracle in its
    final window only). With ``record_trace`` the records carry each slot's state, inputs, decision
    and outcome (``trace``; a trace file is written from run 0)."""
    points = grid_points(grid)
    confs = [apply_point(cfg, agent, p) for p in points]
    env = cfg.static(profile)
    caps = {
        "k_cap": max(a.k_for(env) for _, a in confs),
        "batch_cap": max(a.batch for _, a in confs),
        "memory_cap": max(a.memory for _, a in confs),
    }
    if any(a.adaptive_k for _, a in confs):
        agent = agent.replace(adaptive_k=True) if not agent.adaptive_k else agent
    trainer = make_trainer(cfg, agent, profile, normalise, record_trace=record_trace, **caps)
    trainer.normalise_from = int(normalise_from)
    point_hypers, table = [], []
    for p, (c, a) in zip(points, confs):
        point_hypers.append(make_hyper(c, a, profile))
        for i in range(seeds):
            table.append({"run": len(table), "seed": seed + i, **p})
    # one row per run, point-major (the seeds of a point are consecutive): a leaf equal at every
    # point is shared (axis None), else each point's value is repeated over its seeds. Built in
    # numpy, so the cost is linear in the runs (8,192 runs: well under a second)
    leaves = [jax.tree_util.tree_leaves(h) for h in point_hypers]
    treedef = jax.tree_util.tree_structure(point_hypers[0])
    stacked, axes = [], []
    for j in range(len(leaves[0])):
        vals = [np.asarray(ls[j]) for ls in leaves]
        if all(np.array_equal(vals[0], v) for v in vals[1:]):
            stacked.append(jnp.asarray(vals[0]))
            axes.append(None)
        else:
            stacked.append(jnp.asarray(np.repeat(np.stack(vals), seeds, axis=0)))
            axes.append(0)
    hyper = jax.tree_util.tree_unflatten(treedef, stacked)
    hyper_axes = jax.tree_util.tree_unflatten(treedef, axes)
    keys = run_keys([r["seed"] for r in table])
    return RunSet(cfg=cfg, agent=agent, profile=profile, trainer=trainer, keys=keys, hyper=hyper,
                  axes=hyper_axes, table=table, normalise=normalise)


def run_keys(seeds) -> jax.Array:
    """``jax.random.key(s)`` for every seed, stacked (shape (len(seeds),)). One vmapped call, not
    a ``jnp.stack`` of thousands of keys (whose XLA program has one operand per key and took 239 s
    to compile at 8,192 runs); seeds outside int32 take the key-by-key path. Equal either way
    (tests/test_train.py::test_run_keys)."""
    seeds = [int(s) for s in seeds]
    if seeds and all(0 <= s < 2 ** 31 for s in seeds):
        return jax.vmap(jax.random.key)(jnp.asarray(seeds, dtype=jnp.int32))
    data = [np.asarray(jax.random.key_data(jax.random.key(s))) for s in seeds]
    return jax.random.wrap_key_data(jnp.asarray(np.stack(data)))


# --- execution: vmap, sharded over devices (and processes) ----------------------------------------------
def distributed_init(coordinator: str, num_processes: int, process_id: int) -> None:
    """Join a multi-process JAX job (one process per host, or several on one host for tests).
    On CPU the collectives go through gloo; on GPU hosts JAX uses NCCL by itself."""
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except Exception:  # pragma: no cover - older/newer JAX without the option
        pass
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)


def _mesh():
    devs = jax.devices()  # every process's devices
    return jax.sharding.Mesh(np.asarray(devs), ("runs",))


def sharded(fn_per_run: Callable, in_axes: tuple, mesh) -> Callable:
    """shard_map over the run axis of a vmapped per-run function. ``in_axes`` as for vmap (pytrees
    of 0/None); leaves with 0 are split over the mesh, the others replicated."""
    from jax.sharding import PartitionSpec as P

    vm = jax.vmap(fn_per_run, in_axes=in_axes)
    specs = jax.tree_util.tree_map(lambda a: P("runs") if a == 0 else P(), in_axes,
                                   is_leaf=lambda x: x is None or isinstance(x, int))
    return jax.shard_map(vm, mesh=mesh, in_specs=specs, out_specs=P("runs"), check_vma=False)


GROUP_ENV = "GRLE_JAX_GROUP_RUNS"  # runs per group on a CPU (0: one batch), for A/B runs
LEARN_CHUNK_ENV = "GRLE_JAX_LEARN_CHUNK"  # runs per learning chunk inside a group (0: the whole group), for A/B runs
# Fixed policies (greedy, the oracle): more than 8 runs in at least two groups of at most 512 (a
# learner's actor says its own: ``Actor.cpu_group_runs``, ``cpu_group_above``); random, whose slot
# is cheap enough that a small set's calls would be mostly overhead, from 129 runs. Greedy at 64
# runs 28,535 -> 57,854 run-slots/s, random at 8,192 runs 761,756 -> 1,303,357 (docs/benchmarks.md).
FIXED_GROUP_RUNS = 512
FIXED_GROUP_ABOVE = {"random": 128}  # the others: 8


def check_env() -> None:
    """The A/B switches of the groups (``GRLE_JAX_GROUP_RUNS``, ``GRLE_JAX_LEARN_CHUNK``,
    ``GRLE_JAX_GROUP_PROCS``), when set, are whole numbers >= 0: else one ``ConfigError`` naming the
    variable and its value (the CLIs check them before they start anything)."""
    from .procs import PROCS_ENV

    for name in (GROUP_ENV, LEARN_CHUNK_ENV, PROCS_ENV):
        val = os.environ.get(name)
        if val is None or val == "":
            continue
        try:
            ok = int(val) >= 0
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError(name, f"must be a whole number >= 0 (0: off), got {val!r}")


def group_plan(runs: int, per_group: int | None, above: int | None = None) -> tuple[int, int] | None:
    """(groups, width): ``runs`` split into ``max(2, ceil(runs / per_group))`` groups of one width
    (the last padded by repeating its last run, fewer pads than the width), one more group where
    that makes the count even without a group of padding only (two cores then share the groups
    evenly: 12 runs in 4 groups of 3, not 3 of 4), or None for one batch: ``per_group`` 0 or None,
    or at most ``above`` runs (default ``per_group``). The plan depends on these numbers only,
    never on the machine, so a run's numbers do not either."""
    if not per_group or runs <= (per_group if above is None else above) or runs < 2:
        return None
    groups = max(2, math.ceil(runs / per_group))
    if groups % 2:
        width = math.ceil(runs / (groups + 1))
        if (groups + 1) * width - runs < width:
            groups += 1
    return groups, math.ceil(runs / groups)


class Executor:
    """Batched ``init`` and ``run`` of a RunSet, on one device or split over all of them.

    On a CPU, more than ``Actor.cpu_group_above`` runs of a learner are run in groups of at most
    ``Actor.cpu_group_runs`` runs (``group_plan``; GRL, GRLE: more than 8 runs in groups of at
    most 32, each group's learning step two runs at a time, ``Actor.cpu_learn_chunk``; DROO,
    DROOE: more than 32 in groups of 128, at least two; greedy and the oracle: more than 8 in
    groups of 512, random more than 128, at least two), each group one call of the same compiled
    program (``group_runs`` overrides, 0 = one batch; env ``GRLE_JAX_GROUP_RUNS``, and
    ``GRLE_JAX_LEARN_CHUNK`` for the chunk), the groups side by side in worker processes, each
    pinned to its share of the cores (``train.procs``; the state then stays in the workers between
    calls: ``run`` hands back a ``train.procs.Remote``, ``to_host`` fetches it), or, on one core or
    with ``GRLE_JAX_GROUP_PROCS=0``, in one thread per core. The records stay one batch over all
    runs. A run's numbers are those of its group's batch: they depend on the number of runs and the
    group size (XLA may vectorise a batch of 8 and one of 64 differently, the last bits) and, for a
    learner's loss, on the size of the thread pool that runs it (a worker's share of the cores, or
    all of them in threads: the last bits), never on the timing or on which worker runs which group
    (``tests/test_train.py::test_groups_side_by_side``, ``test_learning_in_chunks``,
    ``test_groups_in_processes``)."""

    def __init__(self, rs: RunSet, shard: bool | None = None, group_runs: int | None = None,
                 fast_compile: bool = False):
        from . import compiling

        check_env()
        self.rs = rs
        self.fast_compile = bool(fast_compile)  # the run program compiled the fast way (train.compiling)
        self.n_dev = jax.device_count()
        self.shard = (self.n_dev > 1) if shard is None else shard
        self.pad = (-rs.runs) % self.n_dev if self.shard else 0
        self.total = rs.runs + self.pad
        tr = rs.trainer
        above = None  # an explicit width splits any set of more runs (tests, A/B runs)
        if group_runs is None:
            env = os.environ.get(GROUP_ENV)
            if env:
                group_runs = int(env)
            elif tr.learning:
                group_runs, above = tr.actor.cpu_group_runs, tr.actor.cpu_group_above
            else:
                group_runs, above = FIXED_GROUP_RUNS, FIXED_GROUP_ABOVE.get(tr.agent.policy, 8)
        on_cpu = jax.default_backend() == "cpu"
        self.groups = group_plan(rs.runs, group_runs, above) if (on_cpu and not self.shard) else None
        # a learner's groups learn in chunks of its actor's width (env GRLE_JAX_LEARN_CHUNK overrides)
        self.learn_chunk = 0
        if self.groups is not None and tr.learning:
            env = os.environ.get(LEARN_CHUNK_ENV)
            self.learn_chunk = int(env) if env else tr.actor.cpu_learn_chunk
        self._pool = None
        # the groups in worker processes, one per share of the cores (train.procs), or in threads
        from .procs import worker_cores

        self.proc_cores = worker_cores(self.groups[0]) if self.groups is not None else []
        self._procs = None

        def init(kd, h):
            return tr.init(jax.random.wrap_key_data(kd), h)

        def init_with(kd, h, v):
            return tr.init(jax.random.wrap_key_data(kd), h, v)

        def variables(kd):
            return tr.init_variables(jax.random.wrap_key_data(kd))

        flat, treedef = jax.tree_util.tree_flatten(rs.axes, is_leaf=lambda x: x is None)
        layout = (self.shard, tuple(str(d) for d in jax.devices()))
        self._key = (tr.key, treedef, tuple(flat)) + layout
        # (Compiled at the default optimisation level: LLVM -O0 compiled GRLE's init in 1.9 s instead
        # of 4.4 s but gave initial weights 1 ulp away from make_train's, and every entry point must
        # give the same numbers for the same seed.)
        # A graph network's initial variables do not depend on N (Actor.shape_free): they come from
        # ONE program shared by every N and by GRL and GRLE (drawing them is most of an init's
        # compile time); the rest of the state from a small program of this trainer.
        self._vars = None
        split = tr.learning and tr.actor.shape_free
        if self.shard:
            self.mesh = _mesh()

            def batch(fn, axes):
                return sharded(fn, axes, self.mesh)
        else:
            def batch(fn, axes):
                return jax.vmap(fn, in_axes=axes)

            self._run = tr.batched("run", rs.axes, self.fast_compile, self.learn_chunk)
        # init programs run once: always compiled the fast way (the same numbers, train.compiling)
        if split:
            self._vars = _cached(("variables", tr.actor.init_key) + layout,
                                 lambda: compiling.jit(batch(variables, (0,)), True))
            self._init = _cached(self._key + ("init",), lambda: compiling.jit(batch(init_with, (0, rs.axes, 0)), True))
        else:
            self._init = _cached(self._key + ("init",), lambda: compiling.jit(batch(init, (0, rs.axes)), True))

    # padding repeats the last run (its results are dropped)
    def _padded(self, x, axis_is_batched=True):
        if not self.pad or not axis_is_batched:
            return x
        return jnp.concatenate([x, jnp.repeat(x[-1:], self.pad, axis=0)], axis=0)

    def _hyper(self):
        return jax.tree_util.tree_map(lambda h, a: self._padded(h) if a == 0 else h, self.rs.hyper, self.rs.axes,
                                      is_leaf=lambda x: x is None)

    def _global(self, tree, batched=True):
        """Host values -> global arrays laid out over the mesh (needed across processes)."""
        if not self.shard or jax.process_count() == 1:
            return tree
        from jax.sharding import NamedSharding
        from jax.sharding import PartitionSpec as P

        spec = NamedSharding(self.mesh, P("runs") if batched else P())

        def put(x):
            x = np.asarray(x)
            return jax.make_array_from_callback(x.shape, spec, lambda idx: x[idx])

        return jax.tree_util.tree_map(put, tree)

    def _hyper_global(self):
        h = self._hyper()
        return jax.tree_util.tree_map(lambda x, a: self._global(x, a == 0), h, self.rs.axes,
                                      is_leaf=lambda x: x is None)

    def init(self) -> RunState:
        kd = self._global(jax.random.key_data(self._padded(self.rs.keys)))  # (R', 2) uint32
        if self._vars is not None:
            return self._init(kd, self._hyper_global(), self._vars(kd))
        return self._init(kd, self._hyper_global())

    def run(self, state: RunState, t0: int, length: int):
        if self.groups is not None:
            return self._run_groups(state, t0, length)
        if self.shard:
            tr = self.rs.trainer
            from . import compiling

            fn = _cached(self._key + ("run", length, self.fast_compile), lambda: compiling.jit(
                sharded(lambda s, h, t: tr.run(s, h, t, length), (0, self.rs.axes, None), self.mesh),
                self.fast_compile, donate_argnums=(0,)))  # as Trainer.batched("run"): the state is written over
            return fn(state, self._hyper_global(), np.asarray(t0, np.int32))
        return self._run(state, self.rs.hyper, t0, length)

    def _run_groups(self, state: RunState, t0: int, length: int):
        """The runs in ``groups`` batches of one width, side by side in worker processes (one per
        share of the cores, ``train.procs``) or in threads; one batch out."""
        if self.proc_cores:
            return self._run_procs(state, t0, length)
        groups, width = self.groups
        if self._pool is None:
            runs = self.rs.runs
            idx = jnp.asarray(np.minimum(np.arange(groups * width), runs - 1))  # pads repeat the last run

            # Two small programs, each called once per group with the group's number as a traced
            # argument: their compile time does not grow with the number of groups (one program
            # with every group's leaves as outputs took 94 s to compile for 256 groups).
            @jax.jit
            def take(tree, g):  # group g's runs, gathered from the batch
                rows = jax.lax.dynamic_slice_in_dim(idx, g * width, width)
                return jax.tree_util.tree_map(lambda x: jnp.take(x, rows, axis=0), tree)

            @functools.partial(jax.jit, donate_argnums=(0,))
            def put(whole, part, g):  # group g's runs written into the batch (in place)
                return jax.tree_util.tree_map(
                    lambda w, x: jax.lax.dynamic_update_slice_in_dim(w, x, g * width, axis=0), whole, part)

            trim = jax.jit(lambda tree: jax.tree_util.tree_map(lambda x: x[:runs], tree))

            def split(tree):
                return [take(tree, np.int32(g)) for g in range(groups)]

            def join(parts):
                whole = jax.tree_util.tree_map(lambda x: jnp.zeros((groups * width,) + x.shape[1:], x.dtype), parts[0])
                for g, part in enumerate(parts):
                    whole = put(whole, part, np.int32(g))
                return trim(whole) if groups * width > runs else whole

            self._split, self._join = split, join
            batched = jax.tree_util.tree_map(lambda h, a: h if a == 0 else None, self.rs.hyper, self.rs.axes,
                                             is_leaf=lambda x: x is None)
            parts = self._split(batched)
            self._hypers = [jax.tree_util.tree_map(lambda h, a, p: p if a == 0 else h, self.rs.hyper, self.rs.axes,
                                                   part, is_leaf=lambda x: x is None) for part in parts]
            self._pool = ThreadPoolExecutor(min(groups, os.cpu_count() or 1))
        states = self._split(state)
        # each thread waits for its group: two groups' programs then run at once (JAX's asynchronous
        # dispatch alone would queue them one after another)
        outs = list(self._pool.map(lambda g: jax.block_until_ready(self._run(states[g], self._hypers[g], t0, length)),
                                   range(groups)))
        return self._join([o[0] for o in outs]), self._join([o[1] for o in outs])

    def _run_procs(self, state, t0: int, length: int):
        """``_run_groups`` in the worker processes: the parent compiles each group program once and
        sends it; the groups' states stay in the workers (a ``Remote`` handle comes back) unless a
        host or device state is given, which is sent; the records come back as host arrays."""
        from . import procs

        groups, width = self.groups
        runs = self.rs.runs
        if self._procs is None:
            workers = procs.workers_for(self.proc_cores)
            owner = workers.new_id()
            rows = np.minimum(np.arange(groups * width), runs - 1).reshape(groups, width)  # pads repeat the last run
            hyper = jax.tree_util.tree_map(np.asarray, self.rs.hyper)
            hypers = [jax.tree_util.tree_map(lambda h, a: h[r] if a == 0 else h, hyper, self.rs.axes,
                                             is_leaf=lambda x: x is None) for r in rows]
            self._procs = {"workers": workers, "owner": owner, "rows": rows, "hypers": hypers,
                           "programs": set(), "version": 0, "shapes": None}
            import weakref

            weakref.finalize(self, workers.drop, owner)
        pr = self._procs
        workers, owner = pr["workers"], pr["owner"]
        where = [g % len(workers) for g in range(groups)]
        msgs = {w: [] for w in range(len(workers))}
        if isinstance(state, procs.Remote):
            if state.owner is not self or state.version != pr["version"]:
                raise ValueError("this state was consumed by a later run of its executor (pass the state the "
                                 "last run returned)")
        else:
            host = jax.tree_util.tree_map(np.asarray, state)
            pr["shapes"] = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct((width,) + x.shape[1:], x.dtype), host)
            for g in range(groups):
                part = [x[pr["rows"][g]] for x in jax.tree_util.tree_leaves(host)]
                msgs[where[g]].append(("put", (owner, g), part, jax.tree_util.tree_leaves(pr["hypers"][g])))
        if length not in pr["programs"]:
            prog, pr["rec_tree"] = self._group_program(pr, length)
            for w in msgs:
                msgs[w].append((prog[0], (owner, length)) + prog[1:])
            pr["programs"].add(length)
        first = {w: len(ms) for w, ms in msgs.items()}
        for g in range(groups):
            msgs[where[g]].append(("run", (owner, length), (owner, g), t0))
        pr["version"] += 1  # the state given is consumed, as the in-process program's (donated)
        answers = workers.ask_all(msgs)
        order = [0] * len(workers)
        recs = []
        for g in range(groups):
            w = where[g]
            recs.append(answers[w][first[w] + order[w]])
            order[w] += 1
        rec = [np.concatenate(xs, axis=0)[:runs] for xs in zip(*recs)]
        return procs.Remote(self, pr["version"]), jax.tree_util.tree_unflatten(pr["rec_tree"], rec)

    def _group_program(self, pr, length: int):
        """A group's run program for the workers, over flat lists of leaves (no pytree types cross
        the pipe), the state donated, and the records' tree structure. Compiled here and sent as an
        executable (``jax.experimental.serialize_executable``) when this process keeps no persistent
        compile cache (this process compiles on every core; the workers, pinned, would compile on
        one each); else sent as a program (``jax.export``) that each worker compiles itself (an
        executable loaded from the persistent cache serializes without its kernels, see
        ``train.procs``). Returns the message to send, less its key, and the records' structure."""
        from . import compiling, procs

        fn = getattr(self._run, "_plain", self._run)  # inside a trace: the plain jit (train.compiling)
        st_tree = jax.tree_util.tree_structure(pr["shapes"])
        h_leaves, h_tree = jax.tree_util.tree_flatten(pr["hypers"][0])
        box = {}

        def flat(state, hyper, t):
            st, rec = fn(jax.tree_util.tree_unflatten(st_tree, state), jax.tree_util.tree_unflatten(h_tree, hyper), t,
                         length)
            leaves, box["rec"] = jax.tree_util.tree_flatten(rec)
            return jax.tree_util.tree_leaves(st), leaves

        args = (jax.tree_util.tree_leaves(pr["shapes"]),
                [jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype) for x in h_leaves],
                jax.ShapeDtypeStruct((), jnp.int32))
        options = compiling.options(self.fast_compile)
        if not procs.persistent_cache_on():
            from jax.experimental import serialize_executable

            compiled = jax.jit(flat, donate_argnums=(0,), compiler_options=options).lower(*args).compile()
            return ("exec",) + tuple(serialize_executable.serialize(compiled)), box["rec"]
        exp = jax.export.export(jax.jit(flat, donate_argnums=(0,)), platforms=["cpu"])(*args)
        return ("compile", exp.serialize(), options), box["rec"]

    def _fetch(self, remote):
        """The host state of every run from the worker processes."""
        pr = self._procs
        if remote.owner is not self or remote.version != pr["version"]:
            raise ValueError("this state was consumed by a later run of its executor")
        groups = self.groups[0]
        workers = pr["workers"]
        msgs = {w: [] for w in range(len(workers))}
        for g in range(groups):
            msgs[g % len(workers)].append(("get", (pr["owner"], g)))
        answers = workers.ask_all(msgs)
        parts = [answers[g % len(workers)][g // len(workers)] for g in range(groups)]
        leaves = [np.concatenate(xs, axis=0)[: self.rs.runs] for xs in zip(*parts)]
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(pr["shapes"]), leaves)

    def to_host(self, tree):
        """Gather (across processes too) and drop the padding runs."""
        from .procs import Remote

        if isinstance(tree, Remote):
            return tree.owner._fetch(tree)
        if self.shard and jax.process_count() > 1:
            from jax.experimental import multihost_utils

            tree = multihost_utils.process_allgather(tree, tiled=True)
        return jax.tree_util.tree_map(lambda x: np.asarray(x)[: self.rs.runs], tree)

    def from_host(self, tree):
        """A host state (e.g. a restored checkpoint, R runs) -> the executor's padded layout."""
        # a copy (jnp.array), never the caller's device arrays: ``run`` donates the state it is given
        tree = jax.tree_util.tree_map(lambda x: self._padded(jnp.array(x)), tree)
        return self._global(tree) if self.shard and jax.process_count() > 1 else tree


_EXEC_CACHE: dict = {}


def _cached(key, make):
    """Compiled functions shared by executors of identical programs (same trainer key, hyper axes,
    layout and devices), so a resumed or repeated run in one process compiles nothing new."""
    fn = _EXEC_CACHE.get(key)
    if fn is None:
        fn = _EXEC_CACHE[key] = make()
    return fn


def chunk_plan(start: int, stop: int, chunk: int, checkpoint_every: int | None) -> list[tuple[int, int]]:
    """(t0, length) pieces from ``start`` to ``stop``: at most ``chunk`` long, cut at every multiple
    of ``checkpoint_every`` so that checkpoints fall on their slots."""
    out, t = [], start
    while t < stop:
        end = min(t + chunk, stop)
        if checkpoint_every:
            nxt = (t // checkpoint_every + 1) * checkpoint_every
            end = min(end, nxt)
        out.append((t, end - t))
        t = end
    return out


def run_batched(ex: Executor, slots: int, chunk: int = 1000, state=None, start: int = 0,
                records: dict | None = None, on_chunk: Callable | None = None,
                checkpoint_every: int | None = None, stop_after: int | None = None):
    """Run from ``start`` (a fresh init when ``state`` is None) to ``slots``; returns the final
    (host) state and the host records (R, slots) concatenated with ``records`` (earlier slots).
    ``on_chunk(state_dev, t_end, parts, trace, length)`` is called after every chunk (progress bar,
    checkpoints, traces; ``parts`` the host records so far, ``trace`` the chunk's trace records if
    the trainer records them); ``stop_after`` ends early at that slot (to test resuming)."""
    if state is None:
        state = ex.init()
    else:
        state = ex.from_host(state)
    parts = [] if records is None else [records]
    stop = slots if stop_after is None else min(slots, stop_after)
    for t0, length in chunk_plan(start, stop, chunk, checkpoint_every):
        state, rec = ex.run(state, t0, length)
        rec = ex.to_host(rec)
        trace = rec.pop("trace", None)
        parts.append(rec)
        if on_chunk is not None:
            on_chunk(state, t0 + length, parts, trace, length)
    if parts:
        recs = {k: np.concatenate([p[k] for p in parts], axis=1) for k in parts[0]}
    else:
        recs = {}
    from .procs import Remote

    return (ex.to_host(state) if isinstance(state, Remote) else state), recs


def concat_records(parts: list[dict]) -> dict:
    return {k: np.concatenate([p[k] for p in parts], axis=1) for k in parts[0]}

