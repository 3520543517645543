"""Statistics of effective receptive field (ERF) maps.

An ERF **map** is a non-negative float array over input pixels (1-D, 2-D or 3-D;
2-D is the usual case) -- by default the mean over samples of |d unit / d input|
for one output unit.  Pixel ``i`` of an axis has coordinate ``i`` (pixel centres
are at integers), axes are ordered like the array: ``(y, x)`` for 2-D maps,
``(z, y, x)`` for 3-D, ``(x,)`` for 1-D.

Definitions used everywhere in ``erf`` (defined once, here)
-----------------------------------------------------------
* **sigma** (per axis): square root of the second central moment of the map,
  treated as a mass distribution (``moments``).
* **ERF size** (per axis) = ``2 * sigma``.  Luo et al.'s ``sqrt(n)`` law is about
  this width; for a Gaussian ERF it is the full width at ~60 % of the peak.
* **ERF/TRF ratio** (per axis): ``erf_trf_ratio = 2 * sigma / trf`` where ``trf`` is
  the theoretical receptive field size in pixels along that axis.
* **centre unit**: ``center_unit(shape)`` -- index ``n // 2`` per axis.

Uncertainty comes from per-**group** statistics: ``group_sums`` (G, *spatial) is the
sum of the per-sample maps of each group and ``group_counts`` (G,) the number of
samples in it; the mean map is ``group_sums.sum(0) / group_counts.sum()``.

``summarize`` keys (2-D map; for other ndim the axis suffixes follow ``axes``)
-----------------------------------------------------------------------------
``ndim, shape, axes`` -- the map's geometry.
``total, peak, peak_index`` -- sum, maximum and argmax (list) of the map.
``center_unit`` -- ``center_unit(shape)`` as a list.
``center_y, center_x`` -- centre of mass; ``com_offset_y, com_offset_x`` -- centre of
mass minus centre unit.
``sigma_y, sigma_x`` -- moment sigma; ``cov`` -- covariance matrix (list of lists).
``erf_size_y, erf_size_x`` -- ``2 * sigma``.
``trf_y, trf_x`` and ``erf_trf_ratio_y, erf_trf_ratio_x`` -- ``None`` without a TRF.
``trf_box`` (list of [first, last] per axis), ``trf_clipped`` (bool: the box extends past
the map), ``mass_in_trf`` (fraction of the map's mass inside the clipped box) --
``None`` without a box.
``mass_radius_0.5, mass_radius_0.9, mass_radius_0.95`` -- see ``mass_radius``.
``area_above_0.1, area_above_0.5`` (fraction of pixels) and ``area_above_count_0.1,
area_above_count_0.5`` (pixel counts) -- see ``area_above``.
``hcar_0.2, hcar_0.3, hcar_0.5, hcar_0.99`` -- high-contribution area ratio of the raw
map; ``hcar_log1p_max_*`` -- the same after RepLKNet's log10(1+x)/max preprocessing
(the number their paper reports).
``gaussian`` -- ``fit_gaussian(m).to_dict()`` (2-D) / ``fit_gaussian_1d(m).to_dict()``
(1-D) / ``None`` (3-D).  ``profiles`` -- ``{name: fit.to_dict()}`` from
``fit_profiles`` (2-D only, else ``None``).
Non-finite floats are written as ``None`` so the dict is strict JSON.

The flat scalar names (``sigma_y``, ``mass_radius_0.9``, ``hcar_0.5`` ...) are also the
metric names accepted by ``scalar_metrics`` and ``metric_intervals``.

Map-definition presets (``PRESETS``, applied by the engine with ``reduce_target``,
``reduce_gradient`` and ``apply_post``)
------------------------------------------------------------------------------
* ``luo`` (default): target = sum over channels of the centre unit; per-sample map =
  |input gradient| summed over input channels; mean over samples; no post.
  Luo et al. average the gradient itself, but with random weights the signed
  gradient averages to ~0 by sign symmetry, so we average its magnitude: how much
  each pixel can move the unit, whatever the sign.  Summing channels keeps the
  map's scale independent of how channels are weighted.
* ``replknet`` (Ding et al., CVPR 2022): target = sum over channels of ReLU(centre
  activation); map = positive part of the gradient, per element, summed over input
  channels; mean over samples; then log10(1+x)/max (their preprocessing for the
  high-contribution area ratio and heatmaps).  Ignores negative influence.
* ``openerf``: target = channel *mean* of the centre activation; map = gradient
  averaged over input channels *then* clipped at zero (signs of channels can
  cancel, unlike the two above); normalised to sum 1.
The sigma-type metrics are scale free, so ``sum1`` does not change them, but
``log1p_max`` does (it flattens the peak): compute sigma on the raw mean map and
use ``hcar_log1p_max_*`` for RepLKNet's number.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import optimize
from scipy import stats as _sps

from erf.errors import ErfError
from erf.io import to_json

__all__ = [
    "PRESETS", "Preset", "apply_post", "reduce_gradient", "reduce_target",
    "center_unit", "axis_names", "moments", "Moments", "erf_size", "erf_trf_ratio",
    "GaussianFit", "Gaussian1DFit", "fit_gaussian", "fit_gaussian_1d", "fit_profiles",
    "mass_radius", "area_above", "high_contribution_area_ratio", "mass_in_box",
    "summarize", "scalar_metrics", "default_interval_metrics", "metric_intervals",
    "standard_error_map", "relative_se_of_sigma", "PowerLawFit", "fit_power_law",
]

# --------------------------------------------------------------------------- presets

_TARGET_REDUCE = ("sum", "mean")
_SIGNALS = ("abs", "positive", "signed", "square")
_POSTS = (None, "log1p_max", "sum1")


@dataclass(frozen=True)
class Preset:
    """How an ERF map is defined, as data the engine applies.

    * ``target_reduce``/``target_relu``: the scalar whose gradient is taken -- the
      centre unit's activation vector over output channels, optionally ReLU'd, then
      summed or averaged over channels (``reduce_target``).
    * ``signal``: what is kept of the input gradient: ``abs`` |g|, ``positive`` max(g, 0),
      ``signed`` g, ``square`` g**2.
    * ``channel_reduce``: how input channels are combined (``sum``/``mean``).
    * ``signal_first``: apply ``signal`` per channel before the channel reduction
      (True) or to the channel-reduced gradient (False) -- see ``reduce_gradient``.
    * ``post``: applied to the final mean map (``apply_post``): ``None``,
      ``log1p_max`` = log10(1+x)/max, ``sum1`` = x/sum.
    """

    name: str
    target_reduce: str
    target_relu: bool
    signal: str
    channel_reduce: str
    post: str | None
    signal_first: bool = True
    description: str = field(default="", compare=False)

    def __post_init__(self):
        if self.target_reduce not in _TARGET_REDUCE:
            raise ErfError(f"preset {self.name!r}: target_reduce must be 'sum' or 'mean', got {self.target_reduce!r}")
        if self.channel_reduce not in _TARGET_REDUCE:
            raise ErfError(f"preset {self.name!r}: channel_reduce must be 'sum' or 'mean', got {self.channel_reduce!r}")
        if self.signal not in _SIGNALS:
            raise ErfError(f"preset {self.name!r}: signal must be one of {_SIGNALS}, got {self.signal!r}")
        if self.post not in _POSTS:
            raise ErfError(f"preset {self.name!r}: post must be one of {_POSTS}, got {self.post!r}")

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, Preset] = {
    # Default.  Luo et al. (NIPS 2016) back-propagate a 1 at the centre output unit
    # (all channels: the target is their sum) and average the input gradient over
    # samples.  With random weights the signed gradient averages to ~0 (sign
    # symmetry), so we average |grad| instead, summed over input channels: it
    # measures how strongly each pixel influences the unit, whatever the sign.
    "luo": Preset("luo", "sum", False, "abs", "sum", None, True,
                  "Luo et al. 2016: d(sum of centre unit's channels)/d input, |grad| summed over "
                  "input channels, averaged over samples; no post-processing."),
    # RepLKNet (Ding et al., CVPR 2022, erf/visualize_erf.py): target = sum over
    # channels of ReLU(centre activation); relu(grad) per element summed over input
    # channels and samples; analyze_erf.py then takes log10(1+x) and divides by the
    # max before the high-contribution area ratio and the heatmap.
    "replknet": Preset("replknet", "sum", True, "positive", "sum", "log1p_max", True,
                       "RepLKNet 2022: d(sum ReLU(centre activation))/d input, positive part summed over "
                       "input channels, averaged; then log10(1+x)/max."),
    # OpenERF-style: target = channel mean of the centre activation; the input
    # gradient is averaged over input channels *then* clipped at zero; the map is
    # normalised to sum 1 (a distribution over pixels).
    "openerf": Preset("openerf", "mean", False, "positive", "mean", "sum1", False,
                      "OpenERF-style: d(channel mean of centre activation)/d input, averaged over input "
                      "channels then clipped at 0, normalised to sum 1."),
}


def _is_torch(a) -> bool:
    return type(a).__module__.split(".")[0] == "torch"


def _reduce(a, how: str, axis: int):
    if _is_torch(a):
        return a.sum(dim=axis) if how == "sum" else a.mean(dim=axis)
    return a.sum(axis=axis) if how == "sum" else a.mean(axis=axis)


def _signal(a, signal: str):
    if signal == "abs":
        return abs(a)
    if signal == "positive":
        return a.clamp(min=0) if _is_torch(a) else np.maximum(a, 0)
    if signal == "square":
        return a * a
    return a


def reduce_target(center_activation, preset: Preset | str = "luo"):
    """Per-sample scalar target from the centre unit's activations (..., C): channels last.

    Works on numpy arrays and torch tensors (gradients flow through).
    """
    p = get_preset(preset)
    a = center_activation
    if p.target_relu:
        a = _signal(a, "positive")
    return _reduce(a, p.target_reduce, -1)


def reduce_gradient(grad, preset: Preset | str = "luo", channel_axis: int = 1):
    """Per-sample map from an input gradient (e.g. (B, C, H, W)): signal + channel reduction.

    Order follows ``preset.signal_first``.  Works on numpy arrays and torch tensors.
    """
    p = get_preset(preset)
    if p.signal_first:
        return _reduce(_signal(grad, p.signal), p.channel_reduce, channel_axis)
    return _signal(_reduce(grad, p.channel_reduce, channel_axis), p.signal)


def get_preset(preset) -> Preset:
    if isinstance(preset, Preset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ErfError(f"unknown ERF preset {preset!r}; choose one of {sorted(PRESETS)}") from None


def apply_post(m, post: str | None) -> np.ndarray:
    """Post-process a mean map: ``None`` (copy), ``'log1p_max'`` (log10(1+x)/max), ``'sum1'`` (x/sum)."""
    m = np.array(m, dtype=np.float64)
    if post is None:
        return m
    if post == "log1p_max":
        m = np.log10(1.0 + m)
        peak = np.max(m) if m.size else 0.0
        if not np.isfinite(peak) or peak <= 0:
            raise ErfError("cannot apply 'log1p_max': the map's maximum is not positive")
        return m / peak
    if post == "sum1":
        total = m.sum()
        if not np.isfinite(total) or total <= 0:
            raise ErfError("cannot apply 'sum1': the map's sum is not positive")
        return m / total
    raise ErfError(f"unknown post-processing {post!r}; choose one of {_POSTS}")


# --------------------------------------------------------------------------- basics

def center_unit(shape) -> tuple[int, ...]:
    """Index of the centre unit of a map of ``shape``: ``n // 2`` per axis.

    For odd ``n`` this is the exact centre; for even ``n`` it is the lower/right
    one of the two central pixels (the lower-right of the central 2x2 in 2-D).
    """
    return tuple(int(n) // 2 for n in shape)


def axis_names(ndim: int) -> tuple[str, ...]:
    """Axis suffixes used in metric names: ('x',), ('y', 'x') or ('z', 'y', 'x')."""
    return {1: ("x",), 2: ("y", "x"), 3: ("z", "y", "x")}.get(ndim) or tuple(f"a{i}" for i in range(ndim))


def check_map(m, what: str = "ERF map", ndims=(1, 2, 3)) -> np.ndarray:
    try:
        a = np.asarray(m, dtype=np.float64)
    except (TypeError, ValueError):
        raise ErfError(f"{what} must be a numeric array; got {type(m).__name__}") from None
    if a.ndim not in ndims:
        raise ErfError(f"{what} must have {' or '.join(map(str, ndims))} dimensions; got shape {a.shape}")
    if a.size == 0:
        raise ErfError(f"{what} is empty (shape {a.shape})")
    if not np.all(np.isfinite(a)):
        raise ErfError(f"{what} contains NaN or inf values ({int(np.sum(~np.isfinite(a)))} pixels)")
    if np.any(a < 0):
        raise ErfError(f"{what} has negative values (min {a.min():.3g}); ERF statistics need a "
                       "non-negative map (use |grad| or clip at 0)")
    if not a.sum() > 0:
        raise ErfError(f"{what} is all zero: no input pixel influences the unit")
    return a


@dataclass(frozen=True)
class Moments:
    """Centre of mass, per-axis sigma and covariance (array axis order)."""

    center: tuple[float, ...]
    sigma: tuple[float, ...]
    cov: tuple[tuple[float, ...], ...]
    total: float

    def to_dict(self) -> dict:
        return to_json(asdict(self))


def moments(m) -> Moments:
    """Moments of a non-negative map seen as a mass distribution over pixel coordinates."""
    a = check_map(m)
    total = a.sum()
    grids = np.indices(a.shape, dtype=np.float64).reshape(a.ndim, -1)
    w = a.ravel() / total
    center = grids @ w
    d = grids - center[:, None]
    cov = (d * w) @ d.T
    sigma = np.sqrt(np.clip(np.diag(cov), 0, None))
    return Moments(tuple(center.tolist()), tuple(sigma.tolist()),
                   tuple(tuple(r) for r in cov.tolist()), float(total))


def erf_size(m) -> tuple[float, ...]:
    """ERF size per axis = 2 * moment sigma (see module docstring)."""
    return tuple(2.0 * s for s in moments(m).sigma)


def _trf_tuple(trf, ndim: int) -> tuple[float, ...]:
    t = np.atleast_1d(np.asarray(trf, dtype=np.float64))
    if t.size == 1:
        t = np.repeat(t, ndim)
    if t.size != ndim or not np.all(t > 0):
        raise ErfError(f"trf must be {ndim} positive sizes (one per axis); got {trf!r}")
    return tuple(t.tolist())


def erf_trf_ratio(m, trf) -> tuple[float, ...]:
    """ERF/TRF per axis = 2 * sigma / trf."""
    mo = moments(m)
    t = _trf_tuple(trf, len(mo.sigma))
    return tuple(2.0 * s / ti for s, ti in zip(mo.sigma, t))


# --------------------------------------------------------------------------- Gaussian fits

@dataclass(frozen=True)
class GaussianFit:
    """2-D Gaussian ``amplitude * exp(-(u^2/sx^2 + v^2/sy^2)/2) + offset``.

    ``u = cos(t) dx + sin(t) dy``, ``v = -sin(t) dx + cos(t) dy`` with ``dx = x - cx``,
    ``dy = y - cy``: ``sx`` is the width along direction ``(cos t, sin t)`` in (x, y)
    (rotation from the x axis towards +y, i.e. downwards in an image).  ``theta`` is
    canonical in (-pi/4, pi/4], so ``sx``/``sy`` are the widths of the principal axes
    nearest to x/y.  ``stderr`` holds the fit's standard errors.
    """

    ok: bool
    reason: str
    amplitude: float = math.nan
    center: tuple[float, float] = (math.nan, math.nan)
    sigma: tuple[float, float] = (math.nan, math.nan)
    theta: float = math.nan
    offset: float = math.nan
    r2: float = math.nan
    stderr: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return to_json(asdict(self))

    def evaluate(self, shape) -> np.ndarray:
        """The model on a grid of ``shape`` (pixel coordinates)."""
        yy, xx = np.indices(shape, dtype=np.float64)
        return _gauss2d((yy.ravel(), xx.ravel()), self.amplitude, *self.center, *self.sigma,
                        self.theta, self.offset).reshape(shape)


@dataclass(frozen=True)
class Gaussian1DFit:
    """1-D Gaussian ``amplitude * exp(-(x - center)^2 / (2 sigma^2)) + offset``.

    ``name`` says which data were fitted (e.g. 'row', 'x_marginal'), ``axis`` the
    coordinate axis ('x' or 'y').
    """

    ok: bool
    reason: str
    name: str = ""
    axis: str = ""
    amplitude: float = math.nan
    center: float = math.nan
    sigma: float = math.nan
    offset: float = math.nan
    r2: float = math.nan

    def to_dict(self) -> dict:
        return to_json(asdict(self))

    def evaluate(self, x) -> np.ndarray:
        return _gauss1d(np.asarray(x, dtype=np.float64), self.amplitude, self.center, self.sigma, self.offset)


def _gauss2d(yx, amp, cy, cx, sy, sx, theta, offset):
    y, x = yx
    dy, dx = y - cy, x - cx
    c, s = np.cos(theta), np.sin(theta)
    u = c * dx + s * dy
    v = -s * dx + c * dy
    return amp * np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2)) + offset


def _gauss1d(x, amp, c, s, offset):
    return amp * np.exp(-0.5 * ((x - c) / s) ** 2) + offset


def _canonical(sy, sx, theta):
    theta = (theta + math.pi / 2) % math.pi - math.pi / 2      # (-pi/2, pi/2]
    if theta > math.pi / 4:
        sy, sx, theta = sx, sy, theta - math.pi / 2
    elif theta <= -math.pi / 4:
        sy, sx, theta = sx, sy, theta + math.pi / 2
    return sy, sx, theta


def _r2(data, model) -> float:
    ss_tot = float(np.sum((data - data.mean()) ** 2))
    return 1.0 - float(np.sum((data - model) ** 2)) / ss_tot if ss_tot > 0 else math.nan


def fit_gaussian(m, maxfev: int = 4000) -> GaussianFit:
    """Fit a rotated 2-D Gaussian with offset by least squares, started from the moments.

    Never raises for a valid map: a failed fit returns ``ok=False`` with ``reason``.
    """
    a = check_map(m, ndims=(2,))
    base = a.min()
    if a.max() - base <= 0:
        return GaussianFit(False, "map is constant: no peak to fit")
    mo = moments(a - base)
    (cyy, cyx), (_, cxx) = mo.cov
    theta0 = 0.5 * math.atan2(2 * cyx, cxx - cyy)
    c, s = math.cos(theta0), math.sin(theta0)
    sx0 = math.sqrt(max(cxx * c * c + 2 * cyx * s * c + cyy * s * s, 0.25))
    sy0 = math.sqrt(max(cxx * s * s - 2 * cyx * s * c + cyy * c * c, 0.25))
    sy0, sx0, theta0 = _canonical(sy0, sx0, theta0)
    h, w = a.shape
    big = 10.0 * max(h, w)
    p0 = [a.max() - base, *mo.center, sy0, sx0, theta0, base]
    lo = [0.0, -h, -w, 1e-3, 1e-3, -math.pi, -np.inf]
    hi = [np.inf, 2 * h, 2 * w, big, big, math.pi, np.inf]
    p0 = np.clip(p0, np.nextafter(lo, 1), np.nextafter(hi, -1))
    yy, xx = np.indices(a.shape, dtype=np.float64)
    coords = (yy.ravel(), xx.ravel())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            popt, pcov = optimize.curve_fit(_gauss2d, coords, a.ravel(), p0=p0, bounds=(lo, hi), maxfev=maxfev)
    except (RuntimeError, ValueError, optimize.OptimizeWarning, FloatingPointError) as e:
        return GaussianFit(False, f"curve_fit failed: {e}")
    if not np.all(np.isfinite(popt)):
        return GaussianFit(False, "fit returned non-finite parameters")
    amp, cy, cx, sy, sx, theta, off = popt.tolist()
    r2 = _r2(a.ravel(), _gauss2d(coords, *popt))
    perr = np.sqrt(np.clip(np.diag(pcov), 0, None)) if np.all(np.isfinite(pcov)) else np.full(7, np.nan)
    sy_c, sx_c, theta_c = _canonical(sy, sx, theta)
    swapped = sy_c != sy
    names = ["amplitude", "center_y", "center_x", "sigma_y", "sigma_x", "theta", "offset"]
    stderr = dict(zip(names, perr.tolist()))
    if swapped:
        stderr["sigma_y"], stderr["sigma_x"] = stderr["sigma_x"], stderr["sigma_y"]
    if amp <= 0:
        return GaussianFit(False, "fitted amplitude is zero: no peak", amp, (cy, cx), (sy_c, sx_c), theta_c, off, r2, stderr)
    return GaussianFit(True, "", amp, (cy, cx), (sy_c, sx_c), theta_c, off, r2, stderr)


def fit_gaussian_1d(y, x=None, *, name: str = "", axis: str = "x", maxfev: int = 2000) -> Gaussian1DFit:
    """Fit ``amplitude * exp(-(x-c)^2/(2 s^2)) + offset`` to a non-negative 1-D profile."""
    a = check_map(y, what=f"profile {name or ''}".strip(), ndims=(1,))
    x = np.arange(a.size, dtype=np.float64) if x is None else np.asarray(x, dtype=np.float64)
    base = a.min()
    if a.max() - base <= 0 or a.size < 4:
        return Gaussian1DFit(False, "profile is constant or has < 4 points", name, axis)
    w = (a - base) / (a - base).sum()
    c0 = float(w @ x)
    s0 = max(math.sqrt(float(w @ (x - c0) ** 2)), 0.5)
    span = float(x.max() - x.min()) + 1
    lo = [0.0, x.min() - span, 1e-3, -np.inf]
    hi = [np.inf, x.max() + span, 10 * span, np.inf]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            popt, _ = optimize.curve_fit(_gauss1d, x, a, p0=[a.max() - base, c0, min(s0, 9 * span), base],
                                         bounds=(lo, hi), maxfev=maxfev)
    except (RuntimeError, ValueError, optimize.OptimizeWarning, FloatingPointError) as e:
        return Gaussian1DFit(False, f"curve_fit failed: {e}", name, axis)
    if not np.all(np.isfinite(popt)):
        return Gaussian1DFit(False, "fit returned non-finite parameters", name, axis)
    r2 = _r2(a, _gauss1d(x, *popt))
    ok = popt[0] > 0
    amp, c, sig, off = (float(v) for v in popt)
    return Gaussian1DFit(bool(ok), "" if ok else "fitted amplitude is zero", name, axis, amp, c, sig, off, r2)


def fit_profiles(m, center=None) -> dict[str, Gaussian1DFit]:
    """1-D Gaussian fits of a 2-D map's centre lines and marginals.

    Keys: ``row`` -- the row through the centre, ``m[cy, :]`` (a function of x);
    ``col`` -- the column through the centre, ``m[:, cx]`` (function of y);
    ``x_marginal`` -- ``m.sum(axis=0)`` (function of x); ``y_marginal`` --
    ``m.sum(axis=1)`` (function of y).  The centre defaults to the centre of mass
    rounded to the nearest pixel.  For a Gaussian map the marginal sigmas equal the
    moment sigmas; the centre-line sigmas equal them only without rotation.
    """
    a = check_map(m, ndims=(2,))
    if center is None:
        center = moments(a).center
    cy = int(np.clip(round(center[0]), 0, a.shape[0] - 1))
    cx = int(np.clip(round(center[1]), 0, a.shape[1] - 1))
    out = {}
    for name, axis, prof in (("row", "x", a[cy, :]), ("col", "y", a[:, cx]),
                             ("x_marginal", "x", a.sum(axis=0)), ("y_marginal", "y", a.sum(axis=1))):
        if not prof.sum() > 0:
            out[name] = Gaussian1DFit(False, "profile is all zero", name, axis)
        else:
            out[name] = fit_gaussian_1d(prof, name=name, axis=axis)
    return out


# --------------------------------------------------------------------------- size metrics

def _fractions(fractions, what: str) -> tuple[float, ...]:
    fs = tuple(float(f) for f in np.atleast_1d(fractions))
    if not fs or any(not (0 < f <= 1) for f in fs):
        raise ErfError(f"{what} must be in (0, 1]; got {fractions!r}")
    return fs


def mass_radius(m, fractions=(0.5, 0.9, 0.95), center=None) -> dict[float, float]:
    """Radius of the smallest disc (ball) around ``center`` holding each fraction of the mass.

    ``center`` defaults to the centre of mass.  Pixels are point masses at their
    centres; the cumulative mass is interpolated linearly in radius between
    successive pixel distances (starting from (0, 0)), so the radius is continuous
    in the fraction.  Returns ``{fraction: radius}`` in pixels.
    """
    a = check_map(m)
    fs = _fractions(fractions, "mass fractions")
    c = np.asarray(moments(a).center if center is None else center, dtype=np.float64)
    if c.shape != (a.ndim,):
        raise ErfError(f"center must have {a.ndim} coordinates; got {center!r}")
    grids = np.indices(a.shape, dtype=np.float64).reshape(a.ndim, -1)
    r = np.sqrt(((grids - c[:, None]) ** 2).sum(0))
    order = np.argsort(r, kind="stable")
    r = np.concatenate([[0.0], r[order]])
    cum = np.concatenate([[0.0], np.cumsum(a.ravel()[order])])
    out = {}
    for f in fs:
        target = f * cum[-1]
        k = min(int(np.searchsorted(cum, target, side="left")), len(cum) - 1)
        k = max(k, 1)
        c0, c1 = cum[k - 1], cum[k]
        t = 0.0 if c1 <= c0 else (target - c0) / (c1 - c0)
        out[f] = float(r[k - 1] + t * (r[k] - r[k - 1]))
    return out


def area_above(m, fractions=(0.1, 0.5)) -> dict[float, dict]:
    """Pixels with value strictly above ``fraction * peak``.

    Returns ``{fraction: {"fraction": share of the map's pixels, "count": n}}``.
    """
    a = check_map(m)
    fs = _fractions(fractions, "peak fractions")
    peak = a.max()
    out = {}
    for f in fs:
        n = int(np.count_nonzero(a > f * peak))
        out[f] = {"fraction": n / a.size, "count": n}
    return out


def high_contribution_area_ratio(m, thresholds=(0.2, 0.3, 0.5, 0.99), transform=None) -> dict[float, float]:
    """RepLKNet's high-contribution area ratio (Ding et al., CVPR 2022).

    For each threshold ``t``: the area of the smallest square (cube) centred on the
    centre unit whose sum is >= ``t * total``, divided by the map's area.  Squares
    have odd sides 1, 3, 5, ... and are clipped by the map (the clipped area is
    counted).  ``transform='log1p_max'`` first applies log10(1+x)/max as RepLKNet's
    analyze_erf.py does; a callable is applied as is.  Differences from their
    script: we start at side 1 (they start at 3), use >= (they use >), and clip
    squares instead of giving up at the border.
    """
    a = check_map(m)
    ts = _fractions(thresholds, "thresholds")
    if transform is not None:
        a = check_map(transform(a) if callable(transform) else apply_post(a, transform), "transformed map")
    c = np.asarray(center_unit(a.shape)).reshape(-1, 1)
    grids = np.indices(a.shape).reshape(a.ndim, -1)
    d = np.abs(grids - c).max(0)                      # Chebyshev distance: half-side of the square
    mass = np.cumsum(np.bincount(d, weights=a.ravel()))
    area = np.cumsum(np.bincount(d))
    total = mass[-1]
    out = {}
    for t in ts:
        k = int(np.searchsorted(mass, t * total * (1 - 1e-12), side="left"))
        out[t] = float(area[min(k, len(area) - 1)] / a.size)
    return out


def _box(trf_box, shape):
    b = np.asarray(trf_box, dtype=np.float64)
    if b.shape != (len(shape), 2) or not np.all(np.isfinite(b)) or np.any(b[:, 1] < b[:, 0]):
        raise ErfError(f"trf_box must be {len(shape)} inclusive (first, last) pairs, e.g. ((top, bottom), "
                       f"(left, right)); got {trf_box!r}")
    return b


def mass_in_box(m, box) -> tuple[float, bool]:
    """Fraction of the map's mass inside an inclusive box ((first, last) per axis), clipped to the map.

    Returns ``(fraction, clipped)`` where ``clipped`` says the box extends past the map.
    """
    a = check_map(m)
    b = _box(box, a.shape)
    clipped = bool(np.any(b[:, 0] < 0) or np.any(b[:, 1] > np.asarray(a.shape) - 1))
    sl = tuple(slice(int(max(math.ceil(lo), 0)), int(max(math.floor(hi) + 1, 0))) for lo, hi in b)
    return float(a[sl].sum() / a.sum()), clipped


# --------------------------------------------------------------------------- summary

_FRACTION_PREFIXES = ("hcar_log1p_max_", "area_above_count_", "area_above_", "mass_radius_", "hcar_")


def _parse_fraction(name: str):
    for p in _FRACTION_PREFIXES:
        if name.startswith(p):
            try:
                return p[:-1], float(name[len(p):])
            except ValueError:
                return None
    return None


def scalar_metrics(m, names=None, trf=None) -> dict[str, float]:
    """Flat scalar metrics of a map by name (the ``summarize`` scalar keys).

    Names: ``total, peak``; per axis (suffix from ``axis_names``) ``center_*,
    com_offset_*, sigma_*, erf_size_*, erf_trf_ratio_*`` (needs ``trf``), ``fit_sigma_*``
    (2-D Gaussian fit, slow), ``fit_theta, fit_r2``; with any fraction ``f`` in (0, 1]:
    ``mass_radius_f, area_above_f, area_above_count_f, hcar_f, hcar_log1p_max_f``.
    ``names=None`` gives the default set of ``summarize``.
    """
    a = check_map(m)
    ax = axis_names(a.ndim)
    if names is None:
        names = [k for k, v in _scalar_defaults(a.ndim, trf).items()]
    cache: dict = {}

    def get(key, fn):
        if key not in cache:
            cache[key] = fn()
        return cache[key]

    mo = lambda: get("mo", lambda: moments(a))  # noqa: E731
    out = {}
    for name in names:
        if name == "total":
            out[name] = float(a.sum())
            continue
        if name == "peak":
            out[name] = float(a.max())
            continue
        if name in ("fit_theta", "fit_r2"):
            fit = get("fit", lambda: fit_gaussian(a))
            out[name] = float(fit.theta if name == "fit_theta" else fit.r2) if fit.ok else math.nan
            continue
        pf = _parse_fraction(name)
        if pf is not None:
            kind, f = pf
            fam = "area_above" if kind == "area_above_count" else kind
            if fam not in cache:                  # one pass per family for all requested fractions
                fs = sorted({p[1] for p in map(_parse_fraction, names) if p and p[0].startswith(fam)
                             and (fam != "hcar" or p[0] == "hcar")})
                if fam == "mass_radius":
                    cache[fam] = mass_radius(a, fs)
                elif fam == "area_above":
                    cache[fam] = area_above(a, fs)
                else:
                    cache[fam] = high_contribution_area_ratio(a, fs, "log1p_max" if fam == "hcar_log1p_max" else None)
            v = cache[fam][f]
            out[name] = float(v["fraction"] if kind == "area_above" else v["count"]) if fam == "area_above" else v
            continue
        base, _, suffix = name.rpartition("_")
        if suffix not in ax or base not in ("center", "com_offset", "sigma", "erf_size", "erf_trf_ratio", "fit_sigma"):
            raise ErfError(f"unknown metric {name!r} for a {a.ndim}-D map; e.g. sigma_{ax[-1]}, "
                           f"erf_size_{ax[-1]}, mass_radius_0.9, area_above_0.5, hcar_0.5")
        i = ax.index(suffix)
        if base == "center":
            out[name] = mo().center[i]
        elif base == "com_offset":
            out[name] = mo().center[i] - center_unit(a.shape)[i]
        elif base == "sigma":
            out[name] = mo().sigma[i]
        elif base == "erf_size":
            out[name] = 2.0 * mo().sigma[i]
        elif base == "erf_trf_ratio":
            if trf is None:
                raise ErfError(f"metric {name!r} needs the TRF size (trf=...)")
            out[name] = 2.0 * mo().sigma[i] / _trf_tuple(trf, a.ndim)[i]
        else:
            if a.ndim != 2:
                raise ErfError(f"metric {name!r} needs a 2-D map")
            fit = get("fit", lambda: fit_gaussian(a))
            out[name] = float(fit.sigma[i]) if fit.ok else math.nan
    return out


def _scalar_defaults(ndim, trf) -> dict:
    ax = axis_names(ndim)
    keys = ["total", "peak"]
    keys += [f"{b}_{s}" for b in ("center", "com_offset", "sigma", "erf_size") for s in ax]
    if trf is not None:
        keys += [f"erf_trf_ratio_{s}" for s in ax]
    keys += [f"mass_radius_{f}" for f in (0.5, 0.9, 0.95)]
    keys += [f"area_above_{f}" for f in (0.1, 0.5)] + [f"area_above_count_{f}" for f in (0.1, 0.5)]
    keys += [f"hcar_{t}" for t in (0.2, 0.3, 0.5, 0.99)] + [f"hcar_log1p_max_{t}" for t in (0.2, 0.3, 0.5, 0.99)]
    return dict.fromkeys(keys)


def summarize(m, trf=None, trf_box=None, *, fits: bool = True) -> dict:
    """Every metric of one map as a JSON-ready dict (keys in the module docstring).

    ``trf``: TRF size per axis (one number = all axes); derived from ``trf_box``
    when only the box is given.  ``fits=False`` skips the Gaussian fits (``None``).
    """
    a = check_map(m)
    ax = axis_names(a.ndim)
    box = None if trf_box is None else _box(trf_box, a.shape)
    if trf is None and box is not None:
        trf = tuple((box[:, 1] - box[:, 0] + 1).tolist())
    t = None if trf is None else _trf_tuple(trf, a.ndim)
    mo = moments(a)
    out = {"ndim": a.ndim, "shape": list(a.shape), "axes": list(ax),
           "total": float(a.sum()), "peak": float(a.max()),
           "peak_index": [int(i) for i in np.unravel_index(int(np.argmax(a)), a.shape)],
           "center_unit": list(center_unit(a.shape))}
    scal = scalar_metrics(a, list(_scalar_defaults(a.ndim, None)), trf=None)
    scal.pop("total"), scal.pop("peak")
    first = [k for k in scal if k.startswith(("center_", "com_offset_", "sigma_", "erf_size_"))]
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


# --------------------------------------------------------------------------- uncertainty

def _check_groups(group_sums, group_counts):
    s = np.asarray(group_sums, dtype=np.float64)
    n = np.asarray(group_counts, dtype=np.float64).ravel()
    if s.ndim < 2 or s.shape[0] != n.size:
        raise ErfError(f"group_sums must be (G, *map_shape) with G = len(group_counts); got shapes "
                       f"{s.shape} and {n.shape}")
    if not np.all(np.isfinite(s)) or not np.all(np.isfinite(n)):
        raise ErfError("group_sums / group_counts contain NaN or inf")
    if np.any(n < 0) or not n.sum() > 0:
        raise ErfError(f"group_counts must be non-negative with a positive total; got {n.tolist()}")
    empty = n == 0
    if np.any(s[empty] != 0):
        raise ErfError("a group with count 0 has non-zero sums")
    return s[~empty], n[~empty]


def default_interval_metrics(ndim: int = 2, trf=None) -> tuple[str, ...]:
    """Metrics bootstrapped by default: sigma, ERF size, (ERF/TRF), mass radii 50 % and 90 %."""
    ax = axis_names(ndim)
    names = [f"sigma_{s}" for s in ax] + [f"erf_size_{s}" for s in ax]
    if trf is not None:
        names += [f"erf_trf_ratio_{s}" for s in ax]
    return tuple(names + ["mass_radius_0.5", "mass_radius_0.9"])


def metric_intervals(group_sums, group_counts, metrics=None, level=0.95, n_boot=200, seed=0,
                     *, trf=None, post=None, method: str = "expanded") -> dict:
    """Bootstrap intervals over groups.

    Each replicate resamples G groups with replacement, forms the mean map
    (sum of their sums / sum of their counts), applies ``post`` and recomputes the
    metrics.  ``metrics``: names understood by ``scalar_metrics`` or a dict
    ``{name: callable(map) -> float}``; default ``default_interval_metrics``.
    ``method='percentile'``: plain percentile interval (undercovers for few groups,
    e.g. ~85 % instead of 95 % with G = 8); ``'expanded'`` (default): Hesterberg's
    expanded percentile interval, which takes the percentiles at
    ``Phi(+-sqrt(G/(G-1)) * t_{G-1})`` instead of ``Phi(+-z)`` -- same shape, widened
    for small G, close to the percentile interval for large G.
    Returns ``{name: (lo, hi)}``, or ``{name: None}`` when fewer than 2 groups have samples.
    """
    s, n = _check_groups(group_sums, group_counts)
    if not 0 < level < 1:
        raise ErfError(f"level must be in (0, 1); got {level}")
    shape = s.shape[1:]
    if metrics is None:
        metrics = default_interval_metrics(len(shape), trf)
    funcs = dict(metrics) if isinstance(metrics, dict) else None
    names = list(metrics)
    if method not in ("expanded", "percentile"):
        raise ErfError(f"method must be 'expanded' or 'percentile'; got {method!r}")
    G = len(n)
    if G < 2:
        return {k: None for k in names}

    def evaluate(mm):
        if funcs is not None:
            return [float(funcs[k](mm)) for k in names]
        return list(scalar_metrics(mm, names, trf).values())

    rng = np.random.default_rng(seed)
    flat = s.reshape(G, -1)
    vals = np.full((int(n_boot), len(names)), np.nan)
    for b in range(int(n_boot)):
        w = np.bincount(rng.integers(0, G, G), minlength=G).astype(np.float64)
        mean = (w @ flat / (w @ n)).reshape(shape)
        try:
            vals[b] = evaluate(apply_post(mean, post))
        except ErfError:
            pass
    alpha = (1 - level) / 2
    if method == "expanded":
        alpha = float(_sps.norm.cdf(-math.sqrt(G / (G - 1)) * _sps.t.ppf(1 - alpha, G - 1)))
    out = {}
    for j, k in enumerate(names):
        col = vals[:, j][np.isfinite(vals[:, j])]
        out[k] = None if col.size < 2 else (float(np.quantile(col, alpha)), float(np.quantile(col, 1 - alpha)))
    return out


def standard_error_map(group_sums, group_counts) -> np.ndarray:
    """Per-pixel standard error of the mean map, from the scatter between groups.

    With group means ``x_g = S_g / n_g``, overall mean ``mu = sum S_g / N`` and
    ``N = sum n_g``, the per-sample variance is estimated by the weighted
    between-group estimator ``s^2 = sum_g n_g (x_g - mu)^2 / (G - 1)`` (unbiased when
    samples are i.i.d., since Var x_g = sigma^2 / n_g), and ``SE = sqrt(s^2 / N)``.
    With all ``n_g = 1`` this is the usual ``std(ddof=1) / sqrt(G)``.  Needs G >= 2.
    """
    s, n = _check_groups(group_sums, group_counts)
    G = len(n)
    if G < 2:
        raise ErfError(f"the standard error needs at least 2 groups with samples; got {G}")
    N = n.sum()
    mu = s.sum(0) / N
    x = s / n.reshape((-1,) + (1,) * (s.ndim - 1))
    var = np.tensordot(n, (x - mu) ** 2, axes=1) / (G - 1)
    return np.sqrt(var / N)


def relative_se_of_sigma(group_sums, group_counts, per_axis: bool = False):
    """Delete-one-group jackknife relative standard error of the moment sigma.

    ``SE_jack = sqrt((G-1)/G * sum_i (sigma_(-i) - mean)^2)``, divided by the sigma of
    the full mean map.  Returns the largest over axes (a float, for adaptive
    stopping) or the per-axis tuple; ``inf`` when G < 2.
    """
    s, n = _check_groups(group_sums, group_counts)
    ndim = s.ndim - 1
    G = len(n)
    if G < 2:
        return (math.inf,) * ndim if per_axis else math.inf
    total_s, total_n = s.sum(0), n.sum()
    full = np.asarray(moments(total_s / total_n).sigma)
    loo = []
    for g in range(G):
        if total_n - n[g] <= 0:
            continue
        try:
            loo.append(moments((total_s - s[g]) / (total_n - n[g])).sigma)
        except ErfError:
            continue
    loo = np.asarray(loo)
    k = len(loo)
    if k < 2:
        rel = np.full(ndim, math.inf)
    else:
        se = np.sqrt((k - 1) / k * ((loo - loo.mean(0)) ** 2).sum(0))
        rel = np.where(full > 0, se / np.where(full > 0, full, 1), math.inf)
    return tuple(rel.tolist()) if per_axis else float(rel.max())


# --------------------------------------------------------------------------- power law

@dataclass(frozen=True)
class PowerLawFit:
    """``y = prefactor * x ** exponent`` fitted in log-log space; CIs at ``level``."""

    exponent: float
    prefactor: float
    exponent_ci: tuple[float, float]
    prefactor_ci: tuple[float, float]
    r2: float
    n: int
    level: float
    weighted: bool

    def predict(self, x) -> np.ndarray:
        return self.prefactor * np.asarray(x, dtype=np.float64) ** self.exponent

    def to_dict(self) -> dict:
        return to_json(asdict(self))


def fit_power_law(x, y, y_lo=None, y_hi=None, level=0.95) -> PowerLawFit:
    """Least-squares fit of ``log y = log a + b log x``.

    CIs come from the regression's standard errors (residual variance, n-2
    degrees of freedom) with Student-t quantiles; they are NaN with 2 points.
    Given ``y_lo``/``y_hi`` (an interval per point, e.g. from ``metric_intervals``) the
    fit is weighted by ``1 / w^2`` with ``w = log(y_hi / y_lo)`` (a relative width;
    the residual scale still sets the CI).  R^2 is in log space.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.size != y.size or x.size < 2:
        raise ErfError(f"fit_power_law needs x and y of the same length >= 2; got {x.size} and {y.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(x > 0) and np.all(y > 0)):
        raise ErfError("fit_power_law needs finite, positive x and y (it fits in log-log space)")
    if np.ptp(x) == 0:
        raise ErfError("fit_power_law needs at least two different x values")
    if not 0 < level < 1:
        raise ErfError(f"level must be in (0, 1); got {level}")
    lx, ly = np.log(x), np.log(y)
    weighted = y_lo is not None and y_hi is not None
    if weighted:
        lo = np.asarray(y_lo, dtype=np.float64).ravel()
        hi = np.asarray(y_hi, dtype=np.float64).ravel()
        if lo.size != x.size or hi.size != x.size or np.any(lo <= 0) or np.any(hi < lo):
            raise ErfError("y_lo and y_hi must be positive, one per point, with y_lo <= y_hi")
        width = np.log(hi / lo)
        pos = width[width > 0]
        floor = pos.min() * 1e-3 if pos.size else 1.0
        wts = 1.0 / np.maximum(width, floor) ** 2
    else:
        wts = np.ones_like(lx)
    X = np.column_stack([np.ones_like(lx), lx])
    sw = np.sqrt(wts)
    coef, *_ = np.linalg.lstsq(X * sw[:, None], ly * sw, rcond=None)
    resid = ly - X @ coef
    dof = x.size - 2
    ss_res = float(np.sum(wts * resid ** 2))
    mean_w = float(np.sum(wts * ly) / np.sum(wts))
    ss_tot = float(np.sum(wts * (ly - mean_w) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    if dof > 0:
        cov = ss_res / dof * np.linalg.inv((X * wts[:, None]).T @ X)
        tq = float(_sps.t.ppf(0.5 + level / 2, dof))
        se = np.sqrt(np.clip(np.diag(cov), 0, None))
        ci_a = (coef[0] - tq * se[0], coef[0] + tq * se[0])
        ci_b = (coef[1] - tq * se[1], coef[1] + tq * se[1])
    else:
        ci_a = ci_b = (math.nan, math.nan)
    return PowerLawFit(float(coef[1]), float(math.exp(coef[0])), (float(ci_b[0]), float(ci_b[1])),
                       (float(np.exp(ci_a[0])), float(np.exp(ci_a[1]))), float(r2), int(x.size),
                       float(level), bool(weighted))
