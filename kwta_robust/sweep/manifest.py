"""The sweep's manifest, ``<out_dir>/sweep.json``: every cell with its status, attempts and last error line, the
config, the executor and the run's status (``running``, ``complete``, ``failed``, ``interrupted``), rewritten
atomically after every cell. Only the driver writes it; a manifest saying ``running`` whose sweep holds no lock
any more (the driver was killed) reads ``interrupted``.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any, Mapping, Sequence

from kwta_robust.errors import is_whole_number
from kwta_robust.locks import holder_of
from kwta_robust.results import atomic_write_text
from kwta_robust.sweep.config import SweepConfig
from kwta_robust.sweep.executors import Executor
from kwta_robust.sweep.identity import HASH_CHARS, eval_identity
from kwta_robust.sweep.plans import CellOutcome, CellPlan

logger = logging.getLogger(__name__)

MANIFEST_FORMAT = "kwta-robust-sweep"
MANIFEST_VERSION = 1


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def manifest_path(out_dir: str | Path) -> Path:
    """The sweep manifest's path in ``out_dir`` (``sweep.json``)."""
    return Path(out_dir) / "sweep.json"


def read_manifest(path: str | Path) -> dict:
    """The manifest at ``path`` (``{}`` if missing or unreadable). A manifest saying ``running`` whose sweep holds
    no lock any more (the driver was killed) is returned as ``interrupted``."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        logger.warning("sweep manifest %s is unreadable; starting a new one (records and checkpoints are kept)", path)
        return {}
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        return {}
    problem = manifest_problem(data)
    if problem is not None:
        logger.warning("sweep manifest %s is damaged (%s); starting a new one (records and checkpoints are kept)",
                       path, problem)
        return {}
    if data.get("status") == "running" and holder_of(path) is None:
        data["status"] = "interrupted"
    return data


def manifest_problem(data: dict) -> str | None:
    """What is wrong with the fields a later run reads from a manifest (``cells``: a list of objects, each one's
    ``attempts`` a count; ``runs``: a count), or ``None``."""
    cells, runs = data.get("cells", []), data.get("runs", 0)
    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        return f"cells: expected a list of objects, got {type(cells).__name__}"
    if not is_whole_number(runs, 0):
        return f"runs: expected a count, got {runs!r}"
    for i, cell in enumerate(cells):
        if not is_whole_number(cell.get("attempts", 0), 0):
            return f"cells[{i}].attempts: expected a count, got {cell.get('attempts')!r}"
    return None


def _earlier_work(prev: Mapping[str, Any], run: int) -> dict | None:
    """What an earlier run did for a cell (trained, evaluated, seconds, which run), kept while later runs only reuse
    its checkpoint and record; ``None`` for a cell no run finished."""
    if prev.get("status") == "done" and (prev.get("trained") or prev.get("evaluated")):
        return {"run": run, "trained": bool(prev.get("trained")), "evaluated": bool(prev.get("evaluated")),
                "wall_time_s": prev.get("wall_time_s")}
    earlier = prev.get("done_earlier")
    return dict(earlier) if isinstance(earlier, dict) and prev.get("status") == "done" else None


class Manifest:
    """The ``sweep.json`` of one run: every cell's status, attempts and last error, written atomically."""

    def __init__(self, cfg: SweepConfig, plans: Sequence[CellPlan], out_dir: Path, executor: Executor) -> None:
        self.path = manifest_path(out_dir)
        old = read_manifest(self.path)
        if old.get("status") == "running":  # this run holds the folder's lock: that run did not end cleanly
            old["status"] = "interrupted"
        old_cells = {c.get("cell_id"): c for c in old.get("cells", []) if isinstance(c, dict)}
        self.data: dict[str, Any] = {
            "format": MANIFEST_FORMAT, "format_version": MANIFEST_VERSION, "name": cfg.name,
            "description": cfg.description, "config": cfg.to_dict(), "sources": cfg.sources,
            "eval_id": eval_identity(cfg.eval)[:HASH_CHARS],
            "executor": executor.describe(),
            "status": "running", "previous_status": old.get("status"), "runs": int(old.get("runs", 0)) + 1,
            "started_at": _now(), "finished_at": None, "driver": {"pid": os.getpid(), "host": socket.gethostname()},
            "cells": [], "failed": [],
        }
        for plan in plans:
            prev = old_cells.get(plan.cell_id, {})
            self.data["cells"].append({
                **plan.cell.to_dict(), "label": plan.label, "cell_id": plan.cell_id,
                "directory": os.path.relpath(plan.directory, out_dir),
                "checkpoint": os.path.relpath(plan.checkpoint, out_dir),
                "record": os.path.relpath(plan.record_path, out_dir), "status": "pending",
                "attempts": int(prev.get("attempts", 0)), "error": None,
                "previous_error": prev.get("error") if prev.get("status") == "failed" else None,
                "trained": None, "evaluated": None, "test_accuracy": prev.get("test_accuracy"),
                "measured_sparsity": prev.get("measured_sparsity"), "wall_time_s": None,
                "done_earlier": _earlier_work(prev, int(old.get("runs", 0))),
            })
        self.index = {c["cell_id"]: c for c in self.data["cells"]}

    def update(self, outcome: CellOutcome, attempted: bool) -> None:
        entry = self.index[outcome.cell_id]
        entry.update(status=outcome.status, error=outcome.error, trained=outcome.trained, evaluated=outcome.evaluated,
                     wall_time_s=round(outcome.wall_time_s, 3))
        if outcome.test_accuracy is not None:
            entry["test_accuracy"] = outcome.test_accuracy
        if outcome.measured_sparsity is not None:
            entry["measured_sparsity"] = outcome.measured_sparsity
        if attempted:
            entry["attempts"] += 1
        self.data["failed"] = [c["cell_id"] for c in self.data["cells"] if c["status"] == "failed"]
        self.save()

    def finish(self, status: str) -> None:
        self.data["status"] = status
        self.data["finished_at"] = _now()
        self.save()

    def save(self) -> None:
        self.data["updated_at"] = _now()
        atomic_write_text(self.path, json.dumps(self.data, indent=1, allow_nan=False) + "\n")
