"""``compare --grid-cell LABEL=kwta_ratio=R,weight_sparsity=S``: each compared model of your own declares its cell
in a robustness matrix, as ``evaluate --grid-cell`` does for one (the same parsing, checks, flags and
``model.grid_cell``), so ``table --matrix`` places compare records beside evaluate ones. Before, compare had no such
option: its records of models of your own could not join a matrix (``table --matrix`` told the user to evaluate
each model again)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from kwta_robust.cli import main
from kwta_robust.data import load_dataset
from kwta_robust.results import load_record
from test_cli_eval import run_error
from test_grid_cell import TopKMLP

MODULE = "test_gridcell50_compare"


def make_net(k: int | None = None) -> nn.Module:
    """One factory for a foreign top-k MLP (``k`` of 32 hidden units) and its ReLU twin (``k=None``)."""
    return TopKMLP(k)


def trained(k: int | None) -> nn.Module:
    """:func:`make_net` trained briefly on the digits' train split (seeded), so the matrices hold more than zeros."""
    net, train = make_net(k), load_dataset("digits", "train")
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    for start in list(range(0, 1200, 100)) * 3:
        loss = nn.functional.cross_entropy(net(train.x[start:start + 100]), train.y[start:start + 100])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net.eval()


def _setup(tmp_path: Path) -> tuple[str, dict[str, str]]:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": "digits", "n_examples": 6, "batch_size": 6, "device": "cpu", "seed": 0,
        "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": [{"attack": "pgd", "params": {"steps": 2}}],
    }))
    weights = {}
    for name, k in (("kwta", 4), ("relu", None), ("k8", 8)):
        torch.save(trained(k).state_dict(), tmp_path / f"{name}.pt")
        weights[name] = str(tmp_path / f"{name}.pt")
    return str(config), weights


def _compare(config: str, weights: dict[str, str], out_dir: Path, *extra: str) -> list[str]:
    return ["compare", f"{MODULE}:make_net={weights['kwta']}", f"{MODULE}:make_net={weights['relu']}",
            "--factory-kwargs", 'kwta={"k": 4}', "--factory-kwargs", "relu={}", "--config", config,
            "--out-dir", str(out_dir), "--no-progress", *extra]


def _evaluate(config: str, weights: dict[str, str], name: str, kwargs: str, cell: str, out: Path) -> list[str]:
    return ["evaluate", "--model-factory", f"{MODULE}:make_net", "--weights", weights[name], "--factory-kwargs",
            kwargs, "--config", config, "--out", str(out), "--no-progress", "--grid-cell", cell]


def _matrix_cells(capsys: pytest.CaptureFixture, records: list[Path]) -> dict[tuple, float]:
    capsys.readouterr()
    assert main(["table", "--matrix", "--format", "json", *map(str, records)]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    return {(r["kwta_ratio"], r["weight_sparsity"], r["metric"], r["norm"], r["eps"]):
            (r["record"], r["n"], r["correct"], r["accuracy (%)"], r["warnings"]) for r in rows}


def test_compare_records_declare_their_cells_and_join_a_matrix(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    config, weights = _setup(tmp_path)
    cmp = tmp_path / "cmp"
    assert main(_compare(config, weights, cmp, "--grid-cell", "kwta=kwta_ratio=0.125,weight_sparsity=0",
                         "--grid-cell", "relu = kwta_ratio=1,weight_sparsity=0")) == 0
    ev = tmp_path / "ev"
    for name, kwargs, cell in (("kwta", '{"k": 4}', "kwta_ratio=0.125,weight_sparsity=0"),
                               ("relu", "{}", "kwta_ratio=1,weight_sparsity=0"),
                               ("k8", '{"k": 8}', "kwta_ratio=0.25,weight_sparsity=0")):
        assert main(_evaluate(config, weights, name, kwargs, cell, ev / f"{name}.json")) == 0
    for name in ("kwta", "relu"):  # the declared cell exactly as evaluate's record carries it, with its flags
        compared, evaluated = load_record(cmp / f"{name}.json"), load_record(ev / f"{name}.json")
        assert compared.model["grid_cell"] == evaluated.model["grid_cell"]
        assert [f.code for f in compared.diagnostics] == [f.code for f in evaluated.diagnostics]
    assert load_record(cmp / "kwta.json").model["grid_cell"] == {"kwta_ratio": 0.125, "weight_sparsity": 0.0,
                                                                 "pruning_method": "none"}
    mixed = _matrix_cells(capsys, [cmp / "kwta.json", cmp / "relu.json", ev / "k8.json"])
    alone = _matrix_cells(capsys, [ev / "kwta.json", ev / "relu.json", ev / "k8.json"])
    assert {key[:2] for key in mixed} == {(0.125, 0.0), (1.0, 0.0), (0.25, 0.0)}
    assert mixed == alone  # the compare records' cells hold the numbers evaluate records for the same models
    assert {v[2] for v in mixed.values()} - {0}  # not all zero: trained nets


def test_a_finished_compare_takes_its_cells_when_run_again(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The matrix's error for a compare record names compare's --grid-cell; run again with it, the compare resumes
    its finished records (nothing is evaluated again) and the matrix places them."""
    config, weights = _setup(tmp_path)
    cmp = tmp_path / "cmp"
    assert main(_compare(config, weights, cmp)) == 0
    before = load_record(cmp / "kwta.json")
    line = run_error(capsys, ["table", "--matrix", str(cmp / "kwta.json"), str(cmp / "relu.json")])
    # 0.1: floor(0.1 · 32) = 3, within one unit of k = 4
    assert line.endswith("or, for a compare record, run its compare again adding --grid-cell "
                         "'kwta=kwta_ratio=0.1,weight_sparsity=S' (nothing is evaluated again)")
    assert main(_compare(config, weights, cmp, "--grid-cell", "kwta=kwta_ratio=0.1,weight_sparsity=0",
                         "--grid-cell", "relu=kwta_ratio=1,weight_sparsity=0")) == 0
    after = load_record(cmp / "kwta.json")
    assert after.provenance.get("resumed_at")
    assert after.results == before.results  # nothing evaluated again
    cells = _matrix_cells(capsys, [cmp / "kwta.json", cmp / "relu.json"])
    assert {key[:2] for key in cells} == {(0.1, 0.0), (1.0, 0.0)}


def test_a_declared_cell_the_model_contradicts_is_warned_and_flagged_as_evaluate_does(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """k/N 0.5 where the gates keep 4 of 32, weight sparsity 0.5 of dense weights: the same warnings and
    ``grid-cell-ratio`` / ``grid-cell-sparsity`` flags as ``evaluate --grid-cell`` gives."""
    config, weights = _setup(tmp_path)
    cell = "kwta_ratio=0.5,weight_sparsity=0.5"
    with caplog.at_level("WARNING"):
        assert main(_compare(config, weights, tmp_path / "cmp", "--no-transfer", "--grid-cell", f"kwta={cell}")) == 0
    compared_warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert main(_evaluate(config, weights, "kwta", '{"k": 4}', cell, tmp_path / "ev.json")) == 0
    compared, evaluated = load_record(tmp_path / "cmp" / "kwta.json"), load_record(tmp_path / "ev.json")
    assert compared.model["grid_cell"] == evaluated.model["grid_cell"]
    for code in ("grid-cell-ratio", "grid-cell-sparsity"):
        flag = next(f for f in compared.diagnostics if f.code == code)
        assert flag.to_dict() == next(f for f in evaluated.diagnostics if f.code == code).to_dict()
        assert any(flag.message in text for text in compared_warnings), code  # warned, as evaluate warns
    assert "grid_cell" not in load_record(tmp_path / "cmp" / "relu.json").model  # only the label declared


def test_grid_cells_that_name_no_model_repeat_or_do_not_parse_are_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config, weights = _setup(tmp_path)
    cmp = tmp_path / "cmp"

    def error(*cells: str) -> str:
        args: list[str] = []
        for cell in cells:
            args += ["--grid-cell", cell]
        return run_error(capsys, _compare(config, weights, cmp, "--dry-run", *args))

    assert error("kwat=kwta_ratio=0.125,weight_sparsity=0") == (
        "error: --grid-cell kwat=...: 'kwat' names no model; the models' labels are kwta, relu (--labels names them)")
    assert error("kwta_ratio=0.125,weight_sparsity=0") == (
        "error: --grid-cell: 'kwta_ratio=0.125,weight_sparsity=0' names no model; write "
        "LABEL=kwta_ratio=R,weight_sparsity=S, e.g. kwta=kwta_ratio=0.1,weight_sparsity=0 (the models' labels are "
        "kwta, relu (--labels names them))")
    assert error("kwta=kwta_ratio=0.125,weight_sparsity=0", "kwta=kwta_ratio=0.25,weight_sparsity=0") == (
        "error: --grid-cell: kwta=... is given twice; give each label once")
    assert error("kwta=kwta_ratio=0.125") == (
        "error: --grid-cell kwta=...: write e.g. kwta_ratio=0.1,weight_sparsity=0.5 (optionally "
        ",pruning_method=magnitude); missing weight_sparsity in 'kwta_ratio=0.125'")
    assert error("relu=kwta_ratio=2,weight_sparsity=0").startswith(
        "error: --grid-cell relu=...: kwta_ratio 2 is outside (0, 1]")
    assert error("kwta=kwta_ratio=1,weight_sparsity=0", "relu=kwta_ratio=1.0,weight_sparsity=0") == (
        "error: --grid-cell: kwta and relu are both declared at kwta_ratio=1,weight_sparsity=0 (none); "
        "`table --matrix` takes one record per cell: declare each model its own")
    assert not cmp.exists()
    # --labels name the models, and so their cells
    argv = _compare(config, weights, cmp, "--dry-run", "--labels", "a,b", "--grid-cell",
                    "a=kwta_ratio=0.125,weight_sparsity=0")
    argv[argv.index('kwta={"k": 4}')], argv[argv.index("relu={}")] = 'a={"k": 4}', "b={}"
    assert main(argv) == 0
