"""Evaluation records: the one source every table and plot is rendered from.

An :class:`EvalRecord` holds everything needed to re-check or re-render an evaluation: the model description
(architecture, activation, kWTA ratio and mode, measured weight sparsity, checkpoint sha256), the data set and the
sample indices, clean accuracy (and each sample's clean logit margin), per attack and epsilon the robust accuracy
with a 95 % **Wilson score** interval and per-sample flags, the per-sample worst case per epsilon, noise probes,
masking diagnostics and provenance.

Records are JSON (numbers stay numbers; NaN is written as ``null``), written atomically (temp file +
``os.replace``) and loaded with a schema-version check.

Per-sample flags (``int8`` semantics, stored as JSON integers): ``1`` survived the attack, ``0`` broken by it,
``-1`` not run (misclassified clean, or broken earlier in the cascade). In ``cascade`` mode the robust accuracy
of an attack is therefore *cumulative* (robust after it and every earlier attack of the list).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import tempfile
from collections import Counter
from importlib import metadata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable

import torch

from kwta_robust.errors import KwtaRobustError, is_whole_number
from kwta_robust.git_revision import harness_revision
from kwta_robust.record_json import RecordEncoder, plain
from kwta_robust.record_values import (SURROGATE_ESCAPE, FieldError, entry, fields_of, integer, integers,
                                      json_problem, real, reals, shown, text, unencodable_field)
from kwta_robust.safe_paths import is_torch_file

SCHEMA_VERSION = 3
#: Schema versions this code reads: 2 added ``detection`` (the layer probe) and ``AttackResult.bpda_layers``;
#: 3 seeds every batch of an attack from the unit's ``seed`` and the ids of the batch's samples (batches: a fixed
#: partition of the selection by ``batch_size``), so sharded and unsharded runs agree; the parts of a sharded run
#: carry ``dataset.part``. Older records stay readable; only records of this schema are resumed.
READABLE_SCHEMAS: tuple[int, ...] = (1, 2, 3)
CI_METHOD = "wilson"
CI_LEVEL = 0.95
Z95 = 1.959963984540054  # standard normal quantile for a two-sided 95 % interval


class RecordError(KwtaRobustError):
    """A record file that is missing, not JSON, or of an unknown schema."""


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927); ``(nan, nan)`` for ``n == 0``.

    Preferred over the normal approximation because it stays inside [0, 1] and behaves at 0 % and 100 %, which
    robust accuracies often hit.
    """
    if n <= 0:
        return (math.nan, math.nan)
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, {n}], got {successes}")
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact bounds at the edges (no rounding residue)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return (low, high)


@dataclass
class Flag:
    """A diagnostics flag: ``code`` (stable identifier), ``severity`` (``critical`` | ``warning`` | ``info``),
    a message naming the evidence, and the evidence as numbers."""

    code: str
    severity: str
    message: str
    evidence: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "flag") -> "Flag":
        return cls(entry(data, "code", where), entry(data, "severity", where), entry(data, "message", where),
                   dict(data.get("evidence") or {}))


@dataclass
class Accuracy:
    """``correct`` of ``n`` with the Wilson interval."""

    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float

    @classmethod
    def of(cls, correct: int, n: int) -> "Accuracy":
        lo, hi = wilson_interval(correct, n)
        return cls(n, correct, correct / n if n else math.nan, lo, hi)

    @classmethod
    def from_dict(cls, data: dict, where: str = "accuracy") -> "Accuracy":
        """Counts must be JSON integers and the rest numbers or ``null`` (:mod:`kwta_robust.record_values`)."""
        n, correct = (integer(entry(data, k, where), f"{where}.{k}") for k in ("n", "correct"))
        acc, low, high = (real(entry(data, k, where), f"{where}.{k}") for k in ("accuracy", "ci_low", "ci_high"))
        return cls(n, correct, acc, low, high)


@dataclass
class AttackResult:
    """One attack at one threat model (``norm``, ``eps``) over the ``n`` evaluated samples.

    ``robust`` counts flag-1 samples; ``n_attacked`` samples were attacked and ``n_broken`` of them broken.
    ``position`` is the attack's index in the suite (cascade order); ``cumulative`` is True in cascade mode.
    ``violations``: attacked samples whose raw output lay outside the threat model (projected before scoring);
    ``max_violation``: the largest excess. ``queries``: forward plus backward passes through the model, per input
    row, while the attack ran (counted by :func:`attacks.queries.count_queries`; ``None`` if it never ran).
    ``margins``: per sample, the margin ``max_{j≠y} z_j − z_y`` of the attack's output on the model, as the runner
    re-classified it (positive: broken); ``None`` where not attacked (or non-finite logits). For a survivor it says
    how close the attack came; the budget check re-attacks the survivors that came closest. Empty in a record
    written before margins were stored. With several draws per verdict (a randomized model), the margin of the vote
    shares ``max_{j≠y} p_j − p_y`` (:mod:`attacks.verdicts`).
    ``error_rates``: with several draws per verdict, per sample the fraction of draws the attack's output was
    misclassified in (``None`` where not attacked); empty with one draw.
    ``settings``: the attack's effective hyperparameters as JSON data — the given ``params`` and every default
    the built attack held, inner attacks nested, the seed left out (:func:`attacks.settings.attack_settings`;
    ``"_complete": false`` with a ``"_note"`` where they cannot be complete); ``None`` in a record written before
    they were stored. ``params`` stays what the config gave (the config's identity).
    """

    label: str
    attack: str
    kind: str
    single_step: bool
    params: dict
    norm: str
    eps: float
    eps_text: str
    position: int
    seed: int
    cumulative: bool
    robust: Accuracy
    n_attacked: int
    n_broken: int
    flags: list[int]
    wall_time_s: float
    violations: int
    max_violation: float
    queries: int | None = None
    source: str | None = None  # transfer attacks: the source model's name
    bpda_layers: dict | None = None  # BPDA attacks: {layer acted on: "native" | "wrapped <kind>"}; {} = none
    margins: list[float | None] = field(default_factory=list)
    error_rates: list[float | None] = field(default_factory=list)
    settings: dict | None = None

    @property
    def key(self) -> tuple[str, str, float]:
        return (self.label, self.norm, self.eps)

    @classmethod
    def from_dict(cls, data: dict, where: str = "attack result") -> "AttackResult":
        data = dict(fields_of(cls, data, where))
        data["robust"] = Accuracy.from_dict(data["robust"], f"{where}.robust")
        data["max_violation"] = real(data["max_violation"], f"{where}.max_violation")
        data["wall_time_s"] = real(data["wall_time_s"], f"{where}.wall_time_s")  # null: NaN, "not measured"
        data["margins"] = reals(data.get("margins"), f"{where}.margins")
        data["error_rates"] = reals(data.get("error_rates"), f"{where}.error_rates")
        settings = data.get("settings")
        if settings is not None and not isinstance(settings, dict):
            raise FieldError(f"{where}.settings must be a JSON object, got {type(settings).__name__}")
        return cls(**data)


@dataclass
class WorstCase:
    """Per-sample worst case over ``attacks`` (labels, cascade order) at one threat model.

    ``first_broken_by[i]``: index into ``attacks`` of the attack that broke sample ``i`` first, ``-1`` never
    broken, ``-2`` misclassified clean.
    """

    norm: str
    eps: float
    eps_text: str
    attacks: list[str]
    robust: Accuracy
    first_broken_by: list[int]

    @classmethod
    def from_dict(cls, data: dict, where: str = "worst case") -> "WorstCase":
        data = dict(fields_of(cls, data, where))
        data["robust"] = Accuracy.from_dict(data["robust"], f"{where}.robust")
        return cls(**data)


@dataclass
class NoiseResult:
    """One noise probe (``attacks.noise.run_noise_probe``): its settings and the probe's own result dict."""

    kind: str
    levels: list[float]
    draws: int
    seed: int
    result: dict
    wall_time_s: float

    @classmethod
    def from_dict(cls, data: dict, where: str = "noise probe") -> "NoiseResult":
        return cls(**fields_of(cls, data, where))


@dataclass
class EvalRecord:
    """Everything one evaluation produced (see the module docstring). ``status`` is ``partial`` while running."""

    schema_version: int
    status: str
    model: dict
    dataset: dict
    clean: Accuracy
    clean_flags: list[int]
    config: dict
    config_hash: str
    mode: str
    results: list[AttackResult] = field(default_factory=list)
    sanity: list[AttackResult] = field(default_factory=list)
    worst_case: list[WorstCase] = field(default_factory=list)
    noise: list[NoiseResult] = field(default_factory=list)
    probes: dict = field(default_factory=dict)
    detection: dict = field(default_factory=dict)  # kwta_robust.detect.Detection.to_dict(): the layer probe
    diagnostics: list[Flag] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)
    ci_method: str = CI_METHOD
    ci_level: float = CI_LEVEL
    clean_margins: list[float | None] = field(default_factory=list)
    """Per sample, ``max_{j≠y} z_j − z_y`` of the model's logits on the clean input (negative: correct; the closer
    to 0, the closer to the decision boundary; ``None`` where not finite). The budget check re-attacks the
    survivors closest to breaking. Absent (``[]``) in records written before it was added."""
    clean_error_rates: list[float | None] = field(default_factory=list)
    """With several draws per verdict (a randomized model, ``provenance.randomness``), per sample the fraction of
    draws that misclassified the clean input; empty with one draw."""

    # --- lookups ---------------------------------------------------------------------------------------------
    @property
    def label(self) -> str:
        return str(self.model.get("label") or self.model.get("name") or self.model.get("architecture") or "model")

    def threat_points(self) -> list[tuple[str, float]]:
        """Distinct ``(norm, eps)`` pairs in order of appearance."""
        # dict keys match as the list's ``in`` did (the same object or ==), in linear time (it was quadratic)
        return list(dict.fromkeys((item.norm, item.eps) for item in list(self.results) + list(self.worst_case)))

    def result(self, label: str, norm: str, eps: float) -> AttackResult | None:
        for r in self.results:
            if r.key == (label, norm, eps):
                return r
        return None

    def results_at(self, norm: str, eps: float) -> list[AttackResult]:
        return sorted((r for r in self.results if r.norm == norm and r.eps == eps), key=lambda r: r.position)

    def worst(self, norm: str, eps: float) -> WorstCase | None:
        for w in self.worst_case:
            if (w.norm, w.eps) == (norm, eps):
                return w
        return None

    def put_result(self, result: AttackResult) -> None:
        self.results = [r for r in self.results if r.key != result.key] + [result]

    def put_worst(self, worst: WorstCase) -> None:
        self.worst_case = [w for w in self.worst_case if (w.norm, w.eps) != (worst.norm, worst.eps)] + [worst]

    def noise_score(self) -> float | None:
        """Numenta noise score (total correct over all levels) of the first ``numenta`` probe, if any."""
        for probe in self.noise:
            score = probe.result.get("noise_score")
            if probe.kind == "numenta" and score is not None:
                return float(score)
        return None

    # --- IO --------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return plain(self)

    @classmethod
    def from_dict(cls, data: Any, source: str = "record") -> "EvalRecord":
        if not isinstance(data, dict):
            raise RecordError(f"{source}: not an evaluation record (expected a JSON object)")
        version = data.get("schema_version")
        if not is_whole_number(version) or version not in READABLE_SCHEMAS:  # true == 1 and 3.0 == 3 to Python
            newer = is_whole_number(version, max(READABLE_SCHEMAS) + 1)
            raise RecordError(f"{source}: schema_version {shown(version)} is not supported (this version reads "
                              f"{', '.join(map(str, READABLE_SCHEMAS))})"
                              + ("; it was written by a newer kwta-robust: upgrade to read it" if newer else ""))
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(n for n in names if n not in data
                         and cls.__dataclass_fields__[n].default is dataclasses.MISSING
                         and cls.__dataclass_fields__[n].default_factory is dataclasses.MISSING)
        if missing:
            raise RecordError(f"{source}: record lacks field {missing[0]!r}")
        unknown = sorted(set(data) - names)
        if unknown:
            raise RecordError(f"{source}: unknown record field {shown(unknown[0])}")
        for key in ("clean_flags", "clean_margins", "clean_error_rates", "results", "sanity", "worst_case", "noise",
                    "diagnostics"):
            if key in data and not isinstance(data[key], list):
                raise RecordError(f"{source}: record field {key!r} must be a list, got {type(data[key]).__name__}")
        for key in ("model", "dataset", "config", "clean"):  # the mappings the rest is read from
            if not isinstance(data.get(key), dict):
                raise RecordError(f"{source}: record field {key!r} must be a JSON object, got "
                                  f"{type(data.get(key)).__name__}")
        for key in ("probes", "detection", "provenance"):  # may be absent or null (empty)
            if data.get(key) is not None and not isinstance(data[key], dict):
                raise RecordError(f"{source}: record field {key!r} must be a JSON object, got "
                                  f"{type(data[key]).__name__}")
        try:
            return cls(
                schema_version=version,
                status=text(data["status"], "status"),
                model=dict(data["model"]),
                dataset=dict(data["dataset"]),
                clean=Accuracy.from_dict(data["clean"], "clean"),
                clean_flags=integers(data["clean_flags"], "clean_flags"),
                config=dict(data["config"]),
                config_hash=text(data["config_hash"], "config_hash"),
                mode=text(data["mode"], "mode"),
                results=[AttackResult.from_dict(r, f"results[{i}]") for i, r in enumerate(data.get("results", []))],
                sanity=[AttackResult.from_dict(r, f"sanity[{i}]") for i, r in enumerate(data.get("sanity", []))],
                worst_case=[WorstCase.from_dict(w, f"worst_case[{i}]")
                            for i, w in enumerate(data.get("worst_case", []))],
                noise=[NoiseResult.from_dict(n, f"noise[{i}]") for i, n in enumerate(data.get("noise", []))],
                probes=dict(data.get("probes") or {}),
                detection=dict(data.get("detection") or {}),
                diagnostics=[Flag.from_dict(f, f"diagnostics[{i}]")
                             for i, f in enumerate(data.get("diagnostics", []))],
                provenance=dict(data.get("provenance") or {}),
                ci_method=text(data.get("ci_method", CI_METHOD), "ci_method"),
                ci_level=real(data.get("ci_level", CI_LEVEL), "ci_level", nullable=False),
                clean_margins=reals(data.get("clean_margins"), "clean_margins"),
                clean_error_rates=reals(data.get("clean_error_rates"), "clean_error_rates"),
            )
        except FieldError as exc:  # a field of the wrong type or shape, named by its path
            raise RecordError(f"{source}: {exc}") from None
        except (KeyError, TypeError, ValueError, OverflowError) as exc:  # OverflowError: an int past float range
            raise RecordError(f"{source}: malformed record ({type(exc).__name__}: {exc})") from None


VERSIONED_PACKAGES: tuple[str, ...] = ("torchvision", "torchattacks", "foolbox", "numpy")


def package_versions() -> dict[str, str | None]:
    """Versions for provenance (records and checkpoints): Python, torch (with its build tag, e.g. ``+cu130``),
    CUDA, this package, and the installed dependencies (``None`` where one is missing); plain strings only. Imported
    from a git clone, also its commit (``kwta_robust_git``, :func:`~kwta_robust.git_revision.harness_revision`):
    the version string stays the same between two commits."""
    from kwta_robust import __version__

    out: dict[str, str | None] = {
        "python": platform.python_version(),
        "torch": str(torch.__version__),  # a plain str: TorchVersion is rejected by weights_only loading
        "cuda": torch.version.cuda,
        "kwta_robust": __version__,
    }
    for pkg in VERSIONED_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    revision = harness_revision()
    if revision is not None:  # a wheel install: absent
        out["kwta_robust_git"] = revision
    return out


def file_mode() -> int:
    """Permissions a normally created file gets (``0o666`` minus the umask); temp files start at ``0o600``."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write a file atomically: ``write`` fills a temp file in the same folder (binary), which is fsynced, given
    normal permissions and moved over ``path`` with ``os.replace``; on any error the temp file is removed and an
    existing ``path`` is left intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, file_mode())  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def save_record(record: EvalRecord, path: str | Path, encoder: RecordEncoder | None = None) -> None:
    """Write ``record`` as JSON atomically: the bytes of ``json.dumps(record.to_dict(), indent=1, allow_nan=False)``
    (NaN turned into ``null``), encoded by :mod:`kwta_robust.record_json`. A run that saves after every unit passes
    its own ``encoder``, which keeps the text of the units saved before (each save then encodes only what is new)."""
    atomic_write_text(path, (encoder or RecordEncoder()).encode(record) + "\n")


def load_record(path: str | Path) -> EvalRecord:
    """Read a record, checking the schema version; :class:`RecordError` (one line) if unusable."""
    return parsed_record(path)[1]


def parsed_record(path: str | Path) -> tuple[Any, EvalRecord]:
    """The record file at ``path`` read once, as its parsed JSON and as the record :func:`load_record` returns: a
    caller that compares the JSON as written (``kwta-robust diff``) still refuses what :func:`load_record` refuses."""
    data = record_data(path)
    return data, EvalRecord.from_dict(data, source=str(Path(path)))


def record_data(path: str | Path) -> Any:
    """The JSON value of the record file at ``path``, read and parsed once (``kwta-robust diff`` compares it as
    parsed, after :func:`kwta_robust.record_checks.checked_record_data` checked it); :class:`RecordError` (one line)
    where the file cannot be read, is not JSON or holds text that is not valid Unicode."""
    path = Path(path)
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except (OSError, ValueError) as exc:  # a name too long for the file system, a NUL byte (Path takes both)
        raise RecordError(f"record: cannot read {str(path)[:200]!r} ({getattr(exc, 'strerror', None) or exc}); give "
                          "the path of a JSON record") from None
    if is_dir:
        raise RecordError(f"record: {path} is a folder; give the JSON record files (e.g. {path}/*.json)")
    if not is_file:
        raise RecordError(f"record: no such file {str(path)!r}")
    try:
        text = path.read_text(encoding="utf-8")  # a record is UTF-8 JSON, whatever the locale
        data = json.loads(text)
    except OSError as exc:  # no permission to read it, an I/O error
        raise RecordError(f"record: cannot read {path} ({exc.strerror or type(exc).__name__}); check its "
                          "permissions") from None
    except json.JSONDecodeError as exc:
        raise RecordError(f"record: {path} is not valid JSON ({json_problem(exc)})") from None
    except ValueError as exc:  # UnicodeDecodeError, a number too long to convert (Python's limit)
        if isinstance(exc, UnicodeDecodeError) and is_torch_file(path):  # a checkpoint or weights given as a record
            raise RecordError(f"record: {path} is not valid JSON (a PyTorch file: a checkpoint or weights, not a "
                              "record); give the JSON record evaluate or compare wrote (--out, --out-dir)") from None
        raise RecordError(f"record: {path} is not valid JSON ({exc})") from None
    except RecursionError:  # json's decoder recurses per nesting level
        raise RecordError(f"record: {path} is not a record (JSON nested too deeply to read)") from None
    bad = unencodable_field(data) if SURROGATE_ESCAPE.search(text) else None  # only a \uD8xx-\uDFxx escape holds one
    if bad is not None:
        raise RecordError(f"record: {path}: {bad} holds text that is not valid Unicode (a lone surrogate such as "
                          "\\ud800); write that text without it")
    return data


def as_records(records: Iterable[Any] | None, where: str) -> list[EvalRecord]:
    """``records`` as a list, each an :class:`EvalRecord` (a loaded JSON dict failed deep in a renderer with an
    ``AttributeError``); a one-line :class:`RecordError` naming ``where`` otherwise. ``None`` is no records."""
    records = list(records or [])
    bad = next((r for r in records if not isinstance(r, EvalRecord)), None)
    if bad is not None:
        raise RecordError(f"{where}: expected EvalRecord objects, got {type(bad).__name__}; read a record with "
                          "kwta_robust.results.load_record or EvalRecord.from_dict")
    return records


def load_records(paths: Iterable[str | Path]) -> list[EvalRecord]:
    """The records at ``paths`` (:func:`load_record` each), to render side by side: records that share a model label
    (one weights file evaluated under two configs or factory arguments) are told apart by their paths, which label
    them ``gsc (runs/a.json)``, so no table shows two columns, or a paired row, under one name (in memory only)."""
    paths = list(paths)
    records = [load_record(p) for p in paths]
    counts = Counter(r.label for r in records)
    for path, record in zip(paths, records):
        if counts[record.label] > 1:
            record.model["label"] = f"{record.label} ({path})"
    return records
