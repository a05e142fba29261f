"""``kwta-robust sweep`` names the command-line flag that gave a bad executor value (``--executor``, ``--workers``,
``--cpus-per-cell``, ...), not the config key it fills (``executor.name``, ...); a bad value in the config file
itself keeps the key's name. Tiny configs from :mod:`tests.test_sweep`; nothing trains (each run stops on its
first line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kwta_robust.cli import main
from tests.test_sweep import tiny_config, write_config


@pytest.mark.parametrize("flags, line", [
    (["--executor", "nosuch"], "error: --executor: unknown executor 'nosuch'; known executors: "),
    (["--workers", "0"], "error: --workers: expected an integer >= 1 or 'auto', got 0"),
    (["--workers", "abc"], "error: --workers: expected an integer >= 1 or 'auto', got 'abc'"),
    (["--executor", "ray", "--cpus-per-cell", "-1"], "error: --cpus-per-cell: expected a finite number > 0, got -1.0"),
    (["--executor", "ray", "--gpus-per-cell", "nan"], "error: --gpus-per-cell: expected a finite number, got nan"),
    (["--executor", "ray", "--ray-address", ""], "error: --ray-address: expected a non-empty string, got ''"),
])
def test_a_bad_flag_value_is_named_by_its_flag(tmp_path: Path, capsys, flags: list[str], line: str) -> None:
    path = write_config(tmp_path / "s.yaml", tiny_config())
    assert main(["sweep", str(path), "--out-dir", str(tmp_path / "o"), "--dry-run", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(line) and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("executor, line", [
    ({"name": "nosuch"}, "error: executor.name: unknown executor 'nosuch'; known executors: "),
    ({"name": "local", "workers": 0}, "error: executor.workers: expected an integer >= 1 or 'auto', got 0"),
])
def test_a_bad_config_value_keeps_the_config_key(tmp_path: Path, capsys, executor: dict, line: str) -> None:
    path = write_config(tmp_path / "s.yaml", tiny_config(executor=executor))
    assert main(["sweep", str(path), "--out-dir", str(tmp_path / "o"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(line) and "Traceback" not in err


def test_a_good_flag_beside_a_bad_config_value_leaves_the_config_key_named(tmp_path: Path, capsys) -> None:
    """--workers 2 is fine; the config's unknown executor is the config's error, so its key is named."""
    path = write_config(tmp_path / "s.yaml", tiny_config(executor={"name": "nosuch"}))
    assert main(["sweep", str(path), "--out-dir", str(tmp_path / "o"), "--dry-run", "--workers", "2"]) == 2
    assert capsys.readouterr().err.startswith("error: executor.name: unknown executor 'nosuch'")
