"""Mutation round on :mod:`kwta_robust.api` and :mod:`kwta_robust.narrow`: the API's one-line errors name the field,
overrides, threads, provenance and transfer flag reach the runner (stubbed here: what it is handed is read back),
and the narrow tables and their Markdown keep the layout their docstrings promise, against hand-written text."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from attacks.errors import AttackConfigError
from eval_helpers import make_record, make_result
from kwta_robust import api
from kwta_robust.errors import ConfigError, DataError
from kwta_robust.narrow import (_shorten, aligned_markdown, detail_tables, fit_columns, md_cell, narrow_markdown,
                                narrow_notes, overview_table, terminal_markdown, threat_tables)
from kwta_robust.report import Cell, Table, cell_text
from kwta_robust.results import NoiseResult
from test_python_api import CONFIG, make_net, toy_data


class Runner:
    """Stands for the runner: keeps what it is handed and returns synthetic records."""

    def __init__(self, error: Exception | None = None):
        self.calls: list[dict] = []
        self.error = error

    def evaluate(self, model, data, cfg, info, **kwargs):
        self.calls.append({"data": data, "cfg": cfg, "info": info, "threads": torch.get_num_threads(), **kwargs})
        if self.error is not None:
            raise self.error
        return make_record(n=len(data.y), label=info["label"])

    def compare(self, loaded, cfg, out_dir, **kwargs):
        self.calls.append({"cfg": cfg, "out_dir": out_dir, **kwargs})
        return [make_record(n=len(kwargs["data"].y), label=m.label) for m in loaded]


@pytest.fixture
def runner(monkeypatch) -> Runner:
    stub = Runner()
    monkeypatch.setattr(api, "evaluate", stub.evaluate)
    monkeypatch.setattr(api, "compare_models", stub.compare)
    return stub


def test_overrides_apply_with_a_none_among_them():
    cfg = api.as_config(CONFIG)
    assert api.as_config(CONFIG, n_examples=5, seed=None).n_examples == 5
    assert api.as_config(cfg, seed=None) is cfg


def test_what_the_runner_is_handed(runner, monkeypatch):
    x, y = toy_data()
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        record = api.evaluate_model(make_net().eval(), CONFIG, x, y, data_name="digits", threads=1,
                                    grid_cell={"kwta_ratio": 0.25, "weight_sparsity": 0.0, "pruning_method": None})
        seen_threads, after = runner.calls[0]["threads"], torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    call = runner.calls[0]
    assert (seen_threads, after) == (1, 2)
    assert call["cfg"].dataset == "digits" and call["data"].name == "digits"
    assert call["command"] == ["kwta_robust.api.evaluate_model", sys.argv[0]]
    assert len(call["info"]["model_source_sha256"]) == 64
    assert record.model["grid_cell"] == {"kwta_ratio": 0.25, "weight_sparsity": 0.0, "pruning_method": "none"}


def test_compare_hands_on_the_transfer_flag(runner):
    x, y = toy_data()
    api.compare_models_in_memory({"a": make_net().eval(), "b": make_net().eval()}, CONFIG, x, y, transfer=False)
    assert runner.calls[0]["transfer"] is False
    assert runner.calls[0]["command"] == ["kwta_robust.api.compare_models_in_memory", sys.argv[0]]


def test_an_attacks_own_error_becomes_a_config_error(monkeypatch):
    stub = Runner(AttackConfigError("attack 'x' needs more"))
    monkeypatch.setattr(api, "evaluate", stub.evaluate)
    x, y = toy_data()
    with pytest.raises(ConfigError, match="^attack 'x' needs more$") as caught:
        api.evaluate_model(make_net().eval(), CONFIG, x, y)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize("call, error, words", [
    (lambda m, x, y: api.evaluate_model(m, {**CONFIG, "bpda_layers": ["nosuch"]}, x, y), ConfigError,
     "bpda_layers: 'nosuch' matches no module (by name, glob or class name); candidates: 0 (Flatten), 1 (Linear)"),
    (lambda m, x, y: api.evaluate_model(m, CONFIG, x, y, label="  "), ConfigError,
     "label: expected a non-empty name for the model, got '  '"),
    (lambda m, x, y: api.evaluate_model(m, CONFIG, x, y, data_name=" "), ConfigError,
     "data_name: expected a non-empty name for x and y, got ' '"),
    (lambda m, x, y: api.evaluate_model(m, CONFIG, x), ConfigError,
     "y: give both x and y, or neither (the config's data set)"),
    (lambda m, x, y: api.evaluate_model(m, CONFIG, None, y), ConfigError,
     "x: give both x and y, or neither (the config's data set)"),
    (lambda m, x, y: api.compare_models_in_memory({"a": m, "b": m}, CONFIG, x, y, grid_cells={"c": "x"}),
     ConfigError, "grid_cells: 'c' is not a model label; use one of a, b"),
    (lambda m, x, y: api.compare_models_in_memory({"a": m, "b": nn.Sequential(nn.Flatten(), nn.Linear(64, 3))},
                                                  CONFIG, x, y), DataError,
     "data 'in-memory': the models disagree on the number of classes ({'a': 10, 'b': 3})"),
])
def test_bad_input_names_its_field(call, error, words, runner):
    x, y = toy_data()
    with pytest.raises(error) as caught:
        call(make_net().eval(), x, y)
    assert str(caught.value).startswith(words) and "\n" not in str(caught.value)
    assert runner.calls == []


# ------------------------------------------------------------------------------------------------- narrow
def records():
    a = make_record([make_result("pgd", [1, 0, 1, 1], eps=8 / 255, cumulative=True),
                     make_result("fgsm", [1, -1, 0, 1], eps=8 / 255, position=1, cumulative=True)], label="a")
    b = make_record([make_result("pgd", [1, 1, 1, 1], eps=8 / 255)], label="b")
    c = make_record([make_result("pgd", [1, 1, 1, 1], eps=0.5)], label="c")
    return a, b, c


def texts(table: Table) -> list[list[str]]:
    return [[cell_text(c) for c in row] for row in table.rows]


def test_threat_tables_one_per_point_with_plus_rows_and_a_worst_row():
    tables = threat_tables(records())
    assert [t.headers for t in tables] == [["Linf 8/255", "a", "b", "c"], ["Linf 0.5", "a", "b", "c"]]
    assert texts(tables[0]) == [["pgd", "75.0 (30.0–95.5)", "100.0 (51.0–100.0)", "—"],
                                ["+fgsm", "50.0 (15.0–85.0)", "—", "—"],
                                ["worst case", "50.0 (15.0–85.0)", "100.0 (51.0–100.0)", "—"]]


def test_overview_has_a_noise_column_when_any_record_has_a_score():
    a, b, _ = records()
    a.noise = [NoiseResult("numenta", [0.0, 0.1], 2, 7, {"noise_score": 5.5, "num_samples": 4}, 0.0)]
    table = overview_table([a, b])
    assert table.headers == ["model", "activation", "n", "clean", "noise score", "flags"]
    assert [row[4] for row in texts(table)] == ["5.5", "—"]


def test_detail_tables_round_time_and_show_the_sanity_attack():
    a = records()[0]
    a.results[0].wall_time_s = 0.456
    a.sanity = [make_result("sanity-pgd", [0, 0, 1, 0], eps=1.0)]
    tables = detail_tables(a)
    assert texts(tables[0])[0] == ["pgd", "white-box", "75.0 (30.0–95.5)", "4", "1", "0.46", "—", "0"]
    assert tables[1].headers[0] == "sanity attack"
    assert texts(tables[1]) == [["sanity-pgd Linf 1", "white-box", "25.0 (4.5–70.0)", "4", "3", "0.5", "—", "0"]]


def test_expected_accuracy_of_a_plus_row_covers_every_unit_above_it():
    a = records()[0]
    a.provenance["randomness"] = {"randomized": True, "seedable": True, "draws": 11, "common_draws": True}
    a.clean_error_rates = [0.0, 0.0, 0.0, 0.0]
    a.results[0].error_rates = [0.0, 0.6, 0.1, 0.2]
    a.results[1].error_rates = [0.1, None, 0.4, 0.0]
    rows = texts(detail_tables(a)[0])
    # pgd: 1 - [0, .6, .1, .2] -> 77.5 %; +fgsm: 1 - max(pgd, fgsm) = 1 - [.1, .6, .4, .2] -> 67.5 %
    assert [row[-1].split()[0] for row in rows] == ["77.5", "67.5", "67.5"]


def test_md_cell_and_shorten():
    assert md_cell("a|b\nc") == "a\\|b c"
    assert _shorten("abcde", 5) == "abcde" and _shorten("abcdef", 5) == "abcd…"


def test_fit_columns_hand_worked():
    # "| aaaaa | bbbbbbbbbb | cccccccccc |" is 35 characters; the key column and its frame alone take 9
    assert fit_columns([5, 10, 10], 35) == [[0, 1, 2]]
    assert fit_columns([5, 10, 10], 34) == [[0, 1], [0, 2]]
    assert fit_columns([5, 200], 50) == [[0, 1]]  # a column wider than the width still shares its key's block


def test_aligned_markdown_layout():
    table = Table(["name", "n"], [[Cell("x"), Cell(5)], [Cell("y"), Cell(None)], [Cell("z" * 50), Cell(12)]], [], "")
    lines = aligned_markdown(table).splitlines()
    assert lines == ["| name" + " " * 47 + "|   n |", "|" + "-" * 52 + "|----:|", "| x" + " " * 50 + "|   5 |",
                     "| y" + " " * 50 + "|   — |", "| " + "z" * 50 + " |  12 |"]


def test_notes_listed_once_and_plus_legend_second():
    a, b, _ = records()
    notes = narrow_notes([a, b])
    assert notes[0].startswith("Robust accuracy in %") and notes[1].startswith("'+' rows (cascade mode)")
    text = narrow_markdown([a, b], extra_notes=["same note", "same note"])
    assert text.count("- same note\n") == 1
    assert "| a − b  | clean" in text  # the paired comparison of two records
    assert terminal_markdown([], notes=["n1"]) == "- n1\n"


@pytest.mark.parametrize("cells", [["a"], "a"])
def test_grid_cells_not_a_dict_is_one_line(cells, runner):
    """Was a raw ``AttributeError: 'list' object has no attribute 'get'``."""
    x, y = toy_data()
    with pytest.raises(ConfigError, match=r"^grid_cells: expected a dict of model label -> grid cell, got "
                                          rf"{type(cells).__name__}; e\.g\. "):
        api.compare_models_in_memory({"a": make_net().eval(), "b": make_net().eval()}, CONFIG, x, y,
                                     grid_cells=cells)
    assert runner.calls == []
