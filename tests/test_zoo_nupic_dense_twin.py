"""nupic.torch's MNIST sparse CNN with weight sparsity 0 is its dense twin (README persona walk 4: Ahmad &
Scheinkman compare sparse against dense networks of one architecture; ``--arch nupic-sparse-cnn --arch-arg
linear_sparsity=0`` stopped with "SparseWeights: sparsity must lie in (0, 1), got 0" and no way to a dense twin).
A layer of sparsity 0 is the plain ``nn.Conv2d`` / ``nn.Linear``, as nupic.torch's GSC network builds a dense conv."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kwta_robust.errors import ConfigError
from kwta_robust.models import create_model
from kwta_robust.zoo import nupic_gsc_sparse_cnn, nupic_sparse_cnn


def test_sparsity_zero_builds_the_dense_twin_of_the_mnist_network() -> None:
    dense = nupic_sparse_cnn(cnn_out_channels=(2, 3), linear_units=10, cnn_sparsity=(0.0, 0.0), linear_sparsity=0.0)
    assert [type(getattr(dense, n)) for n in ("cnn1", "cnn2", "linear")] == [nn.Conv2d, nn.Conv2d, nn.Linear]
    assert "cnn1.weight" in dense.state_dict() and not any("zero_mask" in k for k in dense.state_dict())
    assert all(bool((getattr(dense, n).weight != 0).all()) for n in ("cnn1", "cnn2", "linear"))
    torch.manual_seed(0)
    assert dense.eval()(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    mixed = nupic_sparse_cnn(cnn_out_channels=(2, 3), linear_units=10, cnn_sparsity=(0.4, 0.0))  # per layer
    assert "cnn1.zero_mask" in mixed.state_dict() and type(mixed.cnn2) is nn.Conv2d and "linear.zero_mask" in \
        mixed.state_dict()


def test_the_registry_entry_builds_it_from_the_arch_args_and_still_refuses_a_negative_sparsity() -> None:
    twin = create_model("nupic-sparse-cnn", activation="relu", cnn_out_channels=[2, 3], linear_units=10,
                        cnn_sparsity=[0, 0], linear_sparsity=0)
    assert type(twin.linear) is nn.Linear and type(twin.linear_kwinner) is nn.ReLU
    with pytest.raises(ConfigError, match=r"sparsity must lie in \(0, 1\), got -0.1"):
        create_model("nupic-sparse-cnn", activation="relu", linear_sparsity=-0.1)
    with pytest.raises(ConfigError, match=r"sparsity must lie in \(0, 1\), got -0.1"):  # it built a dense conv
        nupic_gsc_sparse_cnn(cnn_out_channels=(4, 4), linear_units=10, cnn_sparsity=(-0.1, 0.8))
