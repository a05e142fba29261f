"""``kwta-robust diff`` of one evaluation run with ``--device cpu`` and with ``device: auto`` (walk51b): the config
hash leaves ``device`` out (``config_digest.UNHASHED_KEYS``), the results are identical, yet ``diff`` listed
``config.device: 'auto' != 'cpu'`` and withheld "the results are the same" as if another evaluation had run. A
config key outside the hash is read as provenance (``provenance.device`` says where each ran); a hashed key still is
another evaluation."""

from __future__ import annotations

from kwta_robust.config_digest import config_digest
from kwta_robust.record_diff import record_differences, verdicts_summary

CONFIG = {"dataset": "toy", "batch_size": 8, "seed": 0, "device": "auto",
          "threats": [{"norm": "linf", "epsilons": [0.1]}]}


def _record(config: dict) -> dict:
    return {"config": config, "config_hash": config_digest(config), "results": [{"flags": [1, 0]}],
            "provenance": {"torch_threads": 1, "device": "cpu"}}


def test_the_device_asked_for_is_no_other_evaluation() -> None:
    a, b = _record(CONFIG), _record({**CONFIG, "device": "cpu"})
    assert a["config_hash"] == b["config_hash"]
    found = record_differences(a, b)
    assert found == ["config.device: 'auto' != 'cpu'"]
    summary = verdicts_summary(found)
    assert summary is not None and summary.startswith("the results are the same: only provenance differs")


def test_a_hashed_config_key_is_still_another_evaluation() -> None:
    a, b = _record(CONFIG), _record({**CONFIG, "seed": 1})
    found = record_differences(a, b)
    assert any(line.startswith("config.seed") for line in found)
    assert verdicts_summary(found) is None
    b = _record(CONFIG)
    b["results"] = [{"flags": [1, 1]}]  # and a verdict still withholds it, beside a device difference
    b["config"] = {**CONFIG, "device": "cpu"}
    assert verdicts_summary(record_differences(a, b)) is None
