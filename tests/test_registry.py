"""The generic registry: one error type naming the field, names()/info(), decorator registration, plug-ins found by
importing a package and through entry points of an installed distribution (a fake ``*.dist-info`` on sys.path)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from attacks.base import AttackConfigError
from kwta_robust.errors import ConfigError
from kwta_robust.formats import FORMATS, render_table
from kwta_robust.registry import PluginOrigin, Registry, RegistryError
from kwta_robust.report import Cell, Table


def test_register_get_info_names_and_one_error_type() -> None:
    things: Registry[object] = Registry("widget", field="widgets[0].name")

    @things.register("b", colour="red")
    class Bee:
        """A bee.

        Longer text."""

    things.register("a", len, summary="the length")
    assert things.names() == ["a", "b"] and "b" in things and len(things) == 2
    assert things.get("b") is Bee and things.create("a", [1, 2]) == 2
    info = things.info("b")
    assert (info.summary, info.metadata, info.doc) == ("A bee.", {"colour": "red"}, "A bee.\n\nLonger text.")
    assert [e.name for e in things.entries()] == ["b", "a"]  # registration order
    with pytest.raises(RegistryError) as caught:
        things.get("c")
    assert str(caught.value) == "widgets[0].name: unknown widget 'c'; known widgets: a, b"
    assert isinstance(caught.value, ConfigError) and isinstance(caught.value, AttackConfigError)
    with pytest.raises(RegistryError, match="other: unknown widget"):
        things.info("c", field="other")
    with pytest.raises(RegistryError, match="'a' is registered twice"):
        things.register("a", max)
    with pytest.raises(RegistryError, match="unknown widget"):
        things.get(["unhashable"])  # type: ignore[arg-type]
    with things.temporarily("c", min):
        assert things.get("c") is min
    assert "c" not in things


def test_every_registry_speaks_the_same_error() -> None:
    from attacks.base import create_attack
    from attacks.bpda import SURROGATES
    from attacks.noise import create_noise_probe
    from kwta_robust.data import dataset_info
    from kwta_robust.models import create_model
    from kwta_robust.sparsity import create_pruning_method

    for call, start in ((lambda: create_attack("x"), "attack: unknown attack 'x'; known attacks: "),
                        (lambda: create_noise_probe("x"), "noise: unknown noise probe 'x'; known noise probes: "),
                        (lambda: SURROGATES.get("x"), "surrogate: unknown surrogate 'x'; known surrogates: "),
                        (lambda: dataset_info("x"), "dataset: unknown data set 'x'; known data sets: "),
                        (lambda: create_model("x"), "arch: unknown architecture 'x'; known architectures: "),
                        (lambda: create_pruning_method("x"),
                         "pruning.method: unknown pruning method 'x'; known pruning methods: "),
                        (lambda: render_table(Table(["a"], []), "x"), "--format: unknown format 'x'; known formats: ")):
        with pytest.raises(RegistryError) as caught:
            call()
        assert str(caught.value).startswith(start), str(caught.value)


TSV_PLUGIN = '''
from kwta_robust.formats import TableFormat
from kwta_robust.report import cell_text


class Tsv(TableFormat):
    """tab-separated values"""

    name = "tsv"

    def table(self, table):
        rows = [table.headers] + [[cell_text(c) for c in row] for row in table.rows]
        return "".join("\\t".join(row) + "\\n" for row in rows)
'''


@pytest.fixture
def fake_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed distribution declaring a table format through the entry point group, as pip would leave it
    after this process made its first lookup (which, run first, would otherwise take the fake plug-in for built-in)."""
    FORMATS.discover()
    (tmp_path / "fake_tsv_plugin.py").write_text(TSV_PLUGIN)
    info = tmp_path / "fake_tsv_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-tsv-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [kwta_robust.table_formats]
        tsv = fake_tsv_plugin:Tsv
        broken = fake_tsv_plugin:DoesNotExist
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("fake_tsv_plugin", None)


def test_a_format_from_an_entry_point(fake_distribution: Path, caplog: pytest.LogCaptureFixture) -> None:
    built_in = FORMATS.names()
    assert "tsv" not in built_in
    with FORMATS.preserved():  # the broken entry point's failure must not outlive the fake distribution
        FORMATS.discover(refresh=True)  # as on the first lookup of a process started after the install
        assert FORMATS.names() == sorted([*built_in, "tsv"])
        assert FORMATS.info("tsv").source == "fake_tsv_plugin"
        assert FORMATS.info("tsv").plugin == PluginOrigin("fake-tsv-plugin", "1.0",
                                                          "kwta_robust.table_formats: tsv = fake_tsv_plugin:Tsv")
        assert FORMATS.info("tsv").summary == "tab-separated values"
        table = Table(["model", "clean"], [[Cell("a"), Cell(0.5, (0.4, 0.6), True)]])
        assert render_table(table, "tsv") == "model\tclean\na\t50.0 (40.0–60.0)\n"
        assert "could not be loaded and is skipped" in caplog.text and "broken" in caplog.text
        assert "broken" in FORMATS.failures()
    assert FORMATS.names() == built_in and "broken" not in FORMATS.failures()
