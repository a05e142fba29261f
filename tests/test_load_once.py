"""A checkpoint and a ``--data`` file are read once by ``evaluate``: one open and one ``torch.load`` each (the CRC
check, the SHA-256 the record keeps and the decoding came from three opens and three full reads), with the same
digests in the record as ``hashlib`` gives for the bytes; a data file that changed after its pin is refused when
it is read."""

from __future__ import annotations

import builtins
import hashlib
import io
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from kwta_robust.config import EvalConfig
from kwta_robust.errors import DataError
from kwta_robust.file_read import scan_file
from kwta_robust.loading import load_eval_data
from kwta_robust.results import load_record
from test_cli_eval import make_mlp, write_checkpoint, write_config
from test_datafile import N, evaluate, images


def _count_reads(monkeypatch: pytest.MonkeyPatch, *paths: Path) -> tuple[Counter, Counter]:
    """Opens of ``paths`` (builtins.open / io.open, which pathlib and torch use) and torch.load calls per path."""
    watched = {p.resolve(): p.name for p in paths}
    opens, loads = Counter(), Counter()
    real_open, real_load = builtins.open, torch.load

    def name_of(source: object) -> str | None:
        if isinstance(source, (str, Path)):
            return watched.get(Path(source).resolve())
        return watched.get(Path(getattr(source, "name", "")).resolve()) if hasattr(source, "name") else None

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, Path)) and name_of(file) is not None:
            opens[name_of(file)] += 1
        return real_open(file, *args, **kwargs)

    def counting_load(f, *args, **kwargs):
        if name_of(f) is not None:
            loads[name_of(f)] += 1
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)
    monkeypatch.setattr(torch, "load", counting_load)
    return opens, loads


def test_evaluate_opens_and_loads_the_checkpoint_and_the_data_file_once(tmp_path: Path, monkeypatch,
                                                                        capsys) -> None:
    ckpt = write_checkpoint(tmp_path / "mlp.pt")
    data = tmp_path / "d.pt"
    torch.save({"x": torch.from_numpy(images()), "y": torch.arange(N) % 10}, data)
    cfg = write_config(tmp_path / "c.yaml", n_examples=4, batch_size=4, threats=[{"norm": "linf", "epsilons": [0.1]}],
                       attacks=["fgsm"], noise=[])
    opens, loads = _count_reads(monkeypatch, ckpt, data)
    assert evaluate(ckpt, cfg, data, tmp_path / "r.json") == 0, capsys.readouterr().err
    assert dict(loads) == {"mlp.pt": 1, "d.pt": 1}
    assert dict(opens) == {"mlp.pt": 1, "d.pt": 1}  # were 3 and 5 (CRC check, torch.load, SHA-256; is_zipfile)
    monkeypatch.undo()
    record = load_record(tmp_path / "r.json")
    assert record.model["checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert record.config["dataset"] == {"file": str(data.resolve()),
                                        "sha256": hashlib.sha256(data.read_bytes()).hexdigest()}


def test_a_bring_your_own_models_weights_are_opened_once(tmp_path: Path, monkeypatch, capsys) -> None:
    from kwta_robust.checkpoint import load_byo_model

    torch.manual_seed(0)
    torch.save(make_mlp().state_dict(), tmp_path / "w.pt")
    opens, loads = _count_reads(monkeypatch, tmp_path / "w.pt")
    loaded = load_byo_model("test_cli_eval:make_mlp", tmp_path / "w.pt")
    assert dict(opens) == {"w.pt": 1} and dict(loads) == {"w.pt": 1}  # opens were 3
    assert loaded.sha256 == hashlib.sha256((tmp_path / "w.pt").read_bytes()).hexdigest()


def _flip_one_value_byte(path: Path) -> str:
    """Flip a byte inside the values of the largest member of the zip at ``path``; returns that member's name."""
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    name_length, extra_length = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little"), \
        int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_length + extra_length
    raw[start + info.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    return info.filename


def test_one_read_gives_the_files_digest_and_finds_a_damaged_member(tmp_path: Path) -> None:
    path = tmp_path / "t.pt"
    torch.save({"a": torch.arange(10_000, dtype=torch.float32), "b": torch.ones(3)}, path)
    with open(path, "rb") as handle:
        scan = scan_file(handle)
        assert handle.tell() == 0
    assert scan.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and scan.damaged_member is None
    damaged = _flip_one_value_byte(path)
    with open(path, "rb") as handle:
        scan = scan_file(handle)
    assert scan.damaged_member == damaged and scan.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_data_file_changed_after_its_pin_is_refused_where_it_is_read(tmp_path: Path) -> None:
    """The pin was checked when the config was made; the read after it took whatever the file then held."""
    np.savez(tmp_path / "d.npz", x=images(), y=np.arange(N) % 10)
    digest = hashlib.sha256((tmp_path / "d.npz").read_bytes()).hexdigest()
    cfg = EvalConfig.from_dict({"dataset": {"file": str(tmp_path / "d.npz"), "sha256": digest}, "n_examples": 4,
                                "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": ["fgsm"]})
    assert len(load_eval_data(cfg, None, [make_mlp()])) == N
    np.savez(tmp_path / "d.npz", x=images(seed=1), y=np.arange(N) % 10)
    changed = hashlib.sha256((tmp_path / "d.npz").read_bytes()).hexdigest()
    with pytest.raises(DataError) as info:
        load_eval_data(cfg, None, [make_mlp()])
    assert str(info.value) == (f"dataset.sha256: {tmp_path / 'd.npz'} has sha256 {changed}, the config pins {digest}; "
                               "the file changed — use the pinned file or update the pin")
