"""The shared vocabulary of the gradient-masking diagnostics (:mod:`kwta_robust.diagnostics` registers the checks,
:mod:`kwta_robust.probe_checks` holds those over the model probes): severities, attack-kind groups, budget
parameters, the named :class:`Thresholds`, and helpers over a record's layer probe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

from attacks.base import REGISTRY, attack_defaults
from attacks.plugin_isolation import isolated
from kwta_robust.errors import ConfigError, KwtaRobustError, first_line
from kwta_robust.numbers import percent_text
from kwta_robust.results import EvalRecord, Flag

CRITICAL, WARNING, INFO = "critical", "warning", "info"
SEVERITIES: tuple[str, ...] = (CRITICAL, WARNING, INFO)
#: Attack kinds (``attacks.base.AttackInfo.kind``) grouped for the checks.
ADAPTIVE_KINDS: tuple[str, ...] = ("bpda", "adaptive")
#: The kind of an attack crafted on another model (``compare``'s from the other compared models): it never queries
#: the model under test, so it is no evidence about that model's gradients (Carlini et al. 2019: a sanity check).
TRANSFER_KIND = "transfer"
#: Attack kinds that never read the model's gradient: black-box queries, and transfer from another model.
BLACK_BOX_KINDS: tuple[str, ...] = ("black-box", TRANSFER_KIND)
#: Attack kinds that query the model without its gradient, for a record's attack this installation does not
#: register (a plug-in of another installation); registered attacks say it themselves (``AttackInfo.uses_gradient``).
GRADIENT_FREE_KINDS: tuple[str, ...] = ("adaptive", "black-box")
#: Parameters that define an attack's budget (a "ladder" is the same attack at growing budgets).
BUDGET_PARAMS: tuple[str, ...] = (
    "steps", "restarts", "n_restarts", "iterations", "queries", "n_queries", "max_queries", "samples",
    "samples_start", "samples_end", "eot_samples", "stage_steps",
)


def with_budget_defaults(attack: str, params: Any) -> dict:
    """``params`` with the budgets (:data:`BUDGET_PARAMS`) a registered ``attack`` takes by default filled in, and
    those of its inner attack in ``inner_params``: ``pgd`` and ``pgd {steps: 100}`` are a ladder of 40 and 100 steps,
    ``restarts: 5`` beside none one of 1 and 5 restarts."""
    params = dict(params) if isinstance(params, dict) else {}
    try:  # a plug-in's factory whose signature cannot be read takes its budgets as given
        defaults = attack_defaults(attack) if attack in REGISTRY else {}
    except (TypeError, ValueError):
        defaults = {}
    found = {k: v for k, v in defaults.items() if k in BUDGET_PARAMS and isinstance(v, (int, float))
             and not isinstance(v, bool)}
    found.update(params)
    inner = params.get("inner", defaults.get("inner"))
    if "inner_params" in defaults and isinstance(inner, str):
        found["inner_params"] = with_budget_defaults(inner, params.get("inner_params") or {})
    return found


@dataclass(frozen=True)
class Thresholds:
    """Named thresholds of the checks (fractions are of the ``n`` evaluated samples)."""

    wide_margin: float = 0.05
    """BPDA/adaptive or black-box/transfer attacks 'beat' a white-box attack when they break at least this fraction
    of n among its survivors."""
    single_step_margin: float = 0.02
    """A single-step attack breaking this fraction of an iterative attack's survivors is flagged."""
    ladder_margin: float = 0.02
    """A larger budget (steps, restarts) breaking this fraction of the smaller budget's survivors is flagged."""
    min_count: int = 2
    """... and at least this many samples (avoids flags from one lucky sample)."""
    eps_monotonic_tolerance: float = 0.02
    """Robust accuracy may rise with eps by at most this much (absolute) before it is flagged."""
    large_eps_max_accuracy: float = 0.05
    """The sanity attack at a very large eps must leave at most this robust accuracy."""
    zero_gradient_fraction: float = 0.1
    """Flag when more than this fraction of probed samples has an all-zero input gradient."""
    output_rtol: float = 1e-5
    """Two forward passes may differ by this much relative to the largest logit."""
    probability_atol: float = 1e-4
    """Outputs in [0, 1] whose rows sum to 1 within this tolerance are taken to be probabilities."""

    @property
    def kills_needed(self) -> int:
        """The samples an attack must break for a flag saying it broke them: ``min_count``, and at least one (at
        ``min_count: 0`` and a margin of 0, breaking none is no evidence of anything)."""
        return max(self.min_count, 1)


#: The thresholds that are fractions of the samples (or of accuracy), refused above 1 (a percentage written as one).
FRACTION_THRESHOLDS: tuple[str, ...] = ("wide_margin", "single_step_margin", "ladder_margin",
                                        "eps_monotonic_tolerance", "large_eps_max_accuracy", "zero_gradient_fraction")


#: How far past a bar a difference of two fractions (of samples, of weights) must be to be beyond it: 0.14 - 0.12
#: reads 0.020000000000000018 in binary floating point, past a 0.02 bar it only meets.
ROUNDING_SLACK = 1e-9


def exceeds(difference: float, bar: float) -> bool:
    """``difference > bar`` for a difference of two fractions, beyond float rounding (:data:`ROUNDING_SLACK`): a
    difference of exactly the bar (12% to 14% against 2 points) does not exceed it."""
    return difference > bar + ROUNDING_SLACK


def pct(x: float) -> str:
    """A fraction as a percentage with one decimal, for flag messages."""
    return percent_text(x) + "%"


def detected_layers(record: EvalRecord, *kinds: str) -> list[dict]:
    """Layers of ``record.detection`` found to be any of ``kinds`` (``gate``, ``piecewise-constant``, ...)."""
    return [l for l in (record.detection or {}).get("layers", []) if set(kinds) & set(l.get("kinds", []))]


def layer_names(layers: list[dict]) -> str:
    """``name (ModuleClass)`` of each layer, comma-separated."""
    return ", ".join(f"{l['name']} ({l.get('module_class', '?')})" for l in layers)


def layer_evidence(layers: list[dict]) -> list[dict]:
    """The layers' probe evidence for a flag, without the per-unit factors of boosted gates (the record's detection
    holds them once)."""
    return [{"name": l["name"], "module_class": l.get("module_class"),
             "evidence": {k: v for k, v in l.get("evidence", {}).items() if k != "score_factors"}} for l in layers]


def is_randomized(record: EvalRecord, thr: Thresholds) -> bool:
    """The model's outputs are random: the randomness probe (``provenance.randomness``), the determinism probe
    (two forward passes differ beyond ``output_rtol``) or the layer probe (a randomized layer) says so."""
    found = record.provenance.get("randomness")
    p = record.probes
    differ = float(p.get("max_output_diff", 0.0)) > thr.output_rtol * max(float(p.get("max_abs_output", 0.0)), 1e-12)
    return (isinstance(found, dict) and bool(found.get("randomized"))) or differ \
        or int(p.get("prediction_changes", 0)) > 0 or bool(detected_layers(record, "randomized"))


#: What a randomized model's attack results mean (Athalye, Carlini & Wagner, ICML 2018, §4.2): appended to the flags
#: that would otherwise blame a discontinuous gradient.
RANDOMIZED_CAUSE = ("the model is randomized: gradient attacks followed the gradients of single draws, which point "
                    "in random directions (stochastic gradients), not necessarily a masked one; attack its expectation "
                    "(attack: eot) before reading this as masking")
#: The same for a result of an attack that did average over the draws (:func:`averages_draws`).
AVERAGED_CAUSE = ("the model is randomized and this attack averaged its gradients over the draws (EOT) where the "
                  "reference followed single draws: part of the gap is the randomness, which the worst case takes in; "
                  "the rest may be masking")


def averages_draws(result: Any) -> bool:
    """The attack averaged its gradients over the model's draws: ``eot``, or ``bpda`` with ``inner: eot`` (its
    params as recorded), with more than one draw per gradient (``eot_samples``, its default when not recorded; one
    draw is plain PGD).
    Such a run is the expectation attack the randomized-model flags ask for."""
    if result.attack == "eot":
        params = result.params
    elif result.attack == "bpda" and result.params.get("inner") == "eot":
        params = result.params.get("inner_params") or {}
    else:
        return False
    samples = params.get("eot_samples", attack_defaults("eot")["eot_samples"])
    return not isinstance(samples, (int, float)) or samples > 1


def is_transfer(result: Any) -> bool:
    """Whether ``result`` (an :class:`~kwta_robust.results.AttackResult`) is a transfer attack: crafted on another
    model (a ``source``), of kind ``transfer``, or a registered attack of that kind; it never queried the model."""
    if result.source is not None or result.kind == TRANSFER_KIND:
        return True
    return result.attack in REGISTRY and REGISTRY.get(result.attack).kind == TRANSFER_KIND


def gradient_free_labels(record: EvalRecord) -> list[str]:
    """Labels of the record's attacks that queried the model under test without its gradients, sorted: those
    registered with ``uses_gradient=False`` (gradient estimation, Square, HopSkipJump, Boundary; ``eot`` averages the
    gradient, so it is not one), or an unregistered attack of a :data:`GRADIENT_FREE_KINDS` kind. A transfer attack
    (:func:`is_transfer`) is none: crafted on another model, it says nothing about this model's gradients. The checks
    of unattacked gates drop to a warning when there are any."""
    def gradient_free(r: Any) -> bool:
        if is_transfer(r):
            return False
        return not REGISTRY.get(r.attack).uses_gradient if r.attack in REGISTRY else r.kind in GRADIENT_FREE_KINDS

    return sorted({r.label for r in record.results if gradient_free(r)})


def masking_consequence(record: EvalRecord, free: list[str], what: str) -> str:
    """What unattacked top-k gates mean for ``record``'s numbers, ``free`` its gradient-free attacks
    (:func:`gradient_free_labels`) and ``what`` the gates' name in the clause: beside gradient attacks, that their
    numbers are upper bounds masking can inflate (and which attacks went without ``what``); when no gradient attack
    ran on the model (a black-box-only suite), that the worst case rests on the gradient-free attacks (and the
    transfer attacks, crafted on other models) alone, which on kWTA fall short of BPDA (Tramèr et al., NeurIPS 2020:
    gradient estimation left kWTA well above BPDA's number)."""
    transfers = list(dict.fromkeys(r.label for r in record.results if is_transfer(r)))
    on_model = {r.label for r in record.results if not is_transfer(r)}
    if set(free) >= on_model and (free or transfers):
        rest = free + [f"{t} (crafted on another model)" for t in transfers]
        return (f"the worst case rests on {', '.join(rest)} alone (no gradient attack ran), and attacks without "
                f"{what} fall short of BPDA on kWTA")
    return ("the gradient attacks' numbers are upper bounds that gradient masking can inflate by tens of points"
            + (f"; only {', '.join(free)} attacked without {what}" if free else ""))


def checked_flags(code: str, check: Callable[..., Any], record: EvalRecord, thresholds: Any) -> list[Flag]:
    """``check(record, thresholds)``: its flags, or one error line naming the check when it raises or returns
    anything but a list of :class:`Flag` of a known severity (a plug-in's bug must not end in a traceback, nor its
    malformed flags in a wrong verdict); the harness's own errors (:class:`KwtaRobustError`) pass through as they
    are. The record's results are saved before the checks run."""
    try:
        with isolated(f"diagnostic check {code!r}"):  # its prints logged, the warnings filters put back
            found = check(record, thresholds)
    except KwtaRobustError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plug-in's bug, named in one line
        raise ConfigError(f"diagnostics: check {code!r} raised {type(exc).__name__}: {first_line(exc)}; fix the check "
                          "and re-run (the finished units are kept)") from exc
    bad = next((f for f in found if not isinstance(f, Flag) or f.severity not in SEVERITIES), None) \
        if isinstance(found, list) else found
    if not isinstance(found, list) or bad is not None:
        raise ConfigError(f"diagnostics: check {code!r} returned {type(bad).__name__} {bad!r:.80}; a check returns a "
                          f"list of kwta_robust.results.Flag with severity {', '.join(SEVERITIES)}")
    return found


def run_arguments(record: Any, thresholds: Any, codes: Any) -> tuple[Thresholds, list[str] | None]:
    """The thresholds (the defaults for ``None``) and the check codes of a run of the checks, each of its type, or
    one error line naming the argument (a check must not be blamed for its caller's argument, nor a code written as
    one string run letter by letter)."""
    thresholds = Thresholds() if thresholds is None else thresholds
    for name, value, what, text in (
            ("record", record, EvalRecord, "kwta_robust.results.EvalRecord"),
            ("thresholds", thresholds, Thresholds, "kwta_robust.diagnostics.Thresholds or None")):
        if not isinstance(value, what):
            raise ConfigError(f"run_checks: {name}: expected a {text}, got {type(value).__name__}")
    if codes is None:
        return thresholds, None
    if isinstance(codes, (str, bytes)) or not isinstance(codes, Iterable):
        raise ConfigError(f"run_checks: codes: expected a list of check codes or None, got {type(codes).__name__}; "
                          "e.g. ['adaptive-beats-pgd']")
    codes = list(codes)
    twice = next((c for i, c in enumerate(codes) if c in codes[:i]), None)
    if twice is not None:
        raise ConfigError(f"run_checks: codes: {twice!r} is listed twice (its flags would appear twice); list it once")
    return thresholds, codes
