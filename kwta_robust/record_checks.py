"""Consistency checks of an evaluation record before anything is rendered from it.

:func:`~kwta_robust.results.load_record` checks the schema (version, fields); a record can still contradict
itself after a hand edit, a merge or a bug: a stored accuracy that is not its counts, a flag outside
{-1, 0, 1}, a flag list of the wrong length, a worst case above one of its attacks. A table must not print such
numbers, so :func:`check_record` recomputes everything that is derived in a record from its per-sample data and
raises a one-line :class:`~kwta_robust.results.RecordError` naming the file, the entry and the contradiction.

Invariants (``n`` = number of evaluated samples; flags as in :mod:`kwta_robust.results`):

* ``status`` is ``complete`` or ``partial``; ``mode`` is ``cascade`` or ``independent``; ``ci_method`` and
  ``ci_level`` are ``wilson`` and 0.95 (the intervals below are checked as such, and the report names them);
* clean: ``len(clean_flags) == n``, flags in {0, 1}, ``correct`` = their sum; ``dataset.n`` and
  ``len(dataset.indices)`` equal ``n`` where present, and no index is listed twice; ``clean_margins``, where
  present, one number (or ``null``) per sample, ``<= 0`` exactly where the clean prediction was right (up to ties);
  ``clean_error_rates``, where present (several draws per verdict), one fraction in [0, 1] per sample;
* every accuracy: ``0 <= correct <= n``, ``accuracy == correct / n`` and the Wilson interval recomputed from the
  counts;
* every attack result: ``len(flags) == n``, flags in {-1, 0, 1}, a sample misclassified clean is never attacked
  (-1), ``robust.correct`` / ``n_attacked`` / ``n_broken`` are the counts of 1 / >= 0 / 0 flags, a known norm and
  a finite epsilon >= 0; its ``margins``, where present, one number (or ``null``) per sample, ``null`` where not
  attacked, ``<= 0`` where the sample survived and ``>= 0`` where it was broken; its ``error_rates``, where present,
  one fraction in [0, 1] per sample, ``null`` exactly where not attacked;
* every worst case: ``len(first_broken_by) == n``, values in [-2, number of attacks), -2 exactly where the clean
  prediction was wrong, ``robust.correct`` = the count of -1 (never broken), and no attack at that threat model
  leaves fewer samples robust than the worst case; the attacks it names are results at its threat model, and each
  sample's entry agrees with their flags (broken first by the attack it names, or by none);
* no two units of ``results`` (or of ``sanity``) share an attack label and threat point (a merge of two records);
* ``config`` hashes to ``config_hash`` (:func:`check_config_hash`: a config edited by hand is not the evaluation's);
* ``diagnostics`` holds the flags this package's checks raise from the record, where this version and commit wrote
  it (:func:`kwta_robust.record_flags.check_flags`: a flag deleted or added by hand).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from attacks.base import NORMS, threat_text
from kwta_robust.config_digest import matches_hash
from kwta_robust.errors import is_finite_number, is_whole_number
from kwta_robust.record_flags import HarnessRevision, check_flags
from kwta_robust.record_index import RecordIndex
from kwta_robust.record_sections import RESULT_RULES, check_fields, check_sections
from kwta_robust.record_values import shown, shown_text
from kwta_robust.results import (CI_LEVEL, CI_METHOD, Accuracy, AttackResult, EvalRecord, RecordError, parsed_record,
                                 wilson_interval)

STATUSES: tuple[str, ...] = ("complete", "partial")
MODES: tuple[str, ...] = ("cascade", "independent")
_TOLERANCE = 1e-6


def _close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= _TOLERANCE


def _check_accuracy(acc: Accuracy, n: int, where: str) -> None:
    if acc.n != n:
        raise RecordError(f"{where}: counts {acc.n} samples, the record has {n}")
    if not 0 <= acc.correct <= n:
        raise RecordError(f"{where}: correct = {acc.correct} is outside [0, {n}]")
    expected = acc.correct / n if n else math.nan
    if not _close(acc.accuracy, expected):
        raise RecordError(f"{where}: accuracy {acc.accuracy!r} contradicts its counts {acc.correct}/{n} "
                          f"({expected:.6g})")
    low, high = wilson_interval(acc.correct, n)
    if not (_close(acc.ci_low, low) and _close(acc.ci_high, high)):
        raise RecordError(f"{where}: 95% interval [{acc.ci_low!r}, {acc.ci_high!r}] is not the Wilson interval of "
                          f"{acc.correct}/{n} [{low:.6g}, {high:.6g}]")


# The per-sample checks run over every sample of every unit (10,000 samples x 20 units: 600,000 entries a record):
# each first tests the whole list at once (the types of its items, NumPy over its values) and only a list that fails
# goes through the loop that finds and names the first bad entry.
_NUMBER_TYPES = frozenset((int, float, type(None)))


def _ints_only(values: list) -> bool:
    """Every item an ``int`` (not a ``bool``), as ``isinstance`` tests it, one test per distinct type."""
    return all(t is not bool and issubclass(t, int) for t in set(map(type, values)))


def _numbers(values: list) -> np.ndarray | None:
    """``values`` (plain ints, floats and ``None``) as float64 with ``None`` as NaN, or ``None`` when an item is of
    another type, a NaN or infinite float, or an int beyond float range (the loops judge those)."""
    if not set(map(type, values)) <= _NUMBER_TYPES:
        return None
    try:
        arr = np.array(values, dtype=np.float64)
    except OverflowError:
        return None
    return arr if int(np.isnan(arr).sum()) == values.count(None) and not np.isinf(arr).any() else None


def _int_array(values: list[int]) -> np.ndarray:
    """A list of checked small integers (flags, first-broken indices) as int64 (``fromiter``: 3x ``asarray``)."""
    return np.fromiter(values, dtype=np.int64, count=len(values))


def _all_allowed(values: list[int], allowed: Sequence[int]) -> bool:
    """Every item of ``values`` is one of ``allowed``."""
    return set(values) <= set(allowed)


def _may_attack_wrong(flags: list[int], clean: list[int]) -> bool:
    """Some sample misclassified clean has a flag other than -1 (the loop names it)."""
    return bool(((_int_array(flags) != -1) & (_int_array(clean) != 1)).any())


def _may_mark_unattacked(margins: list, flags: list[int]) -> bool:
    """Some margin is a number where the flag says not attacked (the loop names it); checked margins only."""
    arr = _numbers(margins) if margins else None
    return arr is None or bool((~np.isnan(arr) & (_int_array(flags) == -1)).any())


def _first_broken_agrees(first: list[int], attacks: Sequence[str], results: Sequence[AttackResult],
                         by_label: dict[str, AttackResult]) -> bool:
    """Every sample credited to ``attacks[j]`` has flag 0 there, and none counted robust (-1) has flag 0 in any of
    ``results`` (``first`` in [-2, len(attacks)), every flag list as long as ``first``)."""
    n, breakers = len(first), _int_array(first)
    broken = np.array([_int_array(r.flags) for r in results]).reshape(len(results), n) == 0
    named = np.array([_int_array(by_label[a].flags) for a in attacks]).reshape(len(attacks), n) == 0
    credited = named[np.clip(breakers, 0, None), np.arange(n)] if len(attacks) else breakers < 0
    return not ((breakers >= 0) & ~credited).any() and not ((breakers == -1) & broken.any(axis=0)).any()


def _int_list(values: Any, n: int, allowed: Sequence[int], where: str) -> list[int]:
    if not isinstance(values, list) or not _ints_only(values):
        raise RecordError(f"{where}: expected a list of integers")
    if len(values) != n:
        raise RecordError(f"{where}: {len(values)} entries for {n} samples")
    if _all_allowed(values, allowed):
        return values
    bad = [v for v in values if v not in allowed]
    if bad:
        raise RecordError(f"{where}: value {bad[0]} is not one of {', '.join(map(str, allowed))}")
    return values


def _check_margins(margins: Any, clean: list[int], where: str, flags_name: str = "clean_flags") -> None:
    """Empty (a record written before margins were stored), or one margin per sample of the sign of its flag in
    ``clean`` (1: right / survived, 0: wrong / broken, any other: not checked)."""
    if not margins:
        return
    if not isinstance(margins, list) or len(margins) != len(clean):
        raise RecordError(f"{where}: expected one margin per sample ({len(clean)})")
    arr, flags = _numbers(margins), _int_array(clean)
    if arr is not None and not (((arr > 0) & (flags == 1)) | ((arr < 0) & (flags == 0))).any():
        return
    for i, (m, c) in enumerate(zip(margins, clean)):
        if m is None:
            continue
        if not is_finite_number(m):
            raise RecordError(f"{where}: entry {i} is not a finite number: {m!r}")
        if (m > 0 and c == 1) or (m < 0 and c == 0):
            raise RecordError(f"{where}: entry {i} ({m:g}) contradicts {flags_name} ({c})")


def _check_rates(rates: Any, flags: list[int], where: str) -> None:
    """Empty (one draw per verdict), or one fraction in [0, 1] per sample, ``null`` exactly where the flag is -1
    (not attacked; clean flags are never -1), and agreeing with the plurality verdict the flag records: a sample
    the plurality got wrong (flag 0) had at most half its draws right (rate >= 0.5), one it got right (flag 1) at
    least one (rate < 1; :mod:`attacks.verdicts`)."""
    if not rates:
        return
    if not isinstance(rates, list) or len(rates) != len(flags):
        raise RecordError(f"{where}: expected one error rate per sample ({len(flags)})")
    arr, verdict = _numbers(rates), _int_array(flags)
    if arr is not None:
        missing = np.isnan(arr)
        bad = (missing != (verdict == -1)) | (arr < 0) | (arr > 1) | ((verdict == 0) & (arr < 0.5)) | (
            (verdict == 1) & (arr >= 1))
        if not bad.any():
            return
    for i, (rate, flag) in enumerate(zip(rates, flags)):
        if rate is None and flag == -1:
            continue
        if rate is None or flag == -1:
            raise RecordError(f"{where}: entry {i} is {rate!r} but the sample was {'not ' * (flag == -1)}attacked")
        if not (is_finite_number(rate) and 0.0 <= rate <= 1.0):
            raise RecordError(f"{where}: entry {i} is not a fraction in [0, 1]: {rate!r}")
        if (flag == 0 and rate < 0.5) or (flag == 1 and rate >= 1.0):
            raise RecordError(f"{where}: entry {i} ({rate:g}) contradicts the verdict ({'right' if flag else 'wrong'}"
                              f"): a plurality verdict is wrong only at an error rate >= 0.5 and right only below 1")


def _threat(norm: Any, eps_text: Any) -> str:
    """The threat point of a result or worst case for a message (``Linf 0.1``), its norm and eps text cut to
    :data:`~kwta_robust.record_values.TEXT_WIDTH` characters (a hand-edited one may be any length)."""
    return threat_text(norm if norm in NORMS else shown_text(norm),
                       shown_text(eps_text) if isinstance(eps_text, str) else eps_text)


def _check_result(r: AttackResult, clean: list[int], n: int, where: str) -> None:
    check_fields(vars(r), RESULT_RULES, where)
    where = f"{where} ({shown_text(r.label)}, {_threat(r.norm, r.eps_text)})"
    if r.norm not in NORMS:
        raise RecordError(f"{where}: unknown norm {shown(r.norm)}")
    if not (is_finite_number(r.eps) and r.eps >= 0):
        raise RecordError(f"{where}: eps must be a finite number >= 0, got {shown(r.eps)}")
    flags = _int_list(r.flags, n, (-1, 0, 1), f"{where}: flags")
    attacked_wrong = [i for i, (f, c) in enumerate(zip(flags, clean)) if f != -1 and c != 1] if _may_attack_wrong(
        flags, clean) else []
    if attacked_wrong:
        raise RecordError(f"{where}: sample {attacked_wrong[0]} was misclassified clean but has flag "
                          f"{flags[attacked_wrong[0]]} (only -1, not attacked, is possible)")
    _check_accuracy(r.robust, n, f"{where}: robust")
    _check_margins(r.margins, flags, f"{where}: margins", "flags")
    not_attacked = [i for i, (m, f) in enumerate(zip(r.margins, flags)) if f == -1 and m is not None] if (
        _may_mark_unattacked(r.margins, flags)) else []
    if not_attacked:
        raise RecordError(f"{where}: margins: entry {not_attacked[0]} is a number but the sample was not attacked")
    _check_rates(r.error_rates, flags, f"{where}: error_rates")
    for name, value, count in (("robust.correct", r.robust.correct, flags.count(1)),
                               ("n_attacked", r.n_attacked, n - flags.count(-1)),
                               ("n_broken", r.n_broken, flags.count(0))):
        if value != count:
            raise RecordError(f"{where}: {name} = {value} but its flags count {count}")


def _check_first_broken(attacks: Sequence[str], first: list[int], results: Sequence[AttackResult], where: str) -> None:
    """The worst case against the results it was derived from: every attack it names is a result at its threat
    model, a sample it says ``attacks[j]`` broke first has flag 0 in that result, and one it says was never broken
    (-1) has flag 0 in none."""
    by_label = {r.label: r for r in results}
    missing = [a for a in attacks if a not in by_label]
    if missing:
        raise RecordError(f"{where}: attack {shown_text(missing[0], quoted=True)} is not among the results at this "
                          f"threat model ({', '.join(map(shown_text, by_label)) or 'none'})")
    if _first_broken_agrees(first, attacks, results, by_label):
        return
    for i, f in enumerate(first):
        if f >= 0 and by_label[attacks[f]].flags[i] != 0:
            raise RecordError(f"{where}: sample {i} is first broken by {shown_text(attacks[f], quoted=True)}, whose "
                              f"flag there is {by_label[attacks[f]].flags[i]}")
        breaker = next((r.label for r in results if r.flags[i] == 0), None) if f == -1 else None
        if breaker is not None:
            raise RecordError(f"{where}: sample {i} is counted robust but {shown_text(breaker, quoted=True)} broke it")


def check_config_hash(record: EvalRecord, source: str = "record") -> None:
    """Raise :class:`RecordError` (one line starting with ``source``) where ``record.config`` does not hash to its
    ``config_hash`` (:func:`kwta_robust.config_digest.matches_hash`): the config was edited by hand, its hash left
    as it was, so the numbers are not those of the config it shows."""
    if not matches_hash(record.config, record.config_hash):
        raise RecordError(f"{source}: config_hash does not match config: the record was edited; re-run the "
                          "evaluation")


def check_record(record: EvalRecord, source: str = "record", *, flags: bool = True,
                 harness: HarnessRevision | None = None) -> None:
    """Raise :class:`RecordError` (one line starting with ``source``) at the first contradiction in ``record``
    (its descriptive sections first: :func:`kwta_robust.record_sections.check_sections`); its diagnostics flags last
    (:func:`~kwta_robust.record_flags.check_flags`), unless ``flags`` is false (a resumed run raises them anew).
    ``harness``: the commit this package runs at, looked up once by a command checking several records
    (:class:`~kwta_robust.record_flags.HarnessRevision`; default: looked up for this record)."""
    check_sections(record, source)
    check_config_hash(record, source)
    if record.status not in STATUSES:
        raise RecordError(f"{source}: status {shown(record.status)} is not one of {', '.join(STATUSES)}")
    if record.mode not in MODES:
        raise RecordError(f"{source}: mode {shown(record.mode)} is not one of {', '.join(MODES)}")
    if (record.ci_method, record.ci_level) != (CI_METHOD, CI_LEVEL):  # the report prints these beside the intervals
        raise RecordError(f"{source}: ci_method {shown(record.ci_method)} / ci_level {record.ci_level!r} is not "
                          f"{CI_METHOD!r} / {CI_LEVEL}, the interval every accuracy is checked against; set them back")
    n = record.clean.n
    if not is_whole_number(n, 0):
        raise RecordError(f"{source}: clean.n must be an integer >= 0, got {shown(n)}")
    clean = _int_list(record.clean_flags, n, (0, 1), f"{source}: clean_flags")
    _check_accuracy(record.clean, n, f"{source}: clean")
    if record.clean.correct != sum(clean):
        raise RecordError(f"{source}: clean.correct = {record.clean.correct} but clean_flags count {sum(clean)}")
    _check_margins(record.clean_margins, clean, f"{source}: clean_margins")
    _check_rates(record.clean_error_rates, clean, f"{source}: clean_error_rates")
    if record.dataset.get("n", n) != n:
        raise RecordError(f"{source}: dataset.n = {shown(record.dataset.get('n'))} but {n} samples were evaluated")
    indices = record.dataset.get("indices")
    if indices is not None and (not isinstance(indices, list) or len(indices) != n):
        raise RecordError(f"{source}: dataset.indices must list the {n} evaluated samples")
    if indices is not None and len(set(indices)) != n:  # the HTML report names samples by them, resume compares them
        seen: dict[int, int] = {}
        j = next(j for j, index in enumerate(indices) if seen.setdefault(index, j) != j)
        raise RecordError(f"{source}: dataset.indices[{j}] = {indices[j]} repeats dataset.indices[{seen[indices[j]]}]; "
                          "each evaluated sample is listed once: restore the indices the evaluation wrote")
    for i, r in enumerate(record.results):
        _check_result(r, clean, n, f"{source}: results[{i}]")
    for i, r in enumerate(record.sanity):
        _check_result(r, clean, n, f"{source}: sanity[{i}]")
    for section, results in (("results", record.results), ("sanity", record.sanity)):
        seen: set[tuple[str, str, float]] = set()  # a merge of two records: which unit a table shows is a guess
        for r in results:
            if r.key in seen:
                raise RecordError(f"{source}: {section} hold two units of {shown_text(r.label, quoted=True)} at "
                                  f"{_threat(r.norm, r.eps_text)}; keep one of them")
            seen.add(r.key)
    index = RecordIndex(record)  # each worst case's attacks looked up, not the results scanned per worst case
    for i, w in enumerate(record.worst_case):
        where = f"{source}: worst_case[{i}] ({_threat(w.norm, w.eps_text)})"
        first = _int_list(w.first_broken_by, n, range(-2, len(w.attacks)), f"{where}: first_broken_by")
        if ((_int_array(first) == -2) != (_int_array(clean) == 0)).any():
            raise RecordError(f"{where}: first_broken_by marks misclassified samples (-2) unlike clean_flags")
        _check_accuracy(w.robust, n, f"{where}: robust")
        if w.robust.correct != first.count(-1):
            raise RecordError(f"{where}: robust.correct = {w.robust.correct} but {first.count(-1)} samples were "
                              "never broken")
        at = index.results_at(w.norm, w.eps)
        weaker = [r for r in at if r.robust.correct < w.robust.correct]
        if weaker:
            raise RecordError(f"{where}: {shown_text(weaker[0].label)} leaves {weaker[0].robust.correct} samples "
                              f"robust, fewer than the worst case ({w.robust.correct}); the worst case is a minimum "
                              "over attacks")
        _check_first_broken(w.attacks, first, at, where)
    if flags:
        check_flags(record, source, harness)


def checked_record_data(path: str | Path, harness: HarnessRevision | None = None) -> Any:
    """The parsed JSON of the record file at ``path``, read once, after the checks ``table`` and ``report`` run on it
    (:func:`~kwta_robust.results.load_record`, then :func:`check_record`, with the same one-line message): ``diff``
    compares this JSON, and a record that contradicts itself must not be called the same result as another."""
    data, record = parsed_record(path)
    check_record(record, str(path), harness=harness)  # str(path), not str(Path(path)): the source ``table`` names
    return data
