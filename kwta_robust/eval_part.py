"""One part of a sharded evaluation (:mod:`kwta_robust.shards`), as the runner (:func:`kwta_robust.evaluate.evaluate`)
takes it: which steps to run, on which samples.

* ``scope="whole-set"`` — run once, by the driver: the clean predictions, the model probes and the layer probe
  (on the first ``diagnostics.gradient_batch`` samples) and the noise probes (every sample: one seeded stream per
  level and draw over the whole selection). No attack.
* ``scope="attacks"`` — one shard: the clean predictions and every attack (the threat points, the sanity attack)
  on the positions ``start:stop`` of the selected samples — whole batches of ``batch_size``, so every batch and
  its seed are those of the unsharded run — with the driver's ``detection`` (no layer probe of its own).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from kwta_robust.errors import ConfigError

SCOPES: tuple[str, ...] = ("whole-set", "attacks")


@dataclass(frozen=True)
class EvalPart:
    """Which steps of an evaluation to run and on which samples (see the module docstring)."""

    scope: str
    start: int = 0
    stop: int | None = None
    detection: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ConfigError(f"evaluation part: unknown scope {self.scope!r}; use one of {', '.join(SCOPES)}")
        if self.scope == "attacks" and (self.stop is None or not 0 <= self.start < self.stop):
            raise ConfigError(f"evaluation part: a shard needs 0 <= start < stop, got {self.start}:{self.stop}")

    @property
    def attacks(self) -> bool:
        """The part runs the attacks (threat points and the sanity attack)."""
        return self.scope == "attacks"

    @property
    def whole_set(self) -> bool:
        """The part runs the steps that look at the whole selection (probes, layer probe, noise)."""
        return self.scope == "whole-set"

    def to_dict(self) -> dict[str, Any]:
        """What a part record's ``dataset.part`` holds."""
        return {"scope": self.scope, "start": self.start, "stop": self.stop}
