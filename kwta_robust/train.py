"""Training: standard, PGD adversarial (Madry et al., ICLR 2018), TRADES (Zhang et al., ICML 2019), and Xiao et
al.'s incremental kWTA sparsity fine-tuning (ICLR 2020, Sec. 4: train at a larger ratio, then lower it step by
step, fine-tuning after each step).

* :class:`TrainConfig` — every hyperparameter, from YAML (:meth:`TrainConfig.from_yaml`) or a dict; unknown keys
  and bad values raise a one-line :class:`~kwta_robust.errors.ConfigError` naming the key.
* :func:`train_model` — the generic loop (reused e.g. for pruning fine-tuning): a per-step hook
  ``after_step(model, step)`` lets mask re-application or RigL updates plug in.
* :func:`evaluate_accuracy` — clean accuracy in eval mode, restoring every module's mode.
* :func:`run_training` — data + model + training + test accuracy + checkpoint (one per ratio for the schedule).

Determinism: the model is initialized under ``torch.manual_seed(seed)`` inside ``torch.random.fork_rng`` (the
caller's global RNG is untouched); batch order, augmentation and PGD random starts come from explicit
``torch.Generator``s derived from ``(seed, stage)``. On CPU the same seed and thread count (``threads``, recorded
in the checkpoint as ``torch_threads``) give bit-identical weights; another thread count changes the summation
order inside convolutions and hence the last bits (and, after training, the accuracy by a few tenths of a point).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from attacks.base import AttackConfigError, ThreatModel, eval_mode, parse_eps
from kwta_robust.checkpoint import save_checkpoint
from kwta_robust.config import parse_epsilon, read_yaml, resolve_device
from kwta_robust.data import TensorData, dataset_info, load_dataset
from kwta_robust.errors import ConfigError
from kwta_robust.layers import ActivationSpec, set_kwta_ratio
from kwta_robust.model_checks import build_model, probe_model
from kwta_robust.models import ModelSpec
from kwta_robust.sparsity.config import PruningConfig

logger = logging.getLogger(__name__)


# --- configuration ----------------------------------------------------------------------------------------------------


@dataclass
class ActivationConfig:
    """``name``: relu | kwta; ``k_ratio`` (k/N) or ``k``; ``mode``: volume | channel | local (convolutional
    layers); Numenta boosting and inference-k factor. ``k_ratio``/``k`` are ignored for ReLU."""

    name: str = "relu"
    k_ratio: float | None = None
    k: int | None = None
    mode: str = "volume"
    boost_strength: float = 0.0
    k_inference_factor: float = 1.0

    def to_spec(self) -> ActivationSpec:
        if self.name == "kwta":
            for key, ok, rule in (("k", self.k is None or self.k >= 1, "an integer >= 1"),
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


@dataclass
class AdversarialConfig:
    """Threat model and PGD budget for ``method: pgd`` / ``trades``. ``step_size`` defaults to ``2.5·eps/steps``
    (Madry et al.); ``eps``/``step_size`` accept ``"8/255"``."""

    norm: str = "linf"
    eps: float = 0.3
    steps: int = 10
    step_size: float | None = None
    random_start: bool = True
    trades_beta: float = 6.0

    def threat(self) -> ThreatModel:
        try:
            return ThreatModel(self.norm, self.eps)  # type: ignore[arg-type]
        except AttackConfigError as exc:
            raise ConfigError(f"adversarial.{exc}") from None

    def alpha(self) -> float:
        return float(self.step_size) if self.step_size is not None else 2.5 * float(self.eps) / self.steps


@dataclass
class IncrementalConfig:
    """Xiao et al.'s incremental sparsity: after the main training, set every kWTA layer to each ratio in
    ``ratios`` in turn and fine-tune ``epochs_per_ratio`` epochs (learning rate ``lr``, default the main one)."""

    ratios: list[float] = field(default_factory=list)
    epochs_per_ratio: int = 2
    lr: float | None = None


@dataclass
class TrainConfig:
    """Everything a training run depends on (recorded in the checkpoint's metadata as ``training``).

    Defaults train the small CNN on mnist5k to ≥ 95 % test accuracy in well under 3 minutes on 2 CPU cores
    (Adam 2e-3, cosine, 12 epochs of batch 128 with ±2-pixel shifts: about 97.5 % with kWTA 0.1, 98 % with ReLU).
    ``threads`` defaults to 1: CPU runs are then bit-reproducible across machines with any core count, and on a
    shared machine one thread is several times faster than torch's default of one per core (idle threads spin);
    use ``threads: 0`` (torch's default, all cores) for long CPU-only runs on a machine of your own. It does not matter on GPU.
    """

    dataset: str = "mnist5k"
    data_root: str | None = None
    download: bool = False
    split_seed: int = 0
    arch: str = "cnn"
    arch_kwargs: dict = field(default_factory=dict)
    activation: ActivationConfig = field(default_factory=ActivationConfig)
    optimizer: str = "adam"
    lr: float = 2e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])
    gamma: float = 0.1
    epochs: int = 12
    batch_size: int = 128
    eval_batch_size: int = 500
    augment: str = "shift"
    seed: int = 0
    device: str = "auto"
    threads: int | None = 1  # CPU threads for the run (torch.set_num_threads); 0 or None keep torch's default
    method: str = "standard"
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    incremental: IncrementalConfig = field(default_factory=IncrementalConfig)
    pruning: PruningConfig | None = None  # weight pruning (kwta_robust.sparsity): method, sparsity, schedule, ...
    out: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` (one line, naming the key) for an invalid value."""
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("method", self.method, METHODS)
        _choice("augment", self.augment, AUGMENTATIONS)
        for name in ("epochs", "batch_size", "eval_batch_size"):
            minimum = 0 if name == "epochs" else 1
            if getattr(self, name) < minimum:
                raise ConfigError(f"{name}: must be >= {minimum}, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr: must be a finite number > 0, got {self.lr}")
        for name in ("seed", "split_seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay: must be >= 0, got {self.weight_decay}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum: must be in [0, 1), got {self.momentum}")
        if self.schedule == "step" and not all(0 < m < 1 for m in self.milestones):
            raise ConfigError(f"milestones: fractions of the epochs in (0, 1), got {self.milestones}")
        self.activation.to_spec()
        if self.method != "standard":
            parse_epsilon(self.adversarial.eps, self.adversarial.norm, "adversarial.eps")
            self.adversarial.threat()
            if self.adversarial.steps < 1 or not self.adversarial.alpha() > 0:
                raise ConfigError("adversarial.steps must be >= 1 and adversarial.step_size > 0")
        inc = self.incremental
        if inc.ratios:
            if self.activation.name != "kwta" or self.activation.k_ratio is None:
                raise ConfigError("incremental.ratios: the incremental schedule needs activation kwta with a k_ratio")
            if any(not 0 < r <= 1 for r in inc.ratios):
                raise ConfigError(f"incremental.ratios: each ratio must be in (0, 1], got {inc.ratios}")
            if inc.epochs_per_ratio < 1:
                raise ConfigError(f"incremental.epochs_per_ratio: must be >= 1, got {inc.epochs_per_ratio}")
            if inc.lr is not None and not inc.lr > 0:
                raise ConfigError(f"incremental.lr: must be > 0, got {inc.lr}")
        if self.pruning is not None:
            if self.epochs < 1:
                raise ConfigError(f"epochs: pruned training needs epochs >= 1, got {self.epochs}")
            if inc.ratios:
                raise ConfigError("pruning: not combinable with incremental.ratios; prune the final-ratio model "
                                  "in a separate run")
            self.pruning.check_epochs(self.epochs)
        if self.threads is not None and self.threads < 0:
            raise ConfigError(f"threads: must be >= 1, or 0 for torch's default, got {self.threads}")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except RuntimeError:
                raise ConfigError(f"device: {self.device!r} is not a torch device; use auto, cpu, cuda or cuda:N") from None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        """Build from plain data (YAML); unknown keys and wrongly typed values raise :class:`ConfigError`."""
        return _from_mapping(cls, data, "")

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(read_yaml(path, "--config", empty_ok=True))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def resolved_device(self) -> torch.device:
        return resolve_device(self.device)


def _choice(name: str, value: str, options: Mapping[str, Any]) -> None:
    if value not in options:
        raise ConfigError(f"{name}: unknown value {value!r}; choose one of {', '.join(options)}")


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check/convert a YAML value against a field's type hint (numbers written ``1e-3`` or ``8/255`` included)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return parse_eps(value, where)
            except AttackConfigError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if origin is list or hint is list:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return [v if item is Any else _coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(hint):
        return _from_mapping(hint, value, f"{where}.")
    return value


def _from_mapping(cls: type, data: Any, prefix: str):
    if isinstance(data, str) and cls is ActivationConfig:
        data = {"name": data}  # `activation: relu`
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise ConfigError(f"config: unknown key {prefix + str(key)!r}; known keys: {', '.join(names)}")
    values = {key: _coerce(value, hints[key], f"{prefix}{key}") for key, value in data.items()}
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"config {prefix.rstrip('.') or ''}: {exc}") from None


# --- optimizers, schedules, augmentation ---------------------------------------------------------------------------


OPTIMIZERS: dict[str, Callable[[Any, TrainConfig, float], torch.optim.Optimizer]] = {
    "sgd": lambda params, cfg, lr: torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay),
    "adam": lambda params, cfg, lr: torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay),
    "adamw": lambda params, cfg, lr: torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay),
}

#: Learning-rate multiplier as a function of training progress ``p`` in [0, 1) (updated every step).
SCHEDULES: dict[str, Callable[[float, TrainConfig], float]] = {
    "constant": lambda p, cfg: 1.0,
    "cosine": lambda p, cfg: 0.5 * (1.0 + math.cos(math.pi * p)),
    "step": lambda p, cfg: cfg.gamma ** sum(p >= m for m in cfg.milestones),
}


def _translate(x: Tensor, gen: torch.Generator, pad: int, flip: bool) -> Tensor:
    """Random translation by up to ``pad`` pixels per axis (zero fill) and, if ``flip``, a random horizontal flip;
    independently per sample, batched: ``[N, C, H, W] → [N, C, H, W]``."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    out = padded[batch, channel, rows, cols]
    if flip:
        mirrored = (torch.rand(n, generator=gen) < 0.5).to(x.device)
        out = torch.where(mirrored[:, None, None, None], out.flip(3), out)
    return out


#: ``augment`` → ``(x, generator) -> x`` applied to every training batch (inputs stay in [0, 1]).
AUGMENTATIONS: dict[str, Callable[[Tensor, torch.Generator], Tensor]] = {
    "none": lambda x, gen: x,
    "shift": lambda x, gen: _translate(x, gen, pad=2, flip=False),  # digits: ±2 pixels
    "crop-flip": lambda x, gen: _translate(x, gen, pad=4, flip=True),  # CIFAR: 4-pixel pad-and-crop + flip
}


# --- training methods -------------------------------------------------------------------------------------------------


def pgd_perturb(
    model: nn.Module,
    x: Tensor,
    loss_fn: Callable[[Tensor], Tensor],
    threat: ThreatModel,
    steps: int,
    step_size: float,
    random_start: bool,
    generator: torch.Generator | None,
) -> Tensor:
    """Maximize ``loss_fn(model(x_adv)).sum()`` by projected gradient ascent (Madry et al. 2018) in eval mode.

    ``x``: ``[N, ...]`` in the threat's bounds; returns ``x_adv`` (detached, same shape) inside the threat model.
    L∞ steps follow the gradient sign, L2 steps the per-sample normalized gradient. Model parameters get no
    gradient; each module's train/eval flag is restored.
    """
    x = x.detach()
    if random_start:
        noise = torch.rand(x.shape, generator=generator, device=generator.device if generator else x.device)
        noise = (noise.to(x.device) * 2 - 1) * threat.eps
        if threat.norm == "l2":
            noise = noise / noise.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.ndim - 1))) * threat.eps
        x_adv = threat.project(x + noise, x)
    else:
        x_adv = x.clone()
    params = [(p, p.requires_grad) for p in model.parameters()]
    with eval_mode(model):
        try:
            for p, _ in params:
                p.requires_grad_(False)
            for _ in range(steps):
                x_adv.requires_grad_(True)
                loss = loss_fn(model(x_adv)).sum()
                (grad,) = torch.autograd.grad(loss, x_adv)
                with torch.no_grad():
                    if threat.norm == "linf":
                        step = grad.sign()
                    else:
                        step = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.ndim - 1)))
                    x_adv = threat.project(x_adv + step_size * step, x)
        finally:
            for p, flag in params:
                p.requires_grad_(flag)
    return x_adv.detach()


def _standard_step(model: nn.Module, x: Tensor, y: Tensor, cfg: TrainConfig, gen: torch.Generator | None) -> tuple[Tensor, Tensor]:
    logits = model(x)
    return F.cross_entropy(logits, y), logits


def _pgd_step(model: nn.Module, x: Tensor, y: Tensor, cfg: TrainConfig, gen: torch.Generator | None) -> tuple[Tensor, Tensor]:
    adv = cfg.adversarial
    x_adv = pgd_perturb(model, x, lambda z: F.cross_entropy(z, y, reduction="none"), adv.threat(), adv.steps,
                        adv.alpha(), adv.random_start, gen)
    logits = model(x_adv)
    return F.cross_entropy(logits, y), logits


def _trades_step(model: nn.Module, x: Tensor, y: Tensor, cfg: TrainConfig, gen: torch.Generator | None) -> tuple[Tensor, Tensor]:
    adv = cfg.adversarial
    with torch.no_grad(), eval_mode(model):
        clean_prob = F.softmax(model(x), dim=1)

    def kl(z: Tensor) -> Tensor:
        return F.kl_div(F.log_softmax(z, dim=1), clean_prob, reduction="none").sum(dim=1)

    x_adv = pgd_perturb(model, x, kl, adv.threat(), adv.steps, adv.alpha(), True, gen)
    logits = model(x)
    robust = F.kl_div(F.log_softmax(model(x_adv), dim=1), F.softmax(logits, dim=1), reduction="batchmean")
    return F.cross_entropy(logits, y) + adv.trades_beta * robust, logits


#: ``method`` → ``(model, x, y, cfg, generator) -> (loss, logits)`` for one training batch.
METHODS: dict[str, Callable[..., tuple[Tensor, Tensor]]] = {
    "standard": _standard_step,
    "pgd": _pgd_step,
    "trades": _trades_step,
}


# --- the loop -------------------------------------------------------------------------------------------------------


@dataclass
class EpochStats:
    epoch: int
    loss: float
    train_accuracy: float
    lr: float
    seconds: float


@dataclass
class TrainHistory:
    epochs: list[EpochStats] = field(default_factory=list)

    def to_list(self) -> list[dict]:
        return [dataclasses.asdict(e) for e in self.epochs]


def derive_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (``numpy.random.SeedSequence``): independent streams per stage/use."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps per epoch of :func:`train_model` on ``n`` samples (a final batch of one is dropped)."""
    return max(1, n // batch_size + (1 if n % batch_size > 1 else 0))


def train_model(
    model: nn.Module,
    train: TensorData,
    cfg: TrainConfig,
    device: torch.device | str,
    epoch_callback: Callable[[int, EpochStats, nn.Module], None] | None = None,
    after_step: Callable[[nn.Module, int], None] | None = None,
    stage: int = 0,
    schedule_epochs: tuple[int, int] | None = None,
) -> TrainHistory:
    """Train ``model`` (moved to ``device``) on ``train`` for ``cfg.epochs`` epochs with ``cfg``'s optimizer,
    schedule, method and augmentation.

    Batches: a fresh permutation per epoch from a generator seeded with ``derive_seed(cfg.seed, stage)`` (a
    final batch of one sample is dropped, BatchNorm cannot train on it). ``after_step(model, step)`` runs after
    every optimizer step (global step count from 1); ``epoch_callback(epoch, stats, model)`` after every epoch
    (returning ``True`` stops training after that epoch, e.g. an Early-Bird ticket search).
    ``schedule_epochs=(offset, total)`` runs this call's ``cfg.epochs`` epochs as epochs ``offset, offset+1, …`` of
    a ``total``-epoch learning-rate schedule (learning-rate rewinding, Renda et al. 2020); default ``(0, cfg.epochs)``.
    Every module's train/eval flag is restored at the end.
    """
    device = torch.device(device)
    model.to(device)
    n = len(train)
    per_epoch = steps_per_epoch(n, cfg.batch_size)
    offset_epochs, schedule_total = schedule_epochs if schedule_epochs is not None else (0, cfg.epochs)
    first_step = offset_epochs * per_epoch
    total_steps = max(1, schedule_total * per_epoch)
    optimizer = OPTIMIZERS[cfg.optimizer](model.parameters(), cfg, cfg.lr)
    schedule = SCHEDULES[cfg.schedule]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: schedule(min((first_step + step) / total_steps, 1.0), cfg))
    order_gen = torch.Generator().manual_seed(derive_seed(cfg.seed, stage, 0))
    attack_gen = torch.Generator(device=device).manual_seed(derive_seed(cfg.seed, stage, 1))
    method = METHODS[cfg.method]
    augment = AUGMENTATIONS[cfg.augment]
    flags = [(m, m.training) for m in model.modules()]
    history = TrainHistory()
    step = 0
    try:
        model.train()
        for epoch in range(cfg.epochs):
            start = time.perf_counter()
            perm = torch.randperm(n, generator=order_gen)
            batches = [b for b in perm.split(cfg.batch_size) if len(b) > 1 or n == 1]
            total_loss, correct, seen = 0.0, 0, 0
            lr = optimizer.param_groups[0]["lr"]
            for idx in tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=None):
                idx = idx.to(train.x.device)
                x = augment(train.x[idx].to(device), order_gen)
                y = train.y[idx].to(device)
                loss, logits = method(model, x, y, cfg, attack_gen)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                step += 1
                if after_step is not None:
                    after_step(model, step)
                total_loss += loss.item() * len(y)
                correct += int((logits.argmax(1) == y).sum().item())
                seen += len(y)
            stats = EpochStats(epoch + 1, total_loss / max(seen, 1), correct / max(seen, 1), lr, time.perf_counter() - start)
            history.epochs.append(stats)
            logger.info("epoch %d/%d: loss %.4f, train accuracy %.4f, lr %.2g (%.1fs)", stats.epoch, cfg.epochs,
                        stats.loss, stats.train_accuracy, stats.lr, stats.seconds)
            if epoch_callback is not None and epoch_callback(epoch + 1, stats, model) is True:
                break
    finally:
        for module, flag in flags:
            module.training = flag
    return history


def evaluate_accuracy(model: nn.Module, data: TensorData, batch_size: int = 500, device: torch.device | str | None = None) -> float:
    """Clean accuracy of ``model`` on ``data`` in eval mode (each module's mode restored), without gradients.

    ``device`` defaults to the device of the model's parameters; batches of ``data`` are moved there.
    """
    if device is None:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    if len(data) == 0:
        raise ConfigError(f"{data.name}: cannot evaluate accuracy on an empty data set")
    correct = 0
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(data), batch_size):
            x = data.x[start:start + batch_size].to(device)
            y = data.y[start:start + batch_size].to(device)
            correct += int((model(x).argmax(dim=1) == y).sum().item())
    return correct / len(data)


# --- a whole run ------------------------------------------------------------------------------------------------------


@dataclass
class StageResult:
    """One ratio of the incremental schedule (or the only stage of a plain run)."""

    ratio: float | None
    test_accuracy: float
    checkpoint: Path | None
    history: TrainHistory


@dataclass
class TrainResult:
    model: nn.Module
    spec: ModelSpec
    test_accuracy: float
    checkpoint: Path | None
    history: TrainHistory
    num_test: int
    stages: list[StageResult] = field(default_factory=list)
    sparsity: float | None = None  # measured weight sparsity of the pruned layers (pruned runs only)


def default_out(cfg: TrainConfig) -> Path:
    """``runs/<dataset>-<arch>-<activation>[-r<ratio>]-<method>[-<pruning method>-s<sparsity>]-seed<seed>.pt``
    (relative to the working folder)."""
    act = cfg.activation.name
    if act == "kwta":
        act += f"-r{cfg.activation.k_ratio:g}" if cfg.activation.k_ratio is not None else f"-k{cfg.activation.k}"
    prune = f"-{cfg.pruning.method}-s{cfg.pruning.sparsity:g}" if cfg.pruning is not None else ""
    return Path("runs") / f"{cfg.dataset}-{cfg.arch}-{act}-{cfg.method}{prune}-seed{cfg.seed}.pt"


def stage_path(out: Path, ratio: float) -> Path:
    """Checkpoint of one incremental stage: ``runs/x.pt`` → ``runs/x-r0.05.pt``."""
    return out.with_name(f"{out.stem}-r{ratio:g}{out.suffix or '.pt'}")


def build_spec(cfg: TrainConfig, train: TensorData) -> ModelSpec:
    """The model spec for ``cfg`` on data shaped like ``train`` (data set mean/std inside the model)."""
    info = dataset_info(cfg.dataset)
    c, h, w = train.input_shape
    if h != w:
        raise ConfigError(f"dataset {cfg.dataset!r}: non-square inputs {h}x{w} are not supported by the model zoo")
    return ModelSpec.from_args(
        cfg.arch, activation=cfg.activation.to_spec(), num_classes=info.num_classes, in_channels=c, input_size=h,
        mean=list(info.mean), std=list(info.std), **cfg.arch_kwargs,
    )


def _metadata(cfg: TrainConfig, train: TensorData, test: TensorData, acc: float, history: TrainHistory,
              seconds: float, stage: dict | None = None) -> dict:
    meta = {
        "dataset": cfg.dataset,
        "data_split_seed": cfg.split_seed,
        "num_train": len(train),
        "num_test": len(test),
        "test_accuracy": acc,
        "test_correct": round(acc * len(test)),
        "seed": cfg.seed,
        "method": cfg.method,
        "training": cfg.to_dict(),
        "history": history.to_list(),
        "train_seconds": seconds,
        "torch_threads": torch.get_num_threads(),  # CPU results are bit-reproducible for a fixed thread count
    }
    if stage is not None:
        meta["incremental_stage"] = stage
    return meta


def run_training(cfg: TrainConfig) -> TrainResult:
    """Load data, build the model, train, measure clean test accuracy and write checkpoint(s).

    Without ``incremental.ratios`` one checkpoint is written to ``cfg.out`` (default :func:`default_out`). With
    them, the model is first trained at ``activation.k_ratio`` for ``epochs`` epochs, then for each ratio of
    the schedule every kWTA layer is set to it (:func:`~kwta_robust.layers.set_kwta_ratio`) and fine-tuned for
    ``epochs_per_ratio`` epochs; every stage is saved to :func:`stage_path` and ``cfg.out`` holds the final one.
    ``cfg.threads`` sets torch's CPU thread count for the run (restored afterwards).
    """
    previous = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _run_training(cfg)
    finally:
        torch.set_num_threads(previous)


def _run_training(cfg: TrainConfig) -> TrainResult:
    """The body of :func:`run_training` (threads already set)."""
    device = cfg.resolved_device()
    out = Path(cfg.out) if cfg.out else default_out(cfg)
    train = load_dataset(cfg.dataset, "train", cfg.data_root, cfg.download, cfg.split_seed)
    test = load_dataset(cfg.dataset, "test", cfg.data_root, cfg.download, cfg.split_seed)
    spec = build_spec(cfg, train)
    logger.info("training %s (%s) on %s: %d train / %d test samples, device %s", cfg.arch, cfg.activation.name,
                cfg.dataset, len(train), len(test), device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)
        model = build_model(spec, "model").to(device)
        probe_model(model, train.x[:2].to(device), train.num_classes, "model", data_name=cfg.dataset)
        start = time.perf_counter()
        pruning_meta = None
        if cfg.pruning is not None:
            from kwta_robust.sparsity.training import train_with_pruning  # lazy: it imports this module

            history, outcome, segments = train_with_pruning(model, train, cfg, device)
            pruning_meta = dict(outcome.metadata(), segments=[dataclasses.asdict(s) for s in segments])
        else:
            history = train_model(model, train, cfg, device)
        acc = evaluate_accuracy(model, test, cfg.eval_batch_size, device)
        seconds = time.perf_counter() - start
        logger.info("test accuracy %.4f after %d epochs (%.1fs)", acc, cfg.epochs, seconds)
        stages: list[StageResult] = []
        if not cfg.incremental.ratios:
            meta = _metadata(cfg, train, test, acc, history, seconds)
            if pruning_meta is not None:
                meta["pruning"] = pruning_meta
            save_checkpoint(out, model, spec, meta)
            return TrainResult(model, spec, acc, out, history, len(test), [StageResult(cfg.activation.k_ratio, acc, out, history)],
                               None if pruning_meta is None else pruning_meta["measured_sparsity"])
        first = stage_path(out, float(cfg.activation.k_ratio))  # type: ignore[arg-type]
        save_checkpoint(first, model, spec, _metadata(cfg, train, test, acc, history, seconds,
                                                      {"index": 0, "ratio": cfg.activation.k_ratio}))
        stages.append(StageResult(cfg.activation.k_ratio, acc, first, history))
        inc = cfg.incremental
        stage_cfg = dataclasses.replace(cfg, epochs=inc.epochs_per_ratio, lr=inc.lr if inc.lr is not None else cfg.lr)
        total_seconds = seconds
        for i, ratio in enumerate(inc.ratios, start=1):
            set_kwta_ratio(model, ratio)
            spec = spec.with_activation(dataclasses.replace(spec.activation, ratio=ratio, k=None))
            start = time.perf_counter()
            hist = train_model(model, train, stage_cfg, device, stage=i)
            acc = evaluate_accuracy(model, test, cfg.eval_batch_size, device)
            seconds = time.perf_counter() - start
            logger.info("incremental stage %d: ratio %g, test accuracy %.4f (%.1fs)", i, ratio, acc, seconds)
            path = stage_path(out, ratio)
            save_checkpoint(path, model, spec, _metadata(cfg, train, test, acc, hist, seconds,
                                                         {"index": i, "ratio": ratio}))
            stages.append(StageResult(ratio, acc, path, hist))
            history.epochs.extend(hist.epochs)
            total_seconds += seconds
        save_checkpoint(out, model, spec, _metadata(cfg, train, test, acc, history, total_seconds,
                                                    {"index": len(inc.ratios), "ratio": inc.ratios[-1]}))
        return TrainResult(model, spec, acc, out, history, len(test), stages)
