"""``kwta-robust train``: a bad value given by a flag is named by that flag (``--optimizer foo`` →
``error: --optimizer: unknown optimizer 'foo'``), the same value in a ``--config`` file by its key
(``optimizer: ...``), for every flag of :data:`kwta_robust.commands.train.FLAGS` whose value a config check can refuse
(``--device``, ``--seed`` and ``--data-root`` were named so before: tests/test_api52_audience.py; ``--threads`` is
checked by the CLI itself; ``--activation`` and ``--kwta-mode`` take argparse choices; ``--out`` is checked as a
path). Each run stops at its error line, before any training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from kwta_robust.commands.train import FLAGS
from tests.test_cifar10_user import error_line

KEYS = {flag: key for flag, key, _ in FLAGS}
BASE = {"dataset": "digits", "arch": "mlp", "epochs": 1}
KWTA = {"activation": {"name": "kwta", "k_ratio": 0.5}}
PRUNED = {"pruning": {"method": "magnitude", "sparsity": 0.5}}

#: (flag, its value on the command line, the same value in YAML, the rest of the config, the error after the name)
CASES: list[tuple[str, str, Any, dict, str]] = [
    ("--dataset", "foo", "foo", {}, "unknown data set 'foo'"),
    ("--split-seed", "-1", -1, {}, "must be >= 0, got -1"),
    ("--test-fraction", "0.5", 0.5, {}, "only used with a data file"),
    ("--arch", "foo", "foo", {}, "unknown architecture 'foo'"),
    ("--k-ratio", "2", 2.0, {"activation": {"name": "kwta"}}, "must be in (0, 1], got 2.0"),
    ("--k", "0", 0, {"activation": {"name": "kwta"}}, "must be an integer >= 1, got 0"),
    ("--boost-strength", "-1", -1.0, KWTA, "must be >= 0, got -1.0"),
    ("--k-inference-factor", "0", 0.0, KWTA, "must be > 0, got 0.0"),
    ("--optimizer", "foo", "foo", {}, "unknown optimizer 'foo'; known optimizers: sgd, adam, adamw"),
    ("--lr", "-1", -1.0, {}, "must be a finite number > 0, got -1.0"),
    ("--momentum", "1", 1.0, {}, "must be in [0, 1), got 1.0"),
    ("--weight-decay", "-1", -1.0, {}, "must be >= 0, got -1.0"),
    ("--schedule", "foo", "foo", {}, "unknown schedule 'foo'"),
    ("--epochs", "0", 0, PRUNED, "pruned training needs epochs >= 1, got 0"),
    ("--batch-size", "1", 1, {}, "must be >= 2, got 1"),
    ("--augment", "foo", "foo", {}, "unknown augmentation 'foo'"),
    ("--method", "foo", "foo", {}, "unknown method 'foo'"),
    ("--norm", "foo", "foo", {}, "unknown norm 'foo'"),
    ("--eps", "foo", "foo", {}, "expected a number, got 'foo'"),
    ("--pgd-steps", "0", 0, {}, "must be >= 1 (PGD iterations per training batch"),
    ("--pgd-step-size", "foo", "foo", {}, "expected a number, got 'foo'"),
    ("--trades-beta", "-1", -1.0, {}, "must be a finite number >= 0"),
    ("--incremental-ratios", "2", [2.0], KWTA, "each ratio must be in (0, 1]"),
    ("--epochs-per-ratio", "0", 0, {**KWTA, "incremental": {"ratios": [0.2]}}, "must be >= 1, got 0"),
    ("--incremental-lr", "-1", -1.0, {**KWTA, "incremental": {"ratios": [0.2]}}, "must be > 0, got -1.0"),
    ("--prune", "foo", "foo", {"pruning": {"sparsity": 0.5}}, "unknown pruning method 'foo'"),
    ("--sparsity", "2", 2.0, {"pruning": {"method": "magnitude"}}, "must be a number in [0, 1)"),
    ("--prune-scope", "foo", "foo", PRUNED, "must be one of layerwise, global or null, got 'foo'"),
    ("--prune-rounds", "0", 0, PRUNED, "must be an integer >= 1, got 0"),
    ("--prune-retrain", "foo", "foo", PRUNED, "must be one of finetune, rewind-weights, rewind-lr, got 'foo'"),
    ("--rewind-epoch", "-1", -1, PRUNED, "must be an integer >= 0, got -1"),
    ("--finetune-lr", "-1", -1.0, PRUNED, "must be a number in (0, 3.4e+38]"),
]


def with_key(config: dict, dotted: str, value: Any) -> dict:
    """``config`` (copied a level deep) with the dotted key set to ``value``."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    *parents, last = dotted.split(".")
    node = out
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return out


def write(path: Path, config: dict) -> str:
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.parametrize("flag, text, value, rest, detail", CASES, ids=[c[0] for c in CASES])
def test_a_train_flag_names_itself_and_a_config_file_its_key(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                             flag: str, text: str, value: Any, rest: dict,
                                                             detail: str) -> None:
    out = ["--out", str(tmp_path / "m.pt")]
    base = write(tmp_path / "base.yaml", {**BASE, **rest})
    line = error_line(capsys, ["train", "--config", base, f"{flag}={text}", *out])
    assert line.startswith(f"error: {flag}: {detail}"), line
    key = KEYS[flag]
    in_file = write(tmp_path / "file.yaml", with_key({**BASE, **rest}, key, value))
    line = error_line(capsys, ["train", "--config", in_file, *out])
    assert line.startswith(f"error: {key}: {detail}"), line
    assert not (tmp_path / "m.pt").exists()


def test_download_with_a_data_file_names_the_flag_or_the_key(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "d.npz"
    np.savez(data, x=np.zeros((8, 1, 8, 8), dtype=np.float32), y=np.arange(8) % 2)
    out = ["--out", str(tmp_path / "m.pt")]
    detail = "not used with dataset: {file: ...} (the file holds the samples); remove it"
    base = {**BASE, "dataset": {"file": str(data)}}
    line = error_line(capsys, ["train", "--config", write(tmp_path / "b.yaml", base), "--download", *out])
    assert line == f"error: --download: {detail}"
    line = error_line(capsys, ["train", "--config", write(tmp_path / "f.yaml", {**base, "download": True}), *out])
    assert line == f"error: download: {detail}"


def test_a_flag_beside_a_bad_config_value_leaves_its_key_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``--lr 0.01`` is fine: the config file's bad ``optimizer`` keeps its key, and the file's ``k_ratio`` its key
    though ``--activation kwta`` made it count."""
    out = ["--out", str(tmp_path / "m.pt")]
    config = write(tmp_path / "c.yaml", {**BASE, "optimizer": "foo"})
    assert error_line(capsys, ["train", "--config", config, "--lr", "0.01", *out]).startswith(
        "error: optimizer: unknown optimizer 'foo'")
    config = write(tmp_path / "k.yaml", {**BASE, "activation": {"name": "relu", "k_ratio": 2}})
    assert error_line(capsys, ["train", "--config", config, "--activation", "kwta", *out]) == \
        "error: activation.k_ratio: must be in (0, 1], got 2.0"
