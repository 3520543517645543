"""Vision transformers in the analytic module: token layouts, prefix tokens, global and windowed attention."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from erf.analytic import receptive_field
from erf.errors import UnsupportedOpError


class Attention(nn.Module):
    """timm-style: one qkv linear, reshape to heads, scaled_dot_product_attention."""

    def __init__(self, dim, heads=2):
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(dim, dim * 3), nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class ManualAttention(Attention):
    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, dim, attn=Attention):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), attn(dim)
        self.norm2, self.mlp = nn.LayerNorm(dim), nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(),
                                                                 nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    def __init__(self, patch=4, dim=8, grid=4, attn=Attention):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, dim))
        self.blocks = nn.Sequential(Block(dim, attn), Block(dim, attn))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, 5)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def test_vit_rf_is_the_patch_then_global_after_attention():
    r = receptive_field(TinyViT(), 16)
    assert r.layer("patch_embed").rf == (4, 4) and not r.layer("patch_embed").is_global
    before = r.layer("blocks.0.norm1")
    assert before.rf == (4, 4) and before.prefix_tokens == 1 and before.output == (4, 4)
    assert r.layer("blocks.0.attn").is_global
    assert r.target.is_global and not r.crop_safe
    summary = next(line for line in r.table().splitlines() if line.startswith("target "))
    assert "global: every unit sees the whole input" in summary and "shift-invariant" not in summary


def test_manual_attention_is_global_too():
    r = receptive_field(TinyViT(attn=ManualAttention), 16)
    assert not r.layer("blocks.0.norm1").is_global
    assert r.layer("blocks.0.attn").is_global


def test_token_index_of_the_centre_unit_skips_the_class_token():
    r = receptive_field(TinyViT(), 16)
    row = r.layer("blocks.1")
    assert row.shape == (1, 17, 8)
    assert row.index_of() == {1: 1 + 2 * 4 + 2}  # centre (2, 2) of the 4x4 grid, after 1 class token
    assert r.layer("patch_embed").index_of((1, 3)) == {2: 1, 3: 3}


class WindowBlock(nn.Module):
    """Swin-like: channels-last grid, attention inside (shifted) windows via a window partition."""

    def __init__(self, dim, window, shift):
        super().__init__()
        self.window_size, self.shift_size = (window, window), (shift, shift)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)

    def forward(self, x):  # (B, H, W, C)
        b, h, w, c = x.shape
        ws, s = self.window_size[0], self.shift_size[0]
        y = torch.roll(x, (-s, -s), (1, 2)) if s else x
        y = y.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)
        y = self.attn(y, y, y)[0]
        y = y.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        y = torch.roll(y, (s, s), (1, 2)) if s else y
        return x + y


class TinySwin(nn.Module):
    def __init__(self, shift=0):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, 8, 2, 2)
        self.block = WindowBlock(8, 4, shift)

    def forward(self, x):
        return self.block(self.patch_embed(x).permute(0, 2, 3, 1))


def test_windowed_attention_has_a_finite_rf():
    r = receptive_field(TinySwin(), 32)
    row = r.layer("block")
    assert row.output == (16, 16)
    assert row.rf == (8, 8) and not row.is_global  # one 4x4-token window of 2x2 patches
    assert row.box((5, 6)) == ((8, 15), (8, 15))
    assert row.index_of((5, 6)) == {1: 5, 2: 6}  # channels-last


def test_shifted_windows_are_position_dependent_at_the_border():
    row = receptive_field(TinySwin(shift=2), 32).layer("block")
    assert row.box((0, 0)) == ((-4, 3), (-4, 3))  # the window [-2, 1] of tokens, clipped to [0, 1]
    assert row.box((0, 0), clip=True) == ((0, 3), (0, 3))
    assert row.box((5, 5)) == ((4, 11), (4, 11))


class Permute(nn.Module):
    def forward(self, x):
        return x.permute(0, 2, 3, 1)


class PickToken(nn.Module):
    """Patch tokens (optionally after a class token), then one token picked by its index."""

    def __init__(self, index, class_token=False):
        super().__init__()
        self.embed, self.index = nn.Conv2d(1, 4, 4, 4), index
        self.cls = nn.Parameter(torch.zeros(1, 1, 4)) if class_token else None

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        if self.cls is not None:
            t = torch.cat([self.cls.expand(len(t), -1, -1), t], 1)
        return t[:, self.index]


@pytest.mark.parametrize("index,class_token", [(5, False), (0, False), (11, True), (23, False)])
def test_picking_one_token_gives_its_patch(index, class_token):
    """``x[:, i]`` on a (N, L, C) token dim (a ViT without class token pooling by token 0, say)."""
    model = PickToken(index, class_token)
    r = receptive_field(model, (16, 24))
    x = torch.randn(1, 1, 16, 24, requires_grad=True)
    model(x).sum().backward()
    support = x.grad[0, 0].abs().sum(1).nonzero(), x.grad[0, 0].abs().sum(0).nonzero()
    box = r.target.box((0, 0))
    assert [(int(s.min()), int(s.max())) for s in support] == [tuple(b) for b in box]
    assert r.target.rf == (4, 4)
