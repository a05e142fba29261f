"""``kwta-robust quickstart``: the README's first command — train a small kWTA CNN and its ReLU twin on mnist5k,
attack both and print the side-by-side table with the masking flags (the work is :mod:`kwta_robust.quickstart`;
this module parses and prints). Everything lands in ``--out-dir``; re-running reuses finished work.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kwta_robust.errors import ConfigError
from kwta_robust.formats import FORMATS, format_help
from kwta_robust.quickstart import DEFAULT_EPOCHS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``quickstart`` command's options."""
    parser.add_argument("--out-dir", default="runs/quickstart", metavar="DIR", help="checkpoints, records, table "
                                                                                    "(default runs/quickstart)")
    parser.add_argument("--device", default=None, metavar="D", help="auto (default), cpu, cuda, cuda:1")
    parser.add_argument("--n-examples", type=int, default=None, metavar="N",
                        help="override the suite's n_examples (200 in eval_configs/quickstart.yaml)")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, metavar="E", help="training epochs per model "
                                                                                        f"(default {DEFAULT_EPOCHS})")
    parser.add_argument("--config", default=None, metavar="YAML", help="evaluation suite (default "
                                                                       "eval_configs/quickstart.yaml)")
    parser.add_argument("--retrain", action="store_true", help="train again even if matching checkpoints exist")
    parser.add_argument("--format", default="md", choices=FORMATS.names(), help=format_help("table on stdout: "))
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def saved_work(args: argparse.Namespace) -> bool:
    """Whether an interrupted ``quickstart`` left work a re-run takes up: a checkpoint or record in ``--out-dir``
    (none before the first model is trained)."""
    from kwta_robust.commands.common import holds_files

    return holds_files(args.out_dir, "**/*.pt") or holds_files(args.out_dir, "**/*.json")


def run(args: argparse.Namespace) -> int:
    """Train the quickstart models, evaluate them and write the comparison; returns the exit status. A config error
    names the flag that gave the value at fault (:func:`~kwta_robust.commands.common.flags_named`)."""
    from kwta_robust.commands.common import flags_named

    with flags_named(args):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """The body of :func:`run`: train the quickstart models, evaluate them and write the comparison."""
    import torch

    from kwta_robust.commands.common import OVERRIDE_FLAGS, command_line
    from kwta_robust.commands.console import output_only_stdout, progress_bars
    from kwta_robust.config import load_config
    from kwta_robust.formats import render_stdout
    from kwta_robust.quickstart import TITLE, default_config_path, headline, run_quickstart
    from kwta_robust.safe_paths import check_output_dir

    if args.epochs < 1:
        raise ConfigError(f"--epochs: must be >= 1, got {args.epochs}")
    config_path = Path(args.config) if args.config else default_config_path()
    if config_path.is_dir():
        raise ConfigError(f"--config: {config_path} is a folder; give the YAML file (e.g. "
                          "eval_configs/quickstart.yaml)")
    if not config_path.is_file():
        raise ConfigError(f"--config: {config_path} not found; pass --config eval_configs/quickstart.yaml from a clone")
    cfg = load_config(config_path, flags=OVERRIDE_FLAGS, n_examples=args.n_examples, device=args.device)
    out_dir = check_output_dir(args.out_dir, "--out-dir")
    with output_only_stdout():  # what the training and evaluation print leaves the table (--format json) as it is
        records = run_quickstart(cfg, out_dir, epochs=args.epochs, device=args.device or "auto", retrain=args.retrain,
                                 command=command_line(args), progress=progress_bars(args.no_progress),
                                 train_threads=torch.get_num_threads())  # what --threads set (kwta_robust.runtime)
    sys.stdout.write(render_stdout(records, args.format, title=TITLE, extra_notes=headline(records)))
    return 0
