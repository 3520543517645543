"""What moved since the previous shipped run: the numbers of the results folder a full run replaces.

A full run (not ``--quick``) reads the ``summary.json`` of the results folder it is about to replace
(``load_previous``, before any work) and its report's "Changes from the previous version" section
gives, beside the config's ``report.changes`` text (the why), a table of the headline sizes of every
map found in both runs, previous against now with their intervals and network counts
(``changes_table``): what moved is measured, not retyped.
"""

from __future__ import annotations

import json
from pathlib import Path

from erf.experiment.formatting import fmt, fmt_ci, metric_axis
from erf.experiment.records import Record

# the robust size first (issue 20), then the config's first per-axis size
ROBUST_FIRST = ("mass_radius_0.5",)


def load_previous(dest: Path) -> dict | None:
    """The previous full run's summary in ``dest``, reduced to what the changes table needs.

    Args:
        dest: the results folder a run will replace.

    Returns:
        ``{"commit", "points": {label: {"metrics", "intervals", "networks"}}}``, or None when
        ``dest`` holds no readable summary of a full run.
    """
    try:
        s = json.loads((dest / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(s, dict) or s.get("quick") or not isinstance(s.get("points"), list):
        return None
    points = {}
    for p in s["points"]:
        if isinstance(p, dict) and "label" in p:
            points[p["label"]] = {"metrics": p.get("metrics") or {}, "intervals": p.get("intervals") or {},
                                  "networks": _networks(p)}
    code = s.get("code_version") or {}
    return {"commit": code.get("commit"), "points": points}


def _networks(point: dict) -> int:
    """Independently seeded networks behind a summary point: model.networks, else its weight draws."""
    nets = int((point.get("model") or {}).get("networks", 1) or 1)
    draws = int((point.get("measure") or {}).get("weight_draws", 0) or 0)
    return nets if nets > 1 else max(1, draws)


def headline_metrics(metrics: list[str]) -> list[str]:
    """The sizes the changes table shows: mass radius 0.5 (every record has it) and the first x-axis metric.

    Args:
        metrics: the report's metrics (``report.metrics``).

    Returns:
        Two metric names (one where the report's first x-axis metric is the mass radius itself).
    """
    first = [m for m in metrics if metric_axis(m) == "x"][:1] or [m for m in metrics if m not in ROBUST_FIRST][:1]
    return list(ROBUST_FIRST) + [m for m in first if m not in ROBUST_FIRST]


def changes_table(previous: dict | None, records: list[Record], metrics: list[str]) -> list[str]:
    """Markdown lines: each map's headline sizes in the previous run and now.

    Args:
        previous: ``load_previous`` of the replaced folder (None: no table).
        records: this run's records.
        metrics: the report's metrics.

    Returns:
        The lines (empty without a previous run or without a map in both).
    """
    if not previous:
        return []
    shown = headline_metrics(metrics)
    rows = []
    for r in records:
        old = previous["points"].get(r.label)
        if old is None:
            continue
        for m in shown:
            a, b = old["metrics"].get(m), r.metrics.get(m)
            if a is None or b is None:
                continue
            change = f"{(b - a) / a:+.0%}" if a else "–"
            ci = old["intervals"].get(m)
            rows.append(f"| {r.label} | {m} | {fmt(a)}{fmt_ci(tuple(ci) if ci else None)} ({old['networks']}) | "
                        f"{fmt(b)}{fmt_ci(r.interval(m))} ({r.network_count}) | {change} |")
    if not rows:
        return []
    since = f" (git commit {previous['commit'][:12]})" if previous.get("commit") else ""
    level = records[0].point.settings["measure"]["level"]
    return [f"What moved, measured: the previous shipped run{since} against this one, {level:.0%} intervals, "
            "(networks) per map; the intervals of the two runs may come from different methods (see above).", "",
            "| map | metric | previous | now | change |", "|---|---|---|---|---|", *rows, ""]
