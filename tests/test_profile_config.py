"""[profile] in experiment configs: every layer from shared passes at every point and state, checked before any work."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

import erf
from erf.cli import main as cli_main
from erf.engine.inputs import make_source
from erf.errors import ConfigError
from erf.experiment import check_models, load_config, run_experiment
from erf.experiment.points import measure_point
from erf.experiment.profiles import profile_lines
from erf.experiment.runfolder import RunFolder, fingerprint
from erf.models import load_model

BASE = """
[experiment]
name = "prof"
dtype = "float64"
device = "cpu"
seed = 3

[model]
name = "plain_net"
args = { depth = 3, width = 4, activation = "tanh" }

[inputs]
size = 16

[measure]
samples = 5
batch_size = 4
n_boot = 20
"""

PROFILE = """
[profile]
layers = ["layers.2", "layers.0", "layers.1"]
units = [[], [3, 4], []]
"""


def _write(tmp_path, text: str, name: str = "c.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _own_samples(k: int, n_targets: int, n: int, seed: int, shape=(1, 16, 16)) -> torch.Tensor:
    """Layer k's inputs in a shared pass of n_targets layers: input samples n_targets*j + k of draw 0."""
    src = make_source("gaussian", shape, torch.device("cpu"), torch.float64, None)
    return torch.cat([src(seed, 0, n_targets * j + k, 1) for j in range(n)])


def test_profile_run_end_to_end_equals_measure_of_each_layer_alone(tmp_path):
    cfg = load_config(_write(tmp_path, BASE + PROFILE))
    out = run_experiment(cfg, out=tmp_path / "out", quiet=True)
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["profile"]["rows"]
    assert [r["layer"] for r in rows] == ["layers.2", "layers.0", "layers.1"]  # the order given
    with open(out / "profile.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert [r["layer"] for r in csv_rows] == [r["layer"] for r in rows]
    assert (out / "profile.png").stat().st_size > 10_000
    assert "profile.png" in (out / "report.md").read_text()  # listed with the figures
    model = load_model("plain_net", {"depth": 3, "width": 4, "activation": "tanh"}, seed=3)
    for k, (name, unit) in enumerate([("layers.2", None), ("layers.0", (3, 4)), ("layers.1", None)]):
        alone = erf.measure(model, 16, layer=name, unit=unit, samples=5, batch_size=2, dtype="float64",
                            inputs=[_own_samples(k, 3, 5, seed=3)])
        row, csv_row = rows[k], csv_rows[k]
        assert row["samples"] == alone.samples == 5
        assert row["trf"] == list(alone.trf)
        assert row["unit"] == "(" + ", ".join(str(u) for u in alone.unit) + ")"
        np.testing.assert_allclose([row["erf_size_y"], row["erf_size_x"]], 2 * np.asarray(alone.sigma), rtol=1e-9)
        np.testing.assert_allclose(float(csv_row["erf_size_x"]), 2 * alone.sigma[1], rtol=1e-5)
        np.testing.assert_allclose(row["erf_trf_ratio_x"], alone.ratio[1], rtol=1e-9)


def test_profile_at_every_training_state_and_network(tmp_path):
    text = BASE.replace('[model]', '[model]\nnetworks = 2') + """
[train]
enabled = true
task = "segmentation"
steps = 3
batch_size = 4
checkpoints = [1]

[profile]
layers = ["layers.0", "layers.2"]
samples = 3
"""
    cfg = load_config(_write(tmp_path, text))
    out = run_experiment(cfg, out=tmp_path / "out", quiet=True)
    rows = json.loads((out / "summary.json").read_text())["profile"]["rows"]
    assert [(r["state"], r["layer"]) for r in rows] == [(s, l) for s in ("init", "step 1", "trained")
                                                       for l in ("layers.0", "layers.2")]
    assert all(r["networks"] == 2 and r["samples"] == 6 for r in rows)  # 3 samples x 2 networks
    assert all(r["erf_size_x_ci"] is not None for r in rows)  # an interval over the two networks
    before = {r["layer"]: r["erf_size_x"] for r in rows if r["state"] == "init"}
    after = {r["layer"]: r["erf_size_x"] for r in rows if r["state"] == "trained"}
    assert before != after  # trained weights are profiled, not the initial ones again


def test_a_config_without_profile_keeps_its_fingerprint(tmp_path):
    cfg = load_config(_write(tmp_path, BASE))
    assert all("profile" not in p for p in fingerprint(cfg, "cpu")["points"])
    with_prof = load_config(_write(tmp_path, BASE + PROFILE, "p.toml"))
    assert all("profile" in p for p in fingerprint(with_prof, "cpu")["points"])


@pytest.mark.parametrize("section, key", [
    ('[profile]\nlayers = "layers.0"', "profile.layers"),
    ('[profile]\nlayers = ["layers.0"]\nunits = [[1, 1], []]', "profile.units"),
    ('[profile]\nlayers = ["layers.0"]\nunits = [3]', "profile.units"),
    ('[profile]\nlayers = ["layers.0"]\nlayer = "x"', "profile.layer"),
    ('[profile]\nlayers = ["layers.0"]\nchannel = -1', "profile.channel"),
    ('[profile]\nlayers = ["layers.0"]\nsamples = -2', "profile.samples"),
    ('[profile]\nlayers = ["layers.0", "layers.0"]', "profile.layers"),
    ('[profile]\nunits = [[1, 1]]', "profile.layers"),
])
def test_bad_profile_keys_are_refused_by_the_config_check(tmp_path, section, key):
    path = _write(tmp_path, BASE + section)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert "\n" not in msg and f": {key}:" in msg


@pytest.mark.parametrize("section, key, words", [
    ('[profile]\nlayers = ["layers.0", "layres.1"]', "profile.layers[1]", "layers.1"),
    ('[profile]\nlayers = ["layers.0"]\nunits = [[16, 2]]', "profile.units[0]", "outside"),
    ('[profile]\nlayers = ["layers.0"]\nchannel = 4', "profile.channel", "0..3"),
])
def test_profile_layers_units_and_channels_are_traced_before_any_work(tmp_path, capsys, section, key, words):
    path = _write(tmp_path, BASE + section)
    cfg = load_config(path)
    with pytest.raises(ConfigError) as info:
        check_models(cfg)
    assert f": {key}:" in str(info.value) and words in str(info.value)
    assert cli_main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and key in err
    assert not (tmp_path / "out").exists()


def test_profile_lines_give_the_report_a_table_of_every_layer(tmp_path):
    cfg = load_config(_write(tmp_path, BASE + PROFILE))
    run = RunFolder(tmp_path / "dest", fingerprint(cfg, "cpu"))
    run.open(cfg, resume=False, restart=False)
    records = measure_point(cfg, cfg.points[0], "cpu", run)
    layers = records[0].profile
    assert [pl.layer for pl in layers] == ["layers.2", "layers.0", "layers.1"] and layers[1].unit == (3, 4)
    lines = profile_lines(cfg, records)
    table = [line for line in lines if line.startswith("| ") and "`layers." in line]
    assert len(table) == 3 and "| `layers.0` | 3x4 |" not in table[1]  # the unit is written as a unit
    assert "(3, 4)" in table[1] and f"{layers[1].record.metrics['erf_size_x']:.3g}"[:3] in table[1]
    assert profile_lines(load_config(_write(tmp_path, BASE, "plain.toml")), records) == []  # no [profile]: none


def test_quick_caps_the_profile_samples(tmp_path):
    path = _write(tmp_path, BASE + PROFILE + "samples = 100\n")
    assert load_config(path).settings["profile"]["samples"] == 100
    assert load_config(path, quick=True).points[0].settings["profile"]["samples"] == 32
