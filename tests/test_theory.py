"""The exact expected ERF of random linear nets (erf.linear_erf with a signal) against measurements."""

import numpy as np
import pytest

import erf
from erf import stats


def chain(n):
    return [dict(kernel=3)] * n


def test_abs_theory_exponent_and_square_theory_sigma():
    depths = [5, 10, 20, 40]
    abs_sigma = [erf.linear_erf(chain(n), signal="abs").sigma[1] for n in depths]
    assert stats.fit_power_law(depths, abs_sigma).exponent == pytest.approx(0.5435, abs=5e-4)
    for n in depths:  # the variance map is the uniform-kernel map: sigma = sqrt(2n/3) exactly
        sq = erf.linear_erf(chain(n), signal="square")
        assert sq.sigma[1] == pytest.approx(np.sqrt(2 * n / 3), rel=1e-12)
        assert stats.moments(sq.map).sigma[1] == pytest.approx(np.sqrt(2 * n / 3), rel=1e-9)
        ab = erf.linear_erf(chain(n), signal="abs")
        assert ab.map.sum() == pytest.approx(1.0) and np.allclose(ab.map, np.sqrt(sq.map) / np.sqrt(sq.map).sum())
        assert ab.sigma[1] > sq.sigma[1]  # the square root widens the map
    with pytest.raises(erf.ErfError, match="signal"):
        erf.linear_erf(chain(2), signal="positive")


@pytest.mark.slow
@pytest.mark.parametrize("signal", ["abs", "square"])
def test_theory_matches_a_measured_random_linear_net(signal):
    depth = 6
    model = erf.create_model("plain_net", depth=depth, width=32, kernel_size=3, activation="linear", in_channels=1)
    res = erf.measure(model, 2 * depth + 1, samples=1, weight_draws=24, init="kaiming_normal", signal=signal,
                      normalize_draws=True, crop=False, device="cpu", dtype="float64")
    theory = erf.linear_erf(chain(depth), signal=signal)
    assert res.map.shape == theory.map.shape
    for measured, expected in zip(res.sigma, theory.sigma):
        assert measured == pytest.approx(expected, rel=0.04)
