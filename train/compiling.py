"""Compile for the work a program will do (issue 14, part 5; docs/benchmarks.md, "Compiling for
the work").

XLA:CPU can compile a program with its fusion emitters (its default: faster code) or with its
older elemental emitter (``xla_cpu_use_fusion_emitters=False``: about a third less compile time,
code up to about 20-30 % slower for 5 runs of GRLE and GRL at N = 20-30, as fast for one run and
for the small ones). The two give the same numbers, bit for bit, in every program and shape we
checked (``tests/test_train.py::test_fast_compile_gives_the_same_numbers``): the two differences
first found, in the last bits of the loss and of the rewards, came from XLA ``reduce`` ops whose
order the compiler picks, and those sums are now written in a fixed order
(``grle_jax.policies.fixed_order_sum``, ``grle_jax.dynamics.in_order``). One exception is known
(2026-12-08, docs/model.md, acting ahead): DROOE acting ahead in a call of exactly one slot that
holds an Adam step, where the last bit of some Adam moments moves (a call's last block is no
longer a lone slot, which moved them too). So the choice is one of time, made per program from
the work it will do:

* init programs run once: always compiled the fast way;
* a ``run`` program is compiled the fast way when its planned work, devices x slots x runs over
  every cell that shares it, is at most ``FAST_UP_TO`` device-slots ("auto", the default of
  ``--compile``), else with the fusion emitters. ``fast`` and ``full`` force one way.

``FAST_UP_TO`` is where the slower code's extra time catches up with the compile time saved for
the costliest program measured (GRLE at N = 30 with 5 runs: 1.4 s saved, 0.2 ms more per run-slot,
even at about 203,000 device-slots; GRLE at N = 20 252,000, GRL at N = 30 299,000, every other
policy and size more, and one run of GRLE or GRL runs as fast either way). `paper --quick`'s 14
programs plan 14,000 to 80,000 device-slots each, the main job's default (N = 14, 10,000 slots, one
run) 140,000, the full paper grid's programs 1.4 to 24 million: the quick run and the default job
compile fast, the grid as before. On other backends (a GPU) nothing changes.
"""

from __future__ import annotations

import functools

from grle_jax.errors import ConfigError

MODES = ("auto", "fast", "full")
FAST = {"xla_cpu_use_fusion_emitters": False}
# the default way, named (what XLA:CPU does unless XLA_FLAGS says otherwise): for comparing the two
DEFAULT = {"xla_cpu_use_fusion_emitters": True}
FAST_UP_TO = 200_000  # device-slots (devices x slots x runs) a run program may plan to be compiled fast


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError("compile", f"must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def choose(mode: str, device_slots: int) -> bool:
    """Whether a run program planning ``device_slots`` (devices x slots x runs) compiles fast."""
    check_mode(mode)
    return mode == "fast" or (mode == "auto" and device_slots <= FAST_UP_TO)


@functools.lru_cache(maxsize=None)
def _available(backend: str) -> bool:
    """This jaxlib on this backend takes the option (a CPU backend of a jax that knows it)."""
    import jax

    if backend != "cpu":
        return False
    try:
        jax.jit(lambda x: x + 1, compiler_options=FAST).lower(1.0).compile()
    except Exception:  # noqa: BLE001 - an older or newer XLA without the option: compile as usual
        return False
    return True


def jit(fn, fast: bool, **kw):
    """``jax.jit(fn, **kw)``, compiled the fast way when ``fast`` (and the backend has it). jax takes
    compiler options on a top-level jit only: called inside another trace (an outer ``jax.jit``,
    ``jax.eval_shape``) it is the plain jit of ``fn``, which the outer program compiles its own way."""
    import jax

    opts = options(fast)
    if opts is None:
        return jax.jit(fn, **kw)
    return _TopLevel(jax.jit(fn, compiler_options=opts, **kw), jax.jit(fn, **kw))


def _trace_state_clean() -> bool:
    try:
        from jax._src.core import trace_state_clean
    except ImportError:  # pragma: no cover - another jax: assume top level (jax raises if not)
        return True
    return trace_state_clean()


class _TopLevel:
    """A jitted function with compiler options at the top level, its plain twin inside a trace;
    ``lower``, ``trace``, ``eval_shape`` and the rest are the top-level one's."""

    def __init__(self, top, plain):
        self._top, self._plain = top, plain

    def __call__(self, *args, **kwargs):
        return (self._top if _trace_state_clean() else self._plain)(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._top, name)


def options(fast: bool) -> dict | None:
    """``compiler_options`` for ``jax.jit``: the fast way's when ``fast`` and the backend has it."""
    import jax

    if fast and _available(jax.default_backend()):
        return dict(FAST)
    return None
