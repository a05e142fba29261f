"""``kwta-robust compare MODEL_A MODEL_B ... --config ...``: evaluate several models (checkpoints, or your own as
``package.module:function=WEIGHTS``) on the same samples, with transfer attacks between them, and print one
side-by-side table.

One record per model is written to ``--out-dir`` (resumable like ``evaluate``), plus ``compare.md`` (the wide
table) and ``compare.html`` (the report). ``--grid-cell LABEL=kwta_ratio=R,weight_sparsity=S`` declares a model's
cell in ``table --matrix``, as ``evaluate --grid-cell`` does for one model. ``--dry-run`` checks what the run checks
before its first attack and prints the plan, writing nothing (:mod:`kwta_robust.dry_run`). The work is
:mod:`kwta_robust.compare`; this module parses and prints.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING, Any, Sequence

from kwta_robust.commands.common import (add_common_arguments, command_line, config_from_args, holds_files,
                                         parse_factory_kwargs, sharding_from_args)
from kwta_robust.errors import ConfigError
from kwta_robust.safe_paths import resolve_path

if TYPE_CHECKING:
    from kwta_robust.loading import ModelArgument

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``compare`` command's options."""
    parser.add_argument("checkpoints", nargs="+", metavar="MODEL",
                        help="two or more models: checkpoint files, or your own models as "
                             "package.module:function=WEIGHTS "
                             "(a factory and its plain state_dict, as evaluate's --model-factory and --weights)")
    parser.add_argument("--factory-kwargs", metavar="[LABEL=]JSON", default=None, action="append",
                        help="keyword arguments for every package.module:function model; LABEL=JSON gives the model "
                             "of that label (--labels, else its file stem) its own, e.g. 'kwta={\"activation\": "
                             "\"kwta\"}' 'relu={\"activation\": \"relu\"}' (repeat the option, once per label)")
    parser.add_argument("--grid-cell", metavar="LABEL=kwta_ratio=R,weight_sparsity=S", default=None, action="append",
                        help="where the model of that label (--labels, else its file stem) sits in `table --matrix`, "
                             "as evaluate's --grid-cell: e.g. kwta=kwta_ratio=0.1,weight_sparsity=0 "
                             "relu=kwta_ratio=1,weight_sparsity=0 (repeat the option, once per label); set on "
                             "finished records too (the compare re-run with it evaluates nothing again)")
    add_common_arguments(parser, output="--out-dir")
    parser.add_argument("--labels", default=None, metavar="A,B,...", help="names for the models (default: the file "
                                                                          "stems of the checkpoints or weights)")
    parser.add_argument("--out-dir", default="runs/compare", metavar="DIR", help="records, compare.md and compare.html "
                                                                                 "go here (default runs/compare)")
    parser.add_argument("--no-transfer", action="store_true", help="skip transfer attacks between the models")
    parser.add_argument("--dry-run", action="store_true",
                        help="check everything the run checks before its first attack (config, models, data, their "
                             "outputs, layer probes, BPDA layers, every attack built, the records in --out-dir) and "
                             "print the plan per model; nothing is attacked or written")


def warn_repeated_models(given: Sequence["ModelArgument"]) -> None:
    """Warn of a model file given twice (the same checkpoint, or one factory with the same weights, by their resolved
    paths; :func:`kwta_robust.compare.warn_repeated_models`): it runs as two models (labels ``x`` and ``x-2``)."""
    from kwta_robust.compare import warn_repeated_models as warn

    entries = []
    for position, model in enumerate(given, start=1):
        path = model.checkpoint or model.weights  # none: a factory's own parameters, nothing to tell two apart by
        entries.append((f"MODEL {position}", str(path), (model.model_factory, resolve_path(path, "MODEL")) if path
                        else None))
    warn(entries)


def factory_kwargs_per_model(texts: Sequence[str], given: Sequence["ModelArgument"], labels: Sequence[str],
                             ) -> tuple[dict | None, dict[str, dict]]:
    """Each ``--factory-kwargs``: a JSON object for every factory model (at most one such), or ``LABEL=JSON`` for
    the model of that label (one each); returns ``(shared, {label: own})``. One-line errors for a label naming no
    factory model, a label or the shared form given twice, or arguments with no factory model to take them."""
    if texts and not any(m.model_factory for m in given):
        raise ConfigError("--factory-kwargs: only used with models given as package.module:function=WEIGHTS")
    shared: dict | None = None
    own: dict[str, dict] = {}
    factories = [label for m, label in zip(given, labels) if m.model_factory]
    for text in texts:
        # a label may hold '=' (a file stem like k=0.1): the longest label the text starts with, then '='
        named = max((name for name in labels if text.startswith(f"{name}=")), key=len, default=None)
        label, sep, rest = (named, "=", text[len(named) + 1:]) if named else text.partition("=")
        if not sep or text.lstrip().startswith(("{", "[", '"')) or not label.strip():  # the shared form: JSON
            if shared is not None:
                raise ConfigError("--factory-kwargs: a JSON object for every model is given twice; give it once, "
                                  "and LABEL=JSON for each model of its own")
            shared = parse_factory_kwargs(text)
            continue
        label = label.strip()
        if label not in factories:
            which = "is not a package.module:function model" if label in labels else "names no model"
            raise ConfigError(f"--factory-kwargs {label}=...: {label!r} {which}; the factory models' labels are "
                              f"{', '.join(factories)} (--labels names them)")
        if label in own:
            raise ConfigError(f"--factory-kwargs: {label}=... is given twice; give each label once")
        own[label] = parse_factory_kwargs(rest, f"--factory-kwargs {label}=...")
    return shared, own


def grid_cells_per_model(texts: Sequence[str], labels: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each ``--grid-cell``: ``LABEL=kwta_ratio=R,weight_sparsity=S[,pruning_method=NAME]``, the robustness-matrix
    cell of the model of that label, parsed and checked as evaluate's ``--grid-cell``
    (:func:`kwta_robust.grid_cell.parse_grid_cell`); returns ``{label: cell}``. One-line errors for a text naming no
    model's label, a label given twice, a bad cell, and two models declared at one cell (``table --matrix`` takes
    one record per cell)."""
    from kwta_robust.grid_cell import parse_grid_cell

    cells: dict[str, dict[str, Any]] = {}
    by_cell: dict[tuple, str] = {}
    for text in texts:
        label, rest = grid_cell_label(text, labels)
        if label in cells:
            raise ConfigError(f"--grid-cell: {label}=... is given twice; give each label once")
        cell = parse_grid_cell(rest, f"--grid-cell {label}=...")
        key = (cell["kwta_ratio"], cell["weight_sparsity"], cell["pruning_method"])
        if key in by_cell:
            raise ConfigError(f"--grid-cell: {by_cell[key]} and {label} are both declared at kwta_ratio={key[0]:g},"
                              f"weight_sparsity={key[1]:g} ({key[2]}); `table --matrix` takes one record per cell: "
                              "declare each model its own")
        cells[label], by_cell[key] = cell, label
    return cells


def grid_cell_label(text: str, labels: Sequence[str]) -> tuple[str, str]:
    """The model label a ``--grid-cell LABEL=CELL`` text starts with (the longest that fits, as a label may hold
    ``=``) and its ``CELL``; a one-line :class:`ConfigError` where it names no model."""
    from kwta_robust.grid_cell import GRID_CELL_KEYS

    stripped = text.strip()
    fitting = [label for label in labels if stripped.startswith(f"{label}=")]
    if fitting:
        label = max(fitting, key=len)
        return label, stripped[len(label) + 1:]
    named, sep, rest = stripped.partition("=")
    named = named.strip()
    if named in labels:  # spaces before the '='
        return named, rest
    known = f"the models' labels are {', '.join(labels)} (--labels names them)"
    if not sep or not named or named in GRID_CELL_KEYS:
        raise ConfigError(f"--grid-cell: {text!r} names no model; write LABEL=kwta_ratio=R,weight_sparsity=S, e.g. "
                          f"{labels[0]}=kwta_ratio=0.1,weight_sparsity=0 ({known})")
    raise ConfigError(f"--grid-cell {named}=...: {named!r} names no model; {known}")


def saved_work(args: argparse.Namespace) -> bool:
    """Whether an interrupted ``compare`` left records a re-run resumes (``--out-dir`` holds a ``.json``, or a sharded
    run's ``.parts/`` folder one); a dry run writes none."""
    return not args.dry_run and (holds_files(args.out_dir, "*.json") or holds_files(args.out_dir, "*.parts/*"))


def run(args: argparse.Namespace) -> int:
    """Evaluate two or more models under one config and write their comparison; returns the exit status. A config
    error names the flag that gave the value at fault (:func:`~kwta_robust.commands.common.flags_named`)."""
    from kwta_robust.commands.common import flags_named

    with flags_named(args):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """The body of :func:`run`: evaluate two or more models under one config and write their comparison."""
    from kwta_robust.commands.console import output_only_stdout, progress_bars
    from kwta_robust.compare import (check_comparison_outputs, compare_models, declare_cells, model_labels,
                                     write_comparison)
    from kwta_robust.config import resolve_device
    from kwta_robust.formats import render_stdout
    from kwta_robust.loading import ModelArgument, load_models
    from kwta_robust.safe_paths import check_output_dir

    if len(args.checkpoints) < 2:
        raise ConfigError("compare: give at least two models (use `evaluate` for one)")
    cfg = config_from_args(args, pin=False)  # the data file is pinned from its one read (compare_models)
    sharding = sharding_from_args(args)
    given = [ModelArgument.parse(text) for text in args.checkpoints]
    warn_repeated_models(given)
    labels = model_labels([m.name for m in given],
                          None if args.labels is None else [s.strip() for s in args.labels.split(",")])
    kwargs, per_model = factory_kwargs_per_model(args.factory_kwargs or [], given, labels)
    cells = grid_cells_per_model(args.grid_cell or [], labels)
    out_dir = check_output_dir(args.out_dir, "--out-dir")
    check_comparison_outputs(out_dir)
    device = resolve_device(cfg.device)
    with output_only_stdout():  # models printing (built, loaded, called) leave the table (--format json) as it is
        models = load_models(given, labels, device, allow_pickle=args.allow_pickle, factory_kwargs=kwargs,
                             per_model=per_model)
        declare_cells(models, cells)
        if args.dry_run:
            from kwta_robust.dry_run import dry_run_compare, render_dry_run

            plan = dry_run_compare(models, cfg, out_dir, transfer=not args.no_transfer, resume=not args.no_resume,
                                   sharding=sharding)
        else:
            records = compare_models(models, cfg, out_dir, transfer=not args.no_transfer, resume=not args.no_resume,
                                     command=command_line(args), progress=progress_bars(args.no_progress),
                                     sharding=sharding)
    if args.dry_run:
        sys.stdout.write(render_dry_run(plan, args.format))
        if plan.error is not None:
            raise plan.error
        return 0
    write_comparison(records, out_dir)
    sys.stdout.write(render_stdout(records, args.format))
    logger.info("records, compare.md and compare.html written to %s", out_dir)
    return 0
