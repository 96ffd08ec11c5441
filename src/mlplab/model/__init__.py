"""Model: the spec grammar, the MLP module, its Keras-shaped summary, and the closed-form training engine."""

from mlplab.model.engine import LOSSES
from mlplab.model.mlp import INITS, MLP, build
from mlplab.model.spec import ACTIVATIONS, LayerSpec, parse_spec
from mlplab.model.summary import layer_configs, summary

__all__ = ["ACTIVATIONS", "INITS", "LOSSES", "LayerSpec", "MLP", "build", "layer_configs", "parse_spec", "summary"]
