"""A user's model that prints, and code writing past ``sys.stdout`` (``sys.__stdout__``, file descriptor 1, a C
``printf``), leave the command line's stdout exactly what its quiet twin prints
(:func:`kwta_robust.commands.console.output_only_stdout`; the dry run and compare:
tests/test_stdout_dry_run_compare.py).

Before: only an attack's call was isolated (:mod:`attacks.plugin_isolation`); the model's prints in the clean pass,
the layer probe, the model checks, the dry run and compare's class check, and every write to fd 1 even inside an
attack, came before the JSON of ``evaluate --format json``, which then did not parse."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

import pytest
import torch
import yaml
from torch import nn

from kwta_robust.commands.console import MODEL_CODE, output_only_stdout
from test_plugin_isolation import QUIET, installed

ROOT = Path(__file__).resolve().parents[1]

#: The plug-in module of test_plugin_isolation plus a model around its ``make_net`` that prints when LOUD; the
#: loud twin's attack also writes to fd 1 on every call.
MODEL = '''
import ctypes
import os
import sys

LOUD = {loud}


class Printing(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = make_net()

    def forward(self, x):
        if LOUD:
            print("DEBUG forward", tuple(x.shape))
            sys.__stdout__.write("DEBUG __stdout__\\n")
            os.write(1, b"DEBUG fd 1\\n")
            ctypes.CDLL(None).printf(b"DEBUG printf\\n")
        return self.body(x)


def printing_net(num_classes: int = 10) -> nn.Module:
    if LOUD:
        print("DEBUG factory")
    return Printing()
'''
LOUD = QUIET.replace("# NOISE-AT-CALL", 'os.write(1, b"DEBUG attack fd 1\\n")') + MODEL.format(loud=True)
SILENT = QUIET + MODEL.format(loud=False)


def write_inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The evaluation config, the data (labelled by the model: every sample is attacked) and the model's weights."""
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)  # the plug-in's make_net
    body = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    torch.save({"x": x, "y": body(x).argmax(dim=1).detach()}, tmp_path / "data.pt")
    torch.save({f"body.{k}": v for k, v in body.state_dict().items()}, tmp_path / "weights.pt")
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump({
        "dataset": "mnist5k", "n_examples": 6, "batch_size": 6, "device": "cpu", "seed": 0,
        "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": [{"attack": "chatty-fgsm"}], "noise": [],
        "diagnostics": {"enabled": False}}))
    return tmp_path / "eval.yaml", tmp_path / "data.pt", tmp_path / "weights.pt"


def cli(folder: Path, source: str, *argv: str) -> tuple[Any, str]:
    """The JSON a command printed on stdout, without its wall times, and its stderr; run in a fresh process with
    ``source`` installed as the plug-in; its C ``printf`` and ``sys.__stdout__`` buffered, as in a user's run."""
    return clis((folder, source, argv))[0]


def clis(*runs: tuple[Path, str, Sequence[str]]) -> list[tuple[Any, str]]:
    """:func:`cli` of each ``(folder, source, argv)``, the processes run side by side (most of each one's time is
    torch's import)."""
    with contextlib.ExitStack() as stack:
        started = []
        for folder, source, argv in runs:
            stack.enter_context(installed(folder, source))
            env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # else C's stdio is unbuffered too
            env.update(PYTHONPATH=f"{ROOT}{os.pathsep}{folder}", OMP_NUM_THREADS="1")
            started.append(subprocess.Popen([sys.executable, "-m", "kwta_robust.cli", *argv], env=env,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        finished = []
        for process in started:
            try:
                out, err = process.communicate(timeout=120)
            finally:
                process.kill()  # (a no-op once it has exited)
            finished.append((process.returncode, out, err))
    return [_output(*done) for done in finished]


def _output(returncode: int, stdout: str, stderr: str) -> tuple[Any, str]:
    assert returncode == 0 and "Traceback" not in stderr, stderr
    assert "DEBUG" not in stdout
    table = json.loads(stdout)
    for row in table.get("rows", []) if isinstance(table, dict) else []:
        row.pop("time (s)", None)  # wall time: differs between any two runs
    return table, stderr


def test_evaluate_json_of_a_printing_model_is_its_silent_twins(tmp_path: Path) -> None:
    config, data, weights = write_inputs(tmp_path)
    args = ["evaluate", "--model-factory", "chatty_kwta_plugin:printing_net", "--weights", str(weights),
            "--config", str(config), "--data", str(data), "--no-progress", "--format", "json"]
    (silent, _), (loud, err) = clis((tmp_path / "silent", SILENT, [*args, "--out", str(tmp_path / "silent.json")]),
                                    (tmp_path / "loud", LOUD, [*args, "--out", str(tmp_path / "loud.json")]))
    assert loud == silent
    assert [(row["attack"], row["attacked"]) for row in loud["rows"]] == [("clean", 6), ("chatty-fgsm", 6),
                                                                           ("worst case", None)]
    # on stderr instead: logged where Python's stdout was written, as is where fd 1 was
    assert f"INFO attacks.plugin_isolation: {MODEL_CODE} printed: DEBUG factory" in err
    assert f"INFO attacks.plugin_isolation: {MODEL_CODE} printed: DEBUG forward (1, 1, 8, 8)" in err
    assert {"DEBUG __stdout__", "DEBUG fd 1", "DEBUG printf", "DEBUG attack fd 1"} <= set(err.splitlines())


def test_fd_1_and_sys_stdout_are_put_back_also_after_an_error(capfd: pytest.CaptureFixture[str]) -> None:
    os.write(1, b"before\n")
    with pytest.raises(ValueError, match="the model's own"):
        with output_only_stdout():
            os.write(1, b"inside\n")
            raise ValueError("the model's own")
    os.write(1, b"after\n")
    sys.stdout.write("the output\n")
    out, err = capfd.readouterr()
    assert out == "before\nafter\nthe output\n" and err == "inside\n"
