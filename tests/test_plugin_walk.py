"""A researcher's own attack and BPDA surrogate, plugged in as the README says (persona walk 5).

Two entries of one plug-in attack in a config are told apart by their labels: an error or warning about a
misbehaving one names its label and the threat point (it named the registered attack alone, the same for every
label, and no threat point). A surrogate plug-in is written with the public ``attacks.bpda.switched_plan`` (its only
route was the private ``_switched``), as the README's surrogate example shows, which runs here as written. A name
clashing with a built-in says which registration to rename (it said "rename one of them", and a built-in cannot
be)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from attacks.base import REGISTRY, register_attack
from attacks.bpda import SURROGATES, switched_plan
from kwta_robust.api import evaluate_model
from kwta_robust.errors import ConfigError
from kwta_robust.results import load_record

ROOT = Path(__file__).resolve().parents[1]


def _bug(mode: str, x: Tensor, eps: float) -> Tensor:
    if mode == "shape":
        return x.flatten(1)
    if mode == "raise" and eps > 0.15:
        raise RuntimeError("blew up")
    if mode == "nan":
        return x.clone().index_fill_(0, torch.tensor([0]), float("nan"))
    if mode == "inplace":
        return x.add_(2 * eps).clamp_(0, 1)  # moved in place, then returned: outside the ball
    return x.clone()


@pytest.fixture
def walk_bug() -> Any:
    """``walk-bug``, registered as a script registers it: returns ``x`` or misbehaves as ``mode`` says."""
    with REGISTRY.preserved():
        @register_attack("walk-bug", norms=("linf",), kind="white-box")
        def make(seed: int = 0, mode: str = "ok"):
            """returns its input, or misbehaves on request"""
            def attack(model: nn.Module, x: Tensor, y: Tensor, threat: Any) -> Tensor:
                return _bug(mode, x, float(threat.eps))
            attack.name = "walk-bug"
            return attack
        yield


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).eval()


def _run(modes: list[str], out: Path | None = None) -> Any:
    net = _net()
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    config = {"n_examples": 8, "seed": 0, "mode": "independent",
              "threats": [{"norm": "linf", "epsilons": [0.1, 0.2]}], "diagnostics": {"enabled": False},
              "attacks": [{"attack": "walk-bug", "label": f"bug-{m}", "params": {"mode": m}} for m in modes]}
    with torch.no_grad():
        y = net(x).argmax(1)
    return evaluate_model(net, config, x, y, threads=1, out_path=out)


@pytest.mark.parametrize("mode, words", [
    ("shape", "attack 'bug-shape' at Linf 0.1 returned (8, 64), expected a tensor of shape (8, 1, 8, 8)"),
    ("raise", "attack 'bug-raise' at Linf 0.2 raised RuntimeError: blew up (at "),
])
def test_an_error_names_the_label_and_the_threat_point(walk_bug: None, tmp_path: Path, mode: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _run(["ok", mode], tmp_path / "r.json")
    assert words in str(caught.value) and "walk-bug" not in str(caught.value)
    if mode == "raise":  # the units before the failure stay in the partial record
        kept = [(r.label, r.eps) for r in load_record(tmp_path / "r.json").results]
        assert kept == [("bug-ok", 0.1), ("bug-raise", 0.1), ("bug-ok", 0.2)]


def test_a_warning_names_the_label_and_the_threat_point(walk_bug: None, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        record = _run(["ok", "inplace"])
    assert "attack 'bug-inplace' at Linf 0.1 changed its input x in place" in caplog.text
    assert "attack bug-inplace: 8 of 8 outputs lay outside the Linf 0.2 ball" in caplog.text
    assert [r.violations for r in record.results] == [0, 8, 0, 8]


def test_a_surrogate_plugin_map_is_what_bpda_differentiates() -> None:
    """``switched_plan`` with a map per target layer: BPDA's inner attack runs through the map (the relaxation a
    plug-in chose), so its result differs from straight-through's on the same model, seed and samples."""
    calls: list[int] = []

    def soft(h: Tensor) -> Tensor:
        calls.append(h.shape[0])
        t = h.topk(4, dim=1).values[:, -1:].detach()
        return h * torch.sigmoid((h - t) / (0.3 * h.std(dim=1, keepdim=True) + 1e-6))

    class Top4(nn.Module):
        def forward(self, h: Tensor) -> Tensor:
            return h * (h >= h.topk(4, dim=1).values[:, -1:])

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 16), Top4(), nn.Linear(16, 3)).eval()
    x = torch.rand(12, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = net(x).argmax(1)

    def config(surrogate: str) -> dict:
        return {"n_examples": 12, "threats": [{"norm": "linf", "epsilons": [0.05]}], "diagnostics": {"enabled": False},
                "attacks": [{"attack": "bpda", "params": {"surrogate": surrogate, "inner_params": {"steps": 5}}}]}
    with SURROGATES.temporarily("walk-soft", lambda a, m, t, xb, th: switched_plan(m, t, {n: soft for n in t})):
        mine = evaluate_model(net, config("walk-soft"), x, y, threads=1).results[0]
    straight = evaluate_model(net, config("identity"), x, y, threads=1).results[0]
    assert calls and mine.bpda_layers == straight.bpda_layers == {"2": "wrapped gate/dense"}
    assert mine.margins != straight.margins


def test_readme_surrogate_example_runs_as_written(capsys: pytest.CaptureFixture) -> None:
    match = re.search(r"<!-- surrogate-example -->\n```python\n(.*?)```\n<!-- /surrogate-example -->",
                      (ROOT / "README.md").read_text(), re.S)
    assert match, "README.md: the surrogate example between its markers is missing"
    with SURROGATES.preserved():
        namespace: dict = {"__name__": "readme_surrogate_example"}
        exec(compile(match.group(1), "README.md (surrogate example)", "exec"), namespace)
        record = namespace["record"]
        assert record.results[0].label == "bpda-mine" and record.results[0].bpda_layers == {"2": "wrapped gate/dense"}
        assert record.provenance["plugins"]["surrogates"]["my-soft"]["source"] == "readme_surrogate_example"
    assert "my-soft" not in SURROGATES
    assert "'my-soft': {'source': 'readme_surrogate_example'" in capsys.readouterr().out


def test_a_name_clashing_with_a_built_in_says_which_one_to_rename() -> None:
    """A built-in is never replaced, so "rename one of them" (the old advice) named no fix the user can make."""
    with REGISTRY.preserved(), pytest.raises(ConfigError) as caught:
        register_attack("pgd", norms=("linf",))(lambda seed=0: None)
    assert str(caught.value).endswith(f"attack 'pgd' is registered twice (attacks.gradient and {__name__}); rename "
                                      f"the one in {__name__} (a built-in name is never replaced)")
    assert REGISTRY.info("pgd").source == "attacks.gradient"


def test_a_warning_on_nan_outputs_says_so(walk_bug: None, caplog: pytest.LogCaptureFixture) -> None:
    """It said "(max excess inf)" alone: the NaN only showed in the flag's note after the run."""
    with caplog.at_level(logging.WARNING):
        record = _run(["nan"])
    assert ("attack bug-nan: 1 of 8 outputs lay outside the Linf 0.1 ball or the bounds [0, 1] (max excess inf; 1 with "
            "NaN or infinite entries, replaced by the clean input's)") in caplog.text
    assert [r.violations for r in record.results] == [1, 1]
