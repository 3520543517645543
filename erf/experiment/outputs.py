"""The results folder of a run: analyses, figures, sweep.csv, maps.npz, summary.json and report.md."""

from __future__ import annotations

from pathlib import Path

from erf.experiment.analysis import analyse, findings
from erf.experiment.figures import draw_figure
from erf.experiment.profiles import write_profile
from erf.experiment.records import Record
from erf.experiment.report import markdown
from erf.experiment.sweeps import Config
from erf.experiment.writers import code_version, summary_dict, write_csv, write_json, write_maps


def write_outputs(cfg: Config, records: list[Record], out_dir: Path, env: dict, seconds: float) -> None:
    """Write every output file of a run into ``out_dir``.

    Args:
        cfg: the experiment.
        records: the measured records.
        out_dir: the results folder (it exists).
        env: ``runner.environment`` of the run (with ``previous``: ``previous.load_previous`` of the folder replaced).
        seconds: the run's wall time.
    """
    env = {**env, "code_version": env.get("code_version") or code_version()}  # once, for both files
    analyses = analyse(cfg, records)
    figures = []
    for spec in cfg.figures:
        figures += draw_figure(cfg, spec, records, analyses, out_dir, env)
    profile = write_profile(cfg, records, out_dir)  # [profile]: profile.csv and profile.png, else None
    figures += profile.figures if profile else []
    notes = findings(cfg, records, analyses)
    metrics = cfg.settings["report"]["metrics"]
    keys = cfg.axes + [k for k in cfg.swept_keys if k not in cfg.axes]
    write_csv(records, keys, metrics, out_dir / "sweep.csv")
    if cfg.settings["report"]["save_maps"]:
        write_maps(records, out_dir / "maps.npz")
    summary = summary_dict(cfg, records, env, seconds, analyses, notes, figures)
    write_json({**summary, "profile": profile.summary} if profile else summary, out_dir / "summary.json")
    (out_dir / "report.md").write_text(markdown(cfg, records, analyses, notes, figures, env, seconds))
