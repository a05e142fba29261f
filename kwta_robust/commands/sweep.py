"""``kwta-robust sweep CONFIG --out-dir DIR``: train and evaluate a grid of kWTA ratio × weight sparsity × pruning
method, then write the robustness matrices and heatmaps.

Example::

    kwta-robust sweep eval_configs/sweep_mnist5k_3x3.yaml --out-dir runs/sweep3x3
    kwta-robust sweep eval_configs/sweep_mnist5k_3x3.yaml --executor ray --ray-address auto --gpus-per-cell 1

The whole config (every cell's training config, the evaluation suite) is validated before anything trains.
Resumable: re-running the same command skips finished cells and resumes a partially evaluated one; failed cells
are listed at the end and in ``DIR/sweep.json`` and retried on the next run (exit status 1 while any failed).
Outputs in ``DIR``: ``matrices.md|csv|tex``, ``plots/heatmap_*.png``, ``plots/robust_vs_eps_*.png`` and
``report.html`` (every cell record, the matrices as heatmaps; :mod:`kwta_robust.html_report`); the Markdown
matrices are printed to stdout (``--format`` for another format).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from types import MappingProxyType

from kwta_robust.errors import ConfigError
from kwta_robust.formats import FORMATS, format_help
from kwta_robust.runtime import THREADS_HELP
from kwta_robust.safe_paths import check_output_dir, child_path, shown_path

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``sweep`` command's options."""
    parser.add_argument("config", metavar="SWEEP_YAML", help="sweep config (e.g. eval_configs/sweep_mnist5k_3x3.yaml)")
    parser.add_argument("--out-dir", default=None, metavar="DIR",
                        help="checkpoints, records, manifest, matrices and plots (default runs/sweeps/<config name>)")
    parser.add_argument("--workers", default=None, metavar="N|auto",
                        help="cells run at once, at most: local: 1 in-line, N or auto (one per core) in a process "
                             "pool; ray: tasks in flight (default: the config's executor.workers)")
    parser.add_argument("--executor", default=None, metavar="NAME",
                        help="where cells run: local (this machine), inline, pool or ray (Ray tasks, pip install -e "
                             "\".[ray]\"), or a plug-in's (kwta-robust plugins executors); default: the config's "
                             "executor.name")
    parser.add_argument("--ray-address", default=None, metavar="auto|HOST:PORT",
                        help="with --executor ray: join a running Ray cluster (auto: the one started on this node "
                             "with 'ray start --head'); default: start a local Ray")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help=f"{THREADS_HELP}; every executor evaluates each cell with N threads and trains it with "
                             "its train.threads")
    parser.add_argument("--cpus-per-cell", type=float, default=None, metavar="C",
                        help="with --executor ray: cores reserved per cell (default: its threads, the larger of "
                             "--threads and train.threads; reserving changes no thread count)")
    parser.add_argument("--gpus-per-cell", type=float, default=None, metavar="G",
                        help="with --executor ray: GPUs reserved per cell (fractions share one; default 1 when the "
                             "cell runs on CUDA, else 0)")
    parser.add_argument("--device", default=None, metavar="D", help="override the device of training and evaluation")
    parser.add_argument("--dry-run", action="store_true", help="validate the config and list the cells, run nothing")
    parser.add_argument("--format", default="md", choices=FORMATS.names(),
                        help=format_help("format of the matrices printed to stdout (default md): "))
    parser.add_argument("--no-plots", action="store_true", help="skip the heatmaps and robust-vs-eps plots")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


#: The command-line flag of each executor option (``executor:`` key of the sweep config; read-only).
OPTION_FLAGS = MappingProxyType({"address": "--ray-address", "cpus_per_cell": "--cpus-per-cell",
                                 "gpus_per_cell": "--gpus-per-cell"})
#: The flag that gives each ``executor:`` key of the sweep config, which an error in that key's value names where
#: the flag gave it (``executor.workers: ...`` → ``--workers: ...``; :func:`~kwta_robust.commands.common.flags_named`;
#: read-only).
EXECUTOR_FLAGS = MappingProxyType({"executor.name": "--executor", "executor.workers": "--workers",
                                   **{f"executor.{key}": flag for key, flag in OPTION_FLAGS.items()}})


#: ``--device`` gives both sections' device: a device error of either (``train.device: ...``,
#: :func:`kwta_robust.sweep.run.check_runnable`) names the flag where the flag gave it (read-only).
SECTION_DEVICE_FLAGS = MappingProxyType({"train.device": "--device", "eval.device": "--device"})


def executor_options(args: argparse.Namespace) -> dict:
    """The executor options given on the command line (``executor:`` keys of the sweep config)."""
    given = {"address": args.ray_address, "cpus_per_cell": args.cpus_per_cell, "gpus_per_cell": args.gpus_per_cell}
    for key, option in OPTION_FLAGS.items():
        if given[key] is not None and args.executor not in (None, "ray"):
            raise ConfigError(f"{option}: only with --executor ray (got --executor {args.executor})")
    return {k: v for k, v in given.items() if v is not None}


def saved_work(args: argparse.Namespace) -> bool:
    """Whether an interrupted sweep left cells a re-run takes up (a checkpoint or record under ``--out-dir``'s
    ``cells/``; the run sets ``args.out_dir`` to the folder it chose); a dry run writes none."""
    from kwta_robust.commands.common import holds_files

    return not args.dry_run and args.out_dir is not None and holds_files(Path(args.out_dir) / "cells", "*/*")


def run(args: argparse.Namespace) -> int:
    """Run (or resume) a sweep and write its matrices, plots and report; returns the exit status. A config error
    names the flag that gave the value at fault (:func:`~kwta_robust.commands.common.flags_named`)."""
    from kwta_robust.commands.common import OVERRIDE_FLAGS, flags_named

    with flags_named(args, flags={**OVERRIDE_FLAGS, **SECTION_DEVICE_FLAGS}):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """The body of :func:`run`: run (or resume) a sweep and write its matrices, plots and report."""
    from kwta_robust.commands.common import flags_named
    from kwta_robust.formats import render_matrices
    from kwta_robust.matrix import build_matrices
    from kwta_robust.commands.console import output_only_stdout, progress_bars
    from kwta_robust.html_report import write_report
    from kwta_robust.html_sweep import load_sweep
    from kwta_robust.sweep.outputs import check_inputs_outside, check_sweep_outputs
    from kwta_robust.sweep.plans import other_recipes
    from kwta_robust.sweep.run import check_runnable
    from kwta_robust.locks import check_free
    from kwta_robust.sweep import (
        finished_record, load_sweep_config, manifest_path, plan_cells, read_manifest, run_sweep, write_outputs,
    )

    options = executor_options(args)
    cfg = load_sweep_config(args.config)
    if options and args.executor is None and cfg.executor.name != "ray":  # name the flags, not the config keys
        flags = ", ".join(OPTION_FLAGS[k] for k in options)
        raise ConfigError(f"{flags}: only with the ray executor (the config's is {cfg.executor.name!r}); add "
                          "--executor ray")
    with flags_named(args, flags=EXECUTOR_FLAGS):  # a value given as a flag: named by the flag, not its key
        cfg = cfg.with_overrides(device=args.device, workers=args.workers, executor=args.executor, options=options)
    out_dir = Path(args.out_dir) if args.out_dir else child_path(Path("runs") / "sweeps", cfg.name, "name")
    args.out_dir = str(out_dir)  # where an interruption looks for finished cells (saved_work)
    check_output_dir(out_dir, "--out-dir")  # also on a dry run, which writes nothing: a file, NUL, unwritable
    check_inputs_outside([args.config, *(p for p in cfg.sources.values() if p)], out_dir)
    check_sweep_outputs(out_dir, plots=not args.no_plots)  # also on a dry run: a folder where a file goes, ...
    if args.dry_run:
        check_runnable(cfg)  # what the run would refuse before training: devices, the evaluation's data
        check_free({"--out-dir": manifest_path(out_dir)})  # another sweep writing the folder, as the run refuses it
        plans = plan_cells(cfg, out_dir)
        for plan in plans:
            state = "finished" if finished_record(plan) is not None else \
                ("checkpoint ready" if plan.checkpoint.is_file() else "to run")
            print(f"{plan.label:28s} {plan.directory}  [{state}]")
        for note in other_recipes(plans, out_dir):  # a sweep file changed since: said before a matrix mixes them
            print(f"{shown_path(out_dir)}: {note}")
        previous = read_manifest(manifest_path(out_dir)).get("status")
        print(f"{len(plans)} cells; config valid" + (f"; last run in {out_dir}: {previous}" if previous else ""))
        return 0
    with output_only_stdout():  # an architecture plug-in printing leaves the matrices (--format json) as they are
        result = run_sweep(cfg, out_dir, progress=progress_bars(args.no_progress))
    failed = result.failed
    records = result.records()
    notes = [f"failed cell (no record, retried on the next run): {p.label}: {result.outcomes[p.cell_id].error}"
             for p in failed]
    if records:
        # every error placing the records names this command (they had said table --matrix or report --sweep)
        matrices = build_matrices(records, title=cfg.name, notes=notes, command="sweep")  # written, then printed
        written = write_outputs(records, out_dir, title=cfg.name, plots=not args.no_plots, notes=notes,
                                command="sweep", matrices=matrices)
        write_report(out_dir / "report.html", [], sweep=load_sweep(out_dir, ran_by="sweep"))
        sys.stdout.write(render_matrices(matrices, args.format, command="sweep"))
        logger.info("matrices: %s; %d plots in %s", ", ".join(str(p) for p in written["tables"]),
                    len(written["plots"]), out_dir / "plots")
    if failed:
        manifest = out_dir / "sweep.json"
        print(f"{len(failed)} of {len(result.plans)} cells failed (retried on the next run; see {manifest}):",
              file=sys.stderr)
        for plan in failed:
            print(f"  {plan.label} ({plan.directory}): {result.outcomes[plan.cell_id].error}", file=sys.stderr)
        return 1
    return 0
