"""``kwta-robust`` command line: ``train | evaluate | compare | sweep | table | report | diff | quickstart | plugins``.

Each sub-command lives in its own module under :mod:`kwta_robust.commands` and exposes
``add_arguments(parser)`` and ``run(args) -> int``; this file is only the registry and the error boundary:
user errors (bad config, missing file, …) print one line and exit with status 2, never a traceback.

Only the module of the command being run is imported (the others are listed by name and help text) and this file
imports nothing heavy itself: ``import kwta_robust.cli`` and ``kwta-robust --help`` do not import torch; a command
imports what it needs once it is chosen.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import signal
import sys
import threading
from types import ModuleType
from typing import Any, Iterable, Iterator, NoReturn, Sequence

from attacks.errors import AttackConfigError
from kwta_robust.commands.console import configure_logging
from kwta_robust.errors import OTHER_BATCH_SETTINGS, EvalOutOfMemory, KwtaRobustError, first_line, is_out_of_memory
from kwta_robust.visible_text import visible

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("kwta_robust.commands.train", "train a model (standard, PGD adversarial, incremental kWTA sparsity, "
                                            "pruning)"),
    "evaluate": ("kwta_robust.commands.evaluate", "evaluate one checkpoint against an attack suite"),
    "compare": ("kwta_robust.commands.compare", "evaluate several checkpoints on the same samples, side by side"),
    "sweep": ("kwta_robust.commands.sweep", "train and evaluate a grid of activation x weight sparsity"),
    "table": ("kwta_robust.commands.table", "render JSON records as Markdown, CSV, LaTeX or JSON"),
    "report": ("kwta_robust.commands.report", "render JSON records (and a sweep) as one self-contained HTML report, "
                                            "or as Markdown (--out *.md)"),
    "diff": ("kwta_robust.commands.diff", "compare two evaluation records field by field, but wall times, "
                                          "timestamps, the command line, a checkpoint's or --weights file's path "
                                          "and digest and a sweep cell's folder"),
    "quickstart": ("kwta_robust.commands.quickstart", "train a small kWTA CNN and its ReLU twin on mnist5k and compare "
                                                      "them"),
    "plugins": ("kwta_robust.commands.plugins", "list the attacks, noise probes, surrogates, architectures, data sets, "
                                                "diagnostics, pruning methods, formats and executors, with plug-ins"),
}


NO_TORCH = frozenset({"table", "report", "diff", "plugins"})  # commands that only read records or registries


class Parser(argparse.ArgumentParser):
    """argparse with the CLI's error format: a bad option (``--threads many``, a missing ``--config``) is one
    ``error: ...`` line naming it and where the options are listed, exit status 2 — not the usage block followed by
    ``kwta-robust evaluate: error: ...``. Sub-command parsers are of this class too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: the sub-commands' parsers by name (filled by :func:`build_parser`), so that an option no sub-command
        #: knows is reported with that sub-command's ``--help``
        self.command_parsers: dict[str, argparse.ArgumentParser] = {}

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


def build_parser(load: Iterable[str] | None = None) -> tuple[Parser, dict[str, ModuleType]]:
    """The parser and the command modules it loaded: those named in ``load`` (default: every command) get their
    options; the others are listed with their help text only. Commands whose module is not part of this build are
    left out."""
    load = set(COMMANDS if load is None else load)
    parser = Parser(prog="kwta-robust", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="info is logged by default; -v adds kwta-robust's own debug lines (kwta_robust, "
                             "attacks); -vv every library's too (torch, matplotlib, ...)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors (wins over -v)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    modules: dict[str, ModuleType] = {}
    for name, (module_name, help_text) in COMMANDS.items():
        if importlib.util.find_spec(module_name) is None:
            continue  # command not part of this build
        command_parser = parser.command_parsers[name] = sub.add_parser(name, help=help_text, description=help_text)
        if name not in load:
            continue
        module = modules[name] = importlib.import_module(module_name)
        module.add_arguments(command_parser)  # type: ignore[attr-defined]
        if name not in NO_TORCH and "--threads" not in command_parser._option_string_actions:  # train: a config key
            from kwta_robust.runtime import THREADS_HELP

            command_parser.add_argument("--threads", type=int, default=None, metavar="N", help=THREADS_HELP)
    return parser, modules


def command_named(argv: Sequence[str]) -> str | None:
    """The sub-command of ``argv``: its first word that is not an option (the global options take no value)."""
    word = next((arg for arg in argv if not arg.startswith("-")), None)
    return word if word in COMMANDS else None


#: What an interrupted command says. An evaluation resumes from the records it saved (``None``: said where the command's
#: ``saved_work(args)`` finds them, :func:`interrupted`); a training run does not resume.
INTERRUPTED: dict[str | None, str] = {
    None: "interrupted: finished results are saved; re-run the same command to resume",
    "train": "interrupted: training does not resume (no checkpoint of this run was written, except finished "
             "incremental stages); re-run the command to train from the start",
}
NOTHING_SAVED = "interrupted: nothing was saved"
#: Options with which a re-run starts over instead of resuming (the message then asks to re-run without them).
RESUME_OFF = {"no_resume": "--no-resume", "retrain": "--retrain"}


def interrupted(args: argparse.Namespace, modules: dict[str, ModuleType]) -> str:
    """The line an interrupted command prints: it resumes only where its module's ``saved_work(args)`` finds work a
    re-run takes up (``evaluate``'s record, ``compare``'s records, ``quickstart``'s checkpoints, a sweep's cells);
    a command without one (``table``, ``diff``, ``report``, ``plugins``), a dry run, or one interrupted before it
    saved anything (loading, the first training of ``quickstart``) saved nothing."""
    if args.command in INTERRUPTED:
        return INTERRUPTED[args.command]
    saved_work = getattr(modules.get(args.command), "saved_work", None)
    if saved_work is None or not saved_work(args):
        return NOTHING_SAVED
    off = [flag for key, flag in RESUME_OFF.items() if getattr(args, key, False)]
    return INTERRUPTED[None].replace("the same command", f"the command without {off[0]}") if off else \
        INTERRUPTED[None]


def _terminated(signum: int, frame: Any) -> None:
    """SIGTERM (``kill PID``, a scheduler's stop) ends a command as Ctrl-C does: its ``finally`` blocks remove the
    temp files and lock files, a sharded run stops its workers, and the same message says what was kept. Python's
    default would end the process at once, leaving them behind."""
    raise KeyboardInterrupt


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """:func:`_terminated` handles SIGTERM in the block (main thread only: Python runs handlers there), the previous
    handler after it. A SIGTERM that arrives as the block ends is still pending when that handler is put back, and
    ``signal.signal`` runs pending handlers before it swaps them (and then swaps nothing): the KeyboardInterrupt
    leaves this block, with the previous handler back, for the caller's ``except KeyboardInterrupt``. Outside it, it
    had left ``main`` past that clause (a traceback and status -2, by SIGINT, not 130)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    previous = signal.SIG_DFL if previous is None else previous  # None: installed from C; unknown to Python
    try:
        signal.signal(signal.SIGTERM, _terminated)
        yield
    finally:
        try:
            signal.signal(signal.SIGTERM, previous)
        except KeyboardInterrupt:  # a pending SIGTERM: _terminated ran, the swap was not made
            signal.signal(signal.SIGTERM, previous)
            raise


#: Per command, what sets the batch an out-of-memory error should be retried with (default: an evaluation's).
_BATCH_FIX = {
    "train": "lower the training batch (--batch-size)",
    "sweep": "lower batch_size in the sweep config",
    "quickstart": "lower batch_size in an evaluation config given with --config",
}
_EVAL_FIX = (f"lower batch_size (--batch-size), {OTHER_BATCH_SETTINGS} in the config, with a new --out or "
             "--no-resume (another batch size is another evaluation)")


def out_of_memory(exc: BaseException, command: str | None) -> str | None:
    """The one-line message for ``exc`` when it is an out-of-memory error (Python's ``MemoryError``, torch's
    ``OutOfMemoryError`` or its CPU allocator's failure), naming the batch settings to lower; ``None`` otherwise.
    At ImageNet sizes one attack batch of a ResNet-18 holds gigabytes of activations and gradients, and torch's
    own error is a traceback that names neither the setting nor the fix."""
    if not is_out_of_memory(exc):
        return None
    return f"out of memory ({first_line(exc)}); {_BATCH_FIX.get(command or '', _EVAL_FIX)}, or free memory"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kwta-robust`` command line on ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = command_named(argv)
    parser, modules = build_parser([] if command is None else [command])
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # named with the sub-command's --help, where its options are listed
        parser.command_parsers.get(args.command, parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    configure_logging(args.verbose, args.quiet)
    try:
        with _terminate_as_interrupt():
            return _run(args, modules)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (_terminated), also one that came as the work ended
        print(interrupted(args, modules), file=sys.stderr)
        return 130


def _run(args: argparse.Namespace, modules: dict[str, ModuleType]) -> int:
    """The chosen command's work (``modules``: the command modules :func:`build_parser` imported) within the error
    boundary: a user error or running out of memory is one line and status 2."""
    try:
        if args.command in NO_TORCH:
            return int(modules[args.command].run(args) or 0)  # type: ignore[attr-defined]
        from kwta_robust.commands.console import load_plugins
        from kwta_robust.heap import retain_freed_memory
        from kwta_robust.runtime import torch_threads

        retain_freed_memory()  # the heap policy of every command that runs torch (kwta_robust.heap)
        with torch_threads(getattr(args, "threads", None)):  # one thread policy for every command (kwta_robust.runtime)
            load_plugins(args.command)  # a plug-in writing to fd 1 at import: stderr, not before the output
            return int(modules[args.command].run(args) or 0)  # type: ignore[attr-defined]
    except (KwtaRobustError, AttackConfigError) as exc:
        # an evaluation's out of memory comes worded for the Python API: the command's own fix names its options
        oom = out_of_memory(exc.original, args.command) if isinstance(exc, EvalOutOfMemory) and exc.original else None
        print(f"error: {visible(str(oom or exc))}", file=sys.stderr)  # a shared file's text: no ESC sequence
        return 2
    except (MemoryError, RuntimeError) as exc:
        message = out_of_memory(exc, args.command)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
