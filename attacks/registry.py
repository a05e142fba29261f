"""One generic registry for every plug-in kind: attacks, noise probes, surrogates (here) and architectures, data
sets, diagnostics, pruning methods, table formats and sweep executors (``kwta_robust``, which re-exports this
module as :mod:`kwta_robust.registry`).

A registry maps names to objects (a factory, a class, an info record) registered with a decorator, timm-style::

    FORMATS = Registry("format", field="--format", plugins=("kwta_robust.formats",),
                       entry_point_group="kwta_robust.table_formats")

    @FORMATS.register("md")
    class Markdown: ...

    FORMATS.get("md")          # the object; RegistryError naming the field and the known names otherwise
    FORMATS.names()            # sorted names (argparse choices and help text come from here)
    FORMATS.info("md")         # Entry: name, object, one-line summary, docstring, metadata, where it came from

Plug-ins are found on the first lookup: every module named in ``plugins`` is imported (a package with all its
modules, :mod:`pkgutil`), so a new built-in is one new file; then every entry point of ``entry_point_group``
(``importlib.metadata``) is loaded, so another distribution adds one by declaring it in its ``pyproject.toml``::

    [project.entry-points."kwta_robust.table_formats"]
    html = "mypkg.formats:HtmlFormat"

An entry point naming a module registers whatever the module's decorators register; one naming an object
registers that object under the entry point's name. A plug-in that fails to import is logged and skipped.

Every error is a :class:`~attacks.errors.RegistryError` (a ``ConfigError`` and an ``AttackConfigError``) with
one line: ``"{field}: unknown {kind} {name!r}; known {kind}s: a, b"``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import inspect
import logging
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, Mapping, Sequence, TypeVar, overload

from attacks.errors import RegistryError, unknown_detail

logger = logging.getLogger(__name__)

T = TypeVar("T")


def first_doc_line(obj: object) -> str:
    """The first line of ``obj``'s docstring (``""`` without one)."""
    return ((inspect.getdoc(obj) or "").strip().splitlines() or [""])[0]


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered name: the object, a one-line ``summary`` (default: the docstring's first line), the whole
    docstring, free-form ``metadata`` and ``source`` (the module or entry point that registered it)."""

    name: str
    obj: T
    summary: str = ""
    doc: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--help`` texts and listings (the object itself left out)."""
        return {"name": self.name, "summary": self.summary, "metadata": dict(self.metadata), "source": self.source}


class Registry(Generic[T]):
    """Names → objects of one plug-in ``kind`` (e.g. ``"attack"``).

    ``field`` names the config field or option in error messages (default: ``kind``); ``plural`` the plural of
    ``kind`` (default: ``kind + "s"``); ``plugins`` modules or packages imported on the first lookup;
    ``entry_point_group`` the ``importlib.metadata`` group of third-party plug-ins; ``check(name, obj)`` validates
    every object at registration (raise to refuse it).
    """

    def __init__(self, kind: str, *, field: str | None = None, plural: str | None = None,
                 plugins: Sequence[str] = (), entry_point_group: str | None = None,
                 check: Callable[[str, T], None] | None = None) -> None:
        self.kind = kind
        self.field = field or kind
        self.plural = plural or f"{kind}s"
        self.plugins = tuple(plugins)
        self.entry_point_group = entry_point_group
        self._check = check
        self._entries: dict[str, Entry[T]] = {}
        self._discovered = False

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} registered)"

    # --- registration ----------------------------------------------------------------------------------------
    @overload
    def register(self, name: str, obj: None = None, /, *, summary: str = "", **metadata: Any) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T, /, *, summary: str = "", **metadata: Any) -> T: ...

    def register(self, name: str, obj: Any = None, /, *, summary: str = "", **metadata: Any) -> Any:
        """Register ``obj`` under ``name``; without ``obj`` a decorator doing so (it returns the object)."""
        if obj is not None:
            self.add(name, obj, summary=summary, metadata=metadata)
            return obj

        def decorator(target: T) -> T:
            self.add(name, target, summary=summary, metadata=metadata)
            return target

        return decorator

    def add(self, name: str, obj: T, *, summary: str = "", metadata: Mapping[str, Any] | None = None,
            source: str | None = None) -> Entry[T]:
        """Register ``obj`` under ``name`` (a :class:`RegistryError` if the name is taken)."""
        if not isinstance(name, str) or not name:
            raise RegistryError(self.field, f"a {self.kind} needs a non-empty name, got {name!r}")
        if name in self._entries:
            raise RegistryError(self.field, f"{self.kind} {name!r} is registered twice "
                                            f"({self._entries[name].source} and {source or _module_of(obj)})")
        if self._check is not None:
            self._check(name, obj)
        entry = Entry(name, obj, summary or first_doc_line(obj), inspect.getdoc(obj) or "", dict(metadata or {}),
                      source or _module_of(obj))
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> Entry[T]:
        """Remove ``name`` (for tests and plug-in reloads); returns its entry."""
        self.discover()
        if name not in self._entries:
            raise self.unknown(name)
        return self._entries.pop(name)

    @contextlib.contextmanager
    def temporarily(self, name: str, obj: T, **metadata: Any) -> Iterator[Entry[T]]:
        """Register ``obj`` for the duration of a ``with`` block (tests)."""
        self.discover()
        entry = self.add(name, obj, metadata=metadata)
        try:
            yield entry
        finally:
            self._entries.pop(name, None)

    # --- lookup ----------------------------------------------------------------------------------------------
    def unknown(self, name: object, field: str | None = None) -> RegistryError:
        """The error for an unknown ``name`` in ``field`` (one line listing the known names)."""
        return RegistryError(field or self.field, unknown_detail(self.kind, name, self.names(), self.plural))

    def info(self, name: str, *, field: str | None = None) -> Entry[T]:
        """The entry of ``name``; :class:`RegistryError` naming ``field`` and the known names otherwise."""
        self.discover()
        try:
            return self._entries[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name from a config file
            raise self.unknown(name, field) from None

    def get(self, name: str, *, field: str | None = None) -> T:
        """The object registered as ``name``."""
        return self.info(name, field=field).obj

    def create(self, name: str, /, *args: Any, field: str | None = None, **kwargs: Any) -> Any:
        """Call the object registered as ``name`` (a factory or class) with the given arguments."""
        return self.get(name, field=field)(*args, **kwargs)  # type: ignore[operator]

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self.discover()
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        """Every entry in registration order."""
        self.discover()
        return list(self._entries.values())

    def __contains__(self, name: object) -> bool:
        self.discover()
        try:
            return name in self._entries
        except TypeError:
            return False

    def __len__(self) -> int:
        self.discover()
        return len(self._entries)

    # --- discovery -------------------------------------------------------------------------------------------
    def discover(self, *, refresh: bool = False) -> None:
        """Import the built-in plug-in modules and load the entry points: once, or again with ``refresh`` (to find
        plug-ins installed since the first lookup; names already registered are kept)."""
        if self._discovered and not refresh:
            return
        self._discovered = True  # first: plug-in modules may look names up while they are imported
        for name in self.plugins:
            _import_all(name)
        if self.entry_point_group:
            self._load_entry_points()

    def _load_entry_points(self) -> None:
        for point in importlib.metadata.entry_points(group=self.entry_point_group):
            try:
                obj = point.load()
            except Exception as exc:  # noqa: BLE001 - a broken third-party plug-in must not break the others
                logger.warning("%s plug-in %r (%s) could not be loaded and is skipped: %s: %s", self.kind,
                               point.name, point.value, type(exc).__name__, exc)
                continue
            if inspect.ismodule(obj):
                continue  # importing it registered what it defines
            known = self._entries.get(point.name)
            if known is not None:
                if known.obj is not obj:
                    logger.warning("%s plug-in %r (%s) is skipped: the name is taken by %s", self.kind, point.name,
                                   point.value, known.source)
                continue
            self.add(point.name, obj, source=f"entry point {point.value}")


def _module_of(obj: object) -> str:
    return getattr(obj, "__module__", None) or type(obj).__module__


def _import_all(name: str) -> None:
    """Import module ``name`` and, if it is a package, every module inside it (names starting with ``_`` skipped)."""
    module = importlib.import_module(name)
    path = getattr(module, "__path__", None)
    if path is None:
        return
    for found in pkgutil.iter_modules(path, prefix=f"{name}."):
        if not found.name.rpartition(".")[2].startswith("_"):
            _import_all(found.name)
