"""erf: theoretical and effective receptive fields of neural networks.

The public API:

- ``receptive_field(model_or_layers, input_size, layer=None)``: the exact theoretical
  receptive field (TRF) of every layer of any ``nn.Module`` (or a layer list).
- ``linear_erf(layers)``: the exact ERF of a linear chain (Luo et al.'s theory).
- ``create_model`` / ``load_model`` / ``list_models``: the model registry.
"""

from erf.analytic import Layer, LayerRF, LinearERF, RFReport, center_unit, linear_erf, receptive_field
from erf.errors import AlignmentError, ConfigError, ErfError, ModelError, TraceError, UnsupportedOpError
from erf.models import create_model, list_models, load_checkpoint, load_model, register_model

__version__ = "0.1.0"

__all__ = [
    "receptive_field", "linear_erf", "Layer", "LayerRF", "LinearERF", "RFReport", "center_unit",
    "create_model", "list_models", "load_model", "load_checkpoint", "register_model",
    "ErfError", "ModelError", "TraceError", "UnsupportedOpError", "AlignmentError", "ConfigError",
]
