"""``--pretrained`` through the libraries' real caches, offline (CI's interop stage; marked ``interop``).

The tests make the weights themselves and place them where the libraries look: timm's in the
Hugging Face hub's offline cache layout (``$HF_HOME/hub/models--timm--NAME/snapshots/REV/`` with
``refs/main``), torchvision's in torch hub's ``$TORCH_HOME/hub/checkpoints`` under the weights' file
name. Then ``--pretrained`` loads them with the network closed (``HF_HUB_OFFLINE=1``, every proxy
a closed port), and the model's own preprocessing (mean, std, centre crop) normalises image
inputs and is printed in the notes.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import erf
from erf.cli import main
from erf.models import load_model, save_safetensors

pytestmark = pytest.mark.interop

REVISION = "0123456789abcdef0123456789abcdef01234567"


def _hub_place(hf_home, repo_id: str, state: dict[str, torch.Tensor]) -> str:
    """Put ``state`` as ``model.safetensors`` of ``repo_id`` in the hub cache under ``hf_home``, as a download would."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / REVISION
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    path = snap / "model.safetensors"
    save_safetensors({k: v.contiguous() for k, v in state.items()}, str(path))
    return str(path)


def _images(path, n: int = 4, size: int = 40) -> str:
    """``n`` random RGB images (N, H, W, C) uint8 as an .npy file."""
    rng = np.random.default_rng(0)
    np.save(path, rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8))
    return str(path)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.interop("timm")
def test_timm_pretrained_from_the_hub_cache_offline(offline, tmp_path, capsys):
    src = load_model("timm:test_resnet", seed=11)
    hub_id = src.pretrained_cfg["hf_hub_id"]  # timm/test_resnet.r160_in1k
    assert hub_id.startswith("timm/test_resnet")
    # nothing cached yet: one line naming the hub repository and the cache
    with pytest.raises(erf.ModelError, match=f"https://huggingface.co/{hub_id}"):
        load_model("timm:test_resnet", pretrained=True)
    _hub_place(offline / "hf", hub_id, src.state_dict())
    model = load_model("timm:test_resnet", pretrained=True, seed=12)  # another seed: the weights come from the file
    assert _same(model, src)
    assert model.pretrained_cfg["origin"] == "timm's pretrained_cfg of test_resnet.r160_in1k"

    npy = _images(tmp_path / "x.npy")
    code = main(["measure", "timm:test_resnet", "--pretrained", "--input", "32", "--layer", "layer2", "--inputs", npy,
                 "--samples", "2", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert ("images normalised with timm's pretrained_cfg of test_resnet.r160_in1k (mean (0.5, 0.5, 0.5), "
            "std (0.5, 0.5, 0.5), centre crop 0.95)") in out
    # used, not only printed: the same map as the statistics given by hand, another with ImageNet's
    own = erf.measure(model, 32, layer="layer2", inputs=npy, samples=2, dtype="float64")
    given = erf.measure(model, 32, layer="layer2", inputs=npy, samples=2, dtype="float64", mean=(0.5,), std=(0.5,))
    imagenet = erf.measure(model, 32, layer="layer2", inputs=npy, samples=2, dtype="float64",
                           mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    assert np.array_equal(own.map, given.map)
    assert not np.allclose(own.map, imagenet.map)


@pytest.mark.interop("torchvision")
def test_torchvision_pretrained_from_the_torch_hub_cache_offline(offline, tmp_path, capsys):
    import torchvision  # (only where it imports)

    weights = torchvision.models.get_model_weights("squeezenet1_1")["DEFAULT"]
    file = os.path.basename(weights.url)
    with pytest.raises(erf.ModelError, match=f"place {file} there"):
        load_model("torchvision:squeezenet1_1", pretrained=True)
    src = load_model("torchvision:squeezenet1_1", seed=5)
    cache = offline / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True, exist_ok=True)  # the failed download may have made it
    torch.save(src.state_dict(), cache / file)
    for spec, pretrained in [("torchvision:squeezenet1_1", True), ("torchvision:squeezenet1_1:IMAGENET1K_V1", False)]:
        model = load_model(spec, pretrained=pretrained, seed=6)
        assert _same(model, src), spec
    cfg = model.pretrained_cfg
    assert cfg["origin"] == "torchvision's SqueezeNet1_1_Weights.IMAGENET1K_V1 transforms"
    assert cfg["crop_pct"] == 224 / 256 and cfg["mean"] == pytest.approx((0.485, 0.456, 0.406))
    assert not hasattr(load_model("torchvision:squeezenet1_1"), "pretrained_cfg")  # random weights: no transforms

    npy = _images(tmp_path / "x.npy")
    code = main(["measure", "torchvision:squeezenet1_1", "--pretrained", "--input", "48", "--layer", "features.5",
                 "--inputs", npy, "--samples", "2", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert ("images normalised with torchvision's SqueezeNet1_1_Weights.IMAGENET1K_V1 transforms "
            "(mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225), centre crop 0.875)") in out


@pytest.mark.interop("timm")
def test_timm_checkpoint_file_from_the_hub_layout_loads_into_the_spec(offline, tmp_path):
    """The way round offline: the hub's model.safetensors, passed with --checkpoint."""
    src = load_model("timm:test_convnext", seed=2)
    path = _hub_place(tmp_path / "elsewhere", "timm/test_convnext.r160_in1k", src.state_dict())
    model = load_model("timm:test_convnext", checkpoint=path, seed=3)
    assert _same(model, src)
