"""Text shared by the findings, the figures and the report: numbers, intervals, key names, the setup line."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from erf.experiment.records import Record
from erf.experiment.sweeps import Config, short_key


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


def setup_line(cfg: Config, records: list[Record], env: dict) -> str:
    """One line of measurement settings for figure titles and the report.

    Args:
        cfg: the experiment.
        records: the measured records.
        env: ``runner.environment`` of the run.

    Returns:
        Inputs, samples, weight draws, the averaged signal and the device.
    """
    s = records[0].point.settings
    m, inp = s["measure"], s["inputs"]
    size = inp["size"] if isinstance(inp["size"], int) else "x".join(map(str, inp["size"]))
    draws = {r.point.settings["measure"]["weight_draws"] for r in records}
    draw_txt = f" x {max(draws)} weight draws" if max(draws) else ""
    if any(r.point.settings["measure"]["normalize_draws"] for r in records):
        draw_txt += " (each normalised to unit total)"
    signal = {"abs": "|grad|", "signed": "grad", "square": "grad²", "positive": "max(grad,0)"}[m["signal"]]
    return (f"{inp['kind']} inputs {size}px, {m['samples']} samples{draw_txt}, ERF = mean {signal}, "
            f"{env['device']}{' (quick mode)' if cfg.quick else ''}")
