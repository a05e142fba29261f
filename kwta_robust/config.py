"""Evaluation configs: typed dataclasses read from YAML and validated with one-line errors.

Every key is documented, with a complete commented example, in ``eval_configs/README.md``. Summary::

    dataset: mnist5k          # data set registry name (kwta_robust.data), or {file: PATH} (kwta_robust.datafile)
    split: test               # split of that data set
    data_root: null           # folder with the data (null: the data set's default location)
    n_examples: 1000          # first n of a seeded permutation of the split (null: the whole split)
    sample_seed: null         # seed of that permutation (null: use `seed`)
    batch_size: 250
    device: auto              # auto | cpu | cuda | cuda:1 ...
    seed: 0                   # every attack is seeded from seed + a stable per-(attack, norm, eps) offset
    mode: cascade             # cascade | independent
    threats: [{norm: linf, epsilons: [0.1, "8/255"]}]
    suite: null               # optional preset expanded via attacks.suites.get_suite(name, num_classes)
    attacks: [{attack: pgd, params: {...}, norms: [linf], label: pgd-100}]
    bpda_layers: auto         # modules BPDA acts on (kwta_robust.bpda_layers); also per BPDA attack
    transfer: {attack: pgd, params: {}}    # inner attack of transfer attacks added by `compare`
    noise: [{kind: numenta, levels: [0.0, 0.05], draws: 3}]
    diagnostics: {enabled: true, gradient_batch: 64, sanity: {...} | null, thresholds: {...}}

Errors are :class:`~kwta_robust.errors.ConfigError` with a message naming the field (``attacks[2].params``) and the
fix; unknown keys list the valid ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import yaml

from attacks.base import NORMS, AttackConfigError, attack_info, create_attack, format_eps, parse_eps
from kwta_robust.bpda_layers import DEFAULT as BPDA_LAYERS_DEFAULT
from kwta_robust.bpda_layers import attack_bpda_layers, bpda_layers_value, parse_bpda_layers
from kwta_robust.datafile import DataFileSpec, parse_dataset, resolve_relative
from kwta_robust.diagnostics import Thresholds
from kwta_robust.errors import ConfigError

logger = logging.getLogger(__name__)

MODES: tuple[str, ...] = ("cascade", "independent")
#: Attacks that need objects a YAML file cannot hold; ``compare`` adds them (see ``transfer:``).
PROGRAMMATIC_ATTACKS: tuple[str, ...] = ("transfer",)


# ---------------------------------------------------------------------------------------------------------------
# small validation helpers
# ---------------------------------------------------------------------------------------------------------------
def _check_keys(data: Mapping[str, Any], valid: Sequence[str], where: str) -> None:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys, got {type(data).__name__}")
    unknown = [k for k in data if k not in valid]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(valid)}")


def _int(value: Any, where: str, minimum: int | None = None, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{where}: must be >= {minimum}, got {value}")
    return int(value)


def _float(value: Any, where: str, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{where}: must be >= {minimum}, got {value}")
    return float(value)


def _str(value: Any, where: str, allow_none: bool = False) -> str | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def _list(value: Any, where: str) -> list:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
    return list(value)


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    return dict(value)


def parse_epsilon(value: Any, norm: str, where: str) -> float:
    """Parse an epsilon (``0.3``, ``"8/255"``) for ``norm`` on [0, 1] data; ConfigError naming ``where``."""
    try:
        eps = parse_eps(value, where)
    except AttackConfigError as exc:
        raise ConfigError(str(exc)) from None
    if norm == "linf" and eps > 1.0:
        raise ConfigError(f"{where}: linf epsilon {value!r} exceeds 1, the whole [0, 1] input range; use a value <= 1")
    return eps


def read_yaml(path: str | Path, where: str, *, empty_ok: bool = False) -> dict:
    """The YAML mapping in ``path``; a missing file, invalid YAML, an empty file (unless ``empty_ok``: ``{}``) or a
    top level that is not a mapping raise one-line :class:`ConfigError`s starting with ``where``."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{where}: {path} is a folder; give the path of a YAML file")
    if not path.is_file():
        raise ConfigError(f"{where}: no such file {str(path)!r}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: {path} is not UTF-8 text, so not a YAML config (a checkpoint or another binary "
                          "file?); give the YAML file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "parse error"
        raise ConfigError(f"{where}: {path} is not valid YAML{line}: {problem}") from None
    if data is None:
        if empty_ok:
            return {}
        raise ConfigError(f"{where}: {path} is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {path} must hold a mapping of keys to values at the top level")
    return data


def resolve_device(spec: str) -> torch.device:
    """``"auto"`` → CUDA when available else CPU; explicit devices are checked to exist."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device: cannot parse {spec!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {spec!r} requested but CUDA is not available; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device: {spec!r} does not exist ({torch.cuda.device_count()} CUDA devices)")
    return device


def derive_seed(base: int, *keys: Any) -> int:
    """A stable seed from ``base`` and identifying keys (attack label, norm, eps): same inputs, same seed."""
    text = json.dumps([int(base), [str(k) for k in keys]])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF


# ---------------------------------------------------------------------------------------------------------------
# config sections
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ThreatSpec:
    """One norm with its epsilons (floats; ``eps_text`` keeps the notation written in the config)."""

    norm: str
    epsilons: tuple[float, ...]
    eps_text: tuple[str, ...]

    KEYS = ("norm", "epsilons")

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "ThreatSpec":
        _check_keys(data, cls.KEYS, where)
        if "norm" not in data or "epsilons" not in data:
            raise ConfigError(f"{where}: needs both 'norm' and 'epsilons'")
        norm = data["norm"]
        if norm not in NORMS:
            raise ConfigError(f"{where}.norm: unknown norm {norm!r}; use one of {', '.join(NORMS)}")
        raw = data["epsilons"]
        raw = raw if isinstance(raw, (list, tuple)) else [raw]
        if not raw:
            raise ConfigError(f"{where}.epsilons: give at least one epsilon")
        eps = tuple(parse_epsilon(v, norm, f"{where}.epsilons[{i}]") for i, v in enumerate(raw))
        if len(set(eps)) != len(eps):
            raise ConfigError(f"{where}.epsilons: duplicate epsilon values {list(raw)}")
        text = tuple(v.strip() if isinstance(v, str) else format_eps(e) for v, e in zip(raw, eps))
        return cls(norm, eps, text)

    def to_dict(self) -> dict:
        return {"norm": self.norm, "epsilons": list(self.eps_text)}


@dataclass(frozen=True)
class AttackSpec:
    """One attack of the suite: registry name, parameters, the norms it runs on (``None``: every supported norm)
    and a unique ``label`` used in records and tables."""

    attack: str
    params: dict = field(default_factory=dict)
    norms: tuple[str, ...] | None = None
    label: str = ""
    bpda_layers: tuple[str, ...] | None = None  # BPDA only; None: the config's top-level bpda_layers

    KEYS = ("attack", "params", "norms", "label", "bpda_layers")

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "AttackSpec":
        if isinstance(data, str):
            data = {"attack": data}
        _check_keys(data, cls.KEYS, where)
        if "attack" not in data:
            raise ConfigError(f"{where}: missing key 'attack' (the registry name, e.g. pgd)")
        name = _str(data["attack"], f"{where}.attack")
        if name in PROGRAMMATIC_ATTACKS:
            raise ConfigError(
                f"{where}.attack: {name!r} needs a source model; `kwta-robust compare` adds transfer attacks between "
                "the compared models (configure their inner attack under 'transfer:')"
            )
        try:
            info = attack_info(name)
        except AttackConfigError as exc:
            raise ConfigError(f"{where}.{exc}") from None
        params = _mapping(data.get("params"), f"{where}.params")
        norms = data.get("norms")
        if norms is not None:
            norms = tuple(_list(norms, f"{where}.norms"))
            for norm in norms:
                if norm not in NORMS:
                    raise ConfigError(f"{where}.norms: unknown norm {norm!r}; use one of {', '.join(NORMS)}")
                if norm not in info.norms:
                    raise ConfigError(
                        f"{where}.norms: attack {name!r} does not support {norm}; it supports {', '.join(info.norms)}"
                    )
        label = _str(data.get("label"), f"{where}.label", allow_none=True) or ""
        layers = attack_bpda_layers(name, data.get("bpda_layers"), params, where)
        try:
            create_attack(name, **{"seed": 0, **params})
        except AttackConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        return cls(name, params, norms, label, layers)

    def applies_to(self, norm: str) -> bool:
        if self.norms is not None:
            return norm in self.norms
        return norm in attack_info(self.attack).norms

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"attack": self.attack, "params": self.params}
        if self.label:
            out["label"] = self.label
        if self.norms is not None:
            out["norms"] = list(self.norms)
        if self.bpda_layers is not None:
            out["bpda_layers"] = bpda_layers_value(self.bpda_layers)
        return out


@dataclass(frozen=True)
class NoiseSpec:
    """A noise-robustness probe (``attacks.noise.run_noise_probe``): kind, levels (default: the probe's own, e.g.
    0.00, 0.05, …, 0.50 for ``numenta``), random draws per level and the probe's parameters (``value`` for
    ``numenta``)."""

    kind: str
    levels: tuple[float, ...]
    draws: int = 1
    params: dict = field(default_factory=dict)

    KEYS = ("kind", "levels", "draws", "params")

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "NoiseSpec":
        from attacks import noise

        _check_keys(data, cls.KEYS, where)
        if "kind" not in data:
            raise ConfigError(f"{where}: missing key 'kind' (one of {', '.join(noise.available_noise_probes())})")
        kind = _str(data["kind"], f"{where}.kind")
        if kind not in noise.available_noise_probes():
            raise ConfigError(f"{where}.kind: unknown noise probe {kind!r}; use one of {', '.join(noise.available_noise_probes())}")
        params = _mapping(data.get("params"), f"{where}.params")
        try:
            probe = noise.create_noise_probe(kind, **params)
        except AttackConfigError as exc:
            raise ConfigError(f"{where}.params: {exc}") from None
        levels_raw = data.get("levels")
        if levels_raw is None:
            levels = tuple(float(v) for v in probe.default_levels())
        else:
            levels = tuple(
                _float(v, f"{where}.levels[{i}]", minimum=0.0) for i, v in enumerate(_list(levels_raw, f"{where}.levels"))
            )
        if not levels:
            raise ConfigError(f"{where}.levels: give at least one level (or leave it out for the probe's defaults)")
        if probe.max_level is not None and max(levels) > probe.max_level:
            raise ConfigError(f"{where}.levels: {kind} levels are {probe.level_name}s in [0, {probe.max_level}]")
        draws = _int(data.get("draws", 1), f"{where}.draws", minimum=1)
        return cls(kind, levels, int(draws), params)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "levels": list(self.levels), "draws": self.draws, "params": self.params}


@dataclass(frozen=True)
class SanitySpec:
    """An extra attack at a very large epsilon, outside the worst case: its robust accuracy should be ~0
    (Carlini et al. 2019, §5.2: "unbounded attacks must reach 100 % success")."""

    norm: str = "linf"
    eps: float = 1.0
    eps_text: str = "1"
    attack: str = "pgd"
    params: dict = field(default_factory=dict)

    KEYS = ("norm", "eps", "attack", "params")

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "SanitySpec":
        _check_keys(data, cls.KEYS, where)
        norm = data.get("norm", "linf")
        if norm not in NORMS:
            raise ConfigError(f"{where}.norm: unknown norm {norm!r}; use one of {', '.join(NORMS)}")
        raw = data.get("eps", 1.0)
        eps = parse_epsilon(raw, norm, f"{where}.eps")
        spec = AttackSpec.from_dict(
            {"attack": data.get("attack", "pgd"), "params": data.get("params") or {}, "norms": [norm]}, where
        )
        text = raw.strip() if isinstance(raw, str) else format_eps(eps)
        return cls(norm, eps, text, spec.attack, spec.params)

    def to_dict(self) -> dict:
        return {"norm": self.norm, "eps": self.eps_text, "attack": self.attack, "params": self.params}


@dataclass(frozen=True)
class DiagnosticsSpec:
    """Gradient-masking diagnostics settings (see :mod:`kwta_robust.diagnostics`)."""

    enabled: bool = True
    gradient_batch: int = 64
    sanity: SanitySpec | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)

    KEYS = ("enabled", "gradient_batch", "sanity", "thresholds")

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "DiagnosticsSpec":
        data = _mapping(data, where)
        _check_keys(data, cls.KEYS, where)
        enabled = data.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError(f"{where}.enabled: expected true or false, got {enabled!r}")
        batch = _int(data.get("gradient_batch", 64), f"{where}.gradient_batch", minimum=1)
        sanity = data.get("sanity")
        sanity_spec = None if sanity is None else SanitySpec.from_dict(sanity, f"{where}.sanity")
        raw_thr = _mapping(data.get("thresholds"), f"{where}.thresholds")
        valid = [f.name for f in dataclasses.fields(Thresholds)]
        _check_keys(raw_thr, valid, f"{where}.thresholds")
        typed = {}
        for f in dataclasses.fields(Thresholds):
            if f.name in raw_thr:
                conv = _int if f.type in ("int", int) else _float
                typed[f.name] = conv(raw_thr[f.name], f"{where}.thresholds.{f.name}", 0)
        return cls(enabled, int(batch), sanity_spec, Thresholds(**typed))

    def to_dict(self) -> dict:
        return {
            "enabled": self.enabled,
            "gradient_batch": self.gradient_batch,
            "sanity": None if self.sanity is None else self.sanity.to_dict(),
            "thresholds": dataclasses.asdict(self.thresholds),
        }


@dataclass(frozen=True)
class TransferSpec:
    """Inner attack of the transfer attacks that ``compare`` adds (crafted on a source model, run on the target)."""

    attack: str = "pgd"
    params: dict = field(default_factory=dict)

    KEYS = ("attack", "params")

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "TransferSpec":
        data = _mapping(data, where)
        _check_keys(data, cls.KEYS, where)
        spec = AttackSpec.from_dict({"attack": data.get("attack", "pgd"), "params": data.get("params") or {}}, where)
        return cls(spec.attack, spec.params)

    def to_dict(self) -> dict:
        return {"attack": self.attack, "params": self.params}


# ---------------------------------------------------------------------------------------------------------------
# the config
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalConfig:
    """A validated evaluation config (see the module docstring and ``eval_configs/README.md``)."""

    dataset: str
    split: str = "test"
    data_root: str | None = None
    n_examples: int | None = None
    sample_seed: int | None = None
    batch_size: int = 256
    device: str = "auto"
    seed: int = 0
    mode: str = "cascade"
    threats: tuple[ThreatSpec, ...] = ()
    suite: str | None = None
    attacks: tuple[AttackSpec, ...] = ()
    bpda_layers: tuple[str, ...] = BPDA_LAYERS_DEFAULT
    transfer: TransferSpec = field(default_factory=TransferSpec)
    noise: tuple[NoiseSpec, ...] = ()
    diagnostics: DiagnosticsSpec = field(default_factory=DiagnosticsSpec)
    description: str = ""
    data_file: DataFileSpec | None = None  # set by ``dataset: {file: PATH}``; ``dataset`` is then the path

    KEYS = (
        "description", "dataset", "split", "data_root", "n_examples", "sample_seed", "batch_size", "device", "seed",
        "mode", "threats", "suite", "attacks", "bpda_layers", "transfer", "noise", "diagnostics",
    )

    # --- construction ----------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, where: str = "config") -> "EvalConfig":
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a YAML mapping at the top level, got {type(data).__name__}")
        _check_keys(data, cls.KEYS, where)
        if "dataset" not in data:
            raise ConfigError(f"{where}: missing key 'dataset' (e.g. mnist5k)")
        dataset, data_file = parse_dataset(data["dataset"])
        split = _str(data.get("split", "test"), "split")
        data_root = _str(data.get("data_root"), "data_root", allow_none=True)
        if data_file is not None and (split != "test" or data_root is not None):
            raise ConfigError(f"{'split' if split != 'test' else 'data_root'}: not used with dataset: {{file: ...}} "
                              "(a data file is one split); remove it")
        n_examples = _int(data.get("n_examples"), "n_examples", minimum=1, allow_none=True)
        sample_seed = _int(data.get("sample_seed"), "sample_seed", minimum=0, allow_none=True)
        batch_size = _int(data.get("batch_size", 256), "batch_size", minimum=1)
        device = _str(data.get("device", "auto"), "device")
        seed = _int(data.get("seed", 0), "seed", minimum=0)
        mode = data.get("mode", "cascade")
        if mode not in MODES:
            raise ConfigError(f"mode: unknown mode {mode!r}; use one of {', '.join(MODES)}")
        threats = tuple(
            ThreatSpec.from_dict(t, f"threats[{i}]") for i, t in enumerate(_list(data.get("threats") or [], "threats"))
        )
        norms = [t.norm for t in threats]
        if len(set(norms)) != len(norms):
            raise ConfigError("threats: a norm is listed twice; put all its epsilons in one entry")
        suite = _str(data.get("suite"), "suite", allow_none=True)
        if suite is not None:
            _suite_attacks(suite, 10, "suite")  # validate the name early (num_classes is re-applied at run time)
        attack_specs = tuple(
            AttackSpec.from_dict(a, f"attacks[{i}]") for i, a in enumerate(_list(data.get("attacks") or [], "attacks"))
        )
        if (attack_specs or suite) and not threats:
            raise ConfigError("threats: attacks are configured but no threat model; add threats: [{norm: linf, epsilons: [0.3]}]")
        bpda_layers = parse_bpda_layers(data.get("bpda_layers", BPDA_LAYERS_DEFAULT), "bpda_layers")
        transfer = TransferSpec.from_dict(data.get("transfer"), "transfer")
        noise = tuple(NoiseSpec.from_dict(n, f"noise[{i}]") for i, n in enumerate(_list(data.get("noise") or [], "noise")))
        diagnostics = DiagnosticsSpec.from_dict(data.get("diagnostics"), "diagnostics")
        description = data.get("description") or ""
        if not isinstance(description, str):
            raise ConfigError(f"description: expected text, got {type(description).__name__}")
        cfg = cls(
            dataset=dataset, split=split, data_root=data_root, n_examples=n_examples, sample_seed=sample_seed,
            batch_size=int(batch_size), device=device, seed=int(seed), mode=mode, threats=threats, suite=suite,
            attacks=attack_specs, bpda_layers=bpda_layers, transfer=transfer, noise=noise, diagnostics=diagnostics,
            description=description, data_file=data_file,
        )
        cfg.labelled_attacks(10)  # unique labels / norm coverage are checked now, not after data loading
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path) -> "EvalConfig":
        return cls.from_dict(resolve_relative(read_yaml(path, "--config"), Path(path).resolve().parent))

    def with_overrides(self, **overrides: Any) -> "EvalConfig":
        """Apply CLI overrides (``None`` values are ignored) and re-validate."""
        data = self.to_dict()
        data.update({k: v for k, v in overrides.items() if v is not None})
        return EvalConfig.from_dict(data)

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
        }

    def config_hash(self) -> str:
        """sha256 of the canonical config, minus what does not name a result: the ``description`` and the
        ``device`` (a run resumed on another device continues the same evaluation; the device of each run is
        recorded as provenance). ``batch_size`` is kept: attacks may batch-normalize their step schedule."""
        data = self.to_dict()
        data.pop("description")
        data.pop("device")
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    @property
    def permutation_seed(self) -> int:
        return self.seed if self.sample_seed is None else self.sample_seed

    def labelled_attacks(self, num_classes: int) -> list[AttackSpec]:
        """The suite's attacks (if any) followed by the listed ones, each with a unique label."""
        specs = (_suite_attacks(self.suite, num_classes, "suite") if self.suite else []) + list(self.attacks)
        labelled = _assign_labels(specs)
        for spec in labelled:
            if not any(spec.applies_to(t.norm) for t in self.threats):
                norms = ", ".join(t.norm for t in self.threats)
                raise ConfigError(
                    f"attacks: {spec.label!r} ({spec.attack}) supports none of the configured norms ({norms}); remove it"
                )
        return labelled


def _assign_labels(specs: Sequence[AttackSpec]) -> list[AttackSpec]:
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


def _suite_attacks(name: str, num_classes: int, where: str) -> list[AttackSpec]:
    """Expand a preset from :mod:`attacks.suites` into attack specs."""
    from attacks import suites

    if name not in suites.available_suites():
        raise ConfigError(f"{where}: unknown suite {name!r}; known suites: {', '.join(suites.available_suites())}")
    try:
        entries = suites.get_suite(name, num_classes)
    except AttackConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    specs = []
    for i, entry in enumerate(entries):
        if isinstance(entry, Mapping):
            data = dict(entry)
        else:
            data = {
                "attack": getattr(entry, "attack", None) or getattr(entry, "name"),
                "params": dict(getattr(entry, "params", {}) or {}),
            }
            label = getattr(entry, "label", None)
            if label:
                data["label"] = label
            norms = getattr(entry, "norms", None)
            if norms:
                data["norms"] = list(norms)
        specs.append(AttackSpec.from_dict(data, f"{where}[{name}][{i}]"))
    return specs


def load_config(path: str | Path, **overrides: Any) -> EvalConfig:
    """Read a YAML config and apply CLI overrides (``None`` values ignored)."""
    cfg = EvalConfig.from_yaml(path)
    return cfg.with_overrides(**overrides) if any(v is not None for v in overrides.values()) else cfg
