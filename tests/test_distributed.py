"""torchrun with 2 CPU processes (Gloo) gives the maps of one process; the shares cover every batch once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from erf import distributed
from erf.engine import ERFResult, measure
from erf.engine.loop import plan_shares

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
NET = ["plain_net", "--model-arg", "depth=4", "--model-arg", "width=4", "--input", "24", "--batch", "3"]


def _erf(*args, procs: int = 1, check: bool = True) -> subprocess.CompletedProcess:
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"] \
        if procs > 1 else [sys.executable]
    done = subprocess.run([*launch, "-m", "erf.cli", *map(str, args)], env=ENV, capture_output=True, text=True,
                          timeout=300)
    if check:
        assert done.returncode == 0, done.stderr[-2000:]
    return done


@pytest.mark.parametrize("world", [1, 2, 3, 5])
@pytest.mark.parametrize("draws,limit,batch", [(1, 20, 3), (3, 7, 2), (2, 5, 8), (1, 1, 4)])
def test_rank_shares_are_whole_batches_covering_every_sample_once(monkeypatch, world, draws, limit, batch):
    seen = []
    for r in range(world):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        monkeypatch.setattr(distributed, "world_size", lambda: world)
        for d, a, b in plan_shares(draws, limit, batch):
            assert a % batch == 0 and (b % batch == 0 or b == limit) and 0 <= a < b <= limit
            seen += [(d, i) for i in range(a, b)]
    assert sorted(seen) == [(d, i) for d in range(draws) for i in range(limit)]


@pytest.mark.slow
def test_two_gloo_processes_measure_the_map_of_one(tmp_path):
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    args = [*NET, "--samples", "10", "--weight-draws", "2", "--init", "kaiming_normal", "--json"]
    single = _erf("measure", *args, "--save", one)
    double = _erf("measure", *args, "--save", two, procs=2)
    a, b = ERFResult.load(one), ERFResult.load(two)
    assert a.samples == b.samples == 20
    np.testing.assert_allclose(b.map, a.map, rtol=1e-12, atol=0)
    np.testing.assert_allclose(b.groups[0], a.groups[0], rtol=1e-12, atol=0)
    assert np.array_equal(a.groups[1], b.groups[1])
    assert any("2 processes" in n for n in b.notes)
    # rank 0 alone prints: one JSON document
    assert json.loads(double.stdout)["samples"] == json.loads(single.stdout)["samples"] == 20


@pytest.mark.slow
def test_two_gloo_processes_run_a_config_like_one(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[experiment]\nname = "c"\n[model]\nname = "plain_net"\nargs = { width = 4, depth = 3 }\n'
                   '[inputs]\nsize = 20\n[measure]\nsamples = 9\nbatch_size = 2\n'
                   '[sweep.grid]\n"model.args.depth" = [2, 3]\n')
    _erf("run", cfg, "--out", tmp_path / "one")
    done = _erf("run", cfg, "--out", tmp_path / "two", procs=2)
    assert done.stdout.count("results written") == 1
    a, b = np.load(tmp_path / "one" / "maps.npz"), np.load(tmp_path / "two" / "maps.npz")
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-6, atol=0)  # maps are stored as float32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml", "one", "two"]


@pytest.mark.slow
def test_adaptive_sampling_is_refused_under_torchrun():
    done = _erf("measure", *NET, "--samples", "4", "--tol", "0.1", procs=2, check=False)
    # the workers exit 2; torchrun itself then reports the failed workers and exits 1
    assert done.returncode != 0 and "exitcode  : 2" in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("erf: error")]
    assert len(errors) == 1 and "tol" in errors[0]  # rank 0 alone reports it


def test_shares_of_an_input_list_add_up_to_the_whole(monkeypatch):
    """Ranks skip the inputs of the others: each share's sum is its part of the one-process sum."""
    import torch

    from erf.models import create_model

    model = create_model("plain_net", depth=3, width=4)
    images = [torch.randn(1, 20, 20, generator=torch.Generator().manual_seed(i)) for i in range(11)]
    kw = dict(samples=11, batch_size=2, inputs=images, dtype="float64", crop=False)
    whole = measure(model, 20, **kw)
    total = np.zeros_like(whole.map)
    for r in range(3):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        monkeypatch.setattr(distributed, "world_size", lambda: 3)
        part = measure(model, 20, **kw)
        total += part.map * part.samples
    np.testing.assert_allclose(total / 11, whole.map, rtol=1e-12)


@pytest.mark.slow
def test_every_rank_stops_when_rank_0_refuses_to_drop_an_interrupted_run(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[experiment]\nname = "c"\n[model]\nname = "plain_net"\nargs = { width = 2, depth = 2 }\n'
                   '[inputs]\nsize = 12\n[measure]\nsamples = 2\n')
    (tmp_path / ".out.partial").mkdir()  # an interrupted run of this config (an empty one is discarded)
    (tmp_path / ".out.partial" / "run.json").write_text("{}")
    done = _erf("run", cfg, "--out", tmp_path / "out", procs=2, check=False)
    assert done.returncode != 0 and "exitcode  : 2" in done.stderr  # both workers ended, with exit code 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("erf: error")]
    assert len(errors) == 1 and "--resume" in errors[0]
