"""Sweeps: the points of an experiment (``Point``), the validated experiment (``Config``), dotted keys.

``[sweep.grid]`` maps a dotted key (``model.args.depth``, ``measure.init``...) to a list of
values; ``[[sweep.variants]]`` are named sets of overrides, grouped by their ``axis`` (default
``variant``). The points are the cartesian product of every variant axis and every grid axis
(``expand_points``); under ``--quick`` each point's settings are capped by ``QUICK_CAPS``.
"""

from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from erf.experiment.schema import AXIS_RE, QUICK_CAPS, SWEEPABLE, Fail, check_dotted

# --------------------------------------------------------------------------- the config object


@dataclass
class Point:
    """One point of the sweep: its label, the swept values and the full settings it runs with."""

    index: int
    id: str
    variants: dict[str, str]
    params: dict[str, Any]
    settings: dict[str, dict[str, Any]]

    @property
    def variant(self) -> str:
        """The labels of this point's variants, joined."""
        return ", ".join(self.variants.values())

    @property
    def label(self) -> str:
        """The point's name in figures and tables: its variants, then ``key=value`` of its grid values."""
        parts = [self.variant] if self.variant else []
        parts += [show_value(k, v) for k, v in self.params.items()]
        return ", ".join(parts) or self.settings["model"]["name"]

    def value(self, key: str) -> Any:
        """The value of ``key`` here: 'variant', a variant axis (its label) or a dotted settings key."""
        if key == "variant":
            return self.variant
        if key in self.variants:
            return self.variants[key]
        return get_dotted(self.settings, key)


@dataclass
class Config:
    """A validated experiment: settings with defaults filled in, the sweep points, the figures."""

    path: str
    settings: dict[str, dict[str, Any]]
    grid: dict[str, list]
    variants: dict[str, list[dict[str, Any]]]
    figures: list[dict[str, Any]]
    points: list[Point]
    quick: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The experiment's name (``experiment.name``)."""
        return self.settings["experiment"]["name"]

    @property
    def swept_keys(self) -> list[str]:
        """Every settings key a variant or the grid changes (dotted names)."""
        keys = list(self.grid)
        for group in self.variants.values():
            for v in group:
                keys += [k for k in v if k not in ("label", "axis") and k not in keys]
        return keys

    @property
    def axes(self) -> list[str]:
        """Keys whose values tell points apart: the variant axes, then the grid keys."""
        return list(self.variants) + list(self.grid)

    def to_dict(self) -> dict:
        """The resolved config (JSON-ready) as written to summary.json."""
        return {"path": self.path, "quick": self.quick, "overrides": self.overrides,
                "settings": copy.deepcopy(self.settings), "sweep": {"grid": self.grid, "variants": self.variants},
                "figures": self.figures}


# --------------------------------------------------------------------------- helpers


def short_key(key: str) -> str:
    """``model.args.depth`` -> ``depth``: the name shown in labels and figure axes."""
    return key.rsplit(".", 1)[-1]


def show_value(key: str, value: Any) -> str:
    """How a swept value is named in labels: ``depth=10``; a model name or a variant label alone."""
    if key == "model.name" or "." not in key:
        return format_value(value)
    return f"{short_key(key)}={format_value(value)}"


def format_value(v: Any) -> str:
    """A swept value as text: ``[1,2]``, ``0.5``, ``relu``; None as ""."""
    if v is None:
        return ""
    if isinstance(v, list):
        return "[" + ",".join(format_value(x) for x in v) + "]"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def get_dotted(settings: dict, key: str) -> Any:
    """The value at a dotted key, None where a point does not set it (an argument of another model)."""
    node: Any = settings
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def set_dotted(settings: dict, key: str, value: Any) -> None:
    """Set the value at a dotted key (a deep copy), creating the tables on the way."""
    parts = key.split(".")
    node = settings
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = copy.deepcopy(value)


def flatten(table: dict, prefix: str = "") -> dict[str, Any]:
    """Nested TOML tables -> ``{"a.b.c": value}`` (``model.args = {depth = 5}`` -> ``model.args.depth``)."""
    out: dict[str, Any] = {}
    for k, v in table.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


# --------------------------------------------------------------------------- parsing and expanding


def apply_quick_caps(s: dict) -> None:
    """--quick: lower the settings ``s`` (in place) to the caps of ``QUICK_CAPS``, applied last."""
    for key, cap in QUICK_CAPS.items():
        section, name = key.split(".")
        if s[section][name] > cap:
            s[section][name] = cap


def check_axis(fail: Fail, where: str, key: str, values: Any) -> None:
    """Check one sweep axis: a non-empty list of distinct valid values of ``key``.

    Args:
        fail: the file's ``Fail``.
        where: the key as the error names it.
        key: the dotted settings key the axis sets.
        values: the axis's values.

    Raises:
        ConfigError: not a list, empty, a refused value or a repeated one.
    """
    if not isinstance(values, list) or not values:
        fail(where, f"must be a non-empty list of values for {key}; got {values!r}")
    for v in values:
        check_dotted(fail, where, key, v)
    if len({repr(v) for v in values}) != len(values):
        fail(where, f"repeats a value: {values!r}")


def parse_sweep(fail: Fail, sweep: Any) -> tuple[dict[str, list], dict[str, list[dict]]]:
    """The ``[sweep]`` table as ``(grid, variants)``: grid key -> values, axis -> its variants.

    Args:
        fail: the file's ``Fail``.
        sweep: the ``[sweep]`` table as parsed.

    Returns:
        ``(grid, variants)``; each variant is ``{"axis", "label", dotted key: value...}``.

    Raises:
        ConfigError: an unknown key, a bad axis or label, a key set in two places, a refused value.
    """
    if not isinstance(sweep, dict):
        fail("sweep", "must be a table ([sweep])")
    for key in sweep:
        if key not in ("grid", "variants"):
            fail(f"sweep.{key}", "unknown key; [sweep] has grid (a table) and variants ([[sweep.variants]])")
    grid_raw = sweep.get("grid", {})
    if not isinstance(grid_raw, dict):
        fail("sweep.grid", "must be a table of key = [values]")
    grid = flatten(grid_raw)
    for key, values in grid.items():
        check_axis(fail, f"sweep.grid.{key}", key, values)
    variants_raw = sweep.get("variants", [])
    if not isinstance(variants_raw, list) or not all(isinstance(v, dict) for v in variants_raw):
        fail("sweep.variants", "must be an array of tables ([[sweep.variants]])")
    variants: dict[str, list[dict]] = {}
    owner: dict[str, str] = {}
    for i, v in enumerate(variants_raw):
        where = f"sweep.variants[{i}]"
        label, axis = v.get("label"), v.get("axis", "variant")
        if not isinstance(label, str) or not label.strip():
            fail(f"{where}.label", "every variant needs a non-empty label")
        if not isinstance(axis, str) or not re.fullmatch(AXIS_RE, axis) or axis in ("state",) + SWEEPABLE:
            fail(f"{where}.axis", f"must be a plain name (letters, digits, _), not state or a section; got {axis!r}")
        if any(u["label"] == label for u in variants.get(axis, [])):
            fail(f"{where}.label", f"duplicate label {label!r} on axis {axis!r}")
        flat = flatten({k: x for k, x in v.items() if k not in ("label", "axis")})
        for key, value in flat.items():
            if key in grid:
                fail(f"{where}.{key}", "is also a [sweep.grid] axis; set it in one place")
            if owner.setdefault(key, axis) != axis:
                fail(f"{where}.{key}", f"is also set by variants of axis {owner[key]!r}; set each key on one axis")
            check_dotted(fail, f"{where}.{key}", key, value)
        variants.setdefault(axis, []).append({"axis": axis, "label": label, **flat})
    if len(variants) > 1 and "variant" in variants:
        fail("sweep.variants", "with several variant axes, give every variant an axis name")
    return grid, variants


def expand_points(settings: dict, grid: dict[str, list], variants: dict[str, list[dict]], quick: bool) -> list[Point]:
    """Every point of the sweep: the product of every variant axis, then every grid axis.

    Args:
        settings: the base settings (defaults filled in, [quick] applied).
        grid: grid key -> its values.
        variants: variant axis -> its variants (``label``, ``axis`` and dotted overrides).
        quick: cap each point's settings by ``QUICK_CAPS``.

    Returns:
        The points, with ids ``p000``, ``p001``...
    """
    points = []
    for chosen in itertools.product(*variants.values()):
        for combo in itertools.product(*grid.values()):
            s = copy.deepcopy(settings)
            params: dict[str, Any] = {}
            for variant in chosen:
                for key, value in variant.items():
                    if key not in ("label", "axis"):
                        set_dotted(s, key, value)
            for key, value in zip(grid, combo):
                set_dotted(s, key, value)
                params[key] = value
            if quick:
                apply_quick_caps(s)
            i = len(points)
            points.append(Point(i, f"p{i:03d}", {v["axis"]: v["label"] for v in chosen}, params, s))
    return points
