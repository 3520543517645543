"""Shape ops: indexing and slicing, reshape and flatten, permutes, expand, cat, stack and split."""

from __future__ import annotations

import torch

from erf.analytic import axis as ax
from erf.analytic.axis import AxisMap
from erf.analytic.layout import Info, Tokens, reshape_roles, single_axis, spatial_components
from erf.analytic.rules.core import Call, lose_positions, merge, norm_dims
from erf.errors import UnsupportedOpError


def getitem(call: Call) -> Info | list[Info]:
    """``x[...]``: slices shift and stride an axis, integers pick one position, None adds a dim."""
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
    lost: list[int] = []  # output dims whose positions cannot be followed (slices of flattened axes)
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
                        lost.append(len(dims))
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
    res = Info(tuple(axes), tuple(dims), info.crop_note)
    if lost:
        return lose_positions(call, res, lost, "slices flattened image positions")
    return res


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
    if stop <= tok.prefix:  # prefix tokens only (the class token): all they could have seen
        sizes = dict(spatial_components(((tok, 0),)))
        return None, [m.globalised(sizes[a]) if a in sizes else m for a, m in enumerate(axes)]
    raise UnsupportedOpError(f"slicing tokens [{start}:{stop}:{step}] in '{call.name}' is not supported "
                             "(only dropping the prefix tokens, or keeping only them, is); pass treat_as for it")


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


def reshape(call: Call) -> Info | list[Info]:
    """view / reshape / unflatten: dims regroup; an image axis may not be split across dims."""
    x, info = call.args[0], call.info(call.args[0])
    roles = reshape_roles(info.dims, tuple(x.shape), tuple(call.out.shape))
    if roles is None:
        return lose_positions(call, info, [d for d, r in enumerate(info.dims) if r is not None],
                              f"regroups image positions ({tuple(x.shape)} to {tuple(call.out.shape)}) in a way "
                              "erf cannot follow", out_dims=(None,) * call.out.dim())
    return info.with_(dims=roles)


def permute(call: Call) -> Info | list[Info]:
    """permute / transpose / movedim and friends: dims reorder."""
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
        src, dst = norm_dims(call.arg(1, "source"), n), norm_dims(call.arg(2, "destination"), n)
        rest = [d for d in range(n) if d not in src]
        order = [None] * n
        for s_, d_ in zip(src, dst):
            order[d_] = s_
        it = iter(rest)
        order = [o if o is not None else next(it) for o in order]
    else:
        raise AssertionError(name)
    return info.with_(dims=tuple(info.dims[o] for o in order))


def flatten(call: Call) -> Info | list[Info]:
    """flatten: a reshape."""
    x, info = call.args[0], call.info(call.args[0])
    return reshape(Call(call.name, (x,), {}, call.out, call.lookup, call.describe))


def squeeze_like(call: Call) -> Info | list[Info]:
    """squeeze / unsqueeze: a reshape."""
    x, info = call.args[0], call.info(call.args[0])
    return reshape(Call(call.name, (x,), {}, call.out, call.lookup, call.describe))


def expand(call: Call) -> Info | list[Info]:
    """expand / broadcast_to / expand_as: a broadcast of one input."""
    x, info = call.args[0], call.info(call.args[0])
    return merge(call, [x], call.out.shape)


def cat(call: Call) -> Info | list[Info]:
    """cat: along a dim that does not index the image, a merge; else constant tokens before the grid."""
    tensors = list(call.arg(0, "tensors"))
    dim = int(call.arg(1, "dim", 0))
    ref = next(t for t in tensors if call.info(t) is not None)
    dim %= ref.dim()
    traced = [t for t in tensors if call.info(t) is not None]
    if all(call.info(t).dims[dim] is None for t in traced):
        return merge(call, traced, list(call.out.shape))
    # joining tokens along a token dim: tokens without image positions (a class token, constant or computed)
    # in front of one traced grid; what the front tokens saw joins every token's floor (an upper bound)
    last = tensors[-1]
    front = [t for t in tensors[:-1] if call.info(t) is not None]
    if call.info(last) is None or call.info(last).dims[dim] is None or any(call.info(t).dims[dim] is not None
                                                                          for t in front):
        raise UnsupportedOpError(f"'{call.name}' joins tensors along a dim that indexes the image; erf follows "
                                 "only tokens without image positions put in front of the image tokens; "
                                 "pass treat_as for it")
    info = call.info(last)
    if front:
        axes = tuple(ax.union([m, *(f.axes[a].globalised(f.axis_sizes()[a]) for f in map(call.info, front))])
                     for a, m in enumerate(info.axes))
        info = info.with_(axes=axes)
        call.notes.append(f"'{call.name}' at '{call.where}' puts computed tokens in front of the image tokens: "
                          "what they saw is counted for every token (an upper bound)")
    prefix = sum(t.shape[dim] for t in tensors[:-1])
    role = info.dims[dim]
    if len(role) == 1 and isinstance(role[0][0], Tokens):
        tok = Tokens(role[0][0].prefix + prefix, role[0][0].grid)
    else:
        tok = Tokens(prefix, role)
    dims = list(info.dims)
    dims[dim] = ((tok, call.out.shape[dim]),)
    return info.with_(dims=tuple(dims))


def stack(call: Call) -> Info | list[Info]:
    """stack: a merge with a new dim that does not index the image."""
    tensors = list(call.arg(0, "tensors"))
    dim = int(call.arg(1, "dim", 0)) % call.out.dim()
    traced = [t for t in tensors if call.info(t) is not None]
    shape = list(call.out.shape)
    del shape[dim]
    info = merge(call, traced, shape)
    dims = list(info.dims)
    dims.insert(dim, None)
    return info.with_(dims=tuple(dims))


def split(call: Call) -> Info | list[Info]:
    """split / chunk / tensor_split / unbind: each piece shifts the axis by its start."""
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
                res.append(lose_positions(call, info, [dim], "unbinds image positions",
                                          out_dims=info.dims[:dim] + info.dims[dim + 1:]))
                continue
            res.append(info.with_(dims=dims))
            continue
        if role is None:
            res.append(info)
        else:
            a = single_axis(role)
            if a is None:
                res.append(lose_positions(call, info, [dim], "splits flattened image positions"))
                start += o.shape[dim]
                continue
            axes = list(info.axes)
            axes[a] = ax.window(axes[a], 1, 1, 1, -start)
            dims = list(info.dims)
            dims[dim] = ((a, o.shape[dim]),)
            res.append(Info(tuple(axes), tuple(dims), info.crop_note))
        start += o.shape[dim]
    return res


def repeat_interleave(call: Call) -> Info | list[Info]:
    """repeat_interleave along a dim: a broadcast where the dim does not index the image (GCViT's global
    query repeated over the windows of the batch), a nearest upsampling along a plain image axis."""
    x, info = call.args[0], call.info(call.args[0])
    reps, dim = call.arg(1, "repeats"), call.arg(2, "dim")
    if info is None:
        return merge(call, [t for t in (x, reps) if isinstance(t, torch.Tensor)], call.out.shape)
    if dim is None:
        return lose_positions(call, info, [d for d, r in enumerate(info.dims) if r is not None],
                              "repeats a flattened tensor", out_dims=(None,))
    dim = int(dim) % x.dim()
    role = info.dims[dim]
    if role is None:
        return info
    a = single_axis(role)
    if a is None or not isinstance(reps, int):
        return lose_positions(call, info, [dim], "repeats image positions unevenly")
    axes = list(info.axes)
    axes[a] = ax.rational_index(axes[a], 1, reps, lambda o: [o // reps])
    dims = list(info.dims)
    dims[dim] = ((a, call.out.shape[dim]),)
    return Info(tuple(axes), tuple(dims), info.crop_note)
