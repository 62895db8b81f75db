"""The exit table the simulator reads: candidate exits, their accuracy, their time on each device.

    python -m profiling.build_profile --accuracy runs/exits/accuracy.json --timing results/timing.json
        --out results/profile.json [--exits 1,3,4,7,17 | --count 5] [--batch 1]
        [--devices cpu,gpu0] [--es-map "gpu0:1.0,cpu:2.0"]
    python -m profiling.build_profile --check results/profile.json

``--accuracy`` is the JSON of ``profiling.train_exits`` (exits and acc lists) or the word
``paper``: the paper's accuracies of exits 1, 3, 4, 7 and 17 (docs/model.md section 1).
``--timing`` is the JSON of ``profiling.time_exits``; the time of an exit on a device is the
median of the batch ``--batch`` divided by that batch size (ms per image; batch 1 by default).

Candidate exits (without ``--exits``), the rule ``select_exits`` applies:
1. walk the exits that have an accuracy in increasing order and keep an exit only if its accuracy
   is strictly above that of every shallower exit (each kept exit adds accuracy);
2. exit 17, the main branch, is always kept (appended if a shallower exit was as accurate);
3. while more than ``--count`` (default 5) exits remain, drop the one, other than the shallowest
   kept exit and exit 17, with the smallest gain over the kept exit before it (ties: the deeper
   one), and recompute the gains. Fewer than ``--count`` may remain.
With an accuracy file the rule chooses among the exits that were timed on every device (a note on
stderr says so when the file has more); the paper's accuracies are five given exits, each of which
must be timed. With ``--exits`` the list is used as given (each must have an
accuracy and a time).

``--es-map`` maps edge servers to measured devices: ``DEVICE[:SCALE],...``, one entry per ES in
order, DEVICE a timing device's id (``cpu``, ``gpu0``), name or platform (``gpu`` when only one),
SCALE the factor applied to its times (default 1; 2.0 = an ES half as fast). Without it, ES m uses
device m mod (number of devices). The profile is built and checked by ``grle_jax.profile.Profile``
and written with ``Profile.save``.
"""

from __future__ import annotations

import math
import os
import sys

import jax

from grle_jax import cli
from grle_jax.errors import ConfigError
from grle_jax.profile import DEFAULT_PROFILE, Profile

from . import _cli
from .time_exits import FORMAT as TIMING_FORMAT
from .vgg import MAIN_EXIT, check_exit

DEFAULT_COUNT = 5
SELECTION_RULE = ("keep exits whose accuracy is strictly above every shallower exit's; always keep 17; "
                  "while more than COUNT remain, drop the exit (not the shallowest kept, not 17) with the "
                  "smallest accuracy gain over the kept exit before it, ties to the deeper one")


def paper_accuracy() -> dict[int, float]:
    """docs/model.md section 1: the paper's accuracy of exits 1, 3, 4, 7 and 17 (VGG-16, CIFAR-10)."""
    return dict(zip(DEFAULT_PROFILE.exits, DEFAULT_PROFILE.acc))


def read_accuracy(spec: str) -> tuple[dict[int, float], str]:
    """exit -> accuracy from ``--accuracy`` (a train_exits JSON or 'paper'), and a label of the source."""
    if spec == "paper":
        return paper_accuracy(), "paper (docs/model.md section 1, VGG-16 on CIFAR-10)"
    d = cli.read_json(spec, "accuracy")
    if not isinstance(d, dict) or "exits" not in d or "acc" not in d:
        raise ConfigError("accuracy", f"{spec}: must be a JSON object with exits and acc lists "
                                      "(the accuracy.json of profiling.train_exits)")
    exits, acc = d["exits"], d["acc"]
    if not isinstance(exits, list) or not isinstance(acc, list):
        raise ConfigError("accuracy", f"{spec}: exits and acc must be lists")
    if len(exits) != len(acc):
        raise ConfigError("accuracy.acc", f"{spec}: {len(acc)} accuracies for {len(exits)} exits")
    out = {}
    for i, (k, a) in enumerate(zip(exits, acc)):
        check_exit(k, f"accuracy.exits[{i}]")
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not (math.isfinite(a) and 0 <= a <= 1):
            raise ConfigError(f"accuracy.acc[{i}]", f"must be a number in [0, 1], got {a!r}")
        if k in out:
            raise ConfigError(f"accuracy.exits[{i}]", f"exit {k} listed twice")
        out[k] = float(a)
    if not out:
        raise ConfigError("accuracy", f"{spec}: no exits")
    return out, spec


def select_exits(acc: dict[int, float], count: int = DEFAULT_COUNT) -> list[int]:
    """The candidate exits (see the module docstring for the rule)."""
    _cli.positive_int(count, "count")
    kept, best = [], -math.inf
    for k in sorted(acc):
        if acc[k] > best:
            kept.append(k)
            best = acc[k]
    if MAIN_EXIT in acc and MAIN_EXIT not in kept:
        kept.append(MAIN_EXIT)
    while len(kept) > count:
        protected = {kept[0], MAIN_EXIT} if count >= 2 else {MAIN_EXIT if MAIN_EXIT in kept else kept[-1]}
        gains = [(acc[kept[i]] - acc[kept[i - 1]] if i > 0 else math.inf, -kept[i], i)
                 for i in range(len(kept)) if kept[i] not in protected]
        _, _, drop = min(gains)
        del kept[drop]
    return kept


def read_timing(spec: str) -> dict:
    d = cli.read_json(spec, "timing")
    if not isinstance(d, dict) or not isinstance(d.get("devices"), list):
        raise ConfigError("timing", f"{spec}: must be the JSON of profiling.time_exits (a devices list)")
    if d.get("format") not in (None, TIMING_FORMAT):
        raise ConfigError("timing", f"{spec}: unknown format {d.get('format')!r} (expected {TIMING_FORMAT})")
    if not d["devices"]:
        raise ConfigError("timing.devices", f"{spec}: empty device list")
    for i, dev in enumerate(d["devices"]):
        if not isinstance(dev, dict) or not isinstance(dev.get("results"), list) or "id" not in dev:
            raise ConfigError(f"timing.devices[{i}]", "must be an object with id, name and results")
        for j, res in enumerate(dev["results"]):
            where = f"timing.devices[{i}].results[{j}]"
            if not isinstance(res, dict) or not isinstance(res.get("exits"), list) or \
                    not isinstance(res.get("median_ms"), list):
                raise ConfigError(where, "must hold batch, exits and median_ms")
            if len(res["exits"]) != len(res["median_ms"]):
                raise ConfigError(f"{where}.median_ms", f"{len(res['median_ms'])} times for {len(res['exits'])} exits")
            for k in res["exits"]:
                check_exit(k, f"{where}.exits")
    return d


def _pick_devices(timing: dict, spec: str | None) -> list[dict]:
    devs = timing["devices"]
    if spec is None:
        return devs
    tokens = [t.strip() for t in spec.split(",") if t.strip()]
    if not tokens:
        raise ConfigError("devices", "empty device list")
    out = []
    for tok in tokens:
        d = _resolve_device(devs, tok, "devices")
        if d not in out:
            out.append(d)
    return out


def _resolve_device(devs: list[dict], token: str, field: str) -> dict:
    t = token.lower()
    for key in ("id", "name", "kind"):
        hits = [d for d in devs if str(d.get(key, "")).lower() == t]
        if len(hits) == 1:
            return hits[0]
    hits = [d for d in devs if str(d.get("platform", "")).lower() == t]
    if len(hits) == 1:
        return hits[0]
    have = ", ".join(str(d["id"]) for d in devs)
    if len(hits) > 1:
        raise ConfigError(field, f"{token!r} matches several devices ({have}); name one by id")
    raise ConfigError(field, f"no measured device {token!r} (measured: {have})")


def device_times(dev: dict, exits: list[int], batch: int) -> list[float]:
    """ms per image of each exit on one timing device, from its batch-``batch`` medians."""
    res = next((r for r in dev["results"] if r.get("batch") == batch), None)
    if res is None:
        have = [r.get("batch") for r in dev["results"]]
        raise ConfigError("batch", f"device {dev['id']} was timed at batch {have}, not {batch}")
    table = dict(zip(res["exits"], res["median_ms"]))
    missing = [k for k in exits if k not in table]
    if missing:
        raise ConfigError("timing", f"device {dev['id']} has no time for exit(s) {missing} (timed: {res['exits']}); "
                                    f"rerun profiling.time_exits with --exits including them")
    return [float(table[k]) / batch for k in exits]


def timed_exits(devs: list[dict], batch: int) -> set[int]:
    """Exits with a time at batch ``batch`` on every one of ``devs`` (a device not timed at that
    batch makes ``device_times`` report it)."""
    out = None
    for dev in devs:
        res = next((r for r in dev["results"] if r.get("batch") == batch), None)
        if res is None:
            continue
        out = set(res["exits"]) if out is None else out & set(res["exits"])
    return out or set()


def parse_es_map(spec: str, devs: list[dict]) -> list[dict]:
    entries = [t.strip() for t in spec.split(",")]
    if not any(entries):
        raise ConfigError("es-map", "empty map")
    out = []
    for i, ent in enumerate(entries):
        if not ent:
            raise ConfigError("es-map", f"entry {i + 1} is empty in {spec!r}")
        name, scale = ent, 1.0
        head, sep, tail = ent.rpartition(":")
        if sep:
            try:
                scale = float(tail)
                name = head
            except ValueError:
                pass  # a device name with a colon and no scale
        if not (math.isfinite(scale) and scale > 0):
            raise ConfigError("es-map", f"scale of entry {i + 1} ({ent!r}) must be a positive number")
        out.append({"device": _resolve_device(devs, name, "es-map")["name"], "scale": scale})
    return out


def build(accuracy: str, timing: str, exits: str | None = None, count: int = DEFAULT_COUNT, batch: int = 1,
          devices: str | None = None, es_map: str | None = None) -> Profile:
    acc, acc_src = read_accuracy(accuracy)
    t = read_timing(timing)
    _cli.positive_int(batch, "batch")
    if exits is not None:
        chosen = _cli.parse_exits(exits)
        missing = [k for k in chosen if k not in acc]
        if missing:
            raise ConfigError("exits", f"no accuracy for exit(s) {missing} in {acc_src} (it has {sorted(acc)})")
        rule = "given by --exits"
        devs = _pick_devices(t, devices)
    else:
        devs = _pick_devices(t, devices)
        # an accuracy file: choose among the timed exits; the paper's table is five given exits,
        # each of which must be timed (device_times says which are missing and how to fix it)
        timed = set(acc) if accuracy == "paper" else timed_exits(devs, batch)
        usable = {k: a for k, a in acc.items() if k in timed}
        if not usable:
            raise ConfigError("timing", f"no exit has both an accuracy ({sorted(acc)}) and a time at batch {batch} "
                                        f"(timed: {sorted(timed)}); rerun profiling.time_exits without --exits")
        chosen = select_exits(usable, count)
        rule = SELECTION_RULE.replace("COUNT", str(count))
        if len(usable) < len(acc):
            rule += f", among the timed exits {sorted(usable)}"
            print(f"note: choosing among the exits that were timed, {sorted(usable)}; time all 17 (profiling.time_exits "
                  f"without --exits) to choose among every exit with an accuracy", file=sys.stderr)
    names = [str(d.get("name", d["id"])) for d in devs]
    if len(set(names)) != len(names):
        raise ConfigError("timing.devices", f"device names must differ, got {names}")
    d = {
        "exits": chosen,
        "acc": [acc[k] for k in chosen],
        "devices": [{"name": n, "time_ms": device_times(dv, chosen, batch)} for n, dv in zip(names, devs)],
    }
    if es_map:
        d["es_map"] = parse_es_map(es_map, devs)
    settings = t.get("settings", {})
    d["meta"] = {
        "source": "profiling.build_profile",
        "accuracy": acc_src,
        "timing": timing,
        "selection": rule,
        "time_statistic": f"median ms per image at batch {batch}",
        "width": settings.get("width"),
        "timing_jax_version": t.get("jax_version"),
        "jax_version": jax.__version__,
        "device_kinds": {str(dv.get("name", dv["id"])): dv.get("kind") for dv in devs},
    }
    return Profile.from_dict(d, where="profile")


def format_profile(p: Profile) -> str:
    head = "  exit   acc  " + "".join(f"{n[:18]:>20}" for n in p.device_names)
    lines = [head]
    for e, (k, a) in enumerate(zip(p.exits, p.acc)):
        lines.append(f"  {k:4d} {a:6.3f}" + "".join(f"{t[e]:20.4f}" for t in p.time_ms))
    if p.es_map:
        lines.append("  ES map: " + ", ".join(f"ES {m} -> {p.device_names[d]} x {s:g}"
                                              for m, (d, s) in enumerate(p.es_map)))
    return "\n".join(lines)


def _main(argv) -> None:
    p = _cli.Parser(prog="python -m profiling.build_profile", description=__doc__.split("\n\n")[0])
    p.add_argument("--accuracy", help="accuracy.json of profiling.train_exits, or 'paper'")
    p.add_argument("--timing", help="timing JSON of profiling.time_exits")
    p.add_argument("--out", default="results/profile.json", help="profile JSON to write")
    p.add_argument("--exits", default=None, help="candidate exits, e.g. 1,3,4,7,17 (default: the selection rule)")
    p.add_argument("--count", type=int, default=DEFAULT_COUNT, help="how many exits the rule keeps at most")
    p.add_argument("--batch", type=int, default=1, help="which timed batch size to use (ms per image)")
    p.add_argument("--devices", default=None, help="timing devices to include, e.g. gpu0,cpu (default all)")
    p.add_argument("--es-map", default=None, help="ES -> device[:scale], e.g. 'gpu0:1.0,cpu:2.0'")
    p.add_argument("--check", default=None, metavar="PROFILE", help="only load and check a profile JSON")
    a = p.parse_args(argv)
    if a.check:
        prof = Profile.load(a.check)
        print(f"{a.check}: valid profile, {prof.n_exits} exits, {len(prof.device_names)} device(s)")
        print(format_profile(prof))
        return
    if not a.accuracy:
        raise ConfigError("accuracy", "required: the accuracy.json of profiling.train_exits, or 'paper'")
    if not a.timing:
        raise ConfigError("timing", "required: the JSON written by profiling.time_exits")
    prof = build(a.accuracy, a.timing, a.exits, a.count, a.batch, a.devices, a.es_map)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        prof.save(a.out)
    except OSError as err:
        raise ConfigError("out", f"cannot write {a.out} ({err.strerror})") from None
    print(format_profile(prof))
    print(f"wrote {a.out}")


def main(argv=None) -> int:
    return _cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
