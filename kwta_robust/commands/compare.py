"""``kwta-robust compare CKPT_A CKPT_B ... --config ...``: evaluate several models on the same samples, with
transfer attacks between them, and print one side-by-side table.

One record per model is written to ``--out-dir`` (resumable like ``evaluate``), plus ``compare.md`` (the wide
table) and ``compare.html`` (the report). The work is :mod:`kwta_robust.compare`; this module parses and prints.
"""

from __future__ import annotations

import argparse
import logging
import sys

from kwta_robust.commands.common import add_common_arguments, command_line, config_from_args, sharding_from_args
from kwta_robust.errors import ConfigError

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="two or more checkpoints")
    add_common_arguments(parser, output="--out-dir")
    parser.add_argument("--labels", default=None, metavar="A,B,...", help="names for the models (default: file stems)")
    parser.add_argument("--out-dir", default="runs/compare", metavar="DIR", help="records and compare.md go here")
    parser.add_argument("--no-transfer", action="store_true", help="skip transfer attacks between the models")


def run(args: argparse.Namespace) -> int:
    from kwta_robust.commands.console import progress_bars
    from kwta_robust.compare import compare_models, model_labels, write_comparison
    from kwta_robust.config import resolve_device
    from kwta_robust.formats import render_stdout
    from kwta_robust.loading import load_model
    from kwta_robust.safe_paths import check_output_dir

    if len(args.checkpoints) < 2:
        raise ConfigError("compare: give at least two checkpoints (use `evaluate` for one)")
    cfg = config_from_args(args)
    sharding = sharding_from_args(args)
    labels = model_labels(args.checkpoints, None if args.labels is None else [s.strip() for s in args.labels.split(",")])
    out_dir = check_output_dir(args.out_dir, "--out-dir")
    device = resolve_device(cfg.device)
    models = [load_model(c, device, allow_pickle=args.allow_pickle, label=lab) for c, lab in zip(args.checkpoints, labels)]
    records = compare_models(models, cfg, out_dir, transfer=not args.no_transfer, resume=not args.no_resume,
                             command=command_line(args), progress=progress_bars(args.no_progress), sharding=sharding)
    write_comparison(records, out_dir)
    sys.stdout.write(render_stdout(records, args.format))
    logger.info("records, compare.md and compare.html written to %s", out_dir)
    return 0
