"""Attack variants, one at a time: how many samples each breaks, and at what cost — the evidence behind the tuned
defaults of the shipped suites (``benchmarks/STRENGTH.md``).

Each variant (a JSON object ``{name: {"attack": ..., "params": {...}, "seed": 1}}``, e.g.
``benchmarks/strength_variants.json``) runs alone, through the runner's verified path
(:func:`attacks.cascade.run_verified`: projected, re-classified, queries counted), on the models and the samples of
:mod:`benchmarks.bench_strength` (100 mnist5k test images, Linf ``eps``), on two sets:

* ``all``: every clean-correct sample — the variant's own strength;
* ``hard``: the samples a suite left robust at 1× in a strength-benchmark results file (``--hard-from``,
  ``--hard-suite``; default ``mnist5k-full``) — what the variant adds to a suite's worst case.

BPDA variants act on the layers ``bpda_layers: auto`` resolves (the layer probe of :mod:`kwta_robust.detect`).
A ``transfer`` variant names its source among the benchmark's models (``"params": {"source": "relu", "inner":
"apgd-ce", ...}``: crafted on the ReLU twin, verified on the target; a BPDA inner attack acts on the source's layers).
Results resume from ``--results``. Run: ``OMP_NUM_THREADS=1 python -m benchmarks.strength_variants --threads 1``
(``--quick``: untrained models, 6 samples, Linf 0.005 — only checks the harness).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from benchmarks._common import add_common_arguments, emit, markdown_table, setup, strength_store_paths
from benchmarks.bench_strength import MODELS, ResultStore, cell_key, load_models

logger = logging.getLogger("benchmarks.strength_variants")

DEFAULT_VARIANTS = Path(__file__).resolve().parent / "strength_variants.json"


def sample_sets(loaded: Any, n: int, seed: int, eps: float, hard_from: dict | None, hard_suite: str,
                device: torch.device, hard_attacks: Sequence[str] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """The samples of the strength benchmark and the ``all`` / ``hard`` masks over them (``hard_attacks``: only
    these attacks of the suite's 1× run decide which samples are left, e.g. ``pgd`` for what PGD left)."""
    from attacks.base import predict
    from kwta_robust.loading import load_eval_data
    from kwta_robust.config import EvalConfig
    from kwta_robust.samples import select_samples

    cfg = EvalConfig.from_dict({"dataset": "mnist5k", "n_examples": n, "seed": seed})
    data = select_samples(load_eval_data(cfg, loaded.metadata), cfg)
    x, y = data.x.to(device), data.y.to(device)
    clean = predict(loaded.model, x) == y
    sets = {"all": clean}
    cell = (hard_from or {}).get("cells", {}).get(cell_key(loaded.label, hard_suite, "linf", eps))
    if cell and cell["levels"].get("1", {}).get("complete"):
        sets["hard"] = left_by(clean, cell["levels"]["1"]["attacks"], hard_attacks)
    return x, y, sets


def left_by(clean: torch.Tensor, attacks: list[dict], labels: Sequence[str] | None = None) -> torch.Tensor:
    """``[N]`` bool: clean-correct samples no stored attack (only those labelled ``labels``, if given) broke
    (flag 0)."""
    left = clean.clone()
    for attack in attacks:
        if labels is None or attack["label"] in labels:
            left &= torch.tensor(attack["flags"], device=clean.device) != 0
    return left


def run(args: argparse.Namespace) -> dict:
    from attacks.base import ThreatModel
    from attacks.cascade import run_verified

    device = setup(args)
    variants = json.loads(Path(args.variants).read_text())
    store = ResultStore(Path(args.results))
    hard_from = json.loads(Path(args.hard_from).read_text()) if args.hard_from else None
    threat = ThreatModel("linf", args.eps)
    sources: dict[str, tuple[nn.Module, dict]] = {}

    def source_model(source: str, x: torch.Tensor) -> tuple[nn.Module, dict]:
        """A transfer variant's source (loaded once) and its probed BPDA layers."""
        if source not in sources:
            if source not in MODELS:
                raise SystemExit(f"error: a transfer variant's source must be one of {', '.join(MODELS)}, got "
                                 f"{source!r}")
            model = load_models([source], Path(args.cache_dir), device, 0 if args.quick else None)[source].model
            sources[source] = (model, probed_layers(model, x, args.seed))
        return sources[source]

    for name, loaded in load_models(args.models, Path(args.cache_dir), device, 0 if args.quick else None).items():
        x, y, sets = sample_sets(loaded, args.n, args.seed, args.eps, hard_from, args.hard_suite, device,
                                 args.hard_attacks)
        sets = {k: v for k, v in sets.items() if k in args.sets}
        if args.quick:  # untrained models: label the samples with the model's own predictions (all attacked)
            from attacks.base import predict

            y = predict(loaded.model, x)
            sets = {k: torch.ones_like(v) for k, v in sets.items()}
        layers = probed_layers(loaded.model, x, args.seed)
        for variant, spec in variants.items():
            for set_name, mask in sets.items():
                key = f"{name}|{variant}|{set_name}"
                if key in store.data["cells"]:
                    continue
                attack = build_attack(spec, layers, lambda source: source_model(source, x))
                start = time.process_time()
                outcome = run_verified(loaded.model, attack, x, y, threat, mask, args.batch_size)
                store.data["cells"][key] = {
                    "broken": int(outcome.success.sum()), "of": int(mask.sum()), "queries": int(outcome.queries or 0),
                    "cpu_s": time.process_time() - start, "broken_idx": outcome.success.nonzero().flatten().tolist(),
                }
                store.save()
                logger.info("%s: broke %d of %d", key, int(outcome.success.sum()), int(mask.sum()))
    return store.data


def probed_layers(model: nn.Module, x: torch.Tensor, seed: int) -> dict:
    """The layers ``bpda_layers: auto`` resolves on ``model`` (the layer probe on the first 64 samples)."""
    from kwta_robust.bpda_layers import resolve_bpda_layers
    from kwta_robust.detect import detect_layers

    return dict(resolve_bpda_layers(model, ["auto"], detect_layers(model, x[:64], seed=seed)))


def build_attack(spec: dict, layers: dict, source: Callable[[str], tuple[nn.Module, dict]]) -> Any:
    """A variant's attack: BPDA on the target's ``layers``; a transfer from the benchmark model ``source(name)``
    returns (with its BPDA inner attack on that model's layers); any other attack as its parameters say."""
    from attacks.base import create_attack

    params = dict(spec["params"])
    if spec["attack"] == "bpda":
        params["layers"] = dict(layers)
    elif spec["attack"] == "transfer":
        name = params["source"]
        params["source"], source_layers = source(name)
        params["source_name"] = name
        if params.get("inner") == "bpda":
            params["inner_params"] = {**params.get("inner_params", {}), "layers": dict(source_layers)}
    return create_attack(spec["attack"], **{"seed": spec.get("seed", 1), **params})


def report(data: dict, variants: dict) -> str:
    rows = []
    for key, cell in data["cells"].items():
        model, variant, set_name = key.split("|")
        spec = variants.get(variant, {})
        rows.append([model, variant, set_name, f"{cell['broken']} / {cell['of']}", cell["queries"],
                     f"{cell['cpu_s']:.0f}",
                     json.dumps({"attack": spec.get("attack"), **spec.get("params", {})})])
    return markdown_table(["model", "variant", "samples", "broken", "queries", "CPU s", "attack"], rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_common_arguments(parser, repeats=1)
    parser.add_argument("--variants", default=str(DEFAULT_VARIANTS), help="JSON file of variants")
    parser.add_argument("--models", nargs="+", default=["kwta-0.1"], choices=MODELS)
    parser.add_argument("--results", default=None,
                        help="results file (resumed; default runs/bench_strength/variants.json, --quick: in quick/)")
    parser.add_argument("--hard-from", default=None, help="strength-benchmark results whose survivors are 'hard'")
    parser.add_argument("--hard-suite", default="mnist5k-full", help="suite whose 1x survivors are 'hard'")
    parser.add_argument("--hard-attacks", nargs="+", default=None, metavar="LABEL",
                        help="only these attacks of that suite decide what is left (default: all of them)")
    parser.add_argument("--sets", nargs="+", default=["all", "hard"], choices=["all", "hard"],
                        help="sample sets to run the variants on (default: both)")
    parser.add_argument("--cache-dir", default=None, help="trained models (runs/bench_strength/[quick/]checkpoints)")
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=250)
    args = parser.parse_args(argv)
    strength_store_paths(args, "variants.json")
    if args.quick:
        args.n, args.eps = 6, 0.005
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    emit(report(run(args), json.loads(Path(args.variants).read_text())), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
