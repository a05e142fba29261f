"""The record an evaluation starts (:mod:`kwta_robust.evaluate`): what it measures on and the run's provenance.

Kept apart from the runner so that the runner's module holds the steps of a run; among its fields are those
:mod:`kwta_robust.resume` compares to decide whether a record on disk can be resumed (not the times or the command).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import platform
import sys
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from kwta_robust.data import REGISTRY, resolved_root
from kwta_robust.detect import GATE, POOL_GATE, Detection
from kwta_robust.diagnostics_base import detected_layers
from kwta_robust.errors import is_whole_number
from kwta_robust.eval_part import EvalPart
from kwta_robust.layer_text import inline_gate_layers, probe_ratio
from kwta_robust.plugins import plugin_provenance
from kwta_robust.relu_calls import activation_calls
from kwta_robust.results import SCHEMA_VERSION, Accuracy, EvalRecord, package_versions
from kwta_robust.runtime import determinism_settings, processor_name


#: ``model.activation`` of a model in which only the layer probe found top-k gates (:func:`probed_model`).
DETECTED_ACTIVATION = "top-k (detected)"
#: ``model.activation`` of a model with no activation layer the describer recognises, in which the layer probe found
#: no gate but saw ReLUs applied (``F.relu`` calls in ``forward``: :mod:`kwta_robust.relu_calls`).
DETECTED_RELU = "relu (detected)"
#: What marks an ``activation`` named from what one forward ran (:func:`ran_name`): ``gelu (detected)``,
#: ``mixed (detected: gelu 12, relu 1)``, ``none (detected)``, :data:`DETECTED_RELU`.
DETECTED_MARK = "(detected"


def is_ran_name(name: object) -> bool:
    """Whether ``name`` is an ``activation`` named from the activations one forward ran (:func:`ran_name`), not the
    describer's reading nor the probe's top-k gates (:data:`DETECTED_ACTIVATION`)."""
    return isinstance(name, str) and DETECTED_MARK in name and name != DETECTED_ACTIVATION


def ran_name(layers: str, relus: int, others: Mapping[str, int]) -> str | None:
    """The ``activation`` of a model with no kWTA layer and no gate whose describer read ``layers`` (``relu`` /
    ``none``) and one of whose forwards applied ``relus`` ReLUs and the ``others`` (other activations by kind):
    :data:`DETECTED_RELU` where ReLUs alone ran and the describer saw none; ``KIND (detected)`` where one other kind
    ran alone; ``mixed (detected: gelu 12, relu 1)`` (most calls first) where several kinds ran; ``none
    (detected)`` where the describer read ``relu`` (an ``nn.ReLU`` held) but no activation ran. ``None``: the
    describer's reading stands (ReLUs alone ran and it read ``relu``; nothing ran and it read ``none``)."""
    ran = {kind: int(n) for kind, n in {**others, "relu": relus}.items() if n}
    if not ran:
        return "none (detected)" if layers == "relu" else None
    if set(ran) == {"relu"}:
        return DETECTED_RELU if layers == "none" else None
    if len(ran) == 1:
        return f"{next(iter(ran))} (detected)"
    counts = sorted(ran.items(), key=lambda item: (-item[1], item[0]))
    return "mixed (detected: " + ", ".join(f"{kind} {n}" for kind, n in counts) + ")"


def utc_now() -> str:
    """The time now, UTC, to the second (ISO 8601): a record's ``started_at`` and ``finished_at``."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def data_folder(name: object, root: object) -> str | None:
    """The folder the registered set ``name`` is read from (``data_root`` ``root``, else ``$KWTA_ROBUST_DATA``, else
    the home cache: :func:`~kwta_robust.data.resolved_root`, absolute), the record's ``provenance.data_root``: with
    ``data_root: null`` it was recorded nowhere. ``None`` for a set not read from a folder (bundled, a data file).
    Provenance only: the config hash never names where the data sit."""
    info = REGISTRY.get(name) if isinstance(name, str) and name in REGISTRY else None
    return None if info is None or info.location is None else str(resolved_root(root))


def new_record(model: nn.Module, model_info: Mapping[str, Any], digest: str, data: Any, cfg: Any,
               part: EvalPart | None, device: torch.device, source_digests: Mapping[str, str],
               command: Sequence[str] | None) -> EvalRecord:
    """A partial record, no result yet, of ``model`` (state SHA-256 ``digest``; ``model_info`` merged in) on the
    selected samples ``data`` under ``cfg`` (``part``: a shard's part of it), on ``device``, with the transfer
    sources' digests and the ``command`` (default ``sys.argv``) as provenance."""
    described = dict(model_info)
    described["state_sha256"] = digest
    described.setdefault("label", described.get("name") or type(model).__name__)
    n = int(data.x.shape[0])
    dataset = {
        "name": data.name, "split": cfg.split, "num_classes": int(data.num_classes),
        "input_shape": list(data.x.shape[1:]), "n": n, "sample_seed": cfg.permutation_seed,
        "indices": [int(i) for i in data.indices.tolist()],
        "samples_sha256": data.values_sha256(),  # these values: resumed only if equal
        **({"sha256": data.sha256} if data.sha256 else {}),  # the API's x/y: resumed only if equal
    }
    dataset.update({"part": part.to_dict()} if part is not None else {})
    provenance = {
        "versions": package_versions(), "platform": platform.platform(), "device": str(device),
        "device_name": processor_name(device),  # CPU numbers are bit-identical on one kind of CPU only
        "determinism": determinism_settings(),  # torch's kernel switches (TF32, cuDNN): they move GPU numbers
        "seed": cfg.seed, "command": list(command) if command is not None else list(sys.argv),
        "transfer_sources": dict(source_digests), "started_at": utc_now(), "finished_at": None,
        "wall_time_s": 0.0, "plugins": plugin_provenance(),  # another distribution's names the run could use
    }
    folder = data_folder(cfg.dataset, cfg.data_root) if cfg.data_file is None and not data.sha256 else None
    provenance.update({"data_root": folder} if folder is not None else {})  # where the data were read
    return EvalRecord(
        schema_version=SCHEMA_VERSION, status="partial", model=described,
        dataset=dataset, clean=Accuracy.of(0, n), clean_flags=[], config=cfg.to_dict(),
        config_hash=cfg.config_hash(), mode=cfg.mode, provenance=provenance,
    )


def probed_model(record: EvalRecord, detection: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``record.model`` with what the layer probe (``record.detection``, else ``detection``: a shard's part, whose
    driver probed before the part's first write) found in a model of your own: where the describer recognised no
    kWTA layer (``activation`` ``relu`` or ``none``: :func:`kwta_robust.models.describe_model`) but the probe found
    top-k gates (modules, or gates built inline in a ``forward``), ``activation`` is :data:`DETECTED_ACTIVATION`, the
    describer's reading is kept as ``activation_layers``, and ``detected_kwta_ratio`` / ``detected_kwta_mode`` hold
    the gates' k/N and grouping where every gate agrees (else ``None``), so a kWTA model of one's own is not recorded
    as ``relu``; ``kwta_ratio`` stays the describer's (``None``: a matrix places such a record by its
    ``--grid-cell``). The describer's copy in ``training`` (a ``--model-factory`` model's loader metadata repeats
    its ``activation``) is named alike. The one place a record names such a model's activation: every record the
    runner writes, partial ones and a shard's parts included, goes through it, and a matrix reads a record written
    before through it. Where the describer found neither (``none``) and the probe no gate of any kind and no
    selection it could not read, but ReLUs applied (``F.relu`` in ``forward``), ``activation`` is
    :data:`DETECTED_RELU` and the describer's ``none`` is kept as ``activation_layers``. Every probed record's
    ``relu_calls`` is the probe's count of the ReLUs one forward applied, ``0`` included (none ran; a record without
    it was written before the probe counted them); ``num_relu_layers`` counts the ``nn.ReLU`` modules the model
    holds, called or not. Where the probe also counted the other activations (``other_activations``, by kind, the
    kinds that ran; copied to the model's section) and found no gate, the model is named from everything that ran
    (:func:`ran_name`: ``gelu (detected)``, ``mixed (detected: gelu 12, relu 1)``, ``tanh (detected)`` for an
    ``nn.ReLU`` held and never called), so only a model whose forward ran ReLUs alone is named ``relu``; a record
    without them is named as before. Any other model's section is returned unchanged; applying it again changes
    nothing (a resumed record)."""
    model = dict(record.model)
    layers = model.get("activation_layers", model.get("activation"))
    if not record.detection and detection:
        record = dataclasses.replace(record, detection=dict(detection))
    gates = detected_layers(record, "gate") + inline_gate_layers(record)
    relus = record.detection.get("relu_calls") if isinstance(record.detection, Mapping) else None
    others = record.detection.get("other_activations") if isinstance(record.detection, Mapping) else None
    model.update({"relu_calls": relus} if is_whole_number(relus, 0) else {})  # 0: counted, none ran
    others = dict(others) if isinstance(others, Mapping) and all(is_whole_number(n, 1) for n in others.values()) \
        else None  # None: a record written before they were counted
    model.update({"other_activations": others} if others is not None else {})
    if int(model.get("num_kwta_layers") or 0) > 0 or layers not in ("relu", "none"):
        return model
    if gates:
        groupings = {str(g.get("grouping")) for g in gates if g.get("grouping")}
        found = {"activation": DETECTED_ACTIVATION, "activation_layers": layers,
                 "detected_kwta_ratio": probe_ratio(record),
                 "detected_kwta_mode": groupings.pop() if len(groupings) == 1 else None}
    elif others is not None and is_whole_number(relus, 0) and not _unread(record):
        name = ran_name(layers, relus, others)
        if name is None:
            return model
        found = {"activation": name, "activation_layers": layers}
    elif layers == "none" and is_whole_number(model.get("relu_calls"), 1) and not _unread(record):
        found = {"activation": DETECTED_RELU, "activation_layers": layers}
    else:
        return model
    model.update(found)
    training = model.get("training")
    if isinstance(training, Mapping) and training.get("activation_layers", training.get("activation")) == layers:
        model["training"] = {**training, **found}  # the describer's reading copied there: named as the model
    return model


def count_relus(detection: dict[str, Any], model: nn.Module, x: torch.Tensor, seed: int) -> bool:
    """Add ``relu_calls`` and ``other_activations`` to a kept layer probe's ``detection`` (a record's, resumed) that
    lacks them, as :func:`~kwta_robust.detect.detect_layers` counts them: one forward of ``model`` on the probe's
    inputs ``x`` with ``seed``, outside the gates, max-pool gates and BPDA-capable modules it names
    (:mod:`kwta_robust.relu_calls`). A record written before the probe counted them is then named from what runs
    (:func:`probed_model`: e.g. ``relu (detected)``, not the describer's ``none``): its description, no result.
    Whether it counted."""
    if not detection or "relu_calls" in detection and "other_activations" in detection:
        return False
    found = Detection.from_dict(dict(detection))
    detection["relu_calls"], detection["other_activations"] = activation_calls(
        model, x, [*found.names(GATE), *found.names(POOL_GATE), *found.bpda_capable], seed)
    return True


def _unread(record: EvalRecord) -> bool:
    """Whether the layer probe found a max-pool winner-take-all gate, or noted a selection (``topk``, ``sort``, a
    constant count of non-zero values) it could not read as a gate: a model not to be named :data:`DETECTED_RELU`."""
    selections = record.detection.get("selections") or []
    return bool(detected_layers(record, "max-pool-gate")) or any(
        isinstance(s, Mapping) and s.get("kind") in ("selection", "sparsity") for s in selections)
