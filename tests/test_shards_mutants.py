"""Pins of sharded evaluation (kwta_robust/shards.py, kwta_robust/shard_jobs.py) that kill the survivors of a
mutation round on these modules: the executor checks and the command-line names in their errors, unmerged parts
(only ``*.json`` in the parts folder counts), the plan without a sanity attack, part file names that keep every
digit of an epsilon, the jobs' labels and error lines, the re-run outcomes in the order of their batches (not the
order they finished), a ``--no-resume`` run that never overwrites another program's file, a matching record reused
only when complete and of shared draws, the merge's threat point order, the largest violation wherever it is,
diagnostics recomputed and status, a range missing a threat point, what a worker passes on to the evaluation
(threads, resume, memory layout, transfer sources, BPDA layers), and one in-line sharded run of an untrained toy
model (its shards in the provenance, its parts folder removed). Synthetic records and stand-ins for the model
loading, but for that run (a few seconds)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

import kwta_robust.shard_jobs as jobs_module
import kwta_robust.resume as resume_module
import kwta_robust.shards as shards_module
from eval_helpers import make_record, make_result
from kwta_robust.checkpoint import save_checkpoint
from kwta_robust.cli import main
from kwta_robust.config import EvalConfig
from kwta_robust.diagnostics import Flag, run_checks
from kwta_robust.errors import ConfigError, KwtaRobustError
from kwta_robust.eval_part import EvalPart
from kwta_robust.rerun_jobs import RerunBatch
from kwta_robust.models import ModelSpec
from kwta_robust.results import load_record, save_record
from kwta_robust.resume import StalePolicy
from kwta_robust.shard_jobs import RerunJob, ShardJob, run_rerun, run_shard
from kwta_robust.shards import (Sharding, _describe, _gpus, _run_jobs, _run_reruns, merge_records, part_name,
                                parts_folder, plan_parts, refuse_unmerged_parts, sharded_record)
from kwta_robust.sweep.executors.base import Completion
from test_shard_merge import CFG, part, whole_record

BASE = {"dataset": "toy", "threats": [{"norm": "linf", "epsilons": [0.3]}], "attacks": ["pgd"]}


# ---------------------------------------------------------------------------------------------------------------
# the executor, the parts folder, the plan
# ---------------------------------------------------------------------------------------------------------------
def test_an_unknown_executor_is_refused_as_the_sharding_is_built() -> None:
    with pytest.raises(ConfigError, match=r"^--executor: unknown executor 'slurm'; use process \(local processes"):
        Sharding(2, "slurm")
    assert Sharding(2, "process").executor == "process" and Sharding(3, "inline").shards == 3


def test_the_executors_errors_name_the_command_line_options(monkeypatch) -> None:
    def refusing(name, workers, **options):
        raise ConfigError("executor.name: 'ray' needs Ray, which is not installed; pip install 'ray>=2.9'")

    with pytest.raises(ConfigError, match=r"^--ray-address: expected 'auto' or HOST:PORT"):
        Sharding(2, "ray", {"address": " "}).create_executor()
    monkeypatch.setattr(shards_module, "create_executor", refusing)
    with pytest.raises(ConfigError) as caught:
        Sharding(2, "ray").create_executor()
    assert str(caught.value) == "--executor: 'ray' needs Ray, which is not installed; pip install 'ray>=2.9'"


def test_only_finished_part_records_refuse_an_unsharded_resume(tmp_path: Path) -> None:
    out = tmp_path / "model.json"
    folder = parts_folder(out)
    folder.mkdir()
    refuse_unmerged_parts(out, resume=True)  # an empty folder holds nothing to resume
    (folder / ".whole-set.json.x1.tmp").write_text("{")  # a write that was killed: not a finished part
    refuse_unmerged_parts(out, resume=True)
    (folder / "attacks-0-6-linf-0.1.json").write_text("{}")
    with pytest.raises(ConfigError) as caught:
        refuse_unmerged_parts(out, resume=True, option="--shards 3")
    assert str(caught.value) == (f"{out}: {folder} holds the finished parts of an interrupted sharded run; re-run "
                                 "with --shards 3 (the same N) to resume them, or with --no-resume to start over "
                                 "without them")


def test_no_sanity_jobs_without_a_sanity_attack() -> None:
    cfg = EvalConfig.from_dict({**BASE, "diagnostics": {"enabled": True, "sanity": None}})
    assert cfg.diagnostics.sanity is None
    assert [p.scope for p in plan_parts(cfg, [(0, 5), (5, 10)], {})] == ["attacks", "attacks", "whole-set"]


def test_a_part_file_name_keeps_every_digit_of_its_epsilon() -> None:
    """Two threat points closer than a record's eps text (0.0301235) are two files, not one overwritten."""
    names = [part_name(EvalPart("attacks", 0, 6, threat=("linf", eps))) for eps in (0.0301234567, 0.0301235)]
    assert names == ["attacks-0-6-linf-0.0301234567.json", "attacks-0-6-linf-0.0301235.json"]


def test_a_job_is_labelled_by_its_threat_point_and_samples() -> None:
    assert _describe(EvalPart("attacks", 0, 6, threat=("l2", 0.5))) == "l2 0.5 on 0:6"
    assert _describe(EvalPart("sanity", 6, 12)) == "sanity on 6:12"
    assert _describe(EvalPart("whole-set")) == "whole-set"


def test_a_cuda_evaluation_reserves_one_gpu_per_job(monkeypatch) -> None:
    monkeypatch.setattr(shards_module, "resolve_device", torch.device)  # no GPU needed to plan for one
    assert _gpus(EvalConfig.from_dict({**BASE, "device": "cuda"})) == 1.0
    assert _gpus(EvalConfig.from_dict({**BASE, "device": "cpu"})) == 0.0


# ---------------------------------------------------------------------------------------------------------------
# running the jobs
# ---------------------------------------------------------------------------------------------------------------
class Reversing:
    """An executor that finishes its jobs last first (``fn`` run in-line), or fails the job labelled ``fail``."""

    def __init__(self, fail: str | None = None) -> None:
        self.fail, self.seen = fail, []

    def map_unordered(self, fn, jobs, *, resources):
        for job in reversed(list(jobs)):
            self.seen.append(resources(job))
            if job.label == self.fail:
                yield Completion(job, error="worker died (exit code -9)")
                return
            yield Completion(job, result=fn(job))


def test_a_failed_job_is_one_line_that_keeps_the_finished_parts(tmp_path: Path) -> None:
    jobs = [SimpleNamespace(label=f"model linf 0.1 on {a}:{a + 6}", threads=2) for a in (0, 6)]
    with pytest.raises(KwtaRobustError) as caught:
        _run_jobs(Reversing(fail="model linf 0.1 on 0:6"), lambda job: job.label, jobs, 0.0, tmp_path)
    assert str(caught.value) == (f"--shards: model linf 0.1 on 0:6 failed: worker died (exit code -9); the finished "
                                 f"parts are kept in {tmp_path}: once that is fixed, the same command resumes them")


def test_the_rerun_outcomes_come_back_in_the_order_of_their_batches(tmp_path: Path, monkeypatch) -> None:
    batches = [RerunBatch("pgd", "pgd", {"steps": 3}, seed, "linf", 0.1, (seed,)) for seed in range(3)]
    monkeypatch.setattr(shards_module, "run_rerun", lambda job: ([job.batch.positions[0]], 10 * job.batch.seed))
    loaded = SimpleNamespace(label="model", source="model.pt")
    probe = make_record()
    probe.provenance["layout"], probe.detection = "as given", {"layers": ["block1"]}
    executor = Reversing()
    outcomes = _run_reruns(executor, loaded, EvalConfig.from_dict(BASE), probe, False, 0.0, tmp_path, batches)
    assert outcomes == [([0], 0), ([1], 10), ([2], 20)]  # the jobs finished 2, 1, 0


# ---------------------------------------------------------------------------------------------------------------
# the record at --out
# ---------------------------------------------------------------------------------------------------------------
def test_a_fresh_sharded_run_never_overwrites_another_programs_file(tmp_path: Path) -> None:
    out = tmp_path / "model.json"
    out.write_text("my notes\n")
    loaded = SimpleNamespace(model=torch.nn.Linear(2, 2), info={"label": "model"})
    selected = SimpleNamespace(indices=torch.arange(4), num_classes=2)
    with pytest.raises(ConfigError, match=r"^--out: .*model.json exists and is not a kwta-robust record \(nothing was "
                                          r"written to it\)"):
        sharded_record(out, loaded, EvalConfig.from_dict(BASE), selected, {}, False, StalePolicy())
    assert out.read_text() == "my notes\n"
    out.unlink()
    assert sharded_record(out, loaded, EvalConfig.from_dict(BASE), selected, {}, False, StalePolicy()) is None



def test_a_matching_record_is_reused_only_complete_and_of_shared_draws(tmp_path: Path, monkeypatch) -> None:
    """The record matches this run (``differences`` is :mod:`kwta_robust.resume`'s, stubbed to agree, and so are
    its record checks and planned units, which this synthetic record does not meet): complete, it is returned as it
    is; partial, or a randomized model's that drew afresh, it is a one-line error."""
    monkeypatch.setattr(shards_module, "differences", lambda old, **found: None)
    monkeypatch.setattr(resume_module, "check_resumable", lambda record, source: None)
    monkeypatch.setattr(shards_module, "unplanned_unit", lambda record, units: None)
    out = tmp_path / "model.json"
    loaded = SimpleNamespace(model=torch.nn.Linear(2, 2), info={"label": "model"})
    selected = SimpleNamespace(indices=torch.arange(10), num_classes=2, values_sha256=lambda: "digest")
    record = whole_record()
    save_record(record, out)
    found = sharded_record(out, loaded, EvalConfig.from_dict(BASE), selected, {}, True, StalePolicy())
    assert found is not None and found.clean_flags == record.clean_flags and found.status == "complete"
    record.status = "partial"
    save_record(record, out)
    with pytest.raises(ConfigError, match=r"^--out: .*model.json holds the partial record of an unsharded run; resume "
                                          r"it without --shards, or use a new --out or --no-resume$"):
        sharded_record(out, loaded, EvalConfig.from_dict(BASE), selected, {}, True, StalePolicy())
    record.status = "complete"
    record.provenance["randomness"] = {"randomized": True, "seedable": True, "draws": 1}  # no common_draws
    save_record(record, out)
    with pytest.raises(ConfigError, match="holds verdicts that drew afresh"):
        sharded_record(out, loaded, EvalConfig.from_dict(BASE), selected, {}, True, StalePolicy())


# ---------------------------------------------------------------------------------------------------------------
# the merge
# ---------------------------------------------------------------------------------------------------------------
def _two_points() -> tuple:
    """pgd at eps 0.1 (breaks 0 and 4) and at eps 0.3 (breaks 0, 4, 5): the config lists 0.1 first."""
    low = make_result("pgd", [0, 1, -2, 1, 0, 1, 1, -2, 1, 1], eps=0.1)
    high = make_result("pgd", [0, 1, -2, 1, 0, 0, 1, -2, 1, 1], eps=0.3)
    clean = [1, 1, 0, 1, 1, 1, 1, 0, 1, 1]
    cfg = EvalConfig.from_dict({**BASE, "threats": [{"norm": "linf", "epsilons": [0.1, 0.3]}],
                                "diagnostics": {"enabled": False}})
    return make_record([low, high], clean_flags=clean), cfg


def test_the_merged_threat_points_keep_the_configs_order() -> None:
    whole, cfg = _two_points()
    merged = merge_records(whole, [part(whole, 5, 10), part(whole, 0, 5)], cfg)
    assert [(r.eps, r.flags.count(0)) for r in merged.results] == [(0.1, 2), (0.3, 3)]
    assert [(w.eps, w.robust.correct) for w in merged.worst_case] == [(0.1, 6), (0.3, 5)]


def test_a_range_without_a_threat_point_is_refused() -> None:
    whole, cfg = _two_points()
    first, second = part(whole, 0, 5), part(whole, 5, 10)
    second.worst_case = second.worst_case[:1]  # eps 0.3 never ran on 5:10
    with pytest.raises(KwtaRobustError, match=r"^--shards: Linf 0.3 is not in exactly one part of every sample range"):
        merge_records(whole, [first, second], cfg)


def test_the_merged_record_is_complete_with_its_diagnostics_recomputed() -> None:
    whole = whole_record()
    whole.status = "partial"
    whole.diagnostics = [Flag("error", "stale", "a flag of the whole-set part, not of the merged record")]
    cfg = EvalConfig.from_dict({"dataset": "toy", "threats": [{"norm": "linf", "epsilons": [0.3]}],
                                "attacks": ["pgd", "fgsm"], "diagnostics": {"enabled": True}})
    expected = whole_record()  # the unsharded run's record: its checks are the merged record's
    merged = merge_records(whole, [part(whole, 0, 5), part(whole, 5, 10)], cfg)
    assert merged.status == "complete"
    assert [f.to_dict() for f in merged.diagnostics] == [f.to_dict() for f in run_checks(expected, cfg.diagnostics
                                                                                            .thresholds)]
    assert all(f.code != "stale" for f in merged.diagnostics)


def test_the_sanity_attack_is_merged_in_sample_order() -> None:
    whole = whole_record()
    whole.sanity = [make_result("sanity-pgd", [0, 0, -2, 1, 0, 0, 0, -2, 0, 0], eps=1.0)]
    pieces = [part(whole, 6, 10), part(whole, 0, 6)]
    for piece, (a, b) in zip(pieces, ((6, 10), (0, 6))):
        sanity = piece.sanity[0]
        sanity.flags = sanity.flags[a:b]
        sanity.n_broken = sanity.flags.count(0)
        piece.results, piece.worst_case = [], []
    attacks = [part(whole, 0, 6), part(whole, 6, 10)]
    for piece in attacks:
        piece.sanity = []
    merged = merge_records(whole, pieces + attacks, CFG)
    (sanity,) = merged.sanity
    assert sanity.flags == [0, 0, -2, 1, 0, 0, 0, -2, 0, 0] and (sanity.n_broken, sanity.n_attacked) == (7, 8)


# ---------------------------------------------------------------------------------------------------------------
# what a worker runs
# ---------------------------------------------------------------------------------------------------------------
class Source:
    """A model source whose load records the device and gives a small linear model."""

    def __init__(self, name: str) -> None:
        self.name = name

    def load(self, device):
        model = torch.nn.Linear(2, 3)
        return SimpleNamespace(model=model, metadata={"source": self.name}, info={"label": self.name})


@contextlib.contextmanager
def _spy_threads(calls: list, n: int):
    calls.append(n)
    yield


def test_a_shard_job_runs_the_part_as_the_driver_asked(monkeypatch) -> None:
    calls: dict = {"threads": []}

    def evaluating(model, data, cfg, info, **kwargs):
        calls.update(kwargs, info=info, data=data)
        return SimpleNamespace(to_dict=lambda: {"written": kwargs["out_path"]})

    monkeypatch.setattr(jobs_module, "torch_threads", lambda n: _spy_threads(calls["threads"], n))
    monkeypatch.setattr(jobs_module, "load_eval_data", lambda cfg, metadata, models: ("data", metadata, len(models)))
    monkeypatch.setattr(jobs_module, "evaluate", evaluating)
    part = EvalPart("attacks", 0, 6, threat=("linf", 0.3))
    job = ShardJob("model linf 0.3 on 0:6", Source("kwta"), EvalConfig.from_dict(BASE).to_dict(), 3, "preserve",
                   sources={"relu": Source("relu")}, part=part, out_path="parts/a.json", resume=False,
                   strict_bpda_layers=False, command=["evaluate", "kwta.pt"])
    assert run_shard(job) == {"written": "parts/a.json"}
    assert calls["threads"] == [3] and calls["data"] == ("data", {"source": "kwta"}, 2)
    assert (calls["resume"], calls["layout"], calls["strict_bpda_layers"], calls["part"]) == (False, "preserve", False,
                                                                                              part)
    assert list(calls["transfer_sources"]) == ["relu"] and calls["command"] == ["evaluate", "kwta.pt"]
    assert isinstance(calls["transfer_sources"]["relu"], torch.nn.Linear) and calls["progress"] is False


def test_a_rerun_job_runs_the_batch_with_the_drivers_bpda_layers_and_layout(monkeypatch) -> None:
    seen: dict = {"threads": [], "layouts": []}
    x, y = torch.rand(4, 2), torch.tensor([0, 1, 2, 0])

    def planning(model, specs, bpda_layers, detection, strict):
        seen["plan"] = ([s.label for s in specs], strict)
        return {"bpda-smooth": ["layer"]}

    @contextlib.contextmanager
    def layout(models):
        seen["layouts"].append(len(models))
        yield

    def running(model, xs, ys, batch, batch_size, layers):
        seen["run"] = (torch.equal(xs, x), torch.equal(ys, y), batch.label, batch_size, layers)
        return [1], 7

    monkeypatch.setattr(jobs_module, "torch_threads", lambda n: _spy_threads(seen["threads"], n))
    monkeypatch.setattr(jobs_module, "load_eval_data", lambda cfg, metadata, models: None)
    monkeypatch.setattr(jobs_module, "select_samples", lambda data, cfg: SimpleNamespace(x=x, y=y, num_classes=3))
    monkeypatch.setattr(jobs_module, "plan_bpda_layers", planning)
    monkeypatch.setattr(jobs_module, "channels_last_convolutions", layout)
    monkeypatch.setattr(jobs_module, "run_rerun_batch", running)
    cfg = EvalConfig.from_dict({**BASE, "batch_size": 2, "attacks": [
        "pgd", {"attack": "bpda", "label": "bpda-smooth", "params": {"surrogate": "smooth"}}]})
    batch = RerunBatch("bpda-smooth", "bpda", {"surrogate": "smooth"}, 5, "linf", 0.3, (0, 1))
    for layout_name, expected in (("channels_last", 1), ("preserve", 0)):
        job = RerunJob("rerun", Source("kwta"), cfg.to_dict(), 2, layout_name, detection={"layers": []},
                       strict_bpda_layers=True, batch=batch)
        assert run_rerun(job) == ([1], 7)
        assert seen["layouts"][-1] == expected
    assert seen["threads"] == [2, 2] and seen["plan"] == (["bpda-smooth"], True)
    assert seen["run"] == (True, True, "bpda-smooth", 2, {"bpda-smooth": ["layer"]})


def test_the_merged_record_drops_the_part_and_keeps_the_largest_violation_wherever_it_is() -> None:
    whole = whole_record()
    whole.dataset["part"] = {"scope": "whole-set", "start": 0, "stop": None}  # the whole-set part's record
    pieces = [part(whole, 0, 5), part(whole, 5, 10)]
    for piece, largest in zip(pieces, (0.002, 0.03)):
        for r in piece.results:
            r.violations, r.max_violation = 1, largest
    merged = merge_records(whole, pieces, CFG)
    assert "part" not in merged.dataset and merged.dataset["indices"] == list(range(10))
    assert [(r.violations, r.max_violation) for r in merged.results] == [(2, 0.03), (2, 0.03)]


# ---------------------------------------------------------------------------------------------------------------
# the whole sharded run, in-line, on an untrained toy model
# ---------------------------------------------------------------------------------------------------------------
def test_a_sharded_run_records_its_shards_and_removes_its_parts(tmp_path: Path) -> None:
    torch.manual_seed(0)
    spec = ModelSpec.from_args("cnn", activation="relu", num_classes=10, in_channels=1, input_size=28,
                               channels=[2, 4], hidden=8)
    save_checkpoint(tmp_path / "m.pt", spec.build(), spec, {"dataset": "mnist5k", "data_split_seed": 0})
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump({
        "dataset": "mnist5k", "n_examples": 18, "batch_size": 6, "device": "cpu", "seed": 1,
        "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": ["fgsm"]}))
    out = tmp_path / "m.json"
    assert main(["evaluate", str(tmp_path / "m.pt"), "--config", str(tmp_path / "suite.yaml"), "--no-progress",
                 "--out", str(out), "--shards", "2", "--executor", "inline"]) == 0
    record = load_record(out)
    shards = record.provenance["shards"]
    assert (shards["count"], shards["bounds"], shards["jobs"]) == (2, [[0, 6], [6, 12], [12, 18]], 4)
    assert not parts_folder(out).exists()
