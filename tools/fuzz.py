"""Fuzz nngraph's command line with mutated specs, data files, ONNX files and run directories.

    python tools/fuzz.py --cases 10000 --seed 0            # all kinds, in-process (click's CliRunner)
    python tools/fuzz.py --cases 200 --kinds onnx --show 5
    python tools/fuzz.py --cases 100 --subprocess           # one `python -m nngraph.cli` per case

Every case is generated from (seed, case index) alone, so ``--seed S --only I`` reproduces case I.
Each case gets its own temporary folder. Outcomes:

- ``ok``          exit 0
- ``error``       exit != 0 and stderr is exactly one line starting ``error:`` (the house rule)
- ``traceback``   an exception escaped the CLI (or "Traceback" in the output)
- ``multiline``   exit != 0 but stderr is not exactly one ``error:`` line
- ``hang``        the case ran longer than ``--timeout`` seconds
- ``crash``       (``--subprocess`` only) the process died of a signal
- ``wrong_success`` exit 0 on an input made invalid in a way that must be rejected (conservative:
  only mutations marked ``must_fail``)
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted(p for p in (ROOT / "specs").glob("*.json"))
KINDS = ("spec", "data", "onnx", "rundir")
BAD = ("traceback", "multiline", "hang", "crash", "wrong_success")


@dataclass
class Case:
    """One generated input: the files it wrote, the CLI arguments and what was done to them."""
    kind: str
    index: int
    args: list[str]
    desc: list[str] = field(default_factory=list)
    must_fail: bool = False


# ---------------------------------------------------------------- spec mutations

WEIRD: list[Any] = [None, True, False, [], {}, "", "x", -1, 0, 2**63, -(2**63), 1e308, 0.5, [1, 2], {"a": 1},
                    "\ud800", "dense_0.b", 10**30]
RAW_TOKENS = ["NaN", "Infinity", "-Infinity", "1" + "0" * 400, "1e400", '"\\ud800"', "[" * 50 + "]" * 50,
              "18446744073709551616", "-0", "1e-400"]


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if len(prefix) > 12:  # below a deep-nesting mutation: not worth walking (and not recursion-safe)
        return out
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


def _get(obj: Any, path: tuple) -> Any:
    for p in path:
        obj = obj[p]
    return obj


def mutate_spec_obj(rng: random.Random, spec: dict, desc: list[str]) -> tuple[dict, list[str]]:
    """Apply one structural mutation; returns (spec, raw substitutions to apply to the text)."""
    raw: list[str] = []
    paths = [p for p in _paths(spec) if p]
    path = rng.choice(paths)
    parent = _get(spec, path[:-1])
    key = path[-1]
    op = rng.choice(["delete", "replace", "replace", "raw", "deep", "unknown_layer", "shape", "rename",
                     "add_key", "dup_layer"])
    if op == "delete":
        del parent[key]
        desc.append(f"delete {'/'.join(map(str, path))}")
    elif op == "replace":
        v = rng.choice(WEIRD)
        parent[key] = copy.deepcopy(v)
        desc.append(f"set {'/'.join(map(str, path))} = {v!r}")
    elif op == "raw":
        tok = rng.choice(RAW_TOKENS)
        marker = f"__RAW{len(raw)}_{rng.randrange(10**9)}__"
        parent[key] = marker
        raw.append((marker, tok))  # type: ignore[arg-type]
        desc.append(f"raw {'/'.join(map(str, path))} = {tok[:40]}")
    elif op == "deep":
        v: Any = 1
        depth = rng.choice([100, 1000, 5000, 100000])
        for _ in range(depth):
            v = [v] if rng.random() < 0.5 else {"a": v}
        parent[key] = v
        desc.append(f"nest {'/'.join(map(str, path))} depth {depth}")
    elif op == "unknown_layer" and spec.get("layers"):
        i = rng.randrange(len(spec["layers"]))
        if isinstance(spec["layers"][i], dict):
            spec["layers"][i]["type"] = rng.choice(["bogus", "Dense", "", "dense ", "__init__", "conv3d"])
            desc.append(f"layer {i} type = {spec['layers'][i]['type']!r}")
    elif op == "shape" and isinstance(spec.get("inputs"), dict):
        for name, inp in spec["inputs"].items():
            if isinstance(inp, dict):
                inp["shape"] = rng.choice([[], [0], [-1], [2**40], [2**40, 2**40], [1.5], ["a"], [1] * 40, [3, 0, 2]])
                desc.append(f"inputs/{name}/shape = {inp['shape']}")
                break
    elif op == "rename" and spec.get("layers"):
        i = rng.randrange(len(spec["layers"]))
        if isinstance(spec["layers"][i], dict):
            spec["layers"][i]["name"] = rng.choice(["dense_0.b", "dense_0", "x", "", "a/b", "\ud800", "dense_1.W", "."])
            desc.append(f"layer {i} name = {spec['layers'][i]['name']!r}")
    elif op == "add_key" and isinstance(parent, dict):
        parent["zz_unknown"] = 1
        desc.append(f"add unknown key under {'/'.join(map(str, path[:-1]))}")
    elif op == "dup_layer" and spec.get("layers"):
        spec["layers"] = spec["layers"] + spec["layers"]
        desc.append("duplicate layer list")
    return spec, raw


def spec_text(rng: random.Random, base: dict, desc: list[str]) -> str:
    """Mutated JSON text of a spec (1-3 mutations, sometimes truncated or with a duplicated key)."""
    spec = copy.deepcopy(base)
    raws: list = []
    for _ in range(rng.randint(1, 3)):
        try:
            spec, raw = mutate_spec_obj(rng, spec, desc)
            raws += raw
        except (KeyError, IndexError, TypeError):
            pass
        if not isinstance(spec, dict):
            break
    try:
        text = json.dumps(spec, indent=1)
    except (ValueError, RecursionError):
        text = json.dumps(base)
        desc.append("(unserializable, original text)")
    for marker, tok in raws:
        text = text.replace(json.dumps(marker), tok)
    r = rng.random()
    if r < 0.1:
        cut = rng.randrange(len(text))
        text = text[:cut]
        desc.append(f"truncate at {cut}")
    elif r < 0.15:
        text = text.replace("{", '{"name": "dup", ', 1)
        desc.append("duplicate key 'name'")
    elif r < 0.18:
        text = text.replace('"', "'")
        desc.append("single quotes")
    return text


def gen_spec(rng: random.Random, case: Case, tmp: Path, base: "Bases") -> None:
    src = rng.choice(SPECS)
    case.desc.append(src.name)
    p = tmp / "s.json"
    raw = spec_text(rng, json.loads(src.read_text()), case.desc)
    p.write_bytes(raw.encode("utf-8", "surrogatepass"))
    # `compile` would also build and export the model: for big specs that is seconds, so mostly check.
    cmd = rng.choice(["check", "check", "check", "compile"]) if src.name in ("xor.json", "friedman_regression.json",
                                                                             "digits_mlp.json") else "check"
    case.args = [cmd, str(p)] + (["-o", str(tmp / "m.onnx")] if cmd == "compile" else [])


# ---------------------------------------------------------------- data mutations

def _npy_bytes(arr: Any) -> bytes:
    import io

    import numpy as np
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def gen_data(rng: random.Random, case: Case, tmp: Path, base: "Bases") -> None:
    import numpy as np
    fmt = rng.choice(["csv", "npy", "npz", "text"])
    good_x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    good_y = np.array([[0], [1], [1], [0]], np.float32)
    case.desc.append(fmt)
    op = rng.choice(["truncate", "header", "huge", "dtype", "nonfinite", "empty", "flip", "shape"])
    case.desc.append(op)
    if fmt in ("csv", "text"):
        text = base.xor_csv
        if op == "truncate":
            text = text[:rng.randrange(len(text))]
        elif op == "header":
            text = rng.choice(["a,b\n", "x1,x2,y,z\n", "\ufeff\ufeff", "1,x,y\n", '"\n']) + text
        elif op == "huge":
            text = text + ("1," * 100000) + "1\n"
        elif op in ("dtype", "nonfinite"):
            bad = rng.choice(["nan", "inf", "1+2j", "2026-01-01", "abc", "1e400", "-inf", "\x00"])
            text = text.replace("1", bad, 1 + rng.randrange(3))
        elif op == "empty":
            text = rng.choice(["", "\n", "x1,x2,y\n", ",,\n", "\n\n\n"])
        elif op == "flip":
            b = bytearray(text.encode())
            for _ in range(rng.randint(1, 5)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            text = b.decode("latin-1")
        elif op == "shape":
            text = "x1,x2,y\n0,0\n0,1,1,1\n"
        p = tmp / ("d.csv" if fmt == "csv" else "d.txt")
        p.write_bytes(text.encode("latin-1", "replace"))
    else:
        xs = good_x
        if op == "dtype":
            xs = rng.choice([good_x.astype(complex), np.array(["a", "b", "c", "d"]).reshape(4, 1).repeat(2, 1),
                             np.array([[1, 2]] * 4, dtype="datetime64[D]"), np.array([[None, 1]] * 4, dtype=object),
                             good_x.astype(np.float16), good_x.astype(np.uint64), good_x.astype(bool),
                             np.zeros(4, dtype=[("a", "f4"), ("b", "f4")])])
        elif op == "nonfinite":
            xs = good_x.copy()
            xs[rng.randrange(4), rng.randrange(2)] = rng.choice([np.nan, np.inf, -np.inf, 3e38])
        elif op == "empty":
            xs = rng.choice([np.zeros((0, 2), np.float32), np.zeros((4, 0), np.float32), np.float32(1.0)])
        elif op == "shape":
            xs = rng.choice([np.zeros((4, 3), np.float32), np.zeros((4, 2, 2), np.float32), np.zeros((3, 2), np.float32),
                             np.zeros(8, np.float32)])
        blob = _npy_bytes(xs)
        if op == "truncate":
            blob = blob[:rng.randrange(len(blob))]
        elif op == "header":
            hl = blob[:128]
            blob = hl.replace(b"'descr'", rng.choice([b"'dexcr'", b"'descr':'<f4', 'descr'"]), 1)[:128] + blob[128:] \
                if rng.random() < 0.5 else blob[:6] + bytes([rng.randrange(256), rng.randrange(256)]) + blob[8:]
        elif op == "huge":
            claimed = rng.choice([b"(4000000000000, 2)", b"(2**40, 2)", b"(-4, 2)", b"(9223372036854775807, 2)"])
            blob = blob.replace(b"(4, 2)", claimed, 1)
        elif op == "flip":
            b = bytearray(blob)
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            blob = bytes(b)
        if fmt == "npy":
            p = tmp / "d.npy"
            p.write_bytes(blob)
            (tmp / "y.npy").write_bytes(_npy_bytes(good_y))
        else:
            p = tmp / "d.npz"
            with zipfile.ZipFile(p, "w") as z:
                z.writestr("x.npy", blob)
                z.writestr("y.npy", _npy_bytes(good_y) if rng.random() < 0.8 else blob)
                if rng.random() < 0.2:
                    z.writestr("evil.pkl", b"\x80\x04N.")
    cmd = rng.choice(["train", "evaluate", "run"])
    if cmd == "train":
        case.args = ["train", str(ROOT / "specs" / "xor.json"), "--data", str(p), "--epochs", "1", "-q"]
        if fmt == "npy":
            case.args += ["--targets", str(tmp / "y.npy")]
    elif cmd == "evaluate":
        case.args = ["evaluate", str(base.onnx), "--data", str(p)]
        if fmt == "npy":
            case.args += ["--targets", str(tmp / "y.npy")]
    else:
        case.args = ["run", str(base.onnx), "--input", str(p), "-o", str(tmp / rng.choice(["o.npy", "o.csv", "o.json"]))]


# ---------------------------------------------------------------- ONNX mutations

def gen_onnx(rng: random.Random, case: Case, tmp: Path, base: "Bases") -> None:
    import onnx
    blob = base.onnx.read_bytes()
    op = rng.choice(["truncate", "flip", "meta", "meta", "raw_data", "garbage"])
    case.desc.append(op)
    if op == "truncate":
        cut = rng.randrange(len(blob))
        blob = blob[:cut]
        case.desc.append(f"at {cut}")
    elif op == "flip":
        b = bytearray(blob)
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b))
            b[i] = rng.randrange(256)
            case.desc.append(f"byte {i}")
        blob = bytes(b)
    elif op == "garbage":
        blob = rng.choice([b"", b"\x00" * 100, b"not onnx", json.dumps({"a": 1}).encode(),
                           bytes(rng.randrange(256) for _ in range(200))])
    else:
        m = onnx.load_from_string(blob)
        if op == "meta":
            props = {p.key: p for p in m.metadata_props}
            key = rng.choice(sorted(props) or ["nngraph.spec"])
            try:
                meta = json.loads(props[key].value) if key in props else {}
            except ValueError:
                meta = {}
            choice = rng.choice(["notjson", "deep", "wrong_layers", "mutate", "delete", "surrogate"])
            case.desc.append(f"{key}: {choice}")
            if choice == "notjson":
                val = rng.choice(["{", "", "null", "[]", "1e400", "NaN"])
            elif choice == "deep":
                val = "[" * 100000 + "]" * 100000
            elif choice == "wrong_layers" and isinstance(meta, dict):
                meta["layers"] = [{"type": "dense", "units": 7}, {"type": "dense", "units": 3}]
                val = json.dumps(meta)
            elif choice == "mutate" and isinstance(meta, dict) and meta:
                sub: list[str] = []
                val = spec_text(rng, meta, sub)
                case.desc += sub
            elif choice == "surrogate":
                val = '{"name": "\\ud800"}'
            else:
                val = None
            del m.metadata_props[:]
            for k, p in props.items():
                if k != key:
                    m.metadata_props.add(key=k, value=p.value)
            if val is not None:
                m.metadata_props.add(key=key, value=val)
        else:
            inits = list(m.graph.initializer)
            t = rng.choice(inits)
            data = t.raw_data or onnx.numpy_helper.to_array(t).tobytes()
            t.ClearField("float_data")
            t.raw_data = data[:rng.randrange(len(data))]
            case.desc.append(f"initializer {t.name} raw_data {len(t.raw_data)}/{len(data)} bytes")
            case.must_fail = True  # for commands that use the weights (see below)
        blob = m.SerializeToString()
    p = tmp / "m.onnx"
    p.write_bytes(blob)
    cmd = rng.choice(["inspect", "verify", "run"])
    # inspect reads the graph and metadata only: a short initializer need not stop it.
    case.must_fail = case.must_fail and cmd != "inspect"
    case.args = {"inspect": ["inspect", str(p)], "verify": ["verify", str(p), "--batch", "2"],
                 "run": ["run", str(p), "--input", str(base.xor_npy), "-o", str(tmp / "o.npy")]}[cmd]


# ---------------------------------------------------------------- run-directory mutations

def gen_rundir(rng: random.Random, case: Case, tmp: Path, base: "Bases") -> None:
    import numpy as np
    run = tmp / "run"
    shutil.copytree(base.run, run)
    files = sorted(f.name for f in run.iterdir() if f.is_file())
    target = rng.choice(files)
    f = run / target
    op = rng.choice(["truncate", "flip", "delete", "json", "member"] if target.endswith(".npz")
                    else ["truncate", "flip", "delete", "json", "json"])
    case.desc += [target, op]
    if op == "truncate":
        b = f.read_bytes()
        f.write_bytes(b[:rng.randrange(max(1, len(b)))])
    elif op == "flip":
        b = bytearray(f.read_bytes())
        for _ in range(rng.randint(1, 6)):
            if b:
                b[rng.randrange(len(b))] = rng.randrange(256)
        f.write_bytes(bytes(b))
    elif op == "delete":
        f.unlink()
    elif op == "json" and target.endswith(".json"):
        try:
            obj = json.loads(f.read_text())
        except ValueError:
            obj = None
        if isinstance(obj, dict) and obj:
            sub: list[str] = []
            f.write_bytes(spec_text(rng, obj, sub).encode("utf-8", "surrogatepass"))
            case.desc += sub
        else:
            f.write_text(rng.choice(["", "[]", "{", "null", "NaN"]))
    elif op == "json" and target.endswith(".csv"):
        lines = f.read_text().splitlines()
        f.write_text("\n".join(lines[:1] + ["nan,abc"] + lines[1:]) + "\n")
    elif op == "member" or op == "json":
        with np.load(f, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        if arrays:
            k = rng.choice(sorted(arrays))
            choice = rng.choice(["drop", "shape", "dtype", "nan", "huge", "scalar"])
            case.desc.append(f"{k}: {choice}")
            a = arrays[k]
            if choice == "drop":
                del arrays[k]
            elif choice == "shape":
                arrays[k] = a.reshape(-1)[: max(0, a.size - 1)]
            elif choice == "dtype":
                numeric = a.dtype.kind in "fiub"
                arrays[k] = rng.choice([a.astype(complex) if numeric else a, np.array(["x"]),
                                        a.astype(np.int8) if numeric else a])
            elif choice == "nan" and a.dtype.kind == "f" and a.size:
                a = a.copy()
                a.reshape(-1)[0] = np.nan
                arrays[k] = a
            elif choice == "huge":
                arrays[k] = np.array([2**62], np.int64)
            else:
                arrays[k] = np.array(-1)
            np.savez(f, **arrays)
    cmd = rng.choice(["history", "export", "resume"])
    if cmd == "history":
        case.args = ["history", str(run), "--format", rng.choice(["table", "csv", "json"])]
    elif cmd == "export":
        case.args = ["export", str(run), "-o", str(tmp / "e.onnx")] + (["--best"] if rng.random() < 0.3 else [])
    else:
        case.args = ["train", "--resume", str(run), "--epochs", "3", "-q"]


GENERATORS: dict[str, Callable] = {"spec": gen_spec, "data": gen_data, "onnx": gen_onnx, "rundir": gen_rundir}


# ---------------------------------------------------------------- bases, execution, classification

class Bases:
    """Files built once per session with the API: an exported xor model and a 2-epoch run."""

    def __init__(self, root: Path):
        import numpy as np

        import nngraph.workflow as wf
        self.xor_csv = (ROOT / "specs" / "xor.csv").read_text()
        self.onnx = root / "xor.onnx"
        self.run = root / "xor_run"
        wf.train(str(ROOT / "specs" / "xor.json"), epochs=2, output=self.onnx, run_dir=self.run,
                 log=lambda s: None, progress="none", report=lambda s: None)
        self.xor_npy = root / "xor_in.npy"
        np.save(self.xor_npy, np.array([[0, 1], [1, 0]], np.float32))


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout()


def classify(code: int | None, stderr: str, out: str, exc: BaseException | None, case: Case) -> str:
    """The outcome name of one finished case (see the module docstring)."""
    if isinstance(exc, _Timeout):
        return "hang"
    if exc is not None and not isinstance(exc, SystemExit):
        return "traceback"
    if "Traceback (most recent call last)" in stderr or "Traceback (most recent call last)" in out:
        return "traceback"
    if code is not None and code < 0:
        return "crash"
    if code == 0:
        return "wrong_success" if case.must_fail else "ok"
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if len(lines) == 1 and lines[0].startswith("error:"):
        return "error"
    return "multiline"


def run_in_process(case: Case, timeout: float) -> tuple[str, str]:
    """One case through click's CliRunner; file descriptor 2 is captured too, because native
    libraries (onnxruntime's logger) write there past sys.stderr, and a user would see it."""
    import traceback

    from click.testing import CliRunner

    from nngraph.cli import main
    runner = CliRunner()
    old = signal.signal(signal.SIGALRM, _alarm)
    sys.stderr.flush()
    saved_fd2 = os.dup(2)
    native = tempfile.TemporaryFile()
    os.dup2(native.fileno(), 2)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        try:
            r = runner.invoke(main, case.args, catch_exceptions=True)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
            os.dup2(saved_fd2, 2)
            os.close(saved_fd2)
    except _Timeout:
        return "hang", ""
    native.seek(0)
    native_err = native.read().decode("utf-8", "replace")
    native.close()
    exc = r.exception
    if isinstance(exc, _Timeout):
        return "hang", ""
    detail = r.stderr.strip()[:300]
    if exc is not None and not isinstance(exc, SystemExit):
        frames = traceback.extract_tb(r.exc_info[2]) if r.exc_info else []
        # The innermost frame of nngraph (where a fix goes), then the innermost frame overall.
        ours = [f for f in frames if "/nngraph/" in f.filename.replace(os.sep, "/")]
        sites = [f"{f.filename}:{f.lineno}" for f in ([ours[-1]] if ours else []) + frames[-1:]]
        detail = f"{type(exc).__name__}: {str(exc)[:200]}" + (f" at {' > '.join(dict.fromkeys(sites))}" if sites else "")
    stderr = r.stderr + native_err
    if native_err.strip():
        detail += f" | native stderr: {native_err.strip()[:200]}"
    return classify(r.exit_code, stderr, r.stdout, exc, case), detail


def run_subprocess(case: Case, timeout: float) -> tuple[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        p = subprocess.run([sys.executable, "-m", "nngraph.cli", *case.args], capture_output=True, text=True,
                           timeout=timeout, env=env, errors="replace")
    except subprocess.TimeoutExpired:
        return "hang", ""
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    detail = " | ".join(lines[-2:] if "Traceback" in p.stderr else lines[:2])[:400]
    return classify(p.returncode, p.stderr, p.stdout, None, case), detail


def make_case(seed: int, index: int, kinds: list[str], tmp: Path, bases: Bases) -> Case:
    """Case ``index`` of run ``seed``: a function of those two numbers only."""
    rng = random.Random(f"{seed}:{index}")
    kind = kinds[index % len(kinds)]
    case = Case(kind, index, [])
    GENERATORS[kind](rng, case, tmp, bases)
    return case


def fuzz(cases: int, seed: int = 0, kinds: list[str] | None = None, timeout: float = 20.0, subprocess_mode: bool = False,
         only: list[int] | None = None, echo: Callable[[str], None] | None = None,
         workdir: str | Path | None = None) -> list[tuple[Case, str, str]]:
    """Run the cases and return (case, outcome, detail) for each. Files go under ``workdir`` (a
    fresh temporary folder by default), one subfolder per case, removed after it."""
    kinds = list(kinds or KINDS)
    results = []
    with tempfile.TemporaryDirectory(prefix="nngraph-fuzz-", dir=workdir) as root_s:
        root = Path(root_s)
        bases = Bases(root)
        t0 = time.time()
        for i in (only if only is not None else range(cases)):
            tmp = root / f"case{i}"
            tmp.mkdir()
            case = make_case(seed, i, kinds, tmp, bases)
            run = run_subprocess if subprocess_mode else run_in_process
            outcome, detail = run(case, timeout)
            results.append((case, outcome, detail))
            shutil.rmtree(tmp, ignore_errors=True)
            if echo and (len(results) % 200 == 0):
                echo(f"{len(results)} cases, {time.time() - t0:.0f}s")
    return results


def tally_text(results: list[tuple[Case, str, str]], show: int, seed: int) -> str:
    counts: dict[str, Counter] = defaultdict(Counter)
    for case, outcome, _ in results:
        counts[case.kind][outcome] += 1
    cols = ["ok", "error", *BAD]
    lines = [f"{'kind':8}" + "".join(f"{c:>15}" for c in cols)]
    for kind in sorted(counts):
        lines.append(f"{kind:8}" + "".join(f"{counts[kind][c]:>15}" for c in cols))
    total = Counter()
    for c in counts.values():
        total.update(c)
    lines.append(f"{'total':8}" + "".join(f"{total[c]:>15}" for c in cols))
    # Group the bad cases by cause (exception type and where it was raised, or the first words of
    # the stray output) so one finding is listed once with its count and a few reproducers.
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for r in results:
        if r[1] in BAD:
            groups[(r[1], signature(r[2]))].append(r)
    for (bad, sig), rows in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"\n[{bad}] x{len(rows)}: {sig}")
        for case, _, detail in rows[:show]:
            lines.append(f"  --seed {seed} --only {case.index} ({case.kind}): {'; '.join(case.desc)[:300]}")
            lines.append(f"     nngraph {' '.join(case.args)}")
            lines.append(f"     {detail[:400]}")
    return "\n".join(lines)


def signature(detail: str) -> str:
    """The cause of a bad outcome without the case's particulars (paths, byte values)."""
    import re
    # onnxruntime's log lines carry a colour code and a timestamp
    detail = re.sub(r"\x1b\[[0-9;]*m|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ ", "", detail)
    if "native stderr:" in detail:
        native = detail.split("native stderr:", 1)[1]
        return "native stderr: " + native.strip()[:90]
    m = re.match(r"(\w+): .* at (\S+(?: > \S+)?)$", detail)
    if m:
        return f"{m.group(1)} at {m.group(2)}"
    return re.sub(r"/\S+", "PATH", detail)[:90]


def main() -> int:
    # one thread per case (set here, not at import: a test process that imports this module keeps
    # its own thread count, which Numba refuses to change once its pool runs)
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds per case before it counts as a hang")
    ap.add_argument("--subprocess", action="store_true", help="one interpreter per case (detects crashes)")
    ap.add_argument("--show", type=int, default=3, help="examples listed per bad outcome")
    ap.add_argument("--only", default=None, help="comma-separated case indices to run (reproduce)")
    a = ap.parse_args()
    kinds = [k for k in a.kinds.split(",") if k]
    bad_kind = set(kinds) - set(KINDS)
    if bad_kind:
        ap.error(f"unknown kinds {sorted(bad_kind)}")
    only = [int(x) for x in a.only.split(",")] if a.only else None
    results = fuzz(a.cases, a.seed, kinds, a.timeout, a.subprocess, only, echo=lambda s: print(s, file=sys.stderr, flush=True))
    print(tally_text(results, a.show, a.seed))
    return 1 if any(r[1] in BAD for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
