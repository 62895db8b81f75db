"""Shared command-line plumbing of the profiling stage: one-line errors and exit code 2."""

from __future__ import annotations

import json
import os

from grle_jax import cli
from grle_jax.errors import ConfigError

from .vgg import N_EXITS, check_exit


class Parser(cli.Parser):
    """The toolkit's parser (grle_jax.cli) with the profiling stage's field names: a bad flag is
    named as typed (``--batch``), a missing argument ``args``."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("field_style", "flag")
        kwargs.setdefault("fallback", "args")
        super().__init__(*args, **kwargs)


def run(main_body, argv=None) -> int:
    """Call ``main_body(argv)``; a ConfigError becomes ``error: <field>: <why>`` and exit 2."""
    def body():
        main_body(argv)

    return cli.run(body)


def parse_exits(text: str | None, field: str = "exits") -> list[int]:
    """'1,3,4,7,17' -> [1, 3, 4, 7, 17]; 'all' or None -> 1..17. Sorted, unique, each in 1..17."""
    if text is None or text.strip().lower() == "all":
        return list(range(1, N_EXITS + 1))
    out = []
    for tok in text.split(","):
        tok = tok.strip()
        if not tok:
            continue
        try:
            k = int(tok)
        except ValueError:
            raise ConfigError(field, f"{tok!r} is not an exit number (1..{N_EXITS})") from None
        check_exit(k, field)
        out.append(k)
    if not out:
        raise ConfigError(field, "empty exit list")
    if len(set(out)) != len(out):
        raise ConfigError(field, f"exit listed twice in {text!r}")
    return sorted(out)


def positive_int(value, field: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(field, f"must be an integer >= {minimum}, got {value!r}")
    return value


CREATED_FOLDERS = ("results", "runs")  # git-ignored folders of the current directory the tools create


def check_output(path, field: str = "out", is_dir: bool = False) -> None:
    """Before any work (issue 15): ``path`` is a path, its folder exists (or is ``results/`` or
    ``runs/`` of the current directory, which the tools create, as for their defaults) and the
    nearest existing folder on the way is writable (a probe file is created and removed)."""
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(field, f"must be a path, got {path!r}")
    if is_dir and os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(field, f"exists and is not a folder: {path}")
    if not is_dir and os.path.isdir(path):
        raise ConfigError(field, f"is a folder: {path}")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent) and parent not in {os.path.abspath(d) for d in CREATED_FOLDERS}:
        raise ConfigError(field, f"folder does not exist: {parent}")
    d = os.path.abspath(path) if is_dir else parent
    while not os.path.isdir(d):
        d = os.path.dirname(d)
    from train.rundir import probe_writable

    probe_writable(field, d)


def write_json(path: str, data, field: str = "out") -> None:
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
    except OSError as err:
        raise ConfigError(field, f"cannot write {path} ({err.strerror})") from None


def save_figure(fig, path: str, field: str = "out") -> None:
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
    except OSError as err:
        raise ConfigError(field, f"cannot write {path} ({err.strerror})") from None
