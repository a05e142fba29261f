"""Benchmark: strength per query — does each shipped attack suite converge, and what does it cost?

A robust accuracy is an upper bound only as good as the attack budget behind it. For every shipped suite
(``quick``, ``quickstart``, ``mnist5k-full`` as in ``eval_configs/``; the ``standard`` and ``kwta-adaptive`` presets
of :mod:`attacks.suites`) on the small CNN of the package trained with ``kwta-robust train`` defaults (seed 0) —
kWTA at k/N 0.05 / 0.1 / 0.2, its *foreign twin* (:mod:`benchmarks._foreign`: the same function with the top-k
gates written outside the package, loaded like a user's model) and the ReLU twin — it measures, on the same
mnist5k test samples (a seeded permutation, as ``kwta-robust evaluate --n-examples N`` picks them) at Linf ``eps``:

* **1×**: the suite as shipped — its attacks, parameters, order and seeds exactly as the runner runs them (cascade:
  each attack only on the samples still robust) — robust accuracy (per-sample worst case) and total queries;
* **3×** and **10×**: the suite at 3 and 10 times its budget (:func:`scale_spec`, with the budget check's
  :func:`kwta_robust.budget_check.scale_budget`: ``steps`` of every iterative attack including BPDA's inner attack,
  gradient estimation's noise samples per step, Square's queries), run in
  cascade **after** the smaller budgets, on their survivors, with fresh seeds (the labels differ). The 10× column is
  thus the worst case over 1×, 3× and 10× — never above 1× — and its queries are those the larger budget spent on
  the survivors (what it costs to check convergence on a finished run; a standalone 10× run costs more);
* a **Tramèr-configured gradient estimation** (``tramer-ge``: Tramèr et al., NeurIPS 2020, their kWTA notebook:
  σ = eps, sign steps of 0.32·eps, 100 iterations, noise pairs per step in three stages 1 : 10 : 200 over iterations
  0–19 / 20–39 / 40–99), alone on every clean-correct sample, as an independent reference. Their stage sizes
  (50 / 500 / 10,000 pairs) are divided by ``--tramer-divisor`` (default 20: 2 / 25 / 500) to fit a CPU.

Queries are forward plus backward passes through the evaluated model, per input row, counted by hooks
(:func:`attacks.queries.count_queries`, as in every record); CPU seconds are this process's CPU time.

``--suite-file NAME=YAML`` measures any eval config's attacks the same way, next to the shipped suites (how the
candidates for the shipped budgets were compared). Results go to a JSON file (``--results``) after every attack,
and a re-run resumes from it: cells (model, suite, eps, budget) already finished are not run again, so the grid can
be run piece by piece (``--models``, ``--suites``, ``--levels``). The Markdown table is rendered from that file;
levels not run are shown as "not run", never left out silently. ``--baseline FILE`` adds the 1× numbers of another
results file (e.g. the defaults before tuning). ``--seeds N`` runs the 1× level N times with independent attack
seeds (:mod:`benchmarks._strength_seeds`: set i suffixes every label with ``-s{i}``, which reseeds the attack) on the
same samples; the table then shows the 1× mean and range over seeds and judges convergence on mean(1×) − 10×.

Run: ``OMP_NUM_THREADS=1 python -m benchmarks.bench_strength --threads 1`` (hours on one CPU core; the ``--quick``
mode — untrained models, tiny budgets, 6 samples, 1× and 3×, files under ``runs/bench_strength/quick/`` — only
checks the harness).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from benchmarks._common import (add_common_arguments, emit, machine_info, machine_line, markdown_table, setup,
                                strength_store_paths)

logger = logging.getLogger("benchmarks.bench_strength")

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "eval_configs"
SUITES: dict[str, dict] = {
    "quick": {"yaml": "quick.yaml"},
    "quickstart": {"yaml": "quickstart.yaml"},
    "mnist5k-full": {"yaml": "mnist5k-full.yaml"},
    "standard": {"suite": "standard"},
    "kwta-adaptive": {"suite": "kwta-adaptive"},
    "tramer-ge": {"tramer": True},
}
MODELS: tuple[str, ...] = ("kwta-0.05", "kwta-0.1", "kwta-0.2", "foreign-0.1", "relu")
LEVELS: tuple[int, ...] = (1, 3, 10)
CONVERGED_POINTS = 2.0  # a suite is converged when its 10x version lowers robust accuracy by at most this


# --- models --------------------------------------------------------------------------------------------------------
def _train(out: Path, activation: dict, epochs: int | None) -> None:
    from kwta_robust.training import ActivationConfig, TrainConfig, run_training

    extra = {} if epochs is None else {"epochs": epochs}
    cfg = TrainConfig(activation=ActivationConfig(**activation), seed=0, device="cpu", out=str(out), **extra)
    logger.info("training %s (kwta-robust train defaults, seed 0)", out.name)
    run_training(cfg)


def load_models(names: Sequence[str], cache: Path, device: torch.device, epochs: int | None) -> dict[str, Any]:
    """name → ``ModelForEval`` (package checkpoints trained once into ``cache``; the foreign twin through the
    bring-your-own loader, checked bit-identical to its package model)."""
    from benchmarks._foreign import check_bit_identical
    from kwta_robust.loading import load_model
    from kwta_robust.data import load_dataset

    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in names:
        kind, _, ratio = name.partition("-")
        ckpt = cache / ("cnn-relu.pt" if kind == "relu" else f"cnn-kwta-{ratio}.pt")
        if not ckpt.is_file():
            act = {"name": "relu"} if kind == "relu" else {"name": "kwta", "k_ratio": float(ratio)}
            _train(ckpt, act, epochs)
        if kind == "foreign":
            loaded = load_model(None, device, model_factory="benchmarks._foreign:foreign_kwta_cnn", weights=str(ckpt),
                                factory_kwargs={"ratio": float(ratio)}, label=name)
            package = load_model(str(ckpt), device).model
            check_bit_identical(package, loaded.model, load_dataset("mnist5k", "test").x.to(device))
        else:
            loaded = load_model(str(ckpt), device, label=name)
        loaded.model.requires_grad_(False)
        out[name] = loaded
    return out


# --- suites and budgets --------------------------------------------------------------------------------------------
def tramer_spec(eps: float, divisor: int):
    """Tramèr et al.'s gradient estimation on kWTA with their stage sizes divided by ``divisor`` (module docstring)."""
    from kwta_robust.config import AttackSpec

    pairs = [max(1, round(n / divisor)) for n in (50, 500, 10000)]
    schedule = [[20, pairs[0]], [40, pairs[1]], [100, pairs[2]]]
    params = {"steps": 100, "samples_schedule": schedule, "sigma": eps, "step_size": 0.32 * eps, "loss": "margin"}
    return AttackSpec(attack="gradient-estimation", params=params, label="tramer-ge")


def suite_specs(name: str, norm: str, eps: float, tramer_divisor: int,
                sources: dict[str, dict] | None = None) -> tuple[list, Any]:
    """The attack specs of suite ``name`` at ``norm`` as the runner would run them (labels included), and the
    config they come from (its ``bpda_layers`` say which layers BPDA acts on)."""
    from kwta_robust.config import EvalConfig

    source = (sources or SUITES)[name]
    if "yaml" in source:
        data = EvalConfig.from_yaml(CONFIGS / source["yaml"]).to_dict()
    else:
        data = {"dataset": "mnist5k", "suite": source.get("suite")}
    data["threats"] = [{"norm": norm, "epsilons": [eps]}]
    cfg = EvalConfig.from_dict(data)
    if source.get("tramer"):
        return [tramer_spec(eps, tramer_divisor)], cfg
    return [s for s in cfg.labelled_attacks(10) if s.applies_to(norm)], cfg


def scale_spec(spec: Any, factor: int) -> Any | None:
    """``spec`` at ``factor`` times its budget, labelled ``<label>@<factor>x`` (``None``: no budget to scale, e.g.
    FGSM, whose single deterministic step the larger budgets would only repeat)."""
    from kwta_robust.budget_check import scale_budget

    if factor == 1:
        return spec
    params = scale_budget(spec.attack, spec.params, factor)
    return None if params is None else dataclasses.replace(spec, params=params, label=f"{spec.label}@{factor}x")


# --- running a cell ------------------------------------------------------------------------------------------------
class ResultStore:
    """The results file: ``{"meta": ..., "cells": {"model|suite|norm|eps": cell}}``, written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {"meta": {}, "cells": {}}

    def cell(self, key: str) -> dict:
        return self.data["cells"].setdefault(key, {"levels": {}})

    def save(self) -> None:
        from kwta_robust.results import atomic_write_text

        atomic_write_text(self.path, json.dumps(self.data) + "\n")  # no indent: the fast C encoder


def cell_key(model: str, suite: str, norm: str, eps: float) -> str:
    from attacks.base import format_eps

    return f"{model}|{suite}|{norm}|{format_eps(eps)}"


def _stored_robust(cell: dict, levels: Sequence[int], clean: torch.Tensor) -> torch.Tensor:
    """The samples ``clean`` and left robust by every attack of ``levels`` (their stored flags), on ``clean``'s
    device (:func:`benchmarks._strength_seeds.still_robust`)."""
    from benchmarks._strength_seeds import still_robust

    attacks = [a for level in levels for a in cell["levels"].get(str(level), {}).get("attacks", [])]
    return torch.tensor(still_robust(clean.tolist(), attacks), dtype=torch.bool, device=clean.device)


def plan_level(specs: list, layers: dict, norm: str, level: int, seed_set: int = 0) -> tuple[list, list]:
    """The specs of the suite at ``level`` times its budget under seed set ``seed_set`` (``--seeds``: labels
    suffixed ``-s{i}``, :func:`benchmarks._strength_seeds.relabel`) and the runner's plan of them, BPDA on the layers
    ``layers`` gives for its shipped label."""
    from benchmarks._strength_seeds import relabel
    from kwta_robust.attack_plan import plan_attacks

    pairs = [(s, scale_spec(t, level)) for s, t in zip(specs, relabel(specs, seed_set))]
    scaled = [big for _, big in pairs if big is not None]
    return scaled, plan_attacks(scaled, norm, [], {big.label: layers[s.label] for s, big in pairs
                                                   if big is not None and s.label in layers})


def run_level(store: ResultStore, key: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor,
              threat: Any, specs: list, layers: dict, level: int, seed: int, batch_size: int,
              seed_set: int = 0) -> None:
    """Run the suite at ``level`` times its budget on the survivors of the smaller levels (resuming). ``ids``: the
    samples' data-set indices (each batch's seed derives from them, as in ``kwta-robust evaluate``); ``layers``:
    per BPDA label, the layers the runner would resolve (``bpda_layers``). ``seed_set`` ``i ≥ 1`` (1× only): the
    suite with independent attack seeds, on every clean-correct sample, stored under ``seed_sets[i]``."""
    from attacks.base import batched_logits, margin_loss
    from attacks.cascade import worst_case
    from kwta_robust.config import derive_seed
    from kwta_robust.evaluate import batch_seed

    if seed_set and level != 1:
        raise ValueError(f"seed sets run the 1x level only, got level {level}")
    cell = store.cell(key)
    logits = batched_logits(model, x, batch_size)
    clean = logits.argmax(dim=1) == y
    cell["clean"] = [int(v) for v in clean.tolist()]
    cell["clean_margins"] = margin_loss(logits, y).tolist()  # the budget check re-attacks the closest survivors
    smaller = [lv for lv in LEVELS if lv < level and str(lv) in cell["levels"]]
    home = cell.setdefault("seed_sets", {}) if seed_set else cell["levels"]
    entry = home.setdefault(str(seed_set or level), {"attacks": [], "complete": False})
    if entry["complete"]:
        return
    scaled, planned = plan_level(specs, layers, threat.norm, level, seed_set)
    seeds = [derive_seed(seed, s.label, threat.norm, repr(threat.eps)) for s in scaled]
    attacks = [p.build(sd, {}, "", {}) for p, sd in zip(planned, seeds)]

    def attacks_for(i: int, batch_ids: torch.Tensor) -> Any:  # seeded per batch from its samples, as evaluate does
        return planned[i].build(batch_seed(seeds[i], batch_ids), {}, "", {})
    done = {a["label"]: a for a in entry["attacks"]}
    completed = {i: torch.tensor(done[s.label]["flags"], dtype=torch.int8) for i, s in enumerate(scaled)
                 if s.label in done}
    clock = [time.process_time()]

    def on_outcome(i: int, outcome: Any, flags: torch.Tensor) -> None:
        now = time.process_time()
        spec = scaled[i]
        entry["attacks"].append({
            "label": spec.label, "attack": spec.attack, "params": spec.params,
            "flags": [int(v) for v in flags.tolist()],
            "margins": outcome.margins(),  # as evaluate stores them
            "n_attacked": int((flags >= 0).sum()), "n_broken": int((flags == 0).sum()),
            "queries": int(outcome.queries or 0), "wall_s": outcome.wall_time_s, "cpu_s": now - clock[0],
        })
        clock[0] = now
        store.save()
        logger.info("%s %s: broke %d of %d (%d queries, %.0f s)", key, spec.label, int((flags == 0).sum()),
                    int((flags >= 0).sum()), int(outcome.queries or 0), outcome.wall_time_s)

    worst_case(model, x, y, threat, attacks, "cascade", batch_size=batch_size,
               clean_correct=_stored_robust(cell, smaller, clean), completed=completed, on_outcome=on_outcome,
               ids=ids, attacks_for=attacks_for)
    order = {s.label: i for i, s in enumerate(scaled)}
    entry["attacks"].sort(key=lambda a: order[a["label"]])
    entry["complete"] = True
    store.save()


def run(args: argparse.Namespace) -> dict:
    from attacks.base import ThreatModel
    from kwta_robust.bpda_layers import plan_bpda_layers
    from kwta_robust.loading import load_eval_data
    from kwta_robust.detect import detect_layers
    from kwta_robust.config import EvalConfig
    from kwta_robust.samples import select_samples

    device = setup(args)
    store = ResultStore(Path(args.results))
    store.data["meta"] = {"machine": machine_info(device, "cpu"), "n": args.n, "seed": args.seed,
                          "tramer_divisor": args.tramer_divisor}
    models = load_models(args.models, Path(args.cache_dir), device, 0 if args.quick else None)
    for model_name, loaded in models.items():
        cfg = EvalConfig.from_dict({"dataset": "mnist5k", "n_examples": args.n, "seed": args.seed})
        data = select_samples(load_eval_data(cfg, loaded.metadata), cfg)
        x, y = data.x.to(device), data.y.to(device)
        if args.quick:  # untrained models: label the samples with the model's own predictions (all attacked)
            from attacks.base import predict

            y = predict(loaded.model, x)
        detection = detect_layers(loaded.model, x[:64], seed=args.seed)
        for suite in args.suites:
            for eps in args.eps:
                specs, cfg = suite_specs(suite, "linf", eps, args.tramer_divisor, args.suite_sources)
                if args.budget_cap is not None:
                    specs = [cap_spec(s, args.budget_cap) for s in specs]
                layers = plan_bpda_layers(loaded.model, specs, cfg.bpda_layers, detection)
                key = cell_key(model_name, suite, "linf", eps)
                cell = store.cell(key)
                cell["indices"] = [int(i) for i in data.indices.tolist()]
                cell["bpda_layers"] = {label: sorted(t) for label, t in layers.items()}
                levels = [1] if suite == "tramer-ge" else args.levels
                for level in sorted(levels):
                    run_level(store, key, loaded.model, x, y, data.indices.cpu(), ThreatModel("linf", eps), specs,
                              layers, level, args.seed, args.batch_size)
                if suite != "tramer-ge":
                    check_budget(store, key, loaded.model, x, y, eps, layers, args.seed, args.batch_size)
                for seed_set in range(1, args.seeds if 1 in levels else 1):  # --seeds: the 1x level again
                    run_level(store, key, loaded.model, x, y, data.indices.cpu(), ThreatModel("linf", eps), specs,
                              layers, 1, args.seed, args.batch_size, seed_set)
    store.save()
    return store.data


def level_record(cell: dict, norm: str, eps: float, seed_set: int = 0) -> Any:
    """The 1× level of a cell (under seed set ``seed_set``, ``--seeds``) as the evaluation record ``kwta-robust
    evaluate`` would have written (its results, with the attacks' margins where the cell stored them)."""
    from attacks.base import attack_info, format_eps
    from kwta_robust.results import SCHEMA_VERSION, Accuracy, AttackResult, EvalRecord

    n, results = len(cell["clean"]), []
    level = cell["seed_sets"][str(seed_set)] if seed_set else cell["levels"]["1"]
    for i, a in enumerate(level["attacks"]):
        info, flags = attack_info(a["attack"]), a["flags"]
        results.append(AttackResult(
            a["label"], a["attack"], info.kind, info.single_step, a["params"], norm, eps, format_eps(eps), i, 0, True,
            Accuracy.of(sum(f == 1 for f in flags), n), a["n_attacked"], a["n_broken"], flags, a["wall_s"], 0, 0.0,
            a["queries"], margins=list(a.get("margins", []))))
    return EvalRecord(SCHEMA_VERSION, "complete", {}, {}, Accuracy.of(sum(cell["clean"]), n), cell["clean"], {}, "",
                      "cascade", results=results, clean_margins=list(cell.get("clean_margins", [])))


def check_budget(store: ResultStore, key: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                 layers: dict, seed: int, batch_size: int) -> None:
    """The ``budget-still-lowering`` check (default settings) on the 1× run, as on a user's run: its flags."""
    from kwta_robust.budget_check import run_budget_check
    from kwta_robust.diagnostics import Thresholds
    from kwta_robust.specs import BudgetCheckSpec

    cell = store.cell(key)
    if "budget_check" in cell or not cell["levels"].get("1", {}).get("complete"):
        return
    flags = run_budget_check(model, x, y, level_record(cell, "linf", eps), BudgetCheckSpec(), Thresholds(), seed,
                             batch_size, layers)
    cell["budget_check"] = [f.to_dict() for f in flags]
    store.save()


def budget_summary(cell: dict, run_queries: int) -> str:
    """One cell of the table: what the budget check said on the 1× run, and what it cost."""
    flags = cell.get("budget_check")
    if flags is None:
        return "not run"
    raised = [f["evidence"] for f in flags if f["code"] == "budget-still-lowering"]
    ran = [f["evidence"] for f in flags if f["evidence"].get("source") == "rerun"]
    cost = sum(e["queries"] or 0 for e in ran) / max(run_queries, 1)
    unsure = [e for e in ran if e.get("inconclusive")]
    if raised:
        text = "; ".join(f"{e['attack']} ≥{100 * e['drop_lower_bound']:.0f} pts" for e in raised)
    elif unsure:
        text = "; ".join(f"{e['attack']} inconclusive (estimate {100 * e['estimated_drop']:.1f} pts)" for e in unsure)
    elif ran:
        text = "ok"
    else:
        text = "skipped (cost)" if flags else "no survivors"
    return f"{text} ({100 * cost:.0f}% cost)" if ran else text


def cap_spec(spec: Any, cap: int) -> Any:
    """``spec`` with every budget capped at ``cap`` steps (``--budget-cap``, ``--quick``):
    :func:`kwta_robust.budget_scale.cap_budget`."""
    from kwta_robust.budget_scale import cap_budget

    return dataclasses.replace(spec, params=cap_budget(spec.attack, spec.params, cap))


# --- the table -----------------------------------------------------------------------------------------------------
def summarize(cell: dict) -> dict:
    """Per level: robust fraction (worst case over this and smaller levels), queries and CPU s of this level."""
    clean = torch.tensor(cell["clean"], dtype=torch.bool)
    out: dict[str, Any] = {"n": len(cell["clean"]), "clean": float(clean.float().mean()), "levels": {}}
    ran: list[int] = []
    for level in LEVELS:
        entry = cell["levels"].get(str(level))
        if entry is None or not entry.get("complete"):
            continue
        ran.append(level)
        robust = _stored_robust(cell, ran, clean)
        out["levels"][level] = {
            "robust": float(robust.float().mean()), "robust_count": int(robust.sum()),
            "queries": sum(a["queries"] for a in entry["attacks"]), "cpu_s": sum(a["cpu_s"] for a in entry["attacks"]),
            "broken_by": {a["label"]: a["n_broken"] for a in entry["attacks"] if a["n_broken"]},
        }
    return out


def _q(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{int(n)}"


def _pct(x: float) -> str:
    from benchmarks._strength_seeds import points

    return f"{points(x)}%"


def report(data: dict, baseline: dict | None = None) -> str:
    """The Markdown table of a results file (1×: mean and range over seeds where a cell ran ``--seeds`` > 1)."""
    from benchmarks._strength_seeds import gap_points, legend, robust_text, seed_summary

    header = ["suite", "model", "Linf eps", "n", "clean"]
    if baseline is not None:
        header += ["before 1×: robust", "before 1×: queries"]
    header += ["1×: robust", "1×: queries", "1×: CPU s", "3×: robust", "3×: queries", "10×: robust", "10×: queries",
               "1× − 10× (points)", "budget check on 1×"]
    rows, seed_counts = [], []
    order = {name: i for i, name in enumerate(SUITES)}  # shipped suites first, then --suite-file ones by name
    for key in sorted(data["cells"], key=lambda k: (order.get(k.split("|")[1], len(order)), k)):
        model, suite, _, eps = key.split("|")
        cell = data["cells"][key]
        if "clean" not in cell:
            continue
        s, seeds = summarize(cell), seed_summary(cell)
        multi = seeds is not None and seeds["seeds"] > 1
        seed_counts.append(seeds["seeds"] if seeds else 0)
        row: list[Any] = [suite, model, eps, s["n"], _pct(s["clean"])]
        if baseline is not None:
            base = baseline["cells"].get(key)
            b = summarize(base)["levels"].get(1) if base and "clean" in base else None
            row += [_pct(b["robust"]), _q(b["queries"])] if b else ["not run", "not run"]
        for level in LEVELS:
            lv = s["levels"].get(level)
            if suite == "tramer-ge" and level > 1:
                row += ["—", "—"]
            elif lv is None:
                row += ["not run", "not run"] + ([""] if level == 1 else [])
            elif level == 1 and multi:
                row += [robust_text(seeds), _q(seeds["queries"]), f"{seeds['cpu_s']:.0f}"]
            else:
                row += [_pct(lv["robust"]), _q(lv["queries"])] + ([f"{lv['cpu_s']:.0f}"] if level == 1 else [])
        one, top = s["levels"].get(1), s["levels"].get(max(s["levels"], default=1))
        ranked = one and top and suite != "tramer-ge" and 10 in s["levels"]
        counts = seeds["counts"] if multi else [one["robust_count"]] if one else []
        gap = gap_points(counts, top["robust_count"], s["n"]) if ranked else None
        text = "—" if gap is None else f"{float(gap):.1f}" if multi else f"{round(float(gap), 1):g}"
        row.append(text + ("" if gap is None or gap <= CONVERGED_POINTS else " (not converged)"))
        row.append("—" if suite == "tramer-ge" or not one else budget_summary(cell, one["queries"]))
        rows.append(row)
    meta = data.get("meta", {})
    lines = [f"machine: {machine_line(meta.get('machine', {}))}", "", markdown_table(header, rows)]
    if max(seed_counts, default=0) > 1:
        lines += [""] + legend([c for c in seed_counts if c])
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_common_arguments(parser, repeats=1)  # --repeats and --clock are unused: every cell runs once, CPU time
    parser.add_argument("--results", default=None,
                        help="results file (resumed; default runs/bench_strength/results.json, --quick: in quick/)")
    parser.add_argument("--baseline", default=None, help="results file whose 1x numbers are shown as 'before'")
    parser.add_argument("--cache-dir", default=None, help="trained models (runs/bench_strength/[quick/]checkpoints)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--suite-file", action="append", default=[], metavar="NAME=YAML",
                        help="also measure the attacks of this eval config under NAME (repeatable; e.g. a candidate "
                             "for a shipped suite, or your own)")
    parser.add_argument("--suites", nargs="+", default=None, help=f"suites to run (default: {' '.join(SUITES)})")
    parser.add_argument("--levels", nargs="+", type=int, default=list(LEVELS), choices=LEVELS)
    parser.add_argument("--eps", nargs="+", type=float, default=[0.1], help="Linf epsilons (default 0.1)")
    parser.add_argument("--n", type=int, default=100, help="mnist5k test samples (default 100)")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--tramer-divisor", type=int, default=20, help="divide Tramèr's noise pairs by this")
    parser.add_argument("--budget-cap", type=int, default=None, help="cap every budget at this many steps")
    parser.add_argument("--seeds", type=int, default=1,
                        help="run the 1x level of each suite this many times with independent attack seeds (set i "
                             "suffixes every label with -s{i}; a label seeds its attack) on the same samples; the "
                             "table shows the mean and range over seeds and judges convergence on the mean "
                             "(default 1: the shipped labels only)")
    parser.add_argument("--report-only", action="store_true", help="render the table from --results, run nothing")
    args = parser.parse_args(argv)
    strength_store_paths(args, "results.json")
    args.suite_sources = dict(SUITES)
    for item in args.suite_file:
        name, sep, path = item.partition("=")
        if not sep or not name or not Path(path).is_file():
            parser.error(f"--suite-file: expected NAME=PATH of an existing eval config, got {item!r}")
        args.suite_sources[name] = {"yaml": str(Path(path).resolve())}
    if args.seeds < 1:
        parser.error(f"--seeds: expected an integer >= 1 (how many attack seeds at 1x), got {args.seeds}")
    args.suites = args.suites or list(SUITES)
    unknown = [s for s in args.suites if s not in args.suite_sources]
    if unknown:
        parser.error(f"--suites: unknown {unknown}; known: {', '.join(args.suite_sources)} (add one with --suite-file)")
    if args.quick:
        args.n, args.budget_cap, args.eps = 6, 2, [0.005]  # untrained models: a small eps leaves survivors
        args.levels = [1, 3]
        args.models = ["kwta-0.1", "foreign-0.1", "relu"]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    data = ResultStore(Path(args.results)).data if args.report_only else run(args)
    baseline = json.loads(Path(args.baseline).read_text()) if args.baseline else None
    emit(report(data, baseline), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
