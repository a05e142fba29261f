"""``kwta-robust evaluate CHECKPOINT --config eval_configs/NAME.yaml``: evaluate one model, print the table and
write the JSON record and, next to it, the HTML report (``.html`` instead of ``.json``).

Bring your own model with ``--model-factory package.module:function --weights FILE`` instead of a checkpoint.
The record is written atomically after every finished (attack, eps) unit; re-running the same command resumes
(``--no-resume`` starts over). ``--dry-run`` checks what the run checks before its first attack and prints the plan,
writing nothing (:mod:`kwta_robust.dry_run`). The work is :func:`kwta_robust.runs.evaluate_one`; this module parses
and prints.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from kwta_robust.commands.common import (
    add_common_arguments,
    check_outputs,
    command_line,
    config_from_args,
    holds_files,
    parse_factory_kwargs,
    sharding_from_args,
)
from kwta_robust.config import EvalConfig
from kwta_robust.errors import ConfigError
from kwta_robust.safe_paths import check_not_overwriting

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``evaluate`` command's options."""
    parser.add_argument("checkpoint", nargs="?", help="checkpoint written by `kwta-robust train`")
    add_common_arguments(parser)
    parser.add_argument("--model-factory", metavar="PKG.MOD:FN",
                        help="bring your own model: a function returning an nn.Module (inputs in [0,1], logits out)")
    parser.add_argument("--weights", metavar="FILE", help="state_dict for --model-factory "
                                                          "(torch.save(model.state_dict()), a .safetensors file or a "
                                                          "sharded model.safetensors.index.json)")
    parser.add_argument("--factory-kwargs", metavar="JSON", default=None, help="keyword arguments for --model-factory")
    parser.add_argument("--out", metavar="PATH", help="JSON record (default runs/eval/<model>__<config>.json)")
    parser.add_argument("--save-adversarial", metavar="PATH",
                        help="write clean/adversarial inputs, labels and predictions to this .pt file")
    parser.add_argument("--grid-cell", metavar="kwta_ratio=R,weight_sparsity=S",
                        help="where the record sits in `table --matrix` (row k/N R, 1.0 = the ReLU twin; column weight "
                             "sparsity S, 0 = dense; optionally ,pruning_method=NAME, a registered method): for a "
                             "model whose kWTA ratio and pruning are not in a kwta-robust checkpoint's metadata; set "
                             "on a finished record too")
    parser.add_argument("--dry-run", action="store_true",
                        help="check everything the run checks before its first attack (config, model, data, the "
                             "model's output, layer probe, BPDA layers, every attack built, the record at --out) and "
                             "print the plan: attacks with their effective settings, BPDA layers, noise probes, the "
                             "units a record there holds; nothing is attacked or written")


def run(args: argparse.Namespace) -> int:
    """Evaluate one model, write its record and report and print its table; returns the exit status. A config error
    names the flag that gave the value at fault (:func:`~kwta_robust.commands.common.flags_named`)."""
    from kwta_robust.commands.common import flags_named

    with flags_named(args):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """The body of :func:`run`: evaluate one model, write its record and report and print its table."""
    from kwta_robust.commands.console import output_only_stdout, progress_bars
    from kwta_robust.formats import render_stdout
    from kwta_robust.html_report import report_path_for
    from kwta_robust.grid_cell import parse_grid_cell
    from kwta_robust.runs import evaluate_one

    cfg = config_from_args(args, pin=False)  # the data file is pinned from its one read, with the model
    if args.out and Path(args.out).suffix.lower() == ".html":
        raise ConfigError(f"--out: {args.out} would be overwritten by its own HTML report (written next to the record "
                          "with .html instead of its suffix); give the record a .json path")
    report = report_path_for(args.out) if args.out else None
    check_outputs(args, {"--out": args.out, "--save-adversarial": args.save_adversarial,
                         "the HTML report next to --out": report})
    check_not_overwriting(Path(args.out) if args.out else None, "record", "--out")
    check_not_overwriting(Path(args.save_adversarial) if args.save_adversarial else None, "adversarial store",
                          "--save-adversarial", only_own=True)
    if args.dry_run:
        return dry_run(args, cfg)
    with output_only_stdout():  # a model printing in its forward leaves the table (--format json) as it is
        record, out = evaluate_one(
            cfg, checkpoint=args.checkpoint, model_factory=args.model_factory, weights=args.weights,
            factory_kwargs=parse_factory_kwargs(args.factory_kwargs), allow_pickle=args.allow_pickle, out=args.out,
            config_path=args.config, save_adversarial=args.save_adversarial, resume=not args.no_resume,
            command=command_line(args), progress=progress_bars(args.no_progress), sharding=sharding_from_args(args),
            grid_cell=None if args.grid_cell is None else parse_grid_cell(args.grid_cell),
        )
    sys.stdout.write(render_stdout([record], args.format, detail=True))
    logger.info("record written to %s", out)
    if args.save_adversarial:
        logger.info("adversarial inputs written to %s", args.save_adversarial)
    return 0


def saved_work(args: argparse.Namespace) -> bool:
    """Whether an interrupted ``evaluate`` left a record a re-run resumes: its ``--out`` (default
    ``runs/eval/<model>__<config>.json``, the model named as :func:`kwta_robust.loading.load_model` names it) is a
    file, or a sharded run's ``OUT.parts/`` holds one. A dry run writes none."""
    from kwta_robust.runs import default_record_path

    if args.dry_run:
        return False
    if args.out:
        out = Path(args.out)
    else:
        model = args.checkpoint or args.weights
        out = default_record_path(Path(model).stem if model else str(args.model_factory).rsplit(":", 1)[-1],
                                  args.config)
    return holds_files(out) or holds_files(f"{out}.parts", "*")  # a sharded run's finished units: OUT.parts/


def dry_run(args: argparse.Namespace, cfg: EvalConfig) -> int:
    """``evaluate --dry-run``: print the plan (:func:`kwta_robust.dry_run.dry_run_one`); exit status 0, or the
    run's one-line error (after the plan) where it would stop because of its outputs."""
    from kwta_robust.commands.console import output_only_stdout
    from kwta_robust.dry_run import dry_run_one, render_dry_run
    from kwta_robust.grid_cell import parse_grid_cell

    with output_only_stdout():  # the model's checks call it: its prints leave the plan (--format json) as it is
        plan = dry_run_one(
            cfg, checkpoint=args.checkpoint, model_factory=args.model_factory, weights=args.weights,
            factory_kwargs=parse_factory_kwargs(args.factory_kwargs), allow_pickle=args.allow_pickle, out=args.out,
            config_path=args.config, save_adversarial=args.save_adversarial, resume=not args.no_resume,
            sharding=sharding_from_args(args),
            grid_cell=None if args.grid_cell is None else parse_grid_cell(args.grid_cell),
        )
    sys.stdout.write(render_dry_run(plan, args.format))
    if plan.error is not None:
        raise plan.error
    return 0
