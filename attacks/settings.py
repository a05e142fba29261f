"""An attack's effective hyperparameters as plain JSON data: what a record keeps beside the parameters a config gave.

A config names a few parameters (``pgd {steps: 10}``); the attack that runs also has every default its class
holds (the step size rule, random start, restarts, an inner attack's own defaults). :func:`attack_settings` reads
them off the built attack object, so a record (``AttackResult.settings``), a protocol table and the resume check
see the whole protocol, and a change of a default between versions shows:

1. an attack that describes itself — a method ``attack_settings()`` returning a mapping (:class:`~attacks.bpda.BPDA`
   and :class:`~attacks.transfer.Transfer`: their inner attacks nested) — gives exactly that;
2. a dataclass gives its ``init`` fields (public ones);
3. any other object gives the parameters its factory received: the given ones, and the factory's defaults for the
   rest (read from its signature). A factory taking ``**kwargs`` hides defaults that are only known behind it:
   the settings then say so (``"_complete": false`` and a ``"_note"``), never guessing values.

The attack's ``seed`` is left out everywhere (the runner derives one per batch; records keep the unit's seed).
A class may declare ``setting_rules`` (``{"step_size": "2.5*eps/steps"}``: what a field left ``None`` means, the rule
the attack applies at call time) and ``settings_not_recorded`` (why its settings cannot be complete, e.g. a
third-party library's own defaults); both are class attributes, read here only.

Values are made JSON-safe (:func:`json_safe`): tensors and numpy arrays as short lists or a ``"tensor float32
[3, 32, 32]"`` text, modules, callables and unknown objects by their type or qualified name (never a memory
address: equal settings give equal JSON on every run), non-finite floats as ``"inf"``/``"nan"`` text, collections of
over :data:`MAX_ITEMS` items by their length, nested attacks as their own settings under ``"attack"``: name (attacks
that hold each other end in ``"<...>"``, :data:`MAX_DEPTH`).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import json
import math
from pathlib import PurePath
from types import MappingProxyType
from typing import Any, Callable, Mapping

import torch
from torch import nn

from attacks.errors import AttackConfigError, first_line, is_whole_number

#: Parameters never recorded as settings: the runner derives the seed per batch (records keep the unit's).
OMITTED: tuple[str, ...] = ("seed",)
#: Keys that describe the settings themselves (not a hyperparameter): incompleteness and why.
COMPLETE_KEY, NOTE_KEY = "_complete", "_note"
#: Tensors up to this many entries are recorded as lists; larger ones by dtype and shape.
SMALL_TENSOR = 16
#: Lists, tuples, sets and mappings longer than this are recorded by their length (every unit repeats its settings).
MAX_ITEMS = 1000
#: Nesting depth past which a value is written as ``"<...>"`` (a structure that refers to itself).
MAX_DEPTH = 8
#: Settings an attack gained after records began storing them, at the value that runs the attack as before (APGD's
#: ODI start, off: :mod:`attacks.odi`): settings stored without such a key are no other protocol than settings that
#: hold it at that value (:func:`without_later_defaults`); any other value is a difference, as for every setting.
LATER_DEFAULTS: Mapping[str, Any] = MappingProxyType({"odi_steps": 0, "odi_step": 1.0})


def attack_settings(attack: object, given: Mapping[str, Any] | None = None,
                    factory: Callable[..., Any] | None = None, depth: int = 0,
                    num_classes: int | None = None) -> dict[str, Any]:
    """The effective hyperparameters of the built ``attack`` as JSON data (see the module docstring).

    Args:
        attack: the attack object as its factory returned it.
        given: the parameters the factory was called with (a config's ``params``), for objects that are neither
            self-describing nor dataclasses.
        factory: the registered factory (default ``type(attack)``), whose signature gives the defaults there.
        depth: how deep ``attack`` is nested in another's settings (:data:`MAX_DEPTH` bounds attacks that refer to
            each other, as it bounds any structure).
        num_classes: the data set's number of classes, where known: a setting the attack caps by it at call time
            (its class attribute ``class_caps``, ``{"n_target_classes": 1}``: at most ``num_classes - 1``) is
            recorded as it runs; a self-describing attack whose ``attack_settings`` takes ``num_classes`` is given
            it (for its inner attacks).
    Returns:
        ``{name: value}`` in the attack's own order, JSON-safe, without ``seed``; ``"_complete": False`` and a
        ``"_note"`` where the settings cannot be complete.
    """
    describe = getattr(attack, "attack_settings", None)
    note = getattr(type(attack), "settings_not_recorded", None)
    if callable(describe):
        raw = _described(attack, describe, num_classes)
    elif dataclasses.is_dataclass(attack) and not isinstance(attack, type):
        raw = {f.name: getattr(attack, f.name) for f in dataclasses.fields(attack)
               if f.init and not f.name.startswith("_")}
    else:
        raw, hidden = factory_settings(factory or type(attack), given or {})
        note = note or hidden
    caps = getattr(type(attack), "class_caps", None) or {}
    for key, offset in caps.items():
        if num_classes is not None and is_whole_number(raw.get(key)):
            raw[key] = min(raw[key], num_classes - offset)
    rules = getattr(type(attack), "setting_rules", None) or {}
    settings = {str(k): (rules[k] if v is None and k in rules else json_safe(v, depth))
                for k, v in raw.items() if k not in OMITTED}
    if note:
        settings.update({COMPLETE_KEY: False, NOTE_KEY: str(note)})
    return settings


def _described(attack: object, describe: Callable[..., Any], num_classes: int | None) -> dict[str, Any]:
    """What an attack's own ``attack_settings()`` returns (given ``num_classes`` where it takes it), as a dict; a
    plug-in's failure there (it raised, or returned no mapping) is one :class:`~attacks.errors.AttackConfigError`
    line naming the attack."""
    name = getattr(attack, "name", type(attack).__name__)
    try:
        takes_classes = "num_classes" in inspect.signature(describe).parameters
    except (TypeError, ValueError):
        takes_classes = False
    try:
        described = describe(num_classes=num_classes) if takes_classes else describe()
    except Exception as exc:  # noqa: BLE001 - a plug-in's bug, named in one line
        raise AttackConfigError(f"attack {name!r}: its attack_settings() raised {type(exc).__name__}: "
                                f"{first_line(exc)}; fix it, or remove the method (its dataclass fields or its "
                                "factory's parameters are then recorded)") from exc
    if not isinstance(described, Mapping):
        raise AttackConfigError(f"attack {name!r}: its attack_settings() returned {type(described).__name__}, "
                                "expected a mapping of setting names to values")
    return dict(described)


def factory_settings(factory: Callable[..., Any], given: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The parameters ``factory`` received when called with ``given``: each named parameter's given value or its
    default, then given names it takes through ``**kwargs``. Second: why that is not every setting (it takes
    ``**kwargs``, or has no readable signature), else ``None``."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return dict(given), "its factory's parameters cannot be read; only the given parameters are recorded"
    values: dict[str, Any] = {}
    hidden = None
    for p in parameters:
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            hidden = f"its factory takes {'**' if p.kind is p.VAR_KEYWORD else '*'}{p.name}: defaults behind it " \
                     "are not known; only the given parameters and the named defaults are recorded"
        elif p.name in given:
            values[p.name] = given[p.name]
        elif p.default is not p.empty:
            values[p.name] = p.default
    values.update({k: v for k, v in given.items() if k not in values})
    return values, hidden


def is_attack_object(value: object) -> bool:
    """An attack nested in another's settings: a callable object (not a class, function or module) with a
    ``name`` — the attack interface (:class:`attacks.base.Attack`)."""
    return (callable(value) and not isinstance(value, (type, nn.Module)) and not inspect.isroutine(value)
            and isinstance(getattr(value, "name", None), str))


def nested_settings(attack: object, given: Mapping[str, Any] | None = None,
                    factory: Callable[..., Any] | None = None, name: str | None = None,
                    depth: int = 0, num_classes: int | None = None) -> dict[str, Any]:
    """An inner attack's settings headed by its name (``name``, e.g. the registry name it was built by; default
    the object's ``name``): ``{"attack": "pgd", "steps": 40, ...}``; ``depth``, ``num_classes``: as
    :func:`attack_settings`."""
    name = name or str(getattr(attack, "name", type(attack).__name__))
    return {"attack": name, **attack_settings(attack, given, factory, depth, num_classes)}


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON data that reads the same on every run (see the module docstring)."""
    if depth > MAX_DEPTH:
        return "<...>"
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, enum.Enum):
        return json_safe(value.value, depth + 1)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else str(value)
    if isinstance(value, torch.Tensor):
        if value.numel() <= SMALL_TENSOR:
            return json_safe(value.detach().cpu().tolist(), depth + 1)
        return f"tensor {str(value.dtype).removeprefix('torch.')} {list(value.shape)}"
    if isinstance(value, (torch.dtype, torch.device, PurePath)):
        return str(value)
    if isinstance(value, nn.Module):
        return f"<module {type(value).__name__}>"
    if is_attack_object(value):  # one level deeper: attacks that hold each other end in "<...>"
        return nested_settings(value, depth=depth + 1)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: json_safe(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value)
                if not f.name.startswith("_")}
    if isinstance(value, (Mapping, list, tuple, set, frozenset)) and len(value) > MAX_ITEMS:
        return f"<{type(value).__name__} of {len(value)} items>"
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((json_safe(v, depth + 1) for v in value), key=repr)
    if all(hasattr(value, a) for a in ("tolist", "shape", "dtype")):  # numpy arrays and scalars: as tensors
        shape = [int(n) for n in value.shape]
        if math.prod(shape) <= SMALL_TENSOR:
            return json_safe(value.tolist(), depth + 1)
        return f"array {value.dtype} {shape}"
    if hasattr(value, "item") and callable(value.item):  # other scalars with a Python value
        try:
            return json_safe(value.item(), depth + 1)
        except (TypeError, ValueError):
            pass
    if callable(value):
        return _qualified_name(value, depth)
    return f"<{type(value).__qualname__}>"


def _qualified_name(value: Any, depth: int = 0) -> str:
    """``module.qualname`` of a function or class; of a ``functools.partial`` that with the arguments it binds
    (``partial(torch.nn.functional.cross_entropy, label_smoothing=0.1)``, as JSON); else the type."""
    if isinstance(value, functools.partial):
        bound = [json.dumps(json_safe(a, depth + 1)) for a in value.args]
        bound += [f"{k}={json.dumps(json_safe(v, depth + 1))}" for k, v in value.keywords.items()]
        return f"partial({', '.join([_qualified_name(value.func, depth + 1), *bound])})"
    name = getattr(value, "__qualname__", None) or type(value).__qualname__
    module = getattr(value, "__module__", None)
    return f"{module}.{name}" if module else name


def without_later_defaults(before: Any, now: Any) -> Any:
    """``now`` (an attack's settings as JSON data) without the :data:`LATER_DEFAULTS` keys that ``before`` (other
    settings, e.g. as an older record stored them) lacks where ``now`` holds them at that value, in nested objects
    and lists alike (a BPDA stage's ``inner`` entry); ``now`` itself is left unchanged."""
    if isinstance(before, Mapping) and isinstance(now, Mapping):
        return {k: without_later_defaults(before[k], v) if k in before else v for k, v in now.items()
                if k in before or k not in LATER_DEFAULTS or isinstance(v, bool) or v != LATER_DEFAULTS[k]}
    if isinstance(before, list) and isinstance(now, list) and len(before) == len(now):
        return [without_later_defaults(b, v) for b, v in zip(before, now)]
    return now


def comparable_settings(a: Any, b: Any) -> tuple[Any, Any]:
    """Two attacks' settings (JSON data) as they are compared: each without the :data:`LATER_DEFAULTS` keys it holds
    at that value where the other lacks them (:func:`without_later_defaults` both ways: a record written before a
    setting existed against one written after)."""
    return without_later_defaults(b, a), without_later_defaults(a, b)
