"""Issue 17: references on the same draws, figures without empty panels, intervals that say what
they are, ``python -m train.plots``, ``--resume`` messages and its absolute progress bar, the
``time_ms`` column, ``python -m train.experiments claims DIR``, and build_profile choosing among
timed exits. Small runs (N = 3, tens of slots)."""

from __future__ import annotations

import csv
import json
import os

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from train import plots  # noqa: E402
from train.grle import main as grle_main  # noqa: E402

BASE = ["--devices", "3", "--slots", "40", "--chunk", "20"]


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def run(argv, capsys):
    rc = grle_main(argv)
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    return cap.out, cap.err


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A DROO run with 2 seeds and its references, and lone greedy runs with seeds 0 and 1."""
    d = tmp_path_factory.mktemp("runs")
    for argv in (["--policy", "droo", "--seeds", "2", "--k", "3", "--batch", "8", "--memory", "16", "--train-every",
                  "5", "--out", str(d / "droo")],
                 ["--policy", "greedy", "--seed", "0", "--out", str(d / "g0"), "--references", "none"],
                 ["--policy", "greedy", "--seed", "1", "--out", str(d / "g1"), "--references", "none"]):
        assert grle_main(BASE + argv + ["--quiet"]) == 0
    return d


def test_references_are_a_lone_run_on_the_same_draws(runs):
    summ = json.loads((runs / "droo" / "summary.json").read_text())
    refs = summ["references"]
    assert set(refs) == {"greedy", "random"}
    rows = _csv(runs / "droo" / "metrics.csv")
    for seed in (0, 1):
        lone = json.loads((runs / f"g{seed}" / "summary.json").read_text())
        mine = refs["greedy"]["per_run"][seed]
        for k in ("final_mean_reward", "final_ssp", "mean_reward", "ssp"):
            assert mine[k] == pytest.approx(lone[k], rel=1e-6), (seed, k)
        lone_rows = _csv(runs / f"g{seed}" / "metrics.csv")
        mine_rows = [r for r in rows if r["seed"] == str(seed)]
        assert [float(r["greedy_reward"]) for r in mine_rows] == pytest.approx(
            [float(r["reward"]) for r in lone_rows], rel=1e-6)
    # --references none: no references; time_ms is the slot's start
    g = json.loads((runs / "g0" / "summary.json").read_text())
    assert "references" not in g and "random_reward" not in _csv(runs / "g0" / "metrics.csv")[0]
    assert [float(r["time_ms"]) for r in _csv(runs / "g0" / "metrics.csv")[:3]] == [0.0, 20.0, 40.0]
    # per_run.csv: one row per seed, with the references' final reward
    pr = _csv(runs / "droo" / "per_run.csv")
    assert len(pr) == 2 and float(pr[1]["greedy_final_mean_reward"]) == pytest.approx(
        refs["greedy"]["per_run"][1]["final_mean_reward"])


def test_figure_panels(tmp_path):
    S, w = 60, 10
    cols = {f"mean_reward_ma{w}": np.full((1, S), 2.0), "loss": np.full((1, S), np.nan),
            "greedy_reward": np.full((1, S), 2.5)}
    table = [{"run": 0, "seed": 0}]
    path = str(tmp_path / "c.png")
    assert plots.convergence_from_columns(path, cols, table, w, "t", False, 0.0, "RANDOM") == ["reward"]
    cols["loss"] = np.linspace(0.7, 0.1, S)[None]
    cols["reward_oracle"] = np.full((1, S), 3.0)
    cols[f"normalised_reward_ma{w}"] = np.full((1, S), 0.8)
    assert plots.convergence_from_columns(path, cols, table, w, "t", True, 0.0, "GRLE") == [
        "reward", "normalised reward", "loss"]
    assert os.path.getsize(path) > 0


def test_intervals_from_three_seeds_clipped_else_each_seed():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    plots.draw(ax, np.array([[0.1, 0.2], [0.9, 0.8]]), "red", "two", lo=0.0, hi=1.0)
    assert not ax.collections and len(ax.lines) == 3  # each seed and the mean, no band
    fig2, ax2 = plt.subplots()
    plots.draw(ax2, np.array([[0.0, 0.0], [0.01, 1.0], [0.02, 1.0]]), "red", "three", lo=0.0, hi=1.0)
    verts = ax2.collections[0].get_paths()[0].vertices
    assert verts[:, 1].min() >= 0.0 and verts[:, 1].max() <= 1.0  # the band is clipped
    plt.close("all")
    assert plots.interval_text([0.5]) == "0.5000 (n = 1)"
    assert plots.interval_text([0.4, 0.6]) == "0.5000 [0.4000, 0.6000] (min-max, n = 2)"
    assert plots.interval_text([1, 2, 3, 4, 5], "{:.2f}").endswith("(95 % CI, n = 5)")


def test_plots_cli_redraws_and_compares(runs, tmp_path, capsys):
    assert plots.main([str(runs / "droo"), str(runs / "g0"), "--out", str(tmp_path / "cmp.png")]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "cmp.png").stat().st_size > 0
    assert "| DROO | mean |" in out and "(min-max, n = 2)" in out and "greedy (same draws)" in out
    assert "| GREEDY | 0 |" in out
    before = (runs / "g1" / "metrics.csv").read_text()
    assert plots.main([str(runs / "g1"), "--no-table"]) == 0  # redraw in place
    assert (runs / "g1" / "convergence.png").is_file() and (runs / "g1" / "metrics.csv").read_text() == before
    capsys.readouterr()
    for argv, field in (([str(tmp_path / "missing")], "run_dir"), ([str(tmp_path)], "run_dir"),
                        ([str(runs / "g0"), "--out", str(tmp_path / "no" / "x.png")], "out"),
                        ([str(runs / "g0"), "--out", str(tmp_path / "x.txt")], "out"), ([], "run_dir"),
                        ([str(runs / "g0"), "--bogus"], "arguments")):
        assert plots.main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {field}:"), (argv, err)


def test_resume_says_where_it_starts_and_counts_absolute_slots(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = ["--policy", "greedy", "--devices", "3", "--seeds", "2", "--slots", "40", "--chunk", "20",
              "--references", "none"]
    run(common + ["--checkpoint-every", "20", "--stop-after", "20", "--out", "cut", "--quiet"], capsys)
    out, err = run(["--resume", "cut"], capsys)
    assert "resuming at slot 20 of 40" in out
    assert "40/40 slots" in err and "/20 slots" not in err  # absolute slots, not the remaining 20
    stamp = {n: os.path.getmtime(tmp_path / "cut" / n) for n in ("metrics.csv", "summary.json", "convergence.png")}
    out, err = run(["--resume", "cut"], capsys)
    assert "already complete: nothing to do" in out and "agent-slots/s" not in out + err
    assert stamp == {n: os.path.getmtime(tmp_path / "cut" / n) for n in stamp}


def test_claims_command(tmp_path, capsys):
    from train import experiments as ex

    d = tmp_path / "devices"
    d.mkdir()
    claims = [{"ratio": "grle/grl", "overdue": "abort", "T_ms": 20.0, "N": 4, "final_avg_accuracy": 1.3,
               "avg_accuracy": 1.2}]
    (d / "summary.json").write_text(json.dumps({"experiment": "devices", "claims": claims, "cells": []}))
    assert ex.main(["claims", str(d)]) == 0
    out = capsys.readouterr().out
    assert "| GRLE/GRL avg accuracy 1.28 (base) | abort | 1.30 (4, 20) | reproduced |" in out
    (tmp_path / "empty").mkdir()
    for argv in (["claims", str(tmp_path / "none")], ["claims", str(tmp_path / "empty")], ["claims"]):
        assert ex.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), err


def test_build_profile_chooses_among_timed_exits(tmp_path, capsys):
    import jax

    from grle_jax.profile import Profile
    from profiling import build_profile, time_exits

    timed = [1, 3, 4, 7, 17]
    rec = {"format": time_exits.FORMAT, "jax_version": jax.__version__, "settings": {"width": 1.0},
           "devices": [{"id": "cpu", "name": "cpu", "platform": "cpu", "kind": "cpu",
                        "results": [{"batch": 1, "exits": timed, "median_ms": [0.1 * k for k in timed]}]}]}
    (tmp_path / "t.json").write_text(json.dumps(rec))
    # every exit adds accuracy: the rule over all 17 would keep 1, 14, 15, 16, 17 (untimed ones)
    (tmp_path / "a.json").write_text(json.dumps({"exits": list(range(1, 18)),
                                                 "acc": [0.5 + 0.02 * k for k in range(1, 18)]}))
    out = tmp_path / "p.json"
    assert build_profile.main(["--accuracy", str(tmp_path / "a.json"), "--timing", str(tmp_path / "t.json"),
                               "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert set(Profile.load(str(out)).exits) <= set(timed)
    assert err.count("\n") == 1 and "timed" in err  # one note line
    assert time_exits._runs([1, 3, 4, 7, 17]) == [[1, 2]]  # only 3-4 are joined by a line


def test_numpy_helpers_match_the_jax_ones():
    from grle_jax.metrics import moving_mean
    from grle_jax.stats import ci95

    x = np.random.default_rng(0).normal(size=(3, 120))
    x[1, 40:55] = np.nan
    np.testing.assert_allclose(plots.moving_mean(x, 50), moving_mean(x, 50), equal_nan=True)
    np.testing.assert_allclose(plots.ci95(x), ci95(x), equal_nan=True)


def test_ci95_is_student_t():
    """grle_jax.stats.ci95 against scipy.stats' Student t interval, for 2 to 40 values."""
    from scipy import stats

    from grle_jax.stats import ci95

    rng = np.random.default_rng(1)
    for n in range(2, 41):
        v = rng.normal(size=n)
        lo, hi = stats.t.interval(0.95, n - 1, loc=v.mean(), scale=stats.sem(v))
        assert ci95(v) == pytest.approx((hi - lo) / 2, rel=1e-12)
    assert ci95(np.array([3.0])) == 0.0


def test_experiment_convergence_rows_carry_the_references():
    from train import experiments as ex

    cell = ex.Cell("convergence", "base", "grle", 14, 20.0, "abort")
    S = 60
    recs = {"reward_observed": np.full((2, S), 12.0), "reward_oracle": np.full((2, S), 13.0),
            "loss": np.full((2, S), 0.3)}
    refs = {"greedy": {"reward": np.full((2, S), 12.5)}, "random": {"reward": np.full((2, S), 11.0)}}
    rows = ex.convergence_rows(cell, recs, 1.0, refs)
    m = ex.summarise_rows(rows, "convergence")[0]["metrics"]
    assert m["greedy_reward_ma50"]["mean"] == 12.5 and m["random_reward_ma50"]["mean"] == 11.0
    assert m["oracle_reward_ma50"]["mean"] == 13.0 and m["normalised_reward_ma50"]["mean"] == pytest.approx(12 / 13)


def test_bad_references_one_line_exit_2(tmp_path, capsys):
    for bad in ("foo", ",", "greedy,oracle"):
        assert grle_main(["--references", bad, "--slots", "5", "--out", str(tmp_path / "x"), "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: references:"), err
    assert not (tmp_path / "x").exists()
