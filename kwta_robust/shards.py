"""Sharded evaluation (``kwta-robust evaluate|compare ... --shards N --executor process|ray``): one model's
evaluation run by ``N`` workers and merged into the record the unsharded run writes.

The selected samples are a fixed partition into batches of ``batch_size`` (every batch's attack seeds derive from
the ids of its samples, :func:`kwta_robust.attack_plan.batch_seed`), and the batches are cut into contiguous ranges
of whole batches (:func:`unit_ranges`: up to ``RANGES_PER_SHARD`` per worker). The driver opens a session of the
executor (:mod:`kwta_robust.sweep.executors`: ``process`` = a local process pool, ``ray`` = Ray tasks; the
workers start and import while the driver works) and runs the layer probe (``EvalPart("layer-probe")``); then
every other step is a job (:mod:`kwta_robust.shard_jobs`) that loads the model again from its
:class:`~kwta_robust.loading.ModelSource` and runs with the driver's layer probe: the cascade at one threat point
on one range (``EvalPart("attacks", start, stop, detection, (norm, eps))``), the sanity attack on one range, and
the steps that look at the whole selection (clean predictions, model probes, noise probes:
``EvalPart("whole-set")``). The jobs go out longest first (:func:`plan_parts`) and the workers take the next as
they finish one, so uneven costs even out. :func:`merge_records` concatenates the per-sample lists in sample order
and recomputes every aggregate from them (accuracies and intervals, attacked and broken counts, the worst case, the
diagnostics), never averaging parts: every number and per-sample flag equals the unsharded run's (on CPU with the
same torch thread count). Only costs are summed over parts: a unit's wall time, queries and violations (its
largest violation is the maximum). Last, the budget check (:mod:`kwta_robust.budget_check`) plans its extra runs
on the merged record and sends them out batch by batch as jobs too (:func:`~kwta_robust.shard_jobs.run_rerun`).

The parts are records (``<out>.parts/layer-probe.json``, ``whole-set.json``, ``attacks-<start>-<stop>-<norm>-
<eps>.json``, ``sanity-<start>-<stop>.json``), written atomically after every finished unit and resumed like any
record, so an interrupted sharded run loses nothing; they are removed once the merged record is written. The model
and its transfer sources must be loadable where the jobs run (the same absolute paths; the factory importable).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as _dt
import functools
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from attacks.base import threat_text
from attacks.cascade import NEVER_BROKEN
from kwta_robust.attack_plan import planned_settings, planned_units
from kwta_robust.budget_check import run_budget_check
from kwta_robust.config import EvalConfig, resolve_device
from kwta_robust.diagnostics import SEVERITIES, run_checks
from kwta_robust.errors import ConfigError, KwtaRobustError, is_whole_number
from kwta_robust.eval_part import EvalPart
from kwta_robust.evaluate import evaluate
from kwta_robust.fresh_record import probed_model
from kwta_robust.locks import lock_outputs
from kwta_robust.loading import ModelForEval
from kwta_robust.plugins import plugin_provenance
from kwta_robust.randomness import DREW_AFRESH, drew_afresh, record_draws
from kwta_robust.record_index import RecordIndex
from kwta_robust.rerun_jobs import BatchOutcome, RerunBatch
from kwta_robust.results import Accuracy, AttackResult, EvalRecord, WorstCase, save_record
from kwta_robust.resume import (StalePolicy, differences, discard_stale, existing_record, parts_folder, prior_record,
                                unplanned_unit)
from kwta_robust.runtime import determinism_settings
from kwta_robust.samples import select_samples
from kwta_robust.shard_jobs import RerunJob, ShardJob, run_rerun, run_shard, warm_up
from kwta_robust.snapshot import state_digest
from kwta_robust.sweep.executors import Executor, Resources, available_executors, create_executor

logger = logging.getLogger(__name__)

#: ``--executor`` names for shards: registered sweep executors, and ``process`` for the process pool.
EXECUTOR_ALIASES: dict[str, str] = {"process": "pool"}
#: Sample ranges per worker (:func:`unit_ranges`), where there are enough batches.
RANGES_PER_SHARD = 2


@dataclass(frozen=True)
class Sharding:
    """An evaluation on ``shards`` workers of the executor ``executor`` (``process``, ``ray`` or another registered
    one) with its ``options`` (``ray``: ``address``)."""

    shards: int
    executor: str = "process"
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not is_whole_number(self.shards, 2):
            raise ConfigError(f"--shards: expected an integer >= 2 (1 = no sharding), got {self.shards!r}")
        if self.executor not in EXECUTOR_ALIASES and self.executor not in available_executors():
            raise ConfigError(f"--executor: unknown executor {self.executor!r}; use process (local processes, the "
                              "default) or ray (Ray tasks)")

    def create_executor(self) -> Executor:
        """The executor (nothing starts yet): one worker per shard. Its errors name the command-line options
        (the sweep's config names them ``executor.name`` / ``executor.address``)."""
        try:
            return create_executor(EXECUTOR_ALIASES.get(self.executor, self.executor), self.shards, **self.options)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("executor.name:", "--executor:").replace("executor.address:",
                                                                                      "--ray-address:")) from None

    @contextlib.contextmanager
    def session(self) -> Iterator[Executor]:
        """The executor with its session open: its workers start and import now, while the caller loads the model
        and the data; :func:`evaluate_sharded` given it (``executor=``) runs its jobs there, so ``compare`` starts
        the workers (and Ray) once for every model."""
        executor = self.create_executor()
        with executor.session(warm_up):
            yield executor


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


def unit_ranges(n: int, batch_size: int, shards: int) -> list[tuple[int, int]]:
    """The sample ranges the jobs are cut into: :func:`shard_bounds` with ``RANGES_PER_SHARD`` ranges per shard
    (fewer where there are fewer batches), so that a worker that finishes early takes more."""
    return shard_bounds(n, batch_size, min(math.ceil(n / batch_size), RANGES_PER_SHARD * shards))


def refuse_unmerged_parts(out_path: str | Path, resume: bool, option: str = "--shards N") -> None:
    """Before an unsharded run resumes ``out_path``: the finished parts of an interrupted sharded run of it (in
    :func:`parts_folder`) are resumed only by a sharded run, so a one-line error says so instead of redoing their
    work beside them; ``--no-resume`` (``resume`` false) starts over without them."""
    folder = parts_folder(out_path)
    if resume and folder.is_dir() and any(folder.glob("*.json")):
        raise ConfigError(f"{out_path}: {folder} holds the finished parts of an interrupted sharded run; re-run with "
                          f"{option} (the same N) to resume them, or with --no-resume to start over without them")


def plan_parts(cfg: EvalConfig, ranges: Sequence[tuple[int, int]], detection: Mapping[str, Any],
               randomness: Mapping[str, Any] | None = None) -> list[EvalPart]:
    """The parts of the evaluation, longest first (the jobs go out in this order): the cascade at every threat
    point on every range — smaller epsilons of a norm first (in a cascade more samples survive to the later,
    costlier attacks there) —, the sanity attack on every range, and the whole-set steps; each with the driver's
    ``detection`` and ``randomness`` (:mod:`kwta_robust.eval_part`)."""
    points = [(t.norm, eps, rank) for t in cfg.threats for rank, eps in enumerate(sorted(t.epsilons))]
    order = sorted(range(len(points)), key=lambda i: (points[i][2], i))
    driver = {"detection": detection, "randomness": randomness}
    parts = [EvalPart("attacks", a, b, threat=(points[i][0], points[i][1]), **driver) for i in order for a, b in ranges]
    if cfg.diagnostics.enabled and cfg.diagnostics.sanity is not None:
        parts += [EvalPart("sanity", a, b, **driver) for a, b in ranges]
    return [*parts, EvalPart("whole-set", **driver)]


def part_name(part: EvalPart) -> str:
    """The file name of a part record (in :func:`parts_folder`)."""
    if part.threat is not None:
        return f"{part.scope}-{part.start}-{part.stop}-{part.threat[0]}-{part.threat[1]!r}.json"
    return f"{part.scope}-{part.start}-{part.stop}.json" if part.samples else f"{part.scope}.json"


def evaluate_sharded(loaded: ModelForEval, data: Any, cfg: EvalConfig, sharding: Sharding, *, out_path: str | Path,
                     resume: bool = True, sources: Mapping[str, ModelForEval] | None = None,
                     command: Sequence[str] | None = None, progress: bool = True,
                     strict_bpda_layers: bool = True, lock: bool = True,
                     executor: Executor | None = None, stale: StalePolicy = StalePolicy()) -> EvalRecord:
    """Evaluate ``loaded`` on ``data`` as :func:`kwta_robust.evaluate.evaluate` would, on ``sharding.shards``
    workers (see the module docstring); the merged record is written to ``out_path``, locked for the whole run
    (``lock=False``: the caller holds the lock). ``executor``: an open :meth:`Sharding.session` to run the jobs in
    (default: a session of this run's own). ``stale``: what to do with a record at ``out_path`` of another config
    or model (:mod:`kwta_robust.resume`)."""
    with lock_outputs({"record": out_path} if lock else {}):
        return _evaluate_sharded(loaded, data, cfg, sharding, Path(out_path), resume, dict(sources or {}),
                                 command, progress, strict_bpda_layers, executor, stale)


def _evaluate_sharded(loaded: ModelForEval, data: Any, cfg: EvalConfig, sharding: Sharding, out_path: Path,
                      resume: bool, sources: dict[str, ModelForEval], command: Sequence[str] | None, progress: bool,
                      strict_bpda_layers: bool, executor: Executor | None, stale: StalePolicy) -> EvalRecord:
    """The body of :func:`evaluate_sharded` (the output locked)."""
    if loaded.source is None or any(s.source is None for s in sources.values()):
        raise ConfigError("--shards: a model was not loaded from a checkpoint or factory; the shards cannot load it")
    own_session = executor is None
    executor = sharding.create_executor() if executor is None else executor
    selected = select_samples(data, cfg)
    n = len(selected)
    shard_bounds(n, cfg.batch_size, sharding.shards)  # enough batches for the shards
    ranges = unit_ranges(n, cfg.batch_size, sharding.shards)
    done = sharded_record(out_path, loaded, cfg, selected, sources, resume, stale)
    if done is not None:
        return done
    folder = parts_folder(out_path)
    if (folder.is_symlink() or folder.exists()) and not folder.is_dir():  # a file, or a link to nothing
        raise ConfigError(f"--shards: {folder}, where this run keeps its parts, is not a folder; move it away or "
                          f"use a new {stale.option}")
    folder.mkdir(parents=True, exist_ok=True)
    # the workers start (and import) while the driver probes the layers (and, in a caller's session, loads)
    with executor.session(warm_up) if own_session else contextlib.nullcontext():
        probe = evaluate(loaded.model, data, cfg, loaded.info, out_path=folder / part_name(EvalPart("layer-probe")),
                         resume=resume, transfer_sources={k: v.model for k, v in sources.items()}, command=command,
                         progress=progress, strict_bpda_layers=strict_bpda_layers, part=EvalPart("layer-probe"))
        threads, layout, gpus = torch.get_num_threads(), recorded_layout(probe), _gpus(cfg)
        jobs = [ShardJob(f"{loaded.label} {_describe(part)}", loaded.source, cfg.to_dict(), threads, layout,
                         sources={k: v.source for k, v in sources.items()}, part=part,
                         out_path=str(folder / part_name(part)), resume=resume,
                         strict_bpda_layers=strict_bpda_layers, command=list(command or []),
                         determinism=determinism_settings())
                for part in plan_parts(cfg, ranges, dict(probe.detection), probe.provenance.get("randomness"))]
        logger.info("%s: %d samples, %d jobs (ranges %s) on %d workers of the %s executor", loaded.label, n,
                    len(jobs), ", ".join(f"{a}:{b}" for a, b in ranges), executor.workers, executor.name)
        parts = {job.label: EvalRecord.from_dict(result, job.label)
                 for job, result in _run_jobs(executor, run_shard, jobs, gpus, folder)}
        whole = parts.pop(next(job.label for job in jobs if job.part.whole_set))
        record = merge_records(whole, list(parts.values()), cfg)
        reruns = functools.partial(_run_reruns, executor, loaded, cfg, probe, strict_bpda_layers, gpus, folder)
        budget = [] if not cfg.diagnostics.enabled else run_budget_check(
            loaded.model, selected.x, selected.y, record, cfg.diagnostics.budget_check, cfg.diagnostics.thresholds,
            cfg.seed, cfg.batch_size, runner=reruns, ids=selected.indices.cpu())
    record.diagnostics = sorted(record.diagnostics + budget, key=lambda f: SEVERITIES.index(f.severity))
    record.provenance["shards"] = {"count": sharding.shards, "executor": executor.describe(),
                                   "bounds": [list(b) for b in ranges], "jobs": len(jobs)}
    save_record(record, out_path)
    shutil.rmtree(folder, ignore_errors=True)
    return record


def _gpus(cfg: EvalConfig) -> float:
    return 1.0 if resolve_device(cfg.device).type == "cuda" else 0.0


def _describe(part: EvalPart) -> str:
    where = f" on {part.start}:{part.stop}" if part.samples else ""
    what = f"{part.threat[0]} {part.threat[1]:g}" if part.threat is not None else part.scope
    return f"{what}{where}"


def _run_jobs(executor: Executor, fn: Callable[[Any], Any], jobs: Sequence[Any], gpus: float,
              folder: Path) -> list[tuple[Any, Any]]:
    """``fn`` over ``jobs`` on the executor: ``(job, result)`` pairs in the order the jobs finished; a job that
    failed is a one-line error (the finished parts stay in ``folder`` for the re-run)."""
    finished = []
    for completion in executor.map_unordered(fn, jobs, resources=lambda job: Resources(job.threads, gpus)):
        if completion.error is not None:
            raise KwtaRobustError(f"--shards: {completion.job.label} failed: {completion.error}; the finished "
                                  f"parts are kept in {folder}: once that is fixed, the same command resumes them")
        finished.append((completion.job, completion.result))
        logger.info("%s finished (%d of %d)", completion.job.label, len(finished), len(jobs))
    return finished


def _run_reruns(executor: Executor, loaded: ModelForEval, cfg: EvalConfig, probe: EvalRecord, strict: bool,
                gpus: float, folder: Path, batches: Sequence[RerunBatch]) -> list[BatchOutcome]:
    """The budget check's re-run batches as jobs on the executor (:func:`kwta_robust.shard_jobs.run_rerun`), with
    the model in the evaluation's memory layout and the BPDA layers of the driver's layer probe; their outcomes in
    the order of ``batches``."""
    jobs = [RerunJob(f"{loaded.label} budget check {i + 1}/{len(batches)} ({b.label} at {threat_text(b.norm, b.eps)})",
                     loaded.source, cfg.to_dict(), torch.get_num_threads(), recorded_layout(probe),
                     detection=dict(probe.detection), strict_bpda_layers=strict, batch=b,
                     determinism=determinism_settings())
            for i, b in enumerate(batches)]
    outcomes = {job.label: result for job, result in _run_jobs(executor, run_rerun, jobs, gpus, folder)}
    return [outcomes[job.label] for job in jobs]


def recorded_layout(record: EvalRecord) -> str:
    """The ``layout`` argument that reproduces the memory layout ``record``'s evaluation ran in: ``preserve`` when
    it kept the model as given, else ``channels_last`` (the layout :func:`kwta_robust.runtime.evaluation_layout`
    chose and checked)."""
    return "preserve" if record.provenance.get("layout") == "as given" else "channels_last"


def sharded_record(out_path: Path, loaded: ModelForEval, cfg: EvalConfig, selected: Any,
                   sources: Mapping[str, ModelForEval], resume: bool, stale: StalePolicy) -> EvalRecord | None:
    """A complete record of this model, config, transfer ``sources`` (their weights' digests), ``selected`` samples
    (their indices and values) and attack settings (label → what this version builds:
    :func:`kwta_robust.resume.differences`) already at ``out_path`` (kept as it is, but for the model section an
    unsharded re-run relabels: :func:`_relabelled`), else ``None``; a partial record of this run there is a one-line
    error (a sharded run cannot resume it), any other record is stale (``stale``: refused, nothing written, or set
    aside)."""
    transfer_sources = {k: state_digest(v.model) for k, v in sources.items()}
    indices = [int(i) for i in selected.indices.tolist()]
    settings = planned_settings(cfg, int(selected.num_classes), {k: v.model for k, v in sources.items()})
    if not resume:
        prior_record(out_path, stale)  # the merged record overwrites a record there, never another file
        return None
    old = existing_record(out_path, stale)
    if old is None:
        return None
    reason = differences(old, config_hash=cfg.config_hash(), state_sha256=state_digest(loaded.model),
                         model=loaded.info, transfer_sources=transfer_sources, indices=indices,
                         plugins=plugin_provenance(), settings=settings,
                         samples_sha256=selected.values_sha256(), config=cfg.to_dict())
    if reason is None and old.status == "complete":  # kept as it is: every unit one this config plans
        reason = unplanned_unit(old, planned_units(cfg, int(selected.num_classes), list(sources)))
    if reason is not None:
        discard_stale(out_path, reason, old.config_hash, stale)
        return None
    if drew_afresh(old):  # as evaluate's resume check (randomness.resume_conflict)
        discard_stale(out_path, DREW_AFRESH, old.config_hash, stale)
        return None
    if old.status == "complete":
        logger.info("%s holds the complete record of this model and config: nothing to do", out_path)
        return _relabelled(old, out_path)
    raise ConfigError(f"{stale.option}: {out_path} holds the partial record of an unsharded run; resume it without "
                      f"--shards, or use a new {stale.option} or {stale.restart}")


def _relabelled(record: EvalRecord, out_path: Path) -> EvalRecord:
    """A complete ``record`` kept at ``out_path`` with its model section as an unsharded run that finds it complete
    leaves it (:func:`kwta_robust.fresh_record.probed_model`: a kWTA model of one's own that a record written before
    said was ``relu`` is relabelled); written again (atomically) only where that changed it."""
    model = probed_model(record)
    if model != record.model:
        record.model = model
        save_record(record, out_path)
    return record


def merge_records(whole: EvalRecord, parts: Sequence[EvalRecord], cfg: EvalConfig) -> EvalRecord:
    """The unsharded run's record from the whole-set part and the parts on sample ranges (any order; every
    threat point and the sanity attack covered once on every range): per-sample lists concatenated in sample order,
    every aggregate recomputed from them (see the module docstring)."""
    ranges: dict[tuple[int, int], list[EvalRecord]] = {}
    for part in parts:
        ranges.setdefault((part.dataset["part"]["start"], part.dataset["part"]["stop"]), []).append(part)
    ordered = [ranges[key] for key in sorted(ranges)]
    if any(record_draws(p) != record_draws(whole) for p in parts):
        raise KwtaRobustError("--shards: the parts took different draws per verdict, though every part takes the "
                              "driver's randomness probe; evaluate the model without --shards")
    clean = []
    for pieces in ordered:
        if any(p.clean_flags != pieces[0].clean_flags for p in pieces):
            raise KwtaRobustError("--shards: two parts on the same samples disagree on the clean predictions (a model "
                                  "that is not deterministic); the parts cannot be merged")
        clean += pieces[0].clean_flags
    if clean != whole.clean_flags:
        found = whole.provenance.get("randomness")
        cause = ("the model draws from a generator of its own, which the harness cannot seed (provenance.randomness); "
                 "evaluate it without --shards" if isinstance(found, dict) and found.get("seedable") is False else
                 "a model that is not deterministic, or another torch thread count")
        raise KwtaRobustError(f"--shards: the shards' clean predictions differ from the driver's ({cause}); the parts "
                              "cannot be merged")
    record = copy.deepcopy(whole)
    record.dataset = {k: v for k, v in whole.dataset.items() if k != "part"}
    record.results, record.worst_case = [], []
    index = {id(p): RecordIndex(p) for p in parts}  # each part's results looked up per threat point, not scanned for
    for norm, eps in [(t.norm, eps) for t in cfg.threats for eps in t.epsilons]:
        pieces = _one_per_range(ordered, lambda p: index[id(p)].worst(norm, eps) is not None, threat_text(norm, eps))
        if pieces:
            at = [index[id(p)].results_at(norm, eps) for p in pieces]
            record.results += [_merge_results([a[i] for a in at]) for i in range(len(at[0]))]
            record.worst_case.append(_merge_worst([index[id(p)].worst(norm, eps) for p in pieces]))
    sanity = _one_per_range(ordered, lambda p: bool(p.sanity), "the sanity attack")
    record.sanity = [_merge_results([p.sanity[i] for p in sanity]) for i in range(len(sanity[0].sanity))] \
        if sanity else []
    if cfg.diagnostics.enabled:
        record.diagnostics = run_checks(record, cfg.diagnostics.thresholds)
    record.status = "complete"
    record.provenance["finished_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    record.provenance["wall_time_s"] = whole.provenance.get("wall_time_s", 0.0) + sum(
        float(p.provenance.get("wall_time_s") or 0.0) for p in parts)
    return record


def _one_per_range(ranges: Sequence[Sequence[EvalRecord]], holds: Any, what: str) -> list[EvalRecord]:
    """The part of every range (in sample order) for which ``holds(part)``; none at all (nothing ran there) is
    ``[]``; a range without one, or with two, is an error."""
    found = [[p for p in pieces if holds(p)] for pieces in ranges]
    if not any(found):
        return []
    if any(len(f) != 1 for f in found):
        raise KwtaRobustError(f"--shards: {what} is not in exactly one part of every sample range; the parts cannot "
                              "be merged")
    return [f[0] for f in found]


def _merge_results(pieces: Sequence[AttackResult]) -> AttackResult:
    """One unit over all samples from its shards' pieces."""
    if len({(p.label, p.norm, p.eps) for p in pieces}) != 1:
        raise KwtaRobustError("--shards: the shards ran different attack units; the parts cannot be merged")
    flags = [flag for piece in pieces for flag in piece.flags]
    queries = [p.queries for p in pieces if p.queries is not None]
    margins = [m for piece in pieces for m in piece.margins] if all(p.margins for p in pieces) else []
    rates = [e for piece in pieces for e in piece.error_rates] if all(p.error_rates for p in pieces) else []
    return dataclasses.replace(
        pieces[0], flags=flags, robust=Accuracy.of(flags.count(1), len(flags)), margins=margins, error_rates=rates,
        n_attacked=sum(1 for f in flags if f >= 0), n_broken=flags.count(0),
        wall_time_s=sum(p.wall_time_s for p in pieces), violations=sum(p.violations for p in pieces),
        max_violation=max(p.max_violation for p in pieces), queries=sum(queries) if queries else None)


def _merge_worst(pieces: Sequence[WorstCase]) -> WorstCase:
    """One threat point's worst case over all samples: ``first_broken_by`` concatenated, robust = never broken."""
    first = [index for piece in pieces for index in piece.first_broken_by]
    return dataclasses.replace(pieces[0], first_broken_by=first,
                               robust=Accuracy.of(first.count(NEVER_BROKEN), len(first)))
