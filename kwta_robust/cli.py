"""``kwta-robust`` command line: ``train | evaluate | compare | sweep | table | report | quickstart``.

Each sub-command lives in its own module under :mod:`kwta_robust.commands` and exposes
``add_arguments(parser)`` and ``run(args) -> int``; this file is only the registry and the error boundary:
user errors (bad config, missing file, …) print one line and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from attacks.base import AttackConfigError
from kwta_robust.commands.console import configure_logging
from kwta_robust.errors import KwtaRobustError
from kwta_robust.runtime import THREADS_HELP, torch_threads

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("kwta_robust.commands.train", "train a model (standard, PGD adversarial, incremental kWTA sparsity, pruning)"),
    "evaluate": ("kwta_robust.commands.evaluate", "evaluate one checkpoint against an attack suite"),
    "compare": ("kwta_robust.commands.compare", "evaluate several checkpoints on the same samples, side by side"),
    "sweep": ("kwta_robust.commands.sweep", "train and evaluate a grid of activation x weight sparsity"),
    "table": ("kwta_robust.commands.table", "render JSON records as Markdown, CSV, LaTeX or JSON"),
    "report": ("kwta_robust.commands.report", "render JSON records (and a sweep) as one self-contained HTML report"),
    "quickstart": ("kwta_robust.commands.quickstart", "train a small kWTA CNN and its ReLU twin on mnist5k and compare them"),
}


NO_TORCH = frozenset({"table", "report"})  # commands that only read records: no --threads


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = argparse.ArgumentParser(prog="kwta-robust", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    modules: dict[str, object] = {}
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # command not part of this build
        modules[name] = module
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command_parser)  # type: ignore[attr-defined]
        if name not in NO_TORCH and "--threads" not in command_parser._option_string_actions:  # train: a config key
            command_parser.add_argument("--threads", type=int, default=None, metavar="N", help=THREADS_HELP)
    return parser, modules


def main(argv: Sequence[str] | None = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    try:
        with torch_threads(getattr(args, "threads", None)):  # one thread policy for every command (kwta_robust.runtime)
            return int(modules[args.command].run(args) or 0)  # type: ignore[attr-defined]
    except (KwtaRobustError, AttackConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished results are saved; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
