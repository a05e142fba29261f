"""Exact snapshots of a model, to verify that attacks and probes leave it as it was.

The evaluation runner (:mod:`kwta_robust.evaluate`) captures a :class:`ModelSnapshot` before the attacks and
verifies it after each one: the full ``state_dict`` (parameters and buffers such as kWTA duty cycles and BatchNorm
statistics) and the buffers it leaves out (``persistent=False``: a call counter, a cache), every module's
``training`` flag, every parameter's ``requires_grad`` and every module's hooks (BPDA
wraps foreign layers with hooks for the duration of an attack, :mod:`attacks.bpda_wrap`; none may be left behind).
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping

import torch
from torch import Tensor, nn

from kwta_robust.errors import ConfigError, KwtaRobustError

#: Hook tables of ``nn.Module`` compared by :class:`ModelSnapshot` (the handles' ids, so a swapped hook shows too).
HOOK_TABLES: tuple[str, ...] = ("_forward_pre_hooks", "_forward_hooks", "_backward_pre_hooks", "_backward_hooks")


class ModelChangedError(KwtaRobustError, RuntimeError):
    """An attack (or probe) changed the evaluated model's state, training flags, ``requires_grad`` flags or hooks:
    one line naming what changed (the CLI prints it without a traceback; the records written so far stay)."""


# ---------------------------------------------------------------------------------------------------------------
# model helpers
# ---------------------------------------------------------------------------------------------------------------
def model_device(model: nn.Module) -> torch.device:
    """The device of the model's tensors (CPU for a model without any); mixed devices are an error."""
    devices = {t.device for t in model.parameters()} | {t.device for t in model.buffers()}
    if len(devices) > 1:
        raise ConfigError(f"model: tensors on several devices ({sorted(map(str, devices))}); put it on one device")
    return devices.pop() if devices else torch.device("cpu")


def state_digest(model: nn.Module) -> str:
    """sha256 over the model's ``state_dict`` (names, dtypes, shapes, bytes): identifies the weights."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def source_digest(model: nn.Module, extra_modules: Iterable[str] = ()) -> str:
    """sha256 over the source files of the Python modules that define the model's module classes, plus
    ``extra_modules`` (a factory's), by module name; torch's own are left out (its version is recorded apart) and
    so are modules without a file (a class defined in a notebook). Identifies the model's code beside its weights:
    a layer's backward rewritten (a straight-through gate) changes no weight but every gradient attack's result."""
    names = {type(m).__module__ for m in model.modules()} | set(extra_modules)
    h = hashlib.sha256()
    for name in sorted(n for n in names if n.split(".")[0] != "torch"):
        path = getattr(sys.modules.get(name), "__file__", None)
        if not path:
            continue
        try:
            with open(path, "rb") as f:
                content = f.read()
        except OSError:
            continue
        h.update(f"{name}|{len(content)}|".encode())
        h.update(content)
    return h.hexdigest()


def model_tensors(model: nn.Module) -> dict[str, Tensor]:
    """The model's ``state_dict`` and, under their ``named_buffers`` names, the buffers it leaves out
    (``persistent=False``): everything a forward can change in place."""
    tensors = dict(model.state_dict())
    for name, buffer in model.named_buffers():
        tensors.setdefault(name, buffer)
    return tensors


@contextlib.contextmanager
def tensors_put_back(model: nn.Module) -> Iterator[None]:
    """Every tensor of :func:`model_tensors` as it was before the block, also where the block raised: a forward
    outside the runner's snapshots (the one that reads the number of classes) must not change a model that
    updates a buffer in eval mode before the runner's probe refuses it."""
    before = {k: v.detach().clone() for k, v in model_tensors(model).items()}
    try:
        yield
    finally:
        put_back(model, before)


def put_back(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Copy ``state`` (names as :func:`model_tensors` gives them) into the model's tensors of the same name and
    shape, in place (a tensor the model created or resized since is left as it is)."""
    with torch.no_grad():
        for key, tensor in model_tensors(model).items():
            kept = state.get(key)
            if kept is not None and tensor.shape == kept.shape:
                tensor.copy_(kept)


def module_hooks(model: nn.Module) -> dict[str, tuple[tuple[int, ...], ...]]:
    """Per module, the ids of its hooks in each of :data:`HOOK_TABLES`."""
    return {name: tuple(tuple(getattr(m, table, {})) for table in HOOK_TABLES) for name, m in model.named_modules()}


@dataclass
class ModelSnapshot:
    """Exact copy of a model's state (:func:`model_tensors`), training flags, ``requires_grad`` flags and hooks, to
    verify nothing changed."""

    state: dict[str, Tensor]
    training: dict[str, bool]
    requires_grad: dict[str, bool]
    hooks: dict[str, tuple[tuple[int, ...], ...]]

    @classmethod
    def capture(cls, model: nn.Module) -> "ModelSnapshot":
        return cls(
            {k: v.detach().clone() for k, v in model_tensors(model).items()},
            {name: m.training for name, m in model.named_modules()},
            {name: p.requires_grad for name, p in model.named_parameters()},
            module_hooks(model),
        )

    def verify(self, model: nn.Module, culprit: str) -> None:
        """Raise :class:`ModelChangedError` naming ``culprit`` and the first differing entry."""
        state = model_tensors(model)
        if set(state) != set(self.state):
            changed = sorted(set(state) ^ set(self.state))
            raise ModelChangedError(f"{culprit} changed the model's state_dict or buffer names ({changed[0]!r})")
        for key, before in self.state.items():
            after = state[key]
            if after.shape != before.shape or after.dtype != before.dtype or not torch.equal(after, before):
                raise ModelChangedError(
                    f"{culprit} changed the model's {key!r}: parameters and buffers must stay as they were (a module "
                    "that updates a buffer in eval mode, e.g. a counter, running statistics or duty cycles, must do "
                    "so only when self.training)")
        training = {name: m.training for name, m in model.named_modules()}
        if training != self.training:
            diff = sorted(k for k in set(training) | set(self.training) if training.get(k) != self.training.get(k))
            raise ModelChangedError(f"{culprit} changed the train/eval flag of module {diff[0] or '<root>'!r}")
        grads = {name: p.requires_grad for name, p in model.named_parameters()}
        if grads != self.requires_grad:
            diff = sorted(k for k in set(grads) | set(self.requires_grad) if grads.get(k) != self.requires_grad.get(k))
            raise ModelChangedError(f"{culprit} changed requires_grad of parameter {diff[0]!r}")
        hooks = module_hooks(model)
        if hooks != self.hooks:
            diff = sorted(k for k in set(hooks) | set(self.hooks) if hooks.get(k) != self.hooks.get(k))
            raise ModelChangedError(f"{culprit} left the hooks of module {diff[0] or '<root>'!r} changed")
