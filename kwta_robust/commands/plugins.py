"""``kwta-robust plugins [KIND...] [--json]``: every registered name of every plug-in kind (attacks, noise probes,
surrogates, architectures, data sets, diagnostics, pruning methods, table formats, sweep executors), where each came
from (built-in module, or a plug-in's distribution, version and entry point) and the plug-ins that were skipped and
why. The work is :func:`kwta_robust.plugins.listing`; this module parses and prints."""

from __future__ import annotations

import argparse
import json
import sys

from kwta_robust.plugins import KINDS


class _KindChoices(tuple):
    """The kinds, and the empty list argparse checks when no KIND is given (not shown in its error message)."""

    def __contains__(self, value: object) -> bool:
        return value == [] or super().__contains__(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``plugins`` command's options."""
    parser.add_argument("kinds", nargs="*", metavar="KIND", choices=_KindChoices(KINDS),
                        help=f"which kinds to list (default all): {', '.join(KINDS)}")
    parser.add_argument("--json", action="store_true", help="one JSON list of rows instead of text")


def run(args: argparse.Namespace) -> int:
    """Print the registered names of the chosen kinds; returns the exit status."""
    from kwta_robust.commands.console import output_only_stdout
    from kwta_robust.plugins import listing, origin_text

    kinds = list(dict.fromkeys(args.kinds)) or list(KINDS)
    with output_only_stdout():  # a plug-in writing to fd 1 at import leaves the listing (--json) as it is
        rows = listing(kinds)
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=1) + "\n")
        return 0
    for kind in kinds:
        sys.stdout.write(f"{kind} (entry point group {KINDS[kind].group}: {KINDS[kind].what})\n")
        mine = [r for r in rows if r["kind"] == kind]
        width = max((len(r["name"]) for r in mine), default=0)
        for row in mine:
            summary = f"{row['summary']}  " if row.get("summary") else ""
            sys.stdout.write(f"  {row['name']:<{width}}  {summary}[{origin_text(row)}]\n")
    return 0
