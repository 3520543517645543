"""The trace's runtime invariant (erf.analytic.invariant): every row's boxes stay inside what the ops
before it allow, on a spread of models, and a deliberately wrong rule stops the trace with the numbers."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import erf
import erf.analytic.rules
from erf.analytic.axis import AxisMap
from erf.analytic.invariant import bound_after, check_row, input_bound, layer_reads_beyond, reads_beyond
from erf.errors import TraceError, TraceInvariantError
from erf.models import create_model


class Gated(nn.Module):
    """A conv stem, a squeeze-excitation gate and a residual add."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(8, 8, 5, padding=2, groups=8)
        self.fc = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        h = self.stem(x)
        g = torch.sigmoid(self.fc(F.adaptive_avg_pool2d(h, 1)))
        return h + self.dw(h) * g


class Upsampling(nn.Module):
    """A U-Net-like decoder: strided convs down, transposed conv, nearest and bilinear upsampling up."""

    def __init__(self, align: bool):
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Conv2d(4, 4, 3, stride=2, padding=1))
        self.up = nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1)
        self.near = nn.Upsample(scale_factor=2, mode="nearest")
        self.align = align
        self.head = nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, x):
        h = self.up(self.down(x))
        h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=self.align) + self.near(h)
        return self.head(h)


class ViTLike(nn.Module):
    """Patch embedding, a class token, attention over the tokens, the grid back as a map."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.mlp = nn.Linear(dim, dim)

    def forward(self, x):
        h = self.patch(x)
        b, c, hh, ww = h.shape
        t = torch.cat([self.cls.expand(b, -1, -1), h.flatten(2).transpose(1, 2)], dim=1)
        t = t + self.attn(t, t, t, need_weights=False)[0]
        t = self.mlp(t)[:, 1:]
        return t.transpose(1, 2).reshape(b, c, hh, ww)


class ShiftedWindows(nn.Module):
    """A block the tracer handles as Swin's windowed attention (``window_size`` and ``shift_size``)."""

    def __init__(self, dim: int, window: int, shift: int):
        super().__init__()
        self.window_size, self.shift_size = window, shift
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):  # (B, H, W, C)
        return self.proj(x)


class Windowed(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 2, stride=2)
        self.blocks = nn.Sequential(ShiftedWindows(8, 4, 0), ShiftedWindows(8, 4, 2))
        self.head = nn.Conv2d(8, 2, 3, padding=1)

    def forward(self, x):
        h = self.blocks(self.patch(x).permute(0, 2, 3, 1))
        return self.head(h.permute(0, 3, 1, 2))


class Odd(nn.Module):
    """Padding, pixel shuffle, fold / unfold, ceil-mode and dilated pools, 'same' convs."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 4, padding="same")
        self.pool = nn.MaxPool2d(3, stride=2, padding=1, dilation=2, ceil_mode=True)
        self.avg = nn.AvgPool2d(3, stride=2, ceil_mode=True)
        self.b = nn.Conv2d(2, 4, 3, dilation=3, padding=3)

    def forward(self, x):
        h = self.pool(self.a(F.pad(x, (2, 1, 0, 3))))
        h = F.pixel_shuffle(h, 2)
        cols = F.unfold(h, 3, padding=1, stride=2)
        h = F.fold(cols, tuple(h.shape[-2:]), 3, padding=1, stride=2)
        return self.b(self.avg(h))


def _models():
    torch.manual_seed(0)
    return [
        ("plain", nn.Sequential(*[nn.Conv2d(3 if i == 0 else 4, 4, 3, padding=1) for i in range(6)]), 32),
        ("dilated", nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=2, dilation=2),
                                  nn.Conv2d(4, 4, 3, padding=4, dilation=4)), 40),
        ("strided", create_model("plain_net", depth=6, width=4), 64),
        ("unpadded", nn.Sequential(nn.Conv2d(3, 4, 7, stride=3), nn.MaxPool2d(3, 2), nn.Conv2d(4, 4, 3, stride=2)),
         96),
        ("residual", create_model("resnet18", width=0.125), 64),
        ("gated", Gated(), 48),
        ("upsampling", Upsampling(False), 32),
        ("upsampling-aligned", Upsampling(True), 32),
        ("vit-like", ViTLike(), 32),
        ("windowed", Windowed(), 32),
        ("odd ops", Odd(), 37),
    ]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("name,model,size", _models(), ids=[m[0] for m in _models()])
def test_invariant_holds_on_a_spread_of_models(name, model, size):
    rep = erf.analytic.receptive_field(model, size)  # the invariant runs on every row while tracing
    assert len(rep.layers) > 3
    rf, padding = rep.target.rf, rep.target.padding
    assert all(r >= 1 for r in rf)
    # what a test can bound on its own: no row starts further left than the whole net could pad
    for row in rep.layers:
        assert all(p is None or p <= 4 * size for p in row.padding), (row.name, row.padding)


def test_invariant_allows_exactly_the_classic_arithmetic_on_a_chain():
    # 3 convs 3x3 padding 1, stride 2: the classic rf 15, padding 7 at the third; the bound is that wide or wider
    layers = [(3, 2, 1)] * 3
    rep = erf.analytic.receptive_field(layers, 64)
    assert rep.rf == (15, 15) and rep.padding == (7, 7)
    bound = input_bound((64, 64))
    maps, sizes = (AxisMap.identity(),) * 2, (64, 64)
    for row in rep.layers[1:]:
        bound = bound_after([(maps, sizes, bound)], layer_reads_beyond("conv", 3, 2, 1, (1, 1)))
        check_row(row.name, row.op, row.axes, row.output, bound)
        maps, sizes = row.axes, row.output
    assert bound[0][0] <= -7 and bound[0][1] >= 63


def test_a_wrong_rule_stops_the_trace_with_the_node_op_and_numbers(monkeypatch):
    """ResNeSt's old symptom: a union that gave boxes of 5,281,715 px starting at -364,011 px."""
    right = erf.analytic.rules.RULES["conv2d"]

    def wrong(call):
        info = right(call)
        return info.with_(axes=tuple(m.with_floor((-364011, 5281715)) for m in info.axes))

    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    assert erf.analytic.receptive_field(net, 32).rf == (5, 5)
    monkeypatch.setitem(erf.analytic.rules.RULES, "conv2d", wrong)
    with pytest.raises(TraceInvariantError, match=r"row '0:conv2d' \(op 'conv2d' in '0'\).*\[-364011, 5281715\] "
                                                  r"\(5645727 px\) on axis 0.*\[-1, 32\] \(34 px") as err:
        erf.analytic.receptive_field(net, 32)
    assert isinstance(err.value, TraceError)  # the engine measures without a TRF rather than with a wrong one


def test_a_rule_that_starts_a_box_too_early_is_caught(monkeypatch):
    def shifted(call):  # a pointwise op whose boxes move 3 px left: as wide as allowed, but too far out
        info = erf.analytic.rules.pointwise(call)
        return info.with_(axes=tuple(AxisMap.build(m.period, m.shift, [lo - 3 for lo in m.lo], [hi - 3 for hi in m.hi])
                                     for m in info.axes))

    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    monkeypatch.setitem(erf.analytic.rules.RULES, "relu", shifted)
    with pytest.raises(TraceInvariantError, match=r"op 'relu'.*\[-4, 29\].*\[-1, 32\]"):
        erf.analytic.receptive_field(net, 32)


def test_check_row_on_a_hand_made_row():
    bound = input_bound((10,))
    conv = AxisMap.build(1, 1, (-1,), (1,))  # a 3-wide window, padding 1
    after = bound_after([((AxisMap.identity(),), (10,), bound)], reads_beyond("pad", (None, (1, 1)), {}, None))
    assert after == ((-1, 10),)
    check_row("conv", "conv2d", (conv,), (10,), after)  # fits: nothing raised
    with pytest.raises(TraceInvariantError, match=r"row 'conv' \(op 'conv2d'\).*\[-1, 10\] \(12 px\).*\[0, 9\]"):
        check_row("conv", "conv2d", (conv,), (10,), bound)
    wide = AxisMap.build(1, 1, (-1,), (1,), floor=(0, 40))
    with pytest.raises(TraceInvariantError, match=r"\[-1, 40\] \(42 px\)"):
        check_row("gate", "mul", (wide,), (10,), after)


TIMM = [(name, size) for name in ("resnest14d", "seresnet18", "mobilenetv3_small_100", "edgenext_xx_small")
        for size in (64, 224)]


@pytest.mark.interop("timm")
@pytest.mark.parametrize("name,size", TIMM)
def test_invariant_holds_on_real_timm_models(name, size):
    import timm  # (only where it imports)

    with torch.device("meta"):  # shapes only: the trace runs on the meta device
        model = timm.create_model(name, pretrained=False)
    rep = erf.analytic.receptive_field(model, size)
    stage = [r for r in rep.layers if r.name.startswith("stages.") or r.name.startswith("layer")
             or r.name.startswith("blocks.")]
    assert stage, [r.name for r in rep.layers][:20]
    # the symptom: stage TRFs of 5,281,715 px, boxes from -364,011 px (the invariant bounds every row)
    for row in stage:
        assert all(1 <= a <= b < 100_000 for a, b in zip(row.rf_local, row.rf)), (row.name, row.rf_local, row.rf)
        assert all(p is None or -100_000 < p < 100_000 for p in row.padding), (row.name, row.padding)
        box = row.box(clip=True)
        assert all(b is not None and 0 <= b[0] <= b[1] < size for b in box), (row.name, box)
