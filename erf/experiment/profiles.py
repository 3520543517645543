"""``[profile]`` of an experiment: the ERF of several layers at every point and training state, from shared passes.

A config's ``[profile] layers = ["layer1", "layer2", ...]`` (optionally ``units``, one per layer)
makes ``erf run`` measure, for every network of every sweep point and every training state, the
listed layers' units in shared passes (``erf.engine.profile.measure_targets``, the step behind
``erf.profile``): each layer's map equals ``erf.measure`` of that layer alone on its own input samples
(input sample ``K*j + k`` of a draw for layer ``k`` of ``K``). ``points.measure_point`` measures
and saves them (``profile_key``); this module checks the layers before any work
(``check_profile``), turns the networks' maps of each layer into one ``Record`` with intervals
over networks (``profile_layers``), and writes ``profile.csv``, ``profile.png`` and summary.json's
``profile`` section (``write_profile``); ``profile_lines`` is the report's section.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from erf import distributed, stats
from erf.analytic import receptive_field
from erf.engine import ERFResult
from erf.engine.profile import target_from_report
from erf.engine.target import check_unit
from erf.errors import ErfError, TraceError, UnsupportedOpError
from erf.experiment.formatting import fmt
from erf.experiment.records import Record, make_record
from erf.experiment.schema import Fail
from erf.experiment.sweeps import Config, Point
from erf.models import load_model
from erf.profile_plots import plot_profile_series

__all__ = ["ProfileLayer", "profiled", "profile_targets", "profile_key", "check_profile", "profile_layers",
           "write_profile", "profile_lines", "PROFILE_FILE", "PROFILE_CSV"]

PROFILE_FILE = "profile.png"
PROFILE_CSV = "profile.csv"
_N_BOOT = 20  # a profile layer's record: its intervals are the jackknife's; the bootstrap is not reported


@dataclass
class ProfileLayer:
    """One profiled layer of one point in one training state: its networks' maps as one ``Record``.

    Attributes:
        layer: the layer as ``[profile] layers`` names it.
        traced: its name in the trace (``erf rf``).
        unit: the measured unit of the layer's map.
        output: the layer's spatial map size.
        jump: its input stride between neighbouring units (None without a trace).
        record: the metrics (``erf_size_*``, ``erf_trf_ratio_*``, ``mass_radius_0.9``) with intervals over networks.
    """

    layer: str
    traced: str
    unit: tuple[int, ...]
    output: tuple[int, ...] | None
    jump: tuple[float, ...] | None
    record: Record


def profiled(settings: dict) -> bool:
    """Whether a point's settings ask for a profile (``[profile] layers`` not empty).

    Args:
        settings: a point's (or the config's) settings.

    Returns:
        True when layers are listed.
    """
    return bool(settings.get("profile", {}).get("layers"))


def profile_targets(settings: dict) -> list[tuple[str, tuple[int, ...] | None, int | None]]:
    """The ``(layer, unit, channel)`` targets of ``erf.engine.profile.measure_targets`` for a point.

    Args:
        settings: the point's settings.

    Returns:
        One target per listed layer, in the order of ``[profile] layers`` (unit None: the centre).
    """
    prof = settings["profile"]
    units = prof["units"] or [[]] * len(prof["layers"])
    channel = None if prof["channel"] == "all" else int(prof["channel"])
    return [(name, tuple(u) if u else None, channel) for name, u in zip(prof["layers"], units)]


def profile_key(point: Point, state: str, network: int, index: int) -> str:
    """The run-folder key of profiled layer ``index`` of a network of ``point`` in ``state``.

    Args:
        point: the sweep point.
        state: the training state ("" untrained).
        network: the network's index.
        index: the layer's position in ``[profile] layers``.

    Returns:
        ``<Record.key>_profile<index>`` (no state or network key ends so).
    """
    return f"{Record.key(point, state, network)}_profile{index}"


# --------------------------------------------------------------------------- checks before any work


def check_profile(fail: Fail, cfg: Config) -> None:
    """Trace every distinct model of a profiled sweep once (meta device) and check ``[profile]`` against it.

    Refused with one line naming the key: a layer the trace does not know (with the closest names),
    a layer without a spatial map, a unit outside its layer's map, a channel a layer lacks, and a
    profile under torchrun (it runs in one process). A model the tracer cannot follow is left to the
    run (``erf.profile`` then takes the layers in the order given).

    Args:
        fail: the config file's ``Fail``.
        cfg: the experiment.

    Raises:
        ConfigError: the first problem.
    """
    seen: set[str] = set()
    for p in cfg.points:
        s = p.settings
        if not profiled(s):
            continue
        if distributed.active():
            fail("profile.layers", "a profile runs in one process: run without torchrun, or remove [profile]")
        size = s["inputs"]["size"]
        key = repr((s["model"]["name"], s["model"]["args"], size, s["measure"]["prefix_tokens"]))
        if key in seen:
            continue
        seen.add(key)
        pre = f"point {p.id} ({p.label}): " if len(cfg.points) > 1 else ""
        with torch.device("meta"):
            model = load_model(s["model"]["name"], s["model"]["args"])  # check_models built it already
        model.eval()
        try:
            rep = receptive_field(model, tuple(size) if isinstance(size, list) else size)
        except (TraceError, UnsupportedOpError):
            continue
        output = rep.target
        prefix = None if s["measure"]["prefix_tokens"] == "auto" else s["measure"]["prefix_tokens"]
        for i, (layer, unit, channel) in enumerate(profile_targets(s)):
            try:
                t = target_from_report(rep, output, layer, prefix).geometry
            except ErfError as exc:
                fail(f"profile.layers[{i}]", f"{pre}{' '.join(str(exc).split())}; list the layers with "
                     f"'erf rf {s['model']['name']}'")
            if unit is not None:
                try:
                    check_unit(unit, t.output)
                except ErfError as exc:
                    fail(f"profile.units[{i}]", f"{pre}layer {layer!r}: {' '.join(str(exc).split())}")
            if channel is not None:
                position = t.index_of(unit or tuple(stats.center_unit(t.output)))
                n = math.prod(v for d, v in enumerate(t.shape) if d and d not in position)
                if channel >= n:
                    fail("profile.channel", f"{pre}channel {channel} does not exist in layer {layer!r} ({n} "
                         f"channels): use 0..{n - 1} for every profiled layer, or 'all'")


# --------------------------------------------------------------------------- records


def _profile_point(point: Point, ndim: int) -> Point:
    """``point`` with the profile's metrics (ERF size, ERF/TRF, mass radius per axis) and few bootstrap replicates."""
    s = copy.deepcopy(point.settings)
    axes = stats.axis_names(ndim)
    s["report"]["metrics"] = [f"erf_size_{a}" for a in axes] + [f"erf_trf_ratio_{a}" for a in axes] + \
        ["mass_radius_0.9"]
    s["measure"]["n_boot"] = _N_BOOT
    return dataclasses.replace(point, settings=s)


def profile_layers(cfg: Config, point: Point, state: str, step: int | None,
                   networks: list[list[ERFResult]]) -> list[ProfileLayer]:
    """One ``ProfileLayer`` per profiled layer: the networks' maps of that layer as one ``Record``.

    Args:
        cfg: the experiment.
        point: the sweep point.
        state: the training state ("" untrained).
        step: the training step, or None.
        networks: per network, its results in the order of ``[profile] layers``.

    Returns:
        The layers in the order of ``[profile] layers``.
    """
    if not networks or not networks[0]:
        return []
    targets = profile_targets(point.settings)
    out = []
    for i, (layer, _unit, _channel) in enumerate(targets):
        results = [net[i] for net in networks]
        r0 = results[0]
        rec = make_record(cfg, _profile_point(point, r0.map.ndim), results, state, step)
        rec = dataclasses.replace(rec, theory_sigma=None, theory_exact=False, theory_abs_sigma=None)
        jump = r0.settings.get("jump")
        out.append(ProfileLayer(layer, str(r0.layer), tuple(int(u) for u in r0.unit),
                                tuple(r0.settings.get("layer_output") or ()) or None,
                                None if jump is None else tuple(float(j) for j in jump), rec))
    return out


# --------------------------------------------------------------------------- outputs


def _rows(records: list[Record]) -> list[dict[str, Any]]:
    """One dict per (record, profiled layer): ids, layer, unit, map, TRF, jump, metrics with intervals."""
    rows = []
    for r in records:
        for pl in r.profile:
            rec = pl.record
            row: dict[str, Any] = {"id": r.id, "point": r.point.id, "label": r.point.label, "state": r.state,
                                   "step": r.step, "layer": pl.layer, "traced": pl.traced,
                                   "unit": "(" + ", ".join(str(u) for u in pl.unit) + ")",
                                   "output": None if pl.output is None else list(pl.output),
                                   "jump": None if pl.jump is None else list(pl.jump),
                                   "trf": None if rec.trf is None else list(rec.trf), "clipped": bool(rec.clipped),
                                   "networks": rec.network_count, "samples": rec.samples}
            for name in rec.point.settings["report"]["metrics"]:
                ci = rec.interval(name)
                row[name] = _num(rec.metrics.get(name))
                row[f"{name}_ci"] = None if ci is None else [_num(ci[0]), _num(ci[1])]
            rows.append(row)
    return rows


def _num(v: Any) -> float | None:
    return None if v is None or not math.isfinite(float(v)) else float(v)


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (list, tuple)):
        return "x".join(_cell(x) for x in v)
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


@dataclass
class ProfileOutputs:
    """What ``write_profile`` wrote: the figures (``{file, caption}``) and summary.json's ``profile`` section."""

    figures: list[dict]
    summary: dict


def write_profile(cfg: Config, records: list[Record], out_dir: Path) -> ProfileOutputs | None:
    """Write ``profile.csv`` and ``profile.png`` of a profiled run into ``out_dir``.

    Args:
        cfg: the experiment.
        records: the run's records (each with its ``profile`` layers).
        out_dir: the results folder.

    Returns:
        The figures and summary.json's ``profile`` section; None when the config has no ``[profile]``.
    """
    rows = _rows(records)
    if not profiled(cfg.settings) or not rows:
        return None
    metrics = [k for k in rows[0] if k.startswith(("erf_size_", "erf_trf_ratio_", "mass_radius"))
               and not k.endswith("_ci")]
    head = ["id", "point", "label", "state", "step", "layer", "traced", "unit", "output", "jump", "trf", "clipped",
            "networks", "samples"]
    for name in metrics:
        head += [name, f"{name}_lo", f"{name}_hi"]
    with open(out_dir / PROFILE_CSV, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(head)
        for row in rows:
            flat = {**row, **{f"{n}_lo": (row[f"{n}_ci"] or [None, None])[0] for n in metrics},
                    **{f"{n}_hi": (row[f"{n}_ci"] or [None, None])[1] for n in metrics}}
            w.writerow([_cell(flat.get(h)) for h in head])
    series: dict[str, list[dict]] = {}
    for row in rows:
        series.setdefault(row["label"] + (f" [{row['state']}]" if row["state"] else ""), []).append(row)
    level = cfg.settings["measure"]["level"]
    plot_profile_series(series, out_dir / PROFILE_FILE, f"{cfg.name}: ERF and TRF per profiled layer "
                        f"({int(round(100 * level))}% intervals over networks)")
    caption = (f"ERF size 2σ per profiled layer ({', '.join(cfg.settings['profile']['layers'])}), one line per point "
               "and training state, with its TRF (dashed, same colour) and ERF/TRF; all layers of a network measured "
               "from the same shared passes (erf.profile).")
    settings = {k: v for k, v in cfg.settings["profile"].items()}
    return ProfileOutputs([{"file": PROFILE_FILE, "caption": caption}],
                          {"settings": settings, "csv": PROFILE_CSV, "rows": rows})


def profile_lines(cfg: Config, records: list[Record]) -> list[str]:
    """The report's ``[profile]`` section: a table of ERF size and TRF per layer, per point and state.

    Args:
        cfg: the experiment.
        records: the run's records (each with its ``profile`` layers).

    Returns:
        Markdown lines (a heading, a sentence, a table, a blank line); [] without a profile.
    """
    rows = _rows(records)
    if not profiled(cfg.settings) or not rows:
        return []
    axes = [k[len("erf_size_"):] for k in rows[0] if k.startswith("erf_size_") and not k.endswith("_ci")]
    samples = cfg.settings["profile"]["samples"] or cfg.settings["measure"]["samples"]
    lines = ["## ERF per profiled layer", "",
             f"Each network's layers {', '.join(f'`{n}`' for n in cfg.settings['profile']['layers'])} measured "
             f"from shared passes ({samples} samples per layer and network; each layer's map is erf.measure's of "
             f"that layer alone on its own samples); intervals over networks. `{PROFILE_CSV}` has every number.", "",
             "| map | layer | unit | map size | jump | TRF | " + " | ".join(f"ERF size 2σ_{a}" for a in axes)
             + " | " + " | ".join(f"ERF/TRF {a}" for a in axes) + " |",
             "|---" * (6 + 2 * len(axes)) + "|"]
    for row in rows:
        label = row["label"] + (f" [{row['state']}]" if row["state"] else "")
        sizes = [_with_ci(row[f"erf_size_{a}"], row[f"erf_size_{a}_ci"]) for a in axes]
        ratios = [_with_ci(row.get(f"erf_trf_ratio_{a}"), row.get(f"erf_trf_ratio_{a}_ci")) for a in axes]
        trf = _cell(row["trf"]) + (" (cut by the image)" if row["clipped"] else "")
        lines.append(f"| {label} | `{row['layer']}` | {_cell(row['unit'])} | {_cell(row['output'])} | "
                     f"{_cell(row['jump'])} | {trf or '–'} | " + " | ".join(sizes) + " | " + " | ".join(ratios) + " |")
    return lines + [""]


def _with_ci(v: float | None, ci: list | None) -> str:
    if v is None:
        return "–"
    return fmt(v) + ("" if not ci or ci[0] is None else f" [{fmt(ci[0])}, {fmt(ci[1])}]")
