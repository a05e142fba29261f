"""A plug-in's output inside :func:`attacks.plugin_isolation.isolated` (its import, an attack's call, a check):
before, ``sys.stdout`` there had no ``buffer`` (a plug-in writing bytes, which works outside the harness, raised
``AttributeError`` and its attack failed) nor ``reconfigure``, and a printed terminal code (``ESC[2J``) or binary
garbage went raw into the log on the user's terminal."""

from __future__ import annotations

import logging
import sys

import pytest

from attacks.plugin_isolation import isolated


def printed(caplog: pytest.LogCaptureFixture, what: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{what} printed: ")]


def test_bytes_written_to_stdout_buffer_are_logged_as_text(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO), isolated("attack 'bytes'"):
        assert sys.stdout.buffer.write(b"caf\xc3") == 4  # "é" split over two writes
        sys.stdout.buffer.write(b"\xa9 \xff end\nlast")
    assert printed(caplog, "attack 'bytes'") == ["attack 'bytes' printed: café \ufffd end",
                                                 "attack 'bytes' printed: last"]


def test_reconfigure_is_accepted(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO), isolated("attack 'reconf'"):
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        print("after")
    assert printed(caplog, "attack 'reconf'") == ["attack 'reconf' printed: after"]


def test_control_characters_are_logged_as_escapes(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO), isolated("check 'garbage'"):
        print("\x1b[2Jcleared\x00\tbell\x07 \udcff ok")
    assert printed(caplog, "check 'garbage'") == ["check 'garbage' printed: \\x1b[2Jcleared\\x00\tbell\\x07 \\udcff ok"]
