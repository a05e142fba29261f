"""The attack units of one threat point: which attacks run at a norm, in cascade order, and the seed of each batch;
and every unit's effective hyperparameters (:func:`planned_settings`, what a record keeps as ``settings``).

Seeds: each (attack, norm, eps) unit has ``derive_seed(seed, label, norm, eps)`` (:func:`unit_seeds`; a transfer
attack's key is ``transfer`` whatever its label, so it draws the same beside one source or several); each batch of a
unit :func:`batch_seed` from it and the ids of the batch's samples, so a sample's attack never depends on how the
samples are split into shards or which ran first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from torch import Tensor, nn

from attacks.base import attack_info, create_attack
from attacks.settings import attack_settings
from kwta_robust.config import AttackSpec, derive_seed
from kwta_robust.errors import ConfigError
from kwta_robust.record_index import RecordIndex

if TYPE_CHECKING:
    from kwta_robust.config import EvalConfig


def unit_seeds(seed: int, planned: Sequence["PlannedAttack"], norm: str, eps: float) -> list[int]:
    """The seed of each planned unit at one threat point, ``derive_seed(seed, key, norm, repr(eps))``: the key is
    the attack's label, or ``transfer`` for every transfer attack — labelled ``transfer`` beside one source and
    ``transfer(<name>)`` beside several, it would otherwise draw other random starts, and break other samples, when
    a model is added to a ``compare``."""
    return [derive_seed(seed, "transfer" if p.source is not None else p.label, norm, repr(eps)) for p in planned]


def kept_results(record: Any, planned: Sequence["PlannedAttack"], seeds: Sequence[int], norm: str,
                 eps: float, cascade: bool = True) -> list[Any]:
    """Per planned unit, its result in a resumed ``record`` (an ``EvalRecord``, or the
    :class:`~kwta_robust.record_index.RecordIndex` of one: a caller that asks at every threat point passes that, so
    each unit is one lookup, not a scan of the results) to keep, or ``None`` to run it: a result whose seed is not
    this run's (written by a version that derived it otherwise) is run again and, with ``cascade``, so is every later
    unit at the threat point, which ran on its survivors (in independent mode the others do not depend on it)."""
    kept, stale = [], False
    for p, seed in zip(planned, seeds):
        found = record.result(p.label, norm, eps)
        wrong = found is not None and found.seed != seed
        stale = (stale and cascade) or wrong
        kept.append(None if stale else found)
    return kept


def kept_noise(record: Any, cfg: "EvalConfig", spec: Any) -> bool:
    """Whether ``record`` (an ``EvalRecord``) holds the noise probe ``spec`` of ``cfg`` (its kind, at this config's
    seed for it: :func:`noise_seed`), which a resumed run keeps and does not run again."""
    seed = noise_seed(cfg.seed, spec)
    return any(p.seed == seed and p.kind == spec.kind for p in record.noise)


def kept_unit_count(record: Any, cfg: "EvalConfig", num_classes: int, source_names: Sequence[str]) -> int:
    """How many units of a resumed ``record`` (an ``EvalRecord``) a run of ``cfg`` keeps, as ``evaluate --dry-run``
    counts them: its results :func:`kept_results` keeps at every threat point (not one of another seed, nor in
    cascade mode one after it), its sanity unit where the diagnostics run it, its noise probes of this config's
    seeds (:func:`noise_seed`)."""
    specs, kept, index = cfg.labelled_attacks(num_classes), 0, RecordIndex(record)
    for threat in cfg.threats:
        for eps in threat.epsilons:
            planned = plan_attacks(specs, threat.norm, source_names)
            seeds = unit_seeds(cfg.seed, planned, threat.norm, eps)
            kept += sum(r is not None for r in kept_results(index, planned, seeds, threat.norm, eps,
                                                            cfg.mode == "cascade"))
    sanity = cfg.diagnostics.sanity
    if sanity is not None and cfg.diagnostics.enabled:
        kept += sum(r.key == (sanity.label, sanity.norm, sanity.eps) for r in record.sanity)
    return kept + sum(kept_noise(record, cfg, spec) for spec in cfg.noise)


def batch_seed(unit_seed: int, batch_ids: Tensor) -> int:
    """The seed of one batch of a unit: from the unit's seed and the ids of every sample the batch holds, so a
    sample's attack never depends on how the samples are split into shards (record schema 3)."""
    return derive_seed(unit_seed, "batch", *batch_ids.tolist())


def model_rng_seed(unit_seed: int, batch_ids: Tensor) -> int:
    """The seed of torch's global RNG while one batch of a unit runs, distinct from the attack's own seed: a
    randomized model draws the same noise on every run, resumed or sharded; with the evaluation's seed as
    ``unit_seed``, the seed of the batch's clean pass and of every verdict on it (:mod:`attacks.verdicts`)."""
    return derive_seed(batch_seed(unit_seed, batch_ids), "model-rng")


@dataclass(frozen=True)
class PlannedAttack:
    """One attack of a norm's list: its label, registry name, parameters, and how to build it for a seed."""

    label: str
    attack: str
    params: dict
    source: str | None = None
    layers: Mapping[str, Any] | None = None  # BPDA: the resolved bpda_layers ({name: LayerTarget})

    def build(self, seed: int, sources: Mapping[str, nn.Module], transfer_attack: str, transfer_params: dict) -> Any:
        if self.source is not None:
            return create_attack(
                "transfer", source=sources[self.source], inner=transfer_attack, inner_params=transfer_params,
                source_name=self.source, seed=seed,
            )
        layers = {} if self.layers is None else {"layers": dict(self.layers)}
        return create_attack(self.attack, **{"seed": seed, **self.params, **layers})

    def settings(self, sources: Mapping[str, nn.Module], transfer_attack: str, transfer_params: dict,
                 num_classes: int | None = None) -> dict:
        """The unit's effective hyperparameters (:func:`attacks.settings.attack_settings` of the attack
        :meth:`build` makes, on a data set of ``num_classes`` classes where known; seeds and BPDA's resolved layers
        are not settings, so one build stands for every batch's): what the record keeps as
        ``AttackResult.settings`` and the resume check compares."""
        given = self.params if self.source is None else {"inner": transfer_attack, "inner_params": transfer_params}
        built = self.build(0, sources, transfer_attack, transfer_params)
        return attack_settings(built, given, attack_info(self.attack).factory, num_classes=num_classes)


def planned_settings(cfg: "EvalConfig", num_classes: int, sources: Mapping[str, nn.Module]) -> dict[str, dict]:
    """Label → effective settings (:meth:`PlannedAttack.settings`) of every unit ``cfg`` plans on a data set of
    ``num_classes`` classes with these transfer ``sources``: the attacks at every norm and, where the diagnostics
    run it, the sanity attack (``sanity-<attack>``, a label no configured attack may take). A unit's settings
    depend on its label alone (not on the norm or eps). An attack these classes are too few for is refused
    (:meth:`~kwta_robust.specs.AttackSpec.check_classes`)."""
    specs = cfg.labelled_attacks(num_classes)
    if sources:  # the transfer attacks' inner attack, on a source of as many classes, at every norm
        inner = AttackSpec(attack=cfg.transfer.attack, params=dict(cfg.transfer.params))
        inner.check_classes(num_classes, "transfer")
        missing = [t.norm for t in cfg.threats if t.norm not in inner.supported_norms()]
        if missing:  # it would stop the run at the first such threat point, with no field named
            raise ConfigError(f"transfer.attack: {inner.attack!r}{inner.inner_text()} does not support "
                              f"{', '.join(missing)} (a threat of this config); use an inner attack that does, "
                              "e.g. pgd")
    planned = {p.label: p for threat in cfg.threats for p in plan_attacks(specs, threat.norm, list(sources))}
    sanity = cfg.diagnostics.sanity
    if sanity is not None and cfg.diagnostics.enabled:  # the runner runs it only then
        planned[sanity.label] = PlannedAttack(sanity.label, sanity.attack, dict(sanity.params))
    return {label: p.settings(sources, cfg.transfer.attack, dict(cfg.transfer.params), num_classes)
            for label, p in planned.items()}


def planned_units(cfg: "EvalConfig", num_classes: int, source_names: Sequence[str]) -> set[tuple[str, str, float]]:
    """The ``(label, norm, eps)`` key of every unit ``cfg`` plans (:attr:`kwta_robust.results.AttackResult.key`):
    the attacks at every threat point and, where the diagnostics run it, the sanity attack; what a resumed record
    may hold (:func:`kwta_robust.resume.unplanned_unit`)."""
    specs = cfg.labelled_attacks(num_classes)
    keys = {(p.label, t.norm, eps) for t in cfg.threats for eps in t.epsilons
            for p in plan_attacks(specs, t.norm, source_names)}
    sanity = cfg.diagnostics.sanity
    if sanity is not None and cfg.diagnostics.enabled:
        keys.add((sanity.label, sanity.norm, sanity.eps))
    return keys


def threat_point_units(cfg: "EvalConfig", specs: Sequence[AttackSpec], norm: str, eps: float,
                       sources: Mapping[str, nn.Module], bpda_layers: Mapping[str, Mapping[str, Any]] | None = None,
                       ) -> tuple[list[PlannedAttack], list[int], list[Any]]:
    """The units of one threat point as the runner attacks with them (and ``evaluate --dry-run`` builds them): the
    attacks at ``norm`` in cascade order (:func:`plan_attacks`), each unit's seed (:func:`unit_seeds`) and each
    attack built for that seed (every batch builds its own again from :func:`batch_seed`)."""
    planned = plan_attacks(specs, norm, list(sources), bpda_layers)
    seeds = unit_seeds(cfg.seed, planned, norm, eps)
    built = [p.build(s, sources, cfg.transfer.attack, cfg.transfer.params) for p, s in zip(planned, seeds)]
    return planned, seeds, built


def sanity_unit(cfg: "EvalConfig", layers: Mapping[str, Any] | None = None) -> tuple[PlannedAttack, int]:
    """The sanity attack of ``cfg.diagnostics`` (which must have one) as the runner runs it, with BPDA's resolved
    ``layers``, and its seed."""
    spec = cfg.diagnostics.sanity
    if spec is None:
        raise ConfigError("diagnostics.sanity: no sanity attack is configured")
    seed = derive_seed(cfg.seed, spec.label, spec.norm, repr(spec.eps))
    return PlannedAttack(spec.label, spec.attack, dict(spec.params), layers=layers), seed


def noise_seed(seed: int, spec: Any) -> int:
    """The seed of a noise probe (a ``NoiseSpec``) in an evaluation of seed ``seed``: what a resumed record's probe
    must carry to be kept."""
    return derive_seed(seed, "noise", spec.kind, list(spec.levels), spec.draws, spec.params)


def plan_attacks(specs: Sequence[AttackSpec], norm: str, source_names: Sequence[str],
                 bpda_layers: Mapping[str, Mapping[str, Any]] | None = None) -> list[PlannedAttack]:
    """The attacks run at ``norm``, in cascade order: configured ones, then one transfer attack per source
    (labelled ``transfer`` when there is one source, so side-by-side tables line up; else ``transfer(<name>)``;
    the record's ``source`` field names the source either way). ``bpda_layers``: resolved layers per BPDA label."""
    layers = bpda_layers or {}
    planned = [PlannedAttack(s.label, s.attack, dict(s.params), layers=layers.get(s.label))
               for s in specs if s.applies_to(norm)]
    single = len(source_names) == 1
    planned += [PlannedAttack("transfer" if single else f"transfer({name})", "transfer", {}, source=name)
                for name in source_names]
    labels = [p.label for p in planned]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"attacks: label {sorted(l for l in labels if labels.count(l) > 1)[0]!r} is used by a "
                          "configured attack and a transfer attack; rename the configured one")
    return planned
