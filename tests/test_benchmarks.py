"""Smoke tests of the benchmarks (``benchmarks/``): every benchmark's code path runs in ``--quick`` mode and
produces finite positive ratios; the paired-ratio timing helper; the fairness of the harness-overhead baseline
(the bare PGD loop makes exactly the runner's model passes); the memory benchmark's reduced budget."""

from __future__ import annotations

import json
import math

import pytest
import torch

from bench_fixtures import bench  # noqa: F401 - a fixture
from kwta_robust.sweep.manifest import MANIFEST_FORMAT


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
    assert result["selection"] == mod.host_selection(torch.device("cpu"))
    assert f"kWTA threshold (one torch thread): {result['selection']}" in text


def test_kwta_layer_benchmark_names_the_hosts_selection(bench, monkeypatch) -> None:
    mod = bench["bench_kwta_layer"]
    from kwta_robust import selection

    monkeypatch.setattr(selection, "SAMPLED_BRACKET", True)
    assert mod.host_selection(torch.device("cpu")).startswith("a sampled bracket for wide groups")
    monkeypatch.setattr(selection, "SAMPLED_BRACKET", False)
    assert mod.host_selection(torch.device("cpu")).startswith("NumPy's introselect")
    assert mod.host_selection(torch.device("cuda")) == "torch.topk (not the CPU)"


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
    from kwta_robust.evaluate import evaluate
    from kwta_robust.samples import select_samples

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
    # the runner's model probe (kwta_robust.model_checks) on two samples, then on one alone, then one with gradients
    assert runner[:3] == [2, 1, 1]
    assert runner[3:6] == [12] * 3  # the randomness probe (kwta_robust.randomness): 3 passes on up to 32 inputs
    assert batches == runner[6:]  # then the same number of forwards, same batch sizes
    assert len(runner) == 3 + 3 + 1 + 1 + 4 + 1  # probes, clean, attack input check, steps + 1, re-classification


def test_harness_overhead_benchmark_quick(bench) -> None:
    mod = bench["bench_harness_overhead"]
    result = mod.run(mod.parse_args(["--quick", "--activations", "relu"]))
    (row,) = result["rows"]
    assert finite_positive(row["ratio"]) and 0.0 <= row["robust"] <= 1.0
    assert "target runner / bare <= 1.1" in mod.report(result)


def test_record_scale_benchmark_quick(bench) -> None:
    mod = bench["bench_record_scale"]
    result = mod.run(mod.parse_args(["--quick"]))
    assert [(r["n"], r["units"]) for r in result["rows"]] == [(32, 1), (32, 3), (96, 1), (96, 3)]
    assert all(finite_positive(r["ratio"]) and finite_positive(r["record_mb"]) for r in result["rows"])
    assert result["rows"][3]["record_mb"] > result["rows"][2]["record_mb"]  # more units, a larger record
    assert set(result["growth"]) == {"samples", "units"} and all(map(finite_positive, result["growth"].values()))
    assert "target: runner / bare grows <= 1.5x from 32 to 96 samples" in mod.report(result)
    assert [(r["results"], r["n"]) for r in result["pass_rows"]] == [(20, 32), (40, 32)]
    assert all(finite_positive(r[f"{name}_s"]) for r in result["pass_rows"] for name in mod.PASSES)
    assert set(result["pass_growth"]) == set(mod.PASSES) and all(map(finite_positive, result["pass_growth"].values()))
    assert "target: each pass's time per result grows <= 1.5x from 20 to 40 results" in mod.report(result)


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


def test_budget_bound_coverage_reproduces_what_the_readme_quotes(bench, tmp_path) -> None:
    """The budget check's bound covers at least its nominal 97.5% on every design (the Wilson bound used before did
    not), and the power the README quotes: the benchmark behind the README's budget check sentence."""
    out = tmp_path / "coverage.md"
    assert bench["budget_bound_coverage"].main(["--out", str(out)]) == 0
    rows = {line.split(" | ")[0].strip("| "): line for line in out.read_text().splitlines() if line.startswith("| ")}
    assert rows["exact"].startswith("| exact | 97.5% ") and rows["exact"].endswith("| 0.0% |")
    assert rows["wilson"].startswith("| wilson | 11.1% (N=9, m-h=8, R=1) | 95.9% ")
    power = [line for line in out.read_text().splitlines() if line.startswith("| 2x | 0% |")]
    assert power == ["| 2x | 0% | 412 | 34.2% | 30.8% | 28.8% | 27.7% |"]
