"""What the README's Architecture section says of the runner and the layering, where no other test said it: an
attack's ``x_adv`` on another device and a parameter it changed (put back first) are one line naming the attack;
``-v`` logs the traceback of an attack that raised or called ``sys.exit``; the HTML report's provenance names the
plug-ins; the pruning library never imports the training code."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import Tensor, nn

from kwta_robust.api import evaluate_model
from kwta_robust.errors import KwtaRobustError
from kwta_robust.html_records import provenance_section
from tests.test_architecture import graph
from tests.test_plugins_fuzz import MODES, _config, _data, _global_state, _net, hostile  # noqa: F401 (the fixture)


class _Boom(Exception):
    pass


def _raise(x: Tensor) -> Tensor:
    raise _Boom("inside the plug-in")


def _exit(x: Tensor) -> Tensor:
    raise SystemExit(4)


def _bump(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        model[1].bias.add_(1.0)
    return x.clone()


@pytest.fixture
def modes(monkeypatch: pytest.MonkeyPatch) -> None:
    """More ways for the ``hostile`` plug-in attack to misbehave."""
    monkeypatch.setitem(MODES, "meta", lambda m, x, y: x.clone().to("meta"))
    monkeypatch.setitem(MODES, "bump", lambda m, x, y: _bump(m, x))
    monkeypatch.setitem(MODES, "boom", lambda m, x, y: _raise(x))
    monkeypatch.setitem(MODES, "exit", lambda m, x, y: _exit(x))


def test_an_x_adv_on_another_device_is_one_line_naming_the_attack(hostile: None, modes: None) -> None:
    net = _net()
    x, y = _data(net)
    before = _global_state()
    with pytest.raises(KwtaRobustError) as caught:
        evaluate_model(net, _config("meta"), x, y, threads=1)
    message = str(caught.value)
    assert "attack 'hostile' at Linf 0.1 returned torch.float32 on meta, expected torch.float32 on cpu" in message
    assert "\n" not in message and _global_state() == before


def test_a_parameter_an_attack_changed_is_named_and_put_back(hostile: None, modes: None) -> None:
    net = _net()
    x, y = _data(net)
    bias = net[1].bias.detach().clone()
    with pytest.raises(KwtaRobustError) as caught:
        evaluate_model(net, _config("bump"), x, y, threads=1)
    assert "attack 'hostile' at Linf 0.1 changed the model's '1.bias'" in str(caught.value)
    assert torch.equal(net[1].bias.detach(), bias)  # the bump of 1.0 on every entry is undone


@pytest.mark.parametrize("mode, words, raised", [
    ("boom", "attack 'hostile' at Linf 0.1 raised _Boom: inside the plug-in (at ", _Boom),
    ("exit", "attack 'hostile' at Linf 0.1 called sys.exit(4) on a batch of 6 samples", SystemExit),
])
def test_minus_v_logs_the_traceback_of_an_attack_that_failed(hostile: None, modes: None, mode: str, words: str,
                                                              raised: type, caplog: pytest.LogCaptureFixture) -> None:
    net = _net()
    x, y = _data(net)
    with caplog.at_level(logging.DEBUG, logger="attacks.cascade"), pytest.raises(KwtaRobustError) as caught:
        evaluate_model(net, _config(mode), x, y, threads=1)
    message = str(caught.value)
    assert words in message and message.endswith("(-v logs the traceback)")
    logged = [r for r in caplog.records if r.levelno == logging.DEBUG and r.exc_info is not None]
    assert [type(r.exc_info[1]) for r in logged] == [raised]
    if mode == "boom":
        assert "test_readme_arch.py:" in message  # where the plug-in raised


def test_the_html_provenance_names_the_plugins_of_the_run(hostile: None) -> None:
    net = _net()
    x, y = _data(net)
    record = evaluate_model(net, _config("ok"), x, y, threads=1)
    assert record.provenance["plugins"]["attacks"]["hostile"]["source"] == "tests.test_plugins_fuzz"
    body = str(provenance_section([record]).body)
    assert "plugins" in body and "hostile" in body and "tests.test_plugins_fuzz" in body


def test_the_pruning_library_never_imports_training_or_evaluation() -> None:
    """``sparsity/`` trains only through the ``SegmentTrainer`` it is handed: no edge to the training code, the
    runner, the loaders or the command line (``kwta_robust.training.pruning`` provides the trainer)."""
    edges = graph()
    above = ("kwta_robust.training", "kwta_robust.evaluate", "kwta_robust.loading", "kwta_robust.runs",
             "kwta_robust.cli", "kwta_robust.commands", "kwta_robust.sweep")
    found = {name: sorted(t for t in targets if t.startswith(above)) for name, targets in edges.items()
             if name.startswith("kwta_robust.sparsity")}
    assert len(found) >= 10 and {name: t for name, t in found.items() if t} == {}
    assert "kwta_robust.sparsity.segments" in edges["kwta_robust.training.pruning"]
