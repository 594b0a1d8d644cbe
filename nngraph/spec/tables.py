"""The closed vocabulary of a spec: every layer type, loss, optimizer and train key, as data.

Type names map to this fixed registry, never to importable code. Adding a layer type adds one entry
to ``LAYERS`` (and its lowering in ``nngraph.ir.lower``).
"""
from __future__ import annotations

from dataclasses import dataclass

from .fields import Field

SPEC_VERSION = 1

# Element-wise activations beyond relu/sigmoid/tanh: also layer types of their own (LAYERS below).
# As a dense/conv ``activation`` they take their default alpha.
EXTRA_ACTIVATIONS = ("leaky_relu", "elu", "gelu", "silu", "softplus")
ACTIVATIONS = ("identity", "relu", "sigmoid", "tanh", "softmax") + EXTRA_ACTIVATIONS
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


CONV_ACTIVATIONS = ("identity", "relu", "sigmoid", "tanh") + EXTRA_ACTIVATIONS


def _conv_fields(size_kind: str) -> dict[str, Field]:
    what = "an int or (height, width)" if size_kind == "int_or_pair" else "an int"
    return {
        "filters": Field("int", doc="number of output channels", minimum=1),
        "kernel": Field(size_kind, doc=f"kernel size: {what}", minimum=1),
        "stride": Field(size_kind, 1, f"step between windows: {what}", minimum=1),
        "padding": Field("padding", "valid", '"valid" (none), "same" (output = ceil(input / stride), the odd '
                         'unit at the end), an int (every side), one int per axis, or begins then ends'),
        "dilation": Field(size_kind, 1, f"spacing between kernel taps: {what}", minimum=1),
        "groups": Field("int", 1, "channel groups (must divide channels and filters)", minimum=1),
        "use_bias": Field("bool", True, "add a learned bias per filter"),
        "activation": Field("enum", "identity", "activation applied to the output", options=CONV_ACTIVATIONS),
        "initializer": Field("enum", None, "weight initializer (default: he_uniform for relu, "
                             "glorot_uniform otherwise)", options=INITIALIZERS, nullable=True),
    }


def _pool_fields() -> dict[str, Field]:
    return {
        "size": Field("int_or_pair", doc="window: an int or (height, width)", minimum=1),
        "stride": Field("int_or_pair", None, "step between windows (default: the window size)", minimum=1,
                        nullable=True),
        "padding": Field("padding", "valid", '"valid", "same" (output = ceil(input / stride)), an int, '
                         "(height, width), or (top, left, bottom, right)"),
    }


def _pool1d_fields() -> dict[str, Field]:
    return {
        "size": Field("int", doc="window length", minimum=1),
        "stride": Field("int", None, "step between windows (default: the window length)", minimum=1, nullable=True),
        "padding": Field("padding", "valid", '"valid", "same" (output = ceil(input / stride), the odd unit at '
                         'the end), an int (both ends) or [begin, end]'),
    }


def _recurrent_fields() -> dict[str, Field]:
    return {
        "units": Field("int", doc="hidden state size per direction", minimum=1),
        "activation": Field("enum", "tanh", "state activation (RNN), candidate and cell activation (LSTM, "
                            "GRU); the gates always use the sigmoid", options=("tanh", "relu", "sigmoid")),
        "return_sequences": Field("bool", False, "output every time step (N, time, directions*units) "
                                  "instead of the last state (N, directions*units)"),
        "bidirectional": Field("bool", False, "also read the sequence backwards; the two directions' "
                               "features are concatenated"),
    }


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
    "leaky_relu": LayerSchema({"alpha": Field("float", 0.01, "slope for x < 0", minimum=0)},
                              "x for x >= 0, alpha x below"),
    "elu": LayerSchema({"alpha": Field("float", 1.0, "value approached as x -> -inf is -alpha", minimum=0,
                                       exclusive_min=True)},
                       "x for x > 0, alpha (exp(x) - 1) below"),
    "gelu": LayerSchema({}, "x Phi(x), Phi the standard normal CDF (exact, with erf)"),
    "silu": LayerSchema({}, "x sigmoid(x) (swish)"),
    "softplus": LayerSchema({}, "log(1 + exp(x))"),
    "layernorm": LayerSchema({"epsilon": Field("float", 1e-5, "added to the variance", minimum=0,
                                               exclusive_min=True)},
                             "normalises the last axis of each row to mean 0 and variance 1, then "
                             "scale * xhat + bias (learned, shape (features,))"),
    "softmax": LayerSchema({"axis": Field("int", -1, "axis to normalise over")},
                           "exp(x) / sum(exp(x)) over an axis"),
    "add": LayerSchema({}, "element-wise sum of inputs of one shape", min_inputs=2, max_inputs=64),
    "concat": LayerSchema({"axis": Field("int", -1, "feature axis to join on (batch excluded)")},
                          "joins inputs along an axis", min_inputs=2, max_inputs=64),
    "conv2d": LayerSchema(_conv_fields("int_or_pair"),
                          "2-D convolution over (N, channels, height, width), y = act(conv(x, W) + b); "
                          "W is (filters, channels/groups, kh, kw)"),
    "conv1d": LayerSchema(_conv_fields("int"),
                          "1-D convolution over (N, channels, length), y = act(conv(x, W) + b); "
                          "W is (filters, channels/groups, k)"),
    "maxpool2d": LayerSchema(_pool_fields(), "maximum over windows of (N, channels, height, width)"),
    "avgpool2d": LayerSchema(_pool_fields(), "mean over windows of (N, channels, height, width); "
                             "padding is not counted (count_include_pad=0)"),
    "global_avgpool2d": LayerSchema({}, "mean over height and width: (N, C, H, W) -> (N, C)"),
    "maxpool1d": LayerSchema(_pool1d_fields(), "maximum over windows of (N, channels, length)"),
    "avgpool1d": LayerSchema(_pool1d_fields(), "mean over windows of (N, channels, length); "
                             "padding is not counted (count_include_pad=0)"),
    "global_avgpool1d": LayerSchema({}, "mean over the length: (N, C, L) -> (N, C)"),
    "global_maxpool2d": LayerSchema({}, "maximum over height and width: (N, C, H, W) -> (N, C); the "
                                    "gradient goes to the first maximum (row-major)"),
    "flatten": LayerSchema({}, "(N, d1, ..., dk) -> (N, d1 * ... * dk), row-major"),
    "rnn": LayerSchema(_recurrent_fields(), "Elman recurrent layer over (N, time, features); inputs: the "
                       "sequence, optionally an initial state (N, directions*units)", max_inputs=2),
    "lstm": LayerSchema(_recurrent_fields(), "LSTM over (N, time, features) (ONNX gate order i, o, f, c); "
                        "inputs: the sequence, optionally initial h and c (N, directions*units)", max_inputs=3),
    "gru": LayerSchema({**_recurrent_fields(), "linear_before_reset": Field(
        "bool", False, "apply the reset gate after the recurrent product (PyTorch/cuDNN variant)")},
        "GRU over (N, time, features) (ONNX gate order z, r, h); inputs: the sequence, optionally an "
        "initial state (N, directions*units)", max_inputs=2),
    "embedding": LayerSchema({
        "vocab_size": Field("int", doc="number of distinct token ids (ids are 0 .. vocab_size-1)", minimum=1),
        "dim": Field("int", doc="length of each embedding vector", minimum=1)},
        "integer token ids (N, ...) -> learned vectors (N, ..., dim)"),
    "sequence_pool": LayerSchema({
        "mode": Field("enum", "mean", '"mean", "max" (the gradient goes to the first maximal step), "first" or '
                      '"last" time step', options=("mean", "max", "first", "last"))},
        "pools a sequence over time: (N, time, features) -> (N, features); any length in the ONNX export"),
    "positional_embedding": LayerSchema({
        "max_length": Field("int", 256, "longest sequence the table covers (rows of the table)", minimum=1),
        "kind": Field("enum", "learned", '"learned": a trainable table, init normal(0, 0.02); "sinusoidal": '
                      "the fixed sin/cos table of Vaswani et al. (non-trainable state)",
                      options=("learned", "sinusoidal"))},
        "adds a position vector to each step: y[n, t] = x[n, t] + table[t], table (max_length, features); the "
        "ONNX export takes any length up to max_length"),
    "dropout": LayerSchema({
        "rate": Field("float", doc="probability of zeroing each element while training", minimum=0,
                      maximum=1, exclusive_max=True)},
        "inverted dropout on any shape: while training y = x * keep / (1 - rate), keep ~ Bernoulli(1 - rate) "
        "from a counter-based hash of (seed, step, layer, sample, element); the identity at inference "
        "and in the ONNX export"),
    "normalize": LayerSchema({
        "mode": Field("enum", "standard", '"standard": (x - mean) / std, "minmax": (x - min) / (max - min), both '
                      'per feature from the training inputs before the first step; "scale": x * factor',
                      options=("standard", "minmax", "scale")),
        "factor": Field("float", 1.0, 'mode "scale": the fixed factor (e.g. 1/255 for 0..255 pixels)',
                        minimum=0, exclusive_min=True),
        "axis": Field("int", None, "feature axis of a sample (default: the channel axis of (C, H, W) images, "
                      "the last axis otherwise)", nullable=True)},
        "preprocessing inside the model: y = (x - shift) / divisor per feature, shift and divisor "
        "non-trainable state (standard/minmax read a model input directly); exported as ONNX Sub and Div"),
    "attention": LayerSchema({
        "heads": Field("int", doc="attention heads (the features must be divisible by it)", minimum=1),
        "causal": Field("bool", False, "each step attends only to itself and earlier steps (language models)"),
        "dropout": Field("float", 0.0, "dropout on the attention weights while training", minimum=0, maximum=1,
                         exclusive_max=True),
        "use_bias": Field("bool", True, "biases in the input and output projections")},
        "multi-head scaled dot-product self-attention over (N, time, features): a dense layer to Q, K, V, "
        "softmax(Q K^T / sqrt(d)) V per head, a dense output projection; any sequence length in the export"),
    "transformer_block": LayerSchema({
        "heads": Field("int", doc="attention heads (the features must be divisible by it)", minimum=1),
        "ff_units": Field("int", doc="units of the feed-forward layer inside the block", minimum=1),
        "causal": Field("bool", False, "causal self-attention (language models)"),
        "dropout": Field("float", 0.1, "dropout after the attention and the feed-forward layers and on the "
                         "attention weights while training", minimum=0, maximum=1, exclusive_max=True),
        "norm": Field("enum", "pre", '"pre": x + f(layernorm(x)) (GPT-2); "post": layernorm(x + f(x)) (the '
                      "original transformer)", options=("pre", "post")),
        "activation": Field("enum", "gelu", "activation of the feed-forward layer",
                            options=("relu", "gelu", "silu", "tanh")),
        "epsilon": Field("float", 1e-5, "the layer norms' epsilon", minimum=0, exclusive_min=True)},
        "a transformer encoder/decoder block (no cross-attention) over (N, time, features); lowers to "
        "layernorm, attention, dropout, add and per-step dense layers, which nngraph check lists"),
    "batchnorm": LayerSchema({
        "momentum": Field("float", 0.1, "weight of the batch statistic in the running-statistics update "
                          "(PyTorch's convention: running = (1 - momentum) running + momentum batch)",
                          minimum=0, maximum=1),
        "epsilon": Field("float", 1e-5, "added to the variance before the square root", minimum=0,
                         exclusive_min=True)},
        "batch normalisation per feature of (N, F), per channel of (N, C, L) and (N, C, H, W): batch "
        "statistics in training, running statistics in inference; learned scale and bias"),
}

# Keys every layer may carry besides its own.
COMMON_LAYER_KEYS = ("type", "name", "inputs")

LOSSES = ("mse", "cross_entropy", "binary_cross_entropy")

def _wd(default: float = 0.0, doc: str = "L2 penalty: wd * p is added to the gradient (PyTorch weight_decay)") -> Field:
    return Field("float", default, doc, minimum=0)


OPTIMIZERS: dict[str, dict[str, Field]] = {
    "sgd": {
        "lr": Field("float", 0.01, "learning rate", minimum=0, exclusive_min=True),
        "momentum": Field("float", 0.0, "momentum factor (PyTorch formulation)", minimum=0, maximum=1),
        "nesterov": Field("bool", False, "Nesterov momentum (PyTorch formulation)"),
        "weight_decay": _wd(),
    },
    "adam": {
        "lr": Field("float", 0.001, "learning rate", minimum=0, exclusive_min=True),
        "beta1": Field("float", 0.9, "first-moment decay", minimum=0, maximum=1, exclusive_max=True),
        "beta2": Field("float", 0.999, "second-moment decay", minimum=0, maximum=1, exclusive_max=True),
        "eps": Field("float", 1e-8, "denominator term", minimum=0, exclusive_min=True),
        "weight_decay": _wd(),
    },
    "adamw": {
        "lr": Field("float", 0.001, "learning rate", minimum=0, exclusive_min=True),
        "beta1": Field("float", 0.9, "first-moment decay", minimum=0, maximum=1, exclusive_max=True),
        "beta2": Field("float", 0.999, "second-moment decay", minimum=0, maximum=1, exclusive_max=True),
        "eps": Field("float", 1e-8, "denominator term", minimum=0, exclusive_min=True),
        "weight_decay": _wd(0.01, "decoupled weight decay: p -= lr * wd * p before the Adam step"),
    },
    "rmsprop": {
        "lr": Field("float", 0.01, "learning rate", minimum=0, exclusive_min=True),
        "alpha": Field("float", 0.99, "decay of the squared-gradient average", minimum=0, maximum=1),
        "eps": Field("float", 1e-8, "denominator term", minimum=0, exclusive_min=True),
        "momentum": Field("float", 0.0, "momentum factor", minimum=0, maximum=1),
        "centered": Field("bool", False, "divide by the estimated variance instead of the second moment"),
        "weight_decay": _wd(),
    },
}

_MONITOR_DOC = ("history column to watch: loss, val_loss, accuracy, val_accuracy, val_top_k_accuracy, "
                "val_mse, val_mae ... (default: train.monitor)")

SCHEDULES: dict[str, dict[str, Field]] = {
    "constant": {},
    "step": {
        "step_size": Field("int", doc="epochs between decays", minimum=1),
        "gamma": Field("float", 0.1, "factor applied every step_size epochs", minimum=0, exclusive_min=True),
    },
    "exponential": {
        "gamma": Field("float", doc="factor applied every epoch", minimum=0, exclusive_min=True),
    },
    "cosine": {
        "epochs": Field("int", None, "length of the cosine (default: train.epochs)", minimum=1, nullable=True),
        "min_lr": Field("float", 0.0, "learning rate at the end of the cosine", minimum=0),
        "warmup_epochs": Field("int", 0, "epochs of linear warm-up: lr * (e + 1) / (warmup_epochs + 1)",
                               minimum=0),
    },
    "reduce_on_plateau": {
        "monitor": Field("str", None, _MONITOR_DOC, nullable=True),
        "factor": Field("float", 0.1, "factor applied when the monitored value stops improving",
                        minimum=0, exclusive_min=True, maximum=1),
        "patience": Field("int", 10, "epochs without improvement before reducing", minimum=0),
        "min_delta": Field("float", 1e-4, "smallest change that counts as an improvement", minimum=0),
        "cooldown": Field("int", 0, "epochs to wait after a reduction before counting again", minimum=0),
        "min_lr": Field("float", 0.0, "lower bound of the learning rate", minimum=0),
    },
}

EARLY_STOPPING: dict[str, Field] = {
    "monitor": Field("str", None, _MONITOR_DOC, nullable=True),
    "patience": Field("int", 10, "epochs without improvement before stopping", minimum=0),
    "min_delta": Field("float", 0.0, "smallest change that counts as an improvement", minimum=0),
    "restore_best": Field("bool", True, "end with the weights of the best epoch"),
}

METRICS = ("top_k_accuracy", "mse", "mae")

TRAIN: dict[str, Field] = {
    "epochs": Field("int", 10, "passes over the training data", minimum=1),
    "batch_size": Field("int", 32, "samples per step", minimum=1),
    "seed": Field("int", 0, "seed for initial weights, shuffling and the validation split", minimum=0,
                  maximum=2**63 - 1),
    "shuffle": Field("bool", True, "shuffle the training data each epoch"),
    "validation_split": Field("float", 0.0, "fraction of the training data held out for validation",
                              minimum=0, maximum=0.9),
    "clip_norm": Field("float", None, "clip the gradient to this global L2 norm (null: no clipping)",
                       minimum=0, exclusive_min=True, nullable=True),
    "schedule": Field("typed_table", None, "learning-rate schedule, applied at each epoch start",
                      nullable=True, sub=SCHEDULES),
    "early_stopping": Field("table", None, "stop when the monitored value stops improving", nullable=True,
                            sub=EARLY_STOPPING),
    "monitor": Field("str", None, "history column that picks the best checkpoint (default: val_loss "
                     "with validation data, else loss); mode follows the name (loss/mse/mae: min)",
                     nullable=True),
    "metrics": Field("str_list", None, "extra metrics computed on the validation data each epoch",
                     nullable=True, options=METRICS),
    "top_k": Field("int", 5, "k of top_k_accuracy", minimum=1),
    "checkpoint_every": Field("int", 1, "epochs between checkpoints in a run directory", minimum=1),
    "check_finite": Field("bool", True, "check the gradient for NaN/Inf at every step"),
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
    "window": Field("int", None, "CSV time series: time steps per input window (turns windowing on)",
                    minimum=1, nullable=True),
    "horizon": Field("int", 1, "CSV time series: the target is this many steps after the window", minimum=1),
    "columns": Field("any", None, "CSV time series: feature columns (names or indices; default: every "
                     "numeric column)", nullable=True),
    "normalize": Field("bool", True, "CSV: standardise the inputs inside the model (a normalize layer, "
                       "statistics of the training split); time series (default true) also the target, and the "
                       "exported model answers in target units; tabular CSV only when true is given"),
    "seq_len": Field("int", None, "text corpus (.txt): characters per training sequence", minimum=1,
                     nullable=True),
    "stride": Field("int", None, "text corpus: characters between sequence starts (default: seq_len)",
                    minimum=1, nullable=True),
    "split": Field("float", None, "time series / text: fraction held out (chronologically last) as the "
                   "test set (default 0.2 for series, 0.1 for text)", minimum=0, maximum=0.9, nullable=True),
}

BUILTIN_DATASETS = ("digits", "sine", "waves")
