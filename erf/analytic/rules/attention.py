"""Feature mixing and attention: linear layers, matmul, (windowed) attention over tokens."""

from __future__ import annotations

import torch

from erf.analytic import axis as ax
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
    dims = [None] * out.dim()
    placed = []  # per operand: output dim -> its role there
    for t, tdims, _ in parts:
        off = out.dim() - len(tdims)
        mine = {}
        for d, role in enumerate(tdims):
            if role is not None and 0 <= d + off < out.dim():
                dims[d + off] = mine[d + off] = role
        placed.append(mine)
    n_axes = len(parts[0][2].axes)
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
        if k in coarse or k in tangled:
            cols = call.info(parts[1][0])
            axes.append(parts[0][2].axes[k].with_floor(parts[1][2].axes[k].span(cols.axis_sizes()[k])))
        else:
            axes.append(union_maps([(None, i.axes[k]) for _, _, i in parts], sizes[k]))
    note = next((i.crop_note for _, _, i in parts if i.crop_note), None)
    res = Info(tuple(axes), tuple(dims), note)
    twice = {p for p, c in seen.items() if c > 1}
    if twice:  # an outer product of positions (attention logits): each entry sees both places
        mixed = [d for d, role in enumerate(dims) if any(p in twice for p in axis_parts(role))]
        res = globalise(res, mixed, f"'{call.name}' pairs image positions")
    if tangled:  # one side indexes windows, the other another grid (GCViT's global query): follow neither
        lost = [d for d, role in enumerate(res.dims) if any(p[0] in tangled for p in axis_parts(role))]
        res = lose_positions(call, res, lost, "pairs positions of a window with those of another grid")
    return res


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
