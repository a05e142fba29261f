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

Each cell is a full :class:`~kwta_robust.train.TrainConfig` (:meth:`SweepConfig.train_config`), built and checked
at construction (:meth:`SweepConfig.validate`), so a bad value fails before any cell trains.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from kwta_robust.config import EvalConfig, read_yaml
from kwta_robust.data import dataset_info
from kwta_robust.errors import ConfigError
from kwta_robust.matrix import DENSE
from kwta_robust.model_checks import check_buildable
from kwta_robust.models import ModelSpec
from kwta_robust.safe_paths import safe_name, sanitize_name
from kwta_robust.sparsity.config import PruningConfig
from kwta_robust.sweep.executors import EXECUTORS, resolve_workers
from kwta_robust.sweep.grid import Grid, GridCell, check_keys
from kwta_robust.sweep.identity import architecture_identity, plain
from kwta_robust.train import TrainConfig

#: Keys of ``train.activation`` the grid sets (the others — mode, boosting — come from the base recipe).
GRID_ACTIVATION_KEYS: tuple[str, ...] = ("name", "k_ratio", "k")
SWEEP_KEYS: tuple[str, ...] = ("description", "name", "train", "grid", "pruning", "eval", "executor")
EXECUTOR_KEYS: tuple[str, ...] = ("name", "workers")


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
        check_keys(data, SWEEP_KEYS, "sweep config")
        base = Path(base_dir) if base_dir is not None else None
        for key in ("train", "grid", "eval"):
            if data.get(key) is None:
                raise ConfigError(f"sweep config: missing key {key!r} ({_SECTION_HINTS[key]})")
        train_raw, train_src = _section(data["train"], base, "train")
        eval_raw, eval_src = _section(data["eval"], base, "eval")
        grid = Grid.from_dict(data["grid"])
        pruning = data.get("pruning") or {}
        check_keys(pruning, [f.name for f in dataclasses.fields(PruningConfig)], "pruning")
        for key, axis in (("method", "pruning_methods"), ("sparsity", "weight_sparsities")):
            if key in pruning:
                raise ConfigError(f"pruning.{key}: set by grid.{axis}; remove the key")
        executor = data.get("executor") or {}
        check_keys(executor, EXECUTOR_KEYS, "executor")
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
        EXECUTORS.info(self.executor)  # an unknown name: one line listing the known executors
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
            "description": self.description, "name": self.name, "train": plain(self.train),
            "grid": self.grid.to_dict(), "pruning": plain(self.pruning), "eval": self.eval.to_dict(),
            "executor": {"name": self.executor, "workers": self.workers},
        }


def check_architecture(cfg: TrainConfig) -> None:
    """The model spec of ``cfg`` is valid (architecture and its arguments) — checked without building it."""
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
