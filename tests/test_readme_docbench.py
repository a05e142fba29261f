"""The benchmark scripts do what their docstrings say (``benchmarks/*.py``): ratios are medians of per-repetition
ratios (also where a benchmark prints the inverse ratio), the common flags' refusals, the memory benchmark's reduced
budget of the shipped suite's BPDA stages, and the Tramèr-configured gradient estimation of the strength benchmark."""

from __future__ import annotations

import argparse
import statistics

import pytest
import torch

from bench_fixtures import bench  # noqa: F401 - a fixture


def scripted_timing(common, name: str, times: list[float], ratios: list[float]):
    """A :class:`benchmarks._common.Timing` as :func:`~benchmarks._common.paired_timings` forms it."""
    return common.Timing(name, statistics.median(times), statistics.median(ratios), times, ratios)


def test_peers_ours_over_peer_is_the_median_of_the_per_repetition_ratios(bench, monkeypatch) -> None:
    mod, common = bench["bench_peers"], bench["_common"]
    x, y = torch.zeros(2, 1, 28, 28), torch.tensor([0, 1])
    monkeypatch.setattr(mod, "implementations", lambda *a, **k: {"ours": lambda: x, "peer": lambda: x})

    def timings(fns, baseline, repeats, clock, device, warmup=1):
        for fn in fns.values():
            fn()
        # two repetitions: the peer took 2x, then 4x our time; ours / peer per repetition: 0.5 and 0.25
        return {"ours": scripted_timing(common, "ours", [1.0, 1.0], [1.0, 1.0]),
                "peer": scripted_timing(common, "peer", [2.0, 4.0], [2.0, 4.0])}

    monkeypatch.setattr(mod, "paired_timings", timings)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    args = argparse.Namespace(eps=0.1, l2_eps=1.5, budget=mod.Budget(), seed=0, num_classes=10, repeats=2,
                              clock="wall")
    rows = {r["impl"]: r for r in mod.measure("relu", model, x, y, "pgd", args, torch.device("cpu"))}
    assert rows["peer"]["ours_over"] == pytest.approx(0.375)  # median(0.5, 0.25), not 1 / median(2, 4) = 0.333
    assert rows["ours"]["ours_over"] == 1.0


def test_gradient_estimation_ratio_is_the_median_of_the_paired_throughput_ratios(bench, monkeypatch) -> None:
    mod, common = bench["bench_gradient_estimation"], bench["_common"]

    def timings(fns, baseline, repeats, clock, device, warmup=1):
        return {"bare": scripted_timing(common, "bare", [1.0, 1.0], [1.0, 1.0]),
                "attack": scripted_timing(common, "attack", [2.0, 4.0], [2.0, 4.0])}

    monkeypatch.setattr(mod, "paired_timings", timings)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).eval().requires_grad_(False)
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(dim=1)
    params = {"steps": 1, "samples_start": 2, "samples_end": 2, "query_batch_size": 8}
    args = argparse.Namespace(seed=0, eps=1e-4, repeats=2, clock="wall")
    row = mod.measure("full batches", model, x, y, params, args, torch.device("cpu"))
    # 2 rows x (1 entry check + 2 * 2 probes + 1 re-classification) = 12 queries; 2 bare calls of 8 inputs = 16
    assert (row["queries"], row["batch"]) == (12, 8)
    assert row["ratio"] == pytest.approx(12 / 16 * 0.375)  # median of (q/B) / r over r = 2, 4


@pytest.mark.parametrize("argv, message", [
    (["--repeats", "0"], "error: --repeats must be >= 1, got 0"),
    (["--threads", "0"], "error: --threads must be >= 1, got 0"),
    (["--device", "tpu:x"], "error: --device: unknown device 'tpu:x'; use cpu, cuda or cuda:N"),
    (["--device", "cuda"], "error: --device cuda: CUDA is not available on this machine; use --device cpu"),
])
def test_common_flags_are_refused_in_one_line(bench, monkeypatch, argv, message) -> None:
    common = bench["_common"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    parser = argparse.ArgumentParser()
    common.add_common_arguments(parser, repeats=3)
    with pytest.raises(SystemExit) as raised:
        common.setup(parser.parse_args(argv))
    assert str(raised.value) == message


def test_common_flags_defaults(bench) -> None:
    common = bench["_common"]
    parser = argparse.ArgumentParser()
    common.add_common_arguments(parser, repeats=7)
    args = parser.parse_args([])
    assert (args.device, args.repeats, args.threads, args.clock, args.seed, args.quick, args.out) == (
        "cpu", 7, None, "wall", 0, False, None)
    assert "timed repetitions (median; default 7)" in parser.format_help()


def test_memory_reduced_budget_caps_each_bpda_stage_of_the_shipped_suite(bench) -> None:
    """Each temperature stage of the shipped suite's BPDA attacks (mnist5k-full.yaml: 100 / 500 and 1,000 x 3 steps)
    is capped at ``--steps``, the default 3 and a given 7 alike (the cap is the flag, not a constant)."""
    from kwta_robust.config import EvalConfig

    mod = bench["bench_memory"]
    shipped = {a.label: a.params["stage_steps"] for a in EvalConfig.from_yaml(mod.SUITE_CONFIG).attacks
               if a.attack == "bpda" and "stage_steps" in a.params}
    assert shipped == {"bpda-smooth": [100, 500], "bpda-smooth-long": [1000, 1000, 1000]}  # all above both caps
    for argv, steps in (([], 3), (["--steps", "7"], 7)):
        cfg = mod.evaluation_config(mod.parse_args(argv))
        stages = {a.label: a.params["stage_steps"] for a in cfg.attacks
                  if a.attack == "bpda" and "stage_steps" in a.params}
        assert stages == {label: [steps] * len(stage) for label, stage in shipped.items()}, argv


def test_strength_tramer_reference_matches_the_docstring(bench) -> None:
    from attacks.adaptive import staged_schedule

    spec = bench["bench_strength"].tramer_spec(0.1, 20)
    assert spec.label == "tramer-ge" and spec.attack == "gradient-estimation"
    assert spec.params["sigma"] == 0.1 and spec.params["step_size"] == pytest.approx(0.032)
    assert spec.params["steps"] == 100 and spec.params["loss"] == "margin"
    per_iteration = staged_schedule(spec.params["samples_schedule"], 100)
    assert len(per_iteration) == 100
    assert (per_iteration[0], per_iteration[19], per_iteration[20], per_iteration[39], per_iteration[40],
            per_iteration[99]) == (2, 2, 25, 25, 500, 500)  # 50 / 500 / 10,000 pairs divided by 20


def test_strength_checks_results_file_holds_one_closest_setting(bench, tmp_path) -> None:
    mod = bench["strength_checks"]
    source, results = tmp_path / "strength.json", tmp_path / "checks.json"
    source.write_text('{"meta": {}, "cells": {}}\n')
    results.write_text('{"meta": {}, "cells": {}, "closest": 0.5, "min_samples": "auto"}\n')
    with pytest.raises(SystemExit) as raised:
        mod.run(mod.parse_args(["--from", str(source), "--results", str(results)]))  # --closest: as shipped, 0.75
    assert str(raised.value) == (f"error: --closest 0.75: {results} holds checks made with --closest 0.5; "
                                 "give another --results")


def test_strength_checks_seed_sets_need_the_stored_runs(bench) -> None:
    mod = bench["strength_checks"]
    args = argparse.Namespace(seed_sets=2, check_seeds=1, samplings=["random"])
    with pytest.raises(SystemExit) as raised:
        mod.runs_of({"levels": {"1": {"complete": True}}, "seed_sets": {}}, args)
    assert str(raised.value) == ("error: --seed-sets 2: --from holds no complete 1x run of seed set 1 (run "
                                 "bench_strength with --seeds 2)")
    stored = {"levels": {"1": {"complete": True}}, "seed_sets": {"1": {"complete": True}}}
    assert mod.runs_of(stored, args) == [(0, 0, "random"), (1, 0, "random")]


def test_strength_quick_runs_keep_their_untrained_models_apart(bench, tmp_path) -> None:
    """``--quick`` trains its models 0 epochs: it must neither load nor leave checkpoints where a full run looks."""
    source = tmp_path / "strength.json"
    source.write_text('{"meta": {}, "cells": {}}\n')
    for name, results, extra in (("bench_strength", "results.json", []), ("strength_variants", "variants.json", []),
                                 ("strength_checks", "checks.json", ["--from", str(source)])):
        mod = bench[name]
        full, quick = mod.parse_args(extra), mod.parse_args(["--quick", *extra])
        assert (full.cache_dir, full.results) == ("runs/bench_strength/checkpoints", f"runs/bench_strength/{results}")
        assert (quick.cache_dir, quick.results) == ("runs/bench_strength/quick/checkpoints",
                                                    f"runs/bench_strength/quick/{results}")
        given = mod.parse_args(["--quick", "--cache-dir", "c", "--results", "r.json", *extra])
        assert (given.cache_dir, given.results) == ("c", "r.json")
