"""SIGTERM ends a command as Ctrl-C does (``cli._terminated``): status 130 and the one ``interrupted`` line. A
SIGTERM that arrives as the command's work ends — it finished, or failed with its one-line error — is still pending
when ``main`` puts the previous handler back, and ``signal.signal`` runs pending handlers before it swaps them: the
KeyboardInterrupt came out of ``main``'s ``finally``, past its ``except KeyboardInterrupt``, so the process printed a
traceback and ended by SIGINT (status -2). tests/test_locks.py's terminated evaluation once exited so under load.
Here the signal is sent from inside that restore, deterministically, in a child process (a KeyboardInterrupt
escaping into pytest would end the whole session)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", "OMP_NUM_THREADS": "1"}

# The handler main() installs is swapped back once: a SIGTERM sent at that moment (once) is pending there
CHILD = """
import os, signal, sys
from kwta_robust import cli

real, sent = signal.signal, []

def restoring(signum, handler):
    if signum == signal.SIGTERM and handler is not cli._terminated and not sent:
        sent.append(signum)
        os.kill(os.getpid(), signal.SIGTERM)  # the command's work is over: main is putting the old handler back
    return real(signum, handler)

signal.signal = restoring
status = cli.main(sys.argv[1:])
print("handler after main:", signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, file=sys.stderr)
sys.exit(status)
"""


@pytest.mark.parametrize("argv", [["plugins"],  # the work finished (status 0 otherwise)
                                  ["table", "no-such-record.json"]])  # the work failed (its one line, status 2)
def test_a_sigterm_as_the_command_ends_exits_as_interrupted(tmp_path: Path, argv: list[str]) -> None:
    done = subprocess.run([sys.executable, "-c", CHILD, *argv], cwd=tmp_path, env=ENV, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 130, done.stderr  # session 49: -2 (SIGINT), a KeyboardInterrupt traceback
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-2:] == ["interrupted: nothing was saved",  # plugins and table save nothing, resume nothing
                          "handler after main: True"]
