"""``table --matrix`` on a model written like Xiao et al.'s kWTA-Activation networks: ``nn.ReLU`` followed by a
``Sparsify2D_vol``-style top-k gate. The record's ``activation`` is ``relu`` (the describer counts the ``nn.ReLU``
modules, not the foreign gates), and the matrix had placed such a kWTA model in row 1.0, the ReLU twin's, without a
word; now it stops with the line that lists the gates the layer probe found and says to declare ``--grid-cell``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
import torch
from torch import Tensor, nn

from kwta_robust.cli import main
from kwta_robust.matrix import RELU_RATIO, cell_coordinates
from kwta_robust.results import load_record


class Sparsify2D_vol(nn.Module):  # noqa: N801 - Xiao et al.'s class name, as their code writes it
    """Xiao et al.'s cross-channel gate: keeps the ``int(sr · C·H·W)`` largest entries of each sample."""

    def __init__(self, sparse_ratio: float) -> None:
        super().__init__()
        self.sr = sparse_ratio

    def forward(self, x: Tensor) -> Tensor:
        k = int(self.sr * x.shape[1] * x.shape[2] * x.shape[3])
        flat = x.view(x.shape[0], -1)
        topval = flat.topk(k, dim=1)[0][:, -1]
        topval = topval.repeat(flat.shape[1], 1).permute(1, 0).view_as(x)
        return (x >= topval).to(x) * x


class XiaoStyleNet(nn.Module):
    """``conv → nn.ReLU → Sparsify2D_vol`` (Xiao's SparseBasicBlock order) for the 8 × 8 digits; ``sr=None``: the
    ReLU twin."""

    def __init__(self, sr: float | None) -> None:
        super().__init__()
        with torch.random.fork_rng():  # the same weights at every call (the --grid-cell run resumes the record),
            torch.manual_seed(0)  # and the caller's RNG left as it was for the tests after it
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.linear = nn.Linear(4 * 8 * 8, 10)
        self.relu = nn.ReLU()
        self.sparse = Sparsify2D_vol(sr) if sr is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.sparse(self.relu(self.conv(x))).flatten(1))


def xiao_kwta() -> nn.Module:
    return XiaoStyleNet(0.25)


def xiao_relu() -> nn.Module:
    return XiaoStyleNet(None)


def test_a_relu_model_with_top_k_gates_is_not_placed_as_the_relu_twin(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": "digits", "n_examples": 8, "batch_size": 8, "device": "cpu",
        "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": [{"attack": "pgd", "params": {"steps": 2}}],
    }))
    records = {name: tmp_path / f"{name}.json" for name in ("xiao_kwta", "xiao_relu")}
    for name, out in records.items():
        assert main(["evaluate", "--model-factory", f"test_matrix_cifaruser:{name}", "--config", str(config),
                     "--out", str(out), "--no-progress"]) == 0
    kwta = load_record(records["xiao_kwta"])
    # "relu" made the matrix take it for the ReLU twin; the record now says what the probe found (session 50)
    assert (kwta.model["activation"], kwta.model["activation_layers"]) == ("top-k (detected)", "relu")
    assert cell_coordinates(load_record(records["xiao_relu"])).kwta_ratio == RELU_RATIO  # the real twin still is
    capsys.readouterr()
    assert main(["table", "--matrix", str(records["xiao_kwta"]), str(records["xiao_relu"])]) == 2
    err = capsys.readouterr().err
    assert err == ("error: table --matrix: record 'xiao_kwta' has activation 'top-k (detected)' (kwta_ratio "
                   "None); the layer probe found top-k gates in layer sparse (k/N 64/256); a matrix row needs ReLU "
                   "without top-k gates or one kWTA ratio: evaluate it again with --grid-cell "
                   "kwta_ratio=0.25,weight_sparsity=S (k/N 0.25: every gate's; S: the weights' pruned fraction, 0 if "
                   "dense) (its finished units are kept)\n")
    assert main(["evaluate", "--model-factory", "test_matrix_cifaruser:xiao_kwta", "--config", str(config), "--out",
                 str(records["xiao_kwta"]), "--no-progress", "--grid-cell", "kwta_ratio=0.25,weight_sparsity=0"]) == 0
    assert cell_coordinates(load_record(records["xiao_kwta"])).kwta_ratio == 0.25
