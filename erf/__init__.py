"""erf: theoretical and effective receptive fields of neural networks.

The public API:

- ``receptive_field(model_or_layers, input_size, layer=None)``: the exact theoretical
  receptive field (TRF) of every layer of any ``nn.Module`` (or a layer list).
- ``measure(model, input_size, layer=None, ...)``: the effective receptive field of one
  unit, averaged over inputs and weight draws, with fits and confidence intervals.
- ``linear_erf(layers)``: the exact ERF of a linear chain (Luo et al.'s theory).
- ``create_model`` / ``load_model`` / ``list_models``: the model registry.
- ``load_config(path)`` / ``run_experiment(config)``: an experiment from a TOML config to
  its results folder (``erf run``); ``--resume`` is ``run_experiment(..., resume=True)``.
- ``summarize``, ``fit_gaussian``, ``metric_intervals``, ``fit_power_law``: fits and
  metrics of ERF maps (``erf.stats``); ``plot_erf`` and friends (``erf.plots``).
"""

from erf.analytic import Layer, LayerRF, LinearERF, RFReport, center_unit, linear_erf, receptive_field
from erf.experiment.config import Config, check_models, load_config
from erf.engine import ERFResult, measure
from erf.errors import AlignmentError, ConfigError, ErfError, ModelError, TraceError, UnsupportedOpError
from erf.models import apply_init, create_model, list_models, load_checkpoint, load_model, register_model
from erf.plots import plot_erf, plot_erf_grid, plot_growth
from erf.experiment.runner import run_experiment
from erf.stats import (PRESETS, fit_gaussian, fit_power_law, metric_intervals, moments, standard_error_map,
                       summarize)

__version__ = "0.1.0"

__all__ = [
    "measure", "ERFResult", "receptive_field", "linear_erf", "Layer", "LayerRF", "LinearERF", "RFReport", "center_unit",
    "create_model", "list_models", "load_model", "load_checkpoint", "register_model", "apply_init",
    "summarize", "moments", "fit_gaussian", "metric_intervals", "standard_error_map", "fit_power_law", "PRESETS",
    "plot_erf", "plot_erf_grid", "plot_growth", "load_config", "check_models", "run_experiment", "Config",
    "ErfError", "ModelError", "TraceError", "UnsupportedOpError", "AlignmentError", "ConfigError",
]
