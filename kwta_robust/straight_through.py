"""Modules named in ``bpda_layers`` that BPDA can only pass the gradient straight through, found before any attack.

BPDA replaces a layer ``f``'s backward by that of an approximation ``g`` with ``g(x) ≈ f(x)`` (Athalye, Carlini &
Wagner, ICML 2018, §4.1). On a module the layer probe did not classify — one the user named in ``bpda_layers``,
e.g. as the ``selections-outside-layers`` flag advises — the smooth surrogate relaxes each call whose output is a
top-k gate of its input (:func:`attacks.gates.read_gate`) and passes the gradient straight through (``g(x) = x``)
on the others; the identity surrogate passes it straight through on every call. Straight-through is the standard
approximation of a module whose output is its input masked (a gate whose winner count varies: a ReLU before the
top-k), but for a module that maps its input first — a linear layer and its top-k in one module, a block around a
convolution — it skips that map: the gradient is wrong, not just coarse, and the attack's numbers are loose upper
bounds while every flag about the selection inside is cleared by BPDA having "acted" on it.

:func:`straight_through_layers` runs the model once on the probe inputs with a hook on each such module and records,
per module, ``module_class``, ``calls`` (forward calls), ``relaxed_calls`` (those the smooth surrogate relaxes),
``masks_input`` (every call's output is its input times a 0/1 mask), ``keeps_elements`` (every call's output has
its input's elements, maybe flattened) and ``parameters`` (its own, recursively); the runner keeps it in
``record.detection["straight_through"]`` and the ``bpda-straight-through`` check reads it. A module BPDA cannot act
through — one that does not map one positional tensor to one tensor (returns a tuple, is called with keyword
arguments), or, for every surrogate but ``model``, one that changes its input's number of elements — is a one-line
:class:`~kwta_robust.errors.ConfigError` before the first attack, not a failure after the others ran (and, through
:mod:`kwta_robust.bpda_preflight`, before the clean pass and before any file is written).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from attacks.base import eval_mode, rng_scope
from attacks.bpda_protocol import SupportsSurrogateBackward
from attacks.bpda_wrap import LayerTarget
from attacks.gates import MIN_MASK_AGREEMENT, mask_agreement, read_gate
from kwta_robust.detect import as_input_shape, unrelaxed_pool_gates
from kwta_robust.errors import ConfigError
from kwta_robust.selection_entries import held_by, where_called


#: A BPDA use: the attack's surrogate (``smooth``, ``identity``, ``learned``, ``model``) and its resolved layers.
Use = tuple[str, Mapping[str, LayerTarget]]


def unclassified_targets(model: nn.Module, uses: Sequence[Use]) -> list[str]:
    """The modules some BPDA attack acts on (``uses``) that the layer probe did not classify (``kind == "module"``)
    and that do not implement the surrogate protocol themselves, in model order."""
    modules = dict(model.named_modules())
    names = {name for _, layers in uses for name, target in layers.items()
             if LayerTarget.of(target).kind == "module"
             and not isinstance(modules.get(name), SupportsSurrogateBackward)}
    return [name for name in modules if name in names]


def straight_through_layers(model: nn.Module, x: Tensor, names: list[str], seed: int,
                            fields: Mapping[str, str] = MappingProxyType({})) -> dict[str, dict[str, Any]]:
    """Per module of ``names``, how BPDA's surrogates meet its calls in one forward of ``model`` on ``x``
    ``[B, ...]`` (eval mode, no gradients, global RNG seeded with ``seed`` and restored): ``{"module_class", "calls",
    "relaxed_calls", "masks_input", "keeps_elements", "parameters"}`` (see the module docstring). Every hook is
    removed after; the model is left as it was. A refusal names the config field that named the module (``fields``,
    by module name; default ``bpda_layers``)."""
    modules = dict(model.named_modules())
    found = {name: {"module_class": type(modules[name]).__name__, "calls": 0, "relaxed_calls": 0, "masks_input": True,
                    "keeps_elements": True, "parameters": sum(p.numel() for p in modules[name].parameters())}
             for name in names}
    refused: list[tuple[str, str]] = []

    def watch(name: str) -> Any:
        def after(module: nn.Module, args: tuple, output: Any) -> None:
            entry = found[name]
            entry["calls"] += 1
            if len(args) != 1 or not isinstance(args[0], Tensor) or not isinstance(output, Tensor):
                one_input = len(args) == 1 and isinstance(args[0], Tensor)
                what = f"returns a {type(output).__name__}" if one_input else "is called with keyword arguments or " \
                    "several inputs"
                refused.append((name, f"{name!r} ({type(module).__name__}) {what}"))
                return
            x_in = args[0]
            output = as_input_shape(x_in, output)  # a gate that flattens its input: BPDA reads it in that shape
            entry["keeps_elements"] &= output.shape == x_in.shape
            entry["relaxed_calls"] += read_gate(x_in, output) is not None
            entry["masks_input"] &= mask_agreement(x_in, output) >= MIN_MASK_AGREEMENT
        return after

    handles = [modules[name].register_forward_hook(watch(name)) for name in names]
    try:
        with eval_mode(model), rng_scope(seed), torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    if refused:
        where, what = fields.get(refused[0][0], "bpda_layers"), refused[0][1]
        raise ConfigError(f"{where}: module {what}, not one tensor in and one out, so BPDA cannot replace "
                          "its backward; name the module that computes the input times its mask, or move that "
                          "computation into a module of its own called with the tensor as its one argument")
    return found


def check_inline_gates(detection: Mapping[str, Any] | None, uses: Sequence[Use], wheres: Sequence[str]) -> None:
    """A one-line ConfigError naming the field (``wheres``, per use) where a BPDA use other than the ``model``
    surrogate (which distils the whole model) acts on no module around a top-k gate built inline (a selection with
    ``gate`` in ``detection["selections"]``): its 0/1 mask would cut the gradient while BPDA ran, and the number
    would read as a BPDA result; naming the module (or ``auto``) relaxes it (:mod:`attacks.inline_gates`). A gate
    inline in the model's own ``forward`` is relaxed by acting on the model itself (``""``, which ``auto`` does), but
    not by the ``learned`` surrogate, which would fit one map to the whole model's backward: that is refused too.
    A gate inline in a max-pool gate BPDA cannot relax (:func:`~kwta_robust.detect.unrelaxed_pool_gates`), which
    ``auto`` leaves out and the flags name, is not refused."""
    pooled = unrelaxed_pool_gates(detection or {})
    inline = [s for s in (detection or {}).get("selections", []) if s.get("gate") and s.get("modules")
              and s["modules"][-1] not in pooled]
    for (surrogate, layers), where in zip(uses, wheres):
        root = [s for s in inline if s["modules"] == [""] and "" in layers]
        if surrogate == "learned" and root:
            raise ConfigError(f"{where}: BPDA's learned surrogate would replace the whole model's backward to "
                              f"relax the top-k gate built inline ({where_called(root[0])}); use bpda surrogate: "
                              "smooth or identity, which relax that gate alone, or model, gradient estimation or "
                              "square")
        missed = [s for s in inline if surrogate != "model" and not held_by(layers, s)]
        if missed:
            inner = missed[0]["modules"][-1]
            shown = repr(inner) if inner else "auto"
            raise ConfigError(f"{where}: the model builds a top-k gate inline ({where_called(missed[0])}) that BPDA "
                              f"would leave in place, its 0/1 mask cutting the gradient; add {shown}"
                              f"{' (or auto)' if inner else ''} to {where}, which relaxes the gate there, or use bpda "
                              "surrogate: model, gradient estimation or square")


def note_straight_through(detection: dict[str, Any], model: nn.Module, x: Tensor, uses: Sequence[Use],
                          seed: int, fields: Sequence[str] = ()) -> bool:
    """Add :func:`straight_through_layers` of the unclassified modules in ``uses`` that ``detection`` (the record's
    layer probe, changed in place under ``"straight_through"``) lacks; whether it added any (a sharded run's parts
    take the driver's, a resumed run keeps its own). A module whose output does not keep its input's elements,
    acted on by a surrogate other than ``model`` (which distils the whole model), is a one-line ConfigError: the
    attack would stop at its first gradient. ``fields``: per use, the config field that chose its layers (a refusal
    names it; ``bpda_layers`` for uses beyond them)."""
    wheres = [fields[i] if i < len(fields) else "bpda_layers" for i in range(len(uses))]
    check_inline_gates(detection, uses, wheres)
    field_of = {name: where for (_, layers), where in reversed(list(zip(uses, wheres))) for name in layers}
    known = (detection or {}).get("straight_through") or {}
    names = unclassified_targets(model, uses)
    missing = [name for name in names if name not in known]
    if missing:
        known = detection["straight_through"] = {**known, **straight_through_layers(model, x, missing, seed, field_of)}
    for (surrogate, layers), where in zip(uses, wheres):
        resized = [name for name in layers if not known.get(name, {}).get("keeps_elements", True)]
        if resized and surrogate != "model":
            entry = known[resized[0]]
            raise ConfigError(f"{where}: module {resized[0]!r} ({entry['module_class']}) changes the number of "
                              f"elements of its input, and BPDA's {surrogate} surrogate needs an output shaped like "
                              "its input (or a top-k gate that flattens it); name the module holding the selection "
                              "alone, or use bpda surrogate: model, gradient estimation or square")
    return bool(missing)
