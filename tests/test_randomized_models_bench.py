"""``benchmarks/randomized_models.py``: the two randomized models behind the README's "Randomized models" numbers —
each is randomized and seedable as the harness's probe sees it, the stochastic LWTA keeps one unit per block with
its own value, and training is reproducible (one short run on a few images, twice)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.randomized_models import FACTORIES, NoisyCNN, StochasticLWTA, main, train_both
from kwta_robust.data import load_dataset
from kwta_robust.randomness import probe_randomness


def test_training_twice_gives_the_same_weights_and_the_factories_load_them(tmp_path: Path) -> None:
    first = train_both(tmp_path / "a", epochs=1, limit=96)
    second = train_both(tmp_path / "b", epochs=1, limit=96)
    assert first == second and set(first) == {"noisy_cnn", "lwta_mlp"}
    for name, factory in FACTORIES.items():
        a = torch.load(tmp_path / "a" / f"{name}.pt", weights_only=True)
        b = torch.load(tmp_path / "b" / f"{name}.pt", weights_only=True)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        factory().load_state_dict(a, strict=True)  # the --model-factory takes the saved weights as they are


def test_both_models_are_randomized_and_seedable_for_the_harness() -> None:
    x = load_dataset("mnist5k", "test").x[:8]
    for name, factory in FACTORIES.items():
        found = probe_randomness(factory().eval(), x, seed=0)
        assert found.randomized and found.seedable, name


def test_the_stochastic_lwta_keeps_one_unit_per_block_with_its_own_value() -> None:
    h = torch.randn(64, 256, generator=torch.Generator().manual_seed(1))
    out = StochasticLWTA(2)(h)
    blocks, kept = h.view(64, -1, 2), out.view(64, -1, 2)
    assert ((kept != 0).sum(-1) == 1).all()
    assert torch.equal(kept.sum(-1), (blocks * (kept != 0)).sum(-1))
    torch.manual_seed(3)
    first = StochasticLWTA(2)(h)
    torch.manual_seed(3)
    assert torch.equal(first, StochasticLWTA(2)(h))  # torch's global RNG, which the harness seeds per verdict


def test_the_noisy_cnn_adds_noise_of_its_sigma_before_normalising() -> None:
    model = NoisyCNN(sigma=0.0).eval()
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    assert torch.equal(model(x), model(x))  # sigma 0: no randomness left
    model.sigma = 0.2
    assert not torch.equal(model(x), model(x))


def test_main_refuses_zero_epochs(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--out-dir", str(tmp_path / "out"), "--epochs", "0"])
    assert exited.value.code == 2 and "--epochs: must be an integer >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
