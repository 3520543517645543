"""The gradient engine: ``measure()`` and its result, ``ERFResult``.

One file per step of a measurement: ``options`` (``MeasureOptions``, the parameter list),
``context`` (working model, target and unit, autocast), ``target`` (which tensor and how to
compute it), ``tokens`` (prefix tokens of token layers), ``crop`` (the TRF window, and the checks run once
per architecture in a process: ``forget_checks``), ``cone`` (each op only where the unit depends on it),
``inputs`` (probe inputs), ``probe`` (one batch's maps), ``diagnose`` (where NaNs start),
``accumulate`` (float64 sums and groups), ``ranks`` (sharing over torchrun processes),
``resume`` (state files), ``loop`` (the sampling loop), ``result`` (``ERFResult``) and
``core`` (``measure``, the orchestrator); ``profile`` and ``grid`` wrap the steps to measure several
targets (layers, or units of one layer) from shared passes.
"""

from erf.engine.cone import cone_plan_status
from erf.engine.core import measure
from erf.engine.crop import forget_checks
from erf.engine.options import MeasureOptions
from erf.engine.grid import GridMap, measure_grid
from erf.engine.profile import Profile, measure_targets, profile
from erf.engine.result import ERFResult
from erf.engine.resume import checksum
from erf.engine.target import default_layer, require_spatial
from erf.engine.tokens import PrefixTokensError, check_traced, check_value, token_grid

__all__ = ["measure", "MeasureOptions", "ERFResult", "checksum", "require_spatial", "default_layer",
           "PrefixTokensError", "check_traced", "check_value", "token_grid", "forget_checks",
           "cone_plan_status", "profile", "Profile", "measure_targets", "measure_grid", "GridMap"]
