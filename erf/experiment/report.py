"""report.md: the setup, the findings in plain words, the figures and a table of the key numbers."""

from __future__ import annotations

from erf.experiment.formatting import fill_settings, fmt_ci, fmt, metric_axis, setup_line, title_of
from erf.experiment.previous import changes_table
from erf.experiment.profiles import profile_lines
from erf.experiment.records import Record
from erf.experiment.writers import code_version
from erf.experiment.sweeps import Config, format_value


def markdown(cfg: Config, records: list[Record], analyses: dict, notes: list[str], figures: list[dict], env: dict,
             seconds: float) -> str:
    """report.md: setup, findings in plain words, figures, and a table of the key numbers.

    Args:
        cfg: the experiment.
        records: the measured records.
        analyses: ``analysis.analyse`` of the records.
        notes: ``analysis.findings``.
        figures: the figures drawn (``{file, caption}`` each).
        env: ``runner.environment`` of the run (with ``previous``: ``previous.load_previous`` of the folder replaced).
        seconds: the run's wall time.

    Returns:
        The markdown text.
    """
    exp = cfg.settings["experiment"]
    lines = [f"# {title_of(cfg)}", ""]
    if cfg.quick and exp["quick_note"]:  # the first thing a reader sees: this is not the real experiment
        lines += [f"**Quick run (`--quick`): {exp['quick_note'].strip()}**", ""]
    if exp["description"]:
        lines += [fill_settings(cfg, exp["description"].strip()), ""]
    v = env["versions"]
    code = env.get("code_version") or code_version()
    commit = ("git commit " + code["commit"][:12] + (" with uncommitted changes" if code["dirty"] else "")
              if code.get("commit") else "code version unknown (not a git checkout)")
    lines += ["## Setup", "",
              f"- Config: `{cfg.path}`" + (" run with `--quick` (reduced samples and sizes; not the full settings)"
                                            if cfg.quick else " (full settings)"),
              f"- Device: {env['device']} — {env['device_name']}; {len(records)} maps from {len(cfg.points)} sweep "
              f"points in {seconds:.0f} s",
              f"- Seed {exp['seed']}, dtype {exp['dtype']}; erf {v['erf']}, torch {v['torch']}, numpy {v['numpy']}, "
              f"python {v['python']}; {commit}",
              f"- Measurement: {setup_line(cfg, records, env)}; intervals: {_interval_text(records)}"]
    base = cfg.settings
    lines.append(f"- Model: `{base['model']['name']}` with {_args(base['model']['args'])}"
                 + (f"; swept: {', '.join(f'`{k}`' for k in cfg.swept_keys)}" if cfg.swept_keys else ""))
    if base["train"]["enabled"]:
        t = base["train"]
        lines.append(f"- Training: task `{t['task']}`, {t['steps']} steps, batch {t['batch_size']}, lr {t['lr']}, "
                     f"ERF measured at {', '.join(['init'] + [str(c) for c in t['checkpoints']] + ['end'])}")
    lines += ["- Definitions: σ = moment standard deviation of the ERF map per axis; ERF size = 2σ; "
              "ERF/TRF = 2σ / TRF; the TRF is the exact theoretical receptive field of the centre unit.", ""]
    lines += ["## What the numbers show", ""] + [f"- {n}" for n in notes] + [""]
    moved = [] if cfg.quick else changes_table(env.get("previous"), records, cfg.settings["report"]["metrics"])
    why = cfg.settings["report"]["changes"].strip()
    if (why or moved) and not cfg.quick:  # the committed full run's changes only
        lines += ["## Changes from the previous version", ""] + ([why, ""] if why else []) + moved
    if figures:
        lines += ["## Figures", ""]
        for f in figures:
            lines += [f"![{f['caption']}]({f['file']})", "", f"*{f['caption']}*", ""]
    lines += profile_lines(cfg, records)
    lines += ["## Key numbers", "", *_table(cfg, records), ""]
    exact = [t for t in analyses["theory"] if t["axis"] == "x"]
    if exact:
        lines += ["## Measured σ against the exact linear theories", "",
                  "Uniform kernels: the exact map of constant 1/fan_in weights (linear). Mean |grad|: the exact "
                  "expected |grad| map of random zero-mean linear weights, the square root of the uniform-kernel map "
                  "(normalised); it applies to the random linear rows only.", "",
                  "| point | measured σx [95% CI] | σx uniform kernels | measured / uniform | σx mean-abs theory | "
                  "measured / mean-abs | exact here |", "|---|---|---|---|---|---|---|"]
        for t in exact:
            ab = t["theory_abs_sigma"]
            lines.append(f"| {t['label']} | {fmt(t['measured_sigma'], 4)}{fmt_ci(t['interval'])} | "
                         f"{fmt(t['theory_sigma'], 4)} | {fmt(t['measured_sigma'] / t['theory_sigma'], 4)} | "
                         f"{fmt(ab, 4)} | {fmt(None if ab is None else t['measured_sigma'] / ab, 4)} | "
                         f"{'uniform' if t['exact'] else 'mean-abs' if ab else 'no'} |")
        lines.append("")
    lines += ["Files: `summary.json` (settings, versions, every metric with its interval), `sweep.csv` (one row "
              "per map), " + ("`maps.npz` (every map, not committed), " if cfg.settings["report"]["save_maps"] else "")
              + "the PNG figures" + (", `weights/` (trained state_dicts)" if base["train"]["enabled"]
                                     and base["train"]["save_weights"] else "") + ".", ""]
    return "\n".join(lines)


def _interval_text(records: list[Record]) -> str:
    m = records[0].point.settings["measure"]
    nets = max(r.networks.count if r.networks is not None else 1 for r in records)
    draws = any(r.point.settings["measure"]["weight_draws"] > 1 for r in records)
    if nets > 1:
        over = (f"the {nets} independently seeded networks of each map" + ("; paired between the training states "
                                                                           "of a network"
                                                                           if any(r.step is not None for r in records)
                                                                           else ""))
    elif draws:
        over = "whole weight draws (each draw an independent network; input-sample groups where there is one draw)"
    else:
        over = "groups of input samples of ONE network (no interval over networks: comparisons get no verdict)"
    return (f"{m['level']:.0%} studentized leave-one-out jackknife (the pooled map's metric with each unit left "
            f"out; log scale for sizes and ratios; Student's t with units - 1 degrees of freedom; a bootstrap "
            f"interval undercovers with 4-8 networks), over {over}; the hierarchical bootstrap's interval "
            f"({m['n_boot']} replicates) is in summary.json; each verdict gives how many networks moved which "
            "way, with the exact two-sided sign-test p (Mann-Whitney for independent arms)")


def _args(args: dict) -> str:
    return ", ".join(f"{k}={format_value(v)}" for k, v in args.items()) or "its defaults"


def _table(cfg: Config, records: list[Record]) -> list[str]:
    metrics = cfg.settings["report"]["metrics"]
    shown = [m for m in metrics if metric_axis(m) != "y"] or metrics
    refs = any(r.reference is not None for r in records)
    head = ["map", "TRF", "networks"] + shown + (["uniform-map reference (visible TRF)"] if refs else [])
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        trf = "–" if r.trf is None else "x".join(map(str, r.trf)) + (" (cut by the image)" if r.clipped else "")
        vals = [f"{fmt(r.metrics.get(m))}{fmt_ci(r.interval(m))}" for m in shown]
        if refs:
            vals.append("–" if r.reference is None else ", ".join(
                f"{m} {fmt(r.reference[m])}" for m in shown if m in r.reference and "trf" not in m))
        out.append("| " + " | ".join([r.label, trf, str(r.network_count)] + vals) + " |")
    if len(shown) < len(metrics):
        out += ["", "The y-axis metrics are in `sweep.csv` and `summary.json`."]
    return out
