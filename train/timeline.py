"""Draw a trace as a timeline: ``python -m train.timeline TRACE.jsonl --slots A:B --out PNG``.

Slots ``A`` to ``B - 1`` (Python's half-open range of the slot index ``t``) of a JSON Lines trace
(docs/model.md section 7), on one time axis in ms since the run began:
- per ES a Gantt row: each task waits in the queue from its arrival ``A`` to the head of the queue
  ``S`` (thin hatched bar) and computes from ``S`` to ``F`` (full bar, coloured by its exit);
  under ``overdue = abort`` computing is cut at the slot's deadline and a task that reaches the
  head at or after it is dropped (drawn as waiting only); late tasks (``ok`` false) have a red
  outline and a red cross at their finish;
- per device its transmissions, from ``A - s * 8 / r`` to ``A`` (cut at the deadline under
  ``abort``), coloured by the destination ES;
- a dotted line at each slot's start ``g`` and a dashed red line at its deadline ``g + D``.

Bad input prints one line ``error: <field>: <why>`` and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from grle_jax import cli
from grle_jax.errors import ConfigError

EXIT_COLOURS = ("#fde725", "#5ec962", "#21918c", "#3b528b", "#440154", "#f89540", "#cc4778")
ES_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink")


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser(prog="python -m train.timeline", description=__doc__.split("\n\n")[0],
                   positional={"TRACE": "trace"})
    p.add_argument("trace", metavar="TRACE.jsonl", help="a trace written by python -m train.grle --trace")
    p.add_argument("--slots", default=None, metavar="A:B", help="slots A..B-1 (default: the first 10)")
    p.add_argument("--out", default=None, metavar="PNG", help="the picture (default: TRACE-timeline.png)")
    return p


def load(path: str) -> tuple[dict, list[dict]]:
    if not os.path.isfile(path):
        raise ConfigError("trace", f"file not found: {path}")
    try:
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError("trace", f"{path} is not JSON Lines ({err})") from None
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            from .rundir import json_kind

            raise ConfigError("trace", f"{path}: non-empty line {i + 1} is a JSON {json_kind(r)}, not an object")
    if not rows or rows[0].get("kind") != "header":
        raise ConfigError("trace", f"{path} has no header line (docs/model.md section 7)")
    head, slots = rows[0], [r for r in rows[1:] if r.get("kind") == "slot"]
    for k in ("config", "acc", "c"):
        if k not in head:
            raise ConfigError("trace", f"header has no {k!r}")
    if not isinstance(head["config"], dict) or not isinstance(head["c"], list) or not isinstance(head["acc"], list):
        raise ConfigError("trace", "header's config must be an object, its acc and c lists")
    if not slots:
        raise ConfigError("trace", f"{path} has no slot lines")
    for s in slots:
        t = s.get("t")
        if not isinstance(t, int) or isinstance(t, bool) or t < 0:
            raise ConfigError("trace", f"{path}: a slot line has t = {t!r}, not a slot index (an integer >= 0)")
    return head, slots


def parse_slots(text: str | None, available: list[int]) -> tuple[int, int]:
    """``A:B`` -> (A, B), checked against the slot indices the trace holds."""
    first, last = min(available), max(available)
    if text is None:
        return first, min(first + 10, last + 1)
    a_s, sep, b_s = text.partition(":")
    if not sep:
        raise ConfigError("slots", f"must be A:B (slot indices, B excluded), got {text!r}")
    try:
        a = int(a_s) if a_s.strip() else first
        b = int(b_s) if b_s.strip() else last + 1
    except ValueError:
        raise ConfigError("slots", f"A and B must be integers, got {text!r}") from None
    if a < 0 or b < 0:
        raise ConfigError("slots", f"must not be negative, got {text!r}")
    if b <= a:
        raise ConfigError("slots", f"empty range {a}:{b} (B must exceed A)")
    if a > last or b - 1 < first:
        raise ConfigError("slots", f"range {a}:{b} outside the trace's slots {first}:{last + 1}")
    return max(a, first), min(b, last + 1)


def segments(head: dict, slots: list[dict]) -> dict:
    """Plain lists of what to draw (also what the tests check): per ES its waiting and computing
    segments, per device its transmissions, and each slot's start and deadline."""
    cfg = head["config"]
    D = float(cfg["deadline_ms"])
    abort = cfg.get("overdue", "abort") == "abort"
    M = len(head["c"])
    N = len(slots[0]["s"])
    out = {"M": M, "N": N, "wait": [], "compute": [], "tx": [], "late": [], "dropped": [], "starts": [],
           "deadlines": []}
    for sl in slots:
        g, dl = float(sl["g"]), float(sl["g"]) + D
        out["starts"].append(g)
        out["deadlines"].append(dl)
        for n in range(N):
            m, e = sl["m"][n], sl["e"][n]
            if m is None or m < 0 or sl["A"][n] is None:
                continue
            A, S, F = float(sl["A"][n]), float(sl["S"][n]), float(sl["F"][n])
            ok = bool(sl["ok"][n])
            tx = float(sl["s"][n]) * 8.0 / float(sl["r"][n][m])
            t_start, t_end = A - tx, A
            if abort:
                t_end = min(t_end, dl)
            if t_end > t_start:
                out["tx"].append({"n": n, "m": m, "t": sl["t"], "start": t_start, "end": t_end})
            dropped = abort and S >= dl
            w_end = min(S, dl) if abort else S
            if w_end > A:
                out["wait"].append({"m": m, "n": n, "t": sl["t"], "start": A, "end": w_end})
            if dropped:
                out["dropped"].append({"m": m, "n": n, "t": sl["t"], "at": dl})
            else:
                c_end = min(F, dl) if abort else F
                out["compute"].append({"m": m, "n": n, "e": e, "t": sl["t"], "start": S, "end": c_end,
                                       "late": not ok})
            if not ok:
                out["late"].append({"m": m, "n": n, "t": sl["t"], "at": min(F, dl) if abort else F})
    return out


def draw(head: dict, slots: list[dict], a: int, b: int):
    """The figure of slots a..b-1 (a matplotlib Figure with one Axes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.lines import Line2D

    sel = [s for s in slots if a <= s["t"] < b]
    seg = segments(head, sel)
    M, N = seg["M"], seg["N"]
    rows = M + N  # ES rows on top, then devices
    ypos = {("es", m): rows - 1 - m for m in range(M)}
    ypos.update({("dev", n): N - 1 - n for n in range(N)})
    fig, ax = plt.subplots(figsize=(12, 1.2 + 0.42 * rows))
    h = 0.7
    for w in seg["wait"]:
        y = ypos[("es", w["m"])]
        ax.barh(y - h / 4, w["end"] - w["start"], left=w["start"], height=h / 4, color="lightgray",
                edgecolor="gray", hatch="///", lw=0.4)
    for c in seg["compute"]:
        y = ypos[("es", c["m"])]
        ax.barh(y + h / 8, c["end"] - c["start"], left=c["start"], height=h * 0.6,
                color=EXIT_COLOURS[c["e"] % len(EXIT_COLOURS)],
                edgecolor="red" if c["late"] else "black", lw=1.2 if c["late"] else 0.3)
    for t in seg["tx"]:
        y = ypos[("dev", t["n"])]
        ax.barh(y, t["end"] - t["start"], left=t["start"], height=h * 0.55,
                color=ES_COLOURS[t["m"] % len(ES_COLOURS)], edgecolor="black", lw=0.3, alpha=0.85)
    for d in seg["dropped"]:
        ax.plot([d["at"]], [ypos[("es", d["m"])] - h / 4], marker="v", color="red", ms=5, ls="none")
    for lt in seg["late"]:
        ax.plot([lt["at"]], [ypos[("es", lt["m"])] + h / 8], marker="x", color="red", ms=6, mew=1.5, ls="none")
    for g in seg["starts"]:
        ax.axvline(g, color="gray", ls=":", lw=0.8)
    for dl in seg["deadlines"]:
        ax.axvline(dl, color="red", ls="--", lw=0.8, alpha=0.7)
    ax.axhline(N - 0.5, color="black", lw=0.8)
    ends = [x["end"] for x in seg["compute"] + seg["tx"] + seg["wait"]] + seg["deadlines"]
    span = max(ends) - min(seg["starts"])
    ax.set_xlim(min(seg["starts"]) - 0.01 * span, max(ends) + 0.01 * span)
    labels = [""] * rows
    for m in range(M):
        labels[ypos[("es", m)]] = f"ES {m}"
    for n in range(N):
        labels[ypos[("dev", n)]] = f"device {n}"
    ax.set_yticks(range(rows))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_ylim(-0.6, rows - 0.4)
    ax.set_xlabel("time since the run began (ms)")
    cfg = head["config"]
    ax.set_title(f"{head.get('policy', '?')} (seed {head.get('seed', '?')}), scenario {cfg.get('scenario', '?')}, "
                 f"N = {N}, M = {M}, T = {cfg['slot_ms']:g} ms, D = {cfg['deadline_ms']:g} ms, "
                 f"overdue = {cfg.get('overdue', 'abort')}; slots {a} to {b - 1}", fontsize=9)
    exits = head.get("exits") or list(range(1, len(head["acc"]) + 1))
    legend = [Patch(color=EXIT_COLOURS[i % len(EXIT_COLOURS)], label=f"computing, exit {x} (acc {acc:.3f})")
              for i, (x, acc) in enumerate(zip(exits, head["acc"]))]
    legend.append(Patch(facecolor="lightgray", edgecolor="gray", hatch="///", label="waiting in the ES queue"))
    legend += [Patch(color=ES_COLOURS[m % len(ES_COLOURS)], label=f"transmitting to ES {m}") for m in range(M)]
    legend += [Line2D([], [], color="red", marker="x", ls="none", label="late task (finish)"),
               Line2D([], [], color="red", marker="v", ls="none", label="dropped at the deadline"),
               Line2D([], [], color="gray", ls=":", label="slot start g"),
               Line2D([], [], color="red", ls="--", label="deadline g + D")]
    ax.legend(handles=legend, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(axis="x", alpha=0.25)
    fig.tight_layout()
    return fig


FORMATS = (".png", ".pdf", ".svg")


def check_out(out: str, trace: str) -> None:
    """The picture's path (issue 15): a picture format, not the trace, a writable folder."""
    from .rundir import probe_writable

    if not out.strip():
        raise ConfigError("out", f"must be a path, got {out!r}")
    if os.path.splitext(out)[1].lower() not in FORMATS:
        raise ConfigError("out", f"must end in {', '.join(FORMATS)} (the picture's format), got {out!r}")
    if os.path.abspath(out) == os.path.abspath(trace):
        raise ConfigError("out", "is the trace itself")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise ConfigError("out", f"folder does not exist: {parent}")
    if os.path.isdir(out):
        raise ConfigError("out", f"is a folder: {out}")
    probe_writable("out", parent)


def checked_draw(head: dict, slots: list[dict], a: int, b: int):
    """``draw``, with a malformed slot line (a missing or mistyped field) as one ConfigError."""
    try:
        return draw(head, slots, a, b)
    except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError) as err:
        raise ConfigError("trace", f"malformed slot line among slots {a}:{b} ({type(err).__name__}: {err})") from None


def main(argv=None) -> int:
    box = {}

    def prepare():
        args = build_parser().parse_args(argv)
        head, slots = load(args.trace)
        a, b = parse_slots(args.slots, [s["t"] for s in slots])
        out = args.out if args.out is not None else os.path.splitext(args.trace)[0] + "-timeline.png"
        check_out(out, args.trace)
        box.update(fig=checked_draw(head, slots, a, b), a=a, b=b, out=out)

    if cli.run(prepare):
        return 2
    fig, a, b, out = box["fig"], box["a"], box["b"], box["out"]
    import matplotlib.pyplot as plt

    from .outputs import save_figure

    save_figure(fig, out, dpi=90)
    plt.close(fig)
    print(f"slots {a} to {b - 1} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
