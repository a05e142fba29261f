"""A plug-in that prints or changes the warnings filters, at import or while it runs (attacks.plugin_isolation):
the command line's stdout stays exactly what it is with a quiet twin of the plug-in, the warnings filters are as
they were, and the log names the plug-in.

Before: ``kwta-robust plugins --json`` began with the plug-in's printed line (no longer JSON), and a plug-in's
``warnings.simplefilter("ignore")`` at import or inside its attack stayed in force for the rest of the process."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Iterator

import pytest
import torch
import yaml
from torch import nn

from attacks.base import REGISTRY
from attacks.plugin_isolation import isolated
from kwta_robust.cli import main

QUIET = '''
"""An attack plug-in; NOISE marks where the noisy twin prints and changes the warnings filters."""
import warnings

import torch
from torch import nn

from attacks.base import begin_attack, eval_mode, frozen_parameters, input_gradient, register_attack

# NOISE-AT-IMPORT


def make_net(num_classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))


@register_attack("chatty-fgsm", norms=("linf",), kind="white-box", single_step=True)
class ChattyFGSM:
    """one signed-gradient step"""

    def __init__(self, seed: int = 0) -> None:
        self.name = "chatty-fgsm"

    def __call__(self, model, x, y, threat):
        begin_attack(self.name, ("linf",), model, x, y, threat)
        # NOISE-AT-CALL
        with eval_mode(model), frozen_parameters(model):
            xr = x.clone().requires_grad_(True)
            step = threat.eps * input_gradient(nn.functional.cross_entropy(model(xr), y), xr).sign()
        return (x + step).clamp(0, 1)
'''


def noisy(action: str) -> str:
    """The twin that prints at import and in every call and sets ``warnings.simplefilter(action)`` at both."""
    return (QUIET.replace("# NOISE-AT-IMPORT", f"print('chatty plug-in loaded')\nwarnings.simplefilter({action!r})")
            .replace("# NOISE-AT-CALL", f"print('attacking', len(x), 'samples', end='')\n"
                                        f"        warnings.simplefilter({action!r})"))


@contextlib.contextmanager
def installed(folder: Path, source: str) -> Iterator[None]:
    """``chatty-kwta-plugin 1.0`` with ``source`` as its module, installed as pip leaves it and found afresh; the
    attack registry and sys.path as they were afterwards."""
    folder.mkdir()
    (folder / "chatty_kwta_plugin.py").write_text(source)
    info = folder / "chatty_kwta_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: chatty-kwta-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[kwta_robust.attacks]\nchatty = chatty_kwta_plugin\n")
    with REGISTRY.preserved():  # discovers first, before the plug-in is on sys.path: else its entry was kept after
        sys.path.insert(0, str(folder))
        try:
            yield
        finally:
            sys.path.remove(str(folder))
            sys.modules.pop("chatty_kwta_plugin", None)


def cli(*argv: str) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of one command (the registry searched for plug-ins afresh first, inside the
    captured stdout: a plug-in's print at import would land in the command's output)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        REGISTRY.discover(refresh=True)
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def without_times(table: str) -> list[list[str]]:
    """The rows of a CSV table without its ``time (s)`` column (wall time differs between any two runs)."""
    rows = list(csv.reader(io.StringIO(table)))
    keep = [i for i, name in enumerate(rows[0]) if name != "time (s)"] if rows else []
    return [[row[i] for i in keep if i < len(row)] for row in rows]


def test_a_plugin_printing_at_import_leaves_the_json_listing_as_its_quiet_twin_does(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with installed(tmp_path / "quiet", QUIET):
        status, quiet, _ = cli("plugins", "--json", "attacks")
    assert status == 0
    with installed(tmp_path / "noisy", noisy("ignore")), caplog.at_level(logging.INFO):
        filters = list(warnings.filters)
        status, out, err = cli("plugins", "--json", "attacks")
        assert warnings.filters == filters  # the plug-in's simplefilter("ignore") was put back
    assert status == 0 and out == quiet and "Traceback" not in err
    assert {r["name"]: r["distribution"] for r in json.loads(out)}["chatty-fgsm"] == "chatty-kwta-plugin"
    origin = "attack plug-in 'chatty' of chatty-kwta-plugin 1.0 (entry point kwta_robust.attacks: chatty = " \
             "chatty_kwta_plugin)"
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert ("INFO", f"{origin} printed: chatty plug-in loaded") in messages
    assert any(level == "WARNING" and m.startswith(f"{origin} changed the warnings filters") for level, m in messages)


@pytest.mark.parametrize("action", ["ignore", "error"])
def test_the_warnings_filters_are_put_back_after_the_import(tmp_path: Path, action: str) -> None:
    with installed(tmp_path / action, noisy(action)):
        filters = list(warnings.filters)
        REGISTRY.discover(refresh=True)
        assert REGISTRY.info("chatty-fgsm").plugin is not None  # loaded, not skipped
        assert warnings.filters == filters
        with pytest.warns(UserWarning, match="the harness's own"):  # shown, neither hidden nor raised
            warnings.warn("the harness's own", UserWarning)


def test_an_attack_printing_while_it_runs_leaves_the_table_as_its_quiet_twin_does(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)  # the plug-in's make_net: its predictions are the labels, so every sample is attacked
    torch.save({"x": x, "y": nn.Sequential(nn.Flatten(), nn.Linear(64, 10))(x).argmax(dim=1).detach()},
               tmp_path / "data.pt")
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump({
        "dataset": "mnist5k", "n_examples": 6, "batch_size": 6, "device": "cpu", "seed": 0,
        "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": [{"attack": "chatty-fgsm"}], "noise": [],
        "diagnostics": {"enabled": False}}))
    outputs = []
    for name, source in (("quiet", QUIET), ("noisy", noisy("ignore"))):
        with installed(tmp_path / name, source), caplog.at_level(logging.INFO):
            filters = list(warnings.filters)
            status, out, err = cli("evaluate", "--model-factory", "chatty_kwta_plugin:make_net", "--config",
                                   str(tmp_path / "eval.yaml"), "--data", str(tmp_path / "data.pt"), "--out",
                                   str(tmp_path / f"{name}.json"), "--no-progress", "--format", "csv")
            assert warnings.filters == filters
        assert status == 0 and "Traceback" not in err, err
        outputs.append(without_times(out))
    assert outputs[0] == outputs[1] and any("chatty-fgsm" in row for row in outputs[1])
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    # the line's end without a newline: logged too
    assert ("INFO", "attack 'chatty-fgsm' at Linf 0.1 (or the model it ran) printed: attacking 6 samples") in messages
    assert any(level == "WARNING" and m.startswith("attack 'chatty-fgsm' at Linf 0.1 (or the model it ran) changed "
                                                   "the warnings filters")
               for level, m in messages)


def test_a_change_put_back_by_the_plugin_itself_passes_unnoticed(caplog: pytest.LogCaptureFixture) -> None:
    filters = list(warnings.filters)
    with caplog.at_level(logging.INFO), isolated("check 'tidy'"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
    with pytest.raises(KeyError), isolated("check 'raising'"):  # put back when it raises, too
        warnings.simplefilter("error")
        raise KeyError("boom")
    assert warnings.filters == filters
    assert [r.getMessage() for r in caplog.records if "'tidy'" in r.getMessage()] == []
