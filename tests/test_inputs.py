"""Probe noise: finite everywhere, including the hash value whose float32 uniform rounds to 1."""

import torch

from erf.engine.inputs import NoiseSource, sample_key


def test_gaussian_noise_is_finite_where_the_uniform_rounds_to_one():
    # seed 0, draw 1, samples 17 and 50 at 3x224x224 each hold one pixel whose 24-bit hash is
    # 2**24 - 1: (2**24 - 1) + 0.5 rounds to 2**24 in float32, so u was 1 and ndtri(u) = +inf
    src = NoiseSource("gaussian", (3, 224, 224), torch.device("cpu"), torch.float32)
    win = (slice(0, 224), slice(0, 224))
    x = src.batch([sample_key(0, 1, 17), sample_key(0, 1, 50)], win)
    assert torch.isfinite(x).all()
    assert 5.0 < float(x.max()) < 5.5  # the clamped value is the far tail, not a wrap-around
    u = NoiseSource("uniform", (3, 224, 224), torch.device("cpu"), torch.float32).batch(
        [sample_key(0, 1, 17)], win)
    assert float(u.max()) < 1.0 and float(u.min()) > 0.0
