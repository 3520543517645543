"""The gradient engine: exactness on linear chains, batching, cropping, safety of the user's model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

import erf
from erf import stats
from erf.analytic import Layer, linear_erf
from erf.engine import ERFResult, measure
from erf.errors import ErfError
from erf.engine import accumulate as measure_accumulate
from erf.engine.accumulate import OutOfMemory as OOM
from erf.engine.inputs import NoiseSource, sample_key
from erf.engine.probe import Probe


def linear_chain(n, k=3, stride=1, dilation=1, strided=()):
    """n linear k x k convs, 1 channel, no bias, uniform weights 1/k^2, float64."""
    convs = []
    for i in range(n):
        s = 2 if i in strided else stride
        conv = nn.Conv2d(1, 1, k, stride=s, padding=dilation * (k // 2), dilation=dilation, bias=False).double()
        nn.init.constant_(conv.weight, 1.0 / (k * k))
        convs.append(conv)
    return nn.Sequential(*convs)


def relu_net(cin=2, width=4, depth=3, strides=(), pool=False, seed=0):
    torch.manual_seed(seed)
    layers = []
    for i in range(depth):
        layers += [nn.Conv2d(cin if i == 0 else width, width, 3, stride=2 if i in strides else 1, padding=1), nn.ReLU()]
    if pool:
        layers += [nn.AdaptiveAvgPool2d(1)]
    return nn.Sequential(*layers).double()


def check_linear(model, size, layers):
    res = measure(model, size, signal="signed", samples=2, batch_size=2, dtype="float64")
    expected = linear_erf(layers)
    (t, b), (lo, hi) = res.trf_box
    assert not res.clipped and res.map.shape == (size, size)
    assert res.map[t:b + 1, lo:hi + 1].shape == expected.map.shape
    np.testing.assert_allclose(res.map[t:b + 1, lo:hi + 1], expected.map, rtol=0, atol=1e-12)
    outside = res.map.copy()
    outside[t:b + 1, lo:hi + 1] = 0
    assert np.all(outside == 0)
    np.testing.assert_allclose(stats.moments(res.map).sigma, expected.sigma, rtol=1e-10)
    return res


@pytest.mark.parametrize("n", [1, 2, 5])
def test_linear_3x3_chain_is_exact(n):
    res = check_linear(linear_chain(n), 31, [Layer(3, 1, 1)] * n)
    np.testing.assert_allclose(res.sigma, [math.sqrt(2 * n / 3)] * 2, rtol=1e-10)
    assert res.trf == (2 * n + 1, 2 * n + 1)


def test_linear_5x5_strided_and_dilated_chains():
    check_linear(linear_chain(3, k=5), 41, [Layer(5, 1, 2)] * 3)
    check_linear(linear_chain(4, strided=(0, 2)), 64, [Layer(3, 2 if i in (0, 2) else 1, 1) for i in range(4)])
    check_linear(linear_chain(3, dilation=2), 41, [Layer(3, 1, 2, 2)] * 3)


def test_linear_crop_matches_full_size():
    model = linear_chain(3, strided=(1,))
    a = measure(model, 48, signal="signed", samples=2, dtype="float64")
    b = measure(model, 48, signal="signed", samples=2, dtype="float64", crop=False)
    assert a.cropped and not b.cropped
    np.testing.assert_allclose(a.map, b.map, rtol=0, atol=1e-14)


@pytest.mark.slow
def test_batched_engine_equals_per_image_loop():
    model = relu_net()
    torch.manual_seed(1)
    images = [torch.randn(2, 20, 20, dtype=torch.float64) for _ in range(6)]
    res = measure(model, 20, inputs=images, samples=6, batch_size=4, dtype="float64", crop=False)
    loop = torch.zeros(20, 20, dtype=torch.float64)
    for img in images:
        x = img[None].clone().requires_grad_(True)
        model.zero_grad()
        model(x)[0, :, 10, 10].sum().backward()
        loop += x.grad.abs().sum(1)[0]
    np.testing.assert_allclose(res.map, (loop / 6).numpy(), rtol=1e-12, atol=1e-15)
    assert res.samples == 6 and res.groups[1].sum() == 6


def test_default_inputs_are_the_documented_noise():
    model = relu_net()
    res = measure(model, 16, samples=3, batch_size=2, dtype="float64", crop=False, seed=5)
    noise = NoiseSource("gaussian", (2, 16, 16), "cpu", torch.float64)
    x = noise.batch([sample_key(5, 0, i) for i in range(3)], (slice(0, 16), slice(0, 16))).requires_grad_(True)
    model(x)[:, :, 8, 8].sum().backward()
    np.testing.assert_allclose(res.map, x.grad.abs().sum(1).mean(0).numpy(), rtol=1e-12)
    z = noise.batch([sample_key(0, 0, i) for i in range(64)], (slice(0, 16), slice(0, 16)))
    assert abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1) < 0.02


@pytest.mark.slow
def test_batch_size_invariance_and_seeds():
    model = relu_net().float()
    maps = [measure(model, 24, samples=16, batch_size=b, crop=False).map for b in (1, 7, 16)]
    for m in maps[1:]:
        np.testing.assert_allclose(m, maps[0], rtol=1e-5, atol=1e-9)
    again = measure(model, 24, samples=16, batch_size=7, crop=False).map
    assert np.array_equal(again, maps[1])
    other = measure(model, 24, samples=16, batch_size=7, crop=False, seed=1).map
    assert not np.allclose(other, maps[1])
    g1 = measure(model, 24, samples=16, batch_size=1, crop=False, group_size=4).groups
    g2 = measure(model, 24, samples=16, batch_size=7, crop=False, group_size=4).groups
    np.testing.assert_allclose(g1[0], g2[0], rtol=1e-5, atol=1e-9)
    assert g1[1].tolist() == g2[1].tolist() == [4, 4, 4, 4]


@pytest.mark.slow
@pytest.mark.parametrize("strides, unit", [((), None), ((), (1, 58)), ((1,), None), ((1,), (30, 0))])
def test_crop_equals_full_size(strides, unit):
    model = relu_net(depth=4, strides=strides)
    kw = dict(samples=4, batch_size=4, dtype="float64", unit=unit)
    a = measure(model, 64, **kw)
    b = measure(model, 64, crop=False, **kw)
    assert a.cropped and not b.cropped
    np.testing.assert_allclose(a.map, b.map, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(a.groups[0], b.groups[0], rtol=1e-12, atol=1e-15)
    assert a.clipped == b.clipped == (unit is not None)


class SizeScaled(nn.Module):
    """Multiplies by the input width: local in the TRF sense, but not crop-invariant."""

    def forward(self, x):
        return x * x.shape[-1]


def test_crop_check_catches_size_dependent_models():
    model = nn.Sequential(relu_net(depth=2), SizeScaled()).double()
    res = measure(model, 40, samples=2, dtype="float64")
    ref = measure(model, 40, samples=2, dtype="float64", crop=False)
    assert not res.cropped and any("differs from the full-size pass" in n for n in res.notes)
    np.testing.assert_array_equal(res.map, ref.map)
    forced = measure(model, 40, samples=2, dtype="float64", crop=True)
    assert forced.cropped and not np.allclose(forced.map, ref.map)


def test_crop_refused_for_global_pooling():
    model = relu_net(pool=True)
    res = measure(model, 24, samples=2, dtype="float64")
    assert not res.cropped and any("not cropped" in n for n in res.notes)
    with pytest.raises(ErfError):
        measure(model, 24, samples=2, crop=True)
    inner = measure(model, 48, layer="3", samples=2, dtype="float64")
    assert inner.cropped


@pytest.mark.slow
def test_user_model_left_exactly_as_it_was():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    model.train()
    model[2].eval()
    model[0].bias.requires_grad_(False)
    model[3].weight.grad = torch.ones_like(model[3].weight)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]

    def unchanged():
        assert [p.requires_grad for p in model.parameters()] == flags
        assert [m.training for m in model.modules()] == modes
        for p, g in zip(model.parameters(), grads):
            assert (p.grad is None and g is None) or torch.equal(p.grad, g)
        for k, v in model.state_dict().items():
            assert torch.equal(v, before[k]), k

    measure(model, 16, samples=4)
    unchanged()
    measure(model, 16, samples=2, weight_draws=2, init="kaiming_normal")
    unchanged()
    measure(model, 16, samples=2, dtype="float64")
    unchanged()
    with pytest.raises(ErfError):
        measure(model, 16, samples=2, channel=99)
    unchanged()
    with pytest.warns(UserWarning, match="BatchNorm"):
        measure(model, 16, samples=2, eval_mode=False)
    unchanged()


def test_weight_draws_average_several_nets():
    model = relu_net()
    one = measure(model, 16, samples=4, weight_draws=1, init="kaiming_normal", dtype="float64")
    two = measure(model, 16, samples=4, weight_draws=2, init="kaiming_normal", dtype="float64")
    assert two.samples == 8 and not np.allclose(one.map, two.map)
    assert np.allclose(one.groups[0].sum(0), two.groups[0][two.groups[1].cumsum() <= 4].sum(0))


@pytest.mark.slow
def test_train_mode_batchnorm_single_sample():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 2, 3, padding=1))
    model.double().train()
    images = [torch.randn(1, 12, 12, dtype=torch.float64) for _ in range(4)]
    with pytest.warns(UserWarning, match="single_sample"):
        measure(model, 12, inputs=images, samples=4, eval_mode=False, dtype="float64")
    res = measure(model, 12, inputs=images, samples=4, batch_size=4, eval_mode=False, single_sample=True,
                  dtype="float64")
    ref = torch.zeros(12, 12, dtype=torch.float64)
    for img in images:
        x = img[None].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(x)[0, :, 6, 6].sum(), x)
        ref += g.abs().sum(1)[0]
    np.testing.assert_allclose(res.map, (ref / 4).numpy(), rtol=1e-12)
    assert not res.cropped


@pytest.mark.slow
def test_adaptive_stopping():
    model = relu_net()
    loose = measure(model, 16, samples=4, batch_size=4, tol=0.5, max_samples=64, group_size=1)
    tight = measure(model, 16, samples=4, batch_size=4, tol=1e-4, max_samples=64, group_size=1)
    assert loose.samples < tight.samples == 64
    assert any("adaptive stop" in n for n in loose.notes)
    assert loose.settings["tol"] == 0.5


def test_oom_halves_the_batch_without_losing_samples(monkeypatch):
    model = relu_net()
    ref = measure(model, 16, samples=10, batch_size=10, dtype="float64", crop=False)
    real = Probe.maps

    def flaky(self, x):
        if x.shape[0] > 3:
            raise OOM("CUDA out of memory (simulated)")
        return real(self, x)

    monkeypatch.setattr(Probe, "maps", flaky)
    res = measure(model, 16, samples=10, batch_size=10, dtype="float64", crop=False)
    assert res.samples == 10 and res.settings["batch_size"] <= 3
    np.testing.assert_allclose(res.map, ref.map, rtol=1e-12)

    calls = []

    def shrinking(self, x):  # the free memory shrinks while the batch is being split
        calls.append(x.shape[0])
        if x.shape[0] > (3 if len(calls) < 5 else 1):
            raise OOM("CUDA out of memory (simulated)")
        return real(self, x)

    monkeypatch.setattr(Probe, "maps", shrinking)
    res = measure(model, 16, samples=10, batch_size=10, dtype="float64", crop=False, group_size=1)
    assert res.samples == 10 and res.groups[1].tolist() == [1] * 10 and res.settings["batch_size"] == 1
    np.testing.assert_allclose(res.map, ref.map, rtol=1e-12)
    np.testing.assert_allclose(res.groups[0], measure(model, 16, samples=10, dtype="float64", crop=False,
                                                      group_size=1).groups[0], rtol=1e-12)


def test_errors_are_one_line_erf_errors():
    model = relu_net()
    for kw in (dict(unit=(99, 0)), dict(samples=0), dict(init="bogus"), dict(layer="nope"),
               dict(signal="loud"), dict(preset="nope"), dict(inputs="pink")):
        with pytest.raises(ErfError) as info:
            measure(model, 16, **kw)
        assert "\n" not in str(info.value)
    if not torch.cuda.is_available():
        with pytest.raises(ErfError, match="CUDA"):
            measure(model, 16, device="cuda")
    nan_net = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.ReLU())
    nn.init.constant_(nan_net[0].weight, float("inf"))
    with pytest.raises(ErfError, match="NaN or Inf.*forward pass at layer '0'"):
        measure(nan_net, 8, samples=2)


@pytest.mark.slow
def test_signals_presets_and_channel():
    model = relu_net()
    kw = dict(samples=4, dtype="float64", crop=False)
    a = measure(model, 16, signal="square", **kw)
    b = measure(model, 16, signal="positive", channel_reduce="mean", **kw)
    total = measure(model, 16, signal="signed", **kw).map
    per_channel = [measure(model, 16, channel=c, signal="signed", **kw).map for c in range(4)]
    np.testing.assert_allclose(sum(per_channel), total, rtol=1e-10, atol=1e-14)
    d = measure(model, 16, preset="replknet", **kw)
    assert a.map.max() > 0 and b.map.max() > 0
    assert d.settings["preset"]["name"] == "replknet" and d.post_map.max() == pytest.approx(1.0)


@pytest.mark.slow
def test_result_roundtrip(tmp_path):
    res = measure(relu_net(), 16, samples=8)
    d = res.to_dict()
    json.dumps(d)
    for key in ("sigma", "sigma_ci", "gaussian", "trf", "ratio", "samples", "seconds", "device", "clipped",
                "cropped", "unit", "layer", "metrics", "intervals"):
        assert key in d
    assert len(d["sigma_ci"]) == 2 and res.se_map.shape == res.map.shape
    path = res.save(tmp_path / "r.npz")
    back = ERFResult.load(path)
    assert np.array_equal(back.map, res.map) and back.trf == res.trf and back.unit == res.unit
    assert np.array_equal(back.groups[0], res.groups[0])
    res.plot(tmp_path / "r.png", scale="log")
    assert (tmp_path / "r.png").stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.npz", "r.png"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    model = relu_net(depth=4)
    cpu = measure(model, 32, samples=8, dtype="float64", device="cpu")
    gpu = measure(model, 32, samples=8, dtype="float64", device="cuda")
    assert gpu.device.startswith("cuda") and gpu.cropped == cpu.cropped
    np.testing.assert_allclose(gpu.map, cpu.map, rtol=1e-9, atol=1e-12)
    f32 = measure(model, 32, samples=8, device="cuda", batch_size=3)
    np.testing.assert_allclose(f32.map, cpu.map, rtol=1e-4, atol=1e-7)


def test_a_map_of_zeros_says_why():
    """The channel sum of a LayerNorm (equal weights) does not depend on the input: float32 noise."""

    class Norm(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm = nn.Conv2d(1, 4, 3, padding=1), nn.LayerNorm(4)

        def forward(self, x):
            return self.norm(self.conv(x).permute(0, 2, 3, 1))

    with pytest.warns(UserWarning, match="about 0 everywhere"):
        res = measure(Norm(), 12, samples=4)
    assert any("LayerNorm" in n for n in res.notes)
    assert measure(Norm(), 12, samples=4, channel=1).map.max() > 1e-3  # one channel moves


def test_save_to_a_name_without_suffix_and_a_bad_file(tmp_path):
    res = measure(relu_net(), 12, samples=2)
    path = res.save(tmp_path / "result")  # numpy would add .npz to a bare name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result"]
    assert np.array_equal(ERFResult.load(path).map, res.map)
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "junk").write_bytes(b"PK\x03\x04 not really a zip")
    for bad in ("empty", "junk", "missing"):
        with pytest.raises(ErfError, match="cannot read ERF result"):
            ERFResult.load(tmp_path / bad)


@pytest.mark.slow
def test_normalized_draws_weigh_every_network_the_same():
    model = relu_net()
    kw = dict(samples=6, weight_draws=3, init="kaiming_normal", dtype="float64", crop=False)
    raw = measure(model, 16, **kw)
    norm = measure(model, 16, normalize_draws=True, **kw)
    sums, counts = raw.groups
    assert counts.tolist() == [6, 6, 6]  # one group per draw
    expected = np.mean([s / s.sum() for s in sums], axis=0)
    np.testing.assert_allclose(norm.map, expected, rtol=1e-12)
    assert norm.map.sum() == pytest.approx(1.0) and norm.groups[1].tolist() == [6, 6, 6]
    with pytest.raises(ErfError, match="normalize_draws needs 2 to 64"):
        measure(model, 16, samples=4, normalize_draws=True)


def test_rebuild_init_draws_the_models_own_scheme_per_draw():
    from erf.models import apply_init, load_model, rebuild_init

    args = {"depth": 3, "width": 4}
    model = load_model("plain_net", args)
    gen = torch.Generator().manual_seed(12345)
    apply_init(model, rebuild_init("plain_net", args), gen)
    fresh = load_model("plain_net", args, seed=12345)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    res = measure(model, 16, samples=4, weight_draws=2, init=rebuild_init("plain_net", args))
    assert res.settings["init"] == "model_rebuild" and res.groups[1].tolist() == [4, 4]
    assert not np.allclose(res.groups[0][0], res.groups[0][1])  # two different networks


def test_sample_mass_is_each_samples_total_by_global_index(monkeypatch):
    model = relu_net()
    res_acc = {}
    real_init = measure_accumulate.Accumulator.__init__

    def keep(self, *a, **k):
        real_init(self, *a, **k)
        res_acc["acc"] = self

    monkeypatch.setattr(measure_accumulate.Accumulator, "__init__", keep)
    res = measure(model, 16, samples=5, batch_size=2, dtype="float64", crop=False, weight_draws=2,
                  init="kaiming_normal")
    mass = res_acc["acc"].sample_mass()
    assert mass.shape == (10,) and np.all(np.isfinite(mass)) and np.all(mass > 0)
    # the masses add up to the map's total
    np.testing.assert_allclose(mass.sum(), res.map.sum() * res.samples, rtol=1e-12)
    # group sums agree too: draw d's group holds samples d*5 .. d*5+4
    np.testing.assert_allclose(res.groups[0].reshape(2, -1).sum(1), mass.reshape(2, 5).sum(1), rtol=1e-12)


@pytest.mark.slow
def test_the_batch_path_reads_nothing_back_to_the_host(monkeypatch):
    """No .item/.cpu/.tolist/.numpy/bool/float/int in a batch's path (a CUDA loop would wait there)."""
    model = relu_net()
    ref = measure(model, 16, samples=6, batch_size=2, crop=False)
    reads, inside = [], [False]
    names = ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")
    for name in names:
        real = getattr(torch.Tensor, name)

        def spy(self, *a, _real=real, _name=name, **k):
            if inside[0]:
                reads.append(_name)
            return _real(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, spy)
    real_run = measure_accumulate.Accumulator.run

    def run(self, *a):
        inside[0] = True
        try:
            return real_run(self, *a)
        finally:
            inside[0] = False
    monkeypatch.setattr(measure_accumulate.Accumulator, "run", run)
    res = measure(model, 16, samples=6, batch_size=2, crop=False)
    assert reads == []
    assert np.array_equal(res.map, ref.map)  # and the same map, bit for bit


def test_a_nan_is_found_after_the_loop_and_located_by_layer():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 1, 3, padding=1))
    with torch.no_grad():
        model[2].weight[0, 1, 1, 1] = float("nan")
    with pytest.raises(ErfError, match="NaN or Inf.*layer '2'"):
        measure(model, 12, samples=4, batch_size=2, crop=False)


@pytest.mark.slow
def test_trf_center_of_a_clipped_unit_and_the_uniform_reference():
    """A corner unit's TRF reaches past the image: its centre is the unit's own, unclipped; positions refer to it."""
    model = erf.create_model("plain_net", depth=6, width=4, kernel_size=3, activation="linear", in_channels=1)
    res = erf.measure(model, 16, unit=(0, 1), samples=4, crop=False, device="cpu")
    assert res.trf == (13, 13) and res.clipped
    assert res.trf_box_unclipped == ((-6, 6), (-5, 7)) and res.trf_box == ((0, 6), (0, 7))
    assert res.trf_center == (0.0, 1.0)
    m = res.metrics
    assert m["trf_clipped"] is True and m["reference_center"] == [0.0, 1.0]
    assert m["com_offset_y"] == pytest.approx(m["center_y"] - 0.0) and m["com_offset_x"] == pytest.approx(
        m["center_x"] - 1.0)
    ref = res.uniform_reference
    assert ref["region"] == [[0, 6], [0, 7]]
    assert ref["vs_uniform"]["sigma_x"] == pytest.approx(res.sigma[1] / ref["uniform"]["sigma_x"])
    d = res.to_dict()
    assert not {"ndim", "shape", "axes"} & set(d["metrics"]) and d["shape"] == [16, 16]
    assert d["trf_center"] == [0.0, 1.0] and d["uniform_reference"]["region"] == [[0, 6], [0, 7]]
    assert set(d["intervals"]) == set(stats.interval_metrics(2, res.trf))
    assert d["intervals"]["com_offset_x"] is not None
    text = repr(res)
    assert len(text) < 200 and "unit (0, 1)" in text and "TRF 13x13 clipped" in text and "sigma" in text
    inner = erf.measure(model, 16, samples=2, crop=False, device="cpu")  # the centre unit: not clipped
    assert inner.trf_center == (8.0, 8.0) and inner.uniform_reference is None


def test_resnet50_layer4_centre_unit_trf_centre_is_96():
    """At 224 px the layer4 centre unit (3, 3) of ResNet-50 covers [-117, 309]: its TRF centre is (96, 96), not 112."""
    rep = erf.receptive_field(erf.create_model("resnet50", width=0.125), (224, 224), layer="layer4")
    box = rep.target.box()
    assert box == ((-117, 309), (-117, 309))
    assert tuple((a + b) / 2 for a, b in box) == (96.0, 96.0)


def test_fit_batch_halves_until_a_pass_fits():
    from erf.engine.loop import fit_batch

    tried, freed = [], []

    def maps(x):
        tried.append(x.shape[0])
        if x.shape[0] > 300:
            raise OOM("CUDA out of memory (simulated)")
        return x

    assert fit_batch(maps, lambda b: torch.zeros(b, 1), 4096, empty_cache=lambda: freed.append(1)) == 256
    assert tried == [4096, 2048, 1024, 512, 256] and len(freed) == 4
    assert fit_batch(maps, lambda b: None, 64) == 64  # no inputs to try: keep the start
    assert fit_batch(lambda x: (_ for _ in ()).throw(OOM("oom")), lambda b: torch.zeros(b), 8,
                     empty_cache=lambda: None) == 1


def test_auto_batch_and_channels_last_stay_off_on_cpu():
    from erf.engine.loop import channels_last_model

    model = relu_net()
    res = measure(model, 16, samples=4, batch_size=2)
    assert res.settings["auto_batch"] is False and res.settings["batch_size"] == 2
    conv = nn.Sequential(nn.Conv2d(3, 4, 3))
    work = channels_last_model(conv, conv)
    assert work is not conv and work[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert conv[0].weight.is_contiguous()  # the caller's model is left as it was


def test_the_crop_check_skips_a_sample_that_leaves_the_unit_dead():
    """A ReLU unit dead for the check's sample gives an all-zero gradient, which checks nothing: the check moves
    to the next sample instead of refusing the crop (4 of 16 seeds cropped when it did not; found when a 4-wide
    ReLU net refused every crop in the device check's dry run)."""
    from erf.engine import forget_checks

    net = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.ReLU())
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.fill_(-1.0)  # alive for about 37% of Gaussian inputs
    cropped = 0
    for seed in range(16):
        forget_checks()  # each seed checks anew
        res = measure(net, 16, samples=8, batch_size=8, seed=seed, progress=False, unit=(8, 8))
        cropped += res.cropped
        if res.cropped:
            assert any("checked against a full-size pass" in n for n in res.notes), res.notes
    assert cropped >= 12, cropped
