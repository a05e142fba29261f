"""Sweep 52: a sweep file's ``eval:`` (or ``train:``) naming a missing file says where a relative path is read from
(the sweep file's folder) and which path was tried; a grid axis given one value is a grid of one on every axis (as
``epsilons: 0.3``), and one given several values as one text (``0.2, 0.05``: a YAML list without brackets) is
refused naming the axis and the list to write, on every axis alike."""

from __future__ import annotations

import pytest

from kwta_robust.cli import main
from kwta_robust.errors import ConfigError
from kwta_robust.sweep import Grid, SweepConfig, load_sweep_config, plan_cells
from test_sweep import tiny_config, write_config


@pytest.mark.parametrize("key", ["eval", "train"])
def test_a_missing_section_file_names_the_folder_it_is_read_from(key, tmp_path, monkeypatch, capsys) -> None:
    folder = tmp_path / "configs"
    folder.mkdir()
    path = write_config(folder / "s.yaml", tiny_config(**{key: "nosuch.yaml"}))
    monkeypatch.chdir(tmp_path)  # the working folder is not the sweep file's
    assert main(["sweep", "configs/s.yaml", "--dry-run", "--out-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {key}: no such file 'configs/nosuch.yaml' ('nosuch.yaml' is read relative to the sweep "
                   "file's folder 'configs'); give the YAML file's path relative to that folder, or an absolute path"]
    with pytest.raises(ConfigError, match=r"^eval: no such file '.*nosuch.yaml' \('nosuch.yaml' is read relative "
                                          r"to the working folder\)"):
        SweepConfig.from_dict(tiny_config(eval="nosuch.yaml"))
    assert path.is_file() and not (tmp_path / "o").exists()


@pytest.mark.parametrize("axis, one, listed", [("kwta_ratios", 0.25, "0.25, 1.0"),
                                               ("weight_sparsities", 0.5, "0, 0.5"),
                                               ("pruning_methods", "snip", "magnitude, snip")])
def test_every_grid_axis_takes_one_value_and_refuses_a_text_of_several(axis, one, listed) -> None:
    base = {"kwta_ratios": [1.0], "weight_sparsities": [0.0, 0.5], "pruning_methods": ["magnitude"]}
    assert Grid.from_dict({**base, axis: one}).cells() == Grid.from_dict({**base, axis: [one]}).cells()
    for text in (listed, f"[{listed}]"):  # a list without brackets, or a quoted one: one text in YAML
        with pytest.raises(ConfigError) as info:
            Grid.from_dict({**base, axis: text})
        assert str(info.value) == (f"grid.{axis}: {text!r} is one text, not a list; write the values as a YAML "
                                   f"list, e.g. [{listed}]")


def test_a_sweep_file_with_a_scalar_ratio_plans_one_row(tmp_path, capsys) -> None:
    grid = {"kwta_ratios": 0.25, "weight_sparsities": 0.0}
    cfg = load_sweep_config(write_config(tmp_path / "s.yaml", tiny_config(grid=grid)))
    assert [p.label for p in plan_cells(cfg, tmp_path / "o")] == ["kwta0.25-dense"]
    assert cfg.to_dict()["grid"]["kwta_ratios"] == [0.25]  # the manifest's config holds the list it stands for
    path = write_config(tmp_path / "t.yaml", tiny_config(grid={**grid, "kwta_ratios": "0.25, 1.0"}))
    assert main(["sweep", str(path), "--dry-run", "--out-dir", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("error: grid.kwta_ratios: '0.25, 1.0' is one text, not a list")
