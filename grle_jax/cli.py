"""The command-line toolkit every command uses (train.grle, train.experiments, train.timeline,
train.plots, profiling.*, benchmarks.*): one parser class, one help formatter, one registry of the
flags several commands share (each flag's default and help written once, the defaults read from
the config dataclasses where they hold them), one way to turn bad input into the one-line error.

Bad input, anywhere, is a ``ConfigError(field, why)``; ``run`` prints it as one line
``error: <field>: <why>`` on stderr and returns exit code 2. Flags are registered with argparse
default ``None`` so a command can tell a flag that was given from one that was not (``--resume``
and ``--config`` need that); ``value(args, name)`` reads a flag with its registered default.

No JAX here: train.plots (matplotlib and numpy only) uses it too.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from dataclasses import dataclass
from typing import Any, Callable

from .errors import ConfigError


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors raise ``ConfigError`` (one line, exit 2 through ``run``).

    ``field_style`` names the field of a bad flag: ``"dest"`` (``--slot-ms`` -> ``slot_ms``, the
    default) or ``"flag"`` (the flag as typed, ``--batch``: the profiling stage's messages).
    ``positional`` maps a word of argparse's message to the field it means (``{"RUN_DIR": "run_dir"}``);
    any other message names ``fallback``."""

    def __init__(self, *args, field_style: str = "dest", positional: dict | None = None,
                 fallback: str = "arguments", **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.field_style, self.positional, self.fallback = field_style, dict(positional or {}), fallback

    def error(self, message: str):  # noqa: D401 (argparse API)
        field = self.fallback
        for word, name in self.positional.items():
            if word in message:
                field = name
        if message.startswith("argument "):
            head, _, why = message[len("argument "):].partition(": ")
            if self.field_style == "flag":
                field = head.split("/")[0]
            else:
                field = head.split("/")[-1].lstrip("-").replace("-", "_")
            message = why
        raise ConfigError(field, message)


class HelpFormatter(argparse.HelpFormatter):
    """Shows an option's default unless its help already says it or there is none to show."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return text + " (default: %(default)s)"


def run(body: Callable[[], Any]) -> int:
    """Call ``body()``; a ``ConfigError`` becomes ``error: <field>: <why>`` on stderr and exit 2,
    else the body's result if it is an exit code (an int), else 0."""
    try:
        out = body()
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return out if isinstance(out, int) and not isinstance(out, bool) else 0


def read_json(path: str, field: str):
    """A JSON file the user named with ``field``; a missing, unreadable or invalid file is a
    ``ConfigError(field, why)``."""
    import json
    import os

    if not os.path.isfile(path):
        raise ConfigError(field, f"file not found: {path}")
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(field, f"{path} is not valid JSON ({err})") from None
    except OSError as err:
        raise ConfigError(field, f"cannot read {path} ({err.strerror})") from None


def comma_list(field: str, text: str, kind=int, lo: int = 1) -> tuple:
    """``"4,10,20"`` -> (4, 10, 20), duplicates dropped: integers >= ``lo`` that int32 holds, or
    (``kind=float``) positive numbers that float32 holds; else ``ConfigError(field, why)``."""
    from .config import FLOAT32_MAX, INT32_MAX

    try:
        vals = tuple(kind(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(field, f"must be comma-separated {'integers' if kind is int else 'numbers'}, "
                                 f"got {text!r}") from None
    if not vals:
        raise ConfigError(field, "is empty")
    if kind is int:
        for bad, why in (([v for v in vals if v < lo], f"at least {lo}"),
                         ([v for v in vals if v > INT32_MAX], f"at most {INT32_MAX}")):
            if bad:
                raise ConfigError(field, f"values must be {why}, got {bad[0]}")
    else:
        for v in vals:
            if not math.isfinite(v) or v <= 0:
                raise ConfigError(field, f"values must be positive, got {v}")
            if v > FLOAT32_MAX:
                raise ConfigError(field, f"values must be at most {FLOAT32_MAX:.4g} (float32), got {v}")
    return tuple(dict.fromkeys(vals))


# --- the shared flags ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Flag:
    """One flag: its argparse keywords (without ``default``) and the default it stands for."""

    dest: str
    help: str  # may hold {default}
    default: Any = None  # what the flag means when it is not given (None: see the help)
    kwargs: tuple = ()  # (key, value) pairs for add_argument: type, metavar, action

    @property
    def option(self) -> str:
        return "--" + self.dest.replace("_", "-")


def _field_default(cls, name: str):
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    return f.default


def _registry() -> dict[str, Flag]:
    from .agent import ALL_POLICIES, AgentConfig
    from .config import OVERDUE_RULES, SCENARIOS, Config

    def env(dest, help, **kw):
        return Flag(dest, help, _field_default(Config, dest), tuple(kw.items()))

    def agent(dest, help, **kw):
        return Flag(dest, help, _field_default(AgentConfig, dest), tuple(kw.items()))

    flags = [
        Flag("policy", "one of " + ", ".join(ALL_POLICIES) + " (default {default})",
             _field_default(AgentConfig, "policy")),
        Flag("scenario", "preset: " + ", ".join(SCENARIOS) + " (default {default})",
             _field_default(Config, "scenario")),
        env("devices", "N (default {default})", type=int),
        env("servers", "M (default {default})", type=int),
        env("slot_ms", "slot length T in ms (default {default:g})", type=float),
        env("deadline_ms", "deadline D in ms (default {default:g})", type=float),
        env("overdue", " or ".join(OVERDUE_RULES) + " (default {default})"),
        env("rho", "late-task penalty weight (default {default:g})", type=float),
        env("p_link", "probability a link is up (default {default:g})", type=float),
        env("p_active", "probability a device is active (default {default:g})", type=float),
        env("topology_every", "redraw links/activity every k slots (default {default})", type=int),
        # learning (grle, grl, droo, drooe)
        agent("lr", "Adam learning rate (default {default:g})", type=float),
        Flag("k", "candidates K per slot (default N; the initial K with --adaptive-k)", None, (("type", int),)),
        Flag("adaptive_k", "DROO's adaptive K every --k-delta slots", False, (("action", "store_true"),)),
        agent("k_delta", "Delta of the adaptive K rule (default {default})", type=int),
        agent("batch", "minibatch size (default {default})", type=int),
        agent("train_every", "one Adam step every this many slots (default {default})", type=int),
        agent("memory", "replay memory size (default {default})", type=int),
        # the variant and its ingredients (grle_jax.agent.VARIANT_DEFAULTS; docs/training.md)
        Flag("variant", "ours or paper: the learner's ingredients (default ours for grle/grl, paper for "
                        "droo/drooe; paper = docs/model.md section 5's learners exactly; docs/training.md)",
             None, (("metavar", "V"),)),
        Flag("critic_rounds", "quantise-and-score rounds per slot, each around the last best (default: the "
                              "variant's, ours 2, paper 1)", None, (("type", int), ("metavar", "R"))),
        Flag("loss", "softmax (per-device softmax + cross-entropy) or bce (the paper's sigmoids + binary "
                     "cross-entropy); default: the variant's", None),
        Flag("greedy_candidate", "the critic also scores the sequential (greedy) decode (default: on for ours)",
             None, (("action", argparse.BooleanOptionalAction),)),
        Flag("samples", "the critic also scores this many samples of the actor's softmax (default: the "
                        "variant's, 0)", None, (("type", int),)),
        Flag("lookahead", "critic's score R - LOOKAHEAD * ES backlog past the next slot / D (default: ours 3, "
                          "paper 0)", None, (("type", float),)),
        # running
        Flag("seed", "seed of the first run (default {default})", 0, (("type", int),)),
        Flag("seeds", "parallel runs with seeds seed, seed+1, ... (default {default})", 1, (("type", int),)),
        Flag("slots", "number of time slots (default {default:,})", 10_000, (("type", int),)),
        Flag("chunk", "slots per compiled chunk (progress granularity, default {default})", 1000, (("type", int),)),
        Flag("quiet", "no progress line", False, (("action", "store_true"),)),
        Flag("compile", "auto, fast or full: how XLA compiles the run programs, the same numbers either way; "
                        "fast compiles about a third sooner and may run slower; auto: fast for a program with "
                        "little work planned (docs/training.md; default {default})", "auto", (("metavar", "MODE"),)),
    ]
    return {f.dest: f for f in flags}


_FLAGS: dict[str, Flag] | None = None
AGENT_FLAGS = ("lr", "k", "adaptive_k", "k_delta", "batch", "train_every", "memory")
VARIANT_FLAGS = ("variant", "critic_rounds", "loss", "greedy_candidate", "samples", "lookahead")
ENV_FLAGS = ("devices", "servers", "slot_ms", "deadline_ms", "overdue", "rho", "p_link", "p_active", "topology_every")


def flags() -> dict[str, Flag]:
    """dest -> Flag: every shared flag (built once; the defaults come from Config and AgentConfig)."""
    global _FLAGS
    if _FLAGS is None:
        _FLAGS = _registry()
    return _FLAGS


def add(p: argparse.ArgumentParser, *dests: str, **defaults) -> None:
    """Add the registered flags ``dests`` to ``p`` (argparse default None: given or not stays
    visible). ``defaults`` overrides a flag's default for this command (its help says so)."""
    reg = flags()
    for d in dests:
        f = reg[d]
        default = defaults.get(d, f.default)
        kw = dict(f.kwargs)
        p.add_argument(f.option, dest=f.dest, default=None, help=f.help.format(default=default), **kw)


def default(dest: str, **defaults):
    """The default a registered flag stands for (``defaults`` as given to ``add``)."""
    return defaults.get(dest, flags()[dest].default)


def value(args, dest: str, **defaults):
    """The flag's value if given, else its default."""
    v = getattr(args, dest, None)
    return default(dest, **defaults) if v is None else v


def given(args, dests) -> dict:
    """{dest: value} of the flags among ``dests`` that were given."""
    return {d: getattr(args, d) for d in dests if getattr(args, d, None) is not None}
