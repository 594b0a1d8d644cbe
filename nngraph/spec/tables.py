"""The closed vocabulary of a spec: every layer type, loss, optimizer and train key, as data.

Type names map to this fixed registry, never to importable code. Adding a layer type adds one entry
to ``LAYERS`` (and its lowering in ``nngraph.ir.lower``).
"""
from __future__ import annotations

from dataclasses import dataclass

from .fields import Field

SPEC_VERSION = 1

ACTIVATIONS = ("identity", "relu", "sigmoid", "tanh", "softmax")
INITIALIZERS = ("glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "zeros", "orthogonal")


@dataclass(frozen=True)
class LayerSchema:
    """What a layer type accepts: its keys, how many inputs it takes, a one-line description."""

    fields: dict[str, Field]
    doc: str
    min_inputs: int = 1
    max_inputs: int = 1


def _act(default: str = "identity") -> Field:
    return Field("enum", default, "activation applied to the output", options=ACTIVATIONS)


LAYERS: dict[str, LayerSchema] = {
    "dense": LayerSchema(
        {
            "units": Field("int", doc="number of output features", minimum=1),
            "activation": _act(),
            "use_bias": Field("bool", True, "add a learned bias"),
            "initializer": Field("enum", None, "weight initializer (default: he_uniform for relu, "
                                 "glorot_uniform otherwise)", options=INITIALIZERS, nullable=True),
        },
        "fully connected layer y = act(x W^T + b), applied to the last axis",
    ),
    "relu": LayerSchema({}, "max(x, 0)"),
    "sigmoid": LayerSchema({}, "1 / (1 + exp(-x))"),
    "tanh": LayerSchema({}, "hyperbolic tangent"),
    "identity": LayerSchema({}, "passes its input through"),
    "softmax": LayerSchema({"axis": Field("int", -1, "axis to normalise over")},
                           "exp(x) / sum(exp(x)) over an axis"),
    "add": LayerSchema({}, "element-wise sum of inputs of one shape", min_inputs=2, max_inputs=64),
    "concat": LayerSchema({"axis": Field("int", -1, "feature axis to join on (batch excluded)")},
                          "joins inputs along an axis", min_inputs=2, max_inputs=64),
}

# Keys every layer may carry besides its own.
COMMON_LAYER_KEYS = ("type", "name", "inputs")

LOSSES = ("mse", "cross_entropy", "binary_cross_entropy")

OPTIMIZERS: dict[str, dict[str, Field]] = {
    "sgd": {
        "lr": Field("float", 0.01, "learning rate", minimum=0, exclusive_min=True),
        "momentum": Field("float", 0.0, "momentum factor (PyTorch formulation)", minimum=0, maximum=1),
        "nesterov": Field("bool", False, "Nesterov momentum (PyTorch formulation)"),
    },
    "adam": {
        "lr": Field("float", 0.001, "learning rate", minimum=0, exclusive_min=True),
        "beta1": Field("float", 0.9, "first-moment decay", minimum=0, maximum=1),
        "beta2": Field("float", 0.999, "second-moment decay", minimum=0, maximum=1),
        "eps": Field("float", 1e-8, "denominator term", minimum=0, exclusive_min=True),
    },
}

TRAIN: dict[str, Field] = {
    "epochs": Field("int", 10, "passes over the training data", minimum=1),
    "batch_size": Field("int", 32, "samples per step", minimum=1),
    "seed": Field("int", 0, "seed for initial weights, shuffling and the validation split", minimum=0),
    "shuffle": Field("bool", True, "shuffle the training data each epoch"),
    "validation_split": Field("float", 0.0, "fraction of the training data held out for validation",
                              minimum=0, maximum=0.9),
    "clip_norm": Field("float", None, "clip the gradient to this global L2 norm (null: no clipping)",
                       minimum=0, exclusive_min=True, nullable=True),
}

INPUT: dict[str, Field] = {
    "shape": Field("shape", doc="shape of one sample (batch excluded)"),
    "dtype": Field("enum", "float32", "element type", options=("float32", "int64")),
}

# `data` as an object: file paths (relative to the spec file) or a built-in name.
DATA: dict[str, Field] = {
    "train": Field("str", doc="training data: a built-in name, .npz, .npy (x) or .csv file, or a folder"),
    "y": Field("str", None, ".npy file of training targets (with a .npy train file)", nullable=True),
    "test": Field("str", None, "test data file", nullable=True),
    "y_test": Field("str", None, ".npy file of test targets", nullable=True),
    "target": Field("any", None, "CSV: target column name or index (default: the last column)",
                    nullable=True),
}

BUILTIN_DATASETS = ("digits",)
