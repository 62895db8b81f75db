"""train.experiments (issue 5): a tiny sweep end to end (CSV, JSON summary, PNG), --resume skipping
finished cells, the convergence files and figure from synthetic records, the ratio claims, and one
line with exit status 2 for every kind of bad input."""

from __future__ import annotations

import csv
import json
import os

import matplotlib.image as mpimg
import numpy as np
import pytest

from train import experiments as ex

TINY = ["--n-values", "3", "--slots", "30", "--seeds", "2", "--policies", "greedy,random", "--overdue", "abort",
        "--quiet"]


def rows_of(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "devices"
    assert ex.main(["devices", *TINY, "--out", str(out), "--workers", "2"]) == 0  # two threads compile
    return out


def test_tiny_sweep_writes_csv_summary_and_figure(tiny_sweep):
    rows = rows_of(tiny_sweep / "devices.csv")
    assert len(rows) == 2 * 2 * 2  # policies x T x seeds
    assert {r["policy"] for r in rows} == {"greedy", "random"}
    assert {r["T_ms"] for r in rows} == {"20.0", "30.0"}
    assert {r["seed"] for r in rows} == {"0", "1"}
    for r in rows:
        assert r["N"] == "3" and r["overdue"] == "abort" and r["scenario"] == "base" and r["slots"] == "30"
        assert 0.0 <= float(r["ssp"]) <= 1.0 and 0.0 <= float(r["avg_accuracy"]) <= 0.935 + 1e-6
        # throughput = on-time tasks per second: SSP x N tasks per slot of T ms
        assert float(r["throughput_per_s"]) == pytest.approx(float(r["ssp"]) * 3 * 1000 / float(r["T_ms"]), rel=1e-9)
    summ = json.loads((tiny_sweep / "summary.json").read_text())
    assert summ["cells_total"] == summ["cells_done"] == 4
    assert summ["timing"]["compile"] == "auto" and summ["timing"]["cells_compiled_fast"] == 4
    cell = summ["cells"][0]
    m = cell["metrics"]["final_avg_accuracy"]
    assert m["n"] == 2 and m["mean"] == pytest.approx(np.mean(m["values"])) and m["ci95"] >= 0
    img = mpimg.imread(tiny_sweep / "devices_abort.png")
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 600
    assert os.path.getsize(tiny_sweep / "devices_abort.png") < 200_000


def test_resume_skips_finished_cells_and_reruns_a_missing_one(tiny_sweep, capsys):
    before = (tiny_sweep / "devices.csv").read_text()
    lost = tiny_sweep / "cells" / "base-random-N3-T30-abort.csv"
    lost.unlink()
    assert ex.main(["devices", *TINY, "--out", str(tiny_sweep), "--resume"]) == 0
    summ = json.loads((tiny_sweep / "summary.json").read_text())
    assert summ["timing"]["cells_skipped"] == 3 and summ["timing"]["cells_run"] == 1
    assert list(summ["timing"]["cell_wall_s"]) == ["base-random-N3-T30-abort"]
    after = rows_of(tiny_sweep / "devices.csv")
    old = rows_of_text(before)
    key = lambda r: (r["policy"], r["T_ms"], r["seed"])  # noqa: E731
    drop = ("cell_wall_s",)
    assert sorted(({k: v for k, v in r.items() if k not in drop} for r in after), key=key) == \
        sorted(({k: v for k, v in r.items() if k not in drop} for r in old), key=key)


def rows_of_text(text):
    return list(csv.DictReader(text.splitlines()))


def test_cell_with_other_slots_is_not_finished(tmp_path):
    cell = ex.Cell("devices", "base", "greedy", 3, 20.0, "abort")
    recs = {k: np.ones((2, 10), np.float32) for k in ("tasks", "on_time", "acc_sum", "reward", "loss")}
    path = tmp_path / "c.csv"
    ex.write_csv(str(path), ex.sweep_rows(cell, recs, 1.0), ex.SWEEP_COLUMNS)
    assert ex.cell_done(str(path), 2, 10, False)
    assert not ex.cell_done(str(path), 2, 20, False)
    assert not ex.cell_done(str(path), 3, 10, False)
    assert not ex.cell_done(str(tmp_path / "missing.csv"), 2, 10, False)


def test_convergence_files_from_synthetic_records(tmp_path):
    args = ex.build_parser().parse_args(["convergence", "--seeds", "2", "--slots", "80", "--overdue", "both",
                                         "--out", str(tmp_path / "conv")])
    plan = ex.plan_from_args(args)
    os.makedirs(tmp_path / "conv" / "cells")
    rng = np.random.default_rng(0)
    for cell in plan.cells("convergence"):
        recs = {"reward_observed": rng.uniform(10, 13, (2, 80)), "reward_oracle": np.full((2, 80), 13.0),
                "loss": np.linspace(0.7, 0.1, 160).reshape(2, 80)}
        ex.write_csv(str(tmp_path / "conv" / "cells" / f"{cell.name}.csv"), ex.convergence_rows(cell, recs, 1.0),
                     ex.CONV_COLUMNS)
    summ = ex.write_experiment(plan, "convergence", {})
    assert summ["normalised"] and summ["cells_done"] == 4
    rows = rows_of(tmp_path / "conv" / "convergence.csv")
    assert len(rows) == 2 * 2 * 2 * 80  # policies x overdue x seeds x slots
    r = [x for x in rows if x["slot"] == "79" and x["seed"] == "0" and x["policy"] == "grle"][0]
    assert 0.7 < float(r["normalised_reward_ma50"]) <= 1.0
    for od in ("abort", "keep"):
        assert mpimg.imread(tmp_path / "conv" / f"convergence_{od}.png").ndim == 3


def test_claim_ratios():
    def cell(p, acc):
        return {"policy": p, "overdue": "abort", "T_ms": 20.0, "N": 10,
                "metrics": {"final_avg_accuracy": {"mean": acc}, "avg_accuracy": {"mean": acc / 2}}}

    out = ex.claim_ratios([cell("grle", 0.9), cell("grl", 0.6), cell("drooe", 0.8), cell("droo", 0.4)])
    by = {r["ratio"]: r for r in out}
    assert by["grle/grl"]["final_avg_accuracy"] == pytest.approx(1.5)
    assert by["grle/drooe"]["avg_accuracy"] == pytest.approx(0.9 / 0.8)
    assert by["drooe/droo"]["final_avg_accuracy"] == pytest.approx(2.0)


def test_threads_compiling_side_by_side_change_no_number(tiny_sweep, tmp_path):
    """--workers 2 runs the cells in a thread pool (the first cell of each program, then the others two
    at a time): the same rows as one thread. The tiny sweep's programs compile the fast way
    (--compile auto); this run compiles them with XLA's fusion emitters (--compile full): the same
    rows too (train.compiling)."""
    out = tmp_path / "one"
    assert ex.main(["devices", *TINY, "--out", str(out), "--workers", "1", "--compile", "full"]) == 0
    assert json.loads((out / "summary.json").read_text())["timing"]["cells_compiled_fast"] == 0
    drop = ("cell_wall_s",)
    one = [{k: v for k, v in r.items() if k not in drop} for r in rows_of(out / "devices.csv")]
    two = [{k: v for k, v in r.items() if k not in drop} for r in rows_of(tiny_sweep / "devices.csv")]
    assert one == two and len(one) == 2 * 2 * 2  # policies x T values x seeds


def test_quick_and_paper_plans():
    plan = ex.plan_from_args(ex.build_parser().parse_args(["paper", "--quick"]))
    assert plan.experiments == ex.EXPERIMENTS and plan.seeds == 2 and plan.slots == 500
    assert plan.n_values == (4, 10) and plan.overdue == ("abort",)
    assert plan.folder("csi").endswith(os.path.join("paper", "csi"))
    cells = plan.cells("capacity")
    assert len(cells) == 2 * 6 * 2 and {c.scenario for c in cells} == {"capacity"}
    full = ex.plan_from_args(ex.build_parser().parse_args(["devices"]))
    assert full.seeds == 5 and full.slots == 10_000 and full.overdue == ("abort", "keep")
    assert full.n_values == tuple(range(2, 31, 2)) and full.t_values == (20.0, 30.0)
    assert {c.rounds for c in full.cells("devices")} == {None}  # each variant's own
    # default variants: ours for the graph learners (cells end in -ours), the paper's for DROO/DROOE;
    # cells of the paper variant keep the names they had before the variants existed
    names = {c.policy: c.name for c in full.cells("devices") if c.n == 4 and c.t_ms == 20 and c.overdue == "abort"}
    assert names["grle"].endswith("-abort-ours") and names["droo"].endswith("-abort")
    paper = ex.plan_from_args(ex.build_parser().parse_args(["devices", "--variant", "paper", "--n-values", "4"]))
    assert all(c.name.endswith("-abort") or c.name.endswith("-keep") for c in paper.cells("devices"))
    assert {c.agent.resolved_variant for c in paper.cells("devices") if c.policy == "grle"} == {"paper"}
    # --critic-rounds reaches the learning policies only, and their cells get their own files
    r4 = ex.plan_from_args(ex.build_parser().parse_args(["devices", "--critic-rounds", "4", "--n-values", "4"]))
    by_policy = {c.policy: c for c in r4.cells("devices")}
    assert {p: c.rounds for p, c in by_policy.items()} == {"grle": 4, "grl": 4, "droo": 4, "drooe": 4,
                                                            "greedy": None, "random": None}
    assert by_policy["grle"].name.endswith("-ours-r4") and by_policy["droo"].name.endswith("-r4")
    assert not by_policy["greedy"].name.endswith("-r4")


def test_quick_programs_compile_fast_and_the_grid_for_running():
    """train.compiling under --compile auto: every program of `paper --quick` plans little work and
    is compiled the fast way; every program of the full grid is compiled for speed of running."""
    def fast(argv):
        plan = ex.plan_from_args(ex.build_parser().parse_args(argv))
        return ex.fast_programs(plan, [c for e in plan.experiments for c in plan.cells(e)])

    quick, grid = fast(["paper", "--quick"]), fast(["paper"])
    assert len(quick) == 14 and all(quick.values())
    assert len(grid) > 80 and not any(grid.values())
    assert all(fast(["paper", "--compile", "fast"]).values())
    assert not any(fast(["paper", "--quick", "--compile", "full"]).values())
    # the work of a program counts every cell that shares it: 2 T values of N = 10 at 5,000 slots x 2
    # seeds are 200,000 device-slots (fast), 3 are 300,000 (not)
    assert all(fast(["devices", "--quick", "--slots", "5000", "--t-values", "20,30", "--n-values", "10"]).values())
    assert not any(fast(["devices", "--quick", "--slots", "5000", "--t-values", "20,30,40", "--n-values", "10"]).values())


@pytest.mark.parametrize("argv,field", [
    (["figure9"], "name"),
    (["devices", "--overdue", "sometimes"], "overdue"),
    (["devices", "--seeds", "0"], "seeds"),
    (["devices", "--slots", "-5"], "slots"),
    (["devices", "--slots", "ten"], "slots"),
    (["devices", "--n-values", "3,x"], "n_values"),
    (["devices", "--n-values", "0"], "n_values"),
    (["devices", "--t-values", "20,-1"], "t_values"),
    (["devices", "--policies", "greedy,best"], "policies"),
    (["devices", "--out", "/no/such/folder/x"], "out"),
    (["devices", "--frobnicate"], "arguments"),
    (["devices", "--workers", "0"], "workers"),
    (["devices", "--critic-rounds", "0"], "critic_rounds"),
    (["devices", "--variant", "best"], "variant"),
    (["devices", "--compile", "never"], "compile"),
])
def test_bad_input_is_one_line_exit_2(argv, field, capsys, tmp_path):
    assert ex.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"error: {field}: "), err
