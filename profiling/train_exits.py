"""Test accuracy of every early exit of VGG-16: train the main branch, then the exit heads.

    python -m profiling.train_exits --dataset {cifar10,fashion-mnist,synthetic} [--data PATH]
        [--width 1] [--epochs 30] [--head-epochs 10] [--batch 128] [--limit N] [--test-limit N]
        [--lr 0.05] [--head-lr 0.001] [--augment] [--out runs/exits] [--resume]

Two phases, as in the paper:
1. the main branch (exit 17: backbone and main classifier) is trained alone with SGD (Nesterov
   momentum 0.9, weight decay 5e-4 on kernels, cosine-decayed learning rate ``--lr``), batch
   norm in training mode;
2. the backbone and main classifier are frozen (batch norm uses its running statistics) and the
   16 side heads are trained together with Adam (cosine-decayed ``--head-lr``) on the sum of
   their cross-entropies. Gradients flow to the heads only.
Each epoch is one compiled ``lax.scan`` over the batches of a host-drawn permutation (the last
incomplete batch is dropped); the training set lives on the device as uint8. ``--augment``
adds random horizontal flips and 4-pixel-padded random crops (recommended for CIFAR-10).
``--conv auto`` uses the im2col convolution on a CPU and XLA's (cuDNN) on a GPU; both compute
the same function with the same parameters, so a checkpoint serves either.

Written to ``--out``: ``checkpoints/main`` and ``checkpoints/heads`` (orbax: params, batch
statistics, optimiser state and epoch, after every epoch), ``run.json`` (the settings, checked
on ``--resume``), ``history.json`` (loss and training accuracy per epoch), ``accuracy.json``
(test accuracy of exits 1..17, the input of ``profiling.build_profile``) and ``accuracy.png``.
``--resume`` continues from the last saved epoch; without it an existing checkpoint in
``--out`` is an error, so a run is never overwritten by accident.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
import optax

from grle_jax import cli
from grle_jax.errors import ConfigError

from . import _cli
from .datasets import DATASETS, load
from .vgg import MAIN_EXIT, N_EXITS, conv_impl_for, init_variables, make_model, preprocess, split_params

FORMAT = "grle_jax.exit_accuracy/1"
WEIGHT_DECAY = 5e-4
# Settings that must match between a checkpoint and a resumed run.
RESUME_KEYS = ("dataset", "width", "num_classes", "batch", "limit", "augment", "seed")


# ---------------------------------------------------------------------------------------------
# Compiled pieces


def augment_batch(x, flip, shift):
    """x: (B, 32, 32, 3) float; flip: (B,) bool; shift: (B, 2) int in 0..8 (crop of the 4-padded image)."""
    x = jnp.where(flip[:, None, None, None], x[:, :, ::-1, :], x)
    xp = jnp.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))
    crop = lambda img, s: jax.lax.dynamic_slice(img, (s[0], s[1], 0), (32, 32, img.shape[-1]))
    return jax.vmap(crop)(xp, shift)


@lru_cache(maxsize=None)
def make_epoch_fn(width: float, num_classes: int, conv: str, phase: str, augment: bool):
    """``epoch(state, x_all, y_all, perm, flip, shift, lrs) -> (state, losses, accs)``, one compiled scan.

    state: dict(params, batch_stats, opt_state); perm: (steps, batch) int32 indices into x_all;
    flip: (steps, batch) bool; shift: (steps, batch, 2) int32; lrs: (steps,) float32 learning rate
    of each step (the schedule is computed on the host, so one compiled program serves any number
    of epochs). Phase 'main' trains backbone + classifier at exit 17; phase 'heads' trains exits
    1..16. Cached per (width, classes, conv, phase, augment).
    """
    model = make_model(width, num_classes, conv)
    tx = make_optimizer(phase)
    n_heads = N_EXITS - 1

    def loss_main(trainable, frozen, batch_stats, x, y):
        logits, upd = model.apply({"params": trainable, "batch_stats": batch_stats}, x, exit=MAIN_EXIT,
                                  train=True, mutable=["batch_stats"])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        acc = (logits.argmax(-1) == y).mean()
        return loss, (upd["batch_stats"], acc)

    def loss_heads(trainable, frozen, batch_stats, x, y):
        logits = model.apply({"params": {**frozen, **trainable}, "batch_stats": batch_stats}, x, exit=None,
                             train=False)[:, :n_heads]  # (B, 16, classes)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y[:, None]).mean(axis=0)  # (16,)
        acc = (logits.argmax(-1) == y[:, None]).mean(axis=0)
        return ce.sum(), (batch_stats, acc)

    grad_fn = jax.value_and_grad(loss_main if phase == "main" else loss_heads, has_aux=True)

    @jax.jit
    def epoch(state, x_all, y_all, perm, flip, shift, lrs):
        backbone, heads = split_params(state["params"])
        trainable, frozen = (backbone, heads) if phase == "main" else (heads, backbone)

        def step(carry, inp):
            trainable, batch_stats, opt_state = carry
            idx, fl, sh, lr = inp
            x = preprocess(x_all[idx])
            if augment:
                x = augment_batch(x, fl, sh)
            (loss, (batch_stats, acc)), g = grad_fn(trainable, frozen, batch_stats, x, y_all[idx])
            opt_state.hyperparams["learning_rate"] = lr
            updates, opt_state = tx.update(g, opt_state, trainable)
            trainable = optax.apply_updates(trainable, updates)
            return (trainable, batch_stats, opt_state), (loss, acc)

        carry = (trainable, state["batch_stats"], state["opt_state"])
        (trainable, batch_stats, opt_state), (losses, accs) = jax.lax.scan(step, carry, (perm, flip, shift, lrs))
        params = {**frozen, **trainable}
        return {"params": params, "batch_stats": batch_stats, "opt_state": opt_state}, losses, accs

    return epoch


@lru_cache(maxsize=None)
def make_eval_fn(width: float, num_classes: int, conv: str):
    """``correct(variables, x, y, mask) -> (17,)`` correct counts per exit; x: (nb, B, 32, 32, 3) uint8."""
    model = make_model(width, num_classes, conv)

    @jax.jit
    def correct(variables, x, y, mask):
        def one(inp):
            xb, yb, mb = inp
            logits = model.apply(variables, preprocess(xb), exit=None, train=False)  # (B, 17, C)
            return ((logits.argmax(-1) == yb[:, None]) & mb[:, None]).sum(axis=0)

        return jax.lax.map(one, (x, y, mask)).sum(axis=0)

    return correct


def evaluate(model, variables, x, y, batch: int = 500) -> np.ndarray:
    """Test accuracy of exits 1..17 (float64 array of 17)."""
    n = len(y)
    b = max(1, min(batch, n))
    nb = -(-n // b)
    pad = nb * b - n
    xp = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]).reshape((nb, b) + x.shape[1:])
    yp = np.concatenate([y, np.zeros(pad, y.dtype)]).reshape(nb, b)
    mp = np.concatenate([np.ones(n, bool), np.zeros(pad, bool)]).reshape(nb, b)
    counts = make_eval_fn(model.width, model.num_classes, model.conv)(variables, xp, yp, mp)
    return np.asarray(counts, np.float64) / n


# ---------------------------------------------------------------------------------------------
# Optimisers, host randomness, checkpoints


def kernel_mask(params):
    return jax.tree_util.tree_map_with_path(lambda p, _: getattr(p[-1], "key", "") == "kernel", params)


def make_optimizer(phase: str):
    """Main branch: SGD, Nesterov momentum 0.9, weight decay on kernels. Heads: Adam. The learning
    rate is an injected hyperparameter, set at every step from the host-computed schedule."""
    if phase == "main":
        def factory(learning_rate):
            return optax.chain(optax.add_decayed_weights(WEIGHT_DECAY, mask=kernel_mask),
                               optax.sgd(learning_rate, momentum=0.9, nesterov=True))
    else:
        def factory(learning_rate):
            return optax.adam(learning_rate)
    return optax.inject_hyperparams(factory)(learning_rate=0.0)


def cosine_lr(base: float, step0: int, steps: int, total: int) -> np.ndarray:
    """Learning rates of steps step0 .. step0 + steps - 1 of a cosine decay from ``base`` to 0 over ``total``."""
    t = np.arange(step0, step0 + steps, dtype=np.float64) / max(1, total)
    return (base * 0.5 * (1.0 + np.cos(np.pi * np.minimum(t, 1.0)))).astype(np.float32)


def epoch_plan(n: int, batch: int, seed: int, phase: str, epoch: int):
    """Permutation (steps, batch), flips (steps, batch) and crop shifts (steps, batch, 2) of one
    epoch, drawn with numpy from (seed, phase, epoch) so a resumed run draws the same ones."""
    rng = np.random.default_rng([seed, 0 if phase == "main" else 1, epoch])
    steps = n // batch
    perm = rng.permutation(n)[: steps * batch].reshape(steps, batch).astype(np.int32)
    flip = rng.random((steps, batch)) < 0.5
    shift = rng.integers(0, 9, size=(steps, batch, 2)).astype(np.int32)
    return perm, flip, shift


def _manager(path: str):
    import orbax.checkpoint as ocp

    opts = ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False, create=True)
    return ocp.CheckpointManager(os.path.abspath(path), options=opts)


def _latest_step(path: str) -> int | None:
    if not os.path.isdir(path):
        return None
    steps = [int(n) for n in os.listdir(path) if n.isdigit() and os.path.isdir(os.path.join(path, n))]
    return max(steps) if steps else None


def save_checkpoint(path: str, step: int, state: dict) -> None:
    import orbax.checkpoint as ocp

    mgr = _manager(path)
    tree = {**state, "epoch": np.asarray(step, np.int32)}
    mgr.save(step, args=ocp.args.StandardSave(tree), force=True)
    mgr.wait_until_finished()
    mgr.close()


def restore_checkpoint(path: str, target: dict) -> tuple[dict, int]:
    import orbax.checkpoint as ocp

    mgr = _manager(path)
    step = mgr.latest_step()
    tree = {**target, "epoch": np.asarray(0, np.int32)}
    try:
        got = mgr.restore(step, args=ocp.args.StandardRestore(tree))
    except Exception as err:  # shape or structure mismatch: a checkpoint of another network
        raise ConfigError("resume", f"cannot restore {path} step {step} ({type(err).__name__}: "
                                    f"{str(err).splitlines()[0] if str(err) else ''})") from None
    finally:
        mgr.close()
    epoch = int(got.pop("epoch"))
    return got, epoch


# ---------------------------------------------------------------------------------------------
# The run


def train(dataset: str, data: str | None = None, width: float = 1.0, epochs: int = 30, head_epochs: int = 10,
          batch: int = 128, limit: int | None = None, test_limit: int | None = None, lr: float = 0.05,
          head_lr: float = 1e-3, augment: bool = False, out: str = "runs/exits", resume: bool = False,
          seed: int = 0, conv: str = "auto", log=print) -> dict:
    """Run both phases and return the accuracy record (also written to ``out``)."""
    if dataset not in DATASETS:
        raise ConfigError("dataset", f"must be one of {', '.join(DATASETS)}, got {dataset!r}")
    _cli.positive_int(epochs, "epochs", 0)
    _cli.positive_int(head_epochs, "head-epochs", 0)
    _cli.positive_int(batch, "batch")
    for field, v in (("lr", lr), ("head-lr", head_lr)):
        if not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0):
            raise ConfigError(field, f"must be a positive number, got {v!r}")
    dev = jax.devices()[0]
    impl = conv_impl_for(dev.platform, conv)
    make_model(width)  # checks the width before the data set is read
    ds = load(dataset, data, limit, test_limit, seed)
    model = make_model(width, ds.num_classes, impl)
    n = len(ds.y_train)
    if batch > n:
        log(f"note: --batch {batch} exceeds the {n} training images; using batch {n}")
        batch = n
    settings = {"dataset": dataset, "data": data, "source": ds.source, "width": float(width),
                "num_classes": ds.num_classes, "epochs": epochs, "head_epochs": head_epochs, "batch": batch,
                "limit": limit, "test_limit": test_limit, "lr": lr, "head_lr": head_lr, "augment": bool(augment),
                "seed": seed, "weight_decay": WEIGHT_DECAY, "conv": model.conv}
    ck_main, ck_heads = os.path.join(out, "checkpoints", "main"), os.path.join(out, "checkpoints", "heads")
    run_path, hist_path = os.path.join(out, "run.json"), os.path.join(out, "history.json")
    have = _latest_step(ck_main) is not None or _latest_step(ck_heads) is not None
    history = {"main": [], "heads": []}
    if have and not resume:
        raise ConfigError("out", f"{out} already holds a checkpoint: pass --resume to continue it, "
                                 "or choose another --out")
    if resume and have:
        old = cli.read_json(run_path, "resume")
        for k in RESUME_KEYS:
            if old.get(k) != settings[k]:
                raise ConfigError("resume", f"the checkpoint in {out} was made with {k} = {old.get(k)!r}, "
                                            f"not {settings[k]!r}")
        if os.path.isfile(hist_path):
            history = cli.read_json(hist_path, "resume")
    elif resume:
        log(f"note: no checkpoint in {out}; starting afresh")
    else:
        for p in (ck_main, ck_heads):
            shutil.rmtree(p, ignore_errors=True)
    _cli.write_json(run_path, settings)

    log(f"{ds.name}: {n} training, {len(ds.y_test)} test images; width {width}; device {dev.device_kind}")
    x_all, y_all = jax.device_put(ds.x_train, dev), jax.device_put(ds.y_train, dev)
    steps = n // batch
    variables = init_variables(model, seed)
    params, batch_stats = variables["params"], variables["batch_stats"]
    t_start = time.perf_counter()

    # Phase 1: main branch.
    backbone, _ = split_params(params)
    state = {"params": params, "batch_stats": batch_stats, "opt_state": make_optimizer("main").init(backbone)}
    done_main = 0
    head_step = _latest_step(ck_heads) if resume else None
    if head_step is None and resume and _latest_step(ck_main) is not None:
        state, done_main = restore_checkpoint(ck_main, state)
        log(f"resumed main branch after epoch {done_main}")
    if head_step is None and done_main < epochs:
        epoch_fn = make_epoch_fn(model.width, model.num_classes, model.conv, "main", augment)
        state = jax.device_put(state, dev)  # committed like the epoch's outputs: one compilation
        for e in range(done_main + 1, epochs + 1):
            t0 = time.perf_counter()
            lrs = cosine_lr(lr, (e - 1) * steps, steps, epochs * steps)
            state, losses, accs = epoch_fn(state, x_all, y_all, *epoch_plan(n, batch, seed, "main", e), lrs)
            loss, acc = float(losses.mean()), float(accs.mean())
            history["main"] = [h for h in history["main"] if h["epoch"] < e]
            history["main"].append({"epoch": e, "loss": loss, "train_acc": acc, "s": time.perf_counter() - t0})
            save_checkpoint(ck_main, e, state)
            _cli.write_json(hist_path, history)
            log(f"main  epoch {e}/{epochs}: loss {loss:.4f}  train acc {acc:.4f}  ({time.perf_counter() - t0:.1f} s)")

    # Phase 2: side heads on the frozen backbone.
    _, heads = split_params(state["params"])
    state = {"params": state["params"], "batch_stats": state["batch_stats"],
             "opt_state": make_optimizer("heads").init(heads)}
    done_heads = 0
    if head_step is not None:
        state, done_heads = restore_checkpoint(ck_heads, state)
        log(f"resumed exit heads after epoch {done_heads}")
        main_done = max([h["epoch"] for h in history.get("main", [])], default=epochs)
        if epochs > main_done:
            log(f"note: the heads phase had started; the main branch stays at {main_done} epochs")
    if done_heads < head_epochs:
        epoch_fn = make_epoch_fn(model.width, model.num_classes, model.conv, "heads", False)
        state = jax.device_put(state, dev)
        for e in range(done_heads + 1, head_epochs + 1):
            t0 = time.perf_counter()
            lrs = cosine_lr(head_lr, (e - 1) * steps, steps, head_epochs * steps)
            state, losses, accs = epoch_fn(state, x_all, y_all, *epoch_plan(n, batch, seed, "heads", e), lrs)
            loss, acc = float(losses.mean()), np.asarray(accs).mean(axis=0)
            history["heads"] = [h for h in history["heads"] if h["epoch"] < e]
            history["heads"].append({"epoch": e, "loss": loss, "train_acc": acc.tolist(),
                                     "s": time.perf_counter() - t0})
            save_checkpoint(ck_heads, e, state)
            _cli.write_json(hist_path, history)
            log(f"heads epoch {e}/{head_epochs}: summed loss {loss:.4f}  train acc exit 1 {acc[0]:.3f} .. "
                f"exit 16 {acc[-1]:.3f}  ({time.perf_counter() - t0:.1f} s)")
    train_s = time.perf_counter() - t_start

    acc = evaluate(model, {"params": state["params"], "batch_stats": state["batch_stats"]}, ds.x_test, ds.y_test)
    record = {
        "format": FORMAT,
        "dataset": dataset,
        "exits": list(range(1, N_EXITS + 1)),
        "acc": [round(float(a), 6) for a in acc],
        "n_train": n,
        "n_test": int(len(ds.y_test)),
        "settings": settings,
        "jax_version": jax.__version__,
        "device": str(dev.device_kind),
        "train_s_this_run": round(train_s, 2),
    }
    _cli.write_json(os.path.join(out, "accuracy.json"), record)
    plot(record, os.path.join(out, "accuracy.png"))
    log(format_table(record))
    return record


def format_table(record: dict) -> str:
    lines = [f"test accuracy per exit ({record['dataset']}, {record['n_test']} test images):", "  exit  accuracy"]
    for k, a in zip(record["exits"], record["acc"]):
        lines.append(f"  {k:4d}  {a:.4f}")
    return "\n".join(lines)


def plot(record: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(record["exits"], record["acc"], marker="o")
    ax.set_xlabel("exit")
    ax.set_ylabel("test accuracy")
    ax.set_xticks(record["exits"])
    ax.set_title(f"VGG-16 early exits on {record['dataset']} (width {record['settings']['width']})")
    ax.grid(alpha=0.3)
    _cli.save_figure(fig, path)
    plt.close(fig)


def _main(argv) -> None:
    p = _cli.Parser(prog="python -m profiling.train_exits", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, help="cifar10, fashion-mnist or synthetic")
    p.add_argument("--data", default=None, help="data directory (cifar10: required; fashion-mnist: "
                                                "default /usr/share/datasets/fashion-mnist)")
    p.add_argument("--width", type=float, default=1.0, help="channel width multiplier (1 = VGG-16)")
    p.add_argument("--epochs", type=int, default=30, help="epochs of the main branch")
    p.add_argument("--head-epochs", type=int, default=10, help="epochs of the exit heads")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--limit", type=int, default=None, help="use the first N training images")
    p.add_argument("--test-limit", type=int, default=None, help="use the first N test images")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate of the main branch")
    p.add_argument("--head-lr", type=float, default=1e-3, help="Adam learning rate of the exit heads")
    p.add_argument("--augment", action="store_true", help="random flips and crops (main branch)")
    p.add_argument("--out", default="runs/exits", help="output directory")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--conv", default="auto", help="convolution implementation: auto (im2col on CPU, "
                                                  "xla elsewhere), xla or im2col")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    _cli.check_output(a.out, "out", is_dir=True)  # before any work (issue 15)
    train(a.dataset, a.data, a.width, a.epochs, a.head_epochs, a.batch, a.limit, a.test_limit, a.lr, a.head_lr,
          a.augment, a.out, a.resume, a.seed, a.conv, log=lambda s: print(s, flush=True))


def main(argv=None) -> int:
    return _cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
