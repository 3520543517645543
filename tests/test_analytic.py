"""The analytic module against published numbers and against a formula-free ground truth.

The published numbers and their sources are in tests/REFERENCE.md.
"""

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from erf.analytic import Layer, linear_erf, receptive_field
from erf.errors import AlignmentError, ErfError, ModelError, UnsupportedOpError


# ---------------------------------------------------------------- small cases (tests/REFERENCE.md)
def test_two_strided_convs_on_5x5():
    m = nn.Sequential(nn.Conv2d(1, 1, 3, 2, 1), nn.Conv2d(1, 1, 3, 2, 1))
    r = receptive_field(m, 5)
    rows = [r.layer("0"), r.layer("1")]
    assert [row.output for row in rows] == [(3, 3), (2, 2)]
    assert [row.jump for row in rows] == [(2, 2), (4, 4)]
    assert [row.rf for row in rows] == [(3, 3), (7, 7)]
    assert [row.center for row in rows] == [(0, 0), (0, 0)]  # start 0.5 in the blogs' convention


@pytest.mark.parametrize("dilation,rf", [(1, 3), (2, 5), (4, 9), (8, 17)])
def test_dilated_kernel(dilation, rf):
    r = receptive_field(nn.Conv2d(1, 1, 3, dilation=dilation), 40)
    assert r.rf == (rf, rf)


@pytest.mark.parametrize("depth", [1, 2, 5, 12])
def test_stacked_3x3(depth):
    m = nn.Sequential(*[nn.Conv2d(1, 1, 3, padding=1) for _ in range(depth)])
    assert receptive_field(m, 32).rf == (1 + 2 * depth,) * 2


def test_alexnet_layer_list_matches_the_classic_blog():
    layers = [Layer(11, 4, 0, name="conv1"), Layer(3, 2, name="pool1"), Layer(5, 1, 2, name="conv2"),
              Layer(3, 2, name="pool2"), Layer(3, 1, 1, name="conv3"), Layer(3, 1, 1, name="conv4"),
              Layer(3, 1, 1, name="conv5"), Layer(3, 2, name="pool5"), Layer(6, 1, 0, name="fc6")]
    r = receptive_field(layers, 227)
    rows = r.layers[1:]
    assert [x.rf[0] for x in rows] == [11, 19, 51, 67, 99, 131, 163, 195, 355]
    assert [x.jump[0] for x in rows] == [4, 8, 8, 16, 16, 16, 16, 32, 32]
    assert [x.center[0] + 0.5 for x in rows] == [5.5, 9.5, 9.5, 17.5, 17.5, 17.5, 17.5, 33.5, 113.5]


def test_layer_list_forms_and_errors():
    a = receptive_field([(3, 2, 1), {"kernel": 3, "stride": 2, "padding": 1}], (5, 5))
    assert a.rf == (7, 7)
    with pytest.raises(ErfError, match="too small"):
        receptive_field([(11, 4, 0)], 5)
    with pytest.raises(ErfError, match="kernel"):
        receptive_field([(0, 1, 0)], 5)


# ---------------------------------------------------------------- Araujo et al.'s graphs (tests/REFERENCE.md,
# google-research/receptive_field)
class TwoBranch(nn.Module):
    def __init__(self, pool=False):
        super().__init__()
        self.l1 = nn.Conv2d(1, 1, 1, stride=4)
        self.l2 = nn.MaxPool2d(3, 2) if pool else nn.Conv2d(1, 1, 3, stride=2)
        self.l3 = nn.MaxPool2d(1, 2) if pool else nn.Conv2d(1, 1, 1, stride=2)

    def forward(self, x):
        return F.relu(self.l1(x) + self.l3(self.l2(F.pad(x, (1, 0, 1, 0)))))


@pytest.mark.parametrize("pool", [False, True])
def test_araujo_aligned_two_branches(pool):
    r = receptive_field(TwoBranch(pool), 8)
    assert (r.rf, r.jump, r.padding) == ((3, 3), (4, 4), (1, 1))


def test_araujo_unaligned_is_refused_naming_both_paths():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1 = nn.Conv2d(1, 1, 5, stride=2)
            self.l2 = nn.Conv2d(1, 1, 3)
            self.l3 = nn.Conv2d(1, 1, 3)

        def forward(self, x):
            return self.l1(F.pad(x, (2, 1, 2, 1))) + self.l3(self.l2(x))

    with pytest.raises(AlignmentError, match=r"'l1' and 'l3'.*jump 2 vs 1"):
        receptive_field(Bad(), 8)
    r = receptive_field(Bad(), 8, allow_unaligned=True)
    assert r.rf[0] >= 5


def test_unaligned_centre_is_united_with_offset_and_refused_when_strict():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 1, 3, padding=1)
            self.b = nn.Conv2d(1, 1, 3, padding=0)

        def forward(self, x):
            return self.a(x)[..., :6, :6] + self.b(x)

    r = receptive_field(Bad(), 8)
    # path a: unit i sees [i-1, i+1] (centre i); path b: [i, i+2] (centre i+1): union [i-1, i+2]
    assert r.target.box((2, 3)) == ((1, 4), (2, 5))
    assert r.target.offset == (1, 1) and r.rf == (4, 4)
    assert any("off-centre" in n for n in r.notes) and "offset" in r.table()
    assert r.to_dict()["offset"] == [1, 1]
    with pytest.raises(AlignmentError, match="centre"):
        receptive_field(Bad(), 8, allow_unaligned=False)


def test_araujo_non_square():
    m = nn.Sequential(nn.Conv2d(1, 1, (3, 5), stride=2), nn.Conv2d(1, 1, (3, 1), stride=2))
    r = receptive_field(m, 32)
    assert r.rf == (7, 5) and r.jump == (4, 4) and r.padding == (0, 0)


def test_araujo_two_stacked_adds():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1, self.l2, self.l3 = nn.Conv2d(1, 1, 1, 4), nn.Conv2d(1, 1, 3, 2), nn.Conv2d(1, 1, 1, 2)
            self.l5, self.l6 = nn.Conv2d(1, 1, 1, 2), nn.Conv2d(1, 1, 3, 2)

        def forward(self, x):
            l4 = F.relu(self.l1(x) + self.l3(self.l2(F.pad(x, (1, 0, 1, 0)))))
            return F.relu(self.l5(l4) + self.l6(F.pad(l4, (1, 0, 1, 0))))

    r = receptive_field(Net(), 16)
    assert (r.rf, r.jump, r.padding) == ((11, 11), (8, 8), (5, 5))


# ---------------------------------------------------------------- ops
def test_functional_ops_control_flow_and_outside_modules_are_seen():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            for _ in range(2):  # python control flow
                x = F.max_pool2d(F.relu(self.c(x) if x.shape[1] == 3 else x), 2)
            y = torch.cat([x, x * 2], dim=1)
            return F.interpolate(y, scale_factor=2, mode="nearest")

    r = receptive_field(Net(), 32)
    assert r.layer("c").rf == (3, 3)
    ops = [row.op for row in r.layers]
    assert {"max_pool2d", "cat", "interpolate", "relu"} <= set(ops)
    # conv 3 -> pool(2) 4 -> pool(2) 6, jump 4; the nearest upsample halves the jump
    assert r.rf == (6, 6) and r.jump == (2, 2) and r.shift_invariant is False


def test_same_padding_and_negative_padding():
    m = nn.Conv2d(1, 1, 4, padding="same")  # total 3: 1 left, 2 right in PyTorch
    r = receptive_field(m, 10)
    assert r.output == (10, 10) and r.padding == (1, 1)

    class Crop(nn.Module):
        def forward(self, x):
            return F.pad(x, (-2, -1, -2, -1))

    r = receptive_field(Crop(), 10)
    assert r.output == (7, 7) and r.padding == (-2, -2) and r.rf == (1, 1)


def test_depthwise_grouped_dilated_asymmetric():
    m = nn.Sequential(nn.Conv2d(4, 4, (1, 7), groups=4, dilation=(1, 2), padding=(0, 6)), nn.Conv2d(4, 8, (5, 1)))
    r = receptive_field(m, 40)
    assert r.rf == (5, 13)


def test_conv1d_and_conv3d():
    assert receptive_field(nn.Sequential(nn.Conv1d(1, 1, 5), nn.Conv1d(1, 1, 3, dilation=3)), 50).rf == (11,)
    assert receptive_field(nn.Conv3d(1, 1, (3, 5, 7)), (10, 10, 10)).rf == (3, 5, 7)


def test_ceil_mode_and_adaptive_and_global_pooling():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2, ceil_mode=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Linear(4, 2))
    r = receptive_field(m, 11)
    assert r.layer("1").output == (5, 5)
    assert r.layer("2").is_global and r.target.is_global
    assert r.crop_safe is False
    assert not r.layer("1").is_global


def test_global_pooling_of_a_conv_covers_every_unit():
    m = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.AdaptiveAvgPool2d(1))
    r = receptive_field(m, 9)
    assert r.target.is_global and r.output == (1, 1)


def test_transposed_conv_is_position_dependent():
    m = nn.Sequential(nn.Conv2d(1, 1, 3, 2, 1), nn.ConvTranspose2d(1, 1, 3, 2, 1, output_padding=1))
    r = receptive_field(m, 16)
    assert r.output == (16, 16)
    assert r.shift_invariant is False
    assert r.rf_min[0] < r.rf[0]
    assert r.jump == (1, 1)


def test_pixel_shuffle_round_trip():
    m = nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(4, 4, 1), nn.PixelShuffle(2))
    r = receptive_field(m, 8, in_channels=1)
    assert r.output == (8, 8) and r.rf == (2, 2) and r.shift_invariant is False


def test_unknown_op_is_named_and_can_be_opted_in():
    class Odd(nn.Module):
        def forward(self, x):
            return torch.fft.fft2(x).real

    with pytest.raises(UnsupportedOpError, match="fft_fft2.*treat_as"):
        receptive_field(Odd(), 8, in_channels=1)
    r = receptive_field(Odd(), 8, in_channels=1, treat_as={"fft_fft2": "global"})
    assert r.target.is_global


def test_module_level_treat_as():
    class Mixer(nn.Module):
        def forward(self, x):
            return torch.fft.ifft2(torch.fft.fft2(x)).real

    m = nn.Sequential(nn.Conv2d(1, 1, 3), Mixer())
    r = receptive_field(m, 9, treat_as={"Mixer": "pointwise"})
    assert r.rf == (3, 3)


def test_attention_makes_the_rf_global():
    class TinyViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = nn.Conv2d(3, 8, 4, 4)
            self.norm = nn.LayerNorm(8)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            t = self.norm(self.patch(x).flatten(2).transpose(1, 2))
            return self.attn(t, t, t)[0]

    r = receptive_field(TinyViT(), 16)
    assert r.layer("patch").rf == (4, 4)
    assert r.layer("norm").rf == (4, 4) and not r.layer("norm").is_global
    assert r.layer("attn").is_global


def test_batchnorm_in_train_mode_is_traced_in_eval_and_mode_restored():
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    m.train()
    r = receptive_field(m, 8)
    assert r.rf == (3, 3) and m.training and m[1].training


def test_data_dependent_control_flow_falls_back_to_a_real_pass():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 5, padding=1)

        def forward(self, x):
            return self.a(x) if float(x.mean()) > 1e9 else self.b(x)

    assert receptive_field(Branchy(), 12).rf == (5, 5)


def test_units_boxes_and_errors():
    m = nn.Sequential(nn.Conv2d(1, 1, 3, 2, 1), nn.Conv2d(1, 1, 3, 2, 1))
    r = receptive_field(m, 16)
    assert r.box((0, 0)) == ((-3, 3), (-3, 3))
    assert r.box((0, 0), clip=True) == ((0, 3), (0, 3))
    assert r.box((1, 2)) == ((1, 7), (5, 11))
    with pytest.raises(ModelError, match="outside"):
        r.box((4, 0))
    with pytest.raises(ModelError, match="no layer named 'conv9'"):
        r.layer("conv9")


def test_nested_module_names_and_aliases():
    block = nn.Sequential(nn.Conv2d(1, 1, 3), nn.ReLU())
    m = nn.Sequential(block, nn.Conv2d(1, 1, 3))
    r = receptive_field(m, 12)
    assert r.layer("0").name == "0.1" and r.layer("0").rf == (3, 3)


def test_linear_erf_uniform_sigma_and_sum():
    """sigma = sqrt(2n/3) for n uniform 3x3 layers (Luo et al. 2016; tests/REFERENCE.md, exact ERF values)."""
    for n in (1, 3, 6):
        e = linear_erf([Layer(3)] * n)
        assert e.map.shape == (1 + 2 * n,) * 2
        assert abs(e.map.sum() - 1) < 1e-12
        assert e.sigma == pytest.approx((((2 * n) / 3) ** 0.5,) * 2)
    e = linear_erf([Layer(3, 2), Layer(3)])
    assert e.sigma[0] == pytest.approx((2 / 3 + 4 * 2 / 3) ** 0.5)


# ---------------------------------------------------------------- ground truth without a formula
def _positive(m: nn.Module):
    for p in m.parameters():
        with torch.no_grad():
            p.uniform_(0.2, 1.0)
    for mod in m.modules():
        if getattr(mod, "bias", None) is not None:
            with torch.no_grad():
                mod.bias.zero_()
    return m.double()


class RandomNet(nn.Module):
    """A random chain of stages; a stage is one op or a two-branch add/concat."""

    def __init__(self, rng: random.Random):
        super().__init__()
        self.stages = nn.ModuleList()
        self.kinds = []
        for _ in range(rng.randint(2, 5)):
            kind = rng.choice(["conv", "conv", "pool", "branch", "cat", "up", "convT", "unet", "adaptive", "resize",
                               "slice", "shuffle"])
            self.kinds.append(kind)
            if kind == "conv":
                k = (rng.randint(1, 4), rng.randint(1, 4))
                d = (rng.randint(1, 2), rng.randint(1, 2))
                s = (rng.randint(1, 2), rng.randint(1, 2))
                p = (rng.randint(0, k[0]), rng.randint(0, k[1]))
                self.stages.append(nn.Conv2d(2, 2, k, s, p, d))
            elif kind == "pool":
                k = rng.randint(2, 3)
                self.stages.append(nn.AvgPool2d(k, rng.randint(1, 2), rng.randint(0, k // 2)))
            elif kind in ("branch", "cat"):
                k1, k2 = rng.choice([1, 3, 5]), rng.choice([1, 3, 5])
                d2 = rng.randint(1, 2)
                self.stages.append(nn.ModuleList([nn.Conv2d(2, 2, k1, padding=k1 // 2),
                                                  nn.Conv2d(2, 2, k2, padding=d2 * (k2 // 2), dilation=d2),
                                                  nn.Conv2d(4, 2, 1)]))
            elif kind == "up":
                self.stages.append(nn.Upsample(scale_factor=2, mode=rng.choice(["nearest", "bilinear"])))
            elif kind == "convT":
                k, s = rng.randint(2, 4), rng.randint(1, 2)
                self.stages.append(nn.ConvTranspose2d(2, 2, k, s, rng.randint(0, k - 1)))
            elif kind == "adaptive":
                self.stages.append(nn.AdaptiveAvgPool2d((rng.randint(5, 12), rng.randint(5, 12))))
            elif kind == "resize":
                size = (rng.randint(8, 40), rng.randint(8, 40))
                self.stages.append(nn.Upsample(size=size, mode="bilinear", align_corners=rng.random() < 0.5))
            elif kind == "slice":
                self.stages.append(nn.Identity())
            elif kind == "shuffle":
                self.stages.append(nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(8, 8, 3, padding=1),
                                                 nn.PixelShuffle(2)))
            else:  # a one-level U-Net: down, up, concat with the skip
                self.stages.append(nn.ModuleList([nn.Conv2d(2, 2, 3, 2, 1), nn.ConvTranspose2d(2, 2, 2, 2),
                                                  nn.Conv2d(4, 2, 3, padding=1)]))

    def forward(self, x):
        for kind, st in zip(self.kinds, self.stages):
            if kind == "branch":
                x = F.relu(st[0](x) + st[1](x))
            elif kind == "cat":
                x = st[2](torch.cat([st[0](x), st[1](x)], 1))
            elif kind == "slice":
                x = x[:, :, 1:, ::2]
            elif kind == "shuffle":
                x = st(F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2)))
            elif kind == "unet":
                if x.shape[-1] % 2 or x.shape[-2] % 2:
                    x = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))
                x = st[2](torch.cat([x, st[1](st[0](x))], 1))
            else:
                x = st(x)
        return x


def _support_box(grad):
    nz = grad.nonzero()
    if len(nz) == 0:
        return None
    return tuple((int(nz[:, a].min()), int(nz[:, a].max())) for a in range(2))


def _draw(seed):
    """A random network and input size whose output is not empty (redraws until so)."""
    for attempt in range(100):
        rng = random.Random(seed * 1000 + attempt)
        torch.manual_seed(seed)
        net = RandomNet(rng)
        size = (rng.randint(18, 30), rng.randint(18, 30))
        try:
            with torch.no_grad():
                out = net(torch.ones(1, 2, *size))
        except RuntimeError:
            continue
        if min(out.shape[-2:]) >= 1:
            return rng, net, size, out
    raise AssertionError("no valid random network drawn")


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(40))
def test_random_networks_against_gradient_support(seed):
    rng, net, size, out = _draw(seed)
    report = receptive_field(net, size, in_channels=2)
    assert report.output == tuple(out.shape[-2:])
    _positive(net)
    x = (torch.rand(1, 2, *size, dtype=torch.float64) + 0.5).requires_grad_()
    y = net(x)
    units = [(i, j) for i in range(y.shape[2]) for j in range(y.shape[3])]
    for unit in rng.sample(units, min(12, len(units))):
        (g,) = torch.autograd.grad(y[0, :, unit[0], unit[1]].sum(), x, retain_graph=True)
        support = _support_box(g[0].sum(0))
        box = report.box(unit)
        clipped = report.box(unit, clip=True)
        inside = all(b is not None and b[0] >= 0 and b[1] < n for b, n in zip(box, size))
        # After a crop inside the network (slicing), positions beyond the crop are padding to
        # later layers but their extended boxes land on the cut-away pixels: there the box is
        # an upper bound, not exact (documented in the README).
        if inside and "slice" not in net.kinds:
            assert support == tuple(box), (unit, report.layers[-1].name)
        elif support is not None:
            for (s0, s1), c in zip(support, clipped):
                assert c is not None and c[0] <= s0 and s1 <= c[1], (unit, support, clipped)
