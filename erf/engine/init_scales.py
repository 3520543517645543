"""Residual branches closed at initialisation: zero or near-zero scales that pass (almost) no gradient.

Many libraries start a residual block as the identity: timm zero-initialises the last BatchNorm
weight of each residual branch (``zero_init_last``: ResNet, RegNet, Res2Net, ...), NF-Nets a
``gain`` of 0, and ConvNeXt, CaiT, PoolFormer, DeiT III and other layer-scale nets multiply the
branch by a ``gamma`` of 1e-6 to 1e-5. At such weights the branch adds (almost) nothing to the
output and passes (almost) no gradient, so the measured ERF is the stem and shortcut path's
alone (timm's resnet18 ``layer2`` at 96 px: an 11x11 support inside a 96x96 TRF).

``zero_scales`` finds them: the weight of a normalisation layer (BatchNorm, GroupNorm,
LayerNorm and their subclasses) whose every value is within ``tol`` of 0 (its output is then its
bias, a constant), and a multiplicative scale parameter (``gamma``, ``gamma_1``, ``scale``,
``gain``, ``layer_scale*``, ``ls1``/``ls2``) within ``tol`` of 0. A Global Response Norm's zero
weight is not one (GRN adds its input back: zero is its identity). ``note`` says what was found
in one line; ``measure()`` adds it where such a scale is applied before the measured layer
(``reached``). ``reset_scales`` sets them to 1 for experiments that want the branches open.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn as nn

__all__ = ["ZeroScale", "SCALE_TOL", "zero_scales", "reached", "note", "reset_scales"]

#: Largest |value| that counts as a closed branch (layer scales start at 1e-6 to 1e-5; 1 is neutral).
SCALE_TOL = 1e-3

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
_SCALE_NAME = re.compile(r"^(gamma(_?\d)?|scale|gain|layer_?scale\w*|ls\d?)$")
_SCALE_MODULE = re.compile(r"(^|\.)(ls\d|layer_?scale\w*)$")


@dataclass(frozen=True)
class ZeroScale:
    """One closed branch scale.

    Attributes:
        parameter: the parameter's qualified name (``layer1.0.bn2.weight``, ``stages.0.blocks.0.gamma``).
        module: the module that applies it (``layer1.0.bn2``, ``stages.0.blocks.0``).
        kind: ``"norm weight"`` or ``"layer scale"``.
        max_abs: the largest |value| of the parameter.
    """

    parameter: str
    module: str
    kind: str
    max_abs: float


def zero_scales(model: nn.Module, tol: float = SCALE_TOL) -> list[ZeroScale]:
    """Every normalisation weight and multiplicative branch scale of ``model`` within ``tol`` of 0.

    Args:
        model: any network (the weights as they are: at init, or loaded).
        tol: the largest |value| that counts as zero.

    Returns:
        The findings, in module order (empty for most models).
    """
    found = []
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if p.numel() == 0 or not p.is_floating_point() or p.device.type == "meta":
                continue
            full = f"{mname}.{pname}" if mname else pname
            if isinstance(module, _NORMS) and pname == "weight":
                kind = "norm weight"
            elif _SCALE_NAME.match(pname) or (_SCALE_MODULE.search(mname) and p.dim() <= 1):
                kind = "layer scale"
            else:
                continue
            top = float(p.detach().abs().max())
            if top <= tol:
                found.append(ZeroScale(full, mname, kind, top))
    return found


def reached(found: list[ZeroScale], model: nn.Module, run: Callable[[torch.Tensor], object],
            x: torch.Tensor) -> list[ZeroScale]:
    """The findings whose module completes its forward before ``run`` (a forward that may stop early) returns.

    Runs ``run(x)`` once under ``no_grad`` with forward hooks on the findings' modules. Call it
    only on a model in eval mode (a train-mode BatchNorm would update its statistics).

    Args:
        found: ``zero_scales(model)``.
        model: the network ``run`` calls.
        run: ``x -> output`` (``erf.engine.target.TargetRunner``: stops at the measured layer).
        x: one input.

    Returns:
        The findings applied before the measured layer, in the order given.
    """
    if not found:
        return []
    modules = dict(model.named_modules())
    done: set[str] = set()
    handles = []
    for name in {f.module for f in found}:
        handles.append(modules[name].register_forward_hook(lambda _m, _i, _o, name=name: done.add(name)))
    try:
        with torch.no_grad():
            run(x)
    finally:
        for h in handles:
            h.remove()
    return [f for f in found if f.module in done]


def note(found: Iterable[ZeroScale]) -> str | None:
    """One line on the closed branches, or None when there are none.

    Args:
        found: findings (``zero_scales`` or ``reached``).

    Returns:
        E.g. ``"residual branches closed in these weights: 8 normalisation weight(s) = 0 (layer1.0.bn2,
        ...; timm's zero_init_last ...): those branches pass (almost) no gradient, ..."``.
    """
    found = list(found)
    if not found:
        return None
    parts = []
    for kind in ("norm weight", "layer scale"):
        group = [f for f in found if f.kind == kind]
        if not group:
            continue
        names = [f.parameter if kind == "layer scale" else f.module for f in group]
        shown = ", ".join(names[:3]) + (f", ... ({len(names)} in all)" if len(names) > 3 else "")
        top = max(f.max_abs for f in group)
        size = "= 0" if top == 0 else f"<= {top:.3g}"
        if kind == "norm weight":
            parts.append(f"{len(group)} normalisation weight(s) {size} ({shown}; timm's zero_init_last zeroes the "
                         "last BatchNorm of each residual branch)")
        else:
            parts.append(f"{len(group)} layer scale(s) {size} ({shown}; ConvNeXt, CaiT, PoolFormer and DeiT III "
                         "start them at 1e-6 to 1e-5)")
    return ("residual branches closed in these weights: " + "; ".join(parts) + ": those branches pass (almost) "
            "no gradient, so the map is mostly the stem and shortcut path's; redraw the weights (init=) or open "
            "them with erf.engine.init_scales.reset_scales to measure the branches")


def reset_scales(model: nn.Module, found: Iterable[ZeroScale], value: float = 1.0) -> int:
    """Set the found scales of ``model`` to ``value`` (1: the branch as if it had no scale), in place.

    Args:
        model: the network the findings came from.
        found: ``zero_scales(model)``.
        value: the new value of every entry.

    Returns:
        How many parameters were set.
    """
    params = dict(model.named_parameters())
    n = 0
    with torch.no_grad():
        for f in found:
            params[f.parameter].fill_(value)
            n += 1
    return n
