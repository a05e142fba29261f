"""The hash that names an evaluation config (a record's ``config_hash``), computed from the config's plain data.

:meth:`kwta_robust.config.EvalConfig.config_hash` is :func:`config_digest` of ``EvalConfig.to_dict()``, and a record
stores that same dict as its ``config``, so the hash can be recomputed from the record alone, with no parsing (a
plug-in attack that is not installed, or a config key of another version, does not stop it): JSON keeps every
value a validated config holds (strings, finite numbers, booleans, null, lists, objects with string keys), and
``sort_keys`` makes the key order of the file irrelevant. :func:`matches_hash` is what
:func:`kwta_robust.record_checks.check_record` asks, so a record whose ``config`` was edited by hand while its
``config_hash`` was left as it was is refused by ``table``, ``report``, ``diff``, the matrices and resume instead of
being rendered (or resumed) as the evaluation its hash names.

The hash names the data by their content, never by where they sit (:func:`without_location`): a data file by its
``sha256`` (not its ``file`` path), a torchvision set by its name and split (not its ``data_root``; the values of the
selected samples are guarded by the record's ``dataset.samples_sha256``, which resume compares). The same file moved,
or a data root elsewhere on another machine, is the same evaluation: it resumes, its shards merge, ``diff`` and the
tables pair it; the location stays in the record's ``config`` as provenance. Records hashed with the location (before
2026-12-07) still match (:data:`HASH_FORMULAS`); :func:`identity_hash` is what two records are compared by.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

#: Config keys the hash leaves out (they do not name a result): the free text and the device (a run resumed on
#: another device continues the same evaluation; each run's device is provenance).
UNHASHED_KEYS: tuple[str, ...] = ("description", "device")
#: What versions before commit e63d42a (2026-12-01) left out: the device was hashed too. Their records are kept.
LEGACY_UNHASHED_KEYS: tuple[str, ...] = ("description",)
#: Every formula a record's ``config_hash`` may have been computed with, newest first, as ``(unhashed keys, whether
#: the data's location was hashed)``: this version's; before 2026-12-07 the data file's path and the ``data_root``
#: were hashed too; before commit e63d42a the device as well.
HASH_FORMULAS: tuple[tuple[tuple[str, ...], bool], ...] = (
    (UNHASHED_KEYS, False), (UNHASHED_KEYS, True), (LEGACY_UNHASHED_KEYS, True))


def without_location(config: Mapping[str, Any]) -> dict:
    """``config`` without where its data sit, set to ``None``: the ``data_root`` (the folder of a torchvision set),
    and the ``file`` path of a ``dataset: {file, sha256}`` once ``sha256`` names the content (a spec not yet pinned
    keeps its path: nothing else names its data). A config that names no place (``data_root: null``, a registry
    data set) is returned as it is, so its hash is the one the formula before 2026-12-07 gave."""
    kept = dict(config)
    if kept.get("data_root") is not None:
        kept["data_root"] = None
    dataset = kept.get("dataset")
    if isinstance(dataset, Mapping) and dataset.get("sha256") is not None and dataset.get("file") is not None:
        kept["dataset"] = {**dataset, "file": None}
    return kept


def data_location(config: Mapping[str, Any]) -> str | None:
    """Where ``config``'s data sit: a data file's path, else the ``data_root`` (``None``: the default root, or no
    config of this shape)."""
    dataset = config.get("dataset")
    if isinstance(dataset, Mapping):
        return dataset.get("file")
    return config.get("data_root")


def hashed_part(config: Mapping[str, Any], unhashed: tuple[str, ...] = UNHASHED_KEYS, located: bool = False) -> dict:
    """What the hash of ``config`` covers: ``config`` without the ``unhashed`` keys and (unless ``located``, the
    formula before 2026-12-07) without the data's location (:func:`without_location`)."""
    kept = {key: value for key, value in config.items() if key not in unhashed}
    return kept if located else without_location(kept)


def config_digest(config: Mapping[str, Any], unhashed: tuple[str, ...] = UNHASHED_KEYS, located: bool = False) -> str:
    """SHA-256 (hex) of ``config`` (``EvalConfig.to_dict()`` or a record's stored ``config``) as JSON with sorted
    keys, over :func:`hashed_part`."""
    return hashlib.sha256(json.dumps(hashed_part(config, unhashed, located), sort_keys=True).encode()).hexdigest()


def identity_hash(config: Mapping[str, Any], config_hash: object) -> object:
    """The evaluation a record names (its ``config`` and stored ``config_hash``), as this version hashes it: what
    resume, the shards and the tables compare. A stored hash of an earlier formula (:data:`HASH_FORMULAS`: the data's
    path hashed too) that ``config`` matches is this version's :func:`config_digest` of ``config``; any other stored
    hash (this version's, or one that matches nothing) is returned as it is."""
    try:
        if config_hash != config_digest(config) and matches_hash(config, config_hash):
            return config_digest(config)
    except (TypeError, ValueError, RecursionError):  # a config JSON cannot encode: its stored hash names it
        pass
    return config_hash


def matches_hash(config: Mapping[str, Any], config_hash: object) -> bool:
    """Whether ``config`` hashes to ``config_hash`` as this version or an earlier one hashed configs
    (:data:`HASH_FORMULAS`); a config JSON cannot encode matches nothing."""
    try:
        return any(config_digest(config, keys, located) == config_hash for keys, located in HASH_FORMULAS)
    except (TypeError, ValueError, RecursionError):  # a key JSON cannot hold, a circular value (built in memory)
        return False
