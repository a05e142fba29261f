"""``kwta-robust diff`` names each differing entry in words after its path (attack, threat point, probe, level,
sample and its data set id) and pairs the records' results, sanity results, worst cases and noise probes by key."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from kwta_robust.cli import main
from kwta_robust.diff_labels import entry_pairs
from kwta_robust.record_diff import differences, record_differences

FIXTURE = Path(__file__).parent / "fixtures" / "quickstart" / "kwta.json"


@pytest.fixture(scope="module")
def record() -> dict:
    """The quickstart's kWTA record: results pgd, bpda-smooth, transfer at Linf 0.1 then 0.3; one numenta probe."""
    return json.loads(FIXTURE.read_text())


def _diff(tmp_path: Path, first: dict, second: dict, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for path, data in zip(paths, (first, second)):
        path.write_text(json.dumps(data))
    code = main(["diff", *map(str, paths)])
    return code, capsys.readouterr().out


def test_a_margin_names_its_attack_threat_point_and_sample(record: dict, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    changed = copy.deepcopy(record)
    assert (changed["results"][4]["label"], changed["results"][4]["eps_text"]) == ("bpda-smooth", "0.3")
    survivor = changed["results"][4]["flags"].index(0)
    changed["results"][4]["margins"][survivor] = 123.0
    code, out = _diff(tmp_path, record, changed, capsys)
    sample = record["dataset"]["indices"][survivor]
    assert code == 1
    assert f"  results[4].margins[{survivor}] (bpda-smooth, Linf 0.3; sample {survivor}, data set id {sample}): " in out


def test_the_same_results_in_another_order_are_the_same_result(record: dict, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    reordered = copy.deepcopy(record)
    reordered["results"] = reordered["results"][3:] + reordered["results"][:3]  # e.g. a resumed run's order
    reordered["worst_case"].reverse()
    assert record_differences(record, reordered) == []
    code, out = _diff(tmp_path, record, reordered, capsys)
    assert code == 0 and out.startswith("same result")


def test_a_moved_entry_names_its_place_in_the_second_and_a_missing_one_its_label(record: dict) -> None:
    changed = copy.deepcopy(record)
    changed["results"].reverse()  # results[1] (bpda-smooth, Linf 0.1) is the second's results[4]
    changed["results"][4]["n_broken"] += 1
    transfer = changed["results"].pop(0)  # transfer at Linf 0.3: only in the first
    assert (transfer["label"], transfer["eps_text"]) == ("transfer", "0.3")
    assert [found.labelled for found in differences(record, changed)] == [
        f"results[1].n_broken (bpda-smooth, Linf 0.1; results[3] in the second): {record['results'][1]['n_broken']}"
        f" != {record['results'][1]['n_broken'] + 1}",
        "results[5] (transfer, Linf 0.3): only in the first",
    ]
    added = copy.deepcopy(record)
    added["results"].append({**transfer, "label": "pgd-2"})
    assert [found.labelled for found in differences(record, added)] == ["results[6] (pgd-2, Linf 0.3): only in the "
                                                                      "second"]


def test_worst_case_noise_and_clean_fields_are_named(record: dict) -> None:
    changed = copy.deepcopy(record)
    changed["worst_case"][1]["first_broken_by"][2] = 5
    probe = changed["noise"][0]["result"]
    probe["accuracy"][3] = 0.5
    probe["draw_accuracy"][3][0] = 0.5
    probe["correct_counts"][4][7] = 9
    changed["clean_flags"][7] = 1 - changed["clean_flags"][7]
    ids = record["dataset"]["indices"]
    lines = [found.labelled for found in differences(record, changed)]
    assert [line.partition(": ")[0] for line in lines] == [
        f"clean_flags[7] (sample 7, data set id {ids[7]})",
        f"worst_case[1].first_broken_by[2] (Linf 0.3; sample 2, data set id {ids[2]})",
        "noise[0].result.accuracy[3] (noise numenta; level 0.15)",
        "noise[0].result.draw_accuracy[3][0] (noise numenta; level 0.15, draw 0)",
        f"noise[0].result.correct_counts[4][7] (noise numenta; level 0.2, sample 7, data set id {ids[7]})",
    ]


def test_entries_without_a_key_or_with_a_key_twice_pair_by_position() -> None:
    twice = [{"kind": "numenta"}, {"kind": "numenta"}]
    assert entry_pairs("noise", twice, twice[:1]) == [(0, 0), (1, None)]
    assert entry_pairs("results", [{"label": "pgd"}], [{"label": "pgd"}, {}]) == [(0, 0), (None, 1)]
    assert record_differences({"noise": twice}, {"noise": twice[::-1] + [{"kind": "x"}]}) == [
        "noise[2]: only in the second"]
