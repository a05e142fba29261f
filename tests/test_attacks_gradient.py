"""White-box attacks: exact results on a linear model, PGD properties, AutoAttack budgets, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import attacks.thirdparty as thirdparty
from attacks import create_attack
from attacks.base import AttackConfigError, NonLogitOutputWarning, ThreatModel, attack_info

from attack_fixtures import boundary_distance, linear_binary, trained_cnn


@pytest.fixture(scope="module")
def relu_cnn() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model, x, y = trained_cnn("relu")
    return model, x[:48], y[:48]


def _robust(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x_adv).argmax(dim=1) == y


# --- exact worst case on a linear 2-class model --------------------------------------------------------------

# On f(x) = W x + b with two classes the worst case in the eps ball is known: a point is breakable iff its
# distance to the boundary |z_y - z_o| / ||w_y - w_o||_q is below eps (q = 1 for Linf, 2 for L2; the test points
# are far enough from the box faces that clipping never binds). Every attack must leave the points beyond eps
# correct (anything else leaves the ball); these attacks must also break every point clearly inside eps.
EXACT = [
    ("fgsm", {}), ("fgsm", {"loss": "margin"}), ("pgd", {"steps": 10}), ("pgd", {"steps": 10, "loss": "margin"}),
    ("apgd-ce", {"steps": 10}), ("fab", {"steps": 10}), ("fab-t", {"steps": 10}), ("deepfool", {}),
    ("cw", {}),
]
EXACT_CASES = [(n, p, norm) for n, p in EXACT for norm in ("linf", "l2") if norm in attack_info(n).norms]
EXACT_IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in p.items()) or 'defaults'}-{m}" for n, p, m in EXACT_CASES]


@pytest.mark.parametrize(("name", "params", "norm"), EXACT_CASES, ids=EXACT_IDS)
def test_linear_model_exact_worst_case(name: str, params: dict, norm: str) -> None:
    model, x, y = linear_binary()
    dist = boundary_distance(model, x, y, norm)
    eps = float(dist.median())
    threat = ThreatModel(norm, eps)
    # premise: the optimal perturbation of a breakable point stays inside [0, 1]
    dw = (model[1].weight[1] - model[1].weight[0]).detach().abs()
    reach = eps if norm == "linf" else eps * float(dw.max() / dw.norm())
    assert reach < 0.25

    x_adv = create_attack(name, **params)(model, x, y, threat)
    robust = _robust(model, x_adv, y)
    assert bool(robust[dist > eps * 1.0001].all()), "broke a point that is certified robust: left the ball"
    assert not bool(robust[dist < 0.9 * eps].any()), "missed a point whose exact worst case is misclassified"


# --- PGD -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_pgd_breaks_relu_model_at_large_eps(relu_cnn, loss: str) -> None:
    """At Linf eps = 0.5 every input can be moved to the grey image 0.5 * 1, so an attack that works leaves at
    most the samples whose label is the grey image's class robust."""
    model, x, y = relu_cnn
    with torch.no_grad():
        grey_class = model(torch.full_like(x[:1], 0.5)).argmax(dim=1)
    bound = int((y == grey_class).sum())
    x_adv = create_attack("pgd", steps=20, loss=loss)(model, x, y, ThreatModel("linf", 0.5))
    assert int(_robust(model, x_adv, y).sum()) <= bound


def test_restarts_never_increase_robust_accuracy(relu_cnn) -> None:
    model, x, y = relu_cnn
    threat = ThreatModel("linf", 0.08)
    one = create_attack("pgd", steps=5, restarts=1, seed=3)(model, x, y, threat)
    three = create_attack("pgd", steps=5, restarts=3, seed=3)(model, x, y, threat)
    robust_one, robust_three = _robust(model, one, y), _robust(model, three, y)
    assert bool((robust_three <= robust_one).all())
    # the first restart is the same run: samples it broke get the same adversarial input
    broken_first = ~robust_one
    assert torch.equal(three[broken_first], one[broken_first])


def test_fgsm_is_one_full_pgd_step(relu_cnn) -> None:
    model, x, y = relu_cnn
    for norm, eps in (("linf", 0.1), ("l2", 1.0)):
        threat = ThreatModel(norm, eps)
        fgsm = create_attack("fgsm")(model, x, y, threat)
        pgd = create_attack("pgd", steps=1, step_size=eps, random_start=False)(model, x, y, threat)
        assert torch.equal(fgsm, pgd)
        assert bool(threat.contains(fgsm, x).all())


@pytest.mark.parametrize("name", ["fgsm", "pgd", "apgd-ce", "fab", "deepfool", "square"])
def test_zero_eps_returns_the_inputs(relu_cnn, name: str) -> None:
    model, x, y = relu_cnn
    params = {"square": {"n_queries": 10}, "apgd-ce": {"steps": 3}, "fab": {"steps": 3}}.get(name, {})
    x_adv = create_attack(name, **params)(model, x, y, ThreatModel("linf", 0.0))
    assert torch.equal(x_adv, x)


def test_pgd_seed_changes_random_start_only(relu_cnn) -> None:
    model, x, y = relu_cnn
    threat = ThreatModel("linf", 0.05)
    a = create_attack("pgd", steps=2, seed=0)(model, x, y, threat)
    b = create_attack("pgd", steps=2, seed=1)(model, x, y, threat)
    c = create_attack("pgd", steps=2, seed=1, random_start=False)(model, x, y, threat)
    d = create_attack("pgd", steps=2, seed=2, random_start=False)(model, x, y, threat)
    assert not torch.equal(a, b)
    assert torch.equal(c, d)


# --- torchattacks adapters --------------------------------------------------------------------------------------


def test_autoattack_reference_budgets_are_the_defaults() -> None:
    apgd = create_attack("apgd-ce")
    assert (apgd.steps, apgd.restarts, apgd.rho) == (100, 1, 0.75)
    apgd_t = create_attack("apgd-t")
    assert (apgd_t.steps, apgd_t.restarts, apgd_t.n_target_classes) == (100, 1, 9)
    fab_t = create_attack("fab-t")
    assert (fab_t.steps, fab_t.restarts, fab_t.n_target_classes, fab_t.targeted) == (100, 1, 9, True)
    assert create_attack("fab").steps == 100


@pytest.mark.parametrize("initial_step", [2.0, 0.5, 0.1])
def test_apgd_first_step_is_initial_step_times_eps(initial_step: float) -> None:
    """APGD's first iterate is the random start moved by ``initial_step · eps · sign(grad)`` (momentum 1 on the first
    step), clipped to the Linf ball; 2 is the reference's. Inputs at 0.5 keep the box from binding."""
    from attacks.apgd import apgd_single_run, reference_start

    torch.manual_seed(0)
    model = nn.Linear(8, 3).eval()
    x = torch.full((4, 8), 0.5)
    y = torch.zeros(4, dtype=torch.long)
    with torch.no_grad():  # class 0 wins by far, so the one step cannot misclassify and returns the raised-loss point
        model.bias.copy_(torch.tensor([5.0, 0.0, 0.0]))
    threat = ThreatModel("linf", 0.1)
    start = reference_start(x, threat, torch.Generator().manual_seed(0))
    start.requires_grad_(True)
    loss = nn.functional.cross_entropy(model(start), y, reduction="sum")
    grad = torch.autograd.grad(loss, start)[0]
    expected = torch.min(torch.max(start.detach() + initial_step * 0.1 * grad.sign(), x - 0.1), x + 0.1)
    x_adv, fooled = apgd_single_run(model, x, y, threat, lambda z, yy, rows: nn.functional.cross_entropy(
        z, yy, reduction="none"), steps=1, rho=0.75, generator=torch.Generator().manual_seed(0),
        initial_step=initial_step)
    assert not bool(fooled.any())
    assert torch.allclose(x_adv, expected, atol=1e-6)
    assert create_attack("apgd-ce", initial_step=initial_step).initial_step == initial_step


def test_fab_receives_our_budget(relu_cnn, monkeypatch) -> None:
    """FAB-T with ``steps=4``: one run per target class (9 = min(9, classes - 1)) of 4 iterations and 1 restart, each
    linearising the boundary to one target class (a tiny eps breaks nothing, so every target runs)."""
    import attacks.fab as fab_module

    runs: list[dict] = []
    real = fab_module.fab_single_run

    def spy(model, x0, y, others, start, threat, **kwargs):
        runs.append({"others": others.clone(), "from_clean": torch.equal(start, x0), **kwargs})
        return real(model, x0, y, others, start, threat, **kwargs)

    monkeypatch.setattr(fab_module, "fab_single_run", spy)
    model, x, y = relu_cnn
    create_attack("fab-t", steps=4)(model, x[:8], y[:8], ThreatModel("linf", 1e-4))
    assert len(runs) == 9 and all(r["steps"] == 4 and r["from_clean"] for r in runs)  # 9 targets x 1 restart
    targets = torch.cat([r["others"] for r in runs], dim=1)
    assert targets.shape[1] == 9 and all(len(set(row.tolist())) == 9 for row in targets)  # targeted: one class each


@pytest.mark.parametrize("name", ["apgd-ce", "apgd-t", "fab", "fab-t", "square"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_flat_inputs_and_other_bounds(name: str, norm: str) -> None:
    """Non-image inputs ``[N, D]`` and bounds other than [0, 1] reach torchattacks through the input view."""
    model_img, x_img, y = trained_cnn("relu")
    x_img, y = x_img[:16], y[:16]
    model = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), model_img).eval()
    shifted = nn.Sequential(_Affine(0.5, 0.5), model).eval()  # inputs in [-1, 1] → [0, 1]
    x = x_img.flatten(1) * 2 - 1
    eps = 0.2 if norm == "linf" else 2.0
    threat = ThreatModel(norm, eps, bounds=(-1.0, 1.0))
    params = {"square": {"n_queries": 50}}.get(name, {"steps": 5})
    x_adv = create_attack(name, **params)(shifted, x, y, threat)
    assert x_adv.shape == x.shape
    assert bool(threat.contains(x_adv, x).all())
    assert bool((_robust(shifted, x_adv, y) <= _robust(shifted, x, y)).all())


class _Affine(nn.Module):
    def __init__(self, scale: float, shift: float) -> None:
        super().__init__()
        self.scale, self.shift = scale, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


# --- bad input -------------------------------------------------------------------------------------------------


def test_unknown_attack_name() -> None:
    with pytest.raises(AttackConfigError, match="unknown attack 'pgdd'.*known attacks: .*pgd"):
        create_attack("pgdd")


def test_negative_eps_and_unknown_norm() -> None:
    with pytest.raises(AttackConfigError, match="eps"):
        ThreatModel("linf", -0.1)
    with pytest.raises(AttackConfigError, match="norm"):
        ThreatModel("l1", 0.1)


def test_unsupported_norm_is_refused(relu_cnn) -> None:
    model, x, y = relu_cnn
    with pytest.raises(AttackConfigError, match="'cw' does not support norm 'linf'"):
        create_attack("cw")(model, x, y, ThreatModel("linf", 0.1))


def test_inputs_outside_bounds(relu_cnn) -> None:
    model, x, y = relu_cnn
    with pytest.raises(AttackConfigError, match="bounds"):
        create_attack("pgd", steps=1)(model, x * 255, y, ThreatModel("linf", 0.1))


@pytest.mark.parametrize("name", ["fgsm", "pgd", "apgd-ce", "deepfool"])
def test_probability_outputs_warn(relu_cnn, name: str) -> None:
    model, x, y = relu_cnn
    probs = nn.Sequential(model, nn.Softmax(dim=1)).eval()
    with pytest.warns(NonLogitOutputWarning, match="probabilities"):
        create_attack(name, **({"steps": 2} if name in ("pgd", "apgd-ce") else {}))(
            probs, x, y, ThreatModel("linf", 0.1))


def test_logits_do_not_warn(relu_cnn, recwarn) -> None:
    model, x, y = relu_cnn
    log_probs = nn.Sequential(model, nn.LogSoftmax(dim=1)).eval()
    create_attack("fgsm")(log_probs, x, y, ThreatModel("linf", 0.1))
    assert not [w for w in recwarn if issubclass(w.category, NonLogitOutputWarning)]


@pytest.mark.parametrize(("name", "classes"), [("apgd-dlr", 2), ("apgd-t", 3)])
def test_dlr_needs_enough_classes(name: str, classes: int) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, classes)).eval()
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(AttackConfigError, match=f"at least {classes + 1} classes"):
        create_attack(name, steps=2)(model, x, y, ThreatModel("linf", 0.1))


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("pgd", {"steps": 0}, "steps"), ("pgd", {"loss": "l1"}, "loss"), ("pgd", {"step_size": -1.0}, "step_size"),
        ("pgd", {"restarts": 2, "random_start": False}, "random_start"),
        ("pgd", {"stpes": 3}, "unknown parameter 'stpes'; valid: steps, step_size,"),
        ("apgd-ce", {"restarts": 0}, "restarts"), ("cw", {"lr": 0}, "lr"),
        ("deepfool", {"candidates": 1}, "candidates"),
        ("apgd-ce", {"initial_step": 0}, "initial_step"), ("apgd-t", {"initial_step": float("nan")}, "initial_step"),
    ],
)
def test_invalid_parameters(name: str, params: dict, field: str) -> None:
    with pytest.raises(AttackConfigError, match=field):
        create_attack(name, **params)


def test_labels_out_of_range(relu_cnn) -> None:
    model, x, y = relu_cnn
    with pytest.raises(AttackConfigError, match="labels must lie in"):
        create_attack("fgsm")(model, x, y + 10, ThreatModel("linf", 0.1))
    with pytest.raises(AttackConfigError, match="int64"):
        create_attack("fgsm")(model, x, y.float(), ThreatModel("linf", 0.1))


class _BufferLinear(nn.Module):
    """A classifier without parameters (weights in a buffer): torchattacks prints when it meets one."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("weight", torch.randn(10, 64, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T


@pytest.mark.parametrize("name", ["apgd-ce", "fab", "square"])
def test_torchattacks_prints_nothing(relu_cnn, capsys, name: str) -> None:
    _, x, y = relu_cnn
    params = {"square": {"n_queries": 5}}.get(name, {"steps": 2})
    create_attack(name, **params)(_BufferLinear(), x[:4], y[:4], ThreatModel("linf", 0.1))
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_unit_view_round_trip() -> None:
    x = torch.rand(3, 2, 5, 7, generator=torch.Generator().manual_seed(0)) * 4 - 2
    view = thirdparty.UnitInputView(nn.Identity(), tuple(x.shape[1:]), (-2.0, 2.0), layout="square", min_side=5)
    v = view.to_view(x)
    assert v.shape == (3, 2, 7, 7) and float(v.min()) >= 0 and float(v.max()) <= 1
    assert torch.allclose(view.from_view(v), x)
    flat = torch.rand(3, 10)
    view = thirdparty.UnitInputView(nn.Identity(), (10,), (0.0, 1.0), layout="square")
    assert view.to_view(flat).shape == (3, 1, 4, 4)
    assert torch.equal(view.from_view(view.to_view(flat)), flat)
