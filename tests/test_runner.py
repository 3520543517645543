"""Every shipped config runs in --quick mode and its results hold what the experiment claims.

Each config runs once (module fixture); the tests then check the files, summary.json, the CSV and
that the numbers are in the ranges the science predicts.
"""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from erf.cli import main
from erf.experiment import load_config, run_experiment

ROOT = Path(__file__).resolve().parents[1]
_RUNS: dict = {}


@pytest.fixture(scope="module")
def run_quick(tmp_path_factory):
    """``run_quick(name)`` -> results folder of ``configs/<name>.toml --quick`` (run once per module)."""

    def run(name):
        if name not in _RUNS:
            out = tmp_path_factory.mktemp("results") / name
            code = main(["run", str(ROOT / "configs" / f"{name}.toml"), "--quick", "--out", str(out)])
            assert code == 0
            _RUNS[name] = out
        return _RUNS[name]

    return run


def load(out: Path):
    summary = json.loads((out / "summary.json").read_text())
    rows = list(csv.DictReader(open(out / "sweep.csv")))
    return summary, rows


def points(summary, **where):
    return [p for p in summary["points"] if all(p.get(k) == v or p["params"].get(k) == v for k, v in where.items())]


def check_common(out: Path, n_figures: int):
    summary, rows = load(out)
    for key in ("experiment", "quick", "seed", "device", "versions", "config", "metrics", "findings", "points",
                "analyses", "figures"):
        assert key in summary, key
    assert summary["quick"] is True and summary["device"] in ("cpu", "cuda")
    assert set(summary["versions"]) >= {"erf", "torch", "numpy"}
    assert len(rows) == len(summary["points"]) and summary["findings"]
    for m in summary["metrics"]:
        assert m in rows[0] and f"{m}_lo" in rows[0] and f"{m}_hi" in rows[0]
    for p in summary["points"]:
        for m in summary["metrics"]:
            v, ci = p["metrics"][m], p["intervals"][m]
            assert v is not None and ci is not None and ci[0] <= ci[1]
    pngs = [f for f in summary["figures"]]
    assert len(pngs) >= n_figures
    for f in pngs:
        assert (out / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with np.load(out / "maps.npz") as z:
        assert {f"{p['id']}_map" for p in summary["points"]} <= set(z.files)
    report = (out / "report.md").read_text()
    assert "## What the numbers show" in report and "## Key numbers" in report and "quick" in report
    for f in pngs:
        assert f"({f})" in report
    assert not list(out.parent.glob(".*partial*"))
    return summary, rows


@pytest.mark.slow
def test_luo_fig1(run_quick):
    summary, rows = check_common(run_quick("luo_fig1"), 3)
    uniform = [t for t in summary["analyses"]["theory"] if t["exact"]]
    assert len(uniform) >= 4
    for t in uniform:                                     # uniform weights: sigma is the exact prediction
        assert t["measured_sigma"] == pytest.approx(t["theory_sigma"], rel=1e-5)
    weights = {r["weights"] for r in rows}
    assert weights == {"uniform weights", "random weights", "random + ReLU", "random + tanh", "random + sigmoid"}
    for w in weights:                                     # the ERF grows with depth in every row
        sizes = [float(r["erf_size_x"]) for r in rows if r["weights"] == w]
        assert sizes == sorted(sizes)
    assert "Uniform (constant 1/fan_in) weights" in summary["findings"][0]


@pytest.mark.slow
def test_luo_growth(run_quick):
    summary, rows = check_common(run_quick("luo_growth"), 2)
    (growth,) = [f for f in summary["analyses"]["figures"] if f["kind"] == "growth"]
    fits = {s["series"]: s for s in growth["series"]}
    uniform = fits["uniform weights, linear"]
    assert uniform["fit"]["exponent"] == pytest.approx(0.5, abs=2e-3)          # exact theory: sqrt(n)
    assert uniform["theory"] == pytest.approx(uniform["y"], rel=1e-5)
    for name in ("random weights, ReLU", "random weights, tanh"):
        b = fits[name]["fit"]["exponent"]
        assert 0.4 < b < 0.75, (name, b)                 # loose band for the quick sizes
        ratio = fits[name]["ratio"]
        assert all(a > b for a, b in zip(ratio, ratio[1:]))      # ERF/TRF falls with depth
        assert -0.75 < fits[name]["ratio_fit"]["exponent"] < -0.25
    assert "ERF/TRF" in (run_quick("luo_growth") / "report.md").read_text()


@pytest.mark.slow
def test_luo_subsample_dilation(run_quick):
    summary, rows = check_common(run_quick("luo_subsample_dilation"), 3)
    for weights in ("uniform weights", "random + ReLU"):
        size = {r["structure"]: float(r["erf_size_x"]) for r in rows if r["weights"] == weights}
        plain = size.pop("plain")
        assert all(v > 1.3 * plain for v in size.values()), size
    (bars,) = [f for f in summary["analyses"]["figures"] if f["kind"] == "bars"]
    assert all(r["ratio"] > 1 for r in bars["rows"] if r.get("ratio") is not None)
    exact = [t for t in summary["analyses"]["theory"] if t["exact"]]
    assert len(exact) == 6 and all(abs(t["relative_difference"]) < 1e-5 for t in exact)


@pytest.mark.slow
def test_plain_vs_residual(run_quick):
    out = run_quick("plain_vs_residual")
    summary, rows = check_common(out, 4)
    assert {(r["architecture"], r["state"]) for r in rows} == {
        (a, s) for a in ("plain", "residual") for s in ("init", "step 10", "trained")}
    trf = {r["architecture"]: (r["trf_y"], r["trf_x"]) for r in rows}
    assert trf["plain"] == trf["residual"] == ("25", "25")
    for p in points(summary, state="trained"):
        assert p["train"]["eval"] and (out / p["train"]["weights"]).is_file()
    (change,) = [f for f in summary["analyses"]["figures"] if f["kind"] == "training"]
    assert all("erf_size_x" in row["changes"] for row in change["rows"])


@pytest.mark.slow
def test_training_weights_measurable_again(run_quick):
    out = run_quick("training")
    summary, rows = check_common(out, 3)
    assert [(r["network"].split()[0], r["state"]) for r in rows] == [
        (n, s) for n in ("small_cnn", "plain_net") for s in ("init", "step 10", "trained")]
    assert [int(r["step"]) for r in rows] == [0, 10, 30] * 2
    first, last = summary["points"][0], summary["points"][2]
    assert first["metrics"]["erf_size_x"] != last["metrics"]["erf_size_x"]      # training changed the ERF
    assert "erf_size_x from" in " ".join(summary["findings"])
    weights = out / last["train"]["weights"]
    from erf.engine import measure
    from erf.models import load_model

    model = load_model("small_cnn", last["model"]["args"], str(weights))
    res = measure(model, 32, layer="features", samples=last["measure"]["samples"], device="cpu", crop=True)
    assert last["probe"] == "task" and last["noise_probe"] is not None          # probed on the task's images...
    noise = last["noise_probe"]["network_metrics"][0]["sigma_x"]                # ...and on the config's noise
    assert res.sigma[1] == pytest.approx(noise, rel=1e-6)                       # network 0's weights
    assert noise != last["network_metrics"][0]["sigma_x"]
    if _has_measure_cli():
        assert main(["measure", "small_cnn", "--layer", "features", "--input", "32", "--checkpoint", str(weights),
                     "--samples", "8", "--model-arg", "num_classes=4", "--device", "cpu"]) == 0


def _has_measure_cli():
    from erf.cli import build_parser

    return "measure" in build_parser()._subparsers._group_actions[0].choices


@pytest.mark.slow
def test_resnet_family(run_quick):
    summary, rows = check_common(run_quick("resnet_family"), 3)
    assert [r["model.name"] for r in rows] == ["resnet18", "resnet50"]
    for p in summary["points"]:
        assert p["clipped"] is True and p["trf"][0] > 64
        assert 0 < p["metrics"]["erf_trf_ratio_x"] < 1
    assert (run_quick("resnet_family") / "maps" / "p000.png").is_file()
    assert any("cut by the image" in f and "uniform map" in f for f in summary["findings"])


# --------------------------------------------------------------------------- atomic results

SMALL = """
[experiment]
name = "small"
[model]
name = "plain_net"
args = { width = 2, depth = 2 }
[inputs]
size = 16
[measure]
samples = 4
[sweep.grid]
"model.args.depth" = [1, 2, 3]
[[figures]]
kind = "grid"
cols = "model.args.depth"
"""


@pytest.mark.slow
def test_rerun_replaces_results_and_refuses_foreign_folder(tmp_path, capsys):
    cfg = tmp_path / "small.toml"
    cfg.write_text(SMALL)
    out = tmp_path / "small"
    assert main(["run", str(cfg), "--out", str(out), "--seed", "1"]) == 0
    first = json.loads((out / "summary.json").read_text())
    assert "## Changes from the previous version" not in (out / "report.md").read_text()  # nothing replaced
    assert main(["run", str(cfg), "--out", str(out), "--seed", "2"]) == 0
    assert json.loads((out / "summary.json").read_text())["seed"] == 2
    # the report measures what moved against the run it replaced: every map, previous -> now
    report = (out / "report.md").read_text()
    assert "## Changes from the previous version" in report
    now = json.loads((out / "summary.json").read_text())
    for old, new in zip(first["points"], now["points"]):
        a, b = old["metrics"]["sigma_x"], new["metrics"]["sigma_x"]
        row = next(line for line in report.splitlines() if line.startswith(f"| {new['label']} | sigma_x |"))
        assert row.endswith(f"| {(b - a) / a:+.0%} |"), row
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small", "small.toml"]
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main(["run", str(cfg), "--out", str(foreign)]) == 2
    assert "not an erf results folder" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep me"


@pytest.mark.slow
def test_summary_is_strict_json_and_csv_has_intervals(tmp_path):
    cfg = tmp_path / "small.toml"
    cfg.write_text(SMALL)
    out = run_experiment(load_config(cfg), out=tmp_path / "o")
    summary = json.loads((out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert summary["device"] == "cpu" and summary["seed"] == 0
    rows = list(csv.DictReader(open(out / "sweep.csv")))
    assert [r["model.args.depth"] for r in rows] == ["1", "2", "3"]
    for r in rows:
        lo, v, hi = float(r["sigma_x_lo"]), float(r["sigma_x"]), float(r["sigma_x_hi"])
        assert lo <= v + 1e-9 and v <= hi + 1e-9 and math.isfinite(float(r["theory_sigma_x"]))


@pytest.mark.slow
def test_local_images_as_probes_and_training_data(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "toy.npz"
    np.savez(data, x=rng.integers(0, 255, (12, 20, 20), dtype=np.uint8), y=np.arange(12) % 2)
    cfg = tmp_path / "img.toml"
    cfg.write_text(f"""
[experiment]
name = "img"
[model]
name = "plain_net"
args = {{ width = 2, depth = 3, activation = "relu" }}
[inputs]
kind = "images"
path = "{data}"
size = 16
count = 10
[measure]
samples = 6
[train]
enabled = true
task = "{data}"
steps = 3
batch_size = 4
[[figures]]
kind = "training"
""")
    out = run_experiment(load_config(cfg), out=tmp_path / "o")
    summary = json.loads((out / "summary.json").read_text())
    assert [p["state"] for p in summary["points"]] == ["init", "trained"]
    assert summary["points"][0]["inputs"]["kind"] == "images" and summary["points"][0]["samples"] == 6
    assert "images" in summary["points"][-1]["train"]["task"]
    assert (out / summary["points"][-1]["train"]["weights"]).is_file()


@pytest.mark.slow
def test_a_model_the_tracer_cannot_follow_runs_without_a_trf(tmp_path):
    """As with erf measure: an op with no RF rule leaves the TRF unknown, not the run refused."""
    (tmp_path / "spectral.py").write_text(
        "import torch, torch.nn as nn\nclass M(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.conv = nn.Conv2d(1, 2, 3, padding=1)\n    def forward(self, x):\n"
        "        return torch.fft.fft2(self.conv(x)).abs()\ndef make():\n    return M()\n")
    cfg = tmp_path / "f.toml"
    cfg.write_text(f'[experiment]\nname = "f"\n[model]\nname = "{tmp_path}/spectral.py:make"\n'
                   '[inputs]\nsize = 8\n[measure]\nsamples = 4\n')
    assert main(["run", str(cfg), "--out", str(tmp_path / "f")]) == 0
    point = json.loads((tmp_path / "f" / "summary.json").read_text())["points"][0]
    assert point["trf"] is None and point["samples"] == 4
    assert any("fft" in n for n in point["notes"])


# --------------------------------------------------------------------------- networks as replicates (issue 11)

NETS = """
[experiment]
name = "nets"
title = "nets ({model.args.width} channels)"
[model]
name = "plain_net"
networks = 3
args = { width = 4, depth = 3, activation = "relu" }
[inputs]
size = 16
[measure]
samples = 8
n_boot = 200
[[sweep.variants]]
axis = "arch"
label = "a"
"model.args.depth" = 3
[[sweep.variants]]
axis = "arch"
label = "b"
"model.args.depth" = 4
[[figures]]
kind = "bars"
x = "arch"
series = ""
metric = "erf_size_x"
[quick]
"model.args.width" = 2
"""


@pytest.mark.slow
def test_networks_are_the_unit_of_replication(tmp_path):
    cfg = tmp_path / "nets.toml"
    cfg.write_text(NETS)
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--device", "cpu", "--quick"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    a, b = summary["points"]
    assert a["networks"] == b["networks"] == 3 and len(a["network_metrics"]) == 3
    sizes = [n["erf_size_x"] for n in a["network_metrics"]]
    assert len(set(sizes)) == 3                              # three independently seeded networks
    assert min(sizes) <= a["metrics"]["erf_size_x"] <= max(sizes)
    lo, hi = a["intervals"]["erf_size_x"]
    assert lo < hi
    (bars,) = [f for f in summary["analyses"]["figures"] if f["kind"] == "bars"]
    row = [r for r in bars["rows"] if r.get("ratio") is not None][0]
    assert row["networks"] == 3 and not row["paired"] and row["ratio_interval"] is not None
    report = (out / "report.md").read_text()
    assert report.startswith("# nets (2 channels)")          # the title from the settings run (quick width)
    assert "x 3 networks" in report and "over 3 independent networks per arm" in report
    assert "of 9 cross-arm pairs of networks" in report and "Mann-Whitney p =" in report   # k of n, exact p
    assert "mass radius 0.5" in report and "uniform map over each TRF box" in report       # robust size, saturation
    assert a["saturation"]["uniform"]["sigma_x"] > 0 and "saturated" in a["saturation"]
    assert row["count"]["n"] == 9 and 0 < row["count"]["p"] <= 1 and row["bootstrap_interval"] is not None
    nm = [n["erf_size_x"] for n in a["network_metrics"]]
    lo_t, hi_t = np.exp(np.mean(np.log(nm)) + np.array([-1, 1]) * 4.303 * np.std(np.log(nm), ddof=1) / 3 ** 0.5)
    assert hi - lo > 0.3 * (hi_t - lo_t)               # a t-width interval over 3 networks, not the input spread


@pytest.mark.slow
def test_one_network_per_arm_gets_no_verdict(tmp_path):
    cfg = tmp_path / "one.toml"
    cfg.write_text(NETS.replace("networks = 3", "networks = 1"))
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--device", "cpu"]) == 0
    findings = " ".join(json.loads((out / "summary.json").read_text())["findings"])
    assert "one network per arm" in findings and "excludes 1" not in findings


def test_network_seeds_independent_unless_common():
    from erf.experiment.points import network_seed

    cfg = load_config(ROOT / "configs" / "plain_vs_residual.toml")
    p, q = cfg.points
    assert network_seed(cfg, p, 0) != network_seed(cfg, q, 0) and network_seed(cfg, p, 0) != network_seed(cfg, p, 1)
    cfg.settings["experiment"]["common_seeds"] = True
    assert network_seed(cfg, p, 1) == network_seed(cfg, q, 1)


def test_paired_ratio_and_exponent_replicates():
    from erf import stats
    from erf.experiment.records import interval

    rng = np.random.default_rng(0)
    b = rng.lognormal(0, 0.3, 2000)
    ratio = stats.replicate_ratio_interval
    assert ratio(2 * b, b, 0.95, 5) == pytest.approx((2.0, 2.0))              # paired: the noise cancels
    indep = ratio(2 * rng.permutation(b), b, 0.95, 5)
    assert indep[0] < 1.7 and indep[1] > 2.3                                  # independent arms: it does not
    assert interval(b, 0.95, 1) is None and ratio(b, b, 0.95, 1) is None     # one network: no interval
    xs = [4, 8, 16, 32]
    reps = np.stack([np.full(10, x ** 0.5435) * rng.lognormal(0, 0.01, 10) for x in xs], axis=1)
    fit = stats.power_law_interval(xs, [x ** 0.5435 for x in xs], reps, 0.95, 5)
    assert fit.exponent == pytest.approx(0.5435) and fit.exponent_ci[0] < 0.5435 < fit.exponent_ci[1]
    assert fit.exponent_ci[1] - fit.exponent_ci[0] < 0.05


def test_training_that_did_not_learn_draws_no_conclusion():
    from erf.experiment.analysis import learned

    flat = {"eval": [{"accuracy": 0.874, "loss": 0.12}, {"accuracy": 0.874, "loss": 0.33}]}
    up = {"eval": [{"accuracy": 0.25, "loss": 1.4}, {"accuracy": 0.9, "loss": 0.3}]}
    assert learned({**flat, "networks": [flat]}) is False
    assert learned({**up, "networks": [up, flat]}) is False              # one network of several did not learn
    assert learned({**up, "networks": [up, up]}) is True and learned(None) is None
    barely = {"eval": [{"accuracy": 0.25, "loss": 1.4}, {"accuracy": 0.273, "loss": 1.3}]}  # 4 classes: chance
    assert learned({**barely, "networks": [barely]}) is False


def test_setup_line_per_variant_and_abs_theory():
    from erf.experiment.formatting import setup_line
    from erf.experiment.records import abs_theory

    cfg = load_config(ROOT / "configs" / "luo_subsample_dilation.toml")

    class R:  # the two fields setup_line reads
        def __init__(self, point):
            self.point = point

    line = setup_line(cfg, [R(p) for p in cfg.points], {"device": "cpu"})
    assert "2 samples x 1 weight draw (uniform weights)" in line and "8 samples x 16 weight draws (random + ReLU)" in line
    g = load_config(ROOT / "configs" / "luo_growth.toml")
    linear = [p for p in g.points if p.variants["weights"] == "random weights, linear"]
    sig = [abs_theory(p.settings)[1] for p in linear]
    slope = np.polyfit(np.log([p.params["model.args.depth"] for p in linear]), np.log(sig), 1)[0]
    assert 0.53 < slope < 0.56                                             # the exact finite-depth exponent, not 0.5
    assert abs_theory([p for p in g.points if p.variants["weights"] == "random weights, ReLU"][0].settings) is None


def test_an_experiment_reports_the_strict_trf_of_attention(tmp_path):
    """A ViT token's TRF is the whole image (the engine's rf_local, its patch, is only the spatial path):
    the record's TRF, ratio, uniform-map reference and saturation are over the whole image."""
    cfg = tmp_path / "vit.toml"
    cfg.write_text("""
[experiment]
name = "vit"
[model]
name = "vit"
args = { img_size = 16, patch_size = 4, embed_dim = 16, depth = 1, num_heads = 2, num_classes = 2 }
[inputs]
size = 16
[measure]
samples = 4
layer = "blocks.0"
""")
    out = run_experiment(load_config(cfg), out=tmp_path / "o")
    p = json.loads((out / "summary.json").read_text())["points"][0]
    assert p["trf"] == [16, 16] and p["trf_box"] == [[0, 15], [0, 15]]
    assert p["metrics"]["erf_trf_ratio_x"] == pytest.approx(p["metrics"]["erf_size_x"] / 16)
    assert any("rf_local) is 4x4" in n for n in p["notes"]), p["notes"]
    sat = p["saturation"]
    assert sat["region"] == [[0, 15], [0, 15]] and sat["vs_uniform"]["sigma_x"] <= 1.0


def test_a_dead_network_is_noted_not_a_crash(tmp_path):
    """One network whose unit does not depend on the input (all-zero map) gets no metrics and a note; the run
    finishes, the pooled map and the counts hold the live networks (seen in dense_unet: one network died)."""
    (tmp_path / "dead.py").write_text(
        "import torch, torch.nn as nn\n"
        "def make():\n"
        "    m = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 1, 3, padding=1))\n"
        "    if torch.initial_seed() % 3 == 1:  # the network built with this seed is dead\n"
        "        nn.init.zeros_(m[2].weight)\n"
        "    return m\n")
    cfg = tmp_path / "d.toml"
    cfg.write_text(f'[experiment]\nname = "d"\n[model]\nname = "{tmp_path}/dead.py:make"\nnetworks = 3\n'
                   '[inputs]\nsize = 12\n[measure]\nsamples = 4\ninit = "model"\n')
    out = run_experiment(load_config(cfg), out=tmp_path / "o")
    p = json.loads((out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(c))["points"][0]
    dead = [k for k, n in enumerate(p["network_metrics"]) if n["sigma_x"] is None]
    assert len(dead) >= 1 and len(dead) < 3, p["network_metrics"]
    assert any(f"network {dead[0]} of 3 has no ERF metrics" in n for n in p["notes"]), p["notes"]
    assert p["metrics"]["sigma_x"] > 0


def test_code_version_counts_code_not_earlier_results(tmp_path):
    """A report's "with uncommitted changes" is about the code: result files an earlier run replaced in the same
    checkout do not count (four shipped reports said it for that reason alone)."""
    import subprocess

    from erf.experiment.writers import code_version

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    (tmp_path / "erf").mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "erf" / "x.py").write_text("a = 1\n")
    (tmp_path / "results" / "r.md").write_text("old\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "c")
    clean = code_version(tmp_path)
    assert len(clean["commit"]) == 40 and clean["dirty"] is False
    (tmp_path / "results" / "r.md").write_text("new\n")
    assert code_version(tmp_path)["dirty"] is False
    (tmp_path / "erf" / "x.py").write_text("a = 2\n")
    assert code_version(tmp_path)["dirty"] is True
