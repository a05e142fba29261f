"""Evaluation configs: :class:`EvalConfig`, a :func:`~kwta_robust.configio.config_class` read from YAML.

Every key is documented, with a complete commented example, in ``eval_configs/README.md``. Summary::

    dataset: mnist5k          # data set registry name (kwta_robust.data), or {file: PATH} (kwta_robust.datafile)
    split: test               # split of that data set
    data_root: null           # folder with the data (null: the data set's default location)
    n_examples: null          # first n of a seeded permutation of the split (null: the whole split)
    sample_seed: null         # seed of that permutation (null: use `seed`)
    batch_size: 256
    device: auto              # auto | cpu | cuda | cuda:1 ...
    seed: 0                   # each (attack, norm, eps) unit seeded by a stable hash of (seed, label, norm, eps)
    mode: cascade             # cascade | independent
    threats: [{norm: linf, epsilons: [0.1, "8/255"]}]
    suite: null               # optional preset expanded via attacks.suites.get_suite(name, num_classes)
    attacks: [{attack: pgd, params: {...}, norms: [linf], label: pgd-100}]
    bpda_layers: auto         # modules BPDA acts on (kwta_robust.bpda_layers); also per BPDA attack
    transfer: {attack: pgd, params: {}}    # inner attack of transfer attacks added by `compare`
    noise: [{kind: numenta, levels: [0.0, 0.05], draws: 1}]
    diagnostics: {enabled: true, gradient_batch: 64, sanity: {...} | null, thresholds: {...}}
    verdict_draws: auto       # forward passes per verdict: auto = 11 if the model is randomized, else 1 (randomness.py)

The sections are in :mod:`kwta_robust.specs`. Errors are one-line :class:`~kwta_robust.errors.ConfigError` s naming
the field (``attacks[2].params``) and the fix; unknown keys list the valid ones (:mod:`kwta_robust.configio`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Mapping

import torch
from pydantic import BeforeValidator

from attacks.base import NORM_TITLES, format_eps
from attacks.errors import COUNT_LIMIT, too_large
from kwta_robust.budget_scale import largest_scaled, scale_budget
from kwta_robust.bpda_layers import DEFAULT as BPDA_LAYERS_DEFAULT
from kwta_robust.bpda_layers import bpda_layers_value
from kwta_robust.bpda_seeds import warn_overlapping_stage_seeds
from kwta_robust.config_digest import config_digest, matches_hash
from kwta_robust.configio import (AtLeast, Count, Description, Invalid, Seed, Text, config_class, config_field,
                                  null_means, one_of, parse, read_yaml)
from kwta_robust.datafile import DataFileSpec, parse_dataset, resolve_relative
from kwta_robust.description_notes import noted_description
from kwta_robust.errors import ConfigError, OriginFixError, is_whole_number
from kwta_robust.specs import (AttackEntry, AttackSpec, DiagnosticsSpec, Layers, NoiseEntry, NoiseSpec, SanitySpec,
                               ThreatSpec, TransferSpec, assign_labels, parse_epsilon, suite_attacks)

__all__ = [
    "AttackSpec", "DiagnosticsSpec", "EvalConfig", "NoiseSpec", "SanitySpec", "ThreatSpec", "TransferSpec",
    "derive_seed", "load_config", "parse_device", "parse_epsilon", "resolve_device", "warn_seed_overlaps",
]

logger = logging.getLogger(__name__)

MODES: tuple[str, ...] = ("cascade", "independent")


def resolve_device(spec: str) -> torch.device:
    """``"auto"`` → CUDA when available else CPU; explicit devices are checked to exist and to be a CPU or a CUDA
    device (other backends, e.g. ``mps``, lack float64, which the runner's per-sample bookkeeping uses). CUDA where
    there is none is an :class:`~kwta_robust.errors.OriginFixError`: its fix names the config key (a config file, the
    Python API) or, where a command's flag gave the value, the flag (``use --device cpu or auto``:
    :func:`flag_error`)."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = parse_device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OriginFixError("device", f"{spec!r} requested but CUDA is not available",
                             fix=NO_CUDA_FIX, flag_fix="use {flag} cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(field="device", detail=f"{spec!r} does not exist ({torch.cuda.device_count()} CUDA "
                                                 "devices)")
    return device


#: How the refusal of a CUDA device on a machine without one ends where a config (a file, a dict, the Python API's
#: overrides) gave the device; a command's flag is named instead (``use --device cpu or auto``).
NO_CUDA_FIX = "set device: cpu or auto in the config"


def parse_device(spec: str, field: str = "device") -> torch.device:
    """An explicit device spec (not ``auto``) as a CPU or CUDA device, whether or not this machine has it (the
    checks of :func:`resolve_device` that need no hardware); an error names ``field`` (``--device`` for the flag)."""
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise ConfigError(field=field, detail=f"cannot parse {spec!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cpu":  # cpu:N is the one CPU device: tensors moved there report plain cpu
        return torch.device("cpu")
    if device.type not in ("cpu", "cuda"):  # e.g. mps: no float64, which the runner's bookkeeping uses; untested
        raise ConfigError(field=field, detail=f"{spec!r} is not supported (the harness runs and is tested on CPU and "
                                              "CUDA); use auto, cpu, cuda or cuda:N")
    return device


def derive_seed(base: int, *keys: Any) -> int:
    """A stable seed from ``base`` and identifying keys (attack label, norm, eps): same inputs, same seed."""
    text = json.dumps([int(base), [str(k) for k in keys]])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF


def _draws(value: Any) -> Any:
    if value is None or value == "auto":
        return "auto"
    if not is_whole_number(value, 1):
        raise Invalid(f"must be auto or an integer >= 1 (forward passes per verdict of a randomized model), got "
                      f"{value!r}")
    if value > COUNT_LIMIT:
        raise Invalid(too_large(value))
    return value


def _suite(value: Any) -> Any:
    if value is not None:
        suite_attacks(value, 10, where="")  # the name is checked now (num_classes is re-applied at run time); the
        # field is named by the validation error's location (`suite`), not twice
    return value


@config_class(frozen=True)
class EvalConfig:
    """A validated evaluation config (see the module docstring and ``eval_configs/README.md``)."""

    description: Description = ""
    dataset: Any = config_field(hint="e.g. mnist5k")
    split: Text = "test"
    data_root: Text | None = None
    n_examples: Annotated[Count, AtLeast(1)] | None = None
    sample_seed: Seed | None = None
    batch_size: Annotated[Count, AtLeast(1)] = 256
    device: Text = "auto"
    seed: Seed = 0
    mode: Annotated[str, one_of("mode", MODES)] = "cascade"
    threats: Annotated[tuple[ThreatSpec, ...], null_means(tuple)] = ()
    suite: Annotated[Text | None, BeforeValidator(_suite)] = None
    attacks: Annotated[tuple[AttackEntry, ...], null_means(tuple)] = ()
    bpda_layers: Annotated[Layers, null_means(lambda: BPDA_LAYERS_DEFAULT)] = BPDA_LAYERS_DEFAULT  # null: auto
    transfer: Annotated[TransferSpec, null_means(TransferSpec)] = field(default_factory=TransferSpec)
    noise: Annotated[tuple[NoiseEntry, ...], null_means(tuple)] = ()
    diagnostics: Annotated[DiagnosticsSpec, null_means(DiagnosticsSpec)] = field(default_factory=DiagnosticsSpec)
    verdict_draws: Annotated[Any, BeforeValidator(_draws)] = "auto"
    data_file: DataFileSpec | None = field(default=None, init=False)  # ``dataset: {file: PATH}``; dataset = the path

    def __post_init__(self) -> None:
        dataset, data_file = parse_dataset(self.dataset)
        object.__setattr__(self, "dataset", dataset)
        object.__setattr__(self, "data_file", data_file)
        if data_file is not None and (self.split != "test" or self.data_root is not None):
            raise Invalid("not used with dataset: {file: ...} (a data file is one split); remove it",
                          at=("split" if self.split != "test" else "data_root",))
        norms = [t.norm for t in self.threats]
        if len(set(norms)) != len(norms):
            raise Invalid("a norm is listed twice; put all its epsilons in one entry", at=("threats",))
        probes = [n.to_dict() for n in self.noise]  # the runner keeps one result per probe: a repeat ran once
        repeat = next((i for i, probe in enumerate(probes) if probe in probes[:i]), None)
        if repeat is not None:
            first = probes.index(probes[repeat])
            raise Invalid(f"the same probe as noise[{first}] (kind, levels, draws and params): it would run once and "
                          "the record keep one result; remove it", at=("noise", repeat))
        if (self.attacks or self.suite) and not self.threats:
            raise Invalid("attacks are configured but no threat model; add threats: [{norm: linf, epsilons: [0.3]}]",
                          at=("threats",))
        self._check_sanity_eps()
        specs = self.labelled_attacks(10)  # unique labels / norm coverage are checked now, not after data loading
        self._check_scaled_budgets(specs)  # shared BPDA stage seeds are warned of where a config is read, once
        # (warn_seed_overlaps), not here: validation re-runs at every override, --data and in every worker

    def _check_scaled_budgets(self, specs: list[AttackSpec]) -> None:
        """The budget check re-runs attacks at ``factor`` times their budget (:mod:`kwta_robust.budget_scale`); a
        scaled count above :data:`~attacks.errors.COUNT_LIMIT` would be refused by the re-run attack only after
        every attack had run, so it is refused now, naming the factor."""
        check = self.diagnostics.budget_check
        if not (self.diagnostics.enabled and check.enabled):
            return
        for spec in specs:
            scaled = scale_budget(spec.attack, dict(spec.params), check.factor)
            largest = 0 if scaled is None else largest_scaled(dict(spec.params), scaled)
            if largest > COUNT_LIMIT:
                raise Invalid(f"{check.factor} times the budget of attack {spec.label!r} is {largest:,}, above "
                              f"{COUNT_LIMIT:,} (10**9; no real run needs more); lower the factor or that attack's "
                              "budget, or set budget_check.enabled: false",
                              at=("diagnostics", "budget_check", "factor"))

    def _check_sanity_eps(self) -> None:
        """A sanity attack's eps must exceed every evaluated eps of its norm: below that a model may well stay
        robust (an L2 0.3 sanity attack beside L2 2), and large-eps-not-zero would read it as gradient masking."""
        sanity = self.diagnostics.sanity
        top = max((max(t.epsilons) for t in self.threats if sanity is not None and t.norm == sanity.norm), default=None)
        if sanity is not None and top is not None and sanity.eps <= top:
            title = NORM_TITLES[sanity.norm]
            raise Invalid(f"{title} {sanity.eps_text} is not above the largest evaluated {title} eps "
                          f"({format_eps(top)}); the sanity attack needs a very large eps (Linf 1; L2 several times "
                          "the largest evaluated eps)", at=("diagnostics", "sanity", "eps"))

    # --- construction ----------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, where: str = "") -> "EvalConfig":
        """Build and validate from plain data; field paths in errors start with ``where`` (e.g. ``eval``)."""
        return parse(cls, data, prefix=where)

    @classmethod
    def from_yaml(cls, path: str | Path, where: str = "--config") -> "EvalConfig":
        """Read and validate an evaluation config; a sweep's or a training's config (the other YAML files of
        ``eval_configs/``) is named as such with the command that reads it, not as a list of unknown keys; an
        evaluation record (JSON is YAML) gives the config it stores (:func:`_record_config`). ``where``: how errors
        name the path (the CLI's ``--config``; the Python API's ``config``)."""
        data = _record_config(read_yaml(path, where), path, where)
        other = _other_command(data)
        if other is not None:
            kind, command = other
            raise ConfigError(f"{where}: {path} is a {kind} config, not an evaluation config; run it with "
                              f"`{command} {path}`, or give an evaluation config (eval_configs/README.md)")
        return cls.from_dict(resolve_relative(data, Path(path).resolve().parent))

    def with_overrides(self, *, flags: Mapping[str, str] | None = None, **overrides: Any) -> "EvalConfig":
        """Apply CLI overrides (``None`` values are ignored) and re-validate. An ``n_examples`` other than the
        config's adds ``(run on N examples: --n-examples)`` to a non-empty ``description`` (which names the config's
        count, "200 images"; it is not hashed), in place of such a note from an earlier override; the note names
        what gave the count, as errors do: the flag of ``flags``, else the key (``n_examples``, the Python API's).
        ``flags``: how an error names each override's key (the command line's ``{"n_examples": "--n-examples"}``:
        the value is the flag's, not the config file's); the config key where it names none. A ``device`` given is
        parsed now (:func:`parse_device`; whether this machine has it is checked where the run resolves it)."""
        data = self.to_dict()
        given = {k: v for k, v in overrides.items() if v is not None}
        data.update(given)
        names = {key: (flags or {}).get(key, key) for key in given}
        if "n_examples" in given and given["n_examples"] != self.n_examples:
            data["description"] = noted_description(self.description, n_examples=given["n_examples"],
                                                    source=names["n_examples"])
        try:
            cfg = EvalConfig.from_dict(data)
            if given.get("device", "auto") != "auto":
                parse_device(cfg.device, names["device"])
        except ConfigError as exc:
            raise flag_error(exc, names) from None
        return cfg

    # --- derived ---------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "description": self.description,
            "dataset": self.data_file.to_dict() if self.data_file is not None else self.dataset,
            "split": self.split,
            "data_root": self.data_root,
            "n_examples": self.n_examples,
            "sample_seed": self.sample_seed,
            "batch_size": self.batch_size,
            "device": self.device,
            "seed": self.seed,
            "mode": self.mode,
            "threats": [t.to_dict() for t in self.threats],
            "suite": self.suite,
            "attacks": [a.to_dict() for a in self.attacks],
            "bpda_layers": bpda_layers_value(self.bpda_layers),
            "transfer": self.transfer.to_dict(),
            "noise": [n.to_dict() for n in self.noise],
            "diagnostics": self.diagnostics.to_dict(),
            **({} if self.verdict_draws == "auto" else {"verdict_draws": self.verdict_draws}),  # auto: as before
        }

    def config_hash(self) -> str:
        """sha256 of the canonical config, minus what does not name a result: the ``description``, the ``device``
        (a run resumed on another device continues the same evaluation; the device of each run is recorded as
        provenance) and where the data sit (a data file's path, the ``data_root``: the file's ``sha256`` and the data
        set's name, split and selection name the data; :func:`kwta_robust.config_digest.without_location`).
        ``batch_size`` is kept: attacks may batch-normalize their step schedule."""
        return config_digest(self.to_dict())  # a record's stored config hashes alike (kwta_robust.config_digest)

    @property
    def permutation_seed(self) -> int:
        return self.seed if self.sample_seed is None else self.sample_seed

    def labelled_attacks(self, num_classes: int) -> list[AttackSpec]:
        """The suite's attacks (if any) followed by the listed ones, each with a unique label; each (and the sanity
        attack) checked against the data set's ``num_classes`` as the attack checks them when called."""
        specs = (suite_attacks(self.suite, num_classes) if self.suite else []) + list(self.attacks)
        labelled = assign_labels(specs)
        check = self.diagnostics.sanity if self.diagnostics.enabled else None
        sanity = None if check is None else check.label
        if check is not None:
            AttackSpec(attack=check.attack, params=check.params).check_classes(num_classes, "diagnostics.sanity")
        for spec in labelled:
            spec.check_classes(num_classes, f"attacks: {spec.label!r}")
            if spec.label == sanity:  # its results and settings would be taken for the sanity attack's
                raise ConfigError(f"attacks: label {sanity!r} is the sanity attack's (diagnostics.sanity); give the "
                                  "attack another label")
            if not any(spec.applies_to(t.norm) for t in self.threats):
                norms = ", ".join(t.norm for t in self.threats)
                if spec.norms:  # the entry's own norms: key leaves none of the threats
                    raise ConfigError(f"attacks: {spec.label!r} ({spec.attack}{spec.inner_text()}) is limited to norms "
                                      f"{', '.join(spec.norms)} (its norms: key) and the threats are {norms}; fix its "
                                      "norms or remove it")
                raise ConfigError(
                    f"attacks: {spec.label!r} ({spec.attack}{spec.inner_text()}) supports none of the configured norms "
                    f"({norms}); remove it"
                )
        return labelled


def flag_error(exc: ConfigError, names: Mapping[str, str]) -> ConfigError:
    """``exc`` naming the flag an overridden key came from (``names``: key → flag, :meth:`EvalConfig.with_overrides`,
    :func:`kwta_robust.commands.common.flags_named`) where its field is that key or a field inside it
    (``n_examples: must be >= 1, got 0`` → ``--n-examples: must be >= 1, got 0``); else ``exc`` as it is. An error
    raised with a whole message (no ``field``) is read as ``field: detail`` up to its first ``": "``; an
    :class:`~kwta_robust.errors.OriginFixError` of the key ends in its fix worded for the flag."""
    field, detail = exc.field, exc.detail
    if field is None or detail is None:
        head, sep, tail = str(exc).partition(": ")
        field, detail = (head, tail) if sep else (None, None)
    for key, name in names.items():
        if field is not None and detail is not None and name != key and \
                (field == key or field.startswith((f"{key}.", f"{key}["))):
            worded = exc.flag_detail(name) if isinstance(exc, OriginFixError) and field == key else detail
            return ConfigError(field=name + field[len(key):], detail=worded)
    return exc


def _record_config(data: dict, path: str | Path, where: str = "--config") -> dict:
    """The config an evaluation record stores, when ``data`` is a record (``schema_version``, ``config`` and
    ``config_hash``: what ``evaluate`` and ``compare`` write), else ``data``: ``--config RECORD.json`` re-runs the
    evaluation a record names (same config hash, so ``kwta-robust diff`` of the two records pairs them), where
    before the record's own keys were refused as unknown config keys. A record whose config no longer hashes to its
    ``config_hash`` (edited by hand) is refused in one line, as ``table`` and resume refuse it."""
    if not {"schema_version", "config", "config_hash"} <= set(data) or not isinstance(data["config"], dict):
        return data
    if not matches_hash(data["config"], data["config_hash"]):
        raise ConfigError(f"{where}: {path} is an evaluation record whose config no longer hashes to its "
                          "config_hash (edited by hand); ask for the record as it was written, or give a YAML config")
    logger.info("%s: %s is an evaluation record; evaluating with the config it stores (config hash %s)", where,
                path, str(data["config_hash"])[:12])
    return data["config"]


def _other_command(data: Any) -> tuple[str, str] | None:
    """``(kind, command)`` when ``data``, read from an evaluation config's path, is the config of another command:
    a sweep's (``train``, ``grid`` and ``eval``) or a training's (``arch``, no ``threats``); else ``None``."""
    if not isinstance(data, dict):
        return None
    if {"train", "grid", "eval"} <= set(data):
        return "sweep", "kwta-robust sweep"
    if "arch" in data and "threats" not in data:
        return "training", "kwta-robust train --config"
    return None


def load_config(path: str | Path, *, flags: Mapping[str, str] | None = None, where: str = "--config",
                **overrides: Any) -> EvalConfig:
    """Read a YAML config and apply CLI overrides (``None`` values ignored; ``flags``: the flag each came from, which
    its error names, :meth:`EvalConfig.with_overrides`; ``where``: how errors name the path)."""
    cfg = EvalConfig.from_yaml(path, where)
    cfg = cfg.with_overrides(flags=flags, **overrides) if any(v is not None for v in overrides.values()) else cfg
    warn_seed_overlaps(cfg)
    return cfg


def warn_seed_overlaps(cfg: EvalConfig) -> None:
    """The one warning line when explicit seeds make attacks of ``cfg`` draw the same random numbers
    (:func:`kwta_robust.bpda_seeds.warn_overlapping_stage_seeds`), logged where a command reads its config
    (:func:`load_config`, :func:`kwta_robust.api.as_config`, the sweep's reading): validation re-runs at every
    override (``--n-examples``, ``--seed``), ``--data`` and in every shard or cell worker, and would repeat it."""
    warn_overlapping_stage_seeds(cfg.labelled_attacks(10))
