"""timm and torchvision models in the engine (CI's interop stage; marked ``interop``).

The default layer (the last spatial stage when ``--layer`` is not given) and the note on
zero-initialised residual branches, with the libraries' own models.
"""

from __future__ import annotations

import pytest
import torch

import erf
from erf.cli import main
from erf.engine.target import TORCHVISION_STAGES, default_layer

pytestmark = pytest.mark.interop

NOTE = "no layer given: measured {!r}, the last spatial stage ({})"


@pytest.mark.interop("timm")
def test_timm_default_layer_is_the_last_feature_stage(capsys):
    code = main(["measure", "timm:test_resnet", "--input", "64", "--samples", "2", "--quiet", "--bn", "as_is"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert NOTE.format("layer4", "timm's feature_info, stride 32") in out
    assert "layer4" in out.splitlines()[0]
    import timm  # (only where it imports)

    # every stage kind: ResNet layer4, ConvNeXt stages, ViT blocks, EfficientNet blocks, Swin layers
    for name, want in [("resnet18", "layer4"), ("convnext_atto", "stages.3"), ("vit_tiny_patch16_224", "blocks.11"),
                       ("efficientnet_b0", "blocks.6"), ("swin_tiny_patch4_window7_224", "layers.3"),
                       ("regnetx_002", "s4"), ("inception_v3", "Mixed_7c"), ("densenet121", "features.norm5")]:
        got = default_layer(timm.create_model(name))
        assert got is not None and got[0] == want, (name, got)


@pytest.mark.interop("torchvision")
def test_torchvision_default_layer_is_the_last_stage():
    res = erf.measure(erf.load_model("torchvision:resnet18"), 64, samples=2, bn="as_is")
    assert res.layer.startswith("layer4") and res.map.shape == (64, 64)
    assert any(NOTE.format("layer4", "torchvision ResNet's last stage") in n for n in res.notes)
    from torchvision import models  # (only where it imports)

    for name, want in [("vgg11", "features"), ("densenet121", "features"), ("efficientnet_b0", "features"),
                       ("mobilenet_v3_small", "features"), ("convnext_tiny", "features"), ("squeezenet1_1", "features"),
                       ("regnet_x_400mf", "trunk_output"), ("shufflenet_v2_x0_5", "conv5"), ("mnasnet0_5", "layers"),
                       ("googlenet", "inception5b"), ("inception_v3", "Mixed_7c"), ("maxvit_t", "blocks.3"), ("swin_t", "features"),
                       ("vit_b_16", "encoder.layers")]:
        with torch.device("cpu" if name.startswith("regnet") else "meta"):  # meta: no memory, no init cost
            model = models.get_model(name, **({"init_weights": False} if name in ("googlenet", "inception_v3") else {}))
        got = default_layer(model)
        assert got is not None and got[0] == want, (name, got)
    # every torchvision classifier's builder module defines a class of the table
    import sys

    missing = [n for n in models.list_models(module=models)
               if not set(vars(sys.modules[models.get_model_builder(n).__module__])) & set(TORCHVISION_STAGES)]
    assert not missing, missing


@pytest.mark.interop("timm")
def test_a_named_layer_is_kept():
    res = erf.measure(erf.load_model("timm:test_resnet"), 64, layer="layer2", samples=2, bn="as_is")
    assert res.layer.startswith("layer2") and not any("no layer given" in n for n in res.notes)


@pytest.mark.interop("timm")
def test_timm_zero_init_residual_branches_are_found_and_noted():
    import timm  # (only where it imports)

    from erf.engine import init_scales

    r18 = init_scales.zero_scales(timm.create_model("resnet18"))  # zero_init_last: the last BN of every block
    assert [f.module for f in r18] == [f"layer{i}.{j}.bn2" for i in range(1, 5) for j in range(2)]
    assert all(f.kind == "norm weight" and f.max_abs == 0 for f in r18)
    cnx = init_scales.zero_scales(timm.create_model("convnext_atto"))  # layer scale 1e-6
    assert len(cnx) == 12 and all(f.kind == "layer scale" and f.parameter.endswith(".gamma") for f in cnx)
    assert max(f.max_abs for f in cnx) == pytest.approx(1e-6)
    deit3 = init_scales.zero_scales(timm.create_model("deit3_small_patch16_224"))
    assert {f.parameter.rsplit(".", 2)[-2] for f in deit3} == {"ls1", "ls2"} and len(deit3) == 24  # not cls_token
    assert init_scales.zero_scales(timm.create_model("convnextv2_atto")) == []  # GRN's zero weight is its identity
    assert init_scales.zero_scales(timm.create_model("efficientnet_b0")) == []

    model = erf.load_model("timm:test_resnet")
    res = erf.measure(model, 64, layer="layer2", samples=2, dtype="float64", bn="as_is")
    note = next(n for n in res.notes if n.startswith("residual branches closed in these weights"))
    assert "2 normalisation weight(s) = 0 (layer1.0.bn2, layer2.0.bn2;" in note  # not layer3/4: after layer2
    opened = erf.load_model("timm:test_resnet")
    init_scales.reset_scales(opened, init_scales.zero_scales(opened))
    wide = erf.measure(opened, 64, layer="layer2", samples=2, dtype="float64", bn="as_is")
    assert not any("residual branches closed" in n for n in wide.notes)
    assert (wide.map > 0).sum() > 2 * (res.map > 0).sum()  # the branches open: a wider support
