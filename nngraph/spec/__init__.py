"""Spec: parse, validate, build and serialise network specs. Imports nothing else from nngraph."""
from .builder import (SGD, Activation, Adam, BatchNorm, Dense, Dropout, LayerNorm, PositionalEmbedding, SequencePool,
                      TrainConfig, build, layer)
from .model import Input, Layer, Optimizer, Spec, Train, load_spec, parse_spec

__all__ = ["Spec", "Input", "Layer", "Optimizer", "Train", "load_spec", "parse_spec", "build", "layer", "Dense",
           "Activation", "Dropout", "BatchNorm", "LayerNorm", "SequencePool", "PositionalEmbedding", "SGD", "Adam",
           "TrainConfig"]
