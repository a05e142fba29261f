"""Errors raised after the overrides were validated named the config key even where a flag gave the value
(session 51 named the flag only in the validation step): ``--device cuda`` on a machine without CUDA read
``device: 'cuda' requested ...``, ``--n-examples`` above the split's size ``n_examples: ...``, a ``--bpda-layer``
matching no module ``bpda_layers: ...``, an unreadable ``--data-root`` ``data_root: ...``. The commands that take
the overrides (evaluate, compare, quickstart, sweep) now name the flag in those too
(``kwta_robust.commands.common.flags_named``); a config file's value keeps its key."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from kwta_robust.checkpoint import save_checkpoint
from kwta_robust.cli import main
from kwta_robust.models import ModelSpec

CONFIG = {"dataset": "mnist5k", "n_examples": 4, "batch_size": 4, "device": "cpu",
          "threats": [{"norm": "linf", "epsilons": [0.1]}],
          "attacks": [{"attack": "bpda", "params": {"surrogate": "smooth", "inner": "pgd",
                                                    "inner_params": {"steps": 1}}}],
          "diagnostics": {"enabled": False}}
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def error_line(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, str]:
    torch.manual_seed(0)
    spec = ModelSpec.from_args("mlp", activation={"name": "kwta", "ratio": 0.25}, num_classes=10, in_channels=1,
                               input_size=28, hidden=[8])
    paths = {}
    for name in ("a", "b"):
        paths[name] = str(save_checkpoint(tmp_path / f"{name}.pt", spec.build(), spec,
                                          {"dataset": "mnist5k", "data_split_seed": 0}))
    for name, extra in (("good", {}), ("cuda", {"device": "cuda"}), ("big", {"n_examples": 100_000}),
                        ("layer", {"bpda_layers": ["nosuch"]}),
                        ("disk", {"dataset": "mnist"})):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({**CONFIG, **extra}))
        paths[name] = str(tmp_path / f"{name}.yaml")
    paths["out"] = str(tmp_path / "r.json")
    paths["dir"] = str(tmp_path / "cmp")
    return paths


def argv(command: str, p: dict[str, str], config: str, *extra: str) -> list[str]:
    models = [p["a"], "--out", p["out"]] if command == "evaluate" else [p["a"], p["b"], "--out-dir", p["dir"]]
    return [command, *models, "--config", p[config], "--no-progress", *extra]


@NO_CUDA
@pytest.mark.parametrize("command", ["evaluate", "compare"])
def test_a_device_this_machine_lacks_names_the_flag_that_gave_it(setup: dict[str, str], command: str,
                                                                 capsys: pytest.CaptureFixture) -> None:
    detail = "'cuda' requested but CUDA is not available; use --device cpu or auto"
    assert error_line(argv(command, setup, "good", "--device", "cuda"), capsys) == f"error: --device: {detail}"
    # the config file's value: its key, and the fix in the key's words (it said: use --device cpu or auto)
    in_file = "device: 'cuda' requested but CUDA is not available; set device: cpu or auto in the config"
    assert error_line(argv(command, setup, "cuda"), capsys) == f"error: {in_file}"
    # another flag given does not rename the config file's key
    assert error_line(argv(command, setup, "cuda", "--seed", "1"), capsys) == f"error: {in_file}"
    assert error_line(argv("evaluate", setup, "good", "--device", "cuda", "--dry-run"),
                      capsys) == f"error: --device: {detail}"


@NO_CUDA
def test_quickstart_and_sweep_name_device(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    detail = "'cuda' requested but CUDA is not available; use --device cpu or auto"
    assert error_line(["quickstart", "--device", "cuda", "--out-dir", str(tmp_path / "q")],
                      capsys) == f"error: --device: {detail}"
    sweep = Path(__file__).resolve().parents[1] / "eval_configs" / "sweep_mnist5k_3x3.yaml"
    assert error_line(["sweep", str(sweep), "--device", "cuda", "--dry-run", "--out-dir", str(tmp_path / "s")],
                      capsys) == f"error: --device: {detail}"


@pytest.mark.parametrize("command", ["evaluate", "compare"])
def test_more_examples_than_the_split_names_the_flag_and_the_most(setup: dict[str, str], command: str,
                                                                  capsys: pytest.CaptureFixture) -> None:
    line = error_line(argv(command, setup, "good", "--n-examples", "100000"), capsys)
    assert line.startswith("error: --n-examples: 100000 requested but mnist5k (test) has only ")
    most = line.split("has only ")[1].split(" ")[0]
    assert f"use --n-examples {most} or fewer" in line
    assert error_line(argv(command, setup, "big"), capsys).startswith("error: n_examples: 100000 requested")


def test_quickstart_more_examples_names_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    line = error_line(["quickstart", "--n-examples", "100000", "--out-dir", str(tmp_path / "q")], capsys)
    assert line.startswith("error: --n-examples: 100000 requested but mnist5k (test) has only ")
    assert not (tmp_path / "q").exists()


def test_a_bpda_layer_matching_no_module_names_the_flag_and_lists_the_layers(setup: dict[str, str],
                                                                            capsys: pytest.CaptureFixture) -> None:
    line = error_line(argv("evaluate", setup, "good", "--bpda-layer", "nosuch"), capsys)
    assert line == ("error: --bpda-layer: 'nosuch' matches no module (by name, glob or class name); candidates: "
                    "normalize (Normalize), net.0 (Flatten), net.1 (Linear), net.2 (KWTA), net.3 (Linear)")
    line = error_line(argv("compare", setup, "good", "--bpda-layer", "nosuch"), capsys)
    assert line.startswith("error: --bpda-layer: 'nosuch' matches no module of any compared model; candidates: a: ")
    assert error_line(argv("evaluate", setup, "layer"), capsys).startswith("error: bpda_layers: 'nosuch' matches")


def test_a_data_root_that_cannot_be_read_names_the_flag(setup: dict[str, str], capsys: pytest.CaptureFixture) -> None:
    # a data set read from a folder (mnist): with mnist5k, bundled, --data-root is refused as unused (walk53)
    line = error_line(argv("evaluate", setup, "disk", "--data-root", "~no-such-user-52/data"), capsys)
    assert line.startswith("error: --data-root: cannot expand ~no-such-user-52/data (no such user's home folder)")
