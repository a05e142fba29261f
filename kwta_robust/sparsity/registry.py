"""Pruning-method registry: name → method factory (the generic :class:`~kwta_robust.registry.Registry`).

Built-in methods (registered by importing :mod:`kwta_robust.sparsity.methods`):

=====================  =================  =============  ====================================================
name                   when               default scope  what
=====================  =================  =============  ====================================================
``magnitude``          after training     layer-wise     ``|w|``; one-shot or iterative; finetune / rewinding
``global-magnitude``   after training     global         the same, one threshold across layers
``snip``               at initialisation  global         ``|g ⊙ w|`` (Lee et al., ICLR 2019)
``grasp``              at initialisation  global         ``w ⊙ Hg`` (Wang et al., ICLR 2020)
``rigl``               during training    per layer      drop by ``|w|``, grow by ``|g|`` (Evci et al., 2020)
``early-bird``         during training    global         magnitude ticket drawn when masks stop moving
                                                         (You et al., ICLR 2020), then fine-tuned
=====================  =================  =============  ====================================================

A method object implements :class:`PruningMethod`; :func:`kwta_robust.sparsity.pipeline.train_pruned` runs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol

from torch import nn

from kwta_robust.registry import Registry

if TYPE_CHECKING:  # pragma: no cover - typing only
    from kwta_robust.sparsity.config import PruningConfig
    from kwta_robust.sparsity.pipeline import PruningContext


class PruningMethod(Protocol):
    """A way to obtain a sparse trained network.

    ``timing``: ``"after-training"``, ``"at-init"`` or ``"during-training"``. ``scopes``: the scopes it
    supports, ``default_scope`` the one used when the config leaves ``scope`` unset. ``supports_rounds``:
    whether ``rounds > 1`` / retrain modes apply. ``run`` installs masks on ``modules`` and trains ``model``
    through ``ctx.trainer``; it returns method-specific facts for the checkpoint metadata (plain data).
    """

    name: str
    timing: str
    default_scope: str
    scopes: tuple[str, ...]
    supports_rounds: bool
    description: str

    def run(self, model: nn.Module, modules: Mapping[str, nn.Module], cfg: "PruningConfig",
            ctx: "PruningContext") -> dict[str, Any]: ...


#: Pruning methods by name (a generic :class:`~kwta_robust.registry.Registry` of zero-argument factories); the
#: first lookup imports :mod:`kwta_robust.sparsity.methods`, whose methods register themselves.
METHODS: Registry[Callable[[], PruningMethod]] = Registry("pruning method", field="pruning.method",
                                                          plugins=("kwta_robust.sparsity.methods",))


def register_pruning_method(name: str) -> Callable[[Callable[[], PruningMethod]], Callable[[], PruningMethod]]:
    """Decorator registering a zero-argument factory (class or function) of a :class:`PruningMethod`."""
    return METHODS.register(name)


def available_pruning_methods() -> list[str]:
    """Registered method names, sorted."""
    return METHODS.names()


def create_pruning_method(name: str) -> PruningMethod:
    """The method registered as ``name`` (a fresh object); a one-line ``RegistryError`` listing the known ones."""
    return METHODS.create(name)
