"""Character language model on Tiny Shakespeare: validation loss (nats/char) and wall time.

    python tools/bench_charlm.py                                   # specs/shakespeare_gru.json, its epochs
    python tools/bench_charlm.py --epochs 2 -o /tmp/charlm.onnx    # then: nngraph sample /tmp/charlm.onnx

Trains the spec on the corpus (the last 10% of the text is the validation text, never trained
on), prints the validation loss after every epoch with the elapsed wall time, writes the ONNX
model, and prints a sample generated through onnxruntime. A benchmark, not a unit test: one epoch
is ~10,000 sequences of 100 characters.
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
    ap.add_argument("--spec", default=str(ROOT / "specs" / "shakespeare_gru.json"))
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("-o", "--output", default="charlm.onnx")
    ap.add_argument("--prime", default="ROMEO:")
    ap.add_argument("--length", type=int, default=300)
    ap.add_argument("--temperature", type=float, default=0.8)
    args = ap.parse_args()

    import numba

    from nngraph.model import Model
    from nngraph.sample import sample
    from nngraph.spec import load_spec
    from nngraph.workflow import load_data

    spec = load_spec(args.spec)
    ds = load_data(spec, args.data)
    print(f"corpus {args.data}: vocab {len(ds.meta['vocab'])}, {len(ds.y):,} training sequences, "
          f"{len(ds.y_test):,} validation sequences of {ds.meta['seq_len']} chars; "
          f"numba threads {numba.get_num_threads()}", flush=True)
    model = Model.compile(spec)
    model.metadata.update(ds.meta)
    epochs = args.epochs or spec.train.epochs
    t0 = time.perf_counter()

    def on_epoch(rec) -> None:
        print(f"epoch {rec.epoch}/{epochs}  train loss {rec.loss:.4f}  val loss {rec.val_loss:.4f} nats/char "
              f"({rec.val_loss / math.log(2):.3f} bits/char)  val accuracy {rec.val_metric:.3f}  "
              f"{rec.samples_per_s:,.0f} seq/s  wall {time.perf_counter() - t0:,.0f} s", flush=True)

    history = model.fit(ds.x, ds.y, epochs=epochs, validation_data=(ds.x_test, ds.y_test), on_epoch=on_epoch)
    wall = time.perf_counter() - t0
    last = history.records[-1]
    model.metadata["test_metrics"] = {"loss": round(last.val_loss, 6)}
    model.export_onnx(args.output)
    print(f"RESULT: validation loss {last.val_loss:.4f} nats/char after {epochs} epochs, "
          f"wall time {wall:,.0f} s ({wall / epochs:,.0f} s/epoch); wrote {args.output}")
    text = sample(args.output, prime=args.prime, length=args.length, temperature=args.temperature, seed=0)
    print(f"--- nngraph sample {args.output} --prime {args.prime!r} --length {args.length} "
          f"--temperature {args.temperature} --seed 0\n{text}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
