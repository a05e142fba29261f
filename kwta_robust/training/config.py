"""Training configs: :class:`TrainConfig` and its sections, :func:`~kwta_robust.configio.config_class` es read from
YAML (``eval_configs/train_*.yaml``) or built from ``kwta-robust train`` flags.

The fields are the keys, with their types, defaults and constraints; the choices of ``optimizer``, ``schedule``,
``method`` and ``augment`` are named here (:data:`OPTIMIZER_NAMES`, ...) and implemented by
:mod:`kwta_robust.training.recipes` and :mod:`kwta_robust.training.adversarial`. Numbers may be written as the
field writes them (``1e-3``, ``8/255``). A bad value is a one-line :class:`~kwta_robust.errors.ConfigError` naming
the key (``adversarial.eps``) and the fix.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Mapping

import torch
from pydantic import BeforeValidator

from attacks.base import AttackConfigError, ThreatModel
from attacks.errors import FLOAT32_MAX
from kwta_robust.config import resolve_device
from kwta_robust.configio import (AS_LIST, Amount, AtLeast, Count, Flag, Integer, Invalid, Seed, Text, config_class,
                                  one_of, parse, read_yaml)
from kwta_robust.datafile import DataFileSpec, parse_dataset
from kwta_robust.errors import ConfigError
from kwta_robust.layers import ActivationSpec
from kwta_robust.models.registry import COMMON_ARGS
from kwta_robust.runtime import MAX_THREADS
from kwta_robust.sparsity.config import PruningConfig
from kwta_robust.specs import parse_epsilon

#: The choices of the named recipes (implemented by the tables of :mod:`.recipes` and :mod:`.adversarial`).
OPTIMIZER_NAMES: tuple[str, ...] = ("sgd", "adam", "adamw")
SCHEDULE_NAMES: tuple[str, ...] = ("constant", "cosine", "step")
METHOD_NAMES: tuple[str, ...] = ("standard", "pgd", "trades")
AUGMENTATION_NAMES: tuple[str, ...] = ("none", "shift", "crop-flip")


Amounts = Annotated[list[Amount], AS_LIST]



def _float32_bound(key: str, value: float, typical: str = "1e-4 to 0.1") -> None:
    """A learning rate or weight decay a float32 model's optimizer step can hold (torch raises a bare
    ``RuntimeError`` converting a larger one)."""
    if value > FLOAT32_MAX:
        raise Invalid(f"must be at most {FLOAT32_MAX:.2g} (torch's optimizers step float32 weights by it), got "
                      f"{value:g}; typical values are {typical}", at=tuple(key.split(".")))


@config_class
class ActivationConfig:
    """``name``: relu | kwta; ``k_ratio`` (k/N) or ``k``; ``mode``: volume | channel | local (convolutional
    layers); Numenta boosting and inference-k factor. ``k_ratio``/``k`` are ignored for ReLU. ``activation: relu``
    stands for ``{name: relu}``."""

    name: str = "relu"
    k_ratio: Amount | None = None
    k: Count | None = None
    mode: str = "volume"
    boost_strength: Amount = 0.0
    k_inference_factor: Amount = 1.0

    def to_spec(self) -> ActivationSpec:
        if self.name == "kwta":
            for key, ok, rule in (("k_ratio", self.k_ratio is None or 0 < self.k_ratio <= 1, "in (0, 1]"),
                                  ("k", self.k is None or self.k >= 1, "an integer >= 1"),
                                  ("boost_strength", self.boost_strength >= 0, ">= 0"),
                                  ("k_inference_factor", self.k_inference_factor > 0, "> 0")):
                if not ok:
                    raise ConfigError(f"activation.{key}: must be {rule}, got {getattr(self, key)}")
        try:
            if self.name == "relu":
                return ActivationSpec("relu")
            return ActivationSpec(
                name=self.name,  # type: ignore[arg-type]
                ratio=self.k_ratio, k=self.k, mode=self.mode,  # type: ignore[arg-type]
                boost_strength=self.boost_strength, k_inference_factor=self.k_inference_factor,
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


def _activation(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


@config_class
class AdversarialConfig:
    """Threat model and PGD budget for ``method: pgd`` / ``trades``. ``step_size`` defaults to ``2.5·eps/steps``
    (Madry et al.); ``eps``/``step_size`` accept ``"8/255"``. ``random_start`` is PGD's (uniform in the ball);
    TRADES always starts at ``x + 0.001·N(0, I)`` (Zhang et al. 2019, Algorithm 1)."""

    norm: str = "linf"
    eps: Amount = 0.3
    steps: Count = 10
    step_size: Amount | None = None
    random_start: Flag = True
    trades_beta: Amount = 6.0

    def threat(self) -> ThreatModel:
        try:
            return ThreatModel(self.norm, self.eps)  # type: ignore[arg-type]
        except AttackConfigError as exc:
            raise ConfigError(f"adversarial.{exc}") from None

    def alpha(self) -> float:
        return float(self.step_size) if self.step_size is not None else 2.5 * float(self.eps) / self.steps

    def check(self, method: str) -> None:
        """One-line errors naming the key: ``steps`` >= 1 and a given ``step_size`` > 0 whatever the method (given
        and ignored they would land in the checkpoint's metadata), ``eps`` > 0 for ``method: pgd | trades``."""
        if self.steps < 1:
            raise ConfigError(f"adversarial.steps: must be >= 1 (PGD iterations per training batch; Madry et al. "
                              f"use 7-40), got {self.steps}")
        if self.step_size is not None and not self.step_size > 0:
            raise ConfigError(f"adversarial.step_size: must be > 0, got {self.step_size}; leave it out for "
                              "2.5·eps/steps")
        if method != "standard" and not self.eps > 0:
            raise ConfigError(f"adversarial.eps: method {method} needs eps > 0, got {self.eps}; give the training "
                              "budget (e.g. 0.3 on MNIST, 8/255 on CIFAR-10), or use method: standard")


@config_class
class IncrementalConfig:
    """Xiao et al.'s incremental sparsity: after the main training, set every kWTA layer to each ratio in
    ``ratios`` in turn and fine-tune ``epochs_per_ratio`` epochs (learning rate ``lr``, default the main one)."""

    ratios: Amounts = field(default_factory=list)
    epochs_per_ratio: Count = 2
    lr: Amount | None = None


#: The share of a data file's samples held out as its test split where ``test_fraction`` is not given.
DEFAULT_TEST_FRACTION = 0.2


@config_class
class TrainConfig:
    """Everything a training run depends on (recorded in the checkpoint's metadata as ``training``).

    Defaults train the small CNN on mnist5k to ≥ 95 % test accuracy in well under 3 minutes on 2 CPU cores
    (Adam 2e-3, cosine, 12 epochs of batch 128 with ±2-pixel shifts: 98.2 % with kWTA 0.1 in 22 CPU s, 97.8 % with
    ReLU in 20 CPU s, one thread; re-measured on 6 December 2026 with the code of this commit on an AMD EPYC).
    ``threads`` defaults to 1: CPU runs are then bit-reproducible on one kind of CPU whatever its core count, and on a
    shared machine one thread is several times faster than torch's default of one per core (idle threads spin);
    use ``threads: 0`` (torch's default, all cores) for long CPU-only runs on a machine of your own. It does not matter
    on GPU.
    """

    dataset: Any = "mnist5k"  # a registry name, or {file: PATH, sha256: HEX} (kwta_robust.datafile's format)
    data_root: Text | None = None
    download: Flag = False
    split_seed: Seed = 0
    test_fraction: Amount | None = None  # dataset: {file: ...} only (default 0.2 there): the share held out for testing
    arch: str = "cnn"
    arch_kwargs: dict = field(default_factory=dict)
    activation: Annotated[ActivationConfig, BeforeValidator(_activation)] = field(default_factory=ActivationConfig)
    optimizer: Annotated[str, one_of("optimizer", OPTIMIZER_NAMES)] = "adam"
    lr: Amount = 2e-3
    momentum: Amount = 0.9
    weight_decay: Annotated[Amount, AtLeast(0)] = 0.0
    schedule: Annotated[str, one_of("schedule", SCHEDULE_NAMES)] = "cosine"
    milestones: Amounts = field(default_factory=lambda: [0.5, 0.75])
    gamma: Amount = 0.1
    epochs: Annotated[Count, AtLeast(0)] = 12
    batch_size: Annotated[Count, AtLeast(2)] = 128  # a final batch of one is dropped (BatchNorm cannot train on it)
    eval_batch_size: Annotated[Count, AtLeast(1)] = 500
    augment: Annotated[str, one_of("augmentation", AUGMENTATION_NAMES)] = "shift"
    seed: Seed = 0
    device: str = "auto"
    threads: Integer | None = 1  # CPU threads for the run (torch.set_num_threads); 0 or None keep torch's default
    method: Annotated[str, one_of("method", METHOD_NAMES)] = "standard"
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    incremental: IncrementalConfig = field(default_factory=IncrementalConfig)
    pruning: PruningConfig | None = None  # weight pruning (kwta_robust.sparsity): method, sparsity, schedule, ...
    out: str | None = None

    def __post_init__(self) -> None:
        """Checks across keys (each key's own type and range are checked by its annotation)."""
        self._check_data()
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise Invalid(f"must be a finite number > 0, got {self.lr}", at=("lr",))
        _float32_bound("lr", self.lr)
        _float32_bound("weight_decay", self.weight_decay, "0 to 5e-4")
        if not (math.isfinite(self.gamma) and self.gamma > 0):  # gamma < 0 would train with a negative lr
            raise Invalid(f"must be a finite number > 0 (the step schedule's lr factor, e.g. 0.1), got {self.gamma}",
                          at=("gamma",))
        growth = len(self.milestones) * math.log(max(1.0, self.gamma))  # in logs: the product may overflow
        if self.schedule == "step" and math.log(self.lr) + growth > math.log(FLOAT32_MAX):
            raise Invalid(f"lr × gamma^{len(self.milestones)} exceeds {FLOAT32_MAX:.2g} (float32) with lr "
                          f"{self.lr:g}, gamma {self.gamma:g}; use gamma <= 1", at=("gamma",))
        if not 0 <= self.momentum < 1:
            raise Invalid(f"must be in [0, 1), got {self.momentum}", at=("momentum",))
        if self.schedule == "step" and not all(0 < m < 1 for m in self.milestones):
            raise Invalid(f"fractions of the epochs in (0, 1), got {self.milestones}", at=("milestones",))
        self.activation.to_spec()
        common = next((key for key in COMMON_ARGS if key in self.arch_kwargs), None)
        if common is not None:  # build_spec passes these itself: a second value was a TypeError traceback
            raise Invalid(f"set by train itself (activation from the activation section; num_classes, in_channels, "
                          f"input_size, mean and std from the data set), not an architecture argument; remove it "
                          f"(--arch-arg {common}=...)", at=("arch_kwargs", common))
        # checked whatever the method: a value given and silently ignored would land in the checkpoint's metadata
        parse_epsilon(self.adversarial.eps, self.adversarial.norm, "adversarial.eps")
        self.adversarial.threat()
        self.adversarial.check(self.method)
        beta = self.adversarial.trades_beta
        if not (math.isfinite(beta) and beta >= 0):
            raise ConfigError(f"adversarial.trades_beta: must be a finite number >= 0 (the weight of TRADES' "
                              f"robustness term; Zhang et al. 2019 use 1-6), got {beta}")
        self._check_schedules()
        if self.threads is not None and self.threads < 0:
            raise Invalid(f"must be >= 1, or 0 for torch's default, got {self.threads}", at=("threads",))
        if self.threads is not None and self.threads > MAX_THREADS:
            raise Invalid(f"{self.threads} is more threads than any CPU has cores (at most {MAX_THREADS}); give the "
                          "number of cores to use, or 0 for torch's default", at=("threads",))
        if self.device != "auto":
            try:
                torch.device(self.device)
            except RuntimeError:
                raise Invalid(f"{self.device!r} is not a torch device; use auto, cpu, cuda or cuda:N",
                              at=("device",)) from None

    def _check_data(self) -> None:
        """``dataset``: a registry name, or a data file (``{file: PATH, sha256: HEX}``, kept in that form, checked
        as evaluate's ``dataset: {file: ...}``), which takes no ``data_root``/``download``; ``test_fraction`` in
        (0, 1), :data:`DEFAULT_TEST_FRACTION` where not given; a registered data set, whose test split is its own,
        takes none (``--test-fraction`` with ``--dataset`` would be ignored)."""
        _, spec = parse_dataset(self.dataset)
        if spec is None:
            if self.test_fraction is not None:  # named test_fraction, or --test-fraction where the flag gave it
                raise Invalid(f"only used with a data file (dataset: {{file: ...}}, --data FILE): {self.dataset!r} has "
                              "its own test split; remove it", at=("test_fraction",))
            return
        self.dataset = spec.to_dict()
        if self.data_root is not None or self.download:
            raise Invalid("not used with dataset: {file: ...} (the file holds the samples); remove it",
                          at=("data_root" if self.data_root is not None else "download",))
        self.test_fraction = DEFAULT_TEST_FRACTION if self.test_fraction is None else self.test_fraction
        if not 0 < self.test_fraction < 1:
            raise Invalid(f"must be in (0, 1) (the share of a data file's samples held out for the test accuracy, "
                          f"e.g. 0.2), got {self.test_fraction}", at=("test_fraction",))

    @property
    def data_file(self) -> DataFileSpec | None:
        """The data file of ``dataset: {file: PATH}`` (``None`` for a registered data set)."""
        return DataFileSpec.from_dict(self.dataset) if isinstance(self.dataset, Mapping) else None

    @property
    def dataset_name(self) -> str:
        """The registered data set's name, or the data file's path."""
        spec = self.data_file
        return spec.file if spec is not None else str(self.dataset)

    def stage_ratios(self) -> list[float]:
        """The k/N of each checkpoint an incremental run writes beside ``out`` (``training.run.stage_path``): the
        starting ``activation.k_ratio``, then each of ``incremental.ratios``; empty without that schedule."""
        if not self.incremental.ratios or self.activation.k_ratio is None:
            return []
        return [float(self.activation.k_ratio), *map(float, self.incremental.ratios)]

    def _check_schedules(self) -> None:
        inc = self.incremental
        if inc.ratios:
            if self.activation.name != "kwta" or self.activation.k_ratio is None:
                raise ConfigError("incremental.ratios: the incremental schedule needs activation kwta with a k_ratio")
            if any(not 0 < r <= 1 for r in inc.ratios):
                raise ConfigError(f"incremental.ratios: each ratio must be in (0, 1], got {inc.ratios}")
            chain = self.stage_ratios()
            if any(later >= earlier for earlier, later in zip(chain, chain[1:])):
                raise ConfigError(f"incremental.ratios: each ratio must be below the one before, starting from "
                                  f"k_ratio {chain[0]:g} (each stage writes its own checkpoint, named by its ratio), "
                                  f"got {inc.ratios}")
            if inc.epochs_per_ratio < 1:
                raise ConfigError(f"incremental.epochs_per_ratio: must be >= 1, got {inc.epochs_per_ratio}")
            if inc.lr is not None and not inc.lr > 0:
                raise ConfigError(f"incremental.lr: must be > 0, got {inc.lr}")
            if inc.lr is not None:
                _float32_bound("incremental.lr", inc.lr)
        if self.pruning is not None:
            if self.epochs < 1:
                raise ConfigError(f"epochs: pruned training needs epochs >= 1, got {self.epochs}")
            if inc.ratios:
                raise ConfigError("pruning: not combinable with incremental.ratios; prune the final-ratio model "
                                  "in a separate run")
            self.pruning.check_epochs(self.epochs)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        """Build from plain data (YAML); unknown keys and wrongly typed values raise :class:`ConfigError`."""
        return parse(cls, data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(read_yaml(path, "--config", empty_ok=True))

    def to_dict(self) -> dict:
        """The keys as plain data; ``test_fraction`` only with a data file (a registered data set's config, and so
        its sweep cell's hash, is as before the key existed; it takes no ``test_fraction``)."""
        data = dataclasses.asdict(self)
        if self.data_file is None:
            del data["test_fraction"]
        return data

    def resolved_device(self) -> torch.device:
        return resolve_device(self.device)
