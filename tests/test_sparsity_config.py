"""Pruning library: checkpoints of pruned models (masks made permanent, metadata measured from the tensors) and
one-line config errors naming the field."""

from __future__ import annotations

import pytest
import torch

from kwta_robust.checkpoint import load_checkpoint, save_checkpoint
from kwta_robust.errors import ConfigError
from kwta_robust.models import ModelSpec
from kwta_robust.sparsity import PruningConfig, measure_sparsity, train_pruned
from test_sparsity_helpers import ToyTrainer, accuracy, context, small_cnn, toy_data, zeros_from_state

torch.set_num_threads(1)
SPEC_KW = dict(num_classes=3, in_channels=1, input_size=8, channels=[4, 8], hidden=16, kernel_size=3)


def test_pruned_checkpoint_round_trip(tmp_path):
    x, y = toy_data()
    spec = ModelSpec.from_args("cnn", activation="relu", **SPEC_KW)
    torch.manual_seed(0)
    model = spec.build()
    outcome = train_pruned(model, PruningConfig(method="global-magnitude", sparsity=0.8),
                           context(ToyTrainer(x, y, epochs=2)))
    path = save_checkpoint(tmp_path / "pruned.pt", model, spec, {"pruning": outcome.metadata()})
    loaded = load_checkpoint(path)
    state = loaded.model.state_dict()
    assert not any(k.endswith(("_orig", "_mask")) for k in state)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert torch.equal(loaded.model(x), model.eval()(x))
    meta = loaded.metadata
    assert meta["pruning"]["measured_sparsity"] == pytest.approx(zeros_from_state(loaded.model, outcome.pruned_layers))
    assert meta["pruning"]["method"] == "global-magnitude" and meta["pruning"]["target_sparsity"] == 0.8
    assert meta["weight_sparsity"]["overall"] == pytest.approx(measure_sparsity(loaded.model).overall)
    assert accuracy(loaded.model, x, y) == accuracy(model, x, y)


@pytest.mark.parametrize(
    "data, field",
    [
        ({"method": "magnitude", "sparsity": 1.0}, "pruning.sparsity"),
        ({"method": "magnitude", "sparsity": -0.1}, "pruning.sparsity"),
        ({"method": "magnitude", "sparsity": float("nan")}, "pruning.sparsity"),
        ({"method": "magnitude", "sparsity": "0.5"}, "pruning.sparsity"),
        ({"method": "optimal-brain-damage", "sparsity": 0.5}, "pruning.method"),
        ({"method": "magnitude"}, "pruning.sparsity"),
        ({"method": "magnitude", "sparsity": 0.5, "typo": 1}, "pruning: unknown key"),
        ({"method": "magnitude", "sparsity": 0.5, "retrain": "rewind"}, "pruning.retrain"),
        ({"method": "magnitude", "sparsity": 0.5, "schedule": "one-shot", "rounds": 3}, "pruning.rounds"),
        ({"method": "snip", "sparsity": 0.5, "rounds": 2}, "pruning.rounds"),
        ({"method": "rigl", "sparsity": 0.5, "scope": "global"}, "pruning.scope"),
        ({"method": "magnitude", "sparsity": 0.5, "layer_types": ["conv3x3"]}, "pruning.layer_types"),
    ],
)
def test_bad_pruning_config_is_one_line_config_error(data, field):
    with pytest.raises(ConfigError) as info:
        PruningConfig.from_dict(data)
    message = str(info.value)
    assert field in message and "\n" not in message


def test_rewind_epoch_beyond_training_fails_before_training():
    x, y = toy_data()
    trainer = ToyTrainer(x, y, epochs=2)
    cfg = PruningConfig(method="magnitude", sparsity=0.5, retrain="rewind-weights", rewind_epoch=2)
    with pytest.raises(ConfigError, match="pruning.rewind_epoch"):
        train_pruned(small_cnn(), cfg, context(trainer))
    assert trainer.segments == []


def test_config_round_trip():
    cfg = PruningConfig(method="magnitude", sparsity=0.9, rounds=3, retrain="rewind-lr", rewind_epoch=1)
    assert PruningConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.effective_scope == "layerwise"
    assert PruningConfig(method="snip", sparsity=0.5).effective_scope == "global"
