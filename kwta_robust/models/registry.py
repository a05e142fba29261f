"""Model registry, factory and the self-describing :class:`ModelSpec` (timm's ``@register_model`` / ``create_model``).

Every architecture is a factory registered by name with :func:`register_model`. A factory receives

* ``activation``: an :class:`~kwta_robust.layers.ActivationSpec` — the architecture builds each activation with
  ``activation.dense(num_features)`` or ``activation.spatial(channels)``, so every architecture has a kWTA and a
  ReLU twin (Xiao et al., ICLR 2020, replace every ReLU by kWTA);
* ``num_classes``, ``in_channels``, ``input_size`` (square inputs ``[N, in_channels, input_size, input_size]``);
* ``mean`` / ``std``: per-channel normalization held *inside* the model (:class:`Normalize`), so models take inputs
  in ``[0, 1]`` and return logits ``[N, num_classes]``;
* its own keyword arguments (widths, depth, ...).

:class:`ModelSpec` records the registry name and the exact constructor arguments as plain data (the activation as a
dict), which is what a checkpoint stores to rebuild the model with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from attacks.errors import keyword_names, unknown_names
from kwta_robust.errors import ConfigError, is_whole_number
from kwta_robust.factory_args import annotation_mismatch
from kwta_robust.layers import ActivationSpec
from kwta_robust.registry import Registry, RegistryError

ModelFactory = Callable[..., nn.Module]

#: Arguments every factory takes (and :func:`create_model` supplies); the rest are architecture specific.
COMMON_ARGS: tuple[str, ...] = ("activation", "num_classes", "in_channels", "input_size", "mean", "std")


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, with ``mean``/``std`` held in buffers (saved in the state_dict).

    ``x``: ``[N, C, ...]`` with ``C == len(mean)``. ``mean=None``/``std=None`` mean 0 and 1 (identity).
    ``persistent=False`` keeps the buffers out of the state_dict (for architectures whose released checkpoints
    have no normalization entries, see :mod:`kwta_robust.zoo`).
    """

    def __init__(self, channels: int, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 persistent: bool = True) -> None:
        super().__init__()
        try:
            mean_t = torch.zeros(channels) if mean is None else torch.as_tensor(list(mean), dtype=torch.float32)
            std_t = torch.ones(channels) if std is None else torch.as_tensor(list(std), dtype=torch.float32)
        except (TypeError, ValueError):  # a bare number or non-numbers: reported as a per-channel mismatch below
            mean_t = std_t = torch.empty(0)
        if mean_t.shape != (channels,) or std_t.shape != (channels,):
            raise ConfigError(
                f"model: mean/std need one value per input channel ({channels}), got mean={mean!r}, std={std!r}"
            )
        if not bool((std_t > 0).all()):
            raise ConfigError(f"model: std values must be > 0, got {std!r}")
        self.register_buffer("mean", mean_t.view(1, channels, 1, 1), persistent=persistent)
        self.register_buffer("std", std_t.view(1, channels, 1, 1), persistent=persistent)

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return (x - self.mean.view(shape)) / self.std.view(shape)

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def _check_factory(name: str, factory: ModelFactory) -> None:
    params = inspect.signature(factory).parameters
    missing = [arg for arg in COMMON_ARGS if arg not in params]
    if missing:
        raise RegistryError("arch", f"architecture {name!r}: its factory must accept {', '.join(missing)} "
                                    f"(create_model passes {', '.join(COMMON_ARGS)})")


#: Architectures by name (a generic :class:`~kwta_robust.registry.Registry` of factories); the first lookup imports
#: every module of :mod:`kwta_robust.models` and :mod:`kwta_robust.zoo`, whose factories register themselves.
REGISTRY: Registry[ModelFactory] = Registry("architecture", field="arch",
                                            plugins=("kwta_robust.models", "kwta_robust.zoo"), check=_check_factory,
                                            entry_point_group="kwta_robust.architectures")


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator adding an architecture factory to the registry under ``name``."""
    return REGISTRY.register(name)


def available_models() -> list[str]:
    """Registered architecture names."""
    return REGISTRY.names()


def holds_one_value(value: Any) -> bool:
    """Whether ``value`` is a tensor or a NumPy scalar/array holding exactly one value, read as a Python number with
    ``value.item()`` (a larger array is not plain data)."""
    if isinstance(value, Tensor):
        return value.numel() == 1
    return callable(getattr(value, "item", None)) and getattr(value, "size", 1) == 1


def _plain(value: Any, where: str) -> Any:
    """Deep copy of ``value`` as plain data (dict/list/str/int/float/bool/None) for specs and checkpoints."""
    if isinstance(value, ActivationSpec):
        return value.to_dict()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if holds_one_value(value):
        return value.item()
    raise ConfigError(f"model: argument {where} must be plain data (numbers, strings, lists), got "
                      f"{type(value).__name__}")


def _activation_spec(activation: ActivationSpec | Mapping[str, Any] | str) -> ActivationSpec:
    if isinstance(activation, ActivationSpec):
        return activation
    try:
        if isinstance(activation, str):
            return ActivationSpec(name=activation)  # type: ignore[arg-type]
        if isinstance(activation, Mapping):
            return ActivationSpec.from_dict(dict(activation))
    except TypeError as exc:
        valid = [f.name for f in dataclasses.fields(ActivationSpec)]
        unknown = sorted(str(k) for k in activation if k not in valid) if isinstance(activation, Mapping) else []
        if unknown:
            raise ConfigError(f"activation: unknown field {unknown[0]!r}; valid fields: {', '.join(valid)}") from None
        raise ConfigError(f"activation: invalid fields {sorted(activation)}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    raise ConfigError(f"activation: expected 'relu', 'kwta', a mapping or an ActivationSpec, got {activation!r}")


@dataclass(frozen=True)
class ModelSpec:
    """Registry name + the exact constructor arguments, as plain data (rebuilds the model anywhere).

    ``kwargs`` holds ``activation`` (a dict, see :meth:`ActivationSpec.to_dict`), ``num_classes``,
    ``in_channels``, ``input_size``, ``mean``, ``std`` and the architecture's own arguments.
    """

    arch: str
    kwargs: dict = field(default_factory=dict)

    @classmethod
    def from_args(
        cls,
        name: str,
        activation: ActivationSpec | Mapping[str, Any] | str = "relu",
        num_classes: int = 10,
        in_channels: int = 1,
        input_size: int = 28,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        **kw: Any,
    ) -> "ModelSpec":
        """Validate and normalize :func:`create_model` arguments into a spec (unknown arguments → ConfigError)."""
        factory = REGISTRY.get(name)
        unknown = unknown_names(factory, kw)  # the check every factory's and attack's arguments share
        if unknown:
            own = [p for p in keyword_names(factory) or () if p not in COMMON_ARGS]
            raise ConfigError(f"arch {name!r}: unknown argument {unknown[0]!r}; accepted: {', '.join(own) or 'none'}")
        for key, value in (("num_classes", num_classes), ("in_channels", in_channels), ("input_size", input_size)):
            if not is_whole_number(value, 1):
                raise ConfigError(f"model: {key} must be an integer >= 1, got {value!r}")
        kwargs = {
            "activation": _activation_spec(activation).to_dict(),
            "num_classes": num_classes,
            "in_channels": in_channels,
            "input_size": input_size,
            "mean": _plain(mean, "mean"),
            "std": _plain(std, "std"),
        }
        kwargs.update({key: _plain(value, key) for key, value in kw.items()})
        wrong = annotation_mismatch(factory, {key: kwargs[key] for key in kw})  # the factories cast: hidden [8.5]
        if wrong is not None:  # built 8 units, batch_norm 'no' a BatchNorm
            raise ConfigError(f"arch {name!r}: {wrong[1]}; pass a value of that type")
        return cls(arch=name, kwargs=kwargs)

    def build(self) -> nn.Module:
        """Construct the model (freshly initialized; load a state_dict to restore weights)."""
        factory = REGISTRY.get(self.arch)
        kwargs = copy.deepcopy(self.kwargs)
        kwargs["activation"] = _activation_spec(kwargs.get("activation", "relu"))
        return factory(**kwargs)

    def with_activation(self, activation: ActivationSpec | Mapping[str, Any] | str) -> "ModelSpec":
        """Same spec with another activation (e.g. a new kWTA ratio after incremental fine-tuning)."""
        kwargs = copy.deepcopy(self.kwargs)
        kwargs["activation"] = _activation_spec(activation).to_dict()
        return ModelSpec(self.arch, kwargs)

    @property
    def activation(self) -> ActivationSpec:
        return _activation_spec(self.kwargs.get("activation", "relu"))

    def to_dict(self) -> dict:
        return {"arch": self.arch, "kwargs": copy.deepcopy(self.kwargs)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelSpec":
        if not isinstance(data, Mapping) or set(data) != {"arch", "kwargs"} or not isinstance(data["kwargs"], Mapping):
            raise ConfigError(f"model_spec: expected a mapping with keys 'arch' and 'kwargs', got {data!r:.200}")
        return cls(arch=str(data["arch"]), kwargs=copy.deepcopy(dict(data["kwargs"])))


def create_model(
    name: str,
    activation: ActivationSpec | Mapping[str, Any] | str = "relu",
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: int = 28,
    **kw: Any,
) -> nn.Module:
    """Build the registered architecture ``name`` with the given activation (``"relu"``, ``"kwta"`` needs a ratio:
    pass an :class:`ActivationSpec` or a dict like ``{"name": "kwta", "ratio": 0.1, "mode": "volume"}``).

    ``kw`` may hold ``mean``/``std`` (normalization inside the model) and architecture arguments. The model takes
    ``[N, in_channels, input_size, input_size]`` inputs in ``[0, 1]`` and returns logits ``[N, num_classes]``.
    """
    return ModelSpec.from_args(
        name, activation=activation, num_classes=num_classes, in_channels=in_channels, input_size=input_size, **kw
    ).build()
