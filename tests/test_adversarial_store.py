"""The ``--save-adversarial`` store: each finished unit is written at once to its own file beside the store, and the
completed run joins them into the one tensors-only file. Before, every unit rewrote the whole file (O(units²) bytes
written: 26 GB for 20 units of 10,000 CIFAR-10 images) and the run held every unit's inputs in memory."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from kwta_robust.adversarial_store import STORE_MARKER, AdversarialStore, parts_folder, unit_key
from kwta_robust.errors import ConfigError
from kwta_robust.results import RecordError


def _clean(n: int = 6) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 4, 4, generator=g)
    return x, torch.arange(n) % 3, torch.arange(n), torch.zeros(n, dtype=torch.long)


def _outcome(x: torch.Tensor, shift: float) -> SimpleNamespace:
    return SimpleNamespace(x_adv=(x + shift).clamp(0, 1), pred=torch.full((x.shape[0],), int(shift * 10)))


def _tensor_bytes(store: AdversarialStore) -> int:
    held = [v for value in vars(store).values() for v in (value.values() if isinstance(value, dict) else [value])]
    return sum(t.numel() * t.element_size() for t in held if isinstance(t, torch.Tensor))


def test_each_unit_is_its_own_file_until_the_run_joins_them(tmp_path: Path) -> None:
    x, y, idx, pred = _clean()
    path = tmp_path / "adv.pt"
    store = AdversarialStore(path, x, y, idx, pred, resume=False)
    clean_bytes = _tensor_bytes(store)
    keys = [unit_key(name, "linf", 0.1) for name in ("pgd", "apgd", "square")]
    for i, key in enumerate(keys):
        store.put(key, _outcome(x, 0.1 * (i + 1)), torch.ones(6, dtype=torch.int8))
        assert _tensor_bytes(store) == clean_bytes  # only the clean tensors stay in memory
        assert not path.exists()  # the store itself is written once, by close
        unit = torch.load(sorted(parts_folder(path).glob("unit-*.pt"))[-1], weights_only=True)
        assert set(unit) == {f"adv/{key}", f"pred/{key}", f"flags/{key}"}  # a unit's file holds that unit alone
    assert all(store.has(k) for k in keys) and not store.has(unit_key("fgsm", "linf", 0.1))
    store.close()
    assert not parts_folder(path).exists()
    saved = torch.load(path, weights_only=True)
    for i, key in enumerate(keys):
        assert torch.equal(saved[f"adv/{key}"], _outcome(x, 0.1 * (i + 1)).x_adv)
        assert saved[f"pred/{key}"].tolist() == [i + 1] * 6
    assert torch.equal(saved["x"], x) and saved[STORE_MARKER].item() == 1


def test_an_interrupted_run_keeps_its_units_and_the_resumed_run_joins_them(tmp_path: Path) -> None:
    x, y, idx, pred = _clean()
    path = tmp_path / "adv.pt"
    first, second, third = (unit_key("pgd", "linf", e) for e in (0.1, 0.2, 0.3))
    done = AdversarialStore(path, x, y, idx, pred, resume=False)
    done.put(first, _outcome(x, 0.1), torch.ones(6))
    done.close()  # a completed run
    interrupted = AdversarialStore(path, x, y, idx, pred, resume=True)
    interrupted.put(second, _outcome(x, 0.2), torch.zeros(6))  # ... and killed before close
    resumed = AdversarialStore(path, x, y, idx, pred, resume=True)
    assert resumed.has(first) and resumed.has(second) and not resumed.has(third)
    resumed.put(third, _outcome(x, 0.3), torch.zeros(6))
    resumed.put(second, _outcome(x, 0.5), torch.zeros(6))  # a unit run again replaces the earlier one
    resumed.close()
    saved = torch.load(path, weights_only=True)
    assert {f"adv/{k}" for k in (first, second, third)} <= set(saved)
    assert torch.equal(saved[f"adv/{second}"], _outcome(x, 0.5).x_adv)
    fresh = AdversarialStore(path, x, y, idx, pred, resume=False)
    assert not fresh.has(first)
    fresh.put(third, _outcome(x, 0.3), torch.zeros(6))
    fresh.close()
    assert f"adv/{first}" not in torch.load(path, weights_only=True)  # --no-resume starts the file over


def test_resuming_onto_other_samples_or_a_corrupt_file_is_one_line(tmp_path: Path) -> None:
    x, y, idx, pred = _clean()
    path = tmp_path / "adv.pt"
    store = AdversarialStore(path, x, y, idx, pred, resume=False)
    store.put("k", _outcome(x, 0.1), torch.ones(6))
    with pytest.raises(ConfigError, match=r"adv.pt.parts/clean.pt holds other samples; use a new path or --no"):
        AdversarialStore(path, x * 0.5, y, idx, pred, resume=True)
    store.close()
    with pytest.raises(ConfigError, match="holds other samples; use a new path or --no-resume"):
        AdversarialStore(path, x * 0.5, y, idx, pred, resume=True)
    path.write_bytes(b"not a torch file")
    with pytest.raises(RecordError, match=r"cannot read .*adv.pt \(.*\); use a new path"):
        AdversarialStore(path, x, y, idx, pred, resume=True)


def test_a_run_without_units_writes_the_clean_tensors(tmp_path: Path) -> None:
    x, y, idx, pred = _clean()
    store = AdversarialStore(tmp_path / "adv.pt", x, y, idx, pred, resume=False)
    store.close()
    assert set(torch.load(tmp_path / "adv.pt", weights_only=True)) == {STORE_MARKER, "x", "y", "indices",
                                                                       "pred_clean"}


def test_a_run_stopped_before_its_first_unit_was_written_resumes(tmp_path: Path) -> None:
    """A parts folder without ``clean.pt`` (stopped while writing it: atomic_write removed its temp file) is no
    corrupt store: the resumed run starts the folder afresh."""
    x, y, idx, pred = _clean()
    path = tmp_path / "adv.pt"
    parts_folder(path).mkdir()
    store = AdversarialStore(path, x, y, idx, pred, resume=True)
    assert not store.has(unit_key("pgd", "linf", 0.1))
    store.close()
    assert not parts_folder(path).exists()
    assert torch.equal(torch.load(path, weights_only=True)["x"], x)


def test_a_fresh_run_without_units_replaces_an_earlier_runs_file(tmp_path: Path) -> None:
    """--no-resume and no unit to run: the file is this run's clean tensors, not the earlier run's samples."""
    x, y, idx, pred = _clean()
    path = tmp_path / "adv.pt"
    old = AdversarialStore(path, 1 - x, y, idx, pred, resume=False)
    old.put(unit_key("pgd", "linf", 0.1), _outcome(1 - x, 0.1), torch.ones(6))
    old.close()
    AdversarialStore(path, x, y, idx, pred, resume=False).close()
    saved = torch.load(path, weights_only=True)
    assert torch.equal(saved["x"], x) and not any(k.startswith("adv/") for k in saved)
