"""One model evaluated end to end (the library behind ``kwta-robust evaluate``).

:func:`evaluate_one` locks its outputs before anything loads (a second run on the same output fails at once; the
default record path, named after the model, is locked once the model and the data are loaded),
loads the checkpoint or bring-your-own model (:mod:`kwta_robust.loading`), checks the BPDA layer specs against it,
loads the data, evaluates (:func:`kwta_robust.evaluate.evaluate`: the record written atomically after every finished
unit, resumed when re-run) and writes the HTML report next to the record (``.html`` instead of ``.json``).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Mapping

from kwta_robust.bpda_layers import check_bpda_specs
from kwta_robust.config import EvalConfig, resolve_device
from kwta_robust.data import TensorData
from kwta_robust.errors import ConfigError
from kwta_robust.evaluate import evaluate
from kwta_robust.html_report import report_path_for, write_report
from kwta_robust.loading import ModelForEval, load_model, load_pinned_eval_data
from kwta_robust.locks import lock_outputs
from kwta_robust.matrix_checks import (GRID_CELL_FLAG, GRID_RATIO_FLAG, gate_ratios, grid_cell_conflict,
                                       grid_ratio_conflict, pool_gate_names)
from kwta_robust.results import EvalRecord, Flag, save_record
from kwta_robust.safe_paths import check_output_file, sanitize_name
from kwta_robust.shards import Sharding, evaluate_sharded, refuse_unmerged_parts

logger = logging.getLogger(__name__)


def default_record_path(label: str, config: str | Path) -> Path:
    """``runs/eval/<model>__<config>.json`` (relative to the working folder)."""
    return Path("runs") / "eval" / f"{sanitize_name(label)}__{sanitize_name(Path(config).stem)}.json"


def evaluate_one(cfg: EvalConfig, *, checkpoint: str | None = None, model_factory: str | None = None,
                 weights: str | None = None, factory_kwargs: dict | None = None, allow_pickle: bool = False,
                 out: str | Path | None = None, config_path: str | Path = "config", save_adversarial: str | None = None,
                 resume: bool = True, command: list[str] | None = None, progress: bool = True,
                 sharding: Sharding | None = None, grid_cell: Mapping[str, Any] | None = None,
                 ) -> tuple[EvalRecord, Path]:
    """Evaluate one model with ``cfg``; returns the record and where it was written (``out``, default
    :func:`default_record_path` of the model's label and ``config_path``). The outputs were checked before.
    ``sharding``: split the samples over processes or machines (:mod:`kwta_robust.shards`). ``grid_cell``: where
    the record sits in a robustness matrix (:func:`kwta_robust.matrix.parse_grid_cell`), stored as
    ``model.grid_cell``; a declaration, not a measurement, so it is set on a resumed or complete record too. A
    declared weight sparsity that the model's weights contradict is a warning, before any work, and the record's
    ``grid-cell-sparsity`` flag (:func:`kwta_robust.matrix_checks.grid_cell_conflict`); a declared k/N that the
    layer probe's gates contradict, measured during the run, a warning after it and the record's ``grid-cell-ratio``
    flag (:func:`kwta_robust.matrix_checks.grid_ratio_conflict`)."""
    check_sharding(sharding, save_adversarial)
    device = resolve_device(cfg.device)
    with contextlib.ExitStack() as held:
        held.enter_context(lock_outputs({"--out": out, "--save-adversarial": save_adversarial}))
        # shards: the workers (and Ray) start now and import while this process loads the model and the data
        executor = None if sharding is None else held.enter_context(sharding.session())
        loaded, data, cfg = load_for_run(cfg, device, checkpoint=checkpoint, model_factory=model_factory,
                                         weights=weights, factory_kwargs=factory_kwargs, allow_pickle=allow_pickle,
                                         grid_cell=grid_cell)
        if out is None:
            out = record_path(None, loaded.label, config_path)
            held.enter_context(lock_outputs({"--out": out}))
        if sharding is not None:
            record = evaluate_sharded(loaded, data, cfg, sharding, out_path=out, resume=resume, command=command,
                                      progress=progress, lock=False, executor=executor)
        else:
            refuse_unmerged_parts(out, resume)
            record = evaluate(loaded.model, data, cfg, loaded.info, out_path=out, resume=resume,
                              save_adversarial=save_adversarial, command=command, progress=progress, lock=False)
        if grid_cell is not None:
            declare_grid_cell(record, grid_cell, out)
    write_report(report_path_for(out), [record])
    return record, Path(out)


def check_sharding(sharding: Sharding | None, save_adversarial: str | Path | None) -> None:
    """What :func:`evaluate_one` refuses of its options before anything loads."""
    if sharding is not None and save_adversarial is not None:
        raise ConfigError("--save-adversarial: not with --shards (each shard holds only its samples); drop one")


def load_for_run(cfg: EvalConfig, device: Any, *, checkpoint: str | None = None, model_factory: str | None = None,
                 weights: str | None = None, factory_kwargs: dict | None = None, allow_pickle: bool = False,
                 grid_cell: Mapping[str, Any] | None = None) -> tuple[ModelForEval, TensorData, EvalConfig]:
    """The model (:func:`~kwta_robust.loading.load_model` on ``device``, with its declared ``grid_cell``), the
    data :func:`evaluate_one` evaluates, the config's BPDA layer specs checked against the model in between, and
    ``cfg`` with its data file's SHA-256 filled in from the one read of the file
    (:func:`~kwta_robust.loading.load_pinned_eval_data`)."""
    loaded = load_model(checkpoint, device, allow_pickle=allow_pickle, model_factory=model_factory,
                        weights=weights, factory_kwargs=factory_kwargs)
    if grid_cell is not None:
        loaded.info["grid_cell"] = dict(grid_cell)
        warn_grid_cell(loaded.info)
    check_bpda_specs({loaded.label: loaded.model}, cfg)
    data, cfg = load_pinned_eval_data(cfg, loaded.metadata, [loaded.model])
    return loaded, data, cfg


def record_path(out: str | Path | None, label: str, config_path: str | Path) -> Path:
    """Where :func:`evaluate_one` writes the record: ``out``, else :func:`default_record_path` (checked writable:
    nothing is created)."""
    path = default_record_path(label, config_path) if out is None else Path(out)
    if out is None:
        check_output_file(path, "--out")
    return path


def warn_grid_cell(model_info: Mapping[str, Any]) -> None:
    """Log, before any work, what contradicts the grid cell declared in ``model_info`` (the record's ``model``)."""
    conflict = grid_cell_conflict(model_info)
    if conflict is not None:
        logger.warning("%s", conflict)


def declare_grid_cell(record: EvalRecord, grid_cell: Mapping[str, Any], out: str | Path | None) -> None:
    """Put the declared ``grid_cell`` on ``record`` (a resumed record kept an earlier one, shards merge without it)
    with its ``grid-cell-sparsity`` and ``grid-cell-ratio`` flags (:func:`flag_grid_cell`; the k/N one also logged
    as a warning, since the layer probe that measures it runs during the evaluation), and save it at ``out`` when
    that changed it."""
    changed = record.model.get("grid_cell") != dict(grid_cell)
    record.model["grid_cell"] = dict(grid_cell)
    ratio_conflict = grid_ratio_conflict(record)
    if ratio_conflict is not None:
        logger.warning("%s", ratio_conflict)
    if (flag_grid_cell(record) or changed) and out is not None:
        save_record(record, out)


def flag_grid_cell(record: EvalRecord) -> bool:
    """Give ``record`` the ``grid-cell-sparsity`` warning flag exactly when its declared grid cell contradicts its
    measured weight sparsity, and the ``grid-cell-ratio`` one exactly when its declared k/N contradicts the layer
    probe's gates (an earlier declaration's flags go); ``True`` when its flags changed."""
    conflict = grid_cell_conflict(record.model)
    kept = [f for f in record.diagnostics if f.code not in (GRID_CELL_FLAG, GRID_RATIO_FLAG)]
    if conflict is not None:
        measured = record.model.get("weight_sparsity") or {}
        kept.append(Flag(GRID_CELL_FLAG, "warning", conflict,
                         {"declared": record.model["grid_cell"].get("weight_sparsity"),
                          "measured_overall": measured.get("overall")}))
    ratio_conflict = grid_ratio_conflict(record)
    if ratio_conflict is not None:
        pools = pool_gate_names(record)  # max-pool winner-take-all gates: no k/N, named beside the top-k ones
        kept.append(Flag(GRID_RATIO_FLAG, "warning", ratio_conflict,
                         {"declared": record.model["grid_cell"].get("kwta_ratio"),
                          "measured_gates": gate_ratios(record), **({"pool_gates": pools} if pools else {})}))
    changed = kept != record.diagnostics
    record.diagnostics = kept
    return changed

