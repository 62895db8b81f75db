"""Shared test set-up: a persistent XLA compilation cache, so the subprocesses the CLI tests start
(and repeated runs of the suite) reuse compiled programs instead of compiling them again."""

import os

CACHE = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import jax  # noqa: E402

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
