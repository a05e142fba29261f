"""``kwta-robust table RECORDS... --format md|csv|latex|json``: render evaluation records as one table.

``--layout wide`` (default): one row per record, side by side; ``--layout long``: one row per attack and epsilon.
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
    parser.add_argument("--format", default="md", choices=("md", "csv", "latex", "json"), help="output format")
    parser.add_argument("--layout", default="wide", choices=("wide", "long"),
                        help="wide: one row per record; long: one row per attack and epsilon")
    parser.add_argument("--out", metavar="PATH", help="write the table here instead of stdout")
    parser.add_argument("--matrix", action="store_true",
                        help="robustness matrices per attack and eps: rows kWTA k/N (1.0 = ReLU twin), columns weight "
                             "sparsity (one record per cell, e.g. a sweep's records; --layout is ignored)")


def run(args: argparse.Namespace) -> int:
    from kwta_robust.report import render_records
    from kwta_robust.results import atomic_write_text, load_records

    records = load_records(args.records)
    if args.matrix:
        from kwta_robust.matrix import render_records_as_matrices

        text = render_records_as_matrices(records, args.format)
    else:
        text = render_records(records, args.format, args.layout)
    if args.out:
        atomic_write_text(Path(args.out), text)
        logger.info("table written to %s", args.out)
    else:
        sys.stdout.write(text)
    return 0
