"""Checkpoints of a batch of runs with orbax (issue 4, part 6).

A checkpoint holds, for every run, the whole scan carry (``loop.RunState``: actor parameters,
optimiser state, replay memory, environment state, K state, the run key's data; the slot index is
``env.t``) plus the records of every slot played so far, so a resumed run ends with exactly the
records of an uninterrupted one.

Layout: ``<dir>/slot_<t>/`` (an orbax PyTree checkpoint) with ``meta.json`` inside. A checkpoint is
written to ``<dir>/.tmp-slot_<t>-<pid>/`` and renamed into place only once orbax has finished and
the meta file is written, so a run killed while writing leaves its previous checkpoint intact;
the newest ``keep`` (default 2) complete checkpoints are kept. ``latest`` returns the newest
complete one; ``restore`` falls back to an older one if the newest cannot be read.

The state is stored as its flat list of leaves (numpy arrays); the tree structure comes from a
template (the trainer's own init, traced abstractly), so nothing in the format depends on how
flax or optax name their containers.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import jax
import numpy as np

PREFIX = "slot_"
META = "meta.json"


def _checkpointer():
    import orbax.checkpoint as ocp

    return ocp.PyTreeCheckpointer()


def save(directory: str, t: int, state, records: dict, meta: dict | None = None, keep: int = 2) -> str:
    """Write the checkpoint of slot ``t`` (host numpy state and records); returns its path."""
    os.makedirs(directory, exist_ok=True)
    leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(state)]
    tree = {
        "state": {f"{i:05d}": leaf for i, leaf in enumerate(leaves)},
        "records": {k: np.asarray(v) for k, v in records.items()},
        "t": np.asarray(t, np.int64),
    }
    final = os.path.join(directory, f"{PREFIX}{t}")
    tmp = os.path.join(directory, f".tmp-{PREFIX}{t}-{os.getpid()}")
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    _checkpointer().save(os.path.abspath(os.path.join(tmp, "tree")), tree)  # orbax wants absolute paths
    with open(os.path.join(tmp, META), "w") as f:
        json.dump({"t": int(t), "leaves": len(leaves), **(meta or {})}, f)
    if os.path.exists(final):  # same slot written again (e.g. after a resume): replace it
        old = final + f".old-{os.getpid()}"
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)  # atomic on one file system
    for path in complete(directory)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)
    return final


def complete(directory: str) -> list[str]:
    """Complete checkpoints, oldest first."""
    if not os.path.isdir(directory):
        return []
    found = []
    for name in os.listdir(directory):
        m = re.fullmatch(PREFIX + r"(\d+)", name)
        path = os.path.join(directory, name)
        if m and os.path.isfile(os.path.join(path, META)):
            found.append((int(m.group(1)), path))
    return [p for _, p in sorted(found)]


def latest(directory: str) -> str | None:
    c = complete(directory)
    return c[-1] if c else None


def read_meta(path: str) -> dict:
    with open(os.path.join(path, META)) as f:
        return json.load(f)


def restore(directory: str, template):
    """(t, state, records) from the newest readable checkpoint; ``template`` is any pytree with the
    state's structure (e.g. ``jax.eval_shape`` of the init). Raises FileNotFoundError if none."""
    treedef = jax.tree_util.tree_structure(template)
    errors = []
    for path in reversed(complete(directory)):
        try:
            tree = _checkpointer().restore(os.path.abspath(os.path.join(path, "tree")))
            leaves = [np.asarray(tree["state"][k]) for k in sorted(tree["state"])]
            state = jax.tree_util.tree_unflatten(treedef, leaves)
            records = {k: np.asarray(v) for k, v in tree["records"].items()}
            return int(tree["t"]), state, records
        except Exception as err:  # a damaged checkpoint: try the previous one
            errors.append(f"{path}: {err}")
    raise FileNotFoundError("no readable checkpoint in " + directory + ("; " + "; ".join(errors) if errors else ""))
