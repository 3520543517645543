"""Benchmark the gradient engine against the per-image loop and the bare framework limit.

For each model, in one process, on the same device and sample count:

(a) ``erf.engine.measure`` (everything included: trace, crop check, noise, float64 sums);
(b) the per-image loop of the public ERF scripts: batch of one, parameter gradients on,
    ``model.zero_grad(); loss.backward()``, |x.grad| summed over channels;
(c) the framework limit: forward + ``torch.autograd.grad`` on the input at the engine's batch
    size, parameters frozen, no bookkeeping -- on the input the engine actually runs (the crop
    when it crops) and, for a cropped model, also at full size.

Methods run in interleaved rounds; each method's best round is reported (the machine may be
shared, and the minimum is the least disturbed run), with the median alongside.

    python experiments/bench_engine.py --quick            # results/bench/engine_cpu_quick.*, minutes
    python experiments/bench_engine.py                    # results/bench/engine_cpu.* (64/32 samples)
    python experiments/bench_engine.py --device cuda      # results/bench/engine_cuda.*
    python experiments/bench_engine.py --cone             # results/bench/engine_cpu_cone.*: cone execution

``--cone``: plain 3x3 nets of 20 and 40 layers at 512 px, the whole ``erf.measure`` call with cone
execution (the default) and without (``cone=False``) against the framework limit on the crop,
interleaved in one process, as a process's first call of an architecture (the crop and cone checks
run) and as a repeated one (their verdicts reused); the maps of both engine runs compared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn

import erf
from erf.engine import forget_checks, measure

ROOT = Path(__file__).resolve().parents[1]


def trunk(model: nn.Module, layer: str) -> nn.Module:
    """The model cut after ``layer`` (top-level children in order), as the public scripts do."""
    kids = []
    for name, child in model.named_children():
        if isinstance(child, (nn.AdaptiveAvgPool2d, nn.Linear, nn.Flatten)):
            break
        kids.append(child)
        if name == layer:
            break
    return nn.Sequential(*kids)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def per_image_loop(net, size, chans, n, dev, seed=0):
    """(b): one image at a time, parameter gradients on, loss.backward()."""
    for p in net.parameters():
        p.requires_grad_(True)
    g = torch.Generator(device=dev).manual_seed(seed)
    acc = torch.zeros(size, device=dev)
    for _ in range(n):
        x = torch.randn((1, chans, *size), generator=g, device=dev).requires_grad_(True)
        net.zero_grad()
        out = net(x)
        out[0, :, out.shape[2] // 2, out.shape[3] // 2].sum().backward()
        acc += x.grad.abs().sum(1)[0]
    sync(dev)
    return acc / n


def framework_limit(net, size, chans, n, batch, dev, unit=None, seed=0):
    """(c): forward + autograd.grad on the input, batched, parameters frozen, nothing else."""
    flags = [p.requires_grad for p in net.parameters()]
    for p in net.parameters():
        p.requires_grad_(False)
    g = torch.Generator(device=dev).manual_seed(seed)
    done = 0
    while done < n:
        b = min(batch, n - done)
        x = torch.randn((b, chans, *size), generator=g, device=dev).requires_grad_(True)
        out = net(x)
        i, j = unit or (out.shape[2] // 2, out.shape[3] // 2)
        (gx,) = torch.autograd.grad(out[:, :, i, j].sum(), x)
        done += b
    sync(dev)
    for p, f in zip(net.parameters(), flags):
        p.requires_grad_(f)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def bench(name, model, size, layer, samples, batch, dev, rounds):
    model = model.to(dev).eval()
    chans = erf.analytic.infer_in_channels(model)
    net = trunk(model, layer) if layer else model
    # warm-up (oneDNN / cuDNN kernel selection) for every method, not timed
    measure(model, size, layer=layer, samples=min(batch, samples), batch_size=batch, device=str(dev))
    per_image_loop(net, size, chans, 1, dev)
    res = measure(model, size, layer=layer, samples=samples, batch_size=batch, device=str(dev))
    crop = res.settings["crop_window"]
    crop_size = tuple(b - a for a, b in crop) if crop else size
    unit = tuple(u - a for u, (a, _) in zip(res.unit, crop)) if crop else None
    framework_limit(net, crop_size, chans, min(batch, samples), batch, dev, unit)
    times = {"engine": [], "engine_sampling": [], "per_image": [], "limit": []}
    timing = []
    for _ in range(rounds):
        dt, r = timed(lambda: measure(model, size, layer=layer, samples=samples, batch_size=batch, device=str(dev)))
        times["engine"].append(dt)
        times["engine_sampling"].append(r.settings["timing"]["sampling"])
        timing.append(r.settings["timing"])
        times["per_image"].append(timed(lambda: per_image_loop(net, size, chans, samples, dev))[0])
        times["limit"].append(timed(lambda: framework_limit(net, crop_size, chans, samples, batch, dev, unit))[0])
    if crop:
        # the crop loop of ``samples`` maps lasts milliseconds: compare it with the limit again on
        # 16x more maps (interleaved, best of 2 * rounds) so load spikes on a shared machine average out
        many = 16 * samples
        times["engine_sampling_16x"], times["limit_16x"] = [], []
        for _ in range(2 * rounds):
            r = measure(model, size, layer=layer, samples=many, batch_size=batch, device=str(dev))
            times["engine_sampling_16x"].append(r.settings["timing"]["sampling"])
            times["limit_16x"].append(timed(lambda: framework_limit(net, crop_size, chans, many, batch, dev, unit))[0])
        # informational: what the same batched loop costs on the full-size input (one round)
        times["limit_full_size"] = [timed(lambda: framework_limit(net, size, chans, samples, batch, dev))[0]]
    best = {k: min(v) for k, v in times.items()}
    counts = {k: (16 * samples if k.endswith("_16x") else samples) for k in times}
    row = {
        "model": name, "input": list(size), "layer": res.layer, "unit": list(res.unit), "samples": samples,
        "batch": batch, "rounds": rounds, "cropped": res.cropped, "crop_window": crop, "trf": list(res.trf or []),
        "seconds_best": best, "seconds_median": {k: statistics.median(v) for k, v in times.items()},
        "seconds_all": times, "maps_per_second": {k: counts[k] / v for k, v in best.items()},
        "engine_vs_per_image": best["per_image"] / best["engine"],
        "engine_vs_limit": best["limit"] / best["engine"],
        "engine_sampling_vs_limit": best["limit"] / best["engine_sampling"],
        "engine_timing": timing, "notes": res.notes,
    }
    if crop:
        row["engine_vs_limit_full_size"] = best["limit_full_size"] / best["engine"]
        row["engine_sampling_vs_limit_16x"] = best["limit_16x"] / best["engine_sampling_16x"]
    print(json.dumps({k: row[k] for k in ("model", "maps_per_second", "engine_vs_per_image", "engine_vs_limit")}))
    return row


def bench_cone(depth, width, size, samples, batch, dev, rounds):
    """One plain net: the engine with and without cone execution against the limit on the crop.

    Each round times a first call (``forget_checks()`` before it: the crop and cone checks against one
    uncropped pass run, as in a process's first measurement of this architecture), a repeated call
    (the checks' verdicts reused, as for every further network, draw or checkpoint of it), a call
    without the cone, and the limit, interleaved.
    """
    torch.manual_seed(0)  # the same net whatever ran before in the process (a 4-wide ReLU net can be dead)
    net = erf.create_model("plain_net", depth=depth, width=width, activation="relu", in_channels=3).to(dev).eval()
    kw = dict(samples=samples, batch_size=batch, device=str(dev), auto_batch=False, progress=False)  # the limit's batch
    measure(net, size, samples=batch, batch_size=batch, device=str(dev), progress=False)  # warm-up, not timed
    times = {"engine_cone_first": [], "engine_cone": [], "engine_no_cone": [], "limit": [], "cone_sampling": [],
             "no_cone_sampling": []}
    fixed_first, fixed = [], []
    for _ in range(rounds):
        forget_checks()
        dt, a = timed(lambda: measure(net, size, **kw))
        times["engine_cone_first"].append(dt)
        fixed_first.append(a.settings["timing"]["setup"] + a.settings["timing"]["crop_check"])
        dt, a = timed(lambda: measure(net, size, **kw))
        times["engine_cone"].append(dt)
        times["cone_sampling"].append(a.settings["timing"]["sampling"])
        fixed.append(a.settings["timing"]["setup"] + a.settings["timing"]["crop_check"])
        dt, b = timed(lambda: measure(net, size, cone=False, **kw))
        times["engine_no_cone"].append(dt)
        times["no_cone_sampling"].append(b.settings["timing"]["sampling"])
        crop = a.settings["crop_window"]
        crop_size = tuple(hi - lo for lo, hi in crop)
        unit = tuple(u - lo for u, (lo, _) in zip(a.unit, crop))
        times["limit"].append(timed(lambda: framework_limit(net, crop_size, 3, samples, batch, dev, unit))[0])
    best = {k: min(v) for k, v in times.items()}
    diff = float(abs(a.map - b.map).max() / abs(b.map).max())
    row = {"model": f"plain_net depth {depth}", "depth": depth, "width": width, "input": list(size),
           "samples": samples, "batch": batch, "rounds": rounds, "crop_window": crop, "cone": a.settings["cone"],
           "seconds_best": best, "seconds_all": times, "setup_and_checks_first_s": min(fixed_first),
           "setup_and_checks_s": min(fixed), "maps_per_second": {k: samples / v for k, v in best.items()},
           "engine_cone_first_vs_limit": best["limit"] / best["engine_cone_first"],
           "engine_cone_vs_limit": best["limit"] / best["engine_cone"],
           "cone_sampling_vs_limit": best["limit"] / best["cone_sampling"],
           "engine_no_cone_vs_limit": best["limit"] / best["engine_no_cone"],
           "max_relative_difference": diff, "notes": a.notes}
    print(json.dumps({k: row[k] for k in ("model", "maps_per_second", "engine_cone_first_vs_limit",
                                          "engine_cone_vs_limit", "cone_sampling_vs_limit",
                                          "max_relative_difference")}))
    return row


def write_cone(rows, dev, args):
    out = ROOT / "results" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    tag = dev.type + "_cone"
    meta = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "load_average_start": args.load_start, "load_average_end": os.getloadavg()}
    (out / f"engine_{tag}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    lines = [f"# Cone execution benchmark ({tag})", "",
             f"torch {meta['torch']}, {meta['threads']} threads, {meta['cpus']} CPUs, device {meta['device']}; best "
             f"of {args.rounds} interleaved rounds; 1/5/15-min load average {_load(meta['load_average_start'])} at the "
             f"start, {_load(meta['load_average_end'])} at the end (2 = both cores busy).", "",
             "| model | input | width | samples | batch | crop | limit maps/s | engine (cone) maps/s | engine "
             "(cone) / limit | first call / limit | cone loop / limit | engine (no cone) / limit | checks s (first "
             "call) | max rel. diff |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mps = r["maps_per_second"]
        lines.append(f"| {r['model']} | {'x'.join(map(str, r['input']))} | {r['width']} | {r['samples']} | "
                     f"{r['batch']} | {r['crop_window']} | {mps['limit']:.1f} | {mps['engine_cone']:.1f} | "
                     f"**{r['engine_cone_vs_limit']:.2f}x** (target 2.5x) | {r['engine_cone_first_vs_limit']:.2f}x | "
                     f"{r['cone_sampling_vs_limit']:.2f}x | {r['engine_no_cone_vs_limit']:.2f}x | "
                     f"{r['setup_and_checks_first_s']:.2f} | {r['max_relative_difference']:.2g} |")
    lines += ["", "'limit': forward + autograd.grad at the same batch on the crop the engine runs (the unit's TRF), "
              "with torch.randn inputs, nothing else. 'engine (cone)': the whole `erf.measure` call (trace, plan, "
              "noise, float64 sums, diagnostics, result) with each op run only on the box the unit depends on, as "
              "called for a second network, draw or checkpoint of an architecture: the crop and cone checks' "
              "verdicts from the first call are reused (they depend on the geometry, not the weights). 'first call': "
              "the same with the checks run (`forget_checks()` before it): one uncropped forward + backward at the "
              "full input size, paid once per architecture, size, layer and unit in a process ('checks s'). 'cone "
              "loop': the sampling loop only. 'max rel. diff': max |cone map - no-cone map| / max |no-cone map| "
              "(same samples).", "",
              "Where it applies: units whose TRF lies inside the image, for targets reached through a chain of "
              "convs / pools / BatchNorm(eval) / pointwise modules (nn.Sequential stacks, the registry's plain_net) "
              "or, through torch.fx, through residual adds and channel concats (residual_net, ResNets at inputs "
              "larger than their TRF). Where it does not: where the cone would compute more than 80% of the usual "
              "pass's positions (ResNets at 224: the TRF covers the whole image, so there is neither a crop nor a "
              "pyramid to cut) and graphs with upsampling, attention or flatten on the unit's path; those run the "
              "usual way with a note. The first call's fixed cost is the uncropped check pass; with more samples its "
              "ratio approaches the repeated call's. Timings on this shared 2-core machine vary by about 15% between "
              "rounds (best of 3 is shown); the engine without the cone measured 0.80-1.03x the limit in a separate "
              "A/B run of the same loop."]
    (out / f"engine_{tag}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}/engine_{tag}.json and .md")


def write(rows, dev, args):
    out = ROOT / "results" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    tag = dev.type + ("_quick" if args.quick else "")
    meta = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "quick": args.quick, "load_average_start": args.load_start, "load_average_end": os.getloadavg()}
    (out / f"engine_{tag}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    targets = {"resnet50": 1.2, "plain_net": 3.0}
    lines = [f"# Gradient engine benchmark ({tag})", "",
             f"torch {meta['torch']}, {meta['threads']} threads, {meta['cpus']} CPUs, device {meta['device']}; "
             f"best of {args.rounds} interleaved rounds. The machine is shared: 1/5/15-min load average "
             f"{_load(meta['load_average_start'])} at the start, {_load(meta['load_average_end'])} at the end "
             "(2 = both cores busy before this run).", "",
             "| model | input | layer | cropped | samples | batch | engine maps/s | per-image maps/s | limit maps/s "
             "| engine / per-image | engine / limit | engine sampling loop / limit | engine setup + crop check s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mps = r["maps_per_second"]
        lines.append(f"| {r['model']} | {'x'.join(map(str, r['input']))} | {r['layer']} | {r['cropped']} | "
                     f"{r['samples']} | {r['batch']} | {mps['engine']:.2f} | {mps['per_image']:.2f} | "
                     f"{mps['limit']:.2f} | {r['engine_vs_per_image']:.2f}x (target {targets[r['model']]}x) | "
                     f"{r['engine_vs_limit']:.2f} | {r['engine_sampling_vs_limit']:.2f} | "
                     f"{min(t['setup'] + t['crop_check'] for t in r['engine_timing']):.2f} |")
    lines += ["", "Ratios are speed ratios (maps/s of the engine over maps/s of the other). The limit runs forward + "
              "autograd.grad at the engine's batch size on the input the engine runs (the crop when it crops), "
              "with nothing else: >= 0.9 means the engine is within 10% of it. 'engine' counts the whole call "
              "(trace for the TRF, crop check, noise, float64 sums); 'sampling loop' only the batches."]
    for r in rows:
        if "engine_vs_limit_full_size" in r:
            lines.append(f"{r['model']}: against the limit at full size ({'x'.join(map(str, r['input']))}) the "
                         f"engine is {r['engine_vs_limit_full_size']:.1f}x faster (crop {r['crop_window']}). "
                         f"Its crop loop on {16 * r['samples']} maps runs at {r['engine_sampling_vs_limit_16x']:.2f}x "
                         "the speed of the bare loop on the same crops (a loop of "
                         f"{r['samples']} crops lasts only milliseconds, so the table's loop ratio is noisy).")
    (out / f"engine_{tag}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}/engine_{tag}.json and .md")


def _load(avg) -> str:
    return "/".join(f"{v:.1f}" for v in avg)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true", help="small sample counts: a few minutes on a 2-core CPU")
    p.add_argument("--samples-resnet", type=int, default=None)
    p.add_argument("--samples-plain", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--plain-width", type=int, default=None, help="channels of the plain net (16 quick, else 32)")
    p.add_argument("--plain-input", type=int, default=512)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--models", default="resnet50,plain_net")
    p.add_argument("--cone", action="store_true", help="cone execution on 20- and 40-layer plain nets at 512 px")
    p.add_argument("--depths", default="20,40", help="with --cone: plain net depths")
    args = p.parse_args()
    args.load_start = os.getloadavg()
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if args.device == "auto" else args.device))
    gpu = dev.type == "cuda"
    args.rounds = args.rounds or (2 if args.quick else 3)
    batch = args.batch or (64 if gpu else 16)
    s_res = args.samples_resnet or ((256 if gpu else 16) if args.quick else (1024 if gpu else 64))
    s_plain = args.samples_plain or ((256 if gpu else 16) if args.quick else (1024 if gpu else 32))
    torch.manual_seed(0)
    if args.cone:
        width = args.plain_width or 32
        rows = [bench_cone(d, width, (args.plain_input,) * 2, args.samples_plain or (2048 if d <= 20 else 512), batch,
                           dev, args.rounds) for d in map(int, args.depths.split(","))]
        write_cone(rows, dev, args)
        return
    rows = []
    names = args.models.split(",")
    if "resnet50" in names:
        rows.append(bench("resnet50", erf.create_model("resnet50"), (224, 224), "layer4", s_res, batch, dev,
                          args.rounds))
    if "plain_net" in names:
        width = args.plain_width or (16 if args.quick else 32)
        net = erf.create_model("plain_net", depth=20, width=width, activation="relu", in_channels=3)
        rows.append(bench("plain_net", net, (args.plain_input,) * 2, None, s_plain, batch, dev, args.rounds))
    write(rows, dev, args)


if __name__ == "__main__":
    main()
