"""The noise probes count the inputs whose logits were NaN or infinite, per level (``non_finite_inputs``), and the
``non-finite-logits`` flag names them: noise probe, kind, level, count.

Before: a model returning NaN only on noisy inputs got a low noise score (a NaN draw counts as misclassified) and no
flag said why; for a randomized model (plurality verdicts) the flag was off altogether. Records written before the
count lack the field: they still load, render and diff, and the flag calls their noise probes unknown, not clean."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor

from attacks.cascade import AttackContractError
from attacks.noise import run_noise_probe
from attacks.verdicts import Verdict, classify
from kwta_robust.api import evaluate_model
from kwta_robust.cli import main
from kwta_robust.diagnostics import Thresholds, run_checks
from kwta_robust.record_checks import check_record
from kwta_robust.results import RecordError, load_record
from test_non_finite_logits import NaNOffGrid, grid_data

CONFIG = {"n_examples": 12, "batch_size": 12, "seed": 0, "mode": "independent",
          "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": [{"attack": "fgsm"}],
          "noise": [{"kind": "gaussian", "levels": [0.0, 0.1, 0.2]}]}


class NaNOnSecondCall(torch.nn.Module):
    """Logits ``x @ I`` (the input is its own logits); on its second call row 0 is NaN: one bad draw of three."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        out = x.clone()
        if self.calls == 2:
            out[0] = float("nan")
        return out


class RandomizedNaNOffGrid(NaNOffGrid):
    """:class:`NaNOffGrid` plus a small draw of torch's global RNG in every pass: a randomized model (plurality
    verdicts), NaN off the data's grid in every draw."""

    def forward(self, x: Tensor) -> Tensor:
        out = super().forward(x)
        return out + 1e-3 * torch.randn_like(out)


def nan_flag(record) -> object:
    return next(f for f in record.diagnostics if f.code == "non-finite-logits")


def test_the_probe_counts_noisy_inputs_with_non_finite_logits_per_level() -> None:
    x, y = grid_data()  # the data: finite logits; any noisy input is off the 1/255 grid: NaN
    result = run_noise_probe(NaNOffGrid().eval(), x, y, "gaussian", levels=[0.0, 0.1, 0.2], draws=2)
    assert result.accuracy == (1.0, 0.0, 0.0)
    assert result.non_finite_inputs == (0, 12, 12)
    assert result.to_dict()["non_finite_inputs"] == [0, 12, 12]


def test_a_plurality_verdict_says_which_inputs_had_a_non_finite_draw() -> None:
    x = torch.eye(3)
    y = torch.arange(3)  # each row's own class
    verdict = classify(NaNOnSecondCall(), x, y, draws=3)
    assert verdict.pred.tolist() == [0, 1, 2]  # row 0: two finite votes of three still win
    assert verdict.margin.isfinite().all()  # vote shares: the margin cannot show the NaN draw
    assert verdict.non_finite.tolist() == [True, False, False]


def test_a_verdict_returning_a_verdict_is_counted_and_bare_bools_are_unknown() -> None:
    x, y = grid_data()
    model = NaNOffGrid().eval()
    counted = run_noise_probe(model, x, y, "gaussian", levels=[0.0, 0.1], verdict=lambda i, t: classify(model, i, t))
    assert counted.non_finite_inputs == (0, 12) and counted.accuracy == (1.0, 0.0)
    bools = run_noise_probe(model, x, y, "gaussian", levels=[0.0, 0.1],
                            verdict=lambda i, t: classify(model, i, t).pred == t)
    assert bools.non_finite_inputs is None and bools.to_dict()["non_finite_inputs"] is None
    assert bools.accuracy == counted.accuracy


def test_a_verdict_whose_non_finite_is_not_one_bool_per_sample_is_one_line() -> None:
    x, y = grid_data()
    bad = Verdict(y.clone(), torch.zeros(12), torch.zeros(12), torch.zeros(12))  # float, not bool
    with pytest.raises(AttackContractError) as exc:
        run_noise_probe(NaNOffGrid().eval(), x, y, "gaussian", levels=[0.1], verdict=lambda i, t: bad)
    assert str(exc.value) == ("noise: verdict returned a Verdict whose pred or non_finite is not one entry per "
                              "sample [12] (non_finite: bool)")


def test_the_record_holds_the_count_and_the_flag_names_probe_level_and_count() -> None:
    x, y = grid_data()
    record = evaluate_model(NaNOffGrid().eval(), CONFIG, x, y, threads=1, progress=False)
    check_record(record, "record")
    assert record.noise[0].result["non_finite_inputs"] == [0, 12, 12]
    flag = nan_flag(record)
    assert flag.evidence["noise"] == [{"kind": "gaussian", "level": 0.1, "inputs": 12},
                                      {"kind": "gaussian", "level": 0.2, "inputs": 12}]
    assert ("12 inputs of noise probe gaussian at level 0.1; 12 inputs of noise probe gaussian at level 0.2"
            in flag.message)
    assert "a noise score is then partly made of such failures" in flag.message


def test_a_randomized_models_noise_probe_feeds_the_flag_through_its_plurality_verdicts() -> None:
    x, y = grid_data()
    record = evaluate_model(RandomizedNaNOffGrid().eval(), {**CONFIG, "verdict_draws": 3}, x, y, threads=1,
                            progress=False)
    assert record.provenance["randomness"]["draws"] == 3
    assert record.noise[0].result["non_finite_inputs"] == [0, 12, 12]
    flag = nan_flag(record)  # clean and attacked margins are vote shares there: only the noise probe is counted
    assert flag.evidence == {"clean": 0, "attacks": [], "noise": [{"kind": "gaussian", "level": 0.1, "inputs": 12},
                                                                  {"kind": "gaussian", "level": 0.2, "inputs": 12}]}


@pytest.fixture(scope="module")
def old_and_new(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A record of the NaN model, and the same record as written before the count (the field removed)."""
    x, y = grid_data()
    folder = tmp_path_factory.mktemp("records")
    new = folder / "new.json"
    evaluate_model(NaNOffGrid().eval(), CONFIG, x, y, out_path=new, threads=1, progress=False)
    data = json.loads(new.read_text())
    del data["noise"][0]["result"]["non_finite_inputs"]
    old = folder / "old.json"
    old.write_text(json.dumps(data))
    return old, new


def test_an_old_record_loads_and_its_noise_probe_is_unknown_not_clean(old_and_new: tuple[Path, Path]) -> None:
    record = load_record(old_and_new[0])
    check_record(record, "old")
    flag = next(f for f in run_checks(record, Thresholds()) if f.code == "non-finite-logits")
    assert "noise" not in flag.evidence and flag.evidence["noise_uncounted"] == ["gaussian"]
    assert "(noise probe(s) gaussian: not counted in this record, unknown)" in flag.message


def test_records_with_and_without_the_count_render_and_diff(old_and_new: tuple[Path, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    old, new = old_and_new
    assert main(["table", str(old), str(new), "--format", "md"]) == 0
    assert "12 inputs of noise probe gaussian at level 0.1" in capsys.readouterr().out  # the new record's flag
    assert main(["report", str(old), str(new), "--out", str(tmp_path / "r.html")]) == 0
    assert "12 inputs of noise probe gaussian at level 0.2" in (tmp_path / "r.html").read_text()
    capsys.readouterr()
    assert main(["diff", str(old), str(new)]) == 1
    assert "noise[0].result.non_finite_inputs (noise gaussian): only in the second" in capsys.readouterr().out


@pytest.mark.parametrize("value, shown", [([0, -1, 3], "non_finite_inputs[1] must be an integer >= 0, got -1"),
                                          ("3", "non_finite_inputs must be a list of integers >= 0 or null, got '3'")])
def test_a_damaged_count_is_one_line(old_and_new: tuple[Path, Path], tmp_path: Path, value, shown: str) -> None:
    data = json.loads(old_and_new[1].read_text())
    data["noise"][0]["result"]["non_finite_inputs"] = value
    damaged = tmp_path / "d.json"
    damaged.write_text(json.dumps(data))
    with pytest.raises(RecordError) as exc:
        check_record(load_record(damaged), "d.json")
    assert str(exc.value) == f"d.json: noise[0].result.{shown}"
