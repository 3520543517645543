"""Results of an experiment run: analyses, figures, summary.json, sweep.csv, maps.npz and report.md.

``write_outputs`` is called by the runner with the measured records. The analyses turn the
records into numbers with intervals (power-law fits of growth figures, ratios between
categories, changes through training, measured versus exact linear theory); ``findings``
states them in plain words for the report.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from erf import stats
from erf.experiment.config import Config, format_value, short_key, show_value

DPI = 110
Z95 = 1.959963984540054


# --------------------------------------------------------------------------- entry point


def write_outputs(cfg: Config, records: list, out_dir: Path, env: dict, seconds: float) -> None:
    """Write every output file of a run into ``out_dir``."""
    from erf.experiment.runner import record_dict, write_csv, write_json, write_maps

    analyses = analyse(cfg, records)
    figures = []
    for spec in cfg.figures:
        figures += draw_figure(cfg, spec, records, analyses, out_dir, env)
    notes = findings(cfg, records, analyses)
    metrics = cfg.settings["report"]["metrics"]
    keys = cfg.axes + [k for k in cfg.swept_keys if k not in cfg.axes]
    write_csv(records, keys, metrics, out_dir / "sweep.csv")
    if cfg.settings["report"]["save_maps"]:
        write_maps(records, out_dir / "maps.npz")
    exp = cfg.settings["experiment"]
    summary = {
        "experiment": cfg.name, "title": exp["title"] or cfg.name, "description": exp["description"],
        "quick": cfg.quick, "seed": exp["seed"], "device": env["device"], "device_name": env["device_name"],
        "versions": env["versions"], "platform": env["platform"], "seconds": seconds,
        "config": cfg.to_dict(), "metrics": metrics, "analyses": analyses, "findings": notes,
        "figures": [f["file"] for f in figures], "points": [record_dict(r) for r in records],
    }
    write_json(summary, out_dir / "summary.json")
    (out_dir / "report.md").write_text(markdown(cfg, records, analyses, notes, figures, env, seconds))


# --------------------------------------------------------------------------- helpers


def _groups(records, key: str) -> list:
    """Distinct values of ``key`` over the records, in order of appearance."""
    out = []
    for r in records:
        v = r.value(key) if key else None
        if not any(_same(v, o) for o in out):
            out.append(v)
    return out


def _same(a, b) -> bool:
    return repr(a) == repr(b)


def _name(key: str) -> str:
    return {"variant": "variant", "state": "training state"}.get(key, short_key(key))


def _show(key: str, value) -> str:
    return show_value(key, value)


def _axis(metric: str) -> str | None:
    tail = metric.rpartition("_")[2]
    return tail if tail in ("x", "y", "z") else None


def theory_value(r, metric: str) -> float | None:
    """The exact linear theory's value of ``metric`` at record ``r`` (sigma, erf_size, erf_trf_ratio)."""
    a = _axis(metric)
    if r.theory_sigma is None or a is None:
        return None
    axes = stats.axis_names(r.map.ndim)
    if a not in axes:
        return None
    s = r.theory_sigma[axes.index(a)]
    base = metric.rpartition("_")[0]
    if base == "sigma":
        return s
    if base == "erf_size":
        return 2 * s
    if base == "erf_trf_ratio" and r.trf is not None:
        return 2 * s / r.trf[axes.index(a)]
    return None


def _ratio_ci(a: float, ci_a, b: float, ci_b):
    """a / b with an approximate interval: log-normal errors from each interval, independent."""
    if not (a > 0 and b > 0):
        return None
    r = a / b
    if ci_a is None or ci_b is None or min(ci_a[0], ci_b[0]) <= 0:
        return r, None
    se = math.hypot(math.log(ci_a[1] / ci_a[0]), math.log(ci_b[1] / ci_b[0])) / (2 * Z95)
    return r, (r * math.exp(-Z95 * se), r * math.exp(Z95 * se))


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, (int, np.integer)):
        return str(v)
    a = abs(v)
    if a != 0 and (a >= 1e4 or a < 1e-3):
        return f"{v:.{digits}g}"
    return f"{v:.{digits}f}" if a < 10 else f"{v:.{max(digits - 1, 1)}f}"


def _ci(ci) -> str:
    return "" if ci is None else f" [{_fmt(ci[0])}, {_fmt(ci[1])}]"


def _new_figure(size) -> Figure:
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def setup_line(cfg: Config, records, env) -> str:
    """One line of measurement settings for figure titles."""
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


# --------------------------------------------------------------------------- analyses


def analyse(cfg: Config, records) -> dict:
    """Numbers behind the findings: theory checks, growth fits, comparisons, training changes."""
    out: dict = {"theory": _theory_checks(records), "figures": []}
    for spec in cfg.figures:
        if spec["kind"] == "growth":
            out["figures"].append({"file": spec["file"], "kind": "growth", **_growth(spec, records)})
        elif spec["kind"] == "bars":
            out["figures"].append({"file": spec["file"], "kind": "bars", **_comparisons(spec, records)})
        elif spec["kind"] == "training":
            out["figures"].append({"file": spec["file"], "kind": "training", **_training(spec, records)})
    return out


def _theory_checks(records) -> list[dict]:
    rows = []
    for r in records:
        if r.theory_sigma is None:
            continue
        axes = stats.axis_names(r.map.ndim)
        for a, s in zip(axes, r.theory_sigma):
            name = f"sigma_{a}"
            measured = r.metrics.get(name, r.summary.get(name))
            rows.append({"id": r.id, "label": r.label, "axis": a, "exact": r.theory_exact, "theory_sigma": s,
                         "measured_sigma": measured, "interval": r.interval(name),
                         "relative_difference": None if measured is None else measured / s - 1})
    return rows


def _series_xy(spec, records):
    out = []
    for sv in _groups(records, spec["series"]):
        rs = [r for r in records if _same(r.value(spec["series"]), sv)]
        rs.sort(key=lambda r: r.value(spec["x"]))
        out.append((sv, rs))
    return out


def _fit(xs, ys, cis):
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    if len(set(xs.tolist())) < 2 or not np.all(ys > 0):
        return None
    lo = hi = None
    if all(c is not None and c[0] > 0 for c in cis):
        lo, hi = [c[0] for c in cis], [c[1] for c in cis]
    try:
        return stats.fit_power_law(xs, ys, lo, hi)
    except Exception:  # noqa: BLE001 - a degenerate fit is reported as missing
        return None


def _growth(spec, records) -> dict:
    metric = spec["metric"]
    a = _axis(metric) or "x"
    series = []
    for sv, rs in _series_xy(spec, records):
        xs = [float(r.value(spec["x"])) for r in rs]
        ys = [r.metrics[metric] for r in rs]
        fit = _fit(xs, ys, [r.interval(metric) for r in rs])
        ratio = [r.summary.get(f"erf_trf_ratio_{a}") for r in rs]
        rfit = _fit(xs, ratio, [None] * len(rs)) if all(v for v in ratio) else None
        theory = [theory_value(r, metric) for r in rs]
        series.append({"series": format_value(sv), "x": xs, "y": ys,
                       "interval": [r.interval(metric) for r in rs], "ids": [r.id for r in rs],
                       "fit": None if fit is None else fit.to_dict(), "ratio": ratio,
                       "ratio_fit": None if rfit is None else rfit.to_dict(),
                       "theory": theory if all(t is not None for t in theory) else None,
                       "exact": all(r.theory_exact for r in rs)})
    out = {"metric": metric, "x_key": spec["x"], "series_key": spec["series"], "series": series}
    with_theory = next((s for s in series if s["theory"] is not None), None)
    if with_theory is not None:
        by_id = {r.id: r for r in records}
        rs = [by_id[i] for i in with_theory["ids"]]
        tr = [theory_value(r, f"erf_trf_ratio_{a}") for r in rs]
        fit = _fit(with_theory["x"], tr, [None] * len(tr)) if all(tr) else None
        out["theory_ratio_exponent"] = None if fit is None else fit.exponent
    return out


def _comparisons(spec, records) -> dict:
    """Each category of ``x`` against the first one, within each series."""
    metric = spec["metric"]
    cats = _groups(records, spec["x"])
    rows = []
    for sv in _groups(records, spec["series"]) if spec["series"] else [None]:
        rs = [r for r in records if not spec["series"] or _same(r.value(spec["series"]), sv)]
        by_cat = {repr(c): r for c in cats for r in rs if _same(r.value(spec["x"]), c)}
        base = by_cat.get(repr(cats[0]))
        for c in cats:
            r = by_cat.get(repr(c))
            if r is None:
                continue
            row = {"series": None if sv is None else format_value(sv), "category": format_value(c), "id": r.id,
                   "value": r.metrics.get(metric), "interval": r.interval(metric),
                   "trf": None if r.trf is None else list(r.trf)}
            if base is not None and r is not base:
                rc = _ratio_ci(r.metrics[metric], r.interval(metric), base.metrics[metric], base.interval(metric))
                row.update(baseline=format_value(cats[0]), ratio=None if rc is None else rc[0],
                           ratio_interval=None if rc is None else rc[1])
            rows.append(row)
    return {"metric": metric, "x_key": spec["x"], "series_key": spec["series"], "rows": rows}


def _training(spec, records) -> dict:
    metric = spec["metric"]
    rows = []
    for pid in dict.fromkeys(r.point.id for r in records):
        rs = sorted([r for r in records if r.point.id == pid and r.step is not None], key=lambda r: r.step)
        if len(rs) < 2:
            continue
        first, last = rs[0], rs[-1]
        changes = {}
        for name in first.metrics:
            rc = _ratio_ci(last.metrics[name], last.interval(name), first.metrics[name], first.interval(name))
            if rc is not None:
                changes[name] = {"init": first.metrics[name], "init_interval": first.interval(name),
                                 "final": last.metrics[name], "final_interval": last.interval(name),
                                 "ratio": rc[0], "ratio_interval": rc[1]}
        rows.append({"point": pid, "label": first.point.label, "steps": [r.step for r in rs],
                     "values": [r.metrics.get(metric) for r in rs], "intervals": [r.interval(metric) for r in rs],
                     "changes": changes, "train": last.train})
    return {"metric": metric, "rows": rows}


# --------------------------------------------------------------------------- findings


def findings(cfg: Config, records, analyses) -> list[str]:
    """Plain-language statements of what the numbers show (each with its numbers)."""
    out = []
    exact = [t for t in analyses["theory"] if t["exact"] and t["axis"] == "x"]
    if exact:
        worst = max(exact, key=lambda t: abs(t["relative_difference"] or 0))
        out.append(f"Uniform (constant 1/fan_in) weights, linear: the measured σ equals the exact linear-chain "
                   f"prediction at all {len(exact)} points; largest relative difference "
                   f"{abs(worst['relative_difference']):.1e} ({worst['label']}: measured {_fmt(worst['measured_sigma'], 4)} "
                   f"px vs exact {_fmt(worst['theory_sigma'], 4)} px).")
    rand = [t for t in analyses["theory"] if not t["exact"] and t["axis"] == "x" and t["measured_sigma"]]
    if rand:
        ratios = sorted((t["measured_sigma"] / t["theory_sigma"], t["label"]) for t in rand)
        (lo, lo_label), (hi, hi_label) = ratios[0], ratios[-1]
        out.append(f"Random weights (with or without non-linearity): measured σ / uniform-weight theory σ ranges from "
                   f"{lo:.2f} ({lo_label}) to {hi:.2f} ({hi_label}). For |grad| of deep random linear nets √2 ≈ 1.41 "
                   f"is expected: the gradient at a pixel is a sum over many paths, so it is Gaussian with a variance "
                   f"shaped like the uniform-weight ERF, and the mean of |g| is the square root of that shape.")
    for fa in analyses["figures"]:
        if fa["kind"] == "growth":
            out += _growth_findings(fa)
        elif fa["kind"] == "bars":
            out += _bar_findings(fa)
        elif fa["kind"] == "training":
            out += _training_findings(fa)
    compared = any(f["kind"] in ("bars", "training") for f in analyses["figures"])
    if compared and all(r.point.settings["measure"]["weight_draws"] == 0 for r in records):
        out.append("Each network here is one draw of weights (the one built or trained): the intervals cover the "
                   "random probe inputs, not the spread between networks initialised with other seeds, so small "
                   "differences between networks may not carry over to other draws.")
    fits = [(r.summary["gaussian"]["r2"], r.label) for r in records
            if (r.summary.get("gaussian") or {}).get("ok") and r.summary["gaussian"].get("r2") is not None]
    if fits:
        lo, hi = min(fits), max(fits)
        out.append(f"Shape: a 2-D Gaussian fits the maps with R² from {lo[0]:.3f} ({lo[1]}) to {hi[0]:.3f} "
                   f"({hi[1]}); median {float(np.median([f[0] for f in fits])):.3f}.")
    out += _global_findings(records)
    clipped = [r.label for r in records if r.clipped]
    if clipped:
        out.append(f"The TRF reaches past the input at {len(clipped)} of {len(records)} maps "
                   f"(e.g. {clipped[0]}): there the ERF is cut by the image border and ERF/TRF uses the full TRF.")
    return out


def _global_findings(records) -> list[str]:
    """Units whose TRF is the whole input (after attention, global pooling): how concentrated the ERF still is."""
    rows = []
    for r in records:
        box, shape = r.trf_box, np.shape(r.map)
        if ("mass_radius_0.9" not in r.metrics or box is None or len(box) != len(shape)
                or any(b is None or b[0] > 0 or b[1] < n - 1 for b, n in zip(box, shape))):
            continue
        lo, hi = (r.intervals.get("mass_radius_0.9") or (None, None))[:2]
        rows.append(f"{r.label}: {_fmt(r.metrics['mass_radius_0.9'])} px" + (f" [{_fmt(lo)}, {_fmt(hi)}]" if lo is not None else ""))
    if not rows:
        return []
    return [f"TRF = the whole input, ERF far smaller: at {len(rows)} map(s) the unit's TRF covers the entire "
            f"{'x'.join(map(str, np.shape(records[0].map)))} input, yet 90% of the ERF mass lies in a disc around its "
            "centre of mass of radius (mass_radius_0.9) " + "; ".join(rows) + "."]


def _growth_findings(fa) -> list[str]:
    out = []
    m = fa["metric"]
    for s in fa["series"]:
        f = s["fit"]
        if f is None:
            continue
        b, (lo, hi) = f["exponent"], f["exponent_ci"]
        ci = f"95% CI [{_fmt(lo)}, {_fmt(hi)}]" if lo is not None else "no CI (2 points)"
        inside = lo is not None and lo - 1e-6 <= 0.5 <= hi + 1e-6
        near = 0.45 <= b <= 0.60
        verdict = ("consistent with Luo et al.'s √n law (0.5 inside the CI, estimate within 0.45–0.60)" if inside and near
                   else "0.5 is inside the CI but the estimate is outside 0.45–0.60: too imprecise to confirm √n"
                   if inside else "close to √n (within 0.45–0.60), though the CI excludes 0.5" if near
                   else "NOT consistent with the √n law")
        line = (f"{s['series']}: {m} grows as {_show(fa['x_key'], '')[:-1]}^{_fmt(b)} ({ci}, R² {_fmt(f['r2'], 4)}) "
                f"from {_fmt(s['y'][0])} to {_fmt(s['y'][-1])} px — {verdict}")
        rf = s["ratio_fit"]
        if rf is not None:
            line += (f"; ERF/TRF falls from {_fmt(s['ratio'][0])} to {_fmt(s['ratio'][-1])}, as "
                     f"{_show(fa['x_key'], '')[:-1]}^{_fmt(rf['exponent'])} (1/√n is −0.5"
                     + (f"; the exact uniform-weight theory gives {_fmt(fa['theory_ratio_exponent'])} over the same "
                        "depths, because the TRF is 2n+1 rather than 2n" if fa.get("theory_ratio_exponent") else "")
                     + ")")
        out.append(line + ".")
    return out


def _bar_findings(fa) -> list[str]:
    out = []
    m = fa["metric"]
    for row in fa["rows"]:
        if row.get("ratio") is None:
            continue
        r, ci = row["ratio"], row["ratio_interval"]
        where = f" ({row['series']})" if row["series"] else ""
        sig = ""
        if ci is not None:
            sig = (" — larger (the interval excludes 1)" if ci[0] > 1 else " — smaller (the interval excludes 1)"
                   if ci[1] < 1 else " — no difference distinguishable at this sample size")
        out.append(f"{row['category']}{where}: {m} = {_fmt(row['value'])}{_ci(row['interval'])}, "
                   f"{_fmt(r)}× {row['baseline']} (approx. 95% CI{_ci(ci) or ' –'}){sig}.")
    return out


def _training_findings(fa) -> list[str]:
    out = []
    m = fa["metric"]
    for row in fa["rows"]:
        c = row["changes"].get(m)
        if c is None:
            continue
        pct = (c["ratio"] - 1) * 100
        ci = c["ratio_interval"]
        sig = ""
        if ci is not None:
            sig = (" — an increase (the interval excludes 1)" if ci[0] > 1 else
                   " — a decrease (the interval excludes 1)" if ci[1] < 1 else " — no change distinguishable from noise")
        others = [f"{name} {(v['ratio'] - 1) * 100:+.0f}%" for name, v in row["changes"].items()
                  if name != m and _axis(name) != "y"]
        out.append(f"{row['label']}: training changed {m} from {_fmt(c['init'])}{_ci(c['init_interval'])} to "
                   f"{_fmt(c['final'])}{_ci(c['final_interval'])}, {pct:+.0f}% (ratio {_fmt(c['ratio'])}, approx. 95% "
                   f"CI{_ci(ci) or ' –'}){sig}." + (f" Other metrics: {', '.join(others)}." if others else "")
                   + _train_note(row.get("train")))
    return out


def _train_note(info) -> str:
    """' (held-out accuracy 0.25 -> 0.91, loss ...)' from a record's training info."""
    ev = (info or {}).get("eval") or []
    if len(ev) < 2:
        return ""
    a, b = ev[0], ev[-1]
    if a.get("accuracy") is not None and b.get("accuracy") is not None:
        return f" Held-out accuracy went from {_fmt(a['accuracy'])} to {_fmt(b['accuracy'])} (loss {_fmt(a['loss'])} → {_fmt(b['loss'])})."
    return f" Held-out loss went from {_fmt(a['loss'])} to {_fmt(b['loss'])}."


# --------------------------------------------------------------------------- figures


def draw_figure(cfg: Config, spec: dict, records, analyses, out_dir: Path, env) -> list[dict]:
    """Draw one [[figures]] entry; return [{file, caption}] of the PNGs written."""
    kind = spec["kind"]
    title = spec["title"] or (cfg.settings["experiment"]["title"] or cfg.name)
    sub = setup_line(cfg, records, env)
    if kind == "maps":
        return _maps(spec, records, out_dir, title, sub)
    fig_a = next((f for f in analyses["figures"] if f["file"] == spec["file"]), None)
    draw = {"grid": _grid, "growth": _growth_fig, "bars": _bars, "profiles": _profiles, "training": _training_fig}[kind]
    fig, caption = draw(spec, records, fig_a, title, sub)
    fig.savefig(out_dir / spec["file"], dpi=DPI)
    return [{"file": spec["file"], "caption": caption}]


def _window(records):
    """The union of the records' clipped TRF boxes (plus a margin), per axis; None without boxes."""
    boxes = [r.trf_box for r in records if r.trf_box is not None]
    if not boxes:
        return None
    shape = records[0].map.shape
    lo = [max(0, min(b[a][0] for b in boxes) - 2) for a in range(2)]
    hi = [min(shape[a] - 1, max(b[a][1] for b in boxes) + 2) for a in range(2)]
    return lo, hi


def _draw_box(ax, r):
    if r.trf_box is None:
        return
    (t, b), (left, right) = r.trf_box
    ax.add_patch(Rectangle((left - 0.5, t - 0.5), right - left + 1, b - t + 1, fill=False, edgecolor="white",
                           linewidth=1.1, linestyle="--" if r.clipped else "-"))


def _grid(spec, records, _fa, title, sub):
    rows = _groups(records, spec["rows"]) if spec["rows"] else [None]
    cols = _groups(records, spec["cols"]) if spec["cols"] else None
    cells = {}
    for i, rv in enumerate(rows):
        rs = [r for r in records if rv is None or _same(r.value(spec["rows"]), rv)]
        if cols is None:
            for j, r in enumerate(rs):
                cells[i, j] = r
        else:
            for j, cv in enumerate(cols):
                match = [r for r in rs if _same(r.value(spec["cols"]), cv)]
                if match:
                    cells[i, j] = match[0]
    ncols = max(j for _, j in cells) + 1
    nrows = len(rows)
    fig = _new_figure((2.6 * ncols + 1.2, 2.5 * nrows + 0.9))
    axes = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False))
    win = _window(list(cells.values()))
    scale = spec["scale"]
    shown = {k: (r.map / r.map.max() if scale == "peak" else r.map) for k, r in cells.items()}

    def norm_for(vals):
        hi = max(float(v.max()) for v in vals)
        if spec["log"]:
            return LogNorm(vmin=hi * 1e-3, vmax=hi, clip=True)
        return Normalize(vmin=0, vmax=hi)

    shared = norm_for(list(shown.values())) if scale in ("peak", "shared") else None
    im = None
    for i in range(nrows):
        row_norm = shared or norm_for([shown[k] for k in shown if k[0] == i])
        row_im = None
        for j in range(ncols):
            ax = axes[i, j]
            r = cells.get((i, j))
            if r is None:
                ax.set_axis_off()
                continue
            m = shown[i, j]
            h, w = m.shape
            row_im = im = ax.imshow(np.maximum(m, 1e-300) if spec["log"] else m, cmap="viridis", norm=row_norm,
                                    interpolation="nearest", extent=(-0.5, w - 0.5, h - 0.5, -0.5))
            _draw_box(ax, r)
            if win is not None:
                ax.set_xlim(win[0][1] - 0.5, win[1][1] + 0.5)
                ax.set_ylim(win[1][0] + 0.5, win[0][0] - 0.5)
            ax.xaxis.set_major_locator(MaxNLocator(5, integer=True))
            ax.yaxis.set_major_locator(MaxNLocator(5, integer=True))
            a = _axis_stats(r)
            head = _show(spec["cols"], r.value(spec["cols"])) if spec["cols"] else r.point.label
            ax.set_title(f"{head}\n{a}", fontsize=8)
            ax.tick_params(labelsize=7)
            if j == 0:
                label = _show(spec["rows"], rows[i]) if spec["rows"] else ""
                ax.set_ylabel(f"{label}\ny (input px)", fontsize=8)
            if i == nrows - 1:
                ax.set_xlabel("x (input px)", fontsize=8)
        if scale == "row" and row_im is not None:
            fig.colorbar(row_im, ax=list(axes[i]), shrink=0.8, label="ERF (shared per row)")
    how = {"peak": "each map divided by its own peak (compare shapes, not magnitudes)",
           "shared": "one colour scale for all maps", "row": "one colour scale per row"}[scale]
    if scale != "row" and im is not None:
        fig.colorbar(im, ax=list(axes.ravel()), shrink=min(0.8, 2.0 / nrows) if nrows > 2 else 0.8,
                     label="fraction of the map's peak" if scale == "peak" else "ERF (mean |∂unit/∂input|)")
    _suptitle(fig, f"{title}\n{sub}\ncolour: {how}; white box: TRF of the centre unit (dashed: cut by the image)",
                 fontsize=9)
    caption = f"ERF maps, rows: {_name(spec['rows'])}" + (f", columns: {_name(spec['cols'])}" if spec["cols"] else "") \
        + f"; colour: {how}; white box = TRF."
    return fig, caption


def _axis_stats(r) -> str:
    sx = r.summary.get("sigma_x")
    ratio = r.summary.get("erf_trf_ratio_x")
    trf = "" if r.trf is None else f", TRF {r.trf[-1]}"
    return f"σx={_fmt(sx)} px{trf}" + ("" if ratio is None else f", ERF/TRF={_fmt(ratio, 2)}")


def _log_ticks(ax, xs) -> None:
    """Log axes labelled with plain numbers: x at the measured values, y by a plain formatter."""
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    ax.xaxis.set_major_locator(FixedLocator(sorted(set(xs))))
    ax.xaxis.set_minor_locator(NullLocator())
    for axis in (ax.xaxis, ax.yaxis):
        fmt = ScalarFormatter()
        fmt.set_scientific(False)
        axis.set_major_formatter(fmt)
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.tick_params(axis="y", which="minor", labelsize=7)


def _growth_fig(spec, records, fa, title, sub):
    metric = fa["metric"]
    fig = _new_figure((12, 4.8) if spec["ratio"] else (6.5, 4.8))
    axes = fig.subplots(1, 2 if spec["ratio"] else 1, squeeze=False).ravel()
    ax = axes[0]
    xs_all = sorted({x for s in fa["series"] for x in s["x"]})
    fine = np.geomspace(min(xs_all), max(xs_all), 100)
    theory_done = False
    for k, s in enumerate(fa["series"]):
        color = f"C{k % 10}"
        x, y = np.array(s["x"]), np.array(s["y"])
        ci = s["interval"]
        err = None
        if all(c is not None for c in ci):
            err = np.vstack([y - [c[0] for c in ci], [c[1] for c in ci] - y]).clip(min=0)
        f = s["fit"]
        label = s["series"] or "measured"
        if f is not None:
            lo, hi = f["exponent_ci"]
            cis = f" [{lo:.2f}, {hi:.2f}]" if lo is not None else ""
            label += f": fit ∝ n^{f['exponent']:.3f}{cis}"
            ax.plot(fine, f["prefactor"] * fine ** f["exponent"], color=color, linewidth=1, alpha=0.8)
        ax.errorbar(x, y, yerr=err, fmt="o", color=color, capsize=3, markersize=4, label=label)
        if spec["theory"] and s["theory"] is not None and not theory_done:
            tx = np.array(s["x"])
            ty = np.array(s["theory"])
            ax.plot(tx, ty, "k--", linewidth=1.3, label="exact linear theory (uniform weights)")
            ax.plot(tx, ty * math.sqrt(2), "k:", linewidth=1.3, label="√2 × theory (|grad|, random linear)")
            theory_done = True
    ax.set_xscale("log")
    ax.set_yscale("log")
    _log_ticks(ax, xs_all)
    ax.set_xlabel(f"{_name(fa['x_key'])} n (log)")
    ax.set_ylabel(f"{metric} (px, log)" if not metric.startswith("erf_trf") else metric)
    ax.set_title(f"{metric} vs {_name(fa['x_key'])}: fitted exponent [95% CI]", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    if spec["ratio"]:
        ax2 = axes[1]
        first = None
        for k, s in enumerate(fa["series"]):
            if not all(s["ratio"]):
                continue
            rf = s["ratio_fit"]
            lab = (s["series"] or "measured") + (f": ∝ n^{rf['exponent']:.2f}" if rf else "")
            ax2.plot(s["x"], s["ratio"], "o-", color=f"C{k % 10}", markersize=4, label=lab)
            first = first or (s["x"][0], s["ratio"][0])
        if first is not None:
            ax2.plot(fine, first[1] * np.sqrt(first[0] / fine), "k--", linewidth=1.2, label="∝ 1/√n reference")
        ax2.set_xscale("log")
        ax2.set_yscale("log")
        _log_ticks(ax2, xs_all)
        ax2.set_xlabel(f"{_name(fa['x_key'])} n (log)")
        ax2.set_ylabel("ERF/TRF = 2σ / TRF (log)")
        ax2.set_title("ERF/TRF falls as the net gets deeper", fontsize=9)
        ax2.grid(alpha=0.3, which="both")
        ax2.legend(fontsize=7)
    _suptitle(fig, f"{title}\n{sub}; error bars: bootstrap 95% intervals", fontsize=9)
    return fig, f"{metric} against {_name(fa['x_key'])} on log-log axes with fitted power laws" + \
        (", the exact linear theory" if spec["theory"] else "") + (" and ERF/TRF with the 1/√n line" if spec["ratio"] else "") + "."


def _bars(spec, records, fa, title, sub):
    metric = fa["metric"]
    cats = []
    for row in fa["rows"]:
        if row["category"] not in cats:
            cats.append(row["category"])
    series = list(dict.fromkeys(row["series"] for row in fa["rows"]))
    fig = _new_figure((max(6.0, 1.3 * len(cats) * max(1, len(series)) + 2), 4.6))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(series))
    show_trf = metric.startswith(("erf_size", "sigma"))
    top = max((r["value"] for r in fa["rows"] if r["value"] is not None), default=1.0)
    for k, sv in enumerate(series):
        rows = [r for r in fa["rows"] if r["series"] == sv]
        xs = np.array([cats.index(r["category"]) for r in rows]) + (k - (len(series) - 1) / 2) * width
        ys = np.array([r["value"] for r in rows])
        err = None
        if all(r["interval"] is not None for r in rows):
            err = np.vstack([ys - [r["interval"][0] for r in rows], [r["interval"][1] for r in rows] - ys]).clip(min=0)
        ax.bar(xs, ys, width * 0.9, yerr=err, capsize=3, color=f"C{k % 10}", label=sv or metric)
        for x, y, r in zip(xs, ys, rows):
            ax.text(x, y, f"{y:.2f}", ha="center", va="bottom", fontsize=7)
            if show_trf and r["trf"]:
                t = r["trf"][-1] if metric.startswith("erf_size") else r["trf"][-1] / 2
                if t <= 3 * top:
                    ax.plot([x - width * 0.45, x + width * 0.45], [t, t], color="black", linewidth=1.5)
                else:
                    ax.text(x, y * 1.08 + 0.02 * top, f"TRF {r['trf'][-1]} px\n(off scale)", ha="center",
                            va="bottom", fontsize=7)
    if show_trf:
        ax.plot([], [], color="black", linewidth=1.5, label="TRF" if metric.startswith("erf_size") else "TRF / 2")
    ax.set_xticks(range(len(cats)), cats, fontsize=8, rotation=10)
    ax.set_xlabel(_name(fa["x_key"]))
    ax.set_ylabel(f"{metric} (px)" if not metric.startswith("erf_trf") else metric)
    # beside the axes: inside, it would cover the bars' value and TRF labels
    ax.legend(fontsize=8, title=_name(fa["series_key"]) if fa["series_key"] else None, title_fontsize=8,
              loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(alpha=0.3, axis="y")
    _suptitle(fig, f"{title}\n{sub}; error bars: bootstrap 95% intervals", fontsize=9)
    return fig, f"{metric} per {_name(fa['x_key'])} with 95% intervals" + (" (black line: TRF)" if show_trf else "") + "."


def _profiles(spec, records, _fa, title, sub):
    panels = _groups(records, spec["cols"]) if spec["cols"] else [None]
    ncols = min(len(panels), 2)
    nrows = math.ceil(len(panels) / ncols)
    fig = _new_figure((6.2 * ncols, 4.2 * nrows + 0.5))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for extra in axes[len(panels):]:
        extra.set_axis_off()
    for ax, pv in zip(axes, panels):
        rs = [r for r in records if pv is None or _same(r.value(spec["cols"]), pv)]
        for k, r in enumerate(rs):
            color = f"C{k % 10}"
            cy = r.summary["center_unit"][0] if r.trf_box is None else int(round(sum(r.trf_box[0]) / 2))
            cx = r.summary["center_unit"][1] if r.trf_box is None else sum(r.trf_box[1]) / 2
            prof = r.map[cy] / r.map[cy].max()
            x = np.arange(prof.size) - cx
            keep = prof > 1e-4
            lab = _show(spec["series"], r.value(spec["series"])) if spec["series"] else r.label
            ax.plot(x[keep], prof[keep], "o", color=color, markersize=2.5)
            f = stats.fit_gaussian_1d(prof[keep], x[keep])
            span = float(np.ptp(x[keep])) if keep.any() else 0.0
            if f.ok and f.sigma < span / 2 and f.r2 > 0.5:
                fine = np.linspace(x[keep].min(), x[keep].max(), 300)
                ax.plot(fine, f.evaluate(fine), color=color, linewidth=1.2,
                        label=f"{lab}: fit σ={f.sigma:.2f}, R²={f.r2:.2f}")
            else:
                ax.plot(x[keep], prof[keep], color=color, linewidth=0.8, linestyle="--",
                        label=f"{lab}: not Gaussian (no fit)")
            if r.trf_box is not None:
                for v in r.trf_box[1]:
                    ax.axvline(v - cx, color=color, linestyle=":", linewidth=1)
        ax.set_xlabel("x − centre (input px); dotted: TRF edges")
        ax.set_ylabel("ERF row through the centre / its peak")
        ax.set_title(_show(spec["cols"], pv) if pv is not None else "centre-row profiles", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _suptitle(fig, f"{title}\n{sub}; dots: measured, lines: 1-D Gaussian fits", fontsize=9)
    return fig, "Centre-row profiles of the ERF (normalised to their peak) with 1-D Gaussian fits; dotted lines: TRF."


def _training_fig(spec, records, fa, title, sub):
    metric = fa["metric"]
    has_curve = any((row.get("train") or {}).get("train_loss") for row in fa["rows"])
    fig = _new_figure((11.5, 4.6) if has_curve else (6.5, 4.6))
    axes = fig.subplots(1, 2 if has_curve else 1, squeeze=False).ravel()
    ax = axes[0]
    for k, row in enumerate(fa["rows"]):
        color = f"C{k % 10}"
        steps, vals, cis = row["steps"], np.array(row["values"], float), row["intervals"]
        ax.plot(steps, vals, "o-", color=color, label=row["label"])
        if all(c is not None for c in cis):
            ax.fill_between(steps, [c[0] for c in cis], [c[1] for c in cis], color=color, alpha=0.2)
        trf = next((r.trf for r in records if r.point.id == row["point"] and r.trf), None)
        if trf and metric.startswith("erf_size"):
            ax.axhline(trf[-1], color=color, linestyle=":", linewidth=1)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"{metric} (px)" if not metric.startswith("erf_trf") else metric)
    ax.set_title(f"{metric} through training (band: 95% interval" +
                 (", dotted: TRF)" if metric.startswith("erf_size") else ")"), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if has_curve:
        ax2 = axes[1]
        for k, row in enumerate(fa["rows"]):
            info = row.get("train") or {}
            loss = np.asarray(info.get("train_loss") or [], float)
            if loss.size:
                w = max(1, loss.size // 50)
                smooth = np.convolve(loss, np.ones(w) / w, mode="valid")
                ax2.plot(np.arange(smooth.size) + w, smooth, color=f"C{k % 10}", label=f"{row['label']}: train loss")
            ev = [e for e in info.get("eval") or [] if e.get("loss") is not None]
            if ev:
                ax2.plot([e["step"] for e in ev], [e["loss"] for e in ev], "s--", color=f"C{k % 10}", markersize=4,
                         label="held-out loss" + (f" (accuracy {ev[0]['accuracy']:.2f} → {ev[-1]['accuracy']:.2f})"
                                                  if ev[-1].get("accuracy") is not None else ""))
        ax2.set_xlabel("training step")
        ax2.set_ylabel("loss")
        ys = np.concatenate([np.asarray(line.get_ydata(), float) for line in ax2.get_lines()] or [np.ones(1)])
        ys = ys[np.isfinite(ys)]
        if ys.size and ys.min() > 0 and ys.max() / ys.min() > 10:
            ax2.set_yscale("log")
        ax2.set_title("training progress", fontsize=9)
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=7)
    _suptitle(fig, f"{title}\n{sub}", fontsize=9)
    return fig, f"{metric} at initialisation, at the checkpoints and after training, with 95% intervals."


def _maps(spec, records, out_dir: Path, title, sub) -> list[dict]:
    from erf.plots import plot_erf

    folder = out_dir / spec["file"]
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for r in records:
        name = f"{spec['file']}/{r.id}.png"
        fit = r.summary.get("gaussian") or False
        fig = plot_erf(r.map, trf_box=r.trf_box, trf=r.trf, fit=fit if fit and fit.get("ok") else False,
                       scale="log" if spec["log"] else "linear", title=f"{title}: {r.label}\n{sub}")
        fig.savefig(out_dir / name, dpi=DPI)
        out.append({"file": name, "caption": f"ERF of {r.label}: heatmap with TRF box and Gaussian fit; "
                                             "centre profiles with 1-D fits."})
    return out


# --------------------------------------------------------------------------- report.md


def markdown(cfg: Config, records, analyses, notes, figures, env, seconds) -> str:
    """report.md: setup, findings in plain words, figures, and a table of the key numbers."""
    exp = cfg.settings["experiment"]
    lines = [f"# {exp['title'] or cfg.name}", ""]
    if exp["description"]:
        lines += [exp["description"].strip(), ""]
    v = env["versions"]
    lines += ["## Setup", "",
              f"- Config: `{cfg.path}`" + (" run with `--quick` (reduced samples and sizes; not the full settings)"
                                            if cfg.quick else " (full settings)"),
              f"- Device: {env['device']} — {env['device_name']}; {len(records)} maps from {len(cfg.points)} sweep "
              f"points in {seconds:.0f} s",
              f"- Seed {exp['seed']}, dtype {exp['dtype']}; erf {v['erf']}, torch {v['torch']}, numpy {v['numpy']}, "
              f"python {v['python']}",
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
    if figures:
        lines += ["## Figures", ""]
        for f in figures:
            lines += [f"![{f['caption']}]({f['file']})", "", f"*{f['caption']}*", ""]
    lines += ["## Key numbers", "", *_table(cfg, records), ""]
    exact = [t for t in analyses["theory"] if t["axis"] == "x"]
    if exact:
        lines += ["## Measured σ against the exact linear theory", "",
                  "| point | measured σx [95% CI] | theory σx (uniform kernels) | measured / theory | theory exact here |",
                  "|---|---|---|---|---|"]
        for t in exact:
            lines.append(f"| {t['label']} | {_fmt(t['measured_sigma'], 4)}{_ci(t['interval'])} | "
                         f"{_fmt(t['theory_sigma'], 4)} | {_fmt(t['measured_sigma'] / t['theory_sigma'], 4)} | "
                         f"{'yes' if t['exact'] else 'no'} |")
        lines.append("")
    lines += ["Files: `summary.json` (settings, versions, every metric with its interval), `sweep.csv` (one row "
              "per map), " + ("`maps.npz` (every map, not committed), " if cfg.settings["report"]["save_maps"] else "")
              + "the PNG figures" + (", `weights/` (trained state_dicts)" if base["train"]["enabled"]
                                     and base["train"]["save_weights"] else "") + ".", ""]
    return "\n".join(lines)


def _interval_text(records) -> str:
    m = records[0].point.settings["measure"]
    draws = any(r.point.settings["measure"]["weight_draws"] > 1 for r in records)
    over = "whole weight draws (input-sample groups where there is one draw)" if draws else "groups of input samples"
    return f"{m['level']:.0%} bootstrap ({m['n_boot']} replicates) over {over}"


def _args(args: dict) -> str:
    return ", ".join(f"{k}={format_value(v)}" for k, v in args.items()) or "its defaults"


def _table(cfg, records) -> list[str]:
    metrics = cfg.settings["report"]["metrics"]
    shown = [m for m in metrics if _axis(m) != "y"] or metrics
    head = ["map", "TRF"] + shown
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        trf = "–" if r.trf is None else "x".join(map(str, r.trf))
        vals = [f"{_fmt(r.metrics.get(m))}{_ci(r.interval(m))}" for m in shown]
        out.append("| " + " | ".join([r.label, trf] + vals) + " |")
    if len(shown) < len(metrics):
        out += ["", "The y-axis metrics are in `sweep.csv` and `summary.json`."]
    return out


def _suptitle(fig, text: str, fontsize: float = 9) -> None:
    """A figure title whose lines are wrapped to the figure's width (a long line would be cut at the edges)."""
    import textwrap

    width = max(30, int(fig.get_figwidth() * 72 / (fontsize * 0.6)))
    lines = [wrapped for line in text.split("\n") for wrapped in textwrap.wrap(line, width) or [""]]
    fig.suptitle("\n".join(lines), fontsize=fontsize)
