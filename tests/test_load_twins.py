"""Checks that had twins now have one implementation each: a path of another type (``data_root`` as every other
path: the value and its type), the checkpoint's path type checked once on loading, the adaptive attacks' switches
(the attack named, as every other attack's), and the outputs a run writes at its end that are folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from attacks.adaptive import EOT, GradientEstimation
from attacks.errors import AttackConfigError
from kwta_robust import checkpoint, loading
from kwta_robust.compare import check_comparison_outputs
from kwta_robust.data import load_dataset
from kwta_robust.errors import CheckpointError, ConfigError
from kwta_robust.safe_paths import check_path_type
from kwta_robust.sweep.outputs import check_sweep_outputs


@pytest.mark.parametrize(("call", "message"), [
    (lambda: load_dataset("mnist", "test", root=123),
     "data_root: expected a folder path (str or pathlib.Path), got int 123"),  # was "got 123": no type
    (lambda: load_dataset("mnist", "test", root=b"/data"),
     "data_root: expected a folder path (str or pathlib.Path), got bytes b'/data'"),
    (lambda: check_path_type(5, "checkpoint"),
     "checkpoint: expected a file path (str or pathlib.Path), got int 5"),  # was "got int": no value
    (lambda: check_path_type(["a.pt", "b.pt"], "weights"),
     "weights: expected a file path (str or pathlib.Path), got list ['a.pt', 'b.pt']"),
])
def test_a_path_of_another_type_names_its_type_and_value(call, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        call()
    assert str(info.value) == message


def test_load_model_checks_the_checkpoints_path_type_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[object, str]] = []

    def counted(value: object, name: str, what: str = "file") -> Path:
        calls.append((value, name))
        return check_path_type(value, name, what)

    monkeypatch.setattr(checkpoint, "check_path_type", counted)
    monkeypatch.setattr(loading, "check_path_type", counted, raising=False)
    with pytest.raises(ConfigError, match=r"^checkpoint: expected a file path \(str or pathlib\.Path\), got int 5$"):
        loading.load_model(5, "cpu")
    assert calls == [(5, "checkpoint")]  # was checked by load_model, then again by load_checkpoint
    # a path of the right type goes on past the check, so a second check would show here (a wrong type stops the
    # first one, whichever it is)
    calls.clear()
    missing = str(tmp_path / "none.pt")
    with pytest.raises(CheckpointError, match=r"none\.pt: file not found"):
        loading.load_model(missing, "cpu")
    assert calls == [(missing, "checkpoint")]


@pytest.mark.parametrize(("build", "message"), [
    (lambda: GradientEstimation(random_start=0),
     "attack 'gradient-estimation': random_start must be true or false, got 0"),
    (lambda: EOT(random_start="false"), "attack 'eot': random_start must be true or false, got 'false'"),
])
def test_the_adaptive_attacks_switches_read_as_every_attacks(build, message: str) -> None:
    with pytest.raises(AttackConfigError) as info:
        build()
    assert str(info.value) == message


def test_one_check_for_the_files_compare_and_sweep_write_last(tmp_path: Path) -> None:
    from kwta_robust.safe_paths import check_written_files  # the one both call (compare's and the sweep's were twins)

    (tmp_path / "compare.html").mkdir()
    with pytest.raises(ConfigError) as info:
        check_comparison_outputs(tmp_path)
    assert str(info.value) == (f"--out-dir: {tmp_path / 'compare.html'} is a folder, where compare writes its report; "
                               "move it away or use another --out-dir")
    (tmp_path / "sweep.json").mkdir()
    with pytest.raises(ConfigError) as info:
        check_sweep_outputs(tmp_path, tables=False, plots=False)
    assert str(info.value) == (f"--out-dir: {tmp_path / 'sweep.json'} is a folder, where the sweep writes its "
                               "sweep.json; move it away or use another --out-dir")
    check_written_files([(tmp_path / "free.md", "table")], "compare", "--out-dir")  # not there: nothing refused
    with pytest.raises(ConfigError, match=r"^out_dir: .*x\.md is a folder, where mine writes its table; move it away "
                                          r"or use another out_dir$"):
        (tmp_path / "x.md").mkdir()
        check_written_files([(tmp_path / "free.md", "table"), (tmp_path / "x.md", "table")], "mine", "out_dir")
