"""``--n-examples N`` evaluates N samples, but the config's ``description`` ("200 mnist5k images") went into the
record unchanged, so the record said the old count. The record's description now says how many ran (``(run on N
examples: --n-examples)``, once, also when a record is run again with another count); without ``--n-examples``
the record's config is as before."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from torch import nn

from kwta_robust.cli import main
from kwta_robust.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {"description": "tiny: PGD-2 at Linf 0.1, 200 digits images", "dataset": "digits", "n_examples": 200,
          "batch_size": 8, "device": "cpu", "threats": [{"norm": "linf", "epsilons": [0.1]}],
          "attacks": [{"attack": "pgd", "params": {"steps": 2}}], "diagnostics": {"enabled": False}}


def test_an_n_examples_override_says_the_count_in_the_description(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    assert load_config(path).description == CONFIG["description"]  # no override: as written
    assert load_config(path, n_examples=200).description == CONFIG["description"]  # the config's own count
    # a Python call names the key it was given (n_examples=12); the CLI's --n-examples: the test below
    cfg = load_config(path, n_examples=12)
    assert cfg.description == "tiny: PGD-2 at Linf 0.1, 200 digits images (run on 12 examples: n_examples)"
    assert cfg.config_hash() == load_config(path).with_overrides(n_examples=12, description="x").config_hash()
    assert cfg.with_overrides(n_examples=30).description.endswith("images (run on 30 examples: n_examples)")
    flagged = load_config(path, flags={"n_examples": "--n-examples"}, n_examples=12)
    assert flagged.with_overrides(n_examples=30).description.endswith("images (run on 30 examples: n_examples)")
    quick = load_config(ROOT / "eval_configs" / "quickstart.yaml", n_examples=12).description
    assert quick.endswith("200 mnist5k images (run on 12 examples: n_examples)")


def tiny_net() -> nn.Module:
    """A seeded linear model of the digits images (``[N, 1, 8, 8] -> [N, 10]``), for ``--model-factory``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()


def test_the_record_of_an_overridden_run_says_the_count(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "n_examples": None}))  # all 450 test images
    factory = ["--model-factory", "test_seeds50_n_examples_description:tiny_net", "--config", str(path)]
    for args, name in ((["--n-examples", "8"], "few.json"), ([], "all.json")):
        assert main(["evaluate", *factory, *args, "--out", str(tmp_path / name), "--no-progress"]) == 0
    few, whole = (json.loads((tmp_path / name).read_text()) for name in ("few.json", "all.json"))
    assert few["dataset"]["n"] == 8
    assert few["config"]["description"] == f"{CONFIG['description']} (run on 8 examples: --n-examples)"
    assert whole["config"]["description"] == CONFIG["description"] and whole["dataset"]["n"] == 450
