"""A researcher's own plug-ins, from another distribution: found through the entry point groups (a fake
``*.dist-info`` on sys.path, as pip leaves an install), run from a YAML config by the CLI and through the Python API,
listed by ``kwta-robust plugins`` and named with their distribution and version in the record. Plug-ins that
misbehave end in one error line or a correct verdict, never a traceback or a wrong number."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml

from attacks.base import REGISTRY, register_attack
from attacks.noise import NOISE_PROBES
from kwta_robust.api import evaluate_model
from kwta_robust.cli import main
from kwta_robust.diagnostics import CHECKS, CheckInfo, run_checks
from kwta_robust.errors import ConfigError, RegistryError
from kwta_robust.plugins import KINDS, plugin_provenance
from kwta_robust.results import EvalRecord, Flag, load_record

ROOT = Path(__file__).resolve().parents[1]
DIST = "fake-kwta-plugin"
ORIGIN = {"source": "fake_kwta_plugin", "distribution": DIST, "version": "0.3",
          "entry_point": "kwta_robust.attacks: fake-fgsm = fake_kwta_plugin"}

PLUGIN = '''
"""A researcher's attack, noise probe, check and model, in a package of their own."""
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from attacks.base import begin_attack, eval_mode, frozen_parameters, input_gradient, register_attack
from kwta_robust.diagnostics import register_check
from kwta_robust.results import Flag


def make_net(num_classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, num_classes))


@register_attack("fake-fgsm", norms=("linf",), kind="white-box", single_step=True)
class FakeFGSM:
    """one signed-gradient step, misbehaving on request"""

    def __init__(self, seed: int = 0, mode: str = "ok") -> None:
        self.name, self.mode = "fake-fgsm", mode

    def __call__(self, model, x, y, threat):
        begin_attack(self.name, ("linf",), model, x, y, threat)
        with eval_mode(model), frozen_parameters(model):
            xr = x.clone().requires_grad_(True)
            step = threat.eps * input_gradient(nn.functional.cross_entropy(model(xr), y), xr).sign()
        if self.mode == "shape":
            return x[:, :, :-1]
        if self.mode == "dtype":
            return (x + step).double()
        if self.mode == "list":
            return (x + step).tolist()
        if self.mode == "raise":
            raise KeyError("boom in the plug-in")
        if self.mode == "train":
            model.train()
        if self.mode == "mutate":
            with torch.no_grad():
                model[1].bias.add_(1.0)
        if self.mode == "rng":
            torch.rand(5)
        if self.mode == "outside":
            return x + 3 * step
        if self.mode == "nan":
            out = x + step
            out[0] = float("nan")
            return out
        return x + step


def plain_attack(seed=0):
    """not decorated: its entry point is refused"""


@dataclass(frozen=True)
class Stripes:
    """scales the input down by the level (or returns NaN)"""

    mode: str = "ok"
    name: ClassVar[str] = "stripes"
    level_name: ClassVar[str] = "fraction"
    max_level: ClassVar[float] = 1.0

    def apply(self, x, level, generator, bounds):
        return x * float("nan") if self.mode == "nan" else x * (1 - level)

    def default_levels(self):
        return (0.0, 0.5)


@register_check("fake-check", "counts the results")
def fake_check(record, thresholds):
    return [Flag("fake-check", "info", f"{len(record.results)} results")]
'''

ENTRY_POINTS = """\
[kwta_robust.attacks]
fake-fgsm = fake_kwta_plugin
fake-plain = fake_kwta_plugin:plain_attack
fake-adaptive = fake_kwta_adaptive
fake-collide = fake_kwta_collide
fake-missing = fake_kwta_not_installed
[kwta_robust.noise_probes]
stripes = fake_kwta_plugin:Stripes
[kwta_robust.diagnostics]
fake-check = fake_kwta_plugin
"""
MODULES = {
    "fake_kwta_plugin": PLUGIN,
    "fake_kwta_adaptive": "from attacks.base import register_attack\n\n\n"
                          "@register_attack('fake-adaptive', kind='adaptive')\ndef make(seed=0):\n    pass\n",
    "fake_kwta_collide": "from attacks.base import register_attack\n\n\n"
                         "@register_attack('fake-collide-first')\ndef first(seed=0):\n    pass\n\n\n"
                         "@register_attack('pgd')\ndef mine(seed=0):\n    pass\n",
}


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Path:
    """``fake-kwta-plugin 0.3`` installed as pip leaves it, found as by a process started after the install; every
    registry as it was afterwards."""
    for name, text in MODULES.items():
        (tmp_path / f"{name}.py").write_text(text)
    info = tmp_path / "fake_kwta_plugin-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DIST}\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    with contextlib.ExitStack() as stack, caplog.at_level(logging.WARNING):
        for registry in (REGISTRY, NOISE_PROBES, CHECKS):
            stack.enter_context(registry.preserved())  # as they are before the install
        monkeypatch.syspath_prepend(str(tmp_path))
        for registry in (REGISTRY, NOISE_PROBES, CHECKS):
            registry.discover(refresh=True)
        yield tmp_path
    for name in MODULES:
        sys.modules.pop(name, None)


def write_inputs(folder: Path, **config) -> tuple[Path, Path]:
    """An eval config (YAML) and a data file whose labels are the plug-in model's predictions (every sample is
    clean-correct, so every one is attacked)."""
    import fake_kwta_plugin

    x = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = fake_kwta_plugin.make_net()(x).argmax(dim=1)
    torch.save({"x": x, "y": y}, folder / "data.pt")
    base = {"dataset": "mnist5k", "n_examples": 12, "batch_size": 12, "device": "cpu", "seed": 0,
            "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": [{"attack": "fake-fgsm"}],
            "diagnostics": {"enabled": False}}
    (folder / "eval.yaml").write_text(yaml.safe_dump({**base, **config}))
    return folder / "eval.yaml", folder / "data.pt"


def cli(folder: Path, out: str, *extra: str) -> tuple[int, str]:
    """``kwta-robust evaluate`` on the plug-in's model; returns the status and stderr."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        status = main(["-q", "evaluate", "--model-factory", "fake_kwta_plugin:make_net", "--config",
                       str(folder / "eval.yaml"), "--data", str(folder / "data.pt"), "--out", str(folder / out),
                       "--no-progress", *extra])
    return status, err.getvalue()


def with_mode(mode: str) -> list[dict]:
    return [{"attack": "fake-fgsm", "params": {"mode": mode}}]


def test_every_kind_has_an_entry_point_group_listed_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("**Plug-ins.**"):readme.index("**Executors.**")]
    listed = re.findall(r"^\| `(kwta_robust\.\w+)` \|", section, re.M)
    assert listed == [kind.group for kind in KINDS.values()]
    assert len(set(listed)) == len(KINDS)
    toml = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    assert set(re.findall(r'entry-points\."([\w.]+)"', toml)) <= set(listed)


def test_a_plugin_attack_runs_from_yaml_and_from_the_api(installed: Path) -> None:
    write_inputs(installed, noise=[{"kind": "stripes", "levels": [0, 0.5], "draws": 1}],
                 diagnostics={"enabled": True, "gradient_batch": 4})
    status, err = cli(installed, "cli.json")
    assert status == 0, err
    record = load_record(installed / "cli.json")
    [result] = record.results
    assert (result.attack, result.kind, result.single_step, result.n_attacked) == ("fake-fgsm", "white-box", True, 12)
    assert record.noise[0].kind == "stripes" and any(f.code == "fake-check" for f in record.diagnostics)
    plugins = record.provenance["plugins"]
    assert plugins["attacks"]["fake-fgsm"] == ORIGIN
    assert plugins["noise-probes"]["stripes"]["entry_point"] == "kwta_robust.noise_probes: stripes = " \
                                                                 "fake_kwta_plugin:Stripes"
    assert plugins["diagnostics"]["fake-check"]["version"] == "0.3"

    import fake_kwta_plugin

    data = torch.load(installed / "data.pt", weights_only=True)
    model = fake_kwta_plugin.make_net()
    rng = torch.get_rng_state()
    mine = evaluate_model(model, installed / "eval.yaml", data["x"], data["y"], threads=1)
    assert torch.equal(rng, torch.get_rng_state())
    assert mine.results[0].flags == result.flags and mine.provenance["plugins"] == plugins


@pytest.mark.parametrize("mode, words", [
    ("shape", "attack 'fake-fgsm' at Linf 0.1 returned (12, 1, 7, 8), expected a tensor of shape (12, 1, 8, 8)"),
    ("dtype", "attack 'fake-fgsm' at Linf 0.1 returned torch.float64 on cpu, expected torch.float32 on cpu"),
    ("list", "attack 'fake-fgsm' at Linf 0.1 returned list, expected a tensor"),
    ("raise", "attack 'fake-fgsm' at Linf 0.1 raised KeyError: 'boom in the plug-in' (at "),
    ("train", "attack 'fake-fgsm' at Linf 0.1 left module 'Sequential' in train mode"),
    ("mutate", "attack 'fake-fgsm' at Linf 0.1 changed the model's '1.bias'"),
])
def test_a_misbehaving_attack_is_one_error_line(installed: Path, mode: str, words: str) -> None:
    write_inputs(installed, attacks=with_mode(mode))
    status, err = cli(installed, f"{mode}.json")
    assert status == 2 and "Traceback" not in err
    [line] = [line for line in err.splitlines() if line.startswith("error:")]
    assert words in line, line
    if mode == "raise":
        assert "fake_kwta_plugin.py:" in line  # where the plug-in failed


def test_outputs_outside_the_threat_model_are_projected_and_counted(installed: Path) -> None:
    write_inputs(installed, attacks=[{"attack": "fake-fgsm", "label": m, "params": {"mode": m}}
                                     for m in ("ok", "outside", "nan", "rng")], mode="independent")
    status, err = cli(installed, "r.json")
    assert status == 0, err
    results = {r.label: r for r in load_record(installed / "r.json").results}
    ok, outside, nan, rng = (results[m] for m in ("ok", "outside", "nan", "rng"))
    assert ok.robust.correct < 12  # the attack breaks some: the checks below compare real verdicts
    assert outside.flags == ok.flags and outside.violations == 12 and outside.max_violation >= 0.2
    assert rng.flags == ok.flags  # the global RNG is forked per batch: an attack drawing from it changes nothing
    assert nan.violations == 12 and math.isnan(nan.max_violation)  # infinite: written as null, read as NaN
    assert nan.flags[0] == 1 and nan.flags[1:] == ok.flags[1:]  # the NaN row is its clean input, not broken


def test_broken_plugins_are_skipped_and_named(installed: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert REGISTRY.info("pgd").source == "attacks.gradient" and REGISTRY.info("pgd").built_in
    assert "fake-collide-first" not in REGISTRY  # a plug-in that failed half-way leaves nothing behind
    for name, words in (
            ("fake-missing", "ModuleNotFoundError: No module named 'fake_kwta_not_installed'"),
            ("fake-adaptive", "must say whether it follows the model's input gradient"),
            ("fake-collide", "'pgd' is registered twice (attacks.gradient and fake_kwta_collide)"),
            ("fake-plain", "fake_kwta_plugin:plain_attack is not a registered attack: decorate it with "
                           "@register_attack")):
        with pytest.raises(RegistryError) as caught:
            REGISTRY.get(name, field="attacks[0].attack")
        message = str(caught.value)
        assert message.startswith(f"attacks[0].attack: attack {name!r} is the plug-in of {DIST} 0.3 (entry point "
                                  f"kwta_robust.attacks: {name} = ")
        assert words in message and message.endswith(f"fix or uninstall {DIST}") and "\n" not in message
        assert any(name in r.getMessage() and DIST in r.getMessage() for r in caplog.get_records("setup"))
    with pytest.raises(RegistryError, match=r"unknown attack 'nope'; .* \(plug-ins skipped, see the warnings: "
                                            r"fake-adaptive, fake-collide, fake-missing, fake-plain\)"):
        REGISTRY.get("nope")


def test_the_plugins_command_lists_them(installed: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["plugins", "attacks", "noise-probes"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("attacks (entry point group kwta_robust.attacks: a factory decorated with @register_attack)")
    assert re.search(r"fake-fgsm +one signed-gradient step, misbehaving on request  \[fake-kwta-plugin 0\.3 \(entry "
                     r"point kwta_robust\.attacks: fake-fgsm = fake_kwta_plugin\)\]", out)
    assert re.search(r"pgd +PGD .*\[built-in \(attacks\.gradient\)\]", out)
    assert "fake-missing" in out and "SKIPPED: is the plug-in of fake-kwta-plugin 0.3" in out
    assert "stripes" in out and "diagnostics (" not in out
    assert main(["plugins", "--json", "diagnostics"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"]: r["distribution"] for r in rows}["fake-check"] == DIST
    with pytest.raises(SystemExit):
        main(["plugins", "attack"])  # not a kind: argparse's one line
    error = capsys.readouterr().err
    assert "invalid choice: 'attack' (choose from 'attacks', 'noise-probes'," in error  # no '[]' among the kinds
    assert main(["plugins"]) == 0 and "executors (" in capsys.readouterr().out  # no KIND: every kind


def test_a_resumed_record_of_another_plugin_version_is_stale(installed: Path) -> None:
    write_inputs(installed)
    assert cli(installed, "r.json")[0] == 0
    data = json.loads((installed / "r.json").read_text())
    data["provenance"]["plugins"]["attacks"]["fake-fgsm"]["version"] = "0.2"
    (installed / "r.json").write_text(json.dumps(data))
    status, err = cli(installed, "r.json")
    assert status == 2 and "holds a record of another version of a plug-in" in err
    data["provenance"]["plugins"] = {"attacks": {"since-uninstalled": ORIGIN}}  # not a name this run has
    (installed / "r.json").write_text(json.dumps(data))
    assert cli(installed, "r.json")[0] == 0


def test_a_misbehaving_noise_probe_or_check_is_one_error_line(installed: Path) -> None:
    write_inputs(installed, noise=[{"kind": "stripes", "levels": [0.5], "draws": 1,
                                                "params": {"mode": "nan"}}])
    status, err = cli(installed, "noise.json")
    assert status == 2 and "Traceback" not in err
    assert "error: noise probe 'stripes' returned NaN or infinite values at level 0.5" in err
    record = EvalRecord.from_dict(json.loads((installed / "noise.json").read_text()))
    with CHECKS.preserved():
        CHECKS.register("fake-raises", CheckInfo("fake-raises", lambda r, t: 1 / 0, ""))
        with pytest.raises(ConfigError, match="^diagnostics: check 'fake-raises' raised ZeroDivisionError: division"):
            run_checks(record, codes=["fake-raises"])
        CHECKS.register("fake-wrong", CheckInfo("fake-wrong", lambda r, t: [Flag("x", "fatal", "")], ""))
        with pytest.raises(ConfigError, match="check 'fake-wrong' returned Flag .* with severity critical, warn"):
            run_checks(record, codes=["fake-wrong"])
    assert "fake-raises" not in CHECKS


@pytest.mark.parametrize("kwargs, words", [
    ({"kind": "whitebox"}, "attack 'x' has kind 'whitebox'; use one of white-box, bpda, adaptive"),
    ({"norms": "linf"}, "attack 'x' has norms 'linf'; use a non-empty tuple of linf, l2"),
    ({"norms": ("l1",)}, "attack 'x' has norms ('l1',)"),
    ({"kind": "adaptive"}, "adaptive attack 'x' must say whether it follows the model's input gradient"),
])
def test_a_wrong_registration_is_one_line(kwargs: dict, words: str) -> None:
    with pytest.raises(RegistryError, match=re.escape(words)):
        register_attack("x", **kwargs)(lambda seed=0: None)
    with pytest.raises(RegistryError, match="its factory .* must take a seed keyword argument"):
        register_attack("x")(lambda steps=1: None)
    assert "x" not in REGISTRY


def test_a_script_registers_its_own_and_a_notebook_cell_runs_twice() -> None:
    def define():
        @register_attack("script-attack", norms=("linf",))
        def script_attack(seed: int = 0):
            """mine"""
            return lambda model, x, y, threat: x
        return script_attack

    with REGISTRY.preserved():
        define()
        define()  # the same code defined again: it replaces the first (a notebook cell run twice)
        assert REGISTRY.info("script-attack").summary == "mine"
        assert plugin_provenance(["attacks"])["attacks"]["script-attack"]["source"] == __name__
        with pytest.raises(RegistryError, match="'script-attack' is registered twice"):
            register_attack("script-attack")(lambda seed=0: None)
        with pytest.raises(RegistryError, match="'pgd' is registered twice"):
            register_attack("pgd")(lambda seed=0: None)  # a built-in is never replaced
    assert "script-attack" not in REGISTRY


def test_readme_plugin_example_runs_as_written(capsys: pytest.CaptureFixture) -> None:
    match = re.search(r"<!-- plugin-example -->\n```python\n(.*?)```\n<!-- /plugin-example -->",
                      (ROOT / "README.md").read_text(), re.S)
    assert match, "README.md: the plug-in example between its markers is missing"
    with REGISTRY.preserved():
        namespace: dict = {"__name__": "readme_plugin_example"}
        exec(compile(match.group(1), "README.md (plug-in example)", "exec"), namespace)
        record = namespace["record"]
        assert record.results[0].attack == "my-fgsm" and record.results[0].n_attacked == 16
        assert record.provenance["plugins"]["attacks"]["my-fgsm"]["source"] == "readme_plugin_example"
        exec(compile(match.group(1), "README.md (plug-in example)", "exec"), namespace)  # the cell run again
    assert "my-fgsm" not in REGISTRY
    assert "'my-fgsm': {'source': 'readme_plugin_example'" in capsys.readouterr().out
