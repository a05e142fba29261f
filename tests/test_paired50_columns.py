"""Session 50's paired comparison as data (kwta_robust.paired_columns): ``--format csv|json`` of ``table`` /
``compare`` / ``quickstart`` give the paired table's clean and worst-case rows (diff in points with its Newcombe
interval, only first / only second, McNemar p) as numbers in columns of stable names, on each row paired with the
first record; before, only the paired noise rows were columns and the accuracy rows were Markdown text alone."""

from __future__ import annotations

import csv
import io
import json
import math
import random

from eval_helpers import make_record, make_result
from kwta_robust.cli import main
from kwta_robust.formats import render_stdout
from kwta_robust.numbers import table_number
from kwta_robust.paired import paired_comparisons
from kwta_robust.results import EvalRecord, save_record
from test_noise50_intervals import _probe

N = 40
FIELDS = ("diff (points)", "diff ci_low (points)", "diff ci_high (points)", "only first", "only second", "McNemar p")


def _model(label: str, seed: int, eps: tuple[float, ...] = (0.1, 0.3), robust: float = 0.5) -> EvalRecord:
    """A record of ``N`` samples (seeded): clean flags, a pgd result per epsilon (``-1``: misclassified, not
    attacked) and a numenta probe, so the paired noise columns come before the paired accuracy ones."""
    rng = random.Random(seed)
    clean = [int(rng.random() < 0.85) for _ in range(N)]
    results = [make_result("pgd", [-1 if not c else int(rng.random() < robust * 0.1 / e) for c in clean], eps=e)
               for e in eps]
    record = make_record(results, label=label, clean_flags=clean)
    noisy = [[int(rng.random() < rate) for _ in range(N)] for rate in (0.6, 0.3)]
    record.noise.append(_probe([clean, *noisy], 1))
    return record


def _records() -> list[EvalRecord]:
    """kwta (the reference), relu (its samples, both threat points), tanh (its samples, Linf 0.3 alone) and elsewhere
    (other samples: not paired)."""
    elsewhere = _model("elsewhere", 4)
    elsewhere.dataset["indices"] = list(range(N, 2 * N))
    return [_model("kwta", 1, robust=0.3), _model("relu", 2, robust=0.9), _model("tanh", 3, eps=(0.3,)), elsewhere]


def _markdown_paired(text: str) -> dict[tuple[str, str], dict[str, str]]:
    """The Markdown paired table's rows by (models, accuracy), every column of its blocks (the narrow layout splits
    it, repeating both key columns) by header."""
    rows: dict[tuple[str, str], dict[str, str]] = {}
    lines = [line for line in text.splitlines() if line.startswith("|")]
    headers: list[str] = []
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip("|").split("|")]
        if i + 1 < len(lines) and set(lines[i + 1]) <= set("|-: "):
            headers = cells
        elif headers and headers[0] == "models" and not set(line) <= set("|-: "):
            rows.setdefault((cells[0], cells[1]), {}).update(zip(headers, cells))
    return rows


def _p_matches(markdown: str, value: float) -> bool:
    """A p-value cell as :func:`kwta_robust.numbers.p_value_text` rounds it: ``< 1e-6``, two significant digits below
    0.01, else two decimals."""
    if markdown == "< 1e-6":
        return value < 1e-6
    number = float(markdown)
    half = 0.005 if number >= 0.01 else 0.5 * 10.0 ** (math.floor(math.log10(number)) - 1)
    return abs(value - number) <= half + 1e-12


def test_every_paired_number_in_csv_equals_the_markdown_paired_tables(tmp_path, capsys) -> None:
    records = _records()
    markdown = _markdown_paired(render_stdout(records, "md"))
    assert len(markdown) == 3 + 2 + 2  # relu: clean and both points, tanh: clean and Linf 0.3; a noise row each
    rows = {row["model"]: row for row in csv.DictReader(io.StringIO(render_stdout(records, "csv")))}
    seen = 0
    for (models, accuracy), md in markdown.items():
        if accuracy.startswith("noise "):
            continue
        other = models.split(" − ")[1]
        row = {field: rows[other][f"paired {accuracy} {field}"] for field in FIELDS}
        low, high = (float(v) for v in md["95% interval"].split(" to "))
        assert abs(float(row["diff (points)"]) - float(md["diff (points)"])) <= 0.05 + 1e-9, (models, accuracy)
        assert 0 <= float(row["diff ci_low (points)"]) - low < 0.1 + 1e-9  # printed rounded outward: down
        assert 0 <= high - float(row["diff ci_high (points)"]) < 0.1 + 1e-9  # and up
        assert (int(row["only first"]), int(row["only second"])) == (int(md["only first"]), int(md["only second"]))
        assert _p_matches(md["McNemar p"], float(row["McNemar p"])), (md["McNemar p"], row["McNemar p"])
        seen += 1
    assert seen == 5
    # not rounded for reading: the comparisons' own numbers to 12 significant digits (csv51), the difference from
    # the counts
    for c in paired_comparisons(records):
        name = "clean" if c.norm is None else f"worst case Linf {c.eps_text}"
        row = rows[c.other]
        assert float(row[f"paired {name} diff (points)"]) == table_number(100 * (c.only_reference - c.only_other) / c.n)
        assert (float(row[f"paired {name} diff ci_low (points)"]), float(row[f"paired {name} diff ci_high (points)"])) \
            == (table_number(100.0 * c.interval[0]), table_number(100.0 * c.interval[1]))
        assert float(row[f"paired {name} McNemar p"]) == table_number(c.p_value)
    # empty: the reference, a record on other samples, a threat point the pair lacks
    paired = [h for h in rows["kwta"] if h.startswith("paired ")]
    assert len(paired) == 3 * len(FIELDS)
    assert all(rows["kwta"][h] == "" and rows["elsewhere"][h] == "" for h in paired)
    assert all(rows["tanh"][f"paired worst case Linf 0.1 {field}"] == "" for field in FIELDS)
    assert all(rows["tanh"][f"paired worst case Linf 0.3 {field}"] != "" for field in FIELDS)


def test_json_gives_them_as_numbers_after_the_old_columns_with_a_note(tmp_path, capsys) -> None:
    records = _records()
    paths = []
    for record in records:
        paths.append(tmp_path / f"{record.label}.json")
        save_record(record, paths[-1])
    assert main(["table", *map(str, paths), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    columns = data["columns"]
    first = columns.index("paired clean diff (points)")
    assert first == len(columns) - 3 * len(FIELDS)  # last: every older column keeps its name and place
    assert columns.index("flags") < columns.index("noise numenta paired sign p") < first
    assert columns[first:first + len(FIELDS)] == [f"paired clean {field}" for field in FIELDS]
    kwta, relu, tanh, elsewhere = data["rows"]
    for name in ("clean", "worst case Linf 0.1", "worst case Linf 0.3"):
        assert isinstance(relu[f"paired {name} diff (points)"], float)
        assert isinstance(relu[f"paired {name} diff ci_low (points)"], float)
        assert isinstance(relu[f"paired {name} only first"], int)
        assert isinstance(relu[f"paired {name} only second"], int)
        assert isinstance(relu[f"paired {name} McNemar p"], float)
        assert kwta[f"paired {name} only first"] is None and elsewhere[f"paired {name} McNemar p"] is None
    assert tanh["paired worst case Linf 0.1 only first"] is None
    assert isinstance(tanh["paired worst case Linf 0.3 only first"], int)
    assert sum(note.startswith("paired columns (after") for note in data["notes"]) == 1
    # one record: nothing is paired, so no paired columns and no note
    assert main(["table", str(paths[0]), "--format", "json"]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert not any(c.startswith("paired ") for c in alone["columns"])
    assert not any(note.startswith("paired columns") for note in alone["notes"])
