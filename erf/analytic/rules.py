"""Receptive-field rules, one per op seen in a forward pass.

A rule takes a ``Call`` (the op's name, arguments, result, and a way to look up
what is known about each input tensor) and returns the ``Info`` of the result
(a list of them for ops that return several tensors). Ops are matched by the name
of the function torch dispatches (``conv2d``, ``add``, ``interpolate``...).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from math import ceil, floor, gcd
from typing import Any, Callable

import torch

from erf.analytic import axis as ax
from erf.analytic.axis import AxisMap
from erf.analytic.layout import Info, Tokens, drop_unit_components, reshape_roles, single_axis, spatial_components
from erf.errors import AlignmentError, UnsupportedOpError


@dataclass
class Call:
    name: str
    args: tuple
    kwargs: dict
    out: Any
    lookup: Callable[[torch.Tensor], Info | None]
    describe: Callable[[torch.Tensor], str]  # name of the node that made a tensor
    allow_unaligned: bool = False

    def arg(self, i: int, key: str, default=None):
        if len(self.args) > i:
            return self.args[i]
        return self.kwargs.get(key, default)

    def info(self, t) -> Info | None:
        return self.lookup(t) if isinstance(t, torch.Tensor) else None

    def first(self) -> tuple[torch.Tensor, Info]:
        for t in tensors_in((self.args, self.kwargs)):
            i = self.lookup(t)
            if i is not None:
                return t, i
        raise AssertionError("rule called without a traced input")


def tensors_in(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from tensors_in(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from tensors_in(o)


def _pairs(v, n: int) -> tuple[int, ...]:
    if isinstance(v, (list, tuple)):
        v = tuple(int(x) for x in v)
        return v if len(v) == n else v * n if len(v) == 1 else v[-n:]
    return (int(v),) * n


def _note(info: Info, why: str) -> Info:
    return info if info.crop_note else info.with_(crop_note=why)


# ---------------------------------------------------------------- merging
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
    sizes = [1] * n_axes
    for role in dims:
        for a, s in spatial_components(role):
            sizes[a] = s
    axes = []
    for a in range(n_axes):
        maps = per_axis[a]
        for k in range(1, len(maps)):
            why = ax.misalignment(maps[0][1], maps[k][1])
            if why and maps[0][1].shift_invariant and maps[k][1].shift_invariant and not call.allow_unaligned:
                raise AlignmentError(
                    f"paths into '{call.name}' are not aligned on axis {a}: '{call.describe(maps[0][0])}' and "
                    f"'{call.describe(maps[k][0])}' differ in {why}; the RF would depend on the position "
                    "(pass allow_unaligned=True to take the union anyway)")
        axes.append(_union(maps, sizes[a]))
    return Info(tuple(axes), tuple(dims), note)


def _union(maps, n: int) -> AxisMap:
    only = [m for _, m in maps]
    if len({m.jump for m in only if m.shift != 0}) <= 1 and (
            all(m.shift != 0 for m in only) or all(m.shift == 0 for m in only)):
        return ax.union(only)
    # a constant box meets a moving one (or jumps differ): exact on the n real positions
    local = [m for m in only if m.shift != 0]
    period = n * local[0].period if local else 1
    shift = local[0].shift * n if local else 0
    lo, hi = [], []
    for i in range(period):
        boxes = [b for b in (m.box(i) for m in only) if b]
        lo.append(min(b[0] for b in boxes) if boxes else None)
        hi.append(max(b[1] for b in boxes) if boxes else None)
    return AxisMap.build(period, shift, lo, hi)


def globalise(info: Info, dims_mixed, why: str, drop: bool = False) -> Info:
    """Every position of the axes indexed by ``dims_mixed`` now sees all of them.

    ``drop`` when the op removes those dims or turns them into features (reductions,
    linear layers); otherwise each index still stands for its position.
    """
    axes = list(info.axes)
    sizes = info.axis_sizes()
    dims = list(info.dims)
    hit = False
    for d in dims_mixed:
        for a, _ in spatial_components(dims[d]):
            axes[a] = axes[a].globalised(sizes[a])
            hit = True
        if drop:
            dims[d] = None
    out = Info(tuple(axes), tuple(dims), info.crop_note)
    return _note(out, why) if hit else out


def _norm_dims(dim, ndim: int) -> list[int]:
    if dim is None:
        return list(range(ndim))
    if isinstance(dim, (list, tuple)):
        return [d % ndim for d in dim]
    return [int(dim) % ndim]


# ---------------------------------------------------------------- rules
def pointwise(call: Call):
    outs = call.out if isinstance(call.out, (list, tuple)) else [call.out]
    tensors = list(tensors_in((call.args, call.kwargs)))
    res = [merge(call, tensors, o.shape) for o in outs if isinstance(o, torch.Tensor)]
    return res if isinstance(call.out, (list, tuple)) else res[0]


def _spatial_window(call: Call, x, info: Info, nd: int, per_axis) -> Info:
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
        if a is None:
            raise UnsupportedOpError(f"'{call.name}' slides over a dim that holds several flattened image axes; "
                                     "reshape the tokens back to a grid first, or pass treat_as for this op")
        axes[a] = per_axis(k, axes[a])
        dims[d] = ((a, call.out.shape[d] if isinstance(call.out, torch.Tensor) else call.out[0].shape[d]),)
    return Info(tuple(axes), tuple(dims), info.crop_note)


def conv(call: Call):
    x, info = call.args[0], call.info(call.args[0])
    if info is None:
        return pointwise(call)  # weights traced, input constant: treat like a broadcast
    w = call.arg(1, "weight")
    nd = w.dim() - 2
    k = tuple(w.shape[2:])
    s = _pairs(call.arg(3, "stride", 1), nd)
    d = _pairs(call.arg(5, "dilation", 1), nd)
    p = call.arg(4, "padding", 0)
    if isinstance(p, str):
        left = [0] * nd if p == "valid" else [dd * (kk - 1) // 2 for dd, kk in zip(d, k)]
    else:
        left = _pairs(p, nd)
    res = _spatial_window(call, x, info, nd, lambda j, m: ax.window(m, k[j], s[j], d[j], left[j]))
    if info.dims[-nd - 1] is not None:  # channel dim mixes whatever it indexes
        res = globalise(res, [len(res.dims) - nd - 1], f"'{call.name}' mixes a dim that indexes the image",
                        drop=True)
    return res


def conv_transpose(call: Call):
    x, info = call.args[0], call.info(call.args[0])
    w = call.arg(1, "weight")
    nd = w.dim() - 2
    k = tuple(w.shape[2:])
    s = _pairs(call.arg(3, "stride", 1), nd)
    p = _pairs(call.arg(4, "padding", 0), nd)
    d = _pairs(call.arg(7, "dilation", 1), nd)
    return _spatial_window(call, x, info, nd, lambda j, m: ax.transposed_window(m, k[j], s[j], d[j], p[j]))


def pool(call: Call):
    name = call.name.lstrip("_").replace("_with_indices", "")
    nd = int(name[-2])
    x, info = call.args[0], call.info(call.args[0])
    if name.startswith("lp_pool"):
        k = _pairs(call.arg(2, "kernel_size"), nd)
        s = _pairs(call.arg(3, "stride") or k, nd)
        p, d = (0,) * nd, (1,) * nd
    else:
        k = _pairs(call.arg(1, "kernel_size"), nd)
        s = _pairs(call.arg(2, "stride") or k, nd)
        p = _pairs(call.arg(3, "padding", 0), nd)
        d = _pairs(call.arg(4, "dilation", 1), nd) if name.startswith("max") else (1,) * nd
    res = _spatial_window(call, x, info, nd, lambda j, m: ax.window(m, k[j], s[j], d[j], p[j]))
    return [res, res] if isinstance(call.out, tuple) else res


def _bins(n_in: int, n_out: int):
    g = gcd(n_in, n_out)
    return n_in // g, n_out // g, lambda o: range(floor(o * n_in / n_out), ceil((o + 1) * n_in / n_out))


def adaptive_pool(call: Call):
    name = call.name.lstrip("_").replace("_with_indices", "")
    nd = int(name[-2])
    x, info = call.args[0], call.info(call.args[0])
    out = call.out[0] if isinstance(call.out, tuple) else call.out
    n_in, n_out = x.shape[-nd:], out.shape[-nd:]
    first = x.dim() - nd
    res = info
    for j in range(nd):
        if n_out[j] == 1 and n_in[j] > 1:
            res = globalise(res, [first + j], f"'{call.name}' pools the whole map")
            res = res.with_(dims=res.dims[:first + j] + (None,) + res.dims[first + j + 1:])
    def per_axis(j, m):
        if n_out[j] == 1 or n_in[j] == n_out[j]:
            return m
        num, den, taps = _bins(n_in[j], n_out[j])
        return ax.rational_index(m, num, den, taps)
    res = _spatial_window(call, x, res, nd, per_axis)
    if any(a != b and b != 1 for a, b in zip(n_in, n_out)):
        res = _note(res, f"'{call.name}' bins depend on the input size")
    return [res, res] if isinstance(call.out, tuple) else res


def interpolate(call: Call):
    x, info = call.args[0], call.info(call.args[0])
    mode = call.arg(3, "mode", "nearest")
    align = bool(call.arg(4, "align_corners", False))
    sf = call.arg(2, "scale_factor")
    recompute = call.arg(5, "recompute_scale_factor")
    if call.arg(6, "antialias", False):
        raise UnsupportedOpError(f"'{call.name}' with antialias=True is not supported; pass treat_as for it")
    if mode == "area":
        return adaptive_pool(Call(f"adaptive_avg_pool{x.dim() - 2}d", call.args, call.kwargs, call.out,
                                  call.lookup, call.describe))
    nd = x.dim() - 2
    n_in, n_out = x.shape[-nd:], call.out.shape[-nd:]
    sfs = _pairs_float(sf, nd) if sf is not None and not recompute else None
    res = info

    def per_axis(j, m):
        if align and n_out[j] > 1:
            scale = Fraction(n_in[j] - 1, n_out[j] - 1)
        elif sfs is not None:
            scale = 1 / Fraction(sfs[j]).limit_denominator(1 << 20)
        else:
            scale = Fraction(n_in[j], n_out[j])
        num, den = scale.numerator, scale.denominator
        if mode == "nearest":
            taps = lambda o: [floor(o * scale)]
        elif mode == "nearest-exact":
            taps = lambda o: [floor((o + Fraction(1, 2)) * scale)]
        elif mode in ("linear", "bilinear", "trilinear", "bicubic"):
            def taps(o):
                xx = o * scale if align else (o + Fraction(1, 2)) * scale - Fraction(1, 2)
                i0 = floor(xx)
                if xx == i0:
                    return [i0]
                return [i0 - 1, i0, i0 + 1, i0 + 2] if mode == "bicubic" else [i0, i0 + 1]
        else:
            raise UnsupportedOpError(f"interpolate mode {mode!r} is not supported; pass treat_as for it")
        if align:
            # not periodic over all integers: exact on the real positions only
            lo, hi = [], []
            for o in range(n_out[j]):
                boxes = [m.box(i) for i in taps(o)]
                boxes = [b for b in boxes if b]
                lo.append(min(b[0] for b in boxes))
                hi.append(max(b[1] for b in boxes))
            return ax.finite(lo, hi)
        return ax.rational_index(m, num, den, taps)

    res = _spatial_window(call, x, info, nd, per_axis)
    if align or sfs is None:
        res = _note(res, f"'{call.name}' samples by a ratio of sizes that changes with the input size")
    return res


def _pairs_float(v, n):
    if isinstance(v, (list, tuple)):
        return tuple(float(x) for x in v) if len(v) == n else (float(v[0]),) * n
    return (float(v),) * n


def pad(call: Call):
    x, info = call.args[0], call.info(call.args[0])
    amounts = list(call.arg(1, "pad"))
    mode = call.arg(2, "mode", "constant")
    axes, dims = list(info.axes), list(info.dims)
    for j in range(len(amounts) // 2):
        d = x.dim() - 1 - j
        left = int(amounts[2 * j])
        role = dims[d]
        if role is None:
            continue
        a = single_axis(role)
        if a is None:
            raise UnsupportedOpError(f"'{call.name}' pads a dim of flattened image axes; pass treat_as for it")
        axes[a] = ax.window(axes[a], 1, 1, 1, left)
        dims[d] = ((a, call.out.shape[d]),)
    res = Info(tuple(axes), tuple(dims), info.crop_note)
    if mode == "circular":
        res = _note(res, "circular padding wraps the image around")
    return res


def getitem(call: Call):
    x, info = call.args[0], call.info(call.args[0])
    idx = call.args[1]
    if not isinstance(idx, tuple):
        idx = (idx,)
    if any(isinstance(i, torch.Tensor) or isinstance(i, list) for i in idx):
        # advanced indexing: fine along dims that do not index the image
        return _advanced_index(call, x, info, idx)
    n_ell = x.dim() - sum(1 for i in idx if i is not None and i is not Ellipsis)
    expanded = []
    for i in idx:
        if i is Ellipsis:
            expanded.extend([slice(None)] * n_ell)
        else:
            expanded.append(i)
    expanded += [slice(None)] * (x.dim() + sum(1 for i in expanded if i is None) - len(expanded))
    axes, dims = list(info.axes), []
    d = 0
    for i in expanded:
        if i is None:
            dims.append(None)
            continue
        role = info.dims[d]
        n = x.shape[d]
        if isinstance(i, slice):
            start, stop, step = i.indices(n)
            size = len(range(start, stop, step))
            if role is not None and isinstance(role[0][0], Tokens) and len(role) == 1:
                role, axes = _slice_tokens(call, role[0][0], start, stop, step, axes)
            elif role is not None:
                a = single_axis(role)
                if a is None:
                    if (start, stop, step) != (0, n, 1):
                        raise UnsupportedOpError(f"slicing a dim of flattened image axes in '{call.name}' "
                                                 "is not supported; pass treat_as for it")
                else:
                    axes[a] = ax.window(axes[a], 1, step, 1, -start)
                    role = ((a, size),)
            dims.append(role)
        else:  # an integer drops the dim
            if role is not None:
                if isinstance(role[0][0], Tokens) and int(i) % n < role[0][0].prefix:
                    # a prefix token (class token): conservatively, all it could have seen
                    for a, _ in spatial_components(role):
                        axes[a] = axes[a].globalised(info.axis_sizes()[a])
                    d += 1
                    continue
                for a, k in _unravel(role, int(i) % n):  # one position per image axis the dim holds
                    b = axes[a].box(k)
                    axes[a] = AxisMap.constant(*b) if b else AxisMap(1, 0, (None,), (None,))
        d += 1
    return Info(tuple(axes), tuple(dims), info.crop_note)


def _unravel(role, index: int) -> list[tuple[int, int]]:
    """(axis, position) of each image axis at ``index`` of a dim (row-major; grid tokens after the prefix)."""
    comps = role
    if isinstance(role[0][0], Tokens):
        index, comps = index - role[0][0].prefix, role[0][0].grid
    out = []
    for key, size in reversed(comps):
        index, k = divmod(index, size)
        if key is not None:
            out.append((key, k))
    return out


def _slice_tokens(call, tok: Tokens, start, stop, step, axes):
    """Slicing a token dim: dropping the prefix tokens leaves the grid."""
    grid_size = 1
    for _, size in tok.grid:
        grid_size *= size
    if step == 1 and stop == tok.prefix + grid_size and start <= tok.prefix:
        new_prefix = tok.prefix - start
        return (((Tokens(new_prefix, tok.grid), new_prefix + grid_size),) if new_prefix else tok.grid), axes
    raise UnsupportedOpError(f"slicing tokens [{start}:{stop}:{step}] in '{call.name}' is not supported "
                             "(only dropping the prefix tokens is); pass treat_as for it")


def _advanced_index(call, x, info, idx):
    for d, i in enumerate(idx):
        if i is Ellipsis:
            break
        if (isinstance(i, (torch.Tensor, list))) and info.dims[d] is not None:
            raise UnsupportedOpError(f"indexing image positions with a tensor in '{call.name}' "
                                     "is not supported; pass treat_as for it")
    if call.out.dim() != x.dim():
        raise UnsupportedOpError(f"advanced indexing that changes the number of dims in '{call.name}' "
                                 "is not supported; pass treat_as for it")
    return info


def reshape(call: Call):
    x, info = call.args[0], call.info(call.args[0])
    roles = reshape_roles(info.dims, tuple(x.shape), tuple(call.out.shape))
    if roles is None:
        raise UnsupportedOpError(
            f"'{call.name}' from {tuple(x.shape)} to {tuple(call.out.shape)} splits an image axis across dims "
            "(e.g. a window partition); erf cannot follow it: pass treat_as for this op or a module rule")
    return info.with_(dims=roles)


def permute(call: Call):
    x, info = call.args[0], call.info(call.args[0])
    n = x.dim()
    name = call.name
    if name in ("permute",):
        order = call.args[1:] if not isinstance(call.arg(1, "dims"), (list, tuple)) else call.arg(1, "dims")
        order = [int(o) % n for o in order]
    elif name in ("transpose", "swapaxes", "swapdims"):
        a, b = int(call.arg(1, "dim0")) % n, int(call.arg(2, "dim1")) % n
        order = list(range(n))
        order[a], order[b] = order[b], order[a]
    elif name == "t":
        order = list(range(n))[::-1]
    elif name == "T":
        order = list(range(n))[::-1]
    elif name == "mT":
        order = list(range(n - 2)) + [n - 1, n - 2]
    elif name in ("movedim", "moveaxis"):
        src, dst = _norm_dims(call.arg(1, "source"), n), _norm_dims(call.arg(2, "destination"), n)
        rest = [d for d in range(n) if d not in src]
        order = [None] * n
        for s_, d_ in zip(src, dst):
            order[d_] = s_
        it = iter(rest)
        order = [o if o is not None else next(it) for o in order]
    else:
        raise AssertionError(name)
    return info.with_(dims=tuple(info.dims[o] for o in order))


def flatten(call: Call):
    x, info = call.args[0], call.info(call.args[0])
    return reshape(Call(call.name, (x,), {}, call.out, call.lookup, call.describe))


def reduce_dims(call: Call):
    """Reductions and normalisations along dims (mean, sum, softmax, norm...)."""
    x, info = call.args[0], call.info(call.args[0])
    name = call.name
    if name in ("max", "min") and isinstance(call.arg(1, "other"), torch.Tensor):
        return pointwise(call)  # the elementwise form
    if info is None:
        return pointwise(call)
    dim = call.arg(1, "dim")
    if name in ("softmax", "log_softmax", "softmin", "cumsum", "cumprod", "logcumsumexp", "normalize"):
        dim = call.arg(1, "dim", -1 if name == "normalize" else None)
        if name == "normalize":
            dim = call.arg(2, "dim", 1)
    mixed = _norm_dims(dim, x.dim())
    keeps_dim = name in ("softmax", "log_softmax", "softmin", "cumsum", "cumprod", "logcumsumexp", "normalize")
    res = globalise(info, mixed, f"'{name}' mixes image positions", drop=not keeps_dim)
    outs = call.out if isinstance(call.out, (tuple, list)) else (call.out,)
    results = []
    for o in outs:
        if not isinstance(o, torch.Tensor):
            continue
        if o.dim() == x.dim():
            results.append(res)
        else:
            keep = [d for d in range(x.dim()) if d not in mixed] if o.dim() == x.dim() - len(mixed) else None
            if keep is None:
                keep = list(range(o.dim())) if o.dim() < x.dim() and dim is None else None
            dims = tuple(res.dims[d] for d in keep) if keep and len(keep) == o.dim() else (None,) * o.dim()
            results.append(res.with_(dims=dims))
    return results if isinstance(call.out, (tuple, list)) else results[0]


def layer_norm(call: Call):
    x, info = call.args[0], call.info(call.args[0])
    shape = call.arg(1, "normalized_shape")
    k = len(shape) if isinstance(shape, (list, tuple, torch.Size)) else 1
    return globalise(info, list(range(x.dim() - k, x.dim())), "'layer_norm' normalises over image positions")


def group_norm(call: Call):
    x, info = call.args[0], call.info(call.args[0])
    return globalise(info, list(range(1, x.dim())), f"'{call.name}' normalises over image positions")


def batch_norm(call: Call):
    x, info = call.args[0], call.info(call.args[0])
    training = call.arg(5, "training", False)
    if training:
        res = globalise(info, list(range(2, x.dim())), "BatchNorm in train mode mixes the batch and image positions")
        return res
    return info


def linear(call: Call):
    x, info = call.args[0], call.info(call.args[0])
    if info is None:
        return pointwise(call)
    res = globalise(info, [x.dim() - 1], "'linear' mixes the features of a dim that indexes the image", drop=True)
    return res


def matmul(call: Call):
    """``a @ b``: rows keep a's positions, columns b's; the contracted dim is mixed."""
    a, b = call.args[0], call.args[1]
    out = call.out
    parts = []  # (tensor, info with dims already placed as in the output)
    for t, contracted, replaced in ((a, -1, -1), (b, -2 if b.dim() >= 2 else -1, -2)):
        info = call.info(t)
        if info is None:
            continue
        info = globalise(info, [t.dim() + contracted], f"'{call.name}' contracts image positions", drop=True)
        dims = list(info.dims)
        if a.dim() >= 2 and b.dim() >= 2:
            dims[replaced] = None  # that slot holds the other operand's positions
        parts.append((t, dims, info))
    dims = [None] * out.dim()
    for t, tdims, _ in parts:
        off = out.dim() - len(tdims)
        for d, role in enumerate(tdims):
            if role is not None and 0 <= d + off < out.dim():
                dims[d + off] = role
    seen: dict[int, int] = {}
    for role in dims:
        for axis, _ in spatial_components(role):
            seen[axis] = seen.get(axis, 0) + 1
    n_axes = len(parts[0][2].axes)
    axes = tuple(_union([(None, i.axes[k]) for _, _, i in parts], _size_of_axis(dims, k)) for k in range(n_axes))
    note = next((i.crop_note for _, _, i in parts if i.crop_note), None)
    res = Info(axes, tuple(dims), note)
    twice = {k for k, c in seen.items() if c > 1}
    if twice:  # an outer product of positions: each entry sees two places; take all
        mixed = [d for d, role in enumerate(dims) if any(a in twice for a, _ in spatial_components(role))]
        res = globalise(res, mixed, f"'{call.name}' pairs image positions")
    return res


def _size_of_axis(dims, k) -> int:
    for role in dims:
        for a, s in spatial_components(role):
            if a == k:
                return s
    return 1


def attention(call: Call):
    """scaled_dot_product_attention / multi_head_attention_forward: query keeps its
    positions, every query sees all keys and values."""
    q, k, v = call.args[0], call.arg(1, "key"), call.arg(2, "value")
    parts = []
    qi = call.info(q)
    for t in (k, v):
        i = call.info(t)
        if i is not None:
            parts.append(globalise(i, list(range(t.dim())), f"'{call.name}' attends over all positions"))
    base = qi if qi is not None else parts[0]
    n_axes = len(base.axes)
    axes = []
    for a in range(n_axes):
        maps = ([qi.axes[a]] if qi is not None else []) + [p.axes[a] for p in parts]
        axes.append(_union([(None, m) for m in maps], base.axis_sizes()[a]))
    note = next((i.crop_note for i in [qi, *parts] if i is not None and i.crop_note), None)
    res = Info(tuple(axes), base.dims if qi is not None else (None,) * q.dim(), note)
    if qi is None or any(p.crop_note for p in parts):
        res = _note(res, f"'{call.name}' attends over all positions")
    if isinstance(call.out, tuple):
        weights = globalise(res, list(range(len(res.dims))), "attention weights")
        return [res if i == 0 else weights for i, o in enumerate(call.out)]
    return res


def cat(call: Call):
    tensors = list(call.arg(0, "tensors"))
    dim = int(call.arg(1, "dim", 0))
    ref = next(t for t in tensors if call.info(t) is not None)
    dim %= ref.dim()
    traced = [t for t in tensors if call.info(t) is not None]
    if all(call.info(t).dims[dim] is None for t in traced):
        return merge(call, traced, list(call.out.shape))
    # joining tokens along a token dim: constant tokens in front of one traced grid
    last = tensors[-1]
    if len(traced) != 1 or last is not traced[0]:
        raise UnsupportedOpError(f"'{call.name}' joins tensors along a dim that indexes the image; erf follows "
                                 "only constant tokens put in front of the image tokens; pass treat_as for it")
    info = call.info(last)
    prefix = sum(t.shape[dim] for t in tensors[:-1])
    role = info.dims[dim]
    if len(role) == 1 and isinstance(role[0][0], Tokens):
        tok = Tokens(role[0][0].prefix + prefix, role[0][0].grid)
    else:
        tok = Tokens(prefix, role)
    dims = list(info.dims)
    dims[dim] = ((tok, call.out.shape[dim]),)
    return info.with_(dims=tuple(dims))


def stack(call: Call):
    tensors = list(call.arg(0, "tensors"))
    dim = int(call.arg(1, "dim", 0)) % call.out.dim()
    traced = [t for t in tensors if call.info(t) is not None]
    shape = list(call.out.shape)
    del shape[dim]
    info = merge(call, traced, shape)
    dims = list(info.dims)
    dims.insert(dim, None)
    return info.with_(dims=tuple(dims))


def split(call: Call):
    x, info = call.args[0], call.info(call.args[0])
    name = call.name
    dim = call.arg(2, "dim", 0) if name in ("split", "chunk", "tensor_split", "split_with_sizes") else 0
    if name == "unbind":
        dim = call.arg(1, "dim", 0)
    dim = int(dim) % x.dim()
    outs = list(call.out)
    role = info.dims[dim]
    res = []
    start = 0
    for o in outs:
        if name == "unbind":
            dims = info.dims[:dim] + info.dims[dim + 1:]
            if role is not None:
                raise UnsupportedOpError("unbinding a dim that indexes the image is not supported")
            res.append(info.with_(dims=dims))
            continue
        if role is None:
            res.append(info)
        else:
            a = single_axis(role)
            if a is None:
                raise UnsupportedOpError(f"'{name}' along a dim of flattened image axes is not supported")
            axes = list(info.axes)
            axes[a] = ax.window(axes[a], 1, 1, 1, -start)
            dims = list(info.dims)
            dims[dim] = ((a, o.shape[dim]),)
            res.append(Info(tuple(axes), tuple(dims), info.crop_note))
        start += o.shape[dim]
    return res


def pixel_shuffle(call: Call):
    x, info = call.args[0], call.info(call.args[0])
    r = int(call.arg(1, "upscale_factor"))
    return _spatial_window(call, x, info, 2, lambda j, m: ax.rational_index(m, 1, r, lambda o: [o // r]))


def pixel_unshuffle(call: Call):
    x, info = call.args[0], call.info(call.args[0])
    r = int(call.arg(1, "downscale_factor"))
    return _spatial_window(call, x, info, 2, lambda j, m: ax.window(m, r, r, 1, 0))


def expand(call: Call):
    x, info = call.args[0], call.info(call.args[0])
    return merge(call, [x], call.out.shape)


def squeeze_like(call: Call):
    x, info = call.args[0], call.info(call.args[0])
    return reshape(Call(call.name, (x,), {}, call.out, call.lookup, call.describe))


def identity(call: Call):
    x, info = call.first()
    return info


def global_op(call: Call):
    """Anything declared global: every output sees the union of all inputs."""
    outs = call.out if isinstance(call.out, (list, tuple)) else [call.out]
    tensors = [t for t in tensors_in((call.args, call.kwargs)) if call.info(t) is not None]
    infos = [globalise(call.info(t), list(range(t.dim())), f"'{call.name}' is treated as global") for t in tensors]
    n_axes = len(infos[0].axes)
    axes = tuple(_union([(None, i.axes[a]) for i in infos], 1) for a in range(n_axes))
    res = [Info(axes, (None,) * o.dim(), infos[0].crop_note) for o in outs if isinstance(o, torch.Tensor)]
    return res if isinstance(call.out, (list, tuple)) else res[0]


def windowed_attention(call: Call, window, shift):
    """Swin-style attention inside windows of ``window`` tokens, shifted by ``shift``.

    A token sees the tokens of its window; shifted windows are masked at the border, so
    a window never wraps around. Everything inside the module (MLP, norms) is local.
    """
    x, info = call.first()
    sizes = info.axis_sizes()
    axes = list(info.axes)
    grid = [a for role in info.dims for a, _ in spatial_components(role)]
    for k, a in enumerate(grid):
        n = sizes[a]
        ws = window[k] if k < len(window) else window[-1]
        sh = shift[k] if k < len(shift) else shift[-1]
        if n <= ws:
            ws, sh = n, 0

        def taps(o, ws=ws, sh=sh):
            start = ((o - sh) // ws) * ws + sh
            return range(start, start + ws)

        axes[a] = ax.rational_index(axes[a], ws, ws, taps)
    out = call.out if isinstance(call.out, torch.Tensor) else call.out[0]
    dims = info.dims if tuple(out.shape) == tuple(x.shape) else (None,) * out.dim()
    return _note(Info(tuple(axes), dims, info.crop_note), "windowed attention depends on the grid size")


# ---------------------------------------------------------------- the table
POINTWISE = set("""
abs absolute neg negative exp exp2 expm1 log log2 log10 log1p sqrt rsqrt sin cos tan sinh cosh tanh asin acos atan
sigmoid relu relu6 elu selu celu gelu silu mish softplus softsign hardtanh hardswish hardsigmoid hardshrink
softshrink tanhshrink leaky_relu prelu rrelu threshold logsigmoid glu clamp clamp_min clamp_max clip pow
add sub subtract mul multiply div divide true_divide floor_divide remainder fmod maximum minimum fmax fmin where
lerp addcmul addcdiv erf erfc erfinv square reciprocal sign sgn round floor ceil trunc frac nan_to_num
contiguous clone detach to float double half bfloat16 type type_as cuda cpu requires_grad_ dropout dropout1d
dropout2d dropout3d alpha_dropout feature_alpha_dropout eq ne lt le gt ge logical_and logical_or logical_not
logical_xor bitwise_and bitwise_or bitwise_xor masked_fill atan2 hypot xlogy copysign heaviside isnan isinf
isfinite __add__ __radd__ __iadd__ __sub__ __rsub__ __isub__ __mul__ __rmul__ __imul__ __truediv__ __rtruediv__
__itruediv__ __div__ __idiv__ __floordiv__ __rfloordiv__ __mod__ __rmod__ __pow__ __rpow__ __ipow__ __neg__
__abs__ __and__ __or__ __xor__ __invert__ __eq__ __ne__ __lt__ __le__ __gt__ __ge__ __iand__ __ior__ __ixor__
local_response_norm sub_ mul_ div_ add_ relu_ clamp_ sigmoid_ tanh_ copy_ fill_ zero_ masked_fill_ pow_
gelu_ silu_ hardtanh_ leaky_relu_ elu_ celu_ selu_ threshold_ detach_ abs_ neg_ exp_ square_ sqrt_ rsqrt_
float_power softmax2d view_as reshape_as expand_as broadcast_to real imag conj angle
""".split())

IGNORED = set("""
size dim numel __len__ __get__ __bool__ __format__ __repr__ __hash__ __contains__ item tolist is_contiguous
stride data_ptr element_size nelement ndimension is_floating_point is_complex __reduce_ex__ __setstate__
storage_offset get_device __index__ __int__ __float__ __array_priority__ __iter__ __deepcopy__ new_zeros new_ones
new_empty new_full new_tensor zeros_like ones_like empty_like full_like rand_like randn_like randint_like
argmax argmin allclose equal isclose any all register_hook retain_grad backward __dlpack__ __dlpack_device__
""".split())

LEAKS = {"numpy", "__array__", "untyped_storage", "data_ptr"}

RULES: dict[str, Callable[[Call], Any]] = {}
for _n in ("conv1d", "conv2d", "conv3d", "convolution", "_convolution"):
    RULES[_n] = conv
for _n in ("conv_transpose1d", "conv_transpose2d", "conv_transpose3d"):
    RULES[_n] = conv_transpose
for _nd in "123":
    for _n in (f"max_pool{_nd}d", f"avg_pool{_nd}d", f"lp_pool{_nd}d", f"max_pool{_nd}d_with_indices"):
        RULES[_n] = pool
    for _n in (f"adaptive_avg_pool{_nd}d", f"adaptive_max_pool{_nd}d", f"adaptive_max_pool{_nd}d_with_indices"):
        RULES[_n] = adaptive_pool
RULES.update({
    "interpolate": interpolate, "upsample": interpolate, "upsample_nearest": interpolate,
    "upsample_bilinear": interpolate,
    "pad": pad, "__getitem__": getitem, "narrow": None,
    "view": reshape, "reshape": reshape, "flatten": flatten, "unflatten": reshape, "squeeze": squeeze_like,
    "unsqueeze": squeeze_like, "view_as": None,
    "permute": permute, "transpose": permute, "swapaxes": permute, "swapdims": permute, "t": permute,
    "T": permute, "mT": permute, "movedim": permute, "moveaxis": permute,
    "layer_norm": layer_norm, "rms_norm": layer_norm, "group_norm": group_norm, "instance_norm": group_norm,
    "batch_norm": batch_norm,
    "linear": linear, "bilinear": linear, "matmul": matmul, "bmm": matmul, "mm": matmul, "__matmul__": matmul,
    "scaled_dot_product_attention": attention, "multi_head_attention_forward": attention,
    "cat": cat, "concat": cat, "concatenate": cat, "stack": stack,
    "split": split, "chunk": split, "tensor_split": split, "unbind": split, "split_with_sizes": split,
    "pixel_shuffle": pixel_shuffle, "pixel_unshuffle": pixel_unshuffle,
    "expand": expand, "broadcast_to": expand, "expand_as": expand, "repeat_interleave": None,
})
for _n in ("mean", "sum", "amax", "amin", "max", "min", "std", "var", "norm", "logsumexp", "prod", "median",
           "nansum", "nanmean", "std_mean", "var_mean", "softmax", "log_softmax", "softmin", "cumsum",
           "cumprod", "logcumsumexp", "normalize", "count_nonzero"):
    RULES[_n] = reduce_dims
RULES = {k: v for k, v in RULES.items() if v is not None}
for _n in ("view_as", "reshape_as"):
    RULES[_n] = reshape
RULES["expand_as"] = expand
RULES["broadcast_to"] = expand

TREAT_AS = {"pointwise": pointwise, "global": global_op, "identity": identity}


def canonical(name: str) -> str:
    """Name of an op as matched against the rules (``_max_pool2d`` -> ``max_pool2d``)."""
    if name.startswith("_") and not name.startswith("__"):
        name = name.lstrip("_")
    return name


def find_rule(name: str, treat_as: dict[str, str]) -> Callable[[Call], Any] | None:
    if name in treat_as:
        return TREAT_AS[treat_as[name]]
    if name in RULES:
        return RULES[name]
    if name in POINTWISE:
        return pointwise
    return None
