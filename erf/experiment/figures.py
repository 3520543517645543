"""The report's figures: one PNG per ``[[figures]]`` entry (``maps``: one per record).

``draw_figure`` draws one entry: ``grid`` (heatmaps, rows x cols), ``growth`` (log-log metric
against a swept number, with the power-law fits of ``analysis``), ``bars`` (a metric with
intervals per category), ``profiles`` (centre-row profiles with 1-D Gaussian fits), ``maps``
(``erf.plots.plot_erf`` per record) and ``training`` (a metric through training).
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator, ScalarFormatter

from erf import stats
from erf.experiment.formatting import fmt, key_name, setup_line, title_of
from erf.experiment.records import Record, distinct_values, same_value
from erf.experiment.sweeps import Config, show_value
from erf.plots import new_figure, plot_erf

DPI = 110


def draw_figure(cfg: Config, spec: dict, records: list[Record], analyses: dict, out_dir: Path,
                env: dict) -> list[dict]:
    """Draw one [[figures]] entry into ``out_dir``.

    Args:
        cfg: the experiment (titles).
        spec: the figure's table (``cfg.figures`` entry).
        records: the measured records.
        analyses: ``analysis.analyse`` of the records (growth fits, comparisons, training).
        out_dir: the results folder.
        env: ``runner.environment`` of the run.

    Returns:
        ``[{file, caption}]`` of the PNGs written.
    """
    kind = spec["kind"]
    title = spec["title"] or title_of(cfg)
    sub = setup_line(cfg, records, env)
    if kind == "maps":
        return _maps(spec, records, out_dir, title, sub)
    fig_a = next((f for f in analyses["figures"] if f["file"] == spec["file"]), None)
    draw = {"grid": _grid, "growth": _growth_fig, "bars": _bars, "profiles": _profiles, "training": _training_fig}[kind]
    fig, caption = draw(spec, records, fig_a, title, sub)
    fig.savefig(out_dir / spec["file"], dpi=DPI)
    out = [{"file": spec["file"], "caption": caption}]
    if kind == "grid" and not spec["log"]:
        out += network_maps(records, out_dir, title, sub, spec["file"].rsplit(".", 1)[0] + "_networks.png")
    return out


def disagree(r: Record) -> bool:
    """Whether the networks of a record disagree: one network's share of the mass or its size stands out.

    Args:
        r: a record.

    Returns:
        True with several networks when one holds over max(0.5, 2/N) of the summed mass, or when the
        networks' erf_size_x (sigma_x) spans more than 20% of their median.
    """
    if r.networks is None or r.networks.count < 2:
        return False
    if r.diagnostics.get("max_network_share", 0) > max(0.5, 2.0 / r.networks.count):
        return True
    name = next((m for m in ("erf_size_x", "sigma_x") if m in r.metrics), None)
    vals = [n.get(name) for n in r.network_metrics] if name else []
    vals = [v for v in vals if v is not None and np.isfinite(v)]
    return len(vals) > 1 and (max(vals) - min(vals)) > 0.2 * float(np.median(vals))


def network_maps(records: list[Record], out_dir: Path, title: str, sub: str, file: str) -> list[dict]:
    """One row per record whose networks disagree (``disagree``): each network's map, its share and size.

    Args:
        records: the measured records.
        out_dir: the results folder.
        title: the figure's title.
        sub: the setup line.
        file: the PNG's name.

    Returns:
        ``[{file, caption}]``, empty when every record's networks agree.
    """
    rows = [r for r in records if disagree(r)]
    if not rows:
        return []
    ncols = max(r.networks.count for r in rows)
    # rows tall enough for two title lines and tick labels (2.3 in overlapped them with 8 networks per row)
    fig = new_figure((2.3 * ncols + 1, 2.8 * len(rows) + 1.4), DPI)
    axes = np.atleast_2d(fig.subplots(len(rows), ncols, squeeze=False))
    win = _window(rows)
    for i, r in enumerate(rows):
        shares = r.networks.shares()
        for j in range(ncols):
            ax = axes[i, j]
            if j >= r.networks.count or r.networks.maps[j].ndim != 2:
                ax.set_axis_off()
                continue
            m = r.networks.maps[j]
            h, w = m.shape
            ax.imshow(m / max(float(m.max()), 1e-300), cmap="viridis", vmin=0, vmax=1, interpolation="nearest",
                      extent=(-0.5, w - 0.5, h - 0.5, -0.5))
            _draw_box(ax, r)
            if win is not None:
                ax.set_xlim(win[0][1] - 0.5, win[1][1] + 0.5)
                ax.set_ylim(win[1][0] + 0.5, win[0][0] - 0.5)
            size = (r.network_metrics[j] if j < len(r.network_metrics) else {}).get("erf_size_x")
            ax.set_title(f"network {j}: {shares[j]:.0%} of mass" + (f"\nerf_size_x {size:.2f}" if size else ""),
                         fontsize=7)
            ax.tick_params(labelsize=6)
            if j == 0:
                ax.set_ylabel(r.label, fontsize=7)
    _suptitle(fig, f"{title}\n{sub}\nper-network maps where the networks disagree (each / its own peak)", fontsize=9)
    fig.savefig(out_dir / file, dpi=DPI)
    return [{"file": file, "caption": "Each network's map where the networks of a point disagree (one network's "
                                      "share of the gradient mass, or its size, stands out); each map divided by "
                                      "its own peak."}]


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
    if r.trf_center is not None and len(r.trf_center) == 2:  # the unit's TRF centre (may lie off a clipped box's)
        ax.plot([r.trf_center[1]], [r.trf_center[0]], "+", color="white", markersize=7, markeredgewidth=1.2)
    if r.trf_box is None:
        return
    (t, b), (left, right) = r.trf_box
    ax.add_patch(Rectangle((left - 0.5, t - 0.5), right - left + 1, b - t + 1, fill=False, edgecolor="white",
                           linewidth=1.1, linestyle="--" if r.clipped else "-"))


def _grid(spec, records, _fa, title, sub):
    rows = distinct_values(records, spec["rows"]) if spec["rows"] else [None]
    cols = distinct_values(records, spec["cols"]) if spec["cols"] else None
    cells = {}
    for i, rv in enumerate(rows):
        rs = [r for r in records if rv is None or same_value(r.value(spec["rows"]), rv)]
        if cols is None:
            for j, r in enumerate(rs):
                cells[i, j] = r
        else:
            for j, cv in enumerate(cols):
                match = [r for r in rs if same_value(r.value(spec["cols"]), cv)]
                if match:
                    cells[i, j] = match[0]
    ncols = max(j for _, j in cells) + 1
    nrows = len(rows)
    # room for each panel's two-line title above it and a four-line figure title: nothing overlaps
    fig = new_figure((2.6 * ncols + 1.2, 3.1 * nrows + 1.3), DPI)
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
            head = show_value(spec["cols"], r.value(spec["cols"])) if spec["cols"] else r.point.label
            ax.set_title(f"{head}\n{a}", fontsize=8)
            ax.tick_params(labelsize=7)
            if j == 0:
                label = show_value(spec["rows"], rows[i]) if spec["rows"] else ""
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
    _suptitle(fig, f"{title}\n{sub}\ncolour: {how}; white box: TRF of the centre unit (dashed: cut by the image); "
                   "r0.5: radius holding half the mass, σx: moment σ",
                 fontsize=9)
    caption = f"ERF maps, rows: {key_name(spec['rows'])}" \
        + (f", columns: {key_name(spec['cols'])}" if spec["cols"] else "") + f"; colour: {how}; white box = TRF."
    return fig, caption


def _axis_stats(r) -> str:
    """'mass radius 0.5 = .. px, σx = .. px' and 'TRF .., ERF/TRF = ..': the robust size first."""
    sx = r.summary.get("sigma_x")
    mr = r.metrics.get("mass_radius_0.5", r.summary.get("mass_radius_0.5"))
    ratio = r.summary.get("erf_trf_ratio_x")
    trf = "" if r.trf is None else f"TRF {r.trf[-1]}"
    sat = " (saturated)" if r.saturation and r.saturation.get("saturated") else ""
    tail = ", ".join(t for t in (trf, "" if ratio is None else f"ERF/TRF={fmt(ratio, 2)}") if t)
    return f"r0.5={fmt(mr)} px, σx={fmt(sx)} px" + (f"\n{tail}{sat}" if tail or sat else "")


def _log_ticks(ax: Axes, xs) -> None:
    """Log axes labelled with plain numbers: x at the measured values, y by a plain formatter."""
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
    fig = new_figure((12, 4.8) if spec["ratio"] else (6.5, 4.8), DPI)
    axes = fig.subplots(1, 2 if spec["ratio"] else 1, squeeze=False).ravel()
    ax = axes[0]
    xs_all = sorted({x for s in fa["series"] for x in s["x"]})
    fine = np.geomspace(min(xs_all), max(xs_all), 100)
    theory_done = abs_done = False
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
            ax.plot(tx, np.array(s["theory"]), "k--", linewidth=1.3,
                    label=f"exact: uniform kernels ∝ n^{s['theory_exponent']:.4f}" if s["theory_exponent"]
                    else "exact: uniform kernels")
            theory_done = True
        if spec["theory"] and s.get("abs_theory") is not None and not abs_done:
            ax.plot(np.array(s["x"]), np.array(s["abs_theory"]), "k:", linewidth=1.5,
                    label=f"exact: mean |grad|, random linear ∝ n^{s['abs_theory_exponent']:.4f}")
            abs_done = True
    ax.set_xscale("log")
    ax.set_yscale("log")
    _log_ticks(ax, xs_all)
    ax.set_xlabel(f"{key_name(fa['x_key'])} n (log)")
    ax.set_ylabel(f"{metric} (px, log)" if not metric.startswith("erf_trf") else metric)
    ax.set_title(f"{metric} vs {key_name(fa['x_key'])}: fitted exponent [95% CI]", fontsize=9)
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
        ax2.set_xlabel(f"{key_name(fa['x_key'])} n (log)")
        ax2.set_ylabel("ERF/TRF = 2σ / TRF (log)")
        ax2.set_title("ERF/TRF falls as the net gets deeper", fontsize=9)
        ax2.grid(alpha=0.3, which="both")
        ax2.legend(fontsize=7)
    _suptitle(fig, f"{title}\n{sub}; error bars: 95% intervals over networks (or weight draws)", fontsize=9)
    return fig, f"{metric} against {key_name(fa['x_key'])} on log-log axes with fitted power laws" + \
        (", the exact linear theory" if spec["theory"] else "") + (" and ERF/TRF with the 1/√n line" if spec["ratio"] else "") + "."


def _bars(spec, records, fa, title, sub):
    metric = fa["metric"]
    cats = []
    for row in fa["rows"]:
        if row["category"] not in cats:
            cats.append(row["category"])
    series = list(dict.fromkeys(row["series"] for row in fa["rows"]))
    # the series present in each category side by side (series = x gives one bar per category, full width)
    slots = {c: [sv for sv in series if any(r["series"] == sv and r["category"] == c for r in fa["rows"])]
             for c in cats}
    per_cat = max([len(v) for v in slots.values()] + [1])
    fig = new_figure((min(15.0, max(6.0, 1.1 * len(cats) * per_cat + 2)), 4.6), DPI)
    ax = fig.add_subplot()
    width = 0.8 / per_cat
    show_trf = metric.startswith(("erf_size", "sigma"))
    by_id = {r.id: r for r in records}
    top = max([r["value"] for r in fa["rows"] if r["value"] is not None]
              + [r["interval"][1] for r in fa["rows"] if r["interval"] is not None], default=1.0)
    drawn = set()
    off_scale = False
    for k, sv in enumerate(series):
        rows = [r for r in fa["rows"] if r["series"] == sv]
        xs = np.array([cats.index(r["category"]) + (slots[r["category"]].index(sv)
                                                     - (len(slots[r["category"]]) - 1) / 2) * width for r in rows])
        ys = np.array([r["value"] for r in rows])
        err = None
        if all(r["interval"] is not None for r in rows):
            err = np.vstack([ys - [r["interval"][0] for r in rows], [r["interval"][1] for r in rows] - ys]).clip(min=0)
        ax.bar(xs, ys, width * 0.9, yerr=err, capsize=3, color=f"C{k % 10}", label=sv or metric)
        for x, y, r in zip(xs, ys, rows):
            ax.text(x + width * 0.47, y, f"{y:.2f}", ha="left", va="bottom", fontsize=7)  # beside the error bar
            half = width * 0.45
            for value, style, lab in _ceilings(r, by_id.get(r["id"]), metric):
                ax.plot([x - half, x + half], [value, value], color="0.35", linestyle=style, linewidth=1.4,
                        label=None if lab in drawn else lab)
                drawn.add(lab)
            if show_trf and r["trf"]:
                t = r["trf"][-1] if metric.startswith("erf_size") else r["trf"][-1] / 2
                if t <= 3 * top:
                    ax.plot([x - half, x + half], [t, t], color="black", linewidth=1.5)
                else:  # at the top edge, above every error bar (the axis leaves room for it)
                    off_scale = True
                    ax.annotate(f"TRF {r['trf'][-1]} px ↑", xy=(x, 0.99), xycoords=("data", "axes fraction"),
                                ha="center", va="top", fontsize=7)
    if show_trf:
        ax.plot([], [], color="black", linewidth=1.5, label="TRF" if metric.startswith("erf_size") else "TRF / 2")
    lines_top = max([float(np.max(line.get_ydata())) for line in ax.get_lines() if len(line.get_ydata())]
                    + [top], default=top)
    ax.set_ylim(0, lines_top * (1.25 if off_scale else 1.1))
    ax.set_xticks(range(len(cats)), cats, fontsize=8, rotation=10)
    ax.set_xlabel(key_name(fa["x_key"]))
    ax.set_ylabel(f"{metric} (px)" if not metric.startswith("erf_trf") else metric)
    # beside the axes: inside, it would cover the bars' value and TRF labels
    ax.legend(fontsize=8, title=key_name(fa["series_key"]) if fa["series_key"] else None, title_fontsize=8,
              loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(alpha=0.3, axis="y")
    _suptitle(fig, f"{title}\n{sub}; error bars: 95% intervals over networks", fontsize=9)
    return fig, (f"{metric} per {key_name(fa['x_key'])} with 95% intervals over networks"
                 + (" (black line: TRF)" if show_trf else "")
                 + "; grey dashed: the same metric for a uniform map over the bar's TRF box, grey dotted: over the "
                 "whole image (an ERF at these lines fills its TRF or the image: no verdict on size there).")


def _ceilings(row: dict, r: Record | None, metric: str) -> list[tuple[float, str, str]]:
    """The uniform-map values of ``metric`` a bar cannot exceed: over its TRF box and over the whole image."""
    out = []
    sat = row.get("saturation") or {}
    u = (sat.get("uniform") or {}).get(metric)
    if u:
        out.append((float(u), "--", "uniform map over the TRF box (cut to the image)"))
    if r is not None and r.map.ndim == 2 and metric.startswith(("erf_size", "sigma", "mass_radius")):
        try:
            img = stats.scalar_metrics(stats.uniform_map(r.map.shape), [metric])[metric]
        except Exception:  # noqa: BLE001 - a metric a uniform map has no value of draws no ceiling
            img = None
        if img and (not u or abs(img - u) > 1e-9 * img):
            out.append((float(img), ":", "uniform map over the image"))
    return out


def _profiles(spec, records, _fa, title, sub):
    panels = distinct_values(records, spec["cols"]) if spec["cols"] else [None]
    ncols = min(len(panels), 2)
    nrows = math.ceil(len(panels) / ncols)
    fig = new_figure((6.2 * ncols, 4.2 * nrows + 0.5), DPI)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for extra in axes[len(panels):]:
        extra.set_axis_off()
    for ax, pv in zip(axes, panels):
        rs = [r for r in records if pv is None or same_value(r.value(spec["cols"]), pv)]
        for k, r in enumerate(rs):
            color = f"C{k % 10}"
            if r.trf_center is not None and len(r.trf_center) == 2:  # the unit's TRF centre, not the clipped box's
                cy, cx = int(round(min(max(r.trf_center[0], 0), r.map.shape[0] - 1))), r.trf_center[1]
            else:
                cy = r.summary["center_unit"][0] if r.trf_box is None else int(round(sum(r.trf_box[0]) / 2))
                cx = r.summary["center_unit"][1] if r.trf_box is None else sum(r.trf_box[1]) / 2
            prof = r.map[cy] / r.map[cy].max()
            x = np.arange(prof.size) - cx
            keep = prof > 1e-4
            lab = show_value(spec["series"], r.value(spec["series"])) if spec["series"] else r.label
            ax.plot(x[keep], prof[keep], "o", color=color, markersize=2.5)
            f = stats.fit_gaussian_1d(prof[keep], x[keep])
            span = float(np.ptp(x[keep])) if keep.any() else 0.0
            if f.ok and f.sigma < span / 2 and f.r2 > 0.5:
                fine = np.linspace(x[keep].min(), x[keep].max(), 300)
                ax.plot(fine, f.evaluate(fine), color=color, linewidth=1.2,
                        label=f"{lab}: ERF σx {fmt(r.summary.get('sigma_x'), 2)} px (moments); "
                              f"row fit σ={f.sigma:.2f}, R²={f.r2:.2f}")
            else:
                ax.plot(x[keep], prof[keep], color=color, linewidth=0.8, linestyle="--",
                        label=f"{lab}: ERF σx {fmt(r.summary.get('sigma_x'), 2)} px (moments); row not Gaussian "
                              "(no fit)")
            if r.trf_box is not None:
                for v in r.trf_box[1]:
                    ax.axvline(v - cx, color=color, linestyle=":", linewidth=1)
        ax.set_xlabel("x − centre (input px); dotted: TRF edges")
        ax.set_ylabel("ERF row through the centre / its peak")
        ax.set_title(show_value(spec["cols"], pv) if pv is not None else "centre-row profiles", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _suptitle(fig, f"{title}\n{sub}; dots: measured centre row, lines: Gaussians (baseline ≥ 0) fitted to that row; "
                   "σx (moments) is the whole map's size", fontsize=9)
    return fig, "Centre-row profiles of the ERF (normalised to their peak) with 1-D Gaussian fits; dotted lines: TRF."


def _training_fig(spec, records, fa, title, sub):
    metric = fa["metric"]
    has_curve = any((row.get("train") or {}).get("train_loss") for row in fa["rows"])
    fig = new_figure((11.5, 4.6) if has_curve else (6.5, 4.6), DPI)
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
            _loss_curves(ax2, row, f"C{k % 10}")
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


def _loss_curves(ax, row: dict, color: str) -> None:
    """Training and held-out loss of a row's networks: the mean over networks with a band over their range.

    The legend gives the held-out accuracy as the mean over networks with its range (not network 0's).
    """
    info = row.get("train") or {}
    infos = info.get("networks") or [info]
    n = len(infos)
    of = f", mean of {n} (band: range)" if n > 1 else ""
    losses = [np.asarray(i.get("train_loss") or [], float) for i in infos]
    if not all(x.size for x in losses):  # older summaries kept network 0's curve only
        losses = [np.asarray(info.get("train_loss") or [], float)]
        of = ", network 0" if n > 1 else ""
    size = min((x.size for x in losses), default=0)
    if size:
        w = max(1, size // 50)
        smooth = np.stack([np.convolve(x[:size], np.ones(w) / w, mode="valid") for x in losses])
        steps = np.arange(smooth.shape[1]) + w
        ax.plot(steps, smooth.mean(0), color=color, label=f"{row['label']}: train loss{of}")
        if len(smooth) > 1:
            ax.fill_between(steps, smooth.min(0), smooth.max(0), color=color, alpha=0.15, linewidth=0)
    evs = [[e for e in i.get("eval") or [] if e.get("loss") is not None] for i in infos]
    evs = [e for e in evs if e]
    if not evs:
        return
    k = min(len(e) for e in evs)
    steps = [e["step"] for e in evs[0][:k]]
    loss = np.array([[e["loss"] for e in ev[:k]] for ev in evs])
    ax.plot(steps, loss.mean(0), "s--", color=color, markersize=4, label="held-out loss" + _accuracy_text(evs))
    if len(evs) > 1:
        ax.fill_between(steps, loss.min(0), loss.max(0), color=color, alpha=0.1, linewidth=0)


def _accuracy_text(evs: list[list[dict]]) -> str:
    """' (accuracy 0.25 → 0.40, range 0.27–0.52, 4 networks)': mean over networks and the range at the end."""
    if not all(ev[0].get("accuracy") is not None and ev[-1].get("accuracy") is not None for ev in evs):
        return ""
    a = [ev[0]["accuracy"] for ev in evs]
    b = [ev[-1]["accuracy"] for ev in evs]
    if len(evs) == 1:
        return f" (accuracy {a[0]:.2f} → {b[0]:.2f})"
    return f" (accuracy, mean of {len(evs)}: {np.mean(a):.2f} → {np.mean(b):.2f}, range {min(b):.2f}–{max(b):.2f})"


def _maps(spec, records, out_dir: Path, title, sub) -> list[dict]:
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


def _suptitle(fig: Figure, text: str, fontsize: float = 9) -> None:
    """A figure title whose lines are wrapped to the figure's width (a long line would be cut at the edges)."""
    width = max(30, int(fig.get_figwidth() * 72 / (fontsize * 0.6)))
    lines = [wrapped for line in text.split("\n") for wrapped in textwrap.wrap(line, width) or [""]]
    fig.suptitle("\n".join(lines), fontsize=fontsize)
