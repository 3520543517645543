"""The interop features on stand-ins, in every venv: the default layer of timm/torchvision classifiers.

Classes that say they come from timm (``feature_info``) or torchvision (``torchvision.models``), so
the rules run without the libraries; tests/test_interop_models.py runs them on the real ones.
"""

from __future__ import annotations

import pytest
import torch.nn as nn

import erf
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
