"""Stage seeds of the BPDA attacks of one suite, and the config check's warning when two of them share some.

A BPDA attack (:class:`attacks.bpda.BPDA`) of seed ``s`` runs stage ``i`` of its temperature schedule with
inner-attack seed ``b + i`` (``b``: ``inner_params.seed``, else ``s``) and draws that stage's per-step temperatures
from seed ``s + i``. The runner gives every attack a seed derived from the config's seed, its label, the threat
point and each batch's samples (:mod:`kwta_robust.attack_plan`), so the stage seeds of two attacks practically never
meet; a ``seed`` written in an attack's ``params`` (or ``inner_params``) replaces that, and two BPDA attacks given
seeds ``s`` and ``s + 1`` share stage seeds (stage 1 of the first draws as stage 0 of the second). The derivation
stays as it is (changing it moves every BPDA number); :func:`warn_overlapping_stage_seeds` says so in one line, once
per command.

What each seed feeds is what the attacks declare where they register (:mod:`attacks.seed_draws`,
``register_attack(..., draws=...)``): the inner-attack seed feeds the stage's inner attack — PGD's random start (none
with ``random_start: false``), APGD's start on the sphere (always), EOT's start (without it: a randomized model's
noise, from the global generators of :func:`attacks.rng.rng_scope`), FAB's restarts after the first (none with
``restarts: 1``); FGSM, CW and DeepFool draw nothing (they take ``seed`` for the common interface), and an inner attack
without a ``seed`` parameter is given none. An attack that declares nothing (a plug-in) counts as drawing, its first
draw named after itself. The temperature seed feeds draws only in a stage of ``{log_uniform: [lo, hi]}`` (a fixed or
cycled temperature draws nothing). A shared seed is named only where both stages draw from it
(:func:`draws_from_seed`, :func:`stage_draws`): two BPDA attacks of seeds ``s`` and ``s + 1`` over PGD without random
start and at fixed temperatures share no random number. Two BPDA attacks of the very same seed are named whatever
their stages draw: BPDA's seed itself seeds its surrogate fits (``learned``, ``model``) and, for the whole attack, the
global generators a randomized model draws its noise from.

The inner-attack seeds of two BPDA stages are compared where their inner attacks draw first alike
(:func:`stages_alike`): the same attack, the same declared first draw, or one that declares nothing (its draws
unknown). The seeded starts are alike (PGD's ``x + eps (2u - 1)``, APGD's ``x + eps t / ||t||_inf`` with ``t = 2u -
1``, FAB's second restart and EOT's start all take ``u = torch.rand(x.shape)`` as their first draw; in L2 the same
``torch.randn`` direction), so a PGD stage and an APGD stage of one seed on the same samples start from the same
noise, up to a per-sample scale; an EOT stage without random start draws a randomized model's noise instead.

A plain attack (not BPDA) with an explicit ``seed`` seeds its own generator with it: an attack given a BPDA stage's
inner-attack seed whose first draw is alike (:func:`first_draw`: the same registry name as the stage's inner attack,
``inner`` or that stage's ``stage_params[i].inner``, or the same declared first draw) makes the same draws (a plain
``pgd`` of seed ``s + 1`` beside a BPDA of seed ``s`` over ``pgd``: stage 1's random start; a plain ``apgd-ce`` of
seed ``s + 1`` starts from that same noise, on the sphere; a ``transfer`` attack of seed ``s + 1`` over ``pgd`` draws
PGD's start), so the warning names that pair too, where both draw. The temperature stream (a CPU generator's
log-uniform temperature per gradient evaluation) has no counterpart in a plain attack.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from attacks.base import REGISTRY, attack_defaults, attack_info
from attacks.errors import SEED_LIMIT
from attacks.seed_draws import first_draw_of

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


def draws_from_seed(name: str, params: Mapping[str, Any]) -> bool:
    """Whether the attack ``name`` given ``params`` draws random numbers from its ``seed`` (the module docstring):
    not where it takes no ``seed`` or its registration declares it draws nothing (:mod:`attacks.seed_draws`: FGSM,
    CW, DeepFool, PGD without ``random_start``, FAB with one restart); every other attack, one not registered here or
    registered without a declaration (a plug-in) included, counts as drawing."""
    if name not in REGISTRY:
        return True
    return "seed" in {**attack_defaults(name), **params} and first_draw_of(name, params) is not None


def first_draw(name: str, params: Mapping[str, Any]) -> str:
    """What the attack ``name`` given ``params`` draws first from its ``seed``, as its registration declares
    (:func:`attacks.seed_draws.first_draw_of`: ``"random start"`` for PGD, APGD, EOT and gradient estimation starting
    at random and FAB's restarts after the first); its own name where it declares nothing, draws nothing or is not
    registered here (its draws are alike only another attack of that name's)."""
    drawn = first_draw_of(name, params) if name in REGISTRY else None
    return name if drawn is None else drawn


def stages_alike(first: tuple[str, Mapping[str, Any]], second: tuple[str, Mapping[str, Any]]) -> bool:
    """Whether two BPDA stages' inner attacks (name, parameters) draw first alike from one seed: the same attack, one
    registered without a declaration (its draws unknown, compared as every stage was before the declarations), or
    the same declared :func:`first_draw` (not an EOT stage without random start, a randomized model's noise, beside a
    PGD stage's random start)."""
    (a, given_a), (b, given_b) = first, second
    declared = all(name in REGISTRY and attack_info(name).draws is not None for name in (a, b))
    return a == b or not declared or first_draw(a, given_a) == first_draw(b, given_b)


def _stages(params: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Per stage of a BPDA attack of ``params``, its inner attack's name and the parameters it is given
    (``inner_params`` with the stage's ``stage_params`` entry on top)."""
    names = stage_inner_attacks(params)
    inner = params.get("inner_params")
    inner = inner if isinstance(inner, Mapping) else {}
    entries = params.get("stage_params")
    entries = entries if isinstance(entries, Sequence) and not isinstance(entries, str) else []
    return [(name, {**inner, **(entries[i] if i < len(entries) and isinstance(entries[i], Mapping) else {})})
            for i, name in enumerate(names)]


def stage_draws(params: Mapping[str, Any]) -> dict[str, list[bool]]:
    """Per stream of :data:`STREAMS`, whether each stage of a BPDA attack of ``params`` draws from that stream's
    seed: ``inner-attack``, its inner attack given ``inner_params`` and the stage's ``stage_params`` entry
    (:func:`draws_from_seed`); ``temperature``, a ``{log_uniform: [lo, hi]}`` entry of ``temperature_schedule``."""
    stages = _stages(params)
    schedule = params.get("temperature_schedule")
    schedule = schedule if isinstance(schedule, Sequence) and not isinstance(schedule, str) else []
    return {"inner-attack": [draws_from_seed(name, given) for name, given in stages],
            "temperature": [i < len(schedule) and isinstance(schedule[i], Mapping) for i in range(len(stages))]}


def plain_attack_seed(spec: Any) -> int | None:
    """The explicit ``seed`` in the ``params`` of a plain (not BPDA) attack ``spec``, modulo
    :data:`~attacks.errors.SEED_LIMIT` as BPDA's stage seeds; ``None`` where the runner derives it."""
    seed = spec.params.get("seed")
    return None if spec.attack == "bpda" or not isinstance(seed, int) or isinstance(seed, bool) else seed % SEED_LIMIT


def overlapping_stage_seeds(specs: Sequence[Any]) -> list[str]:
    """One sentence per pair of BPDA attacks (``AttackSpec``: ``attack``, ``label``, ``params``) of one explicit
    ``seed``, or whose explicit stage seeds (:func:`explicit_stage_seeds`) share a value in one stream where both
    stages draw from it (:func:`stage_draws`; inner-attack seeds where both draw first alike, :func:`stages_alike`),
    naming the stages that share it; then one per plain attack with an
    explicit seed that it draws from and BPDA attack one of whose stages runs an inner attack with that seed, draws
    from it and draws first alike (:func:`first_draw`; the module docstring: the same generator's draws)."""
    bpdas = [(spec.label or spec.attack, spec.params) for spec in specs if spec.attack == "bpda"]
    found = _bpda_pairs(bpdas)
    for spec in specs:
        seed = plain_attack_seed(spec)
        for label, params in bpdas if seed is not None and draws_from_seed(spec.attack, spec.params) else ():
            stage = _drawn(params).get("inner-attack", {}).get(seed)
            if stage is None:
                continue
            name, given = _stages(params)[stage]
            if name == spec.attack:
                found.append(f"{spec.label or spec.attack!r} and {label!r} stage {stage} (its inner {name!r}) "
                             f"both take seed {seed}")
            elif (draw := first_draw(name, given)) == first_draw(spec.attack, spec.params):
                found.append(f"{spec.label or spec.attack!r} and {label!r} stage {stage} (its inner {name!r}, whose "
                             f"seeded {draw} is drawn alike) both take seed {seed}")
    return found


def _drawn(params: Mapping[str, Any]) -> dict[str, dict[int, int]]:
    """Per stream, the explicit stage seeds of a BPDA attack of ``params`` that a stage draws from, each with its
    first such stage."""
    seeds, draws = explicit_stage_seeds(params), stage_draws(params)
    out: dict[str, dict[int, int]] = {}
    for stream, values in seeds.items():
        out[stream] = {}
        for stage, (seed, drawing) in enumerate(zip(values, draws[stream])):
            if drawing:
                out[stream].setdefault(seed, stage)
    return out


def _bpda_pairs(bpdas: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """The sentences of :func:`overlapping_stage_seeds` for pairs of BPDA attacks (label, params)."""
    found = []
    drawn, stages = [_drawn(params) for _, params in bpdas], [_stages(params) for _, params in bpdas]
    for i, (first, params) in enumerate(bpdas):
        for j in range(i + 1, len(bpdas)):
            second, seed = bpdas[j][0], params.get("seed")
            if isinstance(seed, int) and not isinstance(seed, bool) and bpdas[j][1].get("seed") == seed:
                found.append(f"{first!r} and {second!r} both take seed {seed} (every stage; BPDA's seed also seeds "
                             "its surrogate fits and a randomized model's noise)")
                continue
            for stream in STREAMS:
                own, other = drawn[i].get(stream, {}), drawn[j].get(stream, {})
                shared = [value for value in sorted(set(own) & set(other)) if stream != "inner-attack"
                          or stages_alike(stages[i][own[value]], stages[j][other[value]])]
                if shared:
                    found.append(f"{first!r} stage {own[shared[0]]} and {second!r} stage {other[shared[0]]} both "
                                 f"take {stream} seed {shared[0]}")
    return found


def warn_overlapping_stage_seeds(specs: Sequence[Any]) -> None:
    """One ``logging.warning`` line when two BPDA attacks of a suite share stage seeds, or a plain attack shares one
    with a BPDA stage's inner attack that draws first alike, where both draw from it (their numbers then draw the same
    random streams in those stages, not independent ones): which attacks, stages and seed, and the fix. Called once per
    command, where a config is read (:func:`kwta_robust.config.warn_seed_overlaps`), not by the config's
    validation, which re-runs at every override and in every worker."""
    found = overlapping_stage_seeds(specs)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        logger.warning("attacks: BPDA stage i runs with seed + i, so %s%s: those stages draw the same random numbers; "
                       "give the attacks seeds at least their stage count apart, or leave seed out (the runner derives "
                       "one per attack)", found[0], more)
