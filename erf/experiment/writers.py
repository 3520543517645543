"""The result files of a run: sweep.csv, maps.npz and summary.json (with one record dict per map).

These writers sit below both the runner and the report: they read ``Record``s and the
``Config`` and write files, nothing else.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from erf import stats
from erf.experiment.formatting import title_of
from erf.experiment.records import Record
from erf.experiment.sweeps import Config, format_value
from erf.io import save_npz, to_json


def write_csv(records: list[Record], keys: list[str], metrics: list[str], path: Path) -> None:
    """One row per record: ids, swept values, TRF, every metric with ``_lo``/``_hi``, theory.

    Args:
        records: the measured records.
        keys: the swept keys, one column each (``variant`` is always a column).
        metrics: the metrics, three columns each (value, ``_lo``, ``_hi``).
        path: the CSV file to write.
    """
    axes = None
    header = ["id", "point", "variant", "state", "step", *[k for k in keys if k != "variant"], "samples"]
    rows = []
    for r in records:
        axes = stats.axis_names(r.map.ndim)
        row = {"id": r.id, "point": r.point.id, "variant": r.point.variant, "state": r.state,
               "step": "" if r.step is None else r.step, "samples": r.samples}
        for k in keys:
            if k != "variant":
                row[k] = format_value(r.point.value(k))
        for i, a in enumerate(axes):
            row[f"trf_{a}"] = "" if r.trf is None else r.trf[i]
        for name in metrics:
            ci = r.interval(name)
            row[name] = _num(r.metrics.get(name))
            row[f"{name}_lo"] = "" if ci is None else _num(ci[0])
            row[f"{name}_hi"] = "" if ci is None else _num(ci[1])
        for i, a in enumerate(axes):
            row[f"theory_sigma_{a}"] = "" if r.theory_sigma is None else _num(r.theory_sigma[i])
        row["theory_exact"] = r.theory_exact
        row["clipped"] = r.clipped
        row["seconds"] = round(r.seconds, 3)
        rows.append(row)
    axes = axes or ("y", "x")
    header += [f"trf_{a}" for a in axes]
    for name in metrics:
        header += [name, f"{name}_lo", f"{name}_hi"]
    header += [f"theory_sigma_{a}" for a in axes] + ["theory_exact", "clipped", "seconds"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(rows)


def _num(v: Any) -> Any:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return f"{v:.6g}" if isinstance(v, float) else v


def write_maps(records: list[Record], path: Path) -> None:
    """Every mean map (and SE map) as float32 in one compressed .npz, keyed by record id.

    Args:
        records: the measured records.
        path: the .npz file to write.
    """
    arrays = {}
    for r in records:
        arrays[f"{r.id}_map"] = r.map.astype(np.float32)
        if r.se_map is not None:
            arrays[f"{r.id}_se"] = r.se_map.astype(np.float32)
        if r.trf_box is not None:
            arrays[f"{r.id}_trf_box"] = np.asarray(r.trf_box, dtype=np.int64)
    save_npz(path, arrays, compressed=True)


def record_dict(r: Record) -> dict:
    """JSON-ready record for summary.json.

    Args:
        r: a record.

    Returns:
        Its settings, metrics, intervals, theory, summary and notes (and training info).
    """
    axes = stats.axis_names(r.map.ndim)
    d = {"id": r.id, "point": r.point.id, "label": r.label, "variant": r.point.variant, "state": r.state,
         "step": r.step, "params": {k: v for k, v in r.point.params.items()},
         "model": r.point.settings["model"], "inputs": r.point.settings["inputs"],
         "measure": r.point.settings["measure"], "trf": None if r.trf is None else list(r.trf),
         "trf_box": None if r.trf_box is None else [list(b) for b in r.trf_box], "clipped": r.clipped,
         "samples": r.samples, "seconds": r.seconds,
         "metrics": {k: r.metrics.get(k) for k in r.metrics},
         "intervals": {k: (None if v is None else list(v)) for k, v in r.intervals.items()},
         "theory": None if r.theory_sigma is None else {
             "sigma": dict(zip(axes, r.theory_sigma)), "erf_size": {a: 2 * s for a, s in zip(axes, r.theory_sigma)},
             "exact": r.theory_exact},
         "summary": r.summary, "notes": r.notes, "networks": r.network_count,
         "network_metrics": r.network_metrics, "diagnostics": r.diagnostics,
         "trf_center": None if r.trf_center is None else list(r.trf_center),
         "uniform_reference": r.reference, "saturation": r.saturation, "probe": r.probe,
         "noise_probe": None if r.alt is None else {
             "metrics": r.alt.metrics, "intervals": {k: (None if v is None else list(v)) for k, v in r.alt.intervals.items()},
             "network_metrics": r.alt.network_metrics, "diagnostics": r.alt.diagnostics},
         "interval_method": "studentized leave-one-out jackknife over networks (log scale for sizes; t, n - 1 df)",
         "bootstrap_intervals": {k: (None if v is None else list(v)) for k, v in r.bootstrap_intervals.items()},
         "unit_metrics": r.unit_metrics if r.unit_metrics is not r.network_metrics else None,
         "abs_theory": None if r.theory_abs_sigma is None else {"sigma": dict(zip(axes, r.theory_abs_sigma))}}
    if r.train is not None:
        d["train"] = r.train
    return to_json(d)


#: What ``code_version`` checks for uncommitted changes (paths relative to the checkout).
CODE_PATHS = ("erf", "configs", "experiments", "pyproject.toml")


def code_version(root: Path | None = None) -> dict:
    """The code this run used: ``{"commit", "dirty"}`` from git where the package is a checkout, else Nones.

    ``dirty`` is True when tracked code differs from the commit (the numbers then come from uncommitted
    code): the package, the configs and model files, the experiments and pyproject.toml; results written
    by earlier runs in the same checkout do not count. Both are None outside a git checkout or without git.
    """
    root = Path(__file__).resolve().parents[2] if root is None else Path(root)  # the checkout erf runs from
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--",
                                 *CODE_PATHS], capture_output=True, text=True, timeout=10)
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip()) if status.returncode == 0
                else None}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def write_json(obj: Any, path: Path) -> None:
    """Write ``obj`` (made JSON-ready by ``erf.io.to_json``) to ``path``, indented, no NaN.

    Args:
        obj: the object.
        path: the JSON file to write.
    """
    with open(path, "w") as f:
        json.dump(to_json(obj), f, indent=1, allow_nan=False)
        f.write("\n")


def summary_dict(cfg: Config, records: list[Record], env: dict, seconds: float, analyses: dict, notes: list[str],
                 figures: list[dict]) -> dict:
    """The content of summary.json.

    Args:
        cfg: the experiment.
        records: the measured records.
        env: ``runner.environment`` of the run.
        seconds: the run's wall time.
        analyses: ``analysis.analyse`` of the records.
        notes: the findings.
        figures: the figures drawn (``{file, caption}`` each).

    Returns:
        The summary: experiment, settings, versions, analyses, findings, figures and one
        ``record_dict`` per map.
    """
    exp = cfg.settings["experiment"]
    return {
        "experiment": cfg.name, "title": title_of(cfg), "description": exp["description"],
        "quick": cfg.quick, "seed": exp["seed"], "device": env["device"], "device_name": env["device_name"],
        "versions": env["versions"], "platform": env["platform"], "seconds": seconds,
        "code_version": env.get("code_version") or code_version(),
        "config": cfg.to_dict(), "metrics": cfg.settings["report"]["metrics"], "analyses": analyses,
        "findings": notes, "figures": [f["file"] for f in figures], "points": [record_dict(r) for r in records],
    }
