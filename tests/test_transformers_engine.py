"""Vision transformers in the gradient engine: token outputs, prefix tokens, the centre token, windows."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import erf
from erf.analytic import receptive_field
from erf.cli import main
from erf.engine.target import TargetRunner, resolve_target
from erf.engine.tokens import PrefixTokensError, token_grid


class Block(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm1, self.qkv, self.proj = nn.LayerNorm(dim), nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.norm2, self.mlp = nn.LayerNorm(dim), nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, x):
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v))
        return x + self.mlp(self.norm2(x))


class HandViT(nn.Module):
    """Patch-embed conv, ``prefix`` constant tokens in front, two blocks, token 0 (or the mean) out.

    ``attr``: how the model declares its prefix tokens (``num_prefix_tokens``, ``cls_token`` or
    nothing); ``untraceable``: the head sorts channels, an op erf has no rule for.
    """

    def __init__(self, prefix=1, attr="num_prefix_tokens", untraceable=False, dim=8, patch=4):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.tokens = nn.Parameter(torch.randn(1, prefix, dim)) if prefix else None
        if attr == "num_prefix_tokens":
            self.num_prefix_tokens = prefix
        elif attr == "cls_token" and prefix:
            self.cls_token = self.tokens
        self.blocks = nn.Sequential(Block(dim), Block(dim))
        self.untraceable = untraceable

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        if self.tokens is not None:
            x = torch.cat([self.tokens.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.blocks(x)
        if self.untraceable:
            x = x.sort(dim=-1).values
        return x[:, 0] if self.tokens is not None else x.mean(dim=1)


def _inputs(n=3, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, size, size, generator=g, dtype=torch.float64) for _ in range(n)]


def _direct(model, layer, xs, token):
    """Mean over ``xs`` of |d sum_c layer[0, token, c] / d x| summed over input channels, by plain autograd."""
    model = model.double().eval()
    mod = dict(model.named_modules())[layer]
    maps = []
    for x in xs:
        x = x[None].clone().requires_grad_(True)
        out = {}
        h = mod.register_forward_hook(lambda m, i, o: out.setdefault("t", o))
        model(x)
        h.remove()
        (g,) = torch.autograd.grad(out["t"][0, token].sum(), x)
        maps.append(g.abs().sum(1)[0])
    return torch.stack(maps).mean(0).numpy()


def _measure(model, layer, xs, **kw):
    return erf.measure(model, 16, layer=layer, inputs=xs, samples=len(xs), dtype="float64", **kw)


@pytest.mark.slow
@pytest.mark.parametrize("prefix", [0, 1, 2])
def test_token_map_equals_direct_autograd_and_skips_traced_prefix_tokens(prefix):
    torch.manual_seed(prefix)
    model, xs = HandViT(prefix, attr=None), _inputs()
    res = _measure(model, "blocks.1", xs)
    assert res.map.shape == (16, 16) and res.unit == (2, 2)  # the 4x4 token grid, centre n // 2
    np.testing.assert_allclose(res.map, _direct(model, "blocks.1", xs, prefix + 2 * 4 + 2), rtol=1e-10, atol=1e-14)
    assert any(f"{prefix} prefix token(s) skipped (found in the traced graph)" in n for n in res.notes)
    res = _measure(model, "blocks.1", xs, unit=(0, 3))
    np.testing.assert_allclose(res.map, _direct(model, "blocks.1", xs, prefix + 3), rtol=1e-10, atol=1e-14)


def test_centre_token_on_even_and_odd_grids_is_n_div_2_and_sees_its_patch():
    torch.manual_seed(0)
    for size, grid in ((16, 4), (20, 5)):
        model = HandViT(1, attr=None)
        res = erf.measure(model, size, layer="blocks.0.qkv", samples=2)
        assert res.unit == (grid // 2, grid // 2)
        ys, xs = np.nonzero(res.map)
        lo = 4 * (grid // 2)
        assert (ys.min(), ys.max(), xs.min(), xs.max()) == (lo, lo + 3, lo, lo + 3)  # exactly the centre patch
        assert res.trf_box == ((lo, lo + 3), (lo, lo + 3))


def test_report_turns_global_at_the_first_attention_and_the_gradient_agrees():
    torch.manual_seed(0)
    model = HandViT(1, attr=None)
    rep = receptive_field(model, 16)
    first = next(r for r in rep.layers if r.is_global)
    assert first.op == "scaled_dot_product_attention" and first.name.startswith("blocks.0")
    before = rep.layers[rep.layers.index(first) - 1]
    assert before.rf == (4, 4) and not before.to_dict()["global"] and first.to_dict()["global"]
    local = erf.measure(model, 16, layer="blocks.0.qkv", samples=2)
    glob = erf.measure(model, 16, layer="blocks.0", samples=2)
    assert np.count_nonzero(local.map) == 16 and glob.trf_strict == (16, 16) and glob.trf == (4, 4)  # rf_local: a patch
    assert np.all(glob.map > 0)  # after attention every pixel moves the centre token


@pytest.mark.parametrize("attr, prefix", [("num_prefix_tokens", 2), ("cls_token", 1)])
def test_untraceable_model_takes_prefix_tokens_from_the_model(attr, prefix):
    torch.manual_seed(1)
    model, xs = HandViT(prefix, attr=attr, untraceable=True), _inputs()
    with pytest.raises(erf.TraceError):
        receptive_field(model, 16)
    res = _measure(model, "blocks.1", xs)
    assert res.unit == (2, 2) and res.trf is None
    np.testing.assert_allclose(res.map, _direct(model, "blocks.1", xs, prefix + 2 * 4 + 2), rtol=1e-10, atol=1e-14)
    assert any(f"prefix tokens {prefix} (from the model" in n for n in res.notes)


def _target(model, layer, prefix_tokens=None, size=16):
    zeros = torch.zeros(1, 3, size, size)
    return resolve_target(model, (size, size), layer, 3, prefix_tokens=prefix_tokens,
                          probe=lambda t: tuple(TargetRunner(model, t)(zeros).shape))


def test_user_prefix_tokens_where_the_model_says_nothing():
    model = HandViT(1, attr=None, untraceable=True)
    with pytest.raises(PrefixTokensError, match=r"17 tokens .* give prefix_tokens"):
        _target(model, "blocks.1")  # 17 tokens, no declared prefix: not a grid
    t = _target(model, "blocks.1", prefix_tokens=1)
    assert t.output == (4, 4) and t.index_of((2, 2)) == {1: 1 + 10}
    with pytest.raises(PrefixTokensError, match=r"17 - 3 prefix .*prefix_tokens=3 does not fit"):
        _target(model, "blocks.1", prefix_tokens=3)


def test_user_prefix_tokens_are_checked_against_the_trace():
    model = HandViT(2, attr=None)
    assert _target(model, "blocks.1", prefix_tokens=2).index_of((0, 0)) == {1: 2}
    with pytest.raises(PrefixTokensError, match=r"prefix_tokens=1 does not fit layer 'blocks.1'.*shows 2"):
        _target(model, "blocks.1", prefix_tokens=1)
    with pytest.raises(PrefixTokensError, match="has no token dim"):
        _target(model, "patch_embed", prefix_tokens=1)
    for bad in (-1, 1.5, True):
        with pytest.raises(PrefixTokensError, match="token count >= 0"):
            _target(model, "blocks.1", prefix_tokens=bad)


@pytest.mark.slow
def test_measure_takes_prefix_tokens():
    torch.manual_seed(1)
    model, xs = HandViT(1, attr=None, untraceable=True), _inputs()
    res = _measure(model, "blocks.1", xs, prefix_tokens=1)
    np.testing.assert_allclose(res.map, _direct(model, "blocks.1", xs, 1 + 10), rtol=1e-10, atol=1e-14)
    with pytest.raises(PrefixTokensError):
        _measure(HandViT(1, attr=None), "blocks.1", xs, prefix_tokens=0)


class Embed(nn.Module):
    """timm's PatchEmbed: a conv whose output is flattened to (N, L, C) inside the module."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, 8, 4, 4)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class Layouts(nn.Module):
    """Untraceable (a sort at the end): tokens before the class token is joined, then a channels-last grid."""

    num_prefix_tokens = 1

    def __init__(self):
        super().__init__()
        self.embed, self.grid = Embed(), nn.Identity()

    def forward(self, x):
        g = self.grid(self.embed(x).reshape(x.shape[0], 4, 4, 8))
        return g.sort(dim=-1).values.mean()


def test_untraced_layouts_are_read_from_the_output_shape():
    torch.manual_seed(0)
    model = Layouts()
    t = _target(model, "embed")  # 16 tokens: the declared class token is not there yet
    assert t.output == (4, 4) and t.index_of((2, 2)) == {1: 10}
    assert any("not there yet" in n for n in t.notes)
    t = _target(model, "grid")
    assert t.spatial_dims == (1, 2) and t.output == (4, 4) and any("channels-last" in n for n in t.notes)
    t = _target(model, "embed.proj")
    assert t.spatial_dims == (2, 3) and t.output == (4, 4)
    for layer in ("embed", "grid", "embed.proj"):
        res = erf.measure(model, 16, layer=layer, samples=1)
        ys, xs = np.nonzero(res.map)
        assert (ys.min(), ys.max(), xs.min(), xs.max()) == (8, 11, 8, 11), layer  # the centre patch
    assert token_grid(16, (16, 16)) == (4, 4) and token_grid(15, (16, 16)) is None
    assert token_grid(8, (16, 32)) == (2, 4) and token_grid(8, (16, 16)) is None


@pytest.mark.slow
def test_windowed_attention_rf_equals_the_gradient_support():
    torch.manual_seed(0)
    model = erf.create_model("swin", patch_size=2, embed_dim=8, depths=(2,), num_heads=(2,), window_size=4)
    rep = receptive_field(model, 16)
    for layer in ("stages.0.blocks.0", "stages.0.blocks.1"):
        for unit in ((4, 4), (0, 0), (7, 5), (1, 6)):
            res = erf.measure(model, 16, layer=layer, unit=unit, samples=2, crop=False)
            box = rep.layer(layer).box(unit, clip=True)
            support = np.zeros((16, 16), bool)
            support[box[0][0]:box[0][1] + 1, box[1][0]:box[1][1] + 1] = True
            assert np.array_equal(res.map > 0, support), (layer, unit, box)
    # tokens 0..3 (pixels 0..7): the shifted window of token 0 is masked at the border, it does not wrap around
    assert rep.layer("stages.0.blocks.1").box((0, 0), clip=True) == ((0, 7), (0, 7))


def test_registry_transformers_measure_at_token_layers():
    torch.manual_seed(0)
    vit = erf.create_model("vit", img_size=16, patch_size=4, embed_dim=8, depth=1, num_heads=2, num_classes=3)
    res = erf.measure(vit, 16, layer="blocks.0", samples=2)
    assert res.unit == (2, 2) and res.trf_strict == (16, 16) and res.trf == (4, 4)
    assert vit.num_prefix_tokens == 1 and np.all(res.map > 0)
    assert res.saturation is not None and res.reference_box == ((0, 15), (0, 15))  # uniform over the strict box
    vit2 = erf.create_model("vit", img_size=16, patch_size=4, embed_dim=8, depth=1, num_heads=2, class_token=False)
    assert receptive_field(vit2, 16).layer("blocks.0").prefix_tokens == 0
    swin = erf.create_model("swin", patch_size=2, embed_dim=8, depths=(1, 1), num_heads=(1, 2), window_size=2)
    res = erf.measure(swin, 16, layer="stages.1", samples=2)
    assert res.unit == (2, 2) and res.map.shape == (16, 16) and res.map.max() > 0
    assert receptive_field(swin, 16).layer("stages.1").index_of((2, 2)) == {1: 2, 2: 2}  # channels-last


def test_cli_prefix_tokens_one_line_errors(capsys):
    args = ["rf", "vit", "--model-arg", "embed_dim=8", "--model-arg", "depth=1", "--model-arg", "num_heads=2",
            "--input", "16", "--model-arg", "img_size=16", "--layer", "blocks.0"]
    assert main(args + ["--prefix-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "prefix_tokens=2 does not fit layer 'blocks.0'" in err
    assert main(args + ["--prefix-tokens", "1", "--unit", "1,2", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["prefix_tokens"] == 1 and d["token_index"] == {"1": 1 + 4 + 2}


def test_config_prefix_tokens_key_is_checked(tmp_path):
    from erf.experiment import check_models, parse_config
    from erf.errors import ConfigError

    raw = {"experiment": {"name": "t"}, "model": {"name": "vit", "args": {"img_size": 16, "embed_dim": 8,
                                                                         "depth": 1, "num_heads": 2}},
           "inputs": {"size": 16}, "measure": {"layer": "blocks.0", "prefix_tokens": 3}}
    with pytest.raises(ConfigError, match=r"measure.prefix_tokens: .*prefix_tokens=3 does not fit"):
        check_models(parse_config(raw, "x.toml"))
    raw["measure"]["prefix_tokens"] = "two"
    with pytest.raises(ConfigError, match="measure.prefix_tokens: must be 'auto' or a token count"):
        parse_config(raw, "x.toml")


@pytest.mark.interop("timm")
def test_timm_vit_end_to_end():
    model = erf.load_model("timm:vit_tiny_patch16_224", {"img_size": 64})
    local = erf.measure(model, 64, layer="blocks.0.attn.qkv", samples=2)
    assert local.unit == (2, 2) and local.map.shape == (64, 64)
    ys, xs = np.nonzero(local.map)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (32, 47, 32, 47)  # the centre 16x16 patch, after the cls token
    glob = erf.measure(model, 64, layer="blocks.0", samples=2)
    assert np.all(glob.map > 0)


@pytest.mark.interop("torchvision")
def test_torchvision_resnet18_end_to_end():
    model = erf.load_model("torchvision:resnet18")
    res = erf.measure(model, 64, layer="layer2", samples=2)
    assert res.unit == (4, 4) and res.trf == (99, 99) and res.map.shape == (64, 64)
    assert res.map[32, 32] > 0


@pytest.mark.parametrize("name, kw, size", [("vit", {}, 32), ("vit", {"class_token": False}, 48),
                                            ("vit_tiny", {"img_size": 32}, 32), ("swin", {}, 32),
                                            ("swin", {"depths": (1, 1, 1), "num_heads": (1, 2, 4)}, 64)])
def test_registry_transformers_forward_and_bad_arguments(name, kw, size):
    model = erf.create_model(name, num_classes=7, **kw).eval()
    with torch.no_grad():
        assert tuple(model(torch.randn(2, 3, size, size)).shape) == (2, 7)
    if name == "vit":
        with pytest.raises(erf.ModelError, match="embed_dim 64 is not divisible by num_heads 3"):
            erf.create_model("vit", num_heads=3)
    if name == "swin":
        with pytest.raises(erf.ModelError, match="does not split into 4x4 windows"):
            model(torch.randn(1, 3, 40, 40))
