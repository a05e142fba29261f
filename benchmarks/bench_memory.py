"""Benchmark: peak memory of an evaluation of 1,000 mnist5k examples with the full suite.

Peak memory is measured in a fresh child process per repetition (``resource.getrusage(RUSAGE_SELF).ru_maxrss``:
the peak resident set of the process, which — unlike ``tracemalloc`` — sees torch's allocations; on CUDA also
``torch.cuda.max_memory_allocated``), read twice:

* ``baseline``: after importing the package, building the model, loading the examples and one forward +
  input-gradient backward on one batch of ``batch_size`` examples — what any evaluation holds at least;
* ``evaluation``: after :func:`kwta_robust.evaluate.evaluate` with ``eval_configs/mnist5k-full.yaml`` (every
  attack, the three epsilons, the noise probe, the diagnostics with their sanity attack) on ``--n`` examples;
* ``one forward``: in a second child, after the baseline step and one no-grad forward of the largest batch the
  evaluation builds (the evaluation's ``batch_size``, or gradient estimation's forward batch: 4096 noisy inputs
  on a GPU, 256 on the CPU) — the bare cost of the evaluation's largest single model call.

Workload: the small kWTA CNN (k/N 0.1, volume), untrained and seeded, examples labelled with its own predictions
(all clean-correct), in ``independent`` mode so that every attack runs on every example in full batches (a
cascade never holds more: its attacks run on subsets, in batches of the same size).

**Reduced budget** (the full budgets take hours on a CPU and do not change the peak, which is set by the largest
batch an attack builds, not by how many iterations it runs): iteration counts capped at ``--steps`` (3; BPDA's
``stage_steps``: each temperature stage at ``--steps``; a temperature schedule without them: at least one step per
temperature), Square at ``--queries`` (10) queries, gradient estimation at one iteration of 8 noise pairs — 8 is
what one probe batch of ``query_batch_size`` 4096 holds for a batch of 250 examples, so its probe batches keep
their full size. ``--full-budget`` runs the config unchanged.

Ratios: evaluation peak / baseline peak and evaluation peak / one-forward peak (medians over repetitions).

Run: ``python -m benchmarks.bench_memory`` (``--device cuda`` on a GPU, ``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import resource
import statistics
import subprocess
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
    self_labelled_mnist5k,
    setup,
    small_cnn,
)

logger = logging.getLogger("benchmarks.bench_memory")

ROOT = Path(__file__).resolve().parent.parent
SUITE_CONFIG = ROOT / "eval_configs" / "mnist5k-full.yaml"
GE_PAIRS = 8  # noise pairs per iteration that fill a 4096-probe batch for 250 examples: 4096 // (2 * 250)


def reduce_budget(attack: dict, steps: int, queries: int) -> dict:
    """A copy of a config attack entry with its iteration/query budget capped (see the module docstring;
    :func:`kwta_robust.budget_scale.cap_budget`), gradient estimation at one step of full probe batches."""
    from kwta_robust.budget_scale import cap_budget

    attack = copy.deepcopy(attack)
    params = attack.setdefault("params", {})
    if attack["attack"] == "gradient-estimation":
        params.update({"steps": 1, "samples_start": GE_PAIRS, "samples_end": GE_PAIRS})
        return attack
    attack["params"] = cap_budget(attack["attack"], params, steps, queries)
    return attack


def evaluation_config(args: argparse.Namespace):
    from kwta_robust.config import EvalConfig

    data = EvalConfig.from_yaml(SUITE_CONFIG).to_dict()
    data.update({"n_examples": args.n, "seed": args.seed, "mode": "independent"})
    if not args.full_budget:
        data["attacks"] = [reduce_budget(a, args.steps, args.queries) for a in data["attacks"]]
    if args.quick:  # one epsilon, small probe batches
        data["threats"] = [{"norm": "linf", "epsilons": ["0.3"]}]
        for attack in data["attacks"]:
            if attack["attack"] == "gradient-estimation":
                attack["params"]["query_batch_size"] = 64
        sanity = data["diagnostics"].get("sanity")
        if sanity:
            data["diagnostics"]["sanity"] = reduce_budget(sanity, args.steps, args.queries)
    return EvalConfig.from_dict(data)


def peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # bytes on macOS, KiB on Linux


def largest_forward_batch(cfg, device: torch.device) -> int:
    """The largest batch one model call of the evaluation receives on ``device``: ``batch_size``, or a
    gradient-estimation attack's forward batch (its noise probes are evaluated that many at a time: on the CPU
    cache-sized batches of 256, elsewhere the whole probe chunk of ``query_batch_size``)."""
    from attacks.base import create_attack

    sizes = [cfg.batch_size]
    sizes += [create_attack(a.attack, **a.params).forward_batch(device) for a in cfg.attacks
              if a.attack == "gradient-estimation"]
    return max(sizes)


def child(args: argparse.Namespace) -> dict:
    """Measure in this (fresh) process: the baseline step first, then ``args.child`` (the evaluation, or one
    no-grad forward of the largest batch the evaluation builds); returns both peaks.

    ``ru_maxrss`` only grows, so the second peak is read after the second stage ran (it does at least the
    baseline's work, so the earlier step cannot raise it); the CUDA peak is reset between the two.
    """
    from kwta_robust.evaluate import evaluate
    from kwta_robust.samples import select_samples

    device = setup(args)
    model = small_cnn(args.activation, device, args.seed)
    data = self_labelled_mnist5k(model, device)
    cfg = evaluation_config(args)
    x = select_samples(data, cfg).x[: cfg.batch_size].clone().requires_grad_(True)
    torch.autograd.grad(model(x).logsumexp(dim=1).sum(), x)
    del x
    out = {"baseline": {"rss_bytes": peak_rss_bytes()}, args.child: {}}
    if device.type == "cuda":
        out["baseline"]["cuda_bytes"] = int(torch.cuda.max_memory_allocated(device))
        torch.cuda.reset_peak_memory_stats(device)
    if args.child == "evaluation":
        evaluate(model, data, cfg, {"label": args.activation}, resume=False, progress=False,
                 command=["bench_memory"])
    else:
        batch = largest_forward_batch(cfg, device)
        probes = torch.rand((batch,) + tuple(data.x.shape[1:]), generator=torch.Generator().manual_seed(args.seed))
        with torch.no_grad():
            model(probes.to(device))
        out[args.child]["batch"] = batch
    out[args.child]["rss_bytes"] = peak_rss_bytes()
    if device.type == "cuda":
        out[args.child]["cuda_bytes"] = int(torch.cuda.max_memory_allocated(device))
    return out


def spawn(kind: str, args: argparse.Namespace) -> dict:
    """One fresh child process (``python -m benchmarks.bench_memory --child KIND ...``); returns its peaks."""
    cmd = [sys.executable, "-m", "benchmarks.bench_memory", "--child", kind, "--device", args.device, "--n",
           str(args.n), "--steps", str(args.steps), "--queries", str(args.queries), "--seed", str(args.seed),
           "--activation", args.activation]
    cmd += ["--threads", str(args.threads)] if args.threads is not None else []
    cmd += ["--quick"] if args.quick else []
    cmd += ["--full-budget"] if args.full_budget else []
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"bench_memory child failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> dict:
    device = setup(args)
    # --quick skips the one-forward child (a second interpreter start): the smoke test runs that stage in-process
    samples = [(spawn("evaluation", args), None if args.quick else spawn("forward", args))
               for _ in range(args.repeats)]
    keys = ["rss_bytes"] + (["cuda_bytes"] if device.type == "cuda" else [])
    rows = []
    nan = float("nan")
    for key in keys:
        base = statistics.median(e["baseline"][key] for e, _ in samples)
        ev = statistics.median(e["evaluation"][key] for e, _ in samples)
        fwd = [(e["evaluation"][key], f["forward"][key]) for e, f in samples if f is not None]
        rows.append({"measure": "peak RSS" if key == "rss_bytes" else "CUDA max allocated",
                     "baseline_mib": base / 2**20, "evaluation_mib": ev / 2**20, "increase_mib": (ev - base) / 2**20,
                     "forward_mib": statistics.median(f for _, f in fwd) / 2**20 if fwd else nan,
                     "ratio": statistics.median(e["evaluation"][key] / e["baseline"][key] for e, _ in samples),
                     "ratio_forward": statistics.median(e / f for e, f in fwd) if fwd else nan})
    return {"machine": machine_info(device, "n/a"), "n": args.n, "repeats": args.repeats,
            "forward_batch": samples[0][1]["forward"]["batch"] if samples[0][1] else None,
            "budget": "full (as configured)" if args.full_budget else
            f"reduced: steps <= {args.steps}, Square {args.queries} queries, gradient estimation 1 x {GE_PAIRS} pairs",
            "activation": args.activation, "rows": rows}


def report(result: dict) -> str:
    rows = [[r["measure"], r["baseline_mib"], r["forward_mib"], r["evaluation_mib"], r["increase_mib"], r["ratio"],
             r["ratio_forward"]] for r in result["rows"]]
    batch = result["forward_batch"] or "(skipped)"
    return "\n".join([
        f"machine: {machine_line(result['machine'])}, repeats={result['repeats']}",
        f"evaluation: {SUITE_CONFIG.name}, {result['n']} examples, independent mode, budget {result['budget']}, "
        f"model: untrained small CNN ({result['activation']})",
        "",
        markdown_table(["measure", "baseline MiB", f"one forward of {batch} MiB", "evaluation MiB",
                        "evaluation - baseline MiB", "evaluation / baseline",
                        f"evaluation / one forward of {batch}"], rows),
    ])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_common_arguments(parser, repeats=3)
    parser.add_argument("--n", type=int, default=1000, help="examples (default 1000)")
    parser.add_argument("--steps", type=int, default=3, help="iteration cap of the reduced budget (default 3)")
    parser.add_argument("--queries", type=int, default=10, help="Square queries of the reduced budget (default 10)")
    parser.add_argument("--full-budget", action="store_true", help="run the config's budgets unchanged (hours on CPU)")
    parser.add_argument("--activation", choices=list(ACTIVATIONS), default="kwta")
    parser.add_argument("--child", choices=["evaluation", "forward"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.steps, args.queries, args.repeats = 8, 1, 2, 1
    if min(args.n, args.steps, args.queries) < 1:
        parser.error("--n, --steps and --queries must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    emit(report(run(args)), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
