"""``kwta-robust quickstart``: the README's first command.

On the bundled ``mnist5k`` data it trains (or reuses, when the checkpoint exists and was trained with the same
settings) the small kWTA CNN (ratio 0.1, volume mode; Xiao et al., ICLR 2020) and its ReLU twin, evaluates both
with ``eval_configs/quickstart.yaml`` — plain PGD, BPDA with the smooth surrogate and the gradient-estimation
attack of Tramèr et al. (NeurIPS 2020) in cascade, transfer attacks between the two models, and Numenta's noise
probe — and prints the side-by-side table with the masking flags. Everything lands in ``--out-dir``
(checkpoints, one JSON record per model, ``quickstart.md`` with the wide table, ``quickstart.html`` with the
report); re-running reuses finished work.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from kwta_robust.config import EvalConfig, load_config, resolve_device
from kwta_robust.errors import ConfigError
from kwta_robust.formats import FORMATS, format_help
from kwta_robust.locks import OutputLock
from kwta_robust.results import atomic_write_text
from kwta_robust.safe_paths import check_output_dir

logger = logging.getLogger(__name__)

#: Training epochs of both models: about 95–96 % clean mnist5k test accuracy (train.py defaults otherwise), keeping the
#: whole quickstart (training included) within a few minutes on 2 CPU cores.
DEFAULT_EPOCHS = 3
KWTA_RATIO = 0.1
TRAINING_DATASET = "mnist5k"
TRAINING_KEYS_IGNORED = ("out", "device")  # do not change the trained weights' meaning
TITLE = "quickstart: kWTA CNN vs ReLU twin on mnist5k"


def default_config_path() -> Path:
    """``eval_configs/quickstart.yaml`` of this source tree."""
    return Path(__file__).resolve().parents[2] / "eval_configs" / "quickstart.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out-dir", default="runs/quickstart", metavar="DIR", help="checkpoints, records, table")
    parser.add_argument("--device", default=None, metavar="D", help="auto (default), cpu, cuda, cuda:1")
    parser.add_argument("--n-examples", type=int, default=None, metavar="N", help="override the suite's 200 examples")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, metavar="E", help="training epochs per model")
    parser.add_argument("--config", default=None, metavar="YAML", help="evaluation suite (default eval_configs/quickstart.yaml)")
    parser.add_argument("--retrain", action="store_true", help="train again even if matching checkpoints exist")
    parser.add_argument("--format", default="md", choices=FORMATS.names(), help=format_help("table on stdout: "))
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def training_configs(out_dir: Path, epochs: int, device: str) -> dict[str, Any]:
    """The two training runs: the kWTA CNN (ratio 0.1, volume) and its ReLU twin, same seed and recipe."""
    from kwta_robust.train import ActivationConfig, TrainConfig

    common = dict(dataset=TRAINING_DATASET, arch="cnn", epochs=epochs, seed=0, device=device)
    return {
        "kwta": TrainConfig(activation=ActivationConfig(name="kwta", k_ratio=KWTA_RATIO, mode="volume"),
                            out=str(out_dir / "kwta-cnn.pt"), **common),
        "relu": TrainConfig(activation=ActivationConfig(name="relu"), out=str(out_dir / "relu-cnn.pt"), **common),
    }


def _comparable(training: dict) -> dict:
    return {k: v for k, v in training.items() if k not in TRAINING_KEYS_IGNORED}


def ensure_trained(cfg: Any, retrain: bool = False) -> tuple[Path, bool]:
    """Train ``cfg`` unless its checkpoint exists with the same training settings; returns (path, trained now)."""
    from kwta_robust.checkpoint import load_checkpoint
    from kwta_robust.errors import CheckpointError
    from kwta_robust.train import run_training

    path = Path(cfg.out)
    if path.is_file() and not retrain:
        try:
            stored = load_checkpoint(path).metadata.get("training")
        except CheckpointError as exc:
            logger.warning("retraining: cannot reuse %s (%s)", path, exc)
            stored = None
        if isinstance(stored, dict) and _comparable(stored) == _comparable(cfg.to_dict()):
            logger.info("reusing %s (trained with the same settings)", path)
            return path, False
        if stored is not None:
            logger.info("retraining %s: its training settings differ", path)
    result = run_training(cfg)
    logger.info("trained %s: test accuracy %.2f%%", path, 100 * result.test_accuracy)
    return Path(result.checkpoint), True


def check_before_training(cfg: EvalConfig) -> None:
    """What would otherwise fail only after both models are trained: the suite must evaluate the data set they
    are trained on, and its ``n_examples`` must fit in that test split."""
    from kwta_robust.commands.evaluate import load_eval_data
    from kwta_robust.evaluate import select_samples

    if cfg.dataset != TRAINING_DATASET:
        raise ConfigError(f"--config: dataset {cfg.dataset!r}, but quickstart trains its models on "
                          f"{TRAINING_DATASET}; use a suite with dataset: {TRAINING_DATASET}")
    select_samples(load_eval_data(cfg), cfg)


def headline(records: list) -> list[str]:
    """One line per model: the first (plain) attack vs the worst case where they differ most, and the verdict."""
    lines = []
    for rec in records:
        pairs = []
        for norm, eps in rec.threat_points():
            at, worst = rec.results_at(norm, eps), rec.worst(norm, eps)
            if at and worst is not None:
                pairs.append((at[0].robust.accuracy - worst.robust.accuracy, eps, at[0], worst))
        if not pairs:
            continue
        _, _, first, worst = max(pairs, key=lambda p: (p[0], p[1]))
        critical = sorted({f.code for f in rec.diagnostics if f.severity == "critical"})
        verdict = f"flags: {', '.join(critical)}" if critical else "no masking flags"
        lines.append(f"{rec.label}: {first.label} {100 * first.robust.accuracy:.1f}% vs worst case "
                     f"{100 * worst.robust.accuracy:.1f}% at {first.norm} {first.eps_text} — {verdict}")
    return lines


def run(args: argparse.Namespace) -> int:
    from kwta_robust.commands.console import progress_bars
    from kwta_robust.commands.compare import compare_models
    from kwta_robust.commands.evaluate import command_line, load_model
    from kwta_robust.html_report import write_report
    from kwta_robust.formats import render_stdout, render_table
    from kwta_robust.report import compare_table

    if args.epochs < 1:
        raise ConfigError(f"--epochs: must be >= 1, got {args.epochs}")
    config_path = Path(args.config) if args.config else default_config_path()
    if not config_path.is_file():
        raise ConfigError(f"--config: {config_path} not found; pass --config eval_configs/quickstart.yaml from a clone")
    cfg: EvalConfig = load_config(config_path, n_examples=args.n_examples, device=args.device)
    out_dir = check_output_dir(args.out_dir, "--out-dir")
    check_before_training(cfg)
    device = resolve_device(cfg.device)
    configs = training_configs(out_dir, args.epochs, args.device or "auto")
    with OutputLock(out_dir / "quickstart.md", "--out-dir"):  # one quickstart per folder at a time
        trained_any = False
        models = []
        for label, train_cfg in configs.items():
            path, trained = ensure_trained(train_cfg, retrain=args.retrain)
            trained_any |= trained
            models.append(load_model(str(path), device, label=label))
        records = compare_models(models, cfg, out_dir / "eval", transfer=True, resume=not trained_any,
                                 command=command_line(args), progress=progress_bars(args.no_progress))
        table = compare_table(records, title=TITLE)
        table.notes[:0] = headline(records)
        atomic_write_text(out_dir / "quickstart.md", render_table(table, "wide"))
        write_report(out_dir / "quickstart.html", records, title=TITLE)
    sys.stdout.write(render_stdout(records, args.format, title=TITLE, extra_notes=headline(records)))
    logger.info("checkpoints, records, quickstart.md and quickstart.html are in %s", out_dir)
    return 0

