"""``kwta-robust diff A.json B.json``: are two evaluation records the same result?

Compares every field but the volatile ones (wall times, timestamps, the command line, a checkpoint's file path and
digest, the folder a sweep wrote a cell to: :mod:`kwta_robust.record_diff`) and prints each other field that
differs, with the reason where a provenance field explains it (another torch thread count, device or version), and
after the path, in words, the attack and threat point, noise probe, level and sample (its data set id) it is of:
``results[6].margins[0] (bpda-smooth, Linf 0.1; sample 0, data set id 209): 0.12 != 0.15``. The records' results,
sanity results, worst cases and noise probes are paired by key, not position
(:func:`~kwta_robust.record_diff.differences`).
Exit status 0 when the records are the same result, 1 when they differ, with a last line where no verdict did
(:func:`~kwta_robust.record_diff.verdicts_summary`; 2 for bad input, as every command: a file
that is no record, or a record that ``table`` refuses because it contradicts itself, in ``table``'s one line).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``diff`` command's options."""
    parser.add_argument("first", metavar="A.json", help="an evaluation record")
    parser.add_argument("second", metavar="B.json", help="another evaluation record (e.g. a rerun of the same config)")
    parser.add_argument("--limit", type=int, default=40, metavar="N", help="print at most N differences (default 40)")


def run(args: argparse.Namespace) -> int:
    """Print the differences of two records; returns 0 (the same result) or 1."""
    from kwta_robust.errors import ConfigError
    from kwta_robust.record_diff import cause, differences, probe_relabel, verdicts_summary
    from kwta_robust.record_checks import checked_record_data
    from kwta_robust.record_flags import HarnessRevision

    if args.limit < 1:
        raise ConfigError(f"--limit: must be >= 1, got {args.limit}")
    # each file read once; each refused in one line where ``table`` refuses it (a record that contradicts itself)
    harness = HarnessRevision()  # this package's commit, read (and git asked) once for both records
    parsed = [checked_record_data(path, harness) for path in (args.first, args.second)]
    found = differences(*parsed)
    if not found:
        print("same result: every field is identical but the volatile ones (wall times, timestamps, command line, "
              "checkpoint or --weights file path and digest, sweep cell folder, where the data sat)")
        return 0
    print(f"{len(found)} field(s) differ:")
    relabel, listed = probe_relabel(found)  # one line for a model of one's own named as its layer probe found it
    if relabel:
        print(f"  {relabel}")
    for difference in listed[: args.limit]:
        why = cause(difference.line)
        print(f"  {difference.labelled}" + (f"  ({why})" if why else ""))
    if len(listed) > args.limit:
        print(f"  ... and {len(listed) - args.limit} more (--limit)")
    summary = verdicts_summary(found)  # their paths: no line written for each to be split again
    if summary:
        print(summary)
    return 1
