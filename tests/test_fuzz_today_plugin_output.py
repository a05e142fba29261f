"""A plug-in's output inside :func:`attacks.plugin_isolation.isolated` (its import, an attack's call, a check):
before, ``sys.stdout`` there had no ``buffer`` (a plug-in writing bytes, which works outside the harness, raised
``AttributeError`` and its attack failed) nor ``reconfigure``, and a printed terminal code (``ESC[2J``) or binary
garbage went raw into the log on the user's terminal."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from attacks.plugin_isolation import isolated
from test_plugin_isolation import QUIET, cli, installed


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


def test_a_plugin_writing_bytes_at_import_is_listed_as_its_quiet_twin(tmp_path: Path) -> None:
    with installed(tmp_path / "quiet", QUIET):
        status, quiet, _ = cli("plugins", "--json", "attacks")
    assert status == 0
    binary = QUIET.replace("# NOISE-AT-IMPORT", "import sys\nsys.stdout.buffer.write(b'\\\\xff\\\\x00 binary garbage')")
    with installed(tmp_path / "binary", binary):
        status, out, err = cli("plugins", "--json", "attacks")
    assert status == 0 and out == quiet and "Traceback" not in err  # loaded (not skipped), stdout still the JSON
    assert {r["name"]: r["distribution"] for r in json.loads(out)}["chatty-fgsm"] == "chatty-kwta-plugin"
