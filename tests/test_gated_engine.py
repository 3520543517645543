"""Gated nets in the engine: ERF/TRF ratios and figures use rf_local, the strict TRF is kept beside it."""

import torch
from torch import nn

import erf


class SE(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.fc = nn.Conv2d(c, c, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))


def test_gated_net_ratio_uses_rf_local(tmp_path):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), SE(4), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                      nn.Conv2d(4, 4, 3, padding=1))
    r = erf.measure(m, 32, samples=4)
    assert r.trf == (7, 7) and r.trf_box == ((13, 19), (13, 19))
    assert r.trf_strict is not None and r.trf_strict[0] >= 32  # global through the gate
    assert r.ratio == tuple(2 * s / 7 for s in r.sigma)
    assert any("rf_local" in n for n in r.notes)
    r.save(tmp_path / "r.npz")
    back = erf.ERFResult.load(tmp_path / "r.npz")
    assert back.trf_strict == r.trf_strict and back.to_dict()["trf_strict"] == list(r.trf_strict)


def test_plain_net_has_no_strict_trf_beside():
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    r = erf.measure(m, 16, samples=2)
    assert r.trf == (5, 5) and r.trf_strict is None
