"""Measuring one sweep point: build (and train) its model, measure it, save each measurement.

``measure_point`` builds the point's model from the seed and measures it (``measure_state``);
a training point is trained first and measured at step 0, at ``train.checkpoints`` and at the
end (``train_and_measure``). Each finished measurement is saved in the run folder; one saved by
an interrupted run is read back instead of repeated. ``measure_keywords`` turns the config's
``[measure]`` table into ``erf.measure`` keywords (``UNSET``: the config's spellings of "not
set", which the engine spells None; ``CONFIG_ONLY``: the keys the engine does not take).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn as nn

from erf import distributed
from erf.analytic import infer_in_channels
from erf.engine import ERFResult, measure
from erf.engine.profile import measure_targets
from erf.engine.images import generate_images
from erf.experiment.profiles import profile_key, profile_layers, profile_targets, profiled
from erf.experiment.records import Record, make_record
from erf.experiment.runfolder import RunFolder
from erf.experiment.sweeps import Config, Point
from erf.io import to_json
from erf.models import load_model, rebuild_init
from erf.training import load_images, make_task, train

# A training point's states measured again on the config's noise probes carry this suffix (run-folder keys).
NOISE_SUFFIX = " noise"

# The [measure] keys erf.measure does not take: the report's interval settings (used by records).
CONFIG_ONLY = ("level", "n_boot")

# How a config spells "not set" for each [measure] key that has such a value; erf.measure spells it None.
UNSET: dict[str, Any] = {"layer": "", "unit": [], "channel": "all", "preset": "", "tol": 0.0, "max_samples": 0,
                         "prefix_tokens": "auto", "mean": [], "std": []}


def measure_keywords(measure_settings: dict[str, Any]) -> dict[str, Any]:
    """The ``erf.measure`` keywords of a point's ``[measure]`` table.

    Every key but ``CONFIG_ONLY`` is a keyword of the same name; a value equal to its ``UNSET``
    spelling becomes None, a unit list a tuple, and ``max_samples`` applies only with ``tol``.

    Args:
        measure_settings: the point's ``settings["measure"]``.

    Returns:
        Keyword arguments for ``erf.measure`` (``init`` as the config names it).
    """
    kw: dict[str, Any] = {}
    for key, value in measure_settings.items():
        if key in CONFIG_ONLY:
            continue
        if key in UNSET and value == UNSET[key]:
            value = None
        elif key == "unit":
            value = tuple(value)
        kw[key] = value
    if not measure_settings["tol"]:
        kw["max_samples"] = None  # a cap on an adaptive run only
    return kw


def network_seed(cfg: Config, point: Point, network: int) -> int:
    """The seed of network ``network`` of ``point``: its weights, training order and probe inputs.

    Network k of every point shares a seed only with ``experiment.common_seeds``; otherwise each
    point's networks get their own seeds (point 0's network 0 keeps the experiment's seed).

    Args:
        cfg: the experiment.
        point: the sweep point.
        network: the network's index (0-based).

    Returns:
        The seed.
    """
    exp = cfg.settings["experiment"]
    return exp["seed"] + network + (0 if exp["common_seeds"] else 1000 * point.index)


Measured = tuple[str, "int | None", ERFResult, "dict | None"]  # (state, step, result, training info)


def measure_point(cfg: Config, point: Point, device: str, run: RunFolder,
                  done: set[str] | frozenset[str] = frozenset()) -> list[Record]:
    """Build (and train) the point's ``model.networks`` networks and measure each; one Record per state.

    A measurement already in ``done`` (saved by an interrupted run) is read back, not repeated;
    a training point goes on from the training state saved at its last measured step (one
    process; under torchrun it trains again from the start). The networks' measurements of a
    state make one Record (``make_record``: networks, then inputs, resampled by its intervals).

    Args:
        cfg: the experiment.
        point: the sweep point.
        device: "cpu" or "cuda".
        run: the run folder (saves are read from and written to it).
        done: keys of the measurements already saved (``RunFolder.done``).

    Returns:
        The point's records (rank 0's; other ranks get an empty list).
    """
    s = point.settings
    measured: list[Measured] = []
    profiles: dict[str, list[list[ERFResult]]] = {}  # [profile]: state -> each network's layers
    for k in range(s["model"]["networks"]):
        seed = network_seed(cfg, point, k)
        kw = {"network": k} if k else {}  # network 0 keeps the short call (and its saved keys)
        if s["train"]["enabled"]:
            model = load_model(s["model"]["name"], s["model"]["args"], s["model"]["checkpoint"] or None, seed=seed,
                               pretrained=s["model"]["pretrained"])
            measured += train_and_measure(cfg, point, model, device, seed, run, done, profiles=profiles, **kw)
            continue
        saved = Record.key(point, "", k) in done
        model = None
        if not saved or not profile_saved(point, "", k, done):
            model = load_model(s["model"]["name"], s["model"]["args"], s["model"]["checkpoint"] or None, seed=seed,
                               pretrained=s["model"]["pretrained"])
        res = measure_state(cfg, point, model, device, "", None, run, saved=saved, **kw)
        prof = measure_profile(cfg, point, model, device, "", run, done, **kw)
        if prof is not None:
            profiles.setdefault("", []).append(prof)
        if res is not None:
            measured.append(("", None, res, None))
    if not distributed.is_main() or not measured:
        return []
    records = []
    alt = {}
    for state in dict.fromkeys(m[0] for m in measured):
        of_state = [m for m in measured if m[0] == state]
        infos = [m[3] for m in of_state if m[3] is not None]
        record = make_record(cfg, point, [m[2] for m in of_state], state, of_state[0][1])
        if infos:
            record.train = to_json({**infos[0], "networks": list(infos)})  # each network's loss curve too
        if state in profiles:
            record.profile = profile_layers(cfg, point, state, of_state[0][1], profiles[state])
        if state.endswith(NOISE_SUFFIX):
            alt[state[:-len(NOISE_SUFFIX)]] = record
        else:
            records.append(record)
    for r in records:
        if r.state in alt:
            r.alt = alt[r.state]
            r.probe = "task"
            r.alt.probe = "noise"
    return records


def measure_state(cfg: Config, point: Point, model: nn.Module | None, device: str, state: str, step: int | None,
                  run: RunFolder, saved: bool = False, network: int = 0, probes: Any = None) -> ERFResult | None:
    """Measure (or read back the saved measurement of) one network of a point in one training state.

    Args:
        cfg: the experiment.
        point: the sweep point.
        model: its model (None with ``saved``).
        device: "cpu" or "cuda".
        state: the training state ("" untrained).
        step: the training step, or None.
        run: the run folder.
        saved: read the measurement back from the run folder instead of measuring.
        network: the network's index (its seed: ``network_seed``).
        probes: the engine's ``inputs`` instead of the config's (a training task's held-out images).

    Returns:
        Rank 0 saves the result in the run folder and returns it; other ranks return None.
    """
    s = point.settings
    m, exp = s["measure"], cfg.settings["experiment"]
    seed = network_seed(cfg, point, network)
    key = Record.key(point, state, network)
    if saved:
        if not distributed.is_main():
            return None
        return ERFResult.load(run.saved(key))
    size = s["inputs"]["size"]
    size = tuple(size) if isinstance(size, list) else size
    kw = measure_keywords(m)
    if m["init"] == "model" and m["weight_draws"]:
        kw["init"] = rebuild_init(s["model"]["name"], s["model"]["args"])
    res = measure(model, size, **kw, inputs=_inputs(s, model, seed) if probes is None else probes, device=device, dtype=exp["dtype"],
                  seed=seed, deterministic=exp["deterministic"], state_file=run.engine_state(key),
                  save_every=exp["save_every"])
    if not distributed.is_main():
        return None
    run.save_result(key, res)  # with its checksum, verified on resume
    for path in run.path.glob(f"engine/{key}.state*"):  # every rank's save of this measurement
        path.unlink(missing_ok=True)
    return res


def profile_saved(point: Point, state: str, network: int, done: set[str] | frozenset[str]) -> bool:
    """Whether every profiled layer of one network of ``point`` in ``state`` is saved (True without [profile]).

    Args:
        point: the sweep point.
        state: the training state ("" untrained).
        network: the network's index.
        done: keys of the measurements already saved (``RunFolder.done``).

    Returns:
        True when nothing is left to measure.
    """
    n = len(point.settings["profile"]["layers"])
    return all(profile_key(point, state, network, i) in done for i in range(n))


def measure_profile(cfg: Config, point: Point, model: nn.Module | None, device: str, state: str, run: RunFolder,
                    done: set[str] | frozenset[str] = frozenset(), network: int = 0,
                    probes: Any = None) -> list[ERFResult] | None:
    """``[profile]``: measure (or read back) the profiled layers of one network in one state, from shared passes.

    The point's ``[measure]`` options apply (samples: ``profile.samples`` when set; ``profile.channel``;
    no ``tol``), on the same probe inputs as the point's own measurement, with the network's seed. Each
    layer's result is saved in the run folder (``profiles.profile_key``), so a resumed run reads them back.

    Args:
        cfg: the experiment.
        point: the sweep point.
        model: the network in this state (None when every layer is saved: ``profile_saved``).
        device: "cpu" or "cuda".
        state: the training state ("" untrained).
        run: the run folder.
        done: keys of the measurements already saved.
        network: the network's index.
        probes: the engine's ``inputs`` instead of the config's (a training task's held-out images).

    Returns:
        The layers' results in the order of ``[profile] layers``; None without [profile] (or on ranks > 0).
    """
    s = point.settings
    if not profiled(s) or not distributed.is_main():
        return None
    keys = [profile_key(point, state, network, i) for i in range(len(s["profile"]["layers"]))]
    if model is None or all(k in done for k in keys):
        return [ERFResult.load(run.saved(k)) for k in keys]
    exp = cfg.settings["experiment"]
    seed = network_seed(cfg, point, network)
    size = s["inputs"]["size"]
    kw = {k: v for k, v in measure_keywords(s["measure"]).items() if k not in ("layer", "unit", "tol", "max_samples",
                                                                                  "channel")}
    if s["measure"]["init"] == "model" and s["measure"]["weight_draws"]:
        kw["init"] = rebuild_init(s["model"]["name"], s["model"]["args"])
    kw["samples"] = s["profile"]["samples"] or s["measure"]["samples"]
    results = measure_targets(model, tuple(size) if isinstance(size, list) else size, profile_targets(s), **kw,
                              inputs=_inputs(s, model, seed) if probes is None else probes, device=device,
                              dtype=exp["dtype"], seed=seed, deterministic=exp["deterministic"])
    for k, res in zip(keys, results):
        run.save_result(k, res)
    return results


#: Held-out task images used as probes of a training point (the task's evaluation stream).
TASK_PROBES = 512


def task_probes(settings: dict, task: Any, seed: int) -> ImageSampler | None:
    """The probes of a training point whose config asks for noise: the task's held-out images, else None.

    The task is drawn at the measured input size (``train.size`` may differ). A trained network's
    BatchNorm holds statistics of its training images; noise at another scale
    (N(0, 1) against images of std 0.14-0.21) measures the network off its data, and a change through
    training then mixes learning with that mismatch. So a training point is probed with the task's
    held-out images (its evaluation stream, ``TASK_PROBES`` of them drawn with the network's seed) at
    every state, and fresh BatchNorm at init is calibrated on those same images (``bn = "auto"``). The
    config's noise is measured too, at init and at the end, and the report gives both.

    Args:
        settings: the point's settings.
        task: its training task (``erf.training.make_task``).
        seed: the network's seed (the order the probes are drawn in).

    Returns:
        The sampler, or None where the config's inputs are images already (or not noise).
    """
    if settings["inputs"]["kind"] not in ("gaussian", "uniform"):
        return None
    images = task.probe_images(TASK_PROBES)
    return ImageSampler(images, "random", seed)


def _inputs(settings: dict, model: nn.Module, seed: int) -> str | ImageSampler:
    """The engine's ``inputs``: a noise name, a PATH of images (``erf.engine.images``; generated ones for
    kind = 'generated'), or with sampler = 'sequential' an iterable over loaded images (``ImageSampler``)."""
    inp = settings["inputs"]
    if inp["kind"] == "generated":
        return generate_images(inp["count"], inp["size"], seed)
    if inp["kind"] != "images":
        return inp["kind"]
    if inp["sampler"] == "random":
        return inp["path"]
    size = inp["size"]
    images = load_images(inp["path"], size if isinstance(size, int) else tuple(size), count=inp["count"], seed=seed,
                         channels=infer_in_channels(model))
    return ImageSampler(images, inp["sampler"], seed)


class ImageSampler:
    """Iterable of single images: drawn at random with replacement (seeded) or in order, cycling.

    Every ``iter()`` starts the same stream, so each weight draw sees the same images.
    """

    def __init__(self, images: torch.Tensor, sampler: str, seed: int):
        """Sample from ``images`` (N, C, *size) by ``sampler`` ("random" or "sequential") with ``seed``."""
        self.images, self.sampler, self.seed = images, sampler, seed

    def __iter__(self) -> Iterator[torch.Tensor]:
        n = len(self.images)
        gen = torch.Generator().manual_seed(self.seed)
        i = 0
        while True:
            j = int(torch.randint(n, (1,), generator=gen)) if self.sampler == "random" else i % n
            i += 1
            yield self.images[j]


def train_and_measure(cfg: Config, point: Point, model: nn.Module, device: str, seed: int, run: RunFolder,
                      done: set[str] | frozenset[str], network: int = 0,
                      profiles: dict[str, list[list[ERFResult]]] | None = None) -> list[Measured]:
    """Train one network of the point; measure it at step 0, at ``train.checkpoints`` and at the end.

    The trained weights go to ``weights/<point>.pt`` (network k > 0: ``<point>_n<k>.pt``) in the
    results (a plain state_dict that ``erf measure MODEL --checkpoint`` and ``model.checkpoint`` load).
    The task's data come from the experiment's seed (the same for every network); the weights and
    the order of the training batches from ``seed``.

    Args:
        cfg: the experiment.
        point: a sweep point with ``train.enabled``.
        model: its freshly built model (trained in place).
        device: "cpu" or "cuda".
        seed: the network's seed (``network_seed``).
        run: the run folder.
        done: keys of the measurements already saved.
        network: the network's index.
        profiles: with ``[profile]``, each measured state's profiled layers are appended here
            (state -> one list per network, rank 0's).

    Returns:
        ``(state, step, result, info)`` per measured step (rank 0's); ``info`` (the training
        info) only on the last one.
    """
    tr = point.settings["train"]
    size = tr["size"] or point.settings["inputs"]["size"]
    size = size if isinstance(size, int) else tuple(size)
    task = make_task(tr["task"], size=size, channels=infer_in_channels(model), seed=cfg.settings["experiment"]["seed"],
                     **tr["task_args"])
    by_step: dict[int, ERFResult | None] = {}
    kw = {"network": network} if network else {}

    def state_of(step):
        return "init" if step == 0 else "trained" if step == tr["steps"] else f"step {step}"

    probe_size = point.settings["inputs"]["size"]
    probe_size = probe_size if isinstance(probe_size, int) else tuple(probe_size)
    probe_task = task if probe_size == size else make_task(  # the same task drawn at the measured size
        tr["task"], size=probe_size, channels=infer_in_channels(model), seed=cfg.settings["experiment"]["seed"],
        **tr["task_args"])
    probes = task_probes(point.settings, probe_task, seed)
    noise_by_step: dict[int, ERFResult | None] = {}
    prof_by_step: dict[int, list[ERFResult] | None] = {}

    def on_checkpoint(step, net):
        state = state_of(step)
        by_step[step] = measure_state(cfg, point, net, device, state, step, run,
                                      saved=Record.key(point, state, network) in done, probes=probes, **kw)
        prof_by_step[step] = measure_profile(cfg, point, net, device, state, run, done, probes=probes, **kw)
        if probes is not None and step in (0, tr["steps"]):  # the config's noise too, at init and at the end
            noisy = state + NOISE_SUFFIX
            noise_by_step[step] = measure_state(cfg, point, net, device, noisy, step, run,
                                                saved=Record.key(point, noisy, network) in done, **kw)

    # one process: training saves its state at each measured step, and a resumed run goes on from there
    state_file = run.train_state(point.id + (f"_n{network}" if network else "")) \
        if distributed.world_size() == 1 else None
    result = train(model, task, steps=tr["steps"], batch_size=tr["batch_size"], lr=tr["lr"], device=device,
                   seed=seed, checkpoint_every=sorted(set(tr["checkpoints"])), on_checkpoint=on_checkpoint,
                   state_file=state_file)
    out: list[Measured] = []
    for step in result.config["checkpoint_steps"]:  # steps measured before an interruption come from their saves
        res = by_step[step] if step in by_step else measure_state(cfg, point, None, device, state_of(step), step,
                                                                  run, saved=True, **kw)
        if res is not None:
            out.append((state_of(step), step, res, None))
        prof = prof_by_step[step] if step in prof_by_step else measure_profile(cfg, point, None, device,
                                                                               state_of(step), run, done, **kw)
        if prof is not None and profiles is not None:
            profiles.setdefault(state_of(step), []).append(prof)
    for step in (0, tr["steps"]) if probes is not None else ():
        noisy = state_of(step) + NOISE_SUFFIX
        res = noise_by_step[step] if step in noise_by_step else measure_state(cfg, point, None, device, noisy, step,
                                                                              run, saved=True, **kw)
        if res is not None:
            out.insert(0, (noisy, step, res, None))  # the last entry stays the trained state (it gets the info)
    if not distributed.is_main() or not out:
        return out
    info = {"network": network, "seed": seed, "task": task.description, "steps": result.steps,
            "seconds": result.seconds, "eval": result.eval, "train_loss": result.train_loss, "config": result.config}
    if tr["save_weights"]:
        path = run.out / "weights" / f"{point.id}{f'_n{network}' if network else ''}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
        info["weights"] = str(path.relative_to(run.out))
    out[-1] = (*out[-1][:3], info)
    return out
