"""The ``budget-still-lowering`` check under several check seeds, on the stored 1× runs of the strength benchmark:
how often it flags a suite whose budget has not converged, and what it costs (``benchmarks/STRENGTH.md``).

One check's verdict rests on a few re-attacked survivors (``min_samples``: 8 at 100 images by default) and one
seed, so a single run says little about the check itself. This benchmark takes every (model, suite) cell of a
:mod:`benchmarks.bench_strength` results file (``--from``) whose 1× level is complete, rebuilds the record
``kwta-robust evaluate`` would have written for it (:func:`benchmarks.bench_strength.level_record`, with each
sample's clean margin) and runs :func:`kwta_robust.budget_check.run_budget_check` (default settings) under the
check seeds ``0 .. --check-seeds − 1`` — the seed draws the random part of the sample and the re-run attack's
random start — and, with ``--seed-sets``, on the 1× runs of the attack seed sets that ``bench_strength --seeds``
stored (other survivors, other records), with three samplings:

* ``closest``: as shipped, a fraction ``closest`` of the sampled survivors (``--closest``; default: the shipped
  0.75) those the suite's attacks came closest to breaking (the largest margin any attack reached on them, the
  ``margins`` the runner stores per attack), the rest at random;
* ``clean``: the same fraction closest to the boundary by their clean margin, the rest at random (what the check
  does on a record without attack margins; the sixth to the eleventh round's check, with 0.5);
* ``random``: every sampled survivor at random (what the check does on a record without any margin).

A cell whose attacks stored no margins (a results file written before they were) checks ``closest`` as ``clean``.
``--min-samples`` sets how many survivors a re-run attacks at least (``diagnostics.budget_check.min_samples``; by
default four times the kills a flag needs on ``n`` samples, at most ``samples``: 8 at 100 images, 16 at 200, where
the 2-point threshold takes four verified kills; thirteenth and seventeenth rounds). A results file holds checks of
one ``--closest`` and one ``--min-samples`` (``auto``: the default rule).

The table puts each cell's own 1× / 3× / 10× robust accuracy (from ``--from``) next to how many of the seeds
flagged it, the kills per check (``+`` between the re-run attacks) and the check's CPU seconds. Results resume from
``--results``. Run: ``OMP_NUM_THREADS=1 python -m benchmarks.strength_checks --threads 1 --from RESULTS.json``
(``--quick``: the cells of a ``bench_strength --quick`` file, untrained models — only checks the harness).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from benchmarks._common import add_common_arguments, emit, markdown_table, setup, strength_store_paths
from benchmarks.bench_strength import SUITES, ResultStore, level_record, load_models, suite_specs, summarize

logger = logging.getLogger("benchmarks.strength_checks")

SAMPLINGS: tuple[str, ...] = ("random", "clean", "closest")


def checked_cells(source: dict, keys: Sequence[str] | None) -> list[str]:
    """The cells of ``source`` (a strength-benchmark results file) of a shipped suite with a complete 1× level, in
    file order (only ``keys``, if given); Tramèr's gradient estimation is a reference, not a suite, and has no
    check."""
    cells = source.get("cells", {})
    known = [k for k, c in cells.items() if k.split("|")[1] in SUITES and k.split("|")[1] != "tramer-ge"
             and c["levels"].get("1", {}).get("complete")]
    unknown = sorted(set(keys or []) - set(known))
    if unknown:
        raise SystemExit(f"error: --cells: {unknown[0]!r} is not a checked cell of --from (a shipped suite with a "
                         f"complete 1x level); known: {', '.join(known)}")
    return [k for k in known if keys is None or k in keys]


def runs_of(cell: dict, args: argparse.Namespace) -> list[tuple[int, int, str]]:
    """The checks to make on one cell: (attack seed set, check seed, sampling) for seed sets ``0 .. --seed-sets −
    1`` (set ``i >= 1``: the 1× run ``bench_strength --seeds`` stored under ``seed_sets``), every check seed and
    sampling."""
    stored = cell.get("seed_sets", {})
    missing = [i for i in range(1, args.seed_sets) if not stored.get(str(i), {}).get("complete")]
    if missing:
        raise SystemExit(f"error: --seed-sets {args.seed_sets}: --from holds no complete 1x run of seed set "
                         f"{missing[0]} (run bench_strength with --seeds {args.seed_sets})")
    return [(i, c, s) for i in range(args.seed_sets) for c in range(args.check_seeds) for s in args.samplings]


def run(args: argparse.Namespace) -> dict:
    from attacks.base import batched_logits, margin_loss, predict
    from kwta_robust.bpda_layers import plan_bpda_layers
    from kwta_robust.budget_check import run_budget_check
    from kwta_robust.config import EvalConfig
    from kwta_robust.detect import detect_layers
    from kwta_robust.diagnostics import Thresholds
    from kwta_robust.samples import select_samples
    from kwta_robust.loading import load_eval_data
    from kwta_robust.specs import BudgetCheckSpec

    device = setup(args)
    chosen = {k: v for k, v in (("closest", args.closest), ("min_samples", args.min_samples)) if v is not None}
    spec = BudgetCheckSpec(**chosen)  # the rest as shipped
    source = json.loads(Path(args.source).read_text())
    store = ResultStore(Path(args.results))
    store.data["source"] = str(args.source)
    for knob in ("closest", "min_samples"):  # one setting per results file; min_samples None: the default rule
        value = "auto" if getattr(spec, knob) is None else getattr(spec, knob)
        if store.data.setdefault(knob, value) != value:
            flag = "--" + knob.replace("_", "-")
            raise SystemExit(f"error: {flag} {value}: {args.results} holds checks made with {flag} "
                             f"{store.data[knob]}; give another --results")
    keys = checked_cells(source, args.cells)
    names = list(dict.fromkeys(k.split("|")[0] for k in keys))
    models = load_models(names, Path(args.cache_dir), device, 0 if args.quick else None)
    n, seed = source.get("meta", {}).get("n", args.n), source.get("meta", {}).get("seed", args.seed)
    cfg = EvalConfig.from_dict({"dataset": "mnist5k", "n_examples": n, "seed": seed})
    prepared: dict[str, tuple] = {}  # per model, once: its samples, layer probe and clean margins
    for name, loaded in models.items():
        data = select_samples(load_eval_data(cfg, loaded.metadata), cfg)
        x, y = data.x.to(device), data.y.to(device)
        if args.quick:  # untrained models: labelled with their own predictions, as bench_strength --quick does
            y = predict(loaded.model, x)
        margins = margin_loss(batched_logits(loaded.model, x, args.batch_size), y).tolist()
        prepared[name] = ([int(i) for i in data.indices.tolist()], x, y,
                          detect_layers(loaded.model, x[:64], seed=seed), margins)
    for key in keys:
        cell = source["cells"][key]
        name, suite, _, eps_text = key.split("|")
        eps, model = float(eps_text), models[name].model
        indices, x, y, detection, margins = prepared[name]
        if indices != cell["indices"]:
            raise SystemExit(f"error: --from: {key} was measured on other samples (n, seed) than {n}, {seed}")
        specs, suite_cfg = suite_specs(suite, "linf", eps, source.get("meta", {}).get("tramer_divisor", 20))
        layers = plan_bpda_layers(model, specs, suite_cfg.bpda_layers, detection)
        for seed_set, check_seed, sampling in runs_of(cell, args):
            row_key = f"{key}|{sampling}|{seed_set}|{check_seed}"
            if row_key in store.data["cells"]:
                continue
            record = level_record(cell, "linf", eps, seed_set)
            record.clean_margins = [] if sampling == "random" else margins
            if sampling != "closest":  # rank without the attacks' margins: by the clean ones, or at random
                for r in record.results:
                    r.margins = []
            start = time.process_time()
            flags = run_budget_check(model, x, y, record, spec, Thresholds(), check_seed,
                                     args.batch_size, layers)
            runs = [f.evidence for f in flags if f.evidence.get("source") == "rerun"]
            store.data["cells"][row_key] = {
                "flagged": any(f.code == "budget-still-lowering" for f in flags),
                "cpu_s": time.process_time() - start,
                "runs": [{**{k: e.get(k) for k in ("attack", "survivors", "sampled", "closest", "broken",
                                                    "broken_closest", "queries", "drop_lower_bound",
                                                    "estimated_drop", "flagged", "inconclusive", "sampled_indices",
                                                    "closest_indices", "broken_indices")},
                          "settled": "first_sample" in e}
                         for e in runs],
            }
            store.save()
            logger.info("%s: %s", row_key, "flagged" if store.data["cells"][row_key]["flagged"] else "passed")
    return store.data


def report(data: dict, source: dict) -> str:
    """One row per (model, suite): its robust accuracy at 1× / 3× / 10×, and per sampling the check's verdicts."""
    groups: dict[str, dict[str, list[dict]]] = {}
    def order(row_key: str) -> tuple:  # per cell, by attack seed set, then check seed (however the file grew)
        key, _, seed_set, check_seed = row_key.rsplit("|", 3)
        return key, int(seed_set), int(check_seed)

    for row_key in sorted(data.get("cells", {}), key=order):
        key, sampling, _, _ = row_key.rsplit("|", 3)
        groups.setdefault(key, {}).setdefault(sampling, []).append(data["cells"][row_key])
    samplings = [s for s in SAMPLINGS if any(s in g for g in groups.values())]
    header = ["suite", "model", "robust 1× / 3× / 10×", "survivors", "re-attacked"]
    for s in samplings:
        header += [f"{s}: flagged", f"{s}: kills per check", f"{s}: CPU s"]
    rows = []
    for key, by_sampling in groups.items():
        model, suite, _, _ = key.split("|")
        levels = summarize(source["cells"][key])["levels"] if key in source.get("cells", {}) else {}
        robust = " / ".join(f"{levels[lv]['robust_count']}" if lv in levels else "—" for lv in (1, 3, 10))
        first = next(iter(by_sampling.values()))[0]["runs"]
        row: list[Any] = [suite, model, robust, first[0]["survivors"] if first else 0,
                          " + ".join(f"{r['sampled']} ({r['attack']})" for r in first) or "—"]
        for s in samplings:
            checks = by_sampling.get(s, [])
            row.append(f"{sum(c['flagged'] for c in checks)} of {len(checks)}" if checks else "—")
            kills = [" + ".join(f"{r['broken']}" + (f" ({r['broken_closest']})" if r.get("closest") else "")
                                for r in c["runs"]) for c in checks]
            row.append(", ".join(kills) or "—")
            row.append(f"{sum(c['cpu_s'] for c in checks) / len(checks):.0f}" if checks else "—")
        rows.append(row)
    legend = ("robust: samples left (of the cell's n) by the suite at 1×, 3× and 10× its budget (`--from`; the "
              "shipped seeds); survivors and re-attacked: of the first check; kills per check: samples each re-run "
              "attack broke, per check (attack seed set, then check seed), in parentheses those among the closest")
    return markdown_table(header, rows) + "\n\n" + legend


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_common_arguments(parser, repeats=1)  # --repeats and --clock are unused: each check runs once, CPU time
    parser.add_argument("--from", dest="source", required=True, help="strength-benchmark results file (its 1x runs)")
    parser.add_argument("--results", default=None,
                        help="results file (resumed; default runs/bench_strength/checks.json, --quick: in quick/)")
    parser.add_argument("--cells", nargs="+", default=None, metavar="MODEL|SUITE|linf|EPS",
                        help="only these cells of --from (default: every cell with a complete 1x level)")
    parser.add_argument("--check-seeds", type=int, default=5, help="check seeds 0 .. N-1 (default 5)")
    parser.add_argument("--closest", type=float, default=None,
                        help="the check's closest fraction (diagnostics.budget_check.closest; default: as shipped)")
    parser.add_argument("--min-samples", type=int, default=None,
                        help="survivors every re-run attacks at least (diagnostics.budget_check.min_samples; default: "
                             "as shipped, 4x the kills a flag needs on the n samples)")
    parser.add_argument("--seed-sets", type=int, default=1,
                        help="check the 1x runs of attack seed sets 0 .. N-1 (bench_strength --seeds N; default 1)")
    parser.add_argument("--samplings", nargs="+", default=list(SAMPLINGS), choices=SAMPLINGS)
    parser.add_argument("--cache-dir", default=None, help="trained models (runs/bench_strength/[quick/]checkpoints)")
    parser.add_argument("--n", type=int, default=100, help="samples, if --from does not say (default 100)")
    parser.add_argument("--batch-size", type=int, default=250)
    args = parser.parse_args(argv)
    strength_store_paths(args, "checks.json")
    if args.closest is not None and not 0 <= args.closest <= 1:
        parser.error(f"--closest: expected a fraction between 0 and 1, got {args.closest:g}")
    if args.min_samples is not None and args.min_samples < 1:
        parser.error(f"--min-samples: expected at least 1, got {args.min_samples}")
    for name in ("check_seeds", "seed_sets"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: expected an integer >= 1, got {getattr(args, name)}")
    if not Path(args.source).is_file():
        parser.error(f"--from: {args.source} is not a file; give a bench_strength results file")
    if args.quick:
        args.check_seeds = min(args.check_seeds, 2)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    data = run(args)
    emit(report(data, json.loads(Path(args.source).read_text())), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
