"""Audit 49: every number of ``quickstart.md``, recomputed from the run's JSON records alone.

A tiny ``kwta-robust quickstart`` (1-epoch CNNs with 4 channels, the quickstart's suite at 2 steps, 64 mnist5k
images, 5 numenta levels; about 5 s) writes ``quickstart.md`` and ``eval/{kwta,relu}.json``. The tests parse the
Markdown and recompute each number from the records' per-sample fields (``clean_flags``, ``results[].flags``,
``noise[0].result.correct_counts``, the budget check's evidence) with code of their own: Wilson 1927 intervals,
Newcombe's 1998 paired interval (method 10, the correlation's continuity correction), McNemar's exact test as an
exact binomial sum, Student's t from scipy, the hypergeometric lower bound from scipy; nothing of
``kwta_robust``'s statistics. Display: halves rounded up, every interval's bounds (accuracies' Wilson bounds,
outward50, as noise-score bounds) rounded outward, lower confidence bounds of a drop rounded down (README "What a
record holds"). :func:`test_the_run_tells_the_methods_apart` checks
that this run's data would show a max in place of the worst case's min, and z in place of t (on this machine the
run also shows a budget bound that rounding half up overstates, and noise-score bounds that nearest rounding
moves; those depend on the CPU's arithmetic, so they are not asserted).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from fractions import Fraction

import numpy as np
import pytest
import yaml
from scipy import stats

from kwta_robust import quickstart
from kwta_robust.budget_scale import cap_budget
from kwta_robust.cli import main
from test_quickstart import tiny_training_configs

#: images: n >= 30 gives the noise score its t interval; here, at 64, the run has a drop bound of 3/64 (4.69 points,
#: 4.6 rounded down), percentages with exact halves (k/64) and noise-score bounds that outward rounding moves
N = 64
Z = 1.959963984540054
NORMS = {"linf": "Linf", "l2": "L2"}


@dataclass
class Run:
    md: str
    records: dict[str, dict]  # label -> the record's JSON


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("audit49")
    suite = yaml.safe_load(quickstart.default_config_path().read_text())
    for attack in suite["attacks"]:  # the same attacks at tiny budgets
        attack["params"] = cap_budget(attack["attack"], attack.get("params") or {}, 2)
    suite["noise"][0]["levels"] = [0.0, 0.1, 0.2, 0.3, 0.4]
    (out / "suite.yaml").write_text(yaml.safe_dump(suite))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(quickstart, "training_configs", tiny_training_configs)  # test_quickstart's 4-channel CNNs
        assert main(["quickstart", "--out-dir", str(out / "qs"), "--config", str(out / "suite.yaml"), "--n-examples",
                     str(N), "--epochs", "1", "--device", "cpu", "--no-progress"]) == 0
    records = {r["model"]["label"]: r for r in (json.loads((out / "qs" / "eval" / f"{name}.json").read_text())
                                                 for name in ("kwta", "relu"))}
    return Run((out / "qs" / "quickstart.md").read_text(), records)


# ---------------------------------------------------------------------------------------------- display rules
def _quantize(v: Decimal, places: int, rounding: str) -> str:
    text = str(v.quantize(Decimal(1).scaleb(-places), rounding=rounding))
    return text.lstrip("-") if Decimal(text) == 0 else text  # never "-0.0"


def pct(v: float | Fraction, rounding: str = ROUND_HALF_UP) -> str:
    """A fraction in % to one decimal; a Fraction exactly (ties are real for k / n), a float from its repr."""
    exact = Decimal(100 * v.numerator) / Decimal(v.denominator) if isinstance(v, Fraction) else Decimal(repr(100 * v))
    return _quantize(exact, 1, rounding)


def num(v: float | Fraction, places: int, rounding: str = ROUND_HALF_UP) -> str:
    exact = Decimal(v.numerator) / Decimal(v.denominator) if isinstance(v, Fraction) else Decimal(repr(v))
    return _quantize(exact, places, rounding)


def zero(text: str) -> str:
    """A bound that rounded to zero from below written without its sign (``-0.0`` is ``0.0``)."""
    return text.lstrip("-") if Decimal(text) == 0 else text


def signed(text: str) -> str:
    return text if Decimal(text) <= 0 else "+" + text


def p_text(p: Fraction) -> str:
    if p < Fraction(1, 10 ** 6):
        return "< 1e-6"
    d = Decimal(p.numerator) / Decimal(p.denominator)
    if p < Fraction(1, 100):
        return f"{float(d.quantize(Decimal(1).scaleb(d.adjusted() - 1), rounding=ROUND_HALF_UP)):.2g}"
    return str(d.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def threat(norm: str, eps_text: str) -> str:
    return f"{NORMS.get(norm, norm)} {eps_text}"


# ---------------------------------------------------------------------------------------------- statistics
def wilson(k: int, n: int, z: float = Z) -> tuple[float, float]:
    """Wilson's (1927) score interval of k / n."""
    p, den = k / n, 1 + z * z / n
    centre, half = (p + z * z / (2 * n)) / den, z / den * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def acc_text(k: int, n: int, outward: bool = True) -> str:
    """``k / n`` in % with its Wilson interval as the tables write it: rounded outward, the lower bound down and the
    upper up (outward50: never narrower than computed); ``outward=False``: both to nearest (the old rule)."""
    low, high = wilson(k, n)
    down, up = (ROUND_FLOOR, ROUND_CEILING) if outward else (ROUND_HALF_UP, ROUND_HALF_UP)
    return f"{pct(Fraction(k, n))} ({pct(low, down)}–{pct(high, up)})"


def newcombe(a: int, b: int, c: int, d: int) -> tuple[float, float]:
    """Newcombe (1998, Stat Med 17:2635) method 10: Wilson intervals of both margins, combined with the pairs'
    correlation phi whose cross product ad - bc, where positive, is lowered by n / 2 (at most to 0)."""
    n = a + b + c + d
    p1, p2 = (a + b) / n, (a + c) / n
    (l1, u1), (l2, u2) = wilson(a + b, n), wilson(a + c, n)
    cross = a * d - b * c
    cross = max(cross - n / 2, 0) if cross > 0 else cross
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    phi = cross / math.sqrt(margins) if margins else 0.0
    below = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    above = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return max(-1.0, p1 - p2 - below), min(1.0, p1 - p2 + above)


def exact_binomial_p(b: int, c: int) -> Fraction:
    """McNemar's exact test: two-sided, min(1, 2 P[Bin(b + c, 1/2) <= min(b, c)]), as an exact fraction."""
    m = b + c
    return min(Fraction(1), Fraction(2 * sum(math.comb(m, i) for i in range(min(b, c) + 1)), 2 ** m))


def t_interval(x: np.ndarray, z: bool = False) -> tuple[float, float]:
    """Student's (1908) 95% interval of the mean of x (z: the normal quantile instead, for the mutation check)."""
    q = Z if z else float(stats.t.ppf(0.975, len(x) - 1))
    half = q * float(np.std(x, ddof=1)) / math.sqrt(len(x))
    return float(np.mean(x)) - half, float(np.mean(x)) + half


def kills_bound(broken: int, sampled: int, population: int) -> int:
    """Exact one-sided 97.5% lower bound of the kills among population survivors, from a simple random sample."""
    if broken == 0:
        return 0
    return next(r for r in range(broken, population + 1)
                if stats.hypergeom.sf(broken - 1, population, r, sampled) > 0.025)


# ---------------------------------------------------------------------------------------------- the records
@dataclass
class Derived:
    n: int
    clean: np.ndarray  # [n] bool
    points: list[tuple[str, str]]  # (norm, eps_text) in record order
    columns: dict[tuple[str, str], list[tuple[str, np.ndarray]]]  # per point: (attack label, robust after it [n])
    flags: dict[tuple[str, str, str], np.ndarray]  # (label, norm, eps_text) -> flags [n]
    worst: dict[tuple[str, str], np.ndarray]  # per point: robust under every attack [n]
    scores: np.ndarray  # [n] per-image noise score
    levels: int


def derive(rec: dict, worst_of=np.logical_and.reduce) -> Derived:
    """Per sample, from the flags alone: the cascade's robust-after-each-attack and the worst case, the minimum over
    the attacks (``worst_of``: how the attacks' verdicts combine)."""
    n, clean = rec["clean"]["n"], np.array(rec["clean_flags"]) == 1
    points = list(dict.fromkeys((r["norm"], r["eps_text"]) for r in rec["results"]))
    columns, flags, worst = {}, {}, {}
    for point in points:
        alive, verdicts, columns[point] = clean.copy(), [], []
        at = [r for r in rec["results"] if (r["norm"], r["eps_text"]) == point]
        for r in sorted(at, key=lambda r: r["position"]):
            f = np.array(r["flags"])
            assert np.array_equal(f == -1, ~alive)  # a cascade attacks exactly the samples still robust
            alive = alive & (f != 0)
            columns[point].append((r["label"], alive.copy()))
            flags[(r["label"], *point)] = f
            verdicts.append(clean & (f != 0))
        worst[point] = worst_of(verdicts)
    probe = rec["noise"][0]["result"]
    scores = np.array(probe["correct_counts"], dtype=float).sum(axis=0) / probe["draws"]
    return Derived(n, clean, points, columns, flags, worst, scores, len(probe["levels"]))


def score_interval(d: Derived, z: bool = False) -> tuple[float, float]:
    low, high = t_interval(d.scores, z)
    return max(low, 0.0) * d.n, min(high, float(d.levels)) * d.n


def table(md: str, first_header: str) -> list[dict[str, str]]:
    lines = [line for line in md.splitlines() if line.startswith("|")]
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != len(header) or cells[0] == header[0]:
            break
        rows.append(dict(zip(header, cells)))
    return rows


def point_of(d: Derived, text: str) -> tuple[str, str]:
    return next(p for p in d.points if threat(*p) == text)


# ---------------------------------------------------------------------------------------------- the tests
def test_main_table_every_cell(run: Run) -> None:
    rows = table(run.md, "model")
    assert [r["model"] for r in rows] == ["kwta", "relu"]
    for row in rows:
        rec = run.records[row["model"]]
        d = derive(rec)
        expected = {"n": str(d.n), "clean": acc_text(int(d.clean.sum()), d.n)}
        for point in d.points:
            for i, (label, robust) in enumerate(d.columns[point]):
                expected[("+" if i else "") + f"{label} {threat(*point)}"] = acc_text(int(robust.sum()), d.n)
            expected[f"worst case {threat(*point)}"] = acc_text(int(d.worst[point].sum()), d.n)
            assert d.worst[point].sum() == rec["worst_case"][d.points.index(point)]["robust"]["correct"]
        low, high = score_interval(d)  # outward to whole classifications
        expected["noise score"] = f"{d.scores.sum():.0f} ({math.floor(low)}–{math.ceil(high)})"
        codes = list(dict.fromkeys(f"({g['code']})" if g["severity"] == "info" else g["code"]
                                   for g in rec["diagnostics"]))
        expected["flags"] = ", ".join(codes)
        assert {k: row[k] for k in expected} == expected
        assert len(row) == len(expected) + 2  # model, activation: labels, not numbers
        assert float(d.scores.sum()) == rec["noise"][0]["result"]["noise_score"]


def test_noise_note_per_image_and_level(run: Run) -> None:
    texts = []
    for label in ("kwta", "relu"):
        d = derive(run.records[label])
        low, high = score_interval(d)
        cells = d.n * d.levels
        texts.append(f"{label} {pct(Fraction(int(d.scores.sum()), cells))}% ({pct(low / cells, ROUND_FLOOR)}–"
                     f"{pct(high / cells, ROUND_CEILING)})")  # rounded outward, as the score's bounds (units 49)
    assert f"per image and level: {texts[0]}, {texts[1]};" in run.md
    assert "levels 0 / 0.1 / 0.2 / 0.3 / 0.4, 1 draw, noise pixel value 1;" in run.md


def _drop_bound(ev: dict) -> tuple[Fraction, Fraction]:
    """(estimate, 97.5% lower bound) of a budget check's drop, from its sampled / closest / broken indices."""
    closest, broken = set(ev["closest_indices"]), set(ev["broken_indices"])
    k_close, k_rand = len(broken & closest), len(broken - closest)
    h, m, s, n = len(closest), len(ev["sampled_indices"]), ev["survivors"], ev["n"]
    estimate = Fraction(k_close * (m - h) + k_rand * (s - h), (m - h) * n) if m > h else Fraction(k_close, n)
    return estimate, Fraction(k_close + kills_bound(k_rand, m - h, s - h), n)


def test_headlines(run: Run) -> None:
    """One line per model at the point where its first attack and the worst case differ most; a budget check that
    lowers the worst case there says by how much, its 97.5% lower bound rounded down (never more than the bound)."""
    lines = []
    for label, rec in run.records.items():
        d = derive(rec)
        gaps = [(d.columns[p][0][1].sum() - d.worst[p].sum(), float(p[1]), p) for p in d.points]
        point = max(gaps, key=lambda g: g[:2])[2]
        first, robust = d.columns[point][0]
        critical = sorted({g["code"] for g in rec["diagnostics"] if g["severity"] == "critical"})
        line = (f"- {label}: {first} {pct(Fraction(int(robust.sum()), d.n))}% vs worst case "
                f"{pct(Fraction(int(d.worst[point].sum()), d.n))}% at {threat(*point)} — "
                + (f"flags: {', '.join(critical)}" if critical else "no masking flags"))
        for g in rec["diagnostics"]:
            ev = g["evidence"]
            if g["code"] == "budget-still-lowering" and ev.get("source") == "rerun" and \
                    (ev["norm"], f"{ev['eps']:g}") == point:
                line += (f"; {ev['attack']} at {ev['factor']}x its budget lowers the worst case by >= "
                         f"{pct(_drop_bound(ev)[1], ROUND_FLOOR)} points (budget-still-lowering)")
        lines.append(line)
    assert [line for line in run.md.splitlines() if line.startswith(("- kwta:", "- relu:"))] == lines


def test_budget_checks_and_their_notes(run: Run) -> None:
    """Each budget flag's counts, estimate and bound; the notes' lowest verified robust accuracy; the masking flag's
    and the sanity check's numbers."""
    seen = 0
    for label, rec in run.records.items():
        d = derive(rec)
        killed: dict[tuple[str, str], set[int]] = {}
        for g in rec["diagnostics"]:
            ev = g["evidence"]
            assert f"- [{label}] {g['severity']} {g['code']}: {g['message']}" in run.md
            if g["code"].startswith("budget-") and ev.get("source") == "rerun":
                point = point_of(d, threat(ev["norm"], f"{ev['eps']:g}"))
                survivors = set(np.flatnonzero(d.worst[point]).tolist())
                assert ev["survivors"] == len(survivors) and set(ev["sampled_indices"]) <= survivors
                assert set(ev["broken_indices"]) <= set(ev["sampled_indices"])
                margins = np.fmax.reduce([np.array(r["margins"], dtype=float) for r in rec["results"]
                                          if (r["norm"], r["eps_text"]) == point])
                ranked = sorted(survivors, key=lambda i: (-margins[i], i))  # closest to breaking first
                assert sorted(ev["closest_indices"]) == sorted(ranked[:len(ev["closest_indices"])])
                estimate, bound = _drop_bound(ev)
                k_close = len(set(ev["broken_indices"]) & set(ev["closest_indices"]))
                h, m = len(ev["closest_indices"]), len(ev["sampled_indices"])
                how = (f"the {h} closest to breaking: {k_close} broken; "
                       f"{f'the other {m - h}' if m == len(survivors) else f'{m - h} at random'}: "
                       f"{len(ev['broken_indices']) - k_close}; " if h else "")
                assert f"broke {len(ev['broken_indices'])} of {m} sampled survivors (of {len(survivors)}; {how}" \
                    in g["message"]
                assert f"{pct(bound, ROUND_FLOOR)} points" in g["message"]
                assert f"estimate {pct(estimate)})" in g["message"]
                killed.setdefault(point, set()).update(set(ev["broken_indices"]))
                seen += 1
            if g["code"] == "adaptive-beats-pgd":
                for p in ev["points"]:
                    point = point_of(d, threat(p["norm"], f"{p['eps']:g}"))
                    ref, att = d.flags[(ev["reference"], *point)], d.flags[(ev["attack"], *point)]
                    after = dict(d.columns[point])
                    broke = int(((ref == 1) & (att == 0)).sum())
                    assert (f"at {threat(*point)} {ev['attack']} broke {broke} of the {int((ref == 1).sum())} samples "
                            f"{ev['reference']} left robust ({pct(Fraction(broke, d.n))}% of all {d.n}; "
                            f"{ev['reference']} {pct(Fraction(int(after[ev['reference']].sum()), d.n))}% vs "
                            f"{ev['attack']} after {pct(Fraction(int(after[ev['attack']].sum()), d.n))}%)") \
                        in g["message"]
        for point, broken in killed.items():
            if not broken:
                continue
            left = int(d.worst[point].sum()) - len(broken)
            ids = [rec["dataset"]["indices"][i] for i in sorted(broken)]
            many = len(broken) > 1
            assert (f"broke {len(broken)} sample{'s' * many} the suite left robust (at position{'s' * many} "
                    f"{', '.join(map(str, sorted(broken)))}; data set id{'s' * many} {', '.join(map(str, ids))}): the "
                    f"lowest robust accuracy this run verified is {acc_text(left, d.n).replace(' (', '% (')}; the "
                    f"worst case keeps the suite's {pct(Fraction(int(d.worst[point].sum()), d.n))}%") in run.md
        sanity = np.array(rec["sanity"][0]["flags"])
        assert f" {label} {pct(Fraction(int((d.clean & (sanity == 1)).sum()), d.n))}%" in \
            next(line for line in run.md.splitlines() if line.startswith("- sanity check:"))
    assert seen >= 4


def test_paired_table_every_cell(run: Run) -> None:
    a, b = derive(run.records["kwta"]), derive(run.records["relu"])
    expected = []
    pairs = [("clean", a.clean, b.clean)] + [(f"worst case {threat(*p)}", a.worst[p], b.worst[p]) for p in a.points]
    for name, x, y in pairs:
        both, only_a, only_b = int((x & y).sum()), int((x & ~y).sum()), int((~x & y).sum())
        low, high = newcombe(both, only_a, only_b, a.n - both - only_a - only_b)
        expected.append({"models": "kwta − relu", "accuracy": name, "n": str(a.n),
                         "diff (points)": signed(pct(Fraction(only_a - only_b, a.n))),
                         "95% interval": f"{zero(pct(low, ROUND_FLOOR))} to {zero(pct(high, ROUND_CEILING))}",
                         "only first": str(only_a),
                         "only second": str(only_b), "McNemar p": p_text(exact_binomial_p(only_a, only_b))})
    diff = a.scores - b.scores
    low, high = t_interval(diff)
    higher, lower = int((diff > 0).sum()), int((diff < 0).sum())
    expected.append({"models": "kwta − relu", "accuracy": f"noise numenta {a.scores.sum():.0f} vs {b.scores.sum():.0f}",
                     "n": str(a.n), "diff (points)": signed(num(Fraction(int(diff.sum()), a.n), 2)) + "/sample",
                     "95% interval": f"{zero(num(low, 2, ROUND_FLOOR))} to {zero(num(high, 2, ROUND_CEILING))}",
                     "only first": str(higher),
                     "only second": str(lower), "McNemar p": "sign " + p_text(exact_binomial_p(higher, lower))})
    assert table(run.md, "models") == expected


def test_the_run_tells_the_methods_apart(run: Run) -> None:
    """The data of this run make the tests above fail where the worst case took a max over the attacks instead of
    the min, or an interval took the normal quantile instead of Student's t, or an accuracy's interval was rounded
    to nearest instead of outward (some cell of the main table reads otherwise: outward50)."""
    kwta = run.records["kwta"]
    best = derive(kwta, worst_of=np.logical_or.reduce)
    worst = derive(kwta)
    assert any(acc_text(int(best.worst[p].sum()), N) != acc_text(int(worst.worst[p].sum()), N) for p in worst.points)
    counts = [int(d.clean.sum()) for d in (worst, derive(run.records["relu"]))] + \
        [int(worst.worst[p].sum()) for p in worst.points]
    assert any(acc_text(k, N) != acc_text(k, N, outward=False) for k in counts)
    cells = worst.n * worst.levels  # the score column rounds outward to whole classifications; the % note shows it
    assert [pct(v / cells) for v in score_interval(worst, z=True)] != [pct(v / cells) for v in score_interval(worst)]
    diff = worst.scores - derive(run.records["relu"]).scores
    assert [num(v, 2) for v in t_interval(diff, z=True)] != [num(v, 2) for v in t_interval(diff)]


def test_headline_bound_is_rounded_down_as_in_the_flag() -> None:
    """The headline repeats the budget flag's 97.5% lower bound of the drop: 2 of 30 is 6.67 points, which the flag
    writes 6.6 (rounded down, never more than the bound); the headline wrote 6.7."""
    from eval_helpers import make_record, make_result
    from kwta_robust.results import Flag

    rec = make_record([make_result("pgd", [1] * 25 + [0] * 5, eps=0.1),
                       make_result("bpda-smooth", [0] * 20 + [1] * 5 + [-1] * 5, attack="bpda", kind="bpda", eps=0.1,
                                   position=1, cumulative=True)], label="m")
    evidence = {"source": "rerun", "attack": "bpda-smooth", "factor": 3, "drop_lower_bound": 2 / 30, "norm": "linf",
                "eps": 0.1}
    rec.diagnostics = [Flag("budget-still-lowering", "warning", "...", evidence)]
    assert quickstart.headline([rec]) == ["m: pgd 83.3% vs worst case 16.7% at Linf 0.1 — no masking flags; "
                                          "bpda-smooth at 3x its budget lowers the worst case by >= 6.6 points "
                                          "(budget-still-lowering)"]
