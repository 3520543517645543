"""Per-layer receptive-field rows and the report object returned to users."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from fractions import Fraction

from erf.analytic.axis import AxisMap
from erf.analytic.layout import Tokens
from erf.errors import ModelError
from erf.stats import center_unit


def _num(x: Fraction | int | None):
    """A Fraction as an int where whole, else a float (JSON-friendly)."""
    if x is None:
        return None
    x = Fraction(x)
    return int(x) if x.denominator == 1 else float(x)


@dataclass
class LayerRF:
    """The receptive field of every unit of one traced tensor (one row of the table)."""

    name: str
    op: str
    output: tuple[int, ...]
    axes: tuple[AxisMap, ...]
    input_size: tuple[int, ...]
    aliases: list[str] = field(default_factory=list)
    module: str | None = None
    call_index: int = 0
    spatial_dims: tuple[int | None, ...] = ()
    shape: tuple[int, ...] = ()
    dims: tuple = ()  # per tensor dim: None or components (see erf.analytic.layout)
    crop_note: str | None = None
    offset: tuple | None = None  # per axis: centre offset (px) between paths that meet here (None: aligned)
    reach: tuple | None = None  # per axis: the input pixels real positions can depend on (clipped boxes stop there)

    def _sizes(self, a: int) -> list[int]:
        return self.axes[a].sizes(self.output[a])

    @property
    def rf_local(self) -> tuple[int, ...]:
        """Largest RF size of the spatial path without gates and attention (equals ``rf`` without them)."""
        return tuple(max(m.local.sizes(n)) for m, n in zip(self.axes, self.output))

    @property
    def is_global_local(self) -> bool:
        """True when even the spatial path without gates sees the whole input."""
        return _covers(tuple(m.local for m in self.axes), self.output, self.input_size)

    def local_box(self, unit=None, clip: bool = False) -> tuple:
        """Like ``box`` but for the spatial path without gates and attention (see ``rf_local``)."""
        return LayerRF(self.name, self.op, self.output, tuple(m.local for m in self.axes),
                       self.input_size, reach=self.reach).box(unit, clip)

    @property
    def rf(self) -> tuple[int, ...]:
        """Largest RF size over the positions of this layer, per axis."""
        return tuple(max(self._sizes(a)) for a in range(len(self.axes)))

    @property
    def rf_min(self) -> tuple[int, ...]:
        """Smallest RF size over positions (equals ``rf`` when shift-invariant)."""
        return tuple(min(self._sizes(a)) for a in range(len(self.axes)))

    @property
    def jump(self) -> tuple:
        """Effective stride in input pixels per output index (a Fraction after upsampling)."""
        return tuple(_num(m.jump) for m in self.axes)

    @property
    def padding(self) -> tuple:
        """Effective padding P: unit 0 starts at input pixel ``-P`` (its spatial path's box, gates aside)."""
        return tuple(None if m.local.box(0) is None else -m.local.box(0)[0] for m in self.axes)

    @property
    def center(self) -> tuple:
        """Centre of unit 0 (all axes) in input pixels, 0-based (the blogs' 'start' is this + 0.5); of its
        spatial path's box where gates or attention widen the strict one."""
        return tuple(None if m.local.box(0) is None else _num(Fraction(sum(m.local.box(0)), 2)) for m in self.axes)

    @property
    def shift_invariant(self) -> bool:
        """True when every unit's RF is the same box moved by the jump."""
        return all(m.period == 1 or n <= 1 for m, n in zip(self.axes, self.output))

    @property
    def is_global(self) -> bool:
        """True when every unit sees the whole input (after global pooling, attention...)."""
        return _covers(self.axes, self.output, self.input_size)

    def box(self, unit=None, clip: bool = False) -> tuple:
        """Inclusive input box ``((top, bottom), (left, right))`` of one unit.

        ``unit`` defaults to the centre unit; ``clip`` limits it to the image and to the
        pixels the layer's real positions reach (an unpadded strided conv that drops the
        last pixels of a map cuts every later box there). A unit that sees no pixel (holes
        of a transposed conv) gives None on that axis.
        """
        unit = center_unit(self.output) if unit is None else tuple(unit)
        if len(unit) != len(self.axes):
            raise ModelError(f"unit {list(unit)} has {len(unit)} indices but layer '{self.name}' has "
                             f"{len(self.axes)} spatial axes")
        for i, n in zip(unit, self.output):
            if not 0 <= i < n:
                raise ModelError(f"unit {list(unit)} is outside the {'x'.join(map(str, self.output))} map of "
                                 f"layer '{self.name}'; use indices from 0 to size-1")
        out = []
        reach = self.reach or (None,) * len(self.axes)
        for m, i, size, r in zip(self.axes, unit, self.input_size, reach):
            b = m.box(i)
            if b is not None and clip:
                lo, hi = (0, size - 1) if r is None else (max(r[0], 0), min(r[1], size - 1))
                b = (max(b[0], lo), min(b[1], hi))
                b = b if b[0] <= b[1] else None
            out.append(b)
        return tuple(out)

    def index_of(self, unit=None) -> dict[int, int]:
        """Tensor dim -> index that holds ``unit`` (default: the centre unit).

        Handles conv maps ``(N, C, H, W)``, channels-last ``(N, H, W, C)`` and token
        tensors ``(N, L, C)`` with prefix tokens (class token) before the grid.
        """
        unit = center_unit(self.output) if unit is None else tuple(unit)
        self.box(unit)  # validates the unit
        out = {}
        for d, role in enumerate(self.dims):
            if role is None:
                continue
            index = 0
            for key, size in role:
                if isinstance(key, Tokens):
                    index = index * size + key.prefix + _flat(key.grid, unit)
                elif key is None:
                    if size != 1:
                        raise ModelError(f"layer '{self.name}' mixes channels and positions in one dim; "
                                         "pick a layer whose output keeps a grid")
                    index *= size
                else:
                    index = index * size + unit[key]
            out[d] = index
        return out

    @property
    def prefix_tokens(self) -> int:
        """Number of non-image tokens in front of the grid (0 for conv maps)."""
        return next((key.prefix for role in self.dims for key, _ in (role or ()) if isinstance(key, Tokens)), 0)

    def to_dict(self) -> dict:
        return {
            "name": self.name, "op": self.op, "aliases": list(self.aliases), "output": list(self.output),
            "rf": list(self.rf), "rf_min": list(self.rf_min), "jump": list(self.jump),
            "padding": list(self.padding), "center": list(self.center),
            "shift_invariant": self.shift_invariant, "global": self.is_global,
            "rf_local": list(self.rf_local),
            "offset": None if self.offset is None else [None if o is None else _num(o) for o in self.offset],
        }


@dataclass
class RFReport:
    """Theoretical receptive fields of a network, per layer and for one target layer."""

    input_size: tuple[int, ...]
    layers: list[LayerRF]
    target: LayerRF
    notes: list[str] = field(default_factory=list)

    def layer(self, name: str) -> LayerRF:
        """Look a layer up by its name or any alias (module name, ``layer1``...)."""
        for row in self.layers:
            if row.name == name or name in row.aliases:
                return row
        names = [n for row in self.layers for n in (row.name, *row.aliases)]
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "; list them with 'erf rf MODEL'"
        raise ModelError(f"no layer named {name!r}{hint}")

    # the target's values, as the JSON names them
    rf = property(lambda self: self.target.rf)
    rf_min = property(lambda self: self.target.rf_min)
    rf_local = property(lambda self: self.target.rf_local)
    jump = property(lambda self: self.target.jump)
    padding = property(lambda self: self.target.padding)
    center = property(lambda self: self.target.center)
    output = property(lambda self: self.target.output)
    shift_invariant = property(lambda self: self.target.shift_invariant)

    @property
    def crop_safe(self) -> bool:
        """True when a unit of the target depends on its TRF alone, computed the same on any crop."""
        return self.target.crop_note is None and self.target.shift_invariant

    @property
    def crop_note(self) -> str:
        if self.target.crop_note:
            return self.target.crop_note
        if not self.target.shift_invariant:
            return "the target's RF depends on the position (transposed conv or upsampling)"
        return ""

    def box(self, unit=None, clip: bool = False):
        """Input box of a unit of the target layer (see ``LayerRF.box``)."""
        return self.target.box(unit, clip)

    def to_dict(self, unit=None) -> dict:
        t = self.target
        d = {
            "input": list(self.input_size), "layer": t.name,
            "rf": list(t.rf), "rf_min": list(t.rf_min), "jump": list(t.jump), "padding": list(t.padding),
            "center": list(t.center), "shift_invariant": t.shift_invariant, "global": t.is_global,
            "rf_local": list(t.rf_local), "global_local": t.is_global_local,
            "offset": t.to_dict()["offset"],
            "output": list(t.output), "layers": [row.to_dict() for row in self.layers],
        }
        if unit is not None:
            d["unit"] = list(unit)
            d["box"] = [list(b) if b else None for b in t.box(unit)]
            d["box_clipped"] = [list(b) if b else None for b in t.box(unit, clip=True)]
        if self.notes:
            d["notes"] = list(self.notes)
        return d

    def table(self) -> str:
        """A readable per-layer table."""
        cols = ["layer", "op", "output", "rf", "jump", "padding", "center"]
        rows = []
        varies = any(not r.shift_invariant for r in self.layers)
        if varies:
            cols.insert(4, "rf_min")
        if any(r.rf_local != r.rf for r in self.layers):
            cols.insert(4, "rf_local")
        if any(r.offset for r in self.layers):
            cols.append("offset")
        for r in self.layers:
            name = r.name + (f" (= {', '.join(r.aliases)})" if r.aliases else "")
            vals = {"layer": name, "op": r.op, "output": _pair(r.output), "rf": _pair(r.rf),
                    "rf_min": _pair(r.rf_min), "jump": _pair(r.jump), "padding": _pair(r.padding),
                    "center": _pair(r.center), "rf_local": _pair(r.rf_local),
                    "offset": "" if not r.offset else _pair(tuple(0 if o is None else _num(o) for o in r.offset))}
            if r.is_global:
                vals["rf"] += " (global)"
            rows.append([vals[c] for c in cols])
        widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in rows]
        t = self.target
        alias = f" (= {', '.join(t.aliases)})" if t.aliases else ""
        summary = (f"target {t.name}{alias}: rf {_pair(t.rf)}, jump {_pair(t.jump)}, padding {_pair(t.padding)}, "
                   f"center {_pair(t.center)}, output {_pair(t.output)}")
        if t.rf_local != t.rf:
            summary += f", rf_local {_pair(t.rf_local)}"
        if t.is_global:
            summary += " (global: every unit sees the whole input)"
        elif not t.shift_invariant:
            summary += f", rf_min {_pair(t.rf_min)} (not shift-invariant: the RF depends on the position)"
        lines += ["", summary, *self.notes]
        return "\n".join(lines)


def _covers(axes, output, input_size) -> bool:
    for m, n, size in zip(axes, output, input_size):
        b = m.span(n if m.shift else min(n, m.period))
        if b is None or b[0] > 0 or b[1] < size - 1:
            return False
        for i in range(n if m.shift else min(n, m.period)):
            b = m.box(i)
            if b is None or b[0] > 0 or b[1] < size - 1:
                return False
    return True


def _flat(grid, unit) -> int:
    index = 0
    for axis, size in grid:
        index = index * size + (unit[axis] if axis is not None else 0)
    return index


def _pair(v) -> str:
    return "x".join("-" if x is None else (f"{x:g}" if isinstance(x, float) else str(x)) for x in v)
