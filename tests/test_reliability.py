"""Nothing lost, nothing mixed (issue 15): every probe of the issue, table-driven, so none comes back.

- bad input anywhere (numbers outside int32/float32, mistyped JSON, empty or unwritable paths,
  malformed traces) is one line ``error: <field>: <why>``, exit 2, and touches nothing;
- a folder holding a run, an existing trace, or experiment cells are refused without --overwrite;
- --resume refuses, naming the first differing field, a config.json or checkpoint of another run,
  another installation, or a checkpoint of the wrong shapes; stale temporary checkpoints go;
- a NaN loss stops the run naming the slot, with the slots before it saved;
- the CIFAR-10 loader refuses a 400-byte pickle bomb in well under a second.

The runs are tiny (N = 3, a few dozen slots, the random policy: cheap programs)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import statistics
import time

import numpy as np
import pytest

from train import experiments as ex
from train import rundir
from train import timeline as tl
from train.grle import main

RUN = ["--policy", "random", "--devices", "3", "--slots", "40", "--chunk", "20", "--quiet"]


def one_line(capsys, field):
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}:"), err
    assert "Traceback" not in err
    return lines[0]


def snapshot(d):
    return {os.path.relpath(os.path.join(r, f), d): open(os.path.join(r, f), "rb").read()
            for r, _, fs in os.walk(d) for f in fs}


def _w(path, text):
    path.write_text(text)
    return str(path)


# --- train.grle: one line, exit 2, nothing touched ----------------------------------------------------
def grle_probes(tmp):
    prof = json.loads(json.dumps({"exits": [1, 3], "acc": [0.8, 0.9], "devices": [{"name": "x", "time_ms": [1, 2]}]}))
    return [
        (["--devices", "99999999999999999999"], "devices"),
        (["--servers", "3000000000"], "servers"),
        (["--seed", "1e23"], "seed"),
        (["--seed", "99999999999999999999999"], "seed"),
        (["--seed", "-1"], "seed"),
        (["--seed", "2147483647", "--seeds", "2"], "seeds"),
        (["--topology-every", "1e14"], "topology_every"),
        (["--topology-every", "100000000000000"], "topology_every"),
        (["--slots", "1e20"], "slots"),
        (["--slots", "100000000000000000000"], "slots"),
        (["--chunk", "99999999999"], "chunk"),
        (["--deadline-ms", "1e300"], "deadline_ms"),
        (["--slot-ms", "inf"], "slot_ms"),
        (["--rho", "1e39"], "rho"),
        (["--policy", "droo", "--lr", "1e300"], "lr"),
        (["--policy", "droo", "--batch", "3000000000"], "batch"),
        (["--config", _w(tmp / "c1.json", json.dumps({"scenario": ["base"]}))], "scenario"),
        (["--config", _w(tmp / "c2.json", json.dumps({"deadline_ms": 1e300}))], "deadline_ms"),
        (["--config", _w(tmp / "c3.json", json.dumps({"size_kb": [1, 1e39]}))], "size_kb"),
        (["--config", _w(tmp / "c4.json", json.dumps({"devices": 2**40}))], "devices"),
        (["--sweep", _w(tmp / "s1.json", json.dumps({"scenario": [["base"]]}))], "sweep.scenario"),
        (["--sweep", _w(tmp / "s2.json", json.dumps({"deadline_ms": [1e300]}))], "sweep.deadline_ms"),
        (["--profile", _w(tmp / "p1.json", json.dumps({**prof, "exitz": [1]}))], "profile.exitz"),
        (["--profile", _w(tmp / "p2.json", json.dumps({**prof, "devices": [{"name": "x", "time_ms": [1, 1e300]}]}))],
         "profile.devices[0].time_ms[1]"),
    ]


def test_grle_bad_numbers_and_json_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.csv").write_text("precious\n")
    before = snapshot(out)
    for argv, field in grle_probes(tmp_path):
        assert main(RUN + argv + ["--out", str(out)]) == 2, argv
        one_line(capsys, field)
    assert snapshot(out) == before


def test_grle_output_paths_checked_before_any_work(tmp_path, capsys, monkeypatch):
    import train.grle as grle

    def no_work(plan):
        raise AssertionError("ran before refusing")

    monkeypatch.setattr(grle, "run_plan", no_work)
    old = tmp_path / "old"
    old.mkdir()
    (old / "summary.json").write_text("{}")
    (old / "metrics.csv").write_text("precious\n")
    trace = tmp_path / "t.jsonl"
    trace.write_text("old trace\n")
    probes = [
        (["--out", ""], "out"),
        (["--out", "   "], "out"),
        (["--trace", "", "--out", str(tmp_path / "a")], "trace"),
        (["--out", str(tmp_path / "no" / "such")], "out"),
        (["--out", str(old)], "out"),  # holds a run
        (["--out", str(tmp_path / "b"), "--trace", str(trace)], "trace"),  # exists
        (["--out", str(old), "--trace", str(old / "metrics.csv"), "--overwrite"], "trace"),  # a results file
        (["--out", str(tmp_path / "c"), "--trace", str(tmp_path / "no" / "t.jsonl")], "trace"),
    ]
    if os.path.isdir("/proc") and os.name == "posix":
        probes.append((["--out", "/proc/x"], "out"))
    if os.name == "posix" and os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        os.chmod(ro, 0o500)
        probes.append((["--out", str(ro / "x")], "out"))
        probes.append((["--out", str(tmp_path / "d"), "--trace", str(ro / "t.jsonl")], "trace"))
    before = snapshot(tmp_path)
    for argv, field in probes:
        assert main(RUN + argv) == 2, argv
        one_line(capsys, field)
    assert snapshot(tmp_path) == before
    assert not any((tmp_path / n).exists() for n in "abcd")  # the probes left no folder behind


def test_overwrite_clears_the_old_run_before_the_first_slot(tmp_path, capsys, monkeypatch):
    """A re-run killed midway leaves its own config.json only, never one run's files beside another's."""
    import train.grle as grle

    out = tmp_path / "M"
    assert main(RUN + ["--seed", "7", "--checkpoint-every", "20", "--stop-after", "20", "--out", str(out)]) == 0
    assert main(RUN + ["--seed", "7", "--out", str(out)]) == 2  # a run is there
    one_line(capsys, "out")
    assert (out / "checkpoints" / "slot_20").is_dir()  # untouched

    def killed(plan):
        raise KeyboardInterrupt

    monkeypatch.setattr(grle, "run_plan", killed)
    with pytest.raises(KeyboardInterrupt):
        main(RUN + ["--seed", "99", "--deadline-ms", "25", "--out", str(out), "--overwrite"])
    assert sorted(os.listdir(out)) == ["config.json"]
    conf = json.loads((out / "config.json").read_text())
    assert conf["seed"] == 99 and conf["fingerprint"]["config"]["deadline_ms"] == 25.0


# --- --resume: fingerprints and shapes ----------------------------------------------------------------
@pytest.fixture(scope="module")
def cut_runs(tmp_path_factory):
    """Two runs stopped at slot 20 of 40 (seeds 7 and 8) and one of N = 4."""
    root = tmp_path_factory.mktemp("resume")
    for name, extra in (("s7", ["--seed", "7"]), ("s8", ["--seed", "8"]), ("n4", ["--seed", "7", "--devices", "4"])):
        assert main(RUN + extra + ["--checkpoint-every", "20", "--stop-after", "20", "--out", str(root / name)]) == 0
    return root


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _edit_json(path, fn):
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d))


def _set(keys, value):
    def fn(d):
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
    return fn


def resume_probes(root, tmp):
    """(folder prepared from the cut runs, what the one line must contain)."""
    cases = []

    def case(name, prepare, text):
        d = _copy(root / "s7", tmp / name)
        prepare(d)
        cases.append((d, text))

    case("seed", lambda d: _edit_json(d / "config.json", _set(["seed"], 99)), "seed differs")
    case("devices", lambda d: _edit_json(d / "config.json", _set(["config", "devices"], 5)),
         "config.devices differs")
    case("deadline", lambda d: _edit_json(d / "config.json", _set(["config", "deadline_ms"], 25.0)),
         "config.deadline_ms differs")
    case("jax", lambda d: _edit_json(d / "config.json", _set(["fingerprint", "versions", "jax"], "0.0.1")),
         "versions.jax differs")
    case("nofp", lambda d: _edit_json(d / "config.json", lambda c: c.pop("fingerprint")), "no fingerprint")
    case("noslots", lambda d: _edit_json(d / "config.json", lambda c: c.pop("slots")), "no 'slots'")
    case("array", lambda d: (d / "config.json").write_text("[1, 2]"), "a JSON array, not an object")
    case("floatseed", lambda d: _edit_json(d / "config.json", _set(["seed"], 1e23)), "seed")

    def other_run(d):  # the checkpoints of the seed-8 run beside the seed-7 config.json
        shutil.rmtree(d / "checkpoints")
        shutil.copytree(root / "s8" / "checkpoints", d / "checkpoints")

    case("mixed", other_run, "checkpoint slot_20 says 8")

    def wrong_shapes(d):  # N = 4 checkpoints whose meta claims this run's fingerprint
        shutil.rmtree(d / "checkpoints")
        shutil.copytree(root / "n4" / "checkpoints", d / "checkpoints")
        fp = json.loads((d / "config.json").read_text())["fingerprint"]
        _edit_json(d / "checkpoints" / "slot_20" / "meta.json", _set(["fingerprint"], fp))

    case("shapes", wrong_shapes, "has shape")
    return cases


def test_resume_refuses_what_does_not_match(cut_runs, tmp_path, capsys):
    for d, text in resume_probes(cut_runs, tmp_path):
        before = snapshot(d)
        assert main(["--resume", str(d), "--quiet"]) == 2, d.name
        line = one_line(capsys, "resume")
        assert text in line and line.count("resume:") == 1, (d.name, line)
        assert snapshot(d) == before, d.name
    assert main(["--resume", str(cut_runs / "s7"), "--overwrite"]) == 2
    one_line(capsys, "overwrite")


def test_resume_cleans_stale_temporary_checkpoints(cut_runs, tmp_path, capsys):
    d = _copy(cut_runs / "s7", tmp_path / "stale")
    (d / "checkpoints" / ".tmp-slot_40-12345" / "tree").mkdir(parents=True)
    (d / "checkpoints" / "slot_20.old-999").mkdir()
    (d / "checkpoints" / "slot_20").rename(d / "checkpoints" / "slot_20.old-998")  # killed mid re-save
    assert main(["--resume", str(d), "--quiet"]) == 0, capsys.readouterr().err
    assert sorted(os.listdir(d / "checkpoints")) == ["slot_20", "slot_40"]
    assert (d / "summary.json").is_file()
    full = tmp_path / "full"
    assert main(RUN + ["--seed", "7", "--checkpoint-every", "20", "--out", str(full)]) == 0
    assert (d / "metrics.csv").read_text() == (full / "metrics.csv").read_text()


# --- NaN / inf ------------------------------------------------------------------------------------------
def test_nan_loss_stops_naming_the_slot_and_keeps_the_slots_before(tmp_path, capsys):
    out = tmp_path / "nan"
    from test_train_cli import SMALL  # its compiled program (the learning rate is a dynamic value)

    rc = main(SMALL + ["--slots", "100", "--lr", "1e30", "--quiet", "--references", "none", "--out", str(out)])
    assert rc == 2
    line = one_line(capsys, "loss")
    slot = int(line.split(" at slot ")[1].split()[0])
    assert 0 < slot < 100 and f"slots 0..{slot - 1} saved" in line
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 * slot  # 4 seeds
    assert json.loads((out / "summary.json").read_text())["slots"] == slot


def test_first_nonfinite():
    import numpy as np

    nan = float("nan")
    recs = {"reward": np.array([[1.0, 2.0, 3.0, 4.0]] * 2),
            "loss": np.array([[nan, nan, 0.5, 0.4], [nan, 0.3, nan, 1]])}
    bad = rundir.first_nonfinite(recs)
    assert (bad.key, bad.slot, bad.run) == ("loss", 2, 1)  # NaN before the first step is by design
    # the same records in two pieces, as run_plan sees them chunk by chunk
    first = {k: v[:, :2] for k, v in recs.items()}
    rest = {k: v[:, 2:] for k, v in recs.items()}
    assert rundir.first_nonfinite(first) is None
    bad = rundir.first_nonfinite(rest, rundir.loss_was_finite(first), offset=2)
    assert (bad.key, bad.slot, bad.run) == ("loss", 2, 1)
    assert rundir.first_nonfinite(rest, None, offset=2) is None  # without the history it looks like a start
    recs["loss"][1, 2] = 0.2
    assert rundir.first_nonfinite(recs) is None
    recs["reward"][0, 1] = np.inf
    assert (rundir.first_nonfinite(recs).key, rundir.first_nonfinite(recs).slot) == ("reward", 1)


# --- train.experiments ------------------------------------------------------------------------------------
def test_experiments_refusals(tmp_path, capsys):
    done = tmp_path / "done"
    (done / "cells").mkdir(parents=True)
    (done / "cells" / "base-random-N4-T20-abort.csv").write_text("hours of work\n")
    old = tmp_path / "old"  # cells computed by another installation
    shutil.copytree(done, old)
    fp = ex.cells_fingerprint()
    fp["versions"]["jax"] = "0.0.1"
    (old / "cells" / ex.CELLS_FINGERPRINT).write_text(json.dumps(fp))
    tiny = ["devices", "--seeds", "1", "--slots", "5", "--n-values", "4", "--policies", "random", "--quiet"]
    probes = [
        (tiny + ["--out", str(old), "--resume"], "resume"),
        (tiny + ["--out", ""], "out"),
        (tiny + ["--out", str(done)], "out"),  # cells of an earlier run, no --resume
        (tiny + ["--out", str(done), "--resume", "--overwrite"], "overwrite"),
        (tiny + ["--out", str(tmp_path / "x"), "--slots", "99999999999"], "slots"),
        (tiny + ["--out", str(tmp_path / "x"), "--seeds", "3000000000"], "seeds"),
        (tiny + ["--out", str(tmp_path / "x"), "--t-values", "1e300"], "t_values"),
        (tiny + ["--out", str(tmp_path / "x"), "--n-values", "99999999999"], "n_values"),
    ]
    if os.path.isdir("/proc") and os.name == "posix":
        probes.append((tiny + ["--out", "/proc/x"], "out"))
    before = snapshot(tmp_path)
    for argv, field in probes:
        assert ex.main(argv) == 2, argv
        one_line(capsys, field)
    assert snapshot(tmp_path) == before


def test_experiments_overwrite_clears_the_earlier_run_first(tmp_path, monkeypatch):
    out = tmp_path / "e"
    (out / "cells").mkdir(parents=True)
    for name in ("cells/base-random-N4-T20-abort.csv", "devices.csv", "summary.json", "devices_abort.png", "notes.txt"):
        (out / name).write_text("old\n")

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ex, "run_cell", killed)
    argv = ["devices", "--seeds", "1", "--slots", "5", "--n-values", "4", "--policies", "random", "--quiet",
            "--workers", "1", "--out", str(out)]
    with pytest.raises(KeyboardInterrupt):
        ex.main(argv + ["--overwrite"])
    assert sorted(os.listdir(out)) == ["cells", "notes.txt"]  # only what the new run wrote, and yours
    assert os.listdir(out / "cells") == [ex.CELLS_FINGERPRINT]


def test_experiments_stop_at_a_nonfinite_cell(tmp_path):
    import numpy as np

    plan = ex.plan_from_args(ex.build_parser().parse_args(["devices", "--out", str(tmp_path / "e")]))
    cell = plan.cells("devices")[0]
    recs = {"reward": np.ones((2, 5)), "loss": np.array([[np.nan, 1, 1, np.inf, 1], [np.nan] * 5])}
    with pytest.raises(ex.ConfigError, match=f"loss: became inf at slot 3 of cell {cell.name} \\(seed 0\\)"):
        ex.check_finite(cell, recs, plan)
    recs["loss"][0, 3] = 0.5
    ex.check_finite(cell, recs, plan)


# --- train.timeline ---------------------------------------------------------------------------------------
def test_timeline_malformed_traces_and_outputs(tmp_path, capsys):
    head = {"kind": "header", "config": {"deadline_ms": 30.0, "slot_ms": 20.0}, "acc": [0.8], "c": [[1.0]]}
    slot = {"kind": "slot", "t": 0, "g": 0.0, "m": [0], "e": [0], "A": [1.0], "S": [1.0], "F": [2.0], "ok": [True],
            "s": [50.0], "r": [[50.0]]}

    def trace(name, *lines):
        p = tmp_path / name
        p.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
        return str(p)

    good = trace("good.jsonl", head, slot)
    probes = [
        ([trace("list.jsonl", head, [1, 2])], "trace"),
        ([trace("liststart.jsonl", [head])], "trace"),
        ([trace("t.jsonl", head, {**slot, "t": "3"})], "trace"),
        ([trace("tf.jsonl", head, {**slot, "t": 2.5})], "trace"),
        ([trace("nokey.jsonl", head, {k: v for k, v in slot.items() if k != "F"})], "trace"),
        ([trace("badm.jsonl", head, {**slot, "m": ["x"]})], "trace"),
        ([good, "--out", str(tmp_path / "x.jsonl")], "out"),
        ([good, "--out", good], "out"),
        ([good, "--out", ""], "out"),
    ]
    for argv, field in probes:
        assert tl.main(argv) == 2, argv
        one_line(capsys, field)
    assert tl.main([good, "--out", str(tmp_path / "ok.png")]) == 0


# --- benchmarks and profiling -------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,field", [
    (["--devices", "-3"], "devices"), (["--devices", "99999999999999999999"], "devices"),
    (["--slots", "0"], "slots"), (["--batches", "1,x"], "batches"), (["--ks", "0"], "ks"),
    (["--scenario", "mars"], "scenario"), (["--json", ""], "json"),
])
def test_sim_throughput_one_line(argv, field, capsys):
    from benchmarks import sim_throughput

    assert sim_throughput.cli(argv) == 2
    one_line(capsys, field)


@pytest.mark.parametrize("argv,field", [
    (["--n-values", "1"], "n_values"), (["--n-values", "4,x"], "n_values"), (["--slots", "15"], "slots"),
    (["--reps", "0"], "reps"), (["--group", "3"], "group"), (["--policies", "grle,mars"], "policies"),
    (["--workers", "0"], "workers"),
    (["--json", "/no/such/folder/x.json"], "json"),
])
def test_grid_estimate_one_line(argv, field, capsys):
    from benchmarks import grid_estimate

    assert grid_estimate.main(argv) == 2
    one_line(capsys, field)


@pytest.mark.parametrize("argv,field", [
    (["--runs", "0"], "runs"), (["--slots", "15"], "slots"), (["--reps", "0"], "reps"),
    (["--chunk", "0"], "chunk"), (["--scenario", "mars"], "scenario"), (["--policy", "droo"], "policy"),
    (["--json", "/no/such/folder/x.json"], "json"),
])
def test_group_split_one_line(argv, field, capsys):
    from benchmarks import group_split

    assert group_split.main(argv) == 2
    one_line(capsys, field)


def test_group_split_measures_four_ways(tmp_path, capsys):
    """benchmarks.group_split: the group timed as trained, without the greedy candidate, without
    learning and without both; the split is made of those four medians."""
    from benchmarks import group_split

    out = tmp_path / "split.json"
    assert group_split.main(["--runs", "2", "--slots", "10", "--reps", "1", "--devices", "3",
                             "--json", str(out)]) == 0
    rec = json.loads(out.read_text())
    ms = {k: v["ms_per_slot"] for k, v in rec["variants"].items()}
    assert set(ms) == {"as trained", "no greedy candidate", "no learning", "neither"}
    assert all(v > 0 for v in ms.values())
    learned = {k: v["learned"] for k, v in rec["variants"].items()}  # the parameters moved, or not
    assert learned == {"as trained": True, "no greedy candidate": True, "no learning": False, "neither": False}
    assert rec["split_ms"]["learning"] == pytest.approx(ms["as trained"] - ms["no learning"])
    assert rec["split_ms"]["greedy candidate"] == pytest.approx(ms["as trained"] - ms["no greedy candidate"])
    assert rec["split_ms"]["rest of acting"] == ms["neither"]
    assert "learning" in capsys.readouterr().out


@pytest.mark.parametrize("argv,field", [
    (["--runs", "1", "0"], "runs"), (["--slots", "15"], "slots"), (["--reps", "0"], "reps"),
    (["--gcn-hidden", "64,x"], "gcn_hidden"), (["--gcn-hidden", "0"], "gcn_hidden"),
    (["--head-hidden", "0"], "head_hidden"), (["--policy", "droo", "--head-hidden", "8"], "head_hidden"),
    (["--json", "/no/such/folder/x.json"], "json"),
])
def test_train_speed_one_line(argv, field, capsys):
    from benchmarks import train_speed

    assert train_speed.main(argv) == 2
    one_line(capsys, field)


def test_train_speed_in_turns(monkeypatch, tmp_path, capsys):
    """benchmarks.train_speed --in-turns: every run count built (compiled) first, then one call of
    each in turns for every repetition; rows keep the lone run first so every row has its x lone;
    the widths reach the learner's config. Without it, one run count after another."""
    from benchmarks import train_speed

    calls, built = [], []

    def build(policy, runs, slots, *rest):
        built.append((runs, rest[-2], rest[-1]))
        calls.append(("build", runs))
        return {"policy": policy, "runs": runs, "slots": slots, "times": [], "first_call_s": 0.0}

    def time_call(b):
        calls.append(("call", b["runs"]))
        b["times"].append(0.01 * b["runs"] ** 0.5)  # sqrt(runs) slower: runs / sqrt(runs) x one run's rate

    monkeypatch.setattr(train_speed, "build", build)
    monkeypatch.setattr(train_speed, "time_call", time_call)
    monkeypatch.setattr(train_speed, "result", lambda b: {
        "runs": b["runs"], "agent_slots_per_s": b["runs"] * b["slots"] / b["times"][0],
        "slots_per_s_per_run": 0.0, "median_s": b["times"][0], "first_call_s": 0.0, "reps": len(b["times"])})
    out = tmp_path / "ts.json"
    assert train_speed.main(["--runs", "64", "1", "--slots", "10", "--reps", "2", "--in-turns",
                             "--gcn-hidden", "32,32", "--head-hidden", "16", "--json", str(out)]) == 0
    assert calls == [("build", 64), ("build", 1), ("call", 64), ("call", 1), ("call", 64), ("call", 1)]
    assert built == [(64, (32, 32), 16), (1, (32, 32), 16)]  # repeated widths are two layers
    rows = json.loads(out.read_text())["results"]
    assert [r["runs"] for r in rows] == [1, 64] and all(r["in_turns"] for r in rows)
    assert rows[1]["x_lone"] == pytest.approx(8.0)
    assert "GCN 32,32, head 16" in capsys.readouterr().out
    calls.clear()
    assert train_speed.main(["--runs", "1", "4", "--slots", "10", "--reps", "2"]) == 0
    assert calls == [("build", 1), ("call", 1), ("call", 1), ("build", 4), ("call", 4), ("call", 4)]


def test_grid_estimate_arithmetic():
    """The full grid's hours from per-N costs, against a plain count: 15 N values x 16 cells x
    5 seeds x 10,000 slots, costs linear in N between the measured points and beyond them."""
    from benchmarks.grid_estimate import estimate, interpolate

    assert np.allclose(interpolate([4, 10], [1.0, 2.2], [2, 4, 7, 10, 30]), [0.6, 1.0, 1.6, 2.2, 6.2])
    assert np.allclose(interpolate([4, 10], [1.0, 0.1], [30]), [0.025])  # never below a quarter of the least
    rows = [{"policy": "p", "n": n, "ms_per_run_slot": 0.1 * n, "compile_s": 10.0} for n in (4, 30)]
    conv = [{"policy": "grle", "ms_per_run_slot": 2.0, "compile_s": 20.0}]
    est = estimate(rows, conv, group=1)["per_part"]
    runs_per_n = 2 * 2 * 4 * 5  # T x rule x sweep x seed
    plain = sum(0.1 * n * 1e-3 * runs_per_n * 10_000 for n in range(2, 31, 2))
    assert est["p"]["run_s"] == pytest.approx(plain)
    assert est["p"]["compile_s"] == pytest.approx(15 * 10.0)  # one program per N: both rules share it
    assert est["convergence-grle"] == pytest.approx({"run_s": 2e-3 * 2 * 5 * 10_000, "compile_s": 20.0})


def test_throughput_sides_take_turns():
    """benchmarks.throughput times JAX and each torch thread count call by call, the order rotated
    every round (a slow spell of the machine falls on every side alike); each side's median is
    over its own calls, and the torch count kept is the fastest per unit (all are recorded)."""
    from benchmarks.throughput import interleaved, torch_best

    seq = []
    timed = interleaved({k: (lambda k=k: seq.append(k)) for k in ("jax", "torch1", "torch2")}, 4)
    assert seq == ["jax", "torch1", "torch2", "torch1", "torch2", "jax",
                   "torch2", "jax", "torch1", "jax", "torch1", "torch2"]
    assert all(len(timed[k]["times"]) == 4 and timed[k]["median_s"] == statistics.median(timed[k]["times"])
               for k in timed)
    timed = {"torch1": {"median_s": 2.0}, "torch2": {"median_s": 1.5}}
    meta = {"torch1": {"units": 100, "threads": 1, "slots": 10}, "torch2": {"units": 50, "threads": 2, "slots": 5}}
    best = torch_best(timed, meta)
    assert (best["threads"], best["slots"]) == (1, 10)  # 50 units/s against 33
    assert best["threads_tried"] == {1: 50.0, 2: pytest.approx(100 / 3)}


def test_throughput_checks_the_targets():
    """The throughput run ends with issue 14's part-5 targets judged from its own rows: a ratio at
    or under 1 anywhere from B = 16 fails 'ahead', under 1.5x from B = 1,024 fails the margin, GRLE's
    scaling needs B = 1 and 64, and a target the run did not measure is None, never met."""
    from benchmarks.throughput import check_targets, summarise, targets_text

    def row(impl, metric, B, rate, **kw):
        return dict(impl=impl, metric=metric, batch=B, rate=rate, **kw)

    rows = [row("jax", "sim", 1024, 9e5), row("torch_batched", "sim", 1024, 3e5),
            row("jax", "sim", 8192, 1.2e6), row("torch_batched", "sim", 8192, 4e5),
            row("jax", "train_droo", 16, 30e3), row("torch_batched", "train_droo", 16, 10e3),
            row("jax", "train_droo", 1024, 42e3), row("torch_batched", "train_droo", 1024, 34e3),
            row("jax", "train_grle", 1, 1000.0, fraction_of_peak=0.10),
            row("jax", "train_grle", 64, 4100.0, fraction_of_peak=0.34),
            row("torch_batched", "train_grle", 64, 600.0)]
    res = {"results": rows, "summary": summarise(rows, [1, 16, 64, 1024, 8192])}
    got = {t["target"]: t for t in check_targets(res)}
    assert len(got) == 5
    ahead, margin, scaling, peak, sim = got.values()
    assert ahead["met"] is True and "1.24x (train_droo B=1024)" in ahead["value"]
    assert margin["met"] is False and margin["value"] == "train_droo B=1024 1.24x"
    assert scaling["met"] is True and scaling["value"].startswith("4.10x")
    assert peak["met"] is True and peak["value"] == "34.0 % at B=64"
    assert sim["met"] is True
    # torch ahead at one B; GRLE without a lone run; sim falling from 1,024 to 8,192
    rows[7]["rate"], rows[2]["rate"] = 50e3, 8e5
    rows = [r for r in rows if not (r["metric"] == "train_grle" and r["batch"] == 1)]
    res = {"results": rows, "summary": summarise(rows, [1, 16, 64, 1024, 8192])}
    ahead, margin, scaling, peak, sim = check_targets(res)
    assert ahead["met"] is False and ahead["value"] == "train_droo B=1024 0.84x"
    assert margin["met"] is False and scaling["met"] is None and sim["met"] is False
    text = targets_text(check_targets(res))
    assert "[NOT met]" in text and "[not measured]" in text and "[met]" in text
    assert check_targets({"results": [], "summary": []})[0]["met"] is None


def test_policy_quality_out_checked_first(tmp_path, capsys):
    from benchmarks import policy_quality

    probes = (["--out", ""], ["--slots", "99999999999"]) + ((["--out", "/proc/x"],) if os.path.isdir("/proc") else ())
    for argv in probes:
        assert policy_quality.main(argv) == 2, argv
        one_line(capsys, "slots" if "--slots" in argv else "out")


def test_profiling_outputs_checked_first(tmp_path, capsys):
    from profiling import time_exits, train_exits

    assert time_exits.main(["--out", str(tmp_path / "missing" / "t.json")]) == 2
    one_line(capsys, "out")
    assert not (tmp_path / "missing").exists()
    assert time_exits.main(["--out", ""]) == 2
    one_line(capsys, "out")
    assert train_exits.main(["--dataset", "synthetic", "--out", ""]) == 2
    one_line(capsys, "out")
    assert train_exits.main(["--dataset", "synthetic", "--out", str(tmp_path / "no" / "such")]) == 2
    one_line(capsys, "out")


def bomb() -> bytes:
    """The issue's pickle: 60 levels of a list holding itself twice (2^60 leaves once expanded)."""
    leaf = [b"x"]
    for _ in range(60):
        leaf = [leaf, leaf]
    return pickle.dumps({b"data": leaf, b"labels": [1]}, protocol=2)


@pytest.mark.parametrize("raw,text", [
    (bomb(), "refused"),
    (pickle.dumps({b"data": [b"x"] * 3, b"labels": [[1, [2]]] * 2}, protocol=2), "shared reference"),
    (pickle.dumps(json.loads("[" * 200 + "]" * 200), protocol=4), "nesting deeper"),
    (pickle.dumps({b"data": b"\0" * 3072, b"labels": [1], b"extra": 1}, protocol=2), "key 'extra'"),
], ids=["bomb", "shared", "nested", "unknown-key"])
def test_cifar10_refuses_bombs_fast(tmp_path, capsys, raw, text):
    from profiling import datasets, train_exits

    assert len(bomb()) < 600
    d = tmp_path / "cifar"
    d.mkdir()
    (d / "data_batch_1").write_bytes(raw)
    (d / "test_batch").write_bytes(raw)
    t0 = time.perf_counter()
    rc = train_exits.main(["--dataset", "cifar10", "--data", str(d), "--out", str(tmp_path / "o")])
    assert time.perf_counter() - t0 < 1.0
    assert rc == 2
    assert text in one_line(capsys, "data")
    with pytest.raises(Exception, match="refused|not a CIFAR-10"):
        datasets.safe_unpickle(raw) if text != "key 'extra'" else datasets.read_cifar10_py(str(d / "test_batch"))


@pytest.mark.parametrize("name", ["GRLE_JAX_GROUP_PROCS", "GRLE_JAX_GROUP_RUNS", "GRLE_JAX_LEARN_CHUNK"])
def test_bad_group_switches_are_one_line(tmp_path, capsys, monkeypatch, name):
    """The groups' A/B switches (environment variables) with a bad value: one line naming the
    variable and the value, exit 2, before anything is written (train.grle and train.experiments)."""
    for value in ("x", "-1"):
        monkeypatch.setenv(name, value)
        out = tmp_path / f"g{value}"
        assert main(RUN + ["--out", str(out)]) == 2
        assert repr(value) in one_line(capsys, name)
        assert ex.main(["devices", "--quick", "--out", str(out)]) == 2
        one_line(capsys, name)
        assert not out.exists()
