"""A plug-in writing past ``sys.stdout`` at import (``sys.__stdout__``, file descriptor 1) leaves
``kwta-robust plugins --json`` exactly what its quiet twin lists
(:func:`kwta_robust.commands.console.output_only_stdout` around the registries' loading; its ``print`` was already
logged, tests/test_plugin_isolation.py).

Before: the bytes written to fd 1 came first on stdout, and the JSON did not parse."""

from __future__ import annotations

from pathlib import Path

from test_plugin_isolation import QUIET
from test_stdout_model_prints import clis

LOUD = QUIET.replace("# NOISE-AT-IMPORT", 'import os, sys\nos.write(1, b"DEBUG fd 1 at import\\n")\n'
                                          'sys.__stdout__.write("DEBUG __stdout__ at import\\n")')


def test_plugins_json_of_a_plugin_writing_to_fd_1_is_its_quiet_twins(tmp_path: Path) -> None:
    argv = ["plugins", "--json", "attacks"]
    (quiet, _), (loud, err) = clis((tmp_path / "quiet", QUIET, argv), (tmp_path / "loud", LOUD, argv))
    assert loud == quiet and {r["name"]: r["distribution"] for r in loud}["chatty-fgsm"] == "chatty-kwta-plugin"
    assert {"DEBUG fd 1 at import", "DEBUG __stdout__ at import"} <= set(err.splitlines())
