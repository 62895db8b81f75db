"""DROO's learning step: autodiff's backward pass against the written-out one (issue 14, part 2).

    python -m benchmarks.mlp_backward [--batches 1024,8192] [--reps 9] [--json FILE]

Times, for B runs side by side (one MLP per run, a minibatch of 32, N = 14, M = 2: 28 -> 120 -> 80
-> 28), each layer's three batched products (forward, input gradient, weight gradient) in the form
autodiff writes them, the input gradient on a transposed copy of the kernel (given, and
materialised in the program as ``policies.mlp`` does), and ``torch.bmm`` where torch is installed;
then the loss and gradients of a whole minibatch through flax's ``nn.Dense`` with autodiff and
through ``policies.mlp`` (what DROO trains with), with their largest difference. Medians of
``--reps`` calls after a compile; figures in docs/benchmarks.md, "DROO's backward pass".
"""

from __future__ import annotations

import json
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from grle_jax import cli
from grle_jax.agent import AgentConfig
from grle_jax.config import Config
from grle_jax.errors import ConfigError
from grle_jax.policies import make_actor, masked_bce
from grle_jax.scenario import observe, reset, sample
from grle_jax.threefry import materialised

MINIBATCH = 32


def _median_ms(f, args, reps):
    jax.block_until_ready(f(*args))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def _torch_ms(f, reps):
    f()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def products(b: int, reps: int, sizes) -> list:
    rows = []
    key = jax.random.key(0)
    for d_in, d_out in sizes:
        kx, kw, kg = jax.random.split(jax.random.fold_in(key, d_in * 1000 + d_out), 3)
        x = jax.random.normal(kx, (b, MINIBATCH, d_in))
        w = jax.random.normal(kw, (b, d_in, d_out))
        g = jax.random.normal(kg, (b, MINIBATCH, d_out))
        wt = jnp.swapaxes(w, 1, 2) + 0.0
        row = {"layer": f"{MINIBATCH}x{d_in}x{d_out}",
               "forward_ms": _median_ms(jax.jit(lambda x, w: jnp.einsum("bmi,bio->bmo", x, w)), (x, w), reps),
               "dx_autodiff_ms": _median_ms(jax.jit(lambda g, w: jnp.einsum("bmo,bio->bmi", g, w)), (g, w), reps),
               "dx_transposed_given_ms": _median_ms(jax.jit(lambda g, wt: jnp.einsum("bmo,boi->bmi", g, wt)), (g, wt), reps),
               "dx_transposed_materialised_ms": _median_ms(jax.jit(
                   lambda g, w: jnp.einsum("bmo,boi->bmi", g, materialised(jnp.swapaxes(w, 1, 2)))), (g, w), reps),
               "dw_autodiff_ms": _median_ms(jax.jit(lambda x, g: jnp.einsum("bmi,bmo->bio", x, g)), (x, g), reps)}
        try:
            import torch
        except ImportError:
            torch = None
        if torch is not None:
            tx, tw, tg = (torch.from_numpy(np.array(a)) for a in (x, w, g))
            row.update(torch_forward_ms=_torch_ms(lambda: torch.bmm(tx, tw), reps),
                       torch_dx_ms=_torch_ms(lambda: torch.bmm(tg, tw.transpose(1, 2)), reps),
                       torch_dw_ms=_torch_ms(lambda: torch.bmm(tx.transpose(1, 2), tg), reps))
        rows.append(row)
    return rows


class _PlainMLP(nn.Module):  # flax's nn.Dense layers, autodiff's backward pass
    out: int
    hidden: tuple = (120, 80)

    @nn.compact
    def __call__(self, x):
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.out)(x)


def learning_step(b: int, reps: int) -> dict:
    cfg = Config.for_scenario("csi", devices=14, servers=2)
    static, params = cfg.static(), cfg.params()
    actor = make_actor(static, AgentConfig(policy="droo").static(static))
    st = reset(static)
    obs = jax.vmap(lambda k: observe(st, sample(k, params, st, static)))(jax.random.split(jax.random.key(1), MINIBATCH))
    keys = jax.random.split(jax.random.key(2), b)
    variables = jax.vmap(lambda k: actor.init(k, jax.tree_util.tree_map(lambda a: a[0], obs), params))(keys)
    target = jax.nn.one_hot(jax.random.randint(jax.random.key(3), (MINIBATCH, static.n), 0, actor.options),
                            actor.options)
    live = jax.vmap(actor.live)(obs)
    plain = _PlainMLP(static.n * actor.options)

    def loss_ours(v, o):
        return masked_bce(actor.apply_batch(v, o, params), target, live)

    def loss_autodiff(v, o):
        x = jnp.where(o.L, o.r_hat / params.rate_hi, 0.0).reshape(MINIBATCH, -1)
        return masked_bce(plain.apply(v, x).reshape(MINIBATCH, static.n, -1), target, live)

    fns = {name: jax.jit(jax.vmap(jax.value_and_grad(f), in_axes=(0, None)))
           for name, f in (("autodiff", loss_autodiff), ("written_out", loss_ours))}
    out = {name: _median_ms(f, (variables, obs), reps) for name, f in fns.items()}
    a, c = (fns[n](variables, obs) for n in ("autodiff", "written_out"))
    out["max_abs_difference"] = max(float(jnp.max(jnp.abs(x - y)))
                                    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(c)))
    return out


def main(argv=None) -> int:
    p = cli.Parser(prog="python -m benchmarks.mlp_backward", description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", default="1024,8192", help="comma list of run counts")
    p.add_argument("--reps", type=int, default=9)
    p.add_argument("--json", default=None, help="also write the figures to this file")
    return cli.run(lambda: _main(p.parse_args(argv)))


def _main(args) -> int:
    batches = cli.comma_list("batches", args.batches)
    if args.reps < 1:
        raise ConfigError("reps", f"must be at least 1, got {args.reps}")
    rows = []
    for b in batches:
        prods = products(b, args.reps, [(28, 120), (120, 80), (80, 28)])
        step = learning_step(b, args.reps)
        print(f"B = {b} runs, minibatch {MINIBATCH}, ms (median of {args.reps}):")
        for r in prods:
            torch_part = (f"; torch.bmm forward {r['torch_forward_ms']:.2f}, dx {r['torch_dx_ms']:.2f}, "
                          f"dw {r['torch_dw_ms']:.2f}" if "torch_dx_ms" in r else "")
            print(f"  {r['layer']}: forward {r['forward_ms']:.2f}, dx as autodiff {r['dx_autodiff_ms']:.2f}, "
                  f"on the transposed kernel {r['dx_transposed_given_ms']:.2f} (materialised in the program "
                  f"{r['dx_transposed_materialised_ms']:.2f}), dw {r['dw_autodiff_ms']:.2f}{torch_part}")
        print(f"  loss and gradients: nn.Dense + autodiff {step['autodiff']:.1f}, policies.mlp "
              f"{step['written_out']:.1f} (largest difference {step['max_abs_difference']:.1e})", flush=True)
        rows.append({"runs": b, "products": prods, "learning_step": step})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(jax.devices()[0].device_kind), "jax": jax.__version__, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
