"""The command line loads lazily: ``import kwta_robust.cli`` and ``kwta-robust --help`` do not import torch (checked in
a fresh interpreter), only the chosen command's module is imported, and every command is still listed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kwta_robust import cli

REPO = Path(__file__).resolve().parents[1]

FRESH = r"""
import contextlib, io, json, sys
import kwta_robust.cli as cli
after_import = "torch" in sys.modules
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
    cli.main(["--help"])
print(json.dumps({"after_import": after_import, "after_help": "torch" in sys.modules, "help": out.getvalue(),
                  "commands": sorted(m for m in sys.modules if m.startswith("kwta_robust.commands."))}))
"""


def test_cli_and_its_help_do_not_import_torch() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", FRESH], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout)
    assert seen["after_import"] is False and seen["after_help"] is False
    assert seen["commands"] == ["kwta_robust.commands.console"]  # no command module for --help
    assert all(f"    {name}" in seen["help"] for name in cli.COMMANDS)  # every command listed with its help text


@pytest.mark.parametrize(("argv", "expected"), [
    (["table", "x.json"], "table"), (["-v", "-q", "sweep", "s.yaml"], "sweep"), (["-vv", "evaluate"], "evaluate"),
    (["--help"], None), ([], None), (["bogus", "train"], None),
])
def test_the_command_is_the_first_word_that_is_not_an_option(argv: list[str], expected: str | None) -> None:
    assert cli.command_named(argv) == expected


def test_only_the_chosen_command_gets_its_options(capsys) -> None:
    parser, modules = cli.build_parser(["table"])
    assert list(modules) == ["table"]
    choices = next(a for a in parser._actions if a.dest == "command").choices
    assert list(choices) == list(cli.COMMANDS)
    assert "--format" in choices["table"]._option_string_actions
    assert "--config" not in choices["evaluate"]._option_string_actions  # listed, not loaded
    assert cli.main(["evaluate", "--config", "x.yaml", "--threads", "-2"]) == 2  # the chosen one parses in full
    assert capsys.readouterr().err.startswith("error: --threads: must be an integer >= 1, or 0")
    with pytest.raises(SystemExit):
        cli.main(["bogus"])
    assert "invalid choice: 'bogus'" in capsys.readouterr().err
