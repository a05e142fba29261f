"""Exact snapshots of a model, to verify that attacks and probes leave it as it was.

The evaluation runner (:mod:`kwta_robust.evaluate`) captures a :class:`ModelSnapshot` before the attacks and
verifies it after each one: the full ``state_dict`` (parameters and buffers such as kWTA duty cycles and BatchNorm
statistics) and the buffers it leaves out (``persistent=False``: a call counter, a cache), every module's
``training`` flag, every parameter's ``requires_grad`` and every module's hooks (BPDA
wraps foreign layers with hooks for the duration of an attack, :mod:`attacks.bpda_wrap`; none may be left behind).
"""

from __future__ import annotations

import contextlib
import dataclasses
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
        t = strided(tensor.detach().cpu()).contiguous().reshape(-1)
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


def strided(tensor: Tensor) -> Tensor:
    """``tensor`` in the strided layout (a sparse buffer, ``torch.ones(10).to_sparse()``, dense: ``torch.equal`` and
    byte views take strided tensors only)."""
    return tensor if tensor.layout == torch.strided else tensor.to_dense()


def same_values(a: Tensor, b: Tensor) -> bool:
    """``torch.equal``, with a NaN equal to a NaN at the same place (a damaged weight is the finite check's to name,
    :func:`kwta_robust.model_checks.check_finite`, not a change)."""
    if torch.equal(a, b):
        return True
    return a.is_floating_point() and bool(((a == b) | (a.isnan() & b.isnan())).all())


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
        """Raise :class:`ModelChangedError` naming ``culprit`` and the first differing entry, with what can be put back
        put back first (:meth:`restore`): a caller's model object is not left changed by an attack or probe."""
        try:
            self._compare(model, culprit)
        except ModelChangedError:
            self.restore(model)
            raise

    def _compare(self, model: nn.Module, culprit: str) -> None:
        state = model_tensors(model)
        if set(state) != set(self.state):
            changed = sorted(set(state) ^ set(self.state))
            raise ModelChangedError(f"{culprit} changed the model's state_dict or buffer names ({changed[0]!r})")
        for key, before in self.state.items():
            after = state[key]
            if after.shape != before.shape or after.dtype != before.dtype or after.layout != before.layout \
                    or not same_values(strided(after), strided(before)):
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

    def restore(self, model: nn.Module) -> None:
        """Put back what a forward may have changed of what :meth:`verify` compares: the tensors' values
        (:func:`put_back`), every module's train/eval flag, every parameter's ``requires_grad``, and the hooks
        registered since the capture removed."""
        put_back(model, self.state)
        modules = dict(model.named_modules())
        for name, buffer in list(model.named_buffers()):  # replaced by one of another shape (self.last = out)
            kept = self.state.get(name)
            owner, _, attr = name.rpartition(".")
            if kept is not None and buffer.shape != kept.shape and attr in modules[owner]._buffers:
                modules[owner]._buffers[attr] = kept.clone()
        for name, flag in self.training.items():
            if name in modules:
                modules[name].training = flag
        for name, parameter in model.named_parameters():
            if self.requires_grad.get(name, parameter.requires_grad) != parameter.requires_grad:
                parameter.requires_grad_(self.requires_grad[name])
        for name, module in modules.items():
            kept = self.hooks.get(name, ((),) * len(HOOK_TABLES))
            for table, ids in zip(HOOK_TABLES, kept):
                for hook_id in [h for h in getattr(module, table, {}) if h not in ids]:
                    for hooks in (getattr(module, table), *(getattr(module, extra, {}) for extra in _HOOK_EXTRAS)):
                        hooks.pop(hook_id, None)


#: Per-hook options torch keeps beside the hook tables, keyed by the same handle id.
_HOOK_EXTRAS = ("_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs")


def kept_or_restored(model: nn.Module, before: ModelSnapshot, culprit: str) -> None:
    """Verify that ``model`` is as ``before`` captured it, ``culprit`` having run it; a buffer it created or sized
    (lazy initialization: absent or empty before) is adopted. On any other change what can be put back is
    (:meth:`ModelSnapshot.verify` restores it) and :class:`ModelChangedError` names the change."""
    state = model_tensors(model)
    created = [k for k in state if k not in before.state or before.state[k].numel() == 0 < state[k].numel()]
    if created and set(state) >= set(before.state):  # buffers the first forward created or sized (lazy init)
        before = dataclasses.replace(before, state={**before.state, **{k: state[k].detach().clone() for k in created}})
    before.verify(model, culprit)
