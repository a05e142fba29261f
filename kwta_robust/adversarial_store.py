"""``--save-adversarial``: clean and adversarial inputs with labels and predictions, as a tensors-only ``.pt``
(``torch.load(..., weights_only=True)``) written atomically after each finished (attack, norm, eps) unit.

Keys: ``x``, ``y``, ``indices``, ``pred_clean``, per unit ``adv/<key>``, ``pred/<key>``, ``flags/<key>``
(:func:`unit_key`), and :data:`STORE_MARKER` (its format version), by which
:func:`kwta_robust.safe_paths.file_kind` tells a store from the user's own weights without unpickling it."""

from __future__ import annotations

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


def unit_key(label: str, norm: str, eps: float) -> str:
    """The store's key of one (attack label, norm, eps) unit: ``label|norm|eps``."""
    return f"{label}|{norm}|{format_eps(eps)}"


class AdversarialStore:
    """Clean and adversarial inputs with labels and predictions, saved as a tensors-only ``.pt`` after each unit.

    Memory: only the clean tensors (``x`` ``[N, ...]``, ``y``, ``indices``, ``pred_clean``) stay in RAM. Each
    :meth:`put` reads the units already saved memory-mapped (``torch.load(..., mmap=True)``: pages come from the
    file as ``torch.save`` copies them, not a resident copy) and writes them with the new unit, so a run of ``U``
    units holds about two ``x``-sized tensors at a time, not ``U + 1`` (ImageNet-sized inputs: 600 MB per unit at
    1,000 samples)."""

    def __init__(self, path: str | Path, x: Tensor, y: Tensor, indices: Tensor, pred_clean: Tensor, resume: bool):
        self.path = Path(path)
        self.clean: dict[str, Tensor] = {STORE_MARKER: torch.tensor(STORE_VERSION), "x": x.detach().cpu(),
                                         "y": y.detach().cpu(), "indices": indices.detach().cpu(),
                                         "pred_clean": pred_clean.detach().cpu()}
        self.keys: set[str] = set()
        self.extends_file = False  # True once the file holds this run's samples (resumed, or written by put)
        if resume and self.path.is_file():
            old = self._saved()
            if "x" not in old or not torch.equal(old["x"], self.clean["x"]):
                raise ConfigError(f"--save-adversarial: {self.path} holds other samples; use a new path or --no-resume")
            self.keys = {name.removeprefix("adv/") for name in old if name.startswith("adv/")}
            self.extends_file = True

    def _saved(self) -> dict[str, Tensor]:
        try:
            old = torch.load(self.path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # a corrupt file: say which, do not guess
            raise RecordError(f"--save-adversarial: cannot read {self.path} ({type(exc).__name__}); "
                              "use a new path") from None
        if not isinstance(old, dict):
            raise ConfigError(f"--save-adversarial: {self.path} holds other samples; use a new path or --no-resume")
        return old

    def has(self, key: str) -> bool:
        return key in self.keys

    def put(self, key: str, outcome: AttackOutcome, flags: Tensor) -> None:
        unit = {f"adv/{key}": outcome.x_adv.detach().cpu(), f"pred/{key}": outcome.pred.detach().cpu(),
                f"flags/{key}": flags.detach().cpu()}

        def write(fh: BinaryIO) -> None:  # the mapped file is released when this returns, before os.replace
            tensors = self._saved() if self.extends_file else {}
            torch.save({**tensors, **self.clean, **unit}, fh)

        atomic_write(self.path, write)
        self.keys.add(key)
        self.extends_file = True
