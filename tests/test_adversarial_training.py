"""Adversarial training as the papers describe it (Madry et al. 2018; TRADES, Zhang et al. 2019): TRADES' start,
the modes of the attack and the update, one-line config errors naming the key, data outside [0, 1], and the
training budget the tables show beside the evaluation's epsilons."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import kwta_robust.training.adversarial as adversarial
from kwta_robust import cli
from kwta_robust.data import REGISTRY, DatasetInfo, load_dataset
from kwta_robust.errors import ConfigError, DataError
from kwta_robust.models import create_model
from kwta_robust.report import compare_table, detail_table
from kwta_robust.training import TrainConfig
from kwta_robust.training_text import beyond_training_notes, training_text
from tests.eval_helpers import make_record, make_result

TINY = {"dataset": "digits", "arch": "cnn", "arch_kwargs": {"channels": [4, 8], "hidden": 16, "batch_norm": True},
        "epochs": 1, "batch_size": 32, "activation": {"name": "kwta", "k_ratio": 0.2}, "device": "cpu"}


def _batch(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_dataset("digits", "train")
    return data.x[:n], data.y[:n]


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("cnn", {"name": "kwta", "ratio": 0.2}, input_size=8, channels=[4, 8], hidden=16,
                        batch_norm=True)


def test_trades_starts_from_a_small_gaussian_around_x(monkeypatch: pytest.MonkeyPatch) -> None:
    """Zhang et al., Algorithm 1: x' = x + 0.001·N(0, I), not a uniform point of the eps ball (PGD's start)."""
    seen = {}
    real = adversarial.pgd_ascent

    def spy(model, x, start, threat, **kwargs):
        seen["offset"] = (start - x).abs()
        return real(model, x, start, threat, **kwargs)

    monkeypatch.setattr(adversarial, "pgd_ascent", spy)
    x, y = _batch()
    cfg = TrainConfig.from_dict({**TINY, "method": "trades", "adversarial": {"eps": 0.3, "steps": 1}})
    adversarial.METHODS["trades"](_model().train(), x, y, cfg, torch.Generator().manual_seed(0))
    offset = seen["offset"]
    assert 0 < float(offset.max()) < 0.01 and float(offset.mean()) < 2 * adversarial.TRADES_START_STD
    cfg = TrainConfig.from_dict({**TINY, "method": "pgd", "adversarial": {"eps": 0.3, "steps": 1}})
    adversarial.METHODS["pgd"](_model().train(), x, y, cfg, torch.Generator().manual_seed(0))
    assert float(seen["offset"].max()) > 0.2  # PGD keeps Madry et al.'s uniform start


@pytest.mark.parametrize("method", ["pgd", "trades"])
def test_the_attack_runs_in_eval_mode_and_the_update_in_train_mode(method: str) -> None:
    """As TRADES' reference code: model.eval() to craft x', model.train() for the loss the optimizer minimizes;
    the crafted inputs stay in the eps ball and [0, 1]."""
    model = _model().train()
    modes: list[bool] = []
    model.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    x, y = _batch()
    cfg = TrainConfig.from_dict({**TINY, "method": method, "adversarial": {"eps": 0.1, "steps": 3}})
    inputs: list[torch.Tensor] = []
    real = adversarial.pgd_perturb

    def spy(*args, **kwargs):
        inputs.append(real(*args, **kwargs))
        return inputs[-1]

    adversarial.pgd_perturb = spy
    try:
        loss, _ = adversarial.METHODS[method](model, x, y, cfg, torch.Generator().manual_seed(0))
    finally:
        adversarial.pgd_perturb = real
    attack_forwards = 3 + (1 if method == "trades" else 0)  # TRADES' clean target is taken in eval mode too
    assert modes[:attack_forwards] == [False] * attack_forwards and all(modes[attack_forwards:])
    assert model.training and loss.requires_grad
    delta = (inputs[0] - x).abs().max()
    assert float(delta) <= 0.1 + 1e-6 and float(inputs[0].min()) >= 0 and float(inputs[0].max()) <= 1


def test_trades_loss_is_cross_entropy_plus_beta_times_kl_clean_to_adversarial() -> None:
    model, twin = _model().train(), _model().train()  # the step's train-mode passes move BatchNorm's statistics
    x, y = _batch()
    cfg = TrainConfig.from_dict({**TINY, "method": "trades", "adversarial": {"eps": 0.1, "steps": 2,
                                                                             "trades_beta": 3.0}})
    gen = torch.Generator().manual_seed(0)
    loss, logits = adversarial.METHODS["trades"](twin, x, y, cfg, gen)
    gen = torch.Generator().manual_seed(0)
    threat = cfg.adversarial.threat()
    with torch.no_grad(), adversarial.eval_mode(model):
        clean = F.softmax(model(x), dim=1)
    x_adv = adversarial.pgd_perturb(
        model, x, lambda z, rows: F.kl_div(F.log_softmax(z, 1), clean[rows], reduction="none").sum(1), threat, 2,
        cfg.adversarial.alpha(), False, gen, start=adversarial.trades_start(x, threat, gen))
    with torch.no_grad():
        p, q = F.softmax(model(x), 1), F.softmax(model(x_adv), 1)
        kl = (p * (p.log() - q.log())).sum(1).mean()  # KL(f(x) || f(x')), per sample, averaged over the batch
        expected = F.cross_entropy(model(x), y) + 3.0 * kl
    assert torch.allclose(loss.detach(), expected, atol=1e-5)


def test_adversarial_keys_are_one_line_errors_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for adv, method, message in (({"steps": 0}, "pgd", "adversarial.steps: must be >= 1"),
                                 ({"step_size": 0}, "standard", "adversarial.step_size: must be > 0"),
                                 ({"eps": 0}, "trades", "adversarial.eps: method trades needs eps > 0"),
                                 ({"eps": 0, "norm": "l2"}, "pgd", "adversarial.eps: method pgd needs eps > 0")):
        with pytest.raises(ConfigError, match=message):
            TrainConfig.from_dict({**TINY, "method": method, "adversarial": adv})
    assert TrainConfig.from_dict({**TINY, "adversarial": {"eps": 0}}).method == "standard"
    out = str(tmp_path / "m.pt")
    assert cli.main(["train", "--dataset", "digits", "--method", "pgd", "--eps", "-0.1", "--out", out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --eps: epsilon must be a finite number >= 0, got -0.1"]  # the flag gave it


def test_a_registered_data_set_outside_the_unit_range_is_refused(request: pytest.FixtureRequest) -> None:
    """Normalized inputs would be clamped to [0, 1] by every PGD step of adversarial training, silently."""
    def loader(split, root, download, seed):
        return (torch.randn(8, 1, 8, 8), torch.zeros(8, dtype=torch.long))

    REGISTRY.add("normalized-toy", DatasetInfo("normalized-toy", loader, 10, (1, 8, 8), (0.5,), (0.5,), None, ""))
    request.addfinalizer(lambda: REGISTRY.unregister("normalized-toy"))
    with pytest.raises(DataError, match=r"normalized-toy \(train\): inputs must lie in \[0, 1\], .*give mean/std"):
        load_dataset("normalized-toy", "train")


def _trained_record(method: str, label: str = "m") -> object:
    rec = make_record([make_result("pgd", [1, 0, 1, 1], eps=0.1), make_result("pgd", [1, 0, 0, 0], eps=0.3)],
                      label=label)
    rec.model["training"] = {"method": method, "training": {"adversarial": {"norm": "linf", "eps": 0.1, "steps": 7,
                                                                            "trades_beta": 6.0}}}
    return rec


def test_tables_show_the_training_budget_and_evaluations_beyond_it() -> None:
    pgd, trades, plain = _trained_record("pgd", "a"), _trained_record("trades", "b"), _trained_record("standard", "c")
    assert training_text(pgd) == "pgd Linf 0.1, 7 steps" and training_text(trades).endswith("beta 6")
    assert training_text(plain) == "standard" and training_text(make_record()) == "?"
    notes = beyond_training_notes([pgd, plain])
    assert len(notes) == 1 and notes[0].startswith("[a] BEYOND THE TRAINING BUDGET at Linf 0.3:")
    table = compare_table([pgd, plain])
    assert "training" in table.headers and any("BEYOND THE TRAINING BUDGET" in n for n in table.notes)
    assert any("BEYOND THE TRAINING BUDGET" in n for n in detail_table(pgd).notes)
    assert "training" not in compare_table([plain, make_record(label="own")]).headers  # standard: as before
