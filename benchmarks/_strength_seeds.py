"""Attack-seed sets for the strength benchmark (:mod:`benchmarks.bench_strength` ``--seeds N``).

The runner seeds each attack from the run's seed and the attack's **label** (:func:`kwta_robust.config.derive_seed`
with the label, the norm and eps; every batch then from its samples' ids). On 100 samples another attack seed moves a
suite's robust accuracy by several points (``benchmarks/STRENGTH.md``, third round), so one seed's
"1× − 10× ≤ 2 points" is at the resolution of the measurement. Seed set 0 is the suite as shipped; seed set
``i ≥ 1`` is the same suite with every label suffixed ``-s{i}`` — the same attacks, parameters, order and budget,
independent random starts — run on the same samples and checkpoints. A BPDA attack's inner attack (and each of its
temperature stages) is seeded from the BPDA attack's seed, so the suffix reseeds it too; a seed pinned in the
parameters (``params.seed``, ``inner_params.seed``: the runner's seed does not reach it) is re-derived from the pin
and the suffix, so no attack of a set ``i ≥ 1`` repeats set 0's random starts.

The aggregation works on the results file's cells: per cell the 1× robust accuracy (per-sample worst case over the
set's attacks, the clean-correct samples attacked in cascade) of every finished set, their mean and range, the mean
queries and CPU seconds, and the convergence gap ``mean(1×) − 10×`` computed exactly from the counts.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import Any, Sequence


def seed_suffix(seed_set: int) -> str:
    """The label suffix of seed set ``seed_set`` (``""`` for set 0, the suite as shipped)."""
    return f"-s{seed_set}" if seed_set else ""


def _reseed(params: dict, suffix: str) -> dict:
    """``params`` with a pinned ``seed`` (its own, or its inner attack's) re-derived from the pin and ``suffix``."""
    from kwta_robust.config import derive_seed

    out = dict(params)
    if "seed" in out:
        out["seed"] = derive_seed(int(out["seed"]), suffix)
    inner = out.get("inner_params")
    if isinstance(inner, dict) and "seed" in inner:
        out["inner_params"] = {**inner, "seed": derive_seed(int(inner["seed"]), suffix)}
    return out


def relabel(specs: Sequence[Any], seed_set: int) -> list:
    """The attack specs of seed set ``seed_set``: set 0 the specs as given (default labels assigned, as the runner
    assigns them: :func:`kwta_robust.specs.assign_labels`); set ``i ≥ 1`` every label suffixed ``-s{i}`` and pinned
    seeds re-derived (module docstring). Labels stay unique (the same suffix on unique labels)."""
    from kwta_robust.specs import assign_labels

    if seed_set < 0:
        raise ValueError(f"seed_set: expected an integer >= 0, got {seed_set}")
    labelled = assign_labels(list(specs))
    if seed_set == 0:
        return labelled
    suffix = seed_suffix(seed_set)
    return [dataclasses.replace(s, label=s.label + suffix, params=_reseed(s.params, suffix)) for s in labelled]


def seed_entries(cell: dict) -> list[dict]:
    """The finished 1× runs of a cell, seed set 0 (``levels["1"]``) first, then ``seed_sets`` by number."""
    entries = [cell["levels"].get("1", {})] + [cell.get("seed_sets", {})[k]
                                               for k in sorted(cell.get("seed_sets", {}), key=int)]
    return [e for e in entries if e.get("complete")]


def still_robust(clean: Sequence[int], attacks: Sequence[dict]) -> list[bool]:
    """Per sample: clean-correct and left robust by every one of ``attacks`` (their stored per-sample flags: ``0``
    broken, ``1`` robust, ``-1`` not attacked)."""
    broken = {i for a in attacks for i, f in enumerate(a["flags"]) if f == 0}
    return [bool(c) and i not in broken for i, c in enumerate(clean)]


def robust_count(clean: Sequence[int], attacks: Sequence[dict]) -> int:
    """How many samples :func:`still_robust` keeps."""
    return sum(still_robust(clean, attacks))


def seed_summary(cell: dict) -> dict | None:
    """The 1× level over the cell's finished seed sets: ``seeds`` (how many), ``counts`` (robust samples per set),
    ``mean``/``min``/``max`` robust fraction, mean ``queries`` and ``cpu_s`` per set. ``None`` when set 0 has not
    finished (the other sets are then not comparable to the 3×/10× run)."""
    if not cell["levels"].get("1", {}).get("complete"):
        return None
    entries, n = seed_entries(cell), len(cell["clean"])
    counts = [robust_count(cell["clean"], e["attacks"]) for e in entries]
    k = len(entries)
    return {"seeds": k, "counts": counts, "n": n, "mean": sum(counts) / (k * n), "min": min(counts) / n,
            "max": max(counts) / n, "queries": sum(a["queries"] for e in entries for a in e["attacks"]) / k,
            "cpu_s": sum(a["cpu_s"] for e in entries for a in e["attacks"]) / k}


def gap_points(counts: Sequence[int], top_count: int, n: int) -> Fraction:
    """``mean(1×) − 10×`` in points of robust accuracy, exact (no float rounding decides a verdict at the edge)."""
    return (Fraction(sum(counts), len(counts)) - top_count) * Fraction(100, n)


def points(fraction: float) -> str:
    """A fraction in percentage points, to a tenth of a point (one sample of 200 is half a point: ``5.5``, not
    ``5``; ``16``, not ``16.0``)."""
    return f"{round(100 * fraction, 1):g}"


def robust_text(summary: dict) -> str:
    """A 1× robust cell over several seeds: mean and range, e.g. ``18.2% (16–20)``."""
    return f"{100 * summary['mean']:.1f}% ({points(summary['min'])}–{points(summary['max'])})"


def legend(seeds: Sequence[int]) -> list[str]:
    """The table's legend lines when a row has more than one seed set (``seeds``: the count of every row)."""
    fewest, most = min(seeds), max(seeds)
    return [
        f"* 1×: {most if fewest == most else f'{fewest}–{most}'} attack seeds per row (seed set 0: the suite as "
        "shipped; set i: every label suffixed -s{i}, which reseeds the attack, BPDA's inner attack included), on the "
        "same samples and checkpoints — robust is the mean over seeds (min–max), queries and CPU s the mean per seed.",
        "* 3× and 10×: one run with the shipped labels (they are expensive), in cascade after seed set 0's 1× (the "
        "worst case with it); 1× − 10× is mean(1×) − 10×, converged when at most 2 points; the budget check runs on "
        "seed set 0.",
    ]
