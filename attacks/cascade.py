"""Verified attack runs and the per-sample worst case over an attack suite (AutoAttack's cascade).

The runner never trusts an attack's output. :func:`run_verified` runs one attack on the samples still to be
attacked — batch by batch over a fixed partition of the samples, so a sample's result never depends on how the
others are grouped — **projects** each returned input onto the threat model (eps ball + bounds), records how far the raw
output lay outside it (a *violation*; large ones are logged as warnings), **re-classifies** the projected inputs
itself and reports per-sample success.

:func:`worst_case` runs a list of attacks (Croce & Hein, ICML 2020, "Reliable evaluation of adversarial robustness
with an ensemble of diverse parameter-free attacks"):

* ``mode="cascade"``: each attack runs only on the samples that are clean-correct and survived every earlier
  attack: every sample that can still count meets every attack, for a fraction of the cost. An attack draws its
  random starts per batch for the rows it is given, so a sample meets other draws than in an independent run and
  the worst case of the two modes can differ by that chance (not equal to running everything on every sample).
* ``mode="independent"``: every attack runs on every clean-correct sample (standalone numbers per attack).

Per-attack flags are ``int8`` ``[N]``: ``1`` survived, ``0`` broken by this attack, ``-1`` not run (misclassified
clean, or already broken earlier in the cascade). The per-sample worst case is the AND over attacks of
"not broken", restricted to clean-correct samples.

Shapes: ``x`` ``[N, ...]`` float inside ``threat.bounds``; ``y`` ``[N]`` int64; masks ``[N]`` bool on ``x.device``.
This module never imports ``kwta_robust``: it works for any PyTorch classifier returning logits.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from attacks.base import Attack, AttackConfigError, ThreatModel, eval_mode, finite_or_none, threat_text
from attacks.errors import InputError, first_line, is_out_of_memory
from attacks.plugin_guard import guarded_call
from attacks.queries import count_queries
from attacks.verdicts import BatchSeed, classify, classify_batches, classify_in_batch, global_rng

logger = logging.getLogger(__name__)

SURVIVED, BROKEN, NOT_RUN = 1, 0, -1
#: ``first_broken_by`` value of a sample that survived every attack.
NEVER_BROKEN = -1
#: ``first_broken_by`` value of a sample misclassified without any attack (never attacked).
CLEAN_WRONG = -2
MODES: tuple[str, ...] = ("cascade", "independent")
#: ``attack_for(batch_ids [B] int64) -> Attack``: the attack for one batch, built from the ids of its samples.
BatchAttack = Callable[[Tensor], Attack]


class AttackContractError(AttackConfigError, RuntimeError):
    """An attack broke the interface contract (:mod:`attacks.base`): ``x_adv`` not a tensor shaped, typed and placed
    like ``x``, the model left in train mode, or an exception of its own. One line naming the attack, which the
    CLI prints without a traceback (``-v`` logs it); out-of-memory errors and bad input pass through unchanged."""


def is_code_failure(exc: BaseException) -> bool:
    """Whether ``exc``, raised inside an attack's or a noise probe's code, is a failure of that code (then one
    :class:`AttackContractError` line names it): not bad input (:class:`AttackConfigError`, :class:`InputError`),
    which passes through as it is, and not an out-of-memory error, which the caller may answer with smaller
    batches."""
    return not isinstance(exc, (AttackConfigError, InputError)) and not is_out_of_memory(exc)


def _call_attack(attack: Attack, who: str, model: nn.Module, xb: Tensor, yb: Tensor, threat: ThreatModel) -> Any:
    """``attack(model, xb, yb, threat)``, its failures as :class:`AttackContractError` naming the attack as ``who``
    (:func:`_who`); the model must be left in eval mode (a module in train mode would change the runner's
    re-classification: dropout, batch statistics)."""
    try:
        with guarded_call(who, model, AttackContractError):
            raw = attack(model, xb, yb, threat)
    except SystemExit as exc:  # a plug-in ending the process would end it without a word
        logger.debug("attack %s called sys.exit", who, exc_info=True)
        raise AttackContractError(f"attack {who} called sys.exit({exc.code!r}) on a batch of {len(xb)} samples; "
                                  "an attack must return x_adv or raise (-v logs the traceback)") from exc
    except Exception as exc:  # noqa: BLE001 - a plug-in's bug, named in one line
        if not is_code_failure(exc):
            raise
        logger.debug("attack %s raised", who, exc_info=True)
        raise AttackContractError(f"attack {who} raised {type(exc).__name__}: {first_line(exc)} (at "
                                  f"{_raised_at(exc)}) on a batch of {len(xb)} samples; fix the code there, the "
                                  "attack's or the model's (-v logs the traceback)") from exc
    left = next((label or type(m).__name__ for label, m in model.named_modules() if m.training), None)
    if left is not None:
        raise AttackContractError(f"attack {who} left module {left!r} in train mode; an attack must leave every "
                                  "module's training flag as it found it (attacks.base.eval_mode)")
    return raw


def _clean_batch(who: str, x: Tensor, y: Tensor, chunk: Tensor, xb: Tensor, yb: Tensor) -> tuple[Tensor, Tensor]:
    """The batch an attack was given (``xb``, ``yb``: copies of ``x[chunk]``, ``y[chunk]``), taken again from the
    runner's own ``x`` and ``y`` where the attack changed it in place: its output is verified, projected and
    re-classified against the clean inputs and true labels, never against what the attack made of them."""
    for what, given, full in (("x", xb, x), ("y", yb, y)):
        if not torch.equal(given, full[chunk]):
            logger.warning("attack %s changed its input %s in place; its output is verified against the clean "
                           "batch (an attack must not modify x or y)", who, what)
            return x[chunk], y[chunk]
    return xb, yb


def _who(label: str, threat: ThreatModel) -> str:
    """How an error or warning names the attack: ``'my-pgd' at Linf 0.1``."""
    return f"{label!r} at {threat_text(threat.norm, threat.eps)}"


def _raised_at(exc: BaseException) -> str:
    """``file:line`` of the innermost frame of ``exc``'s traceback outside torch (where the attack's code failed)."""
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if f"{os.sep}torch{os.sep}" not in f.filename] or frames
    return f"{own[-1].filename}:{own[-1].lineno}" if own else "unknown"


@dataclass
class AttackOutcome:
    """Result of one verified attack run over ``N`` samples (only ``active`` ones were attacked).

    ``x_adv`` ``[N, ...]``: projected adversarial inputs (the clean input where not attacked).
    ``pred`` ``[N]``: the runner's own prediction on ``x_adv`` (``-1`` where not attacked).
    ``margin`` ``[N]`` float64: the runner's margin ``max_{j≠y} z_j − z_y`` on ``x_adv`` (from the same logits as
    ``pred``; positive means broken; NaN where not attacked): for a survivor, how close the attack came. Over
    several draws of a randomized model, the margin of the vote shares (:mod:`attacks.verdicts`).
    ``error_rate`` ``[N]`` float64: the fraction of the ``draws`` re-classifications that were wrong (0 or 1 with
    one draw; NaN where not attacked).
    ``success`` ``[N]`` bool: attacked and ``pred != y``.
    ``violation`` ``[N]`` float: how far the raw output lay outside the threat model (max of the norm excess over
    eps and the bound excess; ``inf`` for NaN/inf outputs; ``0`` inside or not attacked).
    ``queries``: forward plus backward passes through ``model`` (per input row) while the attack ran, counted by
    :func:`attacks.queries.count_queries` (``None`` if the attack was never called).
    """

    name: str
    active: Tensor
    x_adv: Tensor
    pred: Tensor
    success: Tensor
    violation: Tensor
    n_violations: int
    max_violation: float
    wall_time_s: float
    queries: int | None = None
    margin: Tensor | None = None
    error_rate: Tensor | None = None
    draws: int = 1

    def error_rates(self) -> list[float | None]:
        """``error_rate`` as plain numbers for a record, ``None`` where not attacked; ``[]`` with one draw (the
        flags say it all)."""
        return [] if self.error_rate is None or self.draws == 1 else finite_or_none(self.error_rate)

    def margins(self) -> list[float | None]:
        """``margin`` as plain numbers for a record: ``None`` where not attacked or not finite (``[]`` without)."""
        return [] if self.margin is None else finite_or_none(self.margin)

    def flags(self) -> Tensor:
        """Per-sample ``int8`` flags: 1 survived, 0 broken by this attack, -1 not run."""
        out = torch.full(self.active.shape, NOT_RUN, dtype=torch.int8, device=self.active.device)
        out[self.active & ~self.success] = SURVIVED
        out[self.active & self.success] = BROKEN
        return out


def _raw_violation(x: Tensor, threat: ThreatModel, finite_entries: Tensor, safe: Tensor,
                   atol: float) -> tuple[Tensor, Tensor]:
    """Per-sample excess of an attack's output ``raw`` outside the threat model, ``[N]`` float64 (0 inside, inf for
    non-finite), and whether it is a violation, ``[N]`` bool: non-finite, or outside the threat model by more than
    float rounding as :meth:`ThreatModel.contains` allows it (the eps ball by :meth:`ThreatModel.slack`, the bounds
    by ``atol``: the slack's relative part is for the rounding of a norm, not of a bound). From ``finite_entries =
    isfinite(raw)`` and ``safe`` (``raw``, its non-finite entries replaced by ``x``'s), which the caller computes once
    for the projection too."""
    lo, hi = threat.bounds
    finite = finite_entries.flatten(1).all(dim=1)
    ball = (threat.distance(safe, x) - threat.eps).clamp_min(0.0)
    flat = safe.flatten(1)
    below = (lo - flat.amin(dim=1)).clamp_min(0.0)
    above = (flat.amax(dim=1) - hi).clamp_min(0.0)
    excess = torch.maximum(ball, torch.maximum(below, above)).to(torch.float64)
    outside = ~finite | ~threat.contains(safe, x, atol=atol)
    return torch.where(finite, excess, torch.full_like(excess, float("inf"))), outside


def _project_checked(raw: Any, xb: Tensor, threat: ThreatModel, who: str,
                     atol: float) -> tuple[Tensor, Tensor, Tensor]:
    """An attack's raw output checked against the contract (shape, dtype, device), projected onto the threat model
    (NaN/inf entries replaced by the clean input first); returns the projection, the raw excess ``[B]`` and whether
    each raw output was a violation ``[B]`` (:func:`_raw_violation`)."""
    if not isinstance(raw, Tensor) or raw.shape != xb.shape:
        shape = tuple(raw.shape) if isinstance(raw, Tensor) else type(raw).__name__
        raise AttackContractError(f"attack {who} returned {shape}, expected a tensor of shape {tuple(xb.shape)} "
                                  "(x_adv shaped like x)")
    if raw.layout != torch.strided:
        raise AttackContractError(f"attack {who} returned a {raw.layout} tensor, expected a dense (torch.strided) "
                                  "tensor like x")
    if raw.device != xb.device or raw.dtype != xb.dtype:
        raise AttackContractError(f"attack {who} returned {raw.dtype} on {raw.device}, expected {xb.dtype} on "
                                  f"{xb.device}")
    raw = raw.detach()
    finite = torch.isfinite(raw)
    safe = torch.where(finite, raw, xb)
    excess, outside = _raw_violation(xb, threat, finite, safe, atol)
    projected = threat.project(safe, xb)
    if not bool(threat.contains(projected, xb, atol=atol).all()):
        raise AttackContractError(f"projection onto {threat} failed for attack {who}")
    return projected, excess, outside


def run_verified(
    model: nn.Module,
    attack: Attack,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    active: Tensor | None = None,
    batch_size: int = 256,
    *,
    ids: Tensor | None = None,
    attack_for: BatchAttack | None = None,
    atol: float = 1e-6,
    warn_above: float = 1e-4,
    progress: bool = False,
    desc: str | None = None,
    draws: int = 1,
    rng_seed_for: BatchSeed | None = None,
    verdict_seed_for: BatchSeed | None = None,
    label: str | None = None,
) -> AttackOutcome:
    """Run ``attack`` on ``x[active]`` batch by batch, project, verify and re-classify.

    The batches are a fixed partition of the ``N`` positions (``batch_size`` consecutive samples each, whatever is
    active); each batch's active samples go to the attack in one call. So a sample's result depends only on its
    own batch — never on which samples of other batches are still active, nor on how the samples are split into
    shards that hold whole batches.

    Args:
        model: classifier returning logits; run in eval mode here (each module's flag is restored afterwards).
        attack: any callable ``attack(model, x, y, threat) -> x_adv`` with a ``name``.
        x: ``[N, ...]`` clean inputs inside ``threat.bounds``; y: ``[N]`` labels.
        active: ``[N]`` bool, the samples to attack (default: all).
        batch_size: samples per batch (the most per attack call).
        ids: ``[N]`` int64 names of the samples (default ``0..N-1``), handed to ``attack_for``.
        attack_for: ``attack_for(batch_ids)`` builds the attack for one batch from the ids of all its samples
            (e.g. seeded from them); default: ``attack`` for every batch.
        atol: excess below which a raw output counts as inside the threat model (float rounding): past the
            bounds; past eps, :meth:`~attacks.base.ThreatModel.slack` of it (for L2 plus 1e-5 of eps).
        warn_above: a violation larger than this is logged as a warning (it is always counted and projected).
        draws: forward passes per re-classification; above 1 the verdict is the plurality of the draws of a
            randomized model (:mod:`attacks.verdicts`).
        rng_seed_for: ``rng_seed_for(batch_ids)``: the seed of torch's global RNG while a batch is attacked (and,
            with one draw per verdict, re-classified; forked, restored after), so a randomized model draws the same
            noise on every run; default: the global RNG as it is.
        verdict_seed_for: for a randomized model, ``verdict_seed_for(batch_ids)`` seeds the re-classification of
            the whole batch, the attacked rows replaced by their projected inputs (:func:`~attacks.verdicts.
            classify_in_batch`: a verdict never depends on which batch-mates are attacked; the clean pass's seed
            gives common random numbers); default: with ``draws > 1`` the whole batch in the global RNG as the
            attack left it, with one draw the attacked rows alone (a deterministic model).
        label: how messages name the attack (a config's label: two entries of one attack told apart); default its
            ``name``. Every error and warning names it with the threat point (``attack 'my-pgd' at Linf 0.1 ...``).
    Returns:
        :class:`AttackOutcome` over all ``N`` samples.
    """
    if batch_size < 1:
        raise AttackConfigError(f"batch_size: must be >= 1, got {batch_size}")
    name = getattr(attack, "name", type(attack).__name__)
    who = _who(label or name, threat)
    n = x.shape[0]
    if active is None:
        active = torch.ones(n, dtype=torch.bool, device=x.device)
    active = active.to(device=x.device, dtype=torch.bool)
    idx = active.nonzero().flatten()
    batches, sizes = torch.unique_consecutive(idx // batch_size, return_counts=True)
    ids = torch.arange(n) if ids is None else ids
    x_adv = x.clone()
    pred = torch.full((n,), -1, dtype=torch.long, device=x.device)
    margin = torch.full((n,), float("nan"), dtype=torch.float64, device=x.device)
    error_rate = torch.full((n,), float("nan"), dtype=torch.float64, device=x.device)
    violation = torch.zeros(n, dtype=torch.float64, device=x.device)
    violated = torch.zeros(n, dtype=torch.bool, device=x.device)
    queries: int | None = None
    start = time.perf_counter()
    with eval_mode(model), tqdm(
        total=int(idx.numel()), desc=desc or name, unit="ex", leave=False, disable=not progress
    ) as bar:
        for batch, chunk in zip(batches.tolist(), idx.split(sizes.tolist())):
            xb, yb = x[chunk], y[chunk]
            batch_ids = ids[batch * batch_size:(batch + 1) * batch_size]
            batch_attack = attack if attack_for is None else attack_for(batch_ids)
            with global_rng(None if rng_seed_for is None else rng_seed_for(batch_ids)):
                with count_queries(model) as count:
                    raw = _call_attack(batch_attack, who, model, xb, yb, threat)
                xb, yb = _clean_batch(who, x, y, chunk, xb, yb)
                projected, excess, outside = _project_checked(raw, xb, threat, who, atol)
                if draws == 1 and verdict_seed_for is None:  # a deterministic model: the attacked rows alone
                    verdict = classify(model, projected, yb, draws, batch_size)
                else:
                    lo, seed = batch * batch_size, None if verdict_seed_for is None else verdict_seed_for(batch_ids)
                    verdict = classify_in_batch(model, x[lo:lo + batch_size], y[lo:lo + batch_size], chunk - lo,
                                                projected, draws, seed, batch_size)
            queries = (queries or 0) + count.total
            x_adv[chunk] = projected
            violation[chunk] = excess
            violated[chunk] = outside
            pred[chunk] = verdict.pred
            margin[chunk] = verdict.margin
            error_rate[chunk] = verdict.error_rate
            bar.update(int(chunk.numel()))
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    wall = time.perf_counter() - start
    n_violations = int(violated.sum())
    max_violation = float(violation.max()) if n else 0.0
    if n_violations and max_violation > warn_above:
        n_bad = int(torch.isinf(violation).sum())  # NaN or infinite entries: max excess inf says nothing more
        logger.warning(
            "attack %s: %d of %d outputs lay outside the %s ball or the bounds [%g, %g] (max excess %.3g%s); projected "
            "before re-classifying", label or name, n_violations, int(idx.numel()),
            threat_text(threat.norm, threat.eps), *threat.bounds, max_violation,
            f"; {n_bad} with NaN or infinite entries, replaced by the clean input's" if n_bad else "",
        )
    success = active & (pred != y)
    return AttackOutcome(
        name=name, active=active, x_adv=x_adv, pred=pred, success=success, violation=violation,
        n_violations=n_violations, max_violation=max_violation, wall_time_s=wall, queries=queries, margin=margin,
        error_rate=error_rate, draws=draws,
    )


@dataclass
class WorstCaseResult:
    """Per-sample worst case over an attack list at one threat model.

    ``flags`` ``[A, N]`` int8 (see module docstring); ``robust`` ``[N]`` bool (clean-correct and never broken);
    ``first_broken_by`` ``[N]`` int64: index of the first attack (in list order) that broke the sample,
    :data:`NEVER_BROKEN` or :data:`CLEAN_WRONG`; ``outcomes[i]`` is ``None`` for attacks given as ``completed``.
    """

    mode: str
    names: list[str]
    clean_correct: Tensor
    flags: Tensor
    robust: Tensor
    first_broken_by: Tensor
    outcomes: list[AttackOutcome | None] = field(default_factory=list)

    @property
    def robust_accuracy(self) -> float:
        n = self.robust.numel()
        return float(self.robust.sum()) / n if n else float("nan")


def robust_mask(clean_correct: Tensor, flags: Sequence[Tensor]) -> Tensor:
    """Samples clean-correct and not broken by any of ``flags`` (each ``[N]`` int8)."""
    robust = clean_correct.clone()
    for f in flags:
        robust &= f.to(robust.device) != BROKEN
    return robust


def first_broken(clean_correct: Tensor, flags: Tensor) -> Tensor:
    """``[A, N]`` flags → ``[N]`` index of the first attack with flag 0 (or NEVER_BROKEN / CLEAN_WRONG)."""
    n = clean_correct.numel()
    out = torch.full((n,), NEVER_BROKEN, dtype=torch.long, device=clean_correct.device)
    if flags.shape[0]:
        broken = flags == BROKEN
        any_broken = broken.any(dim=0)
        out[any_broken] = broken.to(torch.int8).argmax(dim=0)[any_broken]
    out[~clean_correct] = CLEAN_WRONG
    return out


def worst_case(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    attacks: Sequence[Attack],
    mode: Literal["cascade", "independent"] = "cascade",
    *,
    batch_size: int = 256,
    clean_correct: Tensor | None = None,
    completed: Mapping[int, Tensor] | None = None,
    on_outcome: Callable[[int, AttackOutcome, Tensor], None] | None = None,
    progress: bool = False,
    atol: float = 1e-6,
    warn_above: float = 1e-4,
    ids: Tensor | None = None,
    attacks_for: Callable[[int, Tensor], Attack] | None = None,
    draws: int = 1,
    rng_seeds_for: Callable[[int, Tensor], int] | None = None,
    verdict_seed_for: BatchSeed | None = None,
    keep_inputs: bool = True,
    labels: Sequence[str] | None = None,
) -> WorstCaseResult:
    """Run ``attacks`` in order at ``threat``; return per-attack flags and the per-sample worst case.

    Each attack runs batch by batch over a fixed partition of the samples (:func:`run_verified`), so the cascade
    of a batch depends on that batch alone.

    Args:
        ids, attacks_for: ``attacks_for(i, batch_ids)`` builds attack ``i`` for one batch from the ids (``ids``,
            default ``0..N-1``) of its samples (see :func:`run_verified`); default: ``attacks[i]`` everywhere.
        draws, rng_seeds_for: forward passes per verdict and ``rng_seeds_for(i, batch_ids)``, the seed of the global
            RNG while attack ``i`` runs on a batch (see :func:`run_verified`; for randomized models).
        verdict_seed_for: the seed of every attack's re-classifications of a batch of a randomized model (see
            :func:`run_verified`; the same for all attacks, so a sample's verdicts share their draws).
        clean_correct: ``[N]`` bool, samples classified correctly without attack (computed here if omitted, with
            ``draws`` draws under ``verdict_seed_for``).
        completed: attack index → its ``[N]`` int8 flags from an earlier (interrupted) run; those attacks are not
            run again and their flags enter the cascade as recorded.
        on_outcome: called as ``on_outcome(i, outcome, flags_i)`` after each attack that ran (e.g. to save
            partial results).
        keep_inputs: keep each outcome's adversarial inputs in the result; ``False`` drops them once ``on_outcome``
            has seen them (the outcomes' ``x_adv`` then hold no rows, ``[0, ...]``), so a threat point holds one
            attack's ``[N, ...]`` inputs at a time instead of every attack's.
        labels: per attack, how its errors and warnings name it (:func:`run_verified`); default the names.
    """
    if mode not in MODES:
        raise AttackConfigError(f"mode: unknown mode {mode!r}; use one of {', '.join(MODES)}")
    completed = dict(completed or {})
    bad = sorted(i for i in completed if not 0 <= i < len(attacks))
    if bad:
        raise AttackConfigError(f"completed: attack index {bad[0]} out of range for {len(attacks)} attacks")
    n = x.shape[0]
    if clean_correct is None:
        with eval_mode(model):
            clean_correct = classify_batches(model, x, y, draws=draws, batch_size=batch_size, ids=ids,
                                             rng_seed_for=verdict_seed_for).pred == y
    clean_correct = clean_correct.to(device=x.device, dtype=torch.bool)
    all_flags: list[Tensor] = []
    outcomes: list[AttackOutcome | None] = []
    for i, attack in enumerate(attacks):
        if i in completed:
            flags_i = completed[i].to(device=x.device, dtype=torch.int8)
            if flags_i.shape != (n,):
                raise AttackConfigError(f"completed[{i}]: expected flags of shape [{n}], got {tuple(flags_i.shape)}")
            all_flags.append(flags_i)
            outcomes.append(None)
            continue
        active = robust_mask(clean_correct, all_flags) if mode == "cascade" else clean_correct
        name = getattr(attack, "name", type(attack).__name__)
        outcome = run_verified(
            model, attack, x, y, threat, active, batch_size, ids=ids,
            attack_for=None if attacks_for is None else functools.partial(attacks_for, i),
            atol=atol, warn_above=warn_above, progress=progress, desc=f"{name} {threat.norm} {threat.eps:.4g}",
            draws=draws, rng_seed_for=None if rng_seeds_for is None else functools.partial(rng_seeds_for, i),
            verdict_seed_for=verdict_seed_for, label=None if labels is None else labels[i],
        )
        flags_i = outcome.flags()
        all_flags.append(flags_i)
        if on_outcome is not None:
            on_outcome(i, outcome, flags_i)
        if not keep_inputs:  # a fresh empty tensor: a view would keep the [N, ...] storage alive
            outcome = dataclasses.replace(outcome, x_adv=x.new_empty((0, *x.shape[1:])))
        outcomes.append(outcome)
    flags = torch.stack(all_flags) if all_flags else torch.empty((0, n), dtype=torch.int8, device=x.device)
    return WorstCaseResult(
        mode=mode,
        names=[getattr(a, "name", type(a).__name__) for a in attacks],
        clean_correct=clean_correct,
        flags=flags,
        robust=robust_mask(clean_correct, all_flags),
        first_broken_by=first_broken(clean_correct, flags),
        outcomes=outcomes,
    )
