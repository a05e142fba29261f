"""``kwta-robust table RECORDS... --format md|wide|csv|latex|json``: render evaluation records as tables.

``--layout wide`` (default): the records side by side; ``--layout long``: each record per attack and epsilon.
``--format md`` (default) keeps every line within 120 columns (attacks as rows, one table per threat point;
:mod:`kwta_robust.narrow`); ``--format wide`` gives the single wide Markdown table (a row per record).
``--matrix``: robustness matrices instead (rows kWTA k/N, columns weight sparsity; :mod:`kwta_robust.matrix`),
e.g. ``kwta-robust table runs/sweep3x3/cells/*/eval-*.json --matrix``; after each noise probe's score matrix, a
matrix of its accuracy per noise level but 0 (:mod:`kwta_robust.noise_matrix`).
``--protocol``: the attack protocol instead (a row per record and attack label: kind, threat points, effective
settings, seed, queries per attacked sample, time; :mod:`kwta_robust.protocol`).
Tables are rendered from the records only (see :mod:`kwta_robust.report`), each record checked first
(:mod:`kwta_robust.record_checks`: counts vs accuracies, flag values, lengths). A partial record (an evaluation that
did not finish) is refused unless ``--allow-partial``, which marks it ``[partial]`` in every format (``--matrix``
refuses it even then).
Without ``--format``, ``--out`` chooses it by its extension (``.csv``, ``.tex``, ``.json``; else ``md``); a
``--format`` that another of those extensions contradicts is refused (:func:`table_format`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from kwta_robust.errors import ConfigError
from kwta_robust.formats import FORMATS, LAYOUTS, format_help
from kwta_robust.safe_paths import (TABLE_SUFFIXES, check_distinct, check_inputs_once, check_output_file,
                                    check_text_output)

if TYPE_CHECKING:
    from kwta_robust.results import EvalRecord

logger = logging.getLogger(__name__)

#: The most columns of a LaTeX ``tabular`` that fit a page's text width legibly (:func:`wide_latex_hint`).
LATEX_PAGE_COLUMNS = 10
#: The format an ``--out`` extension names; the other extensions (``.md``, ``.markdown``, ``.txt``) take any.
SUFFIX_FORMATS = {".csv": "csv", ".tex": "latex", ".json": "json"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``table`` command's options."""
    parser.add_argument("records", nargs="+", metavar="RECORD", help="JSON records written by evaluate/compare")
    parser.add_argument("--format", choices=FORMATS.names(),
                        help=format_help("default: the one --out's extension names (.csv, .tex, .json), else md: "))
    parser.add_argument("--layout", default="wide", choices=LAYOUTS,
                        help="wide: the records side by side (a row per record; md: a row per record, then a table "
                             "per threat point with a column per record); long: a table per record, a row per "
                             "attack and epsilon")
    parser.add_argument("--out", metavar="PATH", help="write the table here instead of stdout")
    parser.add_argument("--allow-partial", action="store_true",
                        help="render unfinished (partial) records too, marked [partial] in every format (never in "
                             "--matrix); by default they are refused")
    parser.add_argument("--matrix", action="store_true",
                        help="robustness matrices per attack and eps: rows kWTA k/N (1.0 = ReLU twin), columns weight "
                             "sparsity (one record per cell, e.g. a sweep's records; --layout is ignored); noise "
                             "probes: a score matrix and one per noise level")
    parser.add_argument("--protocol", action="store_true",
                        help="the attack protocol instead, for a paper's appendix: a row per record and attack label "
                             "with its kind, threat points, effective settings (every default that ran, inner "
                             "attacks nested), seed, queries per attacked sample and time (--layout is ignored)")


def run(args: argparse.Namespace) -> int:
    """Render records as a table (stdout or ``--out``); returns the exit status."""
    from kwta_robust.comparability import settings_notes
    from kwta_robust.formats import render_records_as_matrices, render_stdout
    from kwta_robust.protocol import render_protocol
    from kwta_robust.record_checks import check_record
    from kwta_robust.record_flags import HarnessRevision
    from kwta_robust.results import atomic_write_text, load_records

    out = check_output_file(args.out, "--out")
    check_inputs_once([(f"RECORD {p}", p) for p in args.records])
    check_distinct({"--out": out}, {f"RECORD {p}": p for p in args.records})
    check_text_output(out, "table", TABLE_SUFFIXES, "--out")
    fmt = table_format(args.format, out)
    if args.protocol and args.matrix:
        raise ConfigError("--protocol: give either --protocol or --matrix, not both")
    records = load_records(args.records)
    harness = HarnessRevision()  # this package's commit, read (and git asked) once for all the records
    for path, record in zip(args.records, records):
        # counts vs accuracies, flag values, lengths: nothing contradictory rendered
        check_record(record, str(path), harness=harness)
        if record.status != "complete" and (args.matrix or not args.allow_partial):
            raise ConfigError(f"{path}: partial record (its evaluation did not finish); re-run its command to finish "
                              + ("it (matrices take complete records only)" if args.matrix else
                                 "it, or pass --allow-partial to render it marked [partial]"))
    for note in settings_notes(list(zip(args.records, records))):  # in the table's notes too, not in CSV
        logger.warning("%s", note)
    if args.matrix:
        text = render_records_as_matrices(records, fmt)
    elif args.protocol:
        text = render_protocol(records, fmt)
    else:
        text = render_stdout(records, fmt, detail=args.layout == "long")
        hint = wide_latex_hint(records) if fmt == "latex" and args.layout == "wide" else None
        if hint is not None:
            logger.warning("%s", hint)
    if out is not None:
        atomic_write_text(out, text)
        logger.info("table written to %s", args.out)
    else:
        sys.stdout.write(text)
    return 0


def wide_latex_hint(records: Sequence[EvalRecord]) -> str | None:
    """One line for ``--format latex`` of the wide layout when its ``tabular`` has more than
    :data:`LATEX_PAGE_COLUMNS` columns (a full suite's: every attack at every epsilon, ~25 to 40), which run off a
    page: ``--layout long`` writes a table per record, a row per attack and epsilon. ``None`` for a table that fits."""
    from kwta_robust.report import compare_table

    width = len(compare_table(records).headers)
    if width <= LATEX_PAGE_COLUMNS:
        return None
    return (f"--format latex: the wide table has {width} columns, more than a page holds (about "
            f"{LATEX_PAGE_COLUMNS}); --layout long writes a table per record with a row per attack and epsilon")


def table_format(fmt: str | None, out: Path | None) -> str:
    """The format to write: ``--format``, else the one ``--out``'s extension names (:data:`SUFFIX_FORMATS`), else
    ``md``. Before, ``--out t.json`` without ``--format`` wrote Markdown there, and the same command run again
    refused to replace it ("not a table this command wrote"); a ``--format`` the extension contradicts is one line."""
    implied = SUFFIX_FORMATS.get(out.suffix.lower()) if out is not None else None
    if fmt is None:
        return implied or "md"
    if implied is not None and implied != fmt:
        raise ConfigError(f"--format: {fmt} does not match --out {out} (a {out.suffix} file holds {implied}); pass "
                          f"--format {implied} or leave --format out, or give --out a .md or .txt name")
    return fmt
