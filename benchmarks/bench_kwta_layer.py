"""Benchmark: kWTA layer forward+backward against ReLU on the same tensor, and against two textbook formulations.

Every number printed is a ratio to a bare baseline measured in the same run (``torch.relu`` forward+backward on the
same tensor), the median of ``--repeats`` timed repetitions after warm-up. Absolute times on shared machines are
noise; ratios are what this reports.

Formulations compared (all exact, all produce the same output — checked before timing):

* ``ours``: :func:`kwta_robust.layers.kwta` — unsorted ``topk`` values, their minimum as threshold, one mask;
* ``sorted-threshold``: sorted ``topk`` and the last value as threshold, then mask (the usual reference code);
* ``scatter``: ``topk`` indices scattered into a zero tensor (exactly k winners; Numenta-style).

Run:  ``python benchmarks/bench_kwta_layer.py`` (``--quick`` for a short smoke run).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from typing import Callable

import torch
from torch import Tensor

from kwta_robust.layers import group_size, k_from_ratio, kwta

logger = logging.getLogger("bench_kwta_layer")

SHAPES = {"dense": (1024,), "volume": (32, 14, 14), "channel": (32, 14, 14), "local": (32, 14, 14)}


def sorted_threshold(x: Tensor, k: int, mode: str) -> Tensor:
    if mode == "local":
        thr = x.topk(k, dim=1).values[:, k - 1 : k]
        return x * (x >= thr)
    flat = x.flatten(2) if mode == "channel" else x.flatten(1)
    thr = flat.topk(k, dim=-1).values[..., k - 1 : k]
    if mode == "channel":
        return x * (flat >= thr).view_as(x)
    return x * (flat >= thr).view_as(x)


def scatter(x: Tensor, k: int, mode: str) -> Tensor:
    if mode == "local":
        idx = x.topk(k, dim=1).indices
        mask = torch.zeros_like(x).scatter_(1, idx, 1.0)
        return x * mask
    flat = x.flatten(2) if mode == "channel" else x.flatten(1)
    idx = flat.topk(k, dim=-1).indices
    mask = torch.zeros_like(flat).scatter_(-1, idx, 1.0)
    return x * mask.view_as(x)


def time_fwd_bwd(fn: Callable[[Tensor], Tensor], x: Tensor, repeats: int) -> float:
    def step() -> None:
        leaf = x.detach().requires_grad_(True)
        fn(leaf).sum().backward()
        if leaf.is_cuda:
            torch.cuda.synchronize(leaf.device)

    for _ in range(2):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.5])
    parser.add_argument("--quick", action="store_true", help="batch 128, ratios 0.1, 3 repeats")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.quick:
        args.batches, args.ratios, args.repeats = [128], [0.1], 3
    gen = torch.Generator().manual_seed(args.seed)
    rows = []
    for mode, feature_shape in SHAPES.items():
        for batch in args.batches:
            x = torch.randn((batch,) + feature_shape, generator=gen).to(args.device)
            relu = time_fwd_bwd(torch.relu, x, args.repeats)
            for ratio in args.ratios:
                k = k_from_ratio(ratio, group_size(x.shape, "dense" if mode == "dense" else mode))
                impls = {
                    "ours": lambda t: kwta(t, k, mode),
                    "sorted-threshold": lambda t: sorted_threshold(t, k, mode),
                    "scatter": lambda t: scatter(t, k, mode),
                }
                reference = impls["ours"](x)
                for name in ("sorted-threshold", "scatter"):  # randn has no ties, so all three must agree
                    if not torch.equal(impls[name](x), reference):
                        raise RuntimeError(f"{name} disagrees with ours in mode {mode}")
                ratios = {name: time_fwd_bwd(fn, x, args.repeats) / relu for name, fn in impls.items()}
                rows.append((mode, batch, ratio, ratios))
    header = "| mode | batch | k/N | ours / ReLU | sorted-threshold / ReLU | scatter / ReLU |"
    lines = [header, "|---|---|---|---|---|---|"]
    for mode, batch, ratio, r in rows:
        lines.append(
            f"| {mode} | {batch} | {ratio:g} | {r['ours']:.2f} | {r['sorted-threshold']:.2f} | {r['scatter']:.2f} |"
        )
    logger.info("device=%s torch=%s threads=%d repeats=%d", args.device, torch.__version__, torch.get_num_threads(),
                args.repeats)
    logger.info("\n".join(lines))


if __name__ == "__main__":
    main()
