"""The cone runner's spatial ops: a conv or pool step's geometry, its input box, and how it runs on a box.

A step is one convolution, pooling or upsampling (a module, or a functional call of the fx graph): kernel,
stride, padding before and after per axis (asymmetric for ``padding='same'``), dilation, and
for pools ``ceil_mode`` and how the average counts. ``input_box`` maps the box of output
positions a step must compute to the input box it reads (cut to the input; the cut-away sides
become the step's border pads); ``run_step`` pads those sides with the op's own pad value and
runs the op unpadded, so every computed position is the one the usual pass computes. An
upsampling by an integer factor (``nn.Upsample`` / ``F.interpolate``, nearest or linear-family
without ``align_corners``) reads ``o // s`` (nearest) or the two pixels around ``(o + 0.5) / s -
0.5`` (linear, clamped at the image border); run on its input box, its output is cut to the box
asked for, and every position in it is the usual pass's (the same source coordinates, and the
border clamps only where the box meets the image border).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["POINTWISE", "Step", "input_box", "module_step", "out_size", "run_step", "upsample_step"]

#: Interpolation modes the cone runs (integer scale factors; linear-family modes without align_corners).
UPSAMPLE_MODES = ("nearest", "nearest-exact", "linear", "bilinear", "trilinear")

#: Modules that act on each position alone (in eval mode), whatever the layout of the map.
POINTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
             nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.Mish, nn.CELU, nn.SELU, nn.Identity, nn.Dropout,
             nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.modules.batchnorm._BatchNorm)


@dataclass
class Step:
    """One op's geometry; ``kind`` is "conv", "max", "avg", "up" (upsampling) or "point"."""

    module: nn.Module | None
    kind: str
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    pad: tuple[tuple[int, int], ...] = ()  # the op's own padding (before, after) per axis
    dil: tuple[int, ...] = ()
    ceil: bool = False
    count_pad: bool = True  # average pools: the divisor counts the op's padding
    divisor: int | None = None  # average pools: divisor_override
    groups: int = 1  # functional convs (a module's own groups otherwise)
    take: tuple[tuple[int, int], ...] = ()  # clipped input box (absolute, inclusive) per axis
    pads: tuple[tuple[int, int], ...] = ()  # (before, after) border padding per axis
    need: tuple[tuple[int, int], ...] = ()  # unclipped input box per axis
    size: tuple[int, ...] = ()  # the input's size on the full input
    mode: str = ""  # upsampling: the interpolation mode
    scale: tuple[int, ...] = ()  # upsampling: the integer factor per axis
    out_box: tuple[tuple[int, int], ...] = ()  # upsampling: the output box asked for (absolute, inclusive)


def _tuple(v: Any, nd: int) -> tuple[int, ...]:
    return tuple(int(a) for a in v) if isinstance(v, (tuple, list)) else (int(v),) * nd


def conv_pads(padding: Any, kernel: tuple[int, ...], dil: tuple[int, ...], nd: int) -> tuple[tuple[int, int], ...]:
    """(before, after) per axis of a conv's ``padding`` (a number, a tuple, 'valid' or 'same' as PyTorch pads it)."""
    if padding == "valid":
        return ((0, 0),) * nd
    if padding == "same":  # PyTorch: total d*(k-1), the smaller half before
        return tuple((d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in zip(kernel, dil))
    return tuple((p, p) for p in _tuple(padding, nd))


def upsample_step(mode: str, scale: Any, align_corners: Any, antialias: Any, nd: int,
                  module: nn.Module | None = None) -> Step | str:
    """The step of an upsampling (``nn.Upsample``, ``F.interpolate``), or why the cone cannot run it.

    Args:
        mode: the interpolation mode.
        scale: the scale factor (a number or one per axis); it must be a whole number on every axis.
        align_corners, antialias: the call's flags (align_corners makes the source coordinates depend on
            the map's size: refused).
        nd: the number of map axes.
        module: the module (None for a functional call).

    Returns:
        The step, or the reason.
    """
    if mode not in UPSAMPLE_MODES:
        return f"an upsampling in mode {mode!r}"
    if align_corners or antialias:
        return "an upsampling with align_corners or antialias (its sampling depends on the map's size)"
    factors = tuple(scale) if isinstance(scale, (tuple, list)) else (scale,) * nd
    if scale is None or len(factors) != nd or any(float(f) != int(f) or int(f) < 1 for f in factors):
        return f"an upsampling by {scale!r} (only whole scale factors)"
    return Step(module, "up", mode=mode, scale=tuple(int(f) for f in factors))


def module_step(m: nn.Module, nd: int) -> Step | str:
    """The module's geometry, or why the cone cannot run it."""
    if isinstance(m, nn.Upsample):
        if m.size is not None:
            return "an Upsample to a fixed size"
        return upsample_step(m.mode, m.scale_factor, m.align_corners, False, nd, m)
    if isinstance(m, nn.modules.conv._ConvNd) and not isinstance(m, nn.modules.conv._ConvTransposeNd):
        if m.padding_mode != "zeros":
            return f"{type(m).__name__} with padding {m.padding!r} / mode {m.padding_mode!r}"
        kernel, dil = _tuple(m.kernel_size, nd), _tuple(m.dilation, nd)
        return Step(m, "conv", kernel, _tuple(m.stride, nd), conv_pads(m.padding, kernel, dil, nd), dil,
                    groups=m.groups)
    if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
        if m.return_indices:
            return f"{type(m).__name__} with return_indices"
        return Step(m, "max", _tuple(m.kernel_size, nd), _tuple(m.stride or m.kernel_size, nd),
                    tuple((p, p) for p in _tuple(m.padding, nd)), _tuple(m.dilation, nd), ceil=bool(m.ceil_mode))
    if isinstance(m, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
        return Step(m, "avg", _tuple(m.kernel_size, nd), _tuple(m.stride or m.kernel_size, nd),
                    tuple((p, p) for p in _tuple(m.padding, nd)), (1,) * nd, ceil=bool(m.ceil_mode),
                    count_pad=bool(m.count_include_pad), divisor=getattr(m, "divisor_override", None))
    if isinstance(m, POINTWISE):
        if m.training and isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)):
            return f"{type(m).__name__} in train mode"
        return Step(m, "point")
    return f"a {type(m).__name__} layer"


def out_size(s: Step, size: tuple[int, ...]) -> tuple[int, ...]:
    """A step's output size for an input of ``size`` (PyTorch's output-size rule, floor or ceil mode)."""
    if s.kind == "point":
        return size
    if s.kind == "up":
        return tuple(n * f for n, f in zip(size, s.scale))
    out = []
    for n, (pb, pa), d, k, st in zip(size, s.pad, s.dil, s.kernel, s.stride):
        span = n + pb + pa - d * (k - 1) - 1
        o = (span + st - 1) // st + 1 if s.ceil else span // st + 1
        if s.ceil and (o - 1) * st >= n + pb:  # PyTorch: the last window must start inside the input or its padding
            o -= 1
        out.append(o)
    return tuple(out)


def input_box(s: Step, box: tuple, size: tuple[int, ...]) -> tuple:
    """The input box a conv/pool/upsampling step's output ``box`` needs, cut to the input ``size``; sets the step's
    border pads."""
    if s.kind == "up":
        if s.mode.startswith("nearest"):  # integer factors: 'nearest' and 'nearest-exact' both read o // f
            take = tuple((lo // f, hi // f) for (lo, hi), f in zip(box, s.scale))
        else:  # the two pixels around (o + 0.5) / f - 0.5, clamped to the image
            take = tuple((max(0, (2 * lo + 1 - f) // (2 * f)), min(n - 1, (2 * hi + 1 - f) // (2 * f) + 1))
                         for (lo, hi), f, n in zip(box, s.scale, size))
        s.pads, s.need, s.size, s.out_box = tuple((0, 0) for _ in box), take, tuple(size), tuple(box)
        return take
    need = tuple((lo * st - pb, hi * st - pb + d * (k - 1))
                 for (lo, hi), st, (pb, _), d, k in zip(box, s.stride, s.pad, s.dil, s.kernel))
    take = tuple((max(0, lo), min(n - 1, hi)) for (lo, hi), n in zip(need, size))
    s.pads = tuple((b[0] - a[0], a[1] - b[1]) for a, b in zip(need, take))
    s.need, s.size = need, tuple(size)
    return take


def run_step(s: Step, h: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None
             ) -> torch.Tensor:
    """The step on the input box ``h`` (``input_box``'s take, channels at dim 1, the map axes last).

    Args:
        s: the step (its border pads set by ``input_box``).
        h: the input box.
        weight, bias: a functional conv's weight and bias (a module's own otherwise).
    """
    if s.kind == "point":
        return s.module(h)
    nd = h.dim() - 2
    if s.kind == "up":
        linear = not s.mode.startswith("nearest")
        out = F.interpolate(h, scale_factor=tuple(float(f) for f in s.scale), mode=s.mode,
                            align_corners=False if linear else None)
        cut = [slice(None), slice(None)] + [slice(lo - a * f, hi - a * f + 1)
                                            for (lo, hi), (a, _), f in zip(s.out_box, s.need, s.scale)]
        return out[tuple(cut)]
    padded = any(p for pair in s.pads for p in pair)
    if padded:
        flat = [p for pair in reversed(s.pads) for p in pair]  # F.pad: last axis first
        h = F.pad(h, flat, value=float("-inf") if s.kind == "max" else 0.0)
    if s.kind == "conv":
        m = s.module
        w, b = (m.weight, m.bias) if m is not None else (weight, bias)
        return getattr(F, f"conv{nd}d")(h, w, b, s.stride, 0, s.dil, s.groups)
    if s.kind == "max":
        return getattr(F, f"max_pool{nd}d")(h, s.kernel, s.stride, 0, s.dil)
    pool = getattr(F, f"avg_pool{nd}d")
    beyond = any(lo < -pb or hi > n - 1 + pa for (lo, hi), (pb, pa), n in zip(s.need, s.pad, s.size))
    if s.divisor is None and s.count_pad and not beyond:
        return pool(h, s.kernel, s.stride, 0)
    total = (pool(h, s.kernel, s.stride, 0, False, True, 1) if nd > 1  # window sums
             else pool(h, s.kernel, s.stride, 0) * s.kernel[0])
    if s.divisor is not None:
        return total / s.divisor
    if not padded:
        return total / float(torch.tensor(s.kernel).prod())
    # the divisor PyTorch uses: the window's positions inside the input (and its padding, with count_include_pad)
    mask = torch.ones((1, 1, *(hi - lo + 1 for lo, hi in s.need)), dtype=h.dtype, device=h.device)
    for ax, ((lo, hi), (pb, pa), n) in enumerate(zip(s.need, s.pad, s.size)):
        first, last = (-pb, n - 1 + pa) if s.count_pad else (0, n - 1)
        coords = torch.arange(lo, hi + 1, device=h.device)
        keep = ((coords >= first) & (coords <= last)).to(h.dtype)
        mask = mask * keep.reshape((-1,) + (1,) * (nd - 1 - ax))
    count = pool(mask, s.kernel, s.stride, 0, False, True, 1) if nd > 1 else pool(mask, s.kernel, s.stride, 0) * s.kernel[0]
    return total / count
