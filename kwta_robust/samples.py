"""The samples an evaluation runs on: the seeded selection every command and every model of a comparison share.

Kept apart from the runner (:mod:`kwta_robust.evaluate`) so that the selection has one home, from which every
caller imports it: the same ``permutation_seed`` gives every model, shard and re-run the same samples in the same
order.
"""

from __future__ import annotations

from typing import Any

import torch

from kwta_robust.config import EvalConfig
from kwta_robust.errors import OriginFixError


def select_samples(data: Any, cfg: EvalConfig, where: str | None = None) -> Any:
    """The first ``n_examples`` of a ``permutation_seed``-seeded permutation of the split (``TensorData``).
    ``where``: the config file a command without ``--n-examples`` (``sweep``) reads them from, for the fix (worded for
    a flag where ``--n-examples`` gave the count: :class:`~kwta_robust.errors.OriginFixError`)."""
    n_total = len(data)
    n = n_total if cfg.n_examples is None else cfg.n_examples
    if n > n_total:
        raise OriginFixError("n_examples", f"{n} requested but {data.name} ({cfg.split}) has only {n_total} "
                             f"sample{'s' if n_total != 1 else ''}", f"set n_examples: {n_total} or fewer (null: all) "
                             f"in {where or 'the config'}", f"use {{flag}} {n_total} or fewer (leaving {{flag}} out "
                             "runs the config's n_examples)")
    order = torch.randperm(n_total, generator=torch.Generator().manual_seed(cfg.permutation_seed))[:n]
    return data.subset(order)
