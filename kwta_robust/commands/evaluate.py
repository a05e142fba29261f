"""``kwta-robust evaluate CHECKPOINT --config eval_configs/NAME.yaml``: evaluate one model, print the table and
write the JSON record and, next to it, the HTML report (``.html`` instead of ``.json``).

Bring your own model with ``--model-factory package.module:function --weights FILE`` instead of a checkpoint.
The record is written atomically after every finished (attack, eps) unit; re-running the same command resumes
(``--no-resume`` starts over). Helpers here (:func:`load_model`, :func:`load_eval_data`) are shared with
``compare`` and ``quickstart``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from kwta_robust.config import EvalConfig, load_config, resolve_device
from kwta_robust.errors import ConfigError
from kwta_robust.formats import FORMATS, format_help
from kwta_robust.locks import lock_outputs
from kwta_robust.safe_paths import check_distinct, check_output_file, sanitize_name

logger = logging.getLogger(__name__)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``evaluate`` and ``compare`` (config and its overrides)."""
    parser.add_argument("--config", required=True, metavar="YAML", help="evaluation config (see eval_configs/)")
    parser.add_argument("--n-examples", type=int, default=None, metavar="N", help="override n_examples")
    parser.add_argument("--batch-size", type=int, default=None, metavar="B", help="override batch_size")
    parser.add_argument("--device", default=None, metavar="D", help="override device (auto, cpu, cuda, cuda:1)")
    parser.add_argument("--seed", type=int, default=None, metavar="S", help="override seed")
    parser.add_argument("--data-root", default=None, metavar="DIR", help="override data_root")
    parser.add_argument("--data", default=None, metavar="FILE",
                        help="evaluate on a .pt/.npz file holding x [N,C,H,W] in [0,1] (or uint8) and y [N] "
                             "(replaces the config's dataset)")
    parser.add_argument("--bpda-layer", action="append", default=None, metavar="SPEC", dest="bpda_layer",
                        help="module BPDA acts on: a name as in named_modules, a glob on names, a class name, or auto "
                             "(repeatable; replaces the config's top-level bpda_layers)")
    parser.add_argument("--no-resume", action="store_true", help="start over even if --out holds a partial record")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="accept checkpoints that need pickle (runs code from the file: trusted files only)")
    parser.add_argument("--format", default="md", choices=FORMATS.names(),
                        help=format_help("table printed to stdout (default md): "))
    parser.add_argument("--no-progress", action="store_true", help="hide the per-attack progress bars")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", nargs="?", help="checkpoint written by `kwta-robust train`")
    add_common_arguments(parser)
    parser.add_argument("--model-factory", metavar="PKG.MOD:FN",
                        help="bring your own model: a function returning an nn.Module (inputs in [0,1], logits out)")
    parser.add_argument("--weights", metavar="FILE", help="state_dict for --model-factory (torch.save(model.state_dict()))")
    parser.add_argument("--factory-kwargs", metavar="JSON", default=None, help="keyword arguments for --model-factory")
    parser.add_argument("--out", metavar="PATH", help="JSON record (default runs/eval/<model>__<config>.json)")
    parser.add_argument("--save-adversarial", metavar="PATH",
                        help="write clean/adversarial inputs, labels and predictions to this .pt file")


@dataclass
class ModelForEval:
    """A loaded model with the description that goes into the record."""

    model: nn.Module
    info: dict
    label: str
    metadata: dict


def load_model(checkpoint: str | None, device: Any, *, allow_pickle: bool = False, model_factory: str | None = None,
               weights: str | None = None, factory_kwargs: dict | None = None, label: str | None = None) -> ModelForEval:
    """Load a checkpoint or a bring-your-own model on ``device`` and describe it for the record."""
    from kwta_robust.checkpoint import load_byo_model, load_checkpoint
    from kwta_robust.models import describe_model

    if (checkpoint is None) == (model_factory is None):
        raise ConfigError("give either a CHECKPOINT or --model-factory package.module:function (with --weights)")
    if weights is not None and model_factory is None:
        raise ConfigError("--weights: only used with --model-factory; a checkpoint already holds its weights")
    if checkpoint is not None:
        loaded = load_checkpoint(checkpoint, device=device, allow_pickle=allow_pickle)
        source = str(Path(checkpoint).resolve())
        default_label = Path(checkpoint).stem
    else:
        loaded = load_byo_model(model_factory, weights, device=device, factory_kwargs=factory_kwargs)
        source = loaded.source
        default_label = Path(weights).stem if weights else model_factory.rsplit(":", 1)[-1]
    info = describe_model(loaded.model)
    info.update({
        "label": label or default_label,
        "architecture": loaded.spec.arch if loaded.spec is not None else type(loaded.model).__name__,
        "spec": loaded.spec.to_dict() if loaded.spec is not None else None,
        "checkpoint_sha256": loaded.sha256,
        "source": source,
        "training": {k: v for k, v in loaded.metadata.items() if k not in ("versions",)},
    })
    return ModelForEval(loaded.model, info, info["label"], dict(loaded.metadata))


def load_eval_data(cfg: EvalConfig, metadata: dict | None = None, models: Sequence[nn.Module] = ()) -> Any:
    """The configured split; for self-split sets (mnist5k, digits) the checkpoint's ``data_split_seed`` is used so
    test samples never overlap the model's training split. A data file (``dataset: {file: ...}``) takes its
    number of classes from ``models``."""
    from kwta_robust.data import CANONICAL_SPLIT_SEED, load_dataset
    from kwta_robust.datafile import eval_data_from_file

    if cfg.data_file is not None:
        return eval_data_from_file(cfg.data_file, models)
    metadata = metadata or {}
    trained_on = metadata.get("dataset")
    if isinstance(trained_on, dict):
        trained_on = trained_on.get("name")
    if isinstance(trained_on, str) and trained_on != cfg.dataset:
        logger.warning("the model was trained on %s but the config evaluates on %s", trained_on, cfg.dataset)
    split_seed = metadata.get("data_split_seed", CANONICAL_SPLIT_SEED)
    if isinstance(split_seed, bool) or not isinstance(split_seed, int):
        split_seed = CANONICAL_SPLIT_SEED
    return load_dataset(cfg.dataset, cfg.split, root=cfg.data_root, seed=split_seed)


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    """The config with the command-line overrides; ``--data FILE`` replaces its data set. A data file's SHA-256
    is filled in (and checked against a pinned one)."""
    from kwta_robust.datafile import pin_data_file, with_data_file

    if args.data is not None and args.data_root is not None:
        raise ConfigError("--data-root: not used with --data (the file is the data); drop one of them")
    cfg = load_config(args.config, n_examples=args.n_examples, batch_size=args.batch_size, device=args.device,
                      seed=args.seed, data_root=args.data_root, bpda_layers=args.bpda_layer)
    return pin_data_file(with_data_file(cfg, args.data) if args.data is not None else cfg)


def parse_factory_kwargs(text: str | None) -> dict | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise ConfigError(f"--factory-kwargs: not valid JSON: {text!r}; write e.g. '{{\"num_classes\": 10}}'") from None
    if not isinstance(value, dict):
        raise ConfigError("--factory-kwargs: expected a JSON object like '{\"num_classes\": 10}'")
    return value


def check_outputs(args: argparse.Namespace, outputs: dict[str, str | None]) -> None:
    """Before any work: every output file can be written and none is an input or another output."""
    for option, path in outputs.items():
        check_output_file(path, option)
    check_distinct(outputs, {"CHECKPOINT": getattr(args, "checkpoint", None),
                             "--weights": getattr(args, "weights", None), "--config": getattr(args, "config", None),
                             "--data": getattr(args, "data", None)})


def command_line(args: argparse.Namespace) -> list[str]:
    """The invocation as recorded in provenance: the sub-command and its parsed options (plain strings)."""
    parts = ["kwta-robust", str(getattr(args, "command", "") or "")]
    for key, value in sorted(vars(args).items()):
        if key in ("command", "verbose", "quiet") or value is None or value is False:
            continue
        parts.append(f"--{key.replace('_', '-')}" + ("" if value is True else f"={value}"))
    return parts


def run(args: argparse.Namespace) -> int:
    from kwta_robust.bpda_layers import check_bpda_specs
    from kwta_robust.commands.console import progress_bars
    from kwta_robust.evaluate import evaluate
    from kwta_robust.html_report import report_path_for, write_report
    from kwta_robust.formats import render_stdout

    cfg = config_from_args(args)
    outputs = {"--out": args.out, "--save-adversarial": args.save_adversarial}
    check_outputs(args, outputs)
    device = resolve_device(cfg.device)
    with contextlib.ExitStack() as held:
        held.enter_context(lock_outputs(outputs))  # from the start: a second run fails before loading anything
        loaded = load_model(args.checkpoint, device, allow_pickle=args.allow_pickle, model_factory=args.model_factory,
                            weights=args.weights, factory_kwargs=parse_factory_kwargs(args.factory_kwargs))
        check_bpda_specs({loaded.label: loaded.model}, cfg)
        data = load_eval_data(cfg, loaded.metadata, [loaded.model])
        out = Path(args.out) if args.out is not None else check_output_file(
            Path("runs") / "eval" / f"{sanitize_name(loaded.label)}__{sanitize_name(Path(args.config).stem)}.json",
            "--out")
        if args.out is None:
            held.enter_context(lock_outputs({"--out": out}))
        record = evaluate(
            loaded.model, data, cfg, loaded.info, out_path=out, resume=not args.no_resume,
            save_adversarial=args.save_adversarial, command=command_line(args),
            progress=progress_bars(args.no_progress), lock=False,
        )
    sys.stdout.write(render_stdout([record], args.format, detail=True))
    logger.info("record written to %s", out)
    write_report(report_path_for(out), [record])
    if args.save_adversarial:
        logger.info("adversarial inputs written to %s", args.save_adversarial)
    return 0
