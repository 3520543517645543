"""Run folders survive damaged saves, kills during the final renames, a second run, a full or read-only disk."""

from __future__ import annotations

import errno
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from erf.cli import main
from erf.engine import accumulate as measure_accumulate
from erf.engine import measure
from erf.errors import ErfError
from erf.experiment import points, runfolder, runner
from erf.io import SEAL_BYTES, atomic_write, checksum_path, set_aside, verify, write_checksum
from erf.models import create_model

CONFIG = """
[experiment]
name = "tiny"
save_every = 0.0
[model]
name = "plain_net"
args = { width = 2, depth = 1 }
[inputs]
size = 8
[measure]
samples = 2
batch_size = 2
[sweep.grid]
"model.args.depth" = [1, 2, 3]
"""


def _config(folder: Path) -> Path:
    cfg = folder / "tiny.toml"
    cfg.write_text(CONFIG)
    return cfg


def _maps(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "maps.npz") as z:
        return {k: z[k] for k in z.files}


def _same_maps(a: Path, b: Path) -> None:
    ma, mb = _maps(a), _maps(b)
    assert sorted(ma) == sorted(mb)
    for k in ma:
        assert np.array_equal(ma[k], mb[k]), k


def _interrupt_after(monkeypatch, n: int):
    """Make the run stop (Ctrl-C) when point ``n`` (0-based) starts; return the real ``measure_point``."""
    real, calls = runner.measure_point, []

    def stops(*a, **k):
        calls.append(1)
        if len(calls) == n + 1:
            signal.raise_signal(signal.SIGINT)  # a real Ctrl-C (the CLI tells it from code raising)
        return real(*a, **k)

    monkeypatch.setattr(runner, "measure_point", stops)
    return real


def _leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A reference run, and a run folder stopped after two of its three points (copied by each test)."""
    root = tmp_path_factory.mktemp("faults")
    cfg = _config(root)
    assert main(["run", str(cfg), "--out", str(root / "ref"), "--quiet"]) == 0
    mp = pytest.MonkeyPatch()
    _interrupt_after(mp, 2)
    try:
        assert main(["run", str(cfg), "--out", str(root / "res" / "tiny"), "--quiet"]) == 130
    finally:
        mp.undo()
    partial = root / "res" / ".tiny.partial"
    assert sorted(p.name for p in (partial / "saved").glob("*.npz")) == ["p000.npz", "p001.npz"]
    return root, partial


def _copy(interrupted, tmp_path) -> tuple[Path, Path, Path]:
    root, partial = interrupted
    cfg = _config(tmp_path)
    shutil.copytree(partial, tmp_path / ".tiny.partial")
    return cfg, tmp_path / "tiny", root / "ref"


def _damage(path: Path, how: str, other: Path) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "flipped":
        flipped = bytearray(data)
        flipped[len(data) // 3] ^= 0xFF
        path.write_bytes(bytes(flipped))
    elif how == "junk":
        path.write_bytes(b"not a zip file at all " * 40)
    elif how == "altered":  # a valid save of another point: numpy reads it, only the checksum tells
        path.write_bytes(other.read_bytes())
    elif how == "no checksum":  # a valid zip without the checksum inside it (and none beside it)
        path.write_bytes(data[:-SEAL_BYTES - 2] + b"\0\0")
        checksum_path(path).unlink(missing_ok=True)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["flipped", "altered"])
def test_a_damaged_saved_measurement_is_set_aside_and_measured_again(interrupted, tmp_path, monkeypatch, capsys,
                                                                    how):
    cfg, out, ref = _copy(interrupted, tmp_path)
    saved = tmp_path / ".tiny.partial" / "saved"
    _damage(saved / "p001.npz", how, saved / "p000.npz")
    bad = (saved / "p001.npz").read_bytes()
    real, measured = points.measure, []
    monkeypatch.setattr(points, "measure", lambda *a, **k: measured.append(1) or real(*a, **k))
    capsys.readouterr()
    assert main(["run", str(cfg), "--out", str(out), "--resume", "--quiet"]) == 0
    assert len(measured) == 2  # p001 again and p002; the intact p000 was read back
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and "damaged" in err and "p001.npz" in err, err
    _same_maps(out, ref)  # measured again: the numbers of one uninterrupted run
    assert not (tmp_path / ".tiny.partial").exists()
    assert _leftovers(tmp_path, "tiny") == []
    assert (out / "damaged" / "p001.npz").read_bytes() == bad  # never deleted: kept with the results


@pytest.mark.parametrize("how", ["truncated", "empty", "flipped", "junk", "altered", "no checksum"])
def test_every_kind_of_damaged_save_is_found_and_kept(interrupted, tmp_path, capsys, how):
    cfg, out, _ = _copy(interrupted, tmp_path)
    partial = tmp_path / ".tiny.partial"
    _damage(partial / "saved" / "p000.npz", how, partial / "saved" / "p001.npz")
    bad = (partial / "saved" / "p000.npz").read_bytes()
    folder = runfolder.RunFolder(out, {})
    assert folder.done() == {"p001"}
    assert (partial / "damaged" / "p000.npz").read_bytes() == bad  # set aside, byte for byte
    assert (partial / "saved" / "p001.npz").is_file()  # the intact save stays
    assert "damaged" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("how", ["truncated", "empty", "flipped", "junk", "altered", "no checksum"])
def test_a_damaged_engine_save_restarts_that_measurement(tmp_path, monkeypatch, capsys, how):
    model = create_model("plain_net", depth=2, width=2)
    kw = dict(samples=8, batch_size=2, seed=3)
    ref = measure(model, 8, **kw)
    state = tmp_path / "m.state"
    real, calls = measure_accumulate.Accumulator.run, []

    def dies(self, *a):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, *a)

    monkeypatch.setattr(measure_accumulate.Accumulator, "run", dies)
    with pytest.raises(KeyboardInterrupt):
        measure(model, 8, state_file=state, save_every=0, **kw)
    monkeypatch.setattr(measure_accumulate.Accumulator, "run", real)
    assert verify(state) is None
    other = tmp_path / "other.state"
    measure(model, 8, state_file=other, save_every=0, samples=4, batch_size=2, seed=9)  # a valid save, other numbers
    _damage(state, how, other)
    res = measure(model, 8, state_file=state, save_every=0, **kw)
    assert np.array_equal(res.map, ref.map)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "damaged" in err and "Traceback" not in err
    assert (tmp_path / "damaged" / "m.state").is_file()


@pytest.mark.slow
def test_an_erf_error_keeps_the_finished_measurements(tmp_path, monkeypatch, capsys):
    cfg, out = _config(tmp_path), tmp_path / "o"
    real, calls = runner.measure_point, []

    def fails(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise ErfError("training diverged at step 3")
        return real(*a, **k)

    monkeypatch.setattr(runner, "measure_point", fails)
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "diverged" in err and "--resume" in err
    assert [p.name for p in (tmp_path / ".o.partial" / "saved").glob("*.npz")] == ["p000.npz"]


def _run_twice(tmp_path):
    """Older results (seed 1) where a new run (seed 2) goes."""
    cfg, out = _config(tmp_path), tmp_path / "tiny"
    out.mkdir()
    (out / "summary.json").write_text(json.dumps({"seed": 1, "versions": {"erf": "0.1.0"}}))  # an older erf's
    return cfg, out


# the steps of the end of a run, in order: (function patched, which call of it stops)
FINAL_STEPS = [("marker", 1), ("rename", 1), ("rename", 2), ("rename", 3), ("rmtree", 1)]


@pytest.mark.slow
@pytest.mark.parametrize("step,nth,then", [(*s, "--resume") for s in FINAL_STEPS]
                         + [("rename", 2, "plain"), ("rename", 3, "plain"), ("marker", 1, "plain")])
def test_a_kill_during_the_final_renames_loses_nothing_and_leaves_nothing(tmp_path, monkeypatch, capsys, step,
                                                                           nth, then):
    cfg, out = _run_twice(tmp_path)
    calls = []

    def stop(real):
        def f(*a, **k):
            calls.append(1)
            if len(calls) == nth:
                signal.raise_signal(signal.SIGINT)  # a real Ctrl-C (the CLI tells it from code raising)
            return real(*a, **k)
        return f

    target = {"marker": (runfolder, "fsync_tree"), "rename": (runfolder.os, "rename"),
              "rmtree": (runfolder.shutil, "rmtree")}[step]
    real_finish = runfolder.RunFolder.finish

    def finish(self):  # the patch applies to the final step only
        monkeypatch.setattr(*target, stop(getattr(*target)))
        try:
            real_finish(self)
        finally:
            monkeypatch.undo()

    monkeypatch.setattr(runfolder.RunFolder, "finish", finish)
    assert main(["run", str(cfg), "--out", str(out), "--seed", "2", "--quiet"]) == 130
    assert ("--resume" in capsys.readouterr().err) == (step != "rmtree")  # after the renames nothing is left to do
    words = ["--resume"] if then == "--resume" else []
    if step == "marker" and then == "plain":  # stopped before the run was complete: it asks for --resume
        assert main(["run", str(cfg), "--out", str(out), "--seed", "2", "--quiet"]) == 2
        words = ["--resume"]
    assert main(["run", str(cfg), "--out", str(out), "--seed", "2", "--quiet", *words]) == 0
    assert json.loads((out / "summary.json").read_text())["seed"] == 2  # the new results, whole
    assert _leftovers(tmp_path, "tiny") == []  # no .partial, .old-*, .done-*, .lock


def test_an_old_erf_rename_left_half_done_is_put_back(tmp_path):
    cfg, out = _run_twice(tmp_path)
    old = tmp_path / ".tiny.old-abc123"
    old.mkdir()
    os.rename(out, old / "results")  # an older erf killed between its two renames
    folder = runfolder.RunFolder(out, {})
    folder.recover()
    assert (out / "summary.json").is_file() and not old.exists()


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def _write_lock(path: Path, pid: int, host: str | None = None) -> None:
    path.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "command": "erf run x"}) + "\n")


def test_a_live_run_holds_its_lock_against_run_and_restart(interrupted, tmp_path, capsys):
    cfg, out, _ = _copy(interrupted, tmp_path)
    proc = _sleeper()
    try:
        _write_lock(tmp_path / ".tiny.lock", proc.pid)
        before = sorted(p.name for p in (tmp_path / ".tiny.partial" / "saved").iterdir())
        for extra in ([], ["--resume"], ["--restart"]):
            capsys.readouterr()
            assert main(["run", str(cfg), "--out", str(out), "--quiet", *extra]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and f"process {proc.pid}" in err, err
        assert sorted(p.name for p in (tmp_path / ".tiny.partial" / "saved").iterdir()) == before  # untouched
        _write_lock(tmp_path / ".tiny.lock", 4242, host="another-host.example")
        assert main(["run", str(cfg), "--out", str(out), "--quiet", "--resume"]) == 2
        assert "another-host.example" in capsys.readouterr().err
    finally:
        proc.kill()
        proc.wait()


def test_a_stale_lock_is_replaced(interrupted, tmp_path, capsys):
    cfg, out, ref = _copy(interrupted, tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a pid that no longer runs
    _write_lock(tmp_path / ".tiny.lock", proc.pid)
    assert main(["run", str(cfg), "--out", str(out), "--quiet", "--resume"]) == 0
    assert "stale lock" in capsys.readouterr().err
    _same_maps(out, ref)
    assert _leftovers(tmp_path, "tiny") == []


def test_the_hint_is_the_exact_command_that_resumes(tmp_path, monkeypatch, capsys):
    cfg = _config(tmp_path)
    out = tmp_path / "some where" / "out"
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what --deterministic sets, restored after
    real = _interrupt_after(monkeypatch, 1)
    args = ["run", str(cfg), "--quick", "--out", str(out), "--seed", "7", "--device", "cpu", "--deterministic"]
    assert main([*args, "--quiet"]) == 130
    hint = [line for line in capsys.readouterr().err.splitlines() if "go on with:" in line]
    assert len(hint) == 1
    command = shlex.split(hint[0].split("go on with: ", 1)[1])
    assert command == ["erf", *args, "--resume"]
    monkeypatch.setattr(runner, "measure_point", real)
    assert main([*command[1:], "--quiet"]) == 0
    assert json.loads((out / "summary.json").read_text())["seed"] == 7


def test_resume_with_nothing_to_resume_says_so(tmp_path, capsys):
    cfg, out = _config(tmp_path), tmp_path / "new" / "out"
    assert main(["run", str(cfg), "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no interrupted run" in err
    assert not (tmp_path / "new").exists()  # nothing created


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_keeps_the_saves(tmp_path, monkeypatch, capsys):
    cfg, out = _config(tmp_path), tmp_path / "o"
    real, calls = np.savez_compressed, []

    def full(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / ".o.partial" / "saved"))
        return real(*a, **k)

    monkeypatch.setattr(np, "savez_compressed", full)
    assert main(["run", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("erf: tiny:")]  # progress lines
    assert len(lines) == 1 and "No space left on device" in lines[0] and "Traceback" not in err
    saved = tmp_path / ".o.partial" / "saved"
    assert sorted(p.name for p in saved.iterdir()) == ["p000.npz"]  # its checksum inside; no temporary file left
    monkeypatch.undo()
    command = shlex.split(lines[0].split("go on with: ", 1)[1])
    assert main([*command[1:], "--quiet"]) == 0 and (out / "summary.json").is_file()


def test_a_read_only_or_impossible_destination_is_one_line(tmp_path, monkeypatch, capsys):
    cfg = _config(tmp_path)
    (tmp_path / "afile").write_text("x")
    assert main(["run", str(cfg), "--out", str(tmp_path / "afile" / "o")]) == 2
    assert capsys.readouterr().err.count("\n") == 1

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(runfolder.tempfile, "mkstemp", read_only)
    assert main(["run", str(cfg), "--out", str(tmp_path / "ro" / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Read-only file system" in err
    assert not (tmp_path / "ro").exists()


def test_atomic_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    atomic_write(path, lambda f: Path(f).write_text("old"), checksum=True)
    assert verify(path) is None
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(OSError):
        atomic_write(path, lambda f: Path(f).write_text("new"))
    monkeypatch.undo()
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "a.txt.sha256"]
    path.write_text("olD")
    assert "checksum mismatch" in verify(path)
    write_checksum(path)
    moved = set_aside(path, tmp_path / "damaged")
    assert moved.read_text() == "olD" and checksum_path(moved).is_file() and not path.exists()


def test_a_file_named_damaged_beside_a_damaged_save(interrupted, tmp_path, capsys):
    """Issue 19: a file called 'damaged' in the run folder made setting a damaged save aside fail."""
    cfg, out, ref = _copy(interrupted, tmp_path)
    partial = tmp_path / ".tiny.partial"
    (partial / "damaged").write_text("a file, not a folder\n")
    _damage(partial / "saved" / "p000.npz", "flipped", partial / "saved" / "p001.npz")
    bad = (partial / "saved" / "p000.npz").read_bytes()
    assert runfolder.RunFolder(out, {}).done() == {"p001"}
    assert (partial / "damaged.1" / "p000.npz").read_bytes() == bad
    assert (partial / "damaged").read_text() == "a file, not a folder\n"
    assert "damaged" in capsys.readouterr().err
