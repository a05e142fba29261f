"""Named attack suites: every entry builds, ``standard`` is AutoAttack's, class-count adaptation is explicit."""

from __future__ import annotations

import logging

import pytest

from attacks import create_attack
from attacks.base import AttackConfigError, attack_info
from attacks.suites import SUITES, available_suites, get_suite


def test_available_suites() -> None:
    assert {"quick", "standard", "kwta-adaptive"} <= set(available_suites())


@pytest.mark.parametrize("name", sorted(SUITES))
def test_every_entry_builds_with_its_parameters(name: str) -> None:
    suite = get_suite(name)
    assert suite, f"suite {name!r} is empty: the loop below would check nothing"
    for entry in suite:
        assert {"attack", "params"} <= set(entry) <= {"attack", "params", "label"}
        attack = create_attack(entry["attack"], **entry["params"])
        assert callable(attack) and isinstance(attack.name, str)


def test_standard_is_autoattack_standard() -> None:
    suite = get_suite("standard")
    assert [e["attack"] for e in suite] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    apgd_ce, apgd_t, fab_t, square = (create_attack(e["attack"], **e["params"]) for e in suite)
    assert (apgd_ce.steps, apgd_ce.restarts, apgd_ce.loss) == (100, 1, "ce")
    assert (apgd_t.steps, apgd_t.restarts, apgd_t.n_target_classes) == (100, 1, 9)
    assert (fab_t.steps, fab_t.restarts, fab_t.n_target_classes, fab_t.targeted) == (100, 1, 9, True)
    assert (square.n_queries, square.p_init, square.restarts) == (5000, 0.8, 1)
    assert attack_info("square").kind == "black-box"


def test_quick_and_kwta_adaptive_contents() -> None:
    assert get_suite("quick") == [{"attack": "fgsm", "params": {}}, {"attack": "pgd", "params": {"steps": 20}}]
    adaptive = get_suite("kwta-adaptive")
    surrogates = {e["params"].get("surrogate") for e in adaptive if e["attack"] == "bpda"}
    assert {"identity", "smooth", "learned"} <= surrogates
    assert any(e["attack"] == "gradient-estimation" for e in adaptive)
    assert any(e["attack"] == "pgd" and e["params"].get("loss") == "margin" for e in adaptive)


def test_ten_classes_unchanged() -> None:
    assert get_suite("standard", num_classes=10) == get_suite("standard")


def test_target_counts_capped() -> None:
    suite = get_suite("standard", num_classes=5)
    assert [e["params"]["n_target_classes"] for e in suite if "n_target_classes" in e["params"]] == [4, 4]


def test_fewer_than_four_classes_drop_dlr_attacks_with_a_warning(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="attacks.suites"):
        suite = get_suite("standard", num_classes=3)
    assert [e["attack"] for e in suite] == ["apgd-ce", "fab-t", "square"]
    assert suite[1]["params"]["n_target_classes"] == 2
    assert "dropping apgd-t for a 3-class model" in caplog.text
    two = get_suite("standard", num_classes=2)
    assert [e["attack"] for e in two] == ["apgd-ce", "fab-t", "square"]
    assert two[1]["params"]["n_target_classes"] == 1


def test_wrapped_dlr_attack_is_dropped_too(caplog, monkeypatch) -> None:
    import attacks.suites as suites

    custom = dict(SUITES)
    custom["wrapped"] = ({"attack": "bpda", "params": {"surrogate": "smooth", "inner": "apgd-dlr"}},)
    monkeypatch.setattr(suites, "SUITES", custom)
    with caplog.at_level(logging.WARNING, logger="attacks.suites"):
        with pytest.raises(AttackConfigError, match="none of its attacks applies to a 2-class model"):
            suites.get_suite("wrapped", num_classes=2)
    assert "dropping apgd-dlr" in caplog.text
    assert suites.get_suite("wrapped", num_classes=3)[0]["params"]["inner"] == "apgd-dlr"


@pytest.mark.parametrize(("name", "classes", "match"),
                         [("nope", None, "unknown suite 'nope'"), ("standard", 1, "num_classes")])
def test_bad_input(name: str, classes: int | None, match: str) -> None:
    with pytest.raises(AttackConfigError, match=match):
        get_suite(name, num_classes=classes)


def test_returned_suites_are_copies() -> None:
    suite = get_suite("standard")
    suite[0]["params"]["steps"] = 1
    suite.append({"attack": "fgsm", "params": {}})
    assert get_suite("standard")[0]["params"]["steps"] == 100 and len(get_suite("standard")) == 4


@pytest.mark.parametrize("name", sorted(SUITES))
def test_every_suite_loads_as_a_config_with_unique_labels(name: str) -> None:
    """Entries of one attack that differ only inside nested parameters (e.g. two BPDA-smooth runs with other
    inner_params) carry their own labels, so the suite loads."""
    from kwta_robust.config import EvalConfig

    threats = [{"norm": "linf", "epsilons": [0.1]}]
    cfg = EvalConfig.from_dict({"dataset": "mnist5k", "suite": name, "threats": threats})
    labels = [s.label for s in cfg.labelled_attacks(10)]
    assert len(labels) == len(set(labels)) == len(get_suite(name))
