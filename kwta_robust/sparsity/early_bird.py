"""Early-Bird ticket detection (You, Li, Xu, Fu, Wang, Chen, Baraniuk, Wang & Lin, "Drawing Early-Bird Tickets:
Towards More Efficient Training of Deep Networks", ICLR 2020).

After every training epoch the detector draws the mask that magnitude pruning at the target sparsity would give
now, and measures its normalised Hamming distance to the previous epoch's mask (differing entries / all entries).
It keeps the last ``window`` distances (5 in the paper) and declares the ticket found at the first epoch where all
of them — i.e. their maximum — are below ``threshold`` (0.1 in the paper). The paper draws masks from BatchNorm
scaling factors (channel pruning); here the masks are the unstructured weight-magnitude masks of the layers this
package prunes, so the found ticket plugs directly into :func:`~kwta_robust.sparsity.masks.apply_masks`.

Use as an epoch callback: ``detector.update(epoch)`` after each epoch returns ``True`` once the ticket is found;
``detector.found_epoch`` and ``detector.ticket`` hold the epoch and its masks.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Mapping

from torch import nn

from kwta_robust.errors import is_whole_number
from kwta_robust.sparsity.allocation import Scope, check_sparsity, masks_from_scores
from kwta_robust.sparsity.magnitude import magnitude_scores
from kwta_robust.sparsity.masks import Masks, mask_distance

logger = logging.getLogger(__name__)


class EarlyBirdDetector:
    """Tracks magnitude-mask distances between consecutive epochs (see the module docstring)."""

    def __init__(
        self,
        modules: Mapping[str, nn.Module],
        sparsity: float,
        scope: Scope = "global",
        window: int = 5,
        threshold: float = 0.1,
    ) -> None:
        self.sparsity = check_sparsity(sparsity)
        if not is_whole_number(window, 1):
            raise ValueError(f"Early-Bird window must be an integer >= 1, got {window!r}")
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"Early-Bird threshold must be in (0, 1], got {threshold!r}")
        self.modules = dict(modules)
        self.scope = scope
        self.window = window
        self.threshold = threshold
        self.distances: list[tuple[int, float]] = []  # (epoch, distance to the previous epoch's mask)
        self.found_epoch: int | None = None
        self.ticket: Masks | None = None
        self._previous: Masks | None = None
        self._recent: deque[float] = deque(maxlen=window)

    def current_mask(self) -> Masks:
        """The magnitude-pruning mask at the target sparsity for the weights as they are now."""
        return masks_from_scores(magnitude_scores(self.modules), self.sparsity, self.scope)

    def update(self, epoch: int) -> bool:
        """Record the mask after ``epoch``; returns whether the Early-Bird ticket has been found (now or before)."""
        mask = {name: m.detach().clone() for name, m in self.current_mask().items()}
        if self._previous is not None:
            distance = mask_distance(self._previous, mask)
            self.distances.append((epoch, distance))
            self._recent.append(distance)
            logger.debug("Early-Bird epoch %d: mask distance %.4f", epoch, distance)
            if (
                self.found_epoch is None
                and len(self._recent) == self.window
                and max(self._recent) < self.threshold
            ):
                self.found_epoch = epoch
                self.ticket = mask
                logger.info("Early-Bird ticket found at epoch %d (max distance over %d epochs %.4f < %.3f)",
                            epoch, self.window, max(self._recent), self.threshold)
        self._previous = mask
        return self.found_epoch is not None
