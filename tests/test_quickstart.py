"""`kwta-robust quickstart`, scaled down: tiny CNNs (1 epoch) and a tiny suite; checks the whole flow, the table,
and that a re-run reuses the checkpoints and the finished evaluations."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from kwta_robust.cli import main
from kwta_robust import quickstart
from kwta_robust.budget_scale import cap_budget
from kwta_robust.config import load_config
from kwta_robust.results import load_record


REAL_TRAINING_CONFIGS = quickstart.training_configs


def tiny_training_configs(out_dir: Path, epochs: int, device: str, threads: int = 1) -> dict:
    configs = REAL_TRAINING_CONFIGS(out_dir, epochs, device, threads)
    for cfg in configs.values():
        cfg.arch_kwargs = {"channels": [4], "hidden": 16}
        cfg.batch_size = 256
    return configs


def test_quickstart_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                               caplog: pytest.LogCaptureFixture) -> None:
    suite = yaml.safe_load(quickstart.default_config_path().read_text())
    for attack in suite["attacks"]:  # same attacks, tiny budgets
        attack["params"] = cap_budget(attack["attack"], attack.get("params") or {}, 2)
    suite["noise"][0]["levels"] = [0.0, 0.25]
    config = tmp_path / "suite.yaml"
    config.write_text(yaml.safe_dump(suite))
    monkeypatch.setattr(quickstart, "training_configs", tiny_training_configs)
    out = tmp_path / "qs"
    argv = ["quickstart", "--out-dir", str(out), "--config", str(config), "--n-examples", "16", "--epochs", "1",
            "--device", "cpu", "--no-progress"]

    assert main(argv) == 0
    stdout, _ = capsys.readouterr()
    assert "### quickstart: kWTA CNN vs ReLU twin on mnist5k" in stdout
    lines = stdout.splitlines()
    header = next(line for line in lines if line.startswith("| model "))
    assert "| noise score |" in header and header.split("|")[-2].strip() == "flags"
    assert any(line.startswith("| kwta  | kwta 0.1 volume |  16 |") for line in lines)
    relu = next(line for line in lines if line.startswith("| relu  | relu            |  16 |"))
    assert "bpda-no-layer" in relu  # the ReLU twin has no gate: its BPDA row is a plain PGD run, and says so
    for point in ("Linf 0.1", "Linf 0.3"):  # attacks as rows, one table per threat point
        header = next(line for line in lines if line.startswith(f"| {point} "))
        assert [cell.strip() for cell in header.strip("|").split("|")][1:] == ["kwta", "relu"]
    for row in ("pgd", "+bpda-smooth", "+transfer", "worst case"):
        assert sum(1 for line in lines if line.startswith(f"| {row} ")) == 2
    assert max(len(line) for line in lines) <= 120
    wide = (out / "quickstart.md").read_text()
    assert wide.startswith("### quickstart")  # the file keeps the wide table
    header = next(line for line in wide.splitlines() if line.startswith("| model |"))
    for column in ("pgd Linf 0.1", "+bpda-smooth Linf 0.3", "+bpda-smooth Linf 0.1", "+transfer Linf 0.3",
                   "worst case Linf 0.3", "noise score", "flags"):
        assert column in header
    assert "quickstart: kWTA CNN vs ReLU twin on mnist5k" in (out / "quickstart.html").read_text()
    kwta = load_record(out / "eval" / "kwta.json")
    relu = load_record(out / "eval" / "relu.json")
    assert kwta.model["activation"] == "kwta" and kwta.model["kwta_ratio"] == 0.1 and \
        kwta.model["kwta_mode"] == "volume"
    assert relu.model["activation"] == "relu"
    assert kwta.dataset["indices"] == relu.dataset["indices"]
    assert kwta.noise_score() is not None and kwta.status == "complete"

    # re-run: checkpoints reused (not retrained), evaluations resumed from the complete records
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.pt")}
    caplog.clear()
    with caplog.at_level("INFO"):
        assert main(argv) == 0
    capsys.readouterr()
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.pt")} == stamps
    assert "reusing" in caplog.text and "resuming" in caplog.text
    assert load_record(out / "eval" / "kwta.json").results == kwta.results

    # another suite in the same folder (an upgrade changed the suite or a default): the earlier records are set
    # aside, not refused and not lost, and both models are evaluated afresh
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert main(["12" if a == "16" else a for a in argv]) == 0  # --n-examples 12
    capsys.readouterr()
    moved = sorted(p.name for p in (out / "eval" / "superseded").iterdir())
    assert moved == [f"kwta.{kwta.config_hash[:12]}.json", f"relu.{relu.config_hash[:12]}.json"]
    assert load_record(out / "eval" / "superseded" / moved[0]).results == kwta.results
    assert "holds a record of another config (n_examples: 16 in the record, 12 now) and other samples; moved to" in \
        caplog.text
    fresh = load_record(out / "eval" / "kwta.json")
    assert fresh.dataset["n"] == 12 and fresh.config_hash != kwta.config_hash and fresh.status == "complete"

    # --retrain: nothing resumed (here the seeded training gives the same weights); the records there are set aside
    # too, not overwritten
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert main(["12" if a == "16" else a for a in argv] + ["--retrain"]) == 0
    capsys.readouterr()
    assert "is not resumed (the run starts over); moved to" in caplog.text
    again = sorted(p.name for p in (out / "eval" / "superseded").iterdir())
    assert again == sorted(moved + [f"kwta.{fresh.config_hash[:12]}.json", f"relu.{fresh.config_hash[:12]}.json"])
    kept = load_record(out / "eval" / "superseded" / f"kwta.{fresh.config_hash[:12]}.json")
    assert kept.results == fresh.results and "resumed_at" not in load_record(out / "eval" / "kwta.json").provenance


def test_headline_names_the_masking_flags_and_what_a_larger_budget_takes_off() -> None:
    """One line per model at the threat point where the plain attack and the worst case differ most: the critical
    flags, and a budget check's verified drop at that point (not another point's, not the ladder check's)."""
    from eval_helpers import make_record, make_result
    from kwta_robust.results import Flag

    def record(label: str):
        results = [make_result("pgd", [1] * 8 + [0] * 2, eps=0.1),
                   make_result("bpda-smooth", [0] * 6 + [1] * 2 + [-1] * 2, attack="bpda", kind="bpda", eps=0.1,
                               position=1, cumulative=True)]
        return make_record(results, label=label)

    kwta, relu = record("kwta"), record("relu")
    rerun = {"source": "rerun", "attack": "bpda-smooth", "factor": 3, "drop_lower_bound": 0.025, "norm": "linf"}
    kwta.diagnostics = [
        Flag("adaptive-beats-pgd", "critical", "...", {}),
        Flag("budget-still-lowering", "warning", "...", {**rerun, "eps": 0.1}),
        Flag("budget-still-lowering", "warning", "...", {**rerun, "eps": 0.3, "drop_lower_bound": 0.5}),
        Flag("budget-still-lowering", "warning", "...", {"attacks": ["pgd-10", "pgd-100"]}),  # the ladder check
    ]
    relu.diagnostics = [Flag("budget-checked", "info", "...", {**rerun, "eps": 0.1})]
    assert quickstart.headline([kwta, relu]) == [
        "kwta: pgd 80.0% vs worst case 20.0% at Linf 0.1 — flags: adaptive-beats-pgd; bpda-smooth at 3x its budget "
        "lowers the worst case by >= 2.5 points (budget-still-lowering)",
        "relu: pgd 80.0% vs worst case 20.0% at Linf 0.1 — no masking flags",
    ]


def test_the_models_train_with_the_commands_thread_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--threads sets torch's threads for the whole command; training (whose sums it splits) takes the same."""
    configs = REAL_TRAINING_CONFIGS(tmp_path, 1, "cpu", 2)
    assert {cfg.threads for cfg in configs.values()} == {2}
    seen = []

    class Stop(Exception):
        pass

    def capture(out_dir, epochs, device, threads=1):
        seen.append(threads)
        raise Stop

    monkeypatch.setattr(quickstart, "training_configs", capture)
    previous = torch.get_num_threads()
    with pytest.raises(Stop):
        main(["quickstart", "--out-dir", str(tmp_path / "qs"), "--threads", "3", "--no-progress"])
    assert torch.get_num_threads() == previous  # the command restores the caller's threads
    with pytest.raises(Stop):
        quickstart.run_quickstart(load_config(quickstart.default_config_path()), tmp_path / "api")
    assert seen == [3, 1]  # the command's --threads; the Python API's default
