"""Experiment configs: read a TOML file, check it against the schema, apply quick mode, expand the sweep.

One TOML file is one experiment (``configs/README.md`` documents every key; the keys are in
``schema``). ``load_config`` reads and checks a file without touching any model;
``checks.check_models`` then builds every distinct model on the meta device and traces its
target layer, so bad models, arguments and layers are refused before any measurement. Every
problem is one ``ConfigError`` line: ``FILE: KEY: reason``.

``--quick``: the config's ``[quick]`` values replace the base values (variants and the grid still
apply on top; ``quick.sweep.grid.KEY`` replaces a grid axis), then ``QUICK_CAPS`` caps the cost.
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import glob
import os
import tomllib
from typing import Any

import numpy as np

from erf import limits
from erf.errors import ConfigError, ErfError
from erf.experiment.schema import (FIGURE_KEYS, SCHEMA, SECTIONS, SPECIAL_KEYS, SWEEPABLE, Fail, check_dotted,
                                   check_value, close_match, is_number)
from erf.experiment.sweeps import (Config, Point, apply_quick_caps, check_axis, expand_points, flatten, parse_sweep,
                                   set_dotted)
from erf.models.registry import get_model_factory, is_model
from erf.stats import scalar_metrics
from erf.training import list_tasks

# --------------------------------------------------------------------------- loading


def load_config(path: str | os.PathLike, *, quick: bool = False, device: str | None = None,
                seed: int | None = None, inputs: str | None = None) -> Config:
    """Read and validate a config file; apply --quick, --device and --seed; expand the sweep.

    Builds no model (see ``check_models``).

    Args:
        path: the TOML file.
        quick: apply the config's ``[quick]`` table and ``QUICK_CAPS``.
        device: ``--device`` (replaces ``experiment.device``), or None.
        seed: ``--seed`` (replaces ``experiment.seed``), or None.
        inputs: ``--inputs PATH``: real images (``inputs.kind = 'images'``, ``inputs.path``) for every
            point, also under ``--quick``; or None.

    Returns:
        The validated ``Config`` with its sweep points.

    Raises:
        ConfigError: one line (file, key, reason) on a missing or malformed file, an unknown key,
            a wrong type or a bad value.
    """
    path = str(path)
    raw = _read_toml(path)
    return parse_config(raw, path, quick=quick, device=device, seed=seed, inputs=inputs)


def parse_config(raw: dict, path: str = "<config>", *, quick: bool = False, device: str | None = None,
                 seed: int | None = None, inputs: str | None = None) -> Config:
    """Validate an already parsed TOML document (see ``load_config``).

    Args:
        raw: the parsed TOML document.
        path: the file name errors show.
        quick: apply ``[quick]`` and ``QUICK_CAPS``.
        device: ``--device``, or None.
        seed: ``--seed``, or None.

    Returns:
        The validated ``Config``.

    Raises:
        ConfigError: the first problem, as one line.
    """
    fail = Fail(path)
    for key in raw:
        if key not in SECTIONS:
            fail(key, f"unknown section{close_match(key, SECTIONS)}; sections: {', '.join(SECTIONS)}")
    for required in ("experiment", "model"):
        if required not in raw:
            fail(required, f"the [{required}] section is required")
    settings = {s: _check_section(fail, s, raw.get(s, {})) for s in SCHEMA}
    overrides: dict[str, Any] = {}
    if device is not None:
        check_value(fail, "--device", "experiment", "device", device)
        settings["experiment"]["device"] = overrides["experiment.device"] = device
    if seed is not None:
        check_value(fail, "--seed", "experiment", "seed", seed)
        settings["experiment"]["seed"] = overrides["experiment.seed"] = seed

    grid, variants = parse_sweep(fail, raw.get("sweep", {}))
    figures = _parse_figures(fail, raw.get("figures", []))
    quick_table = raw.get("quick", {})
    quick_sweep = quick_table.get("sweep") if isinstance(quick_table, dict) else None
    if isinstance(quick_sweep, dict) and "variants" in quick_sweep:  # [[quick.sweep.variants]] replace the variants
        quick_table = {**quick_table, "sweep": {k: v for k, v in quick_sweep.items() if k != "variants"}}
        _, quick_variants = parse_sweep(fail, {"grid": raw.get("sweep", {}).get("grid", {}),
                                               "variants": quick_sweep["variants"]})
        if quick:
            variants = quick_variants
        if not quick_table["sweep"]:
            del quick_table["sweep"]
    _apply_quick(fail, quick_table, settings, grid, quick)
    if inputs is not None:  # --inputs PATH: real images for every point, after [quick] (the user's choice wins)
        settings["inputs"]["kind"] = overrides["inputs.kind"] = "images"
        settings["inputs"]["path"] = overrides["inputs.path"] = inputs
    _check_report(fail, settings)
    _check_profile(fail, settings)
    try:  # counted before the points are made: a grid of 10**8 points is refused at once
        limits.check_grid({**{k: len(v) for k, v in variants.items()}, **{k: len(v) for k, v in grid.items()}}, path)
    except ErfError as exc:
        raise ConfigError(str(exc)) from None

    points = expand_points(settings, grid, variants, quick)
    cfg = Config(path, settings, grid, variants, figures, points, quick, overrides)
    for p in points:
        _check_point(fail, cfg, p)
    _check_figures(fail, cfg)
    return cfg


def _apply_quick(fail: Fail, quick_table, settings: dict, grid: dict[str, list], quick: bool) -> None:
    """Check the ``[quick]`` table; with ``quick``, apply it to ``settings`` and ``grid`` and cap the cost."""
    if not isinstance(quick_table, dict):
        fail("quick", "must be a table ([quick])")
    quick_flat = flatten(quick_table)
    for key, value in quick_flat.items():
        if key.startswith("sweep.grid."):
            axis = key[len("sweep.grid."):]
            if axis not in grid:
                fail(f"quick.{key}", f"{axis!r} is not an axis of [sweep.grid]")
            check_axis(fail, f"quick.{key}", axis, value)
        else:
            check_dotted(fail, f"quick.{key}", key, value, allow=SWEEPABLE + ("report", "profile"))
            if key in grid:
                fail(f"quick.{key}", f"is swept; shrink the sweep with quick.sweep.grid.{key} instead")
    if quick:
        for key, value in quick_flat.items():
            if key.startswith("sweep.grid."):
                grid[key[len("sweep.grid."):]] = value
            else:
                set_dotted(settings, key, value)
        apply_quick_caps(settings)


# --------------------------------------------------------------------------- sections and checks


def _check_section(fail: Fail, section: str, table) -> dict:
    if not isinstance(table, dict):
        fail(section, "must be a table ([" + section + "])")
    out = {}
    for name, value in table.items():
        if name not in SCHEMA[section]:
            fail(f"{section}.{name}", f"unknown key{close_match(name, SCHEMA[section])}; keys of [{section}]: "
                 f"{', '.join(SCHEMA[section])}")
        check_value(fail, f"{section}.{name}", section, name, value)
        out[name] = value
    for name, spec in SCHEMA[section].items():
        if name not in out:
            if spec.required:
                fail(f"{section}.{name}", "is required")
            out[name] = copy.deepcopy(spec.default)
    return out


def _read_toml(path: str) -> dict:
    """The parsed TOML of a regular file of sane size and nesting (``erf.limits``), or one ``ConfigError`` line."""
    fail = Fail(path)
    try:
        data = limits.read_config(path)
        text = data.decode("utf-8")
        text = text[1:] if text.startswith("\ufeff") else text  # a UTF-8 BOM (some editors write one)
        limits.check_toml_depth(text, path)
        return tomllib.loads(text)
    except ErfError as exc:
        raise ConfigError(str(exc)) from None
    except tomllib.TOMLDecodeError as exc:
        fail("", f"malformed TOML: {exc}")
    except UnicodeDecodeError as exc:
        fail("", f"not UTF-8 text: {exc}")
    except RecursionError:  # pragma: no cover - check_toml_depth refuses such nesting first
        fail("", f"TOML nested too deeply (at most {limits.MAX_TOML_DEPTH} levels)")
    return {}  # pragma: no cover - fail raises


def _parse_figures(fail: Fail, figures) -> list[dict]:
    if not isinstance(figures, list) or not all(isinstance(f, dict) for f in figures):
        fail("figures", "must be an array of tables ([[figures]])")
    out, files = [], set()
    for i, f in enumerate(figures):
        where = f"figures[{i}]"
        fig = {}
        for key, value in f.items():
            if key not in FIGURE_KEYS:
                fail(f"{where}.{key}",
                     f"unknown key{close_match(key, FIGURE_KEYS)}; figure keys: {', '.join(FIGURE_KEYS)}")
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


def _check_report(fail: Fail, settings: dict) -> None:
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


def _check_profile(fail: Fail, settings: dict) -> None:
    """The [profile] keys that depend on each other (the layers themselves are traced by ``checks.check_models``)."""
    prof = settings["profile"]
    layers, units = prof["layers"], prof["units"]
    if not layers and (units or prof["samples"] or prof["channel"] != "all"):
        fail("profile.layers", "is empty, so the other [profile] keys do nothing: list the layers to profile, e.g. "
             "layers = [\"layer1\", \"layer2\"], or remove the [profile] section")
    if units and len(units) != len(layers):
        fail("profile.units", f"gives {len(units)} units for {len(layers)} layers: give one per layer, in the order "
             "of profile.layers ([] for a layer's centre unit), or leave units out for every centre")
    if len({(name, tuple(u)) for name, u in zip(layers, units or [[]] * len(layers))}) != len(layers):
        fail("profile.layers", "names a layer twice (with the same unit): give each (layer, unit) once")


def _check_point(fail: Fail, cfg: Config, p: Point) -> None:
    s = p.settings
    where = f"point {p.id} ({p.label})" if len(cfg.points) > 1 else ""
    pre = f"{where}: " if where else ""
    inp, mea, tr = s["inputs"], s["measure"], s["train"]
    if inp["kind"] == "images" and not inp["path"]:
        fail("inputs.path", f"{pre}inputs.kind = 'images' needs a path (a folder or an .npz file)")
    if inp["path"] and not (os.path.exists(inp["path"]) or glob.glob(inp["path"])):  # a path or a glob
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


def _check_task(fail: Fail, task: str, pre: str) -> None:
    if task not in list_tasks() and not (os.path.isdir(task) or (task.endswith(".npz") and os.path.isfile(task))):
        fail("train.task", f"{pre}unknown task {task!r}: choose one of {', '.join(list_tasks())}, or give an "
             "existing image folder or .npz file")


def _check_model_spec(fail: Fail, model: dict, pre: str) -> None:
    """Static checks of a model spec: registry name, factory file, package, argument names."""
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


def _check_figures(fail: Fail, cfg: Config) -> None:
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
            if not all(is_number(v) and v > 0 for v in vals):
                fail(f"{where}.x", f"{f['x']!r} must take positive numbers for a log-log plot")
        if f["kind"] == "bars" and not f["x"]:
            fail(f"{where}.x", "a bars figure needs x (the categories), e.g. 'variant'")
        if f["kind"] == "training" and not training:
            fail(f"{where}.kind", "a training figure needs train.enabled = true")
