"""Seeded random records and parsers of every table format, for the cross-format fuzz
(:mod:`test_fuzz48_formats`; a larger seed sweep runs the same checks from scratch).

:func:`fuzz_records` builds 1–3 valid records (the builders of :mod:`eval_helpers`): cascade or independent mode,
1–3 threat points, attack suites that differ between records, ``n`` from 1 to 9 with every sample or none surviving
some attacks, Numenta and Gaussian noise probes, budget-check flags whose re-runs broke survivors, other flags,
sanity attacks and sweep cells, so that a matrix can be built. The parsers read a rendered table back as header
texts and cell texts (:func:`md_tables`, :func:`latex_tables`, :func:`html_tables`) or numbers (CSV, JSON)."""

from __future__ import annotations

import html
import random
import re
from html.parser import HTMLParser
from typing import Any

from eval_helpers import make_record, make_result
from kwta_robust.results import EvalRecord, Flag, NoiseResult

#: Attack and model labels, some with characters a format escapes (LaTeX's ``_ & % #``, Markdown's ``* | <b>``, a
#: spreadsheet formula's ``=``), some named like a table's other rows (``worst case``, ``clean``).
LABELS = ("pgd", "apgd-ce", "bpda-smooth", "square", "fgsm", "pgd_100", "*x*", "a|b", "worst case", "clean")
POINTS = (("linf", 0.1), ("linf", 8 / 255), ("linf", 0.3), ("linf", 0.1 + 0.2), ("l2", 0.5), ("l2", 1.5))
MODELS = ("kwta", "relu", "kwta-b", "lwta", "=cmd", "k&r 50%", "<b>m</b>", "#1")
CELLS = ((0.1, 0.0), (1.0, 0.0), (0.1, 0.5), (1.0, 0.5), (0.2, 0.0))


def _flags(rng: random.Random, clean: list[int], alive: list[bool], cascade: bool) -> list[int]:
    """An attack's flags: -1 where misclassified clean (or, in cascade mode, broken by an earlier attack), else 0
    (broken) or 1 (robust) at a rate drawn to hit none, all or some."""
    rate = rng.choice([0.0, 1.0, 0.3, 0.7])
    flags = []
    for i, c in enumerate(clean):
        if c != 1 or (cascade and not alive[i]):
            flags.append(-1)
            continue
        broken = rng.random() < rate
        flags.append(0 if broken else 1)
        if cascade and broken:
            alive[i] = False
    return flags


def _noise(rng: random.Random, kind: str, n: int) -> NoiseResult:
    """A probe of 1–3 levels and 1–16 draws: its score a multiple of 1/draws (``3.0625``: more digits than a
    table's four significant ones)."""
    levels = [0.0, 0.1, 0.2][:rng.randint(1, 3)]
    draws = rng.choice([1, 1, 2, 4, 16])
    counts = [[rng.randint(0, draws) for _ in range(n)] for _ in levels]
    accuracy = [sum(c) / (draws * n) for c in counts]
    result: dict[str, Any] = {"kind": kind, "num_samples": n, "accuracy": accuracy, "correct_counts": counts,
                              "params": {"value": 1} if kind == "numenta" else {"sigma": 0.5}}
    if kind == "numenta":
        total = sum(sum(c) for c in counts)
        result.update(total_correct=total, noise_score=total / draws,
                      noise_score_normalized=total / (draws * len(levels) * n))
    return NoiseResult(kind, levels, draws, 7, result, 0.25)


def _budget_flags(rng: random.Random, record: EvalRecord) -> list[Flag]:
    """``budget-checked`` flags whose re-runs broke some of the worst case's survivors (or none)."""
    out = []
    for w in record.worst_case:
        survivors = [i for i, b in enumerate(w.first_broken_by) if b == -1]
        if not w.attacks or rng.random() < 0.5:
            continue
        broken = rng.sample(survivors, rng.randint(0, len(survivors))) if survivors else []
        evidence = {"source": "rerun", "attack": w.attacks[0], "norm": w.norm, "eps": w.eps, "factor": 3,
                    "broken_indices": sorted(broken)}
        out.append(Flag("budget-checked", "info", f"re-ran {w.attacks[0]} at 3x", evidence))
    return out


def fuzz_record(rng: random.Random, label: str, n: int, points: list[tuple[str, float]], cell: tuple[float, float],
                samples: list[int] | None = None) -> EvalRecord:
    """One valid record (``samples``: its clean flags, shared by records paired on the same samples)."""
    mode = rng.choice(["cascade", "independent"])
    cascade = mode == "cascade"
    clean = samples if samples is not None else [rng.choice([1, 1, 1, 0]) for _ in range(n)]
    results = []
    for norm, eps in points:
        alive = [c == 1 for c in clean]
        labels = rng.sample(LABELS, rng.randint(1, 3))
        for pos, name in enumerate(labels):
            r = make_result(name, _flags(rng, clean, alive, cascade), norm=norm, eps=eps, position=pos,
                            cumulative=cascade)
            r.queries, r.wall_time_s = rng.choice([None, 0, rng.randint(1, 5000)]), rng.choice([0.0, 1.25, 12.5])
            results.append(r)
    sanity = [make_result("sanity-pgd", _flags(rng, clean, [True] * n, False), eps=1.0)] if rng.random() < 0.5 else []
    rec = make_record(results, n=n, label=label, clean_flags=clean, sanity=sanity, mode=mode)
    ratio, sparsity = cell
    rec.model.update(activation="relu" if ratio == 1.0 else "kwta",
                     sweep_cell={"kwta_ratio": ratio, "weight_sparsity": sparsity, "pruning_method": "magnitude"})
    if sparsity or rng.random() < 0.2:  # measured from the tensors: near the target, or a pruned model of one's own
        rec.model["weight_sparsity"] = {"overall": round(sparsity + rng.choice([0.0, 0.004, 0.01]), 4)}
    if rng.random() < 0.2 and results:  # a transfer attack: crafted on another model
        results[-1].kind, results[-1].source = "transfer", "relu twin"
    if rng.random() < 0.7:
        rec.noise.append(_noise(rng, "numenta", n))
    if rng.random() < 0.4:
        rec.noise.append(_noise(rng, "gaussian", n))
    rec.diagnostics = _budget_flags(rng, rec)
    for code, severity in (("gradient-masking", "critical"), ("large-eps-not-zero", "warning"),
                           ("budget-still-lowering", "warning")):
        if rng.random() < 0.25:
            rec.diagnostics.append(Flag(code, severity, f"{code} evidence", {"source": "fuzz"}))
    rng.shuffle(rec.diagnostics)
    if rng.random() < 0.2:
        _randomized(rng, rec)
    if rng.random() < 0.15:
        rec.status = "partial"
    return rec


def _rates(rng: random.Random, flags: list[int]) -> list[float | None]:
    """Error rates over 3 draws a plurality verdict agrees with (right, flag 1, below 1/2; wrong, flag 0, from 1/2 on;
    none where not attacked, -1)."""
    return [None if f == -1 else rng.choice([0.0, 1 / 3]) if f == 1 else rng.choice([2 / 3, 1.0]) for f in flags]


def _randomized(rng: random.Random, rec: EvalRecord) -> None:
    """``rec`` as a randomized model's, verdicted over 3 draws: its tables get an expected-accuracy column."""
    rec.provenance["randomness"] = {"randomized": True, "draws": 3, "seedable": True, "max_output_diff": 0.5}
    rec.clean_error_rates = _rates(rng, rec.clean_flags)
    for r in [*rec.results, *rec.sanity]:
        r.error_rates = _rates(rng, r.flags)


def fuzz_records(seed: int) -> list[EvalRecord]:
    """1–3 records of seed ``seed``: unique labels and sweep cells, the same samples (for the paired table) in most
    seeds (else sometimes another number of them), threat points shared in part."""
    rng = random.Random(seed)
    count = rng.randint(1, 3)
    n = rng.choice([1, 2, 3, 5, 9, 16, 48])  # 16, 48: accuracies on a half (6.25%, 56.25%) rounded up
    labels, cells = rng.sample(MODELS, count), rng.sample(CELLS, count)
    shared = [rng.choice([1, 1, 0]) for _ in range(n)] if rng.random() < 0.8 else None
    points = rng.sample(POINTS, rng.randint(1, 3))
    records = []
    for label, cell in zip(labels, cells):
        own = points[:rng.randint(0 if rng.random() < 0.1 else 1, len(points))]  # none: a noise-only record
        size = n if shared else rng.choice([n, n, 4])  # other samples: another n (a matrix's n differs by cell)
        records.append(fuzz_record(rng, label, size, own, cell, list(shared) if shared else None))
    return records


# ---------------------------------------------------------------------------------------------------------------
# parsers: a rendered table back as (headers, rows) of texts
# ---------------------------------------------------------------------------------------------------------------
#: A backslash escape of CommonMark: a backslash before ASCII punctuation (before anything else it is a backslash).
MD_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")


def md_unescape(text: str) -> str:
    return MD_ESCAPE.sub(r"\1", text)


def _md_cells(line: str) -> list[str]:
    inner = line.strip()[1:-1]
    return [md_unescape(c.strip()) for c in re.split(r"(?<!\\)\|", inner)]


def md_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every Markdown table of ``text``: blocks of ``|`` lines (header, rule, rows). Blocks of an aligned table split
    for width (the same key header first) are joined; rows continued on the lines below (an empty first cell: a
    wrapped list of flag codes) are joined to the row above."""
    tables: list[tuple[list[str], list[list[str]]]] = []
    block: list[str] = []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            block.append(line)
            continue
        if block:
            headers, rows = _md_cells(block[0]), [_md_cells(b) for b in block[2:]]
            joined: list[list[str]] = []
            for row in rows:
                if joined and row[0] == "":
                    joined[-1] = [f"{a} {b}" if b else a for a, b in zip(joined[-1], row)]
                else:
                    joined.append(row)
            tables.append((headers, joined))
            block = []
    return tables


def join_split_blocks(tables: list[tuple[list[str], list[list[str]]]],
                      keys: int = 1) -> list[tuple[list[str], list[list[str]]]]:
    """Tables split for width (consecutive blocks with the same ``keys`` header and row keys) joined again."""
    out: list[tuple[list[str], list[list[str]]]] = []
    for headers, rows in tables:
        if out and out[-1][0][:keys] == headers[:keys] and [r[:keys] for r in out[-1][1]] == [r[:keys] for r in rows]:
            prev_h, prev_r = out[-1]
            out[-1] = (prev_h + headers[keys:], [a + b[keys:] for a, b in zip(prev_r, rows)])
        else:
            out.append((headers, rows))
    return out


_LATEX_BACK = [(r"\textbackslash{}", "\\"), (r"\textasciitilde{}", "~"), (r"\textasciicircum{}", "^"),
               (r"\textless{}", "<"), (r"\textgreater{}", ">"), (r"\textbar{}", "|"), ("$-$", "−"),
               (r"$\leq$", "≤"), (r"$\geq$", "≥"), (r"$\times$", "×"), ("---", "—"), ("--", "–")]


def latex_text(text: str) -> str:
    """LaTeX-escaped text back as written (the reverse of :func:`kwta_robust.formats.latex.latex_escape`)."""
    for escaped, plain in _LATEX_BACK:
        text = text.replace(escaped, plain)
    return re.sub(r"\\([&%$#_{}])", r"\1", text)


_LATEX_ACC = re.compile(r"(.*?)\\,\{\\scriptsize\[(.*?), (.*?)\]\}(.*)")


def latex_cell(cell: str) -> str:
    """A tabular cell as the Markdown text of the cell: ``87.5\\,{\\scriptsize[82.3, 91.2]}`` is
    ``87.5 (82.3–91.2)``."""
    cell = cell.strip()
    cell = cell[2:] if cell.startswith("{}") else cell
    found = _LATEX_ACC.fullmatch(cell)
    if found:
        value, low, high, mark = found.groups()
        return f"{value} ({low}–{high}){latex_text(mark)}"
    return latex_text(cell)


def latex_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every booktabs tabular of ``text`` as (headers, rows) of cell texts."""
    tables = []
    for block in re.findall(r"\\toprule\n(.*?)\n\\bottomrule", text, flags=re.S):
        head, body = block.split("\n\\midrule", 1)
        lines = [line for line in body.split("\n") if line.strip()]
        split = [[latex_cell(c) for c in re.split(r"(?<!\\) & ", line.removesuffix(r" \\"))] for line in
                 [head, *lines]]
        tables.append((split[0], split[1:]))
    return tables


def latex_notes(text: str) -> list[str]:
    return [latex_text(line[len(r"\item "):].removeprefix("{}")) for line in text.splitlines()
            if line.startswith(r"\item ")]


def md_notes(text: str) -> list[str]:
    return [md_unescape(line[2:]) for line in text.splitlines() if line.startswith("- ")]


class _Tables(HTMLParser):
    """Every ``<table>`` of a page (nested ones apart) as rows of cell texts, and the ``<li>`` texts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[list[list[str]]] = []
        self.items: list[str] = []
        self._stack: list[list[list[str]]] = []
        self._cell: list[list[str]] = []
        self._li: list[list[str]] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "table":
            self._stack.append([])
        elif tag == "tr" and self._stack:
            self._stack[-1].append([])
        elif tag in ("td", "th"):
            self._cell.append([])
        elif tag == "li":
            self._li.append([])

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self._stack:
            self.tables.append(self._stack.pop())
        elif tag in ("td", "th") and self._cell:
            text = " ".join("".join(self._cell.pop()).split())
            if self._stack and self._stack[-1]:
                self._stack[-1][-1].append(text)
            if self._cell:
                self._cell[-1].append(text)
        elif tag == "li" and self._li:
            self.items.append(" ".join("".join(self._li.pop()).split()))

    def handle_data(self, data: str) -> None:
        for part in (self._cell[-1:], self._li[-1:]):
            if part:
                part[0].append(data)


def html_tables(page: str) -> tuple[list[list[list[str]]], list[str]]:
    """The tables of an HTML page (each a list of rows of cell texts, the header row first) and its list items."""
    parser = _Tables()
    parser.feed(page)
    parser.close()
    return parser.tables, parser.items


def md_sections(text: str) -> list[tuple[str, list[tuple[list[str], list[list[str]]]]]]:
    """``text`` cut at its ``### `` headings: each heading's text (unescaped) and its tables, blocks split for width
    joined (:func:`join_split_blocks`); the text before the first heading under the title ``""``."""
    sections: list[tuple[str, list[str]]] = [("", [])]
    for line in text.splitlines():
        if line.startswith("### "):
            sections.append((md_unescape(line[4:]), []))
        else:
            sections[-1][1].append(line)
    return [(title, join_split_blocks(md_tables("\n".join(lines)))) for title, lines in sections]


def latex_paragraphs(text: str) -> list[tuple[str, list[tuple[list[str], list[list[str]]]]]]:
    """``text`` cut at its ``\\paragraph{...}`` titles, each with its tabulars."""
    parts = re.split(r"\\paragraph\{(.*)\}\n", text)
    return [(latex_text(title), latex_tables(body)) for title, body in zip(parts[1::2], parts[2::2])]


_HEAT_CELL = re.compile(r'<g><title>[^<]*</title><rect [^>]*/><text [^>]*font-weight="bold">([^<]*)</text>'
                        r'(?:<text [^>]*>([^<]*)</text>)?</g>')


def heatmaps(page: str) -> dict[str, list[tuple[str, str | None]]]:
    """The heatmaps of an HTML page by title: each cell's bold text and its interval text, row by row."""
    found = {}
    for title, svg in re.findall(r'<svg [^>]*aria-label="([^"]*)"[^>]*>(.*?)</svg>', page, flags=re.S):
        cells = [(html.unescape(v), html.unescape(i) if i else None) for v, i in _HEAT_CELL.findall(svg)]
        if cells:
            found[html.unescape(title)] = cells
    return found
