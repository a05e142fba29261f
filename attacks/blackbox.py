"""Decision-based black-box attacks, to catch gradient masking: HopSkipJump and Boundary (through foolbox); the
score-based Square attack is in :mod:`attacks.square`.

A model that resists white-box attacks but falls to a black-box attack at the same ``eps`` masks its gradients
(Athalye et al. 2018; Croce & Hein 2020 include Square in AutoAttack for this reason).

Threat model: ``ThreatModel(norm, eps, bounds)``; inputs ``x`` ``[N, ...]`` inside ``bounds``, labels ``y``
``[N]``, logits ``[N, C]`` out. Every attack returns ``x_adv`` with the shape, dtype and device of ``x``, inside
the eps ball and the bounds, never moves, mutates or leaves the model in train mode, and is reproducible for a
given ``seed`` without changing the caller's global RNG state (foolbox uses the global generator; calls run
inside :func:`attacks.base.rng_scope`).

* ``hopskipjump`` (Linf/L2) and ``boundary`` (L2) run through foolbox 3. They minimise the perturbation from an
  adversarial starting point, found by foolbox's ``LinearSearchBlendedUniformNoiseAttack``; samples for which no
  starting point is found, or whose minimal adversarial lies beyond ``eps``, get the clean input back (the
  runner then counts them robust) and the count is logged (a warning for the start, an info line for ``eps``) —
  unless one of the attack's own queries for that sample was adversarial inside the ball: foolbox keeps only its
  final point (HopSkipJump's boundary probes are never candidates), so every query is checked on the way and such a
  query is returned instead.
* ``max_queries`` (both; default ``None``: no cap) bounds the model queries per attacked sample, the start search's
  included (not the one forward of the whole batch that picks the correctly classified samples) -- the budget of
  the query-limited black-box protocol (Chen et al. report HopSkipJump at 1K / 5K / 20K queries). foolbox has no
  such cap: the queries are counted on the way, and when the next one would pass the cap the attack stops and each
  sample gets the first adversarial query inside the ball it had found, if any.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Mapping

import torch
from torch import Tensor, nn

from attacks.base import (
    NORMS,
    AttackConfigError,
    ThreatModel,
    begin_attack,
    check_norm_supported,
    eval_mode,
    frozen_parameters,
    register_attack,
    rng_scope,
)
from attacks.errors import check_choice_param, check_int_param, check_positive_param
from attacks.thirdparty import UnitInputView

logger = logging.getLogger(__name__)


def start_search_draw(params: Mapping[str, Any]) -> str:
    """What HopSkipJump and Boundary draw first from their seed (:mod:`attacks.seed_draws`): the uniform random inputs
    of foolbox's start search (``LinearSearchBlendedUniformNoiseAttack``), from torch's global generator that
    :func:`attacks.base.rng_scope` seeds: alike for the two attacks."""
    return "blended uniform noise"

#: What ``max_queries=None`` means in a record (:mod:`attacks.settings`).
NO_CAP: Mapping[str, str] = MappingProxyType({"max_queries": "no cap"})
#: Why the foolbox wrappers' settings are not complete: the foolbox attack's parameters that they do not pass.
FOOLBOX_DEFAULTS = ("foolbox's own defaults for the parameters this wrapper does not pass are not recorded "
                    "(provenance.versions.foolbox names its version)")


def _require_same_device(attack_name: str, model: nn.Module, x: Tensor) -> None:
    # foolbox's PyTorchModel calls model.to(device): refuse rather than move the caller's model.
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.device != x.device:
            raise AttackConfigError(
                f"attack {attack_name!r}: model is on {tensor.device} but x is on {x.device}; move them together"
            )


class _InBallAdversarialKeeper(nn.Module):
    """Passes foolbox's queries ``[R, ...]`` (view space) to ``view``; keeps, per sample of ``x`` ``[N, ...]``, the
    first query found misclassified inside ``threat`` (ball and bounds, in the model's space).

    foolbox queries one row per attacked sample (its start search, HopSkipJump's probes, binary-search and step-size
    proposals): a query of ``len(rows)`` rows is read as row ``r`` for sample ``rows[r]``. Whatever produced it, a
    kept point is checked against that sample's own ball and label, so it is an adversarial for it.

    With ``max_queries``, it counts the queries per sample (a query of another number of rows counts, for each of
    ``rows``, its share rounded up) and raises :class:`_QueryCapReached` before one that would pass the cap.
    """

    def __init__(self, view: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel,
                 max_queries: int | None = None) -> None:
        super().__init__()
        self.view, self.threat = view, threat
        self.x, self.y = x, y
        self.rows, self.row_list = torch.arange(len(y), device=y.device), list(range(len(y)))
        self.kept = x.clone()
        self.found = torch.zeros(len(y), dtype=torch.bool, device=y.device)
        self.max_queries = max_queries
        self.spent = [0] * len(y)  # queries per sample (plain ints: no device sync per query)
        self.training = False

    def _count(self, n_rows: int) -> None:
        if self.max_queries is None:
            return
        each = -(-n_rows // max(len(self.row_list), 1))
        if any(self.spent[r] + each > self.max_queries for r in self.row_list):
            raise _QueryCapReached
        for r in self.row_list:
            self.spent[r] += each

    def attack_only(self, rows: Tensor) -> None:
        """From now on, a query's rows are the samples ``rows`` (indices into ``x``)."""
        self.rows, self.row_list = rows, rows.tolist()

    def forward(self, queries: Tensor) -> Tensor:
        self._count(queries.shape[0])
        logits = self.view(queries)
        if queries.shape[0] == self.rows.numel():
            with torch.no_grad():
                z = self.view.from_view(queries).to(self.x.dtype)
                new = (logits.argmax(dim=1) != self.y[self.rows]) & self.threat.contains(z, self.x[self.rows])
                new &= ~self.found[self.rows]
                self.kept[self.rows[new]] = z[new]
                self.found[self.rows[new]] = True
        return logits


class _QueryCapReached(Exception):
    """The next query would pass ``max_queries`` (raised inside foolbox's run, caught by the caller)."""


def run_foolbox_minimization(
    attack_name: str,
    attack: Any,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    seed: int,
    init_directions: int,
    init_steps: int,
    max_queries: int | None = None,
) -> Tensor:
    """Run a foolbox minimisation attack and keep only adversarials inside the eps ball (else ``x``).

    Only samples classified correctly are attacked. A starting point is searched with
    ``LinearSearchBlendedUniformNoiseAttack(directions=init_directions, steps=init_steps)``; samples without one
    keep ``x`` (logged). foolbox clips the result to ``eps`` (``epsilons=``) and reports success there; a sample
    whose result fails there gets the first query of the attack that was adversarial inside the ball, if any.
    With ``max_queries``, a run that reaches the cap stops there and every sample gets that query, if any.
    """
    import foolbox as fb

    logits = begin_attack(attack_name, NORMS, model, x, y, threat)
    _require_same_device(attack_name, model, x)
    x_adv = x.clone()
    idx = (logits.argmax(dim=1) == y).nonzero().squeeze(1)
    if idx.numel() == 0:
        return x_adv
    view = UnitInputView(model, tuple(x.shape[1:]), threat.bounds, dtype=x.dtype)
    xv, yv = view.to_view(x[idx]).clamp(0.0, 1.0), y[idx]
    with eval_mode(model), frozen_parameters(model), rng_scope(seed), warnings.catch_warnings():
        # foolbox warns when the start search fails; we count and log those samples ourselves
        warnings.filterwarnings("ignore", message=".*failed to draw sufficient random inputs.*")
        keeper = _InBallAdversarialKeeper(view, x[idx], y[idx], threat, max_queries)
        fmodel = fb.PyTorchModel(keeper, bounds=(0.0, 1.0), device=x.device)
        init = fb.attacks.LinearSearchBlendedUniformNoiseAttack(directions=init_directions, steps=init_steps)
        try:
            starts = init.run(fmodel, xv, fb.criteria.Misclassification(yv))
            with torch.no_grad():  # through the keeper: a query like any other
                has_start = keeper(starts).argmax(dim=1) != yv
        except _QueryCapReached:
            return _capped(attack_name, max_queries, x_adv, idx, keeper, threat, x)
        if not bool(has_start.all()):
            logger.warning(
                "%s: no adversarial starting point for %d of %d samples; they keep the clean input (robust)",
                attack_name, int((~has_start).sum()), len(yv),
            )
        sub = has_start.nonzero().squeeze(1)
        if sub.numel() == 0:
            return x_adv
        keeper.attack_only(sub)
        try:
            _, clipped, success = attack(
                fmodel, xv[sub], fb.criteria.Misclassification(yv[sub]), epsilons=view.view_eps(threat.eps),
                starting_points=starts[sub],
            )
        except _QueryCapReached:
            return _capped(attack_name, max_queries, x_adv, idx, keeper, threat, x)
        except AssertionError:
            # foolbox asserts its iterates stay adversarial; that fails only for non-deterministic models
            logger.warning(
                "%s: foolbox lost adversarial iterates (is the model randomized?); %d samples keep the clean input",
                attack_name, len(sub),
            )
            return x_adv
    from_queries = keeper.found.clone()
    from_queries[sub[success]] = False
    if not bool(success.all()):
        logger.info(
            "%s: %d of %d minimal adversarials lie beyond eps=%g; %d of those samples get a query of the attack that "
            "was adversarial in the ball, the others keep the clean input",
            attack_name, int((~success).sum()), len(sub), threat.eps, int(from_queries.sum()),
        )
    x_adv[idx[sub[success]]] = view.from_view(clipped[success]).to(x.dtype)
    x_adv[idx[from_queries]] = keeper.kept[from_queries]
    return threat.project(x_adv, x)


def _capped(attack_name: str, max_queries: int | None, x_adv: Tensor, idx: Tensor,
            keeper: _InBallAdversarialKeeper, threat: ThreatModel, x: Tensor) -> Tensor:
    """The result of a run stopped at ``max_queries``: each sample's first adversarial query inside the ball."""
    logger.info("%s: stopped at max_queries=%s; %d of %d samples have an adversarial query inside the ball",
                attack_name, max_queries, int(keeper.found.sum()), len(idx))
    x_adv[idx[keeper.found]] = keeper.kept[keeper.found]
    return threat.project(x_adv, x)


@register_attack("hopskipjump", norms=NORMS, kind="black-box", labels_only=True,
                 summary="HopSkipJump (decision-based), foolbox", draws=start_search_draw)
@dataclass
class HopSkipJump:
    """HopSkipJumpAttack (Chen, Jordan & Wainwright, "HopSkipJumpAttack: A Query-Efficient Decision-Based
    Attack", IEEE S&P 2020) through ``foolbox.attacks.HopSkipJumpAttack``; Linf and L2 (``constraint`` follows
    the threat model). Uses only predicted labels.

    Budget: ``steps`` (64, foolbox's default) boundary iterations with ``initial_gradient_eval_steps`` (100)
    growing as ``sqrt(step)`` up to ``max_gradient_eval_steps`` (10,000) queries for each gradient estimate.
    Starting points from ``LinearSearchBlendedUniformNoiseAttack(directions=init_directions, steps=init_steps)``.
    ``max_queries`` (``None``: no cap) caps the queries per sample, the start search's included (module docstring).
    Minimal-perturbation attack: adversarials beyond ``eps`` count as failures (``x`` returned for them).
    Shapes: ``[N, ...]`` → ``[N, ...]``.
    """

    steps: int = 64
    initial_gradient_eval_steps: int = 100
    max_gradient_eval_steps: int = 10000
    gamma: float = 1.0
    stepsize_search: str = "geometric_progression"
    init_directions: int = 1000
    init_steps: int = 50
    max_queries: int | None = None
    seed: int = 0
    name: ClassVar[str] = "hopskipjump"
    setting_rules: ClassVar[Mapping[str, str]] = NO_CAP
    settings_not_recorded: ClassVar[str] = FOOLBOX_DEFAULTS

    def __post_init__(self) -> None:
        for field_name in ("steps", "initial_gradient_eval_steps", "max_gradient_eval_steps", "init_directions",
                           "init_steps"):
            check_int_param(self.name, field_name, getattr(self, field_name))
        if self.max_queries is not None:
            check_int_param(self.name, "max_queries", self.max_queries)
        check_positive_param(self.name, "gamma", self.gamma)
        check_choice_param(self.name, "stepsize_search", self.stepsize_search, ("geometric_progression", "grid_search"))

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        import foolbox as fb

        attack = fb.attacks.HopSkipJumpAttack(
            steps=self.steps, initial_gradient_eval_steps=self.initial_gradient_eval_steps,
            max_gradient_eval_steps=self.max_gradient_eval_steps, stepsize_search=self.stepsize_search,
            gamma=self.gamma, constraint=threat.norm,
        )
        return run_foolbox_minimization(
            self.name, attack, model, x, y, threat, self.seed, self.init_directions, self.init_steps, self.max_queries
        )


@register_attack("boundary", norms=("l2",), kind="black-box", labels_only=True,
                 summary="Boundary attack (decision-based, L2), foolbox", draws=start_search_draw)
@dataclass
class Boundary:
    """Boundary Attack (Brendel, Rauber & Bethge, "Decision-Based Adversarial Attacks: Reliable Attacks Against
    Black-Box Machine Learning Models", ICLR 2018) through ``foolbox.attacks.BoundaryAttack``; L2 only (it
    minimises the L2 distance). Uses only predicted labels.

    Budget: ``steps`` (25,000, the reference default; one query per step plus one spherical query every
    ``update_stats_every_k`` steps), step sizes ``spherical_step`` / ``source_step`` adapted by
    ``step_adaptation``; stops early once ``source_step < source_step_convergance``; ``max_queries`` as in
    :class:`HopSkipJump`. Starting points as in :class:`HopSkipJump`. Adversarials beyond ``eps`` count as
    failures. Shapes: ``[N, ...]`` → ``[N, ...]``.
    """

    steps: int = 25000
    spherical_step: float = 1e-2
    source_step: float = 1e-2
    source_step_convergance: float = 1e-7
    step_adaptation: float = 1.5
    update_stats_every_k: int = 10
    init_directions: int = 1000
    init_steps: int = 50
    max_queries: int | None = None
    seed: int = 0
    name: ClassVar[str] = "boundary"
    setting_rules: ClassVar[Mapping[str, str]] = NO_CAP
    settings_not_recorded: ClassVar[str] = FOOLBOX_DEFAULTS

    def __post_init__(self) -> None:
        for field_name in ("steps", "update_stats_every_k", "init_directions", "init_steps"):
            check_int_param(self.name, field_name, getattr(self, field_name))
        if self.max_queries is not None:
            check_int_param(self.name, "max_queries", self.max_queries)
        for field_name in ("spherical_step", "source_step", "source_step_convergance", "step_adaptation"):
            check_positive_param(self.name, field_name, getattr(self, field_name))

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        import foolbox as fb

        check_norm_supported(self.name, threat, ("l2",))
        attack = fb.attacks.BoundaryAttack(
            steps=self.steps, spherical_step=self.spherical_step, source_step=self.source_step,
            source_step_convergance=self.source_step_convergance, step_adaptation=self.step_adaptation,
            update_stats_every_k=self.update_stats_every_k,
        )
        return run_foolbox_minimization(
            self.name, attack, model, x, y, threat, self.seed, self.init_directions, self.init_steps, self.max_queries
        )
