"""Helpers shared by the sparsity tests (no tests here): a tiny CNN, a synthetic data set, a minimal SegmentTrainer."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kwta_robust.models import create_model
from kwta_robust.sparsity import PruningContext
from kwta_robust.sparsity.segments import EpochCallback, StepHook, TrainSegment


def small_cnn(seed: int = 0, activation: object = "relu") -> nn.Module:
    """The project's small CNN at toy size: conv3x3-4, conv3x3-8 on 8x8 inputs, fc-16, 3 classes."""
    torch.manual_seed(seed)
    return create_model("cnn", activation=activation, num_classes=3, in_channels=1, input_size=8,
                        channels=(4, 8), hidden=16, kernel_size=3)


def toy_data(n: int = 96, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Three classes of 8x8 images (a bright row band, column band or diagonal) plus noise, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = 0.3 * torch.rand(n, 1, 8, 8, generator=g)
    x[y == 0, 0, 2:4, :] += 0.6
    x[y == 1, 0, :, 5:7] += 0.6
    eye = torch.eye(8).bool()
    x[y == 2, 0] += 0.6 * eye
    return x.clamp(0, 1), y


@dataclass
class ToyTrainer:
    """A minimal :class:`SegmentTrainer`: SGD, cosine LR over ``epochs`` schedule epochs, fixed batch order.

    Records every segment it ran (and the lr of each epoch) so tests can check what the pruning loop asked for.
    """

    x: Tensor
    y: Tensor
    epochs: int
    lr: float = 0.1
    batch_size: int = 32
    segments: list[TrainSegment] = field(default_factory=list)
    lrs: list[list[float]] = field(default_factory=list)
    starts: list[dict[str, Tensor]] = field(default_factory=list)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def schedule_lr(self, epoch: int) -> float:
        epoch = min(epoch, self.epochs - 1)
        return self.lr * 0.5 * (1 + math.cos(math.pi * epoch / self.epochs))

    def __call__(self, model: nn.Module, segment: TrainSegment, *, epoch_callback: EpochCallback | None = None,
                 step_hook: StepHook | None = None) -> None:
        self.segments.append(segment)
        self.starts.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=self.lr, momentum=0.9)
        seg_lrs: list[float] = []
        self.lrs.append(seg_lrs)
        step = 0
        model.train()
        for e in range(segment.epochs):
            if segment.constant_lr == "final":
                lr = self.schedule_lr(self.epochs - 1)
            elif segment.constant_lr is not None:
                lr = float(segment.constant_lr)
            else:
                lr = self.schedule_lr(segment.schedule_offset + e)
            for group in optimizer.param_groups:
                group["lr"] = lr
            seg_lrs.append(lr)
            for i in range(0, len(self.x), self.batch_size):
                loss = F.cross_entropy(model(self.x[i : i + self.batch_size]), self.y[i : i + self.batch_size])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                step += 1
                if step_hook is not None:
                    step_hook(model, step)
            if epoch_callback is not None and epoch_callback(model, e + 1):
                break
        model.eval()

    def batches(self, n: int) -> list[tuple[Tensor, Tensor]]:
        return [(self.x[i * self.batch_size : (i + 1) * self.batch_size],
                 self.y[i * self.batch_size : (i + 1) * self.batch_size]) for i in range(n)]


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def zeros_from_state(model: nn.Module, layers: list[str]) -> float:
    """Sparsity of the named layers read straight from the state_dict's plain ``weight`` tensors."""
    state = model.state_dict()
    zeros = sum(int((state[f"{n}.weight"] == 0).sum()) for n in layers)
    return zeros / sum(state[f"{n}.weight"].numel() for n in layers)


def context(trainer: ToyTrainer, seed: int = 0) -> PruningContext:
    return PruningContext(trainer, trainer.epochs, trainer.steps_per_epoch, trainer.batches, seed)
