"""The sections of an evaluation config (:class:`~kwta_robust.config.EvalConfig`): threat models, attacks, noise
probes, diagnostics and the transfer attack, each a :func:`~kwta_robust.configio.config_class` whose fields are its
keys (documented, with a complete example, in ``eval_configs/README.md``).

An attack's ``params`` are validated by the attack itself (it is built once with them, as at run time), a noise
probe's by the probe; names are looked up in the registries (:mod:`attacks.base`, :mod:`attacks.noise`). Errors
are one-line :class:`~kwta_robust.errors.ConfigError` s naming the field (``attacks[2].params``) and the fix.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from dataclasses import field
from typing import Annotated, Any, Callable, Collection, Mapping, Sequence

from pydantic import BeforeValidator

from attacks.base import (NORMS, AttackConfigError, attack_defaults, attack_info, check_classes, create_attack,
                          format_eps, parse_eps)
from attacks.errors import FLOAT32_MAX, first_line, is_finite_number, is_seed, unknown_detail
from attacks.noise import DEFAULT_NOISE_DRAWS, NOISE_PROBES, create_noise_probe
from attacks.registry import RegistryError
from kwta_robust.bpda_layers import bpda_layers_value, parse_bpda_layers
from kwta_robust.configio import (AS_LIST, AtLeast, Count, Flag, Invalid, Number, Text, config_class, config_field,
                                  detail_of, keys, null_means, one_of, parse, plain_dataclass)
from kwta_robust.diagnostics import Thresholds
from kwta_robust.diagnostics_base import FRACTION_THRESHOLDS
from kwta_robust.errors import ConfigError

#: Attacks that need objects a YAML file cannot hold; ``compare`` adds them (see ``transfer:``).
PROGRAMMATIC_ATTACKS: tuple[str, ...] = ("transfer",)

Norm = Annotated[str, one_of("norm", NORMS)]


Params = Annotated[dict, null_means(dict)]


def parse_epsilon(value: Any, norm: str, where: str) -> float:
    """Parse an epsilon (``0.3``, ``"8/255"``) for ``norm`` on [0, 1] data; ConfigError naming ``where``."""
    try:
        eps = parse_eps(value, where)
    except AttackConfigError as exc:
        raise ConfigError(field=where, detail=detail_of(exc, where)) from None
    if norm == "linf" and eps > 1.0:
        raise ConfigError(field=where, detail=f"linf epsilon {value!r} exceeds 1, the whole [0, 1] input range; use a "
                                              "value <= 1")
    return eps


def _epsilon(value: Any, norm: str, at: tuple) -> tuple[float, str]:
    """An epsilon and its text as written; :class:`Invalid` at ``at`` otherwise."""
    try:
        eps = parse_epsilon(value, norm, "eps")
    except ConfigError as exc:
        raise Invalid(exc.detail or str(exc), at=at) from None
    if isinstance(value, str):
        return eps, value.strip()
    text = format_eps(eps)  # 8/255, 0.3; a value those lose (0.1234567, 0.031372549) is written exactly instead:
    return eps, text if parse_eps(text) == eps else repr(eps)  # configs rebuilt from to_dict() (shards, sweep cells)


def _check_distinct_texts(eps: tuple[float, ...], written: tuple[Any, ...]) -> None:
    """Two epsilons that records and tables write alike (``format_eps``: 6 significant digits, ``8/255``) would be two
    columns of one name, and one ``--save-adversarial`` unit (``pgd|linf|0.1``) would replace the other's inputs."""
    seen: dict[str, Any] = {}
    for value, shown in zip(written, (format_eps(e) for e in eps)):
        if shown in seen:
            raise Invalid(f"{seen[shown]!r} and {value!r} are both written {shown} in records and tables; keep one, "
                          "or make them differ within 6 significant digits", at=("epsilons",))
        seen[shown] = value


def _layers(value: Any) -> tuple[str, ...] | None:
    """``bpda_layers``: ``auto``, one spec or a list of specs (module names, globs, class names)."""
    try:
        return None if value is None else parse_bpda_layers(value, "bpda_layers")
    except ConfigError as exc:
        raise Invalid(exc.detail or str(exc)) from None


Layers = Annotated[tuple[str, ...] | None, BeforeValidator(_layers)]


@config_class(frozen=True)
class ThreatSpec:
    """One norm with its epsilons (floats; ``eps_text`` keeps the notation written in the config)."""

    norm: Norm = config_field(hint="linf or l2")
    epsilons: Annotated[tuple[Any, ...], AS_LIST] = config_field(hint="e.g. [0.1, '8/255']")
    eps_text: tuple[str, ...] = field(default=(), init=False)

    def __post_init__(self) -> None:
        if not self.epsilons:
            raise Invalid("give at least one epsilon", at=("epsilons",))
        parsed = [_epsilon(v, self.norm, ("epsilons", i)) for i, v in enumerate(self.epsilons)]
        eps = tuple(e for e, _ in parsed)
        if len(set(eps)) != len(eps):
            raise Invalid(f"duplicate epsilon values {list(self.epsilons)}", at=("epsilons",))
        _check_distinct_texts(eps, self.epsilons)
        object.__setattr__(self, "epsilons", eps)
        object.__setattr__(self, "eps_text", tuple(t for _, t in parsed))

    def to_dict(self) -> dict:
        return {"norm": self.norm, "epsilons": list(self.eps_text)}


def _misplaced_param(value: Any, owner: type, name_key: str, what: str,
                     parameters: Callable[[str], Collection[str]]) -> Any:
    """``value``, an entry of ``owner`` (a mapping naming an attack or probe under ``name_key``), as given; a key of it
    that ``owner`` lacks but the named attack or probe takes (``{kind: numenta, value: 0.7469}``) is one line saying
    to write it under ``params`` (it read "unknown key 'value'; valid keys: ..." without a word on where it goes)."""
    if not isinstance(value, dict) or not isinstance(value.get(name_key), str):
        return value
    valid = keys(owner)
    try:
        taken = parameters(value[name_key])
    except (RegistryError, TypeError, ValueError):  # an unknown name (the entry's own check names it) or no signature
        return value
    for key, given in value.items():
        if key not in valid and key in taken:
            written = json.dumps(given, default=str)
            raise Invalid(f"unknown key {key!r}; valid keys: {', '.join(valid)} ({key} is a parameter of {what} "
                          f"{value[name_key]!r}: move it under params, as params: {{{key}: {written}}})")
    return value


def _attack_entry(value: Any) -> Any:
    if isinstance(value, str):
        return {"attack": value}
    return _misplaced_param(value, AttackSpec, "attack", "attack",
                            lambda name: inspect.signature(attack_info(name).factory).parameters)


@config_class(frozen=True)
class AttackSpec:
    """One attack of the suite: registry name, parameters (checked by building the attack), the norms it runs on
    (``None``: every supported norm), a unique ``label`` used in records and tables and, for BPDA, the layers it
    acts on (``None``: the config's top-level ``bpda_layers``). A plain name stands for ``{attack: name}``."""

    attack: Text = config_field(hint="the registry name, e.g. pgd")
    params: Params = field(default_factory=dict)
    norms: tuple[Norm, ...] | None = None
    label: Annotated[str, null_means(str)] = ""
    bpda_layers: Layers = None

    def __post_init__(self) -> None:
        if self.attack in PROGRAMMATIC_ATTACKS:
            raise Invalid(f"{self.attack!r} needs a source model; `kwta-robust compare` adds transfer attacks between "
                          "the compared models (configure their inner attack under 'transfer:')", at=("attack",))
        try:
            attack_info(self.attack)
        except RegistryError as exc:
            raise Invalid(exc.detail, at=("attack",)) from None
        supported = self.supported_norms()
        for norm in self.norms or ():
            if norm not in supported:
                raise Invalid(f"attack {self.attack!r}{self.inner_text()} does not support {norm}; it supports "
                              f"{', '.join(supported)}", at=("norms",))
        if self.bpda_layers is not None and self.attack != "bpda":
            raise Invalid(f"only BPDA attacks act on layers; remove it from {self.attack!r}", at=("bpda_layers",))
        if "layers" in self.params and self.attack == "bpda":
            raise Invalid("write the layers as bpda_layers next to params (auto, module names, globs or class names)",
                          at=("params", "layers"))
        seed = self.params.get("seed", 0)  # an int for the record (JSON): not a NumPy integer
        if type(seed) is not int or not is_seed(seed):
            raise Invalid(f"must be an integer from 0 to 2**63 - 1 (the attack's random seed; leave it out to derive "
                          f"one from the config's seed), got {seed!r}", at=("params", "seed"))
        try:
            attack = create_attack(self.attack, **{"seed": 0, **self.params})
        except AttackConfigError as exc:
            raise _params_error(self.attack, str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - a plug-in factory's bug (a ValueError read "attacks[1].<message>")
            raise Invalid(f"attack {self.attack!r}: its factory raised {type(exc).__name__}: {first_line(exc)}; fix "
                          "the factory (or its params)") from None
        if not callable(attack):  # it failed on the first batch, naming the runner's line as the one to fix
            raise Invalid(f"attack {self.attack!r}: its factory returned {type(attack).__name__}, not an attack (a "
                          "callable attack(model, x, y, threat) -> x_adv); fix the factory")

    def supported_norms(self) -> tuple[str, ...]:
        """The norms the attack runs at: its registration's; for BPDA also its inner attack's (``inner: cw`` is
        L2 only: at Linf it would minimise an L2 distance the runner then clips to the Linf ball)."""
        norms = attack_info(self.attack).norms
        for inner in self.inner_attacks():  # a name BPDA's own check refused is reported there
            try:
                inner_norms = attack_info(inner).norms
            except RegistryError:
                return norms
            norms = tuple(n for n in norms if n in inner_norms)
        return norms

    def inner_attack(self) -> Any:
        """BPDA's inner attack as configured (its factory's default when not given); ``None`` for other attacks."""
        return self.params.get("inner", attack_defaults("bpda")["inner"]) if self.attack == "bpda" else None

    def inner_attacks(self) -> list[str]:
        """BPDA's inner attacks by name: :meth:`inner_attack` and any other a ``stage_params`` entry names for its
        stage (once each, in order); empty for other attacks and for names that are not text."""
        names = [self.inner_attack()]
        stages = self.params.get("stage_params") if self.attack == "bpda" else None
        if isinstance(stages, (list, tuple)):
            names += [entry.get("inner") for entry in stages if isinstance(entry, Mapping)]
        return list(dict.fromkeys(name for name in names if isinstance(name, str)))

    def check_classes(self, num_classes: int, where: str) -> None:
        """Refuse before any work what the attack (or BPDA's inner attack) refuses when it is called on a model of
        ``num_classes`` classes (:func:`attacks.base.check_classes`: the DLR losses), in its words after ``where``;
        in a cascade it is called only once samples reach it, maybe hours into the run."""
        for name in (self.attack, *self.inner_attacks()):
            if isinstance(name, str):
                try:
                    check_classes(name, num_classes)
                except AttackConfigError as exc:
                    raise ConfigError(f"{where}{self.inner_text()}: {exc}") from None

    def inner_text(self) -> str:
        """BPDA's inner attacks for messages (`` with inner 'cw'``; stages that run others: every one, in stage order,
        `` with inner 'apgd-ce/apgd-t'``); empty for other attacks."""
        names = self.inner_attacks()
        return f" with inner {'/'.join(names)!r}" if names else ""

    def applies_to(self, norm: str) -> bool:
        if self.norms is not None:
            return norm in self.norms
        return norm in self.supported_norms()

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"attack": self.attack, "params": self.params}
        if self.label:
            out["label"] = self.label
        if self.norms is not None:
            out["norms"] = list(self.norms)
        if self.bpda_layers is not None:
            out["bpda_layers"] = bpda_layers_value(self.bpda_layers)
        return out


AttackEntry = Annotated[AttackSpec, BeforeValidator(_attack_entry)]


@config_class(frozen=True)
class NoiseSpec:
    """A noise-robustness probe (``attacks.noise.run_noise_probe``): kind, levels (default: the probe's own, e.g.
    0.00, 0.05, …, 0.50 for ``numenta``), random draws per level and the probe's parameters (``value`` for
    ``numenta``)."""

    kind: Text = config_field(hint="a noise probe, e.g. numenta")
    levels: tuple[Annotated[Number, AtLeast(0.0)], ...] | None = None
    draws: Annotated[Count, AtLeast(1)] = DEFAULT_NOISE_DRAWS  # run_noise_probe's default: one number per probe
    params: Params = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in NOISE_PROBES:
            raise Invalid(NOISE_PROBES.unknown(self.kind).detail, at=("kind",))
        try:
            probe = create_noise_probe(self.kind, **self.params)
            levels = _default_levels(self.kind, probe) if self.levels is None else self.levels
        except AttackConfigError as exc:
            raise Invalid(str(exc), at=("params",)) from None
        except ConfigError:  # the default levels' own
            raise
        except Exception as exc:  # noqa: BLE001 - a plug-in probe's bug (a ValueError read "noise[0].<message>")
            raise Invalid(f"noise probe {self.kind!r} raised {type(exc).__name__}: {first_line(exc)}; fix the probe "
                          "(or its params)") from None
        if not levels:
            raise Invalid("give at least one level (or leave it out for the probe's defaults)", at=("levels",))
        if probe.max_level is not None and max(levels) > probe.max_level:
            index, level = max(enumerate(levels), key=lambda item: item[1])
            raise Invalid(f"{self.kind} levels are {probe.level_name}s in [0, {probe.max_level:g}], got {level:g}",
                          at=("levels", index))
        repeat = next((index for index, level in enumerate(levels) if level in levels[:index]), None)
        if repeat is not None:  # the same noise drawn again: its correct counted twice in the noise score
            first = levels.index(levels[repeat])
            raise Invalid(f"{levels[repeat]:g} is levels[{first}] again; give each level once (a repeat draws the same "
                          "noise and counts twice in the noise score)", at=("levels", repeat))
        huge = [index for index, level in enumerate(levels) if level > FLOAT32_MAX]  # inf in the float32 noise
        if huge:
            raise Invalid(f"must be at most {FLOAT32_MAX:.2g} (float32's largest), got {levels[huge[0]]:g}",
                          at=("levels", huge[0]))
        object.__setattr__(self, "levels", levels)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "levels": list(self.levels), "draws": self.draws, "params": self.params}


def _default_levels(kind: str, probe: Any) -> tuple[float, ...]:
    """A probe's default levels, checked as a config's are (a plug-in's negative or NaN ones failed only when the
    probe ran, after every attack)."""
    levels = tuple(probe.default_levels())
    if not all(is_finite_number(level) and level >= 0 for level in levels):
        raise Invalid(f"noise probe {kind!r}: its default_levels() are {list(levels)!r:.100}, not finite numbers >= 0; "
                      "fix the probe, or give levels", at=("levels",))
    return tuple(float(level) for level in levels)


def _noise_entry(value: Any) -> Any:
    return _misplaced_param(value, NoiseSpec, "kind", "noise probe",
                            lambda kind: inspect.signature(NOISE_PROBES.get(kind)).parameters)


NoiseEntry = Annotated[NoiseSpec, BeforeValidator(_noise_entry)]


@config_class(frozen=True)
class SanitySpec:
    """An extra attack at a very large epsilon, outside the worst case: its robust accuracy should be ~0
    (Carlini et al. 2019, §5.2: "unbounded attacks must reach 100 % success")."""

    norm: Norm = "linf"
    eps: Any = 1.0
    attack: Text = "pgd"
    params: Params = field(default_factory=dict)
    eps_text: str = field(default="1", init=False)

    def __post_init__(self) -> None:
        eps, text = _epsilon(self.eps, self.norm, ("eps",))
        _check_attack(self.attack, self.params, [self.norm])
        object.__setattr__(self, "eps", eps)
        object.__setattr__(self, "eps_text", text)

    @property
    def label(self) -> str:
        """Its results' label (``sanity-pgd``): one no configured attack may take."""
        return f"sanity-{self.attack}"

    def to_dict(self) -> dict:
        return {"norm": self.norm, "eps": self.eps_text, "attack": self.attack, "params": self.params}


def _thresholds(value: Any) -> Thresholds:
    """The thresholds of a mapping (or a :class:`Thresholds`, checked alike): numbers >= 0, the fractions at most 1
    (``ladder_margin: 2`` meant as 2 points would switch its check off in silence)."""
    found = plain_dataclass(Thresholds, dataclasses.asdict(value) if isinstance(value, Thresholds) else value,
                            minimum=0)
    for key in FRACTION_THRESHOLDS:
        if getattr(found, key) > 1:
            raise Invalid(f"must be a fraction from 0 to 1 (5% is 0.05), got {getattr(found, key):g}", at=(key,))
    return found


@config_class(frozen=True)
class BudgetCheckSpec:
    """Settings of the budget check on the user's run (:mod:`kwta_robust.budget_check`), ``diagnostics.budget_check``
    in the eval config; it flags with the ``ladder_margin`` and ``min_count`` thresholds."""

    enabled: Flag = True
    """Re-run the strongest attacks at a larger budget on a sample of the survivors after the suite."""
    factor: Annotated[Count, AtLeast(2)] = 3
    """Budget multiplier (steps, BPDA: its inner attack's; gradient estimation: noise pairs per step; Square:
    queries)."""
    attacks: Annotated[Count, AtLeast(1)] = 2
    """How many attacks to re-run per threat point: the strongest of each of this many strongest families."""
    samples: Annotated[Count, AtLeast(1)] = 32
    """At most this many survivors are re-attacked per attack and threat point: a fraction ``closest`` of them those
    the suite's attacks came closest to breaking (their largest margin), the rest a seeded random sample."""
    closest: Number = 0.75
    """The fraction of the re-attacked survivors taken closest to breaking (rounded down; 0: all at random, 1: no
    random part, so nothing is extrapolated beyond the verified kills). A smaller one extrapolates from more random
    survivors, for a gap spread over many survivors rather than held by the few nearest."""
    min_samples: Annotated[Count, AtLeast(1)] | None = None
    """Every re-run attack gets at least this many survivors (all, if fewer), whatever ``max_cost`` says. ``null``
    (the default): four times the kills a flag needs on the run's ``n`` samples, ``max(min_count, ceil(ladder_margin
    · n))``, and at most ``samples`` — 8 at 100 images, 16 at 200, 32 from 400
    (:func:`kwta_robust.budget_check.floor_samples`)."""
    max_cost: Number = 0.2
    """Beyond ``min_samples``, the extra runs may cost this fraction of the queries spent at the threat point
    (estimated from the record)."""

    def __post_init__(self) -> None:
        if not 0 <= self.closest <= 1:
            raise Invalid(f"must be between 0 and 1 (a fraction of the re-attacked survivors), got {self.closest}",
                          at=("closest",))
        if not self.max_cost > 0:
            raise Invalid(f"must be > 0 (a fraction of the run's queries), got {self.max_cost}", at=("max_cost",))


@config_class(frozen=True)
class DiagnosticsSpec:
    """Gradient-masking diagnostics settings (see :mod:`kwta_robust.diagnostics`)."""

    enabled: Flag = True
    gradient_batch: Annotated[Count, AtLeast(1)] = 64
    sanity: SanitySpec | None = None
    thresholds: Annotated[Thresholds, BeforeValidator(_thresholds)] = field(default_factory=Thresholds)
    budget_check: Annotated[BudgetCheckSpec, null_means(BudgetCheckSpec)] = field(default_factory=BudgetCheckSpec)

    def to_dict(self) -> dict:
        return {
            "enabled": self.enabled,
            "gradient_batch": self.gradient_batch,
            "sanity": None if self.sanity is None else self.sanity.to_dict(),
            "thresholds": dataclasses.asdict(self.thresholds),
            "budget_check": dataclasses.asdict(self.budget_check),
        }


@config_class(frozen=True)
class TransferSpec:
    """Inner attack of the transfer attacks that ``compare`` adds (crafted on a source model, run on the target)."""

    attack: Text = "pgd"
    params: Params = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_attack(self.attack, self.params, None)

    def to_dict(self) -> dict:
        return {"attack": self.attack, "params": self.params}


def _check_attack(name: str, params: dict, norms: Sequence[str] | None) -> None:
    """The attack of a sanity or transfer entry is valid (as an :class:`AttackSpec`, errors at its own fields)."""
    try:
        AttackSpec(attack=name, params=params, norms=None if norms is None else tuple(norms))
    except ConfigError as exc:  # at the entry's own field ("norms: ..." -> at a sanity entry's key, norm)
        key = exc.field or ""
        if exc.detail is not None and (key in AttackSpec.KEYS or key.startswith("params.")):
            raise Invalid(exc.detail, at=("norm" if key == "norms" else key,)) from None
        raise Invalid(str(exc)) from None


#: The stage a BPDA error leads with (``stage_params[1].inner: ...``, ``stage_steps[2]: ...``): parameter, index, key.
_BPDA_STAGE = re.compile(r"(stage_params|stage_steps)((?:\[\d+\])(?:\.[a-z_]+)?): (.+)", re.DOTALL)


def _params_error(attack: str, message: str) -> Invalid:
    """``message`` (the attack refusing its params) at the field it names: a BPDA error led by one stage's entry
    (``stage_params[1].inner: unknown attack ...``) at its config path (``attacks[2].params.stage_params[1].inner``);
    any other as it is, at the attack's entry."""
    found = _BPDA_STAGE.fullmatch(message) if attack == "bpda" else None
    if found is None:
        return Invalid(message)
    at: list[str | int] = ["params", found[1]]
    for index, key in re.findall(r"\[(\d+)\]|\.([a-z_]+)", found[2]):
        at.append(int(index) if index else key)
    return Invalid(found[3], at=at)


def assign_labels(specs: Sequence[AttackSpec]) -> list[AttackSpec]:
    """Default label: the attack name; attacks listed more than once get the parameters that differ appended."""
    by_name: dict[str, list[AttackSpec]] = {}
    for s in specs:
        by_name.setdefault(s.attack, []).append(s)
    out = []
    for s in specs:
        if s.label:
            out.append(s)
            continue
        group = [g for g in by_name[s.attack] if not g.label]
        if len(group) == 1:
            out.append(dataclasses.replace(s, label=s.attack))
            continue
        keys = sorted({k for g in group for k in g.params})
        differing = [k for k in keys if len({json.dumps(g.params.get(k), sort_keys=True) for g in group}) > 1]
        parts = [f"{k}={s.params[k]}" for k in differing if k in s.params and not isinstance(s.params[k], (dict, list))]
        out.append(dataclasses.replace(s, label=f"{s.attack}({','.join(parts)})" if parts else s.attack))
    seen: set[str] = set()
    for s in out:
        if s.label in seen:
            raise ConfigError(f"attacks: label {s.label!r} is used twice; give one of them a distinct 'label'")
        seen.add(s.label)
    return out


def suite_attacks(name: str, num_classes: int, where: str = "suite") -> list[AttackSpec]:
    """Expand a preset from :mod:`attacks.suites` into attack specs."""
    from attacks import suites

    if name not in suites.available_suites():
        raise ConfigError(field=where, detail=unknown_detail("suite", name, suites.available_suites()))
    try:
        entries = suites.get_suite(name, num_classes)
    except AttackConfigError as exc:
        raise ConfigError(field=where, detail=str(exc)) from None
    return [parse_entry(entry, f"{where}[{name}][{i}]") for i, entry in enumerate(entries)]


def parse_entry(entry: Any, where: str) -> AttackSpec:
    """One attack entry (a name or a mapping) as an :class:`AttackSpec`, errors starting with ``where``."""
    return parse(AttackSpec, _attack_entry(entry), prefix=where)
