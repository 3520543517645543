"""Figures of ERF maps and of ERF growth laws.

Every function builds a ``matplotlib.figure.Figure`` with an Agg canvas (never
pyplot, so no global figure state leaks), returns it and writes a PNG when
``path`` is given.  Map axes are in input pixels (pixel ``i`` centred on ``i``);
sizes and ratios follow the definitions of ``erf.stats`` (ERF size = 2 sigma,
ERF/TRF = 2 sigma / trf).
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter
from matplotlib.patches import Ellipse, Rectangle
from numpy.typing import ArrayLike

from erf import stats as S
from erf.errors import ErfError

__all__ = ["plot_erf", "plot_erf_grid", "plot_growth", "new_figure"]

DPI = 120
TRF_COLOR = "white"
FIT_COLORS = ("orange", "red")


def new_figure(figsize: tuple[float, float], dpi: float = DPI) -> Figure:
    """An empty figure with constrained layout on its own Agg canvas (no pyplot, no global state).

    Every figure of ``erf`` (these plots and the experiment report) starts here.

    Args:
        figsize: (width, height) in inches.
        dpi: dots per inch of the figure (``savefig`` may give another).

    Returns:
        The ``matplotlib.figure.Figure``, ready for ``add_subplot``/``subplots`` and ``savefig``.
    """
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path | None, dpi: float) -> None:
    if path is not None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(p, dpi=dpi)


def _norm(scale, vmin, vmax, data_min, data_max):
    if scale == "linear":
        return Normalize(vmin=data_min if vmin is None else vmin, vmax=data_max if vmax is None else vmax)
    if scale == "log":
        hi = data_max if vmax is None else vmax
        lo = max(hi * 1e-4, data_min) if vmin is None else vmin
        if not 0 < lo < hi:
            raise ErfError(f"log scale needs 0 < vmin < vmax; got vmin={lo}, vmax={hi}")
        return LogNorm(vmin=lo, vmax=hi, clip=True)
    raise ErfError(f"scale must be 'linear' or 'log'; got {scale!r}")


def _cmap(name):
    cmap = matplotlib.colormaps[name]
    return cmap.with_extremes(bad=cmap(0.0), under=cmap(0.0))


def _positive_min(a):
    pos = a[a > 0]
    return float(pos.min()) if pos.size else 1.0


def _trf_from_box(trf_box, trf):
    if trf is not None or trf_box is None:
        return trf
    b = np.asarray(trf_box, dtype=float)
    return tuple((b[:, 1] - b[:, 0] + 1).tolist())


def _draw_trf_box(ax, trf_box, shape, label=True, trf=None):
    """Draw the TRF box clipped to the map; edges cut by the image are dashed. Returns the patch.

    ``trf``: the unit's full TRF size per axis; when the box given is smaller (already clipped),
    the label names both (a 427 px TRF is never called "TRF 224x224").
    """
    (t, b), (l, r) = np.asarray(trf_box, dtype=float)
    h, w = shape
    ct, cb, cl, cr = max(t, 0), min(b, h - 1), max(l, 0), min(r, w - 1)
    if ct > cb or cl > cr:
        return None                                            # box entirely outside the map
    x0, y0, x1, y1 = cl - 0.5, ct - 0.5, cr + 0.5, cb + 0.5
    clipped = {"top": t < 0, "bottom": b > h - 1, "left": l < 0, "right": r > w - 1}
    size = f"{int(b - t + 1)}×{int(r - l + 1)}"
    text = f"TRF {size}" + (" (dashed: clipped by image)" if any(clipped.values()) else "")
    if trf is not None and len(trf) == 2 and (int(b - t + 1), int(r - l + 1)) != tuple(int(v) for v in trf):
        text = f"TRF {int(trf[0])}×{int(trf[1])} (clipped to {size} by the image)"
    rect = Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=TRF_COLOR, linewidth=1.6,
                     label=text if label else None, gid="trf_box")
    ax.add_patch(rect)
    edges = {"top": ([x0, x1], [y0, y0]), "bottom": ([x0, x1], [y1, y1]),
             "left": ([x0, x0], [y0, y1]), "right": ([x1, x1], [y0, y1])}
    for side, (xs, ys) in edges.items():
        if clipped[side]:                                      # black dashes over white = dashed edge
            ax.plot(xs, ys, color="black", linewidth=1.6, linestyle=(0, (3, 3)), gid=f"trf_clip_{side}")
    return rect


def _as_fit(fit, m):
    if fit is False:
        return None
    if fit is None:
        fit = S.fit_gaussian(m)
    if isinstance(fit, dict):
        fit = S.GaussianFit(**{**fit, "center": tuple(fit["center"]), "sigma": tuple(fit["sigma"])})
    return fit if fit.ok else None


def _draw_ellipses(ax, fit):
    sig = ", ".join(f"{v:.1f}" for v in fit.sigma)
    for k, color, ls in ((1, FIT_COLORS[0], "-"), (2, FIT_COLORS[1], "--")):
        text = (f"2-D Gaussian fit, 1σ ellipse: fit σ = ({sig}) px, R²={fit.r2:.2f}" if k == 1
                else "2-D Gaussian fit, 2σ ellipse")
        e = Ellipse((fit.center[1], fit.center[0]), 2 * k * fit.sigma[1], 2 * k * fit.sigma[0],
                    angle=math.degrees(fit.theta), fill=False, edgecolor=color, linestyle=ls, linewidth=1.3,
                    label=text, gid=f"fit_{k}sigma")
        ax.add_patch(e)


def _stats_line(m, trf, erf_label=False):
    """``σ (y,x) = (..) px, ERF/TRF = (..)``; ``erf_label``: say it is the ERF's moment σ (plots with fits)."""
    mo = S.moments(m)
    names = S.axis_names(m.ndim)
    sig = ", ".join(f"{s:.1f}" for s in mo.sigma)
    line = f"{'ERF σ (moments) ' if erf_label else 'σ '}({','.join(names)}) = ({sig}) px"
    if trf is not None:
        ratio = S.erf_trf_ratio(m, trf)
        line += f", ERF/TRF = ({', '.join(f'{r:.2f}' for r in ratio)})"
    return line


def _heatmap(ax, m, norm, cmap, trf_box, title, trf=None):
    im = ax.imshow(m, cmap=_cmap(cmap), norm=norm, interpolation="nearest", origin="upper")
    if trf_box is not None:
        _draw_trf_box(ax, trf_box, m.shape, trf=trf)
    ax.set_xlabel("x (input pixel)")
    ax.set_ylabel("y (input pixel)")
    ax.set_xlim(-0.5, m.shape[1] - 0.5)
    ax.set_ylim(m.shape[0] - 0.5, -0.5)
    if title:
        ax.set_title(wrap_title(title, ax.figure.get_figwidth() * ax.get_position().width, 9), fontsize=9)
    return im


def wrap_title(text: str, width_in: float, fontsize: float = 9) -> str:
    """``text`` with each line wrapped to ``width_in`` inches of ``fontsize`` pt text (never cut at the edges).

    Args:
        text: the title, lines separated by newlines.
        width_in: the width available, in inches.
        fontsize: the font size in points.

    Returns:
        The wrapped text.
    """
    width = max(24, int(width_in * 72 / (fontsize * 0.6)))
    return "\n".join(w for line in text.split("\n") for w in (textwrap.wrap(line, width) or [""]))


def plot_erf(m: ArrayLike, *, trf_box: ArrayLike | None = None, trf: float | Sequence[float] | None = None,
             fit: S.GaussianFit | dict | bool | None = None, profiles: bool | Axes = True, scale: str = "linear",
             title: str | None = None, path: str | Path | None = None, ax: Axes | None = None,
             vmin: float | None = None, vmax: float | None = None, cmap: str = "viridis",
             cbar_label: str = "ERF (mean |∂unit/∂input|)", dpi: float = DPI,
             trf_center: Sequence[float] | None = None) -> Figure:
    """Heatmap of one ERF map with TRF box, Gaussian-fit ellipses and centre profiles.

    ``trf_center`` (array axis order, input pixels) places the red marker at the unit's TRF
    centre (``ERFResult.trf_center``); without it the marker is the centre pixel ``n // 2``.

    ``fit``: a ``GaussianFit`` (or its dict); ``None`` fits one here; ``False`` draws no
    ellipses.  ``trf`` defaults to the box's size and gives the ERF/TRF ratio in the
    title.  Without ``ax`` the figure has three axes: heatmap, colour bar and the
    profile panel (row and column through the centre of mass with their 1-D fits);
    ``profiles=False`` drops the panel, an Axes puts it there.  With ``ax`` the heatmap
    and colour bar go into that axes' figure.  1-D maps give a single line plot.

    Args:
        m: the map (1-D or 2-D).
        trf_box: the TRF box, inclusive ``(first, last)`` per axis, drawn clipped to the map.
        trf: the TRF size for the ERF/TRF ratio (default: the box's size).
        fit: see above.
        profiles: see above.
        scale: ``'linear'`` or ``'log'`` colours.
        title: the first title line (the second gives sigma and ERF/TRF).
        path: write a PNG there too.
        ax: draw into this axes.
        vmin: the colour scale's low end (default: the map's minimum).
        vmax: the colour scale's high end (default: the map's maximum).
        cmap: a matplotlib colour map name.
        cbar_label: the colour bar's label.
        dpi: figure resolution.

    Returns:
        The figure.

    Raises:
        ErfError: an invalid map, a bad ``scale`` or log limits.
    """
    a = S.check_map(m, ndims=(1, 2))
    trf = _trf_from_box(trf_box, trf)
    line = _stats_line(a, trf, erf_label=True)
    full_title = f"{title}\n{line}" if title else line
    if a.ndim == 1:
        return _plot_erf_1d(a, trf_box, full_title, scale, path, ax, dpi)
    fig_fit = _as_fit(fit, a)
    prof_ax = profiles if hasattr(profiles, "plot") else None
    sig = ", ".join(f"{v:.2f}" for v in S.moments(a).sigma)
    if ax is None:
        fig = new_figure((10.5, 5.6) if profiles else (5.8, 5.8), dpi)
        if profiles:
            ax, prof_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.2, 1]})
        else:
            ax = fig.add_subplot()
    fig = ax.figure
    norm = _norm(scale, vmin, vmax, float(a.min()) if scale == "linear" else _positive_min(a), float(a.max()))
    im = _heatmap(ax, a, norm, cmap, trf_box, full_title,
                  trf=None if trf is None else tuple(np.broadcast_to(np.asarray(trf), (2,))))
    ax.plot([], [], linestyle="none", label=f"ERF σ (y,x) = ({sig}) px (moments: the ERF's size)")
    if trf_center is not None and len(trf_center) == 2:
        ax.plot(trf_center[1], trf_center[0], marker="+", color="red", markersize=9, linestyle="none",
                label="TRF centre")
    else:
        cu = S.center_unit(a.shape)
        ax.plot(cu[1], cu[0], marker="+", color="red", markersize=9, linestyle="none", label="centre pixel")
    if fig_fit is not None:
        _draw_ellipses(ax, fig_fit)
    fig.colorbar(im, ax=ax, label=cbar_label + (" (log)" if scale == "log" else ""), shrink=0.9)
    if ax.get_legend_handles_labels()[0]:  # below the axes: it never hides the map or the TRF box
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=7, facecolor="0.75", framealpha=1)
    if prof_ax is not None:
        _profile_panel(prof_ax, a, trf_box, scale)
    _save(fig, path, dpi)
    return fig


def _profile_panel(ax, a, trf_box, scale):
    c = S.moments(a).center
    cy = int(np.clip(round(c[0]), 0, a.shape[0] - 1))
    cx = int(np.clip(round(c[1]), 0, a.shape[1] - 1))
    fits = {"row": S.fit_gaussian_1d(a[cy, :], name="row", baseline=False),
            "col": S.fit_gaussian_1d(a[:, cx], name="col", axis="y", baseline=False)}
    box = None if trf_box is None else np.asarray(trf_box, dtype=float)
    for key, data, color, marker, lab, bounds, ls, axis in (
            ("row", a[cy, :], "C0", "o", f"row y={cy} (vs x)", None if box is None else box[1], ":", "x"),
            ("col", a[:, cx], "C1", "s", f"column x={cx} (vs y)", None if box is None else box[0], "--", "y")):
        coords = np.arange(data.size)
        ax.plot(coords, data, marker=marker, markersize=3, linestyle="none", color=color, label=lab)
        f = fits[key]
        if f.ok:
            fine = np.linspace(0, data.size - 1, 400)
            ax.plot(fine, f.evaluate(fine), color=color, linewidth=1.2,
                    label=f"  Gaussian fit to it: fit σ={f.sigma:.2f}, R²={f.r2:.2f}")
        if bounds is not None:
            for i, v in enumerate(np.clip(bounds, -0.5, data.size - 0.5)):
                ax.axvline(v, color=color, linestyle=ls, linewidth=1, gid=f"trf_bound_{axis}",
                           zorder=3 if axis == "x" else 2.5,  # the dotted x bounds show over the dashed y ones
                           label=f"  TRF bounds in {axis}" if i == 0 else None)
    if scale == "log":
        ax.set_yscale("log")
        ax.set_ylim(bottom=max(a.max() * 1e-4, _positive_min(a)))
    ax.set_xlabel("input pixel (x for the row, y for the column)")
    ax.set_ylabel("ERF value")
    sig = ", ".join(f"{v:.2f}" for v in S.moments(a).sigma)
    ax.set_title(f"ERF σ (moments, y,x) = ({sig}) px: the ERF's size\n"
                 "lines: Gaussians (no baseline) fitted to one row / column\n"
                 "each: their fit σ describe that line only", fontsize=9)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=7, ncol=1)
    ax.grid(alpha=0.3)


def _plot_erf_1d(a, trf_box, title, scale, path, ax, dpi):
    if ax is None:
        ax = new_figure((6.4, 4.0), dpi).add_subplot()
    fig = ax.figure
    x = np.arange(a.size)
    ax.plot(x, a, marker="o", markersize=3, linestyle="none", label="ERF")
    f = S.fit_gaussian_1d(a, name="map")
    if f.ok:
        fine = np.linspace(0, a.size - 1, 400)
        ax.plot(fine, f.evaluate(fine), label=f"Gaussian fit σ={f.sigma:.2f}, R²={f.r2:.3f}")
    if trf_box is not None:
        lo, hi = np.asarray(trf_box, dtype=float).ravel()[-2:]
        ax.axvspan(max(lo, 0) - 0.5, min(hi, a.size - 1) + 0.5, color="grey", alpha=0.2,
                   label=f"TRF {int(hi - lo + 1)}", gid="trf_box")
    if scale == "log":
        ax.set_yscale("log")
    ax.set_xlabel("x (input pixel)")
    ax.set_ylabel("ERF value")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    _save(fig, path, dpi)
    return fig


def plot_erf_grid(maps: Sequence[ArrayLike], titles: Sequence[str] | None = None, *,
                  trf_boxes: Sequence[ArrayLike | None] | None = None, shared_scale: bool | str | None = True,
                  ncols: int | None = None, path: str | Path | None = None, suptitle: str | None = None,
                  scale: str = "linear", cmap: str = "viridis", dpi: float = DPI,
                  cbar_label: str = "ERF (mean |∂unit/∂input|)") -> Figure:
    """Grid of 2-D ERF heatmaps, each titled with its sigma (and ERF/TRF when a box is given).

    ``shared_scale``: ``True``/``'shared'`` -- one colour scale (min..max over all maps)
    and one colour bar, to compare magnitudes; ``'peak'`` -- each map divided by its
    own peak, one 0..1 colour bar, to compare shapes whatever the magnitudes;
    ``False``/``'own'`` -- each map on its own scale with its own colour bar.
    Axes: one per map plus one colour bar (two per map with ``'own'``).

    Args:
        maps: 2-D maps.
        titles: one per map (default ``map i``).
        trf_boxes: one box (or None) per map.
        shared_scale: see above.
        ncols: columns (default up to 4).
        path: write a PNG there too.
        suptitle: the figure's title.
        scale: ``'linear'`` or ``'log'`` colours.
        cmap: a matplotlib colour map name.
        dpi: figure resolution.
        cbar_label: the shared colour bar's label.

    Returns:
        The figure.

    Raises:
        ErfError: no maps, an invalid map, counts of titles or boxes that differ from the
            maps, or a bad ``shared_scale`` or ``scale``.
    """
    arrs = [S.check_map(m, what=f"map {i}", ndims=(2,)) for i, m in enumerate(maps)]
    if not arrs:
        raise ErfError("plot_erf_grid needs at least one map")
    n = len(arrs)
    titles = list(titles) if titles is not None else [f"map {i}" for i in range(n)]
    boxes = list(trf_boxes) if trf_boxes is not None else [None] * n
    if len(titles) != n or len(boxes) != n:
        raise ErfError(f"got {n} maps, {len(titles)} titles and {len(boxes)} trf_boxes: they must match")
    mode = {True: "shared", "shared": "shared", "peak": "peak", False: "own", "own": "own", None: "own"}.get(shared_scale)
    if mode is None:
        raise ErfError(f"shared_scale must be True, 'peak' or False; got {shared_scale!r}")
    ncols = min(n, 4) if ncols is None else max(1, int(ncols))
    nrows = math.ceil(n / ncols)
    fig = new_figure((3.3 * ncols + (0.8 if mode != "own" else 0), 3.2 * nrows + (0.4 if suptitle else 0)), dpi)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for extra in axes[n:]:
        fig.delaxes(extra)
    shown = [m / m.max() for m in arrs] if mode == "peak" else arrs
    lo_all = min(float(m.min()) if scale == "linear" else _positive_min(m) for m in shown)
    hi_all = max(float(m.max()) for m in shown)
    im = None
    for ax, m, shown_m, t, box in zip(axes, arrs, shown, titles, boxes):
        norm = (_norm(scale, None, None, lo_all, hi_all) if mode != "own" else
                _norm(scale, None, None, float(m.min()) if scale == "linear" else _positive_min(m), float(m.max())))
        im = _heatmap(ax, shown_m, norm, cmap, box, f"{t}\n{_stats_line(m, _trf_from_box(box, None))}")
        if mode == "own":
            fig.colorbar(im, ax=ax, shrink=0.85)
    if mode != "own":
        label = "fraction of each map's peak" if mode == "peak" else cbar_label
        fig.colorbar(im, ax=list(axes[:n]), label=label + (" (log)" if scale == "log" else ""), shrink=0.85)
    if suptitle:
        fig.suptitle(suptitle)
    _save(fig, path, dpi)
    return fig


def _plain_log_ticks(ax, x):
    """Plain numbers on log axes: x ticks at the data (when few), y minor labels within a decade."""
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    if len(x) <= 12:
        ax.set_xticks(np.unique(x))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_formatter(plain)
    lo, hi = ax.get_ylim()
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain if lo > 0 and hi / lo < 10 else NullFormatter())


def _as_power_fit(fit, x, y, lo, hi):
    if fit is None or fit is False:
        return None
    if fit is True:
        return S.fit_power_law(x, y, lo, hi)
    if isinstance(fit, dict):
        nan = lambda v: math.nan if v is None else v  # noqa: E731  (to_dict writes NaN as None)
        return S.PowerLawFit(**{k: (tuple(map(nan, v)) if isinstance(v, list) else nan(v)) for k, v in fit.items()})
    return fit


def plot_growth(x: ArrayLike, y: ArrayLike, y_err: ArrayLike | tuple[ArrayLike, ArrayLike] | None = None,
                fit: S.PowerLawFit | dict | bool | None = None, theory: Sequence | None = None,
                ratio: ArrayLike | None = None, path: str | Path | None = None, *,
                xlabel: str = "depth n (layers)", ylabel: str = "ERF size 2σ (px)", title: str | None = None,
                ratio_label: str = "ERF/TRF (2σ / TRF)", dpi: float = DPI) -> Figure:
    """Log-log growth plot of an ERF size against ``x`` (e.g. depth), with optional ERF/TRF panel.

    ``y_err``: symmetric errors (array) or a ``(lo, hi)`` pair of interval bounds.
    ``fit``: a ``PowerLawFit`` (or its dict), ``True`` to fit here, ``None`` for no line;
    the legend shows the exponent and its CI.  ``theory``: ``(x, y)`` or
    ``(x, y, label)`` drawn dashed.  ``ratio``: ERF/TRF per ``x`` -- adds a second
    panel with a ``1/sqrt(x)`` reference through its first point.

    Args:
        x: positions (e.g. depths).
        y: values, one per ``x``.
        y_err: see above.
        fit: see above.
        theory: see above.
        ratio: see above.
        path: write a PNG there too.
        xlabel: the x axis label.
        ylabel: the y axis label.
        title: the title (default ``ylabel vs xlabel``).
        ratio_label: the ratio panel's y label.
        dpi: figure resolution.

    Returns:
        The figure.

    Raises:
        ErfError: lengths that differ or are zero, bad errors or ratios, or a fit that fails.
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.size != y.size or x.size == 0:
        raise ErfError(f"x and y must have the same non-zero length; got {x.size} and {y.size}")
    lo = hi = None
    yerr = None
    if y_err is not None:
        if isinstance(y_err, (tuple, list)) and len(y_err) == 2 and np.ndim(y_err[0]) == 1:
            lo, hi = (np.asarray(v, dtype=float).ravel() for v in y_err)
            yerr = np.vstack([y - lo, hi - y])
        else:
            yerr = np.asarray(y_err, dtype=float).ravel()
        if np.shape(yerr)[-1] != x.size or np.any(np.asarray(yerr) < 0):
            raise ErfError("y_err must be one non-negative error per point or (lo, hi) bounds around y")
    pf = _as_power_fit(fit, x, y, lo, hi)
    fig = new_figure((11, 4.4) if ratio is not None else (6, 4.4), dpi)
    axes = fig.subplots(1, 2 if ratio is not None else 1, squeeze=False).ravel()
    ax = axes[0]
    ax.errorbar(x, y, yerr=yerr, fmt="o", color="C0", capsize=3, label="measured")
    xs = np.geomspace(x.min(), x.max(), 200) if x.min() > 0 else x
    if pf is not None:
        ci = pf.exponent_ci
        ci_txt = f", {pf.level:.0%} CI [{ci[0]:.3f}, {ci[1]:.3f}]" if np.all(np.isfinite(ci)) else ""
        ax.plot(xs, pf.predict(xs), color="C0", linewidth=1.5,
                label=f"fit ${pf.prefactor:.3g}\\,x^{{{pf.exponent:.3f}}}$ (exponent{ci_txt}), R²={pf.r2:.3f}")
    if theory is not None:
        tx, ty = np.asarray(theory[0], dtype=float), np.asarray(theory[1], dtype=float)
        ax.plot(tx, ty, color="black", linestyle="--", linewidth=1.2,
                label=theory[2] if len(theory) > 2 else "theory")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"{ylabel} vs {xlabel}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    _plain_log_ticks(ax, x)
    if ratio is not None:
        r = np.asarray(ratio, dtype=float).ravel()
        if r.size != x.size:
            raise ErfError(f"ratio must have one value per x ({x.size}); got {r.size}")
        ax2 = axes[1]
        ax2.plot(x, r, marker="o", color="C2", label="measured ERF/TRF")
        ok = np.isfinite(r) & (r > 0) & (x > 0)
        if ok.any():
            i0 = int(np.argmax(ok))
            ax2.plot(xs, r[i0] * np.sqrt(x[i0] / xs), color="black", linestyle="--", linewidth=1.2,
                     label="∝ 1/√x reference")
        ax2.set_xscale("log")
        ax2.set_yscale("log")
        ax2.set_xlabel(xlabel)
        ax2.set_ylabel(ratio_label)
        ax2.set_title("ERF/TRF (dashed: 1/√x, Luo et al. 2016)", fontsize=10)
        ax2.legend(fontsize=8)
        ax2.grid(alpha=0.3, which="both")
        _plain_log_ticks(ax2, x)
    _save(fig, path, dpi)
    return fig
