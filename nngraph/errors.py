"""The package's exceptions. Every user-facing failure is one of these, so the CLI can turn it
into a one-line message and an exit code instead of a traceback."""
from __future__ import annotations


class NNGraphError(Exception):
    """Base class: a problem the user can fix (bad spec, bad data, bad file)."""

    exit_code = 2


class SpecError(NNGraphError):
    """A spec is invalid. ``path`` is the JSON path of the offending field, e.g. ``layers[2].units``."""

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class ShapeError(NNGraphError):
    """Shapes do not fit together; the message names the layer and expected vs actual shapes."""


class DataError(NNGraphError):
    """A data file is missing, unreadable, or does not fit the spec."""


class ExportError(NNGraphError):
    """An ONNX file cannot be written or read back."""


class TrainingDiverged(NNGraphError):
    """Training produced NaN or Inf."""

    exit_code = 1


class TrainingInterrupted(NNGraphError):
    """Training stopped on SIGINT/SIGTERM after saving a resumable checkpoint (exit 130 / 143)."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code


class VerificationFailed(NNGraphError):
    """onnxruntime and the Numba forward pass disagree beyond tolerance."""

    exit_code = 1
