"""Cone execution: every op runs only on the part of its output the measured unit depends on.

A unit depends on its TRF at the input, but also on a shrinking box at every layer between:
for 20 stacked 3x3 convs the crop feeds a 41x41 map through every layer, while the unit needs
41^2, 39^2, ..., 1^2 positions (a pyramid, about a third). The cone runner computes, from the
unit backwards, the box each op's output must cover (its output box) and the input box that
needs (``lo*stride - pad .. hi*stride - pad + dilation*(kernel-1)``), then runs each op
forward on exactly that: inside the image nothing is padded; where a box crosses the image
border only the sides that touch it are padded with the op's own pad value (0 for convs and
average pools, -inf for max pools) and the op runs unpadded. Autograd carries the gradient
back through the slices to the input crop, so the map is the same as the cropped pass.

Covers (``plan_cone``): a target reached through a *chain* of leaf modules (each leaf's input
is the previous leaf's output, as in ``nn.Sequential`` stacks and the registry's
``plain_net``), every leaf one of ``Conv1d/2d/3d`` (zero padding, numeric), ``MaxPool*d``
and ``AvgPool*d`` (no ceil mode; average pools counting the padding), ``BatchNorm*d`` in
eval mode, pointwise activations, ``Identity`` and ``Dropout`` in eval mode. Anything else
(residual adds, concats, functional ops between modules, tokens) runs the usual way, with a
note. With ``cone='auto'`` one sample's gradient is checked against the uncropped pass first
(the crop's tolerance), as the crop is.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from erf.engine.context import Context
from erf.engine.crop import check_input, checked_once, compare, full_gradient
from erf.engine.probe import Probe
from erf.engine.target import TargetRunner
from erf.errors import ErfError

__all__ = ["ConeRunner", "choose_cone", "plan_cone", "POINTWISE"]

Window = tuple[slice, ...]
POINTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
             nn.Hardtanh, nn.Softplus, nn.Mish, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
             nn.modules.batchnorm._BatchNorm)


@dataclass
class _Step:
    module: nn.Module
    kind: str  # "conv", "max", "avg" or "point"
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    pad: tuple[int, ...] = ()
    dil: tuple[int, ...] = ()
    take: tuple[tuple[int, int], ...] = ()  # clipped input box (absolute, inclusive) per axis
    pads: tuple[tuple[int, int], ...] = ()  # (before, after) border padding per axis


def _tuple(v: Any, nd: int) -> tuple[int, ...]:
    return tuple(int(a) for a in v) if isinstance(v, (tuple, list)) else (int(v),) * nd


def _step(m: nn.Module, nd: int) -> _Step | str:
    """The op's geometry, or why the cone cannot run it."""
    if isinstance(m, nn.modules.conv._ConvNd) and not isinstance(m, nn.modules.conv._ConvTransposeNd):
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            return f"{type(m).__name__} with padding {m.padding!r} / mode {m.padding_mode!r}"
        return _Step(m, "conv", _tuple(m.kernel_size, nd), _tuple(m.stride, nd), _tuple(m.padding, nd),
                     _tuple(m.dilation, nd))
    if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
        if m.ceil_mode or m.return_indices:
            return f"{type(m).__name__} with ceil_mode or return_indices"
        return _Step(m, "max", _tuple(m.kernel_size, nd), _tuple(m.stride or m.kernel_size, nd), _tuple(m.padding, nd),
                     _tuple(m.dilation, nd))
    if isinstance(m, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
        if m.ceil_mode or not m.count_include_pad or getattr(m, "divisor_override", None):
            return f"{type(m).__name__} with ceil_mode, count_include_pad=False or a divisor"
        return _Step(m, "avg", _tuple(m.kernel_size, nd), _tuple(m.stride or m.kernel_size, nd),
                     _tuple(m.padding, nd), (1,) * nd)
    if isinstance(m, POINTWISE):
        if m.training and isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)):
            return f"{type(m).__name__} in train mode"
        return _Step(m, "point")
    return f"a {type(m).__name__} layer"


class ConeRunner:
    """``x (the input window) -> the target's output at the unit only`` (shape ``(B, C, 1, ...)``)."""

    def __init__(self, steps: list[_Step], first: tuple[tuple[int, int], ...], offset: tuple[int, ...]):
        """
        Args:
            steps: the chain's ops with their boxes (``plan_cone``).
            first: the input box the first op reads (absolute, inclusive).
            offset: where the runner's input starts in the full input (the crop window's start).
        """
        self.steps = steps
        self.first = tuple(slice(lo - o, hi - o + 1) for (lo, hi), o in zip(first, offset))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h = x[(slice(None), slice(None), *self.first)]
        for s in self.steps:
            h = self._run(s, h)
        return h

    @staticmethod
    def _run(s: _Step, h: torch.Tensor) -> torch.Tensor:
        if s.kind == "point":
            return s.module(h)
        nd = h.dim() - 2
        if any(p for pair in s.pads for p in pair):
            flat = [p for pair in reversed(s.pads) for p in pair]  # F.pad: last axis first
            h = F.pad(h, flat, value=float("-inf") if s.kind == "max" else 0.0)
        if s.kind == "conv":
            m = s.module
            return getattr(F, f"conv{nd}d")(h, m.weight, m.bias, s.stride, 0, s.dil, m.groups)
        if s.kind == "max":
            return getattr(F, f"max_pool{nd}d")(h, s.kernel, s.stride, 0, s.dil)
        return getattr(F, f"avg_pool{nd}d")(h, s.kernel, s.stride, 0)


def _chain(ctx: Context, window: Window | None) -> list[nn.Module] | str:
    """The leaves a forward to the target runs, in order, if they form a chain; else why not.

    The forward runs on one zero input of the crop's size (the whole input without a crop): which
    modules run, and in which order, does not depend on the size for a chain of these modules, and
    the cone's check against the uncropped pass confirms the plan either way.
    """
    calls: list[tuple[nn.Module, Any, Any]] = []
    leaves = [m for m in ctx.model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(lambda mod, args, out: calls.append((mod, args, out))) for m in leaves]
    size = ctx.size if window is None else tuple(w.stop - w.start for w in window)
    x = torch.zeros((1, ctx.chans, *size), device=ctx.device, dtype=ctx.dtype)
    try:
        with torch.no_grad():
            out = TargetRunner(ctx.model, ctx.target)(x)
    finally:
        for hd in handles:
            hd.remove()
    prev, mods = x, []
    for mod, args, o in calls:
        if len(args) != 1 or args[0] is not prev or not isinstance(o, torch.Tensor):
            return "the layers before the target are not a chain of modules (a residual add, a concat or a " \
                   "functional op between them)"
        mods.append(mod)
        prev = o
    if prev is not out or not mods:
        return "the target is not the output of a chain of modules"
    return mods


def _sizes(steps: list[_Step], size: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Each step's input size on the full input (PyTorch's output-size rule, floor mode)."""
    out = []
    for s in steps:
        out.append(size)
        if s.kind != "point":
            size = tuple((n + 2 * p - d * (k - 1) - 1) // st + 1
                         for n, p, d, k, st in zip(size, s.pad, s.dil, s.kernel, s.stride))
    return out


def plan_cone(ctx: Context, window: Window | None) -> tuple[ConeRunner, dict[int, int]] | str:
    """The cone runner for ``ctx``'s unit on the input ``window`` (None: the full input), or why not.

    Args:
        ctx: the measurement (its model, target and unit).
        window: the crop the runner's input covers, or None.

    Returns:
        ``(runner, index of the unit in the runner's output)``, or a reason (for the note).
    """
    t = ctx.target
    nd = len(ctx.size)
    if t.functional is not None or t.spatial_dims != tuple(range(2, 2 + nd)) or t.tokens:
        return "the target's positions are not the map axes of a module's output"
    mods = _chain(ctx, window)
    if isinstance(mods, str):
        return mods
    steps = []
    for m in mods:
        s = _step(m, nd)
        if isinstance(s, str):
            return f"{s} is not supported by the cone runner"
        steps.append(s)
    sizes = _sizes(steps, tuple(ctx.size))
    box = tuple((int(u), int(u)) for u in ctx.unit)
    for s, size in zip(reversed(steps), reversed(sizes)):
        if s.kind != "point":
            need = tuple((lo * st - p, hi * st - p + d * (k - 1))
                         for (lo, hi), st, p, d, k in zip(box, s.stride, s.pad, s.dil, s.kernel))
            box = tuple((max(0, lo), min(n - 1, hi)) for (lo, hi), n in zip(need, size))
            s.pads = tuple((b[0] - a[0], a[1] - b[1]) for a, b in zip(need, box))
        s.take = box
    offset = tuple(0 for _ in ctx.size) if window is None else tuple(w.start for w in window)
    stop = ctx.size if window is None else tuple(w.stop for w in window)
    if any(lo < o or hi >= e for (lo, hi), o, e in zip(box, offset, stop)):
        return "the unit's input box is not inside the crop"
    return ConeRunner(steps, box, offset), {d: 0 for d in range(2, 2 + nd)}


def choose_cone(ctx: Context, window: Window | None, full_probe: Probe,
                reference: Callable[[], torch.Tensor] | None = None
                ) -> tuple[ConeRunner | None, dict[int, int] | None, list[str]]:
    """The cone runner and the unit's index in its output, checked once; ``(None, None, notes)`` to run as usual.

    Args:
        ctx: the measurement (``ctx.opts.cone``: 'auto', True or False).
        window: the input crop (None: the full input).
        full_probe: the probe of the usual (cropped or full-size) pass (its preset and channel).
        reference: returns the uncropped pass's gradient (``erf.engine.crop.full_gradient``, shared with
            the crop's check); computed here when None.

    Returns:
        ``(runner, index, notes)``.

    Raises:
        ErfError: ``cone=True`` for a target the cone runner does not cover.
    """
    mode = ctx.opts.cone
    if mode is False:
        return None, None, []
    plan = plan_cone(ctx, window)
    if isinstance(plan, str):
        if mode is True:
            raise ErfError(f"cone execution cannot run this target: {plan}; use cone='auto' or False")
        return None, None, [f"not cone-executed: {plan}"]
    runner, index = plan
    if mode == "auto":
        plan = (window, [(type(s.module).__qualname__, s.kind, s.take, s.pads) for s in runner.steps], runner.first)
        diff, again = checked_once(ctx, "cone", plan,
                                   lambda: cone_check(ctx, window, runner, index, full_probe, reference))
        if diff is not None:
            return None, None, [f"not cone-executed: the cone pass differs from the uncropped pass ({diff})"]
        return runner, index, ["cone-executed: each op computed only where the unit depends on it (checked against "
                               + ("an uncropped pass earlier in this process: same architecture, size, layer and unit)"
                                  if again else "an uncropped pass)")]
    return runner, index, ["cone-executed (not checked)"]


def cone_check(ctx: Context, window: Window | None, runner: ConeRunner, index: dict[int, int],
               full_probe: Probe, reference: Callable[[], torch.Tensor] | None = None) -> str | None:
    """One sample's cone gradient against the uncropped full-size one; None when they agree.

    Same sample and tolerance as ``erf.engine.crop.crop_check`` (1e-9 of the largest gradient in
    float64, 1e-3 in float32, in the measurement dtype without autocast).

    Returns:
        None, or the difference found.
    """
    full = (reference or (lambda: full_gradient(ctx)))()
    win = window or tuple(slice(0, n) for n in ctx.size)
    amp = {"ctx": contextlib.nullcontext}
    part = Probe(runner, full_probe.preset, full_probe.channel, amp, index)
    part = part.grad(check_input(ctx)[(slice(None), slice(None), *win)]).double()
    return compare(ctx, full, part, win)
