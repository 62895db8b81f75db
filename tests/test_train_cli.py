"""``python -m train.grle`` for the learning policies: the results folder, seeds, sweeps,
checkpoints and ``--resume`` (bit-identical), and one line + exit 2 for every bad value of every
flag this issue adds.

The runs use the same small network and settings as tests/test_train.py, so in one pytest process
they reuse its compiled programs."""

import csv
import json
import os


from train.grle import default_out, main
from grle_jax.config import Config

# the settings of tests/test_train.py's AGENT, as flags
SMALL = ["--policy", "grle", "--variant", "paper", "--devices", "3", "--k", "4", "--adaptive-k", "--k-delta", "8", "--train-every", "5",
         "--batch", "8", "--memory", "32", "--seeds", "4", "--chunk", "50"]


def run_cli(argv, capsys):
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_outputs_checkpoints_and_resume(tmp_path, capsys, monkeypatch):
    full, cut = tmp_path / "full", tmp_path / "cut"
    monkeypatch.chdir(tmp_path)  # the cut run uses a RELATIVE folder, as users type it (orbax needs absolute)
    rc, out, err = run_cli(SMALL + ["--slots", "100", "--checkpoint-every", "50", "--out", str(full)], capsys)
    assert rc == 0, err
    assert "slots/s" in err and "eta" in err  # the progress bar
    assert "SSP" in out and "+-" in out  # mean and interval over the seeds
    for name in ("config.json", "metrics.csv", "summary.json", "convergence.png"):
        assert (full / name).is_file(), name
    rows = _csv(full / "metrics.csv")
    assert len(rows) == 4 * 100
    for col in ("run", "seed", "slot", "reward", "mean_reward_ma50", "ssp_ma50", "avg_accuracy_ma50",
                "throughput_per_s_ma50", "loss", "k", "k_pos"):
        assert col in rows[0], col
    summary = json.loads((full / "summary.json").read_text())
    assert summary["runs"] == 4 and summary["seeds"] == 4 and len(summary["per_run"]) == 4
    assert summary["groups"][0]["metrics"]["ssp"]["n"] == 4
    assert "ssp_ci95" in summary and 0 <= summary["ssp"] <= 1
    conf = json.loads((full / "config.json").read_text())
    assert conf["agent"]["adaptive_k"] is True and conf["agent"]["batch"] == 8 and conf["slots"] == 100

    # killed after 50 slots (a checkpoint exists), then resumed: the same files, bit for bit
    rc, out, err = run_cli(SMALL + ["--slots", "100", "--checkpoint-every", "50", "--stop-after", "50",
                                    "--out", "cut", "--quiet"], capsys)
    assert rc == 0, err
    assert not (cut / "metrics.csv").exists()
    assert os.listdir(cut / "checkpoints") == ["slot_50"]
    rc, out, err = run_cli(["--resume", "cut", "--quiet"], capsys)
    assert rc == 0, err
    assert (cut / "metrics.csv").read_text() == (full / "metrics.csv").read_text()
    a = json.loads((cut / "summary.json").read_text())
    b = json.loads((full / "summary.json").read_text())
    for k in ("ssp", "avg_accuracy", "mean_reward", "final_loss", "per_run"):
        assert a[k] == b[k], k


def test_sweep_runs_side_by_side(tmp_path, capsys):
    sweep = tmp_path / "grid.json"
    sweep.write_text(json.dumps({"lr": [1e-3, 1e-2], "deadline_ms": [20.0, 30.0]}))
    out = tmp_path / "sw"
    rc, stdout, err = run_cli(["--policy", "droo", "--devices", "3", "--slots", "30", "--chunk", "30",
                               "--sweep", str(sweep), "--out", str(out), "--quiet"], capsys)
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"] == 4 and len(summary["groups"]) == 4
    points = [g["point"] for g in summary["groups"]]
    assert points == [{"lr": 1e-3, "deadline_ms": 20.0}, {"lr": 1e-3, "deadline_ms": 30.0},
                      {"lr": 1e-2, "deadline_ms": 20.0}, {"lr": 1e-2, "deadline_ms": 30.0}]
    rows = _csv(out / "metrics.csv")
    assert {r["lr"] for r in rows} == {"0.001", "0.01"} and len(rows) == 4 * 30
    # a shorter deadline cannot help: same draws (same seed), fewer or equal tasks on time overall
    by = {(g["point"]["lr"], g["point"]["deadline_ms"]): g["metrics"]["ssp"]["mean"] for g in summary["groups"]}
    assert by[(1e-3, 20.0)] <= by[(1e-3, 30.0)] + 0.2


def test_default_out():
    assert default_out("grle", Config(), 0, 1, None) == os.path.join("runs", "grle-base-seed0")
    assert default_out("droo", Config.for_scenario("csi"), 3, 8, "g/lr.json") == os.path.join(
        "runs", "droo-csi-sweep-lr-seed3x8")


def _write(path, text):
    path.write_text(text)
    return str(path)


def bad_cases(tmp):
    results = tmp / "results"
    results.mkdir()
    (results / "config.json").write_text("{}")
    no_ckpt = tmp / "no_ckpt"
    no_ckpt.mkdir()
    (no_ckpt / "config.json").write_text(json.dumps({"config": Config().to_dict(), "agent": {}, "profile": {}}))
    return [
        (["--lr", "0"], "lr"), (["--lr", "-1e-3"], "lr"), (["--lr", "nan"], "lr"), (["--lr", "x"], "lr"),
        (["--k", "0"], "k"), (["--k", "2.5"], "k"), (["--k", "128"], "k"),
        (["--policy", "droo", "--k", "16"], "k"),
        (["--k-delta", "0"], "k_delta"), (["--batch", "0"], "batch"), (["--batch", "x"], "batch"),
        (["--train-every", "0"], "train_every"), (["--memory", "0"], "memory"),
        (["--critic-rounds", "0"], "critic_rounds"), (["--policy", "greedy", "--critic-rounds", "2"], "critic_rounds"),
        (["--seeds", "0"], "seeds"), (["--seeds", "two"], "seeds"), (["--compile", "never"], "compile"),
        (["--checkpoint-every", "0"], "checkpoint_every"),
        (["--stop-after", "10"], "stop_after"), (["--checkpoint-every", "5", "--stop-after", "0"], "stop_after"),
        (["--policy", "greedy", "--lr", "0.01"], "lr"), (["--policy", "random", "--adaptive-k"], "adaptive_k"),
        (["--seeds", "2", "--trace", str(tmp / "t.jsonl")], "trace"),
        (["--resume", str(tmp / "missing")], "resume"), (["--resume", str(results)], "resume"),
        (["--resume", str(no_ckpt)], "resume"), (["--resume", str(results), "--lr", "0.1"], "resume"),
        (["--sweep", str(tmp / "missing.json")], "sweep"),
        (["--sweep", _write(tmp / "bad.json", "{lr: [1")], "sweep"),
        (["--sweep", _write(tmp / "list.json", "[1, 2]")], "sweep"),
        (["--sweep", _write(tmp / "unknown.json", json.dumps({"lrr": [1]}))], "sweep.lrr"),
        (["--sweep", _write(tmp / "static.json", json.dumps({"devices": [3, 4]}))], "sweep.devices"),
        (["--sweep", _write(tmp / "empty.json", json.dumps({"lr": []}))], "sweep.lr"),
        (["--sweep", _write(tmp / "badval.json", json.dumps({"lr": [0.1, -1]}))], "sweep.lr"),
        (["--sweep", _write(tmp / "badk.json", json.dumps({"k": [4, 500]}))], "sweep.k"),
        (["--sweep", _write(tmp / "baddl.json", json.dumps({"deadline_ms": [0]}))], "sweep.deadline_ms"),
        (["--sweep", _write(tmp / "badsc.json", json.dumps({"scenario": ["mars"]}))], "sweep.scenario"),
        (["--policy", "greedy", "--sweep", _write(tmp / "fixed.json", json.dumps({"lr": [0.1]}))], "sweep.lr"),
        (["--coordinator", "127.0.0.1:1234"], "num_processes"),
        (["--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"], "coordinator"),
        (["--coordinator", "h:1", "--num-processes", "0", "--process-id", "0"], "num_processes"),
        (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"], "process_id"),
    ]


def test_bad_values_one_line_exit_2(tmp_path, capsys):
    out = tmp_path / "existing"
    out.mkdir()
    sentinel = out / "metrics.csv"
    sentinel.write_text("precious\n")
    for argv, field in bad_cases(tmp_path):
        rc, stdout, err = run_cli(argv + ["--slots", "5", "--quiet"] + ([] if "--resume" in argv else ["--out", str(out)]),
                                  capsys)
        assert rc == 2, (argv, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {field}:"), (argv, err)
    assert sentinel.read_text() == "precious\n"
    assert sorted(os.listdir(out)) == ["metrics.csv"]


def test_policy_quality_bad_values_one_line_exit_2(tmp_path, capsys):
    from benchmarks import policy_quality

    out = tmp_path / "pq"
    for argv, field in ((["--critic-rounds", "0"], "critic_rounds"), (["--slots", "0"], "slots"),
                        (["--seeds", "0"], "seeds"), (["--policies", "foo"], "policies"),
                        (["--scenarios", "mars"], "scenarios"), (["--lr", "-1"], "lr"), (["--k", "500"], "k")):
        assert policy_quality.main(argv + ["--out", str(out)]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {field}:"), (argv, err)
    assert not out.exists()  # nothing written
