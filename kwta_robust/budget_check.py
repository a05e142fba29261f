"""The ``budget-still-lowering`` check on the user's own run: re-attack a sample of the survivors at a larger budget.

A robust accuracy is an upper bound only as good as the attack budget behind it (Carlini et al. 2019, "On
Evaluating Adversarial Robustness", §5.1: "verify that more iterations do not increase attack success"; Tramèr et
al., NeurIPS 2020). A suite listing the same attack at growing budgets shows it directly
(:func:`kwta_robust.diagnostics.check_budget_ladder`); this check makes the same test on any run, cheaply. After the
suite, at every threat point, it

1. ranks the attacks that ran by **family** (``kind``: white-box, BPDA, adaptive, black-box) and strength (the
   fraction of the samples each attacked that it broke: in a cascade, raw counts would favour the first attack,
   which takes the easy samples), and takes the strongest attack of each of the ``attacks`` strongest families
   (transfer attacks, single-step attacks and attacks without a budget are left out);
2. scales its budget by ``factor`` (:func:`scale_budget`: ``steps`` — BPDA: its inner attack's, or its
   ``stage_steps`` —, gradient estimation's noise samples per step, Square's queries, EOT's draws per gradient) and
   gives it a fresh seed (a new random start);
3. runs it on ``m`` of the suite's ``S`` survivors: at least ``min_samples`` (all, if fewer; by default four
   times the kills a flag needs on the run's ``n`` samples, :func:`floor_samples`) and, within ``max_cost``
   times the queries the suite spent at that threat point, up to ``samples`` (:func:`plan_reruns`).
   ``h = floor(closest · m)`` of them (``closest``: 0.75 by default) are the survivors the suite **came closest to
   breaking** — the largest margin ``max_{j≠y} z_j − z_y`` any attack at that threat point reached on them (each
   attack's ``margins``, which the runner measures when it re-classifies the attack's output;
   :func:`closest_approach`; ties to the larger error rate of a randomized model's verdicts, then to the lower index)
   —, the other ``m − h`` a seeded random sample of the rest.
   A larger budget breaks first what the attacks nearly broke (on the strength benchmark's kWTA CNNs, mostly the
   largest attack margins, ``benchmarks/STRENGTH.md``, twelfth round); the random part keeps the extrapolation
   honest (a smaller ``closest`` extrapolates from more random survivors). A record without attack margins ranks
   by the clean margin (``clean_margins``), one without either samples all ``m`` at random;
4. bounds the drop: of the ``h`` closest ``k_c`` broken, of the ``m − h`` random ones ``k_r`` → robust accuracy
   lower by about ``(k_c + k_r / (m − h) · (S − h)) / n``, and by at least ``(k_c + R_L) / n``, the messages'
   "97.5% lower confidence bound": ``R_L`` (:func:`kills_lower_bound`) is the exact one-sided 97.5 % lower bound
   of the kills among the ``S − h`` survivors the random part was drawn from without replacement (hypergeometric;
   at least ``k_r``, its verified kills). The closest ``h`` are a census of their stratum (stratified sampling),
   so their ``k_c`` kills carry no sampling error; only the unsampled survivors are extrapolated, and only from
   the random part. The lower end of a Wilson interval of ``k_r / (m − h)``, used before, covered about 84 % at
   one random kill (Brown, Cai & DasGupta 2001) and, ignoring the finite population, less near a census;
   this bound covers at least 97.5 % on every ``S``, ``m``, ``h`` and true kill count.

``budget-still-lowering`` (warning) is raised when that lower bound reaches the config's ``ladder_margin`` (the same
threshold as the ladder check) and ``k >= max(min_count, 1)``; its message names the attack, the budget used, the
numbers and the budget to run instead. When it is not raised but the estimate reaches ``ladder_margin`` (a kill
among few random survivors extrapolates to many), the verdict is *inconclusive*. With at most ``samples`` survivors
the check settles it (:func:`_settle`): the same attack, budget and seed re-attack the survivors the sample left
out, and the kills of both are judged together — nothing is extrapolated, the bound is the verified kills; the
evidence keeps the first sample (``first_sample``). With more survivors the info flag ``budget-inconclusive`` says
what would decide it: re-attacking every survivor (``min_samples``), at the cost it states. Otherwise the info flag
``budget-checked`` records that the check ran and passed; a pass is weak evidence of convergence (on the strength
benchmark's unconverged 100-image runs it flagged 57 of 105, at 200 images 17 of 30 with its floor of 16 where a
fixed 8 flagged 9, ``benchmarks/STRENGTH.md`` seventeenth round). The evidence holds the extra run: attack, label,
scaled parameters, seed, floor, sampled indices and those broken, queries, the estimate, its bound, ``inconclusive``.

**Documented choice:** the headline worst case stays the configured suite's (mixing two budgets in one number no
config reproduces); the flag says by how much a larger budget lowers it and which budget to raise, and the tables'
notes give the lowest robust accuracy its verified kills prove (:func:`kwta_robust.report.budget_check_notes`).
Everything is seeded (``derive_seed(seed, "budget-check", label, norm, eps)``) and reproducible.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from attacks.base import threat_text
from kwta_robust.attack_plan import model_rng_seed
from kwta_robust.budget_scale import scale_budget
from kwta_robust.config import derive_seed
from kwta_robust.diagnostics import INFO, WARNING, Thresholds
from kwta_robust.errors import KwtaRobustError
from kwta_robust.numbers import lower_bound_percent_text, percent_text
from kwta_robust.randomness import record_draws, record_randomized
from kwta_robust.record_index import RecordIndex
from kwta_robust.record_values import shown_text
from kwta_robust.rerun_jobs import BatchRunner, RerunBatch, run_rerun_batch
from kwta_robust.results import AttackResult, EvalRecord, Flag
from kwta_robust.specs import BudgetCheckSpec, DiagnosticsSpec

logger = logging.getLogger(__name__)

CODE, CHECKED, INCONCLUSIVE = "budget-still-lowering", "budget-checked", "budget-inconclusive"
#: ``cut(plan, norm, eps, seed)``: the re-run batches of one extra run (:func:`rerun_batches`, partially applied).
BatchCutter = Callable[["PlannedRerun", str, float, int], list[RerunBatch]]
#: Per threat point ``(norm, eps, planned extra runs, why attacks were left out)``: :func:`plan_reruns`.
RerunPlans = list[tuple[str, float, list["PlannedRerun"], list[str]]]
SKIPPED_KINDS: tuple[str, ...] = ("transfer", "noise")


# ---------------------------------------------------------------------------------------------------------------
# planning (pure, over the record)
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlannedRerun:
    """One extra run: ``result`` re-run with ``params`` on the survivors ``sampled`` (indices into the samples)."""

    result: AttackResult
    params: dict
    survivors: int
    sampled: list[int]
    estimated_queries: float
    closest: list[int] = dataclasses.field(default_factory=list)
    """The part of ``sampled`` taken closest to the decision boundary (the rest is a random sample)."""
    floor: int = 0
    """The survivors this run had to attack at least (:func:`floor_samples`, at most ``survivors``)."""


def survivors_at(record: EvalRecord, norm: str, eps: float, index: RecordIndex | None = None) -> list[int]:
    """Indices of the samples clean-correct and broken by no attack at ``(norm, eps)`` (the attacks looked up in
    ``index``, the record's :class:`~kwta_robust.record_index.RecordIndex`, where given: a pass over every threat
    point builds one, rather than scanning the results at each)."""
    at = (record if index is None else index).results_at(norm, eps)
    return [i for i, c in enumerate(record.clean_flags) if c == 1 and all(r.flags[i] != 0 for r in at)]


def strength(r: AttackResult) -> tuple[float, int, int]:
    """Sort key of attack strength: the fraction of the samples it attacked that it broke, then the count, then
    the earlier position (in a cascade later attacks only see what earlier ones left, so raw counts favour the
    first attack, which breaks the easy samples)."""
    return (r.n_broken / r.n_attacked if r.n_attacked else 0.0, r.n_broken, -r.position)


def strongest_by_family(results: list[AttackResult], count: int) -> list[AttackResult]:
    """The strongest attack (:func:`strength`) of each family (``kind``), families ranked by it; transfer and
    single-step attacks and attacks without a budget are left out."""
    best: dict[str, AttackResult] = {}
    for r in sorted(results, key=strength, reverse=True):
        usable = r.kind not in SKIPPED_KINDS and not r.single_step and r.source is None
        if usable and r.kind not in best and scale_budget(r.attack, r.params, 2) is not None:
            best[r.kind] = r
    return sorted(best.values(), key=strength, reverse=True)[:count]


def _per_survivor_queries(r: AttackResult) -> float | None:
    """Queries one sample that survives ``r`` costs at its budget (over-estimated: all of ``r``'s queries are
    charged to the samples it did not break)."""
    survived = r.n_attacked - r.n_broken
    if r.queries is None or r.n_attacked == 0:
        return None
    return r.queries / max(survived, 1)


def closest_approach(record: EvalRecord, norm: str, eps: float,
                     index: RecordIndex | None = None) -> list[float | None]:
    """Per sample, the largest margin ``max_{j≠y} z_j − z_y`` that any attack at ``(norm, eps)`` reached on it (the
    ``margins`` the runner stores per attack: for a survivor, how close the suite came to breaking it); ``None``
    where no attack stored one (not attacked, or a record written before margins were stored); ``index``: as
    :func:`survivors_at`."""
    best: list[float | None] = [None] * len(record.clean_flags)
    for r in (record if index is None else index).results_at(norm, eps):
        for i, m in enumerate(r.margins if len(r.margins) == len(best) else []):
            if m is not None and (best[i] is None or m > best[i]):
                best[i] = m
    return best


def by_closeness(record: EvalRecord, survivors: Sequence[int], norm: str, eps: float,
                 index: RecordIndex | None = None) -> list[int]:
    """``survivors`` (ascending indices) ordered closest to breaking first: the largest margin the suite's attacks
    reached at ``(norm, eps)`` (:func:`closest_approach`); in a record without attack margins, the largest clean
    margin (``record.clean_margins``); a sample without a margin last. Ties go to the larger error rate any attack
    reached (a randomized model's vote-share margins move in steps of one draw: ``error_rates``, empty for a
    deterministic model), then to the lower index. ``[]`` when the record holds neither margin. ``index``: as
    :func:`survivors_at`."""
    approach = closest_approach(record, norm, eps, index)
    margins = approach if any(approach[i] is not None for i in survivors) else record.clean_margins
    if len(margins) != len(record.clean_flags) or not margins:
        return []
    rated = [r.error_rates for r in (record if index is None else index).results_at(norm, eps) if r.error_rates]
    rates = [max((r[i] or 0.0 for r in rated), default=0.0) for i in range(len(margins))]
    return sorted(survivors, key=lambda i: (math.inf if margins[i] is None else -margins[i], -rates[i]))


def split_sample(ranked: Sequence[int], order: Sequence[int], m: int,
                 fraction: float) -> tuple[list[int], list[int]]:
    """``m`` survivors: the ``floor(fraction · m)`` first of ``ranked`` (closest first; empty: none) and the first of
    ``order`` (a random permutation of the survivors) that are not among them; both ascending."""
    closest = list(ranked[: math.floor(fraction * m)])
    taken = set(closest)
    rest = [i for i in order if i not in taken][: m - len(closest)]
    return sorted(closest), sorted(closest + rest)


def floor_samples(spec: BudgetCheckSpec, thresholds: Thresholds, n: int) -> int:
    """The survivors every re-run attacks at least on ``n`` samples: ``spec.min_samples``, or when it is ``None``
    four times the kills a flag needs (``max(min_count, 1, ceil(ladder_margin · n))``), at most ``spec.samples``. With
    a fixed count the check goes blind as ``n`` grows: at 200 images a 2-point drop is 4 kills, and a 3× re-run
    breaks about half of the survivors it holds that a larger budget breaks (``benchmarks/STRENGTH.md``, thirteenth
    round), so 8 re-attacked survivors flagged 1 of 20 unconverged quickstart runs where 16 flagged 6."""
    if spec.min_samples is not None:
        return spec.min_samples
    needed = max(thresholds.kills_needed, math.ceil(round(thresholds.ladder_margin * n, 9)))
    return min(spec.samples, 4 * needed)


def plan_reruns(record: EvalRecord, spec: BudgetCheckSpec, seed: int,
                thresholds: Thresholds = Thresholds()) -> RerunPlans:
    """Per threat point: the planned extra runs and, for attacks left out, why.

    Every re-run attack gets :func:`floor_samples` survivors (all, if fewer): a cheap suite spends most of its
    queries on its survivors, so no re-run at a larger budget fits in a fraction of its cost, and fewer samples
    would only report noise. Beyond that, up to ``samples`` each, the extra runs may cost ``max_cost`` times the
    queries the suite spent at the threat point (estimated with :func:`_per_survivor_queries`, at least one query a
    survivor), shared from the strongest attack down; an attack that counted no queries has no cost to cap: up to
    ``samples``."""
    plans, least = [], floor_samples(spec, thresholds, len(record.clean_flags))
    index = RecordIndex(record)  # each threat point's results looked up, not scanned for
    for norm, eps in record.threat_points():
        survivors = survivors_at(record, norm, eps, index) if eps > 0 else []  # at eps 0 no input moves: none to break
        if not survivors:
            continue
        results = index.results_at(norm, eps)
        spent = sum(r.queries or 0 for r in results)
        gen = torch.Generator().manual_seed(derive_seed(seed, "budget-check", norm, repr(eps)))
        order = [survivors[i] for i in torch.randperm(len(survivors), generator=gen).tolist()]
        ranked = by_closeness(record, survivors, norm, eps, index)
        floor = min(least, len(survivors))
        chosen = strongest_by_family(results, spec.attacks)
        costs = [None if _per_survivor_queries(r) is None else spec.factor * max(_per_survivor_queries(r), 1.0)
                 for r in chosen]
        budget = spec.max_cost * spent - sum(floor * c for c in costs if c is not None)
        runs = []
        for r, cost in zip(chosen, costs):
            extra = spec.samples if cost is None else int(max(budget, 0.0) // cost)
            m = max(floor, min(spec.samples, len(survivors), floor + extra))
            budget -= 0.0 if cost is None else (m - floor) * cost
            closest, sampled = split_sample(ranked, order, m, spec.closest)
            runs.append(PlannedRerun(r, scale_budget(r.attack, r.params, spec.factor), len(survivors), sampled,
                                     math.nan if cost is None else m * cost, closest, floor))
        skipped = [] if chosen else ["every attack here: none has a budget to raise (single-step or transfer)"]
        plans.append((norm, eps, runs, skipped))
    return plans


# ---------------------------------------------------------------------------------------------------------------
# judging (pure)
# ---------------------------------------------------------------------------------------------------------------
#: What the evidence of a settled check keeps of its inconclusive first sample (``first_sample``).
FIRST_SAMPLE: tuple[str, ...] = ("sampled", "sampled_indices", "broken", "broken_indices", "queries",
                                 "estimated_drop", "drop_lower_bound")


#: One minus the confidence of the drop's lower bound (one-sided 97.5 %, :func:`kills_lower_bound`).
BOUND_ALPHA = Fraction(1, 40)


def kills_lower_bound(broken: int, sampled: int, population: int, alpha: Fraction = BOUND_ALPHA) -> int:
    """The exact one-sided ``1 − alpha`` lower confidence bound of the kills ``R`` among ``population`` survivors of
    which a simple random sample of ``sampled`` (without replacement) held ``broken``: the smallest ``R`` with
    ``P(X >= broken | R) > alpha``, ``X`` hypergeometric (Clopper & Pearson's 1934 construction on the finite
    population, Buonaccorsi 1987), so ``P(bound > R) <= alpha`` for every ``R``. Whole-number arithmetic, no
    rounding; ``broken`` when the sample is the whole population, 0 when nothing was broken or sampled. For a
    population much larger than the sample it tends to ``population`` times Clopper–Pearson's bound of
    ``broken / sampled`` (1 of 3: 0.0084)."""
    if not 0 <= broken <= sampled <= population:
        raise KwtaRobustError(f"budget check bound: need 0 <= broken ({broken}) <= sampled ({sampled}) <= "
                              f"population ({population})")
    total = math.comb(population, sampled)
    low, high = broken, population - (sampled - broken)  # at ``high`` every draw but the sample's misses is broken

    def covers(kills: int) -> bool:  # P(X >= broken | kills) > alpha
        tail = sum(math.comb(kills, j) * math.comb(population - kills, sampled - j)
                   for j in range(broken, min(kills, sampled) + 1))
        return tail * alpha.denominator > alpha.numerator * total

    while broken and low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if covers(mid) else (mid + 1, high)
    return low if broken else 0


def judge(plan: PlannedRerun, broken: list[int], queries: int | None, n: int, seed: int, factor: int,
          thresholds: Thresholds, first: Mapping[str, Any] | None = None) -> Flag:
    """The flag for one extra run that broke the samples ``broken`` (a subset of ``plan.sampled``); ``first``: the
    evidence (:data:`FIRST_SAMPLE`) of the inconclusive first sample that this run, re-attacking every survivor,
    settles."""
    r, m, k, s = plan.result, len(plan.sampled), len(broken), plan.survivors
    h, k_close = len(plan.closest), len(set(broken) & set(plan.closest))
    k_rand, m_rand = k - k_close, m - h
    # the k verified kills are certain; only the unsampled survivors are extrapolated, from the random part alone
    # (as one quotient of whole numbers: an estimate of exactly ladder_margin reaches it, where 1/25 · 29 / 58 rounds
    # to 0.019999999999999997)
    drop = (k_close * m_rand + k_rand * (s - h)) / (m_rand * n) if m_rand else k_close / n
    drop_low = (k_close + kills_lower_bound(k_rand, m_rand, s - h)) / n
    raised = k >= thresholds.kills_needed and drop_low >= thresholds.ladder_margin
    budget = _budget_text(r.attack, plan.params)
    evidence = {
        "source": "rerun", "attack": r.label, "registry_name": r.attack, "norm": r.norm, "eps": r.eps,
        "factor": factor, "params": plan.params, "seed": seed, "n": n, "survivors": s, "floor": plan.floor,
        "sampled": m, "sampled_indices": plan.sampled, "closest": h, "closest_indices": plan.closest,
        "broken_closest": k_close, "broken": k, "broken_indices": broken, "queries": queries,
        "robust_accuracy": s / n, "estimated_drop": drop, "drop_lower_bound": drop_low,
        "threshold": thresholds.ladder_margin, "flagged": raised,
        "inconclusive": not raised and k > 0 and drop >= thresholds.ladder_margin,
    }
    if first is not None:
        evidence["first_sample"] = dict(first)
    label = shown_text(r.label)  # a hand-edited record's 100 kB label made a 100 kB flag
    where = f"at {threat_text(r.norm, r.eps_text)} {label} at {factor}x its budget ({budget})"
    rest = f"the other {m_rand}" if m == s else f"{m_rand} at random"  # a census: every survivor, none sampled
    how = f"the {h} closest to breaking: {k_close} broken; {rest}: {k_rand}; " if h else ""
    numbers = f"broke {k} of {m} sampled survivors (of {s}; {how}{queries} queries)"
    if first is not None:
        numbers += (f", every survivor after an inconclusive first sample ({first['broken']} of {first['sampled']} "
                    f"broken)")
    if raised:
        message = (f"{where} {numbers}: the headline {percent_text(s / n)}% robust is an upper bound that this budget "
                   f"lowers by >= {lower_bound_percent_text(drop_low)} points (97.5% lower confidence bound; estimate "
                   f"{percent_text(drop)}) — "
                   f"raise {label}'s budget to {budget} or more and re-run")
        return Flag(CODE, WARNING, message, evidence)
    bound = (f"the 97.5% lower confidence bound of the drop ({lower_bound_percent_text(drop_low)} points; estimate "
             f"{percent_text(drop)})")
    margin = percent_text(thresholds.ladder_margin)
    if drop_low < thresholds.ladder_margin:
        why, yet = f"{bound} is under ladder_margin ({margin})", ", but the estimate reaches ladder_margin"
    else:  # the bound reaches the margin on fewer verified kills than a flag needs
        why = (f"{bound} reaches ladder_margin ({margin}), but it broke {k}, fewer than min_count "
               f"({thresholds.min_count})" if k else f"{bound} reaches ladder_margin ({margin}), but it broke none")
        yet = ""
    if evidence["inconclusive"]:  # the estimate says the budget lowers the headline, the kills do not show it
        message = f"{where} {numbers}: inconclusive, {why}{yet} — {_to_decide(m, s, n, queries)}"
        return Flag(INCONCLUSIVE, INFO, message, evidence)
    message = f"{where} {numbers}: not flagged, {why}"
    return Flag(CHECKED, INFO, message, evidence)


def _to_decide(m: int, s: int, n: int, queries: int | None) -> str:
    """What settles an inconclusive check: re-attacking every survivor (then nothing is extrapolated and the
    bound is the verified kills), or, when it already did, more samples (one kill is 1/n of the headline)."""
    if m < s:
        cost = f"about {s / m:.1f}x its queries" + (f" ({queries})" if queries is not None else "")
        return f"re-attack all {s} survivors to decide (diagnostics.budget_check.min_samples: {s}; {cost})"
    return (f"every survivor was re-attacked and one kill is {percent_text(1 / n)} points of the headline: evaluate "
            "more samples (n_examples) to decide")


def _budget_text(attack: str, params: dict) -> str:
    if attack == "bpda":
        if params.get("stage_steps") is not None:
            return f"stage_steps={params['stage_steps']}"
        inner = params.get("inner_params", {})
        return ", ".join(f"inner_params.{k}={v}" for k, v in inner.items()
                         if k in ("steps", "n_queries", "eot_samples")) or "?"
    keys = ("n_queries",) if "n_queries" in params else ("samples_schedule",) if params.get("samples_schedule") \
        else ("samples_start", "samples_end") if "samples_start" in params else ("steps", "eot_samples")
    if params.get("max_queries") is not None:
        keys += ("max_queries",)
    return ", ".join(f"{k}={params[k]}" for k in keys if k in params)


# ---------------------------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------------------------
def previous_flags(record: EvalRecord) -> list[Flag]:
    """Flags of a budget check stored in a resumed record (same config, model and samples: same result)."""
    return [f for f in record.diagnostics if f.evidence.get("source") in ("rerun", "rerun-skipped")]


@dataclass(frozen=True)
class KeptPlans:
    """The budget check's plan (:func:`plan_reruns`) of a resumed record whose every unit is kept (:func:`kept_plans`),
    made once for the resume's info line (:func:`reruns_left`) and the run (:func:`run_budget_check`), with the clean
    pass it read (``clean``: flags and margins, which the run writes again; margins rank the survivors where no
    attack stored any, so a plan made on others is made again)."""

    plans: RerunPlans
    clean: tuple


def _clean_read(record: EvalRecord) -> tuple:
    """What a plan read of ``record``'s clean pass: its flags and margins."""
    return tuple(record.clean_flags), tuple(record.clean_margins)


def kept_plans(record: EvalRecord, diagnostics: DiagnosticsSpec, seed: int) -> KeptPlans | None:
    """The budget check's plan for a resumed ``record`` whose every unit is kept (:class:`KeptPlans`), or ``None``
    where the check plans nothing (``diagnostics`` or its budget check disabled, or its flags stored)."""
    if not (diagnostics.enabled and diagnostics.budget_check.enabled) or previous_flags(record):
        return None
    return KeptPlans(plan_reruns(record, diagnostics.budget_check, seed, diagnostics.thresholds), _clean_read(record))


def reruns_left(kept: KeptPlans | None) -> bool:
    """Whether :func:`run_budget_check` re-runs an attack on the plan ``kept`` (:func:`kept_plans`: a survivor to
    re-attack; ``None``: nothing planned): a resume that computes no unit."""
    return kept is not None and any(planned for _, _, planned, _ in kept.plans)


def rerun_batches(plan: PlannedRerun, norm: str, eps: float, seed: int, batch_size: int, draws: int = 1,
                  verdict_seed: Callable[[int], Optional[int]] = lambda batch: None) -> list[RerunBatch]:
    """The batches of one extra run: its sampled survivors grouped by the batch of ``batch_size`` they lie in (the
    fixed partition of :func:`attacks.cascade.run_verified`, so each batch is attacked as one call either way);
    ``verdict_seed(batch index)``: the seed of that batch's verdicts (:mod:`kwta_robust.rerun_jobs`)."""
    groups: dict[int, list[int]] = {}
    for position in plan.sampled:
        groups.setdefault(position // batch_size, []).append(position)
    r = plan.result
    return [RerunBatch(r.label, r.attack, plan.params, seed, norm, eps, tuple(groups[b]), draws, verdict_seed(b))
            for b in sorted(groups)]


def _run_reruns(runs: Sequence[tuple[str, float, PlannedRerun, int]], cut: BatchCutter,
                runner: BatchRunner) -> list[tuple[list[int], int | None]]:
    """Per extra run ``(norm, eps, plan, seed)``: the survivors it broke and its queries (``None`` if no batch
    counted them), its batches (``cut(plan, norm, eps, seed)``) run together by ``runner``."""
    batches = [cut(plan, norm, eps, run_seed) for norm, eps, plan, run_seed in runs]
    jobs = [job for run in batches for job in run]
    outcomes = list(runner(jobs)) if jobs else []
    if len(outcomes) != len(jobs):
        raise KwtaRobustError(f"budget check: {len(jobs)} re-run batches gave {len(outcomes)} outcomes")
    done, out = iter(outcomes), []
    for run in batches:
        results = [next(done) for _ in run]
        counted = [queries for _, queries in results if queries is not None]
        out.append(([position for positions, _ in results for position in positions],
                    sum(counted) if counted else None))
    return out


def _settle(record: EvalRecord, runs: Sequence[tuple[str, float, PlannedRerun, int]], judged: list[Flag],
            spec: BudgetCheckSpec, thresholds: Thresholds, cut: BatchCutter, runner: BatchRunner) -> list[Flag]:
    """``judged`` with each inconclusive verdict on a sample of at most ``spec.samples`` survivors replaced by the
    verdict on all of them: the same attack, budget and seed re-attack the survivors the sample left out, and the
    kills of both are judged together (nothing is extrapolated: the bound is the verified kills)."""
    unsettled = [i for i, flag in enumerate(judged) if flag.evidence["inconclusive"]
                 and len(runs[i][2].sampled) < runs[i][2].survivors <= spec.samples]
    rests, index = [], RecordIndex(record)
    for norm, eps, plan, run_seed in (runs[i] for i in unsettled):
        sampled = set(plan.sampled)
        rest = [j for j in survivors_at(record, norm, eps, index) if j not in sampled]
        rests.append((norm, eps, dataclasses.replace(plan, sampled=rest), run_seed))
        logger.info("budget check: at %s %g %s's first sample is inconclusive; re-attacking the other %d survivors",
                    norm, eps, plan.result.label, len(rest))
    settled = list(judged)
    for i, rest, (broken, queries) in zip(unsettled, rests, _run_reruns(rests, cut, runner)):
        plan, first = runs[i][2], judged[i].evidence
        census = dataclasses.replace(plan, sampled=sorted(plan.sampled + rest[2].sampled))
        spent = None if first["queries"] is None and queries is None else (first["queries"] or 0) + (queries or 0)
        settled[i] = judge(census, sorted(first["broken_indices"] + broken), spent, len(record.clean_flags),
                           runs[i][3], spec.factor, thresholds, first={k: first[k] for k in FIRST_SAMPLE})
    return settled


def run_budget_check(model: nn.Module, x: Tensor, y: Tensor, record: EvalRecord, spec: BudgetCheckSpec,
                     thresholds: Thresholds, seed: int, batch_size: int,
                     bpda_layers: Mapping[str, Mapping[str, Any]] | None = None,
                     runner: BatchRunner | None = None, ids: Tensor | None = None,
                     kept: KeptPlans | None = None) -> list[Flag]:
    """Run the check (module docstring) on the evaluated samples ``x`` ``[n, ...]``, ``y`` ``[n]`` (named ``ids``
    ``[n]`` int64 on the CPU: a randomized model's verdicts draw as the evaluation's clean pass did,
    :mod:`kwta_robust.rerun_jobs`; without them, from the global RNG as the attack left it); the flags.
    ``bpda_layers``: per BPDA label, the layers the runner resolved for it (the re-run acts on the same ones).
    Every extra run is cut into its batches (:func:`rerun_batches`); ``runner`` runs them (default: one after
    the other here, on ``model``, ``x``, ``y``; a sharded evaluation sends them to its workers): the flags are the
    same either way. ``kept``: the plan made when ``record`` was resumed (:func:`kept_plans`), used where the clean
    pass it read is ``record``'s (else planned again)."""
    if not spec.enabled:
        return []
    if previous_flags(record):  # a resumed record of a finished run: diagnostics are written only at the end
        return previous_flags(record)
    n = len(record.clean_flags)
    fresh = kept is None or kept.clean != _clean_read(record)  # clean margins written again: other ranks
    plans = plan_reruns(record, spec, seed, thresholds) if fresh else kept.plans
    runs = [(norm, eps, plan, derive_seed(seed, "budget-check", plan.result.label, norm, repr(eps)))
            for norm, eps, planned, _ in plans for plan in planned]
    run_jobs = runner or (lambda jobs: [run_rerun_batch(model, x, y, job, batch_size, bpda_layers) for job in jobs])
    draws, randomized = record_draws(record), record_randomized(record)

    def verdict_seed(batch: int) -> int | None:  # the seed of the clean pass on that batch
        return None if ids is None or not randomized else model_rng_seed(seed, ids[batch * batch_size:][:batch_size])

    cut = functools.partial(rerun_batches, batch_size=batch_size, draws=draws, verdict_seed=verdict_seed)
    outcomes = _run_reruns(runs, cut, run_jobs)
    judged = [judge(plan, broken, queries, n, run_seed, spec.factor, thresholds)
              for (_, _, plan, run_seed), (broken, queries) in zip(runs, outcomes)]
    judged = _settle(record, runs, judged, spec, thresholds, cut, run_jobs)
    for flag in judged:
        logger.info("budget check: %s", flag.message)
    flags, ordered = [], iter(judged)
    for norm, eps, planned, skipped in plans:
        flags += [next(ordered) for _ in planned]
        flags += [Flag(CHECKED, INFO, f"at {threat_text(norm, eps)} the budget check skipped {reason}",
                       {"source": "rerun-skipped", "norm": norm, "eps": eps, "reason": reason}) for reason in skipped]
    return flags
