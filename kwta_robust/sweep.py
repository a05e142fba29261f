"""Sweeps: train and evaluate a grid of activation sparsity (kWTA ``k/N``) × weight sparsity × pruning method.

A sweep config (YAML, see ``eval_configs/sweep_mnist5k_3x3.yaml``) names the base training recipe, the grid and
the evaluation suite::

    description: "..."
    name: mnist5k-3x3                 # optional, default: the config file's stem
    train: {dataset: mnist5k, arch: cnn, epochs: 3, activation: {mode: volume}, ...}   # or a path to a YAML
    grid:
      kwta_ratios: [1.0, 0.2, 0.05]   # k/N of every kWTA layer; 1.0 = the ReLU twin (same net with ReLU)
      weight_sparsities: [0.0, 0.5, 0.8]   # target fraction of conv/linear weights set to zero; 0 = dense
      pruning_methods: [magnitude]    # kwta_robust.sparsity registry names (default [magnitude])
    pruning: {retrain: finetune, retrain_epochs: 2}   # every other PruningConfig key, shared by all cells
    eval: quick.yaml                  # an EvalConfig inline, or a path (relative to this file's folder)
    executor: {name: local, workers: 1}   # workers: N or auto (one per core); 1 runs in-line

Cells: every ratio × sparsity × method, except that sparsity 0 is the one dense cell of its row, shared by all
methods. Each cell is a full :class:`~kwta_robust.train.TrainConfig`; like open_lth, the run directory is named by
the hash of that config (minus keys that cannot change the weights: ``out``, ``device``, ``data_root``,
``download``) and of the architecture's resolved arguments, so a cell trained once is found again by any sweep that
asks for the same recipe, and a new ``TrainConfig`` key or a changed default makes new cells (nothing stale is
reused).

Layout of ``out_dir``::

    sweep.json                          manifest: every cell, its status, attempts and last error line
    cells/<label>-<hash>/model.pt       checkpoint (reused when its recorded training config matches)
    cells/<label>-<hash>/eval-<hash>.json   the evaluation record (hash of the eval config minus its device)

Resumable: checkpoints and records are written atomically and the record after every finished attack unit, so
killing a sweep at any moment and re-running the same command redoes no finished cell (a *finished* cell has a
complete record of the same evaluation config) and resumes a partially evaluated one through the runner's own
resume. A cell that raises is logged, listed in the manifest with its error line, reported at the end and retried
on the next run.

Executors (:class:`Executor`) run :func:`run_cell` over picklable :class:`CellPlan` jobs and yield completions as
they finish; the grid logic never sees how. ``local`` runs in-line (one worker) or in a process pool (several,
one torch thread each on a 2-core machine). A distributed backend registers a factory with
:func:`register_executor`. Every cell is seeded from its config; on CPU a cell's numbers are reproducible for a
given torch thread count (in-line runs use torch's default, pool workers ``cores // workers``).
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import dataclasses
import datetime as _dt
import hashlib
import inspect
import json
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, Mapping, Protocol, Sequence, TypeVar

import torch

from kwta_robust.checkpoint import load_checkpoint
from kwta_robust.config import EvalConfig, read_yaml, resolve_device
from kwta_robust.errors import CheckpointError, ConfigError, KwtaRobustError
from kwta_robust.evaluate import evaluate
from kwta_robust.locks import OutputLock, holder_of
from kwta_robust.matrix import DENSE, RELU_RATIO
from kwta_robust.model_checks import check_buildable
from kwta_robust.parent_watch import die_with_parent
from kwta_robust.results import EvalRecord, RecordError, atomic_write_text, load_record
from kwta_robust.safe_paths import safe_name, sanitize_name
from kwta_robust.sparsity.config import PruningConfig
from kwta_robust.sparsity.registry import available_pruning_methods
from kwta_robust.train import TrainConfig, run_training

logger = logging.getLogger(__name__)

#: Training keys that cannot change the trained weights: left out of the cell identity.
TRAIN_KEYS_IGNORED: tuple[str, ...] = ("out", "device", "data_root", "download")
#: Keys of ``train.activation`` the grid sets (the others — mode, boosting — come from the base recipe).
GRID_ACTIVATION_KEYS: tuple[str, ...] = ("name", "k_ratio", "k")
SWEEP_KEYS: tuple[str, ...] = ("description", "name", "train", "grid", "pruning", "eval", "executor")
GRID_KEYS: tuple[str, ...] = ("kwta_ratios", "weight_sparsities", "pruning_methods")
EXECUTOR_KEYS: tuple[str, ...] = ("name", "workers")
MANIFEST_FORMAT = "kwta-robust-sweep"
MANIFEST_VERSION = 1
HASH_CHARS = 10


# ---------------------------------------------------------------------------------------------------------------
# identity helpers
# ---------------------------------------------------------------------------------------------------------------
def _plain(data: Any) -> Any:
    """JSON round trip: tuples become lists, exactly as checkpoint metadata and records store them (anything
    JSON cannot hold, e.g. a class as an architecture default, by its ``str``)."""
    return json.loads(json.dumps(data, sort_keys=True, default=str))


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(_plain(data), sort_keys=True).encode()).hexdigest()


def training_identity(cfg: TrainConfig | Mapping[str, Any]) -> dict:
    """The training settings that determine the weights (``cfg`` minus :data:`TRAIN_KEYS_IGNORED`), plain data."""
    data = cfg.to_dict() if isinstance(cfg, TrainConfig) else dict(cfg)
    return {k: v for k, v in _plain(data).items() if k not in TRAIN_KEYS_IGNORED}


def architecture_identity(cfg: TrainConfig) -> dict:
    """The arguments the cell's model is built with: the architecture factory's defaults updated by
    ``arch_kwargs`` (so a changed default in the model zoo makes a new cell instead of reusing an old one)."""
    from kwta_robust.models.registry import COMMON_ARGS, REGISTRY, available_models

    if cfg.arch not in available_models():
        raise ConfigError(f"train.arch: unknown architecture {cfg.arch!r}; choose one of "
                          f"{', '.join(available_models())}")
    params = inspect.signature(REGISTRY.get(cfg.arch)).parameters
    defaults = {k: p.default for k, p in params.items()
                if p.default is not inspect.Parameter.empty and k not in COMMON_ARGS}
    return _plain({**defaults, **cfg.arch_kwargs})


def cell_identity(cfg: TrainConfig) -> dict:
    """What names a cell: its training identity and the resolved architecture arguments."""
    return {"training": training_identity(cfg), "architecture": architecture_identity(cfg)}


def eval_identity(cfg: EvalConfig | Mapping[str, Any]) -> str:
    """Hash of an evaluation config minus ``description`` and ``device`` (placement does not name a record)."""
    data = cfg.to_dict() if isinstance(cfg, EvalConfig) else dict(cfg)
    return _digest({k: v for k, v in data.items() if k not in ("description", "device")})


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    message = text[0] if text else ""
    if isinstance(exc, KwtaRobustError):
        return message or type(exc).__name__
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


# ---------------------------------------------------------------------------------------------------------------
# the grid
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GridCell:
    """One point of the grid: kWTA ratio ``k/N`` (:data:`RELU_RATIO` = the ReLU twin), target weight sparsity and
    pruning method (:data:`DENSE` at sparsity 0)."""

    kwta_ratio: float
    weight_sparsity: float
    pruning_method: str

    @property
    def activation(self) -> str:
        return "relu" if self.kwta_ratio == RELU_RATIO else "kwta"

    @property
    def label(self) -> str:
        """Readable name, e.g. ``relu-dense``, ``kwta0.2-magnitude0.8``."""
        act = "relu" if self.activation == "relu" else f"kwta{self.kwta_ratio:g}"
        prune = "dense" if self.pruning_method == DENSE else f"{self.pruning_method}{self.weight_sparsity:g}"
        return f"{act}-{prune}"

    def to_dict(self) -> dict:
        return {"kwta_ratio": self.kwta_ratio, "activation": self.activation,
                "weight_sparsity": self.weight_sparsity, "pruning_method": self.pruning_method}


@dataclass(frozen=True)
class Grid:
    """The three axes (validated: non-empty, no duplicates, ratios in (0, 1], sparsities in [0, 1), known methods)."""

    kwta_ratios: tuple[float, ...]
    weight_sparsities: tuple[float, ...]
    pruning_methods: tuple[str, ...] = ("magnitude",)

    @classmethod
    def from_dict(cls, data: Any, where: str = "grid") -> "Grid":
        _check_keys(data, GRID_KEYS, where)
        for key in ("kwta_ratios", "weight_sparsities"):
            if key not in data:
                raise ConfigError(f"{where}.{key}: missing; " + _GRID_HINTS[key])
        ratios = _numbers(data["kwta_ratios"], f"{where}.kwta_ratios")
        sparsities = _numbers(data["weight_sparsities"], f"{where}.weight_sparsities")
        for i, r in enumerate(ratios):
            if not 0.0 < r <= 1.0:
                raise ConfigError(f"{where}.kwta_ratios[{i}]: {r:g} is outside (0, 1]; a ratio k/N keeps that fraction "
                                  "of units (1.0 = the ReLU twin)")
        for i, s in enumerate(sparsities):
            if not 0.0 <= s < 1.0:
                raise ConfigError(f"{where}.weight_sparsities[{i}]: {s:g} is outside [0, 1); it is the fraction of "
                                  "weights set to zero (0 = dense)")
        methods_raw = data.get("pruning_methods", ["magnitude"])
        if isinstance(methods_raw, str):
            methods_raw = [methods_raw]
        if not isinstance(methods_raw, (list, tuple)):
            raise ConfigError(f"{where}.pruning_methods: expected a list of method names, got {methods_raw!r}")
        if not methods_raw:
            raise ConfigError(f"{where}.pruning_methods: empty; " + _GRID_HINTS["pruning_methods"])
        known = available_pruning_methods()
        for i, m in enumerate(methods_raw):
            if m not in known:
                raise ConfigError(f"{where}.pruning_methods[{i}]: unknown pruning method {m!r}; choose from "
                                  f"{', '.join(known)}")
        methods = tuple(str(m) for m in methods_raw)
        for key, values in (("kwta_ratios", ratios), ("weight_sparsities", sparsities), ("pruning_methods", methods)):
            if len(set(values)) != len(values):
                raise ConfigError(f"{where}.{key}: duplicate values in {list(values)}")
        return cls(ratios, sparsities, methods)

    def cells(self) -> list[GridCell]:
        """Rows in the given ratio order; per row the dense cell once, then every method at every sparsity > 0."""
        out: list[GridCell] = []
        for r in self.kwta_ratios:
            for s in self.weight_sparsities:
                if s == 0.0:
                    out.append(GridCell(r, 0.0, DENSE))
                else:
                    out += [GridCell(r, s, m) for m in self.pruning_methods]
        return out

    def to_dict(self) -> dict:
        return {"kwta_ratios": list(self.kwta_ratios), "weight_sparsities": list(self.weight_sparsities),
                "pruning_methods": list(self.pruning_methods)}


_GRID_HINTS = {
    "kwta_ratios": "give at least one kWTA ratio k/N in (0, 1], e.g. [1.0, 0.2, 0.05] (1.0 = the ReLU twin)",
    "weight_sparsities": "give at least one weight sparsity in [0, 1), e.g. [0.0, 0.5, 0.8] (0 = dense)",
    "pruning_methods": "give at least one pruning method, e.g. [magnitude] (or leave the key out)",
}


def _check_keys(data: Any, valid: Sequence[str], where: str) -> None:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys, got {type(data).__name__}")
    unknown = [k for k in data if k not in valid]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(valid)}")


def _numbers(value: Any, where: str) -> tuple[float, ...]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: expected a list of numbers, got {value!r}")
    if not value:
        raise ConfigError(f"{where}: empty grid axis; " + _GRID_HINTS[where.rsplit(".", 1)[-1]])
    out = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{where}[{i}]: expected a number, got {v!r}")
        out.append(float(v))
    return tuple(out)


# ---------------------------------------------------------------------------------------------------------------
# the sweep config
# ---------------------------------------------------------------------------------------------------------------
def _section(value: Any, base_dir: Path | None, where: str) -> tuple[Any, str | None]:
    """An inline mapping, or a YAML file path relative to the sweep config's folder: ``(data, resolved path)``."""
    if isinstance(value, str):
        path = Path(value)
        if not path.is_absolute():
            path = (base_dir or Path.cwd()) / path
        return read_yaml(path, where), str(path)
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping or a path to a YAML file, got {type(value).__name__}")
    return dict(value), None


def _base_training(data: Any, where: str = "train") -> dict:
    """The base recipe as plain data, checked for keys the sweep owns; validated by building a ReLU cell."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of training keys, got {type(data).__name__}")
    base = copy.deepcopy(dict(data))
    if base.get("out") is not None:
        raise ConfigError(f"{where}.out: the sweep names every cell's checkpoint (cells/<label>-<hash>/model.pt); "
                          "remove the key")
    if base.get("pruning") is not None:
        raise ConfigError(f"{where}.pruning: set by the grid; put shared pruning options under the sweep's "
                          "top-level 'pruning:' and the methods in grid.pruning_methods")
    incremental = base.get("incremental")
    if isinstance(incremental, Mapping) and incremental.get("ratios"):
        raise ConfigError(f"{where}.incremental.ratios: the sweep sets each cell's kWTA ratio; remove the key "
                          "(the incremental schedule cannot be combined with pruning)")
    activation = base.get("activation")
    if isinstance(activation, str):
        activation = {"name": activation}
    if activation is not None:
        if not isinstance(activation, Mapping):
            raise ConfigError(f"{where}.activation: expected a mapping (mode, boost_strength, k_inference_factor)")
        for key in GRID_ACTIVATION_KEYS:
            if key in activation:
                raise ConfigError(f"{where}.activation.{key}: set by grid.kwta_ratios (1.0 = ReLU); remove the key")
        base["activation"] = dict(activation)
    return base


@dataclass(frozen=True)
class SweepConfig:
    """A validated sweep (see the module docstring). ``train`` is the base recipe as plain data, ``pruning`` the
    shared :class:`PruningConfig` options; every cell's config is built and validated at construction."""

    name: str
    train: dict
    grid: Grid
    eval: EvalConfig
    pruning: dict = field(default_factory=dict)
    executor: str = "local"
    workers: int | str = 1
    description: str = ""
    sources: dict = field(default_factory=dict)  # where train/eval were read from (paths), for the manifest

    def __post_init__(self) -> None:
        self.validate()

    # --- construction ----------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, *, name: str = "sweep", base_dir: str | Path | None = None) -> "SweepConfig":
        """Build and validate; ``base_dir`` resolves relative ``train``/``eval`` paths (default: the cwd)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"sweep config: expected a YAML mapping at the top level, got {type(data).__name__}")
        _check_keys(data, SWEEP_KEYS, "sweep config")
        base = Path(base_dir) if base_dir is not None else None
        for key in ("train", "grid", "eval"):
            if data.get(key) is None:
                raise ConfigError(f"sweep config: missing key {key!r} ({_SECTION_HINTS[key]})")
        train_raw, train_src = _section(data["train"], base, "train")
        eval_raw, eval_src = _section(data["eval"], base, "eval")
        grid = Grid.from_dict(data["grid"])
        pruning = data.get("pruning") or {}
        _check_keys(pruning, [f.name for f in dataclasses.fields(PruningConfig)], "pruning")
        for key, axis in (("method", "pruning_methods"), ("sparsity", "weight_sparsities")):
            if key in pruning:
                raise ConfigError(f"pruning.{key}: set by grid.{axis}; remove the key")
        executor = data.get("executor") or {}
        _check_keys(executor, EXECUTOR_KEYS, "executor")
        executor_name = executor.get("name", "local")
        workers = executor.get("workers", 1)
        description = data.get("description") or ""
        if not isinstance(description, str):
            raise ConfigError(f"description: expected text, got {type(description).__name__}")
        # the name becomes the default output folder runs/sweeps/<name>: it must stay one folder name
        sweep_name = safe_name(data["name"], "name") if "name" in data else sanitize_name(name, "sweep")
        eval_cfg = _eval_config(eval_raw)
        return cls(name=sweep_name, train=_base_training(train_raw), grid=grid, eval=eval_cfg, pruning=dict(pruning),
                   executor=executor_name, workers=workers, description=description,
                   sources={"train": train_src, "eval": eval_src})

    @classmethod
    def from_yaml(cls, path: str | Path) -> "SweepConfig":
        path = Path(path)
        return cls.from_dict(read_yaml(path, "sweep config"), name=path.stem, base_dir=path.parent)

    def validate(self) -> None:
        """Every cell's training config (with its pruning) is built now: bad values fail before any training."""
        if self.executor not in available_executors():
            raise ConfigError(f"executor.name: unknown executor {self.executor!r}; choose one of "
                              f"{', '.join(available_executors())}")
        resolve_workers(self.workers)
        for cell in self.grid.cells():
            check_architecture(self.train_config(cell))
        dataset = self.train.get("dataset", TrainConfig().dataset)
        if self.eval.dataset != dataset:
            raise ConfigError(f"eval.dataset: the suite evaluates {self.eval.dataset!r} but the cells are trained on "
                              f"{dataset!r}; use the same data set")

    def with_overrides(self, *, device: str | None = None, workers: int | str | None = None) -> "SweepConfig":
        """CLI overrides: ``device`` for training and evaluation (not part of any identity), ``workers``."""
        train = dict(self.train)
        eval_cfg = self.eval
        if device is not None:
            train["device"] = device
            eval_cfg = eval_cfg.with_overrides(device=device)
        return dataclasses.replace(self, train=train, eval=eval_cfg,
                                   workers=self.workers if workers is None else workers)

    # --- derived ---------------------------------------------------------------------------------------------
    def cells(self) -> list[GridCell]:
        return self.grid.cells()

    def train_config(self, cell: GridCell, out: str | None = None) -> TrainConfig:
        """The full training config of ``cell`` (``ConfigError`` naming the cell when invalid)."""
        data = copy.deepcopy(self.train)
        if cell.activation == "relu":
            data["activation"] = {"name": "relu"}
        else:
            base = dict(self.train.get("activation") or {})
            data["activation"] = {**base, "name": "kwta", "k_ratio": cell.kwta_ratio}
        if cell.pruning_method != DENSE:
            data["pruning"] = {**self.pruning, "method": cell.pruning_method, "sparsity": cell.weight_sparsity}
        data["out"] = out
        try:
            return TrainConfig.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"cell {cell.label}: {exc}") from None

    def to_dict(self) -> dict:
        return {
            "description": self.description, "name": self.name, "train": _plain(self.train),
            "grid": self.grid.to_dict(), "pruning": _plain(self.pruning), "eval": self.eval.to_dict(),
            "executor": {"name": self.executor, "workers": self.workers},
        }


def check_architecture(cfg: TrainConfig) -> None:
    """The model spec of ``cfg`` is valid (architecture and its arguments) — checked without building it."""
    from kwta_robust.data import dataset_info
    from kwta_robust.models import ModelSpec

    architecture_identity(cfg)
    info = dataset_info(cfg.dataset)
    c, h, _ = info.input_shape
    try:
        spec = ModelSpec.from_args(cfg.arch, activation=cfg.activation.to_spec(), num_classes=info.num_classes,
                                   in_channels=c, input_size=h, **cfg.arch_kwargs)
    except ConfigError as exc:
        raise ConfigError(f"train.arch_kwargs: {exc}") from None
    check_buildable(spec, "train.arch_kwargs")  # construction errors and absurd sizes, without allocating


_SECTION_HINTS = {
    "train": "the base training recipe: a mapping of TrainConfig keys or a path to a training YAML",
    "grid": "kwta_ratios, weight_sparsities and pruning_methods",
    "eval": "the evaluation suite: an inline eval config or a path such as quick.yaml",
}


def _eval_config(data: Any) -> EvalConfig:
    try:
        return EvalConfig.from_dict(data, where="eval")
    except ConfigError as exc:
        text = str(exc)
        raise ConfigError(text if text.startswith("eval") else f"eval.{text}") from None


def load_sweep_config(path: str | Path) -> SweepConfig:
    """Read and validate a sweep YAML (``ConfigError`` with one line on any problem)."""
    return SweepConfig.from_yaml(path)


# ---------------------------------------------------------------------------------------------------------------
# cell jobs
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CellPlan:
    """Everything a worker needs to run one cell (plain data: picklable, JSON-able for remote backends)."""

    cell: GridCell
    cell_id: str
    directory: str
    train: dict  # the cell's TrainConfig as a dict (``out`` = the checkpoint path)
    eval: dict  # the EvalConfig as a dict
    record_path: str
    sweep: str = "sweep"
    progress: bool = True

    @property
    def checkpoint(self) -> Path:
        return Path(self.train["out"])

    @property
    def label(self) -> str:
        return self.cell.label

    def cell_info(self) -> dict:
        """What the record's ``model.sweep_cell`` holds: the grid coordinates and the cell's identity."""
        return {**self.cell.to_dict(), "cell_id": self.cell_id, "sweep": self.sweep, "directory": self.directory}


def plan_cells(cfg: SweepConfig, out_dir: str | Path, *, progress: bool = True) -> list[CellPlan]:
    """One :class:`CellPlan` per grid cell, its directory named by the hash of its training identity."""
    out_dir = Path(out_dir)
    eval_key = eval_identity(cfg.eval)[:HASH_CHARS]
    plans = []
    for cell in cfg.cells():
        cell_id = _digest(cell_identity(cfg.train_config(cell)))[:HASH_CHARS]
        directory = out_dir / "cells" / f"{cell.label}-{cell_id}"
        train = cfg.train_config(cell, out=str(directory / "model.pt"))
        plans.append(CellPlan(cell, cell_id, str(directory), _plain(train.to_dict()), cfg.eval.to_dict(),
                              str(directory / f"eval-{eval_key}.json"), cfg.name, progress))
    return plans


@dataclass
class CellOutcome:
    """Result of one cell: ``status`` ``done`` | ``failed``; ``trained`` (False: checkpoint reused),
    ``evaluated`` (False: the complete record was already there); the error line of a failure."""

    cell_id: str
    status: str
    trained: bool = False
    evaluated: bool = False
    error: str | None = None
    wall_time_s: float = 0.0
    test_accuracy: float | None = None
    measured_sparsity: float | None = None
    record_path: str | None = None


def finished_record(plan: CellPlan) -> EvalRecord | None:
    """The cell's record if it is complete and belongs to this cell and evaluation config, else ``None``."""
    path = Path(plan.record_path)
    if not path.is_file():
        return None
    try:
        record = load_record(path)
    except RecordError as exc:
        logger.warning("%s: unreadable record, the cell is evaluated again (%s)", plan.label, exc)
        return None
    same = (record.status == "complete" and eval_identity(record.config) == eval_identity(plan.eval)
            and (record.model.get("sweep_cell") or {}).get("cell_id") == plan.cell_id)
    return record if same else None


def ensure_checkpoint(plan: CellPlan) -> tuple[Path, bool]:
    """Reuse the cell's checkpoint when it loads and its recorded training settings match, else train:
    ``(path, trained)``. (Architecture defaults are part of the cell's hash, so a changed default is a new cell.)"""
    cfg = TrainConfig.from_dict(plan.train)
    path = plan.checkpoint
    if path.is_file():
        try:
            loaded = load_checkpoint(path)
        except CheckpointError as exc:
            logger.warning("%s: cannot reuse %s, training again (%s)", plan.label, path, exc)
        else:
            stored = loaded.metadata.get("training")
            if isinstance(stored, Mapping) and training_identity(stored) == training_identity(cfg):
                logger.info("%s: reusing %s (trained with the same settings)", plan.label, path)
                return path, False
            logger.info("%s: training again, %s was trained with other settings", plan.label, path)
    result = run_training(cfg)
    return Path(result.checkpoint), True


def _resumable(plan: CellPlan, checkpoint_sha256: str | None, trained: bool) -> bool:
    """Resume a partial record only when it was made with this checkpoint and evaluation config."""
    path = Path(plan.record_path)
    if trained or not path.is_file():
        return not trained
    try:
        record = load_record(path)
    except RecordError as exc:
        logger.warning("%s: unreadable partial record, evaluating from the start (%s)", plan.label, exc)
        return False
    if record.config_hash != EvalConfig.from_dict(plan.eval).config_hash() or \
            record.model.get("checkpoint_sha256") != checkpoint_sha256:
        logger.warning("%s: the partial record %s was made with another checkpoint or config; evaluating from the "
                       "start", plan.label, path)
        return False
    return True


def run_cell(plan: CellPlan) -> CellOutcome:
    """Train (or reuse) and evaluate one cell; every ``Exception`` becomes a ``failed`` outcome with its error line
    (the traceback is logged). ``KeyboardInterrupt`` propagates: finished work is on disk, the next run resumes."""
    from kwta_robust.loading import load_eval_data, load_model

    start = time.perf_counter()
    try:
        record = finished_record(plan)
        if record is not None:
            return _outcome(plan, record, trained=False, evaluated=False, start=start)
        checkpoint, trained = ensure_checkpoint(plan)
        eval_cfg = EvalConfig.from_dict(plan.eval)
        loaded = load_model(str(checkpoint), resolve_device(eval_cfg.device), label=plan.label)
        info = dict(loaded.info, sweep_cell=plan.cell_info())
        data = load_eval_data(eval_cfg, loaded.metadata)
        resume = _resumable(plan, info.get("checkpoint_sha256"), trained)
        record = evaluate(loaded.model, data, eval_cfg, info, out_path=plan.record_path, resume=resume,
                          command=["kwta-robust", "sweep", plan.sweep, plan.cell.label], progress=plan.progress)
        return _outcome(plan, record, trained=trained, evaluated=True, start=start)
    except Exception as exc:  # noqa: BLE001 - a failed cell is reported and retried, never fatal to the sweep
        if isinstance(exc, KwtaRobustError):  # a user error: its one line says it all
            logger.error("cell %s failed: %s", plan.label, _one_line(exc))
        else:
            logger.error("cell %s failed: %s\n%s", plan.label, _one_line(exc), traceback.format_exc())
        return CellOutcome(plan.cell_id, "failed", error=_one_line(exc), wall_time_s=time.perf_counter() - start)


def _outcome(plan: CellPlan, record: EvalRecord, *, trained: bool, evaluated: bool, start: float) -> CellOutcome:
    training = record.model.get("training") or {}
    sparsity = (record.model.get("weight_sparsity") or {}).get("overall")
    return CellOutcome(plan.cell_id, "done", trained=trained, evaluated=evaluated,
                       wall_time_s=time.perf_counter() - start, test_accuracy=training.get("test_accuracy"),
                       measured_sparsity=sparsity, record_path=plan.record_path)


# ---------------------------------------------------------------------------------------------------------------
# executors
# ---------------------------------------------------------------------------------------------------------------
J = TypeVar("J")
R = TypeVar("R")


@dataclass
class Completion(Generic[J, R]):
    """A finished job: ``result`` of ``fn(job)``, or ``error`` (one line) when the job could not run at all
    (a worker process died, the job could not be shipped)."""

    job: J
    result: R | None = None
    error: str | None = None


class Executor(Protocol):
    """Runs ``fn`` over ``jobs`` and yields a :class:`Completion` per job as each finishes (any order).

    ``fn`` is a module-level function and every job plain, picklable data, so a backend may run them in other
    processes or on other machines. Closing the generator early (e.g. on ``KeyboardInterrupt``) must stop
    or abandon the outstanding jobs.
    """

    name: str
    workers: int

    def map_unordered(self, fn: Callable[[J], R], jobs: Sequence[J]) -> Iterator[Completion[J, R]]: ...


class InlineExecutor:
    """One job after the other in this process (progress bars and ``KeyboardInterrupt`` behave as usual)."""

    name = "inline"
    workers = 1

    def map_unordered(self, fn: Callable[[J], R], jobs: Sequence[J]) -> Iterator[Completion[J, R]]:
        for job in jobs:
            yield Completion(job, fn(job))


def _init_worker(threads: int, level: int, parent: int | None = None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops the workers
    die_with_parent(parent)  # a killed parent (kill -9) must not leave workers running
    torch.set_num_threads(threads)
    logging.basicConfig(level=level, format="%(levelname)s %(processName)s %(name)s: %(message)s")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _stop_workers(pool: cf.ProcessPoolExecutor) -> None:
    """Cancel queued jobs and terminate running ones (their finished work is already on disk, atomically)."""
    terminate = getattr(pool, "terminate_workers", None)  # Python >= 3.14
    processes = [] if terminate is not None else list((getattr(pool, "_processes", None) or {}).values())
    if terminate is not None:
        terminate()
    for process in processes:
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.join(timeout=30)


class PoolExecutor:
    """Up to ``workers`` processes (``spawn``; no more than there are jobs), each with ``cores // processes``
    torch threads (one thread per process is also the fastest setting for kWTA's ``topk`` on a busy CPU).

    Workers ignore SIGINT; on Ctrl-C (or SIGTERM) the parent cancels the queued jobs and terminates the running
    ones, then re-raises ``KeyboardInterrupt``. A parent killed outright takes its workers with it
    (:func:`~kwta_robust.parent_watch.die_with_parent`)."""

    name = "pool"

    def __init__(self, workers: int) -> None:
        if workers < 2:
            raise ConfigError(f"executor.workers: a process pool needs at least 2 workers, got {workers}")
        self.workers = workers

    def map_unordered(self, fn: Callable[[J], R], jobs: Sequence[J]) -> Iterator[Completion[J, R]]:
        if not jobs:
            return
        workers = min(self.workers, len(jobs))
        threads = max(1, cpu_count() // workers)
        pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_init_worker,
                                      initargs=(threads, logging.getLogger().level, os.getpid()))
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
        finished = False
        try:
            futures = {pool.submit(fn, job): job for job in jobs}
            for future in cf.as_completed(futures):
                job = futures[future]
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 - e.g. BrokenProcessPool: reported per job, not fatal
                    yield Completion(job, error=_one_line(exc))
                else:
                    yield Completion(job, result)
            finished = True
        finally:
            if finished:
                pool.shutdown(wait=True)
            else:
                _stop_workers(pool)
            if main_thread:
                signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def cpu_count() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def resolve_workers(workers: int | str) -> int:
    """``auto`` → one per core; else an integer >= 1."""
    if workers == "auto":
        return cpu_count()
    if isinstance(workers, str) and workers.isdigit():
        workers = int(workers)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"executor.workers: expected an integer >= 1 or 'auto', got {workers!r}")
    return workers


def _local_executor(workers: int) -> Executor:
    return InlineExecutor() if workers == 1 else PoolExecutor(workers)


_EXECUTORS: dict[str, Callable[[int], Executor]] = {"local": _local_executor}


def register_executor(name: str, factory: Callable[[int], Executor]) -> None:
    """Add a backend: ``factory(workers) -> Executor`` (e.g. a cluster queue); named in ``executor.name``."""
    if name in _EXECUTORS:
        raise ValueError(f"executor {name!r} is registered twice")
    _EXECUTORS[name] = factory


def available_executors() -> list[str]:
    return sorted(_EXECUTORS)


def create_executor(name: str = "local", workers: int | str = 1) -> Executor:
    if name not in _EXECUTORS:
        raise ConfigError(f"executor.name: unknown executor {name!r}; choose one of {', '.join(available_executors())}")
    return _EXECUTORS[name](resolve_workers(workers))


# ---------------------------------------------------------------------------------------------------------------
# manifest and the sweep
# ---------------------------------------------------------------------------------------------------------------
def manifest_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / "sweep.json"


def read_manifest(path: str | Path) -> dict:
    """The manifest at ``path`` (``{}`` if missing or unreadable). A manifest saying ``running`` whose sweep holds
    no lock any more (the driver was killed) is returned as ``interrupted``."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        logger.warning("sweep manifest %s is unreadable; starting a new one (records and checkpoints are kept)", path)
        return {}
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        return {}
    if data.get("status") == "running" and holder_of(path) is None:
        data["status"] = "interrupted"
    return data


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


class _Manifest:
    """The ``sweep.json`` of one run: every cell's status, attempts and last error, written atomically."""

    def __init__(self, cfg: SweepConfig, plans: Sequence[CellPlan], out_dir: Path, executor: Executor) -> None:
        self.path = manifest_path(out_dir)
        old = read_manifest(self.path)
        if old.get("status") == "running":  # this run holds the folder's lock: that run did not end cleanly
            old["status"] = "interrupted"
        old_cells = {c.get("cell_id"): c for c in old.get("cells", []) if isinstance(c, dict)}
        self.data: dict[str, Any] = {
            "format": MANIFEST_FORMAT, "format_version": MANIFEST_VERSION, "name": cfg.name,
            "description": cfg.description, "config": cfg.to_dict(), "sources": cfg.sources,
            "eval_id": eval_identity(cfg.eval)[:HASH_CHARS],
            "executor": {"name": executor.name, "workers": executor.workers},
            "status": "running", "previous_status": old.get("status"), "runs": int(old.get("runs", 0)) + 1,
            "started_at": _now(), "finished_at": None, "driver": {"pid": os.getpid(), "host": socket.gethostname()},
            "cells": [], "failed": [],
        }
        for plan in plans:
            prev = old_cells.get(plan.cell_id, {})
            self.data["cells"].append({
                **plan.cell.to_dict(), "label": plan.label, "cell_id": plan.cell_id,
                "directory": os.path.relpath(plan.directory, out_dir),
                "checkpoint": os.path.relpath(plan.checkpoint, out_dir),
                "record": os.path.relpath(plan.record_path, out_dir), "status": "pending",
                "attempts": int(prev.get("attempts", 0)), "error": None,
                "previous_error": prev.get("error") if prev.get("status") == "failed" else None,
                "trained": None, "evaluated": None, "test_accuracy": prev.get("test_accuracy"),
                "measured_sparsity": prev.get("measured_sparsity"), "wall_time_s": None,
            })
        self.index = {c["cell_id"]: c for c in self.data["cells"]}

    def update(self, outcome: CellOutcome, attempted: bool) -> None:
        entry = self.index[outcome.cell_id]
        entry.update(status=outcome.status, error=outcome.error, trained=outcome.trained, evaluated=outcome.evaluated,
                     wall_time_s=round(outcome.wall_time_s, 3))
        if outcome.test_accuracy is not None:
            entry["test_accuracy"] = outcome.test_accuracy
        if outcome.measured_sparsity is not None:
            entry["measured_sparsity"] = outcome.measured_sparsity
        if attempted:
            entry["attempts"] += 1
        self.data["failed"] = [c["cell_id"] for c in self.data["cells"] if c["status"] == "failed"]
        self.save()

    def finish(self, status: str) -> None:
        self.data["status"] = status
        self.data["finished_at"] = _now()
        self.save()

    def save(self) -> None:
        self.data["updated_at"] = _now()
        atomic_write_text(self.path, json.dumps(self.data, indent=1, allow_nan=False) + "\n")


def run_sweep(cfg: SweepConfig, out_dir: str | Path, *, executor: Executor | None = None,
              progress: bool = True) -> SweepResult:
    """Run every unfinished cell of ``cfg`` (train or reuse, evaluate or resume) with ``executor`` (default: the
    config's). Finished cells are skipped without loading anything; the manifest is rewritten after each cell.
    ``KeyboardInterrupt`` is re-raised after the manifest records the interruption. The folder is locked
    (``sweep.json.lock``, :mod:`kwta_robust.locks`) while the sweep runs: a second sweep on it fails at once."""
    out_dir = Path(out_dir)
    for device in (cfg.train.get("device", "auto"), cfg.eval.device):  # an unavailable device fails every cell:
        resolve_device(device)  # say so once, before anything runs
    _check_eval_samples(cfg)
    with OutputLock(manifest_path(out_dir), "--out-dir"):
        return _run_sweep(cfg, out_dir, executor, progress)


def _check_eval_samples(cfg: SweepConfig) -> None:
    """The evaluation's data set loads and holds ``n_examples`` samples: checked once, before any cell trains."""
    from kwta_robust.loading import load_eval_data
    from kwta_robust.evaluate import select_samples

    select_samples(load_eval_data(cfg.eval), cfg.eval)


def _run_sweep(cfg: SweepConfig, out_dir: Path, executor: Executor | None, progress: bool) -> SweepResult:
    """The body of :func:`run_sweep` (the folder locked)."""
    executor = executor or create_executor(cfg.executor, cfg.workers)
    show_progress = progress and executor.workers == 1
    plans = plan_cells(cfg, out_dir, progress=show_progress)
    manifest = _Manifest(cfg, plans, out_dir, executor)
    manifest.save()
    outcomes: dict[str, CellOutcome] = {}
    todo = []
    for plan in plans:
        record = finished_record(plan)
        if record is None:
            todo.append(plan)
            continue
        outcomes[plan.cell_id] = _outcome(plan, record, trained=False, evaluated=False, start=time.perf_counter())
        manifest.update(outcomes[plan.cell_id], attempted=False)
    logger.info("sweep %s: %d cells, %d finished earlier, %d to run (%s executor, %d worker%s)", cfg.name, len(plans),
                len(plans) - len(todo), len(todo), executor.name, executor.workers, "" if executor.workers == 1 else "s")
    by_id = {p.cell_id: p for p in plans}
    done = len(plans) - len(todo)
    completions = executor.map_unordered(run_cell, todo)
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
    except KeyboardInterrupt:
        completions.close()
        manifest.finish("interrupted")
        logger.warning("sweep interrupted: %d of %d cells finished; re-run the same command to resume", done, len(plans))
        raise
    failed = manifest.data["failed"]
    manifest.finish("failed" if failed else "complete")
    return SweepResult(out_dir, manifest.data, outcomes, plans)


# ---------------------------------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------------------------------
def write_outputs(records: Sequence[EvalRecord], out_dir: str | Path, *, title: str = "", plots: bool = True,
                  notes: Sequence[str] = ()) -> dict[str, list[Path]]:
    """Matrices (``matrices.md``, ``matrices.csv``, ``matrices.tex``) and, with ``plots``, heatmaps and
    robust-accuracy-vs-eps plots under ``plots/``. Returns the written paths by kind."""
    from kwta_robust.formats import FORMATS
    from kwta_robust.matrix import build_matrices

    out_dir = Path(out_dir)
    matrices = build_matrices(records, title=title, notes=notes)
    written: dict[str, list[Path]] = {"tables": [], "plots": []}
    for entry in FORMATS.entries():  # every format with a matrices file (matrices.md, .csv, .tex, ...)
        if entry.obj.matrices_file:
            path = out_dir / entry.obj.matrices_file
            atomic_write_text(path, entry.obj().matrices(matrices))
            written["tables"].append(path)
    if plots:
        from kwta_robust.plots import write_plots

        written["plots"] = write_plots(matrices, out_dir / "plots")
    return written
