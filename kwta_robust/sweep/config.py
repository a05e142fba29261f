"""A sweep config (YAML, see ``eval_configs/sweep_mnist5k_3x3.yaml``): the base training recipe, the grid and the
evaluation suite, validated whole before anything trains::

    description: "..."
    name: mnist5k-3x3                 # optional, default: the config file's stem
    train: {dataset: mnist5k, arch: cnn, epochs: 3, activation: {mode: volume}, ...}   # or a path to a YAML
    grid:
      kwta_ratios: [1.0, 0.2, 0.05]   # k/N of every kWTA layer; 1.0 = the ReLU twin (same net with ReLU)
      weight_sparsities: [0.0, 0.5, 0.8]   # target fraction of conv/linear weights set to zero; 0 = dense
      pruning_methods: [magnitude]    # kwta_robust.sparsity registry names (default [magnitude])
    pruning: {retrain: finetune, retrain_epochs: 2}   # every other PruningConfig key, shared by all cells
    eval: quick.yaml                  # an EvalConfig inline, or a path (relative to this file's folder)
    executor: {name: local, workers: 1}   # a registered executor; workers: N or auto (one per core)
    # or {name: ray, workers: 8, address: auto, cpus_per_cell: 2, gpus_per_cell: 1, max_retries: 3}

Each cell is a full :class:`~kwta_robust.training.TrainConfig` (:meth:`SweepConfig.train_config`), built and checked
at construction (``SweepConfig.__post_init__``), so a bad value fails before any cell trains.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Mapping

from pydantic import BeforeValidator

from kwta_robust.config import EvalConfig, warn_seed_overlaps
from kwta_robust.configio import (Count, Description, Invalid, Number, Text, config_class, config_field, detail_of,
                                  keys, null_means, parse, read_yaml)
from kwta_robust.errors import ConfigError
from kwta_robust.matrix import DENSE
from kwta_robust.registry import RegistryError
from kwta_robust.safe_paths import safe_name, sanitize_name
from kwta_robust.sparsity.config import PruningConfig
from kwta_robust.sweep.executors import EXECUTORS, resolve_workers
from kwta_robust.sweep.grid import Grid, GridCell, as_written
from kwta_robust.sweep.placement import build_executor
from kwta_robust.sweep.identity import architecture_identity, plain
from kwta_robust.training import TrainConfig, check_spec

#: Keys of ``train.activation`` the grid sets (the others — mode, boosting — come from the base recipe).
GRID_ACTIVATION_KEYS: tuple[str, ...] = ("name", "k_ratio", "k")


def _section(value: Any, base_dir: Path | None, where: str) -> tuple[Any, str | None]:
    """An inline mapping, or a YAML file path relative to the sweep config's folder: ``(data, resolved path)``."""
    if isinstance(value, str):
        path = Path(value)
        if not path.is_absolute():
            path = (base_dir or Path.cwd()) / path
            if not path.exists():  # say where a relative path is read from: the sweep file's folder, not the cwd
                folder = f"the sweep file's folder {str(base_dir)!r}" if base_dir is not None else "the working folder"
                raise ConfigError(f"{where}: no such file {str(path)!r} ({value!r} is read relative to {folder}); "
                                  "give the YAML file's path relative to that folder, or an absolute path")
        return read_yaml(path, where), str(path)
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping or a path to a YAML file, got {type(value).__name__}")
    return dict(value), None


def _base_training(data: Any) -> dict:
    """The base recipe as plain data, checked for keys the sweep owns (the cells' configs check the rest)."""
    if not isinstance(data, Mapping):
        raise Invalid(f"expected a mapping of training keys, got {type(data).__name__}")
    base = copy.deepcopy(dict(data))
    if base.get("out") is not None:
        raise Invalid("the sweep names every cell's checkpoint (cells/<label>-<hash>/model.pt); remove the key",
                      at=("out",))
    if base.get("pruning") is not None:
        raise Invalid("set by the grid; put shared pruning options under the sweep's top-level 'pruning:' and the "
                      "methods in grid.pruning_methods", at=("pruning",))
    incremental = base.get("incremental")
    if isinstance(incremental, Mapping) and incremental.get("ratios"):
        raise Invalid("the sweep sets each cell's kWTA ratio; remove the key (the incremental schedule cannot be "
                      "combined with pruning)", at=("incremental", "ratios"))
    activation = base.get("activation")
    if isinstance(activation, str):
        activation = {"name": activation}
    if activation is not None:
        if not isinstance(activation, Mapping):
            raise Invalid("expected a mapping (mode, boost_strength, k_inference_factor)", at=("activation",))
        for key in GRID_ACTIVATION_KEYS:
            if key in activation:
                raise Invalid("set by grid.kwta_ratios (1.0 = ReLU); remove the key", at=("activation", key))
        base["activation"] = dict(activation)
    return base


def _shared_pruning(value: Any) -> dict:
    """The sweep's ``pruning:`` — :class:`PruningConfig` keys shared by every pruned cell (not the grid's own)."""
    value = {} if value is None else value
    if not isinstance(value, Mapping):
        raise Invalid(f"expected a mapping of keys, got {type(value).__name__}")
    grid_keys = {"method": "pruning_methods", "sparsity": "weight_sparsities"}
    valid = [key for key in keys(PruningConfig) if key not in grid_keys]  # the grid's own are refused below
    for key in value:
        if key not in valid and key not in grid_keys:
            raise Invalid(f"unknown key {key!r}; valid keys: {', '.join(valid)}")
    for key, axis in grid_keys.items():
        if key in value:
            raise Invalid(f"set by grid.{axis}; remove the key", at=(key,))
    return dict(value)


def _safe_name(value: Any) -> str:
    """The sweep's name becomes the default output folder runs/sweeps/<name>: it must stay one folder name."""
    try:
        return safe_name(value, "name")
    except ConfigError as exc:
        raise Invalid(detail_of(exc, "name")) from None


@config_class(frozen=True, prefix="executor")
class ExecutorSpec:
    """``executor: {name, workers, ...}``: a registered executor (:mod:`kwta_robust.sweep.executors`), its workers
    (cells at once, at most: an integer >= 1 or ``auto``, one per core) and its options (:mod:`.placement`):
    ``address`` and ``max_retries`` of ``ray``, the cores and GPUs reserved per cell (executors that reserve
    resources per job: ``ray``). An option the executor does not take is refused."""

    name: Text = "local"
    workers: Any = 1
    address: Text | None = None
    max_retries: Count | None = None
    cpus_per_cell: Number | None = None
    gpus_per_cell: Number | None = None

    def __post_init__(self) -> None:
        try:
            EXECUTORS.info(self.name)
        except RegistryError as exc:
            raise Invalid(exc.detail, at=("name",)) from None
        try:
            resolve_workers(self.workers)
        except ConfigError as exc:
            raise Invalid(detail_of(exc, "executor.workers"), at=("workers",)) from None
        try:
            build_executor(self.name, self.workers, self.options())  # no start: checks the options, finds Ray
        except ConfigError as exc:
            where, _, detail = str(exc).partition(": ")
            raise Invalid(detail, at=tuple(where.split(".")[1:2])) from None

    def options(self) -> dict[str, Any]:
        """The options given (``executor:`` keys besides ``name`` and ``workers``)."""
        return {k: getattr(self, k) for k in OPTION_KEYS if getattr(self, k) is not None}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "workers": self.workers, **self.options()}


#: The ``executor:`` keys that are options of the executor or of the driver's placement.
OPTION_KEYS: tuple[str, ...] = ("address", "max_retries", "cpus_per_cell", "gpus_per_cell")


_HINTS = {
    "train": "the base training recipe: a mapping of TrainConfig keys or a path to a training YAML",
    "grid": "kwta_ratios, weight_sparsities and pruning_methods",
    "eval": "the evaluation suite: an inline eval config or a path such as quick.yaml",
}


@config_class(frozen=True, name="sweep config")
class SweepConfig:
    """A validated sweep (see the module docstring). ``train`` is the base recipe as plain data, ``pruning`` the
    shared :class:`PruningConfig` options; every cell's config is built and validated at construction."""

    description: Description = ""
    name: Annotated[str, BeforeValidator(_safe_name)] = "sweep"
    train: Annotated[dict, BeforeValidator(_base_training)] = config_field(hint=_HINTS["train"])
    grid: Grid = config_field(hint=_HINTS["grid"])
    pruning: Annotated[dict, BeforeValidator(_shared_pruning)] = field(default_factory=dict)
    eval: EvalConfig = config_field(hint=_HINTS["eval"])
    executor: Annotated[ExecutorSpec, null_means(ExecutorSpec)] = field(default_factory=ExecutorSpec)
    sources: dict = field(default_factory=dict, init=False)  # where train/eval were read from, for the manifest

    def __post_init__(self) -> None:
        """Every cell's training config (with its pruning) is built now: bad values fail before any training."""
        for cell in self.grid.cells():
            check_architecture(self.train_config(cell))
        dataset = self.train.get("dataset", TrainConfig().dataset)
        if isinstance(dataset, Mapping):  # its cells' identity and reuse would need the file's sha256 pinned first
            raise Invalid("a data file ({file: ...}) is trained on by `kwta-robust train --data FILE` only; the sweep "
                          "trains registered data sets: train the cells with train --data and evaluate them with "
                          "evaluate --data FILE --grid-cell", at=("train", "dataset"))
        if self.eval.dataset != dataset:
            raise Invalid(f"the suite evaluates {self.eval.dataset!r} but the cells are trained on {dataset!r}; use "
                          "the same data set", at=("eval", "dataset"))

    # --- construction ----------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, *, name: str = "sweep", base_dir: str | Path | None = None) -> "SweepConfig":
        """Build and validate; ``train``/``eval`` may be paths of YAML files (relative to ``base_dir``, default the
        working folder); ``name`` is the default of the ``name`` key (made a safe folder name)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"sweep config: expected a YAML mapping at the top level, got {type(data).__name__}")
        data = {k: v for k, v in data.items() if not (k in _HINTS and v is None)}  # null means missing
        base = Path(base_dir) if base_dir is not None else None
        sources: dict[str, str | None] = {}
        for key in ("train", "eval"):
            if key in data:
                data[key], sources[key] = _section(data[key], base, key)
        if "name" not in data:
            data["name"] = sanitize_name(name, "sweep")
        try:
            cfg = parse(cls, data)
        except ConfigError as exc:  # grid.kwta_ratios: 2 out of range names grid.kwta_ratios, not [0]
            raise as_written(exc, data.get("grid")) from None
        object.__setattr__(cfg, "sources", {"train": sources.get("train"), "eval": sources.get("eval")})
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path) -> "SweepConfig":
        path = Path(path)
        return cls.from_dict(read_yaml(path, "sweep config"), name=path.stem, base_dir=path.parent)

    def with_overrides(self, *, device: str | None = None, workers: int | str | None = None,
                       executor: str | None = None, options: Mapping[str, Any] | None = None) -> "SweepConfig":
        """CLI overrides: ``device`` for training and evaluation (not part of any identity), ``workers``, the
        executor and its ``options`` (another executor than the config's drops the config's options)."""
        train = dict(self.train)
        eval_cfg = self.eval
        if device is not None:
            train["device"] = device
            eval_cfg = eval_cfg.with_overrides(flags={"device": "--device"}, device=device)  # an error names it
        name = executor or self.executor.name
        kept = self.executor.options() if name == self.executor.name else {}
        executor_spec = ExecutorSpec(**{**kept, **(options or {}), "name": name,
                                        "workers": self.executor.workers if workers is None else workers})
        cfg = dataclasses.replace(self, train=train, eval=eval_cfg, executor=executor_spec)
        object.__setattr__(cfg, "sources", dict(self.sources))
        return cfg

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
        try:  # errors named by the sweep config's sections: train.epochs, train: unknown key 'x', pruning.x
            return parse(TrainConfig, data, prefix="train")
        except ConfigError as exc:  # (the pruning settings come from the sweep's own pruning section)
            text = str(exc).removeprefix("train.") if str(exc).startswith("train.pruning") else str(exc)
            raise ConfigError(f"{text} (cell {cell.label})") from None

    def to_dict(self) -> dict:
        return {
            "description": self.description, "name": self.name, "train": plain(self.train),
            "grid": self.grid.to_dict(), "pruning": plain(self.pruning), "eval": self.eval.to_dict(),
            "executor": self.executor.to_dict(),
        }


def check_architecture(cfg: TrainConfig) -> None:
    """The model spec of ``cfg`` is valid (architecture and its arguments) — checked without building it."""
    architecture_identity(cfg)  # an unknown arch named train.arch
    check_spec(cfg, "train.arch_kwargs")  # the check train runs: construction errors and absurd sizes too


def load_sweep_config(path: str | Path) -> SweepConfig:
    """Read and validate a sweep YAML (``ConfigError`` with one line on any problem); its evaluation's seed overlaps
    are warned of once here, not again by each cell's config."""
    cfg = SweepConfig.from_yaml(path)
    warn_seed_overlaps(cfg.eval)
    return cfg
