"""Coverage and power of the budget check's lower bound on the drop (:func:`kwta_robust.budget_check.judge`).

The check re-attacks ``m`` of ``S`` survivors: the ``h = floor(closest · m)`` the suite came closest to breaking (a
census of their stratum: their ``k_c`` kills carry no sampling error) and ``m − h`` drawn without replacement from
the ``N = S − h`` others, of which ``R`` are broken by the larger budget (``k_r`` of them drawn: hypergeometric).
The true drop is ``(K_c + R) / n``; a bound *covers* when it is at most that. For every design the check meets with
``S`` from 5 to 200 on ``n`` = 100, 150, 200, 400 and 1,000 samples (``m``: the floor of
:func:`kwta_robust.budget_check.floor_samples`, 16 and 32, at most ``S``) and every ``R`` up to ``N / 2`` (a true
kill rate of 0 to one half among the others), the coverage is computed exactly by summing the hypergeometric
probabilities (nothing is drawn at random, so no seed and no sampling error) for four bounds of ``R``:

* ``wilson``: ``k_r + (N − (m − h)) · L``, ``L`` the lower end of the two-sided 95% Wilson interval of
  ``k_r / (m − h)`` (the check's bound before; nominally one-sided 97.5%);
* ``wilson-cc``: the same with Wilson's continuity-corrected interval (Newcombe 1998, method 4);
* ``clopper-pearson``: the same with the exact binomial (Clopper & Pearson 1934) one-sided 97.5% bound;
* ``exact``: :func:`kwta_robust.budget_check.kills_lower_bound`, the exact one-sided 97.5% bound for sampling
  without replacement (what the check uses).

The rate bounds treat the others as an infinite population; near a census (few survivors left unsampled) one
kill's fraction of an unsampled survivor already claims a kill more than there is. Power: how often the check
flags (``k >= 2`` and the bound reaches ``ladder_margin``, 2 points) when the true drop is 2× and 3× the margin,
with none, half or three quarters of its kills among the closest (at most ``h``). Run:
``python -m benchmarks.budget_bound_coverage`` (seconds; ``--closest`` for the fraction, ``--out FILE``).
"""

from __future__ import annotations

import argparse
import math
import statistics
from typing import Callable, Sequence

from benchmarks._common import emit, markdown_table
from kwta_robust.budget_check import kills_lower_bound
from kwta_robust.results import Z95, wilson_interval

MARGIN, MIN_COUNT, SAMPLES, NOMINAL = 0.02, 2, 32, 0.975


def wilson_cc_low(k: int, m: int, z: float = Z95) -> float:
    """Lower end of the continuity-corrected Wilson interval of ``k / m`` (Newcombe 1998, method 4)."""
    if k == 0:
        return 0.0
    p = k / m
    root = z * math.sqrt(z * z - 2 - 1 / m + 4 * p * (m * (1 - p) + 1))
    return max(0.0, (2 * m * p + z * z - 1 - root) / (2 * (m + z * z)))


def clopper_pearson_low(k: int, m: int, alpha: float = 1 - NOMINAL) -> float:
    """The one-sided ``1 − alpha`` Clopper-Pearson lower bound of ``k / m``: bisection on the binomial tail."""
    low, high = 0.0, 1.0
    for _ in range(60):
        mid = (low + high) / 2
        tail = sum(math.comb(m, j) * mid ** j * (1 - mid) ** (m - j) for j in range(k, m + 1))
        low, high = (mid, high) if tail < alpha else (low, mid)
    return 0.0 if k == 0 else low


def rate_bound(low: Callable[[int, int], float]) -> Callable[[int, int, int], float]:
    """A bound of the kills among ``N`` from a lower bound of the sampled rate: the verified plus the unsampled."""
    return lambda k, m, n_others: k + (n_others - m) * low(k, m)


BOUNDS: dict[str, Callable[[int, int, int], float]] = {
    "wilson": rate_bound(lambda k, m: wilson_interval(k, m)[0]),
    "wilson-cc": rate_bound(wilson_cc_low),
    "clopper-pearson": rate_bound(clopper_pearson_low),
    "exact": lambda k, m, n_others: float(kills_lower_bound(k, m, n_others)),
}


def designs(closest: float) -> list[tuple[int, int, int, int]]:
    """``(n, S, m, h)``: the designs the check meets, ``m`` from its floor to 32, at most ``S``."""
    out = set()
    for n in (100, 150, 200, 400, 1000):
        for survivors in [s for s in list(range(5, 41)) + list(range(45, 201, 5)) if s <= n]:
            floor = min(SAMPLES, 4 * max(MIN_COUNT, math.ceil(round(MARGIN * n, 9))), survivors)
            for m in {floor, min(16, survivors), min(SAMPLES, survivors)}:
                out.add((n, survivors, max(m, floor), math.floor(closest * max(m, floor))))
    return sorted(out)


def pmf(j: int, others: int, kills: int, m: int) -> float:
    """Hypergeometric: ``j`` of ``kills`` among ``others`` in a draw of ``m`` without replacement."""
    if not 0 <= j <= kills or not 0 <= m - j <= others - kills:
        return 0.0
    return math.comb(kills, j) * math.comb(others - kills, m - j) / math.comb(others, m)


def coverage_rows(closest: float) -> list[list[object]]:
    """Per bound: the minimum (with where), median and mean coverage, and the share of cases under nominal."""
    cells = sorted({(s - h, m - h) for _, s, m, h in designs(closest) if m - h > 0 and s > m})
    rows = []
    for name, bound in BOUNDS.items():
        values, worst = [], (2.0, "")
        for others, m in cells:
            table = [bound(k, m, others) for k in range(m + 1)]
            for kills in range(others // 2 + 1):
                c = sum(pmf(j, others, kills, m) for j in range(m + 1) if table[j] <= kills + 1e-9)
                values.append(c)
                worst = min(worst, (c, f"N={others}, m-h={m}, R={kills}"))
        under = sum(v < NOMINAL - 1e-12 for v in values) / len(values)
        rows.append([name, f"{100 * worst[0]:.1f}% ({worst[1]})", f"{100 * statistics.median(values):.1f}%",
                     f"{100 * statistics.fmean(values):.1f}%", f"{100 * under:.1f}%"])
    return rows


def power_rows(closest: float) -> list[list[object]]:
    """Per true drop (2× and 3× the margin) and share of its kills among the closest: each bound's mean power."""
    rows = []
    for times in (2, 3):
        for share in (0.0, 0.5, 0.75):
            powers: dict[str, list[float]] = {name: [] for name in BOUNDS}
            for n, survivors, m, h in designs(closest):
                drop = round(times * MARGIN * n)
                k_close = min(h, round(share * drop))
                kills, others, m_rand = drop - k_close, survivors - h, m - h
                if drop > survivors or kills > others:
                    continue
                for name, bound in BOUNDS.items():
                    table = [bound(k, m_rand, others) if m_rand else 0.0 for k in range(m_rand + 1)]
                    powers[name].append(sum(pmf(j, others, kills, m_rand) for j in range(m_rand + 1)
                                            if k_close + j >= MIN_COUNT and (k_close + table[j]) / n >= MARGIN))
            count = len(powers["exact"])
            rows.append([f"{times}x", f"{int(100 * share)}%", count]
                        + [f"{100 * statistics.fmean(p):.1f}%" for p in powers.values()])
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--closest", type=float, default=0.75, help="fraction of the sample taken closest")
    parser.add_argument("--out", default=None, help="also write the Markdown report to this file")
    args = parser.parse_args(argv)
    report = "\n\n".join([
        f"Coverage of the budget check's lower bound (nominal {100 * NOMINAL}% one-sided; closest {args.closest}; "
        f"{len(designs(args.closest))} designs, exact enumeration)",
        markdown_table(["bound", "minimum", "median", "mean", "cases under nominal"], coverage_rows(args.closest)),
        "Power (flags when the true drop is 2x / 3x ladder_margin; mean over the designs where it fits)",
        markdown_table(["drop", "among the closest", "designs", *BOUNDS], power_rows(args.closest)),
    ])
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
