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
``center_unit`` -- ``center_unit(shape)`` as a list; ``reference_center`` -- the reference
point of the position metrics (``center=``: the unit's TRF centre, else the centre unit).
``center_y, center_x`` -- centre of mass; ``com_offset_y, com_offset_x`` -- centre of
mass minus the reference centre.
``sigma_y, sigma_x`` -- moment sigma; ``cov`` -- covariance matrix (list of lists).
``erf_size_y, erf_size_x`` -- ``2 * sigma``; ``kurtosis_y, kurtosis_x`` -- excess kurtosis of
the marginal (Gaussian 0, box -1.2): a shape measure, unlike the fit's R^2, which is high for
a flat-topped map too.
``trf_y, trf_x`` and ``erf_trf_ratio_y, erf_trf_ratio_x`` -- ``None`` without a TRF.
``trf_box`` (list of [first, last] per axis), ``trf_clipped`` (bool: the box extends past
the map), ``mass_in_trf`` (fraction of the map's mass inside the clipped box) --
``None`` without a box.
``mass_radius_0.5, mass_radius_0.9, mass_radius_0.95`` -- see ``mass_radius``.
``area_above_0.1, area_above_0.5`` (fraction of pixels) and ``area_above_count_0.1,
area_above_count_0.5`` (pixel counts) -- see ``area_above``.
``hcar_0.2, hcar_0.3, hcar_0.5, hcar_0.99`` -- high-contribution area ratio of the raw
map; ``hcar_log1p_max_*`` -- the same after RepLKNet's log10(1+x)/max preprocessing
(their number only for maps of their scale: log10(1+x) is not scale free).
``gaussian`` -- ``fit_gaussian(m).to_dict()`` (2-D) / ``fit_gaussian_1d(m).to_dict()``
(1-D) / ``None`` (3-D).  ``profiles`` -- ``{name: fit.to_dict()}`` from
``fit_profiles`` (2-D only, else ``None``).
Non-finite floats are written as ``None`` so the dict is strict JSON.

The flat scalar names (``sigma_y``, ``mass_radius_0.9``, ``hcar_0.5`` ...) are also the
metric names accepted by ``scalar_metrics`` and ``metric_intervals``; their families are the
table ``METRICS``.

Map-definition presets (``PRESETS``, applied by the engine with ``reduce_target``,
``reduce_gradient`` and ``apply_post``; vocabularies ``SIGNALS``, ``REDUCTIONS``, ``POSTS``)
------------------------------------------------------------------------------
* ``luo`` (default): target = sum over channels of the centre unit; per-sample map =
  |input gradient| summed over input channels; mean over samples; no post.
  Luo et al.'s random-weight analysis is about the gradient's variance (the ``square``
  signal: for zero-mean weights the signed mean is 0); the paper does not say whether its
  figures show variances, magnitudes or signed means. We average the magnitude: how much
  each pixel can move the unit, whatever the sign. For random linear nets its exact
  expectation is ``erf.linear_erf(..., signal="abs")`` (the square root of the variance map).
* ``replknet`` (Ding et al., CVPR 2022): target = sum over channels of ReLU(centre
  activation); map = positive part of the gradient, per element, summed over input
  channels; mean over samples; then log10(1+x)/max (their preprocessing for the
  high-contribution area ratio and heatmaps).  Ignores negative influence.
* ``openerf`` (OpenERF 0.6.1): target = channel *mean* of the centre activation; map =
  gradient averaged over input channels *then* clipped at zero (signs of channels can
  cancel, unlike the two above); normalised to sum 1; on even token grids the unit is the
  upper-left of the four central tokens (``Preset.center``), on conv maps ``n // 2``.
The sigma-type metrics are scale free, so ``sum1`` does not change them, but
``log1p_max`` does (it flattens the peak): compute sigma on the raw mean map and
use ``hcar_log1p_max_*`` for RepLKNet's number -- comparable only between maps of one
scale (the same number of images summed, no normalised draws).

Modules: ``presets`` (the torch-side definitions the engine applies), ``moments`` (geometry,
map checks, moments), ``sizes`` (mass radius, areas, mass in a box), ``fits`` (Gaussian fits),
``metrics`` (the metric table, ``scalar_metrics``, ``summarize``), ``intervals`` (bootstrap,
standard errors, jackknife), ``replication`` (networks as replicates: hierarchical bootstrap,
leave-one-network-out), ``smalln`` (intervals and tests over few networks: studentized jackknife
on the log scale, the exact sign test), ``powerlaw`` (growth laws).
"""

from erf.stats.fits import Gaussian1DFit, GaussianFit, fit_gaussian, fit_gaussian_1d, fit_profiles
from erf.stats.intervals import (N_BOOT, bootstrap_weights, default_interval_metrics, interval_metrics,
                                 map_metrics, metric_intervals, metric_replicates, percentile_interval, relative_se_of_sigma,
                                 standard_error_map)
from erf.stats.metrics import (METRICS, SATURATION, Metric, default_metrics, saturation, scalar_metrics, summarize,
                               uniform_map, uniform_reference, uniform_reference_names)
from erf.stats.moments import (Moments, axis_names, center_unit, check_map, erf_size, erf_trf_ratio, moments,
                               trf_sizes)
from erf.stats.powerlaw import PowerLawFit, fit_power_law
from erf.stats.presets import (POSTS, PRESETS, REDUCTIONS, SIGNALS, Preset, apply_post, get_preset, reduce_gradient,
                               reduce_target)
from erf.stats.replication import (hierarchical_interval, hierarchical_replicates, leave_one_out, network_maps,
                                   paired_ratio_interval, power_law_interval, replicate_ratio_interval)
from erf.stats.smalln import (direction_count, jackknife_interval, jackknife_se, sign_test, t_interval,
                              welch_interval)
from erf.stats.sizes import area_above, check_box, high_contribution_area_ratio, mass_in_box, mass_radius

__all__ = [
    "PRESETS", "Preset", "SIGNALS", "REDUCTIONS", "POSTS", "get_preset", "apply_post", "reduce_gradient",
    "reduce_target",
    "center_unit", "axis_names", "check_map", "trf_sizes", "moments", "Moments", "erf_size", "erf_trf_ratio",
    "GaussianFit", "Gaussian1DFit", "fit_gaussian", "fit_gaussian_1d", "fit_profiles",
    "mass_radius", "area_above", "high_contribution_area_ratio", "check_box", "mass_in_box",
    "METRICS", "Metric", "default_metrics", "scalar_metrics", "summarize", "uniform_map", "uniform_reference",
    "SATURATION", "saturation",
    "uniform_reference_names",
    "N_BOOT", "default_interval_metrics", "interval_metrics", "bootstrap_weights", "metric_replicates",
    "percentile_interval", "metric_intervals", "standard_error_map", "relative_se_of_sigma",
    "PowerLawFit", "fit_power_law",
    "hierarchical_replicates", "hierarchical_interval", "paired_ratio_interval", "power_law_interval",
    "replicate_ratio_interval", "network_maps", "leave_one_out", "map_metrics",
    "t_interval", "jackknife_se", "jackknife_interval", "welch_interval", "sign_test", "direction_count",
]
