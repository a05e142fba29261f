"""Benchmark: cascade savings — the full attack suite on an already-broken model against its first attack alone.

In cascade mode (Croce & Hein 2020) every attack runs only on the examples that all earlier attacks left robust,
so on a model the first attack already breaks, the rest of the suite must cost (almost) nothing, and in general
the cost beyond the first attack must scale with the robust fraction the first attack leaves.

Workload: the attack list of ``eval_configs/mnist5k-full.yaml`` (PGD-20 first, then PGD-100, BPDA smooth, PGD-margin,
APGD-CE, APGD-T, FGSM, BPDA identity and smooth-long, gradient estimation, Square-5000) through the runner
(:func:`kwta_robust.evaluate.evaluate`, diagnostics and noise probes off) on the small kWTA CNN (k/N 0.1, volume),
untrained and seeded, on ``--n`` mnist5k test examples labelled with the model's own predictions (every example
clean-correct). Two cases (``--cases EPS:N``): Linf 0.3 on 256 examples, where PGD-20 breaks every example (robust
fraction 0), and Linf 0.05 on 64 examples, where some survive it and the rest of the suite runs on them (one
repetition: minutes on a CPU). Baseline, measured in the same run: the same runner call with the first attack
alone.

Printed per epsilon: the robust fraction after the first attack, the final robust fraction, the ratio
full / first (median of paired repetitions), and the seconds the later attacks spent per example they attacked.

Run: ``python -m benchmarks.bench_cascade`` (``--device cuda`` on a GPU, ``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
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

logger = logging.getLogger("benchmarks.bench_cascade")

SUITE_CONFIG = Path(__file__).resolve().parent.parent / "eval_configs" / "mnist5k-full.yaml"


def configs(n: int, eps: float, seed: int):
    """(full suite, first attack alone) as :class:`~kwta_robust.config.EvalConfig`s."""
    from kwta_robust.config import EvalConfig

    base = EvalConfig.from_yaml(SUITE_CONFIG).to_dict()
    base.update({"n_examples": n, "seed": seed, "mode": "cascade", "noise": [], "diagnostics": {"enabled": False},
                 "threats": [{"norm": "linf", "epsilons": [eps]}]})
    full = EvalConfig.from_dict(base)
    first = EvalConfig.from_dict({**base, "attacks": base["attacks"][:1]})
    return full, first


def measure(eps: float, n: int, model: torch.nn.Module, data, args: argparse.Namespace, device: torch.device) -> dict:
    from kwta_robust.evaluate import evaluate

    full_cfg, first_cfg = configs(n, eps, args.seed)
    records: dict[str, list] = {"full": [], "first": []}

    def runner(name: str, cfg):
        def run() -> None:
            records[name].append(evaluate(model, data, cfg, {"label": args.activation}, resume=False,
                                          progress=False, command=["bench_cascade"]))
        return run

    repeats = args.repeats if eps >= args.repeat_above else 1
    timings = paired_timings({"first": runner("first", first_cfg), "full": runner("full", full_cfg)}, "first",
                             repeats, args.clock, device, warmup=1 if repeats > 1 else 0)
    full = records["full"][-1]
    first_result = full.results[0]
    later = [r for r in full.results[1:]]
    attacked_later = sum(r.n_attacked for r in later)
    later_s = sum(r.wall_time_s for r in later)
    return {
        "eps": eps, "n": n, "repeats": repeats,
        "robust_after_first": first_result.robust.accuracy, "robust_final": full.worst_case[0].robust.accuracy,
        "first_s": timings["first"].median_s, "full_s": timings["full"].median_s, "ratio": timings["full"].ratio,
        "later_attacked": attacked_later, "later_s": later_s,
        "later_s_per_example": later_s / attacked_later if attacked_later else 0.0,
        "per_attack": [(r.label, r.n_attacked, r.n_broken, r.wall_time_s) for r in full.results],
    }


def run(args: argparse.Namespace) -> dict:
    device = setup(args)
    model = small_cnn(args.activation, device, args.seed)
    data = self_labelled_mnist5k(model, device)
    rows = [measure(eps, n, model, data, args, device) for eps, n in args.cases]
    return {"machine": machine_info(device, args.clock), "activation": args.activation, "rows": rows}


def report(result: dict) -> str:
    rows = [[r["eps"], r["n"], r["repeats"], r["robust_after_first"], r["robust_final"], r["first_s"], r["full_s"],
             r["ratio"], r["later_attacked"], r["later_s_per_example"]] for r in result["rows"]]
    lines = [
        f"machine: {machine_line(result['machine'])}, model: untrained small CNN ({result['activation']})",
        "",
        markdown_table(["Linf eps", "examples", "repeats", "robust after PGD-20", "robust after suite",
                        "PGD-20 alone s", "full suite s", "full / first", "later attacks: examples attacked",
                        "later attacks: wall s per attacked example"], rows),
    ]
    for r in result["rows"]:
        lines += ["", f"per attack at eps {r['eps']:g} (label, attacked, broken, wall seconds):", "",
                  markdown_table(["attack", "attacked", "broken", "s"], r["per_attack"])]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_common_arguments(parser, repeats=3)
    parser.add_argument("--cases", nargs="+", default=["0.3:256", "0.05:64"],
                        help="Linf epsilon and number of examples of each case, EPS:N (default 0.3:256 0.05:64)")
    parser.add_argument("--repeat-above", type=float, default=0.3,
                        help="repeat only cases with eps >= this (default 0.3; smaller ones, where examples "
                             "survive and the whole suite runs on them, run once)")
    parser.add_argument("--activation", choices=list(ACTIVATIONS), default="kwta")
    args = parser.parse_args(argv)
    if args.quick:
        args.cases, args.repeats = ["0.3:8"], 1
    cases = []
    for text in args.cases:
        eps, _, n = text.partition(":")
        try:
            case = (float(eps), int(n))
        except ValueError:
            parser.error(f"--cases: expected EPS:N like 0.3:256, got {text!r}")
        if not case[0] > 0 or case[1] < 1:
            parser.error(f"--cases: eps must be > 0 and N >= 1, got {text!r}")
        cases.append(case)
    args.cases = cases
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = parse_args(argv)
    emit(report(run(args)), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
