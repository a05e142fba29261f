"""Benchmark: the runner's overhead as samples and units grow, against a bare FGSM loop on the same batches.

Workload: a cheap model (a seeded, untrained MLP 784-32-10) on ``--sizes`` synthetic 28 × 28 images (uniform
pixels, seeded) labelled with the model's own predictions (every sample is clean-correct and attacked), FGSM at
each of ``--units`` counts of Linf epsilons (``0.01, 0.02, ...``; one unit each), batch ``--batch-size``. The
model is cheap on purpose: what is timed is the harness, not the attack.

* ``runner``: :func:`kwta_robust.evaluate.evaluate` of that suite (cascade, diagnostics off, the model's own layout,
  no progress bars) **with an output file**, so the record is written atomically after every unit as a real run
  writes it — what made the runner quadratic before: each save re-encoded every earlier unit's per-sample lists
  (10,000 samples × 20 units: 86 s of a 97 s run).
* ``bare``: the clean forward, then per epsilon and batch the same FGSM attack and one forward to classify its
  output — the model passes the runner makes, without the projection, verification, record or file.

The ratio runner / bare should not grow with the samples or the units: every step of the harness is linear in
them. Target: with the most units, the ratio at the largest size within ``TARGET_GROWTH``× the ratio at the
smallest, and at the largest size the ratio with the most units within ``TARGET_GROWTH``× the ratio with the
fewest (a term quadratic in the samples or the units shows as a ratio growing with them; before the record was
encoded incrementally, at 10,000 samples 4.1× the bare loop with 2 units, 9.2× with 20). Also printed: the record's
size.

Passes over a finished record (``--pass-results``, each a multiple of ``PASS_ATTACKS``): a record of that many
results (``PASS_ATTACKS`` attacks, FGSM and 1-, 2-, ... step PGD alternating, × results / ``PASS_ATTACKS`` Linf
epsilons) on ``--pass-samples`` samples of the same model, then each pass timed on it: ``checks`` (the diagnostics,
:func:`~kwta_robust.diagnostics.run_checks`), ``plan`` (the budget check's plan,
:func:`~kwta_robust.budget_check.plan_reruns`), ``table`` (the Markdown tables), ``resume`` (the run resumed from
its written record, nothing left to run: loaded, checked, every unit looked up, saved) and ``diff`` (both files read
and checked, every field compared: what ``kwta-robust diff`` does). Each should take time linear in the results:
target, every pass's time per result at the most results within ``TARGET_GROWTH``× that at the fewest (a pass
quadratic in the results grows by their ratio: before its lookups used an index, the resume 16.6 s at 1,000 results
of 1,000 samples, 52 saves of its whole record and 2,000 scans of its results).

Run: ``python -m benchmarks.bench_record_scale`` (``--quick`` for a smoke run; ``--part passes`` for the passes
only).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from typing import Sequence

import torch
from torch import nn

from benchmarks._common import add_common_arguments, emit, machine_info, machine_line, markdown_table, \
    paired_timings, setup, timer

logger = logging.getLogger("benchmarks.bench_record_scale")

TARGET_GROWTH = 1.5
PASS_ATTACKS = 20
PASSES = ("checks", "plan", "table", "resume", "diff")


def cheap_model(device: torch.device, seed: int) -> nn.Module:
    """A seeded, untrained MLP (784-32-10), eval mode, parameters frozen."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    return model.to(device).eval().requires_grad_(False)


def synthetic_data(model: nn.Module, n: int, device: torch.device, seed: int):
    """``n`` uniform 1 × 28 × 28 images labelled with ``model``'s predictions (a ``TensorData`` on ``device``)."""
    from attacks.base import predict
    from kwta_robust.data import TensorData

    x = torch.rand((n, 1, 28, 28), generator=torch.Generator().manual_seed(seed)).to(device)
    return TensorData(x, predict(model, x), "synthetic", 10, torch.arange(n, device=device))


def config(n: int, units: int, batch_size: int, seed: int):
    from kwta_robust.config import EvalConfig

    return EvalConfig.from_dict({
        "dataset": "synthetic", "split": "test", "n_examples": n, "batch_size": batch_size, "seed": seed,
        "mode": "cascade", "threats": [{"norm": "linf", "epsilons": epsilons(units)}],
        "attacks": [{"attack": "fgsm"}], "diagnostics": {"enabled": False},
    })


def epsilons(count: int) -> list[float]:
    return [round(0.01 * (i + 1), 4) for i in range(count)]


def bare_fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, units: int, batch_size: int) -> None:
    """The runner's model passes without the harness: clean forward, then FGSM and a classifying forward per batch."""
    from attacks.base import ThreatModel, create_attack

    with torch.no_grad():
        model(x).argmax(dim=1)
    for eps in epsilons(units):
        attack, threat = create_attack("fgsm", seed=0), ThreatModel("linf", eps)
        for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
            adv = attack(model, xb, yb, threat)
            with torch.no_grad():
                model(adv).argmax(dim=1)


def measure(n: int, units: int, args: argparse.Namespace, device: torch.device) -> dict:
    from kwta_robust.evaluate import evaluate
    from kwta_robust.samples import select_samples

    model = cheap_model(device, args.seed)
    data = synthetic_data(model, n, device, args.seed)
    cfg = config(n, units, args.batch_size, args.seed)
    chosen = select_samples(data, cfg)
    sizes: list[int] = []
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "record.json")

        def run_runner() -> None:
            evaluate(model, data, cfg, {"label": "mlp"}, out_path=out, resume=False, progress=False,
                     command=["bench_record_scale"], layout="preserve")
            sizes.append(os.path.getsize(out))

        def run_bare() -> None:
            bare_fgsm(model, chosen.x, chosen.y, units, args.batch_size)

        timings = paired_timings({"bare": run_bare, "runner": run_runner}, "bare", args.repeats, args.clock, device)
    return {"n": n, "units": units, "bare_s": timings["bare"].median_s,
            "runner_s": timings["runner"].median_s, "ratio": timings["runner"].ratio, "record_mb": sizes[-1] / 1e6}


def pass_config(n: int, results: int, batch_size: int, seed: int, diagnostics: bool):
    """The suite of a record of ``results`` results (:data:`PASS_ATTACKS` attacks × results / PASS_ATTACKS
    epsilons, small enough that samples survive); without ``diagnostics`` a run neither checks nor re-runs attacks
    (the checks and the budget check's plan are timed apart)."""
    from kwta_robust.config import EvalConfig

    attacks = [{"attack": "fgsm", "label": f"fgsm{i}"} if i % 2 == 0 else
               {"attack": "pgd", "label": f"pgd{i}", "params": {"steps": 1 + i // 2}} for i in range(PASS_ATTACKS)]
    return EvalConfig.from_dict({
        "dataset": "synthetic", "split": "test", "n_examples": n, "batch_size": batch_size, "seed": seed,
        "mode": "cascade", "attacks": attacks, "diagnostics": {"enabled": diagnostics},
        "threats": [{"norm": "linf", "epsilons": [round(0.0005 * (i + 1), 5) for i in range(results // PASS_ATTACKS)]}],
    })


def measure_passes(results: int, args: argparse.Namespace, device: torch.device) -> dict:
    """Median seconds of each of :data:`PASSES` over a record of ``results`` results (written once, untimed)."""
    import statistics

    from kwta_robust.budget_check import plan_reruns
    from kwta_robust.diagnostics import run_checks
    from kwta_robust.evaluate import evaluate
    from kwta_robust.formats import render_stdout
    from kwta_robust.record_checks import checked_record_data
    from kwta_robust.record_diff import record_differences
    from kwta_robust.results import load_record, save_record

    n = args.pass_samples
    model = cheap_model(device, args.seed)
    data = synthetic_data(model, n, device, args.seed)
    cfg, no_checks = (pass_config(n, results, args.batch_size, args.seed, on) for on in (True, False))
    with tempfile.TemporaryDirectory() as folder:
        out, twin = os.path.join(folder, "record.json"), os.path.join(folder, "twin.json")
        save_record(evaluate(model, data, no_checks, {"label": "mlp"}, progress=False, layout="preserve"), out)
        save_record(load_record(out), twin)
        record = load_record(out)
        passes = {
            "checks": lambda: run_checks(record),
            "plan": lambda: plan_reruns(record, cfg.diagnostics.budget_check, args.seed),
            "table": lambda: render_stdout([record], "md"),
            "resume": lambda: evaluate(model, data, no_checks, {"label": "mlp"}, out_path=out, progress=False,
                                       command=["bench_record_scale"], layout="preserve"),
            "diff": lambda: record_differences(checked_record_data(out), checked_record_data(twin)),
        }
        measure = timer(args.clock, device)
        times = {name: statistics.median(measure(fn) for _ in range(args.repeats)) for name, fn in passes.items()}
        size = os.path.getsize(out)
    return {"results": results, "n": n, **{f"{name}_s": t for name, t in times.items()}, "record_mb": size / 1e6}


def run(args: argparse.Namespace) -> dict:
    device = setup(args)
    out: dict = {"machine": machine_info(device, args.clock), "repeats": args.repeats}
    if args.part in ("all", "runner"):
        rows = [measure(n, units, args, device) for n in args.sizes for units in args.units]
        ratio = {(r["n"], r["units"]): r["ratio"] for r in rows}
        small, large, few, many = args.sizes[0], args.sizes[-1], args.units[0], args.units[-1]
        growth = {"samples": ratio[large, many] / ratio[small, many], "units": ratio[large, many] / ratio[large, few]}
        out.update(rows=rows, growth=growth, met=max(growth.values()) <= TARGET_GROWTH, sizes=(small, large),
                   units=(few, many))
    if args.part in ("all", "passes"):
        rows = [measure_passes(results, args, device) for results in args.pass_results]
        first, last = rows[0], rows[-1]
        growth = {name: (last[f"{name}_s"] / last["results"]) / max(first[f"{name}_s"] / first["results"], 1e-12)
                  for name in PASSES}
        out.update(pass_rows=rows, pass_growth=growth, passes_met=max(growth.values()) <= TARGET_GROWTH)
    return out


def report(result: dict) -> str:
    lines = [f"machine: {machine_line(result['machine'])}, repeats={result['repeats']}"]
    if "rows" in result:
        rows = [[r["n"], r["units"], r["bare_s"], r["runner_s"], r["ratio"], r["record_mb"]] for r in result["rows"]]
        lines += [
            "",
            markdown_table(["samples", "units (FGSM x eps)", "bare s", "runner s", "runner / bare", "record MB"], rows),
            "",
            f"target: runner / bare grows <= {TARGET_GROWTH:g}x from {result['sizes'][0]} to {result['sizes'][1]} "
            f"samples (at {result['units'][1]} units) and from {result['units'][0]} to {result['units'][1]} units (at "
            f"{result['sizes'][1]} samples): {'MET' if result['met'] else 'NOT met'} (growth "
            f"{result['growth']['samples']:.3f} and {result['growth']['units']:.3f})",
        ]
    if "pass_rows" in result:
        rows = [[r["results"], r["n"], *(r[f"{name}_s"] for name in PASSES), r["record_mb"]]
                for r in result["pass_rows"]]
        first, last = result["pass_rows"][0]["results"], result["pass_rows"][-1]["results"]
        growth = ", ".join(f"{name} {result['pass_growth'][name]:.3f}" for name in PASSES)
        lines += [
            "",
            markdown_table(["results", "samples", *(f"{name} s" for name in PASSES), "record MB"], rows),
            "",
            f"target: each pass's time per result grows <= {TARGET_GROWTH:g}x from {first} to {last} results: "
            f"{'MET' if result['passes_met'] else 'NOT met'} (growth {growth}; quadratic: {last / first:g})",
        ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_common_arguments(parser, repeats=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 10000],
                        help="sample counts, ascending (default 500 10000)")
    parser.add_argument("--units", type=int, nargs="+", default=[2, 20],
                        help="epsilon counts (one FGSM unit each), ascending (default 2 20)")
    parser.add_argument("--batch-size", type=int, default=500, help="batch size (default 500)")
    parser.add_argument("--part", choices=("all", "runner", "passes"), default="all",
                        help="the runner against a bare loop, the passes over a finished record, or both (default)")
    parser.add_argument("--pass-results", type=int, nargs="+", default=[200, 500, 1000],
                        help=f"results of the records the passes read, ascending multiples of {PASS_ATTACKS} "
                             "(default 200 500 1000)")
    parser.add_argument("--pass-samples", type=int, default=1000, help="samples of those records (default 1000)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.units, args.batch_size, args.repeats = [32, 96], [1, 3], 32, 1
        args.pass_results, args.pass_samples = [PASS_ATTACKS, 2 * PASS_ATTACKS], 32
    if min(args.sizes + args.units) < 1 or args.batch_size < 1 or any(v != sorted(v) for v in (args.sizes, args.units)):
        parser.error("--sizes and --units must be >= 1 and ascending, --batch-size >= 1")
    if args.pass_results != sorted(args.pass_results) or any(r < 1 or r % PASS_ATTACKS for r in args.pass_results) \
            or args.pass_samples < 1:
        parser.error(f"--pass-results must be ascending multiples of {PASS_ATTACKS}, --pass-samples >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = parse_args(argv)
    emit(report(run(args)), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
