"""Pins from the README / docstring audit of weight sparsity and training (``kwta_robust/sparsity``,
``kwta_robust/training``): RigL's dense gradient is the whole gradient of a training step (TRADES does two
train-mode forwards), a method refuses a scope or rounds it does not support, and the dense phase of pruning is the
unpruned run."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from kwta_robust.cli import main
from kwta_robust.data import load_dataset
from kwta_robust.models import create_model
from kwta_robust.sparsity import RigL, TrainSegment, prunable_modules
from kwta_robust.training import METHODS, LoopTrainer, TrainConfig, train_model
from test_sparsity_helpers import small_cnn, toy_data

TINY = {"channels": [4, 8], "hidden": 16, "kernel_size": 3}


def _dense_gradients(model: torch.nn.Module, method: str, cfg: TrainConfig, x, y) -> dict[str, torch.Tensor]:
    """The gradient of one ``method`` step w.r.t. every prunable weight of an unmasked copy of ``model`` (the same
    values, the zeros as plain entries): the dense gradient RigL grows on."""
    state = model.state_dict()
    plain = {key.removesuffix("_orig"): value * state[key.removesuffix("_orig") + "_mask"] if key.endswith("_orig")
             else value for key, value in state.items() if not key.endswith("_mask")}
    twin = small_cnn(seed=2)
    twin.load_state_dict(plain)
    twin.train()
    loss, _ = METHODS[method](twin, x, y, cfg, torch.Generator().manual_seed(3))
    loss.backward()
    return {name: module.weight.grad.clone() for name, module in prunable_modules(twin).items()}


def test_rigl_keeps_the_whole_dense_gradient_of_a_trades_step_and_starts_afresh_each_step():
    # rigl.py: "the gradient the optimiser step used — dense, including inactive entries — is kept per layer";
    # a TRADES step runs the model twice in train mode (x and x'), so the step's gradient is the sum of both.
    x, y = toy_data(16)
    model = small_cnn(seed=2)
    modules = prunable_modules(model)
    rigl = RigL(modules, 0.5, total_steps=100, distribution="uniform", seed=1)
    rigl.install()
    cfg = TrainConfig(dataset="digits", method="trades", adversarial={"eps": 0.1, "steps": 2, "trades_beta": 6.0})
    model.train()
    loss, _ = METHODS["standard"](model, x[8:], y[8:], cfg, None)  # an earlier step on other samples
    loss.backward()
    rigl.after_step(model, 1)
    for p in model.parameters():
        p.grad = None
    expected = _dense_gradients(model, "trades", cfg, x[:8], y[:8])
    loss, _ = METHODS["trades"](model, x[:8], y[:8], cfg, torch.Generator().manual_seed(3))
    loss.backward()
    for name in modules:
        assert torch.allclose(rigl._grads[name], expected[name], rtol=1e-5, atol=1e-8), name
    rigl.remove()


@pytest.mark.parametrize("flags, line", [
    (["--prune", "rigl", "--sparsity", "0.5", "--prune-scope", "global"],
     "error: --prune-scope: method 'rigl' supports scope layerwise, got 'global'"),  # the flags' values: the flag
    (["--prune", "snip", "--sparsity", "0.5", "--prune-rounds", "2"],
     "error: --prune-rounds: method 'snip' prunes once (rounds: 1), got 2; iterative schedules apply to magnitude "
     "and global-magnitude"),
])
def test_a_method_refuses_a_scope_or_rounds_it_does_not_support(tmp_path, capsys, flags, line):
    out = tmp_path / "never.pt"
    code = main(["train", "--dataset", "digits", "--out", str(out), *flags])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists() and "Traceback" not in err
    assert err.strip() == line


def test_the_first_segment_of_pruned_training_is_the_unpruned_run():
    # training/pruning.py: "The first segment uses the batch-order stage 0 (the dense phase of magnitude pruning is
    # the same run as unpruned training with the same seed)"
    data = load_dataset("digits", "train").subset(slice(0, 160))
    cfg = TrainConfig(dataset="digits", epochs=1, batch_size=64, arch_kwargs=TINY)

    def fresh() -> torch.nn.Module:
        torch.manual_seed(0)
        return create_model("cnn", activation="relu", num_classes=10, in_channels=1, input_size=8, **TINY)

    unpruned, dense = fresh(), fresh()
    train_model(unpruned, data, cfg, "cpu")
    LoopTrainer(data, dataclasses.replace(cfg, pruning={"method": "magnitude", "sparsity": 0.5}),
                torch.device("cpu"))(dense, TrainSegment("dense", 1))
    trained, start = unpruned.state_dict(), fresh().state_dict()
    assert list(trained) == list(dense.state_dict())
    assert all(torch.equal(trained[key], value) for key, value in dense.state_dict().items())
    assert not torch.equal(trained["features.0.weight"], start["features.0.weight"])  # it did train
