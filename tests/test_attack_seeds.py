"""Every attack's ``seed`` is checked where every attack is built (:func:`attacks.base.create_attack`), and BPDA's
``inner_params.seed`` where BPDA builds its stages: a one-line error instead of a raw ``ValueError`` from
``int("x")``, and no float or bool silently read as an integer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from attacks.base import AttackConfigError, ThreatModel, available_attacks, create_attack
from attacks.errors import SEED_LIMIT, is_seed
from kwta_robust.config import EvalConfig
from kwta_robust.errors import ConfigError

NOT_SEEDS = [("x", "'x'"), (1.5, "1.5"), (True, "True"), (-1, "-1"), (2 ** 63, "9223372036854775808"),
             (np.uint64(2 ** 63), "np.uint64(9223372036854775808)"), (None, "None")]


def test_the_seed_range_is_what_torch_and_numpy_take() -> None:
    assert SEED_LIMIT == 9223372036854775808
    torch.Generator().manual_seed(SEED_LIMIT - 1)  # the largest seed is one torch takes
    assert [is_seed(v) for v in (0, SEED_LIMIT - 1, np.int64(3), np.uint8(0))] == [True] * 4
    assert [is_seed(v) for v, _ in NOT_SEEDS] == [False] * len(NOT_SEEDS)
    assert not is_seed(np.bool_(True)) and not is_seed(3.0)


@pytest.mark.parametrize("seed, shown", NOT_SEEDS)
def test_create_attack_refuses_a_seed_in_one_line(seed, shown: str) -> None:
    """Before, ``create_attack("pgd", seed="x")`` raised ``invalid literal for int()`` from inside the factory."""
    with pytest.raises(AttackConfigError) as info:
        create_attack("pgd", seed=seed)
    assert str(info.value) == f"attack 'pgd': seed must be an integer from 0 to 2**63 - 1, got {shown}"


@pytest.mark.parametrize("name", sorted(set(available_attacks()) - {"transfer"}))
def test_every_registered_attack_gets_the_check(name: str) -> None:
    with pytest.raises(AttackConfigError, match=f"^attack '{name}': seed must be an integer"):
        create_attack(name, seed="x")


def test_a_numpy_integer_seed_is_passed_on_as_an_int_and_draws_like_the_int() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    x, y = torch.rand(5, 4), torch.tensor([0, 1, 2, 0, 1])
    threat = ThreatModel("linf", 0.1)
    from_numpy = create_attack("pgd", seed=np.int64(11), steps=3, random_start=True)
    from_int = create_attack("pgd", seed=11, steps=3, random_start=True)
    assert type(from_numpy.seed) is int and from_numpy.seed == 11
    assert torch.equal(from_numpy(model, x, y, threat), from_int(model, x, y, threat))


@pytest.mark.parametrize("seed, shown", NOT_SEEDS[:5])
def test_bpda_refuses_an_inner_seed_in_one_line(seed, shown: str) -> None:
    """Before, ``inner_params: {seed: x}`` raised a raw ValueError and ``1.5`` ran the inner attack with seed 1."""
    with pytest.raises(AttackConfigError) as info:
        create_attack("bpda", inner_params={"seed": seed})
    assert str(info.value) == f"inner_params.seed: must be an integer from 0 to 2**63 - 1, got {shown}"


def test_bpda_stage_seeds_count_up_from_the_inner_seed_and_stay_seeds() -> None:
    staged = create_attack("bpda", seed=5, temperature_schedule=[1.0, 0.5, 0.25])
    assert [p["seed"] for p in staged.stage_given] == [5, 6, 7]
    inner = create_attack("bpda", seed=5, inner_params={"seed": 40}, temperature_schedule=[1.0, 0.5])
    assert [p["seed"] for p in inner.stage_given] == [40, 41]
    top = create_attack("bpda", inner_params={"seed": SEED_LIMIT - 1}, temperature_schedule=[1.0, 0.5])
    assert [p["seed"] for p in top.stage_given] == [9223372036854775807, 0]  # wraps instead of leaving the range


def test_a_config_names_the_field_of_a_bad_inner_seed() -> None:
    base = {"dataset": "digits", "threats": [{"norm": "linf", "epsilons": [0.1]}]}
    with pytest.raises(ConfigError) as info:
        EvalConfig.from_dict({**base, "attacks": [{"attack": "bpda", "params": {"inner_params": {"seed": "x"}}}]})
    assert str(info.value) == "attacks[0]: inner_params.seed: must be an integer from 0 to 2**63 - 1, got 'x'"
    with pytest.raises(ConfigError) as info:
        EvalConfig.from_dict({**base, "attacks": ["pgd"], "transfer": {"attack": "pgd", "params": {"seed": 2.0}}})
    assert str(info.value).startswith("transfer.params.seed: must be an integer from 0 to 2**63 - 1")
