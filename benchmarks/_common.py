"""Shared pieces of the benchmarks: machine description, paired interleaved timing, common flags, Markdown tables.

Every timing benchmark reports **ratios** against a baseline measured in the same run (a bare loop doing the same
model passes, ReLU, the first attack alone, one process; in :mod:`benchmarks.bench_peers` ours, each peer the
candidate; the strength benchmarks report robust accuracy and queries, the memory benchmark peaks): within each
repetition the baseline and every candidate run back to back (in an order that rotates between repetitions), the
ratio of that repetition is ``t_candidate / t_baseline``, and the reported number is the **median over
repetitions** of those per-repetition ratios (where a benchmark prints the inverse, ours / peer or a throughput
ratio, the median of the inverted per-repetition ratios). Pairing makes the ratios robust to slow drifts of a
shared machine (other processes, CPU frequency); absolute times are printed too but are noise on a shared machine.

Clocks (``--clock``): ``wall`` (``time.perf_counter``; CUDA is synchronised before and after each call) or ``cpu``
(``time.process_time``: CPU time of this process, all threads). On a CPU shared with other processes, ``--threads 1
--clock cpu`` measures the work done instead of how long the scheduler kept us waiting.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import platform
import statistics
import time
from typing import Callable, Mapping, Sequence

import torch

from kwta_robust.heap import retain_freed_memory
from kwta_robust.runtime import processor_name

logger = logging.getLogger(__name__)

CLOCKS: tuple[str, ...] = ("wall", "cpu")


def strength_store_paths(args: argparse.Namespace, results_name: str) -> None:
    """The strength benchmarks' files where ``--results`` / ``--cache-dir`` were not given: under
    ``runs/bench_strength/``, or ``runs/bench_strength/quick/`` with ``--quick`` (untrained models, kept apart from
    the trained ones and their results)."""
    folder = "runs/bench_strength/quick" if args.quick else "runs/bench_strength"
    args.results = args.results or f"{folder}/{results_name}"
    args.cache_dir = args.cache_dir or f"{folder}/checkpoints"


def add_common_arguments(parser: argparse.ArgumentParser, repeats: int) -> None:
    """``--device``, ``--repeats``, ``--threads``, ``--clock``, ``--seed``, ``--quick``, ``--out``."""
    parser.add_argument("--device", default="cpu", help="torch device to run on (default cpu), e.g. cuda or cuda:1")
    parser.add_argument("--repeats", type=int, default=repeats, help=f"timed repetitions (median; default {repeats})")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's own default)")
    parser.add_argument("--clock", choices=CLOCKS, default="wall",
                        help="wall: elapsed time (default); cpu: process CPU time (CPU device only)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random tensor and model (default 0)")
    parser.add_argument("--quick", action="store_true", help="a tiny configuration that runs in seconds (smoke test)")
    parser.add_argument("--out", default=None, help="also write the Markdown report to this file")


def setup(args: argparse.Namespace) -> torch.device:
    """Validate the common flags, set the thread count and the commands' heap policy (freed memory kept for reuse,
    :mod:`kwta_robust.heap`: what ``kwta-robust`` runs with, for every candidate of the run alike) and return the
    device."""
    if args.repeats < 1:
        raise SystemExit(f"error: --repeats must be >= 1, got {args.repeats}")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise SystemExit(f"error: --device: unknown device {args.device!r}; use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):  # e.g. mps: the package runs and is tested on CPU and CUDA only
        raise SystemExit(f"error: --device: {args.device!r} is not supported (the benchmarks run on cpu and cuda); "
                         "use cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda: CUDA is not available on this machine; use --device cpu")
    if args.clock == "cpu" and device.type != "cpu":
        raise SystemExit("error: --clock cpu measures CPU time and cannot time a GPU; use --clock wall")
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"error: --threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    retain_freed_memory()
    return device


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``): what an evaluation record
    names as its ``device_name`` on the CPU (:func:`kwta_robust.runtime.processor_name`)."""
    return processor_name(torch.device("cpu"))


def machine_info(device: torch.device, clock: str) -> dict[str, object]:
    """What ran the benchmark: CPU model, logical cores, torch threads, torch version, device, clock, load."""
    info: dict[str, object] = {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "clock": clock,
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    if hasattr(os, "getloadavg"):
        info["load_average_1min"] = round(os.getloadavg()[0], 2)
    return info


def machine_line(info: Mapping[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in info.items())


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timer(clock: str, device: torch.device) -> Callable[[Callable[[], object]], float]:
    """A function ``fn -> seconds`` timing one call of ``fn`` with ``clock``."""
    read = time.perf_counter if clock == "wall" else time.process_time

    def run(fn: Callable[[], object]) -> float:
        synchronize(device)
        start = read()
        fn()
        synchronize(device)
        return read() - start

    return run


@dataclasses.dataclass
class Timing:
    """Median time of one candidate and its median per-repetition ratio to the baseline."""

    name: str
    median_s: float
    ratio: float
    times_s: list[float]
    ratios: list[float]


def paired_timings(
    fns: Mapping[str, Callable[[], object]],
    baseline: str,
    repeats: int,
    clock: str,
    device: torch.device,
    warmup: int = 1,
    measure: Callable[[Callable[[], object]], float] | None = None,
) -> dict[str, Timing]:
    """Time every function of ``fns`` ``repeats`` times, interleaved, and return medians and paired ratios.

    Each repetition runs all functions once, in an order rotated by one per repetition (no function always runs
    first, i.e. on a cold cache); ``warmup`` untimed rounds come first. ``measure`` (default :func:`timer`)
    times one call.
    """
    if baseline not in fns:
        raise ValueError(f"baseline {baseline!r} is not among {sorted(fns)}")
    names = list(fns)
    measure = measure or timer(clock, device)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(repeats):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(measure(fns[name]))
    out = {}
    for name in names:
        ratios = [t / max(b, 1e-12) for t, b in zip(times[name], times[baseline])]
        out[name] = Timing(name, statistics.median(times[name]), statistics.median(ratios), times[name], ratios)
    return out


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table; floats are written with 3 significant digits."""

    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def emit(report: str, out: str | None) -> None:
    """Print the report to stdout (the benchmark's product) and optionally write it to ``out``."""
    print(report)
    if out:
        with open(out, "w", encoding="utf-8") as fh:
            fh.write(report + "\n")


# --- the evaluation workload shared by the harness, cascade, gradient-estimation and memory benchmarks -----------
ACTIVATIONS: Mapping[str, dict] = {
    "kwta": {"name": "kwta", "ratio": 0.1, "mode": "volume"},
    "relu": {"name": "relu"},
}


def small_cnn(activation: str, device: torch.device, seed: int) -> torch.nn.Module:
    """The small CNN of the package (``create_model("cnn")``, mnist5k statistics inside), untrained, seeded, in
    eval mode, parameters frozen. ``activation``: ``"kwta"`` (k/N 0.1, volume mode) or ``"relu"``."""
    from kwta_robust.data import dataset_info
    from kwta_robust.layers import ActivationSpec
    from kwta_robust.models import create_model

    if activation not in ACTIVATIONS:
        raise SystemExit(f"error: --activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    info = dataset_info("mnist5k")
    with torch.random.fork_rng(devices=[]):  # seeded initialisation; the caller's global RNG state is untouched
        torch.manual_seed(seed)
        model = create_model("cnn", activation=ActivationSpec(**ACTIVATIONS[activation]), mean=info.mean,
                             std=info.std)
    return model.to(device).eval().requires_grad_(False)


def self_labelled_mnist5k(model: torch.nn.Module, device: torch.device, batch_size: int = 500):
    """The mnist5k test split with every label replaced by ``model``'s own clean prediction.

    Every example is then classified correctly, so every example is attacked: the cost of an attack does not
    depend on the weights (untrained or not), only on how many examples it runs on and for how many steps.
    Returns a :class:`kwta_robust.data.TensorData` on ``device``.
    """
    from attacks.base import predict
    from kwta_robust.data import TensorData, load_dataset

    data = load_dataset("mnist5k", "test").to(device)
    labels = predict(model, data.x, batch_size=batch_size)
    return TensorData(data.x, labels, data.name, data.num_classes, data.indices)
