"""BPDA: run any registered gradient attack with the backward pass of gradient-masking layers replaced.

Backward Pass Differentiable Approximation — Athalye, Carlini & Wagner, "Obfuscated Gradients Give a False Sense of
Security: Circumventing Defenses to Adversarial Examples", ICML 2018, §4.1. The forward pass stays exact; gradients
come from a differentiable surrogate. Tramèr, Carlini, Brendel & Madry ("On Adaptive Attacks to Adversarial Example
Defenses", NeurIPS 2020) apply this family of attacks to k-Winners-Take-All (Xiao et al., ICLR 2020).

Threat model: whatever the inner attack supports (Linf and/or L2), white-box. Shapes: ``x`` ``[N, ...]`` in
``threat.bounds``, ``y`` ``[N]`` → ``x_adv`` ``[N, ...]`` on ``x.device``.

Surrogates (a registry, :data:`SURROGATES`):

* ``"identity"`` — straight-through: every selected layer backpropagates ``dL/dy`` unchanged.
* ``"smooth"`` — the layers' own differentiable relaxation at ``temperature`` (for kWTA:
  ``x · sigmoid((x - t_k) / (T · std))``; for a foreign top-k gate the same relaxation with ``k`` read from the
  gate's own output, :func:`attacks.gates.relaxed_gate`; for a piecewise-constant layer the identity). With
  ``temperature_schedule=[T1, T2, ...]`` (decreasing: sharpening over the attack) the attack runs in stages, one per
  temperature. **Documented choice:** the :class:`Attack`
  interface has no initial point and inner attacks may attack sub-batches, so a stage cannot be warm-started from
  the previous stage's ``x_adv`` without knowing the inner attack's internals. Each stage therefore restarts from
  the clean ``x`` with the inner attack's own initialisation (its ``random_start`` as configured, seed
  ``seed + stage``) and attacks only the samples still robust after the earlier stages; the inner attack's
  ``steps`` budget (when it has one) is split evenly over the stages whose inner attack takes steps (earlier stages
  get the remainder, at least one step each), or per stage as ``stage_steps=[S1, S2, ...]``, where a ``None`` entry
  takes an even share of what the total leaves after the set ones (a stage whose inner takes no steps: ``None``;
  :func:`attacks.bpda_stages.stage_budgets`) (e.g. a short warm stage that breaks the easy
  samples, then a long run at the low temperature for the rest: on the small kWTA CNNs a long single run at
  ``T ≈ 0.03`` breaks the hard samples that restarts and short stages leave, ``benchmarks/STRENGTH.md``); per
  sample the most adversarial point found is kept (the first misclassified one, otherwise the one with the largest
  margin ``max_{j≠y} z_j - z_y`` on the exact model). A stage's entry may also vary the temperature *per gradient
  evaluation* of its inner attack (one run, no restart): a list ``[T1, T2, ...]`` is cycled, ``{"log_uniform": [lo,
  hi]}`` draws ``T`` log-uniformly (seeded) — an expectation over surrogates, for models whose hard samples need
  different temperatures (on the small kWTA CNNs k/N 0.05's break near ``T = 0.1``, k/N 0.2's near 0.03;
  ``benchmarks/STRENGTH.md``). The switched layers' temperature is set before every gradient-enabled forward of the
  model; the forward values stay exact. ``stage_keep=[1, K2, K3, ...]`` spends a later stage's steps on the
  samples most likely to break: stage *i* attacks only the ``ceil(Ki · M)`` of the ``M`` samples still robust whose
  best margin so far is largest (closest to misclassification; ties to the lower index) — successive halving over
  samples, so that long runs go where they break the most (on the small kWTA CNNs most survivors are never broken,
  and 400 steps on the closest 40%, then 1,200 on the closest 15%, break more than 500 on every survivor, for fewer
  queries, ``benchmarks/STRENGTH.md``). ``stage_params=[{...}, {...}, ...]`` gives each stage's inner attack its
  own parameters on top of ``inner_params`` (e.g. APGD's ``initial_step`` for the long stages only); an entry's
  ``inner`` runs another gradient attack in that stage (e.g. ``apgd-t``, targeted, in the last one).
* ``"learned"`` — for every selected layer, a small differentiable module fitted on the batch (and random
  perturbations of it) to reproduce the layer's input→output map (:mod:`attacks.surrogates`); per-layer fit errors
  (relative MSE) are logged and kept in ``last_fit_error``.
* ``"model"`` — a differentiable twin of the whole model (a deep copy with learned layer surrogates, distilled on the
  KL divergence to the target's outputs) supplies the gradients, while the forward value (hence every decision the
  inner attack takes, and the returned points) is the target's exact output. ``last_fit_error`` holds the layer
  fits and ``"logits"``. The target is never modified.

Which layers (``layers``): by default every module implementing the BPDA protocol (our kWTA layers); or module
names, globs on the names, or class names (:func:`attacks.bpda_wrap.select_modules`), or a mapping from module name
to :class:`attacks.bpda_wrap.LayerTarget` (what ``kwta_robust``'s evaluation runner passes after probing the model:
``bpda_layers: auto`` acts on every detected top-k gate and piecewise-constant layer, see ``kwta_robust.detect``).
A module that does not implement the protocol is wrapped for the duration of the call
(:class:`attacks.bpda_wrap.ModuleBackward`): its forward output stays bit-identical, its backward is the surrogate's;
every hook is removed afterwards. A BPDA attack acting on no layer runs the inner attack alone, once: with the
first stage's budget, since later temperature stages would only repeat the same attack with nothing to sharpen;
``last_switched_layers`` is then empty (the evaluation runner flags it: ``bpda-no-layer``).

Example::

    attack = create_attack("bpda", surrogate="smooth", inner="pgd", inner_params={"steps": 100},
                           temperature_schedule=[1.0, 0.3, 0.1])
    attack.name                      # 'bpda-smooth+pgd'
    x_adv = attack(model, x, y, ThreatModel("linf", "8/255"))
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, ContextManager, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from attacks.base import (
    Attack,
    AttackConfigError,
    ThreatModel,
    attack_info,
    begin_attack,
    create_attack,
    eval_mode,
    margin_loss,
    register_attack,
    rng_scope,
    seeded_generator,
)
from attacks.bpda_protocol import set_temperature, surrogate_backward, surrogate_layers
from attacks.bpda_stages import closest_to_breaking, stage_budgets, stage_error, stage_zero_draw
from attacks.bpda_temperature import StepTemperature, per_step_temperature, stage_temperature
from attacks.bpda_wrap import LayerTarget, attached_backward, select_modules
from attacks.errors import (COUNT_LIMIT, FLOAT32_RANGE, SEED_LIMIT, in_float32_range, is_finite_number, is_seed,
                           is_whole_number, too_large)
from attacks.registry import Registry
from attacks.settings import nested_settings
from attacks.surrogates import (
    DistillSettings,
    FitSettings,
    GradientSwapModel,
    distill_model_twin,
    fit_layer_surrogates,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SurrogatePlan:
    """What a surrogate builder hands back: the model the inner attack differentiates (inside ``context``)."""

    context: Callable[[], ContextManager[tuple[nn.Module, Mapping[str, nn.Module]]]]
    fit_error: dict[str, float]


Targets = Mapping[str, LayerTarget]
#: The surrogate a BPDA attack uses when its config names none.
DEFAULT_SURROGATE = "smooth"


@contextlib.contextmanager
def _switched(
    model: nn.Module, targets: Targets, spec: Any, temperature: float | None
) -> Iterator[tuple[nn.Module, Mapping[str, nn.Module]]]:
    with attached_backward(model, targets) as controllers:
        with surrogate_backward(model, spec, temperature, controllers) as layers:
            yield model, layers


@contextlib.contextmanager
def _swapped(model: nn.Module, twin: nn.Module) -> Iterator[tuple[nn.Module, Mapping[str, nn.Module]]]:
    yield GradientSwapModel(model, twin), {}


def switched_plan(model: nn.Module, targets: Targets, spec: Any, temperature: float | None = None,
                  fit_error: Mapping[str, float] | None = None) -> SurrogatePlan:
    """The plan that switches every target layer's backward to ``spec`` while BPDA's inner attack runs (the forward
    stays exact): ``"identity"``, ``"smooth"`` (at ``temperature``) or, by layer name, a map ``g(h)`` from the
    layer's input to a differentiable stand-in for its output (:mod:`attacks.bpda_protocol`). What a surrogate
    plug-in's builder returns: ``switched_plan(model, targets, {name: my_g for name in targets})``."""
    return SurrogatePlan(lambda: _switched(model, targets, spec, temperature), dict(fit_error or {}))


def _plan_identity(attack: "BPDA", model: nn.Module, targets: Targets, x: Tensor, threat: ThreatModel) -> SurrogatePlan:
    return switched_plan(model, targets, "identity")


def _plan_smooth(attack: "BPDA", model: nn.Module, targets: Targets, x: Tensor, threat: ThreatModel) -> SurrogatePlan:
    return switched_plan(model, targets, "smooth", attack.temperatures[0])


def _plan_learned(attack: "BPDA", model: nn.Module, targets: Targets, x: Tensor, threat: ThreatModel) -> SurrogatePlan:
    fitted, errors = fit_layer_surrogates(model, x, threat, attack.fit_settings, attack.generator(x.device, 1),
                                          list(targets))
    return switched_plan(model, targets, dict(fitted), fit_error=errors)


def _plan_model(attack: "BPDA", model: nn.Module, targets: Targets, x: Tensor, threat: ThreatModel) -> SurrogatePlan:
    twin, errors = distill_model_twin(
        model, x, threat, attack.fit_settings, attack.distill_settings, attack.generator(x.device, 2), list(targets)
    )
    return SurrogatePlan(lambda: _swapped(model, twin), errors)


SurrogateBuilder = Callable[["BPDA", nn.Module, Targets, Tensor, ThreatModel], SurrogatePlan]
#: Which of BPDA's own settings each built-in surrogate reads (records; a plug-in surrogate: every one of them).
SURROGATE_SETTINGS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "identity": (), "smooth": ("temperatures",), "learned": ("fit",), "model": ("fit", "distill")})
#: BPDA's backward passes by name (a generic :class:`~attacks.registry.Registry`): each builds the plan that swaps
#: the target layers' backward for the surrogate's.
SURROGATES: Registry[SurrogateBuilder] = Registry("surrogate", entry_point_group="kwta_robust.surrogates")
SURROGATES.register("identity", _plan_identity, summary="straight-through: the layer's backward is the identity")
SURROGATES.register("smooth", _plan_smooth, summary="tempered top-k relaxation of a gate (identity elsewhere)")
SURROGATES.register("learned", _plan_learned, summary="a fitted per-layer surrogate")
SURROGATES.register("model", _plan_model, summary="a distilled differentiable twin of the whole model")


def _factory_parameters(name: str) -> Mapping[str, inspect.Parameter]:
    return inspect.signature(attack_info(name).factory).parameters


def _check_inner(inner: Any, field: str) -> None:
    """A one-line error naming ``field`` unless ``inner`` names a registered gradient attack BPDA can wrap."""
    if not isinstance(inner, str):
        raise AttackConfigError(f"{field}: expected a registered attack name like 'pgd', got {type(inner).__name__}")
    info = attack_info(inner, field=field)
    if info.kind not in ("white-box", "adaptive"):
        raise AttackConfigError(f"{field}: {inner!r} is a {info.kind} attack; BPDA wraps a gradient attack like 'pgd'")
    if not info.uses_gradient:  # it would run unchanged while the record said BPDA acted on the gates
        raise AttackConfigError(f"{field}: {inner!r} estimates gradients from the model's outputs, which BPDA "
                                "leaves exact, so its surrogates would change nothing; wrap a gradient attack "
                                f"like 'pgd' or 'eot', and list {inner} as an attack of its own")


def _check_layers(layers: Any) -> Sequence[str] | dict[str, LayerTarget] | None:
    """Validate the ``layers`` parameter (see the module docstring)."""
    if layers is None:
        return None
    if isinstance(layers, str):
        layers = [layers]
    if isinstance(layers, Mapping):
        return {str(name): LayerTarget.of(target) for name, target in layers.items()}
    if not isinstance(layers, (list, tuple)) or not all(isinstance(s, str) and s for s in layers):
        raise AttackConfigError(f"layers: expected module names, globs or class names, got {layers!r}")
    if "auto" in layers:
        raise AttackConfigError("layers: 'auto' needs the layer probe of kwta_robust (bpda_layers: auto in an eval "
                                "config); here give module names, globs or class names")
    return tuple(layers)


@register_attack("bpda", kind="bpda", draws=stage_zero_draw)
class BPDA:
    """BPDA wrapper (Athalye et al., ICML 2018): any registered gradient attack with surrogate gradients.

    See the module docstring for the surrogates, the temperature schedule and the learned fits.

    Parameters: ``surrogate`` (``"identity" | "smooth" | "learned" | "model"``), ``inner`` (registry name of the
    gradient attack, default ``"pgd"``), ``inner_params`` (its parameters; ``seed`` defaults to this attack's),
    ``layers`` (which modules: see the module docstring; default the BPDA-capable ones),
    ``temperature`` (smooth surrogate), ``temperature_schedule`` (smooth only; stages, each a temperature, a list
    cycled per gradient evaluation or ``{"log_uniform": [lo, hi]}`` drawn per evaluation, see above), ``stage_steps``
    (the inner attack's ``steps`` per stage instead of an even split of ``inner_params.steps``; ``None``: a share of
    what it leaves), ``stage_keep`` (per stage, the fraction of the still-robust samples it attacks: those closest to
    breaking; first entry 1),
    ``stage_params`` (per stage, inner-attack parameters added to ``inner_params``, and optionally that stage's own
    ``inner``), ``seed``,
    learned-fit budget ``fit_perturbations``, ``fit_steps``, ``fit_lr``, ``fit_hidden``, ``fit_max_rows`` and
    model-twin distillation budget ``distill_steps``, ``distill_lr``.

    After a call: ``last_switched_layers`` (names of the layers acted on: switched, or replaced in the twin) and
    ``last_fit_error`` (``{layer: relative MSE}``, plus ``"logits"`` for ``surrogate="model"``; empty otherwise).
    ``stages`` holds the configured inner attacks (one per temperature stage).

    Threat model: the inner attack's norms; ``x`` ``[N, ...]``, ``y`` ``[N]`` → ``x_adv`` ``[N, ...]``.

    Example::

        bpda = create_attack("bpda", surrogate="learned", inner="apgd-ce", inner_params={"steps": 100})
        x_adv = bpda(model, x, y, ThreatModel("linf", 0.3))
        bpda.last_fit_error        # {'features.2': 0.021, ...}
    """

    def __init__(
        self,
        surrogate: str = DEFAULT_SURROGATE,
        inner: str = "pgd",
        inner_params: Mapping[str, Any] | None = None,
        temperature: float = 1.0,
        temperature_schedule: Sequence[float] | None = None,
        stage_steps: Sequence[int | None] | None = None,
        stage_keep: Sequence[float] | None = None,
        stage_params: Sequence[Mapping[str, Any]] | None = None,
        seed: int = 0,
        fit_perturbations: int = 3,
        fit_steps: int = 300,
        fit_lr: float = 1e-2,
        fit_hidden: int = 16,
        fit_max_rows: int = 512,
        distill_steps: int = 100,
        distill_lr: float = 1e-3,
        layers: Sequence[str] | Mapping[str, Any] | None = None,
    ) -> None:
        SURROGATES.info(surrogate)  # an unknown name: one line listing the known surrogates
        _check_inner(inner, "inner")
        if not (is_finite_number(temperature) and temperature > 0 and in_float32_range(temperature)):
            raise AttackConfigError(f"temperature: must be a finite number > 0 {FLOAT32_RANGE}, got {temperature!r}")
        #: per stage: ``None`` (a fixed temperature) or how it changes per gradient evaluation
        #: (:func:`attacks.bpda_temperature.stage_temperature`)
        self.temperature_steps: list[StepTemperature | None] = [None]
        if temperature_schedule is not None:
            if surrogate != "smooth":
                raise AttackConfigError("temperature_schedule: only the 'smooth' surrogate has a temperature; drop it")
            if isinstance(temperature_schedule, (str, bytes)) or not isinstance(temperature_schedule, Sequence) \
                    or not temperature_schedule:
                raise AttackConfigError(
                    f"temperature_schedule: give a non-empty list of temperatures > 0, got {temperature_schedule!r}"
                )
            entries = [stage_temperature(t, temperature_schedule) for t in temperature_schedule]
            self.temperatures: list[float] = [first for first, _ in entries]
            self.temperature_steps = [steps for _, steps in entries]
        else:
            self.temperatures = [float(temperature)]
        self.surrogate = surrogate
        self.layers = _check_layers(layers)
        self.inner = inner
        if inner_params is not None and not isinstance(inner_params, Mapping):
            raise AttackConfigError(f"inner_params: expected a mapping of the inner attack's parameters like "
                                    f"{{steps: 40}}, got {inner_params!r}")
        self.inner_params = dict(inner_params or {})
        self.stage_params = self._check_stage_params(stage_params)
        #: the inner attack of each stage: ``inner``, or the ``inner`` a stage's ``stage_params`` entry names
        self.stage_inner: list[str] = [entry.pop("inner", inner) for entry in self.stage_params]
        self.stage_steps = self._check_stage_steps(stage_steps)
        self.stage_keep = self._check_stage_keep(stage_keep)
        self.seed = int(seed)
        self.fit_settings = FitSettings(
            perturbations=fit_perturbations, steps=fit_steps, lr=fit_lr, hidden=fit_hidden, max_rows=fit_max_rows
        )
        self.distill_settings = DistillSettings(steps=distill_steps, lr=distill_lr)
        self.norms = tuple(n for n in attack_info(inner).norms
                           if all(n in attack_info(name).norms for name in self.stage_inner))
        if not self.norms:
            raise AttackConfigError(f"stage_params: the stages' inner attacks {sorted(set(self.stage_inner))} share "
                                    "no threat model; pick inner attacks that support the same norm")
        # every stage's inner attack once, in stage order: one inner keeps the name records and logs knew
        self.name = f"bpda-{surrogate}+{'/'.join(dict.fromkeys(self.stage_inner))}"
        self.stages = self._build_stages()
        self.last_fit_error: dict[str, float] = {}
        self.last_switched_layers: list[str] = []

    # --- construction ---------------------------------------------------------------------------------------
    def _per_stage(self, value: Any, field: str, what: str) -> list:
        """``value`` as a list of one entry per temperature stage, or a one-line error naming ``field``."""
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise AttackConfigError(f"{field}: give a list of {what}, one per stage, got {value!r}")
        items = list(value)
        if len(items) != len(self.temperatures):
            raise AttackConfigError(
                f"{field}: {len(items)} entries for {len(self.temperatures)} temperature stage(s); give one per "
                "temperature in temperature_schedule")
        return items

    def _check_stage_steps(self, stage_steps: Sequence[int | None] | None) -> list[int | None] | None:
        if stage_steps is None:
            return None
        steps = self._per_stage(stage_steps, "stage_steps", "step counts")
        if not all(n is None or is_whole_number(n, 1) for n in steps):
            raise AttackConfigError(f"stage_steps: every entry must be an integer >= 1 (or null: a share of "
                                    f"inner_params.steps), got {stage_steps!r}")
        if sum(n or 0 for n in steps) > COUNT_LIMIT:
            raise AttackConfigError(f"stage_steps: the steps of all stages {too_large(sum(n or 0 for n in steps))}")
        for i, (n, name) in enumerate(zip(steps, self.stage_inner)):
            if n is not None and "steps" not in _factory_parameters(name):
                raise AttackConfigError(f"stage_steps[{i}]: stage {i}'s inner attack {name!r} has no 'steps' budget; "
                                        "make that entry null")
        shares = [n is None and "steps" in _factory_parameters(name) for n, name in zip(steps, self.stage_inner)]
        if "steps" in self.inner_params and not any(shares):  # a null stage taking steps shares the total
            raise AttackConfigError(
                "stage_steps: give the steps either per stage (stage_steps) or in total (inner_params.steps), not both")
        return steps

    def _check_stage_keep(self, stage_keep: Sequence[float] | None) -> list[float]:
        if stage_keep is None:
            return [1.0] * len(self.temperatures)
        keep = self._per_stage(stage_keep, "stage_keep", "fractions in (0, 1]")
        if not all(is_finite_number(v) and 0 < v <= 1 for v in keep):
            raise AttackConfigError(f"stage_keep: every entry must be a fraction in (0, 1], got {stage_keep!r}")
        if keep[0] != 1:
            raise AttackConfigError(f"stage_keep: the first stage attacks every sample (there is no earlier stage to "
                                    f"rank them by); make the first entry 1, got {stage_keep!r}")
        return [float(v) for v in keep]

    def _check_stage_params(self, stage_params: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
        if stage_params is None:
            return [{} for _ in self.temperatures]
        entries = self._per_stage(stage_params, "stage_params", "mappings of inner-attack parameters")
        if any(not isinstance(entry, Mapping) for entry in entries):
            raise AttackConfigError(f"stage_params: every entry must be a mapping of inner-attack parameters (use {{}} "
                                    f"for none), got {stage_params!r}")
        for i, entry in enumerate(entries):
            if "inner" in entry:
                _check_inner(entry["inner"], f"stage_params[{i}].inner")
            for reserved, instead in (("steps", "stage_steps"), ("seed", "BPDA's seed (stage i runs seed + i)")):
                if reserved in entry:
                    raise AttackConfigError(f"stage_params[{i}]: {reserved!r} is set per stage by BPDA; use {instead} "
                                            f"instead of this entry's {reserved!r}")
        return [dict(entry) for entry in entries]

    def _build_stages(self) -> list[Attack]:
        """One inner attack per temperature stage (validates ``inner_params`` now, not mid-evaluation)."""
        params = _factory_parameters(self.inner)
        n = len(self.temperatures)
        base_seed = self.inner_params.get("seed", self.seed)
        if not is_seed(base_seed):  # int("x") stopped the run with a raw ValueError; 1.5 was read as 1
            raise AttackConfigError(f"inner_params.seed: must be an integer from 0 to 2**63 - 1, got {base_seed!r}")
        takes = ["steps" in _factory_parameters(name) for name in self.stage_inner]
        given: list[int | None] = [None] * n if self.stage_steps is None else list(self.stage_steps)
        total = None
        if n > 1 and "steps" in params and any(g is None and t for g, t in zip(given, takes)):
            total = self.inner_params.get("steps", params["steps"].default)
            if not isinstance(total, int) or total < 1:
                raise AttackConfigError(
                    f"inner_params.steps: must be an integer >= 1 to split over stages, got {total!r}"
                )
            if total < sum(takes) and self.stage_steps is None:
                logger.warning("bpda: %d inner steps over %d temperature stages; each stage runs 1 step", total, n)
        elif n > 1 and self.stage_steps is None:
            logger.info("bpda: inner attack %r has no 'steps' parameter; each stage uses its full budget", self.inner)
        where = "inner_params.steps" if "steps" in self.inner_params else f"the default of {self.inner!r}"
        steps = given if n == 1 else stage_budgets(given, takes, total, where)
        stages, self.stage_given = [], []  # stage_given: each stage's parameters, for its settings
        for i, stage_steps in enumerate(steps):
            stage_params = {**self.inner_params, **self.stage_params[i]}
            name = self.stage_inner[i]
            if "seed" in _factory_parameters(name):
                stage_params["seed"] = (int(base_seed) + i) % SEED_LIMIT
            if stage_steps is not None:
                stage_params["steps"] = stage_steps
            elif not takes[i] and "steps" in params:  # BPDA's inner's total, split: this stage's attack takes none
                stage_params.pop("steps", None)  # (an inner without steps given steps is refused, as before)
            self.stage_given.append(stage_params)
            try:
                stages.append(create_attack(name, **stage_params))
            except AttackConfigError as exc:
                error = stage_error(i, name, self.inner, self.stage_params[i], stage_params, exc)
                raise AttackConfigError(error) from None
        return stages

    def attack_settings(self, num_classes: int | None = None) -> dict[str, Any]:
        """Effective hyperparameters for records (:mod:`attacks.settings`): the surrogate, what it reads of
        :data:`SURROGATE_SETTINGS` (per stage its temperature or per-step schedule as ``temperature_schedule`` writes
        it, the fit and distillation budgets), each stage's share of the survivors and, under ``inner``, each
        stage's inner attack with its own defaults (one entry per stage; ``num_classes`` caps its class counts). The
        layers acted on are the record's ``bpda_layers``, not settings."""
        uses = SURROGATE_SETTINGS.get(self.surrogate, ("temperatures", "fit", "distill"))
        settings: dict[str, Any] = {"surrogate": self.surrogate}
        if "temperatures" in uses:  # as temperature_schedule writes them: T, [T1, T2] cycled, {log_uniform: [lo, hi]}
            settings["temperatures"] = [t if s is None else list(s.values) if s.kind == "cycle" else
                                        {"log_uniform": list(s.values)}
                                        for t, s in zip(self.temperatures, self.temperature_steps)]
        settings["stage_keep"] = list(self.stage_keep)
        settings.update({k: v for k, v in (("fit", self.fit_settings), ("distill", self.distill_settings))
                         if k in uses})
        settings["inner"] = [nested_settings(stage, given, attack_info(name).factory, name, num_classes=num_classes)
                             for stage, given, name in zip(self.stages, self.stage_given, self.stage_inner)]
        return settings

    def targets(self, model: nn.Module) -> dict[str, LayerTarget]:
        """The modules this attack acts on in ``model``, by name (see ``layers``)."""
        if self.layers is None:
            return {name: LayerTarget() for name in surrogate_layers(model)}
        if isinstance(self.layers, dict):
            return dict(self.layers)
        return {name: LayerTarget() for name in select_modules(model, self.layers)}

    def generator(self, device: torch.device, stream: int) -> torch.Generator:
        """The seeded generator for one of this attack's random streams (1: layer fits, 2: model twin)."""
        return seeded_generator(self.seed * 1000003 + stream, device)

    # --- attack ---------------------------------------------------------------------------------------------
    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        # a randomized model draws from the global RNG outside the inner attack too (checks, fits): fork it
        with rng_scope(self.seed):
            return self._attack(model, x, y, threat)

    def _attack(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        self.last_fit_error, self.last_switched_layers = {}, []
        begin_attack(self.name, self.norms, model, x, y, threat)
        if x.shape[0] == 0:  # nothing to fit or attack (the cascade may hand over an empty batch)
            return x.clone()
        targets = self.targets(model)
        self.last_switched_layers = list(targets)
        if not targets:
            logger.info("%s: acts on no layer; this runs the inner attack %r unchanged, once (the first stage's "
                        "budget)", self.name, self.inner)
        with eval_mode(model):
            plan = SURROGATES.get(self.surrogate)(self, model, targets, x, threat)
            if not isinstance(plan, SurrogatePlan):  # a plug-in's builder: an AttributeError on .fit_error before
                raise AttackConfigError(f"surrogate: the builder of {self.surrogate!r} returned "
                                        f"{type(plan).__name__}, not a SurrogatePlan; fix that plug-in")
            self.last_fit_error = dict(plan.fit_error)
            with plan.context() as (attacked, switched):
                if len(self.stages) == 1 or not targets:  # nothing to sharpen: the first stage alone
                    with per_step_temperature(attacked, switched, self.temperature_steps[0], self.seed):
                        return self.stages[0](attacked, x, y, threat)
                return self._run_stages(model, attacked, switched, x, y, threat)

    def _run_stages(
        self,
        target: nn.Module,
        attacked: nn.Module,
        switched: Mapping[str, nn.Module],
        x: Tensor,
        y: Tensor,
        threat: ThreatModel,
    ) -> Tensor:
        """Temperature stages (see the module docstring): best point per sample over the stages."""
        best = x.clone()
        with torch.no_grad():
            best_margin = margin_loss(target(x), y)
        for i, (temperature, stage) in enumerate(zip(self.temperatures, self.stages)):
            todo = (best_margin <= 0).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            todo = closest_to_breaking(todo, best_margin[todo], self.stage_keep[i])
            set_temperature(switched, temperature)
            with per_step_temperature(attacked, switched, self.temperature_steps[i], self.seed + i):
                x_stage = threat.project(stage(attacked, x[todo], y[todo], threat), x[todo])
            with torch.no_grad():
                margin = margin_loss(target(x_stage), y[todo])
            better = margin > best_margin[todo]
            best[todo[better]] = x_stage[better]
            best_margin[todo[better]] = margin[better]
            logger.debug("%s: stage T=%g broke %d/%d", self.name, temperature, int((margin > 0).sum()), len(todo))
        return best
