"""Profiling stage: VGG-16 exits, data sets (safe unpickling), timing, accuracy, exit table.

Everything runs on the CPU with a tiny width, a few images and one epoch; data files are written
by the tests themselves (no CIFAR-10 or Fashion-MNIST download needed).
"""

from __future__ import annotations

import ast
import gzip
import json
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grle_jax.errors import ConfigError
from grle_jax.profile import Profile
from profiling import build_profile, datasets, time_exits, train_exits, vgg

ROOT = Path(__file__).resolve().parents[1]
TINY = 1 / 16  # width multiplier of every test network


def run_cli(module: str, *args, timeout=120):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def assert_one_line_error(rc, err, field):
    assert rc == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {field}: "), err
    assert "Traceback" not in err


# --- no PyTorch ---------------------------------------------------------------------------------


def test_nothing_under_profiling_imports_torch_statically():
    files = sorted((ROOT / "profiling").glob("*.py"))
    assert len(files) >= 6
    for f in files:
        tree = ast.parse(f.read_text(), filename=str(f))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names = [node.value] if node.value.split(".")[0] == "torch" else []  # __import__("torch")
            else:
                continue
            assert not any(n == "torch" or n.startswith("torch.") for n in names), f"{f.name} imports {names}"


def test_importing_every_profiling_module_loads_no_torch():
    code = ("import pkgutil, importlib, sys, profiling\n"
            "mods = [m.name for m in pkgutil.iter_modules(profiling.__path__)]\n"
            "for m in mods: importlib.import_module('profiling.' + m)\n"
            "assert {'vgg', 'datasets', 'time_exits', 'train_exits', 'build_profile'} <= set(mods), mods\n"
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]\n"
            "print('TORCH' if bad else 'CLEAN', len(mods))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("CLEAN"), r.stdout


# --- the network --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_net():
    model = vgg.make_model(TINY)
    return model, vgg.init_variables(model, 0)


def test_exit_numbering():
    assert len(vgg.LAYERS) == 18
    assert sum(k == "conv" for k, _ in vgg.LAYERS) == 13 and sum(k == "pool" for k, _ in vgg.LAYERS) == 5
    assert [vgg.layers_of_exit(k) for k in (1, 3, 16, 17)] == [1, 3, 16, 18]
    assert [vgg.convs_of_exit(k) for k in (1, 2, 3, 4, 7, 16, 17)] == [1, 2, 2, 3, 5, 12, 13]
    for bad in (0, 18, -1, True, 2.0, "3"):
        with pytest.raises(ConfigError):
            vgg.check_exit(bad)


def test_params_cover_all_exits(tiny_net):
    _, v = tiny_net
    names = set(v["params"])
    assert {f"exit{k}" for k in range(1, 17)} <= names
    assert {f"conv{i}" for i in range(1, 14)} | {"fc1", "fc2"} <= names
    backbone, heads = vgg.split_params(v["params"])
    assert len(heads) == 16 and not any(vgg.is_head(n) for n in backbone)
    assert v["params"]["conv1"]["kernel"].shape == (3, 3, 3, 4)  # 64 * 1/16


@pytest.mark.parametrize("k", [1, 3, 4, 7, 14, 16, 17])
def test_forward_stops_at_the_exit(tiny_net, k):
    """The traced program of exit k holds exactly the convolutions of layers 1..k and one head."""
    model, v = tiny_net
    x = jnp.zeros((2, 32, 32, 3))
    jaxpr = str(jax.make_jaxpr(lambda v, x: model.apply(v, x, exit=k))(v, x))
    assert jaxpr.count("conv_general_dilated") == vgg.convs_of_exit(k)
    assert jaxpr.count("dot_general") == (2 if k == 17 else 1)  # classifier: 2 dense layers; head: 1
    assert jax.eval_shape(lambda v, x: model.apply(v, x, exit=k), v, x).shape == (2, 10)


def test_exit_logits_match_the_all_exits_pass(tiny_net):
    """Exit k alone = column k of the all-exits pass."""
    model, v = tiny_net
    x = jnp.asarray(np.random.default_rng(1).standard_normal((3, 32, 32, 3)), jnp.float32)
    # one compiled program: the all-exits pass, exits 2 and 17 alone
    every, at2, at17 = jax.jit(lambda v, x: (model.apply(v, x), model.apply(v, x, exit=2),
                                             model.apply(v, x, exit=17)))(v, x)
    assert every.shape == (3, 17, 10)
    np.testing.assert_allclose(at2, every[:, 1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(at17, every[:, 16], rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError):
        model.apply(v, x, exit=18)


def test_im2col_convolution_equals_xla():
    rng = np.random.default_rng(2)
    shapes = [(2, 8, 8, 5, 7), (1, 2, 2, 16, 4), (3, 1, 1, 3, 2)]  # (B, H, W, C_in, C_out)
    xs = [jnp.asarray(rng.standard_normal(s[:4]), jnp.float32) for s in shapes]
    ks = [{"params": {"kernel": jnp.asarray(rng.standard_normal((3, 3, s[3], s[4])), jnp.float32)}}
          for s in shapes]

    @jax.jit
    def both(xs, ks):
        return [(vgg.Conv3x3(s[4], "xla").apply(k, x), vgg.Conv3x3(s[4], "im2col").apply(k, x))
                for s, x, k in zip(shapes, xs, ks)]

    for a, b in both(xs, ks):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)


def test_conv_choice():
    assert vgg.conv_impl_for("cpu") == "im2col" and vgg.conv_impl_for("gpu") == "xla"
    assert vgg.conv_impl_for("cpu", "xla") == "xla"
    with pytest.raises(ConfigError, match="conv"):
        vgg.conv_impl_for("cpu", "cudnn")
    with pytest.raises(ConfigError, match="conv"):
        vgg.make_model(1.0, conv="auto")


def test_width_is_checked():
    for bad in (0, -1, 100, "1"):
        with pytest.raises(ConfigError, match="width"):
            vgg.make_model(bad)


# --- data sets ----------------------------------------------------------------------------------


def _cifar_records(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8)


def write_cifar_bin(d: Path, n_train=40, n_test=12):
    d.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("data_batch_1.bin", n_train, 1), ("test_batch.bin", n_test, 2)):
        x, y = _cifar_records(n, seed)
        (d / name).write_bytes(np.concatenate([y[:, None], x], axis=1).tobytes())


def write_cifar_py(d: Path, protocol=2, n_train=40, n_test=12, as_lists=False, py2_names=False):
    d.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("data_batch_1", n_train, 1), ("test_batch", n_test, 2)):
        x, y = _cifar_records(n, seed)
        obj = {b"batch_label": b"batch", b"labels": [int(v) for v in y],
               b"data": x.tolist() if as_lists else x, b"filenames": [b"img.png"] * n}
        raw = pickle.dumps(obj, protocol=protocol)
        if py2_names:  # numpy < 2 and the original CIFAR-10 files name numpy.core.multiarray
            raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        (d / name).write_bytes(raw)


def test_cifar10_binary(tmp_path):
    write_cifar_bin(tmp_path / "cifar-10-batches-bin")
    ds = datasets.load("cifar10", str(tmp_path))
    x, y = _cifar_records(40, 1)
    assert ds.x_train.shape == (40, 32, 32, 3) and ds.x_train.dtype == np.uint8
    assert ds.x_test.shape == (12, 32, 32, 3)
    np.testing.assert_array_equal(ds.y_train, y)
    # record layout: 1024 red, 1024 green, 1024 blue bytes, rows of 32
    assert ds.x_train[5, 2, 7, 0] == x[5, 2 * 32 + 7]
    assert ds.x_train[5, 2, 7, 2] == x[5, 2048 + 2 * 32 + 7]
    assert len(datasets.load("cifar10", str(tmp_path), limit=10, test_limit=3).y_test) == 3


@pytest.mark.parametrize("protocol,as_lists,py2", [(2, False, False), (2, False, True), (4, False, False),
                                                   (5, False, False), (2, True, False)])
def test_cifar10_python_version(tmp_path, protocol, as_lists, py2):
    write_cifar_py(tmp_path, protocol, as_lists=as_lists, py2_names=py2)
    ds = datasets.load("cifar10", str(tmp_path))
    ref = datasets.load("cifar10", str(_bin_copy(tmp_path)))
    np.testing.assert_array_equal(ds.x_train, ref.x_train)
    np.testing.assert_array_equal(ds.y_test, ref.y_test)


def _bin_copy(tmp_path):
    d = tmp_path / "bin"
    write_cifar_bin(d)
    return d


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    raw = pickle.dumps({b"data": _Evil(marker), b"labels": [1]}, protocol=2)
    with pytest.raises(ConfigError, match="refused to unpickle global (posix|nt|os).system"):
        datasets.safe_unpickle(raw)
    # the same through the loader, as a user's data_batch_1 file
    write_cifar_py(tmp_path)
    (tmp_path / "data_batch_1").write_bytes(raw)
    with pytest.raises(ConfigError, match="refused"):
        datasets.load("cifar10", str(tmp_path))
    assert not marker.exists()
    for evil in (pickle.dumps(eval), pickle.dumps(np.array([object()], dtype=object))):
        with pytest.raises(ConfigError, match="refused"):
            datasets.safe_unpickle(evil)
    with pytest.raises(ConfigError, match="not a readable pickle"):
        datasets.safe_unpickle(b"\x80\x02}q\x00(")


def test_malformed_cifar10(tmp_path):
    with pytest.raises(ConfigError, match="no such directory"):
        datasets.load("cifar10", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="no CIFAR-10 batches"):
        datasets.load("cifar10", str(tmp_path))
    with pytest.raises(ConfigError, match="needs --data"):
        datasets.load("cifar10", None)
    write_cifar_bin(tmp_path)
    (tmp_path / "test_batch.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(ConfigError, match="not a CIFAR-10 binary batch"):
        datasets.load("cifar10", str(tmp_path))
    write_cifar_bin(tmp_path)
    rec = bytearray((tmp_path / "test_batch.bin").read_bytes())
    rec[0] = 12
    (tmp_path / "test_batch.bin").write_bytes(bytes(rec))
    with pytest.raises(ConfigError, match="labels must lie in 0..9"):
        datasets.load("cifar10", str(tmp_path))
    with pytest.raises(ConfigError, match="dataset"):
        datasets.load("imagenet")


def _write_idx(path: Path, arr: np.ndarray):
    head = struct.pack(">I", 0x0800 + arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(head + arr.astype(np.uint8).tobytes())


def write_fashion(d: Path, n_train=20, n_test=8):
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(d / f"{split}-images-idx3-ubyte.gz", rng.integers(1, 256, (n, 28, 28)))
        _write_idx(d / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))


def test_fashion_mnist_files(tmp_path):
    write_fashion(tmp_path)
    ds = datasets.load("fashion-mnist", str(tmp_path))
    assert ds.x_train.shape == (20, 32, 32, 3) and ds.x_test.shape == (8, 32, 32, 3)
    assert (ds.x_train[:, :2] == 0).all() and (ds.x_train[:, :, -2:] == 0).all()  # zero padding
    assert (ds.x_train[:, 2:30, 2:30] > 0).all()
    assert (ds.x_train[..., 0] == ds.x_train[..., 2]).all()  # grey repeated to 3 channels
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 8))
    with pytest.raises(ConfigError, match="magic"):
        datasets.load("fashion-mnist", str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="missing train-images"):
        datasets.load("fashion-mnist", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="no such directory"):
        datasets.load("fashion-mnist", str(tmp_path / "nope"))


def test_synthetic():
    ds = datasets.load("synthetic", limit=30, test_limit=10)
    assert ds.x_train.shape == (30, 32, 32, 3) and ds.y_test.shape == (10,)
    assert ds.y_train.dtype == np.int32 and ds.y_train.max() < 10


# --- timing ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def timing_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("timing") / "timing.json"
    rc = time_exits.main(["--width", str(TINY), "--reps", "3", "--warmup", "1", "--exits", "3,1",
                          "--batch", "2", "--devices", "cpu", "--out", str(out)])
    assert rc == 0
    return out


def test_time_exits_writes_json_and_plot(timing_file):
    rec = json.loads(timing_file.read_text())
    assert rec["jax_version"] == jax.__version__
    assert rec["settings"]["exits"] == [1, 3] and rec["settings"]["batches"] == [1, 2]
    assert rec["settings"]["reps"] == 3 and rec["settings"]["width"] == TINY
    (dev,) = rec["devices"]
    assert dev["id"] == "cpu" and dev["platform"] == "cpu" and dev["kind"] and dev["conv"] == "im2col"
    assert [r["batch"] for r in dev["results"]] == [1, 2]
    for r in dev["results"]:
        assert r["exits"] == [1, 3]
        for key in ("median_ms", "p10_ms", "p90_ms", "min_ms", "mean_ms", "compile_s"):
            assert len(r[key]) == 2 and all(v > 0 for v in r[key])
        assert all(lo <= med <= hi for lo, med, hi in zip(r["p10_ms"], r["median_ms"], r["p90_ms"]))
        if all(f is not None for f in r["flops"]):
            assert r["flops"][1] > 2 * r["flops"][0]  # exit 3 runs two convolutions, exit 1 one
    assert timing_file.with_suffix(".png").stat().st_size > 1000


def test_device_selection():
    assert [i for i, _ in time_exits.select_devices("cpu")] == ["cpu"]
    assert "cpu" in [i for i, _ in time_exits.select_devices("all")]
    with pytest.raises(ConfigError, match="empty device list"):
        time_exits.select_devices(" , ")
    if not any(d.platform == "gpu" for d in jax.devices()):
        with pytest.raises(ConfigError, match="no visible device matches 'gpu'"):
            time_exits.select_devices("cpu,gpu")


@pytest.mark.parametrize("args,field", [(["--exits", "1,18"], "exits"), (["--exits", "0"], "exits"),
                                        (["--exits", "a"], "exits"), (["--devices", ""], "devices"),
                                        (["--reps", "0"], "reps"), (["--width", "-1"], "width"),
                                        (["--batch", "x"], "--batch"), (["--conv", "x"], "conv")])
def test_time_exits_bad_input(tmp_path, capsys, args, field):
    rc = time_exits.main(["--width", str(TINY), *args, "--out", str(tmp_path / "t.json")])
    assert_one_line_error(rc, capsys.readouterr().err, field)
    assert not (tmp_path / "t.json").exists()


# --- exit table --------------------------------------------------------------------------------------


def test_selection_rule():
    sel = build_profile.select_exits
    assert sel(build_profile.paper_accuracy()) == [1, 3, 4, 7, 17]
    # strictly increasing accuracies: 17 exits -> 5, keeping the shallowest and 17
    acc = {k: 0.5 + 0.02 * k + (0.05 if k in (4, 9) else 0) for k in range(1, 18)}
    got = sel(acc)
    assert len(got) == 5 and got[0] == 1 and got[-1] == 17
    assert 4 in got and 9 in got  # the two exits with the largest gains survive
    # exits that add nothing are dropped before counting
    assert sel({1: 0.5, 2: 0.5, 3: 0.6, 4: 0.55, 5: 0.7, 17: 0.8}) == [1, 3, 5, 17]
    # 17 is kept even when a shallower exit is as accurate
    assert sel({1: 0.5, 8: 0.9, 17: 0.85}) == [1, 8, 17]
    assert sel({1: 0.5, 3: 0.6, 17: 0.9}, count=1) == [17]
    assert sel({1: 0.5, 3: 0.6, 5: 0.65, 17: 0.9}, count=2) == [1, 17]
    # ties in gain: the deeper exit goes first
    assert sel({1: 0.125, 2: 0.25, 3: 0.375, 4: 0.5, 17: 0.625}, count=4) == [1, 2, 3, 17]


def _fake_timing(path: Path, exits=range(1, 18), devices=("cpu", "gpu0")):
    rec = {"format": time_exits.FORMAT, "jax_version": jax.__version__, "settings": {"width": 1.0},
           "devices": []}
    for i, dev_id in enumerate(devices):
        plat = "cpu" if dev_id == "cpu" else "gpu"
        rec["devices"].append({
            "id": dev_id, "name": "cpu" if plat == "cpu" else "Fake GPU", "platform": plat,
            "kind": "cpu" if plat == "cpu" else "Fake GPU",
            "results": [{"batch": b, "exits": list(exits), "median_ms": [b * (i + 1) * 0.1 * k for k in exits]}
                        for b in (1, 8)]})
    path.write_text(json.dumps(rec))
    return path


def test_build_profile_merges_and_validates(tmp_path, capsys):
    timing = _fake_timing(tmp_path / "timing.json")
    acc = tmp_path / "acc.json"
    acc.write_text(json.dumps({"exits": list(range(1, 18)), "acc": [0.5 + 0.02 * k for k in range(1, 18)]}))
    out = tmp_path / "sub" / "profile.json"
    rc = build_profile.main(["--accuracy", str(acc), "--timing", str(timing), "--out", str(out),
                             "--es-map", "gpu0:1.0,cpu,cpu:2.5"])
    assert rc == 0, capsys.readouterr().err
    p = Profile.load(str(out))
    assert len(p.exits) == 5 and p.exits[0] == 1 and p.exits[-1] == 17
    assert p.device_names == ("cpu", "Fake GPU")
    np.testing.assert_allclose(p.time_ms[0], [0.1 * k for k in p.exits])
    np.testing.assert_allclose(p.acc, [0.5 + 0.02 * k for k in p.exits])
    c = p.c_matrix(4)  # ES 3 wraps to the first map entry
    np.testing.assert_allclose(c[1], p.time_ms[0])
    np.testing.assert_allclose(c[2], 2.5 * np.asarray(p.time_ms[0]))
    np.testing.assert_allclose(c[3], c[0])
    np.testing.assert_allclose(c[0], p.time_ms[1])
    assert "selection" in p.meta
    # given exits, the paper's accuracies, a batch's per-image time, a device subset
    rc = build_profile.main(["--accuracy", "paper", "--timing", str(timing), "--out", str(out),
                             "--exits", "1,4,17", "--batch", "8", "--devices", "gpu"])
    assert rc == 0
    p = Profile.load(str(out))
    assert p.exits == (1, 4, 17) and p.acc == (0.8, 0.885, 0.935) and p.device_names == ("Fake GPU",)
    np.testing.assert_allclose(p.time_ms[0], [0.2 * k for k in (1, 4, 17)])  # 8 * 0.2 * k / 8
    assert build_profile.main(["--check", str(out)]) == 0


def test_build_profile_bad_input(tmp_path, capsys):
    timing = _fake_timing(tmp_path / "timing.json", exits=[1, 17])
    acc = tmp_path / "acc.json"
    acc.write_text(json.dumps({"exits": [1, 2, 17], "acc": [0.5, 0.6]}))
    out = str(tmp_path / "p.json")
    cases = [
        (["--accuracy", str(acc), "--timing", str(timing)], "accuracy.acc"),
        (["--accuracy", "paper", "--timing", str(timing)], "timing"),  # exits 3, 4, 7 were not timed
        (["--accuracy", "paper", "--timing", str(timing), "--exits", "1,18"], "exits"),
        (["--accuracy", "paper", "--timing", str(timing), "--exits", "2,17"], "exits"),
        (["--accuracy", "paper", "--timing", str(timing), "--exits", "1,17", "--es-map", "tpu:1"], "es-map"),
        (["--accuracy", "paper", "--timing", str(timing), "--exits", "1,17", "--es-map", "cpu:-2"], "es-map"),
        (["--accuracy", "paper", "--timing", str(timing), "--exits", "1,17", "--devices", ","], "devices"),
        (["--accuracy", "paper", "--timing", str(timing), "--exits", "1,17", "--batch", "4"], "batch"),
        (["--accuracy", "paper", "--timing", str(tmp_path / "none.json")], "timing"),
        (["--timing", str(timing)], "accuracy"),
    ]
    for args, field in cases:
        assert build_profile.main(args + ["--out", out]) == 2
        assert_one_line_error(2, capsys.readouterr().err, field)
    assert not os.path.exists(out)
    bad_timing = json.loads(timing.read_text())
    bad_timing["devices"][0]["results"][0]["median_ms"].append(1.0)
    (tmp_path / "bad.json").write_text(json.dumps(bad_timing))
    assert build_profile.main(["--accuracy", "paper", "--timing", str(tmp_path / "bad.json"), "--exits", "1,17"]) == 2
    assert_one_line_error(2, capsys.readouterr().err, "timing.devices[0].results[0].median_ms")
    bad_timing["devices"] = []
    (tmp_path / "bad.json").write_text(json.dumps(bad_timing))
    assert build_profile.main(["--accuracy", "paper", "--timing", str(tmp_path / "bad.json")]) == 2
    assert_one_line_error(2, capsys.readouterr().err, "timing.devices")


def test_profile_with_mismatched_lengths_cli(tmp_path):
    """As a user sees it: one line on stderr, exit code 2, no traceback."""
    bad = tmp_path / "profile.json"
    bad.write_text(json.dumps({"exits": [1, 17], "acc": [0.8, 0.9],
                               "devices": [{"name": "cpu", "time_ms": [1.0]}]}))
    r = run_cli("profiling.build_profile", "--check", str(bad))
    assert_one_line_error(r.returncode, r.stderr, "profile.devices[0].time_ms")


def test_timing_to_profile_end_to_end(timing_file, tmp_path):
    out = tmp_path / "profile.json"
    assert build_profile.main(["--accuracy", "paper", "--timing", str(timing_file), "--exits", "1,3",
                               "--out", str(out), "--es-map", "cpu:1,cpu:2"]) == 0
    p = Profile.load(str(out))
    assert p.exits == (1, 3) and p.device_names == ("cpu",) and p.acc == (0.8, 0.85)
    assert p.c_matrix(2).shape == (2, 2) and (p.c_matrix(2) > 0).all()


# --- accuracy ----------------------------------------------------------------------------------------


def test_train_exits_and_resume(tmp_path, capsys):
    out = str(tmp_path / "run")
    # --conv xla: at this tiny width XLA compiles its own convolution's gradient about twice as
    # fast as im2col's (im2col, the CPU default, runs faster; both are the same function, see below)
    common = ["--dataset", "synthetic", "--width", str(TINY), "--limit", "64", "--test-limit", "32",
              "--batch", "32", "--conv", "xla", "--out", out]
    assert train_exits.main(common + ["--epochs", "1", "--head-epochs", "0"]) == 0
    assert "main  epoch 1/1" in capsys.readouterr().out
    assert sorted(os.listdir(os.path.join(out, "checkpoints", "main"))) == ["1"]
    # resume: the main branch goes on at epoch 2, then the heads are trained
    assert train_exits.main(common + ["--epochs", "2", "--head-epochs", "1", "--resume"]) == 0
    log = capsys.readouterr().out
    assert "resumed main branch after epoch 1" in log and "main  epoch 2/2" in log and "heads epoch 1/1" in log
    assert "main  epoch 1/" not in log
    hist = json.loads(Path(out, "history.json").read_text())
    assert [h["epoch"] for h in hist["main"]] == [1, 2] and [h["epoch"] for h in hist["heads"]] == [1]
    rec = json.loads(Path(out, "accuracy.json").read_text())
    assert rec["exits"] == list(range(1, 18)) and len(rec["acc"]) == 17
    assert all(0.0 <= a <= 1.0 for a in rec["acc"]) and rec["n_test"] == 32
    assert Path(out, "accuracy.png").stat().st_size > 1000
    # a resumed run with nothing left to train restores the heads checkpoint and evaluates it again
    assert train_exits.main(common + ["--epochs", "2", "--head-epochs", "1", "--resume"]) == 0
    assert "resumed exit heads after epoch 1" in capsys.readouterr().out
    assert json.loads(Path(out, "accuracy.json").read_text())["acc"] == rec["acc"]
    # the accuracy file feeds the exit table
    acc_sel = build_profile.select_exits(dict(zip(rec["exits"], rec["acc"])))
    assert acc_sel[-1] == 17 and 1 <= len(acc_sel) <= 5
    # no silent overwrite, no resume with other settings
    assert train_exits.main(common + ["--epochs", "1"]) == 2
    assert_one_line_error(2, capsys.readouterr().err, "out")
    assert train_exits.main([*common[:2], "--width", "0.125", *common[4:], "--resume"]) == 2
    assert_one_line_error(2, capsys.readouterr().err, "resume")


@pytest.mark.parametrize("args,field", [
    (["--dataset", "cifar10", "--data", "/nonexistent/cifar"], "data"),
    (["--dataset", "cifar10"], "data"),
    (["--dataset", "mnist"], "dataset"),
    (["--dataset", "synthetic", "--epochs", "-1"], "epochs"),
    (["--dataset", "synthetic", "--lr", "0"], "lr"),
    (["--dataset", "synthetic", "--conv", "cudnn"], "conv"),
    (["--epochs", "1"], "args"),  # --dataset missing
])
def test_train_exits_bad_input(tmp_path, capsys, args, field):
    assert train_exits.main(args + ["--out", str(tmp_path / "o")]) == 2
    assert_one_line_error(2, capsys.readouterr().err, field)


def test_train_exits_malformed_dataset(tmp_path, capsys):
    (tmp_path / "test_batch.bin").write_bytes(b"\x01" * 10)
    (tmp_path / "data_batch_1.bin").write_bytes(b"\x01" * 10)
    assert train_exits.main(["--dataset", "cifar10", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert_one_line_error(2, err, "data")
    assert "not a CIFAR-10 binary batch" in err
