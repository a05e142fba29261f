"""Transfer attack: adversarial inputs crafted on a source (surrogate) model, to be evaluated on the target.

Papernot, McDaniel & Goodfellow, "Transferability in Machine Learning: from Phenomena to Black-Box Attacks using
Adversarial Samples", 2016; Athalye, Carlini & Wagner (ICML 2018) and Tramèr et al. (NeurIPS 2020) recommend it as a
check for gradient masking: if examples crafted on an undefended twin (for kWTA: the same architecture with ReLU)
fool the defended model more often than white-box attacks on the defended model itself, its gradients are masked.

Threat model: whatever the inner attack supports; the target is only queried by the runner, never by this attack
(the ``model`` argument is ignored apart from the interface). Shapes: ``x`` ``[N, ...]``, ``y`` ``[N]`` →
``x_adv`` ``[N, ...]`` on ``x.device``.

The source must already live on ``x``'s device: this attack never moves a model (a clear error says so).

Example::

    attack = create_attack("transfer", source=relu_twin, inner="pgd", inner_params={"steps": 100},
                           source_name="relu-twin")
    attack.name                 # 'transfer(pgd, source=relu-twin)'
    x_adv = attack(kwta_model, x, y, ThreatModel("linf", 0.3))   # crafted on relu_twin
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from attacks.base import (
    AttackConfigError,
    ThreatModel,
    attack_info,
    begin_attack,
    create_attack,
    register_attack,
    rng_scope,
)
from attacks.seed_draws import wrapped_draw
from attacks.settings import nested_settings

logger = logging.getLogger(__name__)


def module_devices(module: nn.Module) -> set[torch.device]:
    """Devices holding ``module``'s parameters and buffers (empty for a module without tensors)."""
    return {t.device for t in module.parameters()} | {t.device for t in module.buffers()}


def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether ``a`` and ``b`` name one device: ``cuda`` (the current one) and ``cuda:0`` do where 0 is current, as
    ``cpu`` and ``cpu:0`` do (a model moved with ``.to("cuda")`` reports ``cuda:0``; a config's ``cuda`` has no
    index)."""
    if a.type != b.type:
        return False
    # "cuda" and "cuda:0" name the same device when the current device is 0
    if a.type == "cuda":
        current = torch.cuda.current_device()
        return (current if a.index is None else a.index) == (current if b.index is None else b.index)
    return a.index == b.index or a.index is None or b.index is None


def check_source_device(source: nn.Module, device: torch.device, field: str = "source") -> None:
    """Raise :class:`AttackConfigError` if ``source`` holds tensors on another device than ``device``."""
    for found in module_devices(source):
        if not same_device(found, device):
            raise AttackConfigError(
                f"{field}: the source model is on {found} but the inputs are on {device}; "
                f"move it first (source.to({str(device)!r})) — attacks never move models"
            )


def transfer_draw(params: Mapping[str, Any]) -> str:
    """What a transfer attack draws first from its seed (:mod:`attacks.seed_draws`): its inner attack's first draw
    where that runs with this seed (``inner_params`` without another ``seed``; a ``pgd`` inner: PGD's random start),
    else a randomized source's noise (:func:`attacks.seed_draws.wrapped_draw`)."""
    return wrapped_draw(params["inner"], params.get("inner_params"), params.get("seed"))


@register_attack("transfer", kind="transfer", labels_only=True, draws=transfer_draw)
class Transfer:
    """Transfer attack (Papernot et al. 2016): run ``inner`` on ``source`` and return its adversarial inputs.

    Parameters: ``source`` (an ``nn.Module`` classifier on the inputs' device), ``inner`` (registry name,
    default ``"pgd"``), ``inner_params`` (its parameters; ``seed`` defaults to this attack's), ``seed``,
    ``source_name`` (for records: ``name`` becomes ``"transfer(<inner>, source=<source_name>)"``).

    Threat model: the inner attack's norms. ``x`` ``[N, ...]``, ``y`` ``[N]`` → ``x_adv`` ``[N, ...]`` (the inner
    attack's output on the source, unchanged; the runner re-classifies it on the target).

    Example::

        attack = create_attack("transfer", source=relu_twin, inner="apgd-ce", source_name="relu-twin")
        x_adv = attack(kwta_model, x, y, ThreatModel("linf", 0.3))
    """

    def __init__(
        self,
        source: nn.Module,
        inner: str = "pgd",
        inner_params: Mapping[str, Any] | None = None,
        seed: int = 0,
        source_name: str | None = None,
    ) -> None:
        if not isinstance(source, nn.Module):
            raise AttackConfigError(f"source: expected an nn.Module classifier, got {type(source).__name__}")
        if not isinstance(inner, str):
            raise AttackConfigError(f"inner: expected a registered attack name like 'pgd', got {type(inner).__name__}")
        if inner_params is not None and not isinstance(inner_params, Mapping):
            raise AttackConfigError(f"inner_params: expected a mapping of the inner attack's parameters like "
                                    f"{{'steps': 40}}, got {type(inner_params).__name__}")
        info = attack_info(inner)
        if info.kind == "transfer":
            raise AttackConfigError("inner: a transfer attack cannot wrap another transfer attack; use e.g. 'pgd'")
        params = dict(inner_params or {})
        params.setdefault("seed", int(seed))
        self.source = source
        self.inner = inner
        self.norms = info.norms
        self.seed = int(seed)
        self.source_name = source_name
        self._attack = create_attack(inner, **params)
        self._inner_given = params
        self.name = f"transfer({inner})" if source_name is None else f"transfer({inner}, source={source_name})"

    def attack_settings(self, num_classes: int | None = None) -> dict[str, Any]:
        """Effective hyperparameters for records (:mod:`attacks.settings`): the inner attack's, nested, its class
        counts capped by ``num_classes`` (the source is the record's ``source``; the source model itself is no
        setting)."""
        return {"inner": nested_settings(self._attack, self._inner_given, attack_info(self.inner).factory,
                                          self.inner, num_classes=num_classes)}

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        check_source_device(self.source, x.device)
        with rng_scope(self.seed):  # a randomized source draws from the global RNG: fork it, seeded
            begin_attack(self.name, self.norms, self.source, x, y, threat)
            return self._attack(self.source, x, y, threat)
