"""The transformer block: a convenience layer that expands into primitive layers (expansion.py).

Pre-norm (``"norm": "pre"``, the default; GPT-2, torch ``norm_first=True``):

    h = x + dropout(attention(layernorm_1(x)))
    y = h + dropout(ff_2(dropout(act(ff_1(layernorm_2(h))))))

Post-norm (``"norm": "post"``; the original transformer, torch's default):

    h = layernorm_1(x + dropout(attention(x)))
    y = layernorm_2(h + dropout(ff_2(dropout(act(ff_1(h))))))

``ff_1`` is a dense layer of ``ff_units`` with the activation (GELU by default) and ``ff_2`` a dense
layer back to the F input features, both applied per time step; the attention layer uses the block's
``dropout`` on its attention weights too, as torch.nn.TransformerEncoderLayer does. Dropout layers
are left out when the rate is 0. Node names: ``<block>/ln1``, ``<block>/attn`` (with ``/qkv`` and
``/sdpa``), ``<block>/drop1``, ``<block>/res1``, ``<block>/ln2``, ``<block>/ff1``, ``<block>/ff_drop``,
``<block>/ff2``, ``<block>/drop2``, and the block's own name for its output.
"""
from __future__ import annotations

from typing import Any

from ..ir.graph import TensorType
from .attention import check_attention_input
from .expansion import SubLayer


def expand_block(name: str, attrs: dict[str, Any], inputs: tuple[str, ...], types: list[TensorType],
                 layer: str) -> list[SubLayer]:
    """transformer_block -> layernorm, attention, dropout, add, dense, dense, dropout, add."""
    f = check_attention_input(layer, types[0], attrs["heads"])
    rate, eps, pre = attrs["dropout"], attrs["epsilon"], attrs["norm"] == "pre"
    subs: list[SubLayer] = []

    def add(part: str, type_: str, ins: tuple[str, ...], **a: Any) -> str:
        sub = name if part == "" else f"{name}/{part}"
        subs.append(SubLayer(sub, type_, a, ins))
        return sub

    def dropout(part: str, v: str) -> str:
        return add(part, "dropout", (v,), rate=rate) if rate > 0 else v

    x = inputs[0]
    attn_in = add("ln1", "layernorm", (x,), epsilon=eps) if pre else x
    a = add("attn", "attention", (attn_in,), heads=attrs["heads"], causal=attrs["causal"], dropout=rate)
    h = add("res1", "add", (x, dropout("drop1", a)))
    if not pre:
        h = add("ln1", "layernorm", (h,), epsilon=eps)
    ff_in = add("ln2", "layernorm", (h,), epsilon=eps) if pre else h
    ff = add("ff1", "dense", (ff_in,), units=attrs["ff_units"], activation=attrs["activation"])
    ff = add("ff2", "dense", (dropout("ff_drop", ff),), units=f)
    out = dropout("drop2", ff)
    if pre:
        add("", "add", (h, out))
    else:
        add("", "layernorm", (add("res2", "add", (h, out)),), epsilon=eps)
    return subs


EXPANSIONS = {"transformer_block": expand_block}
