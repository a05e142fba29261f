"""Record and report honesty items of the new-user audit: a run without the large-eps sanity attack says so
(``sanity-not-run``), a declared ``--grid-cell`` k/N that the layer probe contradicts is flagged
(``grid-cell-ratio``), the README says what ``model.activation`` means next to the tables' probe findings, a noise
line counts its draws in one correct form, and the paired comparison's note does not claim the same attacks next
to a note saying their settings differ."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn

from eval_helpers import make_record, make_result
from kwta_robust.api import evaluate_model
from kwta_robust.cli import main
from kwta_robust.detect import detect_layers
from kwta_robust.diagnostics import run_checks
from kwta_robust.diagnostics_base import detected_layers
from kwta_robust.layers import KWTA
from kwta_robust.matrix_checks import GRID_RATIO_FLAG, grid_ratio_conflict
from kwta_robust.paired import paired_table
from kwta_robust.report import activation_text, compare_table, detail_table
from kwta_robust.results import NoiseResult, load_record
from test_python_api import make_net, toy_data

#: A tiny run: 8 samples, PGD-2 at one threat point, no budget check (it adds an info flag of its own).
CONFIG: dict[str, Any] = {"n_examples": 8, "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.001]}],
                          "attacks": [{"attack": "pgd", "params": {"steps": 2}}],
                          "diagnostics": {"budget_check": {"enabled": False}}}
SANITY = {"attack": "pgd", "norm": "linf", "eps": 1, "params": {"steps": 2}}


def _evaluate(config: dict, **kw: Any) -> Any:
    x, y = toy_data()
    return evaluate_model(make_net().eval(), config, x[:8], y[:8], threads=1, **kw)


def test_a_run_without_the_sanity_attack_has_an_info_flag_naming_the_key() -> None:
    """Before: a config without diagnostics.sanity ran no large-eps check and neither the record nor the table said
    so; the table's missing large-eps-not-zero flag read as a passed check."""
    without = _evaluate(CONFIG)
    assert without.sanity == [] and without.config["diagnostics"]["sanity"] is None
    flags = [f for f in without.diagnostics if f.code == "sanity-not-run"]
    assert len(flags) == 1 and flags[0].severity == "info" and flags[0].evidence == {"config_key": "diagnostics.sanity"}
    assert flags[0].message.startswith("no large-eps sanity check ran (the config has no diagnostics.sanity)")
    assert flags[0].message.endswith("add diagnostics.sanity: {attack: pgd, norm: linf, eps: 1, params: {steps: 100}}")
    assert "info sanity-not-run: no large-eps sanity check ran" in "\n".join(compare_table([without]).notes)

    with_sanity = _evaluate({**CONFIG, "diagnostics": {**CONFIG["diagnostics"], "sanity": SANITY}})
    assert [r.label for r in with_sanity.sanity] == ["sanity-pgd"]
    assert "sanity-not-run" not in {f.code for f in with_sanity.diagnostics}


def test_no_sanity_flag_without_attacks_or_without_a_stored_config() -> None:
    pgd = make_result("pgd", [1, 0, 1, 0])
    no_attacks = make_record(n=4)
    no_attacks.config = {"seed": 0, "diagnostics": {"sanity": None}}  # noise probes only: no robustness claim
    assert "sanity-not-run" not in {f.code for f in run_checks(no_attacks)}
    hand_built = make_record([pgd])  # config {"seed": 0}: says nothing about the sanity attack
    assert "sanity-not-run" not in {f.code for f in run_checks(hand_built)}
    hand_built.config = {"seed": 0, "diagnostics": {"sanity": None}}
    assert [f.severity for f in run_checks(hand_built) if f.code == "sanity-not-run"] == ["info"]


def _declare(out: Any, cell: str) -> int:
    """``evaluate --grid-cell CELL`` of test_grid_cell's top-k MLP (4 of 32 hidden units) at ``out``."""
    return main(["evaluate", "--model-factory", "test_grid_cell:top_k_net", "--config", str(out.parent / "c.yaml"),
                 "--out", str(out), "--no-progress", "--grid-cell", cell])


def test_a_declared_ratio_the_layer_probe_contradicts_is_flagged(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Before: ``--grid-cell kwta_ratio=0.5`` on a model whose only gate keeps 4 of 32 units (k/N 0.125, as the
    tables print it) was accepted without a word and placed the record in row 0.5."""
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**CONFIG, "dataset": "digits", "batch_size": 8,
                                                     "device": "cpu"}))
    out = tmp_path / "topk.json"
    assert _declare(out, "kwta_ratio=0.5,weight_sparsity=0") == 0
    record = load_record(out)
    flags = [f for f in record.diagnostics if f.code == GRID_RATIO_FLAG]
    assert len(flags) == 1 and flags[0].severity == "warning"
    assert flags[0].message.startswith("declared --grid-cell kwta_ratio=0.5 but the layer probe measured k/N 4/32 "
                                       "(0.125) at its top-k gates in layer act;")
    assert flags[0].evidence == {"declared": 0.5, "measured_gates": ["act 4/32"]}
    warned = [r.message for r in caplog.records if r.levelname == "WARNING" and "but the layer probe" in r.message]
    assert warned == [flags[0].message]
    capsys.readouterr()
    assert main(["table", "--matrix", "--format", "wide", str(out)]) == 0
    assert "declared --grid-cell kwta_ratio=0.5 but the layer probe measured k/N 4/32" in capsys.readouterr().out
    # k = floor(0.1 * 32) = 3 by the package's rule, one unit from 4 (a ceil rule gives 4): not a contradiction
    for cell, flagged in (("kwta_ratio=0.125", False), ("kwta_ratio=0.1", False), ("kwta_ratio=1", True)):
        assert _declare(out, f"{cell},weight_sparsity=0") == 0
        found = [f.message for f in load_record(out).diagnostics if f.code == GRID_RATIO_FLAG]
        assert bool(found) is flagged, cell
    assert found[0].startswith("declared --grid-cell kwta_ratio=1 (the ReLU twin) but the layer probe measured")
    assert [r.flags for r in load_record(out).results] == [r.flags for r in record.results]  # nothing re-run


def _own_kwta_record(ratio: float, declared: float, **model: Any) -> Any:
    """A record of an MLP built from the package's KWTA layer at ``ratio`` over 50 units (the probe's detection),
    declared at ``declared``."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 50), KWTA(ratio=ratio), nn.Linear(50, 10)).eval()
    record = make_record(n=4)
    record.detection = detect_layers(net, toy_data()[0][:8], log=False).to_dict()
    record.model.update(model, grid_cell={"kwta_ratio": declared, "weight_sparsity": 0.0, "pruning_method": "dense"})
    return record


@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.2, 0.29, 0.5])
def test_the_package_own_layers_at_their_ratio_never_flag(ratio: float) -> None:
    """As a sweep builds its cells: a kWTA layer of k/N R declared at R is never a contradiction (0.29 · 50 =
    14.5: k 14, the package's floor rule); four times the ratio always is."""
    assert grid_ratio_conflict(_own_kwta_record(ratio, ratio)) is None
    assert grid_ratio_conflict(_own_kwta_record(ratio, min(1.0, 4 * ratio))) is not None


def test_ambiguous_or_missing_gates_are_not_judged() -> None:
    record = _own_kwta_record(0.1, 0.5)
    assert grid_ratio_conflict(record) is not None
    other = dict(record.detection["layers"][0], name="second")
    # a second gate at k/N 0.8 (k 40 of 50): no one ratio. Neither gate is within a unit of the declared 0.5 (k 25),
    # so only the ambiguity keeps the record from being judged; alone, the 0.8 gate contradicts 0.5 as well
    other["evidence"] = dict(other["evidence"], k=40, group_size=50)
    record.detection["layers"] = [other]
    assert grid_ratio_conflict(record).startswith("declared --grid-cell kwta_ratio=0.5 but the layer probe measured "
                                                  "k/N 40/50 (0.8) at its top-k gates in layer second;")
    record.detection["layers"] = [_own_kwta_record(0.1, 0.5).detection["layers"][0], other]
    assert grid_ratio_conflict(record) is None
    record.detection = {}
    assert grid_ratio_conflict(record) is None  # no gate found: nothing measured


def test_a_noise_probe_of_one_draw_reads_1_draw_in_every_table() -> None:
    """Before: the detail table's note read "1 draws" and the compare table's noise-score note "1 draw(s)"."""
    record = make_record([make_result("pgd", [1, 0, 1, 0])], label="kwta")
    record.noise = [NoiseResult("numenta", [0.0, 0.5], 1, 0, {"noise_score": 5.0, "num_samples": 4,
                                                              "params": {"value": 1.0}}, 0.1)]
    detail, = [n for n in detail_table(record).notes if n.startswith("noise numenta")]
    # in the words of the other notes (it read "noise numenta (value=1): levels [0.0, 0.5], ...")
    assert detail == "noise numenta: levels 0 / 0.5, 1 draw, noise pixel value 1, noise score 5"
    score, = [n for n in compare_table([record]).notes if n.startswith("noise score:")]
    assert "levels 0 / 0.5, 1 draw, noise pixel value 1;" in score
    record.noise[0] = replace(record.noise[0], draws=3)
    assert "levels 0 / 0.5, 3 draws, noise pixel value 1;" in [n for n in compare_table([record]).notes
                                                                if n.startswith("noise score:")][0]


def test_the_paired_note_claims_the_same_attacks_only_when_their_settings_agree() -> None:
    """Before: "Both accuracies are upper bounds measured with the same attacks" stood right above the note that
    PGD's steps differ between the two models."""
    def record(label: str, steps: int) -> Any:
        pgd = replace(make_result("pgd", [1, 0, 1, 0, 1, 1]), settings={"steps": steps})
        return make_record([pgd], label=label)

    same = paired_table([record("kwta", 10), record("relu", 10)]).notes
    assert "Both accuracies are upper bounds measured with the same attacks: a significant gap says" in same[0]
    assert len(same) == 1
    differ = paired_table([record("kwta", 10), record("relu", 40)]).notes
    assert differ[1].startswith("attack settings differ between the records")
    assert "same attacks" not in differ[0]
    assert ("Both accuracies are upper bounds measured with attacks whose settings differ between the models "
            "(below), so a gap may come from the attacks as much as from the models; even a significant gap says "
            "the measured numbers differ") in differ[0]


def test_the_readme_says_what_model_activation_means() -> None:
    """Before: a model of one's own with a top-k gate had ``model.activation: "none"`` in its record while the
    tables printed ``top-k 0.25 ...``, and nothing said which one to believe. The field keeps its value (readers of
    records rely on it); the README now says what it means and that the tables show the layer probe's findings.
    Since session 50 the field says what the probe found (``top-k (detected)``), the describer's reading kept as
    ``activation_layers``."""
    record = _evaluate(CONFIG)
    assert (record.model["activation"], record.model["activation_layers"]) == ("top-k (detected)", "none")
    assert [l["name"] for l in detected_layers(record, "gate")] == ["3"]
    shown = activation_text(record)
    assert shown == "top-k 0.25 dense (1 found by the probe)"
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8").split())
    assert ("then it is `top-k (detected)`, the describer's reading is kept as `activation_layers` (`relu` or "
            "`none`)") in readme
    assert "the layer probe's findings (`detection`) hold what the model does" in readme
    assert f"The tables show those instead of `none` (`{shown}`: k/N, grouping and number of gates)" in readme
