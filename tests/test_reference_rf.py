"""Every row of tests/REFERENCE.md ("Classic architectures") that the reference models express, via the traced graph."""

import pytest

import erf.analytic.tracer as tracing
from erf.analytic import receptive_field
from erf.models import create_model

W = 0.0625  # width multiplier: the RF does not depend on channel counts


def rf_of(name, layer, size=224, **kw):
    row = receptive_field(create_model(name, width=W, **kw), size).layer(layer)
    return row.rf[0], row.jump[0], row.padding[0]


def test_alexnet_caffe_matches_the_classic_blog():
    r = receptive_field(create_model("alexnet_caffe", width=W), 227)
    names = ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5", "fc6"]
    rows = [r.layer(n) for n in names]
    assert [x.rf[0] for x in rows] == [11, 19, 51, 67, 99, 131, 163, 195, 355]
    assert [x.jump[0] for x in rows] == [4, 8, 8, 16, 16, 16, 16, 32, 32]
    assert [x.center[0] + 0.5 for x in rows] == [5.5, 9.5, 9.5, 17.5, 17.5, 17.5, 17.5, 33.5, 113.5]


VGG16 = {  # layer: (r, j, P)
    "features.0": (3, 1, 1), "features.4": (6, 2, 2), "features.5": (10, 2, 4), "features.9": (16, 4, 6),
    "features.10": (24, 4, 10), "features.12": (32, 4, 14), "features.16": (44, 8, 18),
    "features.17": (60, 8, 26), "features.19": (76, 8, 34), "features.23": (100, 16, 42),
    "features.24": (132, 16, 58), "features.26": (164, 16, 74), "features.30": (212, 32, 90),
}


def test_vgg16_every_reference_row():
    r = receptive_field(create_model("vgg16", width=W), 224)
    got = {name: (r.layer(name).rf[0], r.layer(name).jump[0], r.layer(name).padding[0]) for name in VGG16}
    assert got == VGG16


def test_vgg11_and_vgg19_pool5():
    assert rf_of("vgg11", "features.20") == (150, 32, 59)
    r, j, _ = rf_of("vgg19", "features.36")
    assert (r, j) == (268, 32)


@pytest.mark.parametrize("name,expected", [
    ("resnet50", {"layer1": (35, 4, 17), "layer2": (91, 8, 45), "layer3": (267, 16, 133), "layer4": (427, 32, 213)}),
    ("resnet50_v1", {"layer1": (35, 4), "layer2": (99, 8), "layer3": (291, 16), "layer4": (483, 32)}),
    ("resnet18", {"layer3": (211, 16, 105), "layer4": (435, 32, 217)}),
])
def test_resnets(name, expected):
    r = receptive_field(create_model(name, width=W), 224)
    for layer, want in expected.items():
        row = r.layer(layer)
        assert (row.rf[0], row.jump[0], row.padding[0])[:len(want)] == want, layer


def test_resnet_head_is_global_and_not_crop_safe():
    r = receptive_field(create_model("resnet18", width=W), 224)
    assert r.target.is_global and not r.crop_safe
    assert not r.layer("layer4").is_global
    r4 = receptive_field(create_model("resnet18", width=W), 224, layer="layer4")
    assert r4.crop_safe


def test_meta_pass_equals_real_pass(monkeypatch):
    model = create_model("resnet18", width=W)
    meta = receptive_field(model, 96)
    monkeypatch.setattr(tracing, "META_FIRST", False)
    real = receptive_field(model, 96)
    assert [row.to_dict() for row in meta.layers] == [row.to_dict() for row in real.layers]
    assert not any(p.is_meta for p in model.parameters())
