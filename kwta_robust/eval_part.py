"""One part of a sharded evaluation (:mod:`kwta_robust.shards`), as the runner (:func:`kwta_robust.evaluate.evaluate`)
takes it: which steps to run, on which samples.

* ``scope="layer-probe"`` — run first, by the driver: the layer probe alone (on the first
  ``diagnostics.gradient_batch`` samples) and the randomness probe (on the first samples of the whole selection).
  Every other part runs with its ``detection`` and ``randomness``.
* ``scope="whole-set"`` — the steps that look at the whole selection: the clean predictions, the model probes (the
  first ``diagnostics.gradient_batch`` samples) and the noise probes (every sample: one seeded stream per level and
  draw over the whole selection). No attack.
* ``scope="attacks"`` — the clean predictions and the attacks on the positions ``start:stop`` of the selected
  samples — whole batches of ``batch_size``, so every batch and its seed are those of the unsharded run: the
  cascade at the threat point ``threat`` (``(norm, eps)``), or with ``threat=None`` at every threat point and the
  sanity attack.
* ``scope="sanity"`` — the clean predictions and the sanity attack on the positions ``start:stop``.

Every part but the layer probe takes the driver's ``detection`` (no layer probe of its own) and ``randomness`` (the
driver's :class:`~kwta_robust.randomness.Randomness` as a dict: no randomness probe of its own, so every part takes
the draws per verdict the driver resolved, whatever its own first samples would show).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from kwta_robust.errors import ConfigError

SCOPES: tuple[str, ...] = ("layer-probe", "whole-set", "attacks", "sanity")


@dataclass(frozen=True)
class EvalPart:
    """Which steps of an evaluation to run and on which samples (see the module docstring)."""

    scope: str
    start: int = 0
    stop: int | None = None
    detection: Mapping[str, Any] | None = None
    threat: tuple[str, float] | None = None
    randomness: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ConfigError(f"evaluation part: unknown scope {self.scope!r}; use one of {', '.join(SCOPES)}")
        if self.samples and (self.stop is None or not 0 <= self.start < self.stop):
            raise ConfigError(f"evaluation part: a shard needs 0 <= start < stop, got {self.start}:{self.stop}")
        if self.threat is not None and (self.scope != "attacks" or len(self.threat) != 2):
            raise ConfigError(f"evaluation part: threat (norm, eps) belongs to an attacks part, got {self.threat!r} "
                              f"for {self.scope!r}")

    @property
    def samples(self) -> bool:
        """The part runs on the positions ``start:stop`` only (attacks, sanity)."""
        return self.scope in ("attacks", "sanity")

    @property
    def whole_set(self) -> bool:
        """The part runs the steps that look at the whole selection (clean predictions, probes, noise)."""
        return self.scope == "whole-set"

    @property
    def layer_probe(self) -> bool:
        """The part is the layer probe alone."""
        return self.scope == "layer-probe"

    @property
    def sanity(self) -> bool:
        """The part runs the sanity attack."""
        return self.scope == "sanity" or (self.scope == "attacks" and self.threat is None)

    def attacks_at(self, norm: str, eps: float) -> bool:
        """The part runs the cascade at the threat point ``(norm, eps)``."""
        return self.scope == "attacks" and (self.threat is None or tuple(self.threat) == (norm, eps))

    def to_dict(self) -> dict[str, Any]:
        """What a part record's ``dataset.part`` holds."""
        data: dict[str, Any] = {"scope": self.scope, "start": self.start, "stop": self.stop}
        if self.threat is not None:
            data["threat"] = [self.threat[0], self.threat[1]]
        return data
