"""``kwta-robust table RECORDS... --format md|wide|csv|latex|json``: render evaluation records as tables.

``--layout wide`` (default): the records side by side; ``--layout long``: each record per attack and epsilon.
``--format md`` (default) keeps every line within 120 columns (attacks as rows, one table per threat point;
:mod:`kwta_robust.narrow`); ``--format wide`` gives the single wide Markdown table (a row per record).
``--matrix``: robustness matrices instead (rows kWTA k/N, columns weight sparsity; :mod:`kwta_robust.matrix`),
e.g. ``kwta-robust table runs/sweep3x3/cells/*/eval-*.json --matrix``.
Tables are rendered from the records only (see :mod:`kwta_robust.report`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("records", nargs="+", metavar="RECORD", help="JSON records written by evaluate/compare")
    parser.add_argument("--format", default="md", choices=("md", "wide", "csv", "latex", "json"),
                        help="md (default): Markdown within 120 columns, one table per threat point; wide: one "
                             "Markdown table (a row per record, or per attack with --layout long); csv, latex, json")
    parser.add_argument("--layout", default="wide", choices=("wide", "long"),
                        help="wide: one row per record; long: one row per attack and epsilon")
    parser.add_argument("--out", metavar="PATH", help="write the table here instead of stdout")
    parser.add_argument("--matrix", action="store_true",
                        help="robustness matrices per attack and eps: rows kWTA k/N (1.0 = ReLU twin), columns weight "
                             "sparsity (one record per cell, e.g. a sweep's records; --layout is ignored)")


def run(args: argparse.Namespace) -> int:
    from kwta_robust.narrow import render_stdout
    from kwta_robust.results import atomic_write_text, load_records

    records = load_records(args.records)
    if args.matrix:
        from kwta_robust.matrix import render_records_as_matrices

        text = render_records_as_matrices(records, "md" if args.format == "wide" else args.format)
    else:
        text = render_stdout(records, args.format, detail=args.layout == "long")
    if args.out:
        atomic_write_text(Path(args.out), text)
        logger.info("table written to %s", args.out)
    else:
        sys.stdout.write(text)
    return 0
