"""Cone execution (erf.engine.cone): exact where it runs, a note and the usual pass where it cannot."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from erf.engine import measure
from erf.errors import ErfError
from erf.models import create_model


def mixed_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2, padding=2, dilation=2), nn.GELU(),
        nn.MaxPool2d(3, stride=2, padding=1), nn.Conv2d(4, 4, (3, 1), padding=(1, 0)), nn.Tanh(),
        nn.AvgPool2d(2, stride=1, padding=1), nn.Conv2d(4, 3, 3, padding=1, bias=True))
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    return net


@pytest.mark.slow
@pytest.mark.parametrize("unit", [None, (0, 0), (1, 9), (10, 10)])
def test_cone_equals_the_uncropped_pass_inside_and_at_the_border(unit):
    net = mixed_net()
    kw = dict(samples=4, batch_size=2, dtype="float64", unit=unit)
    cone = measure(net, (40, 44), **kw)
    plain = measure(net, (40, 44), cone=False, crop=False, **kw)
    assert cone.settings["cone"] is True and plain.settings["cone"] is False
    assert any(n.startswith("cone-executed") for n in cone.notes)
    np.testing.assert_allclose(cone.map, plain.map, rtol=1e-12, atol=1e-14 * np.abs(plain.map).max())


def test_cone_runs_fewer_positions_on_a_deep_plain_net():
    net = create_model("plain_net", depth=10, width=4, activation="relu")
    counted = {"cone": 0, "plain": 0}
    for key, cone in (("cone", "auto"), ("plain", False)):
        def count(_m, _i, o, k=key):
            if o.shape[0] == 2:  # the loop's batches, not the one-sample checks
                counted[k] += o[0, 0].numel()
        hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, nn.ReLU)]
        res = measure(net, 64, samples=2, batch_size=2, cone=cone)
        for h in hooks:
            h.remove()
        assert res.settings["cone"] is (cone == "auto")
    # the pyramid: 19^2 + 17^2 + ... + 1^2 activations against 10 x 22^2 (the crop)
    assert counted["cone"] == sum((2 * i + 1) ** 2 for i in range(10)) and counted["plain"] == 10 * 22 ** 2


@pytest.mark.parametrize("name,kw,size,layer", [
    ("residual_net", dict(depth=6, width=4, activation="relu", norm="batch"), 40, None),
    ("resnet18", dict(width=0.125), 96, "layer2"),
    ("resnet50", dict(width=0.125), 128, "layer2"),
])
def test_graph_cone_for_residual_adds_equals_the_uncropped_pass(name, kw, size, layer):
    torch.manual_seed(0)
    net = create_model(name, **kw).double().eval()
    res = measure(net, size, layer=layer, samples=4, batch_size=2, dtype="float64")
    ref = measure(net, size, layer=layer, samples=4, batch_size=2, dtype="float64", crop=False, cone=False)
    assert res.settings["cone"] is True and any(n.startswith("cone-executed") for n in res.notes)
    np.testing.assert_allclose(res.map, ref.map, rtol=0, atol=1e-12 * np.abs(ref.map).max())


class Upsampled(nn.Module):
    """A residual add after an upsampling with align_corners: a graph the cone runner does not cover."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 3, stride=2, padding=1)
        self.c = nn.Conv2d(2, 1, 3, padding=1)

    def forward(self, x):
        h = self.a(x)
        return self.c(h + F.interpolate(self.b(h), scale_factor=2.0, mode="bilinear", align_corners=True))


def test_no_cone_for_an_unsupported_graph_with_a_note_and_the_same_map():
    torch.manual_seed(0)
    net = Upsampled().double()
    res = measure(net, 24, samples=2, batch_size=2, dtype="float64")
    ref = measure(net, 24, samples=2, batch_size=2, dtype="float64", cone=False)
    assert res.settings["cone"] is False
    assert any(n.startswith("not cone-executed") and "interpolate" in n for n in res.notes)
    np.testing.assert_array_equal(res.map, ref.map)
    with pytest.raises(ErfError, match="cone execution cannot run this target"):
        measure(net, 24, samples=2, cone=True)


def test_unsupported_layers_fall_back_with_a_note():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"), nn.Conv2d(2, 1, 3))
    res = measure(net, 20, samples=2)
    assert res.settings["cone"] is False
    assert any("not cone-executed" in n and "reflect" in n for n in res.notes)
    with pytest.raises(ErfError, match="cone must be"):
        measure(net, 20, samples=2, cone="yes")


def test_an_inner_layer_target_uses_the_chain_up_to_it():
    net = mixed_net()
    kw = dict(samples=2, batch_size=2, dtype="float64", layer="5")
    cone = measure(net, 32, **kw)
    plain = measure(net, 32, cone=False, crop=False, **kw)
    assert cone.settings["cone"] is True
    np.testing.assert_allclose(cone.map, plain.map, rtol=1e-12, atol=1e-14 * np.abs(plain.map).max())


def test_checks_run_once_per_architecture_and_unit():
    from erf.engine import forget_checks

    forget_checks()
    torch.manual_seed(0)
    a = create_model("plain_net", depth=6, width=4, in_channels=1).double().eval()
    b = create_model("plain_net", depth=6, width=4, in_channels=1).double().eval()  # other weights
    first = measure(a, 40, samples=2, dtype="float64")
    second = measure(b, 40, samples=2, dtype="float64")
    assert first.cropped and not any("earlier in this process" in n for n in first.notes)
    assert sum("earlier in this process" in n for n in second.notes) == 2  # the crop's and the cone's check
    other_unit = measure(b, 40, samples=2, dtype="float64", unit=(5, 7))
    assert not any("earlier in this process" in n for n in other_unit.notes)  # another unit: checked anew
    uncut = measure(b, 40, samples=2, dtype="float64", crop=False, cone=False)
    np.testing.assert_allclose(second.map, uncut.map, rtol=0, atol=1e-12 * np.abs(uncut.map).max())
    forget_checks()
    again = measure(b, 40, samples=2, dtype="float64")
    assert not any("earlier in this process" in n for n in again.notes)


def test_no_cone_where_the_unit_depends_on_nearly_every_position():
    net = create_model("resnet50", width=0.125).eval()
    res = measure(net, 64, layer="layer4", samples=2, batch_size=2)  # the TRF covers the image
    assert res.settings["cone"] is False
    assert any(n.startswith("not cone-executed") and "of the positions" in n for n in res.notes)
    forced = measure(net, 64, layer="layer4", samples=2, batch_size=2, cone=True)
    assert forced.settings["cone"] is True and any("of the positions of the usual pass" in n for n in forced.notes)
    np.testing.assert_allclose(forced.map, res.map, rtol=1e-4, atol=1e-6 * np.abs(res.map).max())


def test_cone_plan_status_says_what_measure_does_and_why():
    from erf.engine import cone_plan_status

    torch.manual_seed(0)
    net = create_model("resnet18", width=0.125).double().eval()
    ok, why = cone_plan_status(net, 96, layer="layer2", dtype="float64")
    assert ok and why.startswith("cone-executed") and "not checked" in why
    ok, why = cone_plan_status(net, 96, layer="layer2", dtype="float64", check=True)
    assert ok and "checked against an uncropped pass" in why
    ok, why = cone_plan_status(net, 96, layer="layer4")
    assert not ok and "of the positions" in why
    assert cone_plan_status(net, 96, layer="layer4", cone=True)[0]  # forced: only the geometry's share was in the way
    ok, why = cone_plan_status(Upsampled(), 24)
    assert not ok and why.startswith("not cone-executed") and "interpolate" in why
    res = measure(Upsampled(), 24, samples=1)
    assert res.settings["cone"] is False and any(why == n for n in res.notes)


def pooling_net() -> nn.Module:
    """Convs with 'same' and asymmetric padding, ceil-mode pools, count_include_pad=False and a divisor."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 4, padding="same"), nn.ReLU(),
        nn.AvgPool2d(2, stride=2, ceil_mode=True, count_include_pad=False),
        nn.Conv2d(3, 3, (3, 2), padding="same", dilation=(2, 1)), nn.Tanh(),
        nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
        nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False), nn.Conv2d(3, 3, 3, padding=1),
        nn.AvgPool2d(2, stride=2, padding=1, ceil_mode=True), nn.Conv2d(3, 2, 1),
        nn.AvgPool2d(3, stride=1, padding=1, divisor_override=5))


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # PyTorch's note: the asymmetric case
@pytest.mark.parametrize("unit", [None, (0, 0), (4, 0), (2, 1)])
def test_cone_runs_same_padding_and_ceil_mode_pools_exactly(unit):
    net = pooling_net().double()
    kw = dict(samples=2, batch_size=2, dtype="float64", unit=unit, cone=True)
    cone = measure(net, (37, 35), **kw)
    plain = measure(net, (37, 35), **dict(kw, cone=False, crop=False))
    assert cone.settings["cone"] is True and plain.settings["cone"] is False
    assert np.abs(plain.map).max() > 0
    np.testing.assert_allclose(cone.map, plain.map, rtol=1e-12, atol=1e-13 * np.abs(plain.map).max())


class FusedBN(nn.BatchNorm2d):
    """timm's BatchNormAct2d: F.batch_norm on the module's own parameters, then an activation (fx traces into it)."""

    def forward(self, x):
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.1, self.eps)
        return F.relu(x)


class Block(nn.Module):
    """The ops of real nets' blocks: fused BN, a ConvNeXt permute / LayerNorm / Linear / layer scale, a
    Res2Net channel split and concat, a ResNeSt reshape from x.shape with a global gate."""

    def __init__(self, c: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, groups=2)
        self.bn = FusedBN(c)
        self.dw = nn.Conv2d(c, c, 5, padding=2, groups=c)
        self.norm, self.fc = nn.LayerNorm(c), nn.Linear(c, c)
        self.gamma = nn.Parameter(torch.rand(c) + 0.5)
        self.split_convs = nn.ModuleList(nn.Conv2d(c // 4, c // 4, 3, padding=1) for _ in range(3))
        self.gate = nn.Conv2d(c // 2, c, 1)

    def forward(self, x):
        h = self.bn(self.conv(x))
        y = self.dw(h).permute(0, 2, 3, 1)
        y = self.fc(F.gelu(self.norm(y)))
        h = h + y.permute(0, 3, 1, 2) * self.gamma.reshape(1, -1, 1, 1)
        parts = torch.split(h, h.shape[1] // 4, 1)
        out, sp = [], None
        for i, conv in enumerate(self.split_convs):
            sp = parts[i] if sp is None else sp + parts[i]
            sp = conv(sp).relu()
            out.append(sp)
        h = torch.cat(out + [parts[3]], dim=1)
        b, c, hh, ww = h.shape
        r = h.reshape(b, 2, c // 2, hh, ww)
        g = r.sum(dim=1).mean((2, 3), keepdim=True)
        return h * torch.sigmoid(self.gate(g)).view(b, -1, 1, 1) + x


class RealOps(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(2, 8, 3, stride=2, padding=1)
        self.blocks = nn.Sequential(Block(), Block())
        self.head = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


def test_graph_cone_runs_the_ops_of_real_nets_exactly():
    from erf.engine import cone_plan_status

    torch.manual_seed(0)
    net = RealOps().double().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    ok, why = cone_plan_status(net, 40, dtype="float64", cone=True, check=True)
    assert ok and "checked against an uncropped pass" in why, why
    for unit in [(10, 10), (0, 3)]:
        kw = dict(samples=2, batch_size=2, dtype="float64", unit=unit, cone=True)
        cone = measure(net, 40, **kw)
        plain = measure(net, 40, **dict(kw, cone=False, crop=False))
        assert cone.settings["cone"] is True
        np.testing.assert_allclose(cone.map, plain.map, rtol=1e-12, atol=1e-13 * np.abs(plain.map).max())


class PositionEmbedded(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.pos = nn.Parameter(torch.randn(1, 2, 16, 16))
        self.head = nn.Conv2d(2, 1, 1)

    def forward(self, x):
        return self.head(self.conv(x) + self.pos)


class Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.attn = nn.Linear(4, 4)
        self.head = nn.Conv2d(4, 1, 1)

    def forward(self, x):
        h = self.conv(x)
        b, c, hh, ww = h.shape
        t = self.attn(h.flatten(2).transpose(1, 2))
        return self.head(t.transpose(1, 2).reshape(b, c, hh, ww))


@pytest.mark.parametrize("net,reason", [
    (PositionEmbedded(), "varies along a map axis"),
    (Tokens(), "flattening them into tokens"),
])
def test_graph_cone_names_what_it_cannot_run(net, reason):
    from erf.engine import cone_plan_status

    ok, why = cone_plan_status(net, 16, cone=True, crop=False)
    assert not ok and reason in why, why


def test_no_cone_with_batchnorm_in_train_mode():
    from erf.engine import cone_plan_status

    net = mixed_net().train()
    ok, why = cone_plan_status(net, 24, eval_mode=False, single_sample=True, crop=False, cone=True)
    assert not ok and "BatchNorm in train mode" in why
    assert cone_plan_status(net, 24, crop=False, cone=True)[0]  # eval mode (the default): the same net runs


class MoreOps(nn.Module):
    """GhostNet's channel slice of a concat, SKNet's stack of paths, ConvNeXt-V2's global response norm (a norm over the map axes in
    NHWC, addcmul), PoolFormer's GroupNorm (every position reads the whole map)."""

    def __init__(self, c: int = 6):
        super().__init__()
        self.a, self.b = nn.Conv2d(2, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.gamma, self.beta = nn.Parameter(torch.rand(1, 1, 1, c)), nn.Parameter(torch.rand(1, 1, 1, c))
        self.gn = nn.GroupNorm(1, c)
        self.head = nn.Conv2d(c, 2, 3, padding=1)

    def forward(self, x):
        a = self.a(x)
        h = torch.cat([a, self.b(a)], dim=1)[:, : a.shape[1], ...] + torch.stack([a, self.b(a)], dim=1).amax(dim=1)
        y = h.permute(0, 2, 3, 1)
        g = y.norm(p=2, dim=(1, 2), keepdim=True)
        y = torch.addcmul(self.beta, self.gamma, y * (g / (g.mean(dim=-1, keepdim=True) + 1e-6))) + y
        h = self.gn(y.permute(0, 3, 1, 2))
        return self.head(h)


def test_graph_cone_runs_channel_slices_stacks_global_norms_and_group_norm_exactly():
    from erf.engine import cone_plan_status

    torch.manual_seed(0)
    net = MoreOps().double().eval()
    ok, why = cone_plan_status(net, 24, dtype="float64", cone=True, check=True)
    assert ok and "checked against an uncropped pass" in why, why
    kw = dict(samples=2, batch_size=2, dtype="float64", unit=(2, 20), cone=True)
    cone = measure(net, 24, **kw)
    plain = measure(net, 24, **dict(kw, cone=False, crop=False))
    assert cone.settings["cone"] is True
    np.testing.assert_allclose(cone.map, plain.map, rtol=1e-12, atol=1e-13 * np.abs(plain.map).max())


class Decoder(nn.Module):
    """A U-Net-like decoder: strided convs down, F.interpolate back up (to a skip's size or by a factor),
    residual adds with the skips, an nn.Upsample."""

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode
        self.a = nn.Conv2d(2, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.c = nn.Conv2d(4, 4, 3, stride=3, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode=mode)
        self.head = nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, x):
        h1 = self.a(x)
        h2 = self.b(h1)
        h3 = self.c(torch.tanh(h2))
        linear = {} if self.mode.startswith("nearest") else {"align_corners": False}
        h2 = h2 + F.interpolate(h3, size=h2.shape[-2:], mode=self.mode, **linear)
        h1 = h1 + self.up(h2)
        return self.head(F.interpolate(h1, scale_factor=(2, 3), mode=self.mode, **linear))


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("unit", [None, (0, 0), (71, 107), (37, 3)])
def test_cone_runs_upsampling_exactly(mode, unit):
    from erf.engine import cone_plan_status

    torch.manual_seed(0)
    net = Decoder(mode).double().eval()
    ok, why = cone_plan_status(net, 36, dtype="float64", cone=True, crop=False, unit=unit)
    assert ok, why
    kw = dict(samples=2, batch_size=2, dtype="float64", unit=unit, cone=True, crop=False)
    cone = measure(net, 36, **kw)
    plain = measure(net, 36, **dict(kw, cone=False))
    assert cone.settings["cone"] is True and plain.settings["cone"] is False
    assert np.abs(plain.map).max() > 0
    np.testing.assert_allclose(cone.map, plain.map, rtol=1e-12, atol=1e-13 * np.abs(plain.map).max())


def test_cone_runs_an_upsampling_chain_exactly():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.ReLU(), nn.Upsample(scale_factor=3),
                        nn.Conv2d(3, 3, 3, padding=1), nn.Upsample(scale_factor=2, mode="bilinear"),
                        nn.Conv2d(3, 1, 3, padding=1)).double()
    for unit in [(0, 0), (17, 30), (47, 47)]:
        kw = dict(samples=2, batch_size=2, dtype="float64", unit=unit, cone=True)
        cone = measure(net, 16, **kw)
        plain = measure(net, 16, **dict(kw, cone=False, crop=False))
        assert cone.settings["cone"] is True and any(n.startswith("cone-executed") for n in cone.notes)
        np.testing.assert_allclose(cone.map, plain.map, rtol=1e-12, atol=1e-13 * np.abs(plain.map).max())


@pytest.mark.parametrize("up,reason", [
    (lambda h: F.interpolate(h, scale_factor=1.5), "only whole scale factors"),
    (lambda h: F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=True), "align_corners"),
    (lambda h: F.interpolate(h, scale_factor=2, mode="bicubic"), "mode 'bicubic'"),
])
def test_cone_names_the_upsamplings_it_cannot_run(up, reason):
    from erf.engine import cone_plan_status

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 1, 3, padding=1)

        def forward(self, x):
            return self.b(up(self.a(x)))

    ok, why = cone_plan_status(Net(), 16, cone=True, crop=False)
    assert not ok and reason in why, why
