"""A runtime invariant on every traced row: no box reaches further than the ops before it allow.

Every node of a trace carries, per input axis, a *bound*: an interval of input pixels that
holds the box (floor included) of every real position of the node. It is carried along the
trace independently of the rules' maps:

- the input's bound is the image, ``[0, N - 1]``;
- a node's bound is the hull of its inputs' bounds, widened by the boxes of the virtual
  input positions the op may read past either end of its inputs (``reads_beyond``: the
  padding of a conv or pool, the overhang of a transposed conv or fold, the taps of an
  interpolation past the border, a shifted window). Every other op (pointwise, shape ops,
  slices, reductions, norms, gates, attention, ``lose_positions``'s upper bounds) only
  combines boxes of real input positions, so it adds nothing.

The rows are then checked: the hull of a row's boxes over its real positions must lie in
its bound, so no box is wider than the bound and none starts before it. A rule that unites
boxes wrongly (the zoo once saw ResNeSt stage boxes of 5,281,715 px starting at -364,011 px)
stops the trace with ``TraceInvariantError`` that names the node, the op and the numbers,
instead of giving a wrong TRF. The bound is a few interval operations per node.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from math import ceil
from typing import Any

import torch

from erf.analytic.axis import AxisMap
from erf.errors import TraceInvariantError

__all__ = ["Bound", "input_bound", "reads_beyond", "layer_reads_beyond", "bound_after", "check_row"]

Bound = tuple[tuple[int, int], ...]  # per input axis: (first, last) input pixel any real position's box may hold

_CONVS = {"conv1d", "conv2d", "conv3d", "convolution", "_convolution"}
_TRANSPOSED = {"conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}
_POOLS = {f"{kind}_pool{nd}d{tail}" for kind in ("max", "avg") for nd in "123" for tail in ("", "_with_indices")}
_LP_POOLS = {f"lp_pool{nd}d" for nd in "123"}
_RESAMPLE = {"interpolate", "upsample", "upsample_nearest", "upsample_bilinear"}
_READS_PAST = _CONVS | _TRANSPOSED | _POOLS | _LP_POOLS | _RESAMPLE | {"fold", "col2im", "unfold", "im2col", "pad"}


def input_bound(size: Sequence[int]) -> Bound:
    """The bound of the network input: the image itself.

    Args:
        size: the input's spatial size per axis.

    Returns:
        ``((0, size[0] - 1), ...)``.
    """
    return tuple((0, int(n) - 1) for n in size)


def _arg(args: tuple, kwargs: dict, i: int, key: str, default: Any = None) -> Any:
    if len(args) > i:
        return args[i]
    return kwargs.get(key, default)


def _ints(v: Any) -> list[int]:
    if v is None:
        return [0]
    if isinstance(v, torch.Tensor):
        v = v.tolist()
    if isinstance(v, (list, tuple)):
        out = [int(x) for x in v if isinstance(x, (int, float)) or isinstance(x, torch.Tensor)]
        return out or [0]
    if isinstance(v, (int, float)):
        return [int(v)]
    return [0]


def reads_beyond(op: str, args: tuple, kwargs: dict, out: Any) -> int:
    """How many virtual positions past either end of its input an op may read, per axis (an upper bound).

    From the op's own arguments, not from any rule: a conv reads its padding, a pool its padding and,
    in ceil mode, up to a stride less one more; a transposed conv or ``fold`` reads ``ceil(dilation * (kernel - 1) /
    stride) + 1`` positions past each end; ``F.pad`` its largest amount; an interpolation up to 2
    (its taps past the border); ``F.unfold`` its padding. Every other op reads real
    positions only (0).

    Args:
        op: the canonical op name (``erf.analytic.rules.canonical``).
        args, kwargs: the call's arguments.
        out: the call's result (tells ``Tensor.unfold`` from ``F.unfold``).

    Returns:
        The number of positions (input indices) on each side, the same for every axis.
    """
    if op not in _READS_PAST:
        return 0
    try:
        if op in _CONVS:
            w = _arg(args, kwargs, 1, "weight")
            kernel = [int(k) for k in w.shape[2:]] if isinstance(w, torch.Tensor) else [1]
            stride = max(_ints(_arg(args, kwargs, 3, "stride", 1)))
            dil = max(_ints(_arg(args, kwargs, 5, "dilation", 1)))
            if op != "conv1d" and op != "conv2d" and op != "conv3d" and _arg(args, kwargs, 6, "transposed", False) \
                    is True:
                return ceil(dil * (max(kernel) - 1) / max(stride, 1)) + 1 + max(_ints(_arg(args, kwargs, 4, "padding")))
            pad = _arg(args, kwargs, 4, "padding", 0)
            if isinstance(pad, str):  # 'same': d*(k-1) in all, the larger half after; 'valid': none
                return 0 if pad == "valid" else dil * (max(kernel) - 1)
            return max(max(_ints(pad)), 0)  # the last window ends inside the padding after the input
        if op in _TRANSPOSED:
            w = _arg(args, kwargs, 1, "weight")
            kernel = max(int(k) for k in w.shape[2:])
            stride = max(min(_ints(_arg(args, kwargs, 3, "stride", 1))), 1)
            dil = max(_ints(_arg(args, kwargs, 7, "dilation", 1)))
            return ceil(dil * (kernel - 1) / stride) + 1
        if op in _POOLS:
            kernel = _ints(_arg(args, kwargs, 1, "kernel_size", 1))
            stride = _ints(_arg(args, kwargs, 2, "stride") or kernel)
            # ceil mode: a last window may start inside the padding after the input, a stride short of its end
            return max(max(_ints(_arg(args, kwargs, 3, "padding", 0))), 0) + max(stride) - 1
        if op in _LP_POOLS:
            kernel = _ints(_arg(args, kwargs, 2, "kernel_size", 1))
            return max(_ints(_arg(args, kwargs, 3, "stride") or kernel)) - 1
        if op in ("fold", "col2im"):
            kernel = max(_ints(_arg(args, kwargs, 2, "kernel_size", 1)))
            dil = max(_ints(_arg(args, kwargs, 3, "dilation", 1)))
            stride = max(min(_ints(_arg(args, kwargs, 5, "stride", 1))), 1)
            return ceil(dil * (kernel - 1) / stride) + 1
        if op in ("unfold", "im2col"):
            x = args[0] if args else None
            if isinstance(x, torch.Tensor) and isinstance(out, torch.Tensor) and out.dim() == x.dim() + 1:
                return 0  # Tensor.unfold(dim, size, step): windows inside the dim
            return max(max(_ints(_arg(args, kwargs, 3, "padding", 0))), 0)
        if op == "pad":
            return max(max(_ints(_arg(args, kwargs, 1, "pad", 0))), 0)
        if op in _RESAMPLE:
            return 2
    except (TypeError, ValueError, AttributeError):  # arguments in a form not foreseen: no allowance
        return 0
    return 0


def layer_reads_beyond(kind: str, kernel: int, stride: int, dilation: int, pads: tuple[int, int],
                       output_padding: int = 0) -> int:
    """``reads_beyond`` for one axis of a layer of the layer-list form.

    Args:
        kind: "conv" (also pooling) or "transposed".
        kernel, stride, dilation: the layer's values on the axis.
        pads: its (before, after) padding on the axis.
        output_padding: a transposed layer's output padding.

    Returns:
        The positions the layer may read past each end of its input on this axis.
    """
    if kind == "transposed":
        extra = dilation * (kernel - 1) + output_padding + abs(pads[0]) + abs(pads[1])
        return ceil(extra / max(stride, 1)) + 1
    return max(abs(pads[0]), abs(pads[1])) + stride - 1  # ceil mode: a last window past the padding


def _hull(a: tuple[int, int] | None, b: tuple[int, int] | None) -> tuple[int, int] | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a[0], b[0]), max(a[1], b[1])


def _boxes_between(m: AxisMap, first: int, last: int) -> tuple[int, int] | None:
    """The hull of the boxes of indices ``first .. last`` (virtual ones included), floor included."""
    out = m.floor
    if last < first:
        return out
    count = last - first + 1
    # each phase's boxes move by a fixed shift per period: their extremes lie in the first and last period
    idx = range(first, last + 1) if count <= 2 * m.period else \
        list(range(first, first + m.period)) + list(range(last - m.period + 1, last + 1))
    for i in idx:
        out = _hull(out, m.periodic_box(i))
    return out


def bound_after(inputs: Iterable[tuple[Sequence[AxisMap], Sequence[int], Bound]], reads: int) -> Bound | None:
    """A node's bound: the hull of its inputs' bounds and the boxes of the virtual positions the op may read.

    Args:
        inputs: per traced input, its maps, its size per axis (real positions) and its bound.
        reads: positions the op may read past either end of each input (``reads_beyond``).

    Returns:
        The bound, or None without inputs.
    """
    out: list[tuple[int, int] | None] | None = None
    for axes, sizes, bound in inputs:
        if bound is None:
            continue
        here = list(bound)
        if reads > 0:
            for a, (m, n) in enumerate(zip(axes, sizes)):
                here[a] = _hull(here[a], _boxes_between(m, -reads, -1))
                here[a] = _hull(here[a], _boxes_between(m, n, n + reads - 1))
        out = here if out is None else [_hull(x, y) for x, y in zip(out, here)]
    return None if out is None else tuple(out)


def check_row(name: str, op: str, axes: Sequence[AxisMap], sizes: Sequence[int], bound: Bound | None,
              where: str = "") -> None:
    """Check that every real position's box of a row lies inside its bound.

    Args:
        name: the row's (node's) name.
        op: the op that made it.
        axes: its maps, one per input axis.
        sizes: its real positions per axis.
        bound: its bound (``bound_after``); None checks nothing.
        where: the module the op ran in, for the message.

    Raises:
        TraceInvariantError: a box wider than the bound or starting (or ending) outside it: a bug in
            erf's rules, reported with the node, the op and the numbers.
    """
    if bound is None:
        return
    for a, (m, n, b) in enumerate(zip(axes, sizes, bound)):
        span = m.span(n)
        if span is None or b is None or (b[0] <= span[0] and span[1] <= b[1]):
            continue
        at = f" in '{where}'" if where and where != name else ""
        raise TraceInvariantError(
            f"internal error in erf's receptive-field rules: row '{name}' (op '{op}'{at}) has boxes spanning "
            f"input pixels [{span[0]}, {span[1]}] ({span[1] - span[0] + 1} px) on axis {a}, but the ops before it "
            f"allow only [{b[0]}, {b[1]}] ({b[1] - b[0] + 1} px; a box can start no earlier than {b[0]}); the "
            "trace stops rather than give a wrong TRF (please report this with the model)")
