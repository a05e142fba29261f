"""The hash that names an evaluation config (a record's ``config_hash``), computed from the config's plain data.

:meth:`kwta_robust.config.EvalConfig.config_hash` is :func:`config_digest` of ``EvalConfig.to_dict()``, and a record
stores that same dict as its ``config``, so the hash can be recomputed from the record alone, with no parsing (a
plug-in attack that is not installed, or a config key of another version, does not stop it): JSON keeps every
value a validated config holds (strings, finite numbers, booleans, null, lists, objects with string keys), and
``sort_keys`` makes the key order of the file irrelevant. :func:`matches_hash` is what
:func:`kwta_robust.record_checks.check_record` asks, so a record whose ``config`` was edited by hand while its
``config_hash`` was left as it was is refused by ``table``, ``report``, ``diff``, the matrices and resume instead of
being rendered (or resumed) as the evaluation its hash names.
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


def config_digest(config: Mapping[str, Any], unhashed: tuple[str, ...] = UNHASHED_KEYS) -> str:
    """SHA-256 (hex) of ``config`` (``EvalConfig.to_dict()`` or a record's stored ``config``) as JSON with sorted
    keys, without the ``unhashed`` keys."""
    kept = {key: value for key, value in config.items() if key not in unhashed}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


def matches_hash(config: Mapping[str, Any], config_hash: object) -> bool:
    """Whether ``config`` hashes to ``config_hash`` as this version or an earlier one hashed configs
    (:data:`UNHASHED_KEYS`, :data:`LEGACY_UNHASHED_KEYS`); a config JSON cannot encode matches nothing."""
    try:
        return any(config_digest(config, keys) == config_hash for keys in (UNHASHED_KEYS, LEGACY_UNHASHED_KEYS))
    except (TypeError, ValueError, RecursionError):  # a key JSON cannot hold, a circular value (built in memory)
        return False
