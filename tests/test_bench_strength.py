"""Smoke tests of the strength benchmarks (issue 15; ``benchmarks/bench_strength.py``, ``strength_variants.py``,
``strength_checks.py``, ``_strength_seeds.py``): each runs in ``--quick`` mode, resumes from its results file, and
renders its tables from the records; the seed sets' relabelling and the convergence verdict on the mean of seeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench_fixtures import ROOT, bench  # noqa: F401 - bench: a fixture
from kwta_robust.budget_check import by_closeness, survivors_at


def test_strength_benchmark_quick(bench, tmp_path, monkeypatch) -> None:
    """Every (suite, model) row, queries counted, larger budgets only on the survivors and never more robust,
    BPDA on the foreign twin's gates, and a re-run that resumes instead of attacking again."""
    mod = bench["bench_strength"]
    argv = ["--quick", "--results", str(tmp_path / "r.json"), "--cache-dir", str(tmp_path / "models")]
    args = mod.parse_args(argv)
    data = mod.run(args)
    cells = data["cells"]
    assert set(cells) == {mod.cell_key(m, s, "linf", 0.005) for m in args.models for s in mod.SUITES}
    for key, cell in cells.items():
        levels = mod.summarize(cell)["levels"]
        expected = [1] if "|tramer-ge|" in key else [1, 3]
        assert sorted(levels) == expected, key
        assert levels[1]["queries"] > 0
        robust = [levels[lv]["robust_count"] for lv in expected]
        assert robust == sorted(robust, reverse=True), key  # a cascade including 1x: never more robust
        for smaller, larger in zip(expected, expected[1:]):
            survivors = levels[smaller]["robust_count"]
            attacked = [a["n_attacked"] for a in cell["levels"][str(larger)]["attacks"]]
            assert all(n <= survivors for n in attacked), key
            assert all(a["queries"] > 0 for a in cell["levels"][str(larger)]["attacks"] if a["n_attacked"])
    assert any(mod.summarize(c)["levels"][1]["robust_count"] for c in cells.values())  # survivors to re-attack
    gates = ["classifier.2", "features.2", "features.5"]
    for model in ("kwta-0.1", "foreign-0.1"):
        assert set(map(tuple, cells[f"{model}|kwta-adaptive|linf|0.005"]["bpda_layers"].values())) == {tuple(gates)}
    assert all(not v for v in cells["relu|kwta-adaptive|linf|0.005"]["bpda_layers"].values())
    text = mod.report(data)
    for key in cells:
        model, suite, _, _ = key.split("|")
        assert f"| {suite} | {model} | 0.005 | 6 |" in text
    assert mod.scale_spec(mod.suite_specs("quick", "linf", 0.1, 20)[0][1], 3) is None  # FGSM: nothing to scale
    assert "seed_sets" not in (tmp_path / "r.json").read_text() and "attack seeds" not in text  # --seeds 1: as before

    # --seeds 2: quickstart's 1x once more under labels -s1, on every clean-correct sample; nothing else re-runs
    seeded = argv + ["--seeds", "2", "--suites", "quickstart"]
    before = json.loads(json.dumps(cells))
    cells = mod.run(mod.parse_args(seeded))["cells"]
    for key, cell in cells.items():
        extra = cell.pop("seed_sets", None)
        assert cell == before[key], key
        if "|quickstart|" not in key:
            assert extra is None, key
            continue
        assert extra["1"]["complete"] and [a["label"] for a in extra["1"]["attacks"]] == ["pgd-s1", "bpda-smooth-s1"]
        assert extra["1"]["attacks"][0]["n_attacked"] == sum(cell["clean"]) and extra["1"]["attacks"][0]["queries"] > 0
        cell["seed_sets"] = extra
    text = mod.report({"cells": cells})
    assert "* 1×: 1–2 attack seeds per row" in text and "| quickstart | kwta-0.1 | 0.005 | 6 |" in text

    import attacks.cascade

    monkeypatch.setattr(attacks.cascade, "worst_case", lambda *a, **k: pytest.fail("re-ran a finished cell"))
    assert mod.run(mod.parse_args(argv))["cells"] == cells
    assert mod.run(mod.parse_args(seeded))["cells"] == cells


def test_strength_variants_quick_runs_each_variant_alone_and_resumes(bench, tmp_path) -> None:
    """Each variant on every sample set, queries counted, BPDA on the layers the probe found; a re-run resumes."""
    mod = bench["strength_variants"]
    variants = tmp_path / "v.json"
    variants.write_text(json.dumps({
        "pgd-2": {"attack": "pgd", "params": {"steps": 2}},
        "bpda-2": {"attack": "bpda", "seed": 3,
                   "params": {"surrogate": "smooth", "inner": "apgd-ce", "inner_params": {"steps": 2}}},
        "relu-pgd-2": {"attack": "transfer",
                       "params": {"source": "relu", "inner": "pgd", "inner_params": {"steps": 2}}},
    }))
    argv = ["--quick", "--variants", str(variants), "--results", str(tmp_path / "r.json"),
            "--cache-dir", str(tmp_path / "models")]
    data = mod.run(mod.parse_args(argv))
    assert set(data["cells"]) == {"kwta-0.1|pgd-2|all", "kwta-0.1|bpda-2|all", "kwta-0.1|relu-pgd-2|all"}
    for key, cell in data["cells"].items():
        assert cell["of"] == 6 and 0 <= cell["broken"] <= 6
        assert len(cell["broken_idx"]) == cell["broken"]
        # queries count the target's passes: a transfer crafts on its source and costs the target none
        assert (cell["queries"] == 0) if "relu-pgd" in key else (cell["queries"] > 0)
    assert "| kwta-0.1 | bpda-2 | all |" in mod.report(data, json.loads(variants.read_text()))
    assert mod.run(mod.parse_args(argv))["cells"] == data["cells"]


def test_strength_variants_name_an_unknown_transfer_source_in_one_line(bench, tmp_path) -> None:
    mod = bench["strength_variants"]
    variants = tmp_path / "v.json"
    variants.write_text(json.dumps({"t": {"attack": "transfer", "params": {"source": "resnet", "inner": "pgd"}}}))
    argv = ["--quick", "--variants", str(variants), "--results", str(tmp_path / "r.json"),
            "--cache-dir", str(tmp_path / "models")]
    with pytest.raises(SystemExit, match="transfer variant's source must be one of kwta-0.05, .*, got 'resnet'"):
        mod.run(mod.parse_args(argv))
    assert not (tmp_path / "models" / "cnn-relu.pt").exists()  # nothing loaded for it


def test_strength_variants_hard_set_from_chosen_attacks(bench) -> None:
    mod = bench["strength_variants"]
    clean = torch.tensor([True, True, True, False])
    attacks = [{"label": "pgd", "flags": [0, 1, 1, -1]}, {"label": "bpda", "flags": [-1, 0, 1, -1]}]
    assert mod.left_by(clean, attacks).tolist() == [False, False, True, False]
    assert mod.left_by(clean, attacks, ["pgd"]).tolist() == [False, True, True, False]
    args = mod.parse_args(["--sets", "hard", "--hard-attacks", "pgd"])
    assert args.sets == ["hard"] and args.hard_attacks == ["pgd"]


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks").glob("strength_variants*.json")), ids=lambda p: p.name)
def test_shipped_variant_files_build_their_attacks(bench, path: Path) -> None:
    """Every variant of the files STRENGTH.md's commands run is an attack the registry builds, a transfer's source
    one of the benchmark's models (no typo waits for a long run to fail)."""
    from attacks.errors import AttackConfigError

    mod = bench["strength_variants"]
    stand_in = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    sources = []

    def source(name: str) -> tuple[torch.nn.Module, dict]:
        sources.append(name)
        return stand_in, {}

    variants = json.loads(path.read_text())
    errors = {}
    for name, spec in variants.items():
        try:
            mod.build_attack(spec, {}, source)
        except AttackConfigError as exc:  # collected, so one run names every bad variant
            errors[name] = str(exc)
    assert variants and errors == {}
    assert set(sources) <= set(bench["bench_strength"].MODELS)


def test_strength_variants_build_a_transfer_from_a_named_model(bench) -> None:
    """A transfer variant's source is the named benchmark model, and its BPDA inner attack acts on that model's
    layers, not the target's."""
    mod = bench["strength_variants"]
    source_model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    source_layers = {"features.2": None}  # a plain module (LayerTarget.of(None))
    spec = {"attack": "transfer", "seed": 2, "params": {"source": "kwta-0.05", "inner": "bpda", "inner_params": {
        "surrogate": "smooth", "inner": "pgd", "inner_params": {"steps": 2}}}}
    asked = []
    attack = mod.build_attack(spec, {"target.layer": None},
                              lambda name: asked.append(name) or (source_model, source_layers))
    assert asked == ["kwta-0.05"] and attack.source is source_model and attack.seed == 2
    assert attack.name == "transfer(bpda, source=kwta-0.05)"
    assert list(attack._attack.layers) == ["features.2"]


def test_strength_benchmark_measures_a_suite_from_a_file(bench, tmp_path) -> None:
    mod = bench["bench_strength"]
    config = tmp_path / "mine.yaml"
    config.write_text("dataset: mnist5k\nthreats: [{norm: linf, epsilons: [0.3]}]\n"
                      "attacks:\n  - attack: pgd\n    params: {steps: 3}\n")
    args = mod.parse_args(["--suite-file", f"mine={config}", "--suites", "mine", "quick"])
    specs, _ = mod.suite_specs("mine", "linf", 0.1, 20, args.suite_sources)
    assert args.suites == ["mine", "quick"] and [(s.attack, s.params["steps"]) for s in specs] == [("pgd", 3)]
    for bad in (["--suite-file", "mine"], ["--suite-file", f"mine={tmp_path / 'none.yaml'}"], ["--suites", "nope"],
                ["--seeds", "0"]):
        with pytest.raises(SystemExit):
            mod.parse_args(bad)


def test_strength_checks_run_the_budget_check_under_check_seeds_both_ways(bench, tmp_path, monkeypatch) -> None:
    """The budget check on stored 1x runs, per check seed and attack seed set, with the closest part ranked by the
    attacks' margins (as shipped), by the clean margins, or all at random; the table; resuming; cells it cannot
    check; one closest fraction per results file."""
    strength, mod = bench["bench_strength"], bench["strength_checks"]
    source, cache = tmp_path / "strength.json", str(tmp_path / "models")
    strength.run(strength.parse_args(["--quick", "--suites", "quickstart", "--results", str(source),
                                      "--cache-dir", cache]))
    argv = ["--quick", "--from", str(source), "--results", str(tmp_path / "checks.json"), "--cache-dir", cache]
    data = mod.run(mod.parse_args(argv))
    cells = json.loads(source.read_text())["cells"]
    samplings = ("random", "clean", "closest")
    assert set(data["cells"]) == {f"{k}|{s}|0|{seed}" for k in cells for s in samplings for seed in (0, 1)}
    for row_key, row in data["cells"].items():
        key, sampling, _, _ = row_key.rsplit("|", 3)
        survivors = strength.summarize(cells[key])["levels"][1]["robust_count"]
        assert row["runs"] and all(r["survivors"] == survivors for r in row["runs"]), row_key
        for r in row["runs"]:
            if r["settled"]:  # an inconclusive first sample, extended to every survivor
                assert r["sampled"] == survivors, row_key
                assert not r["inconclusive"] or r["broken"] < 2, row_key  # a census: only below min_count
            else:
                assert r["closest"] == (r["sampled"] * 3 // 4 if sampling != "random" else 0), row_key  # 0.75
            assert r["estimated_drop"] >= r["drop_lower_bound"] - 1e-12 and not (r["flagged"] and r["inconclusive"])
            assert 0 <= r["broken_closest"] <= r["broken"] <= r["sampled"] <= survivors and r["queries"] > 0
            assert set(r["closest_indices"]) <= set(r["sampled_indices"]) and len(r["sampled_indices"]) == r["sampled"]
        assert row["flagged"] == any(r["flagged"] for r in row["runs"]) and row["cpu_s"] >= 0
    for key, cell in cells.items():  # the closest part: by the attacks' margins (as shipped) or by the clean ones
        record = strength.level_record(cell, "linf", 0.005)
        assert all(len(r.margins) == len(cell["clean"]) for r in record.results)  # the benchmark stores them
        alive = survivors_at(record, "linf", 0.005)
        by_attacks = by_closeness(record, alive, "linf", 0.005)
        for r in record.results:
            r.margins = []
        for sampling, ranked in (("closest", by_attacks), ("clean", by_closeness(record, alive, "linf", 0.005))):
            picked = data["cells"][f"{key}|{sampling}|0|0"]["runs"][0]["closest_indices"]
            assert picked == sorted(ranked[:len(picked)]), (key, sampling)
    text = mod.report(data, json.loads(source.read_text()))
    assert "| random: flagged |" in text and "| clean: flagged |" in text and "| closest: flagged |" in text
    for key in cells:
        model = key.split("|")[0]
        assert f"| quickstart | {model} |" in text and "of 2 |" in text
    import kwta_robust.budget_check

    monkeypatch.setattr(kwta_robust.budget_check, "run_budget_check", lambda *a, **k: pytest.fail("re-ran a check"))
    assert mod.run(mod.parse_args(argv))["cells"] == data["cells"]
    with pytest.raises(SystemExit, match="not a checked cell of --from"):
        mod.run(mod.parse_args(argv + ["--cells", "kwta-0.1|standard|linf|0.005"]))
    with pytest.raises(SystemExit, match="holds checks made with --closest 0.75"):  # one fraction per results file
        mod.run(mod.parse_args(argv + ["--closest", "0.5"]))
    assert data["min_samples"] == "auto"  # the default rule: 8 on 6 samples (2 kills x 4, at most samples)
    with pytest.raises(SystemExit, match="holds checks made with --min-samples auto"):  # one sample size per file
        mod.run(mod.parse_args(argv + ["--min-samples", "16"]))
    with pytest.raises(SystemExit, match="no complete 1x run of seed set 1"):
        mod.run(mod.parse_args(argv + ["--seed-sets", "2"]))
    # --seed-sets 2: the check also on the 1x run of attack seed set 1 (bench_strength --seeds 2), its own survivors
    monkeypatch.undo()
    seeded = tmp_path / "seeded.json"
    strength.run(strength.parse_args(["--quick", "--suites", "quickstart", "--seeds", "2", "--results", str(seeded),
                                      "--cache-dir", cache]))
    cell = json.loads(seeded.read_text())["cells"]["kwta-0.1|quickstart|linf|0.005"]
    specs = []  # the check's settings, as strength_checks hands them over
    original = kwta_robust.budget_check.run_budget_check
    monkeypatch.setattr(kwta_robust.budget_check, "run_budget_check",
                        lambda *args, **kwargs: specs.append(args[4]) or original(*args, **kwargs))
    checked = mod.run(mod.parse_args(["--quick", "--from", str(seeded), "--results", str(tmp_path / "seeded.c.json"),
                                      "--cache-dir", cache, "--seed-sets", "2", "--check-seeds", "1",
                                      "--samplings", "closest", "--cells", "kwta-0.1|quickstart|linf|0.005",
                                      "--min-samples", "12"]))
    rows = checked["cells"]
    assert set(rows) == {f"kwta-0.1|quickstart|linf|0.005|closest|{i}|0" for i in (0, 1)}
    assert (checked["min_samples"], checked["closest"]) == (12, 0.75)
    for i in (0, 1):
        alive = survivors_at(strength.level_record(cell, "linf", 0.005, i), "linf", 0.005)
        run = rows[f"kwta-0.1|quickstart|linf|0.005|closest|{i}|0"]["runs"][0]
        assert run["survivors"] == len(alive) and set(run["sampled_indices"]) <= set(alive)
    assert len(specs) == 2 and all((s.min_samples, s.closest) == (12, 0.75) for s in specs)  # --min-samples
    for bad in (["--check-seeds", "0"], ["--seed-sets", "0"], ["--closest", "1.5"], ["--min-samples", "0"],
                ["--from", str(tmp_path / "none.json")]):
        with pytest.raises(SystemExit):
            mod.parse_args(argv + bad)


def test_strength_seed_sets_relabel_every_attack(bench) -> None:
    """Set 0 is the suite as the runner labels it; set i suffixes every label (default labels first), which reseeds
    each attack and BPDA's inner one; pinned seeds are re-derived; BPDA keeps the layers of its shipped label."""
    from kwta_robust.config import AttackSpec, derive_seed
    from kwta_robust.specs import assign_labels

    seeds, mod = bench["_strength_seeds"], bench["bench_strength"]
    bpda = {"surrogate": "smooth", "inner": "pgd", "inner_params": {"steps": 2, "seed": 7}}
    specs = [AttackSpec(attack="pgd", params={"steps": 2}), AttackSpec(attack="pgd", params={"steps": 3, "seed": 5}),
             AttackSpec(attack="bpda", params=bpda, label="bpda-pinned"), AttackSpec(attack="fgsm")]
    assert seeds.relabel(specs, 0) == assign_labels(specs)
    shipped = [s.label for s in assign_labels(specs)]
    assert shipped == ["pgd(steps=2)", "pgd(seed=5,steps=3)", "bpda-pinned", "fgsm"]  # default labels first
    runner_seeds = set()
    for i in (1, 2):
        labelled = seeds.relabel(specs, i)
        assert [s.label for s in labelled] == [f"{label}-s{i}" for label in shipped]
        assert len({s.label for s in labelled}) == len(labelled)
        assert labelled[1].params == {"steps": 3, "seed": derive_seed(5, f"-s{i}")} != specs[1].params
        inner = labelled[2].params["inner_params"]
        assert inner == {"steps": 2, "seed": derive_seed(7, f"-s{i}")} and inner["seed"] != 7
        runner_seeds |= {derive_seed(0, s.label, "linf", "0.1") for s in labelled}
    assert len(runner_seeds) == 8 and specs[2].params["inner_params"]["seed"] == 7  # the input is not changed
    full, _ = mod.suite_specs("mnist5k-full", "linf", 0.1, 20)
    assert [s.label for s in seeds.relabel(full, 3)] == [s.label + "-s3" for s in full]
    quick, _ = mod.suite_specs("quickstart", "linf", 0.1, 20)
    _, planned = mod.plan_level(quick, {"bpda-smooth": {"features.2": "gate"}}, "linf", 1, 1)
    assert [(p.label, p.layers) for p in planned] == [("pgd-s1", None), ("bpda-smooth-s1", {"features.2": "gate"})]
    with pytest.raises(ValueError, match="seed_set"):
        seeds.relabel(specs, -1)


def _strength_cell(one: list[int], seed_sets: list[int], top: int, n: int = 100) -> dict:
    """A hand-made results cell: ``one`` robust at 1x (set 0), ``seed_sets`` robust per further set, ``top`` after
    the 3x/10x cascade; all ``n`` samples clean-correct; 10 queries and 1 CPU s per attack."""
    def entry(robust: int, label: str, attacked: int = n) -> dict:
        flags = [1] * robust + [0] * (attacked - robust) + [-1] * (n - attacked)
        return {"attacks": [{"label": label, "flags": flags, "queries": 10 * (1 + len(label)), "cpu_s": 1.0,
                             "n_attacked": attacked, "n_broken": attacked - robust}], "complete": True}
    cell = {"clean": [1] * n, "levels": {"1": entry(one[0], "pgd"), "3": entry(one[0], "pgd@3x", one[0]),
                                         "10": entry(top, "pgd@10x", one[0])}}
    if seed_sets:
        cell["seed_sets"] = {str(i + 1): entry(r, f"pgd-s{i + 1}") for i, r in enumerate(seed_sets)}
    return cell


def test_strength_seed_aggregation_judges_convergence_on_the_mean(bench) -> None:
    """Third round's k/N 0.2 quickstart: 16% at seed 0 is converged against 15% at 10x (1 point), the mean over five
    seeds (18.2%, 16-20) is not (3.2 points); an unfinished set is left out; a 2-point gap is converged (exact)."""
    seeds, mod = bench["_strength_seeds"], bench["bench_strength"]
    cell = _strength_cell([16], [17, 19, 20, 19], top=15)
    summary = seeds.seed_summary(cell)
    assert summary["counts"] == [16, 17, 19, 20, 19] and summary["seeds"] == 5
    assert summary["mean"] == pytest.approx(0.182) and (summary["min"], summary["max"]) == (0.16, 0.20)
    assert summary["queries"] == pytest.approx((40 + 4 * 70) / 5) and summary["cpu_s"] == 1.0
    assert seeds.gap_points(summary["counts"], 15, 100) == pytest.approx(3.2)
    single = mod.report({"cells": {"kwta-0.2|quickstart|linf|0.1": _strength_cell([16], [], top=15)}})
    assert "| quickstart | kwta-0.2 | 0.1 | 100 | 100% | 16% | 40 | 1 | 16% | 70 | 15% | 80 | 1 | not run |" in single
    assert "attack seeds" not in single
    cell["seed_sets"]["5"] = dict(cell["seed_sets"]["4"], complete=False)  # unfinished: not counted
    text = mod.report({"cells": {"kwta-0.2|quickstart|linf|0.1": cell}})
    assert "| 18.2% (16–20) | 64 | 1 | 16% | 70 | 15% | 80 | 3.2 (not converged) |" in text
    assert "* 1×: 5 attack seeds per row" in text and "* 3× and 10×: one run with the shipped labels" in text
    edge = mod.report({"cells": {"kwta-0.05|quickstart|linf|0.1": _strength_cell([30], [], top=28)}})
    assert "| 28% | 80 | 2 | not run |" in edge  # float32 fractions made this 2.000001 > 2: "not converged"
    half = mod.report({"cells": {"kwta-0.05|quickstart|linf|0.1": _strength_cell([11], [], top=10, n=200)}})
    assert "| 200 | 100% | 5.5% | 40 | 1 | 5.5% | 70 | 5% | 80 | 0.5 | not run |" in half  # a sample is half a point
    spread = mod.report({"cells": {"kwta-0.05|quickstart|linf|0.1": _strength_cell([11], [19], top=10, n=200)}})
    assert "| 200 | 100% | 7.5% (5.5–9.5) |" in spread  # the seeds' range too
    assert seeds.seed_summary({"clean": [1], "levels": {"1": {"attacks": [], "complete": False}}}) is None


def test_strength_table_names_the_budget_check_verdict(bench) -> None:
    """The table's budget-check cell: the points a flag bounds, an inconclusive verdict with its estimate, a pass,
    and the check's cost as a share of the 1× run's queries."""
    mod = bench["bench_strength"]

    def flag(code, **evidence):
        base = {"source": "rerun", "attack": "bpda-smooth", "queries": 300, "drop_lower_bound": 0.01,
                "estimated_drop": 0.01, "flagged": False, "inconclusive": False}
        return {"code": code, "evidence": {**base, **evidence}}

    raised = flag("budget-still-lowering", drop_lower_bound=0.03, estimated_drop=0.04, flagged=True)
    unsure = flag("budget-inconclusive", estimated_drop=0.025, inconclusive=True)
    assert mod.budget_summary({"budget_check": [raised]}, 1000) == "bpda-smooth ≥3 pts (30% cost)"
    assert mod.budget_summary({"budget_check": [unsure]}, 1000) == \
        "bpda-smooth inconclusive (estimate 2.5 pts) (30% cost)"
    assert mod.budget_summary({"budget_check": [flag("budget-checked")]}, 600) == "ok (50% cost)"
    assert mod.budget_summary({}, 600) == "not run"
