"""Receptive-field rules, one per op seen in a forward pass.

A rule takes a ``Call`` (the op's name, arguments, result, and a way to look up
what is known about each input tensor) and returns the ``Info`` of the result
(a list of them for ops that return several tensors). Ops are matched by the name
of the function torch dispatches (``conv2d``, ``add``, ``interpolate``...).

One file per family of ops: ``core`` (the ``Call`` protocol and shared helpers:
merging paths, globalising dims, sliding windows), ``window`` (conv, pooling,
padding), ``resample`` (transposed conv, interpolation, pixel shuffle), ``shape``
(indexing, reshape, permute, cat, split), ``mixing`` (reductions, norms, global),
``attention`` (linear, matmul, attention, windowed attention), and ``table`` (the
dispatch table: op name -> rule, in one place).
"""

from erf.analytic.rules.attention import windowed_attention
from erf.analytic.rules.core import Call, Rule, globalise, merge, pointwise, tensors_in
from erf.analytic.rules.table import IGNORED, LEAKS, POINTWISE, RULES, TREAT_AS, canonical, find_rule

__all__ = ["Call", "Rule", "tensors_in", "merge", "globalise", "pointwise", "windowed_attention",
           "RULES", "POINTWISE", "IGNORED", "LEAKS", "TREAT_AS", "canonical", "find_rule"]
