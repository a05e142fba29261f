"""``bpda_layers``: which modules each BPDA attack of an evaluation acts on.

The config key ``bpda_layers`` (top level of an eval config, default ``auto``; also on each BPDA attack entry, which
then wins; ``--bpda-layer SPEC`` on the command line replaces the top-level value) is ``auto`` or a list of specs:

* ``auto`` — every top-k gate and piecewise-constant layer that :func:`kwta_robust.detect.detect_layers` found,
  and every module implementing the BPDA protocol (our kWTA layers); may be combined with other specs;
* a qualified module name as in ``model.named_modules()`` (``features.2``), a glob on those names
  (``features.*``), or a class name (``Sparsify2D_vol`` or ``package.module.Sparsify2D_vol``).

:func:`plan_bpda_layers` resolves them against the model after the layer probe and before the first attack; a spec
that matches no module is a one-line :class:`~kwta_robust.errors.ConfigError` naming the field and listing the
model's leaf modules. ``evaluate`` and ``compare`` check the specs before any work (:func:`check_bpda_specs`;
``compare`` only asks that each spec match a module of one of the compared models). The runner hands each BPDA
attack the resolved ``{name: LayerTarget}`` and records, per result, the layers it acted on
(:func:`describe_targets`); an empty selection is flagged ``bpda-no-layer``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from torch import nn

from attacks.base import AttackConfigError
from attacks.bpda import DEFAULT_SURROGATE
from attacks.bpda_protocol import SupportsSurrogateBackward
from attacks.bpda_wrap import LayerTarget, match_modules, module_candidates, select_modules
from kwta_robust.detect import POOL_GATE, Detection, pool_gate_fix
from kwta_robust.errors import ConfigError
from kwta_robust.selection_entries import is_pool_selection, where_called

AUTO = "auto"
DEFAULT: tuple[str, ...] = (AUTO,)


def parse_bpda_layers(value: Any, where: str) -> tuple[str, ...]:
    """A config value (``auto``, one spec, or a list of specs) as a tuple of specs; ConfigError naming ``where``."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in items):
        raise ConfigError(field=where, detail=f"expected auto, a module name, glob or class name, or a list of them; "
                                              f"got {value!r}")
    return tuple(v.strip() for v in items)


def bpda_layers_value(specs: Sequence[str]) -> str | list[str]:
    """The YAML form of parsed specs (``auto`` stays a plain word)."""
    return AUTO if tuple(specs) == DEFAULT else list(specs)


def resolve_bpda_layers(model: nn.Module, specs: Sequence[str], detection: Detection,
                        where: str = "bpda_layers", strict: bool = True) -> dict[str, LayerTarget]:
    """``{module name: LayerTarget}`` (model order) selected by ``specs``; what detection found about a module
    (gate and grouping, piecewise constant) travels with it. ``strict=False`` skips specs matching no module."""
    chosen: set[str] = set()
    for spec in specs:
        if spec == AUTO:
            chosen.update(detection.auto_targets())
            continue
        if not strict:
            chosen.update(match_modules(model, spec))
            continue
        try:
            chosen.update(select_modules(model, [spec], where))
        except AttackConfigError as exc:
            raise ConfigError(str(exc)) from None
    return {name: detection.target(name) for name, _ in model.named_modules() if name in chosen}


def bpda_fields(specs: Sequence[Any]) -> list[str]:
    """Per BPDA attack spec (``attack == "bpda"``), in order, the config field its layers come from: its own
    ``attacks[LABEL].bpda_layers`` or the top-level ``bpda_layers``."""
    return [f"attacks[{s.label}].bpda_layers" if s.bpda_layers is not None else "bpda_layers"
            for s in specs if s.attack == "bpda"]


def plan_bpda_layers(model: nn.Module, specs: Sequence[Any], default: Sequence[str], detection: Detection,
                     strict: bool = True) -> dict[str, dict[str, LayerTarget]]:
    """For every BPDA attack spec (``AttackSpec`` with ``attack == "bpda"``), by label, its resolved layers. A
    max-pool gate (:data:`kwta_robust.detect.POOL_GATE`) in a form BPDA cannot relax, named for the smooth
    surrogate, is a one-line ConfigError (:func:`refuse_pool_gates`)."""
    plans = {}
    for spec, where in zip([s for s in specs if s.attack == "bpda"], bpda_fields(specs)):
        own = spec.bpda_layers is not None
        resolved = resolve_bpda_layers(model, spec.bpda_layers if own else default, detection, where, strict)
        surrogate = spec.params.get("surrogate", DEFAULT_SURROGATE)
        refuse_pool_gates(resolved, surrogate, detection, where)
        plans[spec.label] = for_surrogate(surrogate, resolved)
    return plans


def refuse_pool_gates(layers: Mapping[str, LayerTarget], surrogate: str, detection: Detection, where: str) -> None:
    """A one-line ConfigError naming ``where`` if ``layers`` (resolved) hold a max-pool gate
    (:data:`kwta_robust.detect.POOL_GATE`) in a form :mod:`attacks.pool_relax` cannot relax (not an inline target:
    its mask returned, or made in place) and ``surrogate`` is ``smooth``, which would read it at each call as a
    top-k gate and relax it on a rule it does not follow (:mod:`attacks.pool_gates`); also where a module of
    ``layers`` BPDA reads whole at each call (kind ``module``) holds such a gate's max-pool (a selection of
    ``detection``, inline in its ``forward`` or in a child): the smooth surrogate would read the module's output as a
    top-k of its input or pass the gradient straight through it, neither of which relaxes the gate."""
    pooled = [n for n in layers if POOL_GATE in getattr(detection.finding(n), "kinds", ()) and layers[n].kind
              != "inline"]  # an inline target's gate is relaxed as what it is (attacks/pool_relax.py)
    if pooled and surrogate == "smooth":
        raise ConfigError(field=where, detail=(
            f"{', '.join(pooled)} is a winner-take-all built from a max-pool (layer probe: {POOL_GATE}) in a form "
            "the smooth surrogate cannot relax (its 0/1 mask returned for the parent to apply, or made in place, not "
            "as h.mul_(h == p) or h[h != p] = 0), so it would relax it as a top-k gate, a rule it does not follow: "
            "build the gate as a result (h * (h == F.max_pool2d(...)), F.max_unpool2d) or in one of those forms, "
            "leave it out, or use surrogate: model (or identity: straight-through), and add gradient estimation and "
            "square"))
    around = [(n, s) for n in layers for s in detection.selections if n and layers[n].kind == "module"
              and is_pool_selection(s) and n in (s.get("modules") or ())]
    if around and surrogate == "smooth":  # read whole at each call: a misread top-k, or the identity
        name, selection = around[0]
        raise ConfigError(field=where, detail=(
            f"{name} holds a winner-take-all built from a max-pool ({where_called(selection)}), which the smooth "
            f"surrogate cannot relax: it would read {name}'s output at each call as a top-k gate of its input, a rule "
            f"it does not follow, or pass the gradient straight through it; {pool_gate_fix([name])}"))


def for_surrogate(surrogate: str, layers: Mapping[str, LayerTarget]) -> dict[str, LayerTarget]:
    """``layers`` as the ``surrogate`` acts on them: the ``model`` surrogate distils a twin of the whole model that
    keeps the model's own ``forward`` as it is, its inline gate hard, so acting on the model itself (``""``) would
    relax nothing there; it is left out, and ``bpda-no-layer`` / ``selections-outside-layers`` say so."""
    return {name: target for name, target in layers.items() if name or surrogate != "model"}


def check_bpda_specs(models: Mapping[str, nn.Module], cfg: Any) -> None:
    """Before any work (``evaluate``, ``compare``): every non-``auto`` spec of ``cfg`` (top level and per attack)
    names a module of at least one of ``models`` (label → model); else a one-line ConfigError listing candidates."""
    wheres = [("bpda_layers", cfg.bpda_layers)] + [
        (f"attacks[{i}].bpda_layers", a.bpda_layers) for i, a in enumerate(cfg.attacks) if a.bpda_layers is not None]
    for where, specs in wheres:
        for spec in specs:
            if spec == AUTO or any(match_modules(m, spec) for m in models.values()):
                continue
            if len(models) == 1:
                try:
                    select_modules(*models.values(), [spec], where)
                except AttackConfigError as exc:  # the one-model message, listing its leaf modules
                    raise ConfigError(str(exc)) from None
            candidates = "; ".join(f"{label}: {module_candidates(m, 6)}" for label, m in models.items())
            raise ConfigError(f"{where}: {spec!r} matches no module of any compared model; candidates: {candidates}")


def describe_targets(model: nn.Module, targets: Mapping[str, LayerTarget]) -> dict[str, str]:
    """Per acted-on layer, for the record: ``native`` (a BPDA-capable module switched through its own backward) or
    ``wrapped <kind>[/<grouping>]`` (a foreign module given the protocol by hooks)."""
    modules = dict(model.named_modules())
    return {name: "native" if isinstance(modules.get(name), SupportsSurrogateBackward) else f"wrapped {t.describe()}"
            for name, t in targets.items()}
