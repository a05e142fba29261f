"""Are two evaluation records the same result? Every field compared, but the ones that differ between identical runs.

Two runs of one config on one model, with the same torch thread count on the same kind of CPU, write records equal
in every field but the **volatile** ones (:data:`VOLATILE_KEYS` anywhere, :data:`VOLATILE_PATHS` at their place):
wall times and timestamps, the command line, the paths and file digest of a checkpoint trained afresh (its file
holds its training's wall times and its own path; ``model.state_sha256``, the weights, is compared) or of a
bring-your-own model's weights file (the same file copied elsewhere is the same model), and the folder a sweep wrote
a cell to (``model.sweep_cell.directory``: the same sweep under another --out-dir), and where the data sat (a data
file's path, the ``data_root`` and the folder it resolved to, ``provenance.data_root``, where a resumed run read
them: ``provenance.resumed_data``). A resumed run is the
same result as one that was not interrupted: its resumptions' devices, thread counts and determinism settings
(``provenance.resumed_on`` / ``resumed_threads`` / ``resumed_determinism``) are compared only where they are not
the first run's.
:func:`record_differences` lists every other field that differs, as ``path: a != b``; ``kwta-robust diff`` prints
them (:mod:`kwta_robust.commands.diff`) with :func:`differences`' words after the path (which attack and threat point,
noise probe, level, sample and its data set id: :mod:`kwta_robust.diff_labels`), and the cause where one is known
(:data:`CAUSES`: e.g. an attack's ``settings``, its effective hyperparameters, differ when another version's defaults
ran). The records' results, sanity results, worst cases and noise probes are compared paired by key, not position.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple, Sequence

from attacks.settings import comparable_settings
from kwta_robust.config_digest import UNHASHED_KEYS, identity_hash, without_location
from kwta_robust.diff_labels import ENTRY_KEYS, detail_words, entries_words, entry_pairs
from kwta_robust.errors import short_repr
from kwta_robust.fresh_record import DETECTED_ACTIVATION, DETECTED_RELU, is_ran_name
from kwta_robust.json_diff import ABSENT, json_differences

#: Keys ignored wherever they occur: durations and timestamps (``resumed_at``: when each resumed run started).
VOLATILE_KEYS: frozenset[str] = frozenset({"wall_time_s", "started_at", "finished_at", "resumed_at", "seconds",
                                           "train_seconds"})
#: Fields ignored at these paths (``[]`` stands for any list index): the command line, a checkpoint's file and the
#: folder a sweep wrote a cell to (the same sweep under another --out-dir or executor computes the same cell) and the
#: path of a bring-your-own model's weights file (the same weights elsewhere: ``model.state_sha256`` is compared).
VOLATILE_PATHS: frozenset[str] = frozenset({
    "provenance.command", "model.source", "model.checkpoint_sha256", "model.training.training.out",
    "model.sweep_cell.directory", "model.training.weights", "provenance.resumed_data", "provenance.data_root",
})
#: Why a difference in these fields can move numbers, printed with it (``[]``: any list index).
CAUSES: dict[str, str] = {
    "provenance.torch_threads": "CPU results are bit-reproducible for one torch thread count only: --threads",
    "provenance.device": "results are bit-reproducible on one device kind only",
    "provenance.device_name": "results are bit-reproducible on one kind of processor only",
    "provenance.layout": "the memory layout changes how convolutions sum",
    "provenance.determinism": "torch's determinism, cuDNN and TF32 settings choose other GPU kernels (TF32: ~1e-3)",
    "provenance.versions.kwta_robust_git": "another commit of kwta-robust: its code may compute other numbers",
    "provenance.versions": "another torch (or other package) version can compute other bits",
    "provenance.resumed_threads": "resumed with another torch thread count: later units may differ in the last bits",
    "provenance.resumed_on": "resumed on another device: its later units may differ in the last bits",
    "provenance.resumed_determinism": "resumed under other torch determinism/TF32 settings: later units may differ",
    "config_hash": "another config: another evaluation (batch_size included)",
    "results[].settings": "the attack ran with other effective settings: another version's defaults",
    "sanity[].settings": "the sanity attack ran with other effective settings: another version's defaults",
}
#: Keys whose values are verdicts or what the tables print from them (counts, accuracies and their intervals,
#: per-sample flags, the worst case's first attack, flags of the diagnostics, a noise probe's accuracies and score):
#: a difference elsewhere (margins, query counts, the probes' gradient statistics, provenance) moves no number a
#: table prints (:func:`verdicts_summary`).
VERDICT_KEYS: frozenset[str] = frozenset({
    "status", "clean", "clean_flags", "clean_error_rates", "results", "sanity", "worst_case", "noise", "diagnostics",
    "robust", "correct", "accuracy", "ci_low", "ci_high", "n", "n_attacked", "n_broken", "flags", "first_broken_by",
    "error_rates", "score", "config", "config_hash", "dataset", "model", "detection", "schema_version",
})
#: The fields in which a record names what the layer probe found in a model of one's own (session 50:
#: ``activation`` ``top-k (detected)``, the describer's reading kept as ``activation_layers``, the gates' k/N and
#: grouping; session 51: ``model.training``'s copy of the describer's reading named alike), each under ``model.`` and
#: ``model.training.`` (:func:`kwta_robust.fresh_record.probed_model`); the probe's own findings are compared in
#: ``detection``. A record written before them lacks them (or says the describer's ``relu`` / ``none``). Session 52:
#: the ReLUs one forward applied (``relu_calls``, in ``model`` and in the probe's own ``detection``:
#: :data:`PROBE_COUNTS`), and ``activation`` ``relu (detected)`` where the describer said ``none``. Session 53: the
#: other activations it applied (``other_activations``), and ``activation`` named from all that ran
#: (``gelu (detected)``, ``mixed (detected: gelu 12, relu 1)``: :func:`kwta_robust.fresh_record.ran_name`).
PROBE_READING: tuple[str, ...] = ("activation_layers", "detected_kwta_ratio", "detected_kwta_mode", "relu_calls",
                                  "other_activations")
PROBE_PATHS: tuple[str, ...] = tuple(f"{section}.{key}" for section in ("model", "model.training")
                                     for key in PROBE_READING)
#: The probe's findings a record written before lacks (no verdict: the ReLUs counted, :mod:`kwta_robust.relu_calls`).
PROBE_COUNTS: tuple[str, ...] = ("detection.relu_calls", "detection.other_activations")
#: Each activation the probe names and the describer's reading a record written before held in its place; any
#: other name from what a forward ran (:func:`~kwta_robust.fresh_record.is_ran_name`): :data:`RAN_OLDER`.
PROBE_NAMES: dict[str, tuple[str, ...]] = {DETECTED_ACTIVATION: ("relu", "none"), DETECTED_RELU: ("none",)}
#: What a record written before held in place of ``gelu (detected)``, ``mixed (detected: ...)``: the describer's
#: reading, or ``relu (detected)`` (one ReLU among the other activations).
RAN_OLDER: tuple[str, ...] = ("relu", "none", DETECTED_RELU)


def _older_names(name: Any) -> tuple[str, ...]:
    """The readings a record written before held in place of the probe's name ``name`` (none: not one)."""
    if name in PROBE_NAMES:
        return PROBE_NAMES[name]
    return RAN_OLDER if is_ran_name(name) else ()
#: Fields of ``model`` that describe the model as a newer version records it, no verdict: the safetensors file's
#: ``__metadata__`` (session 49) and what the layer probe found in a model of one's own (:data:`PROBE_READING`).
DESCRIPTION_PATHS: tuple[str, ...] = (
    "model.training.weights_metadata", "model.training.weights_metadata_left_out",
    "model.training.weights_shards.metadata", "model.training.weights_shards.metadata_left_out",
    *PROBE_PATHS)
#: Where a record names a model's activation (:func:`kwta_robust.fresh_record.probed_model` names both).
ACTIVATION_PATHS: tuple[str, ...] = ("model.activation", "model.training.activation")
#: Where a record keeps an attack's effective settings (a record written before them has none).
SETTINGS_FIELDS: frozenset[str] = frozenset({"results[].settings", "sanity[].settings"})
#: A resumed run's lists (``kwta_robust.resume.note_resume``) and the first run's field they repeat when unchanged.
RESUMED_AS: dict[str, str] = {"resumed_on": "device", "resumed_threads": "torch_threads",
                               "resumed_determinism": "determinism"}


class Difference(NamedTuple):
    """One field that differs: its ``path`` (``results[6].margins[0]``), the entry and place in words (``words``:
    ``bpda-smooth, Linf 0.1; sample 0, data set id 209``, ``""`` outside the entry lists), and the two values
    (:data:`~kwta_robust.json_diff.ABSENT` where one record lacks it)."""

    path: str
    words: str
    first: Any
    second: Any

    @property
    def line(self) -> str:
        """``path: a != b`` (``path: only in the first`` / ``second``), as :func:`record_differences` lists it."""
        return f"{self.path}: {self._values()}"

    @property
    def labelled(self) -> str:
        """:attr:`line` with the words after the path: ``results[6].margins[0] (bpda-smooth, Linf 0.1; sample 0,
        data set id 209): 0.12 != 0.15``."""
        return f"{self.path} ({self.words}): {self._values()}" if self.words else self.line

    def _values(self) -> str:
        if self.first is ABSENT or self.second is ABSENT:
            return f"only in the {'first' if self.second is ABSENT else 'second'}"
        return f"{short_repr(self.first)} != {short_repr(self.second)}"


def record_differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Every field of the JSON values ``a`` and ``b`` (two records as loaded by ``json.load``) that differs, as
    ``"path: a != b"`` (``"path: only in the first"`` / ``"... second"`` for a missing key), skipping the
    volatile fields: the :attr:`Difference.line` of each of :func:`differences`."""
    return [found.line for found in differences(a, b, path)]


def differences(a: Any, b: Any, path: str = "") -> list[Difference]:
    """Every field of the JSON values ``a`` and ``b`` that differs (:func:`record_differences`), named in words too.

    Two records' entry lists (``results``, ``sanity``, ``worst_case``, ``noise``) are compared entry by entry,
    paired by key (:func:`~kwta_robust.diff_labels.entry_pairs`: the attack's label and threat point, the threat
    point, the probe's kind), so the same entries in another order are no difference and an entry one record lacks
    is one difference, ``results[7]: only in the second`` (the index is that record's; a paired entry's path holds
    the first record's index, its words the second's where it differs). Other lists of different lengths are one
    difference (:func:`~kwta_robust.json_diff.json_differences`, where ``true`` equals ``1``). In the config ``1``
    differs from ``1.0`` (``strict_number``) and ``true`` from ``1`` (``strict_bool``), as in its hash: a
    ``config_hash`` that differs names its key."""
    if path or not isinstance(a, dict) or not isinstance(b, dict):
        return [Difference(where, "", u, v) for where, u, v in json_differences(a, b, path, skip=_volatile)]
    a, b = _comparable(a), _comparable(b)
    indices = [_indices(record) for record in (a, b)]
    found = []
    for key in [*a, *(k for k in b if k not in a)]:
        u, v = a.get(key, ABSENT), b.get(key, ABSENT)
        if key in ENTRY_KEYS and isinstance(u, list) and isinstance(v, list):
            found += _entry_differences(key, u, v, indices)
            continue
        found += [Difference(where, detail_words("", None, where, *indices), x, y)
                  for where, x, y in json_differences(u, v, key, skip=_volatile, strict_number=key == "config",
                                                     strict_bool=key == "config")]
    return found


def _entry_differences(name: str, first: list, second: list, indices: list[list]) -> list[Difference]:
    """The differences of the two records' lists ``name``, entry by entry paired by key (:func:`differences`)."""
    found = []
    words = entries_words(name, first), entries_words(name, second)  # a noise probe by its tables' name
    for i, j in entry_pairs(name, first, second):
        u, v = (first[i] if i is not None else ABSENT), (second[j] if j is not None else ABSENT)
        where = f"{name}[{i if i is not None else j}]"
        entry = words[0][i] if i is not None else words[1][j]
        if u is ABSENT or v is ABSENT:
            found.append(Difference(where, entry, u, v))
            continue
        moved = f"{name}[{j}] in the second" if j != i else ""
        u, v = _without_later_defaults(u, v)
        for path, x, y in json_differences(u, v, where, skip=_volatile):
            detail = detail_words(name, u, path[len(where):], *indices)
            found.append(Difference(path, "; ".join(part for part in (entry, moved, detail) if part), x, y))
    return found


def _without_later_defaults(u: Any, v: Any) -> tuple[Any, Any]:
    """Two paired entries with their ``settings`` read as the resume check reads them: a setting an attack gained
    since, at the value that runs it as before, that only one of them holds is no difference
    (:data:`attacks.settings.LATER_DEFAULTS`: a record written before APGD's ODI start against one written after)."""
    if not (isinstance(u, dict) and isinstance(v, dict) and "settings" in u and "settings" in v):
        return u, v
    settings = comparable_settings(u["settings"], v["settings"])
    return {**u, "settings": settings[0]}, {**v, "settings": settings[1]}


def _indices(record: dict) -> list:
    """The record's ``dataset.indices`` (the data set id of each evaluated sample), or ``[]``."""
    dataset = record.get("dataset")
    found = dataset.get("indices") if isinstance(dataset, dict) else None
    return found if isinstance(found, list) else []


def cause(difference: str) -> str | None:
    """Why a difference in a provenance field, or in an attack's settings, can move numbers (:data:`CAUSES`), or
    ``None``."""
    field, _, values = difference.partition(": ")
    field = re.sub(r"\[\d+\]", "[]", field)
    unstored = values.startswith("None != ") or values.endswith(" != None")  # a null settings: resumed or re-saved
    if field in SETTINGS_FIELDS and (unstored or values in ("only in the first", "only in the second")):
        return "one record was written before attack settings were stored: compare their params"
    return next((text for prefix, text in CAUSES.items()
                 if field == prefix or field.startswith((prefix + ".", prefix + "["))), None)  # a key or an item


def verdicts_summary(differences: Sequence[str | Difference]) -> str | None:
    """One line for a reader of ``diff`` who asks whether the numbers changed, for ``differences``
    (:func:`record_differences`' lines, or :func:`differences` itself: their paths are read as they are, no line
    written and split again): ``None`` where a verdict-bearing field differs (:data:`VERDICT_KEYS`, the first
    named key of the path or its last one: ``results[0].flags[7]``, ``config.batch_size``; not a config key outside
    the config's hash, :data:`~kwta_robust.config_digest.UNHASHED_KEYS`: ``config.device`` ``auto`` against ``cpu``
    is read as provenance, whose ``device`` names where each ran), else that the results are the same and what
    differs (provenance alone: another commit, thread count or device; or last-bit values such
    as margins, with the provenance that explains them)."""
    def keys(found: str | Difference) -> tuple[str, str]:
        path = found.path if isinstance(found, Difference) else found.partition(": ")[0]
        names = re.sub(r"\[\d+\]", "", path).split(".")  # an index holds no dot: the same names as split first
        if names[0] == "config" and len(names) == 2 and names[1] in UNHASHED_KEYS:  # not the evaluation: provenance
            return "provenance", names[1]  # (config.device auto vs cpu: provenance.device says where each ran)
        return names[0], names[-1]

    described = [line for line in differences if _describes_model(line)]
    found = [keys(line) for line in differences if line not in described]
    if not differences or any(first in VERDICT_KEYS and (first != "results" and first != "sanity"
                                                         or last in VERDICT_KEYS) for first, last in found):
        return None
    if all(first == "provenance" for first, _ in found):
        what = ("provenance and " if found else "") + "what a newer version records about the model (no number)"
        return (f"the results are the same: only {what if described else 'provenance'} differs (every accuracy, "
                "per-sample flag, margin and diagnostic is identical)")
    return ("the verdicts are the same: every accuracy, per-sample flag, worst case and diagnostic is identical; "
            "what differs is values such as margins, query counts or probe statistics (the last bits: see the "
            "causes above)")


def _describes_model(found: str | Difference) -> bool:
    """Whether the difference ``found`` only describes the model: a safetensors file's ``__metadata__``
    (:data:`DESCRIPTION_PATHS`), a probe reading (``activation_layers``, ``detected_kwta_*``) that one record lacks
    (written before; two records that both hold it and differ describe two models), or its ``activation`` where one
    record says the probe's :data:`DETECTED_ACTIVATION` and the other, written before, the describer's ``relu`` /
    ``none`` (which the newer one keeps as ``activation_layers``), not another kWTA reading such as ``kwta``."""
    if isinstance(found, Difference):
        path = re.sub(r"\[\d+\]", "", found.path)
        absent = found.first is ABSENT or found.second is ABSENT
        values = [v for v in (found.first, found.second) if v is not ABSENT]
    else:
        path, _, text = found.partition(": ")
        path, absent = re.sub(r"\[\d+\]", "", path), text.startswith("only in the ")
        values = [] if absent else [v.strip("'\"") for v in text.split(" != ")]
    if path in PROBE_PATHS or path in PROBE_COUNTS:  # both records hold a probe reading and it differs: two models
        return absent
    if any(path == p or path.startswith(p + ".") for p in DESCRIPTION_PATHS):
        return absent or path.startswith("model.training.")
    if path not in ACTIVATION_PATHS or absent:
        return False
    return len(values) == 2 and any(v != w and w in _older_names(v) for v in values for w in values)


def probe_relabel(found: Sequence[Difference]) -> tuple[str | None, list[Difference]]:
    """For ``diff``: where one record names a model of one's own as the layer probe found it (``activation``
    :data:`DETECTED_ACTIVATION`, :data:`DETECTED_RELU`, or from all the activations that ran: ``gelu (detected)``)
    and the other, written before, as the describer read it (``relu`` / ``none``; only ``none`` for ``relu
    (detected)``: :data:`PROBE_NAMES`; also ``relu (detected)`` for the others: :data:`RAN_OLDER`), one line saying
    so — a description change, not a result change — and ``found`` without the fields that line stands for (that
    activation, in ``model`` and its ``training`` copy, and the :data:`PROBE_READING` and :data:`PROBE_COUNTS`
    fields the older record lacks: :func:`_describes_model`); else ``None`` and ``found`` as it is.
    :func:`verdicts_summary` still reads every difference. Not where the two records hold other weights
    (``model.state_sha256``) or other layer probe findings (``detection``): a ReLU model's record against another,
    top-k, model's differs in ``activation`` alike, and that is two models, not one described anew."""
    relabels = sorted((d for d in found if d.path in ACTIVATION_PATHS and _describes_model(d)),
                      key=lambda d: ACTIVATION_PATHS.index(d.path))  # the model's own first
    if not relabels or any(d.path == "model.state_sha256" or re.match(r"detection\b", d.path)
                           and not (d.path in PROBE_COUNTS and _describes_model(d)) for d in found):
        return None, list(found)
    folded = [d for d in found if d in relabels or d.path in (*PROBE_PATHS, *PROBE_COUNTS) and _describes_model(d)]
    head = relabels[0]
    newer = 2 if head.first in _older_names(head.second) else 1
    older, name = (head.first, head.second) if newer == 2 else (head.second, head.first)
    what = {DETECTED_ACTIVATION: "top-k gates", DETECTED_RELU: "ReLUs"}.get(name, "activations that ran")
    more = [d for d in folded if d is not head]
    keys = sorted({d.path.rsplit(".", 1)[-1] for d in more}, key=lambda k: (k != "activation", k))
    sections = " and ".join(sorted({d.path.rsplit(".", 1)[0] for d in more}))
    also = (f" and {len(more)} more field(s) of the layer probe's reading ({', '.join(keys)} in {sections})"
            if more else "")
    line = (f"{head.line}{also}: a description change, not a result change: the {('first', 'second')[newer - 1]} "
            f"record (a newer version) names the {what} the layer probe found in this model, the "
            f"{('first', 'second')[2 - newer]} (written before) "
            f"{'the describer' if older in ('relu', 'none') else 'its ReLU count'}'s {short_repr(older)}")
    return line, [d for d in found if d not in folded]


def _comparable(record: Any) -> Any:
    """``record`` without where its data sat (:func:`_unlocated`), with each resumption list of its provenance
    (:data:`RESUMED_AS`) cut to the values that are not the first run's (left out where none is): a run resumed on
    the same device and thread count is not a difference."""
    record = _unlocated(record)
    prov = record.get("provenance") if isinstance(record, dict) else None
    if not isinstance(prov, dict) or not any(key in prov for key in RESUMED_AS):
        return record
    prov = dict(prov)
    for key, first in RESUMED_AS.items():
        if not isinstance(prov.get(key), list):  # not what a resumed run writes: compared as it is
            continue
        other = [v for v in prov.pop(key) if v != prov.get(first)]
        if other:
            prov[key] = other
    return {**record, "provenance": prov}


def _unlocated(record: Any) -> Any:
    """``record`` without the location of its data, which does not name them (the config hash leaves it out,
    :func:`~kwta_robust.config_digest.without_location`): its config's ``data_root`` and data file path (its
    ``sha256`` is compared), ``dataset.name`` where that is the data file's path, and its ``config_hash`` as this
    version hashes its config (:func:`~kwta_robust.config_digest.identity_hash`; a record hashed with its data's
    path, before 2026-12-07, is the same evaluation)."""
    config = record.get("config") if isinstance(record, dict) else None
    if not isinstance(config, dict):
        return record
    unlocated, spec, dataset = without_location(config), config.get("dataset"), record.get("dataset")
    record = {**record, "config": unlocated}
    record["config_hash"] = identity_hash(config, record.get("config_hash"))  # a stored hash may name the path too
    if isinstance(spec, dict) and "file" in spec and spec != unlocated["dataset"] and isinstance(dataset, dict):
        record["dataset"] = {key: value for key, value in dataset.items() if key != "name"}  # the file's path
    return record


def _volatile(path: str) -> bool:
    last = path.rsplit(".", 1)[-1]
    return re.sub(r"\[\d+\]$", "", last) in VOLATILE_KEYS or re.sub(r"\[\d+\]", "[]", path) in VOLATILE_PATHS
