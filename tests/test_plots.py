import math

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse, Rectangle

from erf import plots as P
from erf import stats as S
from erf.errors import ErfError


def gauss(shape, cy, cx, sy, sx, theta=0.0):
    yy, xx = np.indices(shape, dtype=np.float64)
    dy, dx = yy - cy, xx - cx
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * dx + s * dy, -s * dx + c * dy
    return np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))


def trf_rects(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle) and p.get_gid() == "trf_box"]


def png_ok(path):
    assert path.exists() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_erf(tmp_path):
    m = gauss((40, 48), 20, 24, 3, 6, theta=0.3)
    out = tmp_path / "sub" / "erf.png"
    fig = P.plot_erf(m, trf_box=((5, 35), (8, 40)), title="toy", path=out)
    assert isinstance(fig, Figure) and len(fig.axes) == 3          # heatmap, colour bar, profiles
    png_ok(out)
    ax = fig.axes[0]
    (rect,) = trf_rects(ax)
    assert rect.get_xy() == (7.5, 4.5) and rect.get_width() == 33 and rect.get_height() == 31
    assert sum(isinstance(p, Ellipse) for p in ax.patches) == 2      # 1 and 2 sigma
    assert "σ" in ax.get_title() and "ERF/TRF" in ax.get_title() and "toy" in ax.get_title()
    assert not [l for l in ax.lines if (l.get_gid() or "").startswith("trf_clip")]


def test_plot_erf_clipped_box_log_and_no_profiles(tmp_path):
    m = gauss((30, 30), 15, 15, 4, 4) + 1e-9
    fig = P.plot_erf(m, trf_box=((-10, 40), (3, 26)), scale="log", profiles=False, fit=False,
                     path=tmp_path / "log.png")
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    (rect,) = trf_rects(ax)
    assert rect.get_xy() == (2.5, -0.5) and rect.get_height() == 30   # clipped to the map
    dashed = {l.get_gid() for l in ax.lines if (l.get_gid() or "").startswith("trf_clip")}
    assert dashed == {"trf_clip_top", "trf_clip_bottom"}
    assert not any(isinstance(p, Ellipse) for p in ax.patches)
    png_ok(tmp_path / "log.png")


def test_plot_erf_into_given_axes_and_fit_dict():
    m = gauss((21, 21), 10, 10, 2, 3)
    fig = Figure()
    ax = fig.add_subplot()
    fit = S.fit_gaussian(m).to_dict()
    assert P.plot_erf(m, ax=ax, fit=fit, profiles=False) is fig
    assert len(fig.axes) == 2 and sum(isinstance(p, Ellipse) for p in ax.patches) == 2


def test_plot_erf_1d_and_bad(tmp_path):
    x = np.arange(31.0)
    fig = P.plot_erf(np.exp(-0.5 * ((x - 15) / 3) ** 2), trf_box=((5, 25),), path=tmp_path / "a.png")
    assert len(fig.axes) == 1
    png_ok(tmp_path / "a.png")
    with pytest.raises(ErfError):
        P.plot_erf(np.ones((3, 3, 3)))
    with pytest.raises(ErfError, match="scale"):
        P.plot_erf(np.ones((3, 3)), scale="sqrt", fit=False)


@pytest.mark.parametrize("shared, n_cbar", [(True, 1), ("peak", 1), (False, 5)])
def test_plot_erf_grid(tmp_path, shared, n_cbar):
    maps = [gauss((25, 25), 12, 12, s, s) * (10 ** i) for i, s in enumerate((1, 2, 3, 4, 5))]
    boxes = [((12 - k, 12 + k), (12 - k, 12 + k)) for k in (2, 4, 6, 8, 20)]
    out = tmp_path / f"grid_{shared}.png"
    fig = P.plot_erf_grid(maps, [f"d={i}" for i in range(5)], trf_boxes=boxes, shared_scale=shared,
                          ncols=3, path=out, suptitle="grid")
    png_ok(out)
    assert len(fig.axes) == 5 + n_cbar
    assert all(len(trf_rects(ax)) == 1 for ax in fig.axes[:5] if ax.images)
    imgs = [ax.images[0] for ax in fig.axes if ax.images]
    if shared == "peak":
        assert all(im.norm.vmax == pytest.approx(1.0) for im in imgs)
    with pytest.raises(ErfError, match="match"):
        P.plot_erf_grid(maps, ["a"])


def test_plot_growth(tmp_path):
    x = np.array([1, 2, 4, 8, 16.0])
    y = 3 * np.sqrt(x) * np.array([1.02, 0.97, 1.01, 0.99, 1.0])
    fit = S.fit_power_law(x, y)
    out = tmp_path / "growth.png"
    fig = P.plot_growth(x, y, y_err=(0.9 * y, 1.1 * y), fit=fit, theory=(x, 3 * np.sqrt(x), "√n law"),
                        ratio=y / (2 * x + 1), path=out)
    png_ok(out)
    assert len(fig.axes) == 2
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert any(f"{fit.exponent:.3f}" in s and "CI" in s for s in labels) and "√n law" in labels
    assert fig.axes[0].get_xscale() == "log" and fig.axes[1].get_yscale() == "log"
    fig1 = P.plot_growth(x, y, y_err=0.1 * y, fit=True)
    assert len(fig1.axes) == 1
    with pytest.raises(ErfError):
        P.plot_growth(x, y[:2])


def test_new_figure():
    fig = P.new_figure((4, 3), dpi=80)
    assert isinstance(fig, Figure) and fig.get_dpi() == 80 and tuple(fig.get_size_inches()) == (4, 3)
    assert fig.canvas.get_renderer() is not None and fig.get_layout_engine() is not None


def test_plot_erf_says_which_sigma_is_the_erf_and_keeps_the_trf_box_clear():
    """The title's moment σ is the ERF; the ellipses and profile lines are labelled as fits."""
    m = gauss((40, 40), 20, 20, 6, 6) + 0.05 * gauss((40, 40), 20, 20, 15, 15)  # fits and moments differ
    box = ((2, 37), (2, 37))
    fig = P.plot_erf(m, trf_box=box, title="toy")
    ax, prof = fig.axes[0], fig.axes[1]
    mo = S.moments(m).sigma
    assert "ERF σ (moments)" in ax.get_title() and f"{mo[0]:.1f}" in ax.get_title()
    labels = ax.get_legend_handles_labels()[1]
    sigmas = [t for t in labels if "σ" in t]
    assert "moments" in sigmas[0] and f"{mo[0]:.2f}" in sigmas[0]          # the moment σ first, named as such
    assert all("fit" in t for t in sigmas[1:]) and sum("Gaussian fit" in t for t in labels) == 2
    assert "ERF σ (moments" in prof.get_title() and "fit" in prof.get_title()
    prof_labels = prof.get_legend_handles_labels()[1]
    assert sum("fit σ=" in t for t in prof_labels) == 2
    # the legend does not cover any corner of the TRF box
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    (rect,) = trf_rects(ax)
    x0, y0 = rect.get_xy()
    for cx, cy in ((x0, y0), (x0 + rect.get_width(), y0), (x0, y0 + rect.get_height()),
                   (x0 + rect.get_width(), y0 + rect.get_height())):
        assert not legend.contains(*ax.transData.transform((cx, cy)))
    # the TRF-bound lines' legend entries have their colour and style
    handles, names = prof.get_legend_handles_labels()
    for axis in ("x", "y"):
        (entry,) = [h for h, t in zip(handles, names) if t.strip() == f"TRF bounds in {axis}"]
        lines = [ln for ln in prof.lines if ln.get_gid() == f"trf_bound_{axis}"]
        assert len(lines) == 2
        for ln in lines:
            assert ln.get_color() == entry.get_color() and ln.get_linestyle() == entry.get_linestyle()


def test_profile_fits_never_float_above_zero_data_or_dip_below_zero():
    """The profile curves are Gaussians without a baseline: 0 where the data are 0, never negative."""
    x = np.arange(41, dtype=float)
    prof = np.where(np.abs(x - 20) <= 6, np.exp(-0.5 * ((x - 20) / 4) ** 2), 0.0)   # a cut, flat-ish core
    m = np.outer(prof, prof)
    fig = P.plot_erf(m, trf_box=((14, 26), (14, 26)), title="cut")
    prof_ax = fig.axes[1]
    curves = [ln for ln in prof_ax.lines if "fit" in (ln.get_label() or "")]
    assert len(curves) == 2
    for ln in curves:
        xs, ys = np.asarray(ln.get_xdata()), np.asarray(ln.get_ydata())
        assert ys.min() >= 0 and ys[(xs < 3) | (xs > 37)].max() < 1e-3 * ys.max()   # no floor
    fit = S.fit_gaussian_1d(prof)                      # with a baseline, it is never below 0
    assert fit.offset >= 0
