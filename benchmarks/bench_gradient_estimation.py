"""Benchmark: model forward passes per second of the gradient-estimation attack vs a bare batched forward.

The gradient-estimation attack (Tramèr et al., NeurIPS 2020; :mod:`attacks.adaptive`) spends its time in
forward passes of noisy copies of the inputs, drawn ``query_batch_size`` at a time and evaluated in forward
batches of ``forward_batch(device)`` inputs (on the CPU 256, cache-sized; elsewhere the whole chunk). Its
throughput — model evaluations (the queries it reports, ``last_total_queries``) per second — is compared with a
bare ``model(batch)`` under ``torch.no_grad()`` on random inputs of that forward batch size, run as many times as
it takes to evaluate at least as many inputs, in the same run (median of paired repetitions):

    ratio = (attack queries / attack seconds) / (bare inputs / bare seconds)       target (issue 6): >= 0.8

Two settings, on the small CNN (kWTA k/N 0.1 volume by default), untrained and seeded, on the mnist5k test
examples it classifies with the largest margins (labels: its own predictions), Linf eps 1e-4 — so that no example
is fooled and stops being queried, which would leave later probe batches part-empty (the table counts them):

* ``full batches``: a constant ``--samples`` noise pairs per iteration for ``--rows`` examples, so that every
  probe batch holds exactly ``2 · samples · rows = query_batch_size`` inputs — the attack's own overhead (noise
  generation, losses, the estimate, the step, the one-batch re-classification of each iterate);
* ``default schedule``: the attack's defaults (20 → 200 noise pairs, ``query_batch_size`` 4096) over ``--steps``
  iterations on ``--default-rows`` examples — the last chunk of an iteration is partly filled.

Run: ``python -m benchmarks.bench_gradient_estimation`` (``--device cuda`` on a GPU, ``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
from typing import Sequence

import torch

from benchmarks._common import (
    ACTIVATIONS,
    add_common_arguments,
    emit,
    machine_info,
    machine_line,
    markdown_table,
    paired_timings,
    self_labelled_mnist5k,
    setup,
    small_cnn,
)

logger = logging.getLogger("benchmarks.bench_gradient_estimation")

TARGET_RATIO = 0.8


def measure(setting: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, attack_params: dict,
            args: argparse.Namespace, device: torch.device) -> dict:
    from attacks.base import ThreatModel, create_attack

    attack = create_attack("gradient-estimation", seed=args.seed, **attack_params)
    threat = ThreatModel("linf", args.eps)
    batch = attack.forward_batch(device)  # inputs per model call (on the CPU at most 256; else the probe chunk)
    attack(model, x, y, threat)  # the query count of this configuration (deterministic for the seed)
    queries = attack.last_total_queries
    bare_calls = math.ceil(queries / batch)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    probes = torch.rand((batch,) + tuple(x.shape[1:]), generator=gen, device=device)

    def bare() -> None:
        with torch.no_grad():
            for _ in range(bare_calls):
                model(probes)

    timings = paired_timings({"bare": bare, "attack": lambda: attack(model, x, y, threat)}, "bare", args.repeats,
                             args.clock, device, warmup=0)
    from attacks.adaptive import sample_schedule

    full_budget = 1 + sum(2 * n + 1 for n in sample_schedule(attack.samples_start, attack.samples_end, attack.steps))
    fooled = int((attack.last_queries < full_budget).sum())  # examples that stopped being queried early
    bare_inputs = bare_calls * batch
    return {
        "setting": setting, "rows": int(x.shape[0]), "steps": attack.steps, "batch": batch, "queries": queries,
        "fooled": fooled, "attack_s": timings["attack"].median_s, "bare_s": timings["bare"].median_s,
        "attack_qps": queries / timings["attack"].median_s, "bare_qps": bare_inputs / timings["bare"].median_s,
        # per repetition (queries / t_attack) / (bare_inputs / t_bare); the median of those paired ratios
        "ratio": statistics.median(queries / bare_inputs / r for r in timings["attack"].ratios),
    }


def run(args: argparse.Namespace) -> dict:
    device = setup(args)
    from attacks.base import margin_loss

    model = small_cnn(args.activation, device, args.seed)
    data = self_labelled_mnist5k(model, device)
    with torch.no_grad():
        order = margin_loss(model(data.x), data.y).argsort()  # most confidently classified first
    x, y = data.x[order], data.y[order]
    rows = []
    full = {"steps": args.steps, "samples_start": args.samples, "samples_end": args.samples,
            "query_batch_size": 2 * args.samples * args.rows}
    rows.append(measure("full batches", model, x[: args.rows], y[: args.rows], full, args, device))
    if args.default_rows:
        default = {"steps": args.steps}
        rows.append(measure("default schedule", model, x[: args.default_rows], y[: args.default_rows], default,
                            args, device))
    return {"machine": machine_info(device, args.clock), "activation": args.activation, "eps": args.eps,
            "repeats": args.repeats, "rows": rows, "met": all(r["ratio"] >= TARGET_RATIO for r in rows)}


def report(result: dict) -> str:
    rows = [[r["setting"], r["rows"], r["steps"], r["batch"], r["queries"], r["fooled"], r["attack_qps"],
             r["bare_qps"], r["ratio"]] for r in result["rows"]]
    return "\n".join([
        f"machine: {machine_line(result['machine'])}, repeats={result['repeats']}, model: untrained small CNN "
        f"({result['activation']}), Linf eps {result['eps']:g}",
        "",
        markdown_table(["setting", "examples", "iterations", "batch", "queries", "examples fooled",
                        "attack forwards/s", "bare forwards/s", "attack / bare"], rows),
        "",
        f"target attack / bare >= {TARGET_RATIO:g}: {'MET' if result['met'] else 'NOT met'} "
        f"(worst {min(r['ratio'] for r in result['rows']):.3f})",
    ])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_common_arguments(parser, repeats=3)
    parser.add_argument("--rows", type=int, default=16, help="examples of the full-batch setting (default 16)")
    parser.add_argument("--samples", type=int, default=64,
                        help="noise pairs per iteration of the full-batch setting (default 64: batches of 2048)")
    parser.add_argument("--steps", type=int, default=10, help="iterations (default 10)")
    parser.add_argument("--default-rows", type=int, default=32,
                        help="examples of the default-schedule setting (0 skips it; default 32)")
    parser.add_argument("--eps", type=float, default=1e-4, help="Linf epsilon (default 1e-4)")
    parser.add_argument("--activation", choices=list(ACTIVATIONS), default="kwta")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.samples, args.steps, args.default_rows = 4, 8, 2, 0
        args.repeats = 1
    if min(args.rows, args.samples, args.steps) < 1 or args.default_rows < 0 or not args.eps > 0:
        parser.error("--rows, --samples and --steps must be >= 1, --default-rows >= 0 and --eps > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = parse_args(argv)
    emit(report(run(args)), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
