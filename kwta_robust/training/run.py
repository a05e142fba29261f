"""A whole training run: data, model, training (plain, adversarial, pruned), clean test accuracy and the
checkpoint(s) — and Xiao et al.'s incremental kWTA sparsity fine-tuning (ICLR 2020, Sec. 4: train at a larger
ratio, then lower it step by step, fine-tuning after each step; one checkpoint per stage).

Determinism: the model is initialized under ``torch.manual_seed(seed)`` inside ``torch.random.fork_rng`` (the
caller's global RNG is untouched); batch order, augmentation and PGD random starts come from explicit
``torch.Generator`` s derived from ``(seed, stage)``. On CPU the same seed and thread count (``threads``, recorded
in the checkpoint as ``torch_threads``) give bit-identical weights; another thread count changes the summation
order inside convolutions and hence the last bits (and, after training, the accuracy by a few tenths of a point).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from kwta_robust.checkpoint import save_checkpoint
from kwta_robust.data import TensorData, dataset_info, load_dataset
from kwta_robust.data_root import check_data_root_used
from kwta_robust.errors import ConfigError, KwtaRobustError
from kwta_robust.layers import set_kwta_ratio
from kwta_robust.model_checks import TRAIN_DATA_ADVICE, build_model, check_buildable, probe_model
from kwta_robust.models import ModelSpec
from kwta_robust.training.config import TrainConfig
from kwta_robust.training.data_file import (TestSplit, channel_stats, encode_test_split, load_file_splits,
                                            test_split_path)
from kwta_robust.training.loop import KEPT_INVARIANTS, TrainHistory, evaluate_accuracy, train_model
from kwta_robust.training.pruning import train_with_pruning

logger = logging.getLogger(__name__)


@dataclass
class StageResult:
    """One ratio of the incremental schedule (or the only stage of a plain run)."""

    ratio: float | None
    test_accuracy: float
    checkpoint: Path | None
    history: TrainHistory


@dataclass
class TrainResult:
    """A finished training run: the model, its spec, test accuracy, checkpoint path and history."""
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
    (relative to the working folder; a data file's ``<dataset>`` is its name without the extension)."""
    act = cfg.activation.name
    if act == "kwta":
        act += f"-r{cfg.activation.k_ratio:g}" if cfg.activation.k_ratio is not None else f"-k{cfg.activation.k}"
    prune = f"-{cfg.pruning.method}-s{cfg.pruning.sparsity:g}" if cfg.pruning is not None else ""
    name = Path(cfg.dataset_name).stem if cfg.data_file is not None else cfg.dataset_name
    return Path("runs") / f"{name}-{cfg.arch}-{act}-{cfg.method}{prune}-seed{cfg.seed}.pt"


def require_finite(model: nn.Module, history: TrainHistory) -> None:
    """A trained model with a NaN or infinite parameter or buffer is not saved: training diverged."""
    bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not bool(t.isfinite().all())]
    if bad:
        last = history.epochs[-1].loss if history.epochs else float("nan")
        raise KwtaRobustError(f"training diverged: {len(bad)} tensors hold NaN or inf (first {bad[0]!r}; last epoch's "
                              f"loss {last:.4g}); nothing was saved: lower lr (or weight_decay, "
                              "adversarial.trades_beta)")


def stage_path(out: Path, ratio: float) -> Path:
    """Checkpoint of one incremental stage: ``runs/x.pt`` → ``runs/x-r0.05.pt``."""
    return out.with_name(f"{out.stem}-r{ratio:g}{out.suffix or '.pt'}")


def build_spec(cfg: TrainConfig, train: TensorData) -> ModelSpec:
    """The model spec for ``cfg`` on data shaped like ``train`` (data set mean/std inside the model; a data file's:
    its number of classes and the training split's per-channel mean/std)."""
    c, h, w = train.input_shape
    if h != w:
        raise ConfigError(f"dataset {cfg.dataset_name!r}: non-square inputs {h}x{w} are not supported by the model "
                          "zoo")
    if cfg.data_file is not None:
        mean, std = channel_stats(train.x)
        return _spec(cfg, c, h, (train.num_classes, mean, std))
    return _spec(cfg, c, h)


def _spec(cfg: TrainConfig, channels: int, size: int,
          stats: tuple[int, list[float], list[float]] | None = None) -> ModelSpec:
    """The model spec for ``cfg`` on ``[channels, size, size]`` inputs (unknown arch or arguments: ConfigError);
    ``stats``: ``(num_classes, mean, std)`` of a data file, else the registered data set's."""
    if stats is None:
        info = dataset_info(cfg.dataset_name)
        stats = (info.num_classes, list(info.mean), list(info.std))
    num_classes, mean, std = stats
    return ModelSpec.from_args(
        cfg.arch, activation=cfg.activation.to_spec(), num_classes=num_classes, in_channels=channels,
        input_size=size, mean=mean, std=std, **cfg.arch_kwargs,
    )


def check_spec(cfg: TrainConfig, where: str | None = None) -> None:
    """The architecture of ``cfg`` and its arguments are valid, checked from the registered data set's shape
    before any data is loaded or weights allocated (the model is built on ``meta``); one :class:`ConfigError`
    line otherwise, prefixed by ``where`` if given (construction errors are named ``where``, default ``model``).
    A data file's shape is known once it is read: its spec is checked by building the model then."""
    if cfg.data_file is not None:
        return
    c, h, _ = dataset_info(cfg.dataset_name).input_shape
    try:
        spec = _spec(cfg, c, h)
    except ConfigError as exc:
        if where is None:
            raise
        raise ConfigError(f"{where}: {exc}") from None
    check_buildable(spec, where or "model")


def _metadata(cfg: TrainConfig, train: TensorData, test: TensorData, acc: float, history: TrainHistory,
              seconds: float, stage: dict | None = None) -> dict:
    meta = {
        "dataset": cfg.dataset_name,
        "data_split_seed": cfg.split_seed,
        "num_train": len(train),
        "num_test": len(test),
        "test_accuracy": acc,
        "test_correct": round(acc * len(test)),
        "seed": cfg.seed,
        "method": cfg.method,
        "training": cfg.to_dict(),
        "training_invariants": list(KEPT_INVARIANTS),
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
    held_out: dict[str, dict[str, str]] = {}  # a data file's test split, written as a file of its own
    split: TestSplit | None = None  # written with the first checkpoint (_write_split): none after a failed run
    if cfg.data_file is not None:  # read first: the file gives the model's input shape and classes
        cfg, train, test = load_file_splits(cfg)  # cfg pins the file's sha256 (the checkpoint's training.dataset)
        split = encode_test_split(test, test_split_path(out))
        held_out["test_split_file"] = split.meta
    else:
        check_spec(cfg)  # a mistyped arch or --arch-arg fails before the data set is read
        check_data_root_used(cfg.dataset, cfg.data_root, dataset_where="dataset:", verb="train on")
        train = load_dataset(cfg.dataset, "train", cfg.data_root, cfg.download, cfg.split_seed)
        test = load_dataset(cfg.dataset, "test", cfg.data_root, cfg.download, cfg.split_seed)
    spec = build_spec(cfg, train)
    logger.info("training %s (%s) on %s: %d train / %d test samples, device %s", cfg.arch, cfg.activation.name,
                cfg.dataset_name, len(train), len(test), device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)
        model = build_model(spec, "model").to(device)
        probe_model(model, train.x[:2].to(device), train.num_classes, "model", data_name=cfg.dataset_name,
                    data_advice=TRAIN_DATA_ADVICE)
        start = time.perf_counter()
        pruning_meta = None
        if cfg.pruning is not None:
            history, outcome, segments = train_with_pruning(model, train, cfg, device)
            pruning_meta = dict(outcome.metadata(), segments=[dataclasses.asdict(s) for s in segments])
        else:
            history = train_model(model, train, cfg, device)
        acc = evaluate_accuracy(model, test, cfg.eval_batch_size, device)
        seconds = time.perf_counter() - start
        logger.info("test accuracy %.4f after %d epochs (%.1fs)", acc, cfg.epochs, seconds)
        stages: list[StageResult] = []
        if not cfg.incremental.ratios:
            meta = {**_metadata(cfg, train, test, acc, history, seconds), **held_out}
            if pruning_meta is not None:
                meta["pruning"] = pruning_meta
            require_finite(model, history)
            save_checkpoint(out, model, spec, meta)
            _write_split(split)
            return TrainResult(model, spec, acc, out, history, len(test),
                               [StageResult(cfg.activation.k_ratio, acc, out, history)],
                               None if pruning_meta is None else pruning_meta["measured_sparsity"])
        first = stage_path(out, float(cfg.activation.k_ratio))  # type: ignore[arg-type]
        require_finite(model, history)
        save_checkpoint(first, model, spec, {**_metadata(cfg, train, test, acc, history, seconds,
                                                         {"index": 0, "ratio": cfg.activation.k_ratio}), **held_out})
        _write_split(split)  # the first stage's checkpoint names it
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
            require_finite(model, hist)
            save_checkpoint(path, model, spec, {**_metadata(cfg, train, test, acc, hist, seconds,
                                                            {"index": i, "ratio": ratio}), **held_out})
            stages.append(StageResult(ratio, acc, path, hist))
            history.epochs.extend(hist.epochs)
            total_seconds += seconds
        last = {"index": len(inc.ratios), "ratio": inc.ratios[-1]}
        meta = {**_metadata(cfg, train, test, acc, history, total_seconds, last), **held_out}
        save_checkpoint(out, model, spec, meta)
        return TrainResult(model, spec, acc, out, history, len(test), stages)


def _write_split(split: TestSplit | None) -> None:
    """The test split of a data file (if any), written once the first checkpoint naming it is: a training that
    fails or is interrupted before leaves neither (the split had been written before training began)."""
    if split is not None:
        split.write()
