"""Weight initialisation schemes, re-drawn in place and reproducibly from a ``torch.Generator``.

Names in ``INITS``:

* ``model``: leave the model's own weights untouched.
* ``uniform``: random weights from U(-sqrt(3/fan_in), +sqrt(3/fan_in)) (variance 1/fan_in).
* ``constant``: every conv/linear weight equal to 1/fan_in. This is what Luo et al. (2016),
  "Understanding the Effective Receptive Field in Deep CNNs", call "uniform weights": every
  input of a unit counts the same, so the ERF of a linear stack is a binomial/Gaussian.
* ``kaiming_normal``: N(0, 2/fan_in) (He et al., for ReLU).
* ``xavier_normal``: N(0, 2/(fan_in + fan_out)) (Glorot & Bengio).

For every name but ``model``: conv/linear biases are set to 0; norm layers (BatchNorm,
GroupNorm, LayerNorm, InstanceNorm) get weight 1 and bias 0, and BatchNorm running statistics
are reset (mean 0, variance 1).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn

from erf.errors import ErfError

InitFn = Callable[[nn.Module, torch.Generator], None]

INITS: tuple[str, ...] = ("model", "uniform", "constant", "kaiming_normal", "xavier_normal")

_WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear)
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def fan_in_out(weight: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a conv/linear weight, as ``torch.nn.init`` computes them."""
    receptive = math.prod(weight.shape[2:]) if weight.dim() > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def _draw(weight: torch.Tensor, name: str, generator: torch.Generator) -> torch.Tensor:
    """A new value for ``weight`` under scheme ``name``, drawn on the generator's device."""
    fan_in, fan_out = fan_in_out(weight)
    shape, device = weight.shape, generator.device
    if name == "constant":
        return torch.full(shape, 1.0 / fan_in)
    if name == "uniform":
        bound = math.sqrt(3.0 / fan_in)
        return torch.empty(shape, device=device).uniform_(-bound, bound, generator=generator)
    std = math.sqrt(2.0 / fan_in) if name == "kaiming_normal" else math.sqrt(2.0 / (fan_in + fan_out))
    return torch.empty(shape, device=device).normal_(0.0, std, generator=generator)


def _named_init(model: nn.Module, name: str, generator: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, _WEIGHTED):
            m.weight.copy_(_draw(m.weight, name, generator))
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, _NORMS):
            if getattr(m, "weight", None) is not None:
                m.weight.fill_(1.0)
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats:
                m.reset_running_stats()


def apply_init(model: nn.Module, init: str | InitFn, generator: torch.Generator) -> None:
    """Re-initialise ``model`` in place with scheme ``init`` (a name in ``INITS`` or a callable).

    A callable is called as ``init(model, generator)``. Draws come only from ``generator``, in
    module order, so the same generator seed gives identical weights; values are drawn on the
    generator's device and copied onto each parameter's device (CPU or CUDA).
    """
    with torch.no_grad():
        if callable(init):
            init(model, generator)
            return
        if init not in INITS:
            raise ErfError(f"unknown init {init!r}; choose one of {', '.join(INITS)} (or pass a callable)")
        if init != "model":
            _named_init(model, init, generator)
