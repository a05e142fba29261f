"""Record and sweep-manifest files are read as UTF-8 whatever the machine's locale.

``load_record``'s file reading (``results.record_data``) and the sweep manifest readers (``sweep.manifest`` and
``html_sweep``) called ``Path.read_text()`` without an encoding: on a machine whose locale encoding is not UTF-8
(Windows' cp1252, a latin-1 locale) a record holding a non-ASCII label decoded wrongly or not at all. Python's
``-X warn_default_encoding`` makes every such call raise (``-W error::EncodingWarning``), here on this machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "quickstart"
ROOT = Path(__file__).resolve().parent.parent
STRICT = [sys.executable, "-X", "warn_default_encoding", "-W", "error::EncodingWarning"]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(STRICT + args, capture_output=True, text=True, cwd=cwd, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("command", [["table", "kwta.json"], ["diff", "kwta.json", "relu.json"],
                                     ["report", "kwta.json", "--out", "r.md"]])
def test_record_commands_name_the_encoding(tmp_path: Path, command: list[str]) -> None:
    for name in ("kwta.json", "relu.json"):
        record = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
        record["model"]["label"] = f"{name[:4]}–ß"  # non-ASCII: decoded wrongly under a latin-1 default
        (tmp_path / name).write_text(json.dumps(record), encoding="utf-8")
    done = _run(["-m", "kwta_robust.cli", *command], tmp_path)
    assert "EncodingWarning" not in done.stderr
    assert done.returncode in ((1,) if command[0] == "diff" else (0,)), done.stderr[-2000:]
    shown = done.stdout + ((tmp_path / "r.md").read_text(encoding="utf-8") if command[0] == "report" else "")
    assert ("model.label: 'kwta–ß' != 'relu–ß'" in shown) if command[0] == "diff" else ("kwta–ß" in shown)


def test_sweep_manifest_readers_name_the_encoding(tmp_path: Path) -> None:
    manifest = {"format": "kwta-robust-sweep", "status": "complete", "cells": [], "runs": 1, "note": "ß"}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    code = ("import sys; from pathlib import Path; from kwta_robust.sweep.manifest import read_manifest; "
            "from kwta_robust.html_sweep import MANIFEST, _manifest; "
            "d = Path(sys.argv[1]); (d / MANIFEST).write_bytes((d / 'manifest.json').read_bytes()); "
            "print(read_manifest(d / MANIFEST)['note'], _manifest(d)['note'])")
    done = _run(["-c", code, str(tmp_path)], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["ß", "ß"]
