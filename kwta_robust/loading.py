"""Model and data for an evaluation, shared by ``evaluate``, ``compare``, ``quickstart`` and the sweep's cells.

* :func:`load_model` — a checkpoint written by ``kwta-robust train`` (``torch.load(weights_only=True)``; pickled
  code only with ``allow_pickle``) or a bring-your-own factory ``package.module:function`` with a plain
  ``state_dict`` (:mod:`kwta_robust.checkpoint`), on ``device``, described for the record (:class:`ModelForEval`);
* :func:`load_eval_data` — the config's split, with the checkpoint's ``data_split_seed`` for self-split sets
  (mnist5k, digits) so test samples never overlap the model's training split, or the config's data file.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from torch import nn

from kwta_robust.checkpoint import load_byo_model, load_checkpoint
from kwta_robust.comparability import data_split_seed
from kwta_robust.config import EvalConfig
from kwta_robust.data import CANONICAL_SPLIT_SEED, TensorData, load_dataset
from kwta_robust.data_root import check_data_root_used
from kwta_robust.datafile import pin_data_file, pinned_eval_data
from kwta_robust.errors import ConfigError, FactoryArgumentError
from kwta_robust.models import ModelSpec, describe_model
from kwta_robust.snapshot import source_digest
from kwta_robust.training.loop import unkept_invariants

logger = logging.getLogger(__name__)


#: ``package.module:function``, optionally ``=WEIGHTS``: how ``compare`` names a model of your own.
_FACTORY_ARGUMENT = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*)(?:=(.+))?$")


@dataclass(frozen=True)
class ModelArgument:
    """One model on a command line that takes several (``compare``): a checkpoint file, or your own model written
    ``package.module:function=WEIGHTS`` (the factory and its plain state_dict, as ``--model-factory`` and
    ``--weights`` give them to ``evaluate``; without ``=WEIGHTS`` the factory's own parameters)."""

    checkpoint: str | None = None
    model_factory: str | None = None
    weights: str | None = None

    @classmethod
    def parse(cls, text: str) -> "ModelArgument":
        """``text`` as a checkpoint path or ``package.module:function[=WEIGHTS]``; a factory with nothing after its
        ``=`` (a shell variable that was empty) is one line (it was looked up as a checkpoint file of that name)."""
        found = _FACTORY_ARGUMENT.match(text)
        if found is None and text.endswith("=") and _FACTORY_ARGUMENT.match(text[:-1]) and not Path(text).exists():
            raise ConfigError(f"MODEL {text!r}: no weights file after '='; write {text}WEIGHTS (the factory's plain "
                              f"state_dict), or {text[:-1]} alone for the parameters the factory returns")
        if found is None or Path(text).exists():
            return cls(checkpoint=text)
        return cls(model_factory=found.group(1), weights=found.group(2))

    @property
    def name(self) -> str:
        """What its default label is made from: the checkpoint's or weights' path, else the factory's function."""
        if self.checkpoint is not None:
            return self.checkpoint
        return self.weights if self.weights else str(self.model_factory).rsplit(":", 1)[-1]


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from, as plain data with absolute paths (the arguments of :func:`load_model`), so
    another process or machine can load it again (:mod:`kwta_robust.shards`); paths must name the same files
    there."""

    checkpoint: str | None = None
    model_factory: str | None = None
    weights: str | None = None
    factory_kwargs: dict | None = None
    allow_pickle: bool = False
    label: str | None = None

    def load(self, device: Any) -> "ModelForEval":
        return load_model(self.checkpoint, device, allow_pickle=self.allow_pickle, model_factory=self.model_factory,
                          weights=self.weights, factory_kwargs=self.factory_kwargs, label=self.label)


@dataclass
class ModelForEval:
    """A loaded model with the description that goes into the record (``info``), the name it carries in tables
    (``label``), its checkpoint metadata (``metadata``: training set, split seed, ...) and how to load it again
    (``source``)."""

    model: nn.Module
    info: dict
    label: str
    metadata: dict
    source: ModelSource | None = None


def load_model(checkpoint: str | None, device: Any, *, allow_pickle: bool = False, model_factory: str | None = None,
               weights: str | None = None, factory_kwargs: dict | None = None,
               label: str | None = None) -> ModelForEval:
    """Load a checkpoint or a bring-your-own model on ``device`` and describe it for the record. The paths' types
    are checked where they are read (:func:`load_checkpoint`, :func:`load_byo_model`), once."""
    if checkpoint is not None and model_factory is not None and weights is None:
        raise ConfigError(f"CHECKPOINT {checkpoint} with --model-factory: a factory's weights go in --weights "
                          f"(--model-factory {model_factory} --weights {checkpoint}); a CHECKPOINT alone is a "
                          "kwta-robust checkpoint")
    if (checkpoint is None) == (model_factory is None):
        raise ConfigError("give either a CHECKPOINT or --model-factory package.module:function (with --weights)")
    if weights is not None and model_factory is None:
        raise ConfigError("--weights: only used with --model-factory; a checkpoint already holds its weights")
    if factory_kwargs is not None and model_factory is None:
        raise ConfigError("--factory-kwargs: only used with --model-factory; a checkpoint rebuilds its model from its "
                          "own spec (drop the option)")
    if checkpoint is not None:
        loaded = load_checkpoint(checkpoint, device=device, allow_pickle=allow_pickle)
        source = str(Path(checkpoint).resolve())
        unkept = unkept_invariants(loaded.model, loaded.metadata) if "training" in loaded.metadata else []
        if unkept:  # trained here before the loop kept nupic.torch's invariants (its own models need none)
            logger.warning("%s was trained by kwta-robust before its training loop called %s: its SparseWeights "
                           "layers may be dense and its boosting at its initial strength; train it again to evaluate "
                           "the model its recipe describes", checkpoint, " and ".join(f"{n}()" for n in unkept))
        default_label = Path(checkpoint).stem
    else:
        # the weights' path absolute, as the shards' workers get it: the same record either way
        loaded = load_byo_model(model_factory, _absolute(weights), device=device, factory_kwargs=factory_kwargs,
                                allow_pickle=allow_pickle)
        source = loaded.source
        default_label = Path(weights).stem if weights else model_factory.rsplit(":", 1)[-1]
    info = model_info(loaded.model, label or default_label, source, spec=loaded.spec, sha256=loaded.sha256,
                      training={k: v for k, v in loaded.metadata.items() if k not in ("versions",)})
    if model_factory is not None:  # your own code: a resumed run must be the same code, not only the same weights
        info["model_source_sha256"] = source_digest(loaded.model, [model_factory.partition(":")[0]])
    elif loaded.spec is None:  # a whole pickled module: unpickling imports its classes' code, your code as well
        info["model_source_sha256"] = source_digest(loaded.model)
    again = ModelSource(_absolute(checkpoint), model_factory, _absolute(weights), factory_kwargs, allow_pickle,
                        info["label"])
    return ModelForEval(loaded.model, info, info["label"], dict(loaded.metadata), again)


def load_models(given: Sequence[ModelArgument], labels: Sequence[str], device: Any, *, allow_pickle: bool = False,
                factory_kwargs: dict | None = None, per_model: Mapping[str, dict] | None = None) -> list[ModelForEval]:
    """:func:`load_model` for each model of ``compare`` (``labels``: one per model), ``factory_kwargs`` given to
    every ``package.module:function`` model but those ``per_model`` (label → arguments: ``--factory-kwargs
    LABEL=JSON``) gives their own. Where two or more are factories, a factory refusing the shared arguments
    (:class:`FactoryArgumentError`) is told as ``MODEL n (label)``, with the fix: its own arguments by its label."""
    own = dict(per_model or {})
    factories = sum(1 for m in given if m.model_factory)
    models = []
    for position, (m, label) in enumerate(zip(given, labels), start=1):
        kwargs = own.get(label, factory_kwargs) if m.model_factory else None
        try:
            models.append(load_model(m.checkpoint, device, allow_pickle=allow_pickle, model_factory=m.model_factory,
                                     weights=m.weights, factory_kwargs=kwargs, label=label))
        except FactoryArgumentError as exc:
            if label in own:
                raise FactoryArgumentError(f"MODEL {position} ({label}): {exc}") from None
            if factories < 2:
                raise
            raise FactoryArgumentError(
                f"MODEL {position} ({label}): {exc}; compare passes the same --factory-kwargs to all {factories} "
                "package.module:function models but those given their own by label: give this one its own, "
                f"--factory-kwargs '{label}={{...}}' (its label, '=', a JSON object; '{label}={{}}' for none), or "
                "give the factories the same arguments") from None
    return models


def model_info(model: nn.Module, label: str, source: str, *, spec: ModelSpec | None = None, sha256: str | None = None,
               training: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a record says about the evaluated ``model`` (``record.model``): :func:`describe_model`'s summary (layers,
    sparsity), its ``label``, architecture (``spec``'s, else the class name), ``spec`` (a kwta-robust checkpoint's),
    the checkpoint's ``sha256``, where it came from (``source``), its training metadata and ``parameter_dtypes``
    (the floating-point dtypes of its parameters as evaluated, e.g. ``["float16"]``)."""
    info = describe_model(model)
    info.update({
        "label": label,
        "architecture": spec.arch if spec is not None else type(model).__name__,
        "spec": spec.to_dict() if spec is not None else None,
        "checkpoint_sha256": sha256,
        "source": source,
        "training": dict(training or {}),
        # the precision it is evaluated in (a float16 checkpoint loaded into a float32 model is float32 here)
        "parameter_dtypes": sorted({str(t.dtype).removeprefix("torch.") for t in model.parameters()
                                    if t.is_floating_point()}),
    })
    return info


def _absolute(path: str | None) -> str | None:
    """``path`` made absolute; a value of another type is passed on as it is, for the loader's one-line error."""
    if isinstance(path, str) or (isinstance(path, os.PathLike) and isinstance(os.fspath(path), str)):
        return str(Path(path).absolute())
    return path


def load_eval_data(cfg: EvalConfig, metadata: dict | None = None, models: Sequence[nn.Module] = ()) -> TensorData:
    """The configured split; for self-split sets (mnist5k, digits) the checkpoint's ``data_split_seed`` is used so
    test samples never overlap the model's training split. A data file (``dataset: {file: ...}``) takes its
    number of classes from ``models``."""
    return load_pinned_eval_data(cfg, metadata, models)[0]


def load_pinned_eval_data(cfg: EvalConfig, metadata: dict | None = None,
                          models: Sequence[nn.Module] = ()) -> tuple[TensorData, EvalConfig]:
    """:func:`load_eval_data` and ``cfg`` with its data file's SHA-256 filled in from the same read
    (:func:`~kwta_robust.datafile.pin_data_file` without reading the file a second time); other data: ``cfg``."""
    if cfg.data_file is not None:
        data, digest = pinned_eval_data(cfg.data_file, models)
        return data, pin_data_file(cfg, digest)
    metadata = metadata or {}
    trained_on = metadata.get("dataset")
    if isinstance(trained_on, dict):
        trained_on = trained_on.get("name")
    if isinstance(trained_on, str) and trained_on != cfg.dataset:
        logger.warning("the model was trained on %s but the config evaluates on %s", trained_on, cfg.dataset)
    split_seed = data_split_seed(metadata.get("data_split_seed", CANONICAL_SPLIT_SEED))
    check_data_root_used(cfg.dataset, cfg.data_root)  # a config file's or the API's data_root (misc53)
    return load_dataset(cfg.dataset, cfg.split, root=cfg.data_root, seed=split_seed), cfg
