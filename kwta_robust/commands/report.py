"""``kwta-robust report RECORD.json... [--sweep DIR] --out report.html``: one self-contained HTML report (or, with
``--out report.md``, its tables as Markdown: :mod:`kwta_robust.md_report`; any other suffix is refused).

The page (no network: inline CSS, inline SVG, no script) holds the comparison tables with 95 % intervals and flags,
robust accuracy vs epsilon per attack and per model, the cascade (samples broken by each attack), the worst case,
noise curves and scores, every diagnostics flag with its evidence and the provenance; with ``--sweep`` also the
sweep's robustness matrices as heatmaps, and with ``--matrix`` those of the records given (your own models placed
with ``evaluate --grid-cell``). Rendered from the records only (:mod:`kwta_robust.html_report`).
``evaluate``, ``compare``, ``quickstart`` and ``sweep`` write the same report next to their records.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``report`` command's options."""
    parser.add_argument("records", nargs="*", metavar="RECORD", help="JSON records written by evaluate/compare")
    parser.add_argument("--sweep", metavar="DIR", help="a sweep's --out-dir: its cell records, matrices and heatmaps")
    parser.add_argument("--matrix", action="store_true",
                        help="place the RECORDs in robustness matrices with heatmaps, as a sweep's report shows them "
                             "(placed as table --matrix places them: your own models by evaluate --grid-cell)")
    parser.add_argument("--out", default="report.html", metavar="PATH",
                        help="the report file, its format by its suffix: .html or .htm the self-contained HTML page, "
                             ".md or .markdown its tables as Markdown; any other suffix is refused (default "
                             "report.html)")
    parser.add_argument("--title", default=None, help="the report's title (default: the models' or the sweep's name)")


def run(args: argparse.Namespace) -> int:
    """Write the HTML or Markdown report of records or of a sweep; returns the exit status."""
    from kwta_robust.errors import ConfigError
    from kwta_robust.html_sweep import load_sweep, records_as_sweep, sweep_inputs
    from kwta_robust.md_report import report_format, write_any_report
    from kwta_robust.record_checks import check_record
    from kwta_robust.record_flags import HarnessRevision
    from kwta_robust.results import load_records
    from kwta_robust.safe_paths import (REPORT_SUFFIXES, check_distinct, check_inputs_once, check_output_file,
                                        check_text_output)

    if not args.records and not args.sweep:
        raise ConfigError("report: give RECORD.json files and/or --sweep DIR")
    if args.matrix and (args.sweep or not args.records):
        raise ConfigError("--matrix: give the RECORD.json files to place in the matrices, without --sweep (a sweep's "
                          "report holds its matrices already)")
    out = check_output_file(args.out, "--out")
    inputs = {f"RECORD {p}": p for p in args.records}
    swept = sweep_inputs(args.sweep) if args.sweep else {}
    check_inputs_once([*swept.items(), *((f"RECORD {p}", p) for p in args.records)])
    check_distinct({"--out": out}, {**inputs, **swept})
    check_text_output(out, "report", REPORT_SUFFIXES, "--out")
    report_format(out, "--out")  # before anything is read or written: the suffix says the format, or it is refused
    records = load_records(args.records)
    harness = HarnessRevision()  # this package's commit, read (and git asked) once for every record read
    for path, record in zip(args.records, records):
        check_record(record, str(path), harness=harness)  # nothing contradictory rendered (partial records: badged)
    sweep = load_sweep(args.sweep, harness=harness) if args.sweep else None
    if args.matrix:  # the records as the cells of a sweep without a manifest: its matrices, heatmaps and curves
        sweep, records = records_as_sweep(records, args.records), []
    write_any_report(out, records, sweep=sweep, title=args.title)  # logs where it went
    return 0
