"""Errors caused by user input, shared by :mod:`attacks` and ``kwta_robust`` (which re-exports them from
``kwta_robust.errors``): each message is one line naming the field at fault and the fix.

* :class:`InputError` — base of every error caused by user input (``kwta_robust.errors.KwtaRobustError``);
* :class:`ConfigError` — an invalid configuration value or key;
* :class:`AttackConfigError` — an invalid attack name, parameter or threat model (a ``ValueError``);
* :class:`RegistryError` — an unknown or twice-registered plug-in name. It is both a :class:`ConfigError` and an
  :class:`AttackConfigError`, so every existing ``except`` clause and the CLI's one-line error boundary catch it;
* :func:`check_seed_param`, :func:`check_int_param`, :func:`check_positive_param`, :func:`check_choice_param` — the
  attacks' parameter checks;
* :func:`is_whole_number`, :func:`is_finite_number` — what "an integer" and "a number" mean in every check of both
  packages (a bool is neither).

Defined here, below both packages, because the generic registry (:mod:`attacks.registry`) raises
:class:`RegistryError` and ``attacks`` never imports ``kwta_robust``.
"""

from __future__ import annotations

import inspect
import math
import numbers
import sys
from typing import Any, Callable, Iterable, Mapping, Sequence


class InputError(Exception):
    """Base class for errors caused by user input (configs, paths, checkpoints, data, names)."""


class ConfigError(InputError, ValueError):
    """Invalid configuration value or key: one line, ``"{field}: {detail}"``. Raised with ``field``/``detail``
    (instead of the whole message) it keeps them apart, so a config validator can put the field's full path in
    front of ``detail`` (:mod:`kwta_robust.configio`)."""

    def __init__(self, message: str = "", *, field: str | None = None, detail: str | None = None) -> None:
        if detail is not None:
            message = f"{field}: {detail}" if field else detail
        super().__init__(message)
        self.field = field
        self.detail = detail


class AttackConfigError(ValueError):
    """Invalid attack names, parameters or threat models; the message is one line naming the fix."""


class RegistryError(ConfigError, AttackConfigError):
    """An unknown name (or a name registered twice) in one of the plug-in registries: ``field`` and ``detail``
    (what is wrong, relative to the field) make the message ``"{field}: {detail}"``."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(field=field, detail=detail)

    def __reduce__(self) -> tuple:
        return type(self), (self.field, self.detail)


def unknown_detail(kind: str, value: object, known: Sequence[str], plural: str | None = None) -> str:
    """The one wording of "not one of the allowed names", for registries and fixed choices alike:
    ``"unknown {kind} {value!r}; known {kinds}: a, b, c"`` (after the field's name)."""
    text = f"unknown {kind} {value!r}; known {plural or kind + 's'}: {', '.join(map(str, known))}"
    folded = [name for name in known if isinstance(value, str) and str(name).lower() == value.lower()]
    return f"{text} (names are case-sensitive: write {folded[0]!r})" if folded else text


def attack_name_hint(name: object) -> str | None:
    """A fix for an attack name users write that is no attack: a label the shipped configs and the tables use
    (``bpda-smooth`` is ``attack: bpda`` with ``surrogate: smooth``), AutoAttack, or APGD without its loss."""
    text = name.lower().replace("_", "-") if isinstance(name, str) else ""
    if text.startswith("bpda-") and text != "bpda-":
        return (f"{name!r} is a label: a BPDA entry is attack: bpda with its surrogate in params, e.g. {{attack: bpda, "
                "label: bpda-smooth, params: {surrogate: smooth}} as in eval_configs/quickstart.yaml")
    if text in ("autoattack", "auto-attack", "aa"):
        return ("AutoAttack's standard attacks are apgd-ce, apgd-t, fab-t and square, each an entry of its own as in "
                "eval_configs/cifar10.yaml")
    if text == "apgd":
        return "APGD by its loss: apgd-ce (cross-entropy), apgd-dlr or apgd-t (targeted DLR)"
    return None


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (at most 200 characters; the class name when it is empty)."""
    text = exception_text(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def exception_text(exc: BaseException) -> str:
    """``str(exc)``, or ``(unprintable NAME)`` for an exception whose ``__str__`` itself raises (a plug-in's)."""
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - any failure of a foreign __str__ means the same: no message to show
        return f"(unprintable {type(exc).__name__})"


#: Words of torch's allocation failures on the CPU (``DefaultCPUAllocator: not enough memory`` / ``can't allocate
#: memory``); ``torch.OutOfMemoryError`` (CUDA and other accelerators) is recognised by its class.
CPU_OOM_WORDS = ("DefaultCPUAllocator", "can't allocate memory", "not enough memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an out-of-memory error: Python's ``MemoryError``, torch's ``OutOfMemoryError`` or its CPU
    allocator's ``RuntimeError`` (torch is not imported here: a process that never imported it raised none)."""
    torch = sys.modules.get("torch")
    oom_class = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    return (isinstance(exc, MemoryError) or (oom_class is not None and isinstance(exc, oom_class))
            or (isinstance(exc, RuntimeError) and any(word in exception_text(exc) for word in CPU_OOM_WORDS)))


def keyword_names(factory: Callable[..., Any]) -> list[str] | None:
    """The names ``factory`` takes by keyword, in its signature's order; ``None`` where any name goes (it takes
    ``**kwargs``) or its signature cannot be read (a built-in: its call says what it refuses). The one reading of
    a signature behind every unknown-name check: an attack's or noise probe's parameters
    (:func:`invalid_parameters`), an architecture's ``arch_kwargs`` and a model factory's ``--factory-kwargs``."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def unknown_names(factory: Callable[..., Any], given: Iterable[Any]) -> list[Any]:
    """The names of ``given`` (in its order) that ``factory`` does not take by keyword (:func:`keyword_names`);
    none where it takes any."""
    accepted = keyword_names(factory)
    return [] if accepted is None else [name for name in given if name not in accepted]


def invalid_parameters(what: str, factory: Callable[..., Any], params: Mapping[str, Any],
                       exc: TypeError) -> AttackConfigError:
    """The error for ``factory(**params)`` raising ``exc``: the names it does not take and the ones it does (read
    from its signature, :func:`keyword_names`), else the ``TypeError``'s own line (a missing or wrongly typed
    value)."""
    unknown = sorted(unknown_names(factory, params))
    if unknown:
        accepted = keyword_names(factory) or []
        valid = f"valid: {', '.join(accepted)}" if accepted else "it takes no parameters"
        return AttackConfigError(f"{what}: unknown parameter{'s' if len(unknown) > 1 else ''} "
                                 f"{', '.join(map(repr, unknown))}; {valid}")
    return AttackConfigError(f"{what}: invalid parameters {sorted(params)}: {first_line(exc)}")


def check_binds(what: str, factory: Callable[..., Any], params: Mapping[str, Any]) -> bool:
    """Whether ``factory``'s signature is readable (a built-in's may not be) and binds ``params``; parameters it
    does not bind are :func:`invalid_parameters` (raised), so a ``TypeError`` of ``factory(**params)`` after ``True``
    is the factory's own failure, not the call's."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return False
    try:
        signature.bind(**params)
    except TypeError as exc:
        raise invalid_parameters(what, factory, params, exc) from None
    return True


def call_factory(what: str, factory: Callable[..., Any], params: Mapping[str, Any]) -> Any:
    """``factory(**params)`` for ``what`` (``attack 'pgd'``), telling a bad call from the factory's own failure:
    parameters its signature does not bind are :func:`invalid_parameters`; a ``TypeError`` raised inside the factory
    after they bound is one line naming ``what`` and its factory, worded as the config's check words any other
    exception of a factory (it was "invalid parameters ['seed']", though the call was fine). A factory without a
    readable signature (a built-in) leaves every ``TypeError`` to :func:`invalid_parameters`."""
    checked = check_binds(what, factory, params)
    try:
        return factory(**params)
    except TypeError as exc:
        if not checked:
            raise invalid_parameters(what, factory, params, exc) from None
        raise AttackConfigError(f"{what}: its factory raised TypeError: {first_line(exc)}; fix the factory (or its "
                                "params)") from None


#: The largest count any config field or attack parameter takes (steps, restarts, queries, draws, samples, epochs,
#: batch sizes): 10**9 is beyond any real run (a billion PGD steps on one image take weeks), keeps the product of
#: two counts within torch's int64 (10**18 < 2**63) and every count exact in float64 (< 2**53). Python's own ints
#: have no bound, so 10**30 steps used to run "forever" or overflow inside torch.
COUNT_LIMIT = 10**9


def count_problem(value: Any, at_least: int = 1) -> str | None:
    """What is wrong with ``value`` as a count (an integer from ``at_least`` to :data:`COUNT_LIMIT`), worded to
    follow a field's name (``steps: must be ...``); ``None`` for a valid count."""
    if not is_whole_number(value, at_least):
        return f"must be an integer >= {at_least}, got {value!r}"
    return None if value <= COUNT_LIMIT else too_large(value)


def check_count(field: str, value: Any, at_least: int = 1) -> int:
    """``value`` if it is a count (:func:`count_problem`), else a one-line ``AttackConfigError`` ``"{field}: ..."``."""
    problem = count_problem(value, at_least)
    if problem is not None:
        raise AttackConfigError(f"{field}: {problem}")
    return value


def too_large(value: int) -> str:
    """The words for a count above :data:`COUNT_LIMIT` (a 31-digit value is named by its length)."""
    digits = len(str(value))
    got = f"an integer of {digits} digits" if digits > 15 else repr(value)
    return f"must be at most {COUNT_LIMIT:,} (10**9; no real run needs more), got {got}"


def is_whole_number(value: Any, at_least: int | None = None) -> bool:
    """Whether ``value`` is a Python ``int`` (not a bool: ``True`` is an int to Python) and, given ``at_least``, is
    at least that: the one reading of "a count" for every config field, attack parameter and file field."""
    return isinstance(value, int) and not isinstance(value, bool) and (at_least is None or value >= at_least)


def is_finite_number(value: Any) -> bool:
    """Whether ``value`` is a real, finite ``int`` or ``float`` (not a bool, NaN or infinity, nor an integer too
    large for a float: ``float(value)`` gives it back without an ``OverflowError``)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float range, e.g. 10**400
        return False


#: The largest finite float32 and the smallest normal one: the attacks compute in float32, where a setting above
#: ``FLOAT32_MAX`` is ``inf`` and one below ``FLOAT32_TINY`` ``0`` or a subnormal (a step of 1e-300 moves nothing).
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINY = 1.1754943508222875e-38
#: How an out-of-range setting's error says the range (after "a finite number > 0").
FLOAT32_RANGE = "within float32's range, 1.2e-38 to 3.4e+38"


def in_float32_range(value: float) -> bool:
    """Whether a finite number other than 0 is a normal float32 in magnitude (:data:`FLOAT32_RANGE`)."""
    return FLOAT32_TINY <= abs(value) <= FLOAT32_MAX


#: The largest epsilon: float32 holds up to 3.4e38, and the ball's arithmetic (random starts, default steps of
#: 2.5 eps / steps) must stay finite: at L2 1e38 a PGD-1 random start turned inf (an L2 ball of radius sqrt(D), 28
#: on 28x28 images, already holds every image in [0, 1]).
EPS_MAX = 1e30


def check_eps(field_name: str, eps: float, value: Any) -> float:
    """``eps`` (parsed from the config's ``value``) if it is a finite number in ``[0, EPS_MAX]``, else a one-line
    :class:`AttackConfigError` naming ``field_name``."""
    if not math.isfinite(eps) or eps < 0:
        raise AttackConfigError(f"{field_name}: epsilon must be a finite number >= 0, got {value!r}")
    if eps > EPS_MAX:  # the ball and the default steps are computed in float32
        raise AttackConfigError(f"{field_name}: epsilon must be a finite number >= 0 and at most {EPS_MAX:g} (float32 "
                                "arithmetic overflows beyond it; an L2 eps of sqrt(D), 28 on 28x28 images, already "
                                f"reaches every image in [0, 1]), got {value!r}")
    return eps


#: Seeds are integers ``0 <= seed < SEED_LIMIT``: what torch's generators and NumPy (modulo 2**32) accept.
SEED_LIMIT = 2**63


def is_seed(value: Any) -> bool:
    """Whether ``value`` is a seed: a (NumPy or Python) integer, not a bool, ``0 <= value < SEED_LIMIT``."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and 0 <= value < SEED_LIMIT


def check_bounds(bounds: Any) -> tuple[float, float]:
    """``bounds`` as ``(lower, upper)`` floats if it is a pair of real numbers (a tuple, list or other sequence, not a
    string), else a one-line :class:`AttackConfigError` naming ``bounds`` (their order is the caller's check)."""
    pair = not isinstance(bounds, (str, bytes)) and isinstance(bounds, Sequence) and len(bounds) == 2
    if not (pair and all(isinstance(b, numbers.Real) and not isinstance(b, bool) for b in bounds)):
        raise AttackConfigError(f"bounds: expected (lower, upper) numbers like (0.0, 1.0), got {bounds!r}")
    return float(bounds[0]), float(bounds[1])


def check_seed_param(attack_name: str, value: Any) -> int:
    """An attack's ``seed`` as an ``int`` (a NumPy integer too), else a one-line :class:`AttackConfigError`."""
    if not is_seed(value):
        raise AttackConfigError(f"attack {attack_name!r}: seed must be an integer from 0 to 2**63 - 1, got {value!r}")
    return int(value)


def check_int_param(attack_name: str, field_name: str, value: Any, minimum: int = 1) -> int:
    """An integer attack parameter from ``minimum`` to :data:`COUNT_LIMIT` (bools rejected), else a one-line
    :class:`AttackConfigError`."""
    problem = count_problem(value, minimum)
    if problem is not None:
        raise AttackConfigError(f"attack {attack_name!r}: {field_name} {problem}")
    return value


def check_positive_param(attack_name: str, field_name: str, value: Any, allow_zero: bool = False) -> float:
    """A finite float parameter ``> 0`` (or ``>= 0``), else a one-line :class:`AttackConfigError`; other than 0 it
    must lie in :data:`FLOAT32_RANGE` (beyond it the attack's float32 arithmetic turns it into inf or 0)."""
    ok = is_finite_number(value) and (value >= 0 if allow_zero else value > 0)
    bound = ">= 0" if allow_zero else "> 0"
    if not ok:
        raise AttackConfigError(f"attack {attack_name!r}: {field_name} must be a finite number {bound}, got {value!r}")
    if value != 0 and not in_float32_range(value):
        raise AttackConfigError(f"attack {attack_name!r}: {field_name} must be a finite number {bound} "
                                f"{FLOAT32_RANGE}, got {value!r}")
    return float(value)


def check_bool_param(attack_name: str, field_name: str, value: Any) -> bool:
    """A switch: ``True`` or ``False`` (a YAML ``"false"`` is a string, which ``bool()`` reads as true), else a
    one-line :class:`AttackConfigError`."""
    if not isinstance(value, bool):
        raise AttackConfigError(f"attack {attack_name!r}: {field_name} must be true or false, got {value!r}")
    return value


def check_choice_param(attack_name: str, field_name: str, value: Any, choices: Sequence[str]) -> str:
    """One of ``choices``, else a one-line :class:`AttackConfigError` listing them."""
    if value not in choices:
        raise AttackConfigError(
            f"attack {attack_name!r}: {field_name} must be one of {', '.join(map(str, choices))}, got {value!r}"
        )
    return value
