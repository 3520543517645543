"""Analyses of a run's records, and the findings that state them in plain words.

``analyse`` turns the records into numbers with intervals: measured against exact linear theory,
power-law fits of growth figures, ratios between categories of bar figures, changes through
training. ``findings`` says what they show, each statement with its numbers, for report.md
and summary.json.
"""

from __future__ import annotations

import math

import numpy as np

from erf import stats
from erf.experiment.formatting import fmt_ci, fmt, metric_axis
from erf.experiment.records import Record, distinct_values, same_value
from erf.experiment.sweeps import Config, format_value, show_value

Z95 = 1.959963984540054  # the normal quantile of a two-sided 95% interval


def theory_value(r: Record, metric: str) -> float | None:
    """The exact linear theory's value of ``metric`` at record ``r`` (sigma, erf_size, erf_trf_ratio).

    Args:
        r: a record.
        metric: a metric name with an axis, e.g. ``erf_size_x``.

    Returns:
        The value, or None where the record has no theory or the metric none.
    """
    a = metric_axis(metric)
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


def ratio_interval(a: float, ci_a: tuple[float, float] | None, b: float, ci_b: tuple[float, float] | None
                   ) -> tuple[float, tuple[float, float] | None] | None:
    """a / b with an approximate interval: log-normal errors from each interval, independent.

    Args:
        a: the numerator.
        ci_a: its interval, or None.
        b: the denominator.
        ci_b: its interval, or None.

    Returns:
        ``(a / b, interval or None)``, or None unless both are positive.
    """
    if not (a > 0 and b > 0):
        return None
    r = a / b
    if ci_a is None or ci_b is None or min(ci_a[0], ci_b[0]) <= 0:
        return r, None
    se = math.hypot(math.log(ci_a[1] / ci_a[0]), math.log(ci_b[1] / ci_b[0])) / (2 * Z95)
    return r, (r * math.exp(-Z95 * se), r * math.exp(Z95 * se))


# --------------------------------------------------------------------------- analyses


def analyse(cfg: Config, records: list[Record]) -> dict:
    """Numbers behind the findings: theory checks, growth fits, comparisons, training changes.

    Args:
        cfg: the experiment (its figures pick the analyses).
        records: the measured records.

    Returns:
        ``{"theory": [...], "figures": [...]}``, JSON-ready, as in summary.json.
    """
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
    for sv in distinct_values(records, spec["series"]):
        rs = [r for r in records if same_value(r.value(spec["series"]), sv)]
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
    a = metric_axis(metric) or "x"
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
    cats = distinct_values(records, spec["x"])
    rows = []
    for sv in distinct_values(records, spec["series"]) if spec["series"] else [None]:
        rs = [r for r in records if not spec["series"] or same_value(r.value(spec["series"]), sv)]
        by_cat = {repr(c): r for c in cats for r in rs if same_value(r.value(spec["x"]), c)}
        base = by_cat.get(repr(cats[0]))
        for c in cats:
            r = by_cat.get(repr(c))
            if r is None:
                continue
            row = {"series": None if sv is None else format_value(sv), "category": format_value(c), "id": r.id,
                   "value": r.metrics.get(metric), "interval": r.interval(metric),
                   "trf": None if r.trf is None else list(r.trf)}
            if base is not None and r is not base:
                rc = ratio_interval(r.metrics[metric], r.interval(metric), base.metrics[metric], base.interval(metric))
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
            rc = ratio_interval(last.metrics[name], last.interval(name), first.metrics[name], first.interval(name))
            if rc is not None:
                changes[name] = {"init": first.metrics[name], "init_interval": first.interval(name),
                                 "final": last.metrics[name], "final_interval": last.interval(name),
                                 "ratio": rc[0], "ratio_interval": rc[1]}
        rows.append({"point": pid, "label": first.point.label, "steps": [r.step for r in rs],
                     "values": [r.metrics.get(metric) for r in rs], "intervals": [r.interval(metric) for r in rs],
                     "changes": changes, "train": last.train})
    return {"metric": metric, "rows": rows}


# --------------------------------------------------------------------------- findings


def findings(cfg: Config, records: list[Record], analyses: dict) -> list[str]:
    """Plain-language statements of what the numbers show (each with its numbers).

    Args:
        cfg: the experiment.
        records: the measured records.
        analyses: ``analyse(cfg, records)``.

    Returns:
        One sentence (or a few) per finding.
    """
    out = []
    exact = [t for t in analyses["theory"] if t["exact"] and t["axis"] == "x"]
    if exact:
        worst = max(exact, key=lambda t: abs(t["relative_difference"] or 0))
        out.append(f"Uniform (constant 1/fan_in) weights, linear: the measured σ equals the exact linear-chain "
                   f"prediction at all {len(exact)} points; largest relative difference "
                   f"{abs(worst['relative_difference']):.1e} ({worst['label']}: measured "
                   f"{fmt(worst['measured_sigma'], 4)} px vs exact {fmt(worst['theory_sigma'], 4)} px).")
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
        rows.append(f"{r.label}: {fmt(r.metrics['mass_radius_0.9'])} px"
                    + (f" [{fmt(lo)}, {fmt(hi)}]" if lo is not None else ""))
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
        ci = f"95% CI [{fmt(lo)}, {fmt(hi)}]" if lo is not None else "no CI (2 points)"
        inside = lo is not None and lo - 1e-6 <= 0.5 <= hi + 1e-6
        near = 0.45 <= b <= 0.60
        verdict = ("consistent with Luo et al.'s √n law (0.5 inside the CI, estimate within 0.45–0.60)" if inside and near
                   else "0.5 is inside the CI but the estimate is outside 0.45–0.60: too imprecise to confirm √n"
                   if inside else "close to √n (within 0.45–0.60), though the CI excludes 0.5" if near
                   else "NOT consistent with the √n law")
        line = (f"{s['series']}: {m} grows as {show_value(fa['x_key'], '')[:-1]}^{fmt(b)} ({ci}, R² {fmt(f['r2'], 4)}) "
                f"from {fmt(s['y'][0])} to {fmt(s['y'][-1])} px — {verdict}")
        rf = s["ratio_fit"]
        if rf is not None:
            line += (f"; ERF/TRF falls from {fmt(s['ratio'][0])} to {fmt(s['ratio'][-1])}, as "
                     f"{show_value(fa['x_key'], '')[:-1]}^{fmt(rf['exponent'])} (1/√n is −0.5"
                     + (f"; the exact uniform-weight theory gives {fmt(fa['theory_ratio_exponent'])} over the same "
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
        out.append(f"{row['category']}{where}: {m} = {fmt(row['value'])}{fmt_ci(row['interval'])}, "
                   f"{fmt(r)}× {row['baseline']} (approx. 95% CI{fmt_ci(ci) or ' –'}){sig}.")
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
                  if name != m and metric_axis(name) != "y"]
        out.append(f"{row['label']}: training changed {m} from {fmt(c['init'])}{fmt_ci(c['init_interval'])} to "
                   f"{fmt(c['final'])}{fmt_ci(c['final_interval'])}, {pct:+.0f}% (ratio {fmt(c['ratio'])}, approx. 95% "
                   f"CI{fmt_ci(ci) or ' –'}){sig}." + (f" Other metrics: {', '.join(others)}." if others else "")
                   + _train_note(row.get("train")))
    return out


def _train_note(info) -> str:
    """' (held-out accuracy 0.25 -> 0.91, loss ...)' from a record's training info."""
    ev = (info or {}).get("eval") or []
    if len(ev) < 2:
        return ""
    a, b = ev[0], ev[-1]
    if a.get("accuracy") is not None and b.get("accuracy") is not None:
        return (f" Held-out accuracy went from {fmt(a['accuracy'])} to {fmt(b['accuracy'])} "
                f"(loss {fmt(a['loss'])} → {fmt(b['loss'])}).")
    return f" Held-out loss went from {fmt(a['loss'])} to {fmt(b['loss'])}."

