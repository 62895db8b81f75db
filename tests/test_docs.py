"""The docs run as written (issue 17): every fenced block of README.md and docs/*.md opened with
```` ```bash quick ```` is run, in order within its page (two pages side by side, their outputs
differ), as a user of a fresh clone would type it, and
must exit 0 without writing into any tracked file. A stale doc (a renamed flag, a moved file, a
command that writes into docs/) fails here.

The convention: mark a block ``bash quick`` only when all of it takes seconds (small sizes);
longer commands stay in plain ``bash`` blocks. The commands run in a scratch folder that mirrors
the repository's top level with symlinks (so ``tests/...`` and ``docs/...`` resolve as in a
clone, and ``runs/``, ``results/`` and ``t.jsonl`` land in the scratch folder)."""

from __future__ import annotations

import glob
import hashlib
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FENCE = re.compile(r"^```bash quick[ \t]*\n(.*?)^```", re.S | re.M)
SKIP = {".git", ".jax_cache", "runs", "results", ".pytest_cache", "__pycache__", ".hypothesis"}


def quick_blocks() -> list[tuple[str, int, str]]:
    """(file, line, text) of every ``bash quick`` block, README.md first, then docs/*.md."""
    out = []
    for path in [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))):
        with open(path) as f:
            text = f.read()
        for m in FENCE.finditer(text):
            out.append((os.path.relpath(path, ROOT), text[: m.start()].count("\n") + 1, m.group(1)))
    return out


def tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30)
        return [p for p in out.stdout.decode().split("\0") if p]
    except (OSError, subprocess.SubprocessError):  # no git: every file outside the output folders
        files = []
        for d, dirs, names in os.walk(ROOT):
            dirs[:] = [x for x in dirs if x not in SKIP]
            files += [os.path.relpath(os.path.join(d, n), ROOT) for n in names]
        return files


def snapshot(files: list[str]) -> dict:
    out = {}
    for p in files:
        full = os.path.join(ROOT, p)
        if os.path.isfile(full):
            with open(full, "rb") as f:
                out[p] = hashlib.sha1(f.read()).hexdigest()
    return out


def test_the_docs_mark_quick_blocks():
    blocks = quick_blocks()
    files = {f for f, _, _ in blocks}
    assert "README.md" in files and "docs/training.md" in files and "docs/results.md" in files, files
    assert all(b.strip() for _, _, b in blocks)


def test_quick_doc_commands_run_as_written(tmp_path):
    for name in os.listdir(ROOT):  # a clone's top level, as symlinks
        if name not in SKIP and not name.startswith("."):
            os.symlink(os.path.join(ROOT, name), tmp_path / name)
    bindir = tmp_path / ".bin"
    bindir.mkdir()
    os.symlink(sys.executable, bindir / "python")
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": ROOT + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")}
    files = tracked_files()
    before = snapshot(files)
    by_file: dict[str, list] = {}
    for where, line, text in quick_blocks():
        by_file.setdefault(where, []).append((line, text))

    def run_file(where):  # one page's blocks in order; pages side by side (their outputs differ)
        for line, text in by_file[where]:
            p = subprocess.run(["bash", "-e", "-c", text], cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=600)
            if p.returncode != 0:
                return f"{where}:{line} failed (exit {p.returncode}):\n{text}\n{p.stderr[-3000:]}"
        return None

    with ThreadPoolExecutor(2) as pool:
        failures = [f for f in pool.map(run_file, by_file) if f]
    assert not failures, "\n\n".join(failures)
    after = snapshot(files)
    changed = [p for p in before if after.get(p) != before[p]]
    assert not changed, f"the docs' commands wrote into tracked files: {changed}"
