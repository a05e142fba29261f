"""What a plug-in's code may not change in the process that runs it besides torch's settings
(:mod:`attacks.plugin_guard`): standard output and the warnings filters.

The command line's stdout is read by programs (``plugins --json``, ``table --format json``, a dry run's plan as JSON):
a ``print`` in a plug-in's module at import, or in its code while it runs, would corrupt it. A plug-in that calls
``warnings.simplefilter("ignore")`` would hide the harness's own warnings from then on, one that calls
``simplefilter("error")`` would turn them into exceptions. :func:`isolated` runs a plug-in's code with stdout sent to
the log (one INFO line per printed line, naming the plug-in; bytes written to ``sys.stdout.buffer`` decoded as
UTF-8, control characters shown as escapes so a plug-in's terminal codes or binary garbage reach no terminal) and
the warnings filters and ``warnings.showwarning`` saved before and put back after it, with a WARNING naming the
plug-in when it had changed them (a change made inside ``warnings.catch_warnings()`` is put back by the plug-in
itself and passes unnoticed). The registries load entry points inside it (:mod:`attacks.registry`), the runner
calls every attack inside it (:func:`attacks.plugin_guard.guarded_call`) and the diagnostics every check
(``kwta_robust.diagnostics_base``).
"""

from __future__ import annotations

import codecs
import contextlib
import io
import logging
import sys
import warnings
from typing import Iterator

logger = logging.getLogger(__name__)


class LogLines(io.TextIOBase):
    """A text stream that logs every line written to it at INFO as ``"{what} printed: {line}"``; a line's end that
    is never written is logged by :meth:`finish`. A write made while logging (a plug-in's own log handler bound to
    this stream) goes to stderr instead of looping."""

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what
        self._pending = ""
        self._logging = False
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # of the bytes side (buffer)

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    @property
    def buffer(self) -> io.BufferedIOBase:
        """``sys.stdout.buffer``: a plug-in writing bytes (``sys.stdout.buffer.write``) works as it does outside the
        harness, its bytes logged like its text (an ``AttributeError`` from the harness's stream before)."""
        return _LoggedBytes(self)

    def reconfigure(self, **settings: object) -> None:
        """Accepted and ignored (``sys.stdout.reconfigure(encoding=...)``): the stream only logs text."""

    def write(self, text: str) -> int:
        if self._logging:
            return sys.stderr.write(text)
        lines = (self._pending + str(text)).split("\n")
        self._pending = lines.pop()
        for line in lines:
            self._log(line)
        return len(text)

    def finish(self) -> None:
        """Log the unfinished last line, if any (with the bytes of a character left incomplete)."""
        self.write(self.decoder.decode(b"", final=True))
        if self._pending:
            line, self._pending = self._pending, ""
            self._log(line)

    def _log(self, line: str) -> None:
        self._logging = True
        try:
            logger.info("%s printed: %s", self.what, "".join(c if c.isprintable() or c == "\t" else
                                                            c.encode("unicode_escape").decode("ascii") for c in line))
        finally:
            self._logging = False


class _LoggedBytes(io.BufferedIOBase):
    """The bytes side of a :class:`LogLines` stream: decoded as UTF-8 (a character split between two writes
    joined, undecodable bytes as U+FFFD) and written to it."""

    def __init__(self, text: LogLines) -> None:
        super().__init__()
        self._text = text
        self._decoder = text.decoder

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        data = bytes(data)
        self._text.write(self._decoder.decode(data))
        return len(data)


def _put_back(filters: list, saved: list, showwarning: object) -> bool:
    """Make ``filters`` (holding ``saved`` again) the warnings filters and ``showwarning`` warnings' again; returns
    whether anything had changed."""
    if warnings.filters is filters and filters == saved and warnings.showwarning is showwarning:
        return False
    warnings.filters = filters
    warnings.resetwarnings()  # empties them and invalidates the cached "once"/"default" decisions
    filters[:] = saved
    warnings.showwarning = showwarning  # type: ignore[assignment]
    return True


@contextlib.contextmanager
def isolated(what: str) -> Iterator[None]:
    """Run a plug-in's code (``what`` names it in the log: ``"attack 'mine'"``) with stdout logged and the warnings
    filters put back after it (module docstring); also when it raises."""
    filters, showwarning = warnings.filters, warnings.showwarning
    saved = list(filters)
    stream = LogLines(what)
    try:
        with contextlib.redirect_stdout(stream):
            yield
    finally:
        stream.finish()
        if _put_back(filters, saved, showwarning):
            logger.warning("%s changed the warnings filters (warnings.simplefilter, filterwarnings or showwarning), "
                           "which would hide or raise the harness's own warnings: they are put back; change them "
                           "only inside warnings.catch_warnings()", what)
