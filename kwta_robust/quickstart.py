"""The quickstart (the library behind the README's first command, ``kwta-robust quickstart``).

On the bundled ``mnist5k`` data it trains (or reuses, when the checkpoint exists and was trained with the same
settings) the small kWTA CNN (ratio 0.1, volume mode; Xiao et al., ICLR 2020) and its ReLU twin, evaluates both
with ``eval_configs/quickstart.yaml`` — plain PGD, then BPDA with the smooth surrogate around APGD-CE (Athalye
et al., ICML 2018; Tramèr et al., NeurIPS 2020) in cascade, transfer attacks between the two models, and Numenta's
noise probe — and writes, into ``out_dir``, the checkpoints, one JSON record per model (``eval/``), ``quickstart.md``
with the wide table and ``quickstart.html`` with the report; :func:`headline` says per model how far the plain
attack overestimates robustness. Re-running reuses finished work; a record of another suite (an earlier
quickstart's, before its config or the package's defaults changed, or of a checkpoint replaced since) is moved to
``eval/superseded/`` and the model evaluated afresh (:data:`STALE_RECORDS`, :mod:`kwta_robust.resume`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from attacks.base import threat_text
from kwta_robust.budget_check import CODE as BUDGET_STILL_LOWERING
from kwta_robust.checkpoint import load_checkpoint
from kwta_robust.compare import compare_models, write_comparison
from kwta_robust.config import EvalConfig, resolve_device
from kwta_robust.errors import CheckpointError, ConfigError
from kwta_robust.loading import load_eval_data, load_model
from kwta_robust.locks import OutputLock
from kwta_robust.numbers import lower_bound_percent_text, percent_text
from kwta_robust.results import EvalRecord
from kwta_robust.resume import StalePolicy
from kwta_robust.samples import select_samples
from kwta_robust.training import ActivationConfig, TrainConfig, run_training

logger = logging.getLogger(__name__)

#: Training epochs of both models: about 94–95 % clean mnist5k test accuracy (94.2 % kWTA, 95.4 % ReLU; train.py
#: defaults otherwise), keeping the whole quickstart (training included) within a few minutes on 2 CPU cores.
DEFAULT_EPOCHS = 3
KWTA_RATIO = 0.1
TRAINING_DATASET = "mnist5k"
TRAINING_KEYS_IGNORED = ("out", "device")  # do not change the trained weights' meaning
TITLE = "quickstart: kWTA CNN vs ReLU twin on mnist5k"
# records in out_dir/eval that cannot be resumed are set aside, not refused (the quickstart has no --no-resume)
STALE_RECORDS = StalePolicy(option="--out-dir", restart="--retrain", set_aside=True)


def default_config_path() -> Path:
    """``eval_configs/quickstart.yaml`` of this source tree."""
    return Path(__file__).resolve().parents[1] / "eval_configs" / "quickstart.yaml"


def training_configs(out_dir: Path, epochs: int, device: str, threads: int = 1) -> dict[str, TrainConfig]:
    """The two training runs: the kWTA CNN (ratio 0.1, volume) and its ReLU twin, same seed and recipe, with
    ``threads`` torch threads (the command's ``--threads``; a part of the recipe: CPU sums split by it)."""
    common: dict[str, Any] = dict(dataset=TRAINING_DATASET, arch="cnn", epochs=epochs, seed=0, device=device,
                                  threads=threads)
    return {
        "kwta": TrainConfig(activation=ActivationConfig(name="kwta", k_ratio=KWTA_RATIO, mode="volume"),
                            out=str(out_dir / "kwta-cnn.pt"), **common),
        "relu": TrainConfig(activation=ActivationConfig(name="relu"), out=str(out_dir / "relu-cnn.pt"), **common),
    }


def _comparable(training: dict) -> dict:
    return {k: v for k, v in training.items() if k not in TRAINING_KEYS_IGNORED}


def ensure_trained(cfg: TrainConfig, retrain: bool = False) -> tuple[Path, bool]:
    """Train ``cfg`` unless its checkpoint exists with the same training settings; returns (path, trained now)."""
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
    logger.info("trained %s: test accuracy %s%%", path, percent_text(result.test_accuracy, 2))
    return Path(result.checkpoint), True


def check_before_training(cfg: EvalConfig) -> None:
    """What would otherwise fail only after both models are trained: the suite must evaluate the data set they
    are trained on, and its ``n_examples`` must fit in that test split."""
    if cfg.dataset != TRAINING_DATASET:
        raise ConfigError(f"--config: dataset {cfg.dataset!r}, but quickstart trains its models on "
                          f"{TRAINING_DATASET}; use a suite with dataset: {TRAINING_DATASET}")
    select_samples(load_eval_data(cfg), cfg)


def headline(records: list[EvalRecord]) -> list[str]:
    """One line per model: the first (plain) attack vs the worst case where they differ most, and the verdict (the
    critical flags, and what the budget check found at that threat point: by how much a larger budget lowers it)."""
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
        for f in rec.diagnostics:  # the worst case shown is an upper bound that a larger budget lowers
            e = f.evidence
            if f.code == BUDGET_STILL_LOWERING and e.get("source") == "rerun" and \
                    (e.get("norm"), e.get("eps")) == (first.norm, first.eps):
                # rounded down as the flag writes it: the 97.5% lower bound, never more (2/41: 4.8, not 4.9)
                verdict += (f"; {e['attack']} at {e['factor']}x its budget lowers the worst case by >= "
                            f"{lower_bound_percent_text(e['drop_lower_bound'])} points ({f.code})")
        lines.append(f"{rec.label}: {first.label} {percent_text(first.robust.accuracy)}% vs worst case "
                     f"{percent_text(worst.robust.accuracy)}% at {threat_text(first.norm, first.eps_text)} — {verdict}")
    return lines


def run_quickstart(cfg: EvalConfig, out_dir: Path, *, epochs: int = DEFAULT_EPOCHS, device: str = "auto",
                   retrain: bool = False, command: list[str] | None = None, progress: bool = True,
                   train_threads: int = 1) -> list[EvalRecord]:
    """Train (or reuse) both models into ``out_dir`` with ``train_threads`` torch threads (the command passes its
    ``--threads``), compare them with ``cfg`` and write the table and report; the folder is locked while it runs
    (one quickstart per folder at a time)."""
    check_before_training(cfg)
    eval_device = resolve_device(cfg.device)
    configs = training_configs(out_dir, epochs, device, train_threads)
    with OutputLock(out_dir / "quickstart.md", "--out-dir"):
        trained_any = False
        models = []
        for label, train_cfg in configs.items():
            path, trained = ensure_trained(train_cfg, retrain=retrain)
            trained_any |= trained
            models.append(load_model(str(path), eval_device, label=label))
        # a record there of another suite or model (an earlier version's) goes to eval/superseded/, not in the way
        records = compare_models(models, cfg, out_dir / "eval", transfer=True, resume=not trained_any,
                                 command=command, progress=progress, stale=STALE_RECORDS)
        write_comparison(records, out_dir, "quickstart", title=TITLE, notes=headline(records))
    logger.info("checkpoints, records, quickstart.md and quickstart.html are in %s", out_dir)
    return records
