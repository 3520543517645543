"""Same config and seed: identical maps, run to run (CPU always; CUDA with deterministic=True)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

from erf.engine import ERFResult, measure
from erf.models import create_model, load_model

ARGS = ["plain_net", "--model-arg", "depth=3", "--model-arg", "width=4", "--input", "20", "--samples", "6"]


def _measure_in_new_process(tmp_path, name, *extra):
    path = tmp_path / f"{name}.npz"
    done = subprocess.run([sys.executable, "-m", "erf.cli", "measure", *ARGS, *extra, "--save", str(path)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr
    return ERFResult.load(path)


@pytest.mark.slow
def test_two_processes_with_one_seed_give_identical_maps(tmp_path):
    """torch seeds its generator at random in every process: the model must be built from the seed."""
    a = _measure_in_new_process(tmp_path, "a")
    b = _measure_in_new_process(tmp_path, "b")
    c = _measure_in_new_process(tmp_path, "c", "--seed", "1")
    assert np.array_equal(a.map, b.map) and np.array_equal(a.groups[0], b.groups[0])
    assert not np.allclose(a.map, c.map)


def test_model_construction_is_seeded_and_leaves_the_global_generator_alone():
    state = torch.random.get_rng_state()
    w = [load_model("plain_net", {"depth": 2, "width": 4}, seed=s).state_dict() for s in (0, 0, 1)]
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(w[0][k], w[1][k]) for k in w[0])
    assert not all(torch.equal(w[0][k], w[2][k]) for k in w[0] if k.endswith("weight"))


def test_deterministic_mode_on_cpu_changes_nothing_and_restores_the_flags():
    model = create_model("plain_net", depth=3, width=4)
    plain = measure(model, 20, samples=6)
    strict = measure(model, 20, samples=6, deterministic=True)
    assert np.array_equal(plain.map, strict.map) and strict.settings["deterministic"] is True
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_deterministic_mode_repeats_bit_for_bit_on_cuda():
    """Max pooling and bilinear upsampling use atomic adds in their CUDA backward by default."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.MaxPool2d(3, 2, 1), nn.Conv2d(16, 16, 3, padding=1),
                          nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(16, 8, 3, padding=1))
    runs = [measure(model, 64, samples=64, batch_size=64, device="cuda", deterministic=True, crop=False)
            for _ in range(3)]
    assert all(np.array_equal(runs[0].map, r.map) for r in runs[1:])
