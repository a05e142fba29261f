"""Benchmark: the evaluation runner's PGD-40 against a bare hand-written PGD loop doing the same passes.

Workload: the small CNN (kWTA k/N 0.1 volume mode, and ReLU), untrained and seeded, on ``--n`` mnist5k test
examples whose labels are the model's own predictions (so every example is clean-correct and attacked; the cost
does not depend on the weights). Linf ``--eps`` (small, so that PGD never fools *every* example and always runs
all its steps — the robust fraction is printed).

* ``runner``: :func:`kwta_robust.evaluate.evaluate` with one attack (``pgd``, 40 steps, CE loss, random start),
  one batch, diagnostics off, no output file, no progress bars, the model's own memory layout
  (``layout="preserve"``; the default channels-last run is faster than any NCHW loop) — everything the harness
  does around the attack (sample selection, clean accuracy, model snapshots and digests, the attack's input
  checks, projection, verification, re-classification, the record).
* ``bare``: a hand-written PGD loop with **the same model passes**: the clean forward; the attack's check of the
  clean logits; 41 forwards and 40 input-gradient backwards (the runner's PGD tests every iterate, the last one
  included, to return the first misclassified one); the re-classification of the result.

Target (issue 6): runner / bare <= 1.10.

Run: ``python -m benchmarks.bench_harness_overhead`` (``--device cuda`` on a GPU, ``--quick`` for a smoke run,
``--profile`` to print where the runner's time beyond the model goes).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import pstats
import sys
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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

logger = logging.getLogger("benchmarks.bench_harness_overhead")

TARGET_RATIO = 1.10


def runner_config(n: int, eps: float, steps: int, seed: int):
    from kwta_robust.config import EvalConfig

    return EvalConfig.from_dict({
        "dataset": "mnist5k", "split": "test", "n_examples": n, "batch_size": n, "seed": seed, "mode": "cascade",
        "threats": [{"norm": "linf", "epsilons": [eps]}],
        "attacks": [{"attack": "pgd", "params": {"steps": steps, "loss": "ce"}}],
        "diagnostics": {"enabled": False},
    })


def bare_pgd(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int, generator: torch.Generator) -> Tensor:
    """Madry et al.'s Linf PGD (random start, CE, step 2.5·eps/steps), written out: returns ``fooled [N]``.

    Passes: clean forward, the clean-logit check, ``steps + 1`` forwards, ``steps`` backwards, one forward to
    classify the result — the runner's count; like the runner's PGD, an example stops being computed at its first
    misclassified iterate (so the batches shrink the same way).
    """
    with torch.no_grad():
        correct = model(x).argmax(dim=1) == y
        model(x[correct])  # the attack's check of the clean logits
    xc, yc = x[correct], y[correct]
    step = 2.5 * eps / steps
    u = torch.rand(xc.shape, generator=generator, device=xc.device, dtype=xc.dtype)
    adv = (xc + (2 * u - 1) * eps).clamp(0.0, 1.0)
    out, index = adv.clone(), torch.arange(len(xc), device=xc.device)
    x_left, y_left = xc, yc
    for i in range(steps + 1):
        adv.requires_grad_(True)
        with torch.enable_grad():
            logits = model(adv)
            hit = logits.detach().argmax(dim=1) != y_left
            if i == steps or bool(hit.all()):
                break
            (grad,) = torch.autograd.grad(F.cross_entropy(logits, y_left, reduction="sum"), adv)
        adv = adv.detach()
        if bool(hit.any()):
            out[index[hit]] = adv[hit]
            keep = ~hit
            index, adv, x_left, y_left, grad = index[keep], adv[keep], x_left[keep], y_left[keep], grad[keep]
        adv = torch.minimum(torch.maximum(adv + step * grad.sign(), x_left - eps), x_left + eps).clamp(0.0, 1.0)
    out[index] = adv.detach()
    with torch.no_grad():
        return model(out).argmax(dim=1) != yc


def measure(activation: str, args: argparse.Namespace, device: torch.device) -> dict:
    from kwta_robust.evaluate import evaluate
    from kwta_robust.samples import select_samples

    model = small_cnn(activation, device, args.seed)
    data = self_labelled_mnist5k(model, device)
    cfg = runner_config(args.n, args.eps, args.steps, args.seed)
    chosen = select_samples(data, cfg)  # the bare loop attacks the very samples the runner selects
    x, y = chosen.x, chosen.y
    records = []

    def run_runner() -> None:
        records.append(evaluate(model, data, cfg, {"label": activation}, resume=False, progress=False,
                                command=["bench_harness_overhead"], layout="preserve"))

    def run_bare() -> None:
        bare_pgd(model, x, y, args.eps, args.steps, torch.Generator(device=device).manual_seed(args.seed))

    timings = paired_timings({"bare": run_bare, "runner": run_runner}, "bare", args.repeats, args.clock, device)
    record = records[-1]
    robust = record.worst_case[0].robust.accuracy if record.worst_case else float("nan")
    profile = profile_runner(run_runner) if args.profile else None
    return {"activation": activation, "n": args.n, "steps": args.steps, "eps": args.eps,
            "bare_s": timings["bare"].median_s, "runner_s": timings["runner"].median_s,
            "ratio": timings["runner"].ratio, "robust": robust, "profile": profile}


def profile_runner(fn) -> str:
    """cProfile of one runner call: the 25 functions with the largest own time."""
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
    return out.getvalue()


def run(args: argparse.Namespace) -> dict:
    device = setup(args)
    rows = [measure(a, args, device) for a in args.activations]
    return {"machine": machine_info(device, args.clock), "repeats": args.repeats, "rows": rows,
            "met": all(r["ratio"] <= TARGET_RATIO for r in rows)}


def report(result: dict) -> str:
    rows = [[r["activation"], r["n"], r["steps"], r["eps"], r["bare_s"], r["runner_s"], r["ratio"], r["robust"]]
            for r in result["rows"]]
    lines = [
        f"machine: {machine_line(result['machine'])}, repeats={result['repeats']}",
        "",
        markdown_table(["CNN", "examples", "PGD steps", "eps", "bare s", "runner s", "runner / bare",
                        "robust fraction"], rows),
        "",
        f"target runner / bare <= {TARGET_RATIO:g}: {'MET' if result['met'] else 'NOT met'} "
        f"(worst {max(r['ratio'] for r in result['rows']):.3f})",
    ]
    for r in result["rows"]:
        if r["profile"]:
            lines += ["", f"profile of one runner call ({r['activation']}):", "", r["profile"]]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_common_arguments(parser, repeats=5)
    parser.add_argument("--n", type=int, default=256, help="examples (one batch; default 256)")
    parser.add_argument("--steps", type=int, default=40, help="PGD steps (default 40)")
    parser.add_argument("--eps", type=float, default=0.02, help="Linf epsilon (default 0.02)")
    parser.add_argument("--activations", nargs="+", choices=list(ACTIVATIONS), default=["relu", "kwta"])
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one runner call")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.steps, args.repeats = 16, 2, 1
    if args.n < 1 or args.steps < 1 or not args.eps > 0:
        parser.error("--n and --steps must be >= 1 and --eps > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = parse_args(argv)
    emit(report(run(args)), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
