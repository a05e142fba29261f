"""The ``--save-adversarial`` store: units accumulate in one tensors-only file, a resumed run extends it, and the
store keeps only the clean tensors in memory (the saved units are read back memory-mapped when a unit is added)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from kwta_robust.adversarial_store import STORE_MARKER, AdversarialStore, unit_key
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


def test_units_accumulate_and_only_the_clean_tensors_stay_in_memory(tmp_path: Path) -> None:
    x, y, idx, pred = _clean()
    store = AdversarialStore(tmp_path / "adv.pt", x, y, idx, pred, resume=False)
    clean_bytes = _tensor_bytes(store)
    keys = [unit_key(name, "linf", 0.1) for name in ("pgd", "apgd", "square")]
    for i, key in enumerate(keys):
        store.put(key, _outcome(x, 0.1 * (i + 1)), torch.ones(6, dtype=torch.int8))
        assert _tensor_bytes(store) == clean_bytes  # before: every unit's x_adv was kept, U + 1 copies of x
    saved = torch.load(tmp_path / "adv.pt", weights_only=True)
    assert all(store.has(k) for k in keys) and not store.has(unit_key("fgsm", "linf", 0.1))
    for i, key in enumerate(keys):
        assert torch.equal(saved[f"adv/{key}"], _outcome(x, 0.1 * (i + 1)).x_adv)
        assert saved[f"pred/{key}"].tolist() == [i + 1] * 6
    assert torch.equal(saved["x"], x) and saved[STORE_MARKER].item() == 1


def test_a_resumed_run_extends_the_file_and_a_fresh_one_replaces_it(tmp_path: Path) -> None:
    x, y, idx, pred = _clean()
    path = tmp_path / "adv.pt"
    first, second = unit_key("pgd", "linf", 0.1), unit_key("pgd", "linf", 0.2)
    AdversarialStore(path, x, y, idx, pred, resume=False).put(first, _outcome(x, 0.1), torch.ones(6))
    resumed = AdversarialStore(path, x, y, idx, pred, resume=True)
    assert resumed.has(first) and not resumed.has(second)
    resumed.put(second, _outcome(x, 0.2), torch.zeros(6))
    assert {f"adv/{first}", f"adv/{second}"} <= set(torch.load(path, weights_only=True))
    fresh = AdversarialStore(path, x, y, idx, pred, resume=False)
    assert not fresh.has(first)
    fresh.put(second, _outcome(x, 0.2), torch.zeros(6))
    assert f"adv/{first}" not in torch.load(path, weights_only=True)  # --no-resume starts the file over


def test_resuming_onto_other_samples_or_a_corrupt_file_is_one_line(tmp_path: Path) -> None:
    x, y, idx, pred = _clean()
    path = tmp_path / "adv.pt"
    AdversarialStore(path, x, y, idx, pred, resume=False).put("k", _outcome(x, 0.1), torch.ones(6))
    with pytest.raises(ConfigError, match="holds other samples; use a new path or --no-resume"):
        AdversarialStore(path, x * 0.5, y, idx, pred, resume=True)
    path.write_bytes(b"not a torch file")
    with pytest.raises(RecordError, match=r"cannot read .*adv.pt \(.*\); use a new path"):
        AdversarialStore(path, x, y, idx, pred, resume=True)
