"""Inference time of every early exit of VGG-16 on every visible JAX device.

    python -m profiling.time_exits --out results/timing.json [--exits 1,3,4,7,17] [--width 1]
                                   [--batch 64] [--reps 100] [--warmup 10] [--devices all]

For each device (``--devices``: ``all`` = every device of the default backend plus the CPU, or a
list of ``cpu``, ``gpu``, ``gpu0``, ``gpu1``, ...), each batch size (1, and ``--batch`` when given)
and each exit ``k``, the forward pass that stops at exit ``k`` is compiled once (ahead of time,
for that device), run ``--warmup`` times, then timed ``--reps`` times, each call ended by
``block_until_ready``. The repetitions go round-robin over the exits (rep 1 of every exit, then
rep 2, ...), so a slow drift of the machine (clock, temperature, other load) touches all exits
alike. Reported per exit: median, p10, p90, min and mean in ms, compile time in s, and the FLOPs
XLA counts. Input: a fixed random float32 batch; weights: the untrained network (timing does not
depend on the weights). ``--conv`` picks the convolution implementation (``auto``: im2col on
the CPU, where XLA's own convolution is very slow on the small deep maps, and XLA's, i.e.
cuDNN, on a GPU; see ``profiling.vgg.Conv3x3``). The JSON goes to ``--out``, a plot of time
against exit to ``--plot`` (default: ``--out`` with ``.png``).
"""

from __future__ import annotations

import os
import platform
import sys
import time
from functools import partial

import jax
import numpy as np

from grle_jax.errors import ConfigError

from . import _cli
from .vgg import IMAGE_SHAPE, N_EXITS, check_exit, conv_impl_for, init_variables, layers_of_exit, make_model

FORMAT = "grle_jax.exit_timing/1"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def visible_devices() -> list[tuple[str, jax.Device]]:
    """(id, device) of every device of the default backend, then the CPU if not already there.

    Ids: ``cpu`` for the first CPU device, ``<platform><index>`` for the others (``gpu0``, ...).
    """
    found: list[jax.Device] = list(jax.devices())
    try:
        cpus = jax.devices("cpu")
    except RuntimeError:
        cpus = []
    if cpus and all(d.platform != "cpu" for d in found):
        found.append(cpus[0])
    out, counts = [], {}
    for d in found:
        if d.platform == "cpu":
            if any(i == "cpu" for i, _ in out):
                continue
            out.append(("cpu", d))
        else:
            n = counts.get(d.platform, 0)
            counts[d.platform] = n + 1
            out.append((f"{d.platform}{n}", d))
    return out


def select_devices(spec: str | None) -> list[tuple[str, jax.Device]]:
    """Resolve ``--devices``: 'all', or a comma list of ids (cpu, gpu0) or platforms (gpu)."""
    if spec is None:
        spec = "all"
    tokens = [t.strip().lower() for t in spec.split(",") if t.strip()]
    if not tokens:
        raise ConfigError("devices", "empty device list (use 'all', 'cpu', 'gpu' or ids like gpu0)")
    avail = visible_devices()
    ids = [i for i, _ in avail]
    chosen: list[tuple[str, jax.Device]] = []
    for tok in tokens:
        if tok == "all":
            match = avail
        else:
            match = [(i, d) for i, d in avail if i == tok or d.platform == tok]
        if not match:
            raise ConfigError("devices", f"no visible device matches {tok!r} (visible: {', '.join(ids)})")
        for item in match:
            if item[0] not in [i for i, _ in chosen]:
                chosen.append(item)
    return chosen


def device_name(dev_id: str, dev: jax.Device, kinds: list[str]) -> str:
    """Profile name of a device: 'cpu', or the device kind ('NVIDIA H100 80GB HBM3'),
    with ' #<id>' appended when several chosen devices share that kind."""
    if dev.platform == "cpu":
        return "cpu"
    kind = str(dev.device_kind)
    return kind if kinds.count(kind) == 1 else f"{kind} #{dev_id}"


def _flops(compiled) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # cost analysis is optional and backend-dependent
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost:
        return None
    f = cost.get("flops")
    return float(f) if f is not None else None


def time_device(model, variables, dev, exits, batch, reps, warmup, seed=0) -> dict:
    """Compile, warm up and time each exit on one device for one batch size."""
    var_d = jax.device_put(variables, dev)
    x = np.random.default_rng(seed).standard_normal((batch,) + IMAGE_SHAPE).astype(np.float32)
    x_d = jax.device_put(x, dev)
    fns, compile_s, flops = [], [], []
    for k in exits:
        t0 = time.perf_counter()
        c = jax.jit(partial(model.apply, exit=k, train=False)).lower(var_d, x_d).compile()
        compile_s.append(time.perf_counter() - t0)
        flops.append(_flops(c))
        fns.append(c)
    for f in fns:
        for _ in range(warmup):
            f(var_d, x_d).block_until_ready()
    samples = np.empty((reps, len(exits)))
    for r in range(reps):
        for j, f in enumerate(fns):
            t0 = time.perf_counter()
            f(var_d, x_d).block_until_ready()
            samples[r, j] = (time.perf_counter() - t0) * 1e3
    q = np.percentile(samples, [10, 50, 90], axis=0)
    return {
        "batch": batch,
        "exits": list(exits),
        "median_ms": q[1].tolist(),
        "p10_ms": q[0].tolist(),
        "p90_ms": q[2].tolist(),
        "min_ms": samples.min(axis=0).tolist(),
        "mean_ms": samples.mean(axis=0).tolist(),
        "compile_s": compile_s,
        "flops": flops,
    }


def measure(exits, width=1.0, batches=(1,), reps=100, warmup=10, devices="all", seed=0, conv="auto",
            log=print) -> dict:
    """The timing record (see module docstring) as a dict."""
    exits = [check_exit(k) for k in exits]
    reps = _cli.positive_int(reps, "reps")
    warmup = _cli.positive_int(warmup, "warmup", minimum=0)
    for b in batches:
        _cli.positive_int(b, "batch")
    chosen = select_devices(devices)
    conv_impl_for("cpu", conv)  # checks the choice
    variables = init_variables(make_model(width), seed)
    kinds = [str(d.device_kind) for _, d in chosen]
    record = {
        "format": FORMAT,
        "jax_version": jax.__version__,
        "host": {"cpu": _cpu_model(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
        "settings": {"width": width, "exits": exits, "batches": list(batches), "reps": reps,
                     "warmup": warmup, "dtype": "float32", "seed": seed, "conv": conv,
                     "statistic": "wall ms per call",
                     "layers_per_exit": [layers_of_exit(k) for k in exits]},
        "devices": [],
    }
    for dev_id, dev in chosen:
        impl = conv_impl_for(dev.platform, conv)
        model = make_model(width, conv=impl)
        entry = {"id": dev_id, "name": device_name(dev_id, dev, kinds), "platform": dev.platform,
                 "kind": str(dev.device_kind), "conv": impl, "results": []}
        for b in batches:
            log(f"timing {dev_id} ({entry['kind']}, conv {impl}), batch {b}: {len(exits)} exits x {reps} reps ...")
            res = time_device(model, variables, dev, exits, b, reps, warmup, seed)
            entry["results"].append(res)
            log(format_table(entry["name"], res))
        record["devices"].append(entry)
    return record


def format_table(name: str, res: dict) -> str:
    lines = [f"{name}, batch {res['batch']}:", "  exit  median_ms     p10_ms     p90_ms  compile_s"]
    for j, k in enumerate(res["exits"]):
        lines.append(f"  {k:4d} {res['median_ms'][j]:10.4f} {res['p10_ms'][j]:10.4f} "
                     f"{res['p90_ms'][j]:10.4f} {res['compile_s'][j]:10.2f}")
    return "\n".join(lines)


def _runs(exits: list[int]) -> list[list[int]]:
    """Index runs of consecutive exit numbers (in the given order), e.g. [1, 3, 4] -> [[0], [1, 2]]."""
    out: list[list[int]] = []
    for j, k in enumerate(exits):
        if out and exits[out[-1][-1]] == k - 1:
            out[-1].append(j)
        else:
            out.append([j])
    return [r for r in out if len(r) > 1]


def plot(record: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = record["settings"]["batches"]
    fig, axes = plt.subplots(1, len(batches), figsize=(5.5 * len(batches), 4), squeeze=False)
    for ax, b in zip(axes[0], batches):
        for dev in record["devices"]:
            res = next(r for r in dev["results"] if r["batch"] == b)
            med = np.asarray(res["median_ms"])
            err = [med - np.asarray(res["p10_ms"]), np.asarray(res["p90_ms"]) - med]
            # markers at the measured exits; a line only between neighbouring measured exits
            eb = ax.errorbar(res["exits"], med, yerr=err, marker="o", ls="none", capsize=3, label=dev["name"])
            for seg in _runs(list(res["exits"])):
                ax.plot([res["exits"][j] for j in seg], med[seg], color=eb[0].get_color(), lw=1)
        untimed = sorted(set(range(1, N_EXITS + 1)) - {k for d in record["devices"] for r in d["results"]
                                                       if r["batch"] == b for k in r["exits"]})
        if untimed:
            ax.text(0.01, 0.98, f"not timed: exits {', '.join(map(str, untimed))}", transform=ax.transAxes,
                    va="top", fontsize=8, color="0.3")
        ax.set_xlabel("exit")
        ax.set_ylabel("time per call (ms), median, p10-p90")
        ax.set_title(f"VGG-16 exits, width {record['settings']['width']}, batch {b}")
        ax.set_xticks(range(1, N_EXITS + 1))
        ax.grid(alpha=0.3)
        ax.legend()
    _cli.save_figure(fig, path, "plot")
    plt.close(fig)


DEFAULT_OUT = "results/timing.json"


def _main(argv) -> None:
    p = _cli.Parser(prog="python -m profiling.time_exits", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=DEFAULT_OUT, help="timing JSON to write")
    p.add_argument("--plot", default=None, help="PNG plot (default: --out with .png)")
    p.add_argument("--exits", default="all", help="exits to time, e.g. 1,3,4,7,17 (default all 17)")
    p.add_argument("--width", type=float, default=1.0, help="channel width multiplier (1 = VGG-16)")
    p.add_argument("--batch", type=int, default=None, help="also time this batch size (besides 1)")
    p.add_argument("--reps", type=int, default=100, help="timed repetitions per exit")
    p.add_argument("--warmup", type=int, default=10, help="untimed calls per exit after compiling")
    p.add_argument("--devices", default="all", help="'all' or a list such as cpu,gpu or gpu0,cpu")
    p.add_argument("--conv", default="auto", help="convolution implementation: auto (im2col on CPU, "
                                                  "xla elsewhere), xla or im2col")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    exits = _cli.parse_exits(a.exits)
    _cli.check_output(a.out, "out")  # before any timing (issue 15)
    if a.plot is not None:
        _cli.check_output(a.plot, "plot")
    batches = [1]
    if a.batch is not None:
        _cli.positive_int(a.batch, "batch")
        if a.batch != 1:
            batches.append(a.batch)
    record = measure(exits, a.width, batches, a.reps, a.warmup, a.devices, a.seed, a.conv,
                     log=lambda s: print(s, flush=True))
    _cli.write_json(a.out, record)
    plot_path = a.plot or os.path.splitext(a.out)[0] + ".png"
    plot(record, plot_path)
    print(f"wrote {a.out} and {plot_path}")


def main(argv=None) -> int:
    return _cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
