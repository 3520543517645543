"""Feature mixing and attention: linear layers, matmul, (windowed) attention over tokens."""

from __future__ import annotations

import torch

from erf.analytic import axis as ax
from erf.analytic.axis import AxisMap
from erf.analytic.layout import Info, axis_extents, axis_parts, spatial_components
from erf.analytic.rules.core import Call, globalise, lose_positions, pointwise, union_maps, with_note


def linear(call: Call) -> Info | list[Info]:
    """Linear layers: the last dim is mixed; a dim that indexes the image becomes features."""
    x, info = call.args[0], call.info(call.args[0])
    if info is None:
        return pointwise(call)
    res = globalise(info, [x.dim() - 1], "'linear' mixes the features of a dim that indexes the image", drop=True)
    return res


def matmul(call: Call) -> Info | list[Info]:
    """``a @ b``: rows keep a's positions, columns b's; the contracted dim is mixed."""
    a, b = call.args[0], call.args[1]
    out = call.out
    parts = []  # (tensor, info with dims already placed as in the output)
    for t, contracted, replaced in ((a, -1, -1), (b, -2 if b.dim() >= 2 else -1, -2)):
        info = call.info(t)
        if info is None:
            continue
        c = t.dim() + contracted
        kept = {p for d, role in enumerate(info.dims) if d != c for p in axis_parts(role)}
        # a contraction over positions the operand still indexes in another dim (attention weights @ values)
        # is a global statistic added to each kept position; otherwise nothing local is left
        gate = any(p in kept for p in axis_parts(info.dims[c]))
        info = globalise(info, [c], f"'{call.name}' contracts image positions", drop=True, gate=gate, rebase=False)
        dims = list(info.dims)
        if a.dim() >= 2 and b.dim() >= 2:
            dims[replaced] = None  # that slot holds the other operand's positions
        parts.append((t, dims, info))
    placed = []  # per operand: output dim -> its role there
    for t, tdims, _ in parts:
        off = out.dim() - len(tdims)
        placed.append({d + off: role for d, role in enumerate(tdims) if role is not None and 0 <= d + off < out.dim()})
    return combine(call, [(t, i) for t, _, i in parts], placed, out.dim())


def combine(call: Call, parts: list, placed: list[dict], ndim: int) -> Info:
    """The result of a product of operands (``a @ b``, einsum) whose dims are already placed.

    Args:
        call: the op.
        parts: (tensor, info after its contracted dims were mixed) per traced operand.
        placed: per operand, output dim -> the role it brings there.
        ndim: the result's number of dims.

    Returns:
        The result's ``Info``: positions two operands index in dims of their own are paired (attention
        logits: a window map, or a gate); rows and columns on different grids are handled as in ``matmul``.
    """
    dims = [None] * ndim
    for mine in placed:
        for d, role in mine.items():
            dims[d] = role
    n_axes = len(parts[0][1].axes)
    # rows and columns that index one image axis on different grids (LeViT's subsampled queries against
    # full-resolution keys): each entry keeps its row's positions and sees every column through a floor
    coarse, tangled = _grid_mismatch(placed, n_axes) if len(parts) == 2 else (set(), set())
    for d, role in placed[1].items() if coarse else ():
        if d not in placed[0] and any(a in coarse for a, _, _ in axis_parts(role)):
            dims[d] = None
    seen: dict[tuple, int] = {}
    for role in dims:
        for part in axis_parts(role):
            seen[part] = seen.get(part, 0) + 1
    sizes = axis_extents(dims, n_axes)
    axes = []
    for k in range(n_axes):
        if k in tangled:
            # both sides' positions are lost below: each side's real positions, spanned over its own grid
            # (the result's dims pair factors of both grids, whose product is no size of either)
            spans = [i.axes[k].span(call.info(t).axis_sizes()[k]) for t, i in parts]
            spans = [b for b in spans if b is not None]
            axes.append(AxisMap.constant(min(b[0] for b in spans), max(b[1] for b in spans)) if spans
                        else parts[0][1].axes[k])
        elif k in coarse:
            cols = call.info(parts[1][0])
            axes.append(parts[0][1].axes[k].with_floor(parts[1][1].axes[k].span(cols.axis_sizes()[k])))
        else:
            maps = []
            for (t, i), mine in zip(parts, placed):
                m = i.axes[k]
                if m.shift != 0 and not any(a == k for role in mine.values() for a, _, _ in axis_parts(role)):
                    # no dim of this operand indexes the axis in the result (HaloNet's keys of a one-block
                    # grid): it broadcasts, seeing what its own real positions saw
                    m = m.globalised(call.info(t).axis_sizes()[k])
                maps.append((None, m))
            axes.append(union_maps(maps, sizes[k]))
    note = next((i.crop_note for _, i in parts if i.crop_note), None)
    res = Info(tuple(axes), tuple(dims), note)
    twice = {p for p, c in seen.items() if c > 1}
    if twice:  # an outer product of positions (attention logits): each entry sees both places
        mixed = [d for d, role in enumerate(dims) if any(p in twice for p in axis_parts(role))]
        res = globalise(res, mixed, f"'{call.name}' pairs image positions")
    if tangled:  # one side indexes windows, the other another grid (GCViT's global query): follow neither
        lost = [d for d, role in enumerate(res.dims) if any(p[0] in tangled for p in axis_parts(role))]
        res = lose_positions(call, res, lost, "pairs positions of a window with those of another grid")
    return res


def einsum(call: Call) -> Info | list[Info]:
    """torch.einsum: indices missing from the output are contracted (mixed), the others placed by letter."""
    eq = str(call.args[0]).replace(" ", "")
    ops = call.args[1:]
    if len(ops) == 1 and isinstance(ops[0], (list, tuple)):
        ops = tuple(ops[0])
    lhs, arrow, rhs = eq.partition("->")
    subs = lhs.split(",")
    if not arrow:
        rhs = "".join(sorted(c for c in set(lhs) - {","} if lhs.count(c) == 1))
    traced = [(t, sub) for t, sub in zip(ops, subs) if call.info(t) is not None]
    if "." in eq or any(len(sub) != t.dim() for t, sub in traced):
        t, sub = traced[0]
        info = call.info(t)
        return lose_positions(call, info, [d for d, r in enumerate(info.dims) if r is not None],
                              "is an einsum with '...'", out_dims=(None,) * call.out.dim())
    parts, placed = [], []
    for t, sub in traced:
        info = call.info(t)
        contracted = [d for d, ch in enumerate(sub) if ch not in rhs]
        kept = {p for d, r in enumerate(info.dims) if d not in contracted for p in axis_parts(r)}
        gate = any(p in kept for d in contracted for p in axis_parts(info.dims[d]))
        if contracted:
            info = globalise(info, contracted, f"'{call.name}' contracts image positions", drop=True, gate=gate,
                             rebase=False)
        placed.append({rhs.index(ch): info.dims[d] for d, ch in enumerate(sub)
                       if ch in rhs and info.dims[d] is not None})
        parts.append((t, info))
    return combine(call, parts, placed, call.out.dim())


def recurrent(call: Call) -> Info | list[Info]:
    """lstm / gru / rnn over a sequence (Sequencer's rows and columns): every step sees the whole sequence
    (an upper bound for one direction); the final states see all of it."""
    x, info = call.args[0], call.info(call.args[0])
    if info is None:
        return pointwise(call)
    batch_first = bool(call.args[-1]) if isinstance(call.args[-1], bool) else False
    seq = 1 if batch_first and x.dim() == 3 else 0
    out = globalise(info, [seq], f"'{call.name}' runs over image positions")
    state = globalise(info, list(range(x.dim())), f"'{call.name}' runs over image positions", drop=True, gate=False)
    outs = call.out if isinstance(call.out, (tuple, list)) else [call.out]
    res = [out] + [state.with_(dims=(None,) * o.dim()) for o in outs[1:] if isinstance(o, torch.Tensor)]
    return res if isinstance(call.out, (tuple, list)) else res[0]


def _grid_mismatch(placed: list[dict], n_axes: int) -> tuple[set[int], set[int]]:
    """Axes that the two operands index in dims of their own on different grids: (whole axes at two
    resolutions, as LeViT's subsampled queries; axes where a window partition meets another grid)."""
    a, b = placed
    shared = {d for d in a if d in b and a[d] == b[d]}
    whole, tangled = set(), set()
    for k in range(n_axes):
        pa = {p for d, r in a.items() if d not in shared for p in axis_parts(r) if p[0] == k}
        pb = {p for d, r in b.items() if d not in shared for p in axis_parts(r) if p[0] == k}
        if pa and pb and pa != pb:
            plain = all(len(ps) == 1 and next(iter(ps))[1] == 1 for ps in (pa, pb)) and not any(
                p[0] == k for d, r in {**a, **b}.items() if d in shared for p in axis_parts(r))
            (whole if plain else tangled).add(k)
    return whole, tangled


def attention(call: Call) -> Info | list[Info]:
    """scaled_dot_product_attention / multi_head_attention_forward: query keeps its
    positions, every query sees all keys and values."""
    q, k, v = call.args[0], call.arg(1, "key"), call.arg(2, "value")
    parts = []
    qi = call.info(q)
    for t in (k, v):
        i = call.info(t)
        if i is not None:
            # tokens along dim -2 for sdpa ((..., L, E)), dim 0 for the functional MHA ((L, N, E));
            # batch and head dims are not mixed (a window partition keeps its windows apart)
            token_dim = 0 if call.name == "multi_head_attention_forward" else t.dim() - 2
            parts.append(globalise(i, [token_dim], f"'{call.name}' attends over all positions"))
    base = qi if qi is not None else parts[0]
    n_axes = len(base.axes)
    axes = []
    for a in range(n_axes):
        maps = ([qi.axes[a]] if qi is not None else []) + [p.axes[a] for p in parts]
        if qi is not None and any(m.shift and m.jump != qi.axes[a].jump for m in maps[1:]):
            # pooled queries against full-resolution keys (Hiera, SAM2): each query keeps its own positions,
            # what the keys and values saw joins its floor
            m = qi.axes[a]
            for p in parts:
                m = m.with_floor(p.axes[a].span(p.axis_sizes()[a]))
            axes.append(m)
            continue
        axes.append(union_maps([(None, m) for m in maps], base.axis_sizes()[a]))
    note = next((i.crop_note for i in [qi, *parts] if i is not None and i.crop_note), None)
    res = Info(tuple(axes), base.dims if qi is not None else (None,) * q.dim(), note)
    if qi is None or any(p.crop_note for p in parts):
        res = with_note(res, f"'{call.name}' attends over all positions")
    if isinstance(call.out, tuple):
        weights = globalise(res, list(range(len(res.dims))), "attention weights")
        return [res if i == 0 else weights for i, o in enumerate(call.out)]
    return res


def windowed_attention(call: Call, window: tuple[int, ...], shift: tuple[int, ...]) -> Info:
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
    return with_note(Info(tuple(axes), dims, info.crop_note), "windowed attention depends on the grid size")
