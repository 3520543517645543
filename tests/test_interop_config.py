"""configs/pretrained_cnn_vs_vit.toml with the real libraries (CI's interop stage; marked ``interop``).

Its networks come from torchvision and timm, also under ``--quick`` (random weights of the same
five architectures at 64 px on generated images), so it is checked and run here, not in the main
venv. The full settings (pretrained weights on the user's images at 224 px) are the GPU box's run;
here their names are checked against the libraries without fetching anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from erf.cli import main
from erf.engine.images import generate_images
from erf.experiment import check_models, load_config
from erf.models import check_pretrained

pytestmark = pytest.mark.interop

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "pretrained_cnn_vs_vit.toml"
LABELS = ["ResNet-50", "ResNet-101", "ResNet-152", "ConvNeXt-T", "ViT-B/16"]


def test_full_settings_name_real_pretrained_weights(tmp_path):
    folder = generate_images(4, 32, seed=0, folder=tmp_path / "imgs")
    cfg = load_config(CONFIG, inputs=str(folder))
    models = [(p.settings["model"]["name"], p.settings["model"]["pretrained"], p.settings["measure"]["layer"])
              for p in cfg.points]
    assert [m[0].split(":")[0] for m in models] == ["torchvision"] * 3 + ["timm"] * 2
    assert all(pretrained for _, pretrained, _ in models)
    for name, _, _ in models:
        check_pretrained(name)  # the library imports and (torchvision) the weights exist; nothing fetched
    import timm  # (only where it imports)

    for name in ("convnext_tiny.fb_in1k", "vit_base_patch16_224.augreg2_in21k_ft_in1k"):
        assert name in timm.list_pretrained(name), name


def test_quick_runs_the_real_architectures(tmp_path, capsys):
    cfg = load_config(CONFIG, quick=True)
    names = [(p.settings["model"]["name"], p.settings["model"]["pretrained"]) for p in cfg.points]
    assert names == [("torchvision:resnet50", False), ("torchvision:resnet101", False),
                     ("torchvision:resnet152", False), ("timm:convnext_tiny", False),
                     ("timm:vit_base_patch16_224", False)]
    check_models(cfg)  # builds and traces every network at 64 px
    out = tmp_path / "out"
    assert main(["run", str(CONFIG), "--quick", "--out", str(out), "--quiet"]) == 0, capsys.readouterr().err
    report = (out / "report.md").read_text()
    assert report.splitlines()[2].startswith("**Quick run (`--quick`): random weights")
    summary = json.loads((out / "summary.json").read_text())
    text = json.dumps(summary)
    for label in LABELS:
        assert label in report and label in text, label
    rows = (out / "sweep.csv").read_text().splitlines()
    assert len(rows) == 1 + len(LABELS)
    notes = json.dumps([p.get("notes") for p in summary["points"]])
    assert "residual branches closed" not in notes  # ConvNeXt-T's layer scale opened; torchvision's ResNets open


def test_a_config_without_a_layer_checks_and_runs_the_default_stage(tmp_path, capsys):
    """As ``erf measure timm:NAME`` does: no ``measure.layer`` measures the last spatial stage, in --check too."""
    cfg = tmp_path / "t.toml"
    cfg.write_text('[experiment]\nname = "t"\n[model]\nname = "timm:resnet18"\n[inputs]\nsize = 64\n'
                   '[measure]\nsamples = 2\n')
    assert main(["run", str(cfg), "--check"]) == 0, capsys.readouterr().err
    out = tmp_path / "o"
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0, capsys.readouterr().err
    point = json.loads((out / "summary.json").read_text())["points"][0]
    assert point["trf"] is not None and any("'layer4'" in n for n in point["notes"]), point["notes"]
