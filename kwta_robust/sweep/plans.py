"""Cell plans: everything a worker needs to run one cell, as plain data.

A :class:`CellPlan` holds the cell's grid coordinates, its identity, its full training config (``out`` = the
checkpoint), the evaluation config and where the record goes — every path absolute — so it can be shipped to
another process or machine as JSON (:meth:`CellPlan.to_dict` / :meth:`CellPlan.from_dict`; the folders must be
reachable there under the same paths). :func:`~kwta_robust.sweep.cells.run_cell` turns a plan into a
:class:`CellOutcome` (also plain data both ways).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from kwta_robust.errors import ConfigError
from kwta_robust.matrix import DENSE
from kwta_robust.sweep.config import SweepConfig
from kwta_robust.sweep.executors import Resources
from kwta_robust.sweep.grid import GridCell
from kwta_robust.sweep.identity import HASH_CHARS, cell_identity, digest, eval_identity, plain

PLAN_KEYS: tuple[str, ...] = ("cell", "cell_id", "directory", "train", "eval", "record_path", "sweep", "progress")


@dataclass(frozen=True)
class CellPlan:
    """Everything a worker needs to run one cell (plain data: picklable, JSON-able for remote backends)."""

    cell: GridCell
    cell_id: str
    directory: str
    train: dict  # the cell's TrainConfig as a dict (``out`` = the checkpoint path)
    eval: dict  # the EvalConfig as a dict
    record_path: str
    sweep: str = "sweep"
    progress: bool = True

    @property
    def checkpoint(self) -> Path:
        return Path(self.train["out"])

    @property
    def label(self) -> str:
        return self.cell.label

    def cell_info(self) -> dict:
        """What the record's ``model.sweep_cell`` holds: the grid coordinates and the cell's identity."""
        return {**self.cell.to_dict(), "cell_id": self.cell_id, "sweep": self.sweep, "directory": self.directory}

    def resources(self) -> Resources:
        """What the cell needs on a worker: ``threads`` CPU cores (1 when torch's default is asked for) and one
        GPU when its training or evaluation runs on CUDA (``auto`` counts where this process sees a GPU)."""
        devices = {str(self.train.get("device", "auto")), str(self.eval.get("device", "auto"))}
        cuda = any(d.startswith("cuda") or (d == "auto" and torch.cuda.is_available()) for d in devices)
        return Resources(cpus=float(self.train.get("threads") or 1), gpus=1.0 if cuda else 0.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able plain data (:meth:`from_dict` rebuilds the plan)."""
        return {"cell": self.cell.to_dict(), "cell_id": self.cell_id, "directory": self.directory,
                "train": plain(self.train), "eval": plain(self.eval), "record_path": self.record_path,
                "sweep": self.sweep, "progress": self.progress}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CellPlan":
        if not isinstance(data, Mapping) or set(data) != set(PLAN_KEYS):
            got = sorted(data) if isinstance(data, Mapping) else type(data).__name__  # sorted(None): a TypeError
            raise ConfigError(f"cell plan: expected the keys {', '.join(PLAN_KEYS)}, got {got!r:.200}")
        cell = data["cell"]
        return cls(GridCell(float(cell["kwta_ratio"]), float(cell["weight_sparsity"]), str(cell["pruning_method"])),
                   str(data["cell_id"]), str(data["directory"]), dict(data["train"]), dict(data["eval"]),
                   str(data["record_path"]), str(data["sweep"]), bool(data["progress"]))


def plan_cells(cfg: SweepConfig, out_dir: str | Path, *, progress: bool = True) -> list[CellPlan]:
    """One :class:`CellPlan` per grid cell under ``out_dir`` (made absolute), its directory named by the hash of
    its cell identity (training identity and resolved architecture arguments:
    :func:`~kwta_robust.sweep.identity.cell_identity`)."""
    out_dir = Path(out_dir).absolute()
    eval_key = eval_identity(cfg.eval)[:HASH_CHARS]
    plans = []
    for cell in cfg.cells():
        cell_id = digest(cell_identity(cfg.train_config(cell)))[:HASH_CHARS]
        directory = out_dir / "cells" / f"{cell.label}-{cell_id}"
        train = cfg.train_config(cell, out=str(directory / "model.pt"))
        plans.append(CellPlan(cell, cell_id, str(directory), plain(train.to_dict()), cfg.eval.to_dict(),
                              str(directory / f"eval-{eval_key}.json"), cfg.name, progress))
    return plans


def longest_first(plans: Sequence[CellPlan]) -> list[CellPlan]:
    """``plans`` in the order the executor gets them: pruned cells (they train, prune and retrain) before dense
    ones, kWTA cells (top-k layers; BPDA has gates to work on) before ReLU ones, grid order otherwise — so the last
    cells to start are the short ones and the workers finish close together."""
    return sorted(plans, key=lambda p: (p.cell.pruning_method != DENSE, p.cell.activation == "kwta"), reverse=True)


@dataclass
class CellOutcome:
    """Result of one cell: ``status`` ``done`` | ``failed``; ``trained`` (False: checkpoint reused),
    ``evaluated`` (False: the complete record was already there); the error line of a failure."""

    cell_id: str
    status: str
    trained: bool = False
    evaluated: bool = False
    error: str | None = None
    wall_time_s: float = 0.0
    test_accuracy: float | None = None
    measured_sparsity: float | None = None
    record_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CellOutcome":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"cell outcome: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(names))}")
        return cls(**dict(data))
