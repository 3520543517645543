"""What the numbers show: one plain-language statement per finding, each with its numbers.

Every comparison carries an interval over networks (hierarchical bootstrap: networks, then the
inputs within them) or says that it rests on one network and draws no verdict. Clipped and
global TRFs are compared with a uniform map over the visible region, never called "smaller"
without it; exact theories (the uniform-kernel chain and the mean |grad| of random linear nets)
are compared as predictions, not as deviations from the deep-limit √n; shape is described by
the marginal excess kurtosis, not by the R² of a Gaussian fit.
"""

from __future__ import annotations

import numpy as np

from erf.engine.diagnostics import sample_limit
from erf.experiment.formatting import fmt, fmt_ci, metric_axis
from erf.experiment.records import ROBUST, Record, small_n_interval
from erf.experiment.sweeps import Config, show_value



def findings(cfg: Config, records: list[Record], analyses: dict) -> list[str]:
    """Plain-language statements of what the numbers show (each with its numbers).

    Args:
        cfg: the experiment.
        records: the measured records.
        analyses: ``analysis.analyse(cfg, records)``.

    Returns:
        One sentence (or a few) per finding.
    """
    out = _theory_findings(analyses["theory"])
    led: set = set()  # bar comparisons whose robust sizes were given already (one lead per comparison)
    for fa in analyses["figures"]:
        if fa["kind"] == "growth":
            out += _growth_findings(fa)
        elif fa["kind"] == "bars":
            out += _bar_findings(fa, led)
        elif fa["kind"] == "training":
            out += _training_findings(fa)
    out += _saturation_findings(records)
    out += _network_findings(records)
    out += _tail_findings(records)
    out += _shape_findings(records)
    out += _border_findings(records)
    return out


def _theory_findings(theory: list[dict]) -> list[str]:
    out = []
    exact = [t for t in theory if t["exact"] and t["axis"] == "x"]
    if exact:
        worst = max(exact, key=lambda t: abs(t["relative_difference"] or 0))
        out.append(f"Uniform (constant 1/fan_in) weights, linear: the measured σ equals the exact uniform-kernel "
                   f"prediction at all {len(exact)} points; largest relative difference "
                   f"{abs(worst['relative_difference']):.1e} ({worst['label']}: measured "
                   f"{fmt(worst['measured_sigma'], 4)} px vs exact {fmt(worst['theory_sigma'], 4)} px).")
    ab = [t for t in theory if t["axis"] == "x" and t["theory_abs_sigma"] and t["measured_sigma"]]
    if ab:
        inside = [t for t in ab if t["interval"] and t["interval"][0] <= t["theory_abs_sigma"] <= t["interval"][1]]
        worst = max(ab, key=lambda t: abs(t["abs_relative_difference"]))
        out.append(f"Random zero-mean weights, linear: the exact mean-|grad| prediction (the square root of the "
                   f"uniform-kernel map, normalised) gives σ within {abs(worst['abs_relative_difference']):.1%} of "
                   f"the measurement at all {len(ab)} points (largest at {worst['label']}: measured "
                   f"{fmt(worst['measured_sigma'], 4)}{fmt_ci(worst['interval'])} px over {worst['networks']} weight "
                   f"draws vs {fmt(worst['theory_abs_sigma'], 4)} px); the prediction lies inside the interval at "
                   f"{len(inside)} of {len(ab)}.")
    rand = [t for t in theory if not t["exact"] and not t["theory_abs_sigma"] and t["axis"] == "x"
            and t["measured_sigma"]]
    if rand:
        parts = [f"{t['label']} {fmt(t['measured_sigma'] / t['theory_sigma'])}"
                 + (fmt_ci(tuple(v / t['theory_sigma'] for v in t['interval'])) if t['interval'] else "")
                 for t in rand]
        out.append("Random weights with a non-linearity (no exact theory): measured σ as a multiple of the "
                   "uniform-kernel σ [95% interval over weight draws]: " + "; ".join(parts) + ".")
    return out


def _verdict(ci, target: float, word_in: str, word_out: str) -> str:
    if ci is None or ci[0] is None:
        return ""
    return word_in if ci[0] - 1e-9 <= target <= ci[1] + 1e-9 else word_out


def _growth_findings(fa) -> list[str]:
    out = []
    m = fa["metric"]
    x = show_value(fa["x_key"], "")[:-1]
    for s in fa["series"]:
        f = s["fit"]
        if f is None:
            continue
        b, ci = f["exponent"], f["exponent_ci"]
        ci_txt = ("deterministic weights: no sampling interval" if s["exact"] else
                  f"95% CI [{fmt(ci[0])}, {fmt(ci[1])}] over {f['units']} weight draws/networks"
                  if ci[0] is not None else "one network: no interval")
        line = f"{s['series']}: {m} grows as {x}^{fmt(b)} ({ci_txt}) from {fmt(s['y'][0])} to {fmt(s['y'][-1])} px"
        if s["exact"] and s["theory_exponent"] is not None:
            line += f"; the exact uniform-kernel chain gives {x}^{fmt(s['theory_exponent'], 4)} over the same range"
        elif s["abs_theory_exponent"] is not None:
            t = s["abs_theory_exponent"]
            line += (f"; the exact mean-|grad| theory of random linear nets predicts {x}^{fmt(t, 4)} over the same "
                     "range" + _verdict(ci, t, " (inside the interval)", " (outside the interval)"))
        elif s["theory_exponent"] is not None:
            line += (f"; for reference the uniform-kernel chain gives {fmt(s['theory_exponent'], 4)} over this range "
                     "(no exact theory for this non-linear case; √n is only the deep limit)")
        rf = s["ratio_fit"]
        if rf is not None:
            line += f"; ERF/TRF goes from {fmt(s['ratio'][0])} to {fmt(s['ratio'][-1])} (∝ {x}^{fmt(rf['exponent'])})"
        out.append(line + ".")
    if fa.get("theory_ratio_exponent") is not None:
        out.append(f"ERF/TRF of the exact uniform-kernel chain falls as {x}^{fmt(fa['theory_ratio_exponent'])} over "
                   "these depths (not −0.5: the TRF is 2n+1, not 2n).")
    return out


def _ref_text(row) -> str:
    ref = row.get("reference")
    if not ref:
        return ""
    return f" (a uniform map over the visible TRF gives {fmt(ref)}: {fmt(row['value'] / ref)} of it)"


def _bar_findings(fa, led: set | None = None) -> list[str]:
    out = []
    m = fa["metric"]
    for row in fa["rows"]:
        if row.get("ratio") is None:
            continue
        where = f" ({row['series']})" if row["series"] else ""
        key = (row["category"], row["series"], row.get("baseline"))
        lead = "" if led is not None and key in led else _robust_bar_text(row, where, m)
        if led is not None and lead:
            led.add(key)
        head = lead + (f"{row['category']}{where}: {m} = {fmt(row['value'])}{fmt_ci(row['interval'])}{_ref_text(row)}, "
                f"{fmt(row['ratio'])}× {row['baseline']}")
        if row.get("exact"):
            out.append(head + " — exact: deterministic uniform weights, both maps equal the exact theory.")
            continue
        if row["one_network"]:
            out.append(head + " — one network per arm: the interval would cover the probe inputs only, so no "
                       "verdict is drawn.")
            continue
        ci = row["ratio_interval"]
        design = "paired" if row["paired"] else "independent"
        bounded = row.get("reference") is not None
        base_bounded = row.get("baseline_reference") is not None
        sig = ""
        if ci is not None and not bounded and not base_bounded:
            sig = (" — larger (the interval excludes 1)" if ci[0] > 1 else " — smaller (the interval excludes 1)"
                   if ci[1] < 1 else " — no difference distinguishable over these networks")
        elif bounded:
            sig = " — the TRF is cut by the image here, so the ratio compares image-bounded maps"
        elif base_bounded:
            sig = (f" — {row['baseline']}'s TRF is cut by the image (its {m} is {fmt(row['baseline_vs_reference'])} of "
                   "a uniform map's over the visible TRF), so the ratio is against an image-bounded map")
        out.append(f"{head} (95% CI{fmt_ci(ci) or ' –'} over {row['networks']} {design} networks per arm"
                   f"{count_text(row.get('count'), row['baseline'])}){sig}{_count_caveat(row.get('count'), sig)}.")
    return out


def _count_caveat(count: dict | None, sig: str) -> str:
    """Where the interval excludes 1 but the count of networks cannot reach p < 0.05, say so."""
    if not count or "excludes 1" not in sig or count["p"] < 0.05:
        return ""
    return (f", but the count of networks alone does not reach p < 0.05 (p = {count['p']:.3f} with "
            f"{count['n']} {'networks' if count['test'] == 'sign' else 'pairs'}): more networks are needed to "
            "confirm the direction without the interval's normal approximation")


def count_text(count: dict | None, baseline: str = "") -> str:
    """'; 5 of 5 networks smaller, exact two-sided sign test p = 0.062' (or the cross-arm pairs), '' without one."""
    if not count or not count["n"]:
        return ""
    even = count["direction"] == "none"
    word = {"up": "larger", "down": "smaller", "none": "larger"}[count["direction"]]
    lead = "; no direction: " if even else "; "
    rest = ", the others smaller" if even else ""
    p = f"{count['p']:.2g}" if count["p"] < 0.01 else f"{count['p']:.3f}"
    if count["test"] == "sign":
        ties = f", {count['ties']} tied" if count["ties"] else ""
        return f"{lead}{count['k']} of {count['n']} networks {word}{rest}{ties}, exact two-sided sign test p = {p}"
    vs = f" than {baseline}'s" if baseline else ""
    return (f"{lead}{count['k']} of {count['n']} cross-arm pairs of networks {word}{vs}{rest}, exact two-sided "
            f"Mann-Whitney p = {p}")


def _training_findings(fa) -> list[str]:
    out = []
    m = fa["metric"]
    for row in fa["rows"]:
        c = row["changes"].get(m)
        if c is None:
            continue
        pct = (c["ratio"] - 1) * 100
        head = _robust_training_text(row, m) + (f"{row['label']}: {m} from {fmt(c['init'])}{fmt_ci(c['init_interval'])} at init to "
                f"{fmt(c['final'])}{fmt_ci(c['final_interval'])} after training, {pct:+.0f}%")
        note = _train_note(row.get("train"))
        if row.get("learned") is False:
            got, of = row.get("learned_count") or (None, row["networks"])
            who = ("The network did not learn" if row["networks"] < 2
                   else f"{of - got} of the {of} networks did not learn" if got is not None
                   else f"Not every one of the {row['networks']} networks learned")
            out.append(f"{head}.{note} {who} the task here (learning = held-out accuracy up by at least a tenth of "
                       "the way to 1), so this change is not read as a training effect and no conclusion about "
                       "training is drawn." + _probe_text(row, m))
            continue
        if row["networks"] < 2:
            out.append(f"{head} — one network: no interval over networks, no verdict.{note}")
            continue
        ci = c["ratio_interval"]
        sig = ""
        if ci is not None:
            sig = (" — an increase (the interval excludes 1)" if ci[0] > 1 else
                   " — a decrease (the interval excludes 1)" if ci[1] < 1 else
                   " — no change distinguishable over these networks")
        others = [f"{name} {(v['ratio'] - 1) * 100:+.0f}%{_pct_ci(v['ratio_interval'])}"
                  for name, v in row["changes"].items()
                  if name != m and metric_axis(name) != "y" and not name.startswith("kurtosis")]
        out.append(f"{head} (ratio {fmt(c['ratio'])}, 95% CI{fmt_ci(ci) or ' –'}, paired over {row['networks']} "
                   f"networks: each measured before and after its own training"
                   f"{count_text(c.get('count')).replace('larger', 'up').replace('smaller', 'down')}){sig}"
                   f"{_count_caveat(c.get('count'), sig)}."
                   + (f" Other metrics (paired 95% CI in %): {', '.join(others)}." if others else "") + note
                   + _probe_text(row, m))
    return out


def _robust_training_text(row: dict, m: str) -> str:
    """The robust sizes first: 'label: mass radius 0.5 a -> b px (+x% [..], k of n networks), 0.9 ...; ' ."""
    ch = row["changes"]
    parts = []
    for n in ROBUST:
        c = ch.get(n)
        if c is None or n == m:
            continue
        parts.append(f"{n.replace('_', ' ')} {fmt(c['init'])} → {fmt(c['final'])} px "
                     f"({(c['ratio'] - 1) * 100:+.0f}%{_pct_ci(c['ratio_interval'])}"
                     f"{count_text(c.get('count')).replace('larger', 'up').replace('smaller', 'down')})")
    if not parts:
        return ""
    return f"{row['label']}: {', '.join(parts)}{_disagreement(ch, m)}. "


def _robust_bar_text(row: dict, where: str, m: str) -> str:
    """The robust sizes of a bar comparison first, with the saturation of the map."""
    rb = {**(row.get("robust") or {}), m: row}
    parts = []
    for n in ROBUST:
        c = rb.get(n) or {}
        if c.get("value") is None or c.get("ratio") is None:
            continue
        parts.append(f"{n.replace('_', ' ')} {fmt(c['value'])}{fmt_ci(c.get('interval'))} px, "
                     f"{fmt(c['ratio'])}× {row['baseline']} (95% CI{fmt_ci(c.get('ratio_interval')) or ' –'}"
                     f"{count_text(c.get('count'), row['baseline'])})")
    if not parts:
        return ""
    return (f"{row['category']}{where}: {'; '.join(parts)}{_disagreement(rb, m)}"
            f"{_saturation_clause(row.get('saturation'))}. ")


def _saturation_clause(sat: dict | None) -> str:
    if not sat or not sat.get("saturated"):
        return ""
    v = sat["vs_uniform"]
    return (f" — saturated: it fills its TRF (σx {fmt(v.get('sigma_x'))}, mass radius 0.5 "
            f"{fmt(v.get('mass_radius_0.5'))} of a uniform map over the TRF box)")


def _disagreement(changes: dict, m: str) -> str:
    """Where 2σ and the mass radii move differently, say so (2σ is carried by the tails or a diffuse floor)."""
    c2, c5, c9 = changes.get(m), changes.get("mass_radius_0.5"), changes.get("mass_radius_0.9")
    if not (c2 and c5 and c9) or m in ROBUST or None in (c2.get("ratio"), c5.get("ratio"), c9.get("ratio")):
        return ""
    logs = {k: float(np.log(c["ratio"])) for k, c in ((m, c2), ("mass_radius_0.5", c5), ("mass_radius_0.9", c9))}
    big = [v for v in logs.values() if abs(v) > 0.05]
    opposite = any(v > 0.05 for v in logs.values()) and any(v < -0.05 for v in logs.values())
    spread = len(big) >= 1 and max(abs(v) for v in logs.values()) > 2 * max(min(abs(v) for v in logs.values()), 0.025)
    if not (opposite or spread):
        return ""
    pcts = ", ".join(f"{k} {(np.exp(v) - 1) * 100:+.0f}%" for k, v in logs.items())
    return (f"; 2σ and the mass radii disagree ({pcts}): 2σ weighs the tails and a diffuse floor, the mass "
            "radius 0.5 the core, so the core and the tails moved differently")


def _saturation_findings(records: list[Record]) -> list[str]:
    rows = [r for r in records if r.saturation is not None]
    if not rows:
        return []
    sat = [r for r in rows if r.saturation["saturated"]]
    thr = rows[0].saturation["threshold"]

    def one(r):
        v = r.saturation["vs_uniform"]
        return (f"{r.label} σx {fmt(v.get('sigma_x'))}, mass radius 0.5 {fmt(v.get('mass_radius_0.5'))}, 0.9 "
                f"{fmt(v.get('mass_radius_0.9'))}")

    head = (f"Against a uniform map over each TRF box (cut to the image; 1 = the ERF fills its TRF), the ERF is "
            f"saturated (at least {thr:.0%} of the uniform map's σ or mass radius 0.5) at {len(sat)} of "
            f"{len(rows)} maps")
    if sat:
        head += ": " + "; ".join(one(r) for r in sat[:8]) + ("; …" if len(sat) > 8 else "") + \
            ". There a size or an ERF/TRF ratio says more about the TRF than about the network"
    rest = [r for r in rows if not r.saturation["saturated"]]
    if rest:
        fr = [r.saturation["vs_uniform"].get("mass_radius_0.5") for r in rest]
        fr = [f for f in fr if f is not None]
        if fr:
            head += (f"; elsewhere mass radius 0.5 is {fmt(min(fr))}–{fmt(max(fr))} of the uniform map's")
    return [head + "."]


def _probe_text(row: dict, m: str) -> str:
    """Where the probes are the task's images: the same change on the config's noise, and whether they differ."""
    nc = row.get("noise_changes")
    if row.get("probe") != "task" or not nc or m not in nc:
        return ""
    main, noise = row["changes"][m], nc[m]
    parts = []
    for n, v in nc.items():
        count = count_text(v.get("count")).replace("larger", "up").replace("smaller", "down").removeprefix("; ")
        parts.append(f"{n} {(v['ratio'] - 1) * 100:+.0f}%{_pct_ci(v['ratio_interval'])}"
                     + (f" ({count})" if count else ""))
    gap = (noise["ratio"] - main["ratio"]) * 100
    differ = abs(gap) >= 5 or (noise["ratio"] - 1) * (main["ratio"] - 1) < 0
    return (" Probes: the numbers above (and the verdict) use the task's held-out images, at init and after "
            "training (fresh BatchNorm calibrated on them at init); on the config's noise probes instead (inputs "
            "unlike the training data, at another scale, which the trained BatchNorm never saw): " + "; ".join(parts) + "."
            + (f" The probe moves the change by {gap:+.0f} percentage points: the noise-probe change mixes learning "
               "with the probe's mismatch to the training data." if differ else
               " The two probes agree within 5 percentage points."))


def _pct_ci(ci) -> str:
    """' [-15%, -2%]' from a ratio interval, '' without one."""
    return "" if ci is None else f" [{(ci[0] - 1) * 100:+.0f}%, {(ci[1] - 1) * 100:+.0f}%]"


def _train_note(info) -> str:
    """' Held-out accuracy 0.25 → 0.91 (mean over networks).' from a record's training info."""
    infos = (info or {}).get("networks") or ([info] if info else [])
    pairs = [(i["eval"][0], i["eval"][-1]) for i in infos if len(i.get("eval") or []) >= 2]
    if not pairs:
        return ""
    if all(a.get("accuracy") is not None and b.get("accuracy") is not None for a, b in pairs):
        a = [p[0]["accuracy"] for p in pairs]
        b = [p[1]["accuracy"] for p in pairs]
        rng = f" (range {fmt(min(b))}–{fmt(max(b))})" if len(b) > 1 else ""
        return (f" Held-out accuracy {fmt(float(np.mean(a)))} → {fmt(float(np.mean(b)))}{rng}"
                + (f", mean of {len(pairs)} networks." if len(pairs) > 1 else "."))
    a = [p[0]["loss"] for p in pairs]
    b = [p[1]["loss"] for p in pairs]
    return f" Held-out loss {fmt(float(np.mean(a)))} → {fmt(float(np.mean(b)))}."


def _network_findings(records: list[Record]) -> list[str]:
    rows = [r for r in records if len(r.network_metrics) > 1]
    if not rows:
        return []
    name = next((m for m in ("erf_size_x", "sigma_x") if m in rows[0].metrics), None)
    if name is None:
        return []
    parts = []
    for r in rows:
        vals = [n[name] for n in r.network_metrics if n.get(name) is not None]
        if vals:
            parts.append(f"{r.label} {fmt(min(vals))}–{fmt(max(vals))}")
    out = [f"Between independently seeded networks of the same arm, {name} ranges: " + "; ".join(parts)
           + ". These ranges, not the input sampling, set the width of the intervals above."]
    dom = [r for r in rows if r.diagnostics.get("max_network_share", 0) > max(0.5, 2.0 / r.networks.count)]
    if dom:
        out.append("One network dominates the summed gradient mass at " + "; ".join(
            f"{r.label} ({r.diagnostics['max_network_share']:.0%} of {r.networks.count})" for r in dom)
            + ": see the per-network maps.")
    return out


def _tail_findings(records: list[Record]) -> list[str]:
    """Samples above the engine's warning level ``sample_limit(n)`` (the same threshold as the engine's notes)."""
    rows = []
    for r in records:
        share, n = r.diagnostics.get("max_sample_share"), r.diagnostics.get("samples_weighed")
        if share is not None and n and share > sample_limit(int(n)):
            rows.append((r, share, int(n)))
    if not rows:
        return []
    return ["Heavy tails (the engine's level: one of n samples above max(min(0.5, 10/n), 5/n) of a network's "
            "gradient mass, 3.9% at n = 256): " + "; ".join(
                f"{r.label}: one sample holds {share:.1%} ({share * n:.0f}x its fair share 1/{n}, above "
                f"{sample_limit(n):.1%}), effective sample size {fmt(r.diagnostics.get('ess'))} of {n}"
                for r, share, n in rows)
            + ". The mean map leans on few inputs there: more samples, or normalize_samples, would steady it."]


def _shape_findings(records: list[Record]) -> list[str]:
    rows = [(r.metrics["kurtosis_x"], r.interval("kurtosis_x"), r) for r in records
            if np.isfinite(r.metrics.get("kurtosis_x", np.nan))]
    if not rows:
        return []
    rows.sort(key=lambda t: t[0])
    shown = rows if len(rows) <= 6 else [rows[0], rows[len(rows) // 2], rows[-1]]
    return ["Shape (marginal excess kurtosis along x: Gaussian 0, flat box −1.2, peaked or heavy-tailed > 0; "
            "95% interval over networks/draws): " + "; ".join(f"{r.label} {fmt(k)}{fmt_ci(ci)}" for k, ci, r in shown)
            + ". The R² of a 2-D Gaussian fit is kept in summary.json as a fit diagnostic only."
            + _zero_text(records)]


def _zero_text(records: list[Record]) -> str:
    z = [(r.diagnostics["zero_grad_fraction"], r.label) for r in records
         if r.diagnostics.get("zero_grad_fraction") is not None]
    if not z or max(v for v, _ in z) <= 0:
        return ""
    lo, hi = min(z), max(z)
    head = (" Per sample, the fraction of pixels inside the TRF with exactly zero gradient (taps a dilated or "
            "strided net cannot reach, ReLU gating, or values below the float range in the TRF's far corners; "
            "the largest over networks)")
    if lo[0] == hi[0]:
        return f"{head} is {fmt(hi[0])} for every map."
    return f"{head} ranges from {fmt(lo[0])} ({lo[1]}) to {fmt(hi[0])} ({hi[1]})."


def _border_findings(records: list[Record]) -> list[str]:
    rows = []
    for r in records:
        if r.reference is None:
            continue
        name = next((m for m in ("mass_radius_0.9", "sigma_x") if m in r.metrics and m in r.reference), None)
        if name is None or not r.reference[name]:
            continue
        ref = r.reference[name]
        jk = r.jackknife.get(name)
        ci = small_n_interval(r.metrics[name] / ref, None if jk is None else jk / ref,
                              r.point.settings["measure"]["level"], name)
        rows.append(f"{r.label}: {name} {fmt(r.metrics[name])} px = {fmt(r.metrics[name] / ref)}{fmt_ci(ci)} of "
                    f"the uniform map's {fmt(ref)} px")
    if not rows:
        return []
    return [f"The TRF is cut by the image (or is the whole image) at {len(rows)} of {len(records)} maps: there the "
            "metrics are bounded by the image, so each is given as a fraction of the same metric for a uniform map "
            "over the visible part of the TRF (1 = no concentration at all): " + "; ".join(rows) + "."]
