"""Randomized defenses and EOT, fuzzed end to end: the caller's global RNGs, reproducibility and plurality ties.

Found by the randomized-defenses fuzz round (each test failed before its fix):

* ``evaluate`` (and ``compare``) of a model drawing from torch's, NumPy's or Python's global RNG left the caller's
  generators advanced: the model checks before the first verdict (:func:`kwta_robust.model_checks.probe_for_data`)
  ran its forward outside any seeded scope, three times; so did the check of every transfer source.
* a record's ``provenance.randomness`` flags (``randomized``, ``seedable``, ``common_draws``) of another type than
  a JSON boolean loaded and were read by truthiness (``"no"`` as true).
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from kwta_robust.evaluate import evaluate
from kwta_robust.record_checks import check_record
from kwta_robust.results import RecordError, load_record
from test_randomized_models import Linear3, NoisyInput, NumpyNoise, PythonRandomShift, toy_config, toy_data


def _caller_states() -> tuple[torch.Tensor, tuple, tuple]:
    return torch.get_rng_state().clone(), np.random.get_state(), random.getstate()


def _same_states(a: tuple[torch.Tensor, tuple, tuple], b: tuple[torch.Tensor, tuple, tuple]) -> bool:
    numpy_same = a[1][0] == b[1][0] and np.array_equal(a[1][1], b[1][1]) and a[1][2:] == b[1][2:]
    return torch.equal(a[0], b[0]) and numpy_same and a[2] == b[2]


@pytest.mark.parametrize("build", [NoisyInput, NumpyNoise, PythonRandomShift, Linear3])
def test_evaluate_leaves_the_callers_global_rngs_as_they_were(build) -> None:
    """Before: the model checks ran a randomized model's forward unseeded, advancing the caller's generator."""
    model, data = build(), toy_data(12)  # built first: nn.Linear's init draws from torch's global RNG
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    before = _caller_states()
    record = evaluate(model, data, toy_config(), {}, progress=False)
    assert record.provenance["randomness"]["randomized"] is (build is not Linear3)
    assert _same_states(before, _caller_states())
    # and the caller's streams go on from where they were: the next draws are those of the seeds set above
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    expected = (torch.rand(1), np.random.random(), random.random())
    torch.set_rng_state(before[0])
    np.random.set_state(before[1])
    random.setstate(before[2])
    assert (torch.rand(1), np.random.random(), random.random()) == expected


def test_a_randomized_transfer_source_leaves_the_callers_global_rng_as_it_was() -> None:
    """Before: every transfer source's model check ran its forward outside any seeded scope."""
    model, source, data = Linear3(), NoisyInput(), toy_data(12)
    cfg = toy_config(attacks=[{"attack": "pgd", "params": {"steps": 2}}])
    torch.manual_seed(11)
    before = _caller_states()
    record = evaluate(model, data, cfg, {}, transfer_sources={"noisy": source}, progress=False)
    assert record.result("transfer", "linf", 0.1).source == "noisy"
    assert _same_states(before, _caller_states())


@pytest.mark.parametrize("key, value", [("randomized", "no"), ("seedable", None), ("common_draws", "yes"),
                                        ("randomized", 1)])
def test_a_damaged_randomness_flag_in_a_record_is_one_error_line(tmp_path, key, value) -> None:
    """Before: ``provenance.randomness.randomized: "no"`` loaded, and was read as true (``bool("no")``): the record of
    a deterministic model counted as a randomized one's, and the reverse for ``seedable``."""
    path = tmp_path / "r.json"
    evaluate(NoisyInput(), toy_data(12), toy_config(verdict_draws=3), {}, progress=False, out_path=path)
    data = json.loads(path.read_text())
    assert data["provenance"]["randomness"]["common_draws"] is True  # the field as written: a JSON boolean
    data["provenance"]["randomness"][key] = value
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match=rf"provenance\.randomness\.{key} must be true or false, got "):
        check_record(load_record(path), str(path))


def test_table_of_a_record_with_a_damaged_randomness_flag_exits_2_with_one_line(tmp_path, capsys) -> None:
    from kwta_robust.cli import main

    path = tmp_path / "r.json"
    evaluate(NoisyInput(), toy_data(12), toy_config(verdict_draws=3), {}, progress=False, out_path=path)
    data = json.loads(path.read_text())
    data["provenance"]["randomness"]["randomized"] = "no"
    path.write_text(json.dumps(data))
    assert main(["table", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        f"error: {path}: provenance.randomness.randomized must be true or false, got 'no'"]
