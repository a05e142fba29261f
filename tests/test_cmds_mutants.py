"""Mutation round on the commands' library side: the training recipe the tables show (:mod:`kwta_robust.training_text`)
and the quickstart's headline, checkpoint reuse, checks before training and resume (:mod:`kwta_robust.quickstart`).
Expected values are worked out by hand from the small records built here."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from kwta_robust import quickstart
from kwta_robust.checkpoint import save_checkpoint
from kwta_robust.config import load_config
from kwta_robust.errors import ConfigError
from kwta_robust.models import ModelSpec
from kwta_robust.results import Flag, load_record
from kwta_robust.training_text import any_adversarially_trained, beyond_training_notes, training_text
from tests.eval_helpers import make_record, make_result
from tests.test_cli_eval import write_config

FIXTURES = Path(__file__).parent / "fixtures" / "quickstart"


def trained(method: object, adversarial: object, results: list | None = None, label: str = "m"):
    rec = make_record(results or [make_result("pgd", [1, 0, 1, 1], eps=0.1)], label=label)
    rec.model["training"] = {"method": method, "training": {"adversarial": adversarial}}
    return rec


LINF = {"norm": "linf", "eps": 0.1, "steps": 7}


@pytest.mark.parametrize("method, adversarial, expected", [
    ("pgd", {"norm": "linf", "eps": "8/255", "steps": 7}, "pgd"),  # eps not a number: no budget to show
    ("pgd", {"norm": "linf", "eps": 0.1, "steps": "7"}, "pgd Linf 0.1"),  # steps not an integer: left out
    ("pgd", {"norm": "linf", "eps": 0.1, "steps": 0}, "pgd Linf 0.1, 0 steps"),
    ("pgd", {"norm": "linf", "eps": 0.1}, "pgd Linf 0.1"),
    ("trades", {**LINF, "trades_beta": 1.5}, "trades Linf 0.1, 7 steps, beta 1.5"),
    ("trades", {**LINF, "trades_beta": "six"}, "trades Linf 0.1, 7 steps"),
    ("fancy", LINF, "fancy"),  # not an adversarial method: its settings are not a training budget
    ("pgd", "not-a-mapping", "pgd"),
    (None, LINF, "?"),  # no method: unknown
    (3, LINF, "?"),
])
def test_training_text_shows_only_what_the_record_says(method: object, adversarial: object, expected: str) -> None:
    assert training_text(trained(method, adversarial)) == expected


def test_beyond_training_notes_tolerance_and_other_norms() -> None:
    points = [make_result("pgd", [1, 0, 1, 1], eps=e) for e in (0.1, 0.1000001, 0.1005)]
    points.append(make_result("pgd", [1, 0, 1, 1], eps=0.05, norm="l2"))  # another norm, even below 0.1
    notes = beyond_training_notes([trained("pgd", LINF, points, label="a")])
    # 1e-6 relative tolerance: 0.1000001 is the training budget, 0.1005 (0.5 % more) and any L2 point are beyond
    assert notes == ["[a] BEYOND THE TRAINING BUDGET at Linf 0.1005, L2 0.05: the model was adversarially trained "
                     "(pgd) at Linf 0.1 only; report those numbers as robustness it was not trained for"]
    assert beyond_training_notes([trained("standard", LINF, points), trained(None, LINF, points)]) == []


def test_a_training_column_only_for_adversarially_trained_models() -> None:
    assert not any_adversarially_trained([trained("standard", LINF), trained("fancy", LINF), make_record()])
    assert any_adversarially_trained([make_record(), trained("trades", LINF)])


def _two_points(gap_01: tuple[list, list], gap_03: tuple[list, list], label: str = "m"):
    results = []
    for eps, (pgd, bpda) in ((0.1, gap_01), (0.3, gap_03)):
        results += [make_result("pgd", pgd, eps=eps),
                    make_result("bpda-smooth", bpda, attack="bpda", kind="bpda", eps=eps, position=1, cumulative=True)]
    return make_record(results, label=label)


# pgd 80 %, the cascade's worst case 20 % (samples 0-5 broken by BPDA, 8-9 by PGD)
WIDE = ([1] * 8 + [0] * 2, [0] * 6 + [1] * 2 + [-1] * 2)
# pgd 100 %, worst case 80 %
NARROW = ([1] * 10, [0] * 2 + [1] * 8)


def test_headline_picks_the_threat_point_where_plain_and_worst_differ_most() -> None:
    assert quickstart.headline([_two_points(WIDE, NARROW)]) == [
        "m: pgd 80.0% vs worst case 20.0% at Linf 0.1 — no masking flags"]
    assert quickstart.headline([_two_points(NARROW, WIDE)]) == [
        "m: pgd 80.0% vs worst case 20.0% at Linf 0.3 — no masking flags"]
    # a tie: the larger epsilon
    assert quickstart.headline([_two_points(WIDE, WIDE)]) == [
        "m: pgd 80.0% vs worst case 20.0% at Linf 0.3 — no masking flags"]
    assert quickstart.headline([make_record(label="empty")]) == []
    partial = _two_points(NARROW, WIDE)  # a point without its worst case yet (a partial record): left out
    partial.worst_case = [w for w in partial.worst_case if w.eps != 0.3]
    assert quickstart.headline([partial]) == ["m: pgd 100.0% vs worst case 80.0% at Linf 0.1 — no masking flags"]


def test_headline_counts_only_critical_flags_and_the_rerun_budget_check_at_its_point() -> None:
    rec = _two_points(WIDE, NARROW)
    rerun = {"source": "rerun", "attack": "bpda-smooth", "factor": 3, "drop_lower_bound": 0.05}
    rec.diagnostics = [
        Flag("bpda-no-layer", "warning", "...", {}),
        Flag("budget-still-lowering", "warning", "...", {**rerun, "norm": "l2", "eps": 0.1}),  # another norm
        Flag("budget-still-lowering", "warning", "...", {**rerun, "source": "ladder", "norm": "linf", "eps": 0.1}),
        Flag("budget-checked", "info", "...", {**rerun, "norm": "linf", "eps": 0.1}),  # not still lowering
    ]
    assert quickstart.headline([rec]) == ["m: pgd 80.0% vs worst case 20.0% at Linf 0.1 — no masking flags"]


def test_headline_of_the_shipped_quickstart_records() -> None:
    """Hand-read from the fixtures: kwta's gap is 67.5-5.0 at 0.1 (20.0-0.0 at 0.3), relu's 71.5-66.5 at 0.1
    (0.5-0.0 at 0.3); relu's bpda-no-layer is a warning, not a masking flag."""
    records = [load_record(FIXTURES / f"{name}.json") for name in ("kwta", "relu")]
    assert quickstart.headline(records) == [
        "kwta: pgd 67.5% vs worst case 5.0% at Linf 0.1 — flags: adaptive-beats-pgd",
        "relu: pgd 71.5% vs worst case 66.5% at Linf 0.1 — flags: adaptive-beats-pgd",
    ]


def _checkpoint_trained_with(path: Path, training: dict) -> None:
    spec = ModelSpec.from_args("mlp", activation="relu", num_classes=10, in_channels=1, input_size=28, hidden=[4])
    torch.manual_seed(0)
    save_checkpoint(path, spec.build(), spec, {"dataset": "mnist5k", "data_split_seed": 0, "training": training})


@pytest.fixture()
def fake_training(monkeypatch: pytest.MonkeyPatch) -> list:
    calls: list = []

    def run_training(cfg):
        calls.append(cfg)
        return SimpleNamespace(checkpoint=cfg.out, test_accuracy=0.5)

    monkeypatch.setattr(quickstart, "run_training", run_training)
    return calls


def test_ensure_trained_reuses_only_a_checkpoint_of_the_same_recipe(tmp_path: Path, fake_training: list) -> None:
    cfg = quickstart.training_configs(tmp_path, 2, "cpu", 1)["kwta"]
    path = Path(cfg.out)
    # another out path and device (a moved folder, another machine): the same weights' meaning, reused
    _checkpoint_trained_with(path, {**cfg.to_dict(), "out": "elsewhere/kwta-cnn.pt", "device": "cuda"})
    assert quickstart.ensure_trained(cfg) == (path, False) and fake_training == []
    assert quickstart.ensure_trained(cfg, retrain=True) == (path, True) and fake_training == [cfg]
    for key, value in (("epochs", 3), ("threads", 2), ("seed", 1)):
        _checkpoint_trained_with(path, {**cfg.to_dict(), key: value})
        assert quickstart.ensure_trained(cfg) == (path, True), key
    assert len(fake_training) == 4
    path.write_bytes(b"not a checkpoint")
    assert quickstart.ensure_trained(cfg) == (path, True) and len(fake_training) == 5


def test_the_suite_is_checked_before_any_training(tmp_path: Path) -> None:
    digits = load_config(write_config(tmp_path / "d.yaml", dataset="digits"))
    with pytest.raises(ConfigError) as caught:
        quickstart.check_before_training(digits)
    assert str(caught.value) == ("--config: dataset 'digits', but quickstart trains its models on mnist5k; use a "
                                 "suite with dataset: mnist5k")
    too_many = load_config(write_config(tmp_path / "m.yaml", n_examples=10 ** 6))
    with pytest.raises(ConfigError, match="n_examples"):
        quickstart.check_before_training(too_many)


@pytest.mark.parametrize("trained_now, resume", [((False, False), True), ((True, False), False),
                                                  ((False, True), False)])
def test_evaluations_resume_only_when_no_model_was_trained_now(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               trained_now: tuple, resume: bool) -> None:
    seen: dict = {}
    flags = iter(trained_now)
    monkeypatch.setattr(quickstart, "check_before_training", lambda cfg: None)
    monkeypatch.setattr(quickstart, "ensure_trained", lambda cfg, retrain: (Path(cfg.out), next(flags)))
    monkeypatch.setattr(quickstart, "load_model", lambda path, device, label: label)
    monkeypatch.setattr(quickstart, "compare_models", lambda models, cfg, out, **kw: seen.update(kw, models=models))
    monkeypatch.setattr(quickstart, "write_comparison", lambda *a, **kw: None)
    monkeypatch.setattr(quickstart, "headline", lambda records: [])
    cfg = load_config(quickstart.default_config_path(), device="cpu")
    quickstart.run_quickstart(cfg, tmp_path, epochs=1, device="cpu")
    assert seen["resume"] is resume and seen["models"] == ["kwta", "relu"] and seen["transfer"] is True
