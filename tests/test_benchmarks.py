"""Smoke tests of the benchmarks (``benchmarks/``): every benchmark's code path runs in ``--quick`` mode and
produces finite positive ratios; the paired-ratio timing helper; the fairness of the harness-overhead baseline
(the bare PGD loop makes exactly the runner's model passes); the memory benchmark's reduced budget."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path
from types import ModuleType

import pytest
import torch

from kwta_robust.sweep.manifest import MANIFEST_FORMAT

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("_common", "bench_kwta_layer", "bench_harness_overhead", "bench_cascade", "bench_gradient_estimation",
         "bench_memory", "bench_peers", "bench_scaleout", "bench_strength", "strength_variants",
         "_strength_seeds", "strength_checks")


@pytest.fixture(scope="module")
def bench() -> dict[str, ModuleType]:
    """The benchmark modules (``benchmarks`` lives at the repository root, outside the installed packages)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(ROOT))
        yield {name: importlib.import_module(f"benchmarks.{name}") for name in NAMES}


def finite_positive(value: float) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_paired_timings_take_the_median_of_per_repetition_ratios(bench) -> None:
    common = bench["_common"]
    # scripted durations: the baseline drifts (1, 10, 2 s), the candidate is always twice the baseline of its
    # repetition -> paired ratio exactly 2, though the medians of the raw times alone would not say so
    durations = {"base": iter([1.0, 10.0, 2.0]), "cand": iter([2.0, 20.0, 4.0])}
    calls: list[str] = []

    def make(name: str):
        def fn() -> str:
            calls.append(name)
            return name
        return fn

    def measure(fn) -> float:
        return next(durations[fn()])

    out = common.paired_timings({"base": make("base"), "cand": make("cand")}, "base", 3, "wall",
                                torch.device("cpu"), warmup=1, measure=measure)
    assert out["cand"].ratio == 2.0 and out["base"].ratio == 1.0
    assert out["base"].median_s == 2.0 and out["cand"].median_s == 4.0
    assert calls == ["base", "cand"] + ["base", "cand", "cand", "base", "base", "cand"]  # warm-up, then rotating
    with pytest.raises(ValueError, match="baseline"):
        common.paired_timings({"a": make("base")}, "b", 1, "wall", torch.device("cpu"))


def test_kwta_layer_benchmark_quick(bench) -> None:
    mod = bench["bench_kwta_layer"]
    result = mod.run(mod.parse_args(["--quick"]))
    assert [r["mode"] for r in result["bare"]] == ["dense", "volume", "channel", "local"]
    for row in result["bare"]:
        assert all(finite_positive(row[name]) for name in [*mod.FORMULATIONS, "selection"])
    assert len(result["context"]) == 1
    assert all(finite_positive(result["context"][0][key]) for key in ("block", "model", "model_cl"))
    assert result["verdict"]["model_max"] == max(result["context"][0]["model"], result["context"][0]["model_cl"])
    text = mod.report(result)
    assert "target kWTA <= 3x ReLU, volume mode, bare tensor" in text and "| local | 8 | 0.1 |" in text
    assert "target (issue 13) kWTA CNN <= 1.1x ReLU CNN, forward + backward, NCHW and channels-last" in text


@pytest.mark.parametrize("mode", ["dense", "volume", "channel", "local"])
def test_kwta_layer_formulations_agree_without_ties(bench, mode: str) -> None:
    mod = bench["bench_kwta_layer"]
    x = torch.randn((3,) + mod.FEATURES[mode], generator=torch.Generator().manual_seed(0))
    from kwta_robust.layers import kwta

    for k in (1, 5):
        expected = kwta(x, k, mode)
        for name, fn in mod.FORMULATIONS.items():
            assert torch.equal(fn(x, k, mode), expected), name


def test_harness_bare_loop_makes_the_runners_model_passes(bench) -> None:
    mod = bench["bench_harness_overhead"]
    common = bench["_common"]
    from kwta_robust.evaluate import evaluate, select_samples

    device = torch.device("cpu")
    model = common.small_cnn("relu", device, 0)
    data = common.self_labelled_mnist5k(model, device)
    cfg = mod.runner_config(12, 0.02, 3, 0)
    chosen = select_samples(data, cfg)
    batches: list[int] = []
    handle = model.register_forward_hook(lambda m, inp, out: batches.append(int(inp[0].shape[0])))
    try:
        evaluate(model, data, cfg, {}, resume=False, progress=False, layout="preserve")
        runner = list(batches)
        batches.clear()
        fooled = mod.bare_pgd(model, chosen.x, chosen.y, 0.02, 3, torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    assert not bool(fooled.all())  # otherwise PGD stops early and the pass counts legitimately differ
    assert runner[0] == 2  # the runner's model probe (kwta_robust.model_checks) on two samples, before any work
    assert batches == runner[1:]  # then the same number of forwards, same batch sizes
    assert len(runner) == 1 + 1 + 1 + 4 + 1  # probe, clean, attack input check, steps + 1, re-classification


def test_harness_overhead_benchmark_quick(bench) -> None:
    mod = bench["bench_harness_overhead"]
    result = mod.run(mod.parse_args(["--quick", "--activations", "relu"]))
    (row,) = result["rows"]
    assert finite_positive(row["ratio"]) and 0.0 <= row["robust"] <= 1.0
    assert "target runner / bare <= 1.1" in mod.report(result)


def test_cascade_benchmark_quick_skips_broken_examples(bench) -> None:
    mod = bench["bench_cascade"]
    result = mod.run(mod.parse_args(["--quick"]))
    (row,) = result["rows"]
    assert row["robust_after_first"] == 0.0 and row["robust_final"] == 0.0
    assert row["later_attacked"] == 0  # later attacks never see an example PGD-20 broke
    assert [a[0] for a in row["per_attack"]][:2] == ["pgd-20", "pgd-100"] and len(row["per_attack"]) == 11
    assert finite_positive(row["ratio"])


def test_gradient_estimation_benchmark_quick(bench) -> None:
    mod = bench["bench_gradient_estimation"]
    result = mod.run(mod.parse_args(["--quick"]))
    (row,) = result["rows"]
    assert row["batch"] == 2 * 8 * 4 and row["queries"] > 0
    assert finite_positive(row["ratio"]) and finite_positive(row["attack_qps"])


def test_memory_benchmark_reduced_budget_keeps_batch_shapes(bench) -> None:
    mod = bench["bench_memory"]
    ge = mod.reduce_budget({"attack": "gradient-estimation", "params": {"steps": 100, "samples_start": 20,
                                                                        "samples_end": 200}}, 3, 10)
    assert ge["params"] == {"steps": 1, "samples_start": 8, "samples_end": 8}
    assert 4096 // (2 * 250) == mod.GE_PAIRS  # one full probe batch of the default query_batch_size
    bpda = mod.reduce_budget({"attack": "bpda", "params": {"inner_params": {"steps": 100},
                                                           "temperature_schedule": [1.0, 0.3, 0.1]}}, 1, 10)
    assert bpda["params"]["inner_params"]["steps"] == 3  # one step per temperature
    staged = mod.reduce_budget({"attack": "bpda", "params": {"stage_steps": [100, 1000],
                                                             "temperature_schedule": [0.1, 0.03]}}, 20, 10)
    assert staged["params"]["stage_steps"] == [20, 20]
    square = mod.reduce_budget({"attack": "square", "params": {"n_queries": 5000}}, 3, 10)
    assert square["params"]["n_queries"] == 10
    cfg = mod.evaluation_config(mod.parse_args([]))
    assert cfg.n_examples == 1000 and cfg.mode == "independent" and len(cfg.attacks) == 11


def test_memory_benchmark_quick(bench) -> None:
    mod = bench["bench_memory"]
    result = mod.run(mod.parse_args(["--quick"]))  # one child process: baseline step, then the evaluation
    (row,) = result["rows"]
    assert row["baseline_mib"] > 0 and row["ratio"] >= 1.0  # ru_maxrss only grows
    assert "peak RSS" in mod.report(result)


def test_memory_benchmark_forward_stage_uses_the_largest_batch(bench) -> None:
    mod = bench["bench_memory"]
    cfg = mod.evaluation_config(mod.parse_args([]))
    assert mod.largest_forward_batch(cfg, torch.device("cuda")) == 4096  # gradient estimation's probe chunk
    assert mod.largest_forward_batch(cfg, torch.device("cpu")) == 256  # cache-sized forwards on the CPU
    out = mod.child(mod.parse_args(["--quick", "--child", "forward"]))  # in-process: runs the stage's code
    assert out["forward"]["batch"] == 250 and out["forward"]["rss_bytes"] >= out["baseline"]["rss_bytes"] > 0


def test_peers_benchmark_quick_runs_every_attack_against_its_peers(bench) -> None:
    mod = bench["bench_peers"]
    result = mod.run(mod.parse_args(["--quick"]))
    impls = {(r["activation"], r["attack"]): [] for r in result["rows"]}
    for r in result["rows"]:
        impls[(r["activation"], r["attack"])].append(r["impl"])
        assert 0.0 <= r["robust"] <= 1.0 and finite_positive(r["ours_over"]) and r["outside"] == 0
    assert sorted(impls) == sorted((a, k) for a in ("relu", "kwta") for k in mod.ATTACKS)
    assert impls[("kwta", "pgd")] == ["ours", "torchattacks", "foolbox"]
    assert impls[("relu", "cw")] == ["ours", "foolbox", "torchattacks"]
    assert impls[("relu", "gradient-estimation")] == ["ours", "tramer"]
    assert len(result["verdicts"]) == 2 * len(mod.ATTACKS)  # one per (CNN, attack)
    assert impls[("kwta", "fab-t")] == ["ours", "torchattacks"]
    ours = {(r["activation"], r["attack"]): r["robust"] for r in result["rows"] if r["impl"] == "ours"}
    for r in result["rows"]:  # the disagreements explain the difference of robust accuracies, sample by sample
        gap = (r["ours_only"] - r["this_only"]) / result["n"]
        assert r["robust"] - ours[(r["activation"], r["attack"])] == pytest.approx(gap)
        assert r["impl"] != "ours" or r["ours_only"] == r["this_only"] == 0
    assert "faster and at least as strong" in mod.report(result)


def test_peers_verdict_needs_a_peer_both_faster_and_as_strong(bench) -> None:
    mod = bench["bench_peers"]

    def row(impl: str, robust: float, ours_over: float) -> dict:
        return {"activation": "relu", "attack": "pgd", "impl": impl, "robust": robust, "seconds": 1.0 / ours_over,
                "ours_over": ours_over}

    faster_weaker = mod.verdicts([row("ours", 0.5, 1.0), row("a", 0.6, 1.2)])
    faster_as_strong = mod.verdicts([row("ours", 0.5, 1.0), row("a", 0.5, 1.2), row("b", 0.4, 0.9)])
    assert faster_weaker[0]["met"] and faster_weaker[0]["fastest_peer"] == "a"
    assert not faster_as_strong[0]["met"] and faster_as_strong[0]["beaten_by"] == ["a"]


def test_tramer_loop_breaks_exactly_the_points_inside_the_ball(bench) -> None:
    from attack_fixtures import boundary_distance, linear_binary

    mod = bench["bench_peers"]
    model, x, y = linear_binary()
    eps = 0.02  # the points lie 0.0004-0.042 from the boundary
    x_adv = mod.tramer_gradient_estimation(model, x, y, eps, steps=20, pairs=50, sigma=eps, step_size=2.5 * eps / 20,
                                           generator=torch.Generator().manual_seed(0))
    distance = boundary_distance(model, x, y, "linf")
    with torch.no_grad():
        broken = model(x_adv).argmax(dim=1) != y
    assert bool(((x_adv - x).abs() <= eps + 1e-6).all())
    assert bool(broken[distance < 0.8 * eps].all()) and not bool(broken[distance > eps].any())
    assert 0 < int((distance < 0.8 * eps).sum()) < len(y)
def test_scaleout_benchmark_workloads_and_report(bench) -> None:
    """The scale-out benchmark's workloads are valid configs of the intended size, and its report reads the
    paired ratios against the 0.6 target (the runs themselves take minutes: ``python -m benchmarks.bench_scaleout``)."""
    from kwta_robust.config import EvalConfig
    from kwta_robust.shards import shard_bounds
    from kwta_robust.sweep import SweepConfig

    mod, common = bench["bench_scaleout"], bench["_common"]
    args = mod.parse_args([])
    sweep = SweepConfig.from_dict(mod.sweep_config(args))
    assert len(sweep.cells()) == 4 and sweep.eval.n_examples == 200 and sweep.train["threads"] == 1
    suite = EvalConfig.from_dict(mod.eval_config(args))
    assert shard_bounds(suite.n_examples, suite.batch_size, 2) == [(0, 500), (500, 1000)]
    assert [a.attack for a in suite.attacks] == ["pgd", "bpda"]

    def timing(name, seconds, ratio):
        return common.Timing(name, seconds, ratio, [seconds], [ratio])

    result = {"machine": {"cpu": "test"}, "load_after": 1.0, "seconds": 10.0, "args": vars(args),
              "sweep": {"in-line": timing("in-line", 100.0, 1.0), "ray": timing("ray", 55.0, 0.55)},
              "eval": {"one process": timing("one process", 60.0, 1.0), "process": timing("process", 42.0, 0.7)},
              "same_records": True, "same_matrices": True,
              "cpu": {"sweep in-line": [95.0], "eval one process": [57.0], "eval process": [79.8]}}
    text = mod.report(result)
    assert "| 4-cell sweep | ray vs in-line | 55 | 100 | 0.55 | 0.55 | n/a | 0.95 | yes |" in text
    assert "| 2-shard evaluate | process vs one process | 42 | 60 | 0.7 | 0.70 | 1.90 | 0.95 | no |" in text
    assert "equal to the one-process record (every number and per-sample flag): yes" in text
    assert "sweep cells" not in text  # no cell times recorded: no line about them

    result["cell_seconds"] = {"in-line": [96.0, 100.0, 95.0], "ray": [104.0, 108.0, 103.0]}
    assert ("96.0 s one at a time (in-line), 104.0 s two at a time (Ray): each cell ran 1.08x as long next to "
            "another; with the cells spread evenly the ratio cannot go below 0.542") in mod.report(result)


def test_scaleout_benchmark_sums_the_cells_own_wall_times(bench, tmp_path) -> None:
    """The cells' summed wall time comes from the sweep's own record of them (``sweep.json``)."""
    cells = [{"label": "a", "wall_time_s": 21.5}, {"label": "b", "wall_time_s": 26.25}]
    (tmp_path / "sweep.json").write_text(json.dumps({"format": MANIFEST_FORMAT, "cells": cells}))
    assert bench["bench_scaleout"].summed_cell_seconds(tmp_path) == 47.75


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


@pytest.mark.parametrize("path", sorted(Path(__file__).resolve().parents[1].glob("benchmarks/strength_variants*.json")),
                         ids=lambda p: p.name)
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
    """The budget check on stored 1x runs, per check seed, half closest to the boundary (as shipped) and all at
    random; the table; resuming; cells it cannot check."""
    strength, mod = bench["bench_strength"], bench["strength_checks"]
    source, cache = tmp_path / "strength.json", str(tmp_path / "models")
    strength.run(strength.parse_args(["--quick", "--suites", "quickstart", "--results", str(source),
                                      "--cache-dir", cache]))
    argv = ["--quick", "--from", str(source), "--results", str(tmp_path / "checks.json"), "--cache-dir", cache]
    data = mod.run(mod.parse_args(argv))
    cells = json.loads(source.read_text())["cells"]
    assert set(data["cells"]) == {f"{k}|{s}|{seed}" for k in cells for s in ("random", "closest") for seed in (0, 1)}
    for row_key, row in data["cells"].items():
        key, sampling, _ = row_key.rsplit("|", 2)
        survivors = strength.summarize(cells[key])["levels"][1]["robust_count"]
        assert row["runs"] and all(r["survivors"] == survivors for r in row["runs"]), row_key
        for r in row["runs"]:
            assert r["closest"] == (r["sampled"] // 2 if sampling == "closest" else 0), row_key
            assert 0 <= r["broken_closest"] <= r["broken"] <= r["sampled"] <= survivors and r["queries"] > 0
        assert row["flagged"] == any(r["flagged"] for r in row["runs"]) and row["cpu_s"] >= 0
    text = mod.report(data, json.loads(source.read_text()))
    assert "| random: flagged |" in text and "| closest: flagged |" in text
    for key in cells:
        model = key.split("|")[0]
        assert f"| quickstart | {model} |" in text and "of 2 |" in text
    import kwta_robust.budget_check

    monkeypatch.setattr(kwta_robust.budget_check, "run_budget_check", lambda *a, **k: pytest.fail("re-ran a check"))
    assert mod.run(mod.parse_args(argv))["cells"] == data["cells"]
    with pytest.raises(SystemExit, match="not a checked cell of --from"):
        mod.run(mod.parse_args(argv + ["--cells", "kwta-0.1|standard|linf|0.005"]))
    for bad in (["--check-seeds", "0"], ["--from", str(tmp_path / "none.json")]):
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
    assert seeds.seed_summary({"clean": [1], "levels": {"1": {"attacks": [], "complete": False}}}) is None
