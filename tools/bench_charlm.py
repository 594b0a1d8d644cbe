"""Character language models on Tiny Shakespeare: validation loss (nats/char) against wall time.

    python tools/bench_charlm.py                      # the GRU and the transformer LM, each its spec's epochs
    python tools/bench_charlm.py --spec specs/shakespeare_gru.json --epochs 2 -o /tmp/charlm.onnx
                                                      # then: nngraph sample /tmp/charlm.onnx

Trains each spec on the corpus (the last 10% of the text is the validation text, never trained
on; both specs use that split, so their losses compare), prints the validation loss after every
epoch with the elapsed wall time, writes the ONNX model, prints a sample generated through
onnxruntime, and at the end both curves side by side. A benchmark, not a unit test: one epoch is
~10,000 sequences of 100 characters (GRU) or ~7,800 of 128 (transformer). The kernels are
compiled (or loaded from the cache) before the clock starts.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path("/work/shared/data/tinyshakespeare/input.txt")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", nargs="+", default=[str(ROOT / "specs" / "shakespeare_gru.json"),
                                                  str(ROOT / "specs" / "shakespeare_transformer.json")])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("-o", "--output", default="charlm.onnx",
                    help="ONNX file (with several specs: <stem>_<spec name>.onnx each)")
    ap.add_argument("--prime", default="ROMEO:")
    ap.add_argument("--length", type=int, default=300)
    ap.add_argument("--temperature", type=float, default=0.8)
    args = ap.parse_args()

    curves = []
    for spec_path in args.spec:
        output = args.output if len(args.spec) == 1 else \
            str(Path(args.output).with_name(f"{Path(args.output).stem}_{Path(spec_path).stem}.onnx"))
        curves.append(run(spec_path, args, output))
    if len(curves) > 1:
        print("\nvalidation loss (nats/char) against wall time, same corpus and split")
        for name, rows in curves:
            print(f"{name}: " + ", ".join(f"e{e} {w:,.0f} s {v:.3f}" for e, w, v in rows))


def run(spec_path: str, args, output: str) -> tuple[str, list[tuple[int, float, float]]]:
    """Train one spec; returns (name, [(epoch, wall seconds, validation loss)])."""
    import numba

    from nngraph.model import Model
    from nngraph.sample import sample
    from nngraph.spec import load_spec
    from nngraph.workflow import load_data

    spec = load_spec(spec_path)
    ds = load_data(spec, args.data)
    model = Model.compile(spec)
    print(f"{spec.name}: corpus {args.data}: vocab {len(ds.meta['vocab'])}, {len(ds.y):,} training sequences, "
          f"{len(ds.y_test):,} validation sequences of {ds.meta['seq_len']} chars; "
          f"{model.graph.param_count:,} parameters; numba threads {numba.get_num_threads()}", flush=True)
    model.metadata.update(ds.meta)
    epochs = args.epochs or spec.train.epochs
    # compile (or load) the kernels outside the timing: one epoch of one batch on a throwaway model
    n = spec.train.batch_size
    Model.compile(spec).fit(ds.x[:n], ds.y[:n], epochs=1, validation_data=(ds.x_test[:n], ds.y_test[:n]))
    t0 = time.perf_counter()
    rows: list[tuple[int, float, float]] = []

    def on_epoch(rec) -> None:
        wall = time.perf_counter() - t0
        rows.append((rec.epoch, wall, rec.val_loss))
        print(f"epoch {rec.epoch}/{epochs}  train loss {rec.loss:.4f}  val loss {rec.val_loss:.4f} nats/char "
              f"({rec.val_loss / math.log(2):.3f} bits/char)  val accuracy {rec.val_metric:.3f}  "
              f"{rec.samples_per_s:,.0f} seq/s  wall {wall:,.0f} s", flush=True)

    history = model.fit(ds.x, ds.y, epochs=epochs, validation_data=(ds.x_test, ds.y_test), on_epoch=on_epoch)
    wall = time.perf_counter() - t0
    last = history.records[-1]
    model.metadata["test_metrics"] = {"loss": round(last.val_loss, 6)}
    model.export_onnx(output)
    print(f"RESULT {spec.name}: validation loss {last.val_loss:.4f} nats/char after {epochs} epochs, "
          f"wall time {wall:,.0f} s ({wall / epochs:,.0f} s/epoch); wrote {output}")
    text = sample(output, prime=args.prime, length=args.length, temperature=args.temperature, seed=0)
    print(f"--- nngraph sample {output} --prime {args.prime!r} --length {args.length} "
          f"--temperature {args.temperature} --seed 0\n{text}\n")
    sys.stdout.flush()
    return spec.name, rows


if __name__ == "__main__":
    main()
