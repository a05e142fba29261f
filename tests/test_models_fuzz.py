"""Odd user models at run time (fuzz round): each one the harness cannot evaluate gets one line naming what is odd
and the fix, never a traceback, and every model is handed back as it was — also when its own forward flips a
``requires_grad`` flag or registers a hook (the forward that reads the number of classes ran before any check)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kwta_robust.api import evaluate_model
from kwta_robust.datafile import model_num_classes
from kwta_robust.errors import KwtaRobustError
from kwta_robust.snapshot import ModelChangedError, ModelSnapshot
from test_model_identity import _error, _setup

X = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(0))
Y = torch.tensor([0, 1, 2, 0])
CONFIG = {"n_examples": 4, "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.1]}],
          "attacks": [{"attack": "pgd", "params": {"steps": 2}}],
          "diagnostics": {"enabled": True, "budget_check": {"enabled": False}}}


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


class _Odd(nn.Module):
    """A small MLP on ``[N, 1, 4, 4]`` whose forward does one odd thing, ``kind``."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.net = _mlp()
        self.kind = kind

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "assert-rgb":
            assert x.shape[1] == 3, "expects RGB images"  # noqa: S101 - the user's own input check
        if self.kind == "batch-of-4" and x.shape[0] != 4:
            raise ValueError(f"batch must be 4, got {x.shape[0]}")
        if self.kind == "signature":
            raise TypeError("forward() missing 1 required positional argument: 'mask'")
        if self.kind == "freeze-first-layer":
            self.net[1].weight.requires_grad_(False)
        if self.kind == "hook-per-call":
            self.net[1].register_forward_hook(lambda *args: None)
        if self.kind == "inference-mode":
            with torch.inference_mode():
                return self.net(x)
        out = self.net(x)
        return out[:, :1] if self.kind == "one-logit" else out


def _evaluate(model: nn.Module) -> str:
    with pytest.raises(KwtaRobustError) as info:
        evaluate_model(model, CONFIG, X, Y, threads=1)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(("kind", "fragment"), [
    ("assert-rgb", "AssertionError: expects RGB images"),  # before: a raw AssertionError
    ("batch-of-4", "ValueError: batch must be 4, got 1"),  # before: a raw ValueError
    ("signature", "TypeError: forward() missing 1 required positional argument: 'mask'"),  # before: raw TypeError
])
def test_a_forward_that_raises_on_the_data_is_one_line_naming_the_model_and_the_error(kind: str,
                                                                                       fragment: str) -> None:
    message = _evaluate(_Odd(kind))
    assert message.startswith("data 'in-memory' on model 'model': the model cannot take inputs of shape (1, 4, 4) (")
    assert fragment in message and "check that the data and the model match" in message


def test_batch_norm_on_batch_statistics_is_named_when_one_sample_fails() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8, track_running_stats=False), nn.Linear(8, 3))
    message = _evaluate(model)  # before: a raw ValueError "Expected more than 1 value per channel"
    assert "batch norm '2' normalizes with batch statistics in eval mode (track_running_stats=False)" in message


def test_a_single_output_column_is_refused_with_the_two_logit_fix() -> None:
    message = _evaluate(_Odd("one-logit"))
    # before: "attack 'pgd' needs a model with at least 2 classes (); ... use apgd-ce, pgd or fab instead"
    assert "returns 1 output column" in message and "torch.cat([-z, z], dim=1)" in message
    assert "pgd" not in message


def test_a_lazy_module_not_yet_initialised_is_refused_before_any_forward() -> None:
    model = nn.Sequential(nn.Flatten(), nn.LazyLinear(3))
    message = _evaluate(model)  # before: a raw ValueError from counting its parameters
    assert message.startswith("model 'model': '1.weight' is uninitialized (a torch.nn.Lazy* module)")
    assert isinstance(model[1].weight, nn.parameter.UninitializedParameter)  # not initialised by the harness


def test_a_frozen_torchscript_module_is_refused_as_torchscript() -> None:
    model = torch.jit.freeze(torch.jit.trace(_mlp().eval(), X[:2]))
    message = _evaluate(model)  # before: a raw AttributeError (no 'training' on a frozen module)
    assert message.startswith("model 'model': it is TorchScript")


@pytest.mark.parametrize(("kind", "what"), [
    ("freeze-first-layer", "changed requires_grad of parameter 'net.1.weight'"),
    ("hook-per-call", "left the hooks of module 'net.1' changed"),
])
def test_a_forward_that_changes_flags_or_hooks_is_refused_and_put_back(kind: str, what: str) -> None:
    model = _Odd(kind)
    before = ModelSnapshot.capture(model)
    message = _evaluate(model)  # before: freeze-first-layer ran to a record and came back frozen
    assert "one forward pass in eval mode" in message and what in message
    before.verify(model, "the fuzz test")  # requires_grad, hooks and tensors as handed over


def test_reading_the_classes_puts_back_a_flag_the_forward_flipped() -> None:
    model = _Odd("freeze-first-layer")
    with pytest.raises(ModelChangedError, match="changed requires_grad of parameter 'net.1.weight'"):
        model_num_classes(model, X[:1], "data")
    assert model.net[1].weight.requires_grad


def test_a_forward_under_inference_mode_is_flagged_as_a_cut_graph_not_blamed_on_the_probe() -> None:
    model = _Odd("inference-mode")
    record = evaluate_model(model, CONFIG, X, Y, threads=1)  # before: "its forward raised ... detect.py:218"
    flags = {d["code"]: d for d in record.to_dict()["diagnostics"]}
    assert flags["zero-gradients"]["severity"] == "critical"
    assert record.to_dict()["probes"]["grad_missing"] is True


def test_the_cli_names_an_assert_in_forward_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture) -> None:
    argv, out = _setup(tmp_path, monkeypatch, "asserting_gate")
    (tmp_path / "asserting_net.py").write_text(
        "from torch import nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.fc = nn.Linear(784, 10)\n\n    def forward(self, x):\n"
        "        assert x.shape[1] == 3, 'expects RGB images'\n        return self.fc(x.flatten(1))\n\n\n"
        "def make():\n    return Net()\n")
    line = _error(capsys, [*argv[:2], "asserting_net:make", *argv[3:]])  # before: a raw AssertionError
    assert "AssertionError: expects RGB images" in line
    assert not out.exists()


def test_the_cli_refuses_a_factory_model_on_the_meta_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    argv, out = _setup(tmp_path, monkeypatch, "meta_gate")
    (tmp_path / "meta_net.py").write_text(
        "from torch import nn\n\n\ndef make():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).to('meta')\n")
    line = _error(capsys, [*argv[:2], "meta_net:make", *argv[3:]])  # before: a raw RuntimeError (item() on meta)
    assert line.startswith("error: model factory 'meta_net:make': '1.weight' is on the meta device (it holds no "
                           "values)")
    assert "model.to_empty(device='cpu')" in line
    assert not out.exists()


def test_softmax_and_log_softmax_outputs_keep_their_sane_numbers() -> None:
    """Not a fix: the probabilities flag still names a softmax, and log-softmax (logits shifted per row) is
    evaluated as the logits it is — the same clean accuracy as the plain model."""
    plain = evaluate_model(_mlp(), CONFIG, X, Y, threads=1).to_dict()
    log_probs = evaluate_model(nn.Sequential(_mlp(), nn.LogSoftmax(dim=1)), CONFIG, X, Y, threads=1).to_dict()
    assert log_probs["clean"]["correct"] == plain["clean"]["correct"]
    with pytest.warns(UserWarning, match="returns probabilities"):
        probs = evaluate_model(nn.Sequential(_mlp(), nn.Softmax(dim=1)), CONFIG, X, Y, threads=1).to_dict()
    assert "probabilities-not-logits" in {d["code"] for d in probs["diagnostics"]}
    assert F.softmax(torch.zeros(1, 3), 1).sum() == 1  # the softmax the model applies sums rows to one


class _Noisy(nn.Module):
    """Gaussian input noise drawn from torch's global RNG in every forward (a randomized defense)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _mlp()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x + 0.1 * torch.randn_like(x))


def test_a_randomized_model_leaves_the_callers_rng_state_as_it_was() -> None:
    model = _Noisy()  # built first: _mlp seeds torch
    torch.manual_seed(123)
    state = torch.get_rng_state()
    evaluate_model(model, CONFIG, X, Y, threads=1)  # before: its checks' forwards drew from the caller's state
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    evaluate_model(model, CONFIG, X, Y, threads=1)
    assert torch.equal(torch.rand(3), expected)  # the caller's next draws are the ones it would have made


class _SparseMask(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _mlp()
        self.register_buffer("mask", torch.tensor([1.0, 1.0, 0.5]).to_sparse())

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x) * self.mask.to_dense()


def test_a_sparse_buffer_is_evaluated_and_kept() -> None:
    model = _SparseMask()
    record = evaluate_model(model, CONFIG, X, Y, threads=1).to_dict()  # before: NotImplementedError (aten::equal)
    with torch.no_grad():
        correct = int((model(X).argmax(1) == Y).sum())
    assert record["clean"]["correct"] == correct
    assert model.mask.layout == torch.sparse_coo and torch.equal(model.mask.to_dense(), torch.tensor([1.0, 1.0, 0.5]))


class _KeepsLast(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _mlp()
        self.register_buffer("last", torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x)
        self.last = out.detach()  # a buffer replaced by one of another shape, in eval mode
        return out


def test_a_buffer_replaced_by_another_shape_is_refused_and_put_back() -> None:
    model = _KeepsLast()
    message = _evaluate(model)
    assert "one forward pass in eval mode changed the model's 'last'" in message
    assert torch.equal(model.last, torch.zeros(1))  # before: left as the first forward's [1, 3] output


def test_a_nan_weight_is_named_as_damaged_not_as_a_change() -> None:
    model = _mlp()
    with torch.no_grad():
        model[1].weight[0, 0] = float("nan")
    message = _evaluate(model)  # the forward that reads the classes compared NaN != NaN: "changed the model's"
    assert message == ("model model: '1.weight' holds 1 NaN or infinite value(s) of 128; the weights are damaged (or "
                       "training diverged): use a healthy checkpoint")
