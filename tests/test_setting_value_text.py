"""A setting's value as the protocol tables and the paired notes write it (a float ``:g``, a list in brackets) had
two implementations, ``protocol._value_text`` and ``paired._settings_text`` (paired cannot import protocol: protocol
-> formats -> paired would be a circle). Both now call ``numbers.setting_value_text``; their texts are unchanged."""

from __future__ import annotations

from typing import Any

import pytest

from eval_helpers import make_record
from kwta_robust.numbers import setting_value_text
from kwta_robust.paired import noise_pairs
from kwta_robust.protocol import settings_text
from kwta_robust.results import NoiseResult

VALUES = [(0.1, "0.1"), (1e-05, "1e-05"), (1.0, "1"), (2 / 3, "0.666667"), (3, "3"), ("gaussian", "gaussian"),
          ([0.02, 0.1], "[0.02, 0.1]"), ([[1.0, 2], []], "[[1, 2], []]"), ((0.5, "a"), "[0.5, a]"), ([], "[]")]


@pytest.mark.parametrize("value, text", VALUES, ids=[t for _, t in VALUES])
def test_floats_g_lists_in_brackets(value: Any, text: str) -> None:
    assert setting_value_text(value) == text


def test_other_values_go_to_the_callers_writer_at_every_depth() -> None:
    assert setting_value_text([True, None, 0.5], lambda v: f"<{v}>") == "[<True>, <None>, 0.5]"
    assert setting_value_text(True) == "True" and setting_value_text(None) == "None"  # str by default (paired's)


def test_table_protocol_writes_values_as_before() -> None:
    settings = {"eps_step": 0.01, "steps": 10, "random_start": True, "target": None, "restarts": [1, 2.5],
                "schedule": {"gamma": 0.5, "milestones": [0.25, 0.75]}, "tiny": 1e-05}
    assert settings_text(settings) == ("eps step 0.01, steps 10, random start true, target none, restarts [1, 2.5], "
                                       "schedule (gamma 0.5, milestones [0.25, 0.75]), tiny 1e-05")


def _probe(params: dict[str, Any]) -> NoiseResult:
    result = {"kind": "mine", "params": params, "num_samples": 2, "correct_counts": [[1, 1], [1, 0]]}
    return NoiseResult("mine", [0.0, 0.5], 1, 7, result, 0.1)


@pytest.mark.parametrize("mine, theirs, note", [
    ({"value": 0.7469}, {"value": 1.0}, "value 0.7469 in a, 1 in b"),
    ({"widths": [0.5, 1.0]}, {"widths": [0.5]}, "widths [0.5, 1] in a, [0.5] in b"),
    ({"flip": True}, {"flip": None}, "flip True in a, None in b"),
])
def test_the_paired_notes_write_values_as_before(mine: dict, theirs: dict, note: str) -> None:
    a, b = make_record(n=2, label="a"), make_record(n=2, label="b")
    a.noise.append(_probe(mine))
    b.noise.append(_probe(theirs))
    assert noise_pairs(a, b) == ([], [f"noise mine: no paired row, its settings differ between the records ({note}): "
                                      "the models saw other noisy inputs, so their scores are not paired"])
