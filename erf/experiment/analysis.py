"""Analyses of a run's records, and the numbers behind the findings.

``analyse`` turns the records into numbers with intervals over networks: measured against the
exact linear theories, power-law fits of growth figures (exponent intervals from the bootstrap
replicates), ratios between categories of bar figures and changes through training (from the
joint bootstrap: paired for the same network before and after training). ``findings`` (in
``erf.experiment.findings``) says what they show.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as scipy_stats

from erf import stats
from erf.experiment.findings import findings  # noqa: F401 - re-exported: the words on these numbers
from erf.experiment.formatting import metric_axis
from erf.experiment.records import ROBUST, Record, distinct_values, same_value
from erf.experiment.sweeps import Config, format_value


def theory_value(r: Record, metric: str, kind: str = "uniform") -> float | None:
    """An exact linear theory's value of ``metric`` at record ``r`` (sigma, erf_size, erf_trf_ratio).

    Args:
        r: a record.
        metric: a metric name with an axis, e.g. ``erf_size_x``.
        kind: "uniform" (the uniform-kernel chain: constant weights) or "abs" (mean |grad| of random
            zero-mean linear weights: the square root of the uniform-kernel map).

    Returns:
        The value, or None where the record has no such theory or the metric none.
    """
    a = metric_axis(metric)
    sig = r.theory_sigma if kind == "uniform" else r.theory_abs_sigma
    if sig is None or a is None:
        return None
    axes = stats.axis_names(r.map.ndim)
    if a not in axes:
        return None
    s = sig[axes.index(a)]
    base = metric.rpartition("_")[0]
    if base == "sigma":
        return s
    if base == "erf_size":
        return 2 * s
    if base == "erf_trf_ratio" and r.trf is not None:
        return 2 * s / r.trf[axes.index(a)]
    return None


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
        for i, (a, s) in enumerate(zip(axes, r.theory_sigma)):
            name = f"sigma_{a}"
            measured = r.metrics.get(name, r.summary.get(name))
            ab = None if r.theory_abs_sigma is None else r.theory_abs_sigma[i]
            rows.append({"id": r.id, "label": r.label, "axis": a, "exact": r.theory_exact, "theory_sigma": s,
                         "theory_abs_sigma": ab, "measured_sigma": measured, "interval": r.interval(name),
                         "relative_difference": None if measured is None else measured / s - 1,
                         "abs_relative_difference": None if measured is None or ab is None else measured / ab - 1,
                         "networks": r.network_count})
    return rows


def _series_xy(spec, records):
    out = []
    for sv in distinct_values(records, spec["series"]):
        rs = [r for r in records if same_value(r.value(spec["series"]), sv)]
        rs.sort(key=lambda r: r.value(spec["x"]))
        out.append((sv, rs))
    return out


def _fit(xs, ys):
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    if len(set(xs.tolist())) < 2 or not np.all(ys > 0):
        return None
    try:
        return stats.fit_power_law(xs, ys)
    except Exception:  # noqa: BLE001 - a degenerate fit is reported as missing
        return None


def _exponent(xs, rs, metric, level) -> dict | None:
    """The log-log slope of ``metric`` over the records, with a bootstrap interval over networks/groups."""
    fit = _fit(xs, [r.metrics.get(metric) for r in rs])
    if fit is None:
        return None
    units = min(r.units for r in rs)
    reps = [r.boot.get(metric) for r in rs]
    ci = None
    if units >= 2 and all(b is not None for b in reps):
        ci = stats.power_law_interval(xs, [r.metrics[metric] for r in rs], np.stack(reps, axis=1), level,
                                      units).exponent_ci
        ci = ci if all(np.isfinite(ci)) else None
    out = fit.to_dict()
    out.update(exponent_ci=list(ci) if ci is not None else [None, None], ci_method="bootstrap over networks "
               "(weight draws), then inputs" if ci is not None else "none (one network)", units=units)
    return out


def _theory_exponent(xs, values) -> float | None:
    fit = _fit(xs, values) if all(v is not None for v in values) else None
    return None if fit is None else float(fit.exponent)


def _growth(spec, records) -> dict:
    metric = spec["metric"]
    a = metric_axis(metric) or "x"
    series = []
    for sv, rs in _series_xy(spec, records):
        level = rs[0].point.settings["measure"]["level"]
        xs = [float(r.value(spec["x"])) for r in rs]
        ys = [r.metrics[metric] for r in rs]
        fit = _exponent(xs, rs, metric, level)
        ratio = [r.summary.get(f"erf_trf_ratio_{a}") for r in rs]
        rfit = _fit(xs, ratio) if all(v for v in ratio) else None
        theory = [theory_value(r, metric) for r in rs]
        abs_theory = [theory_value(r, metric, "abs") for r in rs]
        series.append({"series": format_value(sv), "x": xs, "y": ys,
                       "interval": [r.interval(metric) for r in rs], "ids": [r.id for r in rs],
                       "fit": fit, "ratio": ratio, "ratio_fit": None if rfit is None else rfit.to_dict(),
                       "theory": theory if all(t is not None for t in theory) else None,
                       "theory_exponent": _theory_exponent(xs, theory),
                       "abs_theory": abs_theory if all(t is not None for t in abs_theory) else None,
                       "abs_theory_exponent": _theory_exponent(xs, abs_theory),
                       "exact": all(r.theory_exact for r in rs), "networks": min(r.network_count for r in rs)})
    out = {"metric": metric, "x_key": spec["x"], "series_key": spec["series"], "series": series}
    with_theory = next((s for s in series if s["theory"] is not None), None)
    if with_theory is not None:
        by_id = {r.id: r for r in records}
        rs = [by_id[i] for i in with_theory["ids"]]
        out["theory_ratio_exponent"] = _theory_exponent(with_theory["x"],
                                                        [theory_value(r, f"erf_trf_ratio_{a}") for r in rs])
    return out


def compare(a: Record, b: Record, metric: str) -> dict:
    """``a`` against ``b`` on ``metric``: the ratio, its small-n interval over networks, and k of n networks.

    Records of the same point (training states) and, with common seeds, of every point are paired
    network by network: the interval is the studentized leave-one-network-out jackknife of the ratio
    of the pooled maps (log scale, t with n - 1 degrees of freedom), and the count is how many networks
    moved the way the ratio did, with the exact two-sided sign-test p. Independent arms combine each
    arm's jackknife (Welch) and count the cross-arm pairs of networks (exact Mann-Whitney p). The
    hierarchical bootstrap's interval is kept beside it (``bootstrap_interval``). With one network on
    either side there is no interval and no verdict.

    Args:
        a: the numerator's record.
        b: the denominator's record.
        metric: a metric of both.

    Returns:
        ``{"ratio", "ratio_interval", "bootstrap_interval", "count", "paired", "networks", "one_network",
        "exact"}``; ``count`` is ``{"k", "n", "direction", "ties", "p", "test"}`` or None.
    """
    va, vb = a.metrics.get(metric), b.metrics.get(metric)
    paired = a.point.id == b.point.id or bool(a.point.settings["experiment"]["common_seeds"])
    nets = min(a.network_count, b.network_count)
    out = {"ratio": None, "ratio_interval": None, "bootstrap_interval": None, "count": None, "paired": paired,
           "networks": nets, "one_network": nets < 2, "exact": bool(a.theory_exact and b.theory_exact)}
    if va is None or vb is None or not (va > 0 and vb > 0):
        return out
    ratio = va / vb
    out["ratio"] = ratio
    if nets < 2:
        return out
    level = a.point.settings["measure"]["level"]
    if metric in a.boot and metric in b.boot:
        ci = stats.replicate_ratio_interval(a.boot[metric], b.boot[metric], level, min(a.units, b.units))
        out["bootstrap_interval"] = None if ci is None else list(ci)
    ja, jb = a.jackknife.get(metric), b.jackknife.get(metric)
    ua = [u.get(metric) for u in a.unit_metrics]
    ub = [u.get(metric) for u in b.unit_metrics]
    if ja is None or jb is None:
        return out
    with np.errstate(divide="ignore", invalid="ignore"):
        if paired and len(ja) == len(jb):
            lo, hi = stats.jackknife_interval(ratio, np.asarray(ja) / np.asarray(jb), level, log=True)
            live = [(x, y) for x, y in zip(ua, ub) if x is not None and y is not None]  # a dead network has None
            if len(ua) == len(ub) and live:
                out["count"] = {**stats.direction_count(np.asarray([x / y for x, y in live], float), 1.0),
                                "test": "sign"}
        else:
            lo, hi = stats.welch_interval(ratio, jb, ja, level)
            ua, ub = [x for x in ua if x is not None], [y for y in ub if y is not None]
            if ua and ub:
                out["count"] = _cross_count(ua, ub)
    out["ratio_interval"] = [float(lo), float(hi)] if np.isfinite(lo) and np.isfinite(hi) else None
    return out


def _cross_count(ua: list[float], ub: list[float]) -> dict:
    """Independent arms: how many of the n_a x n_b network pairs have a above b, with the exact Mann-Whitney p."""
    x, y = np.asarray(ua, float), np.asarray(ub, float)
    up = int(np.sum(x[:, None] > y[None, :]))
    down = int(np.sum(x[:, None] < y[None, :]))
    p = float(scipy_stats.mannwhitneyu(x, y, alternative="two-sided", method="exact").pvalue)
    return {"k": max(up, down), "n": up + down, "direction": "up" if up > down else "down" if down > up else "none",
            "ties": int(x.size * y.size - up - down), "p": p, "test": "mann-whitney"}


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
                   "trf": None if r.trf is None else list(r.trf), "networks": r.network_count,
                   "reference": None if r.reference is None else r.reference.get(metric),
                   "per_network": [n.get(metric) for n in r.network_metrics]}
            row["saturation"] = None if r.saturation is None else {
                "vs_uniform": r.saturation["vs_uniform"], "saturated": r.saturation["saturated"],
                "uniform": r.saturation["uniform"]}
            row["robust"] = {n: {"value": r.metrics.get(n), "interval": r.interval(n)} for n in ROBUST}
            if base is not None and r is not base:
                row.update(baseline=format_value(cats[0]), **compare(r, base, metric))
                for n in ROBUST:
                    row["robust"][n].update(compare(r, base, n))
                if base.reference is not None and base.reference.get(metric) and base.metrics.get(metric) is not None:
                    row["baseline_reference"] = base.reference[metric]
                    row["baseline_vs_reference"] = base.metrics[metric] / base.reference[metric]
            rows.append(row)
    return {"metric": metric, "x_key": spec["x"], "series_key": spec["series"], "rows": rows}


#: A network learned when its held-out accuracy rose by at least this share of the way to 1.
LEARNED_SHARE = 0.1


def learned(info: dict | None) -> bool | None:
    """Whether training improved the held-out score; None without evals.

    Accuracy must rise by at least a tenth of the way from its start to 1 (0.075 from chance on a
    4-class task: 0.25 -> 0.27 is not learning), or, without accuracy, the loss fall by 5%.

    Args:
        info: a record's training info (``Record.train``), with its ``networks``.

    Returns:
        True when every network learned, False when one did not, None without held-out evaluations.
    """
    verdicts = learned_each(info)
    return None if not verdicts else all(verdicts)


def learned_each(info: dict | None) -> list[bool]:
    """Whether each network of a record's training info learned (``learned``'s rule); [] without evals."""
    infos = (info or {}).get("networks") or ([info] if info else [])
    verdicts = []
    for i in infos:
        ev = i.get("eval") or []
        if len(ev) < 2:
            continue
        a, b = ev[0], ev[-1]
        if a.get("accuracy") is not None and b.get("accuracy") is not None:
            verdicts.append(b["accuracy"] >= a["accuracy"] + LEARNED_SHARE * (1 - a["accuracy"]))
        elif a.get("loss") is not None and b.get("loss") is not None:
            verdicts.append(b["loss"] < 0.95 * a["loss"])
    return verdicts


def _noise_changes(first: Record, last: Record, names: list[str]) -> dict | None:
    """The same changes measured on the config's noise probes (where the main ones use the task's images)."""
    if first.alt is None or last.alt is None:
        return None
    out = {}
    for name in dict.fromkeys(names):
        c = compare(last.alt, first.alt, name)
        if c["ratio"] is not None:
            out[name] = {"init": first.alt.metrics.get(name), "final": last.alt.metrics.get(name), **c}
    return out


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
            c = compare(last, first, name)
            if c["ratio"] is not None:
                changes[name] = {"init": first.metrics[name], "init_interval": first.interval(name),
                                 "final": last.metrics[name], "final_interval": last.interval(name), **c}
        rows.append({"point": pid, "label": first.point.label, "steps": [r.step for r in rs],
                     "values": [r.metrics.get(metric) for r in rs], "intervals": [r.interval(metric) for r in rs],
                     "changes": changes, "train": last.train, "learned": learned(last.train),
                     "learned_count": [sum(learned_each(last.train)), len(learned_each(last.train))],
                     "probe": first.probe,
                     "noise_changes": _noise_changes(first, last, [metric, *ROBUST]),
                     "networks": first.network_count})
    return {"metric": metric, "rows": rows}

