"""Mutation round on the command modules (:mod:`kwta_robust.commands` evaluate, compare, train, quickstart): what
they print and write, their exit status and one-line errors. Tiny MLPs and configs from :mod:`tests.test_cli_eval`;
expected values are read back from the files written or worked out by hand."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from kwta_robust import quickstart
from kwta_robust.checkpoint import load_checkpoint
from kwta_robust.cli import main
from kwta_robust.commands import train as train_command
from kwta_robust.results import load_record
from tests.test_cli_eval import run_error, write_checkpoint, write_config


def _suite(tmp_path: Path) -> Path:
    return write_config(tmp_path / "c.yaml", threats=[{"norm": "linf", "epsilons": [0.1]}], attacks=["fgsm"],
                        noise=[])


def test_an_html_out_path_is_refused_whatever_the_case_of_its_suffix(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    ckpt = write_checkpoint(tmp_path / "relu.pt")
    line = run_error(capsys, ["evaluate", str(ckpt), "--config", str(_suite(tmp_path)), "--out",
                              str(tmp_path / "rec.HTML")])
    assert "would be overwritten by its own HTML report" in line and "give the record a .json path" in line
    assert not (tmp_path / "rec.HTML").exists()


def test_evaluate_dry_run_prints_the_plan_then_the_runs_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt, cfg, out = write_checkpoint(tmp_path / "relu.pt"), _suite(tmp_path), tmp_path / "r.json"
    base = ["evaluate", str(ckpt), "--config", str(cfg), "--out", str(out), "--no-progress"]
    assert main(base) == 0
    capsys.readouterr()
    written = out.read_bytes()
    # another seed: the record there is of another config; the run would refuse it, so does the dry run (exit 2)
    assert main([*base, "--seed", "3", "--dry-run"]) == 2
    printed, err = capsys.readouterr()
    assert printed.strip() and "holds a record of another config" in err and len(err.strip().splitlines()) == 1
    # --no-resume starts over: no error, nothing written
    assert main([*base, "--seed", "3", "--dry-run", "--no-resume"]) == 0
    assert "holds a record of another config" not in capsys.readouterr().err
    assert out.read_bytes() == written


def _compare_fixture(tmp_path: Path) -> tuple[list[str], Path]:
    relu, kwta = write_checkpoint(tmp_path / "relu.pt"), write_checkpoint(tmp_path / "kwta.pt", seed=1)
    out_dir = tmp_path / "cmp"
    return ["compare", str(relu), str(kwta), "--config", str(_suite(tmp_path)), "--out-dir", str(out_dir),
            "--no-progress"], out_dir


def test_compare_labels_no_transfer_and_the_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv, out_dir = _compare_fixture(tmp_path)
    assert main([*argv, "--labels", " a , b", "--no-transfer"]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out_dir.glob("*.json")) == ["a.json", "b.json"]
    for name in ("a", "b"):
        record = load_record(out_dir / f"{name}.json")
        assert record.model["label"] == name and {r.attack for r in record.results} == {"fgsm"}
        assert any(line.startswith(f"| {name} ") for line in printed.splitlines())  # both rows printed
    assert (out_dir / "compare.md").is_file() and (out_dir / "compare.html").is_file()
    # one model: refused before any model is loaded
    line = run_error(capsys, ["compare", str(tmp_path / "missing.pt"), "--config", str(_suite(tmp_path))])
    assert line == "error: compare: give at least two models (use `evaluate` for one)"


def test_compare_factory_kwargs_go_only_to_the_factory_models(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tests.test_cli_eval import make_mlp

    torch.manual_seed(0)
    weights = tmp_path / "own.pt"
    torch.save(make_mlp().state_dict(), weights)
    argv, out_dir = _compare_fixture(tmp_path)
    mixed = [argv[0], argv[1], f"tests.test_cli_eval:make_mlp={weights}", *argv[3:]]
    assert main([*mixed, "--factory-kwargs", "{}", "--no-transfer"]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in out_dir.glob("*.json")) == ["own.json", "relu.json"]


def test_compare_dry_run_and_no_resume(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv, out_dir = _compare_fixture(tmp_path)
    assert main(argv) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in out_dir.iterdir() if p.is_file()}
    assert main([*argv, "--seed", "3", "--dry-run"]) == 2
    assert "holds a record of another config" in capsys.readouterr().err
    assert main([*argv, "--seed", "3", "--dry-run", "--no-resume"]) == 0
    capsys.readouterr()
    assert {p.name: p.read_bytes() for p in out_dir.iterdir() if p.is_file()} == before
    assert main([*argv, "--seed", "3", "--no-resume"]) == 0  # starts over with the other seed
    capsys.readouterr()
    assert load_record(out_dir / "relu.json").config["seed"] == 3


def _train_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_train_flags_holding_zero_or_padded_lists_still_override(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("seed: 5\nactivation: kwta\nweight_decay: 0.01\n")  # activation as a name, set from flags
    cfg = train_command.config_from_args(_train_args("--config", str(path), "--seed", "0", "--k-ratio", "0.2",
                                                     "--weight-decay", "0", "--incremental-ratios", " 0.1, 0.05 ,"))
    assert cfg.seed == 0 and cfg.weight_decay == 0.0 and cfg.incremental.ratios == [0.1, 0.05]
    assert cfg.activation.name == "kwta" and cfg.activation.k_ratio == 0.2
    cfg = train_command.config_from_args(_train_args(), apply=lambda data: data.update(epochs=7))
    assert cfg.epochs == 7


def test_train_help_shows_defaults_only_where_the_help_does_not_say_them(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default volume, Xiao et al.) [activation.mode]" in text  # its help says the default already
    from kwta_robust.training import TrainConfig

    assert f"training epochs [epochs; default {TrainConfig().epochs}]" in text  # the default a key left out takes


@pytest.mark.parametrize("argv, message", [
    (["--arch-arg", "=5"], "error: --arch-arg: expected KEY=VALUE, got '=5'"),
    (["--arch-arg", "channels"], "error: --arch-arg: expected KEY=VALUE, got 'channels'"),
])
def test_train_bad_arch_args_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, argv: list,
                                          message: str) -> None:
    assert run_error(capsys, ["train", "--dataset", "digits", *argv, "--out", str(tmp_path / "m.pt")]) == message


def test_train_refuses_an_out_that_is_its_config_or_a_foreign_stage_file(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "c.pt"
    config.write_text("dataset: digits\n")
    line = run_error(capsys, ["train", "--config", str(config), "--out", str(config)])
    assert "is also given as --config" in line and config.read_text() == "dataset: digits\n"
    stage = tmp_path / "m-r0.1.pt"
    stage.write_text("my notes")
    line = run_error(capsys, ["train", "--dataset", "digits", "--activation", "kwta", "--k-ratio", "0.2",
                              "--incremental-ratios", "0.1", "--out", str(tmp_path / "m.pt")])
    assert line.startswith("error: --out (its incremental stage): ") and stage.read_text() == "my notes"


TINY = ["--dataset", "digits", "--arch", "cnn", "--arch-arg", "channels=[4,8]", "--arch-arg", "hidden=16",
        "--epochs", "1", "--device", "cpu", "--seed", "0"]


def test_train_prints_every_stage_with_its_own_accuracy(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "m.pt"
    assert main(["train", *TINY, "--activation", "kwta", "--k-ratio", "0.2", "--incremental-ratios", "0.1",
                 "--epochs-per-ratio", "1", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    stages = [(0.2, tmp_path / "m-r0.2.pt"), (0.1, tmp_path / "m-r0.1.pt")]
    assert len(lines) == 3
    for line, (ratio, path) in zip(lines, stages):
        accuracy = load_checkpoint(path).metadata["test_accuracy"]
        assert line == f"kwta ratio {ratio:g}: test accuracy {accuracy:.4f} -> {path}"
    final = load_checkpoint(out).metadata["test_accuracy"]
    assert lines[2].startswith(f"test accuracy {final:.4f} (") and lines[2].endswith(f"-> {out}")


def test_train_prints_the_measured_and_the_target_sparsity(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "p.pt"
    assert main(["train", *TINY, "--prune", "magnitude", "--sparsity", "0.33", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    model = load_checkpoint(out).model
    weights = [m.weight for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert len(lines) == 2 and lines[1].startswith("weight sparsity ")
    measured = float(lines[1].split()[2])
    assert abs(measured - zeros) < 0.02 and lines[1].endswith("measured (target 0.33, magnitude)")


def test_quickstart_command_passes_its_options_and_prints_the_headline(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    fixtures = Path(__file__).parent / "fixtures" / "quickstart"
    records = [load_record(fixtures / f"{name}.json") for name in ("kwta", "relu")]
    seen: dict = {}

    def fake(cfg, out_dir, **kwargs):
        seen.update(kwargs, n=cfg.n_examples, out_dir=out_dir)
        return records

    monkeypatch.setattr(quickstart, "run_quickstart", fake)
    out_dir = tmp_path / "qs"
    assert main(["quickstart", "--out-dir", str(out_dir), "--device", "cpu", "--epochs", "1", "--n-examples", "7",
                 "--retrain", "--threads", "2", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert seen["device"] == "cpu" and seen["epochs"] == 1 and seen["retrain"] is True and seen["n"] == 7
    assert seen["train_threads"] == 2 and Path(seen["out_dir"]) == out_dir and seen["progress"] is False
    assert "kwta: pgd 67.5% vs worst case 5.0% at Linf 0.1 — flags: adaptive-beats-pgd" in printed
    assert main(["quickstart", "--out-dir", str(out_dir), "--no-progress"]) == 0
    capsys.readouterr()
    assert seen["device"] == "auto" and seen["retrain"] is False


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "error: --epochs: must be >= 1, got 0"),
    (["--epochs", "-1"], "error: --epochs: must be >= 1, got -1"),
])
def test_quickstart_bad_epochs(tmp_path: Path, capsys: pytest.CaptureFixture, argv: list, message: str) -> None:
    assert run_error(capsys, ["quickstart", "--out-dir", str(tmp_path / "qs"), *argv]) == message
