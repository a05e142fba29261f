"""``kwta-robust train``: train a model from a YAML config (``--config eval_configs/X.yaml``) and/or flags.

Flags override the config's keys (each flag names its key in ``--help``). Writes the checkpoint(s) and prints the
final clean test accuracy on stdout; progress and details go to logging (stderr). Example::

    kwta-robust train --dataset mnist5k --arch cnn --activation kwta --k-ratio 0.1 --seed 0 --out runs/cnn-kwta.pt
    kwta-robust train --dataset mnist5k --arch cnn --prune magnitude --sparsity 0.8 --out runs/cnn-mag80.pt
    kwta-robust train --data mydata.npz --test-fraction 0.2 --split-seed 0 --arch cnn --out runs/my-kwta.pt
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable

import yaml

from kwta_robust.commands.common import flags_named
from kwta_robust.data_root import check_data_root_used
from kwta_robust.commands.console import output_only_stdout
from kwta_robust.configio import load_yaml_text, read_yaml
from kwta_robust.data import available_datasets
from kwta_robust.datafile import DataFileSpec, resolve_relative
from kwta_robust.errors import ConfigError
from kwta_robust.locks import OutputLock
from kwta_robust.models import available_models
from kwta_robust.runtime import THREADS_HELP
from kwta_robust.safe_paths import check_distinct, check_not_overwriting, check_output_file
from kwta_robust.sparsity import available_pruning_methods
from kwta_robust.training import TrainConfig, default_out, run_training, stage_path
from kwta_robust.training.config import AUGMENTATION_NAMES, METHOD_NAMES, OPTIMIZER_NAMES, SCHEDULE_NAMES
from kwta_robust.training.data_file import check_test_split_path

logger = logging.getLogger(__name__)


def _floats(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _names(names: list[str] | tuple[str, ...]) -> str:
    return ", ".join(names)


#: ``(flag, config key (dotted), argparse kwargs)``; a flag left out keeps the config's (or the default) value.
#: The names in the help texts come from the registries and the config's choices.
FLAGS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("--dataset", "dataset", {"help": f"data set: {_names(available_datasets())}"}),
    ("--data-root", "data_root", {"help": "folder holding the torchvision data sets"}),
    ("--download", "download", {"action": "store_const", "const": True, "help": "let torchvision download the data"}),
    ("--split-seed", "split_seed", {"type": int, "help": "split seed of mnist5k/digits (0 = canonical split) "
                                                         "or of a --data file"}),
    ("--test-fraction", "test_fraction", {"type": float, "help": "share of a --data file's samples held out as the "
                                                                 "test split (default 0.2)"}),
    ("--arch", "arch", {"help": f"architecture: {_names(available_models())}"}),
    ("--activation", "activation.name", {"choices": ["relu", "kwta"], "help": "activation of every layer"}),
    ("--k-ratio", "activation.k_ratio", {"type": float, "help": "kWTA ratio k/N in (0, 1] (with --activation kwta)"}),
    ("--k", "activation.k", {"type": int, "help": "absolute kWTA k instead of a ratio"}),
    ("--kwta-mode", "activation.mode", {"choices": ["volume", "channel", "local"],
                                        "help": "kWTA competition in conv layers (default volume, Xiao et al.)"}),
    ("--boost-strength", "activation.boost_strength", {"type": float, "help": "Numenta boosting strength (0 = off)"}),
    ("--k-inference-factor", "activation.k_inference_factor", {"type": float, "help": "k multiplier in eval mode"}),
    ("--optimizer", "optimizer", {"help": f"optimizer: {_names(OPTIMIZER_NAMES)}"}),
    ("--lr", "lr", {"type": float, "help": "learning rate"}),
    ("--momentum", "momentum", {"type": float, "help": "SGD momentum"}),
    ("--weight-decay", "weight_decay", {"type": float, "help": "weight decay"}),
    ("--schedule", "schedule", {"help": f"learning-rate schedule: {_names(SCHEDULE_NAMES)}"}),
    ("--epochs", "epochs", {"type": int, "help": "training epochs"}),
    ("--batch-size", "batch_size", {"type": int, "help": "training batch size"}),
    ("--augment", "augment", {"help": f"augmentation: {_names(AUGMENTATION_NAMES)} (shift: ±2 px, digits; "
                                     "crop-flip: CIFAR-style)"}),
    ("--seed", "seed", {"type": int, "help": "seed of initialization, batch order and PGD starts"}),
    ("--device", "device", {"help": "auto, cpu, cuda or cuda:N"}),
    ("--threads", "threads", {"type": int, "help": THREADS_HELP}),
    ("--method", "method", {"help": f"training method: {_names(METHOD_NAMES)} (pgd: Madry et al.; trades: Zhang "
                                   "et al.)"}),
    ("--norm", "adversarial.norm", {"help": "threat model of pgd/trades training: linf or l2"}),
    ("--eps", "adversarial.eps", {"help": "training epsilon, e.g. 0.3 or 8/255"}),
    ("--pgd-steps", "adversarial.steps", {"type": int, "help": "PGD steps per training batch"}),
    ("--pgd-step-size", "adversarial.step_size", {"help": "PGD step size (default 2.5*eps/steps)"}),
    ("--trades-beta", "adversarial.trades_beta", {"type": float, "help": "TRADES robustness weight"}),
    ("--incremental-ratios", "incremental.ratios", {"type": _floats, "metavar": "R1,R2,...",
                                                    "help": "Xiao et al.'s schedule: lower the kWTA ratio to each"}),
    ("--epochs-per-ratio", "incremental.epochs_per_ratio", {"type": int, "help": "fine-tuning epochs per ratio"}),
    ("--incremental-lr", "incremental.lr", {"type": float, "help": "fine-tuning learning rate (default --lr)"}),
    ("--prune", "pruning.method", {"metavar": "METHOD", "help": "weight pruning: "
                                                                f"{_names(available_pruning_methods())} "
                                   "(kwta_robust.sparsity)"}),
    ("--sparsity", "pruning.sparsity", {"type": float, "help": "target weight sparsity in [0, 1) for --prune"}),
    ("--prune-scope", "pruning.scope", {"help": "layerwise or global (default: the method's)"}),
    ("--prune-rounds", "pruning.rounds", {"type": int, "help": "iterative pruning rounds (magnitude methods)"}),
    ("--prune-retrain", "pruning.retrain", {"help": "finetune, rewind-weights (lottery ticket) or rewind-lr"}),
    ("--rewind-epoch", "pruning.rewind_epoch", {"type": int, "help": "rewind point k in epochs (0 = init)"}),
    ("--finetune-lr", "pruning.finetune_lr", {"type": float, "help": "constant LR of --prune-retrain finetune "
                                              "(default: the schedule's last LR, at least lr/10)"}),
    ("--out", "out", {"help": "checkpoint path (default runs/<dataset>-<arch>-<activation>[-r<k_ratio>|-k<k>]-<method>"
                              "[-<prune method>-s<sparsity>]-seed<seed>.pt)"}),
)


#: The flag of each config key of :data:`FLAGS`: a config error in a key's value names the flag where the flag gave it
#: (``--optimizer foo``, ``--k-ratio 2``, ``--device cuda`` without CUDA), as ``evaluate``'s overrides do
#: (:func:`~kwta_robust.commands.common.flags_named`); a value of ``--config`` keeps its key (read-only).
TRAIN_FLAGS = MappingProxyType({key: flag for flag, key, _ in FLAGS})


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``train`` command's options (every training config key as a flag)."""
    parser.add_argument("--config",
                        help="YAML training config (e.g. eval_configs/train_cnn_kwta.yaml); flags override its keys")
    parser.add_argument("--data", metavar="FILE",
                        help="train on a .pt or .npz file of images x [N, C, H, W] and labels y [N] (evaluate's "
                             "--data format) instead of --dataset; split by --test-fraction and --split-seed "
                             "[dataset: {file: FILE}]")
    parser.add_argument("--arch-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="architecture argument (YAML value), e.g. --arch-arg channels=[32,64]; repeatable")
    defaults = TrainConfig().to_dict()  # what a key left out of --config and the flags takes
    for flag, key, kwargs in FLAGS:
        extra = dict(kwargs)
        value: Any = defaults
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        hidden = value is None or value is False or value == "" or "default" in extra.get("help", "")
        shown = "" if hidden else f"; default {value}"
        extra["help"] = f"{extra.get('help', '')} [{key}{shown}]"
        parser.add_argument(flag, dest=_dest(flag), default=None, **extra)


def _set(data: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        child = node.get(part)
        if isinstance(child, str) and part == "activation":
            child = {"name": child}
        if child is None:
            child = {}
        if not isinstance(child, dict):
            raise ConfigError(f"config: {part!r} must be a mapping to set {dotted!r} from a flag")
        node[part] = child
        node = child
    node[last] = value


def config_from_args(args: argparse.Namespace, apply: Callable[[dict], None] | None = None) -> TrainConfig:
    """The :class:`TrainConfig` of ``--config`` with the given flags applied (``apply`` may edit the dict too)."""
    data = read_yaml(args.config, "--config", empty_ok=True) if args.config else {}
    if args.config and isinstance(data, dict):  # a relative dataset: {file: ...} is taken from the YAML's folder
        data = resolve_relative(data, Path(args.config).resolve().parent)
    if getattr(args, "data", None) is not None:
        if args.dataset is not None:
            raise ConfigError("--data and --dataset: give one (--data FILE trains on the file's images)")
        data["dataset"] = DataFileSpec.from_dict({"file": args.data}).resolved(None).to_dict()
    for flag, key, _ in FLAGS:
        value = getattr(args, _dest(flag), None)
        if value is not None:
            _set(data, key, value)
    for item in args.arch_arg:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--arch-arg: expected KEY=VALUE, got {item!r}")
        try:
            value = load_yaml_text(text)
        except yaml.YAMLError:
            raise ConfigError(f"--arch-arg {name}: cannot parse {text!r} as a YAML value") from None
        _set(data, f"arch_kwargs.{name}", value)
    if apply is not None:
        apply(data)
    cfg = TrainConfig.from_dict(data)
    check_kwta_settings(cfg, args)
    return cfg


#: The settings of the kWTA activation alone (``activation.*`` but its name): a ReLU model has none of them.
KWTA_KEYS: tuple[str, ...] = tuple(key for _, key, _ in FLAGS if key.startswith("activation.") and
                                   key != "activation.name")


def check_kwta_settings(cfg: TrainConfig, args: argparse.Namespace) -> None:
    """A kWTA setting (``--k-ratio 0.1``) with the ReLU activation (the default) is refused where a flag gave it:
    the model would train as ReLU, its user believing it kWTA (``--activation kwta`` forgotten). One from the config
    file (``activation: {name: relu, k_ratio: 0.1}``) is warned of and ignored, as before: a config may keep its
    ratio while its activation is switched to relu."""
    if cfg.activation.name != "relu":
        return
    given = [flag for flag, key, _ in FLAGS if key in KWTA_KEYS and getattr(args, _dest(flag), None) is not None]
    if given:
        what = "a kWTA setting" if len(given) == 1 else "kWTA settings"
        raise ConfigError(f"{', '.join(given)}: {what}, but the activation is relu, which has none: the model would "
                          "train as ReLU; add --activation kwta")
    unused = [key for key in KWTA_KEYS if _value(cfg, key) != _value(TrainConfig(), key)]
    if unused:
        logger.warning("%s: ignored, the activation is relu (the model trains as ReLU); set activation: kwta (or "
                       "--activation kwta) for a kWTA model", ", ".join(unused))


def _value(cfg: TrainConfig, dotted: str) -> Any:
    value: Any = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def run(args: argparse.Namespace) -> int:
    """Train one model and write its checkpoint; returns the exit status. A config error of a key of
    :data:`TRAIN_FLAGS` that a flag gave names the flag."""
    with flags_named(args, TRAIN_FLAGS):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """:func:`run` inside its flag naming."""
    cfg = config_from_args(args)
    if args.data_root is not None:  # the flag named before any work; a config file's key: run_training (misc53)
        check_data_root_used(cfg.dataset, cfg.data_root, "--data-root", dataset_where="--dataset", verb="train on")
    out = check_output_file(cfg.out if cfg.out is not None else default_out(cfg), "--out")
    check_distinct({"--out": out}, {"--config": args.config})
    check_not_overwriting(out, "checkpoint", "--out", only_own=True)
    for ratio in cfg.stage_ratios():
        check_not_overwriting(stage_path(out, ratio), "checkpoint", "--out (its incremental stage)", only_own=True)
    if cfg.data_file is not None:  # its test split goes beside the checkpoint: OUT.test.npz (m.pt.test.npz)
        check_test_split_path(out, cfg.data_file.file)
    with OutputLock(out, "--out"):  # a second run training into the same file fails at once
        with output_only_stdout():  # an architecture plug-in printing leaves the lines below as they are
            result = run_training(cfg)
    if len(result.stages) > 1:
        for stage in result.stages:
            print(f"kwta ratio {stage.ratio:g}: test accuracy {stage.test_accuracy:.4f} -> {stage.checkpoint}")
    print(f"test accuracy {result.test_accuracy:.4f} ({result.num_test} {cfg.dataset_name} test samples) -> "
          f"{result.checkpoint}")
    if cfg.pruning is not None:
        print(f"weight sparsity {result.sparsity:.4f} measured (target {cfg.pruning.sparsity:g}, {cfg.pruning.method})")
    return 0
