"""The jobs of a sharded evaluation (:mod:`kwta_robust.shards`), as plain data shipped to the workers of an executor
(local processes or Ray tasks), and the module-level functions the workers run.

* :class:`ShardJob` → :func:`run_shard`: one :class:`~kwta_robust.eval_part.EvalPart` of the evaluation (the
  whole-set steps, the cascade at one threat point on a range of whole batches, the sanity attack on a range),
  its part record written atomically after every finished unit (so a re-run resumes it);
* :class:`RerunJob` → :func:`run_rerun`: one batch of one extra run of the budget check
  (:class:`~kwta_robust.rerun_jobs.RerunBatch`).

Each job loads the model again from its :class:`~kwta_robust.loading.ModelSource` and the data from the config,
and runs with the driver's torch thread count, memory layout and determinism settings (the same summation orders and
kernels, hence the same bits as the unsharded run, and the settings its record names). :func:`warm_up` is what a
worker runs as it starts: importing this module imports torch, the runner and the attacks before the first job
arrives.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from attacks.base import eval_mode
from kwta_robust.bpda_layers import plan_bpda_layers
from kwta_robust.rerun_jobs import BatchOutcome, RerunBatch, run_rerun_batch
from kwta_robust.config import EvalConfig, resolve_device
from kwta_robust.detect import Detection
from kwta_robust.eval_part import EvalPart
from kwta_robust.evaluate import evaluate
from kwta_robust.loading import ModelSource, load_eval_data
from kwta_robust.runtime import channels_last_convolutions, torch_determinism, torch_threads
from kwta_robust.samples import select_samples


@dataclass(frozen=True)
class WorkerJob:
    """What every job carries: its label, the model to load, the config, and the torch thread count, memory
    layout and determinism settings (:func:`~kwta_robust.runtime.determinism_settings`; ``None``: the worker's own)
    of the driver's run (the same summation orders and kernels, hence the same bits, and the settings the record
    names)."""

    label: str
    model: ModelSource
    config: Mapping[str, Any]
    threads: int
    layout: str
    determinism: Mapping[str, Any] | None = field(default=None, kw_only=True)

    def eval_config(self) -> EvalConfig:
        """The config, validated again where the job runs."""
        return EvalConfig.from_dict(dict(self.config))


@dataclass(frozen=True)
class ShardJob(WorkerJob):
    """One part: the transfer sources to load too, the part (:class:`EvalPart`: steps, samples, the driver's layer
    probe), where its part record goes and how the driver's run was asked to go."""

    sources: Mapping[str, ModelSource]
    part: EvalPart
    out_path: str
    resume: bool
    strict_bpda_layers: bool
    command: Sequence[str]


@dataclass(frozen=True)
class RerunJob(WorkerJob):
    """One batch of the budget check's extra runs: the driver's layer probe (the BPDA layers) and the batch."""

    detection: Mapping[str, Any]
    strict_bpda_layers: bool
    batch: RerunBatch


def warm_up() -> int:
    """What a worker runs as it starts (the imports of this module happen on the way); its process id."""
    return os.getpid()


def run_shard(job: ShardJob) -> dict:
    """Load the models and the data, run the part; the part record as plain data."""
    cfg = job.eval_config()
    device = resolve_device(cfg.device)
    with torch_threads(job.threads), torch_determinism(job.determinism):
        loaded = job.model.load(device)
        sources = {name: source.load(device).model for name, source in job.sources.items()}
        data = load_eval_data(cfg, loaded.metadata, [loaded.model, *sources.values()])
        record = evaluate(loaded.model, data, cfg, loaded.info, out_path=job.out_path, resume=job.resume,
                          transfer_sources=sources, command=list(job.command), progress=False,
                          strict_bpda_layers=job.strict_bpda_layers, layout=job.layout, part=job.part)
    return record.to_dict()


def run_rerun(job: RerunJob) -> BatchOutcome:
    """Load the model and the samples, run the re-run batch with the BPDA layers resolved from the driver's layer
    probe, in the evaluation's memory layout; the positions broken and the queries."""
    cfg = job.eval_config()
    device = resolve_device(cfg.device)
    with torch_threads(job.threads), torch_determinism(job.determinism):
        loaded = job.model.load(device)
        model = loaded.model
        selected = select_samples(load_eval_data(cfg, loaded.metadata, [model]), cfg)
        bpda = [s for s in cfg.labelled_attacks(int(selected.num_classes)) if s.attack == "bpda"]
        layers = plan_bpda_layers(model, bpda, cfg.bpda_layers, Detection.from_dict(dict(job.detection)),
                                  job.strict_bpda_layers)
        channels_last = job.layout == "channels_last"
        with eval_mode(model), channels_last_convolutions([model] if channels_last else []):
            return run_rerun_batch(model, selected.x.to(device), selected.y.to(device), job.batch, cfg.batch_size,
                                   layers)
