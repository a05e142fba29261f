"""``compare --data FILE`` opens the data file once, as ``evaluate`` does: the SHA-256 every record's config pins
comes from the same read as the samples (:func:`~kwta_robust.loading.load_pinned_eval_data`).

It used to be hashed when the config was made and read again when the data loaded (2 opens)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from kwta_robust.cli import main
from kwta_robust.results import load_record
from test_cli_eval import write_checkpoint, write_config
from test_datafile import N, images
from test_load_once import _count_reads


def test_compare_opens_the_data_file_once_and_pins_its_digest(tmp_path: Path, monkeypatch, capsys) -> None:
    first, second = write_checkpoint(tmp_path / "a.pt"), write_checkpoint(tmp_path / "b.pt", seed=1)
    data = tmp_path / "d.pt"
    torch.save({"x": torch.from_numpy(images()), "y": torch.arange(N) % 10}, data)
    cfg = write_config(tmp_path / "c.yaml", n_examples=4, batch_size=4, threats=[{"norm": "linf", "epsilons": [0.1]}],
                       attacks=["fgsm"], noise=[])
    opens, loads = _count_reads(monkeypatch, data)
    rc = main(["compare", str(first), str(second), "--config", str(cfg), "--data", str(data), "--out-dir",
               str(tmp_path / "out"), "--no-progress", "--no-transfer"])
    assert rc == 0, capsys.readouterr().err
    assert dict(opens) == {"d.pt": 1} and dict(loads) == {"d.pt": 1}  # opens were 2 (the hash, then the read)
    monkeypatch.undo()
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    for label in ("a", "b"):
        record = load_record(tmp_path / "out" / f"{label}.json")
        assert record.config["dataset"] == {"file": str(data.resolve()), "sha256": digest}
