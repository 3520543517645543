"""Resampling: transposed convolutions, interpolation (upsampling) and pixel (un)shuffle."""

from __future__ import annotations

from fractions import Fraction
from math import floor

from erf.analytic import axis as ax
from erf.analytic.layout import Info
from erf.analytic.rules.core import Call, lose_positions, pairs, spatial_window, with_note
from erf.analytic.rules.window import adaptive_pool
from erf.errors import UnsupportedOpError


def conv_transpose(call: Call) -> Info | list[Info]:
    """conv_transpose1d/2d/3d: a transposed window on each spatial dim."""
    x, info = call.args[0], call.info(call.args[0])
    w = call.arg(1, "weight")
    nd = w.dim() - 2
    k = tuple(w.shape[2:])
    s = pairs(call.arg(3, "stride", 1), nd)
    p = pairs(call.arg(4, "padding", 0), nd)
    d = pairs(call.arg(7, "dilation", 1), nd)
    return spatial_window(call, x, info, nd, lambda j, m: ax.transposed_window(m, k[j], s[j], d[j], p[j]))


def interpolate(call: Call) -> Info | list[Info]:
    """interpolate / upsample: nearest, linear-family and bicubic sampling, area as adaptive pooling."""
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

    res = spatial_window(call, x, info, nd, per_axis)
    if align or sfs is None:
        res = with_note(res, f"'{call.name}' samples by a ratio of sizes that changes with the input size")
    return res


def _pairs_float(v, n):
    if isinstance(v, (list, tuple)):
        return tuple(float(x) for x in v) if len(v) == n else (float(v[0]),) * n
    return (float(v),) * n


def pixel_shuffle(call: Call) -> Info | list[Info]:
    """pixel_shuffle: each output position reads input position ``o // r`` per axis."""
    x, info = call.args[0], call.info(call.args[0])
    r = int(call.arg(1, "upscale_factor"))
    return spatial_window(call, x, info, 2, lambda j, m: ax.rational_index(m, 1, r, lambda o: [o // r]))


def pixel_unshuffle(call: Call) -> Info | list[Info]:
    """pixel_unshuffle: an ``r`` x ``r`` window with stride ``r``."""
    x, info = call.args[0], call.info(call.args[0])
    r = int(call.arg(1, "downscale_factor"))
    return spatial_window(call, x, info, 2, lambda j, m: ax.window(m, r, r, 1, 0))


def fold(call: Call) -> Info | list[Info]:
    """F.fold (col2im, VOLO's outlook attention): windows summed back onto the grid, a transposed window."""
    x, info = call.args[0], call.info(call.args[0])
    out = call.out
    nd = out.dim() - 2
    k = pairs(call.arg(2, "kernel_size"), nd)
    dil = pairs(call.arg(3, "dilation", 1), nd)
    pad = pairs(call.arg(4, "padding", 0), nd)
    st = pairs(call.arg(5, "stride", 1), nd)
    role = info.dims[-1]
    grid = [a for a, _ in role] if role else []
    if len(grid) != nd or not all(isinstance(a, int) for a in grid) or any(r is not None for r in info.dims[1:-1]):
        return lose_positions(call, info, [d for d, r in enumerate(info.dims) if r is not None],
                              "folds windows erf cannot place", out_dims=(None,) * out.dim())
    axes = list(info.axes)
    for j, a in enumerate(grid):
        axes[a] = ax.transposed_window(axes[a], k[j], st[j], dil[j], pad[j])
    dims = (info.dims[0], None) + tuple(((a, out.shape[2 + j]),) for j, a in enumerate(grid))
    return Info(tuple(axes), dims, info.crop_note)
