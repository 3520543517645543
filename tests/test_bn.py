"""The BatchNorm policy of a measurement (bn = auto / calibrate / as_is)."""

import numpy as np
import pytest
import torch
import torch.nn as nn

import erf
from erf.engine import MeasureOptions
from erf.engine.bn import BN_POLICIES, calibrate_bn, is_fresh, wants_calibration
from erf.errors import ErfError

ARGS = dict(depth=12, width=16, kernel_size=3, activation="relu", norm="batch", in_channels=1, last_activation=False)


def residual(seed=0):
    torch.manual_seed(seed)
    return erf.create_model("residual_net", **ARGS)


@pytest.mark.slow
def test_calibrated_residual_net_at_init_has_a_far_larger_erf():
    """Fresh eval-mode BatchNorm is the identity: the residual branches vanish and the ERF is the skip path.

    Re-estimating the statistics on the probe inputs (bn='auto' does it for a fresh init) gives the
    residual net's own ERF: sigma about 1.44 -> 3.0 px, area above 10 % of the peak 1 -> ~90 pixels.
    """
    model = residual()
    kw = dict(samples=64, batch_size=64, crop=True, seed=0, device="cpu")
    raw = erf.measure(model, 48, bn="as_is", **kw)
    cal = erf.measure(model, 48, **kw)  # default bn="auto" calibrates a fresh init
    assert cal.settings["bn"] == "auto" and cal.settings["bn_calibrated"] is True
    assert any("bn=auto" in n and "re-estimated" in n for n in cal.notes)
    assert any("bn=as_is" in n for n in raw.notes)
    area_raw, area_cal = raw.metrics["area_above_count_0.1"], cal.metrics["area_above_count_0.1"]
    assert area_cal >= 5 * area_raw
    assert cal.sigma[1] > 1.6 * raw.sigma[1]
    assert raw.sigma[1] == pytest.approx(1.44, rel=0.1) and cal.sigma[1] == pytest.approx(3.0, rel=0.1)
    # the caller's model is untouched: still fresh
    assert is_fresh(model)


@pytest.mark.slow
def test_auto_keeps_trained_statistics_and_calibrate_replaces_them():
    model = residual(1)
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 1, 32, 32) * 3)  # "training" updates the running statistics
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kw = dict(samples=8, batch_size=8, crop=False, device="cpu", dtype="float64")
    auto = erf.measure(model, 32, **kw)
    as_is = erf.measure(model, 32, bn="as_is", **kw)
    cal = erf.measure(model, 32, bn="calibrate", **kw)
    assert np.array_equal(auto.map, as_is.map)
    assert any("trained BatchNorm statistics kept" in n for n in auto.notes)
    assert not np.allclose(cal.map, as_is.map)
    assert any("bn=calibrate" in n for n in cal.notes)
    for k, v in model.state_dict().items():  # measuring never changes the caller's model
        assert torch.equal(v, before[k]), k


def test_calibration_is_a_cumulative_average_on_a_copy():
    bn = nn.BatchNorm2d(2)
    model = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), bn)
    nn.init.ones_(model[0].weight)
    model.eval()
    xs = [torch.full((2, 1, 3, 3), v) for v in (1.0, 3.0)]
    used = calibrate_bn(model, lambda first, n: xs[first // 2] if first < 4 else None, 2, samples=4)
    assert used == 4 and not bn.training and bn.momentum == 0.1
    assert bn.running_mean.tolist() == pytest.approx([2.0, 2.0])  # mean of the two batch means 1 and 3
    assert int(bn.num_batches_tracked) == 2


def test_policy_checks_and_models_without_batchnorm():
    assert BN_POLICIES == ("auto", "calibrate", "as_is")
    with pytest.raises(ErfError, match="bn must be one of auto, calibrate, as_is"):
        MeasureOptions(bn="train")
    plain = nn.Sequential(nn.Conv2d(1, 1, 3))
    assert wants_calibration(plain, "calibrate") == (False, None)
    res = erf.measure(plain, 9, samples=2, device="cpu")
    assert not any("bn=" in n for n in res.notes) and res.settings["bn_calibrated"] is False


def test_train_mode_batchnorm_is_not_calibrated():
    model = residual(2)
    model.train()
    res = erf.measure(model, 32, samples=2, batch_size=1, eval_mode=False, single_sample=True, crop=False,
                      device="cpu")
    assert any("batch statistics: no bn calibration" in n for n in res.notes)


def test_calibrated_map_does_not_depend_on_the_batch_size():
    # the calibration batches are CALIBRATION_BATCH inputs whatever batch_size is: a cumulative
    # average of per-batch statistics that followed batch_size moved this map by ~0.1 relative
    m = erf.create_model("resnet18", width=0.25)
    a = erf.measure(m, 32, layer="layer3", samples=4, batch_size=1).map
    b = erf.measure(m, 32, layer="layer3", samples=4, batch_size=4).map
    assert float(np.abs(a - b).max()) < 1e-5 * float(np.abs(a).max())
