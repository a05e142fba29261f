"""Benchmark: our attacks next to torchattacks, foolbox and Tramèr et al.'s gradient-estimation loop.

For PGD, APGD-CE, APGD-T, FAB, FAB-T, Square, CW-L2, DeepFool and gradient estimation, every implementation runs
on the **same model, the same examples and the same budget**, in one run; the table gives each one's robust
accuracy, how many examples ours breaks that it does not and the other way round, and the ratio of our time to its
time (paired repetitions, median of the per-repetition ratios; see :mod:`benchmarks._common`).

Workload: the small CNN (``create_model("cnn")``; ReLU, and kWTA k/N 0.1 in volume mode), **trained** in this
process for ``--epochs`` epochs on the mnist5k training split (seeded; untrained models are broken by anything,
which would make every robust accuracy 0), attacked on the first ``--n`` mnist5k test examples with their true
labels (robust accuracy = fraction of the ``--n`` examples classified correctly after the attack, clean errors
included). Every output is checked against the threat model (the table counts outputs outside the ball) and
projected onto it before it is classified; minimal-perturbation attacks (FAB, CW, DeepFool) are projected as the
evaluation runner projects them. Budgets (Linf ``--eps``, L2 ``--l2-eps`` for CW and DeepFool):

* ``pgd``: 40 steps of ``2.5 eps / 40``, uniform random start, CE — ours, ``torchattacks.PGD``,
  ``foolbox.attacks.LinfPGD``;
* ``apgd-ce`` / ``apgd-t``: 100 iterations, 1 restart (APGD-T: 9 target classes) — ours, ``torchattacks.APGD`` /
  ``APGDT``;
* ``fab``: untargeted, 100 iterations, 1 restart — ours, ``torchattacks.FAB``;
* ``fab-t``: targeted (AutoAttack's FAB-T), 100 iterations, 1 restart, 9 target classes — ours,
  ``torchattacks.FAB(multi_targeted=True)``;
* ``square``: ``--square-queries`` queries (default 1,000), ``p_init`` 0.8 — ours, ``torchattacks.Square``;
* ``cw``: 5 binary-search steps × 100 Adam steps, lr 0.01, initial c 1 — ours,
  ``foolbox.attacks.L2CarliniWagnerAttack`` (same budget, its early abort on), ``torchattacks.CW`` (no binary
  search: c = 1 for the same 500 steps);
* ``deepfool``: 50 steps, 10 candidate classes, overshoot 0.02 (L2) — ours, ``foolbox.attacks.L2DeepFoolAttack``,
  ``torchattacks.DeepFool``;
* ``gradient-estimation``: ``--ge-steps`` iterations (default 20) of ``--ge-pairs`` antithetic noise pairs
  (default 50, i.e. the notebook's "100 samples"), sigma = eps, signed steps of ``2.5 eps / steps``, margin loss —
  ours, and ``tramer``: the loop of Tramèr et al.'s kWTA notebook (``wielandbrendel/adaptive_attacks_paper``,
  ``01_kwta``) written in plain torch — for every noise pair one forward of the positive and one of the negative
  probes of the still-robust examples, then a signed step, a clip to the ball and one forward of all examples.
  (The notebook also evaluates the unperturbed batch once per estimate and discards the value; that forward is
  left out, which only makes the peer faster.)

Target (issue 13): for every attack, no peer is both faster than ours and at least as strong (robust accuracy
<= ours): ``ours / peer <= 1.0`` against every peer whose robust accuracy is not higher than ours.

Run: ``python -m benchmarks.bench_peers`` (``--attacks pgd square`` for a subset, ``--device cuda`` on a GPU,
``--quick`` for a smoke run). The full run takes about 45 minutes on one CPU core.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import statistics
import sys
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from benchmarks._common import (
    ACTIVATIONS,
    add_common_arguments,
    emit,
    machine_info,
    machine_line,
    markdown_table,
    paired_timings,
    setup,
)

logger = logging.getLogger("benchmarks.bench_peers")

ATTACKS: tuple[str, ...] = ("pgd", "apgd-ce", "apgd-t", "fab", "fab-t", "square", "cw", "deepfool",
                            "gradient-estimation")
L2_ATTACKS: frozenset[str] = frozenset({"cw", "deepfool"})
TARGET_RATIO = 1.0

Runner = Callable[[], Tensor]


@dataclass(frozen=True)
class Budget:
    """The budgets every implementation of an attack gets (see the module docstring)."""

    pgd_steps: int = 40
    apgd_steps: int = 100
    targets: int = 9
    fab_steps: int = 100
    square_queries: int = 1000
    cw_steps: int = 100
    cw_search: int = 5
    deepfool_steps: int = 50
    ge_steps: int = 20
    ge_pairs: int = 50


# --- the peer loop of Tramèr et al. ---------------------------------------------------------------------------
def logit_gap(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """``z_y - max_{j != y} z_j`` per example ``[N]`` (the notebook's loss, minimised; < 0 means misclassified)."""
    logits = model(x)
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return true - others


def tramer_gradient_estimation(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int, pairs: int,
                               sigma: float, step_size: float, generator: torch.Generator) -> Tensor:
    """Gradient estimation as Tramèr et al.'s kWTA notebook runs it (Linf), in plain torch: ``[N, ...] → [N, ...]``.

    Per iteration, for the examples still classified correctly: ``pairs`` times, draw Gaussian noise, evaluate
    ``x + sigma·u`` and ``x - sigma·u`` in two forwards and accumulate ``(gap+ - gap-)·u``; step against the sign
    of the estimate, clip the perturbation to the ball and the image to [0, 1]; evaluate all examples once.
    """
    with torch.no_grad():
        delta = torch.zeros_like(x)
        active = logit_gap(model, x, y) >= 0
        for _ in range(steps):
            if not bool(active.any()):
                break
            xa, ya = (x + delta).clamp(0, 1)[active], y[active]
            grad = torch.zeros_like(xa)
            for _ in range(pairs):
                noise = torch.randn(xa.shape, generator=generator, device=x.device, dtype=x.dtype)
                diff = logit_gap(model, xa + sigma * noise, ya) - logit_gap(model, xa - sigma * noise, ya)
                grad += diff.view(-1, *([1] * (x.ndim - 1))) * noise
            delta[active] = (delta[active] - step_size * grad.sign()).clamp(-eps, eps)
            active = logit_gap(model, (x + delta).clamp(0, 1), y) >= 0
        return (x + delta).clamp(0, 1)


# --- the implementations of every attack ----------------------------------------------------------------------
def _seeded(seed: int, fn: Callable[[], Tensor]) -> Runner:
    """``fn`` run with the global RNG seeded (the libraries draw from it) and restored afterwards."""

    def run() -> Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return fn()

    return run


def implementations(attack: str, model: nn.Module, x: Tensor, y: Tensor, threat, budget: Budget, seed: int,
                    num_classes: int) -> dict[str, Runner]:
    """``{implementation: () -> x_adv}`` for ``attack``, ours first."""
    import foolbox as fb
    import torchattacks as ta

    from attacks.base import create_attack

    eps, b = threat.eps, budget
    ours_params: Mapping[str, Mapping[str, object]] = {
        "pgd": {"steps": b.pgd_steps}, "apgd-ce": {"steps": b.apgd_steps},
        "apgd-t": {"steps": b.apgd_steps, "n_target_classes": b.targets}, "fab": {"steps": b.fab_steps},
        "fab-t": {"steps": b.fab_steps, "n_target_classes": b.targets},
        "square": {"n_queries": b.square_queries, "p_init": 0.8},
        "cw": {"steps": b.cw_steps, "search_steps": b.cw_search},
        "deepfool": {"steps": b.deepfool_steps},
        "gradient-estimation": {"steps": b.ge_steps, "samples_start": b.ge_pairs, "samples_end": b.ge_pairs},
    }
    ours = create_attack(attack, seed=seed, **ours_params[attack])
    impls: dict[str, Runner] = {"ours": lambda: ours(model, x, y, threat)}
    fmodel = fb.PyTorchModel(model, bounds=threat.bounds, device=x.device)

    def foolbox(fb_attack) -> Runner:
        def run() -> Tensor:
            with contextlib.redirect_stdout(io.StringIO()):  # foolbox's DeepFool prints a note on every call
                return fb_attack(fmodel, x, y, epsilons=eps)[1]
        return _seeded(seed, run)

    def torchattacks(ta_attack) -> Runner:
        ta_attack.set_device(x.device)
        return _seeded(seed, lambda: ta_attack(x, y))

    alpha = 2.5 * eps / b.pgd_steps
    if attack == "pgd":
        impls["torchattacks"] = torchattacks(ta.PGD(model, eps=eps, alpha=alpha, steps=b.pgd_steps, random_start=True))
        impls["foolbox"] = foolbox(fb.attacks.LinfPGD(abs_stepsize=alpha, steps=b.pgd_steps, random_start=True))
    elif attack == "apgd-ce":
        impls["torchattacks"] = torchattacks(ta.APGD(model, norm="Linf", eps=eps, steps=b.apgd_steps, n_restarts=1,
                                                     seed=seed, loss="ce", rho=0.75))
    elif attack == "apgd-t":
        targets = min(b.targets, num_classes - 1)
        impls["torchattacks"] = torchattacks(ta.APGDT(model, norm="Linf", eps=eps, steps=b.apgd_steps, n_restarts=1,
                                                      seed=seed, rho=0.75, n_classes=targets + 1))
    elif attack == "fab":
        impls["torchattacks"] = torchattacks(ta.FAB(model, norm="Linf", eps=eps, steps=b.fab_steps, n_restarts=1,
                                                    multi_targeted=False, n_classes=num_classes, seed=seed))
    elif attack == "fab-t":
        targets = min(b.targets, num_classes - 1)
        impls["torchattacks"] = torchattacks(ta.FAB(model, norm="Linf", eps=eps, steps=b.fab_steps, n_restarts=1,
                                                    multi_targeted=True, n_classes=targets + 1, seed=seed))
    elif attack == "square":
        impls["torchattacks"] = torchattacks(ta.Square(model, norm="Linf", eps=eps, n_queries=b.square_queries,
                                                       n_restarts=1, p_init=0.8, loss="margin", resc_schedule=False,
                                                       seed=seed))
    elif attack == "cw":
        impls["foolbox"] = foolbox(fb.attacks.L2CarliniWagnerAttack(
            binary_search_steps=b.cw_search, steps=b.cw_steps, stepsize=0.01, confidence=0, initial_const=1.0))
        impls["torchattacks"] = torchattacks(ta.CW(model, c=1, kappa=0, steps=b.cw_search * b.cw_steps, lr=0.01))
    elif attack == "deepfool":
        impls["foolbox"] = foolbox(fb.attacks.L2DeepFoolAttack(steps=b.deepfool_steps, candidates=10, overshoot=0.02))
        impls["torchattacks"] = torchattacks(ta.DeepFool(model, steps=b.deepfool_steps, overshoot=0.02))
    elif attack == "gradient-estimation":
        gen = torch.Generator(device=x.device)

        def tramer() -> Tensor:
            gen.manual_seed(seed)
            return tramer_gradient_estimation(model, x, y, eps, b.ge_steps, b.ge_pairs, sigma=eps,
                                              step_size=2.5 * eps / b.ge_steps, generator=gen)

        impls["tramer"] = tramer
    else:
        raise ValueError(f"unknown attack {attack!r}; use one of {', '.join(ATTACKS)}")
    return impls


# --- models, measurement, report ------------------------------------------------------------------------------
def trained_small_cnn(activation: str, epochs: int, device: torch.device, seed: int) -> nn.Module:
    """The small CNN (``ACTIVATIONS[activation]``) trained ``epochs`` epochs on the mnist5k training split (Adam,
    no augmentation, seeded), in eval mode with frozen parameters; ``epochs=0`` leaves it untrained."""
    from kwta_robust.data import dataset_info, load_dataset
    from kwta_robust.layers import ActivationSpec
    from kwta_robust.models import create_model
    from kwta_robust.training import TrainConfig, train_model

    info = dataset_info("mnist5k")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model("cnn", activation=ActivationSpec(**ACTIVATIONS[activation]), mean=info.mean,
                             std=info.std).to(device)
    if epochs:
        train_model(model, load_dataset("mnist5k", "train"), TrainConfig(epochs=epochs, augment="none", seed=seed),
                    device)
    return model.eval().requires_grad_(False)


def measure(activation: str, model: nn.Module, x: Tensor, y: Tensor, attack: str, args: argparse.Namespace,
            device: torch.device) -> list[dict]:
    from attacks.base import ThreatModel, predict

    threat = ThreatModel("l2" if attack in L2_ATTACKS else "linf", args.l2_eps if attack in L2_ATTACKS else args.eps)
    impls = implementations(attack, model, x, y, threat, args.budget, args.seed, args.num_classes)
    outputs: dict[str, Tensor] = {}

    def keep(name: str, fn: Runner) -> Callable[[], None]:
        def run() -> None:
            outputs[name] = fn().detach()
        return run

    timings = paired_timings({name: keep(name, fn) for name, fn in impls.items()}, "ours", args.repeats, args.clock,
                             device, warmup=0)
    rows = []
    robust = {name: predict(model, threat.project(outputs[name].to(x.dtype), x)) == y for name in impls}
    for name in impls:
        outside = int((~threat.contains(outputs[name].to(x.dtype), x, atol=1e-5)).sum())
        rows.append({"activation": activation, "attack": attack, "threat": f"{threat.norm} {threat.eps:g}",
                     "impl": name, "robust": float(robust[name].float().mean()), "outside": outside,
                     "ours_only": int((~robust["ours"] & robust[name]).sum()),
                     "this_only": int((robust["ours"] & ~robust[name]).sum()),
                     "seconds": timings[name].median_s,  # ours / this: the median of the per-repetition ratios
                     "ours_over": statistics.median(1.0 / r for r in timings[name].ratios)})
    return rows


def verdicts(rows: Sequence[dict]) -> list[dict]:
    """Per (model, attack): the peers that are faster than ours *and* at least as strong (none: target met)."""
    out = []
    for key in dict.fromkeys((r["activation"], r["attack"]) for r in rows):
        group = [r for r in rows if (r["activation"], r["attack"]) == key]
        ours = next(r for r in group if r["impl"] == "ours")
        peers = [r for r in group if r["impl"] != "ours"]
        beaten_by = [r["impl"] for r in peers if r["ours_over"] > TARGET_RATIO and r["robust"] <= ours["robust"]]
        fastest = min(peers, key=lambda r: r["seconds"]) if peers else None
        out.append({"activation": key[0], "attack": key[1], "ours_robust": ours["robust"],
                    "fastest_peer": fastest["impl"] if fastest else "-",
                    "ours_over_fastest": fastest["ours_over"] if fastest else float("nan"),
                    "beaten_by": beaten_by, "met": not beaten_by})
    return out


def run(args: argparse.Namespace) -> dict:
    device = setup(args)
    from attacks.base import predict
    from kwta_robust.data import load_dataset

    data = load_dataset("mnist5k", "test").to(device)
    args.num_classes = data.num_classes
    x, y = data.x[: args.n], data.y[: args.n]
    rows: list[dict] = []
    clean: dict[str, float] = {}
    for activation in args.activations:
        model = trained_small_cnn(activation, args.epochs, device, args.seed)
        clean[activation] = float((predict(model, x) == y).float().mean())
        for attack in args.attacks:
            logger.info("%s: %s", activation, attack)
            rows += measure(activation, model, x, y, attack, args, device)
    checks = verdicts(rows)
    return {"machine": machine_info(device, args.clock), "repeats": args.repeats, "n": args.n, "epochs": args.epochs,
            "clean": clean, "budget": args.budget, "rows": rows, "verdicts": checks,
            "met": all(v["met"] for v in checks)}


def report(result: dict) -> str:
    clean = ", ".join(f"{a} {100 * c:.1f}%" for a, c in result["clean"].items())
    table = [[r["activation"], r["attack"], r["threat"], r["impl"], 100 * r["robust"],
              *(["—", "—"] if r["impl"] == "ours" else [r["ours_only"], r["this_only"]]), r["outside"],
              r["seconds"], "—" if r["impl"] == "ours" else r["ours_over"]] for r in result["rows"]]
    summary = [[v["activation"], v["attack"], 100 * v["ours_robust"], v["fastest_peer"], v["ours_over_fastest"],
                ", ".join(v["beaten_by"]) or "none", "yes" if v["met"] else "**no**"] for v in result["verdicts"]]
    return "\n".join([
        f"machine: {machine_line(result['machine'])}, repeats={result['repeats']}, examples={result['n']} "
        f"(first mnist5k test images), small CNN trained {result['epochs']} epochs (clean accuracy: {clean})",
        "",
        markdown_table(["CNN", "attack", "threat", "implementation", "robust %", "broken by ours only",
                        "broken by this only", "outside ball", "median s", "ours / this"], table),
        "",
        markdown_table(["CNN", "attack", "ours robust %", "fastest peer", "ours / fastest peer",
                        "faster and at least as strong", "met"], summary),
        "",
        f"target: no peer faster than ours (ours / peer <= {TARGET_RATIO:g}) at equal or lower robust accuracy: "
        f"{'MET' if result['met'] else 'NOT met'}",
    ])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_common_arguments(parser, repeats=3)
    parser.add_argument("--n", type=int, default=100, help="mnist5k test examples (default 100)")
    parser.add_argument("--eps", type=float, default=0.1, help="Linf epsilon (default 0.1)")
    parser.add_argument("--l2-eps", type=float, default=1.5, help="L2 epsilon of CW and DeepFool (default 1.5)")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs of each model (default 3)")
    parser.add_argument("--activations", nargs="+", choices=list(ACTIVATIONS), default=["relu", "kwta"])
    parser.add_argument("--attacks", nargs="+", choices=list(ATTACKS), default=list(ATTACKS))
    parser.add_argument("--square-queries", type=int, default=1000, help="Square queries (default 1000)")
    parser.add_argument("--ge-steps", type=int, default=20, help="gradient-estimation iterations (default 20)")
    parser.add_argument("--ge-pairs", type=int, default=50, help="antithetic noise pairs per iteration (default 50)")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.epochs, args.repeats = 6, 0, 1
        args.budget = Budget(pgd_steps=2, apgd_steps=2, targets=2, fab_steps=2, square_queries=4, cw_steps=2,
                             cw_search=1, deepfool_steps=2, ge_steps=2, ge_pairs=2)
    else:
        args.budget = Budget(square_queries=args.square_queries, ge_steps=args.ge_steps, ge_pairs=args.ge_pairs)
    if args.n < 1 or args.epochs < 0 or not args.eps > 0 or not args.l2_eps > 0 or min(
            args.square_queries, args.ge_steps, args.ge_pairs) < 1:
        parser.error("--n, --square-queries, --ge-steps and --ge-pairs must be >= 1, --epochs >= 0, epsilons > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    emit(report(run(args)), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
