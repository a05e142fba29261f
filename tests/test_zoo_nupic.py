"""nupic.torch-style networks of the zoo: the key list of the published GSC checkpoint, forward equivalence with an
independent functional re-implementation of nupic.torch's k-winners (boosting with loaded duty cycles, k rules,
ties, break_ties, relu) on random weights, duty-cycle updates in train mode, and the registry entries."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from kwta_robust.checkpoint import load_byo_model
from kwta_robust.errors import ConfigError
from kwta_robust.models import create_model, describe_model
from kwta_robust.zoo import nupic_gsc_sparse_cnn, nupic_sparse_cnn
from kwta_robust.zoo.nupic_layers import KWinners, KWinners2d, SparseWeights2d, rezero_weights, update_boost_strength


def _bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.running_mean": (c,), f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


def _kwinner(prefix: str, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.boost_strength": (), f"{prefix}.duty_cycle": shape}


#: ``gsc_sparse_cnn-7bc3782d.pth`` (nupic.torch ``GSCSparseCNN()``, re-saved when SparseWeights switched to a
#: ``zero_mask`` buffer): sparse convs/linear as ``.module`` + ``.zero_mask`` (float16), BatchNorms without affine
#: parameters, k-winners with ``boost_strength`` and ``duty_cycle`` buffers.
GSC_KEYS = {
    "cnn1.zero_mask": (64, 1, 5, 5), "cnn1.module.weight": (64, 1, 5, 5), "cnn1.module.bias": (64,),
    **_bn("cnn1_batchnorm", 64), **_kwinner("cnn1_kwinner", (1, 64, 1, 1)),
    "cnn2.zero_mask": (64, 64, 5, 5), "cnn2.module.weight": (64, 64, 5, 5), "cnn2.module.bias": (64,),
    **_bn("cnn2_batchnorm", 64), **_kwinner("cnn2_kwinner", (1, 64, 1, 1)),
    "linear.zero_mask": (1000, 1600), "linear.module.weight": (1000, 1600), "linear.module.bias": (1000,),
    **_bn("linear_bn", 1000), **_kwinner("linear_kwinner", (1000,)),
    "output.weight": (12, 1000), "output.bias": (12,),
}


def random_nupic_state(keys: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, Tensor]:
    """Random values of the checkpoint's dtypes: masks float16 0/1 (weights zero under them), duty cycles in
    [0, 0.3], boost strengths around 1."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, Tensor] = {}
    for key, shape in keys.items():
        if key.endswith("zero_mask"):
            state[key] = (torch.rand(shape, generator=gen) < 0.5).half()
        elif key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        elif key.endswith("duty_cycle"):
            state[key] = torch.rand(shape, generator=gen) * 0.3
        elif key.endswith("boost_strength"):
            state[key] = torch.rand((), generator=gen) + 0.75
        else:
            state[key] = torch.randn(shape, generator=gen) * 0.2
    for key in [k for k in keys if k.endswith("module.weight")]:
        state[key] = state[key].masked_fill(state[key.replace("module.weight", "zero_mask")].bool(), 0.0)
    return state


# --- independent re-implementation of nupic.torch's k-winners ------------------------------------------------------


def ref_kwinners(x: Tensor, duty: Tensor, beta: float, k: int, groups: str) -> Tensor:
    """Winners on x·exp(-β·dc): every unit >= the k-th largest boosted score of its group (``"sample"``: all
    units of a sample; ``"channels"``: the C channels at each position) keeps x, the rest is 0."""
    boosted = x * torch.exp(-beta * duty)
    if groups == "sample":
        flat = boosted.reshape(x.shape[0], -1)
        kth = flat.sort(dim=1, descending=True).values[:, k - 1].reshape((-1,) + (1,) * (x.ndim - 1))
    else:
        kth = boosted.sort(dim=1, descending=True).values[:, k - 1 : k]
    return torch.where(boosted >= kth, x, torch.zeros_like(x))


def ref_gsc(x: Tensor, s: dict, local: bool, p1: float, p2: float, p_lin: float) -> Tensor:
    def bn(h: Tensor, name: str) -> Tensor:
        return F.batch_norm(h, s[f"{name}.running_mean"], s[f"{name}.running_var"], None, None, False, 0.0, 1e-5)

    def kw(h: Tensor, name: str, p: float) -> Tensor:
        n = h.shape[1] if local else h[0].numel()
        return ref_kwinners(h, s[f"{name}.duty_cycle"], s[f"{name}.boost_strength"].item(), round(n * p),
                            "channels" if local else "sample")

    h = kw(bn(F.conv2d(x, s["cnn1.module.weight"], s["cnn1.module.bias"]), "cnn1_batchnorm"), "cnn1_kwinner", p1)
    h = F.max_pool2d(h, 2)
    h = kw(bn(F.conv2d(h, s["cnn2.module.weight"], s["cnn2.module.bias"]), "cnn2_batchnorm"), "cnn2_kwinner", p2)
    h = F.max_pool2d(h, 2).flatten(1)
    h = kw(bn(F.linear(h, s["linear.module.weight"], s["linear.module.bias"]), "linear_bn"), "linear_kwinner", p_lin)
    return F.log_softmax(F.linear(h, s["output.weight"], s["output.bias"]), dim=1)


# --- tests ----------------------------------------------------------------------------------------------------------


def test_gsc_model_has_the_published_keys_and_loads_them(tmp_path) -> None:
    model = nupic_gsc_sparse_cnn()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == GSC_KEYS
    assert model.state_dict()["cnn1.zero_mask"].dtype == torch.float16
    state = random_nupic_state(GSC_KEYS)
    torch.save(state, tmp_path / "gsc_sparse_cnn-7bc3782d.pth")
    loaded = load_byo_model("kwta_robust.zoo:nupic_gsc_sparse_cnn", tmp_path / "gsc_sparse_cnn-7bc3782d.pth")
    layer = loaded.model.cnn2_kwinner
    assert layer._cached_boost_strength == state["cnn2_kwinner.boost_strength"].item()  # cached on load
    assert torch.equal(layer.duty_cycle, state["cnn2_kwinner.duty_cycle"])
    described = describe_model(loaded.model)  # the record's model description
    assert described["activation"] == "kwta" and described["num_kwta_layers"] == 3 and \
        described["kwta_mode"] == "volume"
    assert described["kwta_layers"]["linear_kwinner"]["ratio"] == 0.1
    assert described["boost_strength"] is None  # the three loaded boost strengths differ
    # measured weight sparsity sees the masked weights of the wrapped layers
    assert described["weight_sparsity"]["layers"]["cnn1.module"] == pytest.approx(
        float(state["cnn1.zero_mask"].float().mean()), abs=1e-6)


@pytest.mark.parametrize("local", [False, True])
def test_gsc_forward_equals_the_original_semantics(local: bool) -> None:
    model = nupic_gsc_sparse_cnn(cnn_out_channels=(8, 8), linear_units=40, kwinner_local=local, k_inference_factor=1.5)
    keys = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    state = random_nupic_state(keys, seed=3)
    model.load_state_dict(state)
    x = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours = model.eval()(x)
    # eval-mode k: 2-D round(n · p · 1.5); dense int(round(n · p) · 1.5)
    p1, p2 = 0.095 * 1.5, 0.125 * 1.5
    lin_k_ratio = int(round(40 * 0.1) * 1.5) / 40
    torch.testing.assert_close(ours, ref_gsc(x, state, local, p1, p2, lin_k_ratio), rtol=1e-5, atol=1e-6)


def test_k_rules_ties_break_ties_and_relu() -> None:
    dense = KWinners(n=10, percent_on=0.25, k_inference_factor=1.5, boost_strength=0.0)
    assert (dense.k, dense.k_inference) == (2, 3)  # round(2.5) = 2 (half to even), int(2 · 1.5) = 3
    layer = KWinners2d(channels=2, percent_on=0.1, k_inference_factor=1.5, boost_strength=0.0)
    x = torch.zeros(1, 2, 5, 5)
    assert (layer.k_for(x, True), layer.k_for(x, False)) == (5, 8)  # round(50 · 0.1), round(50 · 0.1 · 1.5 = 7.5000…01)
    ties = torch.tensor([[4.0, 3.0, 3.0, 3.0, 1.0, 0.5, 0.2, 0.1, 0.0, -1.0]])
    dense.eval()
    assert int((dense(ties) != 0).sum()) == 4  # k = 3, the 3rd largest is 3: all three 3s win
    strict = KWinners(n=10, percent_on=0.25, k_inference_factor=1.5, boost_strength=0.0, break_ties=True).eval()
    assert int((strict(ties) != 0).sum()) == 3
    negative = -torch.arange(1.0, 11.0).view(1, 10)
    relu = KWinners(n=10, percent_on=0.25, k_inference_factor=1.5, boost_strength=0.0, relu=True).eval()
    assert int((relu(negative) != 0).sum()) == 0 and int((dense(negative) != 0).sum()) == 3
    with pytest.raises(ValueError, match="percent_on"):
        KWinners(n=10, percent_on=0.8, k_inference_factor=1.5)


def test_boosting_changes_winners_and_duty_cycles_update_only_in_train_mode() -> None:
    layer = KWinners(n=4, percent_on=0.25, k_inference_factor=1.0, boost_strength=2.0, boost_strength_factor=0.5,
                     duty_cycle_period=10)
    x = torch.tensor([[1.0, 0.9, 0.0, 0.0], [1.0, 0.9, 0.0, 0.0]])
    layer.train()
    assert layer(x)[:, 0].tolist() == [1.0, 1.0]
    assert layer.duty_cycle.tolist() == [1.0, 0.0, 0.0, 0.0]  # period = min(10, 2) = 2: (0·0 + 2) / 2
    layer(x[:1])  # unit 1 wins now (exp(-2·1) damps unit 0); period 3: dc = (dc·2 + [0, 1, 0, 0]) / 3
    assert layer.duty_cycle.tolist() == pytest.approx([2 / 3, 1 / 3, 0.0, 0.0])
    before = layer.duty_cycle.clone()
    layer.eval()
    layer(x)
    assert torch.equal(layer.duty_cycle, before)
    update_boost_strength(layer)
    assert layer._cached_boost_strength == 1.0 and float(layer.boost_strength) == 1.0


def test_sparse_weights_masks_and_rezero() -> None:
    conv = SparseWeights2d(torch.nn.Conv2d(3, 4, 5), sparsity=0.4, seed=1)
    per_channel = (conv.zero_mask.view(4, -1) == 0).sum(1)
    assert per_channel.tolist() == [45] * 4  # round(0.6 · 75) non-zeros per output channel
    assert bool((conv.module.weight[conv.zero_mask.bool()] == 0).all())
    with torch.no_grad():
        conv.module.weight.add_(1.0)
    conv.apply(rezero_weights)
    assert bool((conv.module.weight[conv.zero_mask.bool()] == 0).all())
    again = SparseWeights2d(torch.nn.Conv2d(3, 4, 5), sparsity=0.4, seed=1)
    assert torch.equal(again.zero_mask, conv.zero_mask)  # seeded, not the global generator


def test_mnist_model_keys_normalization_and_registry() -> None:
    model = nupic_sparse_cnn()
    assert list(model.state_dict()) == [
        "cnn1.zero_mask", "cnn1.module.weight", "cnn1.module.bias", "cnn1_kwinner.boost_strength",
        "cnn1_kwinner.duty_cycle", "cnn2.zero_mask", "cnn2.module.weight", "cnn2.module.bias",
        "cnn2_kwinner.boost_strength", "cnn2_kwinner.duty_cycle", "linear.zero_mask", "linear.module.weight",
        "linear.module.bias", "linear_kwinner.boost_strength", "linear_kwinner.duty_cycle", "output.weight",
        "output.bias"]
    assert model.linear.module.in_features == 16 * 64
    x = torch.rand(2, 1, 28, 28)
    plain = nupic_sparse_cnn(mean=None, std=None)
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():  # the [0, 1] model equals the original fed with normalized inputs
        torch.testing.assert_close(model.eval()(x), plain.eval()((x - 0.1307) / 0.3081))
    reg = create_model("nupic-sparse-cnn", {"name": "kwta", "ratio": 0.15, "mode": "local", "boost_strength": 1.5})
    assert reg.cnn1_kwinner.local and reg.linear_kwinner.percent_on == 0.15 and \
        reg.cnn2_kwinner._cached_boost_strength == 1.5
    twin = create_model("nupic-gsc-sparse-cnn", "relu", num_classes=12, input_size=32)
    assert isinstance(twin.cnn1_kwinner, torch.nn.ReLU)
    with pytest.raises(ConfigError, match="not an absolute k"):
        create_model("nupic-sparse-cnn", {"name": "kwta", "k": 5})
    with pytest.raises(ConfigError, match="percent_on"):
        nupic_sparse_cnn(cnn_percent_on=(0.1, 1.2))


def test_training_keeps_the_weights_sparse_and_decays_boosting_as_nupic_torch_does() -> None:
    """``train_model`` zeroes the masked weights again after every optimizer step and decays β once per epoch (the
    ``SparseWeights`` forward does not mask: without the re-zeroing the first convolution ended dense)."""
    from kwta_robust.data import TensorData
    from kwta_robust.training.config import TrainConfig
    from kwta_robust.training.loop import train_model

    model = nupic_sparse_cnn(boost_strength=1.5, boost_strength_factor=0.85)
    g = torch.Generator().manual_seed(0)
    data = TensorData(torch.rand(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g), "random", 10,
                      torch.arange(64))
    train_model(model, data, TrainConfig(epochs=2, batch_size=32, lr=0.01), "cpu")
    sparse = [m for m in model.modules() if isinstance(m, SparseWeights2d)] + [model.linear]
    for module in sparse:
        masked = module.zero_mask.bool()
        assert bool((module.weight[masked] == 0).all()) and bool((module.weight[~masked] != 0).any())
    gates = [m for m in model.modules() if isinstance(m, (KWinners, KWinners2d))]
    assert all(abs(m.boost_strength.item() - 1.5 * 0.85 ** 2) < 1e-6 for m in gates)
