"""Hostile data and model files: each reproducer from the issue gives one `error: ...` line and exit 2
(never a traceback, a hang or a MemoryError), and inputs that used to "succeed" wrongly are refused.
Also: CSV parsing speed/memory paths (numpy's reader, no copy) and .npy rows read on demand,
including training under an address-space limit smaller than the data file."""
from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from nngraph.cli import main
from nngraph.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
XOR = {"name": "xor", "inputs": {"x": {"shape": [2]}},
       "layers": [{"type": "dense", "units": 4, "activation": "sigmoid"},
                  {"type": "dense", "units": 1, "activation": "sigmoid"}],
       "loss": "mse", "optimizer": {"type": "sgd", "lr": 0.5},
       "train": {"epochs": 2, "batch_size": 4, "seed": 0, "shuffle": False}}


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def error_line(result, code: int = 2) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def cli(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """The CLI in a real process (for FIFOs and devices: a hang is a test failure, not a stuck suite)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "nngraph.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, **kw)


def one_error(proc: subprocess.CompletedProcess, code: int = 2) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def xor_spec(tmp_path: Path, data: str | dict | None = None, **changes) -> Path:
    spec = {**XOR, **changes}
    if data is not None:
        spec["data"] = data
    p = tmp_path / "spec.json"
    p.write_text(json.dumps(spec))
    return p


def xor_csv(tmp_path: Path, name: str = "xor.csv", rows: int = 8) -> Path:
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]] * (rows // 4), np.float32)
    p = tmp_path / name
    p.write_text("a,b,y\n" + "".join(f"{a:g},{b:g},{int(a) ^ int(b)}\n" for a, b in x))
    return p


@pytest.fixture(scope="module")
def xor_onnx(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("xor")
    spec = xor_spec(tmp)
    out = tmp / "xor.onnx"
    assert invoke("compile", spec, "-o", out).exit_code == 0
    return out


# ---- data files -----------------------------------------------------------------------------------

def test_csv_field_over_the_csv_field_limit_is_one_line(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a,b,y\n0,0,0\n" + "1," + "9" * 140_000 + "x,1\n")
    err = error_line(invoke("train", xor_spec(tmp_path, "d.csv"), "--progress", "none"))
    assert "d.csv" in err and "line 3" in err


def test_csv_header_with_a_field_over_the_limit_is_one_line(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a," + "b" * 140_000 + ",y\n0,0,0\n")
    err = error_line(invoke("train", xor_spec(tmp_path, "d.csv"), "--progress", "none"))
    assert "longer than 131,072 characters" in err


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_dev_zero_as_spec_or_data_is_refused_without_reading(tmp_path):
    err = one_error(cli("train", "/dev/zero", "--progress", "none", timeout=60))
    assert "/dev/zero" in err and "not a regular file" in err
    spec = xor_spec(tmp_path, "/dev/zero")
    err = one_error(cli("train", spec, "--progress", "none", timeout=60))
    assert "/dev/zero" in err and "character device" in err
    err = one_error(cli("run", "/dev/zero", "--input", "/dev/zero", timeout=60))
    assert "not a regular file" in err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("what", ["spec", "csv", "npy", "onnx"])
def test_fifo_paths_are_refused_instead_of_blocking(tmp_path, what):
    fifo = tmp_path / {"spec": "s.json", "csv": "d.csv", "npy": "x.npy", "onnx": "m.onnx"}[what]
    os.mkfifo(fifo)  # nobody ever writes: opening it for reading would block forever
    if what == "spec":
        proc = cli("train", fifo, timeout=60)
    elif what == "csv":
        proc = cli("train", xor_spec(tmp_path, fifo.name), "--progress", "none", timeout=60)
    elif what == "npy":
        proc = cli("train", xor_spec(tmp_path, fifo.name), "--targets", fifo, "--progress", "none", timeout=60)
    else:
        proc = cli("inspect", fifo, timeout=60)
    err = one_error(proc)
    assert "FIFO" in err and fifo.name in err


def test_npz_member_that_is_not_npy(tmp_path):
    p = tmp_path / "d.npz"
    with zipfile.ZipFile(p, "w") as z:
        buf = io.BytesIO()
        np.save(buf, np.zeros((4, 2), np.float32))
        z.writestr("x.npy", buf.getvalue())
        z.writestr("y.txt", "0 1 1 0")
    err = error_line(invoke("train", xor_spec(tmp_path, "d.npz"), "--progress", "none"))
    assert "'y.txt' is not a .npy array" in err


def _terabyte_npy(path: Path) -> Path:
    header = {"descr": "<f4", "fortran_order": False, "shape": (1 << 30, 1 << 10)}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    path.write_bytes(buf.getvalue() + b"\0" * (240 - len(buf.getvalue())))
    return path


def test_npy_whose_header_claims_terabytes_is_refused_before_allocating(tmp_path):
    x = _terabyte_npy(tmp_path / "x.npy")
    assert x.stat().st_size == 240
    y = tmp_path / "y.npy"
    np.save(y, np.zeros(4, np.float32))
    err = error_line(invoke("train", xor_spec(tmp_path, "x.npy"), "--targets", y, "--progress", "none"))
    assert "x.npy" in err and "4,398,046,511,104 bytes" in err and "file holds" in err
    err = error_line(invoke("run", tmp_path / "m.onnx", "--input", x))  # header checked before the model
    assert "header claims" in err or "file not found" in err
    err = error_line(invoke("train", xor_spec(tmp_path, "x.npy"), "--targets", x, "--progress", "none"))
    assert "header claims" in err


def test_npz_member_whose_header_claims_more_than_the_member(tmp_path):
    p = tmp_path / "d.npz"
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (1 << 40,)})
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("x.npy", buf.getvalue() + b"\0" * 64)
        z.writestr("y.npy", buf.getvalue())
    err = error_line(invoke("train", xor_spec(tmp_path, "d.npz"), "--progress", "none"))
    assert "x.npy" in err and "header claims" in err


def test_npz_member_whose_zip_entry_claims_more_than_it_can_hold(tmp_path):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (1 << 38,)})
    p = tmp_path / "d.npz"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", buf.getvalue() + b"\0" * 4096)
        z.writestr("y.npy", buf.getvalue() + b"\0" * 4096)
    raw = bytearray(p.read_bytes())
    # forge the declared uncompressed size (local header and central directory) to 1 TiB
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        i = raw.find(sig)
        while i >= 0:
            raw[i + off:i + off + 4] = (0xFFFFFFF0).to_bytes(4, "little")
            i = raw.find(sig, i + 4)
    p.write_bytes(bytes(raw))
    err = error_line(invoke("train", xor_spec(tmp_path, "d.npz"), "--progress", "none"))
    assert "d.npz" in err and "compressed bytes can hold" in err


def _idx(kind: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return bytes([0, 0, kind, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + payload


def test_idx_file_with_255_dimensions(tmp_path):
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "train-images-idx3-ubyte").write_bytes(_idx(8, (1,) * 255, b"\0"))
    (tmp_path / "mnist" / "train-labels-idx1-ubyte").write_bytes(_idx(8, (1,), b"\0"))
    err = error_line(invoke("train", xor_spec(tmp_path, "mnist"), "--progress", "none"))
    assert "255 dimensions" in err


def test_idx_gzip_bomb_is_not_expanded(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    # a header claiming 4 labels, followed by 200 MB of zeros: a ~200 KB .gz
    with gzip.open(folder / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(_idx(8, (4,), b""))
        for _ in range(200):
            f.write(b"\0" * (1 << 20))
    with gzip.open(folder / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(_idx(8, (4, 2, 2), b"\0" * 16))
    err = error_line(invoke("train", xor_spec(tmp_path, "mnist"), "--progress", "none"))
    assert "train-labels-idx1-ubyte.gz" in err and "trailing bytes" in err
    # a header claiming terabytes of pixels in a small .gz: refused from the header alone
    with gzip.open(folder / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(_idx(8, (1 << 20, 1 << 10, 1 << 10), b"\0" * 1000))
    err = error_line(invoke("train", xor_spec(tmp_path, "mnist"), "--progress", "none"))
    assert "can hold at most" in err


def test_csv_gz_bomb_is_limited_by_the_gzip_trailer(tmp_path):
    body = gzip.compress(b"0,0,0\n" * (20 << 20))  # 120 MB of rows in ~120 KB
    forged = body[:-4] + (100).to_bytes(4, "little")  # the trailer claims 100 bytes
    (tmp_path / "d.csv.gz").write_bytes(forged)
    err = error_line(invoke("train", xor_spec(tmp_path, "d.csv.gz"), "--progress", "none"))
    assert "d.csv.gz" in err and "more than 100 bytes" in err


def test_csv_gz_is_decompressed(tmp_path):
    from nngraph.data import load_source

    plain = xor_csv(tmp_path)
    (tmp_path / "xor.csv.gz").write_bytes(gzip.compress(plain.read_bytes()))
    a, b = load_source(str(plain)), load_source(str(tmp_path / "xor.csv.gz"))
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y) and a.x.shape == (8, 2)
    assert invoke("train", xor_spec(tmp_path, "xor.csv.gz"), "--progress", "none").exit_code == 0
    out = invoke("run", _compiled(tmp_path), "--input", tmp_path / "xor.csv.gz")
    assert out.exit_code == 0 and len(json.loads(out.stdout)) == 8


def _compiled(tmp_path: Path, spec: dict | None = None) -> Path:
    p = tmp_path / "compiled.json"
    p.write_text(json.dumps({**XOR, "inputs": {"x": {"shape": [3]}}} if spec is None else spec))
    out = tmp_path / "compiled.onnx"
    assert invoke("compile", p, "-o", out).exit_code == 0
    return out


def test_evaluate_on_an_empty_dataset(tmp_path, xor_onnx):
    np.savez(tmp_path / "e.npz", x=np.zeros((0, 2), np.float32), y=np.zeros((0, 1), np.float32))
    err = error_line(invoke("evaluate", xor_onnx, "--data", tmp_path / "e.npz"))
    assert "no samples" in err


@pytest.mark.parametrize("case", ["not_zip", "empty", "strings", "complex", "datetime", "scalar"])
def test_run_refuses_bad_input_files(tmp_path, xor_onnx, case):
    p = tmp_path / ("in.npz" if case in ("not_zip", "empty") else "in.npy")
    if case == "not_zip":
        p.write_bytes(b"this is not a zip archive at all")
    elif case == "empty":
        with zipfile.ZipFile(p, "w"):
            pass
    else:
        a = {"strings": np.array([["a", "b"]]), "complex": np.ones((2, 2), np.complex64),
             "datetime": np.array([["2020-01-01", "2020-01-02"]], "datetime64[D]"),
             "scalar": np.float32(1)}[case]
        np.save(p, a)
    err = error_line(invoke("run", xor_onnx, "--input", p))
    want = {"not_zip": "not a zip archive", "empty": "contains no arrays", "strings": "expected real numbers",
            "complex": "complex64", "datetime": "datetime64", "scalar": "scalar"}[case]
    assert want in err


def test_run_refuses_negative_token_ids(tmp_path):
    spec = {"name": "emb", "inputs": {"ids": {"shape": [5], "dtype": "int64"}},
            "layers": [{"type": "embedding", "vocab_size": 10, "dim": 4}, {"type": "flatten"},
                       {"type": "dense", "units": 2, "activation": "softmax"}],
            "loss": "cross_entropy", "optimizer": {"type": "sgd", "lr": 0.1}}
    model = _compiled(tmp_path, spec)
    np.save(tmp_path / "ids.npy", np.array([[1, 2, -3, 4, 5]], np.int64))
    err = error_line(invoke("run", model, "--input", tmp_path / "ids.npy"))
    assert "negative token id -3" in err


# ---- wrong successes ------------------------------------------------------------------------------

def test_csv_first_row_with_one_bad_cell_is_an_error_not_a_header(tmp_path):
    (tmp_path / "d.csv").write_text("0,1,x\n0,0,0\n1,1,0\n1,0,1\n")
    err = error_line(invoke("train", xor_spec(tmp_path, "d.csv"), "--progress", "none"))
    assert "line 1" in err and "column 3 'x'" in err and "column 1 '0'" in err


def test_csv_header_rule(tmp_path):
    from nngraph.data.csvfile import read_table

    (tmp_path / "h.csv").write_text("\n a , b ,y\n1,2,3\n")
    v, header = read_table(tmp_path / "h.csv")
    assert header == ["a", "b", "y"] and v.tolist() == [[1, 2, 3]] and v.dtype == np.float32
    (tmp_path / "n.csv").write_text('1,"2",3\r\n4,5,6\r\n')
    v, header = read_table(tmp_path / "n.csv")
    assert header is None and v.tolist() == [[1, 2, 3], [4, 5, 6]]
    (tmp_path / "bom.csv").write_bytes("\ufeff1,2\n3,4\n".encode("utf-8"))
    assert read_table(tmp_path / "bom.csv")[0].tolist() == [[1, 2], [3, 4]]
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3,oops\n")
    with pytest.raises(DataError, match=r"line 3, column 2: not a number: 'oops'"):
        read_table(tmp_path / "bad.csv")
    (tmp_path / "ragged.csv").write_text("1,2\n3,4,5\n")
    with pytest.raises(DataError, match="line 2 has 3 columns, expected 2"):
        read_table(tmp_path / "ragged.csv")
    (tmp_path / "empty.csv").write_text("\n\n")
    with pytest.raises(DataError, match="the file is empty"):
        read_table(tmp_path / "empty.csv")


def test_csv_features_are_a_view_of_the_parsed_table(tmp_path):
    from nngraph.data import read_csv

    rng = np.random.default_rng(0)
    table = rng.integers(-50, 50, (70_000, 5)).astype(np.float32)
    (tmp_path / "t.csv").write_text("".join(",".join(f"{v:g}" for v in r) + "\n" for r in table))
    for col in (4, 0, 2):
        x, y, _ = read_csv(tmp_path / "t.csv", target=col)
        assert np.array_equal(x, np.delete(table, col, axis=1)) and np.array_equal(y, table[:, col])
        assert x.dtype == np.float32 and x.flags.c_contiguous and x.base is not None  # no second table


def test_float_idx_labels_are_not_truncated(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    (folder / "train-images-idx3-ubyte").write_bytes(_idx(8, (2, 1, 2), b"\0\1\2\3"))
    (folder / "train-labels-idx1-ubyte").write_bytes(_idx(0x0D, (2,), np.array([1.0, 1.5], ">f4").tobytes()))
    err = error_line(invoke("train", xor_spec(tmp_path, "mnist"), "--progress", "none"))
    assert "whole class ids" in err and "1.5" in err


def test_evaluate_refuses_nan_and_inf_inputs(tmp_path, xor_onnx):
    np.savez(tmp_path / "d.npz", x=np.array([[0, np.nan], [1, 1]], np.float32), y=np.zeros((2, 1), np.float32))
    err = error_line(invoke("evaluate", xor_onnx, "--data", tmp_path / "d.npz"))
    assert "NaN or Inf" in err
    np.savez(tmp_path / "i.npz", x=np.array([[0, np.inf], [1, 1]], np.float32), y=np.zeros((2, 1), np.float32))
    assert "NaN or Inf" in error_line(invoke("evaluate", xor_onnx, "--data", tmp_path / "i.npz"))


def test_binary_cross_entropy_refuses_targets_outside_0_1(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2), np.float32), y=np.array([[0], [1], [2], [-1]], np.float32))
    spec = xor_spec(tmp_path, "d.npz", loss="binary_cross_entropy")
    err = error_line(invoke("train", spec, "--progress", "none"))
    assert "binary_cross_entropy targets must be in [0, 1]" in err and "2 outside" in err


def test_series_values_near_1e300_are_refused(tmp_path):
    rows = "".join(f"{i},{(i % 7) * 1e300:g}\n" for i in range(40))
    (tmp_path / "s.csv").write_text("t,v\n" + rows)
    spec = {"name": "s", "inputs": {"x": {"shape": [4, 2]}},
            "layers": [{"type": "rnn", "units": 4}, {"type": "dense", "units": 1}],
            "loss": "mse", "optimizer": {"type": "sgd", "lr": 0.1}, "train": {"epochs": 1},
            "data": {"train": "s.csv", "window": 4}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    err = error_line(invoke("train", tmp_path / "spec.json", "--progress", "none"))
    assert "column 'v'" in err and "6e+300" in err


def test_inspect_of_an_empty_file(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"")
    assert "empty" in error_line(invoke("inspect", tmp_path / "m.onnx"))
    (tmp_path / "z.onnx").write_bytes(b"\0\0\0\0")
    error_line(invoke("inspect", tmp_path / "z.onnx"))


def test_sample_with_a_vocabulary_smaller_than_the_models_outputs(tmp_path):
    """shakespeare_gru (65 output ids) trained on a corpus of fewer distinct characters."""
    from nngraph.model import Model
    from nngraph.spec import load_spec

    model = Model.compile(load_spec(ROOT / "specs" / "shakespeare_gru.json"))
    model.metadata.update(vocab="ab \n", seq_len=100, task="char_lm")
    out = model.export_onnx(tmp_path / "lm.onnx")
    r = invoke("sample", out, "--prime", "ab", "--length", "200", "--temperature", "5", "--seed", "0")
    assert r.exit_code == 0, r.output
    assert set(r.stdout.rstrip("\n")) <= set("ab \n") and len(r.stdout) >= 200


# ---- ONNX files -----------------------------------------------------------------------------------

def test_initializer_with_raw_data_shorter_than_its_shape(tmp_path, xor_onnx):
    m = onnx.load(str(xor_onnx))
    t = m.graph.initializer[0]
    t.raw_data = t.raw_data[:4]
    onnx.save(m, str(tmp_path / "short.onnx"))
    err = error_line(invoke("verify", tmp_path / "short.onnx"))
    assert t.name in err and "raw data holds 4 bytes" in err


def test_metadata_spec_nested_thousands_deep(tmp_path, xor_onnx):
    m = onnx.load(str(xor_onnx))
    for p in m.metadata_props:
        if p.key == "nngraph.spec":
            p.value = "[" * 100_000 + "]" * 100_000
    onnx.save(m, str(tmp_path / "deep.onnx"))
    assert "nested too deep" in error_line(invoke("verify", tmp_path / "deep.onnx"))
    (tmp_path / "deep.json").write_text('{"name": ' + "[" * 50_000 + "]" * 50_000 + "}")
    assert "nested too deep" in error_line(invoke("check", tmp_path / "deep.json"))


@pytest.mark.parametrize("value", ["abc", "-3", "0", "1e9", "[" * 5000, "true"])
def test_malformed_seq_len_metadata(tmp_path, value):
    from nngraph.model import Model
    from nngraph.spec import load_spec

    model = Model.compile(load_spec(ROOT / "specs" / "shakespeare_gru.json"))
    model.metadata.update(vocab="ab")
    m = model.to_onnx()
    # a model with a dynamic time axis reads nngraph.seq_len for its context
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "time"
    onnx.helper.set_model_props(m, {**{p.key: p.value for p in m.metadata_props}, "nngraph.seq_len": value})
    onnx.save(m, str(tmp_path / "lm.onnx"))
    err = error_line(invoke("sample", tmp_path / "lm.onnx", "--length", "3"))
    assert "nngraph.seq_len" in err


# ---- run directory creation -----------------------------------------------------------------------

def test_enospc_while_creating_a_run_directory_leaves_nothing(tmp_path, monkeypatch):
    import errno

    from nngraph.train import rundir

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(rundir, "atomic_write_text", full)
    xor_csv(tmp_path)
    r = invoke("train", xor_spec(tmp_path, "xor.csv"), "--run-dir", tmp_path / "runs" / "r1", "--progress", "none")
    assert "No space left on device" in error_line(r)
    assert list((tmp_path / "runs").iterdir()) == []  # no .r1.partial-PID folder


# ---- data at the size users have ------------------------------------------------------------------

@pytest.mark.parametrize("mapped", [True, False])
def test_npy_training_inputs_are_read_by_rows_not_loaded(tmp_path, mapped):
    from nngraph.data import fit_inputs, load_source
    from nngraph.data.arrays import NpyRows

    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, 4, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.zeros(100, np.float32))
    ds = load_source(str(tmp_path / "x.npy"), {"y": str(tmp_path / "y.npy")})
    assert isinstance(ds.x, NpyRows) and ds.x.shape == (100, 4, 2)
    if not mapped:
        ds.x._shared["map"] = False  # as when RLIMIT_AS cannot hold the mapping: pread the rows
    feeds = fit_inputs(ds.x, {"x": ((8,), "float32")})
    rows = feeds["x"]
    assert isinstance(rows, NpyRows) and rows.shape == (100, 8)
    assert (rows._mapping() is not None) == mapped
    out = np.empty((5, 8), np.float32)
    idx = np.array([3, 4, 5, 99, 0])
    np.take(rows, idx, axis=0, out=out)  # what Trainer._gather does
    assert np.array_equal(out, x.reshape(100, 8)[idx])
    assert np.array_equal(np.asarray(rows[90:]), x.reshape(100, 8)[90:])
    out64 = np.empty((2, 8), np.float64)
    np.take(rows[10:20], np.array([0, 9]), axis=0, out=out64)
    assert np.array_equal(out64, x.reshape(100, 8)[[10, 19]].astype(np.float64))
    x[7, 0, 0] = np.nan
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(DataError, match="NaN or Inf"):
        fit_inputs(load_source(str(tmp_path / "x.npy"), {"y": str(tmp_path / "y.npy")}).x,
                   {"x": ((4, 2), "float32")})


def test_training_from_npy_rows_equals_training_from_arrays(tmp_path):
    from nngraph.spec import Spec
    from nngraph.workflow import train

    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 2)).astype(np.float32)
    y = (x[:, :1] * x[:, 1:] > 0).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    spec = {**XOR, "train": {"epochs": 3, "batch_size": 16, "seed": 0, "shuffle": True, "validation_split": 0.2}}
    a = train(Spec.from_dict({**spec, "data": str(tmp_path / "d.npz")}), progress="none", run_dir=tmp_path / "a")
    b = train(Spec.from_dict({**spec, "data": str(tmp_path / "x.npy")}), targets=str(tmp_path / "y.npy"),
                      progress="none", run_dir=tmp_path / "b")
    assert np.array_equal(a.model.params.flat, b.model.params.flat)
    ra, rb = (json.loads((tmp_path / d / "run.json").read_text()) for d in "ab")
    assert ra["data_sha256"] == rb["data_sha256"]  # the block-wise hash equals the whole-array one


def _vm_peak_kb(script: str, env: dict) -> int:
    out = subprocess.run([sys.executable, "-c", script + "\nprint(open('/proc/self/status').read())"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if l.startswith("VmPeak:"))
    return int(line.split()[1])


TRAIN_SCRIPT = textwrap.dedent("""
    import sys, resource
    limit = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    import numpy as np
    from nngraph.spec import Spec
    from nngraph.workflow import train
    from nngraph.model import Model
    Model.compile(Spec.from_dict(SPEC)).fit(np.zeros((64, 50), np.float32), np.zeros((64, 1), np.float32),
                                           epochs=1)  # warm the kernels (and LLVM) first
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if sys.argv[2:] == ["load"]:
        np.load(SPEC["data"])
    r = train(Spec.from_dict(SPEC), targets=YPATH, progress="none")
    print("trained", r.history.rows()[-1]["loss"])
""")


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and /proc are Linux's")
def test_training_from_npy_larger_than_the_address_space_limit(tmp_path):
    """RLIMIT_AS below the size of the .npy file: loading the file (or mapping it whole) is
    impossible, training gathers each batch's rows from it and finishes an epoch.

    The interpreter with numpy, Numba and compiled kernels needs ~380 MiB of address space here, so
    the limit is that plus 100 MiB of room, and the file is 200 MiB larger than the interpreter."""
    cols = 50
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

    def job(folder: Path, rows: int) -> str:
        spec = {"name": "big", "inputs": {"x": {"shape": [cols]}}, "layers": [{"type": "dense", "units": 1}],
                "loss": "mse", "optimizer": {"type": "sgd", "lr": 0.001},
                "train": {"epochs": 1, "batch_size": 4096, "seed": 0}, "data": str(folder / "x.npy")}
        x = np.lib.format.open_memmap(folder / "x.npy", "w+", np.float32, (rows, cols))
        for lo in range(0, rows, 200_000):
            x[lo:lo + 200_000] = np.random.default_rng(lo).standard_normal((min(200_000, rows - lo), cols))
        del x
        np.save(folder / "y.npy", np.zeros((rows, 1), np.float32))
        return f"SPEC = {spec!r}\nYPATH = {str(folder / 'y.npy')!r}\n" + TRAIN_SCRIPT

    # what the interpreter needs with the kernels compiled: the same job on a tiny file
    (tmp_path / "small").mkdir()
    base = _vm_peak_kb(job(tmp_path / "small", 64), env) * 1024
    limit = base + (100 << 20)
    rows = (limit + (100 << 20)) // (cols * 4)
    script = job(tmp_path, rows)
    size = (tmp_path / "x.npy").stat().st_size
    assert size > limit
    proc = subprocess.run([sys.executable, "-c", script, str(limit)], capture_output=True, text=True, env=env,
                          timeout=900)
    assert proc.returncode == 0 and "trained" in proc.stdout, proc.stderr[-2000:]
    print(f"interpreter peak {base >> 20} MiB, RLIMIT_AS {limit >> 20} MiB, file {size >> 20} MiB")
    # and the limit is real: the same job loading the inputs first fails
    proc = subprocess.run([sys.executable, "-c", script, str(limit), "load"], capture_output=True, text=True,
                          env=env, timeout=900)
    assert proc.returncode != 0 and "MemoryError" in proc.stderr, proc.stderr[-2000:]


def test_fuzzer_findings_are_one_line_errors(tmp_path, xor_onnx):
    """Reproducers from tools/fuzz.py: inspect of deep spec metadata, a .npy header onnx's tokenizer
    chokes on, names that are not UTF-8, an empty input to run."""
    m = onnx.load(str(xor_onnx))
    for p in m.metadata_props:
        if p.key == "nngraph.spec":
            p.value = "[" * 100_000 + "]" * 100_000
    onnx.save(m, str(tmp_path / "deep.onnx"))
    r = invoke("inspect", tmp_path / "deep.onnx")
    assert r.exit_code == 0 and "unreadable spec JSON" in r.output  # described, not a traceback
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (4, 2), '''" + b" " * 40 + b"\n")
    assert error_line(invoke("run", xor_onnx, "--input", bad)).startswith("error:")
    raw = bytearray(xor_onnx.read_bytes())
    name = raw.find(b"nngraph.version")  # a metadata key's bytes: make them invalid UTF-8
    raw[name:name + 2] = b"\xc6\xff"
    (tmp_path / "names.onnx").write_bytes(bytes(raw))
    assert error_line(invoke("inspect", tmp_path / "names.onnx")).startswith("error:")
    np.save(tmp_path / "empty.npy", np.zeros((0, 2), np.float32))
    assert "no input values" in error_line(invoke("run", xor_onnx, "--input", tmp_path / "empty.npy", "-o",
                                                  tmp_path / "o.csv"))


def test_npz_with_a_zip_version_zipfile_cannot_extract_is_one_line(tmp_path, xor_onnx):
    """tools/fuzz.py --seed 4 (a flipped byte in checkpoint.npz): zipfile raises NotImplementedError
    ("zip file version 19.0") for a directory entry that claims a version it does not support."""
    np.savez(tmp_path / "a.npz", x=np.ones((3, 2), np.float32))
    raw = bytearray((tmp_path / "a.npz").read_bytes())
    entry = raw.find(b"PK\x01\x02")  # the central directory's first entry: "version needed" at +6
    raw[entry + 6:entry + 8] = (190).to_bytes(2, "little")
    (tmp_path / "v19.npz").write_bytes(bytes(raw))
    line = error_line(invoke("run", xor_onnx, "--input", tmp_path / "v19.npz"))
    assert line.startswith("error:") and "v19.npz" in line and "version" in line, line


def test_inspect_of_spec_metadata_with_layers_not_a_list(tmp_path, xor_onnx):
    """tools/fuzz.py --seed 6 case 1050: "layers" in the embedded spec an integer (TypeError in
    inspect's preprocessing section); inspect describes the rest of the model."""
    m = onnx.load(str(xor_onnx))
    for p in m.metadata_props:
        if p.key == "nngraph.spec":
            spec = json.loads(p.value)
            spec["layers"] = 10 ** 39
            p.value = json.dumps(spec)
    onnx.save(m, str(tmp_path / "odd.onnx"))
    r = invoke("inspect", tmp_path / "odd.onnx")
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
