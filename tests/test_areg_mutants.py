"""Mutation round on attacks/registry.py, attacks/suites.py, attacks/queries.py, attacks/rng.py and
attacks/verdicts.py: the exact values a user sees (suite budgets, error lines, counts, verdicts), each checked
against hand-worked expectations."""

from __future__ import annotations

import logging
import random
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from attacks.errors import AttackConfigError
from attacks.queries import count_queries
from attacks.registry import Entry, PluginOrigin, Registry, RegistryError
from attacks.rng import rng_scope
from attacks.suites import available_suites, get_suite
from attacks.verdicts import classify, classify_batches, classify_in_batch
from test_randomized_models import Scripted


# --- suites ----------------------------------------------------------------------------------------------------------
def test_available_suites_are_sorted() -> None:
    assert available_suites() == ["kwta-adaptive", "quick", "standard"]


def test_kwta_adaptive_is_exactly_as_documented() -> None:
    pgd = {"steps": 100, "loss": "margin"}
    assert get_suite("kwta-adaptive") == [
        {"attack": "pgd", "params": {"steps": 100, "loss": "ce"}},
        {"attack": "bpda", "label": "bpda-smooth",
         "params": {"surrogate": "smooth", "inner": "apgd-ce", "temperature_schedule": [0.05, 0.03],
                    "stage_steps": [100, 500]}},
        {"attack": "pgd", "params": pgd},
        {"attack": "bpda", "params": {"surrogate": "identity", "inner": "pgd", "inner_params": pgd}},
        {"attack": "bpda", "label": "bpda-smooth-long",
         "params": {"surrogate": "smooth", "inner": "apgd-ce", "temperature_schedule": [0.1, 0.05, 0.03],
                    "stage_steps": [1000, 1000, 1000]}},
        {"attack": "bpda", "params": {"surrogate": "learned", "inner": "pgd", "inner_params": pgd}},
        {"attack": "gradient-estimation", "params": {"steps": 100, "samples_start": 10, "samples_end": 100}},
        {"attack": "square", "params": {"n_queries": 5000, "p_init": 0.8}},
    ]


def test_standard_params_exactly() -> None:
    targeted = {"steps": 100, "restarts": 1, "n_target_classes": 9}
    assert get_suite("standard") == [
        {"attack": "apgd-ce", "params": {"steps": 100, "restarts": 1}},
        {"attack": "apgd-t", "params": targeted},
        {"attack": "fab-t", "params": targeted},
        {"attack": "square", "params": {"n_queries": 5000, "p_init": 0.8, "restarts": 1}},
    ]


def test_nested_lists_of_a_returned_suite_are_copies() -> None:
    first = get_suite("kwta-adaptive")
    first[1]["params"]["temperature_schedule"].append(9.0)
    first[3]["params"]["inner_params"]["steps"] = 1
    again = get_suite("kwta-adaptive")
    assert again[1]["params"]["temperature_schedule"] == [0.05, 0.03]
    assert again[3]["params"]["inner_params"]["steps"] == 100


def test_targets_capped_at_classes_minus_one_also_inside_inner_params(monkeypatch) -> None:
    import attacks.suites as suites

    custom = dict(suites.SUITES)
    custom["nested"] = ({"attack": "bpda", "params": {"surrogate": "identity", "inner": "apgd-t",
                                                       "inner_params": {"n_target_classes": 9}}},)
    monkeypatch.setattr(suites, "SUITES", custom)
    assert suites.get_suite("nested", num_classes=4)[0]["params"]["inner_params"]["n_target_classes"] == 3
    assert suites.get_suite("nested", num_classes=10)[0]["params"]["inner_params"]["n_target_classes"] == 9
    # standard at exactly 4 classes: APGD-T's targeted DLR needs 4, so nothing is dropped; 3 targets each
    four = get_suite("standard", num_classes=4)
    assert [e["attack"] for e in four] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert [e["params"].get("n_target_classes") for e in four] == [None, 3, 3, None]


@pytest.mark.parametrize("classes", [True, 1, 0, 2.0])
def test_num_classes_that_are_not_a_class_count_are_one_error_line(classes) -> None:
    with pytest.raises(AttackConfigError) as caught:
        get_suite("quick", num_classes=classes)
    assert str(caught.value) == f"num_classes: a classifier needs at least 2 classes, got {classes!r}"


def test_an_unknown_suite_names_the_known_ones() -> None:
    with pytest.raises(AttackConfigError) as caught:
        get_suite("fast")
    assert str(caught.value) == "suite: unknown suite 'fast'; known suites: kwta-adaptive, quick, standard"


def test_a_suite_left_empty_is_an_error(monkeypatch, caplog) -> None:
    import attacks.suites as suites

    custom = dict(suites.SUITES)
    custom["dlr-only"] = ({"attack": "apgd-t", "params": {}},)
    monkeypatch.setattr(suites, "SUITES", custom)
    with caplog.at_level(logging.WARNING, logger="attacks.suites"):
        with pytest.raises(AttackConfigError, match="suite 'dlr-only': none of its attacks applies to a 3-class"):
            suites.get_suite("dlr-only", num_classes=3)
    assert "dropping apgd-t for a 3-class model: its DLR loss needs at least 4 classes" in caplog.text


# --- registry --------------------------------------------------------------------------------------------------------
def test_origin_without_distribution_and_built_in_only_without_plugin() -> None:
    assert PluginOrigin(None, None, "g: a = m").text() == "an unknown distribution (entry point g: a = m)"
    assert PluginOrigin("d", None, "g: a = m").text() == "d (entry point g: a = m)"
    origin = PluginOrigin("d", "2", "g: a = m")
    assert Entry("a", len, source="attacks.x").built_in
    assert not Entry("a", len, source="attacks.x", plugin=origin).built_in
    assert not Entry("a", len, source="mypkg.attacks").built_in
    assert Entry("a", len, source="m", plugin=origin).to_dict() == {
        "name": "a", "summary": "", "metadata": {}, "source": "m",
        "plugin": {"distribution": "d", "version": "2", "entry_point": "g: a = m"}}


def test_add_checks_names_sources_and_the_validator() -> None:
    seen: list[str] = []
    things: Registry[object] = Registry("widget", check=lambda name, obj: seen.append(name))
    with pytest.raises(RegistryError) as caught:
        things.add("", len)
    assert str(caught.value) == "widget: a widget needs a non-empty name, got ''"
    entry = things.add("l", len, summary="size", source="my.module")
    assert (entry.summary, entry.source, seen) == ("size", "my.module", ["l"])
    assert things.register("m", max).__name__ == "max" and things.info("m").source == "builtins"

    class Local:
        pass

    assert things.add("local", Local).source == __name__ == "test_areg_mutants"
    with pytest.raises(RegistryError) as caught:
        things.add("l", min, source="other.module")
    assert str(caught.value) == ("widget: widget 'l' is registered twice (my.module and other.module); "
                                 "rename one of them")
    assert things.get("l") is len


def test_a_redefinition_replaces_only_the_same_code_outside_the_built_ins() -> None:
    def make():
        def same() -> None:
            """v"""
        return same

    def other() -> None:
        """w"""

    things: Registry[object] = Registry("widget")
    first, second = make(), make()
    things.add("s", first, source="notebook")
    things.add("s", second, source="notebook")  # same module, same qualified name: replaces
    assert things.get("s") is second
    with pytest.raises(RegistryError, match="registered twice"):
        things.add("s", other, source="notebook")  # another qualified name
    things.add("b", first, source="attacks.mine")
    with pytest.raises(RegistryError, match="registered twice"):
        things.add("b", second, source="attacks.mine")  # a built-in is never replaced


def test_lookups_name_the_field_and_unhashable_names_are_absent() -> None:
    things: Registry[object] = Registry("widget", field="cfg.widget", plural="widgetry")
    things.add("b", len)
    things.add("a", max)
    assert things.names() == ["a", "b"]
    assert [e.name for e in things.entries()] == ["b", "a"]
    assert ["x"] not in things and "a" in things
    with pytest.raises(RegistryError) as caught:
        things.info({"x": 1}, field="run.widget")  # type: ignore[arg-type]
    assert str(caught.value) == "run.widget: unknown widget {'x': 1}; known widgetry: a, b"
    with things.temporarily("t", min):
        assert things.names() == ["a", "b", "t"]
    assert things.names() == ["a", "b"]
    assert things.unregister("a").obj is max and things.names() == ["b"]
    with pytest.raises(RegistryError, match="cfg.widget: unknown widget 'a'; known widgetry: b"):
        things.unregister("a")


PLUGIN_FILES = {
    "areg_reg.py": "from attacks.registry import Registry\n"
                   "THINGS = Registry('widget', field='widgets', entry_point_group='areg_test.widgets')\n",
    "areg_plug.py": textwrap.dedent('''\
        import areg_reg

        class Widget:
            """a widget from an entry point"""

        @areg_reg.THINGS.register("decorated")
        class Decorated:
            """registered by its decorator"""

        class Other:
            """would take a taken name"""
        '''),
    "areg_mod.py": "import areg_reg\n\n@areg_reg.THINGS.register('from-mod')\ndef f():\n    pass\n",
    "areg_half.py": "import areg_reg\nareg_reg.THINGS.register('half-a', max)\nraise ValueError('half way\\nmore')\n",
    "areg_pkg/__init__.py": "from areg_pkg import sub\n",
    "areg_pkg/_private.py": "raise ImportError('a private module is never imported')\n",
    "areg_pkg/sub.py": "import areg_reg\n\n@areg_reg.THINGS.register('from-sub')\ndef g():\n    pass\n",
}
ENTRY_POINTS = """\
[areg_test.widgets]
good = areg_plug:Widget
dec = areg_plug:Decorated
clash = areg_plug:Other
mod = areg_mod
pkg = areg_pkg
half = areg_half
broken = areg_plug:Missing
"""
GROUP = "areg_test.widgets"


@pytest.fixture
def widget_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh registry and a distribution ``areg-plug 1.5`` declaring entry points of its group."""
    for name, text in PLUGIN_FILES.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    info = tmp_path / "areg_plug-1.5.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: areg-plug\nVersion: 1.5\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import areg_reg

    yield areg_reg.THINGS, info
    for name in ("areg_reg", "areg_plug", "areg_mod", "areg_half", "areg_pkg", "areg_pkg.sub"):
        sys.modules.pop(name, None)


def test_entry_points_register_tag_and_skip(widget_plugins, caplog) -> None:
    things, info = widget_plugins
    things.add("clash", len, source="someone.else")
    import areg_mod  # noqa: F401 - imported before the discovery (by a script): still the plug-in's
    import areg_pkg  # noqa: F401

    with caplog.at_level(logging.WARNING, logger="attacks.registry"):
        names = things.names()
    assert names == ["clash", "decorated", "from-mod", "from-sub", "good"]
    origin = {"distribution": "areg-plug", "version": "1.5"}
    for name, point in (("good", "good = areg_plug:Widget"), ("decorated", "dec = areg_plug:Decorated"),
                        ("from-mod", "mod = areg_mod"), ("from-sub", "pkg = areg_pkg")):
        assert things.info(name).plugin.to_dict() == {**origin, "entry_point": f"{GROUP}: {point}"}, name
    assert things.info("good").source == "areg_plug" and things.info("good").summary == "a widget from an entry point"
    assert things.info("clash").plugin is None and things.info("clash").source == "someone.else"
    assert sorted(things.failures()) == ["broken", "clash", "half"]
    with pytest.raises(RegistryError) as caught:
        things.get("half", field="widgets[2]")
    assert str(caught.value) == (
        f"widgets[2]: widget 'half' is the plug-in of areg-plug 1.5 (entry point {GROUP}: half = areg_half), which "
        "could not be loaded (ValueError: half way); fix or uninstall areg-plug")
    assert "is taken by someone.else; rename the entry point" in things.failures()["clash"]
    with pytest.raises(RegistryError) as caught:
        things.get("nope")
    assert str(caught.value) == ("widgets: unknown widget 'nope'; known widgets: clash, decorated, from-mod, "
                                 "from-sub, good (plug-ins skipped, see the warnings: broken, clash, half)")
    assert "widget plug-in 'broken' of areg-plug 1.5" in caplog.text
    # the broken entry points uninstalled: a refresh forgets why they were skipped
    (info / "entry_points.txt").write_text("[areg_test.widgets]\ngood = areg_plug:Widget\n")
    things.discover(refresh=True)
    assert things.failures() == {}


def test_plugin_packages_are_imported_without_their_private_modules(widget_plugins) -> None:
    assert Registry("other", plugins=("areg_pkg",)).names() == []
    assert "areg_pkg.sub" in sys.modules and "areg_pkg._private" not in sys.modules


def test_preserved_restores_skipped_plugins(widget_plugins) -> None:
    things, _ = widget_plugins
    things.discover()
    before = things.failures()
    with things.preserved():
        things._failed.clear()
        things.add("x", len)
    assert things.failures() == before and "x" not in things


# --- queries -------------------------------------------------------------------------------------------------------
class RowSum(nn.Module):
    """``[B, 3]`` inputs to one row ``[1, 3]`` (a model whose output rows differ from its input rows)."""

    def forward(self, x: torch.Tensor | None = None) -> torch.Tensor:
        return x.sum(dim=0, keepdim=True) if x.ndim else x.reshape(1, 1)


def test_forwards_count_input_rows_then_output_rows_for_keyword_calls_and_scalars() -> None:
    model = RowSum()
    with count_queries(model) as count:
        model(torch.ones(4, 3))  # 4 input rows, 1 output row: 4
        model(x=torch.ones(6, 3))  # no positional argument: the output's 1 row
        model(torch.tensor(2.0))  # a 0-d input is one row
    assert (count.forwards, count.backwards, count.total) == (6, 0, 6)


def test_backwards_count_gradient_rows_and_total_adds_them() -> None:
    model = nn.Linear(3, 2)
    x = torch.ones(7, 3, requires_grad=True)
    with count_queries(model) as count:
        out = model(x)
        torch.autograd.grad(out[:, 0].sum(), x, retain_graph=True)
        torch.autograd.grad(out[:, 1].sum(), x)
    assert (count.forwards, count.backwards, count.total) == (7, 14, 21)


# --- the global random generators ----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [3, 2**31 + 5])
def test_rng_scope_seeds_every_generator_with_the_seed(seed: int) -> None:
    expected = (torch.rand(2, generator=torch.Generator().manual_seed(seed)).tolist(),
                np.random.RandomState(seed % 2**32).random_sample(), random.Random(seed).random())
    with rng_scope(seed):
        drawn = (torch.rand(2).tolist(), np.random.random_sample(), random.random())
    assert drawn == expected


# --- verdicts ------------------------------------------------------------------------------------------------------
class Noisy(nn.Module):
    """Logits: the input plus noise from torch's global generator."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.randn_like(x)


def test_draws_must_be_a_true_integer() -> None:
    with pytest.raises(AttackConfigError, match="draws: must be an integer >= 1, got True"):
        classify(nn.Identity(), torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), draws=True)


def test_no_input_is_an_empty_int64_verdict_without_a_model_call() -> None:
    model = Scripted([])  # any call would fail (modulo zero)
    seeds: list = []
    for verdict in (classify(model, torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), draws=3),
                    classify_batches(model, torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), draws=3,
                                     rng_seed_for=seeds.append)):
        assert verdict.pred.dtype == torch.long and verdict.pred.shape == (0,)
        assert verdict.margin.dtype == verdict.error_rate.dtype == torch.float64
    assert seeds == [] and model.calls == 0


def test_in_batch_verdicts_place_every_row_and_draw_from_the_seed() -> None:
    batch_x = torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0], [5.0, 0.0, 0.0]])
    batch_y = torch.tensor([0, 1, 2, 0])
    rows, inputs = torch.tensor([1, 3]), torch.tensor([[9.0, 0.0, 0.0], [0.0, 0.0, 9.0]])
    verdict = classify_in_batch(nn.Identity(), batch_x, batch_y, rows, inputs, draws=1, seed=None)
    assert verdict.pred.tolist() == [0, 2] and verdict.error_rate.tolist() == [1.0, 1.0]
    assert verdict.margin.tolist() == [9.0, 9.0]
    # a randomized model: the whole batch classified with the noise of torch.manual_seed(11)
    full = batch_x.clone() * 0.2
    full[rows] = inputs * 0.2
    noise = torch.randn(full.shape, generator=torch.Generator().manual_seed(11))
    expected = (full + noise).argmax(dim=1)[rows]
    torch.manual_seed(0)
    state = torch.get_rng_state()
    noisy = classify_in_batch(Noisy(), batch_x * 0.2, batch_y, rows, inputs * 0.2, draws=1, seed=11)
    assert noisy.pred.tolist() == expected.tolist() and torch.equal(torch.get_rng_state(), state)


def test_no_seed_leaves_the_global_generator_running() -> None:
    torch.manual_seed(4)
    expected = torch.randn(2, 3).argmax(dim=1)
    torch.manual_seed(4)
    x = torch.zeros(2, 3)
    verdict = classify_in_batch(Noisy(), x, torch.zeros(2, dtype=torch.long), torch.arange(2), x, 1, None)
    assert verdict.pred.tolist() == expected.tolist()


def test_batches_are_seeded_from_their_own_ids() -> None:
    seen: list[list[int]] = []

    def seed_for(ids: torch.Tensor) -> int:
        seen.append(ids.tolist())
        return 100 + int(ids[0])

    x = torch.zeros(5, 3)
    verdict = classify_batches(Noisy(), x, torch.zeros(5, dtype=torch.long), batch_size=2,
                               ids=torch.tensor([10, 11, 12, 13, 14]), rng_seed_for=seed_for)
    assert seen == [[10, 11], [12, 13], [14]]
    expected = [torch.randn(n, 3, generator=torch.Generator().manual_seed(s)).argmax(dim=1)
                for n, s in ((2, 110), (2, 112), (1, 114))]
    assert verdict.pred.tolist() == torch.cat(expected).tolist()
