"""Sharded evaluation (``kwta-robust evaluate|compare ... --shards N --executor process|ray``): one model's
evaluation split over processes or machines and merged into the record the unsharded run writes.

The selected samples are a fixed partition into batches of ``batch_size`` (every batch's attack seeds derive from
the ids of its samples, :func:`kwta_robust.evaluate.batch_seed`), and the batches are cut into ``N`` contiguous
shards of whole batches (:func:`shard_bounds`). The driver runs the steps that look at the whole selection once
(clean predictions, model and layer probes, noise probes: ``EvalPart("whole-set")``); each shard — a job on a
sweep executor (:mod:`kwta_robust.sweep.executors`: ``process`` = a local process pool, ``ray`` = Ray tasks)
that loads the model again from its :class:`~kwta_robust.loading.ModelSource` — runs every attack on its batches
with the driver's layer probe (``EvalPart("attacks", start, stop, detection)``). :func:`merge_records`
concatenates the per-sample lists in sample order and recomputes every aggregate from them (accuracies and
intervals, attacked and broken counts, the worst case, the diagnostics), never averaging shards: every number and
per-sample flag equals the unsharded run's (on CPU with the same torch thread count). Only costs are summed over
shards: a unit's wall time, queries and violations (its largest violation is the maximum).

The parts are records (``<out>.parts/whole.json``, ``shard-<i>-of-<N>.json``), written atomically after every
finished unit and resumed like any record, so an interrupted sharded run loses nothing; they are removed once the
merged record is written. The model and its transfer sources must be loadable where the shards run (the same
absolute paths; the factory importable).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from attacks.base import eval_mode
from attacks.cascade import NEVER_BROKEN
from kwta_robust.bpda_layers import plan_bpda_layers
from kwta_robust.budget_check import run_budget_check
from kwta_robust.config import EvalConfig, resolve_device
from kwta_robust.detect import Detection
from kwta_robust.diagnostics import SEVERITIES, run_checks
from kwta_robust.errors import ConfigError, KwtaRobustError
from kwta_robust.eval_part import EvalPart
from kwta_robust.evaluate import evaluate, select_samples
from kwta_robust.locks import lock_outputs
from kwta_robust.loading import ModelForEval, ModelSource, load_eval_data
from kwta_robust.runtime import channels_last_convolutions, torch_threads
from kwta_robust.results import (Accuracy, AttackResult, EvalRecord, Flag, RecordError, WorstCase, load_record,
                                save_record)
from kwta_robust.snapshot import model_device, state_digest
from kwta_robust.sweep.executors import Executor, Resources, create_executor

logger = logging.getLogger(__name__)

#: ``--executor`` names for shards: registered sweep executors, and ``process`` for the process pool.
EXECUTOR_ALIASES: dict[str, str] = {"process": "pool"}


@dataclass(frozen=True)
class Sharding:
    """``shards`` parts run by the executor ``executor`` (``process``, ``ray`` or another registered one) with its
    ``options`` (``ray``: ``address``)."""

    shards: int
    executor: str = "process"
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.shards, bool) or not isinstance(self.shards, int) or self.shards < 2:
            raise ConfigError(f"--shards: expected an integer >= 2 (1 = no sharding), got {self.shards!r}")

    def create_executor(self) -> Executor:
        """The executor (nothing starts yet): one worker per shard."""
        return create_executor(EXECUTOR_ALIASES.get(self.executor, self.executor), self.shards, **self.options)


def shard_bounds(n: int, batch_size: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` contiguous ``(start, stop)`` position ranges of whole batches covering ``0..n`` (batch counts as
    even as possible, the larger shards first)."""
    batches = math.ceil(n / batch_size)
    if shards > batches:
        raise ConfigError(f"--shards: {shards} shards need at least {shards} batches, but {n} samples in batches "
                          f"of {batch_size} make {batches}; lower --batch-size or --shards")
    per, extra = divmod(batches, shards)
    bounds, first = [], 0
    for i in range(shards):
        count = per + (1 if i < extra else 0)
        bounds.append((first * batch_size, min((first + count) * batch_size, n)))
        first += count
    return bounds


def parts_folder(out_path: str | Path) -> Path:
    """Where the parts of a sharded run of ``out_path`` are kept until they are merged."""
    return Path(f"{out_path}.parts")


@dataclass(frozen=True)
class ShardJob:
    """One shard as plain data (shipped to another process or machine): the models to load, the config, the
    samples and the layer probe (:class:`EvalPart`), where its part record goes, and the torch thread count and
    memory layout of the driver's run (the same summation orders, so the same bits)."""

    label: str
    model: ModelSource
    sources: Mapping[str, ModelSource]
    config: Mapping[str, Any]
    part: EvalPart
    out_path: str
    resume: bool
    strict_bpda_layers: bool
    command: Sequence[str]
    threads: int = 1
    layout: str = "auto"


def run_shard(job: ShardJob) -> dict:
    """What a shard's worker runs: load the models and the data, run the attacks on the shard's samples; the part
    record as plain data."""
    cfg = EvalConfig.from_dict(dict(job.config))
    device = resolve_device(cfg.device)
    with torch_threads(job.threads):
        loaded = job.model.load(device)
        sources = {name: source.load(device).model for name, source in job.sources.items()}
        data = load_eval_data(cfg, loaded.metadata, [loaded.model, *sources.values()])
        record = evaluate(loaded.model, data, cfg, loaded.info, out_path=job.out_path, resume=job.resume,
                          transfer_sources=sources, command=list(job.command), progress=False,
                          strict_bpda_layers=job.strict_bpda_layers, layout=job.layout, part=job.part)
    return record.to_dict()


def evaluate_sharded(loaded: ModelForEval, data: Any, cfg: EvalConfig, sharding: Sharding, *, out_path: str | Path,
                     resume: bool = True, sources: Mapping[str, ModelForEval] | None = None,
                     command: Sequence[str] | None = None, progress: bool = True,
                     strict_bpda_layers: bool = True, lock: bool = True) -> EvalRecord:
    """Evaluate ``loaded`` on ``data`` as :func:`kwta_robust.evaluate.evaluate` would, in ``sharding.shards``
    parts (see the module docstring); the merged record is written to ``out_path``, locked for the whole run
    (``lock=False``: the caller holds the lock)."""
    with lock_outputs({"record": out_path} if lock else {}):
        return _evaluate_sharded(loaded, data, cfg, sharding, Path(out_path), resume, dict(sources or {}),
                                 command, progress, strict_bpda_layers)


def _evaluate_sharded(loaded: ModelForEval, data: Any, cfg: EvalConfig, sharding: Sharding, out_path: Path,
                      resume: bool, sources: dict[str, ModelForEval], command: Sequence[str] | None, progress: bool,
                      strict_bpda_layers: bool) -> EvalRecord:
    """The body of :func:`evaluate_sharded` (the output locked)."""
    if loaded.source is None or any(s.source is None for s in sources.values()):
        raise ConfigError("--shards: a model was not loaded from a checkpoint or factory; the shards cannot load it")
    executor = sharding.create_executor()
    n = len(select_samples(data, cfg))
    bounds = shard_bounds(n, cfg.batch_size, sharding.shards)
    done = _finished(out_path, loaded, cfg, resume)
    if done is not None:
        return done
    folder = parts_folder(out_path)
    folder.mkdir(parents=True, exist_ok=True)
    whole = evaluate(loaded.model, data, cfg, loaded.info, out_path=folder / "whole.json", resume=resume,
                     transfer_sources={k: v.model for k, v in sources.items()}, command=command, progress=progress,
                     strict_bpda_layers=strict_bpda_layers, part=EvalPart("whole-set"))
    jobs = [ShardJob(f"{loaded.label} shard {i + 1}/{len(bounds)}", loaded.source,
                     {k: v.source for k, v in sources.items()}, cfg.to_dict(),
                     EvalPart("attacks", start, stop, dict(whole.detection)),
                     str(folder / f"shard-{i + 1}-of-{len(bounds)}.json"), resume, strict_bpda_layers,
                     list(command or []), torch.get_num_threads(), recorded_layout(whole))
            for i, (start, stop) in enumerate(bounds)]
    logger.info("%s: %d samples in %d shards on the %s executor (positions %s)", loaded.label, n, len(jobs),
                executor.name, ", ".join(f"{a}:{b}" for a, b in bounds))
    gpus = 1.0 if resolve_device(cfg.device).type == "cuda" else 0.0
    parts: dict[str, EvalRecord] = {}
    for completion in executor.map_unordered(run_shard, jobs, resources=lambda job: Resources(job.threads, gpus)):
        if completion.error is not None:
            raise KwtaRobustError(f"--shards: {completion.job.label} failed: {completion.error}; the finished "
                                  f"parts are kept in {folder}: re-run the same command to resume")
        parts[completion.job.label] = EvalRecord.from_dict(completion.result, completion.job.label)
        logger.info("%s finished (%d of %d)", completion.job.label, len(parts), len(jobs))
    record = merge_records(whole, [parts[job.label] for job in jobs], cfg)
    record.diagnostics = sorted(record.diagnostics + _budget_check(loaded.model, data, cfg, record,
                                                                   strict_bpda_layers),
                                key=lambda f: SEVERITIES.index(f.severity))
    record.provenance["shards"] = {"count": len(jobs), "executor": executor.describe(),
                                   "bounds": [list(b) for b in bounds]}
    save_record(record, out_path)
    shutil.rmtree(folder, ignore_errors=True)
    return record


def recorded_layout(record: EvalRecord) -> str:
    """The ``layout`` argument that reproduces the memory layout ``record``'s evaluation ran in: ``preserve`` when
    it kept the model as given, else ``channels_last`` (the layout :func:`kwta_robust.runtime.evaluation_layout`
    chose and checked)."""
    return "preserve" if record.provenance.get("layout") == "as given" else "channels_last"


def _finished(out_path: Path, loaded: ModelForEval, cfg: EvalConfig, resume: bool) -> EvalRecord | None:
    """A complete record of this model and config already at ``out_path`` (kept as it is), else ``None``; a
    record there that a sharded run cannot resume is a one-line error."""
    if not resume or not out_path.exists():
        return None
    try:
        old = load_record(out_path)
    except RecordError as exc:
        raise ConfigError(f"--out: cannot resume from {out_path} ({exc}); use a new --out or --no-resume") from None
    same = old.config_hash == cfg.config_hash() and old.model.get("state_sha256") == state_digest(loaded.model)
    if same and old.status == "complete":
        logger.info("%s holds the complete record of this model and config: nothing to do", out_path)
        return old
    what = "the partial record of an unsharded run" if same else "a record of a different config or model"
    raise ConfigError(f"--out: {out_path} holds {what}; resume it without --shards, or use a new --out or "
                      "--no-resume")


def _budget_check(model: torch.nn.Module, data: Any, cfg: EvalConfig, record: EvalRecord,
                  strict: bool) -> list[Flag]:
    """The budget check (:mod:`kwta_robust.budget_check`) on the merged record, run by the driver on the whole
    selection as the unsharded run does: the BPDA attacks act on the layers resolved from the driver's probe, and
    the model is in the memory layout the evaluation ran in (``record.provenance["layout"]``; float sums, hence
    the re-run's trajectories, depend on it)."""
    if not cfg.diagnostics.enabled:
        return []
    selected = select_samples(data, cfg)
    device = model_device(model)
    bpda = [s for s in cfg.labelled_attacks(int(data.num_classes)) if s.attack == "bpda"]
    layers = plan_bpda_layers(model, bpda, cfg.bpda_layers, Detection.from_dict(record.detection), strict)
    channels_last = recorded_layout(record) == "channels_last"
    with eval_mode(model), channels_last_convolutions([model] if channels_last else []):
        return run_budget_check(model, selected.x.to(device), selected.y.to(device), record,
                                cfg.diagnostics.budget_check, cfg.diagnostics.thresholds, cfg.seed, cfg.batch_size,
                                layers)


def merge_records(whole: EvalRecord, parts: Sequence[EvalRecord], cfg: EvalConfig) -> EvalRecord:
    """The unsharded run's record from the driver's whole-set part and the shards' parts (in sample order):
    per-sample lists concatenated, every aggregate recomputed from them (see the module docstring)."""
    clean = [flag for part in parts for flag in part.clean_flags]
    if clean != whole.clean_flags:
        raise KwtaRobustError("--shards: the shards' clean predictions differ from the driver's (a model that is "
                              "not deterministic, or another torch thread count); the parts cannot be merged")
    record = copy.deepcopy(whole)
    record.dataset = {k: v for k, v in whole.dataset.items() if k != "part"}
    record.results = [_merge_results([p.results[i] for p in parts]) for i in range(len(parts[0].results))]
    record.sanity = [_merge_results([p.sanity[i] for p in parts]) for i in range(len(parts[0].sanity))]
    record.worst_case = [_merge_worst([p.worst_case[i] for p in parts]) for i in range(len(parts[0].worst_case))]
    if cfg.diagnostics.enabled:
        record.diagnostics = run_checks(record, cfg.diagnostics.thresholds)
    record.status = "complete"
    record.provenance["finished_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    record.provenance["wall_time_s"] = whole.provenance.get("wall_time_s", 0.0) + sum(
        float(p.provenance.get("wall_time_s") or 0.0) for p in parts)
    return record


def _merge_results(pieces: Sequence[AttackResult]) -> AttackResult:
    """One unit over all samples from its shards' pieces."""
    if len({(p.label, p.norm, p.eps) for p in pieces}) != 1:
        raise KwtaRobustError("--shards: the shards ran different attack units; the parts cannot be merged")
    flags = [flag for piece in pieces for flag in piece.flags]
    queries = [p.queries for p in pieces if p.queries is not None]
    return dataclasses.replace(
        pieces[0], flags=flags, robust=Accuracy.of(flags.count(1), len(flags)),
        n_attacked=sum(1 for f in flags if f >= 0), n_broken=flags.count(0),
        wall_time_s=sum(p.wall_time_s for p in pieces), violations=sum(p.violations for p in pieces),
        max_violation=max(p.max_violation for p in pieces), queries=sum(queries) if queries else None)


def _merge_worst(pieces: Sequence[WorstCase]) -> WorstCase:
    """One threat point's worst case over all samples: ``first_broken_by`` concatenated, robust = never broken."""
    first = [index for piece in pieces for index in piece.first_broken_by]
    return dataclasses.replace(pieces[0], first_broken_by=first, robust=Accuracy.of(first.count(NEVER_BROKEN), len(first)))
