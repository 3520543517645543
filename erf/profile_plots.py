"""Figures of a profile (ERF size and TRF per layer) and of a unit grid (ERF size and centre offset per unit).

Built on ``erf.plots.new_figure`` (an Agg canvas, no pyplot); sizes are ERF size = 2 sigma and
ERF/TRF = 2 sigma / TRF per axis, as everywhere in ``erf``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from erf.errors import ErfError
from erf.io import atomic_write
from erf.plots import new_figure

__all__ = ["plot_profile", "plot_grid", "plot_profile_series"]


def _write(fig: Figure, path: str | Path | None) -> None:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: fig.savefig(f, format=Path(path).suffix.lstrip(".") or "png"))


def plot_profile(prof: Any, path: str | Path | None = None) -> Figure:
    """ERF size 2 sigma (95% CI) with the TRF per layer, ERF/TRF per layer, and each layer's map.

    Args:
        prof: an ``erf.engine.profile.Profile``.
        path: write the figure there too (PNG, PDF or SVG by suffix).

    Returns:
        The figure.

    Raises:
        ErfError: an empty profile.
    """
    results = list(prof.results)
    if not results:
        raise ErfError("the profile has no layers to plot")
    k = len(results)
    fig = new_figure((max(9.0, 2.2 * k), 7.6))
    grid = fig.add_gridspec(2, k)
    ax = fig.add_subplot(grid[0, : max(1, k // 2 + k % 2)])
    ax2 = fig.add_subplot(grid[0, max(1, k // 2 + k % 2):]) if k > 1 else None
    x = np.arange(k)
    names = [str(r.layer) for r in results]
    rows = prof.rows()
    for a, (axis, marker) in enumerate(zip(results[0].axes, "os^")):
        size = np.array([row["erf_size"][a] for row in rows])
        ci = [row["erf_size_ci"][a] for row in rows]
        err = np.clip(np.array([[s - c[0], c[1] - s] if c else [0.0, 0.0] for s, c in zip(size, ci)]).T, 0, None)
        ax.errorbar(x + 0.06 * (a - 0.5), size, yerr=err, fmt=marker + "-", capsize=3, label=f"ERF 2σ_{axis}")
    trf = [r.trf for r in results]
    if all(t is not None for t in trf):
        ax.plot(x, [max(t) for t in trf], "k--", marker="s", label="TRF")
        clipped = [i for i, r in enumerate(results) if r.clipped]
        if clipped:
            ax.plot(x[clipped], [max(trf[i]) for i in clipped], "rx", markersize=9, label="TRF past the image")
    ax.axhline(max(results[0].map.shape), color="grey", linewidth=0.8, linestyle=":", label="input size")
    ax.set_yscale("log")
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("input pixels")
    ax.set_title("ERF size and TRF per layer", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    if ax2 is not None:
        for a, axis in enumerate(results[0].axes):
            ax2.plot(x, [np.nan if row["ratio"] is None else row["ratio"][a] for row in rows], marker="o",
                     label=f"ERF/TRF {axis}")
        ax2.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
        ax2.set_ylabel("2σ / TRF")
        ax2.set_title("ERF/TRF per layer", fontsize=10)
        ax2.legend(fontsize=7)
        ax2.grid(alpha=0.3)
    for i, r in enumerate(results):
        axm = fig.add_subplot(grid[1, i])
        m = r.post_map
        if m.ndim == 2:
            axm.imshow(m, cmap="viridis", origin="upper")
            if r.trf_box is not None and all(b is not None for b in r.trf_box):
                (y0, y1), (x0, x1) = r.trf_box
                axm.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False,
                                        edgecolor="white", linewidth=1))
        else:
            axm.plot(m.reshape(m.shape[0], -1).sum(1))
        axm.set_title(f"{r.layer}\n2σ {' x '.join(f'{2 * s:.1f}' for s in r.sigma)} px", fontsize=8)
        axm.tick_params(labelsize=6)
    fig.suptitle(f"ERF profile, {results[0].samples} samples per layer (white box: TRF in the image)", fontsize=10)
    _write(fig, path)
    return fig


def plot_grid(gm: Any, path: str | Path | None = None) -> Figure:
    """ERF size 2 sigma per unit over the output grid, and each unit's centre offset as an arrow over the input.

    Args:
        gm: an ``erf.engine.grid.GridMap`` of a 2-D layer.
        path: write the figure there too.

    Returns:
        The figure.

    Raises:
        ErfError: a map that is not 2-D, or no units.
    """
    if not gm.results or gm.results[0].map.ndim != 2:
        raise ErfError("plot_grid draws 2-D maps only; use gm.table() for other layers")
    sizes, offsets, centers = gm.sizes, gm.offsets, gm.centers
    mean_size = np.sqrt(sizes[:, 0] * sizes[:, 1])
    fig = new_figure((12.5, 4.6))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    if gm.positions is not None:
        img = gm.on_grid(mean_size)
        im = ax1.imshow(img, cmap="magma", origin="upper")
        ys, xs = gm.positions
        ax1.set_xticks(range(len(xs)), xs, fontsize=7)
        ax1.set_yticks(range(len(ys)), ys, fontsize=7)
        ax1.set_xlabel("unit column")
        ax1.set_ylabel("unit row")
        if img.size <= 121:
            for (i, j), v in np.ndenumerate(img):
                ax1.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=6,
                         color="white" if v < (img.min() + img.max()) / 2 else "black")
    else:
        im = ax1.scatter(centers[:, 1], centers[:, 0], c=mean_size, cmap="magma", s=60)
        ax1.invert_yaxis()
        ax1.set_xlabel("TRF centre x (px)")
        ax1.set_ylabel("TRF centre y (px)")
    fig.colorbar(im, ax=ax1, label="ERF size √(2σ_y · 2σ_x) (px)")
    ax1.set_title("ERF size per unit", fontsize=10)
    h, w = gm.results[0].map.shape
    mag = np.hypot(offsets[:, 0], offsets[:, 1])
    q = ax2.quiver(centers[:, 1], centers[:, 0], offsets[:, 1], offsets[:, 0], mag, cmap="viridis",
                   angles="xy", scale_units="xy", scale=1.0, width=0.006)
    ax2.plot(centers[:, 1], centers[:, 0], "k.", markersize=3)
    ax2.add_patch(Rectangle((-0.5, -0.5), w, h, fill=False, edgecolor="grey", linestyle="--"))
    ax2.set_xlim(-0.1 * w - 0.5, 1.1 * w)
    ax2.set_ylim(1.1 * h, -0.1 * h - 0.5)
    ax2.set_aspect("equal")
    fig.colorbar(q, ax=ax2, label="|offset| (px)")
    ax2.set_title("centre offset: ERF centre of mass − TRF centre\n(arrows at each TRF centre, true length)",
                  fontsize=9)
    ax2.set_xlabel("x (input px)")
    ax2.set_ylabel("y (input px)")
    corner = int(np.argmin(mean_size))
    r = gm.results[corner]
    ax3.imshow(r.post_map, cmap="viridis", origin="upper")
    if r.trf_box is not None:
        (y0, y1), (x0, x1) = r.trf_box
        ax3.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, edgecolor="white"))
    ax3.set_title(f"smallest ERF: unit {tuple(gm.units[corner])}, 2σ "
                  f"{' x '.join(f'{v:.1f}' for v in sizes[corner])} px", fontsize=10)
    fig.suptitle(f"{gm.layer or 'output'}: {len(gm.units)} units, {gm.results[0].samples} samples each",
                 fontsize=10)
    _write(fig, path)
    return fig


def plot_profile_series(series: dict[str, list[dict]], path: str | Path | None = None, title: str = "") -> Figure:
    """ERF size 2σ (with intervals) and the TRF per layer, and ERF/TRF per layer: one line per series.

    What ``erf run`` draws for a config's ``[profile]``: one series per sweep point and training state.
    The last axis (x) is drawn; each line's TRF is dashed in its colour.

    Args:
        series: label -> rows in layer order, each with ``layer``, ``trf`` (list or None), ``clipped``, and
            ``erf_size_<axis>`` / ``erf_trf_ratio_<axis>`` with ``..._ci`` ([lo, hi] or None) per axis.
        path: write the figure there too.
        title: the figure's title.

    Returns:
        The figure.

    Raises:
        ErfError: no series, or a series without rows.
    """
    if not series or not all(series.values()):
        raise ErfError("plot_profile_series needs at least one series with rows")
    first = next(iter(series.values()))
    axis = [k for k in first[0] if k.startswith("erf_size_") and not k.endswith("_ci")][-1][len("erf_size_"):]
    layers = list(dict.fromkeys(row["layer"] for rows in series.values() for row in rows))
    pos = {name: i for i, name in enumerate(layers)}
    n = len(series)
    fig = new_figure((max(10.0, 1.3 * len(layers) + 7.5), 4.6 + 0.17 * math.ceil(n / 3)))
    ax, ax2 = fig.subplots(1, 2)
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    colors = [cmap(i % cmap.N) for i in range(n)]
    width = 0.25 / max(1, n - 1) if n > 1 else 0.0
    for j, (label, rows) in enumerate(series.items()):
        x = np.array([pos[row["layer"]] for row in rows], dtype=float) + (j - (n - 1) / 2) * width
        size = np.array([np.nan if row[f"erf_size_{axis}"] is None else row[f"erf_size_{axis}"] for row in rows])
        ci = [row.get(f"erf_size_{axis}_ci") for row in rows]
        err = np.array([[s - c[0], c[1] - s] if c and c[0] is not None and np.isfinite(s) else [0.0, 0.0]
                        for s, c in zip(size, ci)]).T
        ax.errorbar(x, size, yerr=np.clip(err, 0, None), fmt="o-", color=colors[j], capsize=2, markersize=4,
                    linewidth=1.2, label=label)
        trf = [row["trf"][-1] if row.get("trf") else np.nan for row in rows]
        ax.plot(x, trf, "--", color=colors[j], linewidth=0.9, alpha=0.8)
        ratio = [np.nan if row.get(f"erf_trf_ratio_{axis}") is None else row[f"erf_trf_ratio_{axis}"] for row in rows]
        ax2.plot(x, ratio, "o-", color=colors[j], markersize=4, linewidth=1.2)
    for a in (ax, ax2):
        a.set_xticks(range(len(layers)), layers, rotation=30, ha="right", fontsize=8)
        a.grid(alpha=0.3, which="both")
        a.set_xlim(-0.5, len(layers) - 0.5)
    ax.set_yscale("log")
    ax.set_ylabel(f"input pixels along {axis}")
    ax.set_title(f"ERF size 2σ_{axis} (solid, intervals) and TRF_{axis} (dashed)", fontsize=10)
    ax2.set_ylabel(f"2σ_{axis} / TRF_{axis}")
    ax2.set_title(f"ERF/TRF along {axis}", fontsize=10)
    ax2.set_ylim(bottom=0)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=min(n, 3), fontsize=7,
               frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    _write(fig, path)
    return fig
