"""BPDA on modules this package did not build (attacks/bpda_wrap.py, attacks/gates.py): the forward stays bit for
bit, the backward is the surrogate's, and the model is left exactly as it was."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from attacks import ThreatModel, create_attack
from attacks.base import AttackConfigError, margin_loss
from attacks.bpda_protocol import surrogate_backward
from attacks.bpda_wrap import LayerTarget, attached_backward, select_modules
from attacks.gates import gate_fit, infer_grouping, relaxed_gate
from kwta_robust.detect import detect_layers
from kwta_robust.layers import KWTA, KWTA2d
from kwta_robust.snapshot import ModelSnapshot


class ForeignTopK(nn.Module):
    """A top-k gate written outside the package: keep the k largest of each group (``>=`` the k-th value).

    ``grouping``: ``volume`` (per sample), ``channel`` (per sample and channel), ``local`` (per location)."""

    def __init__(self, ratio: float, grouping: str = "volume") -> None:
        super().__init__()
        self.ratio, self.grouping = ratio, grouping

    def forward(self, x: Tensor) -> Tensor:
        if self.grouping == "local":
            k = max(1, math.floor(self.ratio * x.shape[1]))
            threshold = x.topk(k, dim=1).values[:, -1:]
        else:
            flat = x.flatten(2) if self.grouping == "channel" else x.flatten(1)
            k = max(1, math.floor(self.ratio * flat.shape[-1]))
            threshold = flat.topk(k, dim=-1).values[..., -1:]
            if self.grouping == "channel":
                threshold = threshold.unsqueeze(-1)
            else:
                threshold = threshold.view(-1, *[1] * (x.ndim - 1))
        return x * (x >= threshold).to(x.dtype)


class RowTopK(nn.Module):
    """:func:`row_top_k` as a module."""

    def forward(self, x: Tensor) -> Tensor:
        return row_top_k(x)


class Step(nn.Module):
    """A hard threshold: its gradient is zero everywhere (piecewise constant)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.sign(x).clamp_min(0)


def seeded(build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build()


def conv_net(gate: nn.Module) -> nn.Sequential:
    """``[N, 1, 6, 6] → [N, 3]`` with ``gate`` after a convolution (same weights for every gate)."""
    return seeded(lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), gate, nn.Flatten(), nn.Linear(144, 3))).eval()


def input_gradient(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    xg = x.clone().requires_grad_(True)
    logits = model(xg)
    (grad,) = torch.autograd.grad(margin_loss(logits, logits.argmax(1)).sum(), xg)
    return logits.detach(), grad


def switched_gradient(model: nn.Module, targets: dict, spec: str, x: Tensor) -> tuple[Tensor, Tensor]:
    with attached_backward(model, targets) as controllers, surrogate_backward(model, spec, 0.5, controllers):
        return input_gradient(model, x)


X = torch.rand(6, 1, 6, 6, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("mode", ["volume", "channel", "local"])
@pytest.mark.parametrize("spec", ["identity", "smooth"])
def test_foreign_gate_gets_the_same_bpda_gradient_as_our_layer(mode: str, spec: str) -> None:
    native, foreign = conv_net(KWTA2d(ratio=0.25, mode=mode)), conv_net(ForeignTopK(0.25, mode))
    assert torch.equal(native(X), foreign(X))
    logits_n, grad_n = switched_gradient(native, {"1": LayerTarget()}, spec, X)
    for target in (LayerTarget("gate", mode), LayerTarget()):  # grouping from detection, or inferred per call
        logits_f, grad_f = switched_gradient(foreign, {"1": target}, spec, X)
        assert torch.equal(logits_f, logits_n)  # forward bit for bit
        torch.testing.assert_close(grad_f, grad_n, rtol=1e-5, atol=1e-7)
    _, exact = input_gradient(foreign, X)
    assert not torch.allclose(grad_f, exact)  # the surrogate's gradient, not autograd's


def test_dense_foreign_gate_matches_our_dense_layer() -> None:
    build = lambda gate: seeded(lambda: nn.Sequential(nn.Linear(8, 20), gate, nn.Linear(20, 3))).eval()  # noqa: E731
    native, foreign = build(KWTA(ratio=0.2)), build(ForeignTopK(0.2))
    x = torch.rand(5, 8, generator=torch.Generator().manual_seed(1))
    for spec in ("identity", "smooth"):
        _, grad_n = switched_gradient(native, {"1": LayerTarget()}, spec, x)
        _, grad_f = switched_gradient(foreign, {"1": LayerTarget("gate", "dense")}, spec, x)
        torch.testing.assert_close(grad_f, grad_n, rtol=1e-5, atol=1e-7)


def test_infer_grouping_and_gate_fit_read_the_selection() -> None:
    h = seeded(lambda: nn.Conv2d(1, 4, 3, padding=1))(X).detach()
    for mode, group_size, k in (("volume", 144, 36), ("channel", 36, 9), ("local", 4, 1)):
        fit = infer_grouping(h, ForeignTopK(0.25, mode)(h))
        assert (fit.grouping, fit.group_size, fit.k, fit.k_constant_fraction) == (mode, group_size, k, 1.0)
    assert infer_grouping(h, torch.relu(h)) is None  # element-wise: the count varies
    assert infer_grouping(h, h.clone()) is None  # nothing zeroed
    assert infer_grouping(h, h * 2) is None  # not input x mask
    ties = torch.tensor([[3.0, 2.0, 2.0, 2.0, 1.0], [5.0, 4.0, 0.0, -1.0, -2.0]])
    fit = gate_fit(ties, ties * (ties >= 2.0).to(ties.dtype), "dense")  # row 0 keeps three tied units for k=2
    assert (fit.k, fit.k_min, fit.k_max, fit.k_constant_fraction) == (2, 2, 4, 1.0)


def row_top_k(h: Tensor, k: int = 2) -> Tensor:
    """A top-k written as ``x.topk(k)`` on a feature map: torch's default ``dim=-1`` keeps k winners per image row."""
    return h * (h >= h.topk(k).values[..., -1:]).to(h.dtype)


def test_a_top_k_along_the_last_dim_is_a_row_gate_and_relaxed_per_row() -> None:
    """Each row keeps 2 of 6, so each channel keeps 12 of 36 too: ``"channel"`` has a constant count as well, but its
    winners are not the channel's largest (ordered fraction 0) and its relaxation ranks the wrong groups."""
    h = seeded(lambda: nn.Conv2d(1, 4, 3, padding=1))(X).detach()
    out = row_top_k(h)
    fit = infer_grouping(h, out)
    assert (fit.grouping, fit.group_size, fit.k, fit.k_constant_fraction, fit.ordered_fraction) == ("row", 6, 2, 1.0,
                                                                                                       1.0)
    assert gate_fit(h, out, "channel").ordered_fraction < 0.5
    torch.testing.assert_close(relaxed_gate(h, out, "row", 1e-4), out, rtol=0, atol=1e-5)
    net = conv_net(RowTopK())
    assert detect_layers(net, X).target("1") == LayerTarget("gate", "row")  # what bpda_layers: auto acts on
    _, inferred = switched_gradient(net, {"1": LayerTarget()}, "smooth", X)
    _, per_row = switched_gradient(net, {"1": LayerTarget("gate", "row")}, "smooth", X)
    torch.testing.assert_close(inferred, per_row)
    _, per_channel = switched_gradient(net, {"1": LayerTarget("gate", "channel")}, "smooth", X)
    assert not torch.allclose(per_row, per_channel)
    flat = torch.randn(3, 4, 6, generator=torch.Generator().manual_seed(0))  # [N, C, L]: a row is a channel
    assert infer_grouping(flat, row_top_k(flat)).grouping == "channel"


def test_relaxed_gate_sharpens_to_the_gate() -> None:
    h = torch.randn(4, 30, generator=torch.Generator().manual_seed(0))
    out = ForeignTopK(0.2)(h)
    torch.testing.assert_close(relaxed_gate(h, out, "dense", 1e-4), out, rtol=0, atol=1e-5)


def abs_top_k(h: Tensor, k: int = 6) -> Tensor:
    """Xiao et al.'s ``Sparsify*_abs``: keep the ``k`` units of each sample largest by magnitude."""
    return h * (h.abs() >= h.abs().topk(k, dim=1).values[:, -1:]).to(h.dtype)


def test_a_gate_ranking_magnitudes_is_relaxed_on_magnitudes() -> None:
    """A value threshold does not reproduce a selection by ``|x|`` at any temperature (the relaxation keeps large
    negative losers and drops small negative winners); relaxing ``|x|`` does."""
    h = torch.randn(8, 30, generator=torch.Generator().manual_seed(0))
    by_value, by_magnitude = ForeignTopK(0.2)(h), abs_top_k(h)
    value_fit, magnitude_fit = infer_grouping(h, by_value), infer_grouping(h, by_magnitude)
    assert (value_fit.score, value_fit.ordered_fraction) == ("value", 1.0)
    assert (magnitude_fit.score, magnitude_fit.magnitude_ordered_fraction) == ("magnitude", 1.0)
    assert magnitude_fit.ordered_fraction < 0.5
    relu = torch.relu(h)  # non-negative inputs: value and magnitude order alike, and value is kept
    assert infer_grouping(relu, ForeignTopK(0.2)(relu)).score == "value"
    torch.testing.assert_close(relaxed_gate(h, by_magnitude, "dense", 1e-4, score="magnitude"), by_magnitude,
                               rtol=0, atol=1e-5)
    wrong = relaxed_gate(h, by_magnitude, "dense", 1e-4)
    assert float((wrong - by_magnitude).norm() / by_magnitude.norm()) > 0.5
    target = LayerTarget.of({"kind": "gate", "grouping": "dense", "score": "magnitude"})
    assert target.describe() == "gate/dense/magnitude" and LayerTarget("gate", "dense").describe() == "gate/dense"
    with pytest.raises(AttackConfigError, match="unknown gate score 'rank'; use one of value, magnitude"):
        LayerTarget("gate", "dense", "rank")

    class AbsGate(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return abs_top_k(x)

    model = seeded(lambda: nn.Sequential(nn.Linear(6, 30), AbsGate(), nn.Linear(30, 3)))
    x = torch.rand(5, 6, generator=torch.Generator().manual_seed(1))
    assert detect_layers(model, torch.rand(16, 6)).target("1") == LayerTarget("gate", "dense", "magnitude")
    for targets in ({"1": LayerTarget("gate", "dense", "magnitude")}, {"1": LayerTarget()}):  # given, or inferred
        with attached_backward(model, targets) as c, surrogate_backward(model, "smooth", 1e-4, c):
            _, grad = input_gradient(model, x)
        _, exact = input_gradient(model, x)  # at a tiny temperature the relaxation's gradient is the gate's
        torch.testing.assert_close(grad, exact, rtol=1e-4, atol=1e-6)


def test_wrapped_modules_that_never_run_are_an_error_or_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A parent calling ``gate.forward(h)`` bypasses hooks: BPDA would change nothing and say it acted."""
    class Bypass(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hidden, self.gate, self.spare, self.out = nn.Linear(6, 30), ForeignTopK(0.2), Step(), nn.Linear(30, 3)

        def forward(self, x: Tensor) -> Tensor:
            return self.out(self.gate.forward(self.hidden(x)))

    model = seeded(Bypass).eval()
    x, y = torch.rand(4, 6), torch.zeros(4, dtype=torch.long)
    bpda = create_attack("bpda", surrogate="smooth", inner_params={"steps": 2}, layers=["gate"])
    before = ModelSnapshot.capture(model)
    with pytest.raises(AttackConfigError, match=r"layers: BPDA's layer\(s\) gate \(ForeignTopK\) never ran in \d+ "
                                                r"forward\(s\) of the model .* so BPDA changed nothing"):
        bpda(model, x, y, ThreatModel("linf", 0.1))
    before.verify(model, "the failed attack")  # hooks removed
    with attached_backward(model, {"gate": LayerTarget()}):
        pass  # the model never ran: nothing to say
    model.forward = lambda inp: model.out(model.spare(model.gate(model.hidden(inp))))  # type: ignore[method-assign]
    with attached_backward(model, {"gate": LayerTarget(), "hidden": LayerTarget()}):
        model(x)
    assert "never ran" not in caplog.text
    model.forward = lambda inp: model.out(model.gate(model.hidden(inp)))  # type: ignore[method-assign]
    with attached_backward(model, {"gate": LayerTarget(), "spare": LayerTarget()}):
        model(x)
    assert "BPDA layer(s) spare (Step) never ran in 1 forward(s) of the model" in caplog.text


def test_model_is_restored_exactly_even_when_the_attack_fails() -> None:
    model = conv_net(ForeignTopK(0.25))
    user_hook = model[1].register_forward_hook(lambda m, a, o: None)  # the user's own hook stays
    before = ModelSnapshot.capture(model)
    with pytest.raises(RuntimeError, match="boom"):
        with attached_backward(model, {"1": LayerTarget()}) as controllers, \
                surrogate_backward(model, "smooth", 0.3, controllers):
            assert len(model[1]._forward_hooks) == 2
            input_gradient(model, X)
            raise RuntimeError("boom")
    before.verify(model, "the test")
    assert list(model[1]._forward_hooks) == [user_hook.id] and not model[1]._forward_pre_hooks
    user_hook.remove()


def test_selection_by_name_glob_and_class() -> None:
    model = nn.Sequential(conv_net(ForeignTopK(0.25)), nn.ReLU(), Step())
    assert select_modules(model, ["0.1"]) == ["0.1"]
    assert select_modules(model, ["ForeignTopK", "Step"]) == ["0.1", "2"]
    assert select_modules(model, [f"{__name__}.Step"]) == ["2"]
    assert select_modules(model, ["0.*"]) == ["0.0", "0.1", "0.2", "0.3"]
    with pytest.raises(AttackConfigError, match=r"layers: 'Sparsify' matches no module .*candidates: 0\.0 \(Conv2d\)"):
        select_modules(model, ["Sparsify"])


def test_an_in_place_gate_gets_a_copy_and_shape_changing_modules_are_clear_errors(
        caplog: pytest.LogCaptureFixture) -> None:
    """nupic.torch's ``KWinners(inplace=True)`` style: BPDA hands the module a copy of its input, so the surrogate
    still sees it; logits and input gradients equal those of the same gate written out of place (a warning once)."""
    class InPlaceGate(nn.Module):  # keep the 2 largest of 4
        def forward(self, x: Tensor) -> Tensor:
            return x.mul_((x >= x.topk(2, dim=1).values[:, -1:]).to(x.dtype))

    class Gate(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x * (x >= x.topk(2, dim=1).values[:, -1:]).to(x.dtype)

    x = torch.rand(3, 4, generator=torch.Generator().manual_seed(0))
    in_place, out_of_place = (seeded(lambda g=g: nn.Sequential(nn.Linear(4, 4), g(), nn.Linear(4, 2)))
                              for g in (InPlaceGate, Gate))
    for spec in ("identity", "smooth"):
        found = []
        for model in (in_place, out_of_place):
            with attached_backward(model, {"1": LayerTarget("gate", "dense")}) as c, \
                    surrogate_backward(model, spec, 0.5, c):
                found.append(input_gradient(model, x))
        assert torch.equal(found[0][0], found[1][0]) and torch.equal(found[0][1], found[1][1]), spec
        assert torch.equal(found[0][0], input_gradient(out_of_place, x)[0])  # the forward is the model's
    with caplog.at_level("WARNING"):  # the layer probe records it and warns once (BPDA's hooks only at debug level)
        found = detect_layers(in_place, torch.rand(16, 4, generator=torch.Generator().manual_seed(1)))
    assert found.finding("1").evidence["in_place"] is True and "in_place" not in \
        detect_layers(out_of_place, torch.rand(16, 4)).finding("1").evidence
    assert caplog.text.count("changes its input in place") == 1
    model = seeded(lambda: nn.Sequential(nn.Linear(4, 6), nn.Flatten(0), nn.Unflatten(0, (3, 6)), nn.Linear(6, 2)))
    with attached_backward(model, {"1": LayerTarget()}) as c, surrogate_backward(model, "identity", None, c):
        with pytest.raises(AttackConfigError,
                           match="the identity and smooth surrogates need an output shaped like the input"):
            input_gradient(model, torch.rand(3, 4))


def step_model() -> nn.Sequential:
    return seeded(lambda: nn.Sequential(nn.Linear(16, 32), Step(), nn.Linear(32, 3))).eval()


def test_bpda_with_torchattacks_inner_breaks_a_step_gated_model() -> None:
    """Plain gradients are zero through the step; BPDA identity, with torchattacks' APGD inside, is not fooled
    (at eps 0.3: 28 of 32 broken against 8)."""
    model = step_model()
    x = torch.rand(32, 16, generator=torch.Generator().manual_seed(2))
    y = model(x).argmax(1)
    threat = ThreatModel("linf", 0.3)
    plain = create_attack("apgd-ce", steps=20, seed=0)
    bpda = create_attack("bpda", surrogate="identity", inner="apgd-ce", inner_params={"steps": 20}, layers=["Step"])
    before = ModelSnapshot.capture(model)
    broken_plain = int((model(plain(model, x, y, threat)).argmax(1) != y).sum())
    broken_bpda = int((model(bpda(model, x, y, threat)).argmax(1) != y).sum())
    before.verify(model, "the attacks")
    assert bpda.last_switched_layers == ["1"]
    assert broken_bpda >= broken_plain + 10  # plain APGD breaks only what its random start hits (8 of 32)


def test_foolbox_gradient_attack_runs_inside_the_switched_model() -> None:
    import foolbox as fb

    model = step_model()
    x = torch.rand(32, 16, generator=torch.Generator().manual_seed(2))
    y = model(x).argmax(1)
    with attached_backward(model, {"1": LayerTarget("piecewise-constant")}) as c, \
            surrogate_backward(model, "smooth", None, c):  # smooth on a piecewise-constant layer: straight-through
        _, adv, success = fb.attacks.LinfPGD(steps=20)(fb.PyTorchModel(model, bounds=(0, 1)), x, y, epsilons=0.3)
    assert int(success.sum()) >= 8
    assert int((model(adv).argmax(1) != y).sum()) == int(success.sum())


@pytest.mark.parametrize("surrogate", ["learned", "model"])
def test_learned_surrogates_fit_foreign_layers(surrogate: str) -> None:
    model = conv_net(ForeignTopK(0.25))
    x = X.clone()
    y = model(x).argmax(1)
    attack = create_attack("bpda", surrogate=surrogate, inner="pgd", inner_params={"steps": 3}, layers={"1": None},
                           fit_steps=20, distill_steps=5)
    before = ModelSnapshot.capture(model)
    x_adv = attack(model, x, y, ThreatModel("linf", 0.1))
    before.verify(model, "the attack")
    assert attack.last_switched_layers == ["1"]
    assert "1" in attack.last_fit_error and attack.last_fit_error["1"] < 1.0
    assert ThreatModel("linf", 0.1).contains(x_adv, x).all()


def test_layers_parameter_is_validated() -> None:
    with pytest.raises(AttackConfigError, match="'auto' needs the layer probe"):
        create_attack("bpda", layers="auto")
    with pytest.raises(AttackConfigError, match="layers: expected module names"):
        create_attack("bpda", layers=[3])
    with pytest.raises(AttackConfigError, match="unknown layer kind"):
        create_attack("bpda", layers={"1": {"kind": "relu"}})
    attack = create_attack("bpda", surrogate="identity", inner="pgd", inner_params={"steps": 1}, layers={"9": None})
    with pytest.raises(AttackConfigError, match="no module named '9'"):
        attack(conv_net(ForeignTopK(0.25)), X, torch.zeros(6, dtype=torch.long), ThreatModel("linf", 0.1))


def test_a_given_backward_map_works_on_a_module_that_changes_size_and_a_reordering_module_is_refused() -> None:
    """A differentiable map given as a layer's backward has its own shapes (a top-values module: 8 → 4); a module
    that reorders its input's elements (a transpose) is no flattening gate: straight-through through a reshape would
    scramble the gradient, so it stays a one-line error."""
    class TopValues(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x.topk(4, dim=1).values

    class RoundTransposed(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return (torch.round(x * 4) / 4).transpose(1, 2)

    model = seeded(lambda: nn.Sequential(nn.Linear(20, 8), TopValues(), nn.Linear(4, 3))).eval()
    x = torch.rand(5, 20, generator=torch.Generator().manual_seed(0))
    with attached_backward(model, {"1": LayerTarget()}) as controllers:
        controllers["1"].set_backward(lambda t: t[:, :4], None)
        xg = x.clone().requires_grad_(True)
        model(xg).sum().backward()
    expected = x.clone().requires_grad_(True)
    model[2](model[0](expected)[:, :4]).sum().backward()
    assert torch.allclose(xg.grad, expected.grad)
    transposing = nn.Sequential(RoundTransposed())
    with attached_backward(transposing, {"0": LayerTarget()}) as controllers:
        controllers["0"].set_backward("identity", None)
        with pytest.raises(AttackConfigError, match=r"need an output shaped like the input \(or a top-k gate that "
                                                    r"flattens it\), got \(2, 3, 5\) → \(2, 5, 3\)"):
            transposing(torch.rand(2, 3, 5).requires_grad_(True)).sum().backward()


def test_a_module_whose_calls_are_no_gate_is_passed_straight_through_with_one_info_line(
        caplog: pytest.LogCaptureFixture) -> None:
    """A gate target without a grouping is read at each call: an output that is no top-k selection (a ReLU) gets
    the identity's gradient, said once however many calls there are."""
    model = seeded(lambda: nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))).eval()
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    with caplog.at_level("INFO", logger="attacks.bpda_wrap"), \
            attached_backward(model, {"1": LayerTarget("gate")}) as controllers:
        controllers["1"].set_backward("smooth", 0.1)
        for _ in range(3):
            xg = x.clone().requires_grad_(True)
            model(xg).sum().backward()
    lines = [r.getMessage() for r in caplog.records if "is not a top-k selection" in r.getMessage()]
    assert lines == ["BPDA layer 1 (ReLU): output is not a top-k selection of the input; the smooth surrogate is the "
                     "identity here"]
    expected = model[0].weight.t() @ model[2].weight.sum(dim=0)  # straight through the ReLU
    torch.testing.assert_close(xg.grad, expected.expand_as(x))
