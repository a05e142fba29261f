"""Pins of the ``--save-adversarial`` store (kwta_robust/adversarial_store.py) that kill the survivors of a mutation
round on it: the unit key's eps text, a file that holds no dictionary, units numbered and joined in the order they
were written (also past ten of them), leftover temp files and other programs' files in the parts folder, a resumed
store closed without new units (its units stay), a store that writes on after ``close``, and the clean tensors
(``indices``, ``y``, ``pred_clean``) as this run has them. Tiny tensors: milliseconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kwta_robust.adversarial_store import AdversarialStore, parts_folder, unit_key
from kwta_robust.errors import ConfigError
from test_adversarial_store import _clean, _outcome


def test_the_unit_key_writes_eps_as_the_config_does() -> None:
    assert unit_key("pgd", "linf", 8 / 255) == "pgd|linf|8/255"
    assert unit_key("apgd-ce", "l2", 0.0301234567) == "apgd-ce|l2|0.0301235"


def test_a_file_that_holds_no_dictionary_is_other_samples(tmp_path: Path) -> None:
    x, y, idx, pred = _clean()
    path = tmp_path / "adv.pt"
    torch.save(x, path)  # the user's own tensor, not a store
    with pytest.raises(ConfigError, match=r"^--save-adversarial: .*adv.pt holds other samples; use a new path or "):
        AdversarialStore(path, x, y, idx, pred, resume=True)


def test_units_are_numbered_and_joined_in_the_order_they_were_written(tmp_path: Path) -> None:
    x, y, idx, pred = _clean()
    path = tmp_path / "adv.pt"
    keys = [unit_key("pgd", "linf", eps / 100) for eps in range(1, 13)]
    first = AdversarialStore(path, x, y, idx, pred, resume=False)
    for i, key in enumerate(keys):
        first.put(key, _outcome(x, 0.01 * i), torch.ones(6))
    first.put(keys[3], _outcome(x, 0.5), torch.zeros(6))  # run again: the later file wins
    # ... killed before close; the resumed run numbers on after the last file and writes key 3 once more
    resumed = AdversarialStore(path, x, y, idx, pred, resume=True)
    assert all(resumed.has(k) for k in keys)
    resumed.put(keys[10], _outcome(x, 0.7), torch.zeros(6))
    names = sorted(p.name for p in parts_folder(path).glob("unit-*.pt"))
    assert names == [f"unit-{i:06d}.pt" for i in range(14)]
    resumed.close()
    saved = torch.load(path, weights_only=True)
    assert torch.equal(saved[f"adv/{keys[3]}"], _outcome(x, 0.5).x_adv)
    assert torch.equal(saved[f"adv/{keys[10]}"], _outcome(x, 0.7).x_adv)
    assert torch.equal(saved[f"adv/{keys[11]}"], _outcome(x, 0.11).x_adv)
    assert saved[f"flags/{keys[3]}"].tolist() == [0.0] * 6 and saved[f"flags/{keys[0]}"].tolist() == [1.0] * 6


def test_a_fresh_run_removes_killed_writes_and_leaves_other_files(tmp_path: Path) -> None:
    x, y, idx, pred = _clean()
    path = tmp_path / "adv.pt"
    folder = parts_folder(path)
    folder.mkdir()
    (folder / ".unit-000003.pt.k2j4.tmp").write_bytes(b"half a unit")  # a write that was killed
    (folder / "notes.txt").write_text("mine")
    store = AdversarialStore(path, x, y, idx, pred, resume=False)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    store.put(unit_key("pgd", "linf", 0.1), _outcome(x, 0.1), torch.ones(6))
    store.close()
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"] and (folder / "notes.txt").read_text() == "mine"
    assert f"adv/{unit_key('pgd', 'linf', 0.1)}" in torch.load(path, weights_only=True)


def test_a_resumed_store_closed_without_new_units_keeps_its_units(tmp_path: Path) -> None:
    x, y, idx, pred = _clean()
    path = tmp_path / "adv.pt"
    key = unit_key("pgd", "linf", 0.1)
    done = AdversarialStore(path, x, y, idx, pred, resume=False)
    done.put(key, _outcome(x, 0.1), torch.ones(6))
    done.close()
    AdversarialStore(path, x, y, idx, pred, resume=True).close()  # every unit was done: nothing to add
    saved = torch.load(path, weights_only=True)
    assert torch.equal(saved[f"adv/{key}"], _outcome(x, 0.1).x_adv) and torch.equal(saved["x"], x)


def test_a_store_writes_on_after_close(tmp_path: Path) -> None:
    x, y, idx, pred = _clean()
    path = tmp_path / "adv.pt"
    first, second = unit_key("pgd", "linf", 0.1), unit_key("pgd", "linf", 0.2)
    store = AdversarialStore(path, x, y, idx, pred, resume=False)
    store.put(first, _outcome(x, 0.1), torch.ones(6))
    store.close()
    store.put(second, _outcome(x, 0.2), torch.ones(6))
    store.close()
    saved = torch.load(path, weights_only=True)
    assert {f"adv/{first}", f"adv/{second}"} <= set(saved) and not parts_folder(path).exists()


def test_the_clean_tensors_are_this_runs(tmp_path: Path) -> None:
    x, y, idx, pred = _clean()
    path = tmp_path / "adv.pt"
    old = AdversarialStore(path, x, y, idx, pred, resume=False)
    old.put(unit_key("pgd", "linf", 0.1), _outcome(x, 0.1), torch.ones(6))
    old.close()
    ids, labels, preds = torch.tensor([7, 3, 9, 1, 4, 8]), torch.tensor([2, 2, 1, 0, 1, 0]), torch.arange(6) % 2
    store = AdversarialStore(path, x, labels, ids, preds, resume=True)
    store.put(unit_key("pgd", "linf", 0.2), _outcome(x, 0.2), torch.ones(6))
    store.close()
    saved = torch.load(path, weights_only=True)
    assert saved["indices"].tolist() == [7, 3, 9, 1, 4, 8] and saved["y"].tolist() == [2, 2, 1, 0, 1, 0]
    assert saved["pred_clean"].tolist() == [0, 1, 0, 1, 0, 1]
