"""Transfer attacks and noise probes at run time, fuzzed: each odd input here was a raw exception (or a silent
guess) before; now it is one AttackConfigError / AttackContractError line naming the field and the fix."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from attacks import ThreatModel, create_attack
from attacks.base import AttackConfigError
from attacks.cascade import AttackContractError
from attacks.noise import run_noise_probe
from tests.test_transfer import batch, mlp


@pytest.fixture(scope="module")
def setup() -> tuple[nn.Module, Tensor, Tensor]:
    model = mlp("kwta")
    x, y = batch(model, n=8)
    return model, x, y


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("inner_params", ["steps", [1, 2], 5, ("steps", 3)])
def test_transfer_inner_params_that_are_not_a_mapping_are_one_line(setup, inner_params) -> None:
    model, x, y = setup
    with pytest.raises(AttackConfigError) as exc:
        create_attack("transfer", source=model, inner_params=inner_params)
    text = one_line(exc)
    assert text.startswith("inner_params: expected a mapping of the inner attack's parameters")
    assert f"got {type(inner_params).__name__}" in text


def test_transfer_inner_params_mapping_still_runs(setup) -> None:
    model, x, y = setup
    threat = ThreatModel("linf", 0.2)
    got = create_attack("transfer", source=model, inner_params={"steps": 2}, seed=1)(model, x, y, threat)
    assert torch.equal(got, create_attack("pgd", steps=2, seed=1)(model, x, y, threat))


@pytest.mark.parametrize("seed", ["x", None, float("nan"), 1.5, -3, True, 2**63])
def test_noise_probe_seed_must_be_a_seed(setup, seed) -> None:
    model, x, y = setup
    with pytest.raises(AttackConfigError) as exc:
        run_noise_probe(model, x, y, "numenta", levels=[0.1], seed=seed)
    assert one_line(exc) == f"noise: seed must be an integer from 0 to 2**63 - 1, got {seed!r}"


@pytest.mark.parametrize("kind", [None, 3, 1.5, b"numenta"])
def test_noise_probe_kind_of_another_type_is_one_line(setup, kind) -> None:
    model, x, y = setup
    with pytest.raises(AttackConfigError) as exc:
        run_noise_probe(model, x, y, kind, levels=[0.1])
    assert one_line(exc).startswith(f"noise: kind must be a noise probe name like 'numenta' or a NoiseProbe, got "
                                    f"{type(kind).__name__}")


@pytest.mark.parametrize("levels", ["0.1", b"0.1", {0.1: 1}, 0.1, 3])
def test_noise_levels_must_be_a_list_of_numbers(setup, levels) -> None:
    model, x, y = setup
    with pytest.raises(AttackConfigError) as exc:
        run_noise_probe(model, x, y, "gaussian", levels=levels)
    assert one_line(exc) == ("noise: levels must be a list of numbers like [0.0, 0.1, 0.2], got "
                             f"{type(levels).__name__}")


def test_noise_levels_from_an_iterator_are_the_same_as_from_a_list(setup) -> None:
    model, x, y = setup
    from_list = run_noise_probe(model, x, y, "gaussian", levels=[0.0, 0.3], draws=2, seed=4)
    from_iter = run_noise_probe(model, x, y, "gaussian", levels=iter([0.0, 0.3]), draws=2, seed=4)
    assert from_iter.to_dict() == from_list.to_dict()
    assert from_iter.levels == (0.0, 0.3)


@pytest.mark.parametrize("bounds", [None, (0.0, 1.0, 2.0), (0.0,), "01", 1.0, ("0", "1"), (0.0, None)])
def test_bounds_that_are_not_a_pair_of_numbers_are_one_line(setup, bounds) -> None:
    model, x, y = setup
    with pytest.raises(AttackConfigError) as exc:
        run_noise_probe(model, x, y, "numenta", levels=[0.1], bounds=bounds)
    assert one_line(exc) == f"bounds: expected (lower, upper) numbers like (0.0, 1.0), got {bounds!r}"
    with pytest.raises(AttackConfigError, match=r"^bounds: expected \(lower, upper\) numbers"):
        ThreatModel("linf", 0.1, bounds)


def test_numpy_and_list_bounds_still_accepted() -> None:
    import numpy as np

    assert ThreatModel("linf", 0.1, [np.float32(0.0), 1]).bounds == (0.0, 1.0)


def test_noise_probe_x_and_model_of_another_type_are_one_line(setup) -> None:
    model, x, y = setup
    with pytest.raises(AttackConfigError) as exc:
        run_noise_probe(model, x.tolist(), y, "numenta", levels=[0.1])
    assert one_line(exc) == "x: expected a tensor of inputs [N, ...], got list"
    with pytest.raises(AttackConfigError) as exc:
        run_noise_probe(model, x, y.tolist(), "numenta", levels=[0.1])
    assert one_line(exc) == "y: expected a tensor of labels [N], got list"
    with pytest.raises(AttackConfigError) as exc:
        run_noise_probe(None, x, y, "numenta", levels=[0.1])
    assert one_line(exc) == "model: expected an nn.Module classifier, got NoneType"


def test_noise_labels_outside_the_models_classes_are_refused_not_counted_wrong(setup) -> None:
    model, x, y = setup  # 3 classes: a label 5 was silently never correct (accuracy 0)
    with pytest.raises(AttackConfigError) as exc:
        run_noise_probe(model, x, y + 5, "numenta", levels=[0.0, 0.1])
    assert one_line(exc) == f"y: labels must lie in [0, 2] for a model with 3 outputs, got [{int(y.min()) + 5}, " \
                            f"{int(y.max()) + 5}]"


@pytest.mark.parametrize("verdict, got", [
    (lambda inputs, labels: torch.ones(len(labels)), "float32 [8]"),
    (lambda inputs, labels: torch.ones(3, dtype=torch.bool), "bool [3]"),
    (lambda inputs, labels: None, "NoneType"),
])
def test_a_verdict_that_is_not_one_bool_per_sample_is_one_line(setup, verdict, got) -> None:
    model, x, y = setup  # a float verdict of ones counted every sample correct (accuracy 1.0)
    with pytest.raises(AttackContractError) as exc:
        run_noise_probe(model, x, y, "numenta", levels=[0.0, 0.1], verdict=verdict)
    assert one_line(exc) == f"noise: verdict returned {got}, expected a bool tensor [8] (one per sample)"


def test_no_samples_is_no_error_and_accuracy_zero(setup) -> None:
    model, x, y = setup
    result = run_noise_probe(model, x[:0], y[:0], "numenta", levels=[0.0, 0.1], draws=2)
    assert result.accuracy == (0.0, 0.0) and result.num_samples == 0 and result.noise_score == 0.0


class Shift:
    """A plug-in probe: ``x + level``."""

    name, level_name, max_level = "shift", "offset", None

    def apply(self, x: Tensor, level: float, generator: torch.Generator, bounds: tuple[float, float]) -> Tensor:
        return x + level

    def default_levels(self) -> tuple[float, ...]:
        return (0.0, 0.1)


@pytest.mark.parametrize("cap", ["1", float("nan"), 0, -1.0, True])
def test_a_plug_in_probes_max_level_that_is_no_cap_is_one_line(setup, cap) -> None:
    model, x, y = setup  # "1" raised TypeError at the comparison; NaN silently let every level through
    probe = Shift()
    probe.max_level = cap
    with pytest.raises(AttackContractError) as exc:
        run_noise_probe(model, x, y, probe)
    assert one_line(exc) == f"noise probe 'shift': max_level must be None or a finite number > 0, got {cap!r}; fix " \
                            "the probe"


def test_a_plug_in_probe_with_a_cap_still_runs(setup) -> None:
    model, x, y = setup
    probe = Shift()
    probe.max_level = 0.5
    assert run_noise_probe(model, x, y, probe, levels=[0.0, 0.5]).levels == (0.0, 0.5)


def test_registering_a_probe_whose_max_level_is_no_cap_is_one_line() -> None:
    from attacks.errors import RegistryError
    from attacks.noise import NOISE_PROBES

    class BadCap(Shift):  # before: accepted, then a config naming it raised TypeError ('>' between float and str)
        name, max_level = "bad-cap", "1"

    with pytest.raises(RegistryError) as exc:
        NOISE_PROBES.register("bad-cap")(BadCap)
    assert one_line(exc) == "noise: noise probe 'bad-cap': max_level must be None or a finite number > 0, got '1'; " \
                            "fix the probe"
    assert "bad-cap" not in NOISE_PROBES
