"""Mutation round on ``kwta_robust.dry_run`` and ``kwta_robust.protocol``: the plan's numbers and notes as a user
reads them (hand-worked texts), and the units a dry run says a run keeps of a record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from eval_helpers import make_record, make_result
from kwta_robust.attack_plan import noise_seed
from kwta_robust.cli import main
from kwta_robust.config import EvalConfig, load_config
from kwta_robust.dry_run import DryRun, ModelPlan, RecordState, UnitPlan, plan_notes, plan_table, record_text
from kwta_robust.dry_run import dry_run_compare, dry_run_one
from kwta_robust.errors import ConfigError
from kwta_robust.loading import load_model
from kwta_robust.protocol import NO_LAYER, NOT_RECORDED, points_text, protocol_table, render_protocol
from kwta_robust.protocol import settings_text, unit_settings_text
from kwta_robust.shards import Sharding
from test_dry_run import write_checkpoint, write_config

CONFIG = {"dataset": "mnist5k", "batch_size": 3, "seed": 7, "attacks": [{"attack": "pgd"}],
          "threats": [{"norm": "linf", "epsilons": [0.1]}, {"norm": "l2", "epsilons": [0.5]}],
          "noise": [{"kind": "numenta", "levels": [0.05, 0.5], "draws": 3, "params": {"value": 0.5}},
                    {"kind": "numenta", "levels": [0.1]}]}


def model_plan(label: str, state: RecordState | None = None, units: list[UnitPlan] | None = None) -> ModelPlan:
    """A model's plan as a dry run builds it: 12 of 1,000 MNIST samples, a randomized model of 12,345 parameters."""
    record = make_record(label=label)
    record.dataset = {"name": "mnist5k", "split": "test", "n": 12, "sample_seed": 3, "num_classes": 10,
                      "input_shape": [1, 28, 28]}
    record.model = {"architecture": "mlp", "num_params": 12345, "parameter_dtypes": ["float32"],
                    "source": f"{label}.pt"}
    record.provenance = {"randomness": {"randomized": True, "draws": 5}, "device": "cpu", "layout": "contiguous"}
    return ModelPlan(label, record, units or [], state or RecordState(Path(f"{label}.json")))


def unit(label: str, points: int, resumed: int | None, bpda_layers: dict | None = None) -> UnitPlan:
    eps = [("linf", "0.1"), ("l2", "0.5")][:points]
    return UnitPlan(label, "pgd", "white-box", tuple(eps), {"steps": 4}, {"steps": 4}, bpda_layers=bpda_layers,
                    resumed=resumed)


def test_the_notes_of_a_sharded_randomized_plan() -> None:
    cfg = EvalConfig.from_dict(CONFIG)
    plan = DryRun([model_plan("kwta")], cfg, 1000, {"record": "kwta.json", "report": "kwta.html"}, Sharding(2))
    notes = plan_notes(plan)
    assert notes[1] == "data: mnist5k (test), 12 of 1,000 samples (sample seed 3), 10 classes, inputs 1×28×28"
    assert notes[2] == "threats: Linf 0.1; L2 0.5; cascade mode, batch size 3, seed 7"
    assert notes[3] == ("model kwta: mlp, 12,345 parameters (float32) on cpu, from kwta.pt; randomized: every "
                        "verdict the plurality of 5 draws; memory layout contiguous")
    assert "record kwta.json: none yet; every unit runs" in notes
    # 12 samples in batches of 3: 4 batches, 2 ranges per shard for 2 shards
    assert ("shards: 2 workers of the process executor; the samples cut into the ranges 0:3, 3:6, 6:9, 9:12"
            in notes)
    assert "noise probe numenta [1]: levels 0.05, 0.5, 3 draws per level, value 0.5" in notes
    assert "noise probe numenta [2]: levels 0.1, 1 draw per level" in notes
    assert notes[-3] == "the run writes: record kwta.json; report kwta.html"
    two = plan_notes(DryRun([model_plan("kwta"), model_plan("relu")], cfg, 1000))
    assert two[0] == ("dry run: nothing was attacked or written; the config, the models (loaded as the run loads "
                      "them), the data, the models' output on the data, the layer probe, the BPDA layers and every "
                      "attack of the plan were checked as the run checks them")


def test_the_record_notes_count_what_the_run_keeps_and_runs() -> None:
    path = Path("r.json")
    units = [unit("pgd", 2, 1), unit("fgsm", 2, 1)]  # 4 units, 2 kept
    assert record_text(model_plan("m", RecordState(path, "partial", finished=5, noise=1), units), 2) == (
        "record r.json: a partial record; 2 of 4 attack units finished and resumed, 2 to run (3 finished with "
        "another seed run again); 1 of 2 noise probes kept")
    assert record_text(model_plan("m", RecordState(path, "partial", finished=2), units), 0) == (
        "record r.json: a partial record; 2 of 4 attack units finished and resumed, 2 to run")
    assert record_text(model_plan("m", RecordState(path, parts=1), units), 0) == (
        "record r.json: 1 finished parts of an interrupted sharded run in r.json.parts, resumed by their jobs")
    error = ConfigError("r.json: in use")
    assert record_text(model_plan("m", RecordState(path, error=error), units), 0) == (
        "record r.json: the run would stop before its first attack: r.json: in use")


def test_a_later_model_stops_at_the_first_blocked_record() -> None:
    blocked = model_plan("a", RecordState(Path("a.json"), "complete", finished=4, error=ConfigError("a: other")))
    fine = model_plan("b")
    last = model_plan("c", RecordState(Path("c.json"), error=ConfigError("c: other")))
    assert record_text(last, 0, [fine, blocked]) == (
        "record c.json: the run stops at a's record first, and would stop here too: c: other")
    assert record_text(last, 0, [fine, model_plan("d")]) == (
        "record c.json: the run would evaluate b, d and write their records, then stop before attacking c: c: other")


def test_the_plan_rows_give_units_then_resumed_and_no_layer_only_for_an_empty_bpda_target() -> None:
    cfg = EvalConfig.from_dict(CONFIG)
    units = [unit("pgd", 2, 1), unit("bpda", 1, None, bpda_layers={}), unit("bpda2", 1, 0, bpda_layers={"n": "native"})]
    table = plan_table(DryRun([model_plan("kwta", units=units)], cfg, 1000))
    assert table.headers == ["model", "label", "attack", "kind", "threats", "seed", "units", "resumed", "settings"]
    rows = [[c.value for c in row] for row in table.rows]
    assert rows == [["kwta", "pgd", "pgd", "white-box", "Linf 0.1; L2 0.5", 7, 2, 1, "steps 4"],
                    ["kwta", "bpda", "pgd", "white-box", "Linf 0.1", 7, 1, None,
                     "acts on no layer, so only its first stage's inner attack will run, unchanged; steps 4"],
                    ["kwta", "bpda2", "pgd", "white-box", "Linf 0.1", 7, 1, 0, "steps 4"],
                    # the configured noise probes after the attacks, with the seed of their draws (no record: resumed
                    # None)
                    ["kwta", "noise numenta [1]", "numenta", "noise", "2 levels", 7, 1, None,
                     f"levels [0.05, 0.5], draws 3, value 0.5, seed {noise_seed(7, cfg.noise[0])}"],
                    ["kwta", "noise numenta [2]", "numenta", "noise", "1 level", 7, 1, None,
                     f"levels [0.1], draws 1, value 1, seed {noise_seed(7, cfg.noise[1])}"]]


SANITY = {"sanity": {"norm": "linf", "eps": 1, "attack": "pgd", "params": {"steps": 1}}}


@pytest.fixture()
def complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> tuple[Path, Path]:
    """A complete record of pgd and bpda at Linf 0.1 and 8/255, a pgd sanity attack and a numenta noise probe."""
    monkeypatch.chdir(tmp_path)
    ckpt, cfg = write_checkpoint(tmp_path / "kwta.pt"), write_config(tmp_path / "c.yaml", diagnostics=SANITY)
    assert main(["evaluate", str(ckpt), "--config", str(cfg), "--out", "r.json", "--no-progress"]) == 0
    capsys.readouterr()
    return ckpt, cfg


def units_of(plan: DryRun) -> list[tuple[str, int, int | None]]:
    return [(u.label, u.units, u.resumed) for u in plan.models[0].units]


def test_a_complete_record_is_resumed_whole_with_its_sanity_unit_and_noise_probe(complete) -> None:
    ckpt, cfg = complete
    plan = dry_run_one(load_config(cfg), checkpoint=str(ckpt), out="r.json")
    assert units_of(plan) == [("pgd", 2, 2), ("bpda", 2, 2), ("sanity-pgd", 1, 1)]
    state = plan.models[0].state
    assert (state.status, state.finished, state.noise, state.error) == ("complete", 5, 1, None)  # 2 + 2 + sanity
    assert record_text(plan.models[0], 1) == ("record r.json: a complete record; 5 of 5 attack units finished and "
                                              "resumed, 0 to run; 1 of 1 noise probes kept")
    over = dry_run_one(load_config(cfg), checkpoint=str(ckpt), out="r.json", resume=False)
    assert units_of(over) == [("pgd", 2, None), ("bpda", 2, None), ("sanity-pgd", 1, None)]
    assert (over.models[0].state.status, over.models[0].state.finished) == ("complete", 5)


def test_a_unit_of_another_seed_runs_again_with_the_later_units_of_its_cascade(complete) -> None:
    ckpt, cfg = complete
    data = json.loads(Path("r.json").read_text())
    first = next(r for r in data["results"] if r["label"] == "pgd" and r["eps"] == 0.1)
    first["seed"] += 1  # written by a version that derived the seed otherwise
    Path("r.json").write_text(json.dumps(data))
    plan = dry_run_one(load_config(cfg), checkpoint=str(ckpt), out="r.json")
    # at Linf 0.1 pgd runs again, and bpda after it on pgd's survivors; at 8/255 both are kept
    assert units_of(plan) == [("pgd", 2, 1), ("bpda", 2, 1), ("sanity-pgd", 1, 1)]
    assert record_text(plan.models[0], 1) == (
        "record r.json: a complete record; 3 of 5 attack units finished and resumed, 2 to run (2 finished with "
        "another seed run again); 1 of 1 noise probes kept")


def test_compare_plans_the_transfer_attack_s_inner_params_and_its_table(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    kwta, relu = write_checkpoint(tmp_path / "kwta.pt"), write_checkpoint(tmp_path / "relu.pt", activation="relu")
    cfg = write_config(tmp_path / "c.yaml", attacks=[{"attack": "pgd", "params": {"steps": 1}}], noise=[],
                       transfer={"attack": "pgd", "params": {"steps": 2}})
    models = [load_model(str(p), torch.device("cpu")) for p in (kwta, relu)]
    plan = dry_run_compare(models, load_config(cfg), Path("cmp"))
    transfer = [(m.label, u.source, u.params) for m in plan.models for u in m.units if u.label == "transfer"]
    assert transfer == [("kwta", "relu", {"inner": "pgd", "inner_params": {"steps": 2}}),
                        ("relu", "kwta", {"inner": "pgd", "inner_params": {"steps": 2}})]
    assert plan.outputs == {"records": "cmp", "table": "cmp/compare.md", "report": "cmp/compare.html"}


def test_a_sharded_run_of_a_complete_record_neither_counts_stray_parts_nor_keeps_the_layer_probe(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    ckpt, cfg = write_checkpoint(tmp_path / "kwta.pt"), write_config(tmp_path / "c.yaml", batch_size=6, noise=[])
    assert main(["evaluate", str(ckpt), "--config", str(cfg), "--out", "r.json", "--no-progress"]) == 0
    capsys.readouterr()
    data = json.loads(Path("r.json").read_text())
    assert data["detection"]["n"] == 12
    data["detection"]["n"] = 99  # the layer probe as the record keeps it, told apart from a fresh one (12 inputs)
    Path("r.json").write_text(json.dumps(data))
    Path("r.json.parts").mkdir()
    Path("r.json.parts/0.json").write_text("{}")
    plan = dry_run_one(load_config(cfg), checkpoint=str(ckpt), out="r.json", sharding=Sharding(2))
    assert plan.models[0].state.parts == 0 and plan.models[0].record.detection["n"] == 12
    assert record_text(plan.models[0], 0) == (
        "record r.json: a complete record; 4 of 4 attack units finished and resumed, 0 to run")
    Path("r.json.parts/0.json").unlink()
    Path("r.json.parts/notes.txt").write_text("not a part")
    assert dry_run_one(load_config(cfg), checkpoint=str(ckpt), out="r.json").models[0].record.detection["n"] == 99
    Path("r.json").unlink()  # no record, and no finished part: only a stray file beside where the parts go
    fresh = dry_run_one(load_config(cfg), checkpoint=str(ckpt), out="r.json", sharding=Sharding(2)).models[0]
    assert fresh.state.parts == 0 and record_text(fresh, 0) == "record r.json: none yet; every unit runs"


def test_settings_text_edge_cases_read_as_written() -> None:
    assert settings_text(None, {}) == f"no params given ({NOT_RECORDED})"
    assert settings_text({}) == "no settings"
    assert settings_text({"inner": [{"attack": "apgd-ce"}, {"attack": "pgd"}]}) == "inner apgd-ce/pgd: defaults"
    assert settings_text({"eps_list": [], "_note": "n", "_complete": True}) == "eps list []"
    assert settings_text({"cfg": {"inner": [{"attack": "a"}, {"attack": "b"}], "t": [1, 2]}}) == (
        "cfg (t [1, 2]; inner a/b: defaults)")
    assert settings_text({"x": 0.1 + 0.2, "y": None, "z": False, "m": {}}) == "x 0.3, y none, z false, m (none)"
    assert points_text([("linf", "0.1"), ("l2", "0.5"), ("linf", "0.1"), ("linf", "0.3")]) == "Linf 0.1, 0.3; L2 0.5"
    assert unit_settings_text({"steps": 1}, None, no_layer=True, source="relu") == (
        f"source relu; {NO_LAYER}; steps 1")


def result(label: str, flags: list[int], *, queries: int | None, wall: float, **kw):
    r = make_result(label, flags, **kw)
    r.queries, r.wall_time_s = queries, wall
    return r


def test_protocol_rows_group_order_count_and_round_as_hand_worked() -> None:
    results = [result("b", [1, 0, 1], queries=100, wall=0.123, position=1, eps=0.1),
               result("a", [1, 1, 0], queries=None, wall=0.456, position=0, eps=0.1),
               result("a", [1, 0, 0], queries=10, wall=0.001, position=0, eps=0.3),
               result("b", [1, 1, 1], queries=None, wall=0.456, position=1, eps=0.3, bpda_layers={}),
               result("c", [1, 1, 1], queries=None, wall=0.0, position=2, params={"steps": 1}),
               result("c", [1, 1, 1], queries=None, wall=0.0, position=2, eps=0.1,
                      params={"steps": 2})]
    results[0].bpda_layers = {"n": "native"}
    record = make_record(results, n=3)
    record.provenance = {"seed": 11}
    rows = [[c.value for c in row] for row in protocol_table([record]).rows]
    # a: 10 queries over the 3 samples attacked at 0.3 (0.1 counted none); b: 100 / 3; c: no query counted
    assert [row[1:8] for row in rows] == [
        ["a", "a", "white-box", "Linf 0.1, 0.3", 11, 3.3, 0.46],
        ["b", "b", "white-box", "Linf 0.1, 0.3", 11, 33.3, 0.58],
        ["c", "c", "white-box", "Linf 0.3", 11, None, 0.0],
        ["c", "c", "white-box", "Linf 0.1", 11, None, 0.0]]
    assert rows[1][8].startswith(NO_LAYER) and rows[3][8] == f"steps 2 ({NOT_RECORDED})"  # one label, 2 params: 2 rows
    with pytest.raises(ConfigError, match="^table --protocol: no records given$"):
        protocol_table([])


def test_the_md_list_keeps_apart_one_label_s_different_settings() -> None:
    kwta = make_record([result("pgd", [1, 0], queries=1, wall=1.0, params={"steps": 1})], label="kwta")
    relu = make_record([result("pgd", [1, 0], queries=1, wall=1.0, params={"steps": 2})], label="relu")
    text = render_protocol([kwta, relu]).replace("\n  ", " ")
    assert f"- pgd (kwta): steps 1 ({NOT_RECORDED})" in text and f"- pgd (relu): steps 2 ({NOT_RECORDED})" in text
