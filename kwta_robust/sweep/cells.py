"""One cell of a sweep, as a worker runs it: train (or reuse the checkpoint), evaluate (or resume the record).

:func:`run_cell` is the function every executor runs over :class:`~kwta_robust.sweep.plans.CellPlan` s: it needs
only the plan (plain data, absolute paths), writes the checkpoint and the record atomically, and turns every
``Exception`` into a ``failed`` :class:`~kwta_robust.sweep.plans.CellOutcome` with its error line, so a failed
cell never stops the sweep. A *finished* cell has a complete record of the same evaluation config and cell id,
whose attacks this version builds with the same effective settings (:func:`settings_changed`);
a partial record is resumed through the runner's own resume when it was made with the same weights and config; any
other record at the cell's path is moved to ``superseded/`` in the cell's folder (:data:`STALE_RECORDS`).
"""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path
from typing import Mapping

from kwta_robust.attack_plan import planned_settings
from kwta_robust.checkpoint import LoadedModel, load_checkpoint
from kwta_robust.config import EvalConfig, resolve_device
from kwta_robust.errors import CheckpointError, ConfigError, KwtaRobustError
from kwta_robust.evaluate import evaluate
from kwta_robust.loading import load_eval_data, load_model
from kwta_robust.randomness import drew_afresh
from kwta_robust.record_checks import check_record
from kwta_robust.results import EvalRecord, RecordError, load_record
from kwta_robust.resume import StalePolicy, settings_change
from kwta_robust.sweep.executors import one_line
from kwta_robust.sweep.identity import eval_identity, training_identity
from kwta_robust.sweep.plans import CellOutcome, CellPlan
from kwta_robust.training import TrainConfig, run_training, unkept_invariants

logger = logging.getLogger(__name__)

#: A cell's record that the run cannot resume is set aside (the sweep's folder holds earlier runs' work).
STALE_RECORDS = StalePolicy(option="--out-dir", restart="delete that record", set_aside=True)


def finished_record(plan: CellPlan) -> EvalRecord | None:
    """The cell's record if it is complete and belongs to this cell and evaluation config, and its checkpoint's
    training kept every invariant its model needs (:func:`kwta_robust.training.unkept_invariants`), else ``None``."""
    path = Path(plan.record_path)
    if not path.is_file():
        return None
    try:
        record = load_record(path)
        check_record(record, str(path))  # a hand-edited accuracy its counts contradict is no finished cell
    except RecordError as exc:
        logger.warning("%s: unreadable record, the cell is evaluated again (%s)", plan.label, exc)
        return None
    same = (record.status == "complete" and not drew_afresh(record)  # a randomized model's old verdicts: again
            and eval_identity(record.config) == eval_identity(plan.eval)
            and (record.model.get("sweep_cell") or {}).get("cell_id") == plan.cell_id
            and not other_coordinates(record, plan))
    if not same:
        return None
    changed = settings_changed(record, plan)
    if changed:  # another version's attack defaults: evaluated again, the record set aside by the runner
        logger.info("%s: evaluating again, %s holds a record of %s", plan.label, path, changed)
        return None
    try:  # a record of a checkpoint whose training did not keep its model's invariants: trained and evaluated again
        unkept = _unkept(load_checkpoint(plan.checkpoint)) if plan.checkpoint.is_file() else []
    except CheckpointError:
        unkept = []
    if unkept:
        logger.info("%s: evaluating again, %s was evaluated on a checkpoint trained before the training loop called "
                    "%s", plan.label, path, " and ".join(f"{name}()" for name in unkept))
        return None
    return record


def other_coordinates(record: EvalRecord, plan: CellPlan) -> bool:
    """Whether the record's ``model.sweep_cell`` names other grid coordinates than the cell's (a record edited by hand
    or copied from another cell, with the cell's id): such a record is neither finished nor resumed, since a resumed
    record keeps its model section and the matrices would place the cell's numbers in the other row or column."""
    declared = record.model.get("sweep_cell")
    return isinstance(declared, Mapping) and any(k in declared and declared[k] != v
                                                 for k, v in plan.cell.to_dict().items())


def _declares_other_cell(plan: CellPlan) -> bool:
    """Whether the record at the cell's path is readable and declares other grid coordinates (:func:`other_coordinates`;
    it is then set aside, not resumed)."""
    try:
        return Path(plan.record_path).is_file() and other_coordinates(load_record(plan.record_path), plan)
    except RecordError:
        return False


def settings_changed(record: EvalRecord, plan: CellPlan) -> str | None:
    """What differs between the attack settings of the cell's finished ``record`` and those this version builds for
    its evaluation config (:func:`kwta_robust.resume.settings_change`; a cell has no transfer sources), or ``None``;
    a record written before settings were stored has none to compare."""
    num_classes = record.dataset.get("num_classes")
    if not isinstance(num_classes, int):
        return None
    expected = planned_settings(EvalConfig.from_dict(plan.eval), num_classes, {})
    return settings_change(record, expected)


def _unkept(loaded: LoadedModel) -> list[str]:
    """The invariants the checkpoint's model needs that its training did not keep (none for the package's own)."""
    return unkept_invariants(loaded.model, loaded.metadata)


def ensure_checkpoint(plan: CellPlan) -> tuple[Path, bool]:
    """Reuse the cell's checkpoint when it loads, its recorded training settings match and its training kept every
    invariant its model's modules need (``training_invariants`` in its metadata: a nupic ``SparseWeights`` layer
    trained before the loop re-zeroed its weights is dense), else train: ``(path, trained)``. (Architecture
    defaults are part of the cell's hash, so a changed default is a new cell.)"""
    cfg = TrainConfig.from_dict(plan.train)
    path = plan.checkpoint
    if path.is_file():
        try:
            loaded = load_checkpoint(path)
        except CheckpointError as exc:
            logger.warning("%s: cannot reuse %s, training again (%s)", plan.label, path, exc)
        else:
            stored = loaded.metadata.get("training")
            unkept = _unkept(loaded)
            if not (isinstance(stored, Mapping) and training_identity(stored) == training_identity(cfg)):
                logger.info("%s: training again, %s was trained with other settings", plan.label, path)
            elif unkept:
                logger.info("%s: training again, %s was trained before the training loop called %s", plan.label,
                            path, " and ".join(f"{name}()" for name in unkept))
            else:
                logger.info("%s: reusing %s (trained with the same settings)", plan.label, path)
                return path, False
    result = run_training(cfg)
    return Path(result.checkpoint), True


def run_cell(plan: CellPlan) -> CellOutcome:
    """Train (or reuse) and evaluate one cell; every ``Exception`` becomes a ``failed`` outcome with its error line
    (the traceback is logged). ``KeyboardInterrupt`` propagates: finished work is on disk, the next run resumes."""
    start = time.perf_counter()
    try:
        directory = Path(plan.directory)
        if directory.exists() and not directory.is_dir():  # was a FileExistsError and its traceback, at saving
            raise ConfigError(f"--out-dir: {directory} is a file, where the sweep keeps this cell's checkpoint and "
                              "record; move it away and run the sweep again")
        record = finished_record(plan)
        if record is not None:
            return outcome_of(plan, record, trained=False, evaluated=False, start=start)
        checkpoint, trained = ensure_checkpoint(plan)
        eval_cfg = EvalConfig.from_dict(plan.eval)
        loaded = load_model(str(checkpoint), resolve_device(eval_cfg.device), label=plan.label)
        info = dict(loaded.info, sweep_cell=plan.cell_info())
        data = load_eval_data(eval_cfg, loaded.metadata)
        # a partial record of this checkpoint and config is resumed; any other (a retrained cell, an earlier
        # version's, one declaring another cell) is moved to the cell's superseded/ folder, never overwritten
        resume = not trained and not _declares_other_cell(plan)
        record = evaluate(loaded.model, data, eval_cfg, info, out_path=plan.record_path, resume=resume,
                          command=["kwta-robust", "sweep", plan.sweep, plan.cell.label], progress=plan.progress,
                          stale=STALE_RECORDS)
        return outcome_of(plan, record, trained=trained, evaluated=True, start=start)
    except Exception as exc:  # noqa: BLE001 - a failed cell is reported and retried, never fatal to the sweep
        if isinstance(exc, KwtaRobustError):  # a user error: its one line says it all
            logger.error("cell %s failed: %s", plan.label, one_line(exc))
        else:
            logger.error("cell %s failed: %s\n%s", plan.label, one_line(exc), traceback.format_exc())
        return CellOutcome(plan.cell_id, "failed", error=one_line(exc), wall_time_s=time.perf_counter() - start)


def outcome_of(plan: CellPlan, record: EvalRecord, *, trained: bool, evaluated: bool, start: float) -> CellOutcome:
    """The finished cell's outcome from its record (test accuracy, weight sparsity, wall time)."""
    training = record.model.get("training") or {}
    sparsity = (record.model.get("weight_sparsity") or {}).get("overall")
    return CellOutcome(plan.cell_id, "done", trained=trained, evaluated=evaluated,
                       wall_time_s=time.perf_counter() - start, test_accuracy=training.get("test_accuracy"),
                       measured_sparsity=sparsity, record_path=plan.record_path)
