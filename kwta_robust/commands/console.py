"""The command line's terminal policy: log records go through ``tqdm.write`` and progress bars are drawn only on
a terminal, so a bar and a log line never share a line — neither on screen nor in a log file; and stdout holds the
command's own output alone (:func:`output_only_stdout`), so that ``--format json`` parses.

Installed by the CLI (:func:`configure_logging` from ``kwta_robust.cli.main``), never by the library, which only
logs and passes ``progress`` to its tqdm bars. Kept free of heavy imports so it loads instantly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from types import MappingProxyType
from typing import Iterator, Mapping, TextIO

from attacks.plugin_isolation import LogLines
from kwta_robust.visible_text import visible

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


class ProgressAwareHandler(logging.StreamHandler):
    """Writes log records through ``tqdm.write``: an open progress bar is cleared, the record printed on a line of
    its own and the bar redrawn below it."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # logging's own contract: report a broken handler, never raise into the caller
            self.handleError(record)


class VisibleFormatter(logging.Formatter):
    """:data:`LOG_FORMAT` with control and bidirectional control characters written as escapes
    (:func:`~kwta_robust.visible_text.visible`): a log line names labels and paths from shared records and configs,
    and an ``ESC`` in one ran as a terminal command (cursor moves, erased lines)."""

    def format(self, record: logging.LogRecord) -> str:
        """The formatted line (message, then any traceback) with those characters as escapes."""
        return visible(super().format(record))


class WarningLogger:
    """:func:`warnings.showwarning` for the command line: a Python warning (e.g. the attacks'
    ``NonLogitOutputWarning`` for a model returning probabilities) becomes one log line of the logger named after
    the module it is attributed to, ``WARNING attacks.gradient: <message> (NonLogitOutputWarning)``, once per message
    and category (every attack checking the model's outputs would repeat it, and the ``once`` warnings filter counts
    per module), instead of a file path and a source line printed past the progress bars."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()

    def __call__(self, message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
        key = (category.__name__, str(message))
        if key in self.seen:
            return
        self.seen.add(key)
        module = next((name for name, mod in list(sys.modules.items())
                       if getattr(mod, "__file__", None) == filename), "py.warnings")
        logging.getLogger(module).warning("%s (%s)", message, category.__name__)


#: The loggers of the project's own packages, which one ``-v`` opens to debug (the others stay at info).
OWN_LOGGERS = ("kwta_robust", "attacks")


def configure_logging(verbose: int, quiet: bool) -> None:
    """Root logging for the command line, records through :class:`ProgressAwareHandler` on stderr. The levels:
    info by default; ``-v`` debug for the project's own loggers (:data:`OWN_LOGGERS`) only, since with ``-vv`` the
    libraries' debug lines (matplotlib's set-up, ...) bury them; ``-vv`` debug for every logger; ``-q`` warnings
    and errors only (it wins over ``-v``). Like :func:`logging.basicConfig`, leaves a root logger that already has
    handlers alone; the own loggers' level is set on every call (``NOTSET``: the root's), so a second call in one
    process (tests, an embedding program) does not inherit the first one's ``-v``. Python warnings are logged by a
    :class:`WarningLogger`, each message once per run."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    handler = ProgressAwareHandler(sys.stderr)
    handler.setFormatter(VisibleFormatter(LOG_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose == 1 and not quiet else logging.NOTSET)
    warnings.showwarning = WarningLogger()


def progress_bars(no_progress: bool) -> bool:
    """Progress bars unless ``--no-progress``, and only when stderr is a terminal (as tqdm's ``disable=None``; its
    default draws them on any stream): a log file or a CI log gets the log lines alone, never carriage-return bar
    updates mixed into them."""
    return not no_progress and sys.stderr.isatty()


#: How :func:`output_only_stdout` names what printed in the log: plug-ins' prints are named by their own isolation.
MODEL_CODE = "the model (or other code outside the plug-ins)"


@contextlib.contextmanager
def output_only_stdout(what: str = MODEL_CODE) -> Iterator[None]:
    """Run a command's work (everything that builds, loads, trains or calls a model) with stdout kept for the
    command's output, written after it. A user's model that prints in its ``forward`` (debug prints of shapes) runs
    in the clean pass, the probes, the checks, the dry run, ...: not only inside an attack, where
    :func:`attacks.plugin_isolation.isolated` already catches it. So ``sys.stdout`` is logged as there (one INFO
    line per printed line, named by ``what``) and file descriptor 1 points at stderr meanwhile, so that what is
    written past ``sys.stdout`` (``sys.__stdout__``, ``os.write(1, ...)``, a C extension's ``printf``, the output of
    a worker process started meanwhile) reaches stderr, as is, and not the output. Both are put back afterwards, also
    on an error or Ctrl-C, with the buffers in between flushed to where they were written. Used once per command
    around its work, never per batch: its cost is a few system calls."""
    if sys.stdout is not None:  # None: no stdout at all (pythonw)
        sys.stdout.flush()  # the command's own text written so far goes to the real stdout
    saved = _point_fd1_at_stderr()
    stream = LogLines(what)
    try:
        with contextlib.redirect_stdout(stream):
            yield
    finally:
        try:
            stream.finish()
            for text_stream in {id(s): s for s in (sys.stdout, sys.__stdout__) if s is not None}.values():
                text_stream.flush()  # a write to sys.__stdout__ meanwhile belongs to stderr, not to the output
            _flush_c_streams()
        finally:  # fd 1 is the output's again even where a flush failed (a closed pipe)
            if saved is not None:
                os.dup2(saved, 1)
                os.close(saved)


#: The plug-in kinds (:data:`kwta_robust.plugins.KINDS`) each command's config and work look names up in;
#: ``"evaluation"`` stands for an evaluation's kinds (:data:`kwta_robust.plugins.EVALUATION_KINDS`).
COMMAND_PLUGINS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "evaluate": ("evaluation",), "compare": ("evaluation",), "quickstart": ("evaluation",),
    "sweep": ("evaluation", "pruning-methods", "executors"), "train": ("architectures", "datasets", "pruning-methods"),
})


def load_plugins(command: str) -> None:
    """Load the plug-ins of the kinds ``command`` uses (:data:`COMMAND_PLUGINS`) under :func:`output_only_stdout`,
    before its options are read. A registry loads its plug-ins at its first lookup, and the first is the config's
    validation, before the command's work: a plug-in writing past ``sys.stdout`` at import (``sys.__stdout__``,
    file descriptor 1) reached stdout ahead of the output (``--format json`` did not parse). Its ``print`` is
    logged either way (:func:`attacks.plugin_isolation.isolated`); a plug-in that fails to load is skipped with a
    warning, as at any lookup."""
    if command not in COMMAND_PLUGINS:
        return
    from kwta_robust.plugins import EVALUATION_KINDS, KINDS

    kinds = [k for given in COMMAND_PLUGINS[command] for k in (EVALUATION_KINDS if given == "evaluation" else (given,))]
    with output_only_stdout("a plug-in"):
        for kind in kinds:
            KINDS[kind].registry().discover()


def _point_fd1_at_stderr() -> int | None:
    """Point file descriptor 1 at stderr's (2); returns a duplicate of the old 1 to put back, or ``None`` where
    either is closed (a daemon's): then nothing is redirected at that level."""
    _flush_c_streams()
    try:
        saved = os.dup(1)
    except OSError:  # no fd 1: nothing written to it reaches an output
        return None
    try:
        os.dup2(2, 1)
    except OSError:  # no fd 2 to point it at: leave fd 1 as it is
        os.close(saved)
        return None
    return saved


def _flush_c_streams() -> None:
    """Flush the C library's stdio buffers (``fflush(NULL)``): a C extension's ``printf`` to a pipe or file waits
    there, and would reach whichever file fd 1 points at when it is flushed (at exit, after the output). Windows'
    C runtimes each keep their own buffers, out of reach from here: nothing is done there."""
    if os.name != "posix":
        return
    import ctypes

    ctypes.CDLL(None).fflush(None)
