"""A model factory's keyword arguments (``--factory-kwargs``, ``factory_kwargs=``) checked against its signature.

``--model-factory package.module:function`` (the zoo's ``kwta_robust.zoo:xiao_spcnn``, or your own) is called with
the JSON object of ``--factory-kwargs``. A misspelt name, a required argument left out or a value of another type
reached the factory and came back as Python's ``TypeError`` (or whatever the factory's first use of the value
raised, e.g. ``torch.empty``'s complaint about a string), naming no argument, or as "fix the factory" for an error
that was the arguments'. :func:`call_factory` checks them against :func:`inspect.signature` first: an unknown name
or a missing required one is one line naming the factory, the argument and the names it accepts; a value whose
type the factory's annotation rules out (``bool``, ``int``, ``float``, ``str``, ``None``, ``Literal``, and
recursively sequences (``list[T]``, ``Sequence[T]``, ``tuple[T, ...]``, ``tuple[A, B]`` of that length), mappings
(``dict[K, V]``, ``Mapping[K, V]``) and unions of these; other annotations, a class, ``Callable``, ``set[T]``, a
``TypedDict``, and what such an annotation holds, are not checked) is one line naming the argument, what it expects
and what it got; a value wrong inside a sequence or mapping is named by its path (``widths[1]``, ``sizes['a']``).
A ``TypeError`` or ``ValueError`` the call still raises names the argument its message names.
"""

from __future__ import annotations

import collections.abc
import inspect
import numbers
import re
import types
import typing
from typing import Any, Callable, Mapping

from attacks.errors import unknown_names
from kwta_robust.errors import CheckpointError, FactoryArgumentError, first_line, short_repr

_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
_SEQUENCES = (collections.abc.Sequence, collections.abc.MutableSequence, list, tuple)
_MAPPINGS = (collections.abc.Mapping, collections.abc.MutableMapping, dict)


def call_factory(factory: str, build: Callable[..., Any], kwargs: Mapping[str, Any]) -> Any:
    """``build(**kwargs)`` after :func:`check_factory_arguments`; what the call raises is one
    :class:`CheckpointError` line naming ``factory`` (and the argument, where its message names one): a
    :class:`FactoryArgumentError` where the arguments were refused, or may have been (a ``ValueError`` naming none
    of the arguments given), which ``compare`` prefixes with ``MODEL n (label)``."""
    check_factory_arguments(factory, build, kwargs)
    try:
        return build(**kwargs)
    except (TypeError, ValueError) as exc:
        named = next((key for key in kwargs if re.search(rf"\b{re.escape(str(key))}\b", str(exc))), None)
        if named is not None:
            raise FactoryArgumentError(
                f"model factory {factory!r}: argument {named!r} = {short_repr(kwargs[named])} refused "
                f"({type(exc).__name__}: {first_line(exc)}); pass a value it takes in --factory-kwargs") from None
        given = ", ".join(sorted(map(str, kwargs))) or "none"
        if isinstance(exc, TypeError):
            raise FactoryArgumentError(
                f"model factory {factory!r}: bad arguments (--factory-kwargs gave: {given}; {first_line(exc)}); "
                "pass the arguments it takes as --factory-kwargs JSON") from None
        if kwargs:  # a value refused under another name (xiao_spcnn's func is its layers' sparse_func): maybe the
            # arguments', so compare says which model it was, as for the other refusals (it was a bare CheckpointError)
            raise FactoryArgumentError(f"model factory {factory!r} raised {type(exc).__name__}: {first_line(exc)}; "
                                       f"check the arguments (--factory-kwargs gave: {given}) or fix the factory") \
                from None
        raise _failed(factory, exc) from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's code: its failure is reported in one line
        raise _failed(factory, exc) from None


def _failed(factory: str, exc: BaseException) -> CheckpointError:
    return CheckpointError(f"model factory {factory!r} raised {type(exc).__name__}: {first_line(exc)}; fix the "
                           "factory (run it in Python to see the traceback)")


def check_factory_arguments(factory: str, build: Callable[..., Any], kwargs: Mapping[str, Any]) -> None:
    """Refuse, in one :class:`FactoryArgumentError` line naming ``factory``, an argument ``build`` does not take by
    name, a required one ``kwargs`` lacks, and a value its annotation rules out. A callable without a signature
    (some built-in ones) is not checked: its call reports what it refuses."""
    try:
        params = inspect.signature(build).parameters
    except (TypeError, ValueError):
        return
    named = [name for name, p in params.items() if p.kind in _NAMED]
    accepted = f"accepted: {', '.join(named) or 'none'}"
    unknown = unknown_names(build, kwargs)  # the check every factory's and attack's arguments share
    if unknown:
        why = " (it takes it only by position)" if isinstance(unknown[0], str) and unknown[0] in params else ""
        raise FactoryArgumentError(f"model factory {factory!r}: unknown argument {unknown[0]!r}{why}; {accepted} "
                                   "(--factory-kwargs)")
    missing = next((name for name, p in params.items() if p.default is inspect.Parameter.empty
                    and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
                    and name not in kwargs), None)
    if missing is not None and params[missing].kind is inspect.Parameter.POSITIONAL_ONLY:
        raise FactoryArgumentError(f"model factory {factory!r}: required argument {missing!r} is positional-only, "
                                   "and --factory-kwargs passes arguments by name; wrap the factory in a function "
                                   f"that takes {missing!r} by name (or gives it a default); {accepted}")
    if missing is not None:
        raise FactoryArgumentError(f"model factory {factory!r}: missing required argument {missing!r}; give it in "
                                   f"--factory-kwargs (e.g. '{{\"{missing}\": ...}}'); {accepted}")
    wrong = annotation_mismatch(build, kwargs)
    if wrong is not None:
        raise FactoryArgumentError(f"model factory {factory!r}: {wrong[1]}; pass a value of that type in "
                                   "--factory-kwargs")


def annotation_mismatch(build: Callable[..., Any], kwargs: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first value of ``kwargs`` that ``build``'s annotation of its argument rules out (the types the module
    docstring lists): ``(argument, what is wrong)``, e.g. ``("hidden", "argument 'hidden' expects Sequence[int];
    hidden[0] is 8.5 (float), not int")``; ``None`` where every value fits or cannot be checked."""
    try:
        params = inspect.signature(build).parameters
    except (TypeError, ValueError):
        return None
    hints = _type_hints(build)
    for key, value in kwargs.items():
        expected = hints.get(key) if key in params else None  # (a name taken by **kwargs, e.g. 'return')
        wrong = None if expected is None else _mismatch(value, expected, str(key))
        if wrong is None:
            continue
        where, inner, wanted = wrong
        whole = _describe(expected, params[key].annotation)
        if where == str(key):
            return key, f"argument {key!r} expects {whole}, got {short_repr(value)} ({type(value).__name__})"
        return key, (f"argument {key!r} expects {whole}; {where} is {short_repr(inner)} ({type(inner).__name__}), not "
                     f"{_describe(wanted, None)}")
    return None


def _type_hints(build: Callable[..., Any]) -> dict[str, Any]:
    """``build``'s annotations resolved (a class's: its ``__init__``'s); none where they cannot be resolved (a name
    the module does not define, a callable object): then the values are not checked."""
    target = build.__init__ if inspect.isclass(build) else build
    try:
        return typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - an annotation that names nothing importable: leave the values unchecked
        return {}


def _mismatch(value: Any, expected: Any, where: str) -> tuple[str, Any, Any] | None:
    """Where ``value`` is not of the annotated type ``expected``: ``(path, the value there, the type expected
    there)``, the path from ``where`` (the argument's name) into the value (``widths[1]``, ``sizes['a']``, ``sizes
    key 'a'``); ``None`` where it fits, or where the annotation is one this module does not check (see the module
    docstring). A union is reported inside the one member whose outer type the value has (``list[int] | None``
    given ``['x']``: ``widths[0]``), else as a whole."""
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if origin is typing.Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        found = [_mismatch(value, arg, where) for arg in args]
        if any(f is None for f in found):
            return None
        deeper = [f for f in found if f is not None and f[0] != where]
        return deeper[0] if len(deeper) == 1 else (where, value, expected)
    fits = _outer_fits(value, expected, origin, args)
    if fits is None or not fits:
        return None if fits is None else (where, value, expected)
    if origin in _MAPPINGS:
        key_type, value_type = args if len(args) == 2 else (None, None)
        for k, v in value.items() if key_type is not None else ():
            wrong = _mismatch(k, key_type, f"{where} key {k!r}") or _mismatch(v, value_type, f"{where}[{k!r}]")
            if wrong is not None:
                return wrong
        return None
    if origin in _SEQUENCES and args:
        items = [args[0]] * len(value) if origin is not tuple or (len(args) == 2 and args[1] is Ellipsis) else args
        return next((wrong for i, (v, item) in enumerate(zip(value, items))
                     if (wrong := _mismatch(v, item, f"{where}[{i}]")) is not None), None)
    return None


def _outer_fits(value: Any, expected: Any, origin: Any, args: tuple) -> bool | None:
    """Whether ``value`` has the outer type of ``expected`` (a fixed-length tuple: also its length); ``None`` for
    an annotation this module does not check."""
    if origin is typing.Literal:
        return any(value == arg and type(value) is type(arg) for arg in args)
    if expected is type(None):
        return value is None
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if expected is str:
        return isinstance(value, str)
    if expected in _SEQUENCES or origin in _SEQUENCES:
        fixed = origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis) and args != ((),)
        return isinstance(value, (list, tuple)) and (not fixed or len(value) == len(args))
    if expected in _MAPPINGS or origin in _MAPPINGS:
        return isinstance(value, Mapping)
    return None


def _describe(expected: Any, written: Any) -> str:
    """The annotation as its source writes it (``Sequence[float] | None``, ``int``): ``written`` where it is the
    source's text (``from __future__ import annotations``), else ``expected`` formatted (``None`` for ``NoneType``)."""
    text = written if isinstance(written, str) else inspect.formatannotation(expected)
    return re.sub(r"\bNoneType\b", "None", re.sub(r"\b(typing|collections\.abc)\.", "", text))


__all__ = ["annotation_mismatch", "call_factory", "check_factory_arguments"]
