"""Image data sets for the exit-accuracy stage: CIFAR-10, Fashion-MNIST and a synthetic set.

Every loader returns a ``Dataset`` of uint8 images (N, 32, 32, 3) and int32 labels (N,).

- ``cifar10``: read from a directory the user gives (``--data``): the directory itself, or its
  ``cifar-10-batches-bin`` / ``cifar-10-batches-py`` subdirectory (the extracted archives).
  * Binary version: ``data_batch_1.bin`` .. ``data_batch_5.bin`` and ``test_batch.bin``, records
    of 1 label byte + 3072 pixel bytes (1024 red, 1024 green, 1024 blue, rows of 32).
  * Python version: the pickles ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``, each a
    dict with ``data`` (10000 x 3072 uint8) and ``labels``. They are read by ``safe_unpickle``, a
    RESTRICTED unpickler: never a bare ``pickle.load`` of a user's file, which would run any code
    the file names. It admits plain containers, bytes, str and numbers, and numeric numpy arrays,
    which it rebuilds itself from their raw bytes (no numpy function is called by the pickle);
    any other global (``os.system``, ``builtins.eval``, ...) is refused before it is called.
  Batches present among 1..5 are used (at least one), ``test_batch`` is required.
- ``fashion-mnist``: the idx files of Debian's ``dataset-fashion-mnist`` package, default
  directory ``/usr/share/datasets/fashion-mnist`` (``train-images-idx3-ubyte.gz``,
  ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``;
  plain uncompressed files are accepted too). 28x28 grey, zero-padded by 2 pixels on each side to
  32x32 and repeated to 3 channels.
- ``synthetic``: 10 classes, each a fixed random template plus noise (seeded); learnable in
  seconds. For tests and smoke runs only.

Bad input (missing directory or file, wrong size, wrong magic number, refused pickle) raises
``ConfigError('data', why)``.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
from dataclasses import dataclass

import numpy as np

from grle_jax.errors import ConfigError

DATASETS = ("cifar10", "fashion-mnist", "synthetic")
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
CIFAR10_RECORD = 1 + 32 * 32 * 3
CIFAR10_CLASSES = 10


@dataclass
class Dataset:
    name: str
    x_train: np.ndarray  # (N, 32, 32, 3) uint8
    y_train: np.ndarray  # (N,) int32
    x_test: np.ndarray  # (N_test, 32, 32, 3) uint8
    y_test: np.ndarray  # (N_test,) int32
    num_classes: int = 10
    source: str = ""


def load(name: str, path: str | None = None, limit: int | None = None,
         test_limit: int | None = None, seed: int = 0) -> Dataset:
    """Load data set ``name``; keep the first ``limit`` training and ``test_limit`` test images."""
    for field, v in (("limit", limit), ("test-limit", test_limit)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ConfigError(field, f"must be a positive integer, got {v!r}")
    if name == "cifar10":
        if not path:
            raise ConfigError("data", "cifar10 needs --data DIR (the extracted CIFAR-10 binary or python version)")
        ds = load_cifar10(path, limit)
    elif name == "fashion-mnist":
        ds = load_fashion_mnist(path or FASHION_MNIST_DIR)
    elif name == "synthetic":
        ds = synthetic(n_train=limit or 512, n_test=test_limit or 256, seed=seed)
    else:
        raise ConfigError("dataset", f"must be one of {', '.join(DATASETS)}, got {name!r}")
    if limit is not None:
        ds.x_train, ds.y_train = ds.x_train[:limit], ds.y_train[:limit]
    if test_limit is not None:
        ds.x_test, ds.y_test = ds.x_test[:test_limit], ds.y_test[:test_limit]
    return ds


# ---------------------------------------------------------------------------------------------
# CIFAR-10


def _cifar_dir(path: str) -> tuple[str, str]:
    """(directory, 'bin' or 'py') holding the CIFAR-10 batches under ``path``."""
    if not os.path.exists(path):
        raise ConfigError("data", f"no such directory: {path}")
    if not os.path.isdir(path):
        raise ConfigError("data", f"{path} is not a directory (give the extracted CIFAR-10 folder)")
    for d in (path, os.path.join(path, "cifar-10-batches-bin"), os.path.join(path, "cifar-10-batches-py")):
        if os.path.isfile(os.path.join(d, "test_batch.bin")):
            return d, "bin"
        if os.path.isfile(os.path.join(d, "test_batch")):
            return d, "py"
    raise ConfigError("data", f"{path}: no CIFAR-10 batches found (expected test_batch.bin and data_batch_1.bin .. "
                              "data_batch_5.bin, or the python version test_batch and data_batch_1 .. data_batch_5)")


def load_cifar10(path: str, limit: int | None = None) -> Dataset:
    d, fmt = _cifar_dir(path)
    suffix = ".bin" if fmt == "bin" else ""
    reader = read_cifar10_bin if fmt == "bin" else read_cifar10_py
    train_files = [os.path.join(d, f"data_batch_{i}{suffix}") for i in range(1, 6)]
    train_files = [f for f in train_files if os.path.isfile(f)]
    if not train_files:
        raise ConfigError("data", f"{d}: test_batch{suffix} found but no data_batch_1{suffix} .. data_batch_5{suffix}")
    xs, ys, n = [], [], 0
    for f in train_files:
        x, y = reader(f)
        xs.append(x)
        ys.append(y)
        n += len(y)
        if limit is not None and n >= limit:
            break
    x_test, y_test = reader(os.path.join(d, f"test_batch{suffix}"))
    return Dataset("cifar10", np.concatenate(xs), np.concatenate(ys), x_test, y_test, CIFAR10_CLASSES,
                   source=f"{d} ({'binary' if fmt == 'bin' else 'python'} version)")


def _check_labels(y: np.ndarray, where: str, classes: int) -> np.ndarray:
    if y.size and (y.min() < 0 or y.max() >= classes):
        raise ConfigError("data", f"{where}: labels must lie in 0..{classes - 1}, got {int(y.min())}..{int(y.max())}")
    return y.astype(np.int32)


def _planes_to_images(flat: np.ndarray) -> np.ndarray:
    """(N, 3072) channel-planar rows -> (N, 32, 32, 3)."""
    return np.ascontiguousarray(flat.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def read_cifar10_bin(path: str) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch: records of 1 label byte + 3072 pixel bytes."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise ConfigError("data", f"cannot read {path} ({err.strerror})") from None
    if not raw or len(raw) % CIFAR10_RECORD:
        raise ConfigError("data", f"{path}: not a CIFAR-10 binary batch (size {len(raw)} is not a positive "
                                  f"multiple of {CIFAR10_RECORD} bytes)")
    rec = np.frombuffer(raw, np.uint8).reshape(-1, CIFAR10_RECORD)
    y = _check_labels(rec[:, 0].astype(np.int64), path, CIFAR10_CLASSES)
    return _planes_to_images(rec[:, 1:]), y


CIFAR10_KEYS = ("batch_label", "labels", "data", "filenames")


def read_cifar10_py(path: str) -> tuple[np.ndarray, np.ndarray]:
    """One python batch, through ``safe_unpickle``: a dict of CIFAR-10's keys only, ``data`` one
    bytes/array blob (or rows of ints), ``labels`` a flat list of ints."""
    try:
        size = os.path.getsize(path)
        if size > MAX_PICKLE_BYTES:
            raise ConfigError("data", f"{path}: {size} bytes, more than a CIFAR-10 batch can be "
                                      f"({MAX_PICKLE_BYTES} at most)")
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise ConfigError("data", f"cannot read {path} ({err.strerror})") from None
    obj = safe_unpickle(raw, where=path)
    if not isinstance(obj, dict):
        raise ConfigError("data", f"{path}: not a CIFAR-10 python batch (a {type(obj).__name__}, not a dict)")
    obj = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    unknown = [k for k in obj if k not in CIFAR10_KEYS]
    if unknown:
        raise ConfigError("data", f"{path}: not a CIFAR-10 python batch (key {unknown[0]!r}; a batch holds "
                                  f"{', '.join(CIFAR10_KEYS)})")
    if "data" not in obj or "labels" not in obj:
        raise ConfigError("data", f"{path}: not a CIFAR-10 python batch (no 'data' and 'labels' keys)")
    data, labels = obj["data"], obj["labels"]
    try:
        if isinstance(data, (bytes, bytearray)):
            data = np.frombuffer(data, np.uint8)
        data = np.asarray(data)
        if data.dtype.kind not in "ui":
            raise ValueError(f"dtype {data.dtype}")
        if data.size and (data.min() < 0 or data.max() > 255):
            raise ValueError("pixel values outside 0..255")
        data = data.astype(np.uint8).reshape(-1, 3072)
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (ValueError, TypeError, OverflowError) as err:
        raise ConfigError("data", f"{path}: malformed CIFAR-10 python batch ({err})") from None
    if len(y) != len(data):
        raise ConfigError("data", f"{path}: {len(data)} images but {len(y)} labels")
    return _planes_to_images(data), _check_labels(y, path, CIFAR10_CLASSES)


# --- the restricted unpickler ------------------------------------------------------------------

_NUMERIC_DTYPES = {"b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8",
                   "bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
                   "float16", "float32", "float64"}
_MAX_ARRAY_BYTES = 1 << 31


def _text(v) -> str:
    return v.decode("latin1") if isinstance(v, (bytes, bytearray)) else str(v)


class _Refused(Exception):
    pass


class _Shape(_Refused):
    """A shape no CIFAR-10 batch has: shared references, deep nesting, too many objects."""


class _NDArrayClass:
    """Stands for ``numpy.ndarray`` inside a pickle; only ever used as a marker."""


class _DType:
    """Stands for ``numpy.dtype(name, align, copy)``; admits numeric dtypes only."""

    def __init__(self, name, align=False, copy=True):
        name = _text(name)
        if name not in _NUMERIC_DTYPES:
            raise _Refused(f"numpy dtype {name!r} (only numeric dtypes are admitted)")
        self.name, self.order = name, "="

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) >= 2 and _text(state[1]) in ("<", ">", "|", "="):
            self.order = _text(state[1])

    def numpy(self) -> np.dtype:
        dt = np.dtype(self.name)
        return dt.newbyteorder(self.order) if self.order in "<>" else dt


def _shape(v) -> tuple[int, ...]:
    if not isinstance(v, tuple) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in v):
        raise _Refused(f"array shape {v!r}")
    return v


def _array_from_bytes(raw, dtype, shape, order="C") -> np.ndarray:
    if not isinstance(dtype, _DType):
        raise _Refused("array without an admitted numeric dtype")
    if not isinstance(raw, (bytes, bytearray)):
        raise _Refused("array whose data is not raw bytes (object arrays are refused)")
    dt = dtype.numpy()
    shape = _shape(tuple(shape))
    n = int(np.prod(shape, dtype=np.int64))
    if n * dt.itemsize != len(raw) or len(raw) > _MAX_ARRAY_BYTES:
        raise _Refused(f"array of shape {shape} with {len(raw)} data bytes")
    return np.frombuffer(bytes(raw), dt).reshape(shape, order="F" if order == "F" else "C").copy()


class _Array:
    """Stands for ``numpy.core.multiarray._reconstruct(ndarray, shape, dtype)``; filled by BUILD."""

    def __init__(self, cls=None, shape=None, typecode=None):
        if cls is not _NDArrayClass:
            raise _Refused("_reconstruct of a class other than numpy.ndarray")
        self.value = None

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Refused("array state")
        shape, dtype, fortran, raw = state[-4:]
        self.value = _array_from_bytes(raw, dtype, shape, "F" if fortran else "C")


def _frombuffer(buf, dtype, shape, order="C"):
    """Stands for ``numpy._core.numeric._frombuffer`` (pickle protocol 5 arrays)."""
    return _array_from_bytes(buf, dtype, shape, _text(order))


def _scalar(dtype, raw=None):
    """Stands for ``numpy.core.multiarray.scalar``: a numpy number, returned as a Python number."""
    return _array_from_bytes(raw, dtype, ()).item()


def _codecs_encode(text, encoding="utf-8"):
    """Stands for ``_codecs.encode``: how Python 3 writes bytes at pickle protocol <= 2."""
    if not isinstance(text, str) or _text(encoding).lower().replace("-", "") not in ("latin1", "utf8"):
        raise _Refused("_codecs.encode of something other than text to latin1/utf-8")
    return text.encode(_text(encoding))


_ADMITTED = {}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ADMITTED[(_mod, "_reconstruct")] = _Array
    _ADMITTED[(_mod, "scalar")] = _scalar
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _ADMITTED[(_mod, "_frombuffer")] = _frombuffer
_ADMITTED[("numpy", "ndarray")] = _NDArrayClass
_ADMITTED[("numpy", "dtype")] = _DType
_ADMITTED[("_codecs", "encode")] = _codecs_encode


MAX_PICKLE_BYTES = 256 << 20  # a CIFAR-10 python batch is 31 MB
MAX_MARK_DEPTH = 32  # nested MARKs (tuples, lists, dicts being built inside one another)
MAX_STACK = 8192  # objects on the unpickler's stack at once (a batch of APPENDS holds up to 1000)
_SHAREABLE = (str, bytes, int, float, complex, bool, type(None), _DType, type, type(len), type(_scalar))


def _shared(obj) -> bool:
    """A reference to ``obj`` made twice would let a small pickle stand for an exponential object
    (``l = [b'x']; for _ in range(60): l = [l, l]``): only immutable scalars, dtypes, the admitted
    globals and empty tuples may be referenced more than once."""
    return not (isinstance(obj, _SHAREABLE) or (isinstance(obj, tuple) and not obj)
                or (callable(obj) and not isinstance(obj, _Array)))


class _RestrictedUnpickler(pickle._Unpickler):
    """Python's own unpickler (the pure-Python one, so each opcode can be checked) admitting only
    the globals in ``_ADMITTED``, refusing shared references to containers (memo GETs and DUP),
    deep nesting and a stack beyond ``MAX_STACK``, each before the object is built."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module, name):
        try:
            return _ADMITTED[(module, name)]
        except KeyError:
            raise _Refused(f"global {module}.{name}") from None

    def persistent_load(self, pid):
        raise _Refused("persistent ids")

    def _check_top(self, what: str):
        if self.stack and _shared(self.stack[-1]):
            raise _Shape(f"a shared reference ({what} of a {type(self.stack[-1]).__name__}): a CIFAR-10 "
                           "batch holds every object once")

    def _check_size(self):
        if len(self.metastack) > MAX_MARK_DEPTH:
            raise _Shape(f"nesting deeper than {MAX_MARK_DEPTH}")
        if len(self.stack) > MAX_STACK:
            raise _Shape(f"more than {MAX_STACK} objects on the stack (nesting too deep)")


def _checked(op: bytes, check: str):
    original = pickle._Unpickler.dispatch[op[0]]

    def load(self):
        original(self)
        if check == "shared":
            self._check_top(f"opcode {op!r}")
        else:
            self._check_size()

    _RestrictedUnpickler.dispatch[op[0]] = load


for _op in (pickle.GET, pickle.BINGET, pickle.LONG_BINGET, pickle.DUP):
    _checked(_op, "shared")
for _op in (pickle.MARK, pickle.EMPTY_LIST, pickle.EMPTY_DICT, pickle.EMPTY_SET, pickle.EMPTY_TUPLE, pickle.LIST,
            pickle.DICT, pickle.TUPLE, pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3, pickle.FROZENSET):
    _checked(_op, "size")


def _unwrap(obj, depth=0):
    """Replace array stand-ins by numpy arrays, recursively through plain containers."""
    if depth > 100:
        raise _Shape("nesting deeper than 100")
    if isinstance(obj, _Array):
        if obj.value is None:
            raise _Refused("array without data")
        return obj.value
    if isinstance(obj, dict):
        return {_unwrap(k, depth + 1): _unwrap(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unwrap(v, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_unwrap(v, depth + 1) for v in obj)
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes, bytearray, np.ndarray, set, frozenset)):
        return obj
    raise _Refused(f"object of type {type(obj).__name__}")


def safe_unpickle(raw: bytes, where: str = "pickle"):
    """Unpickle ``raw`` admitting only plain containers, bytes, str, numbers and numeric arrays.

    Raises ``ConfigError('data', ...)`` for anything else, before calling it.
    """
    if len(raw) > MAX_PICKLE_BYTES:
        raise ConfigError("data", f"{where}: {len(raw)} bytes, more than a CIFAR-10 batch can be "
                                  f"({MAX_PICKLE_BYTES} at most)")
    try:
        obj = _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
        return _unwrap(obj)
    except _Shape as err:
        raise ConfigError("data", f"{where}: refused to unpickle {err} (a CIFAR-10 batch is a dict of one data "
                                  "blob and flat lists)") from None
    except _Refused as err:
        raise ConfigError("data", f"{where}: refused to unpickle {err} (only plain containers, bytes, str, "
                                  "numbers and numeric arrays are admitted)") from None
    except ConfigError:
        raise
    except Exception as err:  # any malformed pickle: truncated, bad opcode, wrong arguments...
        raise ConfigError("data", f"{where}: not a readable pickle ({type(err).__name__}: {err})") from None


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST

_FASHION_FILES = {
    "x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte",
}


def _find_idx(d: str, stem: str) -> str:
    for name in (stem + ".gz", stem):
        p = os.path.join(d, name)
        if os.path.isfile(p):
            return p
    raise ConfigError("data", f"{d}: missing {stem}.gz (install Debian's dataset-fashion-mnist, "
                              f"or give --data a directory holding the four idx files)")


def read_idx(path: str, ndim: int) -> np.ndarray:
    """An idx file (optionally gzip-compressed) of unsigned bytes with ``ndim`` dimensions."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise ConfigError("data", f"cannot read {path} ({err})") from None
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise ConfigError("data", f"{path}: not an idx file (only {len(raw)} bytes)")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != 0x0800 + ndim:
        raise ConfigError("data", f"{path}: not a {ndim}-d unsigned-byte idx file (magic {magic:#x}, "
                                  f"expected {0x0800 + ndim:#x})")
    dims = struct.unpack(">" + "I" * ndim, raw[4:head])
    if len(raw) - head != int(np.prod(dims, dtype=np.int64)):
        raise ConfigError("data", f"{path}: header says {dims} but holds {len(raw) - head} data bytes")
    return np.frombuffer(raw, np.uint8, offset=head).reshape(dims)


def grey28_to_rgb32(x: np.ndarray) -> np.ndarray:
    """(N, 28, 28) uint8 -> (N, 32, 32, 3): zero-pad 2 pixels each side, repeat to 3 channels."""
    x = np.pad(x, ((0, 0), (2, 2), (2, 2)))
    return np.ascontiguousarray(np.repeat(x[..., None], 3, axis=-1))


def load_fashion_mnist(path: str = FASHION_MNIST_DIR) -> Dataset:
    if not os.path.exists(path):
        raise ConfigError("data", f"no such directory: {path} (apt-get install dataset-fashion-mnist, or give --data)")
    if not os.path.isdir(path):
        raise ConfigError("data", f"{path} is not a directory")
    arrs = {}
    for key, stem in _FASHION_FILES.items():
        arrs[key] = read_idx(_find_idx(path, stem), 3 if key.startswith("x") else 1)
    for split in ("train", "test"):
        x, y = arrs[f"x_{split}"], arrs[f"y_{split}"]
        if x.shape[1:] != (28, 28):
            raise ConfigError("data", f"{path}: {split} images are {x.shape[1:]}, expected 28x28")
        if len(x) != len(y):
            raise ConfigError("data", f"{path}: {len(x)} {split} images but {len(y)} labels")
    return Dataset("fashion-mnist", grey28_to_rgb32(arrs["x_train"]), _check_labels(arrs["y_train"], path, 10),
                   grey28_to_rgb32(arrs["x_test"]), _check_labels(arrs["y_test"], path, 10), 10, source=path)


# ---------------------------------------------------------------------------------------------
# Synthetic


def synthetic(n_train: int = 512, n_test: int = 256, num_classes: int = 10, seed: int = 0) -> Dataset:
    """Each class a fixed smooth random template (seed 1234), each image template + noise (``seed``)."""
    t_rng = np.random.default_rng(1234)
    coarse = t_rng.uniform(0, 255, size=(num_classes, 4, 4, 3))
    templates = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)  # (C, 32, 32, 3) blocky patterns
    rng = np.random.default_rng(seed)

    def draw(n):
        y = rng.integers(0, num_classes, size=n)
        x = 0.7 * templates[y] + 0.3 * rng.uniform(0, 255, size=(n, 32, 32, 3))
        return x.clip(0, 255).astype(np.uint8), y.astype(np.int32)

    x_tr, y_tr = draw(n_train)
    x_te, y_te = draw(n_test)
    return Dataset("synthetic", x_tr, y_tr, x_te, y_te, num_classes, source=f"synthetic(seed={seed})")
