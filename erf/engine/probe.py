"""One batch's ERF maps: forward to the target, the unit's objective, its input gradient, the signal.

The objective is the chosen unit summed over the batch, so one ``torch.autograd.grad`` returns
every sample's input gradient. ``channels_cancel`` spots a channel sum that does not move with
the input (the channels cancel), which would otherwise read as a flat, empty map.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn

from erf import stats
from erf.engine.diagnose import locate_nonfinite
from erf.engine.inputs import make_source
from erf.errors import ErfError

__all__ = ["Probe", "unit_activation", "channels_cancel"]


class Probe:
    """Computes per-sample ERF maps (float64) of one batch: forward, objective, grad, signal."""

    def __init__(self, runner: Callable[[torch.Tensor], torch.Tensor], preset: stats.Preset, channel: int | None,
                 amp: dict[str, Any], index: dict[int, int], model: nn.Module | None = None, check: bool = True):
        """
        Args:
            runner: input -> the target layer's output (``erf.engine.target.TargetRunner``).
            preset: the map definition (target reduction, signal, channel reduction).
            channel: one output channel, or None for all.
            amp: ``{"ctx": autocast context factory}``.
            index: tensor dim -> index of the unit in the layer's output.
            model: the working model, to say where a NaN starts (None: not located).
            check: raise on a NaN/Inf map in ``maps`` (a host read per batch); False leaves it to the
                caller (``Accumulator.first_nonfinite``, then ``locate`` on that batch).
        """
        self.runner, self.preset, self.channel, self.amp, self.index = runner, preset, channel, amp, index
        self.model, self.check = model, check
        self.copy_input = False  # set once the model is seen to work in place on its input

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        """Raw input gradient of the (batch-summed) target.

        Raises:
            ErfError: the target does not depend on the input.
        """
        x = x.detach().requires_grad_(True)
        with self.amp["ctx"]():
            try:
                out = self.runner(x.clone() if self.copy_input else x)
            except RuntimeError as exc:
                if self.copy_input or "leaf Variable" not in str(exc):
                    raise
                # the model works in place on its input (nn.ReLU(inplace=True) first, x.mul_(2)): feed a copy
                # in the graph, not the leaf; it runs as in training, and the gradient is the same
                self.copy_input = True
                out = self.runner(x.clone())
            act = unit_activation(out, self.index, self.channel)
            obj = stats.reduce_target(act, self.preset).sum()
        if not obj.requires_grad:
            raise ErfError("the target does not depend on the input (no gradient path); pick another layer")
        (g,) = torch.autograd.grad(obj, x, allow_unused=True)
        if g is None:
            raise ErfError("the target does not depend on the input (no gradient path); pick another layer")
        return g

    def maps(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample maps ``(B, *spatial)`` in float64.

        Raises:
            ErfError: no gradient path, or (``self.check``) a NaN/Inf gradient (with where it starts).
        """
        g = self.grad(x)
        if g.dtype not in (torch.float32, torch.float64):  # bf16/half: reduce in float32
            g = g.float()
        # per-sample signal and channel reduction in the gradient's dtype (C terms); sums over samples in float64
        m = stats.reduce_gradient(g, self.preset, channel_axis=1).to(torch.float64)
        if self.check:
            self.locate(x, m)
        return m

    def locate(self, x: torch.Tensor, m: torch.Tensor | None = None) -> None:
        """Raise when the maps of ``x`` (``m`` if given) hold NaN/Inf, naming where they start (a host read).

        Raises:
            ErfError: a NaN/Inf gradient.
        """
        if m is None:
            m = stats.reduce_gradient(self.grad(x).float(), self.preset, channel_axis=1)
        if not bool(torch.isfinite(m).all()):
            where = locate_nonfinite(self.model, self.grad, x) if self.model is not None else "NaN/Inf"
            raise ErfError(f"the input gradient contains NaN or Inf: {where}; check that layer's weights and "
                           "inputs, or try dtype='float64'")


def unit_activation(out: torch.Tensor, index: dict[int, int], channel: int | None) -> torch.Tensor:
    """(B, channels) activations of the unit: position dims indexed, the rest flattened.

    Raises:
        ErfError: ``channel`` is not a channel of the layer.
    """
    sel: list[Any] = [slice(None)] * out.dim()
    for d, i in index.items():
        sel[d] = i
    a = out[tuple(sel)].reshape(out.shape[0], -1)
    if a.dtype in (torch.float16, torch.bfloat16):
        a = a.float()
    if channel is not None:
        if not 0 <= channel < a.shape[1]:
            raise ErfError(f"channel {channel} does not exist: the layer has {a.shape[1]} channels "
                           f"(use 0..{a.shape[1] - 1})")
        a = a[:, channel:channel + 1]
    return a


def channels_cancel(peak: float, probe: Probe, seed: int, shape: tuple[int, ...], dev: torch.device,
                    fdtype: torch.dtype, window: tuple[slice, ...] | None) -> bool:
    """True when the channel-summed map's ``peak`` (max |mean|) is ~1e-5 of one channel's map.

    Costs one extra one-sample pass, only for maps whose peak is under 1e-4 (float32 noise
    left by cancelling channels is ~1e-8; a sigmoid net's vanishing map is tiny on every channel).

    Args:
        peak: max |mean map| of the measurement.
        probe: the measurement's probe (its runner, preset, autocast and unit are reused).
        seed, shape, dev, fdtype, window: how the measurement made its inputs (``make_source``).

    Returns:
        Whether the channels cancel.
    """
    if peak >= 1e-4:
        return False
    x = make_source("gaussian", shape, dev, fdtype, window)(seed, 0, 0, 1)
    one = Probe(probe.runner, probe.preset, 0, probe.amp, probe.index)
    try:
        single = float(one.maps(x).abs().max())
    except ErfError:
        return False
    return single > 0 and peak < 1e-5 * single
