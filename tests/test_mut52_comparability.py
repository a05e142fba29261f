"""Mutation review 52 of kwta_robust.comparability.recipe_notes: which cell a matrix names as trained with another
recipe (the one unlike most cells, whichever position it holds), by which setting, with which values; cells whose
recipes agree but for key order, or that hold no setting but per-cell ones, are read as they are."""

from __future__ import annotations

from types import SimpleNamespace

from kwta_robust.comparability import recipe_notes

HEAD = "trained with another recipe than the other cells"


def cell(label: str, **training: object) -> SimpleNamespace:
    """A record stand-in whose checkpoint recorded our trainer's config (``model.training.training``)."""
    return SimpleNamespace(label=label, model={"training": {"training": dict(training)}})


def test_the_odd_cell_is_named_where_it_comes_first() -> None:
    named = [("c0", cell("odd", epochs=2, seed=1)), ("c1", cell("a", epochs=2, seed=0)),
             ("c2", cell("b", epochs=2, seed=0))]
    (note,) = recipe_notes(named)
    assert note.startswith(HEAD) and note.endswith("): seed 1 in c0 odd (0 in the others)")


def test_true_and_1_are_two_recipes() -> None:
    named = [("c0", cell("a", augment=1)), ("c1", cell("b", augment=1)), ("c2", cell("c", augment=True))]
    (note,) = recipe_notes(named)
    assert note.endswith("augment true in c2 c (1 in the others)")


def test_the_same_settings_in_another_key_order_are_one_recipe() -> None:
    named = [("c0", cell("a", epochs=1, seed=0)), ("c1", cell("b", seed=0, epochs=1))]
    assert recipe_notes(named) == []


def test_a_recipe_of_per_cell_settings_only_is_compared_too() -> None:
    named = [("c0", cell("a", out="/runs/a.pt")), ("c1", cell("b", epochs=1, out="/runs/b.pt"))]
    (note,) = recipe_notes(named)
    assert note.endswith("epochs 1 in c1 b ((none) in the others)")
