"""Mutation round on :mod:`kwta_robust.plugins`: where a registered name came from (``entry_origin``), what an
evaluation record keeps (``plugin_provenance``), the listing's rows and their origin text, each against values
worked out by hand for a registry the test builds itself."""

from __future__ import annotations

import importlib.metadata

import pytest

import kwta_robust.plugins as plugins
from attacks.registry import Entry, PluginOrigin
from kwta_robust.diagnostics import CHECKS, register_check
from kwta_robust.plugins import PluginKind, entry_origin, listing, origin_text, plugin_provenance

PYTEST_VERSION = pytest.__version__  # the installed pytest's version, read without importlib.metadata
#: A script's top-level module mapped (as packages_distributions() maps it) to a name no distribution has, then pytest.
PACKAGES = {"my_script_mod": ["no-such-distribution-kwta", "pytest"]}


class FakeRegistry:
    """What :class:`~kwta_robust.plugins.PluginKind` needs of a registry: its entries, skipped plug-ins and group."""

    entry_point_group = "kwta_robust.things"

    def __init__(self, entries: list[Entry], failures: dict[str, str]) -> None:
        self._entries, self._failures = entries, failures

    def entries(self) -> list[Entry]:
        return list(self._entries)

    def failures(self) -> dict[str, str]:
        return dict(self._failures)


THINGS = FakeRegistry([
    Entry("zeta", None, "the last built-in", source="attacks.gradient"),
    Entry("alpha", None, "a script's", source="my_script_mod.cells"),
    Entry("mid", None, "a plug-in's", source="mypkg.things",
          plugin=PluginOrigin("mypkg", "1.2", "kwta_robust.things: mid = mypkg.things")),
], {"z-broken": "is the plug-in of mypkg 1.2 (z)", "a-broken": "is the plug-in of mypkg 1.2 (a)"})
OTHERS = FakeRegistry([Entry("solo", None, "", source="other_script")], {})
BUILT_INS = FakeRegistry([Entry("own", None, "", source="kwta_robust.data")], {})


@pytest.fixture
def fake_kinds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """``KINDS`` replaced by three kinds of this module; returns the list counting reads of the distributions."""
    reads: list[int] = []

    def packages_distributions() -> dict:
        reads.append(1)
        return PACKAGES

    monkeypatch.setattr(importlib.metadata, "packages_distributions", packages_distributions)
    monkeypatch.setattr(plugins, "KINDS", {"things": PluginKind(__name__, "THINGS", "a thing"),
                                           "built-ins": PluginKind(__name__, "BUILT_INS", "ours only"),
                                           "others": PluginKind(__name__, "OTHERS", "another thing")})
    return reads


def test_entry_origin_of_a_plugin_a_built_in_and_a_script() -> None:
    plugin = Entry("mid", None, source="mypkg.things", plugin=PluginOrigin("mypkg", "1.2", "grp: mid = mypkg.things"))
    assert entry_origin(plugin, {}) == {"source": "mypkg.things", "distribution": "mypkg", "version": "1.2",
                                        "entry_point": "grp: mid = mypkg.things"}
    assert entry_origin(Entry("pgd", None, source="attacks.gradient"), PACKAGES) == {
        "source": "attacks.gradient", "distribution": None, "version": None, "entry_point": None}
    # a script's module: its top-level package's first distribution that is installed (the first is not)
    assert entry_origin(Entry("mine", None, source="my_script_mod.cells.one"), PACKAGES) == {
        "source": "my_script_mod.cells.one", "distribution": "pytest", "version": PYTEST_VERSION, "entry_point": None}
    assert entry_origin(Entry("mine", None, source="__main__"), PACKAGES) == {
        "source": "__main__", "distribution": None, "version": None, "entry_point": None}
    assert entry_origin(Entry("mine", None, source="my_script_mod"), {"my_script_mod": ["no-such-distribution-kwta"]}
                        ) == {"source": "my_script_mod", "distribution": None, "version": None, "entry_point": None}


def test_entry_origin_reads_the_installed_distributions_only_when_not_given(fake_kinds: list[int]) -> None:
    assert entry_origin(Entry("mine", None, source="my_script_mod"))["distribution"] == "pytest"
    assert len(fake_kinds) == 1
    assert entry_origin(Entry("mine", None, source="my_script_mod"), {})["distribution"] is None
    assert len(fake_kinds) == 1


def test_provenance_keeps_every_name_not_ours_and_reads_the_distributions_once(fake_kinds: list[int]) -> None:
    assert plugin_provenance(["things", "built-ins", "others"]) == {
        "things": {
            "alpha": {"source": "my_script_mod.cells", "distribution": "pytest", "version": PYTEST_VERSION,
                      "entry_point": None},
            "mid": {"source": "mypkg.things", "distribution": "mypkg", "version": "1.2",
                    "entry_point": "kwta_robust.things: mid = mypkg.things"}},
        "others": {"solo": {"source": "other_script", "distribution": None, "version": None, "entry_point": None}},
    }  # no "built-ins": a kind with only this repository's names is left out
    assert len(fake_kinds) == 1  # once per call, though two kinds hold a script's name
    assert plugin_provenance(["built-ins"]) == {} and len(fake_kinds) == 1  # no script's name: not read at all


def test_an_evaluation_records_a_scripts_diagnostic_check() -> None:
    with CHECKS.preserved():
        register_check("probe-mutant-check", "a check a script registered")(lambda record, thresholds: [])
        recorded = plugin_provenance()
    assert recorded["diagnostics"]["probe-mutant-check"]["source"] == __name__
    assert "probe-mutant-check" not in CHECKS


def test_the_listing_rows_sorted_by_name_then_the_skipped_ones(fake_kinds: list[int]) -> None:
    origin = {"distribution": None, "version": None, "entry_point": None}
    assert listing(["things"]) == [
        {"kind": "things", "name": "alpha", "summary": "a script's", "built_in": False, "source": "my_script_mod.cells",
         "distribution": "pytest", "version": PYTEST_VERSION, "entry_point": None},
        {"kind": "things", "name": "mid", "summary": "a plug-in's", "built_in": False, "source": "mypkg.things",
         "distribution": "mypkg", "version": "1.2", "entry_point": "kwta_robust.things: mid = mypkg.things"},
        {"kind": "things", "name": "zeta", "summary": "the last built-in", "built_in": True,
         "source": "attacks.gradient", **origin},
        {"kind": "things", "name": "a-broken", "failed": "is the plug-in of mypkg 1.2 (a)"},
        {"kind": "things", "name": "z-broken", "failed": "is the plug-in of mypkg 1.2 (z)"},
    ]
    everything = listing()  # every kind, in KINDS' order
    assert [(r["kind"], r["name"]) for r in everything] == [
        ("things", "alpha"), ("things", "mid"), ("things", "zeta"), ("things", "a-broken"), ("things", "z-broken"),
        ("built-ins", "own"), ("others", "solo")]
    assert everything[-2] == {"kind": "built-ins", "name": "own", "summary": "", "built_in": True,
                              "source": "kwta_robust.data", **origin}


def test_origin_text_in_a_few_words(fake_kinds: list[int]) -> None:
    texts = {row["name"]: origin_text(row) for row in listing(["things", "others"])}
    assert texts == {
        "alpha": f"pytest {PYTEST_VERSION} (my_script_mod.cells, registered by import)",
        "mid": "mypkg 1.2 (entry point kwta_robust.things: mid = mypkg.things)",
        "zeta": "built-in (attacks.gradient)",
        "a-broken": "SKIPPED: is the plug-in of mypkg 1.2 (a)",
        "z-broken": "SKIPPED: is the plug-in of mypkg 1.2 (z)",
        "solo": "registered by other_script",
    }
    entry_point = {"source": "m", "entry_point": "g: x = m"}
    assert origin_text({**entry_point, "distribution": None, "version": None}) == \
        "unknown distribution (entry point g: x = m)"
    assert origin_text({**entry_point, "distribution": "d", "version": None}) == "d (entry point g: x = m)"
    assert origin_text({**entry_point, "distribution": None, "version": "2.0"}) == "2.0 (entry point g: x = m)"
