"""One progress bar over a run: lines in logs, forwarding from loops, --quiet."""

from __future__ import annotations

import io
import tomllib

import pytest

from erf import progress
from erf.cli import main
from erf.experiment import parse_config, runner
from erf.models import create_model
from erf.training import make_task, train

CONFIG = """
[experiment]
name = "tiny"
[model]
name = "plain_net"
args = { width = 2, depth = 1 }
[inputs]
size = 8
[measure]
samples = 4
batch_size = 2
[sweep.grid]
"model.args.depth" = [1, 2]
"""


def test_lines_at_each_tenth_and_a_last_line():
    out = io.StringIO()
    bar = progress.Progress(100, "run", "samples", mode="lines", stream=out, first=0)
    for _ in range(100):
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 10  # 10%..90%, then the closing 100%
    assert lines[0].startswith("erf: run: 10/100 samples (10%)") and "left" in lines[0]
    assert lines[-1].startswith("erf: run: 100/100 samples (100%), done in")


def test_a_line_every_30_seconds_between_tenths(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    out = io.StringIO()
    bar = progress.Progress(1000, "run", mode="lines", stream=out)
    bar.update(1)
    assert out.getvalue() == ""  # nothing in the first seconds
    now[0] = progress.EVERY_S + 1
    bar.update(1)
    assert out.getvalue().startswith("erf: run: 2/1000 it (0%), 31 s, about")


def test_loops_forward_to_the_run_bar_and_parts_bound_them():
    with progress.run_progress(10, "run", enabled=False) as outer:
        with outer.part(4):
            inner = progress.progress_bar(100, enabled=True)
            assert isinstance(inner, progress.Progress) and inner.mode == "off"  # draws nothing itself
            inner.update(3)
            assert outer.n == 3
            inner.update(50)  # more than the part's share (an adaptive run): held at its end
            assert outer.n == 4
        with outer.part(6):
            pass  # a point read back from its save: the count jumps over it
        assert outer.n == 10
    assert progress.progress_bar(5).mode == "off"  # no run bar open, not enabled


def test_a_run_stopped_by_an_error_ends_on_the_error_not_a_progress_line(capsys):
    with pytest.raises(ValueError):
        with progress.run_progress(10, "run", enabled=True) as outer:
            outer.update(5)
            raise ValueError("boom")
    assert capsys.readouterr().err == ""


def test_training_steps_count_on_the_run_bar():
    model = create_model("plain_net", depth=2, width=2, activation="relu")
    task = make_task("segmentation", size=8, channels=1, seed=0)
    with progress.run_progress(100, enabled=False) as outer:
        train(model, task, steps=5, batch_size=2, eval_size=4)
    assert outer.n == 5


@pytest.mark.slow
def test_erf_run_reports_progress_in_logs_and_quiet_silences_it(tmp_path, capsys):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(CONFIG)
    assert main(["run", str(cfg), "--out", str(tmp_path / "a")]) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("erf: tiny:")]
    assert lines and lines[-1].startswith("erf: tiny: 8/8 samples (100%), done in")  # stderr is not a terminal
    assert "results written to" in captured.out
    assert main(["run", str(cfg), "--out", str(tmp_path / "b"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


@pytest.mark.parametrize("train_enabled", [False, True])
def test_point_work_counts_samples_and_steps(train_enabled):
    extra = '\n[train]\nenabled = true\ntask = "segmentation"\nsteps = 10\ncheckpoints = [5]\n' if train_enabled else ""
    cfg = parse_config(tomllib.loads(CONFIG + extra), "x.toml")
    works = [runner.point_work(p) for p in cfg.points]
    assert works == ([10 + 3 * 4] * 2 if train_enabled else [4, 4])  # steps + (0, 5, 10) x 4 samples
