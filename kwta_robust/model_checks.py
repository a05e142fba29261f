"""Checks a model must pass before any training or attack runs on it, each failing with one line.

* :func:`build_model` — build a :class:`~kwta_robust.models.ModelSpec` after counting its parameters on the
  ``meta`` device (nothing allocated), so a spec asking for an absurd model (a damaged checkpoint, a typo in
  ``--arch-arg``) is refused instead of exhausting memory; construction errors (``channels=abc``) become a
  :class:`~kwta_robust.errors.ConfigError` naming the arguments.
* :func:`meta_model` — the same model with its parameters on ``meta``: shapes without memory, e.g. to compare a
  checkpoint's state_dict with the spec before building it.
* :func:`check_finite` — refuse weights holding NaN or inf (a diverged run, a damaged file): every attack and
  every "model unchanged" check would otherwise produce nonsense.
* :func:`probe_model` — one forward pass on a batch of the real data in eval mode, then two on its first sample
  (alone, and with its input requiring a gradient; the model is left exactly as it was): the inputs fit (else: the
  input shape the model expects and the data set it was trained on), the output is a float logits tensor
  ``[N, num_classes]`` with finite values, and every kWTA layer with an absolute ``k`` has at least ``k`` units
  (a larger ``k`` would silently keep every unit: kWTA would be the identity).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from attacks.base import eval_mode
from attacks.bpda_wrap import compiled_part
from attacks.rng import rng_scope
from kwta_robust.errors import ConfigError, first_line, is_out_of_memory
from kwta_robust.grad_cut import module_stack_hooks
from kwta_robust.layers import group_size, kwta_layers
from kwta_robust.model_probes import batch_statistics_layers
from kwta_robust.models import ModelSpec
from kwta_robust.models.registry import COMMON_ARGS
from kwta_robust.snapshot import ModelSnapshot, kept_or_restored, strided

logger = logging.getLogger(__name__)

#: Most parameters a spec may ask for (8 GB as float32; the largest zoo model, WRN-70-16, has 267M).
MAX_PARAMETERS = 2_000_000_000
#: What a user's model may raise on inputs it does not take (``assert x.shape[1] == 3`` in its forward included).
USER_ERRORS = (TypeError, ValueError, KeyError, IndexError, RuntimeError, OverflowError, AssertionError)
#: What a model that does not run on, or fit, the evaluation data is told (:func:`probe_model`): the data of
#: ``evaluate``, ``compare``, ``sweep`` and ``quickstart`` is the evaluation config's ``dataset:`` (a sweep's
#: ``eval:`` suite), which ``--data FILE`` replaces where a command has it (``evaluate``, ``compare``).
EVAL_DATA_ADVICE = ("evaluate it on the data it was built for (dataset: in the evaluation config, or --data FILE in "
                    "evaluate and compare)")
#: :data:`EVAL_DATA_ADVICE` for ``train``, whose data is the training config's ``dataset:`` (``--dataset``).
TRAIN_DATA_ADVICE = "train it on data it fits (dataset: in the training config, or --dataset in train)"


class _ParametersOnMeta(TorchFunctionMode):
    """``torch.empty`` (what ``nn.Linear``, ``nn.Conv2d``, ``nn.BatchNorm`` allocate parameters with) on ``meta``;
    small buffers built with ``zeros``/``as_tensor`` (normalization, running statistics) stay real."""

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: Mapping | None = None) -> Any:
        kwargs = dict(kwargs or {})
        if func is torch.empty:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def spec_text(spec: ModelSpec) -> str:
    """``cnn(channels=[16, 32], hidden=256)``: the architecture and its own arguments."""
    own = {k: v for k, v in spec.kwargs.items() if k not in COMMON_ARGS}
    return f"{spec.arch}({', '.join(f'{k}={v!r}' for k, v in own.items())})"


def meta_model(spec: ModelSpec) -> nn.Module | None:
    """``spec`` built with its parameters on the ``meta`` device (no memory), or ``None`` if it cannot be built
    that way. The global RNG is left as it was."""
    try:
        with torch.random.fork_rng(devices=[]), _ParametersOnMeta():
            return spec.build()
    except Exception:  # noqa: BLE001 - the real build reports the problem (see build_model)
        return None


def check_size(spec: ModelSpec, where: str, model: nn.Module | None = None,
               max_parameters: int = MAX_PARAMETERS) -> None:
    """Refuse a spec whose model has more than ``max_parameters`` parameters (counted on ``meta``)."""
    model = model if model is not None else meta_model(spec)
    if model is None:
        return
    count = sum(p.numel() for p in model.parameters())
    if count > max_parameters:
        raise ConfigError(
            f"{where}: {spec_text(spec)} would have {count:,} parameters ({4 * count / 2**30:,.3g} GiB as float32), "
            f"more than the {max_parameters:,} allowed; check the architecture arguments"
        )


@contextlib.contextmanager
def _construction(spec: ModelSpec, where: str) -> Iterator[None]:
    """Turn an error raised while constructing ``spec`` into one :class:`ConfigError` line naming ``where``."""
    try:
        yield
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except USER_ERRORS as exc:
        raise ConfigError(f"{where}: cannot build {spec_text(spec)} ({type(exc).__name__}: {first_line(exc)}); "
                          "check the architecture arguments") from None


def build_model(spec: ModelSpec, where: str, max_parameters: int = MAX_PARAMETERS) -> nn.Module:
    """Build ``spec`` after :func:`check_size`; a construction error becomes one :class:`ConfigError` line."""
    check_size(spec, where, max_parameters=max_parameters)
    with _construction(spec, where):
        return spec.build()


def check_buildable(spec: ModelSpec, where: str) -> None:
    """What :func:`build_model` checks, without building the real model (for validating configs up front)."""
    with _construction(spec, where), torch.random.fork_rng(devices=[]), _ParametersOnMeta():
        model = spec.build()
    check_size(spec, where, model)


def check_transfer_sources(sources: Any) -> dict[str, nn.Module]:
    """The runner's transfer sources as a dict of name -> module, else one :class:`ConfigError` line naming
    ``transfer_sources`` (a source of None or a list of names raised Python's own error inside the runner)."""
    if not isinstance(sources, Mapping):
        raise ConfigError(f"transfer_sources: expected a dict of name -> nn.Module (the source models), got "
                          f"{type(sources).__name__}")
    for name, source in sources.items():
        if not (isinstance(name, str) and name):
            raise ConfigError(f"transfer_sources: a source's name must be a non-empty string, got {name!r}")
        if not isinstance(source, nn.Module):
            raise ConfigError(f"transfer_sources[{name!r}]: expected an nn.Module classifier, got "
                              f"{type(source).__name__}")
    return dict(sources)


def check_finite(model: nn.Module, where: str) -> None:
    """Refuse a model whose parameters or floating-point buffers hold NaN or inf, naming the first one."""
    for name, tensor in model.state_dict().items():
        tensor = strided(tensor)  # a sparse buffer's values
        if tensor.is_floating_point() and tensor.device.type != "meta" and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ConfigError(f"{where}: {name!r} holds {bad} NaN or infinite value(s) of {tensor.numel()}; the "
                              "weights are damaged (or training diverged): use a healthy checkpoint")


def check_hookable(model: nn.Module, where: str) -> None:
    """Refuse a model that runs compiled code the layer probe and BPDA cannot hook (TorchScript, ``torch.compile``;
    :func:`attacks.bpda_wrap.compiled_part`), anywhere in it, naming the module."""
    compiled = compiled_part(model)
    if compiled is not None:
        raise ConfigError(f"{where}: {compiled}, so the layer probe and BPDA would see nothing; evaluate the eager "
                          "nn.Module (before torch.jit or torch.compile)")


def _k_violations(model: nn.Module) -> tuple[list[str], list[torch.utils.hooks.RemovableHandle]]:
    """Forward pre-hooks recording every kWTA layer whose absolute ``k`` exceeds its group of units."""
    found: list[str] = []
    handles = []
    for name, layer in kwta_layers(model).items():
        def hook(module: nn.Module, inputs: tuple, name: str = name) -> None:
            k = getattr(module, "k", None)
            if k is None or not inputs or not isinstance(inputs[0], Tensor):
                return
            size = group_size(inputs[0].shape, module.mode)
            if k > size:
                found.append(f"k={k} exceeds the {size} units of kWTA layer {name!r} ({module.mode} mode); use k <= "
                             f"{size} or a k_ratio")
        handles.append(layer.register_forward_pre_hook(hook))
    return found, handles


def _first_convolution(model: nn.Module) -> tuple[dict[str, Any], list[torch.utils.hooks.RemovableHandle]]:
    """Forward pre-hooks noting the first ``nn.Conv2d`` called: its name, ``in_channels`` and input shape."""
    first: dict[str, Any] = {}
    handles = []
    for name, conv in model.named_modules():
        if isinstance(conv, nn.Conv2d):
            def hook(module: nn.Conv2d, inputs: tuple, name: str = name) -> None:
                if not first and inputs and isinstance(inputs[0], Tensor):
                    first.update(name=name, in_channels=module.in_channels, shape=tuple(inputs[0].shape))
            handles.append(conv.register_forward_pre_hook(hook))
    return first, handles


def _failing_leaf(model: nn.Module, running: list[str]) -> str | None:
    """After a failed forward, the leaf module that raised, ``"name (Class)"``, from the modules still running
    (:func:`kwta_robust.grad_cut.module_stack_hooks`); ``None`` when the error came from code between modules."""
    inner = running[-1] if running else ""
    module = model.get_submodule(inner) if inner else None
    if module is None or any(True for _ in module.children()):
        return None
    return f"{inner} ({type(module).__name__})"


def warn_broadcast_channels(first: Mapping[str, Any], x: Tensor, where: str, data_name: str,
                            data_advice: str = EVAL_DATA_ADVICE) -> None:
    """Log a warning when the model's first convolution reads the images at their own size but with another
    channel count than they have: the model broadcast or repeated their channels (a per-channel normalization
    ``(x - mean[1, 3, 1, 1]) / std`` turns ``[N, 1, H, W]`` into ``[N, 3, H, W]``), so a model built for colour
    images runs on grey ones with no error — and meaningless numbers. ``data_advice`` says how to give it those
    images (:data:`EVAL_DATA_ADVICE`: ``dataset:`` in the evaluation config or ``--data FILE``)."""
    if not first or x.ndim != 4 or first["in_channels"] == x.shape[1] or first["shape"][-2:] != tuple(x.shape[-2:]):
        return
    logger.warning("%s: its first convolution (%s) takes %d channels but %s images have %d: the model broadcast or "
                   "repeated their channels (a per-channel normalization broadcasts [N, %d, H, W] to [N, %d, H, W]); "
                   "if it was built for %d-channel images, %s — these numbers would be meaningless",
                   where, first["name"], first["in_channels"], data_name, x.shape[1], x.shape[1],
                   first["in_channels"], first["in_channels"], data_advice)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def other_precision(model: nn.Module, x: Tensor) -> str | None:
    """The floating-point dtype of ``model``'s parameters (``"float64"``, ``"bfloat16"``) where it is one dtype and
    not ``x``'s, else ``None``: the data are float32 images, so a model built in another precision fails on them
    unless it casts its input itself."""
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if len(dtypes) != 1 or x.dtype in dtypes:
        return None
    return _dtype_name(dtypes.pop())


def _forward_error(model: nn.Module, x: Tensor) -> Exception | None:
    """The user error one forward of ``x`` (eval mode, no gradients) raises, or ``None`` when it runs: a model in
    another precision whose forward fails for another reason too (it casts its input already, and the shapes differ)
    is not told to cast its input; one that fails on a single sample is refused (:func:`check_runs_alone`)."""
    try:
        with torch.no_grad(), eval_mode(model):
            model(x)
    except USER_ERRORS as exc:
        return exc
    return None


def probe_model(model: nn.Module, x: Tensor, num_classes: int, where: str, data_name: str = "the data",
                expected_input: str | None = None, trained_on: str | None = None,
                data_advice: str = EVAL_DATA_ADVICE) -> None:
    """One forward pass of ``x`` (``[B, C, H, W]``, a few samples of the data) in eval mode, without gradients,
    then its first sample alone (:func:`check_runs_alone`) and with gradients; the model's state, flags and hooks
    are as before afterwards (a model whose forward changed its parameters or buffers is put back and refused with
    :class:`~kwta_robust.snapshot.ModelChangedError`; one whose forward writes to its input in place is refused:
    gradient probes and attacks differentiate that input and keep it; one that fails with gradients:
    :func:`check_runs_with_gradients`; out of memory is raised as it is, the run's error).
    ``expected_input`` (e.g. ``[N, 3, 32, 32]``) and ``trained_on`` name what the model was built for in the
    messages; ``data_advice`` says how to give it other data (:data:`EVAL_DATA_ADVICE`, :data:`TRAIN_DATA_ADVICE`)."""
    check_finite(model, where)
    built_for = ", ".join(part for part in (
        f"it expects inputs {expected_input}" if expected_input else "",
        f"was trained on {trained_on}" if trained_on else "") if part)
    hint = f" ({built_for})" if built_for else ""
    shape = f"[N, {', '.join(str(s) for s in x.shape[1:])}]"
    before = ModelSnapshot.capture(model)
    found, handles = _k_violations(model)
    first_conv, conv_handles = _first_convolution(model)
    running, stack_handles = module_stack_hooks(model)
    handles += conv_handles + stack_handles
    version = x._version  # bumped by every in-place write to x (torch's autograd counter; values may not change)
    try:
        with torch.no_grad(), eval_mode(model):
            out = model(x)
    except USER_ERRORS as exc:
        if is_out_of_memory(exc):  # the run's own error (the batch settings to lower), not the wrong data
            raise
        failing = _failing_leaf(model, running)  # before another forward below moves the hooks' stack
        precision = other_precision(model, x)
        if precision is not None and _forward_error(model, x.to(getattr(torch, precision))) is None:
            raise ConfigError(f"{where}: its parameters are {precision} but the {data_name} inputs are "
                              f"{_dtype_name(x.dtype)} ({type(exc).__name__}: {first_line(exc)}); cast the input first "
                              f"in forward (x = x.to(torch.{precision})) or build the model in "
                              f"{_dtype_name(x.dtype)} (model.float() in the factory)") from None
        raised = f" (raised in module {failing})" if failing else ""
        fix = f", or fix module {failing.split(' ')[0]} if these are its inputs" if failing else ""
        raise ConfigError(f"{where}: cannot run on {data_name} inputs {shape}{hint}: {type(exc).__name__}: "
                          f"{first_line(exc)}{raised}; {data_advice}{fix}") from None
    finally:
        for handle in handles:
            handle.remove()
    if found:
        raise ConfigError(f"{where}: {found[0]}")
    if x._version != version:
        raise ConfigError(f"{where}: its forward writes to its input in place (e.g. x.sub_(mean), x.clamp_(0, 1), "
                          "x /= 255); attacks take the gradient of that input and keep it, so write those steps out "
                          "of place (x = x - mean) or begin forward with x = x.clone()")
    if not isinstance(out, Tensor):
        raise ConfigError(f"{where}: returns {type(out).__name__}, expected a logits tensor [N, {num_classes}]"
                          f"{unwrap_advice(out) or '; make forward() return the logits only'}")
    if not out.is_floating_point():
        raise ConfigError(f"{where}: returns {out.dtype} values, expected floating-point logits [N, {num_classes}]")
    if out.ndim != 2 or out.shape[0] != x.shape[0]:
        raise ConfigError(f"{where}: returns shape {list(out.shape)} for {x.shape[0]} inputs, expected logits "
                          f"[N, {num_classes}]")
    if out.shape[1] != num_classes:
        raise ConfigError(f"{where}: has {out.shape[1]} outputs but {data_name} has {num_classes} classes{hint}; "
                          f"{data_advice}")
    if not bool(torch.isfinite(out).all()):
        raise ConfigError(f"{where}: returns NaN or infinite logits on clean {data_name} inputs; the model is broken")
    warn_broadcast_channels(first_conv, x, where, data_name, data_advice)
    check_runs_alone(model, x, where)
    check_runs_with_gradients(model, x, where)
    _check_state_kept(model, before, where)


def _check_state_kept(model: nn.Module, before: ModelSnapshot, where: str) -> None:
    """Refuse a model whose eval-mode forward changed its parameters or buffers (duty cycles, a counter, running
    statistics), flags or hooks, after putting them back as they were (:func:`~kwta_robust.snapshot.kept_or_restored`;
    a buffer the first forward created is lazy initialization): checked here, before any probe reads its outputs,
    since a model that changes from call to call looks randomized or layout-dependent to the probes that run next."""
    kept_or_restored(model, before, f"{where}: one forward pass in eval mode")


def check_runs_alone(model: nn.Module, x: Tensor, where: str) -> None:
    """Refuse a model that runs on the batch ``x`` (``[B, ...]``, B > 1) but not on its first sample alone (eval
    mode, no gradients): attacks go on with whichever samples of a batch are left unbroken, down to one, so such a
    model would fail part-way through a run. Its cause is a layer using batch statistics in eval mode (batch norm
    with ``track_running_stats=False``), named in the message; a model that runs alone but whose outputs still
    depend on the batch is flagged ``batch-dependent`` after the run instead."""
    exc = _forward_error(model, x[:1]) if x.shape[0] > 1 else None
    if exc is None:
        return
    norms = batch_statistics_layers(model)
    cause = (f"batch norm {', '.join(map(repr, norms))} normalizes with batch statistics in eval mode "
             "(track_running_stats=False)" if norms else "a layer needs more than one sample per batch")
    raise ConfigError(f"{where}: runs on {x.shape[0]} inputs but not on one alone ({type(exc).__name__}: "
                      f"{first_line(exc)}): {cause}, and attacks go on with whichever samples are left, down to one; "
                      "give the model per-sample inference in eval mode (running statistics) before evaluating it")


def check_runs_with_gradients(model: nn.Module, x: Tensor, where: str) -> None:
    """Refuse a model whose forward runs without gradients but raises when its input requires one (``x.numpy()`` on
    that input, an operation without a backward that checks ``requires_grad``): the gradient probes and every
    gradient attack differentiate the input, so it would stop the run at the first probe with a traceback. A forward
    that only cuts the graph (``x.detach()``, ``torch.no_grad()``) runs, and the ``zero-gradients`` flag locates the
    cut (:mod:`kwta_robust.grad_cut`). Its backward to the input runs too (the parameters get no gradient): one
    that raises — a tensor autograd saved changed in place, ``h = relu(x); h[h < t] = 0`` — is refused the same way.
    One sample of ``x`` (``[B, ...]``), eval mode."""
    xg = x[:1].detach().clone().requires_grad_(True)
    with torch.enable_grad():  # forward and backward alike, whatever the caller's grad mode (a torch.no_grad()
        _forward_and_backward(model, xg, where)  # around evaluate() read as a backward that raises)


def _forward_and_backward(model: nn.Module, xg: Tensor, where: str) -> None:
    """The two steps of :func:`check_runs_with_gradients`, run with gradients on."""
    try:
        with eval_mode(model):
            out = model(xg)
    except USER_ERRORS as exc:
        if is_out_of_memory(exc):  # the run's own error (the batch settings to lower), not a forward to mend
            raise
        raise ConfigError(f"{where}: runs without gradients but not when its input requires one "
                          f"({type(exc).__name__}: {first_line(exc)}); attacks differentiate the input, so detach "
                          "where forward leaves torch (x.detach().cpu().numpy()): the run then flags that cut "
                          "(zero-gradients) and says where it is") from None
    if not isinstance(out, Tensor) or not out.requires_grad:
        return
    try:
        torch.autograd.grad(out.sum(), xg, allow_unused=True)
    except USER_ERRORS as exc:
        if is_out_of_memory(exc):
            raise
        raise ConfigError(f"{where}: runs with gradients but its backward raises ({type(exc).__name__}: "
                          f"{first_line(exc)}); attacks differentiate the input through it, so write the step "
                          "out of place (h = h.masked_fill(h < t, 0), not h[h < t] = 0 on a tensor autograd "
                          "saved, such as a ReLU's output)") from None


def unwrap_advice(out: Any) -> str:
    """How to reach the logits inside a structured output (a dict or an output object with ``logits``, as Hugging
    Face models return, or a tuple such as ``(logits, features)``): wrap the model so ``forward`` returns them."""
    if isinstance(out, Mapping):
        where = "out['logits']" if "logits" in out else f"one of its keys ({', '.join(map(str, list(out)[:5]))})"
    elif isinstance(getattr(out, "logits", None), Tensor):
        where = "out.logits"
    elif isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        where = "out[0]" if out[0].ndim == 2 else f"the logits among its {len(out)} items"
    else:
        return ""
    return (f"; wrap the model in an nn.Module whose forward returns {where} (the attacks need a logits tensor; "
            "keep the original model as a submodule so BPDA still finds its layers)")


def describe_expected_input(spec: Mapping[str, Any] | None) -> str | None:
    """``[N, C, S, S]`` from a spec dict's ``in_channels``/``input_size`` (``None`` when unknown)."""
    kwargs = (spec or {}).get("kwargs") if isinstance(spec, Mapping) else None
    if not isinstance(kwargs, Mapping):
        return None
    c, s = kwargs.get("in_channels"), kwargs.get("input_size")
    if isinstance(c, int) and isinstance(s, int):
        return f"[N, {c}, {s}, {s}]"
    return None


def probe_for_data(model: nn.Module, model_info: Mapping[str, Any], x: Tensor, num_classes: int,
                   data_name: str) -> None:
    """Before any work on ``x`` (a few samples of the data): the model can carry hooks and runs to finite logits
    for ``num_classes`` classes (:func:`probe_model`, its draws under :func:`attacks.rng.rng_scope` seeded 0: a
    randomized model leaves the caller's global RNGs as they were); errors name it by its record label, its expected
    input and the data set it was trained on."""
    training = model_info.get("training") if isinstance(model_info.get("training"), Mapping) else {}
    trained_on = training.get("dataset")
    trained_on = trained_on.get("name") if isinstance(trained_on, Mapping) else trained_on
    where = f"model {model_info.get('label') or type(model).__name__!s}"
    check_hookable(model, where)
    with rng_scope(0):  # a randomized model's draws: seeded, and the caller's global RNGs left as they were
        probe_model(model, x, num_classes, where, data_name=data_name,
                    expected_input=describe_expected_input(model_info.get("spec")),
                    trained_on=trained_on if isinstance(trained_on, str) else None)


def probe_transfer_sources(sources: Mapping[str, nn.Module], x: Tensor, num_classes: int, data_name: str) -> None:
    """:func:`probe_model` on every transfer source, named by its key, its draws seeded as in
    :func:`probe_for_data` (a randomized source leaves the caller's global RNGs as they were)."""
    with rng_scope(0):
        for name, src in sources.items():
            probe_model(src, x, num_classes, f"transfer source {name}", data_name=data_name)
