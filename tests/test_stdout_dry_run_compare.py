"""``evaluate --dry-run`` and ``compare`` of a model that prints, and writes to ``sys.__stdout__``, fd 1 and a C
``printf``, print JSON that parses, with the values worked out by hand; what was written reaches stderr
(:func:`kwta_robust.commands.console.output_only_stdout`; the evaluation itself: tests/test_stdout_model_prints.py).

Before: the model's prints of the dry run's checks and of compare's class check and clean passes came first on
stdout, and the JSON did not parse."""

from __future__ import annotations

from pathlib import Path

from kwta_robust.commands.console import MODEL_CODE
from test_stdout_model_prints import LOUD, cli, write_inputs


def test_the_dry_runs_json_plan_of_a_printing_model_parses(tmp_path: Path) -> None:
    config, data, weights = write_inputs(tmp_path)
    plan, err = cli(tmp_path / "loud", LOUD, "evaluate", "--model-factory", "chatty_kwta_plugin:printing_net",
                    "--weights", str(weights), "--config", str(config), "--data", str(data),
                    "--out", str(tmp_path / "r.json"), "--dry-run", "--format", "json")
    assert [(row["attack"], row["threats"], row["units"], row["seed"]) for row in plan["rows"]] == [
        ("chatty-fgsm", "Linf 0.1", 1, 0)]
    assert f"{MODEL_CODE} printed: DEBUG factory" in err and "DEBUG fd 1" in err.splitlines()
    assert not (tmp_path / "r.json").exists()


def test_compare_json_of_two_printing_models_parses(tmp_path: Path) -> None:
    config, data, weights = write_inputs(tmp_path)
    model = f"chatty_kwta_plugin:printing_net={weights}"
    table, err = cli(tmp_path / "loud", LOUD, "compare", model, model, "--labels", "a,b", "--config", str(config),
                     "--data", str(data), "--no-transfer", "--no-progress", "--format", "json",
                     "--out-dir", str(tmp_path / "out"))
    rows = {label: [{k: v for k, v in row.items() if k != "model" and not k.startswith("paired ")}
                    for row in table["rows"] if row["model"] == label] for label in ("a", "b")}
    assert rows["a"] == rows["b"] and rows["a"]  # the same weights: the same numbers
    a, b = table["rows"]  # b paired with a (paired_columns): no sample differs
    assert a["paired clean diff (points)"] is None and b["paired clean diff (points)"] == 0.0
    assert (b["paired clean only first"], b["paired clean only second"]) == (0, 0)
    assert [(row["n"], row["clean (%)"]) for row in rows["a"]] == [(6, 100.0)]  # the labels are its predictions
    assert f"{MODEL_CODE} printed: DEBUG forward" in err and "DEBUG printf" in err.splitlines()
