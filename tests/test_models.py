"""Tests for erf.models: registry, reference architectures, builders, specs, checkpoints, inits."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn as nn

from erf.errors import ErfError, ModelError
from erf.models import (INITS, ModelInfo, apply_init, create_model, list_models, load_checkpoint, load_model,
                        load_model_file, model_info, parse_model_args, register_model, unregister_model)


class NotAllowed:
    """A custom class: torch.load(weights_only=True) must refuse a pickle holding it."""


# --------------------------------------------------------------------------- registry

def test_list_models_has_every_builtin():
    names = list_models()
    expected = {"alexnet", "alexnet_caffe", "vgg11", "vgg13", "vgg16", "vgg19", "resnet18", "resnet34",
                "resnet50", "resnet101", "resnet152", "resnet50_v1", "plain_net", "residual_net", "small_cnn"}
    assert expected <= set(names)
    assert names == sorted(names)
    assert list_models("resnet5*") == ["resnet50", "resnet50_v1"]


def test_model_info_describes_every_builtin():
    for name in list_models():
        info = model_info(name)
        assert info.name == name and info.description and "\n" not in info.description, name
        assert "``" not in info.description and len(info.description) < 160, name
    assert model_info("plain_net").arguments[:2] == ("depth=8", "width=32")
    assert "batch_norm=False" in model_info("vgg16").arguments


def test_register_model_description_and_docstring():
    @register_model("described_net", description="  One   line\n about it. ")
    def described(width: int = 2, *, depth: int = 3) -> nn.Module:
        """The docstring, not shown."""
        return nn.Conv2d(1, width, 3)

    @register_model("docstring_net")
    def documented(k) -> nn.Module:
        """First paragraph
        on two lines.

        Not this one."""
        return nn.Conv2d(1, 1, k)

    try:
        assert model_info("described_net") == ModelInfo("described_net", "One line about it.", ("width=2", "depth=3"))
        assert model_info("docstring_net") == ModelInfo("docstring_net", "First paragraph on two lines.", ("k",))
        register_model("described_net")(documented)  # re-registered without one: the docstring again
        assert model_info("described_net").description == "First paragraph on two lines."
    finally:
        unregister_model("described_net")
        unregister_model("docstring_net")
    with pytest.raises(ModelError, match="unknown model"):
        model_info("described_net")


def test_unknown_model_suggests_close_names():
    with pytest.raises(ModelError) as info:
        create_model("resnet05")
    msg = str(info.value)
    assert "'resnet05'" in msg and "resnet50" in msg and "erf rf --list" in msg and "\n" not in msg


def test_register_model_custom_name():
    @register_model("tiny_test_model")
    def factory(channels: int = 2):
        return nn.Conv2d(1, channels, 3)

    try:
        assert "tiny_test_model" in list_models()
        assert create_model("tiny_test_model", channels=5).out_channels == 5
        with pytest.raises(ModelError, match="'depth'.*accepted: channels"):
            create_model("tiny_test_model", depth=3)
    finally:
        unregister_model("tiny_test_model")
    assert "tiny_test_model" not in list_models()


# --------------------------------------------------------------------------- reference models

# name -> (input size, expected output shape for num_classes=7 at batch 2)
FORWARD_CASES = {
    "alexnet": (64, (2, 7)),
    "alexnet_caffe": (227, (2, 7, 1, 1)),
    "vgg11": (32, (2, 7)),
    "vgg13": (32, (2, 7)),
    "vgg16": (32, (2, 7)),
    "vgg19": (32, (2, 7)),
    "resnet18": (64, (2, 7)),
    "resnet34": (64, (2, 7)),
    "resnet50": (64, (2, 7)),
    "resnet101": (64, (2, 7)),
    "resnet152": (64, (2, 7)),
    "resnet50_v1": (64, (2, 7)),
    "small_cnn": (32, (2, 7)),
}


def test_every_registered_model_has_a_forward_case():
    builders = {"plain_net", "residual_net"}
    transformers = {"vit", "vit_tiny", "swin"}  # no width multiplier; see tests/test_transformers_engine.py
    assert set(list_models()) - builders - transformers == set(FORWARD_CASES)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FORWARD_CASES))
def test_reference_forward_at_small_width(name):
    size, shape = FORWARD_CASES[name]
    model = create_model(name, width=0.0625, num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert tuple(out.shape) == shape


def test_in_channels_and_width_multiplier():
    model = create_model("resnet18", width=0.125, in_channels=1)
    assert model.conv1.in_channels == 1 and model.conv1.out_channels == 8
    assert model.layer4[1].conv2.out_channels == 64
    assert create_model("vgg11", width=0.001).features[0].out_channels == 1  # max(1, round(...))
    with pytest.raises(ModelError, match="width"):
        create_model("resnet18", width=0)


def test_torchvision_module_names():
    r18 = dict(create_model("resnet18", width=0.125).named_modules())
    for name in ["conv1", "bn1", "relu", "maxpool", "layer1.0.conv1", "layer2.0.downsample.0",
                 "layer2.0.downsample.1", "layer4.1.conv2", "layer3", "avgpool", "fc"]:
        assert name in r18, name
    assert isinstance(r18["layer2.0.downsample.0"], nn.Conv2d) and isinstance(r18["layer2.0.downsample.1"], nn.BatchNorm2d)
    assert "layer1.0.downsample" not in r18 or r18["layer1.0.downsample"] is None

    vgg = create_model("vgg16", width=0.125)
    convs = [i for i, m in enumerate(vgg.features) if isinstance(m, nn.Conv2d)]
    assert convs[-1] == 28 and len(vgg.features) == 31 and isinstance(vgg.features[30], nn.MaxPool2d)
    assert isinstance(create_model("vgg16", width=0.125, batch_norm=True).features[1], nn.BatchNorm2d)

    alex = create_model("alexnet", width=0.125)
    assert [i for i, m in enumerate(alex.features) if isinstance(m, nn.Conv2d)] == [0, 3, 6, 8, 10]
    assert alex.features[0].padding == (2, 2) and isinstance(alex.avgpool, nn.AdaptiveAvgPool2d)

    caffe = dict(create_model("alexnet_caffe", width=0.125).named_modules())
    assert caffe["conv1"].padding == (0, 0) and caffe["conv2"].padding == (2, 2)
    assert caffe["fc6"].kernel_size == (6, 6)
    assert not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in caffe.values())


def test_bottleneck_stride_placement():
    v15 = create_model("resnet50", width=0.125)
    v1 = create_model("resnet50_v1", width=0.125)
    assert v15.layer2[0].conv1.stride == (1, 1) and v15.layer2[0].conv2.stride == (2, 2)
    assert v1.layer2[0].conv1.stride == (2, 2) and v1.layer2[0].conv2.stride == (1, 1)
    assert v1.layer2[0].downsample[0].stride == (2, 2)


@pytest.mark.parametrize("name, count", [("resnet18", 11_689_512), ("resnet50", 25_557_032),
                                         ("vgg16", 138_357_544)])
def test_full_width_parameter_counts_match_torchvision(name, count):
    with torch.device("meta"):  # no memory, no init cost
        model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == count


# --------------------------------------------------------------------------- builders

def test_plain_net_layers_and_same_padding():
    model = create_model("plain_net", depth=4, width=3, activation="relu", dilation=[1, 2, 1, 3])
    assert isinstance(model.layers, nn.Sequential) and len(model.layers) == 4
    names = dict(model.named_modules())
    assert {"layers.0", "layers.3", "layers.2.conv"} <= set(names)
    assert names["layers.3.conv"].padding == (3, 3) and names["layers.3.conv"].dilation == (3, 3)
    assert names["layers.0.conv"].bias is None and names["layers.0.conv"].in_channels == 1
    out = model(torch.randn(1, 1, 17, 17))
    assert out.shape == (1, 3, 17, 17)


def test_plain_net_strides_norm_activation():
    model = create_model("plain_net", depth=3, width=2, strides=[0, 2], norm="batch",
                         activation="tanh", kernel_size=5)
    assert model.layers[0].conv.stride == (2, 2) and model.layers[1].conv.stride == (1, 1)
    assert isinstance(model.layers[1].norm, nn.BatchNorm2d) and isinstance(model.layers[1].act, nn.Tanh)
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 2, 4, 4)
    lin = create_model("plain_net", depth=2, width=2, activation="none", last_activation=False)
    assert isinstance(lin.layers[1].act, nn.Identity)


def test_builder_errors():
    with pytest.raises(ModelError, match="activation 'swish'"):
        create_model("plain_net", activation="swish")
    with pytest.raises(ModelError, match="strides"):
        create_model("plain_net", depth=2, strides=[5])
    with pytest.raises(ModelError, match="dilation"):
        create_model("plain_net", depth=3, dilation=[1, 2])
    with pytest.raises(ModelError, match="even depth"):
        create_model("residual_net", depth=3)
    with pytest.raises(ModelError, match="norm"):
        create_model("plain_net", norm="layer")


def test_residual_net_blocks_and_shortcuts():
    model = create_model("residual_net", depth=6, width=4, activation="relu", strides=[3])
    assert len(model.layers) == 3
    names = dict(model.named_modules())
    assert "layers.0.conv1.conv" in names and "layers.2.conv2.conv" in names
    assert isinstance(names["layers.0.shortcut"], nn.Sequential)  # 1 -> 4 channels: projection
    assert isinstance(names["layers.1.shortcut"], nn.Sequential)  # stride 2 on conv 3 (block 1)
    assert names["layers.1.shortcut"].conv.stride == (2, 2) and names["layers.1.conv2.conv"].stride == (2, 2)
    assert isinstance(names["layers.2.shortcut"], nn.Identity)
    convs_on_main_path = [n for n in names if n.endswith((".conv1.conv", ".conv2.conv"))]
    assert len(convs_on_main_path) == 6
    assert model(torch.randn(1, 1, 16, 16)).shape == (1, 4, 8, 8)


def test_residual_net_identity_skip_is_added():
    model = create_model("residual_net", depth=2, width=1, in_channels=1)
    assert isinstance(model.layers[0].shortcut, nn.Identity)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    x = torch.randn(1, 1, 8, 8)
    assert torch.equal(model(x), x)  # main path zero -> output is the skip


# --------------------------------------------------------------------------- model specs

GOOD_FILE = """
import torch.nn as nn

def make(channels=2, k=3):
    return nn.Sequential(nn.Conv2d(1, channels, k), nn.ReLU())

def not_a_model():
    return 42

def broken():
    raise ValueError("bad config")

class Helper:
    pass
"""


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "my_models.py"
    path.write_text(GOOD_FILE)
    return str(path)


def test_file_factory_loads_with_args(model_file):
    model = load_model(f"{model_file}:make", {"channels": 4, "k": 5})
    assert isinstance(model, nn.Sequential) and model[0].out_channels == 4 and model[0].kernel_size == (5, 5)


def test_file_factory_errors(model_file, tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model(f"{tmp_path / 'nope.py'}:make")
    with pytest.raises(ModelError) as info:
        load_model(f"{model_file}:missing")
    assert "'missing'" in str(info.value) and "make" in str(info.value) and "Helper" in str(info.value)
    with pytest.raises(ModelError, match="returned int, not a torch.nn.Module"):
        load_model(f"{model_file}:not_a_model")
    with pytest.raises(ModelError, match="ValueError: bad config"):
        load_model(f"{model_file}:broken")
    with pytest.raises(ModelError) as info:
        load_model(f"{model_file}:make", {"widht": 2})
    assert "'widht'" in str(info.value) and "channels, k" in str(info.value)
    with pytest.raises(ModelError, match="FACTORY"):
        load_model(model_file)


def test_file_with_syntax_error(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("def oops(:\n")
    with pytest.raises(ModelError, match="importing .* failed: SyntaxError"):
        load_model(f"{path}:oops")


def test_registry_spec_with_args_and_bad_key():
    model = load_model("plain_net", {"depth": 2, "width": 3})
    assert len(model.layers) == 2
    with pytest.raises(ModelError, match="'depht'.*accepted: depth, width"):
        load_model("plain_net", {"depht": 2})


@pytest.mark.parametrize("prefix", ["timm", "torchvision"])
def test_missing_optional_packages(prefix, monkeypatch):
    monkeypatch.setitem(sys.modules, prefix, None)  # importing it now raises ImportError
    with pytest.raises(ModelError, match=f"{prefix}"):
        load_model(f"{prefix}:resnet18")


def test_parse_model_args():
    args = parse_model_args(["width=0.5", "depth=4", "flag=true", "other=False", "x=None",
                             "strides=[1, 3]", "k=(3,3)", "activation=relu", "name=a=b", "neg=-2"])
    assert args == {"width": 0.5, "depth": 4, "flag": True, "other": False, "x": None,
                    "strides": [1, 3], "k": (3, 3), "activation": "relu", "name": "a=b", "neg": -2}
    assert parse_model_args([]) == {} and parse_model_args(["a=1", "a=2"]) == {"a": 2}
    for bad in ["width", "=3", "1x=2", "a b=1"]:
        with pytest.raises(ErfError):
            parse_model_args([bad])


# --------------------------------------------------------------------------- checkpoints

def _tiny(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("plain_net", depth=2, width=3, norm="batch", bias=True)


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_checkpoint_round_trip(tmp_path):
    src, dst = _tiny(0), _tiny(1)
    assert not _same(src, dst)
    path = tmp_path / "w.pth"
    torch.save(src.state_dict(), path)
    assert load_checkpoint(dst, str(path)) is dst
    assert _same(src, dst)


@pytest.mark.parametrize("wrap", ["state_dict", "model", "model_state_dict", "ddp"])
def test_checkpoint_wrappers_and_ddp_prefix(tmp_path, wrap):
    src, dst = _tiny(0), _tiny(1)
    state = src.state_dict()
    obj = {f"module.{k}": v for k, v in state.items()} if wrap == "ddp" else {wrap: state, "epoch": 3}
    path = tmp_path / "w.pt"
    torch.save(obj, path)
    load_model("plain_net", {"depth": 2, "width": 3, "norm": "batch", "bias": True}, checkpoint=str(path))
    load_checkpoint(dst, str(path))
    assert _same(src, dst)


def test_checkpoint_mismatches(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(create_model("plain_net", depth=2, width=4).state_dict(), path)
    with pytest.raises(ModelError) as info:
        load_checkpoint(create_model("plain_net", depth=2, width=3), str(path))
    msg = str(info.value)
    assert "'layers.0.conv.weight'" in msg and "(4, 1, 3, 3)" in msg and "(3, 1, 3, 3)" in msg
    with pytest.raises(ModelError, match="missing key 'layers.2.conv.weight'"):
        load_checkpoint(create_model("plain_net", depth=3, width=4), str(path))
    with pytest.raises(ModelError, match="unexpected key 'layers.1.conv.weight'"):
        load_checkpoint(create_model("plain_net", depth=1, width=4), str(path))


def test_checkpoint_bad_files(tmp_path):
    model = _tiny(0)
    with pytest.raises(ModelError, match="not found"):
        load_checkpoint(model, str(tmp_path / "missing.pt"))
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(ModelError, match="corrupt"):
        load_checkpoint(model, str(corrupt))
    good = tmp_path / "good.pt"
    torch.save(model.state_dict(), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ModelError, match="corrupt"):
        load_checkpoint(model, str(truncated))
    no_sd = tmp_path / "nosd.pt"
    torch.save({"epoch": 3, "lr": 0.1}, no_sd)
    with pytest.raises(ModelError, match="no state_dict"):
        load_checkpoint(model, str(no_sd))


@pytest.mark.parametrize("what", ["object", "whole_model"])
def test_checkpoint_refuses_code(tmp_path, what):
    path = tmp_path / "evil.pt"
    torch.save({"x": NotAllowed()} if what == "object" else _tiny(0), path)
    with pytest.raises(ModelError) as info:
        load_checkpoint(_tiny(0), str(path))
    msg = str(info.value)
    assert msg.startswith(f"refused: {path} would run code when loaded (its pickle asks for the Python global ")
    glob = "test_models.NotAllowed" if what == "object" else "erf.models.builders.ConvNet"
    assert glob in msg and "torch.save(model.state_dict(), ...)" in msg and "\n" not in msg
    assert "weights_only" not in msg  # never advice to turn the safe loader off


# --------------------------------------------------------------------------- whole-model files

@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_round_trip(tmp_path):
    model = create_model("plain_net", depth=2, width=2, activation="relu").eval()
    path = tmp_path / "model.ts"
    torch.jit.save(torch.jit.script(model), str(path))
    x = torch.randn(1, 1, 9, 9)
    for loaded in (load_model_file(str(path)), load_model(str(path))):
        assert torch.allclose(loaded(x), model(x))
    with pytest.raises(ModelError, match="whole saved model"):
        load_checkpoint(model, str(path))


@pytest.mark.slow
def test_torch_export_round_trip(tmp_path):
    model = create_model("plain_net", depth=2, width=2, activation="relu").eval()
    x = torch.randn(1, 1, 9, 9)
    path = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(model, (x,)), str(path))
    loaded = load_model(str(path))
    assert isinstance(loaded, nn.Module)
    assert torch.allclose(loaded(x), model(x))


def test_model_file_errors(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model(str(tmp_path / "nothing.pt"))
    weights = tmp_path / "weights.pth"
    torch.save(_tiny(0).state_dict(), weights)
    with pytest.raises(ModelError, match="not a TorchScript or torch.export model"):
        load_model(str(weights))
    with pytest.raises(ModelError, match="no model arguments"):
        load_model(str(weights), {"width": 2})


# --------------------------------------------------------------------------- inits

def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("init", ["uniform", "kaiming_normal", "xavier_normal"])
def test_apply_init_is_reproducible(init):
    a, b = _tiny(0), _tiny(1)
    apply_init(a, init, torch.Generator().manual_seed(7))
    apply_init(b, init, torch.Generator().manual_seed(7))
    assert all(torch.equal(x, y) for x, y in zip(_weights(a), _weights(b)))
    apply_init(b, init, torch.Generator().manual_seed(8))
    assert not torch.equal(a.layers[0].conv.weight, b.layers[0].conv.weight)
    assert torch.all(b.layers[0].conv.bias == 0) and torch.all(b.layers[0].norm.weight == 1)


def test_uniform_and_normal_scales():
    conv = nn.Conv2d(16, 64, 5)  # fan_in 400, fan_out 1600
    gen = torch.Generator().manual_seed(0)
    apply_init(conv, "uniform", gen)
    bound = (3 / 400) ** 0.5
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.9 * bound
    apply_init(conv, "kaiming_normal", gen)
    assert abs(conv.weight.std().item() - (2 / 400) ** 0.5) < 0.01 * 2
    apply_init(conv, "xavier_normal", gen)
    assert abs(conv.weight.std().item() - (2 / 2000) ** 0.5) < 0.01


def test_constant_init_is_one_over_fan_in():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(10, 2))
    with torch.no_grad():
        model[1].weight.fill_(5)
        model[1].running_mean.fill_(3)
    apply_init(model, "constant", torch.Generator())
    assert torch.all(model[0].weight == 1 / 27) and torch.all(model[0].bias == 0)
    assert torch.all(model[3].weight == 1 / 10)
    assert torch.all(model[1].weight == 1) and torch.all(model[1].bias == 0)
    assert torch.all(model[1].running_mean == 0)


def test_model_init_and_callable_and_unknown():
    model = _tiny(0)
    before = _weights(model)
    apply_init(model, "model", torch.Generator().manual_seed(1))
    assert all(torch.equal(x, y) for x, y in zip(before, _weights(model)))

    def ones(m, gen):
        for p in m.parameters():
            p.fill_(1.0)

    apply_init(model, ones, torch.Generator())
    assert all(torch.all(p == 1) for p in model.parameters())
    with pytest.raises(ErfError) as info:
        apply_init(model, "gaussian", torch.Generator())
    assert all(name in str(info.value) for name in INITS)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_apply_init_cuda_matches_cpu():
    cpu, gpu = _tiny(0), _tiny(0).cuda()
    apply_init(cpu, "kaiming_normal", torch.Generator().manual_seed(3))
    apply_init(gpu, "kaiming_normal", torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y.cpu()) for x, y in zip(_weights(cpu), _weights(gpu)))
    apply_init(gpu, "uniform", torch.Generator(device="cuda").manual_seed(3))
    assert gpu.layers[0].conv.weight.is_cuda
