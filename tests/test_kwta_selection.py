"""The kWTA layer's faster paths (issue 13) keep its numbers: NumPy's selection gives the threshold ``torch.topk``
gives (ties, NaN, infinities, signed zeros, every mode and k), the masked product's gradient is autograd's, and in
channels-last the gradient keeps the feature maps' layout (no copy in the max-pooling's backward pass)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import kwta_robust.layers as layers
from kwta_robust.layers import KWTA2d, ActivationSpec, group_size, kwta, kwta_threshold
from kwta_robust.models import create_model
from kwta_robust.runtime import channels_last_convolutions

SHAPES = {"dense": (5, 40), "volume": (4, 3, 5, 6), "channel": (4, 3, 5, 6), "local": (4, 7, 3, 2)}


def awkward(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Rounded values (many ties), and in some groups NaN, +-inf and -0.0."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype).round(decimals=1)
    x[0].view(-1)[3] = float("nan")
    x[1].view(-1)[:2] = float("inf")
    x[1].view(-1)[2] = float("-inf")
    x[2].view(-1)[:4] = -0.0
    return x


def torch_selection(monkeypatch) -> None:
    monkeypatch.setattr(layers, "_select_on_host", lambda flat: False)


@pytest.fixture
def one_thread():
    """The package's default of one torch thread (the host selection's condition), restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("mode", list(SHAPES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_host_selection_gives_the_topk_threshold(mode: str, dtype: torch.dtype, monkeypatch, one_thread) -> None:
    x = awkward(SHAPES[mode], dtype)
    assert layers._select_on_host(layers._grouped(x, mode)[0])
    ks = range(1, group_size(x.shape, mode) + 1)
    host = [(kwta_threshold(x, k, mode), kwta(x, k, mode)) for k in ks]
    torch_selection(monkeypatch)
    for k, (thr, out) in zip(ks, host):
        expected = kwta_threshold(x, k, mode)
        assert thr.dtype == dtype and thr.shape == expected.shape
        assert torch.equal(thr.isnan(), expected.isnan()) and torch.equal(thr.nan_to_num(), expected.nan_to_num())
        assert torch.equal(out.isnan(), kwta(x, k, mode).isnan())
        assert torch.equal(out.nan_to_num(), kwta(x, k, mode).nan_to_num())


def test_channels_last_groups_select_in_memory_order(one_thread) -> None:
    x = awkward((4, 3, 5, 6), torch.float32, seed=1)
    cl = x.contiguous(memory_format=torch.channels_last)
    assert layers._select_on_host(layers._grouped(cl, "volume")[0])
    for k in (1, 7, 45, 90):
        assert torch.equal(kwta(cl, k, "volume").nan_to_num(), kwta(x, k, "volume").nan_to_num())


def test_host_selection_only_where_it_applies(one_thread) -> None:
    x = torch.randn(4, 30)
    assert layers._select_on_host(x)
    assert not layers._select_on_host(x.requires_grad_(True))
    assert not layers._select_on_host(x.detach().half()) and not layers._select_on_host(x.detach().bfloat16())
    one_thread_values = [kwta_threshold(awkward(SHAPES[m], torch.float32), 9, m) for m in SHAPES]
    torch.set_num_threads(2)  # torch.topk splits the groups across threads, NumPy would not
    assert not layers._select_on_host(x.detach())
    for mode, host in zip(SHAPES, one_thread_values):  # several threads (torch.topk): the same thresholds
        expected = kwta_threshold(awkward(SHAPES[mode], torch.float32), 9, mode)
        assert torch.equal(host.isnan(), expected.isnan()) and torch.equal(host.nan_to_num(), expected.nan_to_num())
    half = torch.randn(4, 30, generator=torch.Generator().manual_seed(0)).half()
    assert torch.equal(kwta(half, 5, "dense"), kwta(half.float(), 5, "dense").half())


def test_masked_product_gradient_is_autograds() -> None:
    x = torch.randn(6, 8, 5, 5, generator=torch.Generator().manual_seed(0), requires_grad=True)
    grad = torch.randn(6, 8, 5, 5, generator=torch.Generator().manual_seed(1))
    ours = torch.autograd.grad(kwta(x, 20, "volume"), x, grad)[0]
    mask = (x.detach() >= kwta_threshold(x.detach(), 20, "volume")).to(x.dtype)
    assert torch.equal(ours, torch.autograd.grad(x * mask, x, grad)[0])
    first = torch.autograd.grad(kwta(x, 20, "volume").pow(2).sum(), x, create_graph=True)[0]
    second = torch.autograd.grad(first.sum(), x)[0]  # d/dx of 2 x mask: 2 mask
    assert torch.equal(second, 2 * mask)


def test_channels_last_gradient_keeps_the_layout() -> None:
    """conv → max-pool → kWTA → flatten in channels-last: the gradient reaching the max-pooling is channels-last
    (autograd's product would return the flatten's NCHW layout, which the pooling's backward pass copies)."""
    block = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.MaxPool2d(2), KWTA2d(ratio=0.2), nn.Flatten())
    block = block.to(memory_format=torch.channels_last).eval()
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)).contiguous(
        memory_format=torch.channels_last).requires_grad_(True)
    seen = []
    block[2].register_full_backward_hook(lambda module, grad_in, grad_out: seen.append(grad_in[0]))
    grad = torch.autograd.grad(block(x).sum(), x)[0]
    assert seen[0].is_contiguous(memory_format=torch.channels_last)
    nchw = block.to(memory_format=torch.contiguous_format)
    plain = x.detach().contiguous().requires_grad_(True)
    assert torch.allclose(grad, torch.autograd.grad(nchw(plain).sum(), plain)[0], atol=1e-6)


def _previous_apply_mask(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The product before issue 13: autograd's own ``x * mask`` when a graph is built."""
    return x * mask if torch.is_grad_enabled() and x.requires_grad else mask.mul_(x)


@pytest.mark.parametrize("mode", ["volume", "channel", "local"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_kwta_cnn_logits_and_input_gradients_are_the_previous_implementations(
        mode: str, channels_last: bool, monkeypatch, one_thread) -> None:
    """The small kWTA CNN (kWTA after each convolution in ``mode``, dense kWTA after the hidden linear layer),
    NCHW and as the evaluation runs it on the CPU (channels-last convolutions): logits and input gradients bit for bit
    those of ``torch.topk`` with autograd's product."""
    with torch.random.fork_rng(devices=[]):  # seeded weights; the global RNG state is left as it was
        torch.manual_seed(0)
        model = create_model("cnn", ActivationSpec("kwta", ratio=0.25, mode=mode), input_size=12).eval()
    x = torch.rand(16, 1, 12, 12, generator=torch.Generator().manual_seed(1))

    def logits_and_gradient() -> tuple[torch.Tensor, torch.Tensor]:
        with channels_last_convolutions([model] if channels_last else []):
            xg = (x.contiguous(memory_format=torch.channels_last) if channels_last else x.clone()).requires_grad_()
            logits = model(xg)
            grad = torch.autograd.grad(logits.logsumexp(dim=1).sum() - logits[:, 0].sum(), xg)[0]
            with torch.no_grad():
                assert torch.equal(model(xg), logits)  # the in-place product without a graph: same values
        return logits.detach(), grad

    calls = []
    partition = layers._partition_threshold
    monkeypatch.setattr(layers, "_partition_threshold", lambda *args: calls.append(1) or partition(*args))
    now = logits_and_gradient()
    assert len(calls) == 3 * 2  # every kWTA layer (1 < k < group size) selects on the host, in both forwards
    monkeypatch.setattr(layers, "_select_on_host", lambda flat: False)
    monkeypatch.setattr(layers, "apply_mask", _previous_apply_mask)
    before = logits_and_gradient()
    assert torch.equal(now[0], before[0]) and torch.equal(now[1], before[1])
    assert bool((now[1] != 0).any())  # a gradient reaches the input: the comparison is not between zeros
