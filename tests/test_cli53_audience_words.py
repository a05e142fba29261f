"""Words for where a value came from. A CUDA device on a machine without CUDA is an
:class:`~kwta_robust.errors.OriginFixError`: a config (file, dict, the Python API) reads the fix in the key's words
(``set device: cpu or auto in the config``), a command's flag in the flag's (``use --device cpu or auto``), where
before every caller but the in-memory API read the flag's words. The description note of an ``n_examples`` override
names the Python API's key where the count came from a call (``n_examples``), the flag where from the CLI."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
import yaml

from kwta_robust.api import as_config
from kwta_robust.commands.common import OVERRIDE_FLAGS
from kwta_robust.config import resolve_device
from kwta_robust.errors import ConfigError, OriginFixError
from kwta_robust.training.config import TrainConfig
from tests.test_cifar10_user import error_line

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal of CUDA on a machine without it")
PROBLEM = "'cuda' requested but CUDA is not available"
IN_CONFIG = f"device: {PROBLEM}; set device: cpu or auto in the config"


@NO_CUDA
def test_cuda_without_cuda_is_worded_for_the_config_and_for_a_flag() -> None:
    with pytest.raises(OriginFixError) as caught:
        resolve_device("cuda")
    assert str(caught.value) == IN_CONFIG
    assert caught.value.flag_detail("--device") == f"{PROBLEM}; use --device cpu or auto"
    copy = pickle.loads(pickle.dumps(caught.value))  # as a shard or cell worker's error comes back
    assert str(copy) == IN_CONFIG and copy.flag_detail("--device") == f"{PROBLEM}; use --device cpu or auto"
    with pytest.raises(ConfigError) as caught:  # a training config built in Python: its key, not train's flag
        TrainConfig.from_dict({"device": "cuda"}).resolved_device()
    assert str(caught.value) == IN_CONFIG


@NO_CUDA
def test_train_names_the_flag_or_the_config_files_key(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["train", "--dataset", "digits", "--arch", "mlp", "--epochs", "1", "--out", str(tmp_path / "m.pt")]
    assert error_line(capsys, [*argv, "--device", "cuda"]) == f"error: --device: {PROBLEM}; use --device cpu or auto"
    config = tmp_path / "t.yaml"
    config.write_text("device: cuda\n")
    assert error_line(capsys, [*argv, "--config", str(config)]) == f"error: {IN_CONFIG}"


@NO_CUDA
def test_a_sweep_configs_cuda_is_worded_for_the_config(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tests.test_sweep import tiny_config, write_config

    data = tiny_config()
    data["eval"] = {**data["eval"], "device": "cuda"}
    path = write_config(tmp_path / "s.yaml", data)
    # the sweep config's key, train.device or eval.device (before: "device: ...; set device: ... in the config")
    assert error_line(capsys, ["sweep", str(path), "--out-dir", str(tmp_path / "o"), "--dry-run"]) == \
        f"error: eval.device: {PROBLEM}; set eval.device: cpu or auto in the sweep config"


def test_the_n_examples_note_names_the_api_key_or_the_flag(tmp_path: Path) -> None:
    config = {"description": "PGD-2 at Linf 0.1, 200 digits images", "dataset": "digits", "n_examples": 200,
              "device": "cpu", "threats": [{"norm": "linf", "epsilons": [0.1]}],
              "attacks": [{"attack": "pgd", "params": {"steps": 2}}], "diagnostics": {"enabled": False}}
    api = as_config(config, n_examples=12)
    assert api.description == "PGD-2 at Linf 0.1, 200 digits images (run on 12 examples: n_examples)"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    assert as_config(str(path), n_examples=12).description == api.description
    cli = api.with_overrides(flags=OVERRIDE_FLAGS, n_examples=8)  # the API's note replaced, not added to
    assert cli.description == "PGD-2 at Linf 0.1, 200 digits images (run on 8 examples: --n-examples)"
    assert cli.with_overrides(n_examples=5).description == \
        "PGD-2 at Linf 0.1, 200 digits images (run on 5 examples: n_examples)"


def test_an_api_resume_at_another_thread_count_names_the_threads_argument(tmp_path: Path, caplog) -> None:
    """The warning said ``re-run with --threads 1 to match`` to a caller of ``evaluate_model(..., threads=2)``."""
    from kwta_robust.api import evaluate_model
    from tests.eval_helpers import unfinish_record
    from tests.test_api_fuzz import FAST, data4
    from tests.test_python_api import make_net

    x, y = data4()
    out = tmp_path / "r.json"
    evaluate_model(make_net().eval(), FAST, x, y, out_path=out, threads=1)
    unfinish_record(out)  # units left to compute: a complete record computes none and warns of nothing
    with caplog.at_level("WARNING", logger="kwta_robust.resume"):
        evaluate_model(make_net().eval(), FAST, x, y, out_path=out, threads=2)
    (warning,) = [r.getMessage() for r in caplog.records if "torch threads" in r.getMessage()]
    assert warning.endswith("re-run with threads=1 to match") and "--threads" not in warning
