"""VGG-16 for 32x32 images with 17 early exits, in flax (no PyTorch).

Backbone (the CIFAR form of VGG-16 with batch norm): 18 layers, numbered 1..18 in order::

    layer  1 conv1  (64)    layer  7 conv5  (256)   layer 13 conv10 (512)
    layer  2 conv2  (64)    layer  8 conv6  (256)   layer 14 pool4  -> 2x2
    layer  3 pool1  -> 16x16 layer 9 conv7  (256)   layer 15 conv11 (512)
    layer  4 conv3  (128)   layer 10 pool3  -> 4x4  layer 16 conv12 (512)
    layer  5 conv4  (128)   layer 11 conv8  (512)   layer 17 conv13 (512)
    layer  6 pool2  -> 8x8  layer 12 conv9  (512)   layer 18 pool5  -> 1x1

Each conv is 3x3, stride 1, 'SAME' padding, no bias, then batch norm and ReLU; each pool is a
2x2 max pool with stride 2. Channel counts are multiplied by ``width`` (at least 1 channel).

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
            h = nn.avg_pool(h, (f, f), (f, f))
        h = h.reshape(h.shape[0], -1)
        return nn.Dense(self.num_classes, name="dense")(h)


class VGG16EarlyExit(nn.Module):
    """VGG-16 (32x32 input) with side exits 1..16 and the main classifier as exit 17."""

    width: float = 1.0
    num_classes: int = 10

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
                h = nn.max_pool(h, (2, 2), (2, 2))
            else:
                n_conv += 1
                h = nn.Conv(channels(c, self.width), (3, 3), padding="SAME", use_bias=False,
                            name=f"conv{n_conv}")(h)
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


def make_model(width: float = 1.0, num_classes: int = 10) -> VGG16EarlyExit:
    return VGG16EarlyExit(width=check_width(width), num_classes=int(num_classes))


def init_variables(model: VGG16EarlyExit, key: jax.Array) -> dict:
    """Variables {'params', 'batch_stats'} of the backbone, all 16 side heads and the classifier."""
    x = jnp.zeros((1,) + IMAGE_SHAPE, jnp.float32)
    return dict(model.init(key, x, exit=None, train=False))


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
