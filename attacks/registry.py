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
registers that object under the entry point's name (in a registry of info records, :attr:`Registry.decorator`, the
object must carry the registry's decorator instead). Every entry a plug-in adds remembers where it came from
(:attr:`Entry.plugin`: distribution, version, entry point), for listings and records. A plug-in that fails to import,
or whose names are taken (a built-in name is never replaced), is logged and skipped with whatever it registered;
looking its name up later is one error line naming the entry point, its distribution and the reason. A plug-in is
imported with its prints logged and the warnings filters put back after it (:mod:`attacks.plugin_isolation`): it
can neither corrupt the command line's stdout nor hide or raise the harness's warnings.

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
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Generic, Iterator, Mapping, Sequence, TypeVar, overload

from attacks.errors import RegistryError, first_line, unknown_detail
from attacks.plugin_isolation import isolated

logger = logging.getLogger(__name__)

T = TypeVar("T")


def first_doc_line(obj: object) -> str:
    """The first line of ``obj``'s docstring (``""`` without one)."""
    return ((inspect.getdoc(obj) or "").strip().splitlines() or [""])[0]


#: Top-level packages whose registrations are built-ins; any other module's are a plug-in's.
BUILT_IN_PACKAGES: tuple[str, ...] = ("attacks", "kwta_robust")


@dataclass(frozen=True)
class PluginOrigin:
    """Where a third-party plug-in came from: the ``distribution`` and ``version`` that declare the entry point
    (``None`` where ``importlib.metadata`` does not say) and the entry point itself (``group: name = value``)."""

    distribution: str | None
    version: str | None
    entry_point: str

    def text(self) -> str:
        """``"mypkg 1.0 (entry point kwta_robust.attacks: mine = mypkg.attacks)"``."""
        dist = " ".join(p for p in (self.distribution, self.version) if p) or "an unknown distribution"
        return f"{dist} (entry point {self.entry_point})"

    def to_dict(self) -> dict[str, str | None]:
        """Plain data for records."""
        return {"distribution": self.distribution, "version": self.version, "entry_point": self.entry_point}


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered name: the object, a one-line ``summary`` (default: the docstring's first line), the whole
    docstring, free-form ``metadata``, ``source`` (the module or entry point that registered it) and ``plugin``
    (the entry point's distribution, for an entry an installed plug-in added; ``None`` otherwise)."""

    name: str
    obj: T
    summary: str = ""
    doc: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    plugin: PluginOrigin | None = None

    @property
    def built_in(self) -> bool:
        """Registered by this repository's own code (not by a plug-in, a script or a notebook)."""
        return self.plugin is None and self.source.partition(".")[0] in BUILT_IN_PACKAGES

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--help`` texts and listings (the object itself left out)."""
        return {"name": self.name, "summary": self.summary, "metadata": dict(self.metadata), "source": self.source,
                "plugin": None if self.plugin is None else self.plugin.to_dict()}


class Registry(Generic[T]):
    """Names → objects of one plug-in ``kind`` (e.g. ``"attack"``).

    ``field`` names the config field or option in error messages (default: ``kind``); ``plural`` the plural of
    ``kind`` (default: ``kind + "s"``); ``plugins`` modules or packages imported on the first lookup;
    ``entry_point_group`` the ``importlib.metadata`` group of third-party plug-ins; ``check(name, obj)`` validates
    every object at registration (raise to refuse it). A registry of info records built by a decorator (attacks,
    data sets, checks) names it in ``decorator`` (e.g. ``"@register_attack(name, norms=..., kind=...)"``) and says
    with ``unwrap(record)`` which object the decorator was put on: an entry point naming such an object must have
    been registered by that decorator. ``hint(name)``: a fix appended to the error for an unknown name (or None).
    """

    def __init__(self, kind: str, *, field: str | None = None, plural: str | None = None,
                 plugins: Sequence[str] = (), entry_point_group: str | None = None,
                 check: Callable[[str, T], None] | None = None, decorator: str | None = None,
                 unwrap: Callable[[T], Any] | None = None,
                 hint: Callable[[object], str | None] | None = None) -> None:
        self.kind = kind
        self._hint = hint  # name -> a fix for a name users write that is not registered (an attack's label)
        self.field = field or kind
        self.plural = plural or f"{kind}s"
        self.plugins = tuple(plugins)
        self.entry_point_group = entry_point_group
        self.decorator = decorator
        self._check = check
        self._unwrap = unwrap
        self._entries: dict[str, Entry[T]] = {}
        self._failed: dict[str, str] = {}  # entry point name -> why it was skipped (one line)
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
        problem = self._not_callable(obj)
        if problem is not None:  # refused here: found later, a raw AttributeError or TypeError when it was used
            raise RegistryError(self.field, f"{self.kind} {name!r}: {problem}")
        known = self._entries.get(name)
        if known is not None and not self._redefines(known, obj, source):
            new = source or _module_of(obj)
            fix = f"rename the one in {new} (a built-in name is never replaced)" if known.built_in \
                else "rename one of them"
            raise RegistryError(self.field, f"{self.kind} {name!r} is registered twice ({known.source} and {new}); "
                                            f"{fix}")
        if self._check is not None:
            self._check(name, obj)
        entry = Entry(name, obj, summary or first_doc_line(obj), inspect.getdoc(obj) or "", dict(metadata or {}),
                      source or _module_of(obj))
        self._entries[name] = entry
        return entry

    def _redefines(self, known: Entry[T], obj: T, source: str | None) -> bool:
        """Whether ``obj`` is ``known`` defined again by the same code (a notebook cell run twice, a reloaded
        module): same module, same qualified name. It then replaces ``known``."""
        new, old = self._unwrapped(obj), self._unwrapped(known.obj)
        qualname = getattr(new, "__qualname__", None)
        return (qualname is not None and qualname == getattr(old, "__qualname__", None)
                and (source or _module_of(obj)) == known.source and not known.built_in)

    def _not_callable(self, obj: Any) -> str | None:
        """Why ``obj`` cannot be registered, if it cannot: every plug-in is a callable (a factory, a class, a check;
        in a registry of info records, the object its decorator was put on) — ``None`` where it is one."""
        try:
            target = self._unwrapped(obj)
        except AttributeError:  # not an info record of this registry
            return f"{type(obj).__name__} is not what {self.decorator} registers; use that decorator"
        if not callable(target):
            return f"{target!r:.60} is not callable; register a function or class"
        return None

    def _unwrapped(self, obj: Any) -> Any:
        """The object a decorator was put on (``obj`` itself in a registry without ``unwrap``)."""
        return obj if self._unwrap is None else self._unwrap(obj)

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

    @contextlib.contextmanager
    def preserved(self) -> Iterator["Registry[T]"]:
        """Restore every entry and skipped plug-in as they were after the block (tests that install plug-ins)."""
        self.discover()
        entries, failed = dict(self._entries), dict(self._failed)
        try:
            yield self
        finally:
            self._entries, self._failed = entries, failed

    # --- lookup ----------------------------------------------------------------------------------------------
    def unknown(self, name: object, field: str | None = None) -> RegistryError:
        """The error for an unknown ``name`` in ``field``: one line listing the known names, or, for the name of a
        plug-in that was skipped, naming its entry point, distribution and why."""
        failed = self._failed.get(name) if isinstance(name, str) else None
        if failed is not None:
            return RegistryError(field or self.field, f"{self.kind} {name!r} {failed}")
        detail = unknown_detail(self.kind, name, self.names(), self.plural)
        extra = self._hint(name) if self._hint is not None else None
        detail += f" ({extra})" if extra else ""
        if self._failed:
            detail += f" (plug-ins skipped, see the warnings: {', '.join(sorted(self._failed))})"
        return RegistryError(field or self.field, detail)

    def failures(self) -> dict[str, str]:
        """The plug-ins that were skipped: entry point name → why (``"is the plug-in ... which failed ..."``)."""
        self.discover()
        return dict(self._failed)

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
        self._failed.clear()
        group = self.entry_point_group
        for point in importlib.metadata.entry_points(group=group):
            origin = _origin(point, group)  # type: ignore[arg-type]
            before = dict(self._entries)
            try:
                with isolated(f"{self.kind} plug-in {point.name!r} of {origin.text()}"):  # its prints, its filters
                    obj = point.load()
                if not inspect.ismodule(obj):
                    self._add_entry_point_object(point, obj)
            except Exception as exc:  # noqa: BLE001 - a broken third-party plug-in must not break the others
                self._entries = before  # nothing of a plug-in that failed half-way
                reason = f"{type(exc).__name__}: {first_line(exc)}"
                self._failed[point.name] = (f"is the plug-in of {origin.text()}, which could not be loaded ({reason});"
                                            f" fix or uninstall {origin.distribution or 'it'}")
                logger.warning("%s plug-in %r of %s could not be loaded and is skipped: %s", self.kind, point.name,
                               origin.text(), reason)
                continue
            self._tag(before, point, obj, origin)

    def _add_entry_point_object(self, point: importlib.metadata.EntryPoint, obj: Any) -> None:
        """Register an entry point that names an object (a class, a factory), unless its decorator did."""
        if any(self._unwrapped(e.obj) is obj for e in self._entries.values()):
            return
        if self.decorator is not None:
            raise RegistryError(self.field, f"{point.value} is not a registered {self.kind}: decorate it with "
                                            f"{self.decorator}, or point the entry point at its module")
        known = self._entries.get(point.name)
        if known is not None:
            raise RegistryError(self.field, f"{self.kind} {point.name!r} is taken by {known.source}; rename the "
                                            "entry point")
        self.add(point.name, obj, source=point.value.partition(":")[0])

    def _tag(self, before: Mapping[str, Entry[T]], point: importlib.metadata.EntryPoint, obj: Any,
             origin: PluginOrigin) -> None:
        """Mark what the entry point registered with its origin: the names its import added and, where the module
        was imported before (by a script, another entry point), the entries of that module or object."""
        module = point.value.partition(":")[0].strip()
        for name, entry in self._entries.items():
            added = name not in before
            mine = (entry.source == module or entry.source.startswith(module + ".")) if inspect.ismodule(obj) \
                else self._unwrapped(entry.obj) is obj
            if (added or mine) and not entry.built_in:
                self._entries[name] = replace(entry, plugin=origin)


def _origin(point: importlib.metadata.EntryPoint, group: str) -> PluginOrigin:
    """The distribution (name, version) that declares ``point``, as ``importlib.metadata`` knows it."""
    dist = getattr(point, "dist", None)
    name = version = None
    if dist is not None:
        with contextlib.suppress(Exception):  # a damaged METADATA must not stop the plug-in
            name, version = dist.metadata["Name"], dist.version
    return PluginOrigin(name, version, f"{group}: {point.name} = {point.value}")


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
