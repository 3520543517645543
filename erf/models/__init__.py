"""Models: a registry of reference and experimental architectures, model specs, checkpoints, inits.

Importing this package registers every built-in model.
"""

from erf.models import builders, reference, transformers  # noqa: F401  (registers the models)
from erf.models.factory import create_model
from erf.models.init import INITS, apply_init
from erf.models.loading import load_checkpoint, load_model, load_model_file, parse_model_args, rebuild_init
from erf.models.registry import list_models, register_model, unregister_model

__all__ = [
    "register_model",
    "unregister_model",
    "create_model",
    "list_models",
    "load_model",
    "load_checkpoint",
    "load_model_file",
    "parse_model_args",
    "rebuild_init",
    "apply_init",
    "INITS",
]
