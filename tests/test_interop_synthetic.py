"""The interop features on stand-ins, in every venv: the default layer of timm/torchvision classifiers, and
the note on residual branches closed at init (zero BatchNorm weights, small layer scales).

Classes that say they come from timm (``feature_info``) or torchvision (``torchvision.models``), so
the rules run without the libraries; tests/test_interop_models.py runs them on the real ones.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import erf
from erf.engine import init_scales
from erf.engine.target import default_layer
from erf.models.reference import ResNet


class TimmNet(nn.Module):
    """A timm-like classifier: stages, a feature_info naming them, a pooled linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.stages = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, stride=2, padding=1))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
        self.feature_info = [{"num_chs": 4, "reduction": 2, "module": "stem"},
                             {"num_chs": 4, "reduction": 4, "module": "stages.1"}]

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))


TimmNet.__module__ = "timm.models.fake"


class TorchvisionResNet(ResNet):
    pass


TorchvisionResNet.__name__ = "ResNet"
TorchvisionResNet.__module__ = "torchvision.models.resnet"


def test_default_layer_of_a_timm_classifier_is_its_last_feature_stage():
    model = TimmNet()
    assert default_layer(model) == ("stages.1", "timm's feature_info, stride 4")
    res = erf.measure(model, 16, samples=2)
    assert res.layer.startswith("stages.1") and res.trf == (11, 11)
    assert any(n.startswith("no layer given: measured 'stages.1', the last spatial stage (timm's feature_info, "
                            "stride 4)") for n in res.notes)
    assert not any("no layer given" in n for n in erf.measure(model, 16, layer="stem", samples=2).notes)


def test_default_layer_of_a_torchvision_resnet_is_layer4():
    from erf.models.reference import BasicBlock

    model = TorchvisionResNet(BasicBlock, [1, 1, 1, 1], width=0.125)
    assert default_layer(model) == ("layer4", "torchvision ResNet's last stage")
    assert erf.measure(model, 32, samples=2, bn="as_is").layer.startswith("layer4")


def test_other_models_keep_their_output_as_the_default():
    assert default_layer(erf.create_model("resnet18", width=0.125)) is None  # the registry's: same names, not torchvision
    plain = erf.create_model("plain_net", depth=2, width=2)
    assert default_layer(plain) is None
    assert not any("no layer given" in n for n in erf.measure(plain, 8, samples=2).notes)  # the output, as before
    timm_like = TimmNet()
    timm_like.feature_info = [{"module": "no.such.module"}]
    assert default_layer(timm_like) is None
    with pytest.raises(erf.ErfError, match="has no spatial output"):
        erf.measure(timm_like, 16, samples=2)


# --------------------------------------------------------------------------- closed residual branches


class Block(nn.Module):
    """x + gamma * bn(conv(x)): a residual branch closed by a zero BN weight or a small layer scale."""

    def __init__(self, bn_weight: float = 1.0, gamma: float = 1.0):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        nn.init.constant_(self.bn.weight, bn_weight)
        self.gamma = nn.Parameter(torch.full((2,), gamma))

    def forward(self, x):
        return x + self.gamma[:, None, None] * self.bn(self.conv(x))


class GRN(nn.Module):
    """ConvNeXt-V2's global response norm: a zero weight is its identity, not a closed branch."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(2))
        self.bias = nn.Parameter(torch.zeros(2))

    def forward(self, x):
        g = x.norm(dim=(2, 3), keepdim=True)
        return x + self.weight[:, None, None] * (x * g / (g.mean(1, keepdim=True) + 1e-6)) + self.bias[:, None, None]


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), Block(bn_weight=0.0), Block(gamma=1e-6), GRN(),
                         Block(bn_weight=0.0))


def test_zero_scales_finds_zero_norm_weights_and_small_layer_scales():
    found = init_scales.zero_scales(_net())
    assert [(f.parameter, f.kind) for f in found] == [("1.bn.weight", "norm weight"), ("2.gamma", "layer scale"),
                                                      ("4.bn.weight", "norm weight")]
    assert found[1].max_abs == pytest.approx(1e-6) and found[1].module == "2"
    assert init_scales.zero_scales(Block()) == [] and init_scales.zero_scales(Block(gamma=0.01)) == []
    assert init_scales.zero_scales(Block(gamma=0.01), tol=0.1)[0].parameter == "gamma"


def test_measure_notes_the_closed_branches_before_its_layer_only():
    net = _net()
    res = erf.measure(net, 16, layer="2", samples=2, dtype="float64", bn="as_is")
    closed = [n for n in res.notes if n.startswith("residual branches closed in these weights")]
    assert len(closed) == 1, res.notes
    assert "1 normalisation weight(s) = 0 (1.bn;" in closed[0] and "1 layer scale(s) <= 1e-06 (2.gamma;" in closed[0]
    assert "4.bn" not in closed[0]  # applied after the measured layer
    full = erf.measure(net, 16, layer="0", samples=2, dtype="float64", bn="as_is")
    assert not any("residual branches closed" in n for n in full.notes)  # none before the first conv


def test_reset_scales_opens_the_branches():
    net = _net()
    closed = erf.measure(net, 16, layer="4", samples=2, dtype="float64", bn="as_is")
    assert init_scales.reset_scales(net, init_scales.zero_scales(net)) == 3
    assert init_scales.zero_scales(net) == []
    opened = erf.measure(net, 16, layer="4", samples=2, dtype="float64", bn="as_is")
    assert not any("residual branches closed" in n for n in opened.notes)
    # closed: the stem conv's 3x3 (and 1e-6 of a branch around it); opened: three 3x3 branches more (9x9)
    def outside(m):  # share of the map outside the stem conv's 3x3 around the unit (8, 8)
        return 1 - m[7:10, 7:10].sum() / m.sum()

    assert (closed.map > 0).sum() == 25 and outside(closed.map) < 1e-4
    assert (opened.map > 0).sum() == 81 and outside(opened.map) > 0.3


# --------------------------------------------------------------------------- BatchNorm calibration cost


def _bn_net(stride: int) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, stride=stride, padding=1), nn.BatchNorm2d(4)).eval()


def test_bn_calibration_stops_once_every_layer_has_enough_values():
    from erf.engine.bn import CALIBRATION_BATCH, CALIBRATION_POSITIONS, CALIBRATION_SAMPLES, calibrate_bn

    g = torch.Generator().manual_seed(0)
    xs = torch.randn(CALIBRATION_SAMPLES, 3, 32, 32, generator=g)
    asked = []

    def batches(first, n):
        asked.append(n)
        return xs[first:first + n]

    # 32x32 maps: 16 inputs give 16 x 1024 values per channel >= 3136, one pass instead of four
    assert calibrate_bn(_bn_net(1), batches, CALIBRATION_BATCH) == CALIBRATION_BATCH and asked == [16]
    assert CALIBRATION_POSITIONS == 64 * 49
    # the second BatchNorm sees a 4x4 map (stride 8): 16 values per input, so all 64 inputs
    asked.clear()
    assert calibrate_bn(_bn_net(8), batches, CALIBRATION_BATCH) == CALIBRATION_SAMPLES and asked == [16] * 4
    # positions=None: the fixed count, as before
    asked.clear()
    full = _bn_net(1)
    assert calibrate_bn(full, batches, CALIBRATION_BATCH, positions=None) == CALIBRATION_SAMPLES
    # the statistics of 16 inputs are close to those of 64 (Gaussian noise, 16k values per channel)
    quick = _bn_net(1)
    calibrate_bn(quick, batches, CALIBRATION_BATCH)
    for a, b in zip([quick[1], quick[4]], [full[1], full[4]]):
        torch.testing.assert_close(a.running_var, b.running_var, rtol=0.05, atol=0)
        torch.testing.assert_close(a.running_mean, b.running_mean, rtol=0, atol=0.05 * float(b.running_var.sqrt().max()))


def test_bn_calibration_counts_only_the_layers_before_the_target(monkeypatch):
    import erf.engine.context as context

    used = []
    real = context.calibrate_bn
    monkeypatch.setattr(context, "calibrate_bn", lambda *a, **k: used.append(real(*a, **k)) or used[-1])
    net = _bn_net(8)
    res = erf.measure(net, 32, layer="2", samples=2, crop=False)  # the 4x4 BatchNorm is after the target
    assert used == [16]  # the 32x32 BatchNorm alone decides: one pass
    erf.measure(net, 32, samples=2, crop=False)  # the output: the 4x4 one too
    assert used == [16, 64]
    assert any("re-estimated on up to 64 probe inputs (3136 values per channel)" in n for n in res.notes)
    assert int(net[1].num_batches_tracked) == 0  # the caller's model untouched
