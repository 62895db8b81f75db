"""Online training as one compiled ``lax.scan`` (docs/model.md section 5; issue 4, parts 2 and 3).

Every slot, inside the scan: sample the slot, observe it, run the actor, quantise its scores into
``k_cap`` candidates, score them ALL in one vmapped call of ``dynamics.score`` (on observed
values), execute the best valid one among the first K on the true values (``dynamics.step``), store
the observation and the executed candidate in the replay memory, and every ``train_every`` slots
take one Adam step on a minibatch; K adapts every ``k_delta`` slots when asked. Metrics leave the
scan as stacked arrays.

Determinism independent of chunking: slot t's keys are ``fold_in(run_key, t)``
(``grle_jax.scenario.slot_keys``, whatever the policy, so a learner and a baseline with the same
seed see the same draws), the
minibatch key derives from slot t's policy key, and the run key itself never changes. A run cut
into chunks (for a progress bar, for checkpoints, or killed and resumed) therefore computes exactly
what one scan over all slots computes.

The slot index ``t`` enters the scan body UNBATCHED (``t0 + i``), so under ``vmap`` over runs the
``lax.cond`` that guards the training step keeps a scalar predicate and stays a real branch, as
long as ``train_every`` is the same for all runs (else it becomes a select: correct, slower).

Fixed policies (random, greedy, oracle) run through the same machinery with no learner: this is
the ONE runner of every policy (train.grle, train.experiments, the references on the same draws,
the benchmarks), traces included (``record_trace``), so baselines get seeds, sweeps, sharding,
checkpoints and the compile cache for free, and a new per-slot record is added in one place.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.flatten_util import ravel_pytree

from grle_jax.agent import AgentConfig, AgentParams, AgentStatic
from grle_jax.config import Config, EnvParams, EnvStatic
from grle_jax.dynamics import evaluate, score, step
from grle_jax.metrics import slot_counts
from grle_jax.baselines import sequential_decode
from grle_jax.policies import gumbel_samples, make_actor, masked_bce, masked_log_softmax, masked_softmax_ce
from grle_jax.profile import DEFAULT_PROFILE, Profile
from grle_jax.critic import critic
from grle_jax.quantize import one_hot
from grle_jax.scenario import observe, reset, sample, slot_keys
from grle_jax.types import EnvState, Observation

INIT_TAG = 0x7FFFFFFF  # fold_in tag of the network-initialisation key (no slot reaches it)
BATCH_TAG = 1  # fold_in tag of the minibatch key, from the slot's policy key
SAMPLE_TAG = 2  # fold_in tag of the critic's Gumbel samples, from the slot's policy key

_BATCHED: dict = {}  # jitted batched functions, shared by trainers with the same ``Trainer.key``

# Slots an exogenous actor (DROO, DROOE) is run ahead (``Trainer._block``): 10, the default
# ``train_every``, reads the weights once per Adam step. The environment variable
# GRLE_JAX_ACT_AHEAD=1 (set before the import) acts slot by slot, for A/B measurements: the
# results are the same bits either way (tests/test_train.py).
ACT_AHEAD = int(os.environ.get("GRLE_JAX_ACT_AHEAD", "10"))

RECORD_KEYS = ("tasks", "on_time", "acc_sum", "reward", "reward_observed", "loss", "k", "k_pos")


def in_run_chunks(fn: Callable, chunk: int) -> Callable:
    """``fn`` itself, except under ``vmap`` over more than ``chunk`` runs: then a ``lax.map`` over
    chunks of ``chunk`` runs, each chunk ``fn`` vmapped (arguments not batched stay shared; the last
    chunk filled up with copies of the last run, whose results are dropped). ``chunk`` <= 0:
    ``fn`` unchanged.

    Why (issue 14; docs/benchmarks.md, "A learning step two runs at a time"): on a CPU a graph
    learner's many runs go in groups side by side (``train.sweep.Executor``). A wide group makes
    the slot's many small kernels cheaper per run, but its learning step then handles every run's
    (minibatch x N x P, 64) edge arrays at once, and they leave the caches. Two runs at a time keep
    them there. The arithmetic per run is the same; XLA compiles a chunk inside its loop its own
    way, so a loss may differ from the whole batch's in the last bits (the decisions and rewards
    were the same in our checks; ``tests/test_train.py::test_learning_in_chunks``)."""
    if chunk <= 0:
        return fn
    from jax import custom_batching

    chunked = custom_batching.custom_vmap(fn)

    @chunked.def_vmap
    def _rule(axis_size, in_batched, *args):
        leaves, tree = jax.tree_util.tree_flatten(args)
        flags = jax.tree_util.tree_leaves(in_batched)
        inner = jax.vmap(fn, in_axes=jax.tree_util.tree_unflatten(tree, [0 if b else None for b in flags]))
        if axis_size <= chunk:
            out = inner(*args)
        else:
            def one(parts):
                it = iter(parts)
                return inner(*jax.tree_util.tree_unflatten(tree, [next(it) if b else x for x, b in zip(leaves, flags)]))

            count = -(-axis_size // chunk)
            pad = count * chunk - axis_size  # the last chunk filled with copies of the last run, dropped

            def chunks(x):
                if pad:
                    x = jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)], axis=0)
                return x.reshape((count, chunk) + x.shape[1:])

            out = jax.lax.map(one, [chunks(x) for x, b in zip(leaves, flags) if b])
            out = jax.tree_util.tree_map(lambda o: o.reshape((count * chunk,) + o.shape[2:])[:axis_size], out)
        return out, jax.tree_util.tree_map(lambda _: True, out)

    return chunked


@struct.dataclass
class Hyper:
    """Everything dynamic about one run: environment and learning values."""

    env: EnvParams
    agent: AgentParams


@struct.dataclass
class Memory:
    """Replay ring buffer: the observation of a slot and the decision the critic executed."""

    obs: Observation  # every leaf (C, ...)
    target: jnp.ndarray  # (C, N) int32: policy option per device, -1 for none


@struct.dataclass
class RunState:
    """The scan carry of one run: all a checkpoint needs (with the slot index ``env.t``)."""

    env: EnvState
    variables: Any  # flax variables of the actor ({} for a fixed policy)
    opt: Any  # optax Adam state over the flattened parameters (() for a fixed policy)
    memory: Any  # Memory (None for a fixed policy)
    k: jnp.ndarray  # () int32: K of the next slot
    k_seen: jnp.ndarray  # () int32: largest 1-based executed position since the last K update
    loss: jnp.ndarray  # () float32: last training loss (NaN before the first step)
    key: jnp.ndarray  # (2,) uint32: the run key's data (never changes)


def fixed_act(name: str) -> Callable:
    if name == "oracle":
        from grle_jax.oracle import oracle_policy

        return oracle_policy
    from grle_jax.baselines import POLICIES

    return POLICIES[name]


class Trainer:
    """One run's pure functions (``init``, ``run``) and their batched, jitted forms."""

    def __init__(self, env: EnvStatic, agent: AgentStatic, normalise: bool = False, record_trace: bool = False,
                 normalise_from: int = 0, act_ahead: int = ACT_AHEAD):
        self.env, self.agent, self.normalise, self.record_trace = env, agent, normalise, record_trace
        self.normalise_from = int(normalise_from)  # the oracle runs from this slot on (NaN before)
        self.learning = agent.learning
        if self.learning:
            self.actor = make_actor(env, agent)
            self.option_idx = jnp.asarray(self.actor.option_idx)
            self.tx = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)
        else:
            self.policy = fixed_act(agent.policy)
        # act ahead (``_block``) in blocks of this many slots: actors of exogenous inputs only
        self.act_ahead = max(1, int(act_ahead)) if self.learning and self.actor.exogenous else 1
        self.reference = fixed_act("oracle") if normalise else None

    # --- one run -------------------------------------------------------------------------------
    def init_variables(self, key: jax.Array):
        """The initial variables of a shape-free actor (GRL, GRLE: ``Actor.shape_free``) for the run
        with key ``key``: no observation needed, so one program serves every N."""
        return self.actor.init(jax.random.fold_in(key, INIT_TAG))

    def init(self, key: jax.Array, hyper: Hyper, variables=None) -> RunState:
        """The run's state at slot 0; ``variables`` (from ``init_variables``) may be computed
        apart, by a program shared with other trainers (``train.sweep.Executor``)."""
        st = reset(self.env)
        key_data = jax.random.key_data(key)
        f32 = jnp.float32
        if not self.learning:
            return RunState(env=st, variables={}, opt=(), memory=None, k=jnp.ones((), jnp.int32),
                            k_seen=jnp.zeros((), jnp.int32), loss=jnp.full((), jnp.nan, f32), key=key_data)
        obs = observe(st, sample(jax.random.key(0), hyper.env, st, self.env))  # shapes of the memory
        if variables is None:
            variables = (self.init_variables(key) if self.actor.shape_free
                         else self.actor.init(jax.random.fold_in(key, INIT_TAG), obs, hyper.env))
        opt = self.tx.init(ravel_pytree(variables)[0])  # Adam on one flat vector: a small program
        opt.hyperparams["learning_rate"] = jnp.asarray(hyper.agent.lr, f32)
        cap = self.agent.memory_cap
        memory = Memory(
            obs=jax.tree_util.tree_map(lambda x: jnp.zeros((cap,) + x.shape, x.dtype), obs),
            target=jnp.full((cap, self.env.n), -1, jnp.int32),
        )
        return RunState(env=st, variables=variables, opt=opt, memory=memory,
                        k=jnp.minimum(hyper.agent.k, self.agent.k_cap).astype(jnp.int32),
                        k_seen=jnp.zeros((), jnp.int32), loss=jnp.full((), jnp.nan, f32), key=key_data)

    def slot(self, run: RunState, hyper: Hyper, t: jnp.ndarray, drawn=None, ahead=None,
             learn_chunk: int = 0) -> tuple[RunState, dict]:
        """Play slot ``t`` (``t == run.env.t``; passed separately so it stays unbatched). ``drawn``:
        the slot's (inputs, policy key) drawn ahead; ``ahead``: (logits computed ahead, whether they
        are still the actor's: no Adam step since), see ``_block``; ``learn_chunk``: see ``_learn``."""
        static, env_params, agent_params = self.env, hyper.env, hyper.agent
        if drawn is None:
            run_key = jax.random.wrap_key_data(run.key)
            sample_key, policy_key = slot_keys(run_key, t)
            inputs = sample(sample_key, env_params, run.env, static)
        else:
            inputs, policy_key = drawn
        obs = observe(run.env, inputs)
        if self.learning:
            if ahead is None:
                logits = self.actor.apply(run.variables, obs, env_params)
            else:
                pre, fresh = ahead
                logits = jax.lax.cond(fresh, lambda: pre, lambda: self.actor.apply(run.variables, obs, env_params))
            live = self.actor.live(obs)
            def to_env(c):  # policy options -> environment options m * E + e (-1 stays -1)
                return jnp.where(c >= 0, self.option_idx[jnp.maximum(c, 0)], -1)

            agent = self.agent
            look = agent.lookahead if agent.lookahead > 0 else None
            if agent.loss == "softmax":  # per-device softmax over the live options: scores sum to 1
                q_logits = masked_log_softmax(logits, live)
                scores = jnp.where(live, jnp.exp(q_logits), 0.0)
            else:  # docs/model.md: independent sigmoids
                q_logits, scores = logits, jax.nn.sigmoid(logits)
            extra = []
            if agent.greedy_candidate:  # greedy's sequential decode (with the look-ahead score) over our options
                extra.append(sequential_decode(static, env_params, obs, self.option_idx, look)[None])
            if agent.samples > 0:  # Gumbel-max samples of each device's softmax over its live options
                gumbel_key = jax.random.fold_in(policy_key, SAMPLE_TAG)
                extra.append(gumbel_samples(gumbel_key, q_logits, live, agent.samples))
            # K candidates (and the extra ones) scored in ONE vmapped call of dynamics.score, the best kept
            cr = critic(scores, q_logits, live, run.k, agent.k_cap, agent.critic_rounds,
                        lambda cands: score(static, env_params, obs, to_env(cands), look),
                        jnp.concatenate(extra, axis=0) if extra else None)
            option = to_env(cr.decision)
            # with the look-ahead the critic's value is not R: the record keeps R on observed values
            r_obs = cr.reward if look is None else score(static, env_params, obs, option)
            run = self._remember(run, obs, cr.decision, t, agent_params)
            run = self._learn(run, env_params, agent_params, t, policy_key, learn_chunk)
            pos = cr.first_pos
            seen = jnp.maximum(run.k_seen, cr.quant_pos)  # DROO's rule reads the quantiser's candidates
            update = agent_params.adaptive_k & ((t + 1) % agent_params.k_delta == 0)
            k_next = jnp.where(update, jnp.minimum(1 + seen, self.agent.k_cap), run.k).astype(jnp.int32)
            run = run.replace(k=k_next, k_seen=jnp.where(update, 0, seen).astype(jnp.int32))
            k_used = cr.used
        else:
            option = self.policy(policy_key, static, env_params, obs)
            r_obs = evaluate(static, env_params, obs, option).reward
            pos = jnp.ones((), jnp.int32)
            k_used = jnp.ones((), jnp.int32)
        nxt, out = step(static, env_params, run.env, inputs, option)
        rec = slot_counts(out)
        rec.update(reward_observed=r_obs, loss=run.loss, k=k_used, k_pos=pos)
        if self.reference is not None:
            def oracle():
                best = self.reference(policy_key, static, env_params, obs)
                return evaluate(static, env_params, obs, best).reward.astype(jnp.float32)

            if self.normalise_from > 0:  # t is unbatched: a real branch, the oracle costs nothing before
                rec["reward_oracle"] = jax.lax.cond(t >= self.normalise_from, oracle,
                                                    lambda: jnp.full((), jnp.nan, jnp.float32))
            else:
                rec["reward_oracle"] = oracle()
        if self.record_trace:
            rec["trace"] = {"state": run.env, "inputs": inputs, "option": option, "out": out}
        return run.replace(env=nxt), rec

    def _remember(self, run: RunState, obs: Observation, decision, t, agent_params: AgentParams) -> RunState:
        i = t % agent_params.memory
        mem = run.memory
        mem = Memory(obs=jax.tree_util.tree_map(lambda buf, x: buf.at[i].set(x), mem.obs, obs),
                     target=mem.target.at[i].set(decision))
        return run.replace(memory=mem)

    def _learn(self, run: RunState, env_params: EnvParams, agent_params: AgentParams, t, policy_key,
               learn_chunk: int = 0) -> RunState:
        """The Adam step that ends every ``train_every``-th slot. ``learn_chunk`` > 0: under ``vmap``
        over more runs than that, the step runs as a ``lax.map`` over chunks of ``learn_chunk`` runs
        (``in_run_chunks``), the same arithmetic per run."""
        def train(run, env_params, agent_params, t, key_data):
            policy_key = jax.random.wrap_key_data(key_data)
            filled = jnp.minimum(t + 1, agent_params.memory)
            batch_key = jax.random.fold_in(policy_key, BATCH_TAG)
            idx = jax.random.randint(batch_key, (self.agent.batch_cap,), 0, filled)
            rows = (jnp.arange(self.agent.batch_cap) < agent_params.batch)[:, None, None]
            obs_b = jax.tree_util.tree_map(lambda x: x[idx], run.memory.obs)
            target = jax.vmap(lambda d: one_hot(d, self.actor.options))(run.memory.target[idx])
            live = jax.vmap(self.actor.live)(obs_b) & rows

            lossf = masked_softmax_ce if self.agent.loss == "softmax" else masked_bce

            def loss_fn(v):
                logits = self.actor.apply_batch(v, obs_b, env_params)  # one graph: the minibatch's disjoint union
                return lossf(logits, target, live)

            loss, grads = jax.value_and_grad(loss_fn)(run.variables)
            # Adam's state is one flat vector (a small program); the parameters stay a tree: Adam
            # does not read them, and adding the unravelled update leaf by leaf is the same sum
            # without copying every parameter into one vector (docs/benchmarks.md)
            flat_grads, unravel = ravel_pytree(grads)
            updates, opt = self.tx.update(flat_grads, run.opt)
            return run.replace(variables=optax.apply_updates(run.variables, unravel(updates)), opt=opt,
                              loss=loss.astype(jnp.float32))

        step, key_data = in_run_chunks(train, learn_chunk), jax.random.key_data(policy_key)
        return jax.lax.cond((t + 1) % agent_params.train_every == 0,
                            lambda run: step(run, env_params, agent_params, t, key_data), lambda run: run, run)

    def run(self, run: RunState, hyper: Hyper, t0, length: int, learn_chunk: int = 0) -> tuple[RunState, dict]:
        """``length`` slots from slot ``t0`` (= ``run.env.t``), as one scan (of blocks of
        ``act_ahead`` slots when the actor acts ahead, ``_block``); ``learn_chunk``: see ``_learn``."""
        t0 = jnp.asarray(t0, jnp.int32)
        n = self.act_ahead
        if n <= 1:
            def body(run, i):
                return self.slot(run, hyper, t0 + i, learn_chunk=learn_chunk)

            return jax.lax.scan(body, run, jnp.arange(length, dtype=jnp.int32))
        full, rest = divmod(length, n)
        if rest == 1 and full:  # no lone last slot: XLA inlines a one-slot scan, and compiled the fast
            full, rest = full - 1, n + 1  # way that block's Adam step moved a last bit (docs/model.md)
        parts = []
        if full:
            run, rec = jax.lax.scan(lambda r, b: self._block(r, hyper, t0 + b * n, n, learn_chunk), run,
                                    jnp.arange(full, dtype=jnp.int32))
            parts.append(jax.tree_util.tree_map(lambda x: x.reshape((full * n,) + x.shape[2:]), rec))
        if rest:
            run, rec = self._block(run, hyper, t0 + full * n, rest, learn_chunk)
            parts.append(rec)
        if len(parts) == 1:
            return run, parts[0]
        return run, jax.tree_util.tree_map(lambda *x: jnp.concatenate(x, axis=0), *parts)

    def _block(self, run: RunState, hyper: Hyper, tb, n: int, learn_chunk: int = 0) -> tuple[RunState, dict]:
        """Act ahead: ``n`` slots from slot ``tb`` with an actor that reads only exogenous inputs
        (``Actor.exogenous``: DROO, DROOE). The slots' inputs are drawn first (the same keys and
        draws as slot by slot: links and activity carried from slot to slot as ``sample`` does),
        then the actor runs on all ``n`` observations at once, one matrix product per layer instead
        of ``n`` matrix-vector products each reading every weight of every run (memory-bound at
        large batches; docs/benchmarks.md, "Acting ahead"). A slot after an Adam step inside the
        block (``train_every`` not dividing the block) runs the actor again with the new weights,
        so the decisions are those of slot-by-slot acting."""
        static, env_params = self.env, hyper.env
        run_key = jax.random.wrap_key_data(run.key)
        ts = tb + jnp.arange(n, dtype=jnp.int32)

        def draw(carry, t):
            L, active = carry  # sample reads t, L and active of the state, nothing else
            sample_key, policy_key = slot_keys(run_key, t)
            inputs = sample(sample_key, env_params, run.env.replace(t=t, L=L, active=active), static)
            return (inputs.L, inputs.active), (inputs, policy_key)

        _, (inputs, keys) = jax.lax.scan(draw, (run.env.L, run.env.active), ts)
        nan = jnp.full((n, 1), jnp.nan, jnp.float32)  # the backlogs are not known ahead (NaN: never read)
        obs = Observation(s=inputs.s, r_hat=inputs.r_hat, phi=inputs.phi, L=inputs.L, active=inputs.active,
                          radio=nan * jnp.ones((static.n,), jnp.float32), es=nan * jnp.ones((static.m,), jnp.float32))
        logits = self.actor.apply(run.variables, obs, env_params)  # (n, N, P)
        every = hyper.agent.train_every

        def body(run, xs):
            t, inp, key, pre = xs
            fresh = (t // every) == (tb // every)  # no Adam step in slots tb .. t - 1 (steps end slots te-1, 2te-1, ...)
            return self.slot(run, hyper, t, (inp, key), (pre, fresh), learn_chunk)

        return jax.lax.scan(body, run, (ts, inputs, keys, logits))

    def train(self, key: jax.Array, hyper: Hyper, slots: int) -> tuple[RunState, dict]:
        """A whole run: init, then ONE scan over all slots."""
        return self.run(self.init(key, hyper), hyper, 0, slots)

    # --- many runs: vmap over the run axis -----------------------------------------------------
    def batched(self, what: str, hyper_axes: Hyper, fast: bool = False, learn_chunk: int = 0) -> Callable:
        """jit(vmap(...)) of ``init`` (keys, hyper), ``run`` (states, hyper, t0, length) or ``train``
        (keys, hyper, slots) over the leading run axis; ``hyper_axes`` says which hyper leaves carry
        that axis (0) and which are shared (None). ``fast``: the run program is compiled the fast
        way (``train.compiling``: the same numbers; init programs always are). ``learn_chunk``:
        the learning step in chunks of that many runs (``_learn``; 0: the whole batch at once)."""
        from . import compiling

        fast = bool(fast) and what != "init"
        learn_chunk = int(learn_chunk) if what != "init" and self.learning else 0
        flat, treedef = jax.tree_util.tree_flatten(hyper_axes, is_leaf=lambda x: x is None)
        cache_key = (self.key, what, treedef, tuple(flat), fast, learn_chunk)
        if cache_key in _BATCHED:
            return _BATCHED[cache_key]
        if what == "init":
            fn = compiling.jit(jax.vmap(self.init, in_axes=(0, hyper_axes)), True)
        elif what == "run":
            # the state is donated: the scan's carry is written over its input, so a call allocates
            # no second copy of every run's parameters, Adam moments and replay memory (at 8,192 DROO
            # runs 1.9 GB a call; docs/benchmarks.md). Callers pass each state once (run_batched).
            run = functools.partial(self.run, learn_chunk=learn_chunk) if learn_chunk else self.run
            fn = compiling.jit(jax.vmap(run, in_axes=(0, hyper_axes, None, None)), fast, static_argnums=(3,),
                               donate_argnums=(0,))
        elif what == "train":  # batched init, then the batched run: ONE scan over all slots
            init, run = self.batched("init", hyper_axes), self.batched("run", hyper_axes, fast, learn_chunk)

            def fn(keys, hyper, slots):
                return run(init(keys, hyper), hyper, 0, slots)
        else:
            raise ValueError(what)
        _BATCHED[cache_key] = fn
        return fn

    @property
    def key(self) -> tuple:
        """Everything that fixes the compiled program: trainers with equal keys share jit caches."""
        return (self.env, self.agent, self.normalise, self.record_trace, self.normalise_from, self.act_ahead)


# --- the public entry point ------------------------------------------------------------------------
def make_hyper(cfg: Config, agent: AgentConfig, profile: Profile = DEFAULT_PROFILE) -> Hyper:
    static = cfg.static(profile)
    return Hyper(env=cfg.params(profile), agent=agent.params(static))


def make_trainer(cfg: Config, agent: AgentConfig, profile: Profile = DEFAULT_PROFILE,
                 normalise: bool = False, k_cap: int | None = None, batch_cap: int | None = None,
                 memory_cap: int | None = None, record_trace: bool = False) -> Trainer:
    env = cfg.static(profile)
    agent.check(env)
    return Trainer(env, agent.static(env, k_cap, batch_cap, memory_cap), normalise, record_trace)


class TrainFn:
    """``train(key[, hyper]) -> (final RunState, records)``: the whole run is one jitted scan.
    Records are a dict of arrays stacked over slots (see ``RECORD_KEYS``)."""

    def __init__(self, trainer: Trainer, hyper: Hyper, slots: int):
        self.trainer, self.hyper, self.slots = trainer, hyper, slots
        self._fn = jax.jit(trainer.train, static_argnums=(2,))

    def __call__(self, key: jax.Array, hyper: Hyper | None = None):
        return self._fn(key, self.hyper if hyper is None else hyper, self.slots)


def make_train(cfg: Config, agent: AgentConfig, slots: int, profile: Profile = DEFAULT_PROFILE,
               normalise: bool = False, **caps) -> TrainFn:
    """PureJaxRL's shape: ``make_train(config) -> train(key[, hyper])``. ``jax.vmap(train)`` over
    keys and hyper leaves trains many agents at once (``train.sweep`` does that, with sharding)."""
    return TrainFn(make_trainer(cfg, agent, profile, normalise, **caps), make_hyper(cfg, agent, profile), slots)
