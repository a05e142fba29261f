"""Records and tables that told a reader less (or other) than the run found (session 53).

* ``relu_calls: 0`` was left out of a record (``detection`` and ``model``), so "the probe saw no ReLU run" read as
  "written before the probe counted them"; it is written now, and ``diff`` against a record without it says only
  the description changed.
* A record written before the probe counted ReLUs, resumed, kept the describer's ``none`` for a model whose
  ``F.relu`` calls the probe now sees: the kept probe gets its count and the record names the model ``relu
  (detected)`` (its numbers are the uninterrupted run's).
* A model holding an ``nn.ReLU`` it never calls, gated by top-k (Xiao et al.'s kWTA ResNet without ``use_relu``),
  was printed ``relu + top-k ...``: with ``relu_calls`` 0 it is the gates alone.
* The matrices' long table gave a noise score's ``correct`` (correct answers summed over the levels, averaged over
  the draws) beside ``n`` images: its ``correct_unit`` column says what ``correct`` counts.
* ``grid: {kwta_ratios: 2}`` was refused as ``grid.kwta_ratios[0]``, a list the user never wrote.
* ``table --format latex`` of a full suite wrote a 40-column ``tabular`` without a word: it hints ``--layout long``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

from wild_kwta_models import seeded as _seeded
from kwta_robust.cli import main
from kwta_robust.errors import ConfigError
from kwta_robust.formats import render_records_as_matrices, render_stdout
from kwta_robust.matrix import LONG_HEADERS, build_matrices, long_table
from kwta_robust.report import cell_text
from kwta_robust.results import load_record
from kwta_robust.sweep.grid import Grid


class TopK(nn.Module):
    """Keeps each sample's 4 largest of 16 features."""

    def forward(self, h: Tensor) -> Tensor:
        return h * (h >= h.topk(4, dim=1).values[:, -1:])


class Block(nn.Module):
    """Xiao's kWTA block: an ``nn.ReLU`` built always, called only with ``use_relu`` (here: never)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.gate, self.relu = nn.Linear(16, 16), TopK(), nn.ReLU()

    def forward(self, h: Tensor) -> Tensor:
        return self.gate(self.fc(h)) + h


class Net(nn.Module):
    """``[N, 1, 8, 8] -> [N, 10]`` (digits): a stem, ``act``, ``blocks``, a head."""

    def __init__(self, act, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.stem, self.act, self.blocks, self.head = nn.Linear(64, 16), act, nn.Sequential(*blocks), nn.Linear(16, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.act(self.stem(x.flatten(1)))))



def xiao_kwta() -> nn.Module:
    """Top-k gates everywhere, two ``nn.ReLU`` held and none called."""
    return _seeded(lambda: Net(TopK(), [Block(), Block()]))


def relu_net() -> nn.Module:
    """One ``F.relu`` call, no module the describer recognises."""
    return _seeded(lambda: Net(F.relu, [nn.Linear(16, 16)]))


def tanh_net() -> nn.Module:
    """No ReLU and no gate."""
    return _seeded(lambda: Net(torch.tanh, [nn.Linear(16, 16)]))


CONFIG = {"dataset": "digits", "n_examples": 6, "batch_size": 6, "device": "cpu", "seed": 0,
          "threats": [{"norm": "linf", "epsilons": [0.1, 0.2, 0.3]}],
          "attacks": [{"attack": "pgd", "label": f"pgd-{i}", "params": {"steps": 1}} for i in range(2)],
          "noise": [{"kind": "numenta", "draws": 3, "levels": [0.0, 0.1, 0.2]}],
          "diagnostics": {"budget_check": {"enabled": False}}}


def evaluate(config: Path, name: str, out: Path) -> Path:
    assert main(["evaluate", "--model-factory", f"test_rec53:{name}", "--config", str(config), "--out", str(out),
                 "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rec53") / "c.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


@pytest.fixture(scope="module")
def records(config: Path) -> dict[str, Path]:
    return {name: evaluate(config, name, config.parent / f"{name}.json") for name in ("xiao_kwta", "relu_net",
                                                                                      "tanh_net")}


def test_a_probe_that_saw_no_relu_run_writes_relu_calls_0(records) -> None:
    for name in ("tanh_net", "xiao_kwta"):
        record = load_record(records[name])
        assert record.detection["relu_calls"] == 0 and record.model["relu_calls"] == 0, name
    tanh = load_record(records["tanh_net"])
    assert tanh.model["activation"] == "tanh (detected)"  # 0 ReLUs is no reason to call it relu (detected); its
    # tanh calls, counted since (tests/test_act53.py), name it
    assert load_record(records["relu_net"]).model["relu_calls"] == 1


def test_diff_against_a_record_without_relu_calls_is_a_description_change(records, tmp_path: Path, capsys) -> None:
    new = json.loads(records["tanh_net"].read_text())
    old = json.loads(json.dumps(new))
    del old["model"]["relu_calls"], old["detection"]["relu_calls"]  # as a record written before has them
    (tmp_path / "old.json").write_text(json.dumps(old))
    capsys.readouterr()
    assert main(["diff", str(tmp_path / "old.json"), str(records["tanh_net"])]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:3] == ["  model.relu_calls: only in the second", "  detection.relu_calls: only in the second"]
    assert lines[-1].startswith("the results are the same: only what a newer version records about the model")
    assert main(["table", str(tmp_path / "old.json"), str(records["tanh_net"])]) == 0  # both still read


def test_a_record_written_before_relu_calls_resumed_names_the_relus_the_probe_sees(records, config: Path,
                                                                                   tmp_path: Path) -> None:
    done = json.loads(records["relu_net"].read_text())
    old = json.loads(json.dumps(done))
    for section in (old["model"], old["model"]["training"]):
        section.pop("activation_layers")
        section.pop("relu_calls", None)
        section["activation"] = "none"  # the describer's reading, as it was recorded
    del old["detection"]["relu_calls"]
    old.update(status="partial", results=old["results"][:1], worst_case=[])  # one unit kept
    path = tmp_path / "resumed.json"
    path.write_text(json.dumps(old))
    resumed = load_record(evaluate(config, "relu_net", path))
    assert resumed.status == "complete" and resumed.provenance.get("resumed_at")
    assert resumed.model["activation"] == "relu (detected)" and resumed.model["activation_layers"] == "none"
    assert resumed.model["training"]["activation"] == "relu (detected)"
    assert resumed.model["relu_calls"] == 1 and resumed.detection["relu_calls"] == 1
    assert re.search(r"\| relu_net +\| relu \(detected\) +\|", render_stdout([resumed], "md"))
    assert [r.robust.correct for r in resumed.results] == [r["robust"]["correct"] for r in done["results"]]


def test_a_relu_module_never_called_beside_top_k_gates_is_not_printed_relu(records, tmp_path: Path) -> None:
    record = load_record(records["xiao_kwta"])
    assert record.model["activation_layers"] == "relu" and record.model["num_relu_layers"] == 2
    md, latex = render_stdout([record], "md"), render_stdout([record], "latex")
    assert re.search(r"\| xiao_kwta +\| top-k 0.25 dense \(3 found by the probe\) +\|", md), md
    assert "relu +" not in md and "relu +" not in latex
    old = json.loads(records["xiao_kwta"].read_text())
    del old["model"]["relu_calls"], old["detection"]["relu_calls"]  # written before: it may have run them
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert "relu + top-k 0.25 dense" in render_stdout([load_record(tmp_path / "old.json")], "md")


def test_the_long_matrix_table_says_what_correct_counts(records) -> None:
    record = load_record(records["relu_net"])
    table = long_table(build_matrices([record], noise_levels=True))
    assert LONG_HEADERS[-1] == "correct_unit" and table.headers == LONG_HEADERS
    units = {cell_text(row[0]): cell_text(row[-1]) for row in table.rows}
    assert units["clean"] == units["pgd-0"] == units["worst case"] == "images (of n)"
    assert units["noise numenta"] == "image-levels (of 3 × n), mean over 3 draws"
    assert units["noise numenta level 0.1"] == units["noise numenta level 0.2"] == "images (of n), mean over 3 draws"
    rows = list(csv.DictReader(io.StringIO(render_records_as_matrices([record], "csv"))))
    score = next(r for r in rows if r["metric"] == "noise numenta")
    assert score["correct_unit"] == "image-levels (of 3 × n), mean over 3 draws" and score["n"] == "6"
    assert float(score["correct"]) / (3 * 6) * 100 == pytest.approx(float(score["accuracy (%)"]), abs=1e-6)


@pytest.mark.parametrize(("grid", "field"), [
    ({"kwta_ratios": 2, "weight_sparsities": 0}, "grid.kwta_ratios: 2 is outside (0, 1]"),
    ({"kwta_ratios": 1, "weight_sparsities": 1.5}, "grid.weight_sparsities: 1.5 is outside [0, 1)"),
    ({"kwta_ratios": 1, "weight_sparsities": 0, "pruning_methods": "nope"},
     "grid.pruning_methods: unknown pruning method 'nope'"),
    ({"kwta_ratios": "x", "weight_sparsities": 0}, "grid.kwta_ratios: expected a number, got 'x'"),
])
def test_a_grid_axis_given_as_one_value_is_named_without_an_index(grid, field: str, tmp_path: Path, capsys) -> None:
    with pytest.raises(ConfigError) as caught:
        Grid.from_dict(grid)
    assert str(caught.value).startswith(field)
    for given, index in (([1, 2], 1), ([2], 0)):  # a list keeps the index of its value
        with pytest.raises(ConfigError, match=rf"^grid\.kwta_ratios\[{index}\]: 2 is outside"):
            Grid.from_dict({"kwta_ratios": given, "weight_sparsities": 0})
    sweep = yaml.safe_load(Path("eval_configs/sweep_mnist5k_3x3.yaml").read_text())
    sweep["grid"] = grid
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(sweep))
    capsys.readouterr()
    assert main(["sweep", str(tmp_path / "s.yaml"), "--out-dir", str(tmp_path / "out"), "--dry-run"]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(f"error: {field}")


def test_a_latex_table_wider_than_a_page_hints_the_long_layout(records, caplog, capsys) -> None:
    paths = [str(records["relu_net"])]
    with caplog.at_level(logging.WARNING, logger="kwta_robust.commands.table"):
        assert main(["table", "--format", "latex", *paths]) == 0
    latex = capsys.readouterr().out
    columns = len(re.search(r"\\begin\{tabular\}\{(\w+)\}", latex).group(1))
    hints = [r.getMessage() for r in caplog.records if "--layout long" in r.getMessage()]
    assert columns > 10 and hints == [f"--format latex: the wide table has {columns} columns, more than a page holds "
                                      "(about 10); --layout long writes a table per record with a row per attack and "
                                      "epsilon"]
    assert "--layout long" not in latex  # the LaTeX itself is unchanged
    caplog.clear()
    for args in (["--format", "latex", "--layout", "long"], ["--format", "md"]):
        with caplog.at_level(logging.WARNING, logger="kwta_robust.commands.table"):
            assert main(["table", *args, *paths]) == 0
    assert not [r for r in caplog.records if "--layout long" in r.getMessage()]
