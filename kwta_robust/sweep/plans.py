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

from kwta_robust.comparability import other_recipe_notes, training_recipe
from kwta_robust.errors import ConfigError
from kwta_robust.matrix import DENSE
from kwta_robust.results import RecordError, load_record
from kwta_robust.sweep.config import SweepConfig
from kwta_robust.sweep.executors import Resources
from kwta_robust.sweep.grid import GridCell
from kwta_robust.sweep.identity import HASH_CHARS, TRAIN_KEYS_IGNORED, cell_identity, digest, eval_identity, plain
from kwta_robust.visible_text import visible

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


def other_recipes(plans: Sequence[CellPlan], out_dir: str | Path) -> list[str]:
    """Notes on the cell folders of ``out_dir`` (``cells/<label>-<hash>``) that no plan names and whose record was
    trained with another recipe than the plans' (:func:`~kwta_robust.comparability.other_recipe_notes`: a line per
    first differing setting and value, naming the folders): a sweep file changed since they were trained. The run
    trains its own cells beside them; a matrix of both mixes the sparsity with the training. Reads records only;
    the settings that name no cell (:data:`~kwta_robust.sweep.identity.TRAIN_KEYS_IGNORED`: ``--device``) are not
    compared."""
    ours = _cell_recipe(plans[0].train) if plans else None
    folder = Path(out_dir) / "cells"
    try:
        folders = sorted(p for p in folder.iterdir() if p.is_dir()) if ours is not None and folder.is_dir() else []
    except OSError:  # an unreadable folder: the run says what it cannot write; no note to give here
        folders = []
    planned = {Path(p.directory).name for p in plans}
    held = []
    for cell in (p for p in folders if p.name not in planned):
        theirs = _folder_recipe(cell)
        if theirs is not None:
            held.append((f"cells/{visible(cell.name)}", theirs))
    return other_recipe_notes(held, ours, "the sweep file") if ours is not None else []


def _cell_recipe(training: Any) -> dict | None:
    """:func:`~kwta_robust.comparability.training_recipe` less the settings that name no cell (the device)."""
    held = training_recipe(training)
    return None if held is None else {k: v for k, v in held.items() if k not in TRAIN_KEYS_IGNORED}


def _folder_recipe(cell: Path) -> dict | None:
    """The training recipe of the first readable record in a cell folder (``eval-*.json``), ``None`` if none."""
    for path in sorted(cell.glob("eval-*.json")):
        try:
            training = load_record(path).model.get("training")
        except RecordError:  # an unreadable record names no recipe; the next one may
            continue
        held = _cell_recipe(training.get("training") if isinstance(training, dict) else None)
        if held is not None:
            return held
    return None


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
