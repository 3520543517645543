"""Experiment configs: the shipped ones validate; bad ones are refused before any work, in one line."""

import dataclasses
import importlib.util
import re
from pathlib import Path

import pytest

from erf.cli import main
from erf.experiment import check_models, load_config, parse_config
from erf.engine import MeasureOptions
from erf.experiment.points import CONFIG_ONLY, UNSET, measure_keywords
from erf.experiment.schema import QUICK_CAPS, SCHEMA, schema_markdown
from erf.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.toml"))
SHIPPED = {"luo_fig1", "luo_growth", "luo_subsample_dilation", "plain_vs_residual", "training", "resnet_family",
           "vit_vs_cnn", "pretrained_cnn_vs_vit", "dense_unet"}
COMPARISONS = ("plain_vs_residual", "training", "resnet_family", "vit_vs_cnn")

GOOD = """
[experiment]
name = "t"
[model]
name = "plain_net"
args = { width = 4, depth = 3 }
[inputs]
size = 24
[measure]
samples = 4
"""


def test_every_figure_config_is_shipped():
    assert {p.stem for p in CONFIGS} == SHIPPED


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
@pytest.mark.parametrize("quick", [False, True])
def test_shipped_configs_validate(path, quick):
    if path.stem == "pretrained_cnn_vs_vit":
        pytest.skip("its networks come from timm and torchvision, also under --quick: "
                    "tests/test_interop_config.py checks both settings in CI's interop stage")
    cfg = load_config(path, quick=quick)
    assert cfg.name == path.stem and cfg.points and cfg.figures
    check_models(cfg)  # builds every model on the meta device and traces its layer
    if quick:
        for p in cfg.points:
            for key, cap in QUICK_CAPS.items():
                section, name = key.split(".")
                assert p.settings[section][name] <= cap


def test_readme_documents_every_key():
    text = (ROOT / "configs" / "README.md").read_text()
    block = re.search(r"<!-- schema:.*?-->\n(.*)<!-- /schema -->", text, re.S)
    assert block and block.group(1) == schema_markdown()


def test_sweep_expansion_and_precedence():
    cfg = parse_config(_toml(GOOD + """
[sweep.grid]
"model.args.depth" = [2, 4, 8]
[[sweep.variants]]
axis = "weights"
label = "uniform"
measure.init = "constant"
measure.weight_draws = 1
[[sweep.variants]]
axis = "weights"
label = "random"
measure.init = "uniform"
measure.weight_draws = 8
[[sweep.variants]]
axis = "act"
label = "relu"
model.args.activation = "relu"
[quick]
"measure.weight_draws" = 2
"model.args.width" = 2
"sweep.grid.model.args.depth" = [2, 4]
"""), quick=True)
    assert len(cfg.points) == 2 * 1 * 2
    p = cfg.points[-1]
    assert p.variants == {"weights": "random", "act": "relu"} and p.params == {"model.args.depth": 4}
    assert p.label == "random, relu, depth=4" and p.value("weights") == "random"
    assert p.settings["model"]["args"] == {"width": 2, "depth": 4, "activation": "relu"}
    assert p.settings["measure"]["weight_draws"] == 4          # the variant's 8, capped by --quick
    assert cfg.points[0].settings["measure"]["weight_draws"] == 1
    full = parse_config(_toml(GOOD + '[sweep.grid]\n"model.args.depth" = [2, 4, 8]\n'))
    assert len(full.points) == 3 and full.points[0].settings["model"]["args"]["width"] == 4


def test_cli_overrides():
    cfg = parse_config(_toml(GOOD), device="cpu", seed=7)
    assert cfg.settings["experiment"]["device"] == "cpu" and cfg.points[0].settings["experiment"]["seed"] == 7


def _toml(text):
    import tomllib

    return tomllib.loads(text)


# --------------------------------------------------------------------------- refusals

BAD = [
    # (config text, key named in the message, words of the reason)
    (GOOD.replace("samples = 4", "sampels = 4"), "measure.sampels", "unknown key (did you mean 'samples'?)"),
    (GOOD.replace("samples = 4", 'samples = "many"'), "measure.samples", "must be an integer"),
    (GOOD.replace("samples = 4", "samples = 0"), "measure.samples", "must be >= 1"),
    (GOOD.replace("samples = 4", 'signal = "mean"'), "measure.signal", "must be one of"),
    (GOOD.replace("samples = 4", "crop = 3"), "measure.crop", "must be 'auto', true or false"),
    (GOOD.replace("size = 24", "size = [24, 0]"), "inputs.size", "positive integer"),
    (GOOD + "[extra]\n", "extra", "unknown section"),
    (GOOD.replace('name = "t"', 'name = "a b"'), "experiment.name", "folder name"),
    (GOOD.replace('name = "t"\n', ""), "experiment.name", "is required"),
    (GOOD.replace('name = "plain_net"', 'name = "plainnet"'), "model.name", "unknown model 'plainnet'"),
    (GOOD.replace("depth = 3", "dpth = 3"), "model.args.dpth", "takes no argument 'dpth'"),
    # timm not installed: refused by the static check (model.name); installed: no such timm model (the build, model)
    (GOOD.replace('name = "plain_net"', 'name = "timm:resnet50"'), "model.name", "needs the timm package")
    if importlib.util.find_spec("timm") is None else
    (GOOD.replace('name = "plain_net"', 'name = "timm:not_a_model_name_xyz"'), "model", "Unknown model"),
    (GOOD.replace('name = "plain_net"', 'name = "missing.py:net"'), "model.name", "model file not found"),
    (GOOD + '[sweep.grid]\n"model.args.depth" = []\n', "sweep.grid.model.args.depth", "non-empty list"),
    (GOOD + '[sweep.grid]\n"measure.samplez" = [1, 2]\n', "sweep.grid.measure.samplez", "unknown key"),
    (GOOD + '[sweep.grid]\n"measure.samples" = [1, -2]\n', "sweep.grid.measure.samples", "must be >= 1"),
    (GOOD + '[sweep.grid]\n"experiment.seed" = [1, 2]\n', "sweep.grid.experiment.seed", "cannot set 'experiment'"),
    (GOOD + '[[sweep.variants]]\nlabel = "a"\n[[sweep.variants]]\nlabel = "a"\n', "sweep.variants[1].label",
     "duplicate label"),
    (GOOD + '[[figures]]\nkind = "growth"\nx = "model.args.depth"\n', "figures[0].x", "is not swept"),
    (GOOD + '[[figures]]\nkind = "pie"\n', "figures[0].kind", "must be one of"),
    (GOOD + '[[figures]]\nkind = "bars"\nx = "variant"\nmetric = "sigma_z"\n', "figures[0].metric",
     "not in report.metrics"),
    (GOOD + '[report]\nmetrics = ["sigma_x", "wiggle"]\n', "report.metrics", "unknown metric 'wiggle'"),
    (GOOD + '[quick]\n"measure.sample" = 2\n', "quick.measure.sample", "unknown key"),
    (GOOD + '[quick]\n"sweep.grid.model.args.depth" = [2]\n', "quick.sweep.grid.model.args.depth", "not an axis"),
    (GOOD.replace("samples = 4", "samples = 4\nnormalize_draws = true"), "measure.normalize_draws", "needs 2 to 64"),
    (GOOD + '[train]\nenabled = true\ntask = "nonsense"\n', "train.task", "unknown task"),
    (GOOD.replace("samples = 4", 'layer = "layers.9"'), "measure.layer", "no layer named 'layers.9'"),
    (GOOD.replace("samples = 4", "unit = [30, 30]"), "measure.unit", "outside"),
    (GOOD.replace("depth = 3", 'depth = 3, activation = "swish"'), "model", "unknown activation 'swish'"),
    (GOOD.replace("[inputs]", '[inputs]\nkind = "images"\npath = "no/such/folder"'), "inputs.path", "not found"),
]


@pytest.mark.parametrize("text,key,reason", BAD, ids=[b[1] + ":" + b[2][:18] for b in BAD])
def test_bad_config_refused_before_any_work(tmp_path, capsys, text, key, reason):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    out = tmp_path / "results" / "t"
    code = main(["run", str(path), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"erf: error: {path}: {key}: "), err
    assert reason in err, err
    assert not (tmp_path / "results").exists()


def test_malformed_toml_names_line_and_column(tmp_path, capsys):
    path = tmp_path / "broken.toml"
    path.write_text('[experiment]\nname = "x"\n[model\nname = "plain_net"\n')
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"erf: error: {path}: ") and "malformed TOML" in err and "line 3" in err
    assert err.count("\n") == 1


def test_missing_file_and_cuda(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.toml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    path = tmp_path / "c.toml"
    path.write_text(GOOD)
    import torch

    if not torch.cuda.is_available():
        assert main(["run", str(path), "--device", "cuda", "--out", str(tmp_path / "o")]) == 2
        assert "no CUDA device" in capsys.readouterr().err
        assert not (tmp_path / "o").exists()


def test_config_error_is_one_line_for_library_users(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(GOOD.replace("samples = 4", "samples = -1"))
    with pytest.raises(ConfigError, match=r"c\.toml: measure\.samples: must be >= 1; got -1$"):
        load_config(path)


def test_measure_keys_are_the_engine_options():
    """Every [measure] key is a MeasureOptions field (or config-only), with the same default.

    A config's "unset" spellings ("", [], "all", "auto", 0) become the field's default None, so a
    new measurement option is added once, in MeasureOptions, and offered here under its name.
    """
    fields = {f.name: f for f in dataclasses.fields(MeasureOptions)}
    keys = SCHEMA["measure"]
    assert not set(CONFIG_ONLY) & set(fields) and set(CONFIG_ONLY) <= set(keys)
    assert set(keys) - set(CONFIG_ONLY) <= set(fields)
    defaults = {name: key.default for name, key in keys.items()}
    assert measure_keywords(defaults) == {name: fields[name].default for name in keys if name not in CONFIG_ONLY}
    for name, unset in UNSET.items():
        assert keys[name].default == unset and fields[name].default is None
    set_values = {**defaults, "layer": "features", "unit": [1, 2], "channel": 0, "preset": "luo", "tol": 0.05,
                  "max_samples": 128, "prefix_tokens": 1}
    kw = measure_keywords(set_values)
    assert kw["unit"] == (1, 2) and kw["channel"] == 0 and kw["tol"] == 0.05 and kw["max_samples"] == 128
    assert kw["prefix_tokens"] == 1 and kw["layer"] == "features" and kw["preset"] == "luo"
    assert measure_keywords({**set_values, "tol": 0.0})["max_samples"] is None  # a cap of adaptive runs only


def test_comparison_configs_replicate_networks_and_say_what_changed():
    for name in COMPARISONS:
        cfg = load_config(ROOT / "configs" / f"{name}.toml")
        assert cfg.settings["model"]["networks"] >= 8, name           # enough networks that 8 of 8 reach p < 0.05
        assert not cfg.settings["experiment"]["common_seeds"], name
        assert "issue 20" in cfg.settings["report"]["changes"].lower(), name
        assert load_config(ROOT / "configs" / f"{name}.toml", quick=True).settings["model"]["networks"] >= 2, name


def test_networks_must_be_positive():
    with pytest.raises(ConfigError, match="model.networks: must be >= 1"):
        parse_config(_toml(GOOD.replace('name = "plain_net"', 'name = "plain_net"\nnetworks = 0')), "t.toml")
