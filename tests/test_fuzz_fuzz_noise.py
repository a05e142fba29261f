"""Fuzz round on noise-probe settings: a level given twice (``levels: [0.1, 0.1]``, or ``0`` and ``0.0``) was run
twice with the same seeded noise and counted twice in Ahmad & Scheinkman's noise score (the total correct over the
levels), silently inflating it. The config refuses it in one line naming ``noise[i].levels[j]``, before any data is
read or model evaluated; ``run_noise_probe`` refuses it too. Levels out of order are kept as given (each level's
noise and accuracy do not depend on the others).

A noise probe plug-in whose constructor raises (a ``ValueError`` read as the field path ``noise[0].<message>``, a
``RuntimeError`` a raw traceback), or whose ``default_levels()`` are not finite numbers >= 0 (negative or NaN ones
were accepted and failed only when the probe ran, after every attack), is one line at ``noise[i]``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn

from attacks.base import AttackConfigError
from attacks.noise import NOISE_PROBES, GaussianNoise, run_noise_probe
from kwta_robust.cli import main
from kwta_robust.config import EvalConfig
from kwta_robust.errors import ConfigError

BASE = {"dataset": "digits", "n_examples": 4, "batch_size": 4, "device": "cpu"}


@pytest.mark.parametrize("levels, where, value", [
    ([0.1, 0.1], "levels[1]", "0.1 is levels[0]"),
    ([0, 0.2, 0.0], "levels[2]", "0 is levels[0]"),
    ([0.3, 0.05, 0.2, 0.05], "levels[3]", "0.05 is levels[1]"),
])
def test_a_level_given_twice_is_refused_naming_it(levels: list, where: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        EvalConfig.from_dict({**BASE, "noise": [{"kind": "numenta"}, {"kind": "gaussian", "levels": levels}]})
    assert str(info.value) == (f"noise[1].{where}: {value} again; give each level once (a repeat draws the same "
                               "noise and counts twice in the noise score)")


def test_levels_out_of_order_are_kept_as_given() -> None:
    config = EvalConfig.from_dict({**BASE, "noise": [{"kind": "uniform", "levels": [0.3, 0.0, 0.1]}]})
    assert config.noise[0].levels == (0.3, 0.0, 0.1)


def test_the_cli_refuses_it_before_reading_the_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**BASE, "noise": [{"kind": "numenta", "levels": [0.0, 0.5, 0.5]}]}))
    out = tmp_path / "r.json"
    rc = main(["evaluate", str(tmp_path / "no-such-model.pt"), "--config", str(config), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and not out.exists()
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        "error: noise[0].levels[2]: 0.5 is levels[1] again; give each level once (a repeat draws the same noise and "
        "counts twice in the noise score)"]


def test_run_noise_probe_refuses_a_level_given_twice() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    x, y = torch.rand(3, 1, 2, 2), torch.zeros(3, dtype=torch.long)
    with pytest.raises(AttackConfigError) as info:
        run_noise_probe(model, x, y, "salt-and-pepper", levels=[0.25, 0.5, 0.25])
    assert str(info.value) == ("noise: levels must differ, got 0.25 twice; give each level once (a repeat draws the "
                               "same noise and counts twice in the noise score)")
    assert run_noise_probe(model, x, y, "salt-and-pepper", levels=[0.5, 0.25]).levels == (0.5, 0.25)


def _probe(name: str, defaults: Any = (0.0, 0.5), error: Exception | None = None) -> type:
    """A Gaussian probe registered as ``name`` with the given default levels, raising ``error`` when built."""
    namespace: dict[str, Any] = {"name": name, "default_levels": lambda self: defaults}
    if error is not None:
        namespace["__post_init__"] = lambda self: (_ for _ in ()).throw(error)
    return dataclass(frozen=True)(type("Probe", (GaussianNoise,), namespace))


@pytest.mark.parametrize("probe, message", [
    (_probe("fz", error=ValueError("bad")), "noise[0]: noise probe 'fz' raised ValueError: bad; fix the probe (or its "
                                            "params)"),
    (_probe("fz", error=RuntimeError("rt")), "noise[0]: noise probe 'fz' raised RuntimeError: rt; fix the probe (or "
                                             "its params)"),
    (_probe("fz", defaults=(-0.5, 0.1)), "noise[0].levels: noise probe 'fz': its default_levels() are [-0.5, 0.1], "
                                         "not finite numbers >= 0; fix the probe, or give levels"),
    (_probe("fz", defaults=(float("nan"),)), "noise[0].levels: noise probe 'fz': its default_levels() are [nan], not "
                                             "finite numbers >= 0; fix the probe, or give levels"),
    (_probe("fz", defaults=("a",)), "noise[0].levels: noise probe 'fz': its default_levels() are ['a'], not finite "
                                    "numbers >= 0; fix the probe, or give levels"),
])
def test_a_plugin_probe_that_fails_when_built_is_one_line(probe: type, message: str) -> None:
    with NOISE_PROBES.preserved():
        NOISE_PROBES.register("fz", probe)
        with pytest.raises(ConfigError) as info:
            EvalConfig.from_dict({**BASE, "noise": [{"kind": "fz"}]})
        assert str(info.value) == message


def test_a_plugin_probes_valid_defaults_are_its_levels_and_given_levels_pass_bad_defaults_by() -> None:
    with NOISE_PROBES.preserved():
        NOISE_PROBES.register("fz", _probe("fz", defaults=[0, 0.25]))
        NOISE_PROBES.register("fz-bad", _probe("fz-bad", defaults=(-1.0,)))
        assert EvalConfig.from_dict({**BASE, "noise": [{"kind": "fz"}]}).noise[0].levels == (0.0, 0.25)
        assert EvalConfig.from_dict({**BASE, "noise": [{"kind": "fz-bad", "levels": [0.1]}]}).noise[0].levels == (0.1,)
