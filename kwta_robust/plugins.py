"""Every plug-in kind in one place: its registry, its entry point group, what a listing shows and what a record keeps.

Each kind is a :class:`~kwta_robust.registry.Registry` (built-ins found by importing this repository's modules,
another distribution's plug-ins through the kind's ``importlib.metadata`` entry point group). :data:`KINDS` maps the
name a listing takes (``kwta-robust plugins attacks``) to where that registry lives, imported only when asked for.

:func:`plugin_provenance` is what an evaluation record keeps (``provenance.plugins``): every registered name of the
kinds an evaluation reads that is not this repository's own, with the distribution and version that provided it —
what a paper needs to name to be reproduced.

There is deliberately no config key that imports a module: a config file travels (shared, shipped to sweep
executors and shard workers) and importing what it names would run code on loading it; an installed
distribution's entry points are found in every process, and a script registers its own with the Python API.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping, Sequence

from kwta_robust.registry import Entry, Registry


@dataclass(frozen=True)
class PluginKind:
    """One plug-in kind: the module and attribute of its registry, and what a plug-in is (for the help text)."""

    module: str
    attribute: str
    what: str

    def registry(self) -> Registry[Any]:
        """The registry (its module imported on the first call)."""
        return getattr(importlib.import_module(self.module), self.attribute)

    @property
    def group(self) -> str:
        """The entry point group another distribution declares its plug-ins in."""
        return self.registry().entry_point_group or ""


#: Listing name → plug-in kind, in the order of the README's table (Plug-ins).
KINDS: Mapping[str, PluginKind] = MappingProxyType({
    "attacks": PluginKind("attacks.base", "REGISTRY", "a factory decorated with @register_attack"),
    "noise-probes": PluginKind("attacks.noise", "NOISE_PROBES", "a NoiseProbe class"),
    "surrogates": PluginKind("attacks.bpda", "SURROGATES", "a BPDA surrogate builder"),
    "architectures": PluginKind("kwta_robust.models.registry", "REGISTRY", "a model factory"),
    "datasets": PluginKind("kwta_robust.data", "REGISTRY", "a loader decorated with @register_dataset"),
    "diagnostics": PluginKind("kwta_robust.diagnostics", "CHECKS", "a check decorated with @register_check"),
    "pruning-methods": PluginKind("kwta_robust.sparsity.config", "METHODS", "a PruningMethod factory"),
    "formats": PluginKind("kwta_robust.formats.base", "FORMATS", "a TableFormat subclass"),
    "executors": PluginKind("kwta_robust.sweep.executors.base", "EXECUTORS", "an Executor subclass"),
})

#: The kinds an evaluation's numbers and flags can depend on (recorded in ``provenance.plugins``).
EVALUATION_KINDS: tuple[str, ...] = ("attacks", "noise-probes", "surrogates", "architectures", "datasets",
                                     "diagnostics")


def entry_origin(entry: Entry[Any], packages: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """Where a registered name came from, as plain data: the built-in module, or the plug-in's distribution,
    version and entry point (for a name a script registered: its module, and the distribution that module is
    installed by, if any; ``packages``: ``importlib.metadata.packages_distributions()``, read if not given)."""
    if entry.plugin is not None:
        return {"source": entry.source, **entry.plugin.to_dict()}
    if entry.built_in:
        return {"source": entry.source, "distribution": None, "version": None, "entry_point": None}
    dist = _distribution_of(entry.source, importlib.metadata.packages_distributions() if packages is None else packages)
    return {"source": entry.source, "distribution": dist[0] if dist else None, "version": dist[1] if dist else None,
            "entry_point": None}


def _distribution_of(module: str, packages: Mapping[str, Sequence[str]]) -> tuple[str, str] | None:
    """The (name, version) of the installed distribution providing top-level package of ``module``, if one does."""
    for name in packages.get(module.partition(".")[0]) or []:
        try:
            return name, importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def plugin_provenance(kinds: Sequence[str] = EVALUATION_KINDS) -> dict[str, dict[str, dict[str, Any]]]:
    """Every name of ``kinds`` not registered by this repository: ``{kind: {name: entry_origin}}`` (kinds without
    such a name left out). An evaluation records it as ``provenance.plugins``. The installed distributions are
    read once per call, and only when a script registered a name (every installed one is scanned)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    packages: Mapping[str, Sequence[str]] | None = None
    for kind in kinds:
        entries = [e for e in KINDS[kind].registry().entries() if not e.built_in]
        if packages is None and any(e.plugin is None for e in entries):
            packages = importlib.metadata.packages_distributions()
        found = {e.name: entry_origin(e, packages) for e in entries}
        if found:
            out[kind] = found
    return out


def listing(kinds: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per registered name of ``kinds`` (default: all): kind, name, summary, origin; then one per plug-in
    that was skipped (``name``: its entry point's, ``failed``: why)."""
    rows: list[dict[str, Any]] = []
    packages = importlib.metadata.packages_distributions()
    for kind in kinds or list(KINDS):
        registry = KINDS[kind].registry()
        for entry in sorted(registry.entries(), key=lambda e: e.name):
            rows.append({"kind": kind, "name": entry.name, "summary": entry.summary, "built_in": entry.built_in,
                         **entry_origin(entry, packages)})
        rows.extend({"kind": kind, "name": name, "failed": why} for name, why in sorted(registry.failures().items()))
    return rows


def origin_text(row: Mapping[str, Any]) -> str:
    """A listing row's origin in a few words: ``built-in (attacks.gradient)``, ``mypkg 1.0 (entry point ...)``."""
    if row.get("failed"):
        return f"SKIPPED: {row['failed']}"
    if row.get("entry_point"):
        dist = " ".join(str(row[k]) for k in ("distribution", "version") if row.get(k)) or "unknown distribution"
        return f"{dist} (entry point {row['entry_point']})"
    if row.get("distribution"):
        return f"{row['distribution']} {row.get('version') or ''} ({row['source']}, registered by import)"
    return f"built-in ({row['source']})" if row.get("built_in") else f"registered by {row['source']}"
