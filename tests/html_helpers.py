"""Helpers for the HTML report tests: the committed quickstart records, the texts a record's tables must show,
and a parser that collects a page's text and tags."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

from kwta_robust.report import Cell, cell_text
from kwta_robust.results import EvalRecord, load_record

#: Records of a real ``kwta-robust quickstart --out-dir /tmp/s17/qs_after`` run (kWTA CNN 0.1 and its ReLU twin, 200
#: mnist5k test images; the shipped ``eval_configs/quickstart.yaml``: PGD-10, then BPDA-smooth around APGD-CE in four
#: stages, plus the quickstart's transfer from the twin, at Linf 0.1 / 0.3; the budget check; Numenta noise).
QUICKSTART = Path(__file__).parent / "fixtures" / "quickstart"


def quickstart_records() -> list[EvalRecord]:
    return [load_record(QUICKSTART / "kwta.json"), load_record(QUICKSTART / "relu.json")]


def expected_numbers(record: EvalRecord) -> list[str]:
    """Every accuracy of the record as its tables write it: clean, each attack at each eps, each worst case."""
    texts = [cell_text(Cell.acc(record.clean))]
    texts += [cell_text(Cell.acc(r.robust)) for r in record.results]
    texts += [cell_text(Cell.acc(w.robust)) for w in record.worst_case]
    return texts


class PageParser(HTMLParser):
    """Collects the text (outside ``<style>``) and the start tags of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if not self._in_style:
            self.chunks.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.chunks).split())


def parse_page(html: str) -> PageParser:
    parser = PageParser()
    parser.feed(html)
    parser.close()
    return parser
