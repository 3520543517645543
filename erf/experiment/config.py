"""Experiment configs: the TOML schema, validation, quick mode and sweeps.

One TOML file is one experiment (``configs/README.md`` documents every key). ``load_config``
reads and checks a file without touching any model; ``check_models`` then builds every
distinct model on the meta device and traces its target layer, so bad models, arguments and
layers are refused before any measurement. Every problem is one ``ConfigError`` line:
``FILE: KEY: reason``.

Sweeps: ``[sweep.grid]`` maps a dotted key (``model.args.depth``, ``measure.init``...) to a list
of values; ``[[sweep.variants]]`` are named sets of overrides, grouped by their ``axis`` (default
``variant``). The points are the cartesian product of every variant axis and every grid axis.

``--quick``: the config's ``[quick]`` values replace the base values (variants and the grid still
apply on top; ``quick.sweep.grid.KEY`` replaces a grid axis), then ``QUICK_CAPS`` caps the cost.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any, Callable

from erf.errors import ConfigError

# --------------------------------------------------------------------------- value checks


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _int(lo=None, hi=None):
    def check(v):
        if not _is_int(v):
            return "must be an integer"
        if lo is not None and v < lo:
            return f"must be >= {lo}"
        if hi is not None and v > hi:
            return f"must be <= {hi}"
        return None
    return check


def _float(lo=None, hi=None, lo_open=False, hi_open=False):
    def check(v):
        if not _is_num(v):
            return "must be a number"
        if lo is not None and (v < lo or (lo_open and v == lo)):
            return f"must be {'>' if lo_open else '>='} {lo}"
        if hi is not None and (v > hi or (hi_open and v == hi)):
            return f"must be {'<' if hi_open else '<='} {hi}"
        return None
    return check


def _str(pattern: str | None = None, what: str = ""):
    def check(v):
        if not isinstance(v, str):
            return "must be a string"
        if pattern is not None and not re.fullmatch(pattern, v):
            return f"must be {what}"
        return None
    return check


def _bool(v):
    return None if isinstance(v, bool) else "must be true or false"


def _choice(*options):
    def check(v):
        if v not in options or isinstance(v, bool):
            return f"must be one of {', '.join(repr(o) for o in options)}"
        return None
    return check


def _size(v):
    """An int, or a list of 1 to 3 ints (one per spatial axis), all >= 1."""
    vals = v if isinstance(v, list) else [v]
    if not 1 <= len(vals) <= 3 or not all(_is_int(x) and x >= 1 for x in vals):
        return "must be a positive integer or a list of 1 to 3 positive integers, e.g. 64 or [64, 48]"
    return None


def _ints(lo=0):
    def check(v):
        if not isinstance(v, list) or not all(_is_int(x) and x >= lo for x in v):
            return f"must be a list of integers >= {lo}"
        return None
    return check


def _strs(v):
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        return "must be a list of non-empty strings"
    return None


def _table(v):
    return None if isinstance(v, dict) else "must be a table"


def _crop(v):
    return None if v in ("auto", True, False) else "must be 'auto', true or false"


def _channel(v):
    return None if v == "all" or (_is_int(v) and v >= 0) else "must be 'all' or a channel index >= 0"


def _prefix_tokens(v):
    return None if v == "auto" or (_is_int(v) and v >= 0) else "must be 'auto' or a token count >= 0"


@dataclass(frozen=True)
class Key:
    """One config key: its default, its check and its documentation (type shown in the README)."""

    default: Any
    check: Callable[[Any], str | None]
    type: str
    doc: str
    required: bool = False


_INITS = ("model", "uniform", "constant", "kaiming_normal", "xavier_normal")
_SIGNALS = ("abs", "signed", "square", "positive")
_PRESETS = ("", "luo", "replknet", "openerf")

SCHEMA: dict[str, dict[str, Key]] = {
    "experiment": {
        "name": Key(None, _str(r"[A-Za-z0-9][A-Za-z0-9_.-]*", "a folder name (letters, digits, _ . -)"), "str",
                    "results go to results/<name>/", required=True),
        "title": Key("", _str(), "str", "title of the report (default: the name)"),
        "description": Key("", _str(), "str", "what the experiment shows; printed at the top of report.md"),
        "seed": Key(0, _int(0), "int", "seed of the models, inputs, weight draws and training (CLI --seed overrides)"),
        "device": Key("auto", _choice("auto", "cpu", "cuda"), "str",
                      "auto (CUDA when available), cpu or cuda (CLI --device overrides)"),
        "dtype": Key("float32", _choice("float32", "float64"), "str", "precision of the measurement"),
        "deterministic": Key(False, _bool, "bool",
                             "deterministic CUDA kernels, bit-for-bit repeatable GPU runs (CLI --deterministic); "
                             "CPU runs always are"),
        "save_every": Key(60.0, _float(0), "float",
                          "seconds between saves of a running measurement, for erf run --resume (0 = every batch)"),
    },
    "model": {
        "name": Key(None, _str(r"\S+", "a model spec without spaces"), "str",
                    "registry name (erf rf --list), path/to/file.py:factory, timm:NAME or torchvision:NAME",
                    required=True),
        "args": Key({}, _table, "table", "keyword arguments of the model factory, e.g. {depth = 10, width = 32}"),
        "checkpoint": Key("", _str(), "str", "state_dict file to load (\"\" = none); relative to the working directory"),
    },
    "inputs": {
        "kind": Key("gaussian", _choice("gaussian", "uniform", "constant", "images"), "str",
                    "probe inputs: gaussian / uniform noise, constant ones, or images from 'path'"),
        "size": Key(64, _size, "int or list[int]", "input size in pixels, e.g. 64 or [64, 48]"),
        "path": Key("", _str(), "str", "kind = 'images': a folder of images or an .npz file"),
        "count": Key(256, _int(1), "int", "kind = 'images': how many images to load"),
        "sampler": Key("random", _choice("random", "sequential"), "str",
                       "kind = 'images': draw images at random (with replacement, seeded) or in order"),
    },
    "measure": {
        "layer": Key("", _str(), "str", "layer to measure (\"\" = the model output); names as in 'erf rf'"),
        "unit": Key([], _ints(0), "list[int]", "unit of the layer ([] = the centre unit n // 2 per axis)"),
        "channel": Key("all", _channel, "int or \"all\"", "output channel whose gradient is taken, or all (summed)"),
        "prefix_tokens": Key("auto", _prefix_tokens, "int or \"auto\"",
                             "(N, L, C) token layers: non-image tokens before the grid (class, distillation); auto = "
                             "from the traced graph, else the model's num_prefix_tokens / cls_token"),
        "samples": Key(64, _int(1), "int", "input samples per weight draw"),
        "batch_size": Key(32, _int(1), "int", "samples per forward/backward pass"),
        "weight_draws": Key(0, _int(0), "int", "independent re-initialisations with 'init' (0 = the model's weights)"),
        "init": Key("model", _choice(*_INITS), "str",
                    "weights: model (as built or loaded; with weight_draws, rebuilt by its factory with a new seed "
                    "per draw), uniform (random U), constant (1/fan_in, Luo's 'uniform weights'), kaiming_normal, "
                    "xavier_normal"),
        "normalize_draws": Key(False, _bool, "bool",
                               "divide each weight draw's map by its total before averaging, so every network counts "
                               "the same (deep nets' gradient scales differ by orders of magnitude between draws)"),
        "signal": Key("abs", _choice(*_SIGNALS), "str",
                      "what is averaged over samples: abs(grad) (abs), grad (signed), grad^2 (square), max(grad, 0) (positive)"),
        "preset": Key("", _choice(*_PRESETS), "str", "an ERF definition of erf.stats.PRESETS (luo, replknet, openerf; \"\" = none); overrides signal"),
        "crop": Key("auto", _crop, "str or bool", "crop the input to the unit's TRF window: auto (where the analytic TRF says it is exact, checked once "
                     "against a full-size float64 pass), true (without that check), false (never)"),
        "tol": Key(0.0, _float(0), "float", "stop early when the relative SE of sigma falls below this (0 = off)"),
        "max_samples": Key(0, _int(0), "int", "with tol: most samples per draw (0 = samples)"),
        "level": Key(0.95, _float(0, 1, True, True), "float", "confidence level of every interval"),
        "n_boot": Key(200, _int(20), "int", "bootstrap replicates per interval"),
    },
    "train": {
        "enabled": Key(False, _bool, "bool", "train each model before (and while) measuring"),
        "task": Key("context", _str(r"\S+", "a task name or a path"), "str",
                    "a generated task of erf.training.make_task (context, quadrant, segmentation, shift) or a "
                    "folder of images (subfolders = classes) / an .npz with x and y"),
        "task_args": Key({}, _table, "table", "parameters of the task, e.g. {spacing = 8}"),
        "size": Key(0, lambda v: None if v == 0 else _size(v), "int or list[int]",
                    "training image size (0 = inputs.size)"),
        "steps": Key(200, _int(1), "int", "optimisation steps"),
        "batch_size": Key(32, _int(1), "int", "training batch size"),
        "lr": Key(0.001, _float(0, lo_open=True), "float", "learning rate (AdamW)"),
        "checkpoints": Key([], _ints(1), "list[int]",
                           "steps at which the ERF is also measured during training (init and the end always are)"),
        "save_weights": Key(True, _bool, "bool", "save the trained state_dict as weights/<point>.pt in the results"),
    },
    "report": {
        "metrics": Key(["sigma_y", "sigma_x", "erf_size_y", "erf_size_x", "erf_trf_ratio_y", "erf_trf_ratio_x",
                        "mass_radius_0.9"], _strs, "list[str]",
                       "metrics of every point, each with its interval (names of erf.stats.scalar_metrics)"),
        "save_maps": Key(True, _bool, "bool", "write maps.npz (every mean map and its standard-error map)"),
    },
}

# Figures: one [[figures]] table each; ``kind`` picks the keys that apply.
_FIGURE_KINDS = ("grid", "growth", "bars", "profiles", "maps", "training")
FIGURE_KEYS: dict[str, Key] = {
    "kind": Key(None, _choice(*_FIGURE_KINDS), "str",
                "grid (heatmaps, rows x cols), growth (log-log metric vs x with power-law fits), bars (metric "
                "with intervals per category), profiles (centre profiles overlaid), maps (one detailed figure per "
                "point), training (metric vs training step)", required=True),
    "file": Key("", _str(r"[A-Za-z0-9_.-]*", "a file name (letters, digits, _ . -)"), "str",
                "PNG file name (default: <kind>.png, numbered when repeated)"),
    "title": Key("", _str(), "str", "figure title (default: from the experiment)"),
    "rows": Key("variant", _str(), "str",
                "grid: one row per value of this key (\"\" = one row). Keys here and below: 'variant' (all "
                "variant labels), a variant axis, 'state' (training state) or a [sweep.grid] key"),
    "cols": Key("", _str(), "str", "grid: one column per value (\"\" = one per point); profiles: one panel per value"),
    "x": Key("", _str(), "str", "growth: the numeric x key (e.g. model.args.depth); bars: the categories"),
    "series": Key("variant", _str(), "str",
                  "growth/bars: one series per value (\"\" = one series); profiles: names the lines"),
    "metric": Key("erf_size_x", _str(), "str", "growth/bars/training: the plotted metric (one of report.metrics)"),
    "scale": Key("peak", _choice("peak", "row", "shared"), "str",
                 "grid colour scale: peak (each map / its own peak), row (shared per row) or shared (one for all)"),
    "theory": Key(False, _bool, "bool", "growth: draw the exact linear-chain theory (uniform kernels, linear_erf)"),
    "ratio": Key(True, _bool, "bool", "growth: add the ERF/TRF panel with the 1/sqrt(n) line"),
    "log": Key(False, _bool, "bool", "grid/maps: logarithmic colour scale"),
}

SWEEPABLE = ("model", "inputs", "measure", "train")
SPECIAL_KEYS = ("variant", "state")
_AXIS_RE = r"[A-Za-z_][A-Za-z0-9_]*"
_TOP = ("experiment", "model", "inputs", "measure", "train", "report", "sweep", "figures", "quick")

# --quick: these caps first, then the config's [quick] table.
QUICK_CAPS = {"measure.samples": 32, "measure.weight_draws": 4, "measure.n_boot": 100, "measure.max_samples": 64,
              "train.steps": 30}


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
        parts = [self.variant] if self.variant else []
        parts += [show_value(k, v) for k, v in self.params.items()]
        return ", ".join(parts) or self.settings["model"]["name"]

    def value(self, key: str):
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


def show_value(key: str, value) -> str:
    """How a swept value is named in labels: ``depth=10``; a model name or a variant label alone."""
    if key == "model.name" or "." not in key:
        return format_value(value)
    return f"{short_key(key)}={format_value(value)}"


def format_value(v) -> str:
    if v is None:
        return ""
    if isinstance(v, list):
        return "[" + ",".join(format_value(x) for x in v) + "]"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def get_dotted(settings: dict, key: str):
    """The value at a dotted key, None where a point does not set it (an argument of another model)."""
    node: Any = settings
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _set_dotted(settings: dict, key: str, value) -> None:
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


class _Errors:
    """Raise one ConfigError line naming the file and the key."""

    def __init__(self, path: str):
        self.path = path

    def __call__(self, key: str, reason: str):
        shown = key if key else "(top level)"
        raise ConfigError(" ".join(f"{self.path}: {shown}: {reason}".split()))


def _close(name: str, options) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_value(fail: _Errors, key: str, section: str, name: str, value) -> None:
    spec = SCHEMA[section][name]
    reason = spec.check(value)
    if reason:
        fail(key, f"{reason}; got {value!r}")


def _check_dotted(fail: _Errors, shown: str, key: str, value, allow=SWEEPABLE) -> None:
    """Check ``section.name = value`` (or ``model.args.NAME = value``) set by a sweep or [quick].

    ``shown`` is the key as the error names it (e.g. ``sweep.variants[2].measure.init``).
    """
    parts = key.split(".")
    if parts[0] not in allow:
        fail(shown, f"cannot set {parts[0]!r} here; keys start with {', '.join(allow)}")
    section = parts[0]
    if len(parts) == 3 and ".".join(parts[:2]) in _ARG_TABLES:
        if not parts[2].isidentifier():
            fail(shown, "argument names must be Python identifiers")
        return
    if len(parts) != 2 or parts[1] not in SCHEMA[section]:
        fail(shown, f"unknown key{_close(key, _all_dotted(allow))}; see configs/README.md")
    _check_value(fail, shown, section, parts[1], value)


_ARG_TABLES = ("model.args", "train.task_args")


def _all_dotted(sections) -> list[str]:
    return [f"{s}.{k}" for s in sections for k in SCHEMA[s]] + [f"{t}.NAME" for t in _ARG_TABLES]


def _check_section(fail: _Errors, section: str, table) -> dict:
    if not isinstance(table, dict):
        fail(section, "must be a table ([" + section + "])")
    out = {}
    for name, value in table.items():
        if name not in SCHEMA[section]:
            fail(f"{section}.{name}", f"unknown key{_close(name, SCHEMA[section])}; keys of [{section}]: "
                 f"{', '.join(SCHEMA[section])}")
        _check_value(fail, f"{section}.{name}", section, name, value)
        out[name] = value
    for name, spec in SCHEMA[section].items():
        if name not in out:
            if spec.required:
                fail(f"{section}.{name}", "is required")
            out[name] = copy.deepcopy(spec.default)
    return out


def _read_toml(path: str) -> dict:
    fail = _Errors(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a TOML config file") from None
    except tomllib.TOMLDecodeError as exc:
        fail("", f"malformed TOML: {exc}")
    except UnicodeDecodeError as exc:
        fail("", f"not UTF-8 text: {exc}")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return {}  # pragma: no cover - fail raises


# --------------------------------------------------------------------------- loading


def load_config(path: str, *, quick: bool = False, device: str | None = None, seed: int | None = None) -> Config:
    """Read and validate a config file; apply --quick, --device and --seed; expand the sweep.

    Raises ``ConfigError`` (one line: file, key, reason) on a malformed file, an unknown key,
    a wrong type or a bad value. Builds no model (see ``check_models``).
    """
    path = str(path)
    raw = _read_toml(path)
    return parse_config(raw, path, quick=quick, device=device, seed=seed)


def parse_config(raw: dict, path: str = "<config>", *, quick: bool = False, device: str | None = None,
                 seed: int | None = None) -> Config:
    """Validate an already parsed TOML document (see ``load_config``)."""
    fail = _Errors(path)
    for key in raw:
        if key not in _TOP:
            fail(key, f"unknown section{_close(key, _TOP)}; sections: {', '.join(_TOP)}")
    for required in ("experiment", "model"):
        if required not in raw:
            fail(required, f"the [{required}] section is required")
    settings = {s: _check_section(fail, s, raw.get(s, {})) for s in SCHEMA}
    overrides: dict[str, Any] = {}
    if device is not None:
        _check_value(fail, "--device", "experiment", "device", device)
        settings["experiment"]["device"] = overrides["experiment.device"] = device
    if seed is not None:
        _check_value(fail, "--seed", "experiment", "seed", seed)
        settings["experiment"]["seed"] = overrides["experiment.seed"] = seed

    grid, variants = _parse_sweep(fail, raw.get("sweep", {}))
    figures = _parse_figures(fail, raw.get("figures", []))
    quick_table = raw.get("quick", {})
    if not isinstance(quick_table, dict):
        fail("quick", "must be a table ([quick])")
    quick_flat = flatten(quick_table)
    for key, value in quick_flat.items():
        if key.startswith("sweep.grid."):
            axis = key[len("sweep.grid."):]
            if axis not in grid:
                fail(f"quick.{key}", f"{axis!r} is not an axis of [sweep.grid]")
            _check_axis(fail, f"quick.{key}", axis, value)
        else:
            _check_dotted(fail, f"quick.{key}", key, value, allow=SWEEPABLE + ("report",))
            if key in grid:
                fail(f"quick.{key}", f"is swept; shrink the sweep with quick.sweep.grid.{key} instead")
    if quick:
        for key, value in quick_flat.items():
            if key.startswith("sweep.grid."):
                grid[key[len("sweep.grid."):]] = value
            else:
                _set_dotted(settings, key, value)
        _cap(settings)
    _check_report(fail, settings)

    points = []
    for chosen in itertools.product(*variants.values()):
        for combo in itertools.product(*grid.values()):
            s = copy.deepcopy(settings)
            params: dict[str, Any] = {}
            for variant in chosen:
                for key, value in variant.items():
                    if key not in ("label", "axis"):
                        _set_dotted(s, key, value)
            for key, value in zip(grid, combo):
                _set_dotted(s, key, value)
                params[key] = value
            if quick:
                _cap(s)
            i = len(points)
            points.append(Point(i, f"p{i:03d}", {v["axis"]: v["label"] for v in chosen}, params, s))
    cfg = Config(path, settings, grid, variants, figures, points, quick, overrides)
    for p in points:
        _check_point(fail, cfg, p)
    _check_figures(fail, cfg)
    return cfg


def _cap(s: dict) -> None:
    """--quick: the caps of ``QUICK_CAPS``, applied last."""
    for key, cap in QUICK_CAPS.items():
        section, name = key.split(".")
        if s[section][name] > cap:
            s[section][name] = cap


def _check_axis(fail: _Errors, where: str, key: str, values) -> None:
    if not isinstance(values, list) or not values:
        fail(where, f"must be a non-empty list of values for {key}; got {values!r}")
    for v in values:
        _check_dotted(fail, where, key, v)
    if len({repr(v) for v in values}) != len(values):
        fail(where, f"repeats a value: {values!r}")


def _parse_sweep(fail: _Errors, sweep) -> tuple[dict[str, list], dict[str, list[dict]]]:
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
        _check_axis(fail, f"sweep.grid.{key}", key, values)
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
        if not isinstance(axis, str) or not re.fullmatch(_AXIS_RE, axis) or axis in ("state",) + SWEEPABLE:
            fail(f"{where}.axis", f"must be a plain name (letters, digits, _), not state or a section; got {axis!r}")
        if any(u["label"] == label for u in variants.get(axis, [])):
            fail(f"{where}.label", f"duplicate label {label!r} on axis {axis!r}")
        flat = flatten({k: x for k, x in v.items() if k not in ("label", "axis")})
        for key, value in flat.items():
            if key in grid:
                fail(f"{where}.{key}", "is also a [sweep.grid] axis; set it in one place")
            if owner.setdefault(key, axis) != axis:
                fail(f"{where}.{key}", f"is also set by variants of axis {owner[key]!r}; set each key on one axis")
            _check_dotted(fail, f"{where}.{key}", key, value)
        variants.setdefault(axis, []).append({"axis": axis, "label": label, **flat})
    if len(variants) > 1 and "variant" in variants:
        fail("sweep.variants", "with several variant axes, give every variant an axis name")
    return grid, variants


def _parse_figures(fail: _Errors, figures) -> list[dict]:
    if not isinstance(figures, list) or not all(isinstance(f, dict) for f in figures):
        fail("figures", "must be an array of tables ([[figures]])")
    out, files = [], set()
    for i, f in enumerate(figures):
        where = f"figures[{i}]"
        fig = {}
        for key, value in f.items():
            if key not in FIGURE_KEYS:
                fail(f"{where}.{key}", f"unknown key{_close(key, FIGURE_KEYS)}; figure keys: {', '.join(FIGURE_KEYS)}")
            reason = FIGURE_KEYS[key].check(value)
            if reason:
                fail(f"{where}.{key}", f"{reason}; got {value!r}")
            fig[key] = value
        if "kind" not in fig:
            fail(f"{where}.kind", "is required")
        for key, spec in FIGURE_KEYS.items():
            fig.setdefault(key, copy.deepcopy(spec.default))
        if not fig["file"]:
            n = sum(1 for g in out if g["kind"] == fig["kind"])
            fig["file"] = f"{fig['kind']}{'_' + str(n + 1) if n else ''}.png"
        if fig["kind"] == "maps":
            fig["file"] = fig["file"].removesuffix(".png")
        elif not fig["file"].endswith(".png"):
            fig["file"] += ".png"
        if fig["file"] in files:
            fail(f"{where}.file", f"{fig['file']!r} is used by another figure")
        files.add(fig["file"])
        out.append(fig)
    return out


def _check_report(fail: _Errors, settings: dict) -> None:
    from erf.stats import scalar_metrics
    import numpy as np

    probe = np.zeros((9, 9))
    probe[4, 4] = 1.0
    probe[4, 5] = probe[5, 4] = 0.5
    for name in settings["report"]["metrics"]:
        try:
            scalar_metrics(probe, [name], trf=(9, 9))
        except Exception as exc:  # noqa: BLE001 - any refusal of the name
            fail("report.metrics", " ".join(str(exc).split()))
    if len(set(settings["report"]["metrics"])) != len(settings["report"]["metrics"]):
        fail("report.metrics", "repeats a metric")


def _check_point(fail: _Errors, cfg: Config, p: Point) -> None:
    s = p.settings
    where = f"point {p.id} ({p.label})" if len(cfg.points) > 1 else ""
    pre = f"{where}: " if where else ""
    inp, mea, tr = s["inputs"], s["measure"], s["train"]
    if inp["kind"] == "images" and not inp["path"]:
        fail("inputs.path", f"{pre}inputs.kind = 'images' needs a path (a folder or an .npz file)")
    if inp["path"] and not os.path.exists(inp["path"]):
        fail("inputs.path", f"{pre}not found: {inp['path']}")
    if tr["enabled"]:
        _check_task(fail, tr["task"], pre)
    if s["model"]["checkpoint"] and not os.path.isfile(s["model"]["checkpoint"]):
        fail("model.checkpoint", f"{pre}file not found: {s['model']['checkpoint']}")
    if mea["max_samples"] and mea["max_samples"] < mea["samples"]:
        fail("measure.max_samples", f"{pre}must be 0 or >= measure.samples ({mea['samples']})")
    if mea["init"] == "model" and mea["weight_draws"] > 0 and s["model"]["checkpoint"]:
        fail("measure.weight_draws", f"{pre}weight draws with init = 'model' rebuild the model per draw, which "
             "drops model.checkpoint: use weight_draws = 0 to measure the checkpoint")
    if mea["normalize_draws"] and not 2 <= mea["weight_draws"] <= 64:
        fail("measure.normalize_draws", f"{pre}needs 2 to 64 weight draws; got weight_draws = {mea['weight_draws']}")
    if mea["normalize_draws"] and mea["tol"]:
        fail("measure.normalize_draws", f"{pre}needs a fixed sample count per draw: set measure.tol = 0")
    if tr["enabled"]:
        if mea["init"] != "model" or mea["weight_draws"]:
            fail("measure.init", f"{pre}with training on, the trained weights are measured: "
                 "use measure.init = 'model' and weight_draws = 0")
        bad = [c for c in tr["checkpoints"] if c >= tr["steps"]]
        if bad:
            fail("train.checkpoints", f"{pre}steps must be below train.steps ({tr['steps']}); got {bad}")
    _check_model_spec(fail, s["model"], pre)


def _check_task(fail: _Errors, task: str, pre: str) -> None:
    from erf.training.tasks import list_tasks

    if task not in list_tasks() and not (os.path.isdir(task) or (task.endswith(".npz") and os.path.isfile(task))):
        fail("train.task", f"{pre}unknown task {task!r}: choose one of {', '.join(list_tasks())}, or give an "
             "existing image folder or .npz file")


def _check_model_spec(fail: _Errors, model: dict, pre: str) -> None:
    """Static checks of a model spec: registry name, factory file, package, argument names."""
    import importlib.util
    import inspect

    from erf.models.registry import get_model_factory, is_model

    spec, args = model["name"], model["args"]
    factory = None
    if spec.startswith(("timm:", "torchvision:")):
        package, _, name = spec.partition(":")
        if not name:
            fail("model.name", f"{pre}name the model after '{package}:'")
        if importlib.util.find_spec(package) is None:
            fail("model.name", f"{pre}{spec!r} needs the {package} package, which is not installed")
    elif ":" in spec and spec.rpartition(":")[0].endswith(".py"):
        file = spec.rpartition(":")[0]
        if not os.path.isfile(file):
            fail("model.name", f"{pre}model file not found: {file}")
    elif not is_model(spec):
        try:
            get_model_factory(spec)
        except Exception as exc:  # noqa: BLE001 - ModelError with suggestions
            fail("model.name", f"{pre}{' '.join(str(exc).split())}")
    else:
        factory = get_model_factory(spec)
    if factory is not None:
        params = inspect.signature(factory).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            for name in args:
                if name not in params:
                    fail(f"model.args.{name}", f"{pre}model {spec!r} takes no argument {name!r}; it takes "
                         f"{', '.join(params)}")


def _check_figures(fail: _Errors, cfg: Config) -> None:
    keys = set(cfg.axes) | set(SPECIAL_KEYS)
    metrics = cfg.settings["report"]["metrics"]
    training = any(p.settings["train"]["enabled"] for p in cfg.points)
    for i, f in enumerate(cfg.figures):
        where = f"figures[{i}]"
        for k in ("rows", "cols", "x", "series"):
            v = f[k]
            if v and v not in keys:
                fail(f"{where}.{k}", f"{v!r} is not swept; use 'variant', 'state' or one of: "
                     f"{', '.join(cfg.axes) or '(no sweep axes)'}")
            if v == "state" and not training:
                fail(f"{where}.{k}", "'state' needs training (train.enabled = true)")
        if f["kind"] in ("growth", "bars", "training") and f["metric"] not in metrics:
            fail(f"{where}.metric", f"{f['metric']!r} is not in report.metrics ({', '.join(metrics)})")
        if f["kind"] == "growth":
            if not f["x"]:
                fail(f"{where}.x", "a growth figure needs a numeric sweep key as x, e.g. 'model.args.depth'")
            vals = [p.value(f["x"]) for p in cfg.points]
            if not all(_is_num(v) and v > 0 for v in vals):
                fail(f"{where}.x", f"{f['x']!r} must take positive numbers for a log-log plot")
        if f["kind"] == "bars" and not f["x"]:
            fail(f"{where}.x", "a bars figure needs x (the categories), e.g. 'variant'")
        if f["kind"] == "training" and not training:
            fail(f"{where}.kind", "a training figure needs train.enabled = true")


# --------------------------------------------------------------------------- model checks


def check_models(cfg: Config) -> None:
    """Build every distinct model of the sweep on the meta device and trace its target layer.

    Catches bad model arguments (a wrong activation, an odd residual depth), unknown layers,
    units outside the layer's map and inputs too small for the network, all before any
    measurement. Raises ``ConfigError`` naming the file and key.
    """
    import torch

    from erf.analytic import receptive_field
    from erf.errors import ErfError, UnsupportedOpError
    from erf.engine.tokens import PrefixTokensError, check_traced
    from erf.models import load_model

    fail = _Errors(cfg.path)
    seen: dict[str, str] = {}
    for p in cfg.points:
        s = p.settings
        size = s["inputs"]["size"]
        key = repr((s["model"]["name"], s["model"]["args"], s["measure"]["layer"], s["measure"]["unit"], size,
                    s["measure"]["prefix_tokens"]))
        if key in seen:
            continue
        seen[key] = p.id
        pre = f"point {p.id} ({p.label}): " if len(cfg.points) > 1 else ""
        try:
            with torch.device("meta"):
                model = load_model(s["model"]["name"], s["model"]["args"])
        except ErfError as exc:
            fail("model", f"{pre}{' '.join(str(exc).split())}")
        model.eval()
        try:
            rep = receptive_field(model, tuple(size) if isinstance(size, list) else size,
                                  layer=s["measure"]["layer"] or None)
            if s["measure"]["unit"]:
                rep.box(tuple(s["measure"]["unit"]))
            if s["measure"]["prefix_tokens"] != "auto":
                check_traced(rep.target, s["measure"]["prefix_tokens"], rep.target.name)
        except PrefixTokensError as exc:
            fail("measure.prefix_tokens", f"{pre}{' '.join(str(exc).split())}")
        except UnsupportedOpError:
            continue  # the engine measures it without a TRF (and says so), as erf measure does
        except ErfError as exc:
            k = "measure.unit" if "unit" in str(exc) else ("measure.layer" if "layer" in str(exc) else "inputs.size")
            fail(k, f"{pre}{' '.join(str(exc).split())}")
        _check_target(fail, pre, rep, s["measure"])
    _check_checkpoints(fail, cfg)


def _check_target(fail: _Errors, pre: str, rep, measure: dict) -> None:
    """The measured layer has a spatial map, and ``measure.channel`` is one of its channels."""
    from erf import stats
    from erf.errors import ErfError
    from erf.engine.target import require_spatial

    try:
        require_spatial(rep)
    except ErfError as exc:
        fail("measure.layer", f"{pre}{' '.join(str(exc).split())}")
    t, channel = rep.target, measure["channel"]
    if channel == "all":
        return
    position = t.index_of(tuple(measure["unit"]) or tuple(stats.center_unit(t.output)))
    n = math.prod(size for d, size in enumerate(t.shape) if d and d not in position)
    if channel >= n:
        fail("measure.channel", f"{pre}channel {channel} does not exist: layer {t.name!r} has {n} channels "
             f"(use 0..{n - 1}, or 'all')")


def _check_checkpoints(fail: _Errors, cfg: Config) -> None:
    """Every ``model.checkpoint`` is a safe weights file that fits its model (checked on the meta device)."""
    import warnings

    import torch

    from erf.errors import ErfError
    from erf.models import load_checkpoint, load_model

    seen = set()
    for p in cfg.points:
        m = p.settings["model"]
        key = repr((m["name"], m["args"], m["checkpoint"]))
        if not m["checkpoint"] or key in seen:
            continue
        seen.add(key)
        pre = f"point {p.id} ({p.label}): " if len(cfg.points) > 1 else ""
        with torch.device("meta"):
            model = load_model(m["name"], m["args"])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # copying into meta tensors is a no-op, and says so
                load_checkpoint(model, m["checkpoint"])
        except ErfError as exc:
            fail("model.checkpoint", f"{pre}{' '.join(str(exc).split())}")


# --------------------------------------------------------------------------- documentation


def _show_default(key: Key) -> str:
    if key.required:
        return "required"
    v = key.default
    if isinstance(v, bool):
        return "`true`" if v else "`false`"
    if isinstance(v, str):
        return f'`"{v}"`'
    if isinstance(v, dict):
        return "`{}`"
    if isinstance(v, list):
        return "`[" + ", ".join(f'"{x}"' if isinstance(x, str) else str(x) for x in v) + "]`"
    return f"`{v}`"


def schema_markdown() -> str:
    """The key tables of configs/README.md (one row per key: key, type, default, meaning)."""
    out = []
    for section, keys in list(SCHEMA.items()) + [("figures", FIGURE_KEYS)]:
        head = f"### `[[{section}]]`" if section == "figures" else f"### `[{section}]`"
        out += [head, "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for name, key in keys.items():
            out.append(f"| `{name}` | {key.type} | {_show_default(key)} | {key.doc} |")
        out.append("")
    return "\n".join(out)
