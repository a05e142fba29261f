"""Whether a record already at a run's output path can be resumed, and what happens to one that cannot.

A run resumes a record only if the same evaluation would have written it: the same record schema (the attack
seeds), config hash, model weights (``state_sha256``), transfer sources, selected samples and their values
(``dataset.samples_sha256``: the files under a data root can be replaced between two runs), and finished units
whose attacks this version builds with the same effective settings (``AttackResult.settings``: a default that
changed between versions, e.g. PGD's step size rule, would otherwise mix two protocols in one record; a record
written before settings were stored is compared without them). Any other record is *stale*. :class:`StalePolicy`
says what to do with it: refuse with a one-line error naming the option that chose the path (``evaluate --out``,
``compare --out-dir``), or set it aside in ``superseded/`` next to it and start afresh (the quickstart: its folder
holds whatever an earlier version wrote, and nothing computed is deleted).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Mapping

from attacks.base import threat_text
from attacks.settings import without_later_defaults
from kwta_robust.config_digest import data_location, hashed_part, identity_hash
from kwta_robust.detect import Detection
from kwta_robust.errors import ConfigError, is_finite_number, short_repr
from kwta_robust.json_diff import json_differences, value_text
from kwta_robust.record_checks import check_config_hash, check_record
from kwta_robust.record_sections import DRAWS, MAPPING, TEXTS, Rule, check_fields, list_of, optional
from kwta_robust.record_values import cut_short
from kwta_robust.results import SCHEMA_VERSION, EvalRecord, RecordError
from kwta_robust.safe_paths import sanitize_name

logger = logging.getLogger(__name__)

SUPERSEDED = "superseded"
#: The stale reason of a record whose samples held other values (the same config, data set name and root).
SAMPLES_CHANGED = "other images or labels (the data under its name and root changed since: dataset.samples_sha256)"
#: The provenance a resumed record carries on (:func:`note_resume`; the runner adds its wall time to the run's).
RESUMED_PROVENANCE_RULES: Mapping[str, Rule] = {
    "wall_time_s": optional(Rule("a finite number >= 0", lambda v: is_finite_number(v) and v >= 0)),
    "torch_threads": optional(DRAWS), "resumed_at": TEXTS, "resumed_on": TEXTS,
    "resumed_threads": list_of(DRAWS, "integers >= 1"), "determinism": optional(MAPPING),
    "resumed_determinism": list_of(MAPPING, "JSON objects"), "resumed_data": list_of(MAPPING, "JSON objects"),
    "plugin_repeats": list_of(MAPPING, "JSON objects"),  # kwta_robust.plugin_repeat: a resumed run keeps them
}


@dataclass(frozen=True)
class StalePolicy:
    """What a run does with a record at its output path that it cannot resume.

    Attributes:
        option: the command-line option that names the output (``--out``, ``--out-dir``); errors name it.
        restart: the option that starts over (errors name it as the other fix).
        set_aside: move the stale record to ``<its folder>/superseded/<stem>.<config hash[:12]>.json`` and evaluate
            afresh, instead of refusing.
        threads: how the caller sets the torch thread count, ``{}`` for the count (the warning of a record resumed
            with another count names it: :func:`note_resume`; the Python API's ``threads={}``).
    """

    option: str = "--out"
    restart: str = "--no-resume"
    set_aside: bool = False
    threads: str = "--threads {}"

    def refuse(self, path: Path, reason: str) -> ConfigError:
        """The one-line error for a record at ``path`` this run cannot use (``reason`` completes "PATH ...")."""
        return ConfigError(f"{self.option}: {path} {reason}; use a new {self.option} or {self.restart}")


def model_identity(model: Mapping[str, Any]) -> dict[str, Any]:
    """What besides the weights makes a record's model the same model (``EvalRecord.model``, or a loaded model's
    ``info``): for your own model its factory, the factory's arguments and the digest of its code
    (:func:`kwta_robust.snapshot.source_digest`); empty entries for a kwta-robust checkpoint."""
    training = model.get("training") or {}
    return {"factory": training.get("model_factory"), "factory_kwargs": training.get("factory_kwargs"),
            "code": model.get("model_source_sha256")}


def differences(old: EvalRecord, *, config_hash: str, state_sha256: str | None, model: Mapping[str, Any] | None = None,
                transfer_sources: dict | None = None, indices: list | None = None,
                plugins: Mapping[str, Any] | None = None, settings: Mapping[str, Mapping[str, Any]] | None = None,
                data_sha256: str | None = None, samples_sha256: str | None = None,
                config: Mapping[str, Any] | None = None) -> str | None:
    """Why ``old`` is not the record of a run with this identity (completing "PATH ..."), or ``None``: another
    record schema (other attack seeds), config hash (this version's formula, :func:`identity_hash`: not where the
    data sit), model weights, model (factory, its arguments, its code:
    :func:`model_identity` of ``model``) and, where given, transfer sources, selected samples, plug-ins (a name
    both runs had from another distribution, or another version: ``provenance.plugins``) and, for the same config,
    the effective settings of its finished units (``settings``: label → what this version builds,
    :func:`kwta_robust.attack_plan.planned_settings`; :func:`settings_change`), where given, the digest of the
    data (``dataset.sha256``, the Python API's ``x``/``y``: a record without one is not theirs), where given, the
    digest of the selected samples' values (``dataset.samples_sha256``: files replaced under one ``data_root`` are
    other data under the same config; :func:`samples_change`). ``config``, where given, is this run's config
    (``EvalConfig.to_dict()``): another config is then named by its first hashed key that differs
    (:func:`config_change`), so a reader of the line knows which edit, override or file made it another
    evaluation. A stored config edited under its hash is refused before (:func:`check_resumable`)."""
    if old.schema_version != SCHEMA_VERSION:
        return f"was written with record schema {old.schema_version} (other attack seeds)"
    same_config = identity_hash(old.config, old.config_hash) == config_hash  # old: maybe hashed with its data's path
    checks = [("another config", same_config, True),
              ("other model weights", old.model.get("state_sha256"), state_sha256)]
    if model is not None:
        before, now = model_identity(old.model), model_identity(model)
        checks += [(what, before[key], now[key]) for what, key in (
            ("another model factory", "factory"), ("other factory arguments", "factory_kwargs"),
            ("other model code (a source file of its modules changed)", "code"))]
    if transfer_sources is not None:
        checks.append(("other transfer sources", old.provenance.get("transfer_sources", {}), transfer_sources))
    if indices is not None:
        checks.append(("other samples", old.dataset.get("indices"), indices))
    if data_sha256 is not None:
        checks.append(("other data (x or y changed)", old.dataset.get("sha256"), data_sha256))
    if plugins is not None:
        checks.append(("another version of a plug-in", *_shared_plugins(old.provenance.get("plugins") or {}, plugins)))
    differ = [what for what, a, b in checks if a != b]
    # another config (its data file, n_examples, sample_seed ...) or other indices or data explain other values
    named = {"another config", "other samples", "other data (x or y changed)"} & set(differ)
    if not same_config and config is not None:
        differ[0] = config_change(old.config, config)
    if not named and samples_change(old, samples_sha256):
        before = old.dataset.get("samples_sha256")  # a digest is a string: anything else was edited into the file
        differ.append(SAMPLES_CHANGED if isinstance(before, str) else
                      f"a dataset.samples_sha256 that is no digest ({short_repr(before, 40)}, {type(before).__name__}: "
                      "edited by hand?), so whether it ran on these samples cannot be checked")
    change = None if settings is None or not same_config else settings_change(old, settings)
    differ += [change] if change else []
    if not differ:
        return None
    return "holds a record of " + (f"{', '.join(differ[:-1])} and {differ[-1]}" if len(differ) > 1 else differ[0])


def config_change(before: Mapping[str, Any], now: Mapping[str, Any]) -> str:
    """``"another config (batch_size: 16 in the record, 200 now)"``: the first key the config hash covers
    (:mod:`kwta_robust.config_digest`: not the description, device or where the data sit) whose value differs
    between a record's stored config and this run's; plain ``"another config"`` where none does (a hash of another
    formula). A number written another way (``10`` in the record, ``10.0`` now) is another hash, so it is named too,
    with what to do: write it as the record does."""
    found = next(json_differences(hashed_part(before), hashed_part(now), strict_bool=True, whole_disjoint=True,
                                  strict_number=True), None)
    if found is None:
        return "another config"
    where, old_value, new_value = found
    numbers = [v for v in (old_value, new_value) if isinstance(v, (int, float)) and not isinstance(v, bool)]
    fix = (f"; the same number written another way, which the hash tells apart: write {value_text(old_value)} as "
           "the record does") if len(numbers) == 2 and old_value == new_value else ""
    return (f"another config ({where or 'config'}: {value_text(old_value)} in the record, {value_text(new_value)} "
            f"now{fix})")


def samples_change(old: EvalRecord, samples_sha256: str | None) -> bool:
    """Whether the samples ``old`` was evaluated on held other values than this run's (``samples_sha256``:
    :func:`kwta_robust.data.values_sha256` of the selected ``x`` and ``y``; ``None``: not compared). A record written
    before records kept the digest has none to compare: it resumes as before, with a warning that its samples were
    not checked."""
    if samples_sha256 is None:
        return False
    before = old.dataset.get("samples_sha256")
    if before is None:
        logger.warning("the record being resumed was written before records kept the digest of their samples "
                       "(dataset.samples_sha256): whether its finished units ran on these same images cannot be "
                       "checked; if the data files changed since, start over with --no-resume")
        return False
    return before != samples_sha256


def settings_change(record: EvalRecord, expected: Mapping[str, Mapping[str, Any]]) -> str | None:
    """``"other attack settings (pgd: step_size 0.025 → 0.03; ...)"``: the first finished unit of ``record`` (its
    attacks, then its sanity attack) whose stored ``settings`` differ from ``expected[label]`` (what this version
    builds for the same config), naming its label and first differing setting (:func:`first_difference`), or
    ``None``. Units without settings (older records) and labels not in ``expected`` are not compared; a setting
    added since at the value that runs as before (:data:`attacks.settings.LATER_DEFAULTS`) is no difference."""
    changed: dict[str, tuple[str, Any, Any]] = {}
    for result in [*record.results, *record.sanity]:
        if result.settings is None or result.label not in expected or result.label in changed:
            continue
        found = first_difference(result.settings, without_later_defaults(result.settings, expected[result.label]))
        if found is not None:
            changed[result.label] = found
    if not changed:
        return None
    label, (where, before, now) = next(iter(changed.items()))
    more = len(changed) - 1
    others = f", and {more} other attack{'s' if more > 1 else ''}" if more else ""
    return (f"other attack settings ({label}: {where} {value_text(before)} → {value_text(now)}{others}; "
            "this version's attack defaults changed)")


def first_difference(before: Any, now: Any, where: str = "") -> tuple[str, Any, Any] | None:
    """The first place two JSON values differ, as ``(path, before, now)`` (``path`` like ``inner[2].steps``;
    :data:`~kwta_robust.json_diff.ABSENT` for a key one side lacks; two objects without a key in common: the
    objects; JSON's ``true`` is not ``1``: :func:`~kwta_robust.json_diff.json_differences`), or ``None`` where they
    are equal."""
    found = next(json_differences(before, now, where, strict_bool=True, whole_disjoint=True), None)
    return None if found is None else (found[0] or "settings", found[1], found[2])


def _shared_plugins(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[dict, dict]:
    """The origins of the plug-in names both runs had, as each run had them (a plug-in installed since, which the
    finished units could not have used, is no difference)."""
    shared = [(kind, name) for kind, names in new.items() for name in names if name in old.get(kind, {})]
    return ({k: old[k[0]][k[1]] for k in shared}, {k: new[k[0]][k[1]] for k in shared})


def stale_reason(old: EvalRecord, fresh: EvalRecord,
                 settings: Mapping[str, Mapping[str, Any]] | None = None) -> str | None:
    """Why a run that would write ``fresh`` cannot resume ``old`` (completing "PATH ..."), or ``None`` if it can;
    ``settings``: label → the effective settings this run builds (:func:`differences`). A part of a sharded run
    (``dataset.part``: its steps and samples) resumes only the record of the same part."""
    if old.dataset.get("part") != fresh.dataset.get("part"):
        return "holds a record of another part of a sharded run (dataset.part)"
    return differences(old, config_hash=fresh.config_hash, state_sha256=fresh.model.get("state_sha256"),
                       model=fresh.model, transfer_sources=fresh.provenance.get("transfer_sources", {}),
                       indices=fresh.dataset.get("indices"), plugins=fresh.provenance.get("plugins") or {},
                       settings=settings, data_sha256=fresh.dataset.get("sha256"),
                       samples_sha256=fresh.dataset.get("samples_sha256"), config=fresh.config)


def note_resume(old: EvalRecord, fresh: EvalRecord, path: Path | None, device: str, threads: int,
                computes: bool = True, policy: StalePolicy = StalePolicy()) -> None:
    """Record in ``old``'s provenance that the run that would write ``fresh`` resumes it: when, on which device, with
    how many torch threads, under which torch determinism settings (``resumed_at``, ``resumed_on``,
    ``resumed_threads``, ``resumed_determinism``) and its command. ``device``, ``torch_threads`` and ``determinism``
    stay the first run's (a record written before ``determinism`` was recorded gets none). Where its finished units
    ran with another thread count, or other determinism settings, a warning: the units computed now may differ in
    their last bits from a run with either, which the record keeps. Another commit of the harness (both records
    name one) is a warning too, not a refusal: resuming after a ``git pull`` of a documentation fix must work.
    ``computes``: whether this run computes a unit or re-runs an attack (the budget check's, where the record holds
    none of its flags: :func:`~kwta_robust.budget_check.reruns_left`; ``False``: every unit is finished, e.g.
    ``--grid-cell`` added to a complete record): then no warning, since no kept number can change; one info line
    names what differs. ``policy``: the caller's words for the thread count to re-run with (``--threads N``, the
    Python API's ``threads=N``: :attr:`StalePolicy.threads`)."""
    prov = old.provenance
    prov["resumed_at"] = [*prov.get("resumed_at", []), fresh.provenance["started_at"]]
    prov["resumed_on"] = [*prov.get("resumed_on", []), device]
    prov["resumed_threads"] = [*prov.get("resumed_threads", []), threads]
    settings = fresh.provenance.get("determinism")
    if settings is not None:
        prov["resumed_determinism"] = [*prov.get("resumed_determinism", []), settings]
    prov["command"] = fresh.provenance["command"]
    note_data_moved(old, fresh, path)
    before = prov.get("torch_threads")
    changed = determinism_changes(prov.get("determinism"), settings)
    commits = [versions.get("kwta_robust_git") if isinstance(versions := r.provenance.get("versions"), dict) else None
               for r in (old, fresh)]
    if not computes:
        differ = [what for what, other in (("torch threads", before is not None and before != threads),
                                           ("torch determinism settings", bool(changed)),
                                           ("kwta-robust commit", commits[0] != commits[1] and None not in commits))
                  if other]
        if differ:
            logger.info("%s: every unit is finished, so no attack is re-run (only the clean pass, checked against "
                        "the record's predictions): this run's other %s cannot move a number it keeps", path,
                        " and ".join(differ))
        return
    if before is not None and before != threads:
        logger.warning("%s: its finished units ran with %s torch threads, this run uses %d: on a CPU the units it "
                       "computes may differ in their last bits from a run at either count (the record lists both); "
                       "re-run with %s to match", path, before, threads, policy.threads.format(before))
    if changed:
        logger.warning("%s: its finished units ran with other torch determinism settings (%s): on a GPU the units "
                       "this run computes may differ from a run with either (the record lists both); set them as "
                       "provenance.determinism records to match", path, changed)
    if commits[0] != commits[1] and None not in commits:  # resumed after a `git pull`: allowed, but said
        logger.warning("%s: its finished units ran kwta-robust commit %s, this run is commit %s: the record keeps "
                       "the first (provenance.versions.kwta_robust_git); re-run it afresh where the code changed "
                       "numbers", path, commits[0], commits[1])


def note_data_moved(old: EvalRecord, fresh: EvalRecord, path: Path | None) -> None:
    """Where the run that would write ``fresh`` reads the same data (the config hash names their content, not their
    place) from another place than ``old``'s config names (a data file moved, another ``data_root``): ``old``'s
    config keeps the location of the run that wrote it, and ``provenance.resumed_data`` gets ``{resumed_at,
    location}`` of this run, which is logged. Where a config names no folder (``data_root: null``), the folder it
    resolved to (``provenance.data_root``: ``$KWTA_ROBUST_DATA`` or the home cache) is compared, where both records
    hold it, and named. Where both hold that resolved folder it decides: ``--data-root data`` and the same folder by
    its absolute path is no move, one relative path read from two working folders is."""
    before, now = data_location(old.config), data_location(fresh.config)
    first, this = old.provenance.get("data_root"), fresh.provenance.get("data_root")
    if isinstance(first, str) and isinstance(this, str):  # both resolved (a torchvision set's folder)
        if first == this:
            return
    elif before == now and (before is not None or first is None or first == this):
        return
    prov = old.provenance
    prov["resumed_data"] = [*prov.get("resumed_data", []), {"resumed_at": fresh.provenance["started_at"],
                                                             "location": now or this}]
    logger.info("%s: its config names the data at %s, this run reads the same data (%s) at %s: resumed; the config "
                "keeps the first location, provenance.resumed_data this run's", path, _place(before, first),
                "the same sha256" if isinstance(fresh.config.get("dataset"), dict) else "checked by samples_sha256",
                _place(now, this))


def _place(location: str | None, folder: str | None) -> str:
    """A data location for the log: the config's, else the default root and the folder it resolved to."""
    return location or ("the default root" + (f" ({folder})" if folder else ""))


def determinism_changes(before: Any, now: Any) -> str:
    """The settings of ``provenance.determinism`` that differ between a record's first run (``before``) and a
    resuming run (``now``), as ``name a -> b`` text; ``""`` where either is unknown (a record written before they
    were recorded) or none differs."""
    if not isinstance(before, dict) or not isinstance(now, dict):
        return ""
    return ", ".join(f"{key} {before.get(key)!r} -> {now.get(key)!r}" for key in sorted({*before, *now})
                     if before.get(key) != now.get(key))


def parts_folder(out_path: str | Path) -> Path:
    """Where the parts of a sharded run of ``out_path`` are kept until they are merged (:mod:`kwta_robust.shards`)."""
    return Path(f"{out_path}.parts")


def drop_unmerged_parts(path: Path) -> None:
    """After an unsharded run wrote the complete record at ``path``: remove :func:`parts_folder`, what an interrupted
    sharded run of it left, which ``--no-resume`` started over without. Kept, it made every later run of the same
    command refuse the complete record as an unmerged sharded run."""
    folder = parts_folder(path)
    if folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)
        logger.info("removed %s: the parts of an interrupted sharded run, which this run started over without", folder)


def set_aside(path: Path, config_hash: object) -> Path:
    """Move the record at ``path`` to ``superseded/`` beside it, named by its config hash (``.2``, ``.3`` … when
    that name is taken: nothing set aside earlier is overwritten; characters a file name cannot hold become ``_``);
    the new path."""
    tag = sanitize_name(str(config_hash or "unreadable")[:12], "unreadable")  # a damaged record's hash: no "/"
    folder, name = path.parent / SUPERSEDED, f"{path.stem}.{tag}"
    folder.mkdir(exist_ok=True)
    target, copy = folder / f"{name}.json", 1
    while target.exists():
        copy += 1
        target = folder / f"{name}.{copy}.json"
    path.replace(target)
    return target


def discard_stale(path: Path, reason: str, config_hash: object, policy: StalePolicy) -> None:
    """A record at ``path`` this run cannot use (``reason`` completes "PATH ..."): ``policy``'s one-line error, or
    (``policy.set_aside``) moved to ``superseded/`` with a warning."""
    if not policy.set_aside:
        raise policy.refuse(path, reason)
    target = set_aside(path, config_hash)
    logger.warning("%s %s; moved to %s, evaluating afresh", path, reason, target)


def prior_record(path: Path, policy: StalePolicy) -> dict | None:
    """The JSON object of the record at ``path`` (parsed once, for every later step), or ``None`` where there is no
    file. A file that is not what this package writes as a record — a JSON object with a ``schema_version``, of any
    schema — is another program's or damaged and is never overwritten, resuming or not: ``policy``'s one-line error,
    or (``policy.set_aside``) moved away (then ``None``). A file cut short
    (:func:`~kwta_robust.record_values.cut_short`) is said as such, with the fix (restore it, or start afresh
    elsewhere): "not a kwta-robust record" sent its owner looking for another program's file."""
    if not path.exists():
        return None
    cut = ""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:  # a record cut short is said as such, as the loader says it (json_problem)
        data, cut = None, exc.msg if cut_short(exc) else ""
    except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested too deeply
        data = None
    if isinstance(data, dict) and "schema_version" in data:
        return data
    what = (f"was cut short (not valid JSON: {cut}: the text ends before the record does; a killed copy or a full "
            "disk?)") if cut else "is not a kwta-robust record"
    if not policy.set_aside and cut:
        raise ConfigError(f"{policy.option}: {path} {what} and nothing was written to it; restore it from a copy to "
                          f"resume it, or use another {policy.option} or move the file away to start afresh")
    if not policy.set_aside:
        raise ConfigError(f"{policy.option}: {path} exists and {what} (nothing was written to it); use another "
                          f"{policy.option}, or move the file away")
    discard_stale(path, what, None, policy)
    return None


def check_resumable(record: EvalRecord, source: str) -> None:
    """Raise :class:`RecordError` (one line starting with ``source``) where ``record`` contradicts itself (the record
    checks, :func:`~kwta_robust.record_checks.check_record`: a flag list of the wrong length, a flag out of range,
    counts that are not its flags, two units of one attack at one threat point ...), or provenance the run
    carries on that is not what it writes (:data:`RESUMED_PROVENANCE_RULES`), or a layer probe (``detection``,
    kept on resume) this version cannot read: a run must not keep such units, nor attack on from them. A record
    without clean predictions yet (the layer-probe part of a sharded run) holds nothing else to check."""
    check_fields(record.provenance, RESUMED_PROVENANCE_RULES, f"{source}: provenance")
    check_config_hash(record, source)  # a config edited under its hash: its units ran another config
    if record.clean_flags or record.results or record.sanity or record.worst_case:
        check_record(record, source, flags=False)  # not its diagnostics flags: the resumed run raises them anew
    try:
        Detection.from_dict(record.detection)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise RecordError(f"{source}: detection is not a layer probe this version reads ({type(exc).__name__}: "
                          f"{exc})") from None


def unplanned_unit(record: EvalRecord, units: Collection[tuple[str, str, float]]) -> str | None:
    """Why a run whose config plans ``units`` (``(label, norm, eps)`` keys:
    :func:`kwta_robust.attack_plan.planned_units`) cannot resume ``record`` (completing "PATH ..."): the first
    finished unit of an attack, or at a threat point, its config does not name (kept, it would be reported as this
    config's); ``None`` where every unit is planned."""
    stray = next((r for r in [*record.results, *record.sanity] if r.key not in units), None)
    if stray is None:
        return None
    return (f"holds a unit the config does not plan ({stray.label!r} at {threat_text(stray.norm, stray.eps_text)}; "
            "another config's, or edited)")


def existing_record(path: Path, policy: StalePolicy) -> EvalRecord | None:
    """The record at ``path`` to resume; ``None`` if there is none, or one this version cannot read or that
    contradicts itself (:func:`check_resumable`) that ``policy`` set aside (else ``policy``'s one-line error); a
    file that is not a record: :func:`prior_record`."""
    data = prior_record(path, policy)
    if data is None:
        return None
    try:
        record = EvalRecord.from_dict(data, source=str(path))
    except RecordError as exc:
        discard_stale(path, f"cannot be resumed ({exc})", None, policy)
        return None
    try:
        check_resumable(record, str(path))
    except RecordError as exc:  # set aside under its config hash, as a stale record
        discard_stale(path, f"cannot be resumed ({exc})", record.config_hash, policy)
        return None
    return record


def resumable_record(path: Path, fresh: EvalRecord, policy: StalePolicy, resume: bool = True,
                     settings: Mapping[str, Mapping[str, Any]] | None = None,
                     units: Collection[tuple[str, str, float]] | None = None) -> EvalRecord | None:
    """The record at ``path`` if the run that would write ``fresh`` (and build attacks of these ``settings``, by
    label: :func:`differences`; plan these ``units``, where given: :func:`unplanned_unit`) can resume it; ``None``
    if there is none (or it was stale and ``policy`` set it aside); a stale one otherwise raises ``policy``'s
    one-line error. With ``resume=False`` nothing is resumed: a record there is overwritten, or set aside first if
    ``policy`` says so; a file that is not a record is never overwritten (:func:`prior_record`)."""
    if not resume:
        data = prior_record(path, policy)
        if data is not None and policy.set_aside:
            discard_stale(path, "is not resumed (the run starts over)", data.get("config_hash"), policy)
        return None
    old = existing_record(path, policy)
    reason = None if old is None else stale_reason(old, fresh, settings)
    if reason is None and old is not None and units is not None:
        reason = unplanned_unit(old, units)
    if reason is None:
        return old
    discard_stale(path, reason, old.config_hash, policy)
    return None
