"""``-v`` did nothing (info is the default level and only ``-vv`` switched to debug): now ``-v`` opens the project's
own loggers (``kwta_robust``, ``attacks``) to debug and ``-vv`` every library's too; ``-q`` wins over both."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from kwta_robust.cli import build_parser
from kwta_robust.commands.console import configure_logging
from test_cli_mutants import bare_root

ROOT = Path(__file__).resolve().parents[1]


def _stderr_lines(flags: list[str], tmp_path: Path) -> list[str]:
    """A torch command that logs the heap policy at debug (:func:`kwta_robust.heap.retain_freed_memory`), imports
    matplotlib (which logs its set-up at debug) and then stops at its missing checkpoint: exit 2."""
    run = subprocess.run([sys.executable, "-m", "kwta_robust.cli", *flags, "evaluate", str(tmp_path / "none.pt"),
                          "--config", str(ROOT / "eval_configs" / "mnist5k-full.yaml")],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.splitlines()[-1].startswith("error: ")
    return run.stderr.splitlines()


def _debug_loggers(lines: list[str]) -> set[str]:
    return {line.split()[1].rstrip(":").split(".")[0] for line in lines if line.startswith("DEBUG ")}


def test_one_v_logs_the_packages_debug_lines_and_two_every_librarys(tmp_path: Path) -> None:
    default, one, two = (_stderr_lines(flags, tmp_path) for flags in ([], ["-v"], ["-vv"]))
    assert _debug_loggers(default) == set()
    assert any(line.startswith("DEBUG kwta_robust.heap: heap: ") for line in one)
    assert _debug_loggers(one) == {"kwta_robust"}  # matplotlib's set-up lines are not among them
    assert any(line.startswith("DEBUG kwta_robust.heap: heap: ") for line in two)
    assert "matplotlib" in _debug_loggers(two)


@pytest.mark.parametrize(("verbose", "quiet", "own", "other"), [
    (0, False, logging.INFO, logging.INFO), (1, False, logging.DEBUG, logging.INFO),
    (2, False, logging.DEBUG, logging.DEBUG), (1, True, logging.WARNING, logging.WARNING)])
def test_each_level_is_distinct(monkeypatch: pytest.MonkeyPatch, verbose: int, quiet: bool, own: int,
                                other: int) -> None:
    bare_root(monkeypatch)
    for name in ("kwta_robust", "attacks"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.getLogger(name).level)
    configure_logging(verbose, quiet)
    for name in ("kwta_robust.report", "attacks.gradient"):
        assert logging.getLogger(name).getEffectiveLevel() == own
    assert logging.getLogger("a_third_party_library").getEffectiveLevel() == other
    configure_logging(0, False)  # a second call does not inherit the first one's -v (the root keeps its level)
    assert logging.getLogger("kwta_robust.report").getEffectiveLevel() == other


def test_the_help_says_what_each_flag_does() -> None:
    options = build_parser([])[0]._option_string_actions
    assert options["--verbose"].help == ("info is logged by default; -v adds kwta-robust's own debug lines "
                                         "(kwta_robust, attacks); -vv every library's too (torch, matplotlib, ...)")
    assert options["--quiet"].help == "only warnings and errors (wins over -v)"
