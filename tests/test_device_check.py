"""experiments/device_check.py: its CPU dry run runs every item it can and prints one status line per item."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("device_check", ROOT / "experiments" / "device_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_the_dry_run_prints_a_status_line_for_every_item(tmp_path, capsys):
    dc = load_script()
    rc = dc.main(["--dry-run", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    summary = out.split("SUMMARY\n", 1)[1].splitlines()
    assert len(summary) == len(dc.ITEMS)
    for name, line in zip(dc.ITEMS, summary):
        m = re.match(r"(PASS|FAIL|SKIP) (\w+) \(", line)
        assert m and m.group(2) == name, line
        assert f"[{name}] {m.group(1)}" in out
    status = {line.split()[1]: line.split()[0] for line in summary}
    # what the dry run can check on a CPU must hold
    for name in ("bench_plain_cone", "deterministic_repeat", "oom_backoff", "luo_fig1_full"):
        assert status[name] == "PASS", out
    assert status["pytest_gpu"] == "SKIP"
    assert rc == (1 if "FAIL" in status.values() else 0)
    data = json.loads((tmp_path / "engine_dryrun.json").read_text())
    assert data["meta"]["dry_run"] is True and len(data["rows"]) == 3 and len(data["plain"]) == 2
    assert "## Items" in (tmp_path / "engine_dryrun.md").read_text()


def test_every_item_has_a_function_and_the_budget_fits_8_minutes():
    dc = load_script()
    assert list(dc.ITEMS) == ["pytest_gpu", "pytest_timm_torchvision", "bench_resnet50", "bench_plain_cone",
                              "bf16_agreement", "deterministic_repeat", "oom_backoff", "luo_fig1_full"]
    assert dc.BUDGET_S < 8 * 60


def test_an_item_that_raises_is_a_fail_line_and_the_others_still_run(tmp_path, capsys, monkeypatch):
    dc = load_script()
    monkeypatch.setitem(dc.ITEMS, "pytest_gpu", lambda c: 1 / 0)
    rc = dc.main(["--dry-run", "--out", str(tmp_path), "--only", "pytest_gpu,pytest_timm_torchvision"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "FAIL pytest_gpu" in out and "ZeroDivisionError" in out and "SKIP pytest_timm_torchvision" in out
