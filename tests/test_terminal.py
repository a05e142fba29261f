"""Terminal output: the printed tables fit 120 columns and keep every number (``--format wide`` keeps the wide
table), and progress bars and log lines never share a line (logging through tqdm.write; bars only on a terminal)."""

from __future__ import annotations

import fcntl
import os
import pty
import random
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from eval_helpers import make_record, make_result
from kwta_robust.commands.console import progress_bars
from kwta_robust.formats import render_stdout
from kwta_robust.formats import render_table as render
from kwta_robust.narrow import WIDTH, aligned_markdown, threat_tables
from kwta_robust.report import Cell, cell_text, compare_table, detail_table

ATTACKS = [("fgsm", "white-box"), ("pgd", "white-box"), ("apgd-ce", "white-box"), ("apgd-dlr", "white-box"),
           ("fab-t", "white-box"), ("cw", "white-box"), ("bpda-smooth", "bpda"), ("bpda-learned", "bpda"),
           ("gradient-estimation", "adaptive"), ("square", "black-box"), ("transfer", "transfer")]
EPSILONS = (0.1, 0.2, 0.3)


def realistic_record(label: str, seed: int, n: int = 200):
    """A cascade over eleven attacks at three epsilons (33 accuracies) on ``n`` samples."""
    rng = random.Random(seed)
    results = []
    for eps in EPSILONS:
        alive = [1] * n
        for position, (name, kind) in enumerate(ATTACKS):
            flags = [(0 if rng.random() < 0.15 * eps / 0.1 / (position + 1) else 1) if a == 1 else -1 for a in alive]
            results.append(make_result(name, flags, kind=kind, eps=eps, position=position, cumulative=True))
            alive = [1 if f == 1 else 0 for f in flags]
    rec = make_record(results, label=label)
    rec.model.update({"kwta_ratio": 0.05, "kwta_mode": "volume", "weight_sparsity": {"overall": 0.8}})
    return rec


@pytest.fixture(scope="module")
def records():
    return [realistic_record("kwta-cnn-k0.05-magnitude0.8", 0), realistic_record("relu-cnn-magnitude0.8", 1)]


def test_printed_table_fits_120_columns_and_keeps_every_number(records) -> None:
    text = render_stdout(records, "md", title="a realistic comparison")
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= WIDTH
    for rec in records:
        for r in rec.results + rec.worst_case:
            assert cell_text(Cell.acc(r.robust)) in text
    for norm_eps in ("Linf 0.1", "Linf 0.2", "Linf 0.3"):  # one table per threat point, attacks as rows
        header = next(line for line in lines if line.startswith(f"| {norm_eps} "))
        assert [c.strip() for c in header.strip("|").split("|")][1:] == [r.label for r in records]
    assert sum(1 for line in lines if line.startswith("| +gradient-estimation ")) == 3
    wide = render_stdout(records, "wide", title="a realistic comparison")
    table = render(compare_table(records, title="a realistic comparison"), "md")
    assert wide.startswith(table) and "| models | accuracy | n | diff (points) |" in wide[len(table):]  # then paired
    assert max(len(line) for line in wide.splitlines()) > 600  # the wide table is kept as it was


def test_evaluate_layout_fits_120_columns(records) -> None:
    text = render_stdout(records[:1], "md", detail=True)
    assert max(len(line) for line in text.splitlines()) <= WIDTH
    assert "| +bpda-learned " in text and "| worst case " in text
    assert render_stdout(records[:1], "wide", detail=True) == render(detail_table(records[0]), "md")


def test_many_models_split_into_blocks_that_repeat_the_first_column() -> None:
    many = [realistic_record(f"model-{i}", i, n=20) for i in range(9)]
    (table, *_) = threat_tables(many)
    text = aligned_markdown(table)
    blocks = text.strip().split("\n\n")
    assert len(blocks) > 1
    for block in blocks:
        rows = block.splitlines()
        assert rows[0].startswith("| Linf 0.1 ") and rows[-1].startswith("| worst case ")
        assert max(len(r) for r in rows) <= WIDTH
    headers = [c.strip() for b in blocks for c in b.splitlines()[0].strip("|").split("|")[1:]]
    assert headers == [r.label for r in many]  # every model once, in order


def test_a_split_paired_table_repeats_the_models_and_the_accuracy_in_every_block(records) -> None:
    """The paired comparison is one row per (models, accuracy): a continuation block that repeated the models alone
    listed its McNemar p-values under identical names, so which p belonged to which accuracy was lost."""
    text = render_stdout(records, "md", title="a realistic comparison")
    start = text.index("| models ")
    blocks = [b for b in text[start:].split("\n\n") if b.startswith("| models ")]
    assert len(blocks) == 2 and "McNemar p" in blocks[1]
    names = [[" | ".join(c.strip() for c in row.strip("|").split("|")[:2]) for row in b.splitlines()[2:]]
             for b in blocks]
    assert names[0] == names[1] and len(set(names[1])) == len(names[1]) == 4  # clean + worst case at 3 epsilons
    assert all(max(len(line) for line in b.splitlines()) <= WIDTH for b in blocks)


def test_a_cell_wider_than_the_terminal_is_shortened() -> None:
    rec = realistic_record("x" * 300, 0, n=10)
    text = render_stdout([rec], "md")
    assert max(len(line) for line in text.splitlines()) <= WIDTH and "…" in text


# ---------------------------------------------------------------------------------------------------------------
# progress bars and log lines
# ---------------------------------------------------------------------------------------------------------------
SCRIPT = r"""
import logging, sys
from tqdm.auto import tqdm
from kwta_robust.commands.console import configure_logging, progress_bars

if sys.argv[1] == "cli":
    configure_logging(0, False)
else:  # what the CLI did before: a plain stream handler
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
log = logging.getLogger("kwta_robust.evaluate")
# the runner's bar (attacks.cascade.run_verified): one per attack and eps, cleared when done
with tqdm(total=12, desc="loud linf 0.1", unit="ex", leave=False, disable=not progress_bars(False)) as bar:
    for step in range(4):
        if step == 1:
            log.warning("attack warning while the bar runs")
        bar.update(3)
log.info("loud linf 0.1 robust 5 of 12")
"""


def _env() -> dict:
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1",
            "COLUMNS": "120"}


def run_in_terminal(mode: str) -> str:
    """Run :data:`SCRIPT` with stdout/stderr on a pseudo-terminal 120 columns wide; return what it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, mode], stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=slave, env=_env())
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=60) == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode()


def screen_lines(raw: str) -> list[str]:
    """The lines a terminal shows for ``raw``: ``\r`` returns to column 0 and later characters overwrite."""
    assert not re.search(r"\x1b(?!\[\d*[AK])", raw), "unexpected escape sequence"
    raw = re.sub(r"\x1b\[\d*[AK]", "", raw)
    lines, line, col = [], [], 0
    for ch in raw:
        if ch == "\r":
            col = 0
        elif ch == "\n":
            lines.append("".join(line).rstrip())
            line, col = [], 0
        else:
            if col < len(line):
                line[col] = ch
            else:
                line.append(ch)
            col += 1
    if line:
        lines.append("".join(line).rstrip())
    return lines


def _bar_and_log(line: str) -> bool:
    return "%|" in line and ("WARNING" in line or "INFO" in line)


def test_progress_bars_and_log_lines_never_share_a_line() -> None:
    raw = run_in_terminal("cli")
    assert "loud linf 0.1:" in raw and "%|" in raw  # the bar was drawn on the terminal
    lines = screen_lines(raw)
    assert "WARNING kwta_robust.evaluate: attack warning while the bar runs" in lines
    assert "INFO kwta_robust.evaluate: loud linf 0.1 robust 5 of 12" in lines
    assert not any(_bar_and_log(line) for line in lines), lines
    # the check can fail: with the plain stream handler the warning lands on the bar's line
    assert any(_bar_and_log(line) for line in screen_lines(run_in_terminal("plain")))


def test_no_bars_in_a_log_file() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, "cli"], capture_output=True, text=True, env=_env(),
                          timeout=60, check=True)
    assert "\r" not in proc.stderr and "%|" not in proc.stderr
    assert proc.stderr.splitlines() == ["WARNING kwta_robust.evaluate: attack warning while the bar runs",
                                        "INFO kwta_robust.evaluate: loud linf 0.1 robust 5 of 12"]
    assert progress_bars(no_progress=True) is False


@pytest.mark.parametrize("fmt", ["md", "wide"])
def test_a_label_with_a_line_break_or_a_pipe_keeps_every_row_whole(fmt: str) -> None:
    """A record's label is whatever its ``model.label`` holds (an edited or foreign record): a line break in it
    would end a Markdown row (or a heading) in the middle, a pipe add a column."""
    record = make_record([make_result("pgd", [1, 0, 1, 0])], label="kwta\nnight run | v2")
    text = render_stdout([record], fmt, detail=True)
    assert "kwta night run \\| v2" in text
    for block in text.split("\n\n"):
        rows = [line for line in block.splitlines() if line.startswith("|")]
        cells = {len(re.findall(r"(?<!\\)\|", line)) for line in rows}
        assert len(cells) <= 1, block  # every row of a table has the header's columns
    assert not any(line.startswith(("night", " night")) for line in text.splitlines())
