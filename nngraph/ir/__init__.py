"""The typed intermediate representation: Graph/Node/TensorType/ParamInfo and pure passes."""
from .graph import Graph, Node, ParamInfo, TensorType
from .passes import fuse_activations, mark_loss_fused, output_activation

__all__ = ["Graph", "Node", "ParamInfo", "TensorType", "fuse_activations", "mark_loss_fused", "output_activation"]
