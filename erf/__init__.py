"""erf: theoretical and effective receptive fields of neural networks.

The public API:

- ``receptive_field(model_or_layers, input_size, layer=None)``: the exact theoretical
  receptive field (TRF) of every layer of any ``nn.Module`` (or a layer list).
- ``measure(model, input_size, layer=None, ...)``: the effective receptive field of one
  unit, averaged over inputs and weight draws, with fits and confidence intervals.
- ``linear_erf(layers, signal=...)``: the exact ERF of a linear chain (Luo et al.'s theory), and
  the exact expected map of random linear nets for ``signal='square'`` / ``'abs'``.
- ``create_model`` / ``load_model`` / ``list_models``: the model registry.
- ``load_config(path)`` / ``run_experiment(config)``: an experiment from a TOML config to
  its results folder (``erf run``); ``--resume`` is ``run_experiment(..., resume=True)``.
- ``summarize``, ``fit_gaussian``, ``metric_intervals``, ``fit_power_law``: fits and
  metrics of ERF maps (``erf.stats``); ``paired_ratio_interval``, ``hierarchical_interval``,
  ``power_law_interval``: intervals of comparisons; ``uniform_reference``: the ERF against a
  uniform map over a clipped TRF; ``plot_erf`` and friends (``erf.plots``).

Every name is imported from its submodule on first use (PEP 562 ``__getattr__``), not
here: importing ``erf`` must not import torch, so that the ``erf`` command answers
``--help`` and ``--version`` in well under a second. ``import erf; erf.measure(...)``,
``from erf import measure`` and ``erf.stats`` work as if everything were imported here.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"  # the same as pyproject.toml (tests/test_cli_root.py checks it)

# public name -> the module that defines it
_API: dict[str, str] = {
    **dict.fromkeys(["receptive_field", "linear_erf", "Layer", "LayerRF", "LinearERF", "RFReport", "center_unit"],
                    "erf.analytic"),
    **dict.fromkeys(["measure", "ERFResult"], "erf.engine"),
    **dict.fromkeys(["profile", "Profile", "measure_grid", "GridMap"], "erf.engine"),
    **dict.fromkeys(["create_model", "list_models", "load_model", "load_checkpoint", "register_model",
                     "apply_init"], "erf.models"),
    **dict.fromkeys(["summarize", "moments", "fit_gaussian", "metric_intervals", "standard_error_map",
                     "fit_power_law", "PRESETS", "paired_ratio_interval", "hierarchical_interval",
                     "power_law_interval", "uniform_reference"], "erf.stats"),
    **dict.fromkeys(["plot_erf", "plot_erf_grid", "plot_growth"], "erf.plots"),
    **dict.fromkeys(["load_config", "check_models", "run_experiment", "Config"], "erf.experiment"),
    **dict.fromkeys(["ErfError", "ModelError", "TraceError", "UnsupportedOpError", "AlignmentError", "ConfigError"],
                    "erf.errors"),
}

__all__ = list(_API)


def __getattr__(name: str) -> Any:
    """Import a public name (or a submodule such as ``erf.stats``) on first use.

    Args:
        name: the attribute asked for.

    Returns:
        The object, cached in this module's globals for later look-ups.

    Raises:
        AttributeError: ``name`` is neither a public name nor a submodule of ``erf``.
    """
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
    elif not name.startswith("__"):
        try:
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names (lazy ones included) beside what is already loaded."""
    return sorted(set(globals()) | set(__all__))
