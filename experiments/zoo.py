"""The zoo: trace and measure one model of every timm family and every torchvision classifier.

For each model (random weights, eval mode): the trace time at 224 px (or the model's own
input size where it needs one), the strict and the local TRF of the default layer (the last
spatial stage, as ``erf measure`` picks it), the time of ``erf.measure`` with 2 samples, whether
the cone runs, closed residual branches at init, and an exactness check: in float64 at a
small input (64 px where the model runs there), with every parameter perturbed so that no
branch is closed, the support of the input gradient of the centre unit must lie inside its
clipped TRF box, and reach its edges.

    python experiments/zoo.py                      # everything: results/zoo/table.{json,md}
    python experiments/zoo.py --only resnet18 vit_tiny_patch16_224 --out /tmp/zoo

Needs timm and torchvision (the interop venv). Each model runs in a process of its own with a
time limit (a crash or a hang costs that model only); a failure is recorded with its one-line
cause, never fatal.
"""

from __future__ import annotations

import argparse
import collections
import json
import select
import subprocess
import threading
import re
import signal
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

import erf
from erf.engine import cone_plan_status
from erf.engine.target import TargetRunner, default_layer, resolve_target
from erf.engine import init_scales

TIMEOUT_S = 240
EXACT_SIZES = (64, 96, 128)
EXACT_MAX_PARAMS = 40e6  # float64 exactness check at the model's own size only below this


# ---------------------------------------------------------------- the model list
def timm_families() -> dict[str, str]:
    """Family -> its smallest model (fewest parameters, counted on the meta device)."""
    import timm  # lazy: optional, only the interop venv has it

    fams: dict[str, list[str]] = collections.defaultdict(list)
    for n in timm.list_models():
        fams[re.match(r"(tf_|gluon_|legacy_)?[a-z]+", n).group(0)].append(n)
    out = {}
    for fam, names in sorted(fams.items()):
        best = None
        for n in sorted(names, key=lambda s: (len(s), s))[:12]:
            try:
                with torch.device("meta"):
                    p = sum(t.numel() for t in timm.create_model(n).parameters())
            except Exception:
                continue
            if best is None or p < best[0]:
                best = (p, n)
        if best:
            out[fam] = best[1]
    return out


def torchvision_models() -> list[str]:
    import torchvision.models as tvm  # lazy: optional, only the interop venv has it

    return list(tvm.list_models(module=tvm))


def build(source: str, name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if source == "timm":
        import timm  # lazy: optional
        return timm.create_model(name, pretrained=False).eval()
    import torchvision.models as tvm  # lazy: optional
    kw = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    return tvm.get_model(name, weights=None, **kw).eval()


def own_size(model) -> int:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size") or cfg.get("test_input_size")
    return int(size[-1]) if size else 224


# ---------------------------------------------------------------- one model
class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout(f"over {TIMEOUT_S} s")


def one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:240]}"


def probe(source: str, name: str, family: str) -> dict:
    """Every column for one model (the worker's time limit disarmed after it, whatever happens)."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIMEOUT_S)
    try:
        return _probe(source, name, family)
    finally:
        signal.alarm(0)


def _probe(source: str, name: str, family: str) -> dict:
    """Every column for one model; a failing step records its cause and the rest go on where they can."""
    rec: dict = {"source": source, "family": family, "name": name}
    try:
        model = build(source, name)
        rec["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
        layer = default_layer(model)
        rec["layer"] = layer[0] if layer else None
        size = 224
        t = time.perf_counter()
        try:
            report = erf.receptive_field(model, size, layer=rec["layer"])
        except erf.ErfError as exc:
            if "forward pass failed" not in str(exc) or own_size(model) == size:
                raise
            size = own_size(model)
            t = time.perf_counter()
            report = erf.receptive_field(model, size, layer=rec["layer"])
        rec["trace_s"] = round(time.perf_counter() - t, 3)
        rec["input"] = size
        if rec["layer"] is None and report.target.is_global and len(report.target.shape) <= 2:
            # no stage list to pick from (no feature_info): the last traced map that is not global yet
            row = next((r for r in reversed(report.layers) if len(r.shape) > 2 and not r.is_global
                        and r.name != "input"), None)
            if row is not None:
                rec["layer"] = row.name
                report.target = row
        row = report.target
        rec.update(rf=list(row.rf), rf_local=list(row.rf_local), jump=[float(j) for j in row.jump],
                   is_global=row.is_global, local_global=row.is_global_local,
                   offset=row.to_dict()["offset"], notes=[n for n in report.notes])
        rec["off_centre_nodes"] = sum(1 for r in report.layers if r.offset)
        rec["zero_scales"] = init_scales.note(init_scales.zero_scales(model)) or ""
    except Timeout as exc:
        rec["error"] = f"trace: {exc}"
        return rec
    except Exception as exc:
        rec["error"] = f"trace: {one_line(exc)}"
        return rec
    try:
        t = time.perf_counter()
        res = erf.measure(model, size, layer=rec["layer"], samples=2, batch_size=2, bn="as_is")
        rec["measure_s"] = round(time.perf_counter() - t, 3)
        rec["erf_sigma"] = [round(float(s), 2) for s in res.sigma]
        rec["measure_notes"] = list(res.notes)
    except Timeout as exc:
        rec["error"] = f"measure: {exc}"
    except Exception as exc:
        rec["error"] = f"measure: {one_line(exc)}"
    try:
        ok, why = cone_plan_status(model, size, rec["layer"])
        rec["cone"], rec["cone_note"] = bool(ok), why
    except Timeout:
        rec["cone"], rec["cone_note"] = False, "cone: timed out"
    except Exception as exc:
        rec["cone"], rec["cone_note"] = False, one_line(exc)
    try:
        rec["exact"] = exactness(model, rec, size)
    except Timeout as exc:
        rec["exact"] = f"not checked: {exc}"
    except Exception as exc:
        rec["exact"] = f"not checked: {one_line(exc)}"
    return rec


def exactness(model, rec: dict, size: int) -> str:
    """'exact', 'inside (...)' or 'OUTSIDE (...)': the float64 gradient support against the clipped TRF box."""
    model = model.double()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():  # open closed branches (zero-init gammas, tiny layer scales)
            p.add_(0.05 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    target = None
    sizes = [s for s in EXACT_SIZES if s < size] + [size]
    for s in sizes:
        if s == size and rec.get("params_m", 0) * 1e6 > EXACT_MAX_PARAMS and s > EXACT_SIZES[-1]:
            return f"not checked: no small input runs and {rec['params_m']} M parameters in float64"
        try:
            target = resolve_target(model, (s, s), rec["layer"])
            if target.geometry is None:
                raise erf.ErfError("no geometry")
            target.geometry.index_of()
            break
        except erf.ErfError:
            target = None
    if target is None:
        return "not checked: no input size traces"
    row = target.geometry
    unit = tuple(n // 2 for n in row.output)
    x = torch.randn(1, 3, s, s, dtype=torch.float64, generator=gen).requires_grad_(True)
    out = TargetRunner(model, target)(x)  # the module's output, as erf.measure computes it
    idx = [slice(None)] * out.dim()
    for d, i in target.index_of(unit).items():
        idx[d] = i
    out[tuple(idx)].sum().backward()
    nz = x.grad.abs().sum((0, 1)) > 0
    if not nz.any():
        return f"not checked: zero gradient at {s} px"
    got = tuple((int(torch.nonzero(nz.any(1 - a)).min()), int(torch.nonzero(nz.any(1 - a)).max())) for a in (0, 1))
    box = row.box(unit, clip=True)
    where = f"{s} px, unit {list(unit)}: support {list(map(list, got))}, box {list(map(list, box))}"
    if any(g[0] < b[0] or g[1] > b[1] for g, b in zip(got, box)):
        return f"OUTSIDE ({where})"
    if got == tuple(box):
        return "exact"
    return f"inside ({where})"


# ---------------------------------------------------------------- the table
def summarise(records: list[dict]) -> dict:
    def count(src):
        rs = [r for r in records if r["source"] == src]
        traced = [r for r in rs if "trace_s" in r]
        measured = [r for r in rs if "measure_s" in r and not str(r.get("error", "")).startswith("measure")]
        return {"models": len(rs), "traced": len(traced), "measured": len(measured),
                "exact": sum(1 for r in rs if r.get("exact") == "exact"),
                "inside": sum(1 for r in rs if str(r.get("exact", "")).startswith("inside")),
                "outside": sum(1 for r in rs if str(r.get("exact", "")).startswith("OUTSIDE")),
                "cone": sum(1 for r in rs if r.get("cone")),
                "trace_over_5s": [r["name"] for r in traced if r["trace_s"] > 5],
                "max_trace_s": max((r["trace_s"] for r in traced), default=None)}
    return {"timm": count("timm"), "torchvision": count("torchvision")}


def write(out: Path, records: list[dict], meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    records = sorted(records, key=lambda r: (r["source"], r["family"], r["name"]))
    summary = summarise(records)
    (out / "table.json").write_text(json.dumps({"meta": meta, "summary": summary, "models": records}, indent=1))
    lines = [f"# The zoo: {len(records)} models", "",
             f"Made by `python experiments/zoo.py` on {meta['machine']}, torch {meta['torch']}, timm {meta['timm']}, "
             f"torchvision {meta['torchvision']}; random weights; one CPU thread per model. `rf` is the strict TRF of "
             "the default layer (gates and attention included, unclipped); `rf_local` the spatial path without "
             "them. `trace s`: `erf.receptive_field` at the input shown (224 px, or the model's own size where it "
             "needs one). `measure s`: `erf.measure` of the default layer (the last spatial stage), 2 samples, "
             "`bn='as_is'`. `exact`: with every parameter perturbed (no closed branch) and in float64 at a small "
             "input (64-128 px where the model runs there), the gradient support of the centre unit equals its "
             "clipped TRF box; `inside`: within it (an upper bound there); `OUTSIDE` would be a bug. Large "
             "fixed-size ViTs are not checked in float64 (the same attention rules are checked on the smaller ones).",
             ""]
    for src, s in summary.items():
        lines.append(f"- {src}: {s['models']} models, {s['traced']} traced, {s['measured']} measured, "
                     f"{s['exact']} exact, {s['inside']} inside, {s['outside']} outside, {s['cone']} cone-executed; "
                     f"slowest trace {s['max_trace_s']} s; traces over 5 s: {s['trace_over_5s'] or 'none'}")
    lines += ["", "| source | family | model | input | layer | trace s | measure s | rf | rf_local | cone | "
              "closed branches at init | exactness | failure |", "|" + "---|" * 13]
    for r in records:
        rf = "x".join(map(str, r.get("rf", []))) + (" (global)" if r.get("is_global") else "")
        lines.append("| " + " | ".join(str(v).replace("|", "/") for v in (
            r["source"], r["family"], r["name"], r.get("input", ""), r.get("layer", ""), r.get("trace_s", ""),
            r.get("measure_s", ""), rf, "x".join(map(str, r.get("rf_local", []))),
            "yes" if r.get("cone") else "no", (r.get("zero_scales") or "")[:80], r.get("exact", ""),
            r.get("error", ""))) + " |")
    (out / "table.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="results/zoo")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", nargs="*", help="model names (timm or torchvision)")
    ap.add_argument("--skip-torchvision", action="store_true")
    ap.add_argument("--merge", action="store_true", help="with --only: replace those rows of OUT/table.json, keep the rest")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--rewrite", action="store_true", help="rewrite OUT/table.md and the summary from OUT/table.json")
    args = ap.parse_args(argv)
    if args.rewrite:
        data = json.loads((Path(args.out) / "table.json").read_text())
        write(Path(args.out), data["models"], data["meta"])
        return 0
    if args.worker:  # a worker: one job per line on stdin, one record per line on stdout
        for line in sys.stdin:
            rec = probe(*json.loads(line))
            sys.stdout.write("ZOO " + json.dumps(rec) + "\n")
            sys.stdout.flush()
        return 0
    import timm  # lazy: optional
    import torchvision  # lazy: optional

    jobs = []
    if args.only:
        tv = set(torchvision_models())
        jobs = [("torchvision" if n in tv else "timm", n, n) for n in args.only]
    else:
        cache = Path(args.out) / "selection.json"  # the family -> smallest model choice (slow: meta builds)
        if cache.exists():
            fams = json.loads(cache.read_text())
        else:
            fams = timm_families()
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(fams, indent=1))
        jobs = [("timm", n, f) for f, n in fams.items()]
        if not args.skip_torchvision:
            jobs += [("torchvision", n, re.match(r"[a-z]+", n).group(0)) for n in torchvision_models()]
    meta = {"machine": "a 2-core CPU (no GPU)", "torch": torch.__version__, "timm": timm.__version__,
            "torchvision": torchvision.__version__, "timeout_s": TIMEOUT_S}
    out = Path(args.out)
    records = []
    if args.merge and (out / "table.json").exists():
        names = {j[1] for j in jobs}
        old = json.loads((out / "table.json").read_text())["models"]
        records = [r for r in old if r["name"] not in names]
        family = {r["name"]: r["family"] for r in old}
        jobs = [(src, name, family.get(name, fam)) for src, name, fam in jobs]
    def run_chunk(chunk: list) -> list[dict]:
        """Models one after another in one worker process (imports paid once); a crash or a hang costs
        that model only: the worker is replaced and goes on with the next."""
        done, proc = [], None
        for src, name, fam in chunk:
            if proc is None or proc.poll() is not None:
                proc = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
            proc.stdin.write(json.dumps([src, name, fam]) + "\n")
            proc.stdin.flush()
            rec, deadline = None, time.monotonic() + TIMEOUT_S + 60
            while rec is None and time.monotonic() < deadline:
                ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    break
                line = proc.stdout.readline()
                if not line:  # the worker died
                    break
                if line.startswith("ZOO "):
                    rec = json.loads(line[4:])
            if rec is None:
                proc.kill()
                proc = None
                rec = {"source": src, "family": fam, "name": name,
                       "error": f"worker: died or over {TIMEOUT_S + 60} s"}
            done.append(rec)
            progress(rec)
        if proc is not None:
            proc.stdin.close()
            proc.wait(timeout=60)
        return done

    lock = threading.Lock()
    count = [0]

    def progress(rec):
        with lock:
            records.append(rec)
            count[0] += 1
            print(f"[{count[0]}/{len(jobs)}] {rec['name']}: trace {rec.get('trace_s')} s, measure "
                  f"{rec.get('measure_s')} s, {rec.get('exact', '')} {rec.get('error', '')}", flush=True)
            if count[0] % 10 == 0:
                write(out, list(records), meta)

    chunks = [jobs[i::args.workers] for i in range(args.workers)]
    with ThreadPoolExecutor(args.workers) as pool:
        list(pool.map(run_chunk, chunks))
    write(out, records, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
