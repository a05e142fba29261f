"""An attack plug-in writing past ``sys.stdout`` at import (``sys.__stdout__``, file descriptor 1) leaves
``evaluate --format json`` parseable: the README says such writes reach stderr, not the output, for the commands'
work. The registries are loaded by the config's validation, before the command's work
(:func:`kwta_robust.commands.console.load_plugins` loads them first, under ``output_only_stdout``).

Before: ``DEBUG fd 1 at import`` and ``DEBUG __stdout__ at import`` came first on stdout and the JSON did not parse
(``plugins --json`` alone was covered: tests/test_stdout_plugins_listing.py)."""

from __future__ import annotations

from pathlib import Path

from test_stdout_model_prints import MODEL, cli, write_inputs
from test_stdout_plugins_listing import LOUD as LOUD_AT_IMPORT


def test_evaluate_json_of_a_plugin_writing_to_fd_1_at_import_parses(tmp_path: Path) -> None:
    config, data, weights = write_inputs(tmp_path)
    table, err = cli(tmp_path / "loud", LOUD_AT_IMPORT + MODEL.format(loud=False), "evaluate", "--model-factory",
                     "chatty_kwta_plugin:printing_net", "--weights", str(weights), "--config", str(config),
                     "--data", str(data), "--out", str(tmp_path / "r.json"), "--no-progress", "--format", "json")
    # the data's labels are the model's predictions: all 6 samples clean-correct, all 6 attacked
    assert [(row["attack"], row["attacked"]) for row in table["rows"]] == [("clean", 6), ("chatty-fgsm", 6),
                                                                           ("worst case", None)]
    assert {"DEBUG fd 1 at import", "DEBUG __stdout__ at import"} <= set(err.splitlines())
