"""Sharded evaluation (``--shards N``): batches are a fixed partition with seeds from their samples' ids, so the
merged record of N shards equals the unsharded record (every number and per-sample flag; timings aside) for
``evaluate`` and ``compare`` (transfer sources, BPDA on the driver's layer probe, sanity attack, noise probes,
diagnostics), with the in-line and the process executors; the jobs (threat point x range, sanity, whole set) go out
longest first and the budget check's batches run as jobs, in the evaluation's memory layout; an interrupted sharded
run resumes without redoing finished units; bad uses are one ``error:`` line. (The Ray executor:
``tests/test_sweep_ray.py``.)"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

import attacks.cascade as cascade
import kwta_robust.evaluate as evaluate_module
from attacks.base import ThreatModel
from kwta_robust.checkpoint import save_checkpoint
from kwta_robust.cli import main
from kwta_robust.config import EvalConfig
from kwta_robust.errors import ConfigError, KwtaRobustError
from kwta_robust.eval_part import EvalPart
from kwta_robust.models import ModelSpec
from kwta_robust.results import SCHEMA_VERSION, EvalRecord, load_record, save_record
from kwta_robust.shards import Sharding, merge_records, part_name, parts_folder, plan_parts, shard_bounds, unit_ranges
from kwta_robust.training import TrainConfig, run_training

torch.set_num_threads(1)  # the unsharded reference runs with one thread, as every shard

SUITE = {
    "dataset": "mnist5k", "n_examples": 24, "batch_size": 6, "device": "cpu", "seed": 3,
    # 0.0301234567 has more digits than a record's eps text shows (0.0301235): the shards must run it exactly
    "threats": [{"norm": "linf", "epsilons": [0.0301234567, 0.1]}],
    "attacks": [
        {"attack": "pgd", "params": {"steps": 3}},  # random start: the batch seeds matter
        {"attack": "bpda", "label": "bpda-smooth", "params": {"surrogate": "smooth", "inner": "pgd",
                                                              "inner_params": {"steps": 3}}},
        {"attack": "gradient-estimation", "params": {"steps": 2, "samples_start": 4, "samples_end": 4}},
    ],
    "noise": [{"kind": "numenta", "levels": [0.0, 0.2], "draws": 2}],
    "diagnostics": {"enabled": True, "gradient_batch": 8,
                    "sanity": {"attack": "pgd", "norm": "linf", "eps": 1.0, "params": {"steps": 3}}},
}


def comparable(record: EvalRecord) -> dict:
    """Everything a record holds but timings and provenance."""
    data = record.to_dict()
    data.pop("provenance")
    data["detection"].pop("wall_time_s", None)
    for key in ("results", "sanity", "noise"):
        for item in data[key]:
            item.pop("wall_time_s")
    return data


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """A kWTA CNN trained one epoch on mnist5k, a ReLU twin (untrained: a transfer source) and the suite."""
    folder = tmp_path_factory.mktemp("shards")
    run_training(TrainConfig.from_dict({
        "dataset": "mnist5k", "arch": "cnn", "arch_kwargs": {"channels": [4, 8], "hidden": 16}, "epochs": 1,
        "activation": {"name": "kwta", "k_ratio": 0.2}, "seed": 0, "device": "cpu", "out": str(folder / "kwta.pt")}))
    torch.manual_seed(1)
    twin = ModelSpec.from_args("cnn", activation="relu", num_classes=10, in_channels=1, input_size=28,
                               channels=[4, 8], hidden=16)
    save_checkpoint(folder / "relu.pt", twin.build(), twin, {"dataset": "mnist5k", "data_split_seed": 0})
    (folder / "suite.yaml").write_text(yaml.safe_dump(SUITE))
    return {"kwta": str(folder / "kwta.pt"), "relu": str(folder / "relu.pt"), "config": str(folder / "suite.yaml"),
            "folder": folder}


@pytest.fixture(scope="module")
def unsharded(models) -> dict:
    """The reference: ``compare kwta relu`` in one process."""
    out = models["folder"] / "one"
    assert main(["compare", models["kwta"], models["relu"], "--config", models["config"], "--out-dir", str(out),
                 "--no-progress"]) == 0
    records = {name: load_record(out / f"{name}.json") for name in ("kwta", "relu")}
    kwta = records["kwta"]
    assert [r.n_broken for r in kwta.results if r.eps == 0.1][0] > 0 and kwta.worst_case[1].robust.correct > 0
    assert kwta.detection["layers"] and kwta.sanity and kwta.noise and kwta.probes  # every part is exercised
    assert all(len(r.margins) == 24 and any(m is not None for m in r.margins) for r in kwta.results)  # merged too
    return records


# ---------------------------------------------------------------------------------------------------------------
def test_shard_bounds_are_whole_batches() -> None:
    assert shard_bounds(24, 6, 3) == [(0, 12), (12, 18), (18, 24)]
    assert shard_bounds(25, 6, 2) == [(0, 18), (18, 25)]  # 5 batches, the last one short
    assert shard_bounds(12, 6, 2) == [(0, 6), (6, 12)]
    with pytest.raises(ConfigError, match="--shards: 3 shards need at least 3 batches, but 12 samples in batches "
                                          "of 6 make 2; lower --batch-size or --shards"):
        shard_bounds(12, 6, 3)
    with pytest.raises(ConfigError, match="--shards: expected an integer >= 2"):
        Sharding(1)


class Recording:
    """An attack that records every call (the samples it got) and breaks nothing."""

    name = "recording"

    def __init__(self, calls: list, tag: object = None) -> None:
        self.calls, self.tag = calls, tag

    def __call__(self, model, x, y, threat):
        self.calls.append((self.tag, x[:, 0].tolist()))
        return x.clone()


def test_batches_are_a_fixed_partition_built_from_their_ids() -> None:
    x = torch.arange(7, dtype=torch.float32).view(7, 1) / 8
    y = torch.zeros(7, dtype=torch.long)
    model = torch.nn.Linear(1, 2)
    calls: list = []
    active = torch.tensor([True, False, True, True, True, True, False])
    ids = torch.tensor([10, 11, 12, 13, 14, 15, 16])
    cascade.run_verified(model, Recording(calls), x, y, ThreatModel("linf", 0.0), active, batch_size=3, ids=ids,
                         attack_for=lambda batch_ids: Recording(calls, batch_ids.tolist()))
    # batch 0 holds positions 0-2 (1 inactive), batch 1 positions 3-5, batch 2 position 6 (inactive: no call);
    # each batch is built from the ids of all its samples, whatever is active
    assert calls == [([10, 11, 12], [0 / 8, 2 / 8]), ([13, 14, 15], [3 / 8, 4 / 8, 5 / 8])]


def test_sharded_compare_equals_the_unsharded_run(models, unsharded, tmp_path) -> None:
    out = tmp_path / "sharded"
    assert main(["compare", models["kwta"], models["relu"], "--config", models["config"], "--out-dir", str(out),
                 "--no-progress", "--shards", "3", "--executor", "inline"]) == 0
    for name in ("kwta", "relu"):
        record = load_record(out / f"{name}.json")
        assert comparable(record) == comparable(unsharded[name])
        assert record.provenance["shards"]["bounds"] == [[0, 6], [6, 12], [12, 18], [18, 24]]  # 2 per shard at most
        assert record.provenance["shards"]["jobs"] == 4 * 2 + 4 + 1  # every range x (2 epsilons, sanity), whole set
        assert not parts_folder(out / f"{name}.json").exists()  # merged: the parts are gone


def test_a_finished_sharded_record_of_other_transfer_sources_is_not_reused(models, tmp_path, capsys) -> None:
    out = tmp_path / "cmp"
    argv = ["compare", models["kwta"], models["relu"], "--config", models["config"], "--out-dir", str(out),
            "--no-progress", "--shards", "2", "--executor", "inline", "--n-examples", "12"]
    assert main([*argv, "--no-transfer"]) == 0
    capsys.readouterr()
    assert main(argv) == 2  # with transfer now: the records without it are not "nothing to do"
    line, = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert line.endswith("holds a record of other transfer sources; use a new --out-dir or --no-resume")


def test_one_session_starts_before_the_models_load_and_serves_every_model(models, tmp_path, monkeypatch) -> None:
    import kwta_robust.loading as loading
    import kwta_robust.runs as runs

    events: list[str] = []
    real_session, real_data = Sharding.session, loading.load_pinned_eval_data

    def session(self):
        events.append("session")
        return real_session(self)

    def load_data(*args, **kwargs):
        events.append("data")
        return real_data(*args, **kwargs)

    monkeypatch.setattr(Sharding, "session", session)
    monkeypatch.setattr(runs, "load_pinned_eval_data", load_data)  # evaluate and compare read the data (and pin
    monkeypatch.setattr("kwta_robust.compare.load_pinned_eval_data", load_data)  # a data file) with this one call
    assert main(["compare", models["kwta"], models["relu"], "--config", models["config"], "--out-dir",
                 str(tmp_path / "c"), "--no-progress", "--shards", "2", "--executor", "inline"]) == 0
    assert events == ["session", "data"]  # one session for both models, open before the data loads
    events.clear()
    assert main(["evaluate", models["kwta"], "--config", models["config"], "--no-progress", "--out",
                 str(tmp_path / "e.json"), "--shards", "2", "--executor", "inline"]) == 0
    assert events == ["session", "data"]
    assert load_record(tmp_path / "e.json").provenance["shards"]["count"] == 2


def test_process_shards_equal_the_unsharded_evaluation(models, tmp_path) -> None:
    argv = ["evaluate", models["kwta"], "--config", models["config"], "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "one.json")]) == 0
    assert main([*argv, "--out", str(tmp_path / "two.json"), "--shards", "2", "--executor", "process"]) == 0
    record = load_record(tmp_path / "two.json")
    assert comparable(record) == comparable(load_record(tmp_path / "one.json"))
    assert record.provenance["shards"]["executor"]["name"] == "pool"


def test_interrupted_sharded_run_resumes_without_redoing_units(models, unsharded, tmp_path, monkeypatch) -> None:
    out = tmp_path / "cmp"
    argv = ["compare", models["kwta"], models["relu"], "--config", models["config"], "--out-dir", str(out),
            "--no-progress", "--shards", "3", "--executor", "inline"]
    real_save = evaluate_module.save_record
    saves: list[str] = []

    # the 2nd job: longest first, the smaller epsilon on every range first
    second = "attacks-6-12-linf-0.0301234567.json"

    def interrupting_save(record, path, *encoder):  # stop the kwta model's 2nd job after its 3rd write (2 units done)
        real_save(record, path, *encoder)
        saves.append(Path(path).name)
        if Path(path).parent.name == "kwta.json.parts" and saves.count(second) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(evaluate_module, "save_record", interrupting_save)
    assert main(argv) == 130
    parts = parts_folder(out / "kwta.json")
    assert load_record(parts / "attacks-0-6-linf-0.0301234567.json").status == "complete"
    assert len(load_record(parts / second).results) == 2
    monkeypatch.setattr(evaluate_module, "save_record", real_save)

    calls: list[str] = []
    real_run = cascade.run_verified
    monkeypatch.setattr(cascade, "run_verified", lambda model, attack, *a, **k: calls.append(attack.name) or
                        real_run(model, attack, *a, **k))
    assert main(argv) == 0
    units = 4 * (2 * 4 + 1)  # 4 ranges x (2 epsilons x (3 attacks + transfer), and the sanity attack)
    assert len(calls) == (units - 4 - 2) + units  # kwta: all but the 1st job and 2 units of the 2nd; relu: all
    for name in ("kwta", "relu"):
        assert comparable(load_record(out / f"{name}.json")) == comparable(unsharded[name])


def test_bad_uses_are_one_line(models, tmp_path, capsys) -> None:
    base = ["evaluate", models["kwta"], "--config", models["config"], "--no-progress"]
    cases = [
        (["--shards", "5"], "--shards: 5 shards need at least 5 batches, but 24 samples in batches of 6 make 4"),
        (["--shards", "2", "--save-adversarial", str(tmp_path / "a.pt")], "--save-adversarial: not with --shards"),
        (["--executor", "ray"], "--executor: only with --shards N"),
        (["--shards", "2", "--ray-address", "auto"], "--ray-address: only with --executor ray"),
        (["--shards", "2", "--executor", "slurm"], "--executor: unknown executor 'slurm'; use process (local "
                                                   "processes, the default) or ray"),
    ]
    for extra, message in cases:
        assert main([*base, "--out", str(tmp_path / "x.json"), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], (extra, err)
    assert not (tmp_path / "x.json").exists()


def test_records_of_an_older_schema_are_read_but_not_resumed(models, unsharded, tmp_path, capsys) -> None:
    old = copy.deepcopy(unsharded["kwta"])
    old.schema_version, old.status = 2, "partial"
    path = tmp_path / "old.json"
    save_record(old, path)
    assert load_record(path).schema_version == 2 and SCHEMA_VERSION == 3
    assert main(["evaluate", models["kwta"], "--config", models["config"], "--out", str(path), "--no-progress"]) == 2
    assert "record schema 2 (other attack seeds); use a new --out or --no-resume" in capsys.readouterr().err
    assert main(["evaluate", models["kwta"], "--config", models["config"], "--out", str(path), "--no-progress",
                 "--shards", "2", "--executor", "inline"]) == 2
    assert "record schema 2 (other attack seeds); use a new --out or --no-resume" in capsys.readouterr().err
    old.schema_version = SCHEMA_VERSION  # this run's partial record: only the unsharded run resumes it
    old.provenance["transfer_sources"] = {}  # (the record comes from compare; this run evaluates the model alone)
    save_record(old, path)
    assert main(["evaluate", models["kwta"], "--config", models["config"], "--out", str(path), "--no-progress",
                 "--shards", "2", "--executor", "inline"]) == 2
    assert "holds the partial record of an unsharded run; resume it without --shards" in capsys.readouterr().err
    assert main(["evaluate", models["kwta"], "--config", models["config"], "--out", str(path), "--no-progress",
                 "--shards", "2", "--executor", "inline", "--seed", "4"]) == 2
    assert ("holds a record of another config (seed: 3 in the record, 4 now) and other samples; use a new --out or "
            "--no-resume") in capsys.readouterr().err
    assert load_record(path).status == "partial"  # refused, not overwritten


def test_merge_refuses_parts_that_disagree(unsharded) -> None:
    whole, cfg = unsharded["kwta"], EvalConfig.from_dict(SUITE)

    def part(start: int, stop: int, flags: list[int]) -> EvalRecord:
        piece = copy.deepcopy(whole)
        piece.dataset["part"], piece.clean_flags = {"scope": "attacks", "start": start, "stop": stop}, flags
        return piece

    first, rest = whole.clean_flags[:12], whole.clean_flags[12:]
    flipped = [1 - f for f in first]
    with pytest.raises(KwtaRobustError, match="two parts on the same samples disagree on the clean predictions"):
        merge_records(whole, [part(0, 12, first), part(0, 12, flipped), part(12, 24, rest)], cfg)
    with pytest.raises(KwtaRobustError, match="the shards' clean predictions differ from the driver's"):
        merge_records(whole, [part(0, 12, flipped), part(12, 24, rest)], cfg)
    own = copy.deepcopy(whole)  # a model drawing from a generator of its own: the cause and the remedy are named
    own.provenance["randomness"] = {"randomized": True, "seedable": False, "max_output_diff": 0.5, "draws": 1}
    with pytest.raises(KwtaRobustError, match="a generator of its own.*evaluate it without --shards"):
        merge_records(own, [part(0, 12, flipped), part(12, 24, rest)], cfg)
    # the randomness probe found this part's model randomized (11 draws per verdict), so its clean verdicts differ
    # too: the cause named is the draws, checked first, not "a model that is not deterministic"
    drawn = part(12, 24, [1 - f for f in rest])
    drawn.provenance["randomness"] = {"randomized": True, "seedable": True, "max_output_diff": 0.5, "draws": 11}
    with pytest.raises(KwtaRobustError, match="the parts took different draws per verdict"):
        merge_records(whole, [part(0, 12, first), drawn], cfg)
    missing = part(12, 24, rest)
    missing.worst_case = missing.worst_case[1:]
    with pytest.raises(KwtaRobustError, match="Linf 0.0301235 is not in exactly one part of every sample range"):
        merge_records(whole, [part(0, 12, first), missing], cfg)


def test_parts_go_out_longest_first() -> None:
    cfg = EvalConfig.from_dict({**SUITE, "threats": [{"norm": "linf", "epsilons": [0.1, 0.03]},
                                                     {"norm": "l2", "epsilons": [1.0, 0.5]}]})
    assert unit_ranges(24, 6, 2) == [(0, 6), (6, 12), (12, 18), (18, 24)]
    assert unit_ranges(24, 6, 3) == [(0, 6), (6, 12), (12, 18), (18, 24)]  # no more ranges than batches
    assert unit_ranges(48, 6, 2) == [(0, 12), (12, 24), (24, 36), (36, 48)]  # RANGES_PER_SHARD = 2
    parts = plan_parts(cfg, [(0, 6), (6, 12)], {"layers": []})
    assert [(p.scope, p.threat, p.start) for p in parts] == [
        ("attacks", ("linf", 0.03), 0), ("attacks", ("linf", 0.03), 6), ("attacks", ("l2", 0.5), 0),
        ("attacks", ("l2", 0.5), 6), ("attacks", ("linf", 0.1), 0), ("attacks", ("linf", 0.1), 6),
        ("attacks", ("l2", 1.0), 0), ("attacks", ("l2", 1.0), 6), ("sanity", None, 0), ("sanity", None, 6),
        ("whole-set", None, 0)]
    assert all(p.detection == {"layers": []} for p in parts)
    assert [part_name(p) for p in parts[::4]] == ["attacks-0-6-linf-0.03.json", "attacks-0-6-linf-0.1.json",
                                                  "sanity-0-6.json"]
    assert part_name(parts[-1]) == "whole-set.json" and part_name(EvalPart("layer-probe")) == "layer-probe.json"
    with pytest.raises(ConfigError, match="threat \\(norm, eps\\) belongs to an attacks part"):
        EvalPart("sanity", 0, 6, threat=("linf", 0.1))


def test_the_budget_check_runs_in_the_evaluations_memory_layout(models, tmp_path, monkeypatch) -> None:
    """The budget check's re-run batches run with the model as the unsharded run has it (the channels-last
    convolutions on the CPU; float sums, hence the re-runs' trajectories, depend on the layout) — in the driver of
    the unsharded run and in the jobs of the sharded one (here in-line, so the spy sees them), batch by batch."""
    import kwta_robust.budget_check as budget_module
    import kwta_robust.shard_jobs as jobs_module

    seen: list[tuple[bool, int, tuple[int, ...]]] = []
    real = budget_module.run_rerun_batch

    def spying(model, x, y, job, *args, **kwargs):
        conv = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]  # 4 input channels
        seen.append((conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous(),
                     int(x.shape[0]), job.positions))
        return real(model, x, y, job, *args, **kwargs)

    monkeypatch.setattr(budget_module, "run_rerun_batch", spying)
    monkeypatch.setattr(jobs_module, "run_rerun_batch", spying)
    argv = ["evaluate", models["kwta"], "--config", models["config"], "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "one.json")]) == 0
    unsharded = seen[:]
    seen.clear()
    assert main([*argv, "--out", str(tmp_path / "two.json"), "--shards", "2", "--executor", "inline"]) == 0
    assert seen == unsharded and len(seen) > 4 and all(last and n == 24 for last, n, _ in seen)
    assert all(len({i // 6 for i in positions}) == 1 for _, _, positions in seen)  # one batch of 6 each
    assert comparable(load_record(tmp_path / "two.json")) == comparable(load_record(tmp_path / "one.json"))
