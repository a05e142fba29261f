"""The notes a command-line override adds to a config's ``description``, which names the config's data set and
count ("200 mnist5k images") and is not hashed: ``--n-examples`` (:meth:`kwta_robust.config.EvalConfig.with_overrides`)
and ``--data FILE`` (:func:`kwta_robust.datafile.with_data_file`) make it untrue, so the record and the reports say
what ran instead."""

from __future__ import annotations

import re

#: The note :meth:`EvalConfig.with_overrides` adds to a description when ``n_examples`` is overridden (by the CLI's
#: ``--n-examples``, or by the Python API's ``n_examples=``).
N_EXAMPLES_NOTE = re.compile(r" \(run on [^()]* examples: (--n-examples|n_examples)\)$")
#: The note :func:`~kwta_robust.datafile.with_data_file` adds when ``--data FILE`` replaces the config's data set.
#: Without the file's name: the record's ``dataset`` names the file, and a renamed copy (the same sha256) is the same
#: evaluation, which ``kwta-robust diff`` would list as a changed description.
DATA_NOTE = re.compile(r" \(data from --data FILE\)$")


def noted_description(description: str, *, n_examples: int | None = None, data_file: bool = False,
                       source: str = "--n-examples") -> str:
    """``description`` (a config's: it names the config's data set and count, "200 mnist5k images") with the notes
    of the overrides that made it untrue, each in place of such a note from an earlier override (a record's config
    re-run): ``(run on N examples: --n-examples)`` (``source``: what gave the count, the flag or the Python API's
    ``n_examples``), then ``(data from --data FILE)`` (``data_file``). An empty one
    stays empty."""
    base, notes = description, {}
    while match := DATA_NOTE.search(base) or N_EXAMPLES_NOTE.search(base):
        notes.setdefault("data" if match.re is DATA_NOTE else "n", match.group(0))
        base = base[:match.start()]
    if not base:
        return description
    if n_examples is not None:
        notes["n"] = f" (run on {n_examples} examples: {source})"
    if data_file:
        notes["data"] = " (data from --data FILE)"
    return base + notes.get("n", "") + notes.get("data", "")
