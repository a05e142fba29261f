"""How computations run on the CPU: the thread policy of every command, and the memory layout of evaluations.

**Threads.** Every ``kwta-robust`` sub-command (train, evaluate, compare, sweep, quickstart) runs with
``DEFAULT_THREADS = 1`` torch CPU thread unless ``--threads N`` says otherwise (``0`` keeps torch's own default,
one thread per core or ``OMP_NUM_THREADS``). One thread because

* CPU results are bit-reproducible for a fixed thread count (a convolution's or a matrix product's summation
  order depends on how the work is split); one thread gives the same bits on any machine with the same kind of
  CPU, whatever its core count (not across kinds of CPU);
* on a shared or busy machine torch's default of one thread per core can be several times *slower*: idle threads
  spin and wait for cores other processes hold (the same evaluation once took 33 s with torch's default and 7 s
  with one thread on a loaded 2-core machine, with identical numbers);
* sweeps scale by processes instead (one worker per core, see :mod:`kwta_robust.sweep`).

On a dedicated many-core machine with large batches, ``--threads 0`` (or ``N``) is faster; the thread count is
recorded in every record and checkpoint so the numbers can be reproduced. On a GPU it only affects the little
work left on the CPU.

**Memory layout.** On the CPU, the small CNN of :mod:`kwta_robust.models` runs about 1.4x (forward + backward) to
2x (forward) faster in the channels-last layout (NHWC; oneDNN's convolutions and torch's max-pooling are
vectorised over channels there, not in NCHW). :func:`evaluation_layout` switches the convolution weights of the
evaluated models to channels-last for the duration of an evaluation (``layout="auto"``: on the CPU), checks on a
few clean inputs that nothing but float rounding changed, and puts the original tensors back afterwards. The
values are untouched; the logits may differ from the NCHW run's in the last bits (another summation order), like
with another thread count.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import re
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from kwta_robust.errors import ConfigError, is_whole_number

logger = logging.getLogger(__name__)

DEFAULT_THREADS = 1
#: Most threads a command accepts: more than any CPU has cores (a typo such as 100000 crashed the process while
#: OpenMP / BLAS set up their thread pools, before any message could be printed).
MAX_THREADS = 1024

THREADS_HELP = (
    f"torch CPU threads (default {DEFAULT_THREADS}: bit-reproducible on one kind of CPU and fastest on a shared CPU; "
    "0 = torch's default, one per core; recorded with the results)"
)

#: Memory layouts :func:`evaluation_layout` accepts: ``auto`` (channels-last on the CPU, unchanged elsewhere),
#: ``channels_last`` (on any device) and ``preserve`` (the model as given).
LAYOUTS: tuple[str, ...] = ("auto", "channels_last", "preserve")


def processor_name(device: torch.device) -> str:
    """The kind of processor ``device`` is, for a record's ``provenance.device_name``: CPU results are bit-identical
    only on one kind of CPU, so a reviewer comparing two records must see it. On Linux ``platform.processor()`` is
    empty, so the CPU's model name comes from ``/proc/cpuinfo`` there (else ``platform.processor()``, else the
    architecture); a CUDA device's name is torch's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # no /proc (macOS, Windows): the platform's own answer
        pass
    return platform.processor() or platform.machine()


def determinism_settings() -> dict[str, bool | str]:
    """torch's process-wide switches that choose which kernels run, for a record's ``provenance.determinism``: a
    caller of the Python API (or a model's module, at import) may set them, and on a GPU they change the numbers
    (TF32 matrix products and convolutions move results by about 1e-3 relative on Ampere and later; cuDNN's
    benchmark mode may pick another algorithm per run). Read when a run starts, as plain bools and strings."""
    return {
        "deterministic_algorithms": bool(torch.are_deterministic_algorithms_enabled()),
        "deterministic_warn_only": bool(torch.is_deterministic_algorithms_warn_only_enabled()),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cudnn_allow_tf32": _legacy_or(lambda: bool(torch.backends.cudnn.allow_tf32),
                                       lambda: _fp32_precision("cudnn", "conv", "tf32") == "tf32"),
        "cuda_matmul_allow_tf32": _legacy_or(lambda: bool(torch.backends.cuda.matmul.allow_tf32),
                                             lambda: _fp32_precision("cuda", "matmul", "ieee") == "tf32"),
        "float32_matmul_precision": _legacy_or(
            lambda: str(torch.get_float32_matmul_precision()),
            lambda: "high" if _fp32_precision("cuda", "matmul", "ieee") == "tf32" else "highest"),
    }


def _legacy_or(legacy: Callable[[], Any], current: Callable[[], Any]) -> Any:
    """``legacy()``, torch's ``allow_tf32``-style read; ``current()`` where torch refuses it: once a caller set TF32
    through torch's ``fp32_precision`` API (torch >= 2.9, e.g. ``torch.backends.fp32_precision = "tf32"``), the
    legacy reads raise a RuntimeError ("mix of the legacy and new APIs"), which failed every evaluation at its start
    with a traceback. Where they do not raise, the recorded values are those they give, as before."""
    try:
        return legacy()
    except RuntimeError:
        return current()


def _fp32_precision(backend: str, op: str, default: str) -> str:
    """The float32 precision (``"tf32"``, ``"ieee"``, ...) torch's ``fp32_precision`` API sets for ``op`` of
    ``backend`` (``torch.backends.cuda.matmul``, ``torch.backends.cudnn.conv``): the first of the operation's, the
    backend's and the global setting that is not ``"none"`` (``"none"`` inherits), else ``default``."""
    backend_flags = getattr(torch.backends, backend)
    for flags in (getattr(backend_flags, op), backend_flags, torch.backends):
        value = str(getattr(flags, "fp32_precision", "none"))
        if value != "none":
            return value
    return default


def _apply_determinism(settings: Mapping[str, Any]) -> None:
    """Set the switches :func:`determinism_settings` reads to ``settings`` (those it names); ``cuda_matmul_allow_tf32``
    before ``float32_matmul_precision``, which it implies (``high`` allows TF32)."""
    if "deterministic_algorithms" in settings:
        torch.use_deterministic_algorithms(bool(settings["deterministic_algorithms"]),
                                           warn_only=bool(settings.get("deterministic_warn_only", False)))
    for key, name in (("cudnn_deterministic", "deterministic"), ("cudnn_benchmark", "benchmark"),
                      ("cudnn_allow_tf32", "allow_tf32")):
        if key in settings:
            setattr(torch.backends.cudnn, name, bool(settings[key]))
    if "cuda_matmul_allow_tf32" in settings:
        torch.backends.cuda.matmul.allow_tf32 = bool(settings["cuda_matmul_allow_tf32"])
    if "float32_matmul_precision" in settings:
        torch.set_float32_matmul_precision(str(settings["float32_matmul_precision"]))


@contextlib.contextmanager
def torch_determinism(settings: Mapping[str, Any] | None) -> Iterator[None]:
    """Run the block under the determinism settings ``settings`` (:func:`determinism_settings` of another process:
    a sharded run's driver, whose caller may have changed them; ``None``: as they are) and restore the previous ones
    afterwards. A worker process starts with torch's defaults, so without this its part records, and the merged
    record, named settings the caller's run did not use, and ran its GPU kernels under them."""
    if settings is None:
        yield
        return
    previous = determinism_settings()
    _apply_determinism(settings)
    try:
        yield
    finally:
        _apply_determinism(previous)


def check_threads(threads: int | None, where: str = "--threads") -> int | None:
    """``threads`` validated: ``None`` → :data:`DEFAULT_THREADS`; ``0`` → ``None`` (keep torch's default)."""
    if threads is None:
        return DEFAULT_THREADS
    if not is_whole_number(threads, 0):
        raise ConfigError(f"{where}: must be an integer >= 1, or 0 for torch's default, got {threads!r}")
    if threads > MAX_THREADS:
        raise ConfigError(f"{where}: {threads} is more threads than any CPU has cores (at most {MAX_THREADS}); give "
                          "the number of cores to use, or 0 for torch's default")
    return threads or None


@contextlib.contextmanager
def torch_threads(threads: int | None = DEFAULT_THREADS) -> Iterator[int]:
    """Run the block with ``threads`` torch CPU threads (``None``: :data:`DEFAULT_THREADS`; ``0``: torch's current
    setting) and restore the previous count afterwards; yields the count in effect."""
    count = check_threads(threads)
    previous = torch.get_num_threads()
    if count is not None and count != previous:
        torch.set_num_threads(count)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


@contextlib.contextmanager
def channels_last_convolutions(models: Sequence[nn.Module]) -> Iterator[int]:
    """Run the block with the weight of every ``nn.Conv2d`` of ``models`` in the channels-last layout (a copy),
    then put the original tensors back — the very objects, so layout, storage and values are as before.

    Only plain ``nn.Conv2d`` modules are touched (``F.conv2d`` accepts any layout; a subclass might ``view`` its
    weight); the parameters stay the same ``nn.Parameter`` objects (only ``.data`` is swapped), so hooks and
    references the caller holds keep working. Yields the number of weights converted.
    """
    originals: list[tuple[nn.Parameter, torch.Tensor]] = []
    try:
        for model in models:
            for module in model.modules():
                weight = getattr(module, "weight", None)
                if type(module) is not nn.Conv2d or not isinstance(weight, nn.Parameter) or weight.ndim != 4:
                    continue
                # compare strides: a weight with one input channel counts as "channels-last contiguous" in NCHW
                # strides too, yet only the NHWC strides make the convolution (and what follows) run channels-last
                converted = weight.data.to(memory_format=torch.channels_last)
                if converted.stride() == weight.stride() or any(w is weight for w, _ in originals):
                    continue
                originals.append((weight, weight.data))
                weight.data = converted
        yield len(originals)
    finally:
        for weight, original in reversed(originals):
            weight.data = original


def converts(layout: str, device: torch.device) -> bool:
    """Whether :func:`evaluation_layout` tries channels-last for ``layout`` on ``device`` (``auto``: on the CPU only);
    whether it keeps it depends on the models' probes. A comparison reads it to make its BPDA pre-check's layer probe
    in the layout the evaluation will most likely run in (:func:`kwta_robust.bpda_preflight.check_bpda_applicable`)."""
    return layout == "channels_last" or (layout == "auto" and device.type == "cpu")


@contextlib.contextmanager
def evaluation_layout(models: Sequence[nn.Module], layout: str, device: torch.device,
                      probe: Callable[[], list[Tensor]]) -> Iterator[str]:
    """The memory layout an evaluation runs in; yields ``"channels_last"`` or ``"as given"``.

    ``layout`` (one of :data:`LAYOUTS`): ``auto`` converts on the CPU only (:func:`channels_last_convolutions`).
    ``probe()`` returns the models' logits on a few clean inputs; it runs before and after the conversion, and a
    model whose predictions change (or whose logits move by more than float rounding, or which fails) is put
    back as given: the layout is a speed setting and must never change what is measured. Logits that change are
    a warning (a model whose numbers depend on the layout is worth a look); a model that cannot run in it (a
    ``.view`` of a tensor laid out as NCHW, common in released code) is an info line: nothing is wrong with it,
    it is only evaluated at its own layout's speed.
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"layout: unknown memory layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    if not converts(layout, device):
        yield "as given"
        return
    before = probe()
    if _changed(probe(), before):  # a generator of its own: the conversion cannot be checked, nor blamed for a change
        logger.info("memory layout: keeping the model's own layout: its logits change between two calls on the same "
                    "inputs under one seed (randomness the runner cannot seed), so a conversion cannot be checked")
        yield "as given"
        return
    with contextlib.ExitStack() as stack:
        converted = stack.enter_context(channels_last_convolutions(models))
        problem = None if converted else "no plain Conv2d weights to convert"
        level = logging.INFO
        if converted:
            try:
                after = probe()
            except RuntimeError as exc:  # e.g. a custom module that views a tensor laid out as NCHW
                problem = (f"a trial run in channels-last (a CPU speed-up the harness tries by itself) failed "
                           f"(torch: {_what_failed(exc)}); nothing needs to change in your model or config: the "
                           "results are the same, only the speed differs")
            else:
                if _changed(after, before):
                    problem, level = "its logits changed beyond float rounding", logging.WARNING
        if problem is not None:
            if converted:
                logger.log(level, "memory layout: keeping the model's own layout: %s", problem)
            stack.close()
            yield "as given"
            return
        yield "channels_last"


def _what_failed(exc: BaseException) -> str:
    """What torch's error says failed: its first line's first sentence, without the advice that follows (``view
    size is not compatible ... Use .reshape(...) instead.``: a change to the user's own code it is not)."""
    line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.split(r"\.\s+(?=[A-Z])", line, maxsplit=1)[0].rstrip(".")


def _changed(after: list[Tensor], before: list[Tensor]) -> bool:
    """Some model's predictions or logits (beyond float rounding) differ between two probes."""
    return any(not torch.equal(a.argmax(1), b.argmax(1)) or not torch.allclose(a, b, rtol=1e-4, atol=1e-4)
               for a, b in zip(after, before))
