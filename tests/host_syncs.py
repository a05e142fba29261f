"""Count the calls that would synchronise the host with an accelerator, on the CPU.

On CUDA (and MPS, XPU) the host queues kernels and runs ahead; a call that needs a tensor's *value* on the host, or a
result whose *shape* depends on values, waits until the device has run everything queued (a host-device
synchronisation). An attack step of a small model is a few dozen short kernels, so one such wait per step can cost
more than the step's arithmetic (issue 13's GPU row in README "Performance"). The CPU has no queue: nothing waits,
and nothing shows these calls. :class:`HostSyncs`, a :class:`~torch.overrides.TorchFunctionMode`, counts them in a
block of code run on the CPU:

* a value read on the host: ``bool(t)`` (``if t.any():``), ``int(t)``, ``float(t)``, ``t.item()``, ``t.tolist()``,
  ``t.numpy()``, ``t.cpu()`` (on an accelerator a copy to the host), ``torch.equal``, ``torch.allclose``,
  ``t.is_nonzero()``;
* a result of data-dependent shape: ``torch.nonzero``/``argwhere``, ``torch.where(cond)`` with one argument,
  ``masked_select``, ``unique`` (and its consecutive form), ``bincount``, ``repeat_interleave`` with a tensor of
  repeats, and indexing (read or write) with a boolean tensor mask (``t[mask]``, ``t[mask] = v``).

``counts`` holds the number per name; with ``where=True`` also ``sites``, per call site (the first frame of the
repository outside this file and torch), which says where to look. The counter sees calls made in other modes'
handlers pushed inside it (e.g. :class:`attacks.inline_gates.InlineGates`) too. What it cannot see: reads inside C++
kernels (a CPU kernel's own ``nonzero``), and Python code that calls no torch function for its value.
"""

from __future__ import annotations

import collections
import traceback
from typing import Any

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

#: Functions and methods (by ``__name__``) that always read a value or a data-dependent shape on the host.
READS = frozenset({"__bool__", "__int__", "__float__", "__index__", "item", "tolist", "numpy", "cpu", "nonzero",
                   "argwhere", "masked_select", "unique", "unique_consecutive", "_unique", "_unique2", "bincount",
                   "equal", "allclose", "is_nonzero"})


def _bool_mask_index(args: tuple) -> bool:
    index = args[1] if isinstance(args[1], tuple) else (args[1],)
    return any(isinstance(i, Tensor) and i.dtype == torch.bool for i in index)


def sync_name(func: Any, args: tuple, kwargs: dict) -> str | None:
    """The name under which a torch call synchronises the host with an accelerator (``None``: it does not)."""
    name = getattr(func, "__name__", "")
    if name in READS:
        return name
    if name in ("__getitem__", "__setitem__") and len(args) > 1 and _bool_mask_index(args):
        return f"{name}[bool mask]"
    if name == "where" and len(args) + len(kwargs) == 1:
        return "where(cond)"
    if name == "repeat_interleave" and len(args) > 1 and isinstance(args[1], Tensor) and args[1].numel() > 1 \
            and kwargs.get("output_size") is None:
        return name
    return None


def _site() -> str:
    for frame in reversed(traceback.extract_stack()):
        if "/torch/" not in frame.filename and not frame.filename.endswith(("host_syncs.py", "simulated_device.py")):
            return f"{'/'.join(frame.filename.rsplit('/', 2)[-2:])}:{frame.lineno} {frame.name}"
    return "?"


class HostSyncs(TorchFunctionMode):
    """``with HostSyncs() as syncs:`` counts the host-device synchronisations the block's torch calls would make on
    an accelerator (module docstring): ``syncs.total``, ``syncs.counts`` per name, ``syncs.sites`` per call site
    when made with ``where=True``."""

    def __init__(self, where: bool = False) -> None:
        super().__init__()
        self.where = where
        self.counts: collections.Counter[str] = collections.Counter()
        self.sites: collections.Counter[str] = collections.Counter()

    @property
    def total(self) -> int:
        """Every synchronisation counted so far."""
        return sum(self.counts.values())

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = sync_name(func, args, kwargs)
        if name is not None:
            self.counts[name] += 1
            if self.where:
                self.sites[f"{_site()} {name}"] += 1
        return func(*args, **kwargs)
