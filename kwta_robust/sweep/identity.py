"""What names a sweep's cells and records: hashes of plain data (open_lth's run-directory-by-hash).

A cell is named by the hash of its training identity — the :class:`~kwta_robust.training.TrainConfig` minus the keys
that cannot change the weights (:data:`TRAIN_KEYS_IGNORED`) — and of the architecture's resolved arguments (its
factory's defaults updated by ``arch_kwargs``), so a cell trained once is found again by any sweep that asks for
the same recipe, and a new ``TrainConfig`` key or a changed default makes new cells (nothing stale is reused). A
record is named by the hash of the evaluation config minus its ``description`` and ``device``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from typing import Any, Mapping

from kwta_robust.config import EvalConfig
from kwta_robust.models.registry import COMMON_ARGS, REGISTRY as MODELS
from kwta_robust.training import TrainConfig

#: Training keys that cannot change the trained weights: left out of the cell identity.
TRAIN_KEYS_IGNORED: tuple[str, ...] = ("out", "device", "data_root", "download")
#: Hex characters of a hash used in directory and file names.
HASH_CHARS = 10


def plain(data: Any) -> Any:
    """JSON round trip: tuples become lists, exactly as checkpoint metadata and records store them (anything
    JSON cannot hold, e.g. a class as an architecture default, by its ``str``)."""
    return json.loads(json.dumps(data, sort_keys=True, default=str))


def digest(data: Any) -> str:
    """SHA-256 (hex) of ``data`` as canonical JSON."""
    return hashlib.sha256(json.dumps(plain(data), sort_keys=True).encode()).hexdigest()


def training_identity(cfg: TrainConfig | Mapping[str, Any]) -> dict:
    """The training settings that determine the weights (``cfg`` minus :data:`TRAIN_KEYS_IGNORED`), plain data."""
    data = cfg.to_dict() if isinstance(cfg, TrainConfig) else dict(cfg)
    return {k: v for k, v in plain(data).items() if k not in TRAIN_KEYS_IGNORED}


def architecture_identity(cfg: TrainConfig) -> dict:
    """The arguments the cell's model is built with: the architecture factory's defaults updated by
    ``arch_kwargs`` (so a changed default in the model zoo makes a new cell instead of reusing an old one)."""
    params = inspect.signature(MODELS.get(cfg.arch, field="train.arch")).parameters
    defaults = {k: p.default for k, p in params.items()
                if p.default is not inspect.Parameter.empty and k not in COMMON_ARGS}
    return plain({**defaults, **cfg.arch_kwargs})


def cell_identity(cfg: TrainConfig) -> dict:
    """What names a cell: its training identity and the resolved architecture arguments."""
    return {"training": training_identity(cfg), "architecture": architecture_identity(cfg)}


def eval_identity(cfg: EvalConfig | Mapping[str, Any]) -> str:
    """Hash of an evaluation config minus ``description`` and ``device`` (placement does not name a record)."""
    data = cfg.to_dict() if isinstance(cfg, EvalConfig) else dict(cfg)
    return digest({k: v for k, v in data.items() if k not in ("description", "device")})
