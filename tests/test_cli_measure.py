"""``erf measure``: JSON keys, files written, one-line errors with exit code 2."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from erf.cli import main
from erf.engine import ERFResult

BASE = ["measure", "plain_net", "--model-arg", "depth=3", "--model-arg", "width=4", "--input", "32", "--samples", "8"]


@pytest.mark.slow
def test_json_output_has_the_keys(capsys):
    assert main(BASE + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("sigma", "sigma_ci", "gaussian", "trf", "ratio", "samples", "seconds", "device", "clipped",
                "cropped", "unit", "layer", "metrics", "intervals"):
        assert key in out, key
    assert len(out["sigma"]) == 2 and len(out["sigma_ci"]) == 2 and len(out["sigma_ci"][0]) == 2
    assert out["trf"] == [7, 7] and out["samples"] == 8 and out["unit"] == [16, 16]
    assert out["clipped"] is False and out["cropped"] is True and out["device"] == "cpu"
    assert out["ratio"] == pytest.approx([2 * s / 7 for s in out["sigma"]])


@pytest.mark.slow
def test_summary_and_files(capsys, tmp_path):
    png, npz = tmp_path / "erf.png", tmp_path / "erf.npz"
    args = BASE + ["--model-arg", "activation=relu", "--unit", "2,30", "--plot", str(png), "--save", str(npz),
                   "--log-scale", "--no-crop", "--dtype", "float64"]
    assert main(args) == 0
    captured = capsys.readouterr()
    text = captured.out
    assert "sigma" in text and "TRF 7x7" in text and "clipped" in text
    # the wait after the bar says the intervals are being computed, and the time printed last is the call's
    err = captured.err
    assert "bootstrap intervals over 8 groups" in err
    call = float(re.search(r"the whole call took ([0-9.]+) s", err).group(1))
    samples = float(re.search(r"8 samples in ([0-9.]+) s", text).group(1))
    assert call >= samples
    assert png.stat().st_size > 0
    res = ERFResult.load(npz)
    assert res.unit == (2, 30) and res.clipped and not res.cropped and res.samples == 8
    assert res.settings["dtype"] == "float64" and np.isfinite(res.map).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["erf.npz", "erf.png"]


BAD = [
    ["--layer", "nope"],
    ["--unit", "40,3"],
    ["--unit", "1,2,3"],
    ["--samples", "0"],
    ["--init", "bogus"],
    ["--signal", "loud"],
    ["--preset", "nope"],
    ["--batch", "0"],
    ["--channel", "9"],
    ["--plot", "x.txt"],
    ["--max-samples", "10"],
    ["--normalize-draws"],
    ["--dtype", "float16"],
    ["--tol", "-1"],
]
if not torch.cuda.is_available():
    BAD.append(["--device", "cuda"])


@pytest.mark.parametrize("extra", BAD, ids=lambda a: " ".join(a))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(extra, capsys, tmp_path):
    files = ["--plot", str(tmp_path / "e.png"), "--save", str(tmp_path / "e.npz")]
    if extra[0] == "--plot":
        files = ["--save", str(tmp_path / "e.npz")]
    assert main(BASE + files + extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("erf: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_bad_command_line_is_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(BASE + ["--samples", "many"])
    assert info.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_every_measure_option_has_a_flag_or_a_reason_and_every_flag_an_option():
    import dataclasses

    from erf.cli import build_parser
    from erf.cli.measure import option_flags
    from erf.engine import MeasureOptions

    parser = build_parser(["measure"])
    measure_parser = parser._subparsers._group_actions[0].choices["measure"]
    flags = {s for a in measure_parser._actions for s in a.option_strings if s.startswith("--")}
    for f in dataclasses.fields(MeasureOptions):
        assert f.metadata["help"], f.name
        assert bool(f.metadata["flag"]) != bool(f.metadata["python_only"]), f.name  # a flag, or why not
        if f.metadata["flag"]:
            assert f.metadata["flag"] in flags, f.name
    not_options = {"--help", "--model-arg", "--pretrained", "--checkpoint", "--input", "--json", "--plot", "--log-scale", "--save", "--quiet"}
    assert flags - not_options == set(option_flags().values())
    assert set(MeasureOptions.field_names()) == {f.name for f in dataclasses.fields(MeasureOptions)}
