"""A simulated CUDA device for the CPU test suite: device-mixing bugs of the GPU path, caught where no GPU is.

``with simulated_cuda() as sim:`` runs a block as if the machine had one CUDA device:

* ``"cuda"`` (``"cuda:N"``, ``torch.device("cuda")``) given to a torch function means the simulated device:
  ``x.to("cuda")``, ``x.cuda()``, ``model.to("cuda")``, ``torch.zeros(n, device="cuda")``, and
  ``device=t.device`` of a tensor already there;
* a tensor on it is a :class:`DeviceTensor`, a wrapper around a CPU tensor holding its values; every operation
  on it runs on the CPU tensor (same numbers as on the CPU) and returns wrappers again;
* ``torch.cuda.is_available()`` is ``True`` (one device, ``torch.cuda.synchronize`` and friends do nothing), and
  ``torch.Generator(device=...)`` makes a CPU generator that remembers which device it was made for.

Where real CUDA raises, the simulation raises a ``RuntimeError`` and records a :class:`Finding` (what, and the
Python stack) in ``sim.findings`` (a caller catching the error still leaves the finding for the test to read):

* an operation mixing a device tensor with a CPU tensor of one dimension or more (a 0-dim CPU tensor passes, as
  CUDA lets it in as a scalar), and ``cat``/``stack`` given any CPU tensor;
* a CPU tensor indexed with (or written at) a device tensor (``cpu_t[device_idx]``);
* a generator made for one device drawing for the other (``torch.rand(..., generator=cpu_gen, device="cuda")``);
* ``.numpy()`` of a device tensor.

Allowed, as on CUDA: copies between devices (``.to``, ``.cpu()``, ``copy_``), ``.item()``/``.tolist()``, a device
tensor indexed with CPU indices.

What it cannot see. The device reports ``meta``, not ``cuda`` (autograd on a tensor reporting ``cuda`` enters the
CUDA runtime, absent here): code branching on ``device.type == "cuda"`` or ``x.is_cuda`` takes its non-CUDA branch
(``provenance.device_name``, the ``torch.cuda.synchronize`` after a cascade step), code skipping ``meta`` tensors
skips them (``model_checks.check_finite``), and a ``torch.device("cuda")`` compared with a tensor's device differs
(the Python API's check of ``device: cuda`` against the model's device refuses; ``evaluate`` and ``device: auto``
run), so ``cuda`` against ``cuda:0`` slips are not seen either. CPU *values* written into a device tensor
(``index_put_``) are not checked. The numbers are the CPU's: CUDA's kernels, nondeterministic atomics, TF32 and
CUDA's random streams are not simulated (a generator made for the device draws the CPU's stream). Memory (out of
memory), streams and asynchrony are not simulated. Only this process is patched: shards, sweeps or plugin isolation
in other processes run without the simulation. Code that bound ``torch.Generator`` before the block keeps the real
class (its generators count as CPU ones). foolbox's attacks run: eagerpy, its tensor layer, knows a torch tensor by
its class's top-level module name, which :class:`DeviceTensor` gives as ``torch``.

Every patched global (``torch.Generator``, ``torch.cuda.*``, the optimizers' CUDA-graph capture check) is restored
in a ``finally``; the findings live in the object the context manager yields, nothing at module level.
"""

from __future__ import annotations

import contextlib
import traceback
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping

import torch
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
#: What a tensor on the simulated device reports as its device (see the module docstring for why not ``cuda``).
DEVICE = torch.device("meta")
_CPU = torch.device("cpu")
#: Indexing operations: a device tensor may be indexed with CPU indices, a CPU tensor not with device ones.
INDEXING = frozenset({aten.index.Tensor, aten.index_put.default, aten.index_put_.default,
                      aten._index_put_impl_.default, aten._unsafe_index.Tensor, aten._unsafe_index_put.default})
#: Operations that may take tensors on both devices (copies between devices, indexing with CPU indices).
MIXING_ALLOWED = INDEXING | {aten.copy_.default, aten._to_copy.default, aten.lift_fresh.default,
                             aten.lift_fresh_copy.default}
#: Operations that refuse even a 0-dim CPU tensor next to device tensors.
NO_HOST_SCALARS = frozenset({aten.cat.default, aten.stack.default})
#: ``torch.cuda`` functions replaced for the block: one device, no runtime behind it.
CUDA_STUBS: Mapping[str, Callable[..., Any]] = MappingProxyType({
    "is_available": lambda: True, "device_count": lambda: 1, "current_device": lambda: 0,
    "get_device_name": lambda *a, **k: "simulated CUDA", "synchronize": lambda *a, **k: None,
    "empty_cache": lambda *a, **k: None, "_lazy_init": lambda: None,
    "get_rng_state": lambda *a, **k: torch.zeros(16, dtype=torch.uint8), "set_rng_state": lambda *a, **k: None,
    "get_rng_state_all": lambda: [], "set_rng_state_all": lambda *a, **k: None, "manual_seed": lambda *a, **k: None,
    "manual_seed_all": lambda *a, **k: None, "seed": lambda *a, **k: None,
})


@dataclass(frozen=True)
class Finding:
    """One place where CUDA would have raised: ``message`` says what, ``stack`` where (Python frames)."""

    message: str
    stack: str

    def __str__(self) -> str:
        return f"{self.message}\n{self.stack}"


@dataclass
class SimulatedCuda:
    """What a :func:`simulated_cuda` block found: ``findings`` (in order) and ``device_ops``, the number of
    operations that ran on the simulated device (a test asserts it is not 0: the simulation was used)."""

    findings: list[Finding] = field(default_factory=list)
    device_ops: int = 0

    def report(self, message: str) -> None:
        """Record a finding and raise where CUDA would."""
        stack = "".join(traceback.format_stack(limit=16)[:-2])
        self.findings.append(Finding(message, stack))
        raise RuntimeError(f"simulated CUDA: {message}")


def _is_device(spec: Any) -> bool:
    """Whether ``spec`` (a ``device=`` argument) names the simulated device."""
    return spec is not None and torch.device(spec).type in ("cuda", DEVICE.type)


class DeviceTensor(torch.Tensor):
    """A tensor on the simulated device: ``elem`` is the CPU tensor with its values, of the same shape, strides
    and dtype; autograd records on the wrapper. Used outside :func:`simulated_cuda` it raises."""

    elem: torch.Tensor
    # eagerpy (foolbox's tensor layer) knows a torch tensor by the top-level module name of its class
    __module__ = "torch.simulated_device"

    @staticmethod
    def __new__(cls, elem: torch.Tensor) -> "DeviceTensor":
        wrapper = torch.Tensor._make_wrapper_subclass(
            cls, elem.shape, strides=elem.stride(), storage_offset=elem.storage_offset(), dtype=elem.dtype,
            layout=elem.layout, device=DEVICE, requires_grad=elem.requires_grad)
        wrapper.elem = elem
        return wrapper

    def __repr__(self) -> str:  # type: ignore[override]
        return f"DeviceTensor({self.elem!r})"

    @property
    def is_meta(self) -> bool:  # type: ignore[override]
        """``False``: the values are real (code skipping meta tensors would skip them)."""
        return False

    def tolist(self) -> Any:  # type: ignore[override]
        """The values as nested Python lists (a copy to the host, as on CUDA)."""
        return self.elem.tolist()

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        raise RuntimeError(f"simulated CUDA: {func} on a device tensor outside simulated_cuda()")


class _GeneratorMeta(type(torch._C.Generator)):  # type: ignore[misc]
    """``isinstance(g, torch.Generator)`` stays true, inside the block, for generators made before it."""

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, torch._C.Generator)


class SimulatedGenerator(torch._C.Generator, metaclass=_GeneratorMeta):
    """``torch.Generator`` inside the block: a CPU generator that reports the device it was made for."""

    def __new__(cls, device: Any = "cpu") -> "SimulatedGenerator":
        gen = torch._C.Generator.__new__(cls, "cpu")
        gen.on_device = _is_device(device)
        return gen

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return DEVICE if self.on_device else _CPU


def _on_device(gen: Any) -> bool:
    return bool(getattr(gen, "on_device", False))


class _Dispatch(TorchDispatchMode):
    """Runs every operation on CPU tensors, wrapping the results of device operations; checks device mixing."""

    def __init__(self, sim: SimulatedCuda) -> None:
        super().__init__()
        self.sim = sim

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        tensors = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        device = [t for t in tensors if isinstance(t, DeviceTensor)]
        host = [t for t in tensors if not isinstance(t, DeviceTensor)]
        self._check(func, args, device, host)
        named = kwargs.get("device")
        to_device = _is_device(named)
        inner_args, inner_kwargs = pytree.tree_map_only(DeviceTensor, lambda t: t.elem, (args, kwargs))
        if to_device:
            inner_kwargs = dict(inner_kwargs, device=_CPU)
        out = func(*inner_args, **inner_kwargs)
        self.sim.device_ops += bool(device) or to_device
        written = _written_arguments(func, args, kwargs)
        if written is not None:  # in place or out=: the caller's own tensors (their values were written)
            return written
        if not (to_device if named is not None else bool(device)):  # a device named wins over the inputs'
            return out
        return pytree.tree_map_only(torch.Tensor, lambda t: t if isinstance(t, DeviceTensor) else DeviceTensor(t),
                                    out)

    def _check(self, func: Any, args: tuple, device: list, host: list) -> None:
        if func in INDEXING and not isinstance(args[0], DeviceTensor):
            if any(isinstance(t, DeviceTensor) for t in pytree.tree_leaves(args[1:])):
                self.sim.report(f"{func}: a CPU tensor {tuple(args[0].shape)} indexed with a device tensor")
        if device and host and func not in MIXING_ALLOWED:
            mixed = [tuple(t.shape) for t in host if t.dim() > 0 or func in NO_HOST_SCALARS]
            if mixed:
                self.sim.report(f"{func}: CPU tensors of shapes {mixed} with device tensors")


def _written_arguments(func: Any, args: tuple, kwargs: dict) -> Any:
    """The arguments an in-place or ``out=`` operation returns (``None`` for other operations)."""
    schema = func._schema
    if not schema.returns or not all(r.alias_info is not None and r.alias_info.is_write for r in schema.returns):
        return None
    written = [args[i] if i < len(args) else kwargs[a.name] for i, a in enumerate(schema.arguments)
               if a.alias_info is not None and a.alias_info.is_write and (i < len(args) or a.name in kwargs)]
    if len(written) != len(schema.returns):
        return None
    return written[0] if len(written) == 1 else tuple(written)


class _Functions(TorchFunctionMode):
    """Maps ``"cuda"`` to the simulated device in torch calls; checks generators and ``.numpy()``."""

    def __init__(self, sim: SimulatedCuda) -> None:
        super().__init__()
        self.sim = sim

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is not torch.device:
            args = tuple(DEVICE if _names_cuda(a) else a for a in args)
            kwargs = {k: DEVICE if _names_cuda(v) else v for k, v in kwargs.items()}
        tensors = [t for t in pytree.tree_leaves(args) if isinstance(t, torch.Tensor)]
        if func in (torch.Tensor.numpy, torch.Tensor.__array__) and isinstance(args[0], DeviceTensor):
            self.sim.report(".numpy() of a device tensor (move it with .cpu() first)")
        if func in (torch.tensor, torch.as_tensor, torch.asarray) and _is_device(kwargs.get("device")):
            return func(*args, **dict(kwargs, device=_CPU)).to(DEVICE)
        if func is torch.Tensor.cuda:
            return args[0].to(DEVICE)
        gen = kwargs.get("generator")
        if gen is not None:
            spec = kwargs.get("device")
            target = _is_device(spec) or (spec is None and any(isinstance(t, DeviceTensor) for t in tensors))
            if _on_device(gen) != target:
                self.sim.report(f"{getattr(func, '__name__', func)}: a generator on the {_side(_on_device(gen))} "
                                f"draws for the {_side(target)}")
        return func(*args, **kwargs)


def _side(on_device: bool) -> str:
    return "device" if on_device else "CPU"


def _names_cuda(value: Any) -> bool:
    return (isinstance(value, str) and value.split(":")[0] == "cuda") or \
        (isinstance(value, torch.device) and value.type == "cuda")


@contextlib.contextmanager
def simulated_cuda() -> Iterator[SimulatedCuda]:
    """Run the block on a simulated CUDA device (module docstring); yields the :class:`SimulatedCuda` whose
    ``findings`` list where real CUDA would have raised. Every patched global is restored on exit."""
    sim = SimulatedCuda()
    saved_generator = torch.Generator
    saved_cuda = {name: getattr(torch.cuda, name) for name in CUDA_STUBS}  # a renamed function fails loudly here
    saved_check = torch.optim.Optimizer._accelerator_graph_capture_health_check
    try:
        torch.Generator = SimulatedGenerator  # type: ignore[misc]
        for name, stub in CUDA_STUBS.items():
            setattr(torch.cuda, name, stub)
        # optimizers ask torch.cuda whether a CUDA graph is being captured when CUDA is available
        torch.optim.Optimizer._accelerator_graph_capture_health_check = lambda self: None
        with _Dispatch(sim), _Functions(sim):
            yield sim
    finally:
        torch.Generator = saved_generator  # type: ignore[misc]
        for name, original in saved_cuda.items():
            setattr(torch.cuda, name, original)
        torch.optim.Optimizer._accelerator_graph_capture_health_check = saved_check
