"""``--save-adversarial``: clean and adversarial inputs with labels and predictions, as a tensors-only ``.pt``
(``torch.load(..., weights_only=True)``) written atomically after each finished (attack, norm, eps) unit.

Keys: ``x``, ``y``, ``indices``, ``pred_clean``, per unit ``adv/<key>``, ``pred/<key>``, ``flags/<key>``
(:func:`unit_key`), and :data:`STORE_MARKER` (its format version), by which
:func:`kwta_robust.safe_paths.file_kind` tells a store from the user's own weights without unpickling it."""

from __future__ import annotations

from pathlib import Path

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
    """Clean and adversarial inputs with labels and predictions, saved as a tensors-only ``.pt`` after each unit."""

    def __init__(self, path: str | Path, x: Tensor, y: Tensor, indices: Tensor, pred_clean: Tensor, resume: bool):
        self.path = Path(path)
        self.tensors: dict[str, Tensor] = {}
        if resume and self.path.is_file():
            try:
                old = torch.load(self.path, map_location="cpu", weights_only=True)
            except Exception as exc:  # a corrupt file: say which, do not guess
                raise RecordError(f"--save-adversarial: cannot read {self.path} ({type(exc).__name__}); "
                                  "use a new path") from None
            if not isinstance(old, dict) or "x" not in old or not torch.equal(old["x"], x.detach().cpu()):
                raise ConfigError(f"--save-adversarial: {self.path} holds other samples; use a new path or --no-resume")
            self.tensors.update(old)
        self.tensors.update({STORE_MARKER: torch.tensor(STORE_VERSION), "x": x.detach().cpu(), "y": y.detach().cpu(),
                             "indices": indices.detach().cpu(), "pred_clean": pred_clean.detach().cpu()})

    def has(self, key: str) -> bool:
        return f"adv/{key}" in self.tensors

    def put(self, key: str, outcome: AttackOutcome, flags: Tensor) -> None:
        self.tensors[f"adv/{key}"] = outcome.x_adv.detach().cpu()
        self.tensors[f"pred/{key}"] = outcome.pred.detach().cpu()
        self.tensors[f"flags/{key}"] = flags.detach().cpu()
        self.save()

    def save(self) -> None:
        atomic_write(self.path, lambda f: torch.save(self.tensors, f))
