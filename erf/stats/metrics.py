"""Named scalar metrics of a map, from one table (``METRICS``), and ``summarize``.

A metric name is a family of ``METRICS`` in one of three forms (its ``Metric.kind``):

* ``map``: the family name itself -- ``total``, ``peak``, ``fit_theta``, ``fit_r2``;
* ``axis``: the family name, ``_`` and an axis suffix of ``axis_names`` -- ``sigma_x``,
  ``erf_size_y``, ``com_offset_z`` ...;
* ``fraction``: the family name, ``_`` and a fraction in (0, 1] -- ``mass_radius_0.9``,
  ``hcar_log1p_max_0.5`` ...

``scalar_metrics`` looks each name up in the table; ``default_metrics`` lists the names that
``summarize`` reports, also from the table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike

from erf.errors import ErfError
from erf.io import to_json
from erf.stats.fits import GaussianFit, fit_gaussian, fit_gaussian_1d, fit_profiles
from erf.stats.moments import Moments, axis_names, center_unit, check_map, moments, trf_sizes
from erf.stats.sizes import area_above, check_box, high_contribution_area_ratio, mass_in_box, mass_radius

__all__ = ["Metric", "METRICS", "default_metrics", "scalar_metrics", "summarize", "uniform_map", "uniform_reference",
           "uniform_reference_names"]


class _Evaluation:
    """One map's metrics being computed: moments, the Gaussian fit and each fraction group once."""

    def __init__(self, a: np.ndarray, names: Sequence[str], trf: Any, center: Sequence[float] | None = None):
        self.a, self.names, self.trf = a, names, trf
        self.center = center_unit(a.shape) if center is None else tuple(float(c) for c in center)
        if len(self.center) != a.ndim:
            raise ErfError(f"center must have {a.ndim} coordinates (one per axis); got {center!r}")
        self._moments: Moments | None = None
        self._fit: GaussianFit | None = None
        self._groups: dict[str, dict] = {}

    @property
    def moments(self) -> Moments:
        if self._moments is None:
            self._moments = moments(self.a)
        return self._moments

    @property
    def fit(self) -> GaussianFit:
        if self._fit is None:
            self._fit = fit_gaussian(self.a)
        return self._fit

    def group(self, group: str, compute: Callable[[np.ndarray, list[float], tuple[float, ...]], dict]) -> dict:
        """``compute`` over every fraction of ``group`` among the requested names (once per group)."""
        if group not in self._groups:
            fs = sorted({p[1] for p in map(_parse_fraction, self.names) if p and METRICS[p[0]].group == group})
            self._groups[group] = compute(self.a, fs, self.center)
        return self._groups[group]


@dataclass(frozen=True)
class Metric:
    """One family of scalar metrics.

    * ``kind``: ``map`` (one value), ``axis`` (one per axis) or ``fraction`` (one per fraction).
    * ``value``: ``value(evaluation, name, arg) -> float`` with ``arg`` None, the axis index or
      the fraction.
    * ``help``: one line for help texts.
    * ``default``: whether ``summarize`` reports it (``map``/``axis``), or the fractions it
      reports (``fraction``); ``trf`` for the axis metrics reported when a TRF is known.
    * ``group`` (``fraction`` only): families of one group share one computation over all
      their requested fractions (``area_above`` and ``area_above_count``).
    """

    kind: str
    value: Callable[[_Evaluation, str, Any], float]
    help: str
    default: bool | str | tuple[float, ...] = False
    group: str = ""


def _erf_trf_ratio(ev: _Evaluation, name: str, i: int) -> float:
    if ev.trf is None:
        raise ErfError(f"metric {name!r} needs the TRF size (trf=...)")
    return 2.0 * ev.moments.sigma[i] / trf_sizes(ev.trf, ev.a.ndim)[i]


def _kurtosis(ev: _Evaluation, name: str, i: int) -> float:
    """Excess kurtosis of the map's marginal along axis ``i`` (Gaussian 0, box -1.2, Laplace 3)."""
    marg = ev.a.sum(axis=tuple(j for j in range(ev.a.ndim) if j != i))
    x = np.arange(marg.size, dtype=np.float64)
    w = marg / marg.sum()
    d = x - float(w @ x)
    var = float(w @ d ** 2)
    return float(w @ d ** 4) / var ** 2 - 3.0 if var > 0 else math.nan


def _fit_sigma(ev: _Evaluation, name: str, i: int) -> float:
    if ev.a.ndim != 2:
        raise ErfError(f"metric {name!r} needs a 2-D map")
    return float(ev.fit.sigma[i]) if ev.fit.ok else math.nan


def _fraction(group: str, compute: Callable[[np.ndarray, list[float], tuple[float, ...]], dict],
              pick: Callable[[Any], float],
              help: str, default: tuple[float, ...]) -> Metric:
    def value(ev: _Evaluation, name: str, f: float) -> float:
        return pick(ev.group(group, compute)[f])

    return Metric("fraction", value, help, default, group)


#: Every scalar metric family, in ``summarize``'s order (see the module docstring for the names).
METRICS: dict[str, Metric] = {
    "total": Metric("map", lambda ev, name, _: float(ev.a.sum()), "sum of the map", True),
    "peak": Metric("map", lambda ev, name, _: float(ev.a.max()), "maximum of the map", True),
    "fit_theta": Metric("map", lambda ev, name, _: float(ev.fit.theta) if ev.fit.ok else math.nan,
                        "rotation of the 2-D Gaussian fit (radians)"),
    "fit_r2": Metric("map", lambda ev, name, _: float(ev.fit.r2) if ev.fit.ok else math.nan,
                     "R^2 of the 2-D Gaussian fit"),
    "center": Metric("axis", lambda ev, name, i: ev.moments.center[i], "centre of mass", True),
    "com_offset": Metric("axis", lambda ev, name, i: ev.moments.center[i] - ev.center[i],
                         "centre of mass minus the reference centre (the unit's TRF centre where known, else "
                         "the centre unit n // 2)", True),
    "sigma": Metric("axis", lambda ev, name, i: ev.moments.sigma[i], "moment sigma", True),
    "erf_size": Metric("axis", lambda ev, name, i: 2.0 * ev.moments.sigma[i], "ERF size = 2 sigma", True),
    "kurtosis": Metric("axis", _kurtosis, "excess kurtosis of the marginal along the axis (Gaussian 0, box -1.2): "
                                          "tells a Gaussian from a flat top", True),
    "erf_trf_ratio": Metric("axis", _erf_trf_ratio, "ERF/TRF = 2 sigma / trf (needs the TRF)", "trf"),
    "fit_sigma": Metric("axis", _fit_sigma, "sigma of the 2-D Gaussian fit (2-D maps; slow)"),
    "mass_radius": _fraction("mass_radius", lambda a, fs, c: mass_radius(a, fs), lambda v: v,
                             "radius holding the fraction of the mass", (0.5, 0.9, 0.95)),
    "area_above": _fraction("area_above", lambda a, fs, c: area_above(a, fs), lambda v: float(v["fraction"]),
                            "share of pixels above the fraction of the peak", (0.1, 0.5)),
    "area_above_count": _fraction("area_above", lambda a, fs, c: area_above(a, fs), lambda v: float(v["count"]),
                                  "number of pixels above the fraction of the peak", (0.1, 0.5)),
    "hcar": _fraction("hcar", lambda a, fs, c: high_contribution_area_ratio(a, fs, None, c), lambda v: v,
                      "high-contribution area ratio of the raw map (squares around the reference centre)", (0.2, 0.3, 0.5, 0.99)),
    "hcar_log1p_max": _fraction("hcar_log1p_max", lambda a, fs, c: high_contribution_area_ratio(a, fs, "log1p_max", c),
                                lambda v: v, "high-contribution area ratio after log10(1+x)/max (RepLKNet)",
                                (0.2, 0.3, 0.5, 0.99)),
}

# longest first, so that ``hcar_log1p_max_0.5`` is not read as the family ``hcar``
_FRACTION_FAMILIES = sorted((k for k, m in METRICS.items() if m.kind == "fraction"), key=len, reverse=True)


def _parse_fraction(name: str) -> tuple[str, float] | None:
    """``(family, fraction)`` of a fraction metric name, else None."""
    for family in _FRACTION_FAMILIES:
        if name.startswith(family + "_"):
            try:
                return family, float(name[len(family) + 1:])
            except ValueError:
                return None
    return None


def _exact_names(ndim: int) -> dict[str, tuple[str, int | None]]:
    """Every ``map`` and ``axis`` metric name of an ``ndim`` map -> (family, axis index or None)."""
    out: dict[str, tuple[str, int | None]] = {}
    for family, metric in METRICS.items():
        if metric.kind == "map":
            out[family] = (family, None)
        elif metric.kind == "axis":
            out.update({f"{family}_{s}": (family, i) for i, s in enumerate(axis_names(ndim))})
    return out


def default_metrics(ndim: int = 2, trf: Any = None) -> list[str]:
    """The metric names ``summarize`` reports (and ``scalar_metrics`` computes by default).

    Args:
        ndim: the map's number of axes.
        trf: the TRF size, or None; with one the ``erf_trf_ratio_*`` names are included.

    Returns:
        The names, in ``METRICS`` order.
    """
    names: list[str] = []
    for family, metric in METRICS.items():
        if metric.default is False or (metric.default == "trf" and trf is None):
            continue
        if metric.kind == "map":
            names.append(family)
        elif metric.kind == "axis":
            names += [f"{family}_{s}" for s in axis_names(ndim)]
        else:
            names += [f"{family}_{f}" for f in metric.default]
    return list(dict.fromkeys(names))


def scalar_metrics(m: ArrayLike, names: Sequence[str] | None = None, trf: Any = None,
                   center: Sequence[float] | None = None) -> dict[str, float]:
    """Flat scalar metrics of a map by name (the ``summarize`` scalar keys).

    Names: ``total, peak``; per axis (suffix from ``axis_names``) ``center_*,
    com_offset_*, sigma_*, erf_size_*, erf_trf_ratio_*`` (needs ``trf``), ``fit_sigma_*``
    (2-D Gaussian fit, slow), ``fit_theta, fit_r2``; with any fraction ``f`` in (0, 1]:
    ``mass_radius_f, area_above_f, area_above_count_f, hcar_f, hcar_log1p_max_f``
    (the families of ``METRICS``).

    Args:
        m: the map.
        names: metric names; None gives ``default_metrics(m.ndim, trf)``.
        trf: the TRF size (one for all axes or one per axis), needed by ``erf_trf_ratio_*``.
        center: the reference point of position metrics (``com_offset_*``), one coordinate per axis in
            pixels: the unit's TRF centre (``ERFResult.trf_center``); default the centre unit n // 2.

    Returns:
        ``{name: value}`` in the order of ``names``.

    Raises:
        ErfError: an invalid map, an unknown name, ``erf_trf_ratio_*`` without ``trf``,
            ``fit_*`` on a map that is not 2-D, or a fraction outside (0, 1].
    """
    a = check_map(m)
    ax = axis_names(a.ndim)
    if names is None:
        names = default_metrics(a.ndim, trf)
    exact = _exact_names(a.ndim)
    ev = _Evaluation(a, names, trf, center)
    out = {}
    for name in names:
        family, arg = _parse_fraction(name) or exact.get(name) or (None, None)
        if family is None:
            raise ErfError(f"unknown metric {name!r} for a {a.ndim}-D map; e.g. sigma_{ax[-1]}, "
                           f"erf_size_{ax[-1]}, mass_radius_0.9, area_above_0.5, hcar_0.5")
        out[name] = METRICS[family].value(ev, name, arg)
    return out


def summarize(m: ArrayLike, trf: Any = None, trf_box: ArrayLike | None = None, *, fits: bool = True,
              center: Sequence[float] | None = None) -> dict:
    """Every metric of one map as a JSON-ready dict (keys in the ``erf.stats`` docstring).

    Args:
        m: the map.
        trf: TRF size per axis (one number = all axes); derived from ``trf_box``
            when only the box is given.
        trf_box: the TRF box, inclusive ``(first, last)`` per axis (may extend past the map).
        fits: False skips the Gaussian fits (``gaussian`` and ``profiles`` are ``None``).
        center: the reference point of the position metrics (``com_offset_*``; reported as
            ``reference_center``): the unit's TRF centre; default the centre unit n // 2.

    Returns:
        The summary (strict JSON: non-finite floats as ``None``).

    Raises:
        ErfError: an invalid map, TRF size or box.
    """
    a = check_map(m)
    ax = axis_names(a.ndim)
    box = None if trf_box is None else check_box(trf_box, a.shape)
    if trf is None and box is not None:
        trf = tuple((box[:, 1] - box[:, 0] + 1).tolist())
    t = None if trf is None else trf_sizes(trf, a.ndim)
    mo = moments(a)
    out = {"ndim": a.ndim, "shape": list(a.shape), "axes": list(ax),
           "total": float(a.sum()), "peak": float(a.max()),
           "peak_index": [int(i) for i in np.unravel_index(int(np.argmax(a)), a.shape)],
           "center_unit": list(center_unit(a.shape)),
           "reference_center": list(center_unit(a.shape) if center is None else map(float, center))}
    scal = scalar_metrics(a, default_metrics(a.ndim, None), trf=None, center=center)
    scal.pop("total"), scal.pop("peak")
    exact = _exact_names(a.ndim)
    first = [k for k in scal if k in exact and METRICS[exact[k][0]].kind == "axis"]
    out.update({k: scal.pop(k) for k in first})
    out["cov"] = [list(r) for r in mo.cov]
    for i, s in enumerate(ax):
        out[f"trf_{s}"] = None if t is None else t[i]
    for i, s in enumerate(ax):
        out[f"erf_trf_ratio_{s}"] = None if t is None else 2.0 * mo.sigma[i] / t[i]
    if box is None:
        out.update(trf_box=None, trf_clipped=None, mass_in_trf=None)
    else:
        frac, clipped = mass_in_box(a, box)
        out.update(trf_box=box.tolist(), trf_clipped=clipped, mass_in_trf=frac)
    out.update(scal)
    out["gaussian"] = out["profiles"] = None
    if fits and a.ndim == 2:
        out["gaussian"] = fit_gaussian(a).to_dict()
        out["profiles"] = {k: v.to_dict() for k, v in fit_profiles(a, mo.center).items()}
    elif fits and a.ndim == 1:
        out["gaussian"] = fit_gaussian_1d(a, name="map").to_dict()
    return to_json(out)


def uniform_map(shape: Sequence[int], box: ArrayLike | None = None) -> np.ndarray:
    """A map of ones over ``box`` (inclusive ``(first, last)`` per axis, cut to the map), zeros elsewhere.

    Args:
        shape: the map's shape.
        box: the region (may extend past the map); None = the whole map.

    Returns:
        The float64 map.

    Raises:
        ErfError: a box of the wrong shape, or one that misses the map.
    """
    out = np.zeros(tuple(int(n) for n in shape))
    if box is None:
        out[...] = 1.0
        return out
    b = check_box(box, out.shape)
    sl = tuple(slice(max(0, int(lo)), min(n - 1, int(hi)) + 1) for (lo, hi), n in zip(b, out.shape))
    if any(x.start >= x.stop for x in sl):
        raise ErfError(f"the box {b.tolist()} does not overlap the {'x'.join(map(str, shape))} map")
    out[sl] = 1.0
    return out


def uniform_reference_names(ndim: int = 2) -> list[str]:
    """The size metrics ``uniform_reference`` compares: sigma, ERF size, mass radii 0.5/0.9/0.95."""
    ax = axis_names(ndim)
    return [f"sigma_{s}" for s in ax] + [f"erf_size_{s}" for s in ax] + \
        ["mass_radius_0.5", "mass_radius_0.9", "mass_radius_0.95"]


#: An ERF whose size is at least this fraction of a uniform map's over its (visible) TRF is *saturated*:
#: it fills its TRF, and "ERF/TRF" then says more about the TRF than about how the net weighs its inputs.
SATURATION = 0.8


def saturation(m: ArrayLike, box: ArrayLike | None = None, threshold: float = SATURATION) -> dict:
    """The ERF against a uniform map over its TRF box (cut to the image), for every map, with a saturation flag.

    ``uniform_reference`` plus ``saturated`` (True when sigma along any axis, or the mass radius 0.5,
    is at least ``threshold`` of the uniform map's; the mass radius 0.9 is reported but left out of
    the flag: any spread map reaches 0.8 of a small box's there), ``saturated_by`` (those metrics) and
    ``threshold``. A uniform 17 px box has 2 sigma = 9.80 px: a 3-conv net whose 2 sigma is 9.8 px
    fills its TRF, whatever its kurtosis.

    Args:
        m: the ERF map.
        box: the TRF box (inclusive, may extend past the map); None = the whole map.
        threshold: the saturation fraction, in (0, 1].

    Returns:
        ``{"region", "uniform", "vs_uniform", "saturated", "saturated_by", "threshold"}``.

    Raises:
        ErfError: an invalid map or box, or a threshold outside (0, 1].
    """
    if not 0 < threshold <= 1:
        raise ErfError(f"threshold must be in (0, 1]; got {threshold}")
    ref = uniform_reference(m, box)
    keys = [k for k in ref["vs_uniform"] if k.startswith("sigma_") or k == "mass_radius_0.5"]
    by = [k for k in keys if ref["vs_uniform"].get(k) is not None and ref["vs_uniform"][k] >= threshold]
    return {**ref, "saturated": bool(by), "saturated_by": by, "threshold": float(threshold)}


def uniform_reference(m: ArrayLike, box: ArrayLike | None = None, names: Sequence[str] | None = None) -> dict:
    """The ERF's size metrics against a uniform map over the visible region (a clipped or global TRF).

    Where the TRF reaches past the image (or covers all of it), the ERF cannot be wider than the
    visible part of the TRF: a uniform map over that region is the largest it can be. A 224 x 224
    uniform map has sigma 64.7 and mass_radius_0.9 124.9 px; an ERF "far smaller than its TRF"
    is only that if it is far smaller than this reference.

    Args:
        m: the ERF map.
        box: the TRF box (inclusive, may extend past the map); None = the whole map.
        names: size metrics (default ``uniform_reference_names``).

    Returns:
        ``{"region": [[first, last], ...] (the box cut to the map), "uniform": {name: value},
        "vs_uniform": {name: ERF value / uniform value}}``.

    Raises:
        ErfError: an invalid map or box, or an unknown name.
    """
    a = check_map(m)
    u = uniform_map(a.shape, box)
    names = list(names or uniform_reference_names(a.ndim))
    ref = scalar_metrics(u, names)
    own = scalar_metrics(a, names)
    nz = np.argwhere(u > 0)
    region = [[int(lo), int(hi)] for lo, hi in zip(nz.min(0), nz.max(0))]
    return to_json({"region": region, "uniform": ref,
                    "vs_uniform": {k: (own[k] / ref[k] if ref[k] else math.nan) for k in names}})
