"""A record whose ``dataset.samples_sha256`` is not a string (edited into the file by hand: a number, a list, a
bool) is refused naming that field as the cause; before, the refusal said the data had changed since the run
("other images or labels"), sending the user to look for swapped data files that were never swapped."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kwta_robust.resume import stale_reason
from test_resume import fresh_record

DIGEST = "b" * 64


@pytest.mark.parametrize(("value", "shown"), [(5, "5, int"), (["x"], "['x'], list"), (True, "True, bool"),
                                              ({"a": 1}, "{'a': 1}, dict")])
def test_a_digest_that_is_no_string_is_named_as_such(value: Any, shown: str) -> None:
    fresh = fresh_record()
    fresh.dataset["samples_sha256"] = DIGEST
    old = copy.deepcopy(fresh)
    old.dataset["samples_sha256"] = value
    assert stale_reason(old, fresh) == (f"holds a record of a dataset.samples_sha256 that is no digest ({shown}: "
                                        "edited by hand?), so whether it ran on these samples cannot be checked")


@pytest.mark.parametrize(("value", "reason"), [
    ("c" * 64, "holds a record of other images or labels (the data under its name and root changed since: "
               "dataset.samples_sha256)"),
    (DIGEST, None)])
def test_a_string_digest_is_compared_as_before(value: str, reason: str | None) -> None:
    fresh = fresh_record()
    fresh.dataset["samples_sha256"] = DIGEST
    old = copy.deepcopy(fresh)
    old.dataset["samples_sha256"] = value
    assert stale_reason(old, fresh) == reason
