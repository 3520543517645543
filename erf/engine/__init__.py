"""The gradient engine: ``measure()`` and its result, ``ERFResult``.

One file per step of a measurement: ``options`` (the parameter list), ``target`` (which
layer and unit), ``crop`` (the TRF window), ``inputs`` (probe inputs), ``probe`` (one
batch's maps), ``accumulate`` (float64 sums and groups), ``loop`` (the sampling loop),
``resume`` (state files), ``result`` (``ERFResult``), ``measure`` (the orchestrator).
"""

from erf.engine.core import measure
from erf.engine.result import ERFResult
from erf.engine.target import require_spatial
from erf.engine.tokens import PrefixTokensError, check_traced, check_value, token_grid

__all__ = ["measure", "ERFResult", "require_spatial", "PrefixTokensError", "check_traced", "check_value",
           "token_grid"]
