"""The rule protocol and the helpers every rule family shares.

A rule takes a ``Call`` (the op's name, arguments, result, and a way to look up what
is known about each input tensor) and returns the ``Info`` of the result (a list of
them for ops that return several tensors). Every rule function has that one signature:

    Args:
        call: the op, its arguments and result, and the lookup of what inputs know.

    Returns:
        The ``Info`` of the result, or a list of them (one per output tensor).

    Raises:
        UnsupportedOpError: a use of the op erf cannot follow (one line, suggesting ``treat_as``).
        AlignmentError: paths into the op disagree on jump or centre (unless ``allow_unaligned``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from math import gcd
from typing import Any, Callable, Iterator

import torch

from erf.analytic import axis as ax
from erf.analytic.axis import AxisMap
from erf.analytic.layout import Info, Part, axis_extents, axis_parts, rebase_parts, single_axis, spatial_components
from erf.errors import AlignmentError, UnsupportedOpError

Rule = Callable[["Call"], Any]  # returns an Info, or a list of them for several outputs


@dataclass
class Call:
    """One op seen in the forward pass, as a rule sees it."""

    name: str
    args: tuple
    kwargs: dict
    out: Any
    lookup: Callable[[torch.Tensor], Info | None]
    describe: Callable[[torch.Tensor], str]  # name of the node that made a tensor
    allow_unaligned: bool | None = None  # None: centre offsets are unioned (noted), jump mismatches refused
    offsets: dict = field(default_factory=dict)  # axis -> centre offset in px between paths (set by merge)
    notes: list = field(default_factory=list)  # upper bounds a rule took (see ``lose_positions``)
    where: str = "<model>"  # the module the op runs in

    def arg(self, i: int, key: str, default: Any = None) -> Any:
        """Argument ``i`` (positional) or ``key`` (keyword) of the call, else ``default``."""
        if len(self.args) > i:
            return self.args[i]
        return self.kwargs.get(key, default)

    def info(self, t: Any) -> Info | None:
        """What is known about ``t``: its ``Info`` when it is a traced tensor, else None."""
        return self.lookup(t) if isinstance(t, torch.Tensor) else None

    def first(self) -> tuple[torch.Tensor, Info]:
        """The first traced tensor among the arguments, with its ``Info``."""
        for t in tensors_in((self.args, self.kwargs)):
            i = self.lookup(t)
            if i is not None:
                return t, i
        raise AssertionError("rule called without a traced input")


def tensors_in(obj: Any) -> Iterator[torch.Tensor]:
    """Every tensor inside ``obj``, looking into lists, tuples and dict values (depth first).

    Args:
        obj: a tensor, or a (nested) list, tuple or dict of anything.

    Returns:
        An iterator over the tensors found, in order.
    """
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from tensors_in(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from tensors_in(o)


def pairs(v: Any, n: int) -> tuple[int, ...]:
    """An int or a sequence as ``n`` ints (one value repeated; a longer sequence: its last ``n``)."""
    if isinstance(v, (list, tuple)):
        v = tuple(int(x) for x in v)
        return v if len(v) == n else v * n if len(v) == 1 else v[-n:]
    return (int(v),) * n


def with_note(info: Info, why: str) -> Info:
    """``info`` marked not crop-safe because ``why`` (a first reason is kept)."""
    return info if info.crop_note else info.with_(crop_note=why)


def merge(call: Call, tensors: list[torch.Tensor], out_shape) -> Info:
    """Union of several inputs seen at the same output positions (broadcasting)."""
    nout = len(out_shape)
    infos = [(t, call.lookup(t)) for t in tensors]
    infos = [(t, i) for t, i in infos if i is not None]
    n_axes = len(infos[0][1].axes)
    dims: list = [None] * nout
    per_axis: list[list[tuple[torch.Tensor, AxisMap]]] = [[] for _ in range(n_axes)]
    note = None
    for t, info in infos:
        note = note or info.crop_note
        offset = nout - len(info.dims)
        indexed = set()
        for d, role in enumerate(info.dims):
            if role is None:
                continue
            size_in, size_out = t.shape[d], out_shape[d + offset]
            if size_in == size_out:
                if dims[d + offset] is None:
                    dims[d + offset] = role
                indexed.update(a for a, _ in spatial_components(role))
        for a in range(n_axes):
            m = info.axes[a]
            if a not in indexed and m.shift != 0:
                # broadcast along an axis it indexes with one position: constant box
                m = m.globalised(1)
            per_axis[a].append((t, m))
    sizes = axis_extents(dims, n_axes)
    axes = []
    for a in range(n_axes):
        maps = per_axis[a]
        for k in range(1, len(maps)):
            check_alignment(call, a, maps[0], maps[k])
        axes.append(union_maps(maps, sizes[a]))
    return Info(tuple(axes), tuple(dims), note)


def check_alignment(call: Call, axis: int, first: tuple[Any, AxisMap], other: tuple[Any, AxisMap]) -> None:
    """Refuse or record two paths into one node that disagree on jump or centre.

    A centre offset with one jump is a fact of the architecture (ResNet-D's average-pool
    shortcut, DLA, HRNet): by default it is recorded in ``call.offsets`` and the union is
    taken; ``allow_unaligned=False`` refuses it. Different jumps are refused unless
    ``allow_unaligned=True``.
    """
    a, b = first[1], other[1]
    why = ax.misalignment(a, b)
    if not why:
        return
    jumps_differ = a.jump != b.jump
    resampled = jumps_differ and (a.jump.denominator != 1) != (b.jump.denominator != 1)
    if resampled and call.allow_unaligned is None:  # a map resized to another's size (GhostNet-v3's DFC gate)
        call.notes.append(f"'{call.name}' at '{call.where}' joins a path resized by a ratio of sizes (jump "
                          f"{float(a.jump):g} vs {float(b.jump):g}): what it sees is counted for every position "
                          "(an upper bound)")
        return
    if call.allow_unaligned is True or (call.allow_unaligned is None and not jumps_differ):
        if not jumps_differ:
            off = ax.centre_offset(a, b)
            prev = call.offsets.get(axis, Fraction(0))
            call.offsets[axis] = max(prev, abs(off[2] - off[1]))
        return
    hint = ("pass allow_unaligned=True to take the union anyway" if jumps_differ else
            "the default (allow_unaligned=None) takes the union and reports the offset")
    raise AlignmentError(
        f"paths into '{call.name}' are not aligned on axis {axis}: '{call.describe(first[0])}' and "
        f"'{call.describe(other[0])}' differ in {why}; the RF would depend on the position ({hint})")


def union_maps(maps: list[tuple[Any, AxisMap]], n: int) -> AxisMap:
    """The union of the maps of several paths (see ``axis.union``: gates join the floor).

    Only where moving paths disagree on the jump (``allow_unaligned=True``) is the
    union not periodic: it is then written exactly for the ``n`` real positions, the
    jump of the first path continuing past them.
    """
    only = [m for _, m in maps]
    if len({m.jump for m in only if m.shift != 0}) <= 1:
        return ax.union(only)
    whole = [m for m in only if m.shift != 0 and m.jump.denominator == 1]
    if whole and len({m.jump for m in whole}) == 1:  # resized paths (a fractional jump) join the floor
        rest = [m.globalised(n) for m in only if m.shift != 0 and m.jump.denominator != 1]
        return ax.union(whole + rest + [m for m in only if m.shift == 0])
    first = next(m for m in only if m.shift != 0)
    lo, hi = [], []
    for i in range(n * first.period):
        boxes = [b for b in (m.box(i) for m in only) if b]
        lo.append(min(b[0] for b in boxes) if boxes else None)
        hi.append(max(b[1] for b in boxes) if boxes else None)
    return AxisMap.build(n * first.period, first.shift * n, lo, hi)


def globalise(info: Info, dims_mixed, why: str, drop: bool = False, gate: bool | None = None,
              rebase: bool = True) -> Info:
    """Every position of the axes indexed by ``dims_mixed`` now sees all of them.

    ``drop`` when the op removes those dims or turns them into features (reductions,
    linear layers); otherwise each index still stands for its position. ``gate``
    (default: ``not drop``) when each position keeps its own value and only adds a
    global statistic (softmax, normalisations): the local map stays and the whole
    span joins its floor; otherwise (pooling) no local path is left. Where the mixed
    dims hold only some factors of an axis (a window partition), positions mix only
    with those that share the other factors: the map becomes the exact window map.
    ``rebase``: when dropping leaves only coarse factors of an axis, index those (not for
    an operand whose other factors come back from another operand, as in ``a @ b``).
    """
    gate = (not drop) if gate is None else gate
    axes = list(info.axes)
    sizes = info.axis_sizes()
    dims = list(info.dims)
    mixed_parts: dict[int, set] = {}
    for d in dims_mixed:
        for a, stride, size in axis_parts(dims[d]):
            mixed_parts.setdefault(a, set()).add((stride, size))
    all_parts: dict[int, set] = {}
    for role in dims:
        for a, stride, size in axis_parts(role):
            all_parts.setdefault(a, set()).add((stride, size))
    for a, parts in mixed_parts.items():
        if max(parts) == max(all_parts[a]):
            # the whole axis, or its outermost factor (a grid partition: positions as far apart as the
            # map is wide): a global statistic; exact on real positions, the local path kept
            axes[a] = axes[a].gated(sizes[a]) if gate else axes[a].globalised(sizes[a])
        else:  # inner factors only (a window partition): the exact window map
            axes[a] = mix_parts(axes[a], sorted(parts))
    if drop:
        for d in dims_mixed:
            dims[d] = None
        for a in (mixed_parts if rebase else ()):  # the finest factors are gone: index the positions left
            left = [stride for role in dims for b, stride, _ in axis_parts(role) if b == a]
            if left and min(left) > 1:
                step = min(left)
                axes[a] = ax.window(axes[a], 1, step, 1, 0)
                dims = list(rebase_parts(tuple(dims), a, step))
    out = Info(tuple(axes), tuple(dims), info.crop_note)
    return with_note(out, why) if mixed_parts else out


def mix_parts(m: AxisMap, parts: list[tuple[int, int]]) -> AxisMap:
    """Each position also sees every position that differs from it only in the digits of ``parts``.

    ``parts`` are (stride, size) factors of a mixed-radix split of the axis (a window
    partition's inner factor: the window; a grid partition's outer factor: the grid).
    """
    period = 1
    for stride, size in parts:
        period = period * (stride * size) // gcd(period, stride * size)

    def taps(o: int) -> list[int]:
        base = o - sum(((o // s) % n) * s for s, n in parts)
        out = [base]
        for s, n in parts:
            out = [b + k * s for b in out for k in range(n)]
        return out

    return ax.rational_index(m, period, period, taps)


def lose_positions(call: Call, info: Info, dims_lost, what: str, out_dims=None) -> Info:
    """A known op used where erf cannot follow positions (``what``): every position of the axes those
    dims index sees all of them, and the dims stop indexing the image. An upper bound, noted.

    Args:
        call: the op (its ``notes`` get one line).
        info: what its input knows; ``dims_lost``: the input dims whose positions are lost.
        what: what the op does there, for the note.
        out_dims: the result's dims (default: the input's with the lost ones set to None).

    Returns:
        The result's ``Info``.
    """
    res = globalise(info, list(dims_lost), f"'{call.name}' {what}", drop=True, gate=False, rebase=False)
    if out_dims is not None:
        res = res.with_(dims=tuple(out_dims))
    call.notes.append(f"'{call.name}' at '{call.where}' {what}: taken as mixing all those positions (an upper bound)")
    return res


def norm_dims(dim: int | list[int] | tuple[int, ...] | None, ndim: int) -> list[int]:
    """``dim`` as non-negative dims of an ``ndim``-dim tensor (None: all of them)."""
    if dim is None:
        return list(range(ndim))
    if isinstance(dim, (list, tuple)):
        return [d % ndim for d in dim]
    return [int(dim) % ndim]


def spatial_window(call: Call, x, info: Info, nd: int, per_axis) -> Info:
    """Apply ``per_axis(k, map)`` to the last ``nd`` dims of ``x``."""
    axes = list(info.axes)
    dims = list(info.dims)
    first = len(dims) - nd
    for k in range(nd):
        d = first + k
        role = dims[d]
        if role is None:
            continue
        a = single_axis(role)
        n_out = call.out.shape[d] if isinstance(call.out, torch.Tensor) else call.out[0].shape[d]
        inner = _window_inner(role, dims, d, n_out)
        if inner is not None:  # inside the windows of a partition (Hiera's pooled queries): on the whole axis
            a, w = inner
            axes[a] = per_axis(k, axes[a])  # exact where no window straddles a border; else an upper bound
            dims = [_restride(r, a, w, n_out) for r in dims]
            dims[d] = ((Part(a, 1), n_out),)
            continue
        if a is None:
            out = call.out if isinstance(call.out, torch.Tensor) else call.out[0]
            lost = [first + j for j in range(nd) if dims[first + j] is not None]
            return lose_positions(call, Info(tuple(axes), tuple(dims), info.crop_note), lost,
                                  "slides over flattened image positions",
                                  out_dims=[None if j in lost else r for j, r in enumerate(dims)][:out.dim()])
        axes[a] = per_axis(k, axes[a])
        dims[d] = ((a, call.out.shape[d] if isinstance(call.out, torch.Tensor) else call.out[0].shape[d]),)
    return Info(tuple(axes), tuple(dims), info.crop_note)


def _window_inner(role, dims, d: int, n_out: int) -> tuple[int, int] | None:
    """(axis, window) when dim ``d`` holds the inner factor of a window partition of one axis (stride 1,
    size ``window``) whose outer factor sits in another dim, and ``n_out`` divides the window; else None."""
    if not role or len(role) != 1 or not isinstance(role[0][0], Part) or role[0][0].stride != 1:
        return None
    a, w = role[0][0].axis, role[0][1]
    outer = [p for e, r in enumerate(dims) if e != d for p in axis_parts(r) if p[0] == a]
    if len(outer) != 1 or outer[0][1] != w or n_out < 1 or w % n_out:
        return None
    return a, w


def _restride(role, a: int, w: int, n_out: int):
    if not role:
        return role
    return tuple((Part(a, n_out), s) if isinstance(k, Part) and k.axis == a and k.stride == w else (k, s)
                 for k, s in role)


def pointwise(call: Call) -> Info | list[Info]:
    """Ops that act on each position alone: the union of the inputs seen at each output position."""
    outs = call.out if isinstance(call.out, (list, tuple)) else [call.out]
    tensors = list(tensors_in((call.args, call.kwargs)))
    res = [merge(call, tensors, o.shape) for o in outs if isinstance(o, torch.Tensor)]
    return res if isinstance(call.out, (list, tuple)) else res[0]
