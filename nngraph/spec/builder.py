"""The Python builder: functions that produce exactly the Spec the equivalent JSON produces.

Every builder goes through the same validation as JSON (it builds the JSON object and parses it),
so there is one source of truth for what is valid.

    from nngraph import spec as S
    xor = S.build("xor", inputs={"x": S.Input([2])},
                  layers=[S.Dense(4, activation="sigmoid"), S.Dense(1, activation="sigmoid")],
                  loss="mse", optimizer=S.SGD(lr=0.5), train=S.TrainConfig(epochs=2000, batch_size=4))
"""
from __future__ import annotations

from typing import Any

from .model import Input, Layer, Optimizer, Spec, Train, parse_spec


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items() if v is not None}


def layer(type: str, *, name: str | None = None, inputs: list[str] | None = None, **attrs: Any) -> dict:
    """Any layer type by name, e.g. ``layer("conv2d", filters=16, kernel=3)``."""
    return _clean({"type": type, "name": name, "inputs": inputs, **attrs})


def Dense(units: int, activation: str | None = None, *, use_bias: bool | None = None,
          initializer: str | None = None, name: str | None = None, inputs: list[str] | None = None) -> dict:
    """A fully connected layer."""
    return layer("dense", name=name, inputs=inputs, units=units, activation=activation,
                 use_bias=use_bias, initializer=initializer)


def Activation(kind: str, *, name: str | None = None, inputs: list[str] | None = None, **attrs: Any) -> dict:
    """A stand-alone activation layer: ``relu``, ``sigmoid``, ``tanh``, ``softmax``, ``identity``,
    ``leaky_relu`` / ``elu`` (with ``alpha=``), ``gelu``, ``silu`` or ``softplus``."""
    return layer(kind, name=name, inputs=inputs, **attrs)


def Dropout(rate: float, *, name: str | None = None, inputs: list[str] | None = None) -> dict:
    """Inverted dropout (training only; the identity at inference and absent from the export)."""
    return layer("dropout", name=name, inputs=inputs, rate=rate)


def BatchNorm(momentum: float | None = None, epsilon: float | None = None, *, name: str | None = None,
              inputs: list[str] | None = None) -> dict:
    """Batch normalization per feature / channel (PyTorch's momentum convention)."""
    return layer("batchnorm", name=name, inputs=inputs, momentum=momentum, epsilon=epsilon)


def LayerNorm(epsilon: float | None = None, *, name: str | None = None, inputs: list[str] | None = None) -> dict:
    """Layer normalization over the last axis."""
    return layer("layernorm", name=name, inputs=inputs, epsilon=epsilon)


def SequencePool(mode: str | None = None, *, name: str | None = None, inputs: list[str] | None = None) -> dict:
    """Pool (N, time, features) over time: ``mode`` "mean" (default), "max", "first" or "last"."""
    return layer("sequence_pool", name=name, inputs=inputs, mode=mode)


def PositionalEmbedding(max_length: int | None = None, kind: str | None = None, *, name: str | None = None,
                        inputs: list[str] | None = None) -> dict:
    """Add a position vector to each step of (N, time, features): ``kind`` "learned" (default) or
    "sinusoidal"; ``max_length`` (default 256) the longest sequence."""
    return layer("positional_embedding", name=name, inputs=inputs, max_length=max_length, kind=kind)


def SGD(lr: float | None = None, momentum: float | None = None, nesterov: bool | None = None) -> dict:
    return _clean({"type": "sgd", "lr": lr, "momentum": momentum, "nesterov": nesterov})


def Adam(lr: float | None = None, beta1: float | None = None, beta2: float | None = None,
         eps: float | None = None) -> dict:
    return _clean({"type": "adam", "lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps})


def TrainConfig(**keys: Any) -> dict:
    """The ``train`` section: epochs, batch_size, seed, shuffle, validation_split, ..."""
    return _clean(keys)


def build(name: str, *, inputs: dict[str, Input | dict], layers: list[dict], loss: str | None = None,
          optimizer: dict | None = None, train: dict | None = None, data: Any = None) -> Spec:
    """Assemble and validate a Spec from builder pieces."""
    d: dict[str, Any] = {"name": name, "spec_version": 1,
                         "inputs": {k: (v.to_dict() if isinstance(v, Input) else v) for k, v in inputs.items()},
                         "layers": list(layers)}
    if loss is not None:
        d["loss"] = loss
    d["optimizer"] = optimizer if optimizer is not None else {"type": "sgd"}
    d["train"] = train if train is not None else {}
    if data is not None:
        d["data"] = data
    return parse_spec(d)


__all__ = ["Input", "Layer", "Optimizer", "Spec", "Train", "layer", "Dense", "Activation", "Dropout", "BatchNorm",
           "LayerNorm", "SequencePool", "PositionalEmbedding", "SGD", "Adam", "TrainConfig", "build"]
