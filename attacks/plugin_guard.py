"""What an attack's call may not leave changed in the caller's process: torch's global settings and the model's
tensors' dtype and device.

The runner (:func:`attacks.cascade.run_verified`) calls every attack — a plug-in's too — inside
:func:`guarded_call`. A global setting the attack changed and did not put back (gradient mode off, another default
dtype, thread count, deterministic-algorithms or anomaly flag, working directory, ``logging.disable``, the root
logger's level) would change the later attacks' numbers, the clean verdicts, where files are written or which
warnings are shown, silently: it is put back and the run ends in one :class:`~attacks.errors.AttackConfigError`
line naming the attack and the setting. A model parameter or buffer converted or moved (``model.double()``,
``model.to(...)``) would make the runner's own re-classification fail inside torch: it is one such line too (the
runner's model snapshot then tells what else changed). What it prints is logged and the warnings filters it changed
are put back with a warning (:mod:`attacks.plugin_isolation`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import nn

from attacks.plugin_isolation import isolated


def _set_deterministic(value: tuple[bool, bool]) -> None:
    torch.use_deterministic_algorithms(value[0], warn_only=value[1])


#: Global setting → (read it, put it back, how a message names it). Read before and after every attack call
#: (read-only).
SETTINGS: Mapping[str, tuple[Callable[[], Any], Callable[[Any], Any], Callable[[Any, Any], str]]] = MappingProxyType({
    "grad": (torch.is_grad_enabled, torch.set_grad_enabled,
             lambda now, was: f"torch's gradient mode {'on' if now else 'off'} (torch.set_grad_enabled({now}))"),
    "dtype": (torch.get_default_dtype, torch.set_default_dtype,
              lambda now, was: f"torch's default dtype {now} (was {was})"),
    "threads": (torch.get_num_threads, torch.set_num_threads,
                lambda now, was: f"torch's CPU thread count at {now} (was {was})"),
    "deterministic": (lambda: (torch.are_deterministic_algorithms_enabled(),
                               torch.is_deterministic_algorithms_warn_only_enabled()), _set_deterministic,
                      lambda now, was: f"torch.use_deterministic_algorithms {now[0]} (was {was[0]})"
                      if now[0] != was[0] else f"torch.use_deterministic_algorithms warn_only {now[1]}"),
    "anomaly": (torch.is_anomaly_enabled, torch.autograd.set_detect_anomaly,
                lambda now, was: f"torch.autograd.set_detect_anomaly {now} (was {was})"),
    "cwd": (os.getcwd, os.chdir, lambda now, was: f"the working directory {now!r} (was {was!r})"),
    "logging": (lambda: logging.root.manager.disable, logging.disable,
                lambda now, was: f"logging.disable at level {now} (was {was})"),
    "log-level": (lambda: logging.root.level, logging.root.setLevel,
                  lambda now, was: f"the root logger's level at {now} (was {was})"),
})


def _tensor_places(model: nn.Module) -> dict[str, tuple[torch.dtype, torch.device]]:
    """Every parameter's and buffer's (dtype, device), by name."""
    places = {name: (p.dtype, p.device) for name, p in model.named_parameters()}
    places.update((name, (b.dtype, b.device)) for name, b in model.named_buffers())
    return places


def _changed_setting(before: dict[str, Any]) -> str | None:
    """The first global setting that differs from ``before`` (put back, all of them), named; ``None`` if none."""
    found = None
    for key, was in before.items():
        read, write, describe = SETTINGS[key]
        now = read()
        if now != was:
            found = found or describe(now, was)
            write(was)
    return found


@contextlib.contextmanager
def guarded_call(who: str, model: nn.Module, error: Callable[[str], Exception]) -> Iterator[None]:
    """Run an attack's call; after it, every global setting of :data:`SETTINGS` it changed is put back (also when
    it raised) and, if it returned, ``error(message)`` is raised naming the attack as ``who`` (``'pgd' at Linf
    0.1``) and the first setting, or the first model tensor whose dtype or device it changed."""
    before = {key: read() for key, (read, _, _) in SETTINGS.items()}
    places = _tensor_places(model)
    try:
        with isolated(f"attack {who} (or the model it ran)"):  # its prints logged, the warnings filters put back
            yield
    except BaseException:
        _changed_setting(before)
        raise
    changed = _changed_setting(before)
    if changed is not None:
        raise error(f"attack {who} left {changed}; an attack must put back every global setting it changes "
                    "(torch.no_grad() and other context managers do)")
    now = _tensor_places(model)
    for key, (dtype, device) in places.items():
        if now.get(key) != (dtype, device):
            new = now.get(key)
            where = "removed it" if new is None else f"{dtype} on {device} -> {new[0]} on {new[1]}"
            raise error(f"attack {who} converted or moved the model's {key!r} ({where}); an attack must never "
                        "move, convert or mutate the model")
