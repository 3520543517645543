"""Heavy-tail diagnostics: one exploding sample or weight draw is flagged, normalize_samples is robust."""

import numpy as np
import pytest
import torch
import torch.nn as nn

import erf
from erf.engine.diagnostics import diagnose, group_influence, sample_limit


class Square(nn.Module):
    def forward(self, x):
        return x * x


def squared_conv():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), Square(), nn.Conv2d(4, 1, 3, padding=1))


def inputs(n=24, boost=None):
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(1, 9, 9, generator=g) for _ in range(n)]
    if boost is not None:
        xs[boost] = xs[boost] * 1000.0  # the gradient of x*x grows with x: one exploding sample
    return xs


def test_one_exploding_sample_is_flagged_and_normalize_samples_is_robust():
    model = squared_conv()
    kw = dict(samples=24, batch_size=8, crop=False, device="cpu", dtype="float64")
    calm = erf.measure(model, 9, inputs=inputs(), **kw)
    assert calm.diagnostics["flags"] == [] and calm.diagnostics["ess"] > 12
    with pytest.warns(UserWarning, match="one input sample holds"):
        hot = erf.measure(model, 9, inputs=inputs(boost=5), **kw)
    d = hot.diagnostics
    assert d["max_sample_share"] > 0.9 and d["ess"] < 1.2 and d["samples_weighed"] == 24
    assert len(d["flags"]) == 1  # one cause, one warning (groups of one sample are not flagged again)
    assert any("one input sample holds" in n for n in hot.notes)
    robust = erf.measure(model, 9, inputs=inputs(boost=5), normalize_samples=True, **kw)
    r = robust.diagnostics
    assert r["max_sample_share"] == pytest.approx(1 / 24) and r["flags"] == []
    assert r["raw_max_sample_share"] > 0.9  # the raw masses are still reported
    assert robust.map.sum() == pytest.approx(1.0)  # the mean of unit-total maps
    assert any("normalize_samples" in n for n in robust.notes)


def test_one_exploding_weight_draw_is_flagged():
    calls = []

    def init(model, generator):
        calls.append(1)
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, generator=generator)
                if len(calls) == 3:  # draw 2 (draw 0 is drawn first)
                    m.weight.data *= 100.0

    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.Conv2d(2, 1, 3, padding=1, bias=False))
    kw = dict(samples=4, batch_size=4, weight_draws=4, crop=False, device="cpu")
    with pytest.warns(UserWarning, match="one group"):
        res = erf.measure(model, 9, init=init, **kw)
    assert res.diagnostics["max_group_share"] > 0.99 and res.diagnostics["groups"] == 4
    calls.clear()
    fair = erf.measure(model, 9, init=init, normalize_draws=True, **kw)
    assert fair.diagnostics["max_group_share"] == pytest.approx(0.25)
    assert not any("one group" in f for f in fair.diagnostics["flags"])


def test_a_group_of_another_shape_moves_sigma_and_is_flagged():
    yy, xx = np.mgrid[:41, :41]

    def blob(cy, cx, s):  # unit total, as normalize_draws makes every network
        g = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        return g / g.sum()

    sums = np.stack([blob(20, 20, 4 + 0.05 * k) for k in range(6)])
    sums[3] = 0.5 * blob(20, 20, 4) + 0.5 * blob(35, 5, 1)  # an off-centre hot spot in one network
    infl = group_influence(sums, np.ones(6))
    assert infl["group"] == 3 and infl["flagged"] and infl["change"] > 0.05
    d, flagged = diagnose(sums.reshape(6, -1).sum(1), 1, sums, np.ones(6), normalize_draws=True)
    assert any("leaving out group 3" in f for f in flagged)


def test_sample_limit_rule_and_zero_gradient_share():
    assert sample_limit(2) > 1 and sample_limit(16) == 0.5 and sample_limit(100) == pytest.approx(0.1)
    relu = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.ReLU(), nn.Conv2d(1, 1, 3, padding=1))  # sparse paths
    lin = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 1, 3, padding=1))
    torch.manual_seed(0)
    for m in (relu, lin):
        for p in m.parameters():
            nn.init.normal_(p)
    kw = dict(samples=16, crop=False, device="cpu")
    z_relu = erf.measure(relu, 9, **kw).diagnostics["zero_grad_fraction"]
    z_lin = erf.measure(lin, 9, **kw).diagnostics["zero_grad_fraction"]
    assert z_lin == 0.0 and 0.0 < z_relu < 1.0
