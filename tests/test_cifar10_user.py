"""A CIFAR-10 user's walk: Xiao et al.'s kWTA ResNet (ICLR 2020) evaluated from CIFAR-10 on disk in torchvision's
format (``cifar-10-batches-py/``: ``data_batch_1..5``, ``test_batch``, ``batches.meta`` as pickles). Tiny files of
that format stand in for the release, their own MD5s declared the official ones (as ``tests/test_data.py`` does).

Found on the walk:

* ``sweep eval_configs/sweep_cifar10.yaml --dry-run`` on a test split smaller than the eval config's ``n_examples``
  said ``use --n-examples 60 or fewer``, a flag ``sweep`` does not have: it now names the sweep's eval config;
* ``cifar10.yaml``'s BPDA entry predated the tuning of ``benchmarks/STRENGTH.md``; it now runs ``mnist5k-full.yaml``'s
  and says that it was tuned on MNIST;
* the README's noise example (``--config eval_configs/noise.yaml``) evaluates mnist5k, which a CIFAR-10 model cannot
  take: the README now says so and how to run the probes on CIFAR-10, which this walk does.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from kwta_robust.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "eval_configs"
TEST_IMAGES = 12


def write_tiny_cifar(root: Path, seed: int = 0, n_train: int = 4, n_test: int = TEST_IMAGES) -> Path:
    """``root/cifar-10-batches-py`` as the release holds it (dicts of ``data`` ``[n, 3072]`` uint8 R, G, B planes and
    ``labels``), its files' MD5s trusted by :func:`trust_tiny_cifar`; returns the folder."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    for name, n in [(f"data_batch_{i}", n_train) for i in range(1, 6)] + [("test_batch", n_test)]:
        batch = {"batch_label": name, "data": rng.randint(0, 256, size=(n, 3072)).astype(np.uint8),
                 "labels": rng.randint(0, 10, size=n).tolist(), "filenames": [f"{i}.png" for i in range(n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": 10000,
                     "num_vis": 3072}, f, protocol=2)
    return folder


def trust_tiny_cifar(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Declare the tiny files' MD5s the official ones, so that torchvision's own checks pass and it reads them."""
    from torchvision.datasets import CIFAR10

    def md5(name: str) -> str:
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    monkeypatch.setattr(CIFAR10, "train_list", [[f, md5(f)] for f, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [[f, md5(f)] for f, _ in CIFAR10.test_list])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5("batches.meta")})


@pytest.fixture
def cifar_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data root (``$KWTA_ROBUST_DATA``, what ``data_root: null`` reads) holding the tiny release."""
    root = tmp_path / "data"
    trust_tiny_cifar(write_tiny_cifar(root), monkeypatch)
    monkeypatch.setenv("KWTA_ROBUST_DATA", str(root))
    return root


def error_line(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """The one ``error:`` line of a failed command (exit status 2, no traceback)."""
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


def test_the_sweep_dry_run_names_the_eval_config_not_a_flag_sweep_lacks(cifar_root, tmp_path, capsys) -> None:
    line = error_line(capsys, ["sweep", str(CONFIGS / "sweep_cifar10.yaml"), "--out-dir", str(tmp_path / "s"),
                               "--dry-run"])
    assert line == (f"error: n_examples: 1000 requested but cifar10 (test) has only {TEST_IMAGES} samples; set "
                    f"n_examples: {TEST_IMAGES} or fewer (null: all) in the sweep's eval config "
                    f"({CONFIGS / 'cifar10.yaml'})")
    assert "--n-examples" not in line


def test_cifar10_yaml_runs_the_bpda_schedule_tuned_on_mnist_and_says_it_is_unmeasured_on_cifar() -> None:
    """cifar10.yaml's BPDA entry was PGD-100 (margin) at T 1.0 → 0.3 → 0.1, the schedule benchmarks/STRENGTH.md
    measured as the weakest per query on the kWTA CNNs (62 of 98 broken against 73 for APGD-CE at T 0.1 → 0.03, its
    first round). The relaxation's T is relative to each group's std, so the tuned values carry over as values."""
    from kwta_robust.config import load_config

    cfg = load_config(CONFIGS / "cifar10.yaml")
    full = {a.label: a.params for a in load_config(CONFIGS / "mnist5k-full.yaml").attacks}
    labels = [a.label or a.attack for a in cfg.attacks]
    assert labels[:2] == ["pgd", "bpda-smooth"]  # PGD the reference, BPDA next so the costly attacks see survivors
    params = {a.label: a.params for a in cfg.attacks}
    for label in ("bpda-smooth", "bpda-smooth-long"):
        assert params[label] == full[label]
        assert (params[label]["surrogate"], params[label]["inner"]) == ("smooth", "apgd-ce")
    assert params["bpda-smooth"]["temperature_schedule"] == [0.05, 0.03]
    assert params["bpda-smooth"]["stage_steps"] == [100, 500]
    header = " ".join(line.lstrip("# ") for line in (CONFIGS / "cifar10.yaml").read_text().splitlines()
                      if line.startswith("#"))
    assert "tuned on MNIST CNNs (benchmarks/STRENGTH.md) and are unmeasured on CIFAR-10" in header
    readme = " ".join((CONFIGS.parent / "README.md").read_text(encoding="utf-8").split())
    row = next(line for line in readme.split("| `cifar10.yaml` |")[1:2])
    assert "tuned on MNIST and unmeasured on CIFAR-10" in row.split(" |")[0]
    configs_readme = (CONFIGS / "README.md").read_text(encoding="utf-8")
    assert "tuned on MNIST and unmeasured on CIFAR-10" in configs_readme.split("| `cifar10.yaml` |")[1].split("\n")[0]


class SparsifyVolume(nn.Module):
    """Xiao et al.'s ``Sparsify2D_vol`` as their code writes it (not ours): per sample, the top ``int(sr · C·H·W)``."""

    def __init__(self, sparse_ratio: float = 0.5) -> None:
        super().__init__()
        self.sr = sparse_ratio

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = int(self.sr * x.shape[1] * x.shape[2] * x.shape[3])
        flat = x.view(x.shape[0], -1)
        top = flat.topk(k, dim=1)[0][:, -1]
        top = top.repeat(flat.shape[1], 1).permute(1, 0).view_as(x)
        return (x >= top).to(x) * x


def make_tiny_xiao(gamma: float = 0.1) -> nn.Module:
    """A CIFAR-10 CNN with Xiao's volume gate: ``[N, 3, 32, 32]`` in [0, 1] → logits ``[N, 10]``."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), SparsifyVolume(gamma), nn.Flatten(),
                         nn.Linear(4 * 16 * 16, 10))


def test_the_noise_probes_on_cifar10_as_the_readme_says(cifar_root, tmp_path, capsys) -> None:
    readme = " ".join((CONFIGS.parent / "README.md").read_text(encoding="utf-8").split())
    assert ("`noise.yaml` evaluates mnist5k (a CIFAR-10 model stops with one line naming its input shape): for "
            "CIFAR-10, `cifar10.yaml` runs Gaussian noise beside its attacks, or copy `noise.yaml` with `dataset: "
            "cifar10` (and without the numenta entry of `value: 0.7469`, MNIST's mean + 2 std)") in readme
    torch.save(make_tiny_xiao().state_dict(), tmp_path / "xiao.pt")
    model = ["--model-factory", "test_cifar10_user:make_tiny_xiao", "--weights", str(tmp_path / "xiao.pt")]
    line = error_line(capsys, ["evaluate", *model, "--config", str(CONFIGS / "noise.yaml"), "--n-examples", "4",
                               "--out", str(tmp_path / "mnist.json")])
    assert line.startswith("error: model xiao: cannot run on mnist5k inputs [N, 1, 28, 28]: RuntimeError: ")
    config = yaml.safe_load((CONFIGS / "noise.yaml").read_text())
    config["noise"] = [p for p in config["noise"] if p.get("params", {}).get("value") != 0.7469]
    config.update(dataset="cifar10", n_examples=None, batch_size=TEST_IMAGES)
    (tmp_path / "noise_cifar10.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "noise.json"
    assert main(["evaluate", *model, "--config", str(tmp_path / "noise_cifar10.yaml"), "--no-progress",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    record = json.loads(out.read_text())
    assert [probe["kind"] for probe in record["noise"]] == ["numenta", "gaussian", "uniform", "salt-and-pepper"]
    assert all(len(probe["result"]["correct_counts"][0]) == TEST_IMAGES for probe in record["noise"])
