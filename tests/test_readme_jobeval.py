"""README, '### 1. Evaluate a checkpoint against the attack suite': promises a user relies on that no other test pins
(the record's ``weight_sparsity`` of a factory that prunes its model, float16 data files, float64 models)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from kwta_robust.checkpoint import load_byo_model
from kwta_robust.cli import main
from kwta_robust.datafile import load_data_file
from kwta_robust.results import load_record
from test_cli_eval import write_config
from test_foreign_pruned_weights import PRUNED_LAYERS, plain_net

# pruned_net (the factory) prunes 60% / 75%; the released file here holds other zeros: 90% / 30%
FILE_AMOUNTS = (0.9, 0.3)


def released_file(tmp_path: Path, *, removed: bool) -> tuple[Path, float]:
    """Weights pruned by other amounts than the factory's, saved with the ``_orig`` / ``_mask`` pairs or (``removed``)
    after ``prune.remove``; with the fraction of zeros the pruned weights hold, counted here."""
    source = plain_net()
    for index, amount in zip(PRUNED_LAYERS, FILE_AMOUNTS):
        prune.l1_unstructured(source[index], "weight", amount=amount)
    weights = [source[i].weight.detach() for i in PRUNED_LAYERS]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    if removed:
        for index in PRUNED_LAYERS:
            prune.remove(source[index], "weight")
    path = tmp_path / ("plain.pt" if removed else "pairs.pt")
    torch.save(source.state_dict(), path)
    return path, zeros


@pytest.mark.parametrize("removed", [False, True])
def test_weight_sparsity_counts_the_files_pruned_zeros_not_the_factorys(tmp_path: Path, removed: bool) -> None:
    """'a factory that prunes its model gets <name>_orig from a plain file and <name>_mask from its nonzero
    entries: the same weights either way, and the record's weight_sparsity counts the pruned zeros' — the zeros of
    the weights loaded (and evaluated), not those the factory's own pruning left before the file was loaded."""
    path, zeros = released_file(tmp_path, removed=removed)
    assert zeros < 0.35  # the file's, not pruned_net's (60% / 75%: about 0.75 overall)
    loaded = load_byo_model("test_foreign_pruned_weights:pruned_net", path)
    assert loaded.metadata["weight_sparsity"]["overall"] == pytest.approx(zeros, abs=1e-9)
    layer = loaded.metadata["weight_sparsity"]["layers"]["0"]
    assert layer == pytest.approx(round(FILE_AMOUNTS[0] * 36) / 36, abs=1e-9)


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_a_float16_data_file_is_read_as_float32(tmp_path: Path, suffix: str) -> None:
    """'The data are float32 images in [0, 1] (a float16 data file is read as float32)'."""
    x16 = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)).half()
    y = torch.arange(6) % 3
    path = tmp_path / f"d{suffix}"
    if suffix == ".pt":
        torch.save({"x": x16, "y": y}, path)
    else:
        np.savez(path, x=x16.numpy(), y=y.numpy())
    data = load_data_file(path)
    assert data.x.dtype == torch.float32
    assert torch.equal(data.x, x16.to(torch.float32))  # the file's float16 values, exactly


class Float64Net(nn.Module):
    """A float64 model whose first operation (a normalization with a float64 mean and std) promotes the input."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.register_buffer("mean", torch.full((1, 1, 1), 0.1307, dtype=torch.float64))
        self.register_buffer("std", torch.full((1, 1, 1), 0.3081, dtype=torch.float64))
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10)).double()

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x - self.mean) / self.std)


def float64_net() -> nn.Module:
    return Float64Net()


def test_a_float64_model_that_promotes_its_input_runs_as_it_is(tmp_path: Path, capsys) -> None:
    """'a float64 model whose first operation promotes the input ... runs as it is'; the record names its precision
    (model.parameter_dtypes, probes.output_dtype), never flags it low-precision, and the adversarial inputs saved are
    float32, what the model is given."""
    weights, out, adv = tmp_path / "w.pt", tmp_path / "r.json", tmp_path / "adv.pt"
    torch.save(float64_net().state_dict(), weights)
    config = write_config(tmp_path / "c.yaml", attacks=[{"attack": "pgd", "params": {"steps": 2}}], noise=[])
    rc = main(["evaluate", "--model-factory", "test_readme_jobeval:float64_net", "--weights", str(weights),
               "--config", str(config), "--out", str(out), "--save-adversarial", str(adv), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err, err
    record = load_record(out)
    assert record.model["parameter_dtypes"] == ["float64"]
    assert record.probes["output_dtype"] == "float64"
    assert "low-precision" not in {flag.code for flag in record.diagnostics}
    assert record.model["training"]["weights_normalization"] == []
    store = torch.load(adv, weights_only=True)
    saved = [key for key in store if key.startswith("adv/")]
    assert len(saved) == 2 and all(store[key].dtype == torch.float32 for key in saved)


def test_torch_and_torchvision_are_declared_as_ranges_never_a_lone_pin() -> None:
    """'`torch`/`torchvision` are declared as ranges (...), never a lone `torch==` pin, so pip picks a matching
    pair': the package's dependencies, as pip reads them."""
    import re
    import tomllib

    root = Path(__file__).resolve().parents[1]
    deps = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    spec = {re.split(r"[<>=!~ ]", d, maxsplit=1)[0]: d for d in deps}
    for name in ("torch", "torchvision"):
        bounds = [re.match(r"(>=|<|==)[0-9]", b.strip()).group(1) for b in spec[name][len(name):].split(",")]
        assert sorted(bounds) == ["<", ">="], spec[name]  # a lower and an upper bound, no ==
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert f"`{spec['torch']}`" in readme and f"`{spec['torchvision']}`" in readme
