"""Sweeps: train and evaluate a grid of activation sparsity (kWTA ``k/N``) × weight sparsity × pruning method.

One module per job:

* :mod:`.grid` and :mod:`.config` — the grid and the sweep config (:class:`SweepConfig`, validated whole before
  anything trains); :mod:`.identity` — the hashes that name cells and records;
* :mod:`.plans` — :class:`CellPlan`: one cell as plain data with absolute paths (``to_dict``/``from_dict``), so it
  can run in another process or on another machine; :class:`CellOutcome`;
* :mod:`.cells` — :func:`run_cell`, what a worker runs: train or reuse, evaluate or resume;
* :mod:`.executors` — how cells run (``local``: in-line or a process pool; ``ray``: Ray tasks on this machine or
  a cluster), one module per executor behind one interface, registered by name and found as plug-ins (entry
  point group ``kwta_robust.executors``); :mod:`.placement` — the config's executor options and per-cell
  resources;
* :mod:`.manifest` and :mod:`.run` — the driver: the folder lock, ``sweep.json``, :func:`run_sweep`;
* :mod:`.outputs` — the matrices and plots written from the records.

Layout of ``out_dir``::

    sweep.json                          manifest: every cell, its status, attempts and last error line
    cells/<label>-<hash>/model.pt       checkpoint (reused when its recorded training config matches and its training
                                        kept the invariants its model needs: ``training_invariants``)
    cells/<label>-<hash>/eval-<hash>.json   the evaluation record (hash of the eval config minus its description
                                        and device)

Resumable: checkpoints and records are written atomically and the record after every finished attack unit, so
killing a sweep at any moment and re-running the same command redoes no finished cell and resumes a partially
evaluated one. Every cell is seeded from its config; on CPU a cell's numbers are reproducible for a given torch
thread count (``--threads``, default 1: :mod:`kwta_robust.runtime`; every executor evaluates with that count and
trains with ``train.threads``, whatever the cores: :mod:`.placement`).
"""

from kwta_robust.matrix import DENSE, RELU_RATIO
from kwta_robust.sweep.cells import ensure_checkpoint, finished_record, run_cell
from kwta_robust.sweep.config import SweepConfig, check_architecture, load_sweep_config
from kwta_robust.sweep.executors import (
    EXECUTORS,
    Completion,
    Executor,
    Resources,
    available_executors,
    cpu_count,
    create_executor,
    register_executor,
    resolve_workers,
)
from kwta_robust.sweep.grid import Grid, GridCell
from kwta_robust.sweep.identity import cell_identity, eval_identity, training_identity
from kwta_robust.sweep.manifest import MANIFEST_FORMAT, manifest_path, read_manifest
from kwta_robust.sweep.outputs import write_outputs
from kwta_robust.sweep.plans import CellOutcome, CellPlan, plan_cells
from kwta_robust.sweep.run import SweepResult, run_sweep

__all__ = [
    "DENSE", "EXECUTORS", "MANIFEST_FORMAT", "RELU_RATIO", "CellOutcome", "CellPlan", "Completion", "Executor",
    "Grid", "GridCell", "Resources", "SweepConfig", "SweepResult", "available_executors", "cell_identity",
    "check_architecture", "cpu_count", "create_executor", "ensure_checkpoint", "eval_identity", "finished_record",
    "load_sweep_config", "manifest_path", "plan_cells", "read_manifest", "register_executor", "resolve_workers",
    "run_cell", "run_sweep", "training_identity", "write_outputs",
]
