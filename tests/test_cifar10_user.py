"""A CIFAR-10 user's walk: Xiao et al.'s kWTA ResNet (ICLR 2020) evaluated from CIFAR-10 on disk in torchvision's
format (``cifar-10-batches-py/``: ``data_batch_1..5``, ``test_batch``, ``batches.meta`` as pickles). Tiny files of
that format stand in for the release, their own MD5s declared the official ones (as ``tests/test_data.py`` does).

Found on the walk:

* ``sweep eval_configs/sweep_cifar10.yaml --dry-run`` on a test split smaller than the eval config's ``n_examples``
  said ``use --n-examples 60 or fewer``, a flag ``sweep`` does not have: it now names the sweep's eval config.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest

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
