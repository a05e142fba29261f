"""The two randomized MNIST models of the README's "Randomized models" section, defined and trained reproducibly.

* :class:`NoisyCNN` — a small CNN adding Gaussian noise (σ = 0.2) to its input in every forward pass (noise
  injection, as random self-ensembles do: Liu et al., ECCV 2018);
* :class:`LWTAMLP` — an MLP 784-256-10 whose hidden layer is a stochastic local winner-takes-all (Panousis et al.,
  ICML 2021): in each block of 2 units one winner, drawn from the softmax of the block, passes its value; the other
  is zeroed.

Both take ``[N, 1, 28, 28]`` inputs in [0, 1] (normalised inside) and return logits ``[N, 10]``; both draw from
torch's global RNG, which the harness seeds per verdict (README "Randomized models"). Training: seed 0, Adam at
1e-3, batches of 64, 3 epochs on mnist5k's 4,000 training images, one torch thread::

    python -m benchmarks.randomized_models --out-dir runs/randomized
    kwta-robust evaluate --model-factory benchmarks.randomized_models:noisy_cnn \\
        --weights runs/randomized/noisy_cnn.pt --config eval_configs/quickstart.yaml --n-examples 50 --threads 1
    (the same with lwta_mlp)
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kwta_robust.data import load_dataset
from kwta_robust.runtime import torch_threads

logger = logging.getLogger(__name__)

#: mnist5k's normalisation, applied inside the models.
MEAN, STD = 0.1307, 0.3081


class NoisyCNN(nn.Module):
    """Conv 3×3 (16) → max-pool → conv 3×3 (32) → max-pool → dense 128 → 10, after adding ``N(0, sigma²)`` noise to
    the input (before normalisation) in every forward pass, training and evaluation alike."""

    def __init__(self, sigma: float = 0.2) -> None:
        super().__init__()
        self.sigma = sigma
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = (x + self.sigma * torch.randn_like(x) - MEAN) / STD
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class StochasticLWTA(nn.Module):
    """``[N, F]`` → ``[N, F]``: in each block of ``block`` consecutive units one winner, drawn from the softmax of
    the block's values, keeps its value; the others are zeroed (``F`` a multiple of ``block``)."""

    def __init__(self, block: int = 2) -> None:
        super().__init__()
        self.block = block

    def forward(self, h: Tensor) -> Tensor:
        blocks = h.view(h.shape[0], -1, self.block)
        winners = torch.multinomial(F.softmax(blocks, dim=-1).reshape(-1, self.block), 1)
        mask = torch.zeros_like(blocks).scatter_(-1, winners.view(blocks.shape[0], blocks.shape[1], 1), 1.0)
        return (blocks * mask).view_as(h)


class LWTAMLP(nn.Module):
    """Dense 784 → 256, a :class:`StochasticLWTA` with blocks of 2, dense 256 → 10."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 256)
        self.act = StochasticLWTA(2)
        self.fc2 = nn.Linear(256, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(((x - MEAN) / STD).flatten(1))))


def noisy_cnn() -> nn.Module:
    """``--model-factory benchmarks.randomized_models:noisy_cnn``."""
    return NoisyCNN()


def lwta_mlp() -> nn.Module:
    """``--model-factory benchmarks.randomized_models:lwta_mlp``."""
    return LWTAMLP()


FACTORIES = {"noisy_cnn": noisy_cnn, "lwta_mlp": lwta_mlp}


def train(model: nn.Module, x: Tensor, y: Tensor, epochs: int = 3, seed: int = 0, batch_size: int = 64) -> nn.Module:
    """Adam at 1e-3 on ``(x [N, 1, 28, 28], y [N])`` for ``epochs``, a fresh seeded permutation per epoch; the
    model's initial weights and its own draws come from ``torch.manual_seed(seed)``, set by the caller before the
    model is built (:func:`train_both`). Returns the model in eval mode."""
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    order = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=order)
        for start in range(0, len(perm), batch_size):
            batch = perm[start:start + batch_size]
            loss = F.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def train_both(out_dir: Path, epochs: int = 3, limit: int | None = None) -> dict[str, float]:
    """Train both models on mnist5k's training split (its first ``limit`` images if given) and save their
    state_dicts as ``out_dir/<name>.pt``; returns each one's test accuracy (one draw per image)."""
    train_set, test_set = load_dataset("mnist5k", "train"), load_dataset("mnist5k", "test")
    x, y = (train_set.x, train_set.y) if limit is None else (train_set.x[:limit], train_set.y[:limit])
    out_dir.mkdir(parents=True, exist_ok=True)
    accuracy = {}
    for name, factory in FACTORIES.items():
        torch.manual_seed(0)
        model = train(factory(), x, y, epochs=epochs)
        with torch.no_grad():
            accuracy[name] = (model(test_set.x).argmax(1) == test_set.y).float().mean().item()
        torch.save(model.state_dict(), out_dir / f"{name}.pt")
        logger.info("%s: %d training images, %d epochs, test accuracy %.4f (one draw) -> %s", name, len(y), epochs,
                    accuracy[name], out_dir / f"{name}.pt")
    return accuracy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, required=True, help="where noisy_cnn.pt and lwta_mlp.pt go")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs (default 3)")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs: must be an integer >= 1, got {args.epochs}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with torch_threads(1):
        train_both(args.out_dir, args.epochs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
