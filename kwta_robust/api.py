"""The Python API: evaluate and compare models held in memory, on tensors held in memory, without files.

What ``kwta-robust evaluate`` and ``kwta-robust compare`` do for a checkpoint (or a factory and its weights) and a
config file, :func:`evaluate_model` and :func:`compare_models_in_memory` do for ``nn.Module`` objects and tensors a
script or notebook holds. The work is the same runner (:func:`kwta_robust.evaluate.evaluate`,
:func:`kwta_robust.compare.compare_models`) and the result the same :class:`~kwta_robust.results.EvalRecord`:
render it with :mod:`kwta_robust.formats` (``render_stdout``, ``render_records``), compare records with
:func:`kwta_robust.paired.paired_table`, place them in robustness matrices with
:func:`kwta_robust.matrix.build_matrices` (give each model its ``grid_cell``).

**Threat model.** White-box: the attacks see the model's weights and gradients. Each of the config's threats is an
Lp ball (``linf``, ``l2``, ...) of radius ``eps`` around each clean input, intersected with the [0, 1] box; the
reported robust accuracy is the per-sample worst case over the config's attacks (an upper bound). Shapes: the model
maps ``x`` ``[N, C, H, W]`` in [0, 1] (normalization inside the model) to logits ``[N, K]``; ``x`` is a float tensor
or array in [0, 1] or uint8 0..255, ``y`` ``[N]`` integer labels in 0..K-1 (``K`` read from the model's output).
Without ``x`` and ``y`` the config's data set is evaluated, as by the CLI.

**What a call leaves as it was:** the model (parameters, buffers, train/eval flags, ``requires_grad``, hooks; the
runner verifies it after every attack, :mod:`kwta_robust.snapshot`) and its device (it is evaluated where it is: a
config naming another ``device`` is refused), ``x`` and ``y``, the global torch, NumPy and Python RNG states (forked
and seeded per batch inside), grad mode, the torch thread count (``threads`` applies to the call only) and the
logging configuration. The model is evaluated in eval mode whatever its flags (one handed over in train mode gives
the numbers of ``model.eval()``; its flags are put back), with gradients on, outside inference mode and without an
autocast of the caller's (a call inside ``torch.no_grad()``, ``torch.inference_mode()`` or ``torch.autocast`` gives
the numbers of a call outside). Files are written only where ``out_path`` / ``out_dir`` says (then resumed like the
CLI's, on the same ``x`` and ``y`` only: the record keeps their digest, ``dataset.sha256``).

**Same numbers as the CLI.** The same model, samples and config give the CLI's per-sample results; the CLI runs
with one torch thread (:mod:`kwta_robust.runtime`), so pass ``threads=1`` for the same bits on a CPU whose torch
default is more (the thread count is recorded in ``provenance.torch_threads``). Two calls with the same seed in one
process give the same numbers.
"""

from __future__ import annotations

import contextlib
import random
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn.parameter import is_lazy

from attacks.errors import AttackConfigError
from attacks.transfer import same_device
from kwta_robust.bpda_layers import check_bpda_specs
from kwta_robust.compare import compare_models, warn_repeated_models
from kwta_robust.config import EvalConfig, load_config, resolve_device, warn_seed_overlaps
from kwta_robust.data import TensorData, values_sha256
from kwta_robust.datafile import check_labels_fit, data_from_arrays, model_num_classes
from kwta_robust.errors import (ConfigError, DataError, KwtaRobustError, OriginFixError, check_flag,
                                 eval_out_of_memory)
from kwta_robust.evaluate import evaluate
from kwta_robust.loading import ModelForEval, load_eval_data, model_info
from kwta_robust.grid_cell import GRID_CELL_KEYS, parse_grid_cell
from kwta_robust.model_checks import check_hookable
from kwta_robust.results import EvalRecord
from kwta_robust.resume import StalePolicy
from kwta_robust.runs import declare_grid_cell, warn_grid_cell
from kwta_robust.runtime import check_threads, torch_threads
from kwta_robust.safe_paths import check_output_dir, check_output_file, check_path_type
from kwta_robust.snapshot import model_device, source_digest

#: What ``config`` may be: a validated config, its keys as a dict, or the path of a YAML file.
ConfigLike = EvalConfig | Mapping[str, Any] | str | Path
#: What ``grid_cell`` may be: ``{"kwta_ratio": R, "weight_sparsity": S[, "pruning_method": NAME]}`` or that text.
GridCell = Mapping[str, Any] | str
#: What errors name as the fix of an output they cannot use (or of running out of memory): ``evaluate_model``'s
#: ``out_path`` and ``compare_models_in_memory``'s ``out_dir``, each restarted with ``resume=False``.
_FILE_STALE = StalePolicy("out_path", "resume=False", threads="threads={}")
_DIR_STALE = StalePolicy("out_dir", "resume=False", threads="threads={}")
#: What the line refusing a config's CUDA device on a machine without one adds to its fix here (the models are given:
#: ``auto`` evaluates each on its own device).
_MODELS_STAY = "(a model is evaluated where it is)"


def as_config(config: ConfigLike, **overrides: Any) -> EvalConfig:
    """``config`` validated as an :class:`EvalConfig` (a YAML path is read as ``--config`` reads it, a bundled
    suite found from any working folder: :func:`config_path`), with ``overrides`` (``n_examples=50``, ``seed=1``;
    ``None`` values ignored) applied. Errors name ``config`` and the keys, not the CLI's flags."""
    if isinstance(config, (str, Path)):
        return load_config(config_path(config), where="config", **overrides)
    if isinstance(config, Mapping):
        config = EvalConfig.from_dict(dict(config))
        warn_seed_overlaps(config)  # a path's is logged by load_config; an EvalConfig's by whatever read it
    if not isinstance(config, EvalConfig):
        raise ConfigError(f"config: expected an EvalConfig, a dict of its keys or a YAML path, got "
                          f"{type(config).__name__}; e.g. kwta_robust.api.as_config('eval_configs/quick.yaml')")
    return config.with_overrides(**overrides) if any(v is not None for v in overrides.values()) else config


def bundled_configs() -> Path:
    """The ``eval_configs/`` folder of the source tree this package runs from (a clone, ``pip install -e .``); a wheel
    installs no ``eval_configs/`` (not package data in ``pyproject.toml``), so there it does not exist."""
    return Path(__file__).resolve().parents[1] / "eval_configs"


def config_path(config: str | Path) -> Path:
    """The YAML file ``config`` names: the path as given (relative to the working folder, as the CLI's ``--config``
    reads it) where it exists, else the bundled suite it names from any working folder (``quickstart``,
    ``quickstart.yaml`` or ``eval_configs/quickstart.yaml``: :func:`bundled_configs`); a name without ``.yaml``
    reads the working folder's ``NAME.yaml`` first where there is one (a user's own ``quickstart.yaml`` is theirs,
    not the bundled suite). None found is one line saying where it looked."""
    path = Path(config)
    if path.exists() or path.is_absolute():
        return path
    bundled = bundled_configs()
    name = path.name if path.parent in (Path("."), Path("eval_configs")) else None
    own = path.with_name(f"{path.name}.yaml")
    if name is not None and path.suffix != ".yaml" and own.is_file():
        return own
    for candidate in ([] if name is None else [bundled / name, bundled / f"{name}.yaml"]):
        if candidate.is_file():
            return candidate
    there = str(bundled) if bundled.is_dir() else f"{bundled}, which this install lacks: a wheel ships none"
    raise ConfigError(f"config: no such file {str(config)!r} (looked in the working folder {Path.cwd()} and the "
                      f"bundled suites, {there}); give the YAML's path")


def _config_of(config: ConfigLike, x: Any, y: Any, data_name: str) -> EvalConfig:
    """``config`` as :func:`as_config` reads it; a dict given with ``x`` may leave out ``dataset`` (``x`` is the data,
    named ``data_name``). ``x``, ``y`` and ``data_name`` are checked first: a fault of theirs is not the config's."""
    if (x is None) != (y is None):
        raise ConfigError(f"{'y' if y is None else 'x'}: give both x and y, or neither (the config's data set)")
    if x is not None:
        _check_data_name(data_name)
        if isinstance(config, Mapping) and "dataset" not in config:
            config = {**config, "dataset": data_name}
    return as_config(config)


def _check_data_name(name: Any) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"data_name: expected a non-empty name for x and y, got {name!r}")


def _check_flags(**flags: Any) -> None:
    """Each flag is ``True`` or ``False``: ``transfer='no'`` is a non-empty string, which Python reads as true."""
    for name, value in flags.items():
        check_flag(name, value)


def _out(path: Any, name: str, what: str) -> Path | None:
    """``out_path`` / ``out_dir`` checked as the CLI checks ``--out`` / ``--out-dir`` (``None``: no file)."""
    if path is None:
        return None
    check_path_type(path, name, what)
    return check_output_file(path, name) if what == "file" else check_output_dir(path, name)


def describe_in_memory(model: nn.Module, label: str, grid_cell: GridCell | None = None) -> dict[str, Any]:
    """What the record says about a model held in memory (``record.model``): :func:`kwta_robust.loading.model_info`
    with its ``label`` and class, the digest of its code (``model_source_sha256``: a resumed record must be the same
    code, not only the same weights) and, if given, the ``grid_cell`` it is declared at in a robustness matrix."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model {label!r}: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(label, str) or not label.strip():
        raise ConfigError(f"label: expected a non-empty name for the model, got {label!r}")
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        raise ConfigError(f"model {label!r}: its parameters are on the meta device (shapes without values); load its "
                          "weights first (model.to_empty(device='cpu'), then model.load_state_dict(...))")
    lazy = next((name for name, t in (*model.named_parameters(), *model.named_buffers()) if is_lazy(t)), None)
    if lazy is not None:  # torch.nn.Lazy* modules: counting, probing and snapshotting them fail until a forward
        raise ConfigError(f"model {label!r}: {lazy!r} is uninitialized (a torch.nn.Lazy* module); run one forward on "
                          "a dummy batch first (model(torch.zeros(1, C, H, W)))")
    check_hookable(model, f"model {label!r}")  # before the first forward: a frozen TorchScript module has no flags
    info = model_info(model, label, "in memory")
    info["model_source_sha256"] = source_digest(model)
    if grid_cell is not None:
        info["grid_cell"] = grid_cell_value(grid_cell, f"grid_cell of {label!r}")
        warn_grid_cell(info)
    return info


def grid_cell_value(cell: GridCell, where: str = "grid_cell") -> dict[str, Any]:
    """A robustness-matrix cell as ``record.model["grid_cell"]``: a mapping of :data:`GRID_CELL_KEYS` or the
    ``--grid-cell`` text, checked as :func:`kwta_robust.matrix.parse_grid_cell` checks the option."""
    if isinstance(cell, Mapping):
        unknown = sorted(str(k) for k in cell if k not in GRID_CELL_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}; use {', '.join(GRID_CELL_KEYS)}")
        cell = ",".join(f"{k}={v}" for k, v in cell.items() if v is not None)
    if not isinstance(cell, str):
        raise ConfigError(f"{where}: expected a dict like {{'kwta_ratio': 0.1, 'weight_sparsity': 0.0}}, got "
                          f"{type(cell).__name__}")
    return parse_grid_cell(cell, where)


def in_memory_data(x: Any, y: Any, models: Mapping[str, nn.Module], name: str = "in-memory") -> TensorData:
    """``x`` ``[N, C, H, W]`` (floats in [0, 1] or uint8 0..255) and ``y`` ``[N]`` (integer labels), tensors or
    NumPy arrays, checked as a ``--data`` file's and held as :class:`TensorData` on the CPU (``indices`` 0..N-1);
    the number of classes is the models' output width, and they must agree. The data's ``sha256`` (of the checked
    values) goes into the record: a record at ``out_path`` of other values is not resumed."""
    if not isinstance(models, Mapping) or not models:
        got = "an empty dict" if isinstance(models, Mapping) else type(models).__name__
        raise ConfigError(f"models: expected a dict of label -> nn.Module, got {got}")
    bad = next((label for label, m in models.items() if not isinstance(m, nn.Module)), None)
    if bad is not None:
        raise ConfigError(f"model {bad!r}: expected a torch.nn.Module, got {type(models[bad]).__name__}")
    _check_data_name(name)
    data = data_from_arrays(x, y, name, where=f"data {name!r}")
    classes = {label: model_num_classes(m, data.x[:1], f"data {name!r} on model {label!r}")
               for label, m in models.items()}
    if len(set(classes.values())) > 1:
        raise DataError(f"data {name!r}: the models disagree on the number of classes ({classes}); compare models "
                        "of one task")
    num_classes = next(iter(classes.values()))
    check_labels_fit(data.y, num_classes, f"data {name!r}")
    return TensorData(data.x, data.y, name, num_classes, data.indices, values_sha256(data.x, data.y))


def evaluate_model(model: nn.Module, config: ConfigLike, x: Any = None, y: Any = None, *, label: str = "model",
                   data_name: str = "in-memory", grid_cell: GridCell | None = None, out_path: str | Path | None = None,
                   resume: bool = True, progress: bool = False, threads: int | None = None) -> EvalRecord:
    """Evaluate ``model`` (on its own device) under ``config`` on ``x``/``y`` (module docstring: threat model,
    shapes) or, without them, on the config's data set; returns the complete record.

    ``label`` names the model in tables; ``data_name`` names ``x``/``y`` (the record's data set and the config's
    ``dataset``); ``grid_cell`` places it in a robustness matrix (:func:`grid_cell_value`). ``out_path``: write the
    record there after every finished attack and resume from it, as ``evaluate --out`` (default: no file).
    ``threads``: torch CPU threads for this call (``None``: as set; the CLI uses 1). Bad input is one
    :class:`~kwta_robust.errors.KwtaRobustError` line naming the field and the fix."""
    cfg = _config_of(config, x, y, data_name)
    _check_flags(resume=resume, progress=progress)
    out_path = _out(out_path, "out_path", "file")
    info = describe_in_memory(model, label, grid_cell)
    with _torch_modes(model), _caller_rngs():  # a randomized model draws in the checks before the runner seeds
        data, cfg = _data(cfg, {label: model}, x, y, data_name, _FILE_STALE)
        check_bpda_specs({label: model}, cfg)
        with _threads(threads), _input_errors():
            record = evaluate(model, data, cfg, info, out_path=out_path, resume=resume, progress=progress,
                              command=_command("evaluate_model"), stale=_FILE_STALE)
    _declare_cell(record, info, out_path)
    return record


def compare_models_in_memory(models: Mapping[str, nn.Module], config: ConfigLike, x: Any = None, y: Any = None, *,
                             transfer: bool = True, data_name: str = "in-memory",
                             grid_cells: Mapping[str, GridCell] | None = None, out_dir: str | Path | None = None,
                             resume: bool = True, progress: bool = False,
                             threads: int | None = None) -> list[EvalRecord]:
    """Evaluate every model of ``models`` (label → module, all on one device) on the same samples, as
    ``kwta-robust compare``: with ``transfer`` each other model is a transfer source for it (e.g. the ReLU twin's
    adversarial inputs against the kWTA model). Returns one record per model, in the order given (the first is the
    reference of :func:`kwta_robust.paired.paired_table`). ``out_dir``: write ``<label>.json`` there and resume
    from it (default: no file). Other arguments as :func:`evaluate_model`."""
    if not isinstance(models, Mapping) or len(models) < 2:
        raise ConfigError("models: give at least two models as a dict of label -> nn.Module, e.g. "
                          "{'kwta': kwta_net, 'relu': relu_net}")
    if grid_cells is not None and not isinstance(grid_cells, Mapping):
        raise ConfigError(f"grid_cells: expected a dict of model label -> grid cell, got {type(grid_cells).__name__}; "
                          "e.g. {'kwta': 'kwta_ratio=0.1,weight_sparsity=0'}")
    unknown = sorted(set(grid_cells or {}) - set(models))
    if unknown:
        raise ConfigError(f"grid_cells: {unknown[0]!r} is not a model label; use one of {', '.join(models)}")
    cfg = _config_of(config, x, y, data_name)
    _check_flags(transfer=transfer, resume=resume, progress=progress)
    out_dir = _out(out_dir, "out_dir", "folder")
    loaded = [ModelForEval(m, describe_in_memory(m, label, (grid_cells or {}).get(label)), label, {})
              for label, m in models.items()]
    warn_repeated_models([(f"model {label!r}", "its nn.Module", id(m)) for label, m in models.items()])
    with _torch_modes(*models.values()), _caller_rngs(), _threads(threads), _input_errors():
        data, cfg = _data(cfg, models, x, y, data_name, _DIR_STALE)
        records = compare_models(loaded, cfg, None if out_dir is None else Path(out_dir), transfer=transfer,
                                 resume=resume, command=_command("compare_models_in_memory"), progress=progress,
                                 stale=_DIR_STALE, data=data)
    return records  # each with the grid cell its info declares (compare_models puts it on)


def _data(cfg: EvalConfig, models: Mapping[str, nn.Module], x: Any, y: Any, name: str,
          stale: StalePolicy) -> tuple[TensorData, EvalConfig]:
    """The data to evaluate on and the config that names it; the models must sit on the config's device. Running out
    of memory in the models' one-sample forward that reads their number of classes (before any evaluation) is the
    one :class:`~kwta_robust.errors.EvalOutOfMemory` line the evaluation gives, naming ``stale``'s options (it was
    torch's own error, with its lines)."""
    devices = {label: model_device(m) for label, m in models.items()}
    if cfg.device != "auto":
        try:
            wanted = resolve_device(cfg.device)
        except OriginFixError as exc:  # its fix in the config key's words, and what auto does with a given model
            raise OriginFixError("device", exc.problem, f"{exc.fix} {_MODELS_STAY}", exc.flag_fix) from None
        elsewhere = next((label for label, d in devices.items() if not same_device(d, wanted)), None)
        if elsewhere is not None:
            raise ConfigError(f"device: the config says {cfg.device} but model {elsewhere!r} is on "
                              f"{devices[elsewhere]}; move the model (model.to('{wanted}')) or set device: auto "
                              "(a model is evaluated where it is)")
    with eval_out_of_memory(stale.option, stale.restart, stale.set_aside):
        if x is None:
            return load_eval_data(cfg, None, list(models.values())), cfg
        data = in_memory_data(x, y, models, name)
    return data, cfg.with_overrides(dataset=name)


@contextlib.contextmanager
def _threads(threads: int | None) -> Iterator[None]:
    """``threads`` torch CPU threads for the block (``None``: leave the caller's setting alone)."""
    if threads is None:
        yield
        return
    with torch_threads(check_threads(threads, "threads") or 0):
        yield


@contextlib.contextmanager
def _torch_modes(*models: nn.Module) -> Iterator[None]:
    """The call's torch modes whatever the caller's, as the CLI runs: gradients on, outside
    ``torch.inference_mode`` (the probes and attacks differentiate the input: a call inside ``torch.no_grad()``
    stopped at the model probe, blaming the model's backward) and without an autocast the caller entered, on the
    CPU and the models' device (a ``torch.autocast`` around the call gave other numbers than the CLI's; one inside
    the model's ``forward`` applies as before). The caller's modes are back after the block."""
    device_types = dict.fromkeys(["cpu", *(model_device(m).type for m in models)])
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.enable_grad())
        for device_type in device_types:
            stack.enter_context(torch.autocast(device_type, enabled=False))
        yield


@contextlib.contextmanager
def _caller_rngs() -> Iterator[None]:
    """The caller's torch (CPU and initialised CUDA devices), NumPy and Python global RNG states as they were after
    the block: a randomized model draws from them in the forwards that read its classes and probe it, before the
    runner forks and seeds them per batch (the draws inside are the same; only the caller's state is put back).
    Tensors created without a device inside are on the CPU, as with torch's default (the caller's is restored)."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    numpy_state, python_state = np.random.get_state(), random.getstate()
    # a default device the caller set (meta, cuda) must not place the harness's own tensors; torch.device("cpu") as a
    # context is a TorchFunctionMode that every torch call passes through, so only then
    on_cpu = torch.empty(0).device.type == "cpu"
    try:
        with torch.random.fork_rng(devices=devices), contextlib.nullcontext() if on_cpu else torch.device("cpu"):
            yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


@contextlib.contextmanager
def _input_errors() -> Iterator[None]:
    """An attack's own check of its input (``AttackConfigError``: a DLR attack on a model of 2 classes) raised as
    the one error class of bad input, ``KwtaRobustError`` (a :class:`ConfigError`, as the CLI prints it). Running
    out of memory is already one such line, naming the batch settings to lower and this call's ``out_path`` /
    ``out_dir``: :func:`~kwta_robust.evaluate.evaluate` and :func:`~kwta_robust.compare.compare_models` raise it
    (:func:`~kwta_robust.errors.eval_out_of_memory`), so every entry point gets it once. What was written before
    (the record at ``out_path``, after every finished unit) stays."""
    try:
        yield
    except AttackConfigError as exc:
        if isinstance(exc, KwtaRobustError):
            raise
        raise ConfigError(str(exc)) from None


def _command(function: str) -> list[str]:
    """The provenance of a call: this API's function and the script (or kernel) that made it."""
    return [f"kwta_robust.api.{function}", *sys.argv[:1]]


def _declare_cell(record: EvalRecord, info: Mapping[str, Any], out_path: str | Path | None) -> None:
    """The grid cell ``info`` declares, if any, onto a (possibly resumed) record
    (:func:`kwta_robust.runs.declare_grid_cell`)."""
    if "grid_cell" in info:
        declare_grid_cell(record, info["grid_cell"], out_path)
