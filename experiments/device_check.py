"""One call on the GPU box: what holds on CUDA, each item ending in one PASS / FAIL / SKIP line.

    python experiments/device_check.py               # on a CUDA machine: under 8 minutes on one H100/H200
    python experiments/device_check.py --dry-run     # (automatic without CUDA) every item it can, tiny sizes, ~1 min

No network. Runs on the GPU machine's stack (Python 3.12, torch, torchvision, timm, numpy, scipy,
matplotlib, pytest, tqdm) from the repository root with ``PYTHONPATH=.`` or after
``pip install --no-deps --no-build-isolation -e .``. Items:

1. ``pytest_gpu``: ``pytest -m gpu``; ``pytest_timm_torchvision``: the timm/torchvision tests.
2. ``bench_resnet50``: ResNet-50 at 224 (to ``layer4``) in float32, tf32 and bf16 (channels_last, the
   batch ``auto_batch`` finds) against the per-image loop of the public scripts and the framework limit
   (forward + autograd.grad at the same batch and precision) -> results/bench/engine_cuda.md/.json.
3. ``bench_plain_cone``: the cropped and cone-executed plain nets (20 and 40 layers at 512 px) against
   the limit on the crop (same file).
4. ``bf16_agreement``: bf16 autocast against float32: map correlation >= 0.999, sigma within 0.5%
   (ResNet-50 at 224 and the 20-layer plain net).
5. ``deterministic_repeat``: two ``deterministic=True`` runs give identical maps.
6. ``oom_backoff``: a batch too large for the card is halved until it fits; every sample measured.
7. ``luo_fig1_full``: ``erf run configs/luo_fig1.toml`` at full settings, timed (target < 2 minutes).

Targets (benchmarks, not pass criteria): ResNet-50 >= 20x the per-image loop and >= 0.9x the limit in
every precision; bf16 >= 1.8x float32; cone-executed plain nets >= 2.5x the limit on the crop.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_engine  # noqa: E402  (experiments/bench_engine.py: the per-image loop and the framework limit)
import erf  # noqa: E402
from erf.engine import accumulate, measure  # noqa: E402
from erf.engine.context import tf32_context  # noqa: E402
from erf.engine.probe import Probe  # noqa: E402

BUDGET_S = 450.0  # items not started by then are skipped (the whole call stays under 8 minutes)
STATUSES = ("PASS", "FAIL", "SKIP")


class Check:
    """The run's settings: sizes for CUDA or for the CPU dry run, where results go, the clock."""

    def __init__(self, dry: bool, out: Path):
        self.dry, self.out = dry, out
        self.dev = torch.device("cpu" if dry else "cuda")
        self.t0 = time.perf_counter()
        self.bench: dict[str, Any] = {"rows": [], "plain": []}

    def resnet(self) -> tuple[torch.nn.Module, int, str | None]:
        """(model, input size, layer): ResNet-50 at 224 to layer4 on CUDA; a small residual net on the dry run."""
        if self.dry:
            return erf.create_model("residual_net", depth=4, width=8, in_channels=3), 32, None
        return erf.create_model("resnet50"), 224, "layer4"

    def plain(self, depth: int) -> tuple[torch.nn.Module, int]:
        """A plain 3x3 ReLU net: 32 channels at 512 px on CUDA, 4 channels at 64 px on the dry run."""
        torch.manual_seed(depth)  # the same net whatever ran before in the process
        if self.dry:
            return erf.create_model("plain_net", depth=min(depth, 4), width=4, activation="relu", in_channels=3), 64
        return erf.create_model("plain_net", depth=depth, width=32, activation="relu", in_channels=3), 512

    def sync(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)


def _pytest(args: list[str], timeout: float) -> tuple[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "FAIL", f"timed out after {timeout:.0f} s"
    last = (p.stdout.strip().splitlines() or ["(no output)"])[-1]
    if p.returncode == 5:
        return "SKIP", f"no tests selected: {last}"
    return ("PASS" if p.returncode == 0 else "FAIL"), last


def item_pytest_gpu(c: Check) -> tuple[str, str]:
    if c.dry:
        return "SKIP", "no CUDA device: the gpu-marked tests skip themselves"
    return _pytest(["-m", "gpu", "tests"], 150)


def item_pytest_timm_torchvision(c: Check) -> tuple[str, str]:
    if c.dry:
        return "SKIP", "dry run: the timm/torchvision tests run in the ordinary suite"
    return _pytest(["tests/test_models.py", "tests/test_pretrained.py", "tests/test_transformers_engine.py",
                    "-k", "timm or torchvision or resnet or vit"], 150)


def _precision(name: str, dev: torch.device) -> tuple[dict[str, Any], Callable[[], Any]]:
    """(measure keywords, context for the framework limit) of one precision."""
    if name == "bf16":
        return {"autocast": "bf16"}, lambda: torch.autocast(dev.type, dtype=torch.bfloat16)
    if name == "tf32":
        return ({"autocast": "tf32"} if dev.type == "cuda" else {}), tf32_context
    return {}, contextlib.nullcontext


def item_bench_resnet50(c: Check) -> tuple[str, str]:
    model, size, layer = c.resnet()
    model = model.to(c.dev).eval()
    net = bench_engine.trunk(model, layer) if layer else model
    if c.dev.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    n, n_loop = (16, 4) if c.dry else (4096, 256)
    chans = 3
    t = time.perf_counter()
    bench_engine.per_image_loop(net, (size, size), chans, n_loop, c.dev)
    per_image = n_loop / (time.perf_counter() - t)
    rows, lines = [], []
    for prec in ("float32", "tf32", "bf16"):
        kw, ctx = _precision(prec, c.dev)
        measure(model, size, layer=layer, samples=8, batch_size=8, device=str(c.dev), **kw)  # warm-up
        t = time.perf_counter()
        res = measure(model, size, layer=layer, samples=n, batch_size=8 if c.dry else 64, device=str(c.dev), **kw)
        engine_s = time.perf_counter() - t
        bs = res.settings["batch_size"]
        with ctx():
            bench_engine.framework_limit(net, (size, size), chans, bs, bs, c.dev)  # warm-up at the batch
            t = time.perf_counter()
            bench_engine.framework_limit(net, (size, size), chans, n, bs, c.dev)
            limit_s = time.perf_counter() - t
        row = {"model": "resnet50" if not c.dry else "residual_net (dry run)", "input": size, "precision": prec,
               "samples": n, "batch_size": bs, "auto_batch": res.settings.get("auto_batch"),
               "engine_maps_per_s": n / engine_s, "engine_sampling_maps_per_s": n / res.settings["timing"]["sampling"],
               "limit_maps_per_s": n / limit_s, "per_image_maps_per_s": per_image}
        row["engine_vs_per_image"] = row["engine_maps_per_s"] / per_image
        row["engine_vs_limit"] = row["engine_maps_per_s"] / row["limit_maps_per_s"]
        rows.append(row)
        lines.append(f"{prec} {row['engine_maps_per_s']:.0f} maps/s (batch {bs}) = {row['engine_vs_per_image']:.1f}x "
                     f"per-image, {row['engine_vs_limit']:.2f}x limit")
    f32 = next(r for r in rows if r["precision"] == "float32")["engine_maps_per_s"]
    bf16 = next(r for r in rows if r["precision"] == "bf16")["engine_maps_per_s"]
    c.bench["rows"] = rows
    c.bench["bf16_vs_float32"] = bf16 / f32
    return "PASS", "; ".join(lines) + f"; bf16/float32 {bf16 / f32:.2f}x"


def item_bench_plain_cone(c: Check) -> tuple[str, str]:
    out = []
    for depth, n in ((20, 2048), (40, 512)):
        size = c.plain(depth)[1]
        row = bench_engine.bench_cone(min(depth, 4) if c.dry else depth, 4 if c.dry else 32, (size, size),
                                      8 if c.dry else n, 4 if c.dry else 64, c.dev, 1)
        c.bench["plain"].append(row)
        out.append(f"depth {row['depth']}: engine {row['engine_cone_vs_limit']:.2f}x limit (first call "
                   f"{row['engine_cone_first_vs_limit']:.2f}x, loop {row['cone_sampling_vs_limit']:.2f}x), "
                   f"max rel diff {row['max_relative_difference']:.1g}")
        if not row["cone"] or not row["max_relative_difference"] <= 1e-3:
            return "FAIL", "; ".join(out) + " (the cone did not run or its map differs)"
    return "PASS", "; ".join(out)


def _agree(a, b) -> tuple[float, float]:
    corr = float(np.corrcoef(a.map.ravel(), b.map.ravel())[0, 1])
    dsig = max(abs(x / y - 1) for x, y in zip(a.sigma, b.sigma))
    return corr, dsig


def item_bf16_agreement(c: Check) -> tuple[str, str]:
    parts, ok = [], True
    model, size, layer = c.resnet()
    plain, psize = c.plain(20)
    for name, m, s, lay, n in (("resnet", model, size, layer, 64 if c.dry else 1024),
                               ("plain20", plain, psize, None, 32 if c.dry else 1024)):
        kw = dict(layer=lay, samples=n, batch_size=8 if c.dry else 64, device=str(c.dev))
        a = measure(m, s, **kw)
        b = measure(m, s, autocast="bf16", **kw)
        corr, dsig = _agree(b, a)
        ok = ok and corr >= 0.999 and dsig <= 0.005
        parts.append(f"{name}: corr {corr:.5f}, sigma {100 * dsig:.2f}%")
    return ("PASS" if ok else "FAIL"), "; ".join(parts) + " (need corr >= 0.999, sigma within 0.5%)"


def item_deterministic_repeat(c: Check) -> tuple[str, str]:
    model, size, layer = c.resnet()
    kw = dict(layer=layer, samples=16 if c.dry else 256, batch_size=8 if c.dry else 64, device=str(c.dev),
              deterministic=True)
    a, b = measure(model, size, **kw), measure(model, size, **kw)
    same = np.array_equal(a.map, b.map) and np.array_equal(a.groups[0], b.groups[0])
    return ("PASS" if same else "FAIL"), f"maps {'identical' if same else 'differ'} over {a.samples} samples"


def item_oom_backoff(c: Check) -> tuple[str, str]:
    model, size, layer = c.resnet()
    if c.dry:  # a CPU does not run out of memory on cue: simulate the card's limit at 2 samples per pass
        real = Probe.maps

        def small_card(self, x):
            if x.shape[0] > 2:
                raise accumulate.OutOfMemory("CUDA out of memory (simulated on the dry run)")
            return real(self, x)
        Probe.maps = small_card
        try:
            res = measure(model, size, samples=16, batch_size=16)
        finally:
            Probe.maps = real
        big = 16
    else:
        big = 8192
        res = measure(model, size, layer=layer, samples=big, batch_size=big, auto_batch=False, device="cuda")
    ok = res.samples == big and res.settings["batch_size"] < big
    return ("PASS" if ok else "FAIL"), (f"asked {big} per pass, ran {res.settings['batch_size']}; "
                                        f"{res.samples} of {big} samples measured")


def item_luo_fig1_full(c: Check) -> tuple[str, str]:
    cmd = [sys.executable, "-m", "erf.cli", "run", str(ROOT / "configs" / "luo_fig1.toml")]
    with tempfile.TemporaryDirectory() as tmp:
        cmd += ["--check"] if c.dry else ["--out", str(Path(tmp) / "luo_fig1"), "--device", "cuda", "--quiet"]
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        t = time.perf_counter()
        try:
            p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=200)
        except subprocess.TimeoutExpired:
            return "FAIL", "over 200 s"
        dt = time.perf_counter() - t
    if p.returncode != 0:
        return "FAIL", f"exit {p.returncode}: {(p.stderr.strip().splitlines() or [''])[-1][:200]}"
    what = "config checked (dry run: --check)" if c.dry else f"full run in {dt:.0f} s (target < 120 s)"
    return "PASS", what


ITEMS: dict[str, Callable[[Check], tuple[str, str]]] = {
    "pytest_gpu": item_pytest_gpu,
    "pytest_timm_torchvision": item_pytest_timm_torchvision,
    "bench_resnet50": item_bench_resnet50,
    "bench_plain_cone": item_bench_plain_cone,
    "bf16_agreement": item_bf16_agreement,
    "deterministic_repeat": item_deterministic_repeat,
    "oom_backoff": item_oom_backoff,
    "luo_fig1_full": item_luo_fig1_full,
}


def write_bench(c: Check) -> Path:
    """engine_cuda.md/.json (engine_dryrun.* on the dry run) with the device named."""
    c.out.mkdir(parents=True, exist_ok=True)
    tag = "dryrun" if c.dry else "cuda"
    device = torch.cuda.get_device_name(c.dev) if c.dev.type == "cuda" else (platform.processor() or "cpu")
    meta = {"device": device, "torch": torch.__version__, "python": platform.python_version(), "dry_run": c.dry}
    (c.out / f"engine_{tag}.json").write_text(json.dumps({"meta": meta, **c.bench}, indent=1, default=str) + "\n")
    lines = [f"# Engine on {device} ({'CPU dry run, tiny sizes' if c.dry else 'CUDA'})", "",
             f"torch {meta['torch']}, Python {meta['python']}. Written by experiments/device_check.py.", "",
             "| model | input | precision | batch | engine maps/s | sampling loop maps/s | limit maps/s | "
             "per-image maps/s | engine / per-image (target 20x) | engine / limit (target 0.9x) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in c.bench["rows"]:
        lines.append(f"| {r['model']} | {r['input']} | {r['precision']} | {r['batch_size']} | "
                     f"{r['engine_maps_per_s']:.1f} | {r['engine_sampling_maps_per_s']:.1f} | {r['limit_maps_per_s']:.1f} | "
                     f"{r['per_image_maps_per_s']:.1f} | {r['engine_vs_per_image']:.1f}x | {r['engine_vs_limit']:.2f}x |")
    if "bf16_vs_float32" in c.bench:
        lines += ["", f"bf16 / float32 engine speed: {c.bench['bf16_vs_float32']:.2f}x (target 1.8x)."]
    if c.bench["plain"]:
        lines += ["", "| plain net | input | samples | batch | limit maps/s | engine (cone) maps/s | engine / limit "
                  "(target 2.5x) | cone loop / limit | max rel. diff |", "|---|---|---|---|---|---|---|---|---|"]
        for r in c.bench["plain"]:
            m = r["maps_per_second"]
            lines.append(f"| depth {r['depth']} | {r['input'][0]} | {r['samples']} | {r['batch']} | {m['limit']:.1f} | "
                         f"{m['engine_cone']:.1f} | {r['engine_cone_vs_limit']:.2f}x | "
                         f"{r['cone_sampling_vs_limit']:.2f}x | {r['max_relative_difference']:.2g} |")
    lines += ["", "## Items", ""] + [f"- {line}" for line in c.bench.get("summary", [])]
    path = c.out / f"engine_{tag}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes (automatic without CUDA)")
    p.add_argument("--out", default=None, help="where the benchmark files go (default results/bench; dry run: a "
                                               "temporary folder)")
    p.add_argument("--only", default=None, help="comma-separated item names (default: all)")
    args = p.parse_args(argv)
    dry = args.dry_run or not torch.cuda.is_available()
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp(prefix="device_check_")) if dry
                                           else ROOT / "results" / "bench")
    c = Check(dry, out)
    names = args.only.split(",") if args.only else list(ITEMS)
    results = []
    for name in names:
        t = time.perf_counter()
        if t - c.t0 > BUDGET_S:
            status, detail = "SKIP", f"out of time ({BUDGET_S:.0f} s budget)"
        else:
            try:
                status, detail = ITEMS[name](c)
            except Exception as exc:  # one item failing must not hide the others
                traceback.print_exc()
                status, detail = "FAIL", f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        results.append((name, status, time.perf_counter() - t, detail))
        print(f"[{name}] {status} ({results[-1][2]:.1f} s) {detail}", flush=True)
    c.bench["summary"] = [f"{n}: {s} ({dt:.1f} s) {d}" for n, s, dt, d in results]
    path = write_bench(c)
    print(f"\nwrote {path} and .json; {'CPU dry run' if dry else torch.cuda.get_device_name(0)}, "
          f"{time.perf_counter() - c.t0:.0f} s in all")
    print("SUMMARY")
    for n, s, dt, d in results:
        print(f"{s} {n} ({dt:.1f} s): {d}")
    return 0 if all(s != "FAIL" for _, s, _, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
