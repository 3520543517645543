"""Cone execution over a ``torch.fx`` graph: every node the unit depends on, only on the box it needs.

The model is traced with ``torch.fx`` and run once on a zero input of the full size (and once
at the crop's size) to learn every node's shape. Each node that depends on the input is then
one of:

- a **map**: a tensor whose map axes sit at known tensor dims (its *layout*: dims 2, 3 for
  NCHW, 1, 2 after ``permute(0, 2, 3, 1)``); computed on a box of absolute positions;
- a **tuple** of maps of one layout (``split``, ``chunk`` along a channel dim);
- a **complete** value: no map axes left (a global mean, a squeeze-excitation gate), computed
  whole from complete maps and identical to the usual pass's; it broadcasts against maps;
- a **shape** read (``x.shape``, ``x.size()``): only used by ``reshape`` / ``view``, whose
  sizes the runner sets itself.

Nodes that do not depend on the input (parameters, buffers, ``get_attr`` and what is computed
from them) run as they are on every call. Ops on maps: convs and pools (modules or functional,
``conv_ops``), ops that act on each position alone (arithmetic, activations, ``F.batch_norm``
in eval mode, layer norm and linear layers over non-map dims, reductions over channel dims),
``permute`` / ``transpose``, ``reshape`` / ``view`` that keep the map axes last, channel
``split`` / ``chunk`` / ``cat``, and reductions over every map axis (the input then needed whole).
From the unit backwards each node gets the union of the boxes its users need; operands are
aligned by absolute coordinates. Anything else names itself in the reason. The per-op rules
(which kind each node is, how it runs) are ``erf.engine.cone_rules``; this module traces,
runs the shape passes, gives the boxes and executes the plan.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from erf.engine.cone_ops import input_box, run_step
from erf.engine.cone_rules import Box, Classifier, PlanNode, Refused, node_name

__all__ = ["GraphConeRunner", "plan_graph"]


class _Stop(Exception):
    """The shape run reached the target."""


def _fetch(gm: fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


class _Shapes(fx.Interpreter):
    """Runs the graph to the target on one input; records every node's shape (tuples: their elements')."""

    def __init__(self, gm: fx.GraphModule, keep: set[fx.Node], target: fx.Node):
        super().__init__(gm)
        self.keep, self.target, self.shapes = keep, target, {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if n in self.keep:
            if isinstance(out, torch.Tensor):
                self.shapes[n] = tuple(out.shape)
            elif isinstance(out, (tuple, list)) and out and all(isinstance(o, torch.Tensor) for o in out):
                self.shapes[n] = [tuple(o.shape) for o in out]
            else:
                self.shapes[n] = out
        if n is self.target:
            raise _Stop
        return out


def _shapes(gm: fx.GraphModule, keep: set[fx.Node], target: fx.Node, x: torch.Tensor) -> dict[fx.Node, Any]:
    run = _Shapes(gm, keep, target)
    try:
        with torch.no_grad():
            run.run(x)
    except _Stop:
        pass
    return run.shapes


def graph_target(gm: fx.GraphModule, module: str | None, call_index: int) -> fx.Node | str:
    """The graph node whose value is the measured layer's output, or why it cannot be found."""
    nodes = list(gm.graph.nodes)
    if module is None or module == "":
        out = nodes[-1].args[0]
        return out if isinstance(out, fx.Node) else "the model's output is not one tensor"
    calls = [n for n in nodes if n.op == "call_module" and n.target == module]
    if calls:
        return calls[call_index] if call_index < len(calls) else f"call {call_index} of {module!r} not found"
    if call_index:
        return f"module {module!r} runs more than once"
    inside = [n for n in nodes if module in (n.meta.get("nn_module_stack") or {})]
    leaving = [n for n in inside if any(u not in inside for u in n.users)]
    if len(leaving) != 1:
        return f"the output of {module!r} is not one node of the traced graph"
    return leaving[0]


class GraphConeRunner:
    """``x (the input window) -> the target at the unit only``, over the planned fx graph."""

    def __init__(self, gm: fx.GraphModule, order: list[fx.Node], info: dict[fx.Node, PlanNode], target: fx.Node,
                 offset: tuple[int, ...]):
        self.gm, self.order, self.info, self.target, self.offset = gm, order, info, target, offset
        self.share = 1.0  # positions computed / positions the usual pass computes (``plan_graph`` sets it)

    def describe(self) -> list:
        """The plan (each node's op, kind, layout and boxes): part of the check's key."""
        return [(n.op, node_name(n), i.kind, i.how, i.layout, i.box, i.take, getattr(i.step, "pads", None))
                for n, i in ((n, self.info[n]) for n in self.order)]

    def _cut(self, v: torch.Tensor, layout: tuple[int, ...], box: Box, take: Box) -> torch.Tensor:
        index: list[Any] = [slice(None)] * v.dim()
        for d, (lo, hi), (b0, _) in zip(layout, take, box):
            index[d] = slice(lo - b0, hi - b0 + 1)
        return v[tuple(index)]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        vals: dict[fx.Node, Any] = {}
        for n in self.order:
            i = self.info[n]
            if i.kind in ("map", "tuple", "input") and i.box is None:
                continue  # a map nothing needs
            if n.op == "placeholder":
                vals[n] = x[(slice(None), slice(None), *(slice(lo - o, hi - o + 1)
                                                         for (lo, hi), o in zip(i.box, self.offset)))]
                continue
            if n.op == "get_attr":
                vals[n] = _fetch(self.gm, n.target)
                continue
            take = i.take

            def part(a: Any) -> Any:
                if not isinstance(a, fx.Node):
                    return a
                ai = self.info[a]
                if ai.kind in ("map", "input") and take is not None:
                    return self._cut(vals[a], ai.layout, ai.box, take)
                if ai.kind == "tuple" and take is not None:
                    return type(vals[a])(self._cut(v, ai.layout, ai.box, take) for v in vals[a])
                return vals[a]

            if i.how == "reshape":
                src = part(n.args[0])
                vals[n] = src.reshape(-1, *i.extra["shape"], *(hi - lo + 1 for lo, hi in i.box))
                continue
            args = fx.node.map_aggregate(n.args, part)
            kwargs = {k: (False if k == "inplace" else fx.node.map_aggregate(v, part)) for k, v in n.kwargs.items()}
            if i.how == "step":
                vals[n] = run_step(i.step, args[0], *([] if n.op == "call_module" else [
                    args[1] if len(args) > 1 else kwargs.get("weight"),
                    args[2] if len(args) > 2 else kwargs.get("bias")]))
            elif n.op == "call_module":
                if i.extra.get("clone"):  # an in-place module on a value other nodes read too
                    args = (args[0].clone(), *args[1:])
                vals[n] = _fetch(self.gm, n.target)(*args, **kwargs)
            elif n.op == "call_method":
                vals[n] = getattr(args[0], i.extra.get("method", n.target))(*args[1:], **kwargs)
            else:
                vals[n] = i.extra.get("func", n.target)(*args, **kwargs)
        return vals[self.target]


def _boxes(info: dict[fx.Node, PlanNode], order: list[fx.Node], target: fx.Node, unit: tuple[int, ...]) -> None:
    """From the unit backwards: each map node's box (the union of what its users need) and its operands' cut."""
    for n in order:
        i = info[n]
        if i.kind in ("map", "input", "tuple"):
            sh = i.shape[0] if i.kind == "tuple" and isinstance(i.shape, list) else i.shape
            i.size = tuple(sh[d] for d in i.layout)
    need: dict[fx.Node, Box | None] = {n: None for n in order}
    need[target] = tuple((int(u), int(u)) for u in unit)
    for n in reversed(order):
        i = info[n]
        if i.kind in ("map", "input", "tuple"):
            i.box = need[n]
            if i.box is None:
                continue
            if i.whole:  # a dense op: computed on the whole map
                i.box = tuple((0, s - 1) for s in i.size)
        if i.kind in ("const", "shape") or n.op == "placeholder":
            continue
        ops = [a for a in n.all_input_nodes if info[a].kind in ("map", "input", "tuple")]
        if i.kind == "complete":
            if not (i.whole or ops):
                continue
            for a in ops:
                need[a] = tuple((0, s - 1) for s in info[a].size)
            continue
        if i.how == "step":
            src = n.all_input_nodes[0]
            i.take = input_box(i.step, i.box, info[src].size)
        elif i.whole:
            i.take = tuple((0, s - 1) for s in info[n.all_input_nodes[0]].size)
        else:
            i.take = i.box
        for a in ops:
            need[a] = i.take if need[a] is None else tuple(
                (min(x[0], y[0]), max(x[1], y[1])) for x, y in zip(need[a], i.take))
    if any(info[n].kind == "shape" and "src" in info[n].extra and info[info[n].extra["src"]].box is None
           for n in order):
        raise Refused("the size of a map nothing else needs is read")


def plan_graph(model: nn.Module, module: str | None, call_index: int, unit: tuple[int, ...], size: tuple[int, ...],
               chans: int, dtype: torch.dtype, device: torch.device, window: tuple[slice, ...] | None
               ) -> GraphConeRunner | str:
    """The graph cone for ``unit`` of the output of ``module`` (call ``call_index``), or why not.

    Args:
        model: the working model (its modules are the runner's).
        module, call_index: the target module's name (None or '': the model output) and which call.
        unit: the unit's position in the target's map.
        size, chans, dtype, device: the full input's spatial size, channels, dtype and device.
        window: the crop the runner's input covers (None: the full input).

    Returns:
        The runner (its ``share`` set), or a reason.
    """
    nd = len(size)
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # noqa: BLE001 - any tracing failure means: run the usual way
        return f"torch.fx cannot trace the model ({type(exc).__name__})"
    target = graph_target(gm, module, call_index)
    if isinstance(target, str):
        return target
    anc, stack = set(), [target]
    while stack:
        n = stack.pop()
        if n not in anc:
            anc.add(n)
            stack.extend(n.all_input_nodes)
    order = [n for n in gm.graph.nodes if n in anc]
    if sum(n.op == "placeholder" for n in order) != 1:
        return "the target depends on more than one model input"
    offset = tuple(0 for _ in size) if window is None else tuple(w.start for w in window)
    stop = tuple(size) if window is None else tuple(w.stop for w in window)
    try:
        shapes = _shapes(gm, anc, target, torch.zeros((1, chans, *size), dtype=dtype, device=device))
        usual = shapes if window is None else _shapes(
            gm, anc, target, torch.zeros((1, chans, *(e - o for o, e in zip(offset, stop))), dtype=dtype,
                                         device=device))
    except Exception as exc:  # noqa: BLE001 - a graph that does not run as traced: the usual way
        return f"the traced graph does not run ({type(exc).__name__}: {str(exc)[:80]})"
    try:
        info = Classifier(gm, order, shapes, nd).classify()
        tgt = info[target]
        if tgt.kind != "map" or tgt.layout != tuple(range(2, 2 + nd)):
            raise Refused("the target is not a map with its axes last")
        _boxes(info, order, target, unit)
    except Refused as exc:
        return str(exc)
    first = next(info[n].box for n in order if n.op == "placeholder")
    if first is None or any(lo < o or hi >= e for (lo, hi), o, e in zip(first, offset, stop)):
        return "the unit's input box is not inside the crop"
    runner = GraphConeRunner(gm, order, info, target, offset)
    done = want = 0
    for n in order:
        i = info[n]
        if n.op == "placeholder" or i.kind not in ("map", "tuple") or i.take is None:
            continue
        src = next((a for a in n.all_input_nodes if info[a].kind in ("map", "input", "tuple")), None)
        sh = usual.get(src)
        sh = sh[0] if isinstance(sh, list) else sh
        done += math.prod(hi - lo + 1 for lo, hi in i.take)
        want += math.prod(sh[d] for d in info[src].layout) if isinstance(sh, tuple) else 0
    runner.share = done / max(1, want)
    return runner
