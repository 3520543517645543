"""Cone execution on real timm nets (CI's interop stage; marked ``interop``): exact in float64 or a named reason.

Each case is planned by ``erf.engine.cone_plan_status`` with ``cone=True`` (the share of positions
does not matter here) and checked against the uncropped pass (float64, 1e-9 of the largest
gradient); one is also measured both ways and the maps compared.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from erf.engine import cone_plan_status, measure

pytestmark = pytest.mark.interop("timm")


def timm_model(name: str, **kw) -> torch.nn.Module:
    import timm  # (only where it imports)

    torch.manual_seed(0)
    if name == "ConvMixer":  # convmixer_768_32's blocks, narrower and fewer
        from timm.models.convmixer import ConvMixer

        model = ConvMixer(**kw).double().eval()
    else:
        model = timm.create_model(name, pretrained=False, **kw).double().eval()
    with torch.no_grad():  # timm zero-initialises some norms' weights: give every norm a spread
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.LayerNorm)) and m.weight is not None:
                m.weight.uniform_(0.5, 1.5)
            if hasattr(m, "gamma") and isinstance(m.gamma, torch.Tensor):
                m.gamma.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("name,kw,size,layer,what", [
    ("mobilenetv2_050", {}, 64, "blocks.2", "timm's BatchNormAct2d (F.batch_norm on get_attr parameters)"),
    ("resnet50d", {}, 64, "layer2", "ResNet-D's ceil-mode average pool without the padding in its count"),
    ("res2net50_14w_8s", {}, 64, "layer1", "Res2Net's channel split and concat"),
    ("resnest14d", {}, 64, "layer1", "ResNeSt's reshape from x.shape and its global split-attention gate"),
    ("convnext_atto", {}, 64, "stages.1", "ConvNeXt's permute, LayerNorm, Linear and layer scale"),
    ("ConvMixer", dict(dim=32, depth=2, kernel_size=9, patch_size=7), 64, "blocks.1", "ConvMixer's padding='same'"),
])
def test_cone_runs_real_timm_nets_exactly(name, kw, size, layer, what):
    model = timm_model(name, **kw)
    ok, why = cone_plan_status(model, size, layer=layer, dtype="float64", cone=True, check=True)
    assert ok and "checked against an uncropped pass" in why, f"{what}: {why}"


def test_cone_map_equals_the_uncropped_map_on_convnext():
    model = timm_model("convnext_atto")
    kw = dict(layer="stages.0", samples=2, batch_size=2, dtype="float64", bn="as_is", unit=(3, 9))
    cone = measure(model, 64, cone=True, **kw)
    plain = measure(model, 64, cone=False, crop=False, **kw)
    assert cone.settings["cone"] is True and plain.settings["cone"] is False
    assert np.abs(plain.map).max() > 0
    np.testing.assert_allclose(cone.map, plain.map, rtol=1e-12, atol=1e-12 * np.abs(plain.map).max())


def test_cone_names_what_it_cannot_run_on_a_real_net():
    model = timm_model("edgenext_xx_small")
    ok, why = cone_plan_status(model, 64, layer="stages.1", cone=True)
    assert not ok and why.startswith("not cone-executed") and "tokens" in why, why


@pytest.mark.parametrize("name,layer,what", [
    ("mobilenetv3_small_100", "blocks.1", "squeeze-excitation gates, hard-swish"),
    ("ghostnet_100", "blocks.3", "GhostNet's channel slice of a concat"),
    ("convnextv2_atto", "stages.1", "ConvNeXt-V2's global response norm"),
    ("poolformer_s12", "stages.1", "PoolFormer's GroupNorm and pooling token mixer"),
    ("nfnet_l0", "stages.0", "NFNet's weight-standardised functional convs"),
    ("skresnet18", "layer1", "SKNet's stacked paths and softmax over them"),
])
def test_graph_cone_gradient_equals_the_full_gradient(name, layer, what):
    """The graph planner alone (no analytic trace): the unit's float64 input gradient, cone against full."""
    from erf.engine.cone_graph import plan_graph

    model = timm_model(name)
    for p in model.parameters():
        p.requires_grad_(False)
    got = {}
    hook = model.get_submodule(layer).register_forward_hook(lambda _m, _i, o: got.setdefault("out", o))
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64, requires_grad=True)
    model(x)
    hook.remove()
    unit = (1, got["out"].shape[3] - 2)  # near a corner: the border pads are exercised
    runner = plan_graph(model, layer, 0, unit, (64, 64), 3, torch.float64, torch.device("cpu"), None)
    assert not isinstance(runner, str), f"{what}: {runner}"
    (full,) = torch.autograd.grad(got["out"][(0, slice(None), *unit)].sum(), x)
    (cone,) = torch.autograd.grad(runner(x)[0, :, 0, 0].sum(), x)
    assert full.abs().max() > 0
    torch.testing.assert_close(cone, full, rtol=0, atol=1e-12 * float(full.abs().max()))
