"""The graph cone's per-op rules: what each ``torch.fx`` node is, and how it runs on a box.

``Classifier`` walks the nodes the target depends on, in graph order, and gives each a
``PlanNode``: its kind (input, const, shape, map, tuple, complete), the tensor dims of its map
axes (its layout) and how the runner computes it (a call on the cut operands, a conv / pool /
upsampling ``Step`` of ``erf.engine.cone_ops``, a tuple's element, a reshape with the box's
sizes, or whole). A node it cannot run raises ``Refused`` with the reason. Boxes are given
afterwards, from the unit backwards (``erf.engine.cone_graph``).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from erf.engine.cone_ops import POINTWISE, Step, module_step, out_size, upsample_step

__all__ = ["Box", "Classifier", "PlanNode", "Refused", "node_name"]

Box = tuple[tuple[int, int], ...]

# Functions and tensor methods that act position by position on every operand (broadcasting);
# in-place forms run out of place (operands are views of other nodes' values).
_ELEMENTWISE_FUNCS: dict[Any, Any] = {
    operator.add: operator.add, operator.iadd: operator.add, torch.add: torch.add,
    operator.mul: operator.mul, operator.imul: operator.mul, torch.mul: torch.mul,
    operator.sub: operator.sub, operator.isub: operator.sub, torch.sub: torch.sub,
    operator.truediv: operator.truediv, operator.itruediv: operator.truediv, torch.div: torch.div,
    operator.neg: operator.neg, torch.neg: torch.neg, operator.pow: operator.pow, torch.pow: torch.pow,
    F.relu: F.relu, torch.relu: torch.relu, F.relu6: F.relu6, F.gelu: F.gelu, F.silu: F.silu, F.elu: F.elu,
    F.leaky_relu: F.leaky_relu, F.hardswish: F.hardswish, F.hardsigmoid: F.hardsigmoid, F.mish: F.mish,
    F.softplus: F.softplus, F.hardtanh: F.hardtanh, F.celu: F.celu, F.selu: F.selu, F.sigmoid: F.sigmoid,
    F.tanh: F.tanh, torch.sigmoid: torch.sigmoid, torch.tanh: torch.tanh, torch.exp: torch.exp,
    torch.sqrt: torch.sqrt, torch.rsqrt: torch.rsqrt, torch.abs: torch.abs, torch.clamp: torch.clamp,
    torch.erf: torch.erf, F.relu_: F.relu, F.dropout: F.dropout, torch.addcmul: torch.addcmul,
    torch.addcdiv: torch.addcdiv, torch.maximum: torch.maximum, torch.minimum: torch.minimum,
}
_ELEMENTWISE_METHODS = {"relu", "sigmoid", "tanh", "add", "mul", "sub", "div", "neg", "exp", "sqrt", "rsqrt", "abs",
                        "clamp", "contiguous", "float", "double", "to", "type_as", "clone", "pow", "erf", "gelu",
                        "hardswish", "mish", "addcmul", "addcdiv", "maximum", "minimum"}
_SHAPE_METHODS = {"size", "dim"}
_SHAPE_ATTRS = {"shape", "ndim", "dtype", "device"}
_REDUCTIONS = {"mean", "sum", "amax", "amin", "std", "var", "norm"}
# Ops whose every output position depends on the whole input map (computed whole, their output then cut)
_DENSE_FUNCS = {F.group_norm, F.instance_norm}
_DENSE_MODULES = (nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


class Refused(Exception):
    """The graph cone cannot run a node: the message is the reason."""



@dataclass
class PlanNode:
    """What the planner knows of one graph node (see the module doc for the kinds)."""

    kind: str  # "input", "const", "shape", "map", "tuple", "complete"
    layout: tuple[int, ...] = ()  # map axes' tensor dims (maps, tuples' elements)
    how: str = "call"  # "call", "step", "getitem", "reshape", "whole" (operands complete)
    step: Step | None = None
    shape: tuple[int, ...] = ()  # the full-size pass's shape (tuples: the first element's)
    size: tuple[int, ...] = ()  # map size on the full input
    usual: tuple[int, ...] = ()  # map size in the usual pass (the crop)
    box: Box | None = None  # absolute box this node is computed on
    take: Box | None = None  # the box its map operands are cut to
    whole: bool = False  # its map operands are needed whole (reductions over the map axes)
    extra: dict = field(default_factory=dict)


def node_name(n: fx.Node) -> str:
    """The name of a node's op (a function's or module's name, a method's)."""
    t = n.target
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))


def _arg(n: fx.Node, pos: int, key: str, default: Any = None) -> Any:
    return n.args[pos] if len(n.args) > pos else n.kwargs.get(key, default)


def _dims(d: Any, ndim: int) -> tuple[int, ...]:
    ds = d if isinstance(d, (tuple, list)) else (d,)
    return tuple(int(v) % ndim for v in ds)


class Classifier:
    """Classifies every node the target depends on, in graph order: its kind, layout and how it runs."""

    def __init__(self, gm: fx.GraphModule, order: list[fx.Node], shapes: dict, nd: int):
        """
        Args:
            gm: the traced graph module.
            order: the nodes the target depends on, in graph order.
            shapes: each node's shape in the full-size pass (``plan_graph``'s shape run).
            nd: the number of map axes.
        """
        self.gm, self.order, self.shapes, self.nd = gm, order, shapes, nd
        self.info: dict[fx.Node, PlanNode] = {}

    def classify(self) -> dict[fx.Node, PlanNode]:
        """Every node's ``PlanNode`` (also kept in ``self.info``).

        Returns:
            Node -> its kind, layout and how it runs.

        Raises:
            Refused: a node the cone cannot run (the message names it).
        """
        for n in self.order:
            self.info[n] = self._classify(n)
        return self.info

    def _classify(self, n: fx.Node) -> PlanNode:
        nd, shape = self.nd, self.shapes.get(n)
        if n.op == "placeholder":
            return PlanNode("input", tuple(range(2, 2 + nd)), shape=shape)
        kinds = {self.info[a].kind for a in n.all_input_nodes}
        if n.op == "get_attr" or not kinds - {"const"}:
            return PlanNode("const", shape=shape)
        if n.op == "output":
            raise Refused("the target is the graph's output tuple")
        maps = [a for a in n.all_input_nodes if self.info[a].kind in ("map", "input", "tuple")]
        sized = [a for a in n.all_input_nodes if self.info[a].kind == "shape" and self.info[a].extra["spatial"]]
        if "shape" in kinds and not maps and not kinds & {"complete"}:  # arithmetic on shape reads
            if n.op == "call_function" and n.target is operator.getitem and "layout" in self.info[n.args[0]].extra:
                lay, rank = self.info[n.args[0]].extra["layout"], self.info[n.args[0]].extra["rank"]
                return PlanNode("shape", extra={"spatial": not isinstance(n.args[1], int) or n.args[1] % rank in lay})
            return PlanNode("shape", extra={"spatial": bool(sized)})
        resize = n.op == "call_function" and n.target is F.interpolate  # its step sets the sizes (integer factors)
        if sized and not (n.op == "call_method" and n.target in ("reshape", "view")) and not resize:
            raise Refused(f"a map's size feeds {node_name(n)!r} (the cone's maps are smaller)")
        if not maps:  # complete values only: run as they are
            return PlanNode("complete", shape=shape, how="whole")
        if n.op == "call_function" and n.target is getattr and n.args[1] in _SHAPE_ATTRS or \
                n.op == "call_method" and n.target in _SHAPE_METHODS:
            src = self._src(n)
            rank, d = len(src.shape), _arg(n, 1, "dim")
            spatial = n.target == "size" and (d is None or int(d) % rank in src.layout) or \
                n.target is getattr and n.args[1] == "shape"
            return PlanNode("shape", extra={"spatial": spatial, "layout": src.layout, "rank": rank, "src": n.args[0]})
        if n.op == "call_module":
            return self._module(n, shape)
        if n.op == "call_function":
            return self._function(n, shape)
        return self._method(n, shape)

    def _map_of(self, a: Any) -> PlanNode | None:
        return self.info[a] if isinstance(a, fx.Node) and self.info[a].kind in ("map", "input") else None

    def _pointwise(self, n: fx.Node, shape: Any, spatial_free: tuple[int, ...] = (), broadcast: bool = True,
                   **extra: Any) -> PlanNode:
        """A node that acts position by position: operands broadcast (aligned right) to ``shape``.

        ``spatial_free``: dims the op mixes (they must not be map axes); ``broadcast=False``: the other
        tensor operands are per-channel parameters (batch norm, layer norm, linear), not broadcast.
        """
        if not isinstance(shape, tuple):
            raise Refused(f"{node_name(n)!r} does not return one tensor")
        layout = None
        for a in n.all_input_nodes:
            ai = self.info[a]
            if ai.kind == "shape" and ai.extra["spatial"]:
                raise Refused(f"a map's size feeds {node_name(n)!r} (the cone's maps are smaller)")
            if ai.kind == "tuple":
                raise Refused(f"a tuple of maps feeds {node_name(n)!r}")
            if ai.kind in ("map", "input"):
                lay = tuple(d + len(shape) - len(ai.shape) for d in ai.layout)
                if layout is not None and lay != layout:
                    raise Refused(f"the operands of {node_name(n)!r} have their map axes at different dims")
                if tuple(shape[d] for d in lay) != tuple(ai.shape[d] for d in ai.layout):
                    raise Refused(f"the operands of {node_name(n)!r} differ in size")
                layout = lay
        for a in n.all_input_nodes if broadcast else ():
            ai = self.info[a]
            if ai.kind in ("const", "complete") and isinstance(ai.shape, tuple):
                sh = (1,) * (len(shape) - len(ai.shape)) + ai.shape
                if any(sh[d] != 1 for d in layout):
                    raise Refused(f"a tensor that is not an input map varies along a map axis at {node_name(n)!r} "
                                  "(e.g. a position embedding)")
        if any(d in layout for d in spatial_free):
            raise Refused(f"{node_name(n)!r} mixes positions along a map axis")
        return PlanNode("map", layout, shape=shape, extra=extra)

    def _src(self, n: fx.Node) -> PlanNode:
        src = self._map_of(n.args[0])
        if src is None:
            raise Refused(f"{node_name(n)!r} on something other than a map")
        return src

    def _module(self, n: fx.Node, shape: Any) -> PlanNode:
        m = self.gm.get_submodule(n.target)
        src = self._src(n)
        if isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                          nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)) and all(s == 1 for s in shape[2:]):
            return PlanNode("complete", shape=shape, whole=True)
        if isinstance(m, (nn.Linear, nn.LayerNorm, nn.Softmax, nn.PReLU)) or isinstance(m, POINTWISE):
            rank = len(src.shape)
            free: tuple[int, ...] = ()
            if isinstance(m, nn.Linear):
                free = (rank - 1,)
            elif isinstance(m, nn.LayerNorm):
                free = tuple(range(rank - len(m.normalized_shape), rank))
            elif isinstance(m, nn.Softmax):
                free = _dims(1 if m.dim is None else m.dim, rank)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm) or isinstance(m, nn.PReLU) and m.num_parameters > 1:
                free = (1,)
            st = module_step(m, self.nd) if isinstance(m, POINTWISE) else None
            if isinstance(st, str):
                raise Refused(st)
            node = self._pointwise(n, shape, free)
            if getattr(m, "inplace", False) and len(n.args[0].users) > 1:
                node.extra["clone"] = True
            return node
        if isinstance(m, _DENSE_MODULES):
            return self._dense(n, shape)
        st = module_step(m, self.nd)
        if isinstance(st, str):
            raise Refused(st)
        return self._geometric(n, st, src, shape)

    def _dense(self, n: fx.Node, shape: Any) -> PlanNode:
        """Group and instance norms: every position reads the whole map (computed whole, then cut by its users)."""
        src = self._src(n)
        if src.layout != tuple(range(2, 2 + self.nd)) or tuple(shape) != tuple(src.shape):
            raise Refused(f"{node_name(n)!r} on a map whose axes are not the last {self.nd} dims of (N, C, ...)")
        node = self._pointwise(n, shape, broadcast=False)
        node.whole = True
        return node

    def _geometric(self, n: fx.Node, st: Step, src: PlanNode, shape: tuple) -> PlanNode:
        if src.layout != tuple(range(2, 2 + self.nd)) or len(src.shape) != 2 + self.nd:
            raise Refused(f"{node_name(n)!r} on a map whose axes are not the last {self.nd} dims of (N, C, ...)")
        size = tuple(src.shape[2:])
        if out_size(st, size) != tuple(shape[2:]):
            raise Refused(f"{node_name(n)!r}: its output size is not the one its geometry gives")
        return PlanNode("map", src.layout, how="step", step=st, shape=shape)

    def _function(self, n: fx.Node, shape: Any) -> PlanNode:
        f, name = n.target, node_name(n)
        if f in _ELEMENTWISE_FUNCS:
            if f is F.dropout and _arg(n, 2, "training", True):
                raise Refused("dropout in train mode")
            return self._pointwise(n, shape, func=_ELEMENTWISE_FUNCS[f])
        if f is F.batch_norm:
            if _arg(n, 5, "training", False):
                raise Refused("F.batch_norm with batch statistics (train mode)")
            return self._pointwise(n, shape, (1,), broadcast=False)
        if f is F.layer_norm:
            src = self._src(n)
            k = len(_arg(n, 1, "normalized_shape"))
            return self._pointwise(n, shape, tuple(range(len(src.shape) - k, len(src.shape))), broadcast=False)
        if f is F.linear:
            return self._pointwise(n, shape, (len(self._src(n).shape) - 1,), broadcast=False)
        if f in (F.softmax, torch.softmax, F.log_softmax):
            return self._pointwise(n, shape, _dims(_arg(n, 1, "dim"), len(self._src(n).shape)))
        if f in (F.conv1d, F.conv2d, F.conv3d, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d,
                 F.avg_pool3d):
            return self._geometric(n, self._functional_step(n), self._src(n), shape)
        if f in (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool1d,
                 F.adaptive_max_pool2d, F.adaptive_max_pool3d) and all(s == 1 for s in shape[2:]):
            self._src(n)
            return PlanNode("complete", shape=shape, whole=True)
        if f is F.interpolate:
            return self._interpolate(n, shape)
        if f is torch.cat:
            return self._cat(n, shape)
        if f is torch.stack:
            return self._stack(n, shape)
        if f in (torch.split, torch.chunk, torch.tensor_split):
            return self._split(n, shape, _arg(n, 2, "dim", 0))
        if f is operator.getitem:
            return self._getitem(n, shape)
        if f in (torch.permute, torch.transpose, torch.flatten, torch.reshape):
            return self._method(n, shape, name)
        if f in _DENSE_FUNCS:
            return self._dense(n, shape)
        if f in (torch.mean, torch.sum, torch.amax, torch.amin, torch.norm):
            return self._method(n, shape, name)
        raise Refused(f"the op {name!r} is not supported by the cone runner")

    def _functional_step(self, n: fx.Node) -> Step:
        f, nd = n.target, self.nd
        if n.target in (F.conv1d, F.conv2d, F.conv3d):
            w = n.args[1] if len(n.args) > 1 else n.kwargs["weight"]
            if not isinstance(w, fx.Node) or self.info[w].kind != "const":
                raise Refused("a conv whose weight depends on the input")
            kernel = tuple(self.shapes[w][2:])
            stride, dil = _tuple_arg(_arg(n, 3, "stride", 1), nd), _tuple_arg(_arg(n, 5, "dilation", 1), nd)
            padding = _arg(n, 4, "padding", 0)
            pads = (tuple((d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in zip(kernel, dil))
                    if padding == "same" else ((0, 0),) * nd if padding == "valid"
                    else tuple((p, p) for p in _tuple_arg(padding, nd)))
            return Step(None, "conv", kernel, stride, pads, dil, groups=int(_arg(n, 6, "groups", 1)))
        kernel = _tuple_arg(_arg(n, 1, "kernel_size"), nd)
        stride = _tuple_arg(_arg(n, 2, "stride", None) or kernel, nd)
        pads = tuple((p, p) for p in _tuple_arg(_arg(n, 3, "padding", 0), nd))
        if f in (F.max_pool1d, F.max_pool2d, F.max_pool3d):
            if _arg(n, 6, "return_indices", False):
                raise Refused("max pool with return_indices")
            return Step(None, "max", kernel, stride, pads, _tuple_arg(_arg(n, 4, "dilation", 1), nd),
                        ceil=bool(_arg(n, 5, "ceil_mode", False)))
        return Step(None, "avg", kernel, stride, pads, (1,) * nd, ceil=bool(_arg(n, 4, "ceil_mode", False)),
                    count_pad=bool(_arg(n, 5, "count_include_pad", True)),
                    divisor=_arg(n, 6, "divisor_override", None) if nd > 1 else None)

    def _interpolate(self, n: fx.Node, shape: Any) -> PlanNode:
        """F.interpolate by whole factors (from the shapes: a ``size`` or a ``scale_factor``), run as a step."""
        src = self._src(n)
        if not isinstance(shape, tuple) or len(shape) != len(src.shape) or len(shape) != 2 + self.nd:
            raise Refused("an interpolation whose output is not a map of (N, C, ...)")
        ins, outs = src.shape[2:], shape[2:]
        if any(o % i for i, o in zip(ins, outs)):
            raise Refused(f"an upsampling from {tuple(ins)} to {tuple(outs)} ('interpolate': only whole scale factors)")
        factors = tuple(o // i for i, o in zip(ins, outs))
        sf = _arg(n, 2, "scale_factor")
        if sf is not None and tuple(float(v) for v in (sf if isinstance(sf, (tuple, list)) else (sf,) * self.nd)) \
                != tuple(float(v) for v in factors):
            raise Refused(f"an upsampling by {sf!r} ('interpolate': only whole scale factors)")
        st = upsample_step(_arg(n, 3, "mode", "nearest"), factors, _arg(n, 4, "align_corners"),
                           _arg(n, 6, "antialias", False), self.nd)
        if isinstance(st, str):
            raise Refused(f"{st} ('interpolate') is not supported by the cone runner")
        return self._geometric(n, st, src, shape)

    def _cat(self, n: fx.Node, shape: tuple) -> PlanNode:
        parts = n.args[0] if n.args else n.kwargs["tensors"]
        dim = _arg(n, 1, "dim", 0)
        node = self._pointwise(n, shape)
        if dim % len(shape) in node.layout:
            raise Refused("a concat along a map axis is not supported by the cone runner")
        if any(not isinstance(p, fx.Node) or self.info[p].kind not in ("map", "input") for p in parts):
            raise Refused("a concat of a map with a tensor that is not a map")
        return node

    def _stack(self, n: fx.Node, shape: tuple) -> PlanNode:
        parts = n.args[0] if n.args else n.kwargs["tensors"]
        if any(not isinstance(p, fx.Node) or self.info[p].kind not in ("map", "input") for p in parts):
            raise Refused("a stack of a map with a tensor that is not a map")
        src = self.info[parts[0]]
        if any(self.info[p].layout != src.layout or self.info[p].shape != src.shape for p in parts):
            raise Refused("a stack of maps of different layouts or sizes")
        d = int(_arg(n, 1, "dim", 0)) % len(shape)
        return PlanNode("map", tuple(a + (a >= d) for a in src.layout), shape=shape)

    def _split(self, n: fx.Node, shapes: Any, dim: Any) -> PlanNode:
        src = self._src(n)
        if int(dim) % len(src.shape) in src.layout:
            raise Refused(f"{node_name(n)!r} along a map axis")
        return PlanNode("tuple", src.layout, shape=src.shape)

    def _getitem(self, n: fx.Node, shape: Any) -> PlanNode:
        src = self.info[n.args[0]]
        if src.kind == "tuple" and isinstance(n.args[1], int):
            return PlanNode("map", src.layout, how="getitem", shape=shape)
        index = n.args[1] if isinstance(n.args[1], tuple) else (n.args[1],)
        rank = len(src.shape)
        if src.kind in ("map", "input") and all(isinstance(e, slice) or e is Ellipsis for e in index) \
                and sum(e is Ellipsis for e in index) <= 1:
            at = list(index)
            if Ellipsis in at:
                k = at.index(Ellipsis)
                at[k:k + 1] = [slice(None)] * (rank - len(at) + 1)
            at += [slice(None)] * (rank - len(at))
            if all(at[d] == slice(None) for d in src.layout):  # channel slices: every position kept
                return self._pointwise(n, shape)
        raise Refused("indexing a map along a map axis, or with integers (tensor[...]), is not supported by the "
                      "cone runner")

    def _method(self, n: fx.Node, shape: Any, name: str | None = None) -> PlanNode:
        name = name or n.target
        plain = name[:-1] if name.endswith("_") and not name.endswith("__") else name
        if plain in _ELEMENTWISE_METHODS:
            return self._pointwise(n, shape, method=plain)
        src = self._src(n)
        rank = len(src.shape)
        if plain == "permute":
            dims = n.args[1:] if len(n.args) > 2 or not isinstance(_arg(n, 1, "dims"), (tuple, list)) \
                else _arg(n, 1, "dims")
            dims = [int(d) % rank for d in dims]
            return PlanNode("map", tuple(dims.index(d) for d in src.layout), shape=shape)
        if plain == "transpose":
            a, b = int(_arg(n, 1, "dim0")) % rank, int(_arg(n, 2, "dim1")) % rank
            swap = {a: b, b: a}
            return PlanNode("map", tuple(swap.get(d, d) for d in src.layout), shape=shape)
        if plain in ("split", "chunk", "tensor_split"):
            return self._split(n, shape, _arg(n, 2, "dim", 0))
        if plain in ("reshape", "view", "flatten"):
            k = self.nd
            if src.layout != tuple(range(rank - k, rank)) or tuple(shape[-k:]) != tuple(src.shape[-k:]) \
                    or len(shape) < k + 1:
                raise Refused(f"{plain!r} that does not keep the map axes last (e.g. flattening them into tokens)")
            return PlanNode("map", tuple(range(len(shape) - k, len(shape))), how="reshape", shape=shape,
                         extra={"shape": tuple(shape[1:-k])})
        if plain in _REDUCTIONS:
            at = 2 if plain == "norm" else 1  # x.norm(p, dim, keepdim)
            dim = _arg(n, at, "dim")
            dims = tuple(range(rank)) if dim is None else _dims(dim, rank)
            keep = bool(_arg(n, at + 1, "keepdim", False))
            if set(src.layout) <= set(dims):
                return PlanNode("complete", shape=shape, whole=True)
            if set(src.layout) & set(dims):
                raise Refused(f"{plain!r} over some of the map axes")
            lay = src.layout if keep else tuple(d - sum(1 for r in dims if r < d) for d in src.layout)
            return PlanNode("map", lay, shape=shape, extra={"method": plain} if n.op == "call_method" else {})
        raise Refused(f"the op {name!r} is not supported by the cone runner")


def _tuple_arg(v: Any, nd: int) -> tuple[int, ...]:
    return tuple(int(a) for a in v) if isinstance(v, (tuple, list)) else (int(v),) * nd
