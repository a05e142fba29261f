"""Fuzzing the ``--save-adversarial`` store (kwta_robust/adversarial_store.py) end to end: every claim of a saved
file re-checked against its record and model, and the inputs that broke the rule before this round.

Before: a resumed run extended an earlier store with the same clean inputs whatever its units were, so a store
written by another run (another config, another model, another --out) kept that run's units beside this record's
(units the record does not hold, with another model's predictions); a store edited on disk (an input moved out of
its eps ball, other flags or predictions) or with a flipped bit (torch.load checks no CRC) was joined into the new
file silently; an interrupted run's part of a unit no record holds was joined too; ``adv.pt.parts`` being a file
raised NotADirectoryError; and ``kwta_robust.evaluate.evaluate(save_adversarial=...)`` raised TypeError/ValueError
for a value that is no path, took ``""`` as no store, and with ``resume=False`` replaced the user's own weights."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from attacks.base import ThreatModel, format_eps
from kwta_robust.adversarial_store import AdversarialStore, parts_folder, store_path, unit_key
from kwta_robust.data import TensorData
from kwta_robust.errors import ConfigError
from kwta_robust.evaluate import evaluate
from kwta_robust.results import EvalRecord, RecordError
from test_adversarial_store import _clean, _outcome
from test_evaluate import LinearBinary, config, linear_problem

EPS = {"linf": [0.01, 0.03], "l2": [0.0, 0.1]}


def _config(mode: str = "cascade", threats: dict[str, list[float]] = EPS) -> Any:
    return config(threats=[{"norm": n, "epsilons": e} for n, e in threats.items()], mode=mode,
                  attacks=[{"attack": "pgd", "params": {"steps": 5}}, {"attack": "fgsm"}],
                  diagnostics={"enabled": False})


def _recheck(record: EvalRecord, path: Path, model: torch.nn.Module, data: Any) -> None:
    """Every claim of the store at ``path``, re-checked by hand against ``record``, ``model`` and ``data``."""
    saved = torch.load(path, weights_only=True)
    assert all(isinstance(value, torch.Tensor) for value in saved.values())
    ids = torch.tensor(record.dataset["indices"])
    assert torch.equal(saved["indices"], ids)
    assert torch.equal(saved["x"], data.x[ids]) and torch.equal(saved["y"], data.y[ids])  # the data set's, by id
    with torch.no_grad():
        assert torch.equal(model(saved["x"]).argmax(dim=1), saved["pred_clean"])
    assert (saved["pred_clean"] == saved["y"]).to(torch.int8).tolist() == record.clean_flags
    units = {unit_key(r.label, r.norm, r.eps): r for r in record.results}
    assert {name.removeprefix("adv/") for name in saved if name.startswith("adv/")} == set(units)  # nothing else
    for key, result in units.items():
        x_adv, pred, flags = saved[f"adv/{key}"], saved[f"pred/{key}"], saved[f"flags/{key}"]
        assert x_adv.dtype == torch.float32 and float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
        distance = (x_adv - saved["x"]).flatten(1).norm(p=float("inf") if result.norm == "linf" else 2, dim=1)
        assert float(distance.max()) <= result.eps + 1e-6, key
        assert flags.tolist() == result.flags
        attacked = flags >= 0
        assert torch.equal(x_adv[~attacked], saved["x"][~attacked]) and bool((pred[~attacked] == -1).all())
        with torch.no_grad():
            assert torch.equal(model(x_adv[attacked]).argmax(dim=1), pred[attacked]), key
        assert torch.equal((pred == saved["y"])[attacked], flags[attacked] == 1)
        assert int((flags == 1).sum()) == result.robust.correct
    for worst in record.worst_case:
        robust = saved["pred_clean"] == saved["y"]
        for label in worst.attacks:
            robust &= saved[f"flags/{unit_key(label, worst.norm, worst.eps)}"] != 0
        assert int(robust.sum()) == worst.robust.correct


@pytest.mark.parametrize("mode", ["cascade", "independent"])
def test_every_claim_of_a_resumed_store_rechecks(tmp_path: Path, mode: str) -> None:
    """Linf and L2 (eps 0 included), two attacks, a run cut after its first threat point and resumed: the joined
    file holds exactly the record's units, each input in its ball and [0, 1], each prediction re-classified."""
    model, data = linear_problem(24)
    out, path = tmp_path / "r.json", tmp_path / "adv.pt"
    cut = evaluate(model, data, _config(mode, {"linf": [0.01]}), {}, out_path=out, save_adversarial=path,
                   progress=False)
    _recheck(cut, path, model, data)
    stored = cut.to_dict()  # an interrupted run of the full config: its first threat point done, saved
    stored["config"], stored["config_hash"], stored["status"] = _config(mode).to_dict(), _config(mode).config_hash(), \
        "partial"
    out.write_text(json.dumps(stored))
    record = evaluate(model, data, _config(mode), {}, out_path=out, save_adversarial=path, progress=False)
    assert len(record.results) == 8 and not parts_folder(path).exists()
    _recheck(record, path, model, data)


def test_a_store_of_another_run_is_refused_and_kept(tmp_path: Path) -> None:
    """Another config (a unit this record does not hold) or another model over the same samples: refused, the
    other run's file left as it was. Before, its units stayed in the file beside this record's."""
    model, data = linear_problem(24)
    path = tmp_path / "adv.pt"
    evaluate(model, data, _config(), {}, out_path=tmp_path / "a.json", save_adversarial=path, progress=False)
    before = path.read_bytes()
    other = LinearBinary(-model.w.detach(), -float(model.b.detach()))
    for net, cfg, out in ((model, _config(threats={"linf": [0.01]}), "b.json"), (other, _config(), "c.json")):
        with pytest.raises(ConfigError, match=r"^--save-adversarial: .*adv.pt holds adversarial inputs this run's "
                                              r"record does not \(fgsm\|l2\|0: no result of the record\); use a new "
                                              r"path or --no-resume$"):
            evaluate(net, data, cfg, {}, out_path=tmp_path / out, save_adversarial=path, progress=False)
        assert path.read_bytes() == before
    record = evaluate(other, data, _config(), {}, out_path=tmp_path / "c.json", save_adversarial=path, resume=False,
                      progress=False)  # --no-resume: the file is this run's
    _recheck(record, path, other, data)


def _edited(saved: dict[str, torch.Tensor], key: str, kind: str) -> dict[str, torch.Tensor]:
    edited = dict(saved)
    if kind == "ball":
        edited[f"adv/{key}"] = (saved[f"adv/{key}"] + 0.2).clamp(0, 1)
    elif kind == "bounds":
        edited[f"adv/{key}"] = saved[f"adv/{key}"] + 1e-3 * (saved[f"adv/{key}"] >= 1 - 1e-3)
        edited[f"adv/{key}"][0, 0, 0, 0] = 1.0 + 1e-4
    elif kind == "flags":
        edited[f"flags/{key}"] = -saved[f"flags/{key}"]
    elif kind == "pred":
        edited[f"pred/{key}"] = torch.where(saved[f"flags/{key}"] >= 0, 1 - saved[f"pred/{key}"], -1)
    else:
        del edited[f"flags/{key}"]
    return edited


@pytest.mark.parametrize(("kind", "why"), [
    ("ball", "an input outside its eps ball or \\[0, 1\\]"), ("bounds", "an input outside its eps ball or \\[0, 1\\]"),
    ("flags", "other flags than the record's"), ("pred", "predictions that are not its flags"),
    ("no flags", "other flags than the record's")])
def test_a_store_edited_on_disk_is_refused(tmp_path: Path, kind: str, why: str) -> None:
    """A resumed run re-checks the units it would join: before, each edit below was kept in the new file."""
    model, data = linear_problem(24)
    out, path = tmp_path / "r.json", tmp_path / "adv.pt"
    evaluate(model, data, _config(), {}, out_path=out, save_adversarial=path, progress=False)
    key = unit_key("pgd", "linf", 0.03)
    torch.save(_edited(torch.load(path, weights_only=True), key, kind), path)
    before = path.read_bytes()
    with pytest.raises(ConfigError, match=f"adv.pt holds adversarial inputs this run's record does not "
                                          f"\\(pgd\\|linf\\|0.03: {why}\\); use a new path or --no-resume$"):
        evaluate(model, data, _config(), {}, out_path=out, save_adversarial=path, progress=False)
    assert path.read_bytes() == before


def test_a_flipped_bit_in_a_store_or_part_is_refused(tmp_path: Path) -> None:
    """torch.load reads a flipped bit as another value: the zip CRC of every member is checked before resuming."""
    x, y, idx, pred = _clean()
    path = tmp_path / "adv.pt"
    store = AdversarialStore(path, x, y, idx, pred, resume=False)
    store.put(unit_key("pgd", "linf", 0.1), _outcome(x, 0.1), torch.ones(6, dtype=torch.int8))
    part = sorted(parts_folder(path).glob("unit-*.pt"))[0]
    damaged = bytearray(part.read_bytes())
    with zipfile.ZipFile(part) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("/data/0"))
    offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.file_size // 2
    damaged[offset] ^= 0x40
    part.write_bytes(bytes(damaged))
    with pytest.raises(RecordError, match=r"unit-000000.pt: member '.*/data/0' fails its CRC check \(the file is "
                                          r"damaged\); use a new path or --no-resume$"):
        AdversarialStore(path, x, y, idx, pred, resume=True)
    assert part.read_bytes() == bytes(damaged)


def test_a_part_no_record_holds_is_left_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An interrupted run's part of a unit the final record does not hold is not joined (a warning names it)."""
    x, y, idx, pred = _clean()
    path = tmp_path / "adv.pt"
    mine, stray = unit_key("pgd", "linf", 0.1), unit_key("pgd", "linf", 0.5)
    AdversarialStore(path, x, y, idx, pred, resume=False).put(stray, _outcome(x, 0.5), torch.ones(6))
    store = AdversarialStore(path, x, y, idx, pred, resume=True, finished={})
    assert store.has(stray)  # a part may hold a unit the record missed (killed between the two writes)
    store.put(mine, _outcome(x, 0.1), torch.ones(6, dtype=torch.int8))
    store.close({mine: ("linf", 0.1, [1] * 6)})
    saved = torch.load(path, weights_only=True)
    assert {name for name in saved if "|" in name} == {f"adv/{mine}", f"pred/{mine}", f"flags/{mine}"}
    assert f"left out {stray}, no result of the record" in caplog.text


def test_a_parts_path_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    """Before: NotADirectoryError when the first unit was written, after its attack had run."""
    x, y, idx, pred = _clean()
    parts_folder(tmp_path / "adv.pt").write_text("mine")
    with pytest.raises(ConfigError, match=r"^--save-adversarial: .*adv.pt.parts is a file, where the run keeps its "
                                          r"units until it completes; move that file or choose another path$"):
        AdversarialStore(tmp_path / "adv.pt", x, y, idx, pred, resume=True)
    assert parts_folder(tmp_path / "adv.pt").read_text() == "mine"


@pytest.mark.parametrize(("value", "message"), [
    (5, "expected a file path (str or pathlib.Path), got int"), (1.5, "got float"), (b"a.pt", "got bytes"),
    (["a.pt"], "got list"), (True, "got bool"), ({}, "got dict"), (object(), "got object"),
    ("", "empty path; give a file name or leave the option out"), (".", ". is a folder; give the path of a file"),
    ("a\0b.pt", "contains a NUL byte")])
def test_save_adversarial_that_is_no_path_is_one_line(value: object, message: str) -> None:
    """Before: TypeError or ValueError from pathlib; ``""`` ran with no store at all."""
    model, data = linear_problem(8)
    with pytest.raises(ConfigError, match=f"^save_adversarial: .*{re.escape(message)}"):
        evaluate(model, data, _config(threats={"linf": [0.01]}), {}, save_adversarial=value, progress=False)


def test_the_api_never_overwrites_the_users_weights_or_its_record(tmp_path: Path) -> None:
    """``resume=False`` replaced the user's state_dict with the store (the CLI refused it, the runner did not)."""
    model, data = linear_problem(8)
    weights = tmp_path / "weights.pt"
    torch.save(model.state_dict(), weights)
    before = weights.read_bytes()
    cfg = _config(threats={"linf": [0.01]})
    with pytest.raises(ConfigError, match=r"^save_adversarial: .*weights.pt holds a torch file; writing the "
                                          r"adversarial store there would destroy it, choose another path$"):
        evaluate(model, data, cfg, {}, save_adversarial=weights, resume=False, progress=False)
    assert weights.read_bytes() == before
    with pytest.raises(ConfigError, match=r"^save_adversarial: .*same.json is also given as out_path; the output "
                                          r"would overwrite it, use another path$"):
        evaluate(model, data, cfg, {}, out_path=tmp_path / "same.json", save_adversarial=str(tmp_path / "same.json"),
                 progress=False)
    assert not (tmp_path / "same.json").exists()


def test_a_unit_where_nothing_was_attacked_is_saved_as_clean(tmp_path: Path) -> None:
    """Every sample clean-wrong (labels flipped): each unit holds the clean inputs, predictions -1, flags -1."""
    model, data = linear_problem(8)
    with torch.no_grad():
        wrong = (model(data.x).argmax(dim=1) + 1) % 2
    data = TensorData(data.x, wrong, data.name, 2, data.indices)
    path = tmp_path / "adv.pt"
    record = evaluate(model, data, _config(), {}, save_adversarial=path, progress=False)
    saved = torch.load(path, weights_only=True)
    for result in record.results:
        key = unit_key(result.label, result.norm, result.eps)
        assert saved[f"flags/{key}"].tolist() == [-1] * 8 == saved[f"pred/{key}"].tolist()
        assert torch.equal(saved[f"adv/{key}"], saved["x"]) and result.robust.correct == 0
    assert format_eps(0.0) == "0" and bool(ThreatModel("l2", 0.0).contains(saved["adv/pgd|l2|0"], saved["x"]).all())


def test_an_out_path_that_is_a_loop_of_links_is_one_line_naming_it(tmp_path: Path) -> None:
    """Comparing the store's path with out_path resolved both: a loop raised RuntimeError (Symlink loop)."""
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(ConfigError) as caught:
        store_path(tmp_path / "adv.pt", tmp_path / "loop")
    assert str(caught.value) == (f"out_path: cannot follow {str(tmp_path / 'loop')!r} (a loop of symbolic links); "
                                 "give another path")
    assert store_path(tmp_path / "adv.pt", tmp_path / "rec.json") == tmp_path / "adv.pt"
