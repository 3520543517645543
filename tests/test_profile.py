"""erf.profile (erf.engine.profile): every layer from shared passes, each map exactly erf.measure's on its samples."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

import erf
from erf.cli import main as cli_main
from erf.engine.inputs import make_source
from erf.engine.profile import measure_targets, profile
from erf.errors import ErfError


def staged_net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.GELU(),
        nn.MaxPool2d(3, stride=2, padding=1), nn.Conv2d(4, 4, 3, padding=2, dilation=2), nn.Tanh(),
        nn.Conv2d(4, 3, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    net(torch.zeros(1, 2, 32, 32))  # materialise the lazy head (after the profiled layers)
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    return net


def own_samples(k: int, n_targets: int, n: int, shape=(2, 32, 32), seed: int = 0) -> torch.Tensor:
    """Target k's inputs in a shared pass of n_targets targets: input samples n_targets*j + k of draw 0."""
    src = make_source("gaussian", shape, torch.device("cpu"), torch.float64, None)
    return torch.cat([src(seed, 0, n_targets * j + k, 1) for j in range(n)])


def test_each_layer_equals_measure_alone_on_the_same_samples_float64():
    net = staged_net()
    layers = ["7", "0", "8", "4"]  # any order: the profile sorts by depth
    n = 5
    prof = profile(net, 32, layers, samples=n, batch_size=4, dtype="float64", bn="as_is")
    assert prof.layers == ["0", "4", "7", "8"]
    worst = 0.0
    for k, name in enumerate(layers):  # target k of the shared pass is layers[k] (the order given)
        alone = erf.measure(net, 32, layer=name, samples=n, batch_size=3, dtype="float64", bn="as_is",
                            inputs=[own_samples(k, len(layers), n)])
        r = prof[name]
        assert r.samples == alone.samples == n and r.trf == alone.trf and r.unit == alone.unit
        err = np.abs(r.map - alone.map).max() / np.abs(alone.map).max()
        worst = max(worst, err)
        np.testing.assert_allclose(r.sigma, alone.sigma, rtol=1e-12)
    assert worst < 1e-12, worst


def test_one_layer_profile_is_measure_itself_with_calibrated_batchnorm():
    net = erf.create_model("residual_net", depth=4, width=4, activation="relu", norm="batch")
    prof = profile(net, 24, ["layers.0"], samples=6, batch_size=4, dtype="float64")
    alone = erf.measure(net, 24, layer="layers.0", samples=6, batch_size=4, dtype="float64", cone=False)
    assert any("bn=auto" in s for s in prof[0].notes) and any("bn=auto" in s for s in alone.notes)
    np.testing.assert_allclose(prof[0].map, alone.map, rtol=0, atol=1e-12 * np.abs(alone.map).max())
    assert prof[0].groups[0].shape == alone.groups[0].shape


def test_one_forward_per_batch_stopped_at_the_deepest_layer():
    net = staged_net()
    seen = {"deepest": [], "after": []}
    net[8].register_forward_hook(lambda m, i, o: seen["deepest"].append(o.shape[0]))
    net[11].register_forward_hook(lambda m, i, o: seen["after"].append(o.shape[0]))
    res = measure_targets(net, 32, [("0", None), ("8", None), ("4", (1, 2))], samples=7, batch_size=8,
                          bn="as_is")
    assert [r.samples for r in res] == [7, 7, 7] and res[2].unit == (1, 2)
    # 21 input samples in batches of 8: three passes to the deepest layer (the rest are one-input traces)
    assert [b for b in seen["deepest"] if b > 1] == [8, 8, 5]
    assert all(b == 1 for b in seen["after"])  # the sampling passes never run the head
    assert res[0].settings["shared"] == {"targets": 3, "index": 0, "input_samples_per_draw": 21}


def test_weight_draws_give_one_group_per_draw_for_every_layer():
    net = erf.create_model("plain_net", depth=4, width=3, activation="relu")
    prof = profile(net, 20, ["layers.1", "layers.3"], samples=4, weight_draws=3, init="kaiming_normal",
                   normalize_draws=True)
    for r in prof.results:
        assert r.samples == 12 and r.groups[0].shape[0] == 3
        np.testing.assert_allclose(r.groups[0].reshape(3, -1).sum(1), [4, 4, 4], rtol=1e-9)
    assert prof[1].sigma[0] > prof[0].sigma[0]  # deeper layer, larger ERF


def test_table_json_and_figure(tmp_path):
    net = erf.create_model("plain_net", depth=4, width=2, activation="linear", in_channels=1)
    prof = profile(net, 24, ["layers.3", "layers.1"], samples=2, init="constant")
    text = prof.table()
    assert text.splitlines()[0].startswith("layer") and "layers.1" in text and "layers.3" in text
    assert prof["layers.3"] is prof[1] and prof[prof[0].layer] is prof[0]
    rows = prof.rows()
    assert [r["trf"] for r in rows] == [[5, 5], [9, 9]] and rows[0]["jump"] == [1.0, 1.0]
    json.dumps(prof.to_dict())
    path = tmp_path / "profile.png"
    prof.plot(path)
    assert path.stat().st_size > 10_000


@pytest.mark.parametrize("kwargs,match", [
    (dict(layers="layers.1"), "list of layer names"),
    (dict(layers=[]), "at least one layer"),
    (dict(layers=["layers.1", "layers.1"]), "named twice"),
    (dict(layers=["layers.1"], layer="layers.2"), "drop layer="),
    (dict(layers=["layers.1"], tol=0.05), "drop tol"),
    (dict(layers=["layers.1"], state_file="x.npz"), "not resumable"),
    (dict(layers=["layers.9"]), "no layer named"),
])
def test_bad_input_is_one_line(kwargs, match):
    net = erf.create_model("plain_net", depth=3, width=2)
    with pytest.raises(ErfError, match=match) as info:
        profile(net, 16, samples=2, **kwargs)
    assert "\n" not in str(info.value)


def test_cli_profile_and_grid(capsys, tmp_path):
    base = ["profile", "plain_net", "--model-arg", "depth=4", "--model-arg", "width=2", "--input", "16",
            "--samples", "2", "--init", "constant", "-q"]
    assert cli_main(base + ["--layers", "layers.3,layers.1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [row["layer"] for row in out["layers"]] == ["layers.1.conv", "layers.3.conv"]  # traced names
    plot = tmp_path / "grid.png"
    assert cli_main(base + ["--layer", "layers.3", "--units", "grid", "--points", "3", "--plot", str(plot)]) == 0
    text = capsys.readouterr().out
    assert "9 units of layers.3" in text and plot.stat().st_size > 10_000
    assert cli_main(base) == 2
    assert "give --layers" in capsys.readouterr().err


class FunctionalNet(nn.Module):
    """Targets that are functional ops (relu, add) and the model output: the shared pass runs to the end."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        y = torch.relu(self.a(x))
        return torch.tanh(self.b(y) + y)


def test_functional_layers_and_the_output_equal_measure_alone():
    torch.manual_seed(1)
    net, names = FunctionalNet(), ["relu", "add", "a", None]
    prof = profile(net, 16, names, samples=3, dtype="float64")
    assert prof.layers == ["a", "relu", "add", "tanh"]
    for k, name in enumerate(names):
        alone = erf.measure(net, 16, layer=name, samples=3, dtype="float64",
                            inputs=[own_samples(k, len(names), 3, shape=(1, 16, 16))])
        np.testing.assert_allclose(prof[alone.layer].map, alone.map, rtol=0, atol=1e-12 * alone.map.max())
    with pytest.raises(ErfError, match="same layer and unit"):
        profile(net, 16, ["tanh", None], samples=1)


def test_dense_output_classes_and_positions_of_a_unet_equal_measure_alone():
    """Item 3: output pixels of chosen classes at chosen positions of a U-Net, with their position-dependent TRF."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    net = erf.load_model(f"{root / 'configs' / 'dense_unet.py'}:small_unet", {"width": 4})
    targets = [(None, (16, 16), 0), (None, (16, 16), 1), (None, (0, 0), 0), (None, (17, 17), 0)]
    res = measure_targets(net, 32, targets, samples=3, dtype="float64")
    for k, (_, unit, cls) in enumerate(targets):
        alone = erf.measure(net, 32, unit=unit, channel=cls, samples=3, dtype="float64",
                            inputs=[own_samples(k, len(targets), 3, shape=(1, 32, 32))])
        assert res[k].settings["channel"] == cls and res[k].trf_box_unclipped == alone.trf_box_unclipped
        np.testing.assert_allclose(res[k].map, alone.map, rtol=0, atol=1e-12 * alone.map.max())
    assert res[0].trf_box_unclipped == res[3].trf_box_unclipped  # one box for a 4 px period of positions
    assert not np.allclose(res[0].map, res[1].map)  # another class, another map
    with pytest.raises(ErfError, match="channel must be an integer"):
        measure_targets(net, 32, [(None, (1, 1), "cat")], samples=1)
