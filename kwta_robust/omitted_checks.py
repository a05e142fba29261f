"""Checks of the checklist that a run's config left out, made visible in the record (``info`` flags).

A table without a ``large-eps-not-zero`` flag reads as "the sanity check passed"; when the config has no
``diagnostics.sanity``, nothing ran that could raise it, and nothing said so. Carlini et al. 2019 (§5.2,
"unbounded attacks must reach 100% success") count the check as part of any robustness evaluation, so its
omission is a flag naming the config key that adds it. Registered by :mod:`kwta_robust.diagnostics`.
"""

from __future__ import annotations

from typing import Any

from kwta_robust.diagnostics_base import INFO, Thresholds
from kwta_robust.results import EvalRecord, Flag

#: Diagnostics code of the flag for a run without the large-eps sanity attack.
SANITY_NOT_RUN = "sanity-not-run"
#: The config key (and a value) that adds the sanity attack, as the flag names it.
SANITY_EXAMPLE = "diagnostics.sanity: {attack: pgd, norm: linf, eps: 1, params: {steps: 100}}"


def _configured_without_sanity(config: Any) -> bool:
    """The stored config says there was no sanity attack: ``diagnostics.sanity`` is present and ``null``. A config
    that does not store the key (a hand-built record) says nothing either way."""
    diagnostics = config.get("diagnostics") if isinstance(config, dict) else None
    return isinstance(diagnostics, dict) and "sanity" in diagnostics and diagnostics["sanity"] is None


def check_sanity_not_run(record: EvalRecord, thr: Thresholds) -> list[Flag]:
    """An ``info`` flag when the record's attacks ran without the large-eps sanity attack (its config has no
    ``diagnostics.sanity``): the check of Carlini et al. 2019 did not run. A record without attacks (noise probes
    only) makes no robustness claim the check could test."""
    if not record.results or record.sanity or not _configured_without_sanity(record.config):
        return []
    return [Flag(
        SANITY_NOT_RUN, INFO,
        "no large-eps sanity check ran (the config has no diagnostics.sanity): nothing checked that an attack at an "
        "eps reaching any image leaves ~0% robust (Carlini et al. 2019), so a missing large-eps-not-zero flag "
        f"is no evidence the attacks work on this model; add {SANITY_EXAMPLE}",
        {"config_key": "diagnostics.sanity"},
    )]
