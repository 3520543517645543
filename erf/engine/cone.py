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
eval mode, pointwise activations, ``Identity`` and ``Dropout`` in eval mode. Where the layers
are not a chain, the model is traced with ``torch.fx`` (``GraphConeRunner``): the same modules
plus residual adds, products and differences, channel concats and functional activations,
each node computed once on the union of the boxes its users need, operands aligned by
absolute coordinates (ResNets, the registry's ``residual_net``). Anything else on the unit's
path (upsampling, attention, flatten, parameters used as tensors, a spatial concat) runs the
usual way, with a note. With ``cone='auto'`` one sample's gradient is checked against the
uncropped pass first (the crop's tolerance), as the crop is.
"""

from __future__ import annotations

import contextlib
import functools
import math
import operator
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from erf.device import resolve_device
from erf.engine.context import Context, frozen, has_train_bn, prepare
from erf.engine.crop import check_input, checked_once, choose_crop, compare, full_gradient, plan_crop
from erf.engine.options import MeasureOptions
from erf.engine.probe import Probe
from erf.engine.ranks import Ranks
from erf.engine.target import TargetRunner
from erf.errors import ErfError

__all__ = ["ConeRunner", "GraphConeRunner", "MAX_SHARE", "choose_cone", "cone_plan_status", "plan_cone", "POINTWISE"]

#: With cone='auto', the cone runs only where it computes at most this share of the positions the
#: usual pass computes: a unit whose TRF covers the input (ResNet-50's layer4 at 224) gains
#: nothing, and slicing and the check would cost more than they save.
MAX_SHARE = 0.8

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
        self.share = 1.0  # positions computed / positions the usual pass computes (``plan_cone`` sets it)

    def describe(self) -> list:
        """The plan (each op's kind and boxes): part of the check's key."""
        return [(type(s.module).__qualname__, s.kind, s.take, s.pads) for s in self.steps] + [self.first]

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


def _out_size(s: _Step, size: tuple[int, ...]) -> tuple[int, ...]:
    """A step's output size for an input of ``size`` (PyTorch's output-size rule, floor mode)."""
    if s.kind == "point":
        return size
    return tuple((n + 2 * p - d * (k - 1) - 1) // st + 1 for n, p, d, k, st in zip(size, s.pad, s.dil, s.kernel, s.stride))


def _input_box(s: _Step, box: tuple, size: tuple[int, ...]) -> tuple:
    """The input box a conv/pool step's output ``box`` needs, cut to the input ``size``; sets the step's border pads."""
    need = tuple((lo * st - p, hi * st - p + d * (k - 1))
                 for (lo, hi), st, p, d, k in zip(box, s.stride, s.pad, s.dil, s.kernel))
    take = tuple((max(0, lo), min(n - 1, hi)) for (lo, hi), n in zip(need, size))
    s.pads = tuple((b[0] - a[0], a[1] - b[1]) for a, b in zip(need, take))
    return take


def _graph_sizes(order: list[fx.Node], info: dict[fx.Node, dict], start: tuple[int, ...]) -> dict[fx.Node, tuple]:
    """Each graph node's output size for an input of spatial size ``start``."""
    sizes: dict[fx.Node, tuple] = {}
    for n in order:
        into = start if n.op == "placeholder" else sizes[n.all_input_nodes[0]]
        st = info[n].get("step")
        sizes[n] = into if st is None else _out_size(st, into)
    return sizes


def _sizes(steps: list[_Step], size: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Each step's input size on the full input."""
    out = []
    for s in steps:
        out.append(size)
        size = _out_size(s, size)
    return out


# Functions and tensor methods that act position by position (the graph cone slices their tensor
# arguments to the op's own box); in-place forms run out of place (the slices are views).
_ELEMENTWISE_FUNCS: dict[Any, Any] = {
    operator.add: operator.add, operator.iadd: operator.add, torch.add: torch.add,
    operator.mul: operator.mul, operator.imul: operator.mul, torch.mul: torch.mul,
    operator.sub: operator.sub, operator.isub: operator.sub, torch.sub: torch.sub,
    F.relu: F.relu, torch.relu: torch.relu, F.relu6: F.relu6, F.gelu: F.gelu, F.silu: F.silu, F.elu: F.elu,
    F.leaky_relu: F.leaky_relu, F.hardswish: F.hardswish, torch.sigmoid: torch.sigmoid, torch.tanh: torch.tanh,
}
_ELEMENTWISE_METHODS = {"relu", "sigmoid", "tanh", "add", "mul", "sub", "contiguous"}


def _union(a: tuple | None, b: tuple) -> tuple:
    return b if a is None else tuple((min(x[0], y[0]), max(x[1], y[1])) for x, y in zip(a, b))


class GraphConeRunner:
    """Cone execution over a ``torch.fx`` graph: residual adds and concats align by absolute coordinates.

    Every node the unit depends on is computed on one box (the union of what its users need);
    a user takes its part by offset. ``x (the input window) -> the target at the unit only``.
    """

    def __init__(self, order: list[fx.Node], info: dict[fx.Node, dict], target: fx.Node, offset: tuple[int, ...]):
        self.order, self.info, self.target, self.offset = order, info, target, offset
        self.share = 1.0  # positions computed / positions the usual pass computes (``plan_cone`` sets it)

    def describe(self) -> list:
        """The plan (each node's op, box and taken box): part of the check's key."""
        return [(n.op, str(n.target), self.info[n].get("box"), self.info[n].get("take"),
                 getattr(self.info[n].get("step"), "pads", None)) for n in self.order]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        vals: dict[fx.Node, torch.Tensor] = {}
        for n in self.order:
            i = self.info[n]
            if n.op == "placeholder":
                vals[n] = x[(slice(None), slice(None), *(slice(lo - o, hi - o + 1)
                                                         for (lo, hi), o in zip(i["box"], self.offset)))]
                continue
            take = i["take"]

            def part(a: Any) -> Any:
                if not isinstance(a, fx.Node):
                    return a
                box = self.info[a]["box"]
                return vals[a][(slice(None), slice(None), *(slice(lo - b0, hi - b0 + 1)
                                                             for (lo, hi), (b0, _) in zip(take, box)))]

            args = fx.node.map_aggregate(n.args, part)
            kwargs = {k: (False if k == "inplace" else fx.node.map_aggregate(v, part)) for k, v in n.kwargs.items()}
            if "step" in i:
                h = args[0]
                vals[n] = i["step"].module(h) if i["step"].kind == "point" else ConeRunner._run(i["step"], h)
            elif n.op == "call_method":
                vals[n] = getattr(args[0], n.target)(*args[1:], **kwargs)
            else:
                vals[n] = i["func"](*args, **kwargs)
        return vals[self.target]


def _graph_target(gm: fx.GraphModule, ctx: Context) -> fx.Node | str:
    """The graph node whose value is the measured layer's output, or why it cannot be found."""
    t = ctx.target
    nodes = list(gm.graph.nodes)
    if t.module is None or t.module == "":
        out = nodes[-1].args[0]
        return out if isinstance(out, fx.Node) else "the model's output is not one tensor"
    calls = [n for n in nodes if n.op == "call_module" and n.target == t.module]
    if calls:
        return calls[t.call_index] if t.call_index < len(calls) else f"call {t.call_index} of {t.module!r} not found"
    if t.call_index:
        return f"module {t.module!r} runs more than once"
    inside = [n for n in nodes if t.module in (n.meta.get("nn_module_stack") or {})]
    leaving = [n for n in inside if any(u not in inside for u in n.users)]
    if len(leaving) != 1:
        return f"the output of {t.module!r} is not one node of the traced graph"
    return leaving[0]


def _graph_plan(ctx: Context, window: Window | None) -> tuple[GraphConeRunner, dict[int, int]] | str:
    """The graph cone for ``ctx``'s unit (``torch.fx``: adds, concats, functional activations), or why not."""
    nd = len(ctx.size)
    try:
        gm = fx.symbolic_trace(ctx.model)
    except Exception as exc:  # noqa: BLE001 - any tracing failure means: run the usual way
        return f"torch.fx cannot trace the model ({type(exc).__name__})"
    target = _graph_target(gm, ctx)
    if isinstance(target, str):
        return target
    anc, stack = set(), [target]
    while stack:
        n = stack.pop()
        if n not in anc:
            anc.add(n)
            stack.extend(n.all_input_nodes)
    order = [n for n in gm.graph.nodes if n in anc]
    info: dict[fx.Node, dict] = {}
    places = [n for n in order if n.op == "placeholder"]
    if len(places) != 1:
        return "the target depends on more than one model input"
    for n in order:
        if n.op == "placeholder":
            info[n] = {}
        elif not n.all_input_nodes:
            return f"{n.op} {n.target!r} does not depend on the input"
        elif n.op == "call_module":
            st = _step(gm.get_submodule(n.target), nd)
            if isinstance(st, str):
                return f"{st} is not supported by the cone runner"
            info[n] = {"step": st}
        elif n.op == "call_function" and (n.target in _ELEMENTWISE_FUNCS or n.target is torch.cat):
            if n.target is torch.cat and (n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else 0)) not in (1, -nd - 1):
                return "a concat along a spatial axis is not supported by the cone runner"
            info[n] = {"func": _ELEMENTWISE_FUNCS.get(n.target, torch.cat)}
        elif n.op == "call_method" and n.target in _ELEMENTWISE_METHODS:
            info[n] = {}
        else:
            return f"the op {getattr(n.target, '__name__', n.target)!r} is not supported by the cone runner"
    sizes = _graph_sizes(order, info, tuple(ctx.size))
    for n in order:
        if len({sizes[a] for a in n.all_input_nodes}) > 1:
            return f"the inputs of {n.name!r} differ in size"
    boxes: dict[fx.Node, tuple | None] = {n: None for n in order}
    boxes[target] = tuple((int(u), int(u)) for u in ctx.unit)
    for n in reversed(order):
        i, box = info[n], boxes[n]
        i["box"] = box
        if n.op == "placeholder":
            continue
        st = i.get("step")
        take = box if st is None or st.kind == "point" else _input_box(st, box, sizes[n.all_input_nodes[0]])
        i["take"] = take
        for a in n.all_input_nodes:
            boxes[a] = _union(boxes[a], take)
    first = info[places[0]]["box"]
    offset = tuple(0 for _ in ctx.size) if window is None else tuple(w.start for w in window)
    stop = ctx.size if window is None else tuple(w.stop for w in window)
    if any(lo < o or hi >= e for (lo, hi), o, e in zip(first, offset, stop)):
        return "the unit's input box is not inside the crop"
    runner = GraphConeRunner(order, info, target, offset)
    usual = _graph_sizes(order, info, tuple(e - o for o, e in zip(offset, stop)))  # the usual pass's sizes
    nodes = [n for n in order if n.op != "placeholder"]
    runner.share = _positions([info[n]["take"] for n in nodes]) / max(
        1, sum(math.prod(usual[n.all_input_nodes[0]]) for n in nodes))
    return runner, {d: 0 for d in range(2, 2 + nd)}


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
    if isinstance(mods, str):  # a graph (residual adds, concats, functional ops): torch.fx
        return _graph_plan(ctx, window)
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
            box = _input_box(s, box, size)
        s.take = box
    offset = tuple(0 for _ in ctx.size) if window is None else tuple(w.start for w in window)
    stop = ctx.size if window is None else tuple(w.stop for w in window)
    if any(lo < o or hi >= e for (lo, hi), o, e in zip(box, offset, stop)):
        return "the unit's input box is not inside the crop"
    runner = ConeRunner(steps, box, offset)
    usual = _sizes(steps, tuple(e - o for o, e in zip(offset, stop)))
    runner.share = _positions([s.take for s in steps]) / max(1, sum(math.prod(n) for n in usual))
    return runner, {d: 0 for d in range(2, 2 + nd)}


def _positions(boxes: list[tuple[tuple[int, int], ...]]) -> int:
    return sum(math.prod(hi - lo + 1 for lo, hi in b) for b in boxes)


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
            ``cone='auto'`` does (one full-size forward and backward); without it, an accepted plan
            is reported as planned, not checked.
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
        t = ctx.target
        if check:
            reference = functools.cache(lambda: full_gradient(ctx))
            window, cunit, _ = choose_crop(ctx, reference)
            index = t.index_of(ctx.unit) if window is None else dict(zip(t.spatial_dims, cunit))
            probe = Probe(TargetRunner(ctx.model, t), ctx.preset, opts.channel, ctx.amp, index)
            try:
                runner, _, notes = choose_cone(ctx, window, probe, reference)
            except ErfError as exc:
                return False, str(exc)
            return runner is not None, notes[0] if notes else "not cone-executed"
        window = None
        if opts.crop is not False and t.crop_safe and not has_train_bn(ctx.model) and None not in t.spatial_dims:
            window = (plan_crop(t, ctx.unit, ctx.size) or (None,))[0]
        plan = plan_cone(ctx, window)
        if isinstance(plan, str):
            return False, f"not cone-executed: {plan}"
        share = plan[0].share
        if opts.cone == "auto" and share > MAX_SHARE:
            return False, f"not cone-executed: the unit depends on {share:.0%} of the positions the usual pass " \
                          "computes (the TRF covers most of the input)"
        return True, f"cone-executed ({share:.0%} of the positions of the usual pass; planned, not checked)"
