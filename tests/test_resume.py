"""Killed runs resume from their last save with exactly the numbers of an uninterrupted run."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from erf.experiment import load_config, points, runner
from erf.engine import accumulate as measure_accumulate
from erf.cli import main
from erf.engine import measure
from erf.engine.resume import StateFile
from erf.errors import ErfError
from erf.models import create_model

CONFIG = """
[experiment]
name = "small"
save_every = 0.0
[model]
name = "plain_net"
args = {{ width = 4, depth = 2 }}
[inputs]
size = 20
[measure]
samples = {samples}
batch_size = 2
[sweep.grid]
"model.args.depth" = [2, 3, 4]
"""


def _write(tmp_path, samples=8) -> Path:
    cfg = tmp_path / "small.toml"
    cfg.write_text(CONFIG.format(samples=samples))
    return cfg


def _same_results(a: Path, b: Path) -> None:
    """Maps bit for bit, and every CSV column but the timing."""
    ma, mb = np.load(a / "maps.npz"), np.load(b / "maps.npz")
    assert sorted(ma.files) == sorted(mb.files)
    for k in ma.files:
        assert np.array_equal(ma[k], mb[k]), k
    ra, rb = (list(csv.DictReader(open(p / "sweep.csv"))) for p in (a, b))
    for x, y in zip(ra, rb):
        x.pop("seconds"), y.pop("seconds")
        assert x == y


@pytest.mark.slow
def test_engine_resumes_from_its_state_file_exactly(tmp_path, monkeypatch):
    model = create_model("plain_net", depth=3, width=4)
    kw = dict(samples=12, batch_size=3, weight_draws=2, init="kaiming_normal", seed=3)
    ref = measure(model, 20, **kw)
    state = tmp_path / "m.state"
    real, calls = measure_accumulate.Accumulator.run, []

    def dies(self, *a):  # a kill after the 6th batch (the 2nd batch of draw 1)
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt
        return real(self, *a)

    monkeypatch.setattr(measure_accumulate.Accumulator, "run", dies)
    with pytest.raises(KeyboardInterrupt):
        measure(model, 20, state_file=state, save_every=0, **kw)
    assert state.is_file()
    monkeypatch.setattr(measure_accumulate.Accumulator, "run", real)
    spy = []
    monkeypatch.setattr(measure_accumulate.Accumulator, "run", lambda self, p, x, *a: spy.append(len(x))
                        or real(self, p, x, *a))
    res = measure(model, 20, state_file=state, save_every=0, **kw)
    assert sum(spy) == 24 - 18  # only what the first run had not measured
    assert np.array_equal(res.map, ref.map) and np.array_equal(res.groups[0], ref.groups[0])
    assert res.samples == ref.samples == 24
    # a save from other settings is ignored, not mixed in
    other = measure(model, 20, state_file=state, save_every=0, **{**kw, "seed": 4})
    assert not np.array_equal(other.map, ref.map)


@pytest.mark.slow
def test_interrupted_run_keeps_its_saves_and_resumes(tmp_path, monkeypatch, capsys):
    cfg = _write(tmp_path)
    ref, out = tmp_path / "ref", tmp_path / "res" / "small"
    assert main(["run", str(cfg), "--out", str(ref)]) == 0
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    before = (out / "summary.json").read_text()
    real, calls = runner.measure_point, []

    def boom(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            signal.raise_signal(signal.SIGINT)  # a real Ctrl-C (the CLI tells it from code raising)
        return real(*args, **kw)

    monkeypatch.setattr(runner, "measure_point", boom)
    assert main(["run", str(cfg), "--out", str(out), "--seed", "5"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "--resume" in err
    partial = out.parent / ".small.partial"
    assert sorted(p.name for p in out.parent.iterdir()) == [".small.partial", "small"]
    assert len(list((partial / "saved").glob("*.npz"))) == 2
    assert (out / "summary.json").read_text() == before  # the old results are intact
    monkeypatch.setattr(runner, "measure_point", real)

    # a plain re-run refuses to drop the saves; other settings refuse to resume
    assert main(["run", str(cfg), "--out", str(out), "--seed", "5"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["run", str(cfg), "--out", str(out), "--seed", "6", "--resume"]) == 2
    assert "other settings" in capsys.readouterr().err
    calls.clear()
    monkeypatch.setattr(runner, "measure_point", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert main(["run", str(cfg), "--out", str(out), "--seed", "5", "--resume"]) == 0
    assert len(calls) == 3 and not partial.exists()  # two points read back from their saves
    monkeypatch.setattr(runner, "measure_point", real)
    fresh = tmp_path / "fresh"
    assert main(["run", str(cfg), "--out", str(fresh), "--seed", "5"]) == 0
    _same_results(out, fresh)
    assert json.loads((out / "summary.json").read_text())["seed"] == 5


@pytest.mark.slow
def test_crash_keeps_saves_but_an_erf_error_does_not(tmp_path, monkeypatch):
    cfg = _write(tmp_path)
    out, partial = tmp_path / "o", tmp_path / ".o.partial"
    real = runner.measure_point
    monkeypatch.setattr(runner, "measure_point", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("x")))
    with pytest.raises(RuntimeError):
        runner.run_experiment(load_config(str(cfg)), out=out)
    assert not out.exists() and partial.is_dir()  # a crash (a bug, OOM, a lost node) keeps the saves
    monkeypatch.setattr(runner, "measure_point", lambda *a, **k: (_ for _ in ()).throw(ErfError("bad model")))
    with pytest.raises(ErfError):
        runner.run_experiment(load_config(str(cfg)), out=out, resume=True)
    assert not out.exists() and not partial.exists()  # the same error would come back on resume
    monkeypatch.setattr(runner, "measure_point", real)
    assert main(["run", str(cfg), "--out", str(out)]) == 0 and not partial.exists()


@pytest.mark.slow
def test_sigkill_mid_measurement_then_resume_equals_one_run(tmp_path):
    """A real kill -9 of the CLI while it measures; --resume finishes with identical files."""
    cfg = _write(tmp_path, samples=200)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "erf.cli", "run", str(cfg), "--out"]
    out, ref = tmp_path / "killed", tmp_path / "ref"
    proc = subprocess.Popen(cmd + [str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    engine_saves = tmp_path / ".killed.partial" / "engine"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        saves = list(engine_saves.glob("p00[12].state")) if engine_saves.is_dir() else []
        if saves:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed: make the config longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # nothing that looks like results
    saved = sorted(p.name for p in (tmp_path / ".killed.partial" / "saved").glob("*.npz"))
    assert saved and "p002.npz" not in saved  # killed after at least one point, before the last
    done = subprocess.run(cmd + [str(out), "--resume"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert subprocess.run(cmd + [str(ref)], env=env, capture_output=True).returncode == 0
    _same_results(out, ref)
    assert not (tmp_path / ".killed.partial").exists()


@pytest.mark.slow
@pytest.mark.parametrize("tol,kill_at", [(3e-3, 30), (1e-2, 6)])
def test_adaptive_run_resumes_exactly(tmp_path, monkeypatch, tol, kill_at):
    """With tol the groups merge as they grow: the save carries the group size and the stop rule goes on.

    tol 3e-3 runs to the cap (320 samples; killed after 116, groups merged past 64); tol 1e-2
    stops by the rule at 40 samples (killed after 20).
    """
    model = create_model("plain_net", depth=3, width=4, activation="relu")
    kw = dict(samples=8, batch_size=4, tol=tol, max_samples=320, group_size=1, seed=2)
    ref = measure(model, 20, **kw)
    real, calls = measure_accumulate.Accumulator.run, []

    def dies(self, *a):
        calls.append(1)
        if len(calls) == kill_at:
            raise KeyboardInterrupt
        return real(self, *a)

    monkeypatch.setattr(measure_accumulate.Accumulator, "run", dies)
    with pytest.raises(KeyboardInterrupt):
        measure(model, 20, state_file=tmp_path / "s", save_every=0, **kw)
    monkeypatch.setattr(measure_accumulate.Accumulator, "run", real)
    res = measure(model, 20, state_file=tmp_path / "s", save_every=0, **kw)
    assert res.samples == ref.samples > 4 * (kill_at - 1)
    assert np.array_equal(res.map, ref.map) and np.array_equal(res.groups[0], ref.groups[0])
    assert res.settings["group_size"] == ref.settings["group_size"]


TRAINING = """
[experiment]
name = "t"
[model]
name = "plain_net"
args = { width = 4, depth = 3, activation = "relu" }
[inputs]
size = 16
[measure]
samples = 4
[train]
enabled = true
task = "segmentation"
steps = 12
batch_size = 8
checkpoints = [4, 8]
"""


@pytest.mark.slow
def test_training_point_resumes_from_its_last_measured_step(tmp_path, monkeypatch):
    cfg = tmp_path / "t.toml"
    cfg.write_text(TRAINING)
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(ref)]) == 0
    real, measured = points.measure_state, []

    def dies_at_step_8(cfg, point, model, device, state, step, run, saved=False, **kw):
        if step == 8 and not saved:
            signal.raise_signal(signal.SIGINT)  # a real Ctrl-C (the CLI tells it from code raising)
        measured.append((step, saved))
        return real(cfg, point, model, device, state, step, run, saved, **kw)

    monkeypatch.setattr(points, "measure_state", dies_at_step_8)
    assert main(["run", str(cfg), "--out", str(out)]) == 130
    assert sorted(set(measured)) == [(0, False), (4, False)]  # each state once per probe kind
    monkeypatch.setattr(points, "measure_state", lambda *a, **k: measured.append((a[5], k.get("saved", False)))
                        or real(*a, **k))
    measured.clear()
    assert main(["run", str(cfg), "--out", str(out), "--resume"]) == 0
    assert sorted(set(m for m in measured if not m[1])) == [(8, False), (12, False)]  # training went on after 4
    assert sorted(set(m for m in measured if m[1])) == [(0, True), (4, True)]  # the states before: read back
    _same_results(out, ref)
    a, b = (json.loads((p / "summary.json").read_text())["points"] for p in (ref, out))
    trained_a, trained_b = a[-1]["train"], b[-1]["train"]  # the training info sits on the final state
    assert trained_a["train_loss"] == trained_b["train_loss"] and trained_a["eval"] == trained_b["eval"]


def _interrupted_state(tmp_path, monkeypatch, model, kw, after: int) -> Path:
    """An engine save left by a measurement killed just after its ``after``-th save (one save per batch)."""
    state = tmp_path / "m.state"
    real, calls = StateFile.save, []

    def dies(self, *a):
        real(self, *a)
        calls.append(1)
        if len(calls) == after:
            raise KeyboardInterrupt

    monkeypatch.setattr(StateFile, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        measure(model, 12, state_file=state, save_every=0, **kw)
    monkeypatch.setattr(StateFile, "save", real)
    return state


@pytest.mark.parametrize("after", [1, 3])  # 3: after the last batch, the resumed run measures nothing more
def test_a_resumed_measurement_keeps_every_diagnostic(tmp_path, monkeypatch, after):
    """Issue 19: a point resumed from its engine save lacked zero_grad_fraction (or counted only later samples)."""
    model = create_model("plain_net", depth=2, width=2, activation="relu")
    kw = dict(samples=6, batch_size=2, seed=5, normalize_samples=True)
    ref = measure(model, 12, **kw)
    state = _interrupted_state(tmp_path, monkeypatch, model, kw, after)
    res = measure(model, 12, state_file=state, save_every=0, **kw)
    assert res.diagnostics["zero_grad_fraction"] is not None
    assert res.diagnostics == ref.diagnostics
    assert np.array_equal(res.map, ref.map)


@pytest.mark.parametrize("how", ["swapped arrays", "past the end", "negative count"])
def test_an_engine_save_with_a_recomputed_checksum_but_wrong_content_is_set_aside(tmp_path, monkeypatch, capsys, how):
    from erf.io import atomic_write, save_npz, verify

    model = create_model("plain_net", depth=2, width=2)
    kw = dict(samples=6, batch_size=2, seed=5)
    ref = measure(model, 12, **kw)
    state = _interrupted_state(tmp_path, monkeypatch, model, kw, 2)
    with np.load(state) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    if how == "swapped arrays":
        arrays["total"], arrays["group_ids"] = arrays["group_ids"], arrays["total"]
    elif how == "past the end":
        meta["step"], meta["done"] = 7, 99
    else:
        arrays["group_counts"] = -arrays["group_counts"]
    arrays["meta"] = np.array(json.dumps(meta))
    atomic_write(state, lambda f: save_npz(f, arrays), sealed=True)  # a valid checksum over the bad content
    assert verify(state) is None
    capsys.readouterr()
    res = measure(model, 12, state_file=state, save_every=0, **kw)
    err = capsys.readouterr().err
    assert "damaged" in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert np.array_equal(res.map, ref.map)  # measured from the start
    assert (tmp_path / "damaged" / "m.state").is_file()
