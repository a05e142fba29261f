"""The command line's terminal policy: log records go through ``tqdm.write`` and progress bars are drawn only on
a terminal, so a bar and a log line never share a line — neither on screen nor in a log file.

Installed by the CLI (:func:`configure_logging` from ``kwta_robust.cli.main``), never by the library, which only
logs and passes ``progress`` to its tqdm bars. Kept free of heavy imports so it loads instantly.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import TextIO

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
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose == 1 and not quiet else logging.NOTSET)
    warnings.showwarning = WarningLogger()


def progress_bars(no_progress: bool) -> bool:
    """Progress bars unless ``--no-progress``, and only when stderr is a terminal (as tqdm's ``disable=None``; its
    default draws them on any stream): a log file or a CI log gets the log lines alone, never carriage-return bar
    updates mixed into them."""
    return not no_progress and sys.stderr.isatty()
