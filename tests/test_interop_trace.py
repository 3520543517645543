"""Real timm and torchvision models traced exactly: the TRF box of a stage's centre unit (clipped) equals the
support of the float64 input gradient, with every parameter perturbed so that no branch is closed at init.

One model per family that used to stall, fail or give wrong boxes (issue: the zoo), at a small input."""

import pytest
import torch

import erf
from erf.engine.target import TargetRunner, default_layer, resolve_target

TIMM = [  # (name, input px)
    ("resnet18", 64), ("seresnet18", 64), ("resnet50d", 64), ("resnest14d", 64), ("res2net50_14w_8s", 64),
    ("efficientnet_b0", 64), ("tf_efficientnetv2_b0", 64), ("mobilenetv3_small_100", 64), ("ghostnet_100", 64),
    ("rexnet_100", 64), ("regnety_002", 64), ("convnextv2_atto", 64), ("poolformer_s12", 64),
    ("edgenext_xx_small", 64), ("dla34", 64), ("hrnet_w18_small", 64), ("vit_tiny_patch16_224", 224),
    ("deit_tiny_patch16_224", 224), ("swin_tiny_patch4_window7_224", 224), ("mobilevit_xxs", 64),
    ("coatnet_pico_rw_224", 224), ("maxvit_pico_rw_256", 256), ("convmixer_768_32", 64), ("levit_128s", 224),
]
TORCHVISION = [("inception_v3", 96), ("googlenet", 64), ("resnet18", 64), ("swin_t", 224), ("densenet121", 64),
               ("regnet_y_400mf", 64), ("shufflenet_v2_x0_5", 64), ("squeezenet1_0", 64)]


def support_and_box(model, size):
    model = model.double().eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():  # open branches closed at init (zero gammas, 1e-6 layer scales)
            p.add_(0.05 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    layer = default_layer(model)
    target = resolve_target(model, (size, size), layer[0] if layer else None)
    row = target.geometry
    unit = tuple(n // 2 for n in row.output)
    x = torch.randn(1, 3, size, size, dtype=torch.float64, generator=gen).requires_grad_(True)
    out = TargetRunner(model, target)(x)  # the module's output, as erf.measure computes it
    idx = [slice(None)] * out.dim()
    for d, i in target.index_of(unit).items():
        idx[d] = i
    out[tuple(idx)].sum().backward()
    nz = x.grad.abs().sum((0, 1)) > 0
    got = tuple((int(torch.nonzero(nz.any(1 - a)).min()), int(torch.nonzero(nz.any(1 - a)).max())) for a in (0, 1))
    return got, row.box(unit, clip=True), row


@pytest.mark.interop("timm")
@pytest.mark.parametrize("name,size", TIMM, ids=[n for n, _ in TIMM])
def test_timm_stage_trf_equals_gradient_support(name, size):
    import timm  # lazy: interop only
    torch.manual_seed(0)
    got, box, row = support_and_box(timm.create_model(name, pretrained=False), size)
    assert got == box, (name, row.name)
    assert all(r >= 1 for r in row.rf_local) and all(a <= b for a, b in zip(row.rf_local, row.rf))


@pytest.mark.interop("torchvision")
@pytest.mark.parametrize("name,size", TORCHVISION, ids=[n for n, _ in TORCHVISION])
def test_torchvision_stage_trf_equals_gradient_support(name, size):
    import torchvision.models as tvm  # lazy: interop only
    torch.manual_seed(0)
    kw = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    got, box, _ = support_and_box(tvm.get_model(name, weights=None, **kw), size)
    assert got == box, name


@pytest.mark.interop("timm")
def test_gated_and_attention_nets_trace_fast_with_rf_local():
    import time
    import timm  # lazy: interop only
    for name, local in (("seresnet18", 435), ("vit_tiny_patch16_224", 16)):
        m = timm.create_model(name, pretrained=False)
        t = time.perf_counter()
        r = erf.receptive_field(m, 224, layer=default_layer(m)[0])
        assert time.perf_counter() - t < 60  # it stalled (never finished) before the floor boxes
        assert r.target.is_global and r.rf_local == (local, local)


@pytest.mark.interop("timm")
def test_resnet_d_offset_is_reported_not_refused():
    import timm  # lazy: interop only
    r = erf.receptive_field(timm.create_model("resnet50d", pretrained=False), 224)
    off = [row for row in r.layers if row.offset]
    assert off and any("off-centre" in n for n in r.notes)
    with pytest.raises(erf.AlignmentError):
        erf.receptive_field(timm.create_model("resnet50d", pretrained=False), 224, allow_unaligned=False)
