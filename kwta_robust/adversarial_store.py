"""``--save-adversarial``: clean and adversarial inputs with labels and predictions, as one tensors-only ``.pt``
(``torch.load(..., weights_only=True)``).

Keys: ``x``, ``y``, ``indices``, ``pred_clean``, per unit ``adv/<key>``, ``pred/<key>``, ``flags/<key>``
(:func:`unit_key`), and :data:`STORE_MARKER` (its format version), by which
:func:`kwta_robust.safe_paths.file_kind` tells a store from the user's own weights without unpickling it.

Each finished (attack, norm, eps) unit is written at once, atomically, to its own file in the folder beside the
store (:func:`parts_folder`, ``adv.pt.parts/``, with the clean tensors in ``clean.pt``); when the evaluation
completes, :meth:`AdversarialStore.close` joins them with the store's earlier units into ``adv.pt`` and removes the
folder. So a run writes each unit about twice, not the whole file after every unit (20 units of 5,000 CIFAR-10-sized
inputs: 2.4 GiB instead of 13.2 GiB), and holds only the clean tensors in memory (the files are read memory-mapped).
An interrupted run leaves its units in the folder; re-running the command (resume) keeps them."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import BinaryIO

import torch
from torch import Tensor

from attacks.base import format_eps
from attacks.cascade import AttackOutcome
from kwta_robust.errors import ConfigError
from kwta_robust.results import RecordError, atomic_write
from kwta_robust.safe_paths import STORE_MARKER as MARKER_BYTES


#: The key naming the file an adversarial store (value: the format version, a tensor like every other value).
STORE_MARKER = MARKER_BYTES.decode()
STORE_VERSION = 1
CLEAN_PART = "clean.pt"


def unit_key(label: str, norm: str, eps: float) -> str:
    """The store's key of one (attack label, norm, eps) unit: ``label|norm|eps``."""
    return f"{label}|{norm}|{format_eps(eps)}"


def parts_folder(path: str | Path) -> Path:
    """The folder the units of a run in progress are written to: ``adv.pt.parts`` beside ``adv.pt``."""
    path = Path(path)
    return path.with_name(path.name + ".parts")


def _load(path: Path) -> dict[str, Tensor]:
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # a corrupt file: say which, do not guess
        raise RecordError(f"--save-adversarial: cannot read {path} ({type(exc).__name__}); use a new path") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"--save-adversarial: {path} holds other samples; use a new path or --no-resume")
    return loaded


class AdversarialStore:
    """Clean and adversarial inputs with labels and predictions: each unit saved when it finishes (in
    :func:`parts_folder`), all of them joined into one tensors-only ``.pt`` by :meth:`close`."""

    def __init__(self, path: str | Path, x: Tensor, y: Tensor, indices: Tensor, pred_clean: Tensor, resume: bool):
        self.path = Path(path)
        self.parts = parts_folder(self.path)
        self.clean: dict[str, Tensor] = {STORE_MARKER: torch.tensor(STORE_VERSION), "x": x.detach().cpu(),
                                         "y": y.detach().cpu(), "indices": indices.detach().cpu(),
                                         "pred_clean": pred_clean.detach().cpu()}
        self.keys: set[str] = set()
        self.extends_file = False  # the units already in self.path belong to this run's samples (resumed)
        if not resume:
            self._drop_parts()
        elif self.path.is_file():
            saved = _load(self.path)
            self._check_samples(self.path, saved)
            self.extends_file = True
            self.keys |= self._unit_keys(saved)
        if resume and (self.parts / CLEAN_PART).is_file():  # a run stopped before it was written wrote no unit
            self._check_samples(self.parts / CLEAN_PART, _load(self.parts / CLEAN_PART))
        self._part_files = sorted(self.parts.glob("unit-*.pt")) if self.parts.is_dir() else []
        for part in self._part_files:
            self.keys |= self._unit_keys(_load(part))

    @staticmethod
    def _unit_keys(tensors: dict[str, Tensor]) -> set[str]:
        return {name.removeprefix("adv/") for name in tensors if name.startswith("adv/")}

    def _check_samples(self, where: Path, saved: dict[str, Tensor]) -> None:
        if "x" not in saved or not torch.equal(saved["x"], self.clean["x"]):
            raise ConfigError(f"--save-adversarial: {where} holds other samples; use a new path or --no-resume")

    def _drop_parts(self) -> None:
        """Remove the parts folder's files this store writes (and temp files a killed write left), then the folder
        if that emptied it: nothing else in it is touched."""
        if not self.parts.is_dir():
            return
        for name in (CLEAN_PART, "unit-*.pt", ".*.tmp"):
            for file in self.parts.glob(name):
                file.unlink()
        with contextlib.suppress(OSError):  # not empty: someone else's files stay
            self.parts.rmdir()

    def has(self, key: str) -> bool:
        return key in self.keys

    def put(self, key: str, outcome: AttackOutcome, flags: Tensor) -> None:
        """Write one finished unit to its own file (atomically), the clean tensors first if not yet there."""
        if not self._part_files:
            atomic_write(self.parts / CLEAN_PART, lambda fh: torch.save(self.clean, fh))
        unit = {f"adv/{key}": outcome.x_adv.detach().cpu(), f"pred/{key}": outcome.pred.detach().cpu(),
                f"flags/{key}": flags.detach().cpu()}
        number = int(self._part_files[-1].stem.removeprefix("unit-")) + 1 if self._part_files else 0
        part = self.parts / f"unit-{number:06d}.pt"
        atomic_write(part, lambda fh: torch.save(unit, fh))
        self._part_files.append(part)
        self.keys.add(key)

    def close(self) -> None:
        """Join the store's earlier units (a resumed run's) and this run's into ``self.path``, then remove the parts
        folder; a unit written again replaces the earlier one."""
        if not self._part_files:  # no unit written by this run or a stopped one
            if not self.extends_file:  # the clean tensors alone, over an earlier run's file (--no-resume)
                atomic_write(self.path, lambda fh: torch.save(self.clean, fh))
            self._drop_parts()  # a folder a run stopped before its first unit left
            self.extends_file = True
            return

        def write(fh: BinaryIO) -> None:  # the mapped files are released when this returns, before os.replace
            tensors = _load(self.path) if self.extends_file else {}
            for part in self._part_files:
                tensors.update(_load(part))
            torch.save({**tensors, **self.clean}, fh)

        atomic_write(self.path, write)
        self._drop_parts()
        self._part_files, self.extends_file = [], True
