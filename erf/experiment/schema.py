"""The TOML schema of an experiment config: sections, keys, types, defaults, checks and help.

``SCHEMA`` maps each section to its keys (``Key``: default, check, type, doc); ``FIGURE_KEYS``
are the keys of one ``[[figures]]`` table. ``schema_markdown`` renders both as the key tables
of configs/README.md. The vocabularies (inits, signals, presets) come from their single tables
in ``erf.models`` and ``erf.stats``. ``Fail`` raises the one-line ``ConfigError`` every check
uses: ``FILE: KEY: reason``.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Callable

from erf import limits
from erf.errors import ConfigError
from erf.models import INITS
from erf.stats import PRESETS, SIGNALS

# --------------------------------------------------------------------------- value checks


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """A finite int or float (not a bool)."""
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
        if not is_number(v):
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
    if any(x >= 2**31 for x in vals):
        return "must be below 2**31 pixels per axis"
    return None


def _ints(lo=0):
    def check(v):
        if not isinstance(v, list) or not all(_is_int(x) and x >= lo for x in v):
            return f"must be a list of integers >= {lo}"
        return None
    return check


def _floats(v):
    if not isinstance(v, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        return "must be a list of numbers"
    return None


def _strs(v):
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        return "must be a list of non-empty strings"
    return None


def _table(v):
    return None if isinstance(v, dict) else "must be a table"


def _crop(v):
    return None if isinstance(v, bool) or v == "auto" else "must be 'auto', true or false"  # 1 is no boolean


def _channel(v):
    return None if v == "all" or (_is_int(v) and v >= 0) else "must be 'all' or a channel index >= 0"


def _prefix_tokens(v):
    return None if v == "auto" or (_is_int(v) and v >= 0) else "must be 'auto' or a token count >= 0"


def _units(v):
    """A list of units, each a list of integers >= 0 ([] = that layer's centre unit)."""
    if not isinstance(v, list) or not all(isinstance(u, list) and all(_is_int(x) and x >= 0 for x in u) for u in v):
        return "must be a list of units, one per layer, each a list of integers >= 0 ([] = the centre), e.g. [[], [4, 4]]"
    return None



@dataclass(frozen=True)
class Key:
    """One config key: its default, its check and its documentation (type shown in the README)."""

    default: Any
    check: Callable[[Any], str | None]
    type: str
    doc: str
    required: bool = False




SCHEMA: dict[str, dict[str, Key]] = {
    "experiment": {
        "name": Key(None, _str(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,%d}" % (limits.MAX_NAME - 1),
                                f"a folder name (letters, digits, _ . -; at most {limits.MAX_NAME} characters)"), "str",
                    "results go to results/<name>/ (--quick: results/<name>-quick/)", required=True),
        "title": Key("", _str(), "str", "title of the report (default: the name); {model.args.width}-style "
                     "placeholders are filled from the settings actually run"),
        "description": Key("", _str(), "str", "what the experiment shows; printed at the top of report.md"),
        "quick_note": Key("", _str(), "str", "what --quick changes beyond sizes and samples (e.g. random weights, "
                          "generated images): the first line of a --quick report says it"),
        "seed": Key(0, _int(0, limits.SEED_LIMIT - 1), "int", "seed of the models, inputs, weight draws and training (CLI --seed overrides)"),
        "device": Key("auto", _choice("auto", "cpu", "cuda"), "str",
                      "auto (CUDA when available), cpu or cuda (CLI --device overrides)"),
        "dtype": Key("float32", _choice("float32", "float64"), "str", "precision of the measurement"),
        "deterministic": Key(False, _bool, "bool",
                             "deterministic CUDA kernels, bit-for-bit repeatable GPU runs (CLI --deterministic); "
                             "CPU runs always are"),
        "common_seeds": Key(False, _bool, "bool",
                            "network k of every sweep point gets the same seed (paired arms); default: independent "
                            "seeds per point"),
        "save_every": Key(60.0, _float(0), "float",
                          "seconds between saves of a running measurement, for erf run --resume (0 = every batch)"),
    },
    "model": {
        "name": Key(None, _str(r"\S+", "a model spec without spaces"), "str",
                    "registry name (erf rf --list), path/to/file.py:factory, timm:NAME or torchvision:NAME",
                    required=True),
        "args": Key({}, _table, "table", "keyword arguments of the model factory, e.g. {depth = 10, width = 32}"),
        "checkpoint": Key("", _str(), "str", "state_dict file to load (\"\" = none); relative to the working directory"),
        "pretrained": Key(False, _bool, "bool", "timm:NAME / torchvision:NAME: load the library's trained weights, "
                          "fetched into its own cache (CLI --pretrained); offline, use checkpoint instead"),
        "networks": Key(1, _int(1, limits.MAX_WEIGHT_DRAWS), "int",
                        "independently seeded networks per sweep point (each built, trained and measured; the "
                        "intervals are a studentized jackknife over networks, and verdicts need several)"),
        "normalize_networks": Key(False, _bool, "bool",
                                  "divide each network's map by its total before averaging over networks"),
    },
    "inputs": {
        "kind": Key("gaussian", _choice("gaussian", "uniform", "constant", "images", "generated"), "str",
                    "probe inputs: gaussian / uniform noise, constant ones, images from 'path', or 'count' images the "
                    "code generates (a temporary ImageFolder; for --quick runs and CI)"),
        "size": Key(64, _size, "int or list[int]", "input size in pixels, e.g. 64 or [64, 48]"),
        "path": Key("", _str(), "str", "kind = 'images': an image folder (class subfolders or flat) or an .npy/.npz "
                    "array (as erf measure --inputs PATH)"),
        "count": Key(256, _int(1, limits.MAX_SAMPLES), "int", "kind = 'generated': how many images; kind = 'images' with sampler = "
                     "'sequential': how many to load"),
        "sampler": Key("random", _choice("random", "sequential"), "str",
                       "kind = 'images': random = measure.samples distinct images drawn with the seed, class-balanced, "
                       "normalised with the model's preprocessing (else measure.mean/std, else ImageNet's); "
                       "sequential = count images loaded, normalised over the set, taken in a cycle"),
    },
    "measure": {
        "layer": Key("", _str(), "str", "layer to measure (\"\" = the model output); names as in 'erf rf'"),
        "unit": Key([], _ints(0), "list[int]", "unit of the layer ([] = the centre unit n // 2 per axis)"),
        "channel": Key("all", _channel, "int or \"all\"", "output channel whose gradient is taken, or all (summed)"),
        "prefix_tokens": Key("auto", _prefix_tokens, "int or \"auto\"",
                             "(N, L, C) token layers: non-image tokens before the grid (class, distillation); auto = "
                             "from the traced graph, else the model's num_prefix_tokens / cls_token"),
        "samples": Key(64, _int(1, limits.MAX_SAMPLES), "int", "input samples per weight draw"),
        "batch_size": Key(32, _int(1, limits.MAX_SAMPLES), "int", "samples per forward/backward pass"),
        "weight_draws": Key(0, _int(0, limits.MAX_WEIGHT_DRAWS), "int", "independent re-initialisations with 'init' (0 = the model's weights)"),
        "init": Key("model", _choice(*INITS), "str",
                    "weights: model (as built or loaded; with weight_draws, rebuilt by its factory with a new seed "
                    "per draw), uniform (random U), constant (1/fan_in, Luo's 'uniform weights'), kaiming_normal, "
                    "xavier_normal"),
        "normalize_draws": Key(False, _bool, "bool",
                               "divide each weight draw's map by its total before averaging, so every network counts "
                               "the same (deep nets' gradient scales differ by orders of magnitude between draws)"),
        "bn": Key("auto", _choice("auto", "calibrate", "as_is"), "str",
                  "BatchNorm running statistics: auto (re-estimated on the probe inputs when every BatchNorm layer "
                  "is fresh, i.e. at init; trained ones kept), calibrate (always re-estimated) or as_is"),
        "normalize_samples": Key(False, _bool, "bool",
                                 "divide each input sample's map by its total before averaging, so a few exploding "
                                 "inputs cannot paint the map (needs a non-negative signal)"),
        "signal": Key("abs", _choice(*SIGNALS), "str",
                      "what is averaged over samples: abs(grad) (abs), grad (signed), grad^2 (square), max(grad, 0) (positive)"),
        "preset": Key("", _choice("", *PRESETS), "str", "an ERF definition of erf.stats.PRESETS (luo, replknet, openerf; \"\" = none); overrides signal"),
        "crop": Key("auto", _crop, "str or bool", "crop the input to the unit's TRF window: auto (where the analytic TRF says it is exact, checked once "
                     "against a full-size pass in the measurement dtype), true (without that check), false (never)"),
        "tol": Key(0.0, _float(0), "float", "stop early when the relative SE of sigma falls below this (0 = off)"),
        "max_samples": Key(0, _int(0, limits.MAX_SAMPLES), "int", "with tol: most samples per draw (0 = samples)"),
        "mean": Key([], _floats, "list[float]", "image inputs: per-channel mean ([] = the model's preprocessing, "
                    "else ImageNet's)"),
        "std": Key([], _floats, "list[float]", "image inputs: per-channel std ([] = the model's preprocessing, "
                   "else ImageNet's)"),
        "level": Key(0.95, _float(0, 1, True, True), "float", "confidence level of every interval"),
        "n_boot": Key(2000, _int(20, limits.MAX_BOOT), "int", "bootstrap replicates per interval"),
    },
    "train": {
        "enabled": Key(False, _bool, "bool", "train each model before (and while) measuring"),
        "task": Key("context", _str(r"\S+", "a task name or a path"), "str",
                    "a generated task of erf.training.make_task (context, quadrant, segmentation, shift) or a "
                    "folder of images (subfolders = classes) / an .npz with x and y"),
        "task_args": Key({}, _table, "table", "parameters of the task, e.g. {spacing = 8}"),
        "size": Key(0, lambda v: None if v == 0 else _size(v), "int or list[int]",
                    "training image size (0 = inputs.size)"),
        "steps": Key(200, _int(1, limits.MAX_SAMPLES), "int", "optimisation steps"),
        "batch_size": Key(32, _int(1, limits.MAX_SAMPLES), "int", "training batch size"),
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
        "changes": Key("", _str(), "str", "what changed from the previous shipped version of the results and why "
                       "(printed in report.md)"),
    },
    "profile": {
        "layers": Key([], _strs, "list[str]",
                      "layers whose ERF is measured at every point and training state, all from shared passes "
                      "(erf.profile; each layer's map equals erf.measure of that layer alone on its samples); "
                      "names as in 'erf rf', in the order the table and figure show them, e.g. shallowest first ([] = no profile). Writes profile.csv, profile.png and "
                      "summary.json's 'profile'"),
        "units": Key([], _units, "list[list[int]]",
                     "one unit per layer, in the order of layers ([] for a layer = its centre unit n // 2; an empty "
                     "list = every layer's centre unit)"),
        "channel": Key("all", _channel, "int or \"all\"",
                       "output channel of every profiled layer whose gradient is taken, or all (summed)"),
        "samples": Key(0, _int(0, limits.MAX_SAMPLES), "int",
                       "input samples per layer and weight draw (0 = measure.samples); one profile costs about one "
                       "measurement of its deepest layer with len(layers) x samples samples"),
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
AXIS_RE = r"[A-Za-z_][A-Za-z0-9_]*"  # a variant axis name
SECTIONS = ("experiment", "model", "inputs", "measure", "train", "report", "profile", "sweep", "figures",
            "quick")

# --quick: these caps first, then the config's [quick] table.
QUICK_CAPS = {"measure.samples": 32, "measure.weight_draws": 4, "measure.n_boot": 200, "measure.max_samples": 64,
              "train.steps": 30, "profile.samples": 32}


# --------------------------------------------------------------------------- errors and key checks


class Fail:
    """Raise one ``ConfigError`` line naming the file and the key: ``fail(key, reason)``."""

    def __init__(self, path: str):
        self.path = path

    def __call__(self, key: str, reason: str):
        """Raise the error.

        Args:
            key: the dotted key the reason is about ("" for the whole file).
            reason: what is wrong, in words.

        Raises:
            ConfigError: always, ``"FILE: KEY: reason"`` on one line.
        """
        shown = key if key else "(top level)"
        raise ConfigError(" ".join(f"{self.path}: {shown}: {reason}".split()))


def close_match(name: str, options: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the option closest to ``name``, or "" when none is close.

    Args:
        name: the unknown name.
        options: the known names (any iterable of strings).

    Returns:
        The suggestion text, with a leading space, or "".
    """
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_value(fail: Fail, key: str, section: str, name: str, value: Any) -> None:
    """Check ``value`` against the schema key ``section.name``.

    Args:
        fail: the file's ``Fail``.
        key: the key as the error names it.
        section: a section of ``SCHEMA``.
        name: a key of that section.
        value: the value to check.

    Raises:
        ConfigError: the value is refused by the key's check.
    """
    spec = SCHEMA[section][name]
    reason = spec.check(value)
    if reason:
        fail(key, f"{reason}; got {value!r}")


ARG_TABLES = ("model.args", "train.task_args")  # free tables: any identifier is a key


def check_dotted(fail: Fail, shown: str, key: str, value: Any, allow: tuple[str, ...] = SWEEPABLE) -> None:
    """Check ``section.name = value`` (or ``model.args.NAME = value``) set by a sweep or [quick].

    Args:
        fail: the file's ``Fail``.
        shown: the key as the error names it (e.g. ``sweep.variants[2].measure.init``).
        key: the dotted settings key.
        value: its value.
        allow: the sections the key may start with.

    Raises:
        ConfigError: a section not allowed here, an unknown key or a refused value.
    """
    parts = key.split(".")
    if parts[0] not in allow:
        fail(shown, f"cannot set {parts[0]!r} here; keys start with {', '.join(allow)}")
    section = parts[0]
    if len(parts) == 3 and ".".join(parts[:2]) in ARG_TABLES:
        if not parts[2].isidentifier():
            fail(shown, "argument names must be Python identifiers")
        return
    if len(parts) != 2 or parts[1] not in SCHEMA[section]:
        fail(shown, f"unknown key{close_match(key, _all_dotted(allow))}; see configs/README.md")
    check_value(fail, shown, section, parts[1], value)


def _all_dotted(sections) -> list[str]:
    return [f"{s}.{k}" for s in sections for k in SCHEMA[s]] + [f"{t}.NAME" for t in ARG_TABLES]


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
    """The key tables of configs/README.md (one row per key: key, type, default, meaning).

    Returns:
        Markdown: one ``### `[section]` `` heading and table per section, then ``[[figures]]``.
    """
    out = []
    for section, keys in list(SCHEMA.items()) + [("figures", FIGURE_KEYS)]:
        head = f"### `[[{section}]]`" if section == "figures" else f"### `[{section}]`"
        out += [head, "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for name, key in keys.items():
            out.append(f"| `{name}` | {key.type} | {_show_default(key)} | {key.doc} |")
        out.append("")
    return "\n".join(out)
