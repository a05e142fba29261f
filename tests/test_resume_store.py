"""``--save-adversarial`` on a resumed run: the units an earlier run finished without the store are attacked again
for their inputs (the same seeds: the same flags, their results kept), so the store holds every unit of the record.
Before, they were kept without being attacked and the store silently lacked them."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import torch

from kwta_robust.adversarial_store import AdversarialStore, parts_folder, unit_key
from kwta_robust.config import EvalConfig
from kwta_robust.data import TensorData
from kwta_robust.dry_run import plan_model, record_text
from kwta_robust.errors import ConfigError
from kwta_robust.evaluate import evaluate
from kwta_robust.loading import ModelForEval, model_info
from kwta_robust.results import EvalRecord, load_record
from kwta_robust.resume import StalePolicy
from test_adversarial_store import _clean, _outcome
from test_evaluate import config, linear_problem, register  # noqa: F401  (register: a fixture)
from test_resume_samples import Stopping, stopping  # noqa: F401  (stopping: a fixture)

UNITS = [unit_key(label, "linf", eps) for eps in (0.01, 0.03) for label in ("pgd", "test-stopping")]


def problem() -> tuple[ModelForEval, TensorData, EvalConfig]:
    """PGD then the test attack in a cascade at Linf 0.01 and 0.03, on a linear model (PGD breaks some samples)."""
    model, data = linear_problem(32)
    cfg = config(threats=[{"norm": "linf", "epsilons": [0.01, 0.03]}],
                 attacks=[{"attack": "pgd", "params": {"steps": 5}}, "test-stopping"],
                 diagnostics={"enabled": False})
    return ModelForEval(model, model_info(model, "linear", "test"), "linear", {}), data, cfg


def run(out: Path | None, adv: Path | None, stop: float | None = None) -> EvalRecord:
    """:func:`problem` evaluated; ``stop``: killed at that eps."""
    loaded, data, cfg = problem()
    Stopping.stop["at"], Stopping.calls[:] = stop, []
    return evaluate(loaded.model, data, cfg, loaded.info, out_path=out, save_adversarial=adv, progress=False)


def numbers(record: EvalRecord) -> list[Any]:
    return [record.clean_flags, [(r.key, r.flags, r.robust.correct) for r in record.results],
            [(w.norm, w.eps, w.first_broken_by) for w in record.worst_case]]


def assert_store_is_the_reference(adv: Path, ref: Path, record: EvalRecord) -> None:
    saved, expected = torch.load(adv, weights_only=True), torch.load(ref, weights_only=True)
    assert sorted(k.removeprefix("adv/") for k in saved if k.startswith("adv/")) == sorted(UNITS)
    for key in UNITS:
        for kind in ("adv", "pred", "flags"):
            assert torch.equal(saved[f"{kind}/{key}"], expected[f"{kind}/{key}"]), (kind, key)
        label, _, eps = key.split("|")
        assert saved[f"flags/{key}"].tolist() == record.result(label, "linf", float(eps)).flags


def test_units_finished_without_the_store_are_attacked_again_for_it(tmp_path: Path, stopping: Any) -> None:
    ref_adv = tmp_path / "ref.pt"
    reference = run(None, ref_adv)  # uninterrupted, with the store
    out, adv = tmp_path / "rec.json", tmp_path / "adv.pt"
    with pytest.raises(KeyboardInterrupt):
        run(out, None, stop=0.03)
    partial = load_record(out)
    assert [r.key for r in partial.results] == [("pgd", "linf", 0.01), ("test-stopping", "linf", 0.01),
                                                ("pgd", "linf", 0.03)]
    done = run(out, adv)
    assert done.status == "complete" and numbers(done) == numbers(reference)
    assert stopping.calls.count(0.01) == 1  # the test attack at 0.01 ran again (one batch) for its inputs
    for before in partial.results:  # their results are the first run's (its wall times), not the re-run's
        assert asdict(done.result(before.label, before.norm, before.eps)) == asdict(before)
    assert_store_is_the_reference(adv, ref_adv, done)


def test_a_run_with_the_store_resumed_without_it_then_with_it(tmp_path: Path, stopping: Any) -> None:
    ref_adv = tmp_path / "ref.pt"
    reference = run(None, ref_adv)
    out, adv = tmp_path / "rec.json", tmp_path / "adv.pt"
    with pytest.raises(KeyboardInterrupt):
        run(out, adv, stop=0.03)
    parts = sorted(p.name for p in parts_folder(adv).iterdir())
    assert parts == ["clean.pt", "unit-000000.pt", "unit-000001.pt", "unit-000002.pt"]
    done = run(out, None)  # resumed without the store: it completes the record and leaves the store's parts alone
    assert done.status == "complete" and numbers(done) == numbers(reference)
    assert sorted(p.name for p in parts_folder(adv).iterdir()) == parts and not adv.exists()
    again = run(out, adv)  # the complete record: only test-stopping at 0.03 (finished without the store) re-attacked
    assert stopping.calls == [0.03] and numbers(again) == numbers(reference)
    assert not parts_folder(adv).exists()
    assert_store_is_the_reference(adv, ref_adv, again)


def test_an_attack_that_breaks_other_samples_when_run_again_is_refused(tmp_path: Path) -> None:
    x, y, idx, pred = _clean()
    store = AdversarialStore(tmp_path / "adv.pt", x, y, idx, pred, resume=True)
    key = unit_key("pgd", "linf", 0.1)
    with pytest.raises(ConfigError) as refused:
        store.put_again(key, _outcome(x, 0.1), torch.tensor([1, 1, 0, 1, 1, 0], dtype=torch.int8), [1, 1, 1, 1, 1, 0])
    assert str(refused.value) == (
        "--save-adversarial: pgd|linf|0.1 was finished by an earlier run without --save-adversarial; attacked again "
        "for its inputs, it gave other flags than the record's on 1 sample(s) (a model or attack that is not "
        "deterministic, or another torch thread count); re-run with --no-resume to attack every unit afresh")
    assert not store.has(key) and not parts_folder(tmp_path / "adv.pt").exists()  # nothing saved
    store.put_again(key, _outcome(x, 0.1), torch.tensor([1, 1, 0, 1, 1, 0], dtype=torch.int8), [1, 1, 0, 1, 1, 0])
    assert store.has(key)


def test_the_dry_run_counts_the_units_attacked_again_for_the_store(tmp_path: Path, stopping: Any) -> None:
    out, adv = tmp_path / "rec.json", tmp_path / "adv.pt"
    with pytest.raises(KeyboardInterrupt):
        run(out, None, stop=0.03)  # three units finished without the store
    loaded, data, cfg = problem()
    plan = plan_model(loaded, data, cfg, out, {}, resume=True, strict=True, stale=StalePolicy(),
                      locks={"--out": out}, store=adv)
    assert plan.state.refill == 3 and plan.state.error is None
    assert record_text(plan, 0) == (
        f"record {out}: a partial record; 3 of 4 attack units finished and resumed, 1 to run; 3 of the resumed "
        "attacked again for their --save-adversarial inputs (finished without it; their results kept)")
    without = plan_model(loaded, data, cfg, out, {}, resume=True, strict=True, stale=StalePolicy(),
                         locks={"--out": out})
    assert without.state.refill == 0 and "--save-adversarial" not in record_text(without, 0)
    assert not adv.exists() and not parts_folder(adv).exists()  # nothing written


def test_the_dry_run_counts_only_the_units_the_store_lacks(tmp_path: Path, stopping: Any) -> None:
    """The store's own units (:func:`kwta_robust.adversarial_store.check_store`'s keys) are not attacked again: a
    run interrupted with the store (three units in its parts), then completed without it, lacks only the fourth."""
    out, adv = tmp_path / "rec.json", tmp_path / "adv.pt"
    with pytest.raises(KeyboardInterrupt):
        run(out, adv, stop=0.03)
    assert run(out, None).status == "complete"
    parts = sorted(p.name for p in parts_folder(adv).iterdir())
    loaded, data, cfg = problem()
    plan = plan_model(loaded, data, cfg, out, {}, resume=True, strict=True, stale=StalePolicy(),
                      locks={"--out": out}, store=adv)
    assert plan.state.refill == 1 and plan.state.error is None  # test-stopping at 0.03, as the run re-attacks
    assert record_text(plan, 0).endswith("1 of the resumed attacked again for their --save-adversarial inputs "
                                         "(finished without it; their results kept)")
    assert sorted(p.name for p in parts_folder(adv).iterdir()) == parts and not adv.exists()  # only read
