"""Argument handling shared by the commands that evaluate (``evaluate``, ``compare``): the config and its
overrides, the model options, the outputs' checks and the invocation recorded as provenance."""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any, Iterator, Mapping

from kwta_robust.config import EvalConfig, flag_error, load_config
from kwta_robust.data_root import check_data_root_used
from kwta_robust.datafile import check_data_file, pin_data_file, with_data_file
from kwta_robust.errors import ConfigError
from kwta_robust.formats import FORMATS, format_help
from kwta_robust.safe_paths import check_distinct, check_output_file


def add_common_arguments(parser: argparse.ArgumentParser, output: str = "--out") -> None:
    """Options shared by ``evaluate`` and ``compare`` (config and its overrides); ``output``: the command's option
    naming where its records go, for the help text."""
    parser.add_argument("--config", required=True, metavar="YAML",
                        help="evaluation config (see eval_configs/), or a record (re-runs the config it stores)")
    parser.add_argument("--n-examples", type=int, default=None, metavar="N", help="override n_examples")
    parser.add_argument("--batch-size", type=int, default=None, metavar="B", help="override batch_size")
    parser.add_argument("--device", default=None, metavar="D", help="override device (auto, cpu, cuda, cuda:1)")
    parser.add_argument("--seed", type=int, default=None, metavar="S",
                        help="override seed (the attacks' seeds; it also picks the samples where the config's "
                             "sample_seed is null, as in eval_configs/: fix sample_seed to vary the attacks alone)")
    parser.add_argument("--data-root", default=None, metavar="DIR", help="override data_root")
    parser.add_argument("--data", default=None, metavar="FILE",
                        help="evaluate on a .pt/.npz file holding x [N,C,H,W] in [0,1] (or uint8) and y [N] "
                             "(replaces the config's dataset)")
    parser.add_argument("--bpda-layer", action="append", default=None, metavar="SPEC", dest="bpda_layer",
                        help="module BPDA acts on: a name as in named_modules, a glob on names, a class name, or auto "
                             "(repeatable; replaces the config's top-level bpda_layers)")
    parser.add_argument("--no-resume", action="store_true",
                        help=f"start over even if {output} holds a partial record")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="accept checkpoints that need pickle (runs code from the file: trusted files only)")
    parser.add_argument("--format", default="md", choices=FORMATS.names(),
                        help=format_help("table printed to stdout (default md): "))
    parser.add_argument("--no-progress", action="store_true", help="hide the per-attack progress bars")
    parser.add_argument("--shards", type=int, default=None, metavar="N",
                        help="split the samples into N shards of whole batches evaluated in parallel and merged into "
                             "the record the unsharded run writes (needs N batches of --batch-size)")
    parser.add_argument("--executor", default=None, metavar="process|ray",
                        help="with --shards: local processes (default) or Ray tasks (pip install -e \".[ray]\")")
    parser.add_argument("--ray-address", default=None, metavar="auto|HOST:PORT",
                        help="with --executor ray: join a running Ray cluster (default: start a local Ray)")


def sharding_from_args(args: argparse.Namespace) -> Any:
    """``--shards N --executor NAME --ray-address A`` as a :class:`~kwta_robust.shards.Sharding` (``None``: one
    process)."""
    from kwta_robust.shards import Sharding

    if args.shards is None or args.shards == 1:
        for option, value in (("--executor", args.executor), ("--ray-address", args.ray_address)):
            if value is not None:
                raise ConfigError(f"{option}: only with --shards N (N >= 2)")
        return None
    if args.ray_address is not None and args.executor != "ray":
        raise ConfigError(f"--ray-address: only with --executor ray (got --executor {args.executor or 'process'})")
    options = {} if args.ray_address is None else {"address": args.ray_address}
    return Sharding(args.shards, args.executor or "process", options)


#: The flag each config override of :func:`add_common_arguments` is given by, which its error names (a config file's
#: value is named by its key): :meth:`kwta_robust.config.EvalConfig.with_overrides`.
OVERRIDE_FLAGS: dict[str, str] = {"n_examples": "--n-examples", "batch_size": "--batch-size", "device": "--device",
                                  "seed": "--seed", "data_root": "--data-root", "bpda_layers": "--bpda-layer"}


@contextlib.contextmanager
def flags_named(args: argparse.Namespace, flags: Mapping[str, str] | None = None) -> Iterator[None]:
    """A config error raised in the block (after the overrides were validated: a device this machine lacks, more
    examples than the split holds, a BPDA layer the model lacks, a data root that cannot be read) names the flag of
    :data:`OVERRIDE_FLAGS` that gave its key's value (``device: 'cuda' requested ...`` → ``--device: ...``); a key
    the command line did not set keeps its name (:func:`kwta_robust.config.flag_error`). ``flags``: key → flag of
    another command (``train``'s, ``sweep``'s executor keys), in place of :data:`OVERRIDE_FLAGS`."""
    given = {key: flag for key, flag in (OVERRIDE_FLAGS if flags is None else flags).items()
             if getattr(args, flag.removeprefix("--").replace("-", "_"), None) is not None}
    try:
        yield
    except ConfigError as exc:
        renamed = flag_error(exc, given)
        if renamed is exc:
            raise
        raise renamed from None


def config_from_args(args: argparse.Namespace, pin: bool = True) -> EvalConfig:
    """The config with the command-line overrides; ``--data FILE`` replaces its data set. A data file's SHA-256
    is filled in (and checked against a pinned one); without ``pin`` only its presence is checked, for a run that
    pins it from its one read of the data (``evaluate``: :func:`~kwta_robust.runs.load_for_run`)."""
    if args.data is not None and args.data_root is not None:
        raise ConfigError("--data-root: not used with --data (the file is the data); drop one of them")
    cfg = load_config(args.config, flags=OVERRIDE_FLAGS, n_examples=args.n_examples, batch_size=args.batch_size,
                      device=args.device, seed=args.seed, data_root=args.data_root, bpda_layers=args.bpda_layer)
    if args.bpda_layer is not None:
        check_bpda_layer_used(cfg, args.config)
    if cfg.data_root is not None and args.data is None:  # the flag's, else the config file's key (misc53)
        check_data_root_used(cfg.dataset, cfg.data_root, "--data-root" if args.data_root is not None else "data_root",
                             f" of {args.config}")
    cfg = with_data_file(cfg, args.data) if args.data is not None else cfg
    if not pin:
        check_data_file(cfg)
        return cfg
    return pin_data_file(cfg)


def check_bpda_layer_used(cfg: EvalConfig, config: str) -> None:
    """``--bpda-layer`` replaces the top-level ``bpda_layers``: refuse it where no attack reads that key (no BPDA
    attack, or each with its own ``bpda_layers``), where it would change nothing and the run would look adaptive."""
    attacks = cfg.labelled_attacks(10)
    sanity = cfg.diagnostics.sanity
    if any(s.attack == "bpda" and s.bpda_layers is None for s in attacks) or (sanity and sanity.attack == "bpda"):
        return
    names = ", ".join(dict.fromkeys(s.attack for s in attacks)) or "no attack"
    raise ConfigError(f"--bpda-layer: no BPDA attack of {config} acts on the top-level bpda_layers (it runs {names}), "
                      "so it would change nothing; add a bpda attack to the config (eval_configs/quickstart.yaml has "
                      "one) or drop --bpda-layer")


def holds_files(path: str | Path | None, pattern: str | None = None) -> bool:
    """Whether ``path`` is a file (``pattern`` ``None``) or a folder holding a file matching ``pattern``: a command's
    ``saved_work``, what an interrupted run left for a re-run to resume (:func:`kwta_robust.cli.interrupted`). A path
    no file system takes holds none."""
    if path is None:
        return False
    try:
        return Path(path).is_file() if pattern is None else any(p.is_file() for p in Path(path).glob(pattern))
    except (OSError, ValueError):  # a NUL byte, a name too long: the command refused it before writing anything
        return False


def parse_factory_kwargs(text: str | None, option: str = "--factory-kwargs") -> dict | None:
    """``--factory-kwargs`` as a dict (one-line error naming ``option`` when it is not a JSON object)."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):  # RecursionError: nested too deeply
        raise ConfigError(f"{option}: not valid JSON: {_shown(text)}; write e.g. '{{\"num_classes\": 10}}'") \
            from None
    except ValueError:  # Python's int() limit: a JSON integer of more than 4300 digits
        raise ConfigError(f"{option}: {_shown(text)} holds an integer of more than 4,300 digits; write a "
                          "number of at most 4,300 digits") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{option}: expected a JSON object like '{{\"num_classes\": 10}}'")
    return value


def _shown(text: str) -> str:
    """``text`` quoted, shortened to 60 characters (a 5000-digit value is not echoed whole)."""
    return repr(text) if len(text) <= 60 else repr(text[:57] + "...")


def check_outputs(args: argparse.Namespace, outputs: dict[str, str | None]) -> None:
    """Before any work: every output file can be written and none is an input or another output."""
    for option, path in outputs.items():
        check_output_file(path, option)
    check_distinct(outputs, {"CHECKPOINT": getattr(args, "checkpoint", None),
                             "--weights": getattr(args, "weights", None), "--config": getattr(args, "config", None),
                             "--data": getattr(args, "data", None)})


#: The sub-commands' positional arguments (evaluate's CHECKPOINT, compare's MODELs): no option has their names.
POSITIONAL_ARGUMENTS = ("checkpoint", "checkpoints")


def command_line(args: argparse.Namespace) -> list[str]:
    """The invocation as recorded in provenance: the sub-command, its parsed options (plain strings) and its
    positional arguments last, so that the recorded line runs again as it reads (a repeated option, ``--bpda-layer``,
    once per value; a positional argument is no ``--checkpoint=`` option, which the parser would refuse)."""
    parts = ["kwta-robust", str(getattr(args, "command", "") or "")]
    positional: list[str] = []
    for key, value in sorted(vars(args).items()):
        if key in ("command", "verbose", "quiet") or value is None or value is False:
            continue
        values = [str(v) for v in value] if isinstance(value, (list, tuple)) else [value]
        if key in POSITIONAL_ARGUMENTS:
            positional += [str(v) for v in values]
            continue
        option = f"--{key.replace('_', '-')}"
        parts += [option + ("" if v is True else f"={v}") for v in values]
    # a value that reads as an option (a file named -net.pt) after the end of the options
    return parts + (["--"] if any(v.startswith("-") for v in positional) else []) + positional
