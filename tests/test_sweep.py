"""Sweeps: grid expansion, cell identity, config validation before any training, a tiny end-to-end sweep on
digits (records, matrices, real PNGs), kill-and-resume equal to an uninterrupted run, failed cells retried."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import matplotlib.image
import pytest
import torch
import yaml

import kwta_robust.evaluate as evaluate_module
import kwta_robust.sweep as sweep
import kwta_robust.sweep.cells as cells
from kwta_robust.cli import main
from kwta_robust.errors import ConfigError
from kwta_robust.results import load_record, save_record
from kwta_robust.sweep import (DENSE, CellOutcome, CellPlan, Grid, GridCell, Resources, SweepConfig, plan_cells,
                               run_sweep)
from kwta_robust.sweep.plans import longest_first

torch.set_num_threads(1)

TINY_TRAIN = {
    "dataset": "digits", "arch": "cnn", "arch_kwargs": {"channels": [4, 8], "hidden": 16, "kernel_size": 3},
    "epochs": 2, "batch_size": 64, "lr": 0.01, "seed": 0, "device": "cpu",
}
TINY_EVAL = {
    "dataset": "digits", "n_examples": 24, "batch_size": 24, "device": "cpu", "seed": 0, "mode": "cascade",
    "threats": [{"norm": "linf", "epsilons": [0.1, 0.3]}],
    "attacks": [
        {"attack": "pgd", "params": {"steps": 3}},
        {"attack": "bpda", "label": "bpda-smooth", "params": {"surrogate": "smooth", "inner": "pgd",
                                                              "inner_params": {"steps": 3}}},
    ],
    "noise": [{"kind": "numenta", "levels": [0.0, 0.2], "draws": 1}],
    "diagnostics": {"enabled": False},
}
TINY_GRID = {"kwta_ratios": [1.0, 0.25], "weight_sparsities": [0.0, 0.5], "pruning_methods": ["magnitude"]}


def tiny_config(**changes) -> dict:
    data = {"name": "tiny", "train": dict(TINY_TRAIN), "grid": dict(TINY_GRID), "pruning": {"retrain_epochs": 1},
            "eval": json.loads(json.dumps(TINY_EVAL))}
    data.update(changes)
    return data


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


class Counter:
    """Wraps a function of the sweep module and counts calls per cell label."""

    def __init__(self, fn, key):
        self.fn, self.key, self.calls = fn, key, []

    def __call__(self, *args, **kwargs):
        self.calls.append(self.key(*args, **kwargs))
        return self.fn(*args, **kwargs)


def count_work(monkeypatch) -> tuple[Counter, Counter]:
    train = Counter(cells.run_training, lambda cfg: Path(cfg.out).parent.name)
    evaluate = Counter(cells.evaluate, lambda model, data, cfg, info, **kw: info["sweep_cell"]["directory"])
    monkeypatch.setattr(cells, "run_training", train)
    monkeypatch.setattr(cells, "evaluate", evaluate)
    return train, evaluate


def numbers(record) -> dict:
    """Everything an evaluation measured (no timings or provenance)."""
    return {
        "state": record.model["state_sha256"], "clean": record.clean_flags,
        "results": sorted((r.label, r.norm, r.eps, r.flags, r.robust.correct) for r in record.results),
        "worst": sorted((w.norm, w.eps, w.first_broken_by, w.robust.correct) for w in record.worst_case),
        "noise": [(n.kind, n.seed, json.dumps(n.result, sort_keys=True)) for n in record.noise],
    }


# ---------------------------------------------------------------------------------------------------------------
# grid and identity
# ---------------------------------------------------------------------------------------------------------------
def test_grid_expansion_shares_the_dense_cell_and_marks_relu() -> None:
    grid = Grid.from_dict({"kwta_ratios": [1.0, 0.2], "weight_sparsities": [0.0, 0.5, 0.8],
                           "pruning_methods": ["magnitude", "rigl"]})
    cells = grid.cells()
    assert len(cells) == 2 * (1 + 2 * 2)
    assert cells[0] == GridCell(1.0, 0.0, DENSE) and cells[0].activation == "relu" and cells[0].label == "relu-dense"
    assert [c.pruning_method for c in cells if c.weight_sparsity == 0.0] == [DENSE, DENSE]
    assert {(c.kwta_ratio, c.weight_sparsity, c.pruning_method) for c in cells if c.weight_sparsity > 0} == {
        (r, s, m) for r in (1.0, 0.2) for s in (0.5, 0.8) for m in ("magnitude", "rigl")}
    assert len({c.label for c in cells}) == len(cells)
    assert GridCell(0.2, 0.8, "rigl").activation == "kwta"
    assert Grid.from_dict({"kwta_ratios": [0.5], "weight_sparsities": [0.5]}).pruning_methods == ("magnitude",)


def test_cells_go_to_the_executor_longest_first(tmp_path) -> None:
    cfg = SweepConfig.from_dict(tiny_config(grid={"kwta_ratios": [1.0, 0.25], "weight_sparsities": [0.0, 0.5],
                                                  "pruning_methods": ["magnitude"]}))
    plans = plan_cells(cfg, tmp_path)
    assert [p.label for p in plans] == ["relu-dense", "relu-magnitude0.5", "kwta0.25-dense", "kwta0.25-magnitude0.5"]
    assert [p.label for p in longest_first(plans)] == ["kwta0.25-magnitude0.5", "relu-magnitude0.5", "kwta0.25-dense",
                                                       "relu-dense"]


def test_cell_configs_and_hash_identity(tmp_path) -> None:
    cfg = SweepConfig.from_dict(tiny_config())
    plans = plan_cells(cfg, tmp_path)
    assert [p.label for p in plans] == ["relu-dense", "relu-magnitude0.5", "kwta0.25-dense", "kwta0.25-magnitude0.5"]
    by_label = {p.label: p for p in plans}
    assert by_label["relu-dense"].train["activation"]["name"] == "relu" and \
        by_label["relu-dense"].train["pruning"] is None
    kwta = by_label["kwta0.25-magnitude0.5"].train
    assert kwta["activation"]["name"] == "kwta" and kwta["activation"]["k_ratio"] == 0.25
    assert kwta["pruning"]["method"] == "magnitude" and kwta["pruning"]["sparsity"] == 0.5
    assert kwta["pruning"]["retrain_epochs"] == 1
    assert len({p.cell_id for p in plans}) == 4
    for p in plans:  # the directory is named by the hash of the cell's training identity
        assert Path(p.directory).name == f"{p.label}-{p.cell_id}" and p.checkpoint == Path(p.directory) / "model.pt"
    # same recipe -> same ids; device (placement) does not change identity or the record's name
    again = plan_cells(SweepConfig.from_dict(tiny_config()).with_overrides(device="cpu"), tmp_path)
    assert [(p.cell_id, p.record_path) for p in again] == [(p.cell_id, p.record_path) for p in plans]
    # a change of recipe changes every id; a change of the eval suite changes only the record's name
    longer = plan_cells(SweepConfig.from_dict(tiny_config(train={**TINY_TRAIN, "epochs": 3})), tmp_path)
    assert not {p.cell_id for p in longer} & {p.cell_id for p in plans}
    other_eval = plan_cells(SweepConfig.from_dict(tiny_config(eval={**TINY_EVAL, "n_examples": 10})), tmp_path)
    assert [p.cell_id for p in other_eval] == [p.cell_id for p in plans]
    assert all(a.record_path != b.record_path for a, b in zip(other_eval, plans))


BAD_CONFIGS = [
    ({"grid": {**TINY_GRID, "kwta_ratios": []}}, "grid.kwta_ratios: empty"),
    ({"grid": {**TINY_GRID, "weight_sparsities": []}}, "grid.weight_sparsities: empty"),
    ({"grid": {**TINY_GRID, "pruning_methods": []}}, "grid.pruning_methods: empty"),
    ({"grid": {**TINY_GRID, "weight_sparsities": [0.0, 1.0]}}, "grid.weight_sparsities[1]: 1 is outside [0, 1)"),
    ({"grid": {**TINY_GRID, "weight_sparsities": [-0.1]}}, "grid.weight_sparsities[0]: -0.1 is outside [0, 1)"),
    ({"grid": {**TINY_GRID, "kwta_ratios": [0.0]}}, "grid.kwta_ratios[0]: 0 is outside (0, 1]"),
    ({"grid": {**TINY_GRID, "kwta_ratios": [1.5]}}, "grid.kwta_ratios[0]: 1.5 is outside (0, 1]"),
    ({"grid": {**TINY_GRID, "pruning_methods": ["magic"]}}, "grid.pruning_methods[0]: unknown pruning method 'magic'"),
    ({"grid": {**TINY_GRID, "ratios": [0.1]}}, "grid: unknown key 'ratios'"),
    ({"grid": {**TINY_GRID, "kwta_ratios": [0.5, 0.5]}}, "grid.kwta_ratios: duplicate"),
    ({"grid": {**TINY_GRID, "kwta_ratios": [0.2, 0.2000001]}}, "grid.kwta_ratios: values that print alike"),
    ({"epochs": 3}, "sweep config: unknown key 'epochs'"),
    ({"grid": None}, "sweep config: missing key 'grid'"),
    ({"pruning": {"retrain_epocs": 1}}, "pruning: unknown key 'retrain_epocs'"),
    ({"pruning": {"sparsity": 0.5}}, "pruning.sparsity: set by grid.weight_sparsities"),
    ({"pruning": {"rounds": 2, "schedule": "one-shot"}}, "pruning.rounds"),
    ({"train": {**TINY_TRAIN, "out": "x.pt"}}, "train.out"),
    ({"train": {**TINY_TRAIN, "activation": {"name": "kwta", "k_ratio": 0.1}}}, "train.activation.name: set by grid"),
    ({"train": {**TINY_TRAIN, "epochs": -1}}, "train.epochs: must be >= 0"),
    ({"train": {**TINY_TRAIN, "epochz": 1}}, "train: unknown key 'epochz'"),
    ({"eval": {**TINY_EVAL, "dataset": "mnist5k"}}, "eval.dataset"),
    ({"eval": {**TINY_EVAL, "attacks": [{"attack": "nope"}]}}, "attacks[0]"),
    ({"executor": {"workers": 0}}, "executor.workers"),
    ({"train": {**TINY_TRAIN, "arch": "vgg"}}, "train.arch: unknown architecture 'vgg'"),
    ({"train": {**TINY_TRAIN, "arch_kwargs": {"channel": [4]}}}, "train.arch_kwargs: arch 'cnn': unknown argument"),
]


@pytest.mark.parametrize("change,message", BAD_CONFIGS, ids=[m for _, m in BAD_CONFIGS])
def test_bad_sweep_configs_fail_before_any_training(change, message, tmp_path, monkeypatch, capsys) -> None:
    def no_training(*args, **kwargs):
        raise AssertionError("training started despite a bad config")

    monkeypatch.setattr(cells, "run_training", no_training)
    data = {k: v for k, v in tiny_config(**change).items() if v is not None}
    with pytest.raises(ConfigError) as info:
        SweepConfig.from_dict(data)
    assert message in str(info.value) and "\n" not in str(info.value)
    code = main(["sweep", str(write_config(tmp_path / "bad.yaml", data)), "--out-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not (tmp_path / "out").exists()


def test_a_sweep_never_writes_over_its_own_config(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    (out / "cells").mkdir(parents=True)
    for name in ("sweep.json", "matrices.md", "cells/c.yaml"):  # the manifest, a matrices file, inside cells/
        config = write_config(out / name, tiny_config())
        before = config.read_text()
        assert main(["sweep", str(config), "--out-dir", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "(one of its outputs), which is its input" in err[0], err
        assert config.read_text() == before


def test_eval_and_train_sections_by_path(tmp_path) -> None:
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(TINY_EVAL))
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(TINY_TRAIN))
    path = write_config(tmp_path / "sweep.yaml", tiny_config(eval="suite.yaml", train="recipe.yaml"))
    cfg = SweepConfig.from_yaml(path)
    assert cfg.eval.n_examples == TINY_EVAL["n_examples"] and cfg.train["arch_kwargs"] == TINY_TRAIN["arch_kwargs"]
    assert cfg.sources["eval"] == str(tmp_path / "suite.yaml") and cfg.name == "tiny"
    with pytest.raises(ConfigError, match=r"eval: no such file .*missing.yaml"):
        SweepConfig.from_dict(tiny_config(eval="missing.yaml"), base_dir=tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# end to end
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """The tiny sweep run once, uninterrupted, through the CLI."""
    out = tmp_path_factory.mktemp("sweep")
    path = write_config(out.parent / f"{out.name}.yaml", tiny_config())
    code = main(["sweep", str(path), "--out-dir", str(out), "--no-progress"])
    return path, out, code


def test_tiny_sweep_end_to_end(finished_sweep, capsys) -> None:
    path, out, code = finished_sweep
    assert code == 0
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["status"] == "complete" and manifest["failed"] == [] and len(manifest["cells"]) == 4
    assert all(c["status"] == "done" and c["attempts"] == 1 and c["trained"] for c in manifest["cells"])
    for entry in manifest["cells"]:
        record = load_record(out / entry["record"])
        cell = record.model["sweep_cell"]
        assert record.status == "complete" and cell["cell_id"] == entry["cell_id"]
        assert (cell["kwta_ratio"], cell["weight_sparsity"]) == (entry["kwta_ratio"], entry["weight_sparsity"])
        assert record.model["activation"] == ("relu" if entry["kwta_ratio"] == 1.0 else "kwta")
        if entry["kwta_ratio"] != 1.0:
            assert record.model["kwta_ratio"] == entry["kwta_ratio"]
        assert record.model["weight_sparsity"]["overall"] == pytest.approx(entry["weight_sparsity"], abs=0.01)
        assert {r.label for r in record.results} == {"pgd", "bpda-smooth"} and len(record.worst_case) == 2
    md = (out / "matrices.md").read_text()
    assert "| 1.0 (ReLU twin) |" in md and "| 0.25 |" in md and "worst case robust accuracy at Linf 0.3" in md
    csv_rows = (out / "matrices.csv").read_text().strip().splitlines()
    assert len(csv_rows) == 1 + 4 * (1 + 2 * 3 + 1)  # header + 4 cells x (clean + 2 eps x (worst, pgd, bpda) + noise)
    assert r"\begin{tabular}{lrr}" in (out / "matrices.tex").read_text()
    pngs = sorted((out / "plots").glob("*.png"))
    assert len(pngs) == 8 + 3  # a heatmap per matrix (the noise score's too), a robust-vs-eps plot per attack metric
    for png in pngs:
        image = matplotlib.image.imread(png)
        assert image.ndim == 3 and image.shape[0] > 150 and image.shape[1] > 200
        assert float(image[..., :3].std()) > 0.05  # drawn, not blank


def test_rerun_redoes_nothing(finished_sweep, monkeypatch, capsys) -> None:
    path, out, _ = finished_sweep
    before = {p: p.read_text() for p in out.glob("cells/*/eval-*.json")}
    train, evaluate = count_work(monkeypatch)
    assert main(["sweep", str(path), "--out-dir", str(out), "--no-progress", "--no-plots"]) == 0
    assert train.calls == [] and evaluate.calls == []
    assert {p: p.read_text() for p in out.glob("cells/*/eval-*.json")} == before
    assert "| 1.0 (ReLU twin) " in capsys.readouterr().out  # the matrices, aligned
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["runs"] == 2 and all(c["attempts"] == 1 and not c["evaluated"] for c in manifest["cells"])
    # the first run's work is kept beside this run's reuse
    assert all(c["done_earlier"]["run"] == 1 and c["done_earlier"]["trained"] and c["done_earlier"]["evaluated"]
               and c["done_earlier"]["wall_time_s"] > 0 for c in manifest["cells"])


def test_killed_sweep_resumes_to_the_same_records(finished_sweep, tmp_path, monkeypatch) -> None:
    _, reference, _ = finished_sweep
    cfg = SweepConfig.from_dict(tiny_config())
    out = tmp_path / "resumed"
    real_save = evaluate_module.save_record
    saves: dict[str, int] = {}

    def killing_save(record, path, *encoder):  # interrupt the 2nd cell after its 3rd record write (mid-evaluation)
        real_save(record, path, *encoder)
        cell = record.model["sweep_cell"]["directory"]
        saves[cell] = saves.get(cell, 0) + 1
        if len(saves) == 2 and saves[cell] == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(evaluate_module, "save_record", killing_save)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, out, progress=False)
    monkeypatch.setattr(evaluate_module, "save_record", real_save)
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["status"] == "interrupted"
    order = longest_first(plan_cells(cfg, out))  # the order the cells run in
    status = {c["cell_id"]: c["status"] for c in manifest["cells"]}
    assert [status[p.cell_id] for p in order] == ["done", "pending", "pending", "pending"]
    assert load_record(order[1].record_path).status == "partial" and order[1].checkpoint.is_file()

    train, evaluate = count_work(monkeypatch)
    result = run_sweep(cfg, out, progress=False)
    assert result.failed == [] and result.manifest["status"] == "complete"
    assert train.calls == [Path(p.directory).name for p in order[2:]]  # cell 2's checkpoint is reused
    assert evaluate.calls == [p.directory for p in order[1:]]  # cell 1 untouched, cell 2 resumed
    resumed = {r.model["sweep_cell"]["cell_id"]: numbers(r) for r in result.records()}
    uninterrupted = {load_record(p).model["sweep_cell"]["cell_id"]: numbers(load_record(p))
                     for p in reference.glob("cells/*/eval-*.json")}
    assert resumed == uninterrupted and len(resumed) == 4


def test_checkpoint_reused_only_when_its_settings_match(finished_sweep, tmp_path, monkeypatch) -> None:
    _, reference, _ = finished_sweep
    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    cfg = SweepConfig.from_dict(tiny_config())
    relu, _, kwta, pruned = plan_cells(cfg, out)
    Path(relu.record_path).unlink()  # checkpoint kept: evaluated again, not retrained
    shutil.copy(relu.checkpoint, kwta.checkpoint)  # a checkpoint of other settings: retrained
    stale = load_record(kwta.record_path)  # ... and its record, left partial: set aside, not overwritten
    stale.status = "partial"
    save_record(stale, kwta.record_path)
    train, evaluate = count_work(monkeypatch)
    result = run_sweep(cfg, out, progress=False)
    assert train.calls == [Path(kwta.directory).name]
    assert evaluate.calls == [kwta.directory, relu.directory]  # longest first: kWTA before ReLU
    assert result.outcomes[relu.cell_id].trained is False and result.outcomes[kwta.cell_id].trained is True
    assert load_record(kwta.record_path).model["activation"] == "kwta"
    kept = list((Path(kwta.record_path).parent / "superseded").glob("*.json"))
    assert len(kept) == 1 and load_record(kept[0]).results == stale.results
    assert numbers(load_record(relu.record_path)) == \
        numbers(load_record(reference / Path(relu.record_path).relative_to(out)))


def fail_pruned_training(monkeypatch, message: str):
    """Make the training of every pruned cell raise ``RuntimeError(message)``; returns the real ``run_training``."""
    real = cells.run_training

    def flaky(cfg):
        if cfg.pruning is not None:
            raise RuntimeError(message)
        return real(cfg)

    monkeypatch.setattr(cells, "run_training", flaky)
    return real


def test_failed_cell_is_reported_and_retried(tmp_path, monkeypatch, capsys) -> None:
    data = tiny_config(grid={"kwta_ratios": [1.0], "weight_sparsities": [0.0, 0.5]})
    path = write_config(tmp_path / "two.yaml", data)
    out = tmp_path / "out"
    real_training = fail_pruned_training(monkeypatch, "out of memory\nsecond line")
    assert main(["sweep", str(path), "--out-dir", str(out), "--no-progress", "--no-plots"]) == 1
    captured = capsys.readouterr()
    assert "1 of 2 cells failed" in captured.err and "relu-magnitude0.5" in captured.err
    assert "RuntimeError: out of memory" in captured.err
    manifest = json.loads((out / "sweep.json").read_text())
    failed = [c for c in manifest["cells"] if c["status"] == "failed"]
    assert manifest["status"] == "failed" and [c["cell_id"] for c in failed] == manifest["failed"]
    assert failed[0]["label"] == "relu-magnitude0.5" and failed[0]["error"] == "RuntimeError: out of memory"
    assert "failed cell" in (out / "matrices.md").read_text()  # the matrix says which cell is missing
    assert "| 1.0 (ReLU twin) " in captured.out and "—" in captured.out

    monkeypatch.setattr(cells, "run_training", real_training)  # the retry succeeds
    train, evaluate = count_work(monkeypatch)
    assert main(["sweep", str(path), "--out-dir", str(out), "--no-progress", "--no-plots"]) == 0
    assert train.calls == [Path(failed[0]["directory"]).name] and len(evaluate.calls) == 1
    manifest = json.loads((out / "sweep.json").read_text())
    retried = next(c for c in manifest["cells"] if c["cell_id"] == failed[0]["cell_id"])
    assert retried["status"] == "done" and retried["attempts"] == 2
    assert retried["previous_error"] == "RuntimeError: out of memory" and manifest["failed"] == []


def test_dry_run_lists_cells_without_running(tmp_path, monkeypatch, capsys) -> None:
    train, evaluate = count_work(monkeypatch)
    path = write_config(tmp_path / "s.yaml", tiny_config())
    assert main(["sweep", str(path), "--out-dir", str(tmp_path / "o"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 cells; config valid" in out and "kwta0.25-magnitude0.5" in out and "[to run]" in out
    assert train.calls == [] and evaluate.calls == [] and not (tmp_path / "o").exists()
    for dry in ([], ["--dry-run"]):  # the dry run refuses what the run would refuse before training
        assert main(["sweep", str(path), "--out-dir", str(tmp_path / "o"), "--device", "cuda:99", *dry]) == 2
        assert capsys.readouterr().err.startswith("error: --device: 'cuda:99'") and not (tmp_path / "o").exists()
    (tmp_path / "file.json").write_text("{}")  # a dry run checks --out-dir as the run would
    assert main(["sweep", str(path), "--out-dir", str(tmp_path / "file.json"), "--dry-run"]) == 2
    assert "--out-dir: " in capsys.readouterr().err
    assert main(["sweep", str(path), "--out-dir", str(tmp_path / "o"), "--dry-run", "--cpus-per-cell", "2"]) == 2
    err = capsys.readouterr().err  # the flags given, not the config keys they set
    assert err.startswith("error: --cpus-per-cell: only with the ray executor (the config's is 'local'); add "
                          "--executor ray")


# ---------------------------------------------------------------------------------------------------------------
# plans and executors as plug-ins
# ---------------------------------------------------------------------------------------------------------------
def test_cell_plans_are_plain_data_with_absolute_paths(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    plans = plan_cells(SweepConfig.from_dict(tiny_config()), "relative/out")
    for plan in plans:
        assert all(Path(p).is_absolute() for p in (plan.directory, plan.record_path, plan.train["out"]))
        assert Path(plan.directory).is_relative_to(tmp_path / "relative" / "out" / "cells")
        shipped = json.loads(json.dumps(plan.to_dict()))
        assert CellPlan.from_dict(shipped) == plan
        assert plan.resources() == Resources(cpus=1.0, gpus=0.0)  # threads: 1 (default), device: cpu
    with pytest.raises(ConfigError, match="cell plan: expected the keys"):
        CellPlan.from_dict({"cell": {}})
    outcome = CellOutcome(plans[0].cell_id, "failed", error="RuntimeError: boom", wall_time_s=1.5)
    assert CellOutcome.from_dict(json.loads(json.dumps(outcome.to_dict()))) == outcome


JSON_EXECUTOR = '''
import json
import os
from concurrent.futures import ThreadPoolExecutor, as_completed

from kwta_robust.sweep.executors import Completion, Executor
from kwta_robust.sweep.plans import CellOutcome, CellPlan

SEEN = []


class JsonThreads(Executor):
    """ships every job as JSON to a thread and its outcome back (a stand-in for a remote backend)"""

    name = "json-threads"

    def map_unordered(self, fn, jobs, *, resources=None):
        def remote(text):
            return json.dumps(fn(CellPlan.from_dict(json.loads(text))).to_dict())

        with ThreadPoolExecutor(self.workers) as pool:
            futures = {pool.submit(remote, json.dumps(job.to_dict())): job for job in jobs}
            for future in as_completed(futures):
                SEEN.append(resources(futures[future]))
                yield Completion(futures[future], CellOutcome.from_dict(json.loads(future.result())))
'''


def test_an_executor_from_an_entry_point_runs_shipped_plans(finished_sweep, tmp_path, monkeypatch) -> None:
    (tmp_path / "fake_json_executor.py").write_text(JSON_EXECUTOR)
    info = tmp_path / "fake_json_executor-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-json-executor\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[kwta_robust.executors]\njson-threads = fake_json_executor:JsonThreads\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sweep.EXECUTORS.discover(refresh=True)  # as on the first lookup of a process started after the install
    try:
        _, reference, _ = finished_sweep
        out = tmp_path / "copy"
        shutil.copytree(reference, out)
        cfg = SweepConfig.from_dict(tiny_config(executor={"name": "json-threads", "workers": 1}))
        plans = plan_cells(cfg, out)
        Path(plans[3].record_path).unlink()  # the checkpoint stays: the executor's one job only evaluates
        train, evaluate = count_work(monkeypatch)
        result = run_sweep(cfg, out, progress=False)
        assert result.manifest["executor"] == {"name": "json-threads", "workers": 1}
        assert result.failed == [] and evaluate.calls == [plans[3].directory] and train.calls == []
        assert numbers(load_record(plans[3].record_path)) == numbers(
            load_record(reference / Path(plans[3].record_path).relative_to(out)))
        import fake_json_executor
        assert fake_json_executor.SEEN == [plans[3].resources()]
    finally:
        sweep.EXECUTORS.unregister("json-threads")
        sys.modules.pop("fake_json_executor", None)
    with pytest.raises(ConfigError, match="executor.name: unknown executor 'json-threads'"):
        SweepConfig.from_dict(tiny_config(executor={"name": "json-threads"}))


def test_a_damaged_manifest_is_replaced_or_refused_in_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                                capsys: pytest.CaptureFixture) -> None:
    """A sweep.json with the right format tag but fields of the wrong type: the next run starts a new manifest
    (records and checkpoints are kept), ``report --sweep`` says what is wrong — no traceback either way."""
    from kwta_robust.html_sweep import load_sweep
    from kwta_robust.sweep.manifest import read_manifest

    path = tmp_path / "sweep.json"
    for damaged in ({"cells": 5}, {"cells": ["x"]}, {"runs": "x"}, {"runs": -1}):
        path.write_text(json.dumps({"format": "kwta-robust-sweep", **damaged}))
        with caplog.at_level("WARNING"):
            assert read_manifest(path) == {}
        assert "is damaged" in caplog.text
        caplog.clear()
    path.write_text(json.dumps({"format": "kwta-robust-sweep", "cells": 5}))
    with pytest.raises(ConfigError, match="is not a sweep manifest \\(its cells are not a list\\); re-run the sweep"):
        load_sweep(tmp_path)
    assert main(["report", "--sweep", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "its cells are not a list" in err
