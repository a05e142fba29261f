"""The command line's terminal policy: log records go through ``tqdm.write`` and progress bars are drawn only on
a terminal, so a bar and a log line never share a line — neither on screen nor in a log file.

Installed by the CLI (:func:`configure_logging` from ``kwta_robust.cli.main``), never by the library, which only
logs and passes ``progress`` to its tqdm bars. Kept free of heavy imports so it loads instantly.
"""

from __future__ import annotations

import logging
import sys

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


def configure_logging(verbose: int, quiet: bool) -> None:
    """Root logging for the command line: level from ``-v``/``-q``, records through :class:`ProgressAwareHandler`
    on stderr. Like :func:`logging.basicConfig`, leaves a root logger that already has handlers alone."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    handler = ProgressAwareHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])


def progress_bars(no_progress: bool) -> bool:
    """Progress bars unless ``--no-progress``, and only when stderr is a terminal (tqdm's own default): a log file
    or a CI log gets the log lines alone, never carriage-return bar updates mixed into them."""
    return not no_progress and sys.stderr.isatty()
