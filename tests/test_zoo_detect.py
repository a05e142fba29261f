"""The literature's networks of the zoo under the layer probe and BPDA: nupic.torch-style ``KWinners`` layers are
stand-alone modules (as in a user's own nupic network), so the probe must find them as top-k gates and
``bpda_layers: auto`` must reach them; Xiao et al.'s layers are BPDA-capable and found as gates too."""

from __future__ import annotations

import torch

from attacks.base import ThreatModel
from attacks.bpda import BPDA
from attacks.bpda_wrap import attached_backward
from kwta_robust.detect import GATE, detect_layers
from kwta_robust.zoo import nupic_sparse_cnn, xiao_spcnn
from kwta_robust.zoo.nupic_layers import KWinners, KWinners2d


def _inputs(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def _input_gradient(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    return x.grad


def test_probe_finds_every_nupic_kwinners_layer_as_a_gate() -> None:
    torch.manual_seed(0)
    model = nupic_sparse_cnn().eval()
    x, _ = _inputs(16)
    detection = detect_layers(model, x, seed=0)
    kwinners = [n for n, m in model.named_modules() if isinstance(m, (KWinners, KWinners2d))]
    assert len(kwinners) == 3
    assert detection.names(GATE) == kwinners
    assert detection.bpda_capable == []  # stand-alone layers: only the probe can find them
    groupings = {f.name: f.grouping for f in detection.layers if GATE in f.kinds}
    assert groupings == {"cnn1_kwinner": "volume", "cnn2_kwinner": "volume", "linear_kwinner": "dense"}
    assert set(detection.auto_targets()) == set(kwinners)


def test_probe_finds_xiao_gates_and_they_are_bpda_capable() -> None:
    torch.manual_seed(0)
    model = xiao_spcnn(0.1, 0.1).eval()
    x, _ = _inputs(16)
    detection = detect_layers(model, x, seed=0)
    assert detection.names(GATE) == detection.bpda_capable and len(detection.bpda_capable) == 5


def test_bpda_on_the_detected_nupic_gates_changes_the_gradient_and_leaves_the_model_as_it_was() -> None:
    torch.manual_seed(0)
    model = nupic_sparse_cnn().eval()
    x, y = _inputs()
    detection = detect_layers(model, x, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    exact = _input_gradient(model, x, y)
    attack = BPDA(surrogate="identity", inner="pgd", inner_params={"steps": 2}, layers=detection.auto_targets())
    x_adv = attack(model, x, y, ThreatModel("linf", 0.1))
    assert sorted(attack.last_switched_layers) == sorted(detection.names(GATE))
    assert (x_adv - x).abs().amax() <= 0.1 + 1e-6 and not torch.equal(x_adv, x)
    # straight-through through the three gates is not autograd's gradient through the winners only
    with attached_backward(model, detection.auto_targets()) as controllers:
        for controller in controllers.values():
            controller.set_backward("identity")
        surrogate = _input_gradient(model, x, y)
    assert not torch.allclose(surrogate, exact)
    assert torch.equal(_input_gradient(model, x, y), exact)  # restored: autograd again
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model._forward_hooks and all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_probe_finds_the_nupic_gates_on_mnist_with_trained_duty_cycles() -> None:
    """On MNIST the first convolution's constant background gives hundreds of equal values per channel, and with
    duty cycles that differ per channel the boosted ranking keeps every unit tied at its threshold: the counted
    winners vary, and the probe found only the later two gates before it broke such ties."""
    from kwta_robust.data import load_dataset

    torch.manual_seed(0)
    model = nupic_sparse_cnn().eval()
    g = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, (KWinners, KWinners2d)):  # as after training: a duty cycle per unit or channel
            module.duty_cycle.copy_(torch.rand(module.duty_cycle.shape, generator=g) * 0.2)
    x = load_dataset("mnist5k", "test").x[:32]
    detection = detect_layers(model, x, seed=0)
    assert detection.names(GATE) == ["cnn1_kwinner", "cnn2_kwinner", "linear_kwinner"]
    assert detection.finding("cnn1_kwinner").evidence.get("ties_broken") == 1e-2
    assert detection.selections == []
