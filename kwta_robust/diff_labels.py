"""Which entry a ``kwta-robust diff`` difference is in, in words, and the pairing of a record's entry lists by key.

A record's ``results`` and ``sanity`` (one :class:`~kwta_robust.results.AttackResult` per attack and threat point),
``worst_case`` (one per threat point) and ``noise`` (one per probe) are lists whose order carries no meaning: a
resumed run appends a unit it ran again at the end (``EvalRecord.put_result``), so two records of the same result
may list the same entries in another order. :func:`entry_pairs` pairs the entries of two such lists by the fields
that name one (:data:`ENTRY_KEYS`), and :func:`entries_words` / :func:`detail_words` name an entry and a place in it
(``bpda-smooth, Linf 0.1``; ``sample 3, data set id 209``: the position among the evaluated samples, ``[N]``
lists, and its index in the data set, ``dataset.indices``; ``level 0.15`` of a noise probe).
"""

from __future__ import annotations

import json
import re
from typing import Any, Sequence

from attacks.base import threat_text
from kwta_robust.noise_notes import kind_names

#: The record's entry lists and the fields that name an entry in them (the key of an attack's unit, a threat point,
#: a noise probe's kind): :func:`entry_pairs` pairs entries of equal keys.
ENTRY_KEYS: dict[str, tuple[str, ...]] = {"results": ("label", "norm", "eps"), "sanity": ("label", "norm", "eps"),
                                          "worst_case": ("norm", "eps"), "noise": ("kind",)}
#: Per-sample lists (``[N]``, in the order of ``dataset.indices``) of an entry (``""``: of the record itself).
SAMPLE_LISTS: dict[str, frozenset[str]] = {
    "": frozenset({"clean_flags", "clean_margins", "clean_error_rates"}),
    "results": frozenset({"flags", "margins", "error_rates"}), "sanity": frozenset({"flags", "margins", "error_rates"}),
    "worst_case": frozenset({"first_broken_by"}),
}
#: A noise probe's per-level lists (``[n_levels]``; ``draw_accuracy`` ``[n_levels, draws]``, ``correct_counts``
#: ``[n_levels, N]``: :class:`attacks.noise.NoiseProbeResult`) and what their second index counts.
LEVEL_LISTS: dict[str, str] = {"levels": "", "accuracy": "", "non_finite_inputs": "", "draw_accuracy": "draw",
                               "correct_counts": "sample"}


def entry_pairs(name: str, first: Sequence[Any], second: Sequence[Any]) -> list[tuple[int | None, int | None]]:
    """The entries of the two lists ``name`` (a key of :data:`ENTRY_KEYS`) paired by key, as ``(i, j)`` indices
    into ``first`` and ``second`` (``None``: that list lacks the entry): the first list's entries in its order, then
    those only the second holds, in its order. Lists with an entry that has no key, or a key twice, pair by position
    (an entry past the shorter list's end paired with ``None``)."""
    keys = [[_key(name, entry) for entry in items] for items in (first, second)]
    if any(None in found or len(set(found)) < len(found) for found in keys):
        longest = max(len(first), len(second))
        return [(i if i < len(first) else None, i if i < len(second) else None) for i in range(longest)]
    at = {key: j for j, key in enumerate(keys[1])}
    known = set(keys[0])
    return ([(i, at.get(key)) for i, key in enumerate(keys[0])]
            + [(None, j) for j, key in enumerate(keys[1]) if key not in known])


def entry_words(name: str, entry: Any) -> str:
    """The entry ``entry`` of the record's list ``name`` in words: an attack and its threat point (``bpda-smooth,
    Linf 0.1``), a threat point (``Linf 0.1``), a noise probe's kind; ``""`` where it names none."""
    if not isinstance(entry, dict):
        return ""
    eps = entry.get("eps_text") if isinstance(entry.get("eps_text"), str) else entry.get("eps")
    point = threat_text(entry["norm"], eps) if isinstance(entry.get("norm"), str) and isinstance(
        eps, (str, int, float)) and not isinstance(eps, bool) else ""
    if name in ("results", "sanity"):
        return ", ".join(str(part) for part in (entry.get("label"), point) if part)
    if name == "worst_case":
        return point
    return str(entry.get("kind") or "") if name == "noise" else ""


def entries_words(name: str, entries: Sequence[Any]) -> list[str]:
    """Per entry of the record's list ``name``, ``[entries]``, its :func:`entry_words`; a noise probe by the name
    every table gives it (:func:`~kwta_robust.noise_notes.kind_names`: ``noise numenta``, ``noise numenta [2]`` for
    the second of its kind in the record; it was the bare kind, which named two such probes alike)."""
    if name != "noise":
        return [entry_words(name, entry) for entry in entries]
    kinds = [entry.get("kind") if isinstance(entry, dict) else None for entry in entries]
    named = iter(kind_names([kind for kind in kinds if isinstance(kind, str) and kind]))
    return [next(named) if isinstance(kind, str) and kind else "" for kind in kinds]


def detail_words(name: str, entry: Any, rest: str, indices: Sequence[Any], other: Sequence[Any]) -> str:
    """Where in the entry (``entry`` of the list ``name``; ``""``: the record itself) the path ``rest`` below it
    is, in words: a sample (``sample 3, data set id 209``, its id from ``dataset.indices`` of the first record,
    ``indices``, and the second's, ``other``, where it differs) or a noise probe's level (``level 0.15``, with its
    draw or sample); ``""`` elsewhere."""
    inner = name == "noise" and rest.startswith(".result.")  # the probe's own result dict
    found = re.match(r"\.([A-Za-z_]+)\[(\d+)\](?:\[(\d+)\])?", rest[len(".result"):] if inner else
                     rest if name else "." + rest)
    if not found:
        return ""
    field, first, second = found.group(1), int(found.group(2)), found.group(3)
    if field in SAMPLE_LISTS.get(name, ()):
        return _sample(first, indices, other)
    probe = entry.get("result") if inner and isinstance(entry, dict) else entry
    if name != "noise" or not isinstance(probe, dict) or field not in LEVEL_LISTS:
        return ""
    levels = probe.get("levels") if isinstance(probe.get("levels"), list) else []
    level = f"level {levels[first]}" if first < len(levels) else f"level [{first}]"
    if second is None or not LEVEL_LISTS[field]:
        return level
    if LEVEL_LISTS[field] == "sample":
        return f"{level}, {_sample(int(second), indices, other)}"
    return f"{level}, draw {second}"


def _sample(i: int, indices: Sequence[Any], other: Sequence[Any]) -> str:
    """``sample i``, with its data set id in each record where they hold one."""
    ids = [found[i] if i < len(found) else None for found in (indices, other)]
    if ids[0] is None or ids[1] is None:
        known = ids[0] if ids[1] is None else ids[1]
        return f"sample {i}" if known is None else f"sample {i}, data set id {known}"
    if ids[0] == ids[1]:
        return f"sample {i}, data set id {ids[0]}"
    return f"sample {i}, data set id {ids[0]} in the first, {ids[1]} in the second"


def _key(name: str, entry: Any) -> tuple[str, ...] | None:
    """The fields that name ``entry`` (:data:`ENTRY_KEYS`), as JSON text (hashable whatever they hold), or
    ``None`` where it lacks one."""
    fields = ENTRY_KEYS[name]
    if not isinstance(entry, dict) or any(field not in entry for field in fields):
        return None
    return tuple(json.dumps(entry[field], sort_keys=True) for field in fields)
