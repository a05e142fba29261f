"""``kwta-robust diff`` refuses what ``table`` refuses: it built each record (``EvalRecord.from_dict``) but skipped
the record checks (``record_checks.check_record``), so a record that contradicts itself (a negative wall time, a flag
list one short, a count that is not its flags, two units of one attack at one threat point) was diffed, and a
negative wall time (a volatile field) was even called "same result" (exit 0). Now both refuse it in the same line."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any, Callable

import pytest

from kwta_robust.cli import main

QUICKSTART = Path(__file__).parent / "fixtures" / "quickstart"


def _wall_time(d: dict) -> None:
    d["results"][0]["wall_time_s"] = -1


def _flag_short(d: dict) -> None:
    d["results"][0]["flags"].pop()


def _count(d: dict) -> None:
    d["results"][0]["n_broken"] += 1


def _two_units(d: dict) -> None:
    d["results"].append(copy.deepcopy(d["results"][0]))


def _clean_flag(d: dict) -> None:
    d["clean_flags"][0] = 2


# (damage to the quickstart's kWTA record, the message after "error: PATH: ", as table printed it before the fix)
DAMAGES: list[tuple[Callable[[dict], None], str]] = [
    (_wall_time, "results[0].wall_time_s must be a finite number >= 0 (null in the file: not measured), got -1.0"),
    (_flag_short, "results[0] (pgd, Linf 0.1): flags: 199 entries for 200 samples"),
    (_count, "results[0] (pgd, Linf 0.1): n_broken = 54 but its flags count 53"),
    (_two_units, "results hold two units of 'pgd' at Linf 0.1; keep one of them"),
    (_clean_flag, "clean_flags: value 2 is not one of 0, 1"),
]


def _damaged(tmp_path: Path, damage: Callable[[dict], None]) -> Path:
    data: Any = json.loads((QUICKSTART / "kwta.json").read_text(encoding="utf-8"))
    damage(data)
    path = tmp_path / "damaged.json"
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


def _run(capsys: pytest.CaptureFixture, argv: list[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("damage, message", DAMAGES, ids=[d.__name__.strip("_") for d, _ in DAMAGES])
@pytest.mark.parametrize("damaged_first", [True, False], ids=["A", "B"])
def test_diff_refuses_a_record_table_refuses_in_tables_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                           damage: Callable[[dict], None], message: str,
                                                           damaged_first: bool) -> None:
    bad = _damaged(tmp_path, damage)
    rc, _, table_err = _run(capsys, ["table", str(bad)])
    assert rc == 2 and table_err.splitlines() == [f"error: {bad}: {message}"]
    good = str(QUICKSTART / "kwta.json")
    rc, out, err = _run(capsys, ["diff", str(bad), good] if damaged_first else ["diff", good, str(bad)])
    assert rc == 2
    assert "Traceback" not in err
    assert err.splitlines() == table_err.splitlines()  # one line, table's
    assert out == ""  # no "same result", no differences


# the fields ``diff`` leaves out as volatile (its documented list), for the independent count below
VOLATILE_KEYS = {"wall_time_s", "started_at", "finished_at", "resumed_at", "seconds", "train_seconds"}
VOLATILE_PATHS = {"provenance.command", "model.source", "model.checkpoint_sha256", "model.training.training.out",
                  "model.sweep_cell.directory", "model.training.weights"}
MISSING = object()


def _leaf_differences(u: Any, v: Any, path: str = "") -> int:
    """How many fields of two parsed records differ, counted by walking both by hand: a leaf that differs, a key in
    one only and a list of another length are one each; the volatile fields are skipped; ``true`` equals ``1``."""
    last = re.sub(r"\[\d+\]$", "", path.rsplit(".", 1)[-1])
    if path and (last in VOLATILE_KEYS or re.sub(r"\[\d+\]", "[]", path) in VOLATILE_PATHS):
        return 0
    if isinstance(u, dict) and isinstance(v, dict):
        return sum(_leaf_differences(u.get(k, MISSING), v.get(k, MISSING), f"{path}.{k}" if path else k)
                   for k in {**u, **v})
    if isinstance(u, list) and isinstance(v, list):
        if len(u) != len(v):
            return 1
        return sum(_leaf_differences(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(u, v)))
    same_kind = type(u) is type(v) or {type(u), type(v)} <= {bool, int}
    return 0 if same_kind and u == v else 1


def test_a_valid_pair_still_diffs_as_before(capsys: pytest.CaptureFixture) -> None:
    first, second = QUICKSTART / "kwta.json", QUICKSTART / "relu.json"
    n = _leaf_differences(*(json.loads(p.read_text(encoding="utf-8")) for p in (first, second)))
    assert n > 3
    rc, out, err = _run(capsys, ["diff", str(first), str(second), "--limit", "3"])
    assert (rc, err) == (1, "")
    assert out.splitlines() == [
        f"{n} field(s) differ:",
        "  model.activation: 'kwta' != 'relu'",
        "  model.num_kwta_layers: 3 != 0",
        "  model.num_relu_layers: 0 != 3",
        f"  ... and {n - 3} more (--limit)",
    ]


def test_a_valid_wall_time_change_is_still_the_same_result(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rerun = _damaged(tmp_path, lambda d: d["results"][0].update(wall_time_s=d["results"][0]["wall_time_s"] + 7.5))
    rc, out, err = _run(capsys, ["diff", str(QUICKSTART / "kwta.json"), str(rerun)])
    assert (rc, err) == (0, "")
    assert out.startswith("same result: every field is identical but the volatile ones (wall times,")
