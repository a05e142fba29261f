"""A plug-in noise probe that is not a dataclass: ``evaluate --dry-run`` showed the params of its config
(``strength 0.5``) while the record the run wrote held ``params: {}`` for it, so the record did not say what ran and
its ``table --protocol`` row differed from the plan's. Both now take the probe's params from one function,
``attacks.noise.probe_params``: a dataclass probe's fields (numenta's ``value`` default too), else the params it was
built with. The seed of a probe's draws is derived from its config, not from what the record holds."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from attacks.noise import NOISE_PROBES, create_noise_probe, probe_params
from eval_helpers import tiny_kwta_data
from kwta_robust.attack_plan import noise_seed
from kwta_robust.config import EvalConfig
from kwta_robust.dry_run import effective_noise_params
from kwta_robust.evaluate import evaluate
from kwta_robust.protocol import noise_settings_text


class Darken:
    """A researcher's probe, a plain class: each pixel scaled down by ``strength * level`` times a uniform draw."""

    name: ClassVar[str] = "darken"
    level_name: ClassVar[str] = "fraction"
    max_level: ClassVar[float | None] = 1.0

    def __init__(self, strength: float = 1.0, mode: str = "scale") -> None:
        self.strength, self.mode = strength, mode

    def apply(self, x: Tensor, level: float, generator: torch.Generator, bounds: tuple[float, float]) -> Tensor:
        draw = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x * (1.0 - self.strength * level * draw)

    def default_levels(self) -> tuple[float, ...]:
        return (0.0, 0.5)


def _config(params: dict[str, Any]) -> EvalConfig:
    return EvalConfig.from_dict({"dataset": "toy", "batch_size": 24, "seed": 0, "attacks": [], "threats": [],
                                 "diagnostics": {"enabled": False},
                                 "noise": [{"kind": "darken", "levels": [0.0, 0.5, 1.0], "params": params}]})


def test_the_record_holds_the_params_the_dry_run_shows(tmp_path) -> None:
    with NOISE_PROBES.preserved():
        NOISE_PROBES.register("darken")(Darken)
        cfg = _config({"strength": 0.5})
        model, data = tiny_kwta_data()
        record = evaluate(model, data, cfg, {"name": "tiny"}, progress=False, out_path=tmp_path / "r.json")
        shown = effective_noise_params(cfg.noise[0])
    (probe,) = record.noise
    assert probe.result["params"] == shown == {"strength": 0.5}  # was {} in the record
    seed = noise_seed(cfg.seed, cfg.noise[0])
    assert probe.seed == seed  # from the config: recording the params moves no draw
    plan = noise_settings_text(cfg.noise[0].levels, cfg.noise[0].draws, shown, seed)
    assert noise_settings_text(probe.levels, probe.draws, probe.result["params"], probe.seed) == plan
    assert plan == f"levels [0, 0.5, 1], draws 1, strength 0.5, seed {seed}"


def test_probe_params_of_a_dataclass_probe_are_its_fields_with_defaults() -> None:
    assert probe_params(create_noise_probe("numenta"), {}) == {"value": 1.0}
    assert probe_params(create_noise_probe("numenta", value=0.5), {"value": 0.5}) == {"value": 0.5}
    assert probe_params(create_noise_probe("gaussian"), {}) == {}
    assert probe_params(Darken(strength=0.25), {"strength": 0.25}) == {"strength": 0.25}
