"""Results folders that know what they hold (issue 15): nothing lost, nothing mixed.

- ``check_out_dir`` / ``check_out_file``: every output path is checked before any work starts;
  the folder must be creatable and writable (a probe file is created and removed), a trace's
  folder must exist and be writable; a folder that already holds a run, or a trace path that
  exists, is refused unless ``--overwrite`` (or ``--resume``) is given.
- ``clear_run``: what ``--overwrite`` deletes (the previous run's result files and checkpoints),
  after every check has passed and before the first slot, so a folder never mixes two runs.
- ``fingerprint``: everything that determines the numbers (config, agent settings, profile,
  policy, seeds, slots, sweep, normalise, package versions, device). ``train.grle`` writes it into
  config.json before the first slot and into every checkpoint's meta.json; ``check_fingerprints``
  makes ``--resume`` refuse, naming the first differing field, anything that does not match.
- ``check_restored``: the shapes of a restored checkpoint against what the run expects.
- ``first_nonfinite``: the first slot whose loss or reward is NaN or infinite (the run stops there
  and keeps what came before).
- ``clean_stale_tmp``: temporary checkpoint folders left by a killed write.

Every refusal is a ``ConfigError(field, why)``: one line ``error: <field>: <why>``, exit 2.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from grle_jax.errors import ConfigError

# what one train.grle run writes into its folder
RUN_FILES = ("config.json", "metrics.csv", "summary.json", "convergence.png")
RUN_DIRS = ("checkpoints",)
# Plan.to_json() keys that determine the numbers (chunk, window and checkpoint_every do not)
FINGERPRINT_KEYS = ("policy", "config", "agent", "profile", "seed", "seeds", "slots", "sweep", "normalise")


def json_kind(x) -> str:
    """JSON's name for the type of a parsed value: object, array, string, number, boolean, null."""
    if isinstance(x, dict):
        return "object"
    if isinstance(x, list):
        return "array"
    if isinstance(x, str):
        return "string"
    if isinstance(x, bool):
        return "boolean"
    if x is None:
        return "null"
    return "number"


# --- output paths ------------------------------------------------------------------------------------
def _not_empty(field: str, path) -> None:
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(field, f"must be a path, got {path!r}")


def probe_writable(field: str, folder: str) -> None:
    """Create and remove a probe file in ``folder``; ``ConfigError(field, ...)`` if that fails."""
    probe = os.path.join(folder, f".probe-{os.getpid()}")
    try:
        with open(probe, "w") as f:
            f.write("probe\n")
        os.remove(probe)
    except OSError as err:
        raise ConfigError(field, f"cannot write in {folder} ({err.strerror or err})") from None


def holds_run(path: str, names=RUN_FILES, dirs=RUN_DIRS) -> str | None:
    """The first of a run's files or folders that ``path`` holds, or None."""
    if not os.path.isdir(path):
        return None
    for n in names:
        if os.path.isfile(os.path.join(path, n)):
            return n
    for n in dirs:
        d = os.path.join(path, n)
        if os.path.isdir(d) and os.listdir(d):
            return n + "/"
    return None


def check_out_dir(field: str, path: str, overwrite: bool = False, holds=holds_run) -> None:
    """The results folder: not empty as a path, its parent exists, it is (or can be created as) a
    writable folder, and it holds no earlier run unless ``overwrite``. Leaves nothing behind."""
    _not_empty(field, path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(field, f"exists and is not a folder: {path}")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ConfigError(field, f"folder does not exist: {parent}")
    if os.path.isdir(path):
        found = holds(path)
        if found and not overwrite:
            raise ConfigError(field, f"{path} already holds a run ({found}); pass --overwrite to replace it "
                                     "(or --resume to continue it)")
        probe_writable(field, path)
        return
    try:
        os.mkdir(path)
    except OSError as err:
        raise ConfigError(field, f"cannot create folder {path} ({err.strerror or err})") from None
    try:
        probe_writable(field, path)
    finally:
        os.rmdir(path)


def check_out_file(field: str, path: str | None, overwrite: bool = False, out_dir: str | None = None) -> None:
    """A file to write (a trace): not empty, not a folder, its folder exists and is writable, and it
    does not exist yet unless ``overwrite``; never one of the results files of ``out_dir``."""
    if path is None:
        return
    _not_empty(field, path)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ConfigError(field, f"folder does not exist: {parent}")
    if os.path.isdir(path):
        raise ConfigError(field, f"is a folder: {path}")
    if out_dir is not None and os.path.abspath(path) in {os.path.abspath(os.path.join(out_dir, n)) for n in RUN_FILES}:
        raise ConfigError(field, f"{path} is one of the results files of --out {out_dir}")
    if os.path.exists(path) and not overwrite:
        raise ConfigError(field, f"{path} exists; pass --overwrite to replace it")
    probe_writable(field, parent)


def clear_run(path: str) -> list[str]:
    """``--overwrite``: delete the earlier run's results files and checkpoints in ``path`` (called
    after every check, before the first slot). Returns what was deleted."""
    gone = []
    for n in RUN_FILES:
        p = os.path.join(path, n)
        if os.path.isfile(p):
            os.remove(p)
            gone.append(n)
    for n in RUN_DIRS:
        p = os.path.join(path, n)
        if os.path.isdir(p):
            shutil.rmtree(p)
            gone.append(n + "/")
    return gone


def clean_stale_tmp(ckdir: str) -> list[str]:
    """Remove temporary checkpoint folders (``.tmp-slot_*``, ``slot_*.old-*``) left by a killed
    write; the complete checkpoints are untouched (an ``.old`` copy whose checkpoint is missing is
    renamed back: it is the only complete copy)."""
    gone = []
    if not os.path.isdir(ckdir):
        return gone
    for name in sorted(os.listdir(ckdir)):
        path = os.path.join(ckdir, name)
        base = name.split(".old-")[0]
        if ".old-" in name and not name.startswith(".") and not os.path.exists(os.path.join(ckdir, base)):
            os.rename(path, os.path.join(ckdir, base))  # killed between the two renames of a re-save:
            continue  # the old copy is the only complete one
        if name.startswith(".tmp-") or ".old-" in name:
            shutil.rmtree(path, ignore_errors=True)
            gone.append(name)
    return gone


# --- the fingerprint -----------------------------------------------------------------------------------
def fingerprint(plan_json: dict, versions: dict, device: str) -> dict:
    """Everything that determines a run's numbers, as plain JSON."""
    fp = {k: plan_json.get(k) for k in FINGERPRINT_KEYS}
    fp["versions"] = dict(versions)
    fp["device"] = device
    return json.loads(json.dumps(fp))  # tuples -> lists, as it reads back from a file


def _flat(d, prefix: str = "") -> dict:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: d}


def first_difference(a: dict, b: dict, ignore: tuple = ()) -> tuple[str, object, object] | None:
    """(dotted field, value in a, value in b) of the first field where two fingerprints differ."""
    fa, fb = _flat(a), _flat(b)
    for k in list(fa) + [k for k in fb if k not in fa]:
        if k.split(".")[0] in ignore:
            continue
        if fa.get(k, "<missing>") != fb.get(k, "<missing>"):
            return k, fa.get(k, "<missing>"), fb.get(k, "<missing>")
    return None


def check_fingerprints(folder: str, stored: dict | None, current: dict, checkpoints: list[tuple[str, dict]],
                       slots_given: bool) -> None:
    """``--resume``: config.json's stored fingerprint must equal the one computed now from its
    settings and this installation (``current``), and every checkpoint's must equal config.json's
    (slots excepted: ``--resume --slots`` extends a run, and the slot keys do not depend on it)."""
    cfg = os.path.join(folder, "config.json")
    if not isinstance(stored, dict):
        raise ConfigError("resume", f"{cfg} has no fingerprint (written by an older version): cannot tell whether its "
                                    "checkpoints belong to it; start the run again")
    d = first_difference(stored, current, ignore=("slots",) if slots_given else ())
    if d:
        field, was, now = d
        if field.startswith(("versions.", "device")):
            raise ConfigError("resume", f"{field} differs: the run was started with {was!r}, this installation has "
                                        f"{now!r} (the numbers would not continue the run's)")
        raise ConfigError("resume", f"{field} differs: config.json's fingerprint says {was!r}, its settings say "
                                    f"{now!r} ({cfg} was edited or mixes two runs)")
    for path, meta in checkpoints:
        fp = meta.get("fingerprint") if isinstance(meta, dict) else None
        if not isinstance(fp, dict):
            raise ConfigError("resume", f"checkpoint {path} has no fingerprint: cannot tell which run it belongs to")
        d = first_difference(fp, stored, ignore=("slots",))
        if d:
            field, was, now = d
            raise ConfigError("resume", f"{field} differs: checkpoint {os.path.basename(path)} says {was!r}, "
                                        f"config.json says {now!r} (the checkpoints belong to another run)")


def check_restored(template, state, records: dict, runs: int, t: int, record_keys, where: str) -> None:
    """The shapes of a restored checkpoint: every state leaf as the run's own init makes it (``runs``
    runs), every record (runs, t)."""
    import jax

    tl = jax.tree_util.tree_leaves(template)
    sl = jax.tree_util.tree_leaves(state)
    if len(tl) != len(sl):
        raise ConfigError("resume", f"{where}: {len(sl)} state arrays, the run has {len(tl)}")
    for i, (a, b) in enumerate(zip(sl, tl)):
        if tuple(np.shape(a)) != (runs,) + tuple(b.shape[1:]):
            raise ConfigError("resume", f"{where}: state array {i} has shape {tuple(np.shape(a))}, the run's is "
                                        f"{(runs,) + tuple(b.shape[1:])}")
    for k in record_keys:
        if k not in records:
            raise ConfigError("resume", f"{where}: no {k!r} records")
    for k, v in records.items():
        if tuple(np.shape(v)) != (runs, t):
            raise ConfigError("resume", f"{where}: {k!r} records have shape {tuple(np.shape(v))}, expected "
                                        f"{(runs, t)} ({runs} runs x {t} slots)")


# --- NaN and inf -----------------------------------------------------------------------------------------
class NonFinite(Exception):
    """A run's loss or reward became NaN or infinite at ``slot`` (of run ``run``)."""

    def __init__(self, key: str, slot: int, run: int, value: float):
        self.key, self.slot, self.run, self.value = key, int(slot), int(run), float(value)
        super().__init__(f"{key}: {value} at slot {slot} (run {run})")


def first_nonfinite(recs: dict, finite_before=None, offset: int = 0) -> NonFinite | None:
    """The earliest slot where a reward is not finite, or the loss is infinite, or NaN after it was
    finite (the loss is NaN before a run's first training step, by design); None if there is none.
    For records of slots ``offset ..`` only, ``finite_before`` (R,) says which runs had a finite
    loss before them (``loss_was_finite`` of the earlier records)."""
    best = None
    for key in ("reward", "reward_observed", "loss"):
        if key not in recs:
            continue
        a = np.asarray(recs[key], np.float64)
        if a.ndim == 1:
            a = a[None]
        if key == "loss":
            seen = np.logical_or.accumulate(np.isfinite(a), axis=1)
            if finite_before is not None:
                seen |= np.asarray(finite_before, bool)[:, None]
            bad = np.isinf(a) | (np.isnan(a) & seen)
        else:
            bad = ~np.isfinite(a)
        if not bad.any():
            continue
        cols = np.where(bad.any(axis=0))[0]
        slot = int(cols[0])
        run = int(np.where(bad[:, slot])[0][0])
        if best is None or slot + offset < best.slot:
            best = NonFinite(key, slot + offset, run, a[run, slot])
    return best


def loss_was_finite(recs: dict, finite_before=None):
    """(R,) whether each run's loss was finite at some slot of ``recs`` (or before)."""
    if "loss" not in recs:
        return finite_before
    a = np.asarray(recs["loss"], np.float64)
    a = a[None] if a.ndim == 1 else a
    out = np.isfinite(a).any(axis=1)
    return out if finite_before is None else out | np.asarray(finite_before, bool)


def cut_records(recs: dict, slot: int) -> dict:
    """The records of slots 0 .. slot-1."""
    return {k: np.asarray(v)[:, :slot] for k, v in recs.items()}
