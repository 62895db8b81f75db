"""Our GRLE/GRL ingredients (docs/training.md "Our GRLE"), and the paper's configuration one flag
away: ``variant="paper"`` reproduces the records the code gave before the ingredients existed."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grle_jax.agent import AgentConfig, VARIANT_DEFAULTS
from grle_jax.config import Config
from grle_jax.errors import ConfigError
from train.loop import make_train

DATA = os.path.join(os.path.dirname(__file__), "data", "paper_records.npz")


@pytest.mark.parametrize("policy", ["grle", "grl", "droo", "drooe"])
def test_paper_variant_reproduces_the_records_before_the_change(policy):
    # tests/data/paper_records.npz: written by the code at commit 05a3277 (the paper's learners, before
    # the variant existed) for these exact settings. Integers must match exactly; floats to 1e-6
    # relative (bit-identical on the machine that wrote them; a tolerance for other CPUs' XLA).
    ref = np.load(DATA)
    cfg = Config.for_scenario("capacity", devices=4, slot_ms=20.0)
    agent = AgentConfig(policy=policy, variant="paper", k=4, train_every=5, batch=8, memory=32)
    _, rec = make_train(cfg, agent, 80)(jax.random.key(3))
    for k in ("on_time", "k_pos"):
        np.testing.assert_array_equal(np.asarray(rec[k]), ref[f"{policy}/{k}"], err_msg=k)
    for k in ("reward", "reward_observed", "loss", "acc_sum"):
        np.testing.assert_allclose(np.asarray(rec[k]), ref[f"{policy}/{k}"], rtol=1e-6, atol=1e-7, err_msg=k)


def test_variant_defaults_and_explicit_fields():
    assert AgentConfig(policy="grle").resolved_variant == "ours"
    assert AgentConfig(policy="grl").resolved_variant == "ours"
    assert AgentConfig(policy="droo").resolved_variant == "paper"
    a = AgentConfig(policy="grle", variant="paper", critic_rounds=3)
    assert a.ingredient("critic_rounds") == 3 and a.ingredient("loss") == "bce"
    e = AgentConfig(policy="grle").explicit()
    assert e.variant == "ours" and all(getattr(e, k) == v for k, v in VARIANT_DEFAULTS["ours"].items())
    assert AgentConfig.from_dict(e.to_dict()) == e
    for field, value in (("variant", "fancy"), ("loss", "mse"), ("samples", -1), ("lookahead", -1.0),
                         ("lookahead", float("inf")), ("greedy_candidate", 3), ("critic_rounds", 0)):
        with pytest.raises(ConfigError) as err:
            AgentConfig(policy="grle", **{field: value})
        assert err.value.field == field


# --- the ingredients, one by one ---------------------------------------------------------------------
from grle_jax.agent import option_index  # noqa: E402
from grle_jax.baselines import greedy_policy, sequential_decode  # noqa: E402
from grle_jax.critic import critic  # noqa: E402
from grle_jax.dynamics import carry_over, evaluate, lookahead_score, score  # noqa: E402
from grle_jax.policies import gumbel_samples, masked_log_softmax, masked_softmax_ce  # noqa: E402
from grle_jax.scenario import observe, reset, sample  # noqa: E402

N, M, E = 6, 2, 5
_greedy = jax.jit(greedy_policy, static_argnums=1)  # compiled once: the eager loop is slow on 2 cores
_decode = jax.jit(sequential_decode, static_argnums=(0, 4))


def _slot(seed, p_link=0.7, p_active=0.85, scenario="csi"):
    cfg = Config.for_scenario(scenario, devices=N, servers=M, p_link=p_link, p_active=p_active)
    static, params = cfg.static(), cfg.params()
    st = reset(static).replace(radio=jnp.linspace(0.0, 9.0, N), es=jnp.asarray([4.0, 14.0]))
    obs = observe(st, sample(jax.random.key(seed), params, st, static))
    live = jnp.repeat(obs.L, E, axis=1) & obs.active[:, None]
    logits = 3.0 * jax.random.normal(jax.random.key(100 + seed), (N, M * E))
    return static, params, obs, live, logits


@pytest.mark.parametrize("seed", range(4))
def test_softmax_rows_sum_to_one_over_live_options_and_are_zero_elsewhere(seed):
    _, _, obs, live, logits = _slot(seed)
    p = np.exp(np.asarray(masked_log_softmax(logits, live)))
    lv = np.asarray(live)
    assert lv.any(axis=1).sum() < N or seed > 0  # the slots include devices with nothing live
    for n in range(N):
        if lv[n].any():
            assert abs(p[n][lv[n]].sum() - 1.0) < 1e-5
            assert np.all(p[n][~lv[n]] == 0.0)
            z = np.asarray(logits[n], np.float64)[lv[n]]
            np.testing.assert_allclose(p[n][lv[n]], np.exp(z - z.max()) / np.exp(z - z.max()).sum(), rtol=1e-5)


def test_softmax_cross_entropy_by_hand():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, N, 4)).astype(np.float32)
    live = rng.random((3, N, 4)) < 0.6
    target = np.zeros((3, N, 4), np.float32)
    total, count = 0.0, 0
    for b in range(3):
        for n in range(N):
            opts = np.flatnonzero(live[b, n])
            if len(opts) == 0 or n == 2:  # device 2 has no target (no task when stored)
                continue
            o = opts[(b + n) % len(opts)]
            target[b, n, o] = 1.0
            z = logits[b, n, opts].astype(np.float64)
            total += -(logits[b, n, o] - z.max() - np.log(np.exp(z - z.max()).sum()))
            count += 1
    got = float(masked_softmax_ce(jnp.asarray(logits), jnp.asarray(target), jnp.asarray(live)))
    assert abs(got - total / count) < 1e-5


@pytest.mark.parametrize("seed", range(4))
def test_samples_and_sequential_decode_only_take_live_options(seed):
    static, params, obs, live, logits = _slot(seed)
    lv = np.asarray(live)
    has = lv.any(axis=1)
    smp = np.asarray(gumbel_samples(jax.random.key(seed), masked_log_softmax(logits, live), live, 64))
    assert smp.shape == (64, N)
    for n in range(N):
        if has[n]:
            assert np.all(lv[n][smp[:, n]])
        else:
            assert np.all(smp[:, n] == -1)
    assert len({tuple(r) for r in smp}) > 1  # samples, not the argmax 64 times
    for policy in ("grle", "grl"):  # GRL: the final exit of each ES only
        idx = jnp.asarray(option_index(policy, static))
        live_p = np.asarray(jnp.repeat(obs.L, E, axis=1)[:, idx] & obs.active[:, None])
        for look in (None, 0.0, 5.0):
            d = np.asarray(_decode(static, params, obs, idx, look))
            for n in range(N):
                assert (d[n] == -1) if not live_p[n].any() else live_p[n][d[n]]


@pytest.mark.parametrize("seed", range(3))
def test_sequential_decode_without_lookahead_is_greedy(seed):
    static, params, obs, _, _ = _slot(seed)
    every = jnp.arange(static.options, dtype=jnp.int32)
    a = np.asarray(_decode(static, params, obs, every, None))
    b = np.asarray(_greedy(None, static, params, obs))
    np.testing.assert_array_equal(a, b)
    # a look-ahead of 0 scores exactly R: the same decisions
    np.testing.assert_array_equal(np.asarray(_decode(static, params, obs, every, 0.0)), b)


def decode_by_evaluate(static, params, obs, options, lookahead=None):
    """The sequential decode as first written: every try scored by a whole ``dynamics.evaluate``
    of the devices placed so far (O(N^2) per try). The library's incremental decode must give
    exactly its decisions."""
    mask = jnp.repeat(obs.L, static.e, axis=-1)[:, options]
    from grle_jax.baselines import greedy_order

    order = greedy_order(static, obs)

    def place(i, carry):
        decision, placed = carry
        d = order[i]
        include = placed.at[d].set(True)

        def try_option(o):
            out = evaluate(static, params, obs, decision.at[d].set(o), include)
            value = out.reward if lookahead is None else lookahead_score(params, out, lookahead)
            return value, out.F[d]

        R, F = jax.vmap(try_option)(options)
        R = jnp.where(mask[d], R, -jnp.inf)
        best_R = jnp.max(R)
        F_tie = jnp.where(R == best_R, F, jnp.inf)
        pick = jnp.argmax((R == best_R) & (F_tie == jnp.min(F_tie)))
        can = obs.active[d] & jnp.any(mask[d])
        return decision.at[d].set(jnp.where(can, options[pick].astype(jnp.int32), -1)), include

    decision, _ = jax.lax.fori_loop(0, static.n, place, (jnp.full((static.n,), -1, jnp.int32),
                                                          jnp.zeros((static.n,), bool)))
    pos = jnp.argmax(decision[:, None] == options[None, :], axis=1).astype(jnp.int32)
    return jnp.where(decision >= 0, pos, -1)


@pytest.mark.parametrize("n,m,overdue,scenario,policy,look", [
    (1, 1, "abort", "base", "grle", None), (4, 3, "keep", "capacity", "grl", 3.0),
    (15, 2, "abort", "capacity", "grle", 3.0)])
def test_sequential_decode_equals_evaluate_tries(n, m, overdue, scenario, policy, look):
    # bit for bit, on 64 slots with queues, missing links and idle devices, over GRLE's options
    # (every exit) or GRL's (the final exits), with and without the look-ahead (without it the decode
    # is greedy, also checked against the float64 twin: test_greedy_matches_twin)
    cfg = Config.for_scenario(scenario, devices=n, servers=m, overdue=overdue, p_link=0.7, p_active=0.8,
                              deadline_ms=8.0 if n % 2 else 20.0)
    static, params = cfg.static(), cfg.params()

    def slot(k):
        st = reset(static).replace(radio=8.0 * jax.random.uniform(k, (n,)),
                                   es=15.0 * jax.random.uniform(jax.random.fold_in(k, 1), (m,)) - 3.0)
        return observe(st, sample(k, params, st, static))

    obs = jax.jit(jax.vmap(slot))(jax.random.split(jax.random.key(n), 64))
    opts = jnp.asarray(option_index(policy, static))
    got = jax.jit(jax.vmap(lambda o: sequential_decode(static, params, o, opts, look)))(obs)
    want = jax.jit(jax.vmap(lambda o: decode_by_evaluate(static, params, o, opts, look)))(obs)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert (np.asarray(got) >= 0).any() and (np.asarray(got) == -1).any()  # placements and idle devices


@pytest.mark.parametrize("seed", range(3))
def test_lookahead_score_by_hand(seed):
    static, params, obs, live, logits = _slot(seed, scenario="capacity")
    d = jnp.asarray(_greedy(None, static, params, obs))
    out = evaluate(static, params, obs, d)
    T, D = float(params.slot_ms), float(params.deadline_ms)
    carry = sum(max(float(x) - T, 0.0) for x in np.asarray(out.es_after))
    assert abs(float(carry_over(params, out)) - carry) < 1e-5
    assert abs(float(lookahead_score(params, out, 2.5)) - (float(out.reward) - 2.5 * carry / D)) < 1e-5
    assert float(score(static, params, obs, d, 2.5)) == float(lookahead_score(params, out, 2.5))


@pytest.mark.parametrize("seed", range(3))
def test_critic_extra_candidates_never_lower_and_win_when_better(seed):
    static, params, obs, live, logits = _slot(seed)

    def score_fn(c):
        return score(static, params, obs, c)

    base = critic(jax.nn.sigmoid(logits), logits, live, jnp.asarray(4), 4, 1, score_fn)
    g = _greedy(None, static, params, obs)
    more = critic(jax.nn.sigmoid(logits), logits, live, jnp.asarray(4), 4, 1, score_fn, g[None])
    rg = float(score(static, params, obs, g))
    assert float(more.reward) >= float(base.reward)
    assert float(more.reward) == max(float(base.reward), rg)
    if rg > float(base.reward):
        np.testing.assert_array_equal(np.asarray(more.decision), np.asarray(g))
        assert int(more.first_pos) == 5  # after the 4 quantised candidates


def test_ours_trains_and_records_the_reward_not_the_critic_value():
    # with a look-ahead the critic's value is R - penalty; reward_observed must stay R on observed values
    cfg = Config.for_scenario("base", devices=4)
    agent = AgentConfig(policy="grl", k=3, train_every=5, batch=8, memory=32, samples=2, lookahead=50.0)
    _, rec = make_train(cfg, agent, 30)(jax.random.key(1))
    ro, r = np.asarray(rec["reward_observed"]), np.asarray(rec["reward"])
    np.testing.assert_allclose(ro, r, rtol=1e-6)  # base scenario: observed values are the true ones
    assert np.all(np.isfinite(np.asarray(rec["loss"])[5:])) and np.all(ro >= 0)


def test_ours_chunks_leave_no_trace():
    # our variant (softmax, the sequential decode and Gumbel samples as candidates, two rounds, the
    # look-ahead): a run cut into chunks computes what one scan computes, and the seed fixes it
    from train.sweep import Executor, build_runs, run_batched

    cfg = Config.for_scenario("capacity", devices=3)
    agent = AgentConfig(policy="grl", k=2, train_every=5, batch=8, memory=32, samples=2)
    rs = build_runs(cfg, agent, seeds=2, seed=0)
    ex = Executor(rs, shard=False)
    _, whole = run_batched(ex, 30, chunk=30)
    _, parts = run_batched(ex, 30, chunk=15)
    for k in whole:
        np.testing.assert_array_equal(whole[k], parts[k], err_msg=k)
    assert (whole["k_pos"] >= 1).all() and (whole["k_pos"] <= whole["k"]).all()


def test_ablation_rows_switch_one_ingredient_each(capsys):
    # benchmarks.ablation (docs/training.md's ablation table): every row but "ours" and "paper" differs
    # from our default in exactly one ingredient; bad input is one line, exit 2
    from benchmarks import ablation

    ours = AgentConfig(policy="grle").explicit()
    for name, over in ablation.ROWS.items():
        row = AgentConfig(policy="grle", **over).explicit()
        diff = [k for k in ("loss", "greedy_candidate", "samples", "critic_rounds", "lookahead")
                if getattr(row, k) != getattr(ours, k)]
        if name == "ours":
            assert diff == []
        elif name == "paper":
            assert row.variant == "paper" and len(diff) >= 3
        else:
            assert len(diff) == 1, (name, diff)
    for argv, field in ((["--rows", "foo"], "rows"), (["--settings", ""], "settings"), (["--seeds", "0"], "seeds")):
        assert ablation.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {field}:"), err
