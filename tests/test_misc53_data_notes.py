"""A shipped config run on one's own data says so, and a ``data_root`` no data set reads is refused everywhere
(misc53).

``--data my_cifar.npz`` with ``eval_configs/quickstart.yaml`` kept the config's description, "... 200 mnist5k
images (run on 10 examples: --n-examples)", in the record and the HTML report: the description now ends with
``(data from --data FILE)``, as ``--n-examples`` adds its note (the record's dataset names the file).

``--data-root`` with a data set that ships with the package (mnist5k, digits) was refused by ``evaluate``/``compare``
(walk53), but ``data_root`` in a config file, in the API's config, or ``train --dataset mnist5k --data-root DIR``
was ignored without a word (the run read the bundled set). Each is now refused in one line naming the key or flag."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from kwta_robust.cli import main
from kwta_robust.config import EvalConfig
from kwta_robust.errors import ConfigError
from test_cifar10_user import error_line
from test_cli_eval import write_checkpoint, write_config

ON_DISK = "cifar10, fashion-mnist, mnist, svhn"


def test_a_data_file_is_named_in_the_description(tmp_path: Path) -> None:
    data = tmp_path / "my_cifar.npz"
    np.savez(data, x=np.random.RandomState(0).rand(8, 1, 28, 28).astype(np.float32), y=np.arange(8) % 10)
    cfg = write_config(tmp_path / "c.yaml", description="quick: 200 mnist5k images", attacks=["fgsm"], noise=[],
                       threats=[{"norm": "linf", "epsilons": [0.1]}])
    out = tmp_path / "r.json"
    assert main(["evaluate", str(write_checkpoint(tmp_path / "m.pt")), "--config", str(cfg), "--data", str(data),
                 "--n-examples", "4", "--out", str(out), "--no-progress"]) == 0
    description = json.loads(out.read_text())["config"]["description"]
    assert description == "quick: 200 mnist5k images (run on 4 examples: --n-examples) (data from --data FILE)"
    # re-run from the record with another file: one note of each
    other = tmp_path / "b.npz"
    other.write_bytes(data.read_bytes())
    again = tmp_path / "again.json"
    assert main(["evaluate", str(tmp_path / "m.pt"), "--config", str(out), "--data", str(other), "--n-examples", "3",
                 "--out", str(again), "--no-progress"]) == 0
    assert json.loads(again.read_text())["config"]["description"] == \
        "quick: 200 mnist5k images (run on 3 examples: --n-examples) (data from --data FILE)"


def test_a_config_files_data_root_with_a_bundled_set_is_refused(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    cfg = write_config(tmp_path / "c.yaml", data_root=str(tmp_path), n_examples=4, batch_size=4)
    line = error_line(capsys, ["evaluate", str(write_checkpoint(tmp_path / "m.pt")), "--config", str(cfg),
                               "--out", str(tmp_path / "r.json"), "--no-progress"])
    assert line == (f"error: data_root: not used with dataset mnist5k of {cfg}: that set ships with the package and "
                    "is read from no folder, so the run would evaluate mnist5k, not the data there; to evaluate a data "
                    f"set on disk set dataset: in the config to one of {ON_DISK}, or give your own images as dataset: "
                    "{file: PATH} (--data FILE); else remove data_root")
    assert not (tmp_path / "r.json").exists()


def test_the_apis_data_root_with_a_bundled_set_is_refused() -> None:
    from kwta_robust.api import evaluate_model

    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    config = {"dataset": "digits", "data_root": "/x", "n_examples": 4, "device": "cpu",
              "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": ["fgsm"]}
    with pytest.raises(ConfigError) as error:
        evaluate_model(model, config)
    assert str(error.value).startswith("data_root: not used with dataset digits: that set ships with the package")
    assert str(error.value).endswith("else remove data_root")
    EvalConfig.from_dict({**config, "dataset": "mnist"})  # a set read from a folder takes it


def test_train_refuses_a_data_root_its_bundled_set_would_ignore(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "m.pt"
    line = error_line(capsys, ["train", "--dataset", "digits", "--arch", "mlp", "--epochs", "1", "--data-root",
                               str(tmp_path), "--out", str(out)])
    assert line == (f"error: --data-root: not used with dataset digits: that set ships with the package and is read "
                    "from no folder, so the run would train on digits, not the data there; to train on a data set on "
                    f"disk set --dataset to one of {ON_DISK}, or give your own images with --data FILE; else drop "
                    "--data-root")
    assert not out.exists()
    config = tmp_path / "t.yaml"
    config.write_text(f"dataset: digits\narch: mlp\nepochs: 1\ndata_root: {tmp_path}\n")
    line = error_line(capsys, ["train", "--config", str(config), "--out", str(out)])
    assert line.startswith("error: data_root: not used with dataset digits: ") and line.endswith(
        "set dataset: to one of cifar10, fashion-mnist, mnist, svhn, or give your own images as dataset: {file: PATH} "
        "(--data FILE); else remove data_root"), line
    assert not out.exists()
