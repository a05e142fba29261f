"""One config toolkit for the eval, train, pruning and sweep configs: typed dataclasses read from YAML (or CLI
flags) with pydantic v2, and one wording for every error.

A config is a :func:`config_class` — a pydantic dataclass whose fields are the only list of its keys (with their
types, defaults and constraints): unknown keys are refused, values are checked on construction, and a failure is a
one-line :class:`~kwta_robust.errors.ConfigError` naming the field and the fix, never a traceback::

    @config_class(frozen=True)
    class NoiseSpec:
        kind: Text = config_field(hint="a noise probe, e.g. numenta")
        draws: Annotated[Integer, AtLeast(1)] = 1
        ...

    spec = parse(NoiseSpec, {"kind": "numenta", "draws": 0}, prefix="noise[0]")
    # ConfigError: noise[0].draws: must be >= 1, got 0

The wording (:func:`config_error`): ``{field}: unknown key 'k'; valid keys: a, b`` · ``{field}: missing key 'k'
(hint)`` · ``{field}: expected an integer | a number | true or false | a string | a list | a mapping of keys, got
v`` · ``{field}: must be >= n, got v`` · ``{field}: unknown {kind} 'v'; known {kind}s: a, b`` (shared with every
registry, :func:`attacks.errors.unknown_detail`). Validators raise :class:`Invalid` with a message relative to the
field they check; the toolkit puts the field's full path (``attacks[2].params``) in front.

Scalar types are strict (YAML ``true`` is not the integer 1, ``"3"`` is not a number): :data:`Integer`,
:data:`Number` (an int is a number), :data:`Flag`, :data:`Text` (non-empty) and :data:`Amount` (a number written
as the field writes it: ``1e-3``, ``8/255``). Containers are lax: a YAML list fills a ``tuple`` field. Config
files are read by :func:`read_yaml`, whose loader takes YAML 1.2 floats (``1e-3``: PyYAML alone reads a string).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Mapping, Sequence, TypeVar

import yaml
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, Strict, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as pydantic_dataclass

from attacks.base import parse_eps
from attacks.errors import COUNT_LIMIT, SEED_LIMIT, AttackConfigError, too_large, unknown_detail
from kwta_robust.errors import ConfigError, is_whole_number

T = TypeVar("T")

#: Settings of every config class: unknown keys refused; values of any type allowed in untyped fields.
SETTINGS = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


class Invalid(ConfigError):
    """Raised by a config's validators: ``detail`` says what is wrong relative to the field being checked (``at``:
    a sub-path below it, e.g. ``("epsilons", 2)``); the toolkit puts the field's path in front."""

    def __init__(self, detail: str, at: Sequence[str | int] = ()) -> None:
        super().__init__(field=path_text("", at), detail=detail)
        self.at = tuple(at)


# ---------------------------------------------------------------------------------------------------------------
# strict scalar types
# ---------------------------------------------------------------------------------------------------------------
def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(f"expected a number, got {value!r}")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an integer beyond a float's range (float() would raise the same)
        raise Invalid(f"expected a finite number, got an integer of {len(str(abs(value)))} digits") from None
    if not finite:  # NaN passes every bound (comparisons are false), inf makes counts overflow
        raise Invalid(f"expected a finite number, got {value!r}")
    return float(value)


def _amount(value: Any) -> float:
    if isinstance(value, str):
        try:
            return parse_eps(value)
        except AttackConfigError:
            pass
        try:  # a negative number given as text (a flag's "-0.1") is a number: its key's own range check names it
            number = float(value.strip())
        except ValueError:
            raise Invalid(f"expected a number, got {value!r}") from None
        return _number(number)
    return _number(value)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, got {value!r}")
    return value


def _description(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Invalid(f"expected text, got {type(value).__name__}")
    return value


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, (int, float, str)) and not isinstance(value, bool) else value


def _count(value: int) -> int:
    if value > COUNT_LIMIT:
        raise Invalid(too_large(value))
    return value


Integer = Annotated[int, Strict()]
#: A count (steps, draws, samples, epochs, batch sizes): an :data:`Integer` of at most :data:`COUNT_LIMIT` (10**9,
#: beyond any real run and within torch's int64 for the product of two); its lower bound goes with each field.
Count = Annotated[int, Strict(), AfterValidator(_count)]
Number = Annotated[float, BeforeValidator(_number)]
Amount = Annotated[float, BeforeValidator(_amount)]
Flag = Annotated[bool, BeforeValidator(_flag)]
Text = Annotated[str, Strict(), Field(min_length=1)]
#: Free text (``null`` = empty), e.g. a config's ``description``.
Description = Annotated[str, BeforeValidator(_description)]
#: Validator of a list field: one value stands for a list of one (``epsilons: 0.3``).
AS_LIST = BeforeValidator(_as_list)


def null_means(default: Any) -> Any:
    """Validator: ``null`` in YAML means the default (``default()``)."""
    return BeforeValidator(lambda value: default() if value is None else value)


def AtLeast(minimum: float) -> Any:  # noqa: N802 - reads as a type annotation: Annotated[Integer, AtLeast(1)]
    """Constraint ``value >= minimum``."""
    return Field(ge=minimum)


#: A seed: an integer torch and NumPy accept, ``0 <= seed < 2**63``.
Seed = Annotated[Integer, Field(ge=0, le=SEED_LIMIT - 1)]


def one_of(kind: str, choices: Sequence[str], plural: str | None = None) -> Any:
    """Validator: the value is one of ``choices`` (:func:`~attacks.errors.unknown_detail`'s wording otherwise)."""

    def check(value: Any) -> Any:
        if not isinstance(value, str) or value not in choices:
            raise Invalid(unknown_detail(kind, value, choices, plural))
        return value

    return AfterValidator(check)


def detail_of(exc: Exception, field: str) -> str:
    """What ``exc`` (raised by a check given ``field`` as its field name) says about the value, without the name:
    for :class:`Invalid` in a validator that checks ``field`` with a helper that names it itself."""
    detail = getattr(exc, "detail", None)
    if detail is not None:
        return detail
    text = str(exc)
    return text[len(field) + 2:] if text.startswith(f"{field}: ") else text


# ---------------------------------------------------------------------------------------------------------------
# YAML
# ---------------------------------------------------------------------------------------------------------------
class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading YAML 1.2 floats as numbers (:data:`_FLOAT`) and refusing a key given twice in one
    mapping (PyYAML keeps the last silently). Every config YAML is read with it (:func:`load_yaml_text`).

    The check reads the composed document before anything is constructed: constructing a mapping with merge keys
    (``<<: *anchor``) folds the anchor's keys into the anchored node in place, so a check at construction time would
    see a merged key overridden by the anchored mapping itself (``inner: &i {<<: *d, x: 2}`` merged elsewhere) as
    given twice. Merge keys may be overridden; keys in a flow mapping on one line (``{steps: 1, steps: 2}``) are
    keys too."""

    def construct_document(self, node: yaml.Node) -> Any:
        self._check_unique_keys(node)
        _check_expanded_size(node)
        return super().construct_document(node)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        """An integer, or (one too long for Python to read: over 4,300 digits) a ``ConstructorError`` at its line."""
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # or a 0b/0x prefix without digits (YAML 1.1 reads `0x_` as an integer)
            problem = (f"an integer of {len(str(node.value))} digits; write a number of at most 4,300 digits"
                       if len(str(node.value)) > 4300 else
                       f"{node.value!r} has no digits after its 0b/0x prefix; write the digits, or quote it as text")
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from None

    def _check_unique_keys(self, root: yaml.Node) -> None:
        visited: set[int] = set()
        pending = [root]
        while pending:
            node = pending.pop()
            if id(node) in visited:  # an alias (or a recursive anchor) names a node already checked
                continue
            visited.add(id(node))
            if isinstance(node, yaml.SequenceNode):
                pending.extend(node.value)
            if not isinstance(node, yaml.MappingNode):
                continue
            lines: dict[Any, int] = {}
            for key_node, value_node in node.value:
                pending.extend((key_node, value_node))
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue  # `<<: *anchor`: its keys may be overridden here; a complex key: PyYAML's own error
                key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
                line = key_node.start_mark.line + 1
                if key in lines:
                    where = f"line {line}" if lines[key] == line else f"lines {lines[key]} and {line}"
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} is given twice ({where}); keep one", key_node.start_mark)
                lines[key] = line


#: The most values (scalars, lists, mappings) a config may hold once its aliases are expanded. An alias shares its
#: anchor's value, so nine lines of anchors nesting nine aliases each ("billion laughs") are 10**9 values to anything
#: that walks them (validation, error messages, hashing): memory runs out. Real configs hold hundreds.
MAX_EXPANDED_VALUES = 1_000_000


def _check_expanded_size(root: yaml.Node) -> None:
    """A ``ConstructorError`` if ``root`` expands to more than :data:`MAX_EXPANDED_VALUES` values; each node's size
    is counted once (memoized), so the check is linear in the document; a recursive alias counts once."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else \
            list(node.value) if isinstance(node, yaml.SequenceNode) else []
        if not children_done:
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes and id(c) not in open_nodes)
            continue
        open_nodes.discard(id(node))
        sizes[id(node)] = 1 + sum(sizes.get(id(c), 1) for c in children)
        if sizes[id(node)] > MAX_EXPANDED_VALUES:
            raise yaml.constructor.ConstructorError(
                None, None, f"its aliases (*name) expand to more than {MAX_EXPANDED_VALUES:,} values; write the "
                "values out, or use fewer aliases of aliases", node.start_mark)


#: Floats as YAML 1.2 writes them, besides YAML 1.1's: PyYAML's resolver wants a dot in the mantissa and a sign in
#: the exponent, so ``1e-2``, ``1E3`` and ``.5e-3`` were read as strings (``step_size: 1e-2`` refused as "got
#: '1e-2'"). YAML 1.1's sexagesimal (``1:30.5``), ``.inf`` and ``.nan`` forms are kept.
_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)
_ConfigLoader.yaml_implicit_resolvers = {  # PyYAML's resolvers without its float pattern, then this one
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
_ConfigLoader.add_constructor("tag:yaml.org,2002:int", _ConfigLoader.construct_yaml_int)


def load_yaml_text(text: str) -> Any:
    """The value of the YAML document ``text``, read with the configs' loader (YAML 1.2 floats, a key given twice
    refused); raises :class:`yaml.YAMLError`."""
    return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader


def read_yaml(path: str | Path, where: str, *, empty_ok: bool = False) -> dict:
    """The YAML mapping in ``path``; a missing file, invalid YAML, an empty file (unless ``empty_ok``: ``{}``) or a
    top level that is not a mapping raise one-line :class:`ConfigError` s starting with ``where``."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{where}: {path} is a folder; give the path of a YAML file")
    if not path.is_file():
        raise ConfigError(f"{where}: no such file {str(path)!r}")
    try:
        data = load_yaml_text(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: {path} is not UTF-8 text, so not a YAML config (a checkpoint or another binary "
                          "file?); give the YAML file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or "parse error"  # ReaderError: reason
        raise ConfigError(f"{where}: {path} is not valid YAML{line}: {problem}") from None
    if data is None:
        if empty_ok:
            return {}
        raise ConfigError(f"{where}: {path} is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {path} must hold a mapping of keys to values at the top level")
    return data


# ---------------------------------------------------------------------------------------------------------------
# config classes and parsing
# ---------------------------------------------------------------------------------------------------------------
def config_class(cls: type[T] | None = None, *, frozen: bool = False, prefix: str = "", name: str = "") -> Any:
    """Make ``cls`` a config: a pydantic dataclass (keyword-only fields, unknown keys refused) whose construction —
    directly, by :func:`parse` or by :func:`dataclasses.replace` — raises a one-line ``ConfigError`` (field paths
    start with ``prefix``; ``name`` names the whole config in errors about its keys, default ``prefix`` or
    ``config``)."""

    def wrap(target: type[T]) -> type[T]:
        made = pydantic_dataclass(target, config=SETTINGS, frozen=frozen, kw_only=True)
        init = made.__init__

        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            try:
                init(self, *args, **kwargs)
            except ValidationError as exc:
                raise config_error(exc, made, prefix) from None

        made.__init__ = __init__  # type: ignore[method-assign]
        made.__config_prefix__ = prefix  # type: ignore[attr-defined]
        made.__config_name__ = name or prefix or "config"  # type: ignore[attr-defined]
        made.KEYS = tuple(keys(made))  # type: ignore[attr-defined]  # derived from the fields, for docs and tests
        return made

    return wrap if cls is None else wrap(cls)


@functools.lru_cache(maxsize=None)
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


def parse(cls: type[T], data: Any, prefix: str | None = None) -> T:
    """Build config ``cls`` from plain data (a YAML mapping); field paths in errors start with ``prefix`` (default:
    the class's own). Anything wrong is one ``ConfigError`` line."""
    prefix = getattr(cls, "__config_prefix__", "") if prefix is None else prefix
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or _name(cls)}: expected a mapping of keys, got {type(data).__name__}")
    try:
        return _adapter(cls).validate_python(dict(data))
    except ValidationError as exc:
        raise config_error(exc, cls, prefix) from None


def keys(cls: type) -> list[str]:
    """The keys a config class accepts (its init fields, in order)."""
    return [f.name for f in dataclasses.fields(cls) if f.init]


def plain_dataclass(cls: type[T], data: Any, minimum: float | None = None) -> T:
    """A (standard library) dataclass of numbers from a mapping, for use in validators: its fields are the keys,
    ``int`` fields take :data:`Integer`, ``float`` fields :data:`Amount` values (each ``>= minimum``)."""
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise Invalid(f"expected a mapping of keys, got {type(data).__name__}")
    names = keys(cls)
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in data.items():
        if key not in names:
            raise Invalid(f"unknown key {key!r}; valid keys: {', '.join(names)}")
        if hints[key] is int and not is_whole_number(value):
            raise Invalid(f"expected an integer, got {value!r}", at=(key,))
        try:  # a float field reads 1e-5 as written (PyYAML: a string), like Amount
            number = _amount(value) if hints[key] is not int else value
        except Invalid as exc:
            raise Invalid(exc.detail, at=(key,)) from None
        if minimum is not None and number < minimum:
            raise Invalid(f"must be >= {minimum}, got {value}", at=(key,))
        values[key] = number
    return cls(**values)


# ---------------------------------------------------------------------------------------------------------------
# the one wording
# ---------------------------------------------------------------------------------------------------------------
_EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string", "list_type": "a list", "tuple_type": "a list", "iterable_type": "a list",
    "dict_type": "a mapping of keys", "mapping_type": "a mapping of keys", "dataclass_type": "a mapping of keys",
    "model_type": "a mapping of keys",
}
_UNKNOWN_KEY = ("unexpected_keyword_argument", "extra_forbidden")
_MISSING_KEY = ("missing", "missing_argument", "missing_keyword_only_argument")
_BOUNDS = {"greater_than_equal": ("ge", ">="), "greater_than": ("gt", ">"), "less_than_equal": ("le", "<="),
           "less_than": ("lt", "<")}


def path_text(prefix: str, loc: Sequence[str | int]) -> str:
    """``prefix`` and a location as a field path: ``("attacks", 2, "params")`` → ``attacks[2].params``."""
    text = prefix
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def config_error(exc: ValidationError, cls: type, prefix: str = "") -> ConfigError:
    """The first error of ``exc`` (raised validating config class ``cls``) as a one-line :class:`ConfigError` that
    keeps the field's path and the detail apart (``.field`` / ``.detail``) where the error names one field."""
    field, detail = _error_parts(exc, cls, prefix)
    return ConfigError(detail) if field is None else ConfigError(field=field, detail=detail)


def _error_parts(exc: ValidationError, cls: type, prefix: str) -> tuple[str | None, str]:
    """``(field, detail)`` of :func:`config_error`; ``(None, message)`` for a message that names its own field."""
    errors = exc.errors(include_url=False)
    # unknown keys first (a misspelt key also shows up as the key it should have been, missing)
    err = next((e for e in errors if e["type"] in _UNKNOWN_KEY), errors[0])
    loc = tuple(err["loc"])
    kind = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    if kind in _UNKNOWN_KEY or kind in _MISSING_KEY:
        parent, key = loc[:-1], loc[-1]
        where = path_text(prefix, parent) or _name(cls)
        owner = _type_at(cls, parent)
        if kind in _UNKNOWN_KEY:
            valid = keys(owner) if dataclasses.is_dataclass(owner) else []
            return where, f"unknown key {key!r}; valid keys: {', '.join(valid)}"
        hint = _hint(owner, key)
        return where, f"missing key {key!r}" + (f" ({hint})" if hint else "")
    where = path_text(prefix, loc)
    if kind in ("value_error", "assertion_error"):
        error = ctx.get("error")
        detail = getattr(error, "detail", None)
        if detail is None:  # a whole message naming its own field, relative to the config class that raised it
            message = str(error)
            if not where:
                return None, message
            return None, f"{where}.{message}" if dataclasses.is_dataclass(_type_at(cls, loc)) else f"{where}: {message}"
        return _join(where, getattr(error, "field", None) or ""), detail
    if kind in _EXPECTED:
        got = type(value).__name__ if _EXPECTED[kind] in ("a list", "a mapping of keys") else repr(value)
        return where, f"expected {_EXPECTED[kind]}, got {got}"
    if kind in _BOUNDS:
        key, sign = _BOUNDS[kind]
        return where, f"must be {sign} {ctx[key]}, got {value!r}"
    if kind == "string_too_short":
        return where, f"expected a non-empty string, got {value!r}"
    return where, err["msg"]


def _join(path: str, field: str) -> str:
    """A field path below ``path``: ``("attacks[2]", "params")`` → ``attacks[2].params``."""
    if not path or not field:
        return path or field
    return path + field if field.startswith("[") else f"{path}.{field}"


def _name(cls: type) -> str:
    return getattr(cls, "__config_name__", "config")


def _strip(hint: Any) -> Any:
    """The class inside ``Annotated[...]``, ``X | None`` and ``tuple[X, ...]``."""
    while True:
        origin = typing.get_origin(hint)
        if origin is Annotated:
            hint = typing.get_args(hint)[0]
        elif origin in (typing.Union, types.UnionType):
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        elif origin in (tuple, list, dict) and typing.get_args(hint):
            hint = typing.get_args(hint)[0]
        else:
            return hint


def _type_at(cls: type, loc: Sequence[str | int]) -> Any:
    """The config class at ``loc`` below ``cls`` (list indices skipped)."""
    hint: Any = cls
    for part in loc:
        if isinstance(part, int) or not dataclasses.is_dataclass(hint):
            continue
        hint = _strip(typing.get_type_hints(hint, include_extras=True).get(part, Any))
    return hint


def _hint(owner: Any, key: str | int) -> str:
    if not dataclasses.is_dataclass(owner):
        return ""
    for f in dataclasses.fields(owner):
        if f.name == key:
            return str(f.metadata.get("hint", ""))
    return ""


def config_field(default: Any = dataclasses.MISSING, *, hint: str = "", **kwargs: Any) -> Any:
    """A dataclass field whose ``hint`` (what to write) completes a "missing key" error."""
    return dataclasses.field(default=default, metadata={"hint": hint}, **kwargs)

