"""``kwta_robust.api.as_config`` / ``config_path`` on a bare suite name (``"quickstart"``) where the working folder
holds its own ``quickstart.yaml`` (a copy the user edited): the user's file is read, as ``"quickstart.yaml"`` reads
it; before, the bundled ``eval_configs/quickstart.yaml`` was taken silently, another config than the one typed for."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kwta_robust.api import as_config, bundled_configs, config_path


def test_a_bare_name_reads_the_working_folders_own_yaml_first(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    data = yaml.safe_load((bundled_configs() / "quickstart.yaml").read_text())
    (tmp_path / "quickstart.yaml").write_text(yaml.safe_dump({**data, "seed": 77}))
    monkeypatch.chdir(tmp_path)
    assert config_path("quickstart") == Path("quickstart.yaml")  # before: the bundled suite's path
    assert as_config("quickstart").seed == as_config("quickstart.yaml").seed == 77
    assert as_config("eval_configs/quickstart").seed != 77  # the bundled suite, named as such

