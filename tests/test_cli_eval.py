"""CLI: evaluate / compare / table end to end on tiny models, and every bad input as one `error:` line, exit 2."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from kwta_robust.checkpoint import save_checkpoint
from kwta_robust.cli import main
from kwta_robust.errors import ConfigError
from kwta_robust.models import ModelSpec
from kwta_robust.results import load_record


def make_mlp() -> nn.Module:
    """Bring-your-own factory used through --model-factory test_cli_eval:make_mlp."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10))


def write_checkpoint(path: Path, activation: object = "relu", seed: int = 0) -> Path:
    torch.manual_seed(seed)
    spec = ModelSpec.from_args("mlp", activation=activation, num_classes=10, in_channels=1, input_size=28, hidden=[16])
    return save_checkpoint(path, spec.build(), spec, {"dataset": "mnist5k", "data_split_seed": 0})


def write_config(path: Path, **extra: object) -> Path:
    import yaml

    data = {
        "description": "cli test", "dataset": "mnist5k", "n_examples": 12, "batch_size": 12, "device": "cpu",
        "threats": [{"norm": "linf", "epsilons": ["8/255", 0.3]}],
        "attacks": [{"attack": "pgd", "params": {"steps": 3}}, "fgsm"],
        "noise": [{"kind": "numenta", "levels": [0.0, 0.25], "draws": 1}],
    }
    data.update(extra)
    path.write_text(yaml.safe_dump(data))
    return path


def run_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture()
def ckpt(tmp_path: Path) -> Path:
    return write_checkpoint(tmp_path / "relu.pt")


def test_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = write_config(tmp_path / "c.yaml")
    line = run_error(capsys, ["evaluate", str(tmp_path / "nope.pt"), "--config", str(cfg)])
    assert "nope.pt: file not found" in line


def test_unknown_config_key(tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = write_config(tmp_path / "c.yaml", epsilon=0.3)
    line = run_error(capsys, ["evaluate", str(ckpt), "--config", str(cfg)])
    assert line.startswith("error: config: unknown key 'epsilon'; valid keys:")


def test_eps_that_does_not_parse(tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = write_config(tmp_path / "c.yaml", threats=[{"norm": "linf", "epsilons": ["8/255x"]}])
    line = run_error(capsys, ["evaluate", str(ckpt), "--config", str(cfg)])
    assert "threats[0].epsilons[0]: cannot parse '8/255x' as an epsilon" in line


def test_data_set_without_local_root(tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = write_config(tmp_path / "c.yaml", dataset="cifar10", data_root=str(tmp_path / "no-data"))
    line = run_error(capsys, ["evaluate", str(ckpt), "--config", str(cfg)])
    assert "cifar10: data not found at" in line and "--data-root" in line
    assert "`kwta-robust train --download`" in line  # evaluate has no --download: the advice names what does


def test_unknown_attack_and_missing_config(tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = write_config(tmp_path / "c.yaml", attacks=["pgd", "carlini"])
    line = run_error(capsys, ["evaluate", str(ckpt), "--config", str(cfg)])
    assert "attacks[1].attack: unknown attack 'carlini'; known attacks:" in line
    line = run_error(capsys, ["evaluate", str(ckpt), "--config", str(tmp_path / "none.yaml")])
    assert "--config: no such file" in line


def test_model_source_errors(tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = str(write_config(tmp_path / "c.yaml"))
    assert "either a CHECKPOINT or --model-factory" in run_error(capsys, ["evaluate", "--config", cfg])
    assert "--weights: only used with --model-factory" in run_error(
        capsys, ["evaluate", str(ckpt), "--config", cfg, "--weights", str(ckpt)])
    assert "cannot import 'no_such_module'" in run_error(
        capsys, ["evaluate", "--config", cfg, "--model-factory", "no_such_module:f"])
    assert "--factory-kwargs: not valid JSON" in run_error(
        capsys, ["evaluate", "--config", cfg, "--model-factory", "test_cli_eval:make_mlp", "--factory-kwargs", "{x"])
    if not torch.cuda.is_available():
        assert "CUDA is not available" in run_error(capsys, ["evaluate", str(ckpt), "--config", cfg,
                                                             "--device", "cuda"])


def test_evaluate_then_table(tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = write_config(tmp_path / "c.yaml")
    out, adv = tmp_path / "rec.json", tmp_path / "adv.pt"
    rc = main(["evaluate", str(ckpt), "--config", str(cfg), "--out", str(out), "--save-adversarial", str(adv),
               "--n-examples", "10", "--no-progress"])
    stdout, _ = capsys.readouterr()
    assert rc == 0
    lines = stdout.splitlines()
    assert any(line.startswith("| Linf 8/255 ") for line in lines)  # one narrow table per threat point
    assert any(line.startswith("| pgd ") and "| white-box |" in line for line in lines)
    assert any(line.startswith("| Linf 0.3 ") for line in lines) and \
        any(line.startswith("| worst case ") for line in lines)
    assert max(len(line) for line in lines) <= 120
    assert (tmp_path / "rec.html").is_file()  # the HTML report next to the record
    record = load_record(out)
    assert record.clean.n == 10 and record.status == "complete"
    assert record.model["activation"] == "relu" and len(record.model["checkpoint_sha256"]) == 64
    assert record.model["weight_sparsity"]["total"] > 0
    assert record.config["n_examples"] == 10
    assert record.provenance["versions"]["torch"] == str(torch.__version__)
    assert any(part.startswith("--n-examples=10") for part in record.provenance["command"])
    assert "adv/pgd|linf|0.3" in torch.load(adv, weights_only=True)

    for fmt, check in [
        ("md", lambda t: t.startswith("| model | activation |") and "| Linf 8/255 |" in t and "| worst case |" in t),
        ("wide", lambda t: "| model | activation | n | clean |" in t and "worst case Linf 8/255" in t),
        ("csv", lambda t: list(csv.DictReader(io.StringIO(t)))[0]["model"] == "relu"),
        ("latex", lambda t: t.startswith(r"\begin{tabular}")),
        ("json", lambda t: json.loads(t)["rows"][0]["n"] == 10),
    ]:
        assert main(["table", str(out), "--format", fmt]) == 0
        text, _ = capsys.readouterr()
        assert check(text), (fmt, text)
    assert main(["table", str(out), "--layout", "long", "--format", "wide", "--out", str(tmp_path / "t.md")]) == 0
    assert "| relu | Linf 0.3 | +fgsm |" in (tmp_path / "t.md").read_text()
    line = run_error(capsys, ["table", str(tmp_path / "missing.json")])
    assert "record: no such file" in line


def test_bring_your_own_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    weights = tmp_path / "w.pt"
    torch.manual_seed(1)
    torch.save(make_mlp().state_dict(), weights)
    cfg = write_config(tmp_path / "c.yaml", threats=[{"norm": "linf", "epsilons": [0.1]}], attacks=["fgsm"], noise=[])
    rc = main(["evaluate", "--model-factory", "test_cli_eval:make_mlp", "--weights", str(weights), "--config",
               str(cfg), "--out", str(tmp_path / "byo.json"), "--no-progress"])
    stdout, _ = capsys.readouterr()
    assert rc == 0 and "### w" in stdout and "| Linf 0.1 " in stdout and "| fgsm " in stdout
    record = load_record(tmp_path / "byo.json")
    assert record.model["architecture"] == "Sequential" and record.model["spec"] is None


def test_compare_with_transfer(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    relu = write_checkpoint(tmp_path / "relu.pt")
    kwta = write_checkpoint(tmp_path / "kwta.pt", activation={"name": "kwta", "ratio": 0.25}, seed=1)
    cfg = write_config(tmp_path / "c.yaml", threats=[{"norm": "linf", "epsilons": [0.3]}],
                       attacks=[{"attack": "pgd", "params": {"steps": 3}}])
    out_dir = tmp_path / "cmp"
    rc = main(["compare", str(relu), str(kwta), "--config", str(cfg), "--out-dir", str(out_dir), "--no-progress"])
    stdout, _ = capsys.readouterr()
    assert rc == 0
    assert sum(1 for line in stdout.splitlines() if line.startswith("| +transfer ")) == 1  # each model's one source
    records = {p.stem: load_record(p) for p in out_dir.glob("*.json")}
    assert set(records) == {"relu", "kwta"}
    assert records["relu"].dataset["indices"] == records["kwta"].dataset["indices"]
    assert records["kwta"].result("transfer", "linf", 0.3).source == "relu"
    assert records["relu"].result("transfer", "linf", 0.3).source == "kwta"
    assert (out_dir / "compare.md").read_text().startswith("| model |")
    header = (out_dir / "compare.md").read_text().splitlines()[0]
    assert header.count("+transfer Linf 0.3") == 1  # the wide table: one column for each model's single source
    assert "relu" in (out_dir / "compare.html").read_text()
    # records of another config in the folder: refused, naming compare's own options (not evaluate's --out)
    line = run_error(capsys, ["compare", str(relu), str(kwta), "--config", str(cfg), "--out-dir", str(out_dir),
                              "--no-progress", "--seed", "3"])
    assert line.startswith("error: --out-dir: ") and "holds a record of another config" in line
    assert line.endswith("use a new --out-dir or --no-resume")
    assert load_record(out_dir / "relu.json").results == records["relu"].results  # nothing overwritten
    line = run_error(capsys, ["compare", str(relu), "--config", str(cfg)])
    assert "at least two models" in line


def test_outputs_never_overwrite_inputs_other_outputs_or_foreign_files(tmp_path: Path, ckpt: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    """The HTML report goes next to --out with .html: it must not land on the record, the adversarial file or an
    input; a file at --out that is not a record is left alone, also with --no-resume; seeds torch cannot take are
    a config error."""
    cfg = write_config(tmp_path / "c.yaml", threats=[{"norm": "linf", "epsilons": [0.1]}], attacks=["fgsm"], noise=[])
    base = ["evaluate", str(ckpt), "--config", str(cfg), "--no-progress"]
    line = run_error(capsys, [*base, "--out", str(tmp_path / "rec.html")])
    assert "would be overwritten by its own HTML report" in line and "give the record a .json path" in line
    line = run_error(capsys, [*base, "--out", str(tmp_path / "sa.json"),
                              "--save-adversarial", str(tmp_path / "sa.html")])
    assert line.startswith("error: the HTML report next to --out: ") and "is also given as --save-adversarial" in line
    html_ckpt = tmp_path / "relu.html"
    html_ckpt.write_bytes(ckpt.read_bytes())
    line = run_error(capsys, ["evaluate", str(html_ckpt), "--config", str(cfg), "--out", str(tmp_path / "relu.json")])
    assert "is also given as CHECKPOINT" in line and html_ckpt.read_bytes() == ckpt.read_bytes()
    foreign = tmp_path / "f.json"
    foreign.write_text('{"name": "my data"}')
    for extra in ([], ["--no-resume"]):
        line = run_error(capsys, [*base, "--out", str(foreign), *extra])
        assert "exists and is not a kwta-robust record (nothing was written to it)" in line
    assert foreign.read_text() == '{"name": "my data"}' and not (tmp_path / "f.html").exists()
    line = run_error(capsys, [*base, "--out", str(tmp_path / "x.json"), "--seed", str(10**23)])
    assert line == f"error: --seed: must be <= {2**63 - 1}, got {10**23}"  # the flag gave it


def test_misleading_messages_name_the_real_cause(tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture) -> None:
    """Each message says what is actually wrong (found by an audit of ~390 bad inputs)."""
    cfg = write_config(tmp_path / "c.yaml", threats=[{"norm": "linf", "epsilons": [0.1]}],
                       attacks=[{"attack": "pgd", "norms": ["l2"]}], noise=[])
    line = run_error(capsys, ["evaluate", str(ckpt), "--config", str(cfg)])
    assert "'pgd' (pgd) is limited to norms l2 (its norms: key) and the threats are linf" in line
    payload = torch.load(ckpt, weights_only=True)
    torch.save({**payload, "format": "other-tool"}, tmp_path / "other.pt")
    good = write_config(tmp_path / "g.yaml", threats=[{"norm": "linf", "epsilons": [0.1]}], attacks=["fgsm"])
    line = run_error(capsys, ["evaluate", str(tmp_path / "other.pt"), "--config", str(good)])
    assert "its format is 'other-tool', not" in line
    line = run_error(capsys, ["evaluate", str(tmp_path), "--config", str(good)])
    assert f"checkpoint {tmp_path}: is a folder; give the checkpoint file" in line
    line = run_error(capsys, ["quickstart", "--config", str(tmp_path), "--out-dir", str(tmp_path / "qs")])
    assert "--config: " in line and "is a folder; give the YAML file" in line
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    assert "start over even if --out-dir holds a partial record" in " ".join(capsys.readouterr().out.split())


def test_outputs_of_another_kind_are_not_overwritten(tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture) -> None:
    """train --out over an evaluation record, report / table --out over a checkpoint or a record: refused."""
    cfg = write_config(tmp_path / "c.yaml", threats=[{"norm": "linf", "epsilons": [0.1]}], attacks=["fgsm"], noise=[])
    record = tmp_path / "r.json"
    assert main(["evaluate", str(ckpt), "--config", str(cfg), "--out", str(record), "--no-progress"]) == 0
    capsys.readouterr()
    before = record.read_bytes()
    line = run_error(capsys, ["train", "--dataset", "mnist5k", "--epochs", "0", "--out", str(record)])
    assert line == f"error: --out: {record} holds a record; writing the checkpoint there would destroy it, choose " \
                   "another path"
    line = run_error(capsys, ["report", str(record), "--out", str(ckpt)])
    assert "holds a checkpoint; writing the report there would destroy it" in line
    line = run_error(capsys, ["table", str(record), "--out", str(tmp_path / "relu.pt")])
    assert "holds a checkpoint; writing the table there would destroy it" in line
    other = tmp_path / "other.pt"
    other.write_bytes(ckpt.read_bytes())
    line = run_error(capsys, ["evaluate", str(ckpt), "--config", str(cfg), "--out", str(other)])
    assert line == f"error: --out: {other} holds a checkpoint; writing the record there would destroy it, choose " \
                   "another path"
    line = run_error(capsys, ["evaluate", str(ckpt), "--config", str(cfg), "--out", str(tmp_path / "r2.json"),
                              "--save-adversarial", str(record)])
    assert line.startswith("error: --save-adversarial: ")
    assert "holds a record; writing the adversarial store there would destroy it" in line
    assert record.read_bytes() == before and torch.load(ckpt, weights_only=True)["format"]
    assert other.read_bytes() == ckpt.read_bytes()


def test_save_adversarial_overwrites_only_an_adversarial_store(tmp_path: Path, ckpt: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    """--save-adversarial over the user's own state_dict with --no-resume replaced it with the store (every zip file
    was 'a torch file', the kind the check asked for); without --no-resume the error said it 'holds other samples'.
    A store is recognised by its marker key, one written before the marker by its keys; an .npz is no torch file."""
    import numpy as np

    from kwta_robust.adversarial_store import STORE_MARKER
    from kwta_robust.safe_paths import file_kind

    cfg = write_config(tmp_path / "c.yaml", threats=[{"norm": "linf", "epsilons": [0.1]}], attacks=["fgsm"], noise=[])
    weights, arrays, notes = tmp_path / "netcopy.pt", tmp_path / "d.npz", tmp_path / "notes.txt"
    torch.save(make_mlp().state_dict(), weights)
    np.savez(arrays, x=np.zeros(3))
    notes.write_text("my notes\n")
    before = {path: path.read_bytes() for path in (weights, arrays, notes)}
    base = ["evaluate", str(ckpt), "--config", str(cfg), "--no-progress", "--out", str(tmp_path / "r.json")]
    for resume in ([], ["--no-resume"]):
        assert run_error(capsys, [*base, *resume, "--save-adversarial", str(weights)]) == (
            f"error: --save-adversarial: {weights} holds a torch file; writing the adversarial store there would "
            "destroy it, choose another path")
    assert f"{arrays} holds a NumPy .npz archive; writing the adversarial store" in run_error(
        capsys, [*base, "--save-adversarial", str(arrays)])
    assert f"{notes} holds a file that is not a kwta-robust adversarial store;" in run_error(
        capsys, [*base, "--save-adversarial", str(notes)])
    assert {path: path.read_bytes() for path in (weights, arrays, notes)} == before
    store = tmp_path / "adv.pt"
    assert main([*base, "--save-adversarial", str(store)]) == 0 and file_kind(store) == "adversarial store"
    assert main([*base, "--no-resume", "--save-adversarial", str(store)]) == 0  # its own store: a re-run
    saved = torch.load(store, weights_only=True)
    assert all(isinstance(value, torch.Tensor) for value in saved.values()) and STORE_MARKER in saved
    torch.save({key: value for key, value in saved.items() if key != STORE_MARKER}, store)  # an earlier version's
    assert file_kind(store) == "adversarial store"
    assert main([*base, "--save-adversarial", str(store)]) == 0
    capsys.readouterr()


def test_table_and_report_overwrite_only_their_own_outputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """table --out quick.yaml replaced a YAML config and report --out mm.py Python source: a table or report is
    written over an existing file only if it looks like one of the command's outputs (its extension, or a table's
    JSON by content) and is no record, manifest or binary file. Re-running the same command overwrites its output."""
    from kwta_robust.safe_paths import file_kind

    record = str(Path(__file__).parent / "fixtures" / "quickstart" / "kwta.json")
    config, source, other, manifest = (tmp_path / name for name in ("quick.yaml", "mm.py", "package.json", "s.json"))
    config.write_text("dataset: mnist5k\n")
    source.write_text("x = 1\n")
    other.write_text('{"name": "x", "columns": []}\n')
    manifest.write_text(json.dumps({"format": "kwta-robust-sweep", "format_version": 1, "cells": []}, indent=1))
    before = {path: path.read_bytes() for path in (config, source, other, manifest)}
    table_own = ".md/.markdown/.csv/.tex/.txt, or a table in JSON"
    for argv, expected in [
        (["table", record, "--out", str(config)], f"{config} is not a table this command wrote (it overwrites only a "
                                                  f"file ending in {table_own}); choose another path (or delete"),
        (["report", record, "--out", str(source)], f"{source} is not a report this command wrote (it overwrites only "
                                                   "a file ending in .html/.htm/.md/.markdown); choose another "
                                                   "path"),
        (["table", record, "--format", "json", "--out", str(other)], f"{other} is not a table this command wrote"),
        (["table", record, "--out", str(manifest)], f"{manifest} holds a sweep manifest; writing the table there"),
        (["report", record, "--out", str(manifest)], f"{manifest} holds a sweep manifest; writing the report there"),
    ]:
        assert run_error(capsys, argv).startswith(f"error: --out: {expected}")
    assert {path: path.read_bytes() for path in (config, source, other, manifest)} == before
    for argv in (["table", record, "--format", "json", "--out", str(tmp_path / "t.json")],
                 ["table", record, "--format", "csv", "--out", str(tmp_path / "t.csv")],
                 ["report", record, "--out", str(tmp_path / "r.html")]):
        assert main(argv) == 0 and main(argv) == 0
    assert file_kind(tmp_path / "t.json") == "table"
    capsys.readouterr()


def test_table_out_extension_chooses_the_format(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """table --out t.json without --format wrote Markdown into t.json, and the same command run again refused to
    replace it ("not a table this command wrote"). Now --out's extension (.csv, .tex, .json) chooses the format when
    --format is left out, re-runs replace their own file, and a --format the extension contradicts is one line."""
    from kwta_robust.safe_paths import file_kind

    record = str(Path(__file__).parent / "fixtures" / "quickstart" / "kwta.json")
    for name, starts in (("t.json", "{"), ("t.csv", "model,"), ("t.tex", "\\begin{tabular}"), ("t.md", "| model")):
        argv = ["table", record, "--out", str(tmp_path / name)]
        assert main(argv) == 0 and main(argv) == 0
        assert (tmp_path / name).read_text().startswith(starts), name
    assert file_kind(tmp_path / "t.json") == "table"
    assert main(["table", record, "--format", "csv", "--out", str(tmp_path / "t.txt")]) == 0
    assert run_error(capsys, ["table", record, "--format", "md", "--out", str(tmp_path / "u.json")]) == (
        f"error: --format: md does not match --out {tmp_path / 'u.json'} (a .json file holds json); pass --format "
        "json or leave --format out, or give --out a .md or .txt name")
    assert not (tmp_path / "u.json").exists()
    capsys.readouterr()


def test_a_record_given_twice_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """table a.json a.json printed the record twice (paired with itself) and report --sweep DIR with one of the
    sweep's records counted it twice ("5 records" of a 4-cell sweep): now one line naming both, before any work."""
    from kwta_robust.safe_paths import check_inputs_once

    record = Path(__file__).parent / "fixtures" / "quickstart" / "kwta.json"
    other = Path(__file__).parent / "fixtures" / "quickstart" / "relu.json"
    again = str(record.parent / ".." / "quickstart" / record.name)
    for argv in (["table", str(record), str(other), again], ["report", str(record), again, "--out",
                                                              str(tmp_path / "r.html")]):
        assert run_error(capsys, argv) == f"error: RECORD {again}: the same file as RECORD {record}; give each " \
                                           "record once"
    assert not (tmp_path / "r.html").exists()
    with pytest.raises(ConfigError, match="^RECORD r.json: the same file as --sweep's record cells/a/r.json; give"):
        check_inputs_once([("--sweep's record cells/a/r.json", record), ("RECORD r.json", record)])
    check_inputs_once([("RECORD a", record), ("RECORD b", other)])


def test_train_overwrites_only_its_own_checkpoints(tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture) -> None:
    """train --out over the user's own weights (a torch file without the kwta-robust marker) or any other file, or
    an incremental stage's checkpoint over such a file: refused before training, the file untouched; over one of
    its own checkpoints it trains (a re-run)."""
    from kwta_robust.safe_paths import file_kind

    torch.manual_seed(1)
    theirs = tmp_path / "theirs.pt"
    torch.save(make_mlp().state_dict(), theirs)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    assert (file_kind(theirs), file_kind(ckpt), file_kind(notes)) == ("torch file", "checkpoint", None)
    before = {path: path.read_bytes() for path in (theirs, notes)}
    base = ["train", "--dataset", "mnist5k", "--arch", "mlp", "--epochs", "0"]
    line = run_error(capsys, [*base, "--out", str(theirs)])
    assert line == f"error: --out: {theirs} holds a torch file; writing the checkpoint there would destroy it, " \
                   "choose another path"
    line = run_error(capsys, [*base, "--out", str(notes)])
    assert line == f"error: --out: {notes} holds a file that is not a kwta-robust checkpoint; writing the " \
                   "checkpoint there would destroy it, choose another path (or delete the file first)"
    stage = tmp_path / "inc-r0.05.pt"
    torch.save(make_mlp().state_dict(), stage)
    line = run_error(capsys, [*base, "--activation", "kwta", "--k-ratio", "0.1", "--incremental-ratios", "0.05",
                              "--out", str(tmp_path / "inc.pt")])
    assert f"--out (its incremental stage): {stage} holds a torch file" in line
    assert not (tmp_path / "inc.pt").exists() and not (tmp_path / "inc-r0.1.pt").exists()
    assert {path: path.read_bytes() for path in (theirs, notes)} == before
    own = tmp_path / "own.pt"
    assert main([*base, "--out", str(own)]) == 0 and file_kind(own) == "checkpoint"
    assert main([*base, "--out", str(own)]) == 0 and file_kind(own) == "checkpoint"
    capsys.readouterr()


def test_weights_that_need_pickle_load_with_allow_pickle(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A released training checkpoint often stores NumPy scalars beside the state_dict, or is a whole pickled module:
    refused by default (pickle runs code), loaded with --allow-pickle, which the message names."""
    import numpy as np

    torch.manual_seed(1)
    net = make_mlp()
    torch.save({"epoch": 3, "state_dict": net.state_dict(), "best_acc": np.float64(0.9)}, tmp_path / "numpy.pt")
    torch.save(net, tmp_path / "module.pt")
    cfg = write_config(tmp_path / "c.yaml", threats=[{"norm": "linf", "epsilons": [0.1]}], attacks=["fgsm"], noise=[])
    for name in ("numpy.pt", "module.pt"):
        base = ["evaluate", "--model-factory", "test_cli_eval:make_mlp", "--weights", str(tmp_path / name),
                "--config", str(cfg), "--out", str(tmp_path / f"{name}.json"), "--no-progress"]
        line = run_error(capsys, base)
        assert "need pickle" in line and "--allow-pickle" in line
        assert main([*base, "--allow-pickle"]) == 0
        capsys.readouterr()
        record = load_record(tmp_path / f"{name}.json")
        assert record.model["architecture"] == "Sequential" and record.status == "complete"
    assert load_record(tmp_path / "numpy.pt.json").clean_flags == load_record(tmp_path / "module.pt.json").clean_flags


def test_a_relative_weights_path_is_recorded_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the shards' workers load it: a sharded and an unsharded run write the same record."""
    from kwta_robust.loading import load_model

    monkeypatch.chdir(tmp_path)
    torch.save(make_mlp().state_dict(), "w.pt")
    loaded = load_model(None, "cpu", model_factory="test_cli_eval:make_mlp", weights="w.pt")
    expected = str(Path.cwd() / "w.pt")
    assert loaded.info["source"] == f"test_cli_eval:make_mlp + {expected}"
    assert loaded.info["training"]["weights"] == expected and loaded.source.weights == expected
    assert loaded.label == "w"


def test_compare_checks_every_model_before_the_first_evaluation(tmp_path: Path, ckpt: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    spec = ModelSpec.from_args("mlp", activation="relu", num_classes=10, in_channels=1, input_size=8, hidden=[16])
    digits = save_checkpoint(tmp_path / "digits.pt", spec.build(), spec, {"dataset": "digits", "data_split_seed": 0})
    cfg = write_config(tmp_path / "c.yaml")
    out_dir = tmp_path / "cmp"
    line = run_error(capsys, ["compare", str(ckpt), str(digits), "--config", str(cfg), "--out-dir", str(out_dir),
                              "--no-transfer", "--no-progress"])
    assert line.startswith("error: model digits: cannot run on mnist5k inputs [N, 1, 28, 28] (it expects inputs "
                           "[N, 1, 8, 8], was trained on digits)")
    assert not (out_dir / "relu.json").exists()  # refused before the first model was evaluated


def test_weights_given_as_the_checkpoint_beside_a_factory_say_where_they_go(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A nupic.torch-style weights file passed where a kwta-robust checkpoint goes, beside --model-factory, read
    "give either a CHECKPOINT or --model-factory", which invites dropping the factory."""
    cfg = str(write_config(tmp_path / "c.yaml"))
    torch.save({"model_state_dict": {}, "epoch": 3}, tmp_path / "net.pt")
    line = run_error(capsys, ["evaluate", str(tmp_path / "net.pt"), "--config", cfg, "--model-factory", "pkg.mod:make"])
    assert line == (f"error: CHECKPOINT {tmp_path / 'net.pt'} with --model-factory: a factory's weights go in "
                    f"--weights (--model-factory pkg.mod:make --weights {tmp_path / 'net.pt'}); a CHECKPOINT alone "
                    "is a kwta-robust checkpoint")
