"""Models: a registry of reference and experimental architectures, model specs, checkpoints, inits.

Importing this package registers every built-in model.
"""

from erf.models import builders, reference, transformers  # noqa: F401  (registers the models)
from erf.models.factory import create_model
from erf.models.init import INITS, apply_init
from erf.models.files import load_checkpoint, load_model_file, read_state_dict
from erf.models.loading import load_model, parse_model_args, rebuild_init
from erf.models.pretrained import check_pretrained
from erf.models.registry import ModelInfo, list_models, model_info, register_model, unregister_model
from erf.models.safetensors_format import save_safetensors

__all__ = [
    "register_model",
    "unregister_model",
    "create_model",
    "list_models",
    "model_info",
    "ModelInfo",
    "load_model",
    "check_pretrained",
    "load_checkpoint",
    "read_state_dict",
    "save_safetensors",
    "load_model_file",
    "parse_model_args",
    "rebuild_init",
    "apply_init",
    "INITS",
]
