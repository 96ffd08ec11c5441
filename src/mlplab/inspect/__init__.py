"""Look inside a trained MLP: hidden activations of any layer, 2-D embeddings and their quality scores."""

from mlplab.inspect.activations import activations, resolve_layers
from mlplab.inspect.embed import METHODS, Embedding, embed
from mlplab.inspect.quality import quality

__all__ = ["activations", "resolve_layers", "embed", "Embedding", "METHODS", "quality"]
