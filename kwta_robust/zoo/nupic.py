"""The sparse CNNs of Ahmad & Scheinkman, *How Can We Be So Dense?* (2019), as nupic.torch defines them
(``models/sparse_cnn.py``: ``MNISTSparseCNN``, ``GSCSparseCNN``), built from :mod:`kwta_robust.zoo.nupic_layers`
with the same module names, so the state_dict keys are nupic.torch's.

* :func:`nupic_sparse_cnn` (registered ``nupic-sparse-cnn``) — ``MNISTSparseCNN``: ``cnn1`` (sparse 5×5 conv) →
  ``cnn1_maxpool`` → ``cnn1_kwinner`` → ``cnn2`` → ``cnn2_maxpool`` → ``cnn2_kwinner`` → ``flatten`` → ``linear``
  (sparse) → ``linear_kwinner`` → ``output`` → ``softmax`` (log-softmax). Defaults as nupic.torch: channels
  (32, 64), percent on (0.1, 0.2) and 0.2, 700 units, weight sparsity (0.4, 0.55) and 0.8, β = 1.5 decayed by
  0.85, ``k_inference_factor`` 1.0. nupic.torch's MNIST example normalizes with mean 0.1307, std 0.3081 outside
  the model; here that normalization is inside (the defaults of ``mean``/``std``; no state_dict entries), so the
  model takes [0, 1] pixels. No checkpoint of it is published. A layer of weight sparsity 0 (``cnn_sparsity``,
  ``linear_sparsity``; ``--arch-arg linear_sparsity=0``) is the plain ``nn.Conv2d`` / ``nn.Linear``, in both
  networks: with all three at 0, the dense twin of the same network.
* :func:`nupic_gsc_sparse_cnn` (registered ``nupic-gsc-sparse-cnn``) — ``GSCSparseCNN`` for 1×32×32 Google Speech
  Commands log-mel spectrograms, 12 classes: ``cnn1`` → ``cnn1_batchnorm`` (no affine) → ``cnn1_kwinner`` →
  ``cnn1_maxpool`` → ``cnn2`` … → ``flatten`` → ``linear`` → ``linear_bn`` → ``linear_kwinner`` → ``output`` →
  ``softmax``; a conv with sparsity 0 is a plain ``Conv2d`` (keys ``cnnN.weight`` instead of
  ``cnnN.module.weight``). Its keys are those of the published ``gsc_sparse_cnn-7bc3782d.pth`` (and, with
  ``linear_units=1500, linear_sparsity=0.95``, ``gsc_super_sparse_cnn-d412de15.pth``): weights, ``zero_mask``
  buffers, BatchNorm running statistics, ``boost_strength`` and ``duty_cycle``. Spectrograms are not [0, 1]
  images: scale them into [0, 1] for the data file and pass the inverse map as ``mean``/``std``
  (``x_model = (x − mean) / std``: for a spectrogram range [lo, hi] scaled to [0, 1], ``mean = −lo / (hi − lo)``,
  ``std = 1 / (hi − lo)``).

The outputs are log-probabilities (nupic.torch ends with ``LogSoftmax``); they are logits shifted by a per-sample
constant, so cross-entropy, margins and predictions are those of the logits.

**Training** these with ``kwta-robust train`` runs the k-winners in train mode (duty cycles update) and, as
nupic.torch's training loop, sets the masked weights to zero again after every optimizer step and decays β by
``boost_strength_factor`` after every epoch (:mod:`kwta_robust.training.loop`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

from torch import nn

from kwta_robust.errors import ConfigError
from kwta_robust.layers import ActivationSpec
from kwta_robust.models.registry import register_model
from kwta_robust.zoo.common import input_normalization
from kwta_robust.zoo.nupic_layers import KWinners, KWinners2d, SparseWeights, SparseWeights2d

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


def _side_after_convs(input_size: int) -> int:
    """Side of the maps after two (5×5 valid conv, 2×2 max pool) stages."""
    side = ((input_size - 4) // 2 - 4) // 2
    if side < 1:
        raise ConfigError(f"input_size: {input_size} is too small for two 5×5 convolutions with 2×2 pooling (>= 16)")
    return side


class _Gates:
    """Builds the k-winners of one network (or ReLUs for the dense twin) with shared boosting settings."""

    def __init__(self, relu_twin: bool, k_inference_factor: float, boost_strength: float, boost_strength_factor: float,
                 duty_cycle_period: int, local: bool) -> None:
        self.relu_twin, self.local = relu_twin, local
        self.common = dict(k_inference_factor=k_inference_factor, boost_strength=boost_strength,
                           boost_strength_factor=boost_strength_factor, duty_cycle_period=duty_cycle_period)

    def spatial(self, channels: int, percent_on: float) -> nn.Module:
        if self.relu_twin:
            return nn.ReLU()
        return KWinners2d(channels=channels, percent_on=percent_on, local=self.local, **self.common)

    def dense(self, units: int, percent_on: float) -> nn.Module:
        return nn.ReLU() if self.relu_twin else KWinners(n=units, percent_on=percent_on, **self.common)


def _normalized(layers: list[tuple[str, nn.Module]], in_channels: int, mean, std) -> nn.Sequential:
    norm = input_normalization(in_channels, mean, std)
    return nn.Sequential(OrderedDict(([("normalize", norm)] if norm is not None else []) + layers))


def _sparse(layer: nn.Conv2d | nn.Linear, sparsity: float, seed: int) -> nn.Module:
    """``layer`` with a fixed random mask zeroing a ``sparsity`` fraction of its weights (``SparseWeights2d`` /
    ``SparseWeights``), or, at sparsity 0, the plain layer (keys ``cnn1.weight`` instead of ``cnn1.module.weight``),
    as nupic.torch's GSC network builds a conv of sparsity 0: the dense twin of the same network (the MNIST network
    refused sparsity 0 in one line that named no way to a dense twin)."""
    if sparsity == 0:
        return layer
    wrapper = SparseWeights2d if isinstance(layer, nn.Conv2d) else SparseWeights
    return wrapper(layer, sparsity=sparsity, seed=seed)


def _mnist_sparse_cnn(gates: _Gates, cnn_out_channels: Sequence[int], cnn_percent_on: Sequence[float],
                      linear_units: int, linear_percent_on: float, cnn_sparsity: Sequence[float],
                      linear_sparsity: float, num_classes: int, in_channels: int, input_size: int, mean, std,
                      seed: int) -> nn.Sequential:
    c1, c2 = (int(c) for c in cnn_out_channels)
    side = _side_after_convs(input_size)
    return _normalized([
        ("cnn1", _sparse(nn.Conv2d(in_channels, c1, 5), cnn_sparsity[0], seed)),
        ("cnn1_maxpool", nn.MaxPool2d(2)),
        ("cnn1_kwinner", gates.spatial(c1, cnn_percent_on[0])),
        ("cnn2", _sparse(nn.Conv2d(c1, c2, 5), cnn_sparsity[1], seed + 1)),
        ("cnn2_maxpool", nn.MaxPool2d(2)),
        ("cnn2_kwinner", gates.spatial(c2, cnn_percent_on[1])),
        ("flatten", nn.Flatten()),
        ("linear", _sparse(nn.Linear(side * side * c2, linear_units), linear_sparsity, seed + 2)),
        ("linear_kwinner", gates.dense(linear_units, linear_percent_on)),
        ("output", nn.Linear(linear_units, num_classes)),
        ("softmax", nn.LogSoftmax(dim=1)),
    ], in_channels, mean, std)


def _gsc_sparse_cnn(gates: _Gates, cnn_out_channels: Sequence[int], cnn_percent_on: Sequence[float],
                    linear_units: int, linear_percent_on: float, cnn_sparsity: Sequence[float], linear_sparsity: float,
                    num_classes: int, in_channels: int, input_size: int, mean, std, seed: int) -> nn.Sequential:
    c1, c2 = (int(c) for c in cnn_out_channels)
    side = _side_after_convs(input_size)

    def conv(i: int, cin: int, cout: int) -> nn.Module:
        return _sparse(nn.Conv2d(cin, cout, 5), cnn_sparsity[i], seed + i)

    return _normalized([
        ("cnn1", conv(0, in_channels, c1)),
        ("cnn1_batchnorm", nn.BatchNorm2d(c1, affine=False)),
        ("cnn1_kwinner", gates.spatial(c1, cnn_percent_on[0])),
        ("cnn1_maxpool", nn.MaxPool2d(2)),
        ("cnn2", conv(1, c1, c2)),
        ("cnn2_batchnorm", nn.BatchNorm2d(c2, affine=False)),
        ("cnn2_kwinner", gates.spatial(c2, cnn_percent_on[1])),
        ("cnn2_maxpool", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("linear", _sparse(nn.Linear(side * side * c2, linear_units), linear_sparsity, seed + 2)),
        ("linear_bn", nn.BatchNorm1d(linear_units, affine=False)),
        ("linear_kwinner", gates.dense(linear_units, linear_percent_on)),
        ("output", nn.Linear(linear_units, num_classes)),
        ("softmax", nn.LogSoftmax(dim=1)),
    ], in_channels, mean, std)


def _pairs(**values: Sequence) -> None:
    for name, value in values.items():
        if len(value) != 2:
            raise ConfigError(f"{name}: give two values (one per conv layer), got {list(value)!r}")


def _build(builder, relu_twin: bool, cnn_out_channels, cnn_percent_on, linear_units, linear_percent_on,
           boost_strength, boost_strength_factor, k_inference_factor, duty_cycle_period, kwinner_local, cnn_sparsity,
           linear_sparsity, num_classes, in_channels, input_size, mean, std, seed) -> nn.Sequential:
    _pairs(cnn_out_channels=cnn_out_channels, cnn_percent_on=cnn_percent_on, cnn_sparsity=cnn_sparsity)
    gates = _Gates(relu_twin, k_inference_factor, boost_strength, boost_strength_factor, duty_cycle_period,
                   kwinner_local)
    try:
        return builder(gates, cnn_out_channels, cnn_percent_on, int(linear_units), linear_percent_on, cnn_sparsity,
                       linear_sparsity, num_classes, in_channels, input_size, mean, std, int(seed))
    except ValueError as exc:  # the layers' own range checks (percent_on, sparsity, boost settings)
        raise ConfigError(str(exc)) from None


def nupic_sparse_cnn(*, cnn_out_channels: Sequence[int] = (32, 64), cnn_percent_on: Sequence[float] = (0.1, 0.2),
                     linear_units: int = 700, linear_percent_on: float = 0.2, boost_strength: float = 1.5,
                     boost_strength_factor: float = 0.85, k_inference_factor: float = 1.0,
                     duty_cycle_period: int = 1000, kwinner_local: bool = False,
                     cnn_sparsity: Sequence[float] = (0.4, 0.55), linear_sparsity: float = 0.8, num_classes: int = 10,
                     in_channels: int = 1, input_size: int = 28, mean: Sequence[float] | None = MNIST_MEAN,
                     std: Sequence[float] | None = MNIST_STD, seed: int = 0) -> nn.Sequential:
    """nupic.torch's ``MNISTSparseCNN`` (its defaults). ``[N, 1, 28, 28]`` in [0, 1] → log-probabilities
    ``[N, 10]``; ``seed`` draws the weight masks of a fresh model (a loaded state_dict replaces them)."""
    return _build(_mnist_sparse_cnn, False, cnn_out_channels, cnn_percent_on, linear_units, linear_percent_on,
                  boost_strength, boost_strength_factor, k_inference_factor, duty_cycle_period, kwinner_local,
                  cnn_sparsity, linear_sparsity, num_classes, in_channels, input_size, mean, std, seed)


def nupic_gsc_sparse_cnn(*, cnn_out_channels: Sequence[int] = (64, 64),
                         cnn_percent_on: Sequence[float] = (0.095, 0.125),
                         linear_units: int = 1000, linear_percent_on: float = 0.1, boost_strength: float = 1.5,
                         boost_strength_factor: float = 0.9, k_inference_factor: float = 1.0,
                         duty_cycle_period: int = 1000, kwinner_local: bool = False,
                         cnn_sparsity: Sequence[float] = (0.5, 0.8), linear_sparsity: float = 0.9,
                         num_classes: int = 12, in_channels: int = 1, input_size: int = 32,
                         mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                         seed: int = 0) -> nn.Sequential:
    """nupic.torch's ``GSCSparseCNN`` (its defaults; ``linear_units=1500, linear_sparsity=0.95`` is
    ``GSCSuperSparseCNN``). ``[N, 1, 32, 32]`` → log-probabilities ``[N, 12]`` (see the module docstring for
    the input scaling)."""
    return _build(_gsc_sparse_cnn, False, cnn_out_channels, cnn_percent_on, linear_units, linear_percent_on,
                  boost_strength, boost_strength_factor, k_inference_factor, duty_cycle_period, kwinner_local,
                  cnn_sparsity, linear_sparsity, num_classes, in_channels, input_size, mean, std, seed)


# --- registry entries: the activation's ratio is every layer's percent_on, its boost settings every layer's ------


def _from_activation(activation: ActivationSpec, arch: str) -> dict:
    if activation.name == "relu":
        return {"relu_twin": True, "percent_on": None, "boost_strength": 0.0, "k_inference_factor": 1.0, "local": False}
    if activation.ratio is None:
        raise ConfigError(f"arch {arch!r}: nupic k-winners take a ratio (percent_on), not an absolute k")
    if activation.mode not in ("volume", "local"):
        raise ConfigError(f"arch {arch!r}: kWTA mode {activation.mode!r} has no nupic counterpart; use volume or local")
    return {"relu_twin": False, "percent_on": activation.ratio, "boost_strength": activation.boost_strength,
            "k_inference_factor": activation.k_inference_factor, "local": activation.mode == "local"}


def _registered(builder, arch: str, activation: ActivationSpec, num_classes: int, in_channels: int, input_size: int,
                mean, std, cnn_out_channels, linear_units, cnn_sparsity, linear_sparsity, boost_strength_factor,
                duty_cycle_period, seed) -> nn.Sequential:
    a = _from_activation(activation, arch)
    p = a["percent_on"]
    return _build(builder, a["relu_twin"], cnn_out_channels, (p, p), linear_units, p, a["boost_strength"],
                  boost_strength_factor, a["k_inference_factor"], duty_cycle_period, a["local"], cnn_sparsity,
                  linear_sparsity, num_classes, in_channels, input_size, mean, std, seed)


@register_model("nupic-sparse-cnn")
def nupic_sparse_cnn_arch(activation: ActivationSpec, num_classes: int = 10, in_channels: int = 1, input_size: int = 28,
                          mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                          cnn_out_channels: Sequence[int] = (32, 64), linear_units: int = 700,
                          cnn_sparsity: Sequence[float] = (0.4, 0.55), linear_sparsity: float = 0.8,
                          boost_strength_factor: float = 0.85, duty_cycle_period: int = 1000,
                          seed: int = 0) -> nn.Sequential:
    """MNISTSparseCNN with every k-winners layer at the activation's ratio, β and k_inference_factor
    (``relu``: the same network with ReLUs)."""
    return _registered(_mnist_sparse_cnn, "nupic-sparse-cnn", activation, num_classes, in_channels, input_size, mean,
                       std, cnn_out_channels, linear_units, cnn_sparsity, linear_sparsity, boost_strength_factor,
                       duty_cycle_period, seed)


@register_model("nupic-gsc-sparse-cnn")
def nupic_gsc_sparse_cnn_arch(activation: ActivationSpec, num_classes: int = 12, in_channels: int = 1,
                              input_size: int = 32, mean: Sequence[float] | None = None,
                              std: Sequence[float] | None = None, cnn_out_channels: Sequence[int] = (64, 64),
                              linear_units: int = 1000, cnn_sparsity: Sequence[float] = (0.5, 0.8),
                              linear_sparsity: float = 0.9, boost_strength_factor: float = 0.9,
                              duty_cycle_period: int = 1000, seed: int = 0) -> nn.Sequential:
    """GSCSparseCNN with every k-winners layer at the activation's ratio, β and k_inference_factor."""
    return _registered(_gsc_sparse_cnn, "nupic-gsc-sparse-cnn", activation, num_classes, in_channels, input_size,
                       mean, std, cnn_out_channels, linear_units, cnn_sparsity, linear_sparsity, boost_strength_factor,
                       duty_cycle_period, seed)
