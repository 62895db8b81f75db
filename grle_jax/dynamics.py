"""Slot dynamics (docs/model.md section 2) as pure, vmappable JAX functions.

A decision is one option index per device, ``option[n] = m * E + e`` (ES m, exit e); any value
for a device without a task is ignored. A device whose chosen ES is unreachable (or whose option
is out of range, e.g. -1) has a task that fails like an active device with no link: no
transmission, no ES time, it costs ``rho``.

How FCFS is computed: N steps each take the earliest-arriving task not yet served (ties to the
lower device index) and serve it on its ES, carrying every ES's busy-until time: exactly the
recurrence of docs/model.md section 2 (``S = max(A, es_free)``; ``abort`` drops a task whose S is at or
after the deadline and clips a running one at it). Under ``vmap`` each step is a few small
batched operations. Measured alternatives on the CPU: a closed form with an N x N "who is ahead of
whom" matrix moved about 45 KB of memory per environment-slot; a stable ``lax.sort`` of 14 tasks
alone cost more than this whole pass.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import custom_batching

from .config import EnvParams, EnvStatic
from .threefry import materialised
from .types import EnvState, Observation, Outcome, SlotInputs


def slot_outcome(
    static: EnvStatic,
    params: EnvParams,
    radio0: jnp.ndarray,  # (N,) radio backlog after g
    es0: jnp.ndarray,  # (M,) ES backlog after g
    s: jnp.ndarray,  # (N,)
    rate: jnp.ndarray,  # (N, M) rates used (true r or observed r_hat)
    phi: jnp.ndarray,  # (M,)
    eps: jnp.ndarray,  # (N,) compute fluctuation (ones when scoring on observed values)
    L: jnp.ndarray,  # (N, M) bool
    has_task: jnp.ndarray,  # (N,) bool
    option: jnp.ndarray,  # (N,) int
) -> Outcome:
    """Everything that happens in one slot, in times relative to its generation instant g.

    One environment's view; under ``vmap`` (any number of nested levels, over environments,
    candidates or hyperparameters) the work runs batch-minor, see ``_batch_minor``."""
    args = (params.deadline_ms, params.rho, params.abort, params.c, params.acc, radio0, es0, s, rate, phi, eps,
            L, has_task, option.astype(jnp.int32))
    out = _batch_minor(static)(*[jnp.asarray(a)[..., None] for a in args])
    return jax.tree_util.tree_map(lambda o: o[..., 0], out)


@functools.lru_cache(maxsize=None)
def _batch_minor(static: EnvStatic):
    """``_kernel`` on arrays with ONE trailing batch axis, wrapped so that ``vmap`` moves each new
    batch axis to the end and merges it into that one (``jax.custom_batching.custom_vmap``).

    Why: XLA:CPU vectorises along the minor-most axis. Vmapped naively, a slot's arrays are
    (B, N) and every reduction over the N devices is a short scalar loop per environment; batch-
    minor they are (N, B) and the same reductions are elementwise work along B. It is the same
    arithmetic in the same order (results are bit-identical to the batch-major form: the tests
    compare both with the float64 twin).

    The rule calls the kernel again at every ``vmap`` level; the kernel is a ``jax.jit`` so that
    calls with the same shapes (the first, one-lane call of every call site) reuse one trace and
    one lowering (XLA inlines it: the same program; docs/benchmarks.md, "A cached slot kernel")."""

    kernel = jax.jit(functools.partial(_chunked_kernel, static))

    @custom_batching.custom_vmap
    def outcome(*args):
        return kernel(*args)

    @outcome.def_vmap
    def _rule(axis_size, in_batched, *args):
        def merge(a, batched):
            a = jnp.moveaxis(a, 0, -1) if batched else jnp.broadcast_to(a[..., None], a.shape + (axis_size,))
            return a.reshape(a.shape[:-2] + (a.shape[-2] * axis_size,))

        def split(o):
            return jnp.moveaxis(o.reshape(o.shape[:-1] + (o.shape[-1] // axis_size, axis_size)), -1, 0)

        out = outcome(*[merge(a, b) for a, b in zip(args, in_batched)])
        return jax.tree_util.tree_map(split, out), jax.tree_util.tree_map(lambda _: True, out)

    return outcome


# From this many lanes (environments x candidates x runs, merged into the kernel's trailing axis)
# a CPU batch runs in an even number of equal chunks, two at a time (``_in_chunks``), so that the
# kernel's (N, lanes) intermediates stay in the caches (issue 14; docs/benchmarks.md, "Chunked slot
# kernel", "One pair of chunks from 1,024 lanes"); below it one pass, the program it always was. On
# other platforms (a GPU wants the whole batch in one kernel) it is always one pass.
PAIR_LANES = 1024
# The chunks are at most this wide: 1,024 lanes run as one pair of 512, 8,192 as eight pairs, 65,536
# as 64 (docs/benchmarks.md, "Chunks of 512 lanes at every width": 1.2-1.8x over chunks of 2,048
# up to 8,192 lanes and of 8,192 past it, on a CPU with 512 KB of L2 a core). The chunk width
# moved no bit in our checks (it may move a last bit of a time or reward: XLA vectorises a chunk by
# its width; docs/model.md section 8).
PAIR_CHUNK = 512


def _chunked_kernel(static: EnvStatic, *args):
    """``_kernel`` on the merged trailing axis; from ``PAIR_LANES`` lanes, when compiled for a
    CPU, in equal chunks (``lax.platform_dependent`` picks the branch when the program is lowered)."""
    lanes = args[0].shape[-1]
    if lanes < PAIR_LANES:
        return _kernel(static, *args)
    return jax.lax.platform_dependent(*args, cpu=functools.partial(_in_chunks, static),
                                      default=functools.partial(_kernel, static))


def _in_chunks(static: EnvStatic, *args):
    """``_kernel`` in an even number of equal chunks of at most ``PAIR_CHUNK`` lanes (padded with
    copies of the last lane to a multiple of 8, the padding dropped afterwards), two at a time: a
    ``lax.map`` over pairs of chunks whose body is a ``lax.map`` over the pair (one pair: no outer
    loop). Every chunk is the same computation on the same lanes as in a plain ``lax.map`` over the
    chunks, so the numbers are the same bit for bit; on a 2-core CPU the pairs run 2.2-2.4x faster
    (docs/benchmarks.md, "Chunks in pairs")."""
    lanes = args[0].shape[-1]
    pairs = -(-lanes // (2 * PAIR_CHUNK))
    chunks = 2 * pairs
    per = -(-lanes // chunks)  # ceil
    width = -(-per // 8) * 8
    pad = chunks * width - lanes

    def split(a):
        if pad:
            a = jnp.concatenate([a, jnp.broadcast_to(a[..., -1:], a.shape[:-1] + (pad,))], axis=-1)
        a = jnp.moveaxis(a.reshape(a.shape[:-1] + (chunks, width)), -2, 0)
        return a.reshape((pairs, 2) + a.shape[1:])

    def join(o):
        o = jnp.moveaxis(o.reshape((chunks,) + o.shape[2:]), 0, -2)
        return o.reshape(o.shape[:-2] + (chunks * width,))[..., :lanes]

    out = jax.lax.map(lambda pair: jax.lax.map(lambda xs: _kernel(static, *xs), pair), tuple(split(a) for a in args))
    return jax.tree_util.tree_map(join, out)


def overdue_after(abort: jnp.ndarray, start_es: jnp.ndarray, w: jnp.ndarray, before: jnp.ndarray,
                  D: jnp.ndarray) -> jnp.ndarray:
    """An ES's busy-until time after serving a task that reaches the head of its queue at
    ``start_es`` and computes for ``w`` (docs/model.md section 2, step 7). ``abort`` (a dynamic
    bool): the task is dropped if it reaches the head at or after the deadline ``D`` (the ES stays
    at ``before``) and is cut at ``D`` when running; ``keep``: it runs to ``start_es + w``. Both
    values are computed and one is selected, so each rule gets exactly the float operations it
    had as a static code path (the same bits: tests/test_dynamics.py::test_overdue_rule_is_a_dynamic_value)."""
    end = start_es + w
    return jnp.where(abort, jnp.where(start_es < D, jnp.minimum(end, D), before), end)


def in_order(x: jnp.ndarray, axis: int = 0) -> jnp.ndarray:
    """The sum over ``axis`` as ``0 + x_0 + x_1 + ...`` in index order, written as elementwise adds.
    A ``jnp.sum`` leaves the order to XLA, which may pick another by shape and by how a program is
    compiled (``train.compiling``: the two ways summed GRLE's rewards at N = 20 differently); XLA
    may not reorder elementwise adds. It is the order ``baselines.sequential_decode`` has always
    used; where XLA had picked another for the kernel, rewards moved in their last bits when this
    replaced ``jnp.sum`` (2026-12-07, docs/model.md section 8)."""
    axis = axis % x.ndim
    total = jnp.zeros(x.shape[:axis] + x.shape[axis + 1:], x.dtype)
    for part in jax.lax.split(x, (1,) * x.shape[axis], axis=axis):  # one op to trace, not one index each
        total = total + jax.lax.squeeze(part, (axis,))
    return total


# From this many (device, lane) pairs up (N x lanes; lanes: the kernel's trailing axis, at most
# ``PAIR_CHUNK`` in a chunk) the FCFS steps run on rows (``_serve_rows``), below it as they always
# did (``_serve_steps``): the same bits either way. Rows pay where the steps' (Q, N, B) picks
# leave the caches (simulation 1.1-1.3x at 1,024-8,192 environments on a 2-core AMD EPYC); on
# small batches the steps are cheaper (greedy at N = 20-30, 5 runs: 1.35-1.4x slower on rows;
# docs/benchmarks.md, "The FCFS loop on rows").
ROWS_FROM = 4096


def _pick(hot: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
    """``jnp.sum(jnp.where(hot[None], x, 0.0), axis=1)`` for a float ``x`` (Q, N, B) and a ``hot``
    (N, B) with at most one true per column, bit for bit, summed as integer bit patterns: the one
    picked pattern plus zeros is that pattern, so the sum is exact in any order. XLA:CPU hands a
    float reduction to a library kernel (YNNPACK) that cannot fuse the select before it, so the
    (Q, N, B) select was written to memory at every FCFS step; an integer reduction stays one fused
    loop (docs/benchmarks.md, "The FCFS pick as an integer sum"). A picked -0.0 or subnormal comes
    back as +0.0, as from the float sum (``0.0 + -0.0``; XLA:CPU treats subnormal inputs as zero;
    a GPU that keeps subnormals would keep one in the float sum, but the picked values, times in ms,
    works, ES indices and flags, are never subnormal).
    ``tests/test_dynamics.py::test_fcfs_pick_equals_the_float_sum_bit_for_bit``."""
    ity = jnp.dtype(f"int{8 * x.dtype.itemsize}")  # int32 for float32 (int64 under jax_enable_x64)
    bits = jnp.sum(jnp.where(hot[None], jax.lax.bitcast_convert_type(x, ity), 0), axis=1, dtype=ity)
    exponent = jax.lax.bitcast_convert_type(jnp.array(jnp.inf, x.dtype), ity)  # the exponent's bits
    bits = jnp.where((bits & exponent) == 0, 0, bits)  # +-0 and subnormals -> +0.0
    return jax.lax.bitcast_convert_type(bits, x.dtype)


def _serve_step(a, w, mp, live, free, abort, D, n_es):
    """One FCFS step: the task at position p (``a`` arrival, ``w`` work, ``mp`` its ES, ``live``
    served) against the ES's busy-until ``free`` (M, B): its start and the new ``free``."""
    before = sum(jnp.where(mp == k, free[k], 0.0) for k in range(n_es))
    start_es = jnp.maximum(a, before)  # S: reaches the head of the queue
    after = overdue_after(abort, start_es, w, before, D)
    free = jnp.stack([jnp.where((live > 0) & (mp == k), after, free[k]) for k in range(n_es)])
    return start_es, free


def _serve_steps(rank, task, free, abort, D, n_es):
    """The N FCFS steps, step p picking the task of rank p from all of ``task`` (Q, N, B) and
    writing its start into S (N, B): (busy-until (M, B), S)."""

    def serve(p, carry):
        free, S = carry
        hot = rank == p
        start_es, free = _serve_step(*_pick(hot, task), free, abort, D, n_es)
        return free, jnp.where(hot, start_es, S)

    return jax.lax.fori_loop(0, rank.shape[0], serve, (free, jnp.zeros_like(task[0])))


def _serve_rows(rank, task, free, abort, D, n_es):
    """The same steps on rows: every position's task picked once, before the loop
    (``_pick_ranked``), each step reading its (Q, B) row and writing one (B,) row of starts, and the
    starts handed to the devices after the loop. The same bits as ``_serve_steps``
    (``tests/test_dynamics.py::test_fcfs_rows_equal_steps_bit_for_bit``)."""
    ordered = _pick_ranked(rank, task)  # (N, Q, B): the task at each position

    def serve(p, carry):
        free, S_at = carry  # S_at: (N, B) the start at position p
        # the row as its own small array: a dynamic slice fused into the step kept XLA:CPU from
        # vectorising the step (12x slower)
        row = materialised(jax.lax.dynamic_index_in_dim(ordered, p, 0, keepdims=False))
        start_es, free = _serve_step(*row, free, abort, D, n_es)
        return free, jax.lax.dynamic_update_index_in_dim(S_at, start_es, p, 0)

    free, S_at = jax.lax.fori_loop(0, rank.shape[0], serve, (free, jnp.zeros_like(task[0])))
    S = jnp.zeros_like(task[0])
    for p in range(rank.shape[0]):  # each device's start is its position's (a rank held twice: both get it)
        S = jnp.where(rank == p, S_at[p], S)
    return free, S


def _pick_ranked(rank: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
    """The task at every FCFS position, (P, Q, B) with P = N: ``out[p] = jnp.sum(jnp.where(rank ==
    p, x, 0.0), axis=1)`` for a float ``x`` (Q, N, B) and ``rank`` (N, B) that gives each position
    to at most one device per column, bit for bit, summed as integer bit patterns: the one picked
    pattern plus zeros is that pattern, so the sum is exact in any order. XLA:CPU hands a float
    reduction to a library kernel (YNNPACK) that cannot fuse the select before it; an integer
    reduction stays one fused loop (docs/benchmarks.md, "The FCFS pick as an integer sum"). A
    picked -0.0 or subnormal comes back as +0.0, as from the float sum (``0.0 + -0.0``; XLA:CPU
    treats subnormal inputs as zero; a GPU that keeps subnormals would keep one in the float sum,
    but the picked values, times in ms, works, ES indices and flags, are never subnormal). Each
    field is ``materialised`` first: XLA would otherwise fuse the making of ``x`` (a concatenate,
    which it does not vectorise) into the pick and redo it for every position.
    ``tests/test_dynamics.py::test_fcfs_pick_equals_the_float_sum_bit_for_bit``."""
    n = x.shape[1]
    ity = jnp.dtype(f"int{8 * x.dtype.itemsize}")  # int32 for float32 (int64 under jax_enable_x64)
    hot = rank[None] == jnp.arange(n, dtype=rank.dtype)[:, None, None]  # (P, N, B)
    exponent = jax.lax.bitcast_convert_type(jnp.array(jnp.inf, x.dtype), ity)  # the exponent's bits
    fields = []
    for q in range(x.shape[0]):
        bits = jax.lax.bitcast_convert_type(materialised(x[q]), ity)  # (N, B)
        bits = jnp.sum(jnp.where(hot, bits[None], 0), axis=1, dtype=ity)  # (P, B)
        bits = jnp.where((bits & exponent) == 0, 0, bits)  # +-0 and subnormals -> +0.0
        fields.append(jax.lax.bitcast_convert_type(bits, x.dtype))
    return jnp.stack(fields, axis=1)


def _kernel(static: EnvStatic, D, rho, abort, c, acc, radio0, es0, s, rate, phi, eps, L, has_task, option):
    """The slot on batch-minor arrays: device (or ES) axis first, one trailing batch axis B
    (``D``, ``rho``, ``abort``: (B,); ``c``: (M, E, B); ``acc``: (E, B); ``rate``, ``L``: (N, M, B))."""
    n, n_es, e_count = static.n, static.m, static.e
    in_range = (option >= 0) & (option < static.options)
    opt = jnp.clip(option, 0, static.options - 1)
    m = opt // e_count
    # Per-device selections as masked sums over the (few) ES or options, not gathers: elementwise
    # work along the batch axis, where a gather would be a scalar loop.
    pick_m = lambda x: sum(jnp.where(m == k, x[:, k], 0) for k in range(n_es))  # noqa: E731  (N, M, B) -> (N, B)
    per_es = lambda x: sum(jnp.where(m == k, x[k], 0) for k in range(n_es))  # noqa: E731  (M, B) -> (N, B)
    served = has_task & in_range & (pick_m(L.astype(jnp.int32)) > 0)

    # 1. transmission: the device's own radio queue, then s*8/r.
    start = jnp.maximum(radio0, 0.0)
    A = start + s * 8.0 / pick_m(rate)
    # 3. computation time of each task if run to the end, and its exit's accuracy.
    c_flat = c.reshape((static.options,) + c.shape[2:])
    w_full = sum(jnp.where(opt == o, c_flat[o], 0.0) for o in range(static.options)) * eps / per_es(phi)
    acc_o = sum(jnp.where(opt == o, acc[o % e_count], 0.0) for o in range(static.options))
    # 2. FCFS per ES. One N x N comparison ranks the served tasks by arrival (ties to the lower
    # device index; tasks not served rank last). Then N steps serve positions 0..N-1 in order,
    # carrying every ES's busy-until time: step p picks the task of rank p with a masked sum (no
    # argmin, no sort) and applies the recurrence of docs/model.md section 2 (``S = max(A, es_free)``;
    # ``abort`` drops a task whose S is at or after the deadline and clips a running one at it).
    key = jnp.where(served, A, jnp.inf)
    rows = jnp.arange(n)[:, None]
    ahead = (key[None, :] < key[:, None]) | ((key[None, :] == key[:, None]) & (rows.T < rows)[..., None])
    rank = jnp.sum(ahead, axis=1, dtype=jnp.int32)  # (N, B): position of task i in FCFS order
    task = jnp.stack([jnp.where(served, A, 0.0), w_full, m.astype(A.dtype), served.astype(A.dtype)])
    serve = _serve_rows if n * A.shape[-1] >= ROWS_FROM else _serve_steps
    es_after, S = serve(rank, task, jnp.maximum(es0, 0.0), abort, D, n_es)
    F = S + w_full
    ok = served & (F <= D)
    radio_after = jnp.where(served, jnp.where(abort, jnp.minimum(A, D), A), start)

    achieved = jnp.where(ok, acc_o, 0.0)
    late = served & ~ok
    penalty = rho * jax.nn.sigmoid((F - D) / D)
    unserved = has_task & ~served
    reward = (
        in_order(achieved)
        - in_order(jnp.where(late, penalty, 0.0))
        - rho * jnp.sum(unserved, axis=0, dtype=jnp.int32).astype(A.dtype)  # a count: exact either way
    )
    nan = jnp.full_like(A, jnp.nan)
    F_r = jnp.where(served, F, nan)
    return Outcome(A=jnp.where(served, A, nan), S=jnp.where(served, S, nan), F=F_r, latency=F_r, ok=ok,
                   acc=achieved, has_task=has_task, served=served, reward=reward, radio_after=radio_after,
                   es_after=es_after)


def advance(params: EnvParams, state: EnvState, inputs: SlotInputs, out: Outcome) -> EnvState:
    """The state at the next slot's g: backlogs shifted by T (kept >= 0)."""
    T = params.slot_ms
    return EnvState(
        t=state.t + 1,
        radio=jnp.maximum(out.radio_after - T, 0.0),
        es=jnp.maximum(out.es_after - T, 0.0),
        L=inputs.L,
        active=inputs.active,
    )


def step(
    static: EnvStatic, params: EnvParams, state: EnvState, inputs: SlotInputs, option: jnp.ndarray
) -> tuple[EnvState, Outcome]:
    """Execute a decision with the TRUE values; return the next state and the slot's outcome."""
    out = slot_outcome(
        static, params, state.radio, state.es, inputs.s, inputs.r, inputs.phi, inputs.eps,
        inputs.L, inputs.active, option,
    )
    return advance(params, state, inputs, out), out


def evaluate(static: EnvStatic, params: EnvParams, obs: Observation, option: jnp.ndarray,
             include: jnp.ndarray | None = None) -> Outcome:
    """Score a decision on OBSERVED values (r_hat, eps = 1) without advancing anything.
    ``include`` (N,) bool restricts the slot to some devices (the others are treated as having
    no task); the greedy baseline uses it to score partial decisions."""
    has_task = obs.active if include is None else obs.active & include
    return slot_outcome(
        static, params, obs.radio, obs.es, obs.s, obs.r_hat, obs.phi, jnp.ones_like(obs.s),
        obs.L, has_task, option,
    )


def score(static: EnvStatic, params: EnvParams, obs: Observation, option: jnp.ndarray,
          lookahead: float | None = None) -> jnp.ndarray:
    """R on observed values (with ``lookahead``, the critic's ``lookahead_score``). ``option`` may be
    (N,) or (K, N): K candidates are scored in one call."""
    def one(o):
        out = evaluate(static, params, obs, o)
        return out.reward if lookahead is None else lookahead_score(params, out, lookahead)

    return one(option) if option.ndim == 1 else jax.vmap(one)(option)


def reachable(static: EnvStatic, L: jnp.ndarray) -> jnp.ndarray:
    """(N, M*E) bool: option ``m * E + e`` is reachable by device n (its link to ES m is up)."""
    return jnp.repeat(L, static.e, axis=-1)


def carry_over(params: EnvParams, out: Outcome) -> jnp.ndarray:
    """() ms of ES time a decision leaves past the next slot's generation instant, summed over the
    ES: ``sum_m max(es_after[m] - T, 0)``, the backlog the next slot inherits (``advance``)."""
    return in_order(jnp.maximum(out.es_after - params.slot_ms, 0.0), axis=-1)


def lookahead_score(params: EnvParams, out: Outcome, lookahead) -> jnp.ndarray:
    """The critic's score with a look-ahead term (our extension, docs/model.md section 5):
    ``R - lookahead * carry_over / D``. R alone is myopic: under load it keeps a task that cannot
    meet its deadline running until the deadline, which the next slot's tasks then wait for."""
    return out.reward - lookahead * carry_over(params, out) / params.deadline_ms
