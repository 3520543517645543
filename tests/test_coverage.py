"""Small-n intervals over networks cover at their nominal level: simulated experiments of 5 networks.

Networks are drawn from a known distribution (each network's ERF a Gaussian with a log-normal width
and a random centre); the pooled map of 5 of them is what an experiment measures, and the estimand is
the same metric of the population's mean map, known in closed form. The simulation is vectorised:
thousands of experiments in one call.
"""

import math

import numpy as np
import pytest

from erf import stats

N_NETS, TRIALS = 5, 4000
SPREAD, OFFSET, SIGMA = 0.15, 0.5, 3.0   # log-normal spread of the width, sd of the centre (px), median width


def pooled_sigma(var: np.ndarray, mu: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Sigma of the w-weighted mixture of Gaussians (the pooled map of unit-total networks)."""
    W = w.sum(-1)
    m = (w * mu).sum(-1) / W
    return np.sqrt((w * (var + mu ** 2)).sum(-1) / W - m ** 2)


def draw(rng, trials=TRIALS, n=N_NETS):
    var = (SIGMA * rng.lognormal(0, SPREAD, (trials, n))) ** 2
    mu = rng.normal(0, OFFSET, (trials, n))
    return var, mu


TRUE = math.sqrt(SIGMA ** 2 * math.exp(2 * SPREAD ** 2) + OFFSET ** 2)  # sigma of the population's mean map


def test_jackknife_interval_covers_at_n5():
    rng = np.random.default_rng(1)
    var, mu = draw(rng)
    est = pooled_sigma(var, mu, np.ones_like(var))
    loo = np.stack([pooled_sigma(var, mu, np.broadcast_to(1.0 - np.eye(N_NETS)[k], var.shape))
                    for k in range(N_NETS)], -1)
    lo, hi = stats.jackknife_interval(est, loo, 0.95, log=True)
    coverage = float(np.mean((lo <= TRUE) & (TRUE <= hi)))
    assert coverage >= 0.93, coverage


def test_bootstrap_over_five_networks_undercovers():
    """The reason for the jackknife: the expanded-percentile bootstrap over 5 networks misses too often."""
    rng = np.random.default_rng(2)
    trials, B = 1000, 400
    var, mu = draw(rng, trials)
    idx = rng.integers(0, N_NETS, (trials, B, N_NETS))
    w = np.stack([(idx == k).sum(-1) for k in range(N_NETS)], -1).astype(float)
    reps = pooled_sigma(var[:, None, :], mu[:, None, :], w)
    cover = {}
    for method in ("percentile", "expanded"):
        ci = [stats.percentile_interval(reps[t], 0.95, N_NETS, method) for t in range(trials)]
        cover[method] = np.mean([c[0] <= TRUE <= c[1] for c in ci])
    assert cover["percentile"] < 0.88 and cover["expanded"] < 0.92, cover


def test_t_interval_of_normal_network_values_covers():
    rng = np.random.default_rng(3)
    v = rng.normal(10.0, 2.0, (TRIALS, N_NETS))
    lo, hi = stats.t_interval(v, 0.95)
    assert 0.93 <= float(np.mean((lo <= 10.0) & (10.0 <= hi))) <= 0.97


def test_leave_one_out_of_maps_matches_the_mixture():
    """The pooled-map jackknife of real maps equals the closed-form mixture values above."""
    rng = np.random.default_rng(4)
    var, mu = draw(rng, 1)
    x = np.arange(101, dtype=float)
    maps = np.exp(-0.5 * (x[None, :] - 50 - mu[0][:, None]) ** 2 / var[0][:, None])
    maps /= maps.sum(1, keepdims=True)
    loo = stats.leave_one_out(maps, ["sigma_x"])[:, 0]
    want = [pooled_sigma(var, mu, (1.0 - np.eye(N_NETS)[k])[None])[0] for k in range(N_NETS)]
    assert loo == pytest.approx(want, rel=1e-6)


def test_sign_test_and_counts():
    assert stats.sign_test(5, 5) == pytest.approx(0.0625)       # 5 of 5 cannot reach p < 0.05
    assert stats.sign_test(8, 8) == pytest.approx(2 / 256) and stats.sign_test(6, 6) < 0.05
    assert stats.sign_test(7, 8) == pytest.approx(18 / 256)
    c = stats.direction_count([0.8, 0.9, 1.0, 0.7, 1.1], 1.0)
    assert (c["k"], c["n"], c["direction"], c["ties"]) == (3, 4, "down", 1) and c["p"] == pytest.approx(0.625)


def test_welch_ratio_interval_is_symmetric_in_logs():
    a = np.array([1.0, 1.1, 0.9, 1.05, 0.95])
    lo, hi = stats.welch_interval(2.0, a, 2 * a, 0.95)
    assert lo < 2.0 < hi and math.log(2.0) - math.log(lo) == pytest.approx(math.log(hi) - math.log(2.0))
