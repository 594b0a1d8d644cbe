"""Text generation from an exported character language model, through onnxruntime.

The model (e.g. specs/shakespeare_gru.json trained on a .txt corpus) maps token ids (batch, time)
to next-character scores (batch, time, vocab); its vocabulary rides in the ONNX metadata
(``nngraph.vocab``) and its training length in ``nngraph.seq_len``. Each new character is drawn
from softmax(scores_last / temperature), given the last ``seq_len`` characters as context (the
length the network was trained on, starting from a zero state).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import DataError, ExportError


def _metadata(sess) -> dict[str, str]:
    return dict(sess.get_modelmeta().custom_metadata_map)


def _outputs_probabilities(meta: dict[str, str]) -> bool:
    """Whether the model ends in a softmax (then its outputs are probabilities, not logits)."""
    from .ir import output_activation
    from .lowering import lower
    from .spec import Spec

    raw = meta.get("nngraph.spec")
    return raw is not None and output_activation(lower(Spec.from_json(raw))) == "softmax"


def _seq_len(model: str | Path, meta: dict[str, str]) -> int:
    """The training length from ``nngraph.seq_len`` (default 100); an ExportError if malformed."""
    raw = meta.get("nngraph.seq_len")
    if raw is None:
        return 100
    try:
        v = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        v = raw
    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 1_000_000:
        raise ExportError(f"{model}: metadata nngraph.seq_len must be an integer from 1 to 1000000, "
                          f"got {str(raw)[:40]!r}")
    return v


def sample(model: str | Path, prime: str = "", length: int = 300, temperature: float = 1.0,
           seed: int | None = None) -> str:
    """``prime`` followed by ``length`` generated characters."""
    from .data.sequences import encode
    from .runtime import session

    if length < 0:
        raise DataError(f"length must be >= 0, got {length}")
    if not temperature > 0:
        raise DataError(f"temperature must be > 0, got {temperature}")
    sess = session(model)
    meta = _metadata(sess)
    vocab = meta.get("nngraph.vocab")
    if not vocab:
        raise ExportError(f"{model}: no vocabulary in the model metadata (train it on a .txt corpus)")
    inputs = sess.get_inputs()
    if len(inputs) != 1 or inputs[0].type != "tensor(int64)" or len(inputs[0].shape) != 2:
        raise ExportError(f"{model}: expected one input of token ids (batch, time), got "
                          + ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs))
    fixed = inputs[0].shape[1] if isinstance(inputs[0].shape[1], int) else None
    context = fixed or _seq_len(model, meta)
    probs_out = _outputs_probabilities(meta)
    start = prime or ("\n" if "\n" in vocab else vocab[0])
    ids = list(encode(start, vocab))
    rng = np.random.default_rng(seed)
    name = inputs[0].name
    out = []
    for _ in range(length):
        window = ids[-context:]
        if fixed and len(window) < fixed:  # a fixed-length export: pad on the left with the first id
            window = [window[0]] * (fixed - len(window)) + window
        scores = sess.run(None, {name: np.array([window], np.int64)})[0][0, -1].astype(np.float64)
        logits = np.log(np.maximum(scores, 1e-30)) if probs_out else scores
        z = logits / temperature
        if len(z) > len(vocab):
            # the network has more outputs than the corpus had characters (e.g. shakespeare_gru's
            # 65-id embedding on a smaller alphabet): the extra ids are no character, never drawn
            z = z[:len(vocab)]
        elif len(z) < len(vocab):
            raise ExportError(f"{model}: the model scores {len(z)} ids but its vocabulary has "
                              f"{len(vocab)} characters")
        p = np.exp(z - z.max())
        p /= p.sum()
        nxt = int(rng.choice(len(p), p=p))
        ids.append(nxt)
        out.append(vocab[nxt])
    return (prime if prime else "") + "".join(out)
