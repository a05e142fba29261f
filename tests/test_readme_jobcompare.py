"""What the README's sections on ``compare``, ``table``/``report`` and bad outputs promise and no other test pinned:
``table`` logs the differing attack settings once, naming the record files; ``table --out`` and ``report --out``
refuse another record and a pipe (the device case) and leave them as they were; ``--prune`` with ``--method pgd``
trains every pruning segment with PGD's step, not the plain one."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
import torch

from kwta_robust.cli import main
from kwta_robust.data import TensorData
from kwta_robust.models import create_model
from kwta_robust.results import save_record
from kwta_robust.sparsity import PruningConfig
from kwta_robust.training import TrainConfig, steps_per_epoch
from kwta_robust.training import loop as training_loop
from kwta_robust.training.pruning import train_with_pruning
from test_cli_bpda_layers import run_error
from test_settings_tables import pgd_record

TINY = {"channels": [4, 8], "hidden": 16, "kernel_size": 3}


def test_table_logs_one_warning_naming_the_files_whose_attack_settings_differ(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture) -> None:
    """README: a table of several records says in a note, "and `table` in one logged warning naming the files",
    when an attack of one label ran with other effective settings."""
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    save_record(pgd_record("kwta", steps=40), first)
    save_record(pgd_record("relu", steps=100), second)
    with caplog.at_level(logging.WARNING, logger="kwta_robust"):
        assert main(["table", str(first), str(second), "--format", "wide"]) == 0
    out = capsys.readouterr().out
    warned = [r.getMessage() for r in caplog.records
              if r.levelno == logging.WARNING and r.name == "kwta_robust.commands.table"]
    assert len(warned) == 1 and f"pgd: steps 40 in {first}, 100 in {second}" in warned[0]
    assert "pgd: steps 40 in kwta, 100 in relu" in out  # the table's note names the models, the log the files


def test_table_and_report_out_refuse_another_record_and_a_pipe(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    """README: an output never overwrites a record, nor a device, pipe or socket (``--out /dev/null``); the refusal
    is one ``error:`` line with exit status 2 and the path keeps what it was."""
    source, other = tmp_path / "a.json", tmp_path / "b.json"
    save_record(pgd_record("a"), source)
    save_record(pgd_record("b"), other)
    before = other.read_bytes()
    for command in ("table", "report"):
        line = run_error([command, str(source), "--out", str(other)], capsys)
        assert line == (f"error: --out: {other} holds a record; writing the {command} there would destroy it, "
                        "choose another path")
    assert other.read_bytes() == before
    for name in ("pipe.md", "pipe.html"):
        fifo = tmp_path / name
        os.mkfifo(fifo)
        command = "table" if name.endswith(".md") else "report"
        line = run_error([command, str(source), "--out", str(fifo)], capsys)
        assert line.startswith(f"error: --out: {fifo} is not a regular file (a device, pipe or socket)")
        assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_pruned_pgd_training_takes_the_pgd_step_in_every_segment(monkeypatch: pytest.MonkeyPatch) -> None:
    """README: "`--prune METHOD --sparsity S` trains pruned with the same method": the training before pruning and
    the fine-tuning after it both perturb every batch with PGD; the plain step never runs."""
    calls = {"pgd": 0, "standard": 0}
    for name in calls:
        step = training_loop.METHODS[name]

        def counted(*args, _step=step, _name=name):
            calls[_name] += 1
            return _step(*args)
        monkeypatch.setitem(training_loop.METHODS, name, counted)
    gen = torch.Generator().manual_seed(0)  # 128 digits-shaped samples (loading the digits data took 2 s)
    data = TensorData(torch.rand(128, 1, 8, 8, generator=gen), torch.arange(128) % 10, "digits", 10, torch.arange(128))
    cfg = TrainConfig(dataset="digits", epochs=1, batch_size=64, arch_kwargs=TINY, augment="none", method="pgd",
                      adversarial={"eps": 0.1, "steps": 1},
                      pruning=PruningConfig(method="magnitude", sparsity=0.5, retrain_epochs=1))
    model = create_model("cnn", num_classes=10, in_channels=1, input_size=8, **TINY)
    history, _, segments = train_with_pruning(model, data, cfg, torch.device("cpu"))
    assert len(segments) == 2 and len(history.epochs) == 2  # trained, pruned, fine-tuned
    assert calls == {"pgd": 2 * steps_per_epoch(128, 64), "standard": 0}  # 2 epochs of 2 batches, each by PGD
