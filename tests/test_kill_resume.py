"""Resume is exact at every instant: kill -9 anywhere, then --resume, gives the results of one uninterrupted run.

The slow test kills real processes (SIGKILL) at random instants. To keep it near a minute, one helper
interpreter imports erf and torch once, then forks a child per run (the parent runs no torch op, so
the children start clean); each child runs ``erf run`` on a tiny config that saves after every batch.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from erf.cli import main
from erf.engine import forget_checks
from erf.experiment import runfolder, runner
from erf.io import SEAL_BYTES, atomic_write, save_npz, verify
from erf.models import create_model
from erf.training import make_task, train

CONFIG = """
[experiment]
name = "k"
save_every = 0.0
[model]
name = "plain_net"
args = { width = 2, depth = 1 }
{checkpoint}
[inputs]
size = 8
[measure]
samples = 4
batch_size = 1
n_boot = 20
[sweep.grid]
"model.args.depth" = [1, 2, 3]
"""

HELPER = textwrap.dedent(r'''
    import json, os, random, signal, sys, time
    from pathlib import Path
    import torch
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot, scipy.stats, torch.fx, PIL.Image  # imported once, before the forks
    import erf.experiment, erf.engine, erf.training, erf.models, erf.cli.run, erf.cli.measure
    from erf.cli import main

    root, n, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    cfg = str(root / "k.toml")

    def run(args, log, kill_after=None):
        pid = os.fork()
        if pid == 0:  # the child: one erf run, its stderr to a log
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 2); os.dup2(fd, 1)
            torch.set_num_threads(1)
            try:
                code = main(args)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                code = 99
            os._exit(code)
        if kill_after is not None:
            end = time.perf_counter() + kill_after
            while time.perf_counter() < end:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    return os.waitstatus_to_exitcode(status)
                time.sleep(0.002)
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)  # reaped: its lock is stale now
        return os.waitstatus_to_exitcode(status)

    t0 = time.perf_counter()
    assert run(["run", cfg, "--out", str(root / "ref"), "-q"], str(root / "ref.log")) == 0
    full = time.perf_counter() - t0
    rng = random.Random(seed)
    trials = []
    for i in range(n):
        dest, log = root / f"t{i:02d}" / "k", str(root / f"t{i:02d}.log")
        delay = rng.uniform(0.0, full)
        t1 = time.perf_counter()
        first = run(["run", cfg, "--out", str(dest), "-q"], log, kill_after=delay)
        if first == 0:  # it finished before the kill: runs are faster now (the load varies), aim earlier
            full = min(full, time.perf_counter() - t1)
        partial = dest.parent / ".k.partial"
        resumed = None
        if partial.exists():
            resumed = run(["run", cfg, "--out", str(dest), "-q", "--resume"], log)
        elif not (dest / "summary.json").is_file():
            resumed = run(["run", cfg, "--out", str(dest), "-q"], log)
        trials.append({"delay": delay, "first": first, "resumed": resumed, "partial": partial.exists(),
                       "log": Path(log).read_text() if os.path.exists(log) else "",
                       "left": sorted(p.name for p in dest.parent.iterdir() if p.name != "k")})
    print(json.dumps({"full": full, "trials": trials}))
''')


def _timeless(x):
    """``x`` without its timings (``seconds``, of the run and of each point)."""
    if isinstance(x, dict):
        return {k: _timeless(v) for k, v in x.items() if k != "seconds"}
    return [_timeless(v) for v in x] if isinstance(x, list) else x


def _summary(path: Path) -> dict:
    s = _timeless(json.loads((path / "summary.json").read_text()))
    s.pop("code_version")  # the working tree's commit: others may commit while the test runs
    return s


def _maps(path: Path) -> dict:
    with np.load(path / "maps.npz") as z:
        return {k: z[k] for k in z.files}


def _config(folder: Path, checkpoint: str = "") -> Path:
    cfg = folder / "k.toml"
    cfg.write_text(CONFIG.replace("{checkpoint}", checkpoint))
    return cfg


@pytest.mark.slow
def test_kill_at_50_random_instants_then_resume_equals_one_run(tmp_path):
    cfg = _config(tmp_path)
    cfg.write_text(cfg.read_text().replace("[1, 2, 3]", "[1, 2]"))  # two points, four engine saves each
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", HELPER, str(tmp_path), "50", "19"], capture_output=True, text=True,
                          timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"one run: {report['full']:.2f} s, killed: {sum(t['first'] == -9 for t in report['trials'])} of 50")
    ref, ref_maps = _summary(tmp_path / "ref"), _maps(tmp_path / "ref")
    killed = 0
    for i, trial in enumerate(report["trials"]):
        out = tmp_path / f"t{i:02d}" / "k"
        killed += trial["first"] == -9
        assert trial["resumed"] in (None, 0), trial
        assert "damaged" not in trial["log"] and "Traceback" not in trial["log"], trial  # no good save refused
        assert trial["left"] == [], trial  # no .partial, lock, temporary or old copy left
        assert _summary(out) == ref, trial
        maps = _maps(out)
        assert sorted(maps) == sorted(ref_maps) and all(np.array_equal(maps[k], ref_maps[k]) for k in maps), trial
    assert killed >= 25, [t["first"] for t in report["trials"]]  # most runs were really killed mid-way


def _interrupted(tmp_path, monkeypatch, cfg: Path, out: Path, after: int = 1) -> Path:
    """Stop a run (Ctrl-C) when point ``after`` starts; return its run folder."""
    real, calls = runner.measure_point, []

    def stops(*a, **k):
        calls.append(1)
        if len(calls) == after + 1:
            signal.raise_signal(signal.SIGINT)  # a real Ctrl-C (the CLI tells it from code raising)
        return real(*a, **k)

    monkeypatch.setattr(runner, "measure_point", stops)
    assert main(["run", str(cfg), "--out", str(out), "-q"]) == 130
    monkeypatch.setattr(runner, "measure_point", real)
    return out.parent / f".{out.name}.partial"


def test_a_save_carries_its_checksum_and_temporary_files_are_not_saves(tmp_path, monkeypatch, capsys):
    cfg, out = _config(tmp_path), tmp_path / "r" / "k"
    forget_checks()  # each run below starts as a fresh process would (its notes say so)
    partial = _interrupted(tmp_path, monkeypatch, cfg, out, after=1)
    saved = partial / "saved" / "p000.npz"
    assert verify(saved) is None and not list(partial.rglob("*.sha256"))  # the checksum is inside the file
    # a kill during the next save leaves its temporary file (a valid npz, named like a save)
    shutil.copy(saved, partial / "saved" / ".p001.k2j4x.npz")
    assert runfolder.RunFolder(out, {}).done() == {"p000"}
    capsys.readouterr()
    forget_checks()
    assert main(["run", str(cfg), "--out", str(out), "-q", "--resume"]) == 0
    assert "damaged" not in capsys.readouterr().err
    forget_checks()  # the crop/cone verdicts of this process: the notes of a fresh process
    assert main(["run", str(cfg), "--out", str(tmp_path / "ref"), "-q"]) == 0
    assert _summary(out) == _summary(tmp_path / "ref")


def test_every_atomic_write_instant_leaves_old_or_new_sealed_file(tmp_path, monkeypatch):
    """A kill at each step of a sealed write: the path holds the old save or the new one, each verified."""
    path = tmp_path / "s.npz"
    atomic_write(path, lambda f: save_npz(f, {"x": np.zeros(3)}), sealed=True)
    steps = ("replace", "fsync", "open")
    for step in steps:
        real = getattr(os, step)

        def dies(*a, _real=real, **k):
            raise KeyboardInterrupt

        monkeypatch.setattr(os, step, dies)
        with pytest.raises(KeyboardInterrupt):
            atomic_write(path, lambda f: save_npz(f, {"x": np.ones(3)}), sealed=True)
        monkeypatch.setattr(os, step, real)
        assert verify(path) is None
        with np.load(path) as z:
            assert np.array_equal(z["x"], np.zeros(3))
    atomic_write(path, lambda f: save_npz(f, {"x": np.ones(3)}), sealed=True)
    assert verify(path) is None and path.stat().st_size > SEAL_BYTES
    with np.load(path) as z:
        assert np.array_equal(z["x"], np.ones(3))


def _weights(seed: int) -> dict:
    torch.manual_seed(seed)
    return create_model("plain_net", width=2, depth=1).state_dict()


def test_a_changed_checkpoint_refuses_the_resume(tmp_path, monkeypatch, capsys):
    ckpt = tmp_path / "net.pt"
    torch.save(_weights(1), ckpt)
    cfg = _config(tmp_path, f'checkpoint = "{ckpt}"').read_text().replace(
        '"model.args.depth" = [1, 2, 3]', '"measure.samples" = [2, 3, 4]')
    (tmp_path / "k.toml").write_text(cfg)
    out = tmp_path / "r" / "k"
    partial = _interrupted(tmp_path, monkeypatch, tmp_path / "k.toml", out, after=1)
    assert len(json.loads((partial / "run.json").read_text())["inputs"][f"model.checkpoint {ckpt}"]) == 64
    original = ckpt.read_bytes()
    torch.save(_weights(2), ckpt)  # other weights
    capsys.readouterr()
    assert main(["run", str(tmp_path / "k.toml"), "--out", str(out), "-q", "--resume"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "model.checkpoint" in err and "changed" in err, err
    assert partial.is_dir()
    ckpt.write_bytes(original)
    assert main(["run", str(tmp_path / "k.toml"), "--out", str(out), "-q", "--resume"]) == 0
    # the config itself edited: refused the same way
    partial = _interrupted(tmp_path, monkeypatch, tmp_path / "k.toml", tmp_path / "r2" / "k", after=1)
    (tmp_path / "k.toml").write_text(cfg + "# a comment\n")
    assert main(["run", str(tmp_path / "k.toml"), "--out", str(tmp_path / "r2" / "k"), "-q", "--resume"]) == 2
    assert "the config changed" in capsys.readouterr().err


def test_run_json_records_the_input_digests(tmp_path, monkeypatch):
    images = tmp_path / "imgs.npy"
    np.save(images, np.random.default_rng(0).random((4, 3, 8, 8)).astype("float32"))
    (tmp_path / "k.toml").write_text(CONFIG.replace("{checkpoint}", "").replace(
        "size = 8\n", f'size = 8\nkind = "images"\npath = "{images}"\n'))
    partial = _interrupted(tmp_path, monkeypatch, tmp_path / "k.toml", tmp_path / "r" / "k", after=1)
    inputs = json.loads((partial / "run.json").read_text())["inputs"]
    assert set(inputs) == {"the config", f"inputs.path {images}"} and all(len(v) == 64 for v in inputs.values())


@pytest.mark.slow
def test_a_file_size_limit_leaves_a_resumable_run(tmp_path):
    cfg = _config(tmp_path)
    out = tmp_path / "u"

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (8 * 1024, 8 * 1024))

    cmd = [sys.executable, "-m", "erf.cli", "run", str(cfg), "--out", str(out), "-q"]
    done = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=limited, timeout=300)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "--resume" in done.stderr and "Traceback" not in done.stderr
    partial = tmp_path / ".u.partial"
    assert (partial / "run.json").is_file()
    assert main(["run", str(cfg), "--out", str(out), "-q", "--resume"]) == 0
    assert (out / "summary.json").is_file() and not partial.exists()


def test_a_damaged_training_save_is_set_aside_with_a_note(tmp_path, capsys):
    task = make_task("quadrant", size=8, channels=1, seed=0)
    state = tmp_path / "engine" / "p000.train"
    state.parent.mkdir()
    model = create_model("plain_net", width=4, depth=2)
    train(model, task, steps=2, batch_size=4, seed=0, checkpoint_every=[1], state_file=str(state))
    assert verify(state) is None  # sealed: its checksum inside
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF
    state.write_bytes(bytes(data))
    capsys.readouterr()
    model2 = create_model("plain_net", width=4, depth=2)
    train(model2, task, steps=2, batch_size=4, seed=0, checkpoint_every=[1], state_file=str(state))
    err = capsys.readouterr().err
    assert "training save" in err and "damaged" in err
    assert (tmp_path / "engine" / "damaged" / "p000.train").read_bytes() == bytes(data)


def test_a_lock_temporary_left_by_a_kill_is_removed_by_the_next_run(tmp_path):
    from erf.cli import main

    cfg = tmp_path / "k.toml"
    cfg.write_text('[experiment]\nname = "k"\n[model]\nname = "plain_net"\nargs = { width = 2, depth = 2 }\n'
                   '[inputs]\nsize = 12\n[measure]\nsamples = 2\n')
    (tmp_path / "r").mkdir()
    leftover = tmp_path / "r" / ".k.lock.abc123"  # a kill between writing the lock's temporary file and linking it
    leftover.write_text('{"pid": 1}\n')
    assert main(["run", str(cfg), "--out", str(tmp_path / "r" / "k"), "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["k"]
