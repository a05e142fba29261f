"""A model factory's keyword arguments (``--factory-kwargs``, ``factory_kwargs=``) checked against its signature.

``--model-factory package.module:function`` (the zoo's ``kwta_robust.zoo:xiao_spcnn``, or your own) is called with
the JSON object of ``--factory-kwargs``. A misspelt name, a required argument left out or a value of another type
reached the factory and came back as Python's ``TypeError`` (or whatever the factory's first use of the value
raised, e.g. ``torch.empty``'s complaint about a string), naming no argument, or as "fix the factory" for an error
that was the arguments'. :func:`call_factory` checks them against :func:`inspect.signature` first: an unknown name
or a missing required one is one line naming the factory, the argument and the names it accepts; a value whose
type the factory's annotation rules out (``bool``, ``int``, ``float``, ``str``, sequences, mappings, ``None``,
``Literal`` and unions of these; other annotations are not checked) is one line naming the argument, what it
expects and what it got. A ``TypeError`` or ``ValueError`` the call still raises names the argument its message
names.
"""

from __future__ import annotations

import collections.abc
import inspect
import numbers
import re
import types
import typing
from typing import Any, Callable, Mapping

from kwta_robust.errors import CheckpointError, first_line, short_repr

_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
_SEQUENCES = (collections.abc.Sequence, collections.abc.MutableSequence, list, tuple)
_MAPPINGS = (collections.abc.Mapping, collections.abc.MutableMapping, dict)


def call_factory(factory: str, build: Callable[..., Any], kwargs: Mapping[str, Any]) -> Any:
    """``build(**kwargs)`` after :func:`check_factory_arguments`; what the call raises is one
    :class:`CheckpointError` line naming ``factory`` (and the argument, where its message names one)."""
    check_factory_arguments(factory, build, kwargs)
    try:
        return build(**kwargs)
    except (TypeError, ValueError) as exc:
        named = next((key for key in kwargs if re.search(rf"\b{re.escape(str(key))}\b", str(exc))), None)
        if named is not None:
            raise CheckpointError(f"model factory {factory!r}: argument {named!r} = {short_repr(kwargs[named])} "
                                  f"refused ({type(exc).__name__}: {first_line(exc)}); pass a value it takes in "
                                  "--factory-kwargs") from None
        given = ", ".join(sorted(map(str, kwargs))) or "none"
        if isinstance(exc, TypeError):
            raise CheckpointError(f"model factory {factory!r}: bad arguments (--factory-kwargs gave: {given}; "
                                  f"{first_line(exc)}); pass the arguments it takes as --factory-kwargs JSON") from None
        if kwargs:  # a value refused under another name (xiao_spcnn's func is its layers' sparse_func)
            raise CheckpointError(f"model factory {factory!r} raised {type(exc).__name__}: {first_line(exc)}; check "
                                  f"the arguments (--factory-kwargs gave: {given}) or fix the factory") from None
        raise _failed(factory, exc) from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's code: its failure is reported in one line
        raise _failed(factory, exc) from None


def _failed(factory: str, exc: BaseException) -> CheckpointError:
    return CheckpointError(f"model factory {factory!r} raised {type(exc).__name__}: {first_line(exc)}; fix the "
                           "factory (run it in Python to see the traceback)")


def check_factory_arguments(factory: str, build: Callable[..., Any], kwargs: Mapping[str, Any]) -> None:
    """Refuse, in one :class:`CheckpointError` line naming ``factory``, an argument ``build`` does not take by name,
    a required one ``kwargs`` lacks, and a value its annotation rules out. A callable without a signature
    (some built-in ones) is not checked: its call reports what it refuses."""
    try:
        params = inspect.signature(build).parameters
    except (TypeError, ValueError):
        return
    named = [name for name, p in params.items() if p.kind in _NAMED]
    accepted = f"accepted: {', '.join(named) or 'none'}"
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        for key in kwargs:
            if key not in named:
                only = params.get(key) if isinstance(key, str) else None
                why = " (it takes it only by position)" if only is not None else ""
                raise CheckpointError(f"model factory {factory!r}: unknown argument {key!r}{why}; {accepted} "
                                      "(--factory-kwargs)")
    missing = next((name for name, p in params.items() if p.default is inspect.Parameter.empty
                    and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
                    and name not in kwargs), None)
    if missing is not None and params[missing].kind is inspect.Parameter.POSITIONAL_ONLY:
        raise CheckpointError(f"model factory {factory!r}: required argument {missing!r} is positional-only, and "
                              "--factory-kwargs passes arguments by name; wrap the factory in a function that takes "
                              f"{missing!r} by name (or gives it a default); {accepted}")
    if missing is not None:
        raise CheckpointError(f"model factory {factory!r}: missing required argument {missing!r}; give it in "
                              f"--factory-kwargs (e.g. '{{\"{missing}\": ...}}'); {accepted}")
    hints = _type_hints(build)
    for key, value in kwargs.items():
        expected = hints.get(key) if key in params else None  # (a name taken by **kwargs, e.g. 'return')
        if expected is not None and not _fits(value, expected):
            raise CheckpointError(f"model factory {factory!r}: argument {key!r} expects "
                                  f"{_describe(expected, params[key].annotation)}, got "
                                  f"{short_repr(value)} ({type(value).__name__}); pass a value of that type in "
                                  "--factory-kwargs")


def _type_hints(build: Callable[..., Any]) -> dict[str, Any]:
    """``build``'s annotations resolved (a class's: its ``__init__``'s); none where they cannot be resolved (a name
    the module does not define, a callable object): then the values are not checked."""
    target = build.__init__ if inspect.isclass(build) else build
    try:
        return typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - an annotation that names nothing importable: leave the values unchecked
        return {}


def _fits(value: Any, expected: Any) -> bool:
    """Whether ``value`` is of the annotated type ``expected``; ``True`` for an annotation this module does not
    check (see the module docstring)."""
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if origin is typing.Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        return any(_fits(value, arg) for arg in args)
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
        if not isinstance(value, (list, tuple)):
            return False
        item = args[0] if args and (origin is not tuple or (len(args) == 2 and args[1] is Ellipsis)) else None
        return item is None or all(_fits(v, item) for v in value)
    if expected in _MAPPINGS or origin in _MAPPINGS:
        return isinstance(value, Mapping)
    return True


def _describe(expected: Any, written: Any) -> str:
    """The annotation as its source writes it (``Sequence[float] | None``, ``int``): ``written`` where it is the
    source's text (``from __future__ import annotations``), else ``expected`` formatted."""
    text = written if isinstance(written, str) else inspect.formatannotation(expected)
    return re.sub(r"\b(typing|collections\.abc)\.", "", text)


__all__ = ["call_factory", "check_factory_arguments"]
