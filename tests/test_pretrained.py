"""``--pretrained`` for ``timm:`` and ``torchvision:`` specs, and the one-line errors around it.

The error paths run everywhere against small stand-in modules that follow the libraries' API
(``timm.create_model``; ``torchvision.models.get_model`` / ``get_model_weights`` with a weights
enum whose ``url`` is fetched through torch hub's real cache). The tests of the real libraries are
marked ``interop``: they skip with the reason where timm/torchvision do not import (the main venv)
and run in CI's interop stage (torch 2.14.1, torchvision 0.29.1, timm), where nothing may skip.
Every network access is pointed at a closed local port, so nothing is ever downloaded; the real
caches (the Hugging Face hub's offline layout, torch hub's ``checkpoints`` folder) are filled with
weights the tests make (tests/test_interop_pretrained.py).
"""

from __future__ import annotations

import enum
import os
import sys
import types

import pytest
import torch
import torch.nn as nn

from erf.cli import main
from erf.errors import ModelError
from erf.models import (check_pretrained, create_model, load_checkpoint, load_model, model_info,
                        save_safetensors)


def _one_line(fn, *needles: str) -> str:
    with pytest.raises(ModelError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


# --------------------------------------------------------------------------- refusals before any build


def test_pretrained_on_other_specs_is_one_line(tmp_path):
    _one_line(lambda: load_model("resnet18", pretrained=True), "applies to timm:NAME and torchvision:NAME",
              "--checkpoint FILE")
    path = tmp_path / "w.pt"
    torch.save(create_model("plain_net", depth=1, width=1).state_dict(), path)
    _one_line(lambda: load_model("timm:resnet18", pretrained=True, checkpoint=str(path)), "not both")
    _one_line(lambda: check_pretrained("model.py:make"), "applies to timm:NAME")


def test_pretrained_in_a_config_is_checked_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text('[experiment]\nname = "p"\n[model]\nname = "plain_net"\npretrained = true\n'
                                     'args = {depth = 2, width = 2}\n[inputs]\nsize = 16\n')
    code = main(["run", "c.toml", "--check"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "model.pretrained" in err and "applies to timm:NAME" in err
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("library", ["timm", "torchvision"])
def test_missing_library_names_the_way_round(monkeypatch, library):
    monkeypatch.setitem(sys.modules, library, None)  # importing it now fails as if not installed
    msg = _one_line(lambda: load_model(f"{library}:resnet18", pretrained=True),
                    f"need the {library} package, which is not installed (pip install {library})", "--checkpoint")
    if library == "torchvision":
        assert "the registry's resnet18-152" in msg


def test_library_that_does_not_import(monkeypatch, tmp_path):
    """What torchvision 0.28 does beside the CPU torch here: the import itself raises."""
    package = tmp_path / "fakepkgs" / "torchvision"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('operator torchvision::nms does not exist')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "fakepkgs"))
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        monkeypatch.delitem(sys.modules, name)
    msg = _one_line(lambda: load_model("torchvision:resnet50", pretrained=True),
                    "torchvision failed to import (RuntimeError: operator torchvision::nms does not exist)",
                    f"torch {torch.__version__}", "erf rf resnet50 --checkpoint")
    assert "Traceback" not in msg


def _fake_packages(root, torchvision_init: str, torchvision_version: str | None = "0.20.0",
                   torch_pin: str = "2.5.0") -> None:
    """timm (which imports torchvision, as the real one does) and torchvision under ``root``, with dist-info."""
    (root / "timm").mkdir(parents=True)
    (root / "timm" / "__init__.py").write_text("import torchvision\n")
    (root / "torchvision").mkdir()
    (root / "torchvision" / "__init__.py").write_text(torchvision_init)
    if torchvision_version:
        meta = root / f"torchvision-{torchvision_version}.dist-info"
        meta.mkdir()
        (meta / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torchvision\nVersion: {torchvision_version}\n"
                                       f"Requires-Dist: torch=={torch_pin}\n")


@pytest.fixture
def fake_packages(monkeypatch, tmp_path):
    """An empty folder first on sys.path; timm and torchvision forgotten until the test ends."""
    root = tmp_path / "fakepkgs"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    for name in [m for m in sys.modules if m.split(".")[0] in ("timm", "torchvision")]:
        monkeypatch.delitem(sys.modules, name)
    return root


def test_timm_import_failure_names_the_torchvision_torch_mismatch(fake_packages):
    """timm imports torchvision; a torchvision built for another torch breaks it (the hint names the pair)."""
    _fake_packages(fake_packages, "raise RuntimeError('operator torchvision::nms does not exist')\n")
    base = torch.__version__.split("+")[0]
    minor = int(base.split(".")[1])
    msg = _one_line(lambda: load_model("timm:resnet18", pretrained=True),
                    "timm failed to import (RuntimeError: operator torchvision::nms does not exist, raised inside "
                    "torchvision, which timm imports)",
                    f"torchvision 0.20.0 is built for torch 2.5.0, not this torch {torch.__version__}",
                    f"pip install torch=={base} torchvision==0.{minor + 15}.*", "--checkpoint FILE")
    assert "Traceback" not in msg
    _one_line(lambda: load_model("timm:resnet18"), "torchvision 0.20.0 is built for torch 2.5.0")  # no weights too


def test_timm_without_torchvision_says_install_the_matching_one(fake_packages):
    (fake_packages / "timm").mkdir()
    (fake_packages / "timm" / "__init__.py").write_text("import torchvision\n")
    import importlib.abc

    class NoTorchvision(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "torchvision":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoTorchvision())
    try:
        base = torch.__version__.split("+")[0]
        _one_line(lambda: load_model("timm:resnet18"), "timm failed to import: it needs torchvision, which is not "
                  "installed", f"pip install torch=={base} torchvision==0.{int(base.split('.')[1]) + 15}.*")
    finally:
        sys.meta_path.pop(0)


def test_torchvision_that_matches_torch_but_fails_is_not_called_a_mismatch(fake_packages):
    base = torch.__version__.split("+")[0]
    _fake_packages(fake_packages, "raise ImportError('libjpeg.so.8: cannot open shared object file')\n",
                   f"0.{int(base.split('.')[1]) + 15}.0", base)
    msg = _one_line(lambda: load_model("torchvision:resnet18"), "torchvision failed to import (ImportError: libjpeg",
                    f"reinstall the torchvision built for this torch {torch.__version__}")
    assert "is built for torch" not in msg


# --------------------------------------------------------------------------- stand-in timm


def _small(**kw) -> nn.Module:
    return create_model("resnet18", width=0.125, **kw)


@pytest.fixture
def fake_timm(monkeypatch):
    """``timm.create_model`` with timm's behaviour offline: the weights fetch raises, building does not."""
    state = {"cfg": {"hf_hub_id": "timm/resnet18.a1_in1k"}, "online": False, "calls": []}

    def create_model_(name, pretrained=False, **kw):
        state["calls"].append((name, pretrained))
        if name.startswith("hf-hub:") and not state["online"]:
            raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")
        if name.split(".")[0] != "resnet18" and not name.startswith("hf-hub:"):
            raise RuntimeError(f"Unknown model ({name})")
        bad = [k for k in kw if k != "num_classes"]
        if bad:  # as timm's model classes do
            raise TypeError(f"ResNet.__init__() got an unexpected keyword argument '{bad[0]}'")
        torch.manual_seed(123)
        model = _small(**kw)
        model.pretrained_cfg = dict(state["cfg"])
        if pretrained and not state["online"]:
            raise OSError("Cannot find the requested files in the disk cache and outgoing traffic has been disabled")
        return model

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create_model_))
    return state


def test_timm_offline_names_the_hub_and_the_way_round(fake_timm, offline):
    msg = _one_line(lambda: load_model("timm:resnet18", pretrained=True),
                    "timm:resnet18: the pretrained weights could not be loaded (OSError: Cannot find the requested",
                    "https://huggingface.co/timm/resnet18.a1_in1k", os.path.join(str(offline / "hf"), "hub"),
                    "--checkpoint FILE")
    assert "model.safetensors" in msg


def test_timm_weights_from_a_url_name_the_file_and_cache(fake_timm, offline):
    fake_timm["cfg"] = {"hf_hub_id": "", "url": "https://example.org/w/resnet18-5c106cde.pth"}
    _one_line(lambda: load_model("timm:resnet18", pretrained=True), "place resnet18-5c106cde.pth there",
              os.path.join(str(offline / "torch"), "hub", "checkpoints"))


def test_timm_hf_hub_name_offline(fake_timm, offline):
    _one_line(lambda: load_model("timm:hf-hub:someone/their-net", pretrained=True),
              "the model could not be fetched", "https://huggingface.co/someone/their-net", "timm:ARCH")


def test_timm_bad_argument_is_not_called_a_download_error(fake_timm):
    msg = _one_line(lambda: load_model("timm:resnet18", {"nope": 1}, pretrained=True), "failed to build",
                    "TypeError")
    assert "pretrained weights" not in msg


def test_timm_online_passes_pretrained_through(fake_timm):
    fake_timm["online"] = True
    model = load_model("timm:resnet18", pretrained=True)
    assert fake_timm["calls"] == [("resnet18", True)] and isinstance(model, nn.Module)
    load_model("timm:resnet18")
    assert fake_timm["calls"][-1] == ("resnet18", False)


def test_timm_spec_with_a_safetensors_checkpoint(fake_timm, tmp_path):
    """The way round offline: the weights downloaded elsewhere, passed as a file."""
    torch.manual_seed(7)
    src = _small()
    path = tmp_path / "model.safetensors"
    save_safetensors(src.state_dict(), str(path))
    model = load_model("timm:resnet18", checkpoint=str(path))
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), model.state_dict().values()))


# --------------------------------------------------------------------------- stand-in torchvision


class _Weights(enum.Enum):
    IMAGENET1K_V1 = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    DEFAULT = "https://download.pytorch.org/models/resnet18-f37072fd.pth"  # an alias, as torchvision's

    @property
    def url(self) -> str:
        return self.value


_Weights.__name__ = "ResNet18_Weights"


@pytest.fixture
def fake_torchvision(monkeypatch):
    """``torchvision.models`` whose weights go through torch hub's real cache, as torchvision's do."""

    def get_model_weights(name):
        if name != "resnet18":
            raise ValueError(f"Unknown model {name}")
        return _Weights

    def get_model(name, weights=None, **kw):
        torch.manual_seed(0)
        model = _small(**kw)
        if weights is not None:
            model.load_state_dict(torch.hub.load_state_dict_from_url(weights.url, progress=False))
        return model

    models = types.SimpleNamespace(get_model=get_model, get_model_weights=get_model_weights)
    monkeypatch.setitem(sys.modules, "torchvision", types.SimpleNamespace(models=models))


def test_torchvision_offline_names_the_file_and_the_cache(fake_torchvision, offline):
    cache = os.path.join(str(offline / "torch"), "hub", "checkpoints")
    _one_line(lambda: load_model("torchvision:resnet18", pretrained=True),
              "torchvision:resnet18 (ResNet18_Weights.IMAGENET1K_V1): the pretrained weights could not be loaded",
              f"into {cache}", "place resnet18-f37072fd.pth there", "--checkpoint resnet18-f37072fd.pth",
              "the registry's resnet18 takes it too")


def test_torchvision_weights_from_the_cache(fake_torchvision, offline):
    """A state_dict saved locally under the weights' file name is what the library's cache serves."""
    torch.manual_seed(3)
    src = _small()
    cache = offline / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(src.state_dict(), cache / "resnet18-f37072fd.pth")
    for spec, pretrained in [("torchvision:resnet18", True), ("torchvision:resnet18:IMAGENET1K_V1", False),
                             ("torchvision:resnet18:ResNet18_Weights.IMAGENET1K_V1", False)]:
        model = load_model(spec, pretrained=pretrained)
        assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), model.state_dict().values())), spec
    plain = load_model("torchvision:resnet18")  # no weights named: random
    assert not torch.equal(plain.conv1.weight, src.conv1.weight)


def test_torchvision_unknown_weights_and_model(fake_torchvision):
    _one_line(lambda: load_model("torchvision:resnet18:IMAGENET1K_V9"), "unknown weights 'IMAGENET1K_V9'",
              "DEFAULT, IMAGENET1K_V1")
    _one_line(lambda: load_model("torchvision:nonet", pretrained=True), "torchvision:nonet: no such model")


# --------------------------------------------------------------------------- the real libraries (interop)


@pytest.mark.interop("torchvision")
def test_real_torchvision_cache_offline_and_registry_layout(offline):
    import torchvision  # noqa: F401  (only where it imports)

    weights = torchvision.models.get_model_weights("resnet18")["DEFAULT"]
    _one_line(lambda: load_model("torchvision:resnet18", pretrained=True), "could not be loaded",
              os.path.basename(weights.url), "--checkpoint")
    torch.manual_seed(5)
    src = torchvision.models.resnet18()
    cache = offline / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True, exist_ok=True)  # the failed download above may have made it
    torch.save(src.state_dict(), cache / os.path.basename(weights.url))
    model = load_model("torchvision:resnet18", pretrained=True)
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), model.state_dict().values()))
    registry = load_checkpoint(create_model("resnet18"), str(cache / os.path.basename(weights.url)))
    assert torch.equal(registry.fc.weight, src.fc.weight)  # the registry's resnet18 takes torchvision's file
    _one_line(lambda: load_model("torchvision:resnet18:NOPE"), "unknown weights 'NOPE'", "IMAGENET1K_V1")


@pytest.mark.interop("timm")
def test_real_timm_offline_and_checkpoint(offline, tmp_path):
    import timm  # noqa: F401  (only where it imports)

    _one_line(lambda: load_model("timm:resnet18", pretrained=True), "timm:resnet18: the pretrained weights could not",
              "--checkpoint FILE")
    src = load_model("timm:resnet18", seed=3)
    path = tmp_path / "model.safetensors"
    save_safetensors(src.state_dict(), str(path))
    model = load_model("timm:resnet18", checkpoint=str(path), seed=4)
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), model.state_dict().values()))


def test_list_shows_descriptions(capsys):
    assert main(["rf", "--list"]) == 0
    out = capsys.readouterr().out
    assert f"  plain_net  " in out and model_info("plain_net").description[:40] in out
    assert "args: depth=8, width=32" in out and "timm:NAME" in out and "--pretrained" in out
