import json
import math

import numpy as np
import pytest

from erf import stats as S
from erf.errors import ErfError


def gauss(shape, cy, cx, sy, sx, theta=0.0, amp=1.0, offset=0.0):
    yy, xx = np.indices(shape, dtype=np.float64)
    dy, dx = yy - cy, xx - cx
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * dx + s * dy, -s * dx + c * dy
    return amp * np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2)) + offset


def noisy_groups(rng, G, per_group=4, shape=(41, 41), sy=3.0, sx=5.0):
    """Per-sample maps = true Gaussian times mean-1 gamma noise; returns (sums, counts)."""
    true = gauss(shape, 20, 20, sy, sx)
    counts = rng.integers(1, per_group + 1, G)
    sums = np.stack([sum(true * rng.gamma(2.0, 0.5, shape) for _ in range(n)) for n in counts])
    return sums, counts


# ------------------------------------------------------------------ basics

def test_center_unit():
    assert S.center_unit((5, 5)) == (2, 2)
    assert S.center_unit((4, 6)) == (2, 3)        # lower-right of the central 2x2
    assert S.center_unit((7,)) == (3,)


def test_moments_gaussian():
    mo = S.moments(gauss((61, 81), 30, 40, 3.0, 5.0))
    assert mo.sigma == pytest.approx((3.0, 5.0), rel=1e-3)
    assert mo.center == pytest.approx((30, 40), abs=1e-6)
    assert np.array(mo.cov) == pytest.approx(np.diag([9.0, 25.0]), abs=1e-3)
    assert S.erf_size(gauss((61, 81), 30, 40, 3.0, 5.0)) == pytest.approx((6.0, 10.0), rel=1e-3)
    assert S.erf_trf_ratio(gauss((61, 81), 30, 40, 3.0, 5.0), (12, 40)) == pytest.approx((0.5, 0.25), rel=1e-3)


def test_moments_1d_and_3d():
    x = np.arange(51)
    assert S.moments(np.exp(-0.5 * ((x - 25) / 4) ** 2)).sigma[0] == pytest.approx(4.0, rel=1e-3)
    z = np.zeros((5, 5, 5))
    z[2, 2, 2] = 1
    mo = S.moments(z)
    assert mo.center == (2, 2, 2) and mo.sigma == (0, 0, 0)


@pytest.mark.parametrize("bad, msg", [
    (-np.ones((5, 5)), "negative"),
    (np.zeros((5, 5)), "all zero"),
    (np.full((5, 5), np.nan), "NaN"),
    (np.ones((2, 2, 2, 2)), "dimensions"),
])
def test_bad_maps_raise(bad, msg):
    with pytest.raises(ErfError, match=msg):
        S.moments(bad)
    with pytest.raises(ErfError, match=msg):
        S.summarize(bad)


# ------------------------------------------------------------------ fits

def test_fit_gaussian_rotated_with_offset():
    rng = np.random.default_rng(1)
    m = gauss((64, 72), 30.3, 33.7, 3.0, 6.0, theta=0.4, amp=2.0, offset=0.05)
    m = m + rng.normal(0, 0.005, m.shape).clip(-0.04)
    f = S.fit_gaussian(m)
    assert f.ok and f.reason == ""
    assert f.center == pytest.approx((30.3, 33.7), abs=0.02)
    assert f.sigma == pytest.approx((3.0, 6.0), rel=0.01)
    assert f.theta == pytest.approx(0.4, abs=0.01)
    assert f.offset == pytest.approx(0.05, abs=0.005)
    assert f.amplitude == pytest.approx(2.0, rel=0.01)
    assert f.r2 > 0.99
    json.dumps(f.to_dict())
    assert f.evaluate(m.shape).shape == m.shape


def test_fit_gaussian_canonical_theta():
    # the same ellipse described with swapped axes and theta + pi/2
    f = S.fit_gaussian(gauss((64, 72), 32, 36, 6.0, 3.0, theta=0.4 + math.pi / 2))
    assert f.sigma == pytest.approx((3.0, 6.0), rel=1e-3)
    assert f.theta == pytest.approx(0.4, abs=1e-3)


def test_fit_gaussian_failure_is_reported():
    f = S.fit_gaussian(np.ones((10, 10)))
    assert not f.ok and "constant" in f.reason
    assert S.fit_gaussian(np.eye(1)[:1]).ok in (True, False)   # 1x1 map: no crash
    with pytest.raises(ErfError):
        S.fit_gaussian(np.ones(10))                            # 2-D only


def test_fit_profiles():
    m = gauss((61, 81), 30, 40, 3.0, 5.0, amp=2.0, offset=0.1)
    p = S.fit_profiles(m)
    assert set(p) == {"row", "col", "x_marginal", "y_marginal"}
    assert p["row"].sigma == pytest.approx(5.0, rel=1e-3) and p["row"].axis == "x"
    assert p["col"].sigma == pytest.approx(3.0, rel=1e-3) and p["col"].axis == "y"
    assert p["x_marginal"].sigma == pytest.approx(5.0, rel=1e-3)
    assert p["y_marginal"].sigma == pytest.approx(3.0, rel=1e-3)
    assert p["row"].center == pytest.approx(40) and p["row"].amplitude == pytest.approx(2.0)
    assert all(f.r2 > 0.999 for f in p.values())


# ------------------------------------------------------------------ size metrics

def test_mass_radius_rayleigh():
    sigma = 5.0
    m = gauss((81, 81), 40, 40, sigma, sigma)
    r = S.mass_radius(m)
    for f in (0.5, 0.9, 0.95):
        assert r[f] == pytest.approx(sigma * math.sqrt(-2 * math.log(1 - f)), rel=0.03)
    # continuous and monotone in the fraction
    fs = np.linspace(0.05, 0.99, 30)
    rr = list(S.mass_radius(m, fs).values())
    assert np.all(np.diff(rr) > 0)


def test_mass_radius_delta():
    m = np.zeros((9, 9))
    m[4, 4] = 1
    assert S.mass_radius(m, (0.5, 1.0)) == {0.5: 0.0, 1.0: 0.0}
    with pytest.raises(ErfError):
        S.mass_radius(m, (0.0,))


def test_area_above():
    m = np.array([[0.0, 0.05, 0.2],
                  [0.3, 1.0, 0.6],
                  [0.5, 0.09, 0.11]])
    a = S.area_above(m)
    assert a[0.1] == {"fraction": 6 / 9, "count": 6}     # 0.2 0.3 1.0 0.6 0.5 0.11
    assert a[0.5] == {"fraction": 2 / 9, "count": 2}     # strictly above 0.5: 1.0, 0.6


def test_hcar_hand_made():
    m = np.zeros((11, 11))
    m[5, 5] = 3.0
    assert S.high_contribution_area_ratio(m)[0.99] == pytest.approx(1 / 121)
    # ring of mass at Chebyshev distance 2: any threshold needs the 5x5 square
    m = np.zeros((11, 11))
    m[3, 3:8] = m[7, 3:8] = 1
    assert S.high_contribution_area_ratio(m, (0.2, 0.99))[0.2] == pytest.approx(25 / 121)
    # uniform: the smallest odd square with area >= t * 121
    u = np.ones((11, 11))
    r = S.high_contribution_area_ratio(u, (0.2, 0.3, 0.5, 0.99))
    assert r == {0.2: 25 / 121, 0.3: 49 / 121, 0.5: 81 / 121, 0.99: 1.0}
    for t, v in S.high_contribution_area_ratio(np.ones((101, 101)), (0.2, 0.5)).items():
        assert v == pytest.approx(t, abs=0.05)
    # an off-centre unit (a clipped TRF): squares around its TRF centre, the metric table passes it
    m = np.zeros((21, 21))
    m[5, 5] = 1.0
    assert S.high_contribution_area_ratio(m, (0.5,))[0.5] == pytest.approx(121 / 441)
    assert S.high_contribution_area_ratio(m, (0.5,), center=(4.5, 5))[0.5] == pytest.approx(1 / 441)
    assert S.scalar_metrics(m, ["hcar_0.5"], center=(5, 5))["hcar_0.5"] == pytest.approx(1 / 441)


def test_hcar_transform_and_even_clip():
    m = np.ones((4, 6))                   # centre unit (2, 3): squares clipped at the borders
    assert S.high_contribution_area_ratio(m, (1.0,))[1.0] == 1.0
    assert S.high_contribution_area_ratio(m, (0.3,))[0.3] == pytest.approx(9 / 24)
    g = gauss((31, 31), 15, 15, 2, 2, amp=100.0)
    raw = S.high_contribution_area_ratio(g, (0.5,))[0.5]
    logged = S.high_contribution_area_ratio(g, (0.5,), transform="log1p_max")[0.5]
    assert logged > raw                   # log flattens the peak: more area needed
    assert S.high_contribution_area_ratio(g, (0.5,), transform=np.sqrt)[0.5] >= raw


def test_mass_in_box():
    m = np.ones((10, 10))
    frac, clipped = S.mass_in_box(m, ((-2, 4), (0, 9)))
    assert frac == pytest.approx(0.5) and clipped
    assert S.mass_in_box(m, ((0, 9), (0, 9))) == (1.0, False)
    with pytest.raises(ErfError, match="trf_box"):
        S.mass_in_box(m, ((0, 9),))


# ------------------------------------------------------------------ summary

def test_summarize_keys_and_json():
    m = gauss((61, 61), 30, 30, 3.0, 5.0)
    d = S.summarize(m, trf=(31, 41), trf_box=((15, 45), (10, 50)))
    expected = {"ndim", "shape", "axes", "total", "peak", "peak_index", "center_unit", "reference_center",
                "center_y", "center_x", "com_offset_y", "com_offset_x", "sigma_y", "sigma_x", "cov",
                "erf_size_y", "erf_size_x", "kurtosis_y", "kurtosis_x", "trf_y", "trf_x", "erf_trf_ratio_y", "erf_trf_ratio_x",
                "trf_box", "trf_clipped", "mass_in_trf",
                "mass_radius_0.5", "mass_radius_0.9", "mass_radius_0.95",
                "area_above_0.1", "area_above_0.5", "area_above_count_0.1", "area_above_count_0.5",
                "hcar_0.2", "hcar_0.3", "hcar_0.5", "hcar_0.99",
                "hcar_log1p_max_0.2", "hcar_log1p_max_0.3", "hcar_log1p_max_0.5", "hcar_log1p_max_0.99",
                "gaussian", "profiles"}
    assert set(d) == expected
    assert d["erf_trf_ratio_x"] == pytest.approx(10 / 41, rel=1e-3)
    assert d["sigma_y"] == pytest.approx(3.0, rel=1e-3)
    assert d["trf_clipped"] is False and d["gaussian"]["ok"]
    json.loads(json.dumps(d, allow_nan=False))
    # TRF derived from the box; no TRF -> None
    assert S.summarize(m, trf_box=((-5, 65), (0, 60)))["trf_y"] == 71
    n = S.summarize(m, fits=False)
    assert n["trf_x"] is None and n["erf_trf_ratio_x"] is None and n["gaussian"] is None


def test_summarize_other_ndims():
    x = np.arange(31.0)
    d1 = S.summarize(np.exp(-0.5 * ((x - 15) / 3) ** 2), trf=20)
    assert d1["sigma_x"] == pytest.approx(3.0, rel=1e-3) and d1["gaussian"]["ok"]
    d3 = S.summarize(np.ones((5, 6, 7)))
    assert "sigma_z" in d3 and d3["gaussian"] is None


def test_scalar_metrics_names():
    m = gauss((41, 41), 20, 20, 3.0, 3.0)
    v = S.scalar_metrics(m, ["sigma_x", "mass_radius_0.75", "hcar_0.5", "area_above_count_0.5"], trf=10)
    assert v["sigma_x"] == pytest.approx(3.0, rel=1e-3) and v["mass_radius_0.75"] > 0
    with pytest.raises(ErfError, match="unknown metric"):
        S.scalar_metrics(m, ["sigma_q"])
    with pytest.raises(ErfError, match="trf"):
        S.scalar_metrics(m, ["erf_trf_ratio_x"])


def test_metric_table_gives_the_names():
    m = gauss((21, 21), 10, 10, 2.0, 3.0)
    names = S.default_metrics(2, trf=9)
    assert list(S.scalar_metrics(m, trf=9)) == names
    assert names[:2] == ["total", "peak"] and "erf_trf_ratio_x" in names and "hcar_log1p_max_0.99" in names
    assert "erf_trf_ratio_x" not in S.default_metrics(2)
    assert set(S.default_interval_metrics(2, trf=9)) <= set(names)
    for family, metric in S.METRICS.items():        # every family answers on a 2-D map
        name = {"map": family, "axis": f"{family}_x", "fraction": f"{family}_0.5"}[metric.kind]
        assert name in S.scalar_metrics(m, [name], trf=9)
    with pytest.raises(ErfError, match="unknown metric"):
        S.scalar_metrics(m, ["hcar_log1p_max_x"])


# ------------------------------------------------------------------ presets

def test_presets():
    assert set(S.PRESETS) == {"luo", "replknet", "openerf"}
    assert set(S.SIGNALS) == {"abs", "positive", "signed", "square"} and set(S.REDUCTIONS) == {"sum", "mean"}
    assert all(p.signal in S.SIGNALS and p.post in S.POSTS for p in S.PRESETS.values())
    assert S.get_preset("luo") is S.PRESETS["luo"]
    g = np.array([[[1.0, -2.0]], [[-3.0, 1.0]]])       # (C=2, 1, 2)
    assert S.reduce_gradient(g, "luo", channel_axis=0).tolist() == [[4.0, 3.0]]
    assert S.reduce_gradient(g, "replknet", channel_axis=0).tolist() == [[1.0, 1.0]]
    assert S.reduce_gradient(g, "openerf", channel_axis=0).tolist() == [[0.0, 0.0]]
    act = np.array([[1.0, -1.0, 2.0]])
    assert S.reduce_target(act, "luo").tolist() == [2.0]
    assert S.reduce_target(act, "replknet").tolist() == [3.0]
    assert S.reduce_target(act, "openerf").tolist() == pytest.approx([2 / 3])
    m = np.array([0.0, 9.0, 99.0])
    assert S.apply_post(m, "log1p_max").tolist() == pytest.approx([0, 0.5, 1])
    assert S.apply_post(m, "sum1").sum() == pytest.approx(1)
    with pytest.raises(ErfError):
        S.Preset("x", "sum", False, "bogus", "sum", None)
    with pytest.raises(ErfError, match="unknown ERF preset"):
        S.reduce_gradient(g, "nope")


def test_presets_torch():
    torch = pytest.importorskip("torch")
    g = torch.tensor([[[[1.0, -2.0]], [[-3.0, 1.0]]]], requires_grad=True)   # (B, C, 1, 2)
    out = S.reduce_gradient(g, "replknet")
    assert out.shape == (1, 1, 2) and out.tolist() == [[[1.0, 1.0]]]
    out.sum().backward()


# ------------------------------------------------------------------ uncertainty

def test_standard_error_map_count_one():
    rng = np.random.default_rng(0)
    x = rng.random((12, 5, 6))
    se = S.standard_error_map(x, np.ones(12))
    assert se == pytest.approx(x.std(0, ddof=1) / np.sqrt(12))


def test_standard_error_map_weighted():
    # unequal groups: sum of n i.i.d. N(mu, sd^2) samples ~ N(n mu, n sd^2); many pixels = many trials
    rng = np.random.default_rng(0)
    counts = np.array([10, 50, 5, 100, 35])
    sd, npix = 2.0, 20000
    sums = rng.normal(counts[:, None] * 5.0, np.sqrt(counts)[:, None] * sd, (5, npix))
    se = S.standard_error_map(sums, counts)
    assert se.shape == (npix,)
    assert np.mean(se ** 2) == pytest.approx(sd ** 2 / counts.sum(), rel=0.05)   # unbiased variance
    with pytest.raises(ErfError, match="at least 2"):
        S.standard_error_map(sums[:1], counts[:1])


@pytest.mark.slow
def test_bootstrap_ci_covers_and_shrinks():
    rng = np.random.default_rng(123)
    covered, widths = 0, {12: [], 48: []}
    for rep in range(20):
        sums, counts = noisy_groups(rng, 12)
        ci = S.metric_intervals(sums, counts, ["sigma_x"], seed=rep)["sigma_x"]
        covered += ci[0] <= 5.0 <= ci[1]
        widths[12].append(ci[1] - ci[0])
    assert covered >= 16
    for rep in range(5):
        sums, counts = noisy_groups(rng, 48)
        ci = S.metric_intervals(sums, counts, ["sigma_x"], n_boot=100, seed=rep)["sigma_x"]
        widths[48].append(ci[1] - ci[0])
    assert np.mean(widths[48]) < 0.75 * np.mean(widths[12])


def test_metric_intervals_defaults_and_fallback():
    rng = np.random.default_rng(0)
    sums, counts = noisy_groups(rng, 6)
    ci = S.metric_intervals(sums, counts, n_boot=30, trf=20)
    assert set(ci) == set(S.default_interval_metrics(2, trf=20))
    assert all(lo <= hi for lo, hi in ci.values())
    custom = S.metric_intervals(sums, counts, {"peak": lambda m: m.max()}, n_boot=30)
    assert custom["peak"][0] > 0
    assert S.metric_intervals(sums[:1], counts[:1], ["sigma_x"]) == {"sigma_x": None}
    assert S.metric_intervals(sums, counts, ["sigma_x"], n_boot=20, seed=3) == \
        S.metric_intervals(sums, counts, ["sigma_x"], n_boot=20, seed=3)


def test_relative_se_of_sigma():
    rng = np.random.default_rng(0)
    few = S.relative_se_of_sigma(*noisy_groups(rng, 8))
    many = S.relative_se_of_sigma(*noisy_groups(rng, 64))
    assert 0 < many < few < 0.2
    assert S.relative_se_of_sigma(*noisy_groups(rng, 1)) == math.inf
    assert len(S.relative_se_of_sigma(*noisy_groups(rng, 4), per_axis=True)) == 2


def test_bad_groups():
    with pytest.raises(ErfError, match="group_sums"):
        S.standard_error_map(np.ones((3, 4, 4)), [1, 1])
    with pytest.raises(ErfError, match="count 0"):
        S.standard_error_map(np.ones((2, 4, 4)), [0, 1])


# ------------------------------------------------------------------ power law

def test_power_law_exact():
    x = np.array([1, 2, 4, 8, 16, 32.0])
    f = S.fit_power_law(x, 3 * x ** 0.5)
    assert f.exponent == pytest.approx(0.5, abs=1e-12) and f.prefactor == pytest.approx(3.0)
    assert f.exponent_ci == pytest.approx((0.5, 0.5), abs=1e-9) and f.r2 == pytest.approx(1.0)
    assert f.predict([4.0]) == pytest.approx([6.0])
    json.dumps(f.to_dict())


def test_power_law_noisy_ci_covers():
    rng = np.random.default_rng(7)
    covered = 0
    x = np.arange(1, 21, dtype=float)
    for _ in range(20):
        y = 2 * x ** 0.5 * np.exp(rng.normal(0, 0.05, x.size))
        f = S.fit_power_law(x, y)
        covered += f.exponent_ci[0] <= 0.5 <= f.exponent_ci[1]
        assert f.prefactor_ci[0] < f.prefactor < f.prefactor_ci[1]
    assert covered >= 16
    w = S.fit_power_law(x, y, y * 0.9, y * 1.1)
    assert w.weighted and w.exponent == pytest.approx(0.5, abs=0.05)


def test_power_law_bad_input():
    with pytest.raises(ErfError, match="positive"):
        S.fit_power_law([1, 2, 3], [1, -1, 2])
    with pytest.raises(ErfError):
        S.fit_power_law([1], [1])
    f = S.fit_power_law([1, 4], [1, 2])
    assert f.exponent == pytest.approx(0.5) and math.isnan(f.exponent_ci[0])


def test_kurtosis_tells_a_gaussian_from_a_box():
    g = gauss((81, 81), 40, 40, 6.0, 6.0)
    box = np.zeros((81, 81))
    box[20:61, 30:51] = 1.0
    m = S.scalar_metrics(g, ["kurtosis_y", "kurtosis_x"])
    assert m["kurtosis_y"] == pytest.approx(0.0, abs=0.01) and m["kurtosis_x"] == pytest.approx(0.0, abs=0.01)
    b = S.scalar_metrics(box, ["kurtosis_y", "kurtosis_x", "fit_r2"])
    assert b["kurtosis_y"] == pytest.approx(-1.2, abs=0.01) and b["kurtosis_x"] == pytest.approx(-1.2, abs=0.02)
    assert "kurtosis_x" in S.default_metrics(2)


def test_position_metrics_refer_to_the_given_centre():
    g = gauss((41, 41), 10, 12, 3.0, 3.0)
    assert S.scalar_metrics(g, ["com_offset_y", "com_offset_x"]) == pytest.approx(
        {"com_offset_y": -10.0, "com_offset_x": -8.0}, abs=1e-2)
    assert S.scalar_metrics(g, ["com_offset_y", "com_offset_x"], center=(10, 12)) == pytest.approx(
        {"com_offset_y": 0.0, "com_offset_x": 0.0}, abs=1e-2)
    assert S.summarize(g, center=(10.0, 12.0), fits=False)["reference_center"] == [10.0, 12.0]


def test_uniform_reference_of_an_image_bound_trf():
    ref = S.uniform_reference(np.ones((224, 224)), [[-117, 309], [-117, 309]])
    assert ref["region"] == [[0, 223], [0, 223]]
    assert ref["uniform"]["sigma_x"] == pytest.approx(64.66, abs=0.01)
    assert ref["uniform"]["mass_radius_0.9"] == pytest.approx(124.90, abs=0.01)
    assert ref["vs_uniform"]["sigma_x"] == pytest.approx(1.0)
    assert S.uniform_map((4, 4), [[-2, 1], [2, 9]]).sum() == 4  # rows 0-1, columns 2-3


def test_bootstrap_defaults_batched_metrics_and_bca():
    assert S.N_BOOT == 2000
    rng = np.random.default_rng(0)
    s = rng.random((6, 21, 21)) ** 3
    n = np.ones(6)
    names = list(S.interval_metrics(2, (9, 9)))
    assert "kurtosis_x" in names and "com_offset_x" in names and not any(k.startswith("hcar") for k in names)
    w = S.bootstrap_weights(6, 7, seed=3)
    assert w.shape == (7, 6) and (w.sum(1) == 6).all()
    fast = S.metric_replicates(s, n, names, w, trf=(9, 9), center=(10, 11))
    slow = np.array([list(S.scalar_metrics((wb @ s.reshape(6, -1) / (wb @ n)).reshape(21, 21), names, (9, 9),
                                           center=(10, 11)).values()) for wb in w])
    assert np.allclose(fast, slow, rtol=1e-12, atol=1e-12)
    est = S.scalar_metrics(s.sum(0) / 6, ["sigma_x"])["sigma_x"]
    for method in ("expanded", "percentile", "bca"):
        lo, hi = S.metric_intervals(s, n, ["sigma_x"], method=method, n_boot=400)["sigma_x"]
        assert lo < est < hi


def test_paired_ratio_interval_uses_the_shared_noise():
    rng = np.random.default_rng(1)
    base = [gauss((31, 31), 15, 15, 3.0, 3.0 + rng.normal(0, 0.4)) for _ in range(8)]
    a = (np.stack(base), np.ones(8))
    b = (np.stack([m ** (1 / 1.44) for m in base]), np.ones(8))  # each group 1.2x wider: same noise
    ratio, (lo, hi) = S.paired_ratio_interval(a, b, "sigma_x", n_boot=300)
    _, (ulo, uhi) = S.paired_ratio_interval(a, b, "sigma_x", n_boot=300, paired=False)
    assert lo - 1e-9 <= ratio <= hi + 1e-9 and ratio == pytest.approx(1.2, rel=0.01)
    assert hi - lo < 0.5 * (uhi - ulo) and ulo < 1.2 < uhi
    with pytest.raises(ErfError, match="paired arms"):
        S.paired_ratio_interval(a, (b[0][:4], b[1][:4]), "sigma_x")
    nets = [(np.stack([gauss((31, 31), 15, 15, 3.0 + k * 0.2, 3.0)] * 2), np.ones(2)) for k in range(4)]
    est, (hlo, hhi) = S.hierarchical_interval(nets, "sigma_y", n_boot=200)
    assert hlo < est < hhi and hhi - hlo > 0.1  # the networks' spread, not the (zero) spread of their inputs
    many = S.hierarchical_replicates(nets, ["sigma_y", "com_offset_x"], n_boot=50, seed=4, center=(15, 14))
    one = S.hierarchical_replicates(nets, "sigma_y", n_boot=50, seed=4, center=(15, 14))
    assert many.shape == (50, 2) and np.array_equal(many[:, 0], one)  # a list: the same draws, every metric
    assert np.allclose(many[:, 1], 1.0)                                 # position metrics about the given centre


def test_power_law_interval_from_replicates():
    x = np.array([5.0, 10, 20, 40])
    rng = np.random.default_rng(2)
    reps = np.sqrt(x) * np.exp(rng.normal(0, 0.03, (500, 4)))
    fit = S.power_law_interval(x, np.sqrt(x), reps, units=6)
    assert fit.exponent == pytest.approx(0.5) and fit.exponent_ci[0] < 0.5 < fit.exponent_ci[1]
    assert fit.exponent_ci[1] - fit.exponent_ci[0] > 0.01  # sampling noise, not the (zero) curvature


def test_openerf_centre_token_and_replknet_scale_dependence():
    op, luo = S.get_preset("openerf"), S.get_preset("luo")
    assert op.center((8, 8), tokens=True) == (3, 3) and op.center((8, 8)) == (4, 4)
    assert op.center((7, 7), tokens=True) == (3, 3) and luo.center((8, 8), tokens=True) == (4, 4)
    g = gauss((64, 64), 32, 32, 6.0, 6.0)
    small, large = (S.scalar_metrics(g * k, ["hcar_log1p_max_0.2", "hcar_0.2"]) for k in (1e-4, 1e4))
    assert small["hcar_0.2"] == large["hcar_0.2"]  # the raw map's ratio is scale free
    assert large["hcar_log1p_max_0.2"] > 3 * small["hcar_log1p_max_0.2"]  # RepLKNet's is not
    assert "scale" in S.PRESETS["replknet"].description and "square" in S.PRESETS["luo"].description


def test_saturation_against_the_uniform_map_of_the_trf_box():
    box = [[8, 24], [8, 24]]
    full = S.saturation(S.uniform_map((33, 33), box), box)
    assert full["saturated"] and full["vs_uniform"]["sigma_x"] == pytest.approx(1.0)
    assert full["uniform"]["erf_size_x"] == pytest.approx(2 * ((17 ** 2 - 1) / 12) ** 0.5)   # 9.80 px for 17 px
    yy, xx = np.indices((33, 33))
    narrow = np.exp(-((yy - 16) ** 2 + (xx - 16) ** 2) / (2 * 1.5 ** 2))
    s = S.saturation(narrow, box)
    assert not s["saturated"] and s["saturated_by"] == [] and 0 < s["vs_uniform"]["mass_radius_0.5"] < 0.5
