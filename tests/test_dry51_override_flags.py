"""Dry run 51: `--n-examples 0` read "error: n_examples: must be >= 1, got 0", naming the config key where the user
typed a flag. A value a command-line override gave is now named by its flag (EvalConfig.with_overrides' ``flags``);
a config file's value, and an override through the Python API, by its key as before."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kwta_robust.cli import main
from kwta_robust.config import EvalConfig
from kwta_robust.errors import ConfigError

CONFIG = {"dataset": "mnist5k", "n_examples": 4, "batch_size": 4, "device": "cpu",
          "threats": [{"norm": "linf", "epsilons": [0.1]}],
          "attacks": [{"attack": "bpda", "params": {"surrogate": "smooth", "inner": "pgd"}}]}


def error_line(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("error: ")][-1]


@pytest.mark.parametrize("flag, value, detail", [
    ("--n-examples", "0", "must be >= 1, got 0"),
    ("--batch-size", "0", "must be >= 1, got 0"),
    ("--seed", "-1", "must be >= 0, got -1"),
    ("--device", "gpu", "cannot parse 'gpu'; use auto, cpu, cuda or cuda:N"),
    ("--device", "mps", "'mps' is not supported (the harness runs and is tested on CPU and CUDA); use auto, cpu, "
                        "cuda or cuda:N"),
    ("--data-root", "", "expected a non-empty string, got ''"),
    ("--bpda-layer", "", "expected auto, a module name, glob or class name, or a list of them; got ['']"),
])
@pytest.mark.parametrize("command", ["evaluate", "compare"])
def test_an_override_error_names_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture, command: str, flag: str,
                                          value: str, detail: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    models = [str(tmp_path / "m.pt")] if command == "evaluate" else [f"a={tmp_path / 'a.pt'}", f"b={tmp_path / 'b.pt'}"]
    assert error_line([command, *models, "--config", str(config), flag, value, "--dry-run"],
                      capsys) == f"error: {flag}: {detail}"


@pytest.mark.parametrize("key, flag, value, detail", [
    ("n_examples", "--n-examples", 0, "must be >= 1, got 0"),
    ("batch_size", "--batch-size", 0, "must be >= 1, got 0"),
    ("seed", "--seed", -1, "must be >= 0, got -1"),
])
def test_a_config_file_error_names_the_key_and_the_flag_its_own(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                 key: str, flag: str, value: int, detail: str) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(yaml.safe_dump(CONFIG))
    bad.write_text(yaml.safe_dump({**CONFIG, key: value}))
    model = str(tmp_path / "m.pt")
    assert error_line(["evaluate", model, "--config", str(good), flag, str(value), "--dry-run"],
                      capsys) == f"error: {flag}: {detail}"
    assert error_line(["evaluate", model, "--config", str(bad), "--dry-run"], capsys) == f"error: {key}: {detail}"
    # another override given does not rename the config file's key
    assert error_line(["evaluate", model, "--config", str(bad), "--device", "cpu", "--dry-run"],
                      capsys) == f"error: {key}: {detail}"


def test_the_quickstart_and_sweep_overrides_name_their_flags(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert error_line(["quickstart", "--n-examples", "0", "--out-dir", str(tmp_path / "q")],
                      capsys) == "error: --n-examples: must be >= 1, got 0"
    sweep = Path(__file__).resolve().parents[1] / "eval_configs" / "sweep_mnist5k_3x3.yaml"
    assert error_line(["sweep", str(sweep), "--device", "gpu", "--dry-run", "--out-dir", str(tmp_path / "s")],
                      capsys) == "error: --device: cannot parse 'gpu'; use auto, cpu, cuda or cuda:N"
    assert not (tmp_path / "q").exists() and not (tmp_path / "s").exists()


def test_the_python_api_overrides_keep_the_key() -> None:
    cfg = EvalConfig.from_dict(CONFIG)
    with pytest.raises(ConfigError) as info:
        cfg.with_overrides(n_examples=0)
    assert str(info.value) == "n_examples: must be >= 1, got 0"
    with pytest.raises(ConfigError) as info:
        cfg.with_overrides(flags={"n_examples": "--n-examples"}, n_examples=0, device="cpu")
    assert str(info.value) == "--n-examples: must be >= 1, got 0"
    with pytest.raises(ConfigError) as info:
        cfg.with_overrides(device="gpu")
    assert str(info.value) == "device: cannot parse 'gpu'; use auto, cpu, cuda or cuda:N"
    assert cfg.with_overrides(flags={"seed": "--seed"}, seed=3).seed == 3
