"""One runner for every policy (issue 16): fixed policies run through ``train.loop.Trainer`` like
the learners, traces and references included, and give exactly the records of the separate
rollout path they replaced."""

import os

import numpy as np
import pytest

from grle_jax.config import Config
from grle_jax.profile import DEFAULT_PROFILE
from train.grle import build_parser, plan_from_args, run_plan
from train.references import expected_table, run_references

DATA = os.path.join(os.path.dirname(__file__), "data", "runner_records.npz")
COUNTS = ("tasks", "on_time", "acc_sum", "reward", "reward_observed")


@pytest.mark.parametrize("policy", ["random", "greedy", "oracle"])
def test_fixed_policy_through_the_trainer_reproduces_the_old_rollout(policy, tmp_path):
    # tests/data/runner_records.npz: written by the code before issue 16 (grle_jax.rollout.run_chunk,
    # the path train.grle took for one fixed-policy run), csi, N = 4, p_link 0.8, seed 5, 40 slots in
    # chunks of 15, greedy with --normalise, each with its trace file.
    ref = np.load(DATA)
    trace = tmp_path / "t.jsonl"
    args = ["--policy", policy, "--scenario", "csi", "--devices", "4", "--p-link", "0.8", "--seed", "5",
            "--slots", "40", "--chunk", "15", "--trace", str(trace), "--out", str(tmp_path / "run"), "--quiet"]
    if policy == "greedy":
        args.append("--normalise")
    recs, table = run_plan(plan_from_args(build_parser().parse_args(args)))
    assert table == [{"run": 0, "seed": 5}]
    keys = COUNTS + (("reward_oracle",) if policy == "greedy" else ())
    for k in keys:
        np.testing.assert_array_equal(recs[k][0], ref[f"{policy}/{k}"], err_msg=k)
    assert trace.read_text() == str(ref[f"{policy}/trace_text"])
    assert np.isnan(recs["loss"]).all() and (recs["k"] == 1).all() and (recs["k_pos"] == 1).all()


def test_references_through_the_trainer_reproduce_the_old_rollout():
    ref = np.load(DATA)
    cfg = Config.for_scenario("csi", devices=4, slot_ms=20.0, p_link=0.8)
    table = expected_table({"scenario": ["base", "capacity"]}, 2, 7)
    refs = run_references(cfg, DEFAULT_PROFILE, table, 30, ("greedy", "random"))
    for name in ("greedy", "random"):
        for k in COUNTS:
            np.testing.assert_array_equal(refs[name][k], ref[f"ref-{name}/{k}"], err_msg=f"{name} {k}")
    # (that a reference equals a lone run with the run's seed and grid point: tests/test_plots.py)
