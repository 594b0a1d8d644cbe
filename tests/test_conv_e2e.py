"""Convolutional networks end to end: digits_cnn accuracy, IDX folders and .npz image arrays as data,
bad IDX files, the CLI train -> verify -> run path with the preprocessing in the model's metadata."""
from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import nngraph
from nngraph.cli import main
from nngraph.data import load_source
from nngraph.data.idx import read_idx
from nngraph.errors import DataError
from nngraph.runtime import verify
from nngraph.workflow import train


def quiet(_msg: str) -> None:
    pass


def test_digits_cnn_reaches_98_5_percent_test_accuracy(specs_dir, tmp_path):
    result = train(specs_dir / "digits_cnn.json", output=tmp_path / "cnn.onnx", log=quiet)
    assert result.test["accuracy"] >= 0.985
    report = verify(tmp_path / "cnn.onnx")
    assert report.ok and report.max_abs < 1e-5
    y = nngraph.run(tmp_path / "cnn.onnx", result.dataset.x_test)  # (N, 64) rows fit the (1, 8, 8) input
    assert np.mean(y.argmax(1) == result.dataset.y_test) == pytest.approx(result.test["accuracy"])
    types = [n.op_type for n in onnx.load(str(tmp_path / "cnn.onnx")).graph.node]
    assert types.count("Conv") == 2 and types.count("MaxPool") == 2 and "Flatten" in types


# ---- IDX folders ------------------------------------------------------------------------------

def idx_bytes(a: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.astype(np.uint8).tobytes()


def write_idx(path, a: np.ndarray, gz: bool = True) -> None:
    data = idx_bytes(a)
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def toy_images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """12x12 uint8 images of two classes: a bright bar, horizontal (0) or vertical (1), plus noise."""
    y = rng.integers(0, 2, n)
    x = rng.integers(0, 60, (n, 12, 12))
    for i in range(n):
        k = rng.integers(2, 10)
        if y[i] == 0:
            x[i, k, 1:11] = 250
        else:
            x[i, 1:11, k] = 250
    return x.astype(np.uint8), y.astype(np.uint8)


@pytest.fixture
def idx_folder(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "toy_mnist"
    folder.mkdir()
    x, y = toy_images(256, rng)
    xt, yt = toy_images(64, rng)
    write_idx(folder / "train-images-idx3-ubyte.gz", x)
    write_idx(folder / "train-labels-idx1-ubyte.gz", y)
    write_idx(folder / "t10k-images-idx3-ubyte", xt, gz=False)  # plain files work too
    write_idx(folder / "t10k-labels-idx1-ubyte", yt, gz=False)
    return folder, x, y


TOY_SPEC = {
    "name": "toy_cnn", "inputs": {"image": {"shape": [1, 12, 12]}},
    "layers": [{"type": "conv2d", "filters": 4, "kernel": 3, "padding": "same", "activation": "relu"},
               {"type": "maxpool2d", "size": 2},
               {"type": "conv2d", "filters": 8, "kernel": 3, "stride": 2, "activation": "relu"},
               {"type": "flatten"},
               {"type": "dense", "units": 2, "activation": "softmax"}],
    "loss": "cross_entropy", "optimizer": {"type": "adam", "lr": 0.01},
    "train": {"epochs": 8, "batch_size": 32},
}


def test_idx_folder_loads_raw_pixels_and_labels_and_asks_the_model_to_scale(idx_folder):
    folder, x, y = idx_folder
    ds = load_source(str(folder))
    assert ds.x.shape == (256, 12, 12) and ds.x.dtype == np.float32
    np.testing.assert_array_equal(ds.x, x)  # the model scales (a normalize layer), not the loader
    assert ds.input_layer == {"mode": "scale", "factor": 1 / 255}
    assert ds.y.dtype == np.int64 and list(ds.y[:8]) == list(y[:8])
    assert ds.x_test.shape == (64, 12, 12) and ds.y_test.shape == (64,)
    assert ds.meta["input_scale"] == pytest.approx(1 / 255)


def test_cli_trains_on_an_idx_folder_then_verifies_and_runs(idx_folder, tmp_path):
    folder, _, _ = idx_folder
    spec = tmp_path / "toy.json"
    spec.write_text(json.dumps(TOY_SPEC))
    out = tmp_path / "toy.onnx"
    runner = CliRunner()
    r = runner.invoke(main, ["train", str(spec), "--data", str(folder), "-o", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert "pixel / 255" in meta["nngraph.preprocessing"]
    assert json.loads(meta["nngraph.input_scale"]) == pytest.approx(1 / 255)
    assert json.loads(meta["nngraph.test_metrics"])["accuracy"] >= 0.9
    assert runner.invoke(main, ["verify", str(out)]).exit_code == 0
    images = read_idx(folder / "t10k-images-idx3-ubyte")  # raw uint8 pixels (N, 12, 12): the model scales
    np.save(tmp_path / "images.npy", images[:5])
    r = runner.invoke(main, ["run", str(out), "--input", str(tmp_path / "images.npy"),
                             "-o", str(tmp_path / "probs.npy")])
    assert r.exit_code == 0, r.output
    probs = np.load(tmp_path / "probs.npy")
    assert probs.shape == (5, 2)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)


NOISE = np.random.default_rng(5).integers(0, 256, (256, 12, 12))


def _damage(folder, name, data: bytes):
    (folder / name).unlink()
    (folder / name).write_bytes(data)


@pytest.mark.parametrize("damage,message", [
    (lambda f: _damage(f, "train-images-idx3-ubyte.gz", gzip.compress(idx_bytes(NOISE))[:3000]),
     r"train-images-idx3-ubyte.gz: cannot read .*damaged or truncated"),
    (lambda f: _damage(f, "train-images-idx3-ubyte.gz", gzip.compress(idx_bytes(np.zeros((256, 12, 12)))[:-7])),
     r"train-images-idx3-ubyte.gz: truncated: the header says 256 x 12 x 12 values \(36,864 bytes\), "
     r"the file holds 36,857"),
    (lambda f: _damage(f, "train-labels-idx1-ubyte.gz", gzip.compress(b"\x08\x03\x00\x00" + bytes(40))),
     r"train-labels-idx1-ubyte.gz: not an IDX file"),
    (lambda f: _damage(f, "train-labels-idx1-ubyte.gz", gzip.compress(idx_bytes(np.zeros(255)))),
     r"has 256 images but train-labels-idx1-ubyte.gz has 255 labels"),
    (lambda f: (f / "t10k-labels-idx1-ubyte").unlink(),
     r"found t10k-images-idx3-ubyte but not t10k-labels-idx1-ubyte"),
    (lambda f: [p.unlink() for p in f.glob("train-*")],
     r"no IDX training files \(expected train-images-idx3-ubyte"),
])
def test_bad_idx_files_are_data_errors_naming_the_file(idx_folder, damage, message):
    folder, _, _ = idx_folder
    damage(folder)
    with pytest.raises(DataError, match=message):
        load_source(str(folder))


def test_bad_idx_folder_on_the_cli_is_one_line_and_writes_nothing(idx_folder, tmp_path):
    folder, _, _ = idx_folder
    _damage(folder, "train-images-idx3-ubyte.gz", b"not gzip at all")
    spec = tmp_path / "toy.json"
    spec.write_text(json.dumps(TOY_SPEC))
    r = CliRunner().invoke(main, ["train", str(spec), "--data", str(folder), "-o", str(tmp_path / "x.onnx")])
    assert r.exit_code == 2
    assert "train-images-idx3-ubyte.gz" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "x.onnx").exists()


# ---- .npz image arrays ------------------------------------------------------------------------

@pytest.mark.parametrize("channel_axis", [False, True])
def test_npz_image_arrays_feed_a_conv_spec(tmp_path, channel_axis):
    rng = np.random.default_rng(1)
    x, y = toy_images(192, rng)
    xt, yt = toy_images(64, rng)
    x, xt = x / np.float32(255), xt / np.float32(255)
    if channel_axis:
        x, xt = x[:, None], xt[:, None]  # (N, 1, H, W)
    np.savez(tmp_path / "images.npz", x=x, y=y.astype(np.int64), x_test=xt, y_test=yt.astype(np.int64))
    spec = tmp_path / "toy.json"
    spec.write_text(json.dumps(TOY_SPEC))
    result = train(spec, data=str(tmp_path / "images.npz"), log=quiet)
    assert result.test["accuracy"] >= 0.9


def test_npz_images_of_the_wrong_size_name_both_shapes(tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.zeros((10, 10, 10), np.float32), y=np.zeros(10, np.int64))
    spec = tmp_path / "toy.json"
    spec.write_text(json.dumps(TOY_SPEC))
    with pytest.raises(DataError, match=r"each sample has shape \(10, 10\), the model expects \(1, 12, 12\)"):
        train(spec, data=str(tmp_path / "bad.npz"), log=quiet)
