"""Fuzz round on ``kwta-robust compare`` and ``compare_models_in_memory``: what broke the one-line-error rule.

A ``compare.md`` that is a folder stopped the run after every model was evaluated with a raw IsADirectoryError; a
checkpoint's ``data_split_seed`` of ``None`` or text raised a raw TypeError (sorting the seeds), and one the data
loading reads as the canonical split (``3.0``, ``True``) refused a comparison on the very same samples; the API's
``out_dir`` that is a file or not a path, and a ``transfer`` that is not a bool, were a raw traceback or silently read
as true; labels that differ only in case or Unicode form name one record file on macOS and Windows.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from kwta_robust.api import compare_models_in_memory
from kwta_robust.checkpoint import save_checkpoint
from kwta_robust.cli import main
from kwta_robust.errors import ConfigError
from kwta_robust.models import ModelSpec
from test_cli_eval import run_error, write_checkpoint, write_config
from test_record_diff import CONFIG


def split_checkpoint(path: Path, split_seed: object) -> Path:
    spec = ModelSpec.from_args("mlp", activation="relu", num_classes=10, in_channels=1, input_size=28, hidden=[16])
    torch.manual_seed(0)
    return save_checkpoint(path, spec.build(), spec, {"dataset": "mnist5k", "data_split_seed": split_seed})


def small_config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "c.yaml", n_examples=4, batch_size=4, threats=[{"norm": "linf", "epsilons": [0.1]}],
                        attacks=[{"attack": "pgd", "params": {"steps": 1}}], noise=[],
                        diagnostics={"enabled": False})


def test_a_folder_where_compare_writes_its_table_is_refused_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    relu, kwta = write_checkpoint(tmp_path / "relu.pt"), write_checkpoint(tmp_path / "kwta.pt", seed=1)
    out_dir = tmp_path / "cmp"
    for name in ("compare.md", "compare.html"):
        (out_dir / name).mkdir(parents=True)
        line = run_error(capsys, ["compare", str(relu), str(kwta), "--config", str(small_config(tmp_path)),
                                  "--out-dir", str(out_dir), "--no-progress"])
        assert line == (f"error: --out-dir: {out_dir / name} is a folder, where compare writes its "
                        f"{'table' if name.endswith('.md') else 'report'}; move it away or use another --out-dir")
        assert sorted(p.name for p in out_dir.iterdir()) == [name]  # refused before the first evaluation
        (out_dir / name).rmdir()


def test_a_split_seed_of_none_is_the_canonical_split_as_evaluate_reads_it(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Compare ran on split 0 for both, but sorting the seeds {0, None} raised a raw TypeError."""
    first, odd = split_checkpoint(tmp_path / "a.pt", 0), split_checkpoint(tmp_path / "b.pt", None)
    rc = main(["compare", str(first), str(odd), "--config", str(small_config(tmp_path)), "--out-dir",
               str(tmp_path / "cmp"), "--no-progress", "--dry-run"])
    _, err = capsys.readouterr()
    assert rc == 0 and "Traceback" not in err and "error:" not in err
    assert not (tmp_path / "cmp" / "a.json").exists()


@pytest.mark.parametrize("seed", ["three", [3], 3.0, True, 0.5])
def test_a_split_seed_that_is_no_whole_number_is_refused_not_read_as_the_canonical_split(
        tmp_path: Path, capsys: pytest.CaptureFixture, seed: object) -> None:
    """It was read as split 0 (3.0 too), whose test samples may be training samples of a model trained on another
    split; the checkpoint is refused in one line (tests/test_ckpt_fuzz.py), by compare as by evaluate."""
    first, odd = split_checkpoint(tmp_path / "a.pt", 0), split_checkpoint(tmp_path / "b.pt", seed)
    line = run_error(capsys, ["compare", str(first), str(odd), "--config", str(small_config(tmp_path)),
                              "--out-dir", str(tmp_path / "cmp"), "--no-progress", "--dry-run"])
    assert line.startswith("error: ") and f"metadata data_split_seed is {seed!r}, not a whole number" in line
    three = split_checkpoint(tmp_path / "c.pt", 3)
    line = run_error(capsys, ["compare", str(first), str(three), "--config", str(small_config(tmp_path)),
                              "--out-dir", str(tmp_path / "cmp"), "--no-progress", "--dry-run"])
    assert line == ("error: compare: the models were trained on different data splits (data_split_seed [0, 3]); "
                    "they cannot be evaluated on the same held-out samples")


def toy_models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {name: nn.Sequential(nn.Flatten(), nn.Linear(20, 3)).eval() for name in ("a", "b")}


def toy_xy() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.rand(8, 1, 4, 5, generator=gen), torch.randint(0, 3, (8,), generator=gen)


@pytest.mark.parametrize("out_dir, expected", [
    ("file", "out_dir: {file} is a file, not a folder; give a folder path"),
    (3, "out_dir: expected a folder path (str or pathlib.Path), got int 3"),
])
def test_the_apis_out_dir_is_checked_where_it_enters(tmp_path: Path, out_dir: object, expected: str) -> None:
    afile = tmp_path / "f.txt"
    afile.write_text("mine")
    given = afile if out_dir == "file" else out_dir
    with pytest.raises(ConfigError) as caught:
        compare_models_in_memory(toy_models(), CONFIG, *toy_xy(), out_dir=given)
    assert str(caught.value) == expected.format(file=afile)
    assert afile.read_text() == "mine"


@pytest.mark.parametrize("transfer", ["no", None, 0])
def test_the_apis_transfer_is_a_bool(transfer: object) -> None:
    """``transfer="no"`` ran transfer attacks (a non-empty string is true)."""
    with pytest.raises(ConfigError) as caught:
        compare_models_in_memory(toy_models(), CONFIG, *toy_xy(), transfer=transfer)
    assert str(caught.value) == f"transfer: expected True or False, got {transfer!r}"


MACOS = " on a case-insensitive file system (macOS, Windows)"


@pytest.mark.parametrize("labels, named", [
    ("Relu,relu", "'Relu' and 'relu' name one record file" + MACOS),
    ("\u00e9,e\u0301", "'\u00e9' and 'e\u0301' name one record file" + MACOS),
    ("x,y,x", "'x' is given twice"),
])
def test_labels_of_one_record_file_on_macos_or_windows_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture, labels: str, named: str) -> None:
    """There the second model's record replaced the first's (with --no-resume; else a stale-record refusal)."""
    models = [str(write_checkpoint(tmp_path / f"m{i}.pt", seed=i)) for i in range(len(labels.split(",")))]
    line = run_error(capsys, ["compare", *models, "--config", str(small_config(tmp_path)), "--labels", labels,
                              "--out-dir", str(tmp_path / "cmp"), "--no-resume", "--no-progress"])
    assert line == f"error: --labels: {named}; give each model its own name"
    assert not (tmp_path / "cmp").exists() or not list((tmp_path / "cmp").iterdir())


def test_default_labels_that_differ_only_in_case_are_numbered(tmp_path: Path) -> None:
    from kwta_robust.compare import model_labels

    assert model_labels(["a/Relu.pt", "b/relu.pt", "c/RELU.pt"]) == ["Relu", "relu-2", "RELU-3"]


def test_the_api_refuses_labels_of_one_record_file_only_where_it_writes(tmp_path: Path) -> None:
    models = toy_models()
    models = {"Kwta": models["a"], "kwta": models["b"]}
    with pytest.raises(ConfigError) as caught:
        compare_models_in_memory(models, CONFIG, *toy_xy(), out_dir=tmp_path / "cmp")
    assert str(caught.value) == ("compare: labels 'Kwta' and 'kwta' name one record file on a case-insensitive file "
                                 "system (macOS, Windows); give each model its own label")
    assert not list((tmp_path / "cmp").glob("*.json"))
    records = compare_models_in_memory(models, CONFIG, *toy_xy())  # nothing written: nothing to collide
    assert [r.label for r in records] == ["Kwta", "kwta"]
