"""Records written by ``kwta-robust compare`` join a robustness matrix as ``evaluate``'s do (README section 3).

Before, a compare record's stored worst case also held its transfer attacks (crafted on whichever models it was
compared with), so beside an ``evaluate`` record of the same config one side was marked not comparable ("worst case
over pgd; the other cells' over pgd, transfer"), and a ``transfer`` matrix put attacks from different source models
in one table. Now the matrices read a compare record as evaluate writes it (:mod:`kwta_robust.matrix_transfer`)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from eval_helpers import make_record, make_result
from kwta_robust.checkpoint import save_checkpoint
from kwta_robust.cli import main
from kwta_robust.matrix import WORST, build_matrices, legend
from kwta_robust.models import ModelSpec
from kwta_robust.results import EvalRecord, WorstCase, load_records
from test_cli_eval import write_config


def _checkpoint(path: Path, activation: object) -> str:
    torch.manual_seed(0)
    spec = ModelSpec.from_args("mlp", activation=activation, num_classes=10, in_channels=1, input_size=28, hidden=[16])
    save_checkpoint(path, spec.build(), spec, {"dataset": "mnist5k", "data_split_seed": 0})
    return str(path)


def test_compare_records_fill_their_cells_as_evaluate_records_of_the_same_models(tmp_path: Path) -> None:
    config = str(write_config(tmp_path / "c.yaml", n_examples=6, batch_size=6, noise=[],
                              threats=[{"norm": "linf", "epsilons": [0.1]}], diagnostics={"enabled": False},
                              attacks=[{"attack": "pgd", "params": {"steps": 1}}]))
    kwta = _checkpoint(tmp_path / "k01.pt", {"name": "kwta", "ratio": 0.1})
    relu = _checkpoint(tmp_path / "relu.pt", "relu")
    other = _checkpoint(tmp_path / "k02.pt", {"name": "kwta", "ratio": 0.2})
    assert main(["compare", kwta, relu, "--config", config, "--out-dir", str(tmp_path / "cmp"), "--no-progress"]) == 0
    for path in (kwta, relu, other):
        assert main(["evaluate", path, "--config", config, "--out", str(tmp_path / "ev" / f"{Path(path).stem}.json"),
                     "--no-progress"]) == 0
    compared = load_records([tmp_path / "cmp" / "k01.json", tmp_path / "cmp" / "relu.json"])
    assert {r.source for rec in compared for r in rec.results} == {None, "k01", "relu"}  # transfer attacks ran
    evaluated = load_records(sorted((tmp_path / "ev").glob("*.json")))

    mixed = build_matrices(compared + [r for r in evaluated if r.label == "k02"])
    assert [m.warnings for m in mixed] == [{}] * len(mixed)  # no cell marked not comparable
    assert "transfer" not in {m.metric for m in mixed}
    assert any(line.startswith("records with transfer attacks: their transfer attacks") for line in legend(mixed))

    def cells(records: list[EvalRecord]) -> list[tuple[str, dict]]:
        return [(m.title, m.cells) for m in build_matrices(records)]

    assert cells(compared) == cells([r for r in evaluated if r.label != "k02"])  # exactly evaluate's numbers
    stored = json.loads((tmp_path / "cmp" / "k01.json").read_text())["worst_case"][0]["attacks"]
    assert stored == ["pgd", "transfer"]  # the record itself keeps its transfer attacks and worst case


def test_a_sample_only_the_transfer_attack_broke_is_robust_in_the_matrix_worst_case() -> None:
    from kwta_robust.matrix_transfer import suite_view

    pgd = make_result("pgd", [1, 1, 0, -1], eps=0.1)
    transfer = make_result("transfer", [1, 0, -1, -1], eps=0.1, kind="transfer", position=1, cumulative=True)
    transfer.source = "relu"
    record = make_record([pgd, transfer], clean_flags=[1, 1, 1, 0])
    record.model["kwta_ratio"] = 0.1
    record.worst_case = [WorstCase("linf", 0.1, "0.1", ["pgd", "transfer"], pgd.robust.of(1, 4), [-1, 1, 0, -2])]
    view = suite_view(record)
    assert [r.label for r in view.results] == ["pgd"]
    assert view.worst_case[0].attacks == ["pgd"] and view.worst_case[0].first_broken_by == [-1, -1, 0, -2]
    assert (view.worst_case[0].robust.correct, view.worst_case[0].robust.n) == (2, 4)
    assert record.worst_case[0].robust.correct == 1 and len(record.results) == 2  # the record is left as it was
    matrix = next(m for m in build_matrices([record]) if m.metric == WORST)
    assert [a.correct for a in matrix.cells.values()] == [2]
