"""Which record at an output path a run resumes, and what it does with one it cannot (kwta_robust.resume): refuse
naming the command's own options, or set it aside in superseded/ — and the runner applying that to a checkpoint
replaced behind the record's back."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytest
import torch

from eval_helpers import SEED_ONLY_HASH, make_record
from kwta_robust.errors import ConfigError
from kwta_robust.evaluate import evaluate
from kwta_robust.results import load_record, save_record
from kwta_robust.resume import StalePolicy, resumable_record, stale_reason
from test_evaluate import config, linear_problem


def fresh_record():
    record = make_record(n=4)
    record.model["state_sha256"] = "weights-a"
    record.provenance["transfer_sources"] = {"relu": "weights-r"}
    return record


@pytest.mark.parametrize(("change", "reason"), [
    (lambda r: setattr(r, "config_hash", "other"), "holds a record of another config"),
    (lambda r: r.model.update(state_sha256="weights-b"), "holds a record of other model weights"),
    (lambda r: r.provenance.update(transfer_sources={}), "holds a record of other transfer sources"),
    (lambda r: r.dataset.update(indices=[0, 1, 2, 5]), "holds a record of other samples"),
    (lambda r: (setattr(r, "config_hash", "other"), r.model.update(state_sha256="x")),
     "holds a record of another config and other model weights"),
    (lambda r: setattr(r, "schema_version", 2), "was written with record schema 2 (other attack seeds)"),
])
def test_stale_reason_names_what_differs(change, reason) -> None:
    fresh = fresh_record()
    old = copy.deepcopy(fresh)
    assert stale_reason(old, fresh) is None
    change(old)
    assert stale_reason(old, fresh) == reason


def test_resumable_record_resumes_refuses_or_sets_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fresh, path = fresh_record(), tmp_path / "eval" / "kwta.json"
    path.parent.mkdir()
    assert resumable_record(path, fresh, StalePolicy()) is None  # nothing there
    save_record(fresh, path)
    assert resumable_record(path, fresh, StalePolicy()).to_dict() == fresh.to_dict()

    old = copy.deepcopy(fresh)
    old.model["state_sha256"] = "weights-b"  # the checkpoint was replaced since
    save_record(old, path)
    with pytest.raises(ConfigError) as refused:
        resumable_record(path, fresh, StalePolicy("--out-dir", "--retrain"))
    assert str(refused.value) == (f"--out-dir: {path} holds a record of other model weights; use a new --out-dir or "
                                  "--retrain")
    assert load_record(path).model["state_sha256"] == "weights-b"  # refused, left where it was

    with caplog.at_level(logging.WARNING):
        assert resumable_record(path, fresh, StalePolicy(set_aside=True)) is None
    moved = path.parent / "superseded" / f"kwta.{SEED_ONLY_HASH[:12]}.json"
    assert not path.exists() and load_record(moved).model["state_sha256"] == "weights-b"
    assert "holds a record of other model weights; moved to" in caplog.text

    save_record(old, path)  # set aside again, same config hash: kept beside the first, not over it
    assert resumable_record(path, fresh, StalePolicy(set_aside=True)) is None
    assert load_record(path.parent / "superseded" / f"kwta.{SEED_ONLY_HASH[:12]}.2.json").to_dict() == old.to_dict()

    save_record(fresh, path)  # not resuming: refusing leaves it to be overwritten, setting aside moves it
    assert resumable_record(path, fresh, StalePolicy(), resume=False) is None and path.exists()
    assert resumable_record(path, fresh, StalePolicy(set_aside=True), resume=False) is None and not path.exists()
    assert load_record(path.parent / "superseded" / f"kwta.{SEED_ONLY_HASH[:12]}.3.json").to_dict() == fresh.to_dict()

    path.write_text('{"schema_version": 99}')  # a record of a schema this version cannot read
    with pytest.raises(ConfigError, match=r"^--out: .* cannot be resumed \(.*\); use a new --out or --no-resume$"):
        resumable_record(path, fresh, StalePolicy())
    assert resumable_record(path, fresh, StalePolicy(), resume=False) is None and path.exists()  # to be overwritten

    for foreign in ('{"name": "my data"}', "{not json", "PK\x03\x04 a zip"):  # never overwritten, resuming or not
        path.write_text(foreign)
        for resume in (True, False):
            with pytest.raises(ConfigError, match=r"^--out: .* exists and is not a kwta-robust record \(nothing was "
                                                  r"written to it\); use another --out, or move the file away$"):
                resumable_record(path, fresh, StalePolicy(), resume=resume)
        assert path.read_text() == foreign
    assert resumable_record(path, fresh, StalePolicy(set_aside=True)) is None  # the quickstart moves it away
    assert (path.parent / "superseded" / "kwta.unreadable.json").read_text() == "PK\x03\x04 a zip"


def test_a_replaced_model_is_refused_or_evaluated_afresh(tmp_path: Path) -> None:
    """The runner's own resume test (weights, not only the config): a record of other weights at ``out_path`` is
    refused by default, naming the option; with ``set_aside`` it is kept in superseded/ and the run starts over."""
    model, data = linear_problem(40)
    cfg = config(threats=[{"norm": "linf", "epsilons": [0.05]}])
    out = tmp_path / "rec.json"
    first = evaluate(model, data, cfg, {}, out_path=out, progress=False)
    with torch.no_grad():
        model.b += 0.5  # retrained behind the record's back
    with pytest.raises(ConfigError, match="holds a record of other model weights; use a new --out or --no-resume"):
        evaluate(model, data, cfg, {}, out_path=out, progress=False)
    again = evaluate(model, data, cfg, {}, out_path=out, progress=False, stale=StalePolicy(set_aside=True))
    assert "resumed_at" not in again.provenance and again.model["state_sha256"] != first.model["state_sha256"]
    kept = load_record(tmp_path / "superseded" / f"rec.{first.config_hash[:12]}.json")
    assert kept.model["state_sha256"] == first.model["state_sha256"] and kept.results == first.results
