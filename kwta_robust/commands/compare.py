"""``kwta-robust compare CKPT_A CKPT_B ... --config ...``: evaluate several models on the same samples, with
transfer attacks between them, and print one side-by-side table.

Every model is evaluated with the same config (so the same seeded sample selection); unless ``--no-transfer``,
each other model is a transfer source for it (e.g. adversarial inputs crafted on the ReLU twin, evaluated on the
kWTA model: Athalye et al. 2018 and Tramèr et al. 2020 use this to expose gradient masking). One record per model
is written to ``--out-dir`` (resumable like ``evaluate``), plus ``compare.md`` (the wide table) and
``compare.html`` (the report, :mod:`kwta_robust.html_report`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from kwta_robust.commands.evaluate import (
    ModelForEval,
    add_common_arguments,
    command_line,
    config_from_args,
    load_eval_data,
    load_model,
)
from kwta_robust.config import EvalConfig, resolve_device
from kwta_robust.errors import ConfigError
from kwta_robust.results import EvalRecord, atomic_write_text
from kwta_robust.safe_paths import check_output_dir, child_path, safe_name, sanitize_name

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="two or more checkpoints")
    add_common_arguments(parser)
    parser.add_argument("--labels", default=None, metavar="A,B,...", help="names for the models (default: file stems)")
    parser.add_argument("--out-dir", default="runs/compare", metavar="DIR", help="records and compare.md go here")
    parser.add_argument("--no-transfer", action="store_true", help="skip transfer attacks between the models")


def unique_labels(names: Sequence[str]) -> list[str]:
    """Make labels unique by appending ``-2``, ``-3`` … to repeats."""
    out: list[str] = []
    for name in names:
        label, i = name, 2
        while label in out:
            label, i = f"{name}-{i}", i + 1
        out.append(label)
    return out


def compare_models(models: Sequence[ModelForEval], cfg: EvalConfig, out_dir: Path, *, transfer: bool = True,
                   resume: bool = True, command: list[str] | None = None, progress: bool = True) -> list[EvalRecord]:
    """Evaluate each model on the same samples (with the others as transfer sources); one record each."""
    from kwta_robust.bpda_layers import check_bpda_specs
    from kwta_robust.evaluate import evaluate

    if len(models) < 2:
        raise ConfigError("compare: give at least two models")
    seeds = {m.metadata.get("data_split_seed", 0) for m in models}
    if len(seeds) > 1:
        raise ConfigError(f"compare: the models were trained on different data splits (data_split_seed {sorted(seeds)}); "
                          "they cannot be evaluated on the same held-out samples")
    check_bpda_specs({m.label: m.model for m in models}, cfg)
    data = load_eval_data(cfg, models[0].metadata, [m.model for m in models])
    records = []
    for m in models:
        sources = {o.label: o.model for o in models if o is not m} if transfer else {}
        logger.info("evaluating %s%s", m.label, f" (transfer sources: {', '.join(sources)})" if sources else "")
        records.append(evaluate(m.model, data, cfg, m.info, out_path=child_path(out_dir, m.label, "label", ".json"),
                                resume=resume, transfer_sources=sources, command=command, progress=progress,
                                strict_bpda_layers=False))
    return records


def run(args: argparse.Namespace) -> int:
    from kwta_robust.commands.console import progress_bars
    from kwta_robust.html_report import write_report
    from kwta_robust.formats import render_stdout, render_table
    from kwta_robust.report import compare_table

    if len(args.checkpoints) < 2:
        raise ConfigError("compare: give at least two checkpoints (use `evaluate` for one)")
    cfg = config_from_args(args)
    if args.labels is not None:
        labels = [s.strip() for s in args.labels.split(",")]
        if len(labels) != len(args.checkpoints) or not all(labels):
            raise ConfigError(f"--labels: give one non-empty name per checkpoint ({len(args.checkpoints)})")
        labels = [safe_name(label, "--labels") for label in labels]  # each names a record file in --out-dir
    else:
        labels = [sanitize_name(Path(c).stem) for c in args.checkpoints]
    labels = unique_labels(labels)
    out_dir = check_output_dir(args.out_dir, "--out-dir")
    device = resolve_device(cfg.device)
    models = [load_model(c, device, allow_pickle=args.allow_pickle, label=lab) for c, lab in zip(args.checkpoints, labels)]
    records = compare_models(models, cfg, out_dir, transfer=not args.no_transfer, resume=not args.no_resume,
                             command=command_line(args), progress=progress_bars(args.no_progress))
    atomic_write_text(out_dir / "compare.md", render_table(compare_table(records), "wide"))
    write_report(out_dir / "compare.html", records)
    sys.stdout.write(render_stdout(records, args.format))
    logger.info("records, compare.md and compare.html written to %s", out_dir)
    return 0
