"""Shared test set-up: a persistent XLA compilation cache, so the subprocesses the CLI tests start
(and repeated runs of the suite) reuse compiled programs instead of compiling them again."""

import os
import subprocess
import sys

# XLA:CPU's elemental emitter (``train.compiling``'s fast way) for every program the suite compiles,
# in this process, its xdist workers and the subprocesses they start: about a third less compile
# time, and compiling is most of the suite's time (2-core AMD EPYC, 2026-12-08, a fresh compile
# cache: pytest 503 s against 632 s). The two emitters give the same numbers
# (``tests/test_train.py::test_fast_compile_gives_the_same_numbers`` compiles both ways, the
# default one through the ``default_emitters`` fixture). ``GRLE_JAX_TEST_EMITTERS=default`` runs the whole suite
# with XLA's default emitters instead. Set once, by the first process (the workers inherit it), and
# only if this jaxlib takes the flag (an unknown XLA flag is fatal).
FLAG = "--xla_cpu_use_fusion_emitters=false"
if os.environ.get("GRLE_JAX_TEST_EMITTERS", "elemental") == "elemental" and FLAG not in os.environ.get("XLA_FLAGS", ""):
    probe = subprocess.run([sys.executable, "-c", "import jax; jax.numpy.zeros(1).block_until_ready()"],
                           env={**os.environ, "XLA_FLAGS": FLAG, "JAX_PLATFORMS": "cpu"}, capture_output=True, timeout=120)
    if probe.returncode == 0:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + FLAG).strip()
    os.environ["GRLE_JAX_TEST_EMITTERS"] = "elemental" if probe.returncode == 0 else "default"

CACHE = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_compilation_cache_dir", CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)



# The files with the slowest tests (cold compile cache, 2 cores, 2026-11-30: 30-70 s each, mostly
# compiling) go first, so that pytest-xdist starts them early on every worker and the short files
# fill the gaps instead of one long test running alone at the end. Whole files move, in their own
# order (a module-scoped fixture is set up once per worker, not again after another file). Only
# the order changes; every test still runs.
SLOW_FILES = ("test_docs.py", "test_train_shard.py", "test_variant.py", "test_train.py", "test_reliability.py",
              "test_runner.py", "test_oracle.py", "test_profiling.py", "test_plots.py", "test_train_cli.py")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.nodeid.split("::")[0].split("/")[-1]
        return SLOW_FILES.index(name) if name in SLOW_FILES else len(SLOW_FILES)

    items.sort(key=rank)  # stable: tests keep their order within a file


@pytest.fixture
def default_emitters(monkeypatch):
    """The trainer's programs compiled with XLA:CPU's default (fusion) emitters, whatever the suite
    runs with: ``train.compiling.options(False)`` names them explicitly (the fast way unchanged),
    and the trainer's cache of jitted programs is emptied before and after."""
    from train import compiling, loop

    plain = compiling.options

    def options(fast):
        return plain(True) if fast else (dict(compiling.DEFAULT) if plain(True) is not None else None)

    monkeypatch.setattr(compiling, "options", options)
    loop._BATCHED.clear()
    yield
    loop._BATCHED.clear()
