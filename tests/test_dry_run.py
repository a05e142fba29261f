"""`evaluate --dry-run` and `compare --dry-run` (kwta_robust.dry_run): the plan they print (attack labels, effective
settings, BPDA layers, noise probes, what a record at the output holds), that they write nothing, that they fail
with the real run's own one-line error, and that the model is left as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from kwta_robust.checkpoint import save_checkpoint
from kwta_robust.cli import main
from kwta_robust.config import EvalConfig
from kwta_robust.data import load_dataset
from kwta_robust.dry_run import plan_model
from kwta_robust.loading import ModelForEval, model_info
from kwta_robust.locks import OutputLock
from kwta_robust.models import ModelSpec
from kwta_robust.resume import StalePolicy
from kwta_robust.results import load_record
from test_cli_bpda_layers import Top8

CONFIG = {
    "dataset": "mnist5k", "n_examples": 12, "batch_size": 12, "device": "cpu",
    "threats": [{"norm": "linf", "epsilons": [0.1, "8/255"]}],
    "attacks": [{"attack": "pgd", "params": {"steps": 3}},
                {"attack": "bpda", "params": {"surrogate": "smooth", "inner": "pgd", "inner_params": {"steps": 2}}}],
    "noise": [{"kind": "numenta", "levels": [0.0, 0.25], "draws": 1}],
}


def write_checkpoint(path: Path, activation: object = None, num_classes: int = 10) -> Path:
    torch.manual_seed(0)
    spec = ModelSpec.from_args("mlp", activation=activation or {"name": "kwta", "ratio": 0.25},
                               num_classes=num_classes, in_channels=1, input_size=28, hidden=[16])
    return save_checkpoint(path, spec.build(), spec, {"dataset": "mnist5k", "data_split_seed": 0})


def write_config(path: Path, **extra: object) -> Path:
    path.write_text(yaml.safe_dump({**CONFIG, **extra}))
    return path


def files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (what a dry run must leave as it was)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def notes(out: str) -> list[str]:
    """The notes under a printed table, each on one line (the terminal wraps them at 120 columns)."""
    return out.replace("\n  ", " ").splitlines()


def run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, list[str]]:
    """Exit status, stdout and the `error:` lines of one command."""
    rc = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, [line for line in err.splitlines() if line.startswith("error: ")]


@pytest.fixture()
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.chdir(tmp_path)  # the default record path runs/eval/... is relative to the working folder
    return write_checkpoint(tmp_path / "kwta.pt"), write_config(tmp_path / "c.yaml")


def test_the_plan_names_attacks_settings_layers_and_nothing_is_written(setup, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    ckpt, cfg = setup
    before = files(tmp_path)
    rc, out, errors = run(["evaluate", str(ckpt), "--config", str(cfg), "--dry-run",
                           "--save-adversarial", "adv.pt"], capsys)
    assert rc == 0 and errors == []
    lines, listed = out.splitlines(), notes(out)
    assert lines[0] == "### Dry run: attack plan" and max(len(line) for line in lines) <= 120
    assert any(line.startswith("| kwta  | pgd ") and "| white-box |" in line and "|     2 |" in line for line in lines)
    assert any(line.startswith("| kwta  | bpda ") and "| Linf 0.1, 8/255 |" in line for line in lines)
    assert "- pgd (kwta): steps 3, step size 2.5*eps/steps, restarts 1, loss ce, random start true" in listed
    assert any(n.startswith("- bpda (kwta): surrogate smooth, temperatures 1, stage keep 1; inner pgd: steps 2,")
               for n in listed)
    assert "- layer probe (12 inputs, 5 leaf modules): net.2 (KWTA): top-k gate (dense, k=4/16)" in listed
    assert "- bpda acts on: net.2 (native)" in listed
    assert "- data: mnist5k (test), 12 of 1,000 samples (sample seed 0), 10 classes, inputs 1×28×28" in listed
    assert "- threats: Linf 0.1, 8/255; cascade mode, batch size 12, seed 0" in listed
    assert "- noise probe numenta: levels 0, 0.25, 1 draw per level" in listed
    assert "- record runs/eval/kwta__c.json: none yet; every unit runs" in listed
    assert ("- the run writes: record runs/eval/kwta__c.json; report runs/eval/kwta__c.html; adversarial store "
            "adv.pt") in listed
    assert files(tmp_path) == before  # no record, report, store, lock file or folder
    assert not (tmp_path / "runs").exists()

    rc, out, _ = run(["evaluate", str(ckpt), "--config", str(cfg), "--dry-run", "--format", "json"], capsys)
    table = json.loads(out)
    assert rc == 0 and table["columns"][-3:] == ["units", "resumed", "settings"]
    assert [(r["label"], r["kind"], r["units"], r["resumed"]) for r in table["rows"]] == [
        ("pgd", "white-box", 2, None), ("bpda", "bpda", 2, None), ("noise numenta", "noise", 1, None)]
    assert table["rows"][0]["settings"].startswith("steps 3, step size 2.5*eps/steps")


def test_help_names_the_flag(capsys: pytest.CaptureFixture) -> None:
    for command in ("evaluate", "compare"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--dry-run" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["layer name", "checkpoint format", "data root", "classes", "classes for an attack"])
def test_a_dry_run_fails_with_the_real_run_s_line(case: str, setup, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    ckpt, cfg = setup
    argv = ["evaluate", str(ckpt), "--config", str(cfg), "--out", str(tmp_path / "r.json"), "--no-progress"]
    if case == "layer name":
        argv += ["--bpda-layer", "net.9"]
    elif case == "checkpoint format":  # a plain state_dict is a --weights file, not a checkpoint
        torch.save(nn.Linear(2, 2).state_dict(), tmp_path / "sd.pt")
        argv[1] = str(tmp_path / "sd.pt")
    elif case == "data root":
        argv += ["--data-root", str(tmp_path / "no-data")]
        write_config(cfg, dataset="cifar10")
    elif case == "classes":  # a model of 5 classes on a data set of 10
        argv[1] = str(write_checkpoint(tmp_path / "five.pt", num_classes=5))
    else:  # targeted DLR needs 4 classes; APGD-T checked it only when called, once samples reached it in the cascade
        argv[1] = str(write_checkpoint(tmp_path / "three.pt", num_classes=3))
        x = torch.rand(12, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        torch.save({"x": x, "y": torch.arange(12) % 3}, tmp_path / "three-classes.pt")
        argv += ["--data", str(tmp_path / "three-classes.pt")]
        write_config(cfg, attacks=[{"attack": "pgd", "params": {"steps": 1}},
                                   {"attack": "bpda", "params": {"inner": "apgd-t", "inner_params": {"steps": 1}}}])
    before = files(tmp_path)
    rc, out, dry = run([*argv, "--dry-run"], capsys)
    assert rc == 2 and len(dry) == 1 and out == ""
    assert files(tmp_path) == before
    rc, _, real = run(argv, capsys)
    assert rc == 2 and real == dry
    assert not (tmp_path / "r.json").exists()  # the run stops before its first attack too
    expected = {"layer name": "--bpda-layer: 'net.9' matches no module", "checkpoint format": "sd.pt",
                "data root": "cifar10: data not found at", "classes": "has 5 outputs but mnist5k has 10 classes",
                "classes for an attack": "attacks: 'bpda' with inner 'apgd-t': attack 'apgd-t' needs a model with at "
                                         "least 4 classes"}
    assert expected[case] in dry[0]


def interrupted_record(ckpt: Path, cfg: Path, out: Path, capsys: pytest.CaptureFixture) -> dict:
    """A record of the run interrupted after its first threat point (as a run killed there leaves it)."""
    assert main(["evaluate", str(ckpt), "--config", str(cfg), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    data = json.loads(out.read_text())
    data["results"] = [r for r in data["results"] if r["eps"] == 0.1]
    data["worst_case"] = [w for w in data["worst_case"] if w["eps"] == 0.1]
    data.update(status="partial", noise=[], diagnostics=[])
    out.write_text(json.dumps(data))
    return data


def test_a_partial_record_shows_its_finished_units(setup, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    ckpt, cfg = setup
    out = tmp_path / "r.json"
    interrupted_record(ckpt, cfg, out, capsys)
    before = files(tmp_path)
    rc, text, errors = run(["evaluate", str(ckpt), "--config", str(cfg), "--out", str(out), "--dry-run"], capsys)
    assert rc == 0 and errors == []
    assert (f"- record {out}: a partial record; 2 of 4 attack units finished and resumed, 2 to run; 0 of 1 noise "
            "probes kept") in notes(text)
    assert [line.split("|")[7:9] for line in text.splitlines() if line.startswith("| kwta ")] == [
        ["     2 ", "       1 "], ["     2 ", "       1 "], ["     1 ", "       0 "]]  # the noise probe: not kept
    rc, text, _ = run(["evaluate", str(ckpt), "--config", str(cfg), "--out", str(out), "--dry-run", "--no-resume"],
                      capsys)
    assert rc == 0 and (f"- record {out}: holds a partial record of 2 finished attack units; --no-resume: it is "
                        "overwritten and every unit runs again") in notes(text)
    assert files(tmp_path) == before
    caplog.set_level("INFO")  # the run keeps what the dry run said it keeps
    assert main(["evaluate", str(ckpt), "--config", str(cfg), "--out", str(out), "--no-progress"]) == 0
    assert f"resuming {out}: 2 finished units kept" in caplog.text


def test_a_record_without_noise_probes_names_none(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """No noise probe configured: the record's note ends at the attack units (it read "0 of 0 noise probes kept")."""
    monkeypatch.chdir(tmp_path)
    ckpt, out = write_checkpoint(tmp_path / "kwta.pt"), tmp_path / "r.json"
    cfg = write_config(tmp_path / "c.yaml", noise=[])
    interrupted_record(ckpt, cfg, out, capsys)
    rc, text, errors = run(["evaluate", str(ckpt), "--config", str(cfg), "--out", str(out), "--dry-run"], capsys)
    assert rc == 0 and errors == []
    assert [line for line in notes(text) if line.startswith(f"- record {out}")] == [
        f"- record {out}: a partial record; 2 of 4 attack units finished and resumed, 2 to run"]


@pytest.mark.parametrize("change", ["samples", "settings"])
def test_a_record_the_run_refuses_is_shown_then_its_line(change: str, setup, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    ckpt, cfg = setup
    out = tmp_path / "r.json"
    data = interrupted_record(ckpt, cfg, out, capsys)
    argv = ["evaluate", str(ckpt), "--config", str(cfg), "--out", str(out), "--no-progress"]
    if change == "samples":
        argv += ["--n-examples", "10"]
    else:  # a record whose PGD ran with other effective settings (an earlier version's defaults)
        data["results"][0]["settings"]["steps"] = 40
        out.write_text(json.dumps(data))
    before = files(tmp_path)
    rc, text, dry = run([*argv, "--dry-run"], capsys)
    assert rc == 2 and len(dry) == 1
    assert (f"- record {out}: holds a partial record of 2 finished attack units; the run would stop before its first "
            f"attack: {dry[0][len('error: '):]}") in notes(text)
    assert files(tmp_path) == before
    rc, _, real = run(argv, capsys)
    assert rc == 2 and real == dry
    assert ("another config (n_examples: 12 in the record, 10 now) and other samples" if change == "samples"
            else "pgd: steps 40 → 3") in dry[0]


def test_another_run_writing_the_record_is_the_run_s_line(setup, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    ckpt, cfg = setup
    out = tmp_path / "r.json"
    argv = ["evaluate", str(ckpt), "--config", str(cfg), "--out", str(out), "--no-progress"]
    with OutputLock(out, "--out"):
        rc, text, dry = run([*argv, "--dry-run"], capsys)
        assert rc == 2 and "is in use by another kwta-robust run" in dry[0] and "| pgd " in text
        rc, _, real = run(argv, capsys)
        assert rc == 2 and real == dry


def test_sharded_plan_names_the_ranges_and_the_run_s_limits(setup, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    ckpt, cfg = setup
    argv = ["evaluate", str(ckpt), "--config", str(cfg), "--out", "r.json", "--dry-run", "--shards", "2"]
    before = files(tmp_path)
    rc, out, errors = run([*argv, "--batch-size", "6"], capsys)
    assert rc == 0 and errors == []
    assert "- shards: 2 workers of the process executor; the samples cut into the ranges 0:6, 6:12" in notes(out)
    assert "- record r.json: none yet; every unit runs" in notes(out)
    rc, out, errors = run(argv, capsys)  # 12 samples in one batch of 12: not enough for 2 shards
    assert rc == 2 and errors == ["error: --shards: 2 shards need at least 2 batches, but 12 samples in batches of 12 "
                                  "make 1; lower --batch-size or --shards"]
    assert files(tmp_path) == before


def test_compare_dry_run_plans_every_model(setup, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt, cfg = setup
    relu = write_checkpoint(tmp_path / "relu.pt", activation="relu")
    before = files(tmp_path)
    rc, out, errors = run(["compare", str(ckpt), str(relu), "--config", str(cfg), "--out-dir", "cmp", "--dry-run"],
                          capsys)
    assert rc == 0 and errors == []
    rows = [[c.strip() for c in line.split("|")[1:5]] for line in out.splitlines() if line.startswith("| kwta ")
            or line.startswith("| relu ")]
    assert rows == [["kwta", "pgd", "pgd", "white-box"], ["kwta", "bpda", "bpda", "bpda"],
                    ["kwta", "transfer", "transfer", "transfer"], ["kwta", "noise numenta", "numenta", "noise"],
                    ["relu", "pgd", "pgd", "white-box"], ["relu", "bpda", "bpda", "bpda"],
                    ["relu", "transfer", "transfer", "transfer"], ["relu", "noise numenta", "numenta", "noise"]]
    assert "- transfer (kwta): source relu; inner pgd: steps 40," in out
    assert "- kwta: bpda acts on: net.2 (native)" in out
    assert "- relu: bpda acts on: no layer, so only its first stage's inner attack will run, unchanged" in out
    assert "- record cmp/kwta.json: none yet; every unit runs" in out
    assert files(tmp_path) == before and not (tmp_path / "cmp").exists()


def test_compare_stops_at_a_later_model_s_record_after_evaluating_the_earlier(setup, tmp_path: Path,
                                                                               capsys: pytest.CaptureFixture) -> None:
    """``compare`` evaluates its models one after another: a record it cannot resume for the second model stops it
    once the first is evaluated and written, not before its first attack."""
    ckpt, cfg = setup
    relu = write_checkpoint(tmp_path / "relu.pt", activation="relu")
    assert main(["evaluate", str(relu), "--config", str(cfg), "--out", "cmp/relu.json", "--no-progress",
                 "--n-examples", "10"]) == 0  # a record of other samples where the comparison writes relu's
    capsys.readouterr()
    argv = ["compare", str(ckpt), str(relu), "--config", str(cfg), "--out-dir", "cmp", "--no-progress"]
    before = files(tmp_path)
    rc, out, dry = run([*argv, "--dry-run"], capsys)
    assert rc == 2 and len(dry) == 1 and files(tmp_path) == before
    assert "- record cmp/kwta.json: none yet; every unit runs" in notes(out)
    assert (f"- record cmp/relu.json: holds a complete record of 4 finished attack units; the run would evaluate kwta "
            f"and write its record, then stop before attacking relu: {dry[0][len('error: '):]}") in notes(out)
    rc, _, real = run(argv, capsys)
    assert rc == 2 and real == dry and load_record(tmp_path / "cmp" / "kwta.json").status == "complete"


class GatedNet(nn.Module):
    """A model with a BatchNorm (whose statistics a forward in train mode would change) and a top-k gate."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.BatchNorm1d(32), Top8(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_the_model_is_left_as_it_was(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = GatedNet().train()
    model.body[1].weight.requires_grad_(False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    loaded = ModelForEval(model, model_info(model, "gated", "test"), "gated", {})
    cfg = EvalConfig.from_dict(CONFIG)
    plan = plan_model(loaded, load_dataset("mnist5k", "test"), cfg, tmp_path / "r.json", {}, resume=True,
                      strict=True, stale=StalePolicy(), locks={"--out": tmp_path / "r.json"})
    assert model.training and all(m.training for m in model.modules())
    assert not model.body[1].weight.requires_grad and model.body[4].weight.requires_grad
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert [(u.label, u.bpda_layers) for u in plan.units] == [("pgd", None), ("bpda", {"body.3": "wrapped gate/dense"})]
    assert [u.settings["steps"] for u in plan.units[:1]] == [3] and plan.state.error is None
    assert list(tmp_path.iterdir()) == []
