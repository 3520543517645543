"""Text shared by the findings, the figures and the report: numbers, intervals, key names, the setup line."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from erf.experiment.records import Record
from erf.experiment.sweeps import Config, format_value, get_dotted, short_key


def fmt(v: Any, digits: int = 3) -> str:
    """A number for text: ``digits`` significant-ish digits, ``–`` for None or a non-finite float.

    Args:
        v: the number (int, float, numpy scalar) or None.
        digits: digits after the point below 10 (one fewer from 10 on; general format far from 1).

    Returns:
        The text.
    """
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, (int, np.integer)):
        return str(v)
    a = abs(v)
    if a != 0 and (a >= 1e4 or a < 1e-3):
        return f"{v:.{digits}g}"
    return f"{v:.{digits}f}" if a < 10 else f"{v:.{max(digits - 1, 1)}f}"


def fmt_ci(ci: tuple[float, float] | None) -> str:
    """`` [lo, hi]`` (with a leading space), or "" without an interval."""
    return "" if ci is None else f" [{fmt(ci[0])}, {fmt(ci[1])}]"


def key_name(key: str) -> str:
    """How axes and legends name a sweep key: ``variant``, ``training state`` or its last part."""
    return {"variant": "variant", "state": "training state"}.get(key, short_key(key))


def metric_axis(metric: str) -> str | None:
    """The axis a metric is about (``sigma_x`` -> ``x``), None for a metric of the whole map."""
    tail = metric.rpartition("_")[2]
    return tail if tail in ("x", "y", "z") else None


def title_of(cfg: Config) -> str:
    """The experiment's title with ``{dotted.key}`` placeholders filled from the settings actually run.

    Args:
        cfg: the experiment (quick mode and overrides applied).

    Returns:
        The title (the experiment's name without one).
    """
    return fill_settings(cfg, cfg.settings["experiment"]["title"] or cfg.name)


def fill_settings(cfg: Config, text: str) -> str:
    """``text`` with its ``{dotted.key}`` placeholders filled from the settings actually run.

    ``{model.networks}`` is a setting; ``{sweep.grid.KEY}`` is the swept list of ``KEY`` written
    ``first to last`` (``4 to 32``); a placeholder that names nothing is left as it is.

    Args:
        cfg: the experiment (quick mode and overrides applied).
        text: the text (a title, a description).

    Returns:
        The filled text.
    """

    def fill(match: re.Match) -> str:
        key = match.group(1)
        if key.startswith("sweep.grid.") and key[len("sweep.grid."):] in cfg.grid:
            vals = cfg.grid[key[len("sweep.grid."):]]
            return format_value(vals[0]) if len(vals) == 1 else \
                f"{', '.join(format_value(v) for v in vals)}" if len(vals) <= 4 else \
                f"{format_value(vals[0])} to {format_value(vals[-1])}"
        value = get_dotted(cfg.settings, key)
        return match.group(0) if value is None else format_value(value)

    return re.sub(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}", fill, text)


def _draws(m: dict, networks: int) -> str:
    """``8 samples x 16 weight draws`` (x networks) for one point's measure settings."""
    txt = f"{m['samples']} samples"
    if m["weight_draws"]:
        txt += f" x {m['weight_draws']} weight draw{'s' if m['weight_draws'] != 1 else ''}"
    if networks > 1:
        txt += f" x {networks} networks"
    return txt


def setup_line(cfg: Config, records: list[Record], env: dict) -> str:
    """One line of measurement settings for figure titles and the report, from the settings run.

    Args:
        cfg: the experiment.
        records: the measured records.
        env: ``runner.environment`` of the run.

    Returns:
        Inputs, samples, weight draws and networks (per variant where they differ), the averaged
        signal and the device.
    """
    s = records[0].point.settings
    m, inp = s["measure"], s["inputs"]
    size = inp["size"] if isinstance(inp["size"], int) else "x".join(map(str, inp["size"]))
    setters = [axis for axis, vs in cfg.variants.items()
               if any(k.startswith("measure.") or k == "model.networks" for v in vs for k in v)]
    per: dict[str, list[str]] = {}
    for r in records:
        txt = _draws(r.point.settings["measure"], r.point.settings["model"]["networks"])
        label = ", ".join(r.point.variants[a] for a in setters if a in r.point.variants) or r.point.label
        if label not in per.setdefault(txt, []):
            per[txt].append(label)
    draw_txt = next(iter(per)) if len(per) == 1 else "; ".join(f"{t} ({', '.join(v)})" for t, v in per.items())
    if any(r.point.settings["measure"]["normalize_draws"] for r in records):
        draw_txt += ", each draw normalised to unit total"
    if any(r.point.settings["model"]["normalize_networks"] for r in records):
        draw_txt += ", each network normalised to unit total"
    signal = {"abs": "|grad|", "signed": "grad", "square": "grad²", "positive": "max(grad,0)"}[m["signal"]]
    probe = f"{inp['kind']} inputs {size}px"
    if any(getattr(r, "probe", "") == "task" for r in records):
        probe = (f"probes: the training task's held-out images, {size}px (also {inp['kind']} noise at init and at "
                 "the end, for comparison)")
    return (f"{probe}, {draw_txt}, ERF = mean {signal}, "
            f"{env['device']}{' (quick mode)' if cfg.quick else ''}")
