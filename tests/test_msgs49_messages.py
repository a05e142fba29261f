"""Messages that were true but did not say what to do, or warned when nothing was wrong (session 49's walk): a
config edit of ``1`` to ``1.0`` (another config hash) is named by its key; ``--grid-cell`` added to a finished
record does not warn about another commit (nothing is re-run); the broadcast-channels warning names how to give the
model other data; a ``grid-cell-ratio`` conflict ends with the ``--grid-cell`` to declare; the notes give each
selection that built gates inline in one ``forward`` its own count per call, not the forward's on each."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from eval_helpers import make_record, make_result, rehash
from kwta_robust.api import evaluate_model
from kwta_robust.detect_selections import selections_outside
from kwta_robust.layer_text import layer_notes
from kwta_robust.matrix_checks import grid_ratio_conflict
from kwta_robust.model_checks import probe_model
from kwta_robust.resume import stale_reason
from test_model_checks import ColourNet

OTHER_COMMIT = "0" * 40


def test_a_number_written_another_way_names_its_key_and_the_fix() -> None:
    fresh = make_record(n=4)
    fresh.config = {"seed": 0, "attacks": [{"attack": "pgd", "params": {"steps": 10, "step_size": 1.0}}]}
    rehash(fresh)
    old = copy.deepcopy(fresh)
    old.config["attacks"][0]["params"]["step_size"] = 1  # the same number: json.dumps hashes "1", not "1.0"
    rehash(old)
    assert old.config_hash != fresh.config_hash
    line = stale_reason(old, fresh)
    assert line == ("holds a record of another config (attacks[0].params.step_size: 1 in the record, 1.0 now; the "
                    "same number written another way, which the hash tells apart: write 1 as the record does)")
    old.config["attacks"][0]["params"]["step_size"] = 2  # another number: no such advice
    rehash(old)
    assert stale_reason(old, fresh) == ("holds a record of another config (attacks[0].params.step_size: 2 in the "
                                        "record, 1.0 now)")


def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()


def _tiny_data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.rand(6, 1, 4, 4, generator=gen), torch.randint(0, 3, (6,), generator=gen)


def _set_commit(path: Path, commit: str) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data["provenance"].setdefault("versions", {})["kwta_robust_git"] = commit
    path.write_text(json.dumps(data), encoding="utf-8")


def test_a_grid_cell_added_to_a_finished_record_of_another_commit_does_not_warn(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("kwta_robust.results.harness_revision", lambda: "a" * 40)  # a git clone's, wherever run
    config = {"dataset": "toy", "n_examples": 6, "batch_size": 6, "seed": 1,
              "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": [{"attack": "fgsm"}],
              "diagnostics": {"enabled": False}}
    out = tmp_path / "rec.json"
    model, (x, y) = _tiny_net(), _tiny_data()
    evaluate_model(model, config, x, y, out_path=out, threads=1)
    _set_commit(out, OTHER_COMMIT)  # written by another commit of the harness
    with caplog.at_level(logging.INFO, logger="kwta_robust"):
        evaluate_model(model, config, x, y, out_path=out, threads=1,
                       grid_cell="kwta_ratio=1,weight_sparsity=0")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not any("commit" in w for w in warnings), warnings
    assert any("every unit is finished, so no attack is re-run" in r.getMessage() and "kwta-robust commit" in
               r.getMessage() for r in caplog.records)
    assert json.loads(out.read_text(encoding="utf-8"))["model"]["grid_cell"]["kwta_ratio"] == 1.0
    caplog.clear()
    data = json.loads(out.read_text(encoding="utf-8"))
    data["results"], data["worst_case"], data["status"] = [], [], "partial"  # its attack left to compute: warned
    out.write_text(json.dumps(data), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="kwta_robust"):
        evaluate_model(model, config, x, y, out_path=out, threads=1)
    assert f"its finished units ran kwta-robust commit {OTHER_COMMIT}" in caplog.text


def test_the_broadcast_channels_warning_names_how_to_give_other_data(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="kwta_robust.model_checks"):
        probe_model(ColourNet(), torch.rand(4, 1, 8, 8), 10, "model colour", data_name="mnist5k")
    [line] = [r.getMessage() for r in caplog.records if "broadcast or repeated" in r.getMessage()]
    assert ("if it was built for 3-channel images, evaluate it on the data it was built for (dataset: in the "
            "evaluation config, or --data FILE in evaluate and compare) — these numbers would be meaningless") in line
    assert "\n" not in line


def _gated(declared: float, sparsity: float = 0.0, method: str = "none"):
    layers = [{"name": f"act{i}", "kinds": ["gate"], "grouping": "channel", "evidence": {"k": k, "group_size": n}}
              for i, (k, n) in enumerate(((14, 144), (2, 16), (6, 64)), 1)]  # round(0.1 · N): 0.1 declares them
    record = make_record([make_result("pgd", [1, 0, 1, 0], eps=0.1)], label="mine",
                         detection={"n": 4, "probed": 7, "layers": layers})
    record.model.update({"activation": "none", "kwta_ratio": None,
                         "grid_cell": {"kwta_ratio": declared, "weight_sparsity": sparsity, "pruning_method": method}})
    return record


def test_a_contradicted_ratio_ends_with_the_grid_cell_to_declare() -> None:
    line = grid_ratio_conflict(_gated(0.3))
    assert line is not None and line.endswith("(nothing is evaluated again): --grid-cell kwta_ratio=0.1,"
                                              "weight_sparsity=0")
    assert grid_ratio_conflict(_gated(0.1)) is None  # what it suggests passes the check
    pruned = grid_ratio_conflict(_gated(0.3, 0.5, "magnitude"))
    assert pruned is not None and pruned.endswith(": --grid-cell kwta_ratio=0.1,weight_sparsity=0.5,"
                                                  "pruning_method=magnitude")  # the declared column kept
    assert "\n" not in pruned


class TwoOps(nn.Module):
    """A forward that builds three top-k gates a call: two from ``topk`` (8 of 32, then 4 of 32), one from ``max``
    (the larger of each pair of 32 units)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.c, self.out = nn.Linear(16, 32), nn.Linear(32, 32), nn.Linear(32, 32), nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x.flatten(1))
        h = self.b(h * (h >= h.topk(8, dim=1).values[:, -1:]))
        h = self.c(h * (h >= h.topk(4, dim=1).values[:, -1:]))
        pairs = h.view(h.shape[0], 16, 2)
        return self.out((pairs * (pairs >= pairs.max(dim=2, keepdim=True).values)).flatten(1))


def test_each_inline_selection_names_its_own_gates_per_call() -> None:
    selections = selections_outside(TwoOps().eval(), torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(2)),
                                    [])
    counts = {s["op"]: (s.get("gates"), s.get("own_gates")) for s in selections}
    assert counts == {"topk": (3, 2), "max": (3, 1)}  # the forward's 3 (BPDA holds a call to it), each one's own
    record = make_record(detection={"n": 8, "probed": 5, "layers": [], "selections": selections})
    record.model.update(activation="none", num_kwta_layers=0, kwta_ratio=None)
    note = layer_notes(record)[0]
    assert "built from topk, 2 of the 3 gates per call of its forward)" in note
    assert "built from max, 1 of the 3 gates per call of its forward)" in note
    assert "3 gates per call)" not in note and "\n" not in note
