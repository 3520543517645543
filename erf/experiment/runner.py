"""Run an experiment config: measure every sweep point, then write the results folder.

``run_experiment(cfg)`` checks every model first (``config.check_models``), then measures each
point (training it first when the config asks), and writes ``summary.json``, ``sweep.csv``,
``maps.npz``, the figures and ``report.md``. Everything goes to a hidden run folder next to
the destination, ``.<name>.partial/``: each finished measurement is saved there (``saved/``),
a running one saves its sums every ``experiment.save_every`` seconds (``engine/``), and the
results are written to ``out/``, which is renamed onto ``results/<name>`` (or ``out``) only at
the very end. So an interrupted run never leaves a results folder that looks complete, and
``resume=True`` (``erf run --resume``) goes on from the last save with the same numbers.
Under ``torchrun`` every rank runs the sweep (the engine splits each measurement); rank 0
alone writes.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from erf import distributed, stats
from erf.experiment.config import Config, Point, check_models, format_value
from erf.errors import ConfigError, ErfError
from erf.io import atomic_write, save_npz, to_json

RESULTS_ROOT = "results"


@dataclass
class Record:
    """One measured map: a sweep point in one training state, its metrics with intervals, its theory."""

    point: Point
    state: str
    step: int | None
    map: np.ndarray
    se_map: np.ndarray | None
    trf: tuple[int, ...] | None
    trf_box: tuple | None
    clipped: bool
    samples: int
    seconds: float
    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float] | None]
    summary: dict
    theory_sigma: tuple[float, ...] | None = None
    theory_exact: bool = False
    notes: list[str] = field(default_factory=list)
    train: dict | None = None

    @staticmethod
    def key(point: Point, state: str) -> str:
        """The record id of ``point`` in training ``state`` ('' untrained): file names in the run folder."""
        return point.id + (f"_{state.replace(' ', '')}" if state else "")

    @property
    def id(self) -> str:
        return Record.key(self.point, self.state)

    @property
    def label(self) -> str:
        return self.point.label + (f" [{self.state}]" if self.state else "")

    def value(self, key: str):
        """Value of a sweep key, 'variant' or 'state' at this record."""
        return self.state if key == "state" else self.point.value(key)

    def interval(self, name: str) -> tuple[float, float] | None:
        ci = self.intervals.get(name)
        return None if ci is None else (float(ci[0]), float(ci[1]))


# --------------------------------------------------------------------------- entry point


def run_experiment(cfg: Config, out: str | os.PathLike | None = None, progress: bool | None = None,
                   resume: bool = False, restart: bool = False) -> Path:
    """Run ``cfg`` and write its results folder; return the folder's path.

    Everything that can be checked is checked before any measurement (``ConfigError``).
    ``progress``: a tqdm bar over the sweep (default: when stderr is a terminal). An
    interrupted run (a kill, Ctrl-C, a crash) keeps its run folder: ``resume=True`` goes on
    from its last save, ``restart=True`` discards it; with neither, a ``ConfigError`` says so.
    """
    check_models(cfg)
    device = resolve_device(cfg)
    dest = Path(out) if out is not None else Path(RESULTS_ROOT) / cfg.name
    _check_destination(cfg, dest)
    run = RunFolder(dest, fingerprint(cfg, device))
    refused = None
    if distributed.is_main():
        try:
            run.open(cfg, resume, restart)
        except ConfigError as exc:
            refused = str(exc)
    refused = distributed.broadcast_object(refused)  # every rank stops, not only rank 0
    if refused:
        raise ConfigError(refused)
    try:
        t0 = time.perf_counter()
        records = measure_all(cfg, device, run, progress)
        if distributed.is_main():
            from erf.experiment.report import write_outputs

            write_outputs(cfg, records, run.out, environment(device), time.perf_counter() - t0)
            run.finish()
    except ErfError:
        if distributed.is_main():
            run.discard()  # a bad config or model fails again on resume: nothing worth keeping
        raise
    except BaseException:
        if distributed.is_main() and run.path.is_dir():
            print(f"erf: the run so far is saved in {run.path}; 'erf run {cfg.path} --resume' goes on from there",
                  file=sys.stderr)
        raise
    distributed.barrier()
    return dest


def fingerprint(cfg: Config, device: str) -> dict:
    """What must not change between a run and its resumption: the resolved points and the device.

    The process count may change: saved measurements are reused, and the engine's per-rank saves
    of the interrupted point are ignored when the count differs (that point starts again).
    """
    exp = {k: v for k, v in cfg.settings["experiment"].items() if k not in ("save_every", "description", "title")}
    return to_json({"experiment": exp, "points": [p.settings for p in cfg.points], "device": device})


class RunFolder:
    """``.<name>.partial/`` beside the destination: saved measurements, engine saves, the results."""

    def __init__(self, dest: Path, fingerprint: dict):
        self.dest, self.fingerprint = dest, json.dumps(fingerprint, sort_keys=True)
        self.path = dest.parent / f".{dest.name}.partial"
        self.out = self.path / "out"
        self.new_parent = False  # True when opening created the results root (removed again on discard)

    def open(self, cfg: Config, resume: bool, restart: bool) -> None:
        self.new_parent = not self.dest.parent.exists()
        info = self.path / "run.json"
        if self.path.exists():
            if restart:
                shutil.rmtree(self.path)
            elif not resume:
                raise ConfigError(f"{cfg.path}: {self.path} holds an interrupted run of this experiment; add --resume "
                                  "to go on from it, or --restart to discard it")
            else:
                try:
                    same = json.loads(info.read_text()).get("fingerprint") == self.fingerprint
                except (OSError, ValueError):
                    same = False
                if not same:
                    raise ConfigError(f"{cfg.path}: the interrupted run in {self.path} was made with other settings "
                                      "(config, --quick, --seed or --device); use --restart to "
                                      "discard it, or resume with the same settings")
        for sub in ("saved", "engine", "out"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        if not info.exists():
            text = json.dumps({"fingerprint": self.fingerprint, "config": cfg.path}) + "\n"
            atomic_write(info, lambda f: Path(f).write_text(text))

    def saved(self, key: str) -> Path:
        return self.path / "saved" / f"{key}.npz"

    def engine_state(self, key: str) -> Path:
        return self.path / "engine" / f"{key}.state"

    def train_state(self, point_id: str) -> str:
        return str(self.path / "engine" / f"{point_id}.train")

    def done(self) -> set[str]:
        """Keys of the measurements already saved (rank 0's view, shared with every rank)."""
        keys = {p.stem for p in (self.path / "saved").glob("*.npz")} if distributed.is_main() else set()
        return distributed.broadcast_object(keys)

    def finish(self) -> None:
        _replace(self.out, self.dest)
        shutil.rmtree(self.path, ignore_errors=True)

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self.new_parent:
            with contextlib.suppress(OSError):  # only if still empty
                self.dest.parent.rmdir()


def resolve_device(cfg: Config) -> str:
    """'cuda' when asked or when auto finds a GPU, else 'cpu'; refuse cuda without a GPU."""
    want = cfg.settings["experiment"]["device"]
    if want == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{cfg.path}: experiment.device: 'cuda' was asked for but no CUDA device is available; "
                          "use --device cpu or auto")
    return "cuda" if want in ("auto", "cuda") and torch.cuda.is_available() else "cpu"


def _check_destination(cfg: Config, dest: Path) -> None:
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"{cfg.path}: --out: {dest} is a file, not a results folder")
    if dest.is_dir() and any(dest.iterdir()) and not (dest / "summary.json").is_file():
        raise ConfigError(f"{cfg.path}: --out: {dest} exists and is not an erf results folder (no summary.json); "
                          "choose another folder, it would be replaced")


def _replace(tmp: Path, dest: Path) -> None:
    """Move the finished folder onto ``dest``; an older results folder there is removed after."""
    old = None
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
        os.rename(dest, old / "results")
    os.rename(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def environment(device: str) -> dict:
    """Versions and the device, for summary.json and the report."""
    import erf

    if device == "cuda":
        name = torch.cuda.get_device_name(0)
    else:
        name = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
               f"{torch.get_num_threads()} torch threads)"
    import matplotlib
    import scipy

    return {"device": device, "device_name": name, "versions": {
        "erf": getattr(erf, "__version__", "?"), "torch": torch.__version__, "numpy": np.__version__,
        "scipy": scipy.__version__, "matplotlib": matplotlib.__version__, "python": platform.python_version()},
        "platform": platform.platform()}


# --------------------------------------------------------------------------- measuring


def measure_all(cfg: Config, device: str, run: RunFolder, progress: bool | None = None) -> list[Record]:
    """Every point of the sweep (every training state of it): a list of ``Record`` (rank 0's)."""
    from tqdm import tqdm

    show = (sys.stderr.isatty() if progress is None else progress) and distributed.is_main()
    done = run.done()
    records: list[Record] = []
    for point in tqdm(cfg.points, desc=cfg.name, unit="point", disable=not show, file=sys.stderr):
        records += measure_point(cfg, point, device, run, done)
    return records


def measure_point(cfg: Config, point: Point, device: str, run: RunFolder, done: set[str] = frozenset()) -> list[Record]:
    """Build (and train) the point's model and measure it; one Record per training state.

    A measurement already in ``done`` (saved by an interrupted run) is read back, not repeated;
    a training point goes on from the training state saved at its last measured step (one
    process; under torchrun it trains again from the start).
    """
    from erf.models import load_model

    s = point.settings
    seed = cfg.settings["experiment"]["seed"]
    if not s["train"]["enabled"] and Record.key(point, "") in done:
        return _saved(cfg, point, None, device, "", None, run)
    model = load_model(s["model"]["name"], s["model"]["args"], s["model"]["checkpoint"] or None, seed=seed)
    if not s["train"]["enabled"]:
        return [r for r in [_measure(cfg, point, model, device, "", None, run)] if r is not None]
    return _train_and_measure(cfg, point, model, device, seed, run, done)


def _saved(cfg, point, model, device, state, step, run) -> list[Record]:
    return [r for r in [_measure(cfg, point, model, device, state, step, run, saved=True)] if r is not None]


def _measure(cfg: Config, point: Point, model, device: str, state: str, step: int | None, run: RunFolder,
             saved: bool = False) -> Record | None:
    """Measure (or read back the saved measurement of) one point in one training state.

    Rank 0 saves the result in the run folder and returns its Record; other ranks return None.
    """
    from erf.engine import ERFResult, measure

    s = point.settings
    m, exp = s["measure"], cfg.settings["experiment"]
    seed = exp["seed"]
    key = Record.key(point, state)
    if saved:
        if not distributed.is_main():
            return None
        res = ERFResult.load(run.saved(key))
    else:
        size = s["inputs"]["size"]
        size = tuple(size) if isinstance(size, list) else size
        init = m["init"]
        if init == "model" and m["weight_draws"]:
            from erf.models import rebuild_init

            init = rebuild_init(s["model"]["name"], s["model"]["args"])
        res = measure(model, size, layer=m["layer"] or None, unit=tuple(m["unit"]) or None,
                      channel=None if m["channel"] == "all" else m["channel"], samples=m["samples"],
                      batch_size=m["batch_size"], inputs=_inputs(s, model, seed), weight_draws=m["weight_draws"],
                      init=init, signal=m["signal"], preset=m["preset"] or None, device=device,
                      normalize_draws=m["normalize_draws"],
                      dtype=exp["dtype"], seed=seed, crop=m["crop"], tol=m["tol"] or None,
                      max_samples=(m["max_samples"] or None) if m["tol"] else None,
                      prefix_tokens=None if m["prefix_tokens"] == "auto" else m["prefix_tokens"],
                      deterministic=exp["deterministic"], state_file=run.engine_state(key),
                      save_every=exp["save_every"])
        if not distributed.is_main():
            return None
        res.save(run.saved(key))
        for path in run.path.glob(f"engine/{key}.state*"):  # every rank's save of this measurement
            path.unlink(missing_ok=True)
    return _record(cfg, point, res, state, step)


def _record(cfg: Config, point: Point, res, state: str, step: int | None) -> Record:
    """Metrics with intervals, theory and summary of one measured ``ERFResult``."""
    s = point.settings
    m = s["measure"]
    seed = cfg.settings["experiment"]["seed"]
    names = s["report"]["metrics"]
    notes = list(res.notes)
    if res.trf is None and any("trf" in n for n in names):
        names = [n for n in names if "trf" not in n]
        notes.append("no TRF (the model could not be traced): the ERF/TRF metrics are left out")
    mp = res.post_map
    metrics = stats.scalar_metrics(mp, names, trf=res.trf)
    intervals = stats.metric_intervals(*res.groups, metrics=names, level=m["level"], n_boot=m["n_boot"], seed=seed,
                                       trf=res.trf, post=res.post)
    theory, exact = linear_theory(s)
    summary = _summary(mp, res, notes)
    return Record(point=point, state=state, step=step, map=mp, se_map=res.se_map, trf=res.trf,
                  trf_box=res.trf_box, clipped=res.clipped, samples=res.samples, seconds=res.seconds,
                  metrics=metrics, intervals=intervals, summary=summary, theory_sigma=theory, theory_exact=exact,
                  notes=notes)


def _summary(mp: np.ndarray, res, notes: list[str]) -> dict:
    """``stats.summarize`` of the map; a map with a tiny peak is summarised divided by its peak.

    Gradients that vanish with depth (sigmoid) leave peaks near 1e-20, where the Gaussian fit and
    log10(1 + x) lose all precision; every metric but the hcar_log1p_max family is scale-free.
    """
    peak = float(mp.max())
    if peak >= 1e-6:
        try:
            return stats.summarize(mp, trf=res.trf, trf_box=res.trf_box)
        except ErfError as exc:
            notes.append(f"summary of the raw map failed ({exc})")
    summary = stats.summarize(mp / peak, trf=res.trf, trf_box=res.trf_box)
    summary.update(total=float(mp.sum()), peak=peak)
    notes.append(f"summary computed on the map divided by its peak ({peak:.3g}); total and peak are raw")
    return summary


def _inputs(settings: dict, model, seed: int):
    """The engine's ``inputs``: a noise name, or an iterable over local images (``ImageSampler``)."""
    inp = settings["inputs"]
    if inp["kind"] != "images":
        return inp["kind"]
    from erf.analytic import infer_in_channels
    from erf.training.tasks import load_images

    size = inp["size"]
    images = load_images(inp["path"], size if isinstance(size, int) else tuple(size), count=inp["count"], seed=seed,
                         channels=infer_in_channels(model))
    return ImageSampler(images, inp["sampler"], seed)


class ImageSampler:
    """Iterable of single images: drawn at random with replacement (seeded) or in order, cycling.

    Every ``iter()`` starts the same stream, so each weight draw sees the same images.
    """

    def __init__(self, images: torch.Tensor, sampler: str, seed: int):
        self.images, self.sampler, self.seed = images, sampler, seed

    def __iter__(self):
        n = len(self.images)
        gen = torch.Generator().manual_seed(self.seed)
        i = 0
        while True:
            j = int(torch.randint(n, (1,), generator=gen)) if self.sampler == "random" else i % n
            i += 1
            yield self.images[j]


def linear_theory(settings: dict) -> tuple[tuple[float, ...] | None, bool]:
    """Exact sigma of the chain of uniform kernels of a ``plain_net`` (Luo's linear theory).

    Returns ``(sigma per axis, exact)``: ``exact`` is True where the measured map must equal the
    theory (constant weights, linear activations, no bias, a non-squaring signal). ``(None, False)``
    for other models, a layer other than the output, normalisation, a checkpoint or training.
    """
    from erf.analytic import Layer, linear_erf

    model, meas = settings["model"], settings["measure"]
    if (model["name"] != "plain_net" or meas["layer"] or model["checkpoint"] or settings["train"]["enabled"]
            or model["args"].get("norm", "none") not in ("none", None)):
        return None, False
    import inspect

    from erf.models import builders

    defaults = {k: p.default for k, p in inspect.signature(builders.plain_net).parameters.items()}
    a = {**defaults, **model["args"]}
    depth, k = int(a["depth"]), int(a["kernel_size"])
    strides = set(a["strides"] or [])
    dil = a["dilation"] if isinstance(a["dilation"], list) else [a["dilation"]] * depth
    layers = [Layer(k, 2 if i in strides else 1, 0, int(dil[i])) for i in range(depth)]
    sigma = linear_erf(layers).sigma
    exact = (meas["init"] == "constant" and str(a["activation"]).lower() in ("linear", "none")
             and not a["bias"] and meas["signal"] in ("abs", "signed", "positive") and not meas["preset"])
    return tuple(float(v) for v in sigma), bool(exact)


# --------------------------------------------------------------------------- training


def _train_and_measure(cfg: Config, point: Point, model, device: str, seed: int, run: RunFolder,
                       done: set[str]) -> list[Record]:
    """Train the point's model; measure it at step 0, at ``train.checkpoints`` and at the end.

    The trained weights go to ``weights/<point>.pt`` in the results (a plain state_dict that
    ``erf measure MODEL --checkpoint`` and ``model.checkpoint`` load).
    """
    from erf.analytic import infer_in_channels
    from erf.training.tasks import make_task
    from erf.training.train import train

    tr = point.settings["train"]
    size = tr["size"] or point.settings["inputs"]["size"]
    size = size if isinstance(size, int) else tuple(size)
    task = make_task(tr["task"], size=size, channels=infer_in_channels(model), seed=seed, **tr["task_args"])
    by_step: dict[int, Record | None] = {}

    def state_of(step):
        return "init" if step == 0 else "trained" if step == tr["steps"] else f"step {step}"

    def on_checkpoint(step, net):
        state = state_of(step)
        by_step[step] = _measure(cfg, point, net, device, state, step, run, saved=Record.key(point, state) in done)

    # one process: training saves its state at each measured step, and a resumed run goes on from there
    state_file = run.train_state(point.id) if distributed.world_size() == 1 else None
    result = train(model, task, steps=tr["steps"], batch_size=tr["batch_size"], lr=tr["lr"], device=device,
                   seed=seed, checkpoint_every=sorted(set(tr["checkpoints"])), on_checkpoint=on_checkpoint,
                   state_file=state_file)
    records = []
    for step in result.config["checkpoint_steps"]:  # steps measured before an interruption come from their saves
        record = by_step[step] if step in by_step else _measure(cfg, point, None, device, state_of(step), step, run,
                                                                saved=True)
        if record is not None:
            records.append(record)
    info = {"task": task.description, "steps": result.steps, "seconds": result.seconds,
            "eval": result.eval, "train_loss": result.train_loss, "config": result.config}
    if not distributed.is_main():
        return records
    if tr["save_weights"]:
        path = run.out / "weights" / f"{point.id}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
        info["weights"] = str(path.relative_to(run.out))
    records[-1].train = to_json(info)
    return records


# --------------------------------------------------------------------------- files


def write_csv(records: list[Record], keys: list[str], metrics: list[str], path: Path) -> None:
    """One row per record: ids, swept values, TRF, every metric with ``_lo``/``_hi``, theory."""
    axes = None
    header = ["id", "point", "variant", "state", "step", *[k for k in keys if k != "variant"], "samples"]
    rows = []
    for r in records:
        axes = stats.axis_names(r.map.ndim)
        row = {"id": r.id, "point": r.point.id, "variant": r.point.variant, "state": r.state,
               "step": "" if r.step is None else r.step, "samples": r.samples}
        for k in keys:
            if k != "variant":
                row[k] = format_value(r.point.value(k))
        for i, a in enumerate(axes):
            row[f"trf_{a}"] = "" if r.trf is None else r.trf[i]
        for name in metrics:
            ci = r.interval(name)
            row[name] = _num(r.metrics.get(name))
            row[f"{name}_lo"] = "" if ci is None else _num(ci[0])
            row[f"{name}_hi"] = "" if ci is None else _num(ci[1])
        for i, a in enumerate(axes):
            row[f"theory_sigma_{a}"] = "" if r.theory_sigma is None else _num(r.theory_sigma[i])
        row["theory_exact"] = r.theory_exact
        row["clipped"] = r.clipped
        row["seconds"] = round(r.seconds, 3)
        rows.append(row)
    axes = axes or ("y", "x")
    header += [f"trf_{a}" for a in axes]
    for name in metrics:
        header += [name, f"{name}_lo", f"{name}_hi"]
    header += [f"theory_sigma_{a}" for a in axes] + ["theory_exact", "clipped", "seconds"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(rows)


def _num(v):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return f"{v:.6g}" if isinstance(v, float) else v


def write_maps(records: list[Record], path: Path) -> None:
    """Every mean map (and SE map) as float32 in one compressed .npz, keyed by record id."""

    arrays = {}
    for r in records:
        arrays[f"{r.id}_map"] = r.map.astype(np.float32)
        if r.se_map is not None:
            arrays[f"{r.id}_se"] = r.se_map.astype(np.float32)
        if r.trf_box is not None:
            arrays[f"{r.id}_trf_box"] = np.asarray(r.trf_box, dtype=np.int64)
    save_npz(path, arrays, compressed=True)


def record_dict(r: Record) -> dict:
    """JSON-ready record for summary.json."""
    axes = stats.axis_names(r.map.ndim)
    d = {"id": r.id, "point": r.point.id, "label": r.label, "variant": r.point.variant, "state": r.state,
         "step": r.step, "params": {k: v for k, v in r.point.params.items()},
         "model": r.point.settings["model"], "inputs": r.point.settings["inputs"],
         "measure": r.point.settings["measure"], "trf": None if r.trf is None else list(r.trf),
         "trf_box": None if r.trf_box is None else [list(b) for b in r.trf_box], "clipped": r.clipped,
         "samples": r.samples, "seconds": r.seconds,
         "metrics": {k: r.metrics.get(k) for k in r.metrics},
         "intervals": {k: (None if v is None else list(v)) for k, v in r.intervals.items()},
         "theory": None if r.theory_sigma is None else {
             "sigma": dict(zip(axes, r.theory_sigma)), "erf_size": {a: 2 * s for a, s in zip(axes, r.theory_sigma)},
             "exact": r.theory_exact},
         "summary": r.summary, "notes": r.notes}
    if r.train is not None:
        d["train"] = r.train
    return to_json(d)


def write_json(obj, path: Path) -> None:
    with open(path, "w") as f:
        json.dump(to_json(obj), f, indent=1, allow_nan=False)
        f.write("\n")

