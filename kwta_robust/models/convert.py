"""Swap activations in any ``nn.Module``: ReLU → kWTA (Xiao et al., ICLR 2020) and back (timm's ``convert_*``).

Works on models this package did not build (e.g. ``torchvision.models.resnet18``). kWTA layers need to know
whether they act on feature maps ``[N, C, H, W]`` (→ :class:`~kwta_robust.layers.KWTA2d`) or on features
``[N, F]`` (→ :class:`~kwta_robust.layers.KWTA`), and boosting needs the channel/feature count. Both are inferred:

* exactly, from the input shapes each activation sees in one forward pass of ``example_input`` (eval mode,
  no gradients; every module's train/eval flag is restored), or
* without an example, from the layer registered just before the activation (``Conv2d``/``BatchNorm2d`` →
  feature maps with ``out_channels``/``num_features`` channels; ``Linear``/``BatchNorm1d`` → features). This
  matches the usual ``conv → bn → act`` order of torchvision and timm models; pass ``example_input`` otherwise.

A module instance used at several places (torchvision's ``BasicBlock.relu``) is replaced by one new instance,
keeping the sharing.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from kwta_robust.errors import ConfigError
from kwta_robust.layers import KWTA, KWTA2d, ActivationSpec
from kwta_robust.models.registry import _activation_spec

logger = logging.getLogger(__name__)

_SPATIAL_SOURCES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.BatchNorm2d, nn.GroupNorm)
_DENSE_SOURCES: tuple[type[nn.Module], ...] = (nn.Linear, nn.BatchNorm1d, nn.LayerNorm)


def _targets(model: nn.Module, from_types: tuple[type, ...]) -> list[tuple[nn.Module, str, nn.Module]]:
    """``(parent, attribute, module)`` for every place a module of ``from_types`` is registered."""
    seen: set[tuple[int, str]] = set()
    out = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, from_types) and (id(parent), name) not in seen:
                seen.add((id(parent), name))
                out.append((parent, name, child))
    return out


def _shapes_from_example(model: nn.Module, modules: list[nn.Module], example_input: Tensor) -> dict[int, list[tuple]]:
    shapes: dict[int, list[tuple]] = {id(m): [] for m in modules}
    handles = [
        m.register_forward_pre_hook(lambda mod, args: shapes[id(mod)].append(tuple(args[0].shape))) for m in modules
    ]
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(example_input)
    finally:
        for handle in handles:
            handle.remove()
        for m, flag in flags:
            m.training = flag
    return shapes


def _shapes_from_structure(model: nn.Module, modules: list[nn.Module]) -> dict[int, list[tuple]]:
    """Shapes ``(None, C, 1, 1)``/``(None, F)`` guessed from the layer registered before each activation."""
    wanted = {id(m) for m in modules}
    shapes: dict[int, list[tuple]] = {}
    last: tuple | None = None
    for name, module in model.named_modules():
        if isinstance(module, _SPATIAL_SOURCES):
            channels = getattr(module, "out_channels", None) or getattr(module, "num_features", None)
            channels = channels or getattr(module, "num_channels", None)
            last = (None, int(channels), 1, 1)
        elif isinstance(module, _DENSE_SOURCES):
            features = getattr(module, "out_features", None) or getattr(module, "num_features", None)
            if features is None:  # LayerNorm
                features = math.prod(module.normalized_shape)  # type: ignore[attr-defined]
            last = (None, int(features))
        elif id(module) in wanted:
            if last is None:
                raise ConfigError(
                    f"convert_activations: cannot infer the input shape of {name!r} (no conv/linear layer before "
                    "it); pass example_input=<a batch of inputs>"
                )
            shapes[id(module)] = [last]
    return shapes


def _build(to: ActivationSpec, shapes: list[tuple], name: str) -> nn.Module:
    if to.name == "relu":
        return nn.ReLU()
    distinct = sorted(set(shapes), key=str)
    ndims = {len(s) for s in distinct}
    channels = {s[1] for s in distinct}
    if len(ndims) == 1 and (len(channels) == 1 or to.boost_strength == 0):
        shape = distinct[0]
        if len(shape) == 4:
            return to.spatial(shape[1])
        return to.dense(shape[1])
    if ndims == {2, 4} and to.mode == "volume" and to.boost_strength == 0:
        # A dense kWTA over the flattened sample equals the volume mode on feature maps.
        return to.dense(next(iter(channels)))
    raise ConfigError(
        f"convert_activations: the shared activation {name!r} sees inputs of different shapes {distinct}; "
        "use separate activation modules, mode 'volume' or no boosting"
    )


def convert_activations(
    model: nn.Module,
    to: ActivationSpec | Mapping[str, Any] | str,
    from_types: tuple[type[nn.Module], ...] | None = None,
    example_input: Tensor | None = None,
) -> nn.Module:
    """Replace every activation of a type in ``from_types`` by the activation ``to`` (in place; returns ``model``).

    ``from_types`` defaults to ``(nn.ReLU,)`` when converting to kWTA and to ``(KWTA, KWTA2d)`` when converting to
    ReLU. New modules are placed on the device of the model's parameters. If ``model`` itself is an activation of
    ``from_types`` the replacement is returned.
    """
    spec = _activation_spec(to)
    if from_types is None:
        from_types = (nn.ReLU,) if spec.name == "kwta" else (KWTA, KWTA2d)
    from_types = tuple(from_types)
    if isinstance(model, from_types):
        holder = nn.Sequential(model)
        convert_activations(holder, spec, from_types, example_input)
        return holder[0]
    targets = _targets(model, from_types)
    unique: dict[int, nn.Module] = {id(m): m for _, _, m in targets}
    names = {id(m): n for n, m in model.named_modules() if id(m) in unique}
    if spec.name == "relu" or not unique:
        shapes: dict[int, list[tuple]] = {key: [] for key in unique}
    elif example_input is not None:
        shapes = _shapes_from_example(model, list(unique.values()), example_input)
        unreached = [names[key] for key, found in shapes.items() if not found]
        if unreached:
            raise ConfigError(f"convert_activations: {unreached[0]!r} was not used in the forward pass of "
                              "example_input")
    else:
        shapes = _shapes_from_structure(model, list(unique.values()))
    reference = next(iter(model.parameters()), None)
    replacements = {}
    for key, old in unique.items():
        new = _build(spec, shapes[key], names.get(key, "?"))
        if reference is not None:
            new = new.to(reference.device)
        replacements[key] = new
    for parent, attribute, old in targets:
        setattr(parent, attribute, replacements[id(old)])
    logger.debug("converted %d activation module(s) to %s", len(replacements), spec.name)
    return model
