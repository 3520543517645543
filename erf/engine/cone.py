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
``plain_net``): convs (zero padding, numeric or 'same'), max and average pools (ceil mode,
``count_include_pad``, divisors), BatchNorm in eval mode, pointwise activations, ``Identity``
and ``Dropout`` in eval mode, ``nn.Upsample`` by whole factors (``erf.engine.cone_ops``). Where the layers are not a chain, the
model is traced with ``torch.fx`` (``erf.engine.cone_graph``: residual adds, concats and splits
along channels, permutes, layer norms and linear layers over channels, functional batch norms
and convs, ``F.interpolate`` by whole factors (nearest, linear-family without align_corners),
parameters, global gates; per-op rules in ``erf.engine.cone_rules``), each node computed once on
the union of the boxes its users need, operands aligned by absolute coordinates. Anything else on
the unit's path (other resampling, attention, tokens, a spatial concat) runs the usual way, with a
note that names it; ``cone_plan_status`` says which, without measuring. With ``cone='auto'`` one sample's
gradient is checked against the uncropped pass first (the crop's tolerance), as the crop is.
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Any, Callable

import torch
import torch.nn as nn

from erf.device import resolve_device
from erf.engine.cone_graph import GraphConeRunner, plan_graph
from erf.engine.cone_ops import Step, input_box, module_step, out_size, run_step
from erf.engine.context import Context, frozen, has_train_bn, prepare
from erf.engine.crop import check_input, checked_once, choose_crop, compare, full_gradient, plan_crop
from erf.engine.options import MeasureOptions
from erf.engine.probe import Probe
from erf.engine.ranks import Ranks
from erf.engine.target import TargetRunner
from erf.errors import ErfError

__all__ = ["ConeRunner", "MAX_SHARE", "choose_cone", "cone_plan_status", "plan_cone"]

#: With cone='auto', the cone runs only where it computes at most this share of the positions the
#: usual pass computes: a unit whose TRF covers the input (ResNet-50's layer4 at 224) gains
#: nothing, and slicing and the check would cost more than they save.
MAX_SHARE = 0.8

Window = tuple[slice, ...]


class ConeRunner:
    """``x (the input window) -> the target's output at the unit only`` (shape ``(B, C, 1, ...)``)."""

    def __init__(self, steps: list[Step], first: tuple[tuple[int, int], ...], offset: tuple[int, ...]):
        """
        Args:
            steps: the chain's ops with their boxes (``plan_cone``).
            first: the input box the first op reads (absolute, inclusive).
            offset: where the runner's input starts in the full input (the crop window's start).
        """
        self.steps = steps
        self.first = tuple(slice(lo - o, hi - o + 1) for (lo, hi), o in zip(first, offset))
        self.share = 1.0  # positions computed / positions the usual pass computes (``plan_cone`` sets it)

    def describe(self) -> list:
        """The plan (each op's kind and boxes): part of the check's key."""
        return [(type(s.module).__qualname__, s.kind, s.take, s.pads) for s in self.steps] + [self.first]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h = x[(slice(None), slice(None), *self.first)]
        for s in self.steps:
            h = run_step(s, h)
        return h


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
    except Exception as exc:  # noqa: BLE001 - a model that does not run at the crop's size: the usual way
        return f"the model does not run at the crop's size ({type(exc).__name__})"
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


def _sizes(steps: list[Step], size: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Each step's input size on the full input."""
    out = []
    for s in steps:
        out.append(size)
        size = out_size(s, size)
    return out


def plan_cone(ctx: Context, window: Window | None) -> tuple[ConeRunner | GraphConeRunner, dict[int, int]] | str:
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
    if has_train_bn(ctx.model):  # (and planning forwards would move its running statistics)
        return "BatchNorm in train mode mixes the samples of a batch"
    mods = _chain(ctx, window)
    if isinstance(mods, str) and mods.startswith("the model does not run"):
        return mods
    if isinstance(mods, str):  # a graph (residual adds, concats, functional ops): torch.fx
        graph = plan_graph(ctx.model, t.module, t.call_index, tuple(int(u) for u in ctx.unit), tuple(ctx.size),
                           ctx.chans, ctx.dtype, ctx.device, window)
        return graph if isinstance(graph, str) else (graph, {d: 0 for d in range(2, 2 + nd)})
    steps = []
    for m in mods:
        s = module_step(m, nd)
        if isinstance(s, str):
            return f"{s} is not supported by the cone runner"
        steps.append(s)
    sizes = _sizes(steps, tuple(ctx.size))
    box = tuple((int(u), int(u)) for u in ctx.unit)
    for s, size in zip(reversed(steps), reversed(sizes)):
        if s.kind != "point":
            box = input_box(s, box, size)
        s.take = box
    offset = tuple(0 for _ in ctx.size) if window is None else tuple(w.start for w in window)
    stop = ctx.size if window is None else tuple(w.stop for w in window)
    if any(lo < o or hi >= e for (lo, hi), o, e in zip(box, offset, stop)):
        return "the unit's input box is not inside the crop"
    runner = ConeRunner(steps, box, offset)
    usual = _sizes(steps, tuple(e - o for o, e in zip(offset, stop)))
    runner.share = sum(math.prod(hi - lo + 1 for lo, hi in s.take) for s in steps) / max(
        1, sum(math.prod(n) for n in usual))
    return runner, {d: 0 for d in range(2, 2 + nd)}


def choose_cone(ctx: Context, window: Window | None, full_probe: Probe,
                reference: Callable[[], torch.Tensor] | None = None
                ) -> tuple[ConeRunner | GraphConeRunner | None, dict[int, int] | None, list[str]]:
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
    found: list = []

    def why_not() -> str | None:
        found.append(plan_cone(ctx, window))
        if isinstance(found[0], str):
            return found[0]
        share = found[0][0].share
        if mode == "auto" and share > MAX_SHARE:
            return f"the unit depends on {share:.0%} of the positions the usual pass computes (the TRF covers most of " \
                   "the input)"
        return None

    # a plan the geometry rules out is ruled out for every network of the architecture (no second fx trace)
    reason, _ = checked_once(ctx, f"cone-plan-{mode}", window, why_not)
    if reason is not None:
        if mode is True:
            raise ErfError(f"cone execution cannot run this target: {reason}; use cone='auto' or False")
        return None, None, [f"not cone-executed: {reason}"]
    plan = found[0] if found else plan_cone(ctx, window)  # a runner holds this model's modules: plan anew
    if isinstance(plan, str):
        return None, None, [f"not cone-executed: {plan}"]
    runner, index = plan
    if mode == "auto":
        plan = (window, runner.describe())
        diff, again = checked_once(ctx, "cone", plan,
                                   lambda: cone_check(ctx, window, runner, index, full_probe, reference))
        if diff is not None:
            return None, None, [f"not cone-executed: the cone pass differs from the uncropped pass ({diff})"]
        return runner, index, [f"cone-executed: each op computed only where the unit depends on it ({runner.share:.0%} "
                               "of the positions of the usual pass; checked against "
                               + ("an uncropped pass earlier in this process: same architecture, size, layer and unit)"
                                  if again else "an uncropped pass)")]
    return runner, index, [f"cone-executed ({runner.share:.0%} of the positions of the usual pass; not checked)"]


def cone_check(ctx: Context, window: Window | None, runner: ConeRunner | GraphConeRunner, index: dict[int, int],
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


def cone_plan_status(model: nn.Module, input_size: Any, layer: str | None = None, check: bool = False,
                     **options: Any) -> tuple[bool, str]:
    """Whether ``measure(model, input_size, layer=layer, **options)`` would run the cone, and the one-line reason.

    Plans as ``measure`` does (the same working model, target, unit and crop window) without
    sampling; BatchNorm statistics are taken as they are (calibration changes no geometry).

    Args:
        model: the network (left as it is).
        input_size: the input's spatial size.
        layer: the measured layer (None: the model output).
        check: also run the one-sample checks against the uncropped pass, as ``measure`` with
            ``cone='auto'`` does (one full-size forward and backward; also with ``cone=True``, which
            ``measure`` does not check); without it, an accepted plan is reported as planned, not checked.
        **options: other ``MeasureOptions`` fields (unit, channel, dtype, cone, crop, ...).

    Returns:
        ``(True, note)`` when the cone runs (the note gives its share of the usual pass's positions),
        else ``(False, why not)``.

    Raises:
        ErfError: a bad option, layer or unit (as ``measure``).
    """
    opts = MeasureOptions.build(None, layer=layer, **{"bn": "as_is", **options})
    if opts.cone is False:
        return False, "cone=False"
    with frozen(model, opts.eval_mode):
        ctx = prepare(model, input_size, opts, resolve_device(opts.device), opts.make_preset(), Ranks(opts.tol), [])
        t, window = ctx.target, None
        reference = functools.cache(lambda: full_gradient(ctx))
        if check:
            window = choose_crop(ctx, reference)[0]
        elif opts.crop is not False and t.crop_safe and not has_train_bn(ctx.model) and None not in t.spatial_dims:
            window = (plan_crop(t, ctx.unit, ctx.size) or (None,))[0]
        plan = plan_cone(ctx, window)
        if isinstance(plan, str):
            return False, f"not cone-executed: {plan}"
        runner, index = plan
        share = runner.share
        if opts.cone == "auto" and share > MAX_SHARE:
            return False, f"not cone-executed: the unit depends on {share:.0%} of the positions the usual pass " \
                          "computes (the TRF covers most of the input)"
        if check:
            probe = Probe(TargetRunner(ctx.model, t), ctx.preset, opts.channel, ctx.amp, t.index_of(ctx.unit))
            diff, _ = checked_once(ctx, "cone", (window, runner.describe()),
                                   lambda: cone_check(ctx, window, runner, index, probe, reference))
            if diff is not None:
                return False, f"not cone-executed: the cone pass differs from the uncropped pass ({diff})"
            return True, f"cone-executed ({share:.0%} of the positions of the usual pass; checked against an " \
                         "uncropped pass)"
        return True, f"cone-executed ({share:.0%} of the positions of the usual pass; planned, not checked)"
