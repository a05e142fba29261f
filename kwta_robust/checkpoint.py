"""Self-describing checkpoints, loaded safely with ``torch.load(weights_only=True)``.

File format (a ``torch.save`` dict of tensors and plain data only)::

    {"format": "kwta-robust-checkpoint", "format_version": 1,
     "model_spec": {"arch": ..., "kwargs": {...}},        # ModelSpec: registry name + constructor arguments
     "state_dict": {name: Tensor},                        # CPU tensors
     "metadata": {...}}                                   # data set, recipe, accuracy, measured sparsity, versions

Loading rebuilds the model from the spec and loads the state_dict strictly. Models this package cannot build are
"brought" with :func:`load_byo_model`: a ``package.module:function`` factory plus a plain state_dict file (or a
safetensors file). Files are read by :mod:`kwta_robust.weights_read`.
Every failure of a file is a one-line :class:`~kwta_robust.errors.CheckpointError` naming the file and the fix; an
argument of another type (a path that is not a str or Path, ``allow_pickle='no'``) is a one-line ``ConfigError``.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import Tensor, nn
from torch.nn.parameter import is_lazy
from torch.nn.utils import prune

from kwta_robust.errors import CheckpointError, ConfigError, first_line, is_whole_number
from kwta_robust.factory_args import call_factory
from kwta_robust.foreign_weights import (WRAPPER_KEYS, check_dtypes, checkpoint_entries, dtype_notes, is_state_dict,
                                         normalize_state_dict)
from kwta_robust.model_checks import build_model, check_size, meta_model
from kwta_robust.models import ModelSpec, describe_model
from kwta_robust.models.registry import holds_one_value
from kwta_robust.results import atomic_write, package_versions
from kwta_robust.safe_paths import check_path_type
from kwta_robust.safetensors_read import recorded_metadata
from kwta_robust.weights_read import read_file

logger = logging.getLogger(__name__)

FORMAT = "kwta-robust-checkpoint"
FORMAT_VERSION = 1


@dataclass
class LoadedModel:
    """A model ready for evaluation (eval mode, on ``device``) and where it came from.

    ``spec`` is ``None`` for bring-your-own and pickled models; ``sha256`` is the hash of the file read (the
    weights file for bring-your-own models; ``None`` when no file was read); ``source`` names the origin.
    """

    model: nn.Module
    spec: ModelSpec | None
    metadata: dict = field(default_factory=dict)
    sha256: str | None = None
    source: str = ""


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _plain_metadata(value: Any, where: str) -> Any:
    """Metadata as plain data (what ``weights_only`` loading accepts); numeric scalars become Python numbers."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain_metadata(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_metadata(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if holds_one_value(value):
        return value.item()
    raise CheckpointError(
        f"checkpoint metadata {where}: {type(value).__name__} is not plain data; use numbers, strings, lists or dicts"
    )


def save_checkpoint(path: str | Path, model: nn.Module, spec: ModelSpec,
                    metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``model``'s weights with its ``spec`` and ``metadata`` to ``path`` atomically (temp file + rename).

    Metadata is completed with measured facts (they win over caller keys of the same name): ``activation``,
    ``kwta_ratio``, ``kwta_mode``, ``kwta_k``, ``k_inference_factor``, ``boost_strength``, ``kwta_layers``,
    ``num_params``, ``weight_sparsity`` (fraction of exact zeros, overall and per layer) and ``versions``.
    The caller adds the data set, training recipe, clean test accuracy, seed, ... Returns the path written.
    """
    path = Path(path)
    measured = describe_model(model)
    meta = dict(_plain_metadata(dict(metadata or {}), "metadata"))
    meta.update(_plain_metadata(measured, "metadata"))
    meta["versions"] = package_versions()
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_spec": spec.to_dict(),
        "state_dict": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
        "metadata": meta,
    }
    atomic_write(path, lambda f: torch.save(payload, f))
    logger.info("saved checkpoint %s (%s, %s)", path, spec.arch, meta.get("activation"))
    return path


#: The fix a mismatch names for a kwta-robust checkpoint's model (a shape: its arguments).
_DEFINITION_DIFFERS, _ARGUMENTS_DIFFER = "the model definition differs", "the model definition (arguments) differs"
#: The fix a key or shape mismatch names for a factory's model: the weights were saved from the model other arguments
#: built (a ReLU twin's file loaded into the factory's kWTA default has no duty-cycle buffers).
FACTORY_DIFFERS = ("the model the factory built differs: build it with the arguments the weights were saved with "
                   "(--factory-kwargs; in compare 'LABEL={...}' for one model)")


def _check_state(model: nn.Module, state: Mapping[str, Tensor], source: str,
                 differs: str = _DEFINITION_DIFFERS) -> None:
    """The first missing/unexpected/mismatching key of ``state`` against ``model`` (which may live on ``meta``),
    one line ending in ``differs`` (the fix: :data:`FACTORY_DIFFERS` for a factory's model)."""
    if not is_state_dict(state):
        raise CheckpointError(f"{source}: the state_dict is not a mapping of names to tensors; the file is damaged")
    named = next((k for k in state if not isinstance(k, str)), None)
    if named is not None:
        raise CheckpointError(f"{source}: state_dict key {named!r} ({type(named).__name__}) is not a parameter name; "
                              "save the weights with torch.save(model.state_dict(), FILE), whose keys are names like "
                              "'0.weight'")
    expected = model.state_dict()
    _check_parametrizations(expected, state, source)
    for key, tensor in expected.items():
        if key not in state:
            raise CheckpointError(f"{source}: state_dict lacks {key!r} that the model has; {differs}")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{source}: shape mismatch for {key!r}: file has {tuple(state[key].shape)}, model expects "
                f"{tuple(tensor.shape)}; {_ARGUMENTS_DIFFER if differs == _DEFINITION_DIFFERS else differs}"
            )
    extra = [key for key in state if key not in expected]
    if extra:
        raise CheckpointError(f"{source}: state_dict has {extra[0]!r} that the model lacks; {differs}")


def _parametrized(keys: Iterable[str]) -> dict[str, str]:
    """``<layer>.<name>`` -> a key of its ``torch.nn.utils.parametrize`` parametrization (``<layer>.parametrizations.
    <name>.original``, ...)."""
    found: dict[str, str] = {}
    for key in keys:
        head, marker, rest = ("." + key).partition(".parametrizations.")  # the leading "." finds a top-level one
        if marker and rest:
            layer, name = head[1:], rest.split(".", 1)[0]
            found.setdefault(f"{layer}.{name}" if layer else name, key)
    return found


def _check_parametrizations(expected: Mapping[str, Tensor], state: Mapping[str, Tensor], source: str) -> None:
    """A one-line error when a tensor is parametrized on one side only: the parametrization's code computes it, and a
    weights file does not hold that code."""
    model_side, file_side = _parametrized(expected), _parametrized(state)
    one_sided = [(n, k, "model's") for n, k in model_side.items() if n not in file_side] + \
                [(n, k, "file's") for n, k in file_side.items() if n not in model_side]
    if one_sided:
        name, key, whose = one_sided[0]
        raise CheckpointError(
            f"{source}: the {whose} {name!r} is parametrized (torch.nn.utils.parametrize, key {key!r}) and the other "
            "side's is not; build the model with the same parametrizations, or save the weights after "
            "torch.nn.utils.parametrize.remove_parametrizations"
        )


def _load_state(model: nn.Module, state: Mapping[str, Tensor], source: str,
                differs: str = _DEFINITION_DIFFERS) -> None:
    """Strict ``load_state_dict`` with the first missing/unexpected/mismatching key named."""
    _check_state(model, state, source, differs)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # a tensor torch cannot copy into the model's (a layout or dtype it refuses)
        detail = " ".join(str(exc).split())
        raise CheckpointError(f"{source}: load_state_dict refused the file ({detail[:300]}); save the weights as dense "
                              "tensors of the model's shapes with torch.save(model.state_dict(), FILE)") from None
    _refresh_pruned(model)


def _refresh_pruned(model: nn.Module) -> None:
    """A layer pruned with ``torch.nn.utils.prune`` holds ``<name>`` as a plain attribute, ``<name>_orig * <name>_mask``
    as its pruning hook computed it before the load; the hook recomputes it from the loaded pair (what the next
    forward does), so what reads ``<name>`` before one (``weight_sparsity``) counts the loaded weights' zeros."""
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                hook(module, ())


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu", allow_pickle: bool = False) -> LoadedModel:
    """Rebuild a model saved by :func:`save_checkpoint` (eval mode, on ``device``).

    With ``allow_pickle=True`` (trusted files only) a whole pickled ``nn.Module`` (``torch.save(model)``) is
    accepted too; its ``spec`` is ``None``.
    """
    path = check_path_type(path, "checkpoint")
    read = read_file(path, allow_pickle)
    payload, digest = read.payload, read.sha256
    source = str(path)
    if isinstance(payload, nn.Module):
        return LoadedModel(payload.to(device).eval(), None, {"pickled_module": type(payload).__name__}, digest, source)
    if isinstance(payload, Mapping) and isinstance(payload.get("format"), str) and payload["format"] != FORMAT:
        raise CheckpointError(f"checkpoint {path}: its format is {payload['format']!r}, not {FORMAT!r}; write it with "
                              "`kwta-robust train` / save_checkpoint, or load its weights with "
                              "--model-factory/--weights")
    if not isinstance(payload, Mapping) or payload.get("format") != FORMAT:
        if is_state_dict(payload) or (isinstance(payload, Mapping) and is_state_dict(payload.get("state_dict"))):
            raise CheckpointError(
                f"checkpoint {path}: not a kwta-robust checkpoint but a plain state_dict; load it as a "
                "bring-your-own model with --model-factory package.module:function --weights FILE (in compare: "
                "package.module:function=FILE)"
            )
        raise CheckpointError(
            f"checkpoint {path}: not a kwta-robust checkpoint (no format {FORMAT!r}); write it with "
            "`kwta-robust train` / save_checkpoint, or use --model-factory/--weights"
        )
    version = payload.get("format_version")
    if not is_whole_number(version, 1):
        raise CheckpointError(f"checkpoint {path}: invalid format_version {version!r}; the file is damaged")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path}: format version {version} is newer than this kwta-robust reads ({FORMAT_VERSION}); "
            "upgrade kwta-robust"
        )
    missing = [key for key in ("model_spec", "state_dict", "metadata") if key not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path}: missing entry {missing[0]!r}; the file is damaged")
    if not isinstance(payload["metadata"], Mapping):
        raise CheckpointError(f"checkpoint {path}: its metadata is not a mapping; the file is damaged")
    where = f"checkpoint {path}"
    try:
        spec = ModelSpec.from_dict(payload["model_spec"])
        skeleton = meta_model(spec)  # shapes without memory: a damaged spec cannot allocate an absurd model
        if skeleton is not None:
            check_size(spec, "model_spec", skeleton)
            _check_state(skeleton, payload["state_dict"], where)
        model = build_model(spec, "model_spec")
    except ConfigError as exc:
        raise CheckpointError(f"{where}: cannot rebuild the model: {exc}") from None
    check_dtypes(payload["state_dict"], model, where)  # integers or complex numbers are not the trained weights
    _load_state(model, payload["state_dict"], where)
    metadata = dict(payload["metadata"])
    _check_measured(metadata, model, where)
    converted = dtype_notes(payload["state_dict"], model.state_dict())  # a float16 file into the float32 model
    if converted:  # evaluated in the model's precision (record.model.parameter_dtypes); the file's rounding stays
        for note in converted:
            logger.info("%s: %s", where, note)
        earlier = metadata.get("weights_normalization") or []
        if not isinstance(earlier, list):
            raise CheckpointError(f"{where}: metadata weights_normalization is {type(earlier).__name__}, not a list of "
                                  "notes; the file is damaged")
        metadata["weights_normalization"] = [*earlier, *converted]
    return LoadedModel(model.to(device).eval(), spec, metadata, digest, source)


#: The settings of a kWTA layer that its spec fixes and no tensor holds (:meth:`kwta_robust.layers.KWTA.describe`).
_LAYER_SETTINGS = ("mode", "ratio", "k", "k_inference_factor")


def _check_measured(metadata: Mapping[str, Any], model: nn.Module, where: str) -> None:
    """The facts :func:`save_checkpoint` measured (activation, each kWTA layer's settings) against the model the spec
    rebuilt: a spec or metadata edited after saving would evaluate another model than the one trained, silently.
    A ``data_split_seed`` that is not a whole number would be read as split 0 (:func:`~kwta_robust.comparability.
    data_split_seed`), whose test samples may be ones the model was trained on."""
    measured = describe_model(model)
    differ = None
    if "activation" in metadata and metadata["activation"] != measured["activation"]:
        differ = f"activation {metadata['activation']!r}", repr(measured["activation"])
    stored = metadata.get("kwta_layers")
    if differ is None and isinstance(stored, Mapping):
        for name, layer in measured["kwta_layers"].items():
            saved = stored.get(name)
            key = next((k for k in _LAYER_SETTINGS if isinstance(saved, Mapping) and k in saved
                        and saved[k] != layer.get(k)), None)
            if key is not None:
                differ = f"kwta layer {name!r} {key} {saved[key]!r}", repr(layer.get(key))
                break
    if differ is not None:
        raise CheckpointError(f"{where}: its metadata says {differ[0]} but the model its model_spec builds has "
                              f"{differ[1]}; the file was edited or damaged: save it again with save_checkpoint "
                              "(`kwta-robust train`)")
    split_seed = metadata.get("data_split_seed")
    if split_seed is not None and not is_whole_number(split_seed):  # read as split 0: maybe the training samples
        raise CheckpointError(f"{where}: metadata data_split_seed is {split_seed!r}, not a whole number (the seed of "
                              "the train/test split it was trained on); the file was edited or damaged: save it "
                              "again with save_checkpoint (`kwta-robust train`)")


def _import_factory(factory: str):
    if not isinstance(factory, str):
        raise ConfigError(f"model_factory: expected 'package.module:function' (a str), got {type(factory).__name__}")
    module_name, sep, attr = factory.partition(":")
    if not sep or not module_name or not attr:
        raise CheckpointError(f"model factory {factory!r}: write it as package.module:function")
    if module_name.startswith("."):  # importlib wants the package a relative name is relative to
        raise CheckpointError(f"model factory {factory!r}: {module_name!r} is a relative module name; "
                              f"{_import_hint(module_name, attr, None)}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CheckpointError(f"model factory {factory!r}: cannot import {module_name!r} ({first_line(exc)}); "
                              f"{_import_hint(module_name, attr, exc)}") from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the module's own code failed: one line, not a traceback
        raise CheckpointError(f"model factory {factory!r}: importing {module_name!r} raised {type(exc).__name__}: "
                              f"{first_line(exc)}; fix the module (python -c 'import {module_name}' shows the "
                              "traceback)") from None
    target = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise CheckpointError(f"model factory {factory!r}: {module_name!r} has no attribute {attr!r}")
    if not callable(target):
        raise CheckpointError(f"model factory {factory!r}: {attr!r} is not callable")
    return target


def _import_hint(module_name: str, attr: str, exc: ImportError | None) -> str:
    """The fix for a factory module that is not found: a file path written where its import name belongs, or a
    module in the working folder (which the ``kwta-robust`` command, unlike ``python``, does not import from). The
    folder is put before the ``PYTHONPATH`` already set, which keeps the user's entries."""
    missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
    if exc is not None and (not missing or not module_name.startswith(missing)):  # an import inside it failed
        return "check the module path and PYTHONPATH"
    path = Path(module_name)
    if path.suffix == ".py" or "/" in module_name or "\\" in module_name:
        folder, name = _import_root(path)
        return (f"write the module's import name, not a file: PYTHONPATH={folder}:$PYTHONPATH kwta-robust ... "
                f"--model-factory {name}:{attr}")
    if exc is None:  # a relative name (.models)
        return "write the absolute module name, without the leading '.' (e.g. mypkg.models:make_net)"
    if Path(*module_name.split(".")).with_suffix(".py").is_file() or Path(*module_name.split(".")).is_dir():
        return ("it is in the working folder, which the kwta-robust command does not import from: run "
                "PYTHONPATH=.:$PYTHONPATH kwta-robust ... (or install its package)")
    return "check the module path and PYTHONPATH"


def _import_root(path: Path) -> tuple[str, str]:
    """The folder to put on ``PYTHONPATH`` and the import name of the module file ``path`` (``.py`` or not): the
    folders above it that are packages (hold ``__init__.py``) go into its dotted name, ``mylab/models.py`` in a
    package ``mylab`` is ``mylab.models`` from ``.``, so its relative imports (``from .layers import TopK``) work;
    the hint had named ``models`` from ``mylab``, which imports it outside its package."""
    names, folder = [path.stem], path.parent
    while (folder / "__init__.py").is_file() and (absolute := Path(os.path.abspath(folder))).parent != absolute:
        names.insert(0, absolute.name)  # as written, not a symlink's target: the name Python imports it by
        folder = Path(os.path.normpath(folder / os.pardir))
    return (str(folder) if str(folder) not in ("", ".") else "."), ".".join(names)


def load_byo_model(
    factory: str,
    weights: str | Path | None = None,
    device: torch.device | str = "cpu",
    factory_kwargs: Mapping[str, Any] | None = None,
    allow_pickle: bool = False,
) -> LoadedModel:
    """Bring your own model: ``factory`` (``"package.module:function"``) builds an ``nn.Module`` that takes inputs
    in [0, 1] and returns logits; ``weights`` is a plain state_dict file (``torch.save(model.state_dict())``, read
    with ``weights_only=True``, or a safetensors file or sharded index, told by its content:
    :mod:`kwta_robust.safetensors_read`, its kind in the metadata's ``weights_format``, a safetensors file's
    ``__metadata__`` in ``weights_metadata``, capped: :func:`~kwta_robust.safetensors_read.recorded_metadata`; a
    kwta-robust checkpoint's state_dict works too, and the wrappers, ``module.`` prefixes and missing BatchNorm
    counters of other code bases are normalized by
    :func:`kwta_robust.foreign_weights.normalize_state_dict`, each change listed in the metadata; the scalar entries
    a training script saved beside the weights, ``acc`` and ``epoch``, in ``checkpoint_meta``:
    :func:`~kwta_robust.foreign_weights.checkpoint_entries`). A file that
    needs pickle (a training checkpoint holding NumPy scalars or an ``argparse.Namespace`` beside the weights, or a
    whole pickled module, whose ``state_dict`` is used) loads only with ``allow_pickle`` (``--allow-pickle``: it runs
    code from the file).
    """
    path = None if weights is None else check_path_type(weights, "weights")  # before the factory builds a model
    build = _import_factory(factory)
    if factory_kwargs is not None and not isinstance(factory_kwargs, Mapping):
        raise CheckpointError(f"model factory {factory!r}: factory_kwargs is {type(factory_kwargs).__name__}, not a "
                              "mapping of argument names to values; pass e.g. {'num_classes': 10} (--factory-kwargs "
                              "'{\"num_classes\": 10}')")
    kwargs = dict(factory_kwargs or {})
    model = call_factory(factory, build, kwargs)  # its arguments checked against its signature first
    if not isinstance(model, nn.Module):
        raise CheckpointError(f"model factory {factory!r}: returned {type(model).__name__}, expected an nn.Module")
    lazy = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if is_lazy(t)]
    if lazy:  # torch.nn.Lazy* modules: every shape, count and load of them fails with a traceback until a forward
        raise CheckpointError(f"model factory {factory!r}: {lazy[0]!r} is uninitialized (a torch.nn.Lazy* module); run "
                              "one forward on a dummy batch in the factory (model(torch.zeros(1, C, H, W))) before "
                              "returning the model")
    on_meta = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if on_meta:  # weights are not loaded into meta tensors (a warning only), and nothing can run on them
        raise CheckpointError(f"model factory {factory!r}: {on_meta[0]!r} is on the meta device (it holds no values); "
                              "build the model on the CPU (outside torch.device('meta')), or call "
                              "model.to_empty(device='cpu') in the factory and load its weights (--weights)")
    digest, source, read, entries = None, factory, None, {}
    notes: list[str] = []
    if path is not None:
        read = read_file(path, allow_pickle=allow_pickle, what="weights", safetensors=True)
        payload, digest = read.payload, read.sha256
        wrapped = next((k for k in WRAPPER_KEYS if isinstance(payload.get(k), nn.Module)), None) \
            if isinstance(payload, Mapping) else None  # {"model": net, "epoch": 3}
        if isinstance(payload, nn.Module):
            payload = payload.state_dict()
            notes.append("a pickled module: its state_dict")
        elif wrapped is not None:
            payload = {**payload, wrapped: payload[wrapped].state_dict()}
            notes.append(f"a pickled module under {wrapped!r}: its state_dict")
        if isinstance(payload, Mapping) and payload.get("format") == FORMAT:
            payload = payload.get("state_dict")
        entries = checkpoint_entries(payload)  # {'net': ..., 'acc': 91.2, 'epoch': 80}: the acc and epoch
        where = f"weights {path} (for {factory})"  # compare may load one file into two factories' models
        state, normalized = normalize_state_dict(payload, model, where)
        notes += normalized
        for note in notes:
            logger.info("weights %s: %s", path, note)
        _load_state(model, state, where, FACTORY_DIFFERS)
        source = f"{factory} + {path}"
    else:
        logger.warning("model factory %s: no weights file given (--weights, or =WEIGHTS in compare): evaluating the "
                       "parameters the factory returns, random unless it loads trained ones itself", factory)
    metadata = _plain_metadata(describe_model(model), "metadata")
    metadata.update({"model_factory": factory, "factory_kwargs": _plain_metadata(kwargs, "factory_kwargs"),
                     "weights": None if weights is None else str(weights), "weights_normalization": notes,
                     "weights_format": None if read is None else read.kind})
    if entries:  # the training script's entries beside the weights (kwta_robust.checkpoint_checks reads an accuracy)
        metadata["checkpoint_meta"] = entries
    if read is not None and read.shards:  # a sharded checkpoint's index: each shard's name, SHA-256, __metadata__
        metadata["weights_shards"] = read.shards
    if read is not None:  # a safetensors file's __metadata__ header, capped (none: no field)
        metadata.update({f"weights_{k}": v for k, v in recorded_metadata(read.metadata, f"weights {path}").items()})
    return LoadedModel(model.to(device).eval(), None, metadata, digest, source)
