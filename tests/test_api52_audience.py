"""Errors name what the user typed (session 52, API side): a Python API call was told CLI flags it does not have
(``as_config('nosuch.yaml')`` said ``--config: no such file``, too many ``n_examples`` ``use --n-examples 8``), the
CLI's ``--n-examples`` error ended in config words (``(n_examples: null: all)``), ``as_config`` found a bundled
suite only from the repository root, ``train``'s ``--device`` / ``--seed`` / ``--data-root`` errors named the config
key, and :func:`kwta_robust.evaluate.evaluate` inside ``torch.no_grad()`` stopped at the model check blaming the
model's backward (its ``torch.autograd.grad`` ran outside the check's ``enable_grad``), where a plug-in attack that
differentiates without enabling gradients itself got none."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from attacks.base import REGISTRY, register_attack
from kwta_robust.api import as_config, evaluate_model
from kwta_robust.cli import main
from kwta_robust.errors import ConfigError
from kwta_robust.evaluate import evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_helpers import tiny_kwta_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
CONFIG = {"dataset": "toy", "n_examples": 8, "batch_size": 8, "device": "cpu",
          "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": [{"attack": "pgd", "params": {"steps": 2}}]}


def error_line(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1
    return lines[0]


def test_as_config_names_config_and_finds_bundled_suites_from_any_folder(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    expected = as_config(ROOT / "eval_configs" / "quickstart.yaml", n_examples=12).config_hash()
    monkeypatch.chdir(tmp_path)
    for name in ("eval_configs/quickstart.yaml", "quickstart.yaml", "quickstart"):
        assert as_config(name, n_examples=12).config_hash() == expected, name
    with pytest.raises(ConfigError) as exc:
        as_config("nosuch.yaml")
    assert str(exc.value) == (f"config: no such file 'nosuch.yaml' (looked in the working folder {tmp_path} and the "
                              f"bundled suites, {ROOT / 'eval_configs'}); give the YAML's path")
    (tmp_path / "sweep.yaml").write_text((ROOT / "eval_configs" / "sweep_mnist5k_3x3.yaml").read_text())
    with pytest.raises(ConfigError, match=r"^config: sweep.yaml is a sweep config"):
        as_config("sweep.yaml")


def test_too_many_examples_is_worded_for_the_api_and_for_the_flag(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    model, data = tiny_kwta_data()
    with pytest.raises(ConfigError) as exc:
        evaluate_model(model, {**CONFIG, "n_examples": 100}, data.x[:8], data.y[:8])
    assert str(exc.value) == ("n_examples: 100 requested but in-memory (test) has only 8 samples; set n_examples: 8 "
                              "or fewer (null: all) in the config")
    line = error_line(["quickstart", "--n-examples", "100000", "--out-dir", str(tmp_path / "q")], capsys)
    assert line.startswith("error: --n-examples: 100000 requested but mnist5k (test) has only ")
    assert line.endswith(" or fewer (leaving --n-examples out runs the config's n_examples)")
    assert "null" not in line


@pytest.mark.parametrize("flag, value, detail", [
    ("--seed", "-1", "must be >= 0, got -1"),
    ("--data-root", "~no-such-user-52/d", "cannot expand ~no-such-user-52/d (no such user's home folder)"),
    pytest.param("--device", "cuda", "'cuda' requested but CUDA is not available", marks=NO_CUDA)])
def test_train_names_its_own_flags(tmp_path: Path, capsys: pytest.CaptureFixture, flag: str, value: str,
                                   detail: str) -> None:
    # a data set read from a folder (mnist) for --data-root: with digits, bundled, it is refused as unused (misc53)
    dataset = "mnist" if flag == "--data-root" else "digits"
    argv = ["train", "--dataset", dataset, "--arch", "mlp", "--epochs", "1", "--out", str(tmp_path / "m.pt")]
    assert error_line([*argv, flag, value], capsys).startswith(f"error: {flag}: {detail}")
    config = tmp_path / "train.yaml"
    config.write_text(f"{flag.removeprefix('--').replace('-', '_')}: '{value}'\n" if flag != "--seed" else
                      f"seed: {value}\n")
    assert error_line([*argv, "--config", str(config)], capsys).startswith(
        f"error: {flag.removeprefix('--').replace('-', '_')}: {detail}")


def record_of(model: torch.nn.Module, data: Any, config: dict) -> dict:
    record = evaluate(model, data, as_config(config), {}, progress=False).to_dict()
    return {key: record[key] for key in ("results", "clean", "probes", "detection") if key in record}


def without_times(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items() if not k.endswith("wall_time_s")}
    return [without_times(v) for v in value] if isinstance(value, list) else value


class RawGradient:
    """A plug-in attack that differentiates its input without ``torch.enable_grad()`` of its own: one signed step."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def __call__(self, model: Any, x: torch.Tensor, y: torch.Tensor, threat: Any) -> torch.Tensor:
        xg = x.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(xg), y)
        (grad,) = torch.autograd.grad(loss, xg)
        return (x + threat.eps * grad.sign()).clamp(0, 1)


def test_the_runner_inside_no_grad_gives_the_numbers_of_a_call_outside(request: pytest.FixtureRequest) -> None:
    register_attack("api52-raw", norms=("linf",), kind="white-box")(RawGradient)
    request.addfinalizer(lambda: REGISTRY.unregister("api52-raw"))
    model, data = tiny_kwta_data()
    config = {**CONFIG, "attacks": [*CONFIG["attacks"], {"attack": "api52-raw", "params": {}},
                                    {"attack": "bpda", "params": {"surrogate": "smooth", "inner": "pgd",
                                                                  "inner_params": {"steps": 2}}}],
              "diagnostics": {"gradient_batch": 8, "budget_check": {"enabled": False}}}
    outside = without_times(record_of(model, data, config))
    with torch.no_grad():
        inside = without_times(record_of(model, data, config))
    assert inside == outside and len(outside["results"]) == 3
    with torch.no_grad():
        record_of(model, data, config)
        assert not torch.is_grad_enabled()


def test_an_api_out_of_memory_names_config_keys_not_flags() -> None:
    from test_guard_out_of_memory import GPU_OOM, config, problem

    model, x, y = problem(torch.OutOfMemoryError(GPU_OOM))
    with pytest.raises(ConfigError) as exc:
        evaluate_model(model, config(8), x, y)
    assert "lower batch_size, diagnostics.gradient_batch" in str(exc.value) and "--" not in str(exc.value)
