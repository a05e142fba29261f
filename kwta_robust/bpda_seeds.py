"""Stage seeds of the BPDA attacks of one suite, and the config check's warning when two of them share some.

A BPDA attack (:class:`attacks.bpda.BPDA`) of seed ``s`` runs stage ``i`` of its temperature schedule with
inner-attack seed ``b + i`` (``b``: ``inner_params.seed``, else ``s``) and draws that stage's per-step temperatures
from seed ``s + i``. The runner gives every attack a seed derived from the config's seed, its label, the threat
point and each batch's samples (:mod:`kwta_robust.attack_plan`), so the stage seeds of two attacks practically never
meet; a ``seed`` written in an attack's ``params`` (or ``inner_params``) replaces that, and two BPDA attacks given
seeds ``s`` and ``s + 1`` share stage seeds (stage 1 of the first draws as stage 0 of the second). The derivation
stays as it is (changing it moves every BPDA number); :func:`warn_overlapping_stage_seeds` says so in one line.

A plain attack (not BPDA) with an explicit ``seed`` seeds its own generator with it (PGD: its random start, APGD:
its start and ODI directions, EOT: its start and the model's noise, Square: its search): an attack of the same
registry name as a BPDA stage's inner attack (``inner``, or that stage's ``stage_params[i].inner``) given that
stage's inner-attack seed makes the very same draws (a plain ``pgd`` of seed ``s + 1`` beside a BPDA of seed ``s``
over ``pgd``: stage 1's random start), so the warning names that pair too. An attack of another name uses its
generator otherwise (APGD's start is not PGD's, nor drawn in the same order), and the temperature stream (a CPU
generator's log-uniform temperature per gradient evaluation) has no counterpart in a plain attack: neither is
compared. The check reads names and seeds only, not whether the attack draws anything with that seed (an attack
that draws nothing, e.g. FGSM, or PGD with ``random_start: false``, shares no random number).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from attacks.base import attack_defaults
from attacks.errors import SEED_LIMIT

logger = logging.getLogger(__name__)

#: The two seeded streams of a BPDA stage: its inner attack's and its per-step temperature draws'.
STREAMS: tuple[str, ...] = ("inner-attack", "temperature")


def stage_count(params: Mapping[str, Any]) -> int:
    """Stages of a BPDA attack of ``params``: one per ``temperature_schedule`` entry, else one."""
    schedule = params.get("temperature_schedule")
    return len(schedule) if isinstance(schedule, Sequence) and not isinstance(schedule, str) and schedule else 1


def explicit_stage_seeds(params: Mapping[str, Any]) -> dict[str, list[int]]:
    """The stage seeds a BPDA attack's ``params`` fix, per stream of :data:`STREAMS` (``inner-attack``: ``b + i``
    for stage ``i``, modulo :data:`~attacks.errors.SEED_LIMIT` as BPDA takes them; ``temperature``: ``s + i``);
    a stream whose seed the config leaves to the runner is absent."""
    n = stage_count(params)
    inner = params.get("inner_params")
    inner_seed = inner.get("seed") if isinstance(inner, Mapping) else None
    base = params.get("seed") if inner_seed is None else inner_seed
    out: dict[str, list[int]] = {}
    if isinstance(base, int) and not isinstance(base, bool):
        out["inner-attack"] = [(base + i) % SEED_LIMIT for i in range(n)]
    seed = params.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        out["temperature"] = [seed + i for i in range(n)]
    return out


def stage_inner_attacks(params: Mapping[str, Any], stages: int | None = None) -> list[str]:
    """The inner attack's registry name per stage of a BPDA attack of ``params`` (``stages`` of them, default
    :func:`stage_count`): the stage's ``stage_params[i].inner`` where given, else ``inner`` (default BPDA's own,
    ``pgd``: :func:`attacks.base.attack_defaults`); the budget check's scaling reads them too
    (:mod:`kwta_robust.budget_scale`)."""
    inner = params.get("inner") or attack_defaults("bpda")["inner"]
    entries = params.get("stage_params")
    entries = entries if isinstance(entries, Sequence) and not isinstance(entries, str) else []
    return [str((entries[i].get("inner") if i < len(entries) and isinstance(entries[i], Mapping) else None) or inner)
            for i in range(stage_count(params) if stages is None else stages)]


def plain_attack_seed(spec: Any) -> int | None:
    """The explicit ``seed`` in the ``params`` of a plain (not BPDA) attack ``spec``, modulo
    :data:`~attacks.errors.SEED_LIMIT` as BPDA's stage seeds; ``None`` where the runner derives it."""
    seed = spec.params.get("seed")
    return None if spec.attack == "bpda" or not isinstance(seed, int) or isinstance(seed, bool) else seed % SEED_LIMIT


def overlapping_stage_seeds(specs: Sequence[Any]) -> list[str]:
    """One sentence per pair of BPDA attacks (``AttackSpec``: ``attack``, ``label``, ``params``) whose explicit
    stage seeds (:func:`explicit_stage_seeds`) share a value in one stream, naming the stages that share it; then one
    per plain attack with an explicit seed and BPDA attack one of whose stages runs an inner attack of the same name
    with that seed (the module docstring: the same generator's draws)."""
    seeds = [(spec.label or spec.attack, explicit_stage_seeds(spec.params)) for spec in specs if spec.attack == "bpda"]
    found = _bpda_pairs(seeds)
    bpdas = [(spec.label or spec.attack, stage_inner_attacks(spec.params), explicit_stage_seeds(spec.params))
             for spec in specs if spec.attack == "bpda"]
    for spec in specs:
        seed = plain_attack_seed(spec)
        for label, names, own in bpdas if seed is not None else ():
            stage = next((i for i, (name, s) in enumerate(zip(names, own.get("inner-attack", ())))
                          if name == spec.attack and s == seed), None)
            if stage is not None:
                found.append(f"{spec.label or spec.attack!r} and {label!r} stage {stage} (its inner {spec.attack!r}) "
                             f"both take seed {seed}")
    return found


def _bpda_pairs(seeds: Sequence[tuple[str, Mapping[str, list[int]]]]) -> list[str]:
    """The sentences of :func:`overlapping_stage_seeds` for pairs of BPDA attacks (label, explicit stage seeds)."""
    found = []
    for i, (first, own) in enumerate(seeds):
        for second, other in seeds[i + 1:]:
            for stream in STREAMS:
                shared = sorted(set(own.get(stream, ())) & set(other.get(stream, ())))
                if shared:
                    seed = shared[0]
                    found.append(f"{first!r} stage {own[stream].index(seed)} and {second!r} stage "
                                 f"{other[stream].index(seed)} both take {stream} seed {seed}")
    return found


def warn_overlapping_stage_seeds(specs: Sequence[Any]) -> None:
    """One ``logging.warning`` line when two BPDA attacks of a suite share stage seeds, or a plain attack shares one
    with a BPDA stage's inner attack of its name (their numbers then draw the same random streams in those stages,
    not independent ones): which attacks, stages and seed, and the fix."""
    found = overlapping_stage_seeds(specs)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        logger.warning("attacks: BPDA stage i runs with seed + i, so %s%s: those stages draw the same random numbers; "
                       "give the attacks seeds at least their stage count apart, or leave seed out (the runner derives "
                       "one per attack)", found[0], more)
