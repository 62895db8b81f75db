"""The main CLI's core contract (issue: core): traces the twin re-checks, results files, and one
clear line with exit status 2 for every kind of bad input, with nothing already written touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import reference_sim as ref
from train.grle import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(argv, capsys):
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.mark.parametrize("policy,scenario,overdue", [("random", "csi", "abort"), ("greedy", "capacity", "keep")])
def test_trace_is_reproduced_by_the_twin(tmp_path, capsys, policy, scenario, overdue):
    trace = tmp_path / "t.jsonl"
    out = tmp_path / "res"
    rc, stdout, err = run_cli(["--policy", policy, "--scenario", scenario, "--devices", "4", "--slots", "60",
                               "--seed", "3", "--overdue", overdue, "--p-link", "0.8", "--p-active", "0.9",
                               "--deadline-ms", "12", "--trace", str(trace), "--out", str(out), "--quiet",
                               "--references", "none"], capsys)
    assert rc == 0, err
    assert "SSP" in stdout
    lines = trace.read_text().splitlines()
    head = json.loads(lines[0])
    assert head["kind"] == "header" and head["policy"] == policy and head["seed"] == 3
    for k in ("slot_ms", "deadline_ms", "rho", "overdue"):
        assert k in head["config"]
    assert len(lines) == 61
    assert ref.check_trace(str(trace)) == []
    for name in ("config.json", "metrics.csv", "summary.json"):
        assert (out / name).is_file()
    summary = json.loads((out / "summary.json").read_text())
    conf = json.loads((out / "config.json").read_text())
    assert "jax" in json.dumps(conf)  # package versions recorded
    # the summary's SSP is the trace's on-time tasks over all tasks
    slots = [json.loads(x) for x in lines[1:]]
    tasks = sum(sum(s["active"]) for s in slots)
    on_time = sum(sum(s["ok"]) for s in slots)
    ssp = summary["ssp"] if "ssp" in summary else summary["final"]["ssp"]["mean"]
    assert ssp == pytest.approx(on_time / tasks)


def test_same_seed_same_trace(tmp_path, capsys):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for p in (a, b):
        assert run_cli(["--policy", "random", "--devices", "3", "--slots", "20", "--seed", "7",
                        "--trace", str(p), "--out", str(tmp_path / f"o{p.stem}"), "--quiet", "--references", "none"],
                       capsys)[0] == 0
    assert a.read_text() == b.read_text()


def _write(path, text):
    path.write_text(text)
    return str(path)


BAD_PROFILES = {
    "not json": "{exits: [1]",
    "wrong shape": json.dumps({"exits": [1, 3], "acc": [0.8], "devices": [{"name": "x", "time_ms": [1.0, 2.0]}]}),
    "nan": '{"exits": [1, 3], "acc": [0.8, NaN], "devices": [{"name": "x", "time_ms": [1.0, 2.0]}]}',
    "negative time": json.dumps({"exits": [1, 3], "acc": [0.8, 0.9], "devices": [{"name": "x", "time_ms": [1.0, -2.0]}]}),
    "accuracy above 1": json.dumps({"exits": [1, 3], "acc": [0.8, 1.9], "devices": [{"name": "x", "time_ms": [1.0, 2.0]}]}),
    "times of wrong length": json.dumps({"exits": [1, 3], "acc": [0.8, 0.9], "devices": [{"name": "x", "time_ms": [1.0]}]}),
    "exit outside 1..17": json.dumps({"exits": [0, 3], "acc": [0.8, 0.9], "devices": [{"name": "x", "time_ms": [1.0, 2.0]}]}),
}


def bad_cases(tmp):
    cases = [
        (["--devices", "0"], "devices"),
        (["--servers", "0"], "servers"),
        (["--devices", "x"], "devices"),
        (["--slots", "0"], "slots"),
        (["--deadline-ms", "0"], "deadline_ms"),
        (["--deadline-ms", "-5"], "deadline_ms"),
        (["--slot-ms", "0"], "slot_ms"),
        (["--scenario", "mars"], "scenario"),
        (["--policy", "psychic"], "policy"),
        (["--overdue", "never"], "overdue"),
        (["--p-link", "1.5"], "p_link"),
        (["--p-active", "-0.1"], "p_active"),
        (["--rho", "-1"], "rho"),
        (["--config", _write(tmp / "range.json", json.dumps({"size_kb": [100, 50]}))], "size_kb"),
        (["--config", _write(tmp / "prob.json", json.dumps({"p_link": 2}))], "p_link"),
        (["--config", _write(tmp / "unknown.json", json.dumps({"devicez": 3}))], "devicez"),
        (["--config", str(tmp / "missing.json")], "config"),
        (["--profile", str(tmp / "missing-profile.json")], "profile"),
        (["--trace", str(tmp / "no" / "such" / "t.jsonl")], "trace"),
        (["--out", str(tmp / "no" / "such" / "dir")], "out"),
    ]
    for i, (what, text) in enumerate(BAD_PROFILES.items()):
        cases.append((["--profile", _write(tmp / f"profile{i}.json", text)], "profile"))
    return cases


def test_every_bad_input_is_one_line_and_exit_2_and_touches_nothing(tmp_path, capsys):
    out = tmp_path / "existing"
    out.mkdir()
    sentinel = out / "metrics.csv"
    sentinel.write_text("precious\n")
    trace = tmp_path / "old.jsonl"
    trace.write_text("old trace\n")
    for argv, field in bad_cases(tmp_path):
        rc, stdout, err = run_cli(argv + ["--slots", argv[1] if argv[0] == "--slots" else "5", "--out", str(out),
                                          "--trace", str(trace), "--quiet"] if argv[0] not in ("--out", "--trace")
                                  else argv + ["--slots", "5", "--quiet"], capsys)
        assert rc == 2, (argv, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {field}"), (argv, err)
        assert "Traceback" not in err
    assert sentinel.read_text() == "precious\n"
    assert trace.read_text() == "old trace\n"


def test_real_process_prints_one_line_no_traceback(tmp_path):
    p = subprocess.run([sys.executable, "-m", "train.grle", "--devices", "0"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip() == "error: devices: must be at least 1, got 0"
    assert "Traceback" not in p.stderr
