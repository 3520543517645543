"""Small vision transformers for ERF experiments: a ViT and a Swin-like windowed-attention net.

Both are written from scratch in timm's layout and module names, small enough to train on a
CPU. ``vit``: patch embedding (a strided conv, ``patch_embed``), an optional class token
(``cls_token``, ``num_prefix_tokens``), learned position embeddings, ``blocks.i`` of global
multi-head self-attention (``F.scaled_dot_product_attention``) and an MLP, ``norm``, ``head``.
``swin``: channels-last ``(N, H, W, C)`` stages of ``blocks`` whose attention stays inside
``window_size`` x ``window_size`` token windows, shifted by ``shift_size`` in every second block
(with Swin's mask, so a shifted window never wraps around); between stages a 2x2 stride-2 patch
merging. The blocks expose ``window_size`` and ``shift_size``, so ``erf.receptive_field`` gives
their exact finite receptive field.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from erf.errors import ModelError
from erf.models.registry import register_model


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelError(f"{name} must be a positive integer; got {value!r}")
    return value


def _heads(dim: int, heads: int) -> int:
    _positive("num_heads", heads)
    if dim % heads:
        raise ModelError(f"embed_dim {dim} is not divisible by num_heads {heads}; pick a divisor of {dim}")
    return heads


class Attention(nn.Module):
    """Multi-head self-attention over the token dim (timm's layout: one ``qkv`` linear, ``proj``).

    ``x`` is ``(..., L, C)``; ``mask`` (bool, True = may attend) broadcasts to ``(..., heads, L, L)``.
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = _heads(dim, num_heads)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        *lead, n, c = x.shape
        qkv = self.qkv(x).reshape(*lead, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.movedim(-3, 0).transpose(-3, -2).unbind(0)  # each (..., heads, L, head_dim)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(-3, -2).reshape(*lead, n, c))


class Mlp(nn.Sequential):
    """``fc1`` -> GELU -> ``fc2`` on every token."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, num_heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, max(1, round(dim * mlp_ratio)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _init_weights(model: nn.Module) -> None:
    """timm's ViT init: truncated-normal (std 0.02) linears and tokens, zero biases, unit LayerNorms."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class VisionTransformer(nn.Module):
    """ViT (Dosovitskiy et al. 2021): ``forward_features`` gives ``(N, prefix + h*w, C)`` tokens."""

    def __init__(self, img_size: int = 32, patch_size: int = 4, embed_dim: int = 64, depth: int = 4,
                 num_heads: int = 4, mlp_ratio: float = 2.0, num_classes: int = 10, in_channels: int = 3,
                 class_token: bool = True):
        super().__init__()
        for name, v in (("img_size", img_size), ("patch_size", patch_size), ("embed_dim", embed_dim),
                        ("depth", depth), ("num_classes", num_classes), ("in_channels", in_channels)):
            _positive(name, v)
        if img_size < patch_size:
            raise ModelError(f"img_size {img_size} is smaller than patch_size {patch_size}")
        self.patch_size, self.grid = patch_size, img_size // patch_size
        self.patch_embed = nn.Conv2d(in_channels, embed_dim, patch_size, patch_size)
        self.num_prefix_tokens = int(bool(class_token))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.pos_embed = nn.Parameter(torch.randn(1, self.num_prefix_tokens + self.grid ** 2, embed_dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)))
        self.norm, self.head = nn.LayerNorm(embed_dim), nn.Linear(embed_dim, num_classes)
        _init_weights(self)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)

    def _pos(self, h: int, w: int) -> torch.Tensor:
        """Position embeddings for an ``h`` x ``w`` grid (bicubic resize of the learned ``grid`` x ``grid``)."""
        p = self.num_prefix_tokens
        if (h, w) == (self.grid, self.grid):
            return self.pos_embed
        g = self.pos_embed[:, p:].reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        g = F.interpolate(g, size=(h, w), mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)
        return torch.cat([self.pos_embed[:, :p], g], dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.norm(self.blocks(x + self._pos(h, w)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        return self.head(x[:, 0] if self.cls_token is not None else x.mean(dim=1))


class WindowBlock(nn.Module):
    """Swin block on ``(N, H, W, C)``: attention inside (shifted) windows, then an MLP.

    ``window_size`` and ``shift_size`` are what ``erf.receptive_field`` reads. A grid no larger
    than the window is one window without shift (as in Swin).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int, mlp_ratio: float):
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ModelError(f"shift_size must be in 0..window_size-1 ({window_size - 1}); got {shift_size}")
        self.window_size, self.shift_size = window_size, shift_size
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, num_heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, max(1, round(dim * mlp_ratio)))

    def _geometry(self, h: int, w: int) -> tuple[int, int, int, int]:
        ws = [self.window_size if n > self.window_size else n for n in (h, w)]
        sh = [self.shift_size if n > self.window_size else 0 for n in (h, w)]
        for n, s in zip((h, w), ws):
            if n % s:
                raise ModelError(f"a {h}x{w} token grid does not split into {self.window_size}x{self.window_size} "
                                 "windows; use an input size whose grid at every stage is a multiple of the window")
        return ws[0], ws[1], sh[0], sh[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        wh, ww, sy, sx = self._geometry(h, w)
        y = self.norm1(x)
        if sy or sx:
            y = torch.roll(y, (-sy, -sx), (1, 2))
        y = y.reshape(b, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b, -1, wh * ww, c)
        y = self.attn(y, _shift_mask(h, w, wh, ww, sy, sx, x.device) if sy or sx else None)
        y = y.reshape(b, h // wh, w // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        if sy or sx:
            y = torch.roll(y, (sy, sx), (1, 2))
        x = x + y
        return x + self.mlp(self.norm2(x))


def _shift_mask(h, w, wh, ww, sy, sx, device) -> torch.Tensor:
    """Swin's mask, as bool ``(windows, 1, wh*ww, wh*ww)``: True where two tokens of a rolled window
    were neighbours before the roll (so no window wraps around the border)."""
    region = torch.zeros(h, w, dtype=torch.long, device=device)
    ys = (slice(0, h - wh), slice(h - wh, h - sy), slice(h - sy, h)) if sy else (slice(0, h),)
    xs = (slice(0, w - ww), slice(w - ww, w - sx), slice(w - sx, w)) if sx else (slice(0, w),)
    k = 0
    for a in ys:
        for bb in xs:
            region[a, bb] = k
            k += 1
    r = region.reshape(h // wh, wh, w // ww, ww).permute(0, 2, 1, 3).reshape(-1, wh * ww)
    return (r[:, None, :, None] == r[:, None, None, :])


class PatchMerging(nn.Module):
    """Halve the grid and double the width: LayerNorm, then a 2x2 stride-2 conv on ``(N, H, W, C)``
    (a linear map of each 2x2 neighbourhood, as Swin's concat + linear)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm, self.reduction = nn.LayerNorm(dim), nn.Conv2d(dim, 2 * dim, 2, 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduction(self.norm(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class Stage(nn.Module):
    """Optional ``downsample`` (patch merging), then ``blocks`` alternating unshifted and shifted windows."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float, downsample: bool):
        super().__init__()
        self.downsample = PatchMerging(dim // 2) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*(WindowBlock(dim, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2,
                                                  mlp_ratio) for i in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class SwinTransformer(nn.Module):
    """Swin-like hierarchy (Liu et al. 2021): ``forward_features`` gives ``(N, H, W, C)`` tokens."""

    def __init__(self, patch_size: int = 2, embed_dim: int = 32, depths=(2, 2), num_heads=(2, 4),
                 window_size: int = 4, mlp_ratio: float = 2.0, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        for name, v in (("patch_size", patch_size), ("embed_dim", embed_dim), ("window_size", window_size),
                        ("num_classes", num_classes), ("in_channels", in_channels)):
            _positive(name, v)
        depths, num_heads = list(depths), list(num_heads)
        if not depths or len(depths) != len(num_heads):
            raise ModelError(f"depths and num_heads need one value per stage; got {depths} and {num_heads}")
        self.patch_size, self.window_size = patch_size, window_size
        self.patch_embed = nn.Conv2d(in_channels, embed_dim, patch_size, patch_size)
        self.patch_norm = nn.LayerNorm(embed_dim)
        dims = [embed_dim * 2 ** i for i in range(len(depths))]
        self.stages = nn.Sequential(*(Stage(d, _positive("depths", n), hd, window_size, mlp_ratio, i > 0)
                                      for i, (d, n, hd) in enumerate(zip(dims, depths, num_heads))))
        self.norm, self.head = nn.LayerNorm(dims[-1]), nn.Linear(dims[-1], num_classes)
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.stages(self.patch_norm(self.patch_embed(x).permute(0, 2, 3, 1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).mean(dim=(1, 2)))


@register_model(description="A small ViT (about 140k parameters by default); measure ``blocks.i`` or ``norm``: "
                            "(N, 1 + h*w, C) tokens.")
def vit(img_size: int = 32, patch_size: int = 4, embed_dim: int = 64, depth: int = 4, num_heads: int = 4,
        mlp_ratio: float = 2.0, num_classes: int = 10, in_channels: int = 3, class_token: bool = True) -> nn.Module:
    """A small ViT (about 140k parameters by default): ``patch_size`` patches of an ``img_size`` image,
    ``depth`` blocks of ``embed_dim`` channels and ``num_heads`` heads; a class token unless
    ``class_token=False`` (then the head averages the tokens). Other input sizes resize the
    position embeddings. Measure ``blocks.i`` or ``norm``: ``(N, 1 + h*w, C)`` tokens."""
    return VisionTransformer(img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio, num_classes,
                             in_channels, class_token)


@register_model()
def vit_tiny(img_size: int = 224, patch_size: int = 16, num_classes: int = 1000, in_channels: int = 3,
             class_token: bool = True) -> nn.Module:
    """ViT-Tiny/16 (DeiT-Ti: 192 channels, 12 blocks, 3 heads, MLP ratio 4; 5.7M parameters)."""
    return VisionTransformer(img_size, patch_size, 192, 12, 3, 4.0, num_classes, in_channels, class_token)


@register_model(description="A small Swin-like net (about 90k parameters by default); measure ``stages.i`` or "
                            "``norm``: (N, H, W, C) tokens; sizes must split into windows at every stage.")
def swin(patch_size: int = 2, embed_dim: int = 32, depths=(2, 2), num_heads=(2, 4), window_size: int = 4,
         mlp_ratio: float = 2.0, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """A small Swin-like net (about 90k parameters by default): ``patch_size`` patches, one stage
    per entry of ``depths`` (width doubling, grid halving between stages), windows of
    ``window_size`` tokens, shifted by half a window in every second block. Measure
    ``stages.i`` or ``norm``: channels-last ``(N, H, W, C)`` tokens. Input sizes must give
    grids that split into windows at every stage (e.g. 32 or 64 with the defaults)."""
    return SwinTransformer(patch_size, embed_dim, depths, num_heads, window_size, mlp_ratio, num_classes,
                           in_channels)


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["vit", "vit_tiny", "swin", "VisionTransformer", "SwinTransformer", "WindowBlock", "Attention",
           "parameter_count"]
