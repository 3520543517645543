"""Sliding windows: convolutions, pooling (plain, adaptive) and padding."""

from __future__ import annotations

from math import ceil, floor, gcd

import torch

from erf.analytic import axis as ax
from erf.analytic.layout import Info, single_axis
from erf.analytic.rules.core import Call, globalise, lose_positions, pairs, pointwise, spatial_window, with_note
from erf.errors import UnsupportedOpError


def conv(call: Call) -> Info | list[Info]:
    """conv1d/2d/3d: a window on each spatial dim; the channel dim mixes what it indexes."""
    x, info = call.args[0], call.info(call.args[0])
    if info is None:
        return pointwise(call)  # weights traced, input constant: treat like a broadcast
    w = call.arg(1, "weight")
    nd = w.dim() - 2
    k = tuple(w.shape[2:])
    s = pairs(call.arg(3, "stride", 1), nd)
    d = pairs(call.arg(5, "dilation", 1), nd)
    p = call.arg(4, "padding", 0)
    if isinstance(p, str):
        left = [0] * nd if p == "valid" else [dd * (kk - 1) // 2 for dd, kk in zip(d, k)]
    else:
        left = pairs(p, nd)
    res = spatial_window(call, x, info, nd, lambda j, m: ax.window(m, k[j], s[j], d[j], left[j]))
    if info.dims[-nd - 1] is not None:  # channel dim mixes whatever it indexes
        res = globalise(res, [len(res.dims) - nd - 1], f"'{call.name}' mixes a dim that indexes the image",
                        drop=True)
    return res


def pool(call: Call) -> Info | list[Info]:
    """max/avg/lp pooling: a window on each spatial dim."""
    name = call.name.lstrip("_").replace("_with_indices", "")
    nd = int(name[-2])
    x, info = call.args[0], call.info(call.args[0])
    if name.startswith("lp_pool"):
        k = pairs(call.arg(2, "kernel_size"), nd)
        s = pairs(call.arg(3, "stride") or k, nd)
        p, d = (0,) * nd, (1,) * nd
    else:
        k = pairs(call.arg(1, "kernel_size"), nd)
        s = pairs(call.arg(2, "stride") or k, nd)
        p = pairs(call.arg(3, "padding", 0), nd)
        d = pairs(call.arg(4, "dilation", 1), nd) if name.startswith("max") else (1,) * nd
    res = spatial_window(call, x, info, nd, lambda j, m: ax.window(m, k[j], s[j], d[j], p[j]))
    return [res, res] if isinstance(call.out, tuple) else res


def _bins(n_in: int, n_out: int):
    g = gcd(n_in, n_out)
    return n_in // g, n_out // g, lambda o: range(floor(o * n_in / n_out), ceil((o + 1) * n_in / n_out))


def adaptive_pool(call: Call) -> Info | list[Info]:
    """adaptive pooling: input-size-dependent bins, or the whole map for output size 1."""
    name = call.name.lstrip("_").replace("_with_indices", "")
    nd = int(name[-2])
    x, info = call.args[0], call.info(call.args[0])
    out = call.out[0] if isinstance(call.out, tuple) else call.out
    n_in, n_out = x.shape[-nd:], out.shape[-nd:]
    first = x.dim() - nd
    res = info
    for j in range(nd):
        if n_out[j] == 1 and n_in[j] > 1:
            res = globalise(res, [first + j], f"'{call.name}' pools the whole map", gate=False)
            res = res.with_(dims=res.dims[:first + j] + (None,) + res.dims[first + j + 1:])
    def per_axis(j, m):
        if n_out[j] == 1 or n_in[j] == n_out[j]:
            return m
        num, den, taps = _bins(n_in[j], n_out[j])
        return ax.rational_index(m, num, den, taps)
    res = spatial_window(call, x, res, nd, per_axis)
    if any(a != b and b != 1 for a, b in zip(n_in, n_out)):
        res = with_note(res, f"'{call.name}' bins depend on the input size")
    return [res, res] if isinstance(call.out, tuple) else res


def pad(call: Call) -> Info | list[Info]:
    """F.pad: shifts the axes by the left padding (circular padding is noted as not crop-safe)."""
    x, info = call.args[0], call.info(call.args[0])
    amounts = list(call.arg(1, "pad"))
    mode = call.arg(2, "mode", "constant")
    axes, dims = list(info.axes), list(info.dims)
    for j in range(len(amounts) // 2):
        d = x.dim() - 1 - j
        left = int(amounts[2 * j])
        role = dims[d]
        if role is None or (left == 0 and int(amounts[2 * j + 1]) == 0):
            continue
        a = single_axis(role)
        if a is None:
            return lose_positions(call, Info(tuple(axes), tuple(dims), info.crop_note), [d],
                                  "pads flattened image positions")
        axes[a] = ax.window(axes[a], 1, 1, 1, left)
        dims[d] = ((a, call.out.shape[d]),)
    res = Info(tuple(axes), tuple(dims), info.crop_note)
    if mode == "circular":
        res = with_note(res, "circular padding wraps the image around")
    return res


def unfold(call: Call) -> Info | list[Info]:
    """``F.unfold`` (im2col, TNT's pixel embedding): every column holds one sliding window, the columns
    flatten the output grid; ``Tensor.unfold(dim, size, step)`` on an image dim: windows along it."""
    x, info = call.args[0], call.info(call.args[0])
    out = call.out
    if out.dim() == x.dim() + 1:  # Tensor.unfold(dimension, size, step)
        d, size, step = int(call.arg(1, "dimension")) % x.dim(), int(call.arg(2, "size")), int(call.arg(3, "step"))
        role = info.dims[d]
        dims = list(info.dims) + [None]
        if role is None:
            return info.with_(dims=tuple(dims))
        a = single_axis(role)
        if a is None:
            return lose_positions(call, info.with_(dims=tuple(dims)), [d], "unfolds flattened image positions")
        axes = list(info.axes)
        axes[a] = ax.window(axes[a], size, step, 1, 0)
        dims[d] = ((a, out.shape[d]),)
        return Info(tuple(axes), tuple(dims), info.crop_note)
    nd = x.dim() - 2
    k = pairs(call.arg(1, "kernel_size"), nd)
    dil = pairs(call.arg(2, "dilation", 1), nd)
    pad = pairs(call.arg(3, "padding", 0), nd)
    st = pairs(call.arg(4, "stride", 1), nd)
    axes, grid = list(info.axes), []
    for j in range(nd):
        role = info.dims[2 + j]
        a = single_axis(role)
        if role is None:
            continue
        if a is None:
            return lose_positions(call, info, [2 + j], "unfolds flattened image positions",
                                  out_dims=(None,) * out.dim())
        n_out = (x.shape[2 + j] + 2 * pad[j] - dil[j] * (k[j] - 1) - 1) // st[j] + 1
        axes[a] = ax.window(axes[a], k[j], st[j], dil[j], pad[j])
        grid.append((a, n_out))
    dims = (info.dims[0], None, tuple(grid) or None)
    return Info(tuple(axes), dims, info.crop_note)
