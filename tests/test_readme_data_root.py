"""README.md says where the data sets read from disk sit (a researcher with CIFAR-10 on disk, persona walk 2: the
README said only "CIFAR-10 on disk"; the data root and its environment variable were in config comments alone).
The sentence is checked against the code: the variable, the default folder and CIFAR-10's folder in the root."""

from __future__ import annotations

from pathlib import Path

import pytest

from kwta_robust.data import DATA_ROOT_ENV, REGISTRY, default_data_root

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
SENTENCE = ("the data root is `--data-root DIR` (or `data_root:` in the config), else `$KWTA_ROBUST_DATA`, else\n"
            "`~/.cache/kwta-robust/data`, and CIFAR-10 is the folder `cifar-10-batches-py/` in it")


def test_the_readme_names_the_data_root_the_code_reads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert SENTENCE in README
    assert f"`${DATA_ROOT_ENV}`" in SENTENCE
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    assert default_data_root() == Path.home() / ".cache" / "kwta-robust" / "data"
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))
    assert default_data_root() == tmp_path
    assert REGISTRY.get("cifar10").location(tmp_path, "test") == tmp_path / "cifar-10-batches-py"
