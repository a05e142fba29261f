"""Running a sweep: the driver. It validates once (devices, the evaluation's samples), locks the folder
(``sweep.json.lock``), plans the cells, skips finished ones without training or evaluating them (it reads their
records and checkpoints only), hands the rest to the executor and records every outcome in the manifest as it
arrives; failed cells are reported and retried by the next run (the retry policy is the driver's, not the
executor's).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from kwta_robust.config import resolve_device
from kwta_robust.errors import ConfigError, KwtaRobustError, OriginFixError
from kwta_robust.loading import load_eval_data
from kwta_robust.locks import OutputLock
from kwta_robust.results import EvalRecord
from kwta_robust.safe_paths import shown_path
from kwta_robust.samples import select_samples
from kwta_robust.sweep.cells import finished_record, outcome_of, run_cell
from kwta_robust.sweep.config import SweepConfig
from kwta_robust.sweep.executors import Executor
from kwta_robust.sweep.manifest import Manifest, manifest_path
from kwta_robust.sweep.outputs import check_sweep_outputs
from kwta_robust.sweep.placement import build_executor, cell_resources
from kwta_robust.sweep.plans import CellOutcome, CellPlan, longest_first, other_recipes, plan_cells

logger = logging.getLogger(__name__)


@dataclass
class SweepResult:
    """What a sweep run produced: the manifest, the outcome of every cell and the complete records."""

    out_dir: Path
    manifest: dict
    outcomes: dict[str, CellOutcome]
    plans: list[CellPlan]
    interrupted: bool = False

    @property
    def failed(self) -> list[CellPlan]:
        return [p for p in self.plans if p.cell_id in self.outcomes and self.outcomes[p.cell_id].status == "failed"]

    def records(self) -> list[EvalRecord]:
        """Complete records of this sweep's cells, in grid order (failed or unfinished cells are left out)."""
        return [r for r in (finished_record(p) for p in self.plans) if r is not None]


def run_sweep(cfg: SweepConfig, out_dir: str | Path, *, executor: Executor | None = None,
              progress: bool = True) -> SweepResult:
    """Run every unfinished cell of ``cfg`` (train or reuse, evaluate or resume) with ``executor`` (default: the
    config's). Finished cells are skipped without training or evaluating (their records and checkpoints are read,
    :func:`~kwta_robust.sweep.cells.finished_record`); the manifest is rewritten after each cell.
    ``KeyboardInterrupt`` is re-raised after the manifest records the interruption. The folder is locked
    (``sweep.json.lock``, :mod:`kwta_robust.locks`) while the sweep runs: a second sweep on it fails at once."""
    out_dir = Path(out_dir)
    check_runnable(cfg)
    check_sweep_outputs(out_dir, tables=False, plots=False)  # the manifest and cells/ (the command checks the rest)
    with OutputLock(manifest_path(out_dir), "--out-dir"):
        return _run_sweep(cfg, out_dir, executor, progress)


def check_runnable(cfg: SweepConfig) -> None:
    """What would fail every cell, checked once before any cell trains (and by ``sweep --dry-run``): the training
    and evaluation devices are available here (an error names ``train.device`` or ``eval.device``;
    ``--device`` where the flag gave both), and the evaluation's data set loads and holds ``n_examples``."""
    for section, device in (("train", cfg.train.get("device", "auto")), ("eval", cfg.eval.device)):
        try:
            resolve_device(device)
        except ConfigError as exc:  # named by its section, as the sweep config's other keys are: train.device
            raise section_error(exc, section) from None
    source = cfg.sources.get("eval")
    select_samples(load_eval_data(cfg.eval), cfg.eval,
                   f"the sweep's eval config ({shown_path(source)})" if source else "the sweep config's eval: section")


def section_error(exc: ConfigError, section: str) -> ConfigError:
    """``exc``, a device error of :func:`~kwta_robust.config.resolve_device` (``device: ...``), naming the sweep
    config's key ``{section}.device``, its fix too (``set train.device: cpu or auto in the sweep config``); an
    :class:`~kwta_robust.errors.OriginFixError` stays one, so that ``--device``, where the flag gave the value,
    is named with its own fix (:func:`~kwta_robust.config.flag_error`)."""
    field = f"{section}.{exc.field}"
    if isinstance(exc, OriginFixError):
        return OriginFixError(field, exc.problem, fix=f"set {field}: cpu or auto in the sweep config",
                              flag_fix=exc.flag_fix)
    return ConfigError(field=field, detail=exc.detail)


def _run_sweep(cfg: SweepConfig, out_dir: Path, executor: Executor | None, progress: bool) -> SweepResult:
    """The body of :func:`run_sweep` (the folder locked)."""
    executor = executor or build_executor(cfg.executor.name, cfg.executor.workers, cfg.executor.options())
    show_progress = progress and executor.workers == 1 and not executor.remote
    plans = plan_cells(cfg, out_dir, progress=show_progress)
    for note in other_recipes(plans, out_dir):  # cells of an earlier sweep file, as sweep --dry-run says
        logger.warning("%s: %s", shown_path(out_dir), note)
    manifest = Manifest(cfg, plans, out_dir, executor)
    manifest.save()
    outcomes: dict[str, CellOutcome] = {}
    todo = []
    for plan in plans:
        record = finished_record(plan)
        if record is None:
            todo.append(plan)
            continue
        outcomes[plan.cell_id] = outcome_of(plan, record, trained=False, evaluated=False, start=time.perf_counter())
        manifest.update(outcomes[plan.cell_id], attempted=False)
    logger.info("sweep %s: %d cells, %d finished earlier, %d to run (%s executor, %d worker%s)", cfg.name, len(plans),
                len(plans) - len(todo), len(todo), executor.name, executor.workers,
                "" if executor.workers == 1 else "s")
    by_id = {p.cell_id: p for p in plans}
    done = len(plans) - len(todo)
    completions = executor.map_unordered(run_cell, longest_first(todo),
                                         resources=cell_resources(cfg.executor.options()))
    try:
        for completion in completions:
            plan = completion.job
            outcome = completion.result if completion.error is None else \
                CellOutcome(plan.cell_id, "failed", error=completion.error)
            if completion.error is not None:
                logger.error("cell %s failed: %s", plan.label, completion.error)
            outcomes[plan.cell_id] = outcome
            manifest.update(outcome, attempted=True)
            done += 1
            logger.info("[%d/%d] %s: %s%s (%.1fs)", done, len(plans), by_id[plan.cell_id].label, outcome.status,
                        "" if outcome.status == "failed" else
                        f", {'trained' if outcome.trained else 'checkpoint reused'}", outcome.wall_time_s)
    except (KeyboardInterrupt, KwtaRobustError) as exc:  # Ctrl-C, or the executor could not start
        completions.close()
        manifest.finish("interrupted")
        logger.warning("sweep %s: %d of %d cells finished; re-run the same command to resume",
                       "interrupted" if isinstance(exc, KeyboardInterrupt) else "stopped", done, len(plans))
        raise
    failed = manifest.data["failed"]
    manifest.finish("failed" if failed else "complete")
    return SweepResult(out_dir, manifest.data, outcomes, plans)
