"""Were records shown side by side evaluated alike? The notes the tables put above their other notes.

* :func:`comparability_notes` — the records of a table (the wide and narrow ones, the HTML report): other data
  sets or samples, other evaluation configs, and other attack settings;
* :func:`settings_notes` — the one check of attack settings every table makes (a plain table of several records,
  the paired comparison of two models, one robustness matrix across its sparsity cells): an attack of one label
  that ran with other *effective* settings in some records (``AttackResult.settings``, :mod:`attacks.settings`: the
  given params and every default the attack held) gives numbers that are not comparable, whether a config asked for
  another budget or an older version of the harness had another default (PGD's step size rule). One note per label
  names its first differing setting, its values and which records hold each, ``pgd: steps 40 in k/N 0.1 × 0.5,
  100 in the other 8 cells``. The notes are returned, not logged (a command renders the same records into several
  outputs); ``kwta-robust table`` logs them once, naming the record files.

Records written before settings were stored (``settings`` ``None``) are not compared. What legitimately differs per
model is not a setting: seeds (:data:`attacks.settings.OMITTED`), a transfer attack's source model (the record's
``source``) and the layers a BPDA attack acted on (``bpda_layers``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import PurePath
from typing import Any, Sequence

from attacks.settings import comparable_settings
from kwta_robust.config_digest import identity_hash
from kwta_robust.errors import is_whole_number
from kwta_robust.json_diff import json_differences, value_text
from kwta_robust.results import EvalRecord

#: Before each note of :func:`settings_notes` (``{noun}``: what the table compares, ``records`` or ``cells``).
SETTINGS_NOTE = "attack settings differ between the {noun}, so their numbers are not comparable: "
#: After a note whose records all ran one config: versions of the harness with other attack defaults wrote them.
OTHER_VERSION = " (one config: versions with other attack defaults wrote them; evaluate them again with one version)"
#: At most this many names are listed for the settings most records share; more are counted (``the other 8 cells``).
LISTED = 2


def data_split_seed(value: Any) -> int:
    """The split a self-split data set (mnist5k, digits) is loaded with for a model's ``data_split_seed``: a whole
    number as it is, anything else (absent, ``None``, text, ``3.0``) the canonical split 0
    (:data:`kwta_robust.data.CANONICAL_SPLIT_SEED`), as :func:`kwta_robust.loading.load_eval_data` reads it."""
    return value if is_whole_number(value) else 0


def record_split_seed(record: EvalRecord) -> int | None:
    """The split seed of the data ``record`` was evaluated on (its model's ``training.data_split_seed``, read as
    :func:`data_split_seed`); ``None`` for a data file, whose samples no split seed chooses."""
    if isinstance(record.config.get("dataset"), dict):
        return None
    training = record.model.get("training")
    return data_split_seed(training.get("data_split_seed") if isinstance(training, dict) else None)


def data_set_key(record: EvalRecord) -> tuple[Any, Any]:
    """``(data set, split)`` naming the data ``record`` was evaluated on: a data file by its SHA-256 (``file
    sha256:HEX``; its ``dataset.name`` is the path it sat at on that run), else ``dataset.name``."""
    spec = record.config.get("dataset")
    if isinstance(spec, dict) and isinstance(spec.get("sha256"), str):
        return f"file sha256:{spec['sha256']}", record.dataset.get("split")
    return record.dataset.get("name"), record.dataset.get("split")


def data_set_text(record: EvalRecord) -> str:
    """The data ``record`` was evaluated on, for a note: a data file by its file name and the first 12 hex digits of
    its SHA-256 (``digits.npz (sha256 1a2b3c4d5e6f)``), as :func:`data_set_key` tells data files apart (its
    ``dataset.name`` is the path it sat at on that run: one file at two paths is one data set, two files at one
    path are two), else ``dataset.name``."""
    spec = record.config.get("dataset")
    if isinstance(spec, dict) and isinstance(spec.get("sha256"), str):
        where = spec.get("file") or record.dataset.get("name")
        name = PurePath(where).name if isinstance(where, str) and where else "data file"
        return f"{name} (sha256 {spec['sha256'][:12]})"
    return str(record.dataset.get("name"))


def same_samples(a: EvalRecord, b: EvalRecord) -> bool:
    """Whether two records were evaluated on the same samples of the same split, in the same order: the same
    indices of splits made with other seeds (mnist5k's ``data_split_seed``), or of other in-memory arrays under one
    name (the Python API's ``x``/``y``, told apart by their ``dataset.sha256``), are other images."""
    keys = ("indices", "sha256")
    return (data_set_key(a) == data_set_key(b) and all(a.dataset.get(k) == b.dataset.get(k) for k in keys)
            and len(a.clean_flags) == len(b.clean_flags) > 0 and record_split_seed(a) == record_split_seed(b))


def comparability_notes(records: Sequence[EvalRecord]) -> list[str]:
    """Warnings for records shown side by side that were not evaluated alike: other data sets or samples (their
    numbers are not paired), other evaluation configs (a column holds attacks of one name, whose budgets, seeds or
    threat points may differ), other effective attack settings (:func:`settings_notes`, by record label)."""
    if len(records) < 2:
        return []
    notes = []
    sets = {data_set_key(rec) for rec in records}  # one file at two paths: one data set
    if len(sets) > 1:
        notes.append("NOT COMPARABLE: the records were evaluated on different data sets ("
                     + ", ".join(f"{rec.label}: {data_set_text(rec)} {rec.dataset.get('split')}, n={rec.clean.n}"
                                 for rec in records) + ")")
    elif not all(same_samples(records[0], rec) for rec in records[1:]):
        notes.append("the records were evaluated on different samples of "
                     f"{data_set_text(records[0])} (n " + " / ".join(str(rec.clean.n) for rec in records)
                     + "): their differences mix the models with the samples")
    if len({identity_hash(rec.config, rec.config_hash) for rec in records}) > 1:  # a stored hash may name a path
        notes.append("the records ran different evaluation configs (config hash "
                     + " / ".join(str(rec.config_hash)[:8] for rec in records) + "): a column holds attacks of the "
                     "same name, whose budgets, seeds or threat points may differ")
    return notes + settings_notes([(rec.label, rec) for rec in records])


def stored_settings(record: EvalRecord) -> dict[str, dict]:
    """Label → the effective settings ``record`` stored for it (its attacks, then its sanity attack; a unit's
    settings depend on its label alone); a label without stored settings (an older record) is left out."""
    found: dict[str, dict] = {}
    for result in [*record.results, *record.sanity]:
        if result.settings is not None:
            found.setdefault(result.label, result.settings)
    return found


def settings_notes(named: Sequence[tuple[str, EvalRecord]], noun: str = "records") -> list[str]:
    """One note per attack label whose effective settings differ between the ``named`` records (``(name,
    record)``, as the table names them; :func:`settings_differences`)."""
    return [SETTINGS_NOTE.format(noun=noun) + line for line in settings_differences(named, noun)]


def settings_differences(named: Sequence[tuple[str, EvalRecord]], noun: str = "records") -> list[str]:
    """Per attack label whose stored settings are not the same in all ``named`` records that stored them, one line:
    ``pgd: steps 40 in A, 100 in the other 8 records`` (:func:`label_difference`); ``[]`` where they agree."""
    by_label: dict[str, list[tuple[str, EvalRecord, dict]]] = {}
    for name, record in named:
        for label, settings in stored_settings(record).items():
            by_label.setdefault(label, []).append((name, record, settings))
    lines = [label_difference(label, entries, noun) for label, entries in by_label.items()]
    return [line for line in lines if line is not None]


def _differences(a: Any, b: Any) -> list[tuple[str, Any, Any]]:
    """Every difference of two settings, as the resume check sees one (``true`` is not ``1``; an attack's settings
    replaced by another's are one difference; a setting added since at the value that runs as before, on either
    side: none, :data:`attacks.settings.LATER_DEFAULTS`); a top-level path is ``settings``."""
    a, b = comparable_settings(a, b)
    return [(path or "settings", u, v) for path, u, v in json_differences(a, b, strict_bool=True, whole_disjoint=True)]


def _related(path: str, other: str) -> bool:
    """Whether one of two setting paths holds the other (``inner`` and ``inner[0].steps``)."""
    return any(long.startswith(short) and long[len(short):len(short) + 1] in (".", "[")
               for short, long in ((path, other), (other, path)))


def label_difference(label: str, entries: Sequence[tuple[str, EvalRecord, dict]], noun: str = "records") -> str | None:
    """``pgd: steps 40 in A, 100 in the other 8 cells``: how the settings of ``label`` differ between the entries
    (``(name, record, settings)``), or ``None`` where they are all the same.

    The settings most entries share (ties: the first entry's) are the reference. Named is the first setting in
    which the first entry that differs from the reference differs, with each value it has and the entries that hold
    it, in their order; the reference's value goes last where more than :data:`LISTED` entries hold it, counted
    (``the other 8 cells``). An entry that differs only in another setting follows as ``; B: step_size 0.01
    instead of 2.5*eps/steps``. Entries that all ran one config (one config hash): :data:`OTHER_VERSION` after it."""
    groups: list[list[int]] = []  # the entries (their indices) of each distinct settings, in order
    for i, (_, _, settings) in enumerate(entries):
        group = next((g for g in groups if not _differences(entries[g[0]][2], settings)), None)
        if group is None:
            groups.append([i])
        else:
            group.append(i)
    if len(groups) < 2:
        return None
    reference = max(groups, key=len)
    found = {g[0]: _differences(entries[reference[0]][2], entries[g[0]][2]) for g in groups if g is not reference}
    path, before, _ = next(iter(found.values()))[0]
    held: dict[int, str] = {}  # entry -> its value at ``path``, where it has one
    elsewhere = []
    for group in groups:
        differ = found.get(group[0], [])
        at = [now for where, _, now in differ if where == path]
        if differ and not at:
            elsewhere.append(f"; {', '.join(entries[i][0] for i in group)}: {differ[0][0]} "
                             f"{value_text(differ[0][2])} instead of {value_text(differ[0][1])}")
        if at or not any(_related(where, path) for where, _, _ in differ):  # else no value there to compare
            held.update({i: value_text(at[0] if at else before) for i in group})
    values: dict[str, list[str]] = {}
    for i, (name, _, _) in enumerate(entries):
        if i in held:
            values.setdefault(held[i], []).append(name)
    common = values.pop(value_text(before)) if len(values.get(value_text(before), [])) > LISTED else None
    listed = [f"{text} in {', '.join(names)}" for text, names in values.items()]
    listed += [] if common is None else [f"{value_text(before)} in the other {len(common)} {noun}"]
    one_config = len({identity_hash(record.config, record.config_hash) for _, record, _ in entries}) == 1
    return f"{label}: {path} {', '.join(listed)}" + "".join(elsewhere) + (OTHER_VERSION if one_config else "")


#: Training-config keys that differ per cell, or change no weight.
PER_CELL = ("out", "data_root", "download", "eval_batch_size", "pruning")
#: Keys of ``activation`` the grid's row sets.
PER_ROW = ("name", "k_ratio", "k")


def recipe(record: EvalRecord) -> dict[str, Any] | None:
    """The record's training config (``model.training.training``, which our trainer writes) less what makes a
    cell what it is (activation name and k/N, the pruning) and what changes no weight; ``None`` where it holds none
    (a model of your own: not compared)."""
    training = record.model.get("training")
    return training_recipe(training.get("training") if isinstance(training, dict) else None)


def training_recipe(config: Any) -> dict[str, Any] | None:
    """:func:`recipe` of a training config (a dict as checkpoints store it, a sweep's cell plan holds it)."""
    if not isinstance(config, dict):
        return None
    out = {k: v for k, v in config.items() if k not in PER_CELL}
    if isinstance(out.get("activation"), dict):
        out["activation"] = {k: v for k, v in out["activation"].items() if k not in PER_ROW}
    return out


def recipe_notes(named: Sequence[tuple[str, EvalRecord]]) -> list[str]:
    """The matrices' note on cells trained with another recipe than most cells (:func:`recipe`): a matrix
    compares activation sparsity with weight sparsity, so every other training setting should be one recipe, as a
    sweep trains them.

    One note naming each cell (``(name, record)``) trained with another recipe than most cells, with the first
    setting it differs in: ``seed 1 in k/N 0.2 × 0 (dense) kwta0.2-dense, 0 in the other cells``; ``[]`` where
    they agree or fewer than two records hold a training config."""
    held = [(name, rec, recipe(rec)) for name, rec in named]
    held = [(name, rec, r) for name, rec, r in held if r is not None]
    if len(held) < 2:
        return []
    keys = [repr(sorted(r.items())) for _, _, r in held]
    common = Counter(keys).most_common(1)[0][0]
    reference = held[keys.index(common)][2]
    parts = []
    for (name, rec, r), key in zip(held, keys):
        if key != common:
            path, theirs, ours = next(json_differences(r, reference, strict_bool=True))
            parts.append(f"{path} {value_text(theirs)} in {name} {rec.label} ({value_text(ours)} in the others)")
    if not parts:
        return []
    return [f"trained with another recipe than the other cells ({RECIPE_MIX}: retrain them with the others' "
            "settings): " + "; ".join(parts)]


#: Why a matrix of cells trained with other recipes misleads (:func:`recipe_notes`, :func:`other_recipe_notes`).
RECIPE_MIX = "their numbers mix the sparsity with the training"


def other_recipe_notes(held: Sequence[tuple[str, dict[str, Any]]], ours: dict[str, Any], whose: str) -> list[str]:
    """:func:`recipe_notes` for cells beside a recipe of our own (``ours``, :func:`recipe` of a training config,
    e.g. a sweep file's): one note per first differing setting and value, naming the cells (``(name, recipe)``)
    that hold it, ``seed 0 in relu-dense-5cd4c68a30, kwta0.2-dense-1d04bc7d38 (1 in the sweep file)``; ``whose``
    names ``ours`` (``the sweep file``). ``[]`` where every cell's recipe is ours."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for name, theirs in held:
        first = next(json_differences(theirs, ours, strict_bool=True), None)
        if first is not None:
            path, value, our_value = first
            groups.setdefault((path, value_text(value), value_text(our_value)), []).append(name)
    return [f"trained with another recipe than {whose} (in a matrix with its cells, {RECIPE_MIX}; they are not "
            f"reused): {path} {value} in {', '.join(names)} ({our_value} in {whose})"
            for (path, value, our_value), names in groups.items()]
