"""The classic layer-list form: kernel, stride, padding, dilation per layer."""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil, floor

from erf.analytic import axis as ax
from erf.analytic import invariant
from erf.analytic.axis import AxisMap
from erf.analytic.report import LayerRF
from erf.errors import ErfError


@dataclass(frozen=True)
class Layer:
    """One layer of a chain. Ints apply to every axis; tuples give one value per axis.

    ``padding`` is an int, ``"same"``/``"valid"``, a per-axis tuple, or per-axis
    ``(left, right)`` pairs. ``kind`` is ``"conv"`` (also pooling) or ``"transposed"``.
    """

    kernel: int | tuple
    stride: int | tuple = 1
    padding: int | str | tuple = 0
    dilation: int | tuple = 1
    name: str | None = None
    kind: str = "conv"
    ceil_mode: bool = False
    output_padding: int | tuple = 0

    @staticmethod
    def coerce(spec) -> "Layer":
        """A Layer from a Layer, a dict of its fields, or a tuple ``(k, s, p[, d])``."""
        if isinstance(spec, Layer):
            return spec
        if isinstance(spec, dict):
            try:
                return Layer(**spec)
            except TypeError as exc:
                raise ErfError(f"bad layer {spec!r}: {exc}; fields are kernel, stride, padding, dilation, name, "
                               "kind, ceil_mode, output_padding") from None
        if isinstance(spec, (list, tuple)) and 1 <= len(spec) <= 4:
            return Layer(*spec)
        raise ErfError(f"cannot read layer {spec!r}: give a Layer, a dict, or a tuple (kernel, stride, padding[, "
                       "dilation])")

    def per_axis(self, nd: int):
        def vec(v, what):
            v = tuple(v) if isinstance(v, (list, tuple)) else (v,) * nd
            if len(v) != nd:
                raise ErfError(f"layer {self.name or ''} gives {len(v)} values for {what} but the input has {nd} axes")
            return v
        k, s, d = vec(self.kernel, "kernel"), vec(self.stride, "stride"), vec(self.dilation, "dilation")
        for what, vals in (("kernel", k), ("stride", s), ("dilation", d)):
            if any(not isinstance(v, int) or v < 1 for v in vals):
                raise ErfError(f"layer {self.name or ''}: {what} must be positive integers, got {vals}")
        if self.padding == "valid":
            pads = [(0, 0)] * nd
        elif self.padding == "same":
            pads = [(dd * (kk - 1) // 2, dd * (kk - 1) - dd * (kk - 1) // 2) for kk, dd in zip(k, d)]
        else:
            p = vec(self.padding, "padding")
            pads = [tuple(x) if isinstance(x, (list, tuple)) else (x, x) for x in p]
        return k, s, d, pads, vec(self.output_padding, "output_padding")


def layer_rows(layers, input_size) -> list[LayerRF]:
    """Rows of the RF table for a chain of layers on an input of ``input_size``."""
    nd = len(input_size)
    maps = [AxisMap.identity() for _ in range(nd)]
    sizes = list(input_size)
    rows = [LayerRF("input", "input", tuple(sizes), tuple(maps), tuple(input_size))]
    bound = invariant.input_bound(input_size)
    for idx, spec in enumerate(layers):
        layer = Layer.coerce(spec)
        name = layer.name or f"layer{idx + 1}"
        k, s, d, pads, opad = layer.per_axis(nd)
        before = (tuple(maps), tuple(sizes), bound)
        for a in range(nd):
            span = d[a] * (k[a] - 1) + 1
            if layer.kind == "transposed":
                maps[a] = ax.transposed_window(maps[a], k[a], s[a], d[a], pads[a][0])
                sizes[a] = (sizes[a] - 1) * s[a] - sum(pads[a]) + span + opad[a]
            elif layer.kind == "conv":
                maps[a] = ax.window(maps[a], k[a], s[a], d[a], pads[a][0])
                rnd = ceil if layer.ceil_mode else floor
                sizes[a] = rnd((sizes[a] + sum(pads[a]) - span) / s[a]) + 1
            else:
                raise ErfError(f"layer {name}: kind must be 'conv' or 'transposed', got {layer.kind!r}")
            if sizes[a] < 1:
                raise ErfError(f"the input {'x'.join(map(str, input_size))} is too small: layer {name} would have "
                               f"size {sizes[a]} on axis {a}; use a larger input")
        reads = max(invariant.layer_reads_beyond(layer.kind, k[a], s[a], d[a], pads[a], opad[a]) for a in range(nd))
        bound = invariant.bound_after([before], reads)
        invariant.check_row(name, layer.kind, maps, sizes, bound)
        rows.append(LayerRF(name, layer.kind, tuple(sizes), tuple(maps), tuple(input_size)))
    return rows
