"""An inline top-k gate (``h · (h ≥ h.topk(k).values[:, -1:])`` in a module's ``forward``) whose gates differ in
k/N: a shared block called on two widths, or two gates of other k in one ``forward``. The layer probe kept the k/N
of the first gate it read alone (``k``, ``group_size`` of the selection entry), so the tables printed, and the
matrices' ``grid-cell-ratio`` check and placement judged by, a common ratio the model does not have. The entry now
keeps each k/N its gates showed (``k_seen``) where they differ, and the readers take them all: no common ratio is
made up, the ReLU row is still contradicted, and records before (one k, or none) read as they did."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from eval_helpers import make_record
from attacks.pool_relax import POOL_GATE_MARK
from kwta_robust.detect import detect_layers
from kwta_robust.selection_entries import gate_entry as _gate_entry
from kwta_robust.layer_text import detected_gates_text, inline_gate_layers, inline_text, probe_ratio
from kwta_robust.matrix_checks import gate_ratios, gates_found_text, grid_ratio_conflict
from kwta_robust.record_checks import check_record
from kwta_robust.results import EvalRecord, load_record, save_record


def _gate(h: Tensor, k: int) -> Tensor:
    return h * (h >= h.topk(k, dim=1).values[:, -1:])


class Block(nn.Module):
    """A block with a child (so not probed as a leaf) gating inline: ``k`` winners, or ``N // 4`` with ``k=None``."""

    def __init__(self, k: int | None) -> None:
        super().__init__()
        self.k, self.pre = k, nn.Identity()

    def forward(self, h: Tensor) -> Tensor:
        return _gate(self.pre(h), self.k or h.shape[1] // 4)


class SharedBlock(nn.Module):
    """One block called on 16 and on 64 units."""

    def __init__(self, k: int | None) -> None:
        super().__init__()
        self.fc1, self.fc2, self.out, self.block = nn.Linear(64, 16), nn.Linear(16, 64), nn.Linear(64, 3), Block(k)

    def forward(self, x: Tensor) -> Tensor:
        h = self.block(torch.relu(self.fc1(x.flatten(1))))
        return self.out(self.block(torch.relu(self.fc2(h))))


class TwoK(nn.Module):
    """Two gates of other k (8 and 16 of 32) inline in the model's own forward."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(64, 32), nn.Linear(32, 32), nn.Linear(32, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = _gate(torch.relu(self.fc1(x.flatten(1))), 8)
        return self.out(_gate(torch.relu(self.fc2(h)), 16))


def _selections(model: nn.Module) -> list[dict]:
    torch.manual_seed(0)
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    return detect_layers(model, x, log=False).selections


def _record(declared: float | None, **counted: object) -> EvalRecord:
    selection = {"op": "topk", "kind": "selection", "modules": ["", "block"], "calls": 2, "gate": "dense",
                 **counted, "probed": False}
    record = make_record(detection={"n": 16, "probed": 3, "layers": [], "selections": [selection]})
    record.model.update(activation="relu", num_kwta_layers=0, kwta_ratio=None)
    if declared is not None:
        record.model["grid_cell"] = {"kwta_ratio": declared, "weight_sparsity": 0.0, "pruning_method": "none"}
    return record


SHARED = {"k": 4, "group_size": 16, "k_seen": [[4, 16], [4, 64]]}  # 0.25 at 16 units, 0.0625 at 64


def test_the_probe_keeps_each_k_of_a_shared_inline_gate() -> None:
    torch.manual_seed(0)
    (entry,) = _selections(SharedBlock(4))
    assert entry["modules"] == ["", "block"] and entry["gate"] == "dense"
    assert (entry["k"], entry["group_size"], entry["k_seen"]) == (4, 16, [[4, 16], [4, 64]])


def test_the_probe_keeps_each_k_of_two_gates_in_one_forward() -> None:
    torch.manual_seed(0)
    (entry,) = _selections(TwoK())
    assert (entry["k"], entry["group_size"], entry["k_seen"], entry["gates"]) == (8, 32, [[8, 32], [16, 32]], 2)


def test_a_shared_gate_of_one_ratio_keeps_its_common_ratio() -> None:
    torch.manual_seed(0)
    (entry,) = _selections(SharedBlock(None))  # N // 4 at each width: 4/16 and 16/64, one ratio
    assert entry["k_seen"] == [[4, 16], [16, 64]]
    record = _record(0.25, **{k: entry[k] for k in ("k", "group_size", "k_seen")})
    assert probe_ratio(record) == 0.25
    assert grid_ratio_conflict(record) is None
    assert detected_gates_text(record) == "top-k 0.25 dense inline (1 found by the probe)"


def test_gates_of_several_ratios_make_no_common_ratio_where_records_before_read_as_they_did() -> None:
    one = _record(0.0625, k=4, group_size=16)  # before k_seen: one k, the first gate's, read as the model's
    assert probe_ratio(one) == 0.25 and gate_ratios(one) == ["block (inline) 4/16"]
    assert grid_ratio_conflict(one) is not None
    assert inline_text(one.detection["selections"][0]) == "block (inline): top-k gate (dense, k=4/16, built from topk)"
    none = _record(0.5)  # before k: none
    assert probe_ratio(none) is None and gate_ratios(none) == ["block (inline)"]
    bad = _record(None, k=4, group_size=16, k_seen=[[4, 0], "x"])  # a damaged k_seen: the k it holds
    assert gate_ratios(bad) == ["block (inline) 4/16"]
    record = _record(None, **SHARED)
    assert probe_ratio(record) is None
    assert detected_gates_text(record) == "top-k dense inline (1 found by the probe)"
    assert gate_ratios(record) == ["block (inline) 4/16, 4/64"]
    assert inline_gate_layers(record)[0]["evidence"]["k_per_shape"] == [[None, 4, 16], [None, 4, 64]]
    assert inline_text(record.detection["selections"][0]) == (
        "block (inline): top-k gate (dense, k=4/16, 4/64 across its gates, built from topk)")


def test_no_declared_row_is_judged_by_the_first_gates_ratio_alone() -> None:
    # before: 4/16 read as the model's ratio, 0.25 accepted and 0.0625 (its second gate's) flagged
    for declared in (0.25, 0.0625, 0.5):
        assert grid_ratio_conflict(_record(declared, **SHARED)) is None


def test_the_relu_row_is_still_contradicted_by_gates_of_several_ratios() -> None:
    assert grid_ratio_conflict(_record(1.0, **SHARED)) == (
        "declared --grid-cell kwta_ratio=1 (the ReLU twin) but the layer probe measured k/N 4/16 (0.25), 4/64 "
        "(0.0625) at its top-k gates in layer block (inline); declare the cell again with the ratio the model has "
        "(nothing is evaluated again)")  # main's wording of the gates (fix-textpolish): "in layer NAME"


def test_gates_of_several_ratios_read_in_the_sentence_style_beside_a_relaxed_max_pool_gate() -> None:
    record = _record(None, **SHARED)
    pool = {"op": "max_pool2d", "kind": "selection", "modules": ["", "pool"], "calls": 1, "gate": POOL_GATE_MARK,
            "probed": False}
    record.detection["selections"].append(pool)  # a max-pool gate's mark: no k/N, no k_seen, no inline gate
    assert gates_found_text(record) == "layer block (inline) (k/N 4/16, 4/64)"
    assert gate_ratios(record) == ["block (inline) 4/16, 4/64"]
    assert gates_found_text(_record(None, k=4, group_size=16)) == "layer block (inline) (k/N 4/16)"
    assert gates_found_text(_record(None)) == "layer block (inline) (k not recorded)"
    assert _gate_entry(POOL_GATE_MARK, [(4, 16), (4, 64)]) == {"gate": POOL_GATE_MARK}


def test_a_record_with_k_seen_saves_loads_and_passes_the_record_checks(tmp_path) -> None:
    path = tmp_path / "r.json"
    save_record(_record(0.25, **SHARED), path)
    loaded = load_record(path)
    check_record(loaded, "r.json")
    assert loaded.detection["selections"][0]["k_seen"] == [[4, 16], [4, 64]]
    assert probe_ratio(loaded) is None
