"""A run deletes only files it wrote: its inputs, other tools' folders and full results are never replaced."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from erf.cli import main
from erf.experiment import runfolder
from erf.models import create_model

CONFIG = """
[experiment]
name = "own"
save_every = 0.0
[model]
name = "{model}"
{extra}
[inputs]
size = 8
{inputs}
[measure]
samples = 2
batch_size = 2
n_boot = 20
"""

NET = """
import torch.nn as nn

def make():
    return nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1))
"""


def _config(path: Path, model: str = "plain_net", extra: str = "args = { width = 2, depth = 1 }",
            inputs: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(CONFIG.format(model=model, extra=extra, inputs=inputs))
    return path


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _refused(capsys, argv, *needles) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


def _results(tmp_path: Path) -> Path:
    """A finished results folder (written by erf, with its manifest)."""
    out = tmp_path / "results" / "ins"
    assert main(["run", str(_config(tmp_path / "plain.toml")), "--out", str(out), "-q"]) == 0
    assert (out / runfolder.MANIFEST).is_file()
    return out


def test_manifest_lists_every_file_the_run_wrote(tmp_path):
    out = _results(tmp_path)
    manifest = json.loads((out / runfolder.MANIFEST).read_text())
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} - {runfolder.MANIFEST}
    assert set(manifest["files"]) == on_disk and {"summary.json", "maps.npz"} <= on_disk
    assert manifest["quick"] is False and manifest["experiment"] == "own"


def test_a_config_inside_the_results_folder_is_refused_and_kept(tmp_path, capsys, monkeypatch):
    out = _results(tmp_path)
    monkeypatch.chdir(tmp_path)
    cfg = _config(out / "my.toml")
    before = _tree(out)
    _refused(capsys, ["run", str(cfg), "--out", str(out), "-q"], "holds the config", "an input of this run")
    assert _tree(out) == before
    # the default destination of experiment 'own' is results/own: the config inside it is refused too
    cfg2 = _config(tmp_path / "results" / "own" / "my.toml")
    _refused(capsys, ["run", str(cfg2), "-q"], "holds the config")
    assert cfg2.is_file()


def test_checkpoint_model_file_and_images_inside_the_results_folder_are_refused(tmp_path, capsys, monkeypatch):
    out = _results(tmp_path)
    monkeypatch.chdir(tmp_path)
    (out / "weights").mkdir()
    torch.save(create_model("plain_net", width=2, depth=1).state_dict(), out / "weights" / "net.pt")
    (out / "net.py").write_text(NET)
    (out / "imgs").mkdir()
    np.save(out / "imgs.npy", np.random.default_rng(0).random((4, 3, 8, 8)).astype("float32"))
    before = _tree(out)
    cases = [
        (dict(extra=f'args = {{ width = 2, depth = 1 }}\ncheckpoint = "{out}/weights/net.pt"'), "model.checkpoint"),
        (dict(model=f"{out}/net.py:make", extra=""), "the model file"),
        (dict(inputs=f'kind = "images"\npath = "{out}/imgs.npy"'), "inputs.path"),
    ]
    for i, (kw, needle) in enumerate(cases):
        cfg = _config(tmp_path / f"c{i}.toml", **kw)
        _refused(capsys, ["run", str(cfg), "--out", str(out), "-q"], needle, "an input of this run")
    # --inputs on the command line, a glob below the folder
    _refused(capsys, ["run", str(_config(tmp_path / "g.toml")), "--out", str(out), "--inputs", f"{out}/*.npy", "-q"],
             "inputs.path")
    assert _tree(out) == before


def test_a_foreign_folder_with_summary_json_is_never_replaced(tmp_path, capsys):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "summary.json").write_text('{"accuracy": 0.9}\n')
    (precious / "thesis.tex").write_text("\\chapter{Results}\n")
    before = _tree(precious)
    cfg = _config(tmp_path / "c.toml")
    _refused(capsys, ["run", str(cfg), "--quick", "--out", str(precious), "-q"], "not an erf results folder")
    assert _tree(precious) == before
    assert main(["run", str(cfg), "--out", str(precious), "--check"]) == 0  # --check writes nothing
    assert _tree(precious) == before


def test_files_added_to_a_results_folder_are_kept(tmp_path, capsys, monkeypatch):
    out = _results(tmp_path)
    cfg = tmp_path / "plain.toml"
    (out / "notes.txt").write_text("my notes\n")
    _refused(capsys, ["run", str(cfg), "--out", str(out), "-q"], "notes.txt", "no erf run wrote")
    monkeypatch.chdir(out)
    _refused(capsys, ["run", str(cfg), "--out", ".", "-q"], "notes.txt")
    _refused(capsys, ["run", str(cfg), "--out", "sub/..", "-q"], "notes.txt")
    assert (out / "notes.txt").read_text() == "my notes\n"
    (out / "notes.txt").unlink()
    (out / "report.md").write_text("edited by hand\n")  # a file the run wrote, changed since
    _refused(capsys, ["run", str(cfg), "--out", str(out), "-q"], "report.md")
    assert (out / "report.md").read_text() == "edited by hand\n"


def test_a_results_folder_of_erf_alone_is_replaced(tmp_path):
    out = _results(tmp_path)
    (out / "summary.json").write_text((out / "summary.json").read_text())  # same bytes: still the run's
    assert main(["run", str(tmp_path / "plain.toml"), "--out", str(out), "-q"]) == 0
    assert json.loads((out / runfolder.MANIFEST).read_text())["experiment"] == "own"
    assert sorted(p.name for p in out.parent.iterdir()) == ["ins"]  # no .partial, lock or old copy left


def test_an_older_erf_results_folder_is_replaced_but_not_with_foreign_files(tmp_path, capsys):
    out = _results(tmp_path)
    (out / runfolder.MANIFEST).unlink()  # as an older erf left it: summary.json with erf's versions
    cfg = str(tmp_path / "plain.toml")
    assert main(["run", cfg, "--out", str(out), "-q"]) == 0
    (out / runfolder.MANIFEST).unlink()
    (out / "thesis.pdf").write_bytes(b"%PDF")
    _refused(capsys, ["run", cfg, "--out", str(out), "-q"], "thesis.pdf")
    assert (out / "thesis.pdf").read_bytes() == b"%PDF"


def test_quick_runs_never_write_over_full_results(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _config(tmp_path / "plain.toml")
    assert main(["run", str(cfg), "-q"]) == 0
    full = _tree(tmp_path / "results" / "own")
    assert main(["run", str(cfg), "--quick", "-q"]) == 0  # its own folder by default
    assert json.loads((tmp_path / "results" / "own-quick" / "summary.json").read_text())["quick"] is True
    _refused(capsys, ["run", str(cfg), "--quick", "--out", "results/own", "-q"], "full run", "own-quick")
    assert _tree(tmp_path / "results" / "own") == full


@pytest.mark.parametrize("out,needle", [("", "empty folder name"), ("/", "root folder")])
def test_impossible_out_names_are_one_line(tmp_path, capsys, monkeypatch, out, needle):
    monkeypatch.chdir(tmp_path)
    cfg = _config(tmp_path / "plain.toml")
    _refused(capsys, ["run", str(cfg), "--out", out, "-q"], needle)
    assert sorted(os.listdir(tmp_path)) == ["plain.toml"]


def test_dot_and_dotdot_outs_get_a_named_folder(tmp_path, monkeypatch):
    empty = tmp_path / "work" / "empty"
    empty.mkdir(parents=True)
    cfg = _config(tmp_path / "plain.toml")
    monkeypatch.chdir(empty)
    assert main(["run", str(cfg), "--out", "sub/..", "-q"]) == 0
    assert (empty / "summary.json").is_file()
    assert sorted(p.name for p in empty.parent.iterdir()) == ["empty"]  # no '..partial' or '.lock' left
