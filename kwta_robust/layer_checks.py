"""The checks of :mod:`kwta_robust.layers`' settings and inputs: each failure is one :class:`ConfigError` line naming
the setting (or the input's shape or dtype) and what it must be. Cheap enough for every forward pass (a few Python
comparisons; the selection itself takes microseconds to milliseconds)."""

from __future__ import annotations

import operator
from typing import Any

import torch

from kwta_robust.errors import ConfigError, is_finite_number, is_whole_number

MODES: tuple[str, ...] = ("dense", "volume", "channel", "local")


def whole_k(k: Any, below_one: str = "must be >= 1") -> int:
    """``k`` as a Python int: an integer (Python, NumPy or a one-element integer tensor) or an integral float, at
    least 1 (else ``kWTA k {below_one}, got {k}``); a bool, a fraction, NaN, infinity or anything else is one line
    naming ``k``."""
    value = None
    if isinstance(k, float):
        value = int(k) if k.is_integer() else None
    elif not isinstance(k, bool):
        try:
            value = operator.index(k)
        except (TypeError, RuntimeError):  # not an integer (a tensor of several elements: RuntimeError)
            value = None
    if value is None:
        raise ConfigError(f"kWTA k must be an integer >= 1, got {k!r}")
    if value < 1:
        raise ConfigError(f"kWTA k {below_one}, got {value}")
    return value


def check_mode(mode: Any, shape: tuple[int, ...]) -> None:
    """``mode`` is one of :data:`MODES` and ``shape`` fits it: ``[N, ...]`` (dense) or ``[N, C, H, W]``."""
    if not isinstance(mode, str) or mode not in MODES:
        raise ConfigError(f"kWTA mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "dense" and len(shape) < 2:
        raise ConfigError(f"kWTA mode 'dense' expects a batch [N, F], got shape {tuple(shape)}")
    if mode != "dense" and len(shape) != 4:
        raise ConfigError(f"kWTA mode {mode!r} expects [N, C, H, W] inputs, got shape {tuple(shape)}")


def check_scores(scores: torch.Tensor, size: int, mode: str) -> None:
    """The scores are floating-point and their groups hold at least one unit."""
    if not scores.is_floating_point():
        raise ConfigError(f"kWTA input must be a floating-point tensor, got dtype {scores.dtype}; "
                          f"convert it with .float()")
    if size == 0:
        raise ConfigError(f"kWTA input of shape {tuple(scores.shape)} has empty groups in mode {mode!r} "
                          f"(no units compete); give each group at least one unit")


def check_temperature(temperature: Any) -> float:
    """A temperature ``> 0`` (infinity included) as a float; NaN, a bool, ``None`` or text is one line."""
    ok = False
    if not isinstance(temperature, (bool, str)) and temperature is not None:
        try:
            ok = bool(temperature > 0)
        except (TypeError, RuntimeError):
            ok = False
    if not ok:
        raise ConfigError(f"kWTA temperature must be > 0, got {temperature!r}")
    return float(temperature)


def check_ratio(ratio: Any) -> float:
    """A ratio in ``(0, 1]`` as a float (a bool or text is no ratio)."""
    value = float("nan") if isinstance(ratio, (bool, str)) or ratio is None else float(ratio)
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"kWTA ratio must be in (0, 1], got {ratio!r}")
    return value


def check_settings(boost_strength: Any, duty_cycle_period: Any, k_inference_factor: Any,
                   num_units: Any) -> None:
    """The boosting and inference settings of a kWTA layer (:class:`kwta_robust.layers.KWTA`)."""
    if not is_finite_number(boost_strength) or boost_strength < 0:
        raise ConfigError(f"kWTA boost_strength must be >= 0, got {boost_strength!r}")
    if boost_strength > 0 and num_units is None:
        raise ConfigError("kWTA boosting needs num_units (features for dense, channels for 2-D)")
    if boost_strength > 0 and not is_whole_number(num_units, at_least=1):
        raise ConfigError(f"kWTA num_units must be an integer >= 1 (features for dense, channels for 2-D), "
                          f"got {num_units!r}")
    if not is_finite_number(k_inference_factor) or k_inference_factor <= 0:
        raise ConfigError(f"kWTA k_inference_factor must be > 0, got {k_inference_factor!r}")
    if isinstance(duty_cycle_period, float) and duty_cycle_period.is_integer():
        duty_cycle_period = int(duty_cycle_period)
    if not is_whole_number(duty_cycle_period, at_least=1):
        raise ConfigError(f"kWTA duty_cycle_period must be >= 1 (an integer), got {duty_cycle_period!r}")


def check_boost_units(x: torch.Tensor, units: int) -> None:
    """A boosted layer's input has its ``num_units`` features (dense) or channels (2-D) along dim 1."""
    if x.shape[1] != units:
        raise ConfigError(f"kWTA num_units is {units} but the input of shape {tuple(x.shape)} has {x.shape[1]} "
                          f"{'features' if x.ndim == 2 else 'channels'}; build the layer with num_units={x.shape[1]}")


__all__ = ["MODES", "check_boost_units", "check_mode", "check_ratio", "check_scores", "check_settings",
           "check_temperature", "whole_k"]
