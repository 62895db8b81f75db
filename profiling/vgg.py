"""VGG-16 for 32x32 images with 17 early exits, in flax (no PyTorch).

Backbone (the CIFAR form of VGG-16 with batch norm): 18 layers, numbered 1..18 in order::

    layer  1 conv1  (64)      layer  7 conv5  (256)   layer 13 conv10 (512)
    layer  2 conv2  (64)      layer  8 conv6  (256)   layer 14 pool4  -> 2x2
    layer  3 pool1  -> 16x16  layer  9 conv7  (256)   layer 15 conv11 (512)
    layer  4 conv3  (128)     layer 10 pool3  -> 4x4  layer 16 conv12 (512)
    layer  5 conv4  (128)     layer 11 conv8  (512)   layer 17 conv13 (512)
    layer  6 pool2  -> 8x8    layer 12 conv9  (512)   layer 18 pool5  -> 1x1

Each conv is 3x3, stride 1, 'SAME' padding, no bias (``Conv3x3``), then batch norm and ReLU;
each pool is a 2x2 max pool with stride 2 (``pool_2d``). Channel counts are multiplied by ``width`` (at least 1 channel).

Exit numbering (17 exits, exit 17 = the main branch, as in the paper):
- exit ``k`` for ``k = 1..16`` is a side classifier on the output of layer ``k``;
- exit ``17`` is the full network: all 18 layers, then the main classifier
  (flatten 1x1xC -> Dense(512*width) -> ReLU -> Dense(classes)).
Layers 17 (conv13) and 18 (pool5) carry no side exit: the main classifier follows them.

Exit head design (exits 1..16): average-pool the feature map to a grid of at most 4x4
(a map of 32x32 -> 8x8 pooling, 16x16 -> 4x4, 8x8 -> 2x2, 4x4 and smaller is kept as is),
flatten, one Dense(classes). A linear probe on a 4x4 grid keeps coarse spatial layout, which a
global average pool throws away, and costs almost nothing next to the backbone.

``model.apply(variables, x, exit=k)`` with a static ``k`` traces, and so computes, only layers
1..k (1..18 for ``k = 17``) and head ``k``: nothing beyond the exit. ``exit=None`` computes the
backbone once and returns the logits of all 17 exits, shape (batch, 17, classes); this is how the
variables are initialised and how the heads are trained and evaluated.
"""

from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from grle_jax.errors import ConfigError

N_EXITS = 17
MAIN_EXIT = 17
# ("conv", channels at width 1) or ("pool", None); index i is layer i + 1.
LAYERS: tuple[tuple[str, int | None], ...] = (
    ("conv", 64), ("conv", 64), ("pool", None),
    ("conv", 128), ("conv", 128), ("pool", None),
    ("conv", 256), ("conv", 256), ("conv", 256), ("pool", None),
    ("conv", 512), ("conv", 512), ("conv", 512), ("pool", None),
    ("conv", 512), ("conv", 512), ("conv", 512), ("pool", None),
)
HEAD_GRID = 4
IMAGE_SHAPE = (32, 32, 3)
# Fixed input normalisation applied by ``preprocess`` (uint8 images -> roughly zero mean, unit scale).
_MEAN, _STD = 0.5, 0.25


def check_exit(k, where: str = "exit") -> int:
    """Return ``k`` if it is an exit number 1..17, else raise ConfigError."""
    if isinstance(k, bool) or not isinstance(k, int) or not (1 <= k <= N_EXITS):
        raise ConfigError(where, f"exit numbers must lie in 1..{N_EXITS}, got {k!r}")
    return k


def check_width(width) -> float:
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not (0 < width <= 8):
        raise ConfigError("width", f"must be a number in (0, 8], got {width!r}")
    return float(width)


def channels(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


def layers_of_exit(k: int) -> int:
    """How many backbone layers exit ``k`` runs: ``k`` for a side exit, all 18 for exit 17."""
    check_exit(k)
    return len(LAYERS) if k == MAIN_EXIT else k


def convs_of_exit(k: int) -> int:
    """How many of the 13 convolutions exit ``k`` runs."""
    return sum(1 for kind, _ in LAYERS[: layers_of_exit(k)] if kind == "conv")


def preprocess(x_uint8: jax.Array) -> jax.Array:
    """uint8 images (B, 32, 32, 3) -> float32 network input."""
    return (x_uint8.astype(jnp.float32) / 255.0 - _MEAN) / _STD


def is_head(name: str) -> bool:
    """True for the parameter collection entries of the side exits 1..16."""
    return name.startswith("exit")


def pool_2d(h, f: int, how: str):
    """Non-overlapping f x f max or mean pooling of (B, H, W, C), H and W multiples of f.

    Written as a reshape and a reduction: the same values as ``nn.max_pool``/``nn.avg_pool`` with
    window = stride = f, but its gradient compiles several times faster on XLA:CPU than that of
    ``reduce_window`` (about 1 s less per pooling layer on a 2-core CPU).
    """
    b, hh, ww, c = h.shape
    h = h.reshape(b, hh // f, f, ww // f, f, c)
    return h.max(axis=(2, 4)) if how == "max" else h.mean(axis=(2, 4))


CONV_IMPLS = ("xla", "im2col")


def conv_impl_for(platform: str, choice: str = "auto") -> str:
    """The convolution implementation to use on a platform: 'auto' = im2col on CPU, xla elsewhere."""
    if choice == "auto":
        return "im2col" if platform == "cpu" else "xla"
    if choice not in CONV_IMPLS:
        raise ConfigError("conv", f"must be auto, xla or im2col, got {choice!r}")
    return choice


class Conv3x3(nn.Module):
    """3x3 convolution, stride 1, 'SAME' padding, no bias; parameter ``kernel`` (3, 3, C_in, C_out).

    ``impl='xla'`` is ``lax.conv_general_dilated`` (cuDNN on a GPU). ``impl='im2col'`` gathers the
    nine shifted copies of the padded input and multiplies by the kernel as one matrix: the same
    function and the same parameters, but on XLA:CPU many times faster on small maps (a 2x2x512
    layer at batch 16: 15 ms instead of 1.2 s on this project's 2-core CPU), and its gradient
    compiles faster.
    """

    features: int
    impl: str = "xla"

    @nn.compact
    def __call__(self, x):  # x: (B, H, W, C)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features))
        if self.impl == "xla":
            return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"))
        b, h, w, c = x.shape
        xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        patches = jnp.concatenate([xp[:, i:i + h, j:j + w, :] for i in range(3) for j in range(3)], axis=-1)
        return patches @ kernel.reshape(9 * c, self.features)  # (B, H, W, 9C) @ (9C, C_out)


class ExitHead(nn.Module):
    """Side classifier: average pool to at most HEAD_GRID x HEAD_GRID, flatten, Dense."""

    num_classes: int
    grid: int = HEAD_GRID

    @nn.compact
    def __call__(self, h):  # h: (B, H, W, C)
        size = h.shape[1]
        g = min(self.grid, size)
        f = size // g
        if f > 1:
            h = pool_2d(h, f, "mean")
        h = h.reshape(h.shape[0], -1)
        return nn.Dense(self.num_classes, name="dense")(h)


class VGG16EarlyExit(nn.Module):
    """VGG-16 (32x32 input) with side exits 1..16 and the main classifier as exit 17."""

    width: float = 1.0
    num_classes: int = 10
    conv: str = "xla"  # convolution implementation, see Conv3x3

    @nn.compact
    def __call__(self, x, exit: int | None = None, train: bool = False):
        """x: (B, 32, 32, 3) float. Returns (B, classes) for ``exit=k``, (B, 17, classes) for None."""
        if exit is not None:
            check_exit(exit)
        outs = []
        h = x
        n_conv = 0
        for layer, (kind, c) in enumerate(LAYERS, start=1):
            if kind == "pool":
                h = pool_2d(h, 2, "max")
            else:
                n_conv += 1
                h = Conv3x3(channels(c, self.width), self.conv, name=f"conv{n_conv}")(h)
                h = nn.BatchNorm(use_running_average=not train, momentum=0.9, name=f"bn{n_conv}")(h)
                h = nn.relu(h)
            if layer < MAIN_EXIT and (exit is None or exit == layer):
                logits = ExitHead(self.num_classes, name=f"exit{layer}")(h)
                if exit == layer:
                    return logits
                outs.append(logits)
        h = h.reshape(h.shape[0], -1)
        h = nn.relu(nn.Dense(channels(512, self.width), name="fc1")(h))
        logits = nn.Dense(self.num_classes, name="fc2")(h)
        if exit == MAIN_EXIT:
            return logits
        outs.append(logits)
        return jnp.stack(outs, axis=1)


def make_model(width: float = 1.0, num_classes: int = 10, conv: str = "xla") -> VGG16EarlyExit:
    if conv not in CONV_IMPLS:
        raise ConfigError("conv", f"must be one of {', '.join(CONV_IMPLS)}, got {conv!r}")
    return VGG16EarlyExit(width=check_width(width), num_classes=int(num_classes), conv=conv)


def init_variables(model: VGG16EarlyExit, seed: int = 0) -> dict:
    """Variables {'params', 'batch_stats'} of the backbone, all 16 side heads and the classifier.

    Shapes come from ``jax.eval_shape(model.init, ...)`` (nothing is compiled); values are drawn
    with numpy: conv kernels He-normal (std sqrt(2 / fan_in)), dense kernels LeCun-normal
    (std sqrt(1 / fan_in)), biases 0, batch-norm scale 1 and shift 0, running mean 0 and
    variance 1. (Compiling flax's own initialisers takes about a minute on a 2-core CPU.)
    """
    x = jax.ShapeDtypeStruct((1,) + IMAGE_SHAPE, jnp.float32)
    shapes = jax.eval_shape(partial(model.init, exit=None, train=False), jax.random.PRNGKey(0), x)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        names = [getattr(p, "key", str(p)) for p in path]
        last, module = names[-1], names[-2] if len(names) > 1 else ""
        shape, dtype = leaf.shape, leaf.dtype
        if last == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            gain = 2.0 if module.startswith("conv") else 1.0
            return jnp.asarray(rng.standard_normal(shape) * np.sqrt(gain / fan_in), dtype)
        if last in ("scale", "var"):
            return jnp.ones(shape, dtype)
        return jnp.zeros(shape, dtype)  # bias, mean

    return dict(jax.tree_util.tree_map_with_path(fill, dict(shapes)))


def exit_forward(model: VGG16EarlyExit, k: int):
    """A jitted inference function ``f(variables, x) -> logits`` that stops at exit ``k``."""
    check_exit(k)
    return jax.jit(partial(model.apply, exit=k, train=False))


def split_params(params: dict) -> tuple[dict, dict]:
    """(backbone + main classifier, side heads) of a params dict."""
    backbone = {n: v for n, v in params.items() if not is_head(n)}
    heads = {n: v for n, v in params.items() if is_head(n)}
    return backbone, heads


def count_params(tree) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(tree)))
