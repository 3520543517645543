"""Window and grid partitions, gates and off-centre paths traced exactly: each TRF box is checked
against the support of a float64 input gradient (formula-free)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from erf import receptive_field


def grad_support(model, size, layer_fn, unit):
    """Bounding box ((top, bottom), (left, right)) of the pixels whose gradient is non-zero."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, size, size, dtype=torch.float64, requires_grad=True)
    out = layer_fn(model, x)
    out[(0, slice(None)) + tuple(unit)].sum().backward()
    nz = x.grad.abs().sum((0, 1)) > 0
    rows, cols = torch.nonzero(nz.any(1)).flatten(), torch.nonzero(nz.any(0)).flatten()
    return (int(rows.min()), int(rows.max())), (int(cols.min()), int(cols.max()))


class Windows(nn.Module):
    """Attention inside w x w windows (partition by view/permute, sdpa, reverse); no window_size attribute."""

    def __init__(self, c, w, grid=False):
        super().__init__()
        self.w, self.grid = w, grid
        self.qkv = nn.Linear(c, 3 * c)

    def forward(self, x):
        b, c, h, wd = x.shape
        w = self.w
        t = x.permute(0, 2, 3, 1)
        if self.grid:  # MaxViT grid partition: positions w apart share a window
            t = t.view(b, w, h // w, w, wd // w, c).permute(0, 2, 4, 1, 3, 5).reshape(-1, w * w, c)
        else:
            t = t.view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, c)
        q, k, v = self.qkv(t).chunk(3, -1)
        t = F.scaled_dot_product_attention(q, k, v)
        if self.grid:
            t = t.view(b, h // w, wd // w, w, w, c).permute(0, 3, 1, 4, 2, 5).reshape(b, h, wd, c)
        else:
            t = t.view(b, h // w, wd // w, w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, wd, c)
        return x + t.permute(0, 3, 1, 2)


class ManualWindows(Windows):
    """The same windows with attention written as q @ k.T, softmax, @ v."""

    def forward(self, x):
        b, c, h, wd = x.shape
        w = self.w
        t = x.permute(0, 2, 3, 1).view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, c)
        q, k, v = self.qkv(t).chunk(3, -1)
        t = (q @ k.transpose(-2, -1)).softmax(-1) @ v
        t = t.view(b, h // w, wd // w, w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, wd, c)
        return x + t.permute(0, 3, 1, 2)


class PatchMerge(nn.Module):
    """Swin's patch merging: 2x2 space-to-depth by reshape, then a linear layer."""

    def __init__(self, c):
        super().__init__()
        self.lin = nn.Linear(4 * c, c)

    def forward(self, x):
        b, c, h, w = x.shape
        t = x.permute(0, 2, 3, 1).reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.lin(t).permute(0, 3, 1, 2)


def net(*blocks):
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), *blocks).double()


@pytest.mark.parametrize("name,model", [
    ("windows", net(Windows(4, 4))),
    ("manual windows", net(ManualWindows(4, 4))),
    ("windows after a conv", net(Windows(4, 4), nn.Conv2d(4, 4, 3, padding=1), Windows(4, 4))),
    ("patch merging then windows", net(PatchMerge(4), Windows(4, 2), nn.Conv2d(4, 4, 3, padding=1))),
])
@pytest.mark.parametrize("unit", [(0, 0), (3, 5), (7, 7), (5, 2)])
def test_window_partitions_are_exact(name, model, unit):
    size = 16
    r = receptive_field(model, size)
    row = r.target
    if row.output[0] <= max(unit):
        unit = tuple(u % row.output[0] for u in unit)
    want = grad_support(model, size, lambda m, x: m(x), unit)
    assert row.box(unit, clip=True) == want, name
    assert row.rf == row.rf_local  # windows are a spatial path: nothing global


def test_grid_partition_is_global_with_the_local_path_kept():
    model = net(Windows(4, 4, grid=True))
    r = receptive_field(model, 16)
    assert r.target.is_global and r.rf_local == (3, 3)
    for unit in [(0, 0), (6, 9)]:  # every pixel of the grid column reaches the unit through attention
        want = grad_support(model, 16, lambda m, x: m(x), unit)
        box = r.target.box(unit, clip=True)
        assert box[0][0] <= want[0][0] and box[0][1] >= want[0][1]


class SE(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.fc = nn.Conv2d(c, c, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))


def test_squeeze_excitation_gate_floor_and_local_path():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), SE(4), nn.Conv2d(4, 4, 3, padding=1),
                          nn.Conv2d(4, 4, 3, padding=1), SE(4), nn.Conv2d(4, 4, 3, padding=1)).double()
    r = receptive_field(model, 20)
    assert r.target.is_global
    assert r.rf_local == (9, 9)  # four 3x3 convs: the spatial path without the gates
    assert r.target.local_box((10, 10), clip=True) == ((6, 14), (6, 14))
    assert r.target.box((10, 10), clip=True) == grad_support(model, 20, lambda m, x: m(x), (10, 10))
    assert any("rf_local" in n for n in r.notes) and "rf_local" in r.table()
    # many gates in a row stay cheap: no period grows with the number of gated blocks
    deep = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), *[nn.Sequential(SE(4), nn.Conv2d(4, 4, 3, 2, 1))
                                                          for _ in range(6)])
    d = receptive_field(deep, 224)
    assert all(m.period == 1 for row in d.layers for m in row.axes)
    assert d.target.is_global and d.rf_local[0] < 224


def test_attention_rf_local_is_the_token_path():
    class ViTish(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Conv2d(3, 8, 4, 4)
            self.qkv = nn.Linear(8, 24)

        def forward(self, x):
            t = self.embed(x).flatten(2).transpose(1, 2)
            q, k, v = self.qkv(t).chunk(3, -1)
            return t + F.scaled_dot_product_attention(q, k, v)

    r = receptive_field(ViTish(), 32)
    assert r.target.is_global and r.rf_local == (4, 4)


def test_unfold_windows_are_exact():
    class Im2col(nn.Module):  # TNT-style pixel embedding: F.unfold then a linear per window
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3 * 9, 4)

        def forward(self, x):
            cols = F.unfold(x, 3, padding=1, stride=2)  # (B, 27, L)
            b, _, l = cols.shape
            h = x.shape[-1] // 2
            return self.lin(cols.transpose(1, 2)).transpose(1, 2).reshape(b, 4, h, h)

    model = nn.Sequential(Im2col(), nn.Conv2d(4, 4, 3, padding=1)).double()
    r = receptive_field(model, 16, in_channels=3)
    assert r.rf == (7, 7) and r.jump == (2, 2)
    for unit in [(0, 0), (3, 4), (7, 7)]:
        assert r.target.box(unit, clip=True) == grad_support(model, 16, lambda m, x: m(x), unit)
