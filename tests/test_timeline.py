"""train.timeline (issue 5): a trace from the main CLI drawn as a PNG with the expected rows and axis,
the segments of a hand-made trace under both overdue rules, and one-line errors (exit 2)."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import pytest

from train import grle
from train import timeline as tl


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    d = tmp_path_factory.mktemp("tl")
    path = d / "greedy.jsonl"
    rc = grle.main(["--policy", "greedy", "--devices", "4", "--slots", "20", "--trace", str(path),
                    "--out", str(d / "run"), "--quiet", "--references", "none"])
    assert rc == 0
    return path


def test_png_from_a_cli_trace(trace, tmp_path, capsys):
    out = tmp_path / "t.png"
    assert tl.main([str(trace), "--slots", "2:7", "--out", str(out)]) == 0
    assert "slots 2 to 6" in capsys.readouterr().out
    img = mpimg.imread(out)
    assert img.ndim == 3 and img.shape[1] > 800


def test_axes_rows_and_deadlines(trace):
    head, slots = tl.load(str(trace))
    fig = tl.draw(head, slots, 2, 7)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert sorted(labels) == sorted(["ES 0", "ES 1", "device 0", "device 1", "device 2", "device 3"])
    assert ax.get_xlabel() == "time since the run began (ms)"
    seg = tl.segments(head, [s for s in slots if 2 <= s["t"] < 7])
    assert seg["deadlines"] == [t * 20.0 + 30.0 for t in range(2, 7)]
    assert len(seg["tx"]) == 4 * 5  # every device sends one task per slot (base scenario)
    lo, hi = ax.get_xlim()
    assert lo <= 40.0 and hi >= 6 * 20.0 + 30.0
    for c in seg["compute"]:
        assert c["end"] > c["start"] >= 40.0


def _hand_trace(tmp_path, overdue):
    """One slot, one ES, two devices: device 1's task reaches the ES head after the deadline."""
    head = {"kind": "header", "config": {"slot_ms": 20.0, "deadline_ms": 10.0, "rho": 0.0, "overdue": overdue},
            "exits": [1, 17], "acc": [0.8, 0.9], "c": [[5.0, 9.0]], "policy": "hand", "seed": 0}
    slot = {"kind": "slot", "t": 0, "g": 0.0, "s": [50.0, 50.0], "r": [[100.0], [100.0]], "m": [0, 0], "e": [1, 0],
            "A": [4.0, 4.0], "S": [4.0, 13.0], "F": [13.0, 18.0], "latency": [13.0, 18.0], "ok": [False, False],
            "acc": [0.0, 0.0]}
    path = tmp_path / f"{overdue}.jsonl"
    path.write_text(json.dumps(head) + "\n" + json.dumps(slot) + "\n")
    return path


def test_segments_follow_the_overdue_rule(tmp_path):
    head, slots = tl.load(str(_hand_trace(tmp_path, "abort")))
    seg = tl.segments(head, slots)
    assert [(c["start"], c["end"]) for c in seg["compute"]] == [(4.0, 10.0)]  # cut at the deadline
    assert [(w["start"], w["end"]) for w in seg["wait"]] == [(4.0, 10.0)]  # device 1 waits, then dropped
    assert [d["n"] for d in seg["dropped"]] == [1] and len(seg["late"]) == 2
    assert [(t["start"], t["end"]) for t in seg["tx"]] == [(0.0, 4.0), (0.0, 4.0)]
    head, slots = tl.load(str(_hand_trace(tmp_path, "keep")))
    seg = tl.segments(head, slots)
    assert [(c["start"], c["end"]) for c in seg["compute"]] == [(4.0, 13.0), (13.0, 18.0)]
    assert seg["dropped"] == [] and [(w["start"], w["end"]) for w in seg["wait"]] == [(4.0, 13.0)]
    fig = tl.draw(head, slots, 0, 1)
    assert fig.axes[0].get_yticklabels()


@pytest.mark.parametrize("slots_arg", ["5:3", "7", "a:b", "30:40", "-1:4", "3:3"])
def test_bad_slots_range(trace, tmp_path, capsys, slots_arg):
    assert tl.main([str(trace), f"--slots={slots_arg}", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: slots: "), err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("make,field", [
    (lambda p: str(p / "missing.jsonl"), "trace"),
    (lambda p: (p / "bad.jsonl").write_text("{not json\n") and str(p / "bad.jsonl"), "trace"),
    (lambda p: (p / "nohead.jsonl").write_text('{"kind": "slot"}\n') and str(p / "nohead.jsonl"), "trace"),
])
def test_bad_trace(tmp_path, capsys, make, field):
    assert tl.main([make(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {field}: "), err


def test_bad_out_folder(trace, capsys):
    assert tl.main([str(trace), "--out", "/no/such/folder/x.png"]) == 2
    assert capsys.readouterr().err.startswith("error: out: ")
