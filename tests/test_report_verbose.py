"""``-v`` did nothing (info is the default level and only ``-vv`` switched to debug): now ``-v`` opens the project's
own loggers (``kwta_robust``, ``attacks``) to debug and ``-vv`` every library's too; ``-q`` wins over both."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from kwta_robust.cli import main
from kwta_robust.commands.console import configure_logging
from test_cli_mutants import bare_root

ROOT = Path(__file__).resolve().parents[1]


def _stderr_lines(flags: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  capsys: pytest.CaptureFixture) -> list[str]:
    """In a fresh process's logging (no root handlers, the own loggers' levels as they were): a torch command that
    logs the heap policy at debug (:func:`kwta_robust.heap.retain_freed_memory`) and stops at its missing checkpoint
    (exit 2), then a debug line of another library under the logging that command set up."""
    bare_root(monkeypatch)
    for name in ("kwta_robust", "attacks"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.getLogger(name).level)
    status = main([*flags, "evaluate", str(tmp_path / "none.pt"), "--config",
                   str(ROOT / "eval_configs" / "mnist5k-full.yaml")])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err, err
    assert err.splitlines()[-1].startswith("error: ")
    logging.getLogger("a_third_party_library").debug("set-up details")
    return err.splitlines() + capsys.readouterr().err.splitlines()


def _debug_loggers(lines: list[str]) -> set[str]:
    return {line.split()[1].rstrip(":").split(".")[0] for line in lines if line.startswith("DEBUG ")}


def test_one_v_logs_the_packages_debug_lines_and_two_every_librarys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture) -> None:
    default, one, two = (_stderr_lines(flags, tmp_path, monkeypatch, capsys) for flags in ([], ["-v"], ["-vv"]))
    assert _debug_loggers(default) == set()
    assert any(line.startswith("DEBUG kwta_robust.heap: heap: ") for line in one)
    assert _debug_loggers(one) == {"kwta_robust"}  # the other library's debug line is not among them
    assert any(line.startswith("DEBUG kwta_robust.heap: heap: ") for line in two)
    assert "DEBUG a_third_party_library: set-up details" in two


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

